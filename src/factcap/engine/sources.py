"""Dataset sources: every kind of input factcap reads, streamed as :class:`InputItem`.

:func:`open_source` takes the names a user gives and yields one item per image, never
holding a dataset in memory:

* image files, directories, globs, PIL images and ``.txt`` / ``.jsonl`` manifests, as
  :func:`factcap.inputs.expand` reads them (a directory's tar shards and Parquet files,
  found recursively, are read as below after its image files);
* ``.csv`` / ``.tsv`` manifests: a path column (``path``, ``image``, ``file_name`` ...,
  relative to the manifest), an optional ``id`` column, every other column into ``extra``;
* WebDataset tar shards (``.tar``, ``.tar.gz``, ``.tgz``), also as brace patterns
  (``shards-{000..009}.tar``) or globs. Members are grouped into samples by key, the member
  name up to the first dot of its base name (``a/b.seg.png`` has key ``a/b``, extension
  ``seg.png``), consecutive members sharing a key as WebDataset does. The image is the first
  member whose last extension is an image type (jpg, png, webp ...), else a 3D asset member
  (glb, gltf, obj, ply, stl, off: self-contained files; an OBJ's ``.mtl`` and textures cannot
  be found inside a shard, a GLB carries its own); ``json`` members are
  parsed, ``txt`` / ``text`` / ``caption`` members read as text, ``cls`` / ``cls2`` /
  ``index`` as integers, each into ``extra[<extension>]``; other members are ignored.
  ``source`` is ``<shard>#<key>``, ``data`` the image bytes;
* Parquet files, read one record batch at a time: an image column of bytes, of Hugging Face
  ``{"bytes", "path"}`` structs, or of paths (relative to the Parquet file's folder);
* Hugging Face ``datasets`` saved with ``save_to_disk`` (a folder holding
  ``dataset_info.json`` + ``state.json``, or ``dataset_dict.json``), iterated lazily from
  the memory-mapped Arrow files, every split in turn unless ``split`` names one.

Columns (Parquet, datasets, CSV) are auto-detected; ``image_column`` and ``id_column`` name
them explicitly. Scalar columns other than those two travel in ``extra``.

Ids are stable and do not depend on how a path is spelled: a file's id comes from its
resolved path (:func:`factcap.inputs.file_item`), a sample's from ``<container's resolved
path>#<key or row>``, unless an id column gives one. A FIFO, socket or device is never
opened: its item carries the reason.

Nothing is skipped silently. A name that matches nothing, or a container that cannot be
opened at all (not a tar, not Parquet), raises :class:`~factcap.errors.ConfigError` when
:func:`open_source` is called, before any item is read. Damage found while reading (a
sample without an image, a tar cut short or corrupt half-way, unreadable Parquet rows)
yields a :class:`BrokenItem` whose ``problem`` says what is wrong; its payload is empty,
so decoding it fails too.

>>> from factcap.examples import example_paths
>>> items = list(open_source([str(example_paths()[0])]))
>>> items[0].source.endswith("astronaut.jpg")
True
>>> expand_braces("shard-{00..02}.tar")
['shard-00.tar', 'shard-01.tar', 'shard-02.tar']
"""

from __future__ import annotations

import csv
import datetime as _dt
import decimal
import glob
import json
import math
import os
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factcap.errors import ConfigError, require
from factcap.inputs import PATH_KEYS, InputItem, expand, file_item, image_suffixes
from factcap.media import file_format, media_suffixes
from factcap.schema import stable_id

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PARQUET_SUFFIXES = (".parquet",)
CSV_SUFFIXES = (".csv", ".tsv")

# Column names tried, in order, when no image column is named.
IMAGE_COLUMNS = ("image", "img", "jpg", "jpeg", "png", "webp", "image_bytes", "bytes")
PATH_COLUMNS = PATH_KEYS
ID_COLUMNS = ("id", "__key__")

# WebDataset member extensions read into ``extra``.
_TEXT_EXTENSIONS = ("txt", "text", "caption")
_INT_EXTENSIONS = ("cls", "cls2", "index")

