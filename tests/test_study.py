"""factcap study: the design, the store's vote rules, results computed from the SQLite file
against a hand computation, a simulated study, and the crowd platforms' CSV files."""

from __future__ import annotations

import csv
import json
import threading
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from factcap.cli import main
from factcap.errors import DataError
from factcap.stats import percentile_interval, resample_indices
from factcap.study import crowd, results
from factcap.study.design import Item, plan
from factcap.study.simulate import simulate
from factcap.study.store import StudyFull, StudyStore, VoteRefused

SOURCES = ["final:detailed", "proposal:m1"]


def _results_file(tmp_path: Path, n: int = 12) -> Path:
    """A results JSONL with n good records, plus the cases create must skip."""
    images = tmp_path / "photos"
    images.mkdir()
    rows = []
    for i in range(n):
        Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(images / f"p{i}.png")
        rows.append(
            {
                "id": f"p{i}",
                "source": f"photos/p{i}.png",
                "status": "ok",
                "captions": {"detailed": f"Detailed caption {i}."},
                "proposals": [{"model": "m1", "text": f"proposal {i}"}],
            }
        )
    rows.append({"id": "err", "source": "photos/p0.png", "status": "error", "error": {}})
    rows.append(
        {
            "id": "gone",
            "source": "photos/none.png",
            "status": "ok",
            "captions": {"detailed": "x"},
            "proposals": [{"model": "m1", "text": "y"}],
        }
    )
    rows.append(
        {"id": "half", "source": "photos/p1.png", "status": "ok", "captions": {"detailed": "x"}}
    )
    rows.append(
        {
            "id": "mesh",
            "kind": "asset",
            "source": "chair.glb",
            "status": "ok",
            "views": [{"name": "front"}],
            "captions": {"detailed": "a chair"},
            "proposals": [{"model": "m1", "text": "chair"}],
        }
    )
    path = tmp_path / "out.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _create(tmp_path: Path, *extra: str) -> Path:
    results_path = _results_file(tmp_path)
    study_dir = tmp_path / "study"
    argv = ["study", "create", str(results_path), "--compare", ",".join(SOURCES)]
    argv += ["-o", str(study_dir), "--raters-per-item", "2", "--raters", "3", *extra]
    assert main(argv) == 0
    return study_dir


# -- create and the design ---------------------------------------------------------------


def test_create_builds_a_study_folder(tmp_path, capsys):
    study_dir = _create(tmp_path, "--gold-fraction", "0.2", "--items", "10")
    out, err = capsys.readouterr()
    assert "10 items (of 12 usable" in err
    assert "1 whose image was not found" in err and "1 3D assets without a saved view" in err
    assert "1 without every compared source" in err
    info = json.loads((study_dir / "study.json").read_text())
    assert info["sources"] == SOURCES and info["pairs"] == [SOURCES]
    assert len(info["items"]) == 10 and info["completion_code"]
    for item in info["items"]:
        assert (study_dir / item["image"]).is_file()
        assert set(item["captions"]) == set(SOURCES)
    with (study_dir / "raters.csv").open() as handle:
        raters = list(csv.DictReader(handle))
    assert [r["label"] for r in raters] == ["rater-01", "rater-02", "rater-03"]
    assert all(r["url"] == f"http://127.0.0.1:8300/r/{r['token']}" for r in raters)
    assert all(r["url"] in out for r in raters)
    store = StudyStore.open(study_dir)
    total = sum(len(store.assignments(r.token)) for r in store.raters())
    assert total == (10 + round(0.25 * 10)) * 2  # (real + gold units) x K

    # an existing study is not replaced without --overwrite; a bad source is one line
    argv = ["study", "create", str(tmp_path / "out.jsonl"), "--compare", ",".join(SOURCES)]
    assert main([*argv, "-o", str(study_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "-o", str(study_dir), "--overwrite", "--seed", "3"]) == 0
    bad = ["study", "create", str(tmp_path / "out.jsonl"), "--compare", "final:detailed,nope"]
    assert main([*bad, "-o", str(tmp_path / "s2")]) == 2
    assert "no caption source 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("n_items", "n_sources", "raters", "k", "gold"),
    [(10, 2, 3, 2, 0.2), (7, 3, 5, 3, 0.1), (5, 2, 2, 2, 0.0), (9, 4, 7, 1, 0.3)],
)
def test_design_is_balanced_and_deterministic(n_items, n_sources, raters, k, gold):
    sources = [f"s{i}" for i in range(n_sources)]
    items = [
        Item(f"i{n}", f"images/i{n}.jpg", {s: f"{s} says {n}" for s in sources})
        for n in range(n_items)
    ]
    design = plan(items, sources, raters, k, gold, seed=5)
    assert design == plan(items, sources, raters, k, gold, seed=5)
    assert design != plan(items, sources, raters, k, gold, seed=6)
    who = defaultdict(list)
    for label, assignments in design.raters:
        for a in assignments:
            unit = (a["item_id"], a["pair"], frozenset((a["left_caption"], a["right_caption"])))
            who[unit].append(label)
    assert all(len(v) == k and len(set(v)) == k for v in who.values())  # K distinct raters
    n_pairs = n_sources * (n_sources - 1) // 2
    assert design.real_units == n_items * n_pairs
    assert design.gold_units == round(gold / (1 - gold) * n_items * n_pairs)
    loads = [len(a) for _, a in design.raters]
    gold_loads = [sum(x["gold"] for x in a) for _, a in design.raters]
    assert max(loads) - min(loads) <= 1 and max(gold_loads) - min(gold_loads) <= 1
    by_id = {i.item_id: i for i in items}
    sides = Counter()
    for _, assignments in design.raters:
        for a in assignments:
            sides[a["left_source"]] += 1
            if a["gold"]:  # the gold answer is the side of the image's own caption
                own = a[f"{a['gold_answer']}_caption"]
                other = a["right_caption" if a["gold_answer"] == "left" else "left_caption"]
                assert own == by_id[a["item_id"]].captions[a["left_source"]]
                assert other != own
            else:
                assert a["left_caption"] == by_id[a["item_id"]].captions[a["left_source"]]
    assert len([s for s in sources if sides[s]]) >= 2  # both sides get both sources


