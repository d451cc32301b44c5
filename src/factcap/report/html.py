"""``factcap report``: one self-contained static HTML page for a results JSONL.

The page works offline in any browser: thumbnails are embedded as base64 JPEG ``data:`` URIs
(made with :func:`factcap.images.decode`), the CSS and the vanilla JavaScript are inline, and a
Content-Security-Policy allows nothing but those (no network at all). The records are embedded
as JSON in a ``<script type="application/json">`` element with ``<``, ``>`` and ``&`` escaped,
and rendered with ``textContent``: captions come from models and file names from users, so
they are never parsed as HTML.

What the page shows, per record: the image with the detector boxes of each claim (toggled
per claim, drawn in the original image's pixel coordinates from ``image_size``), the final
caption of each style, the proposals with the sentences that state refuted content struck
through (the sentences compose cut: :func:`factcap.pipeline.compose.refuted_matchers`), the
claims coloured by verdict with their score and evidence, the regions of ``--regions`` (a box
with its label on the image, the region's caption shown when the pointer is on the box or the
keyboard focus is, and a list of the regions), the metric values when a scores JSONL from
``factcap evaluate`` is given, and the error type and message of failed items.
Above the grid: a histogram per metric, and filters (errors only, items with refuted claims,
sort by a metric).

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> row = {"id": "a", "source": "nowhere.jpg", "status": "ok",
    ...        "captions": {"detailed": "A <b>cat</b>."}}
    >>> _ = (d / "r.jsonl").write_text(json.dumps(row) + "\\n")
    >>> page = build_report(d / "r.jsonl", out_path=d / "r.html").read_text()
    >>> "<b>cat" in page, "\\\\u003cb\\\\u003ecat" in page
    (False, True)
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from factcap.engine.records import ImageFinder, RecordFile, read_score_rows
from factcap.errors import ConfigError, ImageError
from factcap.images import DecodeLimits, decode
from factcap.media import MediaKind, kind_for, media_kinds
from factcap.pipeline.compose import refuted_matchers
from factcap.rows import ClaimRow, ProposalRow, RecordRow, finite
from factcap.schema import VERDICTS, ErrorInfo
from factcap.stats import format_number, format_rate
from factcap.text.sanitize import display_safe, display_text

_SENTENCE_GAP = re.compile(r"((?<=[.!?])\s+)")
_EVIDENCE_SHOWN = (
    "checker",
    "refuted_because",
    "detector",
    "detected_count",
    "vqa_question",
    "vqa_answer",
    "vqa_p_yes",
    "ocr_match",
    "ocr_similarity",
)


@dataclass
class ReportStats:
    """What went into a report: records, errors, claims by verdict, thumbnails made."""

    records: int
    errors: int
    verdicts: dict[str, int]
    thumbnails: int
    score_rows: int
    unmatched_scores: int
    bytes: int


def build_report(
    results_path: str | Path,
    scores_path: str | Path | None = None,
    *,
    out_path: str | Path,
    thumb_px: int = 256,
    image_root: str | Path | None = None,
    title: str | None = None,
    confine: bool = True,
) -> Path:
    """Write the HTML report of ``results_path`` (any factcap output format; and
    ``scores_path``) to ``out_path``.

    Relative image sources are found as :class:`~factcap.engine.records.ImageFinder` finds
    them (under ``image_root``, where the captioning ran, beside the results, in the current
    folder). With ``image_root`` and ``confine``, only images inside that folder are embedded
    (for a server building reports of its own jobs). Returns ``out_path``.

    Example:
        >>> from factcap.examples import example_paths
        >>> import json, tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> row = {"id": "x", "source": str(example_paths()[0]), "captions": {"short": "A."}}
        >>> _ = (d / "r.jsonl").write_text(json.dumps(row) + "\\n")
        >>> "data:image/jpeg;base64," in build_report(d / "r.jsonl", out_path=d / "o.html").read_text()
        True
    """
    return write_report(
        results_path, scores_path, out_path, thumb_px, image_root, title, confine=confine
    )[0]


def write_report(
    results_path: str | Path,
    scores_path: str | Path | None,
    out_path: str | Path,
    thumb_px: int = 256,
    image_root: str | Path | None = None,
    title: str | None = None,
    confine: bool = True,
    study: dict[str, Any] | None = None,
) -> tuple[Path, ReportStats]:
    """:func:`build_report`, also returning the :class:`ReportStats` the CLI prints; with
    ``study`` (the dict of ``factcap study results``), the page shows its table too."""
    if not isinstance(thumb_px, int) or not 16 <= thumb_px <= 4096:
        raise ConfigError(f"thumb_px must be an integer from 16 to 4096, not {thumb_px!r}")
    results_path, out_path = Path(results_path), Path(out_path)
    records = RecordFile(results_path, skip_torn_end=True)
    rows, torn = list(records), records.torn_end
    scores = list(read_score_rows(scores_path)) if scores_path else []
    thumbs = _Thumbnailer(thumb_px, ImageFinder(results_path, image_root, confine=confine))
    items = [_item(row, i, thumbs) for i, row in enumerate(rows)]
    metrics, sources, unmatched = _attach_scores(items, scores)
    verdicts = Counter(c["verdict"] for it in items for c in it["claims"])
    errors = Counter(it["error"]["type"] for it in items if it["status"] == "error")
    stats = ReportStats(
        records=len(items),
        errors=sum(errors.values()),
        verdicts={v: verdicts.get(v, 0) for v in VERDICTS},
        thumbnails=sum(1 for it in items if it["thumb"]),
        score_rows=len(scores),
        unmatched_scores=unmatched,
        bytes=0,
    )
    summary = (
        f"{len(items)} records: {len(items) - stats.errors} ok, {stats.errors} errors"
        + (f" ({', '.join(f'{k}: {v}' for k, v in errors.most_common())})" if errors else "")
        + " · claims: "
        + ", ".join(f"{verdicts.get(v, 0)} {v}" for v in VERDICTS)
        + f" · from {results_path.name}"
        + (f" and {Path(scores_path).name}" if scores_path else "")
        + (f" · {unmatched} score rows match no record" if unmatched else "")
        + (" · an incomplete last line was skipped" if torn else "")
    )
    data = {
        "title": title or f"factcap report: {results_path.name}",
        "summary": summary,
        "metrics": metrics,
        "score_sources": sources,
        "items": items,
    }
    page = render_page(data, study_section(study) if study else "")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(page)
            os.fchmod(handle.fileno(), 0o666 & ~_umask())  # as open() would: mkstemp is 0600
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    stats.bytes = out_path.stat().st_size
    return out_path, stats


def study_section(study: dict[str, Any]) -> str:
    """The human study's results (``factcap study results``' dict) as a static HTML table:
    per source pair wins / ties / losses with 95 % intervals, Bradley–Terry strengths,
    agreement and the raters excluded.

    >>> page = study_section({"pairs": [{"a": "A", "b": "B", "items": 2, "votes": 4,
    ...     "win_rate": 0.5, "tie_rate": 0.25, "loss_rate": 0.25, "ci95": {}}]})
    >>> "<td>A</td><td>B</td>" in page and "0.500 [n/a, n/a]" in page
    True
    """
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(str(p['a']))}</td><td>{esc(str(p['b']))}</td><td>{p['items']}</td>"
        f"<td>{p['votes']}</td>"
        + "".join(
            f"<td>{format_rate(p.get(k), p.get('ci95', {}).get(k))}</td>"
            for k in ("win_rate", "tie_rate", "loss_rate")
        )
        + "</tr>"
        for p in study.get("pairs", [])
    )
    parts = [
        '<section id="study"><h2>Human study</h2>',
        "<table><tr><th>A</th><th>B</th><th>items</th><th>votes</th><th>A wins [95% CI]</th>"
        "<th>ties [95% CI]</th><th>A loses [95% CI]</th></tr>",
        rows,
        "</table>",
    ]
    bt = study.get("bradley_terry")
    if bt:
        strengths = ", ".join(
            f"{esc(str(s))} {format_number(v)}"
            for s, v in sorted(bt["strengths"].items(), key=lambda kv: -(finite(kv[1]) or 0))
        )
        parts.append(f"<p>Bradley–Terry strength ({esc(bt['normalisation'])}): {strengths}</p>")
    agreement = study.get("agreement") or {}
    alpha = agreement.get("krippendorff_alpha")
    if agreement:
        parts.append(
            f"<p>Krippendorff's alpha (nominal): {format_number(alpha)} over "
            f"{agreement.get('units', 0)} items × pairs with 2+ votes</p>"
        )
    if study.get("raters_excluded"):
        names = ", ".join(esc(str(r)) for r in study["raters_excluded"])
        parts.append(
            f"<p>Raters excluded (gold threshold {study.get('gold_threshold')}): {names}</p>"
        )
    return "".join(parts) + "</section>"


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` would, for every thread);
    the usual 022 where the system does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def render_page(data: dict[str, Any], study_html: str = "") -> str:
    """The HTML text for report data (``title``, ``summary``, ``metrics``,
    ``score_sources``, ``items``) and an optional static ``study_html`` section; scripts
    and styles are allowed by hash only. Every text shown loses its control and bidi
    formatting characters (:func:`~factcap.text.sanitize.display_safe`)."""
    data, study_html = display_safe(data), display_text(study_html)
    static = resources.files("factcap.report") / "static"
    css = (static / "report.css").read_text(encoding="utf-8")
    js = (static / "report.js").read_text(encoding="utf-8")
    csp = (
        "default-src 'none'; img-src data:; "
        f"style-src {_csp_hash(css)}; script-src {_csp_hash(js)}; "
        "base-uri 'none'; form-action 'none'"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{html.escape(csp, quote=False)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(str(data["title"]))}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1 id="title"></h1>
<p id="summary"></p>
<div id="controls">
<label><input type="checkbox" id="f-errors"> errors only</label>
<label><input type="checkbox" id="f-refuted"> items with refuted claims</label>
<span id="score-controls">
<label>scores of <select id="score-source"></select></label>
<label>sort by <select id="sort-metric"><option value="">input order</option></select></label>
<select id="sort-dir" aria-label="sort direction"><option value="desc">high to low</option>\
<option value="asc">low to high</option></select>
</span>
<span id="shown"></span>
</div>
<section id="histograms"></section>
{study_html}
</header>
<main id="grid"></main>
<noscript>This report is drawn by JavaScript: enable it to see the records.</noscript>
<script type="application/json" id="factcap-data">{_json_for_script(data)}</script>
<script>{js}</script>
</body>
</html>
"""


