"""``bulkimport verify``: is what the journal says was sent what the portal holds?

Per conversation: the rows the journal has as ``sent``, how many of them are in the chat
(``found``), which are not (``missing``: marked so in the journal, the next run sends them again,
after newer messages), and messages of the chat that carry a ``CONNECTOR_MID`` no sent row of the
conversation has (``unexpected``: e.g. sent by another tool). Unknown rows are settled first
(:mod:`bulkimport.after.settle`). Cost: one ``imopenlines.session.join`` plus one
``im.dialog.messages.get`` per 50 messages per chat (plus one ``imopenlines.dialog.get`` for a chat
the journal has no CHAT_ID for), all through the governor.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..codes import MISSING, SENT, count_of
from ..errors import ConfigError
from ..journal import Journal
from ..limits import STANDARD, PortalLimits
from .identities import JournalIds
from .readback import BATCH_CHATS, BATCH_HISTORY, PAGE, ChatContents, ChatReader, ReadbackRefused, sessions_of
from .settle import ChatLocator, Settled, check_mids, locate, settle_unknown

COLUMNS = ["chat", "portal_chat_id", "sent", "found", "missing", "unexpected", "missing_rows", "not_read"]


@dataclass
class Verification:
    """The comparison (one row per conversation), the settling done first, and the cost."""

    table: pd.DataFrame
    settled: Settled
    calls: int = 0
    seconds: float = 0.0
    refused: str | None = None
    missing_rows: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything the journal has as sent is on the portal, and no row is left unknown."""
        return self.refused is None and not self.missing_rows and not self.settled.left

    @property
    def exit_code(self) -> int:
        """0 when :attr:`ok`, else 1."""
        return 0 if self.ok else 1

    def lines(self) -> list[str]:
        """What the CLI prints: one line per conversation and a total."""
        out = [
            f"{r.chat}: sent {r.sent}, not read back (see below)" if r.not_read else
            f"{r.chat}: sent {r.sent}, found {r.found}, missing {r.missing}, unexpected {r.unexpected}"
            for r in self.table.itertuples()
        ]
        t = self.table[["sent", "found", "missing", "unexpected"]].sum()
        out.append(
            f"Total: {count_of(len(self.table), 'conversation')}, sent {int(t['sent'])}, "
            f"found {int(t['found'])}, "
            f"missing {int(t['missing'])}, unexpected {int(t['unexpected'])}; "
            f"{count_of(self.calls, 'call')} in {self.seconds:.1f} s"
        )
        if self.refused:
            out.append(f"Nothing concluded: {self.refused}")
        elif self.missing_rows:
            out.append(
                f"{count_of(len(self.missing_rows), 'row')} {'is' if len(self.missing_rows) == 1 else 'are'} "
                "marked missing: the next run sends them again (they will appear after newer messages of "
                "their chats)"
            )
        return out


def _groups(journal: Journal, ids: JournalIds, chats: Iterable[str] | None) -> dict[int, list[Any]]:
    """Conversation → its rows ``(rid, seq, status)``, limited to the external chat ids ``chats``."""
    wanted = {str(c) for c in chats} if chats else None
    rows = journal.query("SELECT rid, conv, seq, status FROM rows WHERE conv IS NOT NULL ORDER BY conv, seq")
    out: dict[int, list[Any]] = {}
    for rid, conv, seq, status in rows:
        if (int(conv), int(seq)) not in ids.ids:
            continue
        if wanted is not None and ids.of(int(conv), 0)[0] not in wanted:
            continue
        out.setdefault(int(conv), []).append((rid, int(seq), status))
    return out


def estimate(journal: Journal, chats: Iterable[str] | None = None,
             limits: PortalLimits = STANDARD) -> tuple[int, float]:
    """Requests verify needs and their seconds at the bucket's pace: one batch per 25 chats (a join
    and the first page each), one more call per further 50 messages of a chat, one
    ``imopenlines.dialog.get`` per chat without a recorded CHAT_ID."""
    ids = JournalIds(journal)
    groups = _groups(journal, ids, chats)
    known = journal.portal_chats()
    more = sum(max(0, math.ceil((len(rows) + 1) / PAGE) - 1) + (conv not in known)
               for conv, rows in groups.items())
    calls = math.ceil(len(groups) / BATCH_CHATS) + more + _history_requests(journal, groups, known)
    return calls, max(0.0, calls - limits.bucket_size) / limits.drain_rate


def _history_requests(journal: Journal, groups: dict[int, list[Any]],
                      known: dict[int, tuple[str, str | None]]) -> int:
    """Batches of ``session.history.get`` for the chats whose sessions were finished (they refuse the
    join, and are read session by session, :data:`BATCH_HISTORY` calls per request)."""

    try:
        finished = {str(r[0]) for r in journal.query("SELECT chat_id FROM finished")}
    except sqlite3.Error:  # nothing finished yet
        return 0
    sessions = sessions_of(journal)
    n = sum(len(sessions.get(int(known[c][0]), [])) or 1 for c in groups
            if c in known and str(known[c][0]) in finished and str(known[c][0]).isdigit())
    return math.ceil(n / BATCH_HISTORY)


