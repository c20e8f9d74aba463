"""The sandbox's SQLite store and its inspection views (``portal.store``).

One connection guarded by a re-entrant lock serves every request thread; values from requests are
always bound as SQL parameters.

Group commit: while a thread handles an HTTP request (:meth:`Store.request`), its writes join one
open SQLite transaction instead of committing one by one; the transaction commits when the request
has run (before its answer is written or its connection dropped), and while the request spends
simulated time, before a sleep once its writes have waited ``COMMIT_INTERVAL`` (50 ms real; see
``Work.spend``), so another process watching the file sees a long request's items appear as they
are made. Every thread shares the one connection, so each sees the others' writes at once,
committed or not, as before. Writes outside a request (the Python API: tokens at start,
``expire_tokens``, ``issue_code``) commit at once. Each :meth:`Store.transaction` block is a
SAVEPOINT: a block that fails undoes only itself.

The inspection methods return pandas DataFrames so tests and notebooks can assert "exactly once,
in order" in one line (:meth:`Store.duplicates`, :meth:`Store.out_of_order`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    access_token TEXT PRIMARY KEY, refresh_token TEXT NOT NULL, client_id TEXT NOT NULL,
    scope TEXT NOT NULL, user_id INTEGER NOT NULL, issued REAL NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    refresh_token TEXT PRIMARY KEY, client_id TEXT NOT NULL, scope TEXT NOT NULL,
    user_id INTEGER NOT NULL, expires REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS auth_codes (
    code TEXT PRIMARY KEY, client_id TEXT NOT NULL, expires REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS lines (id INTEGER PRIMARY KEY, name TEXT NOT NULL, active TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS connectors (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, icon TEXT NOT NULL, placement_handler TEXT NOT NULL,
    chat_group INTEGER NOT NULL, options TEXT NOT NULL, client_id TEXT NOT NULL,
    registered REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS connector_lines (
    connector TEXT NOT NULL, line INTEGER NOT NULL, active INTEGER NOT NULL DEFAULT 0,
    data TEXT, updated REAL NOT NULL, PRIMARY KEY (connector, line));
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, connector TEXT NOT NULL, external_id TEXT NOT NULL, name TEXT,
    last_name TEXT, gender TEXT, email TEXT, phone TEXT, picture TEXT, url TEXT, flags TEXT NOT NULL,
    created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS users_ext ON users (connector, external_id);
CREATE TABLE IF NOT EXISTS chats (
    id INTEGER PRIMARY KEY, connector TEXT NOT NULL, line INTEGER NOT NULL, chat_id TEXT NOT NULL,
    user_key TEXT NOT NULL, entity_id TEXT NOT NULL, name TEXT, url TEXT, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS chats_entity ON chats (entity_id);
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY, chat INTEGER NOT NULL, opened REAL NOT NULL, closed REAL);
CREATE INDEX IF NOT EXISTS sessions_chat ON sessions (chat);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, line INTEGER NOT NULL, connector TEXT NOT NULL,
    chat_id TEXT NOT NULL, user_id TEXT NOT NULL, message_id TEXT, date INTEGER, text TEXT,
    files TEXT NOT NULL, author_id INTEGER, b24_user_id INTEGER NOT NULL, b24_chat_id INTEGER NOT NULL,
    session_id INTEGER NOT NULL, received REAL NOT NULL, request INTEGER NOT NULL,
    disable_crm INTEGER NOT NULL, flags TEXT NOT NULL, updated REAL, deleted REAL);
CREATE INDEX IF NOT EXISTS messages_key ON messages (connector, line, chat_id, message_id);
-- The chat as the messenger shows it: every message of a Bitrix24 chat with its messenger id, the
-- connector messages (seq -> messages) and the portal's own system messages (author 0).
CREATE TABLE IF NOT EXISTS im_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, chat INTEGER NOT NULL, session INTEGER NOT NULL,
    author INTEGER NOT NULL, seq INTEGER, text TEXT, params TEXT, date REAL NOT NULL);
CREATE INDEX IF NOT EXISTS im_messages_chat ON im_messages (chat, id);
CREATE INDEX IF NOT EXISTS im_messages_seq ON im_messages (seq);
CREATE TABLE IF NOT EXISTS chat_members (
    chat INTEGER NOT NULL, user INTEGER NOT NULL, joined REAL NOT NULL, PRIMARY KEY (chat, user));
-- What the portal fetched of each files[].url of a connector message (bytes are not kept).
CREATE TABLE IF NOT EXISTS downloads (
    id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL, position INTEGER NOT NULL,
    url TEXT NOT NULL, name TEXT, status TEXT NOT NULL, http_status INTEGER, size INTEGER,
    sha256 TEXT, content_type TEXT, error TEXT, fetched REAL NOT NULL);
CREATE INDEX IF NOT EXISTS downloads_seq ON downloads (seq);
-- Messages deleted behind the client's back (Store.lose_messages), for verify tests.
CREATE TABLE IF NOT EXISTS lost (
    seq INTEGER PRIMARY KEY, im_id INTEGER, line INTEGER, connector TEXT, chat_id TEXT,
    message_id TEXT, b24_chat_id INTEGER, session_id INTEGER, lost REAL NOT NULL);
CREATE TABLE IF NOT EXISTS disk_storages (
    id INTEGER PRIMARY KEY, app TEXT NOT NULL UNIQUE, root INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS disk_objects (
    id INTEGER PRIMARY KEY, storage INTEGER NOT NULL, parent INTEGER, type TEXT NOT NULL,
    name TEXT NOT NULL, size INTEGER, sha256 TEXT, created REAL NOT NULL, updated REAL NOT NULL,
    created_by INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS disk_objects_parent ON disk_objects (parent, name);
CREATE TABLE IF NOT EXISTS disk_uploads (nonce TEXT PRIMARY KEY, used REAL);
"""

