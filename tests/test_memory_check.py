"""Memory (issue 33): ``dtype: auto`` per CPU, the memory a job needs counted before anything
loads, the refusal of a job that would not fit (and its override), and quantisation refused
where there is no CUDA."""

from __future__ import annotations

import json
import struct

import pytest

from factcap.backends import footprint, hardware
from factcap.cli import main
from factcap.config import load_config
from factcap.engine.job import CaptionJob, JobSpec
from factcap.errors import ConfigError
from factcap.examples import example_paths

GB = 2**30


def bf16_cpu() -> set[str]:
    return {"avx2", "avx512f", "avx512_bf16"}


def older_cpu() -> set[str]:
    return {"avx2", "avx512f"}


# --- dtype: auto ------------------------------------------------------------------------------


def test_auto_is_bf16_on_a_cpu_with_native_bf16_fp32_on_others(monkeypatch, caplog):
    torch = pytest.importorskip("torch")
    from factcap.backends import hf_common

    monkeypatch.delenv("FACTCAP_CPU_BF16", raising=False)
    cpu = torch.device("cpu")
    assert hf_common.resolve_dtype("auto", cpu, read_flags=bf16_cpu) == torch.bfloat16
    assert hf_common.resolve_dtype(None, cpu, read_flags=older_cpu) == torch.float32
    assert hf_common.resolve_dtype("auto", torch.device("cuda"), bf16_cpu) == torch.float16
    assert hf_common.resolve_dtype("auto", torch.device("mps"), bf16_cpu) == torch.float32
    assert hf_common.resolve_dtype("float32", cpu, read_flags=bf16_cpu) == torch.float32
    hf_common._say_auto_bf16.cache_clear()
    caplog.clear()
    with caplog.at_level("WARNING"):
        for _ in range(3):
            hf_common.resolve_dtype("auto", cpu, read_flags=bf16_cpu)
    said = [r.getMessage() for r in caplog.records if "auto is bfloat16" in r.getMessage()]
    assert len(said) == 1 and "avx512_bf16" in said[0]  # once, with the reason


def test_the_environment_overrides_the_cpu_flags(monkeypatch):
    monkeypatch.setenv("FACTCAP_CPU_BF16", "0")
    assert hardware.auto_dtype("cpu", bf16_cpu) == "float32"
    monkeypatch.setenv("FACTCAP_CPU_BF16", "1")
    assert hardware.auto_dtype("cpu", older_cpu) == "bfloat16"


def test_tiny_and_shapes_pin_float32_so_auto_never_moves_their_figures():
    for preset in ("tiny", "shapes"):
        assert load_config(preset=preset).dtype == "float32"


def test_a_cast_reads_the_checkpoint_instead_of_mapping_it(tmp_path):
    """The switch that keeps a float32 checkpoint from staying mapped while it loads as
    bfloat16 must be in place in this transformers (a new version may move its loader)."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    from transformers import modeling_utils

    from factcap.backends.hf_common import reading_not_mapping

    save_file({"w": torch.arange(6, dtype=torch.float32)}, tmp_path / "model.safetensors")
    with reading_not_mapping() as installed:
        handle = modeling_utils.safe_open(
            str(tmp_path / "model.safetensors"), framework="pt", device="cpu", backend="mmap"
        )
        assert handle.get_slice("w")[:].tolist() == [0, 1, 2, 3, 4, 5]
    assert installed
    assert footprint.stored_dtypes(tmp_path) == {"float32"}


# --- counting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["captioner_insertion", "llm", "detector", "vqa", "clip"])
def test_meta_device_counts_equal_the_checkpoints_and_the_loaded_models(name):
    pytest.importorskip("transformers")
    import transformers

    from factcap.backends.registry import bundled_dir

    folder = bundled_dir(f"shapes/{name}")
    config = transformers.AutoConfig.from_pretrained(folder)
    model = getattr(transformers, config.architectures[0]).from_pretrained(folder)
    loaded = sum(p.numel() for p in model.parameters())
    assert footprint.meta_parameters(folder) == loaded
    assert footprint.model_weights(f"bundled:shapes/{name}").parameters == loaded


def _huge_checkpoint(folder, parameters: int, pieces: int = 10):
    """A checkpoint folder whose safetensors header declares ``parameters`` float32 weights
    in ``pieces`` tensors (no data behind them: only the header is read before loading)."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "blip"}))
    shape = [parameters // pieces]
    tensors = {
        f"w{i}": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]} for i in range(pieces)
    }
    header = json.dumps(tensors)
    data = header.encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(data)) + data)
    return folder


