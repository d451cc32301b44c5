"""``factcap study create``: a study directory from captioning results.

The caption sources are those of ``factcap evaluate`` (``final:<style>``, ``proposal:<model>``;
:func:`factcap.evaluate.build_samples` with source ``all``). With several results files, a
source may also be named ``<results name>/<source>`` (e.g. ``run2.jsonl/final:detailed``),
which is needed when two files give the same source name. An item is a record with status
``ok`` that has a caption of every compared source and whose image is found
(:class:`~factcap.engine.records.ImageFinder`; a 3D asset uses its first saved view) and
decodes as an image (:func:`factcap.images.decode`: a record may name any file, and the study
serves its images to raters); the study takes a seeded random ``items`` of them, copies their
images into ``STUDY_DIR/images`` (a browser's format under its own file ending; any other
format re-encoded as PNG) and writes ``study.json`` and ``study.sqlite`` (:mod:`.store`) with
the design of :mod:`.design`. Captions are stored without control or bidi formatting
characters (:func:`factcap.text.sanitize.display_text`).
"""

from __future__ import annotations

import random
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from factcap.engine.records import ImageFinder, read_records
from factcap.errors import ImageError, OutputError, UsageError
from factcap.images import DecodeLimits, decode
from factcap.rows import RecordRow
from factcap.study import design as study_design
from factcap.study.store import DATABASE, STUDY_JSON, StudyStore
from factcap.text.sanitize import display_text

QUESTION = "Which caption describes the image more accurately and in more detail?"
NO_VIEW = "a 3D asset without saved view files"
#: The formats every browser shows, by Pillow's name, and the file ending they are stored
#: under (the study server's media type comes from it); others are stored as PNG.
WEB_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class Candidate:
    """A record that may become an item: its id, image (or why none) and captions."""

    record_id: str
    image: Path | None = None
    missing: str = ""
    asset: bool = False
    not_media: bool = False
    """The file was found but does not decode as an image."""
    format: str | None = None
    """The image's format as decoded (Pillow's name)."""
    captions: dict[str, str] = field(default_factory=dict)


@dataclass
class Summary:
    """What ``create`` did, for the printed summary."""

    store: StudyStore
    records: int = 0
    without_sources: int = 0
    missing_image: int = 0
    asset_without_view: int = 0
    not_media: int = 0
    """Records whose file is not an image (not copied)."""
    eligible: int = 0
    items: int = 0
    real_units: int = 0
    gold_units: int = 0
    assignments: int = 0
    examples: dict[str, str] = field(default_factory=dict)


def _label(path: Path) -> str:
    return path.name


def read_candidates(
    results: Sequence[Path], image_root: Path | None
) -> tuple[dict[str, Candidate], int, dict[str, set[str]]]:
    """Every ok record of the results by id (captions merged across files), the number of
    records, and which files give each plain source name."""
    from factcap.evaluate import build_samples

    found: dict[str, Candidate] = {}
    given_by: dict[str, set[str]] = {}
    records = 0
    for path in results:
        finder = ImageFinder(path, image_root)
        rows = [r for r in read_records(path, skip_torn_end=True)]
        records += len(rows)
        by_id = {RecordRow(r).id: r for r in rows}
        for sample in build_samples(rows, "all", {}, {}):
            cand = found.get(sample.id)
            if cand is None:
                cand = found[sample.id] = Candidate(sample.id)
                _locate(cand, by_id[sample.id], finder)
            given_by.setdefault(sample.caption_source, set()).add(_label(path))
            cand.captions.setdefault(sample.caption_source, sample.caption)
            cand.captions[f"{_label(path)}/{sample.caption_source}"] = sample.caption
    return found, records, given_by


def _locate(cand: Candidate, record: dict[str, Any], finder: ImageFinder) -> None:
    row = RecordRow(record)
    media = row.media
    if media.views:  # an input of several views (a 3D asset): raters see its first view
        cand.asset = True
        views = [v for v in media.views if v.get("file")]
        if not views:
            cand.missing = NO_VIEW
            return
        where = finder.locate(str(views[0]["file"]))
    else:
        where = finder.locate(row.source or "")
    if not isinstance(where, Path):
        cand.missing = where
        return
    try:
        cand.format = decode(where, DecodeLimits()).format
    except ImageError as err:  # its kind only: the message could name content
        cand.not_media = True
        cand.missing = f"{where.name} does not decode as an image ({err.kind})"
        return
    cand.image = where


def _check_sources(sources: Sequence[str], given_by: dict[str, set[str]], labels: set[str]) -> None:
    for source in sources:
        if source in given_by:
            if len(given_by[source]) > 1:
                files = sorted(given_by[source])
                raise UsageError(
                    f"{source!r} is in {' and '.join(files)}: name it as {files[0]}/{source}"
                )
            continue
        label, _, plain = source.partition("/")
        if label in labels and plain in given_by and label in given_by[plain]:
            continue
        known = ", ".join(sorted(given_by)) or "none"
        raise UsageError(f"no caption source {source!r} in the results (they have: {known})")


