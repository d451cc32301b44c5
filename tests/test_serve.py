"""The HTTP service: every safety rule, micro-batching and the bounded queue.

Fast tests run a real uvicorn server (or FastAPI's TestClient) over a pipeline whose backends
are scripted (the far side of the role boundary); one slow test serves the real tiny preset.

Batching, the queue, shutdown and jobs are driven by a gate in the first captioner that the
test opens (:class:`GatedCaptioner`), never by sleeps: the test knows which batch is running
and which requests are queued, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from factcap.config import load_config
from factcap.errors import FactcapError
from factcap.pipeline.models import Models
from factcap.pipeline.runner import Pipeline
from factcap.serve.app import check_exposure, create_app, is_loopback, run, serve_in_thread
from scripted import ScriptedCaptioner, ScriptedDetector, ScriptedLLM, ScriptedVQA

ODD = Path(__file__).parent / "data" / "odd-images"
KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CLAIMS = '[{"kind": "object", "text": "There is a cat.", "subject": "cat"}]'


WAIT_S = 60.0  # the most a test waits for something that should happen (then it fails)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds (never expected)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not so after {timeout:g} s")
        time.sleep(0.01)


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """:func:`wait_until` inside an event loop (the loop keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not so after {timeout:g} s")
        await asyncio.sleep(0.01)


class GatedCaptioner(ScriptedCaptioner):
    """A scripted captioner whose calls from the ``hold_from``-th on wait until the test
    :meth:`open`s the gate (``None``: it never holds). ``waiting`` counts the calls held now,
    so a test knows exactly when a batch is running, and so which requests are queued."""

    def __init__(self, name: str, text: str, hold_from: int | None = None):
        super().__init__(name, text)
        self.hold_from = hold_from
        self.waiting = 0
        self._started = 0
        self._opened = threading.Event()
        self._lock = threading.Lock()

    def open(self) -> None:
        self._opened.set()

    def caption(self, images, prompt=None):
        with self._lock:
            self._started += 1
            hold = self.hold_from is not None and self._started >= self.hold_from
            self.waiting += hold
        if hold:
            try:
                if not self._opened.wait(4 * WAIT_S):  # a test that forgot to open it
                    raise RuntimeError("the test never opened the captioner's gate")
            finally:
                with self._lock:
                    self.waiting -= 1
        return super().caption(images, prompt)


def scripted_pipeline(
    batch_size: int = 4, hold_from: int | None = None, **overrides: Any
) -> Pipeline:
    """Scripted backends; the first captioner is a :class:`GatedCaptioner` (``gate(pipe)``)."""
    config = load_config(preset="tiny", overrides={"batch_size": batch_size, **overrides})
    models = Models(
        config,
        built={
            "captioner:0": (
                GatedCaptioner("cap-a", "A grey cat on a sofa.", hold_from),
                batch_size,
            ),
            "captioner:1": (ScriptedCaptioner("cap-b", "A cat next to a lamp."), batch_size),
            "llm": (ScriptedLLM(CLAIMS, "A grey cat sits on a sofa."), batch_size),
            "detector": (ScriptedDetector(["cat"]), batch_size),
            "vqa": (ScriptedVQA(lambda q: 0.9), batch_size),
        },
    )
    return Pipeline(config, models=models)


def gate(pipe: Pipeline) -> GatedCaptioner:
    return pipe.models["captioner:0"].backend


def png_bytes(size: tuple[int, int] = (48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buf, "PNG")
    return buf.getvalue()


def photo_bytes() -> bytes:
    from factcap.examples import example_paths

    return Path(example_paths()[0]).read_bytes()  # a real photo, as a client would upload it


@pytest.fixture
def client():
    pipe = scripted_pipeline()
    app = create_app(pipe.config, KEY, pipeline=pipe, max_upload_mb=1)
    with TestClient(app) as c:
        c.pipe = pipe
        yield c


# --- happy paths ---------------------------------------------------------------------------


def test_alt_text_field_becomes_a_checked_proposal(client):
    data = base64.b64encode(photo_bytes()).decode()
    body = {"image_base64": data, "alt_text": "A cat on the Golden Gate Bridge"}
    r = client.post("/v1/captions", headers=AUTH, json=body)
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["proposals"][-1] == {"model": "alt_text", "text": "A cat on the Golden Gate Bridge"}
    prompts = [c[-1]["content"] for call in client.pipe.models["llm"].backend.calls for c in call]
    assert any("web alt-text" in p for p in prompts)  # the claims prompt says what it is
    r = client.post(
        "/v1/captions",
        headers=AUTH,
        files={"image": ("cat.jpg", photo_bytes(), "image/jpeg")},
        data={"alt_text": "Chelsea the cat"},
    )
    assert r.status_code == 200 and r.json()["proposals"][-1]["text"] == "Chelsea the cat"


def test_a_question_needs_a_service_that_takes_questions(client):
    data = base64.b64encode(photo_bytes()).decode()
    r = client.post("/v1/captions", headers=AUTH, json={"image_base64": data, "question": "Why?"})
    assert r.status_code == 422 and "question: {field: question}" in r.json()["detail"]
    pipe = scripted_pipeline(question={"field": "question"})
    with TestClient(create_app(pipe.config, KEY, pipeline=pipe)) as asking:
        body = {"image_base64": data, "question": "Is there a cat?"}
        r = asking.post("/v1/captions", headers=AUTH, json=body)
        assert r.status_code == 200, r.text
        rec = r.json()
        assert rec["question"]["text"] == "Is there a cat?" and "question" in rec["captions"]
        answer = rec["question"]["answer"]
        assert answer["yes_no"] is True and answer["vqa_p_yes"] == 0.9


def test_multipart_upload_returns_the_record(client):
    data = photo_bytes()
    r = client.post(
        "/v1/captions",
        headers=AUTH,
        files={"image": ("cat.jpg", data, "image/jpeg")},
        data={"styles": "detailed,alt", "instruction": "Be brief."},
    )
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["status"] == "ok" and rec["error"] is None
    assert rec["source"] == "upload:cat.jpg"
    assert sorted(rec["captions"]) == ["alt", "detailed", "instruction"]
    prompts = [
        conv[-1]["content"] for call in client.pipe.models["llm"].backend.calls for conv in call
    ]
    assert any("Be brief." in p for p in prompts)  # the instruction reached the composer
    assert [p["model"] for p in rec["proposals"]] == ["cap-a", "cap-b"]
    assert rec["claims"][0]["verdict"] == "supported"
    with Image.open(io.BytesIO(data)) as im:
        assert rec["image_size"] == list(im.size)


def test_json_base64_returns_the_record_and_same_id_for_same_bytes(client):
    data = png_bytes()
    body = {"image_base64": base64.b64encode(data).decode(), "styles": ["short"]}
    r1 = client.post("/v1/captions", headers=AUTH, json=body)
    r2 = client.post("/v1/captions", headers={"X-API-Key": KEY}, json=body)
    assert r1.status_code == r2.status_code == 200, r1.text
    assert list(r1.json()["captions"]) == ["short"]
    assert r1.json()["id"] == r2.json()["id"]
    assert r1.json()["image_size"] == [48, 40]


def test_openapi_page_is_served_with_the_key_and_documents_the_bodies(client):
    assert client.get("/openapi.json").status_code == 401  # a key is set: docs need it too
    assert client.get("/docs").status_code == 401
    assert client.get("/docs", headers=AUTH).status_code == 200
    r = client.get("/openapi.json", headers=AUTH)
    assert r.status_code == 200
    spec = r.json()
    caption = spec["paths"]["/v1/captions"]["post"]
    body = caption["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["image_base64"] and "styles" in body["properties"]
    answer = caption["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert (
        answer.endswith("/RecordOut")
        and "claims" in spec["components"]["schemas"]["RecordOut"]["properties"]
    )
    assert "/healthz" in spec["paths"] and "/v1/jobs/{job_id}" in spec["paths"]


def test_openapi_page_is_open_without_a_key():
    pipe = scripted_pipeline()
    with TestClient(create_app(pipe.config, None, pipeline=pipe)) as c:
        assert c.get("/openapi.json").status_code == 200


# --- auth ----------------------------------------------------------------------------------


def test_healthz_needs_no_key(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": "wrong"},
        {"Authorization": KEY},  # no Bearer scheme
        {"X-API-Key": KEY[:-1]},
        {"X-API-Key": KEY + "x"},
    ],
)
def test_missing_or_wrong_key_is_401(client, headers):
    r = client.post("/v1/captions", headers=headers, json={"image_base64": "AAAA"})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert client.pipe.models["captioner:0"].backend.calls == []


def test_no_key_configured_leaves_v1_open():
    pipe = scripted_pipeline()
    with TestClient(create_app(pipe.config, None, pipeline=pipe)) as c:
        b64 = base64.b64encode(png_bytes()).decode()
        assert c.post("/v1/captions", json={"image_base64": b64}).status_code == 200


# --- bad input -----------------------------------------------------------------------------


def test_oversized_upload_is_413_by_header(client):
    big = b"\0" * (1024 * 1024 + 10)
    r = client.post("/v1/captions", headers=AUTH, files={"image": ("big.png", big)})
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_oversized_upload_is_413_by_bytes_read_without_content_length(client):
    def chunks():  # a chunked upload: no Content-Length at all
        for _ in range(20):
            yield b"A" * 65536

    headers = {**AUTH, "Content-Type": "application/json"}
    r = client.post("/v1/captions", headers=headers, content=chunks())
    assert r.status_code == 413


def test_lying_content_length_is_caught_on_the_bytes_read(client):
    # a small declared length with a large body: the server must stop at the cap
    body = b'{"image_base64": "' + b"A" * (2 * 1024 * 1024) + b'"}'
    r = client.post(
        "/v1/captions",
        headers={**AUTH, "Content-Type": "application/json", "Content-Length": "10"},
        content=body,
    )
    assert r.status_code in (400, 413)  # never a 200 from a truncated or oversized body


def test_decompression_bomb_is_422_with_reason(client):
    data = (ODD / "decompression_bomb.gif").read_bytes()
    r = client.post("/v1/captions", headers=AUTH, files={"image": ("bomb.gif", data)})
    assert r.status_code == 422
    assert r.json()["detail"]["type"] == "DecompressionBomb"
    assert "pixels" in r.json()["detail"]["message"]


def test_pixel_limit_is_422_with_reason():
    pipe = scripted_pipeline()
    config = load_config(preset="tiny", overrides={"limits": {"max_pixels": 1000}})
    with TestClient(create_app(config, KEY, pipeline=pipe)) as c:
        r = c.post("/v1/captions", headers=AUTH, files={"image": ("a.png", png_bytes())})
        assert r.status_code == 422
        assert r.json()["detail"]["type"] == "DecompressionBomb"
        assert "1000" in r.json()["detail"]["message"].replace(",", "").replace("_", "")
        ok = c.post("/v1/captions", headers=AUTH, files={"image": ("s.png", png_bytes((20, 20)))})
        assert ok.status_code == 200


@pytest.mark.parametrize("name", ["broken.png", "broken_data_stream.png"])
def test_broken_image_is_422(client, name):
    data = (ODD / name).read_bytes()
    r = client.post("/v1/captions", headers=AUTH, files={"image": (name, data)})
    assert r.status_code == 422
    assert r.json()["detail"]["type"] in ("CorruptImage", "UnsupportedFormat")


def test_not_an_image_is_422(client):
    b64 = base64.b64encode(b"hello, I am text").decode()
    r = client.post("/v1/captions", headers=AUTH, json={"image_base64": b64})
    assert r.status_code == 422 and r.json()["detail"]["type"] == "UnsupportedFormat"


def test_malformed_json_is_400(client):
    headers = {**AUTH, "Content-Type": "application/json"}
    r = client.post("/v1/captions", headers=headers, content=b'{"image_base64": ')
    assert r.status_code == 400 and "malformed JSON" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ([1, 2], "object"),
        ({}, "image_base64"),
        ({"image_base64": 5}, "image_base64"),
        ({"image_base64": "not base64!!"}, "base64"),
        ({"image_base64": "AAAA", "styles": ["poem"]}, "unknown style"),
        ({"image_base64": "AAAA", "styles": "detailed", "instruction": 3}, "instruction"),
        ({"image_base64": "AAAA", "extra_field": 1}, "unknown field"),
    ],
)
def test_bad_json_fields_are_422_with_a_message(client, body, needle):
    r = client.post("/v1/captions", headers=AUTH, json=body)
    assert r.status_code == 422 and needle in str(r.json()["detail"])


