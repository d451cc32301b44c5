"""What an asset render is asked for and what it gives back (no heavy imports here).

The default views are the layout 3D captioning datasets use: four around the object at a low
elevation, two from above, two from below. Azimuth 0 looks at the object's front (+Z, glTF's
convention, with +Y up); angles are in degrees.

>>> [(v.azimuth, v.elevation) for v in DEFAULT_VIEWS][:4]
[(0.0, 15.0), (90.0, 15.0), (180.0, 15.0), (270.0, 15.0)]
>>> asset_type("shapes/chair.glb"), asset_type("scene.gltf"), asset_type("x.png")
('glb', 'gltf', None)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

#: File endings read as 3D assets.
ASSET_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """One camera: ``azimuth`` around the vertical axis, ``elevation`` above the horizon."""

    azimuth: float
    elevation: float


DEFAULT_VIEWS: tuple[ViewSpec, ...] = (
    ViewSpec(0.0, 15.0),
    ViewSpec(90.0, 15.0),
    ViewSpec(180.0, 15.0),
    ViewSpec(270.0, 15.0),
    ViewSpec(45.0, 60.0),
    ViewSpec(225.0, 60.0),
    ViewSpec(135.0, -45.0),
    ViewSpec(315.0, -45.0),
)


@dataclass(frozen=True, slots=True)
class ViewSettings:
    """How an asset is rendered: its views, the square image size, the background colour."""

    views: tuple[ViewSpec, ...] = DEFAULT_VIEWS
    size: int = 512
    background: tuple[int, int, int] = (255, 255, 255)


@dataclass(frozen=True, slots=True)
class AssetLimits:
    """Limits on an asset; one over a limit becomes an error record (``AssetTooLarge``), as
    does one whose rendering takes longer than ``render_timeout_s`` (``RenderTimeout``)."""

    max_file_bytes: int = 256 * 1024 * 1024
    max_faces: int = 2_000_000
    max_points: int = 5_000_000
    render_timeout_s: float = 120.0


@dataclass
class RenderedAsset:
    """The views of one asset (RGB PIL images, in the order of ``views``) and its facts:
    faces, vertices, points, the original bounds, and what was left out (line geometry)."""

    images: list[Any]
    views: tuple[ViewSpec, ...]
    facts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    """How long loading and rendering took (in the worker)."""

    def view_records(self) -> list[dict[str, Any]]:
        """The record's ``views``: index, azimuth and elevation of each."""
        return [
            {"index": i, "azimuth": v.azimuth, "elevation": v.elevation}
            for i, v in enumerate(self.views)
        ]


def asset_type(name: str) -> str | None:
    """The asset format a file (or tar member) name says, e.g. ``glb``; None for others."""
    suffix = PurePosixPath(name.lower()).suffix
    return suffix[1:] if suffix in ASSET_SUFFIXES else None


def is_asset_name(name: str) -> bool:
    """Whether a file name ends like a 3D asset."""
    return asset_type(name) is not None
