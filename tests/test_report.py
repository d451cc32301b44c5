"""``factcap report``: the HTML text (self-contained, escaped) and the page in real Chromium."""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from factcap.cli.report import run as cmd_report
from factcap.errors import ConfigError, DataError, NotFound
from factcap.examples import example_paths
from factcap.images import decode
from factcap.report import build_report, write_report
from factcap.report.html import _csp_hash

XSS_CAPTION = 'A cat. <script>alert(1)</script> </script><img src=x onerror="alert(2)">'
XSS_SOURCE = "<img src=y onerror=alert(3)>.jpg"
ASTRONAUT_BOX = [120.0, 40.0, 380.0, 500.0]


def _photo(name: str) -> Path:
    return next(p for p in example_paths() if p.name == name)


def _size(path: Path) -> list[int]:
    d = decode(path)
    return [d.width, d.height]


def _claim(kind, text, subject, verdict, score, boxes=(), count=None, **evidence):
    if kind in ("object", "count"):
        evidence["detector_boxes"] = [{"box": list(b), "score": 0.8} for b in boxes]
        evidence["detected_count"] = len(boxes)
    return {
        "kind": kind,
        "text": text,
        "subject": subject,
        "question": "",
        "count": count,
        "verdict": verdict,
        "score": score,
        "evidence": evidence,
    }


def _record(rid, source, path, proposals, claims, captions):
    return {
        "id": rid,
        "source": source,
        "status": "ok",
        "proposals": [{"model": m, "text": t} for m, t in proposals],
        "claims": claims,
        "captions": captions,
        "removed": [c["text"] for c in claims if c["verdict"] == "refuted"],
        "notes": [],
        "error": None,
        "timings_ms": {"decode": 3.0},
        "models": {"captioners": ["tiny:blip", "tiny:git"]},
        "image_size": _size(path),
    }


