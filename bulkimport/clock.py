"""Clocks the sender paces itself by (real time, or the sandbox's compressed virtual time), and a
guard that holds back Ctrl-C for the few milliseconds a critical write takes.

Every time the portal reports (token ``expires``, ``operating_reset_at``, ``time.*``) is on the
portal's clock. Against the sandbox that clock runs ``scale`` times faster than the wall clock, so
the sender reads and sleeps through a :class:`ScaledClock` with the same ``epoch`` and ``scale``:
virtual = epoch + (real − epoch) × scale, and sleeping ``v`` virtual seconds takes ``v / scale`` real.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol


class Clock(Protocol):
    """What the sender needs from a clock: the portal's current unix time and a way to wait."""

    def now(self) -> float:
        """Current unix time on the portal's clock."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of portal time (interruptible by KeyboardInterrupt)."""
        ...


class SystemClock:
    """The wall clock: for real portals."""

    def now(self) -> float:
        """``time.time()``."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` for positive durations."""
        if seconds > 0:
            time.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


class ScaledClock:
    """The sandbox's virtual clock: ``epoch + (time.time() − epoch) × scale``."""

    def __init__(self, scale: float, epoch: float) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale = float(scale)
        self.epoch = float(epoch)

    def now(self) -> float:
        """Virtual unix time."""
        return self.epoch + (time.time() - self.epoch) * self.scale

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of virtual time (``seconds / scale`` of real time)."""
        if seconds > 0:
            time.sleep(seconds / self.scale)

    def real(self, seconds: float) -> float:
        """Real seconds that ``seconds`` of virtual time take."""
        return seconds / self.scale

    def __repr__(self) -> str:
        return f"ScaledClock(scale={self.scale:g}, epoch={self.epoch:.3f})"


class ManualClock:
    """A clock that only moves when slept on or advanced: for unit tests of pacing arithmetic."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def now(self) -> float:
        """The current fake time."""
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        """Advance the fake time by ``seconds`` and record the sleep."""
        if seconds > 0:
            with self._lock:
                self._now += seconds
                self.slept.append(seconds)

    def advance(self, seconds: float) -> None:
        """Move time forward without recording a sleep (time passing elsewhere)."""
        with self._lock:
            self._now += seconds

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now:.3f})"


class PortalClock:
    """Reads the portal's own clock (``now``) and sleeps scaled: follows a sandbox's jumps in time."""

    def __init__(self, now: Callable[[], float], scale: float) -> None:
        self._now = now
        self.scale = float(scale)

    def now(self) -> float:
        """The portal's current time."""
        return float(self._now())

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of portal time (``seconds / scale`` real)."""
        if seconds > 0:
            time.sleep(seconds / self.scale)

    def __repr__(self) -> str:
        return f"PortalClock(scale={self.scale:g})"


def for_sandbox(portal: Any) -> PortalClock:
    """A clock matching a running ``bulkimport.Sandbox``: its ``now()`` (which includes any
    ``advance``) and its ``time_scale``. ``ScaledClock(portal.time_scale, portal.epoch)`` is the
    same as long as the sandbox's time is never advanced by hand."""
    return PortalClock(portal.now, float(portal.time_scale))


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back Ctrl-C during a short critical step (journalling an answer, rotating tokens), then
    hand it to the handler that was there (Python's default raises KeyboardInterrupt; the run
    loop's first-Ctrl-C handler only marks the run stopping): a known outcome is never lost because
    the interrupt landed between the answer and its commit. Only in the main thread, where Python
    delivers SIGINT; elsewhere it is a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold_back(signum: int, frame: Any) -> None:
        caught.append(signum)

    try:
        previous = signal.signal(signal.SIGINT, hold_back)
    except (ValueError, OSError):  # not allowed here (embedded interpreters)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    for signum in caught:
        if callable(previous):
            previous(signum, None)
        elif previous != signal.SIG_IGN:
            raise KeyboardInterrupt
