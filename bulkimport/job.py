"""One import end to end — :class:`ImportJob` — for the CLI, notebooks and scripts alike.

A job owns what a run is: the paths and their defaults (journal and report beside the input), the
options that go together, reading and mapping the input, the plan and its ETA, the portal's
preflight (or a sandbox rehearsal with its own clock and ETA), sending with a progress collector,
the report, and a :class:`JobResult` that says what happened and which exit status that means::

    job = ImportJob("history.xlsx", mapping="history_xlsx.toml", sandbox=True, notify=print)
    plan = job.plan()                 # read → map → validate → plan (cached)
    result = job.run()                # preflight/rehearsal → send → report
    result.exit_code, result.next_steps()

Library code never prints: what a run has to say while it goes (the sandbox's address, the
preflight checklist) goes to ``notify``; whether to go ahead is asked through ``confirm``.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bigfile, staging
from . import connector as conn
from .codes import count_of
from .errors import ConfigError, InputError
from .exits import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_ROWS
from .limits import PortalLimits, preset
from .mapping import Mapping
from .planning import Estimate, Plan
from .planning import plan as build_plan
from .planstore import is_stored
from .reporting import check_report_path, count_lines, record_rows, summary_lines, write_report
from .sending import Sender
from .settings import DEFAULT_CONNECTOR, ENV_LINE, ENV_PORTAL, parse_line

#: Pending codes of rows that wait behind an unknown or failed row of their conversation.
HELD_CODES = ("held-after-unknown", "held-after-failure")
#: From this many rows on, writing the xlsx report takes long enough to say so first.
BIG_REPORT_ROWS = 50_000


def _silent(_text: str) -> None:
    """The default ``notify``: a library says nothing unless asked to."""


def _sheet(sheet: Any) -> Any:
    """``"2"`` means the third sheet; several sheets are a list; ``"*"`` is every sheet."""
    if isinstance(sheet, str):
        return int(sheet) if sheet.isdigit() else sheet
    if isinstance(sheet, (list, tuple)):
        return [_sheet(s) for s in sheet]
    return sheet


def _operators_of(mapping: Any) -> dict[str, int]:
    """The ``[operators]`` table of a mapping (object or TOML file) for a messenger export, whose
    own mapping has no author column for Mapping to check them against."""
    if isinstance(mapping, Mapping):
        return dict(mapping.operators)
    if mapping is None:
        return {}
    import tomllib

    path = Path(mapping)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8-sig")).get("operators", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--mapping {path}: cannot read its [operators] ({exc}); fix the file") from None
    if not isinstance(table, dict):
        raise ConfigError(f"--mapping {path}: [operators] must be a table of author = employee id lines")
    return dict(table)


def _stated_options(job: Any) -> dict[str, Any]:
    """The mapping options a job's command line states: --timezone, --files-base-url,
    --phone-region, and --date-order dmy/mdy as dayfirst (ymd: year-first dates are read
    year-month-day anyway)."""
    options: dict[str, Any] = {}
    if job.timezone:
        options["timezone"] = job.timezone
    if job.files_base_url:
        options["files_base_url"] = job.files_base_url
    if job.phone_region:
        options["phone_region"] = job.phone_region
    if job.date_order in ("dmy", "mdy"):
        options["dayfirst"] = job.date_order == "dmy"
    return options


def _assumptions(job: Any) -> list[tuple[str, str]]:
    """What sending would only assume (validation.assumptions), plus a spreadsheet's phone region,
    or an export's time zone taken from this machine when --timezone was not given."""
    from .codes import render
    from .validation import assumptions, phone_region_assumption

    frame, mapping = job.load()
    found = assumptions(frame, mapping)
    src = job.source_info
    if src is None or src.mapping is not mapping:
        found += phone_region_assumption(frame, mapping)
    elif not job.timezone and getattr(src, "timezone", None):
        text = render("timezone-not-set", zone=src.timezone).split(":")[0]
        found.append(("timezone-not-set", f"{text}: this machine's zone, as --timezone was not given; "
                      "pass --timezone ZONE (the zone the export was written in) if it differs."))
    return found


def _default_report(source: Path, state: Any, beside: Callable[[str], Path]) -> Path:
    """``<source>.report.xlsx``, or with a ``--state`` given ``<state without .db>.report.xlsx``
    (two imports of one file with their own journals keep their own reports)."""
    default_state = beside(source.name + ".bulkimport.db")
    if Path(state) == default_state:
        return beside(source.name + ".report.xlsx")
    base = Path(state)
    if base.suffix == ".db":
        base = base.with_suffix("")
    return base.with_name(base.name + ".report.xlsx")


def _checked_region(region: str | None) -> str | None:
    """``--phone-region`` upper-cased, or a one-line ConfigError naming the option and the fix."""
    if region is None:
        return None
    import phonenumbers

    code = str(region).strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"--phone-region {region!r} is not a known region: use a two-letter ISO 3166 code such as "
            "RU, US, GB or DE (the country of phones written without +country code)"
        )
    return code


def _system_for_unmapped(src: Any, strict: bool) -> None:
    """``--unmapped-operators system`` on a messenger export: business-side rows whose author maps
    to no employee go with message.user_id = 0 (the portal's system user) instead of refusing."""
    frame = src.frame
    unmapped = frame["side"].eq("operator") & frame["operator_id"].isna()
    if bool(unmapped.any()):
        frame.loc[unmapped, "operator_id"] = "0"
    src.problems[:] = [p for p in src.problems if "map to no Bitrix24 employee" not in p]
    src.mapping = src.mapping.with_options(unmapped_operators="system")  # keeps what was assumed
    if strict:
        src.check()


