"""The Ray executor: the same records as the local executor, on a local Ray instance."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the Ray executor needs Ray: pip install 'factcap[ray]'")

from conftest import DATA, ROOT  # noqa: E402
from factcap.config import load_config  # noqa: E402
from factcap.engine import open_sink, open_source, read_records  # noqa: E402
from factcap.engine.executor import run_job  # noqa: E402
from factcap.engine.ray_executor import (
    TASK_CPUS,
    StageWorker,
    decode_stage,
    feed_table,
    plan,
    read_work,
    run_ray_job,
    work_table,
)
from factcap.errors import ConfigError  # noqa: E402
from factcap.examples import example_paths  # noqa: E402
from factcap.pipeline import Pipeline  # noqa: E402
from factcap.pipeline.work import Work  # noqa: E402
from factcap.schema import Claim, Proposal, Record  # noqa: E402

ODD = DATA / "odd-images"
REAL = ["flower.jpg", "hopper_orientation_6.jpg"]  # real photos among Pillow's test images
BROKEN = ["broken.png", "cross_scan_line_truncated.tga"]
TIMINGS: dict[str, float] = {}


def same_except_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "timings_ms"}


def differences(a: object, b: object, tol: float = 1e-5, path: str = "") -> list[str]:
    """Where ``a`` and ``b`` (JSON values) differ, floats compared within ``tol``.

    >>> differences({"s": [0.5, "x"]}, {"s": [0.5000001, "y"]})
    ["s[1]: 'x' != 'y'"]
    """
    if isinstance(a, float) and isinstance(b, float):
        return [] if abs(a - b) <= tol else [f"{path}: {a} != {b}"]
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return [d for k in a for d in differences(a[k], b[k], tol, f"{path}.{k}".lstrip("."))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, tol, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def by_id(records) -> dict[str, dict]:
    return {r["id"]: r for r in records}


# --- without a cluster ----------------------------------------------------------------------


def test_plan_gives_each_role_its_own_pool_with_the_configured_resources():
    config = load_config(
        preset="tiny",
        overrides={
            "detector": {"num_gpus": 0.5, "num_cpus": 2},
            "vqa": {"replicas": 3},
            "llm": {"num_gpus": 0.25},
        },
    )
    stages = {s.name: s for s in plan(config, cluster_cpus=16)}
    assert list(stages) == [
        *("caption:0", "caption:1", "alt_text", "ocr", "claims", "detect", "check", "compose")
    ]
    assert (stages["detect"].num_gpus, stages["detect"].num_cpus) == (0.5, 2)
    assert stages["check"].replicas == 3 and stages["caption:0"].replicas == 1
    assert stages["claims"].num_gpus == stages["compose"].num_gpus == 0.25  # two LLM pools
    assert stages["caption:1"].num_cpus == 1.0  # unset: 1 CPU when the cluster has room
    # on 4 CPUs, the 8 actors without num_cpus share what decoding (1), detect (2) and the
    # alt_text stage's tasks (TASK_CPUS) leave
    small = plan(config, cluster_cpus=4)
    shared = {s.num_cpus for s in small if s.model and s.name != "detect"}
    assert shared == {0.112499}  # (4 - 1 - 2 - 0.1) / 8, rounded down
    assert {s.num_cpus for s in small if not s.model} == {TASK_CPUS}
    assert sum(s.num_cpus * s.replicas for s in small) + 1 <= 4
    with pytest.raises(ConfigError, match="has 3 CPUs"):
        plan(config, cluster_cpus=3)
    no_verify = load_config(preset="tiny", overrides={"verify": {"enabled": False}, "ocr": None})
    assert [s.name for s in plan(no_verify)] == [
        "caption:0",
        "caption:1",
        "alt_text",
        "claims",
        "unverified",
        "compose",
    ]


def test_work_items_survive_the_columns_between_stages(photos):
    from factcap.media import View
    from factcap.pipeline.detect import DETECTIONS
    from factcap.roles import TextSpan
    from factcap.schema import Media

    record = Record(id="a", source="a.jpg", image_size=photos[0].size, extra={"alt": "x"})
    record.proposals.append(Proposal("tiny:blip", "a cat"))
    record.claims.append(Claim("object", "There is a cat.", "cat", evidence={"vqa_p_yes": 0.5}))
    record.add_timing("decode", 1.25)
    spans = [TextSpan("STOP", 0.9, (1.0, 2.0, 3.0, 4.0))]
    found = {"cat": [{"score": 0.75, "box": [5.0, 6.0, 7.0, 8.5]}]}
    asset = Record(id="c", source="c.glb", media=Media("asset", [{"index": 0}, {"index": 1}]))
    views = [View(photos[1], 0, {"azimuth": 0.0}), View(photos[2].convert("L"), 1)]
    work = [
        Work(record, [View(photos[0])], spans, "rapidocr", {DETECTIONS: [found]}),
        Work(Record(id="b", source="b.png", status="error")),
        Work(asset, views),
    ]
    seqs, back = read_work(work_table([7, 9, 11], work))
    assert seqs == [7, 9, 11]
    assert back[0].record.to_dict() == record.to_dict()
    assert back[0].image.mode == "RGB" and back[0].image.size == photos[0].size
    assert back[0].image.tobytes() == photos[0].tobytes()
    assert back[0].ocr_spans == spans and back[0].ocr_model == "rapidocr"
    assert back[0].state == {DETECTIONS: [found]}  # one {query: boxes} per image looked at
    assert back[1].image is None and back[1].ocr_spans is None
    assert back[1].record.to_dict() == work[1].record.to_dict()
    # a kind of several views: each view's own size, index and metadata, in RGB
    assert [(v.index, v.meta, v.image.size) for v in back[2].views] == [
        (0, {"azimuth": 0.0}, photos[1].size),
        (1, {}, photos[2].size),
    ]
    assert back[2].views[1].image.mode == "RGB" and back[2].kind.name == "asset"
    assert back[2].record.to_dict() == asset.to_dict()
    slim = work_table([7, 9, 11], work, with_image=False)
    assert slim.column_names == ["seq", "record"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        {"verify": {"enabled": False}, "ocr": None},
        {"detector": None, "ocr": None},  # VQA alone decides
        {"vqa": None},  # the detector alone, with OCR
        {"detector": None, "vqa": None, "ocr": None},  # no checker: claims stay uncertain
        # regions and a question's answer travel as data between stages
        {"regions": {"enabled": True}, "question": {"text": "What is this?"}, "ocr": None},
    ],
    ids=["no-verify", "vqa-only", "detector-only-with-ocr", "no-checkers", "regions-question"],
)
def test_the_stage_chain_is_the_pipeline(overrides):
    """What the actors run, one stage after the other in this process, on one batch: the
    records of ``Pipeline.process`` for every shape of config."""
    config = load_config(preset="tiny", overrides=overrides)
    items = list(open_source([*example_paths()[:3], ODD / BROKEN[0]]))
    expected = [r.to_dict() for r in Pipeline(config).process(items)]
    stages = plan(config)
    table = decode_stage(feed_table(range(len(items)), items), config)
    for n, stage in enumerate(stages):
        table = StageWorker(config, stage.name, last=n == len(stages) - 1)(table)
    assert table.column_names == ["seq", "record"] and table.column("seq").to_pylist() == [
        0,
        1,
        2,
        3,
    ]
    got = [json.loads(text) for text in table.column("record").to_pylist()]
    assert [same_except_timings(r) for r in got] == [same_except_timings(r) for r in expected]
    assert [r["status"] for r in got] == ["ok", "ok", "ok", "error"]


# --- on a local Ray instance ----------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Seven real photos and two broken files."""
    folder = tmp_path_factory.mktemp("inputs")
    for path in example_paths() + [ODD / name for name in REAL + BROKEN]:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def shard(inputs) -> Path:
    """The same nine files as a WebDataset tar shard: the items carry their bytes."""
    path = inputs.parent / "shard-000.tar"
    with tarfile.open(path, "w") as tar:
        for file in sorted(inputs.iterdir()):
            tar.add(file, arcname=file.stem.replace("_", "-") + file.suffix)
    return path


