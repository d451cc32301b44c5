"""``factcap study``: a human study comparing caption sources (create, serve, export-crowd,
import-crowd, results); a thin layer over :mod:`factcap.study`."""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Any

from factcap.cli.common import FORMATTER, add_image_root, add_overwrite, check_image_root
from factcap.errors import OutputError, UsageError

DEFAULT_BASE_URL = "http://127.0.0.1:8300"

EXAMPLES = """examples:
  factcap study create out.jsonl --compare final:detailed,proposal:tiny:blip -o study1 \\
      --items 100 --raters-per-item 3 --raters 6 --base-url http://study.example.org:8300
  FACTCAP_API_KEY=secret factcap study serve study1 --host 0.0.0.0   # raters open their links
  factcap study results study1                                      # win/tie/loss with 95% CIs
  factcap study results study1 -o results.json --gold-threshold 0.75
  factcap study export-crowd study1 --platform mturk -o hits.csv --base-url https://host/study1
  factcap study import-crowd study1 Batch_123_batch_results.csv --platform mturk
  factcap study export-crowd study1 --platform prolific -o prolific.csv --base-url https://host
  factcap study import-crowd study1 prolific_export.csv --platform prolific"""


def add_parser(sub: Any) -> None:
    """Register ``study`` and its subcommands on the top-level subparsers."""
    study = sub.add_parser(
        "study",
        help="a human study: people compare two captions of an image",
        description="Run a human study of caption sources: build balanced pair assignments "
        "with attention checks, serve the rater page, or go through Mechanical Turk or "
        "Prolific, and compute win rates with confidence intervals.",
        epilog=EXAMPLES,
        formatter_class=FORMATTER,
    )
    study.set_defaults(handler=lambda args: _usage(study))
    commands = study.add_subparsers(dest="study_command", metavar="SUBCOMMAND")
    for add in (_add_create, _add_serve, _add_export, _add_import, _add_results):
        add(commands)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _add_create(commands: Any) -> None:
    p = commands.add_parser(
        "create",
        help="build a study folder from captioning results",
        description="Build STUDY_DIR: items (records with every compared source and an image), "
        "balanced pair assignments (each comparison judged by K distinct raters, loads "
        "within 1, sides random, order shuffled per rater) and gold items (an image's own "
        "caption against another image's). Prints the rater links and writes raters.csv.",
        formatter_class=FORMATTER,
        epilog="Caption sources are those of 'factcap evaluate --source all': final:<style>, "
        "proposal:<model>; with several RESULTS, <results file name>/<source> names one "
        "file's.",
    )
    p.add_argument("results", type=Path, nargs="+", metavar="RESULTS", help="factcap output(s)")
    p.add_argument("--compare", required=True, help="caption sources, comma-separated: A,B[,C]")
    p.add_argument("-o", "--output", required=True, type=Path, help="the study folder to make")
    p.add_argument("--items", type=int, help="a random subset of this many items (default: all)")
    p.add_argument("--raters-per-item", type=int, default=3, help="K raters per comparison")
    p.add_argument("--raters", type=int, help="rater links to make (default: K)")
    p.add_argument(
        "--gold-fraction", type=float, default=0.1, help="share of attention checks (0-0.5)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the item choice and design")
    p.add_argument("--base-url", default=DEFAULT_BASE_URL, help="where the study will be served")
    add_image_root(p)
    add_overwrite(p)
    p.set_defaults(handler=run_create)


def _add_serve(commands: Any) -> None:
    p = commands.add_parser(
        "serve",
        help="serve the rater page and the admin page",
        description="Serve the study: raters open /r/<token>; /admin shows progress per "
        "rater (set FACTCAP_API_KEY, or --api-key, to guard it; needed off loopback).",
        formatter_class=FORMATTER,
    )
    p.add_argument("study_dir", type=Path, metavar="STUDY_DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8300, help="port, 1-65535 (default 8300)")
    p.add_argument("--api-key", help="admin key (default: the FACTCAP_API_KEY variable)")
    p.set_defaults(handler=run_serve)


def _add_export(commands: Any) -> None:
    p = commands.add_parser(
        "export-crowd",
        help="the CSV a crowd platform takes (MTurk HITs, Prolific study URL)",
        description="mturk: the batch input CSV (one HIT per comparison; image_url is "
        "<base-url>/images/<file>, so publish STUDY_DIR/images there) and mturk_layout.html "
        "beside it. prolific: the study URL and completion code (a one-row CSV).",
        formatter_class=FORMATTER,
    )
    p.add_argument("study_dir", type=Path, metavar="STUDY_DIR")
    p.add_argument("--platform", choices=("mturk", "prolific"), default="mturk")
    p.add_argument("-o", "--output", required=True, type=Path, help="the CSV to write")
    p.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help="mturk: where STUDY_DIR's images are published; prolific: the study server",
    )
    add_overwrite(p)
    p.set_defaults(handler=run_export)


