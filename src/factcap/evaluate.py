"""``factcap evaluate``: score captions with the metrics of :mod:`factcap.metrics`.

Input is factcap's own output in any of its formats (JSONL, a Parquet or WebDataset folder;
read with :func:`factcap.engine.records.read_records`), or any JSONL whose rows have ``id``,
``source`` (the image path) and ``captions`` (style → text), so captions from other tools can
be scored too. A relative ``source`` is looked up under ``--image-root``, then where the
captioning job ran, beside the results file, and in the current folder
(:class:`~factcap.engine.records.ImageFinder`). Each (image, caption source) pair becomes a
:class:`~factcap.metrics.Sample`; caption sources are ``final:<style>`` and, with
``--source proposals|all``, ``proposal:<model>``.

Output: one row per sample (``{"id", "caption_source", "metrics", "failures"}``) as JSONL, or
Parquet when the path ends in ``.parquet``, written as each caption source is done (a failure
later keeps what was written); a summary JSON next to it (``<stem>.summary.json``: caption
source → value → mean, std, n, n_failed, and ``corpus`` where a metric defines a corpus-level
value; with several caption sources, ``significance``: each source's paired difference from a
baseline with a bootstrap interval, :func:`significance`); and tables for the terminal.

>>> rows = [{"id": "a", "source": "a.jpg", "captions": {"detailed": "A cat."},
...          "proposals": [{"model": "m", "text": "cat"}], "status": "ok"}]
>>> [s.caption_source for s in build_samples(rows, "all", {}, {})]
['final:detailed', 'proposal:m']
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcap.engine.records import ImageFinder, read_jsonl
from factcap.errors import ConfigError, MissingDependency, OutputError
from factcap.metrics import Metric, Sample, Score, summarise
from factcap.metrics import build as build_metric
from factcap.rows import RecordRow
from factcap.schema import Media, json_safe
from factcap.stats import CONFIDENCE, N_RESAMPLES, paired_difference

SOURCES = ("final", "proposals", "all")


@dataclass
class References:
    """Human captions and ground-truth objects, by result ``id`` or by image file name."""

    captions: dict[str, list[str]] = field(default_factory=dict)
    objects: dict[str, list[str]] = field(default_factory=dict)
    answers: dict[str, list[str]] = field(default_factory=dict)
    questions: dict[str, str] = field(default_factory=dict)

    def for_row(self, row: RecordRow | dict[str, Any]) -> tuple[list[str], list[str] | None]:
        """A row's reference captions and ground-truth objects (the references', else the
        objects its input gave: ``extra.objects``)."""
        row = RecordRow.of(row)
        keys = _keys(row)
        caps = next((self.captions[k] for k in keys if k in self.captions), [])
        objs = next((self.objects[k] for k in keys if k in self.objects), None)
        given = row.extra.get("objects")
        if objs is None and isinstance(given, list):
            objs = [str(o) for o in given]
        return caps, objs

    def question_for(self, row: RecordRow | dict[str, Any]) -> tuple[str | None, list[str]]:
        """The question about a row's image (the references', else the record's own
        ``question``) and its reference answers."""
        row = RecordRow.of(row)
        keys = _keys(row)
        question = next((self.questions[k] for k in keys if k in self.questions), None)
        if question is None:
            question = row.question
        return question, next((self.answers[k] for k in keys if k in self.answers), [])


def _keys(row: RecordRow) -> list[str]:
    """What references may be keyed by: the record's id, its image's file name."""
    return [str(row.id), Path(row.source or "").name]


def read_references(path: Path | None) -> References:
    """A JSONL of ``{"id", "references": [...], "objects": [...]?, "answer": "..."?,
    "question": "..."?}`` (``answer``: a string or a list of acceptable answers to the
    record's question, or to ``question`` when the row gives one) or a COCO captions JSON
    (``images`` with ``file_name``, ``annotations`` with ``image_id`` and ``caption``); COCO
    references are keyed by file name, so they match results by their image's name, or by
    the record id when an image carries ``factcap_id`` (``factcap export --to coco`` writes
    it, so two images of the same name stay apart)."""
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
        names = {
            img["id"]: str(img.get("factcap_id") or img.get("file_name", img["id"]))
            for img in data.get("images", [])
        }
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
        answer = row.get("answer")
        if isinstance(answer, (str, list)):
            answers = [answer] if isinstance(answer, str) else answer
            refs.answers[key] = [str(a) for a in answers if str(a).strip()]
        if isinstance(row.get("question"), str) and row["question"].strip():
            refs.questions[key] = " ".join(row["question"].split())
    return refs


def build_samples(
    rows: Iterable[dict[str, Any]],
    source: str,
    refs: References | dict,
    extra: dict,
    images: ImageFinder | None = None,
) -> list[Sample]:
    """Samples for every caption of every row (``source``: final, proposals or all).

    Rows whose ``status`` is ``error`` have no captions and yield nothing. OCR proposals (the
    record's ``models.ocr``) are text read from the image, not captions, and are skipped.
    With ``images``, a sample's ``source`` is the file it finds (left as written when there
    is none: decoding then says the file is missing).
    """
    if source not in SOURCES:
        raise ConfigError(f"--source must be one of {', '.join(SOURCES)}")
    if isinstance(refs, dict):
        refs = References(**refs) if refs else References()
    samples: list[Sample] = []
    for raw in rows:
        row = RecordRow.of(raw)
        if not row.ok or row.id is None or row.source is None:
            continue
        references, objects = refs.for_row(row)
        question, answers = refs.question_for(row)
        found = images.locate(row.source) if images else None
        common = {
            "id": row.id,
            "source": str(found) if isinstance(found, Path) else row.source,
            **_media_fields(row, images),
            "references": references,
            "objects": objects,
            "claims": [dict(c.raw) for c in row.claims],
            "question": question,
            "answers": answers,
            "regions": row.regions,
        }
        if source in ("final", "all"):
            for style, text in row.captions.items():
                samples.append(Sample(caption_source=f"final:{style}", caption=text, **common))
        if source in ("proposals", "all"):
            ocr = row.models.get("ocr")
            for proposal in row.proposals:
                if proposal.model != ocr:
                    samples.append(
                        Sample(
                            caption_source=f"proposal:{proposal.model}",
                            caption=proposal.text,
                            **common,
                        )
                    )
    return samples


def _media_fields(row: RecordRow, images: ImageFinder | None) -> dict[str, Any]:
    """A row's media for its samples (saved view files found like images)."""
    media = row.media
    views = []
    for view in media.views:
        view = dict(view)
        if images and isinstance(view.get("file"), str):
            found = images.locate(view["file"])
            view["file"] = str(found) if isinstance(found, Path) else None
        views.append(view)
    size = row.image_size
    return {
        "media": Media(media.kind, views, media.facts),
        "view_size": size[0] if size else None,
    }


@dataclass
class Evaluation:
    """Per-sample scores (aligned with ``samples``) and the summary per caption source."""

    samples: list[Sample]
    scores: list[dict[str, Score]]
    summary: dict[str, dict[str, dict[str, float]]]
    unavailable: dict[str, str] = field(default_factory=dict)
    """Value names that nothing could be computed for because of what was given, not because
    of a fault: value name → what it needs (:func:`unavailable_values`)."""

    def rows(self) -> Iterator[dict[str, Any]]:
        """The output rows: values (NaN → null) by value name, failure reasons by metric name."""
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
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> Evaluation:
    """Score ``samples`` with each metric (a name from ``METRICS``, or a :class:`Metric`),
    one caption source at a time (self-retrieval and CIDEr are defined over a set), and
    summarise per caption source. A metric that raises fails its samples with the reason.
    ``on_rows`` gets each caption source's output rows as soon as they are done."""
    metrics = [
        m if isinstance(m, Metric) else build_metric(m, **(options or {}).get(m, {}))
        for m in metric_names
    ]
    for sample in samples:  # an input of several views: the image metrics look at each
        if hasattr(resources, "add_media"):
            resources.add_media(sample.source, sample.media, sample.view_size)
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
        if on_rows is not None:
            done = Evaluation(group, [scores[i] for i in indices], {})
            on_rows(list(done.rows()))
    missing = unavailable_values(samples, metrics, summary)
    return Evaluation(list(samples), scores, summary, missing)


#: What to give for each input a metric may need (:attr:`Metric.needs`).
_INPUT_NEEDED = {
    "references": "--references (reference captions)",
    "objects": '--references with ground-truth "objects" (or COCO instances)',
    "answers": '--references with an "answer" per image',
}
#: The values that need a metric's inputs, where its other values are computed without them
#: (chair_ov_i checks the caption against the pipeline's own verdicts).
_VALUES_NEEDING_INPUTS = {"chair": ("chair_s", "chair_i")}
_RECALL = re.compile(r"self_retrieval_r(\d+)")


def unavailable_values(
    samples: Sequence[Sample],
    metrics: Sequence[Metric],
    summary: dict[str, dict[str, dict[str, float]]],
) -> dict[str, str]:
    """The values no caption source got a number for because of the inputs given, each with
    what it needs: references, ground-truth objects or answers that no sample has, or (self
    retrieval's recall@k) more than k images. A value some source computed is never listed,
    nor one that failed for another reason (a model's error, a missing image). The gallery
    size is listed with an empty need when no recall was measured against it.

    >>> from factcap.metrics.chair import Chair
    >>> s = Sample("a", "a.jpg", "final:short", "A dog.")
    >>> summary = {"final:short": {"chair_s": {"n": 0}, "chair_i": {"n": 0},
    ...                            "chair_ov_i": {"n": 1}}}
    >>> unavailable_values([s], [Chair()], summary)["chair_s"]
    '--references with ground-truth "objects" (or COCO instances)'
    """
    have = {
        "references": any(s.references for s in samples),
        "objects": any(s.objects is not None for s in samples),
        "answers": any(s.answers for s in samples),
    }
    needs: dict[str, str] = {}
    for metric in metrics:
        lacking = [n for n in _INPUT_NEEDED if n in metric.needs and not have[n]]
        if lacking:
            names = _VALUES_NEEDING_INPUTS.get(metric.name, metric.value_names)
            needs.update(dict.fromkeys(names, " and ".join(_INPUT_NEEDED[n] for n in lacking)))
    gallery = max(
        (int(s.get("self_retrieval_gallery_size", {}).get("corpus", 0)) for s in summary.values()),
        default=0,
    )
    recalls = {n for stats in summary.values() for n in stats if _RECALL.fullmatch(n)}
    for name in sorted(recalls):
        k = int(_RECALL.fullmatch(name).group(1))  # type: ignore[union-attr]
        if name not in needs and 0 < gallery <= k:
            plural = "image" if k == 1 else "images"
            needs[name] = f"more than {k} {plural} to rank (the gallery has {gallery})"
    computed = {
        name
        for stats in summary.values()
        for name, value in stats.items()
        if int(value.get("n", 0) or 0) > 0
    }
    needs = {name: need for name, need in needs.items() if name not in computed}
    if recalls and recalls <= set(needs):  # the size only tells what recall@k was measured on
        needs["self_retrieval_gallery_size"] = ""
    return needs


def significance(
    evaluation: Evaluation,
    baseline: str | None = None,
    n_resamples: int = N_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Paired differences of every caption source against ``baseline`` (default: the first
    ``final:`` source), for every value, with a bootstrap interval over images.

    For each value and source, the images where both the source and the baseline have a
    finite value are paired; ``diff`` is the mean of ``source - baseline`` over them, ``low``
    and ``high`` the percentile-bootstrap interval (:func:`factcap.stats.paired_difference`),
    and ``significant`` says the interval excludes zero. Corpus-level metrics (BLEU, CIDEr)
    are compared on their per-image values. None when there is nothing to compare.

    >>> ev = Evaluation(
    ...     [Sample(str(i), "x.jpg", src, "c") for i in range(3) for src in ("final:a", "proposal:m")],
    ...     [{"m": Score({"v": v})} for v in (0.5, 0.3, 0.6, 0.4, 0.7, 0.5)],
    ...     {},
    ... )
    >>> d = significance(ev)["differences"]["proposal:m"]["v"]
    >>> round(d["diff"], 4), d["n"], d["significant"]
    (-0.2, 3, True)
    """
    values: dict[str, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for sample, by_metric in zip(evaluation.samples, evaluation.scores, strict=True):
        for score in by_metric.values():
            for name, value in score.values.items():
                values[sample.caption_source][name][sample.id] = value
    sources = list(values)
    baseline = baseline or next((s for s in sources if s.startswith("final:")), None)
    if baseline is None or baseline not in values or len(sources) < 2:
        return None
    differences: dict[str, dict[str, dict[str, Any]]] = {}
    for source in sources:
        if source == baseline:
            continue
        for name, by_id in values[source].items():
            base = values[baseline].get(name, {})
            ids = [i for i in by_id if i in base]
            if not ids:
                continue
            diff = paired_difference(
                [by_id[i] for i in ids], [base[i] for i in ids], n_resamples, confidence, seed
            )
            if diff.n:
                differences.setdefault(source, {})[name] = diff.as_dict()
    return {
        "baseline": baseline,
        "confidence": confidence,
        "n_resamples": n_resamples,
        "differences": differences,
    }


def significance_table(result: dict[str, Any]) -> str:
    """The differences of :func:`significance` as a fixed-width table (``*``: the interval
    excludes zero).

    >>> sig = {"baseline": "final:a", "confidence": 0.95, "differences": {"proposal:m": {
    ...     "v": {"diff": -0.2, "low": -0.25, "high": -0.1, "n": 3, "significant": True}}}}
    >>> print(significance_table(sig))
    difference from final:a (paired over images, 95% bootstrap CI; * excludes 0)
    value                    proposal:m
    -----------------------------------
    v      -0.2000 [-0.2500, -0.1000] *
    """
    differences = result["differences"]
    sources = list(differences)
    names: list[str] = []
    for by_name in differences.values():
        names.extend(k for k in by_name if k not in names)

    def cell(d: dict[str, Any] | None) -> str:
        if not d:
            return "-"
        interval = "" if not math.isfinite(d["low"]) else f" [{d['low']:+.4f}, {d['high']:+.4f}]"
        return f"{d['diff']:+.4f}{interval}{' *' if d['significant'] else ''}"

    cells = {(n, s): cell(differences[s].get(n)) for n in names for s in sources}
    level = round(100 * float(result.get("confidence", CONFIDENCE)))
    title = (
        f"difference from {result['baseline']} (paired over images, {level}% bootstrap CI; "
        "* excludes 0)"
    )
    return title + "\n" + _grid(names, sources, cells)


def _grid(names: Sequence[str], sources: Sequence[str], cells: dict[tuple[str, str], str]) -> str:
    """One row per value name, one right-aligned column per caption source, a rule under
    the header."""
    first = max([len("value")] + [len(n) for n in names])
    widths = [max([10, len(s)] + [len(cells[n, s]) for n in names]) for s in sources]
    header = f"{'value':<{first}}  " + "  ".join(
        f"{s:>{w}}" for s, w in zip(sources, widths, strict=True)
    )
    lines = [header, "-" * len(header)]
    for name in names:
        row = "  ".join(f"{cells[name, s]:>{w}}" for s, w in zip(sources, widths, strict=True))
        lines.append(f"{name:<{first}}  {row}")
    return "\n".join(lines)


def resources_for(config: Any, overrides: dict[str, str | None] | None = None) -> Any:
    """A :class:`~factcap.metrics.resources.Resources` whose roles are the config's models of
    every role evaluation uses (:data:`factcap.roles.ROLES`: ``llm``, ``vqa``, ``embedder``,
    ``t2i``, ``text_embedder``); ``overrides`` replaces a role's model spec (``--clip`` is
    the ``embedder``, ``--t2i``, ``--vqa``)."""
    from factcap.backends.registry import build_configured
    from factcap.config import RoleConfig
    from factcap.metrics.resources import Resources
    from factcap.roles import ROLES

    builders: dict[str, Callable[[], Any]] = {}
    for role in ROLES.values():
        if "evaluate" not in role.used_by or role.many:
            continue
        rc = getattr(config, role.config_key)
        spec = (overrides or {}).get(role.name)
        if spec:
            rc = RoleConfig(model=spec)
        if rc is not None:
            builders[role.name] = lambda n=role.name, rc=rc: build_configured(config, n, rc)[0]
    limits = config.limits.decode_limits()
    return Resources(builders, batch_size=config.evaluate.batch_size, limits=limits)


class ScoreWriter:
    """Writes score rows as they come: JSONL (flushed per batch of rows) or Parquet (one row
    group per batch), then the summary JSON beside them on :meth:`close`. Write errors are
    :class:`~factcap.errors.OutputError` (what was written stays)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.summary_path = self.out.with_name(self.out.stem + ".summary.json")
        self._handle: Any = None
        self._parquet: Any = None
        self._closed = False
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            if self.out.suffix != ".parquet":
                self._handle = self.out.open("w", encoding="utf-8")
        except OSError as err:
            raise OutputError(f"cannot write {self.out}: {err.strerror or err}") from None

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append ``rows`` (output rows of :meth:`Evaluation.rows`)."""
        if not rows:
            return
        if self._closed:
            raise ValueError(f"write() on a closed score writer ({self.out})")
        try:
            if self._handle is not None:
                for row in rows:
                    self._handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
                self._handle.flush()
            else:
                self._write_parquet(rows)
        except OSError as err:
            raise OutputError(f"cannot write {self.out}: {err.strerror or err}") from None

    def _write_parquet(self, rows: Sequence[dict[str, Any]]) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingDependency(
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
        if self._parquet is None:
            self._parquet = pq.ParquetWriter(self.out, table.schema)
        self._parquet.write_table(table.cast(self._parquet.schema))

    def close(self, summary: dict[str, Any] | None = None) -> Path:
        """Finish the rows (again: nothing) and write ``summary`` beside them, when given;
        returns the summary's path."""
        self._closed = True
        try:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            if self._parquet is not None:
                self._parquet.close()
                self._parquet = None
            if summary is not None:
                text = json.dumps(json_safe(summary), indent=2, ensure_ascii=False, allow_nan=False)
                self.summary_path.write_text(text, encoding="utf-8")
        except OSError as err:
            raise OutputError(f"cannot write {self.out}: {err.strerror or err}") from None
        return self.summary_path


def write_rows(evaluation: Evaluation, out: Path) -> Path:
    """Per-sample rows to ``out`` (JSONL, or Parquet for ``.parquet``) and the summary beside
    them; returns the summary path, ``<stem>.summary.json``."""
    writer = ScoreWriter(out)
    writer.write(list(evaluation.rows()))
    return writer.close(evaluation.summary)


def _cell(stats: dict[str, float]) -> str:
    value = stats.get("corpus", stats.get("mean", float("nan")))
    if "n" not in stats and isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:g}"  # a corpus-level count, such as the retrieval gallery's size
    n, failed = int(stats.get("n", 0) or 0), int(stats.get("n_failed", 0) or 0)
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    count = f"n={n}" + (f", {failed} failed" if failed else "")
    return f"{value:.4f} ({count})" if ok else f"n/a ({count})"


