"""The external ids of every planned row, kept in the journal so that read-back needs no input file.

Table ``row_ids`` (owned here, created on first use): row key → conversation, position, external
``chat.id``, ``user.id`` and ``message.id`` as the plan sends them. The sender records it at the
start of every run (one ``INSERT OR REPLACE`` per row), so ``bulkimport verify STATE`` and the
settling of unknown rows read what a row was sent as from the journal alone — the journal's meta
names the input file but not the mapping, sheet or options that made the plan.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..codes import MISSING
from ..journal import Journal
from ..planning import Plan

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS row_ids (rid TEXT PRIMARY KEY, conv INTEGER NOT NULL, "
    "seq INTEGER NOT NULL, chat TEXT NOT NULL, user TEXT NOT NULL, mid TEXT NOT NULL, digest TEXT)"
)


def _id(item: Any, block: str) -> str:
    """``item[block]["id"]`` as text, tolerating a malformed item (the portal rejects it anyway)."""
    value = item.get(block) if isinstance(item, dict) else None
    return str(value.get("id")) if isinstance(value, dict) else str(value)


def digest(item: Any) -> str:
    """A short hash of what a message says (text, files, date, operator): changed → changed content."""
    import hashlib
    import json

    m = item.get("message") if isinstance(item, dict) else None
    what = {k: m.get(k) for k in ("text", "files", "date", "user_id")} if isinstance(m, dict) else str(m)
    text = json.dumps(what, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def planned(plan: Plan) -> list[tuple[str, int, int, str, str, str, str]]:
    """``(rid, conv, seq, chat, user, mid, digest)`` of every planned row, in plan order."""
    from ..journal import row_key

    out: list[tuple[str, int, int, str, str, str, str]] = []
    for ci, conv in enumerate(plan.conversations):
        for seq, (rid, item) in enumerate(zip(conv.rows, conv.messages, strict=True)):
            out.append((row_key(rid), ci, seq, _id(item, "chat"), _id(item, "user"), _id(item, "message"),
                        digest(item)))
    return out


def ensure(journal: Journal) -> None:
    """Create the table if this journal has none yet."""
    journal.execute(_SCHEMA)


def record(journal: Journal, plan: Plan, keep: frozenset[str] = frozenset()) -> int:
    """Store the external ids and content digest of every planned row (replacing a previous run's;
    the rows in ``keep`` — sent, content changed since — keep the digest of what was sent)."""
    ensure(journal)
    rows = planned(plan)
    keep = keep | {str(r[0]) for r in journal.query(
        "SELECT rid FROM rows WHERE code = 'changed-after-sent' AND status = 'sent'")}
    journal.executemany(
        "INSERT OR REPLACE INTO row_ids (rid, conv, seq, chat, user, mid, digest) VALUES "
        "(?, ?, ?, ?, ?, ?, COALESCE((SELECT digest FROM row_ids WHERE rid = ? AND ? = 1), ?))",
        [(*r[:6], r[0], int(r[0] in keep), r[6]) for r in rows],
    )
    return len(rows)


class JournalIds:
    """``of(conv, seq)`` → the external (chat, user, message) ids a journal recorded."""

    def __init__(self, journal: Journal) -> None:
        try:
            rows = journal.query("SELECT conv, seq, chat, user, mid FROM row_ids")
        except sqlite3.Error:  # a journal written before read-back existed has no table
            rows = []
        self.ids = {(int(c), int(s)): (str(ch), str(u), str(m)) for c, s, ch, u, m in rows}

    def __len__(self) -> int:
        return len(self.ids)

    def of(self, conv: int, seq: int) -> tuple[str, str, str]:
        """External (chat.id, user.id, message.id) of the row at ``conv``, ``seq``."""
        return self.ids[(conv, seq)]


def missing_count(journal: Journal) -> int:
    """Rows verify marked ``missing`` (the next run sends them again)."""
    return int(journal.query("SELECT COUNT(*) FROM rows WHERE status = ?", (MISSING,))[0][0])


__all__ = ["JournalIds", "digest", "ensure", "missing_count", "planned", "record"]
