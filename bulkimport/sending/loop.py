"""The run loop: launch a request when one may go, settle each answer, wait when paced, stop when told.

Only the HTTP exchange runs in a worker thread (:mod:`.workers`), also with one request in flight;
choosing (:mod:`.scheduling`), journalling and settling (:mod:`.outcome`) and the stop rules
(:mod:`.state`) run here, in the thread that called :meth:`RunLoop.run`.

Ctrl-C (in the main thread, where the default handler would raise KeyboardInterrupt): the first one
launches nothing new and waits for the answers in flight (at most the request cap away), settles them
and ends the run ``interrupted`` — no row left ``unknown``; the second one ends it at once, the rows
still on the wire become ``unknown`` (``interrupted``) to be settled later.

Finishing (:mod:`.finishing`, unless the run keeps the sessions open): as each conversation's last
answer settles, its session's finish command is queued; queued finish commands ride in the next
send batches that have room, and go in a batch of their own when nothing is left to send beside
them, when they waited long enough, or when the send requests still to come have no room for them
(:meth:`.Finishing.go_alone`). Their answers are settled with the request's rows.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from queue import Empty, SimpleQueue
from typing import Any

from ..clock import Clock, interrupts_deferred
from ..errors import BulkImportError
from ..journal import Journal
from ..planning import Plan
from ..portal.methods import FINISH_METHOD
from .finishing import PER_BATCH, Finishing
from .outcome import Outcomes, _wall
from .progress import ProgressCollector
from .scheduling import METHOD, Schedule, _Conv, _Request, commands_for, locks_in_flight
from .state import RunState
from .workers import _Workers

log = logging.getLogger("bulkimport.sending")


#: Longest slice (real seconds) of a wait for an answer: how soon a first Ctrl-C is acknowledged.
WAIT_SLICE = 0.25

#: What a first Ctrl-C says while answers are still on the wire.
STOPPING = "stopping: waiting for {n} answer{s} in flight (Ctrl-C again to exit at once)"


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
        finishing: Finishing | None = None,
    ) -> None:
        self.plan, self.connector, self.line = plan, connector, line
        self.client, self.governor, self.clock = client, client.governor, clock
        self.journal, self.run_id, self.keys = journal, run_id, keys
        self.schedule, self.state, self.progress = schedule, state, progress
        self.warm_token = warm_token
        self.resolve = resolve  # fills in what a command needs at the last moment (Drive URLs)
        self.outcomes = Outcomes(journal, self.governor, keys)
        self.finishing = finishing  # None: the sessions are left open (--keep-open)
        #: requests whose rows are journalled ``inflight`` and not yet settled, by sequence number
        self.active: dict[int, _Request] = {}
        self.done: SimpleQueue[_Request] = SimpleQueue()
        self.workers: _Workers | None = None
        self.sequence = itertools.count()
        self._reason: str | None = None  # the wait the collector was last told of
        self._thread = threading.current_thread()
        self._stop_told = False  # the first Ctrl-C's notice was given

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Send until nothing is left or the run stops; Ctrl-C is caught (``state.interrupted``)."""
        self.workers = _Workers(self.state.max_in_flight, self.client, self.done)
        previous_wait = self.governor.on_wait
        self.governor.on_wait = self._on_wait
        try:
            with self._first_interrupt_drains():
                self._loop()
            if self.state.interrupted:
                log.warning(
                    "interrupted: every answer in flight was recorded; run the same command again to resume"
                )
        except KeyboardInterrupt:
            self._interrupted()
        finally:
            if self.workers is not None:
                self.workers.close()
            self.governor.on_wait = previous_wait

    @contextlib.contextmanager
    def _first_interrupt_drains(self) -> Iterator[None]:
        """While the loop runs in the main thread with Python's default Ctrl-C handler, the first
        SIGINT only marks the run ``interrupted`` (nothing new is launched, the answers in flight
        are awaited and settled); the next one raises KeyboardInterrupt as usual. Elsewhere (a
        worker thread, an ignored or custom SIGINT handler) nothing changes."""
        state = self.state

        def first_drains(signum: int, frame: Any) -> None:
            if state.interrupted:
                raise KeyboardInterrupt
            state.interrupted = True

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        try:
            if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
                yield
                return
            signal.signal(signal.SIGINT, first_drains)
        except (ValueError, OSError):  # not allowed here (embedded interpreters)
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def _tell_stopping(self) -> None:
        """Say once, after the first Ctrl-C, how many answers the run still waits for."""
        if self._stop_told or not self.state.interrupted:
            return
        self._stop_told = True
        n = len(self.active)
        if n:
            text = STOPPING.format(n=n, s="" if n == 1 else "s")
            log.warning(text)
            self._reason = text.split(" (", 1)[0]
            self.progress.waiting(None, self._reason)

    def _next_answer(self, timeout: float | None) -> _Request | None:
        """The next answered request, or None after ``timeout`` real seconds (None: until one comes),
        waiting in short slices so that a first Ctrl-C is acknowledged at once."""
        waited = 0.0
        while True:
            self._tell_stopping()
            piece = WAIT_SLICE if timeout is None else min(WAIT_SLICE, max(0.0, timeout - waited))
            try:
                return self.done.get(timeout=piece)
            except Empty:
                waited += piece
                if timeout is not None and waited >= timeout:
                    return None

    def _loop(self) -> None:
        active, governor, state = self.active, self.governor, self.state
        while True:
            self._tell_stopping()
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
            answered = self._next_answer(timeout)
            if answered is not None:
                self.settle(answered)

    def _interrupted(self) -> None:
        """Second Ctrl-C (or one outside the main thread's default handler): the rows on the wire
        become ``unknown`` (``interrupted``), the rest stay."""
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
            return self._launch_finishes()
        wait, _ = governor.wait_needed([METHOD])  # pace before choosing sizes and marking rows
        if wait > 0:
            return wait
        mpc = governor.messages_per_call(max(1, self.plan.chunk_size))
        cpb = governor.calls_per_batch(mpc)
        if self._finishes_go_alone(mpc, cpb) and self._launch_finishes() == 0.0:
            return 0.0
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
        riders = self._riders(len(chosen))
        ticket, wait, _ = governor.try_acquire([METHOD] * len(chosen) + [FINISH_METHOD] * riders)
        if ticket is None:
            return max(wait, 1e-3)
        self._send(chosen, ticket, riders)
        return 0.0

    def _finishes_go_alone(self, mpc: int, cpb: int) -> bool:
        """Whether the queued finish commands take a request of their own now (see
        :meth:`.Finishing.go_alone`) rather than wait for send batches with room."""
        if self.finishing is None or not self.finishing.queued():
            return False
        convs, room = self.schedule.room_ahead(mpc, cpb, self.governor.limits.batch_max)
        return self.finishing.go_alone(convs, room)

    def _riders(self, sends: int) -> int:
        """How many queued finish commands ride in a batch of ``sends`` send commands: the room
        left under the batch cap, at most half the request's target server time, and only while
        the finish method's operating budget lets them go now (a send never waits for them)."""
        finishing = self.finishing
        if finishing is None or not finishing.queued():
            return 0
        room = self.governor.limits.batch_max - sends
        n = min(room, finishing.queued(), finishing.fits(self.governor.target_seconds / 2))
        if n <= 0:
            return 0
        wait, _ = self.governor.wait_needed([FINISH_METHOD] * n)
        return n if wait <= 0 else 0

    def _launch_finishes(self) -> float | None:
        """Send a batch of queued finish commands alone (nothing to send beside them, or a full
        batch of them): 0 when it left, the governor's wait, or None when none is queued."""
        finishing = self.finishing
        if finishing is None or not finishing.queued():
            return None
        n = min(PER_BATCH, finishing.queued(), self.governor.limits.batch_max)
        wait, _ = self.governor.wait_needed([FINISH_METHOD] * n)
        if wait > 0:
            return wait
        try:
            self.warm_token(self.client)
        except BulkImportError as exc:
            self.state.stop(exc)
            return None
        ticket, wait, _ = self.governor.try_acquire([FINISH_METHOD] * n)
        if ticket is None:
            return max(wait, 1e-3)
        self._send([], ticket, n)
        return 0.0

    def _send(self, chosen: list[tuple[_Conv, list[int]]], ticket: Any, riders: int = 0) -> None:
        """Journal the chosen rows ``inflight`` and put their request on the wire (with ``riders``
        queued finish commands)."""
        commands = commands_for(self.plan, chosen, self.connector, self.line)
        if self.resolve is not None and chosen:
            try:
                commands = self.resolve(commands)
            except BulkImportError as exc:  # nothing marked yet: the rows stay pending
                self.governor.release(ticket)
                self.state.stop(exc)
                return
        finishes = self.finishing.take(riders) if self.finishing is not None and riders else []
        commands.update(Finishing.commands(finishes))
        keys = self.keys
        rids = [keys[conv.index][p] for conv, positions in chosen for p in positions]
        req = _Request(next(self.sequence), chosen, commands, rids, ticket, finishes=finishes)
        # Ctrl-C between the commit and the bookkeeping would leave the rows ``inflight`` in the
        # journal of a run that says it saved everything.
        with interrupts_deferred():
            if rids:
                req.request_id = self.journal.mark_inflight(rids, self.run_id, _wall())
            self.active[req.seq] = req
            assert self.workers is not None
            self.workers.submit(req)

    # ------------------------------------------------------------------ settling
    def settle(self, req: _Request) -> None:
        """Journal one request's outcome and move its conversations on (this thread only)."""
        self.governor.release(req.ticket)
        exc = req.error
        sends = [err for key, err in req.errors.items() if key.startswith("c")]
        self.state.answer_arrived(exc, sends)
        if exc is not None and not isinstance(exc, BulkImportError):
            raise exc  # a bug in a transport (Ctrl-C never reaches a worker): the caller handles it
        finishing = self.finishing
        if not req.chosen:  # finish commands only
            assert finishing is not None
            with interrupts_deferred():
                finishing.settle(req)
                del self.active[req.seq]
            self.state.finishes_settled(exc)
            self._tell(0)
            return
        queued = req.queued()
        with interrupts_deferred():  # the outcome is known: journal it whatever happens
            settlement = self.outcomes.settle(req)
            if finishing is not None:
                finishing.settle(req)
            del self.active[req.seq]
        self.schedule.settled(queued, req.queued())
        self.state.settled(exc, settlement.updates, settlement.verdicts, req.fatal, len(req.chosen))
        if finishing is not None:  # conversations with nothing left in this run: finish them next
            finishing.done(conv for conv, _ in req.chosen if not conv.queue)
        self._tell(len(settlement.updates))

    # ------------------------------------------------------------------ progress
    def _tell(self, n: int) -> None:
        """Tell the collector about ``n`` settled rows (and a change in what the governor waits for)."""
        reason = self.governor.snapshot()["waiting_for"]
        if self._stop_told and self.active:  # still stopping: the count goes down answer by answer
            n = len(self.active)
            reason = STOPPING.format(n=n, s="" if n == 1 else "s").split(" (", 1)[0]
        if reason != self._reason:
            self._reason = reason
            self.progress.waiting(None, reason)
        counts = dict(self.state.tally)
        if self.finishing is not None:  # sessions finished so far in this run
            counts["finished"] = self.finishing.result.finished
        self.progress.update(n, counts)

    def _tell_wait(self, seconds: float | None) -> None:
        """Tell the collector the run is pacing itself (before a sleep or a governor's wait)."""
        self._reason = self.governor.snapshot()["waiting_for"]
        self.progress.waiting(seconds, self._reason)

    def _on_wait(self, reason: str) -> None:
        """The governor's hook before it pauses; worker threads' pauses are not reported."""
        if threading.current_thread() is self._thread:
            self._tell_wait(None)
