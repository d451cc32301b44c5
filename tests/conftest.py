"""Test-wide settings: never reach a model hub; build tiny checkpoints once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="session", autouse=True)
def _factcap_cache(tmp_path_factory):
    """Tiny checkpoints go to a cache shared by the whole session (FACTCAP_CACHE), unless the
    caller points FACTCAP_CACHE somewhere already (CI may reuse a warm cache)."""
    if "FACTCAP_CACHE" not in os.environ:
        os.environ["FACTCAP_CACHE"] = str(tmp_path_factory.mktemp("factcap-cache"))
    yield


@pytest.fixture(scope="session")
def photos():
    """Real photos shipped with factcap (from scikit-image), as RGB PIL images."""
    from PIL import Image

    from factcap.examples import example_paths

    return [Image.open(p).convert("RGB") for p in example_paths()]
