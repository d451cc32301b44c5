"""``factcap.rows.RecordRow``: the typed view every reader of results goes through. A record
factcap writes reads back as it was written; a row of another tool (id, source, captions)
reads with empty values for the rest; a field of the wrong type reads as empty, never
raises, and the readers (evaluate, report, filter, export) agree on what it means."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factcap.curation.export import ExportJob
from factcap.curation.filter import record_values, values_of
from factcap.engine.records import read_records
from factcap.evaluate import References, build_samples
from factcap.report.html import write_report
from factcap.rows import ClaimRow, ProposalRow, RecordRow
from factcap.schema import Claim, ErrorInfo, Media, Proposal, Record

OLD = Path(__file__).parent / "data" / "records_8d96429"

#: Every value of a wrong type a careless or hostile row may hold somewhere.
WRONG = [None, 0, 5, -1.5, float("nan"), True, "", "text", [], ["junk", 3], {}, {"a": 1}]
PROPERTIES = [
    "id",
    "source",
    "status",
    "ok",
    "error",
    "captions",
    "proposals",
    "claims",
    "removed",
    "notes",
    "models",
    "image_size",
    "media",
    "regions",
    "graph",
    "question",
    "answer",
    "extra",
]


def _record() -> Record:
    record = Record(id="r1", source="photos/cat.jpg")
    record.proposals = [
        Proposal("m1", "A cat on a mat."),
        Proposal("m2", "A dog.", None, 0.2, False),
    ]
    record.claims = [
        Claim("object", "There is a cat.", subject="cat", verdict="supported", score=0.9),
        Claim("count", "There are 2 dogs.", subject="dog", count=2, verdict="refuted", score=0.1),
    ]
    record.captions = {"detailed": "A cat on a mat.", "short": "A cat."}
    record.removed = ["There are 2 dogs."]
    record.notes = ["claims: parsed after one repair retry"]
    record.models = {"captioners": ["m1", "m2"], "ocr": "rapidocr"}
    record.image_size = (640, 480)
    record.extra = {"objects": ["cat"]}
    record.regions.items = [{"id": "r0", "box": [0, 0, 10, 10], "caption": "a cat"}]
    record.regions.graph = {"nodes": [{"id": "image", "kind": "image"}], "edges": []}
    record.question.text = "What animal is it?"
    record.question.answer = {"llm_answer": "a cat", "agrees": True}
    return record


def test_a_factcap_record_reads_back_as_written():
    record = _record()
    row = RecordRow(json.loads(json.dumps(record.to_dict())))
    assert (row.id, row.source, row.status, row.ok, row.error) == (
        "r1",
        record.source,
        "ok",
        True,
        None,
    )
    assert row.captions == record.captions and row.removed == record.removed
    assert row.notes == record.notes and row.models == record.models
    assert row.image_size == (640, 480) and row.media == Media()
    assert [(p.model, p.text, p.view, p.score, p.kept) for p in row.proposals] == [
        ("m1", "A cat on a mat.", None, None, True),
        ("m2", "A dog.", None, 0.2, False),
    ]
    assert [c.claim for c in row.claims] == [
        Claim(c.kind, c.text, c.subject, count=c.count, verdict=c.verdict) for c in record.claims
    ]
    assert [(c.verdict, c.score, c.count) for c in row.claims] == [
        ("supported", 0.9, None),
        ("refuted", 0.1, 2),
    ]
    assert row.regions == record.regions.items and row.graph == record.regions.graph
    assert row.question == record.question.text and row.answer == record.question.answer
    assert row.extra == record.extra

    record.fail("DecodeError", "not an image")
    failed = RecordRow(record.to_dict())
    assert (failed.status, failed.ok) == ("error", False)
    assert failed.error == ErrorInfo("DecodeError", "not an image")


def test_records_of_8d96429_read_with_their_media():
    photo, _, cube = (RecordRow(r) for r in read_records(OLD / "results.jsonl"))
    assert photo.media == Media() and photo.image_size is not None
    assert cube.media.kind == "asset" and [v["index"] for v in cube.media.views] == [0, 1, 2, 3]
    assert cube.media.facts["faces"] == 12 and cube.ok and cube.captions


def test_regions_and_question_of_records_before_the_grouping_read_the_same():
    """Records written before 2026-12-08 kept ``regions`` (a list), ``graph``, ``question``
    (the text) and ``answer`` at the top level; both layouts read alike."""
    record = Record(id="a", source="a.jpg", captions={"question": "A cat."})
    record.regions.items = [{"id": "r0", "box": [0, 0, 10, 10]}]
    record.regions.graph = {"nodes": [{"id": "image", "kind": "image"}], "edges": []}
    record.question.text = "What animal is it?"
    record.question.answer = {"llm_answer": "a cat", "agrees": True}
    new = record.to_dict()
    assert new["regions"] == {"items": record.regions.items, "graph": record.regions.graph}
    assert new["question"] == {"text": "What animal is it?", "answer": record.question.answer}
    old = {k: v for k, v in new.items() if k not in ("regions", "question")}
    old.update(regions=record.regions.items, graph=record.regions.graph)
    old.update(question=record.question.text, answer=record.question.answer)
    assert Record.from_dict(old).to_dict() == new
    for name in ("regions", "graph", "question", "answer"):
        assert getattr(RecordRow(old), name) == getattr(RecordRow(new), name), name


def test_a_row_of_another_tool_reads_with_empty_values():
    row = RecordRow({"id": 7, "source": "a.jpg", "captions": {"short": "A cat."}})
    assert (row.id, row.source, row.status, row.ok) == ("7", "a.jpg", "ok", True)
    assert row.captions == {"short": "A cat."}
    assert row.proposals == row.claims == row.notes == row.removed == row.regions == []
    assert row.models == row.graph == row.answer == row.extra == {}
    assert row.error is None and row.image_size is None and row.question is None
    assert row.media == Media()


@pytest.mark.parametrize("value", WRONG, ids=repr)
def test_every_field_of_the_wrong_type_reads_as_empty(value):
    """A row whose every field holds ``value`` (and the row itself being ``value``) reads
    without raising, each property with its own type."""
    fields = {name: value for name in PROPERTIES}
    fields["kind"] = fields["views"] = fields["asset"] = fields["graph"] = value  # old layout
    grouped = {
        "regions": {"items": value, "graph": value},
        "question": {"text": value, "answer": value},
    }
    for row in (RecordRow(fields), RecordRow(value), RecordRow(grouped)):
        got = {name: getattr(row, name) for name in PROPERTIES}
        assert got["id"] is None or isinstance(got["id"], str)
        assert isinstance(got["status"], str) and got["ok"] == (got["status"] == "ok")
        assert got["error"] is None or isinstance(got["error"], ErrorInfo)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in got["captions"].items())
        assert all(isinstance(p, ProposalRow) for p in got["proposals"])
        assert all(isinstance(c, ClaimRow) for c in got["claims"])
        assert all(isinstance(n, str) for n in got["notes"] + got["removed"])
        assert got["image_size"] is None and isinstance(got["media"], Media)
        assert all(isinstance(r, dict) for r in got["regions"])
        for name in ("models", "graph", "answer", "extra"):
            assert isinstance(got[name], dict)
        assert got["question"] is None or isinstance(got["question"], str)
        for entry in got["proposals"] + got["claims"]:  # every entry property reads too
            kinds = type(entry).__dict__
            [getattr(entry, name) for name, attr in kinds.items() if isinstance(attr, property)]


def test_entries_of_the_wrong_type_are_left_out_and_bad_values_read_empty():
    row = RecordRow(
        {
            "captions": {"short": "A cat.", "n": 5, "none": None},
            "claims": [
                "junk",
                {"kind": "smell", "verdict": "maybe", "count": True, "score": "high"},
            ],
            "proposals": [3, {"model": None, "text": None, "view": True, "kept": 0}],
            "notes": "ab",
            "removed": {"x": 1},
            "regions": [{"id": "r0"}, "junk"],
            "error": "a plain string",
            "question": "   ",
        }
    )
    assert row.captions == {"short": "A cat."}
    [claim] = row.claims
    assert (claim.kind, claim.verdict, claim.count, claim.score, claim.claim) == (
        "smell",
        None,
        None,
        None,
        None,
    )
    [proposal] = row.proposals
    assert (proposal.model, proposal.text, proposal.view, proposal.kept) == (None, "", None, True)
    assert row.notes == row.removed == [] and row.regions == [{"id": "r0"}]
    assert row.error is None and row.status == "ok" and row.question is None


@pytest.mark.parametrize(
    ("size", "read"),
    [
        ([640, 480], (640, 480)),
        ((640, 480), (640, 480)),
        ([640.0, 480.9], (640, 480)),
        ([0, 480], None),
        ([-5, 480], None),
        ([640, float("inf")], None),
        ([True, 480], None),
        (["640", "480"], None),
        ([640], None),
        ("640x480", None),
    ],
)
def test_image_size_is_two_positive_numbers(size, read):
    assert RecordRow({"image_size": size}).image_size == read


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({}, "ok"),
        ({"status": "error"}, "error"),
        ({"error": {"type": "X", "message": "m"}}, "error"),
        ({"status": None, "error": {"type": "X"}}, "error"),
        ({"status": "ok", "error": {"type": "X"}}, "ok"),
        ({"error": "not an object"}, "ok"),
        ({"status": 3}, "3"),
    ],
)
def test_status_where_the_row_gives_none_follows_its_error(fields, status):
    assert RecordRow(fields).status == status


def test_an_error_object_without_type_or_message_reads_with_defaults():
    assert RecordRow({"error": {}}).error == ErrorInfo("Error", "")
    assert RecordRow({"error": {"type": 3, "message": None}}).error == ErrorInfo("3", "")


def test_of_wraps_once():
    row = RecordRow({"id": "a"})
    assert RecordRow.of(row) is row and RecordRow.of({"id": "a"}).id == "a"
    assert repr(row) == "RecordRow({'id': 'a'})"


# --- the readers on broken rows ---------------------------------------------------------------

BROKEN = [
    {"id": "a", "source": "a.jpg", "captions": {"short": "A cat.", "n": 5}, "extra": None},
    {"source": "b.jpg", "captions": {"short": "No id."}},
    {"id": "c", "source": "c.jpg", "captions": ["not", "an", "object"], "claims": "oops"},
    {"id": "d", "source": "d.jpg", "error": {"type": "X", "message": "m"}, "captions": {}},
    {"id": "e", "source": "e.jpg", "captions": {"short": "A dog on grass."}, "proposals": [1]},
]


def test_evaluate_scores_what_broken_rows_hold_and_skips_the_rest():
    samples = build_samples(BROKEN, "all", References(), {})
    assert [(s.id, s.caption_source, s.caption) for s in samples] == [
        ("a", "final:short", "A cat."),
        ("e", "final:short", "A dog on grass."),
    ]
    assert References(objects={}).for_row({"id": "a", "extra": None}) == ([], None)


def test_filter_values_of_broken_rows():
    a, _, c, d, _ = (record_values(r) for r in BROKEN)
    assert (a["n_captions"], a["width"], a["error_type"]) == (1, None, None)
    assert (c["n_claims"], c["n_captions"]) == (0, 0)
    assert (d["status"], d["error_type"]) == ("error", "X")
    values = values_of(BROKEN[0], None, None)
    assert values.lookup("caption_words") == 2


def test_report_and_export_take_broken_rows(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in BROKEN))
    _, stats = write_report(path, None, tmp_path / "r.html")
    assert (stats.records, stats.errors) == (5, 1)
    export = ExportJob(path, "csv", tmp_path / "out.csv", statuses=("ok", "error")).run()
    assert export.styles == ["short"] and export.captions == 3
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "id,file_name,source,status,short" and lines[2].startswith("None,b.jpg")
