"""The sandbox's clock and limits: virtual time, the leaky bucket and the operating-time baskets.

Everything time-related in the sandbox reads :class:`VirtualClock`, so a test can compress an hour of
portal time into seconds (``time_scale``) or jump ahead (:meth:`VirtualClock.advance`). All figures in
this module are virtual (portal) seconds. Written from the reference (§3) and the official limits
page; it shares no code with the client's governor on purpose.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field


class VirtualClock:
    """Virtual unix time: ``epoch + (real - epoch) * time_scale + advanced``.

    ``time_scale=0`` is a manual clock for deterministic tests: virtual time stands still except
    for :meth:`advance` and simulated server work (:meth:`sleep` then advances instead of sleeping).
    """

    def __init__(self, time_scale: float = 1.0, epoch: float | None = None) -> None:
        if time_scale < 0:
            raise ValueError("time_scale must be positive (or 0 for a manual clock)")
        self.time_scale = float(time_scale)
        self.epoch = time.time() if epoch is None else float(epoch)
        self._advanced = 0.0
        self._lock = threading.Lock()

    @property
    def manual(self) -> bool:
        """True for a manual clock (``time_scale=0``)."""
        return self.time_scale == 0

    def now(self) -> float:
        """The current virtual unix time."""
        if self.manual:
            return self.epoch + self._advanced
        real = time.time()
        return self.epoch + (real - self.epoch) * self.time_scale + self._advanced

    def advance(self, seconds: float) -> None:
        """Jump virtual time forward (tests: drain the bucket, expire baskets or tokens at once)."""
        if seconds < 0:
            raise ValueError("virtual time only moves forward")
        with self._lock:
            self._advanced += seconds

    def sleep(self, seconds: float) -> None:
        """Spend ``seconds`` of virtual time (``seconds / time_scale`` real seconds)."""
        if seconds <= 0:
            return
        if self.manual:
            self.advance(seconds)
        else:
            time.sleep(seconds / self.time_scale)


class LeakyBucket:
    """Request counter per source IP: +1 per request, drains ``drain_rate``/s, refuses above ``size``.

    The documentation says the counter "decreases by Y once per second"; the sandbox drains it
    continuously (same average). A refused request does not fill the bucket (the classic leaky
    bucket: an overflowing drop is discarded).
    """

    def __init__(self, clock: VirtualClock, size: float = 50, drain_rate: float = 2.0) -> None:
        self.clock = clock
        self.size = float(size)
        self.drain_rate = float(drain_rate)
        self._levels: dict[str, tuple[float, float]] = {}  # ip -> (level, at)
        self._lock = threading.Lock()

    def level(self, ip: str = "127.0.0.1") -> float:
        """The counter's current value for ``ip``."""
        with self._lock:
            return self._drained(ip, self.clock.now())

    def _drained(self, ip: str, now: float) -> float:
        level, at = self._levels.get(ip, (0.0, now))
        return max(0.0, level - max(0.0, now - at) * self.drain_rate)

    def admit(self, ip: str) -> bool:
        """Count one request from ``ip``; False (and not counted) when it would exceed ``size``."""
        with self._lock:
            now = self.clock.now()
            level = self._drained(ip, now)
            if level + 1 > self.size + 1e-9:
                self._levels[ip] = (level, now)
                return False
            self._levels[ip] = (level + 1, now)
            return True

    def reset(self) -> None:
        """Empty every counter."""
        with self._lock:
            self._levels.clear()


@dataclass
class _Basket:
    minute: int  # floor(first call / basket_length): the minute this basket sums
    first: float  # virtual time of the first call recorded in it (its expiry starts here)
    total: float = 0.0


@dataclass
class _Account:
    baskets: deque[_Basket] = field(default_factory=deque)


class OperatingLedger:
    """Per (application, method) server time in ten one-minute baskets (reference §3).

    A basket sums the execution time of the calls that started in its minute; it stops counting
    ``window`` seconds after its *first* call (the documentation's 10:05:20 → 10:15:20 example).
    ``operating`` is the sum of live baskets; ``operating_reset_at`` is when the oldest live basket
    expires. A call is refused (429) when ``operating`` already exceeds ``limit`` *before* it runs, so
    the call that crosses the limit completes and the next one is blocked.
    """

    def __init__(self, clock: VirtualClock, limit: float = 480.0, window: float = 600.0,
                 baskets: int = 10) -> None:
        self.clock = clock
        self.limit = float(limit)
        self.window = float(window)
        self.basket_length = self.window / baskets
        self._accounts: dict[tuple[str, str], _Account] = {}
        self._lock = threading.Lock()

    def _live(self, key: tuple[str, str], now: float) -> _Account:
        account = self._accounts.setdefault(key, _Account())
        while account.baskets and account.baskets[0].first + self.window <= now:
            account.baskets.popleft()
        return account

    def status(self, app: str, method: str, now: float | None = None) -> tuple[float, int]:
        """``(operating, operating_reset_at)`` of one method for one application."""
        with self._lock:
            now = self.clock.now() if now is None else now
            account = self._live((app, method), now)
            operating = sum(b.total for b in account.baskets)
            first = account.baskets[0].first if account.baskets else now
            return operating, int(first + self.window)

    def blocked(self, app: str, method: str) -> bool:
        """True when the method's accumulated time already exceeds the limit (→ 429)."""
        operating, _ = self.status(app, method)
        return operating > self.limit

    def charge(self, app: str, method: str, started: float, seconds: float) -> None:
        """Record ``seconds`` of server time for a call that started at virtual time ``started``."""
        with self._lock:
            account = self._live((app, method), max(started, self.clock.now()))
            minute = int(started // self.basket_length)
            if account.baskets and account.baskets[-1].minute == minute:
                account.baskets[-1].total += seconds
            else:
                account.baskets.append(_Basket(minute, started, seconds))

    def reset(self) -> None:
        """Forget all accounts."""
        with self._lock:
            self._accounts.clear()
