"""Experts and corrections (issue 26): an attribute claim is checked against its alternatives,
a wrong value is corrected rather than deleted, and the detection expert adds an object no
captioner named. The models are scripted (the far side of the role boundary); the pipeline's
own logic is what runs."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from factcap.config import load_config
from factcap.pipeline import Pipeline
from factcap.pipeline.models import Models
from factcap.schema import Claim, Verdict
from factcap.text.attributes import VALUE_SETS, stated_value, with_value
from scripted import ScriptedCaptioner, ScriptedDetector, ScriptedLLM, ScriptedVQA

CLAIMS = json.dumps(
    [
        {"kind": "object", "text": "There is a cup.", "subject": "cup"},
        {"kind": "attribute", "text": "The cup is red.", "subject": "cup",
         "question": "Is the cup red?"},
        {"kind": "object", "text": "There is a ball.", "subject": "ball"},
        {"kind": "attribute", "text": "The ball is green.", "subject": "ball",
         "question": "Is the ball green?"},
    ]
)  # fmt: skip
#: The scene: a blue cup, a green ball and a dog (P(yes) of what the VQA model is asked).
TRUE = {"Is the cup blue?", "Is the ball green?", "Is there a dog in the image?"}


def vqa_answer(question: str) -> float:
    return 0.95 if question in TRUE else 0.05


def pipeline(
    overrides=None,
    caption="A red cup and a green ball on the grass, with a dog.",
    vqa=vqa_answer,
    present=("cup", "ball", "dog"),
):
    config = load_config(
        preset="tiny",
        overrides={
            "ocr": None,
            "expert": {"enabled": True, "vocabulary": ["cup", "ball", "dog", "cat"]},
            **(overrides or {}),
        },
    )
    llm = ScriptedLLM(CLAIMS, caption)
    built = {
        "captioner:0": (ScriptedCaptioner("cap", "A red cup and a green ball."), 4),
        "captioner:1": (ScriptedCaptioner("cap2", "A red cup."), 4),
        "llm": (llm, 4),
        "detector": (ScriptedDetector(present), 4),
        "vqa": (ScriptedVQA(vqa), 4),
    }
    return Pipeline(config, models=Models(config, built=built)), llm


def claims_by_text(record):
    return {c.text: c for c in record.claims}


def test_a_wrong_colour_is_corrected_a_right_one_kept_and_the_expert_adds_the_dog():
    pipe, llm = pipeline()
    [record] = pipe.caption([Image.new("RGB", (32, 32))])
    assert record.ok, record.error
    claims = claims_by_text(record)
    cup = claims["The cup is blue."]  # corrected, not removed
    assert cup.verdict == Verdict.CORRECTED
    assert cup.evidence["corrected"] == {"from": "red", "to": "blue", "text": "The cup is red."}
    assert cup.evidence["alternatives"]["blue"] == 0.95 and cup.evidence["winner"] == "blue"
    ball = claims["The ball is green."]  # right: left alone
    assert ball.verdict == Verdict.SUPPORTED and ball.evidence["winner"] == "green"
    dog = claims["There is a dog."]  # no captioner named it; the detector and VQA agree
    assert dog.origin == "expert" and dog.verdict == Verdict.SUPPORTED
    assert "There is a cat." not in claims  # not found: never a claim
    assert record.corrected == [{"from": "The cup is red.", "to": "The cup is blue."}]
    assert "The cup is red." not in record.removed
    compose_prompt = llm.calls[-1][0][0]["content"]
    assert 'REFUTED: "The cup is red."' in compose_prompt
    assert 'SUPPORTED: "The cup is blue."' in compose_prompt
    assert 'SUPPORTED: "There is a dog."' in compose_prompt
    # the LLM wrote the old colour from the drafts: the final caption says the checked one
    assert record.captions["detailed"] == "A blue cup and a green ball on the grass, with a dog."
    assert any("values the checks found" in n for n in record.notes)


def test_no_corrections_restores_the_single_question_verdicts():
    pipe, _ = pipeline({"verify": {"alternatives": False, "corrections": False},
                        "expert": {"enabled": False}})  # fmt: skip
    [record] = pipe.caption([Image.new("RGB", (32, 32))])
    claims = claims_by_text(record)
    assert claims["The cup is red."].verdict == Verdict.REFUTED
    assert "alternatives" not in claims["The cup is red."].evidence
    assert "The cup is red." in record.removed and not record.corrected
    assert "There is a dog." not in claims
    assert "corrected" not in record.to_dict()  # the record's shape as before


def test_a_value_the_model_says_yes_to_as_much_as_another_is_uncertain():
    def yes_to_colours(question):
        return 0.9 if question.startswith("Is the cup") else vqa_answer(question)

    pipe, _ = pipeline(caption="A cup.", vqa=yes_to_colours)
    [record] = pipe.caption([Image.new("RGB", (32, 32))])
    cup = claims_by_text(record)["The cup is red."]
    assert cup.verdict == Verdict.UNCERTAIN and cup.evidence["winner"] is None


def test_an_attribute_of_an_object_that_is_not_there_is_not_corrected():
    pipe, _ = pipeline(present=["ball"])
    [record] = pipe.caption([Image.new("RGB", (32, 32))])
    claims = claims_by_text(record)
    assert claims["There is a cup."].verdict == Verdict.REFUTED
    assert claims["The cup is red."].verdict == Verdict.REFUTED  # its object is not there
    assert not record.corrected


def test_the_expert_gives_its_objects_the_value_the_vqa_model_picks():
    def sizes(question):
        return 0.9 if question == "Is the dog large?" else vqa_answer(question)

    expert = {"enabled": True, "vocabulary": ["dog"], "attributes": ["size"]}
    pipe, _ = pipeline({"expert": expert}, vqa=sizes)
    [record] = pipe.caption([Image.new("RGB", (32, 32))])
    claims = claims_by_text(record)
    size = claims["The dog is large."]
    assert size.origin == "expert" and size.verdict == Verdict.SUPPORTED
    assert size.evidence["alternatives"] == {"small": 0.05, "large": 0.9}


@pytest.mark.parametrize(
    ("text", "subject", "expected"),
    [
        ("The red circle is small.", "red circle", ("size", "small")),
        ("The sofa is grey.", "sofa", ("colour", "gray")),
        ("The red and blue ball.", "ball", None),  # two values: nothing single to compare
        ("The dog runs.", "dog", None),
        ("A wooden table.", "table", ("material", "wooden")),
    ],
)
def test_the_stated_value(text, subject, expected):
    assert stated_value(text, subject, VALUE_SETS) == expected


def test_with_value_keeps_case_and_whole_words():
    assert with_value("Large reds. large", "large", "small") == "Small reds. small"
    assert with_value("a redwood", "red", "blue") == "a redwood"


def test_expert_claims_are_hidden_from_compose_unless_they_hold():
    from factcap.pipeline.compose import verdicts_block

    held = Claim("object", "There is a dog.", "dog", verdict="supported", origin="expert")
    guess = Claim("object", "There is a cat.", "cat", verdict="uncertain", origin="expert")
    block = verdicts_block([held, guess])
    assert "dog" in block and "cat" not in block


def test_no_corrections_and_no_verify_exclude_each_other(tmp_path, capsys):
    from factcap.cli import main

    out = tmp_path / "o.jsonl"
    assert main(["caption", str(tmp_path), "-o", str(out), "--no-verify", "--no-corrections"]) == 2
    assert "--no-corrections has nothing to switch off" in capsys.readouterr().err


@pytest.mark.slow
def test_the_command_line_switch_restores_one_question_per_claim(tmp_path):
    from factcap.cli import main
    from factcap.engine.records import read_records
    from factcap.examples import example_paths

    out = tmp_path / "off.jsonl"
    args = ["caption", str(example_paths()[0]), "-o", str(out), "--quiet", "--no-corrections"]
    assert main(args) in (0, 1)
    runs = {"off": [c for r in read_records(out) for c in r["claims"]]}
    assert runs["off"], "the tiny models made no claims to look at"
    assert not any("alternatives" in c["evidence"] for c in runs["off"])
    assert all(c["verdict"] != "corrected" for c in runs["off"])
