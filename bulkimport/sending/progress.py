"""Progress of a run, reported to a pluggable collector: a tqdm bar, nothing, or a callback.

The sender never prints: it tells a :class:`ProgressCollector` how many rows were settled and what
the governor waits for, and the caller (CLI, notebook, a job runner) decides what to show.
``Sender(progress=...)`` takes ``None`` (a bar in a terminal or Jupyter), ``True``/``False`` or
any object with the four methods below. What a collector receives carries no token or secret:
row counts and the governor's description of a wait (method, limit, time).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError


@runtime_checkable
class ProgressCollector(Protocol):
    """What the sender calls, all from the thread that runs it, in this order: ``start`` once,
    then ``update`` and ``waiting`` any number of times, then ``close`` once (also after Ctrl-C)."""

    def start(self, total: int, done: int) -> None:
        """A run begins: ``total`` rows in the plan's conversations, ``done`` of them settled before."""

    def update(self, n: int, counts: Mapping[str, int]) -> None:
        """``n`` more rows were settled; ``counts`` are this run's rows per status so far (and
        ``finished``: sessions finished so far, when the run finishes them)."""

    def waiting(self, seconds: float | None, reason: str | None) -> None:
        """The sender is pacing itself for ``reason`` (``seconds`` when known); None: no longer."""

    def close(self) -> None:
        """The run ended (or was interrupted)."""


class NullProgress:
    """Reports nothing."""

    def start(self, total: int, done: int) -> None:
        """Nothing to set up."""

    def update(self, n: int, counts: Mapping[str, int]) -> None:
        """Nothing to show."""

    def waiting(self, seconds: float | None, reason: str | None) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to tear down."""


class TqdmProgress:
    """A tqdm bar (``tqdm.auto``: a widget in Jupyter) with log records printed above it."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._redirect: Any = None
        self._counts: dict[str, int] = {"sent": 0, "failed": 0, "unknown": 0}
        self._reason: str | None = None

    def start(self, total: int, done: int) -> None:
        """Draw the bar at ``done`` of ``total`` (no bar for an empty plan)."""
        if not total:
            return
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._bar = tqdm(
            total=total, initial=done, unit="msg", desc="sending", dynamic_ncols=True, leave=True
        )
        self._redirect = logging_redirect_tqdm()
        self._redirect.__enter__()

    def _postfix(self, refresh: bool) -> None:
        post: dict[str, Any] = {k: self._counts.get(k, 0) for k in ("sent", "failed", "unknown")}
        if "finished" in self._counts:  # sessions finished in the send loop
            post["finished"] = self._counts["finished"]
        if self._reason:
            post["wait"] = self._reason
        self._bar.set_postfix(post, refresh=refresh)

    def update(self, n: int, counts: Mapping[str, int]) -> None:
        """Counts in the postfix first: the update below redraws the bar with them."""
        if self._bar is None:
            return
        self._counts = {k: counts.get(k, 0) for k in ("sent", "failed", "unknown")}
        if "finished" in counts:
            self._counts["finished"] = counts["finished"]
        self._postfix(refresh=False)
        if n:
            self._bar.update(n)

    def waiting(self, seconds: float | None, reason: str | None) -> None:
        """Show what the governor waits for (``wait=`` in the postfix)."""
        self._reason = reason
        if self._bar is not None:
            self._postfix(refresh=True)

    def close(self) -> None:
        """Stop redirecting log records and close the bar."""
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class CallbackProgress:
    """Calls ``callback(info)`` on every update and wait, ``info`` being this run's counts per status
    plus ``waiting_for`` (the governor's reason, or None): what ``Sender.on_progress`` receives."""

    def __init__(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self.callback = callback
        self._counts: dict[str, int] = {"sent": 0, "failed": 0, "unknown": 0}
        self._reason: str | None = None

    def start(self, total: int, done: int) -> None:
        """Nothing to set up."""

    def update(self, n: int, counts: Mapping[str, int]) -> None:
        """Hand the callback the counts after ``n`` more settled rows."""
        self._counts = dict(counts)
        self.callback({**self._counts, "waiting_for": self._reason})

    def waiting(self, seconds: float | None, reason: str | None) -> None:
        """Hand the callback the counts with the new reason for waiting."""
        self._reason = reason
        self.callback({**self._counts, "waiting_for": reason})

    def close(self) -> None:
        """Nothing to tear down."""


class _Several:
    """Several collectors told the same things, in order (a bar and ``on_progress``)."""

    def __init__(self, collectors: list[ProgressCollector]) -> None:
        self.collectors = collectors

    def start(self, total: int, done: int) -> None:
        for c in self.collectors:
            c.start(total, done)

    def update(self, n: int, counts: Mapping[str, int]) -> None:
        for c in self.collectors:
            c.update(n, counts)

    def waiting(self, seconds: float | None, reason: str | None) -> None:
        for c in self.collectors:
            c.waiting(seconds, reason)

    def close(self) -> None:
        for c in self.collectors:
            c.close()


def terminal_or_notebook() -> bool:
    """Whether a bar would be seen: Jupyter, or stderr on a terminal."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def check(progress: object) -> None:
    """Refuse a ``progress=`` that is neither None, a bool nor a collector (before anything runs)."""
    if progress is None or isinstance(progress, (bool, ProgressCollector)):
        return
    raise ConfigError(
        f"progress={type(progress).__name__}: give True, False, None (a bar on a terminal) or an "
        "object with start(total, done), update(n, counts), waiting(seconds, reason) and close()"
    )


def collector(
    progress: bool | ProgressCollector | None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> ProgressCollector:
    """The collector a run reports to: from ``progress=`` (None: a bar when one would be seen),
    plus ``callback`` (``Sender.on_progress``) when one is set."""
    if progress is None:
        progress = terminal_or_notebook()
    chosen: list[ProgressCollector] = []
    if progress is True:
        chosen.append(TqdmProgress())
    elif progress is not False:
        chosen.append(progress)
    if callback is not None:
        chosen.append(CallbackProgress(callback))
    if not chosen:
        return NullProgress()
    return chosen[0] if len(chosen) == 1 else _Several(chosen)
