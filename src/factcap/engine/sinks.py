"""Sinks: where finished records go. One small interface, three formats.

Every sink has ``write(record, item=None)`` and ``close()`` (and is a context manager) and
is built as ``cls(path, append=, overwrite=, on_commit=, caption_style=[, shard_size=])``;
:data:`SINKS` is the table of them by format, and :func:`open_sink` picks one from the
output path and format:

``jsonl`` (``-o out.jsonl``)
    One strict-JSON line per record (:meth:`Record.to_dict`), flushed after each write.
    With ``append=True`` an existing file is continued, after cutting off a torn last line
    left by a crash.

``parquet`` (``-o out.parquet``, or ``-o DIR --format parquet``)
    A folder of shards ``part-00000.parquet``, ``part-00001.parquet`` ... of ``shard_size``
    records each (``out.parquet/`` is a folder too, the layout Spark, pandas and
    ``pyarrow.dataset`` read as one table). Columns: ``id``, ``source``, ``status`` and
    ``caption`` (for training: the ``caption_style`` caption, else the first one; null for
    a failed record) as strings; every other record field (``proposals``, ``claims``,
    ``captions``, ``error``, ``extra`` ...) as a JSON string, null when None (``extra``:
    when empty). The schema metadata key ``factcap.json_columns`` lists the JSON columns;
    :func:`factcap.engine.records.read_records` reads them back.

``webdataset`` (``-o DIR --format webdataset``)
    Tar shards ``part-00000.tar`` ... holding, per record, the samples a WebDataset loader
    expects: ``<key>.<ext>`` the image (the original bytes when the item had them, else a
    JPEG of its PIL image, else the file at its source; ``ext`` from the image format; for a
    3D asset the asset file, and its rendered views as ``<key>.view<i>.png``),
    ``<key>.json`` the record and ``<key>.txt`` the caption (as Parquet's ``caption``).
    ``key`` is the record id when it is made of ``[A-Za-z0-9_-]``, else a hash of it (the
    id stays in the JSON). Failed records get the JSON only: no unusable image or caption
    enters training data.

Shards are written under a hidden temporary name (``.part-00000.parquet.tmp``), then synced
and renamed when complete: a shard under its final name is always whole. A folder that
already holds shards is refused unless ``append=True`` (numbering continues after the last
one; leftover temporary files are removed) or ``overwrite=True`` (old shards removed).

``on_commit(ids)`` is called with the ids of the records that have just become durable
(after each JSONL line; after each shard's rename), for a resume ledger to follow.

>>> import tempfile
>>> from factcap.schema import Record, json_safe
>>> out = Path(tempfile.mkdtemp()) / "records"
>>> with open_sink(out, format="parquet", shard_size=2) as sink:
...     for n in range(3):
...         sink.write(Record(id=f"r{n}", source=f"{n}.jpg", captions={"detailed": "a cat"}))
>>> sorted(p.name for p in out.iterdir())
['part-00000.parquet', 'part-00001.parquet']
>>> from factcap.engine.records import read_records
>>> [r["id"] for r in read_records(out)]
['r0', 'r1', 'r2']
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

from factcap.engine.records import shard_index, shard_paths
from factcap.errors import ConfigError, OutputError, require
from factcap.inputs import InputItem
from factcap.schema import Record, json_safe

_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_IMAGE_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tif"}

OnCommit = Callable[[list[str]], None]


@contextmanager
def output_errors(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` (permission denied, disk full, ...) into one clear
    :class:`~factcap.errors.OutputError` naming the output."""
    try:
        yield
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def record_dict(record: Record) -> dict[str, Any]:
    """``record.to_dict()``, guaranteed to be strict JSON (no NaN / Infinity, which many
    readers reject): a record holding a non-finite number is marked failed instead.

    Example:
        >>> r = Record(id="a", source="a.jpg", timings_ms={"decode": float("nan")})
        >>> record_dict(r)["error"]["type"]
        'SerializationError'
    """
    data = record.to_dict()
    try:
        json.dumps(data, allow_nan=False)
    except ValueError as err:
        record.fail("SerializationError", f"the record held a non-finite number: {err}")
        record.claims = []
        data = json_safe(record.to_dict())
    return data


def caption_text(record: Record, style: str = "detailed") -> str | None:
    """The caption a training pipeline gets: ``style``'s, else the first one; None for a
    failed record or one without captions."""
    if not record.ok:
        return None
    if style in record.captions:
        return record.captions[style]
    return next(iter(record.captions.values()), None)


