"""The low-memory executor (``memory.mode: low``, ``factcap caption --memory low``): one model
in memory at a time.

The inputs go in chunks of ``memory.chunk`` items. For each chunk: its items are loaded into
views batch by batch and kept on disk; then, stage by stage, the stage's model is built, the
stage runs over the chunk batch by batch (each batch read from the previous stage's file and
written to the next), and the model is released unless the next stage uses it too. Then the
chunk's records are written and its files removed. So the memory a job needs is about the
largest model plus one batch, whatever the chunk size (the chunk's input items, which hold
the encoded bytes of tar or Parquet inputs, stay in memory).

The batches are the ones the local executor makes (``batch_size`` consecutive items), and
each stage sees the same batch, so the records are the same as in the normal mode; only the
timings differ.

The work between stages lives in a folder beside the output (:func:`stage_dir`), each
stage's file made whole before it replaces the last (write, then rename), with ``chunk.json``
naming the chunk's item ids and the last finished stage. After a kill, ``--resume`` skips the
inputs the output holds as always, and a chunk whose ids the folder knows continues after
its last finished stage.

>>> stage_dir(Path("out/captions.jsonl")).as_posix()
'out/.captions.jsonl.stages'
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from factcap.inputs import InputItem
from factcap.pipeline.stage import StageContext, run_stage
from factcap.pipeline.work import Work, batched
from factcap.schema import Record

_STATE = "chunk.json"
_LOADED = -1  # the "stage" whose file holds the loaded views, before any model ran


def stage_dir(output: Path) -> Path:
    """Where a low-memory job keeps its work between stages: a hidden folder beside the
    output."""
    return output.parent / f".{output.name}.stages"


def run_stage_major(
    pipeline: Any,
    items: Iterable[InputItem],
    sink: Any,
    *,
    work_dir: Path,
    chunk: int,
    resume: bool = False,
    batch_size: int | None = None,
    styles: Sequence[str] | None = None,
    instruction: str | None = None,
    on_record: Callable[[Record], None] | None = None,
) -> int:
    """Caption ``items`` into ``sink`` one stage (one model) at a time, ``chunk`` items per
    round (rounded up to whole batches); returns how many records were written. ``work_dir``
    holds the work between stages (made and removed here); with ``resume``, a chunk found
    there from a killed run of the same job continues, else whatever is there is cleared
    first."""
    size = batch_size or pipeline.config.batch_size
    chunk = -(-chunk // size) * size  # whole batches: the batches of the normal mode
    context = StageContext.of(pipeline.config, styles, instruction)
    stages = pipeline.stages
    names = [stage.name for stage in stages]
    if not resume:
        shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        for chunk_items in batched(items, chunk):
            ids = [item.id for item in chunk_items]
            done = _resume_point(work_dir, ids, names)
            if done == _LOADED - 1:
                _clear(work_dir)
                _write_stage(work_dir, _LOADED, _load(pipeline, chunk_items, size))
                _save_state(work_dir, ids, names, _LOADED)
                done = _LOADED
            for k in range(done + 1, len(stages)):
                _stage_over_chunk(pipeline, k, work_dir, context)
                _save_state(work_dir, ids, names, k)
                (work_dir / _stage_file(k - 1)).unlink(missing_ok=True)
                slot = stages[k].model
                following = stages[k + 1].model if k + 1 < len(stages) else None
                if slot and slot != following:
                    release(pipeline.models, slot)
            records = (w.record for batch in _read_stage(work_dir, len(stages) - 1) for w in batch)
            for item, record in zip(chunk_items, records, strict=True):
                sink.write(record, item)
                written += 1
                if on_record is not None:
                    on_record(record)
            _clear(work_dir)
    finally:
        pipeline.close()
    shutil.rmtree(work_dir, ignore_errors=True)
    return written


def release(models: Any, slot: str) -> None:
    """Let go of the model in ``slot`` (built again on its next use) and of the memory it
    held (``gc``; the C heap's free pages back to the system; CUDA's cache where torch is
    loaded)."""
    from factcap.backends.hardware import trim_heap

    models.release(slot)
    gc.collect()
    trim_heap()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _stage_over_chunk(pipeline: Any, k: int, work_dir: Path, context: StageContext) -> None:
    """Stage ``k`` over the chunk: each batch the previous stage left, through the stage, into
    this stage's file (the model is referenced only while this runs, so it can be freed)."""
    stage = pipeline.stages[k]
    model = pipeline.models.get(stage.model) if stage.model else None
    _write_stage(work_dir, k, _run(stage, _read_stage(work_dir, k - 1), model, context))


def _load(pipeline: Any, items: Sequence[InputItem], size: int) -> Iterator[list[Work]]:
    for batch in batched(items, size):
        yield pipeline.prepare(batch)


def _run(
    stage: Any, batches: Iterable[list[Work]], model: Any, context: StageContext
) -> Iterator[list[Work]]:
    for batch in batches:
        run_stage(stage, batch, model, context)
        yield batch


def _stage_file(k: int) -> str:
    return "loaded.bin" if k == _LOADED else f"stage-{k:02d}.bin"


def _write_stage(work_dir: Path, k: int, batches: Iterable[list[Work]]) -> None:
    """The batches after stage ``k``, one pickled list of plain rows per batch
    (:meth:`Work.to_row`), made whole under a temporary name first."""
    path = work_dir / _stage_file(k)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for batch in batches:
            pickle.dump([w.to_row() for w in batch], f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_stage(work_dir: Path, k: int) -> Iterator[list[Work]]:
    """The batches stage ``k`` left, one at a time."""
    with open(work_dir / _stage_file(k), "rb") as f:
        while f.peek(1):
            yield [Work.from_row(row) for row in _PlainUnpickler(f).load()]


class _PlainUnpickler(pickle.Unpickler):
    """Reads only plain data (dicts, lists, text, bytes, numbers): a file in the work folder
    can never make this process import or call anything."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


def _save_state(work_dir: Path, ids: list[str], names: list[str], done: int) -> None:
    path = work_dir / _STATE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"ids": ids, "stages": names, "done": done}), encoding="utf-8")
    os.replace(tmp, path)


def _resume_point(work_dir: Path, ids: list[str], names: list[str]) -> int:
    """The last stage finished for this chunk by an earlier run, else ``_LOADED - 1``
    (nothing usable: other items, other stages, or no file)."""
    try:
        state = json.loads((work_dir / _STATE).read_text(encoding="utf-8"))
        done = int(state["done"])
    except (OSError, ValueError, KeyError, TypeError):
        return _LOADED - 1
    usable = state.get("ids") == ids and state.get("stages") == names
    if not usable or not (work_dir / _stage_file(done)).is_file():
        return _LOADED - 1
    return done


def _clear(work_dir: Path) -> None:
    for path in work_dir.iterdir():
        if path.name == _STATE or path.suffix in (".bin", ".tmp"):
            path.unlink(missing_ok=True)
