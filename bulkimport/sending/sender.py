"""The Sender: a Plan → requests → journal → per-row outcomes, neither losing, duplicating nor reordering.

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
* ``finish_sessions=True`` (what ``bulkimport run`` does unless ``--keep-open``): each conversation's
  open-line session is finished as soon as its rows are settled, inside the loop (``finishing``),
  and the run ends with a pass over what the loop did not finish (``bulkimport.after.finish``).

The parts (each imports only the ones listed after it): ``sender`` (set-up, journal binding, the
result) → ``loop`` (launch, settle, wait) → ``outcome`` (what one answer means for its rows),
``state`` (tallies and stop rules), ``workers`` (the HTTP exchange in threads), ``progress``
(collectors), ``summary`` (the result frame) → ``scheduling`` (which conversations go next).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pandas as pd

from .. import codes
from ..clock import Clock, SystemClock
from ..errors import ConfigError, InputError, JournalMismatchError
from ..journal import Journal, default_path, row_key
from ..limits import STANDARD, PortalLimits
from ..planning import Plan
from ..planstore import is_stored, marks
from ..settings import ENV_CONNECTOR, ENV_LINE, ENV_PORTAL
from .finishing import Finishing
from .loop import RunLoop
from .outcome import _wall
from .progress import ProgressCollector, collector
from .progress import check as check_progress
from .scheduling import Schedule, build_schedule, build_schedule_sorted
from .state import DEFAULT_MAX_IN_FLIGHT, MOST_IN_FLIGHT, RunState, stop_code
from .summary import STATUS_COLUMNS, SendOutcome, SendSummary, result_frame, summarize

#: Why a journal of another version of a file planned on disk is refused (bulkimport.bigfile too).
STORED_REBIND = (
    "the journal {state} was written for another version of this file (edited, or read with other "
    "options): its rows differ from this plan's, and a file planned on disk is not matched to its "
    "journal row by row yet; run the file and options as they were, or let the run match the edit "
    "in memory (~4 KiB of memory per row, {gib:.0f} GiB here): BULKIMPORT_STORED_PLAN_ROWS={rows} "
    "bulkimport run … (the same command); a new journal would send every row again"
)

#: The statuses of a summary's counts, in the order of ``codes.STATUSES``.
STATUS_ORDER = tuple(codes.STATUSES)

log = logging.getLogger("bulkimport.sending")


def _env_or(value: Any, env_name: str, option: str, env: Mapping[str, str]) -> str:
    """``value``, else the environment's ``env_name``; a one-line ConfigError naming both if neither."""
    if value is None or (isinstance(value, str) and not value.strip()):
        value = env.get(env_name)
    if value is None or not str(value).strip():
        raise ConfigError(
            f"no {option.lstrip('-')}: pass {option.lstrip('-')}=… ({option}) or set {env_name}"
        )
    return str(value).strip()


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
        progress: bool | ProgressCollector | None = None,
        clock: Clock | None = None,
        client: Any = None,
        env: Mapping[str, str] | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        settle_unknown: bool = False,
        update_changed: bool = False,
        finish_sessions: bool = False,
    ) -> None:
        env = os.environ if env is None else env
        #: finish each complete conversation's session during the run, then what is left at its
        #: end (bulkimport.after.finish); the result: ``finished`` (None when not asked or not run)
        self.finish_sessions = finish_sessions
        self.finished: Any = None
        #: read the chats of unknown rows back before sending (bulkimport.after.settle)
        self.settle_unknown = settle_unknown
        self.settled: Any = None
        #: update sent rows whose content changed in the file (bulkimport.after.update)
        self.update_changed = update_changed
        self.changes: Any = None  # what an edited input changed (bulkimport.after.rebind)
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
        if update_changed and is_stored(plan):
            raise ConfigError(
                "--update-changed is not available for an input planned on disk (past "
                "BULKIMPORT_STORED_PLAN_ROWS rows) yet: it compares every row with the journal in memory"
            )
        self.plan = plan
        # One clock for pacing, tokens and time stamps: given, else the client's, else the auth's.
        self.clock: Clock = (
            clock or getattr(client, "clock", None) or getattr(auth, "clock", None) or SystemClock()
        )
        portal = _env_or(portal, ENV_PORTAL, "--portal", env) if client is None else portal or client.portal
        self.portal = str(portal)
        self.line = _env_or(line, ENV_LINE, "--line", env)
        self.connector = _env_or(connector, ENV_CONNECTOR, "--connector", env)
        self.state = default_path(plan.frame.attrs.get("source"), os.fspath(state) if state else None)
        self.limits = limits
        self.retry_failed = retry_failed
        self.retry_unknown = retry_unknown
        check_progress(progress)
        self.progress = progress
        self._auth = auth
        self._client = client
        self._keys: list[list[str]] | None = None  # see _conv_keys
        #: also called with this run's counts and ``waiting_for`` (see progress.CallbackProgress)
        self.on_progress: Callable[[dict[str, Any]], None] | None = None
        #: after a Ctrl-C, end at once at any size: no per-row frame (``outcome.frame`` is None, the
        #: summary's counts come from the journal) and no ``not-reached`` note per pending row
        self.lean_interrupt = False
        #: rows that wait in this run (journal key → code, detail) and the last-moment command
        #: filler (placeholder attachment URLs → fresh Drive URLs); see sending/uploads.py
        self.waiting: dict[str, tuple[str, str]] | None = None
        self.resolve: Callable[[dict[str, Any]], dict[str, Any]] | None = None

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
        from ..portal.urls import rest_url

        fingerprint = self.plan.fingerprint or content_fingerprint(self.plan)
        journal = Journal.bind(
            self.state,
            portal=rest_url(self.portal),
            line=self.line,
            connector=self.connector,
            fingerprint=fingerprint,
            source=self.plan.frame.attrs.get("source"),
            rebind=True,
        )
        try:
            journal.lock()
            if journal.rebound is not None and is_stored(self.plan):  # the same rows planned anew?
                if not self.plan.matches(journal):  # type: ignore[attr-defined]
                    raise JournalMismatchError(rebind_advice(self.state, self.plan))
                journal.execute("UPDATE meta SET value = ? WHERE key = 'fingerprint'", (fingerprint,))
                journal.rebound = None
            if journal.rebound is not None:  # an edited input: match the rows by identity
                from ..after.rebind import reconcile

                self.changes = reconcile(journal, self.plan, self._invalid(), fingerprint)
                for text in self.changes.lines():  # ImportJob shows them (notify); here for the log
                    log.info("%s", text)
            else:  # the same plan; an invalid row deleted from the file leaves the counts
                from ..after.rebind import forget_gone_invalid

                if is_stored(self.plan):  # found in SQL: millions of invalid rows are possible
                    gone = self.plan.gone_invalid(journal)  # type: ignore[attr-defined]
                    self.changes = forget_gone_invalid(journal, {}, stale=gone)
                else:
                    self.changes = forget_gone_invalid(journal, self._invalid())
        except BaseException:
            journal.close()
            raise
        return journal

    def _conv_keys(self) -> list[list[str]]:
        """The journal keys of every conversation's rows, computed once per run (each is read by
        the journal set-up, the schedule and every request)."""
        if self._keys is None:
            plan = self.plan
            self._keys = plan.keys() if is_stored(plan) else [  # type: ignore[attr-defined]
                [row_key(r) for r in c.rows] for c in plan.conversations]
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
        if is_stored(self.plan):  # never all at once: the stored paths ask the store in SQL
            raise RuntimeError("a stored plan's invalid rows are read in SQL (planstore)")
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

    def _recover(self, journal: Journal) -> int:
        """Journal the plan's rows; rows a previous run left in flight become ``unknown``."""
        plan = self.plan
        if is_stored(plan):  # its rows go from its file to the journal in SQL (none for add_rows)
            seen = plan.store.invalid_digest()  # type: ignore[attr-defined]
            _journal_rows_once(journal, lambda: [plan.journal_rows(journal)][:0], {}, seen=seen)
        else:
            _journal_rows_once(journal, self._initial_rows, self._invalid())
        recovered = journal.recover()
        if recovered:
            log.warning(
                "%d rows were in flight when the previous run ended: they are now 'unknown' "
                "(check the open line, then use --retry-unknown)",
                recovered,
            )
        return recovered

    def _after_recover(self, journal: Journal, client: Any) -> None:
        """Record the rows' external ids; settle unknown rows by read-back (bulkimport.after)."""
        from ..after import identities
        from ..after.settle import settle_unknown

        if is_stored(self.plan):
            identities.record_stored(journal, self.plan)
        else:
            identities.record(journal, self.plan)
        missing = identities.missing_count(journal)
        if missing:
            from ..codes import count_of

            log.warning(
                "%s that verify did not find on the portal: sent again, after newer messages of "
                "their chats", count_of(missing, "row"),
            )
        if self.settle_unknown:
            self.settled = settle_unknown(
                journal, client, connector=self.connector, line=self._line_value(),
                clock=self.clock, cap=self.limits.request_timeout,
            )
        if self.update_changed:
            from ..after.update import update_changed

            done, refused, dated = update_changed(journal, self.plan, client, connector=self.connector,
                                                  line=self._line_value())
            if done or refused:
                log.warning("--update-changed: %d changed rows updated on the portal (their text and "
                            "files; a message keeps the date and author it was sent with), %d refused",
                            done, refused)
            if dated:
                log.warning("--update-changed: %d changed rows differ only in their date, which the "
                            "portal cannot update: delete them (bulkimport undo --chats) and send them "
                            "again to re-date them", dated)

    def _run(self, journal: Journal, frozen: bool = False) -> SendOutcome:
        plan = self.plan
        client = self._make_client()
        governor = client.governor
        recovered = self._recover(journal)
        self._after_recover(journal, client)
        started = self.clock.now()  # elapsed and msg/s are measured on the (portal) clock …
        requests_before = governor.requests
        run_id = journal.start_run(_wall())  # … while the journal records real time
        keys = self._conv_keys()
        schedule = Schedule(self._schedule(journal, keys))
        if frozen:  # the run's schedule lives as long as the run: out of full GC passes too
            gc.freeze()
        total = plan.messages
        progress = collector(self.progress, self.on_progress)
        state = RunState(self.max_in_flight)
        finishing = Finishing(journal, schedule.convs, self.clock.now) if self.finish_sessions else None
        loop = RunLoop(
            plan=plan,
            connector=self.connector,
            line=self._line_value(),
            client=client,
            clock=self.clock,
            journal=journal,
            run_id=run_id,
            keys=keys,
            schedule=schedule,
            state=state,
            progress=progress,
            warm_token=self._warm_token,
            resolve=self.resolve,
            finishing=finishing,
        )
        progress.start(total, total - schedule.to_send())
        try:
            loop.run()
        finally:
            progress.close()
        outcome = self._finish(
            journal, run_id, schedule, state, started, governor, requests_before, recovered
        )
        if finishing is not None:
            self.finished = self._finish_the_rest(client, journal, finishing, state)
        return outcome

    def _schedule(self, journal: Journal, keys: Any) -> Any:
        """Each conversation's queue from the journal: a stored plan's from its rows streamed in
        (conv, seq) order, the rest from the frame of rows that are not pending."""
        plan = self.plan
        if is_stored(plan):
            if self.waiting:
                raise ConfigError("rows waiting for their attachments cannot be sent from a stored plan")
            return build_schedule_sorted(plan.store.heads(), marks(journal),  # type: ignore[attr-defined]
                                         self.retry_failed, self.retry_unknown)
        rows = journal.rows(skip_pending=True).set_index("rid")  # absent: pending
        return build_schedule(plan.conversations, keys, rows, self.retry_failed, self.retry_unknown,
                              self.waiting)

    def _finish_the_rest(self, client: Any, journal: Journal, finishing: Finishing, state: RunState) -> Any:
        """After the loop: finish what it did not (e.g. a per-chat error to try once more); not
        after a Ctrl-C, nor after a stop other than repeated rejections of the data (a portal
        that refuses or does not answer would only be asked again): the next run or ``bulkimport
        finish`` does it."""
        from ..after import finish

        if state.interrupted or stop_code(state.stopped) not in (None, "repeated-rejection"):
            return finishing.result
        # a collector the caller gave counts these calls too (no second bar on a terminal)
        given = False if self.progress is None or isinstance(self.progress, bool) else self.progress
        at_end = finish.finish_sessions(client, journal, progress=collector(given))
        return finish.merged(finishing.result, at_end)

    def _finish(
        self,
        journal: Journal,
        run_id: int,
        schedule: Schedule,
        state: RunState,
        started: float,
        governor: Any,
        requests_before: int,
        recovered: int,
    ) -> SendOutcome:
        """Note why pending rows are pending, close the run in the journal, build the outcome."""
        stored = is_stored(self.plan)  # a stored plan: no per-row frame, the journal says it all
        lean = (state.interrupted and self.lean_interrupt) or stored
        reason = None if state.interrupted and self.lean_interrupt else state.pending_reason()
        notes = schedule.pending_notes(self._conv_keys(), None if stored else reason)
        if notes:
            journal.note_pending(notes)
        if stored and reason:  # the rows still queued, a range per conversation instead of a key per row
            journal.executemany(
                "UPDATE rows SET code = 'not-reached', error = ? WHERE conv = ? AND seq BETWEEN ? AND ? "
                "AND status = 'pending'",
                [(reason, c.index, c.queue[0], c.queue[-1]) for c in schedule.convs.values() if c.queue])
        finished = self.clock.now()
        stopped = state.stopped
        journal.finish_run(run_id, _wall(), stop_code(stopped), state.interrupted, state.tally["sent"])
        frame = None if lean else result_frame(self.plan, journal)
        summary = (_summarize_journal if frame is None else summarize)(
            journal if frame is None else frame,
            elapsed=max(0.0, finished - started),
            sent_this_run=state.tally["sent"],
            requests=governor.requests - requests_before,
            stopped=stop_code(stopped),
            stopped_message=str(stopped) if stopped is not None else None,
            journal=journal.path,
            interrupted=state.interrupted,
            seconds_per_message=governor.measured_seconds_per_message,
            recovered_unknown=recovered,
        )
        if frame is not None:
            frame.attrs["bulkimport_summary"] = summary.as_dict()  # JSON-friendly: survives to_parquet
        if stopped is not None:
            log.error("stopped early: %s", stopped)
        return SendOutcome(frame, summary)  # type: ignore[arg-type]  # None: lean_interrupt


