"""``factcap export``: every format read back by the library that reads it (pycocotools and
factcap evaluate for COCO, datasets and factcap caption for the HF dataset, csv, json), the
image modes, the choice of records and styles, and the output checks."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from factcap.cli import main
from factcap.curation.export import EXPORTERS, MARKER, Exporter, ExportJob
from factcap.engine.records import read_records
from factcap.errors import UsageError
from factcap.examples import example_paths

PHOTOS = {p.name: p for p in example_paths()}


def _rec(rid, source, captions, status="ok", size=True):
    path = Path(source)
    return {
        "id": rid,
        "source": source,
        "status": status,
        "proposals": [],
        "claims": [],
        "captions": captions,
        "removed": [],
        "notes": [],
        "error": None if status == "ok" else {"type": "DecodeError", "message": "bad"},
        "timings_ms": {},
        "models": {},
        "image_size": list(Image.open(PHOTOS[path.name]).size) if size and status == "ok" else None,
    }


@pytest.fixture
def results(tmp_path):
    """Four captioned photos (two share a file name, one lacks the short style and its size),
    and one error record; sources relative to the results' folder."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "other").mkdir()
    for name in ("astronaut.jpg", "camera.jpg", "chelsea.jpg"):
        shutil.copy(PHOTOS[name], tmp_path / "photos" / name)
    shutil.copy(PHOTOS["astronaut.jpg"], tmp_path / "other" / "astronaut.jpg")
    records = [
        _rec("r1", "photos/astronaut.jpg",
             {"detailed": "An astronaut in a white suit holds a flag.", "short": "An astronaut."}),
        _rec("r2", "photos/camera.jpg",
             {"detailed": "A man with a camera on a tripod in a field.", "short": "A cameraman."}),
        _rec("r3", "photos/chelsea.jpg", {"detailed": "A tabby cat looks to the left side."},
             size=False),
        _rec("r4", "other/astronaut.jpg",
             {"detailed": "The same astronaut photo in another folder here.", "short": "Again."}),
        _rec("e1", "photos/broken.jpg", {}, status="error"),
    ]  # fmt: skip
    out = tmp_path / "out.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    return out


def _export(results: Path, *args: str) -> int:
    return main(["export", str(results), "--quiet", *args])


# --- COCO ---------------------------------------------------------------------------------------


def test_coco_is_read_by_pycocotools_with_one_annotation_per_style(results, tmp_path):
    out = tmp_path / "exp" / "captions.json"
    assert _export(results, "--to", "coco", "-o", str(out), "--images", "copy") == 0
    data = json.loads(out.read_text())
    assert set(data) == {"info", "licenses", "images", "annotations"}
    names = [img["file_name"] for img in data["images"]]
    assert names == ["astronaut.jpg", "camera.jpg", "chelsea.jpg", "astronaut-r4.jpg"]
    assert [img["factcap_id"] for img in data["images"]] == ["r1", "r2", "r3", "r4"]
    sizes = {img["file_name"]: (img["width"], img["height"]) for img in data["images"]}
    for name in names:  # from the record, else (chelsea) from the file's header
        assert sizes[name] == Image.open(PHOTOS[name.replace("-r4", "")]).size
    assert len(data["annotations"]) == 7  # 2 + 2 + 1 + 2; the error record has none
    assert len({a["id"] for a in data["annotations"]}) == 7
    images_dir = out.parent / "captions_images"
    assert sorted(p.name for p in images_dir.iterdir()) == sorted([*names, MARKER])
    from pycocotools.coco import COCO  # a dev dependency (through pycocoevalcap)

    coco = COCO(str(out))
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4]
    assert [a["style"] for a in coco.imgToAnns[1]] == ["detailed", "short"]
    assert coco.loadImgs(3)[0]["file_name"] == "chelsea.jpg"


