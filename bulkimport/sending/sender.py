"""Plan → batches → journal → per-row outcomes: the part that must neither lose, duplicate nor reorder.

Rules the sender keeps (see docs/sending.md):

* Up to ``max_in_flight`` requests at a time (default 2; 1 = strictly one after another). A
  ``batch`` carries at most one ``imconnector.send.messages`` command per conversation, and no two
  commands in flight — in one request or in two — belong to conversations sharing a lock key; so
  no two in-flight commands ever touch the same chat or customer. Only the HTTP exchange runs in a
  worker thread; choosing, journalling and settling stay in the calling thread.
* Within a conversation, strictly plan order; chunk k+1 goes only after chunk k was answered (a
  conversation has at most one request in flight).
* Rows are journalled ``inflight`` before their request leaves and settled after it is answered.
* Refused before execution (503, 429, failed connect) → the rows go back and are sent again later.
* Ambiguous (timeout, dropped connection, HTML/empty answer, 5xx) → the rows become ``unknown`` and
  their conversation is **held**; nothing is ever re-sent automatically. The rest goes on.
* A request-level rejection of one command: ``ERROR_ARGUMENT`` on several messages → split and
  re-sent; a definite rejection code on one message → ``failed``; anything else (it may have
  stored some messages first) → ``unknown``. Either way its conversation is held.
  A rejected item (``SUCCESS: false``) → that row ``failed``; its conversation goes on.
* A fatal error (auth, line, connector, block) stops the run; untouched rows stay ``pending``.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

import numpy as np
import pandas as pd

from .. import codes
from ..clock import Clock, SystemClock, interrupts_deferred
from ..errors import (
    AmbiguousError,
    BulkImportError,
    ConfigError,
    FatalError,
    InputError,
    OperatingLimitError,
    PortalError,
    RequestRejectedError,
    RetryableError,
    TokenExpiredError,
)
from ..journal import Journal, RowUpdate, default_path, row_key
from ..limits import STANDARD, PortalLimits
from ..planning import Messages, Plan

log = logging.getLogger("bulkimport.sending")

METHOD = "imconnector.send.messages"
#: Columns added to ``plan.frame`` in the returned frame (defined with the statuses in codes.py).
STATUS_COLUMNS = codes.STATUS_COLUMNS
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
#: Request-level codes after which a call of several messages is split and re-sent: only the
#: documented structural checks that run before anything is stored (reference §6; the sandbox's
#: per-call message cap uses the same code).
SPLIT_ON = frozenset({"ERROR_ARGUMENT"})
#: Request-level codes that definitely reject a call of ONE message (it is then ``failed``); any
#: other code on a one-message call, and any non-split code on a bigger call, leaves the rows
#: ``unknown`` (code ``refused-maybe-stored``) because the call may have stored some of them.
DEFINITE_REJECTIONS = frozenset(
    {
        "ERROR_ARGUMENT",
        "IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA",
        "CONNECTOR_PROXY_NO_ADD_USER",
        "CONNECTOR_PROXY_NO_USER_IM",
        "PROVIDER_UNSUPPORTED_TYPE_INCOMING_MESSAGE",
        "IMCONNECTOR_NOT_SPECIFIED_CORRECT_COMMAND",
    }
)


# --------------------------------------------------------------------------------------------------
# Outcome
# --------------------------------------------------------------------------------------------------
@dataclass
class SendSummary:
    """How a run went, for the CLI and notebooks."""

    counts: dict[str, int]
    top_errors: list[tuple[str, int]]
    elapsed: float  # seconds on the portal clock
    messages_per_second: float
    sent_this_run: int
    requests: int
    stopped: str | None  # the code that stopped the run early, if any
    stopped_message: str | None
    journal: Path
    interrupted: bool
    seconds_per_message: float | None  # measured server seconds per message
    recovered_unknown: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values (what ``frame.attrs["bulkimport_summary"]`` holds)."""
        return {
            "counts": dict(self.counts),
            "top_errors": [[c, n] for c, n in self.top_errors],
            "elapsed": self.elapsed,
            "messages_per_second": self.messages_per_second,
            "sent_this_run": self.sent_this_run,
            "requests": self.requests,
            "stopped": self.stopped,
            "stopped_message": self.stopped_message,
            "journal": str(self.journal),
            "interrupted": self.interrupted,
            "seconds_per_message": self.seconds_per_message,
            "recovered_unknown": self.recovered_unknown,
            "complete": self.complete,
        }

    @property
    def complete(self) -> bool:
        """True when nothing is left pending or unknown."""
        return self.counts.get("pending", 0) == 0 and self.counts.get("unknown", 0) == 0

    def __str__(self) -> str:
        parts = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n)
        lines = [
            f"{parts or 'nothing to send'} ({self.sent_this_run} sent in this run, "
            f"{self.requests} requests, {self.elapsed:.0f} s, {self.messages_per_second:.2f} msg/s)"
        ]
        if self.top_errors:
            lines.append("top codes: " + ", ".join(f"{c} ×{n}" for c, n in self.top_errors))
        if self.stopped:
            lines.append(f"stopped early: {self.stopped_message}")
        if self.interrupted:
            lines.append("interrupted: run the same command again to resume")
        lines.append(f"journal: {self.journal}")
        return "\n".join(lines)


@dataclass
class SendOutcome:
    """What :meth:`Sender.run` returns: the per-row frame and the summary."""

    frame: pd.DataFrame
    summary: SendSummary


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def _wall() -> float:
    """Real wall-clock time for the journal and ``sent_at``: a sandbox runs on a scaled clock
    (pacing), but what the journal and the report show must be when things really happened."""
    return time.time()


