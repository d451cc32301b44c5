"""The FastAPI application behind ``factcap serve``.

Rules every request goes through:

* ``/healthz`` is open; everything under ``/v1`` needs the API key (``Authorization: Bearer
  KEY`` or ``X-API-Key: KEY``), compared in constant time → 401 otherwise;
* request bodies over ``max_upload_mb`` → 413 (the ``Content-Length`` header and the bytes
  actually read are both checked);
* images go through :func:`factcap.images.decode` with the config's pixel limit: a
  decompression bomb, an undecodable or unsupported file → 422 with the reason;
* the JSON body takes base64 bytes only: URLs are rejected, never fetched;
* ``/v1/scores`` scores captions of one image with the evaluation metrics (models built
  once at startup from the config's evaluation roles), in a worker thread;
* requests are micro-batched into the pipeline's batches (:class:`~.batcher.Batcher`); when
  the bounded queue is full → 429 with ``Retry-After``.

Example:
    >>> from factcap.config import load_config
    >>> app = create_app(load_config(preset="tiny"), api_key="secret")  # models load at startup
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from factcap.config import STYLES, Config
from factcap.errors import FactcapError, ImageError
from factcap.images import DecodedImage, DecodeLimits, decode
from factcap.inputs import InputItem
from factcap.schema import stable_id
from factcap.serve.batcher import Batcher, QueueFull, ShuttingDown
from factcap.serve.jobs import Job, Jobs, PathRefused

MiB = 1024 * 1024
RETRY_AFTER_S = 1
_JSON_FIELDS = {"image_base64", "styles", "instruction"}
_SCORE_FIELDS = {"image_base64", "captions", "metrics", "references"}
#: metrics ``/v1/scores`` runs when the request names none: those that need no references
DEFAULT_SCORE_METRICS = ("clip_score", "vqa_score")
MAX_SCORE_CAPTIONS = 64
_URL_PREFIXES = ("http://", "https://", "ftp://", "file://", "//", "s3://", "gs://")


class RequestTooLarge(Exception):
    pass


UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed body"},
    401: {"description": "missing or wrong API key"},
    413: {"description": "body over the upload limit"},
    415: {"description": "neither multipart/form-data nor application/json"},
}


async def _upload(request: Request, max_bytes: int) -> tuple[str, bytes]:
    """The body's media type (multipart or JSON, else 415) and its bytes (capped, else 413)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/json"):
        raise HTTPException(415, "send multipart/form-data (field 'image') or application/json")
    return kind, await _read_capped(request, max_bytes)


