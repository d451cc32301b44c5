"""Shared fixtures. Offline settings and the tiny-checkpoint cache: ../conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def photos():
    """Real photos shipped with factcap (from scikit-image), as RGB PIL images."""
    from PIL import Image

    from factcap.examples import example_paths

    return [Image.open(p).convert("RGB") for p in example_paths()]
