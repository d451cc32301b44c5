"""Rendering assets in worker processes, one GL context each, with a timeout per asset.

``RenderPool(workers=N)`` keeps N processes (started with ``spawn``: no state of the caller's
threads or models is inherited); an asset that takes longer than ``render_timeout_s`` is a
``RenderTimeout`` error record and its worker is replaced. ``workers=0`` renders in the
calling thread (no timeout): the library's default for one-off calls.

Example:
    >>> import trimesh
    >>> from factcap.assets.spec import ViewSettings, ViewSpec
    >>> settings = ViewSettings(views=(ViewSpec(0.0, 20.0), ViewSpec(90.0, 20.0)), size=48)
    >>> asset = render_asset(trimesh.creation.icosphere().export(file_type="ply"), "ply", settings)
    >>> len(asset.images), asset.facts["format"], asset.view_records()[1]["azimuth"]
    (2, 'ply', 90.0)
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

from factcap.assets.spec import AssetLimits, RenderedAsset, ViewSettings
from factcap.errors import ImageError


def render_asset(
    source: str | bytes,
    file_type: str | None,
    settings: ViewSettings,
    limits: AssetLimits | None = None,
) -> RenderedAsset:
    """Load ``source`` (a path, or the file's bytes with its ``file_type``) and render its
    views; :class:`~factcap.errors.ImageError` with the reason otherwise."""
    from factcap.assets.load import load_asset
    from factcap.assets.render import render_views

    start = time.perf_counter()
    file_type = file_type or Path(str(source)).suffix.lstrip(".").lower()
    parts, facts = load_asset(source, file_type, limits)
    images = render_views(parts, settings)
    seconds = time.perf_counter() - start
    return RenderedAsset(images, settings.views, {"format": file_type, **facts}, seconds)


class RenderPool:
    """Worker processes that render assets (see the module docstring)."""

    def __init__(self, workers: int, settings: ViewSettings, limits: AssetLimits | None = None):
        self.workers, self.settings = workers, settings
        self.limits = limits or AssetLimits()
        self._pool: Any = None

    def _start(self) -> Any:
        if self._pool is None and self.workers > 0:
            self._pool = multiprocessing.get_context("spawn").Pool(self.workers)
        return self._pool

    def submit(self, source: str | bytes, file_type: str | None) -> Any:
        """Start rendering one asset; :meth:`result` waits for it."""
        args = (source, file_type, self.settings, self.limits)
        pool = self._start()
        if pool is None:
            try:
                return render_asset(*args)
            except ImageError as err:
                return err
        return pool.apply_async(render_asset, args)

    def result(self, handle: Any) -> RenderedAsset:
        """The rendered asset of a :meth:`submit`; ``ImageError`` for a broken asset or one
        over the time limit (its worker is replaced)."""
        if isinstance(handle, ImageError):
            raise handle
        if isinstance(handle, RenderedAsset):
            return handle
        try:
            return handle.get(timeout=self.limits.render_timeout_s)
        except multiprocessing.TimeoutError:
            self.close()  # the stuck worker goes with the pool; the next submit starts anew
            raise ImageError(
                "RenderTimeout",
                f"rendering took longer than {self.limits.render_timeout_s:g} s "
                "(assets.render_timeout_s in the config)",
            ) from None
        except ImageError:
            raise
        except Exception as err:  # a worker that died (a GL crash): this asset only
            self.close()
            raise ImageError("RenderFailed", f"the render worker failed ({err!r})") from None

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
