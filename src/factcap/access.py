"""Who may reach factcap's HTTP servers (``factcap serve``, ``factcap study serve``): the
loopback rule and the API key check they share; and which hosts ``factcap serve`` may reach
itself (:func:`host_patterns`, :func:`host_allowed`: the ``--image-url-host`` allow-list of the
chat route's image URLs, empty by default so nothing is fetched).

A server listens beyond this machine only with an API key (:func:`check_exposure`); a request
carries the key as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (and, where a person
opens a link in a browser, ``?key=KEY``), compared in constant time (:func:`key_checker`).
FastAPI is imported only when a checker is made, so this module stays light.

>>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
(True, True, False)
"""

import hmac
import ipaddress
import re
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


_HOST = re.compile(
    r"(\*\.)?[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*"
)


def host_patterns(patterns: Any) -> tuple[str, ...]:
    """The allow-list of hosts a server may fetch from, lower-cased: each a host name or IP
    address (``images.example.com``, ``10.0.0.7``, ``[::1]``), or ``*.example.com`` for that
    domain's subdomains; a scheme, port, path or wildcard elsewhere is a
    :class:`~factcap.errors.UsageError`.

    >>> host_patterns(["CDN.example.com", "*.example.org", "[::1]"])
    ('cdn.example.com', '*.example.org', '::1')
    >>> host_patterns(["https://cdn.example.com/"])
    Traceback (most recent call last):
    factcap.errors.UsageError: --image-url-host 'https://cdn.example.com/' is not a host name or IP address (no scheme, port or path; '*.example.com' for subdomains)
    """
    found = []
    for raw in patterns or ():
        host = str(raw).strip().lower()
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            found.append(str(ipaddress.ip_address(bare)))
            continue
        except ValueError:
            pass
        if not _HOST.fullmatch(host) or len(host) > 253:
            raise UsageError(
                f"--image-url-host {raw!r} is not a host name or IP address (no scheme, port "
                "or path; '*.example.com' for subdomains)"
            )
        found.append(host)
    return tuple(dict.fromkeys(found))


def host_allowed(host: str | None, patterns: tuple[str, ...]) -> bool:
    """Whether ``host`` (a URL's host, as parsed) is on the allow-list ``patterns``
    (:func:`host_patterns`): the same name or address, or a subdomain of a ``*.`` pattern.

    >>> allowed = host_patterns(["cdn.example.com", "*.example.org"])
    >>> [host_allowed(h, allowed) for h in ("CDN.example.com", "a.b.example.org", "example.org")]
    [True, True, False]
    >>> host_allowed("cdn.example.com.evil.net", allowed), host_allowed(None, allowed)
    (False, False)
    """
    if not host:
        return False
    host = host.strip("[]").lower().rstrip(".")
    for pattern in patterns:
        if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
            return True
    return False