def _csp_hash(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return f"'sha256-{digest}'"


def _json_for_script(data: Any) -> str:
    """JSON that cannot end its ``<script>`` element or open a comment: outside strings JSON
    has no ``<``, ``>`` or ``&``, inside strings their ``\\u`` escapes mean the same."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for raw, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


class _Thumbnailer:
    """Base64 JPEG thumbnails of record sources, each file decoded once."""

    def __init__(self, px: int, finder: ImageFinder) -> None:
        self.px, self.finder = px, finder
        self.cache: dict[Path, tuple[str | None, tuple[int, int] | None, str | None]] = {}

    def get(self, source: str) -> tuple[str | None, tuple[int, int] | None, str | None]:
        """``(data URI, decoded (width, height), problem)``; the URI is None on a problem."""
        path = self.finder.locate(source)
        if isinstance(path, str):
            return None, None, path
        if path not in self.cache:
            self.cache[path] = self._make(path)
        return self.cache[path]

    def _make(self, path: Path) -> tuple[str | None, tuple[int, int] | None, str | None]:
        from PIL import Image

        try:
            decoded = decode(path, DecodeLimits())
        except ImageError as err:
            return None, None, f"{err.kind}: {err}"
        image = decoded.image
        image.thumbnail((self.px, self.px), Image.Resampling.BICUBIC)
        return _data_uri(image), (decoded.width, decoded.height), None

    def strip(self, views: list[dict[str, Any]]) -> tuple[str | None, str | None]:
        """A 3D asset's saved views side by side, each ``px`` high: ``(data URI,
        problem)``; boxes are drawn on it with the view's offset (:func:`_strip_boxes`)."""
        from PIL import Image

        files = [self.finder.locate(str(v.get("file") or "")) for v in views]
        if not files or not all(isinstance(f, Path) for f in files):
            return None, "its views were not saved (factcap caption --save-views DIR)"
        tiles = []
        for file in files:
            try:
                tile = decode(file, DecodeLimits()).image
            except ImageError as err:
                return None, f"{err.kind}: {err}"
            tile.thumbnail((self.px, self.px), Image.Resampling.BICUBIC)
            tiles.append(tile)
        sheet = Image.new("RGB", (sum(t.width for t in tiles), max(t.height for t in tiles)))
        x = 0
        for tile in tiles:
            sheet.paste(tile, (x, 0))
            x += tile.width
        return _data_uri(sheet), None


