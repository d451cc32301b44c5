"""``factcap bench shapes regions``: the figures computed exactly on hand-made scenes and
records, and the shipped models end to end on a few held-out scenes."""

from __future__ import annotations

import json

import pytest

from factcap.bench.shapes.regions import region_figures
from factcap.bench.shapes.world import Obj, Scene
from factcap.cli import main
from factcap.schema import Record

SCENE = Scene(
    "s",
    (
        Obj("triangle", "green", "large", (0, 0, 28, 28)),
        Obj("circle", "red", "small", (40, 40, 56, 56)),
        Obj("square", "blue", "large", (60, 0, 88, 28)),
    ),
    128,
)


def region(label, box, caption):
    return {"label": label, "box": list(box), "caption": caption}


def test_figures_match_regions_to_objects_by_iou_and_check_labels_and_captions():
    record = Record("s", "s.png")
    record.regions.items = [
        region("green triangle", (1, 1, 28, 28), "A large green triangle."),  # right
        region("green triangle", (0, 2, 27, 28), "There are two green triangles."),  # worse IoU
        region("red square", (40, 41, 56, 56), "A red circle and a red square."),  # wrong label
        region("blue square", (70, 60, 90, 90), "A blue square."),  # matches nothing
    ]
    figures = region_figures([SCENE], [record])
    assert figures["detected_objects"] == 2  # the triangle and the circle; not the square
    assert figures["label_accuracy"] == 0.5  # the circle's region says "red square"
    assert figures["spurious_regions"] == 1 and figures["regions"] == 4
    assert figures["one_shape_captions"] == 0.75  # "a red circle and a red square" names two
    assert figures["caption_names_label"] == 0.75


@pytest.mark.slow
def test_shipped_models_with_regions_on_held_out_scenes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bench", "shapes", "regions", "--n", "6", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["scenes"] == 6 and result["errors"] == 0
    assert result["detected_objects"] > 0 and 0.0 <= result["label_accuracy"] <= 1.0
    assert main(["bench", "shapes", "regions", "--n", "6", "--out", str(out)]) == 2  # no overwrite