# What reading a damaged tar can raise (gzip: EOFError / zlib.error, both OSError or not).
_TAR_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError, EOFError, OSError)
try:
    import zlib

    _TAR_ERRORS += (zlib.error,)
except ImportError:  # pragma: no cover - zlib is always built in CPython
    pass


@dataclass(slots=True)
class BrokenItem(InputItem):
    """An input that a container held but that cannot be read: ``problem`` says why and
    ``problem_type`` is the error type its record should carry. Its payload is empty bytes, so
    decoding it fails as well.

    Example:
        >>> item = BrokenItem("shard.tar#0001", "ab12", problem="no image member")
        >>> item.payload
        b''
    """

    def __post_init__(self) -> None:
        self.data = b""
        self.problem = self.problem or "the input could not be read"


def open_source(
    inputs: Iterable[Any] | str | Path,
    *,
    image_column: str | None = None,
    id_column: str | None = None,
    split: str | None = None,
    batch_rows: int = 64,
) -> Iterator[InputItem]:
    """Items for every input, streamed in the order given (see the module docstring).

    Args:
        inputs: file, directory, glob, brace pattern, manifest, tar shard, Parquet file,
            saved ``datasets`` folder or PIL image; one on its own or a list.
        image_column: the column holding image bytes or paths (Parquet, datasets, CSV).
        id_column: the column holding item ids; ``id`` (or ``__key__``) when present.
        split: the split of a saved ``DatasetDict`` to read; all splits when ``None``.
        batch_rows: rows read at a time from Parquet and datasets (bounds memory).

    Raises:
        ConfigError: at once, for a name that matches nothing or a container that cannot
            be opened; later damage yields :class:`BrokenItem` instead.

    Example:
        >>> from factcap.examples import example_paths
        >>> folder = example_paths()[0].parent
        >>> len(list(open_source(str(folder))))
        5
    """
    if batch_rows < 1:
        raise ConfigError(f"batch_rows must be at least 1, not {batch_rows}")
    if isinstance(inputs, (str, Path)) or hasattr(inputs, "getpixel"):
        inputs = [inputs]
    options = _Options(image_column, id_column, split, batch_rows)
    parts = [_part(kind, target, options) for kind, target in _plan(inputs)]
    return _chain(parts)


def count_items(
    inputs: Iterable[Any] | str | Path,
    *,
    image_column: str | None = None,
    id_column: str | None = None,
    split: str | None = None,
) -> int | None:
    """How many items :func:`open_source` yields for the same arguments, where that is known
    without reading the data: file names (folders listed, manifests' lines read), Parquet
    metadata, a saved dataset's row counts, CSV rows. None when an input is a tar shard (its
    samples are known only by reading it through) or cannot be read (the job says why).

    Example:
        >>> from factcap.examples import example_paths
        >>> photo = str(example_paths()[0])
        >>> count_items([photo, str(example_paths()[0].parent)])  # the photo once
        5
        >>> import tarfile, tempfile
        >>> shard = Path(tempfile.mkdtemp()) / "shard.tar"
        >>> tarfile.open(shard, "w").close()
        >>> count_items([photo, str(shard)]) is None
        True
    """
    if isinstance(inputs, (str, Path)) or hasattr(inputs, "getpixel"):
        inputs = [inputs]
    options = _Options(image_column, id_column, split, 1)
    files: set[str] = set()  # ids, as _chain keeps them: a file named twice is one item
    containers: set[str] = set()
    rows = 0
    try:
        for kind, target in _plan(inputs):
            if kind == "files":
                files.update(item.id for item in expand([target]))
            elif kind == "tar":
                return None
            elif os.path.realpath(target) not in containers:
                containers.add(os.path.realpath(target))
                rows += _count_rows(kind, target, options)
    except Exception:  # noqa: BLE001 - a count only: reading the inputs reports the problem
        return None
    return len(files) + rows


