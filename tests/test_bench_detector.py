"""The shapes world's detector: an OWLv2 trained from scratch, loaded by the real backend."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch  # noqa: E402

from factcap.backends import registry  # noqa: E402
from factcap.bench.shapes import train_detector as td  # noqa: E402
from factcap.bench.shapes.training import scene_pixels  # noqa: E402
from factcap.bench.shapes.world import Obj, Scene, make_scene  # noqa: E402
from factcap.roles import Detection  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("detector")
    return out, td.train(out, size="smoke", seed=0, log=lambda _: None)


@pytest.mark.slow  # smoke training
def test_smoke_checkpoint_loads_through_the_registry_and_detects(smoke):
    out, stats = smoke
    assert stats["steps"] == td.PLANS["smoke"]["steps"]
    detector = registry.build("detector", f"hf:{out}", box_threshold=0.0)
    assert type(detector).__name__ == "OwlDetector"
    images = [make_scene(i, split="test").render() for i in range(3)]
    found = detector.detect(images, [["red circle", "circle"], [], ["orange cross"]])
    assert len(found) == 3 and found[1] == []
    for dets, queries in zip(found, [["red circle", "circle"], [], ["orange cross"]], strict=True):
        assert all(isinstance(d, Detection) and d.query in queries for d in dets)
        for d in dets:
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
    assert found[0] and found[2]  # threshold 0 keeps every box


@pytest.mark.slow  # smoke training
def test_training_forward_matches_the_model_forward(smoke):
    from transformers import Owlv2ForObjectDetection, Owlv2Processor

    out, _ = smoke
    model = Owlv2ForObjectDetection.from_pretrained(out).eval()
    processor = Owlv2Processor.from_pretrained(out)
    scenes = [make_scene(i, split="train") for i in range(2)]
    inputs = processor(
        images=[s.render() for s in scenes], text=[td.QUERIES] * 2, return_tensors="pt"
    )
    text = processor.tokenizer(
        td.QUERIES, padding="max_length", max_length=td.TEXT_LENGTH, return_tensors="pt"
    )
    assert torch.equal(scene_pixels(scenes), inputs["pixel_values"])
    with torch.no_grad():
        expected = model(**inputs)
        logits, boxes = td.predict(model, scene_pixels(scenes), dict(text))
    torch.testing.assert_close(logits, expected.logits)
    torch.testing.assert_close(boxes, expected.pred_boxes)


@pytest.mark.slow  # smoke training
def test_each_world_word_is_one_token(smoke):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(smoke[0])
    assert tokenizer.tokenize("Orange cross") == ["orange</w>", "cross</w>"]


def _scene() -> Scene:
    # on the 8 x 8 grid of 12-pixel patches: a large red square whose box holds the centres
    # of patches (1..3, 1..3); a small blue circle holding the centre of patch (5, 5) only,
    # grazing its eight neighbours
    return Scene(
        "hand-made",
        (
            Obj("square", "red", "large", (16, 16, 44, 44)),
            Obj("circle", "blue", "small", (58, 58, 74, 74)),
        ),
        230,
    )


def test_targets_give_each_object_the_patches_at_its_centre():
    labels, weights, boxes, owned = (torch.from_numpy(t) for t in td.targets(_scene().objects, 8))
    square = [row * 8 + col for row in (1, 2, 3) for col in (1, 2, 3)]
    circle = [5 * 8 + 5]
    assert sorted(owned.nonzero().flatten().tolist()) == sorted(square + circle)
    red_square, bare_square = td.QUERIES.index("red square"), td.QUERIES.index("square")
    blue_circle, bare_circle = td.QUERIES.index("blue circle"), td.QUERIES.index("circle")
    positive = {(p, q) for p in square for q in (red_square, bare_square)}
    positive |= {(p, q) for p in circle for q in (blue_circle, bare_circle)}
    assert {tuple(x) for x in labels.nonzero().tolist()} == positive
    # grazed patches are not trained for the object's own queries, only for the others
    assert weights[6 * 8 + 6, blue_circle] == 0 and weights[4 * 8 + 5, bare_circle] == 0
    assert weights[6 * 8 + 6, red_square] == 1 and weights[0, blue_circle] == 1
    assert int((weights == 0).sum()) == 8 * 2
    torch.testing.assert_close(boxes[square[4]], torch.tensor([30.0, 30, 28, 28]) / 96)


def test_loss_prefers_the_right_answer():
    parts = td.targets(_scene().objects, 8)
    labels, weights, boxes, owned = (torch.from_numpy(t)[None] for t in parts)
    batch = {"labels": labels, "weights": weights, "boxes": boxes, "owned": owned}
    sure = (labels * 2 - 1) * 12.0
    right = td.detection_loss(sure, boxes.clamp(min=1e-3), batch)
    wrong_class = td.detection_loss(-sure, boxes.clamp(min=1e-3), batch)
    wrong_box = td.detection_loss(sure, boxes.roll(1, dims=1).clamp(min=1e-3), batch)
    assert right < 0.01 < wrong_box < wrong_class


@pytest.mark.slow  # smoke training, twice
def test_training_is_deterministic(smoke, tmp_path):
    from safetensors.torch import load_file

    td.train(tmp_path, size="smoke", seed=0, log=lambda _: None)
    first, again = (load_file(p / "model.safetensors") for p in (smoke[0], tmp_path))
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
