"""A chat request's ``image_url`` from the web: fetched only from the hosts of the service's
allow-list (``--image-url-host``; empty by default, so nothing is fetched), one GET under the
upload size limit and a total time limit, redirects followed only to allowed hosts.

Everything that goes wrong is a 400 that says what (the host is not allowed, the server
answered 404, the image is over the limit, it took too long); nothing of the server's own
(paths, addresses it resolved) is in the message.
"""

from __future__ import annotations

import asyncio

from fastapi import HTTPException

from factcap.access import host_allowed

FETCH_TIMEOUT_S = 10.0
MAX_REDIRECTS = 3
NOT_FETCHED = (
    "this service fetches no image URLs (it was started without --image-url-host): send the "
    "image as a data URL (data:image/jpeg;base64,...)"
)


async def fetch_image(
    url: str, hosts: tuple[str, ...], max_bytes: int, timeout_s: float = FETCH_TIMEOUT_S
) -> bytes:
    """The bytes at ``url`` (http or https, its host on ``hosts``), at most ``max_bytes``,
    within ``timeout_s`` seconds in all; :class:`HTTPException` 400 otherwise."""
    if not hosts:
        raise HTTPException(400, NOT_FETCHED)
    try:
        return await asyncio.wait_for(_fetch(url, hosts, max_bytes), timeout_s)
    except (asyncio.TimeoutError, TimeoutError):
        raise HTTPException(400, f"fetching the image URL took over {timeout_s:g} s") from None


def _checked(url: str, hosts: tuple[str, ...]) -> str:
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise HTTPException(400, "the image URL is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise HTTPException(400, f"image URLs must be http or https, not {parsed.scheme!r}")
    if not host_allowed(parsed.host, hosts):
        raise HTTPException(
            400,
            f"the image URL's host {parsed.host!r} is not on this service's allow-list "
            "(--image-url-host): send the image as a data URL",
        )
    return str(parsed)


async def _fetch(url: str, hosts: tuple[str, ...], max_bytes: int) -> bytes:
    import httpx

    current = _checked(url, hosts)
    async with httpx.AsyncClient(follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with client.stream("GET", current, headers={"Accept": "image/*"}) as r:
                    if r.is_redirect and "location" in r.headers:
                        current = _checked(str(r.url.join(r.headers["location"])), hosts)
                        continue
                    if r.status_code != 200:
                        raise HTTPException(
                            400, f"fetching the image URL answered HTTP {r.status_code}"
                        )
                    return await _read(r, max_bytes)
            except httpx.HTTPError as err:
                raise HTTPException(
                    400, f"the image URL could not be fetched ({type(err).__name__})"
                ) from None
    raise HTTPException(400, f"the image URL redirected more than {MAX_REDIRECTS} times")


async def _read(response: object, max_bytes: int) -> bytes:
    """The body of a streamed response, refusing a declared or actual size over the limit."""
    too_big = f"the image at the URL is over the limit of {max_bytes} bytes"
    declared = response.headers.get("content-length")  # type: ignore[attr-defined]
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(400, too_big)
    chunks, total = [], 0
    async for chunk in response.aiter_bytes():  # type: ignore[attr-defined]
        total += len(chunk)
        if total > max_bytes:
            raise HTTPException(400, too_big)
        chunks.append(chunk)
    return b"".join(chunks)
