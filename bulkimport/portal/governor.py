"""The rate governor: paces requests *before* the portal refuses them (reference §3).

Three limits, one governor (thread-safe; one instance is shared by everything that talks to the
portal, so concurrent callers share one bucket):

* **leaky bucket** — a local model of the portal's counter: +1 per HTTP request, drained by ``Y``
  per second; a request waits while the model says it would exceed ``X − margin``. A 503 means the
  model was wrong (another client shares the bucket): the model is re-synced to *full* and requests
  back off exponentially.
* **operating budget** per method — tracked from ``time.operating`` (seconds the method used in the
  current 10-minute window) and ``time.operating_reset_at`` of every answer (for ``batch``: of every
  nested command, from ``result_time``). When the next call's expected cost would cross the budget
  the governor waits until ``operating_reset_at``; after a 429 it waits for the reset the portal named.
* **60-second request cap** — messages per call and calls per batch are sized from measured server
  seconds per message so one request stays around ``target_seconds`` (a quarter of the cap); they
  start small (10 messages, 1 call) because the real per-message cost is unknown and grow while
  requests stay fast. When the measured per-call overhead is a real share of a call (the
  documented 0.7 s per call + 0.5 s per message), one call may grow to ``call_target`` (half the
  cap, and at most a quarter of the operating budget) so it carries a full chunk: fewer calls,
  less overhead charged to the operating budget.
* **requests in flight** — with several requests in flight (the sender's ``max_in_flight``) each
  one takes its bucket token when it leaves (:meth:`try_acquire`) and reserves its expected
  operating seconds until the sender calls :meth:`release`, so the next request is paced as if
  the ones still on the wire had already been charged: concurrency never causes a 503 or a 429.

All times are on the injected clock (the sandbox's virtual clock in compressed-time tests). The
sizing figures (messages per call, calls per batch, the fitted cost model) live in a companion,
``_Sizing``, that only the governor touches, under its lock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..clock import Clock, SystemClock
from ..errors import BulkImportError
from ..limits import ASSUMED_SECONDS_PER_MESSAGE, STANDARD, PortalLimits
from .methods import SEND_METHOD

__all__ = ["SEND_METHOD", "Governor", "Ticket"]  # SEND_METHOD: importable here as before


@dataclass
class _MethodState:
    operating: float = 0.0  # seconds used in the window, as last reported
    reset_at: float | None = None  # when (part of) the budget frees, as last reported
    blocked_until: float = 0.0  # after a 429
    call_cost: float | None = None  # EWMA of one call's server seconds


@dataclass
class Ticket:
    """One request's claim on the governor: the operating seconds it reserved per method."""

    costs: dict[str, float]
    released: bool = False


