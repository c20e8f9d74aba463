"""Which conversations go next: the queue of each conversation, holds, lock keys, the critical path.

Rules kept here (see docs/sending.md, *Ordering rules* and *Requests in flight*):

* a request carries at most one command per conversation and never two conversations sharing a
  lock key (the chat id or a customer id), and nothing whose lock key is on the wire already;
* within a conversation, plan order; a conversation has at most one request in flight;
* a held conversation sends nothing more in this run (its rows stay ``pending``);
* when one conversation's chunks outnumber the requests everything else needs, nothing goes
  without it while it is on the wire (it sets the run's length).

No journal, no HTTP, no clock: what a run knows of its rows comes in as the journal's state frame
(:func:`build_schedule`) or as its non-pending rows streamed in (conv, seq) order
(:func:`build_schedule_sorted`, for plans too big for row keys in memory); both apply the rules
through :func:`_decide`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import BulkImportError
from ..planning import Conversation, Messages, Plan
from ..portal.methods import SEND_METHOD

METHOD = SEND_METHOD  # one spelling: bulkimport.portal.methods


@dataclass(slots=True)
class _Conv:
    """One conversation's place in a run: what it still has to send, and why it stopped if held."""

    index: int
    key: str
    locks: frozenset[str]
    queue: list[int]  # positions (into conversation.rows) still to send, in order
    held: str | None = None  # why-code when held
    held_detail: str | None = None
    rest: list[int] = field(default_factory=list)  # positions behind the hold point
    cap: int | None = None  # messages per call for this conversation after a rejected bigger call


def hold(conv: _Conv, code: str, detail: str) -> None:
    """Stop ``conv`` for this run: what it had queued stays pending, under ``code``."""
    conv.held, conv.held_detail = code, detail
    conv.rest = conv.queue
    conv.queue = []


@dataclass
class _Request:
    """One request in flight: what it carries, its journal id and governor ticket, its outcome."""

    seq: int
    chosen: list[tuple[_Conv, list[int]]]  # conversations and the positions this request carries
    commands: dict[str, tuple[str, dict[str, Any]]]
    rids: list[str]
    ticket: Any
    request_id: int | None = None
    # the outcome, filled by the exchange (worker thread), read by the settling thread afterwards
    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)
    times: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: BaseException | None = None
    fatal: BulkImportError | None = None  # a nested command's fatal error (stops the run)
    #: CHAT_IDs whose session this request finishes (commands ``f<i>``, beside or instead of sends)
    finishes: list[str] = field(default_factory=list)

    def queued(self) -> int:
        """Messages its conversations still have queued (what settling it changes)."""
        return sum(len(conv.queue) for conv, _ in self.chosen)


def _held_reason(status: str, code: Any) -> tuple[str, str]:
    """Why a conversation is held behind a row that is ``failed`` (held) or ``unknown``."""
    if status == "failed":
        return "held-after-failure", f"held: an earlier request of this conversation was refused ({code})"
    return "held-after-unknown", f"held: an earlier row of this conversation is unknown ({code})"


#: One journalled row that is not plain pending, as the journal gives it: (conv, seq, status,
#: hold, code); ``seq`` is the row's position in its conversation.
Mark = tuple[int, int, str, Any, Any]


def _decide(
    rows: int,
    marks: Iterable[Mark],
    retry_failed: bool,
    retry_unknown: bool,
    waiting: dict[int, tuple[str, str]] | None = None,
) -> tuple[list[int], tuple[str, str] | None, list[int]]:
    """(queue, hold reason or None, rest) of one conversation of ``rows`` rows, from the ``marks``
    of its rows that are not plain pending, in position order (an absent position is pending):
    the ordering rules of both builders live here. ``waiting``: position → (code, detail) of the
    rows that may not go in this run (they must be among ``marks``, as ``pending`` if they are).
    A mark repeating the last position, or outside ``range(rows)``, is ignored."""
    queue: list[int] = []
    rest: list[int] = []
    held: tuple[str, str] | None = None
    done = 0  # positions below this are decided
    for _, pos, st, flag, code in marks:
        if pos < done or pos >= rows:
            if 0 <= pos < done - 1:
                raise ValueError(f"marks out of position order: {pos} after {done - 1}")
            continue
        (queue if held is None else rest).extend(range(done, pos))  # pending rows between marks
        done = pos + 1
        if held is not None:
            if st == "pending":
                rest.append(pos)
            continue
        if st in ("sent", "deleted"):  # deleted: taken back by `bulkimport undo`, not re-sent
            continue
        if waiting and pos in waiting and st != "failed":
            held = waiting[pos]
            rest.append(pos)
            continue
        if st == "failed":
            if retry_failed:
                queue.append(pos)
            elif flag:
                held = _held_reason(st, code)
            continue
        if st == "unknown":
            if retry_unknown:
                queue.append(pos)
            else:
                held = _held_reason(st, code)
            continue
        queue.append(pos)  # pending (or a state no rule names: sent again, as before)
    (queue if held is None else rest).extend(range(done, rows))
    return queue, held, rest


