"""Engine sources and sinks: WebDataset shards, Parquet, saved datasets, CSV; JSONL, sharded
Parquet and WebDataset output. Built from the bundled photos in temporary folders."""

from __future__ import annotations

import doctest
import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from factcap.engine import sinks as sinks_module
from factcap.engine import sources as sources_module
from factcap.engine.records import read_records
from factcap.engine.sinks import (
    JsonlSink,
    ParquetSink,
    WebDatasetSink,
    open_sink,
)
from factcap.engine.sources import BrokenItem, expand_braces, open_source
from factcap.errors import ConfigError, ImageError
from factcap.examples import example_paths
from factcap.images import decode
from factcap.inputs import InputItem, expand
from factcap.schema import Claim, Proposal, Record

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

PHOTOS = example_paths()
NAMES = [p.stem for p in PHOTOS]  # astronaut, camera, chelsea, coffee, rocket


@pytest.fixture(scope="module")
def photo_bytes() -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in PHOTOS}


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_members(name: str, data: bytes, index: int) -> list[tuple[str, bytes]]:
    return [
        (f"{name}.jpg", data),
        (f"{name}.json", json.dumps({"alt_text": f"a photo of {name}", "n": index}).encode()),
        (f"{name}.txt", f"caption of {name}".encode()),
        (f"{name}.cls", f"{index}\n".encode()),
    ]


@pytest.fixture
def shards(tmp_path, photo_bytes) -> Path:
    """shard-000.tar with three samples, shard-001.tar with two."""
    for shard, names in (("shard-000.tar", NAMES[:3]), ("shard-001.tar", NAMES[3:])):
        members = []
        for name in names:
            members += sample_members(name, photo_bytes[name], NAMES.index(name))
        write_tar(tmp_path / shard, members)
    return tmp_path


def rich_record(n: int, status: str = "ok") -> Record:
    record = Record(
        id=f"rec{n:03d}",
        source=f"photos/{n}.jpg",
        proposals=[Proposal("tiny:blip", f"a cat {n}"), Proposal("ocr", "EXIT")],
        claims=[
            Claim("object", "a cat", subject="cat", verdict="supported", score=0.9),
            Claim("count", "two dogs", subject="dog", count=2, verdict="refuted", score=0.1),
        ],
        captions={"detailed": f"A grey cat number {n} on a sofa.", "short": "A cat."},
        notes=["decoded the first of 2 frames"],
        timings_ms={"decode": 1.5, "propose": 20.25},
        models={"captioners": ["tiny:blip"], "llm": "tiny:llm"},
        image_size=(640, 480),
        extra={"alt_text": "ünïcode alt", "n": n},
    )
    if status == "error":
        record.fail("FileNotFound", f"no such file: photos/{n}.jpg")
        record.captions = {}
    return record


# --- brace expansion -------------------------------------------------------------------------


