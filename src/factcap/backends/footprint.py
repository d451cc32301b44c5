"""The memory a config's models need, counted before anything loads: each model's parameters
from its checkpoint's safetensors headers (a local folder, the Hugging Face cache, a tiny or
bundled checkpoint), else built on the meta device from its ``config.json``, else (a hub id
not on disk) from the published configuration shipped in ``real_size/configs``; nothing is
downloaded and no weight is read.

The need of a job is then, per device: the weights at the dtype they load in (all models in
``memory: normal``, the largest in ``memory: low``), plus what a job holds besides the
weights (:data:`RUNTIME_BYTES`) and its working memory (:data:`WORKING_SHARE` of the
largest model's weights, at least :data:`WORKING_MIN_BYTES`). Those constants are
calibrated on ``benchmarks/memory_real_size.py``'s measured peaks, in
README: "Memory: what a job needs, and how to make it fit".

>>> dtype_bytes("bfloat16"), dtype_bytes("float32"), dtype_bytes("4bit")
(2, 4, 0.5)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcap.backends import hardware
from factcap.errors import ConfigError, FactcapError

GB = 2**30
#: Bytes of each loaded dtype (and of the quantised weights, as bitsandbytes stores them).
DTYPE_BYTES: dict[str, float] = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "8bit": 1,
    "4bit": 0.5,
}
_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
#: safetensors' dtype names -> (torch's name, bytes per element).
SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}
FLOATING = {"float64", "float32", "float16", "bfloat16"}
#: What a job holds besides the weights and its working memory: Python, torch,
#: transformers, the pipeline (measured: the tiny preset's whole job peaks at 0.54 GB).
RUNTIME_BYTES = int(0.5 * GB)
#: A job's working memory (activations, generation caches, image tiles, tokenizers) as a
#: share of its largest model's weights, and at least this much. With RUNTIME_BYTES,
#: calibrated on the small preset at full size on a CPU (benchmarks/memory_real_size.py, 2
#: photos): measured peak RSS 7.15 GB normal bf16 (computed 7.1), 4.55 GB low bf16 (4.5);
#: float32 is computed high, 13.5 GB for 12.07 normal and 8.6 for 6.76 low (its weights
#: stay mapped from the checkpoint, and pages never read are not resident).
WORKING_SHARE = 0.4
WORKING_MIN_BYTES = int(0.3 * GB)
#: rapidocr's ONNX models and runtime (measured: about 0.3 GB of RSS).
RAPIDOCR_BYTES = int(0.3 * GB)
#: A ``tiny:`` family not built yet: every tiny family holds well under 10 M parameters.
TINY_PARAMETERS = 10_000_000
#: A job whose weights take less than this is never refused: tiny and shapes, on any machine.
NEVER_REFUSED_BYTES = 1 * GB


def dtype_bytes(dtype: str) -> float:
    """Bytes per parameter of ``dtype`` (``float32``, ``bf16``, ``8bit`` ...)."""
    name = _ALIASES.get(dtype, dtype)
    if name not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {sorted(DTYPE_BYTES)}")
    return DTYPE_BYTES[name]


# --- parameter counts ---------------------------------------------------------------------


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: tensor name -> {dtype, shape, data_offsets}."""
    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        if size > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header of {size} bytes)")
        header = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    return header


def largest_tensor(folder: Path) -> int:
    """Elements of the largest tensor in a checkpoint folder's safetensors files."""
    largest = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        for entry in read_header(path).values():
            numel = 1
            for dim in entry["shape"]:
                numel *= dim
            largest = max(largest, numel)
    return largest


def stored_tensors(folder: Path) -> dict[str, int]:
    """Elements per stored dtype (``float32``, ``bfloat16``, ``int64`` ...) over the
    safetensors files of a checkpoint folder; empty when it has none."""
    counts: dict[str, int] = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        for entry in read_header(path).values():
            name, _ = SAFETENSORS_DTYPES.get(entry["dtype"], (entry["dtype"].lower(), 4))
            numel = 1
            for dim in entry["shape"]:
                numel *= dim
            counts[name] = counts.get(name, 0) + numel
    return counts


