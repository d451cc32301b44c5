"""``factcap study serve``: the rater web app over HTTP, and the whole study in real Chromium.

The server runs with uvicorn on 127.0.0.1 (a port the OS picks); the study directory is a
real one (images copied from factcap's example photos) with one caption that holds
``<script>`` and HTML.
"""

from __future__ import annotations

import doctest
import json
import shutil
import sqlite3
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from factcap.errors import DataError, UsageError
from factcap.examples import example_paths
from factcap.serve.app import serve_in_thread
from factcap.study import results as study_results
from factcap.study import server as server_module
from factcap.study.build import create_study
from factcap.study.server import create_app, run
from factcap.study.store import StudyStore

KEY = "study-admin-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
XSS = "<script>alert(1)</script> <b>bold</b>"
SOURCES = ["final:detailed", "proposal:tiny:blip"]
KEYS = {"left": "1", "right": "2", "same": "3"}
OTHER = {"left": "right", "right": "left"}


def _photo(name: str) -> Path:
    return next(p for p in example_paths() if p.name == name)


def make_study(root: Path, raters: int = 2) -> Path:
    """A study made by ``create_study`` from a results file of 3 real photos, comparing the
    final caption with a proposal (the ``coffee`` proposal holds :data:`XSS`); with 2 raters
    each of them judges every comparison, and one attention check: 4 assignments each."""
    captions = {
        "astronaut": ("An astronaut in a white suit before a flag.", "A woman smiling."),
        "chelsea": ("A tabby cat lying on a rug.", "A cat."),
        "coffee": ("A cup of coffee on a saucer.", XSS),
    }
    results = root / "results.jsonl"
    rows = [
        {
            "id": name,
            "source": str(_photo(f"{name}.jpg")),
            "status": "ok",
            "captions": {"detailed": final},
            "proposals": [{"model": "tiny:blip", "text": proposal}],
        }
        for name, (final, proposal) in captions.items()
    ]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    study = root / "study"
    create_study(
        [results],
        SOURCES,
        study,
        n_raters=raters,
        raters_per_item=raters,
        gold_fraction=0.25,
        seed=3,
    )
    return study


@pytest.fixture
def study(tmp_path) -> Path:
    return make_study(tmp_path)


@pytest.fixture
def served(study):
    """(base URL, store) of the study served with an API key."""
    with serve_in_thread(create_app(study, KEY)) as base:
        yield base, StudyStore.open(study)


def _tokens(store: StudyStore) -> dict[str, str]:
    return {r.label: r.token for r in store.raters()}


# ---- HTTP ----------------------------------------------------------------------------------


def test_unknown_token_is_404_and_every_answer_has_the_security_headers(served):
    base, _ = served
    page = httpx.get(f"{base}/r/not-a-token")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]
    assert "not valid" in page.text
    api = httpx.get(f"{base}/api/r/not-a-token/next")
    assert api.status_code == 404 and isinstance(api.json()["detail"], str)
    vote = httpx.post(f"{base}/api/r/x/vote", json={"assignment_id": 1, "choice": "left"})
    assert vote.status_code == 404
    for r in (page, api, vote, httpx.get(f"{base}/static/rater.js")):
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert httpx.get(f"{base}/static/../store.py").status_code == 404
    assert httpx.get(f"{base}/static/server.py").status_code == 404
    assert httpx.get(f"{base}/docs").status_code == 404  # no API docs on a public study


def test_next_sends_captions_but_never_sources(served):
    base, store = served
    token = _tokens(store)["rater-01"]
    body = httpx.get(f"{base}/api/r/{token}/next").json()
    first = store.assignments(token)[0]
    assert body["done"] == 0 and body["total"] == 4
    assert body["assignment"] == {
        "id": first.id,
        "image_url": f"/api/r/{token}/image/{first.id}",
        "left": first.left_caption,
        "right": first.right_caption,
        "position": first.position,
    }
    assert "final:" not in json.dumps(body) and "proposal" not in json.dumps(body)