def table(
    summary: dict[str, dict[str, dict[str, float]]], unavailable: dict[str, str] | None = None
) -> str:
    """The summary as a fixed-width table: one row per value, one column per caption source.
    Each cell is the corpus value where the metric defines one, else the mean (``n/a`` where
    nothing could be computed), with how many items it covers and how many failed (their
    reasons are in the rows' ``failures``). The values in ``unavailable``
    (:attr:`Evaluation.unavailable`) get no row: one line under the table says what they need.

    >>> summary = {"final:detailed": {"clip_score": {"mean": 0.5, "n": 2, "n_failed": 1},
    ...     "chair_s": {"mean": math.nan, "n": 0, "n_failed": 3}}}
    >>> print(table(summary, {"chair_s": "--references with objects"}))
    value               final:detailed
    ----------------------------------
    clip_score  0.5000 (n=2, 1 failed)
    not computed: chair_s: needs --references with objects
    """
    unavailable = unavailable or {}
    sources = list(summary)
    names: list[str] = []
    for stats in summary.values():
        names.extend(k for k in stats if k not in names and k not in unavailable)
    cells = {(n, s): _cell(summary[s].get(n, {})) for n in names for s in sources}
    grouped: dict[str, list[str]] = {}
    for name, need in unavailable.items():
        if need:
            grouped.setdefault(need, []).append(name)
    notes = [
        f"{', '.join(group)}: {'needs' if len(group) == 1 else 'need'} {need}"
        for need, group in grouped.items()
    ]
    lines = [_grid(names, sources, cells)] if names else []
    if len(notes) == 1:
        lines.append(f"not computed: {notes[0]}")
    elif notes:
        lines += ["not computed:", *(f"  {note}" for note in notes)]
    return "\n".join(lines)