def stored_dtypes(folder: Path) -> set[str]:
    """The floating dtypes a checkpoint folder's weights are stored in."""
    return {name for name in stored_tensors(folder) if name in FLOATING}


def checkpoint_folder(location: str) -> Path | None:
    """The local folder of ``location`` (a directory, or a hub id's snapshot in the Hugging
    Face cache), or None when it is not on disk. Never downloads."""
    local = Path(location).expanduser()
    if local.is_dir():
        return local
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(location, "config.json")
    except Exception:  # noqa: BLE001 - not a hub id either
        return None
    return Path(found).parent if isinstance(found, str) else None


def meta_parameters(folder: Path) -> int:
    """Parameters of the checkpoint in ``folder`` built on the meta device from its
    ``config.json`` (the class its ``architectures`` names): nothing allocated or read."""
    return meta_counts(folder)[0]


def meta_counts(folder: Path) -> tuple[int, int]:
    """(parameters, elements of the largest one) of the checkpoint in ``folder``, built on
    the meta device from its ``config.json``."""
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    names = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, names[0], None) if names else None
    if model_class is None:
        model_class = transformers.AutoModel
        build = model_class.from_config
    else:
        build = model_class
    with torch.device("meta"):
        model = build(config)
    sizes = [p.numel() for p in model.parameters()]
    return sum(sizes), max(sizes, default=0)


def shipped_arch(hub_id: str) -> str | None:
    """The shipped published configuration (``real_size/configs``) of ``hub_id``, if any."""
    from factcap.backends import real_size

    for arch in real_size.ARCHITECTURES:
        if real_size.hub_id(arch) == hub_id:
            return arch
    return None


@dataclass
class Weights:
    """One model's weights: how many parameters (floating / other bytes), the elements of
    the largest tensor (held in float32 while it is cast on loading), and from where."""

    parameters: int
    other_bytes: int = 0
    source: str = ""
    remote: bool = False
    largest: int = 0

    def bytes(self, dtype: str) -> int:
        """Bytes of these weights loaded in ``dtype``."""
        return int(self.parameters * dtype_bytes(dtype)) + self.other_bytes


def _from_folder(folder: Path) -> Weights:
    stored = stored_tensors(folder)
    if stored:
        sizes = dict(SAFETENSORS_DTYPES.values())
        floating = sum(n for name, n in stored.items() if name in FLOATING)
        other = sum(n * sizes.get(name, 4) for name, n in stored.items() if name not in FLOATING)
        source = f"safetensors headers in {folder}"
        return Weights(floating, other, source, largest=largest_tensor(folder))
    total, largest = meta_counts(folder)
    return Weights(total, 0, f"meta-device build of {folder}/config.json", largest=largest)


def model_weights(spec: str) -> Weights | None:
    """The weights of a model spec (``hf:``, ``tiny:``, ``bundled:``, ``rapidocr``,
    ``openai:``), counted without loading; None when they cannot be counted here (a hub id
    neither on disk nor shipped, a plug-in's scheme)."""
    from factcap.backends import registry

    scheme, rest = registry.parse_spec(spec)
    if scheme == "openai":
        return Weights(0, 0, "remote server", remote=True)
    if scheme == "rapidocr":
        return Weights(0, RAPIDOCR_BYTES, "rapidocr's ONNX runtime (measured)")
    if scheme == "tiny":
        from factcap.backends import tiny

        path = tiny.cache_dir() / rest
        if (path / "config.json").is_file():
            return _from_folder(path)
        return Weights(TINY_PARAMETERS, 0, "tiny family (not built yet): under 10 M parameters")
    if scheme == "bundled":
        return _from_folder(registry.bundled_dir(rest))
    if scheme != "hf":
        return None
    folder = checkpoint_folder(rest)
    if folder is not None and (
        (folder / "config.json").is_file() or any(folder.glob("*.safetensors"))
    ):
        return _from_folder(folder)
    arch = shipped_arch(rest)
    if arch is None:
        return None
    from factcap.backends import real_size

    total, largest = real_size.parameter_counts(arch)
    return Weights(total, 0, f"shipped config {arch} (meta device)", largest=largest)