@pytest.mark.parametrize("content_type", ["text/plain", "image/png", "application/xml", ""])
def test_wrong_content_type_is_415(client, content_type):
    headers = {**AUTH, "Content-Type": content_type}
    r = client.post("/v1/captions", headers=headers, content=png_bytes())
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]


def test_multipart_without_image_field_is_422(client):
    r = client.post("/v1/captions", headers=AUTH, files={"photo": ("a.png", png_bytes())})
    assert r.status_code == 422 and "'image'" in r.json()["detail"]


def test_urls_are_rejected_not_fetched(client):
    hits = []

    class Trap(threading.Thread):  # a local server that records any fetch
        pass

    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(png_bytes())

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    Trap(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/cat.png"
    try:
        for body in ({"image_base64": url}, {"image_url": url}, {"url": url}):
            r = client.post("/v1/captions", headers=AUTH, json=body)
            assert r.status_code == 422, body
            assert "URL" in str(r.json()["detail"]) or "url" in str(r.json()["detail"])
    finally:
        srv.shutdown()
    assert hits == []


# --- micro-batching, the bounded queue, shutdown ------------------------------------------


CAPTION_BODY = {"image_base64": base64.b64encode(png_bytes()).decode()}


def _post(base: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/captions", headers=AUTH, json=CAPTION_BODY, timeout=4 * WAIT_S)


@contextmanager
def uvicorn_server(app) -> Iterator[tuple[str, object]]:
    """Like ``serve_in_thread``, but hands the test the server (the one ``factcap serve``
    runs), so it can tell it to stop and see when it has stopped listening."""
    import socket

    from factcap.serve.app import make_server

    sock = socket.socket(socket.AF_INET)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_server(app, log_level="warning", lifespan="on")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "the server started")
        assert server.started, "the server failed to start"
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(4 * WAIT_S)
        sock.close()


def test_concurrent_requests_are_micro_batched():
    pipe = scripted_pipeline(batch_size=4, hold_from=1)
    held = gate(pipe)
    app = create_app(pipe.config, KEY, pipeline=pipe, queue_size=32, max_wait_ms=20)
    with serve_in_thread(app) as base, ThreadPoolExecutor(9) as pool:
        try:
            futures = [pool.submit(_post, base)]  # runs alone, held in the captioner
            wait_until(lambda: held.waiting == 1, "the first request is running")
            futures += [pool.submit(_post, base) for _ in range(8)]
            wait_until(lambda: app.state.service.batcher.depth == 8, "eight requests are queued")
        finally:
            held.open()
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200] * 9
    # the eight that waited together ran as two full batches, not one by one
    assert held.calls == [1, 4, 4]  # one captioner call per pipeline batch
    assert app.state.service.batcher.batches == held.calls
    llm_calls = pipe.models["llm"].backend.calls
    assert len(llm_calls) == 2 * len(held.calls)  # extract + compose, once per batch


