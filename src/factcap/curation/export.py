"""``factcap export``: captioned records as training data, in the layouts other tools read.

:data:`EXPORTERS` holds one :class:`Exporter` per format: a writer function and what it
takes. Adding a format is a writer (``def write_x(items, context)``) and its line in the
table; :class:`ExportJob` does the rest (reading, choosing records and styles, finding,
checking and placing images, temporary output renamed into place, the counts).

README: "Curation: alt-text, ranking, filter, export" has each format's layout, which records
and styles go, where images are placed, and why only files that decode as images leave (a
3D asset as its saved views).

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> _ = (d / "out.jsonl").write_text(
...     '{"id": "a", "source": "cat.jpg", "captions": {"short": "A cat."}}\\n')
>>> stats = ExportJob(d / "out.jsonl", "coco", d / "captions.json").run()
>>> json.loads((d / "captions.json").read_text())["annotations"]
[{'id': 1, 'image_id': 1, 'caption': 'A cat.', 'style': 'short'}]
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcap import __version__
from factcap.engine.records import ImageFinder, read_records
from factcap.errors import ImageError, OutputError, UsageError, require
from factcap.images import DecodeLimits, decode
from factcap.prompts.style import description_kind
from factcap.rows import RecordRow
from factcap.text.sanitize import one_line

#: The file every exported folder holds (what made it); ``overwrite`` replaces only such
#: folders (or empty ones).
MARKER = ".factcap-export.json"
DEFAULT_PROMPT = "Describe this image in detail."
IMAGE_MODES = ("copy", "link", "none")


@dataclass
class Item:
    """One record on its way out."""

    record: dict[str, Any]
    id: str
    source: str
    status: str
    captions: dict[str, str]
    """Chosen style → caption (``prefix`` added), for the styles the record has."""
    image: Path | None
    """The image file found (None: not found, or not looked for)."""
    name: str
    """The exported image's file name (unique within the export when images are placed)."""
    placed: Path | None
    """Where the copy or link will be once the export is complete (None: not placed)."""
    size: tuple[int, int] | None
    """(width, height) from the record, else from the image file's header."""
    file: str = ""
    """The image file as the record names it (``source``, or a 3D asset's view ``file``)."""
    data: bytes | None = None
    """The image file's bytes, read once and decoded (copied and embedded images)."""
    view: int | None = None
    """A 3D asset's view index (the item is that view's saved image); None for a photo."""

    @property
    def row(self) -> RecordRow:
        """The record, read field by field."""
        return RecordRow(self.record)


@dataclass
class ExportStats:
    """What an export did."""

    format: str
    output: Path
    styles: list[str] = field(default_factory=list)
    records: int = 0
    exported: int = 0
    """Records written (an image, a row, or entries)."""
    captions: int = 0
    """Captions written (annotations, conversations, .txt files, cells)."""
    skipped_status: int = 0
    no_image: int = 0
    """Left out: the image was needed but not found."""
    no_caption: int = 0
    """Records without any chosen style (left out by llava and folder)."""
    no_graph: int = 0
    """Records without a caption graph (``gbc``: exported as the image vertex alone)."""
    not_media: int = 0
    """Left out: the file was needed but does not decode as an image (it is not copied,
    linked or embedded)."""
    not_media_example: str = ""
    """One of them: ``id: path: why`` (never the file's content)."""
    assets: int = 0
    """3D assets exported (as their saved views)."""
    views: int = 0
    """Rendered views written for those assets (one entry each)."""
    no_views: int = 0
    """Left out: 3D assets whose views were not saved (``caption --save-views``)."""
    images: Path | None = None
    """The folder the images went to (None: not copied or linked)."""

    def summary(self) -> str:
        """One line for the terminal."""
        styles = ", ".join(self.styles) or "no styles"
        parts = [f"{self.exported} of {self.records} records, {self.captions} captions ({styles})"]
        if self.skipped_status:
            parts.append(f"{self.skipped_status} skipped by status")
        if self.no_caption:
            parts.append(f"{self.no_caption} without a chosen caption")
        if self.no_image:
            parts.append(f"{self.no_image} without an image file")
        if self.not_media:
            parts.append(
                f"{self.not_media} whose file is not an image (left out; e.g. "
                f"{self.not_media_example})"
            )
        if self.assets:
            parts.append(f"{self.assets} 3D assets as {self.views} rendered views")
        if self.no_views:
            parts.append(
                f"{self.no_views} 3D assets without saved views (left out; caption "
                "--save-views DIR saves them)"
            )
        if self.no_graph:
            parts.append(f"{self.no_graph} without a graph (image vertex only; caption --regions)")
        where = f"{self.output}" + (f" (images in {self.images})" if self.images else "")
        return f"{self.format}: " + ", ".join(parts) + f" -> {where}"