def _data_uri(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=82, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _strip_boxes(claims: list[dict[str, Any]], width: float) -> None:
    """Move each box of the claims of an input of several views to its view's place in the
    strip of views."""
    for claim in claims:
        for box, view in zip(claim["boxes"], claim.pop("_views"), strict=True):
            if view is not None:
                x0, y0, x1, y1 = box["box"]
                box["box"] = [x0 + view * width, y0, x1 + view * width, y1]


def _item(raw: dict[str, Any], index: int, thumbs: _Thumbnailer) -> dict[str, Any]:
    """The JSON-ready view of one result record (tolerant of rows from other tools)."""
    row = RecordRow(raw)
    error, status, size = row.error, row.status, row.image_size
    source = row.source or ""
    views = [_claim(c) for c in row.claims]
    media_views = row.media.views
    if media_views:  # an input of several views (a 3D asset): its strip of views
        thumb, problem = thumbs.strip(media_views)
        box_space = (size[0] * len(media_views), size[1]) if size else None
        _strip_boxes(views, size[0] if size else 0.0)
    elif made := _views_made_by(row, source):  # e.g. a 3D asset's file is no image to decode
        thumb, box_space, problem = None, None, f"the {made.label}'s views were not made"
        if error:
            problem += f" ({error.type}: the error below says why)"
        for view in views:
            view.pop("_views")
    else:
        thumb, decoded_size, problem = thumbs.get(source)
        box_space = size or decoded_size
        for view in views:
            view.pop("_views")
        if error and error.message and problem and error.message in problem:
            problem = f"it does not decode ({error.type}: the error below says why)"
    if error is None and status == "error":
        error = ErrorInfo("Error", "")
    return {
        "id": row.id if row.id is not None else str(index),
        "source": source,
        "status": status,
        "error": {"type": error.type, "message": error.message} if error else None,
        "thumb": thumb,
        "thumb_problem": problem,
        "box_space": list(box_space) if box_space else None,
        "captions": [[style, text] for style, text in row.captions.items()],
        "proposals": [
            {"model": _proposal_label(p, media_views), "segments": _segments(p.text, views)}
            for p in row.proposals
        ],
        "claims": [{k: v for k, v in view.items() if k != "_claim"} for view in views],
        "n_refuted": sum(1 for v in views if v["verdict"] == "refuted"),
        "notes": row.notes,
        "regions": [] if media_views else _regions(row.regions, box_space),
        "scores": {},
    }


def _regions(regions: Any, size: tuple[int, int] | None) -> list[dict[str, Any]]:
    """The record's regions for the page: ``id``, ``label``, ``caption``, ``score`` and
    ``box`` as fractions of the image (its pixel ``box`` over the image's size, else its
    ``box_normalised``), clipped to [0, 1]; largest first, so a smaller box lies on top.

    >>> _regions([{"id": "r0", "label": "dog", "caption": "A dog.", "box": [0, 50, 50, 100]}],
    ...          (100, 200))
    [{'id': 'r0', 'label': 'dog', 'caption': 'A dog.', 'score': None, 'box': [0.0, 0.25, 0.5, 0.5]}]
    """
    out = []
    for k, region in enumerate(regions if isinstance(regions, list) else []):
        if not isinstance(region, dict):
            continue
        box = _four(region.get("box"))
        if box is not None and size is not None:
            box = [box[0] / size[0], box[1] / size[1], box[2] / size[0], box[3] / size[1]]
        else:
            box = _four(region.get("box_normalised"))
        if box is None:
            continue
        x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in box)
        if x1 <= x0 or y1 <= y0:
            continue
        out.append(
            {
                "id": str(region.get("id", f"r{k}")),
                "label": str(region.get("label") or ""),
                "caption": str(region.get("caption") or ""),
                "score": finite(region.get("score")),
                "box": [x0, y0, x1, y1],
            }
        )
    out.sort(key=lambda r: -(r["box"][2] - r["box"][0]) * (r["box"][3] - r["box"][1]))
    return out


