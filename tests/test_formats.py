"""Every output format reads back everywhere: evaluate, report and resume take JSONL,
Parquet and WebDataset outputs alike (engine/records.py is their one reader)."""

from __future__ import annotations

import json
import re

import pytest

from factcap.cli import main
from factcap.config import load_config
from factcap.engine.job import CaptionJob, JobSpec
from factcap.engine.records import output_format, read_records
from factcap.examples import example_paths
from factcap.report import write_report
from scripted import scripted_pipeline

FORMATS = {"jsonl": "out.jsonl", "parquet": "out.parquet", "webdataset": "shards"}


@pytest.fixture(params=list(FORMATS))
def output(request, tmp_path):
    """Three example photos captioned (scripted models) into one output of each format."""
    config = load_config(preset="tiny", overrides={"ocr": None})
    out = tmp_path / FORMATS[request.param]
    photos = [str(p) for p in example_paths()[:3]]
    spec = JobSpec(inputs=photos, output=out, format=request.param, shard_size=None)
    result = CaptionJob(spec, config).run(scripted_pipeline(config))
    assert result.ok == 3 and output_format(out) == request.param
    return out


def test_records_read_back_from_every_format(output):
    records = list(read_records(output))
    assert len(records) == 3
    assert {r["captions"]["detailed"] for r in records} == {"A grey cat sits on a sofa."}
    assert all(r["claims"][0]["verdict"] == "supported" for r in records)


def test_report_reads_every_format(output, tmp_path):
    _, stats = write_report(output, None, tmp_path / "r.html", thumb_px=32, confine=False)
    assert (stats.records, stats.errors, stats.thumbnails) == (3, 0, 3)
    assert stats.verdicts["supported"] == 3


def test_evaluate_reads_every_format(output, tmp_path, capsys):
    scores = tmp_path / "scores.jsonl"
    args = ["evaluate", str(output), "-o", str(scores), "--metrics", "clip_score", "--quiet"]
    assert main(args) == 0
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(rows) == 3 and all(r["metrics"]["clip_score"] is not None for r in rows)
    assert re.search(r"clip_score\s+\S+ \(n=3\)", capsys.readouterr().out)
