"""``factcap models list|check|make-tiny``: what models there are and where they are."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from factcap.cli.common import FORMATTER, add_model_source, load_config, quiet_libraries

EXAMPLES = """examples:
  factcap models list
  factcap models check --preset vfc
  factcap models make-tiny --out ./tiny-models
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
    source = f"config {args.config}" if args.config else f"preset {config.preset}"
    print(
        f"{source}: " + ("all weights available" if not missing else f"{missing} model(s) missing")
    )
    return 0 if not missing else 1


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
