"""A persistent cache of remote model responses, keyed by a hash of the request.

A resumed or retried job sends the same requests again; with this cache it does not pay for
the ones it already got an answer to. One SQLite file per directory (``responses.sqlite3``,
WAL journal, so several threads and processes can share it); one row per request:
``sha256(path + canonical JSON body)`` → the parsed JSON response.

What makes the key (:func:`request_key`): the request's path relative to the server's base
URL (``/chat/completions``) and its body as canonical JSON (sorted keys, no whitespace,
integral floats written as integers), less the fields that do not change the answer
(:data:`VOLATILE_FIELDS`). The server's address and the API key are *not* part of the key,
so a job resumed against a moved server still hits; the key is never stored anywhere.

What gets cached (:func:`cacheable`): deterministic requests only — ``temperature`` 0 and at
most one choice. A sampled answer (``temperature > 0``) is meant to differ between calls;
replaying one stored sample would silently turn every later call into a copy of it. Callers
store a response only after it parsed and passed their own checks, so failures (HTTP
errors, timeouts, garbage bodies) are never cached.

A cache that cannot be read never stops a job: a file that is not a database (or is
corrupt) is moved aside to ``responses.sqlite3.corrupt`` and a new one is created, with a
warning in the log; if even that fails, caching is switched off with a warning. Clear the
cache by deleting the directory. Put it on a local disk: SQLite's WAL mode needs shared
memory between the processes that use it, which network filesystems (NFS) do not give.

>>> import tempfile
>>> cache = RequestCache(tempfile.mkdtemp())
>>> body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.0}
>>> key = request_key("/chat/completions", body)
>>> cacheable(body), cache.get(key)
(True, None)
>>> cache.put(key, {"choices": [{"message": {"content": "hello"}}]})
>>> cache.get(key)["choices"][0]["message"]["content"], len(cache)
('hello', 1)
>>> request_key("/chat/completions", {**body, "temperature": 0, "user": "ann"}) == key
True
>>> cache.close()
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "FILENAME",
    "VOLATILE_FIELDS",
    "RequestCache",
    "cacheable",
    "default_cache_dir",
    "request_key",
]

log = logging.getLogger(__name__)

FILENAME = "responses.sqlite3"
# Body fields that identify or route a request but do not change the answer.
VOLATILE_FIELDS = frozenset({"user", "metadata", "store", "stream_options", "request_id"})
_BUSY_TIMEOUT_S = 30.0


def default_cache_dir() -> Path:
    """``$FACTCAP_CACHE/requests``, or ``~/.cache/factcap/requests`` when that is unset."""
    root = os.environ.get("FACTCAP_CACHE") or Path.home() / ".cache" / "factcap"
    return Path(root) / "requests"


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 0.0 and 0 ask the same thing
    return value


def request_key(path: str, body: Mapping[str, Any]) -> str:
    """The cache key of a request: sha256 hex of its path and canonical JSON body.

    >>> a = request_key("chat/completions", {"b": 1, "a": [0.0, "x"]})
    >>> a == request_key("/chat/completions/", {"a": [0, "x"], "b": 1.0})
    True
    >>> a == request_key("/chat/completions", {"b": 1, "a": [0.5, "x"]})
    False
    """
    kept = {k: v for k, v in body.items() if k not in VOLATILE_FIELDS}
    text = json.dumps(
        {"path": "/" + path.strip("/"), "body": _canonical(kept)},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cacheable(body: Mapping[str, Any]) -> bool:
    """True for deterministic requests: ``temperature == 0`` (explicitly) and ``n`` at most 1.

    >>> cacheable({"temperature": 0.0}), cacheable({"temperature": 0.7}), cacheable({})
    (True, False, False)
    """
    temperature = body.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        return False  # unset means the server's default, which is usually 1.0
    return temperature == 0 and body.get("n", 1) in (1, None) and not body.get("stream")


def _is_corrupt(err: sqlite3.Error) -> bool:
    """Whether ``err`` says the file itself is bad (as opposed to locked, full, read-only)."""
    name = getattr(err, "sqlite_errorname", "")  # Python >= 3.11
    if name:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    text = str(err).lower()
    return "not a database" in text or "malformed" in text


class RequestCache:
    """Responses of deterministic remote requests, in one SQLite file; thread-safe.

    ``get`` and ``put`` never raise: a read problem is a miss, a write problem is logged
    once and skipped, a corrupt file is replaced (see the module docstring). Picklable: a
    copy reopens the same file on first use. ``hits``, ``misses`` and ``stores`` count what
    this instance did.

    >>> import tempfile
    >>> cache = RequestCache(tempfile.mkdtemp())
    >>> cache.get("0" * 64) is None, cache.misses
    (True, 1)
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else default_cache_dir()
        self.path = self.directory / FILENAME
        self.hits = self.misses = self.stores = 0
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._disabled = False
        self._write_warned = False

    # -- opening ---------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.directory.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                "key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL NOT NULL)"
            )
            conn.execute("SELECT key FROM responses LIMIT 1").fetchall()
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self) -> None:
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        if self.path.exists():
            os.replace(self.path, self.path.with_name(FILENAME + ".corrupt"))

    def _connection(self) -> sqlite3.Connection | None:
        """The open connection (opened, or recreated, on first use); None when disabled.
        Call with the lock held."""
        if self._conn is not None or self._disabled:
            return self._conn
        try:
            self._conn = self._open()
        except (sqlite3.Error, OSError) as err:
            if isinstance(err, sqlite3.Error) and _is_corrupt(err):
                self._recreate(err)
            else:
                self._disable(err)
        return self._conn

    def _recreate(self, err: BaseException) -> None:
        log.warning(
            "request cache %s is not a usable database (%s); moved it aside to %s.corrupt "
            "and started a new one",
            self.path,
            err,
            FILENAME,
        )
        self._drop_connection()
        try:
            self._move_aside()
            self._conn = self._open()
        except (sqlite3.Error, OSError) as again:
            self._disable(again)

    def _disable(self, err: BaseException) -> None:
        log.warning(
            "request cache %s cannot be used (%s: %s); responses will not be cached",
            self.path,
            type(err).__name__,
            err,
        )
        self._drop_connection()
        self._disabled = True

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    # -- use -------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """False once the cache had to be switched off (it then only misses)."""
        with self._lock:
            return self._connection() is not None

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored response for ``key``, or None (also when the cache cannot be read)."""
        with self._lock:
            conn = self._connection()
            row = None
            if conn is not None:
                try:
                    row = conn.execute(
                        "SELECT response FROM responses WHERE key = ?", (key,)
                    ).fetchone()
                except sqlite3.Error as err:
                    if _is_corrupt(err):
                        self._recreate(err)
                    else:
                        log.debug("request cache read failed: %s", err)
            value = None
            if row is not None:
                try:
                    value = json.loads(row[0])
                except ValueError:
                    value = None
            if isinstance(value, dict):
                self.hits += 1
                return value
            self.misses += 1
            return None

    def put(self, key: str, response: Mapping[str, Any]) -> None:
        """Store ``response`` (JSON-serialisable) under ``key``; problems are logged, not raised."""
        try:
            text = json.dumps(response, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as err:
            log.warning("request cache: response not stored (%s)", err)
            return
        with self._lock:
            conn = self._connection()
            if conn is None:
                return
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO responses (key, response, created) VALUES (?, ?, ?)",
                    (key, text, time.time()),
                )
                self.stores += 1
            except sqlite3.Error as err:
                if _is_corrupt(err):
                    self._recreate(err)
                elif not self._write_warned:
                    self._write_warned = True
                    log.warning("request cache %s: a response was not stored (%s)", self.path, err)

    def __len__(self) -> int:
        with self._lock:
            conn = self._connection()
            if conn is None:
                return 0
            try:
                return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
            except sqlite3.Error:
                return 0

    def close(self) -> None:
        """Close the file (a later ``get``/``put`` opens it again)."""
        with self._lock:
            self._drop_connection()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_conn"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RequestCache({str(self.directory)!r})"
