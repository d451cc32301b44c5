"""What a media kind is: how an input becomes the views the stages look at, what its record
says about it, and how the checks of several views combine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from factcap.schema import Media


@dataclass(slots=True)
class View:
    """One picture of an input that the stages look at: ``image`` (RGB PIL image) and, for a
    kind of several views, its ``index`` (None for a photo's one view) and the kind's
    ``meta`` (an asset view's azimuth and elevation, a video frame's timestamp)."""

    image: Any
    index: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Loaded:
    """What a loader made of one input: its views, its media for the record, notes for the
    record, and how long it took (the record's timing :attr:`MediaKind.load_timing`)."""

    views: list[View]
    media: Media
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    derived: bool = False
    """Whether the views were made from the input (rendered, extracted) rather than being it:
    a sink that stores the input's bytes stores such views beside them."""


class Loader:
    """Turns input items of one kind into :class:`Loaded` views. ``submit`` may start work
    that runs while other items load (an asset renders in a worker process); ``result``
    gives it, raising :class:`~factcap.errors.ImageError` for an input it cannot read."""

    def submit(self, item: Any) -> Any:
        """Start loading ``item`` (an :class:`~factcap.inputs.InputItem`); a handle."""
        return item

    def result(self, handle: Any) -> Loaded:  # pragma: no cover - every kind defines it
        raise NotImplementedError

    def close(self) -> None:
        """Release what the loader holds (worker processes)."""


class KindSettings(BaseModel):
    """The base of a kind's config section (:attr:`MediaKind.settings`): unknown keys are
    errors, as everywhere in a config."""

    model_config = ConfigDict(extra="forbid")


class MediaKind:
    """One kind of input. A subclass sets the class attributes and defines :meth:`loader`;
    the rest has defaults that fit a kind of one view. Registered in
    :data:`factcap.media.MEDIA_MODULES` (ARCHITECTURE.md, "How to add one")."""

    name: ClassVar[str]
    """The record's ``media.kind``."""
    label: ClassVar[str]
    """How messages name one such input ("photo", "3D asset")."""
    formats: ClassVar[tuple[str, ...]] = ()
    """The file endings (lower case, no dot) read as this kind."""
    names_views: ClassVar[bool] = False
    """Whether its views are separate pictures that proposals and evidence name by index
    (boxes belong to a view, so region captions are not made)."""
    compose_rule: ClassVar[str] = ""
    """Added to the compose prompt's style paragraph."""
    load_timing: ClassVar[str] = "decode"
    """The record's timing name for loading one (``decode``, ``render``)."""
    config_key: ClassVar[str | None] = None
    """The config section of this kind's settings (``assets``), read as ``config.<key>``."""
    settings: ClassVar[type[KindSettings] | None] = None
    """The model of that section; its defaults apply when a config leaves it out."""

    def add_arguments(self, parser: Any) -> None:
        """Add this kind's options to ``factcap caption`` (an argparse parser)."""

    def option_settings(self, args: Any) -> dict[str, Any]:
        """The settings of this kind's config section that the parsed options set; raises
        :class:`~factcap.errors.UsageError` for a value no setting takes."""
        return {}

    def loader(self, config: Any, in_process: bool = False) -> Loader:  # pragma: no cover
        """A loader for this kind with ``config``'s limits and settings; ``in_process``: load
        in this process (it is a worker of its own already), starting no others."""
        raise NotImplementedError

    def caption_views(self, config: Any) -> set[int] | None:
        """The view indices the captioners see (None: every view)."""
        return None

    def clean_caption(self, text: str, pieces: str) -> str:
        """A draft or final caption with what this kind's pictures make models say wrongly
        taken out (``pieces``: ``sentences`` or ``phrases``)."""
        return text

    def combine(self, p_yes: Sequence[float]) -> float:
        """A claim's P(yes) from the answers about the views it was asked on: it holds when
        some view shows it."""
        return max(p_yes)

    def metric_images(
        self, source: str, media: Media, limits: Any, view_size: int | None
    ) -> list[Any]:
        """The images the metrics look at for a record of this kind: the files its views
        were saved to when it lists them all, else its source file; decoded with ``limits``
        (a :class:`~factcap.images.DecodeLimits`); raises ImageError. ``view_size`` is the
        record's image width, for a kind that makes its views again."""
        from factcap.images import decode

        files = [v.get("file") for v in media.views]
        if not (files and all(isinstance(f, str) for f in files)):
            files = [source]
        return [decode(f, limits).image for f in files]
