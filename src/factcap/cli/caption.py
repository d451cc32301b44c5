"""``factcap caption``: a thin layer over :class:`factcap.engine.job.CaptionJob`."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

from factcap.cli.common import FORMATTER, add_model_source, load_config, positive, quiet_libraries
from factcap.errors import UsageError
from factcap.media import media_kinds

EXAMPLES = """examples:
  factcap caption photos/ -o captions.jsonl                    # tiny preset, offline smoke run
  factcap caption scenes/ -o out.jsonl --preset shapes         # the shipped shapes-world models
  factcap caption "shards-{000..099}.tar" -o out/ --format webdataset --preset small
  factcap caption photos/ -o captions.jsonl --resume           # continue after a crash
  factcap caption photos/ -o captions.jsonl --executor ray     # same job on Ray Data
  factcap caption "data/**/*.jpg" --preset small -o out.jsonl --style detailed --style alt
  factcap caption list.txt --config my.yaml -o out.jsonl --instruction "One line, no colours."
  factcap caption assets/ -o assets.jsonl --save-views views/  # 3D assets: 8 views each
  factcap caption pages.jsonl -o out.jsonl --style detailed --style fused  # + the alt_text column
  factcap caption photos/ -o out.jsonl --rank-by clip_score --keep-top 2   # fuse the 2 best drafts
  factcap caption photos/ -o out.jsonl --question "How many people are in the photo?"
  factcap caption photos/ -o out.jsonl --preset small --memory low  # one model in memory at a time

inputs (any mix, streamed): image files; 3D assets (.glb, .gltf, .obj, .ply, .stl, .off;
pip install 'factcap[3d]'), captioned through rendered views; directories (recursive, with
the tar shards and Parquet files inside them); globs ("data/**/*.jpg"); brace patterns
("s-{000..009}.tar");
.txt / .jsonl / .csv / .tsv manifests; WebDataset tar shards (.tar, .tar.gz, .tgz); Parquet
files (--image-column, --id-column); Hugging Face datasets saved with save_to_disk (--split).

