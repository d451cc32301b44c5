"""The evaluate job: samples from results, references, outputs, summary, table, CLI."""

from __future__ import annotations

import json
import math
import re

import pytest

from factcap.engine.records import read_jsonl
from factcap.errors import ConfigError, DataError, NotFound
from factcap.evaluate import (
    build_samples,
    evaluate,
    read_references,
    table,
    write_rows,
)
from factcap.examples import example_paths
from factcap.metrics import Metric, Sample, Score
from factcap.metrics.resources import Resources
from factcap.metrics.vqa_score import VQAScore, vqa_question

ROWS = [
    {
        "id": "a",
        "source": "dir/a.jpg",
        "status": "ok",
        "captions": {"detailed": "A cat.", "short": "Cat."},
        "proposals": [
            {"model": "m1", "text": "a cat"},
            {"model": "rapidocr", "text": 'Text visible in the image: "X".'},
        ],
        "models": {"ocr": "rapidocr"},
        "claims": [{"kind": "object", "subject": "cat"}],
    },
    {"id": "b", "source": "dir/b.jpg", "status": "error", "captions": {}},
    {"id": "c", "source": "dir/c.jpg", "captions": {"detailed": "A dog."}},
]


def test_samples_per_caption_source():
    samples = build_samples(ROWS, "all", {}, {})
    assert [(s.id, s.caption_source) for s in samples] == [
        ("a", "final:detailed"),
        ("a", "final:short"),
        ("a", "proposal:m1"),
        ("c", "final:detailed"),
    ]
    assert samples[0].claims == ROWS[0]["claims"]
    assert [s.caption_source for s in build_samples(ROWS, "proposals", {}, {})] == ["proposal:m1"]
    with pytest.raises(ConfigError):
        build_samples(ROWS, "everything", {}, {})


def test_references_from_jsonl_and_coco(tmp_path):
    jsonl = tmp_path / "refs.jsonl"
    jsonl.write_text(json.dumps({"id": "a", "references": ["a cat"], "objects": ["cat"]}) + "\n")
    refs = read_references(jsonl)
    [sample, *_] = build_samples(ROWS, "final", refs, {})
    assert sample.references == ["a cat"] and sample.objects == ["cat"]

    coco = tmp_path / "captions.json"
    coco.write_text(
        json.dumps(
            {
                "images": [{"id": 7, "file_name": "c.jpg"}],
                "annotations": [
                    {"image_id": 7, "caption": "a dog"},
                    {"image_id": 7, "caption": "dog"},
                ],
            }
        )
    )
    samples = build_samples(ROWS, "final", read_references(coco), {})
    assert samples[-1].id == "c" and samples[-1].references == ["a dog", "dog"]
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    with pytest.raises(ConfigError, match="not a COCO captions file"):
        read_references(bad)


def test_read_jsonl_errors_are_clear(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 1}\nnot json\n')
    with pytest.raises(DataError, match="r.jsonl:2"):
        list(read_jsonl(path))
    with pytest.raises(NotFound, match="no such file"):
        list(read_jsonl(tmp_path / "missing.jsonl"))


class Length(Metric):
    """A trivial metric with a corpus value, to test the job's bookkeeping."""

    name = "length"
    value_names = ("length",)

    def score(self, samples, resources):
        return [
            Score({"length": float(len(s.caption))})
            if s.caption != "A dog."
            else Score.failed(self.value_names, "dogs are not measured")
            for s in samples
        ]

    def corpus(self, samples, scores):
        return {"length": 99.0}


def test_job_keeps_per_item_scores_failures_and_corpus_values(tmp_path):
    samples = build_samples(ROWS, "final", {}, {})
    result = evaluate(samples, [Length()], Resources({}))
    rows = list(result.rows())
    assert rows[0] == {
        "id": "a",
        "caption_source": "final:detailed",
        "metrics": {"length": 6.0},
        "failures": {},
    }
    assert rows[-1]["metrics"] == {"length": None}
    assert rows[-1]["failures"] == {"length": "dogs are not measured"}
    stats = result.summary["final:detailed"]["length"]
    assert (stats["mean"], stats["n"], stats["n_failed"], stats["corpus"]) == (6.0, 1, 1, 99.0)
    summary_path = write_rows(result, tmp_path / "scores.jsonl")
    assert summary_path.name == "scores.summary.json"
    assert json.loads(summary_path.read_text())["final:short"]["length"]["mean"] == 4.0
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == 3
    text = table(result.summary)
    assert "final:detailed" in text and "99.0000" in text


