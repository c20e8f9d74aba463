"""The state of one run: tallies, the in-a-row counters, when to stop, how many requests may fly.

Stop rules (see docs/sending.md, *Resume and retry*): ``portal-unreachable`` after
``MAX_CONNECT_FAILURES`` failed connects in a row, ``gave-up-retrying`` after
``MAX_REFUSALS_IN_A_ROW`` refusals in a row, ``repeated-ambiguous`` after ``MAX_AMBIGUOUS_IN_A_ROW``
requests in a row without a usable answer, ``repeated-rejection`` after ``MAX_SAME_REJECTION``
conversations in a row refused with the same request-level code; any fatal error at once.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Sequence

from ..errors import (
    AmbiguousError,
    BulkImportError,
    FatalError,
    OperatingLimitError,
    PortalError,
    RequestRejectedError,
    RetryableError,
    TokenExpiredError,
)
from ..journal import RowUpdate

log = logging.getLogger("bulkimport.sending")

#: Give up after this many refusals (503/429/failed connects) in a row without any answer.
MAX_REFUSALS_IN_A_ROW = 40
#: … or after this many failed connects in a row.
MAX_CONNECT_FAILURES = 8
#: Stop when this many requests in a row got no usable answer (each one holds its conversations).
MAX_AMBIGUOUS_IN_A_ROW = 5
#: Stop when this many conversations in a row were rejected at request level with the same code.
MAX_SAME_REJECTION = 5
#: Requests in flight at once by default (1 = one after another), and the most allowed: the
#: connection pool of the HTTP session keeps 10 connections per host.
DEFAULT_MAX_IN_FLIGHT = 2
MOST_IN_FLIGHT = 10


def stop_code(exc: BaseException | None) -> str | None:
    """The code a stop is reported under: the portal's code, else the exception's class name."""
    if exc is None:
        return None
    return str(getattr(exc, "code", None) or type(exc).__name__)


class RunState:
    """Counters and decisions of one run, updated once per settled request (calling thread only).

    Concurrency only while the portal answers: the first request of a run goes alone (a wrong
    line, connector or token then costs one request, not ``max_in_flight``), and after a refusal
    or an unusable answer one request at a time until the next clean answer. After a 429 (the
    portal's operating budget is tighter than the model: another application spends it, or the
    limits given are wrong) one request at a time for the rest of the run, so a request already on
    the wire is not refused with it at the next wall.
    """

    def __init__(self, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self.max_in_flight = max_in_flight
        self.tally: collections.Counter[str] = collections.Counter({"sent": 0, "failed": 0, "unknown": 0})
        self.stopped: BulkImportError | None = None
        self.interrupted = False
        self.refusals = 0
        self.connect_failures = 0
        self.ambiguous_in_a_row = 0
        self.rejections: collections.deque[str] = collections.deque(maxlen=MAX_SAME_REJECTION)
        self.in_flight_now = 1
        self.budget_refused = False

    # ------------------------------------------------------------------ decisions
    def may_launch(self, active: int) -> bool:
        """Whether another request may go with ``active`` on the wire (the governor decides too);
        never after a stop or a Ctrl-C."""
        return self.stopped is None and not self.interrupted and active < self.in_flight_now

    def stop(self, exc: BulkImportError) -> None:
        """Stop sending: the first reason given is the one reported."""
        self.stopped = self.stopped or exc

    def pending_reason(self) -> str | None:
        """Why the rows still queued stay pending (``not-reached``), or None when nothing cut them."""
        if self.stopped is not None:
            return f"the run stopped on {stop_code(self.stopped)}: {self.stopped}"
        if self.interrupted:
            return "the run was interrupted before this row was sent"
        return None

    # ------------------------------------------------------------------ events
    def answer_arrived(self, exc: BaseException | None, errors: Iterable[object] = ()) -> None:
        """A request came back (before it is settled): one at a time until it proves clean."""
        self.in_flight_now = 1
        if isinstance(exc, OperatingLimitError) or any(isinstance(e, OperatingLimitError) for e in errors):
            self.budget_refused = True

    def settled(
        self,
        exc: BaseException | None,
        updates: Sequence[RowUpdate],
        verdicts: Iterable[str | None] = (),
        fatal: BulkImportError | None = None,
        conversations: int = 0,
    ) -> None:
        """Count a settled request's rows and apply the stop rules to how it went."""
        for verdict in verdicts:
            self.verdict(verdict)
        if isinstance(exc, RetryableError):
            self.refused(exc)
        elif isinstance(exc, AmbiguousError):
            self.ambiguous(exc, len(updates), conversations)
        elif isinstance(exc, FatalError) or (
            isinstance(exc, BulkImportError)
            and not isinstance(exc, (RequestRejectedError, TokenExpiredError))
        ):
            self.stop(exc)  # e.g. a redirect to a plain-http address: not run
        else:  # answered (a request-level rejection counts: the portal did answer)
            self.answered(fatal)
        for u in updates:
            self.tally[u.status] += 1

    def finishes_settled(self, exc: BaseException | None) -> None:
        """A request of finish commands only came back: the same counters as for sends (refusals,
        unusable answers, a fatal error stops the run), without rows to count."""
        if isinstance(exc, RetryableError):
            self.refused(exc)
        elif isinstance(exc, AmbiguousError):
            self.ambiguous_in_a_row += 1
            log.warning("no usable answer for a request finishing sessions (%s): they are tried again", exc)
            if self.ambiguous_in_a_row >= MAX_AMBIGUOUS_IN_A_ROW:
                self.stop(PortalError("repeated-ambiguous", f"{self.ambiguous_in_a_row} requests in a "
                                      f"row got no usable answer ({exc})"))
        elif isinstance(exc, FatalError):
            self.stop(exc)
        else:  # answered, or a request-level rejection: the portal did answer
            self.answered()

    def verdict(self, code: str | None) -> None:
        """One conversation's answer: clean (None) or refused at request level with ``code``."""
        if code is None:
            self.rejections.clear()
        else:
            self.rejections.append(code)

    def refused(self, exc: RetryableError) -> None:
        """Refused before execution (503, 429, failed connect): the rows went back."""
        self.refusals += 1
        self.connect_failures = self.connect_failures + 1 if exc.code == "connection-failed" else 0
        log.info("refused before execution (%s); retrying after a pause", exc.code)
        if self.connect_failures >= MAX_CONNECT_FAILURES:
            self.stop(PortalError("portal-unreachable", str(exc)))
        elif self.refusals >= MAX_REFUSALS_IN_A_ROW:
            self.stop(PortalError("gave-up-retrying", str(exc)))

    def ambiguous(self, exc: AmbiguousError, rows: int, conversations: int) -> None:
        """No usable answer: ``rows`` are unknown and their ``conversations`` held."""
        self.ambiguous_in_a_row += 1
        log.warning(
            "no usable answer (%s): %d rows are now 'unknown' and their %d "
            "conversation(s) held; the rest continues",
            exc,
            rows,
            conversations,
        )
        if self.ambiguous_in_a_row >= MAX_AMBIGUOUS_IN_A_ROW:
            self.stop(
                PortalError(
                    "repeated-ambiguous",
                    f"{self.ambiguous_in_a_row} requests in a row got no usable answer ({exc})",
                )
            )

    def answered(self, fatal: BulkImportError | None = None) -> None:
        """The portal answered: the in-a-row counters start again, concurrency comes back."""
        self.in_flight_now = 1 if self.budget_refused else self.max_in_flight
        self.refusals = 0
        self.connect_failures = 0
        self.ambiguous_in_a_row = 0
        if fatal is not None:
            self.stop(fatal)
        rejections = self.rejections
        if len(rejections) == MAX_SAME_REJECTION and len(set(rejections)) == 1:
            self.stop(
                PortalError(
                    "repeated-rejection",
                    f"{MAX_SAME_REJECTION} conversations in a row were refused with {rejections[0]}",
                )
            )
