"""The ``factcap`` command line: a thin layer over the library.

Heavy modules (pydantic models, torch, transformers) are imported inside the command
handlers, so ``factcap --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from factcap import __version__

STYLES = ("detailed", "short", "t2i", "alt")

CAPTION_EXAMPLES = """examples:
  factcap caption photos/ -o captions.jsonl                    # tiny preset, offline smoke run
  factcap caption "shards-{000..099}.tar" -o out/ --format webdataset --preset small
  factcap caption photos/ -o captions.jsonl --resume           # continue after a crash
  factcap caption photos/ -o captions.jsonl --executor ray     # same job on Ray Data
  factcap caption "data/**/*.jpg" --preset small -o out.jsonl --style detailed --style alt
  factcap caption list.txt --config my.yaml -o out.jsonl --instruction "One line, no colours."
"""

EVALUATE_EXAMPLES = """examples:
  factcap evaluate out.jsonl -o scores.jsonl                   # default metrics, tiny models
  factcap evaluate out.jsonl -o scores.jsonl --source all --references refs.jsonl \\
      --metrics clip_score,vqa_score,capture,chair,self_retrieval,bleu,rouge_l,cider
  factcap evaluate other_tool.jsonl -o s.parquet --preset small --clip hf:openai/clip-vit-large-patch14
"""

SERVE_EXAMPLES = """examples:
  factcap serve                                                # tiny preset on 127.0.0.1:8000
  FACTCAP_API_KEY=... factcap serve --host 0.0.0.0 --preset small --data-root /data
  curl -H "Authorization: Bearer $FACTCAP_API_KEY" -F image=@cat.jpg http://127.0.0.1:8000/v1/captions
"""

MODELS_EXAMPLES = """examples:
  factcap models list
  factcap models check --preset vfc
  factcap models make-tiny --out ./tiny-models
