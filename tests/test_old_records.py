"""Results written before records had ``media`` (main at 8d96429: ``kind``, ``views`` and
``asset`` at the top level) stay readable by every reader: evaluate, report, filter,
export and resume. ``tests/data/records_8d96429`` was written by that commit with the tiny preset from
two example photos and a red cube (``cfg.yaml``: four 64-pixel views, saved in ``views/``),
as JSONL and as Parquet."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import assets3d
from factcap.engine.records import read_records
from factcap.examples import example_paths
from factcap.schema import Media, Record, stable_id

OLD = Path(__file__).parent / "data" / "records_8d96429"


@pytest.fixture
def old(tmp_path, monkeypatch):
    """The old results beside the inputs they were written from, as the current folder."""
    folder = tmp_path / "old"
    shutil.copytree(OLD, folder)
    (folder / "in").mkdir()
    for path in example_paths()[:2]:
        shutil.copy(path, folder / "in")
    assets3d.red_cube(folder / "in")
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize("name", ["results.jsonl", "results.parquet"])
def test_old_records_read_with_their_media(name):
    rows = list(read_records(OLD / name))
    assert [Path(r["source"]).name for r in rows] == ["astronaut.jpg", "camera.jpg", "red_cube.glb"]
    assert "kind" not in rows[0] and rows[2]["kind"] == "asset"  # the old layout, as written
    photo, _, cube = (Record.from_dict(r) for r in rows)
    assert photo.media == Media() and "media" not in photo.to_dict()
    assert cube.media.kind == "asset" and cube.media.facts["faces"] == 12
    assert [v["index"] for v in cube.media.views] == [0, 1, 2, 3]
    assert cube.to_dict()["media"]["views"] == rows[2]["views"]
    assert not {"kind", "views", "asset"} & set(cube.to_dict())  # written the new way


def test_evaluate_report_filter_and_export_read_old_records(old):
    from factcap.cli import main

    assert main(["evaluate", "results.jsonl", "-o", "scores.jsonl", "--metrics", "clip_score"]) == 0
    scores = [json.loads(line) for line in Path("scores.jsonl").read_text().splitlines()]
    assert len(scores) == 3 and all(s["metrics"].get("clip_score") is not None for s in scores)

    assert main(["report", "results.jsonl", "-o", "report.html"]) == 0
    page = Path("report.html").read_text()
    assert "its views were not saved" not in page and page.count("data:image/jpeg") >= 3

    where = ["--where", 'kind == "asset"']
    assert main(["filter", "results.jsonl", *where, "-o", "assets.jsonl"]) == 0
    [kept] = list(read_records(old / "assets.jsonl"))
    assert Media.from_row(kept).kind == "asset"

    assert main(["export", "results.jsonl", "--to", "folder", "-o", "out", "--images", "copy"]) == 0
    exported = sorted(p.name for p in Path("out").glob("*.png"))
    assert exported == [f"red_cube-view-{i}.png" for i in range(4)]  # the asset as its views
    assert sorted(p.name for p in Path("out").glob("*.jpg")) == ["astronaut.jpg", "camera.jpg"]


@pytest.mark.slow
def test_resume_of_an_old_output_finds_its_records_done(old):
    from factcap.cli import main

    # ids come from resolved paths: give the old lines the ids of the inputs here
    lines = [json.loads(line) for line in Path("results.jsonl").read_text().splitlines()]
    for line in lines:
        line["id"] = stable_id(os.path.realpath(line["source"]))
    Path("results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    before = Path("results.jsonl").read_bytes()
    args = ["caption", "in", "-o", "results.jsonl", "--config", "cfg.yaml", "--quiet"]
    assert main([*args, "--resume"]) == 0
    assert Path("results.jsonl").read_bytes() == before  # nothing left to do: nothing written
