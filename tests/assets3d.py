"""3D test assets, built with trimesh in the tests (no downloads): coloured primitives, a
textured quad, a point cloud, an OBJ with its MTL and texture, a scene with line geometry,
an empty scene, a truncated GLB."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

RED = (220, 20, 20)
GREEN = (20, 200, 40)
BLUE = (30, 60, 230)


def red_cube(folder: Path) -> Path:
    import trimesh

    cube = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    cube.visual.face_colors = [*RED, 255]
    path = folder / "red_cube.glb"
    path.write_bytes(cube.export(file_type="glb"))
    return path


def checker(size: int = 64) -> Image.Image:
    """A green and blue checkerboard (the texture's colours are easy to find in a render)."""
    tile = np.zeros((size, size, 3), dtype=np.uint8)
    cells = (np.indices((size, size)) // (size // 4)).sum(axis=0) % 2
    tile[cells == 0], tile[cells == 1] = GREEN, BLUE
    return Image.fromarray(tile, "RGB")


def textured_quad(folder: Path) -> Path:
    import trimesh

    vertices = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]])
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    material = trimesh.visual.material.SimpleMaterial(image=checker())
    quad = trimesh.Trimesh(vertices=vertices, faces=faces, process=False)
    quad.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    path = folder / "textured_quad.glb"
    path.write_bytes(quad.export(file_type="glb"))
    return path


def point_cloud(folder: Path, n: int = 2000) -> Path:
    import trimesh

    rng = np.random.default_rng(0)
    points = rng.normal(size=(n, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    colors = np.tile([*BLUE, 255], (n, 1)).astype(np.uint8)
    path = folder / "sphere_points.ply"
    path.write_bytes(trimesh.PointCloud(points, colors=colors).export(file_type="ply"))
    return path


def obj_with_mtl(folder: Path) -> Path:
    """A cube as an OBJ whose MTL gives it a texture file (all three files side by side)."""
    import trimesh

    cube = trimesh.creation.box(extents=(1.0, 0.6, 0.8))
    uv = (cube.vertices[:, :2] - cube.vertices[:, :2].min(0)) / np.ptp(cube.vertices[:, :2], 0)
    cube.visual = trimesh.visual.TextureVisuals(
        uv=uv, material=trimesh.visual.material.SimpleMaterial(image=checker())
    )
    files = trimesh.exchange.obj.export_obj(
        cube, include_texture=True, return_texture=True, mtl_name="box.mtl"
    )
    text, textures = files
    (folder / "box.obj").write_text(text)
    for name, data in textures.items():
        (folder / name).write_bytes(data)
    return folder / "box.obj"


def mesh_and_line(folder: Path) -> Path:
    import trimesh

    scene = trimesh.Scene()
    cube = trimesh.creation.box()
    cube.visual.face_colors = [*GREEN, 255]
    scene.add_geometry(cube, geom_name="cube")
    line = trimesh.load_path(np.array([[[0, 0, 0], [2, 0, 0]], [[2, 0, 0], [2, 2, 0]]]))
    scene.add_geometry(line, geom_name="axis_line")
    path = folder / "mesh_and_line.glb"
    path.write_bytes(scene.export(file_type="glb"))
    return path


def empty_scene(folder: Path) -> Path:
    """A valid GLB whose scene holds no node (trimesh will not export one)."""
    import json
    import struct

    body = json.dumps({"asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": []}]})
    chunk = body.encode() + b" " * (-len(body) % 4)
    data = struct.pack("<4sII", b"glTF", 2, 12 + 8 + len(chunk))
    data += struct.pack("<I4s", len(chunk), b"JSON") + chunk
    path = folder / "empty.glb"
    path.write_bytes(data)
    return path


def six_colour_box(folder: Path) -> Path:
    """A box that looks different from every side (its faces have six colours)."""
    import trimesh

    box = trimesh.creation.box(extents=(1.0, 0.6, 0.3))
    palette = np.array(
        [
            [220, 20, 20],
            [20, 200, 40],
            [30, 60, 230],
            [230, 200, 20],
            [200, 30, 200],
            [20, 200, 200],
        ]
    )
    box.visual.face_colors = np.c_[np.repeat(palette, 2, axis=0), np.full(12, 255)]
    path = folder / "six_colour_box.glb"
    path.write_bytes(box.export(file_type="glb"))
    return path


def truncated(folder: Path) -> Path:
    data = red_cube(folder).read_bytes()
    path = folder / "truncated.glb"
    path.write_bytes(data[: len(data) // 3])
    return path


def foreground(image: Image.Image, background=(255, 255, 255), tolerance: int = 8) -> np.ndarray:
    """A mask of the pixels that are not the background."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    return np.abs(pixels - np.array(background)).max(axis=2) > tolerance


def near(image: Image.Image, colour, tolerance: int = 60) -> int:
    """How many pixels are close to ``colour`` (shading moves them a little)."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    distance = np.abs(pixels - np.array(colour)).sum(axis=2)
    return int((distance < tolerance * 3).sum())


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
