"""Undo an import: delete every message the journal says was sent (``imconnector.delete.messages``).

* **Which ids**: a delete must name the message exactly as it was sent (``user.id``, ``chat.id``,
  ``message.id`` — external ids). The journal keys rows by their input row id; the external ids are
  the plan's, recorded for every planned row at the start of each run, before anything is sent
  (table ``row_ids``, :mod:`bulkimport.after.identities`; journals of earlier versions have them in
  ``external_ids``, written at the end of a run). Undo then needs only the journal — not the
  input file, its mapping or reading options, which may have changed or gone since.
* **Write-ahead**, like sending: the rows of a delete call are committed as ``inflight`` in the
  table ``undo`` before the call leaves; after the answer each row is ``deleted`` (``rows.status``)
  or ``failed`` (the portal's reason kept); a cut-off call leaves its rows ``unknown`` — never
  assumed deleted. The next undo tries them again (a delete cannot duplicate anything); "not
  found" then means the earlier delete did run, so they become ``deleted`` (code
  ``delete-confirmed-gone``). A killed undo's ``inflight`` rows become ``unknown`` on the next one.
* **Cannot remove**: the chats, sessions, connector users and CRM leads the import created.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..codes import DELETED, SENT, count_of
from ..errors import AmbiguousError, BulkImportError, FatalError, RetryableError
from ..journal import Journal
from ..portal.methods import DELETE_METHOD

#: Messages per delete call (no documented cap: well under the send's 50, so one call's server
#: time stays far from the 60 s request cap).
PER_CALL = 25
RETRIES = 8
#: What an undo cannot take back (said by the CLI before and after).
CANNOT_REMOVE = (
    "Undo deletes messages only: the chats, open-line sessions, connector users and CRM leads the "
    "import created stay on the portal (remove leads in CRM, if they are unwanted)."
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS external_ids (
    rid TEXT PRIMARY KEY,   -- rows.rid
    chat TEXT NOT NULL,     -- chat.id as sent
    user TEXT NOT NULL,     -- user.id as sent
    mid TEXT NOT NULL       -- message.id as sent
);
CREATE TABLE IF NOT EXISTS undo (
    rid TEXT PRIMARY KEY,
    state TEXT NOT NULL,    -- inflight, unknown or failed (deleted rows: rows.status = 'deleted')
    code TEXT,
    error TEXT,
    at REAL
);
"""

NOT_FOUND = "The message was not found"


def ensure_tables(journal: Journal) -> None:
    """Create the undo tables if this journal has none yet."""
    with journal.transaction() as cur:
        for statement in _statements():
            cur.execute(statement)


def _statements() -> list[str]:
    return [s.strip() for s in SCHEMA.split(";") if s.strip()]


@dataclass
class Target:
    """One message to delete: its row and the ids it was sent with."""

    rid: str
    chat: str
    user: str
    mid: str
    retry: bool  # an earlier delete of it was cut off (``unknown``)


@dataclass
class UndoPlan:
    """What an undo would delete, per external chat, and what it cannot."""

    targets: list[Target]
    no_ids: int = 0  # sent rows whose external ids the journal lacks
    unknown_sends: int = 0  # rows whose send outcome is unknown (may be on the portal)

    def per_chat(self) -> Counter[str]:
        """Messages to delete per external chat id."""
        return Counter(t.chat for t in self.targets)


def undo_plan(journal: Journal, chats: Iterable[str] | None = None) -> UndoPlan:
    """The sent (or cut-off-deleted) rows with their external ids, limited to ``chats``."""
    ensure_tables(journal)
    recover(journal)
    from .identities import ensure as ensure_row_ids

    ensure_row_ids(journal)
    # the ids a row was sent with: row_ids (recorded at the start of every run, before anything is
    # sent); external_ids for journals of versions that recorded them at the end of a run instead
    found = journal.query(
        "SELECT r.rid, COALESCE(i.chat, e.chat), COALESCE(i.user, e.user), COALESCE(i.mid, e.mid), "
        "u.state FROM rows r LEFT JOIN row_ids i ON i.rid = r.rid "
        "LEFT JOIN external_ids e ON e.rid = r.rid LEFT JOIN undo u ON u.rid = r.rid "
        "WHERE r.status = ? ORDER BY r.conv, r.seq",
        (SENT,),
    )
    wanted = {str(c) for c in chats} if chats is not None else None
    targets: list[Target] = []
    no_ids = 0
    for rid, chat, user, mid, state in found:
        if chat is None:
            no_ids += 1
        elif wanted is None or chat in wanted:
            targets.append(Target(rid, chat, user, mid, state == "unknown"))
    unknown = journal.query("SELECT COUNT(*) FROM rows WHERE status IN ('unknown', 'inflight')")[0][0]
    return UndoPlan(targets, no_ids, int(unknown))


def recover(journal: Journal) -> int:
    """A killed undo's ``inflight`` deletes become ``unknown``."""
    with journal.transaction() as cur:
        cur.execute("UPDATE undo SET state='unknown', code='interrupted' WHERE state='inflight'")
        return cur.rowcount