def test_coco_references_are_read_by_factcap_evaluate(results, tmp_path, capsys):
    """factcap evaluate --references matches COCO images by their factcap_id (else by file
    name): exported from the same results, every caption is its own reference, also for the
    two photos that share a file name."""
    ok = tmp_path / "ok.jsonl"
    ok.write_text("".join(results.read_text().splitlines(keepends=True)[:4]))
    refs = tmp_path / "refs.json"
    assert _export(ok, "--to", "coco", "-o", str(refs), "--style", "detailed") == 0
    scores = tmp_path / "scores.jsonl"
    args = ["evaluate", str(ok), "-o", str(scores), "--references", str(refs),
            "--metrics", "bleu", "--quiet"]  # fmt: skip
    assert main(args) == 0
    rows = [r for r in read_records(scores) if r["caption_source"] == "final:detailed"]
    assert len(rows) == 4 and all(r["metrics"]["bleu_1"] == pytest.approx(1.0) for r in rows)
    from factcap.evaluate import read_references

    by_id = read_references(refs).captions  # one reference each: the two astronauts not merged
    assert {k: len(v) for k, v in by_id.items()} == {"r1": 1, "r2": 1, "r3": 1, "r4": 1}


# --- LLaVA --------------------------------------------------------------------------------------


def test_llava_conversations(results, tmp_path):
    out = tmp_path / "train.json"
    assert _export(results, "--to", "llava", "-o", str(out), "--style", "detailed") == 0
    entries = json.loads(out.read_text())
    assert [e["id"] for e in entries] == ["r1", "r2", "r3", "r4"]
    for entry in entries:
        assert set(entry) == {"id", "image", "conversations"}
        human, gpt = entry["conversations"]
        assert human == {"from": "human", "value": "<image>\nDescribe this image in detail."}
        assert gpt["from"] == "gpt" and gpt["value"].endswith(".")
        assert Path(entry["image"]).is_absolute() and Path(entry["image"]).is_file()
    assert not (tmp_path / "train_images").exists()  # --images none: the files where they are

    out2 = tmp_path / "train2.json"
    args = ["--to", "llava", "-o", str(out2), "--images", "link", "--prompt", "<image> What?"]
    assert _export(results, *args) == 0
    entries = json.loads(out2.read_text())
    assert len(entries) == 7 and entries[0]["id"] == "r1-detailed"
    assert entries[1]["id"] == "r1-short"
    assert entries[0]["conversations"][0]["value"] == "<image> What?"
    folder = tmp_path / "train2_images"
    for entry in entries:
        linked = folder / entry["image"]
        assert linked.is_symlink() and linked.resolve().is_file()


# --- Hugging Face datasets ----------------------------------------------------------------------