def _error(rid, source, type_, message):
    return {
        "id": rid,
        "source": source,
        "status": "error",
        "proposals": [],
        "claims": [],
        "captions": {},
        "removed": [],
        "notes": [],
        "error": {"type": type_, "message": message},
        "timings_ms": {},
        "models": {},
        "image_size": None,
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A results file with 6 records (2 errors), scores for two metrics, and its report."""
    d = tmp_path_factory.mktemp("report")
    shutil.copy(_photo("camera.jpg"), d / "camera.jpg")  # a source relative to the results
    astro, cat, coffee = _photo("astronaut.jpg"), _photo("chelsea.jpg"), _photo("coffee.jpg")
    w, h = _size(astro)
    records = [
        _record(
            "astro",
            str(astro),
            astro,
            [
                ("tiny:blip", "An astronaut in a white suit. A dog sits beside her. Two flags."),
                ("tiny:git", "a woman in a space suit"),
            ],
            [
                _claim(
                    "object",
                    "There is an astronaut.",
                    "astronaut",
                    "supported",
                    0.8,
                    [ASTRONAUT_BOX],
                ),
                _claim(
                    "object",
                    "There is a dog.",
                    "dog",
                    "refuted",
                    0.0,
                    detector="no box above the detector's threshold",
                ),
                _claim(
                    "count",
                    "There are two flags.",
                    "flag",
                    "refuted",
                    0.1,
                    [[10, 10, 60, 90]],
                    count=2,
                    vqa_p_yes=0.1,
                ),
                _claim(
                    "attribute",
                    "The suit is white.",
                    "suit",
                    "supported",
                    0.9,
                    vqa_question="Is the suit white?",
                ),
                _claim("object", "There is a suit.", "suit", "uncertain", 0.5, [[0, h / 2, w, h]]),
            ],
            {
                "detailed": "An astronaut in a white suit.",
                "short": "An astronaut.",
                "alt": "Astronaut portrait.",
            },
        ),
        _record(
            "cat",
            str(cat),
            cat,
            [("tiny:blip", "A cat on a chair. A mouse hides. </script><b>bold</b>")],
            [
                _claim("object", "There is a cat.", "cat", "supported", 0.7, [[30, 20, 400, 290]]),
                _claim("object", "There is a mouse.", "mouse", "refuted", 0.0),
            ],
            {"detailed": XSS_CAPTION, "short": "A cat."},
        ),
        _record(
            "coffee",
            str(coffee),
            coffee,
            [("tiny:blip", "A cup of coffee.")],
            [_claim("object", "There is a cup.", "cup", "supported", 0.6, [[50, 50, 300, 300]])],
            {"detailed": "A cup of coffee."},
        ),
        _record(
            "camera",
            "camera.jpg",
            d / "camera.jpg",
            [("tiny:blip", "A man.")],
            [],
            {"detailed": "A man with a camera."},
        ),
        _error("bomb", str(d / "missing.png"), "DecompressionBomb", "too <many> pixels & more"),
        _error("xss", XSS_SOURCE, "BackendError", "tiny:blip raised <script>alert(4)</script>"),
    ]
    results = d / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    clip = {"astro": 0.9, "cat": 0.3, "coffee": 0.6, "camera": None}
    vqa = {"astro": 0.2, "cat": 0.8, "coffee": 0.5, "camera": 0.4}
    rows = []
    for rid in clip:
        for source, shift in (("final:detailed", 0.0), ("proposal:tiny:blip", -0.1)):
            value = clip[rid] if clip[rid] is None else clip[rid] + shift
            rows.append(
                {
                    "id": rid,
                    "caption_source": source,
                    "metrics": {"clip_score": value, "vqa_score": vqa[rid]},
                    "failures": {"clip_score": "image too small"} if value is None else {},
                }
            )
    rows.append({"id": "gone", "caption_source": "final:detailed", "metrics": {"clip_score": 1}})
    scores = d / "scores.jsonl"
    scores.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out, stats = write_report(results, scores, d / "out" / "report.html", thumb_px=128)
    return {
        "dir": d,
        "html": out,
        "text": out.read_text(encoding="utf-8"),
        "stats": stats,
        "records": records,
        "clip": clip,
        "astro_size": (w, h),
    }


def _data(text: str) -> dict:
    m = re.search(r'<script type="application/json" id="factcap-data">(.*?)</script>', text, re.S)
    assert m, "the data element is missing"
    return json.loads(m.group(1))


# ---- the HTML text ---------------------------------------------------------------------------


def test_self_contained(report):
    text = report["text"]
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "<link" not in text and "@import" not in text and "url(" not in text
    # The only URL is the SVG namespace the script passes to createElementNS.
    assert set(re.findall(r"https?://[^\s\"')]+", text)) == {"http://www.w3.org/2000/svg"}
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text).group(1)
    assert "default-src 'none'" in csp and "img-src data:" in csp
    js = re.search(r"<script>(.*)</script>", text, re.S).group(1)
    css = re.search(r"<style>(.*)</style>", text, re.S).group(1)
    assert f"script-src {_csp_hash(js)}" in csp and f"style-src {_csp_hash(css)}" in csp


def test_untrusted_text_is_escaped(report):
    text = report["text"]
    for raw in ("<script>alert", "<img src=x", "<img src=y", "<b>bold", "<many>"):
        assert raw not in text
    assert text.count("</script>") == 2  # the data element's and the code's own
    assert text.count("<script") == 2
    data = _data(text)
    by_id = {it["id"]: it for it in data["items"]}
    assert dict(by_id["cat"]["captions"])["detailed"] == XSS_CAPTION  # intact after decoding
    assert by_id["xss"]["source"] == XSS_SOURCE
    assert by_id["bomb"]["error"] == {
        "type": "DecompressionBomb",
        "message": "too <many> pixels & more",
    }


def test_items_thumbnails_boxes_and_strikes(report):
    data = _data(report["text"])
    by_id = {it["id"]: it for it in data["items"]}
    assert [it["id"] for it in data["items"]] == [r["id"] for r in report["records"]]
    for rid in ("astro", "cat", "coffee", "camera"):
        uri = by_id[rid]["thumb"]
        assert uri.startswith("data:image/jpeg;base64,")
        thumb = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert thumb.format == "JPEG" and max(thumb.size) == 128
    assert by_id["camera"]["box_space"] == _size(_photo("camera.jpg"))  # found beside results
    assert by_id["bomb"]["thumb"] is None and "not a file" in by_id["bomb"]["thumb_problem"]
    astro = by_id["astro"]
    assert astro["box_space"] == list(report["astro_size"])
    assert astro["claims"][0]["boxes"] == [{"box": ASTRONAUT_BOX, "score": 0.8}]
    assert [c["verdict"] for c in astro["claims"]] == [
        "supported",
        "refuted",
        "refuted",
        "supported",
        "uncertain",
    ]
    assert astro["n_refuted"] == 2 and by_id["coffee"]["n_refuted"] == 0
    blip = astro["proposals"][0]["segments"]
    assert "".join(s["text"] for s in blip) == report["records"][0]["proposals"][0]["text"]
    struck = {s["text"]: s["refuted"] for s in blip if s["refuted"]}
    assert struck == {"A dog sits beside her.": [1], "Two flags.": [2]}
    assert not any(s["refuted"] for s in astro["proposals"][1]["segments"])
    assert by_id["astro"]["scores"]["final:detailed"]["metrics"] == {
        "clip_score": 0.9,
        "vqa_score": 0.2,
    }
    assert by_id["camera"]["scores"]["final:detailed"]["failures"] == {
        "clip_score": "image too small"
    }
    assert data["metrics"] == ["clip_score", "vqa_score"]
    assert data["score_sources"] == ["final:detailed", "proposal:tiny:blip"]
    stats = report["stats"]
    assert (stats.records, stats.errors, stats.thumbnails, stats.unmatched_scores) == (6, 2, 4, 1)
    assert stats.verdicts == {"supported": 4, "refuted": 3, "uncertain": 1, "corrected": 0}
    assert "1 score rows match no record" in data["summary"]


def test_bad_inputs(tmp_path):
    good = {"id": "a", "source": "a.jpg", "captions": {"detailed": "x"}}
    torn = tmp_path / "torn.jsonl"
    torn.write_text(json.dumps(good) + '\n{"id": "b", "sou', encoding="utf-8")
    _, stats = write_report(torn, None, tmp_path / "t.html")
    assert stats.records == 1
    assert "incomplete last line" in (tmp_path / "t.html").read_text(encoding="utf-8")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "b", "sou\n' + json.dumps(good) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.jsonl:1: not valid JSON"):
        build_report(broken, out_path=tmp_path / "b.html")
    with pytest.raises(NotFound, match="no such file"):
        build_report(tmp_path / "nope.jsonl", out_path=tmp_path / "n.html")
    with pytest.raises(ConfigError, match="thumb_px"):
        build_report(torn, out_path=tmp_path / "x.html", thumb_px=4)
    bad_scores = tmp_path / "s.jsonl"
    bad_scores.write_text('{"caption_source": "final:detailed"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="no id or no metrics"):
        build_report(torn, bad_scores, out_path=tmp_path / "y.html")
    assert not (tmp_path / "b.html").exists() and not (tmp_path / "y.html").exists()


def test_image_root_limits_embedded_files(tmp_path):
    row = {"id": "a", "source": str(_photo("coffee.jpg")), "captions": {"short": "x"}}
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(row) + "\n", encoding="utf-8")
    page = build_report(results, out_path=tmp_path / "r.html", image_root=tmp_path).read_text()
    item = _data(page)["items"][0]
    assert item["thumb"] is None and "outside the image root" in item["thumb_problem"]


def test_cmd_report(report, tmp_path, capsys):
    d = report["dir"]
    args = argparse.Namespace(
        results=d / "results.jsonl",
        scores=d / "scores.jsonl",
        output=tmp_path / "c.html",
        thumb_px=64,
        overwrite=False,
        image_root=None,
    )
    assert cmd_report(args) == 0
    err = capsys.readouterr().err
    assert "report of 6 records (2 errors, 4 images" in err and str(tmp_path / "c.html") in err
    assert (tmp_path / "c.html").stat().st_mode & 0o044 == 0o044  # readable by others, not 0600
    first = _data((tmp_path / "c.html").read_text(encoding="utf-8"))["items"][0]["thumb"]
    assert max(Image.open(io.BytesIO(base64.b64decode(first.split(",")[1]))).size) == 64


# ---- the page in Chromium --------------------------------------------------------------------


def _visible_ids(page) -> list[str]:
    return page.evaluate(
        "() => [...document.querySelectorAll('#grid > article.card')]"
        ".filter(c => c.offsetParent !== null).map(c => c.dataset.id)"
    )


BROWSER_MS = 60_000  # the most the tests wait for the page to get somewhere (they fail after)


def _open(browser, html: Path):
    """The report in a new page; ``problems`` collects console errors and warnings, page
    errors, dialogs (a script that should not run) and any request off the file."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(m.text))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on(
        "request",
        lambda r: r.url.startswith(("file:", "data:")) or problems.append(f"request {r.url}"),
    )
    page.goto(html.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=BROWSER_MS)
    # the thumbnails (data: URIs) decode after the script ran, and boxes are placed on them:
    # wait until every image has loaded or failed (the tests check which)
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=BROWSER_MS)
    return page, problems


