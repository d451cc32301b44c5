"""Results files travel between people: what a hostile (or careless) one can put in a record.

- A record's ``source`` may name any file (``/etc/passwd``, ``../../secret``): export and
  study create copy, link or embed only files that decode as images, count the others, and
  no message ever quotes a file's bytes (nor does the report's thumbnail problem).
- A 3D asset is exported as its saved views, never as its mesh file.
- Ids past SQLite's integers and JSON nested past Python's recursion limit are clean 4xx
  answers, not 500s.
- Control characters of a caption do not reach a caption file raw; bidi overrides do not
  reach the report, the study page or a crowd platform's CSV.

A text file outside the results' folder stands in for ``/etc/passwd``; the real one is used
too where the machine has it.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from factcap.cli import main
from factcap.curation.export import MARKER, ExportJob
from factcap.errors import ImageError
from factcap.examples import example_paths
from factcap.images import decode
from factcap.serve.app import serve_in_thread

SECRET = b"root:x:0:0:root:/root:/bin/bash\nadmin:$6$hunter2:19000:0:99999:7:::\n"
NEEDLES = (b"root:x:0:0", b"hunter2")
ETC_PASSWD = Path("/etc/passwd")
PHOTO = next(p for p in example_paths() if p.name == "chelsea.jpg")
RLO, LRI, PDI = "\u202e", "\u2066", "\u2069"
BIDI = ("\u202a", "\u202b", "\u202c", "\u202d", RLO, LRI, "\u2067", "\u2068", PDI)
BIDI += ("\u200e", "\u200f", "\u061c")


def _row(rid: str, source: str, caption: str = "A tabby cat.", **more) -> dict:
    return {
        "id": rid,
        "source": source,
        "status": "ok",
        "captions": {"detailed": caption},
        "proposals": [{"model": "m1", "text": f"A cat, {rid}."}],
        **more,
    }


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _files(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.is_file() or root.is_symlink():
            yield root
        elif root.is_dir():
            yield from (p for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink())


def _leaks(paths: list[Path], secrets: list[Path]) -> list[str]:
    """What of ``paths`` holds a secret's bytes, or links to a secret."""
    found = []
    for path in paths:
        if path.is_symlink() and any(path.resolve() == s.resolve() for s in secrets):
            found.append(f"{path} links to a secret")
        elif path.is_file() and any(n in path.read_bytes() for n in NEEDLES):
            found.append(f"{path} holds a secret's bytes")
    return found


@pytest.fixture
def hostile(tmp_path) -> tuple[Path, list[Path], int]:
    """(results, the secret files its records name, how many such records): one photo beside
    the results, the stand-in secret by absolute and by ``../`` path, and /etc/passwd when
    this machine has one."""
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "passwd"
    secret.write_bytes(SECRET)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(PHOTO, run / "chelsea.jpg")
    rows = [
        _row("good", "chelsea.jpg"),
        _row("abs", str(secret)),
        _row("rel", "../outside/passwd"),
        _row("deep", "../" * 12 + str(secret).lstrip("/")),
    ]
    secrets = [secret]
    if ETC_PASSWD.is_file():
        rows.append(_row("etc", str(ETC_PASSWD)))
        secrets.append(ETC_PASSWD)
    return _write(run / "out.jsonl", rows), secrets, len(rows) - 1


# --- decoding: no message quotes a file's bytes -----------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        SECRET,  # text: no format recognises it
        b"P1\n2 2\nhunter2hunter2\n",  # a PPM header, then text Pillow quotes when it fails
        b"P2\n2 2\n255\nhunter2 root:x:0:0\n",
    ],
)
def test_decode_errors_never_quote_the_files_bytes(tmp_path, data):
    path = tmp_path / "file.jpg"
    path.write_bytes(data)
    for source in (path, data):
        with pytest.raises(ImageError) as caught:
            decode(source)
        assert caught.value.kind in ("UnsupportedFormat", "CorruptImage")
        message = str(caught.value)
        assert "hunter2" not in message and "root:x" not in message, message
        assert "b'" not in message, message


# --- export -----------------------------------------------------------------------------------

