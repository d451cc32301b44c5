"""Exceptions with messages meant for people; the CLI prints them as one line."""

from __future__ import annotations


class FactcapError(Exception):
    """Base class: something the user can fix (a bad argument, config or model path)."""


class ConfigError(FactcapError):
    """The config file or a command-line option is invalid."""


class ModelNotAvailable(FactcapError):
    """A model's weights are neither on disk nor reachable."""


class MissingDependency(FactcapError):
    """An optional package is needed for this backend; the message says what to install."""


class ImageError(Exception):
    """An input could not be decoded into an image; ``kind`` is the record's error type."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def require(module: str, extra: str) -> None:
    """Raise :class:`MissingDependency` with a pip hint when ``module`` is not importable.

    >>> require("json", "core")  # present: returns quietly
    """
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependency(
            f"this backend needs the '{module}' package: pip install 'factcap[{extra}]'"
        )
