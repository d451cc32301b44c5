"""Turn what the user names (files, directories, globs, manifests, PIL images) into items.

Items are yielded lazily, in a stable order (directories sorted). A file's id comes from its
resolved path (:func:`file_item`), so a file is the same item however it is spelled
(``./photos/a.jpg``, ``photos/../photos/a.jpg``, an absolute path, a symlink to it); a
manifest's own ids win. Nothing that is not a regular file is ever opened: a FIFO, socket or
device becomes an item with a ``problem`` (its record says why). So does a manifest line that
cannot be read, with its line number; the job goes on.

>>> items = list(expand([Path(__file__)]))
>>> items[0].source.endswith("inputs.py")
True
"""

from __future__ import annotations

import glob
import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcap.errors import ConfigError
from factcap.media import file_format
from factcap.schema import stable_id

MANIFEST_SUFFIXES = (".txt", ".jsonl")
#: The keys (JSONL manifests) and columns (CSV manifests, Parquet, datasets) that hold an
#: image's path, tried in this order.
PATH_KEYS = ("path", "image_path", "file_name", "filename", "file", "image", "source")


@dataclass(slots=True)
class InputItem:
    """One thing to caption: a path on disk, encoded bytes (``data``, e.g. from a tar shard
    or a Parquet row), or an in-memory PIL image (``image``)."""

    source: str
    id: str
    image: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    data: bytes | None = None
    problem: str | None = None  # set when the container holding it was damaged
    problem_type: str = "CorruptInput"  # its record's error type when ``problem`` is set
    format: str = ""  # its file ending ("jpg", "glb"; "" unknown): decides its media kind
    views: list[Any] | None = None  # views made from it (an asset's renders), for sinks

    @property
    def payload(self) -> Any:
        """What to decode: the PIL image, else the bytes, else the path."""
        if self.image is not None:
            return self.image
        return self.data if self.data is not None else self.source


def image_suffixes() -> frozenset[str]:
    """File endings Pillow can open; used (with the 3D asset endings) to pick files out of
    directories."""
    from PIL import Image

    return frozenset(Image.registered_extensions()) | {".avif", ".heic"}


def _walk(directory: Path) -> Iterator[Path]:
    from factcap.media import media_suffixes

    suffixes = image_suffixes() | media_suffixes()
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in suffixes and not name.startswith("."):
                yield Path(root) / name


def special_file(path: str | os.PathLike[str]) -> str | None:
    """What ``path`` is when it is a FIFO, socket or device (never to be opened), else None.

    >>> special_file("/dev/null"), special_file(__file__)
    ('a character device', None)
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    for test, what in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return None


def file_item(
    source: str, given_id: str | None = None, extra: dict[str, Any] | None = None
) -> InputItem:
    """The item for an image file named ``source``: its id from the resolved path (or
    ``given_id``), and a ``problem`` when it is not a regular file (never opened).

    >>> file_item("photos/../photos/cat.jpg").id == file_item("photos/cat.jpg").id
    True
    """
    item = InputItem(
        source=source,
        id=given_id or stable_id(os.path.realpath(source)),
        extra=dict(extra or {}),
        format=file_format(source),
    )
    what = special_file(source)
    if what is not None:
        item.problem = f"{source} is {what}, not an image file: it was not opened"
        item.problem_type = "NotAFile"
    return item


def bad_line(
    manifest: Path, line_no: int, problem: str, problem_type: str = "BadManifestLine"
) -> InputItem:
    """The item standing for a manifest line that cannot be read: its record says why."""
    source = f"{manifest}:{line_no}"
    item = InputItem(source=source, id=stable_id(f"{os.path.realpath(manifest)}:{line_no}"))
    item.problem, item.problem_type = f"{source}: {problem}", problem_type
    return item


def _from_manifest(manifest: Path) -> Iterator[InputItem]:
    base = manifest.parent
    with manifest.open(encoding="utf-8", errors="replace") as handle:
        for line_no, line in enumerate(handle, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            extra: dict[str, Any] = {}
            item_id = None
            if manifest.suffix == ".jsonl":
                try:
                    row = json.loads(line)
                except ValueError:
                    yield bad_line(manifest, line_no, "not valid JSON")
                    continue
                if not isinstance(row, dict):
                    yield bad_line(manifest, line_no, "not a JSON object")
                    continue
                key = next((k for k in PATH_KEYS if isinstance(row.get(k), str)), None)
                if key is None:
                    keys = ", ".join(PATH_KEYS)
                    yield bad_line(
                        manifest, line_no, f"needs one of the keys {keys}", "MissingImage"
                    )
                    continue
                line = row.pop(key)
                item_id = row.pop("id", None)
                extra = row
            path = Path(line) if Path(line).is_absolute() else base / line
            yield file_item(str(path), None if item_id is None else str(item_id), extra)


def _image_id(image: Any, index: int) -> str:
    try:
        header = f"{image.mode}:{image.size}".encode()
        return stable_id("", header + image.tobytes())
    except Exception:  # a lazily opened, broken image: decoding will report it
        return stable_id(f"<image {index}>")


def _named(inputs: Iterable[Any]) -> Iterator[InputItem]:
    for index, entry in enumerate(inputs):
        if hasattr(entry, "getpixel"):  # a PIL image
            yield InputItem(source=f"<image {index}>", id=_image_id(entry, index), image=entry)
            continue
        text = str(entry)
        path = Path(text)
        if path.is_dir():
            for file in _walk(path):
                yield file_item(str(file))
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            yield from _from_manifest(path)
        elif path.exists():
            yield file_item(text)
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise ConfigError(f"no file matches {text!r}")
            for match in matches:
                if not Path(match).is_dir():
                    yield file_item(match)
        else:
            raise ConfigError(f"no such file, directory or glob: {text!r}")


def expand(inputs: Iterable[Any] | str | Path | Any) -> Iterator[InputItem]:
    """Items for each input: a file, a directory (recursive), a glob, a ``.txt``/``.jsonl``
    manifest of paths, or a PIL image (a single one may be given without a list).

    Raises :class:`ConfigError` for a name that matches nothing (a typo should stop the job,
    not produce an empty output). An input named twice (``photos/`` and ``photos/a.jpg``) is
    yielded once: items are unique by ``id``.
    """
    if isinstance(inputs, (str, Path)) or hasattr(inputs, "getpixel"):
        inputs = [inputs]
    seen: set[str] = set()
    for item in _named(inputs):
        if item.id not in seen:
            seen.add(item.id)
            yield item