CASES = [  # (--to, --images, -o name)
    ("folder", "copy", "lora"),
    ("folder", "link", "lora"),
    ("coco", "copy", "captions.json"),
    ("coco", "link", "captions.json"),
    ("llava", "copy", "train.json"),
    ("csv", "copy", "captions.csv"),
    ("gbc", "copy", "graphs.jsonl"),
    ("hf", None, "dataset"),
]


@pytest.mark.parametrize(("to", "images", "name"), CASES)
def test_export_copies_links_and_embeds_images_only(hostile, tmp_path, to, images, name):
    if to == "hf":
        pytest.importorskip("datasets")
    results, secrets, n_bad = hostile
    out = tmp_path / "exp" / name
    stats = ExportJob(results, to, out, images=images).run()
    written = list(_files(out, out.with_name(f"{out.stem}_images")))
    assert written and not _leaks(written, secrets)
    assert (stats.exported, stats.not_media, stats.no_image) == (1, n_bad, 0)
    assert stats.not_media_example == f"abs: {secrets[0]}: UnsupportedFormat"
    summary = stats.summary()
    assert f"{n_bad} whose file is not an image" in summary
    assert not any(n.decode() in summary for n in NEEDLES)
    if to == "hf":
        import datasets

        dataset = datasets.load_from_disk(str(out))
        assert dataset["id"] == ["good"]
        assert dataset[0]["image"].size == Image.open(PHOTO).size
    elif to == "folder":
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [MARKER, "chelsea.jpg", "chelsea.txt"]
        )