def _conv(index: int, key: str, lock_keys: Iterable[str], decided: tuple[list[int], Any, list[int]]) -> _Conv:
    """The ``_Conv`` of conversation ``index`` from what :func:`_decide` gave for it."""
    queue, held, rest = decided
    c = _Conv(index, key, frozenset(lock_keys) | {f"chat:{key}"}, queue)
    if held is not None:
        c.held, c.held_detail = held
        c.rest = rest
    return c


def build_schedule(
    conversations: Sequence[Conversation],
    keys: Sequence[Sequence[str]],
    state: pd.DataFrame,
    retry_failed: bool,
    retry_unknown: bool,
    waiting: dict[str, tuple[str, str]] | None = None,
) -> dict[int, _Conv]:
    """What each conversation still has to send, from the journal's ``state`` (indexed by row key,
    columns status/hold/code; an absent row is pending), honouring holds and the retry options.
    ``waiting``: rows that may not go in this run (code, detail), e.g. their attachment is not on
    Drive: each holds its conversation from that row on (order kept), the rows stay pending."""
    waiting = waiting or {}
    # dict(zip(tolist)) instead of Series.to_dict(): the same values, without boxing each
    # element through pandas (~1 s per 100,000 rows, bench/client_overhead.py)
    rids = state.index.tolist()
    columns = zip(state["status"].tolist(), state["hold"].tolist(), state["code"].tolist(), strict=True)
    marks = dict(zip(rids, columns, strict=True))  # row key -> (status, hold, code)
    convs: dict[int, _Conv] = {}
    for ci, (conv, conv_keys) in enumerate(zip(conversations, keys, strict=True)):
        mine: list[Mark] = []
        waits: dict[int, tuple[str, str]] = {}
        if marks or waiting:
            for pos, key in enumerate(conv_keys):
                mark = marks.get(key)
                if key in waiting:
                    waits[pos] = waiting[key]
                    mark = mark or ("pending", None, None)
                if mark is not None:
                    mine.append((ci, pos, *mark))
        decided = _decide(len(conv_keys), mine, retry_failed, retry_unknown, waits)
        convs[ci] = _conv(ci, conv.key, conv.lock_keys, decided)
    return convs


class _Cursor:
    """The sorted marks, handed out one conversation at a time with one mark read ahead: at 10M
    rows they come from a journal cursor, never all in memory."""

    def __init__(self, marks: Iterable[Mark]) -> None:
        self._it = iter(marks)
        self._ahead: Mark | None = None
        self._started = False

    def of(self, ci: int) -> Iterator[Mark]:
        """The marks of conversation ``ci`` (after those of ``ci - 1``), dropping any of a
        negative conv; a mark of an earlier conversation here means the stream is not sorted."""
        if not self._started:
            self._started = True
            self._ahead = next(self._it, None)
        while self._ahead is not None and self._ahead[0] <= ci:
            mark, self._ahead = self._ahead, next(self._it, None)
            if mark[0] == ci:
                yield mark
            elif ci:  # only a mark of a negative conv may come before conversation 0's
                raise ValueError(f"marks out of (conv, seq) order: conv {mark[0]} after conv {ci}")


def build_schedule_sorted(
    conversations: Iterable[tuple[str, frozenset[str], int]],
    marks: Iterable[Mark],
    retry_failed: bool,
    retry_unknown: bool,
) -> dict[int, _Conv]:
    """:func:`build_schedule` (without ``waiting``) from streams: ``conversations`` are
    (key, lock keys, rows) in plan order, ``marks`` the journal's rows that are not pending as
    (conv, seq, status, hold, code) sorted by (conv, seq); a row with no mark is pending, a mark of
    a conversation the plan lacks is ignored. Both are read once, in step, without a row key."""
    cursor = _Cursor(marks)
    convs: dict[int, _Conv] = {}
    for ci, (key, lock_keys, rows) in enumerate(conversations):
        decided = _decide(rows, cursor.of(ci), retry_failed, retry_unknown)
        convs[ci] = _conv(ci, key, lock_keys, decided)
    return convs


def locks_in_flight(active: Iterable[_Request]) -> set[str]:
    """The lock keys the requests in flight hold: their conversations' chats and customers."""
    taken: set[str] = set()
    for other in active:
        for conv, _ in other.chosen:
            taken |= conv.locks
    return taken