@dataclass
class Context:
    """What a writer needs besides the items."""

    path: Path
    """Where to write: the output file, or the output folder (already made), under a
    temporary name renamed into place when the export is complete."""
    final: Path
    """The output's final path."""
    styles: list[str]
    images: str
    """``copy``, ``link`` or ``none``."""
    image_dir: Path | None
    """The final folder of placed images (None when not placed)."""
    prompt: str
    scratch: Path
    """A temporary folder the writer may use (removed afterwards)."""
    stats: ExportStats


Writer = Callable[[Iterator[Item], Context], None]


@dataclass(frozen=True)
class Exporter:
    """A format: its writer and what it takes."""

    write: Writer
    target: str
    """``file`` or ``folder``."""
    suffix: str | None
    """The file ending ``-o`` must have (file targets)."""
    images: tuple[str, ...]
    """The ``--images`` modes it takes; the first is its default. An empty tuple: the images
    are embedded (``hf``)."""
    description: str
    one_style: bool = False
    """Whether it takes one style only (the first chosen)."""


# --- the writers ------------------------------------------------------------------------------


def _image_ref(item: Item, context: Context, relative_to: Path | None) -> str:
    """How an output names its item's image: the placed file (relative to ``relative_to``,
    else its name), else the found file, else the source as written."""
    if item.placed is not None:
        if relative_to is None:
            return item.name
        return os.path.relpath(item.placed, relative_to)
    return str(item.image) if item.image is not None else (item.file or item.source)


def write_coco(items: Iterator[Item], context: Context) -> None:
    """COCO captions JSON (see the module docstring); annotations are spooled to a scratch
    file so the images list streams too."""
    spool_path = context.scratch / "annotations.jsonl"
    annotation = 0
    with (
        context.path.open("w", encoding="utf-8") as out,
        spool_path.open("w+", encoding="utf-8") as spool,
    ):
        info = {
            "description": "captions written and fact-checked by factcap",
            "version": __version__,
            "date_created": _dt.date.today().isoformat(),
            "styles": context.styles,
        }
        out.write('{"info": ' + json.dumps(info) + ', "licenses": [], "images": [')
        for number, item in enumerate(items, 1):
            image: dict[str, Any] = {"id": number, "file_name": item.name}
            if item.size is not None:
                image["width"], image["height"] = item.size
            image["factcap_id"] = item.id
            out.write(("\n" if number == 1 else ",\n") + json.dumps(image, ensure_ascii=False))
            for style, text in item.captions.items():
                annotation += 1
                row = {"id": annotation, "image_id": number, "caption": text, "style": style}
                spool.write(json.dumps(row, ensure_ascii=False) + "\n")
        context.stats.captions += annotation
        out.write('\n], "annotations": [')
        spool.seek(0)
        for index, line in enumerate(spool):
            out.write(("\n" if index == 0 else ",\n") + line.rstrip("\n"))
        out.write("\n]}\n")


def write_llava(items: Iterator[Item], context: Context) -> None:
    """LLaVA conversation JSON (see the module docstring)."""
    prompt = context.prompt if "<image>" in context.prompt else "<image>\n" + context.prompt
    several = len(context.styles) > 1
    first = True
    with context.path.open("w", encoding="utf-8") as out:
        out.write("[")
        for item in items:
            if not item.captions:
                continue
            for style, text in item.captions.items():
                entry = {
                    "id": f"{item.id}-{style}" if several else item.id,
                    "image": _image_ref(item, context, None),
                    "conversations": [
                        {"from": "human", "value": prompt},
                        {"from": "gpt", "value": text},
                    ],
                }
                out.write(("\n" if first else ",\n") + json.dumps(entry, ensure_ascii=False))
                first = False
                context.stats.captions += 1
        out.write("\n]\n")


