"""Inputs: files, directories, globs, manifests, PIL images; stable and unique ids."""

from __future__ import annotations

import json

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


@pytest.mark.parametrize("line", ['{"nopath": 1}', "[1, 2]", "not json"])
def test_bad_jsonl_manifest_lines_are_clear_errors(tree, line):
    manifest = tree / "bad.jsonl"
    manifest.write_text(line + "\n")
    with pytest.raises(ConfigError, match="bad.jsonl:1"):
        list(expand([manifest]))


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