def _count_rows(kind: str, target: str, options: _Options) -> int:
    """The items of a Parquet file, saved dataset or CSV manifest: one per row."""
    if kind == "parquet":
        with _open_parquet(target) as file:
            return int(file.metadata.num_rows)
    if kind == "hf":
        import datasets

        loaded = datasets.load_from_disk(str(target))
        if isinstance(loaded, datasets.DatasetDict):
            splits = [options.split] if options.split is not None else list(loaded)
            return sum(loaded[s].num_rows for s in splits)
        return int(loaded.num_rows)
    handle, reader = _open_csv(target)
    with handle:
        return sum(1 for _ in reader)


def expand_braces(pattern: str) -> list[str]:
    """Expand shell-style braces: ``{a,b}`` alternatives and ``{000..009}`` ranges (zero
    padded when an end is), nested and repeated; text without a valid group stays as is.

    Example:
        >>> expand_braces("s-{0..1}-{a,b}.tar")
        ['s-0-a.tar', 's-0-b.tar', 's-1-a.tar', 's-1-b.tar']
        >>> expand_braces("{x}.tar")
        ['{x}.tar']
    """
    start = pattern.find("{")
    while start != -1:
        end = _matching_brace(pattern, start)
        if end is not None:
            options = _brace_options(pattern[start + 1 : end])
            if options is not None:
                head, tail = pattern[:start], expand_braces(pattern[end + 1 :])
                return [head + a + b for o in options for a in expand_braces(o) for b in tail]
        start = pattern.find("{", start + 1)
    return [pattern]


def _matching_brace(text: str, start: int) -> int | None:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _brace_options(body: str) -> list[str] | None:
    parts, depth, last = [], 0, 0
    for i, ch in enumerate(body):
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            parts.append(body[last:i])
            last = i + 1
    if parts:
        return [*parts, body[last:]]
    m = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if m:
        a, b = m.groups()
        lo, hi = int(a), int(b)
        padded = any(len(s.lstrip("-")) > 1 and s.lstrip("-").startswith("0") for s in (a, b))
        width = max(len(a), len(b)) if padded else 0
        step = 1 if hi >= lo else -1
        return [str(n).zfill(width) for n in range(lo, hi + step, step)]
    m = re.fullmatch(r"([A-Za-z])\.\.([A-Za-z])", body)
    if m:
        lo, hi = ord(m.group(1)), ord(m.group(2))
        step = 1 if hi >= lo else -1
        return [chr(c) for c in range(lo, hi + step, step)]
    return None


# --- planning: names -> (kind, target), checked before anything is read ----------------------


@dataclass(frozen=True, slots=True)
class _Options:
    image_column: str | None
    id_column: str | None
    split: str | None
    batch_rows: int


def _kind_of_file(path: str) -> str:
    name = path.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    return "files"


def _is_saved_dataset(directory: Path) -> bool:
    return (directory / "dataset_dict.json").is_file() or (
        (directory / "dataset_info.json").is_file() and (directory / "state.json").is_file()
    )