class Schedule:
    """The conversations with work, in plan order, and the choice of the next request's chunks.

    Each choice scans from the front only as far as it needs to fill a batch and drops finished or
    held conversations it passes, so a plan with 50 000 conversations costs O(batch) per request,
    not O(conversations).
    """

    def __init__(self, convs: dict[int, _Conv]) -> None:
        self.convs = convs
        self.order = [c for c in convs.values() if c.queue]
        self.head = 0
        # The longest conversations: one of them may be the critical path (its chunks go one per
        # request, in order), which a second request in flight cannot shorten.
        self.longest = sorted(self.order, key=lambda c: len(c.queue), reverse=True)[:8]
        self.left = sum(len(c.queue) for c in self.order)  # messages still queued

    def to_send(self) -> int:
        """Messages queued in this run."""
        return sum(len(c.queue) for c in self.convs.values())

    def exhausted(self) -> bool:
        """True when no conversation has anything left to send."""
        order = self.order
        while self.head < len(order) and not order[self.head].queue:
            self.head += 1
        return self.head == len(order)

    def settled(self, queued_before: int, queued_after: int) -> None:
        """Account for a settled request: its conversations' queues went from before to after."""
        self.left -= queued_before - queued_after

    def critical_on_the_wire(self, taken: set[str], mpc: int, cpb: int) -> bool:
        """Whether the longest conversation is on the wire and its chunks outnumber the calls
        everything else needs: then a request without it only spends a bucket token that one of
        its chunks will need later, so nothing goes until it is answered."""
        if not self.longest:
            return False
        critical = max(self.longest, key=lambda c: len(c.queue))
        chunks = -(-len(critical.queue) // min(mpc, critical.cap or mpc))
        calls_left = max(len(self.order) - self.head, self.left / mpc)  # a lower bound
        return bool(critical.locks & taken) and chunks * cpb >= calls_left

    def room_ahead(self, mpc: int, cpb: int, batch_max: int) -> tuple[int, int]:
        """(Conversations with rows still queued, command slots the send requests still to come
        leave beside their sends): at least max(the longest conversation's chunks, calls / ``cpb``)
        requests of ``batch_max`` commands carry the calls left (a rough figure: the calls are
        counted from the messages, at least one per conversation)."""
        convs = max(0, len(self.order) - self.head)
        if not self.longest or not convs:
            return convs, 0
        critical = max(self.longest, key=lambda c: len(c.queue))
        chunks = -(-len(critical.queue) // min(mpc, critical.cap or mpc))
        calls = max(-(-self.left // max(1, mpc)), convs)
        requests = max(chunks, -(-calls // max(1, cpb)))
        return convs, max(0, requests * batch_max - calls)

    def choose(self, taken: set[str], mpc: int, cpb: int) -> list[tuple[_Conv, list[int]]]:
        """Up to ``cpb`` conversations free of ``taken`` lock keys (and of each other's), each with
        its next chunk of at most ``mpc`` messages (or its own smaller cap)."""
        chosen: list[tuple[_Conv, list[int]]] = []
        taken = set(taken)
        kept: list[_Conv] = []
        scanned = 0
        for conv in itertools.islice(self.order, self.head, None):
            if len(chosen) >= cpb:
                break
            scanned += 1
            if not conv.queue:
                continue
            kept.append(conv)
            if conv.locks & taken:
                continue
            taken |= conv.locks
            chosen.append((conv, conv.queue[: min(mpc, conv.cap or mpc)]))
        self.order[self.head : self.head + scanned] = kept
        return chosen

    def pending_notes(
        self, keys: Sequence[Sequence[str]], reason: str | None
    ) -> list[tuple[str, str | None, str | None]]:
        """Why the rows that stay pending are pending: held, or not reached for ``reason``."""
        notes: list[tuple[str, str | None, str | None]] = []
        for conv in self.convs.values():
            if conv.held:
                notes += [(keys[conv.index][p], conv.held, conv.held_detail) for p in conv.rest]
            if conv.queue and reason:
                notes += [(keys[conv.index][p], "not-reached", reason) for p in conv.queue]
        return notes


def commands_for(
    plan: Plan, chosen: list[tuple[_Conv, list[int]]], connector: str, line: int | str
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The ``imconnector.send.messages`` command of each chosen chunk, keyed ``c<conversation>``."""
    commands: dict[str, tuple[str, dict[str, Any]]] = {}
    for conv, positions in chosen:
        messages = plan.conversations[conv.index].messages
        first, last = positions[0], positions[-1]
        chunk: Sequence[dict[str, Any]]
        if isinstance(messages, Messages) and last - first + 1 == len(positions):
            chunk = messages.view(first, last + 1)  # encoded without building the items
        else:
            chunk = [messages[p] for p in positions]
        commands[f"c{conv.index}"] = (METHOD, {"CONNECTOR": connector, "LINE": line, "MESSAGES": chunk})
    return commands
