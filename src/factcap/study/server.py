"""``factcap study serve``: the raters' web page and its JSON API (FastAPI).

A rater opens a personal link ``/r/{token}`` (the token is an unguessable
``secrets.token_urlsafe(16)`` from the study's database), sees an image and two captions
"A" and "B", and answers which describes the image more accurately and in more detail
(buttons or keys 1 / 2 / 3). Progress is kept in the database, so a rater can stop and come
back where they stopped. Crowd platforms send participants to ``/start?PROLIFIC_PID=...``,
which binds the participant to a free rater slot (the same slot when they come back).

Routes (every error answers ``{"detail": "one line"}``):

===============================================  ============================================
``GET /r/{token}``                               the rater page (404 page for an unknown token)
``GET /api/r/{token}/next``                      the next unanswered item and the progress
``POST /api/r/{token}/vote``                     ``{"assignment_id", "choice", "elapsed_ms"?}``
                                                 → 200; 403 another rater's item; 409 a repeat;
                                                 422 a bad body
``GET /api/r/{token}/image/{assignment_id}``     that rater's own item's image, nothing else
``GET /start?PROLIFIC_PID=...``                  claim a rater slot, redirect to its page
``GET /admin``, ``GET /api/admin/progress``      progress per rater, behind the API key
===============================================  ============================================

Security: the API key (when set) is read from ``Authorization: Bearer KEY``,
``X-API-Key: KEY`` or ``?key=KEY`` and compared in constant time; images are served only
from the path the database holds for that rater's assignment, resolved and refused outside
the study folder; no source (model) name ever reaches a rater; captions are inserted with
``textContent``; every answer carries ``Content-Security-Policy: default-src 'self'``,
``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` (the token in the
page's address does not leak). Without an API key the server only answers requests whose
``Host`` is a loopback name (DNS rebinding), and :func:`run` refuses to listen beyond
loopback without one.

Example:
    >>> from factcap.study.server import is_loopback
    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, False)
    >>> # app = create_app(Path("my-study"), api_key="secret")
    >>> # run(Path("my-study"), host="0.0.0.0", port=8300, api_key="secret")
"""

from __future__ import annotations

import mimetypes
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from factcap.access import check_exposure, is_loopback, key_checker
from factcap.errors import FactcapError, NotFound, UsageError, require

require("fastapi", "serve")

