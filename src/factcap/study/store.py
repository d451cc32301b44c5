"""The study's database: the one API to ``STUDY_DIR/study.sqlite`` (raters, assignments, votes).

A study directory holds ``study.json`` (the study: sources, pairs, items and their captions),
``images/`` (a copy of each item's image) and ``study.sqlite``. :class:`StudyStore` creates the
schema, hands out assignments and records votes. The rules a vote must pass live here, so the
web server and the crowd import obey the same ones:

* the token must be a rater of the study, and the assignment one of *that* rater's (else
  :class:`VoteRefused` with HTTP 403);
* the choice is ``left``, ``right`` or ``same`` (else 422);
* an assignment takes one vote: ``votes.assignment_id`` is the PRIMARY KEY, so a second vote
  is impossible even when two requests race (409).

Every call opens its own SQLite connection (WAL mode, a busy timeout), so a store is safe to
share between threads; every write is one transaction.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> info = {"version": 1, "sources": ["a", "b"], "items": []}
>>> store = StudyStore.create(d, info, [("r1", [dict(item_id="x", pair="a|b", left_source="a",
...     right_source="b", left_caption="A cat.", right_caption="A dog.", image="images/x.jpg")])])
>>> token = store.raters()[0].token
>>> first = store.next_assignment(token)
>>> store.vote(token, first.id, "left")
>>> store.progress(token), store.next_assignment(token)
((1, 1), None)
>>> store.vote(token, first.id, "right")
Traceback (most recent call last):
factcap.study.store.VoteRefused: assignment 1 already has a vote
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factcap.errors import DataError, NotFound, OutputError, UsageError

STUDY_JSON = "study.json"
DATABASE = "study.sqlite"
CHOICES = ("left", "right", "same")
ORIGINS = ("web", "crowd")
#: The largest row id SQLite holds (a signed 64-bit integer); a larger one names nothing.
MAX_ID = 2**63 - 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS raters (
    token TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    external_id TEXT UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL REFERENCES raters(token),
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    pair TEXT NOT NULL,
    left_source TEXT NOT NULL,
    right_source TEXT NOT NULL,
    left_caption TEXT NOT NULL,
    right_caption TEXT NOT NULL,
    image TEXT NOT NULL,
    gold INTEGER NOT NULL DEFAULT 0,
    gold_answer TEXT,
    UNIQUE (token, position)
);
CREATE TABLE IF NOT EXISTS votes (
    assignment_id INTEGER PRIMARY KEY REFERENCES assignments(id),
    token TEXT NOT NULL,
    choice TEXT NOT NULL,
    at REAL NOT NULL,
    origin TEXT NOT NULL,
    worker_id TEXT,
    elapsed_ms INTEGER
);
CREATE TABLE IF NOT EXISTS exclusions (
    token TEXT PRIMARY KEY REFERENCES raters(token),
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS assignments_token ON assignments(token, position);
"""

#: The columns of an assignment row, in the order :class:`Assignment` takes them.
_ASSIGNMENT_COLUMNS = (
    "a.id, a.token, a.position, a.item_id, a.pair, a.left_source, a.right_source, "
    "a.left_caption, a.right_caption, a.image, a.gold, a.gold_answer, v.choice"
)


class VoteRefused(UsageError):
    """A vote the study does not take; ``http_status`` says why (403 not this rater's
    assignment or an unknown token, 409 a repeat, 422 a bad choice)."""

    def __init__(self, reason: str, http_status: int = 409):
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status

    def __reduce__(self) -> tuple[type, tuple[str, int]]:
        return type(self), (self.reason, self.http_status)


class StudyFull(UsageError):
    """Every rater slot is taken: no place for a new crowd participant."""

    http_status = 409


