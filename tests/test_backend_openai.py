"""OpenAI-compatible backends against a real local HTTP server speaking the wire format."""

from __future__ import annotations

import base64
import io
import json
import logging
import math
import pickle
import random
import sqlite3
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable

import pytest
from PIL import Image

from factcap.backends import registry
from factcap.backends.openai_compat import (
    OpenAICaptioner,
    OpenAILLM,
    OpenAIVQA,
    RemoteBatchError,
    RemoteError,
)
from factcap.backends.request_cache import FILENAME, RequestCache
from factcap.errors import FactcapError
from factcap.roles import LLM, VQA, Captioner
from fake_openai import FakeOpenAIServer, Fault, Reply, echo

FAST = {"backoff": 0.01, "max_retry_wait": 2.0}
# A client timeout the server's normal answers always beat, however loaded the machine; the
# requests meant to time out get no answer at all until the test releases them (``Hold``).
ANSWER_WITHIN = 5.0
WAIT = 60.0  # the most a test waits for something that should happen (it fails after)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test gets an empty default response cache (the session's is shared otherwise):
    ``$FACTCAP_CACHE/requests`` under this test's own directory."""
    root = tmp_path / "factcap-cache"
    monkeypatch.setenv("FACTCAP_CACHE", str(root))
    return root / "requests"


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    try:
        from skimage import data

        return [Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea())]
    except ImportError:
        return [Image.new("RGB", (64, 48), "red"), Image.new("RGB", (40, 40), "blue")]


def _conv(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _image_part(request: dict) -> dict:
    (part,) = [p for p in request["messages"][0]["content"] if p["type"] == "image_url"]
    return part


def _text_part(request: dict) -> str:
    (part,) = [p for p in request["messages"][0]["content"] if p["type"] == "text"]
    return part["text"]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds (never expected)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still not so after {timeout:g} s")
        time.sleep(0.01)


class Hold:
    """A ``respond`` for the fake server that gives the first ``n`` requests no answer until
    :meth:`release` (a client timeout is then certain, whatever the machine's speed); the
    others are answered by ``respond`` at once."""

    def __init__(self, n: int, respond: Callable[[dict], Reply | str] = echo):
        self.n, self.respond = n, respond
        self.held = 0
        self._released = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, request: dict) -> Reply | str:
        with self._lock:
            hold = self.held < self.n
            self.held += hold
        if hold:
            self._released.wait()
        return self.respond(request)

    def release(self) -> None:
        self._released.set()


class Rendezvous:
    """A ``respond`` for the fake server that answers no request before ``parties`` of them
    are in flight together (in groups of ``parties``; only the first group when ``once``):
    concurrency is then proven by the requests themselves, not by how long they overlap.
    ``met`` turns False when a group never filled up within ``WAIT`` seconds."""

    def __init__(self, parties: int, once: bool = False):
        self.barrier = threading.Barrier(parties, timeout=WAIT)
        self.parties, self.once = parties, once
        self.met = True
        self._arrived = 0
        self._lock = threading.Lock()

    def __call__(self, request: dict) -> Reply:
        with self._lock:
            self._arrived += 1
            wait = not self.once or self._arrived <= self.parties
        if wait:
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                self.met = False
        return echo(request)


# -- LLM -------------------------------------------------------------------------------------


def test_llm_chat_sends_wire_format(server):
    llm = OpenAILLM("qwen-test", base_url=server.base_url, api_key="sk-test", **FAST)
    assert isinstance(llm, LLM)
    conversations = [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        _conv("second"),
    ]
    out = llm.chat(conversations, max_new_tokens=17, temperature=0.3)
    assert out == ["echo: hello", "echo: second"]
    assert len(server.completions) == 2
    bodies = sorted((r.json for r in server.completions), key=lambda b: len(b["messages"]))
    assert bodies[1]["messages"] == conversations[0]
    for req in server.completions:
        assert req.path == "/v1/chat/completions"
        assert req.json["model"] == "qwen-test"
        assert req.json["max_tokens"] == 17 and req.json["temperature"] == 0.3
        assert req.headers["authorization"] == "Bearer sk-test"
        assert req.headers["content-type"] == "application/json"


