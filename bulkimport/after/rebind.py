"""Re-run after editing the file: the journal knows rows by identity (chat id + message id), not by
the file's fingerprint.

When the plan's fingerprint changed (``Journal.bind(rebind=True)`` sets ``journal.rebound``), the
journal's rows are matched to the new plan by external ``(chat.id, message.id)`` and rewritten
under the new row ids, conversations and positions, in one transaction:

* a row whose identity is in the journal keeps its status (sent rows are not sent again);
* a sent row whose content (text, files, date, operator) changed is reported with the code
  ``changed-after-sent`` (and updated with ``--update-changed``: :mod:`bulkimport.after.update`);
* a row that is new, or was invalid and is fixed now, is ``pending``: the run sends it; one dated
  before messages already sent in its chat is reported (``dated-before-sent``: it will appear
  after them);
* a journalled row the file no longer has is kept in the table ``gone_rows`` and listed.

Only a change of identity refuses (``JournalMismatchError`` naming it): a message now in another
chat, a chat now of another customer, or none of the sent message ids left in the file (another
message id column). :func:`check_identity` runs that check read-only, before any portal set-up.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..codes import INVALID, PENDING, SENT
from ..errors import JournalMismatchError
from ..journal import Journal
from ..planning import Plan
from .identities import ensure, planned

_GONE = (
    "CREATE TABLE IF NOT EXISTS gone_rows (rid TEXT, chat TEXT, mid TEXT, status TEXT, code TEXT, "
    "message_id TEXT, gone_at REAL)"
)
#: the ``rows`` columns copied when a row is rewritten under its new key
_COLS = ["rid", "conv", "seq", "status", "hold", "code", "error", "attempts", "message_id", "user_id",
         "chat_id", "session_id", "sent_at", "request", "prev_status", "prev_code", "prev_error",
         "prev_hold"]


#: The prefix of message ids bulkimport generates when the input has no message-id column.
GENERATED = "bi-"


@dataclass
class Changes:
    """What an edited file changed against the journal, by row id of the new file."""

    added: list[str] = field(default_factory=list)  # new or fixed rows (sent by this run)
    changed: list[str] = field(default_factory=list)  # sent rows whose content changed
    early: list[str] = field(default_factory=list)  # new rows dated before sent ones of their chat
    gone: list[tuple[str, str, str, str]] = field(default_factory=list)  # (old rid, chat, mid, status)

    def lines(self) -> list[str]:
        """What a run says about the edit."""
        out = [f"The input changed since the journal was written: {len(self.added)} new or fixed rows "
               f"to send, {len(self.changed)} sent rows changed, {len(self.gone)} rows no longer in the "
               "file."]
        if self.changed:
            out.append(f"changed-after-sent: rows {_few(self.changed)} were sent before their content "
                       "changed; the portal keeps the old text (run with --update-changed to update them)")
        if self.early:
            out.append(f"dated-before-sent: new rows {_few(self.early)} are dated before messages already "
                       "sent in their chats; they will appear after them")
        if self.gone:
            out.append(f"rows no longer in the file (kept in the journal, listed in the report): "
                       f"{_few([g[0] for g in self.gone])}")
        generated = sorted({g[1] for g in self.gone if g[3] == SENT and str(g[2]).startswith(GENERATED)})
        if generated and self.added:
            # Without a message-id column the id is a hash of the chat, time and content: an edited
            # text is a new message to the journal, and the one sent before stays on the portal.
            chats = ", ".join(generated[:5]) + (" …" if len(generated) > 5 else "")
            out.append(
                "Warning: the sent rows no longer in the file have generated message ids (the file has no "
                "message-id column), so a corrected text goes as a NEW message and the one sent before "
                f"stays on the portal (chats {chats}); to correct texts in place, map message.id to a "
                "column of stable ids before the first import (--update-changed can only update those)"
            )
        return out

    def frame(self) -> Any:
        """The changes as a table for the report (kind, row, chat, message id)."""
        import pandas as pd

        rows = [("changed-after-sent", r, "", "") for r in self.changed]
        rows += [("dated-before-sent", r, "", "") for r in self.early]
        rows += [("no-longer-in-file", g[0], g[1], g[2]) for g in self.gone]
        return pd.DataFrame(rows, columns=["change", "row", "chat", "message_id"])


def _few(rids: list[str], n: int = 10) -> str:
    return ", ".join(rids[:n]) + (f" … (+{len(rids) - n})" if len(rids) > n else "")


def _old_ids(journal: Journal) -> list[tuple[str, str, str, str, str | None]]:
    """``(rid, chat, user, mid, digest)`` the journal recorded (none: written before rebinding)."""
    try:
        return journal.query("SELECT rid, chat, user, mid, digest FROM row_ids")
    except sqlite3.Error:
        return []


def _identity_problems(old: list[Any], new: list[Any], sent_mids: set[str]) -> list[str]:
    """What changed in the identity mapping, in words (empty: the same identities)."""
    old_chat = {mid: chat for _, chat, _, mid, _ in old}
    old_user = {chat: user for _, chat, user, _, _ in old}
    problems: list[str] = []
    new_mids = {r[5] for r in new}
    for _, _, _, chat, user, mid, _ in new:
        if mid in old_chat and old_chat[mid] != chat and len(problems) < 3:
            problems.append(f"message id {mid!r} is now in chat {chat!r} (was {old_chat[mid]!r})")
        if chat in old_user and old_user[chat] != user and len(problems) < 3:
            problems.append(f"chat {chat!r} now belongs to customer {user!r} (was {old_user[chat]!r})")
            old_user[chat] = user  # said once per chat
    if sent_mids and not sent_mids & new_mids:
        problems.append(f"none of the {len(sent_mids)} message ids the journal sent is in the file "
                        "(another message id column?)")
    return problems


def _refuse(path: Path, problems: list[str]) -> JournalMismatchError:
    return JournalMismatchError(
        f"journal {path} was written with another identity mapping: {'; '.join(problems)}; keep the "
        "original chat, customer and message id columns to resume, or pass a new --state for a "
        "separate import (rows already sent would be sent again)"
    )


def _sent_mids(journal: Journal) -> set[str]:
    try:
        rows = journal.query("SELECT i.mid FROM row_ids i JOIN rows r ON r.rid = i.rid WHERE r.status = ?",
                             (SENT,))
    except sqlite3.Error:
        return set()
    return {str(r[0]) for r in rows}


def check_identity(path: str | Path, plan: Plan) -> None:
    """Refuse (JournalMismatchError) an edited input whose identity mapping changed; read-only."""
    path = Path(path)
    if not path.is_file():
        return
    journal = Journal.open(path)
    try:
        if journal.meta().get("fingerprint") == plan.fingerprint:
            return
        old = _old_ids(journal)
        if not old:
            return  # a journal from before rebinding: the sender refuses it with the old reason
        problems = _identity_problems(old, planned(plan), _sent_mids(journal))
    finally:
        journal.close()
    if problems:
        raise _refuse(path, problems)


def _early(new: list[Any], status_of: dict[int, list[str]], added: set[str]) -> list[str]:
    """New rows with a sent row after them in their conversation (plan order is time order)."""
    out: list[str] = []
    by_conv: dict[int, list[Any]] = {}
    for r in new:
        by_conv.setdefault(r[1], []).append(r)
    for conv, rows in by_conv.items():
        statuses = status_of.get(conv, [])
        sent_after = False
        for r, st in zip(reversed(rows), reversed(statuses), strict=True):
            if st == SENT:
                sent_after = True
            elif r[0] in added and sent_after:
                out.append(r[0])
    order = {r[0]: k for k, r in enumerate(new)}
    return sorted(out, key=order.__getitem__)


def reconcile(journal: Journal, plan: Plan, invalid: dict[str, tuple[str, str]], fingerprint: str) -> Changes:
    """Rewrite the journal's rows for the edited plan, matched by identity (see the module docstring)."""
    import time

    old = _old_ids(journal)
    if not old:
        raise JournalMismatchError(
            f"journal {journal.path} was written for a different input or mapping (the plan's fingerprint "
            "changed) by a version that did not record message identities: resume with the original "
            "file and mapping, or pass a new --state to start a separate import"
        )
    new = planned(plan)
    problems = _identity_problems(old, new, _sent_mids(journal))
    if problems:
        raise _refuse(journal.path, problems)
    records = {r[0]: list(r) for r in journal.query(f"SELECT {', '.join(_COLS)} FROM rows")}  # noqa: S608
    by_identity = {(chat, mid): (rid, dig) for rid, chat, _, mid, dig in old}
    changes, out, keep, ids = Changes(), [], set(), []
    status_of: dict[int, list[str]] = {}
    matched: set[str] = set()
    for rid, conv, seq, chat, _user, mid, dig in new:
        was = by_identity.get((chat, mid))
        rec = records.get(was[0]) if was else None
        if rec is not None and rec[1] is not None:
            matched.add(was[0])
            rec = [rid, conv, seq, *rec[3:]]
            if rec[3] == SENT and was[1] != dig:
                changes.changed.append(rid)
                keep.add(rid)
                rec[5], rec[6] = "changed-after-sent", "the row's content changed after it was sent"
                dig = was[1]  # the digest of what the portal holds, until it is updated
        else:
            rec = [rid, conv, seq, PENDING, 0, None, None, 0, *[None] * 10]
            changes.added.append(rid)
        status_of.setdefault(conv, []).append(rec[3])
        out.append(rec)
        ids.append((rid, conv, seq, chat, _user, mid, dig))
    for rid, (code, message) in invalid.items():
        out.append([rid, None, None, INVALID, 0, code, message, 0, *[None] * 10])
    for rid, chat, _, mid, _ in old:
        rec = records.get(rid)
        if rid not in matched and rec is not None and rec[3] not in (PENDING, INVALID):
            changes.gone.append((rid, chat, mid, rec[3]))
    changes.early = _early(new, status_of, set(changes.added))
    _write(journal, out, ids, changes, fingerprint, time.time())
    journal.rebound = None
    journal.keep_digest = frozenset(keep)  # type: ignore[attr-defined]
    return changes


