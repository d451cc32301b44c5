"""``factcap filter``: keep the records a ``--where`` expression is true for, stream the rest
to a rejected output, and say what each condition did.

The expression language is :mod:`factcap.curation.filter_expr`; the names it knows are
:data:`RECORD_NAMES` and :data:`CAPTION_NAMES` (their values: :func:`record_values`,
:func:`caption_values`) and the score values of ``--scores``. Records are read with
:func:`factcap.engine.records.read_records` and written with the sinks of
:data:`factcap.engine.sinks.SINKS`; a WebDataset output's images come from
:class:`~factcap.engine.records.ImageFinder`.

README: "Curation: alt-text, ranking, filter, export" (``factcap filter``: each name's value,
the default caption, missing values, the per-condition counts).

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> _ = (d / "in.jsonl").write_text(
...     '{"id": "a", "source": "a.jpg", "captions": {"short": "A cat."}}\\n'
...     '{"id": "b", "source": "b.jpg", "status": "error", "captions": {}}\\n')
>>> stats = filter_records(d / "in.jsonl", "caption_words >= 2",
...                        d / "kept.jsonl", d / "rejected.jsonl")
>>> stats.kept, stats.rejected, stats.undecided
(1, 1, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcap.curation.filter_expr import NUM, STR, Values, Where, compile_where
from factcap.engine.records import ImageFinder, read_records, read_score_rows
from factcap.engine.sinks import SINKS, open_sink, sink_format
from factcap.errors import ConfigError, DataError, UsageError
from factcap.inputs import InputItem
from factcap.rows import RecordRow
from factcap.schema import VERDICTS, Record

#: The record values: name → kind (what each one means: the README's filter table).
RECORD_NAMES: dict[str, str] = {
    "id": STR,
    "source": STR,
    "status": STR,
    "kind": STR,
    "error_type": STR,
    "n_claims": NUM,
    **{f"n_{verdict}": NUM for verdict in VERDICTS},
    "n_removed": NUM,
    "n_proposals": NUM,
    "n_captions": NUM,
    "n_notes": NUM,
    "width": NUM,
    "height": NUM,
}
#: The values each caption has (score values are added from SCORES).
CAPTION_NAMES: dict[str, str] = {
    "style": STR,
    "caption": STR,
    "caption_chars": NUM,
    "caption_words": NUM,
}


@dataclass
class Scores:
    """Score values by record id and caption style (``final:<style>`` rows of ``factcap
    evaluate`` output), the value names, the styles in file order, and how many rows were
    not final captions."""

    values: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    other_rows: int = 0
    rows: int = 0

    def keep_only(self, names: set[str]) -> None:
        """Drop every value not named in ``names`` (memory: only what the expression uses)."""
        for by_style in self.values.values():
            for style, metrics in by_style.items():
                by_style[style] = {k: v for k, v in metrics.items() if k in names}


def read_scores(path: str | Path) -> Scores:
    """The ``final:<style>`` rows of ``factcap evaluate`` output (JSONL or Parquet).

    Raises:
        NotFound: no such file.
        DataError: a row without ``id``, ``caption_source`` or a ``metrics`` object.
    """
    path = Path(path)
    scores = Scores()
    names: dict[str, None] = {}
    styles: dict[str, None] = {}
    for number, row in enumerate(read_score_rows(path), 1):
        source, metrics = row.get("caption_source"), row.get("metrics")
        if "id" not in row or not isinstance(source, str) or not isinstance(metrics, dict):
            raise DataError(
                f"{path}: row {number} is not a factcap evaluate row (id, caption_source, metrics)"
            )
        scores.rows += 1
        kind, _, style = source.partition(":")
        if kind != "final" or not style:
            scores.other_rows += 1
            continue
        styles[style] = None
        values = {str(k): v if _finite(v) else None for k, v in metrics.items()}
        names.update(dict.fromkeys(values))
        scores.values.setdefault(str(row["id"]), {})[style] = values
    scores.names, scores.styles = list(names), list(styles)
    return scores


def _finite(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value == value
        and abs(value) != float("inf")
    )


def known_names(scores: Scores | None) -> dict[str, str]:
    """Every name a ``--where`` expression may use with these scores (name → kind)."""
    names = {**RECORD_NAMES, **CAPTION_NAMES}
    for name in scores.names if scores else ():
        names.setdefault(name, NUM)
    return names


def record_values(record: RecordRow | Mapping[str, Any]) -> dict[str, Any]:
    """The record values of one record (:data:`RECORD_NAMES`; a value the record lacks, or
    holds with the wrong type, is None: missing)."""
    row = RecordRow.of(record)
    verdicts = [c.verdict for c in row.claims]
    size, error = row.image_size, row.error
    values: dict[str, Any] = {
        "id": row.id,
        "source": row.source,
        "status": row.status,
        "kind": row.media.kind,
        "error_type": error.type if error else None,
        "n_claims": len(verdicts),
        "n_removed": len(row.removed),
        "n_proposals": len(row.proposals),
        "n_captions": len(row.captions),
        "n_notes": len(row.notes),
        "width": size[0] if size else None,
        "height": size[1] if size else None,
    }
    for verdict in VERDICTS:
        values[f"n_{verdict}"] = verdicts.count(verdict)
    return values


def caption_values(
    style: str, text: Any, scores: Mapping[str, float | None] | None
) -> dict[str, Any]:
    """The caption values of one caption (:data:`CAPTION_NAMES`)."""
    text = text if isinstance(text, str) else None
    return {
        **(scores or {}),
        "style": style,
        "caption": text,
        "caption_chars": len(text) if text is not None else None,
        "caption_words": len(text.split()) if text is not None else None,
    }


def values_of(
    record: RecordRow | Mapping[str, Any], scores: Scores | None, style: str | None
) -> Values:
    """What every name means for ``record`` (``style``: the default caption's style, None for
    the record's first caption)."""
    row = RecordRow.of(record)
    captions = row.captions
    by_style = scores.values.get(str(row.id), {}) if scores else {}
    each = [caption_values(s, t, by_style.get(s)) for s, t in captions.items()]
    default_style = style if style is not None else next(iter(captions), None)
    if default_style is None:
        default: dict[str, Any] = {}
    else:
        default = caption_values(
            default_style, captions.get(default_style), by_style.get(default_style)
        )
    return Values(record_values(row), each, default)


@dataclass
class FilterStats:
    """What :func:`filter_records` did."""

    records: int = 0
    kept: int = 0
    rejected: int = 0
    undecided: int = 0
    """Rejected because a missing value left the expression unknown."""
    missing: dict[str, int] = field(default_factory=dict)
    """For each name the expression uses: records that lack its value (default caption)."""
    conditions: list[tuple[str, int]] = field(default_factory=list)
    """Each condition's text and how many records it alone would reject."""
    style: str | None = None
    """The default caption's style (None: each record's first)."""
    unmatched_scores: int = 0
    """``final:`` score rows whose id is in no record."""

    def table(self) -> str:
        """The counts as a few lines for the terminal."""
        width = max([len(t) for t, _ in self.conditions] + [9])
        lines = [
            f"kept {self.kept} of {self.records} records, rejected {self.rejected}"
            + (f" ({self.undecided} of them for a missing value)" if self.undecided else ""),
            f"{'condition':<{width}}  rejects alone",
        ]
        lines += [f"{text:<{width}}  {n:>13}" for text, n in self.conditions]
        missed = {name: n for name, n in self.missing.items() if n}
        if missed:
            lines.append(
                "missing values: " + ", ".join(f"{name} in {n}" for name, n in missed.items())
            )
        return "\n".join(lines)


def _output_format(path: Path, given: str | None) -> str:
    if given is not None:
        if given not in SINKS:
            raise UsageError(f"unknown output format {given!r}; choose from {', '.join(SINKS)}")
        return given
    try:
        return sink_format(path)
    except ConfigError as err:
        raise UsageError(str(err)) from None


def check_outputs(
    inputs: list[Path], outputs: list[Path], format: str | None, overwrite: bool
) -> list[str]:
    """Check the outputs before anything is read: their formats, that none is an input or
    the other output, that an existing one is replaced only with ``overwrite``, and that each
    can be written. Returns their formats.

    Raises:
        UsageError: a format that cannot be told, an output that is an input (or the other
            output), an existing output without ``overwrite``.
        OutputError: an output that cannot be written.
    """
    from factcap.engine.job import check_writable, has_output, refuse_input_as_output

    if len({str(p.resolve()) for p in outputs}) < len(outputs):
        raise UsageError("the kept and rejected outputs are the same path: choose two")
    formats = []
    for path in outputs:
        fmt = _output_format(path, format)
        sharded = SINKS[fmt].sharded
        refuse_input_as_output(inputs, path, sharded=sharded)
        if has_output(path) and not overwrite:
            raise UsageError(f"{path} exists: pass --overwrite to replace it")
        if fmt == "parquet":
            from factcap.errors import require

            require("pyarrow", "parquet")
        formats.append(fmt)
    for path, fmt in zip(outputs, formats, strict=True):
        check_writable(path, folder=SINKS[fmt].sharded)
    return formats


def compile_for(where: str, scores: Scores | None) -> Where:
    """``where`` compiled against the names these scores give."""
    hint = "" if scores else "; score names such as clip_score need --scores SCORES"
    return compile_where(where, known_names(scores), hint)


class FilterJob:
    """A checked filter, ready to :meth:`run` (see the module docstring). Everything that
    needs no record is checked here: the outputs (before anything is read), the scores, the
    expression, the style.

    Raises:
        UsageError: a bad expression, a ``style`` the scores lack, outputs that exist (without
            ``overwrite``), that are inputs, or whose format cannot be told.
        OutputError: an output that cannot be written.
        DataError, NotFound: unreadable scores.
    """

    def __init__(
        self,
        results: str | Path,
        where: str | Where,
        kept: str | Path,
        rejected: str | Path | None = None,
        scores: str | Path | Scores | None = None,
        *,
        style: str | None = None,
        format: str | None = None,
        overwrite: bool = False,
        image_root: str | Path | None = None,
    ):
        self.results = Path(results)
        self.outputs = [Path(kept)] + ([Path(rejected)] if rejected is not None else [])
        inputs = [self.results] + ([Path(scores)] if isinstance(scores, (str, Path)) else [])
        self.formats = check_outputs(inputs, self.outputs, format, overwrite)
        self.overwrite = overwrite
        table = read_scores(scores) if isinstance(scores, (str, Path)) else scores
        self.where = where if isinstance(where, Where) else compile_for(where, table)
        if table is not None:
            table.keep_only(set(self.where.names))
            if style is not None and table.styles and style not in table.styles:
                raise UsageError(
                    f"--style {style!r}: the scores have no final:{style} rows (they have "
                    f"{', '.join('final:' + s for s in table.styles)})"
                )
        self.scores = table
        self.style = (
            style if style is not None else (table.styles[0] if table and table.styles else None)
        )
        self.images = (
            ImageFinder(self.results, image_root) if "webdataset" in self.formats else None
        )

    def run(self, progress: Callable[[int], None] | None = None) -> FilterStats:
        """Stream every record to the kept or the rejected output; ``progress(1)`` after
        each. Raises :class:`~factcap.errors.DataError` for a record that cannot be read."""
        where, table = self.where, self.scores
        stats = FilterStats(style=self.style, missing=dict.fromkeys(where.names, 0))
        rejects = [0] * len(where.conditions)
        seen: set[str] = set()
        sinks = [
            open_sink(path, fmt, overwrite=self.overwrite, caption_style=self.style or "detailed")
            for path, fmt in zip(self.outputs, self.formats, strict=True)
        ]
        try:
            for number, row in enumerate(read_records(self.results), 1):
                view = RecordRow(row)
                values = values_of(view, table, self.style)
                verdict = where.evaluate(values)
                for index, condition in enumerate(where.conditions):
                    rejects[index] += condition.evaluate(values) is not True
                for name in where.names:
                    stats.missing[name] += values.lookup(name) is None
                stats.records += 1
                seen.add(str(view.id))
                record = _record(row, self.results, number)
                if verdict is True:
                    stats.kept += 1
                    _write(sinks[0], record, self.images)
                else:
                    stats.rejected += 1
                    stats.undecided += verdict is None
                    if len(sinks) > 1:
                        _write(sinks[1], record, self.images)
                if progress is not None:
                    progress(1)
        finally:
            for sink in sinks:
                sink.close()
        stats.conditions = [(c.text, n) for c, n in zip(where.conditions, rejects, strict=True)]
        if table is not None:
            stats.unmatched_scores = sum(
                len(by_style) for rid, by_style in table.values.items() if rid not in seen
            )
        return stats


def filter_records(
    results: str | Path,
    where: str | Where,
    kept: str | Path,
    rejected: str | Path | None = None,
    scores: str | Path | Scores | None = None,
    **options: Any,
) -> FilterStats:
    """Stream the records of ``results`` into ``kept`` (where ``where`` is true) and
    ``rejected`` (the rest; not written when None): :class:`FilterJob` then its ``run``.
    ``options``: ``style``, ``format``, ``overwrite``, ``image_root`` (see
    :class:`FilterJob`), ``progress`` (see :meth:`FilterJob.run`)."""
    progress = options.pop("progress", None)
    return FilterJob(results, where, kept, rejected, scores, **options).run(progress)


def _record(row: dict[str, Any], results: Path, number: int) -> Record:
    try:
        return Record.from_dict(row)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(
            f"{results}: record {number} is not a factcap record ({type(err).__name__}: {err})"
        ) from None


def _write(sink: Any, record: Record, images: ImageFinder | None) -> None:
    item = None
    if images is not None and record.ok:
        found = images.locate(record.source)
        if isinstance(found, Path):
            item = InputItem(source=str(found), id=record.id)
    sink.write(record, item)