"""


def _add_model_source(
    parser: argparse.ArgumentParser, preset_help: str = "tiny (default), small, vfc or api"
) -> None:
    """``--preset`` or ``--config``: where a command's models come from."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", help=preset_help)
    group.add_argument("--config", type=Path, help="YAML config file (may name a preset)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="factcap",
        description="Detailed image captions, fact-checked against the image.",
        epilog="Run 'factcap COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"factcap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    cap = sub.add_parser(
        "caption",
        help="caption images: propose, fact-check, compose",
        description="Caption images with several models, check the claims against the image "
        "and write one JSON record per input.",
        epilog=CAPTION_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cap.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, directories (recursive), globs, or .txt/.jsonl manifests",
    )
    cap.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        help="out.jsonl, out.parquet (a folder of shards), or a folder with --format",
    )
    cap.add_argument(
        "--format",
        choices=("jsonl", "parquet", "webdataset"),
        help="output format (default: from the name of -o)",
    )
    cap.add_argument("--shard-size", type=int, help="records per Parquet / WebDataset shard")
    cap.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted job: skip inputs the output already holds",
    )
    cap.add_argument(
        "--retry-failed",
        action="store_true",
        help="like --resume, and redo the inputs whose record is an error",
    )
    cap.add_argument("--overwrite", action="store_true", help="replace an existing output")
    cap.add_argument("--image-column", help="Parquet / datasets column holding the images")
    cap.add_argument("--id-column", help="Parquet / datasets / CSV column holding the ids")
    cap.add_argument("--split", help="split of a saved Hugging Face dataset (default: all)")
    _add_model_source(cap)
    cap.add_argument(
        "--style",
        action="append",
        choices=STYLES,
        dest="styles",
        help="caption style; repeat for several (default: detailed)",
    )
    cap.add_argument("--instruction", help="a free instruction for one more caption")
    cap.add_argument("--batch-size", type=int, help="images per batch")
    cap.add_argument("--device", help="cpu, cuda, cuda:1, mps or auto")
    cap.add_argument(
        "--workers", type=int, help="batches in the model stages at once (local executor)"
    )
    cap.add_argument(
        "--no-verify",
        action="store_true",
        help="skip fact-checking (compose from the proposals alone)",
    )
    cap.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: pipelined threads in this process (default); ray: Ray Data, one actor "
        "pool per model role (pip install 'factcap[ray]')",
    )
    cap.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to run on, with --executor ray (default: $RAY_ADDRESS, else the "
        "cluster 'ray start' last started here, else a new local Ray instance)",
    )
    cap.add_argument("--quiet", action="store_true", help="no progress bar")
    cap.set_defaults(handler=_cmd_caption)

    ev = sub.add_parser(
        "evaluate",
        help="score captions: CLIP-Score, VQAScore, CAPTURE, CHAIR, BLEU, ...",
        description="Score the captions of a results JSONL (factcap's, or any JSONL with id, "
        "source and captions) and write per-caption scores, a summary JSON and a table.",
        epilog=EVALUATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("results", type=Path, metavar="RESULTS", help="results JSONL")
    ev.add_argument(
        "-o", "--output", required=True, type=Path, help="per-caption scores: .jsonl, or .parquet"
    )
    ev.add_argument("--metrics", help="comma-separated metric names (default: the config's)")
    ev.add_argument(
        "--references",
        type=Path,
        help='JSONL of {"id", "references": [...], "objects": [...]} or COCO JSON',
    )
    ev.add_argument(
        "--source",
        choices=("final", "proposals", "all"),
        default="final",
        help="score final captions, proposals, or both side by side",
    )
    _add_model_source(ev, "models for scoring come from this preset (default tiny)")
    ev.add_argument(
        "--clip", help="model spec of the CLIP embedder (e.g. hf:openai/clip-vit-large-patch14)"
    )
    ev.add_argument("--t2i", help="model spec of the text-to-image model for clip_image_score")
    ev.add_argument("--vqa", help="model spec of the VQA model for vqa_score")
    ev.add_argument("--batch-size", type=int, help="samples per model batch")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(handler=_cmd_evaluate)

    rep = sub.add_parser(
        "report",
        help="one self-contained HTML page: images, captions, claims, boxes, scores",
        description="Write a static HTML report of a results JSONL that opens offline in any "
        "browser (images embedded as thumbnails, no network).",
        epilog="examples:\n  factcap report captions.jsonl -o report.html\n"
        "  factcap report captions.jsonl --scores scores.jsonl -o report.html --thumb-px 320",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rep.add_argument(
        "results", type=Path, metavar="RESULTS", help="results JSONL of factcap caption"
    )
    rep.add_argument(
        "--scores", type=Path, help="per-caption scores of factcap evaluate (JSONL or .parquet)"
    )
    rep.add_argument("-o", "--output", required=True, type=Path, help="HTML file to write")
    rep.add_argument(
        "--thumb-px", type=int, default=256, help="longest side of thumbnails (16-4096)"
    )
    rep.set_defaults(handler=_cmd_report)

    srv = sub.add_parser(
        "serve",
        help="serve captions over HTTP (FastAPI)",
        description="Serve the pipeline over HTTP: POST /v1/captions, dataset jobs under "
        "--data-root, GET /healthz. Set FACTCAP_API_KEY to require a key (needed off loopback).",
        epilog=SERVE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    _add_model_source(srv)
    srv.add_argument(
        "--max-upload-mb", type=float, default=20, help="largest request body (default 20)"
    )
    srv.add_argument(
        "--queue-size", type=int, default=64, help="requests waiting at most; beyond: 429"
    )
    srv.add_argument(
        "--data-root", type=Path, help="folder dataset jobs may read (default: jobs off)"
    )
    srv.add_argument(
        "--jobs-dir", type=Path, help="where job results go (default: a temporary folder)"
    )
    srv.set_defaults(handler=_cmd_serve)

    models = sub.add_parser(
        "models",
        help="list, check or build models",
        epilog=MODELS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    lst = msub.add_parser(
        "list",
        help="backend families, presets and the spec syntax",
        epilog="example:\n  factcap models list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lst.set_defaults(handler=_cmd_models_list)
    chk = msub.add_parser(
        "check",
        help="which of a preset's weights are available offline",
        description="Say, for each model of a preset or config, whether its weights are on "
        "disk (exit 0 when all are, 1 otherwise). Loads no weights.",
        epilog="examples:\n  factcap models check --preset vfc\n"
        "  factcap models check --config my.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_model_source(chk)
    chk.set_defaults(handler=_cmd_models_check)
    tiny = msub.add_parser(
        "make-tiny",
        help="build tiny random-weight checkpoints offline",
        description="Build tiny random-weight checkpoints (real architectures, processors and "
        "tokenizers) that load with from_pretrained like hub models. Deterministic, offline.",
        epilog="examples:\n  factcap models make-tiny --out ./tiny-models\n"
        "  factcap models make-tiny --out ./tiny-models --family blip --family owlv2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tiny.add_argument("--out", type=Path, required=True, help="directory to write them to")
    tiny.add_argument(
        "--family",
        action="append",
        dest="families",
        help="only this family (repeatable); default: all",
    )
    tiny.set_defaults(handler=_cmd_make_tiny)

    from factcap.bench.cli import add_parser as add_bench

    add_bench(sub, argparse.RawDescriptionHelpFormatter)
    return parser


def _load_config(args: argparse.Namespace, overrides: dict[str, Any] | None = None):
    from factcap.config import load_config

    return load_config(path=args.config, preset=args.preset, overrides=overrides)


def quiet_libraries() -> None:
    """Keep the terminal for factcap's own progress bar: no per-checkpoint bars or advisories
    from transformers / huggingface_hub (a user's explicit settings win)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    # Pillow warns about odd-but-decodable files; the record's status says what matters.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def _cmd_caption(args: argparse.Namespace) -> int:
    quiet_libraries()
    from factcap.engine import open_sink, open_source
    from factcap.engine.executor import run_job
    from factcap.engine.resume import completed_ids
    from factcap.pipeline import Pipeline

    overrides: dict[str, Any] = {}
    if args.styles:
        overrides["styles"] = args.styles
    if args.instruction:
        overrides["instruction"] = args.instruction
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise _usage("--batch-size must be at least 1")
        overrides["batch_size"] = args.batch_size
    if args.device:
        overrides["device"] = args.device
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.no_verify:
        overrides["verify"] = {"enabled": False}
    if args.ray_address and args.executor != "ray":
        raise _usage("--ray-address needs --executor ray")
    config = _load_config(args, overrides)
    fmt = args.format or ("jsonl" if args.output.suffix.lower() != ".parquet" else "parquet")
    items = open_source(
        args.inputs, image_column=args.image_column, id_column=args.id_column, split=args.split
    )
    resuming = args.resume or args.retry_failed
    done = completed_ids(args.output, fmt, args.retry_failed) if resuming else set()
    if not resuming and not args.overwrite and _has_output(args.output):
        raise _usage(f"{args.output} exists: --resume continues it, --overwrite replaces it")
    if args.executor == "ray":
        from factcap.errors import require

        require("ray", "ray")
        pipeline = Pipeline(config)  # each Ray actor builds its own model, on its own worker
    else:
        pipeline = Pipeline(config).load()  # model errors surface before the output is touched
    sink = open_sink(
        args.output,
        fmt,
        args.shard_size,
        append=resuming,
        overwrite=args.overwrite and not resuming,
        caption_style=config.styles[0],
    )

    from tqdm import tqdm

    start = time.perf_counter()
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    todo = (item for item in items if item.id not in done)

    def count(record: Any) -> None:
        statuses[record.status] += 1
        if record.error:
            errors[record.error.type] += 1
        bar.update(1)

    with sink, tqdm(unit="img", disable=args.quiet, desc="captioning", dynamic_ncols=True) as bar:
        if args.executor == "ray":
            from factcap.engine.ray_executor import run_ray_job

            run_ray_job(pipeline, todo, sink, address=args.ray_address, on_record=count)
        else:
            run_job(pipeline, todo, sink, workers=config.workers, on_record=count)
    seconds = time.perf_counter() - start
    n = sum(statuses.values())
    detail = ", ".join(f"{k}: {v}" for k, v in errors.most_common())
    rate = f"({n / seconds:.2f} img/s, {seconds / n:.2f} s/img)" if n else ""
    skipped = f", {len(done)} already done" if done else ""
    print(
        f"factcap: {n} images in {seconds:.1f} s {rate}: {statuses['ok']} ok, "
        f"{statuses['error']} errors"
        + (f" ({detail})" if detail else "")
        + skipped
        + f" -> {args.output}",
        file=sys.stderr,
    )
    return 0


def _has_output(path: Path) -> bool:
    if path.is_dir():
        return any(path.iterdir())
    return path.exists() and path.stat().st_size > 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    quiet_libraries()
    from factcap import evaluate as ev

    overrides: dict[str, Any] = {}
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise _usage("--batch-size must be at least 1")
        overrides["evaluate"] = {"batch_size": args.batch_size}
    config = _load_config(args, overrides)
    names = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    names = names or list(config.evaluate.metrics)
    from factcap.metrics import METRICS

    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise _usage(
            f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(sorted(METRICS))}"
        )
    rows = list(ev.read_jsonl(args.results))
    samples = ev.build_samples(rows, args.source, ev.read_references(args.references), {})
    if not samples:
        raise _usage(f"{args.results} holds no captions to score (rows need id, source, captions)")
    resources = ev.resources_for(config, {"embedder": args.clip, "t2i": args.t2i, "vqa": args.vqa})

    from tqdm import tqdm

    sources = {s.caption_source for s in samples}
    start = time.perf_counter()
    with tqdm(
        total=len(sources) * len(names),
        unit="step",
        disable=args.quiet,
        desc="evaluating",
        dynamic_ncols=True,
    ) as bar:

        def step(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update(1)

        result = ev.evaluate(samples, names, resources, config.evaluate.options, progress=step)
    summary_path = ev.write_rows(result, args.output)
    print(ev.table(result.summary))
    print(
        f"factcap: {len(samples)} captions of {len({s.id for s in samples})} images, "
        f"{len(names)} metrics in {time.perf_counter() - start:.1f} s -> {args.output}, "
        f"{summary_path}",
        file=sys.stderr,
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from factcap.serve.app import cmd_serve

    return cmd_serve(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from factcap.report import cmd_report

    return cmd_report(args)


def _cmd_models_list(args: argparse.Namespace) -> int:
    from factcap.backends.registry import ENTRIES
    from factcap.backends.tiny import FAMILIES
    from factcap.config import preset_dict, preset_names

    print("Model spec syntax:")
    print("  hf:<hub id or local dir>   transformers / from_pretrained")
    print("  openai:<model>             OpenAI-compatible server (OPENAI_BASE_URL, OPENAI_API_KEY)")
    print("  rapidocr                   PP-OCR shipped in rapidocr-onnxruntime")
    print("  tiny:<family>              tiny random-weight checkpoint built offline")
    print("\nBackends (role / scheme / model_type -> backend):")
    for e in ENTRIES:
        print(f"  {e.role:<10} {e.scheme:<9} {e.family_label:<28} {e.description}")
    print(f"\nTiny families: {', '.join(sorted(FAMILIES))}")
    print("\nPresets:")
    for name in preset_names():
        data = preset_dict(name)
        caps = ", ".join(c["model"] for c in data.get("captioners", []))
        print(f"  {name}:")
        print(f"    captioners: {caps}")
        for role in ("llm", "detector", "vqa", "ocr", "embedder"):
            if data.get(role):
                print(f"    {role + ':':<11} {data[role]['model']}")
    return 0


def _cmd_models_check(args: argparse.Namespace) -> int:
    from factcap.backends.registry import availability

    config = _load_config(args)
    specs = [("captioner", rc.model) for rc in config.captioners]
    specs += [(role, rc.model) for role, rc in config.roles().items()]
    missing = 0
    for role, spec in specs:
        ok, where = availability(spec)
        missing += not ok
        print(f"{'ok     ' if ok else 'MISSING'} {role:<10} {spec:<45} {where}")
    print(
        f"preset {config.preset or '(config)'}: "
        + ("all weights available" if not missing else f"{missing} model(s) missing")
    )
    return 0 if not missing else 1


def _cmd_make_tiny(args: argparse.Namespace) -> int:
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


class _UsageError(Exception):
    pass


def _usage(message: str) -> _UsageError:
    return _UsageError(message)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``factcap`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from factcap.errors import FactcapError

    try:
        return args.handler(args)
    except (FactcapError, _UsageError) as err:
        print(f"factcap: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("factcap: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