def test_page_in_chromium(report, browser, tmp_path):
    page, problems = _open(browser, report["html"])

    ids = [r["id"] for r in report["records"]]
    assert _visible_ids(page) == ids
    assert page.text_content("#shown") == "showing 6 of 6"
    assert "6 records: 4 ok, 2 errors" in page.text_content("#summary")
    assert page.locator("article.card img.thumb").count() == 4
    assert all(
        page.evaluate(
            "() => [...document.querySelectorAll('img.thumb')].map(i => i.complete && "
            "i.naturalWidth > 0)"
        )
    )

    astro = page.locator("article.card[data-id='astro']")
    assert astro.locator("dd.caption").all_text_contents() == [
        "An astronaut in a white suit.",
        "An astronaut.",
        "Astronaut portrait.",
    ]
    assert astro.locator("dt").all_text_contents() == ["detailed", "short", "alt"]
    struck = astro.locator("del.refuted-text")
    assert struck.all_text_contents() == ["A dog sits beside her.", "Two flags."]
    assert "line-through" in struck.first.evaluate("e => getComputedStyle(e).textDecorationLine")
    assert struck.first.get_attribute("title") == "refuted: There is a dog."
    colours = astro.locator("li.claim").evaluate_all(
        "els => els.map(e => [e.dataset.verdict, getComputedStyle(e).backgroundColor])"
    )
    assert colours == [
        ["supported", "rgb(218, 251, 225)"],
        ["refuted", "rgb(255, 235, 233)"],
        ["refuted", "rgb(255, 235, 233)"],
        ["supported", "rgb(218, 251, 225)"],
        ["uncertain", "rgb(255, 248, 197)"],
    ]
    assert astro.locator("li.claim .score").all_text_contents()[:2] == ["0.800", "0.000"]

    # The untrusted caption is text, not markup.
    cat = page.locator("article.card[data-id='cat']")
    assert cat.locator("dd.caption[data-style='detailed']").text_content() == XSS_CAPTION
    assert cat.locator("dd.caption img, dd.caption script, .proposal-text b").count() == 0
    xss = page.locator("article.card[data-id='xss']")
    assert xss.locator("h2.source").text_content() == XSS_SOURCE
    assert xss.locator(".error-type").text_content() == "BackendError"
    assert "<script>alert(4)</script>" in xss.locator(".error-message").text_content()
    assert "names no image file" in xss.locator(".no-image").text_content()

    # Boxes appear when their claim is toggled, at the image's scale.
    rect = astro.locator("g[data-claim='0'] rect")
    assert not rect.is_visible()
    astro.locator("input.box-toggle[data-claim='0']").check()
    assert rect.is_visible()
    img = astro.locator("img.thumb").bounding_box()
    box = rect.bounding_box()
    w, h = report["astro_size"]
    sx, sy = img["width"] / w, img["height"] / h
    assert box["x"] - img["x"] == pytest.approx(ASTRONAUT_BOX[0] * sx, abs=2)
    assert box["y"] - img["y"] == pytest.approx(ASTRONAUT_BOX[1] * sy, abs=2)
    assert box["width"] == pytest.approx((ASTRONAUT_BOX[2] - ASTRONAUT_BOX[0]) * sx, abs=3)
    assert box["height"] == pytest.approx((ASTRONAUT_BOX[3] - ASTRONAUT_BOX[1]) * sy, abs=3)
    assert rect.evaluate("e => getComputedStyle(e).stroke") == "rgb(26, 127, 55)"
    assert not astro.locator("g[data-claim='4'] rect").is_visible()  # others stay off
    astro.locator("input.box-toggle[data-claim='0']").uncheck()
    assert not rect.is_visible()
    astro.locator("input.box-toggle[data-claim='4']").check()
    assert astro.locator("g[data-claim='4'] rect").is_visible()
    assert (
        astro.locator("g[data-claim='4'] rect").evaluate("e => getComputedStyle(e).stroke")
        == "rgb(154, 103, 0)"
    )
    assert astro.locator("input.box-toggle[data-claim='1']").count() == 0  # no boxes, no toggle

    # Scores: a table per card, a histogram per metric.
    row = astro.locator("table.scores tr[data-metric='clip_score'] td")
    assert row.all_text_contents() == ["0.900", "0.800"]
    camera_clip = page.locator("article.card[data-id='camera'] tr[data-metric='clip_score'] td")
    assert camera_clip.first.text_content() == "n/a"
    assert camera_clip.first.get_attribute("title") == "image too small"
    hists = page.locator("#histograms .histogram")
    assert hists.count() == 2
    counts = page.locator(".histogram[data-metric='clip_score'] rect.bar").evaluate_all(
        "els => els.map(e => +e.dataset.count)"
    )
    assert sum(counts) == 3 and len(counts) == 10 and counts[0] == 1 and counts[-1] == 1
    assert "3 values, 1 n/a" in hists.first.text_content()
    vqa = page.locator(".histogram[data-metric='vqa_score'] rect.bar")
    assert sum(vqa.evaluate_all("els => els.map(e => +e.dataset.count)")) == 4

    # Filters and sorting.
    page.check("#f-errors")
    assert _visible_ids(page) == ["bomb", "xss"]
    assert page.text_content("#shown") == "showing 2 of 6"
    page.uncheck("#f-errors")
    page.check("#f-refuted")
    assert _visible_ids(page) == ["astro", "cat"]
    page.uncheck("#f-refuted")
    page.select_option("#sort-metric", "clip_score")
    assert _visible_ids(page) == ["astro", "coffee", "cat", "camera", "bomb", "xss"]
    page.select_option("#sort-dir", "asc")
    assert _visible_ids(page) == ["cat", "coffee", "astro", "camera", "bomb", "xss"]
    page.select_option("#sort-metric", "vqa_score")
    assert _visible_ids(page)[:4] == ["astro", "camera", "coffee", "cat"]
    page.select_option("#score-source", "proposal:tiny:blip")
    assert page.locator("#histograms .histogram").count() == 2
    page.select_option("#sort-metric", "")
    assert _visible_ids(page) == ids

    page.locator("input.box-toggle[data-claim='0']").first.check()
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    assert Image.open(shot).size[0] == 1400
    assert problems == []
    page.close()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning:PIL")
