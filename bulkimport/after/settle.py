"""Settle ``unknown`` rows by reading their chats back, before a resumed run sends anything.

A row is ``unknown`` when the request that carried it was cut off after it left (kill -9, a
dropped connection after the portal committed). The portal can say what it holds:

* its external ``message.id`` is in the chat (``CONNECTOR_MID``) → ``sent`` (code
  ``found-on-portal``, with the portal's message id);
* it is not, and the request started longer ago than the portal's request cap (60 s) plus
  :data:`MARGIN` — the portal can no longer be storing it → ``pending``: sent again, in order;
* it is not, and the request is younger → the settler waits (on the portal's clock) until the cap
  has passed and reads again (``wait=False``: leaves it ``unknown``).

A portal that refuses read-back (scope, permissions) or whose messages carry no ``CONNECTOR_MID``
at all leaves every row ``unknown`` and says exactly why; ``bulkimport resolve`` stays for that.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..codes import PENDING, SENT, count_of
from ..journal import Journal, RowUpdate
from .identities import JournalIds
from .readback import ChatContents, ChatReader, ReadbackRefused, sessions_of

log = logging.getLogger("bulkimport.after")

#: Seconds past the portal's request cap before a request's absent rows count as not stored.
MARGIN = 5.0


class NoConnectorMid(ReadbackRefused):
    """The portal's messages carry no CONNECTOR_MID: read-back cannot tell which rows arrived."""


@dataclass
class Settled:
    """What settling did: rows found (sent), to send again (pending), left unknown and why."""

    found: int = 0
    resent: int = 0
    left: int = 0
    reason: str | None = None
    calls: int = 0
    seconds: float = 0.0
    out_of_order: list[str] = field(default_factory=list)  # rows sent again behind found ones

    def __str__(self) -> str:
        text = (
            f"Read-back settled unknown rows: {self.found} found on the portal (sent), "
            f"{self.resent} not there (sent again), {self.left} still unknown"
        )
        if self.reason:
            text += f" ({self.reason})"
        return text + f"; {count_of(self.calls, 'call')}"


def check_mids(contents: list[ChatContents]) -> None:
    """Refuse to conclude anything when the chats read hold messages but none names its id."""
    named = sum(len(c.found) for c in contents)
    bare = sum(c.without_mid for c in contents)
    if bare and not named:
        raise NoConnectorMid(
            f"the portal's messages carry no CONNECTOR_MID ({bare} read, none names the id it was "
            "sent with): read-back cannot tell which rows arrived; run `bulkimport setup "
            "--check-readback`, and settle the rows with `bulkimport resolve`"
        )


class ChatLocator:
    """Portal chat of a conversation: from the journal (sent rows), else imopenlines.dialog.get."""

    def __init__(
        self, journal: Journal, ids: JournalIds, reader: ChatReader, connector: str, line: Any
    ) -> None:
        self.known = journal.portal_chats()
        self.ids, self.reader, self.connector, self.line = ids, reader, connector, line

    def chat(self, conv: int) -> tuple[int, str | None] | None:
        """(CHAT_ID, SESSION_ID) of conversation ``conv``, or None when the portal has no dialog."""
        if conv in self.known:
            chat, session = self.known[conv]
            return int(chat), session
        ext_chat, user, _ = self.ids.of(conv, 0)
        found = self.reader.find_chat(self.connector, self.line, ext_chat, user)
        if found is not None:
            self.known[conv] = (str(found[0]), found[1])
        return found


def _age(started: float | None, clock: Any) -> float:
    """Portal seconds since a request started (wall time in the journal; a sandbox's clock is scaled)."""
    if started is None:
        return float("inf")
    return (time.time() - started) * float(getattr(clock, "scale", 1.0))


def _unknown(journal: Journal, convs: set[int] | None) -> list[tuple[str, int, int, float | None]]:
    """The journal's unknown rows, of the conversations ``convs`` only (None: of all)."""
    rows = journal.unknown_rows()
    return rows if convs is None else [r for r in rows if int(r[1]) in convs]


Place = tuple[int, str | None]


def locate(locator: ChatLocator, convs: Any) -> tuple[dict[int, Place | None], dict[int, str]]:
    """(CHAT_ID, SESSION_ID) or None (no such dialog) per conversation, and the conversations whose
    dialog the portal would not say (refused: their rows stay as they are) with the reason."""
    places: dict[int, Place | None] = {}
    refused: dict[int, str] = {}
    for conv in convs:
        try:
            places[conv] = locator.chat(conv)
        except ReadbackRefused as exc:
            refused[conv] = str(exc)
    return places, refused


