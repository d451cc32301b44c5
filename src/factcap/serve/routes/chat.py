"""OpenAI's chat API over the caption route: any tool that captions through an
OpenAI-compatible vision model gets factcap's checked captions (README: "Use factcap from any
OpenAI-compatible tool").

* ``GET /v1/models`` lists the caption styles as models, ``factcap-<style>``, and
  ``factcap-instruction``, which follows the prompt in the messages (the ``instruction`` of
  ``/v1/captions``);
* ``POST /v1/chat/completions`` with one image (an ``image_url`` part: a data URL, or an
  http(s) URL of an allowed host, :mod:`factcap.serve.fetch`) answers the style's final
  caption as the assistant's message. The image goes the way of ``POST /v1/captions``
  (:func:`~factcap.serve.routes.captions.caption_image`: the same limits, queue, 429 with
  ``Retry-After`` and micro-batching). The response adds ``factcap`` (the full record) and
  ``warnings`` (request fields not applied and why); ``stream: true`` sends the caption as
  one chunk, a last chunk with ``finish_reason``, then ``data: [DONE]``.

Every error on these routes, the 401 of a wrong key included, is OpenAI's shape ``{"error":
{"message", "type", "param", "code"}}`` (:class:`OpenAIRoute`), with 400 where
``/v1/captions`` says 415 or 422, so the ``openai`` SDK raises ``BadRequestError``,
``AuthenticationError``, ``RateLimitError``, ... as it does against OpenAI.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError

from factcap.errors import FactcapError
from factcap.prompts.style import INSTRUCTION
from factcap.serve.fetch import fetch_image
from factcap.serve.routes.captions import caption_image
from factcap.serve.schemas import (
    ChatCompletionOut,
    ChatRequest,
    ModelList,
    ModelOut,
    OpenAIError,
    RecordOut,
    json_body_schema,
)
from factcap.serve.state import Service, service
from factcap.serve.uploads import media_type, read_capped

PREFIX = "factcap-"
#: Fields that only label a request (who sent it, what to keep): accepted without a warning.
QUIET = frozenset(
    {"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}
)
#: Fields the route applies (``n``, ``stop``, ``stream_options.include_usage``).
APPLIED = frozenset({"model", "messages", "stream", "n", "stop", "stream_options"})
_SAMPLING = "not applied: the caption is written with the service's own model settings"
_LENGTH = "not applied: a checked caption is never cut short (its length comes from the style)"
WHY_NOT = {
    **dict.fromkeys(
        (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "seed",
            "frequency_penalty",
            "presence_penalty",
            "repetition_penalty",
            "logit_bias",
        ),
        _SAMPLING,
    ),
    "max_tokens": _LENGTH,
    "max_completion_tokens": _LENGTH,
    "logprobs": "not available: a checked caption has no token log-probabilities",
    "top_logprobs": "not available: a checked caption has no token log-probabilities",
}
OTHER_MEDIA = "3D assets and videos go through `factcap caption` or /v1/jobs"
_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_CODES = {
    401: "invalid_api_key",
    404: "not_found",
    413: "request_too_large",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}


class APIError(Exception):
    """An error answered in OpenAI's shape (with ``extra`` top-level fields, e.g. the
    record of a failed item)."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers, self.extra = headers, extra or {}

    def response(self) -> JSONResponse:
        kind = _TYPES.get(self.status) or (
            "server_error" if self.status >= 500 else "invalid_request_error"
        )
        error = {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.code or _CODES.get(self.status),
        }
        return JSONResponse(
            {"error": error, **self.extra}, status_code=self.status, headers=self.headers
        )