def test_full_queue_is_429_with_retry_after():
    pipe = scripted_pipeline(batch_size=2, hold_from=1)
    held = gate(pipe)
    app = create_app(pipe.config, KEY, pipeline=pipe, queue_size=2)
    with serve_in_thread(app) as base, ThreadPoolExecutor(12) as pool:
        try:
            accepted = [pool.submit(_post, base)]  # in the worker, held
            wait_until(lambda: held.waiting == 1, "one request is running")
            accepted += [pool.submit(_post, base) for _ in range(2)]
            wait_until(lambda: app.state.service.batcher.depth == 2, "the queue is full")
            # a batch in the worker and a full queue: nine more are refused at once
            refused = list(pool.map(lambda _: _post(base), range(9)))
        finally:
            held.open()
        answered = [f.result() for f in accepted]
    assert [r.status_code for r in refused] == [429] * 9
    for r in refused:
        assert int(r.headers["Retry-After"]) >= 1
    assert [r.status_code for r in answered] == [200] * 3
    assert sum(held.calls) == 3 and app.state.service.batcher.batches == [1, 2]


def test_shutdown_finishes_the_running_batch_and_cancels_the_queue():
    """README: "Shutdown finishes the running batch and cancels queued requests with 503",
    as Ctrl-C or SIGTERM stops ``factcap serve``."""
    import signal

    pipe = scripted_pipeline(batch_size=2, hold_from=1)
    held = gate(pipe)
    app = create_app(pipe.config, KEY, pipeline=pipe, queue_size=8)
    with ThreadPoolExecutor(4) as pool:
        with uvicorn_server(app) as (base, server):
            try:
                futures = [pool.submit(_post, base)]
                wait_until(lambda: held.waiting == 1, "the first batch is running")
                futures += [pool.submit(_post, base) for _ in range(3)]
                wait_until(lambda: app.state.service.batcher.depth == 3, "three more are queued")
                server.handle_exit(signal.SIGTERM, None)  # told to stop with all four in flight
                wait_until(lambda: app.state.service.batcher.closing, "the batcher is closing")
            finally:
                held.open()
        responses = [f.result() for f in futures]
    assert [r.status_code for r in responses] == [200, 503, 503, 503]
    assert all("shut down" in r.json()["detail"] for r in responses[1:])
    assert app.state.service.batcher.batches == [1]
    assert not app.state.service.batcher._thread.is_alive()


