"""``factcap serve`` speaks OpenAI's chat API (issue 32): real clients — the official ``openai``
SDK, sync and async, streaming and not, and ``curl`` — against a server on loopback.

The fast tests serve scripted backends (``test_serve.scripted_pipeline``); the queue tests hold
the first batch in a gate the test opens, never sleep. The slow test serves the real tiny
preset and checks that the SDK's caption is the one ``POST /v1/captions`` writes.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest

from factcap.config import load_config
from factcap.errors import UsageError
from factcap.pipeline.models import Models
from factcap.pipeline.runner import Pipeline
from factcap.serve.app import create_app, serve_in_thread
from factcap.serve.options import ServeOptions
from scripted import Exploding
from test_serve import (
    AUTH,
    KEY,
    WAIT_S,
    gate,
    photo_bytes,
    png_bytes,
    scripted_pipeline,
    until,
)

CAPTION = "A grey cat sits on a sofa."  # what the scripted LLM composes, in every style
STYLES = {"alt", "detailed", "fused", "short", "t2i", "instruction"}


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def messages(*parts: dict[str, Any], text: str = "Describe this image.") -> list[dict[str, Any]]:
    """One user message: ``text`` and ``parts`` (default: one PNG as a data URL)."""
    parts = parts or (image_part(data_url(png_bytes())),)
    return [{"role": "user", "content": [{"type": "text", "text": text}, *parts]}]


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def sdk(base: str, key: str = KEY, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=retries)


def async_sdk(base: str, retries: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=retries)


def count_statuses(app: Any, path: str) -> Counter:
    """A counter of the statuses ``app`` answers on ``path`` (kept by the server, so the SDK's
    own retries are counted too)."""
    seen: Counter = Counter()

    class Counting:
        def __init__(self, inner: Any):
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            async def counted(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start" and scope.get("path") == path:
                    seen[message["status"]] += 1
                await send(message)

            await self.inner(scope, receive, counted)

    app.add_middleware(Counting)
    return seen


def without_timings(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "timings_ms"}


@pytest.fixture(scope="module")
def served() -> Iterator[SimpleNamespace]:
    """Scripted backends behind a real server on loopback (1 MiB upload limit)."""
    pipe = scripted_pipeline()
    app = create_app(pipe.config, KEY, pipeline=pipe, max_upload_mb=1)
    with serve_in_thread(app) as base:
        yield SimpleNamespace(base=base, app=app, pipe=pipe)


def caption_record(base: str, image: bytes, styles: list[str]) -> dict[str, Any]:
    body = {"image_base64": base64.b64encode(image).decode(), "styles": styles}
    r = httpx.post(f"{base}/v1/captions", headers=AUTH, json=body, timeout=4 * WAIT_S)
    assert r.status_code == 200, r.text
    return r.json()


# --- the models --------------------------------------------------------------------------


def test_models_are_the_styles_in_openai_list_shape(served):
    client = sdk(served.base)
    listed = client.models.list()
    assert {m.id for m in listed.data} == {f"factcap-{s}" for s in STYLES}
    assert all(m.object == "model" and m.owned_by == "factcap" for m in listed.data)
    assert client.models.retrieve("factcap-short").id == "factcap-short"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4o")
    assert err.value.response.json()["error"]["code"] == "model_not_found"
    raw = httpx.get(f"{served.base}/v1/models", headers=AUTH).json()
    assert raw["object"] == "list" and isinstance(raw["data"], list)
    spec = httpx.get(f"{served.base}/openapi.json", headers=AUTH).json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    assert "messages" in chat["requestBody"]["content"]["application/json"]["schema"]["required"]
    assert "factcap" in spec["components"]["schemas"]["ChatCompletionOut"]["properties"]


def test_an_unknown_model_is_not_found_with_the_choices(served):
    with pytest.raises(openai.NotFoundError) as err:
        sdk(served.base).chat.completions.create(model="gpt-4o", messages=messages())
    assert "factcap-detailed" in err.value.message


# --- the SDK: sync and async, streaming and not -------------------------------------------


def test_sdk_answers_the_caption_of_v1_captions_with_the_record(served):
    image = photo_bytes()
    record = caption_record(served.base, image, ["short"])
    completion = sdk(served.base).chat.completions.create(
        model="factcap-short", messages=messages(image_part(data_url(image, "image/jpeg")))
    )
    assert completion.object == "chat.completion" and completion.model == "factcap-short"
    [choice] = completion.choices
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == record["captions"]["short"] == CAPTION
    extension = completion.model_extra["factcap"]
    assert without_timings(extension) == without_timings(record)  # the same record, all of it
    assert extension["claims"][0]["verdict"] == "supported"
    assert completion.usage.prompt_tokens == 0
    assert completion.usage.completion_tokens == len(CAPTION.split())
    # a generic tool's prompt is not an instruction for a style model: said, not applied
    [said] = completion.model_extra["warnings"]
    assert "not used" in said and "factcap-instruction" in said


def test_sdk_streams_the_caption_as_one_chunk_then_done(served):
    stream = sdk(served.base).chat.completions.create(
        model="factcap-detailed",
        messages=messages(),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)  # the SDK stops at data: [DONE]
    assert [c.object for c in chunks] == ["chat.completion.chunk"] * 3
    first, last, usage = chunks
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == CAPTION and first.choices[0].finish_reason is None
    assert last.choices[0].finish_reason == "stop" and not last.choices[0].delta.content
    assert last.model_extra["factcap"]["captions"]["detailed"] == CAPTION
    assert usage.choices == [] and usage.usage.completion_tokens == len(CAPTION.split())
    assert len({c.id for c in chunks}) == 1


def test_async_sdk_streaming_and_not(served):
    async def scenario() -> tuple[Any, list[Any]]:
        client = async_sdk(served.base)
        done = await client.chat.completions.create(model="factcap-alt", messages=messages())
        stream = await client.chat.completions.create(
            model="factcap-alt", messages=messages(), stream=True
        )
        return done, [chunk async for chunk in stream]

    done, chunks = asyncio.run(scenario())
    assert done.choices[0].message.content == CAPTION
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == CAPTION
    assert [c.choices[0].finish_reason for c in chunks] == [None, "stop"]
    assert chunks[-1].model_extra["factcap"]["status"] == "ok"


def test_instruction_model_follows_the_prompt(served):
    llm = served.pipe.models["llm"].backend
    before = len(llm.calls)
    completion = sdk(served.base).chat.completions.create(
        model="factcap-instruction",
        messages=[
            {"role": "system", "content": "You caption photos for a catalogue."},
            *messages(text="Name the colours you see."),
        ],
    )
    assert completion.choices[0].message.content == CAPTION
    record = completion.model_extra["factcap"]
    assert "instruction" in record["captions"]
    prompts = [conv[-1]["content"] for call in llm.calls[before:] for conv in call]
    assert any("Name the colours you see." in p and "catalogue" in p for p in prompts)
    assert completion.model_extra["warnings"] == []
    with pytest.raises(openai.BadRequestError) as err:
        sdk(served.base).chat.completions.create(
            model="factcap-instruction", messages=messages(text="")
        )
    assert err.value.code == "no_prompt"


def test_sampling_fields_are_accepted_and_named_in_warnings(served):
    completion = sdk(served.base).chat.completions.create(
        model="factcap-detailed",
        messages=messages(),
        temperature=0,
        top_p=0.9,
        max_tokens=300,
        seed=1,
        frequency_penalty=0.1,
        presence_penalty=0.1,
        logprobs=False,
        user="someone",
        n=2,
        stop=[" sits", "zzz"],
        response_format={"type": "text"},
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        extra_body={"top_k": 40, "repetition_penalty": 1.1},
    )
    assert [c.message.content for c in completion.choices] == ["A grey cat"] * 2  # stop, n
    assert [c.index for c in completion.choices] == [0, 1]
    said = " ".join(completion.model_extra["warnings"])
    for field in ("temperature", "top_p", "max_tokens", "seed", "top_k", "repetition_penalty"):
        assert f"{field}: not applied" in said
    assert "tools: not supported; ignored" in said and "n=2" in said
    for quiet in ("user", "logprobs", "response_format"):  # a label, unset, the default
        assert quiet not in said


# --- errors in OpenAI's shape, raised by the SDK as it raises OpenAI's ---------------------


def _shape(err: openai.APIStatusError) -> dict[str, Any]:
    error = err.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


BAD = {
    "no image": (messages(image_part(data_url(png_bytes())))[0]["content"][:1], "no_image"),
    "two images": (
        [image_part(data_url(png_bytes())), image_part(data_url(png_bytes((20, 20))))],
        "several_images",
    ),
    "a 3D asset": ([image_part("data:model/gltf-binary;base64,Z2xURgIAAAA=")], "not_an_image"),
    "a video": ([image_part("data:video/mp4;base64,AAAAGGZ0eXA=")], "not_an_image"),
    "a file part": (
        [
            {
                "type": "file",
                "file": {"file_data": "data:model/obj;base64,dg==", "filename": "a.obj"},
            }
        ],
        "unsupported_content",
    ),
    "audio": ([{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}], None),
    "bad base64": ([image_part("data:image/png;base64,%%%")], None),
    "not base64": ([image_part("data:image/png,rawbytes")], None),
    "broken image": ([image_part(data_url(b"\x89PNG\r\n\x1a\n broken"))], "CorruptImage"),
    "an ftp URL": ([image_part("ftp://example.com/cat.png")], None),
    "an http URL": ([image_part("http://127.0.0.1:9/cat.png")], None),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_are_bad_request_errors(served, case):
    content, code = BAD[case]
    with pytest.raises(openai.BadRequestError) as err:
        sdk(served.base).chat.completions.create(
            model="factcap-detailed", messages=[{"role": "user", "content": content}]
        )
    error = _shape(err.value)
    assert error["type"] == "invalid_request_error" and error["message"]
    if code is not None:
        assert error["code"] == code
    if case in ("a 3D asset", "a video", "a file part"):
        assert "factcap caption" in error["message"]
    if case == "an http URL":
        assert "--image-url-host" in error["message"]


def test_wrong_key_is_an_authentication_error(served):
    for call in (
        lambda c: c.chat.completions.create(model="factcap-short", messages=messages()),
        lambda c: c.models.list(),
    ):
        with pytest.raises(openai.AuthenticationError) as err:
            call(sdk(served.base, key="wrong"))
        assert _shape(err.value)["code"] == "invalid_api_key"
        assert err.value.response.headers["WWW-Authenticate"] == "Bearer"


def test_oversized_body_is_413_and_malformed_bodies_are_400(served):
    big = data_url(b"\0" * (1024 * 1024))
    with pytest.raises(openai.APIStatusError) as err:
        sdk(served.base).chat.completions.create(
            model="factcap-short", messages=messages(image_part(big))
        )
    assert err.value.status_code == 413 and _shape(err.value)["code"] == "request_too_large"
    url = f"{served.base}/v1/chat/completions"
    for kwargs in (
        {"content": b"{not json", "headers": {**AUTH, "Content-Type": "application/json"}},
        {"content": b"model=x", "headers": {**AUTH, "Content-Type": "text/plain"}},
        {"json": {"model": "factcap-short", "messages": []}, "headers": AUTH},
        {"json": {"model": "factcap-short", "messages": messages(), "n": 0}, "headers": AUTH},
    ):
        r = httpx.post(url, **kwargs)
        assert r.status_code == 400, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_a_failed_item_is_a_server_error_with_its_record():
    config = load_config(preset="tiny")
    broken = Exploding(RuntimeError("the model server went away"))
    pipe = Pipeline(config, models=Models(config, built={"captioner:0": (broken, 4)}))
    app = create_app(config, KEY, pipeline=pipe)
    with serve_in_thread(app) as base, pytest.raises(openai.InternalServerError) as err:
        sdk(base).chat.completions.create(model="factcap-short", messages=messages())
    body = err.value.response.json()
    assert body["error"]["type"] == "server_error"
    assert body["factcap"]["status"] == "error" and body["factcap"]["error"]["message"]


# --- the queue: 429 with Retry-After, which the SDK's own retries honour -------------------


def test_full_queue_is_a_rate_limit_error_with_retry_after():
    pipe = scripted_pipeline(batch_size=1, hold_from=1)
    held = gate(pipe)
    app = create_app(pipe.config, KEY, pipeline=pipe, queue_size=1)

    async def scenario(base: str) -> tuple[list[Any], openai.RateLimitError]:
        client = async_sdk(base)

        def call() -> asyncio.Task:
            return asyncio.ensure_future(
                client.chat.completions.create(model="factcap-short", messages=messages())
            )

        accepted = [call()]
        try:
            await until(lambda: held.waiting == 1, "the first request is running")
            accepted.append(call())
            await until(lambda: app.state.service.batcher.depth == 1, "the queue is full")
            with pytest.raises(openai.RateLimitError) as err:
                await client.chat.completions.create(model="factcap-short", messages=messages())
        finally:
            held.open()
        return list(await asyncio.gather(*accepted)), err.value

    with serve_in_thread(app) as base:
        answered, refused = asyncio.run(scenario(base))
    assert [a.choices[0].message.content for a in answered] == [CAPTION] * 2
    assert _shape(refused)["code"] == "rate_limit_exceeded"
    assert int(refused.response.headers["Retry-After"]) >= 1


def test_fifty_concurrent_sdk_calls_with_a_queue_of_16_all_succeed_through_retries():
    """The issue's done-when: 50 concurrent SDK calls, a queue of 16: the server answers only
    200s and 429s, the SDK's own retries (``max_retries``, honouring ``Retry-After``) turn the
    429s into successes, and ``/healthz`` answers afterwards. The first batch is held until
    every call beyond the batch and the queue has been refused at least once."""
    pipe = scripted_pipeline(batch_size=4, hold_from=1)
    held = gate(pipe)
    app = create_app(pipe.config, KEY, pipeline=pipe, queue_size=16)
    seen = count_statuses(app, "/v1/chat/completions")
    batcher = lambda: app.state.service.batcher  # noqa: E731 - made at startup

    async def scenario(base: str) -> list[Any]:
        client = async_sdk(base, retries=30)
        calls = [
            asyncio.ensure_future(
                client.chat.completions.create(model="factcap-short", messages=messages())
            )
            for _ in range(50)
        ]
        try:
            await until(lambda: held.waiting == 1, "the first batch is running")
            running = batcher().batches[0]
            await until(
                lambda: batcher().depth == 16 and seen[429] >= 50 - 16 - running,
                "the queue is full and every other call was refused",
            )
        finally:
            held.open()
        return list(await asyncio.gather(*calls))

    with serve_in_thread(app) as base:
        answers = asyncio.run(scenario(base))
        health = httpx.get(f"{base}/healthz", timeout=WAIT_S)
    assert [a.choices[0].message.content for a in answers] == [CAPTION] * 50
    assert set(seen) == {200, 429} and seen[200] == 50 and seen[429] >= 50 - 16 - 4
    assert health.status_code == 200 and health.json() == {"status": "ok", "queue": 0}
    assert sum(batcher().batches) == 50 and batcher().batches[1] == 4  # still micro-batched


# --- image URLs: fetched only from the allow-list -------------------------------------------


@pytest.fixture
def image_host() -> Iterator[SimpleNamespace]:
    """A local web server: ``/cat.png``, ``/big.png`` (2 MiB), ``/missing``, ``/away`` (a
    redirect to ``localhost``, not on the allow-list), ``/slow`` (never answers in time)."""
    hits: list[str] = []
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            port = self.server.server_address[1]
            if self.path == "/slow":
                release.wait(WAIT_S)
                return
            if self.path == "/away":
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{port}/cat.png")
                self.end_headers()
                return
            if self.path == "/here":
                self.send_response(302)
                self.send_header("Location", "/cat.png")
                self.end_headers()
                return
            body = {"/cat.png": png_bytes(), "/big.png": b"\0" * (2 * 1024 * 1024)}.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{srv.server_address[1]}", hits=hits)
    finally:
        release.set()
        srv.shutdown()


def test_image_urls_are_fetched_only_from_allowed_hosts(served, image_host):
    pipe = scripted_pipeline()
    app = create_app(
        pipe.config, KEY, pipeline=pipe, max_upload_mb=1, image_url_hosts=("127.0.0.1",)
    )

    def ask(base: str, path: str) -> Any:
        return sdk(base).chat.completions.create(
            model="factcap-short", messages=messages(image_part(image_host.url + path))
        )

    with pytest.raises(openai.BadRequestError):  # the service without an allow-list
        ask(served.base, "/cat.png")
    assert image_host.hits == []  # ... fetched nothing
    with serve_in_thread(app) as base:
        assert ask(base, "/cat.png").choices[0].message.content == CAPTION
        assert ask(base, "/here").model_extra["factcap"]["image_size"] == [48, 40]
        for path, needle in {
            "/missing": "HTTP 404",
            "/big.png": "over the limit",
            "/away": "'localhost' is not on this service's allow-list",
            "/slow": "took over 2 s",
        }.items():
            if path == "/slow":  # it never answers: the test need not wait the full 10 s
                app.state.service.fetch_timeout_s = 2.0
            with pytest.raises(openai.BadRequestError) as err:
                ask(base, path)
            assert needle in _shape(err.value)["message"], path
        port = image_host.url.rsplit(":", 1)[1]
        with pytest.raises(openai.BadRequestError) as err:  # the host is after the '@'
            sdk(base).chat.completions.create(
                model="factcap-short",
                messages=messages(image_part(f"http://127.0.0.1@localhost:{port}/cat.png")),
            )
        assert "'localhost' is not on" in _shape(err.value)["message"]
    assert image_host.hits.count("/cat.png") == 2


@pytest.mark.parametrize(
    "hosts",
    [["https://cdn.example.com"], ["cdn.example.com:8080"], ["cdn.example.com/x"], ["a.*.com"]],
)
def test_bad_allow_list_entries_are_refused_before_loading(hosts):
    with pytest.raises(UsageError, match="--image-url-host"):
        ServeOptions(image_url_hosts=tuple(hosts)).checked()


def test_allow_list_option_on_the_command_line():
    from factcap.cli import parser

    args = parser().parse_args(
        ["serve", "--image-url-host", "CDN.example.com", "--image-url-host", "*.example.org"]
    )
    checked = ServeOptions(image_url_hosts=tuple(args.image_url_host)).checked()
    assert checked.image_url_hosts == ("cdn.example.com", "*.example.org")
    assert parser().parse_args(["serve"]).image_url_host == []  # off by default


# --- curl ---------------------------------------------------------------------------------


def _curl(*args: str) -> str:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(
        [curl, "-sS", "--max-time", str(int(4 * WAIT_S)), *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def test_curl_gets_the_caption_streaming_and_not(served, tmp_path: Path):
    body = {"model": "factcap-detailed", "messages": messages()}
    request = tmp_path / "request.json"
    request.write_text(json.dumps(body))
    url = f"{served.base}/v1/chat/completions"
    headers = ["-H", f"Authorization: Bearer {KEY}", "-H", "Content-Type: application/json"]
    answer = json.loads(_curl(*headers, "-d", f"@{request}", url))
    assert answer["choices"][0]["message"]["content"] == CAPTION
    request.write_text(json.dumps({**body, "stream": True}))
    events = _curl("-N", *headers, "-d", f"@{request}", url).split("\n\n")
    data = [e.removeprefix("data: ") for e in events if e.strip()]
    assert data[-1] == "[DONE]" and len(data) == 3
    first, last = (json.loads(d) for d in data[:2])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": CAPTION}
    assert last["choices"][0]["finish_reason"] == "stop" and "factcap" in last
    status = _curl("-o", "/dev/null", "-w", "%{http_code}", f"{served.base}/v1/models")
    assert status == "401"


# --- the real tiny models -------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_preset_sdk_caption_is_the_v1_captions_caption():
    """The issue's done-when: the SDK's ``chat.completions.create(model="factcap-detailed",
    ...)`` answers the final caption ``POST /v1/captions`` writes for the same image and
    style, streaming and not (tiny preset, loopback)."""
    image = photo_bytes()
    messages_ = messages(image_part(data_url(image, "image/jpeg")))
    with serve_in_thread(create_app(load_config(preset="tiny"), KEY)) as base:
        record = caption_record(base, image, ["detailed"])
        expected = record["captions"]["detailed"]
        client = sdk(base)
        done = client.chat.completions.create(model="factcap-detailed", messages=messages_)
        streamed = client.chat.completions.create(
            model="factcap-detailed", messages=messages_, stream=True
        )
        streamed_text = "".join(c.choices[0].delta.content or "" for c in streamed)

        async def async_streamed() -> str:  # the async client, non-streaming: fast tests
            astream = await async_sdk(base).chat.completions.create(
                model="factcap-detailed", messages=messages_, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in astream])

        async_text = asyncio.run(async_streamed())
    assert expected.strip() and record["models"]["llm"] == "tiny:llm"
    assert done.choices[0].message.content == streamed_text == async_text == expected
    assert without_timings(done.model_extra["factcap"]) == without_timings(record)