# -- the store ---------------------------------------------------------------------------


def _hand_study(tmp_path: Path) -> StudyStore:
    """Three raters, three items x one pair (A|B) and one gold each; sides set by hand."""

    def a(item, left, right, gold_answer=None):
        caps = {"A": f"A on {item}", "B": f"B on {item}", "own": "own", "other": "other"}
        return {
            "item_id": item,
            "pair": "gold" if gold_answer else "A|B",
            "left_source": "A" if gold_answer else left,
            "right_source": "A" if gold_answer else right,
            "left_caption": caps[left],
            "right_caption": caps[right],
            "image": f"images/{item}.png",
            "gold": bool(gold_answer),
            "gold_answer": gold_answer,
        }

    plan_ = [
        ("r1", [a("x", "B", "A"), a("y", "A", "B"), a("z", "A", "B"), a("x", "own", "other", "left")]),
        ("r2", [a("x", "A", "B"), a("y", "B", "A"), a("z", "B", "A"), a("y", "other", "own", "right")]),
        ("r3", [a("x", "A", "B"), a("y", "A", "B"), a("z", "B", "A"), a("z", "own", "other", "left")]),
    ]  # fmt: skip
    info = {"version": 1, "sources": ["A", "B"], "pairs": [["A", "B"]], "items": []}
    return StudyStore.create(tmp_path / "hand", info, plan_)


def test_votes_are_refused_by_the_rules(tmp_path):
    store = _hand_study(tmp_path)
    r1, r2, _ = store.raters()
    mine, theirs = store.assignments(r1.token)[0], store.assignments(r2.token)[0]
    store.vote(r1.token, mine.id, "left", elapsed_ms=1200)
    cases = [
        (r1.token, mine.id, "right", 409),  # a second vote
        (r1.token, theirs.id, "left", 403),  # another rater's assignment
        ("no-such-token", mine.id, "left", 403),
        (r1.token, 99999, "left", 403),
        (r1.token, store.assignments(r1.token)[1].id, "both", 422),
    ]
    for token, aid, choice, status in cases:
        with pytest.raises(VoteRefused) as caught:
            store.vote(token, aid, choice)
        assert caught.value.http_status == status, (token, aid, choice)
    assert store.assignment(mine.id).choice == "left"
    assert store.progress(r1.token) == (1, 4)
    assert store.next_assignment(r1.token).position == 1


