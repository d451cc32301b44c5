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
  factcap bench shapes run --n 100                            # the shipped models, seconds
  factcap bench shapes train --out models/shapes              # train your own: ~18 min, 2 cores
  factcap bench shapes run --models models/shapes             # 500 held-out scenes
  factcap bench shapes run --models models/shapes --n 50 --seed 7
  factcap bench shapes train --out /tmp/s --size smoke && \\
      factcap bench shapes run --models /tmp/s --n 8           # plumbing check, a minute
  factcap caption scenes/ --preset shapes -o out.jsonl       # the shipped models' pipeline
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

    scenes = actions.add_parser(
        "scenes",
        help="draw held-out scenes (PNG files and their truth) to caption",
        epilog="example:\n  factcap bench shapes scenes --n 24 --out scenes\n"
        "  factcap caption scenes/images --preset shapes -o shapes.jsonl\n"
        "  factcap bench shapes stories scenes shapes.jsonl",
        formatter_class=formatter,
    )
    scenes.add_argument("--out", type=Path, required=True, help="folder for images/ and truth")
    scenes.add_argument("--n", type=int, default=24, help="how many scenes (default 24)")
    scenes.add_argument("--seed", type=int, default=1, help="which scenes (default 1)")
    scenes.add_argument("--overwrite", action="store_true", help="replace an earlier folder")
    scenes.set_defaults(handler=_cmd_scenes)

    stories = actions.add_parser(
        "stories",
        help="print where a captioner named what is not there, and what checking did about it",
        epilog="example:\n  factcap bench shapes stories scenes shapes.jsonl",
        formatter_class=formatter,
    )
    stories.add_argument("scenes", type=Path, help="folder `scenes` wrote")
    stories.add_argument("results", type=Path, help="factcap caption output for its images")
    stories.add_argument("--limit", type=int, default=3, help="stories at most (default 3)")
    stories.set_defaults(handler=_cmd_stories)

    run = actions.add_parser(
        "run",
        help="run the benchmark on held-out scenes and print the metrics",
        epilog=SHAPES_EXAMPLES,
        formatter_class=formatter,
    )
    run.add_argument(
        "--models",
        type=Path,
        help="directory `train` wrote (default: the models shipped with factcap)",
    )
    run.add_argument("--n", type=int, default=500, help="held-out scenes (default 500)")
    run.add_argument("--seed", type=int, default=0, help="which held-out scenes (default 0)")
    run.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to keep scenes and records (default: MODELS/runs/seed<S>-n<N>, or "
        "./shapes-run-seed<S>-n<N> with the shipped models)",
    )
    run.add_argument("--overwrite", action="store_true", help="replace an earlier run's folder")
    run.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="what the pipeline's models load in (default float32, as the shapes preset; the "
        "CLIP model that scores the captions stays float32)",
    )
    run.set_defaults(handler=_cmd_run)

    regions = actions.add_parser(
        "regions",
        help="caption held-out scenes with --regions and score the region labels and captions",
        epilog=SHAPES_EXAMPLES,
        formatter_class=formatter,
    )
    regions.add_argument(
        "--models", type=Path, help="directory `train` wrote (default: the shipped models)"
    )
    regions.add_argument("--n", type=int, default=100, help="held-out scenes (default 100)")
    regions.add_argument("--seed", type=int, default=0, help="which held-out scenes (default 0)")
    regions.add_argument(
        "--padding",
        type=float,
        default=1.0,
        help="crop padding, a fraction of the box (default 1.0: the world's models know whole "
        "scenes, not tight crops)",
    )
    regions.add_argument(
        "--out",
        type=Path,
        help="where to keep scenes and records (default: ./shapes-regions-seed<S>-n<N>)",
    )
    regions.add_argument("--overwrite", action="store_true", help="replace an earlier run")
    regions.set_defaults(handler=_cmd_regions)


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


def _cmd_scenes(args: argparse.Namespace) -> int:
    from factcap.bench.shapes.run import write_scenes
    from factcap.bench.shapes.world import scenes
    from factcap.errors import UsageError

    if args.n < 1:
        raise UsageError("--n must be at least 1")
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise UsageError(f"{args.out} is not empty: pass --overwrite to replace its scenes")
    paths = write_scenes(scenes(args.n, seed=args.seed, split="test"), args.out)
    print(f"{len(paths)} scenes -> {args.out / 'images'} (truth: {args.out / 'truth.jsonl'})")
    return 0


def _cmd_stories(args: argparse.Namespace) -> int:
    from factcap.bench.shapes.demo import stories

    told = stories(args.scenes, args.results, limit=args.limit)
    print("\n\n".join(told) if told else "no captioner named an absent shape in these scenes")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    quiet_libraries()
    from factcap.backends.registry import bundled_dir
    from factcap.bench.shapes.run import format_table, run_benchmark
    from factcap.bench.shapes.train import MODELS
    from factcap.errors import UsageError
    from factcap.schema import json_safe

    if args.n < 1:
        raise UsageError("--n must be at least 1")
    name = f"seed{args.seed}-n{args.n}"
    if args.models is None:
        args.models = bundled_dir("shapes/llm").parent
        args.out = args.out or Path(f"shapes-run-{name}")
    missing = [name for name in MODELS if not (args.models / name / "config.json").exists()]
    if missing:
        raise _missing(args.models, missing)
    out = args.out or args.models / "runs" / name
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"{out} holds an earlier run: pass --overwrite to replace it")
    args.out = out
    start = time.perf_counter()
    result = run_benchmark(
        args.models, n=args.n, seed=args.seed, out=args.out, log=_log, dtype=args.dtype
    )
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


def _cmd_regions(args: argparse.Namespace) -> int:
    quiet_libraries()
    from factcap.backends.registry import bundled_dir
    from factcap.bench.shapes.regions import run_regions
    from factcap.bench.shapes.train import MODELS
    from factcap.errors import UsageError

    if args.n < 1:
        raise UsageError("--n must be at least 1")
    if not args.padding >= 0:
        raise UsageError("--padding must be 0 or more")
    models = args.models or bundled_dir("shapes/llm").parent
    missing = [name for name in MODELS if not (models / name / "config.json").exists()]
    if missing:
        raise _missing(models, missing)
    out = args.out or Path(f"shapes-regions-seed{args.seed}-n{args.n}")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"{out} holds an earlier run: pass --overwrite to replace it")
    result = run_regions(models, args.n, args.seed, out, args.padding, log=_log)
    print(
        f"region labels right for {result['label_accuracy']} of {result['detected_objects']} "
        f"detected objects (target >= {result['target_label_accuracy']}); captions naming one "
        f"shape {result['one_shape_captions']}; spurious regions {result['spurious_regions']} "
        f"of {result['regions']}"
    )
    print(json.dumps(result))
    return 0


def _missing(models: Path, names: list[str]) -> Exception:
    from factcap.errors import ConfigError

    return ConfigError(
        f"{models} lacks trained model(s) {', '.join(names)}: run "
        f"`factcap bench shapes train --out {models}` first"
    )