def api_error(exc: Exception, param: str | None = None) -> APIError:
    """What the shared code raised, as OpenAI's error: 415 and 422 become 400 (what OpenAI
    answers for a body or an image it cannot use); the headers (``Retry-After``,
    ``WWW-Authenticate``) stay."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, HTTPException):
        status, detail, headers = exc.status_code, exc.detail, dict(exc.headers or {})
    elif isinstance(exc, FactcapError):
        status, detail, headers = exc.http_status, str(exc), {}
    else:  # RequestValidationError
        status, detail, headers = 400, str(exc), {}
    code = None
    if isinstance(detail, dict):  # an image the decoder refused: {type, message}
        code, detail = detail.get("type"), detail.get("message", "")
    if status in (415, 422):
        status = 400
    return APIError(status, str(detail), code=code, param=param, headers=headers or None)


class OpenAIRoute(APIRoute):
    """A route whose every error (the key check, the size cap, the queue, ...) is answered in
    OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except (APIError, HTTPException, FactcapError, RequestValidationError) as exc:
                return api_error(exc).response()

        return answer


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIError, "description": what}
    for status, what in {
        400: "no image, several, not an image, an undecodable one, a URL not allowed, bad fields",
        401: "missing or wrong API key",
        404: "no such model",
        413: "body over the upload limit",
        429: "queue full; retry after Retry-After seconds",
    }.items()
}
router = APIRouter(tags=["openai"], route_class=OpenAIRoute)


def models(svc: Service) -> dict[str, tuple[str, str]]:
    """Model name → (the style it writes, its description): every style a request may ask
    for, and the instruction's style when the registry has it."""
    styles = svc.config.style_registry()
    names = svc.style_names() + ([INSTRUCTION] if INSTRUCTION in styles else [])
    return {f"{PREFIX}{n}": (n, styles[n].description) for n in names}


def _listed(svc: Service) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "id": name,
            "object": "model",
            "created": int(svc.started),
            "owned_by": "factcap",
            "description": description,
        }
        for name, (_, description) in models(svc).items()
    }


@router.get("/v1/models", response_model=ModelList, responses=ERRORS)
async def list_models(request: Request) -> dict[str, Any]:
    """The caption styles as models (OpenAI's list shape): ``factcap-<style>``."""
    return {"object": "list", "data": list(_listed(service(request)).values())}


@router.get("/v1/models/{model}", response_model=ModelOut, responses=ERRORS)
async def get_model(request: Request, model: str) -> dict[str, Any]:
    """One model; 404 for a name that is not one."""
    listed = _listed(service(request))
    if model not in listed:
        raise _unknown_model(model, listed)
    return listed[model]


def _unknown_model(model: str, known: Any) -> APIError:
    return APIError(
        404,
        f"the model {model!r} does not exist; choose from {sorted(known)}",
        code="model_not_found",
        param="model",
    )


@dataclass
class Conversation:
    """What the route takes from the messages: their text and the one image."""

    text: str = ""  # the system, developer and user messages' text, in order
    images: list[tuple[str, str]] = field(default_factory=list)  # (url, param)
    unused_roles: list[str] = field(default_factory=list)


def read_messages(messages: list[Any]) -> Conversation:
    """The text and images of the messages; a part this route cannot take (audio, a file, a
    video) is a 400 that names it."""
    found = Conversation()
    texts = []
    for i, message in enumerate(messages):
        content = message.content
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        speaks = message.role in ("system", "developer", "user")
        for j, part in enumerate(parts or []):
            param = f"messages[{i}].content" + ("" if isinstance(content, str) else f"[{j}]")
            kind = part.get("type")
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise APIError(400, "a text part needs its text", param=param)
                if part["text"].strip():
                    if speaks:
                        texts.append(part["text"].strip())
                    elif message.role not in found.unused_roles:
                        found.unused_roles.append(message.role)
            elif kind == "image_url":
                image = part.get("image_url")
                url = image.get("url") if isinstance(image, dict) else image
                if not isinstance(url, str) or not url:
                    raise APIError(400, "an image_url part needs a url", param=param)
                found.images.append((url, f"{param}.image_url.url"))
            elif kind == "refusal":
                continue
            else:
                raise APIError(
                    400,
                    f"a {kind!r} content part: this route captions one image, sent as an "
                    f"image_url part (a data URL or an http(s) URL); {OTHER_MEDIA}",
                    code="unsupported_content",
                    param=param,
                )
    found.text = "\n".join(texts)
    return found


