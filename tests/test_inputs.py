"""Inputs: files, directories, globs, manifests, PIL images; stable and unique ids."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from factcap.errors import ConfigError
from factcap.inputs import expand


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.jpg", "a.png", "sub/c.webp", "notes.md", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_directories_are_walked_recursively_in_sorted_order(tree):
    sources = [i.source for i in expand([tree])]
    assert sources == [str(tree / "a.png"), str(tree / "b.jpg"), str(tree / "sub" / "c.webp")]


def test_globs_and_explicit_files(tree):
    assert [i.source for i in expand([str(tree / "*.jpg")])] == [str(tree / "b.jpg")]
    assert [i.source for i in expand(str(tree / "notes.md"))] == [str(tree / "notes.md")]


def test_an_input_named_twice_is_one_item(tree):
    items = list(expand([tree, tree / "a.png", str(tree / "*.png"), f"{tree}/./a.png"]))
    assert [i.source for i in items].count(str(tree / "a.png")) == 1
    assert len({i.id for i in items}) == len(items) == 3


def test_ids_are_stable_for_the_same_path(tree):
    first = {i.source: i.id for i in expand([tree])}
    again = {i.source: i.id for i in expand([tree])}
    assert first == again and len(set(first.values())) == 3


def test_txt_manifest_resolves_paths_relative_to_itself(tree):
    manifest = tree / "list.txt"
    manifest.write_text("# comment\nb.jpg\n\nsub/c.webp\n")
    assert [i.source for i in expand([manifest])] == [str(tree / "b.jpg"), str(tree / "sub/c.webp")]


def test_jsonl_manifest_carries_id_and_extra_fields(tree):
    manifest = tree / "list.jsonl"
    manifest.write_text(
        json.dumps({"image": "a.png", "id": "img-1", "alt_text": "a cat"})
        + "\n"
        + json.dumps({"path": "missing.jpg"})
        + "\n"
    )
    first, second = expand([manifest])
    assert (first.id, first.extra, first.source) == (
        "img-1",
        {"alt_text": "a cat"},
        str(tree / "a.png"),
    )
    assert second.source == str(tree / "missing.jpg")  # decoding will say FileNotFound


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"nopath": 1}', "needs one of the keys"),
        ("[1, 2]", "not a JSON object"),
        ("{broken", "not valid JSON"),
    ],
)
def test_bad_jsonl_manifest_lines_become_error_items_and_the_rest_goes_on(tree, line, why):
    manifest = tree / "bad.jsonl"
    good = json.dumps({"file_name": "a.png"})
    manifest.write_text(f"{good}\n{line}\n{good.replace('a.png', 'b.jpg')}\n")
    first, bad, last = expand([manifest])
    assert (first.source, last.source) == (str(tree / "a.png"), str(tree / "b.jpg"))
    assert bad.source == f"{manifest}:2" and bad.problem.startswith(f"{manifest}:2: {why}")
    again = list(expand([manifest]))[1]
    assert again.id == bad.id  # a resume skips it like any other record


def test_ids_do_not_depend_on_how_a_path_is_spelled(tree, monkeypatch):
    monkeypatch.chdir(tree)
    (tree / "link.png").symlink_to(tree / "a.png")
    spellings = ["a.png", "./a.png", str(tree / "a.png"), "sub/../a.png", "link.png"]
    ids = {next(expand([name])).id for name in spellings}
    assert len(ids) == 1
    assert next(expand(["b.jpg"])).id not in ids


def test_special_files_are_never_opened(tree):
    fifo = tree / "p.jpg"
    os.mkfifo(fifo)
    items = {i.source: i for i in expand([tree])}
    assert items[str(fifo)].problem_type == "NotAFile" and "FIFO" in items[str(fifo)].problem
    assert items[str(tree / "a.png")].problem is None
    [device] = expand(["/dev/zero"])
    assert device.problem_type == "NotAFile" and "character device" in device.problem


def test_names_that_match_nothing_stop_the_job(tree):
    with pytest.raises(ConfigError, match="no such file"):
        list(expand([tree / "typo.jpg"]))
    with pytest.raises(ConfigError, match="no file matches"):
        list(expand([str(tree / "*.tiff")]))


def test_pil_images_are_identified_by_their_pixels():
    red, blue = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    items = list(expand([red, blue, Image.new("RGB", (4, 4), "red")]))
    assert len(items) == 2 and items[0].image is red
    assert next(expand(red)).id == items[0].id
    assert next(expand(Image.new("L", (4, 4)))).id != next(expand(Image.new("RGB", (4, 4)))).id
