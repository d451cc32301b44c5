"""Region captions, relations and the caption graph: the geometry exactly right on hand-made
layouts, and the regions stages driven by scripted backends with known boxes and answers
(the far side of the role boundary); the tiny preset end to end in every output format."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from factcap.boxes import iou, pad, relations, suppress
from factcap.cli import main
from factcap.config import load_config
from factcap.engine.records import read_records
from factcap.inputs import InputItem
from factcap.pipeline import Pipeline
from factcap.pipeline.models import Models
from factcap.roles import Detection
from scripted import ScriptedCaptioner, ScriptedLLM, ScriptedVQA

# --- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 10, 10), (20, 0, 30, 10), ["left of"]),
        ((20, 0, 30, 10), (0, 0, 10, 10), ["right of"]),
        ((0, 0, 10, 10), (0, 20, 10, 30), ["above"]),
        ((0, 20, 10, 30), (0, 0, 10, 10), ["below"]),
        ((10, 10, 20, 20), (0, 0, 40, 40), ["inside"]),
        ((0, 0, 40, 40), (10, 10, 20, 20), ["larger than"]),
        ((0, 0, 20, 20), (10, 0, 30, 20), ["overlapping", "left of"]),
        ((0, 0, 30, 30), (40, 0, 50, 10), ["left of", "larger than"]),
    ],
)
def test_relations_from_boxes(a, b, expected):
    assert relations(a, b) == expected


def test_suppression_keeps_the_largest_and_padding_stays_inside_the_image():
    boxes = [(10, 10, 20, 20), (0, 0, 50, 50), (2, 2, 50, 50), (60, 60, 70, 70)]
    assert suppress(boxes, 0.5) == [1, 0, 3]  # (2,2,50,50) overlaps the largest: IoU .92
    assert suppress(boxes, 0.95) == [1, 2, 0, 3]
    assert iou(boxes[1], boxes[2]) == pytest.approx(48 * 48 / 2500)
    for box in [(0, 0, 5, 5), (95, 95, 100, 100), (-3, -3, 120, 120), (50, 50, 51, 51)]:
        x0, y0, x1, y1 = pad(box, 0.5, (100, 80))
        assert 0 <= x0 < x1 <= 100 and 0 <= y0 < y1 <= 80


# --- the stages with scripted backends ----------------------------------------------------------

W, H = 200, 100
CAT, SOFA, CAT2, GHOST = (10, 10, 60, 60), (100, 20, 190, 90), (12, 11, 61, 62), (150, 5, 152, 7)


class BoxDetector:
    """Finds a cat (twice: the second almost on the first), a sofa and a tiny ghost."""

    name = "box-detector"

    def detect(self, images, queries):
        boxes = {"cat": [CAT, CAT2], "sofa": [SOFA], "ghost": [GHOST]}
        return [
            [Detection(query=q, score=0.9, box=b) for q in qs for b in boxes.get(q, [])]
            for qs in queries
        ]


class CropCaptioner:
    """Says what the crop shows, by its size: the cat's crop is square, the sofa's wide."""

    name = "crop-captioner"

    def __init__(self):
        self.sizes = []

    def caption(self, images, prompt=None):
        self.sizes.extend(im.size for im in images)
        return [
            "A grey cat on a sofa."
            if im.size == (W, H)
            else "A grey cat."
            if abs(im.size[0] - im.size[1]) < 10
            else "A red sofa."
            for im in images
        ]


def claims(prompt: str) -> str:
    found = [w for w in ("cat", "sofa", "ghost") if w in prompt.split("<data>", 1)[1]]
    return json.dumps([{"kind": "object", "text": f"There is a {w}.", "subject": w} for w in found])


def compose(prompt: str) -> str:
    if "relative to each other" in prompt:
        return "The grey cat sits to the left of the red sofa."
    if "one region of a larger image" in prompt:
        return "A grey cat." if "grey cat" in prompt else "A red sofa."
    return "A grey cat on a red sofa."


def vqa_answer(question: str) -> float:
    if "sofa" in question and "left of" in question:
        return 0.2  # a relation the VQA model refutes
    return {"Is there a ghost in the image?": 0.1}.get(question, 0.9)


def make(answer=vqa_answer, **regions):
    config = load_config(preset="tiny", overrides={"regions": {"enabled": True, **regions}})
    captioner, llm, vqa = CropCaptioner(), ScriptedLLM(claims, compose), ScriptedVQA(answer)
    built = {
        "captioner:0": (captioner, 4),
        "captioner:1": (ScriptedCaptioner("second", "A cat and a sofa."), 4),
        "llm": (llm, 4),
        "detector": (BoxDetector(), 4),
        "vqa": (vqa, 4),
    }
    return Pipeline(config, models=Models(config, built=built)), captioner, llm, vqa


def item():
    return InputItem("room.png", "room", image=Image.new("RGB", (W, H), "white"))


def test_regions_are_suppressed_cropped_captioned_and_checked():
    pipeline, captioner, _, vqa = make(min_area=0.0005)
    [record] = pipeline.process([item()])
    assert record.ok, record.error
    regions = {r["id"]: r for r in record.regions.items}
    # the second cat box is suppressed; the ghost was refuted on the whole image already
    assert [(r["label"], r["box"]) for r in record.regions.items] == [
        ("sofa", list(map(float, SOFA))),
        ("cat", list(map(float, CAT))),
    ]
    # padded crops: 10 % of the box on every side (sofa 90x70 -> 108x84, cat 50x50 -> 60x60)
    assert captioner.sizes[1:] == [(108, 84), (60, 60)]
    assert regions["r0"]["caption"] == "A red sofa." and regions["r1"]["caption"] == "A grey cat."
    assert regions["r1"]["claims"][0]["text"] == "There is a cat."
    assert regions["r1"]["claims"][0]["verdict"] == "supported"
    assert regions["r0"]["box_normalised"] == [0.5, 0.2, 0.95, 0.9]
    asked = [q for call in vqa.calls for q in call]
    assert "Is there a cat in the image?" in asked  # label claims asked on the crops


def test_min_area_max_and_a_refuted_region_is_dropped():
    # the sofa covers 90*70 / (200*100) = 31.5 % of the image, the cat 12.5 %
    for min_area, labels in ((0.315, ["sofa"]), (0.316, []), (0.125, ["sofa", "cat"])):
        pipeline, *_ = make(min_area=min_area)
        [record] = pipeline.process([item()])
        assert [r["label"] for r in record.regions.items] == labels, min_area
    pipeline, *_ = make(min_area=0.0, max=1)
    [record] = pipeline.process([item()])
    assert [r["label"] for r in record.regions.items] == ["sofa"]  # largest first
    pipeline, *_ = make(lambda q: 0.1 if q == "Is there a cat in the image?" else 0.9)
    [record] = pipeline.process([item()])
    assert [r["label"] for r in record.regions.items] == ["sofa"]
    assert any("dropped r1 (cat)" in n and "P(yes) 0.1" in n for n in record.notes)
    assert [n["kind"] for n in record.regions.graph["nodes"]] == ["image", "entity"]


def test_relations_sentences_checks_and_graph():
    pipeline, _, llm, vqa = make(min_area=0.0005)
    [record] = pipeline.process([item()])
    graph = record.regions.graph
    kinds = [(n["id"], n["kind"]) for n in graph["nodes"]]
    assert kinds[:3] == [("image", "image"), ("r0", "entity"), ("r1", "entity")]
    asked = [q for call in vqa.calls for q in call]
    assert "Is the sofa right of the cat?" in asked
    relation = next(n for n in graph["nodes"] if n["kind"] == "relation")
    assert relation["label"] == "right of" and relation["verdict"] == "supported"
    # the LLM's sentence named both: kept
    assert relation["descriptions"] == [
        {"text": "The grey cat sits to the left of the red sofa.", "kind": "relation"}
    ]
    edges = {(e["source"], e["target"]) for e in graph["edges"]}
    assert {
        ("image", "r0"),
        ("image", "r1"),
        (relation["id"], "r0"),
        (relation["id"], "r1"),
    } <= edges


@pytest.mark.slow
def test_tiny_preset_writes_regions_and_graph_in_every_format(tmp_path):
    from factcap.examples import example_paths

    photos = [str(p) for p in example_paths()[:2]]
    found = {}
    for fmt, out in (
        ("jsonl", tmp_path / "out.jsonl"),
        ("parquet", tmp_path / "pq"),
        ("webdataset", tmp_path / "wds"),
    ):
        code = main(["caption", *photos, "-o", str(out), "--format", fmt, "--regions", "--quiet"])
        assert code == 0
        found[fmt] = {r["id"]: r for r in read_records(out)}
    assert found["jsonl"].keys() == found["parquet"].keys() == found["webdataset"].keys()
    for fmt, records in found.items():
        assert len(records) == 2, fmt
        for record in records.values():
            width, height = record["image_size"]
            graph = record["regions"]["graph"]
            entities = [n["id"] for n in graph["nodes"] if n["kind"] == "entity"]
            assert sorted(entities) == sorted(r["id"] for r in record["regions"]["items"]), fmt
            assert graph["nodes"][0]["id"] == "image"
            for region in record["regions"]["items"]:
                x0, y0, x1, y1 = region["box"]
                assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
                assert region["claims"][0]["text"] == f"There is a {region['label']}."
            ids = {n["id"] for n in graph["nodes"]}
            assert all(e["source"] in ids and e["target"] in ids for e in graph["edges"])
    assert {k: r["regions"] for k, r in found["parquet"].items()} == {
        k: r["regions"] for k, r in found["jsonl"].items()
    }
    assert any(
        r["regions"]["items"] for r in found["jsonl"].values()
    )  # the tiny detector finds boxes


def test_a_region_caption_keeps_only_what_names_its_label():
    pipeline, _, llm, _ = make(min_area=0.0005)

    def wander(prompt):
        if "one region of a larger image" in prompt:
            return "A red sofa. The sofa is red." if "red sofa" in prompt else "A blue car."
        return compose(prompt)

    llm.caption_answer = wander
    [record] = pipeline.process([item()])
    captions = {r["label"]: r["caption"] for r in record.regions.items}
    assert captions["sofa"] == "A red sofa. The sofa is red."  # both name the sofa
    # the cat's caption named no cat: the first draft sentence that does ("A grey cat.")
    assert captions["cat"] == "A grey cat."
    cat = next(r for r in record.regions.items if r["label"] == "cat")
    assert "regions: kept only what names the cat" in cat["notes"]


def test_a_region_caption_names_no_object_its_crop_did_not_support():
    # on the crops the VQA model is unsure of a sofa (0.5): uncertain, not supported
    pipeline, _, llm, _ = make(lambda q: 0.5 if "sofa" in q else 0.9)

    def with_sofa(prompt):
        if "one region of a larger image" in prompt:
            return "A grey cat on a sofa." if "grey cat" in prompt else "A red sofa."
        return compose(prompt)

    llm.caption_answer = with_sofa
    [record] = pipeline.process([item()])
    captions = {r["label"]: r["caption"] for r in record.regions.items}
    assert captions["cat"] == "A grey cat."  # the sofa was not supported on the cat's crop
    assert captions["sofa"] == "A red sofa."  # its own label, though uncertain, stays