def image_bytes_of_data_url(url: str, param: str) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URL; 400 for another media type or an
    encoding that is not base64."""
    header, comma, payload = url[5:].partition(",")
    fields = [f.strip().lower() for f in header.split(";")]
    mime = fields[0]
    if not comma or "base64" not in fields[1:]:
        raise APIError(400, "a data URL must be base64: data:image/png;base64,...", param=param)
    if mime and not mime.startswith("image/"):
        raise APIError(
            400,
            f"the data URL holds {mime!r}, not an image: this route captions one image; "
            f"{OTHER_MEDIA}",
            code="not_an_image",
            param=param,
        )
    try:
        return base64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "the data URL is not valid base64", param=param) from None


async def image_of(svc: Service, url: str, param: str) -> bytes:
    """The image's bytes: a data URL's, or fetched from an allowed host."""
    scheme = url[:8].lower()
    if scheme.startswith("data:"):
        return image_bytes_of_data_url(url, param)
    if scheme.startswith(("http://", "https://")):
        try:
            return await fetch_image(url, svc.image_url_hosts, svc.max_bytes, svc.fetch_timeout_s)
        except HTTPException as exc:
            raise api_error(exc, param) from None
    raise APIError(
        400,
        "image_url must be a data URL (data:image/png;base64,...) or an http(s) URL",
        param=param,
    )


def warnings_for(req: ChatRequest, model: str, style: str, conversation: Conversation) -> list[str]:
    """Why the request's fields that would change the answer were not applied."""
    said = []
    for key, value in (req.model_extra or {}).items():
        if key in QUIET or key in APPLIED or value is None or value is False:
            continue
        if value in ([], {}, {"type": "text"}):  # no tools, a text answer: what it is anyway
            continue
        said.append(f"{key}: {WHY_NOT.get(key, 'not supported; ignored')}")
    if style != INSTRUCTION and conversation.text:
        said.append(
            f"the messages' text is not used: model {model!r} writes the {style!r} style; "
            f"model '{PREFIX}{INSTRUCTION}' follows a prompt"
        )
    if conversation.unused_roles:
        said.append(f"the text of {', '.join(conversation.unused_roles)} messages is not used")
    if (req.n or 1) > 1:
        said.append(f"n={req.n}: the choices are the same caption (one checked caption per image)")
    return said


def cut_at_stop(text: str, stop: str | list[str] | None) -> str:
    """``text`` up to the first of the stop sequences (OpenAI's ``stop``).

    >>> cut_at_stop("A cat. A dog.", [" A dog", "x"]), cut_at_stop("A cat.", None)
    ('A cat.', 'A cat.')
    """
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    ends = [text.find(s) for s in stops if s and s in text]
    return text[: min(ends)] if ends else text


def record_out(record: dict[str, Any]) -> dict[str, Any]:
    """The record as ``POST /v1/captions`` answers it (:class:`RecordOut`)."""
    return RecordOut.model_validate(record).model_dump(mode="json", exclude_unset=True)


