"""Chat VLM (captioner + yes/no VQA), causal LM and CLIP backends on their tiny checkpoints.

Every backend is loaded through the registry, exactly as a hub checkpoint would be.
"""

from __future__ import annotations

import numpy as np
import pytest

from factcap.backends import registry, tiny
from spies import count_forwards, rejected, spy_generate

pytestmark = pytest.mark.slow


PATCHES = 16  # (32 px / 8 px patches) ** 2: LLaVA's image placeholders per image


@pytest.fixture(scope="module")
def images(request):
    """Three real photos (factcap's examples when present, else scikit-image's)."""
    try:
        import factcap.examples  # noqa: F401
    except ImportError:
        from PIL import Image
        from skimage import data

        arrays = [data.astronaut(), data.chelsea(), data.coffee()]
        return [Image.fromarray(a).convert("RGB") for a in arrays]
    return request.getfixturevalue("photos")[:3]


@pytest.fixture(scope="module")
def captioner():
    return registry.build("captioner", "tiny:chat_vlm", min_new_tokens=4, max_new_tokens=8)


@pytest.fixture(scope="module")
def judge():
    return registry.build("vqa", "tiny:chat_vlm")


@pytest.fixture(scope="module")
def llm():
    return registry.build("llm", "tiny:llm", min_new_tokens=3)


@pytest.fixture(scope="module")
def clip():
    return registry.build("embedder", "tiny:clip")