def test_brace_expansion_follows_the_shell():
    assert expand_braces("s-{000..003}.tar") == [f"s-{i:03d}.tar" for i in range(4)]
    assert expand_braces("s-{8..11}.tar") == ["s-8.tar", "s-9.tar", "s-10.tar", "s-11.tar"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("{a..c}") == ["a", "b", "c"]
    assert expand_braces("{a,{b,c}}d") == ["ad", "bd", "cd"]
    assert expand_braces("x{1,2}y{a,b}") == ["x1ya", "x1yb", "x2ya", "x2yb"]
    assert expand_braces("{x}-{0..1}") == ["{x}-0", "{x}-1"]
    assert expand_braces("plain.tar") == ["plain.tar"]


# --- WebDataset tar sources ------------------------------------------------------------------


def test_tar_shards_stream_samples_with_their_fields(shards, photo_bytes):
    items = list(open_source([str(shards / "shard-{000..001}.tar")]))
    assert [i.source.rpartition("#")[2] for i in items] == NAMES
    assert items[0].source == f"{shards / 'shard-000.tar'}#astronaut"
    assert items[3].source == f"{shards / 'shard-001.tar'}#coffee"
    for index, (name, item) in enumerate(zip(NAMES, items, strict=True)):
        assert type(item) is InputItem
        assert item.data == photo_bytes[name] and item.payload == photo_bytes[name]
        assert item.extra == {
            "json": {"alt_text": f"a photo of {name}", "n": index},
            "txt": f"caption of {name}",
            "cls": index,
        }
        decoded = decode(item.payload)
        assert (decoded.width, decoded.height) == Image.open(PHOTOS[index]).size
    again = list(open_source([str(shards / "shard-{000..001}.tar")]))
    assert [i.id for i in items] == [i.id for i in again]
    assert len({i.id for i in items}) == 5


def test_shards_by_glob_folder_and_repeated_name_are_read_once(shards):
    by_glob = [i.id for i in open_source(str(shards / "shard-*.tar"))]
    by_folder = [i.id for i in open_source(shards)]
    twice = [i.id for i in open_source([shards / "shard-000.tar", str(shards / "shard-00*.tar")])]
    assert by_glob == by_folder and len(by_glob) == 5
    assert twice == by_glob  # shard-000 named twice, read once


def test_gzipped_shards_and_folder_keys(tmp_path, photo_bytes):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in [("part/a.b.jpg", photo_bytes["rocket"]), ("part/a.b.txt", b"hi")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (tmp_path / "s.tar.gz").write_bytes(gzip.compress(raw.getvalue()))
    [item] = open_source(tmp_path / "s.tar.gz")
    # The key ends at the base name's first dot: "a.b.jpg" is key "part/a", ext "b.jpg".
    assert item.source.endswith("s.tar.gz#part/a")
    assert item.data == photo_bytes["rocket"] and item.extra == {}


def test_missing_names_and_unreadable_shards_stop_before_reading(shards):
    with pytest.raises(ConfigError, match=r"shard-002.tar"):
        open_source(str(shards / "shard-{000..002}.tar"))  # raised by the call itself
    (shards / "notes.tar").write_bytes(b"this is not a tar archive" * 40)
    with pytest.raises(ConfigError, match="notes.tar is not a readable tar archive"):
        open_source([shards / "shard-000.tar", shards / "notes.tar"])
    (shards / "empty.tar").write_bytes(b"")
    with pytest.raises(ConfigError, match="empty.tar"):
        open_source(shards / "empty.tar")


def test_sample_without_image_or_with_bad_json_is_a_broken_item(tmp_path, photo_bytes):
    write_tar(
        tmp_path / "s.tar",
        [
            ("0001.txt", b"only text"),
            ("0001.json", b"{}"),
            ("0002.jpg", photo_bytes["chelsea"]),
            ("0002.json", b"{not json"),
            ("0003.png", photo_bytes["coffee"]),  # a JPEG named .png still decodes
        ],
    )
    first, second, third = open_source(tmp_path / "s.tar")
    assert isinstance(first, BrokenItem) and first.problem_type == "MissingImage"
    assert "no image member (members: .txt, .json)" in first.problem
    assert first.extra == {"txt": "only text", "json": {}}
    assert isinstance(second, BrokenItem) and ".json member cannot be read" in second.problem
    assert type(third) is InputItem and decode(third.payload).width > 0
    for broken in (first, second):
        with pytest.raises(ImageError):
            decode(broken.payload)  # never decodes as if nothing were wrong


@pytest.fixture
def shard_bytes(tmp_path, photo_bytes) -> tuple[bytes, list[int]]:
    """A three-sample shard and the byte offsets where each member's header starts."""
    members = [m for i, n in enumerate(NAMES[:3]) for m in sample_members(n, photo_bytes[n], i)[:2]]
    raw = write_tar(tmp_path / "whole.tar", members).read_bytes()
    with tarfile.open(tmp_path / "whole.tar") as tar:
        offsets = [m.offset for m in tar.getmembers()]
    return raw, offsets


def test_a_shard_cut_inside_an_image_reports_that_sample(tmp_path, shard_bytes):
    raw, offsets = shard_bytes
    cut = offsets[2] + 512 + 1000  # 1000 bytes into camera.jpg's data
    (tmp_path / "cut.tar").write_bytes(raw[:cut])
    items = list(open_source(tmp_path / "cut.tar"))
    assert [i.source.rpartition("#")[2] for i in items] == ["astronaut", "camera"]
    assert type(items[0]) is InputItem
    assert isinstance(items[1], BrokenItem)
    assert "truncated or corrupt inside member 'camera.jpg'" in items[1].problem
    assert "rest of the shard cannot be read" in items[1].problem


def test_a_shard_cut_between_members_or_with_a_corrupt_header_says_so(tmp_path, shard_bytes):
    raw, offsets = shard_bytes
    (tmp_path / "cut.tar").write_bytes(raw[: offsets[4]])  # ends after camera.json
    items = list(open_source(tmp_path / "cut.tar"))
    assert [type(i) for i in items] == [InputItem, InputItem, BrokenItem]
    assert "without its end-of-archive marker" in items[2].problem
    assert "after member 'camera.json'" in items[2].problem

    garbled = bytearray(raw)
    garbled[offsets[2] : offsets[2] + 512] = b"\x07" * 512  # camera.jpg's header
    (tmp_path / "garbled.tar").write_bytes(bytes(garbled))
    items = list(open_source(tmp_path / "garbled.tar"))
    assert [type(i) for i in items] == [InputItem, BrokenItem]
    assert "corrupt member header" in items[1].problem
    assert items[1].id != items[0].id and "after member 'astronaut.json'" in items[1].problem


# --- Parquet sources ------------------------------------------------------------------------


def test_parquet_bytes_column_with_ids_and_extra(tmp_path, photo_bytes):
    table = pa.table(
        {
            "key": [f"k{i}" for i in range(5)],
            "jpg": [photo_bytes[n] for n in NAMES],
            "caption": [f"about {n}" for n in NAMES],
            "score": [0.5, 1.5, float("nan"), 3.5, None],
            "tags": [["x"]] * 5,  # not a scalar: left out of extra
        }
    )
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=2)
    items = list(open_source(tmp_path / "d.parquet", id_column="key", batch_rows=2))
    assert [i.id for i in items] == [f"k{i}" for i in range(5)]
    assert [i.source for i in items] == [f"{tmp_path / 'd.parquet'}#{r}" for r in range(5)]
    assert [i.data for i in items] == [photo_bytes[n] for n in NAMES]
    assert items[0].extra == {"caption": "about astronaut", "score": 0.5}
    assert [i.extra["score"] for i in items] == [0.5, 1.5, None, 3.5, None]  # strict JSON
    assert all("tags" not in i.extra and "key" not in i.extra for i in items)
    # Without an id column the ids come from the file name and row, the same every time.
    auto = [i.id for i in open_source(tmp_path / "d.parquet")]
    assert auto == [i.id for i in open_source(tmp_path / "d.parquet")] and len(set(auto)) == 5


def test_parquet_is_read_a_batch_at_a_time(tmp_path, photo_bytes):
    rows = 300  # ~16 MB of image bytes
    data = [photo_bytes[NAMES[i % 5]] for i in range(rows)]
    pq.write_table(pa.table({"image": data}), tmp_path / "big.parquet", row_group_size=8)
    del data
    base = pa.total_allocated_bytes()
    peak, count = 0, 0
    for _item in open_source(tmp_path / "big.parquet", batch_rows=8):
        peak = max(peak, pa.total_allocated_bytes() - base)
        count += 1
    assert count == rows
    assert peak < 4_000_000, f"Arrow held {peak:,} bytes at once: the file was not streamed"


def test_parquet_hf_image_structs_and_missing_images(tmp_path, photo_bytes):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "rocket.jpg").write_bytes(photo_bytes["rocket"])
    structs = [
        {"bytes": photo_bytes["astronaut"], "path": "astronaut.jpg"},
        {"bytes": None, "path": "img/rocket.jpg"},  # relative to the Parquet file
        {"bytes": None, "path": None},
        None,
    ]
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"label": [1, 2, 3, 4], "image": pa.array(structs, type=image_type)})
    pq.write_table(table, tmp_path / "hf.parquet")
    a, b, c, d = open_source(tmp_path / "hf.parquet")
    assert a.data == photo_bytes["astronaut"] and a.extra == {"label": 1}
    assert b.source == str(tmp_path / "img" / "rocket.jpg") and b.data is None
    assert b.id == next(expand(tmp_path / "img" / "rocket.jpg")).id  # same id as the file
    assert decode(b.payload).width > 0
    for broken in (c, d):
        assert isinstance(broken, BrokenItem) and broken.problem_type == "MissingImage"
        assert "has no image (column 'image' is empty)" in broken.problem


