"""Generated benchmark inputs: small distinct PNGs written to a folder."""

from __future__ import annotations

import random
from pathlib import Path


def make_images(folder: Path, n: int, size: tuple[int, int] = (64, 48)) -> Path:
    """``n`` distinct PNGs (a colour field with a lighter box at a varying place)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(n):
        image = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), i % 256))
        x, y = rng.randrange(size[0] - 8), rng.randrange(size[1] - 8)
        ImageDraw.Draw(image).rectangle((x, y, x + 8, y + 8), fill=(255, 255, 255))
        image.save(folder / f"img{i:05d}.png")
    return folder
