"""Scenes of coloured shapes with exact ground truth, generated from a seed, drawn with Pillow.

A scene holds one to four objects — a shape, a colour and a size each, at places that do not
overlap — and knows everything about itself: boxes, counts and left/right/above relations.
The same ``(split, seed, index)`` always gives the same scene, on any machine; the ``train``
and ``test`` splits draw from separate random streams, so held-out scenes are never trained on.

>>> scene = make_scene(0, seed=1)
>>> 1 <= len(scene.objects) <= 4
True
>>> scene.render().size
(96, 96)
>>> make_scene(0, seed=1) == scene
True
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 160, 60),
    "blue": (35, 75, 215),
    "yellow": (230, 200, 25),
    "purple": (135, 55, 175),
    "orange": (240, 125, 20),
}
SIZES: dict[str, int] = {"small": 8, "large": 14}  # half the side of the box, in pixels
IMAGE_SIZE = 96
MAX_OBJECTS = 4
REPEAT_P = 0.35  # chance that a new object copies an earlier one, so counts above one occur
MARGIN = 3  # pixels kept free between objects and to the border


@dataclass(frozen=True)
class Obj:
    """One object of a scene: its shape, colour, size and box ``(x0, y0, x1, y1)`` in pixels."""

    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    @property
    def kind(self) -> tuple[str, str, str]:
        """``(size, colour, shape)``: objects of one kind are counted together in captions."""
        return self.size, self.colour, self.shape


@dataclass(frozen=True)
class Scene:
    """A generated scene: its objects (left to right) and background grey level."""

    id: str
    objects: tuple[Obj, ...]
    background: int

    def groups(self) -> list[tuple[tuple[str, str, str], int]]:
        """``((size, colour, shape), count)`` per kind of object, in order of the leftmost."""
        counts = Counter(o.kind for o in self.objects)
        order = dict.fromkeys(o.kind for o in self.objects)
        return [(kind, counts[kind]) for kind in order]

    def count(self, shape: str, colour: str | None = None, size: str | None = None) -> int:
        """How many objects have ``shape`` (and ``colour`` / ``size`` when given)."""
        return sum(
            o.shape == shape and colour in (None, o.colour) and size in (None, o.size)
            for o in self.objects
        )

    def relations(self) -> list[tuple[int, str, int]]:
        """``(i, relation, j)`` for each ordered pair of objects: ``left of``, ``right of``,
        ``above``, ``below``, whichever hold with a clear gap (more than half a small object)."""
        gap = SIZES["small"]
        found = []
        for i, a in enumerate(self.objects):
            for j, b in enumerate(self.objects):
                if i == j:
                    continue
                (ax, ay), (bx, by) = a.center, b.center
                if bx - ax > gap:
                    found.append((i, "left of", j))
                if ax - bx > gap:
                    found.append((i, "right of", j))
                if by - ay > gap:
                    found.append((i, "above", j))
                if ay - by > gap:
                    found.append((i, "below", j))
        return found

    def render(self) -> Image.Image:
        """The scene as a 96×96 RGB image."""
        image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (self.background,) * 3)
        draw = ImageDraw.Draw(image)
        for obj in self.objects:
            _draw(draw, obj)
        return image

    def truth(self) -> dict[str, Any]:
        """The ground truth as plain data (objects with boxes, counts, relations)."""
        return {
            "id": self.id,
            "objects": [
                {"shape": o.shape, "colour": o.colour, "size": o.size, "box": list(o.box)}
                for o in self.objects
            ],
            "counts": {
                f"{c} {s}": self.count(s, c)
                for _, c, s in dict.fromkeys(o.kind for o in self.objects)
            },
            "relations": [[i, rel, j] for i, rel, j in self.relations()],
        }


def _draw(draw: ImageDraw.ImageDraw, obj: Obj) -> None:
    fill = COLOURS[obj.colour]
    x0, y0, x1, y1 = obj.box
    if obj.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    elif obj.shape == "cross":
        third_w, third_h = (x1 - x0) / 3, (y1 - y0) / 3
        draw.rectangle((x0 + third_w, y0, x1 - third_w, y1), fill=fill)
        draw.rectangle((x0, y0 + third_h, x1, y1 - third_h), fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")


def _overlaps(box: tuple[int, int, int, int], others: list[Obj]) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < o.box[2] + MARGIN
        and o.box[0] < x1 + MARGIN
        and y0 < o.box[3] + MARGIN
        and o.box[1] < y1 + MARGIN
        for o in others
    )


def make_scene(index: int, seed: int = 0, split: str = "test") -> Scene:
    """Scene ``index`` of ``split`` (``train`` or ``test``) for ``seed``; deterministic."""
    rng = random.Random(f"shapes/{split}/{seed}/{index}")
    wanted = rng.randint(1, MAX_OBJECTS)
    objects: list[Obj] = []
    while len(objects) < wanted:
        if objects and rng.random() < REPEAT_P:
            shape, colour, size = rng.choice(objects).kind[::-1]
        else:
            shape, colour, size = (
                rng.choice(SHAPES),
                rng.choice(list(COLOURS)),
                rng.choice(list(SIZES)),
            )
        half = SIZES[size]
        for _ in range(200):
            cx = rng.randint(half + MARGIN, IMAGE_SIZE - half - MARGIN)
            cy = rng.randint(half + MARGIN, IMAGE_SIZE - half - MARGIN)
            box = (cx - half, cy - half, cx + half, cy + half)
            if not _overlaps(box, objects):
                objects.append(Obj(shape, colour, size, box))
                break
        else:  # no free place left: the scene keeps the objects it has
            break
    objects.sort(key=lambda o: (o.center[0], o.center[1]))
    return Scene(
        id=f"{split}-{seed}-{index:06d}",
        objects=tuple(objects),
        background=rng.randint(200, 245),
    )


def scenes(n: int, seed: int = 0, split: str = "test", start: int = 0) -> list[Scene]:
    """Scenes ``start .. start + n - 1`` of ``split`` for ``seed``."""
    return [make_scene(i, seed, split) for i in range(start, start + n)]