def write_csv(items: Iterator[Item], context: Context) -> None:
    """CSV: id, file_name, source, status, one column per style (see the module docstring)."""
    with context.path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "file_name", "source", "status", *context.styles])
        for item in items:
            ref = _image_ref(item, context, context.final.parent)
            writer.writerow(
                [item.id, ref, item.source, item.status]
                + [item.captions.get(s, "") for s in context.styles]
            )
            context.stats.captions += len(item.captions)


def write_folder(items: Iterator[Item], context: Context) -> None:
    """Images with a ``.txt`` caption beside each (the images are placed by the job)."""
    style = context.styles[0]
    for item in items:
        text = item.captions.get(style)
        if text is None:
            continue
        # one line, no control or bidi characters: a trainer reads the file as the caption
        caption = one_line(text)
        (context.path / f"{Path(item.name).stem}.txt").write_text(caption + "\n", encoding="utf-8")
        context.stats.captions += 1


def write_hf(items: Iterator[Item], context: Context, batch_rows: int = 64) -> None:
    """A ``datasets`` dataset saved with ``save_to_disk`` (see the module docstring): rows
    are encoded by the dataset's features and streamed in batches to an Arrow file in the
    scratch folder, which ``Dataset.from_file`` maps and ``save_to_disk`` writes out."""
    require("datasets", "datasets")
    import datasets
    import pyarrow as pa
    from datasets.utils import logging as ds_logging

    names = ("image", "id", "source", "status", *context.styles)
    features = datasets.Features(
        {name: datasets.Image() if name == "image" else datasets.Value("string") for name in names}
    )
    schema = features.arrow_schema
    arrow = context.scratch / "data.arrow"

    def flush(writer: Any, rows: list[dict[str, Any]]) -> None:
        if rows:
            batch = {name: [row[name] for row in rows] for name in names}
            writer.write_table(pa.Table.from_pydict(features.encode_batch(batch), schema=schema))
            rows.clear()

    rows: list[dict[str, Any]] = []
    with pa.OSFile(str(arrow), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for item in items:
            assert item.data is not None  # embedded images were read and decoded
            context.stats.captions += len(item.captions)
            rows.append(
                {
                    "image": {"bytes": item.data, "path": item.name},
                    "id": item.id,
                    "source": item.source,
                    "status": item.status,
                    **{style: item.captions.get(style) for style in context.styles},
                }
            )
            if len(rows) >= batch_rows:
                flush(writer, rows)
        flush(writer, rows)
    bars = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        dataset = datasets.Dataset.from_file(str(arrow))
        context.path.rmdir()  # made empty by the job; save_to_disk makes its own
        dataset.save_to_disk(str(context.path))
        del dataset
    finally:
        if bars:
            ds_logging.enable_progress_bar()


#: GBC's vertex labels (``GbcVertex.label``) and description labels (``Description.label``).
GBC_VERTEX_LABELS = ("image", "entity", "composition", "relation")
GBC_DESC_LABELS = (
    "short",
    "relation",
    "composition",
    "detail",
    "original",
    "hardcode",
    "bagofwords",
)


def _gbc_bbox(box: Any, confidence: Any = None) -> dict[str, Any]:
    """A normalised ``[x0, y0, x1, y1]`` as GBC's ``Bbox``, clipped to [0, 1] (the whole
    image when ``box`` is not four numbers)."""
    ok = isinstance(box, (list, tuple)) and len(box) == 4
    values = [float(v) for v in box] if ok and all(_number(v) for v in box) else [0, 0, 1, 1]
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in values)
    return {
        "left": min(x0, x1),
        "top": min(y0, y1),
        "right": max(x0, x1),
        "bottom": max(y0, y1),
        "confidence": float(confidence) if _number(confidence) else None,
    }


def _number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
    )