@dataclass
class JobResult:
    """What a job's run produced: the per-row frame, the sender's summary and what follows."""

    frame: Any  # None after a Ctrl-C: the run ends at once (``bulkimport report`` writes the rows)
    summary: Any
    plan: Plan
    journal: Path
    command: list[str]  # the command line that resumes this import
    report: Path | None = None
    wall: float | None = None  # real seconds the sending took
    note: str = ""  # e.g. how to look at what a sandbox received
    interrupted: bool = False
    declined: bool = False  # the confirmation was answered "no": nothing was sent
    fix: str | None = None  # the command that fixes what stopped the run (auth, setup)
    finish: Any = None  # bulkimport.after.finish.FinishResult (None: --keep-open or not reached)
    import_mode: Path | None = None  # the line's saved settings: it is in import mode
    changes: Any = None  # what an edited input changed against the journal (after.rebind.Changes)
    settled: Any = None  # what reading unknown rows back settled (after.settle.Settled)
    report_later: list[str] | None = None  # the command that writes the per-row report not written
    _tallies: dict[tuple[str, str | None], int] | None = field(default=None, init=False, repr=False)

    @property
    def stopped(self) -> str | None:
        """The code that stopped the run early, if any."""
        return getattr(self.summary, "stopped", None)

    @property
    def exit_code(self) -> int:
        """0 every row sent; 1 rows left failed/invalid/unknown/pending (or declined); 2 the portal
        refused the set-up or the credentials mid-run; 130 interrupted."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.declined:
            return EXIT_ROWS
        if self.fix:
            return EXIT_INPUT
        tallies = self.tallies()
        return EXIT_OK if set(s for s, _ in tallies) <= {"sent"} else EXIT_ROWS

    def tallies(self) -> dict[tuple[str, str | None], int]:
        """Rows per (status, code): from the per-row frame, or from the journal when the run kept
        none (a plan stored on disk); counted once (exit status and next steps both ask)."""
        if self._tallies is None:
            self._tallies = _tallies(self)
        return self._tallies

    def next_steps(self) -> list[str]:
        """What to do next, one line each: resume, retry the rejected rows, settle unknown ones."""
        if self.interrupted:
            lines = [f"Interrupted; the journal is saved. Resume with: {shlex.join(self.command)}"]
            if self.report_later:
                later = shlex.join(self.report_later)
                lines.append(f"The per-row report was not written; write it with: {later}")
            return lines
        if self.declined:
            return []
        tallies = self.tallies()
        has = {s for s, _ in tallies}
        lines: list[str] = []
        if any(s == "pending" and c not in HELD_CODES for s, c in tallies):
            lines.append(f"Resume (sends the pending rows): {shlex.join(self.command)}")
        if "failed" in has:
            lines.append(
                "After fixing the cause, retry the rejected rows"
                + _held_note(tallies, "held-after-failure")
                + f": {shlex.join([*self.command, '--retry-failed'])}"
            )
        if "unknown" in has:
            lines.append(
                "Rows with an unknown outcome may have reached the portal"
                + _held_note(tallies, "held-after-unknown")
                + "; check the open line, then say what you found: "
                + f"`bulkimport resolve {shlex.quote(str(self.journal))} --arrived|--not-arrived"
                + " [--rows 12,40-45]` (arrived rows are never re-sent), or re-send them all: "
                + shlex.join([*self.command, "--retry-unknown"])
            )
        return lines + self._after_steps()

    def _after_steps(self) -> list[str]:
        """Unfinished sessions and import mode: what to do about them once the rows are done."""
        lines: list[str] = []
        journal = shlex.quote(str(self.journal))
        if self.finish is not None and not self.finish.complete:
            lines.append(f"{self.finish}; finish the rest with: bulkimport finish {journal}")
        elif self.finish is None and "--keep-open" in self.command:
            lines.append(f"The imported sessions are left open (--keep-open); finish them with: "
                         f"bulkimport finish {journal}")
        if self.import_mode is not None:
            lines.append(
                "The line is in import mode (welcome/rating messages off); when the import is done, "
                "restore its settings: bulkimport setup --restore --settings-file "
                f"{shlex.quote(str(self.import_mode))} --portal … --line …"
            )
        return lines

    def fix_message(self) -> str | None:
        """The one-line error for a run the portal stopped over its set-up or credentials."""
        if not self.fix:
            return None
        return (
            f"Error: the run stopped on {self.stopped}; fix it with `{self.fix}`, then run again to resume"
        )

    def summary_lines(self) -> list[str]:
        """The closing summary: rows per status, top codes with hints, time and throughput."""
        if self.frame is None:  # an interrupted run keeps no per-row frame
            summary = self.summary
            return count_lines(summary.counts, summary.top_errors, summary=summary, wall=self.wall)
        return summary_lines(self.frame, plan=self.plan, summary=self.summary, wall=self.wall)


def _tallies(result: JobResult) -> dict[tuple[str, str | None], int]:
    """The body of :meth:`JobResult.tallies`."""
    frame = result.frame
    if frame is None:
        from .journal import Journal

        with Journal.open(result.journal) as journal:
            return {(str(s), c): int(n) for s, c, n in
                    journal.query("SELECT status, code, COUNT(*) FROM rows GROUP BY status, code")}
    import pandas as pd

    code = frame.get("import_error_code", pd.Series(None, index=frame.index, dtype=object))
    pairs = pd.DataFrame({"s": frame["import_status"].astype(str).to_numpy(),
                          "c": code.astype(object).where(code.notna(), None).to_numpy()})
    counted = pairs.value_counts(dropna=False)
    return {(s, c if isinstance(c, str) else None): int(n) for (s, c), n in counted.items()}


def _held_note(tallies: dict[tuple[str, str | None], int], which: str) -> str:
    """ " (N later rows of their conversations wait behind them)" for the rows held by ``which``."""
    n = tallies.get(("pending", which), 0)
    return f" ({n} later rows of their conversations wait behind them)" if n else ""


def _duration(seconds: float) -> str:
    import datetime as dt

    return str(dt.timedelta(seconds=round(seconds)))


@dataclass(frozen=True)
class Resume:
    """Where an existing journal left this job's plan: what is sent, what is still to go."""

    journal: Path
    sent: int
    total: int  # valid rows of the plan
    to_go: int  # rows this run will send (pending, plus failed/unknown when retried)
    waiting: int  # failed or unknown rows (and those held behind them) this run leaves alone
    estimate: Estimate  # for the rows to go (and the finish calls still to make)
    to_finish: int = 0  # sessions not finished yet that the run finishes (0 with --keep-open)

    missing: int = 0  # of the rows to go: sent before, not found on the portal by verify
    alone: dict[str, int] = field(default_factory=dict)  # ``waiting`` by why: failed, unknown, held

    def __str__(self) -> str:
        text = f"Resuming {self.journal}: {self.sent} of {self.total} sent, {self.to_go} to go"
        if self.missing:
            text += f" (with {self.missing} sent before that verify did not find on the portal)"
        if self.waiting:
            text += ", " + _left_alone(self.alone) if self.alone else f", {self.waiting} left alone"
        if self.to_go == 0 and not self.to_finish:
            return text + "; nothing left to send"
        if self.to_finish:
            return text + f"; ETA for the {self.to_go} and {self.to_finish} session finishes: {self.estimate}"
        return text + f"; ETA for the {self.to_go}: {self.estimate}"


