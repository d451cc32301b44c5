"""The one reader of result records: any sink's output, in the order it was written.

``factcap evaluate``, ``factcap report``, ``--resume`` and the service's jobs all read
records here, so each accepts all three output formats:

* a JSONL file (``out.jsonl``), streamed line by line;
* a folder of Parquet shards (``out.parquet/part-00000.parquet`` ...) or one Parquet file,
  whose JSON-string columns (listed in the schema metadata ``factcap.json_columns``) are
  parsed back;
* a folder of WebDataset tar shards, or one shard, whose ``<key>.json`` members are the
  records.

A file a writer is still appending to, or that a killed process left behind, may end in a
line without its newline that is not JSON: :class:`RecordFile` with ``skip_torn_end`` skips
it and says so (``torn_end``); any other line that is not a JSON object is a
:class:`~factcap.errors.DataError` naming the file and line.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "out.jsonl"
>>> _ = path.write_text('{"id": "a", "status": "ok"}\\n{"id": "b", "sta')
>>> records = RecordFile(path, skip_torn_end=True)
>>> [r["id"] for r in records], records.torn_end
(['a'], True)
>>> output_format(path)
'jsonl'
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factcap.errors import DataError, NotFound, require

#: Record fields that :meth:`Record.to_dict` writes only when they say something.
_OPTIONAL_FIELDS = (
    *("extra", "media", "regions", "question", "corrected"),
    *("kind", "views", "asset", "graph", "answer"),  # of records written before 2026-12-08
)
_SHARD_NAME = re.compile(r"part-(\d{5,})\.(parquet|tar)$")


def shard_index(path: Path) -> int:
    """The number of a shard named ``part-NNNNN.<ext>`` (-1 for any other name)."""
    m = _SHARD_NAME.search(path.name)
    return int(m.group(1)) if m else -1


def shard_paths(directory: Path, suffix: str) -> list[Path]:
    """Complete shards (``part-NNNNN<suffix>``) in a folder, in order."""
    found = [p for p in directory.glob(f"part-*{suffix}") if _SHARD_NAME.search(p.name)]
    return sorted(found, key=shard_index)


def output_format(path: str | Path) -> str:
    """The format (a key of :data:`READERS`) of an existing output: a file by its ending, a
    folder by the shards it holds.

    Raises:
        NotFound: nothing is at ``path``.
        DataError: ``path`` holds no format factcap reads.
    """
    path = Path(path)
    if not path.exists():
        raise NotFound(f"no such file or folder: {path}")
    for fmt, (suffix, _) in READERS.items():
        if path.is_dir() and shard_paths(path, suffix) or path.suffix.lower() == suffix:
            return fmt
    endings = ", ".join(suffix for suffix, _ in READERS.values())
    if path.is_dir():
        raise DataError(f"{path} holds no factcap output (no part-NNNNN shards of {endings})")
    raise DataError(f"{path} is not factcap output ({endings} or a folder of shards)")


def settings_path(output: str | Path) -> Path:
    """Where a captioning job keeps its settings beside its output: ``factcap-job.json``
    inside an output folder, ``<file>.job.json`` next to an output file.

    >>> settings_path(Path("out/captions.jsonl")).name
    'captions.jsonl.job.json'
    """
    output = Path(output)
    if output.is_dir():
        return output / "factcap-job.json"
    return output.with_name(output.name + ".job.json")


def read_settings(output: str | Path) -> dict[str, Any] | None:
    """The settings a captioning job saved beside ``output``; None when there are none."""
    path = settings_path(output)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise DataError(f"{path} cannot be read ({err}); remove it to go on") from None
    if not isinstance(value, dict):
        raise DataError(f"{path} does not hold a JSON object; remove it to go on")
    return value


class ImageFinder:
    """Finds the image file a record's ``source`` names, wherever the results are read from.

    An absolute path is taken as it is. A relative one (as ``factcap caption`` writes what it
    was given) is looked for under ``image_root``, then in the folder the captioning job ran
    in (kept in its settings), beside the results, and in the current folder; the first that
    exists wins. With ``confine``, a file outside ``image_root`` is refused (a server
    building reports of its own jobs).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = (d / "cat.jpg").write_bytes(b"x")
        >>> ImageFinder(d / "out.jsonl").locate("cat.jpg") == (d / "cat.jpg").resolve()
        True
        >>> ImageFinder(d / "out.jsonl").locate("dog.jpg").startswith("dog.jpg is not a file here")
        True
    """

    def __init__(
        self,
        results: str | Path | None,
        image_root: str | Path | None = None,
        confine: bool = False,
    ):
        self.root = Path(image_root).resolve() if image_root else None
        self.confine = confine and self.root is not None
        bases: list[Path] = [self.root] if self.root else []
        if results is not None:
            results = Path(results)
            saved = read_settings(results) if results.exists() else None
            if saved and isinstance(saved.get("cwd"), str):
                bases.append(Path(saved["cwd"]))
            bases.append(results if results.is_dir() else results.parent)
        bases.append(Path.cwd())
        self.bases = list(dict.fromkeys(b.resolve() for b in bases))

    def locate(self, source: str) -> Path | str:
        """The resolved file, or a sentence saying why there is none."""
        if not source or source.startswith("<"):
            return "the record names no image file"
        given = Path(source)
        candidates = [given] if given.is_absolute() else [b / given for b in self.bases]
        for candidate in candidates:
            if candidate.is_file():
                resolved = candidate.resolve()
                if self.confine and not resolved.is_relative_to(self.root):  # type: ignore[arg-type]
                    return f"{source} is outside the image root"
                return resolved
        where = (
            ""
            if given.is_absolute()
            else (
                " (looked beside the results and in the current folder; --image-root names the "
                "folder it is relative to)"
            )
        )
        return f"{source} is not a file here{where}"


def read_jsonl(path: str | Path, skip_torn_end: bool = False) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file, one per non-empty line, streamed.

    A last line without a newline that is not JSON ends the iteration quietly when
    ``skip_torn_end`` (see :class:`RecordFile` to learn whether it happened); any other bad
    line raises :class:`DataError` with the file and line number.
    """
    yield from RecordFile(path, skip_torn_end)._jsonl(Path(path))