class Sink(abc.ABC):
    """Writes records somewhere; ``close()`` makes everything written durable.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "out.jsonl"
        >>> with open_sink(path) as sink:
        ...     sink.write(Record(id="a", source="a.jpg"))
        >>> path.read_text().count("\\n")
        1
    """

    format: str = ""
    """The name ``--format`` and :data:`SINKS` know the sink by."""
    suffix: str = ""
    """The file ending of the output (sharded: of each shard)."""
    sharded: bool = False
    """Whether the output is a folder of shards (``--shard-size``) rather than one file."""
    named_by_suffix: bool = True
    """Whether ``-o name<suffix>`` alone chooses this format."""
    path: Path
    written: int = 0
    """Records written so far."""

    @abc.abstractmethod
    def write(self, record: Record, item: InputItem | None = None) -> None:
        """Add one record; ``item`` (its input) lets image-carrying formats store the image."""

    @abc.abstractmethod
    def close(self) -> None:
        """Finish the output; calling it again does nothing."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class JsonlSink(Sink):
    """One JSON line per record, flushed after each write (a crash loses no finished line).
    ``overwrite`` and ``caption_style`` are accepted for a common signature: a new JSONL
    file replaces the old one, and it holds every caption.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "out.jsonl"
        >>> with JsonlSink(path) as sink:
        ...     sink.write(Record(id="a", source="a.jpg"))
        >>> json.loads(path.read_text())["id"]
        'a'
    """

    format, suffix = "jsonl", ".jsonl"

    def __init__(
        self,
        path: str | Path,
        *,
        append: bool = False,
        overwrite: bool = False,
        on_commit: OnCommit | None = None,
        caption_style: str = "detailed",
    ):
        self.path = Path(path)
        if self.path.is_dir():
            raise ConfigError(f"{self.path} is a directory; JSONL output needs a file name")
        with output_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if append and self.path.exists():
                cut_torn_line(self.path)
            self._handle: Any = self.path.open("a" if append else "w", encoding="utf-8")
        self._on_commit = on_commit
        self.written = 0

    def write(self, record: Record, item: InputItem | None = None) -> None:
        if self._handle is None:
            raise ValueError(f"write() on a closed sink ({self.path})")
        line = json.dumps(record_dict(record), ensure_ascii=False) + "\n"
        try:
            with output_errors(self.path):
                self._handle.write(line)
                self._handle.flush()
        except OutputError:
            self._abandon()  # what was flushed before stays; a torn line is cut on resume
            raise
        self.written += 1
        if self._on_commit is not None:
            self._on_commit([record.id])

    def _abandon(self) -> None:
        handle, self._handle = self._handle, None
        with suppress(OSError):
            handle.close()

    def close(self) -> None:
        if self._handle is not None:
            try:
                with output_errors(self.path):
                    self._handle.close()
            finally:
                self._handle = None


def cut_torn_line(path: Path) -> None:
    """Drop the bytes after the last newline: a line a killed process did not finish."""
    with path.open("rb+") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                pos = pos - step + newline + 1
                break
            pos -= step
        if pos != end:
            f.truncate(pos)


class _ShardedSink(Sink):
    """Rotation, temp-then-rename and numbering shared by the shard formats."""

    sharded = True
    default_shard_size = 1_000

    def __init__(
        self,
        directory: str | Path,
        *,
        shard_size: int | None = None,
        append: bool = False,
        overwrite: bool = False,
        on_commit: OnCommit | None = None,
    ):
        self.path = Path(directory)
        self.shard_size = shard_size or self.default_shard_size
        if self.shard_size < 1:
            raise ConfigError(f"shard_size must be at least 1, not {self.shard_size}")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} is a file; {self.format} output is a directory")
        with output_errors(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob(f".part-*{self.suffix}.tmp"):
            stale.unlink()  # a shard a crashed run never finished
        existing = sorted(shard_paths(self.path, self.suffix))
        if existing and not (append or overwrite):
            raise ConfigError(
                f"{self.path} already holds {len(existing)} {self.format} shard(s); resume"
                " (append), overwrite them, or choose another output directory"
            )
        if overwrite and not append:
            for old in existing:
                old.unlink()
            existing = []
        self._next = max((shard_index(p) for p in existing), default=-1) + 1
        self._on_commit = on_commit
        self._ids: list[str] = []
        self._tmp: Path | None = None
        self._closed = False
        self.shards: list[Path] = []
        """Shards this sink completed, in order."""
        self.written = 0

    # subclass hooks
    @abc.abstractmethod
    def _open_shard(self, tmp: Path) -> None: ...

    @abc.abstractmethod
    def _add(self, record: Record, data: dict[str, Any], item: InputItem | None) -> None: ...

    @abc.abstractmethod
    def _close_shard(self) -> None: ...

    def write(self, record: Record, item: InputItem | None = None) -> None:
        if self._closed:
            raise ValueError(f"write() on a closed sink ({self.path})")
        with output_errors(self.path):
            if self._tmp is None:
                self._tmp = self.path / f".part-{self._next:05d}{self.suffix}.tmp"
                self._open_shard(self._tmp)
            self._add(record, record_dict(record), item)
            self._ids.append(record.id)
            self.written += 1
            if len(self._ids) >= self.shard_size:
                self._commit()

    def _commit(self) -> None:
        assert self._tmp is not None
        self._close_shard()
        final = self.path / f"part-{self._next:05d}{self.suffix}"
        with self._tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, final)
        _fsync_dir(self.path)
        self.shards.append(final)
        ids, self._ids, self._tmp = self._ids, [], None
        self._next += 1
        if self._on_commit is not None:
            self._on_commit(ids)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._tmp is not None:
            with output_errors(self.path):
                self._commit()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible everywhere (Windows); the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ParquetSink(_ShardedSink):
    """Sharded Parquet: scalar fields as string columns, nested fields as JSON strings.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> with ParquetSink(out, shard_size=10) as sink:
        ...     sink.write(Record(id="a", source="a.jpg", captions={"short": "a cat"}))
        >>> import pyarrow.parquet as pq
        >>> pq.read_table(out / "part-00000.parquet").column("caption").to_pylist()
        ['a cat']
    """

    format, suffix, default_shard_size = "parquet", ".parquet", 10_000
    STRING_COLUMNS = ("id", "source", "status")

    def __init__(
        self,
        directory: str | Path,
        *,
        shard_size: int | None = None,
        append: bool = False,
        overwrite: bool = False,
        on_commit: OnCommit | None = None,
        caption_style: str = "detailed",
        row_group_size: int = 1000,
    ):
        require("pyarrow", "parquet")
        import pyarrow as pa

        super().__init__(
            directory,
            shard_size=shard_size,
            append=append,
            overwrite=overwrite,
            on_commit=on_commit,
        )
        self.caption_style = caption_style
        self.row_group_size = max(1, min(row_group_size, self.shard_size))
        self.json_columns = tuple(
            f.name for f in dataclasses.fields(Record) if f.name not in self.STRING_COLUMNS
        )
        names = [*self.STRING_COLUMNS, "caption", *self.json_columns]
        self.schema = pa.schema(
            [pa.field(n, pa.string()) for n in names],
            metadata={"factcap.json_columns": json.dumps(self.json_columns)},
        )
        self._rows: list[dict[str, Any]] = []
        self._writer: Any = None

    def _open_shard(self, tmp: Path) -> None:
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(tmp, self.schema)

    def _add(self, record: Record, data: dict[str, Any], item: InputItem | None) -> None:
        row: dict[str, Any] = {n: data[n] for n in self.STRING_COLUMNS}
        row["caption"] = caption_text(record, self.caption_style)
        for name in self.json_columns:
            value = data.get(name)
            row[name] = None if value is None else json.dumps(value, ensure_ascii=False)
        self._rows.append(row)
        if len(self._rows) >= self.row_group_size:
            self._flush_rows()

    def _flush_rows(self) -> None:
        import pyarrow as pa

        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def _close_shard(self) -> None:
        self._flush_rows()
        self._writer.close()
        self._writer = None


class WebDatasetSink(_ShardedSink):
    """WebDataset tar shards: per record the image, ``<key>.json`` and ``<key>.txt``.

    Example:
        >>> import tempfile
        >>> from factcap.examples import example_paths
        >>> out, photo = Path(tempfile.mkdtemp()), example_paths()[0]
        >>> item = InputItem(source=str(photo), id="a")
        >>> with WebDatasetSink(out) as sink:
        ...     sink.write(Record(id="a", source=str(photo), captions={"detailed": "x"}), item)
        >>> tarfile.open(out / "part-00000.tar").getnames()
        ['a.jpg', 'a.json', 'a.txt']
    """

    format, suffix, named_by_suffix = "webdataset", ".tar", False

    def __init__(
        self,
        directory: str | Path,
        *,
        shard_size: int | None = None,
        append: bool = False,
        overwrite: bool = False,
        on_commit: OnCommit | None = None,
        caption_style: str = "detailed",
        jpeg_quality: int = 95,
    ):
        super().__init__(
            directory,
            shard_size=shard_size,
            append=append,
            overwrite=overwrite,
            on_commit=on_commit,
        )
        self.caption_style = caption_style
        self.jpeg_quality = jpeg_quality
        self._tar: tarfile.TarFile | None = None
        self._mtime = int(time.time())

    def _open_shard(self, tmp: Path) -> None:
        self._tar = tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def _member(self, name: str, data: bytes) -> None:
        assert self._tar is not None
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), self._mtime, 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def _add(self, record: Record, data: dict[str, Any], item: InputItem | None) -> None:
        key = sample_key(record.id)
        image = _image_bytes(record, item, self.jpeg_quality) if record.ok else None
        if image is not None:
            self._member(f"{key}.{image[1]}", image[0])
        for index, view in enumerate((item.views or []) if item and record.ok else []):
            buffer = io.BytesIO()
            view.save(buffer, "PNG")
            self._member(f"{key}.view{index}.png", buffer.getvalue())
        self._member(f"{key}.json", json.dumps(data, ensure_ascii=False).encode("utf-8"))
        caption = caption_text(record, self.caption_style)
        if caption is not None:
            self._member(f"{key}.txt", caption.encode("utf-8"))

    def _close_shard(self) -> None:
        assert self._tar is not None
        self._tar.close()
        self._tar = None


def sample_key(record_id: str) -> str:
    """The WebDataset key of a record: its id if that is safe in a member name (no dots or
    slashes, which WebDataset reads as extension and folder), else a hash of it.

    >>> sample_key("3f2a9c0d11e4b7a8"), sample_key("photos/cat.jpg")
    ('3f2a9c0d11e4b7a8', '9c4712116d1c1877')
    """
    if _SAFE_KEY.fullmatch(record_id):
        return record_id
    return hashlib.sha256(record_id.encode("utf-8")).hexdigest()[:16]


def _image_bytes(record: Record, item: InputItem | None, quality: int) -> tuple[bytes, str] | None:
    """The image to store and its extension: original bytes, else a JPEG of the PIL image,
    else the source file; None when there is none."""
    if item is not None and item.data:
        return item.data, _sniff(item.data, item.source)
    if item is not None and item.image is not None:
        from PIL import Image

        picture: Image.Image = item.image
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, "JPEG", quality=quality)
        return buffer.getvalue(), "jpg"
    path = Path(item.source if item is not None else record.source)
    if path.is_file():
        data = path.read_bytes()
        return data, _sniff(data, str(path))
    return None


def _sniff(data: bytes, source: str) -> str:
    """The file extension for encoded image bytes, from their header."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or ""
    except Exception:
        fmt = ""
    if fmt:
        return _IMAGE_EXT.get(fmt, fmt.lower())
    suffix = Path(source.partition("#")[0] if "#" in source else source).suffix.lower()
    return suffix.lstrip(".") or "bin"