def test_parquet_path_columns_and_column_errors(tmp_path):
    rows = {"file_name": [p.name for p in PHOTOS], "alt": NAMES}
    for p in PHOTOS:
        (tmp_path / p.name).write_bytes(p.read_bytes())
    pq.write_table(pa.table(rows), tmp_path / "paths.parquet")
    items = list(open_source(tmp_path / "paths.parquet"))
    assert [i.source for i in items] == [str(tmp_path / p.name) for p in PHOTOS]
    assert [i.extra for i in items] == [{"alt": n} for n in NAMES]
    assert [i.id for i in items] == [i.id for i in expand(tmp_path)]

    pq.write_table(pa.table({"n": [1], "w": [2.0]}), tmp_path / "none.parquet")
    with pytest.raises(ConfigError, match=r"no column of image bytes or paths.*n: int64"):
        open_source(tmp_path / "none.parquet")
    with pytest.raises(ConfigError, match="has no column 'picture'"):
        open_source(tmp_path / "paths.parquet", image_column="picture")
    with pytest.raises(ConfigError, match="'w' is double"):
        open_source(tmp_path / "none.parquet", image_column="w")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(ConfigError, match="bad.parquet is not a readable Parquet file"):
        open_source(tmp_path / "bad.parquet")


# --- saved Hugging Face datasets ------------------------------------------------------------