def test_tiny_run_over_photos_and_odd_images(browser, tmp_path):
    """The issue's acceptance run: the tiny preset over the example photos and the odd-images
    corpus, reported and opened in Chromium."""
    from factcap.pipeline import Pipeline

    odd = Path(__file__).parent / "data" / "odd-images"
    inputs = [*example_paths(), *sorted(p for p in odd.iterdir() if p.name != "README.md")]
    records = Pipeline.from_preset("tiny").caption(inputs, styles=["detailed", "short"])
    assert len(records) == len(inputs)
    results = tmp_path / "tiny.jsonl"
    results.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records), encoding="utf-8")
    html = build_report(results, out_path=tmp_path / "tiny.html")
    page, problems = _open(browser, html)
    errors = [r for r in records if r.status == "error"]
    assert errors and len(errors) < len(records)
    assert page.locator("article.card").count() == len(records)
    assert page.locator("article.card.error .error-type").all_text_contents() == [
        r.error.type for r in errors
    ]
    ok_cards = page.locator("article.card:not(.error)")
    assert ok_cards.locator("img.thumb").count() == len(records) - len(errors)
    assert ok_cards.locator("dd.caption").count() == 2 * (len(records) - len(errors))
    assert page.locator("article.card.error .no-image").first.text_content() == (
        f"image not shown: it does not decode ({errors[0].error.type}: the error below says why)"
    )
    page.check("#f-errors")
    assert len(_visible_ids(page)) == len(errors)
    page.screenshot(path=str(tmp_path / "tiny.png"), full_page=True)
    assert problems == []
    page.close()