def _containers_under(directory: Path) -> list[str]:
    """Tar shards and Parquet files inside a folder (recursive, sorted), read as datasets
    next to the folder's image files."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if not name.startswith(".") and _kind_of_file(name) in ("tar", "parquet"):
                found.append(os.path.join(root, name))
    return found


def _plan(inputs: Iterable[Any]) -> list[tuple[str, Any]]:
    plan: list[tuple[str, Any]] = []
    for entry in inputs:
        if not isinstance(entry, (str, Path)):  # a PIL image
            plan.append(("files", entry))
            continue
        text = str(entry)
        if os.path.exists(text):
            names = [text]
        elif "{" in text and expand_braces(text) != [text]:
            names = []
            for name in expand_braces(text):
                if os.path.exists(name):
                    names.append(name)
                elif glob.has_magic(name):
                    names.extend(_glob(name))
                else:
                    raise ConfigError(f"{text!r} names {name!r}, which does not exist")
        elif glob.has_magic(text):
            names = _glob(text)
        else:
            raise ConfigError(f"no such file, directory or glob: {text!r}")
        for name in names:
            path = Path(name)
            if path.is_dir():
                if _is_saved_dataset(path):
                    plan.append(("hf", path))
                    continue
                plan.append(("files", name))
                plan.extend((_kind_of_file(c), c) for c in _containers_under(path))
            else:
                plan.append((_kind_of_file(name), name))
    return plan


def _glob(pattern: str) -> list[str]:
    matches = sorted(m for m in glob.glob(pattern, recursive=True) if os.path.isfile(m))
    if not matches:
        raise ConfigError(f"no file matches {pattern!r}")
    return matches


@dataclass(frozen=True, slots=True)
class _Part:
    """One planned input: its items, produced lazily (a container's file is opened only when
    its turn comes, so thousands of shards never hold thousands of open files)."""

    items: Callable[[], Iterator[InputItem]]
    container: str | None = None  # real path of a container, so a repeated name is read once


def _part(kind: str, target: Any, options: _Options) -> _Part:
    """Check one planned input now (raising ConfigError) and return how to read it."""
    if kind == "tar":
        _check_tar(target)
        return _Part(lambda: _tar_items(target), os.path.realpath(target))
    if kind == "parquet":
        return _parquet_part(target, options)
    if kind == "hf":
        return _saved_dataset_part(target, options)
    if kind == "csv":
        return _csv_part(target, options)
    return _Part(lambda: expand([target]))


def _chain(parts: list[_Part]) -> Iterator[InputItem]:
    seen_files: set[str] = set()  # items from expand() are unique by id, as expand makes them
    seen_containers: set[str] = set()
    for part in parts:
        if part.container is None:
            for item in part.items():
                if item.id not in seen_files:
                    seen_files.add(item.id)
                    yield item
        elif part.container not in seen_containers:
            seen_containers.add(part.container)
            yield from part.items()


# --- WebDataset tar shards -------------------------------------------------------------------


class _WatchedTarInfo(tarfile.TarInfo):
    """Records on the TarFile why it stopped: tarfile ends iteration quietly on a missing
    end-of-archive marker or on a corrupt header after the first member."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as e:
            tarfile_.factcap_stop = e  # type: ignore[attr-defined]
            raise


def _open_tar(path: str) -> tuple[Any, tarfile.TarFile]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as e:
        raise ConfigError(f"cannot open {path}: {e.strerror or e}") from None
    try:
        return handle, tarfile.open(fileobj=handle, mode="r|*", tarinfo=_WatchedTarInfo)
    except _TAR_ERRORS as e:
        handle.close()
        raise ConfigError(f"{path} is not a readable tar archive ({_describe(e)})") from None


def _check_tar(path: str) -> None:
    handle, _ = _open_tar(path)  # reads the first member header
    handle.close()


def _split_key(member: str) -> tuple[str, str]:
    """WebDataset's key / extension split: the extension starts at the base name's first dot."""
    folder, _, base = member.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


def _tar_items(path: str) -> Iterator[InputItem]:
    name = os.path.normpath(path)
    real = os.path.realpath(path)  # ids: the same shard however it is named
    image_exts = {s.lstrip(".") for s in image_suffixes()}
    key: str | None = None
    fields: dict[str, bytes] = {}
    duplicates: list[str] = []
    seen: dict[str, int] = {}
    last_member = ""
    reading: str | None = None

    def sample() -> InputItem:
        assert key is not None
        count = seen.get(key, 0)
        seen[key] = count + 1
        # A key that comes back later in the shard is a second sample (as in WebDataset).
        source = f"{name}#{key}"
        item_id = stable_id(f"{real}#{key}" if count == 0 else f"{real}#{key}#{count}")
        return _tar_sample(source, item_id, fields, duplicates, image_exts)

    handle, archive = _open_tar(path)
    with handle:
        try:
            for member in archive:
                if not member.isfile():
                    continue
                member_key, ext = _split_key(member.name)
                if member_key != key:
                    if key is not None:
                        yield sample()
                    key, fields, duplicates = member_key, {}, []
                reading = member.name
                extracted = archive.extractfile(member)
                data = extracted.read() if extracted is not None else b""
                reading = None
                last_member = member.name
                if ext in fields:
                    duplicates.append(member.name)
                else:
                    fields[ext] = data
        except _TAR_ERRORS as e:
            where = f"inside member {reading!r}" if reading else f"after member {last_member!r}"
            problem = (
                f"{name}: the tar data is truncated or corrupt {where} ({_describe(e)});"
                " the rest of the shard cannot be read"
            )
            if reading is not None and key is not None:
                item = sample()
                yield BrokenItem(item.source, item.id, extra=item.extra, problem=problem)
            else:
                if key is not None:
                    yield sample()
                yield _tar_tail(name, last_member, problem)
            return
    if key is not None:
        yield sample()
    stop = getattr(archive, "factcap_stop", None)
    if stop is not None and not isinstance(stop, tarfile.EOFHeaderError):
        if isinstance(stop, tarfile.EmptyHeaderError):
            why = "ends without its end-of-archive marker: the file is probably truncated"
        elif isinstance(stop, tarfile.TruncatedHeaderError):
            why = "ends in the middle of a member header: the file is truncated"
        else:
            why = f"has a corrupt member header ({_describe(stop)})"
        where = f"after member {last_member!r}" if last_member else "at its start"
        yield _tar_tail(name, last_member, f"{name} {why} {where}; any samples after it are lost")


