"""Turn what the user names (files, directories, globs, manifests, PIL images) into items.

Items are yielded lazily, in a stable order (directories sorted); the library streams them,
the command line collects them first to show a progress total.

>>> items = list(expand([Path(__file__)]))
>>> items[0].source.endswith("inputs.py")
True
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcap.errors import ConfigError
from factcap.schema import stable_id

MANIFEST_SUFFIXES = (".txt", ".jsonl")
_PATH_KEYS = ("path", "image", "source", "file", "image_path")


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
    kind: str = "CorruptInput"  # the error type its record carries when ``problem`` is set

    @property
    def payload(self) -> Any:
        """What to decode: the PIL image, else the bytes, else the path."""
        if self.image is not None:
            return self.image
        return self.data if self.data is not None else self.source


def image_suffixes() -> frozenset[str]:
    """File endings Pillow can open; used to pick files out of directories."""
    from PIL import Image

    return frozenset(Image.registered_extensions()) | {".avif", ".heic"}


def _walk(directory: Path) -> Iterator[Path]:
    suffixes = image_suffixes()
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if Path(name).suffix.lower() in suffixes and not name.startswith("."):
                yield Path(root) / name


def _from_manifest(manifest: Path) -> Iterator[InputItem]:
    base = manifest.parent
    with manifest.open(encoding="utf-8") as handle:
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
                    raise ConfigError(f"{manifest}:{line_no}: not a JSON object") from None
                if not isinstance(row, dict):
                    raise ConfigError(f"{manifest}:{line_no}: not a JSON object")
                key = next((k for k in _PATH_KEYS if isinstance(row.get(k), str)), None)
                if key is None:
                    raise ConfigError(
                        f"{manifest}:{line_no}: needs one of the keys {', '.join(_PATH_KEYS)}"
                    )
                line = row.pop(key)
                item_id = row.pop("id", None)
                extra = row
            path = Path(line) if Path(line).is_absolute() else base / line
            item = _file_item(str(path))
            if item_id is not None:
                item.id = str(item_id)
            item.extra = extra
            yield item


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
                yield _file_item(str(file))
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            yield from _from_manifest(path)
        elif path.exists():
            yield _file_item(text)
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise ConfigError(f"no file matches {text!r}")
            for match in matches:
                if Path(match).is_file():
                    yield _file_item(match)
        else:
            raise ConfigError(f"no such file, directory or glob: {text!r}")


def _file_item(source: str) -> InputItem:
    return InputItem(source=source, id=stable_id(os.path.normpath(source)))


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