def test_saved_datasets_with_image_feature_and_splits(tmp_path, photo_bytes):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "alt": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["person", "thing"]),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"image": [str(p) for p in PHOTOS], "alt": NAMES, "label": [0, 0, 1, 1, 1]},
        features=features,
    )
    ds.save_to_disk(str(tmp_path / "plain"))
    datasets.DatasetDict({"train": ds, "test": ds.select([4, 2])}).save_to_disk(
        str(tmp_path / "dict")
    )
    items = list(open_source(tmp_path / "plain", batch_rows=2))
    assert [i.data for i in items] == [photo_bytes[n] for n in NAMES]
    assert [i.source for i in items] == [f"{tmp_path / 'plain'}#{r}" for r in range(5)]
    assert items[2].extra == {"alt": "chelsea", "label": 1}
    assert [i.id for i in items] == [i.id for i in open_source(tmp_path / "plain")]

    both = list(open_source(tmp_path / "dict"))
    assert [i.source.rpartition("#")[2] for i in both] == [
        *(f"train/{r}" for r in range(5)),
        "test/0",
        "test/1",
    ]
    assert len({i.id for i in both}) == 7
    test = list(open_source(tmp_path / "dict", split="test"))
    assert [i.extra["alt"] for i in test] == ["rocket", "chelsea"]
    assert [i.id for i in test] == [i.id for i in both[5:]]
    with pytest.raises(ConfigError, match="no split 'validation'"):
        open_source(tmp_path / "dict", split="validation")


# --- CSV manifests --------------------------------------------------------------------------


def test_csv_manifest_carries_fields_and_reports_empty_cells(tmp_path):
    lines = ["id,file_name,alt_text,question"]
    lines += [f"img-{i},{p},alt {i},what is it?" for i, p in enumerate(PHOTOS[:2])]
    lines += ["img-9,,alt 9,"]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    first, second, third = open_source(tmp_path / "m.csv")
    assert (first.id, first.source) == ("img-0", str(PHOTOS[0]))
    assert first.extra == {"alt_text": "alt 0", "question": "what is it?"}
    assert second.id == "img-1" and decode(second.payload).width > 0
    assert isinstance(third, BrokenItem) and third.id == "img-9"
    assert "m.csv:4: the 'file_name' cell is empty" in third.problem

    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="needs a column of image paths"):
        open_source(tmp_path / "bad.csv")


