"""Whole-pipeline fault injection against a real HTTP peer.

A job from the ``api`` preset (every generative role over the fake OpenAI server on loopback,
the detector local: tiny Grounding DINO, OCR off) runs over 16 photos in batches of 4 while
the server misbehaves on cue, each fault aimed at one item's request of one stage:

- batch 0 (items 0-3): faults that retries recover from — 500 then 503 on a caption, a 429
  with ``Retry-After`` on a claim extraction, no reply at all (a client timeout) on a VQA
  question, a dropped connection on a compose request;
- batch 1 (items 4-7): no fault;
- batch 2 (items 8-11): caption requests that keep failing — 500 on every attempt, a garbage
  200 body, dropped connections and then no reply (a timeout as the last attempt's failure),
  a dropped connection on every attempt;
- batch 3 (items 12-15): compose requests that answer 500 on every attempt.

Every failing item's batch holds only failing items, so what is asserted holds whether the
pipeline fails a whole batch or only the failed items of it.

Nothing here depends on the machine's speed: the requests meant to time out get no answer
until the test ends (:class:`Hangs`), so the client's timeout certainly expires on them, and
that timeout is generous enough that every other request is answered well within it, however
loaded the machine. Only two requests are held, so the test waits two timeouts.

Then ``--retry-failed`` is replayed (the failed records dropped, those items run again by a new
pipeline with the same response cache) and the server's request log shows what the cache
saved; a third, fresh job over everything makes no request at all.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from factcap.engine import JsonlSink, read_records
from factcap.engine.resume import completed_ids
from factcap.inputs import expand
from factcap.pipeline import Pipeline
from fake_openai import FakeOpenAIServer, Fault, Reply

pytestmark = pytest.mark.slow

MODEL = "openai:Qwen/Qwen2.5-VL-7B-Instruct"
N_ITEMS, BATCH = 16, 4
BASE_WIDTH, STEP = 64, 8  # item i is BASE_WIDTH + STEP * i pixels wide: the server tells them apart
TIMEOUT = 20.0  # far above any normal answer's latency, under load too; a held request costs this
MAX_RETRIES = 2  # three attempts
_PHOTO = re.compile(r"photo (\d+)\b")


# -- what the server sees and answers ----------------------------------------------------------


def _image_width(request: dict) -> int | None:
    for message in request.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    data = part["image_url"]["url"].split(",", 1)[1]
                    return Image.open(io.BytesIO(base64.b64decode(data))).size[0]
    return None


def _text(request: dict) -> str:
    content = request["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content if p.get("type") == "text")


def stage(request: dict) -> str:
    """caption | vqa | claims | compose."""
    if _image_width(request) is not None:
        return "vqa" if request.get("logprobs") else "caption"
    return "claims" if "checkable claims" in request["messages"][0]["content"] else "compose"


def item(request: dict) -> int:
    """The index of the item a request is about."""
    width = _image_width(request)
    if width is not None:
        return (width - BASE_WIDTH) // STEP
    return int(_PHOTO.search(_text(request)).group(1))


def claims_for(i: int) -> list[dict]:
    return [
        {"kind": "object", "text": "There is a cat.", "subject": "cat"},
        {
            "kind": "attribute",
            "text": f"The sofa in photo {i} is red.",
            "subject": "sofa",
            "question": "Is the sofa red?",
        },
    ]


def caption_for(i: int) -> str:
    return f"A cat rests on a red sofa, photo {i}."


def answer(request: dict) -> Reply | str:
    kind, i = stage(request), item(request)
    if kind == "vqa":
        return Reply("yes", top_logprobs={"yes": -0.05, "no": -3.0})
    if kind == "caption":
        return f"A cat on a red sofa in photo {i}."
    if kind == "claims":
        return json.dumps(claims_for(i))
    return caption_for(i)


def aim(server: FakeOpenAIServer, kind: str, i: int, *faults: Fault) -> None:
    server.fault_when(lambda req: stage(req) == kind and item(req) == i, *faults)


class Hangs:
    """The server's ``respond``: :func:`answer`, except that the next ``times`` requests
    about ``(stage, item)`` (see :meth:`aim`) get no answer until :meth:`release`, so the
    client's timeout expires on them whatever the machine's speed."""

    def __init__(self) -> None:
        self.left: Counter[tuple[str, int]] = Counter()
        self.held: Counter[tuple[str, int]] = Counter()
        self._released = threading.Event()
        self._lock = threading.Lock()

    def aim(self, kind: str, i: int, times: int = 1) -> None:
        self.left[(kind, i)] += times

    def __call__(self, request: dict) -> Reply | str:
        key = (stage(request), item(request))
        with self._lock:
            hold = self.left[key] > 0
            if hold:
                self.left[key] -= 1
                self.held[key] += 1
        if hold:
            self._released.wait()
        return answer(request)

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> Hangs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def script_faults(server: FakeOpenAIServer, hangs: Hangs) -> None:
    # batch 0: recovered by retries
    aim(server, "caption", 0, Fault.status(500), Fault.status(503))
    aim(server, "claims", 1, Fault.rate_limit(retry_after=0.3))
    hangs.aim("vqa", 2)
    aim(server, "compose", 3, Fault.drop())
    # batch 2: caption requests that keep failing
    attempts = MAX_RETRIES + 1
    aim(server, "caption", 8, *[Fault.status(500)] * attempts)
    aim(server, "caption", 9, Fault.garbage())  # a 200 that is not a completion: not retried
    aim(server, "caption", 10, *[Fault.drop()] * (attempts - 1))
    hangs.aim("caption", 10)  # the last attempt: the failure recorded is the timeout
    aim(server, "caption", 11, *[Fault.drop()] * attempts)
    # batch 3: compose requests that keep failing
    for i in range(12, 16):
        aim(server, "compose", i, *[Fault.status(500)] * attempts)


# -- the job -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    from factcap.examples import example_paths

    photos = [Image.open(p).convert("RGB") for p in example_paths()]
    folder = tmp_path_factory.mktemp("photos")
    for i in range(N_ITEMS):
        photo = photos[i % len(photos)].resize((BASE_WIDTH + STEP * i, 48))
        photo.save(folder / f"img{i:02d}.jpg", quality=90)
    return folder


def pipeline(server: FakeOpenAIServer, cache_dir: Path, **overrides: Any) -> Pipeline:
    """The ``api`` preset against ``server``: two captioners, LLM and VQA remote (tiny
    retry waits, response cache in ``cache_dir``), tiny Grounding DINO, no OCR."""
    remote = {"backoff": 0.01, "max_retry_wait": 1.0, "cache_dir": str(cache_dir)}
    prompts = ["Describe this image in detail.", "List everything visible in this image."]
    config: dict[str, Any] = {
        "captioners": [
            {"model": MODEL, "options": {"max_new_tokens": 64, "prompt": p, **remote}}
            for p in prompts
        ],
        "llm": {"options": remote},
        "vqa": {"options": remote},
        "detector": {"model": "tiny:grounding_dino", "options": {"box_threshold": 0.0}},
        "ocr": None,
        "batch_size": BATCH,
        "styles": ["detailed"],
        "verify": {"alternatives": False},  # one VQA request per claim: the faults' count
        "openai": {
            "base_url": server.base_url,
            "api_key": "sk-test",
            "timeout": TIMEOUT,
            "max_retries": MAX_RETRIES,
            "max_concurrency": 4,
        },
    }
    return Pipeline.from_preset("api", **{**config, **overrides})


def run_job(pipe: Pipeline, image_dir: Path, out: Path, retry_failed: bool = False) -> int:
    """A ``factcap caption DIR -o out.jsonl [--retry-failed]`` job; returns how many it ran."""
    done = completed_ids(out, "jsonl", retry_failed=True) if retry_failed else set()
    todo = [it for it in expand(sorted(image_dir.glob("*.jpg"))) if it.id not in done]
    with JsonlSink(out, append=retry_failed) as sink:
        for it, record in pipe.run_items(todo):
            sink.write(record, it)
    return len(todo)


def index_of(record: dict) -> int:
    return int(re.search(r"img(\d+)", record["source"]).group(1))


def by_index(out: Path) -> dict[int, dict]:
    records = list(read_records(out))
    counts = Counter(r["id"] for r in records)
    assert set(counts.values()) == {1}, f"lost or duplicated records: {counts}"
    assert len(records) == N_ITEMS
    return {index_of(r): r for r in records}


def requests_about(server: FakeOpenAIServer, since: int = 0) -> list[tuple[str, int]]:
    return [(stage(r.json), item(r.json)) for r in server.completions[since:]]


# -- the test ----------------------------------------------------------------------------------


def test_faults_are_retried_or_recorded_and_a_retried_job_hits_the_cache(image_dir, tmp_path):
    cache_dir, out = tmp_path / "request-cache", tmp_path / "out.jsonl"
    hangs = Hangs()
    with FakeOpenAIServer(hangs) as server, hangs:  # the held requests go before the server
        script_faults(server, hangs)
        assert run_job(pipeline(server, cache_dir), image_dir, out) == N_ITEMS
        assert server.pending_faults == 0  # every scripted fault was met
        assert +hangs.left == Counter()  # and every request meant to hang did
        assert hangs.held == {("vqa", 2): 1, ("caption", 10): 1}
        records = by_index(out)
        endpoint = f"{server.base_url}/chat/completions"

        # recovered and untouched items are complete and right
        for i in range(8):
            r = records[i]
            assert r["status"] == "ok", (i, r["error"])
            assert [p["text"] for p in r["proposals"]] == [f"A cat on a red sofa in photo {i}."] * 2
            assert r["captions"] == {"detailed": caption_for(i)}
            sofa = {c["text"]: c for c in r["claims"]}[f"The sofa in photo {i} is red."]
            assert sofa["verdict"] == "supported"
            assert sofa["score"] == pytest.approx(1 / (1 + math.exp(-2.95)))
        # the recovered ones really were faulted, and retried
        seen = Counter(requests_about(server))
        assert seen[("caption", 0)] == 3 + 1  # the first captioner took 3 attempts
        assert seen[("claims", 1)] == 2 and seen[("compose", 3)] == 2
        for i in range(8):  # one VQA request per claim that has a VQA answer, plus the timeout
            asked = sum("vqa_p_yes" in c["evidence"] for c in records[i]["claims"])
            assert asked >= 1 and seen[("vqa", i)] == asked + (i == 2)

        # items whose requests kept failing are errors naming the server and the failure
        for i in range(8, 12):
            err = records[i]["error"]
            assert records[i]["status"] == "error" and records[i]["captions"] == {}
            assert f"captioner {MODEL} failed" in err["message"] and endpoint in err["message"]
            assert re.search(
                r"HTTP 500|did not return a chat completion|timed out|connection failed",
                err["message"],
            )
        assert "after 3 attempt(s): HTTP 500" in records[8]["error"]["message"]
        for i in range(12, 16):
            err = records[i]["error"]
            assert records[i]["status"] == "error"
            assert f"LLM {MODEL} failed while composing" in err["message"]
            assert endpoint in err["message"] and "after 3 attempt(s): HTTP 500" in err["message"]
            assert err["type"] in ("RemoteError", "RemoteBatchError")

        # --retry-failed: a new pipeline (a new process would build one) and the same cache
        before = len(server.completions)
        assert run_job(pipeline(server, cache_dir), image_dir, out, retry_failed=True) == 8
        again = Counter(requests_about(server, before))
        records = by_index(out)
        assert all(r["status"] == "ok" for r in records.values())
        for i in range(8, 16):
            assert records[i]["captions"] == {"detailed": caption_for(i)}
        # batch 3 paid for its captions, claims and VQA in the first run: only compose is asked
        assert {k: n for k, n in again.items() if k[1] >= 12} == {
            ("compose", i): 1 for i in range(12, 16)
        }
        # batch 2 got nothing the first time, so everything is asked now
        assert {s for s, i in again if i in range(8, 12)} == {"caption", "claims", "vqa", "compose"}
        assert all(i >= 8 for _, i in again)

        # a fresh job over everything: every answer is in the cache, the server hears nothing
        before = len(server.completions)
        fresh = tmp_path / "fresh.jsonl"
        assert run_job(pipeline(server, cache_dir), image_dir, fresh) == N_ITEMS
        assert len(server.completions) == before
        assert {i: r["captions"] for i, r in by_index(fresh).items()} == {
            i: r["captions"] for i, r in records.items()
        }


# -- structured output for claim extraction ----------------------------------------------------


def _claims_only_when_structured(request: dict) -> Reply | str:
    kind = stage(request)
    if kind == "claims":
        i = item(request)
        if "response_format" in request:
            return json.dumps({"claims": claims_for(i)})
        return f"Here are the claims for photo {i}: " + json.dumps(claims_for(i)) + " Done."
    return answer(request)


@pytest.mark.parametrize("server_has_it", [True, False], ids=["accepted", "rejected"])
def test_claim_extraction_asks_for_structured_output(image_dir, tmp_path, server_has_it):
    from factcap.pipeline import parsing

    reject = () if server_has_it else ("response_format",)
    with FakeOpenAIServer(_claims_only_when_structured, reject_fields=reject) as server:
        pipe = pipeline(server, tmp_path / "cache", detector=None, vqa=None)
        records = pipe.caption(sorted(image_dir.glob("*.jpg"))[:8])
        claims = [r for r in server.completions if stage(r.json) == "claims"]
    assert [r.status for r in records] == ["ok"] * 8
    for i, r in enumerate(records):
        assert [c.text for c in r.claims] == [c["text"] for c in claims_for(i)]
        assert not any("repair" in n or "noun phrases" in n for n in r.notes)
    asked = [r for r in claims if "response_format" in r.json]
    assert asked[0].json["response_format"]["json_schema"]["schema"] == parsing.CLAIMS_JSON_SCHEMA
    if server_has_it:
        assert len(claims) == len(asked) == 8
    else:  # rejected by the first batch's requests, then never asked again
        assert 1 <= len(asked) <= BATCH and len(claims) == 8 + len(asked)
        assert all(r.fault is None for r in claims)