def test_shutdown_cancels_queued_requests_with_503():
    """README: "Shutdown finishes the running batch and cancels queued requests with 503":
    the app's own shutdown (its lifespan's end) with one batch running and three queued."""
    pipe = scripted_pipeline(batch_size=1, hold_from=1)
    held = gate(pipe)
    app = create_app(pipe.config, KEY, pipeline=pipe, queue_size=8)

    async def scenario() -> tuple[httpx.Response, list[httpx.Response]]:
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://factcap") as client:

            def post() -> asyncio.Task:
                return asyncio.ensure_future(
                    client.post("/v1/captions", headers=AUTH, json=CAPTION_BODY)
                )

            try:
                running = post()
                await until(lambda: held.waiting == 1, "the first request is running")
                queued = [post() for _ in range(3)]
                await until(lambda: app.state.service.batcher.depth == 3, "three are queued")
                shutdown = asyncio.ensure_future(lifespan.__aexit__(None, None, None))
                # the batcher stops taking work, then waits for the running batch
                await until(lambda: app.state.service.batcher.closing, "the batcher is closing")
            finally:
                held.open()
            await shutdown
            return await running, list(await asyncio.gather(*queued))

    running, queued = asyncio.run(scenario())
    assert running.status_code == 200 and running.json()["status"] == "ok"
    assert [r.status_code for r in queued] == [503] * 3
    assert all("shut down before this request ran" in r.json()["detail"] for r in queued)
    assert held.calls == [1] and app.state.service.batcher.batches == [1]


def test_batcher_close_cancels_queued_work():
    from factcap.inputs import InputItem
    from factcap.serve.batcher import Batcher, ShuttingDown

    pipe = scripted_pipeline(batch_size=1, hold_from=1)
    held = gate(pipe)

    async def scenario():
        batcher = Batcher(pipe, max_batch=1, queue_size=8).start()
        item = InputItem(source="x", id="x", image=Image.new("RGB", (8, 8)))
        futures = [batcher.submit(item)]
        try:
            await until(lambda: held.waiting == 1, "the first one is running")
            futures += [batcher.submit(item) for _ in range(3)]
            closing = asyncio.ensure_future(asyncio.to_thread(batcher.close))
            await until(lambda: batcher.closing, "close() is waiting for the batch")
            with pytest.raises(ShuttingDown):
                batcher.submit(item)
        finally:
            held.open()
        await closing
        return await asyncio.gather(*futures, return_exceptions=True)

    results = asyncio.run(scenario())
    assert results[0].status == "ok"
    assert all(isinstance(r, ShuttingDown) for r in results[1:])
    assert held.calls == [1]  # the queued ones never ran


