"""``factcap evaluate``: score captions with the metrics of :mod:`factcap.metrics`.

Input is factcap's own results JSONL, or any JSONL whose rows have ``id``, ``source`` (the
image path) and ``captions`` (style → text), so captions from other tools can be scored too.
Each (image, caption source) pair becomes a :class:`~factcap.metrics.Sample`; caption
sources are ``final:<style>`` and, with ``--source proposals|all``, ``proposal:<model>``.

Output: one row per sample (``{"id", "caption_source", "metrics", "failures"}``) as JSONL, or
Parquet when the path ends in ``.parquet``; a summary JSON next to it
(``<stem>.summary.json``: caption source → value → mean, std, n, n_failed, and ``corpus``
where a metric defines a corpus-level value); and a table for the terminal.

>>> rows = [{"id": "a", "source": "a.jpg", "captions": {"detailed": "A cat."},
...          "proposals": [{"model": "m", "text": "cat"}], "status": "ok"}]
>>> [s.caption_source for s in build_samples(rows, "all", {}, {})]
['final:detailed', 'proposal:m']
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcap.engine.sinks import json_safe
from factcap.errors import ConfigError
from factcap.metrics import Metric, Sample, Score, summarise
from factcap.metrics import build as build_metric

SOURCES = ("final", "proposals", "all")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file; a line that is not a JSON object is a clear error."""
    if not Path(path).is_file():
        raise ConfigError(f"no such file: {path}")
    with Path(path).open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise ConfigError(f"{path}:{line_no}: not valid JSON") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{line_no}: not a JSON object")
            yield row


@dataclass
class References:
    """Human captions and ground-truth objects, by result ``id`` or by image file name."""

    captions: dict[str, list[str]] = field(default_factory=dict)
    objects: dict[str, list[str]] = field(default_factory=dict)

    def for_row(self, row: dict[str, Any]) -> tuple[list[str], list[str] | None]:
        keys = [str(row.get("id")), Path(str(row.get("source", ""))).name]
        caps = next((self.captions[k] for k in keys if k in self.captions), [])
        objs = next((self.objects[k] for k in keys if k in self.objects), None)
        if objs is None and isinstance(row.get("extra", {}).get("objects"), list):
            objs = [str(o) for o in row["extra"]["objects"]]
        return caps, objs


def read_references(path: Path | None) -> References:
    """A JSONL of ``{"id", "references": [...], "objects": [...]?}`` or a COCO captions JSON
    (``images`` with ``file_name``, ``annotations`` with ``image_id`` and ``caption``); COCO
    references are keyed by file name, so they match results by their image's name."""
    refs = References()
    if path is None:
        return refs
    path = Path(path)
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read COCO references {path}: {err}") from None
        if not isinstance(data, dict) or "annotations" not in data:
            raise ConfigError(f"{path} is not a COCO captions file (no 'annotations')")
        names = {img["id"]: img.get("file_name", str(img["id"])) for img in data.get("images", [])}
        for ann in data.get("annotations", []):
            key = names.get(ann["image_id"], str(ann["image_id"]))
            refs.captions.setdefault(key, []).append(str(ann["caption"]))
        return refs
    for row in read_jsonl(path):
        key = str(row.get("id", ""))
        if isinstance(row.get("references"), list):
            refs.captions[key] = [str(r) for r in row["references"]]
        if isinstance(row.get("objects"), list):
            refs.objects[key] = [str(o) for o in row["objects"]]
    return refs


def build_samples(
    rows: Iterable[dict[str, Any]], source: str, refs: References | dict, extra: dict
) -> list[Sample]:
    """Samples for every caption of every row (``source``: final, proposals or all).

    Rows whose ``status`` is ``error`` have no captions and yield nothing. OCR proposals (the
    record's ``models.ocr``) are text read from the image, not captions, and are skipped.
    """
    if source not in SOURCES:
        raise ConfigError(f"--source must be one of {', '.join(SOURCES)}")
    if isinstance(refs, dict):
        refs = References(**refs) if refs else References()
    samples: list[Sample] = []
    for row in rows:
        if row.get("status", "ok") != "ok" or "id" not in row or "source" not in row:
            continue
        references, objects = refs.for_row(row)
        common = {
            "id": str(row["id"]),
            "source": str(row["source"]),
            "references": references,
            "objects": objects,
            "claims": list(row.get("claims") or []),
        }
        if source in ("final", "all"):
            for style, text in (row.get("captions") or {}).items():
                samples.append(Sample(caption_source=f"final:{style}", caption=str(text), **common))
        if source in ("proposals", "all"):
            ocr = (row.get("models") or {}).get("ocr")
            for proposal in row.get("proposals") or []:
                if proposal.get("model") != ocr:
                    samples.append(
                        Sample(
                            caption_source=f"proposal:{proposal.get('model')}",
                            caption=str(proposal.get("text", "")),
                            **common,
                        )
                    )
    return samples


@dataclass
class Evaluation:
    """Per-sample scores (aligned with ``samples``) and the summary per caption source."""

    samples: list[Sample]
    scores: list[dict[str, Score]]
    summary: dict[str, dict[str, dict[str, float]]]

    def rows(self) -> Iterator[dict[str, Any]]:
        """The output rows: values (NaN → null) and failure reasons by value name."""
        for sample, by_metric in zip(self.samples, self.scores, strict=True):
            values: dict[str, float | None] = {}
            failures: dict[str, str] = {}
            info: dict[str, Any] = {}
            for name, score in by_metric.items():
                for key, value in score.values.items():
                    values[key] = value if math.isfinite(value) else None
                if score.failure:
                    failures[name] = score.failure
                info.update(score.info)
            row = {
                "id": sample.id,
                "caption_source": sample.caption_source,
                "metrics": values,
                "failures": failures,
            }
            if info:
                row["info"] = info
            yield row