def test_a_racing_second_vote_is_refused(tmp_path):
    store = _hand_study(tmp_path)
    rater = store.raters()[0]
    target = store.assignments(rater.token)[2].id
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def cast(choice: str) -> None:
        start.wait()
        try:
            StudyStore.open(store.dir).vote(rater.token, target, choice)
            outcomes.append("ok")
        except VoteRefused as err:
            outcomes.append(str(err.http_status))

    threads = [threading.Thread(target=cast, args=(c,)) for c in ["left", "right"] * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["409"] * 7 + ["ok"]
    assert len([v for v in store.votes() if v["assignment_id"] == target]) == 1


def test_claim_binds_free_slots_once(tmp_path):
    store = _hand_study(tmp_path)
    first = store.claim("P1")
    assert store.claim("P1") == first and first.external_id == "P1"
    store.vote(store.raters()[1].token, store.assignments(store.raters()[1].token)[0].id, "left")
    third = store.claim("P2")  # the rater who already voted by link is not handed out
    assert third.token == store.raters()[2].token
    with pytest.raises(StudyFull):
        store.claim("P3")
    with pytest.raises(DataError, match="not a study folder"):
        StudyStore.open(tmp_path)


# -- results against a hand computation --------------------------------------------------


def _cast_hand_votes(store: StudyStore) -> None:
    r1, r2, r3 = store.raters()
    votes = {  # (rater, position) -> choice; A's side per the plan in _hand_study
        (r1, 0): "right",  # x: A
        (r1, 1): "left",  # y: A
        (r1, 2): "same",  # z: same
        (r1, 3): "left",  # gold right
        (r2, 0): "left",  # x: A
        (r2, 1): "left",  # y: B
        (r2, 3): "right",  # gold right (z not voted)
        (r3, 0): "right",  # x: B
        (r3, 1): "right",  # y: B
        (r3, 2): "left",  # z: B
        (r3, 3): "right",  # gold wrong -> r3 excluded
    }
    for (rater, position), choice in votes.items():
        store.vote(rater.token, store.assignments(rater.token)[position].id, choice)


def test_results_from_the_sqlite_file_match_a_hand_computation(tmp_path, capsys):
    store = _hand_study(tmp_path)
    _cast_hand_votes(store)
    found = results.compute(StudyStore.open(store.dir), gold_threshold=0.8, n_resamples=500)
    # kept: r1, r2 (gold 1/1 each); r3 failed its gold item and is out.
    assert found["raters_excluded"] == ["r3"]
    status = {
        r["label"]: (r["gold_correct"], r["gold_answered"], r["status"]) for r in found["raters"]
    }
    assert status == {"r1": (1, 1, "kept"), "r2": (1, 1, "kept"), "r3": (0, 1, "failed gold")}
    (pair,) = found["pairs"]
    # x: A, A; y: A, B; z: same  ->  A wins 3, ties 1, loses 1 of 5
    assert (pair["wins"], pair["ties"], pair["losses"], pair["votes"], pair["items"]) == (
        3,
        1,
        1,
        5,
        3,
    )
    assert pair["win_rate"] == pytest.approx(0.6) and pair["tie_rate"] == pytest.approx(0.2)
    # the interval: resample items (x, y, z) with replacement, pool their votes
    per_item = np.array([[2, 0, 0], [1, 0, 1], [0, 1, 0]], dtype=float)
    sums = per_item[resample_indices(3, 500, 0)].sum(axis=1)
    expected = percentile_interval([s[0] / s.sum() for s in sums])
    assert pair["ci95"]["win_rate"] == pytest.approx(list(expected))
    low, high = pair["ci95"]["win_rate"]
    assert low <= 0.6 <= high
    # agreement: units x (A, A), y (A, B) -> o_AA = 2, o_AB = o_BA = 1; n_A = 3, n_B = 1,
    # n = 4; alpha = 1 - (n - 1) * 2 / (2 * n_A * n_B) = 1 - 3 * 2 / 6 = 0
    assert found["agreement"]["units"] == 2
    assert found["agreement"]["krippendorff_alpha"] == pytest.approx(0.0)
    assert found["bradley_terry"] is None  # two sources: the win rate says it all
    # a lower threshold keeps r3: z gets B from r3, x gets B, y gets B
    lax = results.compute(store, gold_threshold=0.0, n_resamples=100)
    assert (lax["pairs"][0]["wins"], lax["pairs"][0]["losses"]) == (3, 4)

    # the command: the same numbers as JSON, and a table
    out_json = tmp_path / "r.json"
    assert main(["study", "results", str(store.dir), "--json", "-o", str(out_json)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["pairs"][0]["wins"] == 3 and json.loads(out_json.read_text()) == printed
    assert main(["study", "results", str(store.dir), "-o", str(out_json)]) == 2  # exists
    assert main(["study", "results", str(store.dir)]) == 0
    table = capsys.readouterr().out
    assert "0.600 [" in table and "failed gold" in table and "excluded: r3" in table


def test_three_sources_get_bradley_terry_strengths(tmp_path):
    sources = ["A", "B", "C"]
    items = [Item(f"i{n}", f"images/i{n}.png", {s: f"{s}{n}" for s in sources}) for n in range(30)]
    design = plan(items, sources, 3, 3, 0.0, seed=1)
    info = {"sources": sources, "pairs": [list(p) for p in design.pairs]}
    store = StudyStore.create(tmp_path / "s3", info, design.raters)
    simulate(store, {"A|B": (0.8, 0.0), "A|C": (0.8, 0.0), "B|C": (0.8, 0.0)}, seed=2)
    found = results.compute(store, n_resamples=200)
    strengths = found["bradley_terry"]["strengths"]
    assert sum(strengths.values()) == pytest.approx(1.0)
    assert strengths["A"] > strengths["B"] > strengths["C"]


def test_a_simulated_study_recovers_the_preference(tmp_path):
    """Scripted raters prefer A 70 % of the time (10 % ties); one careless rater answers at
    random and fails the gold items; the recovered win rate's interval covers 0.7."""
    items = [Item(f"i{n}", f"images/i{n}.png", {"A": f"a{n}", "B": f"b{n}"}) for n in range(200)]
    design = plan(items, ["A", "B"], n_raters=5, raters_per_item=3, gold_fraction=0.1, seed=0)
    store = StudyStore.create(
        tmp_path / "sim", {"sources": ["A", "B"], "pairs": [["A", "B"]]}, design.raters
    )
    simulate(store, {"A|B": (0.7, 0.1)}, careless=["rater-04"], seed=0)
    found = results.compute(store)
    assert found["raters_excluded"] == ["rater-04"]
    (pair,) = found["pairs"]
    low, high = pair["ci95"]["win_rate"]
    assert low < 0.7 < high and high - low < 0.12
    tie_low, tie_high = pair["ci95"]["tie_rate"]
    assert tie_low < 0.1 < tie_high


# -- crowd platforms ---------------------------------------------------------------------


def test_mturk_export_and_import(tmp_path, capsys):
    study_dir = _create(tmp_path, "--gold-fraction", "0.2")
    hits = tmp_path / "hits.csv"
    argv = ["study", "export-crowd", str(study_dir), "--platform", "mturk", "-o", str(hits)]
    assert main([*argv, "--base-url", "https://cdn.example.org/s1/"]) == 0
    layout = (tmp_path / "mturk_layout.html").read_text()
    assert "${caption_left}" in layout and 'name="choice"' in layout and "<crowd-form" in layout
    with hits.open() as handle:
        rows = list(csv.DictReader(handle))
    store = StudyStore.open(study_dir)
    assert len(rows) == 12 + 3  # one HIT per comparison unit (12 items x 1 pair + gold)
    assert all(r["image_url"].startswith("https://cdn.example.org/s1/images/") for r in rows)
    assert main(argv) == 2  # exists

    # a results file as MTurk writes it: W1 prefers the detailed caption, W2 the proposal
    # and fails every gold item; one rejected assignment; one row repeated
    out_rows = []
    for n, row in enumerate(rows):
        template = store.assignment(int(row["hit_key"]))
        for worker in ("W1", "W2"):
            if template.gold:
                right = template.gold_answer
                choice = right if worker == "W1" else ("left" if right == "right" else "right")
            else:
                wanted = SOURCES[0] if worker == "W1" else SOURCES[1]
                choice = "left" if template.left_source == wanted else "right"
            out_rows.append(
                {
                    "HITId": f"H{n}",
                    "AssignmentId": f"A{n}{worker}",
                    "WorkerId": worker,
                    "AssignmentStatus": "Approved",
                    "Input.hit_key": row["hit_key"],
                    "Input.caption_left": row["caption_left"],
                    "Answer.choice": choice,
                }
            )
    out_rows.append(
        {**out_rows[0], "AssignmentId": "R", "WorkerId": "W3", "AssignmentStatus": "Rejected"}
    )
    out_rows.append(dict(out_rows[1]))
    batch = tmp_path / "Batch_1_batch_results.csv"
    with batch.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, list(out_rows[0]))
        writer.writeheader()
        writer.writerows(out_rows)
    assert main(["study", "import-crowd", str(study_dir), str(batch), "--platform", "mturk"]) == 0
    assert (
        "30 votes recorded from 2 workers, 1 already recorded, 1 rejected"
        in capsys.readouterr().err
    )
    assert main(["study", "import-crowd", str(study_dir), str(batch)]) == 0  # again: nothing new
    assert "0 votes recorded" in capsys.readouterr().err
    votes = [v for v in store.votes() if v["origin"] == "crowd"]
    assert len(votes) == 30 and {v["worker_id"] for v in votes} == {"W1", "W2"}
    found = results.compute(store, n_resamples=200)
    assert found["raters_excluded"] == ["mturk:W2"]
    assert (found["pairs"][0]["wins"], found["pairs"][0]["losses"]) == (12, 0)

    bad = tmp_path / "bad.csv"
    bad.write_text("HITId,WorkerId\nH1,W1\n")
    assert main(["study", "import-crowd", str(study_dir), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "AssignmentId" in err and "Answer.choice" in err and "Traceback" not in err


def test_prolific_export_and_import(tmp_path, capsys):
    study_dir = _create(tmp_path)
    out = tmp_path / "prolific.csv"
    argv = ["study", "export-crowd", str(study_dir), "--platform", "prolific", "-o", str(out)]
    assert main([*argv, "--base-url", "https://study.example.org"]) == 0
    with out.open() as handle:
        (row,) = list(csv.DictReader(handle))
    store = StudyStore.open(study_dir)
    assert row["study_url"] == (
        "https://study.example.org/start?PROLIFIC_PID={{%PROLIFIC_PID%}}"
        "&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
    )
    assert row["completion_code"] == store.info["completion_code"] and row["places"] == "3"
    assert store.info["completion_code"] in capsys.readouterr().err

    for pid in ("P1", "P2"):
        rater = store.claim(pid)
        for a in store.assignments(rater.token):
            store.vote(rater.token, a.id, "left" if not a.gold else a.gold_answer)
    export = tmp_path / "prolific_export.csv"
    export.write_text(
        "Submission id,Participant id,Status\ns1,P1,APPROVED\ns2,P2,RETURNED\ns3,P9,TIMED-OUT\n"
    )
    assert (
        main(["study", "import-crowd", str(study_dir), str(export), "--platform", "prolific"]) == 0
    )
    assert "1 excluded, 1 never opened" in capsys.readouterr().err
    excluded = {v["external_id"] for v in store.votes() if v["excluded"]}
    assert excluded == {"P2"}
    found = results.compute(store, n_resamples=100)
    p1 = store.rater_by_external_id("P1")
    assert found["votes"]["used"] == sum(not a.gold for a in store.assignments(p1.token))
    assert "excluded by platform: Prolific RETURNED" in str(found["raters"])

    bad = tmp_path / "bad.csv"
    bad.write_text("id,state\n1,x\n")
    with pytest.raises(DataError, match="Participant id, Status"):
        crowd.import_prolific(store, bad)


def test_serve_checks_the_study_folder_first(tmp_path, capsys):
    assert main(["study", "serve", str(tmp_path)]) == 2
    assert "not a study folder" in capsys.readouterr().err
    assert main(["study", "serve", str(tmp_path), "--port", "0"]) == 2


def test_the_html_report_shows_the_study(tmp_path, capsys):
    study_dir = _create(tmp_path)
    store = StudyStore.open(study_dir)
    simulate(store, {"|".join(SOURCES): (0.7, 0.1)}, seed=1)
    page = tmp_path / "report.html"
    argv = ["report", str(tmp_path / "out.jsonl"), "-o", str(page), "--study", str(study_dir)]
    assert main(argv) == 0
    text = page.read_text()
    found = results.compute(store)
    win = found["pairs"][0]["win_rate"]
    assert '<section id="study">' in text and f"{win:.3f} [" in text
    saved = tmp_path / "study.json"
    assert main(["study", "results", str(study_dir), "-o", str(saved)]) == 0
    assert main([*argv[:3], str(tmp_path / "r2.html"), "--study", str(saved)]) == 0
    assert f"{win:.3f} [" in (tmp_path / "r2.html").read_text()
    bad = tmp_path / "nope.json"
    bad.write_text("[]")
    capsys.readouterr()
    assert main([*argv[:3], str(tmp_path / "r3.html"), "--study", str(bad)]) == 2
    assert "not a study results JSON" in capsys.readouterr().err
