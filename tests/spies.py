"""Spies on real models: they record calls while the real computation still runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from factcap.errors import ConfigError


def spy_generate(monkeypatch, model) -> list[dict]:
    """Record every ``model.generate`` call (its kwargs and output); the real call still runs."""
    calls: list[dict] = []
    real = model.generate

    def generate(*args, **kwargs):
        output = real(*args, **kwargs)
        calls.append({**kwargs, "output": output})
        return output

    monkeypatch.setattr(model, "generate", generate)
    return calls


def count_forwards(module) -> tuple[list[tuple[dict, object]], object]:
    """A forward hook recording each call's (keyword inputs, output); returns (calls, handle)."""
    calls: list[tuple[dict, object]] = []
    handle = module.register_forward_hook(
        lambda _m, _args, kwargs, out: calls.append((kwargs, out)), with_kwargs=True
    )
    return calls, handle


@contextmanager
def rejected(cause: type[Exception], match: str | None = None) -> Iterator[None]:
    """``registry.build`` reports a backend's own TypeError / ValueError as a ConfigError."""
    with pytest.raises(ConfigError, match=match) as info:
        yield
    assert isinstance(info.value.__cause__, cause), info.value.__cause__