def _tar_tail(name: str, last_member: str, problem: str) -> BrokenItem:
    """The item that stands for the unreadable rest of a shard."""
    rest = f"#<unreadable after {last_member or 'the start'}>"
    return BrokenItem(f"{name}{rest}", stable_id(os.path.realpath(name) + rest), problem=problem)


def _tar_sample(
    source: str,
    item_id: str,
    fields: dict[str, bytes],
    duplicates: list[str],
    image_exts: set[str],
) -> InputItem:
    extra: dict[str, Any] = {}
    problems = [f"the sample has two members named {d!r}" for d in duplicates]
    for ext, data in fields.items():
        try:
            if ext == "json":
                extra[ext] = json.loads(data)
            elif ext in _TEXT_EXTENSIONS:
                extra[ext] = data.decode("utf-8")
            elif ext in _INT_EXTENSIONS:
                text = data.decode("utf-8").strip()
                extra[ext] = int(text) if re.fullmatch(r"-?\d+", text) else text
        except (ValueError, UnicodeDecodeError) as e:
            problems.append(f"its .{ext} member cannot be read ({_describe(e)})")
    image_ext = next((e for e in fields if e.rpartition(".")[2] in image_exts), None)
    media_ext = next((e for e in fields if f".{file_format(f'x.{e}')}" in media_suffixes()), None)
    if image_ext is None and media_ext is not None and not problems:
        fmt = file_format(f"x.{media_ext}")
        return InputItem(source, item_id, extra=extra, data=fields[media_ext], format=fmt)
    if image_ext is None:
        members = ", ".join(f".{e}" for e in fields) or "none"
        return BrokenItem(
            source,
            item_id,
            extra=extra,
            problem=f"{source}: the sample has no image member (members: {members})",
            problem_type="MissingImage",
        )
    if problems:
        return BrokenItem(source, item_id, extra=extra, problem=f"{source}: {'; '.join(problems)}")
    return InputItem(source=source, id=item_id, extra=extra, data=fields[image_ext])


# --- Parquet and saved datasets: Arrow record batches ----------------------------------------


@dataclass(frozen=True, slots=True)
class _Columns:
    image: str
    image_kind: str  # "bytes" | "struct" | "path"
    id: str | None
    extra: tuple[str, ...]


