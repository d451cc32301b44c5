"""Real-size random-weight checkpoints (factcap.backends.real_size, ``models make-random``,
benchmarks/gpu_check.sh).

The stored configs are checked without allocating: every architecture of both presets is
built on the meta device and its parameter count compared with the published size. The
small preset's architectures are built for real at one layer per stack (the real widths) and
each is loaded through the registry and called once.
"""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from factcap.backends import real_size
from factcap.backends.real_size import common
from factcap.cli import main
from factcap.config import load_config, preset_dict
from factcap.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

#: Published parameter counts (model cards / safetensors). BLIP's checkpoints store the text
#: decoder's output layer apart from the tied word embeddings, so their published figure
#: counts those 30,524 x 768 weights twice; ``parameters()`` counts them once.
PUBLISHED = {
    "blip-image-captioning-large": 470e6 - 30524 * 768,
    "blip-vqa-base": 385e6 - 30524 * 768,
    "smolvlm-256m-instruct": 256e6,
    "llava-1.5-7b-hf": 7.06e9,
    "kosmos-2-patch14-224": 1.66e9,
    "qwen2.5-1.5b-instruct": 1.54e9,
    "qwen2.5-7b-instruct": 7.62e9,
    "grounding-dino-tiny": 172e6,
    "grounding-dino-base": 233e6,
    "clip-vit-base-patch32": 151e6,
    "clip-vit-large-patch14": 428e6,
    "all-minilm-l6-v2": 22.7e6,
}
ALL_ARCHS = sorted({a for slots in real_size.PRESETS.values() for a in slots.values()})
#: blip-vqa-capfilt-large: no published count we are sure of; its stacks are checked instead.
UNPUBLISHED = {"blip-vqa-capfilt-large"}


def test_presets_name_the_shipped_presets_models():
    for preset, slots in real_size.PRESETS.items():
        data = preset_dict(preset)
        for slot_name, arch in slots.items():
            role, _, index = slot_name.partition(":")
            key = "captioners" if role == "captioner" else role
            entry = data[key][int(index)] if index else data[key]
            assert entry["model"] == f"hf:{real_size.hub_id(arch)}", (preset, slot_name)


@pytest.mark.parametrize("arch", sorted(set(ALL_ARCHS) - UNPUBLISHED))
def test_full_size_parameters_match_the_published_size(arch):
    counted = real_size.count_parameters(arch)  # on the meta device: nothing allocated
    assert abs(counted - PUBLISHED[arch]) / PUBLISHED[arch] < 0.03, (arch, counted)
    spec = common.load_spec(arch)
    if "published_parameters" in spec:
        assert abs(counted - spec["published_parameters"]) / counted < 0.01


def test_blip_vqa_large_is_the_base_model_with_a_vit_large():
    counts, reduced = real_size.layer_plan("blip-vqa-capfilt-large")
    assert counts == {"vision_config": 24, "text_config": 12} and not reduced
    base = real_size.count_parameters("blip-vqa-base")
    # ViT-L/16 (~304 M) instead of ViT-B/16 (~86 M), cross-attention from 1024 wide
    assert 200e6 < real_size.count_parameters("blip-vqa-capfilt-large") - base < 240e6


def test_layers_cut_every_stack_and_say_so():
    counts, reduced = real_size.layer_plan("grounding-dino-tiny", 1)
    assert reduced
    assert counts["backbone_config.depths"] == [1, 1, 1, 1]
    assert counts["text_config.num_hidden_layers"] == counts["encoder_layers"] == 1
    assert counts["decoder_layers"] == 2  # min_layers: its box heads are tied across layers
    assert real_size.layer_plan("llava-1.5-7b-hf", 4)[0] == {
        "text_config.num_hidden_layers": 4,
        "vision_config.num_hidden_layers": 4,
    }
    assert real_size.layer_plan("qwen2.5-7b-instruct", 100) == ({"num_hidden_layers": 28}, False)
    assert real_size.layer_plan("blip-vqa-base", 2) == (
        {"vision_config": 2, "text_config": 2},
        True,
    )
    # fewer layers, same widths: 7B at 4 layers keeps its two 152k x 3584 tables (1.09 B)
    # and 4 of its 28 layers of 233 M each
    assert 1.95e9 < real_size.count_parameters("qwen2.5-7b-instruct", 4) < 2.1e9
    with pytest.raises(ConfigError, match="at least 1"):
        real_size.layer_plan("qwen2.5-7b-instruct", 0)


def test_a_build_that_would_not_fit_in_memory_is_refused_before_it_starts(tmp_path):
    rows = real_size.plan("vfc", roles=["llm"])
    assert rows["llm"]["build_bytes"] > 7.6e9 * 4
    rows["llm"]["build_bytes"] = common.available_memory() * 2
    with pytest.raises(ConfigError, match=r"--layers N"):
        real_size.check_fits(rows, tmp_path / "new", layers=None)
    assert not (tmp_path / "new").exists()


def test_unknown_roles_and_presets_are_said_plainly():
    with pytest.raises(ConfigError, match="choose from"):
        real_size.preset_slots("small", ["painter"])
    with pytest.raises(ConfigError, match="no real-size builds"):
        real_size.preset_slots("tiny")
    assert set(real_size.preset_slots("vfc", ["captioner"])) == {"captioner:0", "captioner:1"}


