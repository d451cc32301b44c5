"""Loading an asset with trimesh, within limits, into meshes and point clouds ready to draw.

Line geometry (``Path3D``, which pyrender cannot draw) is left out and named in the facts.
Every problem is an :class:`~factcap.errors.ImageError` whose ``kind`` the record carries:
``AssetTooLarge`` (file size, faces, points), ``CorruptAsset`` (trimesh cannot read it),
``EmptyAsset`` (nothing to draw).

Example:
    >>> import trimesh
    >>> data = trimesh.creation.box().export(file_type="glb")
    >>> parts, facts = load_asset(data, "glb")
    >>> facts["faces"], facts["geometries"], len(parts)
    (12, 1, 1)
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from factcap.assets.spec import AssetLimits
from factcap.errors import ImageError, require


def _trimesh() -> Any:
    require("trimesh", "3d")
    import trimesh

    return trimesh


def _describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:300] if text else type(err).__name__


def load_asset(
    source: str | bytes, file_type: str | None = None, limits: AssetLimits | None = None
) -> tuple[list[tuple[Any, np.ndarray]], dict[str, Any]]:
    """``(parts, facts)``: each drawable part (a ``trimesh.Trimesh`` or ``PointCloud``) with
    its 4x4 world transform, normalised so the whole asset is centred on the origin and its
    longest side is 1; and the facts (faces, vertices, points, original bounds, skipped)."""
    limits = limits or AssetLimits()
    trimesh = _trimesh()
    label = "the asset" if isinstance(source, bytes) else str(source)
    size = len(source) if isinstance(source, bytes) else _file_size(source)
    if size > limits.max_file_bytes:
        raise ImageError(
            "AssetTooLarge",
            f"{label} is {size:,} bytes, over the limit of {limits.max_file_bytes:,} "
            "(assets.max_file_mb in the config)",
        )
    file_type = file_type or Path(str(source)).suffix.lstrip(".").lower() or None
    try:
        if isinstance(source, bytes):
            loaded = trimesh.load(io.BytesIO(source), file_type=file_type, force="scene")
        else:
            loaded = trimesh.load(str(source), file_type=file_type, force="scene")
    except ImageError:
        raise
    except Exception as err:  # trimesh raises anything for a broken file
        raise ImageError("CorruptAsset", f"{label} cannot be read ({_describe(err)})") from None
    return _parts(loaded, label, limits)


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError as err:
        raise ImageError("FileNotFound", f"cannot read {path}: {err.strerror}") from None


def _parts(scene: Any, label: str, limits: AssetLimits) -> tuple[list[Any], dict[str, Any]]:
    trimesh = _trimesh()
    parts: list[tuple[Any, np.ndarray]] = []
    skipped: list[str] = []
    faces = vertices = points = 0
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geometry = scene.geometry[name]
        if isinstance(geometry, trimesh.Trimesh):
            if len(geometry.faces) == 0:
                skipped.append(f"{name}: a mesh without faces")
                continue
            faces += len(geometry.faces)
            vertices += len(geometry.vertices)
        elif isinstance(geometry, trimesh.PointCloud):
            points += len(geometry.vertices)
        else:  # Path3D / Path2D: lines pyrender cannot draw
            skipped.append(f"{name}: {type(geometry).__name__} (lines are not rendered)")
            continue
        parts.append((geometry, np.asarray(transform, dtype=np.float64)))
    if faces > limits.max_faces or points > limits.max_points:
        raise ImageError(
            "AssetTooLarge",
            f"{label} has {faces:,} faces and {points:,} points, over the limits of "
            f"{limits.max_faces:,} faces / {limits.max_points:,} points (assets.max_faces, "
            "assets.max_points in the config)",
        )
    if not parts:
        what = f" ({'; '.join(skipped)})" if skipped else ""
        raise ImageError("EmptyAsset", f"{label} holds nothing to render{what}")
    corners = np.concatenate([_world_corners(g, t) for g, t in parts])
    low, high = corners.min(axis=0), corners.max(axis=0)
    extent = float((high - low).max())
    if not np.isfinite(extent) or extent <= 0:
        raise ImageError("EmptyAsset", f"{label} has no extent (all its points coincide)")
    normalise = np.eye(4)
    normalise[:3, :3] /= extent
    normalise[:3, 3] = -(low + high) / 2 / extent
    facts = {
        "faces": faces,
        "vertices": vertices,
        "points": points,
        "geometries": len(parts),
        "bounds": [[round(float(v), 6) for v in low], [round(float(v), 6) for v in high]],
        "skipped": skipped,
    }
    return [(g, normalise @ t) for g, t in parts], facts


def _world_corners(geometry: Any, transform: np.ndarray) -> np.ndarray:
    points = np.asarray(geometry.vertices, dtype=np.float64)
    homogeneous = np.c_[points, np.ones(len(points))]
    return (homogeneous @ transform.T)[:, :3]
