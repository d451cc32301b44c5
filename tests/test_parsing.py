"""LLM answers are untrusted input: parsing recovers what it can and never crashes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factcap.pipeline.parsing import clean_caption, fallback_claims, parse_claims, to_claims
from factcap.schema import CLAIM_KINDS, VERDICTS
from factcap.text.chunk import noun_phrases
from factcap.text.jsonrepair import ParseError

GOOD = [
    {"kind": "object", "text": "There is a dog.", "subject": "dog"},
    {"kind": "count", "text": "Two cats.", "subject": "cat", "count": 2},
]


@pytest.mark.parametrize(
    "answer",
    [
        json.dumps(GOOD),
        "```json\n" + json.dumps(GOOD) + "\n```",
        "Here are the claims:\n" + json.dumps(GOOD) + "\nLet me know if you need more!",
        str(GOOD),  # Python repr: single quotes
        json.dumps(GOOD)[:-1] + ",]",  # trailing comma
        '[{"kind": "object", "text": "There is a dog.", "subject": "dog",},\n'
        ' {"kind": "count", "text": "Two cats.", "subject": "cat", "count": "two"},]',
        json.dumps({"claims": GOOD}),
        "```\n" + json.dumps(GOOD, indent=2) + "\n```\n\nNote: the second claim is a guess.",
        "Here are [2] claims: " + json.dumps(GOOD),  # a bracket in the prose first
        "Claims (see {below}): " + json.dumps(GOOD) + " {done}",
        json.dumps({"claims": GOOD + [{"kind": "object"}]})[:-5],  # truncated inside an object
    ],
)
def test_recovers_claims_from_messy_answers(answer):
    claims = parse_claims(answer)
    assert [(c.kind, c.subject) for c in claims] == [("object", "dog"), ("count", "cat")]
    assert claims[1].count == 2


def test_truncated_list_keeps_complete_elements():
    answer = json.dumps(GOOD)[:-30]  # cut inside the second element
    claims = parse_claims(answer)
    assert [c.subject for c in claims] == ["dog"]


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        "I cannot help with that.",
        "[",
        "{]",
        "null",
        "42",
        '"just a string"',
        "[1, 2, 3]",
        "[[]]",
    ],
)
def test_hopeless_answers_raise_parse_error(answer):
    with pytest.raises(ParseError):
        parse_claims(answer)


def test_claim_without_subject_gets_its_head_noun():
    [claim] = parse_claims('[{"kind": "object", "text": "There is a brown dog."}]')
    assert claim.subject == "brown dog"


def test_malformed_elements_are_dropped_not_fatal():
    value = [
        {"kind": "object"},
        {"kind": "weird", "text": "x"},
        "text",
        {"kind": "count", "text": "many birds", "count": "lots"},
        {"kind": "attribute", "text": "The sky is blue.", "subject": "sky"},
        {"kind": "attribute", "text": "The sky is blue.", "subject": "sky"},
    ]
    claims = to_claims(value)
    assert [(c.kind, c.text) for c in claims] == [("attribute", "The sky is blue.")]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                ["kind", "text", "subject", "count", "question", "claims", "type", "x"]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text_either_parses_or_raises_parse_error(answer):
    try:
        claims = parse_claims(answer)
    except ParseError:
        return
    assert claims and all(c.kind in CLAIM_KINDS for c in claims)


@settings(max_examples=300, deadline=None)
@given(json_values, st.sampled_from(["{}", "```json\n{}\n```", "Sure: {} hope it helps", "{}]]"]))
def test_any_json_shape_yields_only_well_formed_claims(value, wrapper):
    answer = wrapper.replace("{}", json.dumps(value, default=str))
    try:
        claims = parse_claims(answer, max_claims=8)
    except ParseError:
        return
    assert 1 <= len(claims) <= 8
    for c in claims:
        assert c.kind in CLAIM_KINDS and c.verdict in VERDICTS
        assert isinstance(c.text, str) and c.text
        assert c.kind != "count" or isinstance(c.count, int)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=80), max_size=4))
def test_fallback_never_fails(proposals):
    claims = fallback_claims(proposals, max_claims=10)
    assert len(claims) <= 10
    assert all(c.kind in ("object", "count") and c.subject for c in claims)


def test_noun_phrases_and_counts():
    assert noun_phrases("Two dogs play with a red ball near the old fence.") == [
        ("dog", 2),
        ("red ball", None),
        ("old fence", None),
    ]
    subjects = [(c.kind, c.subject, c.count) for c in fallback_claims(["Three birds sit."])]
    assert subjects == [("object", "bird", None), ("count", "bird", 3)]


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("Caption: A dog on grass.", "A dog on grass."),
        ('"A dog on grass."', "A dog on grass."),
        ("```\nA dog\non grass.\n```", "A dog on grass."),
        ("", ""),
    ],
)
def test_clean_caption(answer, expected):
    assert clean_caption(answer) == expected