def test_images_only_for_the_raters_own_assignments(served, study):
    base, store = served
    tokens = _tokens(store)
    own = store.assignments(tokens["rater-01"])[0]
    other = store.assignments(tokens["rater-02"])[0]
    r = httpx.get(f"{base}/api/r/{tokens['rater-01']}/image/{own.id}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == (study / own.image).read_bytes()
    assert httpx.get(f"{base}/api/r/{tokens['rater-01']}/image/{other.id}").status_code == 404
    assert httpx.get(f"{base}/api/r/{tokens['rater-01']}/image/999").status_code == 404
    assert httpx.get(f"{base}/api/r/nobody/image/{own.id}").status_code == 404
    assert httpx.get(f"{base}/api/r/{tokens['rater-01']}/image/..%2Fstudy.json").status_code in (
        404,
        422,
    )


def test_an_image_path_outside_the_study_folder_is_refused(tmp_path):
    d = make_study(tmp_path)
    secret = tmp_path / "secret.jpg"
    shutil.copy(_photo("rocket.jpg"), secret)
    (d / "images" / "link.jpg").symlink_to(secret)
    with sqlite3.connect(d / "study.sqlite") as db:  # a database tampered with by hand
        db.execute("UPDATE assignments SET image = '../secret.jpg' WHERE position = 0")
        db.execute("UPDATE assignments SET image = 'images/link.jpg' WHERE position = 1")
        db.execute("UPDATE assignments SET image = 'study.sqlite' WHERE position = 2")
    store = StudyStore.open(d)
    token = _tokens(store)["rater-01"]
    with serve_in_thread(create_app(d, KEY)) as base:
        for a in store.assignments(token)[:3]:
            r = httpx.get(f"{base}/api/r/{token}/image/{a.id}")
            assert r.status_code == 404, a.image
            assert "missing from the study folder" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"assignment_id": "ID", "choice": "better"}, "choice"),
        ({"assignment_id": "ID"}, "choice: Field required"),
        ({"choice": "left"}, "assignment_id"),
        ({"assignment_id": "ID", "choice": "left", "elapsed_ms": -5}, "elapsed_ms"),
        ({"assignment_id": "ID", "choice": "left", "source": "sys-a"}, "source"),
        ({"assignment_id": "x", "choice": "left"}, "assignment_id"),
    ],
)
def test_bad_vote_bodies_are_422_with_one_line(served, body, needle):
    base, store = served
    token = _tokens(store)["rater-01"]
    first = store.assignments(token)[0].id
    body = {k: first if v == "ID" else v for k, v in body.items()}
    r = httpx.post(f"{base}/api/r/{token}/vote", json=body)
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str) and needle in r.json()["detail"]
    assert store.progress(token) == (0, 4)


def test_votes_for_another_raters_item_or_twice_are_refused(served):
    base, store = served
    tokens = _tokens(store)
    mine = store.assignments(tokens["rater-01"])[0].id
    theirs = store.assignments(tokens["rater-02"])[0].id
    url = f"{base}/api/r/{tokens['rater-01']}/vote"
    ok = httpx.post(url, json={"assignment_id": mine, "choice": "left", "elapsed_ms": 1200})
    assert ok.status_code == 200 and ok.json() == {"ok": True, "done": 1, "total": 4}
    again = httpx.post(url, json={"assignment_id": mine, "choice": "right"})
    assert again.status_code == 409 and "already" in again.json()["detail"]
    forged = httpx.post(url, json={"assignment_id": theirs, "choice": "left"})
    assert forged.status_code == 403 and "not assigned" in forged.json()["detail"]
    assert httpx.post(url, json={"assignment_id": 999, "choice": "left"}).status_code == 403
    [vote] = store.votes()
    assert (vote["assignment_id"], vote["choice"], vote["origin"], vote["elapsed_ms"]) == (
        mine,
        "left",
        "web",
        1200,
    )
    assert store.progress(tokens["rater-02"]) == (0, 4)


def test_racing_votes_for_one_assignment_record_one(served):
    base, store = served
    token = _tokens(store)["rater-01"]
    first = store.assignments(token)[0].id
    url = f"{base}/api/r/{token}/vote"

    def post(choice: str) -> int:
        return httpx.post(url, json={"assignment_id": first, "choice": choice}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, ["left", "right", "same"] * 4))
    assert sorted(codes) == [200] + [409] * 11
    assert [v["assignment_id"] for v in store.votes()] == [first]


