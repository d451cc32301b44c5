"""Chat-VLM judges reuse one prefill per image (issue 16): the same P(yes) as the per-pair
path, the image encoded once, the fallbacks; OpenAI judges send an image's questions one
after another with identical image bytes; the vlm_claims benchmark runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from factcap.backends import registry
from factcap.backends.openai_compat import OpenAIVQA, RemoteBatchError, image_order
from factcap.roles import batches_by_image
from fake_openai import FakeOpenAIServer, Fault, Reply
from spies import count_forwards, rejected

ROOT = Path(__file__).resolve().parents[1]

# Different lengths, shared first words ("Is there a ..."), one repeated in another group.
QUESTIONS = [
    "Is there a cat?",
    "Is there a cat on the red sofa next to the window?",
    "Is it red?",
    "Are there two dogs playing in the snow?",
    "Is the sky blue?",
]


@pytest.fixture(scope="module")
def three(photos):
    return photos[:3]


def _asks(images):
    """Three images: 5 questions about the first, 1 about the second, 3 about the third,
    interleaved."""
    a, b, c = images
    pairs = [
        (a, QUESTIONS[0]),
        (c, QUESTIONS[2]),
        (a, QUESTIONS[1]),
        (b, "Is this outdoors?"),
        (a, QUESTIONS[2]),
        (c, QUESTIONS[0]),
        (a, QUESTIONS[3]),
        (c, QUESTIONS[4]),
        (a, QUESTIONS[4]),
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


@pytest.mark.slow
def test_shared_prefix_equals_the_per_pair_path_on_tiny_chat_vlm(three):
    judge = registry.build("vqa", "tiny:chat_vlm")
    assert judge.reuse_prefix and judge.prefix_reuse_off is None
    images, questions = _asks(three)

    calls, handle = count_forwards(judge.model)
    try:
        reused = judge.yes_probability(images, questions)
    finally:
        handle.remove()
    judge.reuse_prefix = False
    plain_calls, handle = count_forwards(judge.model)
    try:
        plain = judge.yes_probability(images, questions)
    finally:
        handle.remove()
    judge.reuse_prefix = True

    np.testing.assert_allclose(reused, plain, atol=1e-4, rtol=0)
    assert len({round(p, 6) for p in reused}) > 3  # the questions are not all answered alike
    # per-pair: one pass, the image encoded once per pair
    assert len(plain_calls) == 1 and plain_calls[0][0]["pixel_values"].shape[0] == 9
    # reuse: a prefill with the pixels and a batched pass per image asked more than once,
    # then one plain pass for the image asked once; 3 image encodings instead of 9
    pixels = [kw["pixel_values"].shape[0] for kw, _ in calls if kw.get("pixel_values") is not None]
    assert len(calls) == 5 and pixels == [1, 1, 1]
    image_id = judge.model.config.image_token_id
    prefills = [kw["input_ids"] for kw, _ in calls if kw.get("pixel_values") is not None]
    batched = [kw["input_ids"] for kw, _ in calls if kw.get("pixel_values") is None]
    assert [int((p == image_id).sum()) for p in prefills] == [16, 16, 16]
    assert [b.shape[0] for b in batched] == [5, 3]
    assert all(not (b == image_id).any() for b in batched)


@pytest.mark.slow
def test_prefix_and_remainders_are_exactly_the_per_pair_prompts(three):
    judge = registry.build("vqa", "tiny:chat_vlm")
    prompts = [judge.question_prompt(q) for q in QUESTIONS]
    prefix, pixels, rests = judge.split_prompts(three[0], prompts)
    assert set(pixels) == {"pixel_values"}
    for prompt, rest in zip(prompts, rests, strict=True):
        alone = judge.encode([three[0]], [prompt])["input_ids"][0].tolist()
        assert prefix[0].tolist() + rest == alone
        assert rest  # at least the token whose logits answer
    # "Is ..." and "Are ...": the five prompts part right after the image; the first two
    # share "Is there a cat", so the prefix runs into the question (one token left at least)
    assert judge.tokenizer.decode(prefix[0]).endswith("<|im_start|>user\n" + "<image>" * 16)
    two_cats = judge.split_prompts(three[0], prompts[:2])[0]
    assert judge.tokenizer.decode(two_cats[0]).endswith("Is there a cat")


@pytest.mark.slow
def test_idefics3_smolvlm_shape_shares_the_prefix(tmp_path, photos):
    """SmolVLM's architecture (Idefics3: image tiles, row/column markers, pixel shuffle) at
    one layer per stack, on a small image: the same P(yes) either way."""
    bench = _benchmark_module()
    path, summary = bench.ensure_checkpoint(tmp_path, layers=1)  # the benchmark's build
    assert summary["reduced"] and summary["arch"] == "smolvlm-256m-instruct"
    assert bench.ensure_checkpoint(tmp_path, layers=1) == (path, summary)  # cached
    judge = registry.build("vqa", f"hf:{path}", dtype="float32")
    assert judge.model.config.model_type == "idefics3" and judge.prefix_reuse_off is None
    small = photos[2].resize((96, 64))
    images, questions = [small] * 3, QUESTIONS[:3]
    reused = judge.yes_probability(images, questions)
    judge.reuse_prefix = False
    plain = judge.yes_probability(images, questions)
    np.testing.assert_allclose(reused, plain, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_reuse_prefix_option_and_the_plain_path_table(three):
    from factcap.backends.hf_vlm import PLAIN_PATH_MODELS, prefix_reuse_blocker

    judge = registry.build("vqa", "tiny:chat_vlm", reuse_prefix=False)
    calls, handle = count_forwards(judge.model)
    try:
        judge.yes_probability([three[0]] * 3, QUESTIONS[:3])
    finally:
        handle.remove()
    assert len(calls) == 1 and calls[0][0]["pixel_values"].shape[0] == 3
    assert not batches_by_image(judge)  # each pair prefills its image: plain batches of pairs
    with rejected(ValueError, match="reuse_prefix must be true or false"):
        registry.build("vqa", "tiny:chat_vlm", reuse_prefix="yes")

    # a model needing its own positions takes the plain path, and says why
    assert "3D" in prefix_reuse_blocker(_Named("qwen2_5_vl"), judge.processor)
    assert "bidirectional" in prefix_reuse_blocker(_Named("paligemma"), judge.processor)
    assert prefix_reuse_blocker(_Named("idefics3"), judge.processor) is None
    assert all(isinstance(why, str) and why for why in PLAIN_PATH_MODELS.values())
    judge.reuse_prefix = True
    assert batches_by_image(judge)  # the check stage puts an image's questions in one call
    judge.prefix_reuse_off = "qwen2_vl: 3D positions"
    assert not batches_by_image(judge)
    calls, handle = count_forwards(judge.model)
    try:
        judge.yes_probability([three[0]] * 3, QUESTIONS[:3])
    finally:
        handle.remove()
    assert len(calls) == 1


def _benchmark_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("vlm_claims", ROOT / "benchmarks/vlm_claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Named:
    """A stand-in model that only has a config.model_type (the table is looked up by it)."""

    def __init__(self, model_type: str):
        self.config = type("Config", (), {"model_type": model_type})()


# -- OpenAI judges ---------------------------------------------------------------------


def test_image_order_groups_by_image_in_first_use_order():
    a, b, c = object(), object(), object()
    assert image_order([a, b, a, c, b, a]) == [0, 2, 5, 1, 4, 3]
    assert image_order([]) == []
    assert image_order([a, a]) == [0, 1]


def _answer(request: dict) -> Reply:
    """P(yes) made from the question's length, so every answer is traceable to its question."""
    text = request["messages"][0]["content"][1]["text"]
    return Reply("yes", top_logprobs={"yes": -len(text) / 100, "no": -0.5})