def _write(journal: Journal, out: list[list[Any]], ids: list[tuple[Any, ...]], changes: Changes,
           fingerprint: str, now: float) -> None:
    """Replace the rows and their identities, record the gone ones and the new fingerprint, in one
    transaction."""
    ensure(journal)
    with journal.transaction() as cur:
        cur.execute(_GONE)
        cur.executemany(
            "INSERT INTO gone_rows (rid, chat, mid, status, code, message_id, gone_at) "
            "SELECT ?, ?, ?, status, code, message_id, ? FROM rows WHERE rid = ?",
            [(rid, chat, mid, now, rid) for rid, chat, mid, _ in changes.gone],
        )
        cur.execute("DELETE FROM rows")
        marks = ", ".join("?" * len(_COLS))
        cur.executemany(f"INSERT INTO rows ({', '.join(_COLS)}) VALUES ({marks})", out)  # noqa: S608
        cur.execute("DELETE FROM row_ids")
        cur.executemany("INSERT INTO row_ids (rid, conv, seq, chat, user, mid, digest) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?)", ids)
        cur.execute("UPDATE meta SET value = ? WHERE key = 'fingerprint'", (fingerprint,))




def write_changes(changes: Changes, report: Path) -> Path | None:
    """Add the changes to the report: a ``changes`` sheet of an xlsx report, or ``<report>.changes.csv``
    beside a csv one (None: nothing changed worth listing). No cell can become a formula."""
    from ..reporting import neutralise

    table = changes.frame()
    if table.empty:
        return None
    table = table.map(neutralise)
    if report.suffix.lower() == ".csv":
        target = report.with_name(report.stem + ".changes.csv")
        table.to_csv(target, index=False, encoding="utf-8-sig")
        return target
    import pandas as pd

    with pd.ExcelWriter(report, engine="openpyxl", mode="a", if_sheet_exists="replace") as writer:
        table.to_excel(writer, sheet_name="changes", index=False)
    return report


__all__ = ["Changes", "check_identity", "reconcile", "write_changes"]
