"""``POST /v1/captions``: caption one image, micro-batched with concurrent requests
(:func:`caption_image`, the path the chat route takes too)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from factcap.errors import QueueFull, ShuttingDown
from factcap.inputs import InputItem
from factcap.schema import stable_id
from factcap.serve.schemas import (
    CaptionRequest,
    RecordOut,
    json_body_schema,
)
from factcap.serve.state import Service, check_styles, service
from factcap.serve.uploads import UPLOAD_ERRORS, decode_upload, image_request

RETRY_AFTER_S = 1
router = APIRouter(tags=["captions"])


def per_item_fields(config: Any, req: CaptionRequest) -> dict[str, Any]:
    """The item's ``extra`` from the request's alt-text and question, under the config's
    field names; a question the service cannot take is a 422."""
    extra: dict[str, Any] = {}
    if req.alt_text and config.alt_text.field:
        extra[config.alt_text.field] = req.alt_text
    if req.question is not None:
        if not config.question.field:
            raise HTTPException(
                422,
                "this service takes no per-request question: start it with a config that "
                "sets question: {field: question}",
            )
        extra[config.question.field] = req.question
    return extra


def _form_fields(form: Any) -> dict[str, Any]:
    """A caption request's fields from a multipart form (``styles`` repeated or
    comma-separated)."""
    fields: dict[str, Any] = {}
    styles = [s for v in form.getlist("styles") if isinstance(v, str) for s in v.split(",")]
    if styles:
        fields["styles"] = styles
    for key in ("instruction", "alt_text", "question"):
        if isinstance(form.get(key), str):
            fields[key] = form.get(key)
    return fields


@router.post(
    "/v1/captions",
    response_model=RecordOut,
    response_model_exclude_unset=True,
    openapi_extra=json_body_schema(CaptionRequest),
    responses={
        **UPLOAD_ERRORS,
        422: {"description": "undecodable image, over the pixel limit, or bad fields"},
        429: {"description": "queue full; retry after Retry-After seconds"},
    },
)
async def captions(request: Request) -> dict[str, Any]:
    """Caption one image: a multipart upload (field ``image``, optional ``styles``,
    ``instruction`` and ``alt_text``) or JSON ``{"image_base64", "styles"?, "instruction"?,
    "alt_text"?}``. Returns the
    record (the same JSON object as a line of ``factcap caption`` output)."""
    svc = service(request)
    req, data, name = await image_request(request, svc.max_bytes, CaptionRequest, _form_fields)
    styles = check_styles(req.styles, svc.style_names())
    extra = per_item_fields(svc.config, req)
    return await caption_image(svc, data, name, styles, req.instruction, extra)


async def caption_image(
    svc: Service,
    data: bytes,
    name: str | None,
    styles: list[str] | None,
    instruction: str | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of one image's bytes, as every caption route makes it: decoded with the
    service's limits (422), queued on the batcher with the other requests (429 with
    ``Retry-After`` when the queue is full) and micro-batched into the pipeline (500 when the
    batch fails)."""
    decoded = await run_in_threadpool(decode_upload, data, svc.limits)
    source = f"upload:{name}" if name else "upload"
    item = InputItem(
        source=source, id=stable_id("upload", data), image=decoded.image, extra=extra or {}
    )
    notes = list(decoded.notes)
    if decoded.frames > 1:
        notes.append(f"decoded the first of {decoded.frames} frames")
    try:
        future = svc.batcher.submit(item, styles, instruction, notes)
    except QueueFull as err:
        raise HTTPException(
            429, f"{err}; retry later", headers={"Retry-After": str(RETRY_AFTER_S)}
        ) from None
    try:
        record = await future
    except ShuttingDown:
        raise
    except Exception as err:  # noqa: BLE001 - a pipeline failure, not the client's fault
        raise HTTPException(500, f"captioning failed: {type(err).__name__}: {err}") from None
    result = record.to_dict()
    if decoded.format:
        result.setdefault("extra", {})["format"] = decoded.format
    return result
