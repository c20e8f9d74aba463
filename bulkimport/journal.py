"""The durable send journal: one SQLite file per import that makes a multi-day run resumable.

* **Where**: ``state=`` if given, else beside the input file as ``<input>.bulkimport.db`` (the input
  path is ``plan.frame.attrs["source"]``, set by :func:`bulkimport.read`); without either the sender
  asks for ``state=`` (``--state``).
* **Bound** to (portal, line, connector, plan fingerprint): reopening it for another input, mapping
  or target raises :class:`JournalMismatchError` naming what changed — never a silent mix.
* **Write-ahead**: before a request leaves, its rows are committed as ``inflight``; after the answer
  they are committed as ``sent`` / ``failed`` / ``unknown`` / back to ``pending`` (refused before
  execution) in one transaction. A process killed at any instant therefore leaves each row either
  settled or ``inflight``; the next open turns ``inflight`` into ``unknown`` (code ``interrupted``),
  so a message that may have reached the portal is never sent twice automatically.
* **Durability**: WAL mode with ``synchronous=FULL``. WAL with ``NORMAL`` survives a killed process
  but may lose the last commits on a power cut or OS crash; losing an ``inflight`` mark would turn
  a possibly-delivered row back into ``pending`` and duplicate it, and the fsync per request is
  nothing next to a network round trip.
* One run at a time: the sender holds an exclusive ``flock`` on ``<journal>.lock`` while sending.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .codes import DELETED, INFLIGHT, PENDING, SENT, STATUS_ORDER, UNKNOWN
from .errors import ConfigError, JournalMismatchError

SCHEMA_VERSION = "1"

#: The ``rows`` columns :meth:`Journal.columns` may read.
_COLUMNS = frozenset(
    ["rid", "conv", "seq", "status", "hold", "code", "error", "attempts", "message_id", "user_id",
     "chat_id", "session_id", "sent_at"]
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    rid TEXT PRIMARY KEY,           -- the row id as JSON
    conv INTEGER,                   -- conversation index in the plan (NULL for invalid rows)
    seq INTEGER,                    -- position inside the conversation
    status TEXT NOT NULL,
    hold INTEGER NOT NULL DEFAULT 0,-- 1: later rows of the conversation wait for this one
    code TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    message_id TEXT,
    user_id TEXT,
    chat_id TEXT,
    session_id TEXT,
    sent_at REAL,
    request INTEGER,
    prev_status TEXT,               -- the state before the current flight (restored on refusal)
    prev_code TEXT,
    prev_error TEXT,
    prev_hold INTEGER
);
CREATE INDEX IF NOT EXISTS rows_conv ON rows (conv, seq);
-- No index on status: every row changes status twice per run (inflight, then settled) and an
-- index would be rewritten each time; only recover() filters by status alone, once per run.
DROP INDEX IF EXISTS rows_status;
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    run INTEGER,
    started_at REAL,
    finished_at REAL,
    outcome TEXT,
    rows INTEGER
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started_at REAL,
    finished_at REAL,
    stopped TEXT,
    interrupted INTEGER NOT NULL DEFAULT 0,
    sent INTEGER NOT NULL DEFAULT 0
);
"""


def row_key(rid: Hashable) -> str:
    """The journal's text key for a row id (numpy scalars become Python ones first)."""
    if type(rid) is int:  # the common case (spreadsheet row numbers): json.dumps(n) == str(n)
        return str(rid)
    item = getattr(rid, "item", None)
    if callable(item):
        with contextlib.suppress(TypeError, ValueError):
            rid = item()
    return json.dumps(rid, default=str, ensure_ascii=False)


def default_path(source: str | Path | None, state: str | Path | None) -> Path:
    """``state`` if given, else ``<source>.bulkimport.db``; neither → ConfigError."""
    if state:
        return Path(state)
    if source:
        return Path(f"{source}.bulkimport.db")
    raise ConfigError(
        "no journal location: the plan does not name its input file, so pass state=… "
        "(--state PATH) for the journal that makes the import resumable"
    )