def test_hf_dataset_loads_without_factcap(results, tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "ds"
    assert _export(results, "--to", "hf", "-o", str(out)) == 0
    ds = datasets.load_from_disk(str(out))
    assert ds.column_names == ["image", "id", "source", "status", "detailed", "short"]
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds["id"] == ["r1", "r2", "r3", "r4"]
    assert ds[2]["short"] is None and ds[2]["detailed"].startswith("A tabby cat")
    image = ds[1]["image"]
    assert isinstance(image, Image.Image) and image.size == Image.open(PHOTOS["camera.jpg"]).size


@pytest.mark.slow
def test_hf_dataset_is_captioned_again_by_factcap(results, tmp_path):
    pytest.importorskip("datasets")
    out = tmp_path / "ds"
    assert _export(results, "--to", "hf", "-o", str(out), "--style", "short") == 0
    again = tmp_path / "again.jsonl"
    assert main(["caption", str(out), "-o", str(again), "--quiet"]) == 0
    records = list(read_records(again))
    assert [r["id"] for r in records] == ["r1", "r2", "r3", "r4"]  # the id column is kept
    assert all(r["status"] == "ok" and r["captions"] for r in records)
    assert records[0]["extra"]["short"] == "An astronaut."


# --- folder and CSV -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["copy", "link"])
def test_folder_has_a_caption_beside_every_image(results, tmp_path, mode):
    out = tmp_path / "lora"
    args = ["--to", "folder", "-o", str(out), "--prefix", "ohwx, ", "--images", mode]
    assert _export(results, *args) == 0
    images = sorted(p for p in out.iterdir() if p.suffix == ".jpg")
    texts = sorted(p for p in out.iterdir() if p.suffix == ".txt")
    assert [p.stem for p in images] == [p.stem for p in texts]
    assert [p.name for p in images] == [
        "astronaut-r4.jpg", "astronaut.jpg", "camera.jpg", "chelsea.jpg"
    ]  # fmt: skip
    assert all(p.read_text().startswith("ohwx, ") for p in texts)
    assert (out / "camera.txt").read_text() == "ohwx, A man with a camera on a tripod in a field.\n"
    assert all(p.is_symlink() == (mode == "link") for p in images)
    assert Image.open(out / "chelsea.jpg").size == Image.open(PHOTOS["chelsea.jpg"]).size


def test_folder_takes_one_style_and_leaves_out_images_without_it(results, tmp_path, capsys):
    out = tmp_path / "lora"
    assert _export(results, "--to", "folder", "-o", str(out), "--style", "short") == 0
    assert sorted(p.name for p in out.glob("*.txt")) == [
        "astronaut-r4.txt", "astronaut.txt", "camera.txt"
    ]  # fmt: skip
    assert "1 without a chosen caption" in capsys.readouterr().err
    assert _export(results, "--to", "folder", "-o", str(out), "--style", "short,detailed") == 2
    assert "one --style" in capsys.readouterr().err
    assert _export(results, "--to", "folder", "-o", str(tmp_path / "x"), "--images", "none") == 2


def test_csv_rows_per_image_with_every_status(results, tmp_path):
    out = tmp_path / "captions.csv"
    args = ["--to", "csv", "-o", str(out), "--images", "copy", "--status", "ok,error"]
    assert _export(results, *args) == 1  # the error record's image is missing
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "file_name", "source", "status", "detailed", "short"]
    assert [r["id"] for r in rows] == ["r1", "r2", "r3", "r4"]
    assert all((out.parent / r["file_name"]).is_file() for r in rows)
    assert rows[2]["short"] == "" and rows[0]["short"] == "An astronaut."

    plain = tmp_path / "plain.csv"
    assert _export(results, "--to", "csv", "-o", str(plain), "--status", "ok,error") == 0
    with plain.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "ok", "error"]
    assert rows[4]["detailed"] == "" and rows[4]["file_name"] == "photos/broken.jpg"
    assert Path(rows[0]["file_name"]).is_absolute()  # --images none: the found file


# --- choices and checks -------------------------------------------------------------------------


