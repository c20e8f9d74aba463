"""``--update-changed``: sent rows whose content changed in the file are updated on the portal.

``imconnector.update.messages`` locates a message by the same ``chat.id`` + ``message.id`` it was
sent with and replaces its text (and files) — not its date or author: a row whose time alone
changed is told so (undo and send again to re-date it), and the run says the rest keep theirs.
One call per conversation, at most 50 messages each,
through the client (so through the governor). A row updated is recorded with the new content's
digest and the code ``updated-after-sent``; one the portal refuses keeps ``changed-after-sent``
with the portal's reason.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..codes import SENT
from ..errors import AmbiguousError, PortalError
from ..journal import Journal, RowUpdate, row_key
from ..planning import Plan
from .identities import body, digest

log = logging.getLogger("bulkimport.after")

UPDATE_METHOD = "imconnector.update.messages"
CHANGED = "changed-after-sent"
UPDATED = "updated-after-sent"


def _changed(journal: Journal) -> set[str]:
    return {str(r[0]) for r in journal.query("SELECT rid FROM rows WHERE code = ? AND status = ?",
                                             (CHANGED, SENT))}


#: What a changed row that only changed its time is told (the method has no date: reference §3).
DATE_ONLY = (
    "only the date changed: imconnector.update.messages changes a message's text and files, not its "
    "date or author; to re-date it, delete it (bulkimport undo --chats CHAT) and send it again"
)


def _sent_dates(journal: Journal, rids: set[str]) -> dict[str, tuple[Any, Any]]:
    """The time and body digest row_identity holds for each changed row (the body as sent; empty
    for journals that predate the table)."""
    import sqlite3

    wanted = sorted(rids)
    out: dict[str, tuple[Any, Any]] = {}
    try:  # the changed rows only, by key (not the whole table of a large journal)
        for start in range(0, len(wanted), 500):
            part = wanted[start:start + 500]
            marks = ",".join("?" * len(part))
            sql = f"SELECT rid, date, body FROM row_identity WHERE rid IN ({marks})"  # noqa: S608
            out.update({str(r): (d, b) for r, d, b in journal.query(sql, part)})
    except sqlite3.Error:  # no table in an older journal: nothing known
        return {}
    return out


def update_changed(
    journal: Journal, plan: Plan, client: Any, *, connector: str, line: Any
) -> tuple[int, int, int]:
    """Update every sent row marked ``changed-after-sent``; returns (updated, refused, date_only):
    a row whose text and files are as sent and only its time changed is not sent to the method
    (it cannot change a date) but told so, and counted in ``date_only``."""
    todo = _changed(journal)
    if not todo:
        return 0, 0, 0
    sent = _sent_dates(journal, todo)
    updated = refused = date_only = 0
    for conv in plan.conversations:
        keys = [row_key(r) for r in conv.rows]
        picked = [(k, conv.messages[j]) for j, k in enumerate(keys) if k in todo]
        # changed, yet its body (text, files, author — kept as sent for a changed row) is the
        # same: what changed is the date (row_identity.date already holds the new one)
        dated = [k for k, m in picked if k in sent and sent[k][1] == body(m)]
        if dated:
            journal.executemany("UPDATE rows SET error = ? WHERE rid = ?", [(DATE_ONLY, k) for k in dated])
            date_only += len(dated)
            skip = set(dated)
            picked = [(k, m) for k, m in picked if k not in skip]
        for start in range(0, len(picked), 50):
            part = picked[start:start + 50]
            items = [{"user": {"id": m["user"]["id"]}, "chat": m["chat"], "message": dict(m["message"])}
                     for _, m in part]
            try:
                result = client.call(UPDATE_METHOD, {"CONNECTOR": connector, "LINE": line, "MESSAGES": items},
                                     retries=8)
            except (PortalError, AmbiguousError) as exc:
                log.warning("updating %d changed rows of chat %s failed: %s", len(part), conv.key, exc)
                refused += len(part)
                continue
            answers = ((result or {}).get("DATA") or {}).get("RESULT") or []
            ok = [rid for (rid, _), a in zip(part, answers, strict=False) if (a or {}).get("SUCCESS")]
            done = set(ok)
            journal.settle(None, [RowUpdate(r, SENT, UPDATED, None, 0) for r in ok], time.time(), "update")
            journal.executemany("UPDATE row_ids SET digest = ? WHERE rid = ?",
                                [(digest(m), rid) for rid, m in part if rid in done])
            journal.executemany("UPDATE row_identity SET body = ? WHERE rid = ?",
                                [(body(m), rid) for rid, m in part if rid in done])
            updated += len(ok)
            refused += len(part) - len(ok)
    return updated, refused, date_only


__all__ = ["CHANGED", "UPDATED", "update_changed"]