def rebind_advice(state: Any, plan: Plan) -> str:
    """:data:`STORED_REBIND` for ``plan``: a threshold well above the file's rows (the threshold is
    compared with an estimate of them), and the memory matching in memory takes."""
    rows = int(plan.counts.get("rows", 0))
    return STORED_REBIND.format(state=state, rows=2 * rows + 1, gib=max(1, rows * 4 / 2**20))


def _journal_rows_once(journal: Journal, rows: Callable[[], Any], invalid: dict[str, tuple[str, str]],
                       seen: str | None = None) -> None:
    """Insert the plan's rows unless the journal already holds exactly them: bound to the same
    plan (fingerprint) with the same invalid rows. A resumed run of a 10M-row journal then
    skips 10M ``INSERT OR IGNORE`` (~40 s); an edited file rebinds to a new fingerprint.
    ``seen``: the digest of the invalid rows when the plan has it (a stored plan's)."""
    import hashlib
    import json

    meta = journal.meta()
    seen = seen or hashlib.sha256(json.dumps(sorted(invalid)).encode()).hexdigest()[:16]
    key = f"{meta.get('fingerprint', '')}:{seen}"
    if meta.get("fingerprint") and meta.get("rows_journalled") == key:
        return
    journal.add_rows(rows())
    journal.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('rows_journalled', ?)", (key,))


