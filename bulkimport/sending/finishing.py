"""Finishing sessions inside the send loop: which conversations are complete, and their finish calls.

An imported conversation opens an open-line session that sits in an operator's queue (at most 1,000
open per operator), so a run finishes each one (``imopenlines.operator.another.finish``) as soon as
its last row is settled, not when a multi-day run ends. Rules kept here (see docs/after-import.md):

* **When**: a conversation is done in this run once nothing of it is queued or on the wire; it is
  finished when the journal says it is complete (the rule of :func:`bulkimport.after.finish.to_finish`:
  no pending, unknown, in-flight or holding failed row, at least one sent; its CHAT_ID from the
  send answer) and every conversation sharing a lock key with it (a customer: Bitrix24 groups
  chats by ``user.id``, so they may share one portal chat) is done too. Conversations complete when
  the run starts (an earlier run was stopped before it finished them) are queued at once.
* **How**: the queued finish commands ride in the send batches that have room (a batch holds 50
  commands), a few seconds of server time per request at most. They go in a batch of their own
  when nothing is left to send beside them, when the oldest has waited ``MAX_RIDE_WAIT`` seconds,
  or when a full batch of them is queued and the send requests still to come have no room for
  them and for the conversations still to finish (then the request is one that finishing at the
  end would have taken too). The loop asks the governor for the finish method's operating budget
  apart from the send method's.
* **Once**: each finished chat is recorded in the journal's ``finished`` table as its answer is
  settled (Ctrl-C held back meanwhile); an answer that did not say — refused, cut off, missing — puts
  the chat back in the queue (at most ``ATTEMPTS`` times; the call is idempotent). A per-chat error
  is kept for the report and never stops the run; the end-of-run pass tries those again.

No HTTP, no clock: the loop hands this module the answers (see :mod:`.loop`).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..after import finish as after_finish
from ..errors import AmbiguousError, FatalError, RetryableError, TokenExpiredError
from ..journal import Journal
from ..portal.methods import FINISH_METHOD
from .outcome import _wall
from .scheduling import _Conv, _Request

#: Server seconds one finish call is assumed to cost until one is measured (the documented 0.7 s
#: per call): how many may ride in a send batch is sized from it.
ASSUMED_FINISH_SECONDS = 0.7
#: Answers that did not say (refused, cut off, missing) after which a chat is left to the end pass.
ATTEMPTS = 3
#: Commands of one batch of finish commands only (the portal's cap).
PER_BATCH = after_finish.PER_BATCH
#: Longest a queued finish waits (run clock seconds) for a send batch with room to ride in.
MAX_RIDE_WAIT = 300.0


class Finishing:
    """The finish calls of one run: the queue of complete conversations' CHAT_IDs and what their
    answers said (``result``, a :class:`~bulkimport.after.finish.FinishResult`)."""

    def __init__(
        self, journal: Journal, convs: dict[int, _Conv], now: Callable[[], float] = time.monotonic
    ) -> None:
        after_finish.ensure_table(journal)
        self.journal = journal
        self.now = now  # the run's clock: how long the oldest queued finish has waited
        self._since: dict[str, float] = {}  # CHAT_ID → when it was first queued
        self.result = after_finish.FinishResult()
        self.queue: collections.deque[str] = collections.deque()
        self.cost: float | None = None  # EWMA of one finish call's server seconds
        self.stopped: str | None = None  # a fatal answer: no more finishing in this run
        self._known = after_finish.finished_chats(journal)  # finished, queued or given up
        self._attempts: collections.Counter[str] = collections.Counter()
        self._convs = convs
        self._done: set[int] = set()
        # lock key → conversations holding it that are not done yet; done ones waiting on them
        self._busy: collections.Counter[str] = collections.Counter()
        self._deferred: dict[str, set[int]] = collections.defaultdict(set)
        self._counted = {c.index for c in convs.values() if c.queue}  # in ``_busy`` until done
        for conv in convs.values():
            if conv.queue:
                self._busy.update(conv.locks)
        self.done([c for c in convs.values() if not c.queue])  # complete before the run started

    # ------------------------------------------------------------------ which
    def done(self, convs: Iterable[_Conv]) -> None:
        """``convs`` have nothing more queued or on the wire in this run: queue the finish of each
        complete one whose lock-sharing conversations are done too (one journal query)."""
        ready: set[int] = set()
        for conv in convs:
            if conv.index in self._done or conv.queue:
                continue
            self._done.add(conv.index)
            ready.add(conv.index)
            if conv.index in self._counted:
                self._busy.subtract(conv.locks)
            for lock in conv.locks:
                if self._busy[lock] <= 0 and lock in self._deferred:
                    ready |= self._deferred.pop(lock)
        eligible = []
        for index in sorted(ready):
            blocked = [lock for lock in self._convs[index].locks if self._busy[lock] > 0]
            for lock in blocked:
                self._deferred[lock].add(index)
            if not blocked:
                eligible.append(index)
        if not eligible or self.stopped:
            return
        now = self.now()
        for _conv, chat in sorted(after_finish.complete_chats(self.journal, eligible).items()):
            if chat is not None and chat not in self._known:
                self._known.add(chat)
                self._since[chat] = now
                self.queue.append(chat)

    # ------------------------------------------------------------------ how many
    def queued(self) -> int:
        """Finish commands waiting for a request (none once a fatal answer stopped finishing)."""
        return 0 if self.stopped else len(self.queue)

    def waited(self) -> float:
        """Seconds the oldest queued finish has waited for a request (0 when none is queued)."""
        if not self.queue:
            return 0.0
        return max(0.0, self.now() - self._since.get(self.queue[0], self.now()))

    def go_alone(self, still_to_finish: int, room_ahead: int) -> bool:
        """Whether the queued finishes go in a request of their own now instead of riding:
        ``still_to_finish`` conversations have rows still to send (each will need a finish) and
        the send requests still to come have ``room_ahead`` command slots left beside their sends."""
        if not self.queued():
            return False
        if self.waited() >= MAX_RIDE_WAIT:
            return True
        return self.queued() >= PER_BATCH and self.queued() + still_to_finish > room_ahead

    def fits(self, seconds: float) -> int:
        """How many finish calls fit in ``seconds`` of server time (measured cost, else assumed)."""
        cost = self.cost if self.cost is not None else ASSUMED_FINISH_SECONDS
        return int(seconds / max(cost, 1e-6))

    def take(self, n: int) -> list[str]:
        """The next ``n`` CHAT_IDs of the queue (in completion order)."""
        return [self.queue.popleft() for _ in range(min(n, len(self.queue)))]

    @staticmethod
    def commands(chats: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """The batch commands finishing ``chats``, keyed ``f<i>`` (send commands are ``c<conv>``)."""
        return {f"f{i}": (FINISH_METHOD, {"CHAT_ID": int(chat)}) for i, chat in enumerate(chats)}

    # ------------------------------------------------------------------ answers
    def settle(self, req: _Request) -> None:
        """Record what ``req``'s finish commands did (call with Ctrl-C held back): finished chats go
        to the journal at once; what did not say goes back to the queue; errors are kept per chat."""
        chats = req.finishes
        if not chats:
            return
        if req.chosen:
            self.result.carried += len(chats)
        else:
            self.result.requests += 1
        exc = req.error
        if exc is not None:
            self._retry(chats, after_finish.why(exc), count=not isinstance(exc, _BACK))
            return
        done: list[str] = []
        for i, chat in enumerate(chats):
            key = f"f{i}"
            self._measure(req.times.get(key) or {})
            if key in req.errors:
                self._error(chat, req.errors[key])
            elif after_finish.finished_answer(req.results.get(key)):
                done.append(chat)
            elif key in req.results:
                self.result.failed[chat] = f"unexpected answer {req.results[key]!r}"
            else:
                self._retry([chat], "no answer for this command")
        after_finish.record(self.journal, done, _wall())
        self.result.finished += len(done)
        for chat in done:
            self.result.failed.pop(chat, None)

    def _error(self, chat: str, err: Any) -> None:
        """One finish command refused: again later (refused before running it), or an error for
        this chat (a fatal one stops finishing in this run: every other call would meet it)."""
        if isinstance(err, _BACK):
            self._retry([chat], after_finish.why(err), count=False)
        elif isinstance(err, AmbiguousError):
            self._retry([chat], after_finish.why(err))
        else:
            self.result.failed[chat] = after_finish.why(err)
            if isinstance(err, FatalError):
                self.stopped = self.stopped or after_finish.why(err)

    def _retry(self, chats: list[str], why: str, *, count: bool = True) -> None:
        """Put ``chats`` back at the front of the queue (``count``: one more answer that did not
        say; after ``ATTEMPTS`` of them the chat is left to the end-of-run pass)."""
        again = []
        for chat in chats:
            if count:
                self._attempts[chat] += 1
            if self._attempts[chat] >= ATTEMPTS:
                self.result.failed[chat] = why
            else:
                again.append(chat)
        self.queue.extendleft(reversed(again))

    def _measure(self, timing: dict[str, Any]) -> None:
        """Learn one finish call's server seconds from its ``time`` (``processing``, else ``duration``)."""
        value = timing.get("processing", timing.get("duration"))
        if isinstance(value, (int, float)) and value >= 0:
            self.cost = float(value) if self.cost is None else 0.7 * self.cost + 0.3 * float(value)


#: Refusals before the command ran: try again, not counted against the chat.
_BACK = (RetryableError, TokenExpiredError)

__all__ = ["ASSUMED_FINISH_SECONDS", "ATTEMPTS", "MAX_RIDE_WAIT", "Finishing"]