def test_ranked_proposals_and_alt_text_names_are_labelled(tmp_path):
    photo = _photo("coffee.jpg")
    record = _record(
        "cup",
        str(photo),
        photo,
        [("tiny:blip", "A cup."), ("tiny:chat_vlm", "A bowl."), ("alt_text", "Caffe Nero mug")],
        [
            {
                **_claim("name", "It is Caffe Nero.", "caffe nero", "uncertain", None),
                "origin": "alt_text",
            }
        ],
        {"detailed": "A cup, labelled as Caffe Nero."},
    )
    record["proposals"][0].update(score=2.25, kept=True)
    record["proposals"][1].update(score=1.5, kept=False)
    record["claims"][0]["evidence"]["checker"] = "no checker can confirm a name"
    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps(record) + "\n", encoding="utf-8")
    out, _ = write_report(results, None, tmp_path / "report.html")
    [item] = _data(out.read_text(encoding="utf-8"))["items"]
    assert [p["model"] for p in item["proposals"]] == [
        "tiny:blip · score 2.250",
        "tiny:chat_vlm · score 1.500 · not kept",
        "alt_text",
    ]
    assert item["claims"][0]["detail"] == [
        "checker: no checker can confirm a name",
        "origin: alt_text",
    ]


# ---- regions (--regions) ---------------------------------------------------------------------