def _connect(path: Path) -> sqlite3.Connection:
    """A writable connection: WAL with ``synchronous=FULL`` (see the module docstring)."""
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection without pragmas: inspecting a file must never change it."""
    uri = path.resolve().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0, check_same_thread=False)


def _run_record(row: Sequence[Any]) -> dict[str, Any]:
    """One ``runs`` row as :meth:`Journal.summary` reports it."""
    return {
        "id": row[0],
        "started_at": row[1],
        "finished_at": row[2],
        "stopped": row[3],
        "interrupted": bool(row[4]),
        "sent": row[5],
    }


@dataclass
class RowUpdate:
    """The settled outcome of one row."""

    rid: str
    status: str
    code: str | None = None
    error: str | None = None
    hold: int = 0
    message_id: str | None = None
    user_id: str | None = None
    chat_id: str | None = None
    session_id: str | None = None
    sent_at: float | None = None


class Journal:
    """One import's journal (see the module docstring)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool = False) -> None:
        self.path = path
        self._conn = conn
        self._lockfile: Any = None
        self._readonly = readonly
        #: the previous fingerprint when :meth:`bind` (``rebind=True``) met an edited input
        self.rebound: str | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | Path) -> Journal:
        """Open an existing journal (for ``bulkimport status``); a missing file is a ConfigError."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"no journal at {path}: check --state (or the input file's name)")
        # Read-only and without pragmas: inspecting a file (``bulkimport status``) must never
        # change it — a 0-byte file must not become a database, a foreign SQLite file must not be
        # switched to WAL. The first write (resolve_unknown) reopens it writable.
        return cls(path, _open_existing(path), readonly=True)

    def _writable(self) -> None:
        """Swap a read-only connection (from :meth:`open`) for a writable one before a write."""
        if not self._readonly:
            return
        conn = _connect(self.path)
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        self._conn = conn
        self._readonly = False

    @classmethod
    def bind(
        cls,
        path: str | Path,
        *,
        portal: str,
        line: str,
        connector: str,
        fingerprint: str,
        source: str | None = None,
        rebind: bool = False,
    ) -> Journal:
        """Create the journal, or reopen it after checking it belongs to this import and target.

        ``rebind``: a changed fingerprint (an edited input) is not refused; the journal comes back
        with ``rebound`` set to the old fingerprint, for :mod:`bulkimport.after.rebind` to match
        the rows by identity (a changed portal, line or connector is still refused)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = _connect(path)
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"--state {path} is not a usable journal ({exc}); choose another path"
            ) from None
        journal = cls(path, conn)
        want = {"portal": portal, "line": str(line), "connector": connector, "fingerprint": fingerprint}
        have = journal.meta()
        if not have:
            with journal._tx() as cur:
                cur.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        *want.items(),
                        ("version", SCHEMA_VERSION),
                        ("source", source or ""),
                        ("created_at", repr(time.time())),
                    ],
                )
            return journal
        mismatch = target_mismatch(path, have, want)
        if mismatch:
            journal.close()
            raise JournalMismatchError(mismatch)
        if have.get("fingerprint") != fingerprint and rebind:
            journal.rebound = have.get("fingerprint")
        elif have.get("fingerprint") != fingerprint:
            journal.close()
            raise JournalMismatchError(
                f"journal {path} was written for a different input or mapping (the plan's fingerprint "
                "changed): resume with the original file and mapping, or pass a new --state to start "
                "a separate import (rows already sent would be sent again)"
            )
        return journal

    def close(self) -> None:
        """Release the run lock and close the database."""
        self.unlock()
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    # ------------------------------------------------------------------ run lock
    def lock(self) -> None:
        """Take the exclusive run lock; another live run on this journal → ConfigError."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            return
        fh = open(f"{self.path}.lock", "a+")  # noqa: SIM115 - held open for the run
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise ConfigError(
                f"another bulkimport run is using the journal {self.path}; wait for it to finish "
                "(or stop it) before running again"
            ) from None
        self._lockfile = fh

    def unlock(self) -> None:
        """Release the run lock (closing the file releases the flock)."""
        if self._lockfile is not None:
            self._lockfile.close()
            self._lockfile = None

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        self._writable()
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction, for the modules that keep their own tables here (``after/``)."""
        with self._tx() as cur:
            yield cur

    def cursor(self, sql: str, params: Sequence[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of one read-only SELECT, streamed (for results too big to fetch at once)."""
        yield from self._conn.execute(sql, tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read-only SELECT with bound ``params`` (never interpolated user text)."""
        return self._conn.execute(sql, tuple(params)).fetchall()

    def meta(self) -> dict[str, str]:
        """The journal's binding and bookkeeping values."""
        try:
            return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError:
            return {}

    def add_rows(
        self, rows: Iterable[tuple[str, int | None, int | None, str, str | None, str | None]]
    ) -> int:
        """Insert rows ``(rid, conv, seq, status, code, error)`` not yet journalled; returns how many."""
        with self._tx() as cur:
            before = self._conn.total_changes
            cur.executemany(
                "INSERT OR IGNORE INTO rows (rid, conv, seq, status, code, error) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self._conn.total_changes - before

    def recover(self) -> int:
        """Rows left ``inflight`` by a killed run become ``unknown`` (code ``interrupted``)."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE rows SET status=?, hold=1, code='interrupted', "
                "error='the previous run ended while this row was in flight' WHERE status=?",
                (UNKNOWN, INFLIGHT),
            )
            return cur.rowcount

    def start_run(self, now: float) -> int:
        """Record the start of a run."""
        with self._tx() as cur:
            cur.execute("INSERT INTO runs (started_at) VALUES (?)", (now,))
            return int(cur.lastrowid or 0)

    def finish_run(self, run: int, now: float, stopped: str | None, interrupted: bool, sent: int) -> None:
        """Record how a run ended."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE runs SET finished_at=?, stopped=?, interrupted=?, sent=? WHERE id=?",
                (now, stopped, int(interrupted), sent, run),
            )

    def mark_inflight(self, rids: Sequence[str], run: int, now: float) -> int:
        """Commit ``rids`` as in flight (attempts + 1) before their request leaves; returns its id."""
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO requests (run, started_at, rows) VALUES (?, ?, ?)", (run, now, len(rids))
            )
            request = int(cur.lastrowid or 0)
            cur.executemany(
                "UPDATE rows SET prev_status=status, prev_code=code, prev_error=error, prev_hold=hold, "
                "status=?, attempts=attempts+1, request=? WHERE rid=?",
                [(INFLIGHT, request, rid) for rid in rids],
            )
            return request

    def settle(
        self,
        request: int | None,
        updates: Sequence[RowUpdate],
        now: float,
        outcome: str,
        revert: Sequence[str] = (),
    ) -> None:
        """Commit the outcome of every row of one request in one transaction; ``revert``: rows of
        the same request refused before execution, put back to their pre-flight state in that
        same transaction (a kill between two commits would split one answer)."""
        with self._tx() as cur:
            if revert:
                self._revert(cur, revert)
            self._settle(cur, updates)
            self._finish_request(cur, request, now, outcome)

    @staticmethod
    def _finish_request(cur: sqlite3.Cursor, request: int | None, now: float, outcome: str) -> None:
        """Record when and how a request ended (no-op for rows settled without a request)."""
        if request is not None:
            cur.execute("UPDATE requests SET finished_at=?, outcome=? WHERE id=?", (now, outcome, request))

    @staticmethod
    def _settle(cur: sqlite3.Cursor, updates: Sequence[RowUpdate]) -> None:
        cur.executemany(
            "UPDATE rows SET status=?, code=?, error=?, hold=?, message_id=COALESCE(?, message_id), "
            "user_id=COALESCE(?, user_id), chat_id=COALESCE(?, chat_id), "
            "session_id=COALESCE(?, session_id), sent_at=COALESCE(?, sent_at) WHERE rid=?",
            [
                (
                    u.status,
                    u.code,
                    u.error,
                    u.hold,
                    u.message_id,
                    u.user_id,
                    u.chat_id,
                    u.session_id,
                    u.sent_at,
                    u.rid,
                )
                for u in updates
            ],
        )

    def revert(self, request: int | None, rids: Sequence[str], now: float, outcome: str) -> None:
        """Refused before execution: the rows go back to their pre-flight state, attempts − 1."""
        with self._tx() as cur:
            self._revert(cur, rids)
            self._finish_request(cur, request, now, outcome)

    @staticmethod
    def _revert(cur: sqlite3.Cursor, rids: Sequence[str]) -> None:
        cur.executemany(
            "UPDATE rows SET status=COALESCE(prev_status, ?), code=prev_code, error=prev_error, "
            "hold=COALESCE(prev_hold, 0), attempts=MAX(0, attempts-1) "
            "WHERE rid=? AND status=?",
            [(PENDING, rid, INFLIGHT) for rid in rids],
        )

    def unknown_if_inflight(self, rids: Sequence[str], code: str, error: str) -> None:
        """Rows still in flight (e.g. on Ctrl-C) become ``unknown``."""
        with self._tx() as cur:
            cur.executemany(
                "UPDATE rows SET status=?, hold=1, code=?, error=? WHERE rid=? AND status=?",
                [(UNKNOWN, code, error, rid, INFLIGHT) for rid in rids],
            )

    def note_pending(self, notes: Sequence[tuple[str, str | None, str | None]]) -> None:
        """Set the why-code of rows that stay ``pending`` (``(rid, code, error)``)."""
        with self._tx() as cur:
            cur.executemany(
                "UPDATE rows SET code=?, error=? WHERE rid=? AND status=?",
                [(code, error, rid, PENDING) for rid, code, error in notes],
            )

    def resolve_unknown(self, arrived: bool, rows: Iterable[Hashable] | None = None) -> int:
        """Settle ``unknown`` rows on the user's word after checking the open line.

        ``arrived=True``: the messages are there → ``sent`` (code ``confirmed-arrived``; no
        Bitrix24 ids are known), and their conversations continue on the next run without
        re-sending them. ``arrived=False``: they are not there → ``pending``, sent on the next run
        (what ``retry_unknown`` does). ``rows``: only these row ids (default: every unknown row).
        Returns how many rows changed.
        """
        status, code = (SENT, "confirmed-arrived") if arrived else (PENDING, None)
        took = self._lockfile is None
        if took:
            self.lock()  # a live run → ConfigError: its in-flight rows are not unknown yet
        try:
            # Rows a killed run left ``inflight`` are what ``status`` counts as unknown: settle
            # them as the next run would (``interrupted``) before applying the user's word.
            self.recover()
            return self._resolve(status, code, rows)
        finally:
            if took:
                self.unlock()

    def _resolve(self, status: str, code: str | None, rows: Iterable[Hashable] | None) -> int:
        with self._tx() as cur:
            if rows is None:
                cur.execute(
                    "UPDATE rows SET status=?, code=?, error=NULL, hold=0 WHERE status=?",
                    (status, code, UNKNOWN),
                )
                return cur.rowcount
            before = self._conn.total_changes
            cur.executemany(
                "UPDATE rows SET status=?, code=?, error=NULL, hold=0 WHERE rid=? AND status=?",
                [(status, code, row_key(r), UNKNOWN) for r in rows],
            )
            return self._conn.total_changes - before

    # ------------------------------------------------------------------ read-back (bulkimport.after)
    def unknown_rows(self) -> list[tuple[str, int, int, float | None]]:
        """``(rid, conv, seq, started_at)`` of every planned row whose outcome is unknown (or left
        in flight), with when the request that carried it started (wall time; None: not known)."""
        return self._conn.execute(
            "SELECT r.rid, r.conv, r.seq, q.started_at FROM rows r LEFT JOIN requests q ON q.id = r.request "
            "WHERE r.status IN (?, ?) AND r.conv IS NOT NULL ORDER BY r.conv, r.seq",
            (UNKNOWN, INFLIGHT),
        ).fetchall()

    def portal_chats(self) -> dict[int, tuple[str, str | None]]:
        """Conversation index → (CHAT_ID, latest SESSION_ID) the portal gave its sent rows."""
        out: dict[int, tuple[str, str | None]] = {}
        for conv, chat, session in self._conn.execute(
            "SELECT conv, chat_id, session_id FROM rows WHERE chat_id IS NOT NULL AND conv IS NOT NULL "
            "ORDER BY conv, seq"
        ):
            out[int(conv)] = (str(chat), session)
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement of a module that owns a table of this journal (fixed SQL, bound values)."""
        with self._tx() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement per item in one transaction (fixed SQL, bound values)."""
        with self._tx() as cur:
            cur.executemany(sql, rows)

    # ------------------------------------------------------------------ reading
    def rows(self, *, skip_pending: bool = False) -> pd.DataFrame:
        """Every journalled row (``rid`` is the JSON row key), in insertion order; with
        ``skip_pending`` only rows that are not ``pending`` (what a run needs to schedule: on a
        first run none, instead of a frame of every row).

        No ORDER BY: callers index by ``rid``, and walking the (conv, seq) index to sort costs as
        much again as the plain scan (~0.15 CPU s per 100,000 rows, twice per run)."""
        query = (
            "SELECT rid, conv, seq, status, hold, code, error, attempts, message_id, user_id, chat_id, "
            "session_id, sent_at FROM rows"
        )
        filtered = (f"{query} WHERE status != ?", (PENDING,)) if skip_pending else (query, ())
        cur = self._conn.execute(*filtered)
        cols = [d[0] for d in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=cols)

    def columns(self, names: Sequence[str]) -> tuple[list[str], dict[str, tuple[Any, ...]]]:
        """The row keys and the named columns of every journalled row, in the same (insertion)
        order: what :meth:`rows` gives without building a DataFrame (the sender's result frame
        takes its columns from here; ~0.15 CPU s less per 100,000 rows)."""
        unknown = [n for n in names if n not in _COLUMNS]
        if unknown or not names:
            raise ValueError(f"no journal column {unknown[0]!r}" if unknown else "no columns asked for")
        query = f"SELECT rid, {', '.join(names)} FROM rows"  # noqa: S608 (known column names only)
        fetched = self._conn.execute(query).fetchall()
        if not fetched:
            return [], {n: () for n in names}
        rids, *cols = zip(*fetched, strict=True)
        return list(rids), dict(zip(names, cols, strict=True))

    def counts(self) -> dict[str, int]:
        """Rows per status."""
        return dict(self._conn.execute("SELECT status, COUNT(*) FROM rows GROUP BY status").fetchall())

    def summary(self) -> dict[str, Any]:
        """What ``bulkimport status`` prints: binding, counts per status, top codes, runs."""
        return _summary(self)


@contextlib.contextmanager
def attached(journal: Journal, path: Path, name: str) -> Iterator[sqlite3.Cursor]:
    """One write transaction of ``journal`` with the SQLite file ``path`` attached as ``name`` (a
    fixed identifier of the caller's, never user text): copying a stored plan's rows in SQL."""
    if not name.isidentifier():
        raise ValueError(f"not an SQL identifier: {name!r}")
    journal._writable()
    journal._conn.execute(f"ATTACH DATABASE ? AS {name}", (str(path),))
    try:
        with journal._tx() as cur:
            yield cur
    finally:
        journal._conn.execute(f"DETACH DATABASE {name}")


def target_mismatch(path: str | Path, have: Mapping[str, str], want: Mapping[str, Any]) -> str | None:
    """The error of a journal bound (``have``) to another portal, line or connector than ``want``
    (keys left out of ``want`` are not compared), or None."""
    changed = [k for k in ("portal", "line", "connector") if k in want and have.get(k) != str(want[k])]
    if not changed:
        return None
    what = ", ".join(f"{k} {have.get(k)!r} (now {str(want[k])!r})" for k in changed)
    return (
        f"journal {path} belongs to another target: {what}; keep the original "
        "--portal/--line/--connector to resume, or pass a new --state for a new import"
    )


def check_target(path: str | Path, **want: Any) -> None:
    """Refuse, before any portal set-up or preflight, a journal at ``path`` bound to another
    portal, line or connector (``want``: the ones known; JournalMismatchError as :meth:`Journal.bind`
    raises it); no journal there, or a file that is not one, is left to the run."""
    path = Path(path)
    if not path.is_file():
        return
    try:
        journal = Journal.open(path)
    except ConfigError:  # not a journal: Journal.bind says so with its fix
        return
    try:
        have = journal.meta()
    finally:
        journal.close()
    mismatch = target_mismatch(path, have, want) if have else None
    if mismatch:
        raise JournalMismatchError(mismatch)


def _summary(journal: Journal) -> dict[str, Any]:
    """The body of :meth:`Journal.summary` (a function, so that the class stays short)."""
    meta = journal.meta()
    counts = dict.fromkeys((s for s in STATUS_ORDER if s != DELETED), 0)  # deleted: only after undo
    raw = journal.counts()
    for status, n in raw.items():
        key = UNKNOWN if status == INFLIGHT else status  # a live or killed run's in-flight rows
        counts[key] = counts.get(key, 0) + n
    codes = journal._conn.execute(
        "SELECT code, COUNT(*) FROM rows WHERE code IS NOT NULL AND status != ? "
        "GROUP BY code ORDER BY COUNT(*) DESC, code LIMIT 10",
        (SENT,),
    ).fetchall()
    runs = journal._conn.execute(
        "SELECT id, started_at, finished_at, stopped, interrupted, sent FROM runs ORDER BY id"
    ).fetchall()
    requests = journal._conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    return {
        "journal": str(journal.path),
        "portal": meta.get("portal"),
        "line": meta.get("line"),
        "connector": meta.get("connector"),
        "source": meta.get("source") or None,
        "fingerprint": meta.get("fingerprint"),
        # the last run's own resume command (JSON list; bulkimport.job writes it): every option
        # that shaped the import (--operator, --timezone, --mapping …), so status can repeat it
        "resume_command": json.loads(meta["resume_command"]) if meta.get("resume_command") else None,
        "counts": counts,
        "total": sum(counts.values()),
        "top_codes": [(c, n) for c, n in codes],
        "requests": int(requests),
        "runs": [_run_record(r) for r in runs],
        "complete": counts[PENDING] == 0 and counts[UNKNOWN] == 0,
        # rows journalled as on the wire: a live run's current request, or a killed run's
        # last one (counted as unknown above until the next run settles them)
        "in_flight": int(raw.get(INFLIGHT, 0)),
    }


def _open_existing(path: Path) -> sqlite3.Connection:
    """A read-only connection to the journal at ``path``, or a ConfigError saying what it is not."""
    try:
        conn = _connect_readonly(path)
    except sqlite3.DatabaseError:
        raise ConfigError(f"{path} is not a bulkimport journal (not an SQLite file)") from None
    try:
        row = conn.execute("SELECT value FROM meta WHERE key='version'").fetchone()
        conn.execute("SELECT rid, status FROM rows LIMIT 0").fetchall()
    except sqlite3.DatabaseError:
        conn.close()
        raise ConfigError(f"{path} is not a bulkimport journal") from None
    if row is None:
        conn.close()
        raise ConfigError(f"{path} is not a bulkimport journal (no version)")
    return conn