# --- a job's need -----------------------------------------------------------------------------


@dataclass
class Slot:
    """A model slot of a job: its weights, device type and dtype (``auto`` resolved)."""

    name: str
    spec: str
    weights: Weights | None
    device: str  # "cpu", "cuda", "mps" or "remote"
    dtype: str
    quantize: str | None = None

    def bytes(self, dtype: str | None = None) -> int:
        """Bytes of this slot's weights (0 if unknown or remote) in ``dtype`` (its own)."""
        if self.weights is None or self.weights.remote:
            return 0
        chosen = self.quantize if self.quantize in DTYPE_BYTES else dtype or self.dtype
        return self.weights.bytes(chosen)

    def casts(self, dtype: str | None = None) -> bool:
        """Whether loading it in ``dtype`` (its own) casts from float32 (as a checkpoint is
        stored unless its headers say otherwise): half precision, not quantised."""
        chosen = dtype or self.dtype
        return self.quantize is None and _ALIASES.get(chosen, chosen) in ("bfloat16", "float16")


@dataclass
class Need:
    """What a job needs on each kind of memory, in one mode."""

    mode: str
    dtype: str
    ram: int
    vram: int
    unknown: list[str] = field(default_factory=list)


def _working(largest: int) -> int:
    return max(WORKING_MIN_BYTES, int(largest * WORKING_SHARE))


def need(slots: Iterable[Slot], mode: str, dtype: str | None = None) -> Need:
    """The RAM and VRAM a job with ``slots`` needs in memory ``mode`` (``normal``: every model
    loaded; ``low``: one at a time), each model in ``dtype`` (default: its own)."""
    slots = list(slots)
    ram_sizes = [s.bytes(dtype) for s in slots if s.device in ("cpu", "mps")]
    vram_sizes = [s.bytes(dtype) for s in slots if s.device == "cuda"]
    # a model loaded in half precision from float32 holds its largest tensor in float32
    # while casting it (the vocabulary's embedding: Qwen2.5-7B's is 2.2 GB)
    cast = max((4 * s.weights.largest for s in slots if s.weights and s.casts(dtype)), default=0)

    def total(sizes: list[int]) -> int:
        if not sizes:
            return 0
        weights = sum(sizes) if mode == "normal" else max(sizes)
        return weights + max(_working(max(sizes)), cast)

    ram = RUNTIME_BYTES + total(ram_sizes)
    if vram_sizes:  # a GPU model loads into RAM, then moves
        ram = max(ram, RUNTIME_BYTES + max(vram_sizes) + cast)
    unknown = [s.name for s in slots if s.weights is None]
    return Need(mode, dtype or "config", ram, total(vram_sizes), unknown)


def job_slots(config: Any, slot_names: Iterable[str], cuda: bool | None = None) -> list[Slot]:
    """The :class:`Slot` of each of ``slot_names`` in ``config``. ``cuda``: whether a CUDA
    device exists (None: ask torch, only when a slot's device is ``auto`` or CUDA)."""
    from factcap.backends import registry

    rcs = config.model_slots()
    slots = []
    for name in slot_names:
        rc = rcs[name]
        scheme, _ = registry.parse_spec(rc.model)
        device = rc.device or config.device
        if scheme == "openai":
            kind = "remote"
        elif device.startswith("cuda") or device == "auto":
            if cuda is None:
                cuda = bool(hardware.cuda_memory())
            kind = "cuda" if cuda else "cpu"
        else:
            kind = "mps" if device == "mps" else "cpu"
        if scheme == "rapidocr":
            kind = "cpu"  # onnxruntime on the CPU
        dtype = rc.dtype or config.dtype
        if dtype == "auto":
            dtype = hardware.auto_dtype(kind if kind != "remote" else "cpu")
        quantize = rc.options.get("quantize")
        try:
            weights = model_weights(rc.model)
        except FactcapError:  # a missing model: its loading says so, in its own words
            weights = None
        slots.append(Slot(name, rc.model, weights, kind, dtype, quantize))
    return slots