def _summarize_journal(store: Journal, **figures: Any) -> SendSummary:
    """The summary of a run from the journal's counts (no per-row frame: ``lean_interrupt``)."""
    held = store.summary()
    elapsed = figures["elapsed"]
    return SendSummary(
        counts={s: int(held["counts"].get(s, 0)) for s in STATUS_ORDER},
        top_errors=[(str(c), int(n)) for c, n in held["top_codes"][:5]],
        messages_per_second=figures["sent_this_run"] / elapsed if elapsed > 0 else 0.0,
        **figures,
    )


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
    progress: bool | ProgressCollector | None = None,
    clock: Clock | None = None,
    client: Any = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    finish_sessions: bool = False,
) -> pd.DataFrame:
    """Send ``plan`` and return ``plan.frame`` with per-row status columns (see docs/sending.md).

    Re-running with the same plan and journal resumes. On Ctrl-C the journal is saved, every row
    keeps an honest status, and KeyboardInterrupt is re-raised. ``finish_sessions=True`` finishes
    each conversation's open-line session once its rows are settled (``bulkimport run`` does so
    unless ``--keep-open``; the library leaves them open unless asked). A plan stored on disk
    (a big CSV, :mod:`bulkimport.planstore`) keeps no per-row frame: ``None`` is returned, and
    every row's outcome is in the journal (``bulkimport.reporting.write_journal_report``).
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
        finish_sessions=finish_sessions,
    ).run()
    if outcome.summary.interrupted:
        raise KeyboardInterrupt
    return outcome.frame


__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "MOST_IN_FLIGHT",
    "STATUS_COLUMNS",
    "SendOutcome",
    "SendSummary",
    "Sender",
    "content_fingerprint",
    "send",
]