def create_app(
    config: Config,
    api_key: str | None,
    data_root: Any = None,
    max_upload_mb: float = 20,
    queue_size: int = 64,
    pipeline: Any = None,
    max_wait_ms: float = 5.0,
    jobs_dir: Any = None,
    resources: Any = None,
) -> FastAPI:
    """The service for ``config``'s models (built once at startup, or ``pipeline`` as given).

    ``api_key`` ``None`` leaves ``/v1`` open: only :func:`run` on a loopback host allows that.
    ``data_root`` is the only folder dataset jobs may read (``None``: ``/v1/jobs`` is off);
    their results go to ``jobs_dir`` (default: a new temporary folder); unfinished jobs found
    there are resumed at startup. ``/v1/scores`` uses ``resources`` (default:
    :func:`factcap.evaluate.resources_for` of ``config``, built once).
    """
    max_bytes = int(max_upload_mb * MiB)
    limits = DecodeLimits(max_pixels=config.limits.max_pixels, max_file_bytes=max_bytes)
    expected = api_key.encode() if api_key else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from factcap.engine.executor import serialized
        from factcap.evaluate import resources_for
        from factcap.pipeline.runner import Pipeline

        pipe = pipeline if pipeline is not None else Pipeline(config)
        await run_in_threadpool(pipe.load)  # every model, once, before the first request
        jobs = None
        if data_root is not None:
            # jobs and the caption endpoint share the models: each model one call at a time
            pipe = serialized(pipe)
            folder = Path(jobs_dir) if jobs_dir else Path(tempfile.mkdtemp(prefix="factcap-"))
            jobs = Jobs(pipe, Path(data_root), folder)
            jobs.restore()  # jobs a previous server left unfinished go on
        app.state.resources = resources if resources is not None else resources_for(config)
        app.state.scoring = threading.Lock()  # the metric caches are not thread-safe
        batcher = Batcher(
            pipe, config.batch_size, queue_size=queue_size, max_wait_s=max_wait_ms / 1000.0
        )
        app.state.batcher, app.state.jobs = batcher.start(), jobs
        try:
            yield
        finally:
            await run_in_threadpool(batcher.close)
            if jobs is not None:
                await run_in_threadpool(jobs.close)

    app = FastAPI(
        title="factcap",
        summary="Detailed image captions, fact-checked against the image.",
        lifespan=lifespan,
    )
    app.state.data_root = data_root

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

    @app.exception_handler(RequestTooLarge)
    async def too_large(request: Request, exc: RequestTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.get("/healthz", tags=["service"])
    async def healthz(request: Request) -> dict[str, Any]:
        """Liveness and queue depth; needs no key."""
        batcher = getattr(request.app.state, "batcher", None)
        return {"status": "ok", "queue": batcher.depth if batcher else 0}

    @app.post(
        "/v1/captions",
        tags=["captions"],
        dependencies=[Depends(authorize)],
        responses={
            **UPLOAD_ERRORS,
            422: {"description": "undecodable image, over the pixel limit, or bad fields"},
            429: {"description": "queue full; retry after Retry-After seconds"},
        },
    )
    async def captions(request: Request) -> dict[str, Any]:
        """Caption one image: a multipart upload (field ``image``, optional ``styles`` and
        ``instruction``) or JSON ``{"image_base64", "styles"?, "instruction"?}``. Returns the
        record (the same JSON object as a line of ``factcap caption`` output)."""
        kind, body = await _upload(request, max_bytes)
        if kind == "application/json":
            data, name, styles, instruction = _parse_json(body)
        else:
            data, name, styles, instruction = await _parse_multipart(request, body, max_bytes)
        styles = _check_styles(styles)
        decoded = await run_in_threadpool(_decode, data, limits)
        source = f"upload:{name}" if name else "upload"
        item = InputItem(source=source, id=stable_id("upload", data), image=decoded.image)
        notes = list(decoded.notes)
        if decoded.frames > 1:
            notes.append(f"decoded the first of {decoded.frames} frames")
        batcher: Batcher = request.app.state.batcher
        try:
            future = batcher.submit(item, styles, instruction, notes)
        except QueueFull as err:
            raise HTTPException(
                429, f"{err}; retry later", headers={"Retry-After": str(RETRY_AFTER_S)}
            ) from None
        except ShuttingDown as err:
            raise HTTPException(503, str(err)) from None
        try:
            record = await future
        except ShuttingDown as err:
            raise HTTPException(503, str(err)) from None
        except Exception as err:  # noqa: BLE001 - a pipeline failure, not the client's fault
            raise HTTPException(500, f"captioning failed: {type(err).__name__}: {err}") from None
        result = record.to_dict()
        if decoded.format:
            result.setdefault("extra", {})["format"] = decoded.format
        return result

    @app.post(
        "/v1/scores",
        tags=["scores"],
        dependencies=[Depends(authorize)],
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
        kind, body = await _upload(request, max_bytes)
        if kind == "application/json":
            payload = _json_object(body, _SCORE_FIELDS)
            data = _image_from_base64(payload.get("image_base64"))
        else:
            data, payload = await _score_form(request, body, max_bytes)
        captions, metrics, references = _check_score_fields(payload)
        decoded = await run_in_threadpool(_decode, data, limits)
        lock: threading.Lock = request.app.state.scoring
        res = request.app.state.resources

        def score() -> dict[str, Any]:
            with lock, tempfile.TemporaryDirectory(prefix="factcap-score-") as folder:
                return _score(data, decoded, captions, metrics, references, res, Path(folder))

        return await run_in_threadpool(score)

    def job_list(request: Request) -> Jobs:
        jobs = request.app.state.jobs
        if jobs is None:
            raise HTTPException(404, "dataset jobs are off: start the server with --data-root")
        return jobs

    def find(request: Request, job_id: str) -> Job:
        job = job_list(request).jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    @app.post("/v1/jobs", tags=["jobs"], status_code=201, dependencies=[Depends(authorize)])
    async def create_job(request: Request) -> dict[str, Any]:
        """Caption a dataset (``{"path", "styles"?, "instruction"?}``): a folder, image file
        or manifest that must resolve inside the data root (403 otherwise)."""
        jobs = job_list(request)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise HTTPException(415, 'send application/json: {"path": "folder/under/data-root"}')
        try:
            payload = json.loads(await _read_capped(request, 64 * 1024))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HTTPException(400, f"malformed JSON: {err}") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("path"), str):
            raise HTTPException(422, "the JSON body needs 'path': a string")
        unknown = sorted(set(payload) - {"path", "styles", "instruction"})
        if unknown:
            raise HTTPException(422, f"unknown field(s) {unknown}")
        instruction = payload.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise HTTPException(422, "'instruction' must be a string")
        styles = _check_styles(payload.get("styles"))
        try:
            job = jobs.submit(payload["path"], styles, instruction)
        except PathRefused as err:
            raise HTTPException(403, str(err)) from None
        except FileNotFoundError as err:
            raise HTTPException(404, str(err)) from None
        return job.to_dict()

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], dependencies=[Depends(authorize)])
    async def get_job(request: Request, job_id: str) -> dict[str, Any]:
        """A job's state and progress (``written`` of ``total``)."""
        return find(request, job_id).to_dict()

    @app.get("/v1/jobs/{job_id}/results", tags=["jobs"], dependencies=[Depends(authorize)])
    async def job_results(request: Request, job_id: str) -> StreamingResponse:
        """The records written so far, streamed as JSONL (complete lines only)."""
        job = find(request, job_id)

        def lines() -> Iterator[bytes]:
            with job.results.open("rb") as handle:
                for line in handle:
                    if line.endswith(b"\n"):
                        yield line

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get(
        "/v1/jobs/{job_id}/report",
        tags=["jobs"],
        dependencies=[Depends(authorize)],
        response_class=HTMLResponse,
    )
    async def job_report(request: Request, job_id: str) -> HTMLResponse:
        """The job's HTML report (:func:`factcap.report.build_report`; thumbnails only of
        images inside the data root). While the job runs: a report of the records so far."""
        job = find(request, job_id)

        def build() -> str:
            from factcap.report import build_report

            with tempfile.TemporaryDirectory(prefix="factcap-report-") as folder:
                out = Path(folder) / "report.html"
                build_report(
                    job.results,
                    out_path=out,
                    image_root=Path(data_root),
                    title=f"factcap job {job.id}",
                )
                return out.read_text(encoding="utf-8")

        return HTMLResponse(await run_in_threadpool(build))

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], dependencies=[Depends(authorize)])
    async def delete_job(request: Request, job_id: str) -> JSONResponse:
        """Cancel a job (it stops after its current batch: 202), or forget a finished one and
        delete its results (200)."""
        jobs, job = job_list(request), find(request, job_id)
        jobs.cancel(job)
        if job.state in ("queued", "running"):
            return JSONResponse({**job.to_dict(), "cancelling": True}, status_code=202)
        jobs.jobs.pop(job_id, None)
        shutil.rmtree(job.results.parent, ignore_errors=True)
        return JSONResponse({**job.to_dict(), "deleted": True})

    return app


