"""Running a study on a crowd platform: the CSV files of Mechanical Turk and Prolific.

**Mechanical Turk** (external data, MTurk's own page): one HIT per comparison *unit* (an
item's source pair, or an attention check), each to be done by ``raters_per_item`` workers
(the HIT's "number of assignments per task"; MTurk never gives one HIT twice to a worker).
``export_mturk`` writes the batch input CSV (``hit_key, image_url, caption_left,
caption_right``: the sides of the template, drawn at random; ``image_url`` is ``<base-url>/images/<file>``,
so publish ``STUDY_DIR/images`` at ``--base-url``) and ``mturk_layout.html``, the HIT layout
to paste into the project (a ``crowd-form`` with a radio ``choice``: left, right, same).
The ``hit_key`` is the id of the unit's first assignment in the study database (its template).

``import_mturk`` reads the batch results CSV: each worker becomes a rater
(``external_id`` = the worker id, label ``mturk:<worker id>``), each answer a vote with
origin ``crowd`` on the worker's own copy of the template assignment. A worker answering
the same comparison twice (the same file imported twice, a HIT re-posted) is one vote: the
second is skipped and counted. Rejected assignments are skipped. Gold HITs carry their
answer into the worker's copy, so a worker's gold accuracy is computed like a web rater's
(a worker who did no gold HIT is kept and reported as such).

**Prolific** (the study page served by ``factcap study serve``): ``export_prolific`` gives
the study URL to paste into Prolific (Prolific fills in the participant id) and the
completion code the page shows at the end. Each participant who opens the URL gets the next
free rater slot of the study (:meth:`StudyStore.claim`), so create the study with
``--raters`` = the number of places. ``import_prolific`` reads Prolific's participant export
and excludes the votes of RETURNED, REJECTED and TIMED-OUT participants.
"""

from __future__ import annotations

import csv
import html
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcap.errors import DataError, NotFound, OutputError
from factcap.study.store import CHOICES, Assignment, StudyStore
from factcap.text.sanitize import display_text

PLATFORMS = ("mturk", "prolific")
MTURK_INPUT_COLUMNS = ("hit_key", "image_url", "caption_left", "caption_right")
MTURK_RESULT_COLUMNS = (
    "HITId",
    "AssignmentId",
    "WorkerId",
    "AssignmentStatus",
    "Input.hit_key",
    "Answer.choice",
)
PROLIFIC_COLUMNS = ("Participant id", "Status")
PROLIFIC_EXCLUDED = ("RETURNED", "REJECTED", "TIMED-OUT")
LAYOUT_NAME = "mturk_layout.html"


def units(store: StudyStore) -> dict[str, Assignment]:
    """The study's comparison units by ``hit_key``: the first assignment of each (the
    template), in id order. Crowd copies are the same units and add none."""
    found: dict[tuple[Any, ...], Assignment] = {}
    for a in store.all_assignments():
        key = (a.item_id, a.pair, frozenset((a.left_caption, a.right_caption)))
        found.setdefault(key, a)
    return {str(a.id): a for a in found.values()}


def _hits(store: StudyStore, base_url: str) -> Iterator[dict[str, str]]:
    base = base_url.rstrip("/")
    for key, a in units(store).items():
        yield {
            "hit_key": key,
            "image_url": f"{base}/{a.image}",
            "caption_left": display_text(a.left_caption),  # workers see them: no bidi
            "caption_right": display_text(a.right_caption),
        }


def export_mturk(store: StudyStore, out: Path, base_url: str) -> tuple[int, Path]:
    """Write the MTurk batch input CSV to ``out`` and the HIT layout beside it; returns the
    number of HITs and the layout's path."""
    layout = out.with_name(LAYOUT_NAME)
    try:
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, MTURK_INPUT_COLUMNS)
            writer.writeheader()
            count = 0
            for row in _hits(store, base_url):
                writer.writerow(row)
                count += 1
        layout.write_text(mturk_layout(store.info.get("question", "")), encoding="utf-8")
    except OSError as err:
        raise OutputError(f"cannot write {out}: {err.strerror or err}") from None
    return count, layout