def _left_alone(alone: dict[str, int]) -> str:
    """``"1 failed (sent again only with --retry-failed), 2 unknown (…) and 3 held behind them"``."""
    parts = []
    if alone.get("failed"):
        parts.append(f"{alone['failed']} failed (sent again only with --retry-failed)")
    if alone.get("unknown"):
        parts.append(f"{alone['unknown']} unknown (check the open line: `bulkimport resolve`, or "
                     "--retry-unknown)")
    if alone.get("held"):
        parts.append(f"{count_of(alone['held'], 'row')} held behind them in their conversations")
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _left_to_send(
    rows: Any, plan: Plan, retry_failed: bool, retry_unknown: bool
) -> tuple[int, list[int], dict[str, int]]:
    """From a journal's non-pending rows: (rows sent, messages still to send per conversation — rows
    verify found missing among them —, what this run leaves alone: ``failed``, ``unknown`` and
    ``held`` behind those in their conversation), holding conversations exactly as the sender does
    (sending/scheduling.py: a conversation goes on up to its first unknown or holding failure)."""
    rows = rows[rows["conv"].notna()]
    retried = {"failed"} if retry_failed else set()
    retried |= {"unknown", "inflight"} if retry_unknown else set()
    convs = rows["conv"].astype(int).tolist()
    seqs = rows["seq"].astype(int).tolist()
    states = list(zip(convs, seqs, rows["status"].tolist(), rows["hold"].tolist(), strict=True))
    stops = [status in ("unknown", "inflight") or (status == "failed" and bool(hold))
             for _, _, status, hold in states]
    hold_at: dict[int, int] = {}  # conversation → position of its first row that holds it
    for (conv, seq, status, _), stop in zip(states, stops, strict=True):
        if stop and status not in retried and seq < hold_at.get(conv, len(plan.conversations[conv])):
            hold_at[conv] = seq
    left = [len(c) for c in plan.conversations]
    alone = {"failed": 0, "unknown": 0, "held": 0}
    after = dict.fromkeys(hold_at, 0)  # journalled rows past the hold, per held conversation
    for conv, seq, status, _ in states:
        past = conv in hold_at and seq > hold_at[conv]
        after[conv] = after.get(conv, 0) + past
        if status in ("sent", "deleted"):  # deleted: taken back by `bulkimport undo`, not re-sent
            left[conv] -= 1
        elif status == "failed" and status not in retried:
            left[conv] -= 1
            alone["failed"] += 1
        elif status in ("unknown", "inflight") and status not in retried:
            left[conv] -= 1
            alone["unknown"] += 1
        elif past:  # pending, missing or retried, but behind the hold: not sent in this run
            left[conv] -= 1
            alone["held"] += 1
    for conv, at in hold_at.items():  # the pending rows (not journalled) past the hold wait too
        pending_after = len(plan.conversations[conv]) - at - 1 - after[conv]
        left[conv] -= pending_after
        alone["held"] += pending_after
    return int(rows["status"].eq("sent").sum()), left, alone


def _load_mapping(path: str | Path, source: Any) -> Mapping:
    """:meth:`Mapping.load`, the command that writes a guess in its CLI wording naming ``source``."""
    try:
        return Mapping.load(path)
    except InputError as exc:
        if exc.cli:
            exc.cli = exc.cli.replace("mapping FILE", f"mapping {shlex.quote(str(source))}")
        raise


def _with_operators(mapping: Mapping, operators: dict[str, int], source: Any) -> Mapping:
    """``mapping`` with the --operator authors added; without an author column to look them up in,
    the refusal says (on the CLI) how to name one."""
    import dataclasses

    try:
        return dataclasses.replace(mapping, operators={**mapping.operators, **operators},
                                   options=mapping.stated_options())
    except InputError as exc:
        first = next(iter(operators))
        exc.cli = (
            f"--operator '{first}=…' needs the column that names each row's author, and {mapping.label} "
            f"has none: write the mapping (bulkimport mapping {shlex.quote(str(source))} --save "
            'mapping.toml), set author = "<column>" under [options] and pass --mapping mapping.toml'
        )
        raise


def _sandbox_pace(
    plan: Plan, limits: PortalLimits, time_scale: float | None, remaining: list[int] | None = None
) -> tuple[Estimate, float]:
    """The sandbox's own ETA (for the messages still to send, when resuming) and the clock scale
    that makes the demo take about ten seconds."""
    from .sandbox import COST_PER_CALL, COST_PER_MESSAGE

    # The sandbox charges COST_PER_CALL + COST_PER_MESSAGE per message of a call, so its server
    # time per message is lower than the one-message figure the real-portal ETA assumes
    # (1.2 s): pace the demo's clock and its promise on the sandbox's own cost.
    messages = max(1, plan.messages)
    per_message = (plan.calls() * COST_PER_CALL + messages * COST_PER_MESSAGE) / messages
    here = plan.estimate(limits, seconds_per_message=per_message, remaining=remaining)
    return here, time_scale or conn.demo_time_scale(here.seconds)


