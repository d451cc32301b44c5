"""`factcap bench shapes train|run` end to end, with every model trained at smoke size."""

from __future__ import annotations

import json
import math

import pytest

from factcap.backends import registry
from factcap.bench.shapes import run as bench_run
from factcap.bench.shapes.scoring import score_captions
from factcap.bench.shapes.train import MODELS, STAMP, train_all
from factcap.bench.shapes.world import scenes
from factcap.cli import main
from factcap.config import load_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_models(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes-models")
    report = train_all(out, size="smoke", seed=0, log=lambda message: None)
    return out, report


def test_train_writes_checkpoints_the_registry_loads_and_reuses_them(smoke_models):
    out, report = smoke_models
    assert report["trained"] == list(MODELS) and report["reused"] == []
    for name, spec in MODELS.items():
        stamp = json.loads((out / name / STAMP).read_text())
        assert (stamp["role"], stamp["size"], stamp["seed"]) == (spec.role, "smoke", 0)
        backend = registry.build(spec.role, f"hf:{out / name}", device="cpu")
        assert backend.name == f"hf:{out / name}"
    again = train_all(out, size="smoke", seed=0, log=lambda message: None)
    assert again["trained"] == [] and again["reused"] == list(MODELS)
    config = load_config(path=out / "factcap.yaml")
    assert [c.model for c in config.captioners] == [
        f"hf:{out / 'captioner_insertion'}",
        f"hf:{out / 'captioner_colour'}",
    ]
    assert config.llm.model == f"hf:{out / 'llm'}" and config.ocr is None


def test_benchmark_scores_every_source_against_the_generator_truth(smoke_models, tmp_path):
    out, _ = smoke_models
    result = bench_run.run_benchmark(out, n=5, seed=2, out=tmp_path / "run", log=lambda m: None)
    assert (result["n"], result["seed"]) == (5, 2)
    assert set(result["sources"]) == {
        "proposal:captioner_insertion",
        "proposal:captioner_colour",
        "final",
        "final_noexpert",
        "final_nocorrections",
        "final_noverify",
    }
    assert set(result["model_inputs_per_image"]) >= {"llm", "detector", "vqa"}
    assert all(v["n"] > 0 for kinds in result["claim_precision"].values() for v in kinds.values())
    for values in result["sources"].values():
        assert set(values) == set(bench_run.METRIC_KEYS)
        assert 0.0 <= values["self_retrieval_r1"] <= 1.0 and math.isfinite(values["clip_score"])
    assert set(result["targets"]) >= {"hallucination_ratio", "recall_ratio", "met"}

    held_out = scenes(5, seed=2, split="test")
    truth = [json.loads(line) for line in (tmp_path / "run" / "truth.jsonl").open()]
    assert [t["id"] for t in truth] == [s.id for s in held_out]
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").open()]
    unchecked = [json.loads(line) for line in (tmp_path / "run" / "results_noverify.jsonl").open()]
    assert [r["source"].rsplit("/", 1)[-1] for r in records] == [f"{s.id}.png" for s in held_out]
    final = [r["captions"].get("detailed", "") for r in records]
    expected = score_captions(held_out, final)
    for key, value in expected.items():
        if key in result["sources"]["final"]:
            got = result["sources"]["final"][key]
            assert (math.isnan(value) and math.isnan(got)) or got == round(value, 4)
    insertion = [
        next(p["text"] for p in r["proposals"] if p["model"].endswith("captioner_insertion"))
        for r in records
    ]
    got = result["sources"]["proposal:captioner_insertion"]["recall"]
    assert got == round(score_captions(held_out, insertion)["recall"], 4)
    checked = {c["verdict"] for r in unchecked for c in r["claims"]}
    assert checked <= {"uncertain"}
    assert all(
        "verification switched off: claims were not checked" in r["notes"] for r in unchecked
    )


def test_cli_prints_the_json_line_last(smoke_models, tmp_path, capsys):
    out, _ = smoke_models
    assert (
        main(
            [
                "bench",
                "shapes",
                "run",
                "--models",
                str(out),
                "--n",
                "3",
                "--seed",
                "1",
                "--out",
                str(tmp_path / "cli"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert (result["n"], result["seed"]) == (3, 1) and "final_noverify" in result["sources"]
    assert lines[-2].startswith("final/best proposer hallucination")


def test_cli_names_missing_models(tmp_path, capsys):
    assert main(["bench", "shapes", "run", "--models", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "captioner_insertion" in err and "factcap bench shapes train" in err


def test_training_gives_the_same_weights_whatever_the_string_hash_seed(tmp_path):
    """Seeded means reproducible: nothing the trainers draw may depend on set order."""
    import os
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file

    def train(hash_seed: str) -> dict[str, dict[str, torch.Tensor]]:
        out = tmp_path / f"hash{hash_seed}"
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, HF_HUB_OFFLINE="1")
        command = [sys.executable, "-m", "factcap", "bench", "shapes", "train", "--size", "smoke"]
        subprocess.run([*command, "--out", str(out)], env=env, check=True, capture_output=True)
        return {p.parent.name: load_file(p) for p in sorted(out.glob("*/model.safetensors"))}

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        # CPU kernels may sum in another order (last digits); other data moves weights far more
        return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)

    first, second = train("1"), train("2")
    assert sorted(first) == sorted(MODELS)
    assert [name for name in first if not same(first[name], second[name])] == []
