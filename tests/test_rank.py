"""Proposal ranking: every proposal scored against its image before claims are extracted, the
best passed on, every proposal kept in the record with its score. The embedder and VQA model
are scripted (the far side of the role boundary); the ranking, splitting and keeping are
factcap's own."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from factcap.cli import main
from factcap.config import load_config
from factcap.engine.records import read_records
from factcap.errors import ConfigError
from factcap.inputs import InputItem
from factcap.pipeline import Pipeline
from factcap.pipeline.models import Models
from scripted import ScriptedCaptioner, ScriptedDetector, ScriptedLLM, ScriptedVQA

CLAIMS = json.dumps([{"kind": "object", "text": "There is a cat.", "subject": "cat"}])

#: Each word's direction; a text's embedding is the unit mean of its known words.
AXES = {"cat": 0, "sofa": 1, "car": 2, "boat": 3}


class ScriptedEmbedder:
    """CLIP-like: images embed on the cat+sofa direction; a text on its known words. Declares
    a context of ``max_text_tokens`` tokens (one per word, plus 2) and records every text it
    is asked to embed."""

    name = "scripted-clip"

    def __init__(self, max_text_tokens: int = 77):
        self.max_text_tokens = max_text_tokens
        self.texts: list[str] = []
        self.image_calls: list[int] = []

    def count_tokens(self, texts):
        return [len(t.split()) + 2 for t in texts]

    def embed_images(self, images):
        self.image_calls.append(len(images))
        row = np.zeros(len(AXES) + 1)
        row[[AXES["cat"], AXES["sofa"]]] = 1.0
        return np.stack([row / np.linalg.norm(row)] * len(images))

    def embed_texts(self, texts):
        self.texts.extend(texts)
        rows = []
        for text in texts:
            assert self.count_tokens([text])[0] <= self.max_text_tokens, "truncation needed"
            row = np.zeros(len(AXES) + 1)
            for word in text.lower().replace(".", " ").split():
                if word in AXES:
                    row[AXES[word]] += 1.0
            row[-1] += 0.1  # every text has a little of its own direction
            rows.append(row / np.linalg.norm(row))
        return np.stack(rows)


DRAFTS = {
    "good": "A cat on a sofa.",
    "half": "A cat next to a car.",
    "bad": "A red boat at sea.",
}


def photo_item(i=0, alt=None):
    extra = {"alt_text": alt} if alt else {}
    return InputItem(f"p{i}.png", f"id{i}", image=Image.new("RGB", (32, 32)), extra=extra)


def claims_prompt(llm) -> str:
    return next(
        c[0]["content"] for call in llm.calls for c in call if "checkable claims" in c[0]["content"]
    )


def three_captioners(**proposals):
    """The tiny preset with three captioner slots (scripted: good, half, bad)."""
    base = load_config(preset="tiny")
    data = base.model_dump()
    data["captioners"] = [data["captioners"][0]] * 3
    data["proposals"] = proposals
    from factcap.config import Config

    return Config.model_validate(data)


def pipeline_for(config, embedder=None, vqa=None):
    llm = ScriptedLLM(CLAIMS, "A cat on a sofa.")
    built = {
        f"captioner:{i}": (ScriptedCaptioner(name, text), 4)
        for i, (name, text) in enumerate(DRAFTS.items())
    }
    built.update({"llm": (llm, 4), "detector": (ScriptedDetector(["cat"]), 4)})
    built["vqa"] = (vqa or ScriptedVQA(lambda q: 0.9), 4)
    if embedder is not None:
        built["embedder"] = (embedder, 4)
    return Pipeline(config, models=Models(config, built=built)), llm


def test_clip_ranking_keeps_the_best_and_records_every_score():
    embedder = ScriptedEmbedder()
    pipeline, llm = pipeline_for(three_captioners(rank_by="clip_score", keep_top=2), embedder)
    records = pipeline.process([photo_item(0), photo_item(1)])
    for record in records:
        by_model = {p.model: p for p in record.proposals}
        assert [by_model[m].kept for m in DRAFTS] == [True, True, False]
        scores = [by_model[m].score for m in DRAFTS]
        assert scores[0] > scores[1] > scores[2] >= 0.0
        # CLIP-S = 2.5 * cos: "A cat on a sofa." is (1, 1, 0, 0, .1)/|.| against (1, 1, 0, 0, 0)/|.|
        expected = 2.5 * 2 / (np.sqrt(2) * np.sqrt(2.01))
        assert scores[0] == pytest.approx(expected, abs=1e-4)
        assert record.to_dict()["proposals"][2] == {
            "model": "bad",
            "text": DRAFTS["bad"],
            "score": scores[2],
            "kept": False,
        }
    prompt = claims_prompt(llm)
    assert DRAFTS["good"] in prompt and DRAFTS["half"] in prompt and DRAFTS["bad"] not in prompt
    assert embedder.image_calls == [2]  # each image embedded once, not once per proposal


def test_min_score_and_the_best_kept_when_none_passes():
    pipeline, _ = pipeline_for(
        three_captioners(rank_by="clip_score", min_score=1.0), ScriptedEmbedder()
    )
    [record] = pipeline.process([photo_item()])
    assert [p.kept for p in record.proposals] == [True, True, False]  # good 2.49, half 1.25
    pipeline, _ = pipeline_for(
        three_captioners(rank_by="clip_score", min_score=2.6), ScriptedEmbedder()
    )
    [record] = pipeline.process([photo_item()])
    assert [p.kept for p in record.proposals] == [True, False, False]
    assert any("no proposal reached min_score 2.6" in n for n in record.notes)


def test_long_proposals_are_split_to_fit_not_truncated():
    embedder = ScriptedEmbedder(max_text_tokens=6)
    pipeline, _ = pipeline_for(three_captioners(rank_by="clip_score", keep_top=1), embedder)
    [record] = pipeline.process([photo_item()])
    assert record.ok, record.error
    assert all(len(t.split()) + 2 <= 6 for t in embedder.texts)  # the scripted CLIP checks too
    assert embedder.texts[2:4] == ["A cat next to", "to a car."]  # overlapping word windows
    assert [p.kept for p in record.proposals] == [True, False, False]


def test_vqa_ranking_and_the_alt_text_is_scored_but_always_kept():
    def answer(question: str) -> float:
        return 0.95 if "sofa" in question else 0.6 if "car" in question else 0.05

    vqa = ScriptedVQA(answer)
    config = three_captioners(rank_by="vqa_score", keep_top=1)
    pipeline, llm = pipeline_for(config, vqa=vqa)
    [record] = pipeline.process([photo_item(alt="Yacht club regatta")])
    scores = {p.model: (p.score, p.kept) for p in record.proposals}
    assert scores == {
        "good": (0.95, True),
        "half": (0.6, False),
        "bad": (0.05, False),
        "alt_text": (0.05, True),
    }
    asked = [q for call in vqa.calls for q in call]
    assert 'Does this figure show "A cat on a sofa."?' in asked
    assert "Yacht club regatta" in claims_prompt(llm)


def test_ranking_is_off_by_default_and_needs_its_model():
    pipeline, llm = pipeline_for(three_captioners())
    [record] = pipeline.process([photo_item()])
    assert all(p.kept and p.score is None for p in record.proposals)
    assert all("score" not in p for p in record.to_dict()["proposals"])
    ranked = {"embedder": None, "proposals": {"rank_by": "clip_score"}}
    with pytest.raises(ConfigError, match="scores with the embedder model; configure embedder"):
        load_config(preset="tiny", overrides=ranked)


@pytest.mark.slow
def test_tiny_preset_ranks_with_the_real_clip_and_records_the_ranker(tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (40, 30), "red").save(image)
    out = tmp_path / "out.jsonl"
    code = main(
        [
            "caption",
            str(image),
            "-o",
            str(out),
            "--rank-by",
            "clip_score",
            "--keep-top",
            "1",
            "--quiet",
        ]
    )
    assert code == 0
    [record] = list(read_records(out))
    assert record["models"]["embedder"] == "tiny:clip"
    ranked = [p for p in record["proposals"] if p["model"].startswith("tiny:")]
    assert len(ranked) == 2 and sorted(p["kept"] for p in ranked) == [False, True]
    assert all(isinstance(p["score"], float) for p in ranked)