def gbc_graph(
    record: RecordRow | dict[str, Any], captions: dict[str, str], img_path: str | None
) -> dict[str, Any]:
    """One record as a GBC graph (``gbc.data.graph.GbcGraph``'s JSON).

    - The image vertex (``vertex_id`` ``""``, as GBC names it) has the chosen ``captions``
      as its descriptions: ``short`` for the styles ``short`` and ``alt``, ``detail`` for the
      others (as the record's graph labels them); ``short_caption`` and ``detail_caption``
      are the first of each (GBC's own rule), ``original_caption`` is null.
    - Every entity, composition and relation node of the record's ``graph`` is a vertex with
      its ``id``, its normalised box, its kind as ``label`` and its descriptions (a kind GBC
      does not know becomes ``short``); an entity's box confidence is its region's detector
      score, the others' are null.
    - Every edge of the graph between two vertices is in its source's ``out_edges`` and its
      target's ``in_edges``.

    >>> rec = {"regions": [{"id": "r0", "score": 0.9}], "graph": {
    ...     "nodes": [{"id": "image", "kind": "image", "box": [0, 0, 1, 1]},
    ...               {"id": "r0", "kind": "entity", "box": [0.1, 0.2, 0.5, 0.6], "label": "dog",
    ...                "descriptions": [{"text": "A brown dog.", "kind": "short"}]}],
    ...     "edges": [{"source": "image", "target": "r0", "text": "dog"}]}}
    >>> g = gbc_graph(rec, {"detailed": "A dog on grass."}, "dog.jpg")
    >>> g["detail_caption"], [(v["vertex_id"], v["label"]) for v in g["vertices"]]
    ('A dog on grass.', [('', 'image'), ('r0', 'entity')])
    >>> g["vertices"][1]["bbox"], g["vertices"][1]["in_edges"]
    ({'left': 0.1, 'top': 0.2, 'right': 0.5, 'bottom': 0.6, 'confidence': 0.9}, [{'source': '', 'text': 'dog', 'target': 'r0'}])
    """
    row = RecordRow.of(record)
    graph = row.graph  # free-form below: nodes, their descriptions, edges
    descs = [
        {"text": text, "label": description_kind(style)} for style, text in captions.items() if text
    ]
    vertices: list[dict[str, Any]] = [
        {
            "vertex_id": "",
            "bbox": _gbc_bbox([0, 0, 1, 1]),
            "label": "image",
            "descs": descs,
            "in_edges": [],
            "out_edges": [],
        }
    ]
    scores = {str(r.get("id")): r.get("score") for r in row.regions}
    ids: dict[str, int] = {}  # the graph's node id -> index in vertices
    for node in graph.get("nodes") or []:
        if not isinstance(node, dict):
            continue
        kind = node.get("kind")
        if kind == "image":
            ids[str(node.get("id"))] = 0
            continue
        if kind not in GBC_VERTEX_LABELS or str(node.get("id")) in ids:
            continue
        node_id = str(node.get("id"))
        ids[node_id] = len(vertices)
        vertices.append(
            {
                "vertex_id": node_id,
                "bbox": _gbc_bbox(
                    node.get("box"), scores.get(node_id) if kind == "entity" else None
                ),
                "label": kind,
                "descs": [
                    {
                        "text": str(d.get("text", "")),
                        "label": d.get("kind") if d.get("kind") in GBC_DESC_LABELS else "short",
                    }
                    for d in node.get("descriptions") or []
                    if isinstance(d, dict) and d.get("text")
                ],
                "in_edges": [],
                "out_edges": [],
            }
        )
    for edge in graph.get("edges") or []:
        if not isinstance(edge, dict):
            continue
        source, target = ids.get(str(edge.get("source"))), ids.get(str(edge.get("target")))
        if source is None or target is None or source == target:
            continue
        out = {
            "source": vertices[source]["vertex_id"],
            "text": str(edge.get("text", "")),
            "target": vertices[target]["vertex_id"],
        }
        vertices[source]["out_edges"].append(out)
        vertices[target]["in_edges"].append(dict(out))
    return {
        "img_url": None,
        "img_path": img_path,
        "original_caption": None,
        "short_caption": next((d["text"] for d in descs if d["label"] == "short"), None),
        "detail_caption": next((d["text"] for d in descs if d["label"] == "detail"), None),
        "vertices": vertices,
    }


def _gbc_path(item: Item, context: Context) -> str:
    """GBC's ``img_path``: relative, as GBC's datasets name images under an image root: to
    ``<stem>_images/`` when placed, else to the output file's folder (the file found; the
    source as the record gives it when none is)."""
    if item.placed is None and item.image is not None:
        return os.path.relpath(item.image, context.final.parent)
    return _image_ref(item, context, None)


