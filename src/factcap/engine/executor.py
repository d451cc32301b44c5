"""The local executor: read+decode, model stages and writing overlap through bounded queues.

Three threads: one reads the source and decodes the next batches (``Pipeline.prepare``),
the calling thread runs the model stages (``Pipeline.finish``), one writes finished records
to the sink. Each queue holds at most ``depth`` batches, so memory is bounded by about
``(2 * depth + 1) * batch_size`` decoded images whatever the dataset's size, and the models
never wait for decoding or writing unless those are slower than the models.

An exception in any thread stops the job and is raised in the caller; records already
handed to the writer are written first (what the sink holds is always resumable).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from factcap.inputs import InputItem
from factcap.schema import Record

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def _batches(items: Iterable[InputItem], size: int) -> Iterator[list[InputItem]]:
    batch: list[InputItem] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_job(
    pipeline: Any,
    items: Iterable[InputItem],
    sink: Any,
    *,
    batch_size: int | None = None,
    depth: int = 2,
    styles: Sequence[str] | None = None,
    instruction: str | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> int:
    """Caption ``items`` into ``sink``; returns how many records were written.

    ``on_record`` is called (in the writer thread) after each record is written, e.g. to
    advance a progress bar.
    """
    size = batch_size or pipeline.config.batch_size
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
            for batch in _batches(items, size):
                if not put(prepared, (batch, pipeline.prepare(batch))):
                    return
            put(prepared, _DONE)
        except BaseException as err:  # handed to the caller
            put(prepared, _Failure(err))

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
            while True:  # drain so the model thread never blocks on a full queue
                if finished.get() is _DONE:
                    return

    reader = threading.Thread(target=read, name="factcap-read", daemon=True)
    writer = threading.Thread(target=write, name="factcap-write", daemon=True)
    reader.start()
    writer.start()
    try:
        while not stop.is_set():  # set by a failing writer
            try:
                got = prepared.get(timeout=0.1)
            except queue.Empty:
                continue
            if got is _DONE:
                break
            if isinstance(got, _Failure):
                raise got.error
            batch, work = got
            records = pipeline.finish(work, styles, instruction)
            finished.put(list(zip(batch, records, strict=True)))
    finally:
        finished.put(_DONE)  # the writer finishes what it was given, then stops
        writer.join()
        stop.set()
        reader.join(timeout=5)
    if errors:
        raise errors[0]
    return written
