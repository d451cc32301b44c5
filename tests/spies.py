"""Spies on real models: they record calls while the real computation still runs."""

from __future__ import annotations


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
