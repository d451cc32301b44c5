"""The benchmark's report: targets, demo stories and table, from hand-made records."""

from __future__ import annotations

import math

from factcap.bench.shapes import run as bench_run
from factcap.bench.shapes.language import caption, caption_of
from factcap.bench.shapes.world import SHAPES, make_scene
from factcap.schema import Claim, Proposal, Record


def _sources(best_h: float, best_r: float, final_h: float, final_r: float, noverify_h: float):
    def metrics(h: float, r: float) -> dict[str, float]:
        return dict.fromkeys(bench_run.METRIC_KEYS, 0.5) | {"hallucination_rate": h, "recall": r}

    return {
        "sources": {
            "proposal:a": metrics(best_h, 0.6),
            "proposal:b": metrics(0.3, best_r),
            "final": metrics(final_h, final_r),
            "final_noverify": metrics(noverify_h, final_r),
        }
    }


def test_targets_compare_the_final_caption_with_the_best_single_proposer():
    met = bench_run.check_targets(_sources(0.2, 0.8, 0.05, 0.76, 0.25))
    assert met["hallucination_ratio"] == 0.25 and met["recall_ratio"] == 0.95
    assert met["noverify_hallucinates_more"] and met["met"]
    too_many = bench_run.check_targets(_sources(0.2, 0.8, 0.11, 0.76, 0.25))
    assert too_many["hallucination_ratio"] == 0.55 and not too_many["met"]
    too_few = bench_run.check_targets(_sources(0.2, 0.8, 0.05, 0.70, 0.25))
    assert too_few["recall_ratio"] == 0.875 and not too_few["met"]
    no_gain = bench_run.check_targets(_sources(0.2, 0.8, 0.05, 0.76, 0.05))
    assert not no_gain["noverify_hallucinates_more"] and not no_gain["met"]
    perfect = bench_run.check_targets(_sources(0.0, 0.8, 0.0, 0.8, 0.1))
    assert perfect["hallucination_ratio"] == 0.0 and perfect["met"]
    worse = bench_run.check_targets(_sources(0.0, 0.8, 0.01, 0.8, 0.1))
    assert math.isinf(worse["hallucination_ratio"]) and not worse["met"]


def _record(scene, proposal: str, final: str, absent: str) -> Record:
    claim = Claim(
        kind="object",
        text=f"There is a {absent}.",
        subject=absent,
        verdict="refuted",
        evidence={"detector_boxes": [], "vqa_p_yes": 0.03},
    )
    return Record(
        id=scene.id,
        source=f"{scene.id}.png",
        proposals=[Proposal(model="hf:/m/captioner_insertion", text=proposal)],
        claims=[claim],
        captions={bench_run.STYLE: final},
    )


def test_stories_show_a_refuted_hallucination_and_a_final_caption_that_is_right():
    scene = make_scene(0, split="test")
    (_, colour, _), _ = scene.groups()[0]
    shape = next(s for s in SHAPES if scene.count(s, colour) == 0)
    absent = f"{colour} {shape}"
    truth = caption(scene)
    invented = f"{truth} There is a small {absent}."
    good = _record(scene, invented.lower(), truth, absent)
    (story,) = bench_run.removed_hallucinations([scene], [good])
    assert absent in story and "the detector found no boxes, VQA P(yes)=0.03" in story
    assert f"final caption: {truth!r}" in story
    kept = _record(scene, invented.lower(), invented, absent)  # the final caption kept it
    empty = _record(scene, invented.lower(), "", absent)
    unsaid = _record(scene, truth.lower(), truth, absent)  # no proposal named it
    (kind, count), *rest = scene.groups()
    miscounted = caption_of([(kind, count + 1), *rest])
    wrong_count = _record(scene, invented.lower(), miscounted, absent)
    stories = bench_run.removed_hallucinations([scene] * 4, [kept, empty, unsaid, wrong_count])
    assert stories == []


def test_table_has_a_row_per_source_and_a_column_per_metric():
    result = _sources(0.2, 0.8, 0.05, 0.76, 0.25)
    lines = bench_run.format_table(result).splitlines()
    assert lines[0].split() == ["source", *bench_run.METRIC_KEYS]
    assert [line.split()[0] for line in lines[1:]] == list(result["sources"])
    assert lines[3].split()[1:3] == ["0.050", "0.500"]
