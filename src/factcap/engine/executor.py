"""The local executor: read+decode, model stages and writing overlap through bounded queues.

Threads: one reads the source and decodes the next batches (``Pipeline.prepare``), one (or
``workers``) runs the model stages (``Pipeline.finish``), one writes finished records to the
sink. Each queue holds at most ``depth`` batches, so memory is bounded by about
``(2 * depth + 1) * batch_size`` decoded images whatever the dataset's size, and the models
never wait for decoding or writing unless those are slower than the models.

An exception in any thread stops the job and is raised in the caller; records already
handed to the writer are written first (what the sink holds is always resumable).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from factcap.inputs import InputItem
from factcap.pipeline.work import batched
from factcap.schema import Record

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class _Serialized:
    """A backend that runs one call at a time, so two batches can be in different stages at
    once without ever sharing a model (or a tokenizer, which is not thread-safe)."""

    def __init__(self, backend: Any):
        self._backend = backend
        self._lock = threading.Lock()
        self.name = backend.name

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._backend, attr)
        if not callable(value):
            return value

        @functools.wraps(value)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return call


def serialized(pipeline: Any) -> Any:
    """A pipeline sharing ``pipeline``'s config and models, each model behind its own lock."""
    from factcap.pipeline.runner import Pipeline

    return Pipeline(pipeline.config, models=pipeline.models.wrap(_Serialized))


def run_job(
    pipeline: Any,
    items: Iterable[InputItem],
    sink: Any,
    *,
    batch_size: int | None = None,
    depth: int = 2,
    workers: int = 1,
    styles: Sequence[str] | None = None,
    instruction: str | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> int:
    """Caption ``items`` into ``sink``; returns how many records were written.

    ``workers`` > 1 runs that many batches through the model stages at once, each model
    still one call at a time (:func:`serialized`): while one batch waits on a remote server,
    another uses the local models. Records are then written in completion order.
    ``on_record`` is called (in the writer thread) after each record is written, e.g. to
    advance a progress bar.
    """
    size = batch_size or pipeline.config.batch_size
    if workers > 1:
        pipeline = serialized(pipeline)
    prepared: queue.Queue[Any] = queue.Queue(maxsize=depth)
    finished: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    errors: list[BaseException] = []
    written = 0

    def put(q: queue.Queue[Any], value: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batched(items, size):
                if not put(prepared, (batch, pipeline.prepare(batch))):
                    return
            put(prepared, _DONE)
        except BaseException as err:  # handed to the caller
            put(prepared, _Failure(err))

    def model_stages() -> None:
        try:
            while not stop.is_set():  # set by any failing thread
                try:
                    got = prepared.get(timeout=0.1)
                except queue.Empty:
                    continue
                if got is _DONE:
                    prepared.put(_DONE)  # for the other model workers
                    return
                if isinstance(got, _Failure):
                    raise got.error
                batch, work = got
                records = pipeline.finish(work, styles, instruction)
                finished.put(list(zip(batch, records, strict=True)))
        except BaseException as err:
            errors.append(err)
            stop.set()

    def write() -> None:
        nonlocal written
        try:
            while True:
                got = finished.get()
                if got is _DONE:
                    return
                for item, record in got:
                    sink.write(record, item)
                    written += 1
                    if on_record is not None:
                        on_record(record)
        except BaseException as err:
            errors.append(err)
            stop.set()
            while True:  # drain so the model workers never block on a full queue
                if finished.get() is _DONE:
                    return

    reader = threading.Thread(target=read, name="factcap-read", daemon=True)
    writer = threading.Thread(target=write, name="factcap-write", daemon=True)
    models = [
        threading.Thread(target=model_stages, name=f"factcap-models-{i}", daemon=True)
        for i in range(max(1, workers))
    ]
    for thread in (reader, writer, *models):
        thread.start()
    try:
        for thread in models:
            while thread.is_alive():
                thread.join(timeout=0.5)  # a timeout keeps Ctrl-C responsive
    except BaseException:
        stop.set()  # Ctrl-C: the model workers stop after their current batch
        raise
    finally:
        for thread in models:
            thread.join()
        finished.put(_DONE)  # the writer finishes what it was given, then stops
        writer.join()
        stop.set()
        reader.join(timeout=5)
    if errors:
        raise errors[0]
    return written
