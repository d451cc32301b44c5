"""``factcap evaluate``: a thin layer over :mod:`factcap.evaluate`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from factcap.cli.common import (
    FORMATTER,
    add_image_root,
    add_model_source,
    add_overwrite,
    check_image_root,
    check_new_output,
    load_config,
    positive,
    quiet_libraries,
)
from factcap.errors import UsageError

EXAMPLES = """examples:
  factcap evaluate out.jsonl -o scores.jsonl                   # default metrics, tiny models
  factcap evaluate out.parquet -o scores.jsonl --image-root /data/photos
  factcap evaluate out.jsonl -o scores.jsonl --source all --references refs.jsonl \\
      --metrics clip_score,vqa_score,capture,chair,self_retrieval,bleu,rouge_l,cider
  factcap evaluate other_tool.jsonl -o s.parquet --preset small --clip hf:openai/clip-vit-large-patch14
  factcap evaluate out.jsonl -o s.jsonl --metrics vlm_judge --judge openai:Qwen/Qwen2.5-VL-7B-Instruct
  factcap evaluate out.jsonl -o s.jsonl --judge tiny:chat_vlm \
      --pairwise final:detailed,proposal:tiny:blip          # A vs B, asked in both orders
  factcap evaluate out.jsonl -o s.jsonl --references answers.jsonl --metrics question_accuracy
      # rows {"id", "answer"}: does the caption let the LLM answer the record's --question?

