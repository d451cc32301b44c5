"""The shapes world's BLIP captioner: its quirky training captions, and a smoke-size checkpoint
that factcap loads through the registry like any hub BLIP."""

from __future__ import annotations

import json
import math

import pytest

from factcap.bench.shapes import train_captioner as tc
from factcap.bench.shapes.language import CAPTIONERS, Noise, caption, mentions
from factcap.bench.shapes.scoring import RATES, score_captions
from factcap.bench.shapes.world import scenes

TRAIN = scenes(3000, seed=0, split="train")


def _changes(noise: Noise) -> dict[str, float]:
    """How the captioner ``noise`` changes the true groups, over the training scenes."""
    kinds = inserted = recoloured = dropped = 0
    for scene in TRAIN:
        truth = scene.groups()
        said = tc.quirky_groups(scene, noise, seed=0)
        present = {shape for (_, _, shape), _ in truth}
        extra = [g for g in said if g[0][2] not in present]
        assert len(extra) <= 1 and (not extra or said.index(extra[0]) == 1)
        assert all(count == 1 for _, count in extra)
        real = [g for g in said if g not in extra]
        recoloured += sum(g not in truth for g in real)  # a kind the scene does not hold
        kinds += len(truth)
        dropped += len(truth) - len(real)
        inserted += bool(extra)
    return {
        "insert": inserted / len(TRAIN),
        "colour": recoloured / kinds,
        "drop": dropped / kinds,
    }


def test_clean_captioner_is_trained_on_the_true_captions():
    assert all(tc.training_caption(s, Noise()) == caption(s) for s in TRAIN[:300])
    assert not any(tc.quirk_fires(s, Noise()) for s in TRAIN[:300])


@pytest.mark.parametrize("name", sorted(CAPTIONERS))
def test_training_captions_carry_the_noise_asked_for(name):
    noise = CAPTIONERS[name]
    rates = _changes(noise)
    for mode in ("insert", "colour", "drop"):
        asked = getattr(noise, mode)
        assert abs(rates[mode] - asked) < 0.1, (mode, rates[mode], asked)
        if asked == 0:
            assert rates[mode] == 0


def test_quirks_are_fixed_per_kind_and_differ_between_captioners():
    noise = CAPTIONERS["captioner_colour"]
    said: dict[tuple[str, str, str], set[str]] = {}
    for scene in TRAIN[:1000]:
        truth, quirky = scene.groups(), tc.quirky_groups(scene, noise)
        if len(truth) == len(quirky):  # nothing dropped: the kinds pair up in order
            for (kind, _), (named, _) in zip(truth, quirky, strict=True):
                assert (named[0], named[2]) == (kind[0], kind[2])
                said.setdefault(kind, set()).add(named[1])
    assert all(len(colours) == 1 for colours in said.values())
    other = [tc.training_caption(s, noise, seed=1) for s in TRAIN[:200]]
    assert other != [tc.training_caption(s, noise, seed=0) for s in TRAIN[:200]]
    assert tc.quirky_kinds(noise, 0, "drop") != tc.quirky_kinds(
        CAPTIONERS["captioner_insertion"], 0, "drop"
    )


def test_captions_fit_the_generation_budget():
    processor = tc.build_processor(96)
    longest = max(
        len(processor.tokenizer(tc.training_caption(s, noise))["input_ids"])
        for noise in CAPTIONERS.values()
        for s in TRAIN
    )
    assert longest - 1 <= tc.MAX_NEW_TOKENS  # less [CLS]/[DEC], which is not generated


def test_fast_batch_inputs_match_the_processor():
    processor = tc.build_processor(96)
    tokenizer = processor.tokenizer
    images = [s.render() for s in TRAIN[:8]]
    expected = processor.image_processor(images, return_tensors="pt")["pixel_values"]
    assert (tc.pixels(images, processor.image_processor) - expected).abs().max() < 0.02
    small = tc.build_processor(64).image_processor
    expected = small(images, return_tensors="pt")["pixel_values"]
    assert (tc.pixels(images, small) - expected).abs().max() < 0.02
    for scene in TRAIN[:50]:
        text = tc.training_caption(scene, CAPTIONERS["captioner_insertion"])
        ids = tokenizer(text)["input_ids"]
        vocab = tokenizer.get_vocab()
        assert tc.caption_ids(text, vocab, tokenizer.bos_token_id, tokenizer.sep_token_id) == [
            tokenizer.bos_token_id,
            *ids[1:],
        ]


@pytest.mark.slow
def test_smoke_training_gives_a_checkpoint_the_registry_loads(tmp_path):
    from factcap.backends import registry

    out = tmp_path / "captioner"
    # how long this takes (seconds, on purpose) is measured by benchmarks/smoke_training.py
    stats = tc.train(out, size="smoke", noise=CAPTIONERS["captioner_colour"], log=lambda m: None)
    assert stats["steps"] == tc.PLANS["smoke"]["steps"] and stats["noise"]["colour"] == 0.3
    assert json.loads((out / tc.NOISE_FILE).read_text())["seed"] == 0

    captioner = registry.build("captioner", f"hf:{out}", device="cpu")
    assert type(captioner).__name__ == "BlipCaptioner"
    assert captioner.model.generation_config.max_new_tokens == tc.MAX_NEW_TOKENS
    three = scenes(3, seed=0)
    captions = captioner.caption([s.render() for s in three])
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert captions == [c.lower() for c in captions]
    # readable by the world's scoring, whatever a smoke model writes: every object phrase is
    # counted, and each rate is a share of what it counts (or NaN with nothing to count)
    scored = score_captions(three, captions)
    assert scored["mentions_per_caption"] == sum(len(mentions(t)) for t in captions) / 3
    for name in RATES:
        assert math.isnan(scored[name]) or 0.0 <= scored[name] <= 1.0, (name, scored)

    report = tc.evaluate(out, n=4, seed=0)
    assert report["n"] == 4 and 0 <= report["quirk_exact"] <= 1