def test_plain_inputs_still_go_through_expand(tmp_path):
    items = list(open_source([PHOTOS[0], str(PHOTOS[0]), PHOTOS[0].parent]))
    assert [i.id for i in items] == [i.id for i in expand([PHOTOS[0].parent])]
    with pytest.raises(ConfigError, match="no such file"):
        open_source(tmp_path / "typo.jpg")


# --- sinks ----------------------------------------------------------------------------------


def test_jsonl_sink_round_trip_commit_and_torn_line_repair(tmp_path):
    records = [rich_record(n) for n in range(3)] + [rich_record(3, "error")]
    committed: list[list[str]] = []
    path = tmp_path / "out" / "r.jsonl"
    with open_sink(path, on_commit=committed.append) as sink:
        assert isinstance(sink, JsonlSink)
        for record in records:
            sink.write(record)
            # flushed: another reader sees every finished line at once
            assert path.read_text(encoding="utf-8").count("\n") == len(committed)
    assert list(read_records(path)) == [r.to_dict() for r in records]
    assert committed == [[r.id] for r in records]

    with path.open("a", encoding="utf-8") as f:
        f.write('{"id": "torn", "sour')  # what kill -9 mid-line leaves
    with open_sink(path, append=True) as sink:
        sink.write(rich_record(4))
    assert [r["id"] for r in read_records(path)] == [r.id for r in records] + ["rec004"]


def test_non_finite_numbers_never_reach_the_output(tmp_path):
    record = rich_record(0)
    record.claims[0].score = float("nan")
    with open_sink(tmp_path / "r.jsonl") as sink:
        sink.write(record)
    line = (tmp_path / "r.jsonl").read_text()
    row = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert row["status"] == "error" and row["error"]["type"] == "SerializationError"