# --- starting up ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.1.2.3"])
def test_loopback_hosts(host):
    assert is_loopback(host)
    check_exposure(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_non_loopback_without_key_refuses_to_start(host, monkeypatch):
    assert not is_loopback(host)
    check_exposure(host, "a-key")
    started = []
    monkeypatch.setattr("factcap.serve.app.make_server", lambda *a, **k: started.append(a))
    with pytest.raises(FactcapError, match="without an API key"):
        run(host, 8000, config=load_config(preset="tiny"), api_key=None)
    assert started == []


def test_cli_handler_refuses_a_public_host_without_key(monkeypatch):
    from argparse import Namespace

    from factcap.cli.serve import run as cmd_serve

    monkeypatch.delenv("FACTCAP_API_KEY", raising=False)
    args = Namespace(
        host="0.0.0.0",
        port=8000,
        preset="tiny",
        config=None,
        max_upload_mb=20,
        data_root=None,
        queue_size=64,
        jobs_dir=None,
        image_url_host=[],
    )
    with pytest.raises(FactcapError, match="FACTCAP_API_KEY"):
        cmd_serve(args)


# --- the real tiny models ------------------------------------------------------------------


@pytest.mark.slow
def test_real_tiny_preset_serves_captions():
    app = create_app(load_config(preset="tiny"), KEY)
    with serve_in_thread(app) as base:
        body = {"image_base64": base64.b64encode(photo_bytes()).decode()}
        r = httpx.post(f"{base}/v1/captions", headers=AUTH, json=body, timeout=300)
        assert r.status_code == 200, r.text
        rec = r.json()
        assert rec["status"] == "ok" and rec["captions"]["detailed"].strip()
        assert len(rec["proposals"]) == 2 and rec["models"]["llm"] == "tiny:llm"
        bad = httpx.post(
            f"{base}/v1/captions",
            headers=AUTH,
            files={"image": ("b.gif", (ODD / "decompression_bomb.gif").read_bytes())},
        )
        assert bad.status_code == 422


# --- dataset jobs --------------------------------------------------------------------------


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    (root / "set").mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (30 + i, 20), (i * 40, 90, 200)).save(root / "set" / f"{i}.png")
    outside = tmp_path / "private"
    outside.mkdir()
    Image.new("RGB", (16, 16)).save(outside / "secret.png")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "list.txt").write_text(f"{root / 'set' / '0.png'}\n{outside / 'secret.png'}\n")
    return root


def jobs_client(root: Path, tmp_path: Path, batch_size: int = 4, hold_from: int | None = None):
    pipe = scripted_pipeline(batch_size=batch_size, hold_from=hold_from)
    app = create_app(pipe.config, KEY, data_root=root, pipeline=pipe, jobs_dir=tmp_path / "jobs")
    client = TestClient(app)
    client.pipe = pipe
    return client


def wait_for(client: TestClient, job_id: str, states=("done", "failed", "cancelled")) -> dict:
    deadline = time.monotonic() + WAIT_S
    while True:
        job = client.get(f"/v1/jobs/{job_id}", headers=AUTH).json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never reached {states}: {job}")
        time.sleep(0.02)


def open_when_cancelled(held: GatedCaptioner, job) -> threading.Thread:
    """Open ``held`` once ``job`` is told to stop (by a DELETE, or by the server shutting
    down): the batch it holds then finishes, and the job stops after it."""

    def run() -> None:
        job.cancel.wait(4 * WAIT_S)
        held.open()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_job_runs_and_streams_jsonl_results(data_root, tmp_path):
    with jobs_client(data_root, tmp_path) as c:
        r = c.post("/v1/jobs", headers=AUTH, json={"path": "set", "styles": ["short"]})
        assert r.status_code == 201, r.text
        job = wait_for(c, r.json()["id"])
        assert job["state"] == "done" and job["total"] == job["written"] == 5
        res = c.get(f"/v1/jobs/{job['id']}/results", headers=AUTH)
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("application/x-ndjson")
        records = [json.loads(line) for line in res.text.splitlines()]
        assert sorted(Path(rec["source"]).name for rec in records) == [f"{i}.png" for i in range(5)]
        assert all(rec["status"] == "ok" and list(rec["captions"]) == ["short"] for rec in records)
        # one pipeline batch of 4 and one of 1: the job went through run_job's batches
        assert c.pipe.models["captioner:0"].backend.calls == [4, 1]
        gone = c.delete(f"/v1/jobs/{job['id']}", headers=AUTH)
        assert gone.status_code == 200 and gone.json()["deleted"]
        assert c.get(f"/v1/jobs/{job['id']}", headers=AUTH).status_code == 404