#: First messenger message id (a portal with some history: ids are large, as on a real one).
IM_MESSAGE_ID_FLOOR = 80000

INT_COLUMNS = frozenset({
    "seq", "line", "date", "author_id", "b24_user_id", "b24_chat_id", "session_id", "request",
    "disable_crm", "copies", "id", "chat", "chat_group", "messages", "previous_seq",
    "previous_date", "session", "author", "position", "http_status", "size", "im_id",
    "files_fetched", "files_failed", "storage", "parent"})

MESSAGE_COLUMNS = [
    "seq", "line", "connector", "chat_id", "user_id", "message_id", "date", "text", "files",
    "author_id", "b24_user_id", "b24_chat_id", "session_id", "received", "request", "disable_crm",
    "flags", "updated", "deleted",
]
#: messages() adds how many of each message's files the portal could fetch (see downloads()).
FETCH_COLUMNS = ["files_fetched", "files_failed"]


class Store:
    """SQLite-backed state of one sandbox portal, plus DataFrame views for inspection."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self.lock = threading.RLock()
        self._local = threading.local()  # per thread: depth of Store.request scopes
        self._closed = False
        self._begun = 0.0  # perf_counter() when the open group transaction began
        with self.lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit is durable against a crash of the process (the sandbox's failure
            # mode); only a power loss could lose the last commits. See docs/sandbox.md.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._migrate()

    def _migrate(self) -> None:
        """Bring a database of an earlier sandbox up to this schema (new columns, messenger ids)."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(lines)")}
        if "settings" not in columns:
            self._db.execute("ALTER TABLE lines ADD COLUMN settings TEXT")
        self._db.execute("INSERT INTO sqlite_sequence (name, seq) SELECT 'im_messages', ? WHERE NOT EXISTS "
                         "(SELECT 1 FROM sqlite_sequence WHERE name = 'im_messages')", (IM_MESSAGE_ID_FLOOR,))
        # Connector messages stored before the messenger view existed get their messenger ids now.
        self._db.execute(
            "INSERT INTO im_messages (chat, session, author, seq, date) SELECT m.b24_chat_id, m.session_id, "
            "COALESCE(m.author_id, m.b24_user_id), m.seq, m.received FROM messages m WHERE NOT EXISTS "
            "(SELECT 1 FROM im_messages i WHERE i.seq = m.seq) ORDER BY m.seq")

    def close(self) -> None:
        """Commit what is pending and close the connection."""
        with self.lock:
            with suppress(sqlite3.Error):
                self.commit()
            self._closed = True
            self._db.close()

    # ------------------------------------------------------------------ group commit
    @contextmanager
    def request(self) -> Iterator[None]:
        """Scope of one HTTP request in this thread: its writes commit together when it ends."""
        local = self._local
        local.depth = getattr(local, "depth", 0) + 1
        try:
            yield
        finally:
            local.depth -= 1
            if local.depth == 0:
                self.commit()

    def _deferring(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    def commit(self, older_than: float = 0.0) -> None:
        """Commit the open group transaction (every thread's pending writes), if any — with
        ``older_than``, only if it began at least that many real seconds ago."""
        with self.lock:
            if self._closed or not self._db.in_transaction:
                return
            if older_than > 0 and time.perf_counter() - self._begun < older_than:
                return
            self._db.execute("COMMIT")

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._begun = time.perf_counter()

    # ------------------------------------------------------------------ low level
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write under the store lock (a SAVEPOINT of the group transaction)."""
        with self.lock:
            self._begin()
            self._db.execute("SAVEPOINT tx")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK TO tx")
                self._db.execute("RELEASE tx")
                if not self._deferring():
                    self.commit()
                raise
            self._db.execute("RELEASE tx")
            if not self._deferring():
                self.commit()

    def one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        """The first row of a query."""
        with self.lock:
            return self._db.execute(sql, tuple(params)).fetchone()

    def all(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Every row of a query."""
        with self.lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def run(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Execute one write statement (committed with the request, or at once outside one); lastrowid."""
        with self.lock:
            self._begin()
            try:
                return self._db.execute(sql, tuple(params)).lastrowid or 0
            finally:
                if not self._deferring():
                    self.commit()

    def meta(self, key: str, default: str | None = None) -> str | None:
        """A value of the meta table."""
        row = self.one("SELECT value FROM meta WHERE key = ?", (key,))
        return default if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        """Set a value of the meta table."""
        self.run("INSERT INTO meta (key, value) VALUES (?, ?) "
                 "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def next_id(self, table: str, floor: int) -> int:
        """The next integer id of ``table`` (ids start above ``floor``, like a portal's ids do)."""
        assert table in ("users", "chats", "sessions", "disk_storages", "disk_objects")
        row = self.one(f"SELECT COALESCE(MAX(id), ?) + 1 AS n FROM {table}", (floor,))  # noqa: S608
        assert row is not None
        return max(int(row["n"]), floor + 1)

    def insert_next(self, table: str, floor: int, values: tuple[Any, ...]) -> int:
        """Insert a row whose id is :meth:`next_id` (computed in the same statement); returns the id."""
        assert table in ("users", "chats", "sessions", "disk_storages", "disk_objects")
        marks = ", ".join("?" * len(values))
        sql = (f"INSERT INTO {table} VALUES ((SELECT MAX(COALESCE(MAX(id), ?), ?) + 1 FROM {table}), "  # noqa: S608
               f"{marks})")
        with self.lock:
            self._begin()
            try:
                return int(self._db.execute(sql, (floor, floor, *values)).lastrowid or 0)
            finally:
                if not self._deferring():
                    self.commit()

    # ------------------------------------------------------------------ lines
    def seed_lines(self, lines: list[tuple[int, str, str]]) -> None:
        """Create the open lines when the store is new."""
        with self.transaction() as db:
            if db.execute("SELECT COUNT(*) FROM lines").fetchone()[0] == 0:
                db.executemany("INSERT INTO lines (id, name, active) VALUES (?, ?, ?)", lines)

    def line(self, line_id: int) -> sqlite3.Row | None:
        """One open line."""
        return self.one("SELECT * FROM lines WHERE id = ?", (line_id,))

    # ------------------------------------------------------------------ inspection
    def _frame(self, sql: str, params: Iterable[Any] = (), columns: list[str] | None = None) -> pd.DataFrame:
        import pandas as pd

        rows = self.all(sql, params)
        frame = pd.DataFrame([dict(r) for r in rows]) if rows else pd.DataFrame(columns=columns or [])
        # ids and integer fields stay integers even where some are missing (nullable Int64)
        for column in INT_COLUMNS.intersection(frame.columns):
            frame[column] = frame[column].astype("Int64")
        return frame

    def lines(self) -> pd.DataFrame:
        """Open lines: id, name, active ("Y"/"N")."""
        return self._frame("SELECT id, name, active FROM lines ORDER BY id", (), ["id", "name", "active"])

    def connectors(self) -> pd.DataFrame:
        """Registered connectors with their activation and data per line (one row per connector×line)."""
        cols = ["connector", "name", "chat_group", "placement_handler", "line", "active", "data"]
        frame = self._frame(
            "SELECT c.id AS connector, c.name, c.chat_group, c.placement_handler, cl.line, "
            "cl.active, cl.data FROM connectors c LEFT JOIN connector_lines cl ON cl.connector = c.id "
            "ORDER BY c.id, cl.line", (), cols)
        frame["active"] = frame["active"].astype("Int64")
        return frame

    def chats(self) -> pd.DataFrame:
        """Bitrix24 chats created for conversations (a duplicated ``entity_id`` is a duplicate dialog)."""
        cols = ["id", "connector", "line", "chat_id", "user_key", "entity_id", "name", "url", "created",
                "messages"]
        # one grouped pass over messages, not a count per chat: messages has no b24_chat_id index
        # (it would cost every insert on the send path), and a correlated count was chats × messages
        return self._frame(
            "SELECT c.*, COALESCE(m.n, 0) AS messages FROM chats c LEFT JOIN "
            "(SELECT b24_chat_id, COUNT(*) AS n FROM messages GROUP BY b24_chat_id) m "
            "ON m.b24_chat_id = c.id ORDER BY c.id", (), cols)

    def users(self) -> pd.DataFrame:
        """Technical users created per external user (``flags`` notes what the portal had to fix)."""
        cols = ["id", "connector", "external_id", "name", "last_name", "gender", "email", "phone",
                "picture", "url", "flags", "created"]
        return self._frame("SELECT * FROM users ORDER BY id", (), cols)

    def sessions(self) -> pd.DataFrame:
        """Open-line sessions."""
        return self._frame("SELECT * FROM sessions ORDER BY id", (), ["id", "chat", "opened", "closed"])

    def messages(self, chat_id: str | None = None, line: int | None = None) -> pd.DataFrame:
        """Every stored message in arrival order (``seq``), optionally for one external chat / line."""
        sql = ("SELECT m.*, d.ok AS files_fetched, d.failed AS files_failed FROM messages m LEFT JOIN "
               "(SELECT seq, SUM(status = 'ok') AS ok, SUM(status != 'ok') AS failed FROM downloads "
               "GROUP BY seq) d ON d.seq = m.seq WHERE 1=1")
        params: list[Any] = []
        if chat_id is not None:
            sql += " AND chat_id = ?"
            params.append(str(chat_id))
        if line is not None:
            sql += " AND line = ?"
            params.append(int(line))
        return self._frame(sql + " ORDER BY m.seq", params, [*MESSAGE_COLUMNS, *FETCH_COLUMNS])

    def duplicates(self) -> pd.DataFrame:
        """Messages whose (connector, line, chat_id, message_id) was stored more than once (+ ``copies``)."""
        return self._frame(
            "SELECT m.*, d.copies FROM messages m JOIN (SELECT connector, line, chat_id, message_id, "
            "COUNT(*) AS copies FROM messages WHERE message_id IS NOT NULL "
            "GROUP BY connector, line, chat_id, message_id HAVING COUNT(*) > 1) d "
            "USING (connector, line, chat_id, message_id) ORDER BY m.seq", (), [*MESSAGE_COLUMNS, "copies"])

    def out_of_order(self) -> pd.DataFrame:
        """Chats whose stored message dates go backwards in arrival order (one row per chat)."""
        import pandas as pd

        rows = self.all("SELECT seq, connector, line, chat_id, message_id, date FROM messages "
                        "WHERE date IS NOT NULL ORDER BY seq")
        last: dict[tuple[str, int, str], tuple[int, str | None, int]] = {}
        found: dict[tuple[str, int, str], dict[str, Any]] = {}
        for r in rows:
            key = (r["connector"], r["line"], r["chat_id"])
            prev = last.get(key)
            if prev is not None and r["date"] < prev[2] and key not in found:
                found[key] = {"connector": key[0], "line": key[1], "chat_id": key[2],
                              "seq": r["seq"], "message_id": r["message_id"], "date": r["date"],
                              "previous_seq": prev[0], "previous_message_id": prev[1],
                              "previous_date": prev[2]}
            if prev is None or r["date"] >= prev[2]:
                last[key] = (r["seq"], r["message_id"], r["date"])
        cols = ["connector", "line", "chat_id", "seq", "message_id", "date", "previous_seq",
                "previous_message_id", "previous_date"]
        return pd.DataFrame(list(found.values()), columns=cols)

    def counts(self) -> dict[str, int]:
        """A summary: how many of each thing the portal holds, duplicates and disorder included."""
        def n(sql: str) -> int:
            row = self.one(sql)
            return int(row[0]) if row is not None and row[0] is not None else 0

        return {
            "lines": n("SELECT COUNT(*) FROM lines"),
            "connectors": n("SELECT COUNT(*) FROM connectors"),
            "users": n("SELECT COUNT(*) FROM users"),
            "chats": n("SELECT COUNT(*) FROM chats"),
            "duplicate_chats": n("SELECT COUNT(*) - COUNT(DISTINCT entity_id) FROM chats"),
            "sessions": n("SELECT COUNT(*) FROM sessions"),
            "messages": n("SELECT COUNT(*) FROM messages"),
            "duplicate_messages": n(
                "SELECT SUM(c - 1) FROM (SELECT COUNT(*) AS c FROM messages WHERE message_id IS NOT NULL "
                "GROUP BY connector, line, chat_id, message_id HAVING COUNT(*) > 1)"),
            "out_of_order_chats": len(self.out_of_order()),
            "updated_messages": n("SELECT COUNT(*) FROM messages WHERE updated IS NOT NULL"),
            "deleted_messages": n("SELECT COUNT(*) FROM messages WHERE deleted IS NOT NULL"),
            "system_messages": n("SELECT COUNT(*) FROM im_messages WHERE seq IS NULL"),
            "lost_messages": n("SELECT COUNT(*) FROM lost"),
            "failed_downloads": n("SELECT COUNT(*) FROM downloads WHERE status != 'ok'"),
            "disk_files": n("SELECT COUNT(*) FROM disk_objects WHERE type = 'file'"),
        }

    # ------------------------------------------------------------------ messenger view, downloads, losses
    def chat_messages(self, chat: int | None = None) -> pd.DataFrame:
        """Every message of the Bitrix24 chats as the messenger shows them (system messages: author 0)."""
        cols = ["id", "chat", "session", "author", "seq", "message_id", "text", "posted", "system"]
        sql = ("SELECT i.id, i.chat, i.session, i.author, i.seq, m.message_id, "
               "COALESCE(m.text, i.text) AS text, i.date AS posted, i.seq IS NULL AS system "
               "FROM im_messages i LEFT JOIN messages m ON m.seq = i.seq "
               "WHERE (i.seq IS NULL OR m.deleted IS NULL)")
        params: list[Any] = []
        if chat is not None:
            sql += " AND i.chat = ?"
            params.append(int(chat))
        frame = self._frame(sql + " ORDER BY i.id", params, cols)
        frame["system"] = frame["system"].astype(bool)
        return frame

    def downloads(self) -> pd.DataFrame:
        """One row per ``files[]`` entry of every stored message: could the portal fetch it, size, sha256."""
        cols = ["id", "seq", "chat_id", "message_id", "position", "url", "name", "status", "http_status",
                "size", "sha256", "content_type", "error", "fetched"]
        return self._frame(
            "SELECT d.id, d.seq, m.chat_id, m.message_id, d.position, d.url, d.name, d.status, "
            "d.http_status, "
            "d.size, d.sha256, d.content_type, d.error, d.fetched FROM downloads d "
            "LEFT JOIN messages m ON m.seq = d.seq ORDER BY d.seq, d.position", (), cols)

    def lost(self) -> pd.DataFrame:
        """The messages :meth:`lose_messages` deleted behind the client's back."""
        cols = ["seq", "im_id", "line", "connector", "chat_id", "message_id", "b24_chat_id", "session_id",
                "lost"]
        return self._frame("SELECT * FROM lost ORDER BY seq", (), cols)

    def lose_messages(self, n: int | None = None, *, seed: int = 0, chat_id: str | None = None,
                      message_ids: Iterable[str] | None = None,
                      b24_chat_id: int | None = None) -> pd.DataFrame:
        """Silently delete stored connector messages (``n`` drawn with ``seed``, or by id); returns them.

        The portal "loses" them: they vanish from every read-back method and from ``messages()``; no
        deletion is recorded on the message (unlike imconnector.delete.messages). ``lost()`` lists them.
        """
        import random

        sql = "SELECT * FROM messages WHERE deleted IS NULL"
        params: list[Any] = []
        if chat_id is not None:
            sql += " AND chat_id = ?"
            params.append(str(chat_id))
        if b24_chat_id is not None:
            sql += " AND b24_chat_id = ?"
            params.append(int(b24_chat_id))
        rows = self.all(sql + " ORDER BY seq", params)
        if message_ids is not None:
            wanted = {str(m) for m in message_ids}
            rows = [r for r in rows if r["message_id"] in wanted]
        if n is not None:
            rows = sorted(random.Random(seed).sample(rows, min(max(n, 0), len(rows))), key=lambda r: r["seq"])
        with self.transaction() as db:
            for r in rows:
                im = db.execute("SELECT id FROM im_messages WHERE seq = ?", (r["seq"],)).fetchone()
                db.execute("INSERT OR REPLACE INTO lost VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (r["seq"], im["id"] if im else None, r["line"], r["connector"], r["chat_id"],
                            r["message_id"], r["b24_chat_id"], r["session_id"], time.time()))
                db.execute("DELETE FROM im_messages WHERE seq = ?", (r["seq"],))
                db.execute("DELETE FROM downloads WHERE seq = ?", (r["seq"],))
                db.execute("DELETE FROM messages WHERE seq = ?", (r["seq"],))
        seqs = [int(r["seq"]) for r in rows]
        frame = self.lost()
        return frame[frame["seq"].isin(seqs)].reset_index(drop=True)


def dumps(value: Any) -> str:
    """Compact JSON for storing structured values (UTF-8 kept readable)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
