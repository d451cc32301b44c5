"""The :class:`Pipeline`: decode, then the config's stage list, batch by batch."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from factcap.config import Config, load_config
from factcap.inputs import InputItem, expand
from factcap.pipeline.plan import stage_list
from factcap.pipeline.question import set_question
from factcap.pipeline.stage import Models, Stage, StageContext
from factcap.pipeline.work import Work, batched
from factcap.schema import Record


class Pipeline:
    """Fact-checked captioning with the models of a config; models load on first use, once.

    >>> from factcap.examples import example_paths
    >>> pipe = Pipeline.from_preset("tiny")
    >>> [record] = pipe.caption(example_paths()[:1], styles=["detailed", "alt"])
    >>> record.ok, sorted(record.captions), len(record.proposals) >= 2
    (True, ['alt', 'detailed'], True)
    """

    def __init__(self, config: Config, models: Models | None = None):
        self.config = config
        self._models = models

    @cached_property
    def stages(self) -> list[Stage]:
        """The config's stages, in order (:func:`factcap.pipeline.plan.stage_list`)."""
        return stage_list(self.config)

    @classmethod
    def from_preset(cls, name: str = "tiny", **overrides: Any) -> Pipeline:
        """A pipeline from a shipped preset (``tiny``, ``small``, ``vfc``, ``api``)."""
        return cls(load_config(preset=name, overrides=overrides))

    @classmethod
    def from_config(cls, config: Config | str | Path | dict[str, Any]) -> Pipeline:
        """A pipeline from a :class:`Config`, a YAML file path, or a mapping in the YAML's
        shape (which may name a ``preset`` to start from)."""
        if isinstance(config, Config):
            return cls(config)
        if isinstance(config, dict):  # a whole config, unless it names a preset to start from
            return cls(load_config(overrides=config, default_preset=None))
        return cls(load_config(path=config))

    # --- models -------------------------------------------------------------------------------

    @property
    def models(self) -> Models:
        """The backends by slot, each built from the config on first use (once)."""
        if self._models is None:
            self._models = Models(self.config)
        return self._models

    def load(self) -> Pipeline:
        """Build every model the stages need now (otherwise they load on first use)."""
        self.models.load()
        return self

    def model_names(self) -> dict[str, Any]:
        """The record's ``models``: the spec of each pipeline role's model(s)."""
        return self.config.pipeline_models()

    # --- running ------------------------------------------------------------------------------

    def caption(
        self,
        images: Iterable[str | Path | Any] | str | Path | Any,
        styles: Sequence[str] | None = None,
        instruction: str | None = None,
    ) -> list[Record]:
        """Records for ``images``: paths, directories, globs, manifests or PIL images (or one
        of them on its own)."""
        return list(self.run(expand(images), styles=styles, instruction=instruction))

    def run(
        self,
        items: Iterable[InputItem],
        styles: Sequence[str] | None = None,
        instruction: str | None = None,
        batch_size: int | None = None,
    ) -> Iterator[Record]:
        """Stream records for ``items`` in input order, one batch at a time."""
        for _, record in self.run_items(items, styles, instruction, batch_size):
            yield record

    def run_items(
        self,
        items: Iterable[InputItem],
        styles: Sequence[str] | None = None,
        instruction: str | None = None,
        batch_size: int | None = None,
    ) -> Iterator[tuple[InputItem, Record]]:
        """Like :meth:`run`, with each record's input item (sinks store its image bytes)."""
        for batch in batched(items, batch_size or self.config.batch_size):
            yield from zip(batch, self.process(batch, styles, instruction), strict=True)

    def process(
        self,
        items: Sequence[InputItem],
        styles: Sequence[str] | None = None,
        instruction: str | None = None,
    ) -> list[Record]:
        """One batch through every stage; a failing item never stops the others."""
        return self.finish(self.prepare(items), styles, instruction)

    @cached_property
    def render_pool(self) -> Any:
        """The worker processes that render 3D assets (started on the first asset)."""
        from factcap.assets.pool import RenderPool

        assets = self.config.assets
        return RenderPool(assets.render_workers, assets.view_settings(), assets.limits())

    def prepare(self, items: Sequence[InputItem]) -> list[Work]:
        """Decode a batch, and render its 3D assets' views (no model runs here): the CPU-side
        stage an executor can overlap with the model stages of the previous batch."""
        from factcap.errors import ImageError
        from factcap.images import DecodeLimits, decode

        cfg = self.config
        limits = DecodeLimits(
            max_pixels=cfg.limits.max_pixels,
            max_file_bytes=int(cfg.limits.max_file_mb * 1024 * 1024),
        )
        renders = {  # assets render in worker processes while the images decode here
            i: (time.perf_counter(), self.render_pool.submit(item.payload, item.asset_type))
            for i, item in enumerate(items)
            if item.asset_type and not item.problem
        }
        work: list[Work] = []
        for i, item in enumerate(items):
            record = Record(
                id=item.id, source=item.source, models=self.model_names(), extra=dict(item.extra)
            )
            if item.asset_type:
                record.kind = "asset"
            if cfg.question.enabled:
                set_question(record, cfg.question)
            start = time.perf_counter()
            decoded = None
            if item.problem:
                record.fail(item.kind, item.problem)
            elif i in renders:
                start, handle = renders[i]
                work.append(self._rendered(item, record, handle, start))
                continue
            else:
                try:
                    decoded = decode(item.payload, limits)
                except ImageError as err:
                    record.fail(err.kind, str(err))
            record.add_timing("decode", (time.perf_counter() - start) * 1000.0)
            if decoded is not None:
                record.image_size = (decoded.width, decoded.height)
                record.notes.extend(decoded.notes)
                if decoded.frames > 1:
                    record.notes.append(f"decoded the first of {decoded.frames} frames")
            work.append(Work(record=record, image=decoded.image if decoded else None))
        return work

    def _rendered(self, item: InputItem, record: Record, handle: Any, start: float) -> Work:
        """The work item of an asset whose rendering ``handle`` will give its views."""
        from factcap.errors import ImageError

        try:
            asset = self.render_pool.result(handle)
        except ImageError as err:
            record.fail(err.kind, str(err))
            record.add_timing("render", (time.perf_counter() - start) * 1000.0)
            return Work(record=record, image=None)
        record.add_timing("render", asset.seconds * 1000.0)  # the worker's own time
        record.views = asset.view_records()
        record.asset = asset.facts
        record.image_size = asset.images[0].size
        if asset.facts.get("skipped"):
            record.notes.append(f"not rendered: {'; '.join(asset.facts['skipped'])}")
        folder = self.config.assets.save_views
        if folder:
            for view, image in zip(record.views, asset.images, strict=True):
                path = Path(folder) / record.id / f"view-{view['index']}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path)
                view["file"] = str(path)
        item.views = asset.images  # for a sink that stores them (WebDataset)
        return Work(record=record, image=asset.images[0], views=asset.images)

    def finish(
        self,
        work: list[Work],
        styles: Sequence[str] | None = None,
        instruction: str | None = None,
    ) -> list[Record]:
        """The model stages for a prepared batch (none when every item failed to decode)."""
        if any(w.record.ok for w in work):
            context = StageContext.of(self.config, styles, instruction)
            for stage in self.stages:
                stage.run(work, self.models.get(stage.model) if stage.model else None, context)
        return [w.record for w in work]
