"""factcap.text.jsonrepair: the JSON in an LLM answer is found here and each span repaired by
the json-repair library. What the library brings, and what finding the spans ourselves keeps."""

from __future__ import annotations

import subprocess
import sys

import pytest

from factcap.text.jsonrepair import ParseError, extract_json, json_values


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        # what the library repairs (the hand-written repair before it gave ParseError)
        ("{accuracy: 4, completeness: 3}", {"accuracy": 4, "completeness": 3}),
        ('{"a": 1 /* comment */, "b": 2} // done', {"a": 1, "b": 2}),
        ('{"text": "He said "hi" there"}', {"text": 'He said "hi" there'}),
        ('```json\n{"winner": "B"', {"winner": "B"}),  # an answer cut off inside its fence
        # what it kept doing
        ("{'accuracy': 4, 'ok': True, 'x': None}", {"accuracy": 4, "ok": True, "x": None}),
        ('[{"a": 1}, {"a": 2},]', [{"a": 1}, {"a": 2}]),
        ('{"ok": true, "none": null}', {"ok": True, "none": None}),
    ],
)
def test_repairs(answer, value):
    assert extract_json(answer) == value


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        # json-repair alone reads the prose's "{see below}" as ['see below}'] (and the whole
        # answer as one object keyed by it): the span of the answer is found here first
        ('Objects {see below}: {"objects": ["dog"]}', {"objects": ["dog"]}),
        ('Note {x}: {"accuracy": 4}', {"accuracy": 4}),
        # json-repair alone returns the last of two arrays; the first is the answer
        ('[{"text": "a dog"}] and then [{"text": "a cat"}]', [{"text": "a dog"}]),
        ('Caption A: {"score": 3}\nCaption B: {"score": 5}', {"score": 3}),
    ],
)
def test_the_first_json_span_of_the_answer_wins(answer, value):
    assert extract_json(answer) == value


@pytest.mark.parametrize(
    "answer",
    ["", "nonsense", "I think {A} is better.", "{]", "[", "{", '{"a"', "Score: 4/5", "{x}"],
)
def test_what_the_library_would_invent_stays_a_parse_error(answer):
    # json-repair gives "" for "nonsense", {} for "{]", [] for "[", ['A}'] for "{A}": the
    # item must get an error record, not an empty or made-up value
    with pytest.raises(ParseError):
        extract_json(answer)


def test_every_value_in_order():
    answer = 'A: {"score": 3}, B: {score: 5} and {nothing here}'
    assert list(json_values(answer)) == [{"score": 3}, {"score": 5}]


def test_the_library_is_imported_only_for_an_answer_that_needs_it():
    code = (
        "import sys; from factcap.text.jsonrepair import extract_json; "
        "extract_json('[1]'); assert 'json_repair' not in sys.modules; "
        "extract_json('[1,]'); assert 'json_repair' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
