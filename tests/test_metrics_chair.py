"""CHAIR: COCO mentions (synonyms, plurals, multi-word names), CHAIR-s/CHAIR-i per caption and
over a set, and the open-vocabulary variant from the pipeline's detector verdicts."""

from __future__ import annotations

import math

import pytest

from factcap.errors import ConfigError
from factcap.metrics import Sample, build, summarise
from factcap.metrics.chair import Chair, chair_counts, coco_mentions, object_categories, ov_verdicts
from factcap.text.synonyms import coco_canonical, coco_synonyms


def sample(caption, objects=None, references=(), claims=(), id="1"):
    return Sample(
        id,
        f"{id}.jpg",
        "final:detailed",
        caption,
        references=list(references),
        objects=None if objects is None else list(objects),
        claims=list(claims),
    )


def test_table_has_the_80_coco_categories_and_no_word_in_two_of_them():
    table = coco_synonyms()
    assert len(table) == 80
    assert {"person", "traffic light", "hot dog", "dining table", "teddy bear"} <= set(table)
    words = [w for row in table.values() for w in row]
    assert len(words) == len(set(words)) == len(coco_canonical())


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        # multi-word names win over their parts: a hot dog is no dog, a traffic light no light
        ("A dog eats a hot dog.", [("dog", "dog"), ("hot dog", "hot dog")]),
        ("Two hot dogs near the traffic lights.", [("hot dog", "hot dog"), ("traffic light",) * 2]),
        ("The dining tables and a teddy bear.", [("dining table",) * 2, ("teddy bear",) * 2]),
        # synonyms and plurals, regular and irregular
        (
            "Puppies on a sofa, two men, women and people.",
            [
                ("puppy", "dog"),
                ("sofa", "couch"),
                ("man", "person"),
                ("woman", "person"),
                ("people", "person"),
            ],
        ),
        ("Knives, buses and ponies.", [("knife", "knife"), ("bus", "bus"), ("pony", "horse")]),
        ("A pair of scissors and skis.", [("scissors",) * 2, ("skis",) * 2]),
        ("Wine glasses on a stove top oven.", [("wine glass",) * 2, ("stove top oven", "oven")]),
        # Rohrbach et al.'s special cases
        ("A baby elephant by a passenger train.", [("elephant",) * 2, ("train",) * 2]),
        ("A toilet seat.", [("toilet",) * 2]),
        ("A seat next to the toilet.", [("toilet",) * 2]),
        ("A chair on home plate.", [("chair",) * 2]),
        # every occurrence counts
        ("A dog and another dog.", [("dog",) * 2, ("dog",) * 2]),
        ("A sunny landscape with hills.", []),
    ],
)
def test_coco_mentions(caption, expected):
    assert coco_mentions(caption) == expected


def test_object_categories_normalise_the_ground_truth():
    assert object_categories(["Dining Tables", "puppies", "motor bike", "lamp"]) == {
        "dining table",
        "dog",
        "motorcycle",
        "lamp",
    }


def test_chair_counts():
    mentions = coco_mentions("A man rides a motor bike past a traffic light and two hot dogs.")
    assert [c for _, c in mentions] == ["person", "motorcycle", "traffic light", "hot dog"]
    assert chair_counts(mentions, {"person", "motorcycle", "traffic light"}) == (4, ["hot dog"])
    assert chair_counts(mentions, set()) == (4, [w for w, _ in mentions])
    assert chair_counts([], {"dog"}) == (0, [])


def test_per_caption_values_with_known_hallucinations():
    samples = [
        # hot dog is hallucinated: 1 of 4 mentions
        sample(
            "A man rides a motor bike past a traffic light and a hot dog.",
            ["person", "motorcycle", "traffic light"],
            id="a",
        ),
        # teddy bears are hallucinated: 1 of 3; synonyms and plurals in caption and truth
        sample(
            "Two puppies sleep on the dining tables next to some teddy bears.",
            ["dogs", "dining table"],
            id="b",
        ),
        # a hot dog is not a dog: 1 of 1
        sample("A hot dog on a plate.", ["dog"], id="c"),
        # nothing hallucinated: baby elephant is no person, a toilet seat no chair
        sample("A baby elephant next to a toilet seat.", ["elephant", "toilet"], id="d"),
        # ground truth named by a synonym
        sample("A cat on a couch.", ["cat", "sofa"], id="e"),
    ]
    scores = Chair().score(samples, None)
    got = [(s.values["chair_s"], s.values["chair_i"]) for s in scores]
    assert got == [(1.0, 0.25), (1.0, pytest.approx(1 / 3)), (1.0, 1.0), (0.0, 0.0), (0.0, 0.0)]
    assert scores[0].info["chair_hallucinated"] == ["hot dog"]
    assert scores[1].info["chair_hallucinated"] == ["teddy bear"]
    assert all(s.failure is None or "chair_ov_i" in s.failure for s in scores)