@dataclass
class UndoResult:
    """What one undo pass did."""

    deleted: int = 0
    requests: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # rid → the portal's reason
    unknown: int = 0  # cut off: may or may not be deleted; undo again

    @property
    def complete(self) -> bool:
        """Every targeted message is known to be deleted."""
        return not self.failed and not self.unknown

    def __str__(self) -> str:
        text = f"Deleted {count_of(self.deleted, 'message')} ({count_of(self.requests, 'request')})"
        if self.failed:
            text += f", {len(self.failed)} not deleted (the portal refused)"
        if self.unknown:
            text += f", {self.unknown} with an unknown outcome (run undo again)"
        return text


def undo(
    client: Any,
    journal: Journal,
    plan: UndoPlan,
    *,
    line: int,
    connector: str,
    progress: Any = None,
    now: Callable[[], float] = time.time,
) -> UndoResult:
    """Delete ``plan``'s messages, ``PER_CALL`` per call, write-ahead (see the module docstring)."""
    result = UndoResult()
    if progress is not None:
        progress.start(len(plan.targets), 0)
    try:
        for start in range(0, len(plan.targets), PER_CALL):
            part = plan.targets[start : start + PER_CALL]
            if _delete_call(client, journal, part, line, connector, result, now):
                break
            if progress is not None:
                progress.update(len(part), {"deleted": result.deleted, "failed": len(result.failed)})
    finally:
        if progress is not None:
            progress.close()
    return result


def _delete_call(
    client: Any, journal: Journal, part: list[Target], line: int, connector: str,
    result: UndoResult, now: Callable[[], float],
) -> bool:
    """One delete call for ``part``; settles its rows; True when the undo must stop."""
    rids = [t.rid for t in part]
    with journal.transaction() as cur:
        cur.executemany(
            "INSERT INTO undo (rid, state, at) VALUES (?, 'inflight', ?) ON CONFLICT(rid) DO UPDATE "
            "SET state='inflight', at=excluded.at",
            [(rid, now()) for rid in rids],
        )
    messages = [{"user": {"id": t.user}, "message": {"id": t.mid}, "chat": {"id": t.chat}} for t in part]
    params = {"CONNECTOR": connector, "LINE": line, "MESSAGES": messages}
    result.requests += 1
    try:
        answer = client.call(DELETE_METHOD, params, retries=RETRIES)
    except RetryableError as exc:  # refused before running: nothing was deleted
        _settle(journal, [(t, "failed", exc.code, _why(exc)) for t in part], result)
        return False
    except AmbiguousError as exc:
        _settle(journal, [(t, "unknown", getattr(exc, "code", "timeout"), str(exc)) for t in part], result)
        return False
    except BulkImportError as exc:
        _settle(journal, [(t, "failed", getattr(exc, "code", "error"), _why(exc)) for t in part], result)
        return isinstance(exc, FatalError)
    items = ((answer or {}).get("DATA") or {}).get("RESULT") or [] if isinstance(answer, dict) else []
    outcomes = []
    for i, t in enumerate(part):
        item = items[i] if i < len(items) and isinstance(items[i], dict) else None
        outcomes.append(_item_outcome(t, item))
    _settle(journal, outcomes, result)
    return False


def _item_outcome(t: Target, item: dict[str, Any] | None) -> tuple[Target, str, str | None, str | None]:
    """What the answer says about one message: deleted, failed (with why) or unknown."""
    if item is None:
        return t, "unknown", "no-answer", "the answer did not list this message"
    if item.get("SUCCESS") is True:
        return t, DELETED, None, None
    errors = item.get("ERRORS") or []
    text = "; ".join(str(e) for e in errors) if isinstance(errors, list) else str(errors)
    if t.retry and NOT_FOUND in text:  # the cut-off delete before this one did run
        return t, DELETED, "delete-confirmed-gone", None
    return t, "failed", "delete-refused", text or "the portal did not delete it"


def _settle(
    journal: Journal, outcomes: list[tuple[Target, str, str | None, str | None]], result: UndoResult
) -> None:
    """Commit the outcome of one call's rows in one transaction."""
    gone = [(code, t.rid) for t, state, code, _ in outcomes if state == DELETED]
    kept = [(state, code, why, t.rid) for t, state, code, why in outcomes if state != DELETED]
    with journal.transaction() as cur:
        cur.executemany("UPDATE rows SET status='deleted', code=? WHERE rid=?", gone)
        cur.executemany("DELETE FROM undo WHERE rid=?", [(rid,) for _, rid in gone])
        cur.executemany("UPDATE undo SET state=?, code=?, error=? WHERE rid=?", kept)
    result.deleted += len(gone)
    for state, _code, why, rid in kept:
        if state == "unknown":
            result.unknown += 1
        else:
            result.failed[rid] = why or "failed"


def _why(exc: BaseException) -> str:
    code = getattr(exc, "code", None) or type(exc).__name__
    text = getattr(exc, "description", "") or ""
    return f"{code}: {text}" if text else str(code)


__all__ = ["CANNOT_REMOVE", "UndoPlan", "UndoResult", "undo", "undo_plan"]