def _sandbox_line(url: str, db: Path, scale: float, limits: PortalLimits, here: Estimate, to_go: int) -> str:
    """What the sandbox is and how long it will take: its clock (real time, or N× faster) and its
    own ETA, or that there is nothing left to send."""
    from .sandbox import COST_PER_CALL, COST_PER_MESSAGE

    head = f"Sandbox portal at {url} (what it receives is kept in {db})."
    if to_go == 0:
        return f"{head} Nothing to send: no valid row is left to send, so it takes no sandbox time."
    cost = (
        f"At the sandbox's {COST_PER_CALL:g} s per call + {COST_PER_MESSAGE:g} s per message of server time"
    )
    if scale == 1:
        return (
            f"{head} Its clock runs in real time, paced by the {limits.name} plan's limits. {cost} it "
            f"needs about {_duration(here.seconds)} for {to_go} message(s) (the estimate above is for a "
            "real portal)."
        )
    return (
        f"{head} Its clock runs {scale:g}× faster than real time: the {limits.name} plan's limits still "
        f"pace the import, in sandbox time. {cost} it needs {_duration(here.seconds)} of sandbox time "
        f"for {to_go} message(s), about {_duration(here.seconds / scale)} here (the estimate above is "
        "for a real portal)."
    )


def _start_sandbox(db: Path, scale: float, state: Path) -> Any:
    """A started sandbox on the port a resumed journal is bound to (ConfigError when busy)."""
    from .sandbox import Sandbox

    port = conn.sandbox_port_for(state)
    sandbox = Sandbox(db=db, port=port, time_scale=scale)
    try:
        sandbox.start()
    except OSError as exc:
        sandbox.stop()
        raise ConfigError(
            f"--state {state} belongs to a sandbox import on port {port}, which is busy "
            f"({exc.strerror}); free the port, or pass a new --state (and --sandbox-db) for a new import"
        ) from None
    return sandbox


