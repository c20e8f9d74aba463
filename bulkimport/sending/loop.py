"""The run loop: launch a request when one may go, settle each answer, wait when paced, stop when told.

Only the HTTP exchange runs in a worker thread (:mod:`.workers`); choosing (:mod:`.scheduling`),
journalling and settling (:mod:`.outcome`) and the stop rules (:mod:`.state`) run here, in the
thread that called :meth:`RunLoop.run`.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Sequence
from queue import Empty, SimpleQueue
from typing import Any

from ..clock import Clock, interrupts_deferred
from ..errors import BulkImportError
from ..journal import Journal
from ..planning import Plan
from .outcome import Outcomes, _wall
from .progress import ProgressCollector
from .scheduling import METHOD, Schedule, _Conv, _Request, commands_for, locks_in_flight
from .state import RunState
from .workers import _exchange, _Workers

log = logging.getLogger("bulkimport.sending")


def _real_seconds(clock: Any, seconds: float) -> float:
    """Real seconds that ``seconds`` on ``clock`` take (a sandbox clock runs ``scale`` times faster)."""
    real = getattr(clock, "real", None)
    if callable(real):
        return max(0.0, float(real(seconds)))
    scale = getattr(clock, "scale", None)
    if isinstance(scale, (int, float)) and scale > 0:
        return max(0.0, seconds / float(scale))
    return max(0.0, seconds)


class RunLoop:
    """One run's requests, from the first launch to the last settled answer."""

    def __init__(
        self,
        *,
        plan: Plan,
        connector: str,
        line: int | str,
        client: Any,
        clock: Clock,
        journal: Journal,
        run_id: int,
        keys: Sequence[Sequence[str]],
        schedule: Schedule,
        state: RunState,
        progress: ProgressCollector,
        warm_token: Callable[[Any], None],
        resolve: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.plan, self.connector, self.line = plan, connector, line
        self.client, self.governor, self.clock = client, client.governor, clock
        self.journal, self.run_id, self.keys = journal, run_id, keys
        self.schedule, self.state, self.progress = schedule, state, progress
        self.warm_token = warm_token
        self.resolve = resolve  # fills in what a command needs at the last moment (Drive URLs)
        self.outcomes = Outcomes(journal, self.governor, keys)
        #: requests whose rows are journalled ``inflight`` and not yet settled, by sequence number
        self.active: dict[int, _Request] = {}
        self.done: SimpleQueue[_Request] = SimpleQueue()
        self.workers: _Workers | None = None
        self.sequence = itertools.count()
        self._reason: str | None = None  # the wait the collector was last told of
        self._thread = threading.current_thread()

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Send until nothing is left or the run stops; Ctrl-C is caught (``state.interrupted``)."""
        if self.state.max_in_flight > 1:
            self.workers = _Workers(self.state.max_in_flight, self.client, self.done)
        previous_wait = self.governor.on_wait
        self.governor.on_wait = self._on_wait
        try:
            self._loop()
        except KeyboardInterrupt:
            self._interrupted()
        finally:
            if self.workers is not None:
                self.workers.close()
            self.governor.on_wait = previous_wait

    def _loop(self) -> None:
        active, governor, state = self.active, self.governor, self.state
        while True:
            while True:  # settle whatever has been answered
                try:
                    answered = self.done.get_nowait()
                except Empty:
                    break
                self.settle(answered)
            step: float | None = None
            if state.may_launch(len(active)) and (not active or governor.room_for_another(METHOD)):
                step = self.launch()
                if step == 0.0:
                    continue
            if not active:
                if step is None:
                    return  # nothing left, nothing in flight (or stopped and drained)
                self._tell_wait(step)
                self.clock.sleep(min(step, 5.0))
                continue
            # Requests are in flight: wait for the next answer, at most as long as the pacing
            # wait (a stopped run waits for every answer and settles it before it ends).
            timeout = _real_seconds(self.clock, step) if step is not None else None
            try:
                answered = self.done.get(timeout=timeout)
            except Empty:
                continue
            self.settle(answered)

    def _interrupted(self) -> None:
        """Ctrl-C: the rows on the wire become ``unknown`` (``interrupted``), the rest stay."""
        self.state.interrupted = True
        cut = [rid for req in self.active.values() for rid in req.rids]
        if cut:
            self.journal.unknown_if_inflight(
                cut, "interrupted", "interrupted (Ctrl-C) while the request was in flight"
            )
        log.warning("interrupted: the journal is saved; run the same command again to resume")

    # ------------------------------------------------------------------ launching
    def launch(self) -> float | None:
        """Send the next request if one may go now. Returns 0 when one left, None when nothing can
        go until a request in flight is answered (or nothing is left), else the seconds the
        governor wants to wait."""
        governor, schedule = self.governor, self.schedule
        if schedule.exhausted():
            return None
        wait, _ = governor.wait_needed([METHOD])  # pace before choosing sizes and marking rows
        if wait > 0:
            return wait
        mpc = governor.messages_per_call(max(1, self.plan.chunk_size))
        cpb = governor.calls_per_batch(mpc)
        # The lock keys of the requests in flight are taken: a conversation in flight (its own
        # chat key) and any conversation sharing a customer with one wait for its answer.
        taken = locks_in_flight(self.active.values())
        if self.active and schedule.critical_on_the_wire(taken, mpc, cpb):
            return None
        chosen = schedule.choose(taken, mpc, cpb)
        if not chosen:
            return None
        try:
            self.warm_token(self.client)  # a refresh happens before rows are marked, not after
        except BulkImportError as exc:
            self.state.stop(exc)
            return None
        ticket, wait, _ = governor.try_acquire([METHOD] * len(chosen))
        if ticket is None:
            return max(wait, 1e-3)
        self._send(chosen, ticket)
        return 0.0

    def _send(self, chosen: list[tuple[_Conv, list[int]]], ticket: Any) -> None:
        """Journal the chosen rows ``inflight`` and put their request on the wire."""
        commands = commands_for(self.plan, chosen, self.connector, self.line)
        if self.resolve is not None:
            try:
                commands = self.resolve(commands)
            except BulkImportError as exc:  # nothing marked yet: the rows stay pending
                self.governor.release(ticket)
                self.state.stop(exc)
                return
        keys = self.keys
        rids = [keys[conv.index][p] for conv, positions in chosen for p in positions]
        req = _Request(next(self.sequence), chosen, commands, rids, ticket)
        # Ctrl-C between the commit and the bookkeeping would leave the rows ``inflight`` in the
        # journal of a run that says it saved everything.
        with interrupts_deferred():
            req.request_id = self.journal.mark_inflight(rids, self.run_id, _wall())
            self.active[req.seq] = req
            if self.workers is not None:
                self.workers.submit(req)
        if self.workers is None:  # one request at a time: the exchange runs here (Ctrl-C cuts it)
            _exchange(self.client, req)
            self.done.put(req)

    # ------------------------------------------------------------------ settling
    def settle(self, req: _Request) -> None:
        """Journal one request's outcome and move its conversations on (this thread only)."""
        self.governor.release(req.ticket)
        exc = req.error
        self.state.answer_arrived(exc, req.errors.values())
        if exc is not None and not isinstance(exc, BulkImportError):
            raise exc  # Ctrl-C raised inside a transport, or a bug: the caller handles it
        queued = req.queued()
        with interrupts_deferred():  # the outcome is known: journal it whatever happens
            settlement = self.outcomes.settle(req)
            del self.active[req.seq]
        self.schedule.settled(queued, req.queued())
        self.state.settled(exc, settlement.updates, settlement.verdicts, req.fatal, len(req.chosen))
        self._tell(len(settlement.updates))

    # ------------------------------------------------------------------ progress
    def _tell(self, n: int) -> None:
        """Tell the collector about ``n`` settled rows (and a change in what the governor waits for)."""
        reason = self.governor.snapshot()["waiting_for"]
        if reason != self._reason:
            self._reason = reason
            self.progress.waiting(None, reason)
        self.progress.update(n, dict(self.state.tally))

    def _tell_wait(self, seconds: float | None) -> None:
        """Tell the collector the run is pacing itself (before a sleep or a governor's wait)."""
        self._reason = self.governor.snapshot()["waiting_for"]
        self.progress.waiting(seconds, self._reason)

    def _on_wait(self, reason: str) -> None:
        """The governor's hook before it pauses; worker threads' pauses are not reported."""
        if threading.current_thread() is self._thread:
            self._tell_wait(None)
