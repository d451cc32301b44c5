"""``factcap bench shapes train``: train every role's model of the shapes world, once.

Each model is trained into its own directory under ``out`` (``out/<name>``) and finished with
a ``factcap_train.json`` stamp (size, seed, trainer version, statistics). A directory whose
stamp matches the request is reused, so a second run trains nothing and an interrupted run
resumes with the models still missing. A model is trained into a hidden staging directory and
renamed when complete: a half-written checkpoint is never taken for a trained one.

When all models exist, ``out/factcap.yaml`` is (re)written: a normal factcap pipeline config
naming them with ``hf:<dir>``, usable with ``factcap caption --config``.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcap.bench.shapes.language import CAPTIONERS

TRAIN_VERSION = 1
STAMP = "factcap_train.json"


@dataclass(frozen=True)
class ModelSpec:
    """One model of the world: its pipeline role and the trainer (``train_<module>.train``)."""

    role: str
    module: str
    options: dict[str, Any] = field(default_factory=dict)


# The one table of the world's models: directory name -> how it is trained.
MODELS: dict[str, ModelSpec] = {
    **{
        name: ModelSpec("captioner", "train_captioner", {"noise": noise})
        for name, noise in CAPTIONERS.items()
    },
    "detector": ModelSpec("detector", "train_detector"),
    "vqa": ModelSpec("vqa", "train_vqa"),
    "llm": ModelSpec("llm", "train_llm"),
    "clip": ModelSpec("embedder", "train_clip"),
}


def trainer(spec: ModelSpec) -> Callable[..., dict[str, Any]]:
    return importlib.import_module(f"factcap.bench.shapes.{spec.module}").train


def stamp_matches(path: Path, size: str, seed: int) -> bool:
    """Whether ``path`` holds a model trained by this version at ``size`` and ``seed``."""
    try:
        stamp = json.loads((path / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stamp.get("version") == TRAIN_VERSION and (stamp.get("size"), stamp.get("seed")) == (
        size,
        seed,
    )


def train_one(
    name: str, out: Path, size: str, seed: int, log: Callable[[str], None]
) -> dict[str, Any]:
    """Train model ``name`` into ``out/name`` (staged, then renamed); returns its stamp."""
    spec = MODELS[name]
    target = out / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out))
    try:
        start = time.perf_counter()
        stats = trainer(spec)(
            staging,
            size=size,
            seed=seed,
            log=lambda msg: log(f"[{name}] {msg}"),
            **spec.options,
        )
        stamp = {
            "name": name,
            "role": spec.role,
            "version": TRAIN_VERSION,
            "size": size,
            "seed": seed,
            "seconds": round(time.perf_counter() - start, 1),
            "stats": stats,
        }
        (staging / STAMP).write_text(json.dumps(stamp, indent=1, default=str), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        return stamp
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def train_all(
    out: str | Path,
    size: str = "full",
    seed: int = 0,
    only: Sequence[str] | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the world's models into ``out`` (those not already there, or all with ``force``).

    Returns ``{"models": {name: stamp}, "trained": [...], "reused": [...], "seconds": ...}``
    and writes ``out/factcap.yaml`` once every model exists.
    """
    import torch

    from factcap.bench.shapes.training import check_size

    check_size(size)
    unknown = sorted(set(only or ()) - set(MODELS))
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    start = time.perf_counter()
    report: dict[str, Any] = {"models": {}, "trained": [], "reused": []}
    for name in only or MODELS:
        path = out / name
        if not force and stamp_matches(path, size, seed):
            report["reused"].append(name)
            report["models"][name] = json.loads((path / STAMP).read_text(encoding="utf-8"))
            log(f"[{name}] already trained ({size}, seed {seed}): reused")
            continue
        log(f"[{name}] training ({size}, seed {seed}) ...")
        stamp = train_one(name, out, size, seed, log)
        report["trained"].append(name)
        report["models"][name] = stamp
        log(f"[{name}] done in {stamp['seconds']:.1f} s")
    report["seconds"] = round(time.perf_counter() - start, 1)
    if all(stamp_matches(out / name, size, seed) for name in MODELS):
        from factcap.bench.shapes.run import write_config

        write_config(out)
    return report