def evaluate(
    samples: Sequence[Sample],
    metric_names: Sequence[str | Metric],
    resources: Any,
    options: dict[str, dict[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Score ``samples`` with each metric (a name from ``METRICS``, or a :class:`Metric`),
    one caption source at a time (self-retrieval and CIDEr are defined over a set), and
    summarise per caption source. A metric that raises fails its samples with the reason."""
    metrics = [
        m if isinstance(m, Metric) else build_metric(m, **(options or {}).get(m, {}))
        for m in metric_names
    ]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        groups[sample.caption_source].append(i)
    scores: list[dict[str, Score]] = [{} for _ in samples]
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for caption_source, indices in groups.items():
        group = [samples[i] for i in indices]
        summary[caption_source] = {}
        for metric in metrics:
            try:
                results = metric.score(group, resources)
            except KeyError as err:  # a model role the metric needs is not configured
                results = [Score.failed(metric.value_names, str(err.args[0]))] * len(group)
            except Exception as err:  # a model that failed: these samples say why
                reason = f"{metric.name} failed: {type(err).__name__}: {err}"[:500]
                results = [Score.failed(metric.value_names, reason)] * len(group)
            for i, score in zip(indices, results, strict=True):
                scores[i][metric.name] = score
            stats = summarise(results)
            for key, value in metric.corpus(group, results).items():
                stats.setdefault(key, {})["corpus"] = value
            summary[caption_source].update(stats)
            if progress:
                progress(f"{metric.name} on {caption_source}")
    return Evaluation(list(samples), scores, summary)


def resources_for(config: Any, overrides: dict[str, str | None] | None = None) -> Any:
    """A :class:`~factcap.metrics.resources.Resources` whose roles come from the config's
    ``embedder``, ``t2i``, ``vqa``, ``llm`` and ``text_embedder``; ``overrides`` replaces a
    role's model spec (``--clip``, ``--t2i``, ``--vqa``)."""
    from factcap.config import RoleConfig
    from factcap.images import DecodeLimits
    from factcap.metrics.resources import Resources
    from factcap.pipeline.runner import build_role

    builders: dict[str, Callable[[], Any]] = {}
    for role in ("embedder", "t2i", "vqa", "llm", "text_embedder"):
        rc = getattr(config, role)
        spec = (overrides or {}).get(role)
        if spec:
            rc = RoleConfig(model=spec)
        if rc is not None:
            builders[role] = lambda role=role, rc=rc: build_role(config, role, rc)[0]
    limits = DecodeLimits(
        max_pixels=config.limits.max_pixels,
        max_file_bytes=int(config.limits.max_file_mb * 1024 * 1024),
    )
    return Resources(builders, batch_size=config.evaluate.batch_size, limits=limits)


def write_rows(evaluation: Evaluation, out: Path) -> Path:
    """Per-sample rows to ``out`` (JSONL, or Parquet for ``.parquet``); returns the summary
    path, ``<stem>.summary.json`` beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = list(evaluation.rows())
    if out.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(
                "Parquet output needs pyarrow: pip install 'factcap[parquet]'"
            ) from None
        table = pa.Table.from_pylist(
            [
                {
                    **r,
                    "metrics": json.dumps(r["metrics"]),
                    "failures": json.dumps(r["failures"]),
                    "info": json.dumps(r.get("info", {})),
                }
                | {f"m.{k}": v for k, v in r["metrics"].items()}
                for r in rows
            ]
        )
        pq.write_table(table, out)
    else:
        with out.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
    summary_path = out.with_name(out.stem + ".summary.json")
    summary_path.write_text(
        json.dumps(json_safe(evaluation.summary), indent=2, ensure_ascii=False, allow_nan=False),
        encoding="utf-8",
    )
    return summary_path


def table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """The summary as a fixed-width table: one row per value, one column per caption source
    (the corpus value where the metric defines one, else the mean; ``n/a`` where nothing
    could be computed).

    >>> print(table({"final:detailed": {"clip_score": {"mean": 0.5}}}))
    value       final:detailed
    --------------------------
    clip_score          0.5000
    """
    sources = list(summary)
    names: list[str] = []
    for stats in summary.values():
        names.extend(k for k in stats if k not in names)
    first = max([len("value")] + [len(n) for n in names])
    widths = [max(10, len(s)) for s in sources]
    header = f"{'value':<{first}}  " + "  ".join(
        f"{s:>{w}}" for s, w in zip(sources, widths, strict=True)
    )
    lines = [header, "-" * len(header)]
    for name in names:
        cells = []
        for source, w in zip(sources, widths, strict=True):
            cell = summary[source].get(name, {})
            value = cell.get("corpus", cell.get("mean", float("nan")))
            ok = isinstance(value, (int, float)) and math.isfinite(value)
            cells.append(f"{value:>{w}.4f}" if ok else f"{'n/a':>{w}}")
        lines.append(f"{name:<{first}}  " + "  ".join(cells))
    return "\n".join(lines)