@dataclass(frozen=True, slots=True)
class Rater:
    """One rater: a private link's token, a label, and the crowd id bound to it (if any)."""

    token: str
    label: str
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class Assignment:
    """One comparison for one rater: an image and two captions, and the vote (``choice``,
    None until voted). Gold assignments (attention checks) have ``gold_answer``, the side
    of the image's own caption."""

    id: int
    token: str
    position: int
    item_id: str
    pair: str
    left_source: str
    right_source: str
    left_caption: str
    right_caption: str
    image: str
    gold: bool
    gold_answer: str | None
    choice: str | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Assignment:
        values = list(row)
        values[10] = bool(values[10])
        return cls(*values)

    def source_of(self, choice: str) -> str:
        """The caption source a choice points to (``same`` stays ``same``).

        >>> a = Assignment(1, "t", 0, "x", "a|b", "b", "a", "B.", "A.", "i.jpg", False, None)
        >>> a.source_of("left"), a.source_of("right"), a.source_of("same")
        ('b', 'a', 'same')
        """
        return {"left": self.left_source, "right": self.right_source}.get(choice, choice)


class StudyStore:
    """The study directory's database (see the module docstring)."""

    def __init__(self, study_dir: str | Path):
        self.dir = Path(study_dir)
        self.path = self.dir / DATABASE
        self._info: dict[str, Any] | None = None

    # -- opening and creating -------------------------------------------------------------

    @classmethod
    def open(cls, study_dir: str | Path) -> StudyStore:
        """The store of an existing study directory.

        Raises:
            NotFound: there is no such folder.
            DataError: the folder is not a study (no ``study.json`` / ``study.sqlite``, or
                they cannot be read).
        """
        study_dir = Path(study_dir)
        if not study_dir.is_dir():
            raise NotFound(f"no such study folder: {study_dir}")
        missing = [n for n in (STUDY_JSON, DATABASE) if not (study_dir / n).is_file()]
        if missing:
            raise DataError(
                f"{study_dir} is not a study folder (no {' or '.join(missing)}); "
                "make one with 'factcap study create'"
            )
        store = cls(study_dir)
        try:
            with store._connect() as db:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as err:
            raise DataError(f"{store.path} is not a readable study database ({err})") from None
        if not {"raters", "assignments", "votes"} <= tables:
            raise DataError(f"{store.path} is not a study database (tables missing)")
        store.info  # noqa: B018 - read (and check) study.json now
        return store

    @classmethod
    def create(
        cls,
        study_dir: str | Path,
        info: dict[str, Any],
        raters: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    ) -> StudyStore:
        """Write ``study.json`` and a new database into ``study_dir`` (which may exist but
        must hold no database): one rater per ``(label, assignments)``, each with a fresh
        token (``secrets.token_urlsafe(16)``) and its assignments in order (dicts with
        :class:`Assignment`'s fields but ``id``, ``token``, ``position``, ``choice``)."""
        study_dir = Path(study_dir)
        store = cls(study_dir)
        try:
            study_dir.mkdir(parents=True, exist_ok=True)
            if store.path.exists():
                raise OutputError(f"{store.path} exists already")
            text = json.dumps(info, indent=2, ensure_ascii=False)
            (study_dir / STUDY_JSON).write_text(text + "\n", encoding="utf-8")
            with store._connect(create=True) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(SCHEMA)
                with store._write(db):
                    for label, assignments in raters:
                        token = store._add_rater(db, label)
                        for position, a in enumerate(assignments):
                            store._add_assignment(db, token, position, a)
        except OSError as err:
            raise OutputError(f"cannot write the study to {study_dir}: {err}") from None
        except sqlite3.Error as err:
            raise OutputError(f"cannot write {store.path}: {err}") from None
        return store

    @contextmanager
    def _connect(self, create: bool = False) -> Iterator[sqlite3.Connection]:
        if not create and not self.path.is_file():
            raise NotFound(f"no study database at {self.path}")
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One write transaction (taken at once, so checks and writes see the same data)."""
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _add_rater(db: sqlite3.Connection, label: str, external_id: str | None = None) -> str:
        token = secrets.token_urlsafe(16)
        db.execute(
            "INSERT INTO raters (token, label, external_id, created) VALUES (?, ?, ?, ?)",
            (token, label, external_id, time.time()),
        )
        return token

    @staticmethod
    def _add_assignment(
        db: sqlite3.Connection, token: str, position: int, a: dict[str, Any]
    ) -> int:
        cursor = db.execute(
            "INSERT INTO assignments (token, position, item_id, pair, left_source, right_source,"
            " left_caption, right_caption, image, gold, gold_answer)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token,
                position,
                a["item_id"],
                a["pair"],
                a["left_source"],
                a["right_source"],
                a["left_caption"],
                a["right_caption"],
                a["image"],
                int(bool(a.get("gold", False))),
                a.get("gold_answer"),
            ),
        )
        return int(cursor.lastrowid or 0)

    # -- reading --------------------------------------------------------------------------

    @property
    def info(self) -> dict[str, Any]:
        """``study.json``: sources, pairs, items (with captions), question, completion code."""
        if self._info is None:
            path = self.dir / STUDY_JSON
            try:
                value = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise DataError(f"{self.dir} is not a study folder (no {STUDY_JSON})") from None
            except (OSError, ValueError) as err:
                raise DataError(f"{path} cannot be read ({err})") from None
            if not isinstance(value, dict) or "sources" not in value:
                raise DataError(f"{path} is not a study description (no 'sources')")
            self._info = value
        return self._info

    def rater(self, token: str) -> Rater | None:
        """The rater of ``token``; None for an unknown token."""
        with self._connect() as db:
            row = db.execute(
                "SELECT token, label, external_id FROM raters WHERE token = ?", (token,)
            ).fetchone()
        return Rater(*row) if row else None

    def raters(self) -> list[Rater]:
        """Every rater, in the order they were made."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT token, label, external_id FROM raters ORDER BY created, rowid"
            ).fetchall()
        return [Rater(*r) for r in rows]

    def assignments(self, token: str) -> list[Assignment]:
        """A rater's assignments in the order they are shown (with their votes)."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments a"
                " LEFT JOIN votes v ON v.assignment_id = a.id"
                " WHERE a.token = ? ORDER BY a.position",
                (token,),
            ).fetchall()
        return [Assignment.from_row(r) for r in rows]

    def all_assignments(self) -> list[Assignment]:
        """Every assignment of every rater (by id)."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments a"
                " LEFT JOIN votes v ON v.assignment_id = a.id ORDER BY a.id"
            ).fetchall()
        return [Assignment.from_row(r) for r in rows]

    def assignment(self, assignment_id: int) -> Assignment | None:
        """One assignment by id; None when there is none (any id SQLite cannot hold).

        >>> import tempfile
        >>> StudyStore.create(Path(tempfile.mkdtemp()), {}, []).assignment(10**30) is None
        True
        """
        if not _valid_id(assignment_id):
            return None
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments a"
                " LEFT JOIN votes v ON v.assignment_id = a.id WHERE a.id = ?",
                (int(assignment_id),),
            ).fetchone()
        return Assignment.from_row(row) if row else None

    def next_assignment(self, token: str) -> Assignment | None:
        """The rater's first assignment without a vote; None when all are done (or the token
        is unknown)."""
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_ASSIGNMENT_COLUMNS} FROM assignments a"
                " LEFT JOIN votes v ON v.assignment_id = a.id"
                " WHERE a.token = ? AND v.assignment_id IS NULL ORDER BY a.position LIMIT 1",
                (token,),
            ).fetchone()
        return Assignment.from_row(row) if row else None

    def progress(self, token: str) -> tuple[int, int]:
        """(assignments voted, assignments) of one rater."""
        with self._connect() as db:
            done, total = db.execute(
                "SELECT COUNT(v.assignment_id), COUNT(a.id) FROM assignments a"
                " LEFT JOIN votes v ON v.assignment_id = a.id WHERE a.token = ?",
                (token,),
            ).fetchone()
        return int(done), int(total)

    def progress_all(self) -> list[dict[str, Any]]:
        """Per rater: token, label, external_id, done, total, gold_done, gold_failed and
        ``excluded`` (the reason a crowd platform gave, or None)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT r.token, r.label, r.external_id,"
                " COUNT(v.assignment_id), COUNT(a.id),"
                " SUM(CASE WHEN a.gold = 1 AND v.choice IS NOT NULL THEN 1 ELSE 0 END),"
                " SUM(CASE WHEN a.gold = 1 AND v.choice IS NOT NULL"
                "          AND v.choice != a.gold_answer THEN 1 ELSE 0 END),"
                " e.reason"
                " FROM raters r LEFT JOIN assignments a ON a.token = r.token"
                " LEFT JOIN votes v ON v.assignment_id = a.id"
                " LEFT JOIN exclusions e ON e.token = r.token"
                " GROUP BY r.token ORDER BY r.created, r.rowid"
            ).fetchall()
        keys = ("token", "label", "external_id", "done", "total", "gold_done", "gold_failed")
        out = []
        for row in rows:
            entry = dict(zip(keys, row[:7], strict=True))
            for key in keys[3:]:
                entry[key] = int(entry[key] or 0)
            entry["excluded"] = row[7]
            out.append(entry)
        return out

    def votes(self) -> list[dict[str, Any]]:
        """Every vote joined with its assignment: assignment_id, token, label, external_id,
        item_id, pair, left_source, right_source, gold, gold_answer, choice, ``source``
        (the chosen caption's source, or ``same``), at, origin, worker_id, elapsed_ms and
        ``excluded`` (reason or None)."""
        with self._connect() as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT v.assignment_id, v.token, r.label, r.external_id, a.item_id, a.pair,"
                " a.left_source, a.right_source, a.gold, a.gold_answer, v.choice, v.at,"
                " v.origin, v.worker_id, v.elapsed_ms, e.reason AS excluded"
                " FROM votes v JOIN assignments a ON a.id = v.assignment_id"
                " JOIN raters r ON r.token = v.token"
                " LEFT JOIN exclusions e ON e.token = v.token ORDER BY v.assignment_id"
            ).fetchall()
        out = []
        for row in rows:
            vote = dict(row)
            vote["gold"] = bool(vote["gold"])
            sides = {"left": vote["left_source"], "right": vote["right_source"]}
            vote["source"] = sides.get(vote["choice"], vote["choice"])
            out.append(vote)
        return out

    # -- writing --------------------------------------------------------------------------

    def vote(
        self,
        token: str,
        assignment_id: int,
        choice: str,
        origin: str = "web",
        worker_id: str | None = None,
        elapsed_ms: int | None = None,
    ) -> None:
        """Record one vote, or raise :class:`VoteRefused` (see the module docstring); the
        checks and the insert are one transaction."""
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, not {origin!r}")
        if choice not in CHOICES:
            raise VoteRefused(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}", 422)
        if elapsed_ms is not None:
            elapsed_ms = max(0, int(elapsed_ms))
        with self._connect() as db, self._write(db):
            self._vote(db, token, assignment_id, choice, origin, worker_id, elapsed_ms)

    @staticmethod
    def _vote(
        db: sqlite3.Connection,
        token: str,
        assignment_id: int,
        choice: str,
        origin: str,
        worker_id: str | None,
        elapsed_ms: int | None,
    ) -> None:
        if db.execute("SELECT 1 FROM raters WHERE token = ?", (token,)).fetchone() is None:
            raise VoteRefused("unknown rater token", 403)
        if not _valid_id(assignment_id):
            raise VoteRefused("no such assignment for this rater", 403)
        assignment_id = int(assignment_id)
        owner = db.execute(
            "SELECT token FROM assignments WHERE id = ?", (assignment_id,)
        ).fetchone()
        if owner is None or owner[0] != token:
            raise VoteRefused(f"assignment {assignment_id} is not assigned to this rater", 403)
        try:
            db.execute(
                "INSERT INTO votes (assignment_id, token, choice, at, origin, worker_id,"
                " elapsed_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (assignment_id, token, choice, time.time(), origin, worker_id, elapsed_ms),
            )
        except sqlite3.IntegrityError:
            raise VoteRefused(f"assignment {assignment_id} already has a vote", 409) from None

    def claim(self, external_id: str) -> Rater:
        """The rater bound to a crowd participant (``external_id``), binding the first free
        slot (no crowd id, no votes yet) on the participant's first visit.

        Raises:
            UsageError: an empty ``external_id``.
            StudyFull: every slot is taken.
        """
        external_id = str(external_id).strip()
        if not external_id:
            raise UsageError("a participant id is needed to take part")
        with self._connect() as db, self._write(db):
            row = db.execute(
                "SELECT token, label, external_id FROM raters WHERE external_id = ?",
                (external_id,),
            ).fetchone()
            if row:
                return Rater(*row)
            free = db.execute(
                "SELECT token, label FROM raters r WHERE external_id IS NULL AND NOT EXISTS"
                " (SELECT 1 FROM votes v WHERE v.token = r.token)"
                " AND EXISTS (SELECT 1 FROM assignments a WHERE a.token = r.token)"
                " ORDER BY created, rowid LIMIT 1"
            ).fetchone()
            if free is None:
                raise StudyFull("this study has no free place left; thank you for your interest")
            db.execute("UPDATE raters SET external_id = ? WHERE token = ?", (external_id, free[0]))
            return Rater(free[0], free[1], external_id)

    def crowd_vote(
        self, external_id: str, label: str, template: Assignment, choice: str, worker_id: str
    ) -> bool:
        """Record a crowd worker's answer to the HIT made from ``template``: the worker
        becomes a rater (``external_id``; made on its first answer), gets its own copy of
        the assignment and votes on it, all in one transaction. Returns False (and records
        nothing) when that worker already answered that HIT: one vote per assignment."""
        if choice not in CHOICES:
            raise VoteRefused(f"choice must be one of {', '.join(CHOICES)}, not {choice!r}", 422)
        with self._connect() as db, self._write(db):
            row = db.execute(
                "SELECT token FROM raters WHERE external_id = ?", (external_id,)
            ).fetchone()
            token = row[0] if row else self._add_rater(db, label, external_id)
            same = db.execute(
                "SELECT 1 FROM assignments WHERE token = ? AND item_id = ? AND pair = ?"
                " AND left_caption = ? AND right_caption = ?",
                (
                    token,
                    template.item_id,
                    template.pair,
                    template.left_caption,
                    template.right_caption,
                ),
            ).fetchone()
            if same:
                return False
            position = db.execute(
                "SELECT COALESCE(MAX(position) + 1, 0) FROM assignments WHERE token = ?",
                (token,),
            ).fetchone()[0]
            fields = {
                k: getattr(template, k)
                for k in (
                    "item_id",
                    "pair",
                    "left_source",
                    "right_source",
                    "left_caption",
                    "right_caption",
                    "image",
                    "gold",
                    "gold_answer",
                )
            }
            new_id = self._add_assignment(db, token, int(position), fields)
            self._vote(db, token, new_id, choice, "crowd", worker_id, None)
        return True

    def exclude(self, token: str, reason: str) -> None:
        """Mark a rater's votes as excluded (results leave them out); a second call keeps the
        latest reason."""
        with self._connect() as db, self._write(db):
            db.execute(
                "INSERT INTO exclusions (token, reason, at) VALUES (?, ?, ?)"
                " ON CONFLICT(token) DO UPDATE SET reason = excluded.reason, at = excluded.at",
                (token, reason, time.time()),
            )

    def rater_by_external_id(self, external_id: str) -> Rater | None:
        """The rater bound to a crowd id; None when there is none."""
        with self._connect() as db:
            row = db.execute(
                "SELECT token, label, external_id FROM raters WHERE external_id = ?",
                (external_id,),
            ).fetchone()
        return Rater(*row) if row else None


def _valid_id(value: Any) -> bool:
    """Whether ``value`` is an integer a row id can be (1 to :data:`MAX_ID`; a bool is not).

    >>> _valid_id(1), _valid_id("7"), _valid_id(10**20), _valid_id(0), _valid_id("x")
    (True, True, False, False, False)
    """
    if isinstance(value, bool):
        return False
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return 1 <= number <= MAX_ID
