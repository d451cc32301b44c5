"""The 3D asset: rendered views (``factcap.assets``), each a picture of the object.

>>> KIND.clean_caption("A 3D rendering of a red chair. It is shown on a white background.", "sentences")
'A red chair.'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from factcap.assets.spec import ASSET_SUFFIXES
from factcap.errors import UsageError
from factcap.media.base import KindSettings, Loaded, Loader, MediaKind, View
from factcap.schema import Media
from factcap.text.pieces import join_pieces, split_pieces

_RENDER_WORDS = (
    r"(?:3d|3-d|three[- ]dimensional|cgi?|computer[- ]generated|low[- ]poly|digital)"
    r"(?:\s+(?:model|render(?:ing)?|image|illustration|object|scene|graphic))?"
)
_RENDER_PREFIX = re.compile(
    rf"\b(?:(?:a|an|the|this)\s+)?{_RENDER_WORDS}\s+(?:model|render(?:ing)?|image|"
    r"illustration|object|scene|graphic)s?\s+(?:of|showing|depicting|featuring)\s+",
    re.I,
)
_RENDER_SENTENCE = re.compile(
    r"\b(?:render(?:ed|ing|s)?|3d model|(?:white|plain|blank|empty|grey|gray)"
    r"\s+background|background is (?:white|plain|blank|empty))\b",
    re.I,
)


def drop_render_talk(text: str, pieces: str = "sentences") -> str:
    """A caption of a 3D asset without talk of the rendering: "A 3D model of a red chair."
    becomes "A red chair."; a sentence (or phrase) about the render or the background goes.

    >>> drop_render_talk("a chair, 3d render, white background", "phrases")
    'a chair'
    """
    kept = []
    for piece in split_pieces(text, pieces):
        piece = _RENDER_PREFIX.sub("", piece).strip()
        if piece and not _RENDER_SENTENCE.search(piece):
            kept.append(piece[:1].upper() + piece[1:] if pieces == "sentences" else piece)
    return join_pieces(kept, pieces)


class AssetsConfig(KindSettings):
    """3D assets (``.glb``, ``.gltf``, ``.obj``, ``.ply``, ``.stl``, ``.off``): how their views
    are rendered and which limits they must keep (``factcap.assets``).

    ``views`` views in the default layout when ``azimuths`` / ``elevations`` are not given (8:
    four around at 15°, two from above, two from below; another count: evenly around at 15°).
    ``caption_views`` are the view indices the captioners see (default all); the checkers
    look at every view. ``render_workers`` processes render (one GL context each; 0 renders
    in the reading thread, without the timeout). ``save_views`` keeps each view as a PNG in
    that folder (``<folder>/<record id>/view-<i>.png``).
    """

    views: int = Field(default=8, ge=1, le=64)
    azimuths: list[float] | None = None
    elevations: list[float] | None = None
    size: int = Field(default=512, ge=32, le=4096)
    background: tuple[int, int, int] = (255, 255, 255)
    caption_views: list[int] | None = None
    max_file_mb: float = Field(default=256.0, gt=0)
    max_faces: int = Field(default=2_000_000, ge=1)
    max_points: int = Field(default=5_000_000, ge=1)
    render_timeout_s: float = Field(default=120.0, gt=0)
    render_workers: int = Field(default=1, ge=0, le=64)
    save_views: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AssetsConfig:
        if (self.azimuths is None) != (self.elevations is None):
            raise ValueError("give azimuths and elevations together")
        if self.azimuths is not None and len(self.azimuths) != len(self.elevations or []):
            raise ValueError("azimuths and elevations need the same number of entries")
        count = len(self.azimuths) if self.azimuths is not None else self.views
        if self.caption_views and not all(0 <= i < count for i in self.caption_views):
            raise ValueError(f"caption_views must be view indices from 0 to {count - 1}")
        if not all(0 <= c <= 255 for c in self.background):
            raise ValueError("background is an RGB colour: three numbers from 0 to 255")
        return self

    def view_settings(self) -> Any:
        """The :class:`~factcap.assets.ViewSettings` of this config."""
        from factcap.assets.spec import DEFAULT_VIEWS, ViewSettings, ViewSpec

        if self.azimuths is not None:
            views = tuple(
                ViewSpec(float(a), float(e))
                for a, e in zip(self.azimuths, self.elevations or [], strict=True)
            )
        elif self.views == len(DEFAULT_VIEWS):
            views = DEFAULT_VIEWS
        else:
            views = tuple(ViewSpec(360.0 * i / self.views, 15.0) for i in range(self.views))
        return ViewSettings(views=views, size=self.size, background=tuple(self.background))

    def limits(self) -> Any:
        """The :class:`~factcap.assets.AssetLimits` of this config."""
        from factcap.assets.spec import AssetLimits

        return AssetLimits(
            max_file_bytes=int(self.max_file_mb * 1024 * 1024),
            max_faces=self.max_faces,
            max_points=self.max_points,
            render_timeout_s=self.render_timeout_s,
        )


class AssetLoader(Loader):
    """Renders assets in worker processes (started on the first asset), so they render
    while the photos of the batch decode; saves the views when ``save_views`` is set."""

    def __init__(self, config: Any, in_process: bool = False):
        from factcap.assets.pool import RenderPool

        assets = config.assets
        workers = 0 if in_process else assets.render_workers  # 0: no pool, no timeout
        self.pool = RenderPool(workers, assets.view_settings(), assets.limits())
        self.save_views = assets.save_views

    def submit(self, item: Any) -> Any:
        return item, self.pool.submit(item.payload, item.format)

    def result(self, handle: Any) -> Loaded:
        item, pending = handle
        asset = self.pool.result(pending)
        views = asset.view_records()
        if self.save_views:
            for view, image in zip(views, asset.images, strict=True):
                path = Path(self.save_views) / item.id / f"view-{view['index']}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path)
                view["file"] = str(path)
        skipped = asset.facts.get("skipped")
        notes = [f"not rendered: {'; '.join(skipped)}"] if skipped else []
        return Loaded(
            views=[
                View(image, view["index"], {k: v for k, v in view.items() if k != "index"})
                for view, image in zip(views, asset.images, strict=True)
            ],
            media=Media(kind=KIND.name, views=views, facts=asset.facts),
            notes=notes,
            seconds=asset.seconds,  # the worker's own time
            derived=True,
        )

    def close(self) -> None:
        self.pool.close()


class AssetKind(MediaKind):
    """A 3D asset (``.glb``, ``.gltf``, ``.obj``, ``.ply``, ``.stl``, ``.off``): its rendered
    views, each checked; a claim holds when some view shows it."""

    name = "asset"
    label = "3D asset"
    formats = tuple(s[1:] for s in ASSET_SUFFIXES)
    names_views = True
    load_timing = "render"
    config_key = "assets"
    settings = AssetsConfig
    compose_rule = (
        "\nThe drafts describe rendered views of one 3D object: describe the object itself, "
        "and never mention a 3D model, a render, the views, the camera or the background.\n"
    )

    def loader(self, config: Any, in_process: bool = False) -> Loader:
        return AssetLoader(config, in_process)

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--save-views",
            type=Path,
            metavar="DIR",
            help="keep the rendered views of 3D assets as PNG files in DIR (DIR/<id>/view-<i>.png)",
        )
        parser.add_argument(
            "--render-workers",
            type=int,
            metavar="N",
            help="processes that render 3D assets (default 1; 0 renders in the reading thread)",
        )

    def option_settings(self, args: Any) -> dict[str, Any]:
        settings: dict[str, Any] = {}
        if args.save_views is not None:
            settings["save_views"] = str(args.save_views)
        if args.render_workers is not None:
            if args.render_workers < 0:
                raise UsageError(f"--render-workers must be 0 or more, not {args.render_workers}")
            settings["render_workers"] = args.render_workers
        return settings

    def caption_views(self, config: Any) -> set[int] | None:
        wanted = config.assets.caption_views
        return set(wanted) if wanted else None

    def clean_caption(self, text: str, pieces: str) -> str:
        return drop_render_talk(text, pieces)

    def metric_images(
        self, source: str, media: Media, limits: Any, view_size: int | None
    ) -> list[Any]:
        """The saved view files, else the views rendered again from the asset with the
        record's angles at ``view_size`` pixels (512 when the record has no size)."""
        if media.views and all(isinstance(v.get("file"), str) for v in media.views):
            return super().metric_images(source, media, limits, view_size)
        from factcap.assets.pool import render_asset
        from factcap.assets.spec import ViewSettings, ViewSpec

        settings = ViewSettings(
            views=tuple(ViewSpec(float(v["azimuth"]), float(v["elevation"])) for v in media.views),
            size=view_size or 512,
        )
        return render_asset(source, None, settings).images


KIND = AssetKind()
