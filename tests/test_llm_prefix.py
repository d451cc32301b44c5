"""Chat LLMs prefill the prompts' shared prefix once (issue 16, item 4): the same greedy replies
as the plain path, prefix + remainders exactly the plain prompts, kept prefixes serve later
calls, models whose cache is not plain attention take the plain path; the claims and compose
stages' OpenAI requests start with the same bytes; the llm_claims benchmark runs."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from factcap.backends import registry
from factcap.pipeline.claims import extract_claims
from factcap.pipeline.compose import compose
from factcap.pipeline.work import Work
from factcap.prompts import shipped_template
from factcap.schema import Claim, ClaimKind, Proposal, Record, Verdict
from fake_openai import FakeOpenAIServer
from spies import count_forwards, rejected, spy_generate

ROOT = Path(__file__).resolve().parents[1]


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("llm_claims", ROOT / "benchmarks/llm_claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _benchmark_module()


def _works(count: int = len(BENCH.CAPTIONS)) -> list[Work]:
    """Items with two proposals each (the benchmark's captions: different lengths), and
    three checked claims for compose."""
    works = []
    for i, texts in enumerate(BENCH.CAPTIONS[:count]):
        record = Record(id=f"image{i}", source=f"image{i}.jpg")
        record.proposals = [
            Proposal(model=m, text=t) for m, t in zip(BENCH.LABELS, texts, strict=True)
        ]
        words = texts[0].split()
        record.claims = [
            Claim(kind=ClaimKind.OBJECT, text=f"There is {words[0]} {words[1]}.", subject=words[1]),
            Claim(kind=ClaimKind.OBJECT, text="There is a window.", subject="window"),
        ]
        record.claims[0].verdict, record.claims[1].verdict = Verdict.SUPPORTED, Verdict.REFUTED
        works.append(Work(record))
    return works


CLAIM = '[{"kind": "object", "text": "There is a cat.", "subject": "cat"}]'


class Recorder:
    name = "recorder"

    def __init__(self):
        self.sent = []

    def chat(self, conversations, max_new_tokens=256, temperature=0.0, json_schema=None):
        self.sent += [list(c) for c in conversations]
        return [CLAIM if json_schema else "A caption."] * len(conversations)


def _compose_conversations(works, style="detailed"):
    recorder = Recorder()
    compose(works, recorder, [style], instruction=None, max_new_tokens=8, temperature=0.0)
    return recorder.sent


@pytest.fixture(scope="module")
def llm():
    return registry.build("llm", "tiny:llm", min_new_tokens=10)


@pytest.fixture(scope="module")
def claims():
    return BENCH.claims_conversations()  # 9 conversations, as extract_claims builds them


SYSTEM = (
    "You answer questions about pictures in a few words, and you never make up details "
    "that are not there."
)
QUESTIONS = [
    "Name a fruit.",
    "What is on the red sofa next to the window?",
    "Count the dogs.",
    "Is the sky blue or grey today, and are there clouds?",
    "Read the sign.",
]
#: Short prompts sharing a system prompt: the tiny LLM's replies to them differ (to its
#: 900-token claims prompts it answers alike), so they show a wrong remainder.
SHORT = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}] for q in QUESTIONS]


def _both(llm, conversations, max_new_tokens=12):
    """Replies with prefix reuse on, then off (the plain path), from the same state."""
    llm.reuse_prefix = True
    on = llm.chat(conversations, max_new_tokens=max_new_tokens)
    llm.reuse_prefix = False
    off = llm.chat(conversations, max_new_tokens=max_new_tokens)
    llm.reuse_prefix = True
    return on, off


def _reused(llm, call) -> bool:
    return call.get(llm._cache_arg) is not None


@pytest.mark.slow
def test_shared_prefix_gives_the_plain_paths_replies(llm, claims, monkeypatch):
    assert llm.reuse_prefix and llm.prefix_reuse_off is None
    llm.forget_prefixes()
    composes = _compose_conversations(_works(5))
    calls = spy_generate(monkeypatch, llm.model)
    batches = [
        ([claims[0]], False),  # a first lone prompt: nothing to share with yet
        (claims[1:3], True),
        (claims[:5], True),  # different lengths: padding between prefix and remainders
        (claims[3:9], True),
        (composes, True),
        ([claims[2], composes[1]], False),  # claims and compose share only the chat header
        ([claims[6]], True),  # a lone prompt shares the claims prefix with earlier ones
        ([composes[3]], True),
        (SHORT, True),
        ([SHORT[3]], True),
        (SHORT[1:3], True),
    ]
    for conversations, expect_reuse in batches:
        start = len(calls)
        on, off = _both(llm, conversations)
        assert on == off, conversations
        assert [_reused(llm, c) for c in calls[start:]] == [expect_reuse, False]
        if conversations is SHORT:
            assert len(set(on)) == len(SHORT)  # the replies differ from item to item
    assert llm.prefix_tokens_saved > 0


@pytest.mark.slow
def test_prefix_and_remainders_are_exactly_the_plain_prompts(llm, claims):
    from factcap.backends.hf_llm import MIN_SHARED_TOKENS

    llm.forget_prefixes()
    rows = llm.prompt_ids(claims[:5])
    batch, cache = llm.prefixed_batch(rows)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    length = cache.get_seq_length()
    assert length >= MIN_SHARED_TOKENS and mask[:, :length].all()
    for i, conversation in enumerate(claims[:5]):
        plain = llm.encode([conversation])["input_ids"][0].tolist()
        assert ids[i][mask[i].bool()].tolist() == plain == rows[i]
        assert mask[i, -1] == 1  # each row ends in its own last token
    assert ids.shape[0] == 5 and cache.layers[0].keys.shape[0] == 5  # the prefix, repeated
    # the next-token logits on the prefix's cache are the plain batch's
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, length:]
    with torch.inference_mode():
        reused = llm.model(
            input_ids=ids[:, length:],
            attention_mask=mask,
            position_ids=positions,
            **{llm._cache_arg: cache},
        ).logits[:, -1]
        plain = llm.model(**llm.encode(claims[:5])).logits[:, -1]
    torch.testing.assert_close(reused, plain, atol=1e-4, rtol=0)
    assert (plain[1:] - plain[0]).abs().max() > 1e-3  # the rows' logits are not all alike
    # the shared prefix: the chat header, the template's fixed text before the captions,
    # and the start of the quoted data (both stages' first label)
    head = llm.tokenizer.decode(ids[0][:length])
    fixed = shipped_template("claims").split("{proposals}")[0]
    assert head.startswith("<|endoftext|><|im_start|>user\n" + fixed + "<data>\n[1] from hf:")


@pytest.mark.slow
def test_kept_prefixes_serve_later_calls(llm, claims):
    from factcap.backends.hf_vlm import common_prefix_length

    llm.forget_prefixes()
    first, second, third = claims[4:8], claims[:4], [claims[0], claims[3]]
    p1, p2, p3 = (common_prefix_length(llm.prompt_ids(b)) for b in (first, second, third))
    assert p3 < p1  # "a cat ...", "two dogs ...": the third batch shares less

    prefills, handle = count_forwards(llm.model)
    try:
        for batch in (first, second, third):
            start, saved = len(prefills), llm.prefix_tokens_saved
            on, off = _both(llm, batch)
            assert on == off
            new = [kw["input_ids"].shape for kw, _ in prefills[start:]]
            shared = common_prefix_length(llm.prompt_ids(batch))
            ones = [s[1] for s in new if s[0] == 1]  # the batch-1 prefills of the prefix
            if batch is first:
                assert ones == [p1]  # nothing kept yet: the whole prefix, once
            elif batch is second:
                assert ones == ([p2 - p1] if p2 > p1 else [])  # only past the kept one
            else:
                assert ones == []  # the kept one, cut to the shorter shared prefix
            assert llm.prefix_tokens_saved - saved == len(batch) * shared - sum(ones)
    finally:
        handle.remove()


@pytest.mark.slow
def test_claims_stage_with_repair_retries_is_unchanged(llm):
    """The tiny LLM's answers never parse: the stage's repair retry (conversation + answer
    + repair turn) runs too; both paths give the same records."""
    records = {}
    for reuse in (True, False):
        llm.reuse_prefix = reuse
        works = _works(6)
        extract_claims(works, llm, max_new_tokens=12, temperature=0.0, max_claims=8)
        compose(works, llm, ["short"], instruction=None, max_new_tokens=12, temperature=0.0)
        records[reuse] = [
            (w.record.notes, [c.text for c in w.record.claims], w.record.captions) for w in works
        ]
    llm.reuse_prefix = True
    assert records[True] == records[False]
    assert any("repair" in " ".join(notes) for notes, _, _ in records[True])


@pytest.mark.slow
def test_models_whose_cache_is_not_plain_attention_take_the_plain_path(monkeypatch, claims):
    from factcap.backends.hf_llm import prefix_reuse_blocker

    shapes = registry.build("llm", "bundled:shapes/llm")  # LFM2: convolution layers
    assert "LinearAttentionLayer" in shapes.prefix_reuse_off
    assert prefix_reuse_blocker(shapes.model) == shapes.prefix_reuse_off
    calls = spy_generate(monkeypatch, shapes.model)
    shapes.chat(claims[:3], max_new_tokens=4)
    assert len(calls) == 1 and not _reused(shapes, calls[0])

    off = registry.build("llm", "tiny:llm", reuse_prefix=False)
    calls = spy_generate(monkeypatch, off.model)
    off.chat(claims[:3], max_new_tokens=4)
    assert len(calls) == 1 and not _reused(off, calls[0]) and off.prefix_tokens_saved == 0
    with rejected(ValueError, match="reuse_prefix must be true or false"):
        registry.build("llm", "tiny:llm", reuse_prefix="yes")

    # a sliding-window config is refused too (the window would count the padding)
    sliding = copy.deepcopy(off.model)
    sliding.config.sliding_window = 8
    assert "DynamicSlidingWindowLayer" in prefix_reuse_blocker(sliding)
    sliding.config.sliding_window = None
    sliding.generation_config.cache_implementation = "static"
    assert "'static' cache" in prefix_reuse_blocker(sliding)


# -- OpenAI-compatible servers -----------------------------------------------------------


def _answer(request: dict):
    return CLAIM if "response_format" in request else "A caption."


def test_openai_requests_start_with_the_same_bytes():
    """Server-side prefix caching (vLLM, SGLang, llama.cpp, OpenAI) needs each stage's
    requests to begin with the same text: the template's fixed head, in the first (and only)
    message, before any item's data."""
    from factcap.backends.openai_compat import OpenAILLM

    works = _works(5)
    with FakeOpenAIServer(_answer) as server:
        llm = OpenAILLM("qwen", base_url=server.base_url, cache=False, max_concurrency=2)
        extract_claims(works, llm, max_new_tokens=64, temperature=0.0, max_claims=8)
        claims_sent = [r.json for r in server.completions]
        compose(works, llm, ["detailed"], instruction=None, max_new_tokens=64, temperature=0.0)
        compose_sent = [r.json for r in server.completions][len(claims_sent) :]
    for sent, name in ((claims_sent, "claims"), (compose_sent, "compose")):
        assert len(sent) == 5
        assert all([m["role"] for m in body["messages"]] == ["user"] for body in sent)
        texts = [body["messages"][0]["content"] for body in sent]
        fixed = shipped_template(name).split("{proposals}")[0]  # all of the instructions
        assert len(fixed) > 300 and all(t.startswith(fixed) for t in texts)
        # the common start goes on into the quoted data (the first caption's label)
        assert os.path.commonprefix(texts).startswith(fixed + "<data>\n[1] from hf:")
        # the rest of the request is the same for every item too
        rest = [{k: v for k, v in body.items() if k != "messages"} for body in sent]
        assert all(r == rest[0] for r in rest)


def test_one_items_compose_prompts_share_all_but_the_style():
    """Compose puts the style after the drafts and verdicts: a server that caches prefixes
    prefills an item's data once for all the styles asked."""
    from factcap.backends.openai_compat import OpenAILLM

    works = _works(2)
    with FakeOpenAIServer(_answer) as server:
        llm = OpenAILLM("qwen", base_url=server.base_url, cache=False, max_concurrency=1)
        extract_claims(works, llm, max_new_tokens=64, temperature=0.0, max_claims=8)
        skip = len(server.completions)
        compose(works, llm, ["detailed", "short"], instruction=None, max_new_tokens=64,
                temperature=0.0)  # fmt: skip
        sent = [r.json["messages"][0]["content"] for r in server.completions][skip:]
    detailed, short = sent[:2], sent[2:]
    for one, other in zip(detailed, short, strict=True):
        common = os.path.commonprefix([one, other])
        assert common.count("</data>") == 2  # the drafts and the checked facts
        assert len(common) > 0.7 * len(one)


# -- the benchmark -----------------------------------------------------------------------


@pytest.mark.slow
def test_llm_claims_benchmark_prints_its_line():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "llm_claims.py")]
        + ["--model", "tiny:llm", "--repeats", "1", "--new-tokens", "3"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["benchmark"] == "llm_claims" and line["model_type"] == "llama"
    assert line["same_replies"]
    # the captions come last: the prompts share all of the template's fixed text
    assert line["shared_tokens"] > 0.6 * line["prompt_tokens"]
    for size in ("batch1", "batch8"):
        figures = line[size]
        assert figures["reuse_on_tok_s"] > 0 and figures["reuse_off_tok_s"] > 0
        assert 0 < figures["prefill_saved"] < 1
