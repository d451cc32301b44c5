"""The models a pipeline runs, by slot (``captioner:0``, ``llm``, ``vqa`` ...), each built
from the config on first use, once."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from factcap.backends.registry import BoundModel, build_configured
from factcap.config import Config
from factcap.pipeline.plan import stage_list


class Models(Mapping[str, BoundModel]):
    """The models of a config by slot, each built on first use, once.

    ``Models(config)`` serves every slot the config's stage list needs; ``slots`` names
    others instead. ``built`` gives ready backends (``{slot: (backend, batch_size)}``)
    instead of building them: a library user's own objects, or a test's. A stage whose
    slot is not served runs without a model (e.g. no OCR, no VQA), as the stage says.

    Example:
        >>> from factcap.config import load_config
        >>> models = Models(load_config(preset="tiny"), built={"llm": ("my-llm", 4)})
        >>> list(models), models["llm"].batch_size, models.get("vqa")
        (['llm'], 4, None)
    """

    def __init__(
        self,
        config: Config,
        slots: Sequence[str] | None = None,
        built: Mapping[str, tuple[Any, int | None]] | None = None,
    ):
        self.config = config
        self._given: set[str] = set()  # a caller's own objects: never released
        if built is not None:
            self._built = {k: BoundModel(*v) for k, v in built.items()}
            self._slots = list(self._built)
            self._given = set(self._built)
            return
        needed = slots if slots is not None else [s.model for s in stage_list(config) if s.model]
        self._slots = list(dict.fromkeys(needed))
        self._built = {}

    def __getitem__(self, slot_name: str) -> BoundModel:
        if slot_name not in self._slots:
            raise KeyError(slot_name)
        if slot_name not in self._built:
            self._built[slot_name] = build_configured(self.config, slot_name)
        return self._built[slot_name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    def load(self) -> Models:
        """Build every model now (errors surface before any work starts)."""
        for slot_name in self._slots:
            _ = self[slot_name]
        return self

    def release(self, slot_name: str) -> None:
        """Forget the model built for ``slot_name`` (it is built again on its next use), so
        its memory can be freed; a model given to the constructor is kept.

        >>> from factcap.config import load_config
        >>> models = Models(load_config(preset="tiny"), built={"llm": ("my-llm", 4)})
        >>> models.release("llm"); models["llm"].backend
        'my-llm'
        """
        if slot_name not in self._given:
            self._built.pop(slot_name, None)

    def wrap(self, wrapper: Callable[[Any], Any]) -> Models:
        """A copy whose backends (all built now) are ``wrapper(backend)``."""
        self.load()
        return Models(self.config, built={k: (wrapper(m[0]), m[1]) for k, m in self.items()})
