"""Dataset jobs: a folder (or file) under the data root, captioned in a background thread
into ``<jobs_dir>/<id>/results.jsonl`` with :func:`factcap.engine.executor.run_job`."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from factcap.inputs import InputItem


class PathRefused(Exception):
    """The dataset path does not resolve inside the data root (→ 403)."""


class Cancelled(Exception):
    """Raised from the job's progress callback to stop it after the current batch."""


def resolve_inside(root: Path, name: str) -> Path:
    """``name`` resolved (symlinks followed, URL-encoding undone) inside ``root``.

    Raises :class:`PathRefused` for a URL, or a path that ends up outside ``root``
    (``..``, an absolute path elsewhere, a symlink out); :class:`FileNotFoundError` when it
    is inside but missing.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> resolve_inside(root, "../etc")
        Traceback (most recent call last):
        factcap.serve.jobs.PathRefused: '../etc' is outside the data root
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
        raise PathRefused(f"{name!r} is outside the data root")
    if not target.exists():
        raise FileNotFoundError(f"{name!r} does not exist under the data root")
    return target


@dataclass
class Job:
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


class Jobs:
    """Runs dataset jobs one at a time (they share the models with the caption endpoint)."""

    def __init__(self, pipeline: Any, root: Path, jobs_dir: Path):
        self.pipeline, self.root, self.dir = pipeline, Path(root), Path(jobs_dir)
        self.jobs: dict[str, Job] = {}
        self._one_at_a_time = threading.Lock()

    def submit(self, name: str, styles: list[str] | None, instruction: str | None) -> Job:
        path = resolve_inside(self.root, name)
        job_id = uuid.uuid4().hex[:16]
        job = Job(
            id=job_id,
            path=path,
            results=self.dir / job_id / "results.jsonl",
            styles=styles,
            instruction=instruction,
        )
        job.results.parent.mkdir(parents=True, exist_ok=True)
        job.results.touch()
        self.jobs[job_id] = job
        job.thread = threading.Thread(target=self._run, args=(job,), daemon=True)
        job.thread.start()
        return job

    def _items(self, job: Job) -> list[InputItem]:
        from factcap.inputs import expand

        base = self.root.resolve()
        items = list(expand([job.path]))
        for item in items:  # a manifest may name files elsewhere: those are refused too
            if item.image is None and item.data is None:
                real = Path(item.source).resolve()
                if not real.is_relative_to(base):
                    item.problem = f"{item.source} is outside the data root"
                    item.kind = "Forbidden"
        return items

    def _run(self, job: Job) -> None:
        from factcap.engine.executor import run_job
        from factcap.engine.sinks import JsonlSink

        with self._one_at_a_time:
            if job.cancel.is_set():
                job.state, job.finished = "cancelled", time.time()
                return
            job.state = "running"

            def progress(record: Any) -> None:
                job.written += 1
                job.errors += 0 if record.ok else 1
                if job.cancel.is_set():
                    raise Cancelled()

            try:
                items = self._items(job)
                job.total = len(items)
                with JsonlSink(job.results) as sink:
                    run_job(
                        self.pipeline,
                        items,
                        sink,
                        styles=job.styles,
                        instruction=job.instruction,
                        on_record=progress,
                    )
                job.state = "done"
            except Cancelled:
                job.state = "cancelled"
            except Exception as err:  # noqa: BLE001 - reported through GET /v1/jobs/{id}
                job.state, job.message = "failed", f"{type(err).__name__}: {err}"
            finally:
                job.finished = time.time()

    def close(self, timeout: float = 30.0) -> None:
        """Cancel every job (each stops after its current batch) and wait for them."""
        for job in self.jobs.values():
            job.cancel.set()
        for job in self.jobs.values():
            if job.thread is not None:
                job.thread.join(timeout)
