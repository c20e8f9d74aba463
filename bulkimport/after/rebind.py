"""Re-run after editing the file: the journal knows rows by identity, not by the file's fingerprint.

When the plan's fingerprint changed (``Journal.bind(rebind=True)`` sets ``journal.rebound``), the
journal's rows are matched to the new plan by identity — external ``(chat.id, message.id)``, or,
without a message-id column, chat, customer and time (:mod:`bulkimport.after.matching`) — and
rewritten under the new row ids, conversations and positions, in one transaction. A matched row
keeps the message id it was sent with (``row_ids.mid``; :func:`~bulkimport.after.identities.adopt`
sends it so); a new row whose generated id one of the journal's rows of its chat already has gets
another (``<id>-<n>``), so no id is used twice in a chat:

* a row whose identity is in the journal keeps its status (sent rows are not sent again);
* a sent row whose content (text, files, date, operator) changed is reported with the code
  ``changed-after-sent`` (and updated with ``--update-changed``: :mod:`bulkimport.after.update`);
* a sent row whose customer details (name, phone, e-mail … — the message's user block) differ from
  what the customer was first sent with is said and listed (``customer-changed-after-sent``): the
  portal keeps the customer it made, and ``imconnector.update.messages`` has no user block. The
  table ``sent_customers`` (owned here; :func:`record_customers` after every run) keeps, per chat
  and customer, the details of their first sent row;
* a row that is new, or was invalid and is fixed now, is ``pending``: the run sends it; one dated
  before messages already sent in its chat is reported (``dated-before-sent``: it will appear
  after them);
* a journalled row the file no longer has is kept in the table ``gone_rows`` and listed; a sent
  row whose time was edited (no message-id column) is such a row plus a new one, and the report
  pairs them (``time-changed-after-sent``): the new time goes as a new message, the old stays.

Only a change of identity refuses (``JournalMismatchError`` naming it): a message now in another
chat, a chat now of another customer, none of the sent message ids left in the file (another
message id column), or none of the sent rows left by chat, customer and time (another date column
or time zone). :func:`check_identity` runs that check read-only, before any portal set-up.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..codes import INVALID, PENDING, SENT, count_of
from ..errors import JournalMismatchError
from ..journal import Journal, row_key
from ..planning import Plan
from ..validation import is_generated
from .identities import Planned, ensure, planned
from .matching import Old, match, retimed

_GONE = (
    "CREATE TABLE IF NOT EXISTS gone_rows (rid TEXT, chat TEXT, mid TEXT, status TEXT, code TEXT, "
    "message_id TEXT, gone_at REAL)"
)
#: the ``rows`` columns copied when a row is rewritten under its new key
_COLS = ["rid", "conv", "seq", "status", "hold", "code", "error", "attempts", "message_id", "user_id",
         "chat_id", "session_id", "sent_at", "request", "prev_status", "prev_code", "prev_error",
         "prev_hold"]

#: The change kind (and code) of a sent row whose time was edited in a file without message ids.
RETIMED = "time-changed-after-sent"
#: The change kind of a sent row whose customer details (the user block) are not what was sent.
CUSTOMER = "customer-changed-after-sent"

#: Per chat and customer: the details (user block without the id) of their first sent row, as JSON.
_CUSTOMERS = ("CREATE TABLE IF NOT EXISTS sent_customers (chat TEXT NOT NULL, user TEXT NOT NULL, "
              "details TEXT NOT NULL, PRIMARY KEY (chat, user)) WITHOUT ROWID")
#: user-block keys that are no detail of the customer (the identity; a flag for the portal)
_NOT_DETAILS = ("id", "skip_phone_validate")
_LABELS = {"name": "name", "last_name": "last name", "email": "e-mail", "phone": "phone",
           "picture": "picture", "url": "profile link", "gender": "gender"}


@dataclass
class Changes:
    """What an edited file changed against the journal, by row id of the new file."""

    added: list[str] = field(default_factory=list)  # new or fixed rows (sent by this run)
    changed: list[str] = field(default_factory=list)  # sent rows whose content changed
    early: list[str] = field(default_factory=list)  # new rows dated before sent ones of their chat
    gone: list[tuple[str, str, str, str]] = field(default_factory=list)  # (old rid, chat, mid, status)
    retimed: list[tuple[str, str]] = field(default_factory=list)  # (new rid, old rid): sent, time edited
    legacy: int = 0  # rows of a journal written with content-hashed ids (they keep those ids)
    customer: list[tuple[str, str]] = field(default_factory=list)  # (rid, what): sent, customer edited
    customer_fields: set[str] = field(default_factory=set)  # the user-block keys those edits changed
    where: dict[str, tuple[str, str]] = field(default_factory=dict)  # listed rid → (chat.id, message.id)

    def lines(self) -> list[str]:
        """What a run says about the edit."""
        out = []
        if self.added or self.changed or self.gone or self.customer or not self.legacy:
            details = f", {len(self.customer)} with other customer details" if self.customer else ""
            out.append(f"The input changed since the journal was written: {len(self.added)} new or fixed "
                       f"{_rows(len(self.added))} to send, {count_of(len(self.changed), 'sent row')} "
                       f"changed{details}, {count_of(len(self.gone), 'row')} no longer in the file.")
        if self.legacy:
            out.append(f"The journal was written by an earlier version, whose generated message ids hashed "
                       f"the content: its {self.legacy} rows keep the ids they were sent with, and are known "
                       "from now on by chat, customer and time (a corrected text is then changed-after-sent)")
        if self.changed:
            out.append(f"changed-after-sent: rows {_few(self.changed)} were sent before their content "
                       "changed; the portal keeps the old text (run with --update-changed to update them)")
        if self.customer:
            out.append(_customer_line(self.customer, self.customer_fields))
        if self.early:
            out.append(f"dated-before-sent: new rows {_few(self.early)} are dated before messages already "
                       "sent in their chats; they will appear after them")
        if self.gone:
            out.append(f"rows no longer in the file (kept in the journal, listed in the report): "
                       f"{_few([g[0] for g in self.gone])}")
        if self.retimed:
            out.append(
                f"{RETIMED}: rows {_few([f'{n} (was {o})' for n, o in self.retimed])} were sent, then "
                "their time changed: without a message-id column a row is known by its chat, customer "
                "and time, so the new time goes as a NEW message and the one sent before stays on the "
                "portal (delete it in the open line if it is unwanted; restoring the time later makes "
                "it a new row once more)"
            )
        return out

    def frame(self) -> Any:
        """The changes as a table for the report: kind, row, its chat and message ids, and what."""
        import pandas as pd

        def at(rid: str) -> tuple[str, str]:
            return self.where.get(rid, ("", ""))

        rows = [("changed-after-sent", r, *at(r), "text, files or operator changed; the portal keeps what "
                 "was sent (--update-changed updates it)") for r in self.changed]
        rows += [(CUSTOMER, r, *at(r), f"{what}; the portal keeps the customer as sent")
                 for r, what in self.customer]
        rows += [("dated-before-sent", r, *at(r), "new, dated before messages already sent in its chat")
                 for r in self.early]
        rows += [(RETIMED, n, *at(n), f"sent anew; row {o} as sent before stays on the portal")
                 for n, o in self.retimed]
        rows += [("no-longer-in-file", g[0], g[1], g[2], f"kept in the journal ({g[3]})") for g in self.gone]
        return pd.DataFrame(rows, columns=["change", "row", "chat", "message_id", "detail"])


def _rows(n: int) -> str:
    return "row" if n == 1 else "rows"


def _customer_line(customer: list[tuple[str, str]], fields: set[str]) -> str:
    """What an edit of sent rows' customer details means: nothing is sent for it."""
    named = ", ".join(_LABELS.get(f, f) for f in sorted(fields))
    return (f"{CUSTOMER}: the customer's {named} changed for {count_of(len(customer), 'sent row')} "
            f"(rows {_few([r for r, _ in customer])}): the portal keeps the customer as it was first sent "
            "(imconnector.update.messages changes a message's text and files, not its customer, so "
            "--update-changed does not either); edit the contact in Bitrix24 if it matters")


