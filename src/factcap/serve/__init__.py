"""``factcap serve``: the captioning pipeline behind an HTTP API (FastAPI).

Heavy imports (FastAPI, the models) happen inside :func:`create_app` and :func:`run`, so
importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app", "run", "serve_in_thread"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from factcap.serve import app

        return getattr(app, name)
    raise AttributeError(name)
