"""``factcap report``: a thin layer over :mod:`factcap.report`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from factcap.cli.common import (
    FORMATTER,
    add_image_root,
    add_overwrite,
    check_image_root,
    check_new_output,
)
from factcap.errors import UsageError

EXAMPLES = """examples:
  factcap report captions.jsonl -o report.html
  factcap report out.parquet --scores scores.jsonl -o report.html --thumb-px 320
  factcap report /mnt/results/captions.jsonl -o report.html --image-root /mnt/photos
  factcap report captions.jsonl -o report.html --study study1      # with the human study"""


def add_parser(sub: Any) -> None:
    """Register ``report`` on the top-level subparsers."""
    rep = sub.add_parser(
        "report",
        help="one self-contained HTML page: images, captions, claims, boxes, scores",
        description="Write a static HTML report of factcap's output (JSONL, Parquet or "
        "WebDataset) that opens offline in any browser (images embedded as thumbnails, no "
        "network).",
        epilog=EXAMPLES,
        formatter_class=FORMATTER,
    )
    rep.add_argument(
        "results", type=Path, metavar="RESULTS", help="factcap caption output (.jsonl or folder)"
    )
    rep.add_argument(
        "--scores", type=Path, help="per-caption scores of factcap evaluate (JSONL or .parquet)"
    )
    rep.add_argument(
        "--study",
        type=Path,
        help="a human study's folder (factcap study create) or its results JSON: show its table",
    )
    rep.add_argument("-o", "--output", required=True, type=Path, help="HTML file to write")
    add_overwrite(rep)
    rep.add_argument(
        "--thumb-px", type=int, default=256, help="longest side of thumbnails (16-4096)"
    )
    add_image_root(rep)
    rep.set_defaults(handler=run)


def _study_results(path: Path) -> dict[str, Any]:
    """The results of a study folder (computed now), or of a ``study results -o`` JSON."""
    if path.is_dir():
        from factcap.study import results
        from factcap.study.store import StudyStore

        return results.compute(StudyStore.open(path))
    import json

    from factcap.errors import DataError, NotFound

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"--study {path}: no such folder or file") from None
    except (OSError, ValueError) as err:
        raise DataError(f"--study {path} is not a study results JSON ({err})") from None
    if not isinstance(value, dict) or "pairs" not in value:
        raise DataError(f"--study {path} is not a study results JSON (no 'pairs')")
    return value


def run(args: argparse.Namespace) -> int:
    """The handler: check the options and the output, write the page, say what is in it."""
    from factcap.report import write_report

    if not 16 <= args.thumb_px <= 4096:
        raise UsageError(f"--thumb-px must be from 16 to 4096, not {args.thumb_px}")
    check_image_root(args)
    inputs = [args.results] + ([args.scores] if args.scores else [])
    check_new_output(args.output, inputs, args.overwrite)
    if args.output.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"-o {args.output}: the report is an HTML file; name it .html")
    study_path = getattr(args, "study", None)  # None when called with a hand-made Namespace
    study = _study_results(study_path) if study_path else None
    out, stats = write_report(
        args.results,
        args.scores,
        args.output,
        args.thumb_px,
        args.image_root,
        confine=False,
        study=study,
    )
    print(
        f"factcap: report of {stats.records} records ({stats.errors} errors, "
        f"{stats.thumbnails} images, "
        + ", ".join(f"{n} {v}" for v, n in stats.verdicts.items())
        + f" claims, {stats.score_rows} score rows) -> {out} ({stats.bytes / 1e6:.1f} MB)",
        file=sys.stderr,
    )
    if stats.records and stats.thumbnails < stats.records - stats.errors:
        print(
            f"factcap: warning: {stats.records - stats.errors - stats.thumbnails} images were "
            "not found; --image-root names the folder relative paths start from",
            file=sys.stderr,
        )
    return 0