def write_gbc(items: Iterator[Item], context: Context) -> None:
    """GBC graphs as JSONL, one line per image (see the module docstring and
    :func:`gbc_graph`)."""
    with context.path.open("w", encoding="utf-8") as out:
        for item in items:
            row = item.row
            if not row.graph.get("nodes"):
                context.stats.no_graph += 1
            line = gbc_graph(row, item.captions, _gbc_path(item, context))
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            context.stats.captions += len(item.captions)


#: Every format by its ``--to`` name. A new format: a writer above and its line here.
EXPORTERS: dict[str, Exporter] = {
    "coco": Exporter(write_coco, "file", ".json", ("none", "copy", "link"), "COCO captions JSON"),
    "llava": Exporter(
        write_llava, "file", ".json", ("none", "copy", "link"), "LLaVA conversation JSON"
    ),
    "hf": Exporter(write_hf, "folder", None, (), "Hugging Face dataset (save_to_disk)"),
    "folder": Exporter(
        write_folder, "folder", None, ("copy", "link"), "images + .txt captions", one_style=True
    ),
    "csv": Exporter(write_csv, "file", ".csv", ("none", "copy", "link"), "CSV, one row per image"),
    "gbc": Exporter(write_gbc, "file", ".jsonl", ("none", "copy", "link"), "GBC graphs JSONL"),
}


# --- the job ----------------------------------------------------------------------------------


def _ours(path: Path) -> bool:
    """Whether an existing folder may be replaced: empty, or an earlier export."""
    return path.is_dir() and (not any(path.iterdir()) or (path / MARKER).is_file())


def _check_folder(path: Path, what: str, overwrite: bool) -> None:
    from factcap.engine.job import has_output  # the job module imports the config: lazily

    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} is a file; {what} is a folder: choose another -o")
    if has_output(path):
        if not overwrite:
            raise UsageError(f"{path} exists: pass --overwrite to replace it")
        if not _ours(path):
            raise UsageError(
                f"{path} holds files that are not a factcap export (no {MARKER}): "
                "--overwrite replaces only earlier exports; choose another -o"
            )


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