def test_tiny_chat_vlm_is_a_consistent_llava():
    from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaProcessor

    path = tiny.ensure("chat_vlm")
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    assert model.config.model_type == "llava"
    assert isinstance(processor, LlavaProcessor)
    assert processor.patch_size == model.config.vision_config.patch_size
    assert processor.vision_feature_select_strategy == model.config.vision_feature_select_strategy
    assert processor.image_token_id == model.config.image_token_id
    assert model.config.image_seq_length == PATCHES
    size = model.config.vision_config.image_size
    assert processor.image_processor.crop_size == {"height": size, "width": size}
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi."}]}],
        add_generation_prompt=True,
    )
    assert text == "<|endoftext|><|im_start|>user\n<image>Hi.<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_llm_tokenizer_round_trips_and_templates():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny.ensure("llm")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)
    sentence = "a photo of a cat sitting on a red sofa"
    ids = tokenizer.encode(sentence, add_special_tokens=False)
    assert len(ids) < len(sentence) / 2  # real merges, not bytes
    assert tokenizer.decode(ids) == sentence
    assert {tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token} == {
        "<|endoftext|>",
        "<|im_end|>",
        "<|pad|>",
    }
    text = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"},
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == (
        "<|endoftext|><|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        "<|im_start|>assistant\nA<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_vlm_captioner_one_generate_per_batch(captioner, images, monkeypatch):
    calls = spy_generate(monkeypatch, captioner.model)
    captions = captioner.caption(images)

    assert len(calls) == 1
    assert len(captions) == len(images)
    assert all(isinstance(c, str) and c for c in captions)
    call = calls[0]
    assert call["pixel_values"].shape[0] == len(images)
    prompt_length = call["input_ids"].shape[1]
    new_tokens = call["output"].shape[1] - prompt_length
    assert 4 <= new_tokens <= 8
    expected = (
        "<|endoftext|><|im_start|>user\n" + "<image>" * PATCHES + "Describe this image in detail."
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    for row in call["input_ids"]:
        assert captioner.tokenizer.decode(row, skip_special_tokens=False) == expected
    # Only the new tokens are decoded: no prompt text leaks into the caption.
    assert not any("Describe this image" in c for c in captions)


def test_chat_vlm_captioner_prompt_override_and_determinism(captioner, images, monkeypatch):
    first = captioner.caption(images[:2])
    assert captioner.caption(images[:2]) == first
    calls = spy_generate(monkeypatch, captioner.model)
    captioner.caption(images[:2], prompt="What is in the picture?")
    decoded = captioner.tokenizer.decode(calls[0]["input_ids"][0])
    assert "What is in the picture?" in decoded
    assert "Describe this image" not in decoded
    assert captioner.caption([]) == []


def test_chat_vlm_judge_one_forward_probabilities(judge, images):
    questions = ["Is there a cat?", "Is there an astronaut in a white suit?", "Is it red?"]
    calls, handle = count_forwards(judge.model)
    try:
        probs = judge.yes_probability(images, questions)
    finally:
        handle.remove()

    assert len(calls) == 1
    assert calls[0][0]["pixel_values"].shape[0] == len(images)
    assert len(probs) == len(images)
    assert all(0.0 < p < 1.0 for p in probs)
    decoded = judge.tokenizer.decode(calls[0][0]["input_ids"][0])
    assert decoded.endswith("Is there a cat? Answer yes or no.<|im_end|>\n<|im_start|>assistant\n")
    # The answer tokens: distinct first tokens of yes/no spellings.
    assert judge.yes_ids and judge.no_ids and not set(judge.yes_ids) & set(judge.no_ids)
    assert judge.tokenizer.encode("yes", add_special_tokens=False)[0] in judge.yes_ids
    assert judge.tokenizer.encode("no", add_special_tokens=False)[0] in judge.no_ids


def test_chat_vlm_judge_depends_on_question_and_batch_padding(judge, images):
    same_image = [images[0]] * 3
    questions = ["Is there a cat?", "Is there a red car on the street?", "Is this outdoors?"]
    probs = judge.yes_probability(same_image, questions)
    assert len({round(p, 6) for p in probs}) == 3
    # Left padding: each item's answer in a padded batch equals its answer alone.
    alone = [
        judge.yes_probability([im], [q])[0] for im, q in zip(same_image, questions, strict=True)
    ]
    np.testing.assert_allclose(probs, alone, atol=1e-5)
    with pytest.raises(ValueError):
        judge.yes_probability(images[:2], ["one question"])


def test_causal_lm_chat_batch(llm, monkeypatch):
    conversations = [
        [{"role": "user", "content": "Name a fruit."}],
        [
            {"role": "system", "content": "You write short answers."},
            {"role": "user", "content": "What is on the table next to the red sofa?"},
        ],
    ]
    calls = spy_generate(monkeypatch, llm.model)
    replies = llm.chat(conversations, max_new_tokens=6)

    assert len(calls) == 1
    assert len(replies) == 2 and all(isinstance(r, str) and r for r in replies)
    call = calls[0]
    mask = call["attention_mask"]
    assert bool(mask[:, -1].all()) and not bool(mask[0, 0])  # the short one is padded on the left
    assert call["do_sample"] is False
    new_tokens = call["output"].shape[1] - call["input_ids"].shape[1]
    assert 3 <= new_tokens <= 6
    decoded = [llm.tokenizer.decode(row, skip_special_tokens=False) for row in call["input_ids"]]
    assert "<|im_start|>system\nYou write short answers.<|im_end|>" in decoded[1]
    assert "<|im_start|>user\nName a fruit.<|im_end|>" in decoded[0]
    assert all(d.endswith("<|im_start|>assistant\n") for d in decoded)
    assert not any("<|im_start|>" in r or "Name a fruit" in r for r in replies)
    # Greedy decoding is deterministic, and the batch does not change an item's reply.
    assert llm.chat(conversations, max_new_tokens=6) == replies
    assert llm.chat(conversations[1:], max_new_tokens=6) == replies[1:]


def test_causal_lm_sampling_and_argument_checks(llm, monkeypatch):
    calls = spy_generate(monkeypatch, llm.model)
    conversations = [[{"role": "user", "content": "Hello"}]] * 2
    replies = llm.chat(conversations, max_new_tokens=5, temperature=0.8)
    assert len(replies) == 2 and all(replies)
    assert calls[0]["do_sample"] is True and calls[0]["temperature"] == 0.8
    with pytest.raises(ValueError):
        llm.chat(conversations, temperature=-1.0)
    with pytest.raises(ValueError):
        llm.chat(conversations, max_new_tokens=0)
    assert llm.chat([]) == []


def test_clip_embedder_shapes_norms_and_one_pass(clip, images):
    vision_calls, h1 = count_forwards(clip.model.vision_model)
    text_calls, h2 = count_forwards(clip.model.text_model)
    try:
        image_emb = clip.embed_images(images)
        text_emb = clip.embed_texts(["a cat", "an astronaut next to a flag"])
    finally:
        h1.remove()
        h2.remove()

    assert len(vision_calls) == 1 and len(text_calls) == 1
    dim = clip.model.config.projection_dim
    assert image_emb.shape == (len(images), dim) and text_emb.shape == (2, dim)
    assert image_emb.dtype == np.float32 and text_emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(image_emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_emb, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(image_emb[0], image_emb[1])
    assert not np.allclose(text_emb[0], text_emb[1])
    # Same input, same embedding, whatever else is in the batch.
    np.testing.assert_allclose(clip.embed_texts(["a cat"])[0], text_emb[0], atol=1e-5)
    assert clip.embed_images([]).shape == (0, dim)
    assert clip.embed_texts([]).shape == (0, dim)


def test_clip_embedder_truncates_long_texts(clip):
    assert clip.max_text_tokens == 77
    long = "a photo of a cat sitting on a red sofa next to a window . " * 20
    assert len(clip.tokenizer(long)["input_ids"]) > clip.max_text_tokens
    a, b = clip.embed_texts([long, long + " two dogs are playing with a ball"])
    np.testing.assert_allclose(a, b, atol=1e-6)  # the tail past the context is cut
    short = clip.embed_texts(["a photo of a cat"])[0]
    assert not np.allclose(a, short)


def test_unknown_options_are_rejected():
    with rejected(TypeError, "bogus"):
        registry.build("llm", "tiny:llm", bogus=1)
    with rejected(TypeError, "temperature"):
        registry.build("captioner", "tiny:chat_vlm", temperature=0.5)
    with rejected(TypeError):
        registry.build("embedder", "tiny:clip", max_new_tokens=3)
    with rejected(ValueError, "min_new_tokens"):
        registry.build("captioner", "tiny:chat_vlm", min_new_tokens=-1)


@pytest.mark.parametrize("family", ["chat_vlm", "llm", "clip"])
def test_builds_are_deterministic(family, tmp_path):
    first = tiny.build(family, tmp_path / "a")
    second = tiny.build(family, tmp_path / "b")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert sum(f.stat().st_size for f in first.iterdir()) < 5_000_000


def test_rebuilt_vlm_gives_same_captions(images, tmp_path):
    outputs = []
    for name in ("a", "b"):
        path = tiny.build("chat_vlm", tmp_path / name)
        captioner = registry.build("captioner", f"hf:{path}", min_new_tokens=3, max_new_tokens=6)
        outputs.append(captioner.caption(images[:2]))
    assert outputs[0] == outputs[1]
    assert all(outputs[0])
