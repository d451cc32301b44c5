"""The OCR expert: PP-OCR (text detector + angle classifier + recogniser) via rapidocr.

``rapidocr-onnxruntime`` ships its ONNX models inside the wheel, so it works offline. Its
API reads **one image per call** (the detector runs on each image at its own size, and the
recogniser already batches the text crops found in that image), so :meth:`RapidOCRReader.read`
calls it once per image; there is no cross-image batch to form.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from factcap.errors import require
from factcap.roles import TextSpan

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["RapidOCRReader"]


class RapidOCRReader:
    """Reads text from images with rapidocr's PP-OCR models (OCR role).

    Options: ``min_score`` (0.5) — drop spans the recogniser is less sure of;
    ``use_cls`` (True) — run the 0/180 degree text-angle classifier; ``num_threads``
    (None: onnxruntime's default) — intra-op threads for each ONNX session.

    The engine is created lazily, once, on the first :meth:`read`. Boxes are axis-aligned
    ``(x0, y0, x1, y1)`` in pixel coordinates of the input image, the bounding box of the
    (possibly rotated) quadrilateral the detector found.

    >>> reader = RapidOCRReader(min_score=0.6)
    >>> reader.min_score
    0.6
    >>> # reader.read([Image.open("sign.jpg")]) -> [[TextSpan(text="EXIT", score=0.98, box=...)]]
    """

    def __init__(
        self,
        location: str = "",
        *,
        min_score: float = 0.5,
        use_cls: bool = True,
        num_threads: int | None = None,
    ) -> None:
        if location:
            raise ValueError(
                f"rapidocr takes no model location (its models ship in the wheel), got {location!r}"
            )
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], not {min_score}")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, not {num_threads}")
        require("rapidocr_onnxruntime", "ocr")
        self.name = "rapidocr"
        self.min_score = float(min_score)
        self.use_cls = bool(use_cls)
        self.num_threads = num_threads
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Any:
        """The ``rapidocr_onnxruntime.RapidOCR`` instance, created on first use."""
        with self._lock:
            if self._engine is None:
                from rapidocr_onnxruntime import RapidOCR

                kwargs: dict[str, Any] = {"text_score": self.min_score, "use_cls": self.use_cls}
                if self.num_threads is not None:
                    kwargs["intra_op_num_threads"] = self.num_threads
                    kwargs["inter_op_num_threads"] = 1
                self._engine = RapidOCR(**kwargs)
            return self._engine

    def read(self, images: Sequence[Image.Image]) -> list[list[TextSpan]]:
        """The text spans of each image, in reading order (top to bottom, left to right)."""
        engine = self.engine
        out: list[list[TextSpan]] = []
        for image in images:  # rapidocr's API takes one image per call (see module docstring)
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            result, _elapsed = engine(rgb, use_cls=self.use_cls)
            out.append(self._spans(result or [], rgb.size))
        return out

    def _spans(self, result: list, size: tuple[int, int]) -> list[TextSpan]:
        width, height = size
        spans = []
        for polygon, text, score in result:
            score = float(score)
            if score < self.min_score or not str(text).strip():
                continue
            xs = [float(p[0]) for p in polygon]
            ys = [float(p[1]) for p in polygon]
            box = (
                max(0.0, min(xs)),
                max(0.0, min(ys)),
                min(float(width), max(xs)),
                min(float(height), max(ys)),
            )
            spans.append(TextSpan(text=str(text), score=score, box=box))
        return spans

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_engine"], state["_lock"] = None, None  # ONNX sessions are rebuilt in workers
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RapidOCRReader(min_score={self.min_score})"
