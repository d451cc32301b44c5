"""``POST /v1/scores``: score captions of one image with the evaluation metrics."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from factcap.images import DecodedImage
from factcap.schema import stable_id
from factcap.serve.schemas import (
    ScoreRequest,
    ScoresOut,
    json_body_schema,
)
from factcap.serve.state import service
from factcap.serve.uploads import UPLOAD_ERRORS, decode_upload, image_request

#: metrics run when the request names none: those that need no references
DEFAULT_SCORE_METRICS = ("clip_score", "vqa_score")
MAX_SCORE_CAPTIONS = 64
router = APIRouter(tags=["scores"])


@router.post(
    "/v1/scores",
    response_model=ScoresOut,
    openapi_extra=json_body_schema(ScoreRequest),
    responses={
        **UPLOAD_ERRORS,
        422: {"description": "undecodable image, unknown metric, or bad fields"},
    },
)
async def scores(request: Request) -> dict[str, Any]:
    """Score captions of one image: JSON ``{"image_base64", "captions": {name: text},
    "metrics"?: [...], "references"?: [...]}`` or multipart (file ``image``; ``captions``,
    ``metrics`` and ``references`` as JSON strings). Default metrics: those that need no
    references (``clip_score``, ``vqa_score``). Returns ``{"id", "metrics": {name:
    {value: number|null}}, "failures": {name: {metric: reason}}}``."""
    svc = service(request)
    req, data, _ = await image_request(request, svc.max_bytes, ScoreRequest, _form_fields)
    captions, metrics, references = _checked(req)
    decoded = await run_in_threadpool(decode_upload, data, svc.limits)

    def score() -> dict[str, Any]:
        with svc.scoring, tempfile.TemporaryDirectory(prefix="factcap-score-") as folder:
            return _score(data, decoded, captions, metrics, references, svc.resources, folder)

    return await run_in_threadpool(score)


def _form_fields(form: Any) -> dict[str, Any]:
    """The non-file fields of a multipart scores request, each a JSON string (metrics may
    also be comma-separated names)."""
    unknown = sorted(set(form.keys()) - set(ScoreRequest.model_fields) - {"image"})
    if unknown:
        raise HTTPException(422, f"unknown field(s) {unknown}")
    payload: dict[str, Any] = {}
    for name in ("captions", "metrics", "references"):
        value = form.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise HTTPException(422, f"'{name}' must be a JSON string field, not a file")
        try:
            payload[name] = json.loads(value)
        except RecursionError:
            raise HTTPException(422, f"'{name}': JSON nested too deeply") from None
        except json.JSONDecodeError:
            if name == "captions":
                raise HTTPException(422, "'captions' must be a JSON object {name: text}") from None
            payload[name] = [v.strip() for v in value.split(",") if v.strip()]
    return payload


def _checked(req: ScoreRequest) -> tuple[dict[str, str], list[str], list[str]]:
    """(captions, metrics, references) of a request, or 422 saying why."""
    from factcap.metrics import metric_names

    if not req.captions:
        raise HTTPException(422, "'captions' is required: an object {name: caption text}")
    if len(req.captions) > MAX_SCORE_CAPTIONS:
        raise HTTPException(422, f"at most {MAX_SCORE_CAPTIONS} captions per request")
    metrics = req.metrics if req.metrics is not None else list(DEFAULT_SCORE_METRICS)
    metrics = list(dict.fromkeys([metrics] if isinstance(metrics, str) else metrics))
    known = metric_names()
    unknown = [m for m in metrics if m not in known]
    if unknown or not metrics:
        raise HTTPException(422, f"unknown metric(s) {unknown}; choose from {known}")
    return dict(req.captions), metrics, list(req.references or [])


def _score(
    data: bytes,
    decoded: DecodedImage,
    captions: dict[str, str],
    metrics: list[str],
    references: list[str],
    resources: Any,
    folder: str,
) -> dict[str, Any]:
    """Evaluate every caption of one uploaded image (saved in ``folder`` for the metrics;
    the folder's path never reaches the client)."""
    from factcap.evaluate import evaluate
    from factcap.metrics import Sample

    image = Path(folder) / f"upload.{(decoded.format or 'img').lower()}"
    image.write_bytes(data)
    sample_id = stable_id("upload", data)
    samples = [
        Sample(
            id=sample_id,
            source=str(image),
            caption_source=name,
            caption=text,
            references=list(references),
        )
        for name, text in captions.items()
    ]
    try:
        evaluation = evaluate(samples, metrics, resources)
    finally:  # the image is gone after this request: drop its cached embedding
        resources.forget(str(image))
    out: dict[str, Any] = {"id": sample_id, "metrics": {}, "failures": {}}
    for row in evaluation.rows():
        out["metrics"][row["caption_source"]] = row["metrics"]
        out["failures"][row["caption_source"]] = {
            k: v.replace(str(image), "the upload") for k, v in row["failures"].items()
        }
    return out
