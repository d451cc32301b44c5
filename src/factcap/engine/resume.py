"""Exactly-once resume: what an interrupted job already finished, read from its own output.

The output is the ledger. A record counts as done once its sink has made it durable (a JSONL
line flushed, a shard renamed to its final name), so after a crash or ``kill -9`` at any
moment: a torn last JSONL line is cut off, temporary shards are discarded by the sink, and
every id found in what remains is done. Resuming skips exactly those ids, so every input ends
with one record: none lost, none duplicated. ``retry_failed`` first removes error records
(JSONL: rewritten to a temporary file and renamed into place), so those items run again.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "out.jsonl"
>>> _ = path.write_text('{"id": "a", "status": "ok"}\\n{"id": "b", "status": "error"}\\n{"id": "c", "sta')
>>> sorted(completed_ids(path, "jsonl"))
['a', 'b']
>>> sorted(completed_ids(path, "jsonl", retry_failed=True))
['a']
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from factcap.engine.records import READERS, read_records, shard_paths
from factcap.engine.sinks import cut_torn_line
from factcap.errors import UsageError


def check_retry_failed(fmt: str) -> None:
    """``--retry-failed`` rewrites a JSONL output without its error records; other formats
    cannot be rewritten that way yet.

    >>> check_retry_failed("parquet")
    Traceback (most recent call last):
    ...
    factcap.errors.UsageError: --retry-failed needs JSONL output (sharded outputs: not yet)
    """
    if fmt != "jsonl":
        raise UsageError("--retry-failed needs JSONL output (sharded outputs: not yet)")


def completed_ids(path: str | Path, fmt: str, retry_failed: bool = False) -> set[str]:
    """Ids whose records the output at ``path`` already holds (after crash clean-up)."""
    path = Path(path)
    if retry_failed:
        check_retry_failed(fmt)
    if not path.exists() or (path.is_dir() and not _holds_shards(path)):
        return set()  # nothing written yet (a job killed before its first shard)
    if fmt == "jsonl":
        cut_torn_line(path)
        if retry_failed:
            _drop_failed_lines(path)
    return {record["id"] for record in read_records(path)}


def _holds_shards(folder: Path) -> bool:
    return any(shard_paths(folder, suffix) for suffix, _ in READERS.values())


def _drop_failed_lines(path: Path) -> int:
    """Rewrite a JSONL output without its error records; returns how many were dropped."""
    tmp = path.with_name(f".{path.name}.retry.tmp")
    dropped = 0
    with path.open(encoding="utf-8") as src, tmp.open("w", encoding="utf-8") as dst:
        for line in src:
            if line.strip() and json.loads(line).get("status") == "error":
                dropped += 1
                continue
            dst.write(line)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    return dropped
