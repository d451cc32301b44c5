"""``factcap models list|check|make-tiny``: what models there are and where they are."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from factcap.cli.common import FORMATTER, add_model_source, load_config, positive, quiet_libraries

EXAMPLES = """examples:
  factcap models list
  factcap models check --preset vfc
  factcap models make-tiny --out ./tiny-models
  factcap models make-random --preset small --out ./real-small --layers 2
"""

MAKE_RANDOM_EXAMPLES = """examples:
  factcap models make-random --preset small --out ./real-small
  factcap models make-random --preset small --out ./real-small --layers 2 --overwrite
  factcap models make-random --preset vfc --out ./real-vfc --layers 4
  factcap models make-random --preset small --out ./real-llm --roles llm --roles vqa
  factcap caption photos/ -o out.jsonl --config ./real-small/preset.yaml

Every role of the preset is built at its real architecture's published configuration (hidden
sizes, layers, heads, vocabulary, image size; stored with factcap, nothing downloaded) with
random weights: for measuring speed and memory, not quality. OCR (rapidocr) is the real model
already; t2i (evaluation only) is not built. A float32 build needs about 5 bytes of memory per
parameter: the 7B models of vfc need --layers on a machine with less than ~40 GB free.
"""


def add_parser(sub: Any) -> None:
    """Register ``models`` and its actions on the top-level subparsers."""
    models = sub.add_parser(
        "models", help="list, check or build models", epilog=EXAMPLES, formatter_class=FORMATTER
    )
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    lst = actions.add_parser(
        "list",
        help="backend families, presets and the spec syntax",
        epilog="example:\n  factcap models list",
        formatter_class=FORMATTER,
    )
    lst.set_defaults(handler=list_models)
    chk = actions.add_parser(
        "check",
        help="which of a preset's weights are available offline",
        description="Say, for each model of a preset or config, whether its weights are on "
        "disk (exit 0 when all are, 1 otherwise). Loads no weights.",
        epilog="examples:\n  factcap models check --preset vfc\n"
        "  factcap models check --config my.yaml",
        formatter_class=FORMATTER,
    )
    add_model_source(chk)
    chk.set_defaults(handler=check_models)
    tiny = actions.add_parser(
        "make-tiny",
        help="build tiny random-weight checkpoints offline",
        description="Build tiny random-weight checkpoints (real architectures, processors and "
        "tokenizers) that load with from_pretrained like hub models. Deterministic, offline.",
        epilog="examples:\n  factcap models make-tiny --out ./tiny-models\n"
        "  factcap models make-tiny --out ./tiny-models --family blip --family owlv2",
        formatter_class=FORMATTER,
    )
    tiny.add_argument("--out", type=Path, required=True, help="directory to write them to")
    tiny.add_argument(
        "--family",
        action="append",
        dest="families",
        help="only this family (repeatable); default: all",
    )
    tiny.set_defaults(handler=make_tiny)
    rand = actions.add_parser(
        "make-random",
        help="build a preset's models at their real sizes with random weights",
        description="Build every model role of a preset at its real architecture (published "
        "configuration, random weights, offline), with a preset.yaml pointing at them, so "
        "speed and memory can be measured without a model hub.",
        epilog=MAKE_RANDOM_EXAMPLES,
        formatter_class=FORMATTER,
    )
    rand.add_argument("--preset", required=True, help="small or vfc")
    rand.add_argument("--out", type=Path, required=True, help="folder to build into (new)")
    rand.add_argument(
        "--layers",
        type=int,
        help="cut every transformer stack to at most N layers, keeping the real widths "
        "(default: the published number of layers)",
    )
    rand.add_argument(
        "--roles",
        action="append",
        metavar="ROLE",
        help="only this role (llm, captioner, captioner:1, vqa, ...; repeatable); default: all",
    )
    rand.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    rand.set_defaults(handler=make_random)


def list_models(args: argparse.Namespace) -> int:
    """Print the spec syntax, every backend, the tiny families and the presets."""
    from factcap.backends.registry import ENTRIES, load_plugins
    from factcap.backends.tiny import FAMILIES
    from factcap.config import preset_dict, preset_names
    from factcap.roles import ROLES

    load_plugins()
    print("Model spec syntax:")
    print("  hf:<hub id or local dir>   transformers / from_pretrained")
    print("  openai:<model>             OpenAI-compatible server (OPENAI_BASE_URL, OPENAI_API_KEY)")
    print("  rapidocr                   PP-OCR shipped in rapidocr-onnxruntime")
    print("  tiny:<family>              tiny random-weight checkpoint built offline")
    print(
        "  bundled:<name>             a checkpoint shipped with factcap (e.g. bundled:shapes/llm)"
    )
    print("\nRoles:")
    for role in ROLES.values():
        print(f"  {role.config_key:<14} {role.description} (used by {', '.join(role.used_by)})")
    print("\nBackends (role / scheme / model_type -> backend):")
    for e in ENTRIES:
        print(f"  {e.role:<10} {e.scheme:<9} {e.family_label:<28} {e.description}")
    print(f"\nTiny families: {', '.join(sorted(FAMILIES))}")
    print("\nPresets:")
    for name in preset_names():
        data = preset_dict(name)
        print(f"  {name}:")
        for role in ROLES.values():
            value = data.get(role.config_key)
            if value:
                specs = [v["model"] for v in value] if role.many else [value["model"]]
                print(f"    {role.config_key + ':':<14} {', '.join(specs)}")
    return 0


def check_models(args: argparse.Namespace) -> int:
    """Say for every model of the config whether its weights can be had offline."""
    from factcap.backends.registry import availability

    config = load_config(args)
    missing = 0
    for slot_name, rc in config.model_slots().items():
        ok, where = availability(rc.model)
        missing += not ok
        role = slot_name.partition(":")[0]
        print(f"{'ok     ' if ok else 'MISSING'} {role:<10} {rc.model:<45} {where}")
    fits = print_memory(config)
    source = f"config {args.config}" if args.config else f"preset {config.preset}"
    print(
        f"{source}: "
        + ("all weights available" if not missing else f"{missing} model(s) missing")
        + ("" if fits else "; does not fit this machine's memory as configured")
    )
    return 0 if not missing and fits else 1


def print_memory(config: Any, ram: int | None = None, vram: int | None = None) -> bool:
    """Print what a caption job with ``config`` needs in each memory mode and dtype on this
    machine (computed from parameter counts; nothing loads) and whether it fits in ``ram`` /
    ``vram`` bytes (default: what this machine has available now); returns whether the
    configured mode fits."""
    from factcap.backends import footprint, hardware
    from factcap.pipeline.plan import stage_list

    names = list(dict.fromkeys(s.model for s in stage_list(config) if s.model))
    slots = footprint.job_slots(config, names)
    ram = hardware.available_memory() if ram is None else ram
    if vram is None:
        vram = max((free for free, _ in hardware.cuda_memory()), default=0)
    print("\nmemory of a caption job (computed from parameter counts; nothing loads):")
    print(
        f"  this machine: {hardware.describe()}"
        + (f"; GPU {footprint.gb(vram)} free" if vram else "")
    )
    for s in slots:
        if s.weights is None:
            size = "unknown (not on disk, no shipped config): not counted"
        elif s.weights.remote:
            size = "remote"
        elif not s.weights.parameters:
            size = f"{footprint.gb(s.bytes())} ({s.weights.source})"
        else:
            size = (
                f"{s.weights.parameters / 1e6:,.1f} M parameters, {footprint.gb(s.bytes())} as "
                f"{s.quantize or s.dtype} on {s.device} ({s.weights.source})"
            )
        print(f"  {s.name:<12} {size}")

    def verdict(need: footprint.Need) -> str:
        return "fits" if footprint.fits(slots, need, ram, vram) else "does NOT fit"

    print(f"  {'mode':<8} {'dtype':<9} {'RAM':>8} {'GPU':>8}")
    for mode, dtype in footprint.modes_for(slots):
        need = footprint.need(slots, mode, dtype)
        gpu = footprint.gb(need.vram) if need.vram else "-"
        print(f"  {mode:<8} {dtype:<9} {footprint.gb(need.ram):>8} {gpu:>8}  {verdict(need)}")
    own = footprint.need(slots, config.memory.mode)
    dtypes = "/".join(sorted({s.dtype for s in slots if s.device != "remote"})) or "-"
    fits = verdict(own) == "fits"
    print(
        f"  as configured (memory: {config.memory.mode}, dtype {config.dtype} = {dtypes}): "
        f"{footprint.gb(own.ram)} RAM"
        + (f", {footprint.gb(own.vram)} GPU" if own.vram else "")
        + f": {verdict(own)} ({footprint.gb(ram)} RAM available"
        + (f", {footprint.gb(vram)} GPU free" if vram else "")
        + ")"
        + ("" if fits else "; " + footprint.suggest(slots, ram, vram))
    )
    print("")
    return fits


def make_tiny(args: argparse.Namespace) -> int:
    """Build the tiny random-weight checkpoints into ``--out``."""
    quiet_libraries()
    from factcap.backends import tiny

    start = time.perf_counter()
    built = tiny.build_all(args.out, args.families)
    for family, path in built.items():
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        print(f"{family:<16} {size / 1e6:6.2f} MB  {path}")
    print(
        f"built {len(built)} tiny checkpoints in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )
    return 0


def _layers_text(row: dict[str, Any]) -> str:
    """``REDUCED (vision 2, text 2)`` or ``full (...)``: each stack's layers, said plainly."""
    stacks = []
    for name, value in row["layers"].items():
        label = name.split(".")[0].removesuffix("_config").removeprefix("num_hidden_")
        count = "/".join(map(str, value)) if isinstance(value, list) else str(value)
        stacks.append(f"{label} {count}")
    return f"{'REDUCED' if row['reduced'] else 'full'} ({', '.join(stacks)})"


