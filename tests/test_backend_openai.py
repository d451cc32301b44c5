"""OpenAI-compatible backends against a real local HTTP server speaking the wire format."""

from __future__ import annotations

import base64
import io
import math
import pickle
import subprocess
import sys
import time

import pytest
from PIL import Image

from factcap.backends import registry
from factcap.backends.openai_compat import (
    OpenAICaptioner,
    OpenAIJudge,
    OpenAILLM,
    RemoteError,
)
from factcap.backends.roles import LLM, VQA, Captioner
from factcap.errors import FactcapError
from fake_openai import FakeOpenAIServer, Fault, Reply

FAST = {"backoff": 0.01, "max_retry_wait": 2.0}


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
    # the server holds each request 0.5 s, so a client that sends them one by one never has
    # two in flight (the speed itself is measured by a benchmark, not here)
    with FakeOpenAIServer(delay=0.5) as srv:
        llm = OpenAILLM("m", base_url=srv.base_url, max_concurrency=8)
        out = llm.chat([_conv(f"q{i}") for i in range(8)])
    assert out == [f"echo: q{i}" for i in range(8)]
    assert srv.max_in_flight >= 4


def test_order_is_preserved_when_replies_finish_in_reverse():
    def slow_first(request: dict) -> str:
        i = int(request["messages"][-1]["content"])
        time.sleep(0.03 * (6 - i))  # request 0 answers last
        return f"answer {i}"

    with FakeOpenAIServer(slow_first) as srv:
        out = OpenAILLM("m", base_url=srv.base_url).chat([_conv(str(i)) for i in range(6)])
    assert out == [f"answer {i}" for i in range(6)]


def test_max_concurrency_bounds_requests_in_flight():
    with FakeOpenAIServer(delay=0.05) as srv:
        llm = OpenAILLM("m", base_url=srv.base_url, max_concurrency=2)
        out = llm.chat([_conv(str(i)) for i in range(6)])
    assert out == [f"echo: {i}" for i in range(6)]
    assert srv.max_in_flight == 2


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


def test_429_retry_after_is_honoured(server):
    server.script(Fault.rate_limit(retry_after=1))
    llm = OpenAILLM("m", base_url=server.base_url, max_retries=1, backoff=0.01)
    start = time.perf_counter()
    assert llm.chat([_conv("hi")]) == ["echo: hi"]
    elapsed = time.perf_counter() - start
    first, second = server.completions
    assert second.received_at - first.received_at >= 0.95
    assert elapsed < 3.0


def test_retry_after_is_capped(server):
    server.script(Fault.rate_limit(retry_after=3600))
    llm = OpenAILLM("m", base_url=server.base_url, max_retries=1, backoff=0.01, max_retry_wait=0.2)
    start = time.perf_counter()
    assert llm.chat([_conv("hi")]) == ["echo: hi"]
    assert time.perf_counter() - start < 2.0


def test_timeout_raises_after_retries(server):
    server.script(Fault.delay(5), Fault.delay(5))
    llm = OpenAILLM("m", base_url=server.base_url, timeout=0.3, max_retries=1, **FAST)
    start = time.perf_counter()
    with pytest.raises(RemoteError, match="timed out") as info:
        llm.chat([_conv("hi")])
    assert time.perf_counter() - start < 3.0
    assert info.value.status is None and server.base_url in str(info.value)
    assert len(server.completions) == 2


def test_timeout_then_success(server):
    server.script(Fault.delay(5))
    llm = OpenAILLM("m", base_url=server.base_url, timeout=0.3, max_retries=1, **FAST)
    assert llm.chat([_conv("hi")]) == ["echo: hi"]


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
    with pytest.raises(RemoteError, match="404"):
        llm.chat([_conv("a"), _conv("b")])


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
        judge = OpenAIJudge("vlm", base_url=srv.base_url)
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
        (p,) = OpenAIJudge("vlm", base_url=srv.base_url).yes_probability(images[:1], ["q?"])
    y = math.exp(-1.0) + math.exp(-2.0) + math.exp(-3.0)
    n = math.exp(-1.5) + math.exp(-2.5)
    assert p == pytest.approx(y / (y + n))


def test_judge_neither_yes_nor_no_is_nan(images):
    with FakeOpenAIServer(_judge_reply({"maybe": -0.2, "perhaps": -1.0}, text="maybe")) as srv:
        (p,) = OpenAIJudge("vlm", base_url=srv.base_url).yes_probability(images[:1], ["q?"])
    assert math.isnan(p)


@pytest.mark.parametrize(
    ("text", "expected"), [("Yes.", 1.0), ("no", 0.0), ("I cannot tell", float("nan"))]
)
def test_judge_without_logprobs_falls_back_to_text(images, text, expected):
    with FakeOpenAIServer(_judge_reply(None, text=text)) as srv:
        (p,) = OpenAIJudge("vlm", base_url=srv.base_url).yes_probability(images[:1], ["q?"])
    assert p == expected or (math.isnan(p) and math.isnan(expected))


def test_judge_can_require_logprobs(images):
    with FakeOpenAIServer(_judge_reply(None)) as srv:
        judge = OpenAIJudge("vlm", base_url=srv.base_url, require_logprobs=True)
        with pytest.raises(RemoteError, match="no logprobs"):
            judge.yes_probability(images[:1], ["q?"])


def test_judge_length_mismatch(images):
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        OpenAIJudge("vlm").yes_probability(images[:2], ["only one question"])


def test_judge_instruction_option(images):
    with FakeOpenAIServer(_judge_reply({"yes": -0.5, "no": -1.0})) as srv:
        judge = OpenAIJudge("vlm", base_url=srv.base_url, instruction="Reply yes or no only.")
        (p,) = judge.yes_probability(images[:1], ["  Is there a cat? "])
    assert _text_part(srv.completions[0].json) == "Is there a cat? Reply yes or no only."
    assert p == pytest.approx(math.exp(-0.5) / (math.exp(-0.5) + math.exp(-1.0)))
    with pytest.raises(ValueError, match="instruction"):
        OpenAIJudge("vlm", instruction=None)


def test_option_values_are_checked():
    with pytest.raises(ValueError, match="max_new_tokens"):
        OpenAICaptioner("vlm", max_new_tokens=0)
    with pytest.raises(ValueError, match="prompt"):
        OpenAICaptioner("vlm", prompt="  ")


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
    assert isinstance(judge, OpenAIJudge)
    assert server.requests[-1].json["model"] == "vis"


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


def test_fake_server_close_is_prompt_during_a_long_delay():
    srv = FakeOpenAIServer(delay=30).start()
    llm = OpenAILLM("m", base_url=srv.base_url, timeout=0.2, max_retries=0)
    with pytest.raises(RemoteError):
        llm.chat([_conv("x")])
    start = time.perf_counter()
    srv.close()
    srv.close()
    assert time.perf_counter() - start < 2.0
    assert srv.pending_faults == 0
