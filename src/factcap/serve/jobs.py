"""Dataset jobs: a dataset under the data root, captioned in a background thread into
``<jobs_dir>/<id>/results.jsonl`` by :class:`factcap.engine.job.CaptionJob`, the same job
runner as ``factcap caption``: every input it reads (folders, manifests, tar shards, Parquet
files, saved datasets) is read here too, streamed.

Records name their images relative to the data root, and no message a client sees holds a
path of the server's own.

Each job's request and state are kept in ``<jobs_dir>/<id>/job.json``, so a server started
again on the same ``jobs_dir`` lists the old jobs and resumes those that had not finished
(a graceful shutdown leaves them ``interrupted``; a crash leaves them ``running``).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from factcap.errors import NotFound, PathRefused
from factcap.inputs import InputItem
from factcap.schema import Record


class Cancelled(Exception):
    """Raised from the job's progress callback to stop it after the current batch."""


def resolve_inside(root: Path, name: str) -> Path:
    """``name`` resolved (symlinks followed, URL-encoding undone) inside ``root``.

    Raises :class:`~factcap.errors.PathRefused` for a URL, or a path that ends up outside
    ``root`` (``..``, an absolute path elsewhere, a symlink out);
    :class:`~factcap.errors.NotFound` when it is inside but missing.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> resolve_inside(root, "../etc")
        Traceback (most recent call last):
        factcap.errors.PathRefused: '../etc' is outside the data root
    """
    if "://" in name or "\0" in name:
        raise PathRefused(f"{name!r} is not a path under the data root (URLs are not fetched)")
    decoded = name
    for _ in range(5):  # %252e%252e → %2e%2e → ..
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    base = root.resolve(strict=True)
    target = (base / decoded).resolve()  # an absolute ``decoded`` replaces ``base``
    if not target.is_relative_to(base):
        if Path(os.path.normpath(base / decoded)).is_relative_to(base):
            raise PathRefused(f"{name!r} leads out of the data root through a symbolic link")
        raise PathRefused(f"{name!r} is outside the data root")
    if not target.exists():
        raise NotFound(f"{name!r} does not exist under the data root")
    return target


@dataclass
class DatasetJob:
    """One dataset job and its progress."""

    id: str
    path: Path
    results: Path
    styles: list[str] | None = None
    instruction: str | None = None
    state: str = "queued"  # queued | running | done | failed | cancelled
    total: int | None = None
    written: int = 0
    errors: int = 0
    message: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    thread: threading.Thread | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "total": self.total,
            "written": self.written,
            "errors": self.errors,
            "message": self.message,
            "created": self.created,
            "finished": self.finished,
        }

    def save(self) -> None:
        """Write the request and state to ``job.json`` next to the results (atomically)."""
        data = {
            **self.to_dict(),
            "path": str(self.path),
            "styles": self.styles,
            "instruction": self.instruction,
        }
        target = self.results.parent / "job.json"
        partial = target.with_suffix(".json.partial")
        partial.write_text(json.dumps(data))
        os.replace(partial, target)

    @classmethod
    def load(cls, folder: Path) -> DatasetJob:
        """The job saved in ``folder/job.json``."""
        data = json.loads((folder / "job.json").read_text())
        return cls(
            id=str(data["id"]),
            path=Path(data["path"]),
            results=folder / "results.jsonl",
            styles=data.get("styles"),
            instruction=data.get("instruction"),
            state=str(data.get("state", "queued")),
            total=data.get("total"),
            written=int(data.get("written") or 0),
            errors=int(data.get("errors") or 0),
            message=data.get("message"),
            created=float(data.get("created") or time.time()),
            finished=data.get("finished"),
        )


UNFINISHED = ("queued", "running", "interrupted")


