"""Micro-batching: concurrent caption requests run as one pipeline batch in one thread."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from factcap.errors import QueueFull, ShuttingDown
from factcap.inputs import InputItem
from factcap.schema import Record

__all__ = ["Batcher", "Pending", "QueueFull", "ShuttingDown"]


@dataclass
class Pending:
    """One queued request: its item, how to caption it, and where the answer goes."""

    item: InputItem
    styles: tuple[str, ...] | None
    instruction: str | None
    notes: Sequence[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Record] = field(repr=False)


class Batcher:
    """Gathers queued requests (up to ``max_batch``, waiting at most ``max_wait_s`` after
    the first) and runs them through ``pipeline.process`` as one batch, in a single worker
    thread: the models are used by one thread at a time and loaded once.

    The queue is bounded (``queue_size``): :meth:`submit` raises :class:`QueueFull` instead
    of growing memory.

    Example (inside a running event loop):
        >>> # batcher = Batcher(pipeline, max_batch=4, queue_size=64).start()
        >>> # record = await batcher.submit(item)
    """

    def __init__(
        self, pipeline: Any, max_batch: int, queue_size: int = 64, max_wait_s: float = 0.005
    ):
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be at least 1")
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.batches: list[int] = []  # size of every batch run, for monitoring and tests
        self._queue: queue.Queue[Pending] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._accepting = False
        self._gate = threading.Lock()  # no submit slips in after close() drained the queue
        self._thread: threading.Thread | None = None

    def start(self) -> Batcher:
        self._accepting = True
        self._thread = threading.Thread(target=self._work, name="factcap-batcher", daemon=True)
        self._thread.start()
        return self

    @property
    def depth(self) -> int:
        """Requests waiting in the queue now."""
        return self._queue.qsize()

    def submit(
        self,
        item: InputItem,
        styles: Sequence[str] | None = None,
        instruction: str | None = None,
        notes: Sequence[str] = (),
    ) -> asyncio.Future[Record]:
        """Queue ``item``; the returned future (of the running loop) gets its record."""
        loop = asyncio.get_running_loop()
        job = Pending(
            item=item,
            styles=tuple(styles) if styles else None,
            instruction=instruction,
            notes=tuple(notes),
            loop=loop,
            future=loop.create_future(),
        )
        with self._gate:
            if not self._accepting:
                raise ShuttingDown("the service is shutting down")
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFull(f"the queue is full ({self._queue.maxsize} requests)") from None
        return job.future

    @property
    def closing(self) -> bool:
        """Whether the batcher has stopped taking requests."""
        return self._stop.is_set()

    def cancel_queued(self) -> int:
        """Stop accepting and answer every queued request with :class:`ShuttingDown` (503);
        the batch in progress finishes. Never blocks: safe in a signal handler. Returns how
        many were cancelled."""
        with self._gate:
            self._accepting = False
        self._stop.set()
        cancelled = 0
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return cancelled
            _settle(job, error=ShuttingDown("the service shut down before this request ran"))
            cancelled += 1

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting; let the batch in progress finish; cancel what is still queued."""
        self.cancel_queued()
        if self._thread is not None:
            self._thread.join(timeout)
        self.cancel_queued()  # anything the worker had gathered but not started

    # --- worker thread --------------------------------------------------------------------

    def _gather(self) -> list[Pending]:
        try:
            first = self._queue.get(timeout=0.05)
        except queue.Empty:
            return []
        jobs = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(jobs) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                jobs.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return jobs

    def _work(self) -> None:
        while not self._stop.is_set():
            jobs = self._gather()
            if not jobs:
                continue
            # one pipeline batch per (styles, instruction): they are batch-wide settings
            groups: dict[tuple[Any, ...], list[Pending]] = {}
            for job in jobs:
                groups.setdefault((job.styles, job.instruction), []).append(job)
            for (styles, instruction), group in groups.items():
                self._run(group, styles, instruction)

    def _run(self, jobs: list[Pending], styles: Any, instruction: str | None) -> None:
        self.batches.append(len(jobs))
        try:
            records = self.pipeline.process([j.item for j in jobs], styles, instruction)
        except BaseException as err:  # noqa: BLE001 - every waiting request must be answered
            for job in jobs:
                _settle(job, error=err)
            return
        for job, record in zip(jobs, records, strict=True):
            record.notes[:0] = list(job.notes)
            _settle(job, record=record)


def _settle(job: Pending, record: Record | None = None, error: BaseException | None = None) -> None:
    def apply() -> None:
        if job.future.done():  # the client went away and the request was cancelled
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(record)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        job.loop.call_soon_threadsafe(apply)