@dataclass
class ImportJob:
    """One import of ``source`` into one open line (or a sandbox rehearsal); see the module doc."""

    source: str | Path
    mapping: Mapping | str | Path | None = None  # a Mapping, a TOML file, or None: guessed
    sheet: str | int | list[str] | None = None  # a name, a 0-based index, several names, or "*"
    header_row: int | None = None  # the spreadsheet row of the header [default: found]
    encoding: str | None = None
    delimiter: str | None = None
    portal: str | None = None
    line: int | str | None = None
    connector: str = DEFAULT_CONNECTOR
    state: str | Path | None = None  # the journal; default <source>.bulkimport.db
    report: str | Path | None = None  # default <source>.report.xlsx
    sandbox: bool = False
    sandbox_db: str | Path | None = None
    time_scale: float | None = None
    limits: PortalLimits | str = "standard"
    retry_failed: bool = False
    retry_unknown: bool = False
    max_in_flight: int = 2
    settle_unknown: bool = True  # read the chats of unknown rows back before sending (after.settle)
    update_changed: bool = False  # update sent rows whose content changed (--update-changed)
    progress: Any = None  # None: a bar on a terminal or in Jupyter; False; or a progress collector
    notify: Callable[[str], None] = _silent
    operators: dict[str, int] = field(default_factory=dict)  # author → employee id (--operator)
    timezone: str | None = None  # zone of dates without one (--timezone)
    date_order: str | None = None  # dmy, mdy or ymd (--date-order); spreadsheets: dmy/mdy set dayfirst
    phone_region: str | None = None  # region of phones without +country code (--phone-region)
    files_base_url: str | None = None  # where local attachments are published (--files-base-url)
    upload_files: bool = False  # stage local attachments on the portal's Drive (--upload-files)
    missing_files: str | None = None  # note | skip | fail (--missing-files) [default: the mapping's, note]
    max_file_mb: float | None = None  # attachments above this are reported, not sent (--max-file-size)
    accept_guess: bool = False  # send to a real portal on a guessed mapping without asking
    include_groups: bool = False  # Telegram full exports: group chats too (--include-groups)
    include_service: bool = False  # messenger service messages as system notes (--include-service)
    keep_open: bool = False  # leave the imported sessions open (--keep-open); default: finish them
    unmapped_operators: str = "refuse"  # operator-side authors without an employee: refuse or system
    plan_on_disk: bool | None = None  # a big CSV planned in parts into a stored plan; None: by size
    line_warnings: list[str] = field(default_factory=list, init=False)  # the line's noisy settings
    source_info: Any = field(default=None, init=False, repr=False)  # the Source that was read
    _frame: Any = field(default=None, init=False, repr=False)
    _chunks: Any = field(default=None, init=False, repr=False)  # a big CSV read in chunks (bigfile)
    _mapping: Mapping | None = field(default=None, init=False, repr=False)
    _plan: Plan | None = field(default=None, init=False, repr=False)
    _prepared: Any = field(default=None, init=False, repr=False)  # validation.Prepared, see prepared_of
    _client: Any = field(default=None, init=False, repr=False)
    _ready: Any = field(default=None, init=False, repr=False)
    guessed: bool = field(default=False, init=False)  # the mapping was guessed from the headers

    def __post_init__(self) -> None:
        self.source = Path(self.source)
        if self.unmapped_operators not in ("refuse", "system"):
            raise ConfigError(
                f"--unmapped-operators {self.unmapped_operators!r}: use refuse (the default) or system"
            )
        if isinstance(self.limits, str):
            self.limits = preset(self.limits)
        self.connector = conn.check_connector_id(self.connector)
        beside = self.source.with_name
        self.state = Path(self.state) if self.state else beside(self.source.name + ".bulkimport.db")
        self.report = Path(self.report) if self.report else _default_report(self.source, self.state, beside)
        self.phone_region = _checked_region(self.phone_region)
        if self.sandbox_db is not None:
            self.sandbox_db = Path(self.sandbox_db)

    # ------------------------------------------------------------------ checks
    def check_options(self, *, dry_run: bool = False) -> None:
        """Refuse options that do not go together, before anything is read (ConfigError)."""
        if not self.sandbox and (self.sandbox_db is not None or self.time_scale is not None):
            raise ConfigError(
                "--sandbox-db and --time-scale only apply to a --sandbox run; add --sandbox or drop them"
            )
        if not self.sandbox and (self.portal or not dry_run):
            if not self.portal:
                raise ConfigError(
                    f"--portal is required (or set {ENV_PORTAL}, or use --sandbox to rehearse)"
                )
            parse_line(self.line)
        check_report_path(str(self.report))
        assert isinstance(self.state, Path)
        if not self.state.parent.exists():
            raise ConfigError(
                f"--state {self.state}: folder {self.state.parent} does not exist; create it or pick another"
            )

    # ------------------------------------------------------------------ stages
    def load(self, *, strict: bool = True) -> tuple[Any, Mapping]:
        """Read the input (any source kind) and load or guess the mapping, once; (frame, mapping).

        A messenger export brings its own mapping (its [operators] and options may come from the
        mapping file and the job's ``operators`` / ``timezone`` / ``files_base_url``); a
        spreadsheet's mapping is the file's or a guess, with those options laid over it.
        ``strict=False`` keeps an export's unmapped operators in ``source.problems`` (to show them)."""
        if self._frame is None:
            from .sources import detect, load

            sheet = _sheet(self.sheet)
            given = self._given_mapping()
            kind = detect(self.source)
            messenger = kind not in ("xlsx", "csv")
            operators = {**(_operators_of(self.mapping) if messenger else {}), **self.operators}
            src = bigfile.source_for(self, kind) or load(
                self.source, sheet=sheet, header_row=self.header_row, encoding=self.encoding,
                delimiter=self.delimiter,
                timezone=self.timezone, date_order=self.date_order, files_base_url=self.files_base_url,
                operators=operators if messenger else None,
                strict=strict and self.unmapped_operators != "system",
                **({"include_groups": self.include_groups, "include_service": self.include_service}
                   if messenger else {}),
            )
            if self.unmapped_operators == "system" and src.mapping is not None:
                _system_for_unmapped(src, strict)
            if src.mapping is not None:
                mapping = src.mapping
            elif given is not None:
                mapping = self._overlaid(given)
            else:
                mapping, self.guessed = self._overlaid(Mapping.guess(src.frame)), True
            if src.mapping is not None:  # an export's own mapping: the attachment options go on it
                own = staging.file_options(self, dict(src.mapping.options), tabular=False)
                src.mapping.options.update(own)
            self.source_info, self._frame, self._mapping = src, src.frame, mapping
        assert self._mapping is not None
        return self._frame, self._mapping

    def _given_mapping(self) -> Mapping | None:
        if isinstance(self.mapping, Mapping) or self.mapping is None:
            return self.mapping
        return _load_mapping(self.mapping, self.source)

    def _overlaid(self, mapping: Mapping) -> Mapping:
        """``mapping`` with the job's --timezone, --operator and --files-base-url laid over it."""
        options = staging.file_options(self, _stated_options(self), tabular=True)
        if self.unmapped_operators != "refuse":
            options["unmapped_operators"] = self.unmapped_operators
        if options:
            mapping = mapping.with_options(**options)
        return _with_operators(mapping, self.operators, self.source) if self.operators else mapping

    def use_mapping(self, mapping: Mapping) -> None:
        """Replace the mapping (e.g. a guess adjusted in a notebook); the plan is made anew."""
        self.load()
        self.mapping, self._mapping, self._plan, self.guessed = mapping, mapping, None, False

    def failures(self) -> Any:
        """Every problem of every row (validation's tidy frame, plus a messenger reader's warnings)."""
        from .validation import validate

        _, mapping = self.load()
        src = self.source_info
        if self._chunks is not None:  # a big CSV: the stored plan's (up to EXAMPLES of each code)
            return self.plan().failures
        if src is not None and src.mapping is mapping:
            return validate(src, mapping)
        return prepared_of(self).failures  # the same pass the plan and the authors table use

    def assumptions(self) -> list[tuple[str, str]]:
        """What sending would only assume (unstated time zone, user.id from names, no operators)."""
        return _assumptions(self)

    @property
    def planned_on_disk(self) -> bool:
        """A big CSV, read in chunks and planned in parts into a stored plan (bulkimport.bigfile)."""
        self.load()
        return self._chunks is not None

    @property
    def needs_chat_group(self) -> bool:
        """The input has group chats: the connector must be registered with CHAT_GROUP=Y."""
        self.load()
        return bool(getattr(self.source_info, "needs_chat_group", False))

    def plan(self) -> Plan:
        """Validate and plan the input (cached): conversations, chunks, invalid rows."""
        if self._plan is None:
            frame, mapping = self.load()
            src = self.source_info
            messenger = src is not None and src.mapping is not None and mapping is src.mapping
            if self._chunks is not None:  # a big CSV: planned on disk, in parts
                self._plan = bigfile.plan_for(self, mapping)
            else:
                self._plan = build_plan(src, mapping) if messenger else build_plan(
                    frame, mapping, prepared=prepared_of(self))
            if not messenger:  # operator rows without an employee: refused, as for an export
                from .validation import check_side_operators

                check_side_operators(self._plan.failures, mapping, self.source.name)
        return self._plan

    def estimate(self) -> Estimate:
        """The plan's ETA on this job's portal limits (uploads and finishing included)."""
        return _estimate(self)

    def resume(self) -> Resume | None:
        """What an existing journal of this plan already holds (None: a fresh import, or a journal
        of another plan, which the send refuses with the reason)."""
        return _resume(self)

    def check_journal(self) -> None:
        """Refuse, before any portal set-up, an edited input whose identity mapping (chat, customer or
        message ids) changed against the journal (JournalMismatchError naming what changed)."""
        from .after.rebind import check_identity

        assert isinstance(self.state, Path)
        check_target(self)  # another portal, line or connector: refused before the identity
        plan = self.plan()
        if is_stored(plan):
            bigfile.check_journal(self, plan)  # type: ignore[arg-type]
        else:
            check_identity(self.state, plan)

    def connect(self) -> Any:
        """Check, without changing anything, that the real portal is ready — credentials, line,
        connector — before the input is read (raises with the fixing command); once per job.
        The checklist goes to ``notify``; returns the preflight result."""
        if self._client is None:
            check_target(self)  # a journal of another target: said before any set-up advice
            client, ready = self.preflight()
            self._client, self._ready = client, ready
            self.notify(str(ready))
            _check_line_settings(self, client)
        return self._ready

    def preflight(self) -> tuple[Any, Any]:
        """A client for the real portal and its preflight checks (raises with the fix)."""
        client = conn.portal_client(self.portal, limits=self.limits)
        return client, conn.preflight(client, self.line or "", self.connector, portal=self.portal)

    # ------------------------------------------------------------------ the run
    def command(self) -> list[str]:
        """The ``bulkimport run`` command line that resumes this job (without the target)."""
        return _command_line(self)

    def run(self, confirm: Callable[[str], bool] | None = None) -> JobResult:
        """Send the plan (to the portal after its preflight, or to a sandbox started for it) and
        write the report. ``confirm(question)`` is asked before a real portal gets anything."""
        self.check_options()
        plan = self.plan()
        self.check_journal()
        staging.check_before_sending(self, plan)  # a wrong base URL, --missing-files fail: refused
        result = self._send_to_sandbox(plan) if self.sandbox else self._send_to_portal(plan, confirm)
        if result.interrupted:  # exit now: the report of every row can be written later
            self._report_later(result)
        elif not result.declined:
            self._write_report(result)
        return result

    def _report_later(self, result: JobResult) -> None:
        """After Ctrl-C: no per-row report (it would keep the user waiting at any size); say how
        ``bulkimport report`` writes it from the journal."""
        from .reporting import default_journal_report

        target = default_journal_report(result.journal)
        if is_stored(result.plan):  # the report a completed run of it writes: the same file
            target = Path(str(self.report)).with_suffix(".csv")
        result.report_later = ["bulkimport", "report", str(result.journal), "--report", str(target)]

    def _sender_options(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "limits": self.limits,
            "retry_failed": self.retry_failed,
            "retry_unknown": self.retry_unknown,
            "progress": self.progress,
            "max_in_flight": self.max_in_flight,
            "settle_unknown": self.settle_unknown,
            "update_changed": self.update_changed,
            "finish_sessions": not self.keep_open,  # in the send loop, then what is left at its end
        }

    def _send(self, plan: Plan, command: list[str], **target: Any) -> JobResult:
        """Run the sender; it saves the journal and reports Ctrl-C as ``interrupted``."""
        started = time.monotonic()
        sender = Sender(plan, **target, **self._sender_options())
        sender.lean_interrupt = True  # after Ctrl-C: exit at once, the report comes later
        bigfile.say_start(self, plan)  # a stored plan's first run copies its rows: say so
        staged = staging.prepare_sender(self, plan, sender, target["client"])
        outcome = sender.run()
        staging.add_column(staged, outcome.frame)
        summary = outcome.summary
        result = JobResult(outcome.frame, summary, plan, Path(summary.journal), command)
        result.changes, result.settled = sender.changes, sender.settled
        result.finish = sender.finished  # None with --keep-open
        for text in sender.changes.lines() if sender.changes else []:  # settling logs its own lines
            self.notify(text)
        result.interrupted = bool(summary.interrupted)
        result.wall = time.monotonic() - started
        if not result.interrupted:
            portal, line = target.get("portal"), target.get("line", "")
            result.fix = conn.fix_for(summary.stopped, portal, line, self.connector)
        self._after_send(plan, result, target["client"])
        return result

    def _after_send(self, plan: Plan, result: JobResult, client: Any) -> None:
        """Record the run's command and rows for the journal's reports; say what finishing did."""
        from .after import linemode
        from .journal import Journal

        if linemode.settings_path(self.state).is_file():
            result.import_mode = linemode.settings_path(self.state)
        if not result.journal.is_file():
            return
        journal = Journal.open(result.journal)
        try:
            journal.lock()
            remember_command(journal, result.command)  # undo reads the ids from row_ids (no pass here)
            # chat, side, time, text of every row, for the journal's own reports (after Ctrl-C only
            # the zone: the run exits at once, and the read-back ids give the chats meanwhile)
            record_rows(journal, plan, rows=not result.interrupted)
            if not result.interrupted and not is_stored(plan):  # each customer's first details
                from .after.rebind import record_customers

                record_customers(journal, plan)
            if result.finish is not None and not result.interrupted:
                self.notify(str(result.finish))
        finally:
            journal.close()

    def _send_to_portal(self, plan: Plan, confirm: Callable[[str], bool] | None) -> JobResult:
        """Preflight the real portal, ask for confirmation, send."""
        self.connect()
        client = self._client
        target = ["--portal", str(self.portal), "--line", str(self.line), "--connector", self.connector]
        command = [*self.command(), *target]
        if self.guessed and not self.accept_guess:
            question = "Send with the mapping guessed from the headers above (and what it assumes)?"
            if confirm is None:
                check = shlex.join(["bulkimport", "mapping", str(self.source), "--save", "mapping.toml"])
                raise ConfigError(
                    f"the mapping of {self.source.name} was guessed from its headers and nobody "
                    f"confirmed it: check it ({check}), then pass --mapping mapping.toml, or "
                    "--accept-guessed-mapping to send on the guess"
                )
            if not confirm(question):
                return JobResult(None, None, plan, Path(str(self.state)), command, declined=True)
        if confirm is not None:
            question = (f"Send {count_of(plan.counts['messages'], 'message')} to open line {self.line} of "
                        f"{self.portal}?")
            if not confirm(question):
                return JobResult(None, None, plan, Path(str(self.state)), command, declined=True)
        line = int(str(self.line))
        where = {"portal": self.portal, "line": line, "connector": self.connector}
        return self._send(plan, command, client=client, **where)

    def _send_to_sandbox(self, plan: Plan) -> JobResult:
        """Start a sandbox portal, set the connector up on its line, send to it, stop it (DB kept)."""
        db = Path(self.sandbox_db or conn.default_sandbox_db(self.source))
        assert isinstance(self.limits, PortalLimits) and isinstance(self.state, Path)
        resumed = self.resume()
        left = _still_to_send(self, plan) if resumed is not None else None
        to_go = plan.messages if left is None else sum(left)
        here, scale = _sandbox_pace(plan, self.limits, self.time_scale, remaining=left)
        with _start_sandbox(db, scale, self.state) as sb:
            line = parse_line(self.line) if self.line not in (None, "") else None
            target = conn.sandbox_target(sb, limits=self.limits, line=line)
            self.notify(_sandbox_line(sb.url, db, scale, self.limits, here, to_go))
            group = self.needs_chat_group
            ready = conn.setup(target.client, target.line, self.connector, chat_group=group)
            self.notify(str(ready))
            _refuse_unready_sandbox(ready)
            command = [*self.command(), "--sandbox", "--sandbox-db", str(db), "--time-scale", f"{scale:g}"]
            if self.connector != DEFAULT_CONNECTOR:
                command += ["--connector", self.connector]
            result = self._send(
                plan,
                command,
                portal=target.portal,
                line=target.line,
                connector=self.connector,
                client=target.client,
                clock=target.clock,
            )
        show = ["bulkimport", "sandbox", "--db", str(db), "--show"]
        result.note = (
            f"See what the sandbox received: {shlex.join([*show, 'counts'])} "
            f"(or --show messages, chats, duplicates, out-of-order)"
        )
        return result

    def _write_report(self, result: JobResult) -> None:
        """Write the per-row report (saying so first when it is big enough to take a while)."""
        assert isinstance(self.report, Path)
        if result.frame is None:  # a stored plan: the report comes from the journal, as CSV
            _journal_report(self, result)
            return
        if len(result.frame) >= BIG_REPORT_ROWS:  # ~20 s per 100,000 rows as xlsx
            self.notify(f"Writing the report ({count_of(len(result.frame), 'row')}) to {self.report} …")
        result.report = write_report(result.frame, self.report, plan=result.plan, summary=result.summary)
        if result.changes is not None:
            from .after.rebind import write_changes

            where = write_changes(result.changes, self.report)
            if where is not None:
                self.notify(f"What the edit changed (rows no longer in the file, changed rows): {where}")