def _four(value: Any) -> list[float] | None:
    if isinstance(value, (list, tuple)) and len(value) == 4:
        numbers = [finite(v) for v in value]
        if all(v is not None for v in numbers):
            return [float(v) for v in numbers]  # type: ignore[arg-type]
    return None


def _claim(c: ClaimRow) -> dict[str, Any]:
    evidence = c.evidence  # free-form: what each checker saw
    boxes, box_views = [], []
    for b in evidence.get("detector_boxes") or []:
        box = b.get("box") if isinstance(b, dict) else None
        if isinstance(box, list) and len(box) == 4 and all(finite(v) is not None for v in box):
            boxes.append({"box": [float(v) for v in box], "score": finite(b.get("score"))})
            box_views.append(b.get("view") if isinstance(b.get("view"), int) else None)
    return {
        "kind": c.kind,
        "text": c.text,
        "subject": c.subject,
        "verdict": c.verdict or "uncertain",
        "score": c.score,
        "boxes": boxes,
        "_views": box_views,
        "detail": [f"{k}: {evidence[k]}" for k in _EVIDENCE_SHOWN if evidence.get(k) is not None]
        + ([f"origin: {c.origin}"] if c.origin else []),
        "_claim": c.claim,  # None for a kind factcap lacks (other tools): shown, not matched
    }