def _plan_columns(
    schema: Any, where: str, options: _Options, preferred: tuple[str, ...] = ()
) -> _Columns:
    """Choose the image, id and extra columns of an Arrow schema."""
    import pyarrow as pa

    types = {f.name: f.type for f in schema}

    def kind(t: Any) -> str | None:
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return "bytes"
        if pa.types.is_struct(t) and t.get_field_index("bytes") >= 0:
            return "struct"
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return "path"
        return None

    listing = ", ".join(f"{n}: {t}" for n, t in types.items())
    if options.image_column is not None:
        if options.image_column not in types:
            raise ConfigError(f"{where} has no column {options.image_column!r} ({listing})")
        image = options.image_column
        image_kind = kind(types[image])
        if image_kind is None:
            raise ConfigError(
                f"{where}: column {image!r} is {types[image]}, not image bytes,"
                " {bytes, path} structs or paths"
            )
    else:
        binary = [n for n in types if kind(types[n]) in ("bytes", "struct")]
        named = [n for n in (*preferred, *IMAGE_COLUMNS) if n in binary]
        paths = [n for n in PATH_COLUMNS if n in types and kind(types[n]) == "path"]
        choice = (named or binary or paths or [None])[0]
        if choice is None:
            raise ConfigError(
                f"{where}: no column of image bytes or paths found ({listing});"
                " name it with image_column (--image-column)"
            )
        image, image_kind = choice, kind(types[choice])
    assert image_kind is not None

    if options.id_column is not None:
        if options.id_column not in types:
            raise ConfigError(f"{where} has no id column {options.id_column!r} ({listing})")
        id_col: str | None = options.id_column
    else:
        id_col = next((n for n in ID_COLUMNS if n in types and n != image), None)
    extra = tuple(n for n, t in types.items() if n not in (image, id_col) and _is_scalar(pa, t))
    return _Columns(image, image_kind, id_col, extra)


def _is_scalar(pa: Any, t: Any) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
        or pa.types.is_temporal(t)
    )


def _json_value(value: Any) -> Any:
    """An Arrow scalar as a JSON-ready value (records are strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, _dt.timedelta)):
        return str(value)
    return value


def _batch_items(
    batch: Any, columns: _Columns, base: Path | str, prefix: str, first_row: int
) -> Iterator[InputItem]:
    """Items for one Arrow table / record batch; row ``n``'s source is ``prefix + str(n)``,
    its id (unless a column gives one) from the same with the container's resolved path."""
    container, sep, rest = prefix.partition("#")
    id_prefix = f"{os.path.realpath(container)}{sep}{rest}"
    images = batch.column(columns.image).to_pylist()
    ids = batch.column(columns.id).to_pylist() if columns.id else [None] * len(images)
    extras = {n: batch.column(n).to_pylist() for n in columns.extra}
    for i, value in enumerate(images):
        row = first_row + i
        source = f"{prefix}{row}"
        extra = {n: _json_value(v[i]) for n, v in extras.items()}
        given_id = None if ids[i] is None else str(ids[i])
        data, path = None, None
        if columns.image_kind == "bytes":
            data = value
        elif columns.image_kind == "struct" and value is not None:
            data, path = value.get("bytes"), value.get("path")
        else:
            path = value
        row_id = given_id or stable_id(f"{id_prefix}{row}")
        if data:
            yield InputItem(source, row_id, extra=extra, data=data)
        elif path:
            file = path if os.path.isabs(path) else os.path.join(base, path)
            yield file_item(file, given_id, extra)
        else:
            yield BrokenItem(
                source,
                row_id,
                extra=extra,
                problem=f"{source}: row {row} has no image (column {columns.image!r} is empty)",
                problem_type="MissingImage",
            )


def _open_parquet(path: str) -> Any:
    require("pyarrow", "parquet")
    import pyarrow.parquet as pq

    try:
        # pre_buffer would read far ahead of the batch being consumed.
        return pq.ParquetFile(path, pre_buffer=False)
    except Exception as e:  # ArrowInvalid, OSError: not Parquet, or unreadable
        raise ConfigError(f"{path} is not a readable Parquet file ({_describe(e)})") from None


def _parquet_part(path: str, options: _Options) -> _Part:
    with _open_parquet(path) as file:
        columns = _plan_columns(file.schema_arrow, path, options)
    return _Part(lambda: _parquet_items(path, columns, options), os.path.realpath(path))


def _parquet_items(path: str, columns: _Columns, options: _Options) -> Iterator[InputItem]:
    name = os.path.normpath(path)
    row = 0
    with _open_parquet(path) as file:
        batches = file.iter_batches(batch_size=options.batch_rows)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as e:  # a corrupt page or row group: the rest is unreadable
                source = f"{name}#rows {row}-"
                yield BrokenItem(
                    source,
                    stable_id(f"{os.path.realpath(name)}#rows {row}-"),
                    problem=f"{name}: rows from {row} on cannot be read ({_describe(e)})",
                )
                return
            yield from _batch_items(batch, columns, os.path.dirname(name), f"{name}#", row)
            row += batch.num_rows


