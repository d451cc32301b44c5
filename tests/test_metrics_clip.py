"""clip_score, ref_clip_score and self_retrieval: their pure functions, then the metrics on the
tiny CLIP and real photos, cross-checked against torchmetrics' CLIPScore."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factcap.errors import ConfigError
from factcap.examples import example_paths
from factcap.metrics import Sample, build
from factcap.metrics.clip_score import (
    ClipScore,
    RefClipScore,
    clip_s,
    harmonic_mean,
    mean_cosine,
    ref_clip_s,
    split_sentences,
    split_to_fit,
    word_windows,
)
from factcap.metrics.resources import Resources
from factcap.metrics.retrieval import SelfRetrieval, recall_at_k, retrieval_ranks
from spies import count_forwards

BROKEN = str(Path(__file__).resolve().parent / "data" / "odd-images" / "broken.png")
PHOTOS = [str(p) for p in example_paths()]  # astronaut, camera, chelsea, coffee, rocket

# Over 77 CLIP tokens; its last sentence begins past the 77th token.
LONG = (
    "An astronaut in a white suit stands in front of an American flag and smiles. "
    "He holds a helmet with a golden visor in his left arm, and mission patches cover the "
    "shoulders of his suit. Behind him a model of a space shuttle rests on a grey stand. "
    "The background is a studio backdrop in dark blue with faint stars. "
    "A small red light glows on the collar."
)
LONG_CHANGED = LONG.replace("A small red light glows on the collar.", "Two dogs chase a ball.")


def words_counter(texts):
    """A stand-in tokenizer for the pure functions: one token per word, plus 2 specials."""
    return [len(t.split()) + 2 for t in texts]


def sample(i: int, source: str, caption: str, refs: list[str] | None = None) -> Sample:
    return Sample(str(i), source, "final:detailed", caption, references=refs or [])


# ---------------------------------------------------------------- pure functions


def test_clip_s_and_ref_clip_s_definitions():
    assert clip_s(0.3) == pytest.approx(0.75) and clip_s(-0.3) == 0.0 and clip_s(1.0) == 2.5
    assert clip_s(0.3, w=1.0) == pytest.approx(0.3)
    assert harmonic_mean(0.0, 0.0) == 0.0 and harmonic_mean(2.0, 2.0) == 2.0
    # RefCLIP-S clamps the best reference cosine at 0 and takes the harmonic mean with CLIP-S
    assert ref_clip_s(0.75, [0.1, 0.5]) == pytest.approx(2 * 0.75 * 0.5 / 1.25)
    assert ref_clip_s(0.75, [-0.2, -0.1]) == 0.0
    assert ref_clip_s(0.0, [0.9]) == 0.0
    with pytest.raises(ValueError):
        ref_clip_s(1.0, [])


def test_split_sentences():
    assert split_sentences("One. Two! Three? Four") == ["One.", "Two!", "Three?", "Four"]
    assert split_sentences("He said 'hi.' Then left.\n\nA dog") == [
        "He said 'hi.'",
        "Then left.",
        "A dog",
    ]
    assert split_sentences("3.5 m tall, e.g.tall") == ["3.5 m tall, e.g.tall"]
    assert split_sentences("   ") == []


def test_split_to_fit_keeps_fitting_text_whole_and_splits_by_sentence_first():
    text = "A red car. It is parked by a tall tree."
    assert split_to_fit(text, words_counter, 12) == [text]
    assert split_to_fit(text, words_counter, 9) == ["A red car.", "It is parked by a tall tree."]
    assert split_to_fit("", words_counter, 9) == []


def test_word_windows_overlap_and_cover_every_word():
    text = " ".join(f"w{i}" for i in range(20))
    windows = word_windows(text, words_counter, 10, overlap=0.25)
    assert all(n <= 10 for n in words_counter(windows))
    assert len(windows) == 3  # 8 words each, the next starting 2 words before the end
    assert windows[0].split()[-2:] == windows[1].split()[:2]
    assert windows[-1].split()[-1] == "w19"
    with pytest.raises(ValueError, match="no room"):
        word_windows(text, words_counter, 2)


def test_word_windows_cut_a_word_longer_than_the_context_into_characters():
    def chars(texts):  # one token per character, plus 2
        return [len(t.replace(" ", "")) + 2 for t in texts]

    pieces = word_windows("ab " + "x" * 23 + " cd", chars, 10, overlap=0.0)
    assert all(n <= 10 for n in chars(pieces))
    assert "".join(p.replace(" ", "") for p in pieces) == "ab" + "x" * 23 + "cd"


@settings(max_examples=60, deadline=None)
@given(
    n_words=st.integers(1, 60),
    max_tokens=st.integers(3, 20),
    overlap=st.floats(0.0, 0.9),
)
def test_word_windows_property(n_words, max_tokens, overlap):
    words = [f"w{i}" for i in range(n_words)]
    windows = word_windows(" ".join(words), words_counter, max_tokens, overlap)
    assert all(n <= max_tokens for n in words_counter(windows))
    seen = [w for window in windows for w in window.split()]
    assert sorted(set(seen), key=words.index) == words  # nothing dropped, order kept
    starts = [words.index(w.split()[0]) for w in windows]
    assert starts == sorted(set(starts))  # every window moves forward


def test_mean_cosine_averages_every_pair():
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert mean_cosine(a, a) == pytest.approx(0.5)
    assert mean_cosine(a[:1], np.array([0.6, 0.8])) == pytest.approx(0.6)


def test_recall_identity_and_ties():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(50, 16))
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    targets = np.arange(50)
    assert recall_at_k(images, images, targets) == {1: 1.0, 5: 1.0}
    assert retrieval_ranks(images, images, targets).tolist() == [0] * 50
    shuffled = rng.permutation(50)
    r = recall_at_k(images, images, shuffled, ks=(1, 5, 50))
    assert r[1] == pytest.approx(np.mean(shuffled == targets)) and r[50] == 1.0
    # a tie with another image counts against the query
    duplicate = np.vstack([images[:1], images[:1]])
    assert retrieval_ranks(images[:1], duplicate, [0]).tolist() == [1]
    with pytest.raises(ValueError):
        retrieval_ranks(images[:2], images, [0])
    with pytest.raises(ValueError):
        retrieval_ranks(images[:1], images, [50])


def test_options_are_checked():
    with pytest.raises(ConfigError, match="bogus"):
        build("clip_score", bogus=1)
    with pytest.raises(ConfigError, match="bogus"):
        build("self_retrieval", bogus=1)
    with pytest.raises(ValueError, match="window_overlap"):
        ClipScore(window_overlap=1.0)
    with pytest.raises(ValueError, match="w must"):
        RefClipScore(w=0)
    with pytest.raises(TypeError, match="distractors"):
        SelfRetrieval(distractors="one.jpg")
    with pytest.raises(ConfigError, match="metric clip_score: w must"):  # one line, not a traceback
        build("clip_score", w=0)


def test_no_embedder_fails_every_sample_with_the_reason():
    samples = [sample(0, PHOTOS[0], "a man"), sample(1, PHOTOS[1], "a cat", ["a cat"])]
    for metric in (ClipScore(), RefClipScore(), SelfRetrieval()):
        scores = metric.score(samples, Resources({}))
        assert len(scores) == 2
        for s in scores:
            assert "no embedder" in s.failure
            assert all(math.isnan(v) for v in s.values.values())
            assert set(s.values) == set(metric.value_names)


# ---------------------------------------------------------------- on the tiny CLIP


@pytest.fixture(scope="module")
def clip():
    from factcap.backends import registry

    return registry.build("embedder", "tiny:clip")


@pytest.fixture
def resources(clip):
    """Fresh caches around the one built tiny CLIP."""
    return Resources({"embedder": lambda: clip}, batch_size=16)


CAPTIONS = [
    "a cat",
    "an astronaut",
    "a rocket on a launch pad",
    "a cup of coffee",
    "a man with a camera",
    "a grey tabby cat lying on a wooden floor",
    "a white space suit",
    "a black and white photo",
]


def _torchmetrics_clip_score():
    """torchmetrics' CLIPScore on the tiny CLIP, built the documented way for a model that is
    not one of its hub names: ``model_name_or_path`` as a callable returning (model,
    processor). A plain local directory is refused (torchmetrics 1.9 accepts only names
    containing "openai", "jinaai" or "zer0int"), and 1.9 calls ``.norm`` on what
    ``get_*_features`` returns, which transformers 5 made a ``BaseModelOutputWithPooling``
    (torchmetrics#3407, fixed upstream by #3408 the same way): the subclass below returns the
    projected embedding tensor (``pooler_output``) as transformers 4 did. Same weights, same
    processor, loaded with ``from_pretrained`` from the same directory.
    """
    import torch
    from torchmetrics.multimodal import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    from factcap.backends import tiny

    directory = str(tiny.ensure("clip"))

    class TensorFeaturesCLIP(CLIPModel):
        def get_image_features(self, *args, **kwargs):
            out = super().get_image_features(*args, **kwargs)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        def get_text_features(self, *args, **kwargs):
            out = super().get_text_features(*args, **kwargs)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

    with pytest.raises(ValueError, match="Invalid model_name_or_path"):
        CLIPScore(model_name_or_path=directory)
    return CLIPScore(
        model_name_or_path=lambda: (
            TensorFeaturesCLIP.from_pretrained(directory),
            CLIPProcessor.from_pretrained(directory),
        )
    )


@pytest.mark.slow
def test_clip_score_equals_torchmetrics(resources):
    import torch

    samples = [
        sample(i * len(CAPTIONS) + j, path, caption)
        for i, path in enumerate(PHOTOS)
        for j, caption in enumerate(CAPTIONS)
    ]
    ours = ClipScore().score(samples, resources)
    reference = _torchmetrics_clip_score()
    images = dict(zip(PHOTOS, resources.load_images(PHOTOS), strict=True))
    theirs = []
    for s in samples:  # one pair at a time: torchmetrics clamps the batch mean, not each pair
        reference.reset()
        reference.update(torch.from_numpy(np.array(images[s.source])).permute(2, 0, 1), s.caption)
        theirs.append(float(reference.compute()))

    assert all(not score.info["clip_split"] and score.info["clip_windows"] == 1 for score in ours)
    # torchmetrics: 100 * max(cos, 0); ours: 2.5 * max(cos, 0) = clip_score
    np.testing.assert_allclose(
        [o.values["clip_score"] / 2.5 for o in ours], np.array(theirs) / 100, atol=1e-4
    )
    cosines = np.array([o.values["clip_cosine"] for o in ours])
    np.testing.assert_allclose(np.maximum(cosines, 0), np.array(theirs) / 100, atol=1e-4)
    # the check covers both sides of the clamp, with distinct values
    assert (cosines > 0.01).sum() >= 5 and (cosines < -0.01).sum() >= 5
    assert len(set(np.round(theirs, 4))) > 10


@pytest.mark.slow
def test_clip_score_is_batched_and_embeds_each_image_and_text_once(clip, resources):
    samples = [
        sample(i * len(CAPTIONS) + j, path, caption)
        for i, path in enumerate(PHOTOS)
        for j, caption in enumerate(CAPTIONS)
    ]
    vision, h1 = count_forwards(clip.model.vision_model)
    text, h2 = count_forwards(clip.model.text_model)
    try:
        scores = ClipScore().score(samples, resources)
        again = ClipScore().score(samples[:8], resources)  # images cached by Resources
    finally:
        h1.remove()
        h2.remove()
    assert len(vision) == 1 and vision[0][1].last_hidden_state.shape[0] == len(PHOTOS)
    assert len(text) == 2 and text[0][0]["input_ids"].shape[0] == len(CAPTIONS)
    assert [s.values for s in again] == [s.values for s in scores[:8]]
    # the value is the cosine of the embedder's own unit vectors
    direct = clip.embed_texts(CAPTIONS) @ clip.embed_images(resources.load_images(PHOTOS)).T
    got = np.array([s.values["clip_cosine"] for s in scores]).reshape(len(PHOTOS), -1)
    np.testing.assert_allclose(got, direct.T, atol=1e-5)


@pytest.mark.slow
def test_long_caption_is_split_not_truncated(clip, resources):
    tokens = clip.count_tokens([LONG, LONG[: LONG.index("A small red")]])
    assert tokens[0] > 77 and tokens[1] > 77  # the last sentence lies past the context
    # what the embedder alone would do: truncate, blind to the last sentence
    np.testing.assert_allclose(*clip.embed_texts([LONG, LONG_CHANGED]), atol=1e-6)

    samples = [
        sample(0, PHOTOS[0], LONG),
        sample(1, PHOTOS[0], LONG_CHANGED),
        sample(2, PHOTOS[0], "an astronaut"),
    ]
    long, changed, short = ClipScore().score(samples, resources)
    pieces = split_to_fit(LONG, clip.count_tokens, clip.max_text_tokens)
    assert long.info == {"clip_split": True, "clip_windows": len(pieces), "clip_tokens": tokens[0]}
    assert len(pieces) == 5 and all(n <= 77 for n in clip.count_tokens(pieces))
    assert " ".join(pieces) == " ".join(LONG.split())  # sentences: nothing dropped
    assert short.info["clip_split"] is False and short.info["clip_windows"] == 1
    lines = LONG.replace(". ", "\n").rstrip(".")  # line breaks end sentences too
    (by_line,) = ClipScore().score([sample(3, PHOTOS[0], lines)], resources)
    assert by_line.info["clip_windows"] == len(split_sentences(lines)) == 5
    assert abs(long.values["clip_cosine"] - changed.values["clip_cosine"]) > 1e-3

    # the documented aggregation: the mean of the per-piece cosines
    image = clip.embed_images(resources.load_images([PHOTOS[0]]))[0]
    expected = float(np.mean(clip.embed_texts(pieces) @ image))
    assert long.values["clip_cosine"] == pytest.approx(expected, abs=1e-5)
    assert long.values["clip_score"] == pytest.approx(2.5 * max(expected, 0.0), abs=1e-5)


@pytest.mark.slow
def test_a_sentence_longer_than_the_context_becomes_overlapping_windows(clip, resources):
    sentence = " ".join(LONG.replace(".", "").split())  # one sentence, no breaks
    windows = split_to_fit(sentence, clip.count_tokens, clip.max_text_tokens)
    assert len(windows) >= 2 and all(n <= 77 for n in clip.count_tokens(windows))
    first, second = windows[0].split(), windows[1].split()
    shared = int(0.25 * len(first))  # the default window_overlap
    assert shared >= 2 and second[:shared] == first[-shared:]
    # a longer context (SigLIP 64 < CLIP 77 < Long-CLIP 248) splits less
    assert len(split_to_fit(sentence, clip.count_tokens, 40)) > len(windows)
    assert split_to_fit(sentence, clip.count_tokens, 248) == [sentence]
    (score,) = ClipScore().score([sample(0, PHOTOS[0], sentence)], resources)
    assert score.info["clip_split"] and score.info["clip_windows"] == len(windows)


@pytest.mark.slow
def test_prefix_option_embeds_the_prefixed_text(clip, resources):
    (plain,) = ClipScore().score([sample(0, PHOTOS[2], "a cat")], resources)
    (hessel,) = ClipScore(prefix="A photo depicts").score(
        [sample(0, PHOTOS[2], "a cat")], resources
    )
    image = clip.embed_images(resources.load_images([PHOTOS[2]]))[0]
    expected = float(clip.embed_texts(["A photo depicts a cat"])[0] @ image)
    assert hessel.values["clip_cosine"] == pytest.approx(expected, abs=1e-5)
    assert hessel.values["clip_cosine"] != pytest.approx(plain.values["clip_cosine"], abs=1e-4)


@pytest.mark.slow
def test_ref_clip_score(clip, resources):
    refs = ["a cat on a floor", "a grey cat", LONG]
    samples = [
        sample(0, PHOTOS[2], "a grey tabby cat lying on a wooden floor", refs),
        sample(1, PHOTOS[2], "a cat", ["a cat"]),
        sample(2, PHOTOS[2], "a cat", []),
        sample(3, PHOTOS[2], "a cat", ["  "]),
    ]
    scores = RefClipScore().score(samples, resources)
    image = clip.embed_images(resources.load_images([PHOTOS[2]]))[0]

    cand = clip.embed_texts([samples[0].caption])[0]
    long_pieces = clip.embed_texts(split_to_fit(LONG, clip.count_tokens, 77))
    ref_cos = [float(cand @ e) for e in clip.embed_texts(refs[:2])] + [
        float(np.mean(long_pieces @ cand))
    ]
    expected = ref_clip_s(clip_s(float(cand @ image)), ref_cos)
    assert scores[0].values["ref_clip_score"] == pytest.approx(expected, abs=1e-5)
    assert scores[0].values["ref_clip_text_cosine"] == pytest.approx(max(ref_cos), abs=1e-5)
    # the candidate as its own reference: text cosine 1
    assert scores[1].values["ref_clip_text_cosine"] == pytest.approx(1.0, abs=1e-5)
    c = clip_s(float(clip.embed_texts(["a cat"])[0] @ image))
    assert scores[1].values["ref_clip_score"] == pytest.approx(harmonic_mean(c, 1.0), abs=1e-5)
    for s in scores[2:]:
        assert s.failure == "no references" and math.isnan(s.values["ref_clip_score"])


@pytest.mark.slow
def test_undecodable_image_and_empty_caption_fail_with_reasons(resources):
    samples = [
        sample(0, BROKEN, "a cat", ["a cat"]),
        sample(1, PHOTOS[2], "  ", ["a cat"]),
        sample(2, PHOTOS[2], "a cat", ["a cat"]),
    ]
    for metric in (ClipScore(), RefClipScore()):
        broken, empty, good = metric.score(samples, resources)
        assert broken.failure.startswith("CorruptImage")
        assert empty.failure == "empty caption"
        for s in (broken, empty):
            assert set(s.values) == set(metric.value_names)
            assert all(math.isnan(v) for v in s.values.values())
        assert good.failure is None and all(math.isfinite(v) for v in good.values.values())
    broken, empty, good = SelfRetrieval().score(samples, resources)
    assert broken.failure.startswith("CorruptImage") and math.isnan(
        broken.values["self_retrieval_r1"]
    )
    assert empty.failure == "empty caption"
    assert good.info["self_retrieval_gallery_size"] == 1  # the broken image is not in it


class CaptionsAsImages:
    """The tiny CLIP for images; a caption ``"photo k"`` embeds exactly as ``vectors[k]``."""

    name = "captions-as-images"

    def __init__(self, clip, vectors: np.ndarray):
        self.clip, self.vectors = clip, vectors

    def embed_images(self, images):
        return self.clip.embed_images(images)

    def embed_texts(self, texts):
        return np.stack([self.vectors[int(t.split()[-1])] for t in texts])


@pytest.mark.slow
def test_self_retrieval_identity_on_real_embeddings(clip, resources):
    """Captions that embed exactly as their images: every caption finds its own."""
    image_emb = np.stack(resources.image_embeddings(PHOTOS))
    assert recall_at_k(image_emb, image_emb, range(len(PHOTOS)), ks=(1,)) == {1: 1.0}
    samples = [sample(i, path, f"photo {i}") for i, path in enumerate(PHOTOS)]
    own = Resources({"embedder": lambda: CaptionsAsImages(clip, image_emb)})
    for s in SelfRetrieval().score(samples, own):
        assert s.info["self_retrieval_rank"] == 0 and s.values["self_retrieval_r1"] == 1.0
        assert s.info["self_retrieval_gallery_size"] == len(PHOTOS)
    rolled = np.roll(image_emb, 1, axis=0)  # each caption now matches another image
    assert recall_at_k(rolled, image_emb, range(len(PHOTOS)), ks=(1,)) == {1: 0.0}
    other = Resources({"embedder": lambda: CaptionsAsImages(clip, rolled)})
    for s in SelfRetrieval().score(samples, other):
        assert s.info["self_retrieval_rank"] >= 1 and s.values["self_retrieval_r1"] == 0.0


@pytest.mark.slow
def test_self_retrieval_metric_on_real_photos(clip, resources, tmp_path):
    from PIL import Image

    captions = ["an astronaut", "a man with a camera", "a cat", "a cup of coffee", "a rocket"]
    samples = [sample(i, p, c) for i, (p, c) in enumerate(zip(PHOTOS, captions, strict=True))]
    samples.append(sample(5, PHOTOS[2], LONG))  # a second caption of the same image
    metric = SelfRetrieval()
    scores = metric.score(samples, resources)

    text = clip.embed_texts(captions)  # short captions: one piece each
    image = clip.embed_images(resources.load_images(PHOTOS))
    ranks = retrieval_ranks(text, image, range(5))
    for s, rank in zip(scores[:5], ranks, strict=True):
        assert s.info["self_retrieval_rank"] == rank
        assert s.values["self_retrieval_r1"] == float(rank == 0)
        assert s.info["self_retrieval_gallery_size"] == 5  # six captions, five distinct images
        # five images: recall@5 is trivially 1, so it is NaN with the reason
        assert math.isnan(s.values["self_retrieval_r5"]) and "recall@5" in s.failure
    assert scores[5].info["clip_split"] and scores[5].info["self_retrieval_gallery_size"] == 5
    assert metric.corpus(samples, scores) == {"self_retrieval_gallery_size": 5.0}

    # with distractors the gallery grows past 5 and recall@5 is measured
    distractors = []
    for i, path in enumerate(PHOTOS):
        out = tmp_path / f"crop{i}.png"
        with Image.open(path) as im:
            im.convert("RGB").crop((0, 0, im.width // 2, im.height // 2)).save(out)
        distractors.append(str(out))
    distractors.append(BROKEN)  # left out of the gallery, with a warning
    scores = SelfRetrieval(distractors=distractors).score(samples, resources)
    for s in scores:
        assert s.failure is None and s.info["self_retrieval_gallery_size"] == 10
        assert s.values["self_retrieval_r1"] in (0.0, 1.0)
        assert s.values["self_retrieval_r5"] in (0.0, 1.0)
        assert s.values["self_retrieval_r5"] >= s.values["self_retrieval_r1"]
        assert s.values["self_retrieval_r5"] == float(s.info["self_retrieval_rank"] < 5)
