"""Issue 16, "each image encoded once per stage": BLIP VQA encodes each distinct image of a
batch once (same probabilities as encoding it per pair), the judge asks a repeated
(image, question) once, the detector never sees an image without object claims, and the
benchmark that measures it runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from factcap.backends import registry
from factcap.config import load_config
from factcap.errors import ConfigError
from factcap.pipeline import Pipeline
from factcap.pipeline.models import Models
from scripted import ScriptedCaptioner, ScriptedDetector, ScriptedLLM, ScriptedVQA
from spies import count_forwards

ROOT = Path(__file__).resolve().parents[1]

QUESTIONS = [
    "is there a cat?",
    "is the man in a white suit riding a bicycle down the street?",
    "is there a cat?",  # a duplicate pair (same image, same question)
    "yes?",
    "how many dogs are there on the green grass in the park?",
    "is it red?",
    "is there a cat?",
    "is it red?",
    "a",
]


@pytest.fixture(scope="module")
def vqa():
    return registry.build("vqa", "tiny:blip_vqa")


@pytest.fixture(scope="module")
def pairs(photos):
    """Three photos, each asked several questions of different lengths, in mixed order."""
    a, b, c = photos[:3]
    return [a, a, a, b, c, b, a, c, b], QUESTIONS


@pytest.fixture
def per_pair(vqa):
    """The backend switched to the old path (image encoded for every pair) for one test."""
    vqa.encode_once = False
    yield vqa
    vqa.encode_once = True


def hooked(*modules):
    return [count_forwards(m) for m in modules]


def unhook(recorded):
    for _, handle in recorded:
        handle.remove()


@pytest.mark.slow
def test_encode_once_gives_the_per_pair_probabilities(vqa, pairs):
    images, questions = pairs
    assert vqa.encode_once is True
    once = vqa.yes_probability(images, questions)
    vqa.encode_once = False
    try:
        every = vqa.yes_probability(images, questions)
        alone = [vqa.yes_probability([i], [q])[0] for i, q in zip(images, questions, strict=True)]
    finally:
        vqa.encode_once = True
    np.testing.assert_allclose(once, every, atol=1e-5, rtol=0)
    np.testing.assert_allclose(once, alone, atol=1e-5, rtol=0)
    assert once[0] == pytest.approx(once[2], abs=1e-6)  # the duplicate pair
    assert len({round(p, 4) for p in once}) >= 5  # the answers do depend on image and question


@pytest.mark.slow
def test_vision_encoder_runs_once_per_distinct_image(vqa, pairs):
    images, questions = pairs
    cross_key = vqa.model.text_encoder.encoder.layer[0].crossattention.self.key
    recorded = hooked(vqa.model.vision_model, cross_key)
    try:
        vqa.yes_probability(images, questions)
    finally:
        unhook(recorded)
    (vision_calls, _), (key_calls, _) = recorded
    assert len(vision_calls) == 1
    assert vision_calls[0][0]["pixel_values"].shape[0] == 3  # 3 distinct photos of 9 pairs
    # the image's cross-attention keys are projected once per photo, not per question
    assert [out.shape[0] for _, out in key_calls] == [3]


@pytest.mark.slow
def test_per_pair_path_encodes_every_pair(per_pair, pairs):
    images, questions = pairs
    recorded = hooked(per_pair.model.vision_model)
    try:
        per_pair.yes_probability(images, questions)
    finally:
        unhook(recorded)
    [(vision_calls, _)] = recorded
    assert [c[0]["pixel_values"].shape[0] for c in vision_calls] == [9]


@pytest.mark.slow
def test_equal_copies_are_separate_images_and_still_right(vqa, photos):
    """Deduplication is by object: an equal copy is encoded again, never confused with
    another image of the same size."""
    first, copy, other = photos[0], photos[0].copy(), photos[0].transpose(0)
    recorded = hooked(vqa.model.vision_model)
    try:
        probs = vqa.yes_probability([first, copy, other], ["is there a cat?"] * 3)
    finally:
        unhook(recorded)
    assert recorded[0][0][0][0]["pixel_values"].shape[0] == 3
    assert probs[0] == pytest.approx(probs[1], abs=1e-6)
    assert probs[2] != pytest.approx(probs[0], abs=1e-6)


@pytest.mark.slow
def test_encode_once_is_an_option():
    assert registry.build("vqa", "tiny:blip_vqa", encode_once=False).encode_once is False
    with pytest.raises(ConfigError, match="encode_once"):
        registry.build("vqa", "tiny:blip_vqa", encode_once="yes")


# --- the pipeline: repeated questions asked once, the detector skipped ---------------------


def make(llm, detector, vqa, captioners=None, vqa_batch=4, one_question=False):
    """The tiny preset's pipeline with scripted models (no OCR); ``one_question``: each claim's
    own question alone (no alternatives of an attribute)."""
    verify = {"verify": {"alternatives": False}} if one_question else {}
    config = load_config(preset="tiny", overrides={"ocr": None, **verify})
    captioners = captioners or [(ScriptedCaptioner("cap", "A grey cat on a red sofa."), 4)]
    config = config.model_copy(update={"captioners": config.captioners[: len(captioners)]})
    built = {f"captioner:{i}": c for i, c in enumerate(captioners)}
    built.update({"llm": (llm, 4), "vqa": (vqa, vqa_batch)})
    if detector is not None:
        built["detector"] = (detector, 4)
    return Pipeline(config, models=Models(config, built=built))


REPEATS = json.dumps(
    [
        {"kind": "attribute", "text": "The cat is grey.", "subject": "cat", "question": "Is the cat grey?"},
        {"kind": "attribute", "text": "A grey cat.", "subject": "cat", "question": "Is the cat grey?"},
        {"kind": "attribute", "text": "The sofa is red.", "subject": "sofa", "question": "Is the sofa red?"},
        {"kind": "object", "text": "There is a cat.", "subject": "cat"},
        {"kind": "object", "text": "A cat is there.", "subject": "cat"},
    ]
)  # fmt: skip


def test_a_repeated_question_about_an_image_is_asked_once(photos):
    vqa = ScriptedVQA(lambda q: {"Is the cat grey?": 0.9, "Is the sofa red?": 0.1}.get(q, 0.6))
    pipe = make(
        ScriptedLLM(REPEATS), None, vqa, one_question=True
    )  # no detector: objects go to VQA too
    records = pipe.caption(photos[:2])
    assert [r.status for r in records] == ["ok", "ok"]
    asked = [q for call in vqa.calls for q in call]
    # per photo: the grey question, the sofa question, the cat question: once each
    assert sorted(asked) == sorted(
        ["Is the cat grey?", "Is the sofa red?", "Is there a cat in the image?"] * 2
    )
    for record in records:
        claims = {c.text: c for c in record.claims}
        for text in ("The cat is grey.", "A grey cat."):
            assert claims[text].verdict == "supported" and claims[text].score == 0.9
            assert claims[text].evidence["vqa_question"] == "Is the cat grey?"
        assert claims["The sofa is red."].verdict == "refuted"
        assert claims["There is a cat."].evidence["vqa_p_yes"] == 0.6
        assert claims["A cat is there."].evidence["vqa_p_yes"] == 0.6


FOUR_QUESTIONS = json.dumps(
    [
        {"kind": "object", "text": "There is a cat.", "subject": "cat"},
        {"kind": "attribute", "text": "The cat is grey.", "subject": "cat", "question": "Is the cat grey?"},
        {"kind": "attribute", "text": "The sofa is red.", "subject": "sofa", "question": "Is the sofa red?"},
        {"kind": "count", "text": "There are two cats.", "subject": "cat", "question": "Are there two cats?", "count": 2},
    ]
)  # fmt: skip


@pytest.mark.slow
def test_the_judge_asks_every_question_about_an_image_in_one_call(vqa, photos):
    """With a VQA batch of 2, three photos with four questions each go in two calls holding
    2 and 1 photos (each photo encoded once in all), not in six calls of two questions that
    encode a photo twice each; the verdicts' P(yes) are the per-pair path's."""

    def run():
        recorded = hooked(vqa.model.vision_model)
        try:
            pipe = make(ScriptedLLM(FOUR_QUESTIONS), None, vqa, vqa_batch=2, one_question=True)
            records = pipe.caption(photos[:3])
        finally:
            unhook(recorded)
        assert [r.status for r in records] == ["ok"] * 3
        p_yes = [c.evidence["vqa_p_yes"] for r in records for c in r.claims]
        return [call[0]["pixel_values"].shape[0] for call in recorded[0][0]], p_yes

    by_image, p_by_image = run()
    vqa.encode_once = False
    try:
        per_pair, p_per_pair = run()
    finally:
        vqa.encode_once = True
    assert by_image == [2, 1]
    assert per_pair == [2] * 6
    assert len(p_by_image) == 12
    assert p_by_image == pytest.approx(p_per_pair, abs=1e-5)


NO_OBJECTS = json.dumps(
    [{"kind": "attribute", "text": "The sky is blue.", "subject": "sky", "question": "Is the sky blue?"}]
)  # fmt: skip
WITH_OBJECT = json.dumps([{"kind": "object", "text": "There is a cat.", "subject": "cat"}])


def claims_by_caption(prompt: str) -> str:
    return WITH_OBJECT if "cat" in prompt else NO_OBJECTS


def test_an_image_without_object_claims_never_reaches_the_detector(photos):
    detector, vqa = ScriptedDetector(["cat"]), ScriptedVQA(lambda q: 0.9)
    captions = [(ScriptedCaptioner("sky", "A blue sky."), 4)]
    pipe = make(ScriptedLLM(NO_OBJECTS), detector, vqa, captioners=captions, one_question=True)
    records = pipe.caption(photos[:2])
    assert [r.status for r in records] == ["ok", "ok"]
    assert detector.calls == []
    for record in records:
        [claim] = record.claims
        assert claim.verdict == "supported" and claim.score == 0.9


def test_the_detector_gets_only_the_images_with_object_claims(photos):
    detector, vqa = ScriptedDetector(["cat"]), ScriptedVQA(lambda q: 0.9)
    caption = ScriptedCaptioner("mixed", lambda i: "A cat." if i == 1 else "A blue sky.")
    pipe = make(
        ScriptedLLM(claims_by_caption),
        detector,
        vqa,
        captioners=[(caption, 4)],
        one_question=True,
    )
    records = pipe.caption(photos[:3])
    assert [r.status for r in records] == ["ok"] * 3
    assert detector.calls == [[["cat"]]]  # one call, one image: the one with a cat claim
    assert records[1].claims[0].verdict == "supported"
    assert records[1].claims[0].evidence["detector_boxes"]
    assert [r.claims[0].text for r in records] == [
        "The sky is blue.",
        "There is a cat.",
        "The sky is blue.",
    ]
    assert all(r.claims[0].verdict == "supported" for r in records)


# --- the benchmark -----------------------------------------------------------------------


@pytest.mark.slow
def test_vqa_claims_benchmark_runs_and_prints_its_keys():
    done = subprocess.run(
        [sys.executable, "benchmarks/vqa_claims.py", "--model", "tiny:blip_vqa", "--repeats", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    keys = {"benchmark", "model", "parameters", "t1_s", "t16_s", "claims_ratio"}
    keys |= {"claims_ratio_before", "speedup_16", "max_abs_diff"}
    assert keys <= set(result)
    assert result["benchmark"] == "vqa_claims" and result["parameters"] > 0
    assert result["max_abs_diff"] <= 1e-5