def test_no_key_means_no_authorization_header(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm = OpenAILLM("m", base_url=server.base_url)
    assert llm.chat([_conv("hi")]) == ["echo: hi"]
    assert "authorization" not in server.requests[0].headers


def test_env_vars_give_base_url_and_key(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    llm = OpenAILLM("m")
    assert llm.base_url == server.base_url
    assert llm.chat([_conv("x")]) == ["echo: x"]
    assert server.requests[0].headers["authorization"] == "Bearer sk-env"


def test_default_base_url(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert OpenAILLM("m").endpoint == "http://127.0.0.1:8000/v1/chat/completions"


def test_extra_body_is_merged(server):
    llm = OpenAILLM("m", base_url=server.base_url, extra_body={"top_k": 1, "seed": 7})
    llm.chat([_conv("x")])
    assert server.requests[0].json["top_k"] == 1 and server.requests[0].json["seed"] == 7


def test_empty_batch_sends_nothing(server):
    assert OpenAILLM("m", base_url=server.base_url).chat([]) == []
    assert server.requests == []


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError, match="max_new_token"):
        OpenAILLM("m", max_new_token=5)
    with pytest.raises(TypeError, match="prompt"):
        OpenAILLM("m", prompt="x")  # a captioner option, not an LLM one
    with pytest.raises(ValueError):
        OpenAILLM("m", max_concurrency=0)


# -- concurrency and order -------------------------------------------------------------------


def test_requests_of_a_batch_are_in_flight_together():
    # the server answers none of the first four until all four are in flight, so a client that
    # sends them one by one never gets an answer (the speed is measured by a benchmark)
    together = Rendezvous(4, once=True)
    with FakeOpenAIServer(together) as srv:
        llm = OpenAILLM("m", base_url=srv.base_url, max_concurrency=8, timeout=2 * WAIT)
        out = llm.chat([_conv(f"q{i}") for i in range(8)])
    assert out == [f"echo: q{i}" for i in range(8)]
    assert together.met and srv.max_in_flight >= 4


def test_order_is_preserved_when_replies_finish_in_reverse():
    def slow_first(request: dict) -> str:
        i = int(request["messages"][-1]["content"])
        time.sleep(0.03 * (6 - i))  # request 0 answers last
        return f"answer {i}"

    with FakeOpenAIServer(slow_first) as srv:
        out = OpenAILLM("m", base_url=srv.base_url).chat([_conv(str(i)) for i in range(6)])
    assert out == [f"answer {i}" for i in range(6)]


def test_max_concurrency_bounds_requests_in_flight():
    # every request waits for a partner before it is answered: two are always in flight
    # together, and a third would be counted by the server while they wait
    pairs = Rendezvous(2)
    with FakeOpenAIServer(pairs) as srv:
        llm = OpenAILLM("m", base_url=srv.base_url, max_concurrency=2, timeout=2 * WAIT)
        out = llm.chat([_conv(str(i)) for i in range(6)])
    assert out == [f"echo: {i}" for i in range(6)]
    assert pairs.met and srv.max_in_flight == 2


# -- retries and errors ----------------------------------------------------------------------


def test_retry_on_500_then_success(server):
    server.script(Fault.status(500), Fault.status(503))
    llm = OpenAILLM("m", base_url=server.base_url, max_retries=2, **FAST)
    assert llm.chat([_conv("hi")]) == ["echo: hi"]
    assert [r.fault.code if r.fault else 200 for r in server.completions] == [500, 503, 200]


def test_dropped_connection_is_retried(server):
    server.script(Fault.drop())
    llm = OpenAILLM("m", base_url=server.base_url, max_retries=1, **FAST)
    assert llm.chat([_conv("hi")]) == ["echo: hi"]
    assert len(server.completions) == 2


def test_500_after_all_retries_raises_with_status_and_body(server):
    server.script(*[Fault.status(500, body='{"error": "model crashed: CUDA OOM"}')] * 3)
    llm = OpenAILLM("m", base_url=server.base_url, max_retries=2, **FAST)
    with pytest.raises(RemoteError) as info:
        llm.chat([_conv("hi")])
    err = info.value
    assert isinstance(err, FactcapError)
    assert err.status == 500 and "CUDA OOM" in err.body
    message = str(err)
    assert server.base_url in message and "500" in message and "CUDA OOM" in message
    assert "3 attempt" in message
    assert len(server.completions) == 3


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    """The seconds the client chose to wait between attempts, in order (it still waits them:
    a wait over a minute fails the test instead, so a broken cap cannot hang it)."""
    from factcap.backends import openai_compat

    chosen: list[float] = []

    def sleep(seconds: float) -> None:
        chosen.append(seconds)
        assert seconds <= WAIT, f"the client chose to wait {seconds} s before retrying"
        time.sleep(seconds)

    monkeypatch.setattr(openai_compat, "time", types.SimpleNamespace(sleep=sleep))
    return chosen


def test_429_retry_after_is_honoured(server, waits):
    server.script(Fault.rate_limit(retry_after=1))
    llm = OpenAILLM("m", base_url=server.base_url, max_retries=1, backoff=0.01)
    assert llm.chat([_conv("hi")]) == ["echo: hi"]
    first, second = server.completions
    assert second.received_at - first.received_at >= 0.95
    # the server's 1 s plus at most the jitter (0.5 x backoff by default), not a backoff
    assert len(waits) == 1 and 1.0 <= waits[0] <= 1.0 + 0.5 * 0.01


def test_retry_after_is_capped(server, waits):
    server.script(Fault.rate_limit(retry_after=3600))
    llm = OpenAILLM("m", base_url=server.base_url, max_retries=1, backoff=0.01, max_retry_wait=0.2)
    assert llm.chat([_conv("hi")]) == ["echo: hi"]
    assert waits == [0.2]
    first, second = server.completions
    assert second.received_at - first.received_at >= 0.19


def test_timeout_raises_after_retries(server):
    # the server never answers until released (after the client gave up): that the call
    # returns at all shows the client timed out instead of waiting for the answer
    hold = server.respond = Hold(2)
    llm = OpenAILLM("m", base_url=server.base_url, timeout=0.5, max_retries=1, **FAST)
    try:
        with pytest.raises(RemoteError, match="timed out after 0.5 s") as info:
            llm.chat([_conv("hi")])
        assert info.value.status is None and server.base_url in str(info.value)
        wait_until(lambda: hold.held == 2, "both attempts reached the server")
        assert len(server.completions) == 2
    finally:
        hold.release()


def test_timeout_then_success(server):
    hold = server.respond = Hold(1)  # the first attempt gets no answer
    llm = OpenAILLM("m", base_url=server.base_url, timeout=ANSWER_WITHIN, max_retries=1, **FAST)
    try:
        assert llm.chat([_conv("hi")]) == ["echo: hi"]
    finally:
        hold.release()
    assert hold.held == 1 and len(server.completions) == 2


@pytest.mark.parametrize(
    "fault",
    [
        Fault.garbage(),
        Fault.garbage(""),
        Fault.json({}),
        Fault.json({"choices": []}),
        Fault.json({"choices": [{"message": {"role": "assistant", "content": None}}]}),
        Fault.json([1, 2, 3]),
    ],
    ids=["html", "empty", "no-choices", "empty-choices", "null-content", "json-list"],
)
def test_garbage_bodies_raise(server, fault):
    server.script(fault)
    llm = OpenAILLM("m", base_url=server.base_url, **FAST)
    with pytest.raises(RemoteError) as info:
        llm.chat([_conv("hi")])
    assert server.base_url in str(info.value)
    assert len(server.completions) == 1  # a 200 with garbage is not retried


def test_client_error_is_not_retried(server):
    server.script(Fault.status(400, body='{"error": {"message": "unknown model m"}}'))
    llm = OpenAILLM("m", base_url=server.base_url, max_retries=3, **FAST)
    with pytest.raises(RemoteError, match="unknown model") as info:
        llm.chat([_conv("hi")])
    assert info.value.status == 400
    assert len(server.completions) == 1


def test_connection_refused_raises():
    with FakeOpenAIServer() as srv:
        url = srv.base_url
    llm = OpenAILLM("m", base_url=url, max_retries=1, **FAST)
    with pytest.raises(RemoteError, match="connection failed") as info:
        llm.chat([_conv("hi")])
    assert url in str(info.value)


def test_one_failure_fails_the_batch(server):
    server.script(Fault.status(404))
    llm = OpenAILLM("m", base_url=server.base_url, max_concurrency=1, **FAST)
    with pytest.raises(RemoteError, match="404") as info:
        llm.chat([_conv("a"), _conv("b")])
    assert isinstance(info.value, RemoteBatchError)
    assert info.value.results[1] == "echo: b" and list(info.value.errors) == [0]


def test_batch_error_keeps_the_other_answers_and_runs_every_request(server):
    # request "c" fails for good; the others are answered, none is cancelled
    server.fault_when(lambda req: req["messages"][-1]["content"] == "c", *[Fault.status(500)] * 9)
    llm = OpenAILLM("m", base_url=server.base_url, max_concurrency=2, max_retries=1, **FAST)
    with pytest.raises(RemoteBatchError) as info:
        llm.chat([_conv(x) for x in "abcde"])
    err = info.value
    assert list(err.errors) == [2] and err.status == 500
    assert err.results[:2] == ["echo: a", "echo: b"] and err.results[3:] == ["echo: d", "echo: e"]
    assert err.results[2] is err.errors[2]
    assert "1 of 5 requests of the batch failed" in str(err) and server.base_url in str(err)
    sent = sorted(r.json["messages"][-1]["content"] for r in server.completions)
    assert sent == ["a", "b", "c", "c", "d", "e"]


def test_other_exceptions_are_not_wrapped(server, images):
    cap = OpenAICaptioner("vlm", base_url=server.base_url, image_format="gif")
    with pytest.raises(ValueError, match="image_format") as info:
        cap.caption(images)
    assert not isinstance(info.value, RemoteError)


# -- captioner -------------------------------------------------------------------------------


def test_captioner_sends_image_data_url(server, images):
    cap = OpenAICaptioner("vlm", base_url=server.base_url, max_new_tokens=40)
    assert isinstance(cap, Captioner)
    out = cap.caption(images)
    assert out == ["echo: Describe this image in detail."] * 2
    sizes = set()
    for req in server.completions:
        assert req.json["model"] == "vlm" and req.json["max_tokens"] == 40
        url = _image_part(req.json)["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert decoded.format == "JPEG"
        sizes.add(decoded.size)
        assert _text_part(req.json) == "Describe this image in detail."
    assert sizes == {im.size for im in images}


def test_captioner_prompt_png_and_resize(server, images):
    original_size = images[0].size
    cap = OpenAICaptioner(
        "vlm", base_url=server.base_url, image_format="png", max_image_side=64, prompt="Short."
    )
    assert cap.caption(images[:1]) == ["echo: Short."]
    assert cap.caption(images[:1], prompt="Alt text?") == ["echo: Alt text?"]
    url = _image_part(server.completions[0].json)["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert max(decoded.size) == 64
    assert images[0].size == original_size  # the caller's image is not resized in place


def test_captioner_rejects_bad_image_format(server, images):
    cap = OpenAICaptioner("vlm", base_url=server.base_url, image_format="gif")
    with pytest.raises(ValueError, match="image_format"):
        cap.caption(images[:1])


# -- judge -----------------------------------------------------------------------------------


def _judge_reply(top: dict[str, float] | None, text: str = "yes"):
    def respond(request: dict) -> Reply:
        return Reply(text, top_logprobs=top)

    return respond


def test_judge_probability_from_logprobs(images):
    with FakeOpenAIServer(_judge_reply({"yes": -0.1, "no": -2.3, "maybe": -4.0})) as srv:
        judge = OpenAIVQA("vlm", base_url=srv.base_url)
        assert isinstance(judge, VQA)
        probs = judge.yes_probability(images, ["Is there a person?", "Is there a cat?"])
    expected = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.3))
    assert probs == pytest.approx([expected, expected])
    assert expected == pytest.approx(0.90, abs=0.005)
    texts = sorted(_text_part(r.json) for r in srv.completions)
    assert texts == ["Is there a cat? Answer yes or no.", "Is there a person? Answer yes or no."]
    for req in srv.completions:
        assert req.json["logprobs"] is True and req.json["top_logprobs"] == 20
        assert req.json["max_tokens"] == 1
        assert _image_part(req.json)["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_judge_sums_spellings_of_yes_and_no(images):
    top = {"Yes": -1.0, " yes": -2.0, "YES": -3.0, "No": -1.5, " no": -2.5, "Nope": -0.5}
    with FakeOpenAIServer(_judge_reply(top, text="Yes")) as srv:
        (p,) = OpenAIVQA("vlm", base_url=srv.base_url).yes_probability(images[:1], ["q?"])
    y = math.exp(-1.0) + math.exp(-2.0) + math.exp(-3.0)
    n = math.exp(-1.5) + math.exp(-2.5)
    assert p == pytest.approx(y / (y + n))


def test_judge_neither_yes_nor_no_is_nan(images):
    with FakeOpenAIServer(_judge_reply({"maybe": -0.2, "perhaps": -1.0}, text="maybe")) as srv:
        (p,) = OpenAIVQA("vlm", base_url=srv.base_url).yes_probability(images[:1], ["q?"])
    assert math.isnan(p)


@pytest.mark.parametrize(
    ("text", "expected"), [("Yes.", 1.0), ("no", 0.0), ("I cannot tell", float("nan"))]
)
def test_judge_without_logprobs_falls_back_to_text(images, text, expected):
    with FakeOpenAIServer(_judge_reply(None, text=text)) as srv:
        (p,) = OpenAIVQA("vlm", base_url=srv.base_url).yes_probability(images[:1], ["q?"])
    assert p == expected or (math.isnan(p) and math.isnan(expected))


def test_judge_can_require_logprobs(images):
    with FakeOpenAIServer(_judge_reply(None)) as srv:
        judge = OpenAIVQA("vlm", base_url=srv.base_url, require_logprobs=True)
        with pytest.raises(RemoteError, match="no logprobs"):
            judge.yes_probability(images[:1], ["q?"])


def test_judge_length_mismatch(images):
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        OpenAIVQA("vlm").yes_probability(images[:2], ["only one question"])


def test_judge_instruction_option(images):
    with FakeOpenAIServer(_judge_reply({"yes": -0.5, "no": -1.0})) as srv:
        judge = OpenAIVQA("vlm", base_url=srv.base_url, instruction="Reply yes or no only.")
        (p,) = judge.yes_probability(images[:1], ["  Is there a cat? "])
    assert _text_part(srv.completions[0].json) == "Is there a cat? Reply yes or no only."
    assert p == pytest.approx(math.exp(-0.5) / (math.exp(-0.5) + math.exp(-1.0)))
    with pytest.raises(ValueError, match="instruction"):
        OpenAIVQA("vlm", instruction=None)


def test_option_values_are_checked():
    with pytest.raises(ValueError, match="max_new_tokens"):
        OpenAICaptioner("vlm", max_new_tokens=0)
    with pytest.raises(ValueError, match="prompt"):
        OpenAICaptioner("vlm", prompt="  ")


# -- backoff jitter --------------------------------------------------------------------------


def test_retry_delay_bounds_and_spread():
    llm = OpenAILLM("m", backoff=0.5, jitter=0.5, max_retry_wait=3.0)
    for attempt, full in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 3.0), (6, 3.0)]:  # capped at 3
        waits = [llm.retry_delay(attempt) for _ in range(400)]
        assert all(full * 0.5 <= w <= full for w in waits), attempt
        assert max(waits) - min(waits) > 0.4 * full  # really spread, not a constant
    full_jitter = OpenAILLM("m", backoff=1.0, jitter=1.0)
    waits = [full_jitter.retry_delay(0) for _ in range(400)]
    assert min(waits) < 0.1 and max(waits) > 0.9
    none = OpenAILLM("m", backoff=0.25, jitter=0.0)
    assert [none.retry_delay(a) for a in range(4)] == [0.25, 0.5, 1.0, 2.0]


def test_retry_after_is_never_shortened_by_jitter():
    llm = OpenAILLM("m", backoff=0.4, jitter=0.5, max_retry_wait=10.0)
    waits = [llm.retry_delay(5, retry_after=2.0) for _ in range(400)]
    assert all(2.0 <= w <= 2.2 for w in waits) and max(waits) > 2.1
    assert llm.retry_delay(0, retry_after=50.0) == 10.0  # the cap still holds


def test_retry_delay_is_reproducible_with_a_seeded_rng():
    a, b = OpenAILLM("m"), OpenAILLM("m")
    a.rng, b.rng = random.Random(7), random.Random(7)
    assert [a.retry_delay(i % 3) for i in range(20)] == [b.retry_delay(i % 3) for i in range(20)]
    b.rng = random.Random(8)
    assert [a.retry_delay(1) for _ in range(5)] != [b.retry_delay(1) for _ in range(5)]


@pytest.mark.parametrize("bad", [{"jitter": 1.5}, {"jitter": -0.1}, {"jitter": "x"}])
def test_jitter_is_checked(bad):
    with pytest.raises(ValueError, match="jitter"):
        OpenAILLM("m", **bad)


def _retry_gaps(jitter: float) -> tuple[list[float], list[float]]:
    """Eight requests fail together with a 500: the waits the client chose before retrying
    them, and how long after its first arrival the server saw each retry (both sorted)."""
    with FakeOpenAIServer() as server:
        server.script(*[Fault.status(500)] * 8)
        llm = OpenAILLM(
            "m",
            base_url=server.base_url,
            max_concurrency=8,
            max_retries=1,
            backoff=0.8,
            jitter=jitter,
            cache=False,
        )
        llm.rng = random.Random(3)
        waits: list[float] = []
        chosen = llm.retry_delay

        def retry_delay(attempt: int, retry_after: float | None = None) -> float:
            waits.append(chosen(attempt, retry_after))
            return waits[-1]

        llm.retry_delay = retry_delay  # records what the client waits before each retry
        assert llm.chat([_conv(str(i)) for i in range(8)]) == [f"echo: {i}" for i in range(8)]
    arrivals: dict[str, list[float]] = {}
    for r in server.completions:
        arrivals.setdefault(r.json["messages"][0]["content"], []).append(r.received_at)
    assert sorted(len(times) for times in arrivals.values()) == [2] * 8
    gaps = sorted(retry - first for first, retry in arrivals.values())
    return sorted(waits), gaps


def test_jitter_spreads_retries_of_requests_that_failed_together():
    waits, gaps = _retry_gaps(jitter=0.0)
    assert waits == [0.8] * 8  # no jitter: all eight retry together, a full backoff later
    assert all(gap >= wait for gap, wait in zip(gaps, waits, strict=True))
    # the first 8 draws of Random(3) span 0.01..0.84 of the 0.8 s backoff: 0.66 s apart
    waits, gaps = _retry_gaps(jitter=1.0)
    draws = random.Random(3)
    assert waits == pytest.approx(sorted(0.8 * (1 - draws.random()) for _ in range(8)))
    assert waits[0] < 0.3 and waits[-1] - waits[0] > 0.4
    # the server saw each retry no sooner than its wait: the client really waited that long
    assert all(gap >= wait for gap, wait in zip(gaps, waits, strict=True))


# -- response cache --------------------------------------------------------------------------


def _caption_or_judge(request: dict) -> Reply:
    text = _text_part(request) if isinstance(request["messages"][0]["content"], list) else ""
    if request.get("logprobs"):
        yes = -0.2 if "red" in text else -2.0
        return Reply("yes", top_logprobs={"yes": yes, "no": -1.0})
    return Reply("echo: " + (text or request["messages"][-1]["content"]))


def test_cache_second_identical_batch_makes_no_request(images, tmp_path):
    with FakeOpenAIServer(_caption_or_judge) as server:
        kw = {"base_url": server.base_url, "cache_dir": tmp_path / "c", **FAST}
        llm = OpenAILLM("m", **kw)
        first = llm.chat([_conv(f"q{i}") for i in range(6)], max_new_tokens=9)
        assert len(server.completions) == 6
        again = OpenAILLM("m", **kw)  # a new backend, as in a resumed job
        assert again.chat([_conv(f"q{i}") for i in range(6)], max_new_tokens=9) == first
        assert len(server.completions) == 6
        assert again.cache.hits == 6 and again.cache.misses == 0

        questions = ["Is it red?", "Is it blue?"]
        captions = OpenAICaptioner("vlm", **kw).caption(images)
        probs = OpenAIVQA("vlm", **kw).yes_probability(images, questions)
        assert len(server.completions) == 10
        assert probs[0] > 0.6 > 0.4 > probs[1]
        assert OpenAICaptioner("vlm", **kw).caption(images) == captions
        assert OpenAIVQA("vlm", **kw).yes_probability(images, questions) == probs
        assert len(server.completions) == 10


def test_cache_misses_when_the_body_differs(server, tmp_path):
    kw = {"base_url": server.base_url, "cache_dir": tmp_path, **FAST}
    OpenAILLM("m", **kw).chat([_conv("q")], max_new_tokens=9)
    OpenAILLM("m", **kw).chat([_conv("q")], max_new_tokens=10)  # another max_tokens
    OpenAILLM("m", **kw).chat([_conv("q ")], max_new_tokens=9)  # another message
    OpenAILLM("other", **kw).chat([_conv("q")], max_new_tokens=9)  # another model
    OpenAILLM("m", extra_body={"seed": 1}, **kw).chat([_conv("q")], max_new_tokens=9)
    assert len(server.completions) == 5
    # volatile fields do not change the answer, so they do not change the key
    OpenAILLM("m", extra_body={"seed": 1, "user": "ann"}, **kw).chat([_conv("q")], max_new_tokens=9)
    assert len(server.completions) == 5
    assert len(RequestCache(tmp_path)) == 5


def test_cache_survives_a_moved_server_and_a_new_key(tmp_path):
    with FakeOpenAIServer() as first:
        OpenAILLM("m", base_url=first.base_url, api_key="sk-one", cache_dir=tmp_path).chat(
            [_conv("hello")]
        )
    with FakeOpenAIServer() as second:
        llm = OpenAILLM("m", base_url=second.base_url, api_key="sk-two", cache_dir=tmp_path)
        assert llm.chat([_conv("hello")]) == ["echo: hello"]
        assert second.completions == []


def test_cache_never_stores_the_api_key(server, tmp_path):
    secret = "sk-do-not-store-me-12345"
    OpenAILLM("m", base_url=server.base_url, api_key=secret, cache_dir=tmp_path).chat([_conv("x")])
    assert server.requests[0].headers["authorization"] == f"Bearer {secret}"
    files = list(tmp_path.iterdir())
    assert any(f.name == FILENAME for f in files)
    for f in files:
        assert secret.encode() not in f.read_bytes()


def test_sampled_requests_are_not_cached(server, tmp_path):
    llm = OpenAILLM("m", base_url=server.base_url, cache_dir=tmp_path)
    llm.chat([_conv("x")], temperature=0.7)
    llm.chat([_conv("x")], temperature=0.7)
    assert len(server.completions) == 2 and len(llm.cache) == 0
    llm.chat([_conv("x")], temperature=0.0)
    llm.chat([_conv("x")], temperature=0.0)
    assert len(server.completions) == 3 and len(llm.cache) == 1


def test_failed_requests_are_not_cached(server, tmp_path):
    llm = OpenAILLM("m", base_url=server.base_url, cache_dir=tmp_path, max_retries=1, **FAST)
    server.script(Fault.status(500), Fault.status(500))
    with pytest.raises(RemoteError):
        llm.chat([_conv("x")])
    server.script(Fault.garbage())
    with pytest.raises(RemoteError):
        llm.chat([_conv("x")])
    server.script(Fault.json({"choices": [{"message": {"content": None}}]}))
    with pytest.raises(RemoteError):
        llm.chat([_conv("x")])
    assert len(llm.cache) == 0
    assert llm.chat([_conv("x")]) == ["echo: x"]  # asks the server: nothing stored
    assert len(server.completions) == 5
    assert llm.chat([_conv("x")]) == ["echo: x"]
    assert len(server.completions) == 5


def test_judge_answer_failing_its_check_is_not_cached(images, tmp_path):
    with FakeOpenAIServer(_judge_reply(None)) as srv:
        strict = OpenAIVQA("vlm", base_url=srv.base_url, require_logprobs=True, cache_dir=tmp_path)
        with pytest.raises(RemoteError, match="no logprobs"):
            strict.yes_probability(images[:1], ["q?"])
        assert len(strict.cache) == 0


def test_cache_is_on_by_default_under_factcap_cache(server, own_cache):
    llm = OpenAILLM("m", base_url=server.base_url)
    llm.chat([_conv("x")])
    assert (own_cache / FILENAME).is_file()
    assert OpenAILLM("m", base_url=server.base_url).chat([_conv("x")]) == ["echo: x"]
    assert len(server.completions) == 1


def test_cache_false_switches_it_off(server, own_cache):
    llm = OpenAILLM("m", base_url=server.base_url, cache=False)
    assert llm.cache is None
    llm.chat([_conv("x")])
    llm.chat([_conv("x")])
    assert len(server.completions) == 2
    assert not own_cache.exists()


def test_corrupt_cache_is_recreated_with_a_warning(server, tmp_path, caplog):
    (tmp_path / FILENAME).write_bytes(b"this is not a database, just garbage " * 100)
    llm = OpenAILLM("m", base_url=server.base_url, cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="factcap.backends.request_cache"):
        assert llm.chat([_conv("x")]) == ["echo: x"]
    assert any("not a usable database" in r.getMessage() for r in caplog.records)
    assert (tmp_path / (FILENAME + ".corrupt")).is_file()
    again = OpenAILLM("m", base_url=server.base_url, cache_dir=tmp_path)
    assert again.chat([_conv("x")]) == ["echo: x"]
    assert len(server.completions) == 1  # the new cache works


def test_cache_clobbered_under_a_running_job_never_crashes_it(server, tmp_path, caplog):
    running = OpenAILLM("m", base_url=server.base_url, cache_dir=tmp_path)
    running.chat([_conv("a")])
    for path in tmp_path.iterdir():  # the database and its WAL, every page, header included
        with open(path, "r+b") as f:
            f.write(b"\xff" * max(8192, path.stat().st_size))
    with caplog.at_level(logging.WARNING, logger="factcap.backends.request_cache"):
        assert running.chat([_conv("a"), _conv("b")]) == ["echo: a", "echo: b"]
        resumed = OpenAILLM("m", base_url=server.base_url, cache_dir=tmp_path)
        assert resumed.chat([_conv("a"), _conv("c")]) == ["echo: a", "echo: c"]
    assert any("not a usable database" in r.getMessage() for r in caplog.records)
    assert (tmp_path / (FILENAME + ".corrupt")).is_file()
    n = len(server.completions)
    final = OpenAILLM("m", base_url=server.base_url, cache_dir=tmp_path)
    assert final.chat([_conv(x) for x in "abc"]) == ["echo: a", "echo: b", "echo: c"]
    assert len(server.completions) == n  # the recreated cache holds what was asked since


def test_unusable_cache_dir_only_warns(server, tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    llm = OpenAILLM("m", base_url=server.base_url, cache_dir=blocker / "requests")
    with caplog.at_level(logging.WARNING, logger="factcap.backends.request_cache"):
        assert llm.chat([_conv("x"), _conv("y")]) == ["echo: x", "echo: y"]
        assert llm.chat([_conv("x")]) == ["echo: x"]
    assert len(server.completions) == 3
    assert not llm.cache.enabled
    assert sum("cannot be used" in r.getMessage() for r in caplog.records) == 1


def test_cache_is_shared_by_concurrent_requests(tmp_path):
    together = Rendezvous(8, once=True)  # no answer before eight requests are in flight
    with FakeOpenAIServer(together) as srv:
        kw = {"base_url": srv.base_url, "cache_dir": tmp_path, "max_concurrency": 16}
        kw["timeout"] = 2 * WAIT
        first = OpenAILLM("m", **kw).chat([_conv(str(i)) for i in range(48)])
        second = OpenAILLM("m", **kw).chat([_conv(str(i)) for i in range(48)])
    assert first == second == [f"echo: {i}" for i in range(48)]
    assert together.met and len(srv.completions) == 48 and srv.max_in_flight >= 8
    with sqlite3.connect(tmp_path / FILENAME) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = conn.execute("SELECT response FROM responses").fetchall()
    assert len(rows) == 48
    assert {json.loads(r[0])["choices"][0]["message"]["content"] for r in rows} == set(first)


def test_pickled_backend_uses_the_same_cache(server, tmp_path):
    llm = OpenAILLM("m", base_url=server.base_url, cache_dir=tmp_path)
    llm.chat([_conv("x")])
    clone = pickle.loads(pickle.dumps(llm))
    assert clone.chat([_conv("x")]) == ["echo: x"]
    assert len(server.completions) == 1


# -- structured output -----------------------------------------------------------------------

SCHEMA = {
    "title": "claims",
    "type": "object",
    "properties": {"claims": {"type": "array", "items": {"type": "string"}}},
    "required": ["claims"],
}


def _json_when_asked(request: dict) -> str:
    if "response_format" in request or "guided_json" in request:
        return json.dumps({"claims": ["a cat"]})
    return 'Sure! Here: {"claims": ["a cat"]}'


def test_json_schema_becomes_response_format():
    with FakeOpenAIServer(_json_when_asked) as srv:
        llm = OpenAILLM("m", base_url=srv.base_url, cache=False)
        assert (
            llm.chat([_conv("x"), _conv("y")], json_schema=SCHEMA) == ['{"claims": ["a cat"]}'] * 2
        )
        assert llm.chat([_conv("x")]) == ['Sure! Here: {"claims": ["a cat"]}']
    structured, plain = srv.completions[:2], srv.completions[2]
    for req in structured:
        assert req.json["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "claims", "schema": SCHEMA},
        }
    assert "response_format" not in plain.json


def test_guided_json_and_off_modes():
    with FakeOpenAIServer(_json_when_asked) as srv:
        guided = OpenAILLM("m", base_url=srv.base_url, structured_output="guided_json", cache=False)
        guided.chat([_conv("x")], json_schema=SCHEMA)
        off = OpenAILLM("m", base_url=srv.base_url, structured_output="off", cache=False)
        off.chat([_conv("x")], json_schema=SCHEMA)
    first, second = srv.completions
    assert first.json["guided_json"] == SCHEMA and "response_format" not in first.json
    assert "guided_json" not in second.json and "response_format" not in second.json
    with pytest.raises(ValueError, match="structured_output"):
        OpenAILLM("m", structured_output="grammar")


def test_rejected_response_format_falls_back_once_and_is_remembered(caplog):
    with FakeOpenAIServer(_json_when_asked, reject_fields=("response_format",)) as srv:
        llm = OpenAILLM("m", base_url=srv.base_url, max_retries=3, cache=False, **FAST)
        with caplog.at_level(logging.WARNING, logger="factcap.backends.openai_compat"):
            assert llm.chat([_conv("x")], json_schema=SCHEMA) == [
                'Sure! Here: {"claims": ["a cat"]}'
            ]
            assert not llm.structured_ok
            out = llm.chat([_conv(str(i)) for i in range(4)], json_schema=SCHEMA)
    assert out == ['Sure! Here: {"claims": ["a cat"]}'] * 4
    statuses = [(("response_format" in r.json), r.path) for r in srv.completions]
    assert [has for has, _ in statuses] == [True, False, False, False, False, False]
    assert sum("rejected structured output" in r.getMessage() for r in caplog.records) == 1


def test_rejected_guided_json_falls_back_too():
    with FakeOpenAIServer(_json_when_asked, reject_fields=("guided_json",)) as srv:
        llm = OpenAILLM("m", base_url=srv.base_url, structured_output="guided_json", cache=False)
        assert llm.chat([_conv("x")], json_schema=SCHEMA) == ['Sure! Here: {"claims": ["a cat"]}']
    assert ["guided_json" in r.json for r in srv.completions] == [True, False]


def test_other_client_errors_do_not_switch_structured_output_off(server):
    server.script(Fault.status(400, body='{"error": {"message": "model m does not exist"}}'))
    llm = OpenAILLM("m", base_url=server.base_url, cache=False, **FAST)
    with pytest.raises(RemoteError, match="does not exist"):
        llm.chat([_conv("x")], json_schema=SCHEMA)
    assert llm.structured_ok and len(server.completions) == 1


def test_structured_answers_are_cached_under_their_own_key(tmp_path):
    with FakeOpenAIServer(_json_when_asked) as srv:
        kw = {"base_url": srv.base_url, "cache_dir": tmp_path}
        OpenAILLM("m", **kw).chat([_conv("x")], json_schema=SCHEMA)
        assert OpenAILLM("m", **kw).chat([_conv("x")]) == ['Sure! Here: {"claims": ["a cat"]}']
        assert OpenAILLM("m", **kw).chat([_conv("x")], json_schema=SCHEMA) == [
            '{"claims": ["a cat"]}'
        ]
    assert len(srv.completions) == 2


# -- the fake server's own scripting ---------------------------------------------------------


def test_fault_when_targets_matching_requests(server):
    server.fault_when(lambda req: "b" in req["messages"][-1]["content"], Fault.status(503))
    server.script(Fault.status(500))
    llm = OpenAILLM("m", base_url=server.base_url, max_concurrency=1, cache=False, **FAST)
    assert llm.chat([_conv("a"), _conv("b"), _conv("c")]) == ["echo: a", "echo: b", "echo: c"]
    codes = [
        (r.json["messages"][-1]["content"], r.fault.code if r.fault else 200)
        for r in server.completions
    ]
    assert codes == [("a", 500), ("a", 200), ("b", 503), ("b", 200), ("c", 200)]
    assert server.pending_faults == 0


# -- registry, pickling, imports -------------------------------------------------------------


def test_registry_builds_openai_backends(server, images):
    llm = registry.build("llm", "openai:some-model", base_url=server.base_url)
    assert isinstance(llm, OpenAILLM) and llm.name == "openai:some-model"
    assert llm.model == "some-model"
    assert llm.chat([_conv("ping")]) == ["echo: ping"]
    assert server.requests[-1].json["model"] == "some-model"

    cap = registry.build("captioner", "openai:vis", base_url=server.base_url)
    assert isinstance(cap, OpenAICaptioner)
    assert cap.caption(images[:1]) == ["echo: Describe this image in detail."]

    judge = registry.build("vqa", "openai:vis", base_url=server.base_url)
    assert isinstance(judge, OpenAIVQA)
    asked = len(server.requests)
    (p,) = judge.yes_probability(images[:1], ["Is it red?"])
    assert math.isnan(p)  # the echo is neither yes nor no
    assert len(server.requests) == asked + 1
    request = server.requests[-1].json  # the judge's own request, not the captioner's
    assert request["model"] == "vis" and request["logprobs"] is True
    assert request["max_tokens"] == 1 and _text_part(request).startswith("Is it red?")
    assert _image_part(request)["image_url"]["url"].startswith("data:image/jpeg;base64,")


def test_pickle_round_trip_after_use(server):
    llm = OpenAILLM("m", base_url=server.base_url, max_retries=0)
    llm.chat([_conv("a")])
    clone = pickle.loads(pickle.dumps(llm))
    assert clone.chat([_conv("b")]) == ["echo: b"]
    llm.close()
    clone.close()


def test_import_does_not_pull_torch():
    code = (
        "import sys, factcap.backends.openai_compat;"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the fake server itself ------------------------------------------------------------------


def test_fake_server_close_wakes_a_handler_in_a_long_delay():
    srv = FakeOpenAIServer(delay=3600).start()
    llm = OpenAILLM("m", base_url=srv.base_url, timeout=0.2, max_retries=0)
    with pytest.raises(RemoteError):
        llm.chat([_conv("x")])
    wait_until(lambda: srv.in_flight == 1, "the handler sleeps out its hour")
    srv.close()
    srv.close()
    wait_until(lambda: srv.in_flight == 0, "the sleeping handler woke up when the server closed")
    assert srv.pending_faults == 0


# -- the SDK and Azure OpenAI ----------------------------------------------------------------

AZURE_VERSION = "2024-10-21"


@pytest.fixture
def no_azure_env(monkeypatch):
    for name in (
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_AD_TOKEN",
        "OPENAI_API_VERSION",
    ):
        monkeypatch.delenv(name, raising=False)


def _azure(server: FakeOpenAIServer, deployment: str = "gpt-4o-caps", **kw) -> OpenAILLM:
    kw = {"api_key": "az-key", "api_version": AZURE_VERSION, **FAST, **kw}
    return OpenAILLM(deployment, api_type="azure", base_url=server.origin, **kw)


def test_azure_sends_to_the_deployment_with_the_api_key_header(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-azure")
    llm = _azure(server)
    assert llm.endpoint == f"{server.origin}/openai/deployments/gpt-4o-caps/chat/completions"
    assert llm.chat([_conv("hi"), _conv("there")], max_new_tokens=5) == [
        "echo: hi",
        "echo: there",
    ]
    assert len(server.completions) == 2
    for req in server.completions:
        assert req.path == "/openai/deployments/gpt-4o-caps/chat/completions"
        assert req.query == {"api-version": AZURE_VERSION}
        assert req.headers["api-key"] == "az-key"
        # the OpenAI key of the environment never goes to Azure (SDKs before 3.x also send the
        # Azure key as a bearer token)
        assert req.headers.get("authorization", "Bearer az-key") == "Bearer az-key"
        assert "sk-not-for-azure" not in str(req.headers)
        assert req.json["model"] == "gpt-4o-caps" and req.json["max_tokens"] == 5


def test_azure_faults_behave_as_for_any_server(server, waits):
    server.script(Fault.rate_limit(retry_after=0.2), Fault.status(503))
    llm = _azure(server, max_retries=2, backoff=0.01)
    assert llm.chat([_conv("hi")]) == ["echo: hi"]
    assert len(waits) == 2 and 0.2 <= waits[0] <= 0.2 + 0.5 * 0.01
    server.script(*[Fault.status(500, body='{"error": "deployment overloaded"}')] * 3)
    with pytest.raises(RemoteError) as info:
        llm.chat([_conv("again")])
    assert info.value.status == 500 and "3 attempt" in str(info.value)
    assert llm.endpoint in str(info.value) and "deployment overloaded" in str(info.value)


def test_azure_reads_the_sdk_environment_variables(server, monkeypatch, no_azure_env):
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.origin + "/")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-env")
    monkeypatch.setenv("OPENAI_API_VERSION", "2025-01-01-preview")
    llm = OpenAILLM("dep", api_type="azure", **FAST)
    assert llm.base_url == server.origin
    assert llm.chat([_conv("x")]) == ["echo: x"]
    (req,) = server.completions
    assert req.headers["api-key"] == "az-env"
    assert req.query == {"api-version": "2025-01-01-preview"}


def test_azure_says_what_it_lacks(no_azure_env):
    with pytest.raises(ValueError, match="api_version") as info:
        OpenAILLM("dep", api_type="azure", base_url="https://res.openai.azure.com", api_key="k")
    assert "base_url" not in str(info.value) and "api_key" not in str(info.value)
    with pytest.raises(ValueError, match=r"base_url.*api_version.*api_key"):
        OpenAILLM("dep", api_type="azure")
    with pytest.raises(ValueError, match="api_type"):
        OpenAILLM("m", api_type="anthropic")
    with pytest.raises(ValueError, match="azure"):
        OpenAILLM("m", api_version=AZURE_VERSION)  # an OpenAI server has no api-version


def test_azure_answers_are_cached(server, tmp_path):
    assert _azure(server, cache_dir=tmp_path).chat([_conv("q")]) == ["echo: q"]
    assert _azure(server, cache_dir=tmp_path).chat([_conv("q")]) == ["echo: q"]
    assert len(server.completions) == 1


def test_azure_from_the_config(server, no_azure_env):
    from factcap.config import load_config

    section = {
        "api_type": "azure",
        "api_version": AZURE_VERSION,
        "base_url": server.origin,
        "api_key": "az-config",
        "cache": False,
    }
    config = load_config(
        preset="api", overrides={"openai": section, "llm": {"model": "openai:claims-dep"}}
    )
    llm = registry.build_configured(config, "llm").backend
    assert (llm.api_type, llm.api_version) == ("azure", AZURE_VERSION)
    assert llm.chat([_conv("x")]) == ["echo: x"]
    (req,) = server.completions
    assert req.path == "/openai/deployments/claims-dep/chat/completions"
    assert req.headers["api-key"] == "az-config"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"api_type": "bedrock"}, "api_type"),
        ({"api_version": AZURE_VERSION}, "api_version is for api_type: azure"),
        ({"api_type": "azure", "api_version": ""}, "api_version"),
    ],
)
def test_config_checks_the_new_keys(section, message):
    from factcap.config import load_config
    from factcap.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(preset="api", overrides={"openai": section})