class ExportJob:
    """A checked export, ready to :meth:`run` (see the module docstring). Everything but the
    styles' discovery is checked before any record is read.

    Raises:
        UsageError: an unknown format, an image mode or style count the format does not take,
            a bad ``-o`` ending, an output that exists (without ``overwrite``), that is the
            input or holds it, or a folder that is not an earlier export.
        OutputError: an output that cannot be written.
        MissingDependency: ``hf`` without ``datasets``.
    """

    def __init__(
        self,
        results: str | Path,
        to: str,
        output: str | Path,
        *,
        styles: Sequence[str] | None = None,
        statuses: Sequence[str] = ("ok",),
        images: str | None = None,
        prompt: str = DEFAULT_PROMPT,
        prefix: str = "",
        image_root: str | Path | None = None,
        overwrite: bool = False,
    ):
        if to not in EXPORTERS:
            raise UsageError(f"unknown export format {to!r}; choose from {', '.join(EXPORTERS)}")
        self.exporter = exporter = EXPORTERS[to]
        self.to, self.results, self.output = to, Path(results), Path(output)
        if images is None:
            images = exporter.images[0] if exporter.images else "none"
        elif images not in exporter.images:
            takes = (
                f"takes --images {' or '.join(exporter.images)}"
                if exporter.images
                else "embeds the images; --images does not apply"
            )
            raise UsageError(f"--to {to} {takes}")
        self.images = images
        self.styles = list(dict.fromkeys(styles)) if styles else None
        if exporter.one_style and self.styles and len(self.styles) > 1:
            raise UsageError(f"--to {to} writes one caption per image: give one --style")
        self.statuses = set(statuses)
        if not self.statuses:
            raise UsageError("--status names no status")
        unknown = self.statuses - {"ok", "error"}
        if unknown:
            raise UsageError(f"--status: unknown status {sorted(unknown)}; use ok and/or error")
        self.prompt, self.prefix, self.overwrite = prompt, prefix, overwrite
        if to == "hf":
            require("datasets", "datasets")
        self.image_dir = self._check_outputs()
        self.finder = ImageFinder(self.results, image_root)
        if self.styles is None:
            self.styles = self._discover_styles()
        if to == "hf":
            taken = [s for s in self.styles if s in ("image", "id", "source", "status")]
            if taken:
                raise UsageError(f"--to hf: a style may not be named {taken[0]!r} (a column)")
        if exporter.one_style:
            self.styles = self.styles[:1]

    def _check_outputs(self) -> Path | None:
        """Check the output (and the images folder beside an output file); return the final
        folder of placed images (None when images are not placed)."""
        from factcap.engine.job import check_writable, has_output, refuse_input_as_output

        out, exporter = self.output, self.exporter
        if exporter.target == "file":
            if out.suffix.lower() != exporter.suffix:
                raise UsageError(f"-o {out}: --to {self.to} writes a {exporter.suffix} file")
            refuse_input_as_output([self.results], out)
            if has_output(out) and not self.overwrite:
                raise UsageError(f"{out} exists: pass --overwrite to replace it")
            check_writable(out, folder=False)
            if self.images == "none":
                return None
            image_dir = out.with_name(f"{out.stem}_images")
            if _inside(self.results, image_dir):
                raise UsageError(
                    f"the input {self.results} is inside {image_dir}: choose another -o"
                )
            _check_folder(image_dir, "the images folder", self.overwrite)
            return image_dir
        refuse_input_as_output([self.results], out, sharded=True)
        if _inside(self.results, out):
            raise UsageError(f"the input {self.results} is inside {out}: choose another -o")
        _check_folder(out, f"--to {self.to} output", self.overwrite)
        check_writable(out.parent, folder=True)
        return out if self.images != "none" else None

    def _discover_styles(self) -> list[str]:
        """Every style of the chosen records, in order of first appearance (one pass)."""
        found: dict[str, None] = {}
        for raw in read_records(self.results):
            row = RecordRow(raw)
            if row.status in self.statuses:
                found.update(dict.fromkeys(row.captions))
        return list(found)

    def run(self, progress: Callable[[int], None] | None = None) -> ExportStats:
        """Write the export; ``progress(1)`` after each record read.

        Raises:
            OutputError: the output could not be written (nothing is left half-written under
                its final name).
            DataError: a record that cannot be read.
        """
        assert self.styles is not None
        stats = ExportStats(self.to, self.output, list(self.styles), images=self.image_dir)
        out = self.output
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.factcap-", dir=out.parent))
        except OSError as err:
            raise OutputError(f"cannot write {out}: {err.strerror or err}") from None
        try:
            work = scratch / out.name
            moves = [(work, out)]
            place_in: Path | None = None
            if self.exporter.target == "folder":
                work.mkdir()
                place_in = work if self.image_dir is not None else None
            elif self.image_dir is not None:
                place_in = scratch / self.image_dir.name
                place_in.mkdir()
                moves.append((place_in, self.image_dir))
            (scratch / "tmp").mkdir()
            context = Context(
                path=work,
                final=out,
                styles=stats.styles,
                images=self.images,
                image_dir=self.image_dir,
                prompt=self.prompt,
                scratch=scratch / "tmp",
                stats=stats,
            )
            try:
                self.exporter.write(self._items(stats, place_in, progress), context)
                marker = {"factcap": __version__, "format": self.to, "records": stats.exported}
                for folder in (work if self.exporter.target == "folder" else None, place_in):
                    if folder is not None:
                        (folder / MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
                for source, final in moves:
                    if final.is_dir():
                        shutil.rmtree(final)  # checked: empty or an earlier export
                    os.replace(source, final)
            except OSError as err:
                raise OutputError(f"cannot write {out}: {err.strerror or err}") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return stats

    def _items(
        self, stats: ExportStats, place_in: Path | None, progress: Callable[[int], None] | None
    ) -> Iterator[Item]:
        needs_image = place_in is not None or not self.exporter.images  # placed or embedded
        needs_caption = self.exporter.one_style or self.to == "llava"
        used: set[str] = set()
        assert self.styles is not None
        for raw in read_records(self.results):
            stats.records += 1
            if progress is not None:
                progress(1)
            row = RecordRow(raw)
            status = row.status
            if status not in self.statuses:
                stats.skipped_status += 1
                continue
            given = row.captions
            captions = {s: self.prefix + given[s] for s in self.styles if s in given}
            if not captions:
                stats.no_caption += 1
                if needs_caption:
                    continue
            record_id, source = str(row.id), row.source or ""
            media = self._media(row, record_id, needs_image, stats)
            if media is None:
                continue
            items = []
            for view, file, image, data in media:
                item_id = record_id if view is None else f"{record_id}-view-{view}"
                name = Path(source).name if view is None else file
                placed = None
                if needs_image and image is not None:
                    # every asset's views are view-<k>.png: they are named after the asset
                    wanted = image.name
                    if view is not None:
                        wanted = f"{Path(source).stem or 'asset'}-view-{view}{image.suffix}"
                    name = _unique(wanted, item_id, used)
                    if place_in is not None:
                        _place(image, data, place_in / name, self.images)
                        assert self.image_dir is not None
                        placed = self.image_dir / name
                items.append(
                    Item(
                        record=raw,
                        id=item_id,
                        source=source,
                        status=status,
                        captions=captions,
                        image=image,
                        name=name,
                        placed=placed,
                        size=_size(row, image) if self.to == "coco" else None,
                        file=file,
                        data=data,
                        view=view,
                    )
                )
            stats.exported += 1
            if media[0][0] is not None:
                stats.assets += 1
                stats.views += len(media)
            yield from items

    def _media(
        self, row: RecordRow, record_id: str, needs_image: bool, stats: ExportStats
    ) -> list[tuple[int | None, str, Path | None, bytes | None]] | None:
        """The files a record exports: its image, or each saved view of a 3D asset, as
        ``(view index or None, the file as the record names it, the file found, its bytes)``.
        Where the image is placed or embedded, every file must be found and decode as an
        image (:func:`factcap.images.decode`, default limits); the bytes are those that
        decoded (None when linked). None: the record is left out (and counted)."""
        views = row.media.views
        if views:  # an input of several views (a 3D asset): they are its images, not its file
            files: list[tuple[int | None, str]] = [
                (v["index"] if isinstance(v.get("index"), int) else k, str(v.get("file") or ""))
                for k, v in enumerate(views)
            ]
            if not files or not all(file for _, file in files):
                stats.no_views += 1
                return None
        else:
            files = [(None, row.source or "")]
        media = []
        for view, file in files:
            found = self.finder.locate(file)
            image = found if isinstance(found, Path) else None
            data = None
            if needs_image:
                if image is None:
                    stats.no_image += 1
                    return None
                try:
                    data = self._read_image(image)
                except ImageError as err:  # its kind only: the message could name content
                    stats.not_media += 1
                    stats.not_media_example = stats.not_media_example or (
                        f"{record_id}: {file}: {err.kind}"
                    )
                    return None
            media.append((view, file, image, data))
        return media

    def _read_image(self, image: Path) -> bytes | None:
        """The bytes of ``image`` once they decode as an image (None when linked: the file is
        decoded where it is). Raises :class:`ImageError` otherwise."""
        limits = DecodeLimits()
        if self.images == "link":
            decode(image, limits)
            return None
        try:
            with image.open("rb") as handle:
                data = handle.read(limits.max_file_bytes + 1)  # decode refuses more
        except OSError as err:
            raise ImageError("FileUnreadable", f"cannot read {image}: {err.strerror}") from None
        decode(data, limits)
        return data


def _unique(name: str, record_id: str, used: set[str]) -> str:
    """``name``, or ``<stem>-<id><ext>`` when its stem is taken (case-insensitively: the
    ``.txt`` beside each image needs a stem of its own)."""
    path = Path(name)
    stem, ext = path.stem or "image", path.suffix
    candidate, number = stem, 1
    while candidate.lower() in used:
        candidate = f"{stem}-{record_id}" if number == 1 else f"{stem}-{record_id}-{number}"
        number += 1
    used.add(candidate.lower())
    return candidate + ext


def _place(image: Path, data: bytes | None, target: Path, mode: str) -> None:
    """A symbolic link to ``image``, or its ``data`` (the bytes that decoded) written."""
    if mode == "link":
        os.symlink(image, target)
    else:
        assert data is not None
        target.write_bytes(data)


def _size(row: RecordRow, image: Path | None) -> tuple[int, int] | None:
    if row.image_size is not None:
        return row.image_size
    if image is None:
        return None
    from PIL import Image

    try:
        with Image.open(image) as picture:  # reads the header only
            return picture.size
    except Exception:  # not an image Pillow reads (a 3D asset): no size
        return None