def test_missing_images_are_left_out_and_counted(results, tmp_path, capsys):
    (results.parent / "photos" / "camera.jpg").unlink()
    out = tmp_path / "lora"
    assert _export(results, "--to", "folder", "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert "3 of 5 records" in err and "1 records were left out" in err
    assert not (out / "camera.txt").exists()


@pytest.mark.parametrize(
    ("to", "name"),
    [("coco", "c.json"), ("llava", "l.json"), ("csv", "c.csv"), ("hf", "ds"), ("folder", "f")],
)
def test_existing_output_is_refused_without_overwrite(results, tmp_path, capsys, to, name):
    out = tmp_path / name
    assert _export(results, "--to", to, "-o", str(out)) == 0
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else out.read_bytes()
    assert _export(results, "--to", to, "-o", str(out), "--style", "short") == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err
    after = sorted(p.name for p in out.iterdir()) if out.is_dir() else out.read_bytes()
    assert before == after
    assert _export(results, "--to", to, "-o", str(out), "--style", "short", "--overwrite") == 0
    assert not [p for p in out.parent.iterdir() if ".factcap-" in p.name]  # no temporary left


def test_output_checks(results, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert _export(results, "--to", "folder", "-o", str(foreign), "--overwrite") == 2
    assert "not a factcap export" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert _export(results, "--to", "hf", "-o", str(results.parent), "--overwrite") == 2
    assert "inside" in capsys.readouterr().err
    assert _export(results, "--to", "coco", "-o", str(tmp_path / "c.txt")) == 2
    assert "writes a .json file" in capsys.readouterr().err
    assert _export(results, "--to", "hf", "-o", str(tmp_path / "d"), "--images", "copy") == 2
    assert "embeds the images" in capsys.readouterr().err
    assert _export(results, "--to", "csv", "-o", str(tmp_path / "c.csv"), "--status", "fine") == 2
    assert "unknown status" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert _export(results, "--to", "csv", "-o", str(blocker / "c.csv")) == 3
    assert "cannot write" in capsys.readouterr().err


def test_a_new_format_is_one_function_and_one_line(results, tmp_path, monkeypatch):
    def write_ids(items, context):
        context.path.write_text("".join(f"{item.id}\t{item.name}\n" for item in items))

    monkeypatch.setitem(EXPORTERS, "ids", Exporter(write_ids, "file", ".tsv", ("none",), "ids"))
    out = tmp_path / "ids.tsv"
    assert _export(results, "--to", "ids", "-o", str(out)) == 0
    assert out.read_text().splitlines()[0] == "r1\tastronaut.jpg"
    with pytest.raises(UsageError, match="takes --images none"):
        ExportJob(results, "ids", tmp_path / "x.tsv", images="copy")


# --- GBC (graph-based captioning) ---------------------------------------------------------------

GBC_KEYS = {"img_url", "img_path", "original_caption", "short_caption", "detail_caption",
            "vertices"}  # fmt: skip
GBC_VERTEX_KEYS = {"vertex_id", "bbox", "label", "descs", "in_edges", "out_edges"}
GBC_BBOX_KEYS = {"left", "top", "right", "bottom", "confidence"}
GBC_EDGE_KEYS = {"source", "text", "target"}
GBC_VERTEX_LABELS = {"image", "entity", "composition", "relation"}
GBC_DESC_LABELS = {"short", "relation", "composition", "detail", "original", "hardcode",
                   "bagofwords"}  # fmt: skip


def _check_gbc_line(line: dict) -> dict[str, dict]:
    """One exported line against GBC's GbcGraph / GbcVertex / Bbox / Description / GbcEdge
    fields, exactly; returns the vertices by id."""
    assert set(line) == GBC_KEYS
    assert line["img_url"] is None and isinstance(line["img_path"], str)
    for key in ("original_caption", "short_caption", "detail_caption"):
        assert line[key] is None or isinstance(line[key], str)
    vertices = {}
    for vertex in line["vertices"]:
        assert set(vertex) == GBC_VERTEX_KEYS
        assert isinstance(vertex["vertex_id"], str) and vertex["vertex_id"] not in vertices
        vertices[vertex["vertex_id"]] = vertex
        assert vertex["label"] in GBC_VERTEX_LABELS
        bbox = vertex["bbox"]
        assert set(bbox) == GBC_BBOX_KEYS
        sides = [bbox[k] for k in ("left", "top", "right", "bottom")]
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in sides)
        assert bbox["left"] <= bbox["right"] and bbox["top"] <= bbox["bottom"]
        assert bbox["confidence"] is None or 0.0 <= bbox["confidence"] <= 1.0
        for desc in vertex["descs"]:
            assert set(desc) == {"text", "label"} and desc["label"] in GBC_DESC_LABELS
            assert isinstance(desc["text"], str) and desc["text"]
        for edge in vertex["in_edges"] + vertex["out_edges"]:
            assert set(edge) == GBC_EDGE_KEYS and all(isinstance(edge[k], str) for k in edge)
    assert [v["label"] for v in line["vertices"]].count("image") == 1
    for vertex in vertices.values():
        for edge in vertex["out_edges"]:
            assert edge["source"] == vertex["vertex_id"] and edge["target"] in vertices
            assert edge in vertices[edge["target"]]["in_edges"]
        for edge in vertex["in_edges"]:
            assert edge["target"] == vertex["vertex_id"] and edge["source"] in vertices
            assert edge in vertices[edge["source"]]["out_edges"]
    return vertices


@pytest.fixture
def region_results(tmp_path):
    """Two photos captioned with --regions (two dogs and a ball, relations one supported and
    one refuted; a box running off the image), one without a graph, one error."""
    from region_records import region_record

    shutil.copy(PHOTOS["chelsea.jpg"], tmp_path / "chelsea.jpg")
    shutil.copy(PHOTOS["coffee.jpg"], tmp_path / "coffee.jpg")
    size = Image.open(PHOTOS["chelsea.jpg"]).size
    cat = region_record(
        "g1",
        "chelsea.jpg",
        size,
        {"detailed": "Two dogs play with a ball.", "short": "Dogs."},
        [
            ("dog", (10, 10, 200, 250), 0.91, "A brown dog jumping."),
            ("dog", (220, 20, 420, 290), 0.85, "A small dog."),
            ("ball", (300, 200, size[0] + 40, size[1] + 5), 0.7, "A red ball."),
        ],
        [(0, 2, "left of", "supported"), (1, 2, "above", "refuted")],
    )
    plain = _rec("g2", "coffee.jpg", {"detailed": "A cup of coffee."})
    out = tmp_path / "regions.jsonl"
    lines = [cat, plain, _rec("e1", "broken.jpg", {}, status="error")]
    out.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return out


def test_gbc_lines_follow_the_gbc_layout(region_results, tmp_path, capsys):
    out = tmp_path / "graphs.jsonl"
    assert main(["export", str(region_results), "--to", "gbc", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "2 of 3 records" in err and "1 without a graph" in err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2
    source = json.loads(region_results.read_text().splitlines()[0])
    vertices = _check_gbc_line(lines[0])
    # img_path relative to the output's folder (GBC reads paths under an image root)
    assert lines[0]["img_path"] == "chelsea.jpg"
    assert lines[0]["detail_caption"] == "Two dogs play with a ball."
    assert lines[0]["short_caption"] == "Dogs."
    assert list(vertices) == ["", "composition:dog", "r0", "r1", "r2", "relation:0"]
    labels = {k: v["label"] for k, v in vertices.items()}
    assert labels == {"": "image", "composition:dog": "composition", "r0": "entity",
                      "r1": "entity", "r2": "entity", "relation:0": "relation"}  # fmt: skip
    assert vertices[""]["descs"] == [
        {"text": "Two dogs play with a ball.", "label": "detail"},
        {"text": "Dogs.", "label": "short"},
    ]
    assert vertices["r0"]["descs"] == [{"text": "A brown dog jumping.", "label": "short"}]
    assert vertices["relation:0"]["descs"][0]["label"] == "relation"
    assert vertices["composition:dog"]["descs"][0]["label"] == "composition"
    # boxes: the record's normalised boxes, clipped to the image; entities carry the score
    r0 = source["regions"]["items"][0]["box_normalised"]
    assert [vertices["r0"]["bbox"][k] for k in ("left", "top", "right", "bottom")] == r0
    assert vertices["r0"]["bbox"]["confidence"] == 0.91
    assert vertices["r2"]["bbox"]["right"] == 1.0 and vertices["r2"]["bbox"]["bottom"] == 1.0
    assert vertices[""]["bbox"] == {"left": 0.0, "top": 0.0, "right": 1.0, "bottom": 1.0,
                                    "confidence": None}  # fmt: skip
    # edges: the graph's, image -> composition -> entities, relation -> its two entities
    edges = {(e["source"], e["target"], e["text"]) for v in vertices.values()
             for e in v["out_edges"]}  # fmt: skip
    assert edges == {
        ("", "composition:dog", "dogs"), ("composition:dog", "r0", "dog"),
        ("composition:dog", "r1", "dog"), ("", "r2", "ball"), ("", "relation:0", "left of"),
        ("relation:0", "r0", "dog"), ("relation:0", "r2", "ball"),
    }  # fmt: skip
    assert len(edges) == len(source["regions"]["graph"]["edges"])
    # a record without a graph: its image vertex alone
    plain = _check_gbc_line(lines[1])
    assert list(plain) == [""] and plain[""]["descs"] == [
        {"text": "A cup of coffee.", "label": "detail"}
    ]
    assert lines[1]["short_caption"] is None


def test_gbc_with_copied_images_and_chosen_styles(region_results, tmp_path):
    out = tmp_path / "gbc" / "graphs.jsonl"
    args = ["--to", "gbc", "-o", str(out), "--images", "copy", "--style", "short", "--quiet"]
    assert _export(region_results, *args) == 0
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert first["img_path"] == "chelsea.jpg" and second["img_path"] == "coffee.jpg"
    assert (out.parent / "graphs_images" / "chelsea.jpg").is_file()
    vertices = _check_gbc_line(first)
    assert vertices[""]["descs"] == [{"text": "Dogs.", "label": "short"}]
    assert first["detail_caption"] is None and first["short_caption"] == "Dogs."
    assert len(vertices) == 6  # the regions do not depend on the chosen styles
    assert _check_gbc_line(second)[""]["descs"] == []