async def _read_capped(request: Request, max_bytes: int) -> bytes:
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


def _json_object(body: bytes, fields: set[str]) -> dict[str, Any]:
    """The JSON body: an object with only ``fields`` (400 malformed, 422 otherwise)."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HTTPException(400, f"malformed JSON: {err}") from None
    if not isinstance(payload, dict):
        raise HTTPException(422, "the JSON body must be an object with 'image_base64'")
    unknown = sorted(set(payload) - fields)
    if unknown:
        hint = (
            " (URLs are not fetched: send the image bytes)"
            if any("url" in k.lower() for k in unknown)
            else ""
        )
        raise HTTPException(422, f"unknown field(s) {unknown}; expected {sorted(fields)}{hint}")
    return payload


def _image_from_base64(encoded: Any) -> bytes:
    if not isinstance(encoded, str) or not encoded:
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


def _parse_json(body: bytes) -> tuple[bytes, str | None, Any, str | None]:
    payload = _json_object(body, _JSON_FIELDS)
    data = _image_from_base64(payload.get("image_base64"))
    instruction = payload.get("instruction")
    if instruction is not None and not isinstance(instruction, str):
        raise HTTPException(422, "'instruction' must be a string")
    return data, None, payload.get("styles"), instruction


async def _read_form(request: Request, body: bytes, max_bytes: int) -> Any:
    """The multipart form of ``body`` (already read under the cap)."""
    sent = False

    async def replay() -> dict[str, Any]:  # the body was read already, under the cap
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=1, max_fields=16, max_part_size=max_bytes
        )
    except HTTPException:
        raise
    except Exception as err:  # noqa: BLE001 - the multipart parser's own errors
        raise HTTPException(400, f"malformed multipart body: {err}") from None
    return form


async def _parse_multipart(
    request: Request, body: bytes, max_bytes: int
) -> tuple[bytes, str | None, Any, str | None]:
    form = await _read_form(request, body, max_bytes)
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise HTTPException(422, "multipart body needs a file field named 'image'")
    data = await image.read()
    styles: Any = [s for v in form.getlist("styles") if isinstance(v, str) for s in v.split(",")]
    instruction = form.get("instruction")
    return (
        data,
        image.filename,
        styles or None,
        instruction if isinstance(instruction, str) else None,
    )


async def _score_form(
    request: Request, body: bytes, max_bytes: int
) -> tuple[bytes, dict[str, Any]]:
    """The image bytes and the other fields (each a JSON string) of a multipart body."""
    form = await _read_form(request, body, max_bytes)
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise HTTPException(422, "multipart body needs a file field named 'image'")
    unknown = sorted(set(form.keys()) - _SCORE_FIELDS - {"image"})
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
        except json.JSONDecodeError:
            if name == "captions":
                raise HTTPException(422, "'captions' must be a JSON object {name: text}") from None
            payload[name] = [v.strip() for v in value.split(",") if v.strip()]
    return await image.read(), payload


def _check_score_fields(payload: dict[str, Any]) -> tuple[dict[str, str], list[str], list[str]]:
    """(captions, metrics, references) of a ``/v1/scores`` request, or 422 saying why."""
    from factcap.metrics import METRICS

    captions = payload.get("captions")
    if (
        not isinstance(captions, dict)
        or not captions
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in captions.items())
    ):
        raise HTTPException(422, "'captions' is required: an object {name: caption text}")
    if len(captions) > MAX_SCORE_CAPTIONS:
        raise HTTPException(422, f"at most {MAX_SCORE_CAPTIONS} captions per request")
    metrics = payload.get("metrics")
    if metrics is None:
        metrics = list(DEFAULT_SCORE_METRICS)
    if isinstance(metrics, str):
        metrics = [metrics]
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise HTTPException(422, "'metrics' must be a list of metric names")
    metrics = list(dict.fromkeys(metrics))
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise HTTPException(422, f"unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
    references = payload.get("references") or []
    if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
        raise HTTPException(422, "'references' must be a list of strings")
    return captions, metrics, references


def _score(
    data: bytes,
    decoded: DecodedImage,
    captions: dict[str, str],
    metrics: list[str],
    references: list[str],
    resources: Any,
    folder: Path,
) -> dict[str, Any]:
    """Evaluate every caption of one uploaded image (saved to ``folder`` for the metrics)."""
    from factcap.evaluate import evaluate
    from factcap.metrics import Sample

    image = folder / f"upload.{(decoded.format or 'img').lower()}"
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
        out["failures"][row["caption_source"]] = row["failures"]
    return out


def _check_styles(styles: Any) -> list[str] | None:
    if styles is None:
        return None
    if isinstance(styles, str):
        styles = [styles]
    if not isinstance(styles, list) or not all(isinstance(s, str) for s in styles):
        raise HTTPException(422, "'styles' must be a list of strings")
    styles = [s.strip() for s in styles if s.strip()]
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        raise HTTPException(422, f"unknown style(s) {unknown}; choose from {list(STYLES)}")
    return list(dict.fromkeys(styles)) or None


def _decode(data: bytes, limits: DecodeLimits) -> DecodedImage:
    try:
        return decode(data, limits)
    except ImageError as err:
        raise HTTPException(422, {"type": err.kind, "message": str(err)}) from None


# --- running it -----------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse to serve beyond loopback without an API key."""
    if not api_key and not is_loopback(host):
        raise FactcapError(
            f"refusing to listen on {host!r} without an API key: set FACTCAP_API_KEY, "
            "or listen on 127.0.0.1"
        )


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    config: Config | None = None,
    api_key: str | None = None,
    **options: Any,
) -> None:
    """Serve with uvicorn until interrupted (Ctrl-C shuts down gracefully)."""
    import uvicorn

    from factcap.config import load_config

    check_exposure(host, api_key)
    app = create_app(config or load_config(preset="tiny"), api_key, **options)
    uvicorn.run(app, host=host, port=port, log_level="info")


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread on a port the OS picks; yields the
    base URL and shuts the server down gracefully on exit (tests and benchmarks)."""
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server failed to start")
            threading.Event().wait(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def cmd_serve(args: Any) -> int:
    """``factcap serve``: the handler the CLI calls."""
    import os

    from factcap.config import load_config

    config = load_config(path=args.config, preset=args.preset)
    api_key = os.environ.get("FACTCAP_API_KEY") or None
    run(
        args.host,
        args.port,
        config=config,
        api_key=api_key,
        data_root=args.data_root,
        max_upload_mb=args.max_upload_mb,
        queue_size=args.queue_size,
        jobs_dir=args.jobs_dir,
    )
    return 0