def test_oversized_or_unsized_bodies_are_refused(served):
    base, store = served
    token = _tokens(store)["rater-01"]
    url = f"{base}/api/r/{token}/vote"
    first = store.assignments(token)[0].id
    big = httpx.post(url, json={"assignment_id": first, "choice": "left", "pad": "x" * 5000})
    assert big.status_code == 413 and "body over" in big.json()["detail"]
    chunks = iter([json.dumps({"assignment_id": first, "choice": "left"}).encode()])
    unsized = httpx.post(url, content=chunks, headers={"Content-Type": "application/json"})
    assert unsized.status_code == 411
    assert store.progress(token) == (0, 4)


def test_done_answers_the_completion_code(served):
    base, store = served
    token = _tokens(store)["rater-02"]
    for a in store.assignments(token):
        store.vote(token, a.id, "same")
    assert httpx.get(f"{base}/api/r/{token}/next").json() == {
        "assignment": None,
        "done": 4,
        "total": 4,
        "completion_code": store.info["completion_code"],
    }


def test_admin_needs_the_key(served):
    base, store = served
    for url, headers in [
        ("/api/admin/progress", {}),
        ("/api/admin/progress", {"Authorization": "Bearer wrong"}),
        ("/api/admin/progress?key=wrong", {}),
        ("/admin", {}),
    ]:
        r = httpx.get(base + url, headers=headers)
        assert r.status_code == 401, url
    assert "tbody" not in httpx.get(f"{base}/admin").text
    for url, headers in [
        ("/api/admin/progress", AUTH),
        ("/api/admin/progress", {"X-API-Key": KEY}),
        (f"/api/admin/progress?key={KEY}", {}),
    ]:
        body = httpx.get(base + url, headers=headers).json()
        assert [(r["label"], r["done"], r["total"]) for r in body["raters"]] == [
            ("rater-01", 0, 4),
            ("rater-02", 0, 4),
        ]
    assert httpx.get(f"{base}/admin?key={KEY}").status_code == 200
    store.exclude(_tokens(store)["rater-02"], "returned")
    body = httpx.get(f"{base}/api/admin/progress", headers=AUTH).json()
    assert [r["excluded"] for r in body["raters"]] == [None, "returned"]


def test_without_a_key_only_loopback_host_names_are_answered(study):
    with serve_in_thread(create_app(study, None)) as base:
        assert httpx.get(f"{base}/api/admin/progress").status_code == 200
        port = base.rsplit(":", 1)[1]
        assert httpx.get(f"http://localhost:{port}/api/admin/progress").status_code == 200
        rebound = httpx.get(f"{base}/api/admin/progress", headers={"Host": "evil.example"})
        assert rebound.status_code == 421 and "loopback" in rebound.json()["detail"]


def test_start_binds_a_crowd_participant_to_one_rater_slot(tmp_path):
    d = make_study(tmp_path, raters=1)
    store = StudyStore.open(d)
    with serve_in_thread(create_app(d, KEY)) as base:
        r = httpx.get(f"{base}/start?PROLIFIC_PID=5f1a2b3c4d&STUDY_ID=s&SESSION_ID=x")
        assert r.status_code == 303
        [rater] = store.raters()
        assert r.headers["location"] == f"/r/{rater.token}" and rater.external_id == "5f1a2b3c4d"
        again = httpx.get(f"{base}/start?PROLIFIC_PID=5f1a2b3c4d")
        assert again.headers["location"] == f"/r/{rater.token}"  # comes back to the same slot
        full = httpx.get(f"{base}/start?PROLIFIC_PID=someone-else")
        assert full.status_code == 409 and "no free place" in full.text
        for bad in ("", "?PROLIFIC_PID=", "?PROLIFIC_PID=%3Cscript%3E"):
            r = httpx.get(f"{base}/start{bad}")
            assert r.status_code == 400 and "<script>" not in r.text
        first = store.assignments(rater.token)[0].id
        httpx.post(
            f"{base}/api/r/{rater.token}/vote", json={"assignment_id": first, "choice": "same"}
        )
    [vote] = store.votes()
    assert (vote["origin"], vote["worker_id"]) == ("crowd", "5f1a2b3c4d")