def _shard(path: Path, n: int) -> None:
    import tarfile

    with tarfile.open(path, "w") as tar:
        for i in range(n):
            data = png_bytes((20 + i, 16))
            info = tarfile.TarInfo(f"s{i:03d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("kind", ["webdataset", "parquet"])
def test_jobs_read_tar_shards_and_parquet_files_streamed(data_root, tmp_path, kind):
    if kind == "webdataset":
        name = "shard-000.tar"
        _shard(data_root / name, 6)
    else:
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        name = "rows.parquet"
        images = [png_bytes((20 + i, 16)) for i in range(6)]
        pq.write_table(
            pa.table({"image": images, "caption": [f"c{i}" for i in range(6)]}), data_root / name
        )
    with jobs_client(data_root, tmp_path) as c:
        r = c.post("/v1/jobs", headers=AUTH, json={"path": name})
        assert r.status_code == 201, r.text
        job = wait_for(c, r.json()["id"])
        assert job["state"] == "done" and job["total"] == job["written"] == 6, job
        text = c.get(f"/v1/jobs/{job['id']}/results", headers=AUTH).text
        records = [json.loads(line) for line in text.splitlines()]
        assert [r["status"] for r in records] == ["ok"] * 6
        assert {r["image_size"][0] for r in records} == set(range(20, 26))
        assert all(r["source"].startswith(f"{name}#") for r in records), records[0]["source"]
        assert str(tmp_path) not in text  # no path of the server's own in the results


@pytest.mark.parametrize(
    "path",
    [
        "../private",
        "set/../../private/secret.png",
        "escape",  # a symlink out of the data root
        "escape/secret.png",
        "..%2Fprivate",
        "%2e%2e/private",
        "%252e%252e%252fprivate",  # encoded twice
        "http://127.0.0.1:1/images",
        "file:///etc",
    ],
)
def test_job_paths_outside_the_data_root_are_403(data_root, tmp_path, path):
    with jobs_client(data_root, tmp_path) as c:
        r = c.post("/v1/jobs", headers=AUTH, json={"path": path})
        assert r.status_code == 403, r.text
        assert c.app.state.service.jobs.jobs == {}


def test_absolute_job_paths_outside_are_403_inside_are_allowed(data_root, tmp_path):
    with jobs_client(data_root, tmp_path) as c:
        out = c.post("/v1/jobs", headers=AUTH, json={"path": str(tmp_path / "private")})
        assert out.status_code == 403
        assert c.post("/v1/jobs", headers=AUTH, json={"path": "/etc"}).status_code == 403
        inside = c.post("/v1/jobs", headers=AUTH, json={"path": str(data_root / "set")})
        assert inside.status_code == 201
        assert wait_for(c, inside.json()["id"])["written"] == 5


def test_manifest_naming_files_outside_gives_error_records(data_root, tmp_path):
    with jobs_client(data_root, tmp_path) as c:
        r = c.post("/v1/jobs", headers=AUTH, json={"path": "list.txt"})
        job = wait_for(c, r.json()["id"])
        assert job["written"] == 2 and job["errors"] == 1
        lines = c.get(f"/v1/jobs/{job['id']}/results", headers=AUTH).text.splitlines()
        by_name = {Path(rec["source"]).name: rec for rec in map(json.loads, lines)}
        assert by_name["0.png"]["status"] == "ok"
        assert by_name["secret.png"]["error"]["type"] == "Forbidden"


def test_job_errors_and_auth(data_root, tmp_path):
    with jobs_client(data_root, tmp_path) as c:
        assert c.post("/v1/jobs", json={"path": "set"}).status_code == 401
        assert c.get("/v1/jobs/abc", headers={"X-API-Key": "no"}).status_code == 401
        assert c.get("/v1/jobs/abc", headers=AUTH).status_code == 404
        assert c.post("/v1/jobs", headers=AUTH, json={"path": "nope"}).status_code == 404
        assert c.post("/v1/jobs", headers=AUTH, json={"dir": "set"}).status_code == 422
        bad = c.post("/v1/jobs", headers={**AUTH, "Content-Type": "application/json"}, content="{")
        assert bad.status_code == 400
        assert c.post("/v1/jobs", headers=AUTH, data={"path": "set"}).status_code == 415
    pipe = scripted_pipeline()
    with TestClient(create_app(pipe.config, KEY, pipeline=pipe)) as c:  # no data root
        r = c.post("/v1/jobs", headers=AUTH, json={"path": "set"})
        assert r.status_code == 404 and "--data-root" in r.json()["detail"]


def test_delete_cancels_a_running_job(data_root, tmp_path):
    for i in range(5, 16):
        Image.new("RGB", (20, 20)).save(data_root / "set" / f"{i}.png")
    with jobs_client(data_root, tmp_path, batch_size=2, hold_from=2) as c:
        held = gate(c.pipe)
        job_id = c.post("/v1/jobs", headers=AUTH, json={"path": "set"}).json()["id"]
        open_when_cancelled(held, c.app.state.service.jobs.jobs[job_id])
        wait_for(c, job_id, states=("running",))
        wait_until(lambda: held.waiting == 1, "the job's second batch is running")
        r = c.delete(f"/v1/jobs/{job_id}", headers=AUTH)
        assert r.status_code == 202 and r.json()["cancelling"]
        job = wait_for(c, job_id)
        assert job["state"] == "cancelled" and job["total"] == 16
        assert 0 < job["written"] < 16


def test_symlinked_file_inside_a_folder_is_refused_per_item(data_root, tmp_path):
    (data_root / "set" / "link.png").symlink_to(tmp_path / "private" / "secret.png")
    with jobs_client(data_root, tmp_path) as c:
        job = wait_for(c, c.post("/v1/jobs", headers=AUTH, json={"path": "set"}).json()["id"])
        lines = c.get(f"/v1/jobs/{job['id']}/results", headers=AUTH).text.splitlines()
        by_name = {Path(rec["source"]).name: rec for rec in map(json.loads, lines)}
        assert job["written"] == 6 and by_name["link.png"]["error"]["type"] == "Forbidden"
        assert by_name["1.png"]["status"] == "ok"


# --- caption scores ------------------------------------------------------------------------


class ThreadVQA(ScriptedVQA):
    """Answers by caption (``cat`` → 0.8, else 0.1) and records the thread it ran in."""

    def __init__(self):
        super().__init__(lambda q: 0.8 if "cat" in q else 0.1)
        self.threads: list[str] = []

    def yes_probability(self, images, questions):
        self.threads.append(threading.current_thread().name)
        assert all(im.size == (48, 40) for im in images)  # the uploaded image, decoded
        return super().yes_probability(images, questions)


@pytest.fixture
def score_client():
    from factcap.metrics.resources import Resources

    pipe = scripted_pipeline()
    vqa = ThreadVQA()
    builds = []
    resources = Resources({"vqa": lambda: builds.append(1) or vqa}, batch_size=8)
    app = create_app(pipe.config, KEY, pipeline=pipe, max_upload_mb=1, resources=resources)
    with TestClient(app) as c:
        c.vqa, c.builds = vqa, builds
        yield c


def test_scores_json_default_metrics(score_client):
    body = {
        "image_base64": base64.b64encode(png_bytes()).decode(),
        "captions": {"final": "A grey cat on a sofa.", "proposal": "A red car."},
    }
    r = score_client.post("/v1/scores", headers=AUTH, json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["metrics"]["final"]["vqa_score"] == pytest.approx(0.8)
    assert out["metrics"]["proposal"]["vqa_score"] == pytest.approx(0.1)
    # no embedder configured: CLIP-S is null with the reason, not a crash
    assert out["metrics"]["final"]["clip_score"] is None
    assert "embedder" in out["failures"]["final"]["clip_score"]
    assert "vqa_score" not in out["failures"]["final"]
    # ran in a worker thread, not on the event loop; each caption source is one batch
    assert score_client.vqa.threads and all("worker" in t.lower() for t in score_client.vqa.threads)
    assert [len(q) for q in score_client.vqa.calls] == [1, 1]
    again = score_client.post("/v1/scores", headers=AUTH, json=body).json()
    assert again == out
    assert score_client.builds == [1]  # the metric models are built once, not per request


def test_scores_multipart_with_metrics_and_references(score_client):
    r = score_client.post(
        "/v1/scores",
        headers=AUTH,
        files={"image": ("x.png", png_bytes(), "image/png")},
        data={
            "captions": json.dumps({"a": "a grey cat on a sofa"}),
            "metrics": json.dumps(["bleu", "vqa_score"]),
            "references": json.dumps(["a grey cat on a sofa", "a cat sitting"]),
        },
    )
    assert r.status_code == 200, r.text
    values = r.json()["metrics"]["a"]
    assert set(values) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "vqa_score"}
    assert values["bleu_1"] == pytest.approx(1.0) and values["vqa_score"] == pytest.approx(0.8)
    assert r.json()["failures"] == {"a": {}}


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"captions": {"a": "x"}, "metrics": ["nope"]}, 422, "unknown metric"),
        ({"captions": {}}, 422, "captions"),
        ({"captions": {"a": 3}}, 422, "captions"),
        ({"captions": {"a": "x"}, "references": "a ref"}, 422, "references"),
        ({"captions": {"a": "x"}, "image_url": "http://x"}, 422, "URLs are not fetched"),
    ],
)
def test_scores_bad_fields_are_422(score_client, body, status, needle):
    body = {"image_base64": base64.b64encode(png_bytes()).decode(), **body}
    r = score_client.post("/v1/scores", headers=AUTH, json=body)
    assert r.status_code == status and needle in json.dumps(r.json()), r.text
    assert score_client.vqa.calls == []


