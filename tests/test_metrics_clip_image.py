"""clip_image_score and its text-to-image backend, on a tiny Stable-Diffusion pipeline.

The pipeline is built offline into a temporary directory and loaded through the registry
(``hf:<dir>``) exactly as a hub pipeline would be; the originals are real photos.
"""

from __future__ import annotations

import doctest
import math
from pathlib import Path

import numpy as np
import pytest

from factcap.backends import registry
from factcap.backends.tiny import diffusion
from factcap.errors import ConfigError, ModelNotAvailable
from factcap.examples import example_paths
from factcap.metrics import Sample, build
from factcap.metrics import clip_image as clip_image_module
from factcap.metrics.clip_image import ClipImageScore, mean_cosine, sample_seeds
from factcap.metrics.resources import Resources
from spies import rejected

CAPTIONS = {
    "astronaut.jpg": "an astronaut in a white suit stands beside an american flag .",
    "chelsea.jpg": "a photo of a cat sitting on a red sofa next to a window .",
    "coffee.jpg": "a cup of coffee on a saucer with a spoon and a small cookie .",
}


def test_pure_functions_and_doctests():
    assert sample_seeds(5, 3) == [5, 6, 7]
    value, cosines = mean_cosine(np.array([0.6, 0.8]), np.array([[0.6, 0.8], [0.8, -0.6]]))
    assert cosines == pytest.approx([1.0, 0.0])
    assert value == pytest.approx(0.5)
    assert doctest.testmod(clip_image_module).failed == 0


def test_options_are_checked():
    assert ClipImageScore().seeds == [0]
    assert ClipImageScore(samples=3, seed=4).seeds == [4, 5, 6]
    with pytest.raises(ValueError, match="samples"):
        ClipImageScore(samples=0)
    with pytest.raises(ValueError, match="seed"):
        ClipImageScore(seed=-1)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        build("clip_image_score", k=2)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "sd"
    diffusion.build_sd(out)
    return out


@pytest.fixture(scope="module")
def t2i(sd_dir):
    return registry.build("t2i", "hf:" + str(sd_dir))


@pytest.fixture(scope="module")
def clip():
    return registry.build("embedder", "tiny:clip")


def _pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int16)