def test_parquet_output(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    samples = [Sample(id="a", source="a.jpg", caption_source="final:detailed", caption="x")]
    result = evaluate(samples, ["vqa_score"], Resources({}))  # no VQA model: a failure
    write_rows(result, tmp_path / "s.parquet")
    table_ = pq.read_table(tmp_path / "s.parquet").to_pylist()
    assert table_[0]["id"] == "a" and math.isnan(table_[0]["m.vqa_score"] or math.nan)
    assert "no vqa model" in json.loads(table_[0]["failures"])["vqa_score"]


def test_vqa_question_quotes_the_caption():
    assert vqa_question('a "big"  dog') == "Does this figure show \"a 'big' dog\"?"


class FixedVQA:
    name = "fixed"

    def __init__(self, p):
        self.p, self.calls = p, []

    def yes_probability(self, images, questions):
        self.calls.append(list(questions))
        return [self.p] * len(questions)


def test_vqa_score_batches_and_reports_failures(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnope")
    photo = str(example_paths()[0])
    samples = [
        Sample(id=str(i), source=src, caption_source="final:detailed", caption=cap)
        for i, (src, cap) in enumerate(
            [(photo, "A cat."), (str(broken), "A cat."), (photo, "  "), (photo, "A dog.")]
        )
    ]
    vqa = FixedVQA(0.7)
    scores = VQAScore().score(samples, Resources({"vqa": lambda: vqa}, batch_size=8))
    assert [s.values["vqa_score"] for s in scores][::3] == [0.7, 0.7]
    assert "CorruptImage" in scores[1].failure and scores[2].failure == "empty caption"
    assert len(vqa.calls) == 1 and len(vqa.calls[0]) == 2
    nan = VQAScore().score(samples[:1], Resources({"vqa": lambda: FixedVQA(float("nan"))}))
    assert math.isnan(nan[0].values["vqa_score"]) and "no yes/no answer" in nan[0].failure


ALL_METRICS = (
    "clip_score,clip_image_score,vqa_score,capture,chair,self_retrieval,bleu,rouge_l,cider"
)


@pytest.mark.slow
def test_evaluate_cli_scores_every_metric_for_every_caption_source(tmp_path, capsys):
    from factcap.cli import main
    from factcap.metrics import build

    results = tmp_path / "out.jsonl"
    photos = [str(p) for p in example_paths()[:3]]
    assert main(["caption", *photos, "-o", str(results), "--quiet"]) == 0
    records = [json.loads(line) for line in results.read_text().splitlines()]
    refs = tmp_path / "refs.jsonl"
    refs.write_text(
        "".join(
            json.dumps(
                {
                    "id": r["id"],
                    "references": ["a photo of a cat on a sofa", "a cat"],
                    "objects": ["cat", "couch"],
                }
            )
            + "\n"
            for r in records
        )
    )
    scores = tmp_path / "scores.jsonl"
    args = [
        "evaluate",
        str(results),
        "-o",
        str(scores),
        "--metrics",
        ALL_METRICS,
        "--references",
        str(refs),
        "--source",
        "all",
        "--quiet",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    sources = {"final:detailed", "proposal:tiny:blip", "proposal:tiny:chat_vlm"}
    assert {r["caption_source"] for r in rows} == sources
    assert len(rows) == 3 * len(sources)
    metrics = [build(m) for m in ALL_METRICS.split(",")]
    names = [v for metric in metrics for v in metric.value_names]
    summary = json.loads((tmp_path / "scores.summary.json").read_text())
    chair = next(m for m in metrics if m.name == "chair")
    for row in rows:
        assert set(row["metrics"]) == set(names)
        # every caption is scored by every metric, except for two values that cannot be
        assert set(row["failures"]) <= {"chair", "self_retrieval"}, row["failures"]
        missing = {name for name, value in row["metrics"].items() if value is None}
        # three images: recall@5 cannot be measured, and says so
        assert "self_retrieval_r5" in missing
        assert "recall@5" in row["failures"]["self_retrieval"]
        # CHAIR's per-object rates need a COCO object in the caption (random words may name
        # none): each value left out is named with its reason, and only those
        named = set(re.findall(r"(?:^|; )(\w+): ", row["failures"].get("chair", "")))
        assert missing - {"self_retrieval_r5"} == named <= set(chair.value_names) - {"chair_s"}
    for source in sources:
        for name in names:
            assert name in summary[source]
    for name in ("clip_score", "clip_image_score", "vqa_score", "capture", "bleu_1", "cider"):
        assert summary["final:detailed"][name]["n"] == 3, name
        assert name in out
    # recall@5 over 3 images has no row, one note; the summary JSON still holds it
    assert "self_retrieval_r5: needs more than 5 images to rank (the gallery has 3)" in out
    assert "n/a (n=0" not in out and out.count("self_retrieval_r5") == 1
    # every proposal against the final caption, paired over the 3 images
    differences = summary["significance"]["differences"]
    assert summary["significance"]["baseline"] == "final:detailed"
    assert set(differences) == sources - {"final:detailed"}
    assert differences["proposal:tiny:blip"]["clip_score"]["n"] == 3
    assert "difference from final:detailed (paired over images, 95% bootstrap CI" in out


def test_rows_are_written_as_each_caption_source_is_done(tmp_path):
    """A failure after the first caption source keeps the rows already done."""
    from factcap.evaluate import ScoreWriter

    class DiesOnProposals(Length):
        def score(self, samples, resources):
            if samples[0].caption_source.startswith("proposal:"):
                raise KeyboardInterrupt  # the process is stopped half-way
            return super().score(samples, resources)

    samples = build_samples(ROWS, "all", {}, {})
    writer = ScoreWriter(tmp_path / "scores.jsonl")
    with pytest.raises(KeyboardInterrupt):
        evaluate(samples, [DiesOnProposals()], Resources({}), on_rows=writer.write)
    writer.close()
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert rows and {r["caption_source"] for r in rows} <= {"final:detailed", "final:short"}
    assert len(rows) == sum(s.caption_source.startswith("final:") for s in samples)


class NeedsReferences(Metric):
    """Fails every sample, as a reference metric does when none are given."""

    name = "refs"
    value_names = ("refs",)
    needs = frozenset({"references"})

    def score(self, samples, resources):
        return [Score.failed(self.value_names, "no references") for _ in samples]


def _table_lines(text: str) -> list[str]:
    """The value names of the table's rows (not of the notes under it)."""
    lines = text.split("\nnot computed:")[0].splitlines()
    return [line.split()[0] for line in lines[2:]] if lines and lines[0].startswith("value") else []


def test_table_leaves_out_values_the_inputs_cannot_give_and_says_what_they_need(tmp_path):
    from factcap.metrics.chair import Chair

    samples = build_samples(ROWS, "final", {}, {})  # no references, no object lists
    result = evaluate(samples, [Chair(), NeedsReferences()], Resources({}))
    assert result.unavailable == {
        "chair_s": '--references with ground-truth "objects" (or COCO instances)',
        "chair_i": '--references with ground-truth "objects" (or COCO instances)',
        "refs": "--references (reference captions)",
    }
    text = table(result.summary, result.unavailable)
    rows = _table_lines(text)
    assert "chair_s" not in rows and "chair_i" not in rows and "refs" not in rows
    assert "chair_ov_i" in rows  # checked against the pipeline's claims: needs no references
    assert text.count("chair_s, chair_i") == 1
    assert 'chair_s, chair_i: need --references with ground-truth "objects"' in text
    assert "refs: needs --references (reference captions)" in text
    summary = json.loads(write_rows(result, tmp_path / "s.jsonl").read_text())
    assert summary["final:detailed"]["chair_s"]["n_failed"] == 2  # the JSON keeps every value
    assert summary["final:detailed"]["refs"]["n"] == 0


def test_values_that_failed_for_another_reason_keep_their_row():
    samples = build_samples(ROWS, "final", {}, {})
    for sample in samples:  # the references are there: the metric failed on its own
        sample.references, sample.objects = ["A cat."], ["cat"]
    result = evaluate(samples, [NeedsReferences()], Resources({}))
    assert result.unavailable == {}
    text = table(result.summary, result.unavailable)
    assert _table_lines(text) == ["refs"] and "n/a (n=0, 2 failed)" in text
    assert "not computed" not in text


def test_recall_at_k_without_enough_images_is_left_out_with_the_gallery_size():
    from factcap.evaluate import unavailable_values

    def summary(n_r1: int, gallery: float) -> dict:
        stats = {
            "self_retrieval_r1": {"mean": 1.0 if n_r1 else math.nan, "n": n_r1, "n_failed": 0},
            "self_retrieval_r5": {"mean": math.nan, "n": 0, "n_failed": 3},
            "self_retrieval_gallery_size": {"corpus": gallery},
        }
        return {"final:detailed": stats}

    three = summary(3, 3.0)
    assert unavailable_values([], [], three) == {
        "self_retrieval_r5": "more than 5 images to rank (the gallery has 3)"
    }
    text = table(three, unavailable_values([], [], three))
    assert _table_lines(text) == ["self_retrieval_r1", "self_retrieval_gallery_size"]
    assert text.splitlines()[3].split() == ["self_retrieval_gallery_size", "3"]
    assert text.endswith(
        "not computed: self_retrieval_r5: needs more than 5 images to rank (the gallery has 3)"
    )
    one = summary(0, 1.0)
    gaps = unavailable_values([], [], one)
    assert gaps == {
        "self_retrieval_r1": "more than 1 image to rank (the gallery has 1)",
        "self_retrieval_r5": "more than 5 images to rank (the gallery has 1)",
        "self_retrieval_gallery_size": "",
    }
    text = table(one, gaps)
    assert "value" not in text  # no row left: only the notes
    assert text.splitlines() == [
        "not computed:",
        "  self_retrieval_r1: needs more than 1 image to rank (the gallery has 1)",
        "  self_retrieval_r5: needs more than 5 images to rank (the gallery has 1)",
    ]
