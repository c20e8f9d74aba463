"""The plan of a big input kept on disk: conversations in send order, their MESSAGES read back one
conversation at a time, so that sending ten million rows holds a window of them in memory, and a
resumed run starts from the file instead of planning the input again.

One SQLite file beside the journal (``<journal>.plan``), written by :mod:`bulkimport.bigfile`
bucket by bucket (each bucket: whole conversations, planned in memory by :func:`bulkimport.plan`):

* ``meta`` — ``recipe`` (what made it: the input's bytes and size, the mapping, the chunk size,
  the version), ``fingerprint``, ``counts`` (JSON), ``crm``, ``complete`` (set last: a build cut by
  a kill or Ctrl-C is never read as a plan);
* ``bconvs`` — one row per conversation of a bucket: chat key, message count, user blocks and chat
  block (canonical JSON), lock keys, first message time and first source position;
* ``convs`` — the same in send order (``conv`` = the conversation's index, as in an in-memory
  plan: by first message time, ties by source order);
* ``msgs`` — one row per message: row id, message id, date, text, files (JSON), operator, which
  user block, and the identity the journal keeps (user id, digest, body) — ~150 bytes per row;
* ``invalid`` — rows that are not sent, with their first code and every message;
* ``failures`` — every problem (a plan in memory holds up to :data:`EXAMPLES` of each code: a
  10M-row file with a warning on every row would otherwise need gigabytes), ``codes`` the rows
  with each.

The file is a cache of the plan: deleting it costs one more planning pass, never a row.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from .journal import attached
from .planning import Messages, Plan, _Columns
from .validation import FAILURE_COLUMNS

#: The layout of the file; another value means "plan again".
SCHEMA_VERSION = "2"
#: Problems of each code a stored plan holds in memory (the file keeps them all; counts are exact).
EXAMPLES = 1000
#: Messages kept decoded in memory, in whole conversations (the sender reads those at the front
#: of its queue): ~0.4 KiB each, so ~80 MiB; the last conversation read is kept whatever its size.
CACHE_ROWS = 200_000

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE bconvs (bucket INTEGER NOT NULL, bconv INTEGER NOT NULL, key TEXT NOT NULL,
    n INTEGER NOT NULL, users TEXT NOT NULL, chat TEXT NOT NULL, locks TEXT NOT NULL,
    first_date INTEGER NOT NULL, first_pos INTEGER NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (bucket, bconv)) WITHOUT ROWID;
CREATE TABLE convs (conv INTEGER PRIMARY KEY, bucket INTEGER NOT NULL, bconv INTEGER NOT NULL,
    key TEXT NOT NULL, n INTEGER NOT NULL, users TEXT NOT NULL, chat TEXT NOT NULL, locks TEXT NOT NULL,
    hash TEXT NOT NULL);
CREATE TABLE msgs (bucket INTEGER NOT NULL, bconv INTEGER NOT NULL, seq INTEGER NOT NULL,
    rid INTEGER NOT NULL, mid TEXT NOT NULL, date INTEGER NOT NULL, text TEXT, files TEXT, op INTEGER,
    ucode INTEGER NOT NULL, uid TEXT NOT NULL, digest TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (bucket, bconv, seq)) WITHOUT ROWID;
CREATE TABLE invalid (rid INTEGER PRIMARY KEY, code TEXT NOT NULL, message TEXT NOT NULL);
CREATE TABLE failures (row INTEGER, field TEXT, code TEXT, level TEXT, message TEXT, value TEXT);
CREATE TABLE codes (code TEXT NOT NULL, level TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (code, level));
"""


#: A conversation read back: row ids, MESSAGES, chat key, lock keys, journal keys.
_Loaded = tuple[list[int], Messages, str, frozenset[str], list[str]]


def path_for(journal: Path) -> Path:
    """Where the stored plan of the journal ``journal`` lives."""
    return journal.with_name(journal.name + ".plan")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _invalid_digest(cur: sqlite3.Cursor) -> str:
    seen = hashlib.sha256()
    for (rid,) in cur.execute("SELECT CAST(rid AS TEXT) FROM invalid ORDER BY rid"):
        seen.update(rid.encode() + b",")
    return "stored:" + seen.hexdigest()[:16]