def test_scores_auth_limits_and_bad_images(score_client):
    body = {"image_base64": base64.b64encode(png_bytes()).decode(), "captions": {"a": "x"}}
    assert score_client.post("/v1/scores", json=body).status_code == 401
    bad = {**body, "image_base64": base64.b64encode(b"not an image").decode()}
    assert score_client.post("/v1/scores", headers=AUTH, json=bad).status_code == 422
    big = {**body, "image_base64": base64.b64encode(b"\0" * (2 * 1024 * 1024)).decode()}
    assert score_client.post("/v1/scores", headers=AUTH, json=big).status_code == 413
    assert score_client.post("/v1/scores", headers=AUTH, data={"a": "b"}).status_code == 415
    assert score_client.vqa.calls == []


def test_scores_resources_come_from_the_config_once():
    pipe = scripted_pipeline()
    with TestClient(create_app(pipe.config, KEY, pipeline=pipe)) as c:
        resources = c.app.state.service.resources
        assert resources.available("embedder") and resources.available("vqa")
        assert resources._built == {}  # built lazily, on the first request that needs them


# --- job reports and restarts ----------------------------------------------------------------


def test_job_report_is_html_with_thumbnails(data_root, tmp_path):
    with jobs_client(data_root, tmp_path) as c:
        job = wait_for(c, c.post("/v1/jobs", headers=AUTH, json={"path": "set"}).json()["id"])
        r = c.get(f"/v1/jobs/{job['id']}/report", headers=AUTH)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert r.text.count("data:image/") >= 5 and "A grey cat sits on a sofa." in r.text
        assert c.get(f"/v1/jobs/{job['id']}/report").status_code == 401
        assert c.get("/v1/jobs/nope/report", headers=AUTH).status_code == 404


def test_report_does_not_embed_images_outside_the_data_root(data_root, tmp_path):
    with jobs_client(data_root, tmp_path) as c:
        job = wait_for(c, c.post("/v1/jobs", headers=AUTH, json={"path": "list.txt"}).json()["id"])
        html = c.get(f"/v1/jobs/{job['id']}/report", headers=AUTH).text
        assert html.count("data:image/") == 1  # 0.png only: secret.png stays out