def test_export_cli_says_what_was_left_out_and_never_quotes_it(hostile, tmp_path, capsys):
    results, _, n_bad = hostile
    out = tmp_path / "lora"
    assert main(["export", str(results), "--to", "folder", "-o", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "1 of " in err and f"{n_bad} whose file is not an image" in err
    assert "warning" in err and "not an image" in err
    assert "root:x" not in err and "hunter2" not in err


def test_export_without_placing_images_reads_no_file(hostile, tmp_path):
    """--images none refers to files by name: nothing is copied, so nothing is checked (every
    record is exported; a path names a file, it does not carry it)."""
    results, secrets, n_bad = hostile
    out = tmp_path / "captions.csv"
    stats = ExportJob(results, "csv", out, images="none").run()
    assert (stats.exported, stats.not_media) == (1 + n_bad, 0)
    assert not _leaks([out], secrets)


def test_gbc_img_path_is_relative_to_the_output_folder(tmp_path):
    photos = tmp_path / "data" / "photos"
    photos.mkdir(parents=True)
    shutil.copy(PHOTO, photos / "cat.jpg")
    results = _write(tmp_path / "data" / "out.jsonl", [_row("g", "photos/cat.jpg")])
    out = tmp_path / "exports" / "graphs.jsonl"
    ExportJob(results, "gbc", out).run()
    [line] = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["img_path"] == os.path.join("..", "data", "photos", "cat.jpg")
    assert (out.parent / line["img_path"]).resolve() == (photos / "cat.jpg").resolve()


# --- export: 3D assets --------------------------------------------------------------------------


@pytest.fixture(params=["media", "fields"])
def asset_results(tmp_path, request) -> Path:
    """A photo, a 3D asset whose two views were saved (``--save-views``), and one whose views
    were not; the meshes are files next to the results. Records as factcap writes them now
    (``media``) and as 8d96429 wrote them (``kind``, ``views``, ``asset``)."""
    run = tmp_path / "run"
    (run / "views" / "a1").mkdir(parents=True)
    shutil.copy(PHOTO, run / "chelsea.jpg")
    (run / "chair.glb").write_bytes(b"glTF\x02\x00\x00\x00" + b"\x00" * 64)
    (run / "lamp.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    views = []
    for k, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        Image.new("RGB", (64, 48), colour).save(run / "views" / "a1" / f"view-{k}.png")
        views.append(
            {"index": k, "azimuth": 180.0 * k, "elevation": 20.0, "file": f"views/a1/view-{k}.png"}
        )
    facts = {"format": "glb", "faces": 12, "vertices": 8}

    def media(views: list[dict]) -> dict:
        if request.param == "fields":
            return {"kind": "asset", "views": views, "asset": facts}
        return {"media": {"kind": "asset", "views": views, "facts": facts}}

    rows = [
        _row("p1", "chelsea.jpg", image_size=list(Image.open(PHOTO).size)),
        _row("a1", "chair.glb", "A red chair.", image_size=[64, 48], **media(views)),
        _row("a2", "lamp.obj", "A lamp.", image_size=[64, 48],
             **media([{"index": 0, "azimuth": 0.0, "elevation": 20.0}])),
    ]  # fmt: skip
    return _write(run / "out.jsonl", rows)


def _no_mesh(paths: list[Path]) -> None:
    for path in paths:
        assert path.suffix not in (".glb", ".obj"), path
        assert not path.read_bytes().startswith((b"glTF", b"v 0 0 0")), path


@pytest.mark.parametrize(("to", "images", "name"), [c for c in CASES if c[1] != "link"])
def test_assets_are_exported_as_their_saved_views(asset_results, tmp_path, to, images, name):
    if to == "hf":
        pytest.importorskip("datasets")
    out = tmp_path / "exp" / name
    stats = ExportJob(asset_results, to, out, images=images).run()
    placed = list(_files(out.with_name(f"{out.stem}_images") if to != "folder" else out))
    _no_mesh([p for p in placed if p.name != MARKER and p.suffix != ".txt"])
    assert (stats.exported, stats.assets, stats.views, stats.no_views) == (2, 1, 2, 1)
    summary = stats.summary()
    assert "1 3D assets as 2 rendered views" in summary
    assert "1 3D assets without saved views" in summary and "--save-views" in summary
    view_names = ["chair-view-0.png", "chair-view-1.png"]
    if to == "hf":
        import datasets

        dataset = datasets.load_from_disk(str(out))
        assert dataset["id"] == ["p1", "a1-view-0", "a1-view-1"]
        pictures = [row["image"] for row in dataset]  # every row decodes: no mesh bytes
        assert [p.size for p in pictures[1:]] == [(64, 48), (64, 48)]
        assert pictures[1].convert("RGB").getpixel((0, 0)) == (200, 30, 30)
        assert dataset["source"][1:] == ["chair.glb", "chair.glb"]
    elif to == "coco":
        data = json.loads(out.read_text())
        assert [i["file_name"] for i in data["images"]] == ["chelsea.jpg", *view_names]
        assert [(i["width"], i["height"]) for i in data["images"][1:]] == [(64, 48)] * 2
        assert [a["caption"] for a in data["annotations"]][1:] == ["A red chair."] * 2
    elif to == "folder":
        for view in view_names:
            assert (out / view).is_file()
            assert (out / view).with_suffix(".txt").read_text() == "A red chair.\n"
    elif to == "llava":
        entries = json.loads(out.read_text())
        assert [e["id"] for e in entries] == ["p1", "a1-view-0", "a1-view-1"]
        assert [e["image"] for e in entries[1:]] == view_names
    elif to == "csv":
        with out.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["file_name"] for r in rows][1:] == [f"captions_images/{v}" for v in view_names]
        assert [r["source"] for r in rows][1:] == ["chair.glb"] * 2
    elif to == "gbc":
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        assert [x["img_path"] for x in lines] == ["chelsea.jpg", *view_names]


def test_assets_without_placed_images_refer_to_their_views(asset_results, tmp_path):
    out = tmp_path / "captions.json"
    stats = ExportJob(asset_results, "coco", out).run()
    assert (stats.exported, stats.views, stats.no_views) == (2, 2, 1)
    data = json.loads(out.read_text())
    assert [i["file_name"] for i in data["images"]][1:] == [
        "views/a1/view-0.png",
        "views/a1/view-1.png",
    ]
    assert [(i["width"], i["height"]) for i in data["images"][1:]] == [(64, 48)] * 2


# --- control and bidi characters --------------------------------------------------------------


def test_folder_caption_files_hold_one_clean_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(PHOTO, run / "cat.jpg")
    caption = f"x\n../../evil\x00\r\n{RLO}gnp.exe\x1b[31m red\x85end\u2028"
    results = _write(run / "out.jsonl", [_row("c", "cat.jpg", caption)])
    out = tmp_path / "lora"
    stats = ExportJob(results, "folder", out, prefix="ohwx,\t").run()
    assert stats.captions == 1
    assert (out / "cat.txt").read_text(
        encoding="utf-8"
    ) == "ohwx, x ../../evil gnp.exe[31m red end\n"
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "cat.jpg", "cat.txt"])
    assert not (tmp_path / "evil").exists()


