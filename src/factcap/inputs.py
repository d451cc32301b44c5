"""Turn what the user names (files, directories, globs, manifests, PIL images) into items.

Items are yielded lazily, in a stable order (directories sorted), so a large directory or
manifest is never loaded whole.

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
    """One thing to caption: a path on disk, or an in-memory image (``image``)."""

    source: str
    id: str
    image: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


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
            source = str(path)
            yield InputItem(source=source, id=str(item_id or stable_id(source)), extra=extra)


def expand(inputs: Iterable[str | Path | Any]) -> Iterator[InputItem]:
    """Items for each input: a file, a directory (recursive), a glob, a ``.txt``/``.jsonl``
    manifest of paths, or a PIL image. Raises :class:`ConfigError` for a name that matches
    nothing (a typo should stop the job, not produce an empty output)."""
    for index, entry in enumerate(inputs):
        if hasattr(entry, "getpixel"):  # a PIL image
            yield InputItem(
                source=f"<image {index}>", id=stable_id("", entry.tobytes()), image=entry
            )
            continue
        text = str(entry)
        path = Path(text)
        if path.is_dir():
            for file in _walk(path):
                yield InputItem(source=str(file), id=stable_id(str(file)))
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            yield from _from_manifest(path)
        elif path.exists():
            yield InputItem(source=text, id=stable_id(text))
        elif glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise ConfigError(f"no file matches {text!r}")
            for match in matches:
                if Path(match).is_file():
                    yield InputItem(source=match, id=stable_id(match))
        else:
            raise ConfigError(f"no such file, directory or glob: {text!r}")