def create_study(
    results: Sequence[Path],
    sources: Sequence[str],
    study_dir: Path,
    *,
    items: int | None = None,
    n_raters: int | None = None,
    raters_per_item: int = 3,
    gold_fraction: float = 0.1,
    seed: int = 0,
    image_root: Path | None = None,
    overwrite: bool = False,
) -> Summary:
    """Build the study (see the module docstring) and return what it holds."""
    n_raters = raters_per_item if n_raters is None else n_raters
    study_design.check(sources, n_raters, raters_per_item, gold_fraction)
    if items is not None and items < 1:
        raise UsageError(f"--items must be at least 1, not {items}")
    study_dir = Path(study_dir)
    if study_dir.exists() and not study_dir.is_dir():
        raise UsageError(f"{study_dir} is a file, not a study folder")
    if study_dir.exists() and any(study_dir.iterdir()):
        if not overwrite:
            raise UsageError(f"{study_dir} exists: pass --overwrite to replace it")
        if not (study_dir / STUDY_JSON).is_file() and not (study_dir / DATABASE).is_file():
            raise UsageError(f"{study_dir} holds other files than a study; not replacing it")

    found, n_records, given_by = read_candidates(results, image_root)
    _check_sources(sources, given_by, {_label(p) for p in results})
    summary_counts = {
        "without_sources": 0,
        "missing_image": 0,
        "asset_without_view": 0,
        "not_media": 0,
    }
    eligible: list[Candidate] = []
    examples: dict[str, str] = {}
    for cand in found.values():
        if not all(cand.captions.get(s, "").strip() for s in sources):
            summary_counts["without_sources"] += 1
        elif cand.image is None:
            no_view = cand.asset and cand.missing == NO_VIEW
            key = "asset_without_view" if no_view else "missing_image"
            key = "not_media" if cand.not_media else key
            summary_counts[key] += 1
            examples.setdefault(key, f"{cand.record_id}: {cand.missing}")
        else:
            eligible.append(cand)
    if not eligible:
        raise UsageError(
            f"no record of {', '.join(map(str, results))} has a caption of every source "
            f"({', '.join(sources)}) and an image that is found"
            + (f" (e.g. {next(iter(examples.values()))})" if examples else "")
        )
    chosen = list(eligible)
    if items is not None and items < len(chosen):
        chosen = random.Random(seed).sample(chosen, items)

    if study_dir.exists() and overwrite:
        shutil.rmtree(study_dir)
    images = study_dir / "images"
    study_items: list[study_design.Item] = []
    described: list[dict[str, Any]] = []
    used_ids: set[str] = set()
    try:
        images.mkdir(parents=True, exist_ok=True)
        for cand in chosen:
            item_id = _item_id(cand.record_id, used_ids)
            name = _copy_image(cand, study_dir, item_id)
            captions = {s: display_text(cand.captions[s]).strip() for s in sources}
            study_items.append(study_design.Item(item_id, name, captions))
            described.append(
                {
                    "item_id": item_id,
                    "record_id": cand.record_id,
                    "image": name,
                    "captions": captions,
                }
            )
    except OSError as err:
        raise OutputError(f"cannot write the study's images to {images}: {err}") from None

    plan = study_design.plan(study_items, sources, n_raters, raters_per_item, gold_fraction, seed)
    info = {
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "results": [str(p) for p in results],
        "sources": list(sources),
        "pairs": [list(p) for p in plan.pairs],
        "raters_per_item": raters_per_item,
        "gold_fraction": gold_fraction,
        "question": QUESTION,
        "items": described,
        "completion_code": secrets.token_hex(4).upper(),
    }
    store = StudyStore.create(study_dir, info, plan.raters)
    return Summary(
        store=store,
        records=n_records,
        eligible=len(eligible),
        items=len(chosen),
        real_units=plan.real_units,
        gold_units=plan.gold_units,
        assignments=sum(len(a) for _, a in plan.raters),
        examples=examples,
        **summary_counts,
    )


def _copy_image(cand: Candidate, study_dir: Path, item_id: str) -> str:
    """Copy a candidate's image into ``images/`` under the file ending of the format it
    decoded as (so the server's media type is the image's own), re-encoded as PNG when
    browsers do not show that format; returns its path relative to the study folder."""
    assert cand.image is not None
    ending = WEB_FORMATS.get(cand.format or "")
    if ending is not None:
        name = f"images/{item_id}{ending}"
        shutil.copyfile(cand.image, study_dir / name)
        return name
    name = f"images/{item_id}.png"
    try:
        decode(cand.image, DecodeLimits()).image.save(study_dir / name, "PNG")
    except ImageError as err:  # changed since it was checked
        raise OutputError(f"{cand.record_id}: the image no longer decodes ({err.kind})") from None
    return name


def _item_id(record_id: str, used: set[str]) -> str:
    """A file-name-safe, unique item id from a record id.

    >>> used = set()
    >>> _item_id("photos/cat 1.jpg", used), _item_id("photos/cat 1.jpg", used)
    ('photos_cat_1.jpg', 'photos_cat_1.jpg-2')
    """
    base = _SAFE.sub("_", record_id).strip("._")[:80] or "item"
    item_id, n = base, 1
    while item_id in used:
        n += 1
        item_id = f"{base}-{n}"
    used.add(item_id)
    return item_id