REGION_XSS = "A dog. <script>alert(5)</script><img src=z onerror=alert(6)>"


@pytest.fixture
def region_report(tmp_path):
    """The astronaut photo with three regions (one caption carries markup) and a relation,
    as caption --regions writes them, and its report."""
    from region_records import region_record

    astro = _photo("astronaut.jpg")
    w, h = _size(astro)
    record = region_record(
        "astro",
        str(astro),
        (w, h),
        {"detailed": "An astronaut with a flag."},
        [
            ("person", (100, 30, 400, h), 0.95, "An astronaut in a white suit."),
            ("flag", (20, 20, 120, 140), 0.8, "A small flag."),
            ("dog", (300, 300, 420, 420), 0.7, REGION_XSS),
        ],
        [(1, 0, "left of", "supported")],
    )
    results = tmp_path / "regions.jsonl"
    results.write_text(json.dumps(record) + "\n", encoding="utf-8")
    out, _ = write_report(results, None, tmp_path / "regions.html", thumb_px=256)
    return {"html": out, "record": record, "size": (w, h)}


def test_the_data_element_carries_the_regions(region_report):
    text = region_report["html"].read_text(encoding="utf-8")
    assert "<script>alert(5)" not in text and "<img src=z" not in text
    [item] = _data(text)["items"]
    w, h = region_report["size"]
    by_id = {r["id"]: r for r in region_report["record"]["regions"]["items"]}
    assert [r["id"] for r in item["regions"]] == ["r0", "r2", "r1"]  # largest first
    for region in item["regions"]:
        source = by_id[region["id"]]
        assert region["label"] == source["label"] and region["caption"] == source["caption"]
        assert region["score"] == source["score"]
        x0, y0, x1, y1 = source["box"]
        assert region["box"] == pytest.approx([x0 / w, y0 / h, x1 / w, y1 / h])
    assert item["regions"][1]["caption"] == REGION_XSS  # intact after decoding


