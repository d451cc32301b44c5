"""factcap's WebDataset shards through the webdataset library's own reader, the one training
pipelines use: every sample and field factcap writes comes back the same, and on well-formed
shards factcap's reader groups members into the samples webdataset does.

factcap keeps its tarfile writer and reader (engine/sinks.py, engine/sources.py): the writer
commits shards exactly once (temp file, rename), and the reader turns a damaged entry into an
error item where webdataset raises or, with a skipping handler, drops the sample; importing
webdataset also imports torch. The library is the reference here, in the dev extra.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from factcap.engine.sinks import caption_text, open_sink, record_dict, sample_key
from factcap.engine.sources import BrokenItem, open_source
from factcap.examples import example_paths
from factcap.inputs import InputItem, expand
from factcap.schema import Record

wds = pytest.importorskip("webdataset")

PHOTOS = example_paths()


def read_with_webdataset(shards: list[Path]) -> list[dict]:
    """Every sample webdataset reads, in order: its key and its fields' bytes."""
    samples = wds.WebDataset([str(p) for p in shards], shardshuffle=False, empty_check=False)
    return [
        {"__key__": s["__key__"], **{k: v for k, v in s.items() if not k.startswith("__")}}
        for s in samples
    ]


def test_webdataset_reads_back_every_sample_and_field_of_our_sink(tmp_path):
    items = [next(expand(p)) for p in PHOTOS]
    pil = Image.open(PHOTOS[4]).convert("L")
    items[4] = InputItem(source="memory", id="in-memory", image=pil)  # re-encoded as JPEG
    views = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    items.append(
        InputItem(source=str(PHOTOS[0]), id="asset.v2/x", views=views)
    )  # views; a hashed key
    items.append(InputItem(source="gone.jpg", id="gone"))
    records = [
        Record(id=i.id, source=i.source, captions={"detailed": f"caption {n} ünïcode"})
        for n, i in enumerate(items)
    ]
    records[-1].fail("FileNotFound", "no such file: gone.jpg")
    out = tmp_path / "wds"
    with open_sink(out, format="webdataset", shard_size=3) as sink:
        for record, item in zip(records, items, strict=True):
            sink.write(record, item)
    shards = sorted(out.glob("*.tar"))
    assert len(shards) == 3

    samples = read_with_webdataset(shards)
    assert [s["__key__"] for s in samples] == [sample_key(r.id) for r in records]
    for sample, record, item in zip(samples, records, items, strict=True):
        assert json.loads(sample["json"]) == record_dict(record)
        caption = caption_text(record)
        assert sample.get("txt") == (caption.encode("utf-8") if caption else None)
        images = {k for k in sample if k in ("jpg", "png", "tiff", "webp", "gif", "bmp")}
        if not record.ok:
            assert set(sample) == {"__key__", "json"}
            continue
        [ext] = images
        if item.image is None:
            assert sample[ext] == Path(item.source).read_bytes()  # the original bytes
        else:
            assert ext == "jpg" and Image.open(io.BytesIO(sample[ext])).size == pil.size
    with_views = samples[5]
    assert {"view0.png", "view1.png"} <= set(with_views)
    for index, view in enumerate(views):
        back = Image.open(io.BytesIO(with_views[f"view{index}.png"]))
        assert back.tobytes() == view.tobytes()

    # factcap's reader returns the same samples, key by key
    ours = list(open_source(out))
    assert [i.source.rpartition("#")[2] for i in ours] == [s["__key__"] for s in samples]
    for item, sample in zip(ours, samples, strict=True):
        assert item.extra["json"] == json.loads(sample["json"])
        if "txt" in sample:
            assert item.extra["txt"] == sample["txt"].decode("utf-8")
    assert isinstance(ours[-1], BrokenItem) and ours[-1].problem_type == "MissingImage"


def test_our_reader_groups_members_as_webdataset_does(tmp_path):
    # folder keys, a key with several dots (the extension starts at the first dot of the base
    # name), upper-case extensions, a key that comes back later in the shard
    photo = PHOTOS[1].read_bytes()
    members = [
        ("a/b/one.jpg", photo),
        ("a/b/one.json", b'{"n": 1}'),
        ("a/c/one.jpg", photo),
        ("a/c/one.txt", b"second folder"),
        ("two.seg.png", b"a mask"),
        ("two.JPG", photo),
        ("two.cls", b"7\n"),
        ("three.jpg", photo),
        ("two.jpg", photo),
    ]
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    samples = read_with_webdataset([shard])
    ours = list(open_source(shard))
    assert [i.source.rpartition("#")[2] for i in ours] == [s["__key__"] for s in samples]
    assert [s["__key__"] for s in samples] == ["a/b/one", "a/c/one", "two", "three", "two"]
    for item, sample in zip(ours, samples, strict=True):
        fields = {k.lower() for k in sample if not k.startswith("__")}
        assert set(item.extra) <= fields
        assert item.data in [sample[k] for k in sample if not k.startswith("__")]
    assert "seg.png" in samples[2] and ours[2].extra["cls"] == int(samples[2]["cls"])
    assert len({i.id for i in ours}) == 5  # the key that came back is a second sample
