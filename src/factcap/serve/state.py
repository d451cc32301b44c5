"""What every route of one service shares: its config, limits, batcher, jobs and models."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from factcap.config import Config
from factcap.images import DecodeLimits


@dataclass
class Service:
    """The running service's parts (``request.app.state.service``)."""

    config: Config
    max_bytes: int
    limits: DecodeLimits
    data_root: Path | None = None
    image_url_hosts: tuple[str, ...] = ()  # hosts the chat route may fetch image URLs from
    fetch_timeout_s: float = 10.0  # the most one image URL may take, all of it
    started: float = field(default_factory=time.time)
    batcher: Any = None
    jobs: Any = None
    resources: Any = None
    scoring: threading.Lock = field(default_factory=threading.Lock)  # metric caches: one user

    def style_names(self) -> list[str]:
        """The styles a request may ask for."""
        from factcap.prompts.style import selectable

        return selectable(self.config.style_registry())


def service(request: Request) -> Service:
    """The :class:`Service` of the app that got ``request``."""
    return request.app.state.service


def check_styles(styles: Any, allowed: list[str]) -> list[str] | None:
    """Requested styles (a list, or a comma-separated string) as a clean list; 422 for an
    unknown one."""
    if styles is None:
        return None
    if isinstance(styles, str):
        styles = styles.split(",")
    styles = [s.strip() for s in styles if s.strip()]
    unknown = [s for s in styles if s not in allowed]
    if unknown:
        raise HTTPException(422, f"unknown style(s) {unknown}; choose from {allowed}")
    return list(dict.fromkeys(styles)) or None