@dataclass
class RecordFile:
    """The records of one output (any format, see the module docstring), iterable once per
    ``for``; ``torn_end`` says, after iterating, whether a torn last JSONL line was skipped."""

    path: Path
    skip_torn_end: bool = False
    torn_end: bool = False

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.torn_end = False
        suffix, read = READERS[output_format(self.path)]
        files = shard_paths(self.path, suffix) if self.path.is_dir() else [self.path]
        for file in files:
            yield from read(file, self)

    def _jsonl(self, path: Path) -> Iterator[dict[str, Any]]:
        try:
            handle = path.open(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise NotFound(f"no such file: {path}") from None
        except OSError as err:
            raise DataError(f"cannot read {path}: {err.strerror or err}") from None
        with handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    if self.skip_torn_end and not line.endswith("\n"):
                        self.torn_end = True
                        return
                    raise DataError(f"{path}:{number}: not valid JSON") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{number}: not a JSON object")
                yield row


def read_records(path: str | Path, skip_torn_end: bool = False) -> Iterator[dict[str, Any]]:
    """The records of any sink's output at ``path``, as :meth:`Record.to_dict` dicts, in
    write order (see the module docstring)."""
    return iter(RecordFile(Path(path), skip_torn_end))


def count_records(path: str | Path) -> tuple[int, int]:
    """(records, error records) of the output at ``path`` (a torn last line not counted)."""
    total = errors = 0
    for record in read_records(path, skip_torn_end=True):
        total += 1
        errors += record.get("status") == "error"
    return total, errors


def _json_member(text: str | bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise DataError(f"{where}: not a JSON record ({e})") from None
    if not isinstance(value, dict):
        raise DataError(f"{where}: not a JSON object")
    return value


def _jsonl_records(path: Path, state: RecordFile) -> Iterator[dict[str, Any]]:
    return state._jsonl(path)


def _tar_records(path: Path, state: RecordFile) -> Iterator[dict[str, Any]]:
    try:
        tar = tarfile.open(path)  # noqa: SIM115 - closed by the with below
    except (OSError, tarfile.TarError) as err:
        raise DataError(f"{path} is not a readable tar shard ({err})") from None
    with tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".json"):
                handle = tar.extractfile(member)
                assert handle is not None
                yield _json_member(handle.read(), f"{path}:{member.name}")


def _parquet_records(path: Path, state: RecordFile) -> Iterator[dict[str, Any]]:
    require("pyarrow", "parquet")
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as err:  # ArrowInvalid, OSError: not Parquet
        raise DataError(f"{path} is not a readable Parquet file ({err})") from None
    meta = file.schema_arrow.metadata or {}
    json_columns = set(json.loads(meta.get(b"factcap.json_columns", b"[]")))
    for batch in file.iter_batches(batch_size=1000):
        for row in batch.to_pylist():
            row.pop("caption", None)
            record = {k: json.loads(v) if k in json_columns and v else v for k, v in row.items()}
            for key in _OPTIONAL_FIELDS:  # to_dict() leaves these out when empty
                if record.get(key) is None:
                    record.pop(key, None)
            yield record


def read_score_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of ``factcap evaluate`` output, streamed: JSONL, or Parquet whose ``metrics``,
    ``failures`` and ``info`` columns hold JSON strings.

    Raises:
        NotFound: no such file.
        DataError: not Parquet, or a row without an ``id`` or a ``metrics`` object.
    """
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        if not path.exists():
            raise NotFound(f"no such file: {path}")
        require("pyarrow", "parquet")
        import pyarrow.parquet as pq

        try:
            file = pq.ParquetFile(path)
        except Exception as err:  # ArrowInvalid, OSError: not Parquet
            raise DataError(f"{path} is not a readable Parquet file ({err})") from None
        rows: Iterator[dict[str, Any]] = (
            row for batch in file.iter_batches(batch_size=1000) for row in batch.to_pylist()
        )
    else:
        rows = read_jsonl(path)
    for number, row in enumerate(rows, 1):
        for key in ("metrics", "failures", "info"):
            if isinstance(row.get(key), str):
                row[key] = json.loads(row[key])
        if "id" not in row or not isinstance(row.get("metrics"), dict):
            raise DataError(f"{path}: row {number} has no id or no metrics object")
        yield row


#: How each sink format reads back: format → (file or shard ending, reader). The formats are
#: those of :data:`factcap.engine.sinks.SINKS`.
READERS: dict[str, tuple[str, Callable[[Path, RecordFile], Iterator[dict[str, Any]]]]] = {
    "jsonl": (".jsonl", _jsonl_records),
    "parquet": (".parquet", _parquet_records),
    "webdataset": (".tar", _tar_records),
}