def test_run_refuses_to_expose_without_a_key_and_checks_its_options(study, tmp_path):
    with pytest.raises(UsageError, match="without an API key"):
        run(study, host="0.0.0.0")
    with pytest.raises(UsageError, match="--port"):
        run(study, port=70000)
    with pytest.raises(DataError, match="not a study folder"):
        run(tmp_path / "study" / "images")


def test_doctests():
    assert doctest.testmod(server_module).failed == 0


# ---- the study in Chromium -------------------------------------------------------------------


BROWSER_MS = 60_000  # the most the tests wait for the page to get somewhere (they fail after)


def _open(browser, url: str, base: str):
    """A new page at ``url``; ``problems`` collects console errors, page errors, dialogs
    (a script that should not run) and any request that leaves the study server."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("request", lambda r: r.url.startswith(base) or problems.append(f"request {r.url}"))
    page.goto(url)
    return page, problems


def _wait_ready(page, done: int, total: int) -> int:
    """Wait until the page shows ``done / total`` with an item ready to answer; its id."""
    page.wait_for_function(
        "t => document.getElementById('progress').textContent === t",
        arg=f"{done} / {total}",
        timeout=BROWSER_MS,
    )
    page.wait_for_selector("body[data-busy='0']", timeout=BROWSER_MS)
    return int(page.get_attribute("body", "data-assignment"))


def _check_screen(page, assignment) -> None:
    """The page shows this assignment's captions as text, and its image decoded."""
    assert page.text_content("#caption-left") == assignment.left_caption
    assert page.text_content("#caption-right") == assignment.right_caption
    assert page.locator("#caption-left *, #caption-right *").count() == 0  # no HTML parsed
    assert page.evaluate("() => document.getElementById('image').naturalWidth") > 0


def _forge(page, path: str, body: dict) -> tuple[int, dict]:
    return tuple(
        page.evaluate(
            "async ([p, b]) => { const r = await fetch(p, {method: 'POST',"
            " headers: {'Content-Type': 'application/json'}, body: JSON.stringify(b)});"
            " return [r.status, await r.json()]; }",
            [path, body],
        )
    )


def _choice(assignment, i: int, rater: str) -> str:
    """What the test answers: rater 1 gets the attention check right, rater 2 wrong."""
    if assignment.gold:
        return assignment.gold_answer if rater == "rater-01" else OTHER[assignment.gold_answer]
    return (["left", "right", "same"] if rater == "rater-01" else ["right", "same", "left"])[i % 3]