@pytest.fixture(scope="module")
def local_records(shard, tmp_path_factory) -> dict[str, dict]:
    config = load_config(preset="tiny", overrides={"ocr": None})
    pipeline = Pipeline(config).load()
    out = tmp_path_factory.mktemp("local") / "out.jsonl"
    start = time.perf_counter()
    with open_sink(out) as sink:
        run_job(pipeline, open_source([shard]), sink)
    TIMINGS["local executor (models already loaded)"] = time.perf_counter() - start
    return by_id(read_records(out))


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"  # ../conftest.py: no usage reports
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield context
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_local_executors_records(shard, local_records, ray_cluster, tmp_path):
    """Tiny preset without OCR, 7 photos and 2 broken files from a tar shard, written by
    the WebDataset sink: the records of the local executor, the images stored as read."""
    config = load_config(preset="tiny", overrides={"ocr": None})
    pipeline = Pipeline(config)
    out = tmp_path / "out_ray"
    seen = []
    start = time.perf_counter()
    with open_sink(out, format="webdataset") as sink:
        written = run_ray_job(pipeline, open_source([shard]), sink, on_record=seen.append)
    TIMINGS["ray executor (actors start and load models)"] = time.perf_counter() - start
    print("\n" + "\n".join(f"{k}: {v:.1f} s" for k, v in TIMINGS.items()))

    listed = list(read_records(out))
    records = by_id(listed)
    assert written == len(listed) == len(seen) == len(records) == 9  # one record per input
    assert records.keys() == local_records.keys()
    assert pipeline._models is None  # every model was built in an actor, none on the driver
    statuses = {i: r["status"] for i, r in records.items()}
    assert statuses == {i: r["status"] for i, r in local_records.items()}
    assert sorted(statuses.values()).count("error") == 2
    for rid, record in records.items():
        local = local_records[rid]
        assert record["captions"] == local["captions"]
        assert record["proposals"] == local["proposals"]
        # Ray's actors run torch on one thread (OMP_NUM_THREADS=1), this process on two: a
        # forward's float sums may round differently (~3e-7), so scores compare within 1e-5.
        assert not differences(record["claims"], local["claims"])  # verdicts, scores, evidence
        assert not differences(same_except_timings(record), same_except_timings(local))
        if record["status"] == "ok":
            assert record["captions"]["detailed"] and len(record["proposals"]) == 2
            stages = set(record["timings_ms"])
            assert {"decode", "caption:tiny:blip", "claims", "detect", "compose"} <= stages
    assert any("check" in r["timings_ms"] for r in records.values())  # its own pool ran too

    # the sink got each record's own input item: the images are the shard's bytes
    with tarfile.open(shard) as tar:
        originals = {m.name.rsplit(".", 1)[0]: tar.extractfile(m).read() for m in tar}
    with tarfile.open(out / "part-00000.tar") as tar:
        images = {m.name: tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")}
    assert len(images) == 7
    for rid, record in records.items():
        if record["status"] == "ok":
            assert images[f"{rid}.jpg"] == originals[record["source"].rsplit("#", 1)[1]]


# --- the command line -----------------------------------------------------------------------


def caption(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "factcap.cli", "caption", *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
    )


@pytest.mark.slow
def test_cli_ray_run_and_resume_match_the_local_run(inputs, tmp_path):
    """The issue's check: ``factcap caption DIR --executor ray -o out_ray.jsonl`` and the
    local run give the same ids and captions (tiny preset, OCR on); then a resumed Ray run
    completes a cut-off output with each input exactly once."""
    local_out, ray_out = tmp_path / "out_local.jsonl", tmp_path / "out_ray.jsonl"
    start = time.perf_counter()
    proc = caption(str(inputs), "-o", str(local_out))
    TIMINGS["cli local"] = time.perf_counter() - start
    assert proc.returncode == 1, proc.stderr  # two inputs are broken images: exit status 1
    start = time.perf_counter()
    proc = caption(str(inputs), "--executor", "ray", "-o", str(ray_out))
    TIMINGS["cli ray (starts its own Ray instance)"] = time.perf_counter() - start
    assert proc.returncode == 1, proc.stderr
    assert "9 images" in proc.stderr and "7 ok, 2 errors" in proc.stderr
    local, ray = by_id(read_records(local_out)), by_id(read_records(ray_out))
    assert len(ray) == len(ray_out.read_text().splitlines()) == 9
    assert ray.keys() == local.keys()
    for rid in ray:
        assert ray[rid]["captions"] == local[rid]["captions"]
        assert same_except_timings(ray[rid]) == same_except_timings(local[rid])

    # an interrupted Ray job: 4 whole lines and a torn one; --resume does the other 5
    lines = ray_out.read_text().splitlines(keepends=True)
    kept = {json.loads(line)["id"] for line in lines[:4]}
    ray_out.write_text("".join(lines[:4]) + lines[4][:25])
    start = time.perf_counter()
    proc = caption(str(inputs), "--executor", "ray", "-o", str(ray_out), "--resume")
    TIMINGS["cli ray --resume (5 of 9)"] = time.perf_counter() - start
    assert "5 images" in proc.stderr and "4 skipped (already in the output)" in proc.stderr
    resumed = [json.loads(line) for line in ray_out.read_text().splitlines()]
    redone_failed = any(r["status"] == "error" for r in resumed if r["id"] not in kept)
    assert proc.returncode == (1 if redone_failed else 0), proc.stderr
    assert sorted(r["id"] for r in resumed) == sorted(local)  # each input exactly once
    for r in resumed:  # other batches than the local run's: the checkers' scores may move
        assert r["status"] == local[r["id"]]["status"]
        assert r["proposals"] == local[r["id"]]["proposals"]
        assert bool(r["captions"]) == bool(local[r["id"]]["captions"])
    print("\n" + "\n".join(f"{k}: {v:.1f} s" for k, v in TIMINGS.items()))


def test_ray_address_needs_the_ray_executor(tmp_path, capsys):
    from factcap.cli import main

    examples = str(ROOT / "src/factcap/examples")
    code = main(["caption", examples, "-o", str(tmp_path / "o.jsonl"), "--ray-address", "auto"])
    assert code == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err


# --- Ray's usage reporting -----------------------------------------------------------------


@pytest.mark.parametrize("address", [None, "ray://head:10001"])
def test_factcaps_ray_start_turns_usage_reporting_off(monkeypatch, address):
    """factcap starts (or joins) Ray with its usage reporting off, Ray's documented switch
    RAY_USAGE_STATS_ENABLED=0 set before ray.init (which a local Ray 2.60 also sets itself, but
    not a nightly wheel); a user's own choice stands."""
    import ray

    from factcap.engine import ray_executor

    seen: list[str | None] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(
        ray, "init", lambda **kwargs: seen.append(os.environ.get("RAY_USAGE_STATS_ENABLED"))
    )
    monkeypatch.delenv("RAY_USAGE_STATS_ENABLED")  # ../conftest.py sets it for the suite
    assert ray_executor._init_ray(address) is True
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")
    assert ray_executor._init_ray(address) is True
    assert seen == ["0", "1"]
