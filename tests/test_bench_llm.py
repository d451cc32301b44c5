"""The shapes world's LLM trainer: its data is what the pipeline sends, its checkpoint loads."""

from __future__ import annotations

import copy
import json
import random

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from factcap.bench.shapes import train_llm  # noqa: E402
from factcap.bench.shapes.language import claims_answer, compose_answer, mentions  # noqa: E402
from factcap.bench.shapes.world import make_scene  # noqa: E402
from factcap.pipeline.claims import extract_claims  # noqa: E402
from factcap.pipeline.compose import compose  # noqa: E402
from factcap.pipeline.parsing import parse_claims  # noqa: E402
from factcap.pipeline.work import Work  # noqa: E402
from factcap.schema import Proposal, Record  # noqa: E402


class RecordingLLM:
    """Answers every conversation with ``answer`` and keeps the conversations it was sent."""

    name = "recording"

    def __init__(self, answer: str):
        self.answer = answer
        self.seen: list[list[dict[str, str]]] = []

    def chat(self, conversations, max_new_tokens=256, temperature=0.0):
        self.seen += [list(c) for c in conversations]
        return [self.answer] * len(conversations)


def _work(sample: train_llm.Sample) -> Work:
    record = Record(id="scene", source="scene.png")
    record.proposals = [
        Proposal(model=label, text=text)
        for label, text in zip(sample.labels, sample.texts, strict=True)
    ]
    return Work(record)


def _sent(llm: RecordingLLM) -> str:
    (conversation,) = llm.seen
    (message,) = conversation
    assert message["role"] == "user"
    return message["content"]


@pytest.mark.parametrize("index", range(6))
def test_claims_samples_are_what_extract_claims_sends(index):
    sample = train_llm.make_sample("claims", make_scene(index, split="train"), random.Random(index))
    work = _work(sample)
    llm = RecordingLLM(sample.answer)
    extract_claims([work], llm, max_new_tokens=8, temperature=0.0, max_claims=train_llm.MAX_CLAIMS)
    assert _sent(llm) == sample.prompt
    assert sample.answer == claims_answer(sample.texts)
    assert [c.text for c in work.record.claims] == [c["text"] for c in json.loads(sample.answer)]
    assert not work.record.notes  # the target answer parses at the first try


@pytest.mark.parametrize("checked", [True, False])
@pytest.mark.parametrize("index", range(4))
def test_compose_samples_are_what_compose_sends(index, checked):
    scene = make_scene(index, split="train")
    sample = train_llm.make_sample("compose", scene, random.Random(index), checked=checked)
    work = _work(sample)
    work.record.claims = copy.deepcopy(sample.claims)
    llm = RecordingLLM(sample.answer)
    compose([work], llm, [train_llm.STYLE], instruction=None, max_new_tokens=8, temperature=0.0)
    assert _sent(llm) == sample.prompt
    assert [c.text for c in sample.claims] == [
        c.text for c in parse_claims(claims_answer(sample.texts), train_llm.MAX_CLAIMS)
    ]
    verdicts = [c.verdict for c in sample.claims]
    claims = json.loads(claims_answer(sample.texts))
    assert sample.answer == compose_answer(claims, verdicts, sample.texts)
    if not checked:
        assert set(verdicts) == {"uncertain"}


def test_verdicts_follow_the_truth_of_the_scene():
    rng = random.Random(0)
    agree = total = 0
    for index in range(60):
        scene = make_scene(index, split="train")
        sample = train_llm.make_sample("compose", scene, rng, checked=True)
        for claim in sample.claims:
            total += 1
            truth = "supported" if train_llm.is_true(claim, scene) else "refuted"
            agree += claim.verdict == truth
    assert 0.75 < agree / total < 0.95  # mostly the truth, some uncertain or wrong


def test_proposals_are_labelled_like_the_pipelines_captioners():
    rng = random.Random(1)
    for index in range(40):
        sample = train_llm.make_sample("claims", make_scene(index, split="train"), rng)
        assert 1 <= len(sample.texts) <= 2
        for label in sample.labels:
            assert label.startswith("hf:/")
            assert label.rsplit("/", 1)[1] in train_llm.CAPTIONERS


@pytest.fixture(scope="module")
def tokenizer():
    return train_llm.build_tokenizer(train_llm.samples(200, 0, "train"), 400)


def test_tokenizer_round_trips_and_keeps_fixed_text_short(tokenizer):
    for sample in train_llm.samples(20, 1, "test"):
        ids = tokenizer(sample.answer, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == sample.answer
        encoded, prompt_len = train_llm.encode(tokenizer, sample)
        assert encoded[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(encoded[prompt_len:-1]) == sample.answer
        assert prompt_len < len(sample.prompt) // 6
    for text in ("two large blue squares", "an orange cross", "red circle"):
        assert tokenizer.tokenize(f"There are {text}.")[1] == text


def test_chat_template_ends_in_the_assistant_turn(tokenizer):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert text == "<|user|>hi<|end|><|assistant|>"
    assert tokenizer.eos_token == "<|end|>"


def test_echo_weights_mark_phrases_that_repeat_a_subject(tokenizer):
    sample = train_llm.make_sample("claims", make_scene(2, split="train"), random.Random(3))
    ids, prompt_len = train_llm.encode(tokenizer, sample)
    subjects = {
        tokenizer.convert_tokens_to_ids(p): f"{m.colour} {m.shape}"
        for p in train_llm.phrases()
        for m in mentions(p)
    }
    weights = train_llm.Weights(claims=1.0, echo=0.5).of(sample, ids, prompt_len, subjects)
    assert weights[prompt_len:] == [1.0] * (len(ids) - prompt_len)
    first = {}
    for pos in range(prompt_len):
        subject = subjects.get(ids[pos])
        if subject is None:
            assert weights[pos] == 0.0
        else:
            assert weights[pos] == (0.5 if subject in first else 0.0)
            first.setdefault(subject, pos)


@pytest.mark.slow  # smoke training
def test_smoke_training_loads_through_the_registry_and_answers(tmp_path):
    from factcap.backends import registry

    stats = train_llm.train(tmp_path / "llm", size="smoke", log=lambda _msg: None)
    assert stats["steps"] == train_llm.PLANS["smoke"]["steps"]
    assert list(stats)[-4:] == ["size", "plan", "parameters", "total_s"]
    assert stats["total_s"] >= stats["train_s"]  # the whole run, building and saving included
    llm = registry.build("llm", f"hf:{tmp_path / 'llm'}", device="cpu", dtype="float32")
    scene = make_scene(0, split="test")
    rng = random.Random(0)
    for task in train_llm.TASKS:
        sample = train_llm.make_sample(task, scene, rng)
        replies = llm.chat([[{"role": "user", "content": sample.prompt}]], max_new_tokens=4)
        assert len(replies) == 1 and isinstance(replies[0], str)