def _one_pass(
    journal: Journal, locator: ChatLocator, horizon: float, clock: Any, convs: set[int] | None = None
) -> tuple[list[RowUpdate], list[tuple[str, int, int, float | None]], list[str], dict[int, str]]:
    """Read the chats of the unknown rows once: updates, rows too young to judge, out-of-order ones,
    and the conversations the portal refused to locate (their rows stay unknown) with the reason."""
    by_conv: dict[int, list[tuple[str, int, int, float | None]]] = {}
    for row in _unknown(journal, convs):
        by_conv.setdefault(int(row[1]), []).append(row)
    updates: list[RowUpdate] = []
    young: list[tuple[str, int, int, float | None]] = []
    late: list[str] = []
    contents: list[ChatContents] = []
    places, refused = locate(locator, by_conv)
    by_conv = {conv: rows for conv, rows in by_conv.items() if conv not in refused}
    wanted: dict[int, set[str]] = {}
    for conv, rows in by_conv.items():
        if places[conv] is not None:
            wanted.setdefault(places[conv][0], set()).update(locator.ids.of(conv, r[2])[2] for r in rows)
    reads = locator.reader.read_many(sorted(wanted), {c: frozenset(m) for c, m in wanted.items()})
    for conv, rows in by_conv.items():
        where = places[conv]
        read = reads[where[0]] if where is not None else ChatContents(0)
        contents.append(read)
        found_after = False
        for rid, _, seq, started in reversed(rows):
            mid = locator.ids.of(conv, seq)[2]
            if mid in read.found and where is not None:
                found_after = True
                updates.append(RowUpdate(rid, SENT, "found-on-portal", None, 0, read.found[mid],
                                         chat_id=str(where[0]), session_id=where[1]))
            elif _age(started, clock) > horizon:
                updates.append(RowUpdate(rid, PENDING, None, None, 0))
                if found_after:
                    late.append(rid)
            else:
                young.append((rid, conv, seq, started))
    check_mids(contents)
    return updates, young, late, refused


def _refused_reason(refused: dict[int, str]) -> str:
    """One line for the conversations whose dialog the portal would not locate."""
    first = next(iter(refused.values()))
    more = f" (and {count_of(len(refused) - 1, 'more conversation')})" if len(refused) > 1 else ""
    return f"{first}{more}"


def _are(n: int) -> str:
    return "is" if n == 1 else "are"


def _convs_of(ids: JournalIds, chats: Iterable[str]) -> set[int]:
    """The conversations whose external chat id is one of ``chats``."""
    wanted = {str(c) for c in chats}
    return {conv for (conv, seq), (chat, _, _) in ids.ids.items() if seq == 0 and chat in wanted}


def settle_unknown(
    journal: Journal,
    client: Any,
    *,
    connector: str,
    line: Any,
    clock: Any = None,
    cap: float = 60.0,
    wait: bool = True,
    notify: Callable[[str], None] | None = None,
    chats: Iterable[str] | None = None,
) -> Settled:
    """Settle the journal's unknown rows by reading their chats back (see the module docstring); needs the
    journal's ``row_ids`` (:mod:`bulkimport.after.identities`). ``chats``: only the rows of these
    conversations (external chat ids, as ``verify --chats``)."""
    say = notify or log.warning
    out = Settled()
    if not _unknown(journal, None):  # before loading every row's ids (at 10M rows, gigabytes)
        return out
    ids = JournalIds(journal)
    convs = None if chats is None else _convs_of(ids, chats)
    if not _unknown(journal, convs):
        return out
    begun = time.monotonic()
    reader = ChatReader(client, sessions_of(journal))
    locator = ChatLocator(journal, ids, reader, connector, line)
    horizon = cap + MARGIN
    try:
        for attempt in range(2):
            updates, young, late, refused = _one_pass(journal, locator, horizon, clock, convs)
            if refused:
                out.reason = _refused_reason(refused)
            if updates:
                journal.settle(None, updates, time.time(), "readback")
            out.found += sum(u.status == SENT for u in updates)
            out.resent += sum(u.status == PENDING for u in updates)
            out.out_of_order += late
            if not young or not wait or attempt:
                break
            rest = max(horizon - _age(r[3], clock) for r in young) + 0.5
            say(f"{count_of(len(young), 'unknown row')} not on the portal yet whose request started less "
                f"than {horizon:g} s ago: waiting {rest:.0f} s before reading their chats again")
            (clock.sleep if clock is not None else time.sleep)(rest)
        out.left = len(_unknown(journal, convs))
    except ReadbackRefused as exc:
        out.left, out.reason = len(_unknown(journal, convs)), str(exc)
    out.calls, out.seconds = reader.calls, time.monotonic() - begun
    if out.out_of_order:
        say(f"{count_of(len(out.out_of_order), 'row')} not on the portal {_are(len(out.out_of_order))} sent "
            "again after later messages of their chat that are: they will appear after them")
    say(str(out))
    return out


__all__ = ["MARGIN", "ChatLocator", "NoConnectorMid", "Settled", "locate", "settle_unknown"]
