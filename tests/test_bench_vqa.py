"""The shapes world's VQA trainer: its questions, its training data, a smoke-size checkpoint."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from factcap.bench.shapes import train_vqa, world
from factcap.bench.shapes.language import caption, claims_for, mentions
from factcap.bench.shapes.train_vqa import (
    FORMS,
    Batches,
    Question,
    draw_question,
    held_out_questions,
    negatives,
    number_pair,
    truth,
)
from factcap.bench.shapes.training import scene_pixels
from factcap.pipeline.check import vqa_question as _question
from factcap.schema import Claim

CAPTIONS = [
    "There are two small red circles. There is a large orange cross.",
    "there are three large blue crosses. there is a small green triangle.",
    "There is a circle. There are four squares.",
]


def _as_question(claim: dict) -> Question:
    colour, _, shape = claim["subject"].rpartition(" ")
    colour = colour or None
    if claim["kind"] == "attribute":
        return Question("attribute", colour, shape, size=claim["question"].split()[-1][:-1])
    if claim["kind"] == "count":
        return Question("count", colour, shape, count=claim["count"])
    return Question("object", colour, shape)


def test_training_questions_are_the_questions_the_pipeline_asks():
    claims = claims_for(CAPTIONS)
    assert {c["kind"] for c in claims} == set(FORMS)
    for claim in claims:
        assert _as_question(claim).text == _question(Claim(**claim))
    assert _as_question(claims[0]).text == "Is there a red circle in the image?"
    assert Question("object", "orange", "cross").text == "Is there a orange cross in the image?"


def test_negatives_are_false_and_near_misses_stay_near_the_scene():
    rng = random.Random(0)
    tags = Counter()
    for scene in world.scenes(150, seed=0, split="train"):
        kinds = {(o.colour, o.shape) for o in scene.objects}
        for form in FORMS:
            for bare in (False, True):
                for tag, questions in negatives(scene, form, bare, rng).items():
                    for q in questions:
                        tags[tag] += 1
                        assert not truth(scene, q), (scene.objects, q)
                        if tag in ("size", "count"):
                            assert scene.count(q.shape, q.colour) > 0
                        if tag == "colour":
                            assert scene.count(q.shape) > 0 and (q.colour, q.shape) not in kinds
                        if tag == "shape":
                            assert any(o.colour == q.colour for o in scene.objects)
                            assert scene.count(q.shape, q.colour) == 0
    assert all(tags[t] > 20 for t in ("size", "count", "colour", "shape", "absent"))


def test_counts_and_sizes_follow_the_scene():
    scene = world.Scene(
        "s",
        (
            world.Obj("circle", "red", "small", (0, 0, 16, 16)),
            world.Obj("circle", "red", "large", (30, 0, 58, 28)),
        ),
        230,
    )
    assert truth(scene, Question("count", "red", "circle", count=2))
    assert not truth(scene, Question("count", "red", "circle", count=3))
    assert truth(scene, Question("attribute", "red", "circle", size="small"))
    assert not truth(scene, Question("attribute", "blue", "circle", size="small"))
    assert truth(scene, Question("object", None, "circle"))
    assert draw_question(scene, "count", True, random.Random(0), bare=False).count == 2


def test_training_batches_are_balanced_and_answered_by_the_scene(tmp_path):
    tokenizer = train_vqa.build_processor(tmp_path).tokenizer
    batches = Batches(tokenizer, batch=16, seed=0, grid=6)
    answers = Counter()
    for step in range(12):
        batch = batches(step)
        scenes = world.scenes(16, seed=0, split="train", start=16 * step)
        texts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        assert len(texts) == len(batch["rows"]) == len(batch["answers"])
        for row, text, answer in zip(batch["rows"], texts, batch["answers"], strict=True):
            said = tokenizer.convert_ids_to_tokens(int(answer))
            assert said == ("yes" if _answer(scenes[int(row)], text) else "no"), text
            answers[said] += 1
        shape_words = batch["input_ids"].gather(1, batch["shape_at"][:, None]).squeeze(1)
        assert (batch["shape_at"] > 0).all() and (shape_words != tokenizer.unk_token_id).all()
        counts = [
            scenes[int(row)].count(*_subject(t))
            for row, t in zip(batch["rows"], texts, strict=True)
        ]
        assert batch["counts"].tolist() == [min(4, n) for n in counts]
    assert abs(answers["yes"] - answers["no"]) <= 4 * len(FORMS), answers
    assert all(abs(owed) <= batches.balancer.slack for owed in batches.balancer.owed.values())


def _subject(question: str) -> tuple[str, str | None]:
    said = mentions(question)[0]
    return said.shape, said.colour


def _answer(scene: world.Scene, question: str) -> bool:
    """The true answer to a (lower-cased) question, read back from its words."""
    said = mentions(question)[0]
    if question.startswith("are there"):
        return scene.count(said.shape, said.colour) == said.count
    if question.startswith("is the "):
        return scene.count(said.shape, said.colour, question.split()[-1].rstrip("?")) > 0
    return scene.count(said.shape, said.colour) > 0


def test_number_pairs_differ_only_in_the_number_and_disagree():
    rng = random.Random(0)
    for scene in world.scenes(100, seed=1, split="train"):
        yes, no = number_pair(scene, rng)
        assert truth(scene, yes) and not truth(scene, no)
        assert (no.form, no.colour, no.shape) == ("count", yes.colour, yes.shape)


def test_training_is_deterministic_given_the_seed(tmp_path):
    from safetensors.torch import load_file

    runs = []
    for name in ("a", "b"):
        train_vqa.train(tmp_path / name, size="smoke", seed=3, log=lambda message: None)
        runs.append(load_file(tmp_path / name / "model.safetensors"))
    assert runs[0].keys() == runs[1].keys()
    assert all((runs[0][k] == runs[1][k]).all() for k in runs[0])


def test_held_out_questions_are_balanced_per_form():
    items = held_out_questions(60, seed=0)
    counts = Counter((q.form, answer) for _, q, answer in items)
    for form in FORMS:
        assert counts[form, True] == counts[form, False] > 0
    assert all(truth(scene, q) == answer for scene, q, answer in items)


def test_patch_labels_mark_objects_and_centres():
    scene = world.make_scene(3, seed=0)
    labels = train_vqa.patch_labels(scene, grid=6)
    assert labels.shape == (36, len(train_vqa.PATCH_CLASSES))
    assert labels[:, 3].sum() == len(scene.objects)
    assert set(np.unique(labels[:, 0])) - {0} == {
        1 + list(world.COLOURS).index(o.colour) for o in scene.objects
    }


@pytest.mark.slow
def test_smoke_checkpoint_loads_through_the_registry_and_answers(tmp_path):
    from factcap.backends import registry
    from factcap.backends.hf_blip import BlipVQA

    out = tmp_path / "vqa"
    stats = train_vqa.train(out, size="smoke", seed=0, log=lambda message: None)
    assert stats["steps"] == train_vqa.PLANS["smoke"]["steps"] and stats["train_s"] > 0
    vqa = registry.build("vqa", f"hf:{out}")
    assert isinstance(vqa, BlipVQA)
    scenes = world.scenes(2, seed=0)
    probs = vqa.yes_probability(
        [s.render() for s in scenes],
        ["Is there a red circle in the image?", "Are there two blue crosses?"],
    )
    assert len(probs) == 2 and all(0.0 <= p <= 1.0 for p in probs)
    # the trainer's pixels are the processor's: training sees what the backend sees
    processed = vqa.processor(images=[s.render() for s in scenes], text=["x", "y"])
    expected = np.asarray(processed["pixel_values"], dtype=np.float32)
    assert np.allclose(scene_pixels(scenes).numpy(), expected, atol=1e-5)
    assert caption(scenes[0])  # the world and the model agree on scenes
