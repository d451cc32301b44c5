"""BLIP, BLIP-2 and Kosmos-2 captioners and the BLIP VQA model on their tiny checkpoints.

Every backend is loaded through the registry from a local directory, exactly as a hub
checkpoint would be; the images are real photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from factcap.backends import registry, tiny
from factcap.backends.tiny import blip
from spies import count_forwards, rejected, spy_generate

pytestmark = pytest.mark.slow


OPTIONS = {"min_new_tokens": 4, "max_new_tokens": 8}


@pytest.fixture(scope="module")
def images(photos):
    """Three real photos (astronaut, camera, chelsea)."""
    return photos[:3]


@pytest.fixture(scope="module")
def kosmos_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kosmos2")
    blip.build_kosmos2(out)
    return out


@pytest.fixture(scope="module")
def captioner_spec(request, kosmos_dir) -> str:
    return "hf:" + str(kosmos_dir) if request.param == "kosmos2" else request.param


CAPTIONERS = [
    ("tiny:blip", "BlipCaptioner", ""),
    ("tiny:blip2", "Blip2Captioner", ""),
    ("kosmos2", "Kosmos2Captioner", "An image of"),
]


@pytest.mark.parametrize(
    ("captioner_spec", "class_name", "prefix"), CAPTIONERS, indirect=["captioner_spec"]
)
def test_captioner_one_generate_per_batch(captioner_spec, class_name, prefix, images, monkeypatch):
    captioner = registry.build("captioner", captioner_spec, **OPTIONS)
    assert type(captioner).__name__ == class_name
    assert captioner.name == captioner_spec
    calls = spy_generate(monkeypatch, captioner.model)

    captions = captioner.caption(images)

    assert len(calls) == 1
    call = calls[0]
    assert call["pixel_values"].shape[0] == len(images)
    assert call["min_new_tokens"] == 4 and call["max_new_tokens"] == 8
    assert call["output"].shape[0] == len(images)
    assert len(captions) == len(images)
    markup = [*captioner.processor.tokenizer.all_special_tokens, "<grounding>", "<phrase>"]
    markup += ["<object>", "</image>", "<patch_index_"]
    for caption in captions:
        assert isinstance(caption, str)
        assert caption.startswith(prefix)
        # min_new_tokens forced words after the prefix; special tokens and markup are gone.
        assert len(caption) > len(prefix)
        assert not any(tag in caption for tag in markup)
    assert captioner.caption([]) == []


@pytest.mark.parametrize("spec", ["tiny:blip", "tiny:blip2"])
def test_caption_prefix_prompt_is_part_of_the_caption(spec, images, monkeypatch):
    captioner = registry.build("captioner", spec, prompt="a photo of", **OPTIONS)
    calls = spy_generate(monkeypatch, captioner.model)
    captions = captioner.caption(images[:2], prompt="ignored: BLIP is not instruction-tuned")

    assert len(calls) == 1
    decoded = captioner.processor.tokenizer.batch_decode(
        calls[0]["input_ids"], skip_special_tokens=True
    )
    assert [d.strip() for d in decoded] == ["a photo of"] * 2
    assert all(c.startswith("a photo of") and len(c) > len("a photo of") for c in captions)
    assert not any("ignored" in c for c in captions)


def test_blip2_processor_and_model_agree_on_query_tokens(images, monkeypatch):
    captioner = registry.build("captioner", "tiny:blip2", prompt="a photo of", **OPTIONS)
    config = captioner.model.config
    assert captioner.processor.num_query_tokens == config.num_query_tokens
    calls = spy_generate(monkeypatch, captioner.model)
    captioner.caption(images[:2])

    input_ids = calls[0]["input_ids"]
    image_tokens = (input_ids == config.image_token_id).sum(dim=1)
    assert image_tokens.tolist() == [config.num_query_tokens] * 2
    # The image placeholders come first, then OPT's BOS ("</s>"), then the prompt.
    assert input_ids[0, config.num_query_tokens].item() == config.text_config.bos_token_id


def test_kosmos2_prompt_and_image_positions(kosmos_dir, images, monkeypatch):
    captioner = registry.build("captioner", "hf:" + str(kosmos_dir), **OPTIONS)
    calls = spy_generate(monkeypatch, captioner.model)
    captions = captioner.caption(images[:2])

    call = calls[0]
    latent = captioner.model.config.latent_query_num
    assert call["image_embeds_position_mask"].sum(dim=1).tolist() == [latent] * 2
    raw = captioner.processor.batch_decode(call["output"], skip_special_tokens=True)
    assert all("</image><grounding> An image of" in text for text in raw)
    cleaned = [captioner.processor.post_process_generation(text)[0] for text in raw]
    assert captions == [" ".join(text.split()) for text in cleaned]


def test_captioner_options_are_checked(kosmos_dir):
    with rejected(TypeError, "max_tokens"):
        registry.build("captioner", "tiny:blip", max_tokens=3)
    with rejected(ValueError, "min_new_tokens"):
        registry.build("captioner", "tiny:blip2", min_new_tokens=9, max_new_tokens=3)
    with rejected(ValueError, "num_beams"):
        registry.build("captioner", "hf:" + str(kosmos_dir), num_beams=0)
    with rejected(TypeError, "threshold"):
        registry.build("vqa", "tiny:blip_vqa", threshold=0.5)


@pytest.fixture(scope="module")
def vqa():
    return registry.build("vqa", "tiny:blip_vqa")


def test_vqa_one_forward_and_renormalised_probabilities(vqa, images):
    from factcap.backends.hf_blip import BlipVQA

    assert isinstance(vqa, BlipVQA)
    questions = ["is there a cat?", "is the man in a white suit riding a bicycle?", "yes?"]
    hooked = [vqa.model.vision_model, vqa.model.text_encoder, vqa.model.text_decoder]
    recorded = [count_forwards(module) for module in hooked]
    try:
        probs = vqa.yes_probability(images, questions)
    finally:
        for _, handle in recorded:
            handle.remove()

    assert [len(calls) for calls, _ in recorded] == [1, 1, 1]
    decoder_kwargs, decoder_out = recorded[2][0][0]
    start = decoder_kwargs["input_ids"]
    assert start.shape == (len(images), 1)
    assert (start == vqa.model.config.text_config.bos_token_id).all()
    assert len(probs) == len(images)
    assert all(isinstance(p, float) and 0.0 < p < 1.0 for p in probs)
    # P(yes) / (P(yes) + P(no)) under the full first-token distribution.
    full = decoder_out.logits[:, -1, :].double().softmax(dim=-1)
    yes_id, no_id = (vqa.processor.tokenizer.convert_tokens_to_ids(w) for w in ("yes", "no"))
    assert (vqa.yes_id, vqa.no_id) == (yes_id, no_id)
    expected = (full[:, yes_id] / (full[:, yes_id] + full[:, no_id])).tolist()
    np.testing.assert_allclose(probs, expected, rtol=1e-5)


def test_vqa_depends_on_question_and_not_on_batch_padding(vqa, images):
    same_image = [images[2]] * 3
    questions = ["is there a cat?", "how many dogs are there on the green grass?", "is it red?"]
    probs = vqa.yes_probability(same_image, questions)
    assert len({round(p, 4) for p in probs}) == 3
    # Questions of different lengths are padded; each pair's answer equals its answer alone.
    alone = [vqa.yes_probability([im], [q])[0] for im, q in zip(same_image, questions, strict=True)]
    np.testing.assert_allclose(probs, alone, atol=1e-5)
    assert vqa.yes_probability([], []) == []
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        vqa.yes_probability(images[:2], ["one question"])


FAMILIES = [
    ("build_blip_captioner", "captioner"),
    ("build_blip_vqa", "vqa"),
    ("build_blip2", "captioner"),
    ("build_kosmos2", "captioner"),
]


@pytest.mark.parametrize(("builder", "role"), FAMILIES)
def test_builders_are_deterministic_and_small(builder, role, tmp_path, images):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        out.mkdir()
        getattr(blip, builder)(out)

    weights = (first / "model.safetensors").read_bytes()
    assert weights == (second / "model.safetensors").read_bytes()
    assert sum(p.stat().st_size for p in first.iterdir()) < 2_000_000
    for name in ("config.json", "processor_config.json", "tokenizer.json"):
        assert (first / name).read_text() == (second / name).read_text()

    def run(path: Path):
        if role == "vqa":
            backend = registry.build("vqa", f"hf:{path}")
            return backend.yes_probability(images, ["is there a cat?"] * len(images))
        return registry.build("captioner", f"hf:{path}", **OPTIONS).caption(images)

    assert run(first) == run(second)


def test_tiny_families_are_registered():
    for family in ("blip", "blip_vqa", "blip2"):
        assert tiny.FAMILIES[family].startswith("blip:")
        assert (tiny.ensure(family) / "model.safetensors").exists()
