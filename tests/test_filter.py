"""``factcap filter``: the --where language (safe parser, three-valued logic, any/all), the
names records and scores give, the split into kept and rejected in every sink format, and
the output checks."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from factcap.cli import main
from factcap.curation.filter import FilterJob, filter_records, read_scores, values_of
from factcap.curation.filter_expr import NUM, STR, Values, compile_where
from factcap.engine.records import read_records
from factcap.engine.sinks import open_sink
from factcap.errors import UsageError
from factcap.examples import example_paths
from factcap.schema import Record

# --- hand-made records and scores (the pipeline is not the subject here) ----------------------


def _rec(rid, status="ok", captions=None, verdicts=(), size=(64, 48), **extra):
    claims = [
        {"kind": "object", "text": f"c{i}", "subject": "x", "question": "", "count": None,
         "verdict": v, "score": 0.5, "evidence": {}}
        for i, v in enumerate(verdicts)
    ]  # fmt: skip
    return {
        "id": rid,
        "source": f"{rid}.jpg",
        "status": status,
        "proposals": [{"model": "m", "text": "p"}] if status == "ok" else [],
        "claims": claims,
        "captions": captions if captions is not None else {},
        "removed": [],
        "notes": [],
        "error": None if status == "ok" else {"type": "DecodeError", "message": "bad"},
        "timings_ms": {},
        "models": {},
        "image_size": list(size) if size else None,
        **extra,
    }


RECORDS = [
    _rec("a", captions={"detailed": "A red cat on a sofa.", "short": "A cat."},
         verdicts=("supported", "supported", "refuted")),
    _rec("b", captions={"detailed": "A dog in a park with trees.", "short": "A dog."},
         verdicts=("refuted", "refuted")),
    _rec("c", captions={"detailed": "A bowl of soup.", "short": "Soup."}, verdicts=()),
    _rec("e", status="error", size=None),
]  # fmt: skip
#: (id, caption source) → clip_score; "c" has no short row; proposals are ignored.
SCORES = {
    ("a", "final:detailed"): 0.35,
    ("a", "final:short"): 0.25,
    ("b", "final:detailed"): 0.31,
    ("b", "final:short"): 0.33,
    ("c", "final:detailed"): None,  # the metric failed
    ("a", "proposal:m"): 0.99,
}


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def made(tmp_path):
    results = _write_jsonl(tmp_path / "out.jsonl", RECORDS)
    scores = _write_jsonl(
        tmp_path / "scores.jsonl",
        [
            {"id": i, "caption_source": s, "metrics": {"clip_score": v, "vqa_score": 0.8},
             "failures": {}}
            for (i, s), v in SCORES.items()
        ],
    )  # fmt: skip
    return results, scores


def _ids(path: Path) -> list[str]:
    return [r["id"] for r in read_records(path)]


def _kept(made, tmp_path, where, *extra) -> tuple[list[str], int]:
    results, scores = made
    out = tmp_path / "kept.jsonl"
    code = main(
        ["filter", str(results), "--scores", str(scores), "--where", where, "-o", str(out),
         "--overwrite", "--quiet", *extra]
    )  # fmt: skip
    return (_ids(out) if out.exists() else []), code


# --- the safe parser ---------------------------------------------------------------------------

REFUSED = [
    ("__import__('os')", "calls are not allowed", "column 1"),
    ("open('/etc/passwd').read() == ''", "calls are not allowed", "column 1"),
    ("status.upper() == 'OK'", "calls are not allowed", "column 1"),
    ("open('/etc/passwd') == ''", "calls are not allowed", "column 1"),
    ("n_claims > 0 and eval('1') == 1", "calls are not allowed", "column 18"),
    ("status.__class__ == 'x'", "attribute access is not allowed", "column 1"),
    ("status[0] == 'o'", "subscripts are not allowed", "column 1"),
    ("(lambda: 1)() == 1", "calls are not allowed", "column 1"),
    ("any(c > 1 for c in [1])", "comprehensions", "at column"),
    ("[x for x in 'ab'] == []", "comprehensions are not allowed", "column 1"),
    ("__builtins__ == 1", "dunder names are not allowed", "column 1"),
    ("n_claims ** 99 > 1", "the operator ** is not allowed", "column 1"),
    ("n_claims if status else 1", "conditional expressions", "column 1"),
    ("f'{status}' == 'ok'", "f-strings are not allowed", "column 1"),
    ("(y := 1) == 1", "assignment (:=) is not allowed", "column 2"),
    ("status is None", "None is not a value here", "column 11"),
    ("status == ok", "unknown name 'ok' at column 11", "quote"),
    ("clip_scor >= 0.3", "did you mean clip_score", "column 1"),
    ("status > 1", "compares text with number", "column 1"),
    ("n_claims", "needs a condition", "column 1"),
    ("n_claims > 1 and status", "and needs a condition", "column 18"),
    ("any(any(clip_score > 0.3))", "any/all cannot be nested", "column 5"),
    ("any(clip_score > 0.3, n_claims > 1)", "takes exactly one condition", "column 1"),
    ("all", "all must be called", "column 1"),
    ("n_claims >", "not a valid expression", "at its end"),
    ("n_claims >= = 1", "not a valid expression", "column 13"),
    ("status in (1, 'a')", "may not mix numbers and text", "column 11"),
    ("", "the expression is empty", ""),
]


@pytest.mark.parametrize(("where", "message", "place"), REFUSED)
def test_refused_expressions_are_one_clear_line_and_exit_2(made, tmp_path, capsys, where,
                                                           message, place):  # fmt: skip
    ids, code = _kept(made, tmp_path, where)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("factcap: error: --where")
    assert message in err and place in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "kept.jsonl").exists()  # nothing written


def test_a_deeply_nested_expression_is_refused(made, tmp_path, capsys):
    _, code = _kept(made, tmp_path, "(" * 300 + "n_claims > 1" + ")" * 300)
    assert code == 2 and "--where" in capsys.readouterr().err
    _, code = _kept(made, tmp_path, "n_claims > 1 and " * 1000 + "n_claims > 1")
    assert code == 2 and "longer than" in capsys.readouterr().err


def test_comparisons_arithmetic_and_in():
    names = {"x": NUM, "y": NUM, "s": STR}
    cases = {
        "0.2 <= x < 0.5": True,
        "0.2 <= x < 0.3": False,
        "x * 10 + y / 4 == 4 and x - 0.1 < 0.25": True,
        "y // 3 == 1 and y % 3 == 1 and -x < 0": True,
        "s in ('ok', 'error')": True,
        "s not in ['ok']": False,
        "'ca' in s": False,
        "'o' in s and y in (1, 4, 9)": True,
        "not (x > 0.3) and not not (y >= 4)": True,
    }
    values = Values({"x": 0.3, "y": 4, "s": "ok"})
    for text, expected in cases.items():
        assert compile_where(text, names).evaluate(values) is expected, text


def test_missing_values_follow_three_valued_logic():
    names = {"x": NUM, "y": NUM}
    missing = Values({"x": None, "y": 1})
    table = {
        "x > 0": None,
        "x != 0": None,
        "not x > 0": None,
        "x > 0 and y > 5": False,  # false and unknown is false
        "x > 0 and y > 0": None,
        "x > 0 or y > 0": True,  # true or unknown is true
        "x > 0 or y > 5": None,
        "y / (y - 1) > 0": None,  # division by zero: unknown
        "x + 1 > 0": None,
    }
    for text, expected in table.items():
        assert compile_where(text, names).evaluate(missing) is expected, text
    # a value of the wrong kind (text where a number is expected) is missing too
    assert compile_where("x > 0", names).evaluate(Values({"x": "0.5"})) is None


def test_any_and_all_go_through_the_captions():
    names = {"x": NUM, "style": STR}
    captions = [{"x": 0.4, "style": "detailed"}, {"x": 0.2, "style": "short"}]
    values = Values({}, captions, captions[0])
    assert compile_where("any(x > 0.3)", names).evaluate(values) is True
    assert compile_where("all(x > 0.3)", names).evaluate(values) is False
    assert compile_where("all(x > 0.3 or style == 'short')", names).evaluate(values) is True
    assert compile_where("x > 0.3", names).evaluate(values) is True  # the default caption
    unknown = Values({}, [{"x": 0.4}, {"x": None}])
    assert compile_where("all(x > 0.3)", names).evaluate(unknown) is None
    assert compile_where("any(x > 0.3)", names).evaluate(unknown) is True
    none = Values({}, [])
    assert compile_where("any(x > 0)", names).evaluate(none) is False
    assert compile_where("all(x > 0)", names).evaluate(none) is False  # no captions: false


# --- names of records and scores ---------------------------------------------------------------


def test_record_and_caption_values(made):
    _, scores_path = made
    scores = read_scores(scores_path)
    assert scores.styles == ["detailed", "short"] and scores.other_rows == 1
    values = values_of(RECORDS[0], scores, "detailed")
    assert values.record["n_claims"] == 3 and values.record["n_refuted"] == 1
    assert values.record["n_supported"] == 2 and values.record["n_uncertain"] == 0
    assert values.record["width"] == 64 and values.record["error_type"] is None
    assert values.lookup("clip_score") == 0.35 and values.lookup("caption_words") == 6
    assert [c["clip_score"] for c in values.captions] == [0.35, 0.25]
    error = values_of(RECORDS[3], scores, "detailed")
    assert error.lookup("clip_score") is None and error.lookup("width") is None
    assert error.record["error_type"] == "DecodeError" and error.captions == []


def test_plain_score_names_mean_the_first_final_style_unless_style_is_given(made, tmp_path):
    assert _kept(made, tmp_path, "clip_score >= 0.3") == (["a", "b"], 0)  # final:detailed
    assert _kept(made, tmp_path, "clip_score >= 0.3", "--style", "short") == (["b"], 0)
    assert _kept(made, tmp_path, "any(clip_score >= 0.34)") == (["a"], 0)
    assert _kept(made, tmp_path, "all(clip_score >= 0.3)") == (["b"], 0)
    assert _kept(made, tmp_path, "any(caption_words >= 7 and style == 'detailed')") == (["b"], 0)
    assert _kept(made, tmp_path, "n_refuted / n_claims < 0.5") == (["a"], 0)  # c: 0/0 unknown
    assert _kept(made, tmp_path, "clip_score > 0", "--style", "alt")[1] == 2


def test_missing_values_reject_and_are_counted(made, tmp_path, capsys):
    results, scores = made
    stats = filter_records(
        results, "clip_score >= 0.3", tmp_path / "k.jsonl", tmp_path / "r.jsonl", scores
    )
    # c's score is null and e is an error record without scores: both unknown, rejected
    assert (stats.kept, stats.rejected, stats.undecided) == (2, 2, 2)
    assert stats.missing == {"clip_score": 2}
    assert _ids(tmp_path / "r.jsonl") == ["c", "e"]
    # true or unknown keeps the error record; not unknown stays unknown
    assert _kept(made, tmp_path, "status == 'error' or clip_score > 0.3")[0] == ["a", "b", "e"]
    assert _kept(made, tmp_path, "not (clip_score < 0.3)")[0] == ["a", "b"]


def test_each_condition_says_how_many_records_it_alone_rejects(made, tmp_path, capsys):
    results, scores = made
    args = ["filter", str(results), "--scores", str(scores), "-o", str(tmp_path / "k.jsonl"),
            "--where", "clip_score >= 0.3 and n_refuted <= 1 and status == 'ok'", "--quiet"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr()
    # c: unknown (null score); e: false (status), however unknown its score
    assert "kept 1 of 4 records, rejected 3 (1 of them for a missing value)" in out.out
    rows = {line.rsplit(None, 1)[0].strip(): int(line.rsplit(None, 1)[1])
            for line in out.out.splitlines()[2:5]}  # fmt: skip
    assert rows == {"clip_score >= 0.3": 2, "n_refuted <= 1": 1, "status == 'ok'": 1}
    assert "missing values: clip_score in 2" in out.out
    assert "1 kept, 3 rejected of 4 records" in out.err


def test_parquet_scores_and_unknown_score_names(made, tmp_path, capsys):
    from factcap.evaluate import ScoreWriter

    results, scores = made
    writer = ScoreWriter(tmp_path / "scores.parquet")
    writer.write([json.loads(line) for line in scores.read_text().splitlines()])
    writer.close()
    stats = filter_records(
        results, "vqa_score > 0.5 and clip_score > 0.3", tmp_path / "k.jsonl",
        scores=tmp_path / "scores.parquet",
    )  # fmt: skip
    assert stats.kept == 2
    args = ["filter", str(results), "-o", str(tmp_path / "k2.jsonl"), "--where", "clip_score > 0"]
    assert main(args) == 2
    assert "need --scores SCORES" in capsys.readouterr().err


# --- outputs ----------------------------------------------------------------------------------


def test_outputs_are_checked_before_reading(made, tmp_path, capsys):
    results, scores = made
    base = ["filter", str(results), "--where", "n_claims >= 0", "--quiet"]
    kept = tmp_path / "kept.jsonl"
    kept.write_text("precious\n")
    assert main([*base, "-o", str(kept)]) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err
    assert kept.read_text() == "precious\n"
    assert main([*base, "-o", str(results), "--overwrite"]) == 2
    assert "also an input" in capsys.readouterr().err
    assert main([*base, "--scores", str(scores), "-o", str(scores), "--overwrite"]) == 2
    assert "also an input" in capsys.readouterr().err
    same = str(tmp_path / "x.jsonl")
    assert main([*base, "-o", same, "--rejected", same]) == 2
    assert "same path" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "x.txt")]) == 2
    assert "cannot tell the output format" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([*base, "-o", str(blocker / "kept.jsonl")]) == 3  # cannot be written
    assert "cannot write" in capsys.readouterr().err
    assert main([*base, "-o", str(kept), "--overwrite"]) == 0
    assert _ids(kept) == ["a", "b", "c", "e"]


def test_the_library_checks_before_it_writes(made, tmp_path):
    results, scores = made
    with pytest.raises(UsageError, match="unknown name"):
        FilterJob(results, "nope > 1", tmp_path / "k.jsonl", scores=scores)
    assert not (tmp_path / "k.jsonl").exists()


# --- real records from the tiny preset, in every sink format ------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Three photos and one broken file captioned by the tiny preset in two styles, and
    their CLIP scores."""
    d = tmp_path_factory.mktemp("tiny")
    photos = [shutil.copy(p, d) for p in example_paths()[:3]]
    (d / "broken.jpg").write_bytes(b"not an image at all")
    results = d / "out.jsonl"
    args = ["caption", *map(str, photos), str(d / "broken.jpg"), "-o", str(results),
            "--style", "detailed", "--style", "short", "--quiet"]  # fmt: skip
    assert main(args) == 1  # the broken file fails
    scores = d / "scores.jsonl"
    args = ["evaluate", str(results), "-o", str(scores), "--metrics", "clip_score", "--quiet"]
    assert main(args) == 0
    return results, scores


