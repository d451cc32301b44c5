"""The :class:`Pipeline`: decode, then the config's stage list, batch by batch."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from factcap.config import Config, load_config
from factcap.errors import ImageError
from factcap.inputs import InputItem, expand
from factcap.media import Loader, MediaKind, kind_for_format
from factcap.pipeline.models import Models
from factcap.pipeline.plan import record_preparers, stage_list
from factcap.pipeline.stage import Stage, StageContext, run_stage
from factcap.pipeline.work import Work, batched
from factcap.schema import Media, Record


class Pipeline:
    """Fact-checked captioning with the models of a config; models load on first use, once.

    >>> from factcap.examples import example_paths
    >>> pipe = Pipeline.from_preset("tiny")
    >>> [record] = pipe.caption(example_paths()[:1], styles=["detailed", "alt"])
    >>> record.ok, sorted(record.captions), len(record.proposals) >= 2
    (True, ['alt', 'detailed'], True)
    """

    def __init__(self, config: Config, models: Models | None = None, load_in_process: bool = False):
        self.config = config
        self._models = models
        self.load_in_process = load_in_process
        self._loaders: dict[str, Loader] = {}

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

    def loader(self, kind: MediaKind) -> Loader:
        """The loader of a media kind for this pipeline (made on its first input, kept)."""
        if kind.name not in self._loaders:
            self._loaders[kind.name] = kind.loader(self.config, self.load_in_process)
        return self._loaders[kind.name]

    def prepare(self, items: Sequence[InputItem]) -> list[Work]:
        """Load a batch into views (no model runs here): the CPU-side stage an executor can
        overlap with the model stages of the previous batch. Each item's media kind loads it
        (a photo decodes, a 3D asset renders in worker processes while the photos decode)."""
        kinds = [kind_for_format(item.format) for item in items]
        pending = {
            i: (time.perf_counter(), self.loader(kind).submit(item))
            for i, (item, kind) in enumerate(zip(items, kinds, strict=True))
            if not item.problem
        }
        return [
            self._load(item, kind, pending.get(i))
            for i, (item, kind) in enumerate(zip(items, kinds, strict=True))
        ]

    def _load(self, item: InputItem, kind: MediaKind, pending: tuple[float, Any] | None) -> Work:
        """The work item of ``item`` once its kind's loader has given its views."""
        record = Record(
            id=item.id,
            source=item.source,
            models=self.model_names(),
            extra=dict(item.extra),
            media=Media(kind=kind.name),
        )
        for prepare_record in self.record_preparers:
            prepare_record(record, self.config)
        if pending is None:
            record.fail(item.problem_type, item.problem or "")
            record.add_timing("decode", 0.0)
            return Work(record)
        start, handle = pending
        try:
            loaded = self.loader(kind).result(handle)
        except ImageError as err:
            record.fail(err.kind, str(err))
            record.add_timing(kind.load_timing, (time.perf_counter() - start) * 1000.0)
            return Work(record)
        record.add_timing(kind.load_timing, loaded.seconds * 1000.0)
        record.media = loaded.media
        record.image_size = loaded.views[0].image.size
        record.notes.extend(loaded.notes)
        if loaded.derived:
            item.views = [v.image for v in loaded.views]  # for a sink that stores them
        return Work(record, loaded.views)

    @cached_property
    def record_preparers(self) -> list[Any]:
        """What the stages set on a record when its input is read (e.g. its question)."""
        return record_preparers(self.config)

    def close(self) -> None:
        """Release what the media loaders hold (rendering processes)."""
        for loader in self._loaders.values():
            loader.close()
        self._loaders.clear()

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
                model = self.models.get(stage.model) if stage.model else None
                run_stage(stage, work, model, context)
        return [w.record for w in work]
