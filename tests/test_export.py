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
    try:
        from pycocotools.coco import COCO
    except ImportError:  # the schema, as pycocotools would index it
        ids = {img["id"] for img in data["images"]}
        assert all(a["image_id"] in ids and isinstance(a["caption"], str)
                   for a in data["annotations"])  # fmt: skip
    else:
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