def test_region_boxes_show_their_caption_on_hover(region_report, browser):
    page, problems = _open(browser, region_report["html"])
    card = page.locator("article.card[data-id='astro']")
    boxes = card.locator(".region-box")
    assert boxes.count() == 3
    assert card.locator(".region-label").all_text_contents() == ["person", "dog", "flag"]
    # placed on the image at the region's box
    img = card.locator("img.thumb").bounding_box()
    w, h = region_report["size"]
    flag = card.locator(".region-box[data-region='r1']").bounding_box()
    assert flag["x"] - img["x"] == pytest.approx(20 * img["width"] / w, abs=2)
    assert flag["y"] - img["y"] == pytest.approx(20 * img["height"] / h, abs=2)
    assert flag["width"] == pytest.approx(100 * img["width"] / w, abs=2)
    assert flag["height"] == pytest.approx(120 * img["height"] / h, abs=2)
    tip = card.locator(".region-tip")
    assert not tip.is_visible()
    card.locator(".region-box[data-region='r1']").hover()
    assert tip.is_visible() and tip.text_content() == "flag A small flag."
    page.mouse.move(1, 1)
    assert not tip.is_visible()
    # a caption with markup is shown as text: no element made, no script run
    card.locator(".region-box[data-region='r2']").hover()
    assert tip.is_visible() and tip.text_content() == "dog " + REGION_XSS
    assert card.locator(".region-tip script, .region-tip img, .region-list img").count() == 0
    captions = card.locator(".region-list .region-caption").all_text_contents()
    assert captions == ["An astronaut in a white suit.", REGION_XSS, "A small flag."]
    # keyboard focus shows it too; a region in the list marks its box
    card.locator(".region-box[data-region='r0']").focus()
    assert tip.text_content() == "person An astronaut in a white suit."
    card.locator(".region-item[data-region='r1']").hover()
    assert "active" in card.locator(".region-box[data-region='r1']").get_attribute("class")
    assert problems == []
    page.close()


# ---- 3D assets and the study's numbers -------------------------------------------------------


def test_a_failed_asset_shows_its_own_error_and_proposals_name_their_view(tmp_path):
    (tmp_path / "broken.glb").write_bytes(b"glTF not really")
    failed = _error("bad", str(tmp_path / "broken.glb"), "CorruptAsset", "cannot be read")
    failed.update(kind="asset", views=[], asset={})
    foreign = _error("other", str(tmp_path / "broken.glb"), "CorruptAsset", "cannot be read")
    views = [
        {"index": 0, "azimuth": 0.0, "elevation": 20.0},
        {"index": 1, "azimuth": 90.0, "elevation": 22.5},
    ]
    asset = _record(
        "cube",
        str(tmp_path / "cube.glb"),
        _photo("astronaut.jpg"),
        [("tiny:blip", "A red cube."), ("tiny:blip", "A cube from the side."), ("llm", "A cube.")],
        [],
        {"detailed": "A red cube."},
    )
    asset.update(kind="asset", views=views, asset={"format": "glb"})
    asset["proposals"][0]["view"], asset["proposals"][1]["view"] = 0, 1
    results = tmp_path / "assets.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in (failed, foreign, asset)))
    out, _ = write_report(results, None, tmp_path / "assets.html")
    items = {it["id"]: it for it in _data(out.read_text(encoding="utf-8"))["items"]}
    for rid in ("bad", "other"):  # with its media kind, or only a .glb source (another tool)
        problem = items[rid]["thumb_problem"]
        assert "CorruptAsset" in problem and "UnsupportedFormat" not in problem, problem
        assert items[rid]["error"]["type"] == "CorruptAsset"
    assert [p["model"] for p in items["cube"]["proposals"]] == [
        "tiny:blip · view 0 (azimuth 0°, elevation 20°)",
        "tiny:blip · view 1 (azimuth 90°, elevation 22.5°)",
        "llm",
    ]


def test_a_study_number_that_is_not_a_number_reads_n_a_in_the_report_as_in_the_cli():
    from factcap.report.html import study_section
    from factcap.study.results import table

    nan = float("nan")
    results = {
        "study": "s",
        "votes": {"used": 2, "total": 2, "gold": 0},
        "pairs": [
            {
                "a": "A",
                "b": "B",
                "items": 1,
                "votes": 2,
                "win_rate": 0.5,
                "tie_rate": nan,
                "loss_rate": 0.5,
                "ci95": {k: [nan, nan] for k in ("win_rate", "tie_rate", "loss_rate")},
            }
        ],
        "bradley_terry": {"normalisation": "mean log-strength 0", "strengths": {"A": nan}},
        "agreement": {"krippendorff_alpha": nan, "units": 0},
        "gold_threshold": 0.8,
        "raters": [],
        "raters_excluded": [],
    }
    page, terminal = study_section(results), table(results)
    assert "Krippendorff's alpha (nominal): n/a over 0" in page
    assert "Krippendorff's alpha (nominal) = n/a over 0" in terminal
    assert "0.500 [n/a, n/a]" in page and "A n/a" in page
    assert "nan" not in page.lower().replace("normalisation", "")
