"""Models and caches shared by the metrics of one evaluation, built only when first used.

Images are decoded with the same safe decoder as the pipeline; image embeddings are
computed once per image, however many captions (sources, styles, proposals) it has.

An input of several views (a 3D asset, registered with :meth:`Resources.add_media`) is its
views, as its media kind gives them (:meth:`~factcap.media.MediaKind.metric_images`: an
asset's saved view files, else views rendered again with the record's angles). Its image
embedding is the mean of its views' unit embeddings, so a cosine with it is the mean of the
cosines with each view: CLIP-Score, CLIP-Image-Score and self-retrieval of an asset average
over its views, as 3D captioning papers do; VQAScore asks every view
(:meth:`Resources.load_views`).

Crops of an image (regions, :meth:`Resources.crop_embeddings`) are cut from the decoded image
with :func:`factcap.boxes.pad`, as the pipeline cuts them, and embedded once per box.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from factcap.boxes import pad
from factcap.errors import ConfigError, ImageError
from factcap.images import DecodeLimits, decode
from factcap.media import media_kind
from factcap.schema import Media


class Resources:
    """Lazily built backends by role, plus the image and embedding caches.

    ``builders`` maps a role name (``embedder``, ``t2i``, ``vqa``, ``llm``, ``text_embedder``)
    to a zero-argument function that builds its backend; a role without a builder is
    unavailable and the metrics that need it fail their samples with that reason.

    >>> r = Resources({}, batch_size=2)
    >>> r.available("embedder")
    False
    """

    def __init__(
        self,
        builders: dict[str, Callable[[], Any]],
        batch_size: int = 16,
        limits: DecodeLimits | None = None,
        options: dict[str, Any] | None = None,
    ):
        self._builders = builders
        self._built: dict[str, Any] = {}
        self.batch_size = batch_size
        self.limits = limits or DecodeLimits()
        self.options = options or {}
        self._image_vectors: dict[str, np.ndarray | str] = {}
        self._media: dict[str, tuple[Media, int | None]] = {}
        self._crop_vectors: dict[tuple[str, tuple[float, ...], float, bool], np.ndarray] = {}

    def add_media(self, source: str, media: Media, view_size: int | None) -> None:
        """Say what ``source`` is; one whose media lists views is looked at as those views
        (see the module docstring), a photo as its file."""
        if media.views:
            self._media[source] = (media, view_size)

    def load_views(self, source: str) -> list[Any] | str:
        """The images the metrics look at for ``source``: its one image, or an asset's views;
        a str saying why there are none."""
        if source not in self._media:
            [image] = self.load_images([source])
            return image if isinstance(image, str) else [image]
        media, size = self._media[source]
        try:
            return media_kind(media.kind).metric_images(source, media, self.limits, size)
        except (ImageError, ConfigError) as err:
            return f"{getattr(err, 'kind', type(err).__name__)}: {err}"

    def available(self, role: str) -> bool:
        return role in self._builders

    def get(self, role: str) -> Any:
        """The backend of ``role``, built on first use. KeyError if none is configured."""
        if role not in self._built:
            if role not in self._builders:
                raise KeyError(f"no {role} model is configured for evaluation")
            self._built[role] = self._builders[role]()
        return self._built[role]

    def load_images(self, sources: Sequence[str]) -> list[Any]:
        """A decoded RGB image per source, or the reason it could not be decoded (a str)."""
        out: list[Any] = []
        for source in sources:
            try:
                out.append(decode(source, self.limits).image)
            except ImageError as err:
                out.append(f"{err.kind}: {err}")
        return out

    def image_embeddings(self, sources: Sequence[str]) -> list[np.ndarray | str]:
        """Unit image embeddings (embedder role), one per source, each image computed once
        (an asset: the mean of its views' unit embeddings); a str in place of a vector says
        why there is none."""
        for source in dict.fromkeys(s for s in sources if s in self._media):
            if source not in self._image_vectors:
                views = self.load_views(source)
                if isinstance(views, str):
                    self._image_vectors[source] = views
                    continue
                rows = np.concatenate(
                    [
                        np.asarray(
                            self.get("embedder").embed_images(views[i : i + self.batch_size])
                        )
                        for i in range(0, len(views), self.batch_size)
                    ]
                )
                self._image_vectors[source] = rows.astype(np.float32).mean(axis=0)
        todo = list(dict.fromkeys(s for s in sources if s not in self._image_vectors))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            images = self.load_images(chunk)
            good = [i for i, im in enumerate(images) if not isinstance(im, str)]
            if good:
                vectors = self.get("embedder").embed_images([images[i] for i in good])
                for row, i in enumerate(good):
                    self._image_vectors[chunk[i]] = np.asarray(vectors[row], dtype=np.float32)
            for i, im in enumerate(images):
                if isinstance(im, str):
                    self._image_vectors[chunk[i]] = im
        return [self._image_vectors[s] for s in sources]

    def crop_embeddings(
        self,
        source: str,
        boxes: Sequence[Sequence[float]],
        padding: float = 0.0,
        normalised: bool = False,
    ) -> list[np.ndarray] | str:
        """Unit image embeddings (embedder role) of crops of ``source``, one per box, each
        crop computed once; a str says why there are none (the image does not decode).

        A box is ``(x0, y0, x1, y1)`` in pixels of the decoded image (fractions of its width
        and height with ``normalised``), grown by ``padding`` of its size on every side and
        clipped to the image (:func:`factcap.boxes.pad`: whole pixels, never empty).
        """
        keys = [(source, tuple(float(v) for v in box), float(padding), normalised) for box in boxes]
        todo = [k for k in dict.fromkeys(keys) if k not in self._crop_vectors]
        if todo:
            [image] = self.load_images([source])
            if isinstance(image, str):
                return image
            width, height = image.size
            crops = []
            for _, box, pad_by, fractions in todo:
                if fractions:
                    box = (box[0] * width, box[1] * height, box[2] * width, box[3] * height)
                crops.append(image.crop(pad(box, pad_by, (width, height))))
            for start in range(0, len(crops), self.batch_size):
                chunk = crops[start : start + self.batch_size]
                vectors = self.get("embedder").embed_images(chunk)
                for row, key in enumerate(todo[start : start + self.batch_size]):
                    self._crop_vectors[key] = np.asarray(vectors[row], dtype=np.float32)
        return [self._crop_vectors[k] for k in keys]

    def forget(self, source: str) -> None:
        """Drop the cached embeddings of ``source`` and its crops (a per-request temporary
        file, say), so a long-lived Resources does not grow with every image it has seen."""
        self._image_vectors.pop(source, None)
        for key in [k for k in self._crop_vectors if k[0] == source]:
            del self._crop_vectors[key]

    def text_embeddings(self, texts: Sequence[str], role: str = "embedder") -> np.ndarray:
        """Unit text embeddings of ``role`` (``embedder`` or ``text_embedder``), batched."""
        backend = self.get(role)
        rows = [
            backend.embed_texts(list(texts[i : i + self.batch_size]))
            for i in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(rows, axis=0) if rows else np.zeros((0, 0), dtype=np.float32)