def _add_import(commands: Any) -> None:
    p = commands.add_parser(
        "import-crowd",
        help="read a crowd platform's results CSV into the study",
        description="mturk: the batch results CSV (each worker becomes a rater, each "
        "answer a vote; rejected assignments skipped). prolific: the participant export "
        "(RETURNED, REJECTED and TIMED-OUT participants' votes are excluded).",
        formatter_class=FORMATTER,
    )
    p.add_argument("study_dir", type=Path, metavar="STUDY_DIR")
    p.add_argument("csv", type=Path, metavar="RESULTS_CSV")
    p.add_argument("--platform", choices=("mturk", "prolific"), default="mturk")
    p.set_defaults(handler=run_import)


def _add_results(commands: Any) -> None:
    p = commands.add_parser(
        "results",
        help="win/tie/loss per pair with 95%% CIs, Bradley-Terry, agreement",
        description="Per source pair: wins, ties and losses with 95%% intervals (bootstrap "
        "over items); Bradley-Terry strengths when 3+ sources; Krippendorff's alpha; raters "
        "excluded for failing gold items.",
        formatter_class=FORMATTER,
    )
    p.add_argument("study_dir", type=Path, metavar="STUDY_DIR")
    p.add_argument(
        "--gold-threshold",
        type=float,
        default=0.8,
        help="exclude raters whose gold accuracy is below this (default 0.8)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("-o", "--output", type=Path, help="also write the JSON here")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    add_overwrite(p)
    p.set_defaults(handler=run_results)


def _check_new_file(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists: pass --overwrite to replace it")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; name a file")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent} is not a folder")