def _still_to_send(job: ImportJob, plan: Plan) -> list[int]:
    """Messages still to send per conversation of a resumed job (as :meth:`ImportJob.resume`)."""
    from .journal import Journal

    assert isinstance(job.state, Path)
    journal = Journal.open(job.state)
    try:
        return _left(job, journal, plan)[1]
    finally:
        journal.close()


def _left(job: ImportJob, journal: Any, plan: Plan) -> tuple[int, list[int], dict[str, int]]:
    """(sent, left per conversation, left alone) of ``plan`` in ``journal`` (see _left_to_send)."""
    if is_stored(plan):
        return bigfile.left_to_send(journal, plan, job.retry_failed, job.retry_unknown)  # type: ignore[arg-type]
    return _left_to_send(journal.rows(skip_pending=True), plan, job.retry_failed, job.retry_unknown)


def _resume(job: ImportJob) -> Resume | None:
    """The body of :meth:`ImportJob.resume`."""
    assert isinstance(job.state, Path) and isinstance(job.limits, PortalLimits)
    if not job.state.is_file():
        return None
    from .journal import Journal

    plan = job.plan()
    journal = Journal.open(job.state)
    try:
        if journal.meta().get("fingerprint") != plan.fingerprint:
            return None
        sent, left, alone = _left(job, journal, plan)
        missing = int(journal.query("SELECT COUNT(*) FROM rows WHERE status = 'missing'")[0][0])
        unfinished = _unfinished(job, journal, len(plan.conversations))
    finally:
        journal.close()
    total = plan.messages
    estimate = plan.estimate(job.limits, remaining=left)
    estimate = staging.with_uploads(job, estimate, resumed=True)  # the files not on Drive yet
    if unfinished:  # the finish calls still to make (one batch request per 50 at most)
        from .after.finish import with_finishing

        estimate = with_finishing(estimate, unfinished)
    return Resume(job.state, sent, total, sum(left), sum(alone.values()), estimate, unfinished,
                  missing=missing, alone=alone)


