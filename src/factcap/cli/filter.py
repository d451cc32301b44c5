"""``factcap filter``: a thin layer over :mod:`factcap.curation.filter`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from factcap.cli.common import FORMATTER, add_image_root, add_overwrite, check_image_root

EXAMPLES = """examples:
  factcap filter out.jsonl --where "status == 'ok' and n_refuted <= 1" -o kept.jsonl
  factcap filter out.jsonl --scores scores.jsonl -o kept.jsonl --rejected rejected.jsonl \\
      --where "clip_score >= 0.28 and n_refuted <= 1 and status == 'ok'"
  factcap filter out.parquet --scores s.jsonl -o kept.parquet --where "all(vqa_score > 0.7)"
  factcap filter out.jsonl -o kept.jsonl --where "any(caption_words >= 40 and style == 'detailed')"
  factcap filter out.jsonl -o shards --format webdataset --where "n_refuted / n_claims < 0.2"

the expression (Python syntax, checked against a whitelist; never eval'ed):
  comparisons (chained too: 0.2 <= clip_score < 0.5), in / not in a list of constants
  (status in ('ok', 'error')) or text ('dog' in caption), + - * / // %, and / or / not,
  numbers, 'quoted text', True / False, and any(COND) / all(COND). Nothing else: no other
  calls, attributes, subscripts, lambdas or comprehensions.

names, per record: id, source, status, kind, error_type, n_claims, n_supported, n_refuted,
  n_uncertain, n_removed, n_proposals, n_captions, n_notes, width, height.
names, per caption: style, caption, caption_chars, caption_words, and every score value of
  SCORES (clip_score, vqa_score, ...: the final:<style> rows of factcap evaluate).
  any(COND) / all(COND) test COND on every final caption (style) of a record; elsewhere the
  per-caption names are the default caption's: --style, else the first final:<style> in
  SCORES, else each record's first caption. Proposal scores are not used.

missing values: a name a record has no value for (an error record has no scores) makes its
  comparison unknown; unknown is not true, so the record is rejected and counted apart.
  'not unknown' stays unknown; any/all of a record without captions is false.

Every record goes to exactly one of KEPT and REJECTED, in input order; the counts say how
many records each condition alone would reject."""


def add_parser(sub: Any) -> None:
    """Register ``filter`` on the top-level subparsers."""
    from factcap.engine.sinks import SINK_FORMATS

    fil = sub.add_parser(
        "filter",
        help="keep the records an expression over fields and scores is true for",
        description="Select records of factcap's output (JSONL, Parquet or WebDataset) by an "
        "expression over record fields and factcap evaluate scores; write the kept and the "
        "rejected records, and say how many records each condition rejects.",
        epilog=EXAMPLES,
        formatter_class=FORMATTER,
    )
    fil.add_argument(
        "results", type=Path, metavar="RESULTS", help="factcap caption output (.jsonl or folder)"
    )
    fil.add_argument(
        "--scores", type=Path, help="per-caption scores of factcap evaluate (JSONL or .parquet)"
    )
    fil.add_argument("--where", required=True, metavar="EXPR", help="the condition to keep by")
    fil.add_argument(
        "-o", "--output", required=True, type=Path, metavar="KEPT", help="where kept records go"
    )
    fil.add_argument("--rejected", type=Path, help="where the other records go (optional)")
    fil.add_argument(
        "--format",
        choices=SINK_FORMATS,
        help="format of both outputs (default: from each name: .jsonl, .parquet)",
    )
    fil.add_argument("--style", help="style of the default caption (see below)")
    add_overwrite(fil)
    add_image_root(fil)
    fil.add_argument("--quiet", action="store_true", help="no progress bar")
    fil.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The handler: check, filter while streaming, print the counts."""
    from tqdm import tqdm

    from factcap.curation.filter import FilterJob

    check_image_root(args)
    job = FilterJob(
        args.results,
        args.where,
        args.output,
        args.rejected,
        args.scores,
        style=args.style,
        format=args.format,
        overwrite=args.overwrite,
        image_root=args.image_root,
    )
    with tqdm(unit="rec", disable=args.quiet, desc="filtering", dynamic_ncols=True) as bar:
        stats = job.run(bar.update)
    print(stats.table())
    if stats.unmatched_scores:
        print(
            f"factcap: warning: {stats.unmatched_scores} score rows match no record of "
            f"{args.results}",
            file=sys.stderr,
        )
    where = f"{args.output}" + (f", {args.rejected}" if args.rejected else "")
    print(
        f"factcap: {stats.kept} kept, {stats.rejected} rejected of {stats.records} records "
        f"-> {where}",
        file=sys.stderr,
    )
    if stats.records == 0:
        print(f"factcap: warning: {args.results} holds no records", file=sys.stderr)
        return 1
    return 0