def _call(role: str, backend, photo):
    """One small call of each role's protocol."""
    calls = {
        "captioner": lambda: backend.caption([photo]),
        "llm": lambda: backend.chat([[{"role": "user", "content": "Name two fruits."}]], 3),
        "detector": lambda: backend.detect([photo], [["a cat", "a red car"]]),
        "vqa": lambda: backend.yes_probability([photo, photo], ["is it red?", "a cat?"]),
        "embedder": lambda: backend.embed_texts(["a cat on a sofa"]),
        "text_embedder": lambda: backend.embed_texts(["a cat on a sofa"]),
    }
    return calls[role]()


SMALL_OPTIONS = {"captioner": {"max_new_tokens": 3}, "detector": {"box_threshold": 0.3}}


@pytest.mark.slow
@pytest.mark.parametrize("slot_name", sorted(real_size.PRESETS["small"]))
def test_small_preset_arch_builds_at_one_layer_and_runs_through_the_registry(
    slot_name, tmp_path, photos
):
    from factcap.backends import registry

    arch = real_size.PRESETS["small"][slot_name]
    built = real_size.build_arch(arch, tmp_path / "m", layers=1)
    assert built["reduced"] and built["arch"] == arch
    assert built["parameters"] == real_size.count_parameters(arch, 1)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    role = slot_name.partition(":")[0]
    backend = registry.build(role, f"hf:{tmp_path / 'm'}", **SMALL_OPTIONS.get(role, {}))
    # the real vocabulary size and widths, one layer
    model_config = backend.model.config
    text = getattr(model_config, "text_config", model_config)
    spec = common.load_spec(arch)
    published = spec.get("config", spec)
    published_text = published.get("text_config", published)
    assert text.vocab_size == published_text["vocab_size"]
    tokenizer = getattr(backend, "tokenizer", None) or backend.processor.tokenizer
    assert len(tokenizer) <= text.vocab_size
    assert len(tokenizer) > 0.95 * text.vocab_size  # filled to the real size
    assert config["model_type"] == model_config.model_type
    result = _call(role, backend, photos[0])
    assert len(result) in (1, 2)


@pytest.mark.slow
def test_build_preset_writes_a_config_that_points_at_the_builds(tmp_path):
    path = real_size.build_preset("small", tmp_path / "real", layers=1, roles=["text_embedder"])
    config = load_config(path=path)
    assert config.text_embedder.model == f"hf:{tmp_path / 'real' / 'text_embedder'}"
    assert config.llm.model == "hf:Qwen/Qwen2.5-1.5B-Instruct"  # not built: as published
    assert config.t2i is None  # evaluation only: left out
    assert config.llm.max_new_tokens == 384  # the preset's options are kept
    manifest = real_size.read_manifest(tmp_path / "real")
    assert manifest["layers"] == 1
    assert manifest["slots"]["text_embedder"]["reduced"] is True
    side = json.loads(
        (tmp_path / "real" / "text_embedder" / "sentence_bert_config.json").read_text()
    )
    assert side["max_seq_length"] == 256


@pytest.mark.slow
def test_make_random_reports_reduced_layers_and_refuses_an_existing_out(tmp_path, capsys):
    out = tmp_path / "real"
    args = ["models", "make-random", "--preset", "small", "--out", str(out), "--layers", "1"]
    assert main([*args, "--roles", "text_embedder"]) == 0
    printed = capsys.readouterr()
    assert "REDUCED (layers 1)" in printed.out
    assert "all-minilm-l6-v2" in printed.out
    assert f"--config {out / 'preset.yaml'}" in printed.out
    assert "t2i" in printed.out and "not built" in printed.out
    assert "cut to at most 1 layers" in printed.err
    before = (out / "text_embedder" / "model.safetensors").stat().st_mtime_ns

    assert main([*args, "--roles", "text_embedder"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (out / "text_embedder" / "model.safetensors").stat().st_mtime_ns == before

    assert main([*args, "--roles", "text_embedder", "--overwrite"]) == 0
    assert yaml.safe_load((out / "preset.yaml").read_text())["text_embedder"]["model"].startswith(
        "hf:"
    )


def test_make_random_refuses_what_it_did_not_make(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    args = ["models", "make-random", "--preset", "small", "--out", str(tmp_path), "--overwrite"]
    assert main(args) == 2
    assert "refusing to delete" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    assert (
        main(
            [
                "models",
                "make-random",
                "--preset",
                "small",
                "--out",
                str(tmp_path / "n"),
                "--layers",
                "0",
            ]
        )
        == 2
    )
    assert main(["models", "make-random", "--preset", "shapes", "--out", str(tmp_path / "n")]) == 2
    assert not (tmp_path / "n").exists()


@pytest.mark.slow  # the benchmark script, in a subprocess
def test_gpu_check_refuses_clearly_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert "no CUDA device" in done.stderr
    assert done.stdout == ""


@pytest.mark.slow
def test_docstring_examples_run():
    from factcap.backends.real_size import chat, tokens

    for module in (real_size, common, tokens, chat):
        assert doctest.testmod(module).failed == 0, module.__name__