def _conv_hash(head: tuple[Any, ...], rows: list[tuple[Any, ...]]) -> str:
    """What one conversation sends, hashed: its chat, user blocks and lock keys, and per message
    the row, id, date, text, files, operator and user block. The plan's fingerprint hashes these
    in send order, so it changes when and only when what would be sent changes (not with the
    options, the version or the parts that made it)."""
    data = orjson.dumps([head, [r[2:10] for r in rows]])
    return hashlib.sha256(data).hexdigest()[:32]


class PlanStore:
    """The stored plan's file: written by :meth:`create` … :meth:`finish`, read by :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._cache: OrderedDict[int, _Loaded] = OrderedDict()
        self._cached_rows = 0

    # ------------------------------------------------------------------ writing
    @classmethod
    def create(cls, path: Path) -> PlanStore:
        """A new, empty store at ``path`` (any file there is replaced)."""
        for old in (path, path.with_name(path.name + "-journal")):
            old.unlink(missing_ok=True)
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        # a cache: a build cut short is rebuilt (``complete`` is set last), so no rollback journal
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(_SCHEMA)
        return cls(path, conn)

    def write_bucket(self, bucket: int, plan: Plan, ids: Sequence[tuple[Any, ...]]) -> None:
        """Store the conversations of one bucket's in-memory ``plan`` (whole conversations) with the
        identity of each row (:func:`bulkimport.after.identities.planned` of the same plan)."""
        cur = self._conn.cursor()
        cur.execute("BEGIN")
        at = 0
        for bconv, conv in enumerate(plan.conversations):
            n = len(conv.rows)
            msgs = conv.messages
            assert isinstance(msgs, Messages)  # plans made by planning.plan()
            cols, a = msgs._cols, msgs._start
            local: dict[int, int] = {}
            for j in range(a, a + n):
                local.setdefault(cols.ucodes[j], len(local))
            users = [cols.users[u] for u in local]
            first_pos = min(int(r) for r in conv.rows)
            rows = [
                (bucket, bconv, seq, int(conv.rows[seq]), cols.mid[j], cols.date[j], cols.text[j],
                 None if cols.files is None or cols.files[j] is None else _dumps(cols.files[j]),
                 None if cols.ops is None else cols.ops[j], local[cols.ucodes[j]],
                 ids[at + seq][4], ids[at + seq][6], ids[at + seq][8])
                for seq, j in enumerate(range(a, a + n))
            ]
            chat = _dumps(cols.chats[cols.kcodes[a]])
            head = (conv.key, n, _dumps(users), chat, _dumps(sorted(conv.lock_keys)))
            cur.execute("INSERT INTO bconvs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (bucket, bconv, *head, cols.date[a], first_pos, _conv_hash(head, rows)))
            cur.executemany("INSERT INTO msgs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            at += n
        cur.execute("COMMIT")

    def write_failures(self, failures: pd.DataFrame) -> None:
        """One bucket's problems: the invalid rows, the counts per code, up to EXAMPLES of each."""
        if failures.empty:
            return
        cur = self._conn.cursor()
        cur.execute("BEGIN")
        counts = failures.groupby(["code", "level"], sort=False)["row"].nunique()  # rows, as the CLI counts
        cur.executemany(
            "INSERT INTO codes VALUES (?, ?, ?) ON CONFLICT (code, level) DO UPDATE SET n = n + excluded.n",
            [(str(c), str(lv), int(n)) for (c, lv), n in counts.items()],
        )
        errors = failures[failures["level"].astype(str) == "error"]
        for rid, group in errors.groupby("row", sort=False):
            text = "; ".join(str(m) for m in group["message"].tolist())
            first = str(group["code"].iloc[0])
            cur.execute("INSERT OR IGNORE INTO invalid VALUES (?, ?, ?)", (int(rid), first, text))
        cur.executemany(  # every problem, on disk (validate --problems lists them all)
            "INSERT INTO failures VALUES (?, ?, ?, ?, ?, ?)",
            [(int(r), str(f), str(c), str(lv), str(m), None if pd.isna(v) else str(v))
             for r, f, c, lv, m, v in failures[FAILURE_COLUMNS].itertuples(index=False)],
        )
        cur.execute("COMMIT")

    def finish(self, meta: dict[str, str]) -> None:
        """Put the conversations in send order and mark the store complete (its last write)."""
        cur = self._conn.cursor()
        cur.execute("BEGIN")
        cur.execute(
            "INSERT INTO convs (conv, bucket, bconv, key, n, users, chat, locks, hash) SELECT "
            "ROW_NUMBER() OVER (ORDER BY first_date, first_pos) - 1, bucket, bconv, key, n, users, chat, "
            "locks, hash FROM bconvs"
        )
        meta = {**meta, "invalid_digest": _invalid_digest(cur)}
        h = hashlib.sha256(b"bulkimport-stored-plan-v2\n" + meta.get("crm", "1").encode())
        for (one,) in cur.execute("SELECT hash FROM convs ORDER BY conv"):
            h.update(one.encode())
        meta = {**meta, "fingerprint": "stored-v2:" + h.hexdigest()[:40]}
        cur.execute("CREATE UNIQUE INDEX convs_bucket ON convs (bucket, bconv)")
        cur.execute("CREATE INDEX failures_row ON failures (row)")
        cur.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", sorted(meta.items()))
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('complete', '1')")
        cur.execute("COMMIT")

    # ------------------------------------------------------------------ reading
    @classmethod
    def open(cls, path: Path) -> PlanStore | None:
        """The complete store at ``path`` of this schema, else None (missing, cut short, older)."""
        if not path.is_file():
            return None
        try:
            conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error:
            return None
        if meta.get("complete") != "1" or meta.get("schema") != SCHEMA_VERSION:
            conn.close()
            return None
        return cls(path, conn)

    def meta(self) -> dict[str, str]:
        """The store's meta values (recipe, fingerprint, counts …)."""
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def close(self) -> None:
        """Close the file (the plan's conversations cannot be read after this)."""
        self._conn.close()

    def sizes(self) -> list[int]:
        """Messages per conversation, in send order."""
        return [n for (n,) in self._conn.execute("SELECT n FROM convs ORDER BY conv")]

    def heads(self) -> Iterator[tuple[str, frozenset[str], int]]:
        """``(chat key, lock keys, messages)`` of every conversation in send order, streamed."""
        for key, locks, n in self._conn.execute("SELECT key, locks, n FROM convs ORDER BY conv"):
            yield key, frozenset(json.loads(locks)), n

    def conversation(self, ci: int) -> _Loaded:
        """Row ids, MESSAGES, chat key, lock keys and journal keys of conversation ``ci`` (the
        last CACHE_ROWS messages' conversations kept)."""
        hit = self._cache.get(ci)
        if hit is not None:
            self._cache.move_to_end(ci)
            return hit
        head = self._conn.execute(
            "SELECT bucket, bconv, key, users, chat, locks FROM convs WHERE conv = ?", (ci,)
        ).fetchone()
        if head is None:
            raise IndexError(f"no conversation {ci} in the stored plan {self.path}")
        bucket, bconv, key, users, chat, locks = head
        got = self._conn.execute(
            "SELECT rid, mid, date, text, files, op, ucode FROM msgs WHERE bucket = ? AND bconv = ? "
            "ORDER BY seq", (bucket, bconv)).fetchall()
        rids, mid, date, text, files, ops, ucodes = (
            (list(c) for c in zip(*got, strict=True)) if got else ([] for _ in range(7)))
        cols = _Columns(
            users=json.loads(users), chats=[json.loads(chat)], ucodes=ucodes, kcodes=[0] * len(rids),
            mid=mid, date=date, text=text,
            files=None if all(f is None for f in files) else [
                None if f is None else json.loads(f) for f in files],
            ops=None if all(o is None for o in ops) else ops, crm=self.crm,
        )
        found = (rids, Messages(cols, 0, len(rids)), key, frozenset(json.loads(locks)),
                 [str(r) for r in rids])
        self._cache[ci] = found
        self._cached_rows += len(rids)
        while self._cached_rows > CACHE_ROWS and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached_rows -= len(old[0])
        return found

    @property
    def crm(self) -> bool:
        """Whether messages carry ``disable_crm`` (the mapping's option, kept in meta)."""
        if not hasattr(self, "_crm"):
            self._crm = self.meta().get("crm", "1") == "1"
        return self._crm

    def invalid_digest(self) -> str:
        """A digest of the invalid rows' ids (what tells a resumed run the journal has them all)."""
        return self.meta().get("invalid_digest") or _invalid_digest(self._conn.cursor())

    def invalid_ids(self) -> np.ndarray:
        """The row ids of the rows that are not sent, in row order (int64)."""
        rids = self._conn.execute("SELECT rid FROM invalid ORDER BY rid")
        return np.fromiter((r for (r,) in rids), dtype="int64")

    def failures(self) -> pd.DataFrame:
        """Up to EXAMPLES problems of each code (the first rows), in row order, validation's tidy
        columns: what a plan holds in memory (:meth:`every_failure` streams them all)."""
        got = self._conn.execute(
            "SELECT row, field, code, level, message, value FROM (SELECT *, ROW_NUMBER() OVER "
            "(PARTITION BY code, level ORDER BY row) AS k FROM failures) WHERE k <= ? ORDER BY row",
            (EXAMPLES,)).fetchall()
        return pd.DataFrame(got, columns=FAILURE_COLUMNS).astype({"row": "int64"})

    def every_failure(self, batch: int = 100_000) -> Iterator[pd.DataFrame]:
        """Every problem of every row, in row order, ``batch`` at a time."""
        cur = self._conn.execute("SELECT row, field, code, level, message, value FROM failures ORDER BY row")
        while got := cur.fetchmany(batch):
            yield pd.DataFrame(got, columns=FAILURE_COLUMNS).astype({"row": "int64"})

    def failure_count(self) -> int:
        """How many problems there are in all."""
        return int(self._conn.execute("SELECT COUNT(*) FROM failures").fetchone()[0])

    def code_counts(self) -> dict[tuple[str, str], int]:
        """(code, level) → exact number of rows with that problem."""
        return {(c, lv): n for c, lv, n in self._conn.execute("SELECT code, level, n FROM codes")}