def mturk_layout(question: str) -> str:
    """The HIT layout: the image, two captions, a radio ``choice``; MTurk fills the
    ``${...}`` placeholders from the batch CSV.

    >>> page = mturk_layout("Which is better?")
    >>> "${caption_left}" in page and 'name="choice"' in page and "crowd-form" in page
    True
    """
    options = "\n".join(
        f'    <label><input type="radio" name="choice" value="{value}" required> {text}</label><br>'
        for value, text in (
            ("left", "Caption 1 (left) is better"),
            ("right", "Caption 2 (right) is better"),
            ("same", "They are about the same"),
        )
    )
    return f"""<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>
<!-- factcap study HIT layout: paste into a Mechanical Turk project (Design layout, Source). -->
<crowd-form answer-format="flatten-objects">
  <p><strong>{html.escape(question)}</strong></p>
  <img src="${{image_url}}" alt="the image" style="max-width: 640px; max-height: 480px">
  <table style="width: 100%; max-width: 960px"><tr>
    <td style="vertical-align: top; width: 50%"><h3>Caption 1 (left)</h3><p>${{caption_left}}</p></td>
    <td style="vertical-align: top; width: 50%"><h3>Caption 2 (right)</h3><p>${{caption_right}}</p></td>
  </tr></table>
  <input type="hidden" name="hit_key" value="${{hit_key}}">
  <fieldset>
{options}
  </fieldset>
</crowd-form>
"""


def prolific_url(base_url: str) -> str:
    """The study URL to paste into Prolific (it fills in the ``{{%...%}}`` parts).

    >>> prolific_url("https://study.example.org/")
    'https://study.example.org/start?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}'
    """
    return (
        f"{base_url.rstrip('/')}/start?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}"
        "&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}"
    )


def export_prolific(store: StudyStore, out: Path, base_url: str) -> dict[str, Any]:
    """Write the one-row CSV (study_url, completion_code, places) and return its row."""
    free = sum(1 for r in store.progress_all() if r["external_id"] is None and r["done"] == 0)
    row = {
        "study_url": prolific_url(base_url),
        "completion_code": str(store.info.get("completion_code", "")),
        "places": free,
    }
    try:
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, list(row))
            writer.writeheader()
            writer.writerow(row)
    except OSError as err:
        raise OutputError(f"cannot write {out}: {err.strerror or err}") from None
    return row


def _read_csv(path: Path, needed: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a CSV with the ``needed`` columns (DataError naming any missing)."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in needed if c not in columns]
            if missing:
                raise DataError(
                    f"{path} lacks the column(s) {', '.join(missing)} "
                    f"(it has: {', '.join(columns) or 'none'})"
                )
            return [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    except FileNotFoundError:
        raise NotFound(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read {path} as CSV: {err}") from None


@dataclass
class ImportSummary:
    """What an import did."""

    rows: int = 0
    votes: int = 0
    repeats: int = 0
    rejected: int = 0
    workers: set[str] = field(default_factory=set)
    excluded: int = 0
    unknown: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


def import_mturk(store: StudyStore, path: Path) -> ImportSummary:
    """Record the answers of an MTurk batch results CSV (see the module docstring). Every
    row is checked first: an unknown ``hit_key`` or choice is a DataError and nothing is
    recorded."""
    rows = _read_csv(path, MTURK_RESULT_COLUMNS)
    known = units(store)
    summary = ImportSummary(rows=len(rows))
    accepted: list[tuple[dict[str, str], Assignment]] = []
    for number, row in enumerate(rows, 2):
        if row["AssignmentStatus"].lower() == "rejected":
            summary.rejected += 1
            continue
        template = known.get(row["Input.hit_key"])
        if template is None:
            raise DataError(
                f"{path}:{number}: hit_key {row['Input.hit_key']!r} is not a HIT of this study"
            )
        if row["Answer.choice"] not in CHOICES:
            raise DataError(
                f"{path}:{number}: Answer.choice is {row['Answer.choice']!r}, not one of "
                f"{', '.join(CHOICES)}"
            )
        if not row["WorkerId"]:
            raise DataError(f"{path}:{number}: no WorkerId")
        accepted.append((row, template))
    for row, template in accepted:
        worker = row["WorkerId"]
        recorded = store.crowd_vote(
            worker, f"mturk:{worker}", template, row["Answer.choice"], worker
        )
        summary.votes += recorded
        summary.repeats += not recorded
        summary.workers.add(worker)
    return summary


def import_prolific(store: StudyStore, path: Path) -> ImportSummary:
    """Exclude the votes of participants Prolific lists as RETURNED, REJECTED or TIMED-OUT."""
    rows = _read_csv(path, PROLIFIC_COLUMNS)
    summary = ImportSummary(rows=len(rows))
    for row in rows:
        status = row["Status"].upper()
        summary.by_status[status] = summary.by_status.get(status, 0) + 1
        rater = store.rater_by_external_id(row["Participant id"])
        if rater is None:
            summary.unknown += 1
            continue
        summary.workers.add(row["Participant id"])
        if status in PROLIFIC_EXCLUDED:
            store.exclude(rater.token, f"Prolific {status}")
            summary.excluded += 1
    return summary
