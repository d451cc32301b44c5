"""Media kinds: what an input is (a photo, a 3D asset) and how it becomes the list of views
every stage looks at. A photo is one view; an asset is its rendered views. The stages,
metrics, sinks, executors and the report handle a list of views and never ask which kind
they have; what differs (how an input loads, what its record says, how the checks of several
views combine, what its captions must not say) is the kind's (:class:`MediaKind`).

README: "3D assets"; ARCHITECTURE.md: "How to add one" (a media kind is one module and its
line in :data:`MEDIA_MODULES`).

>>> kind_for("photos/cat.jpg").name, kind_for("models/Chair.GLB").name
('image', 'asset')
>>> media_kind("asset").label
'3D asset'
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from pathlib import PurePosixPath

from factcap.errors import ConfigError
from factcap.media.base import KindSettings, Loaded, Loader, MediaKind, View

__all__ = [
    "MEDIA_MODULES",
    "KindSettings",
    "Loaded",
    "Loader",
    "MediaKind",
    "View",
    "file_format",
    "kind_for",
    "kind_for_format",
    "media_suffixes",
    "media_kind",
    "media_kinds",
]

#: The media kind modules (each has ``KIND``, a :class:`MediaKind`); the first is the kind of
#: any input no other kind takes.
MEDIA_MODULES: tuple[str, ...] = (
    "factcap.media.photo",
    "factcap.media.asset",
)


def media_kinds() -> dict[str, MediaKind]:
    """Every registered kind by name."""
    return _kinds(MEDIA_MODULES)


@cache
def _kinds(modules: tuple[str, ...]) -> dict[str, MediaKind]:
    kinds = [import_module(m).KIND for m in modules]
    return {k.name: k for k in kinds}


def media_kind(name: str) -> MediaKind:
    """The kind called ``name`` (a record's ``media.kind``).

    Raises:
        ConfigError: no kind has that name.
    """
    kinds = media_kinds()
    if name not in kinds:
        raise ConfigError(f"unknown media kind {name!r}; known: {', '.join(kinds)}")
    return kinds[name]


def file_format(name: str) -> str:
    """The lower-case ending of a file or tar member name, without the dot ('' for none).

    >>> file_format("a/B.JPG"), file_format("x")
    ('jpg', '')
    """
    return PurePosixPath(name.lower()).suffix[1:]


def kind_for(name: str) -> MediaKind:
    """The kind of a file (or tar member) called ``name``: the kind that takes its ending,
    else the first kind (a photo)."""
    return kind_for_format(file_format(name))


def kind_for_format(fmt: str) -> MediaKind:
    """The kind that takes files ending in ``fmt`` (``glb``), else the first kind (a photo).

    >>> kind_for_format("obj").name, kind_for_format("").name
    ('asset', 'image')
    """
    kinds = list(media_kinds().values())
    return next((k for k in kinds if fmt and fmt in k.formats), kinds[0])


def media_suffixes() -> frozenset[str]:
    """The file endings (with the dot) some kind besides the photo takes (asked once per tar
    sample, so made once per registry)."""
    return _suffixes(MEDIA_MODULES)


@cache
def _suffixes(modules: tuple[str, ...]) -> frozenset[str]:
    return frozenset(f".{f}" for k in _kinds(modules).values() for f in k.formats)