class StoredConversation:
    """One conversation of a stored plan: its size is known, its rows and MESSAGES are read on use."""

    __slots__ = ("_n", "_store", "index")

    def __init__(self, store: PlanStore, index: int, n: int) -> None:
        self._store, self.index, self._n = store, index, n

    def __len__(self) -> int:
        return self._n

    @property
    def rows(self) -> tuple[int, ...]:
        return tuple(self._store.conversation(self.index)[0])

    @property
    def messages(self) -> Messages:
        return self._store.conversation(self.index)[1]

    @property
    def key(self) -> str:
        return self._store.conversation(self.index)[2]

    @property
    def lock_keys(self) -> frozenset[str]:
        return self._store.conversation(self.index)[3]

    def chunks(self, size: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` slices of at most ``size`` messages, in order (as Conversation's)."""
        for start in range(0, self._n, size):
            yield start, min(start + size, self._n)


class StoredConversations(Sequence[StoredConversation]):
    """``plan.conversations`` of a stored plan: indexing reads one conversation; ``len`` and
    iteration need only the sizes (iterating does not read every row)."""

    def __init__(self, store: PlanStore) -> None:
        self._store = store
        self._sizes = store.sizes()

    def __len__(self) -> int:
        return len(self._sizes)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self._sizes)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError("conversation index out of range")
        return StoredConversation(self._store, j, self._sizes[j])

    def __iter__(self) -> Iterator[StoredConversation]:
        store = self._store
        for j, n in enumerate(self._sizes):
            yield StoredConversation(store, j, n)


class StoredKeys(Sequence[list[str]]):
    """The journal keys of each conversation's rows, read on use (the sender's ``keys``)."""

    def __init__(self, store: PlanStore, sizes: Sequence[int]) -> None:
        self._store, self._n = store, len(sizes)

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        return self._store.conversation(i)[4]


@dataclass
class StoredPlan(Plan):
    """A :class:`~bulkimport.planning.Plan` whose conversations are on disk (see the module doc).

    ``frame`` is empty (its ``attrs`` name the source); ``failures`` holds up to EXAMPLES problems
    per code and ``counts`` the exact figures; there is no ``canonical`` frame."""

    store: Any = None
    authors: pd.DataFrame | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def invalid_rows(self) -> pd.Index:
        return pd.Index(self.store.invalid_ids(), name="row")

    @property
    def messages(self) -> int:
        return int(self.counts.get("messages", 0))

    def keys(self) -> StoredKeys:
        """The journal keys of each conversation's rows (read on use)."""
        return StoredKeys(self.store, self.conversations._sizes)  # type: ignore[attr-defined]

    def matches(self, journal: Any) -> bool:
        """Whether ``journal`` recorded exactly this plan's rows (``row_ids``: row, conversation,
        position, chat, customer, message id, content digest): the same file planned before — in
        memory, by another version, or into a stored plan since rebuilt — whose fingerprint
        differs. One pass in SQL (~10 s per 10M rows), only when the fingerprints differ."""
        return _matches(self, journal)

    def gone_invalid(self, journal: Any) -> list[str]:
        """The journal's invalid rows this plan no longer has (a bad row deleted from the file)."""
        with attached(journal, self.store.path, "plan") as cur:
            return [r for (r,) in cur.execute(
                "SELECT rid FROM rows WHERE conv IS NULL AND status = 'invalid' AND rid NOT IN "
                "(SELECT CAST(rid AS TEXT) FROM plan.invalid)")]

    def journal_rows(self, journal: Any) -> int:
        """Journal every row (pending, or invalid with its code) not journalled yet, in SQL."""
        with attached(journal, self.store.path, "plan") as cur:
            before = cur.connection.total_changes
            cur.execute(
                "INSERT OR IGNORE INTO rows (rid, conv, seq, status) SELECT CAST(m.rid AS TEXT), c.conv, "
                "m.seq, 'pending' FROM plan.convs c JOIN plan.msgs m ON m.bucket = c.bucket AND "
                "m.bconv = c.bconv ORDER BY c.conv, m.seq"
            )
            cur.execute(
                "INSERT OR IGNORE INTO rows (rid, conv, seq, status, code, error) SELECT "
                "CAST(rid AS TEXT), NULL, NULL, 'invalid', code, message FROM plan.invalid"
            )
            return cur.connection.total_changes - before


def _matches(plan: StoredPlan, journal: Any) -> bool:
    """The body of :meth:`StoredPlan.matches`."""
    try:
        recorded = int(journal.query("SELECT COUNT(*) FROM row_ids")[0][0])
    except sqlite3.Error:  # a journal from before row_ids: nothing to compare with
        return False
    if recorded != int(plan.counts.get("valid", -1)):
        return False
    with attached(journal, plan.store.path, "plan") as cur:
        differs = cur.execute(
            "SELECT 1 FROM plan.convs c JOIN plan.msgs m ON m.bucket = c.bucket AND m.bconv = c.bconv "
            "LEFT JOIN main.row_ids r ON r.rid = CAST(m.rid AS TEXT) WHERE r.rid IS NULL OR "
            "r.conv IS NOT c.conv OR r.seq IS NOT m.seq OR r.chat IS NOT c.key OR r.user IS NOT m.uid "
            "OR r.mid IS NOT m.mid OR r.digest IS NOT m.digest LIMIT 1"
        ).fetchone()
    return differs is None


def stored_plan(store: PlanStore, mapping: Any, source: str, chunk_size: int) -> StoredPlan:
    """The plan a complete ``store`` holds, for the sender (``mapping``: the one that made it)."""
    meta = store.meta()
    counts = {k: int(v) for k, v in json.loads(meta["counts"]).items()}
    frame = pd.DataFrame(index=pd.Index([], name="row", dtype="int64"))
    frame.attrs["source"] = source
    authors = pd.DataFrame(json.loads(meta["authors"])) if meta.get("authors") else None
    return StoredPlan(
        frame=frame, conversations=StoredConversations(store),  # type: ignore[arg-type]
        failures=store.failures(), chunk_size=chunk_size, fingerprint=meta["fingerprint"],
        mapping=mapping, counts=counts, canonical=None, store=store, authors=authors,
    )


def is_stored(plan: Any) -> bool:
    """Whether ``plan`` is a :class:`StoredPlan` (its rows are on disk)."""
    return isinstance(plan, StoredPlan)


def marks(journal: Any) -> Iterable[tuple[int, int, str, int | None, str | None]]:
    """The journal's rows that are not pending, in (conv, seq) order: what the schedule of a stored
    plan is built from (pending rows are absent)."""
    return journal.cursor(
        "SELECT conv, seq, status, hold, code FROM rows WHERE status != 'pending' AND conv IS NOT NULL "
        "ORDER BY conv, seq"
    )


__all__ = ["PlanStore", "StoredPlan", "is_stored", "path_for", "stored_plan"]