def gb(n: int) -> str:
    """``n`` bytes in GiB with one decimal.

    >>> gb(3 * 2**30)
    '3.0 GB'
    """
    return f"{n / GB:.1f} GB"


def modes_for(slots: list[Slot]) -> list[tuple[str, str | None]]:
    """The (memory mode, dtype) pairs worth showing for these slots: float32 and bfloat16 on
    a CPU, float16 on a GPU, in both modes."""
    gpu = any(s.device == "cuda" for s in slots)
    dtypes = ["float16", "float32"] if gpu else ["float32", "bfloat16"]
    return [(mode, dtype) for mode in ("normal", "low") for dtype in dtypes]


def fits(slots: list[Slot], wanted: Need, ram: int, vram: int) -> bool:
    """Whether ``wanted`` fits ``ram`` / ``vram`` bytes; a job whose weights take under
    :data:`NEVER_REFUSED_BYTES` (tiny, shapes) always does."""
    if sum(s.bytes() for s in slots) < NEVER_REFUSED_BYTES:
        return True
    return wanted.ram <= ram and (not wanted.vram or wanted.vram <= vram)


def suggest(slots: list[Slot], ram: int, vram: int) -> str:
    """The modes (memory mode and dtype) that fit ``ram`` / ``vram`` bytes, as advice."""
    own = sorted({s.dtype for s in slots if s.device != "remote"})
    options = []
    for mode, dtype in modes_for(slots):
        n = need(slots, mode, dtype)
        if fits(slots, n, ram, vram):
            option = f"--memory {mode}" + ("" if own == [dtype] else f" with dtype: {dtype}")
            options.append(
                f"{option} ({gb(n.ram)} RAM" + (f", {gb(n.vram)} GPU)" if n.vram else ")")
            )
    if not options:
        return "no mode fits: use a smaller preset (small, or api with a remote server)"
    return "it fits with " + " or ".join(options[:2])


def check_fits(
    config: Any,
    slot_names: Iterable[str],
    preset: str | None = None,
    ram: int | None = None,
    vram: int | None = None,
) -> None:
    """Raise :class:`ConfigError` at once when the job cannot fit this machine's memory in
    its configured mode and dtype, naming the modes that would fit. ``ram`` / ``vram``: the
    bytes available (default: this machine's, now). A job whose weights take under
    :data:`NEVER_REFUSED_BYTES` is never refused; ``memory.check: false`` skips this."""
    slots = job_slots(config, slot_names)
    wanted = need(slots, config.memory.mode)
    ram = hardware.available_memory() if ram is None else ram
    if vram is None:
        vram = max((f for f, _ in hardware.cuda_memory()), default=0) if wanted.vram else 0
    if fits(slots, wanted, ram, vram):
        return
    short = []
    if wanted.ram > ram:
        short.append(f"{gb(wanted.ram)} of RAM, {gb(ram)} is available")
    if wanted.vram > vram:
        short.append(f"{gb(wanted.vram)} of GPU memory, {gb(vram)} is free")
    dtypes = "/".join(sorted({s.dtype for s in slots if s.device != "remote"}))
    check = "factcap models check" + (f" --preset {preset}" if preset else "")
    raise ConfigError(
        f"this job needs about {' and '.join(short)} (memory: {config.memory.mode}, "
        f"dtype {dtypes}; '{check}' shows each mode): {suggest(slots, ram, vram)}; "
        "--no-memory-check (memory: {check: false}) runs it anyway"
    )
