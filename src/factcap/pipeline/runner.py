"""The :class:`Pipeline`: decode → propose → verify → compose, batch by batch."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factcap.config import Config, RoleConfig, load_config
from factcap.inputs import InputItem, expand
from factcap.pipeline.compose import compose
from factcap.pipeline.propose import propose
from factcap.pipeline.verify import check_claims, extract_claims
from factcap.pipeline.work import Work
from factcap.schema import Record

Role = tuple[Any, int]  # (backend, batch size)


@dataclass
class Models:
    """The backends a pipeline runs, each with its batch size. Built once, shared by calls."""

    captioners: list[Role]
    llm: Role
    detector: Role | None = None
    vqa: Role | None = None
    ocr: Role | None = None

    @classmethod
    def build(cls, config: Config) -> Models:
        """Build every role the config names, through the registry."""

        def one(role: str, rc: RoleConfig | None) -> Role | None:
            return None if rc is None else build_role(config, role, rc)

        return cls(
            captioners=[build_role(config, "captioner", rc) for rc in config.captioners],
            llm=build_role(config, "llm", config.llm),
            detector=one("detector", config.detector),
            vqa=one("vqa", config.vqa),
            ocr=one("ocr", config.ocr),
        )


def build_role(config: Config, role: str, rc: RoleConfig) -> Role:
    """One backend from its role config, with the config's device/dtype or server settings."""
    from factcap.backends import registry

    scheme, _ = registry.parse_spec(rc.model)
    options = dict(rc.options)
    if scheme in ("hf", "tiny"):
        options.setdefault("device", rc.device or config.device)
        options.setdefault("dtype", rc.dtype or config.dtype)
    elif scheme == "openai":
        for key, value in config.openai.model_dump().items():
            options.setdefault(key, value)
    return registry.build(role, rc.model, **options), rc.batch_size or config.batch_size


class Pipeline:
    """Fact-checked captioning with the models of a config; models load on first use, once.

    >>> from factcap.examples import example_paths
    >>> pipe = Pipeline.from_preset("tiny")
    >>> [record] = pipe.caption(example_paths()[:1], styles=["detailed", "alt"])
    >>> record.status, sorted(record.captions), len(record.proposals) >= 2
    ('ok', ['alt', 'detailed'], True)
    """

    def __init__(self, config: Config, models: Models | None = None):
        self.config = config
        self._models = models

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
        """The backends, built from the config on first use (once)."""
        if self._models is None:
            self._models = Models.build(self.config)
        return self._models

    def load(self) -> Pipeline:
        """Build every configured model now (otherwise they load on first use)."""
        _ = self.models
        return self

    def model_names(self) -> dict[str, Any]:
        cfg = self.config
        names: dict[str, Any] = {
            "captioners": [rc.model for rc in cfg.captioners],
            "llm": cfg.llm.model,
        }
        for name in ("detector", "vqa", "ocr"):
            rc = getattr(cfg, name)
            if rc is not None:
                names[name] = rc.model
        return names

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
        size = batch_size or self.config.batch_size
        batch: list[InputItem] = []
        for item in items:
            batch.append(item)
            if len(batch) >= size:
                yield from zip(batch, self.process(batch, styles, instruction), strict=True)
                batch = []
        if batch:
            yield from zip(batch, self.process(batch, styles, instruction), strict=True)

    def process(
        self,
        items: Sequence[InputItem],
        styles: Sequence[str] | None = None,
        instruction: str | None = None,
    ) -> list[Record]:
        """One batch through every stage; a failing item never stops the others."""
        return self.finish(self.prepare(items), styles, instruction)

    def prepare(self, items: Sequence[InputItem]) -> list[Work]:
        """Decode a batch (no model runs here): the CPU-side stage an executor can overlap
        with the model stages of the previous batch."""
        from factcap.errors import ImageError
        from factcap.images import DecodeLimits, decode

        cfg = self.config
        limits = DecodeLimits(
            max_pixels=cfg.limits.max_pixels,
            max_file_bytes=int(cfg.limits.max_file_mb * 1024 * 1024),
        )
        work: list[Work] = []
        for item in items:
            record = Record(
                id=item.id, source=item.source, models=self.model_names(), extra=dict(item.extra)
            )
            start = time.perf_counter()
            decoded = None
            if item.problem:
                record.fail(item.kind, item.problem)
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

    def finish(
        self,
        work: list[Work],
        styles: Sequence[str] | None = None,
        instruction: str | None = None,
    ) -> list[Record]:
        """The model stages (propose → verify → compose) for a prepared batch."""
        cfg = self.config
        if any(w.record.ok for w in work):
            self._stages(work, list(styles or cfg.styles), instruction or cfg.instruction)
        return [w.record for w in work]

    def _stages(self, work: list[Work], styles: list[str], instruction: str | None) -> None:
        cfg, models = self.config, self.models
        llm, _ = models.llm
        propose(work, models.captioners, models.ocr)
        extract_claims(
            work,
            llm,
            max_new_tokens=cfg.llm.max_new_tokens,
            temperature=cfg.llm.temperature,
            max_claims=cfg.verify.max_claims,
            prompts=cfg.prompts,
        )
        if cfg.verify.enabled:
            check_claims(work, models.detector, models.vqa, cfg.verify)
        else:
            for w in work:
                w.record.notes.append("verification switched off: claims were not checked")
        compose(
            work,
            llm,
            styles,
            instruction=instruction,
            max_new_tokens=cfg.llm.max_new_tokens,
            temperature=cfg.llm.temperature,
            prompts=cfg.prompts,
        )