def _env_or(value: Any, env_name: str, option: str, env: Mapping[str, str]) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        value = env.get(env_name)
    if value is None or not str(value).strip():
        raise ConfigError(
            f"no {option.lstrip('-')}: pass {option.lstrip('-')}=… ({option}) or set {env_name}"
        )
    return str(value).strip()


def _str_or_none(value: Any) -> str | None:
    if type(value) is str:  # the common case first: ids in an answer are strings
        return value or None
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _item_error(item: Mapping[str, Any]) -> tuple[str, str]:
    """The catalogue code and text of a rejected item (``ERRORS`` may hold codes or prose)."""
    errors = item.get("ERRORS") or item.get("errors") or []
    if isinstance(errors, (str, dict)):
        errors = [errors]
    texts: list[str] = []
    found: str | None = None
    for err in errors:
        if isinstance(err, dict):
            code = str(err.get("code") or err.get("error") or "")
            text = str(err.get("message") or err.get("error_description") or code)
            if code and found is None:
                found = code
            texts.append(text)
            continue
        text = str(err)
        texts.append(text)
        if found is None:
            if text.upper() in codes.CATALOGUE:
                found = text
            else:
                for key, entry in codes.CATALOGUE.items():
                    if entry.stage == "portal" and len(key) > 6 and key in text.upper():
                        found = entry.code
                        break
    return found or "item-rejected", "; ".join(texts) or "the portal rejected the message without a reason"


