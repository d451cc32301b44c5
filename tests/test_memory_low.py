"""``memory.mode: low`` (engine/stage_major.py): one model in memory at a time, the items on
disk between stages, the same records as the normal mode, and a killed job that continues
after its last finished stage."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

from conftest import ROOT
from factcap.cli import main
from factcap.config import load_config
from factcap.engine.job import CaptionJob, JobSpec
from factcap.engine.records import read_records
from factcap.engine.stage_major import stage_dir
from factcap.errors import UsageError
from factcap.pipeline import stage as stage_module
from scripted import scripted_pipeline
from test_resume import make_images

FAST = "preset: tiny\nocr: null\n"


def _without_timings(path: Path) -> list[dict]:
    rows = list(read_records(path))
    for row in rows:
        row.pop("timings_ms")
    return rows


def _run(tmp_path, name, overrides, pipeline_of=scripted_pipeline, **spec):
    config = load_config(preset="tiny", overrides={"ocr": None, **overrides})
    out = tmp_path / name
    job = CaptionJob(JobSpec(inputs=[str(tmp_path / "imgs")], output=out, **spec), config)
    result = job.run(pipeline_of(config))
    return out, result


def test_low_memory_writes_the_records_of_the_normal_mode(tmp_path):
    make_images(tmp_path / "imgs", 7)
    normal, _ = _run(tmp_path, "normal.jsonl", {"batch_size": 2})
    low, result = _run(
        tmp_path, "low.jsonl", {"batch_size": 2, "memory": {"mode": "low", "chunk": 3}}
    )
    assert result.written == result.ok == 7
    assert _without_timings(low) == _without_timings(normal)  # chunk 3 ran as 4: whole batches
    assert not stage_dir(low).exists()  # the work between stages is gone once written


def test_each_stage_runs_over_the_chunk_before_the_next(tmp_path, monkeypatch):
    make_images(tmp_path / "imgs", 5)
    calls: list[tuple[str, int]] = []
    real = stage_module.run_stage

    def recording(stage, batch, model, context):
        calls.append((stage.name, len(batch)))
        real(stage, batch, model, context)

    monkeypatch.setattr("factcap.engine.stage_major.run_stage", recording)
    _run(tmp_path, "low.jsonl", {"batch_size": 2, "memory": {"mode": "low", "chunk": 4}})
    names = list(dict.fromkeys(name for name, _ in calls))
    per_chunk = [[(n, 2), (n, 2)] for n in names]  # chunk 1: two batches of 2 per stage
    assert calls == [c for pair in per_chunk for c in pair] + [(n, 1) for n in names]


def test_a_job_killed_between_stages_continues_after_the_last_finished_one(tmp_path, monkeypatch):
    """The second chunk is interrupted in its third stage; ``resume`` writes every record
    once, runs the chunk's first two stages no more, and the records are the normal mode's."""
    make_images(tmp_path / "imgs", 6)
    normal, _ = _run(tmp_path, "normal.jsonl", {"batch_size": 2})
    calls: list[str] = []
    real = stage_module.run_stage

    def dying(stage, batch, model, context):
        calls.append(stage.name)
        if len(calls) == len(stage_names) + 3:  # chunk 2's third stage: a kill
            raise KeyboardInterrupt
        real(stage, batch, model, context)

    config = load_config(preset="tiny", overrides={"ocr": None})
    stage_names = [s.name for s in scripted_pipeline(config).stages]
    monkeypatch.setattr("factcap.engine.stage_major.run_stage", dying)
    low = {"batch_size": 2, "memory": {"mode": "low", "chunk": 2}}
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "low.jsonl", low)
    out = tmp_path / "low.jsonl"
    assert len(list(read_records(out))) == 2  # chunk 1 was written
    state = json.loads((stage_dir(out) / "chunk.json").read_text())
    assert state["done"] == 1  # chunk 2: loaded, stages 0 and 1 finished
    calls.clear()
    monkeypatch.setattr(
        "factcap.engine.stage_major.run_stage", lambda *a: (calls.append(a[0].name), real(*a))
    )
    _, result = _run(tmp_path, "low.jsonl", low, resume=True)
    assert result.skipped == 2 and result.written == 4
    assert calls[: len(stage_names) - 2] == stage_names[2:]  # chunk 2 went on from stage 2
    assert _without_timings(out) == _without_timings(normal)
    assert not stage_dir(out).exists()


def test_a_work_folder_of_other_items_is_not_used(tmp_path):
    make_images(tmp_path / "imgs", 3)
    out = tmp_path / "low.jsonl"
    folder = stage_dir(out)
    folder.mkdir()
    (folder / "chunk.json").write_text(json.dumps({"ids": ["x"], "stages": ["propose"], "done": 0}))
    (folder / "stage-00.bin").write_bytes(b"not a pickle of ours")
    _, result = _run(tmp_path, "low.jsonl", {"memory": {"mode": "low"}}, resume=True)
    assert result.ok == 3 and not folder.exists()


def test_the_work_files_hold_plain_data_only(tmp_path):
    import pickle

    from factcap.engine.stage_major import _read_stage

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    (tmp_path / "stage-00.bin").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(pickle.UnpicklingError, match="not plain data"):
        next(_read_stage(tmp_path, 0))


def test_low_memory_is_refused_on_ray_before_anything_loads(tmp_path):
    config = load_config(preset="tiny", overrides={"memory": {"mode": "low"}})
    pytest.importorskip("ray")
    spec = JobSpec(inputs=[str(tmp_path)], output=tmp_path / "o.jsonl", executor="ray")
    with pytest.raises(UsageError, match="--memory low is for the local executor"):
        CaptionJob(spec, config)


@pytest.mark.slow
def test_one_model_is_in_memory_at_a_time(tmp_path, monkeypatch):
    """The real tiny models: when a model is built, every model built before it has been
    freed (weak references), except in the one slot two consecutive stages share."""
    import factcap.pipeline.models as models_module

    make_images(tmp_path / "imgs", 3)
    alive: list[weakref.ref] = []
    most = [0]
    real = models_module.build_configured

    def tracking(config, slot):
        gc.collect()
        most[0] = max(most[0], sum(ref() is not None for ref in alive))
        bound = real(config, slot)
        alive.append(weakref.ref(bound.backend))
        return bound

    monkeypatch.setattr(models_module, "build_configured", tracking)
    from factcap.pipeline import Pipeline

    _, result = _run(tmp_path, "low.jsonl", {"memory": {"mode": "low"}}, Pipeline)
    assert result.ok == 3
    assert len(alive) >= 4 and most[0] == 0  # each model freed before the next was built


@pytest.mark.slow
def test_kill_9_mid_chunk_then_resume_gives_the_normal_records(tmp_path):
    expected = make_images(tmp_path / "imgs", 6)
    config = tmp_path / "fast.yaml"
    config.write_text(FAST + "batch_size: 2\n")
    base = ["caption", str(tmp_path / "imgs"), "--config", str(config), "--quiet"]
    assert main([*base, "-o", str(tmp_path / "normal.jsonl")]) == 0
    out = tmp_path / "low.jsonl"
    cmd = [sys.executable, "-m", "factcap.cli", *base, "-o", str(out), "--memory", "low"]
    cmd += ["--chunk", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    state = stage_dir(out) / "chunk.json"
    with (tmp_path / "stderr.txt").open("w") as stderr:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 600
        while True:  # until the second chunk has finished a model stage
            try:
                now = json.loads(state.read_text())
            except (OSError, ValueError):
                now = None
            written = len(out.read_text().splitlines()) if out.exists() else 0
            if now and now["done"] >= 1 and written >= 2:  # chunk 1 out, a later one mid-way
                break
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.monotonic() < deadline, "no finished stage of the second chunk in 600 s"
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert main([*base, "-o", str(out), "--memory", "low", "--chunk", "2", "--resume"]) == 0
    assert sorted(r["id"] for r in read_records(out)) == expected  # each once
    assert _without_timings(out) == _without_timings(tmp_path / "normal.jsonl")
