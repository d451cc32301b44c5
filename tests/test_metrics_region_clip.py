"""region_clip_score: CLIP-S of each region caption against its padded crop, mean per image.

A scripted embedder (the far side of the role boundary) embeds an image as its mean colour
and a text as the sum of its colour words, so every cosine is computed by hand; then the tiny
preset's real CLIP scores a ``factcap caption --regions`` run through ``factcap evaluate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from factcap.boxes import pad
from factcap.errors import ConfigError
from factcap.metrics import Sample, build
from factcap.metrics.region_clip import DEFAULT_PADDING, RegionClipScore, mean_region_scores
from factcap.metrics.resources import Resources

COLOURS = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "antired": (-1.0, 0.0, 0.0),
}


class ColourEmbedder:
    """An image is its unit mean RGB; a text is the unit sum of its colour words. Records
    the size of every image it embeds."""

    name = "colour"

    def __init__(self):
        self.images: list[tuple[int, int]] = []

    def embed_images(self, images):
        self.images.extend(im.size for im in images)
        rows = [np.asarray(im, dtype=np.float64).reshape(-1, 3).mean(axis=0) for im in images]
        return np.stack([r / np.linalg.norm(r) for r in rows]).astype(np.float32)

    def embed_texts(self, texts):
        rows = [
            np.sum([COLOURS[w] for w in t.lower().strip(".").split() if w in COLOURS], axis=0)
            for t in texts
        ]
        return np.stack([r / np.linalg.norm(r) for r in rows]).astype(np.float32)


@pytest.fixture
def picture(tmp_path):
    """200 x 100: red where x < 100, blue from x = 100 (PNG: exact colours)."""
    image = Image.new("RGB", (200, 100), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 100, 100))
    path = tmp_path / "halves.png"
    image.save(path)
    return str(path)


@pytest.fixture
def embedder():
    return ColourEmbedder()


@pytest.fixture
def resources(embedder):
    return Resources({"embedder": lambda: embedder})


def _region(rid, box, caption, size=(200, 100)):
    w, h = size
    return {
        "id": rid,
        "box": list(box),
        "box_normalised": [box[0] / w, box[1] / h, box[2] / w, box[3] / h],
        "label": "thing",
        "caption": caption,
        "score": 0.9,
    }


def _sample(source, regions, caption_source="final:detailed", rid="a"):
    return Sample(rid, source, caption_source, "A picture.", regions=regions)


def test_hand_computed_cosines(picture, resources):
    regions = [
        _region("r0", (10, 10, 60, 60), "A red square."),  # padded (5, 5, 65, 65): all red
        _region("r1", (140, 20, 190, 70), "Blue."),  # all blue
        _region("r2", (10, 60, 40, 90), "Green."),  # red crop, green caption: cos 0
        _region("r3", (20, 20, 50, 50), "antired"),  # cos -1: CLIP-S 0
    ]
    [score] = RegionClipScore().score([_sample(picture, regions)], resources)
    assert score.failure is None
    assert score.values == pytest.approx(
        {"region_clip_score": 2.5 * 2 / 4, "region_clip_cosine": 1 / 4, "region_count": 4.0}
    )
    assert score.info["region_clip_scores"] == pytest.approx(
        {"r0": 2.5, "r1": 2.5, "r2": 0.0, "r3": 0.0}
    )
    assert mean_region_scores([1, 1, 0, -1]) == pytest.approx(score.values)


def test_the_crop_is_padded_like_the_pipeline(picture, resources, embedder):
    """(50, 0, 100, 40) is all red; padded by 0.1 it takes 5 blue columns of 60."""
    regions = [_region("r0", (50, 0, 100, 40), "red")]
    assert DEFAULT_PADDING == 0.1
    assert pad((50, 0, 100, 40), 0.1, (200, 100)) == (45, 0, 105, 44)
    [padded] = RegionClipScore().score([_sample(picture, regions)], resources)
    assert padded.values["region_clip_cosine"] == pytest.approx(11 / math.sqrt(122), abs=1e-6)
    assert embedder.images == [(60, 44)]
    [bare] = RegionClipScore(padding=0.0).score([_sample(picture, regions)], resources)
    assert bare.values["region_clip_cosine"] == pytest.approx(1.0)
    assert bare.values["region_clip_score"] == pytest.approx(2.5)
    assert embedder.images == [(60, 44), (50, 40)]


def test_normalised_boxes_of_other_tools(picture, resources):
    pixels = [_region("r0", (50, 0, 100, 40), "red"), _region("r1", (140, 20, 190, 70), "red")]
    fractions = [{k: v for k, v in r.items() if k != "box"} for r in pixels]
    scores = RegionClipScore().score(
        [_sample(picture, pixels), _sample(picture, fractions, rid="b")], resources
    )
    assert scores[0].values == pytest.approx(scores[1].values)
    assert scores[0].values["region_clip_cosine"] == pytest.approx(11 / math.sqrt(122) / 2)


def test_each_crop_is_embedded_once_across_styles_and_batches(picture, embedder):
    resources = Resources({"embedder": lambda: embedder}, batch_size=2)
    regions = [_region(f"r{k}", (10 * k, 0, 10 * k + 30, 30), "red") for k in range(5)]
    metric = build("region_clip_score")
    for style in ("final:detailed", "final:short"):
        [score] = metric.score([_sample(picture, regions, style)], resources)
        assert score.values["region_count"] == 5.0
    assert len(embedder.images) == 5
    resources.forget(picture)
    metric.score([_sample(picture, regions)], resources)
    assert len(embedder.images) == 10


def test_failures_say_why(picture, resources, tmp_path):
    good = [_region("r0", (10, 10, 60, 60), "red")]
    samples = [
        _sample(picture, [], rid="none"),
        _sample(picture, [_region("r0", (10, 10, 60, 60), " ")], rid="uncaptioned"),
        _sample(
            picture,
            [{**_region("r0", (60, 10, 10, 60), "red"), "box_normalised": None}],
            rid="inverted",
        ),  # fmt: skip
        _sample(str(tmp_path / "gone.png"), good, rid="missing"),
        _sample(picture, good, "proposal:tiny:blip", rid="proposal"),
        _sample(picture, good, rid="ok"),
    ]
    scores = RegionClipScore().score(samples, resources)
    failures = {s.id: sc.failure for s, sc in zip(samples, scores, strict=True)}
    assert failures["none"] == "no regions"
    assert failures["uncaptioned"] == failures["inverted"] == "no region captions"
    assert "gone.png" in failures["missing"]
    assert "final captions" in failures["proposal"]
    assert failures["ok"] is None and scores[-1].values["region_clip_score"] == 2.5
    for score in scores[:-1]:
        assert all(math.isnan(v) for v in score.values.values())
    [no_model] = RegionClipScore().score([samples[-1]], Resources({}))
    assert "no embedder" in no_model.failure


def test_options_are_checked():
    assert RegionClipScore(padding=0).padding == 0.0
    with pytest.raises(ValueError, match="padding"):
        RegionClipScore(padding=-0.1)
    with pytest.raises(TypeError, match="padding"):
        RegionClipScore(padding="wide")
    with pytest.raises(ValueError, match="w must be"):
        RegionClipScore(w=0)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        build("region_clip_score", margin=2)


def test_evaluate_passes_the_records_regions(picture, resources):
    from factcap.evaluate import build_samples, evaluate

    rows = [
        {"id": "a", "source": picture, "status": "ok",
         "captions": {"detailed": "A picture.", "short": "Halves."},
         "regions": [_region("r0", (10, 10, 60, 60), "red")]},
        {"id": "b", "source": picture, "status": "ok", "captions": {"detailed": "Plain."}},
    ]  # fmt: skip
    samples = build_samples(rows, "final", {}, {})
    assert [len(s.regions) for s in samples] == [1, 1, 0]
    result = evaluate(samples, ["region_clip_score"], resources)
    assert result.summary["final:detailed"]["region_clip_score"] == {
        "mean": 2.5, "std": 0.0, "n": 1, "n_failed": 1}  # fmt: skip
    assert result.summary["final:short"]["region_count"]["mean"] == 1.0
    assert [r["failures"] for r in result.rows()][2] == {"region_clip_score": "no regions"}


@pytest.mark.slow
def test_tiny_clip_end_to_end_through_factcap_evaluate(tmp_path, capsys):
    """``factcap caption --regions`` with the tiny preset, then ``factcap evaluate --metrics
    region_clip_score``: every region scored, each value what the tiny CLIP gives for the
    padded crop and the region caption."""
    from factcap.backends import registry
    from factcap.cli import main
    from factcap.examples import example_paths
    from factcap.images import decode
    from factcap.text.fit import embed_split_texts

    photos = [str(p) for p in example_paths()[:2]]
    results, scores = tmp_path / "regions.jsonl", tmp_path / "scores.jsonl"
    assert main(["caption", *photos, "-o", str(results), "--regions", "--quiet"]) == 0
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert all(r["regions"]["items"] for r in records)
    capsys.readouterr()
    args = ["evaluate", str(results), "-o", str(scores), "--metrics", "region_clip_score"]
    assert main([*args, "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "region_clip_score" in table and "region_count" in table
    rows = {r["id"]: r for r in map(json.loads, scores.read_text().splitlines())}
    summary = json.loads((tmp_path / "scores.summary.json").read_text())
    clip = registry.build("embedder", "tiny:clip")
    means = []
    for record in records:
        row = rows[record["id"]]
        assert row["failures"] == {}
        image = decode(record["source"]).image
        captioned = [r for r in record["regions"]["items"] if r["caption"].strip()]
        crops = [image.crop(pad(r["box"], DEFAULT_PADDING, image.size)) for r in captioned]
        texts = embed_split_texts([r["caption"] for r in captioned], clip)  # split as CLIP-S
        vectors = clip.embed_images(crops).astype(np.float64)
        cosines = [float(t.vector @ v) for t, v in zip(texts, vectors, strict=True)]
        expected = mean_region_scores([float(c) for c in cosines])
        assert row["metrics"] == pytest.approx(expected, abs=1e-4)
        assert set(row["info"]["region_clip_scores"]) == {r["id"] for r in captioned}
        means.append(expected["region_clip_score"])
    stats = summary["final:detailed"]["region_clip_score"]
    assert stats["n"] == 2 and stats["mean"] == pytest.approx(np.mean(means), abs=1e-4)
    assert Path(scores).exists()