@pytest.mark.slow
def test_tiny_pipeline_loads_through_the_registry(sd_dir, t2i):
    assert type(t2i).__name__ == "DiffusersTextToImage"
    assert t2i.name == "hf:" + str(sd_dir)
    assert type(t2i.pipe).__name__ == "StableDiffusionPipeline"
    assert type(t2i.pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert t2i.pipe.safety_checker is None
    assert t2i.max_prompt_tokens == 77
    sizes = sum(p.stat().st_size for p in sd_dir.rglob("*") if p.is_file())
    assert sizes < 5_000_000


@pytest.mark.slow
def test_generate_is_one_pipeline_call_per_batch(t2i):
    unet_batches: list[int] = []
    text_batches: list[int] = []
    hooks = [
        t2i.pipe.unet.register_forward_hook(lambda _m, args, _o: unet_batches.append(len(args[0]))),
        t2i.pipe.text_encoder.register_forward_hook(
            lambda _m, args, _o: text_batches.append(len(args[0]))
        ),
    ]
    try:
        images = t2i.generate(["a red car", "a cat on a sofa"], seeds=[0, 1])
    finally:
        for hook in hooks:
            hook.remove()
    # one step, no classifier-free guidance: one text-encoder and one UNet pass for both
    assert text_batches == [2]
    assert unet_batches == [2]
    assert [im.size for im in images] == [(diffusion.IMAGE_SIZE, diffusion.IMAGE_SIZE)] * 2
    assert all(im.mode == "RGB" for im in images)
    assert _pixels(images[0]).std() > 1  # a picture, not a flat fill


@pytest.mark.slow
def test_seeds_fix_each_image_whatever_the_batch(t2i):
    first = t2i.generate(["a red car", "a cat on a sofa"], seeds=[3, 4])
    again = t2i.generate(["a red car", "a cat on a sofa"], seeds=[3, 4])
    alone = t2i.generate(["a cat on a sofa"], seeds=[4])
    other = t2i.generate(["a red car"], seeds=[5])
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(_pixels(a), _pixels(b))
    assert np.abs(_pixels(alone[0]) - _pixels(first[1])).max() <= 1
    assert np.abs(_pixels(other[0]) - _pixels(first[0])).mean() > 5
    assert t2i.generate([], seeds=[]) == []
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        t2i.generate(["a", "b"], seeds=[0])


@pytest.mark.slow
def test_options_and_missing_model(sd_dir, tmp_path):
    with rejected(TypeError, match="unknown option"):
        registry.build("t2i", "hf:" + str(sd_dir), steps=4)
    with rejected(ValueError, match="num_inference_steps"):
        registry.build("t2i", "hf:" + str(sd_dir), num_inference_steps=0)
    with rejected(ValueError, match="guidance_scale"):
        registry.build("t2i", "hf:" + str(sd_dir), guidance_scale=-1.0)
    with rejected(ValueError, match="both height and width"):
        registry.build("t2i", "hf:" + str(sd_dir), height=32)
    with pytest.raises(ModelNotAvailable, match="not available"):
        registry.build("t2i", "hf:" + str(tmp_path / "no-such-pipeline"))
    two_steps = registry.build(
        "t2i", "hf:" + str(sd_dir), num_inference_steps=2, height=32, width=48
    )
    calls: list[int] = []
    hook = two_steps.pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    [image] = two_steps.generate(["a dog"], seeds=[0])
    hook.remove()
    assert len(calls) == 2
    assert image.size == (48, 32)


@pytest.mark.slow
def test_prompt_truncation_is_reported(t2i):
    assert t2i.prompt_truncated(["a cat", "a cat on a sofa " * 30]) == [False, True]


@pytest.mark.slow
def test_building_twice_gives_identical_files(sd_dir, tmp_path):
    again = tmp_path / "sd"
    diffusion.build_sd(again)
    files = sorted(p.relative_to(sd_dir) for p in sd_dir.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert any(str(f).endswith(".safetensors") for f in files)
    for name in files:
        assert (sd_dir / name).read_bytes() == (again / name).read_bytes(), name


def _resources(t2i, clip, batch_size: int = 16, built: list[str] | None = None) -> Resources:
    def make(role, backend):
        def builder():
            if built is not None:
                built.append(role)
            return backend

        return builder

    return Resources(
        {"t2i": make("t2i", t2i), "embedder": make("embedder", clip)}, batch_size=batch_size
    )


def _samples(captions: dict[str, str] | None = None) -> list[Sample]:
    paths = {p.name: p for p in example_paths()}
    return [
        Sample(id=name, source=str(paths[name]), caption_source="final:detailed", caption=text)
        for name, text in (captions or CAPTIONS).items()
    ]


@pytest.mark.slow
def test_scores_are_cosines_and_deterministic(t2i, clip):
    samples = _samples()
    first = ClipImageScore().score(samples, _resources(t2i, clip))
    second = ClipImageScore().score(samples, _resources(t2i, clip))
    assert len(first) == len(samples)
    for a, b in zip(first, second, strict=True):
        assert a.failure is None
        value = a.values["clip_image_score"]
        assert -1.0 <= value <= 1.0
        assert value == pytest.approx(b.values["clip_image_score"], abs=1e-6)
        assert a.info["seeds"] == [0]
        assert a.info["prompt_truncated"] is False
    values = [s.values["clip_image_score"] for s in first]
    assert len({round(v, 6) for v in values}) == len(values)  # each image its own score


@pytest.mark.slow
def test_k_samples_average_cosines_with_their_seeds(t2i, clip):
    [sample] = _samples({"chelsea.jpg": CAPTIONS["chelsea.jpg"]})
    [score] = ClipImageScore(samples=2, seed=3).score([sample], _resources(t2i, clip))
    assert score.info["seeds"] == [3, 4]

    original = clip.embed_images(_resources(t2i, clip).load_images([sample.source]))[0]
    cosines = [
        float(clip.embed_images(t2i.generate([sample.caption], seeds=[seed]))[0] @ original)
        for seed in (3, 4)
    ]
    # generated alone vs. in a batch, pixels may differ by one level: ~1e-5 in the cosine
    assert score.info["cosines"] == pytest.approx(cosines, abs=1e-4)
    assert score.values["clip_image_score"] == pytest.approx(sum(cosines) / 2, abs=1e-4)
    assert abs(cosines[0] - cosines[1]) > 1e-3, cosines  # two different images were averaged


@pytest.mark.slow
def test_captions_times_samples_go_in_batches(t2i, clip, monkeypatch):
    captions = dict(CAPTIONS)
    samples = _samples(captions)
    samples.append(Sample("again", samples[0].source, "proposal:m", samples[0].caption))
    resources = _resources(t2i, clip, batch_size=4)
    batches: list[list[tuple[str, int]]] = []
    real = t2i.generate

    def generate(prompts, seeds):
        batches.append(list(zip(prompts, seeds, strict=True)))
        return real(prompts, seeds)

    monkeypatch.setattr(t2i, "generate", generate)
    scores = ClipImageScore(samples=2).score(samples, resources)

    # 3 distinct captions x 2 seeds = 6 images, in batches of 4; the repeated caption is
    # drawn once
    assert [len(b) for b in batches] == [4, 2]
    assert sorted(j for b in batches for j in b) == sorted(
        (c, s) for c in captions.values() for s in (0, 1)
    )
    assert scores[3].values == scores[0].values
    assert all(s.failure is None for s in scores)


@pytest.mark.slow
def test_undecodable_original_and_empty_caption_fail(t2i, clip, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    good = _samples({"coffee.jpg": CAPTIONS["coffee.jpg"]})[0]
    samples = [
        Sample("broken", str(broken), "final:detailed", "a cup of coffee"),
        Sample("blank", good.source, "final:detailed", "  "),
        good,
    ]
    scores = ClipImageScore().score(samples, _resources(t2i, clip))
    assert math.isnan(scores[0].values["clip_image_score"])
    assert scores[0].failure
    assert math.isnan(scores[1].values["clip_image_score"])
    assert scores[1].failure == "empty caption"
    assert scores[2].failure is None
    assert math.isfinite(scores[2].values["clip_image_score"])

    built: list[str] = []
    [only] = ClipImageScore().score(samples[:1], _resources(t2i, clip, built=built))
    assert only.failure == scores[0].failure
    assert "t2i" not in built  # nothing to draw: the generator is never built