def make_random(args: argparse.Namespace) -> int:
    """Build a preset's roles at their real sizes with random weights into ``--out``."""
    import shutil

    from factcap.errors import UsageError

    quiet_libraries()
    from factcap.backends import real_size

    positive("--layers", args.layers)
    real_size.preset_slots(args.preset, args.roles)  # unknown preset or role: said at once
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise UsageError(f"{out} exists: pass --overwrite to replace it")
        if not (out / "MANIFEST.json").is_file():
            raise UsageError(
                f"{out} is not a make-random folder (no MANIFEST.json): refusing to delete it"
            )
        shutil.rmtree(out)
    rows = real_size.plan(args.preset, args.layers, args.roles)
    real_size.check_fits(rows, out, args.layers)
    reduced = [s for s, r in rows.items() if r["reduced"]]
    print(
        f"building preset {args.preset} at real widths with random weights into {out}"
        + (
            f"; every stack cut to at most {args.layers} layers (REDUCED: {', '.join(reduced)})"
            if reduced
            else "; full published layer counts"
        ),
        file=sys.stderr,
    )
    start = time.perf_counter()

    def built(slot_name: str, entry: dict[str, Any]) -> None:
        print(
            f"{slot_name:<14} {entry['arch']:<28} {entry['parameters'] / 1e6:9.1f} M params  "
            f"{entry['disk_bytes'] / 1e9:6.2f} GB  layers {_layers_text(entry)}  "
            f"{entry['path']}",
            flush=True,
        )

    path = real_size.build_preset(args.preset, out, args.layers, args.roles, on_built=built)
    for role, why in real_size.NOT_BUILT.items():
        print(f"{role:<14} not built: {why}")
    print(
        f"built {len(rows)} model(s) in {time.perf_counter() - start:.0f} s; use them with "
        f"--config {path} (e.g. factcap caption photos/ -o out.jsonl --config {path})"
    )
    return 0
