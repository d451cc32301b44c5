"""The ``api`` preset end to end: every generative role over a real HTTP fake OpenAI server
on loopback, the detector local (tiny Grounding DINO)."""

from __future__ import annotations

import json
import math

import pytest

from factcap.pipeline import Pipeline
from fake_openai import FakeOpenAIServer, Reply

pytestmark = pytest.mark.slow

CLAIMS = [
    {"kind": "object", "text": "There is a cat.", "subject": "cat"},
    {
        "kind": "attribute",
        "text": "The sofa is red.",
        "subject": "sofa",
        "question": "Is the sofa red?",
    },
]


def server_answer(request: dict) -> Reply | str:
    content = request["messages"][-1]["content"]
    has_image = isinstance(content, list) and any(p.get("type") == "image_url" for p in content)
    if has_image and request.get("logprobs"):  # the VQA: a red sofa, no other colour
        question = " ".join(p.get("text", "") for p in content)
        if "sofa" in question and "red" not in question:
            return Reply("no", top_logprobs={"no": -0.05, "yes": -3.0})
        return Reply("yes", top_logprobs={"yes": -0.05, "no": -3.0})
    if has_image:
        return "A cat on a red sofa."
    if "checkable claims" in content:
        return "```json\n" + json.dumps(CLAIMS) + "\n```"
    return "A cat rests on a red sofa."


def test_api_preset_runs_every_generative_role_remotely(photos):
    with FakeOpenAIServer(server_answer) as server:
        pipe = Pipeline.from_preset(
            "api",
            detector={"model": "tiny:grounding_dino", "options": {"box_threshold": 0.0}},
            ocr=None,
            openai={
                "base_url": server.base_url,
                "api_key": "sk-test",
                "max_concurrency": 4,
                "cache": False,  # count every request: both images ask the same claims
            },
        )
        records = pipe.caption(photos[:2], styles=["detailed", "alt"])
        seen = [r.json for r in server.requests]
    assert [r.status for r in records] == ["ok", "ok"]
    for record in records:
        assert [p.text for p in record.proposals] == ["A cat on a red sofa."] * 2
        claims = {c.text: c for c in record.claims}
        assert claims["The sofa is red."].verdict == "supported"
        assert claims["The sofa is red."].score == pytest.approx(1 / (1 + math.exp(-2.95)))
        assert record.captions == {
            "detailed": "A cat rests on a red sofa.",
            "alt": "A cat rests on a red sofa.",
        }
    assert {r["model"] for r in seen} == {"Qwen/Qwen2.5-VL-7B-Instruct"}
    # 2 captioners x 2 images, 2 claim extractions, VQA questions, 2 styles x 2 images
    assert sum(1 for r in seen if r.get("logprobs")) >= 2
    assert len(seen) >= 4 + 2 + 2 + 4
    assert all(r.headers["authorization"] == "Bearer sk-test" for r in server.requests)
