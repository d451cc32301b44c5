"""The service's request and response bodies as pydantic models: the OpenAPI page documents
them, and :func:`parse_json_body` checks a request against one with messages a client can act
on (unknown fields named, URLs refused with the reason)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaptionRequest(_Strict):
    """``POST /v1/captions`` as JSON (multipart takes the same fields, the image as a file)."""

    image_base64: str = Field(description="the image file, base64-encoded (a data URL works)")
    styles: list[str] | str | None = Field(
        default=None, description="caption styles (a list, or one comma-separated string)"
    )
    instruction: str | None = Field(default=None, description="a free instruction")
    alt_text: str | None = Field(
        default=None,
        description="the image's web alt-text: one more proposal whose claims are checked",
    )
    question: str | None = Field(
        default=None,
        description="a question the caption must help answer (the service's config must set "
        "question.field)",
    )


class ScoreRequest(_Strict):
    """``POST /v1/scores`` as JSON."""

    image_base64: str = Field(description="the image file, base64-encoded")
    captions: dict[str, str] = Field(description="caption name → caption text")
    metrics: list[str] | str | None = Field(default=None, description="metric names")
    references: list[str] | None = Field(default=None, description="human reference captions")


class JobRequest(_Strict):
    """``POST /v1/jobs``: a dataset under the data root."""

    path: str = Field(
        description="folder, file, manifest, shard or Parquet file, relative to --data-root"
    )
    styles: list[str] | str | None = None
    instruction: str | None = None


class Proposal(BaseModel):
    model: str
    text: str
    view: int | None = None
    score: float | None = None
    kept: bool | None = None


class Claim(BaseModel):
    kind: str
    text: str
    subject: str = ""
    question: str = ""
    count: int | None = None
    verdict: str
    score: float | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)
    origin: str | None = None


class ErrorInfo(BaseModel):
    type: str
    message: str


class MediaOut(BaseModel):
    """What the input was, for anything but a plain photo (``factcap.schema.Media``)."""

    kind: str
    views: list[dict[str, Any]]
    facts: dict[str, Any]


class RegionsOut(BaseModel):
    """With ``regions.enabled``: the verified regions and the caption graph."""

    items: list[dict[str, Any]]
    graph: dict[str, Any]


class QuestionOut(BaseModel):
    """With a question: its text and the answer check of the ``question`` caption."""

    text: str | None
    answer: dict[str, Any]


class RecordOut(BaseModel):
    """One result record: the same JSON object as a line of ``factcap caption`` output."""

    id: str
    source: str
    status: str
    proposals: list[Proposal]
    claims: list[Claim]
    captions: dict[str, str]
    removed: list[str]
    notes: list[str]
    error: ErrorInfo | None
    timings_ms: dict[str, float]
    models: dict[str, Any]
    image_size: list[int] | None
    extra: dict[str, Any] | None = None
    media: MediaOut | None = None
    regions: RegionsOut | None = None
    question: QuestionOut | None = None


class ScoresOut(BaseModel):
    """Metric values per caption (null with a reason in ``failures`` when not computable)."""

    id: str
    metrics: dict[str, dict[str, float | None]]
    failures: dict[str, dict[str, str]]


class JobOut(BaseModel):
    """A dataset job's state and progress."""

    id: str
    state: str = Field(description="queued, running, done, failed, cancelled or interrupted")
    total: int | None = Field(description="inputs in the job, once known")
    written: int
    errors: int
    message: str | None
    created: float
    finished: float | None
    cancelling: bool | None = None
    deleted: bool | None = None


class ChatMessage(BaseModel):
    """One message of a chat request: ``content`` is text, or a list of parts (``{"type":
    "text", "text"}``, ``{"type": "image_url", "image_url": {"url"}}``)."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``: OpenAI's chat request. Fields beyond these (sampling,
    tools, ...) are accepted; those that would change the answer are named in the response's
    ``warnings``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="factcap-<style> (GET /v1/models lists them)")
    messages: list[ChatMessage] = Field(
        min_length=1, description="one image (an image_url part) in all, and text"
    )
    stream: bool | None = Field(default=False, description="answer as server-sent events")
    n: int | None = Field(default=None, ge=1, le=128, description="choices (all the same)")
    stop: str | list[str] | None = Field(
        default=None, description="the caption is cut before the first of these"
    )
    stream_options: dict[str, Any] | None = Field(
        default=None, description="include_usage: a last chunk with the usage"
    )


class ChatMessageOut(BaseModel):
    role: str
    content: str
    refusal: str | None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: str
    logprobs: None


class Usage(BaseModel):
    """factcap counts no tokens: ``prompt_tokens`` is 0, ``completion_tokens`` the words of
    the answer's choices."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionOut(BaseModel):
    """OpenAI's chat completion, plus two fields plain clients ignore: ``warnings`` and
    ``factcap`` (the full record)."""

    id: str
    object: str
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    warnings: list[str] = Field(
        description="request fields not applied (temperature, max_tokens, ...) and why"
    )
    factcap: RecordOut = Field(
        description="the record: every caption, claim, verdict, evidence and what was removed "
        "(the same object POST /v1/captions answers)"
    )


class ModelOut(BaseModel):
    """One caption style as a model (``factcap-<style>``)."""

    id: str
    object: str
    created: int
    owned_by: str
    description: str


class ModelList(BaseModel):
    object: str
    data: list[ModelOut]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """How the chat routes answer an error: OpenAI's shape, so its SDK raises the matching
    exception (``AuthenticationError`` on 401, ``BadRequestError`` on 400, ...)."""

    error: OpenAIErrorBody


class Health(BaseModel):
    status: str
    queue: int


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """An ``openapi_extra`` that documents ``model`` as the JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def parse_json_body(body: bytes, model: type[M]) -> M:
    """``body`` as ``model``: 400 for malformed JSON, 422 naming what is wrong otherwise."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HTTPException(400, f"malformed JSON: {err}") from None
    except RecursionError:  # brackets nested past Python's recursion limit
        raise HTTPException(400, "malformed JSON: nested too deeply") from None
    return check_fields(payload, model)


def check_fields(payload: Any, model: type[M]) -> M:
    """A decoded body (or form fields) as ``model``, or 422 naming what is wrong."""
    fields = sorted(model.model_fields)
    if not isinstance(payload, dict):
        raise HTTPException(422, f"the JSON body must be an object with the fields {fields}")
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        hint = (
            " (URLs are not fetched: send the image bytes)"
            if any("url" in k.lower() for k in unknown)
            else ""
        )
        raise HTTPException(422, f"unknown field(s) {unknown}; expected {fields}{hint}")
    try:
        return model.model_validate(payload)
    except ValidationError as err:
        problems = "; ".join(
            f"'{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" for e in err.errors()
        )
        raise HTTPException(422, problems) from None
