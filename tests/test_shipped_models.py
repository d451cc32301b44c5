"""The shapes-world models shipped in the package (``--preset shapes``): intact, loadable by
the same config the benchmark uses, and still meeting the benchmark's targets."""

from __future__ import annotations

import hashlib
import json

import pytest

from factcap.backends.registry import bundled_dir
from factcap.config import load_config

SHAPES = bundled_dir("shapes/llm").parent


def test_every_shipped_file_matches_the_manifest():
    manifest = json.loads((SHAPES / "MANIFEST.json").read_text())
    listed = manifest["files"]
    on_disk = {
        str(p.relative_to(SHAPES)): p
        for p in sorted(SHAPES.rglob("*"))
        if p.is_file() and p.name != "MANIFEST.json" and "__pycache__" not in p.parts
    }
    assert sorted(listed) == sorted(on_disk)
    for name, path in on_disk.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == listed[name], name
    assert manifest["command"].startswith("factcap bench shapes train")
    size = sum(p.stat().st_size for p in on_disk.values())
    assert size < 12e6, f"the shipped models grew to {size / 1e6:.1f} MB"


def test_the_shapes_preset_is_the_benchmarks_pipeline():
    from factcap.bench.shapes.run import pipeline_config

    preset = load_config(preset="shapes")
    bench = load_config(overrides=pipeline_config(SHAPES), default_preset=None)
    resolved = {k: str(bundled_dir(v.model.removeprefix("bundled:"))) for k, v in
                preset.model_slots().items()}  # fmt: skip
    assert resolved == {k: v.model.removeprefix("hf:") for k, v in bench.model_slots().items()}
    for slot, rc in preset.model_slots().items():
        assert rc.options == bench.model_slots()[slot].options, slot
    assert preset.llm.max_new_tokens == bench.llm.max_new_tokens
    assert (preset.batch_size, preset.styles, preset.ocr) == (bench.batch_size, bench.styles, None)
    assert (preset.verify, preset.expert) == (bench.verify, bench.expert)  # the world's checks


@pytest.mark.slow
def test_the_shipped_models_meet_the_benchmark_targets(tmp_path):
    from factcap.bench.shapes.run import run_benchmark

    result = run_benchmark(SHAPES, n=100, seed=0, out=tmp_path / "run", log=lambda _: None)
    targets = result["targets"]
    assert result["errors"] == 0
    assert targets["met"], targets
    final = result["sources"]["final"]
    best = min(v["hallucination_rate"] for k, v in result["sources"].items() if "proposal" in k)
    assert final["hallucination_rate"] < best