exit status: 0 every input written got an ok record; 1 some failed, or there was nothing to
do; 2 a usage or configuration mistake; 3 the output could not be written."""


def add_parser(sub: Any) -> None:
    """Register ``caption`` on the top-level subparsers."""
    from factcap.engine.sinks import SINK_FORMATS
    from factcap.prompts.style import selectable, shipped_styles

    styles = shipped_styles()
    cap = sub.add_parser(
        "caption",
        help="caption images: propose, fact-check, compose",
        description="Caption images with several models, check the claims against the image "
        "and write one JSON record per input.",
        epilog=EXAMPLES,
        formatter_class=FORMATTER,
    )
    cap.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, directories, globs, manifests, tar shards, Parquet files or saved "
        "datasets (see below)",
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
        choices=SINK_FORMATS,
        help="output format (default: from the name of -o)",
    )
    cap.add_argument("--shard-size", type=int, help="records per Parquet / WebDataset shard")
    existing = cap.add_mutually_exclusive_group()
    existing.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted job: skip inputs the output already holds",
    )
    existing.add_argument(
        "--retry-failed",
        action="store_true",
        help="like --resume, and redo the inputs whose record is an error (JSONL)",
    )
    existing.add_argument("--overwrite", action="store_true", help="replace an existing output")
    cap.add_argument("--image-column", help="Parquet / datasets / CSV column holding the images")
    cap.add_argument("--id-column", help="Parquet / datasets / CSV column holding the ids")
    cap.add_argument("--split", help="split of a saved Hugging Face dataset (default: all)")
    add_model_source(cap)
    cap.add_argument(
        "--style",
        action="append",
        dest="styles",
        metavar="STYLE",
        help="caption style; repeat for several (default: detailed). Shipped: "
        + ", ".join(f"{n} ({styles[n].description})" for n in selectable(styles))
        + "; a config's custom_styles add more",
    )
    cap.add_argument("--instruction", help="a free instruction for one more caption")
    cap.add_argument("--batch-size", type=int, help="images per batch")
    cap.add_argument("--device", help="cpu, cuda, cuda:1, mps or auto")
    cap.add_argument(
        "--workers", type=int, help="batches in the model stages at once (local executor)"
    )
    cap.add_argument(
        "--memory",
        choices=("normal", "low"),
        help="low: one model in memory at a time, each stage run over --chunk items with the "
        "items kept on disk between stages (slower; same records); default normal",
    )
    cap.add_argument(
        "--chunk",
        type=int,
        metavar="N",
        help="items per round of stages with --memory low (default 128)",
    )
    cap.add_argument(
        "--no-memory-check",
        action="store_true",
        help="load the models even where they would not fit this machine's memory "
        "(config: memory: {check: false}); 'factcap models check' shows what each mode needs",
    )
    cap.add_argument(
        "--no-verify",
        action="store_true",
        help="skip fact-checking (compose from the proposals alone)",
    )
    cap.add_argument(
        "--no-corrections",
        action="store_true",
        help="one question per claim and refuted values deleted, not corrected (no attribute "
        "alternatives)",
    )
    cap.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: pipelined threads in this process (default); ray: Ray Data, one actor "
        "pool per model (pip install 'factcap[ray]')",
    )
    cap.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to run on, with --executor ray (default: $RAY_ADDRESS, else the "
        "cluster 'ray start' last started here, else a new local Ray instance)",
    )
    for kind in media_kinds().values():
        kind.add_arguments(cap)
    cap.add_argument(
        "--alt-text-field",
        metavar="NAME",
        help="where the input's web alt-text is: a manifest / Parquet column, a tar member's "
        "extension (txt) or a key of its .json member; it becomes one more proposal whose "
        "claims are checked (default: alt_text, when present)",
    )
    cap.add_argument(
        "--no-alt-text", action="store_true", help="ignore alt-text even when the input has it"
    )
    cap.add_argument(
        "--rank-by",
        choices=("clip_score", "vqa_score"),
        help="score every proposal against the image (embedder or VQA model) before claims "
        "are extracted; only the best go on (with --keep-top / --min-score)",
    )
    cap.add_argument("--keep-top", type=int, metavar="K", help="with --rank-by: keep the K best")
    cap.add_argument(
        "--min-score",
        type=float,
        metavar="X",
        help="with --rank-by: keep proposals scoring at least X (the best one always stays)",
    )
    cap.add_argument(
        "--regions",
        action="store_true",
        help="also caption each detected object's region, relate the regions, and write the "
        "caption graph (record fields regions and graph; config key regions)",
    )
    cap.add_argument(
        "--question",
        metavar="TEXT",
        help="a question asked of every image: adds the question style (a caption that "
        "answers it), a question-guided proposal from each captioner that takes a prompt, "
        "and the checked record fields question and answer (an item's own --question-field "
        "wins; config key question)",
    )
    cap.add_argument(
        "--question-field",
        metavar="NAME",
        help="where an item's own question is: a manifest / Parquet column, a tar member's "
        "extension or a key of its .json member (default: none)",
    )
    cap.add_argument("--quiet", action="store_true", help="no progress bar")
    cap.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """The handler: check everything, load the models, run the job, print the summary."""
    started = time.perf_counter()
    quiet_libraries()
    from factcap.engine.job import CaptionJob, JobSpec
    from factcap.pipeline import Pipeline

    overrides: dict[str, Any] = {}
    for key, value in (
        ("styles", args.styles),
        ("instruction", args.instruction),
        ("batch_size", positive("--batch-size", args.batch_size)),
        ("device", args.device),
        ("workers", positive("--workers", args.workers)),
    ):
        if value is not None:
            overrides[key] = value
    if args.no_verify and args.no_corrections:
        raise UsageError("--no-verify checks nothing: --no-corrections has nothing to switch off")
    if args.no_verify:
        overrides["verify"] = {"enabled": False}
    if args.no_corrections:
        overrides["verify"] = {"alternatives": False, "corrections": False}
    memory = {
        key: value
        for key, value in (
            ("mode", args.memory),
            ("chunk", positive("--chunk", args.chunk)),
            ("check", False if args.no_memory_check else None),
        )
        if value is not None
    }
    if memory:
        overrides["memory"] = memory
    for kind in media_kinds().values():
        if settings := kind.option_settings(args):
            overrides[kind.config_key] = settings
    if args.no_alt_text and args.alt_text_field:
        raise UsageError("--no-alt-text and --alt-text-field exclude each other")
    if args.no_alt_text or args.alt_text_field:
        overrides["alt_text"] = {"field": None if args.no_alt_text else args.alt_text_field}
    ranking = {
        key: value
        for key, value in (
            ("rank_by", args.rank_by),
            ("keep_top", positive("--keep-top", args.keep_top)),
            ("min_score", args.min_score),
        )
        if value is not None
    }
    if ranking and "rank_by" not in ranking:
        raise UsageError("--keep-top and --min-score need --rank-by clip_score|vqa_score")
    if ranking:
        overrides["proposals"] = ranking
    if args.regions:
        overrides["regions"] = {"enabled": True}
    question = {
        key: value
        for key, value in (("text", args.question), ("field", args.question_field))
        if value is not None
    }
    for key, option in (("text", "--question"), ("field", "--question-field")):
        if key in question and not question[key].strip():
            raise UsageError(f"{option} is empty: give the question (or leave {option} out)")
    if question:
        overrides["question"] = question
    config = load_config(args, overrides)
    spec = JobSpec(
        inputs=args.inputs,
        output=args.output,
        format=args.format,
        shard_size=args.shard_size,
        resume=args.resume,
        retry_failed=args.retry_failed,
        overwrite=args.overwrite,
        executor=args.executor,
        ray_address=args.ray_address,
        image_column=args.image_column,
        id_column=args.id_column,
        split=args.split,
    )
    job = CaptionJob(spec, config)  # every check that needs no model, before any loads
    if not args.quiet:
        print(f"factcap: loading the models of {_model_source(args)} ...", file=sys.stderr)
    pipeline = Pipeline(config)
    with _Progress(spec, quiet=args.quiet) as progress:
        if args.executor == "local" and config.memory.mode == "low":
            progress.stage("loading the first chunk (models load one at a time)")
        elif args.executor == "local":
            progress.stage("loading models")
            pipeline.load()  # model errors surface before the output is touched
            progress.stage("captioning the first batch")
        else:
            progress.stage("starting Ray, loading models in its actors")
        loaded = time.perf_counter() - started
        result = job.run(pipeline, on_record=progress.advance, on_skip=progress.advance)
    if args.executor == "local" and config.memory.mode == "normal":
        result.load_seconds = loaded
    print(f"factcap: {result.summary()}", file=sys.stderr)
    if result.written == 0 and result.skipped == 0:
        print("factcap: warning: the inputs held no images; nothing was captioned", file=sys.stderr)
    return result.exit_code


def _model_source(args: argparse.Namespace) -> str:
    """Where the models come from, as the first line says it."""
    if args.config is not None:
        return f"config {args.config}"
    return f"preset {args.preset or 'tiny'}"


class _Progress:
    """The progress bar of a caption job: shown at once, saying what it waits for until the
    first record (loading models, the first batch), with a total as soon as the inputs are
    counted (:func:`~factcap.engine.sources.count_items`, in a thread, for inputs that can be
    counted without reading them); inputs an output already holds advance it too."""

    def __init__(self, spec: Any, quiet: bool) -> None:
        from tqdm import tqdm

        self.spec, self.lock, self.waiting, self.closed = spec, threading.Lock(), True, False
        self.bar = tqdm(unit="img", disable=quiet, desc="captioning", dynamic_ncols=True)
        self.counter = threading.Thread(target=self._count, name="factcap-count", daemon=True)
        self.counter.start()

    def _count(self) -> None:
        from factcap.engine.sources import count_items

        spec = self.spec
        total = count_items(
            spec.inputs, image_column=spec.image_column, id_column=spec.id_column, split=spec.split
        )
        with self.lock:
            if total is not None and not self.closed:
                self.bar.total = total
                self.bar.refresh()

    def stage(self, what: str) -> None:
        """Say on the bar what the job waits for before its first record."""
        with self.lock:
            self.bar.set_postfix_str(what)

    def advance(self, _: Any) -> None:
        """One input done: a record written, or one the output already held."""
        with self.lock:
            if self.waiting:
                self.waiting = False
                self.bar.set_postfix_str("", refresh=False)
            self.bar.update(1)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lock:  # a count still running is not waited for: it only missed the bar
            self.closed = True
            self.bar.close()