def answer_of(record: dict[str, Any], style: str) -> str:
    """The style's final caption; 500 (with the record) when the item failed."""
    if record.get("status") != "ok":
        error = record.get("error") or {}
        raise APIError(
            500,
            f"captioning failed: {error.get('message') or 'no caption'}",
            code=error.get("type") or "captioning_failed",
            extra={"factcap": record_out(record)},
        )
    text = (record.get("captions") or {}).get(style)
    if text is None:
        raise APIError(
            500,
            f"the record has no {style!r} caption",
            code="no_caption",
            extra={"factcap": record_out(record)},
        )
    return text


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletionOut,
    openapi_extra=json_body_schema(ChatRequest),
    responses={
        **ERRORS,
        200: {
            "description": "the caption (application/json), or with stream: true server-sent "
            "events: one chunk with the caption, one with finish_reason, then [DONE]",
            "content": {"text/event-stream": {}},
        },
    },
)
async def chat_completions(request: Request) -> Response:
    """Caption the one image of the messages in the style ``model`` names
    (``factcap-<style>``; ``factcap-instruction`` follows the messages' text)."""
    svc = service(request)
    if media_type(request) != "application/json":
        raise APIError(400, "send the chat request as application/json")
    req = _parse(await read_capped(request, svc.max_bytes))
    known = models(svc)
    if req.model not in known:
        raise _unknown_model(req.model, known)
    style = known[req.model][0]
    conversation = read_messages(req.messages)
    if not conversation.images:
        raise APIError(
            400,
            "no image: put one image_url part (a data URL: data:image/jpeg;base64,...) in a "
            "user message",
            code="no_image",
            param="messages",
        )
    if len(conversation.images) > 1:
        raise APIError(
            400,
            f"{len(conversation.images)} images: factcap captions one image per request; send "
            "one request per image",
            code="several_images",
            param=conversation.images[1][1],
        )
    instruction = None
    if style == INSTRUCTION:
        if not conversation.text:
            raise APIError(
                400,
                f"model {req.model!r} follows a prompt: put the instruction in the user "
                "message's text",
                code="no_prompt",
                param="messages",
            )
        instruction = conversation.text
    url, param = conversation.images[0]
    data = await image_of(svc, url, param)
    styles = None if instruction else [style]
    try:
        record = await caption_image(svc, data, None, styles, instruction)
    except HTTPException as exc:
        raise api_error(exc, param if exc.status_code == 422 else None) from None
    text = cut_at_stop(answer_of(record, style), req.stop)
    return _answer(req, text, record_out(record), warnings_for(req, req.model, style, conversation))


def _parse(body: bytes) -> ChatRequest:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise APIError(400, f"malformed JSON: {err}") from None
    try:
        return ChatRequest.model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise APIError(400, f"{where}: {first['msg']}", param=where or None) from None


def _answer(req: ChatRequest, text: str, record: dict[str, Any], warnings: list[str]) -> Response:
    n = req.n or 1
    head = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "created": int(time.time()),
        "model": req.model,
    }
    words = len(text.split()) * n
    usage = {"prompt_tokens": 0, "completion_tokens": words, "total_tokens": words}
    if not req.stream:
        choice = {"role": "assistant", "content": text, "refusal": None}
        body = {
            **head,
            "object": "chat.completion",
            "choices": [
                {"index": i, "message": choice, "finish_reason": "stop", "logprobs": None}
                for i in range(n)
            ],
            "usage": usage,
            "warnings": warnings,
            "factcap": record,
        }
        return JSONResponse(body)
    with_usage = bool((req.stream_options or {}).get("include_usage"))
    return StreamingResponse(
        _events(head, n, text, record, warnings, usage if with_usage else None),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _events(
    head: dict[str, Any],
    n: int,
    text: str,
    record: dict[str, Any],
    warnings: list[str],
    usage: dict[str, int] | None,
) -> Iterator[str]:
    """The stream: the caption in one chunk, ``finish_reason`` (with ``warnings`` and
    ``factcap``) in the next, the usage when asked, then ``[DONE]``."""
    chunk = {**head, "object": "chat.completion.chunk"}
    extra = {"usage": None} if usage is not None else {}

    def choices(delta: dict[str, Any], finish: str | None) -> list[dict[str, Any]]:
        return [
            {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
            for i in range(n)
        ]

    yield _sse({**chunk, "choices": choices({"role": "assistant", "content": text}, None), **extra})
    yield _sse(
        {
            **chunk,
            "choices": choices({}, "stop"),
            **extra,
            "warnings": warnings,
            "factcap": record,
        }
    )
    if usage is not None:
        yield _sse({**chunk, "choices": [], "usage": usage})
    yield "data: [DONE]\n\n"


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
