"""The API key: required on every route but ``/healthz`` when the service has one."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request


def key_checker(api_key: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency that accepts ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``
    (compared in constant time) and answers 401 otherwise; with no key it lets all in."""
    expected = api_key.encode() if api_key else None

    def authorize(request: Request) -> None:
        if expected is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(
                401,
                "missing or wrong API key: send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return authorize