def _saved_dataset_part(directory: Path, options: _Options) -> _Part:
    require("datasets", "datasets")
    import datasets

    try:
        loaded = datasets.load_from_disk(str(directory))  # memory-maps the Arrow files
    except Exception as e:
        raise ConfigError(
            f"{directory} cannot be loaded with datasets.load_from_disk ({_describe(e)})"
        ) from None
    name = os.path.normpath(str(directory))
    if isinstance(loaded, datasets.DatasetDict):
        if options.split is not None and options.split not in loaded:
            raise ConfigError(
                f"{directory} has no split {options.split!r} (splits: {', '.join(loaded)})"
            )
        splits = [options.split] if options.split is not None else list(loaded)
        parts = [(f"{name}#{s}/", loaded[s]) for s in splits]
    else:
        parts = [(f"{name}#", loaded)]
    plans = []
    for prefix, ds in parts:
        preferred = tuple(n for n, f in ds.features.items() if isinstance(f, datasets.Image))
        plans.append((prefix, ds, _plan_columns(ds.data.schema, name, options, preferred)))

    def items() -> Iterator[InputItem]:
        for prefix, ds, columns in plans:
            row = 0
            for table in ds.with_format("arrow").iter(batch_size=options.batch_rows):
                yield from _batch_items(table, columns, name, prefix, row)
                row += table.num_rows

    return _Part(items, os.path.realpath(directory))


# --- CSV / TSV manifests ---------------------------------------------------------------------


def _csv_columns(path: str, header: list[str], options: _Options) -> tuple[str, str | None]:
    if options.image_column is not None:
        if options.image_column not in header:
            raise ConfigError(f"{path} has no column {options.image_column!r} ({header})")
        column = options.image_column
    else:
        found = next((c for c in PATH_COLUMNS if c in header), None)
        if found is None:
            raise ConfigError(
                f"{path}: needs a column of image paths, one of {', '.join(PATH_COLUMNS)}"
                f" (it has {', '.join(header) or 'no header'}), or name it with image_column"
            )
        column = found
    id_col = options.id_column or next((c for c in ID_COLUMNS if c in header), None)
    if id_col is not None and id_col not in header:
        raise ConfigError(f"{path} has no id column {id_col!r} ({header})")
    return column, id_col


def _open_csv(path: str) -> tuple[Any, csv.DictReader]:
    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    try:
        handle = open(path, encoding="utf-8", newline="")  # noqa: SIM115 - the caller closes it
        return handle, csv.DictReader(handle, delimiter=delimiter)
    except OSError as e:
        raise ConfigError(f"cannot open {path}: {e.strerror or e}") from None


def _csv_part(path: str, options: _Options) -> _Part:
    handle, reader = _open_csv(path)
    with handle:
        try:
            header = list(reader.fieldnames or [])
        except (UnicodeDecodeError, csv.Error) as e:
            raise ConfigError(f"{path}: cannot read the CSV header ({_describe(e)})") from None
    column, id_col = _csv_columns(path, header, options)
    return _Part(lambda: _csv_items(path, column, id_col), os.path.realpath(path))


def _csv_items(path: str, column: str, id_col: str | None) -> Iterator[InputItem]:
    base = os.path.dirname(path)
    name = os.path.normpath(path)
    handle, reader = _open_csv(path)
    with handle:
        for row in reader:
            line = reader.line_num
            value = (row.get(column) or "").strip()
            extra = {k: v for k, v in row.items() if k not in (column, id_col) and k}
            given = (row.get(id_col) or "").strip() if id_col else ""
            if not value:
                source = f"{name}:{line}"
                yield BrokenItem(
                    source,
                    given or stable_id(f"{os.path.realpath(path)}:{line}"),
                    extra=extra,
                    problem=f"{name}:{line}: the {column!r} cell is empty",
                    problem_type="MissingImage",
                )
                continue
            file = value if os.path.isabs(value) else os.path.join(base, value)
            yield file_item(file, given or None, extra)


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