def test_a_running_job_survives_a_server_restart(data_root, tmp_path):
    for i in range(5, 16):
        Image.new("RGB", (20, 20)).save(data_root / "set" / f"{i}.png")
    with jobs_client(data_root, tmp_path, batch_size=2, hold_from=2) as c:
        held = gate(c.pipe)
        job_id = c.post("/v1/jobs", headers=AUTH, json={"path": "set", "styles": ["short"]})
        job_id = job_id.json()["id"]
        # the second batch is held until the server shuts down (below, leaving the block)
        open_when_cancelled(held, c.app.state.service.jobs.jobs[job_id])
        wait_until(lambda: held.waiting == 1, "the job's second batch is running")
        wait_until(
            lambda: c.get(f"/v1/jobs/{job_id}", headers=AUTH).json()["written"] >= 2,
            "the first batch is written",
        )
    # graceful shutdown: the job stopped after its current batch and is left to resume
    saved = json.loads((tmp_path / "jobs" / job_id / "job.json").read_text())
    assert saved["state"] == "interrupted" and saved["styles"] == ["short"]
    before = (tmp_path / "jobs" / job_id / "results.jsonl").read_text().splitlines()
    assert 0 < len(before) < 16
    with jobs_client(data_root, tmp_path, batch_size=2) as c:
        job = wait_for(c, job_id)
        assert job["state"] == "done" and job["total"] == job["written"] == 16
        lines = c.get(f"/v1/jobs/{job_id}/results", headers=AUTH).text.splitlines()
        records = [json.loads(line) for line in lines]
        names = sorted(Path(rec["source"]).name for rec in records)
        assert names == sorted(f"{i}.png" for i in range(16))  # each input exactly once
        assert len({rec["id"] for rec in records}) == 16 and lines[: len(before)] == before
        assert all(list(rec["captions"]) == ["short"] for rec in records)
        # the new server captioned only what was left
        assert sum(c.pipe.models["captioner:0"].backend.calls) == 16 - len(before)
    assert json.loads((tmp_path / "jobs" / job_id / "job.json").read_text())["state"] == "done"


def test_cancelled_and_finished_jobs_are_listed_not_resumed_after_restart(data_root, tmp_path):
    # the first job's five batches pass; the second job's first batch is held
    with jobs_client(data_root, tmp_path, batch_size=1, hold_from=6) as c:
        held = gate(c.pipe)
        done = wait_for(c, c.post("/v1/jobs", headers=AUTH, json={"path": "set"}).json()["id"])
        stopped = c.post("/v1/jobs", headers=AUTH, json={"path": "set"}).json()["id"]
        open_when_cancelled(held, c.app.state.service.jobs.jobs[stopped])
        wait_for(c, stopped, states=("running",))
        wait_until(lambda: held.waiting == 1, "the second job's first batch is running")
        assert c.delete(f"/v1/jobs/{stopped}", headers=AUTH).status_code == 202
        assert wait_for(c, stopped)["state"] == "cancelled"
    with jobs_client(data_root, tmp_path) as c:
        assert c.get(f"/v1/jobs/{done['id']}", headers=AUTH).json()["state"] == "done"
        assert c.get(f"/v1/jobs/{stopped}", headers=AUTH).json()["state"] == "cancelled"
        # restore() starts a thread for every job it resumes, before the server is up
        assert all(job.thread is None for job in c.app.state.service.jobs.jobs.values())
        assert c.pipe.models["captioner:0"].backend.calls == []  # nothing ran again


@pytest.mark.slow
def test_real_tiny_models_score_captions(tmp_path):
    from factcap.evaluate import evaluate
    from factcap.metrics import Sample

    pipe = scripted_pipeline()  # the captioning side is not under test here
    with TestClient(create_app(load_config(preset="tiny"), KEY, pipeline=pipe)) as c:
        body = {
            "image_base64": base64.b64encode(photo_bytes()).decode(),
            "captions": {"a": "A cat on a sofa.", "b": "Two red cars on a road."},
        }
        first = c.post("/v1/scores", headers=AUTH, json=body)
        assert first.status_code == 200, first.text
        out = first.json()
        for name in ("a", "b"):
            assert out["failures"][name] == {}
        built = dict(c.app.state.service.resources._built)
        assert set(built) == {"embedder", "vqa"}
        assert c.post("/v1/scores", headers=AUTH, json=body).json() == out  # deterministic
        assert c.app.state.service.resources._built == built  # the same models, not rebuilt
        # each caption's numbers are what the metrics give for that caption and this image
        image = tmp_path / "photo.jpg"
        image.write_bytes(photo_bytes())
        samples = [
            Sample(id="photo", source=str(image), caption_source=name, caption=text)
            for name, text in body["captions"].items()
        ]
        direct = evaluate(samples, ["clip_score", "vqa_score"], c.app.state.service.resources)
        expected = {row["caption_source"]: row["metrics"] for row in direct.rows()}
        assert set(expected) == {"a", "b"}
        for name, values in expected.items():
            assert values == pytest.approx(out["metrics"][name], abs=1e-6), name
        assert out["metrics"]["a"] != out["metrics"]["b"]  # two captions, two scores
