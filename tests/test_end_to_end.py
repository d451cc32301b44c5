"""The whole pipeline with real (tiny, random-weight) models, through the CLI and the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, ROOT
from factcap.examples import example_paths
from factcap.pipeline import Pipeline

pytestmark = pytest.mark.slow
ODD = DATA / "odd-images"


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "factcap.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out.jsonl"
    proc = run_cli(
        "caption",
        str(ROOT / "src/factcap/examples"),
        str(ODD),
        "-o",
        str(out),
        "--style",
        "detailed",
        "--style",
        "short",
        "--quiet",
    )
    return proc, [json.loads(line) for line in out.read_text().splitlines()]


def test_tiny_run_writes_one_record_per_input(tiny_run):
    proc, records = tiny_run
    assert proc.returncode == 1, proc.stderr  # the odd images include broken ones: status 1
    expected = sorted(str(p) for p in example_paths()) + sorted(str(p) for p in ODD.iterdir())
    assert sorted(r["source"] for r in records) == sorted(expected)
    assert len({r["id"] for r in records}) == len(records)
    assert "ok" in proc.stderr and "errors" in proc.stderr  # closing summary


def test_photos_are_captioned_and_fact_checked(tiny_run):
    _, records = tiny_run
    photos = {str(p) for p in example_paths()}
    captioned = [r for r in records if r["source"] in photos]
    assert len(captioned) == len(photos) > 0
    boxes = 0
    for r in captioned:
        assert r["status"] == "ok", r["error"]
        assert len(r["proposals"]) >= 2
        checked = [
            c
            for c in r["claims"]
            if c["verdict"] in ("supported", "refuted", "uncertain") and c["score"] is not None
        ]
        assert checked, r["claims"]
        assert r["captions"]["detailed"].strip() and r["captions"]["short"].strip()
        assert r["models"]["detector"] == "tiny:grounding_dino"
        assert {"decode", "claims", "detect"} <= set(r["timings_ms"])
        for c in r["claims"]:
            for box in c["evidence"].get("detector_boxes", []):
                x0, y0, x1, y1 = box["box"]
                assert 0 <= x0 <= x1 <= r["image_size"][0] and 0 <= y0 <= y1 <= r["image_size"][1]
                boxes += 1
    assert boxes > 0, "no claim of any photo carries a detector box: the bounds went unchecked"


def test_odd_files_are_captioned_or_explained(tiny_run):
    _, records = tiny_run
    odd = [r for r in records if Path(r["source"]).parent == ODD]
    assert len(odd) == 25
    for r in odd:
        assert r["status"] in ("ok", "error")
        if r["status"] == "error":
            assert r["error"]["type"] and r["error"]["message"]
        else:
            assert r["captions"]["detailed"]
    bomb = next(r for r in odd if r["source"].endswith("decompression_bomb.gif"))
    assert bomb["error"]["type"] == "DecompressionBomb"


def test_ids_are_stable_across_runs(tiny_run, tmp_path):
    _, records = tiny_run
    out = tmp_path / "again.jsonl"
    photo = str(example_paths()[0])
    assert run_cli("caption", photo, "-o", str(out), "--quiet").returncode == 0
    again = json.loads(out.read_text())
    first = next(r for r in records if r["source"] == photo)
    assert again["id"] == first["id"]
    assert again["proposals"] == first["proposals"]  # deterministic tiny models


def test_detector_runs_once_per_image_whatever_the_claims(photos):
    pipe = Pipeline.from_preset("tiny", batch_size=1).load()
    detector, _ = pipe.models["detector"]
    calls = []
    hook = detector.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        records = pipe.caption(photos[:3])
    finally:
        hook.remove()
    object_claims = [c for r in records for c in r.claims if c.kind in ("object", "count")]
    assert len(object_claims) > 3  # several claims per image ...
    assert len(calls) == 3  # ... and still one detector forward per image


def test_python_api_takes_paths_and_pil_images(photos):
    pipe = Pipeline.from_preset("tiny")
    records = pipe.caption(
        [photos[0], str(example_paths()[1])],
        styles=["alt", "t2i"],
        instruction="Mention the colours.",
    )
    assert [r.status for r in records] == ["ok", "ok"]
    assert records[0].source == "<image 0>"
    assert set(records[0].captions) == {"alt", "t2i", "instruction"}
    assert records[0].image_size == photos[0].size