def run_create(args: argparse.Namespace) -> int:
    """The handler of ``study create``."""
    from factcap.study.build import create_study

    sources = [s.strip() for s in args.compare.split(",") if s.strip()]
    check_image_root(args)
    summary = create_study(
        args.results,
        sources,
        args.output,
        items=args.items,
        n_raters=args.raters,
        raters_per_item=args.raters_per_item,
        gold_fraction=args.gold_fraction,
        seed=args.seed,
        image_root=args.image_root,
        overwrite=args.overwrite,
    )
    base = args.base_url.rstrip("/")
    raters = summary.store.raters()
    rows = [(r.label, r.token, f"{base}/r/{r.token}") for r in raters]
    try:
        with (args.output / "raters.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(("label", "token", "url"))
            writer.writerows(rows)
    except OSError as err:
        raise OutputError(f"cannot write {args.output / 'raters.csv'}: {err}") from None
    for label, _, url in rows:
        print(f"{label}  {url}")
    skipped = []
    if summary.without_sources:
        skipped.append(f"{summary.without_sources} without every compared source")
    if summary.missing_image:
        skipped.append(f"{summary.missing_image} whose image was not found")
    if summary.asset_without_view:
        skipped.append(f"{summary.asset_without_view} 3D assets without a saved view")
    if summary.not_media:
        skipped.append(f"{summary.not_media} whose file is not an image")
    print(
        f"factcap: study {args.output}: {summary.items} items (of {summary.eligible} usable, "
        f"{summary.records} records"
        + (f"; skipped {', '.join(skipped)}" if skipped else "")
        + f"), {summary.real_units} comparisons + {summary.gold_units} gold, "
        f"{args.raters_per_item} raters each -> {summary.assignments} assignments for "
        f"{len(raters)} raters; links in {args.output / 'raters.csv'}",
        file=sys.stderr,
    )
    for example in summary.examples.values():
        print(f"factcap: e.g. {example}", file=sys.stderr)
    return 0


#: Rater links ``study serve`` prints at most (every one is in ``raters.csv`` and on /admin).
LINKS_SHOWN = 20


def served_links(store: Any, host: str, port: int, api_key: bool) -> list[str]:
    """The lines ``study serve`` prints on start: the study's address, the admin page and
    each rater's link (the first :data:`LINKS_SHOWN`). The API key itself is never printed.

    >>> from types import SimpleNamespace as S
    >>> store = S(dir="s1", raters=lambda: [S(label="r01", token="tok", external_id=None)])
    >>> print("\\n".join(served_links(store, "0.0.0.0", 8300, api_key=True)))
    factcap: serving study s1 on all addresses, port 8300, e.g. http://127.0.0.1:8300
      admin: http://127.0.0.1:8300/admin?key=<your API key>
      r01: http://127.0.0.1:8300/r/tok
    """
    wildcard = host in ("", "0.0.0.0", "::")
    shown = "127.0.0.1" if wildcard else host
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{port}"
    where = f"on all addresses, port {port}, e.g. {base}" if wildcard else f"at {base}"
    lines = [
        f"factcap: serving study {store.dir} {where}",
        f"  admin: {base}/admin" + ("?key=<your API key>" if api_key else ""),
    ]
    raters = store.raters()
    for rater in raters[:LINKS_SHOWN]:
        who = rater.label + (f" ({rater.external_id})" if rater.external_id else "")
        lines.append(f"  {who}: {base}/r/{rater.token}")
    if len(raters) > LINKS_SHOWN:
        lines.append(
            f"  ... and {len(raters) - LINKS_SHOWN} more raters: every link is on the admin page"
        )
    return lines


def run_serve(args: argparse.Namespace) -> int:
    """The handler of ``study serve``: prints the admin and rater links, then serves."""
    from factcap.study.store import StudyStore

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be from 1 to 65535, not {args.port}")
    store = StudyStore.open(args.study_dir)
    api_key = args.api_key or os.environ.get("FACTCAP_API_KEY") or None
    from factcap.access import check_exposure
    from factcap.study.server import run

    check_exposure(args.host, api_key)  # refused before any link is printed
    for line in served_links(store, args.host, args.port, api_key is not None):
        print(line, file=sys.stderr)
    run(args.study_dir, host=args.host, port=args.port, api_key=api_key)
    return 0


def run_export(args: argparse.Namespace) -> int:
    """The handler of ``study export-crowd``."""
    from factcap.study import crowd
    from factcap.study.store import StudyStore

    store = StudyStore.open(args.study_dir)
    _check_new_file(args.output, args.overwrite)
    if args.platform == "mturk":
        layout = args.output.with_name(crowd.LAYOUT_NAME)
        _check_new_file(layout, args.overwrite)
        count, layout = crowd.export_mturk(store, args.output, args.base_url)
        k = store.info.get("raters_per_item", 3)
        print(
            f"factcap: {count} HITs -> {args.output}; layout -> {layout}\n"
            f"  1. publish {args.study_dir / 'images'} so that {args.base_url.rstrip('/')}"
            "/images/<file> serves each file\n"
            f"  2. in MTurk, create a project; paste {layout.name} as its layout (Source); set "
            f"'number of assignments per task' to {k}\n"
            f"  3. publish a batch with {args.output.name}; when done, download the batch "
            "results CSV and run: factcap study import-crowd "
            f"{args.study_dir} Batch_..._results.csv --platform mturk",
            file=sys.stderr,
        )
    else:
        row = crowd.export_prolific(store, args.output, args.base_url)
        print(
            f"factcap: Prolific settings -> {args.output}\n"
            f"  study URL (paste into Prolific; choose 'I'll use URL parameters'):\n"
            f"    {row['study_url']}\n"
            f"  completion code (the page shows it at the end): {row['completion_code']}\n"
            f"  places: {row['places']} free rater slots (set Prolific's places to at most "
            "this)\n"
            f"  serve it: factcap study serve {args.study_dir} --host 0.0.0.0 (behind HTTPS)\n"
            f"  afterwards: factcap study import-crowd {args.study_dir} prolific_export.csv "
            "--platform prolific",
            file=sys.stderr,
        )
    return 0


def run_import(args: argparse.Namespace) -> int:
    """The handler of ``study import-crowd``."""
    from factcap.study import crowd
    from factcap.study.store import StudyStore

    store = StudyStore.open(args.study_dir)
    if args.platform == "mturk":
        s = crowd.import_mturk(store, args.csv)
        print(
            f"factcap: {s.rows} rows: {s.votes} votes recorded from {len(s.workers)} workers, "
            f"{s.repeats} already recorded, {s.rejected} rejected skipped",
            file=sys.stderr,
        )
    else:
        s = crowd.import_prolific(store, args.csv)
        statuses = ", ".join(f"{n} {k}" for k, n in sorted(s.by_status.items()))
        print(
            f"factcap: {s.rows} participants ({statuses}): {s.excluded} excluded, "
            f"{s.unknown} never opened the study",
            file=sys.stderr,
        )
    return 0


def run_results(args: argparse.Namespace) -> int:
    """The handler of ``study results``."""
    from factcap.study import results
    from factcap.study.store import StudyStore

    if not 0.0 <= args.gold_threshold <= 1.0:
        raise UsageError(f"--gold-threshold must be from 0 to 1, not {args.gold_threshold}")
    if args.output is not None:
        _check_new_file(args.output, args.overwrite)
    store = StudyStore.open(args.study_dir)
    found = results.compute(store, gold_threshold=args.gold_threshold, seed=args.seed)
    text = results.to_json(found)
    if args.output is not None:
        try:
            args.output.write_text(text + "\n", encoding="utf-8")
        except OSError as err:
            raise OutputError(f"cannot write {args.output}: {err.strerror or err}") from None
    print(text if args.json else results.table(found))
    return 0
