"""Real-size random-weight checkpoints: every role of a preset at its published architecture.

Each architecture's published configuration (hidden sizes, layers, heads, vocabulary, image
size) is stored in ``configs/<arch>.json``, written by hand (no download); a builder makes that
transformers model with seeded random weights and a processor/tokenizer of the real vocabulary
size (synthetic tokens), and saves it so that ``hf:<folder>`` loads through the registry like
a hub checkpoint. Speed and memory can then be measured without a hub. ``layers`` cuts every
transformer stack (vision, text, decoder...) to at most that many layers, keeping the widths:
for CPU machines that cannot hold a 7B model, and for quick tests.

>>> PRESETS["small"]["llm"]
'qwen2.5-1.5b-instruct'
>>> round(count_parameters("qwen2.5-1.5b-instruct") / 1e9, 2)
1.54
>>> layer_plan("qwen2.5-1.5b-instruct", 2)
({'num_hidden_layers': 2}, True)

Building the whole small preset at two layers per stack (a few minutes on a laptop CPU)::

    path = build_preset("small", Path("real-small"), layers=2)
    # real-small/preset.yaml points every built role at hf:real-small/<slot>
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from factcap.backends.real_size import common
from factcap.errors import ConfigError
from factcap.roles import ROLES

#: arch -> "module:function" (in this package): ``build(arch, out, layers=None) -> dict``.
ARCHITECTURES: dict[str, str] = {
    "blip-image-captioning-large": "blip:build_blip",
    "blip-vqa-base": "blip:build_blip",
    "blip-vqa-capfilt-large": "blip:build_blip",
    "smolvlm-256m-instruct": "chat:build_idefics3",
    "llava-1.5-7b-hf": "chat:build_llava",
    "kosmos-2-patch14-224": "kosmos:build_kosmos2",
    "qwen2.5-1.5b-instruct": "chat:build_causal_lm",
    "qwen2.5-7b-instruct": "chat:build_causal_lm",
    "grounding-dino-tiny": "detectors:build_grounding_dino",
    "grounding-dino-base": "detectors:build_grounding_dino",
    "clip-vit-base-patch32": "clip:build_clip",
    "clip-vit-large-patch14": "clip:build_clip",
    "all-minilm-l6-v2": "text:build_sentence_encoder",
}

#: preset -> model slot -> arch, as in ``factcap/presets/<preset>.yaml``. OCR (rapidocr) is
#: the real model already; the t2i role (SD-Turbo, SDXL-Turbo) serves evaluation only and has
#: no real-size build.
PRESETS: dict[str, dict[str, str]] = {
    "small": {
        "captioner:0": "blip-image-captioning-large",
        "captioner:1": "smolvlm-256m-instruct",
        "llm": "qwen2.5-1.5b-instruct",
        "detector": "grounding-dino-tiny",
        "vqa": "blip-vqa-base",
        "embedder": "clip-vit-base-patch32",
        "text_embedder": "all-minilm-l6-v2",
    },
    "vfc": {
        "captioner:0": "llava-1.5-7b-hf",
        "captioner:1": "kosmos-2-patch14-224",
        "llm": "qwen2.5-7b-instruct",
        "detector": "grounding-dino-base",
        "vqa": "blip-vqa-capfilt-large",
        "embedder": "clip-vit-large-patch14",
        "text_embedder": "all-minilm-l6-v2",
    },
}
#: Roles of a preset that are not built, and why (said by ``factcap models make-random``).
NOT_BUILT = {
    "ocr": "rapidocr is the real model already (shipped in rapidocr-onnxruntime)",
    "t2i": "evaluation only (SD-Turbo/SDXL-Turbo): no real-size build; left out of preset.yaml",
}


def _is_blip(arch: str) -> bool:
    return ARCHITECTURES.get(arch, "").startswith("blip:")


def hub_id(arch: str) -> str:
    """The hub repository whose published configuration ``arch`` copies."""
    spec = common.load_spec(arch)
    return spec.get("hub_id") or spec["_hub_id"]


def _recipe(arch: str, layers: int | None) -> tuple[str, Any, dict[str, Any], bool]:
    """(transformers model class, its config object, layer counts, reduced?) of ``arch``."""
    if arch not in ARCHITECTURES:
        raise ConfigError(
            f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        )
    if _is_blip(arch):
        from transformers import BlipConfig

        from factcap.backends.real_size import blip

        full = blip.reduced_config(arch)
        data = blip.reduced_config(arch, layers)
        model_class = data.pop("architectures")[0]
        counts = {k: data[k]["num_hidden_layers"] for k in ("vision_config", "text_config")}
        reduced = any(counts[k] != full[k]["num_hidden_layers"] for k in counts)
        return model_class, BlipConfig(**data), counts, reduced
    spec = common.load_spec(arch)
    config = common.cut_layers(spec, layers)
    counts = common.layer_counts(spec, config)
    reduced = counts != common.layer_counts(spec, spec["config"])
    return spec["model_class"], common.transformers_config(config), counts, reduced


def layer_plan(arch: str, layers: int | None = None) -> tuple[dict[str, Any], bool]:
    """The layer count of each stack of ``arch`` built with ``layers``, and whether that is
    fewer than published."""
    _, _, counts, reduced = _recipe(arch, layers)
    return counts, reduced


def count_parameters(arch: str, layers: int | None = None) -> int:
    """Parameters of ``arch`` (cut to ``layers``), counted on the meta device: no memory."""
    return parameter_counts(arch, layers)[0]


def parameter_counts(arch: str, layers: int | None = None) -> tuple[int, int]:
    """(parameters, elements of the largest one) of ``arch`` cut to ``layers``, on the meta
    device (the largest, usually the vocabulary's embedding, is what a cast holds at once).

    >>> total, largest = parameter_counts("qwen2.5-1.5b-instruct")
    >>> largest == 151936 * 1536
    True
    """
    model_class, config, _, _ = _recipe(arch, layers)
    return common.parameter_counts(model_class, config)


def _builder(arch: str) -> Callable[..., dict[str, Any]]:
    module_name, func_name = ARCHITECTURES[arch].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module_name}"), func_name)


def build_arch(arch: str, out: Path, layers: int | None = None) -> dict[str, Any]:
    """Build ``arch`` into ``out`` (created); returns ``{"arch", "parameters", "layers",
    "reduced"}``."""
    if arch not in ARCHITECTURES:
        raise ConfigError(
            f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}"
        )
    return _builder(arch)(arch, Path(out), layers=layers)


def cache_dir() -> Path:
    """Where :func:`cached_arch` keeps builds: ``$FACTCAP_CACHE/real_size`` or
    ``~/.cache/factcap/real_size``."""
    root = os.environ.get("FACTCAP_CACHE") or Path.home() / ".cache" / "factcap"
    return Path(root) / "real_size"


def cached_arch(
    arch: str, layers: int | None = None, cache: Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """``arch`` built once into ``cache`` (default :func:`cache_dir`) and reused: its folder
    and build summary. A build is made under a temporary name and renamed when whole, so an
    interrupted one is never taken for a checkpoint."""
    out = (cache or cache_dir()) / (arch if layers is None else f"{arch}-layers{layers}")
    summary_path = out / "build.json"
    if not summary_path.is_file():
        staging = out.with_name(out.name + ".building")
        shutil.rmtree(staging, ignore_errors=True)
        summary = build_arch(arch, staging, layers=layers)
        (staging / "build.json").write_text(json.dumps(summary), encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    return out, json.loads(summary_path.read_text(encoding="utf-8"))


def preset_slots(preset: str, roles: Sequence[str] | None = None) -> dict[str, str]:
    """The slots of ``preset`` to build: all, or those named in ``roles`` (a role such as
    ``captioner`` selects all its slots; a slot such as ``captioner:1`` just that one)."""
    if preset not in PRESETS:
        raise ConfigError(
            f"no real-size builds for preset {preset!r}; choose from {sorted(PRESETS)}"
        )
    slots = PRESETS[preset]
    if not roles:
        return dict(slots)
    known = set(slots) | {s.partition(":")[0] for s in slots}
    unknown = [r for r in roles if r not in known]
    if unknown:
        raise ConfigError(
            f"unknown role(s) {unknown} for preset {preset}; choose from {sorted(known)}"
        )
    return {s: a for s, a in slots.items() if s in roles or s.partition(":")[0] in roles}


def plan(
    preset: str, layers: int | None = None, roles: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Per slot: the arch, its parameters, layer counts, whether reduced, and the bytes its
    float32 build needs in memory (estimated); counted without allocating."""
    rows = {}
    for slot_name, arch in preset_slots(preset, roles).items():
        params = count_parameters(arch, layers)
        counts, reduced = layer_plan(arch, layers)
        rows[slot_name] = {
            "arch": arch,
            "parameters": params,
            "layers": counts,
            "reduced": reduced,
            "build_bytes": int(params * common.BUILD_BYTES_PER_PARAMETER),
        }
    return rows


def check_fits(rows: dict[str, dict[str, Any]], out_dir: Path, layers: int | None) -> None:
    """Raise :class:`ConfigError` when the largest build needs more memory than is available,
    or all of them more disk than ``out_dir``'s file system has free."""
    if not rows:
        return
    slot_name, row = max(rows.items(), key=lambda kv: kv[1]["build_bytes"])
    available = common.available_memory()
    if row["build_bytes"] > available:
        hint = "a smaller --layers" if layers else "--layers N (e.g. --layers 4)"
        raise ConfigError(
            f"{row['arch']} ({slot_name}, {row['parameters'] / 1e9:.2f} B parameters) needs about "
            f"{row['build_bytes'] / 2**30:.1f} GiB of memory to build in float32, but "
            f"{available / 2**30:.1f} GiB is available: use {hint} to build fewer layers "
            "of the same widths, or --roles to leave it out"
        )
    probe = Path(out_dir)
    while not probe.exists():
        probe = probe.parent
    disk = sum(r["parameters"] * 4 for r in rows.values())
    free = shutil.disk_usage(probe).free
    if disk > free:
        raise ConfigError(
            f"the checkpoints need about {disk / 2**30:.1f} GiB of disk, {probe} has "
            f"{free / 2**30:.1f} GiB free"
        )


def build_preset(
    preset: str,
    out_dir: Path,
    layers: int | None = None,
    roles: Sequence[str] | None = None,
    on_built: Callable[[str, dict[str, Any]], None] | None = None,
) -> Path:
    """Build ``preset``'s slots (or ``roles`` of them) into ``out_dir/<slot>`` and write
    ``out_dir/preset.yaml`` (the preset with every built role at ``hf:<folder>``, the others
    as published, t2i left out) and ``MANIFEST.json``; returns the config's path.

    Refuses (:class:`ConfigError`) before building anything when the largest model would not
    fit in the available memory. ``on_built(slot, row)`` is called after each build.
    """
    import gc

    import yaml

    from factcap.config import preset_dict

    rows = plan(preset, layers, roles)
    out_dir = Path(out_dir).resolve()
    check_fits(rows, out_dir, layers)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"preset": preset, "layers": layers, "slots": {}}
    for slot_name, row in rows.items():
        folder = out_dir / slot_name.replace(":", "-")
        if folder.exists():
            shutil.rmtree(folder)
        start = time.perf_counter()
        built = build_arch(row["arch"], folder, layers)
        gc.collect()
        entry = {
            **built,
            "hub_id": hub_id(row["arch"]),
            "path": str(folder),
            "disk_bytes": common.directory_size(folder),
            "build_s": round(time.perf_counter() - start, 1),
        }
        manifest["slots"][slot_name] = entry
        if on_built is not None:
            on_built(slot_name, entry)
    config = preset_dict(preset)
    config.pop("preset", None)
    config.pop("t2i", None)
    for slot_name, entry in manifest["slots"].items():
        role, _, index = slot_name.partition(":")
        target = config[ROLES[role].config_key]
        target = target[int(index)] if index else target
        target["model"] = f"hf:{entry['path']}"
    header = (
        f"# factcap models make-random --preset {preset}"
        + (f" --layers {layers}" if layers else "")
        + ": random weights at the published sizes"
        + (f", every stack cut to at most {layers} layers" if layers else "")
        + ". For speed and memory, not quality.\n"
    )
    path = out_dir / "preset.yaml"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    (out_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    """The ``MANIFEST.json`` of a built preset folder, or None."""
    path = Path(out_dir) / "MANIFEST.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