def _views_made_by(row: RecordRow, source: str) -> MediaKind | None:
    """The media kind of a record whose pictures are views made from its file (a 3D asset:
    ``names_views``), None for a photo: the record's kind (``media.kind``, or ``kind`` in
    records of 8d96429 and older), else the kind its source's file ending names."""
    name = row.media.kind
    kind = media_kinds().get(name) if name != "image" else kind_for(source)
    return kind if kind is not None and kind.names_views else None


def _proposal_label(p: ProposalRow | dict[str, Any], views: Any = None) -> str:
    """A proposal's model, with the view of an asset it describes (and that view's azimuth
    and elevation from the record's ``views``), its ranking score and whether it was kept
    when ranked.

    >>> _proposal_label({"model": "blip", "view": 2},
    ...                 [{"index": 2, "azimuth": 90.0, "elevation": 20.0}])
    'blip · view 2 (azimuth 90°, elevation 20°)'
    """
    p = p if isinstance(p, ProposalRow) else ProposalRow(p)
    label, view = p.model or "", p.view
    if view is not None:
        label += f" · view {view}"
        known = [v for v in views if isinstance(v, dict)] if isinstance(views, list) else []
        match = next((v for v in known if v.get("index") == view), None)
        angles = [
            f"{name} {finite(match.get(name)):g}°"
            for name in ("azimuth", "elevation")
            if match is not None and finite(match.get(name)) is not None
        ]
        if angles:
            label += f" ({', '.join(angles)})"
    if p.score is not None:
        label += f" · score {p.score:.3f}"
    if not p.kept:
        label += " · not kept"
    return label


def _segments(text: str, claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``text`` cut into sentences; each lists the refuted claims (indices) it states."""
    tests = [
        (j, refuted_matchers([c["_claim"]] if c["_claim"] else [])) for j, c in enumerate(claims)
    ]
    tests = [(j, m[0]) for j, m in tests if m]
    segments: list[dict[str, Any]] = []
    for k, piece in enumerate(_SENTENCE_GAP.split(text)):
        hits = [] if k % 2 else [j for j, match in tests if match(piece)]
        if segments and not hits and not segments[-1]["refuted"]:
            segments[-1]["text"] += piece
        elif piece:
            segments.append({"text": piece, "refuted": hits})
    return segments


def _attach_scores(
    items: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> tuple[list[str], list[str], int]:
    """Put each score row on its record(s); returns metric names, caption sources and the
    number of rows that match no record."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_id.setdefault(item["id"], []).append(item)
    metrics: dict[str, None] = {}
    sources: dict[str, None] = {}
    unmatched = 0
    for row in rows:
        targets = by_id.get(str(row["id"]))
        if not targets:
            unmatched += 1
            continue
        source = str(row.get("caption_source", "final"))
        sources[source] = None
        values = {str(k): finite(v) for k, v in row["metrics"].items()}
        metrics.update(dict.fromkeys(values))
        failures = row.get("failures") if isinstance(row.get("failures"), dict) else {}
        for item in targets:
            item["scores"][source] = {
                "metrics": values,
                "failures": {str(k): str(v) for k, v in failures.items()},
            }
    ordered = sorted(sources, key=lambda s: (not s.startswith("final:"), list(sources).index(s)))
    return list(metrics), ordered, unmatched