def test_old_openai_sections_load_as_before():
    from factcap.config import load_config

    old = {"base_url": "http://gpu:8000/v1", "api_key": None, "timeout": 60, "max_retries": 2}
    config = load_config(preset="api", overrides={"openai": old})
    assert config.openai.api_type == "openai" and config.openai.api_version is None
    llm = registry.build_configured(config, "llm").backend
    assert llm.endpoint == "http://gpu:8000/v1/chat/completions"


def test_concurrency_bound_holds_across_batches_called_together():
    # two batches of four call one backend with max_concurrency 2 at once: still two in flight
    pairs = Rendezvous(2)
    with FakeOpenAIServer(pairs) as srv:
        llm = OpenAILLM("m", base_url=srv.base_url, max_concurrency=2, timeout=2 * WAIT)
        out: dict[int, list[str]] = {}
        threads = [
            threading.Thread(
                target=lambda k=k: out.__setitem__(
                    k, llm.chat([_conv(f"{k}-{i}") for i in range(4)])
                )
            )
            for k in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert out == {k: [f"echo: {k}-{i}" for i in range(4)] for k in range(2)}
    assert pairs.met and srv.max_in_flight == 2


def test_sdk_is_imported_at_the_first_request_only(server):
    code = (
        "import sys, factcap, factcap.config, factcap.pipeline, factcap.engine, factcap.cli,"
        " factcap.backends.registry\n"
        "from factcap.backends.openai_compat import OpenAILLM\n"
        f"llm = OpenAILLM('m', base_url={server.base_url!r}, cache=False)\n"
        "print('openai' in sys.modules, 'torch' in sys.modules)\n"
        "llm.chat([[{'role': 'user', 'content': 'hi'}]])\n"
        "print('openai' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


def test_without_the_sdk_a_backend_says_how_to_install_it(monkeypatch):
    from factcap.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "openai", None)  # as if not installed
    with pytest.raises(MissingDependency, match=r"pip install 'factcap\[openai\]'") as info:
        OpenAILLM("m")
    assert "\n" not in str(info.value)
    ok, where = registry.availability("openai:m")  # what `factcap models check` says
    assert not ok and "factcap[openai]" in where
