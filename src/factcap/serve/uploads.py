"""Request bodies: read under a size cap, multipart or JSON, images decoded safely.

Nothing here fetches anything: an image arrives as bytes (a multipart file, or base64 in
JSON), never as a URL.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

from factcap.errors import FactcapError, ImageError
from factcap.images import DecodedImage, DecodeLimits, decode
from factcap.serve.schemas import M, check_fields, parse_json_body

MiB = 1024 * 1024
_URL_PREFIXES = ("http://", "https://", "ftp://", "file://", "//", "s3://", "gs://")
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed body"},
    401: {"description": "missing or wrong API key"},
    413: {"description": "body over the upload limit"},
    415: {"description": "neither multipart/form-data nor application/json"},
}


class RequestTooLarge(FactcapError):
    """A request body over the upload limit."""

    http_status = 413


async def read_capped(request: Request, max_bytes: int) -> bytes:
    """The body, refusing (413) a declared or actual size over ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPException(400, "Content-Length is not a number") from None
        if size > max_bytes:
            raise RequestTooLarge(f"request body of {size} bytes is over the limit of {max_bytes}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:  # a lying or missing Content-Length (chunked upload)
            raise RequestTooLarge(f"request body is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def upload(request: Request, max_bytes: int) -> tuple[str, bytes]:
    """The body's media type (multipart or JSON, else 415) and its bytes (capped, else 413)."""
    kind = media_type(request)
    if kind not in ("multipart/form-data", "application/json"):
        raise HTTPException(415, "send multipart/form-data (field 'image') or application/json")
    return kind, await read_capped(request, max_bytes)


def media_type(request: Request) -> str:
    """The request's media type, lower case, without parameters."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def image_from_base64(encoded: str) -> bytes:
    """The bytes of a base64 (or data URL) image; 422 for a URL or bad base64."""
    if not encoded:
        raise HTTPException(422, "'image_base64' is required: the image file, base64-encoded")
    if encoded.strip().lower().startswith(_URL_PREFIXES):
        raise HTTPException(
            422, "'image_base64' holds a URL: the server does not fetch URLs; send the bytes"
        )
    if encoded.startswith("data:") and ";base64," in encoded[:200]:
        encoded = encoded.split(";base64,", 1)[1]
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(422, "'image_base64' is not valid base64") from None


async def read_form(request: Request, body: bytes, max_bytes: int) -> Any:
    """The multipart form of ``body`` (already read under the cap)."""
    sent = False

    async def replay() -> dict[str, Any]:  # the body was read already, under the cap
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(request.scope, replay).form(
            max_files=1, max_fields=16, max_part_size=max_bytes
        )
    except HTTPException:
        raise
    except Exception as err:  # noqa: BLE001 - the multipart parser's own errors
        raise HTTPException(400, f"malformed multipart body: {err}") from None


async def form_image(form: Any) -> tuple[bytes, str | None]:
    """The bytes and file name of the form's ``image`` file; 422 when there is none."""
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise HTTPException(422, "multipart body needs a file field named 'image'")
    return await image.read(), image.filename


def decode_upload(data: bytes, limits: DecodeLimits) -> DecodedImage:
    """The uploaded image, decoded with the service's limits; 422 with the reason otherwise."""
    try:
        return decode(data, limits)
    except ImageError as err:
        raise HTTPException(422, {"type": err.kind, "message": str(err)}) from None


async def image_request(
    request: Request,
    max_bytes: int,
    schema: type[M],
    form_fields: Callable[[Any], dict[str, Any]],
) -> tuple[M, bytes, str | None]:
    """A request that carries one image, read under ``max_bytes``: JSON with
    ``image_base64``, or multipart with an ``image`` file and the other fields as
    ``form_fields(form)`` reads them. Returns the body checked against ``schema``, the image's
    bytes and the uploaded file's name (None for JSON)."""
    kind, body = await upload(request, max_bytes)
    if kind == "application/json":
        req = parse_json_body(body, schema)
        return req, image_from_base64(req.image_base64), None  # type: ignore[attr-defined]
    form = await read_form(request, body, max_bytes)
    data, name = await form_image(form)
    fields = {"image_base64": "-", **form_fields(form)}
    return check_fields(fields, schema), data, name
