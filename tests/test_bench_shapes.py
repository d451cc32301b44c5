"""The shapes world: scenes, their language, and scoring against the ground truth."""

from __future__ import annotations

import json
import random

import pytest

from factcap.bench.shapes import language, scoring, world
from factcap.bench.shapes.language import Noise, claims_for, compose_answer, mentions
from factcap.bench.shapes.world import Obj, Scene, make_scene, scenes
from factcap.pipeline.parsing import parse_claims


def _scene(*objects: tuple[str, str, str]) -> Scene:
    placed = [
        Obj(shape, colour, size, (10 + 30 * i, 10, 26 + 30 * i, 26))
        for i, (size, colour, shape) in enumerate(objects)
    ]
    return Scene("hand-made", tuple(placed), 230)


def test_scenes_are_deterministic_and_splits_differ():
    a = scenes(20, seed=3)
    assert a == scenes(20, seed=3)
    assert a != scenes(20, seed=4)
    assert [s.objects for s in a] != [s.objects for s in scenes(20, seed=3, split="train")]
    assert list(a[5].render().getdata()) == list(make_scene(5, seed=3).render().getdata())


def test_scenes_respect_the_world_rules():
    counts = []
    for scene in scenes(300, seed=0):
        counts.append(len(scene.objects))
        boxes = [o.box for o in scene.objects]
        for i, a in enumerate(boxes):
            assert 0 <= a[0] < a[2] <= world.IMAGE_SIZE and 0 <= a[1] < a[3] <= world.IMAGE_SIZE
            for b in boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert set(counts) == {1, 2, 3, 4}
    assert any(n > 1 for s in scenes(100, seed=0) for _, n in s.groups())


def test_rendered_pixels_follow_the_truth():
    scene = _scene(("large", "red", "square"), ("small", "blue", "circle"))
    image = scene.render()
    square, circle = scene.objects
    assert image.getpixel(tuple(map(int, square.center))) == world.COLOURS["red"]
    assert image.getpixel(tuple(map(int, circle.center))) == world.COLOURS["blue"]
    assert image.getpixel((90, 90)) == (230, 230, 230)


def test_truth_relations_and_counts():
    scene = _scene(
        ("small", "red", "circle"), ("small", "red", "circle"), ("large", "blue", "cross")
    )
    truth = scene.truth()
    assert truth["counts"] == {"red circle": 2, "blue cross": 1}
    assert [0, "left of", 2] in truth["relations"] and [2, "right of", 0] in truth["relations"]
    assert language.caption(scene) == (
        "There are two small red circles. There is a large blue cross."
    )


def test_every_reference_reads_back_as_the_truth():
    for scene in scenes(50, seed=1):
        for ref in language.references(scene)[:3]:
            assert scoring.score_captions([scene], [ref]) | {"mentions_per_caption": 0} == {
                "hallucination_rate": 0.0,
                "attribute_error_rate": 0.0,
                "recall": 1.0,
                "count_accuracy": 1.0,
                "mentions_per_caption": 0,
            }


def test_noise_makes_the_known_mistakes():
    rng = random.Random(0)
    held = scenes(400, seed=0)
    inserted = [language.noisy_caption(s, Noise(insert=0.5), rng) for s in held]
    recoloured = [language.noisy_caption(s, Noise(colour=0.5), rng) for s in held]
    a, b = scoring.score_captions(held, inserted), scoring.score_captions(held, recoloured)
    assert a["hallucination_rate"] > 0.15 and a["attribute_error_rate"] == 0
    assert b["hallucination_rate"] == 0 and b["attribute_error_rate"] > 0.3


def test_mentions_read_any_case_and_plurals():
    assert mentions("there are three small orange crosses. a blue triangle") == [
        language.Mention(3, "small", "orange", "cross"),
        language.Mention(1, None, "blue", "triangle"),
    ]


def test_scoring_counts_each_kind_of_mistake():
    scene = _scene(
        ("small", "red", "circle"), ("small", "red", "circle"), ("large", "blue", "cross")
    )
    counts = scoring.caption_counts(
        scene,
        "There is a small red circle. There is a large green cross. There is a yellow square.",
    )
    assert counts["mentions"] == 3 and counts["hallucinated"] == 1  # the square
    assert counts["present_with_attribute"] == 2 and counts["wrong_attribute"] == 1  # green
    assert counts["counted"] == 1 and counts["count_correct"] == 0  # "a" of two circles
    assert counts["truth_pairs"] == 2 and counts["recalled"] == 1
    empty = scoring.score_captions([scene], [""])
    assert empty["recall"] == 0.0 and empty["hallucination_rate"] != empty["hallucination_rate"]
    with pytest.raises(ValueError):
        scoring.score_captions([scene], [])


def test_claims_target_parses_with_the_pipeline_parser():
    captions = [
        "There are two small red circles. There is a large orange cross.",
        "There is a red circle.",
    ]
    answer = language.claims_answer(captions)
    claims = parse_claims(answer, 32)
    assert [c.kind for c in claims] == ["object", "attribute", "count", "object", "attribute"]
    assert claims[2].count == 2 and claims[3].text == "There is an orange cross."
    assert json.loads(answer) == claims_for(captions)


def test_compose_target_keeps_what_was_not_refuted():
    claims = claims_for(["There are two small red circles. There is a large blue cross."])
    everything = compose_answer(claims, ["uncertain"] * len(claims))
    assert everything == "There are two small red circles. There is a large blue cross."
    no_cross = compose_answer(claims, ["supported"] * 3 + ["refuted", "uncertain"])
    assert no_cross == "There are two small red circles."


def test_compose_target_keeps_an_uncertain_object_only_when_every_draft_names_it():
    drafts = [
        "There are two small red circles. There is a large blue cross.",
        "there is a small blue cross. there is a large red circle.",
    ]
    claims = claims_for(drafts)
    subjects = [(c["kind"], c["subject"]) for c in claims]
    cross = subjects.index(("object", "blue cross"))
    verdicts = ["supported"] * len(claims)
    verdicts[cross] = "uncertain"
    both = compose_answer(claims, verdicts, drafts)
    assert "blue cross" in both and "red circle" in both
    alone = compose_answer(claims, verdicts, [drafts[0], "There is a red circle."])
    assert "cross" not in alone and "red circle" in alone
    unchecked = compose_answer(claims, ["uncertain"] * len(claims), [drafts[0]])
    assert "blue cross" in unchecked