#: Every sink by its ``--format`` name. A new sink is a class here and its line in this table
#: (and, so that evaluate, report and resume read it back, a reader in
#: :mod:`factcap.engine.records`).
SINKS: dict[str, type[Sink]] = {cls.format: cls for cls in (JsonlSink, ParquetSink, WebDatasetSink)}
SINK_FORMATS = tuple(SINKS)


def open_sink(
    path: str | Path,
    format: str | None = None,
    shard_size: int | None = None,
    *,
    append: bool = False,
    overwrite: bool = False,
    caption_style: str = "detailed",
    on_commit: OnCommit | None = None,
) -> Sink:
    """The sink for ``-o path [--format F]`` (see the module docstring for the formats).

    ``format`` defaults from the name: ``.jsonl`` → jsonl, ``.parquet`` → parquet (a folder
    of that name); a folder needs ``format`` (``parquet`` or ``webdataset``).

    Raises:
        ConfigError: an unknown format, a format the path cannot take, a bad shard size, or
            a folder that already holds shards (without ``append`` / ``overwrite``).

    Example:
        >>> import tempfile
        >>> type(open_sink(Path(tempfile.mkdtemp()) / "x.jsonl")).__name__
        'JsonlSink'
    """
    path = Path(path)
    if format is None:
        format = sink_format(path)
    if format not in SINKS:
        raise ConfigError(f"unknown output format {format!r}; choose from {SINK_FORMATS}")
    cls = SINKS[format]
    if shard_size is not None and shard_size < 1:
        raise ConfigError(f"--shard-size must be at least 1, not {shard_size}")
    options: dict[str, Any] = dict(append=append, overwrite=overwrite, on_commit=on_commit)
    options["caption_style"] = caption_style
    if shard_size is not None:
        if not cls.sharded:
            sharded = "/".join(f for f, c in SINKS.items() if c.sharded)
            raise ConfigError(f"{format} output is one file: --shard-size is for {sharded}")
        options["shard_size"] = shard_size
    return cls(path, **options)


def sink_format(path: Path) -> str:
    """The format a path names by its ending (``out.jsonl``, ``out.parquet``); a folder with
    another name needs ``--format``.

    >>> sink_format(Path("out.parquet"))
    'parquet'
    """
    for cls in SINKS.values():
        if cls.named_by_suffix and path.suffix.lower() == cls.suffix:
            return cls.format
    sharded = ", ".join(f for f, c in SINKS.items() if c.sharded)
    raise ConfigError(
        f"cannot tell the output format of {str(path)!r}: name a .jsonl file or a .parquet"
        f" folder, or give a folder with --format ({sharded})"
    )