def _expected(question: str) -> float:
    text = f"{question} Answer yes or no."
    yes, no = np.exp(-len(text) / 100), np.exp(-0.5)
    return yes / (yes + no)


def test_openai_judge_sends_an_images_questions_consecutively_with_one_url(three):
    images, questions = _asks(three)
    with FakeOpenAIServer(_answer) as server:
        judge = OpenAIVQA("vlm", base_url=server.base_url, max_concurrency=1, cache=False)
        probs = judge.yes_probability(images, questions)
        sent = [r.json["messages"][0]["content"] for r in server.completions]
    np.testing.assert_allclose(probs, [_expected(q) for q in questions], rtol=1e-9)
    urls = [content[0]["image_url"]["url"] for content in sent]
    assert [content[0]["type"] for content in sent] == ["image_url"] * 9  # image first
    # one run of requests per image, in order of first use, questions in input order
    runs = [urls[0]] + [u for prev, u in zip(urls, urls[1:], strict=False) if u != prev]
    assert len(runs) == len(set(runs)) == 3
    by_image = {id(im): [] for im in images}
    for im, q in zip(images, questions, strict=True):
        by_image[id(im)].append(f"{q} Answer yes or no.")
    assert [content[1]["text"] for content in sent] == sum(by_image.values(), [])


def test_openai_judge_concurrent_answers_in_input_order_and_errors_by_input(three):
    images, questions = _asks(three)
    with FakeOpenAIServer(_answer) as server:
        judge = OpenAIVQA(
            "vlm", base_url=server.base_url, max_concurrency=4, max_retries=0, cache=False
        )
        probs = judge.yes_probability(images, questions)
        np.testing.assert_allclose(probs, [_expected(q) for q in questions], rtol=1e-9)
        urls = {r.json["messages"][0]["content"][0]["image_url"]["url"] for r in server.completions}
        assert len(urls) == 3  # the same bytes for every request about an image

        # the request about the second image (input 3) fails: the error names input 3
        server.fault_when(
            lambda body: body["messages"][0]["content"][1]["text"].startswith("Is this outdoors"),
            Fault.status(400),
        )
        with pytest.raises(RemoteBatchError) as info:
            judge.yes_probability(images, questions)
    assert set(info.value.errors) == {3}
    kept = [p for i, p in enumerate(info.value.results) if i != 3]
    np.testing.assert_allclose(kept, [_expected(q) for i, q in enumerate(questions) if i != 3])


# -- the benchmark ---------------------------------------------------------------------


@pytest.mark.slow
def test_vlm_claims_benchmark_prints_its_line():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "vlm_claims.py")]
        + ["--model", "tiny:chat_vlm", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    line = json.loads(out.stdout.strip().splitlines()[-1])
    assert line["benchmark"] == "vlm_claims" and line["model_type"] == "llava"
    assert line["max_abs_diff"] < 1e-4
    for key in ("claims_ratio", "claims_ratio_before", "speedup_16", "t1_s", "t16_before_s"):
        assert line[key] > 0