def test_corpus_chair_i_is_a_ratio_of_totals_not_a_mean_of_ratios():
    samples = [
        sample("A dog and a cat.", ["dog"], id="a"),  # 1 of 2
        sample("A dog, a cat, a cow and a horse.", ["dog", "cat", "cow", "horse"], id="b"),  # 0/4
        sample("A bird.", ["dog"], id="c"),  # 1 of 1
        sample("A sunny sky.", ["dog"], id="d"),  # no mention: chair_s 0, chair_i undefined
        sample("A dog.", None, id="e"),  # no ground truth: left out
    ]
    chair = Chair()
    scores = chair.score(samples, None)
    assert [s.values["chair_s"] for s in scores][:4] == [1.0, 0.0, 1.0, 0.0]
    assert math.isnan(scores[3].values["chair_i"]) and "no COCO object" in scores[3].failure
    corpus = chair.corpus(samples, scores)
    assert corpus["chair_i"] == pytest.approx(2 / 7)  # the mean of ratios would be 0.5
    assert corpus["chair_s"] == pytest.approx(2 / 4)
    assert "chair_ov_i" not in corpus  # no claims anywhere
    stats = summarise(scores)
    assert stats["chair_i"]["n"] == 3 and stats["chair_i"]["n_failed"] == 2


def test_references_add_to_the_ground_truth_unless_switched_off():
    s = sample("A cat on a bed.", [], references=["A kitten lying on a bed."])
    assert Chair().score([s], None)[0].values["chair_s"] == 0.0
    off = build("chair", include_references=False).score([s], None)[0]
    assert off.values["chair_s"] == 1.0 and off.values["chair_i"] == 1.0


def test_an_empty_object_list_means_nothing_is_there():
    score = Chair(include_references=False).score([sample("A dog.", [])], None)[0]
    assert score.values["chair_s"] == 1.0 and score.values["chair_i"] == 1.0


def test_without_ground_truth_chair_is_nan_with_a_reason_but_ov_is_computed():
    claims = [
        {"kind": "object", "subject": "car", "verdict": "supported"},
        {"kind": "object", "subject": "dog", "verdict": "refuted"},
    ]
    score = Chair().score([sample("A car and a puppy.", None, claims=claims)], None)[0]
    assert math.isnan(score.values["chair_s"]) and math.isnan(score.values["chair_i"])
    assert "no ground-truth object list" in score.failure
    assert score.values["chair_ov_i"] == 0.5


def test_empty_caption_fails():
    score = Chair().score([sample("  ", ["dog"])], None)[0]
    assert all(math.isnan(v) for v in score.values.values()) and score.failure == "empty caption"


def test_open_vocabulary_chair_from_detector_verdicts():
    claims = [
        {"kind": "object", "subject": "car", "verdict": "supported"},
        {"kind": "object", "subject": "dogs", "verdict": "refuted"},
        {"kind": "object", "subject": "tree", "verdict": "uncertain"},
        {"kind": "attribute", "subject": "car", "verdict": "refuted", "text": "The car is red."},
        {"kind": "object", "subject": "kite", "verdict": "refuted"},  # not in the caption
    ]
    caption = "A red car parked next to a puppy and a tree, under a cloud."
    score = Chair().score([sample(caption, None, claims=claims)], None)[0]
    assert score.values["chair_ov_i"] == 0.5  # puppy (a dog, refuted) of {car, puppy}
    assert score.info["chair_ov"] == {
        "supported": ["car"],
        "hallucinated": ["puppy"],
        "uncertain": ["tree"],
        "unchecked": ["cloud"],
    }


def test_ov_verdicts_prefer_the_exact_subject():
    claims = [
        {"kind": "object", "subject": "red car", "verdict": "refuted"},
        {"kind": "object", "subject": "car", "verdict": "supported"},
    ]
    assert ov_verdicts(["red car", "car", "blue car"], claims) == {
        "red car": "refuted",
        "car": "supported",
        "blue car": "supported",  # same head noun; one supported claim is enough
    }


def test_open_vocabulary_chair_needs_decided_object_claims():
    only_uncertain = [{"kind": "object", "subject": "dog", "verdict": "uncertain"}]
    no_objects = [{"kind": "count", "subject": "dog", "verdict": "refuted", "count": 2}]
    scores = Chair().score(
        [
            sample("A dog.", ["dog"], claims=only_uncertain),
            sample("A dog.", ["dog"], claims=no_objects),
            sample("A dog.", ["dog"]),
        ],
        None,
    )
    assert all(math.isnan(s.values["chair_ov_i"]) for s in scores)
    assert "no object of the caption was decided" in scores[0].failure
    assert "no object claims" in scores[1].failure and "no object claims" in scores[2].failure
    assert all(s.values["chair_s"] == 0.0 for s in scores)


def test_corpus_open_vocabulary_ratio():
    supported = {"kind": "object", "subject": "cat", "verdict": "supported"}
    refuted = {"kind": "object", "subject": "sofa", "verdict": "refuted"}
    samples = [
        sample("A cat on a sofa.", None, claims=[supported, refuted], id="a"),  # 1 of 2
        sample("A cat.", None, claims=[supported], id="b"),  # 0 of 1
    ]
    chair = Chair()
    scores = chair.score(samples, None)
    assert [s.values["chair_ov_i"] for s in scores] == [0.5, 0.0]
    assert chair.corpus(samples, scores) == {"chair_ov_i": pytest.approx(1 / 3)}


def test_options_are_checked():
    with pytest.raises(TypeError):
        Chair(bogus=1)
    with pytest.raises(ConfigError, match="chair"):
        build("chair", bogus=1)
    assert Chair.value_names == ("chair_s", "chair_i", "chair_ov_i")