def test_the_need_counts_each_mode_from_the_headers(tmp_path):
    fake = _huge_checkpoint(tmp_path / "big", 1_000_000_000)
    config = load_config(preset="tiny", overrides={"llm": {"model": f"hf:{fake}"}})
    slots = footprint.job_slots(config, ["captioner:0", "llm", "vqa"])
    llm = next(s for s in slots if s.name == "llm")
    assert llm.weights.parameters == 1_000_000_000 and llm.bytes("float32") == 4 * 10**9
    normal = footprint.need(slots, "normal", "float32")
    low = footprint.need(slots, "low", "float32")
    half = footprint.need(slots, "normal", "bfloat16")
    assert normal.ram > 4 * 10**9 and low.ram < normal.ram and half.ram < normal.ram
    assert normal.vram == 0
    # loading it in bf16 casts each tensor from float32: the largest's copy counts
    assert llm.weights.largest == 100_000_000
    assert footprint.need(slots, "low", "bfloat16").ram >= 2 * 10**9 + 4 * 10**8


# --- refusing what does not fit ---------------------------------------------------------------


def test_a_job_that_would_not_fit_names_the_mode_that_does(tmp_path):
    fake = _huge_checkpoint(tmp_path / "big", 3_000_000_000)  # 12 GB in float32
    config = load_config(preset="tiny", overrides={"llm": {"model": f"hf:{fake}"}})
    with pytest.raises(ConfigError) as err:
        footprint.check_fits(config, ["captioner:0", "llm"], preset="tiny", ram=10 * GB)
    message = str(err.value)
    assert "\n" not in message and "10.0 GB is available" in message
    assert "with dtype: bfloat16" in message and "--no-memory-check" in message
    footprint.check_fits(config, ["captioner:0", "llm"], ram=40 * GB)  # fits: no error


def test_tiny_is_never_refused_even_with_no_memory_free():
    config = load_config(preset="tiny")
    footprint.check_fits(config, list(config.model_slots()), ram=0, vram=0)