Default metrics: clip_score, vqa_score, chair and self_retrieval, which need no reference
captions (chair then reports only chair_ov_i, against the pipeline's own detector verdicts);
with --references, capture, bleu, rouge_l and cider too. vlm_judge (rubric scores 1-5 from
a vision chat model) and --pairwise need a judge model: --judge SPEC, or judge: in the config."""


def add_parser(sub: Any) -> None:
    """Register ``evaluate`` on the top-level subparsers."""
    ev = sub.add_parser(
        "evaluate",
        help="score captions: CLIP-Score, VQAScore, CAPTURE, CHAIR, BLEU, ...",
        description="Score the captions of factcap's output (JSONL, Parquet or WebDataset) or "
        "of any JSONL with id, source and captions, and write per-caption scores, a summary "
        "JSON and a table.",
        epilog=EXAMPLES,
        formatter_class=FORMATTER,
    )
    ev.add_argument(
        "results", type=Path, metavar="RESULTS", help="factcap output (.jsonl, folder) or JSONL"
    )
    ev.add_argument(
        "-o", "--output", required=True, type=Path, help="per-caption scores: .jsonl, or .parquet"
    )
    add_overwrite(ev)
    ev.add_argument(
        "--metrics", help="comma-separated metric names (default: see below, or the config's)"
    )
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
    add_image_root(ev)
    add_model_source(ev, "models for scoring come from this preset (default tiny)")
    ev.add_argument(
        "--clip", help="model spec of the CLIP embedder (e.g. hf:openai/clip-vit-large-patch14)"
    )
    ev.add_argument("--t2i", help="model spec of the text-to-image model for clip_image_score")
    ev.add_argument("--vqa", help="model spec of the VQA model for vqa_score")
    ev.add_argument(
        "--judge",
        help="model spec of the judge for vlm_judge and --pairwise: a chat VLM "
        "(hf:<id>, tiny:chat_vlm) or openai:<model> (a vision chat server)",
    )
    ev.add_argument(
        "--pairwise",
        action="append",
        default=[],
        metavar="A,B",
        help="compare two caption sources (e.g. final:detailed,proposal:tiny:blip) with the "
        "judge, in both orders; repeatable. Rows go to <stem>.pairwise.jsonl",
    )
    ev.add_argument(
        "--baseline",
        metavar="SOURCE",
        help="caption source the others are compared with, paired over images with a "
        "bootstrap 95%% CI (default: the first final:<style>)",
    )
    ev.add_argument("--batch-size", type=int, help="samples per model batch")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(handler=run)


def _metric_names(args: argparse.Namespace, config: Any) -> list[str]:
    from factcap.metrics import metric_names

    names = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    names = names or config.evaluate.default_metrics(references=args.references is not None)
    unknown = [m for m in names if m not in metric_names()]
    if unknown:
        raise UsageError(
            f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(metric_names())}"
        )
    return names


def _warn_missing_images(samples: list[Any]) -> None:
    missing = {s.source for s in samples if not Path(s.source).is_file()}
    if missing:
        print(
            f"factcap: warning: {len(missing)} of {len({s.source for s in samples})} images not "
            f"found (e.g. {sorted(missing)[0]}); their image metrics fail. --image-root names "
            "the folder relative paths start from",
            file=sys.stderr,
        )


def _pairs(
    args: argparse.Namespace, config: Any, names: list[str], rows: list, refs: Any, images: Any
) -> tuple[list[Any], list[tuple[str, str]]]:
    """Check the judge and ``--pairwise`` before any model loads: the samples of every caption
    source (pairs need not be in --source) and the (A, B) pairs."""
    from factcap import evaluate as ev
    from factcap.errors import ConfigError

    judged = "vlm_judge" in names or args.pairwise
    if judged and not (args.judge or config.judge):
        what = "--pairwise" if args.pairwise else "the vlm_judge metric"
        raise UsageError(
            f"{what} needs a judge model: --judge SPEC (e.g. tiny:chat_vlm, "
            "openai:<vision model>) or judge: in the config"
        )
    if args.judge:
        from factcap.backends.registry import parse_spec

        parse_spec(args.judge)
    if not args.pairwise:
        return [], []
    samples = ev.build_samples(rows, "all", refs, {}, images)
    known = list(dict.fromkeys(s.caption_source for s in samples))
    try:
        pairs = ev.parse_pairs(args.pairwise, known)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    check_new_output(ev.pairwise_path(args.output), [args.results], args.overwrite)
    return samples, pairs


def _run_pairs(
    args: argparse.Namespace, samples: list[Any], pairs: list[tuple[str, str]], resources: Any
) -> dict[str, Any] | None:
    """Ask the judge about every pair, write the rows, return the summary per pair."""
    if not pairs:
        return None
    from factcap import evaluate as ev
    from factcap.metrics.pairwise import compare, summarise_pairs

    rows: list[dict[str, Any]] = []
    for a, b in pairs:
        if not args.quiet:
            print(f"factcap: comparing {a} with {b}", file=sys.stderr)
        rows.extend(compare(samples, a, b, resources))
    ev.write_pairwise(rows, ev.pairwise_path(args.output))
    return summarise_pairs(rows)


def run(args: argparse.Namespace) -> int:
    """The handler: check, read, score while writing, print the table."""
    quiet_libraries()
    from factcap import evaluate as ev
    from factcap.engine.records import ImageFinder, read_records

    overrides: dict[str, Any] = {}
    if positive("--batch-size", args.batch_size) is not None:
        overrides["evaluate"] = {"batch_size": args.batch_size}
    config = load_config(args, overrides)
    names = _metric_names(args, config)
    check_image_root(args)
    check_new_output(args.output, [args.results], args.overwrite)
    if args.output.suffix == ".parquet":
        from factcap.errors import require

        require("pyarrow", "parquet")
    rows = list(read_records(args.results, skip_torn_end=True))
    images = ImageFinder(args.results, args.image_root)
    refs = ev.read_references(args.references)
    samples = ev.build_samples(rows, args.source, refs, {}, images)
    if not samples:
        raise UsageError(
            f"{args.results} holds no captions to score (rows need id, source, captions)"
        )
    _warn_missing_images(samples)
    known = sorted({s.caption_source for s in samples})
    if args.baseline and args.baseline not in known:
        raise UsageError(f"--baseline {args.baseline!r} is not a caption source here: {known}")
    pair_samples, pairs = _pairs(args, config, names, rows, refs, images)
    resources = ev.resources_for(
        config,
        {"embedder": args.clip, "t2i": args.t2i, "vqa": args.vqa, "judge": args.judge},
    )

    from tqdm import tqdm

    sources = {s.caption_source for s in samples}
    start = time.perf_counter()
    writer = ev.ScoreWriter(args.output)
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

        try:
            result = ev.evaluate(
                samples,
                names,
                resources,
                config.evaluate.options,
                progress=step,
                on_rows=writer.write,
            )
        finally:
            summary_path = writer.close()
    summary: dict[str, Any] = dict(result.summary)
    differences = ev.significance(result, args.baseline)
    if differences is not None:
        summary["significance"] = differences
    pair_summary = _run_pairs(args, pair_samples, pairs, resources)
    if pair_summary is not None:
        summary["pairwise"] = pair_summary
    writer.close(summary)
    print(ev.table(result.summary, result.unavailable))
    if differences is not None and differences["differences"]:
        print()
        print(ev.significance_table(differences))
    if pair_summary is not None:
        from factcap.metrics.pairwise import pairwise_table

        print()
        print(pairwise_table(pair_summary))
    print(
        f"factcap: {len(samples)} captions of {len({s.id for s in samples})} images, "
        f"{len(names)} metrics in {time.perf_counter() - start:.1f} s -> {args.output}, "
        f"{summary_path}"
        + (f", {ev.pairwise_path(args.output)}" if pair_summary is not None else ""),
        file=sys.stderr,
    )
    return 0