def test_study_end_to_end_in_chromium(browser, study):
    store = StudyStore.open(study)
    tokens = _tokens(store)
    own = {label: {a.id: a for a in store.assignments(t)} for label, t in tokens.items()}
    assert [len(a) for a in own.values()] == [4, 4]
    assert all(sum(a.gold for a in per.values()) == 1 for per in own.values())
    code = store.info["completion_code"]
    clicked: dict[int, str] = {}
    from playwright.sync_api import expect  # the browser fixture skipped without it

    with serve_in_thread(create_app(study, KEY)) as base:
        # rater 1: the mouse, and a double click that must not vote twice
        page, problems = _open(browser, f"{base}/r/{tokens['rater-01']}", base)
        # the buttons show once the page's script has loaded the first item: wait for that
        expect(page.get_by_role("button", name="About the same")).to_have_count(
            1, timeout=BROWSER_MS
        )
        for i in range(4):
            aid = _wait_ready(page, i, 4)
            assert aid in own["rater-01"] and aid not in clicked
            assignment = own["rater-01"][aid]
            _check_screen(page, assignment)
            choice = _choice(assignment, i, "rater-01")
            if i == 0:
                page.dblclick(f"#choose-{choice}")
            else:
                page.click(f"#choose-{choice}")
            clicked[aid] = choice
        page.wait_for_selector("body[data-state='done']", timeout=BROWSER_MS)
        assert page.text_content("#progress") == "4 / 4"
        assert page.text_content("#completion-code") == code
        assert store.progress(tokens["rater-01"]) == (4, 4)
        assert problems == [], problems

        # forged votes from rater 1's page: rater 2's item (403), a repeat (409)
        theirs = next(iter(own["rater-02"]))
        vote_path = f"/api/r/{tokens['rater-01']}/vote"
        # (each refusal also logs a console error, which may come after the fetch resolves)
        with page.expect_console_message(lambda m: "403" in m.text, timeout=BROWSER_MS):
            status, body = _forge(page, vote_path, {"assignment_id": theirs, "choice": "left"})
        assert status == 403 and "not assigned" in body["detail"]
        with page.expect_console_message(lambda m: "409" in m.text, timeout=BROWSER_MS):
            status, body = _forge(page, vote_path, {"assignment_id": aid, "choice": "right"})
        assert status == 409 and "already" in body["detail"]
        assert [p[-10:] for p in problems] == ["Forbidden)", "(Conflict)"]

        # rater 2: keys 1/2/3, a reload half-way, then on where it stopped
        page, problems = _open(browser, f"{base}/r/{tokens['rater-02']}", base)
        saw_xss = False
        for i in range(4):
            aid = _wait_ready(page, i, 4)
            if i == 2:  # once the last answer is in and the next item shown
                page.reload()
                assert _wait_ready(page, i, 4) == aid  # the reload came back where it stopped
            assignment = own["rater-02"][aid]
            assert assignment.position == i
            _check_screen(page, assignment)
            if XSS in (assignment.left_caption, assignment.right_caption):
                assert XSS in page.inner_text("#task")  # shown as literal text
                saw_xss = True
            choice = _choice(assignment, i, "rater-02")
            page.keyboard.press(KEYS[choice])
            clicked[aid] = choice
        page.wait_for_selector("body[data-state='done']", timeout=BROWSER_MS)
        assert saw_xss
        assert problems == [], problems  # in particular, no alert() dialog

        # the admin page: the key is needed, then per-rater progress
        admin, problems = _open(browser, f"{base}/admin", base)
        assert "API key needed" in admin.text_content("h1")
        admin.goto(f"{base}/admin?key={KEY}")
        admin.wait_for_selector("body[data-ready='1']", timeout=BROWSER_MS)
        rows = admin.locator("#raters tbody tr").evaluate_all(
            "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
        )
        assert [(r[0], r[3], r[4], r[5]) for r in rows] == [
            ("rater-01", "4 / 4", "1", "0"),
            ("rater-02", "4 / 4", "1", "1"),
        ]
        assert rows[0][1].endswith(f"/r/{tokens['rater-01']}")
        assert admin.text_content("#overall").startswith("8 / 8 answered")
        assert [p for p in problems if "401" not in p] == []

    # the SQLite file holds exactly what was clicked
    with sqlite3.connect(study / "study.sqlite") as db:
        stored = dict(db.execute("SELECT assignment_id, choice FROM votes"))
    assert stored == clicked

    # the results against a hand count: rater 2 failed the attention check and is left out;
    # rater 1's three real comparisons give the final caption's wins, ties and losses
    everyone = {aid: a for per in own.values() for aid, a in per.items()}
    final, proposal = SOURCES
    tally = Counter()
    for aid, choice in clicked.items():
        a = everyone[aid]
        if a.token == tokens["rater-01"] and not a.gold:
            chosen = {"left": a.left_source, "right": a.right_source}.get(choice, choice)
            tally[{final: "wins", "same": "ties", proposal: "losses"}[chosen]] += 1
    results = study_results.compute(store, n_resamples=200)
    assert [(r["label"], r["status"]) for r in results["raters"]] == [
        ("rater-01", "kept"),
        ("rater-02", "failed gold"),
    ]
    [pair] = results["pairs"]
    assert (pair["a"], pair["b"]) == (final, proposal)
    assert {k: pair[k] for k in ("wins", "ties", "losses")} == {
        k: tally[k] for k in ("wins", "ties", "losses")
    }
    assert pair["votes"] == 3 and pair["win_rate"] == pytest.approx(tally["wins"] / 3)
    assert results["votes"]["total"] == 8 and results["votes"]["used"] == 3