def _num(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _whole_calls(budget: float, cost: float | None) -> float:
    """Server seconds one budget window really carries: ``budget`` rounded down to whole calls of
    the measured ``cost`` (the governor sends a call only when it fits). Modelling the full limit
    made every long ETA 10-15 % optimistic."""
    if not cost or cost <= 0 or cost >= budget:
        return budget
    return (budget // cost) * cost


def _hhmmss(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S UTC")


class _Sizing:
    """How big the next call and batch should be; the governor's lock guards every use.

    Messages per call start small and grow while calls stay inside the target (halving when one
    is slow or lost); calls per batch have their own slow start. The per-call and per-message
    server seconds are fitted to calls of different sizes, so a call may grow to ``call_target``
    when its fixed overhead is worth saving.
    """

    def __init__(
        self, limits: PortalLimits, target_seconds: float | None, initial_messages: int, max_messages: int
    ) -> None:
        self.batch_max = limits.batch_max
        self.target_seconds = target_seconds if target_seconds is not None else limits.request_timeout / 4
        #: the longest one call may be projected to take when its per-call overhead is worth saving
        #: (half the cap: a 2x margin against the cut-off that would make the call ``unknown``)
        #: … and at most a quarter of the operating budget: a window holds whole calls only, so a
        #: call near the budget's size would leave much of it unused (a portal with a small budget
        #: keeps the usual target)
        self.call_target = max(
            self.target_seconds,
            min(limits.request_timeout / 2, limits.operating_limit * limits.budget_safety / 4),
        )
        self.mpc = max(1, initial_messages)
        # Slow start for calls per batch (the blast radius of one unusable answer): 4, then ×4
        # with every answered batch (4, 16, 50) until the first unusable answer, which halves it;
        # from then on it recovers by doubling (like TCP's slow start and congestion avoidance: a
        # flaky proxy keeps batches small, a clean start wastes only two small requests).
        self.cpb_cap = min(4, limits.batch_max)
        self.cpb_growth = 4
        self.max_messages = max(1, max_messages)
        self.spm: float | None = None  # measured server seconds per message (EWMA)
        # server seconds of one call by its message count (EWMA per size): fits c_call + n·c_msg
        self.by_size: dict[int, float] = {}

    @property
    def seconds_per_message(self) -> float:
        """Measured server seconds per message, or the documented assumption until then."""
        return self.spm if self.spm is not None else ASSUMED_SECONDS_PER_MESSAGE

    def measured(self, seconds: float) -> None:
        """One HTTP request took ``seconds``: halve the calls when that is near the cap."""
        limit = self.call_target * 1.25 if self.overhead_worth_saving() else self.target_seconds * 1.5
        if seconds > limit and self.mpc > 1:
            self.mpc = max(1, self.mpc // 2)

    def record(self, messages: int, seconds: float) -> None:
        """One call carrying ``messages`` cost ``seconds``: update the figures, grow or shrink."""
        per = seconds / messages
        self.spm = per if self.spm is None else 0.7 * self.spm + 0.3 * per
        old = self.by_size.get(messages)
        self.by_size[messages] = seconds if old is None else 0.7 * old + 0.3 * seconds
        target = self.call_target if self.overhead_worth_saving() else self.target_seconds
        # Grow while a call stays well inside the target (or, with a known cost model, while the
        # doubled call is projected inside it); shrink when it does not.
        bigger = min(self.max_messages, self.mpc * 2)
        fits = seconds * 2 <= target or self.projected(bigger) <= target
        if fits and messages >= self.mpc:
            self.mpc = bigger
        elif seconds > target:
            self.mpc = max(1, self.mpc // 2)

    def cost_model(self) -> tuple[float, float] | None:
        """(seconds per call, seconds per message) fitted to calls of different sizes, or None."""
        sizes = self.by_size
        if len(sizes) < 2:
            return None
        n = len(sizes)
        mean_x = sum(sizes) / n
        mean_y = sum(sizes.values()) / n
        sxx = sum((x - mean_x) ** 2 for x in sizes)
        if sxx <= 0:
            return None
        slope = sum((x - mean_x) * (y - mean_y) for x, y in sizes.items()) / sxx
        if slope <= 0:
            return None
        return max(0.0, mean_y - slope * mean_x), slope

    def projected(self, messages: int) -> float:
        """Projected server seconds of one call of ``messages`` (inf without a cost model)."""
        model = self.cost_model()
        if model is None:
            return math.inf
        per_call, per_message = model
        return per_call + messages * per_message

    def overhead_worth_saving(self) -> bool:
        """True when the per-call overhead is at least 2 % of a call sized to ``target_seconds``:
        then a call may grow to ``call_target`` to carry a full chunk (fewer calls, less overhead)."""
        model = self.cost_model()
        if model is None:
            return False
        per_call, per_message = model
        at_target = max(1.0, (self.target_seconds - per_call) / per_message)
        return per_call >= 0.02 * (per_call + at_target * per_message)

    def cap(self, most: int) -> None:
        """Never more than ``most`` messages per call from now on."""
        self.max_messages = max(1, min(self.max_messages, most))
        self.mpc = min(self.mpc, self.max_messages)

    def halve_calls(self) -> None:
        """The next calls carry half as many messages."""
        self.mpc = max(1, self.mpc // 2)

    def shrink_batches(self) -> None:
        """Half the calls per batch; from now on the cap recovers by doubling."""
        self.cpb_cap = max(1, self.cpb_cap // 2)
        self.cpb_growth = 2

    def grow_batches(self) -> None:
        """A batch was answered: the calls-per-batch cap grows (×4 in the slow start, then ×2)."""
        self.cpb_cap = min(self.batch_max, self.cpb_cap * self.cpb_growth)

    def messages_per_call(self, cap: int) -> int:
        """How many messages the next call should carry (≤ ``cap``, the plan's chunk size)."""
        # a portal may report 0 s for a fast call: keep the division finite
        by_time = max(1, int(self.target_seconds / max(self.seconds_per_message, 1e-6)))
        if self.spm is not None and by_time < cap and self.overhead_worth_saving():
            # the per-call overhead is worth saving: the largest call projected inside call_target
            model = self.cost_model()
            assert model is not None
            per_call, per_message = model
            by_model = int((self.call_target - per_call) / per_message)
            by_average = int(self.call_target / max(self.seconds_per_message, 1e-6))
            by_time = max(by_time, min(by_model, by_average))
        return max(1, min(self.mpc, cap, self.max_messages, by_time if self.spm is not None else self.mpc))


class Governor:
    """Leaky bucket + operating budgets + adaptive chunk sizing, on one clock."""

    def __init__(
        self,
        limits: PortalLimits = STANDARD,
        clock: Clock | None = None,
        *,
        initial_messages: int = 10,
        max_messages: int = 50,
        target_seconds: float | None = None,
        bucket_margin: int = 2,
        budget_safety: float | None = None,
        max_backoff: float = 60.0,
    ) -> None:
        self.limits = limits
        self.clock: Clock = clock or SystemClock()
        self._sizing = _Sizing(limits, target_seconds, initial_messages, max_messages)
        self.bucket_margin = bucket_margin
        self.budget_safety = limits.budget_safety if budget_safety is None else budget_safety
        self.max_backoff = max_backoff
        self._lock = threading.RLock()
        self._level = 0.0
        self._level_at = self.clock.now()
        self._backoff = 0.0
        self._paused_until = 0.0
        self._pause_reason = ""
        self._methods: dict[str, _MethodState] = {}
        self._skew = 0.0
        self._skew_samples = 0
        #: the most messages one answered call has carried (a refusal above it means a size limit)
        self.largest_call_ok = 0
        # operating seconds reserved by requests in flight, per method (see try_acquire)
        self._reserved: dict[str, float] = {}
        self.in_flight = 0
        self._request_seconds: float | None = None
        self.waiting_for: str | None = None
        #: called with a description before each pause (the sender updates its progress bar)
        self.on_wait: Callable[[str], None] | None = None
        self.requests = 0
        self.refusals = 0

    @property
    def target_seconds(self) -> float:
        """Server seconds one request aims at (a quarter of the portal's cap by default)."""
        return self._sizing.target_seconds

    @target_seconds.setter
    def target_seconds(self, seconds: float) -> None:
        self._sizing.target_seconds = seconds

    @property
    def call_target(self) -> float:
        """The longest one call may be projected to take when its per-call overhead is worth saving."""
        return self._sizing.call_target

    # ------------------------------------------------------------------ waiting
    def _drain(self, now: float) -> None:
        elapsed = max(0.0, now - self._level_at)
        self._level = max(0.0, self._level - elapsed * self.limits.drain_rate)
        self._level_at = now

    @property
    def budget(self) -> float:
        """Server seconds of one operating window the governor lets requests use (the limit less
        its safety share)."""
        return self.limits.operating_limit * self.budget_safety

    def _wait_needed(self, methods: list[str], now: float, budget: bool = True) -> tuple[float, str]:
        """Seconds to wait before the next request and why ('' when none); ``budget=False``: the
        request's operating seconds are already reserved (a repeat), only the bucket and pauses count."""
        self._drain(now)
        waits: list[tuple[float, str]] = []
        if self._paused_until > now:
            waits.append((self._paused_until - now, self._pause_reason))
        ceiling = max(1.0, self.limits.bucket_size - self.bucket_margin)
        if self._level + 1 > ceiling:
            waits.append(
                ((self._level + 1 - ceiling) / self.limits.drain_rate, "request budget (leaky bucket)")
            )
        for method in set(methods) if budget else ():
            st = self._methods.get(method)
            if st is None:
                continue
            if st.blocked_until > now:
                waits.append(
                    (st.blocked_until - now, f"{method} operating budget until {_hhmmss(st.blocked_until)}")
                )
                continue
            expected = (st.call_cost or 0.0) * methods.count(method)
            reserved = self._reserved.get(method, 0.0)
            over = st.operating + reserved + expected > self.budget
            if st.reset_at is not None and st.reset_at > now:
                if over:
                    waits.append(
                        (st.reset_at - now, f"{method} operating budget until {_hhmmss(st.reset_at)}")
                    )
            elif over and reserved > 0:
                # Past the reset the reported figure is stale; a request already on the wire is the
                # probe whose answer tells the new figure: wait for it rather than guess twice.
                waits.append((1.0, f"{method} operating budget (waiting for the request in flight)"))
        if not waits:
            return 0.0, ""
        return max(waits)

    def acquire(self, methods: list[str] | tuple[str, ...] = (), *, reserved: bool = False) -> None:
        """Block until one request carrying ``methods`` may go, then count it in the bucket.

        ``reserved``: a repeat of a request whose operating seconds a ticket already holds (after
        an expired token): it waits for the bucket and pauses only, never for its own reservation.
        """
        methods = list(methods)
        while True:
            with self._lock:
                now = self.clock.now()
                wait, reason = self._wait_needed(methods, now, budget=not reserved)
                if wait <= 1e-9:
                    self._level += 1
                    self.requests += 1
                    self.waiting_for = None
                    return
                self.waiting_for = f"{reason} ({wait:.1f}s)"
                hook = self.on_wait
            if hook is not None:
                hook(self.waiting_for)
            self.clock.sleep(min(wait, 5.0))

    def wait_needed(self, methods: list[str] | tuple[str, ...] = ()) -> tuple[float, str]:
        """Seconds (on the clock) before a request carrying ``methods`` may go, and why; no wait."""
        methods = list(methods)
        with self._lock:
            wait, reason = self._wait_needed(methods, self.clock.now())
            self.waiting_for = f"{reason} ({wait:.1f}s)" if wait > 1e-9 else None
            return (wait, reason) if wait > 1e-9 else (0.0, "")

    def try_acquire(self, methods: list[str] | tuple[str, ...] = ()) -> tuple[Ticket | None, float, str]:
        """Take the bucket token for one request carrying ``methods`` now, or say how long to wait.

        Never blocks (the sender keeps answering the requests in flight meanwhile). The returned
        ticket holds the operating seconds reserved for the request's calls until :meth:`release`.
        """
        methods = list(methods)
        with self._lock:
            now = self.clock.now()
            wait, reason = self._wait_needed(methods, now)
            if wait > 1e-9:
                self.waiting_for = f"{reason} ({wait:.1f}s)"
                return None, wait, reason
            self._level += 1
            self.requests += 1
            self.waiting_for = None
            costs: dict[str, float] = {}
            for method in set(methods):
                st = self._methods.get(method)
                cost = (st.call_cost or 0.0) * methods.count(method) if st is not None else 0.0
                costs[method] = cost
                self._reserved[method] = self._reserved.get(method, 0.0) + cost
            self.in_flight += 1
            return Ticket(costs), 0.0, ""

    def room_for_another(self, method: str = SEND_METHOD) -> bool:
        """Whether one more request may join those in flight: only while ``method``'s operating
        budget is far from binding (under a quarter of it used or reserved). Near the budget two
        requests charged at once race the portal's accounting (the 72-hour drill drew 429s), and
        there the budget, not the round trip, sets the pace: one at a time loses nothing."""
        with self._lock:
            st = self._methods.get(method)
            if st is None:
                return True
            used = st.operating + self._reserved.get(method, 0.0)
            return used < 0.25 * self.budget

    def release(self, ticket: Ticket | None) -> None:
        """The request of ``ticket`` ended (answered, refused or lost): free its reservation."""
        if ticket is None:
            return
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            self.in_flight = max(0, self.in_flight - 1)
            for method, cost in ticket.costs.items():
                left = self._reserved.get(method, 0.0) - cost
                self._reserved[method] = left if left > 1e-9 else 0.0

    def wait_ready(self, methods: list[str] | tuple[str, ...] = ()) -> None:
        """Block until a request carrying ``methods`` could go, without counting one."""
        methods = list(methods)
        while True:
            with self._lock:
                wait, reason = self._wait_needed(methods, self.clock.now())
                if wait <= 1e-9:
                    self.waiting_for = None
                    return
                self.waiting_for = f"{reason} ({wait:.1f}s)"
                hook = self.on_wait
            if hook is not None:
                hook(self.waiting_for)
            self.clock.sleep(min(wait, 5.0))

    def wait_after(self, exc: BulkImportError) -> None:
        """Nothing to do: the refusal already moved the pause point that :meth:`acquire` honours."""

    # ------------------------------------------------------------------ feedback from answers
    def observe(self, method: str, timing: dict[str, Any] | None) -> None:
        """Learn a method's operating budget and per-call cost from an answer's ``time``."""
        if not timing:
            return
        with self._lock:
            st = self._methods.setdefault(method, _MethodState())
            operating = _num(timing.get("operating"))
            reset_at = _num(timing.get("operating_reset_at"))
            if operating is not None:
                st.operating = operating
            if reset_at is not None:
                st.reset_at = reset_at - self._skew  # the portal's clock → ours
            cost = _num(timing.get("processing"))
            if cost is None:
                cost = _num(timing.get("duration"))
            if cost is not None and cost >= 0:
                st.call_cost = cost if st.call_cost is None else 0.7 * st.call_cost + 0.3 * cost

    def observe_clock(self, timing: dict[str, Any] | None) -> None:
        """Estimate how far the portal's clock is ahead of ours from ``time.finish`` (the answer
        left the portal just now), so ``operating_reset_at`` is read on our clock even when the
        machine's clock is off by minutes."""
        finish = _num((timing or {}).get("finish"))
        if finish is None:
            return
        with self._lock:
            sample = finish - self.clock.now()
            self._skew = sample if self._skew_samples == 0 else 0.8 * self._skew + 0.2 * sample
            self._skew_samples += 1

    def portal_now(self) -> float:
        """The portal's current time, as far as we can tell."""
        return self.clock.now() + self._skew

    @property
    def skew(self) -> float:
        """Seconds the portal's clock is ahead of ours (negative: behind)."""
        return self._skew

    def observe_request(self, timing: dict[str, Any] | None) -> None:
        """Learn the server duration of a whole request (the 60 s cap applies to it)."""
        duration = _num((timing or {}).get("duration"))
        if duration is not None:
            self.measured(duration)

    def measured(self, seconds: float) -> None:
        """Record how long one HTTP request took (shrinks chunks when near the cap)."""
        with self._lock:
            self._request_seconds = seconds
            self._sizing.measured(seconds)

    def on_success(self) -> None:
        """An answer that was not a refusal: the back-off starts from 1 s again next time."""
        with self._lock:
            self._backoff = 0.0

    def record_messages(self, messages: int, seconds: float) -> None:
        """Record that one call carrying ``messages`` cost ``seconds`` of server time."""
        if messages <= 0 or seconds < 0:
            return
        with self._lock:
            self._sizing.record(messages, seconds)

    def on_rate_limited(self, retry_after: float | None = None) -> None:
        """A 503: the bucket is full (re-sync the model) and requests back off exponentially."""
        with self._lock:
            now = self.clock.now()
            self.refusals += 1
            self._level = float(self.limits.bucket_size)
            self._level_at = now
            self._backoff = min(self.max_backoff, max(1.0, self._backoff * 2))
            pause = max(self._backoff, retry_after or 0.0)
            self._pause(now + pause, f"back-off after 503 QUERY_LIMIT_EXCEEDED ({pause:.0f}s)")

    def on_operating_limit(self, method: str, retry_after: float | None) -> None:
        """A 429 for ``method``: no calls of it until the reset the portal named."""
        with self._lock:
            now = self.clock.now()
            self.refusals += 1
            st = self._methods.setdefault(method, _MethodState())
            if retry_after is None:
                retry_after = (st.reset_at - now) if st.reset_at and st.reset_at > now else 60.0
            # operating_reset_at is an integer second, so a reset "already past" (truncated, or a
            # skewed clock) is common: never retry at once. Wait at least 1 s, growing like the
            # 503 back-off (1, 2, 4 … s) while 429s keep coming; several commands of one batch
            # refused together count as one refusal.
            if st.blocked_until <= now:
                self._backoff = min(self.max_backoff, max(1.0, self._backoff * 2))
            pause = max(retry_after, self._backoff, 1.0)
            st.blocked_until = max(st.blocked_until, now + pause)
            st.operating = max(st.operating, self.limits.operating_limit)

    def on_connection_failed(self) -> None:
        """A failed connect: back off exponentially (1, 2, 4 … 60 s)."""
        with self._lock:
            now = self.clock.now()
            self._backoff = min(self.max_backoff, max(1.0, self._backoff * 2))
            self._pause(now + self._backoff, f"reconnecting ({self._backoff:.0f}s)")

    def call_answered(self, messages: int) -> None:
        """A call carrying ``messages`` was answered (not refused as a whole)."""
        with self._lock:
            self.largest_call_ok = max(self.largest_call_ok, messages)

    def cap_messages(self, most: int) -> None:
        """The portal refused calls of more than ``most`` messages: never send more again."""
        with self._lock:
            self._sizing.cap(most)

    def on_timeout(self) -> None:
        """An ambiguous timeout: the next calls carry half as many messages."""
        with self._lock:
            self._sizing.halve_calls()

    def on_ambiguous(self) -> None:
        """No usable answer: shrink the blast radius (half the calls per batch) and back off,
        so a flaky proxy does not turn thousands of conversations ``unknown`` in a minute."""
        with self._lock:
            now = self.clock.now()
            self._sizing.shrink_batches()
            self._backoff = min(self.max_backoff, max(1.0, self._backoff * 2))
            self._pause(now + self._backoff, f"back-off after an unusable answer ({self._backoff:.0f}s)")

    def on_batch_answered(self) -> None:
        """A batch was answered: the calls-per-batch cap grows (×4 in the slow start, then ×2)."""
        with self._lock:
            self._sizing.grow_batches()

    def _pause(self, until: float, reason: str) -> None:
        if until > self._paused_until:
            self._paused_until = until
            self._pause_reason = reason

    # ------------------------------------------------------------------ sizing and ETA
    @property
    def seconds_per_message(self) -> float:
        """Server seconds one message costs: measured, or the documented assumption until then."""
        return self._sizing.seconds_per_message

    @property
    def measured_seconds_per_message(self) -> float | None:
        """The measured figure, or None before the first answer."""
        return self._sizing.spm

    def messages_per_call(self, cap: int) -> int:
        """How many messages the next call should carry (≤ ``cap``, the plan's chunk size)."""
        with self._lock:
            return self._sizing.messages_per_call(cap)

    def calls_per_batch(self, messages_per_call: int, method: str = SEND_METHOD) -> int:
        """How many calls of ``messages_per_call`` fit one request under the target and the budget."""
        with self._lock:
            per_call = max(1e-6, messages_per_call * self.seconds_per_message)
            calls = int(self.target_seconds / per_call)
            st = self._methods.get(method)
            if st is not None and st.reset_at is not None:
                # Past reset_at the last reported figure is stale: some budget was freed, but how
                # much is unknown until the next answer. Size by the stale figure, so near the
                # limit one call goes first and its answer tells the new figure (no 429 inside a
                # batch from guessing that a whole basket expired).
                # Requests still in flight have not been charged yet: their reservation counts.
                room = self.budget - st.operating
                room -= self._reserved.get(method, 0.0)
                calls = min(calls, int(room / per_call))
            return max(1, min(calls, self.limits.batch_max, self._sizing.cpb_cap))

    def eta(self, messages: int) -> float:
        """Seconds ``messages`` more messages need at the binding limit (operating, bucket or time)."""
        spm = self.seconds_per_message
        mpc = self.messages_per_call(self._sizing.max_messages)
        calls = math.ceil(messages / mpc) if messages else 0
        requests = math.ceil(calls / self.calls_per_batch(mpc)) if calls else 0
        st = self._methods.get(SEND_METHOD)
        carried = _whole_calls(self.budget, st.call_cost if st is not None else None)
        by_operating = messages * spm * self.limits.operating_window / carried
        by_bucket = max(0, requests - self.limits.bucket_size) / self.limits.drain_rate
        by_duration = messages * spm
        return max(by_operating, by_bucket, by_duration)

    def snapshot(self) -> dict[str, Any]:
        """Figures for progress bars and summaries."""
        with self._lock:
            return {
                "waiting_for": self.waiting_for,
                "messages_per_call": self._sizing.mpc,
                "seconds_per_message": self._sizing.spm,
                "requests": self.requests,
                "refusals": self.refusals,
                "bucket_level": round(self._level, 2),
            }