def _journal_report(job: ImportJob, result: JobResult) -> None:
    """The per-row report of a run whose plan is on disk, from the journal, as CSV beside the
    report asked for (a per-row frame of millions of rows is what the stored plan avoids)."""
    from .reporting import write_journal_report

    assert isinstance(job.report, Path)
    target = job.report if job.report.suffix.lower() == ".csv" else job.report.with_suffix(".csv")
    if target != job.report:
        job.notify(f"The report of a file planned on disk is CSV: {target}.")
    result.report, _ = write_journal_report(result.journal, target)


def offline_problems(job: ImportJob, *, dry_run: bool = False, confirmable: bool = False) -> list[str]:
    """Everything that would stop a real-portal run and can be seen before the portal is contacted,
    each with its fix: the options (line, report, journal folder), the portal's address, the
    credentials, the input file, and a mapping that would be guessed with nobody to confirm it
    (``confirmable``: a person answers the prompt)."""
    from .portal.auth import Auth
    from .portal.urls import rest_url
    from .reporting import check_report_path

    checks: list[Callable[[], Any]] = [
        lambda: job.check_options(dry_run=dry_run) if job.sandbox_db or job.time_scale else None,
        lambda: rest_url(job.portal or "") if job.portal else job.check_options(dry_run=False),
        lambda: Auth.from_env(),
        lambda: _line_given(job),
        lambda: check_report_path(str(job.report)),
        lambda: _state_folder(job),
        lambda: _guess_unconfirmed(job, dry_run, confirmable),
        lambda: check_target(job),  # a journal of another line: not the preflight's setup advice
        lambda: job.load() if Path(job.source).is_file() else None,  # a ragged CSV before the portal
    ]
    found: list[str] = []
    for check in checks:
        try:
            check()
        except InputError as exc:
            text = " ".join(str(exc.cli or exc).split())
            if text not in found:
                found.append(text)
    return found


def check_before_portal(job: ImportJob, *, dry_run: bool = False, confirmable: bool = False) -> None:
    """Raise one ConfigError listing every :func:`offline_problems` (numbered, each with its fix),
    so that a first run against a real portal is not fixed one complaint at a time."""
    found = offline_problems(job, dry_run=dry_run, confirmable=confirmable)
    if len(found) == 1:
        raise ConfigError(found[0])
    if found:
        listed = "; ".join(f"({i}) {text.rstrip('.')}" for i, text in enumerate(found, 1))
        raise ConfigError(f"{len(found)} things to fix before anything is sent: {listed}")


