"""The shapes world's CLIP trainer: its tokenizer, its training texts, a smoke checkpoint."""

from __future__ import annotations

import random

import numpy as np
import pytest

from factcap.bench.shapes import train_clip, world
from factcap.bench.shapes.language import caption, mentions, references


def test_tokenizer_spells_every_world_word_as_one_token_and_lowercases(tmp_path):
    tokenizer = train_clip.build_tokenizer(tmp_path)
    for word in train_clip.world_words():
        assert len(tokenizer(word)["input_ids"]) == 3, word  # start, word, end
    scene = world.make_scene(3, seed=0)
    text = caption(scene)
    assert tokenizer(text)["input_ids"] == tokenizer(text.lower())["input_ids"]
    assert tokenizer.eos_token_id == len(tokenizer) - 1  # CLIP pools at the end-of-text token
    longest = max(
        len(tokenizer(r)["input_ids"]) for s in world.scenes(200, seed=0) for r in references(s)
    )
    assert longest <= train_clip.CONTEXT


def test_bpe_merges_keep_earlier_words_whole():
    merges = train_clip.bpe_merges(["are", "large", "orange", "range"])
    ranks = {m: i for i, m in enumerate(merges)}
    for word in ("are", "large", "orange", "range"):
        assert train_clip._bpe(word, ranks) == [word + "</w>"]


def test_training_texts_are_true_captions_of_their_scenes(tmp_path):
    tokenizer = train_clip.build_tokenizer(tmp_path)
    make = train_clip.make_batches(tokenizer, batch=16, seed=0, grid=6)
    texts = []
    for step in range(4):
        batch = make(step)
        assert batch["pixel_values"].shape == (16, 3, world.IMAGE_SIZE, world.IMAGE_SIZE)
        decoded = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
        scenes = world.scenes(16, seed=0, split="train", start=16 * step)
        for scene, text in zip(scenes, decoded, strict=True):
            kinds = {(o.size, o.colour, o.shape) for o in scene.objects}
            said = {(m.size, m.colour, m.shape) for m in mentions(text)}
            relation = any(w in text for w in ("left of", "right of", "above", "below"))
            assert said == kinds or (relation and said and said <= kinds), (text, kinds)
            texts.append(text)
    canonical = sum(t.startswith("there ") for t in texts)
    assert 0.3 < canonical / len(texts) < 0.9  # the caption form, often; the other templates too


def test_texts_for_picks_the_caption_form_and_the_templates():
    scene = world.make_scene(5, seed=0)
    rng = random.Random(0)
    picked = {train_clip.texts_for(scene, rng) for _ in range(60)}
    assert caption(scene) in picked and len(picked) > 1
    assert picked <= set(references(scene))


@pytest.mark.slow
def test_smoke_checkpoint_loads_through_the_registry_and_embeds(tmp_path):
    from factcap.backends import registry
    from factcap.backends.hf_clip import ClipEmbedder

    out = tmp_path / "clip"
    logged: list[str] = []
    stats = train_clip.train(out, size="smoke", seed=0, log=logged.append)
    plan = train_clip.PLANS["smoke"]
    assert stats["steps"] == plan["steps"] and stats["train_s"] > 0
    # the vision phase first, logged under its name; its stats nested in the stamp's
    assert [line.split(" loss ")[0] for line in logged] == [
        f"vision: step {i}/{plan['see_steps']}" for i in range(1, plan["see_steps"] + 1)
    ] + [f"step {i}/{plan['steps']}" for i in range(1, plan["steps"] + 1)]
    assert list(stats) == ["steps", "train_s", "loss_first", "loss_last", "vision", "size", "plan"]
    assert stats["vision"]["steps"] == plan["see_steps"] and stats["plan"] == plan
    embedder = registry.build("embedder", f"hf:{out}")
    assert isinstance(embedder, ClipEmbedder)
    scenes = world.scenes(3, seed=0)
    images = embedder.embed_images([s.render() for s in scenes])
    texts = embedder.embed_texts([caption(s) for s in scenes] + ["there is a small red circle."])
    assert images.shape == (3, embedder.dim) and texts.shape == (4, embedder.dim)
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    assert embedder.max_text_tokens == train_clip.CONTEXT
    # the trainer's pixels are the processor's: training sees what the backend sees
    expected = embedder.image_processor(images=[s.render() for s in scenes])["pixel_values"]
    pixels = train_clip.scene_batch(scenes, grid=6)["pixel_values"].numpy()
    assert np.allclose(pixels, np.asarray(expected, dtype=np.float32), atol=1e-5)