def _details(item: Any) -> dict[str, str]:
    """A message's customer details: its user block without the id (empty values left out)."""
    user = item.get("user") if isinstance(item, dict) else None
    if not isinstance(user, dict):
        return {}
    return {str(k): str(v) for k, v in user.items() if k not in _NOT_DETAILS and v not in (None, "")}


def _customer_diff(changes: Changes, rid: str, was: dict[str, str] | None, item: Any) -> None:
    """Note a sent row whose customer details are not the ones ``was`` first sent: ``"name 'Anna K'
    → 'Anna Kowalski'; phone …"``."""
    if was is None:
        return
    now = _details(item)
    keys = [k for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
    if keys:
        what = "; ".join(f"{k} {was.get(k, '')!r} → {now.get(k, '')!r}" for k in keys)
        changes.customer.append((rid, what))
        changes.customer_fields.update(keys)


def record_customers(journal: Journal, plan: Plan) -> int:
    """Keep, once per chat and customer, the details their first sent row carried (what the portal
    made the customer from): an edited file's details are compared with them. Returns how many new."""
    import json

    journal.execute(_CUSTOMERS)
    known = {(str(c), str(u)) for c, u in journal.query("SELECT chat, user FROM sent_customers")}
    sent = {str(r) for (r,) in journal.query("SELECT rid FROM rows WHERE status = ?", (SENT,))}
    new: list[tuple[str, str, str]] = []
    for conv in plan.conversations:
        for rid, item in zip(conv.rows, conv.messages, strict=True):
            key = (_block_id(item, "chat"), _block_id(item, "user"))
            if key not in known and row_key(rid) in sent:
                known.add(key)
                new.append((*key, json.dumps(_details(item), sort_keys=True, ensure_ascii=False)))
    journal.executemany("INSERT OR IGNORE INTO sent_customers (chat, user, details) VALUES (?, ?, ?)", new)
    return len(new)


def _block_id(item: Any, block: str) -> str:
    value = item.get(block) if isinstance(item, dict) else None
    return str(value.get("id")) if isinstance(value, dict) else str(value)


def _sent_customers(journal: Journal) -> dict[tuple[str, str], dict[str, str]]:
    """What :func:`record_customers` kept (empty for a journal written before it)."""
    import json

    try:
        rows = journal.query("SELECT chat, user, details FROM sent_customers")
    except sqlite3.Error:
        return {}
    return {(str(c), str(u)): json.loads(d) for c, u, d in rows}


def _few(rids: list[str], n: int = 10) -> str:
    return ", ".join(rids[:n]) + (f" … (+{len(rids) - n})" if len(rids) > n else "")


def _old_ids(journal: Journal) -> list[Old]:
    """The rows the journal recorded, with their time and status (none: written before rebinding)."""
    cols = "i.rid, i.chat, i.user, i.mid, i.digest, {t}, i.conv, i.seq, r.status"
    join = "FROM row_ids i LEFT JOIN rows r ON r.rid = i.rid"
    try:
        rows = journal.query(f"SELECT {cols.format(t='t.date, t.body')} {join} "
                             "LEFT JOIN row_identity t ON t.rid = i.rid ORDER BY i.conv, i.seq")
    except sqlite3.Error:
        try:  # a journal written before row_identity
            rows = journal.query(f"SELECT {cols.format(t='NULL, NULL')} {join} ORDER BY i.conv, i.seq")
        except sqlite3.Error:
            return []
    return [Old(str(r[0]), str(r[1]), str(r[2]), str(r[3]), r[4], None if r[5] is None else int(r[5]),
                r[6], int(r[7]), int(r[8]), r[9]) for r in rows]


def _identity_problems(old: list[Old], new: list[Planned], pairs: dict[int, int]) -> list[str]:
    """What changed in the identity mapping, in words (empty: the same identities)."""
    old_chat = {o.mid: o.chat for o in old if not is_generated(o.mid)}
    old_user = {o.chat: o.user for o in old}
    problems: list[str] = []
    for n in new:
        chat, user, mid = n[3], n[4], n[5]
        if mid in old_chat and old_chat[mid] != chat and len(problems) < 3:
            problems.append(f"message id {mid!r} is now in chat {chat!r} (was {old_chat[mid]!r})")
        if chat in old_user and old_user[chat] != user and len(problems) < 3:
            problems.append(f"chat {chat!r} now belongs to customer {user!r} (was {old_user[chat]!r})")
            old_user[chat] = user  # said once per chat
    matched = set(pairs.values())
    sent = [k for k, o in enumerate(old) if o.status == SENT]
    given = [k for k in sent if not is_generated(old[k].mid)]
    made = [k for k in sent if is_generated(old[k].mid)]
    if given and not matched.intersection(given):
        problems.append(f"none of the {len(given)} message ids the journal sent is in the file "
                        "(another message id column?)")
    if made and not matched.intersection(made):
        problems.append(f"none of the {len(made)} sent rows (the file had no message-id column) is in the "
                        "file by chat, customer and time (another date column or time zone, or a message "
                        "id column mapped now?)")
    return problems


def _refuse(path: Path, problems: list[str]) -> JournalMismatchError:
    return JournalMismatchError(
        f"journal {path} was written with another identity mapping: {'; '.join(problems)}; keep the "
        "original chat, customer and message id columns to resume, or pass a new --state for a "
        "separate import (rows already sent would be sent again)"
    )


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
        new = planned(plan)
        problems = _identity_problems(old, new, match(old, new))
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
    pairs = match(old, new)
    problems = _identity_problems(old, new, pairs)
    if problems:
        raise _refuse(journal.path, problems)
    records = {r[0]: list(r) for r in journal.query(f"SELECT {', '.join(_COLS)} FROM rows")}  # noqa: S608
    changes, out, keep, ids = Changes(), [], set(), []
    status_of: dict[int, list[str]] = {}
    matched: set[str] = set()
    fresh = _fresh_ids(journal, old, new, pairs)
    customers = _sent_customers(journal)
    for i, (rid, conv, seq, chat, user, mid, dig, date, body) in enumerate(new):
        was = old[pairs[i]] if i in pairs else None
        rec = records.get(was.rid) if was is not None else None
        if was is not None and rec is not None and rec[1] is not None:
            matched.add(was.rid)
            rec, mid = [rid, conv, seq, *rec[3:]], was.mid  # the id it was sent with
            if rec[3] == SENT:
                item = plan.conversations[conv].messages[seq]
                _customer_diff(changes, rid, customers.get((chat, user)), item)
            if rec[3] == SENT and was.digest != dig:
                changes.changed.append(rid)
                keep.add(rid)
                rec[5], rec[6] = "changed-after-sent", "the row's content changed after it was sent"
                dig, body = was.digest or dig, was.body or body  # what the portal holds, until updated
        else:
            rec = [rid, conv, seq, PENDING, 0, None, None, 0, *[None] * 10]
            changes.added.append(rid)
            mid = fresh.get(i, mid)
        status_of.setdefault(conv, []).append(rec[3])
        out.append(rec)
        ids.append((rid, conv, seq, chat, user, mid, dig, date, body))
    for rid, (code, message) in invalid.items():
        out.append([rid, None, None, INVALID, 0, code, message, 0, *[None] * 10])
    for o in old:
        rec = records.get(o.rid)
        if o.rid not in matched and rec is not None and rec[3] not in (PENDING, INVALID):
            changes.gone.append((o.rid, o.chat, o.mid, rec[3]))
    changes.retimed = [(new[i][0], old[k].rid) for i, k in retimed(old, new, pairs, SENT)]
    changes.legacy = sum(o.date is None and is_generated(o.mid) for o in old)
    changes.early = _early(new, status_of, set(changes.added))
    listed = {*changes.changed, *changes.early, *(n for n, _ in changes.retimed),
              *(r for r, _ in changes.customer)}
    changes.where = {r[0]: (str(r[3]), str(r[5])) for r in ids if r[0] in listed}
    _write(journal, out, ids, changes, fingerprint, time.time())
    journal.rebound = None
    journal.keep_digest = frozenset(keep)  # type: ignore[attr-defined]
    return changes


def forget_gone_invalid(journal: Journal, invalid: dict[str, tuple[str, str]], *,
                        stale: list[str] | None = None) -> Changes | None:
    """Invalid rows of the journal that the file no longer has (a bad row deleted; the plan, hence
    the fingerprint, unchanged) leave the journal's rows for ``gone_rows``, listed like gone sent
    rows, so that status and the report stop counting them; None when there are none. Invalid rows
    have no conversation, so the ``rows_conv`` index finds them without a scan."""
    import time

    if stale is None:  # ``stale`` given: found by the caller (a stored plan's, in SQL)
        stale = [str(r[0]) for r in journal.query("SELECT rid, status FROM rows WHERE conv IS NULL")
                 if r[1] == INVALID and str(r[0]) not in invalid]
    if not stale:
        return None
    with journal.transaction() as cur:
        cur.execute(_GONE)
        cur.executemany(
            "INSERT INTO gone_rows (rid, chat, mid, status, code, message_id, gone_at) "
            "SELECT rid, '', '', status, code, message_id, ? FROM rows WHERE rid = ?",
            [(time.time(), rid) for rid in stale],
        )
        cur.executemany("DELETE FROM rows WHERE rid = ?", [(rid,) for rid in stale])
    return Changes(gone=[(rid, "", "", INVALID) for rid in stale], legacy=0)


def _fresh_ids(journal: Journal, old: list[Old], new: list[Planned], pairs: dict[int, int]) -> dict[int, str]:
    """New rows whose generated id a journalled (or gone) row of their chat already has → another id
    (``<id>-<n>``): e.g. a row inserted between two sent rows of the same second takes the
    occurrence number, hence the id, of the one after it."""
    taken = {(o.chat, o.mid) for o in old}
    with contextlib.suppress(sqlite3.Error):
        taken.update((str(c), str(m)) for c, m in journal.query("SELECT chat, mid FROM gone_rows"))
    out: dict[int, str] = {}
    for i, n in enumerate(new):
        if i in pairs or not is_generated(n[5]) or (n[3], n[5]) not in taken:
            continue
        k = 1
        while (n[3], f"{n[5]}-{k}") in taken:
            k += 1
        out[i] = f"{n[5]}-{k}"
        taken.add((n[3], out[i]))
    return out


def _write(journal: Journal, out: list[list[Any]], ids: list[tuple[Any, ...]], changes: Changes,
           fingerprint: str, now: float) -> None:
    """Replace the rows and their identities (and the ids undo deletes by), record the gone ones and
    the new fingerprint, in one transaction."""
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
                        "(?, ?, ?, ?, ?, ?, ?)", [r[:7] for r in ids])
        cur.execute("DELETE FROM row_identity")
        cur.executemany("INSERT INTO row_identity (rid, date, body) VALUES (?, ?, ?)",
                        [(r[0], r[7], r[8]) for r in ids])
        if cur.execute("SELECT 1 FROM sqlite_master WHERE name = 'external_ids'").fetchone():
            # undo deletes by the ids a row was sent with, keyed by the row: follow the new keys
            added = set(changes.added)
            cur.execute("DELETE FROM external_ids")
            cur.executemany("INSERT INTO external_ids (rid, chat, user, mid) VALUES (?, ?, ?, ?)",
                            [r[:1] + r[3:6] for r in ids if r[0] not in added])
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


__all__ = [
    "CUSTOMER", "Changes", "check_identity", "forget_gone_invalid", "reconcile", "record_customers",
    "write_changes",
]