def test_caption_refuses_at_once_and_the_override_goes_on_to_load(tmp_path, capsys):
    fake = _huge_checkpoint(tmp_path / "big", 10**12)  # 4 TB: no machine fits it
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"preset: tiny\nocr: null\ncaptioners: [{{model: 'hf:{fake}'}}]\n")
    out = tmp_path / "o.jsonl"
    photo = str(example_paths()[0])
    assert main(["caption", photo, "-o", str(out), "--config", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "this job needs about" in err and "smaller preset" in err and not out.exists()
    code = main(["caption", photo, "-o", str(out), "--config", str(cfg), "--quiet", "--no-memory-check"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "this job needs about" not in err  # got to loading, which fails


def test_models_check_says_vfc_does_not_fit_and_which_mode_does(capsys):
    from factcap.cli.models import print_memory

    config = load_config(preset="vfc", overrides={"device": "cpu"})
    assert print_memory(config, ram=16 * GB, vram=0) is False
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "no mode fits" in out
    assert print_memory(config, ram=24 * GB, vram=0) is False  # normal does not, low does
    out = capsys.readouterr().out
    low = [line for line in out.splitlines() if line.strip().startswith("low ")]
    assert any("bfloat16" in line and line.endswith(" fits") for line in low)
    assert "it fits with --memory low" in out


# --- quantisation -----------------------------------------------------------------------------


def test_quantize_without_cuda_is_refused_in_one_line_before_loading(tmp_path):
    config = load_config(
        preset="tiny", overrides={"ocr": None, "llm": {"options": {"quantize": "8bit"}}}
    )
    spec = JobSpec(inputs=[str(example_paths()[0])], output=tmp_path / "o.jsonl")
    with pytest.raises(ConfigError, match="CUDA") as err:
        CaptionJob(spec, config)
    assert "\n" not in str(err.value) and "llm: quantize: 8bit" in str(err.value)
    wrong = load_config(preset="tiny", overrides={"llm": {"options": {"quantize": "int4"}}})
    with pytest.raises(ConfigError, match="8bit or 4bit"):
        CaptionJob(spec, wrong)
    detector = load_config(preset="tiny", overrides={"detector": {"options": {"quantize": "4bit"}}})
    with pytest.raises(ConfigError, match="LLMs and chat VLMs"):
        CaptionJob(spec, detector)


def test_a_backend_refuses_quantize_on_a_cpu_before_reading_weights(tmp_path):
    pytest.importorskip("torch")
    from factcap.backends.hf_llm import CausalLM

    # the folder does not exist: a load would fail with ModelNotAvailable, not this
    with pytest.raises(ConfigError, match="no CUDA GPU|not a CUDA GPU"):
        CausalLM(str(tmp_path / "nothing"), device="cpu", quantize="4bit")


@pytest.mark.gpu
@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantized_llm_loads_and_chats_on_a_gpu(bits):
    pytest.importorskip("bitsandbytes")
    from factcap.backends import registry

    llm = registry.build("llm", "tiny:llm", device="cuda", quantize=bits)
    kinds = {type(m).__name__ for m in llm.model.modules()}
    assert kinds & {"Linear8bitLt", "Linear4bit"}
    assert len(llm.chat([[{"role": "user", "content": "Hi."}]], max_new_tokens=4)) == 1


# --- every role in bfloat16 on a CPU ----------------------------------------------------------


@pytest.mark.slow
def test_every_tiny_role_loads_and_runs_in_bfloat16_on_a_cpu(tmp_path):
    import torch

    from factcap.pipeline.models import Models

    config = load_config(preset="tiny", overrides={"dtype": "bfloat16", "ocr": None})
    models = Models(config, slots=[s for s in config.model_slots() if s not in ("ocr", "t2i")])
    #: roles that keep float32 on a CPU, and why: none (every tiny family ran in bf16)
    kept_float32: dict[str, str] = {}
    for slot, bound in models.load().items():
        dtypes = {p.dtype for p in bound.backend.model.parameters() if p.is_floating_point()}
        expected = torch.float32 if slot in kept_float32 else torch.bfloat16
        assert dtypes == {expected}, slot
    out = tmp_path / "o.jsonl"
    cfg = tmp_path / "bf16.yaml"
    cfg.write_text("preset: tiny\nocr: null\ndtype: bfloat16\n")
    photo = str(example_paths()[0])
    assert main(["caption", photo, "-o", str(out), "--config", str(cfg), "--quiet"]) == 0
    assert json.loads(out.read_text())["status"] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("family", "role"),
    [
        ("blip", "captioner"),
        ("chat_vlm", "captioner"),
        ("llm", "llm"),
        ("grounding_dino", "detector"),
        ("blip_vqa", "vqa"),
    ],  # fmt: skip
)
def test_meta_device_counts_equal_the_real_tiny_models(family, role):
    from factcap.backends import registry, tiny

    model = registry.build(role, f"tiny:{family}", device="cpu", dtype="float32").model
    loaded = sum(p.numel() for p in model.parameters())
    assert footprint.meta_parameters(tiny.ensure(family)) == loaded
    assert footprint.model_weights(f"tiny:{family}").parameters == loaded