def test_report_shows_no_bidi_controls_and_no_file_bytes(hostile, tmp_path):
    from factcap.report import build_report

    results, _, _ = hostile
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    rows[0]["captions"]["detailed"] = f"A cat named {RLO}live{PDI} and {LRI}x{PDI}."
    rows[0]["id"] = f"good{RLO}gpj.exe"
    _write(results, rows)
    page = build_report(results, out_path=tmp_path / "report.html").read_text(encoding="utf-8")
    assert "A cat named live and x." in page
    assert "goodgpj.exe" in page
    assert not [c for c in BIDI if c in page]
    assert "root:x" not in page and "hunter2" not in page
    assert "not an image, or a format Pillow cannot read" in page  # the problem is still said


# --- the study ----------------------------------------------------------------------------------


def _study(tmp_path: Path, extra_rows: list[dict]) -> tuple[Path, object]:
    from factcap.study.build import create_study

    run = tmp_path / "study-run"
    photos = run / "photos"
    photos.mkdir(parents=True)
    rows = []
    for i, name in enumerate(["astronaut.jpg", "coffee.jpg", "rocket.jpg"]):
        shutil.copy(next(p for p in example_paths() if p.name == name), photos / name)
        rows.append(_row(f"p{i}", f"photos/{name}", f"A photo {i}, {RLO}evil{PDI}."))
    results = _write(run / "out.jsonl", rows + extra_rows)
    summary = create_study(
        [results],
        ["final:detailed", "proposal:m1"],
        tmp_path / "study",
        n_raters=2,
        raters_per_item=2,
        gold_fraction=0.25,
        seed=1,
    )
    return tmp_path / "study", summary


def test_study_create_copies_images_only(hostile, tmp_path):
    _, secrets, n_bad = hostile
    bad_rows = [json.loads(x) for x in hostile[0].read_text().splitlines()][1:]
    for row in bad_rows:  # relative paths: from the study's results folder, as before
        if not Path(row["source"]).is_absolute():
            row["source"] = str(secrets[0])
    study, summary = _study(tmp_path, bad_rows)
    assert (summary.items, summary.not_media) == (3, n_bad)
    images = sorted((study / "images").iterdir())
    assert len(images) == 3 and not _leaks(images, secrets)
    for image in images:
        decode(image)
    info = json.loads((study / "study.json").read_text())
    assert not [c for c in BIDI if c in json.dumps(info, ensure_ascii=False)]
    assert info["items"][0]["captions"]["final:detailed"].endswith(", evil.")


def test_study_create_stores_an_image_under_its_own_format(tmp_path):
    """A PNG named .svg is stored (and so served) as a PNG; a TIFF, which browsers do not
    show, as a PNG too."""
    run = tmp_path / "study-run"
    run.mkdir()
    Image.new("RGB", (20, 10), (1, 2, 3)).save(run / "looks.svg", "PNG")
    Image.new("RGB", (20, 10), (4, 5, 6)).save(run / "scan.tif", "TIFF")
    study, summary = _study(
        tmp_path, [_row("svg", str(run / "looks.svg")), _row("tif", str(run / "scan.tif"))]
    )
    assert summary.items == 5
    endings = sorted(p.suffix for p in (study / "images").iterdir())
    assert endings == [".jpg", ".jpg", ".jpg", ".png", ".png"]
    for path in (study / "images").iterdir():
        assert decode(path).format == ("PNG" if path.suffix == ".png" else "JPEG")


@pytest.fixture
def served_study(tmp_path):
    from factcap.study.server import create_app
    from factcap.study.store import StudyStore

    study, _ = _study(tmp_path, [])
    store = StudyStore.open(study)
    with serve_in_thread(create_app(study, "key")) as base:
        yield base, store, study


