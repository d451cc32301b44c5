"""Tiny random-weight checkpoints of every model family factcap uses, built offline.

Each family is a real transformers architecture with its real processor and tokenizer,
shrunk to a few layers of width 32-64 and saved with ``save_pretrained``; factcap then loads
it through the very same ``from_pretrained`` path as a hub model (``tiny:blip`` resolves to
``hf:<cache>/tiny/blip``). Weights come from fixed seeds, so the same family gives the same
checkpoint, and the same outputs for the same inputs, on any machine.

>>> sorted(FAMILIES)[:4]
['blip', 'blip2', 'blip_vqa', 'chat_vlm']
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path

from factcap.errors import ConfigError

# Bump when a builder changes, so cached checkpoints are rebuilt.
TINY_VERSION = 4

# family name -> "module:function" (relative to this package). The builder takes an output
# directory and writes a complete checkpoint there (config, weights, processor, tokenizer).
FAMILIES: dict[str, str] = {
    "blip": "blip:build_blip_captioner",
    "blip_vqa": "blip:build_blip_vqa",
    "blip2": "blip:build_blip2",
    "kosmos2": "blip:build_kosmos2",
    "chat_vlm": "chat:build_chat_vlm",
    "llm": "chat:build_causal_lm",
    "clip": "chat:build_clip",
    "grounding_dino": "detectors:build_grounding_dino",
    "owlv2": "detectors:build_owlv2",
    "sd": "diffusion:build_sd",
}


def cache_dir() -> Path:
    """Where ``tiny:`` checkpoints are built: ``$FACTCAP_CACHE/tiny`` or ``~/.cache/factcap/tiny``."""
    root = os.environ.get("FACTCAP_CACHE") or Path.home() / ".cache" / "factcap"
    return Path(root) / "tiny" / f"v{TINY_VERSION}"


def build(family: str, out: Path) -> Path:
    """Build one family's checkpoint into ``out`` (created; replaced atomically if present)."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown tiny family {family!r}; known: {', '.join(sorted(FAMILIES))}")
    module_name, func_name = FAMILIES[family].split(":")
    builder = getattr(importlib.import_module(f"{__name__}.{module_name}"), func_name)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=out.parent))
    try:
        builder(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


def is_built(path: Path) -> bool:
    """Whether ``path`` holds a checkpoint (transformers) or a pipeline (diffusers)."""
    return (path / "config.json").exists() or (path / "model_index.json").exists()


def ensure(family: str) -> Path:
    """The cached checkpoint directory of ``family``, building it on first use."""
    out = cache_dir() / family
    if not is_built(out):
        build(family, out)
    return out


def build_all(out: Path, families: list[str] | None = None) -> dict[str, Path]:
    """Build every family (or the given ones) under ``out``; returns family -> directory."""
    return {f: build(f, Path(out) / f) for f in (families or sorted(FAMILIES))}