def pairwise_path(out: Path) -> Path:
    """Where ``--pairwise`` rows go beside the scores ``out``: ``<stem>.pairwise.jsonl``.

    >>> pairwise_path(Path("runs/scores.parquet")).as_posix()
    'runs/scores.pairwise.jsonl'
    """
    out = Path(out)
    return out.with_name(out.stem + ".pairwise.jsonl")


def parse_pairs(specs: Sequence[str], known: Sequence[str]) -> list[tuple[str, str]]:
    """``--pairwise A,B`` values as (A, B) caption-source pairs, each source one of
    ``known``; :class:`~factcap.errors.ConfigError` naming the known ones otherwise.

    >>> parse_pairs(["final:detailed,proposal:m"], ["final:detailed", "proposal:m"])
    [('final:detailed', 'proposal:m')]
    """
    pairs = []
    for spec in specs:
        parts = [p.strip() for p in spec.split(",")]
        if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
            raise ConfigError(
                f"--pairwise {spec!r}: expected two different caption sources, A,B "
                "(e.g. final:detailed,proposal:tiny:blip)"
            )
        unknown = [p for p in parts if p not in known]
        if unknown:
            raise ConfigError(
                f"--pairwise {spec!r}: no caption source {', '.join(map(repr, unknown))}; "
                f"the results have: {', '.join(known)}"
            )
        pairs.append((parts[0], parts[1]))
    return pairs


def write_pairwise(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """The pairwise rows (:func:`factcap.metrics.pairwise.compare`) as JSONL at ``path``."""
    try:
        with Path(path).open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(json_safe(row), ensure_ascii=False, allow_nan=False))
                handle.write("\n")
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    return Path(path)
