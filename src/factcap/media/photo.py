"""The photo: one view, its decoded image."""

from __future__ import annotations

import time
from typing import Any

from factcap.media.base import Loaded, Loader, MediaKind, View
from factcap.schema import Media


class PhotoLoader(Loader):
    """Decodes photos with the config's limits (a multi-frame file gives its first frame)."""

    def __init__(self, config: Any):
        self.limits = config.limits.decode_limits()

    def result(self, handle: Any) -> Loaded:
        from factcap.images import decode

        start = time.perf_counter()
        decoded = decode(handle.payload, self.limits)
        notes = list(decoded.notes)
        if decoded.frames > 1:
            notes.append(f"decoded the first of {decoded.frames} frames")
        return Loaded([View(decoded.image)], Media(), notes, time.perf_counter() - start)


class PhotoKind(MediaKind):
    """A photo (any image file Pillow reads): one view, nothing more to record."""

    name = "image"
    label = "photo"

    def loader(self, config: Any, in_process: bool = False) -> Loader:
        return PhotoLoader(config)


KIND = PhotoKind()
