"""Who may reach factcap's HTTP servers (``factcap serve``, ``factcap study serve``): the
loopback rule and the API key check they share.

A server listens beyond this machine only with an API key (:func:`check_exposure`); a request
carries the key as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (and, where a person
opens a link in a browser, ``?key=KEY``), compared in constant time (:func:`key_checker`).
FastAPI is imported only when a checker is made, so this module stays light.

>>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
(True, True, False)
"""

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any

from factcap.errors import UsageError


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ``::1``).

    >>> is_loopback("localhost"), is_loopback("192.168.1.4")
    (True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse (:class:`~factcap.errors.UsageError`) to listen beyond loopback without a key.

    >>> check_exposure("0.0.0.0", None)
    Traceback (most recent call last):
    factcap.errors.UsageError: refusing to listen on '0.0.0.0' without an API key: set FACTCAP_API_KEY, or listen on 127.0.0.1
    """
    if not api_key and not is_loopback(host):
        raise UsageError(
            f"refusing to listen on {host!r} without an API key: set FACTCAP_API_KEY, "
            "or listen on 127.0.0.1"
        )


def given_key(headers: Any, query: Any = None) -> str | None:
    """The key a request carries: ``Authorization: Bearer KEY``, ``X-API-Key: KEY``, or
    (when ``query`` is given) ``?key=KEY``.

    >>> given_key({"authorization": "Bearer s3cret"}), given_key({}, {"key": "k"}), given_key({})
    ('s3cret', 'k', None)
    """
    auth = headers.get("authorization", "") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    given = headers.get("x-api-key")
    if given is None and query is not None:
        given = query.get("key")
    return given or None


def key_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a request's key with the server's."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def key_checker(
    api_key: str | None, allow_query: bool = False, hint: str = ""
) -> Callable[[Any], None]:
    """A FastAPI dependency answering 401 unless the request carries ``api_key``
    (:func:`given_key`; ``?key=`` only with ``allow_query``); with no key it lets all in."""
    from fastapi import HTTPException, Request

    hint = hint or "send 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"

    # Annotations are evaluated here (no ``from __future__ import annotations`` in this
    # module), so FastAPI sees the real Request class and injects the request.
    def authorize(request: Request) -> None:
        if api_key is None:
            return
        query = request.query_params if allow_query else None
        if not key_matches(given_key(request.headers, query), api_key):
            raise HTTPException(
                401, f"missing or wrong API key: {hint}", headers={"WWW-Authenticate": "Bearer"}
            )

    return authorize
