"""The FastAPI application behind ``factcap serve``: models load once, routers do the rest.

Rules every request goes through:

* ``/healthz`` is open; everything else, the API docs (``/docs``, ``/openapi.json``)
  included, needs the API key when the service has one (``Authorization: Bearer KEY`` or
  ``X-API-Key: KEY``, compared in constant time) → 401 otherwise;
* request bodies over ``max_upload_mb`` → 413 (the ``Content-Length`` header and the bytes
  actually read are both checked);
* images go through :func:`factcap.images.decode` with the config's pixel limit: a
  decompression bomb, an undecodable or unsupported file → 422 with the reason;
* the JSON bodies take base64 bytes only: URLs are rejected, never fetched — but for the
  chat route's ``image_url``, fetched (size- and time-capped) from the hosts of the
  ``image_url_hosts`` allow-list, which is empty unless the service is started with one;
* every error factcap raises on purpose answers with its ``http_status``
  (:mod:`factcap.errors`);
* requests are micro-batched into the pipeline's batches (:class:`~.batcher.Batcher`); when
  the bounded queue is full → 429 with ``Retry-After``.

The routes live in :mod:`factcap.serve.routes` (``health``, ``captions``, ``scores``,
``jobs``, and ``chat``: the OpenAI chat API over the captions route's path, answering errors in
OpenAI's shape), their bodies in :mod:`factcap.serve.schemas`.

Example:
    >>> from factcap.config import load_config
    >>> app = create_app(load_config(preset="tiny"), api_key="secret")  # models load at startup
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from factcap.access import check_exposure, host_patterns, is_loopback
from factcap.config import Config
from factcap.errors import FactcapError
from factcap.images import DecodeLimits
from factcap.serve.batcher import Batcher
from factcap.serve.jobs import Jobs
from factcap.serve.options import ServeOptions
from factcap.serve.routes import captions, chat, health, jobs, scores
from factcap.serve.security import key_checker
from factcap.serve.state import Service
from factcap.serve.uploads import MiB

__all__ = [
    "check_exposure",
    "create_app",
    "is_loopback",
    "make_server",
    "run",
    "serve_in_thread",
]


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
    image_url_hosts: tuple[str, ...] = (),
) -> FastAPI:
    """The service for ``config``'s models (built once at startup, or ``pipeline`` as given).

    ``api_key`` ``None`` leaves everything open: only :func:`run` on a loopback host allows
    that. ``data_root`` is the only folder dataset jobs may read (``None``: ``/v1/jobs`` is
    off); their results go to ``jobs_dir`` (default: a new temporary folder); unfinished jobs
    found there are resumed at startup. ``/v1/scores`` uses ``resources`` (default:
    :func:`factcap.evaluate.resources_for` of ``config``, built once). ``image_url_hosts``
    (:func:`factcap.access.host_patterns`) are the hosts whose image URLs the chat route
    fetches; empty, it refuses URLs.
    """
    max_bytes = int(max_upload_mb * MiB)
    svc = Service(
        config=config,
        max_bytes=max_bytes,
        limits=DecodeLimits(max_pixels=config.limits.max_pixels, max_file_bytes=max_bytes),
        data_root=Path(data_root) if data_root is not None else None,
        image_url_hosts=host_patterns(image_url_hosts),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from factcap.engine.executor import serialized
        from factcap.evaluate import resources_for
        from factcap.pipeline.runner import Pipeline

        pipe = pipeline if pipeline is not None else Pipeline(config)
        await run_in_threadpool(pipe.load)  # every model, once, before the first request
        if svc.data_root is not None:
            # jobs and the caption endpoint share the models: each model one call at a time
            pipe = serialized(pipe)
            folder = Path(jobs_dir) if jobs_dir else Path(tempfile.mkdtemp(prefix="factcap-"))
            svc.jobs = Jobs(pipe, svc.data_root, folder)
            svc.jobs.restore()  # jobs a previous server left unfinished go on
        svc.resources = resources if resources is not None else resources_for(config)
        svc.batcher = Batcher(
            pipe, config.batch_size, queue_size=queue_size, max_wait_s=max_wait_ms / 1000.0
        ).start()
        try:
            yield
        finally:
            await run_in_threadpool(svc.batcher.close)
            if svc.jobs is not None:
                await run_in_threadpool(svc.jobs.close)

    authorize = key_checker(api_key)
    locked = api_key is not None
    app = FastAPI(
        title="factcap",
        summary="Detailed image captions, fact-checked against the image.",
        lifespan=lifespan,
        docs_url=None if locked else "/docs",
        redoc_url=None,
        openapi_url=None if locked else "/openapi.json",
    )
    app.state.service = svc

    @app.exception_handler(FactcapError)
    async def factcap_error(request: Request, exc: FactcapError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    app.include_router(health.router)
    for router in (captions.router, scores.router, jobs.router, chat.router):
        app.include_router(router, dependencies=[Depends(authorize)])
    if locked:  # the API docs need the key too
        _locked_docs(app, authorize)
    return app


def _locked_docs(app: FastAPI, authorize: Any) -> None:
    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authorize)])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(authorize)])
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="factcap API")


def make_server(app: FastAPI, **config: Any) -> Any:
    """A ``uvicorn.Server`` for ``app`` (``config``: ``uvicorn.Config``'s options) that, the
    moment shutdown starts (Ctrl-C, SIGTERM, ``handle_exit``), answers the queued caption
    requests 503 and lets the running batch finish, instead of working off the whole queue
    first."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            svc = getattr(app.state, "service", None)
            if svc is not None and svc.batcher is not None:
                svc.batcher.cancel_queued()
            super().handle_exit(sig, frame)

    return Server(uvicorn.Config(app, **config))


def run(
    host: str = "127.0.0.1",
    port: int = 8000,
    config: Config | None = None,
    api_key: str | None = None,
    **options: Any,
) -> None:
    """Serve with uvicorn until interrupted (Ctrl-C shuts down gracefully). The options are
    checked (:class:`~factcap.serve.options.ServeOptions`) before any model loads."""
    from factcap.config import load_config

    checked = ServeOptions(
        host=host,
        port=port,
        api_key=api_key,
        max_upload_mb=options.pop("max_upload_mb", 20.0),
        queue_size=options.pop("queue_size", 64),
        data_root=options.pop("data_root", None),
        jobs_dir=options.pop("jobs_dir", None),
        image_url_hosts=options.pop("image_url_hosts", ()),
    ).checked()
    app = create_app(
        config or load_config(preset="tiny"),
        api_key,
        data_root=checked.data_root,
        max_upload_mb=checked.max_upload_mb,
        queue_size=checked.queue_size,
        jobs_dir=checked.jobs_dir,
        image_url_hosts=checked.image_url_hosts,
        **options,
    )
    make_server(app, host=host, port=port, log_level="info").run()


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread on a port the OS picks; yields the
    base URL and shuts the server down on exit as Ctrl-C would (tests and benchmarks)."""
    import signal
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = make_server(app, log_level="warning", lifespan="on")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server failed to start")
            threading.Event().wait(0.02)
        yield f"http://{host}:{port}"
    finally:
        server.handle_exit(signal.SIGINT, None)
        thread.join(60)
        sock.close()