from fastapi import Depends, FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import (  # noqa: E402
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402

from factcap.study.store import MAX_ID, StudyStore  # noqa: E402
from factcap.text.sanitize import display_safe, display_text  # noqa: E402

__all__ = ["create_app", "is_loopback", "run"]

#: The page's own files, served from the package (``GET /static/{name}``); nothing else is.
STATIC_FILES = {
    "rater.js": "text/javascript; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
    "study.css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: The largest request body taken (a vote is about 80 bytes).
MAX_BODY_BYTES = 4096
#: A crowd participant id as platforms send them (Prolific: 24 hex digits).
_PARTICIPANT = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _loopback_host(header: str) -> bool:
    """Whether a ``Host`` header names this machine (``localhost:8300``, ``[::1]:80``...).

    >>> _loopback_host("127.0.0.1:8300"), _loopback_host("[::1]"), _loopback_host("evil.test")
    (True, True, False)
    """
    host = header[1 : header.find("]")] if header.startswith("[") else header.rsplit(":", 1)[0]
    return is_loopback(host)


def _small_body(length: str | None) -> bool:
    """Whether a request's ``Content-Length`` is at most :data:`MAX_BODY_BYTES` (a POST
    without one is refused before this: 411).

    >>> _small_body(None), _small_body("80"), _small_body("5000"), _small_body("-1")
    (True, True, False, False)
    """
    if length is None:
        return True
    return length.isdigit() and int(length) <= MAX_BODY_BYTES


class VoteBody(BaseModel):
    """A rater's answer to one assignment: ``left`` is caption "A", ``right`` is "B"."""

    model_config = ConfigDict(extra="forbid")

    assignment_id: int = Field(ge=1, le=MAX_ID)
    choice: Literal["left", "right", "same"]
    elapsed_ms: int | None = Field(default=None, ge=0, le=86_400_000)


def _is_image(path: Path) -> bool:
    """Whether ``path``'s header is an image format Pillow reads (a study made before images
    were checked may hold any file a record named); the header only, so it is cheap."""
    from PIL import Image

    try:
        with Image.open(path) as picture:
            return picture.format is not None
    except Exception:  # noqa: BLE001 - any failure to read a header: not served
        return False


def _static(name: str) -> bytes:
    return resources.files("factcap.study").joinpath("static", name).read_bytes()


def _page(title: str, message: str, status: int) -> HTMLResponse:
    """A small HTML page for a person (an unknown link, a full study, a missing key)."""
    import html

    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<link rel="stylesheet" href="/static/study.css"></head>'
        f'<body><main class="message"><h1>{html.escape(title)}</h1>'
        f"<p>{html.escape(message)}</p></main></body></html>"
    )
    return HTMLResponse(body, status_code=status)


def create_app(study_dir: Path, api_key: str | None) -> FastAPI:
    """The rater web app of the study in ``study_dir`` (``factcap study create`` wrote it).

    ``api_key`` guards the admin routes; ``None`` leaves them open and only answers requests
    addressed to a loopback host name (:func:`run` allows that only on loopback).
    Raises :class:`~factcap.errors.NotFound` / :class:`~factcap.errors.DataError` when
    ``study_dir`` is not a study.

    Example:
        >>> import tempfile
        >>> from factcap.errors import DataError
        >>> try:
        ...     create_app(Path(tempfile.mkdtemp()), None)
        ... except (NotFound, DataError):
        ...     print("not a study folder")
        not a study folder
    """
    store = StudyStore.open(study_dir)
    root = Path(study_dir).resolve()
    question = str(store.info.get("question") or "Which caption describes the image better?")
    completion_code = store.info.get("completion_code") or None
    pages = {name: _static(name) for name in ("rater.html", "admin.html")}
    statics = {name: (_static(name), kind) for name, kind in STATIC_FILES.items()}
    authorize = key_checker(
        api_key, allow_query=True, hint="send 'Authorization: Bearer KEY' or open /admin?key=KEY"
    )

    app = FastAPI(title="factcap study", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if api_key is None and not _loopback_host(request.headers.get("host", "")):
            response: Response = JSONResponse(
                {"detail": "without an API key this server answers loopback host names only"},
                status_code=421,
            )
        elif request.method == "POST" and "content-length" not in request.headers:
            response = JSONResponse({"detail": "send the body with a Content-Length"}, 411)
        elif not _small_body(request.headers.get("content-length")):
            response = JSONResponse(
                {"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413
            )
        else:
            response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")  # images and static say theirs
        return response

    @app.exception_handler(FactcapError)
    async def factcap_error(request: Request, exc: FactcapError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.http_status)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
        ]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    def rater_of(token: str) -> Any:
        rater = store.rater(token)
        if rater is None:
            raise NotFound("no rater has this link: check the address you were given")
        return rater

    # ---- the rater's page and API ------------------------------------------------------------

    @app.get("/r/{token}", include_in_schema=False)
    def rater_page(token: str) -> Response:
        if store.rater(token) is None:
            return _page(
                "Link not found", "This study link is not valid: check the address you got.", 404
            )
        return HTMLResponse(pages["rater.html"])

    @app.get("/api/r/{token}/next")
    def next_item(token: str) -> dict[str, Any]:
        rater_of(token)
        item = store.next_assignment(token)
        done, total = store.progress(token)
        out: dict[str, Any] = {"assignment": None, "done": done, "total": total}
        if item is None:
            if completion_code:
                out["completion_code"] = completion_code
            return out
        out["assignment"] = {
            "id": item.id,
            "image_url": f"/api/r/{token}/image/{item.id}",
            "left": display_text(item.left_caption),  # a study made before captions were
            "right": display_text(item.right_caption),  # cleaned may hold bidi overrides
            "position": item.position,
        }
        out["question"] = display_text(question)
        return out

    @app.post("/api/r/{token}/vote")
    def vote(token: str, body: VoteBody) -> dict[str, Any]:
        rater = rater_of(token)
        crowd = bool(rater.external_id)
        store.vote(
            token,
            body.assignment_id,
            body.choice,
            origin="crowd" if crowd else "web",
            worker_id=rater.external_id if crowd else None,
            elapsed_ms=body.elapsed_ms,
        )
        done, total = store.progress(token)
        return {"ok": True, "done": done, "total": total}

    @app.get("/api/r/{token}/image/{assignment_id}", include_in_schema=False)
    def image(token: str, assignment_id: int) -> FileResponse:
        rater_of(token)
        item = store.assignment(assignment_id)
        if item is None or item.token != token:
            raise NotFound("no such image for this link")
        path = (root / item.image).resolve()
        kind = mimetypes.guess_type(path.name)[0] or ""
        if not path.is_relative_to(root) or not kind.startswith("image/") or not path.is_file():
            raise NotFound("this item's image is missing from the study folder")
        if not _is_image(path):
            raise NotFound("this item's file is not an image")
        return FileResponse(
            path, media_type=kind, headers={"Cache-Control": "private, max-age=3600"}
        )

    @app.get("/start", include_in_schema=False)
    def start(request: Request) -> Response:
        pid = request.query_params.get("PROLIFIC_PID") or request.query_params.get("pid") or ""
        if not _PARTICIPANT.fullmatch(pid):
            return _page(
                "Missing participant id",
                "Open this study from the link on the crowd platform (it adds PROLIFIC_PID).",
                400,
            )
        try:
            rater = store.claim(pid)
        except FactcapError as err:
            return _page("Study full", str(err), err.http_status)
        return RedirectResponse(f"/r/{rater.token}", status_code=303)

    # ---- static files --------------------------------------------------------------------------

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in statics:
            raise NotFound(f"no static file {name!r}")
        data, kind = statics[name]
        return Response(data, media_type=kind, headers={"Cache-Control": "no-cache"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # no icon, and no 404 in the browser's console

    # ---- the admin's page and API ---------------------------------------------------------------

    @app.get("/admin", include_in_schema=False)
    def admin_page(request: Request) -> Response:
        try:
            authorize(request)
        except HTTPException as err:
            return _page(
                "API key needed", "Open this page as /admin?key=YOUR_KEY.", err.status_code
            )
        return HTMLResponse(pages["admin.html"])

    @app.get("/api/admin/progress", dependencies=[Depends(authorize)])
    def admin_progress() -> dict[str, Any]:
        raters = display_safe(store.progress_all())  # crowd ids come from CSV files
        return {
            "raters": raters,
            "done": sum(r["done"] for r in raters),
            "total": sum(r["total"] for r in raters),
            "completion_code": completion_code,
        }

    return app


def run(
    study_dir: Path, host: str = "127.0.0.1", port: int = 8300, api_key: str | None = None
) -> None:
    """Serve the study with uvicorn until interrupted; refuses to listen beyond loopback
    without ``api_key`` (the admin page lists every rater's link).

    Example:
        >>> run(Path("."), host="0.0.0.0")
        Traceback (most recent call last):
        factcap.errors.UsageError: refusing to listen on '0.0.0.0' without an API key: set FACTCAP_API_KEY, or listen on 127.0.0.1
    """
    check_exposure(host, api_key)
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be from 1 to 65535, not {port}")
    import uvicorn

    app = create_app(Path(study_dir), api_key)
    uvicorn.run(app, host=host, port=port, log_level="info")
