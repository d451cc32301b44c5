"""``factcap bench ...``: the command-line side of the benchmarks (argparse only; the heavy
modules are imported by the handlers)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from factcap.cli.common import FORMATTER, quiet_libraries

SHAPES_EXAMPLES = """examples:
  factcap bench shapes train --out models/shapes              # about 18 minutes on 2 cores
  factcap bench shapes run --models models/shapes             # 500 held-out scenes
  factcap bench shapes run --models models/shapes --n 50 --seed 7
  factcap bench shapes train --out /tmp/s --size smoke && \\
      factcap bench shapes run --models /tmp/s --n 8           # plumbing check, a minute
  factcap caption scenes/ --config models/shapes/factcap.yaml -o out.jsonl
"""


def add_parser(sub: Any, formatter: type[argparse.HelpFormatter] = FORMATTER) -> None:
    """Register ``bench shapes train|run`` on the top-level subparsers ``sub``."""
    bench = sub.add_parser(
        "bench",
        help="offline benchmarks with exact ground truth",
        description="Benchmarks that run offline with models trained here.",
        epilog=SHAPES_EXAMPLES,
        formatter_class=formatter,
    )
    worlds = bench.add_subparsers(dest="bench_world", metavar="WORLD", required=True)
    shapes = worlds.add_parser(
        "shapes",
        help="scenes of coloured shapes: what fact-checking buys",
        description="A world of coloured shapes where the truth is known exactly. `train` "
        "trains one small model per pipeline role from scratch (real transformers "
        "architectures, loaded with hf:<dir>); `run` measures each captioner, the final "
        "caption and the final caption without verification against the ground truth.",
        epilog=SHAPES_EXAMPLES,
        formatter_class=formatter,
    )
    actions = shapes.add_subparsers(dest="shapes_command", metavar="ACTION", required=True)

    train = actions.add_parser(
        "train",
        help="train the world's models (reuses those already trained)",
        epilog=SHAPES_EXAMPLES,
        formatter_class=formatter,
    )
    train.add_argument("--out", type=Path, required=True, help="directory for the models")
    train.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    train.add_argument(
        "--size",
        choices=("full", "smoke"),
        default="full",
        help="full: the benchmark's models; smoke: seconds, for plumbing checks",
    )
    train.add_argument("--model", action="append", dest="only", help="only this model (repeatable)")
    train.add_argument("--force", action="store_true", help="retrain models already trained")
    train.set_defaults(handler=_cmd_train)

    run = actions.add_parser(
        "run",
        help="run the benchmark on held-out scenes and print the metrics",
        epilog=SHAPES_EXAMPLES,
        formatter_class=formatter,
    )
    run.add_argument("--models", type=Path, required=True, help="directory `train` wrote")
    run.add_argument("--n", type=int, default=500, help="held-out scenes (default 500)")
    run.add_argument("--seed", type=int, default=0, help="which held-out scenes (default 0)")
    run.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to keep scenes and records (default: MODELS/runs/seed<S>-n<N>)",
    )
    run.set_defaults(handler=_cmd_run)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_train(args: argparse.Namespace) -> int:
    quiet_libraries()  # per-checkpoint bars and advisories would bury the training log
    from factcap.bench.shapes.train import train_all

    report = train_all(
        args.out, size=args.size, seed=args.seed, only=args.only, force=args.force, log=_log
    )
    for name, stamp in report["models"].items():
        reused = " (reused)" if name in report["reused"] else ""
        print(f"{name:<20} {stamp['seconds']:7.1f} s{reused}")
    print(
        f"trained {len(report['trained'])}, reused {len(report['reused'])} in "
        f"{report['seconds']:.1f} s -> {args.out}"
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    quiet_libraries()
    from factcap.bench.shapes.run import format_table, run_benchmark
    from factcap.bench.shapes.train import MODELS
    from factcap.schema import json_safe

    missing = [name for name in MODELS if not (args.models / name / "config.json").exists()]
    if missing:
        raise _missing(args.models, missing)
    if args.n < 1:
        from factcap.errors import ConfigError

        raise ConfigError("--n must be at least 1")
    start = time.perf_counter()
    result = run_benchmark(args.models, n=args.n, seed=args.seed, out=args.out, log=_log)
    for story in result.pop("examples"):
        print(story)
    print(format_table(result))
    targets = result["targets"]
    print(
        f"final/best proposer hallucination {targets['hallucination_ratio']:.2f} "
        f"(target <= {targets['hallucination_ratio_max']}), recall "
        f"{targets['recall_ratio']:.2f} (target >= {targets['recall_ratio_min']}), "
        f"no-verify hallucinates more: {targets['noverify_hallucinates_more']}; "
        f"{result['n']} scenes in {time.perf_counter() - start:.0f} s; records: "
        f"{result['records']}"
    )
    print(json.dumps(json_safe(result), allow_nan=False))
    return 0


def _missing(models: Path, names: list[str]) -> Exception:
    from factcap.errors import ConfigError

    return ConfigError(
        f"{models} lacks trained model(s) {', '.join(names)}: run "
        f"`factcap bench shapes train --out {models}` first"
    )