def check_target(job: ImportJob) -> None:
    """Refuse a journal bound to another portal, line or connector than ``job`` before the portal
    is checked or set up (its preflight would advise a set-up of the wrong line first)."""
    from .journal import check_target as check_bound
    from .portal.urls import rest_url

    want: dict[str, Any] = {"connector": job.connector}
    if job.line not in (None, ""):
        want["line"] = parse_line(job.line)
    if job.portal and not job.sandbox:  # a sandbox's address is the journal's own port
        want["portal"] = rest_url(job.portal)
    assert isinstance(job.state, Path)
    check_bound(job.state, **want)


def _line_given(job: ImportJob) -> None:
    from .settings import ENV_LINE

    if job.line in (None, ""):
        raise ConfigError(
            f"--line is missing: pass the numeric id of the open line (Contact Center → Open Lines), "
            f"e.g. --line 1, or set {ENV_LINE}"
        )
    parse_line(job.line)


def _state_folder(job: ImportJob) -> None:
    assert isinstance(job.state, Path)
    if not job.state.parent.exists():
        raise ConfigError(
            f"--state {job.state}: folder {job.state.parent} does not exist; create it or pick another"
        )


def _guess_unconfirmed(job: ImportJob, dry_run: bool, confirmable: bool) -> None:
    """The input file is there; a spreadsheet without --mapping would be sent on a guess that nobody
    can confirm here (no terminal, or --yes) unless --accept-guessed-mapping says so."""
    from .sources import detect

    assert isinstance(job.source, Path)
    if not job.source.exists():
        raise InputError(f"{job.source}: no such file; check the path (current folder: {Path.cwd()})")
    if dry_run or job.mapping is not None or job.accept_guess or confirmable:
        return
    if detect(job.source) not in ("xlsx", "csv"):
        return  # a messenger export brings its own mapping
    check = shlex.join(["bulkimport", "mapping", str(job.source), "--save", "mapping.toml"])
    raise ConfigError(
        f"the mapping of {job.source.name} would be guessed from its headers and nobody can confirm it "
        f"here (no terminal, or --yes): check it ({check}), then pass --mapping mapping.toml, or "
        "--accept-guessed-mapping to send on the guess"
    )


def _unfinished(job: ImportJob, journal: Any, conversations: int) -> int:
    """Sessions a resumed run of ``job`` still has to finish (0 with --keep-open)."""
    from .after.finish import unfinished_conversations

    return 0 if job.keep_open else unfinished_conversations(journal, conversations)


def _check_line_settings(job: ImportJob, client: Any) -> None:
    """Warn about each line setting that would add messages, leads or work to imported chats."""
    from .after import linemode
    from .errors import PortalError

    try:
        config = linemode.line_config(client, parse_line(job.line))
    except (PortalError, ConfigError) as exc:
        job.notify(f"Could not read the line's settings (imopenlines.config.get): {exc}")
        return
    job.line_warnings = linemode.warnings(config)
    for text in job.line_warnings:
        job.notify(f"Warning: {text}")


def _refuse_unready_sandbox(ready: Any) -> None:
    """A rehearsal whose set-up failed sends nothing (before, it sent and stopped on the first
    request's NOT_ACTIVE_LINE, naming a fix for a sandbox that is gone once the run ends)."""
    if ready.ready:
        return
    first = ready.problems[0]
    hint = ""
    if first.name == "open line":  # e.g. BITRIX24_LINE of the real portal left in the environment
        hint = f" — {first.fix} ({ENV_LINE} set in the environment applies to --sandbox too)"
    raise ConfigError(f"the sandbox is not ready to receive: {first.name}: {first.detail}{hint}")


def _estimate(job: ImportJob) -> Estimate:
    """The body of :meth:`ImportJob.estimate` (a function: the class stays under 400 lines)."""
    assert isinstance(job.limits, PortalLimits)
    found = job.plan().estimate(job.limits)
    found = staging.with_uploads(job, found)  # local attachments to upload: requests and bytes
    if job.keep_open:
        return found
    from .after.finish import with_finishing

    # finishing: the commands ride in the send batches' room, or go 50 to a batch of their own
    return with_finishing(found, len(job.plan().conversations))


def prepared_of(job: ImportJob) -> Any:
    """The job's input validated once (:func:`bulkimport.validation.prepare`): the authors table,
    ``validate``'s problems and the plan share it — at a million rows each pass costs seconds."""
    if job._prepared is None:
        from .validation import prepare

        frame, mapping = job.load()
        job._prepared = prepare(frame, mapping)
    return job._prepared


def remember_command(journal: Any, command: list[str]) -> None:
    """Keep the run's resume command in the journal: ``bulkimport status`` repeats it whole (the
    options that shaped the rows — --operator, --timezone, --mapping — are not in the journal)."""
    with journal.transaction() as cur:
        cur.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('resume_command', ?)",
                    (json.dumps(command),))


def _command_line(self: ImportJob) -> list[str]:
    """The body of :meth:`ImportJob.command`: every option that shaped the job, spelled for the CLI."""
    base = ["bulkimport", "run", str(self.source)]
    if self.mapping is not None and not isinstance(self.mapping, Mapping):
        base += ["--mapping", str(self.mapping)]
    reading = (("--sheet", self.sheet), ("--encoding", self.encoding), ("--delimiter", self.delimiter))
    for option, value in reading:
        if value is not None:
            base += [option, str(value)]
    for author, employee in self.operators.items():
        base += ["--operator", f"{author}={employee}"]
    base += ["--include-groups"] if self.include_groups else []
    base += ["--include-service"] if self.include_service else []
    reading = (
        ("--timezone", self.timezone),
        ("--date-order", self.date_order),
        ("--files-base-url", self.files_base_url),
    )
    for option, value in reading:
        if value is not None:
            base += [option, str(value)]
    base += staging.command_options(self)
    base += ["--state", str(self.state), "--report", str(self.report)]
    assert isinstance(self.limits, PortalLimits)
    if self.limits.name != "standard":
        base += ["--plan", self.limits.name]
    if self.max_in_flight != 2:
        base += ["--max-in-flight", str(self.max_in_flight)]
    if self.keep_open:
        base += ["--keep-open"]
    if self.unmapped_operators != "refuse":
        base += ["--unmapped-operators", self.unmapped_operators]
    if not self.settle_unknown:
        base += ["--no-readback"]
    return base


__all__ = ["ImportJob", "JobResult", "Resume", "check_before_portal", "check_target", "offline_problems"]