def _as_format(results: Path, fmt: str, where: Path) -> Path:
    """The records of ``results`` written by the ``fmt`` sink (images found for WebDataset)."""
    from factcap.inputs import InputItem

    out = where / {"jsonl": "in.jsonl", "parquet": "in.parquet", "webdataset": "in-wds"}[fmt]
    with open_sink(out, fmt, shard_size=None if fmt == "jsonl" else 2) as sink:
        for row in read_records(results):
            item = InputItem(source=str(Path(results.parent, Path(row["source"]).name)), id="x")
            sink.write(Record.from_dict(row), item if row["status"] == "ok" else None)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "webdataset"])
def test_kept_and_rejected_are_the_input_without_duplicates(tiny, tmp_path, fmt):
    results, scores = tiny
    source = _as_format(results, fmt, tmp_path)
    names = {"jsonl": ("k.jsonl", "r.jsonl"), "parquet": ("k.parquet", "r.parquet"),
             "webdataset": ("k-wds", "r-wds")}[fmt]  # fmt: skip
    kept, rejected = tmp_path / names[0], tmp_path / names[1]
    median = sorted(r["metrics"]["clip_cosine"] for r in read_records(scores)
                    if r["caption_source"] == "final:detailed")[1]  # fmt: skip
    args = ["filter", str(source), "--scores", str(scores), "-o", str(kept), "--rejected",
            str(rejected), "--where", f"clip_cosine >= {median!r} and n_claims >= 1",
            "--quiet", "--image-root", str(results.parent)]  # fmt: skip
    if fmt == "webdataset":
        args += ["--format", "webdataset"]
    assert main(args) == 0
    inputs = list(read_records(source))
    out_kept, out_rejected = list(read_records(kept)), list(read_records(rejected))
    assert len(inputs) == 4 and 1 <= len(out_kept) <= 2 and len(out_rejected) >= 2
    ids = [r["id"] for r in out_kept + out_rejected]
    assert len(set(ids)) == len(ids)
    assert Counter(ids) == Counter(r["id"] for r in inputs)
    by_id = {r["id"]: r for r in inputs}
    for row in out_kept + out_rejected:
        assert row == by_id[row["id"]]  # every field as it was
    assert all(r["status"] == "error" for r in out_rejected if not r["captions"])
    if fmt == "webdataset":
        import tarfile

        names_in = []
        for shard in sorted(kept.glob("*.tar")):
            with tarfile.open(shard) as tar:
                names_in += tar.getnames()
        assert sum(n.endswith(".jpg") for n in names_in) == len(out_kept)  # with the photos
