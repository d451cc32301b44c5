"""Rendering an asset's views headless with pyrender through EGL.

The camera orbits the origin (the asset is centred and scaled to a unit box by
:func:`~factcap.assets.load.load_asset`) at a distance that makes the asset's bounding sphere
fill the view; three directional lights (key, fill, rim) move with the camera, so every view
is lit alike; faces are drawn from both sides; the background is a flat colour.

``PYOPENGL_PLATFORM`` is set to ``egl`` (unless the user set it) before pyrender is
imported: nothing to configure, no X server. One offscreen renderer is kept per thread and
size (making one costs about a second; a GL context belongs to the thread that made it) and
deleted when the process exits.

Example:
    >>> import trimesh
    >>> from factcap.assets.load import load_asset
    >>> from factcap.assets.spec import ViewSettings, ViewSpec
    >>> box = trimesh.creation.box()
    >>> box.visual.face_colors = [200, 30, 30, 255]
    >>> parts, _ = load_asset(box.export(file_type="glb"), "glb")
    >>> [view] = render_views(parts, ViewSettings(views=(ViewSpec(30.0, 20.0),), size=64))
    >>> view.size, view.getpixel((32, 32))[0] > 100
    ((64, 64), True)
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import threading
from typing import Any

import numpy as np

from factcap.assets.spec import ViewSettings, ViewSpec
from factcap.errors import ImageError, require

YFOV = math.radians(40.0)
MARGIN = 1.08  # distance beyond the one where the bounding sphere just touches the frame
_renderers: dict[tuple[int, int], Any] = {}  # (thread, size): a GL context is a thread's


def _pyrender() -> Any:
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    require("pyrender", "3d")
    import pyrender

    return pyrender


def _renderer(size: int) -> Any:
    key = (threading.get_ident(), size)
    if key not in _renderers:
        pyrender = _pyrender()
        try:
            _renderers[key] = pyrender.OffscreenRenderer(size, size, point_size=3.0)
        except Exception as err:  # no EGL / GL: say what to install, once per process
            raise ImageError(
                "RenderFailed",
                f"no headless OpenGL here ({type(err).__name__}: {err}); factcap renders with "
                "EGL: install Mesa's libegl1 and libgl1-mesa-dri (Debian/Ubuntu), or a GPU "
                "driver with EGL",
            ) from None
        if len(_renderers) == 1:
            atexit.register(_delete_renderers)
    return _renderers[key]


def _delete_renderers() -> None:
    for renderer in _renderers.values():
        with contextlib.suppress(Exception):  # the process is exiting anyway
            renderer.delete()
    _renderers.clear()


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """The 4x4 pose of a camera (or light) at ``eye`` looking at ``target`` (OpenGL: the
    camera looks down its own -Z axis, +Y up).

    >>> pose = look_at(np.array([0, 0, 2.0]), np.zeros(3), np.array([0, 1.0, 0]))
    >>> pose[:3, 3].tolist(), (pose[:3, 2] + 0.0).tolist()
    ([0.0, 0.0, 2.0], [0.0, 0.0, 1.0])
    """
    forward = target - eye
    forward = forward / np.linalg.norm(forward)
    if abs(float(np.dot(forward, up))) > 0.999:  # looking straight up or down
        up = np.array([0.0, 0.0, -1.0 if forward[1] < 0 else 1.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, true_up, -forward, eye
    return pose


def orbit(view: ViewSpec, distance: float) -> np.ndarray:
    """Where the camera of ``view`` stands: azimuth 0 on +Z, 90 on +X; elevation up +Y."""
    az, el = math.radians(view.azimuth), math.radians(view.elevation)
    return distance * np.array(
        [math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)]
    )


def _scene(parts: list[tuple[Any, np.ndarray]], background: tuple[int, int, int]) -> Any:
    pyrender = _pyrender()
    bg = [c / 255.0 for c in background] + [1.0]
    scene = pyrender.Scene(bg_color=bg, ambient_light=[0.35, 0.35, 0.35])
    for geometry, transform in parts:
        if hasattr(geometry, "faces"):
            smooth = getattr(geometry.visual, "kind", None) != "face"
            mesh = pyrender.Mesh.from_trimesh(geometry, smooth=smooth)
        else:  # a point cloud
            colors = getattr(geometry, "colors", None)
            colors = colors if colors is not None and len(colors) else None
            mesh = pyrender.Mesh.from_points(np.asarray(geometry.vertices), colors=colors)
        scene.add(mesh, pose=transform)
    return scene


def _radius(parts: list[tuple[Any, np.ndarray]]) -> float:
    radius = 0.0
    for geometry, transform in parts:
        points = np.asarray(geometry.vertices, dtype=np.float64)
        world = (np.c_[points, np.ones(len(points))] @ transform.T)[:, :3]
        radius = max(radius, float(np.linalg.norm(world, axis=1).max()))
    return max(radius, 1e-6)


def render_views(parts: list[tuple[Any, np.ndarray]], settings: ViewSettings) -> list[Any]:
    """One RGB PIL image per view of ``settings`` (see the module docstring)."""
    from PIL import Image

    pyrender = _pyrender()
    scene = _scene(parts, settings.background)
    distance = _radius(parts) / math.sin(YFOV / 2) * MARGIN
    camera = scene.add(pyrender.PerspectiveCamera(yfov=YFOV, znear=0.01, zfar=distance * 4))
    lights = [
        (scene.add(pyrender.DirectionalLight(intensity=intensity)), offset)
        for intensity, offset in ((3.0, (40.0, 35.0)), (1.2, (-50.0, 10.0)), (1.5, (180.0, 40.0)))
    ]
    renderer = _renderer(settings.size)
    flags = pyrender.RenderFlags.SKIP_CULL_FACES
    up, origin = np.array([0.0, 1.0, 0.0]), np.zeros(3)
    images = []
    for view in settings.views:
        scene.set_pose(camera, look_at(orbit(view, distance), origin, up))
        for node, (d_az, d_el) in lights:  # key, fill and rim, placed relative to the camera
            where = ViewSpec(view.azimuth + d_az, max(-80.0, min(80.0, view.elevation + d_el)))
            scene.set_pose(node, look_at(orbit(where, distance), origin, up))
        try:
            color, _ = renderer.render(scene, flags=flags)
        except Exception as err:  # a GL error on odd geometry: this asset only
            message = f"rendering failed ({type(err).__name__}: {err})"
            raise ImageError("RenderFailed", message) from None
        images.append(Image.fromarray(np.ascontiguousarray(color[:, :, :3]), "RGB"))
    return images