class Jobs:
    """Runs dataset jobs one at a time (they share the models with the caption endpoint).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> jobs = Jobs(pipeline=None, root=d, jobs_dir=d / "jobs")
        >>> jobs.restore()  # nothing saved there yet
        []
    """

    def __init__(self, pipeline: Any, root: Path, jobs_dir: Path):
        self.pipeline, self.root, self.dir = pipeline, Path(root), Path(jobs_dir)
        self.jobs: dict[str, DatasetJob] = {}
        self._one_at_a_time = threading.Lock()
        self._closing = threading.Event()
        self._by_user: set[str] = set()

    def restore(self) -> list[DatasetJob]:
        """Load the jobs saved in ``jobs_dir`` and resume the unfinished ones (returned)."""
        resumed: list[DatasetJob] = []
        folders = sorted(self.dir.glob("*/job.json")) if self.dir.is_dir() else []
        for saved in folders:
            try:
                job = DatasetJob.load(saved.parent)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a torn or foreign file: not a job this server can run
            if job.id in self.jobs or job.id != saved.parent.name:
                continue
            self.jobs[job.id] = job
            if job.state in UNFINISHED:
                resumed.append(job)
        resumed.sort(key=lambda j: j.created)  # in the order they were submitted
        for job in resumed:
            job.state, job.finished = "queued", None
            job.save()
            self._start(job, resume=True)
        return resumed

    def cancel(self, job: DatasetJob) -> None:
        """Stop ``job`` for good (after its current batch): it is not resumed later."""
        self._by_user.add(job.id)
        job.cancel.set()

    def _start(self, job: DatasetJob, resume: bool = False) -> None:
        job.thread = threading.Thread(target=self._run, args=(job, resume), daemon=True)
        job.thread.start()

    def submit(self, name: str, styles: list[str] | None, instruction: str | None) -> DatasetJob:
        """Start captioning the dataset ``name`` (relative to the data root)."""
        path = resolve_inside(self.root, name)
        job_id = uuid.uuid4().hex[:16]
        job = DatasetJob(
            id=job_id,
            path=path,
            results=self.dir / job_id / "results.jsonl",
            styles=styles,
            instruction=instruction,
        )
        job.results.parent.mkdir(parents=True, exist_ok=True)
        job.results.touch()
        job.save()
        self.jobs[job_id] = job
        self._start(job)
        return job

    def _inside_root(self, item: InputItem) -> InputItem:
        """Refuse an item whose file is outside the data root: a symbolic link inside it that
        leads out, or a path that a manifest or a dataset's path column names."""
        if item.image is None and item.data is None and not item.problem:
            root = self.root.resolve()
            if not Path(item.source).resolve().is_relative_to(root):
                item.problem, item.problem_type = self.outside_root(item.source), "Forbidden"
        return item

    def outside_root(self, source: str) -> str:
        """Why the file ``source``, which resolves outside the data root, was not opened, in
        words that name no server path: it leads out through a symbolic link under the data
        root, or a manifest's line (or a Parquet / CSV path column) names a path elsewhere.

        Example:
            >>> import tempfile
            >>> root = Path(tempfile.mkdtemp())
            >>> (root / "cat.png").symlink_to("/etc/hostname")
            >>> jobs = Jobs(None, root, root / "jobs")
            >>> jobs.outside_root(str(root / "cat.png"))
            'cat.png leads out of the data root through a symbolic link: it was not opened'
            >>> print(jobs.outside_root("/etc/hostname"))  # doctest: +NORMALIZE_WHITESPACE
            a manifest or dataset column names a path outside the data root (hostname): it was
            not opened
        """
        named = Path(os.path.abspath(source))  # as written: symbolic links not followed
        for base in (self.root.resolve(), self.root.absolute()):
            if named.is_relative_to(base):
                inside = named.relative_to(base).as_posix()
                return (
                    f"{inside} leads out of the data root through a symbolic link: "
                    "it was not opened"
                )
        return (
            f"a manifest or dataset column names a path outside the data root ({named.name}): "
            "it was not opened"
        )

    def _relative(self, record: Record) -> None:
        """Name the record's image relative to the data root; no server path in messages."""
        root = str(self.root.resolve())
        if record.source.startswith(root + os.sep):
            record.source = os.path.relpath(record.source, root)
        elif os.path.isabs(record.source):  # a manifest named a file elsewhere: not shown
            record.source = f"<outside the data root>/{os.path.basename(record.source)}"
        if record.error is not None:
            record.error.message = self.scrub(record.error.message)

    def scrub(self, text: str) -> str:
        """``text`` without the server's own paths (the data root and the jobs folder)."""
        for path, label in ((self.root.resolve(), ""), (self.dir.resolve(), "<jobs>")):
            text = text.replace(f"{path}{os.sep}", f"{label}/" if label else "")
            text = text.replace(str(path), label or "<data root>")
        return text

    def _stopped(self, job: DatasetJob) -> str:
        """``cancelled`` when a client asked, ``interrupted`` (resumed later) on shutdown."""
        if self._closing.is_set() and job.id not in self._by_user:
            return "interrupted"
        return "cancelled"

    def _run(self, job: DatasetJob, resume: bool = False) -> None:
        from factcap.engine.job import CaptionJob, JobSpec
        from factcap.engine.records import count_records

        with self._one_at_a_time:
            if job.cancel.is_set():
                job.state, job.finished = self._stopped(job), time.time()
                job.save()
                return
            job.state = "running"
            job.save()

            def progress(record: Any) -> None:
                job.written += 1
                job.errors += 0 if record.ok else 1
                if job.cancel.is_set():
                    raise Cancelled()

            try:
                if resume:  # a moved data root must not widen what the job may read
                    job.path = resolve_inside(self.root, str(job.path))
                    job.written, job.errors = count_records(job.results)
                spec = JobSpec(
                    inputs=[str(job.path)],
                    output=job.results,
                    resume=resume,
                    overwrite=not resume,
                    styles=job.styles,
                    instruction=job.instruction,
                    item_filter=self._inside_root,
                    before_write=self._relative,
                )
                runner = CaptionJob(spec, self.pipeline.config)
                threading.Thread(target=self._count, args=(job, runner), daemon=True).start()
                result = runner.run(self.pipeline, progress)
                job.total = result.written + result.skipped
                job.state = "done"
            except Cancelled:
                job.state = self._stopped(job)
            except Exception as err:  # noqa: BLE001 - reported through GET /v1/jobs/{id}
                job.state, job.message = "failed", self.scrub(f"{type(err).__name__}: {err}")
            finally:
                job.finished = time.time()
                job.save()

    def _count(self, job: DatasetJob, runner: Any) -> None:
        """Count the job's inputs in a second streamed pass, for ``total`` while it runs."""
        try:
            total = sum(1 for _ in runner.inputs())
        except Exception:  # noqa: BLE001 - the job itself reports what is wrong
            return
        if job.state in ("queued", "running") or job.total is None:
            job.total = total

    def close(self, timeout: float = 30.0) -> None:
        """Stop every job (each after its current batch; unfinished ones are resumed by the
        next server on this ``jobs_dir``) and wait for them."""
        self._closing.set()
        for job in self.jobs.values():
            job.cancel.set()
        for job in self.jobs.values():
            if job.thread is not None:
                job.thread.join(timeout)
