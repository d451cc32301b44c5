"""Exactly-once resume: interrupted jobs continue with every input captioned once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import ROOT
from factcap.cli import main
from factcap.engine import read_records
from factcap.inputs import expand

FAST_CONFIG = "preset: tiny\nocr: null\nbatch_size: 4\n"
FIRST_RECORD_S = 300  # generous: a job's first record comes after its models load


def make_images(folder: Path, n: int) -> list[str]:
    """``n`` small distinct PNGs (distinct pixels, so no two inputs look alike)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(n):
        colour = (rng.randrange(256), rng.randrange(256), (i * 7) % 256)
        Image.new("RGB", (40 + i % 7, 30 + i % 5), colour).save(folder / f"img{i:04d}.png")
    return sorted(item.id for item in expand(folder))


def ids_in(path: Path) -> list[str]:
    return [record["id"] for record in read_records(path)]


def records_now(path: Path) -> int | None:
    """How many whole records a running (or killed) job's output holds: JSONL lines that end
    in a newline (a line being written does not yet), finished shards; ``None`` while a shard
    cannot be read."""
    if not path.exists():
        return 0
    if path.is_file():
        return sum(line.endswith(b"\n") for line in path.read_bytes().splitlines(True))
    try:
        return len(ids_in(path))
    except Exception:  # noqa: BLE001 - read again a moment later
        return None


def wait_for_records(proc: subprocess.Popen, out: Path, at_least: int, log: Path) -> int:
    """Poll until ``out`` holds ``at_least`` records; fail if the job ends (its stderr is in
    ``log``) or takes longer than ``FIRST_RECORD_S`` (never expected: it only has to load
    its models first)."""
    deadline = time.monotonic() + FIRST_RECORD_S
    while True:
        n = records_now(out)
        if n is not None and n >= at_least:
            return n
        if proc.poll() is not None:
            pytest.fail(f"the job ended ({proc.returncode}) at {n} records: {log.read_text()}")
        assert time.monotonic() < deadline, f"{n} records after {FIRST_RECORD_S} s"
        time.sleep(0.01)


@pytest.fixture
def job(tmp_path):
    config = tmp_path / "fast.yaml"
    config.write_text(FAST_CONFIG)
    return tmp_path, config


@pytest.mark.slow
def test_resume_skips_done_inputs_and_repairs_a_torn_line(job, capsys):
    tmp, config = job
    expected = make_images(tmp / "imgs", 6)
    out = tmp / "out.jsonl"
    base = ["caption", str(tmp / "imgs"), "-o", str(out), "--config", str(config), "--quiet"]
    assert main(base) == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:25])  # 3 whole lines and a torn one
    assert main([*base, "--resume"]) == 0
    assert "3 skipped (already in the output)" in capsys.readouterr().err
    assert sorted(ids_in(out)) == expected  # each once; the torn line was redone
    assert main([*base, "--resume"]) == 0  # nothing left to do: nothing written
    assert sorted(ids_in(out)) == expected


@pytest.mark.slow
def test_retry_failed_redoes_only_error_records(job):
    tmp, config = job
    expected = make_images(tmp / "imgs", 4)
    out = tmp / "out.jsonl"
    base = ["caption", str(tmp / "imgs"), "-o", str(out), "--config", str(config), "--quiet"]
    assert main(base) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    records[1].update(
        status="error", error={"type": "RemoteError", "message": "timeout"}, captions={}
    )
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main([*base, "--resume"]) == 0
    assert [r["status"] for r in read_records(out)].count("error") == 1  # resume keeps it
    assert main([*base, "--retry-failed"]) == 0
    again = list(read_records(out))
    assert sorted(r["id"] for r in again) == expected
    assert all(r["status"] == "ok" for r in again)
    assert next(r for r in again if r["id"] == records[1]["id"])["captions"]["detailed"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "webdataset"])
def test_kill_9_at_random_moments_then_resume_is_exactly_once(job, fmt):
    tmp, config = job
    expected = make_images(tmp / "imgs", 120)
    out = tmp / ("out.jsonl" if fmt == "jsonl" else "shards")
    cmd = [
        sys.executable,
        "-m",
        "factcap.cli",
        "caption",
        str(tmp / "imgs"),
        "-o",
        str(out),
        "--config",
        str(config),
        "--quiet",
        "--resume",
        "--format",
        fmt,
    ]
    if fmt == "webdataset":
        cmd += ["--shard-size", "8"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    rng = random.Random(1234)
    progress = [0]
    for run in range(3):
        log = tmp / f"stderr{run}.txt"
        with log.open("w") as stderr:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
        try:
            # mid-job, whatever the machine's speed: once a random number of new records
            # (1-10; a whole shard for webdataset) is out, at a random moment after it
            wait_for_records(proc, out, progress[-1] + rng.randint(1, 10), log)
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            if proc.poll() is None:  # a job that ended by itself is reported just below
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL, f"the job ended ({proc.returncode}) unkilled"
        progress.append(records_now(out))
    assert progress == sorted(set(progress)), progress  # each killed run did some work
    final = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    got = ids_in(out)
    assert len(got) == len(set(got)), "duplicated records"
    assert sorted(got) == expected, "lost records"
    if fmt == "webdataset":
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
