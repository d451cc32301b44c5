"""Real photos shipped with factcap for examples, smoke runs and tests.

Five photos from scikit-image's sample data, re-encoded as JPEG (quality 90, at most 512 px
on the long side); ``README.md`` in this folder gives each one's source and licence.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
_SUFFIXES = {".jpg", ".jpeg", ".png"}


def example_paths() -> list[Path]:
    """Paths of the bundled example photos, sorted by file name.

    Example:
        >>> [p.name for p in example_paths()]
        ['astronaut.jpg', 'camera.jpg', 'chelsea.jpg', 'coffee.jpg', 'rocket.jpg']
    """
    return sorted(p for p in _HERE.iterdir() if p.suffix.lower() in _SUFFIXES)