def _progress_enabled(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def content_fingerprint(plan: Plan) -> str:
    """A fingerprint of what would be sent, for plans built without one."""
    import hashlib
    import json

    h = hashlib.sha256()
    for conv in plan.conversations:
        h.update(
            json.dumps(
                [conv.key, [row_key(r) for r in conv.rows], list(conv.messages)],
                sort_keys=True,
                default=str,
                ensure_ascii=False,
            ).encode()
        )
    return "content:" + h.hexdigest()[:32]


def _stop_code(exc: BaseException | None) -> str | None:
    """The code a stop is reported under: the portal's code, else the exception's class name."""
    if exc is None:
        return None
    return str(getattr(exc, "code", None) or type(exc).__name__)


@dataclass
class _Conv:
    index: int
    key: str
    locks: frozenset[str]
    queue: list[int]  # positions (into conversation.rows) still to send, in order
    held: str | None = None  # why-code when held
    held_detail: str | None = None
    rest: list[int] = field(default_factory=list)  # positions behind the hold point
    cap: int | None = None  # messages per call for this conversation after a rejected bigger call


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


@contextlib.contextmanager
def _heap_frozen() -> Iterator[bool]:
    """Keep what exists when a run starts (the plan, the caller's data) out of the cyclic
    garbage collector's full passes while it lasts: the answers decoded during a run are
    hundreds of thousands of small dicts, and each full pass they trigger would otherwise
    walk the whole heap again (~0.5 CPU s per 100,000 messages, bench/client_overhead.py).
    Nothing is disabled: everything created during the run is collected as usual, and the
    frozen objects go back to the collector when the run ends. One full collection first, so
    garbage that exists now is freed rather than kept for a run that may last days. (Code that
    freezes the heap itself while a run is going has its freeze undone when the run ends.)
    Yields whether the freeze is the run's own (then more may be frozen, and is thawed too)."""
    if gc.get_freeze_count():  # someone else froze the heap (e.g. before a fork): leave it be
        yield False
        return
    gc.collect()
    gc.freeze()
    try:
        yield True
    finally:
        gc.unfreeze()


def _exchange(client: Any, req: _Request) -> None:
    """The HTTP exchange of one request (any thread): fills ``req``'s outcome, never raises."""
    try:
        if len(req.commands) == 1:
            ((key, (method, params)),) = req.commands.items()
            answer = client.call_full(method, params, acquired=True)
            req.results, req.errors, req.times = {key: answer.result}, {}, {key: answer.time}
        else:
            br = client.batch(req.commands, acquired=True)
            req.results, req.errors, req.times = br.results, br.errors, br.times
    except BaseException as exc:  # handed to the settling thread, which re-raises what is not ours
        req.error = exc


class _Workers:
    """Threads that run the HTTP exchanges of requests in flight and hand each back on ``done``.

    Daemon threads: after a Ctrl-C the journal already says which rows were cut, so the process
    does not wait for an answer nobody will read.
    """

    def __init__(self, count: int, client: Any, done: SimpleQueue[_Request]) -> None:
        self._jobs: SimpleQueue[_Request | None] = SimpleQueue()
        self._threads = [
            threading.Thread(
                target=self._loop, args=(client, done), name=f"bulkimport-send-{i}", daemon=True
            )
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self, client: Any, done: SimpleQueue[_Request]) -> None:
        while True:
            req = self._jobs.get()
            if req is None:
                return
            _exchange(client, req)
            done.put(req)

    def submit(self, req: _Request) -> None:
        """Start ``req``'s exchange on a free thread."""
        self._jobs.put(req)

    def close(self) -> None:
        """Let the threads end once they are idle (never waits for one on the wire)."""
        for _ in self._threads:
            self._jobs.put(None)


def _real_seconds(clock: Any, seconds: float) -> float:
    """Real seconds that ``seconds`` on ``clock`` take (a sandbox clock runs ``scale`` times faster)."""
    real = getattr(clock, "real", None)
    if callable(real):
        return max(0.0, float(real(seconds)))
    scale = getattr(clock, "scale", None)
    if isinstance(scale, (int, float)) and scale > 0:
        return max(0.0, seconds / float(scale))
    return max(0.0, seconds)


# --------------------------------------------------------------------------------------------------
# Sender
# --------------------------------------------------------------------------------------------------
class Sender:
    """Sends a :class:`Plan` to one open line through one connector, resumably (see module doc)."""

    def __init__(
        self,
        plan: Plan,
        *,
        portal: str | None = None,
        line: int | str | None = None,
        connector: str | None = None,
        auth: Any = None,
        state: str | os.PathLike[str] | None = None,
        limits: PortalLimits = STANDARD,
        retry_failed: bool = False,
        retry_unknown: bool = False,
        progress: bool | None = None,
        clock: Clock | None = None,
        client: Any = None,
        env: Mapping[str, str] | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        env = os.environ if env is None else env
        if (
            isinstance(max_in_flight, bool)
            or not isinstance(max_in_flight, int)
            or not 1 <= max_in_flight <= MOST_IN_FLIGHT
        ):
            raise ConfigError(
                f"max_in_flight={max_in_flight!r} (--max-in-flight): give a whole number from 1 to "
                f"{MOST_IN_FLIGHT} (requests in flight at once; 1 = one after another)"
            )
        self.max_in_flight = max_in_flight
        if not plan.frame.index.is_unique:
            raise InputError(
                "plan.frame's index must be unique (it holds the row ids the journal is keyed by); "
                "build the plan from a frame with unique row ids (df.reset_index(drop=True))"
            )
        self.plan = plan
        # One clock for pacing, tokens and time stamps: given, else the client's, else the auth's.
        self.clock: Clock = (
            clock or getattr(client, "clock", None) or getattr(auth, "clock", None) or SystemClock()
        )
        if client is None:
            portal = _env_or(portal, "BITRIX24_PORTAL", "--portal", env)
        else:
            portal = portal or client.portal
        self.portal = str(portal)
        self.line = _env_or(line, "BITRIX24_LINE", "--line", env)
        self.connector = _env_or(connector, "BITRIX24_CONNECTOR", "--connector", env)
        self.state = default_path(plan.frame.attrs.get("source"), os.fspath(state) if state else None)
        self.limits = limits
        self.retry_failed = retry_failed
        self.retry_unknown = retry_unknown
        self.progress = progress
        self._auth = auth
        self._client = client
        self._keys: list[list[str]] | None = None  # see _conv_keys
        self.on_progress: Callable[[dict[str, Any]], None] | None = None

    def __repr__(self) -> str:
        return (
            f"Sender(portal={self.portal!r}, line={self.line!r}, connector={self.connector!r}, "
            f"state={str(self.state)!r})"
        )

    # ------------------------------------------------------------------ set-up
    def _make_client(self) -> Any:
        if self._client is not None:
            return self._client
        from ..portal.auth import Auth
        from ..portal.client import Client

        auth = self._auth if self._auth is not None else Auth(clock=self.clock)
        return Client(self.portal, auth, limits=self.limits, clock=self.clock)

    @staticmethod
    def _warm_token(client: Any) -> None:
        """Refresh an access token about to expire now, before rows are journalled in flight (a
        refresh inside the exchange would leave them ``inflight`` while nothing was sent yet)."""
        auth = getattr(client, "auth", None)
        token = getattr(auth, "token", None)
        if callable(token):
            token()

    def _line_value(self) -> int | str:
        return int(self.line) if self.line.isdigit() else self.line

    def _journal(self) -> Journal:
        from ..portal.client import rest_url

        fingerprint = self.plan.fingerprint or content_fingerprint(self.plan)
        journal = Journal.bind(
            self.state,
            portal=rest_url(self.portal),
            line=self.line,
            connector=self.connector,
            fingerprint=fingerprint,
            source=self.plan.frame.attrs.get("source"),
        )
        journal.lock()
        return journal

    def _conv_keys(self) -> list[list[str]]:
        """The journal keys of every conversation's rows, computed once per run (each is read by
        the journal set-up, the schedule and every request)."""
        if self._keys is None:
            self._keys = [[row_key(r) for r in c.rows] for c in self.plan.conversations]
        return self._keys

    def _initial_rows(self) -> list[tuple[str, int | None, int | None, str, str | None, str | None]]:
        rows: list[tuple[str, int | None, int | None, str, str | None, str | None]] = []
        for ci, keys in enumerate(self._conv_keys()):
            rows.extend([(key, ci, seq, "pending", None, None) for seq, key in enumerate(keys)])
        invalid = self._invalid()
        for rid, (code, message) in invalid.items():
            rows.append((rid, None, None, "invalid", code, message))
        return rows

    def _invalid(self) -> dict[str, tuple[str, str]]:
        failures = self.plan.failures
        out: dict[str, tuple[str, str]] = {}
        if failures is None or failures.empty:
            return out
        errs = failures[failures["level"].astype(str) == "error"]
        for rid, group in errs.groupby("row", sort=False):
            first = str(group["code"].iloc[0])
            text = "; ".join(str(m) for m in group["message"].tolist())
            out[row_key(rid)] = (first, text)
        return out

    # ------------------------------------------------------------------ the run
    def run(self) -> SendOutcome:
        """Send everything that is due; returns the per-row frame and a summary (never raises on
        Ctrl-C: the outcome says ``interrupted``)."""
        journal = self._journal()
        try:
            with _heap_frozen() as frozen:
                return self._run(journal, frozen)
        finally:
            journal.close()

    def _run(self, journal: Journal, frozen: bool = False) -> SendOutcome:
        plan = self.plan
        client = self._make_client()
        governor = client.governor
        journal.add_rows(self._initial_rows())
        recovered = journal.recover()
        if recovered:
            log.warning(
                "%d rows were in flight when the previous run ended: they are now 'unknown' "
                "(check the open line, then use --retry-unknown)",
                recovered,
            )
        started = self.clock.now()  # elapsed and msg/s are measured on the (portal) clock …
        requests_before = governor.requests
        run_id = journal.start_run(_wall())  # … while the journal records real time
        state = journal.rows(skip_pending=True).set_index("rid")  # absent: pending
        convs = self._schedule(state)
        keys = self._conv_keys()
        if frozen:  # the run's schedule lives as long as the run: out of full GC passes too
            gc.freeze()

        total = sum(len(c) for c in plan.conversations)
        to_send = sum(len(c.queue) for c in convs.values())
        done_before = total - to_send
        bar = None
        if _progress_enabled(self.progress) and total:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=total, initial=done_before, unit="msg", desc="sending", dynamic_ncols=True, leave=True
            )
        redirect = None
        if bar is not None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            redirect = logging_redirect_tqdm()
            redirect.__enter__()

        tally = collections.Counter({"sent": 0, "failed": 0, "unknown": 0})

        def show(refresh: bool = False) -> None:
            snap = governor.snapshot()
            info = {**tally, "waiting_for": snap["waiting_for"]}
            if bar is not None:
                post = {k: tally[k] for k in ("sent", "failed", "unknown")}
                if snap["waiting_for"]:
                    post["wait"] = snap["waiting_for"]
                bar.set_postfix(post, refresh=refresh)
            if self.on_progress:
                self.on_progress(info)

        stopped: BulkImportError | None = None
        interrupted = False
        refusals = 0
        connect_failures = 0
        ambiguous_in_a_row = 0
        rejections: collections.deque[str] = collections.deque(maxlen=MAX_SAME_REJECTION)
        #: requests whose rows are journalled ``inflight`` and not yet settled, by sequence number
        active: dict[int, _Request] = {}
        done: SimpleQueue[_Request] = SimpleQueue()
        workers = _Workers(self.max_in_flight, client, done) if self.max_in_flight > 1 else None
        sequence = itertools.count()
        # Concurrency only while the portal answers: the first request of a run goes alone (a
        # wrong line, connector or token then costs one request, not max_in_flight), and after a
        # refusal or an unusable answer one request at a time until the next clean answer.
        in_flight_now = 1
        # A 429: the portal's operating budget is tighter than the model (another application
        # spends it, or the limits given are wrong): one request at a time for the rest of the run,
        # so a request already on the wire is not refused with it at the next wall.
        budget_refused = False

        def hold(conv: _Conv, code: str, detail: str) -> None:
            conv.held, conv.held_detail = code, detail
            conv.rest = conv.queue
            conv.queue = []

        def settle(req: _Request) -> None:
            """Journal one request's outcome and move its conversations on (main thread only)."""
            nonlocal stopped, refusals, connect_failures, ambiguous_in_a_row, in_flight_now, budget_refused
            governor.release(req.ticket)
            in_flight_now = 1
            exc = req.error
            if exc is not None and not isinstance(exc, BulkImportError):
                raise exc  # Ctrl-C raised inside a transport, or a bug: the caller handles it
            if isinstance(exc, OperatingLimitError) or any(
                isinstance(e, OperatingLimitError) for e in req.errors.values()
            ):
                budget_refused = True
            queued = sum(len(conv.queue) for conv, _ in req.chosen)
            with interrupts_deferred():  # the outcome is known: journal it whatever happens
                updates = self._outcome(req, exc, journal, governor, keys, hold, rejections)
                del active[req.seq]
            left[0] -= queued - sum(len(conv.queue) for conv, _ in req.chosen)
            if isinstance(exc, RetryableError):
                refusals += 1
                connect_failures = connect_failures + 1 if exc.code == "connection-failed" else 0
                log.info("refused before execution (%s); retrying after a pause", exc.code)
                if connect_failures >= MAX_CONNECT_FAILURES:
                    stopped = stopped or PortalError("portal-unreachable", str(exc))
                elif refusals >= MAX_REFUSALS_IN_A_ROW:
                    stopped = stopped or PortalError("gave-up-retrying", str(exc))
            elif isinstance(exc, AmbiguousError):
                ambiguous_in_a_row += 1
                log.warning(
                    "no usable answer (%s): %d rows are now 'unknown' and their %d "
                    "conversation(s) held; the rest continues",
                    exc,
                    len(updates),
                    len(req.chosen),
                )
                if ambiguous_in_a_row >= MAX_AMBIGUOUS_IN_A_ROW:
                    stopped = stopped or PortalError(
                        "repeated-ambiguous",
                        f"{ambiguous_in_a_row} requests in a row got no usable answer ({exc})",
                    )
            elif isinstance(exc, FatalError) or (
                isinstance(exc, BulkImportError)
                and not isinstance(exc, (RequestRejectedError, TokenExpiredError))
            ):
                stopped = stopped or exc  # e.g. a redirect to a plain-http address: not run
            else:  # answered (a request-level rejection counts: the portal did answer)
                in_flight_now = 1 if budget_refused else self.max_in_flight
                refusals = 0
                connect_failures = 0
                ambiguous_in_a_row = 0
                if req.fatal is not None:
                    stopped = stopped or req.fatal
                if len(rejections) == MAX_SAME_REJECTION and len(set(rejections)) == 1:
                    stopped = stopped or PortalError(
                        "repeated-rejection",
                        f"{MAX_SAME_REJECTION} conversations in a row were refused with {rejections[0]}",
                    )
            for u in updates:
                tally[u.status] += 1
            show()  # postfix first: the update below redraws the bar with it
            if bar is not None and updates:
                bar.update(len(updates))

        # Conversations with work, in plan order. Each round scans from the front only as far as it
        # needs to fill a batch and drops finished or held ones it passes, so a plan with 50 000
        # conversations costs O(batch) per request, not O(conversations).
        order = [c for c in convs.values() if c.queue]
        head = 0
        # The longest conversations: one of them may be the critical path (its chunks go one per
        # request, in order), which a second request in flight cannot shorten (see launch()).
        longest = sorted(order, key=lambda c: len(c.queue), reverse=True)[:8]
        left = [sum(len(c.queue) for c in order)]  # messages still queued (settle() keeps it)

        def launch() -> float | None:
            """Send the next request if one may go now. Returns 0 when one left, None when
            nothing can go until a request in flight is answered (or nothing is left), else the
            seconds the governor wants to wait."""
            nonlocal head, stopped
            while head < len(order) and not order[head].queue:
                head += 1
            if head == len(order):
                return None
            wait, _ = governor.wait_needed([METHOD])  # pace before choosing sizes and marking rows
            if wait > 0:
                return wait
            mpc = governor.messages_per_call(max(1, plan.chunk_size))
            cpb = governor.calls_per_batch(mpc)
            chosen: list[tuple[_Conv, list[int]]] = []
            # The lock keys of the requests in flight are taken: a conversation in flight (its own
            # chat key) and any conversation sharing a customer with one wait for its answer.
            taken: set[str] = set()
            for other in active.values():
                for conv, _ in other.chosen:
                    taken |= conv.locks
            if active and longest:
                # When one conversation's chunks outnumber the requests everything else needs, the
                # run lasts as many requests as it has chunks, and a request without it only
                # spends a bucket token that one of its chunks will need: wait for its answer.
                critical = max(longest, key=lambda c: len(c.queue))
                chunks = -(-len(critical.queue) // min(mpc, critical.cap or mpc))
                calls_left = max(len(order) - head, left[0] / mpc)  # a lower bound of the calls left
                if critical.locks & taken and chunks * cpb >= calls_left:
                    return None
            kept: list[_Conv] = []
            scanned = 0
            for conv in itertools.islice(order, head, None):
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
            order[head : head + scanned] = kept
            if not chosen:
                return None
            try:
                self._warm_token(client)  # a refresh happens before rows are marked, not after
            except BulkImportError as exc:
                stopped = exc
                return None
            ticket, wait, _ = governor.try_acquire([METHOD] * len(chosen))
            if ticket is None:
                return max(wait, 1e-3)
            commands: dict[str, tuple[str, dict[str, Any]]] = {}
            for conv, positions in chosen:
                messages = plan.conversations[conv.index].messages
                first, last = positions[0], positions[-1]
                chunk: Sequence[dict[str, Any]]
                if isinstance(messages, Messages) and last - first + 1 == len(positions):
                    chunk = messages.view(first, last + 1)  # encoded without building the items
                else:
                    chunk = [messages[p] for p in positions]
                commands[f"c{conv.index}"] = (
                    METHOD,
                    {"CONNECTOR": self.connector, "LINE": line, "MESSAGES": chunk},
                )
            rids = [keys[conv.index][p] for conv, positions in chosen for p in positions]
            req = _Request(next(sequence), chosen, commands, rids, ticket)
            # Ctrl-C between the commit and the bookkeeping would leave the rows ``inflight`` in
            # the journal of a run that says it saved everything.
            with interrupts_deferred():
                req.request_id = journal.mark_inflight(rids, run_id, _wall())
                active[req.seq] = req
                if workers is not None:
                    workers.submit(req)
            if workers is None:  # one request at a time: the exchange runs here (Ctrl-C cuts it)
                _exchange(client, req)
                done.put(req)
            return 0.0

        line = self._line_value()
        previous_wait = governor.on_wait

        def on_wait(reason: str) -> None:
            if threading.current_thread() is threading.main_thread():
                show(refresh=True)

        governor.on_wait = on_wait
        try:
            while True:
                while True:  # settle whatever has been answered
                    try:
                        answered = done.get_nowait()
                    except Empty:
                        break
                    settle(answered)
                step: float | None = None
                if stopped is None and len(active) < in_flight_now and (
                    not active or governor.room_for_another(METHOD)
                ):
                    step = launch()
                    if step == 0.0:
                        continue
                if not active:
                    if step is None:
                        break  # nothing left, nothing in flight (or stopped and drained)
                    show(refresh=True)
                    self.clock.sleep(min(step, 5.0))
                    continue
                # Requests are in flight: wait for the next answer, at most as long as the pacing
                # wait (a stopped run waits for every answer and settles it before it ends).
                timeout = _real_seconds(self.clock, step) if step is not None else None
                try:
                    answered = done.get(timeout=timeout)
                except Empty:
                    continue
                settle(answered)
        except KeyboardInterrupt:
            interrupted = True
            cut = [rid for req in active.values() for rid in req.rids]
            if cut:
                journal.unknown_if_inflight(
                    cut, "interrupted", "interrupted (Ctrl-C) while the request was in flight"
                )
            log.warning("interrupted: the journal is saved; run the same command again to resume")
        finally:
            if workers is not None:
                workers.close()
            governor.on_wait = previous_wait
            if redirect is not None:
                redirect.__exit__(None, None, None)
            if bar is not None:
                bar.close()

        # Why the rows that stay pending are pending.
        notes: list[tuple[str, str | None, str | None]] = []
        if stopped is not None:
            reason = f"the run stopped on {_stop_code(stopped)}: {stopped}"
        elif interrupted:
            reason = "the run was interrupted before this row was sent"
        else:
            reason = None
        for conv in convs.values():
            if conv.held:
                notes += [(keys[conv.index][p], conv.held, conv.held_detail) for p in conv.rest]
            if conv.queue and reason:
                notes += [(keys[conv.index][p], "not-reached", reason) for p in conv.queue]
        if notes:
            journal.note_pending(notes)
        finished = self.clock.now()
        journal.finish_run(run_id, _wall(), _stop_code(stopped), interrupted, tally["sent"])
        frame = self._frame(journal)
        by_status = frame["import_status"].value_counts()
        status_counts = {s: int(by_status.get(s, 0)) for s in codes.STATUSES}
        bad = frame.loc[frame["import_status"] != "sent", "import_error_code"].dropna()
        elapsed = max(0.0, finished - started)
        summary = SendSummary(
            counts=status_counts,
            top_errors=[(str(c), int(n)) for c, n in bad.value_counts().head(5).items()],
            elapsed=elapsed,
            messages_per_second=tally["sent"] / elapsed if elapsed > 0 else 0.0,
            sent_this_run=tally["sent"],
            requests=governor.requests - requests_before,
            stopped=_stop_code(stopped),
            stopped_message=str(stopped) if stopped is not None else None,
            journal=journal.path,
            interrupted=interrupted,
            seconds_per_message=governor.measured_seconds_per_message,
            recovered_unknown=recovered,
        )
        frame.attrs["bulkimport_summary"] = summary.as_dict()  # JSON-friendly: survives to_parquet
        if stopped is not None:
            log.error("stopped early: %s", stopped)
        return SendOutcome(frame, summary)

    # ------------------------------------------------------------------ pieces
    def _outcome(
        self,
        req: _Request,
        exc: BaseException | None,
        journal: Journal,
        governor: Any,
        keys: list[list[str]],
        hold: Callable[[_Conv, str, str], None],
        rejections: collections.deque[str],
    ) -> list[RowUpdate]:
        """Journal one request's outcome in one transaction and move its conversations on; returns
        the rows' new states (none when its rows went back: refused before execution, or a stop)."""
        if isinstance(exc, RetryableError):
            journal.revert(req.request_id, req.rids, _wall(), f"refused {exc.code}")
            return []
        if isinstance(exc, AmbiguousError):
            code = getattr(exc, "code", "bad-answer")
            if code == "timeout":
                governor.on_timeout()
            governor.on_ambiguous()
            now = _wall()  # journal and sent_at: real time, whatever the pacing clock
            lost = [RowUpdate(rid, "unknown", code, str(exc), hold=1) for rid in req.rids]
            journal.settle(req.request_id, lost, now, f"ambiguous {code}")
            for conv, positions in req.chosen:
                conv.queue = conv.queue[len(positions) :]
                hold(conv, "held-after-unknown", f"held: rows before it are unknown ({code})")
            return lost
        if isinstance(exc, FatalError):
            journal.revert(req.request_id, req.rids, _wall(), f"fatal {exc.code}")
            return []
        results: dict[str, Any]
        errors: dict[str, Any]
        times: dict[str, dict[str, Any]]
        if isinstance(exc, (RequestRejectedError, TokenExpiredError)):
            results, errors, times = {}, {key: exc for key in req.commands}, {}
        elif exc is not None:  # e.g. a redirect to a plain-http address: not run
            journal.revert(req.request_id, req.rids, _wall(), type(exc).__name__)
            return []
        else:
            results, errors, times = req.results, req.errors, req.times
        governor.on_batch_answered()
        now = _wall()  # journal and sent_at: real time, whatever the pacing clock
        updates: list[RowUpdate] = []
        reverted: list[str] = []
        for conv, positions in req.chosen:
            key = f"c{conv.index}"
            rids = [keys[conv.index][p] for p in positions]
            if key in results:
                ups, ok = self._settle_result(results[key], rids, now)
                updates += ups
                governor.call_answered(len(rids))
                timing = times.get(key) or {}
                cost = timing.get("processing", timing.get("duration"))
                if cost is not None:
                    governor.record_messages(len(rids), float(cost))
                conv.queue = conv.queue[len(positions) :]
                if ok is not True:
                    hold(conv, *ok)
                else:
                    rejections.clear()
                continue
            err = errors.get(key)
            if isinstance(err, (RetryableError, TokenExpiredError)):
                reverted += rids  # refused before execution: send again later
                continue
            if isinstance(err, FatalError):
                reverted += rids
                req.fatal = req.fatal or err
                continue
            rejected_code = str(getattr(err, "code", "") or "").upper()
            if (
                isinstance(err, RequestRejectedError)
                and len(positions) > 1
                and rejected_code in SPLIT_ON
            ):
                # ERROR_ARGUMENT: the documented structural checks that run before
                # anything is stored, so nothing ran: split it. This finds the portal's
                # (undocumented) per-call limit, and a single malformed message fails
                # alone instead of taking its neighbours with it.
                reverted += rids
                conv.cap = max(1, len(positions) // 2)
                if len(positions) > governor.largest_call_ok:
                    # never answered a call this big: most likely the per-call limit
                    governor.cap_messages(conv.cap)
                continue
            conv.queue = conv.queue[len(positions) :]
            if isinstance(err, RequestRejectedError) and not (
                len(positions) == 1 and rejected_code in DEFINITE_REJECTIONS
            ):
                # Refused as a whole with a code that may be raised half-way through
                # the messages (the "probably per-item" codes of the older docs), an
                # unknown code, a code-less 4xx or a malformed batch error entry: some
                # messages of this call may already be stored. Never re-send them.
                text = codes.get("refused-maybe-stored").render(code=err.code) + (
                    f" ({err.description})" if err.description else ""
                )
                updates += [
                    RowUpdate(r, "unknown", "refused-maybe-stored", text, hold=1) for r in rids
                ]
                hold(
                    conv,
                    "held-after-unknown",
                    f"held: rows before it are unknown (refused with {err.code})",
                )
                rejections.append(rejected_code)
                continue
            if isinstance(err, RequestRejectedError):
                text = err.description or codes.render(err.code)
                updates += [RowUpdate(r, "failed", err.code, text, hold=1) for r in rids]
                hold(
                    conv,
                    "held-after-failure",
                    f"held: the portal refused an earlier request of this conversation "
                    f"({err.code})",
                )
                rejections.append(err.code.upper())
            else:  # ambiguous nested error, or the key is missing from both maps
                code = getattr(err, "code", None) or "result-mismatch"
                text = str(err) if err is not None else "the command is missing from the answer"
                updates += [RowUpdate(r, "unknown", code, text, hold=1) for r in rids]
                hold(conv, "held-after-unknown", f"held: rows before it are unknown ({code})")
        # one transaction: a kill between two commits would leave half an answer
        journal.settle(req.request_id, updates, now, "answered", revert=reverted)
        return updates

    def _schedule(self, state: pd.DataFrame) -> dict[int, _Conv]:
        """What each conversation still has to send, honouring holds and the retry options."""
        # dict(zip(tolist)) instead of Series.to_dict(): the same values, without boxing each
        # element through pandas (~1 s per 100,000 rows, bench/client_overhead.py)
        rids = state.index.tolist()
        status = dict(zip(rids, state["status"].tolist(), strict=True))
        hold = dict(zip(rids, state["hold"].tolist(), strict=True))
        code = dict(zip(rids, state["code"].tolist(), strict=True))
        convs: dict[int, _Conv] = {}
        for ci, (conv, conv_keys) in enumerate(zip(self.plan.conversations, self._conv_keys(), strict=True)):
            queue: list[int] = []
            held: tuple[str, str] | None = None
            rest: list[int] = []
            for pos, key in enumerate(conv_keys):
                st = status.get(key, "pending")
                if held is not None:
                    if st == "pending":
                        rest.append(pos)
                    continue
                if st == "sent":
                    continue
                if st == "failed":
                    if self.retry_failed:
                        queue.append(pos)
                    elif hold.get(key):
                        held = (
                            "held-after-failure",
                            f"held: an earlier request of this conversation was refused ({code.get(key)})",
                        )
                    continue
                if st == "unknown":
                    if self.retry_unknown:
                        queue.append(pos)
                    else:
                        held = (
                            "held-after-unknown",
                            f"held: an earlier row of this conversation is unknown ({code.get(key)})",
                        )
                    continue
                queue.append(pos)  # pending
            locks = frozenset(conv.lock_keys) | {f"chat:{conv.key}"}
            c = _Conv(ci, conv.key, locks, queue)
            if held is not None:
                c.held, c.held_detail = held
                c.rest = rest
            convs[ci] = c
        return convs

    def _settle_result(self, result: Any, rids: list[str], now: float) -> tuple[list[RowUpdate], Any]:
        """Per-row outcomes of one answered command; second value is True or a hold (code, detail)."""
        if not isinstance(result, Mapping):
            ups = [
                RowUpdate(r, "unknown", "result-mismatch", "the answer is not a result object", hold=1)
                for r in rids
            ]
            return ups, ("held-after-unknown", "held: the answer for earlier rows was unusable")
        data = result.get("DATA") if isinstance(result.get("DATA"), Mapping) else {}
        items = data.get("RESULT") if isinstance(data, Mapping) else None
        if not isinstance(items, list) or len(items) != len(rids):
            if result.get("SUCCESS") is False and not items:
                code, text = _item_error(result)
                if len(rids) == 1:  # one message refused as a whole: it was not stored
                    ups = [RowUpdate(rids[0], "failed", code, text, hold=1)]
                    hold = ("held-after-failure", f"held: the portal refused an earlier request ({code})")
                    return ups, hold
                # Several messages refused with no per-item results: the reference does not say
                # the call stored none of them, so --retry-failed must never see these rows.
                text = codes.get("refused-maybe-stored").render(code=code) + f" ({text})"
                ups = [RowUpdate(r, "unknown", "refused-maybe-stored", text, hold=1) for r in rids]
                return ups, ("held-after-unknown", f"held: an earlier request may have stored rows ({code})")
            ups = [
                RowUpdate(
                    r,
                    "unknown",
                    "result-mismatch",
                    f"sent {len(rids)} messages, the answer listed "
                    f"{len(items) if isinstance(items, list) else 'no'} results",
                    hold=1,
                )
                for r in rids
            ]
            return ups, ("held-after-unknown", "held: the answer for earlier rows was unusable")
        ups = []
        outcome: Any = True
        for rid, item in zip(rids, items, strict=True):
            # type() first: decoded JSON objects are dicts, and the ABC check costs per message
            if type(item) is not dict and not isinstance(item, Mapping):
                item = {}
            flag = item.get("SUCCESS")
            session: Mapping[str, Any] = item.get("session") or {}
            if type(session) is not dict and not isinstance(session, Mapping):
                session = {}
            if flag is True or flag in ("Y", "true", 1):
                ok = True
            elif flag is False or flag in ("N", "false", 0) or item.get("ERRORS") or item.get("errors"):
                ok = False  # explicitly rejected: it was not stored
            elif session.get("ID") or session.get("CHAT_ID"):
                ok = True  # no flag, but an open-line session: it reached the line
            else:
                # Neither a verdict nor a session: it may have been stored. Not ``failed`` (that
                # would let --retry-failed duplicate it): unknown, and the conversation waits.
                ups.append(
                    RowUpdate(
                        rid,
                        "unknown",
                        "result-mismatch",
                        "the answer for this message has neither SUCCESS, ERRORS nor a session",
                        hold=1,
                    )
                )
                outcome = ("held-after-unknown", "held: the answer for an earlier row was unusable")
                continue
            if ok:
                message: Mapping[str, Any] = item.get("message") or {}
                if type(message) is not dict and not isinstance(message, Mapping):
                    message = {}
                ups.append(
                    RowUpdate(
                        rid,
                        "sent",
                        None,
                        None,
                        hold=0,
                        message_id=_str_or_none(message.get("id")),
                        user_id=_str_or_none(item.get("user")),
                        chat_id=_str_or_none(session.get("CHAT_ID")),
                        session_id=_str_or_none(session.get("ID")),
                        sent_at=now,
                    )
                )
            else:
                code, text = _item_error(item)
                ups.append(RowUpdate(rid, "failed", code, text, hold=0))
        return ups, outcome

    def _frame(self, journal: Journal) -> pd.DataFrame:
        """``plan.frame`` plus the status columns, from the journal (the source of truth)."""
        frame = self.plan.frame.copy()
        names = ("status", "code", "error", "attempts", "message_id", "user_id", "chat_id", "session_id",
                 "sent_at")
        rids, cols = journal.columns(names)
        if frame.index.dtype.kind in "iu":  # row numbers: row_key(n) == str(n), without a call per row
            keys = list(map(str, frame.index.tolist()))
        else:
            keys = [row_key(r) for r in frame.index]
        # journal order (conversations) → frame order; a frame row missing from the journal
        # takes the None appended at position len(rids)
        order = pd.Index(rids, dtype=object).get_indexer(pd.Index(keys, dtype=object))
        order[order < 0] = len(rids)

        def column(name: str) -> np.ndarray:
            values = np.empty(len(rids) + 1, dtype=object)
            values[: len(rids)] = cols[name]
            return values[order]

        status = column("status")
        missing = order == len(rids)
        status[status == "inflight"] = "unknown"
        status[missing] = "pending"
        col_code, col_error = column("code"), column("error")
        if missing.any():
            col_code[missing] = "not-in-plan"
            col_error[missing] = codes.render("not-in-plan")
        warnings = self._warnings()
        index = frame.index
        frame["import_status"] = pd.Series(status, index=index, dtype="str")
        frame["import_error_code"] = pd.Series(col_code, index=index, dtype="str")
        frame["import_error"] = pd.Series(col_error, index=index, dtype="str")
        frame["import_warnings"] = pd.Series(
            [warnings.get(k) for k in keys] if warnings else None, index=index, dtype="str"
        )
        attempts = column("attempts")
        attempts[missing] = 0
        frame["import_attempts"] = pd.Series(attempts.astype("int64"), index=index)
        for col, src in (
            ("import_message_id", "message_id"),
            ("b24_user_id", "user_id"),
            ("b24_chat_id", "chat_id"),
            ("b24_session_id", "session_id"),
        ):
            frame[col] = pd.Series(column(src), index=index, dtype="str")
        sent_at = column("sent_at")
        sent_at[pd.isna(sent_at)] = np.nan
        sent = pd.Series(sent_at.astype("float64"), index=index)
        frame["sent_at"] = pd.to_datetime(sent, unit="s", utc=True)
        return frame

    def _warnings(self) -> dict[str, str]:
        failures = self.plan.failures
        if failures is None or failures.empty:
            return {}
        warns = failures[failures["level"].astype(str) == "warning"]
        out: dict[str, str] = {}
        for rid, group in warns.groupby("row", sort=False):
            out[row_key(rid)] = "; ".join(
                f"{c}: {m}" for c, m in zip(group["code"], group["message"], strict=True)
            )
        return out


def send(
    plan: Plan,
    *,
    portal: str | None = None,
    line: int | str | None = None,
    connector: str | None = None,
    auth: Any = None,
    state: str | os.PathLike[str] | None = None,
    limits: PortalLimits = STANDARD,
    retry_failed: bool = False,
    retry_unknown: bool = False,
    progress: bool | None = None,
    clock: Clock | None = None,
    client: Any = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
) -> pd.DataFrame:
    """Send ``plan`` and return ``plan.frame`` with per-row status columns (see docs/sending.md).

    Re-running with the same plan and journal resumes. On Ctrl-C the journal is saved, every row
    keeps an honest status, and KeyboardInterrupt is re-raised.
    """
    outcome = Sender(
        plan,
        portal=portal,
        line=line,
        connector=connector,
        auth=auth,
        state=state,
        limits=limits,
        retry_failed=retry_failed,
        retry_unknown=retry_unknown,
        progress=progress,
        clock=clock,
        client=client,
        max_in_flight=max_in_flight,
    ).run()
    if outcome.summary.interrupted:
        raise KeyboardInterrupt
    return outcome.frame


__all__ = ["STATUS_COLUMNS", "SendOutcome", "SendSummary", "Sender", "send"]