def test_study_server_answers_4xx_to_ids_past_sqlite(served_study):
    base, store, _ = served_study
    token = store.raters()[0].token
    huge = 99999999999999999999999999
    r = httpx.post(f"{base}/api/r/{token}/vote", json={"assignment_id": huge, "choice": "left"})
    assert r.status_code == 422 and "assignment_id" in r.json()["detail"]
    for number in (huge, 2**63, -(2**63) - 1):
        r = httpx.get(f"{base}/api/r/{token}/image/{number}")
        assert r.status_code in (404, 422), (number, r.status_code)
        assert isinstance(r.json()["detail"], str)
    nested = b'{"assignment_id": ' + b"[" * 4000 + b"]" * 4000 + b', "choice": "left"}'
    r = httpx.post(
        f"{base}/api/r/{token}/vote",
        content=nested[:4096],
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= r.status_code < 500
    assert store.progress(token) == (0, len(store.assignments(token)))


def test_study_store_refuses_ids_past_sqlite(served_study):
    from factcap.study.store import VoteRefused

    _, store, _ = served_study
    token = store.raters()[0].token
    assert store.assignment(99999999999999999999999999) is None
    assert store.assignment(-(2**70)) is None
    with pytest.raises(VoteRefused) as refused:
        store.vote(token, 99999999999999999999999999, "left")
    assert refused.value.http_status == 403


def test_study_page_data_holds_no_bidi_controls(served_study):
    base, store, study = served_study
    with sqlite3.connect(study / "study.sqlite") as db:  # a study made before the cleaning
        db.execute("UPDATE assignments SET left_caption = ?", (f"A {RLO}live{PDI} cat.",))
        db.execute("UPDATE raters SET label = ?", (f"mturk:{RLO}A1B2",))  # from a crowd CSV
    token = store.raters()[0].token
    body = httpx.get(f"{base}/api/r/{token}/next").json()
    assert body["assignment"]["left"] == "A live cat."
    assert not [c for c in BIDI if c in json.dumps(body, ensure_ascii=False)]
    admin = httpx.get(f"{base}/api/admin/progress", headers={"Authorization": "Bearer key"})
    assert admin.status_code == 200 and admin.json()["raters"][0]["label"] == "mturk:A1B2"


def test_study_server_serves_only_image_files(served_study):
    """A study made before images were checked may hold a text file under an image name."""
    base, store, study = served_study
    token = store.raters()[0].token
    first = store.assignments(token)[0]
    assert httpx.get(f"{base}/api/r/{token}/image/{first.id}").status_code == 200
    (study / first.image).write_bytes(SECRET)
    r = httpx.get(f"{base}/api/r/{token}/image/{first.id}")
    assert r.status_code == 404 and b"root:x" not in r.content


def test_mturk_csv_holds_no_bidi_controls(served_study, tmp_path):
    from factcap.study import crowd

    _, store, _ = served_study
    out = tmp_path / "hits.csv"
    crowd.export_mturk(store, out, "https://example.org/study")
    text = out.read_text(encoding="utf-8")
    assert "evil" in text and not [c for c in BIDI if c in text]


# --- factcap serve: JSON nested past the recursion limit --------------------------------------


@pytest.fixture
def serve_client():
    from fastapi.testclient import TestClient

    from factcap.serve.app import create_app
    from test_serve import KEY, scripted_pipeline

    pipe = scripted_pipeline()
    app = create_app(pipe.config, KEY, pipeline=pipe, max_upload_mb=4, resources=object())
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        yield client


@pytest.mark.parametrize("path", ["/v1/captions", "/v1/scores"])
def test_serve_answers_400_to_json_nested_past_the_recursion_limit(serve_client, path):
    body = b"[" * 200_000 + b"]" * 200_000
    r = serve_client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nested too deeply" in r.json()["detail"]
    nested = b'{"image_base64": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    r = serve_client.post(path, content=nested, headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_serve_answers_422_to_a_form_field_nested_past_the_recursion_limit(serve_client):
    from test_serve import png_bytes

    r = serve_client.post(
        "/v1/scores",
        files={"image": ("a.png", png_bytes())},
        data={"captions": "[" * 200_000 + "]" * 200_000},
    )
    assert r.status_code == 422 and "nested too deeply" in r.json()["detail"]