def _gone(journal: Journal) -> dict[str, set[str]]:
    """External chat id → message ids of rows no longer in the file (``gone_rows``: a re-run after an
    edit); those still on the portal are the journal's, not unexpected."""

    out: dict[str, set[str]] = {}
    try:
        for chat, mid in journal.query("SELECT chat, mid FROM gone_rows"):
            out.setdefault(str(chat), set()).add(str(mid))
    except sqlite3.Error:  # no re-run after an edit yet
        pass
    return out


def _compare(
    ids: JournalIds, conv: int, rows: list[Any], read: ChatContents, gone: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], list[str]]:
    """One conversation's line of the table and its sent rows the chat does not hold."""
    sent = [(rid, ids.of(conv, seq)[2]) for rid, seq, status in rows if status == SENT]
    missing = [rid for rid, mid in sent if mid not in read.found]
    mine = {ids.of(conv, seq)[2] for _, seq, _ in rows} | gone
    line = {
        "chat": ids.of(conv, 0)[0],
        "portal_chat_id": read.chat_id or None,
        "sent": len(sent),
        "found": len(sent) - len(missing),
        "missing": len(missing),
        "unexpected": len(set(read.found) - mine),
        "missing_rows": ",".join(missing),
        "not_read": "",
    }
    return line, missing


def _unread(ids: JournalIds, conv: int, rows: list[Any], reason: str) -> dict[str, Any]:
    """The table line of a conversation whose dialog the portal would not locate."""
    return {"chat": ids.of(conv, 0)[0], "portal_chat_id": None, "sent": sum(s == SENT for _, _, s in rows),
            "found": 0, "missing": 0, "unexpected": 0, "missing_rows": "", "not_read": reason}


def verify(
    journal: Journal,
    client: Any,
    *,
    chats: Iterable[str] | None = None,
    clock: Any = None,
    cap: float = 60.0,
    notify: Callable[[str], None] | None = None,
) -> Verification:
    """Settle unknown rows, read every (or every ``chats``) conversation back, compare, mark missing."""
    meta = journal.meta()
    connector, line = meta.get("connector", ""), meta.get("line", "")
    chats = [str(c) for c in chats] or None if chats is not None else None  # read twice below
    ids = JournalIds(journal)
    if not len(ids):
        raise ConfigError(
            f"journal {journal.path} has no record of the external message ids (written before "
            "verify existed): run the same `bulkimport run` command once more, then verify"
        )
    begun = time.monotonic()
    line_value: Any = int(line) if str(line).isdigit() else line
    settled = settle_unknown(journal, client, connector=connector, line=line_value, clock=clock,
                             cap=cap, notify=notify, chats=chats)
    reader = ChatReader(client, sessions_of(journal))
    locator = ChatLocator(journal, ids, reader, connector, line_value)
    lines: list[dict[str, Any]] = []
    missing: list[str] = []
    contents: list[ChatContents] = []
    refused = settled.reason
    try:
        groups = _groups(journal, ids, chats)
        gone = _gone(journal)
        places, unread = locate(locator, groups)
        reads = reader.read_many(sorted({w[0] for w in places.values() if w is not None}))
        for conv, rows in groups.items():
            if conv in unread:  # the portal would not say where its dialog is: nothing concluded
                lines.append(_unread(ids, conv, rows, unread[conv]))
                continue
            where = places[conv]
            read = reads[where[0]] if where is not None else ChatContents(0)
            contents.append(read)
            row, lost = _compare(ids, conv, rows, read, frozenset(gone.get(ids.of(conv, 0)[0], ())))
            lines.append(row)
            missing += lost
        check_mids(contents)
        if unread and refused is None:
            refused = f"{count_of(len(unread), 'conversation')} not read back: {next(iter(unread.values()))}"
    except ReadbackRefused as exc:
        refused, missing = str(exc), []
    if missing and refused is None:
        journal.executemany(
            "UPDATE rows SET status=?, code='missing-on-portal', error=NULL, hold=0 WHERE rid=? AND status=?",
            [(MISSING, rid, SENT) for rid in missing],
        )
    table = pd.DataFrame(lines, columns=COLUMNS)
    return Verification(table, settled, reader.calls + settled.calls, time.monotonic() - begun,
                        refused, missing)




def write_comparison(result: Verification, path: str | Path) -> Path:
    """The per-conversation comparison as ``.csv`` or ``.xlsx`` (no cell can become a formula)."""
    from ..reporting import check_report_path, neutralise

    target = check_report_path(str(path))
    table = result.table.map(neutralise)
    if target.suffix.lower() == ".csv":
        table.to_csv(target, index=False, encoding="utf-8-sig")
    else:
        table.to_excel(target, index=False, sheet_name="verify")
    return target


__all__ = ["COLUMNS", "Verification", "estimate", "verify", "write_comparison"]
