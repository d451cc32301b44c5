"""RapidOCRReader: real PP-OCR models (shipped in the rapidocr-onnxruntime wheel) on rendered
text and on scikit-image's real scanned page."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from factcap.backends import registry
from factcap.roles import OCR, TextSpan
from spies import rejected

pytest.importorskip("rapidocr_onnxruntime")

pytestmark = pytest.mark.slow


TEXT = "FACTCAP 2026"


@pytest.fixture(scope="module")
def reader():
    return registry.build("ocr", "rapidocr", num_threads=1)


@pytest.fixture(scope="module")
def rendered() -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Large black text on white at a known place; returns the image and the text's bbox."""
    image = Image.new("RGB", (720, 300), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=64)
    origin = (110, 140)
    draw.text(origin, TEXT, fill="black", font=font)
    return image, draw.textbbox(origin, TEXT, font=font)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_registry_builds_rapidocr_lazily(reader):
    assert isinstance(reader, OCR)
    assert reader.name == "rapidocr"
    assert reader.min_score == 0.5
    # in a fresh interpreter: building the reader loads no OCR engine, reading does
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "from factcap.backends import registry\n"
        "def loaded(): return sorted(m for m in ('rapidocr_onnxruntime', 'onnxruntime')"
        " if m in sys.modules)\n"
        "reader = registry.build('ocr', 'rapidocr', num_threads=1)\n"
        "print('built:', loaded(), reader._engine is None)\n"
        "reader.read([Image.new('RGB', (64, 32), 'white')])\n"
        "print('read:', loaded(), reader._engine is None)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[-2:] == [
        "built: [] True",
        "read: ['onnxruntime', 'rapidocr_onnxruntime'] False",
    ]


def test_reads_rendered_text_with_box_in_place(reader, rendered):
    image, true_box = rendered
    (spans,) = reader.read([image])
    assert spans and all(isinstance(s, TextSpan) for s in spans)
    found = [s for s in spans if "factcap" in s.text.lower()]
    assert found, f"OCR missed {TEXT!r}: {spans}"
    assert "2026" in " ".join(s.text for s in spans)
    span = found[0]
    assert 0.5 <= span.score <= 1.0
    x0, y0, x1, y1 = span.box
    assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
    assert _iou(span.box, true_box) > 0.6, (span.box, true_box)


def test_batch_keeps_order_and_blank_image_has_no_text(reader, rendered):
    image, _ = rendered
    blank = Image.new("RGB", (200, 120), "white")
    out = reader.read([blank, image, blank])
    assert len(out) == 3
    assert out[0] == [] and out[2] == []
    assert any("factcap" in s.text.lower() for s in out[1])
    assert reader.read([]) == []


def test_engine_is_created_once(reader, rendered):
    first = reader.engine
    reader.read([rendered[0]])
    assert reader.engine is first


def test_real_scanned_page(reader):
    skimage_data = pytest.importorskip("skimage.data")
    page = Image.fromarray(skimage_data.page()).convert("RGB")  # greyscale scan of a book page
    (spans,) = reader.read([page])
    text = " ".join(s.text for s in spans).lower()
    assert "markers" in text and "background" in text, text
    for s in spans:
        x0, y0, x1, y1 = s.box
        assert 0 <= x0 < x1 <= page.width and 0 <= y0 < y1 <= page.height


def test_accepts_non_rgb_modes(reader, rendered):
    image, _ = rendered
    grey, rgba = image.convert("L"), image.convert("RGBA")
    out = reader.read([grey, rgba])
    assert all(any("factcap" in s.text.lower() for s in spans) for spans in out)


def test_min_score_filters(rendered):
    strict = registry.build("ocr", "rapidocr", min_score=0.999, num_threads=1)
    image, _ = rendered
    # Noise lowers the recogniser's confidence below the strict threshold.
    rng = np.random.default_rng(0)
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-90, 90, (300, 720, 1))
    noisy_img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    lenient = registry.build("ocr", "rapidocr", min_score=0.0, num_threads=1)
    lenient_spans = lenient.read([noisy_img])[0]
    strict_spans = strict.read([noisy_img])[0]
    assert any(s.score < 0.999 for s in lenient_spans), lenient_spans
    assert strict_spans == [s for s in lenient_spans if s.score >= 0.999]


def test_bad_options_are_rejected():
    with rejected(TypeError, "min_scor"):
        registry.build("ocr", "rapidocr", min_scor=0.3)
    with rejected(ValueError, "min_score"):
        registry.build("ocr", "rapidocr", min_score=1.5)


def test_pickles_without_engine(reader):
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._engine is None and clone.min_score == reader.min_score