def test_parquet_sink_shards_rotate_and_round_trip(tmp_path):
    records = [rich_record(n) for n in range(4)] + [rich_record(4, "error")]
    out = tmp_path / "out.parquet"
    committed: list[list[str]] = []
    sink = open_sink(out, shard_size=2, on_commit=committed.append)
    assert isinstance(sink, ParquetSink) and out.is_dir()
    sink.write(records[0])
    # An unfinished shard exists only under its hidden temporary name.
    assert [p.name for p in out.iterdir()] == [".part-00000.parquet.tmp"]
    for record in records[1:]:
        sink.write(record)
    assert committed == [["rec000", "rec001"], ["rec002", "rec003"]]
    sink.close()
    sink.close()  # idempotent
    assert committed[-1] == ["rec004"]
    assert sorted(p.name for p in out.iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert list(read_records(out)) == [r.to_dict() for r in records]
    table = pq.read_table(out)  # the folder reads as one table
    assert table.num_rows == 5
    assert table.column("caption").to_pylist()[:2] == [
        "A grey cat number 0 on a sofa.",
        "A grey cat number 1 on a sofa.",
    ]
    assert json.loads(table.column("claims")[0].as_py())[1]["count"] == 2
    with pytest.raises(ValueError, match="closed"):
        sink.write(records[0])


def test_existing_shards_need_append_or_overwrite(tmp_path):
    out = tmp_path / "o"
    with open_sink(out, format="parquet", shard_size=2) as sink:
        for n in range(3):
            sink.write(rich_record(n))
    (out / ".part-00002.parquet.tmp").write_bytes(b"half a shard from a crash")
    with pytest.raises(ConfigError, match="already holds 2 parquet shard"):
        open_sink(out, format="parquet")
    assert not (out / ".part-00002.parquet.tmp").exists()  # leftovers are always cleared
    with open_sink(out, format="parquet", shard_size=2, append=True) as sink:
        sink.write(rich_record(3))
    assert [p.name for p in sorted(out.iterdir())][-1] == "part-00002.parquet"
    assert [r["id"] for r in read_records(out)] == ["rec000", "rec001", "rec002", "rec003"]
    with open_sink(out, format="parquet", overwrite=True) as sink:
        sink.write(rich_record(9))
    assert [r["id"] for r in read_records(out)] == ["rec009"]


def test_webdataset_sink_writes_training_samples_and_reads_back(tmp_path, shards, photo_bytes):
    tar_items = list(open_source(shards / "shard-000.tar"))  # bytes items
    path_item = next(expand(PHOTOS[3]))  # a file on disk
    pil = Image.open(PHOTOS[4]).convert("L")  # an in-memory image
    pil_item = next(expand(pil))
    items = [*tar_items, path_item, pil_item, InputItem(source="gone.jpg", id="gone")]
    records = [
        Record(id=i.id, source=i.source, captions={"detailed": f"c{n}"})
        for n, i in enumerate(items)
    ]
    records[-1].fail("FileNotFound", "no such file: gone.jpg")
    out = tmp_path / "wds"
    with open_sink(out, format="webdataset", shard_size=4) as sink:
        assert isinstance(sink, WebDatasetSink)
        for record, item in zip(records, items, strict=True):
            sink.write(record, item)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.tar", "part-00001.tar"]

    with tarfile.open(out / "part-00000.tar") as tar:
        names = tar.getnames()
        first = tar.extractfile(f"{records[0].id}.jpg").read()
    assert names[:3] == [f"{records[0].id}.{e}" for e in ("jpg", "json", "txt")]
    assert first == photo_bytes["astronaut"]  # the original bytes, not a re-encode
    with tarfile.open(out / "part-00001.tar") as tar:
        assert tar.getnames() == [
            f"{records[4].id}.jpg",
            f"{records[4].id}.json",
            f"{records[4].id}.txt",
            "gone.json",  # a failed record: its JSON, no image, no caption
        ]

    again = list(open_source(out))  # the output is a WebDataset source again
    assert [i.extra["json"] for i in again] == [r.to_dict() for r in records]
    assert [i.extra.get("txt") for i in again] == ["c0", "c1", "c2", "c3", "c4", None]
    assert [i.data for i in again[:4]] == [
        *(photo_bytes[n] for n in NAMES[:3]),
        PHOTOS[3].read_bytes(),
    ]
    redecoded = decode(again[4].payload)
    assert redecoded.format == "JPEG" and redecoded.image.size == pil.size
    assert isinstance(again[5], BrokenItem) and again[5].problem_type == "MissingImage"
    assert list(read_records(out)) == [r.to_dict() for r in records]


def test_open_sink_chooses_and_refuses_formats(tmp_path):
    assert isinstance(open_sink(tmp_path / "a.jsonl"), JsonlSink)
    assert isinstance(open_sink(tmp_path / "b.parquet"), ParquetSink)
    assert isinstance(open_sink(tmp_path / "c", format="webdataset"), WebDatasetSink)
    with pytest.raises(ConfigError, match="cannot tell the output format"):
        open_sink(tmp_path / "d")
    with pytest.raises(ConfigError, match="unknown output format 'csv'"):
        open_sink(tmp_path / "e", format="csv")
    with pytest.raises(ConfigError, match="shard-size is for parquet"):
        open_sink(tmp_path / "f.jsonl", shard_size=10)
    with pytest.raises(ConfigError, match="at least 1"):
        open_sink(tmp_path / "g", format="parquet", shard_size=0)
    with pytest.raises(ConfigError, match="is a directory"):
        open_sink(tmp_path / "c", format="jsonl")


def test_sink_ids_that_are_not_safe_keys_are_hashed(tmp_path):
    with open_sink(tmp_path / "w", format="webdataset") as sink:
        sink.write(Record(id="photos/cat.v2", source="x"), None)
    [item] = open_source(tmp_path / "w")
    assert item.extra["json"]["id"] == "photos/cat.v2"
    assert "." not in item.source.rpartition("#")[2]


def test_doctests():
    assert doctest.testmod(sources_module).failed == 0
    assert doctest.testmod(sinks_module).failed == 0
