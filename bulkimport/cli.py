"""The ``bulkimport`` command line: a thin click layer over the library.

Every command parses options, calls library functions and prints; behaviour lives in the library
(read, Mapping, validate, plan, send, connector, report). Exit codes: 0 every row sent; 1 finished
with failed, invalid or unknown rows; 2 unusable input or configuration (one line on stderr, no
traceback unless ``--debug``); 130 interrupted (the journal is saved; the resume command is printed).
"""

from __future__ import annotations

import contextlib
import shlex
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from .errors import BulkImportError
from .exits import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, EXIT_ROWS
from .settings import (
    DEFAULT_CONNECTOR,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_CONNECTOR,
    ENV_LINE,
    ENV_OAUTH_URL,
    ENV_PORTAL,
    parse_line,
)
from .version import __version__


def _one_line(text: object) -> str:
    """An exception message flattened to one line."""
    return " ".join(str(text).split())


def _cli_words(exc: BaseException) -> str:
    """An error as the command line says it: its ``cli`` wording when it has one (``--delimiter ';'``
    rather than the Python API's ``delimiter=``)."""
    return str(getattr(exc, "cli", None) or exc)


class _Group(click.Group):
    """Maps errors to exit codes: usage/input/configuration/portal set-up problems → one line on
    stderr and exit 2 (a traceback only with --debug); Ctrl-C → exit 130."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in argv
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            name = exc.ctx.command_path if exc.ctx else "bulkimport"
            click.echo(f"Error: {_one_line(exc.format_message())} (see `{name} --help`)", err=True)
            code = EXIT_INPUT
        except click.ClickException as exc:
            click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
            code = exc.exit_code
        except (click.Abort, KeyboardInterrupt):
            click.echo("Interrupted.", err=True)
            code = EXIT_INTERRUPTED
        except BulkImportError as exc:  # InputError (file, column, option), FatalError (auth, setup) …
            if debug:
                raise
            click.echo(f"Error: {_one_line(_cli_words(exc))}", err=True)
            code = EXIT_INPUT
        except OSError as exc:  # e.g. a report or journal path that cannot be written
            if debug:
                raise
            click.echo(f"Error: {_one_line(exc)}", err=True)
            code = EXIT_INPUT
        except sqlite3.Error as exc:  # the journal's disk is full or failing (not an OSError)
            if debug:
                raise
            click.echo(
                f"Error: the journal (--state) could not be written or read ({_one_line(exc)}): free disk "
                "space or pass --state on another disk, then run the same command again — rows the "
                "journal recorded as sent stay sent",
                err=True,
            )
            code = EXIT_INPUT
        if not standalone_mode:
            return code
        if code == EXIT_INTERRUPTED and args is None:  # the real process, not a test runner
            _exit_interrupted()
        sys.exit(code if isinstance(code, int) else EXIT_OK)


def _exit_interrupted() -> None:
    """Exit with 130 after Ctrl-C. Not through SystemExit: an interrupt that passed through C-level
    code run while an extension module was being imported leaves CPython's "unhandled
    KeyboardInterrupt" flag set, and the interpreter would then end by re-raising SIGINT (exit -2)
    instead of exiting with 130. Everything is unwound and the journal committed by now."""
    import contextlib
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(EXIT_INTERRUPTED)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bulkimport")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Migrate chat history (xlsx, csv) into Bitrix24 Open Lines."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if debug:  # otherwise warnings reach stderr through logging's last-resort handler, bare
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(levelname)s %(message)s")


# ------------------------------------------------------------------------------------------------
# shared options and small helpers (parsing and printing only)
# ------------------------------------------------------------------------------------------------
_file_arg = click.argument("file", type=click.Path(path_type=Path))
_mapping_opt = click.option(
    "--mapping",
    "-m",
    "mapping_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Mapping file (TOML). Without it the mapping is guessed from the column headers and shown.",
)


def _sheet_opt(fn: Any) -> Any:
    """The options that say how to read FILE: --sheet (xlsx), --encoding and --delimiter (csv), and
    for any source --operator, --timezone, --date-order (WhatsApp) and --files-base-url."""
    fn = click.option(
        "--files-base-url",
        metavar="URL",
        help="Base URL under which the input's local attachments are published (the mapping's "
        "files_base_url; needed for exports that come without a mapping file).",
    )(fn)
    fn = click.option(
        "--include-service",
        is_flag=True,
        help="Messenger exports: keep service messages (calls, pins, group changes) as system notes.",
    )(fn)
    fn = click.option(
        "--include-groups",
        is_flag=True,
        help="Telegram full-account exports: import group chats too (each group is one conversation).",
    )(fn)
    fn = click.option(
        "--date-order",
        type=click.Choice(["dmy", "mdy", "ymd"]),
        help="The order of day, month and year when the dates cannot tell: WhatsApp exports, and "
        "spreadsheets (dmy = day first, mdy = month first; the mapping's dayfirst) [default: decided "
        "from the whole file].",
    )(fn)
    fn = click.option(
        "--phone-region",
        metavar="CC",
        help="Country of phones written without +country code, as an ISO 3166 two-letter code, e.g. US "
        "[default: the mapping's phone_region, else RU].",
    )(fn)
    fn = click.option(
        "--timezone",
        metavar="ZONE",
        help="Time zone of dates written without one, e.g. Europe/Berlin [default: the mapping's; for "
        "exports, this machine's zone].",
    )(fn)
    fn = click.option(
        "--operator",
        "operators",
        metavar="AUTHOR=ID",
        multiple=True,
        help="An author who is an operator, and the Bitrix24 employee id their messages are sent as "
        "(repeatable; AUTHOR is the name in the file, or a Telegram from_id).",
    )(fn)
    fn = click.option(
        "--delimiter",
        help="CSV field separator, e.g. ';' or tab [default: detected].",
    )(fn)
    fn = click.option("--encoding", help="CSV text encoding, e.g. cp1251 or utf-16 [default: detected].")(fn)
    fn = click.option(
        "--header-row",
        type=click.IntRange(min=1),
        metavar="N",
        help="The spreadsheet row that holds the column headers [default: found below any title rows].",
    )(fn)
    return click.option(
        "--sheet",
        multiple=True,
        help="Worksheet name or 0-based index (xlsx); repeat for several sheets, '*' for all [default: the "
        "first].",
    )(fn)


def _reading(reading: dict[str, Any]) -> dict[str, Any]:
    """The reading options as ImportJob arguments (``--operator A=1`` → ``operators={"A": 1}``)."""
    out = dict(reading)
    out["operators"] = dict(_operator(text) for text in reading.get("operators") or ())
    sheets = list(reading.get("sheet") or ())
    out["sheet"] = None if not sheets else sheets[0] if len(sheets) == 1 else sheets
    return out


def _operator(text: str) -> tuple[str, int]:
    """``"Anna Smirnova=12"`` → ("Anna Smirnova", 12), or a one-line error with the fix."""
    author, sep, employee = text.rpartition("=")
    if not sep or not author.strip() or not employee.strip().isdigit() or int(employee) <= 0:
        raise _config(
            f"--operator {text!r}: use AUTHOR=EMPLOYEE_ID (the employee's numeric Bitrix24 user id), "
            'e.g. --operator "Anna Smirnova=12"'
        )
    return author.strip(), int(employee)


_portal_opt = click.option(
    "--portal",
    envvar=ENV_PORTAL,
    help=f"Portal address, e.g. https://example.bitrix24.eu [env {ENV_PORTAL}].",
)
_line_opt = click.option("--line", envvar=ENV_LINE, help=f"Open line id [env {ENV_LINE}].")
_connector_opt = click.option(
    "--connector",
    envvar=ENV_CONNECTOR,
    default=DEFAULT_CONNECTOR,
    show_default=True,
    help=f"Connector id: lower-case letters, digits, underscores [env {ENV_CONNECTOR}].",
)


def _job(file: Path, mapping_path: Path | None, reading: dict[str, Any]) -> Any:
    """An ImportJob for the commands that only read FILE (validate, mapping); a big CSV is planned
    on disk for them as for run (its authors and problems counted over every row, in bounded
    memory, and the plan kept for the run)."""
    from .job import ImportJob

    return ImportJob(file, mapping=mapping_path, notify=click.echo, **_reading(reading))


def _show_mapping(job: Any) -> None:
    """Print what was read (for a messenger export: its conversations and authors with their sides)
    and the mapping; for a guess, say how to keep and edit it."""
    mapping, file = job._mapping, job.source
    src = job.source_info
    if src is not None and src.mapping is not None:
        text = src.describe()
        if not job.timezone and src.timezone:  # the machine's zone was taken: say so, as for spreadsheets
            text = text.replace(f"dates: time zone {src.timezone}", f"dates: time zone {src.timezone} (not "
                                "stated: this machine's zone; --timezone ZONE sets it)", 1)
        click.echo(text)
    else:
        _show_reading(job._frame)
    if job.guessed:
        click.echo(
            "The mapping below was guessed from the column headers; to edit it run "
            f"{shlex.join(['bulkimport', 'mapping', str(file), '--save', 'mapping.toml'])} and pass "
            "--mapping mapping.toml."
        )
    click.echo(_describe(mapping))


def _show_reading(frame: Any) -> None:
    """What reading decided on its own: encoding and delimiter, rows above the header, footers,
    formula cells without a value."""
    attrs = frame.attrs
    every, read = list(attrs.get("workbook_sheets") or []), list(attrs.get("sheets") or [])
    if len(every) > len(read):
        others = ", ".join(repr(n) for n in every if n not in read)
        click.echo(
            f"Note: the workbook has {len(every)} sheets; read {', '.join(repr(n) for n in read)}, not "
            f"{others} (--sheet NAME for another, repeated for several, --sheet '*' for all)."
        )
    if attrs.get("encoding") or attrs.get("delimiter"):
        names = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}
        sep = names.get(attrs.get("delimiter"), attrs.get("delimiter"))
        click.echo(f"Read as {attrs.get('encoding') or '?'} text, fields separated by {sep!r}.")
    for key, what in (
        ("skipped_above_header", "rows above the header, not read as messages"),
        ("footer_rows", "rows below the data (totals, notes), not read as messages"),
        ("formula_cells", "formula cells without a computed value (formula text kept)"),
    ):
        found = attrs.get(key)
        if found:
            items = [_left_out(x) for x in found]
            shown = ", ".join(items[:8])
            shown += f" … ({len(items)} in all)" if len(items) > 8 else ""
            click.echo(f"Note: {what}: {shown}.")


def _left_out(entry: Any) -> str:
    """A row reading left out (``{"row": 1, "text": "Report", "sheet": "S"}``) as ``row 1 'Report'``;
    a formula cell's row as its number."""
    if not isinstance(entry, dict):
        return str(entry)
    where = f"{entry['sheet']}!" if entry.get("sheet") else ""
    text = str(entry.get("text", ""))
    text = text if len(text) <= 60 else text[:59] + "…"
    return f"row {where}{entry.get('row')} {text!r}"


def _show_assumptions(job: Any) -> None:
    """The columns left unused, the authors with their sides, and what the mapping only assumes."""
    frame, mapping = job.load()
    tabular = job.source_info is None or job.source_info.mapping is None
    unused = mapping.unused_columns(frame) if tabular else []
    if unused:
        click.echo(f"Columns not used: {', '.join(repr(c) for c in unused)}.")
    if tabular:
        from .bigfile import authors_of
        from .job import prepared_of
        from .validation import authors

        table = authors_of(job.plan()) if job.planned_on_disk else None  # added up from its parts
        if table is None:
            table = authors(frame, mapping, prepared=prepared_of(job))
        for line in _unmatched_operators(mapping, table):
            click.echo(line)
        if len(table):
            click.echo(f"Authors ({len(table)}): messages, conversations and side:")
            wanted = ("author", "messages", "conversations", "side", "likely_operator")
            cols = [c for c in wanted if c in table]
            _echo_table(table[cols], 15)
    for code, text in job.assumptions():
        click.echo(f"Assumed ({code}): {text}")


def _validate_on_disk(job: Any, problems: Path | None) -> None:
    """``validate`` of a big CSV: its stored plan's exact counts, examples of each problem, and
    every problem streamed to ``--problems``; exits."""
    from .reporting import write_problems_stream

    plan = job.plan()
    c = plan.counts
    click.echo(f"{_n(c['rows'], 'row')}: {c['valid']} valid, {c['invalid']} invalid.")
    _show_failures(plan.failures, plan=plan)
    if problems is not None:
        store = plan.store
        where = write_problems_stream(store.every_failure(), store.failure_count(), problems, plan.mapping)
        click.echo(f"Every problem, row by row ({store.failure_count()}): {where}")
    sys.exit(EXIT_ROWS if c["invalid"] else EXIT_OK)


def _unmatched_operators(mapping: Any, table: Any) -> list[str]:
    """A warning per --operator / [operators] name that matches no author value of the file,
    naming the closest author values (run, validate and mapping say it alike)."""
    import difflib

    values = [str(a) for a in table["author"]] if len(table) else []
    known = {v.strip().casefold() for v in values}
    out = []
    for name in mapping.operators:
        if not known or str(name).strip().casefold() in known:
            continue
        close = difflib.get_close_matches(str(name), values, n=3, cutoff=0.5)
        if not close:
            folded = {v.casefold(): v for v in values}
            near_folded = difflib.get_close_matches(str(name).casefold(), folded, n=3, cutoff=0.5)
            close = [folded[c] for c in near_folded]
        shown = close or values[:5]
        near = f"the closest author values: {', '.join(repr(c) for c in shown)}" if close else (
            f"the author values: {', '.join(repr(c) for c in shown)}{' …' if len(values) > 5 else ''}")
        out.append(f"Warning: the operator {name!r} matches no author in the file: check the spelling "
                   f"({near}); an author not in the operators is sent as a customer")
    return out


def _describe(mapping: Any) -> str:
    describe = getattr(mapping, "describe", None)
    return str(describe()) if callable(describe) else str(mapping)


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line for line in str(text).splitlines())


def _echo_table(table: Any, max_rows: int = 20) -> None:
    """Print a small DataFrame without its index, cut to ``max_rows`` with a note."""
    if table is None or len(table) == 0:
        return
    shown = table.head(max_rows)
    click.echo(_indent(shown.to_string(index=False, max_colwidth=70)))
    if len(table) > max_rows:
        click.echo(f"  … and {len(table) - max_rows} more")


def _show_failures(failures: Any, limit: int = 10, plan: Any = None) -> None:
    """Invalid rows by code (with hints), then the first few problems row by row (``plan``: a plan
    stored on disk lists examples of each code, and knows the exact counts)."""
    from .reporting import failure_counts

    store = getattr(plan, "store", None)
    counts = failure_counts(failures, store.code_counts() if store is not None else None)
    if counts.empty:
        click.echo("No invalid rows.")
        return
    from .codes import CLI_HINTS

    click.echo("Problems by code:")
    for r in counts.itertuples():
        click.echo(f"  {r.code} ({r.level}) ×{r.rows}: {r.message} — {CLI_HINTS.get(r.code, r.hint)}")
    dupes = failures[failures["code"] == "duplicate-row"]
    if len(dupes):  # the earlier row is the value: say it here, not only in --problems
        pairs = [f"{r.row} ({r.value})" for r in dupes.head(limit).itertuples()]
        click.echo(f"Duplicate rows: {', '.join(pairs)}{' …' if len(dupes) > limit else ''}.")
    errors = failures[failures["level"] == "error"]
    if len(errors):
        of = plan.counts["invalid"] if store is not None else errors["row"].nunique()
        click.echo(f"First invalid rows (of {of}):")
        table = errors[["row", "field", "code", "value"]].astype(object)
        _echo_table(table.where(table.notna(), ""), limit)


# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------
@main.command()
@_file_arg
@_mapping_opt
@_sheet_opt
@click.option(
    "--problems",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write every invalid or warned row (row, code, column, value, hint) to this .xlsx or .csv.",
)
def validate(file: Path, mapping_path: Path | None, problems: Path | None, **reading: Any) -> None:
    """Check FILE against the mapping and list invalid rows by code; nothing is sent."""
    from .reporting import check_report_path, write_problems

    if problems is not None:
        check_report_path(problems, option="--problems")
    job = _job(file, mapping_path, reading)
    frame, mapping = job.load()
    _show_mapping(job)
    _show_assumptions(job)
    if job.planned_on_disk:
        _validate_on_disk(job, problems)
    failures = job.failures()
    errors = failures[failures["level"] == "error"]
    invalid = errors["row"].nunique()
    click.echo(f"{_n(len(frame), 'row')}: {len(frame) - invalid} valid, {invalid} invalid.")
    _show_failures(failures)
    if problems is not None:
        write_problems(failures, problems, mapping)
        click.echo(f"Every problem, row by row ({len(failures)}): {problems}")
    sys.exit(EXIT_ROWS if invalid else EXIT_OK)


@main.command()
@_file_arg
@_mapping_opt
@_sheet_opt
@click.option(
    "--save",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the (guessed or loaded) mapping to this TOML file so you can edit it; with an author "
    "column, an [operators] skeleton of the authors found.",
)
@click.option("--force", is_flag=True, help="With --save: overwrite an existing file without asking.")
def mapping(file: Path, mapping_path: Path | None, save: Path | None, force: bool, **reading: Any) -> None:
    """Show the mapping of FILE's columns to message fields (guessed unless --mapping), optionally save it."""
    if save is not None and save.exists() and not force and not _interactive():
        raise _config(f"--save {save}: the file exists; pass --force to overwrite it, or another path")
    job = _job(file, mapping_path, reading)
    frame, found = job.load(strict=False)
    _show_mapping(job)
    if job.source_info is None or job.source_info.mapping is None:
        from .bigfile import authors_of
        from .validation import authors

        table = authors_of(job.plan()) if job.planned_on_disk and not found.missing_required() else None
        for line in _unmatched_operators(found, authors(frame, found) if table is None else table):
            click.echo(line)
        from .validation import phone_region_assumption

        for code, text in phone_region_assumption(frame, found):  # the time zone is in the table above
            click.echo(f"Assumed ({code}): {text}")
    missing = list(found.missing_required())
    src = job.source_info
    problems = list(src.problems) if src is not None and src.mapping is not None else []
    if missing:
        unused = found.unused_columns(frame)
        if unused:
            click.echo(f"Columns not used: {', '.join(repr(c) for c in unused)}.")
        target = shlex.quote(str(save)) if save is not None else "mapping.toml"
        how = "edit" if save is not None else f"write it with --save {target}, edit"
        problems.append(
            f"{file.name}: the mapping cannot be used: no column for the required field(s) "
            f"{', '.join(missing)}; {how} it ([columns] \"{missing[0].split(' or ')[0]}\" = \"<column>\") "
            f"and pass --mapping {target}"
        )
    elif not problems:
        _show_assumptions(job)
    if save is not None:
        _save_mapping(job, found, save, force)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s), listed above)" if len(problems) > 1 else ""
        raise _config(problems[0] + more)


@main.command()
@_file_arg
@_mapping_opt
@_sheet_opt
@_portal_opt
@_line_opt
@_connector_opt
@click.option(
    "--state",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Journal file (SQLite) that makes the run resumable [default: <FILE>.bulkimport.db].",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Report file, .xlsx or .csv [default: <FILE>.report.xlsx].",
)
@click.option("--sandbox", is_flag=True, help="Import into a local sandbox portal started for this run.")
@click.option(
    "--sandbox-db",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --sandbox: where the sandbox keeps what it received [default: sandbox-<FILE stem>.db].",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=1.0),
    help="With --sandbox: how much faster than real time the sandbox runs [default: fitted to ~10 s].",
)
@click.option(
    "--dry-run", is_flag=True, help="Do everything but send: plan, invalid rows, request count, ETA."
)
@click.option("--retry-failed", is_flag=True, help="Send rows the portal rejected in an earlier run again.")
@click.option(
    "--retry-unknown",
    is_flag=True,
    help="Send rows whose outcome is unknown again (check the open line first: they may be there).",
)
@click.option(
    "--plan",
    "plan_name",
    type=click.Choice(["standard", "enterprise"], case_sensitive=False),
    default="standard",
    show_default=True,
    help="The portal's plan, which sets its request limits (pace and ETA).",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(1, 10),
    default=2,
    show_default=True,
    help="Requests in flight at once, for conversations sharing no chat or customer (1 = one after "
    "another); more only helps when the request round trip, not the portal's limits, sets the pace.",
)
@click.option(
    "--no-progress", is_flag=True, help="No progress bar (there is none when stderr is not a terminal)."
)
@click.option(
    "--no-readback", is_flag=True,
    help="Do not read the chats of unknown rows back before sending: leave them unknown, for "
    "`bulkimport resolve`.",
)
@click.option(
    "--update-changed", is_flag=True,
    help="Sent rows whose text or files changed in the file since: update them on the portal "
    "(imconnector.update.messages) instead of only reporting them (changed-after-sent).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation before sending.")
@click.option(
    "--upload-files",
    is_flag=True,
    help="Upload the input's local attachments to the portal's Drive (the app's storage; needs an "
    "administrator and the disk scope) and send their download links (the mapping's "
    'files_upload = "disk").',
)
@click.option(
    "--missing-files",
    type=click.Choice(["note", "skip", "fail"]),
    help="A local attachment that is missing: send the text with a note, let the row wait (pending), "
    "or make the row invalid [default: the mapping's missing_files, note].",
)
@click.option(
    "--max-file-size",
    "max_file_mb",
    type=click.FloatRange(min=0.001),
    metavar="MB",
    help="Local attachments above this size are reported, not sent [default: 100; the portal's own "
    "per-file limit is not documented].",
)
@click.option(
    "--accept-guessed-mapping",
    is_flag=True,
    help="Send to a real portal on a mapping guessed from the headers without asking (for scripts; "
    "check the guess with `bulkimport mapping FILE` first). A --sandbox rehearsal never needs it.",
)
@click.option(
    "--keep-open", is_flag=True,
    help="Leave the imported sessions open (default: finish each conversation's session after its "
    "last message; `bulkimport finish` does it later).",
)
@click.option(
    "--unmapped-operators", type=click.Choice(["refuse", "system"]), default="refuse", show_default=True,
    help="Operator-side authors that map to no employee: refuse the run (listing them), or send "
    "their messages as the portal's system user (message.user_id = 0).",
)
@click.pass_context
def run(
    ctx: click.Context,
    file: Path,
    mapping_path: Path | None,
    portal: str | None,
    line: str | None,
    connector: str,
    state: Path | None,
    report_path: Path | None,
    sandbox: bool,
    sandbox_db: Path | None,
    time_scale: float | None,
    dry_run: bool,
    retry_failed: bool,
    retry_unknown: bool,
    plan_name: str,
    max_in_flight: int,
    no_progress: bool,
    no_readback: bool,
    update_changed: bool,
    yes: bool,
    accept_guessed_mapping: bool,
    keep_open: bool,
    unmapped_operators: str,
    **reading: Any,
) -> None:
    """Import FILE (xlsx, csv, a Telegram JSON export or a WhatsApp chat export): read, map,
    validate, plan, check the portal, send, report."""
    from .job import ImportJob

    job = ImportJob(
        file,
        mapping=mapping_path,
        portal=portal,
        line=line,
        connector=connector,
        state=state,
        report=report_path,
        sandbox=sandbox,
        sandbox_db=sandbox_db,
        time_scale=time_scale,
        limits=plan_name,
        retry_failed=retry_failed,
        retry_unknown=retry_unknown,
        max_in_flight=max_in_flight,
        settle_unknown=not no_readback,
        update_changed=update_changed,
        progress=False if no_progress else None,  # None: a bar when stderr is a terminal
        notify=click.echo,
        accept_guess=accept_guessed_mapping,
        keep_open=keep_open,
        unmapped_operators=unmapped_operators,
        **_reading(reading),
    )
    if not sandbox and (portal or not dry_run):  # a real portal: everything seen offline, at once
        from .job import check_before_portal

        check_before_portal(job, dry_run=dry_run, confirmable=not yes and _interactive())
    job.check_options(dry_run=dry_run)
    if portal and not sandbox:  # credentials, line and connector are checked before the file is read
        job.connect()
    plan = _load_and_show(job)
    _show_before_sending(job)
    if dry_run:
        from .reporting import preview_table

        click.echo("First messages in send order:")
        _echo_table(preview_table(plan, job.load()[0], 5), 5)
        if not portal and not sandbox:
            click.echo("Planned offline: no --portal given, so no portal was checked.")
        click.echo("Dry run: nothing was sent.")
        sys.exit(EXIT_ROWS if plan.counts["invalid"] else EXIT_OK)
    confirm = None if yes or not _interactive() else (lambda q: click.confirm(q, default=False))
    result = job.run(confirm=confirm)
    if result.declined:
        click.echo("Nothing was sent.")
        sys.exit(EXIT_ROWS)
    _print_result(result)
    ctx.exit(result.exit_code)


def _show_before_sending(job: Any) -> None:
    """What a group export needs on a real portal, and what an existing journal already holds."""
    if job.needs_chat_group and not job.sandbox:
        fix = shlex.join(["bulkimport", "setup", "--line", str(job.line), "--connector", job.connector])
        click.echo(
            "Note: this export has group chats; the connector must be registered with CHAT_GROUP=Y or the "
            f"portal splits each group by user: run {fix} --chat-group once before sending (bulkimport "
            "cannot read the flag back from the portal)."
        )
    resumed = job.resume()
    if resumed is not None:
        click.echo(str(resumed) + ".")


def _load_and_show(job: Any) -> Any:
    """Read and map the job's input, print the mapping, the plan, its invalid rows and the ETA."""
    job.load()
    _show_mapping(job)
    _show_assumptions(job)
    plan = job.plan()
    c = plan.counts
    click.echo(
        f"Plan: {_n(c['rows'], 'row')} → {c['valid']} valid in {_n(c['conversations'], 'conversation')} "
        f"({_n(c['messages'], 'message')}, {_n(c.get('files', 0), 'file')}), {c['invalid']} invalid, "
        f"{_n(c.get('warnings', 0), 'warning')}."
    )
    if len(plan.failures):
        _show_failures(plan.failures, plan=plan)
    from .staging import plan_line

    attachments = plan_line(job)
    if attachments:
        click.echo(attachments + ".")
    label = "Estimate for a real portal" if job.sandbox else "Estimate"  # the sandbox says its own below
    click.echo(f"{label}: {job.estimate()}.")
    return plan


def _interactive() -> bool:
    """True when a person can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()


def _print_result(result: Any) -> None:
    """The summary, where the report and journal are, and the next command."""
    click.echo("")
    for text in result.summary_lines():
        click.echo(text)
    click.echo(f"Report: {result.report or 'not written (see below)'}")
    click.echo(f"Journal: {result.journal}")
    if result.note:
        click.echo(result.note)
    for text in result.next_steps():
        click.echo(text)
    if result.fix_message():
        click.echo(result.fix_message(), err=True)


@main.command()
@_portal_opt
@_line_opt
@_connector_opt
@click.option("--name", default=None, help="Connector name shown in Contact Center.")
@click.option(
    "--chat-group",
    is_flag=True,
    help="Register the connector with CHAT_GROUP=Y, so that messages of several users share one chat "
    "(needed for group chats of messenger exports; without it the portal splits them by user).",
)
@click.option("--import-mode", is_flag=True,
              help="Switch the line's message-producing settings off for the import (welcome message, "
              "rating request, auto-close/no-answer texts), keeping their values to restore.")
@click.option("--restore", is_flag=True, help="Put back the line settings an --import-mode saved.")
@click.option("--state", type=click.Path(path_type=Path, dir_okay=False),
              help="With --import-mode/--restore: the import's journal; the settings are kept beside it "
              "as <STATE>.line-settings.json.")
@click.option("--settings-file", type=click.Path(path_type=Path, dir_okay=False),
              help="With --import-mode/--restore: where the line's previous settings are kept instead.")
@click.option(
    "--check-readback", is_flag=True,
    help="Also send one probe message to a test chat of the line and check that reading it back "
    "finds the id it was sent with (CONNECTOR_MID): what verify and settling rely on.",
)
def setup(
    portal: str | None, line: str | None, connector: str, name: str | None, chat_group: bool,
    import_mode: bool, restore: bool, state: Path | None, settings_file: Path | None, check_readback: bool,
) -> None:
    """Register the connector, activate it on the open line and check it is ready (or switch the
    line into import mode and back)."""
    from . import connector as conn

    line_id = parse_line(line)
    connector = conn.check_connector_id(connector)
    client = conn.portal_client(portal)
    if import_mode or restore:
        _line_mode(client, line_id, portal, import_mode, restore, state, settings_file)
        return
    result = conn.setup(
        client, line_id, connector, portal=portal, name=name or conn.DEFAULT_NAME, chat_group=chat_group
    )
    click.echo(str(result))
    readable = True
    if check_readback and result.ready:
        from .after.probe import check_readback as probe

        found = probe(client, connector, line_id)
        click.echo(str(found))
        readable = found.carries_id
    sys.exit(EXIT_OK if result.ready and readable else EXIT_ROWS)


@main.command()
@_portal_opt
@click.option(
    "--client-id", envvar=ENV_CLIENT_ID, help=f"Local application's client id [env {ENV_CLIENT_ID}]."
)
@click.option(
    "--client-secret",
    envvar=ENV_CLIENT_SECRET,
    help=f"Local application's client secret [env {ENV_CLIENT_SECRET}].",
)
@click.option(
    "--oauth-url", envvar=ENV_OAUTH_URL, help=f"OAuth server address [env {ENV_OAUTH_URL}]."
)
@click.option("--code", help="The authorisation code (otherwise you are asked for it).")
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to store the tokens [default: $BITRIX24_TOKEN_FILE, else "
    "$XDG_CONFIG_HOME/bulkimport/tokens.json, i.e. ~/.config/bulkimport/tokens.json].",
)
def auth(
    portal: str | None,
    client_id: str | None,
    client_secret: str | None,
    oauth_url: str | None,
    code: str | None,
    token_file: Path | None,
) -> None:
    """Authorise bulkimport as the portal's local application and store the tokens."""
    if not portal:
        raise _config(
            f"--portal is required (or set {ENV_PORTAL}), e.g. --portal https://example.bitrix24.eu"
        )
    if not client_id or not client_secret:
        raise _config(
            f"--client-id and --client-secret are required (or {ENV_CLIENT_ID}/{ENV_CLIENT_SECRET}): "
            "copy them from the local application's page on the portal"
        )
    from .portal import auth as oauth
    from .portal.tokens import default_token_file
    from .portal.urls import DEFAULT_OAUTH_URL

    if code is None:
        click.echo("1. Open this address as a portal administrator and allow the application:")
        click.echo(f"   {oauth.authorize_url(portal, client_id)}")
        click.echo(
            "2. Paste the code the portal shows, or the whole address the browser went on to (?code=…)."
        )
        click.echo("   The code is valid for 30 seconds.")
        try:
            code = click.prompt("Code", default="", show_default=False)
        except click.Abort:
            if sys.stdin.isatty():
                raise  # Ctrl-C at the prompt
            raise _config("no authorisation code on standard input: run `bulkimport auth` on a terminal, "
                          "or pass the code with --code") from None
    path = token_file or default_token_file()
    oauth.exchange_code(
        _code_from(code), client_id, client_secret, oauth_url or DEFAULT_OAUTH_URL, path
    )
    click.echo(f"Tokens saved to {path} (readable only by you).")
    click.echo(f"Next: {shlex.join(['bulkimport', 'setup', '--portal', portal, '--line', '<open line id>'])}")


def _code_from(text: str) -> str:
    """The authorisation code from what the user pasted: the code itself or the whole redirect address."""
    from urllib.parse import parse_qs, urlsplit

    text = text.strip()
    if "code=" in text:
        found = parse_qs(urlsplit(text).query or text.split("?", 1)[-1]).get("code")
        if found:
            return found[0]
    if not text:
        raise _config("--code is empty: paste the code from the address the portal redirected to")
    return text


def _save_mapping(job: Any, found: Any, save: Path, force: bool) -> None:
    """Write the mapping (with an [operators] skeleton); an existing file is overwritten only when
    the user says so (asked on a terminal, --force in scripts)."""
    if save.exists() and not force:
        if not _interactive():
            raise _config(f"--save {save}: the file exists; pass --force to overwrite it, or another path")
        if not click.confirm(f"{save} exists. Overwrite it?", default=False):
            click.echo("Nothing was written.")
            return
    from .validation import authors

    table = authors(*job.load()) if job.source_info is None or job.source_info.mapping is None else None
    if table is not None and job.planned_on_disk and not found.missing_required():
        from .bigfile import authors_of

        table = authors_of(job.plan())  # a big CSV: every row's authors, added up from its parts
    found.save(save, authors=table if table is not None and len(table) else None)
    click.echo(f"Saved to {save}; edit it and pass --mapping {shlex.quote(str(save))}.")
    if table is not None and bool(table.get("likely_operator", False).any()):
        click.echo("Its [operators] lists the likely operators with id 0: put each one's employee id in.")


@main.command()
@click.argument("state", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--rows",
    "rows_of",
    metavar="STATUSES",
    help="List the rows of these statuses (unknown, failed, invalid, pending, sent; comma-separated): "
    "row, status, code, chat, time and a text excerpt.",
)
def status(state: Path | None, rows_of: str | None) -> None:
    """Show what a journal holds: rows per status, last activity, how to resume."""
    path = state or _find_journal()
    if not path.is_file():
        raise _config(
            f"{path}: no such journal; pass the --state file of a run (default <FILE>.bulkimport.db)"
        )
    from .journal import Journal
    from .reporting import journal_lines, status_rows

    journal = Journal.open(path)
    try:
        summary = journal.summary()
        listed = status_rows(journal, rows_of.split(",")) if rows_of is not None else None
    finally:
        journal.close()
    for text in journal_lines(summary, path):
        if text.startswith("Requests made: "):  # the journal records the send requests only
            text = (f"Send requests made: {summary.get('requests')} (imconnector.send.messages; "
                    "--update-changed updates, finishing and read-back calls are not counted)")
        click.echo(text)
    if listed is not None:
        click.echo(f"Rows {rows_of} ({len(listed)}):" if len(listed) else f"No rows {rows_of}.")
        _echo_table(listed.astype(object).where(listed.notna(), ""), 200)


@main.command()
@click.argument("state", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--report",
    "report_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="CSV file to write [default: <STATE without .db>.report.csv].",
)
def report(state: Path | None, report_path: Path | None) -> None:
    """Write the per-row report of a journal as CSV, from the journal alone.

    One line per row: row number, conversation and position, status, code, message, attempts,
    the portal's ids, when it was sent, and a hint. Streamed in constant memory at any size (an
    interrupted run skips its report to exit at once; this writes it). Join it to the input file
    by the row number.
    """
    from .reporting import write_journal_report

    path = state or _find_journal()
    target, rows = write_journal_report(path, report_path)
    click.echo(f"Report: {target} ({_n(rows, 'row')})")


@main.command()
@click.argument("state", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--arrived", "arrived", flag_value=True, default=None,
              help="The messages ARE in the open line: mark the rows sent, never re-send them.")
@click.option("--not-arrived", "arrived", flag_value=False,
              help="The messages are NOT in the open line: the next run sends them.")
@click.option("--rows", "rows_spec", metavar="LIST",
              help="Only these row numbers, e.g. 12,40-45 (default: every unknown row).")
def resolve(state: Path | None, arrived: bool | None, rows_spec: str | None) -> None:
    """Settle rows whose outcome is unknown, after you checked the open line.

    A request cut off after it was sent leaves its rows `unknown`: bulkimport cannot tell whether
    the portal stored them, so it never re-sends them by itself. Look for those messages in the
    open line, then say what you found; the next `bulkimport run` continues their conversations.
    """
    if arrived is None:
        raise click.UsageError("say what you found: --arrived or --not-arrived")
    path = state or _find_journal()
    if not path.is_file():
        raise _config(
            f"{path}: no such journal; pass the --state file of a run (default <FILE>.bulkimport.db)"
        )
    rows = _parse_rows(rows_spec) if rows_spec is not None else None
    from .journal import Journal
    from .reporting import journal_lines

    journal = Journal.open(path)
    try:
        changed = journal.resolve_unknown(arrived, rows)
        summary = journal.summary()
    finally:
        journal.close()
    what = "sent (confirmed in the open line)" if arrived else "pending (the next run sends them)"
    click.echo(f"{changed} unknown row{'s' if changed != 1 else ''} marked {what}.")
    for text in journal_lines(summary, path):
        click.echo(text)


def _line_mode(
    client: Any, line: int, portal: str | None, import_mode: bool, restore: bool,
    state: Path | None, settings_file: Path | None,
) -> None:
    """``setup --import-mode`` / ``--restore``."""
    from .after import linemode

    if import_mode and restore:
        raise click.UsageError("give --import-mode or --restore, not both")
    path = linemode.settings_path(state, settings_file)
    if import_mode:
        changes = linemode.enter_import_mode(client, line, path, portal=portal)
        what = ", ".join(f"{k}={v}" for k, v in changes.items()) or "nothing (already quiet)"
        click.echo(f"Line {line} in import mode: set {what}; previous values kept in {path}.")
        restore = shlex.quote(str(path))
        click.echo(f"When the import is done: bulkimport setup --restore --settings-file {restore}")
        return
    previous = linemode.restore(client, line, path)
    what = ", ".join(f"{k}={v}" for k, v in previous.items()) or "nothing to put back"
    click.echo(f"Line {line} restored: {what}.")


_SANDBOX_DB_HELP = ("A --sandbox import: the sandbox database it kept [default: found beside the input "
                    "when the journal was written against the embedded sandbox].")


_NO_JOURNAL = "{path}: no such journal; pass the --state file of a run (default <FILE>.bulkimport.db)"


@main.command()
@click.argument("state", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--sandbox-db", type=click.Path(path_type=Path, dir_okay=False), help=_SANDBOX_DB_HELP)
def finish(state: Path | None, sandbox_db: Path | None) -> None:
    """Finish the open-line sessions of a journal's completed conversations not finished yet."""
    from .after.finish import finish_sessions
    from .journal import Journal

    path = state or _find_journal()
    if not path.is_file():
        raise _config(_NO_JOURNAL.format(path=path))
    journal = Journal.open(path)
    try:
        journal.lock()
        with _verify_target(journal, None, sandbox_db, None) as (client, _):
            result = finish_sessions(client, journal)
    finally:
        journal.close()
    for text in result.lines():
        click.echo(text)
    sys.exit(EXIT_INTERRUPTED if result.interrupted else EXIT_OK if result.complete else EXIT_ROWS)


@main.command()
@click.argument("state", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--portal", help="Portal address (default: the one the journal is bound to).")
@click.option("--sandbox-db", type=click.Path(path_type=Path, dir_okay=False), help=_SANDBOX_DB_HELP)
@click.option("--chats", metavar="LIST", help="Only these chat ids (comma-separated), as in the input.")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the comparison to this .csv or .xlsx file.")
@click.option("--plan", "plan_name", default="standard", show_default=True,
              help="The portal's plan (standard|enterprise): the pace of the read-back calls.")
def verify(state: Path | None, portal: str | None, sandbox_db: Path | None, chats: str | None,
           report_path: Path | None, plan_name: str) -> None:
    """Read every conversation back and compare it with the journal; mark what is missing.

    Settles unknown rows first (found on the portal → sent; not there → sent again by the next
    run). Sent rows the portal does not hold are marked missing: the next `bulkimport run` sends
    them again, after newer messages of their chats. Exit 0 when everything sent is on the portal.
    """
    from .after.verify import estimate, write_comparison
    from .after.verify import verify as verify_journal
    from .journal import Journal
    from .limits import preset

    path = state or _find_journal()
    if not path.is_file():
        raise _config(
            f"{path}: no such journal; pass the --state file of a run (default <FILE>.bulkimport.db)"
        )
    if report_path is not None:
        from .reporting import check_report_path

        check_report_path(str(report_path))
    limits = preset(plan_name)
    wanted = [c.strip() for c in chats.split(",") if c.strip()] if chats else None
    journal = Journal.open(path)
    try:
        _check_chats(journal, wanted)
        calls, seconds = estimate(journal, wanted, limits)
        click.echo(f"Verify reads the chats back in about {_n(calls, 'call')}; about {seconds:.0f} s on "
                   f"the {limits.name} plan (a batch per 25 chats, one call per further 50 messages of a "
                   "chat; a finished chat's sessions one call each, 50 to a batch request).")
        with _verify_target(journal, portal, sandbox_db, limits) as (client, clock):
            result = verify_journal(journal, client, chats=wanted, clock=clock, cap=limits.request_timeout,
                                    notify=lambda t: click.echo(t, err=True))
    finally:
        journal.close()
    for text in result.lines():
        click.echo(text)
    if report_path is not None:
        click.echo(f"Comparison written to {write_comparison(result, report_path)}")
    sys.exit(result.exit_code)


def _n(count: int, noun: str, plural: str | None = None) -> str:
    """``"1 call"``, ``"4 calls"``: a count with its noun in the right number (codes.count_of)."""
    from .codes import count_of

    return count_of(count, noun, plural)


def _check_chats(journal: Any, wanted: list[str] | None) -> None:
    """``--chats``: every chat id must be one the journal knows (a typo would silently select
    nothing); a one-line error listing a few known ones."""
    import sqlite3

    if not wanted:
        return
    known: set[str] = set()
    for table in ("row_ids", "external_ids"):
        try:
            known |= {str(r[0]) for r in journal.query(f"SELECT DISTINCT chat FROM {table}")}  # noqa: S608
        except sqlite3.Error:  # a journal written before the table existed
            continue
    unknown = [c for c in wanted if c not in known]
    if known and unknown:
        some = ", ".join(sorted(known, key=lambda c: (len(c), c))[:5])
        raise _config(
            f"--chats: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a chat id of "
            f"journal {journal.path.name} (it knows {_n(len(known), 'chat')}: {some}"
            f"{' …' if len(known) > 5 else ''}); use chat.id as in the input"
        )


@contextlib.contextmanager
def _verify_target(journal: Any, portal: str | None, sandbox_db: Path | None, limits: Any) -> Iterator[Any]:
    """(client, clock) for the journal's portal, or for the sandbox kept in ``sandbox_db`` — found
    by itself for a journal of ``run --sandbox`` whose sandbox database is still there."""
    from . import connector as conn

    if sandbox_db is None and portal is None:
        sandbox_db = _sandbox_db_of(journal)
    if sandbox_db is None:
        client = _portal_client(journal, portal, limits)
        yield client, client.clock
        return
    from .sandbox import Sandbox

    if not sandbox_db.is_file():
        raise _config(f"--sandbox-db {sandbox_db}: no such file; pass the sandbox database of the run")
    # 100× real time: the sandbox's simulated server time per call would otherwise be slept for real
    # (the run that wrote the journal, and its sandbox, are gone: nothing is still in flight)
    with Sandbox(db=sandbox_db, port=conn.sandbox_port_for(journal.path), time_scale=100.0) as sb:
        target = conn.sandbox_target(sb, limits=limits)
        yield target.client, target.clock

def _sandbox_db_of(journal: Any) -> Path | None:
    """The sandbox database of a ``run --sandbox`` journal, said in one line, or None."""
    from .reporting import sandbox_db_of

    db = sandbox_db_of(journal.summary(), journal.path)
    if db is not None:
        click.echo(f"This journal was written against the embedded sandbox: using its database {db} "
                   "(--sandbox-db).")
    return db


def _portal_client(journal: Any, portal: str | None, limits: Any) -> Any:
    """A client for ``portal`` or the journal's; a loopback portal without credentials was most
    likely a ``run --sandbox`` whose database moved: the error says to pass --sandbox-db."""
    from . import connector as conn
    from .errors import ConfigError
    from .reporting import _is_loopback

    address = portal or journal.meta().get("portal")
    try:
        return conn.portal_client(address, limits=limits)
    except ConfigError as exc:
        if portal is not None or not _is_loopback(str(address or "")):
            raise
        raise _config(
            f"this journal was written against a portal on this machine ({address}), the embedded "
            f"sandbox of `bulkimport run FILE --sandbox` most likely, and its database is not beside "
            f"the input: pass --sandbox-db PATH (the sandbox database of the run); or, for a portal "
            f"of your own on this machine: {exc}"
        ) from None


@main.command()
@click.argument("state", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--chats", metavar="LIST", help="Only these conversations (chat.id as sent), comma-separated.")
@click.option("--sandbox-db", type=click.Path(path_type=Path, dir_okay=False), help=_SANDBOX_DB_HELP)
def undo(state: Path | None, yes: bool, dry_run: bool, chats: str | None, sandbox_db: Path | None) -> None:
    """Delete from the open line every message the journal says was sent (imconnector.delete.messages)."""
    from .after import undo as undoing

    path = state or _find_journal()
    if not path.is_file():
        raise _config(_NO_JOURNAL.format(path=path))
    wanted = [c.strip() for c in chats.split(",") if c.strip()] if chats is not None else None
    from .journal import Journal

    journal = Journal.open(path)
    try:
        journal.lock()
        _check_chats(journal, wanted)
        todo = undoing.undo_plan(journal, wanted)
        _show_undo(todo)
        if dry_run or not todo.targets:  # a dry run needs no credentials
            click.echo("Dry run: nothing was deleted." if dry_run else "Nothing to delete.")
            sys.exit(EXIT_OK)
        question = (f"Delete {_n(len(todo.targets), 'message')} in "
                    f"{_n(len(todo.per_chat()), 'conversation')}?")
        if not yes and not (_interactive() and click.confirm(question, default=False)):
            why = "" if _interactive() else " (pass --yes to delete without asking)"
            click.echo(f"Nothing was deleted{why}.")
            sys.exit(EXIT_ROWS)
        meta = journal.meta()
        with _verify_target(journal, None, sandbox_db, None) as (client, _):
            done = undoing.undo(client, journal, todo, line=int(meta["line"]), connector=meta["connector"])
    finally:
        journal.close()
    click.echo(str(done))
    for rid, why in list(done.failed.items())[:10]:
        click.echo(f"  row {rid}: {why}")
    sys.exit(EXIT_OK if done.complete else EXIT_ROWS)


def _show_undo(todo: Any) -> None:
    """Counts per conversation, and what the undo leaves alone."""
    per = todo.per_chat()
    click.echo(f"To delete: {_n(len(todo.targets), 'message')} in {_n(len(per), 'conversation')}.")
    for chat, n in list(per.most_common())[:20]:
        click.echo(f"  {chat}: {n}")
    if len(per) > 20:
        click.echo(f"  … and {len(per) - 20} more conversations")
    if todo.no_ids:
        click.echo(f"{todo.no_ids} sent rows have no recorded ids (an older journal): not deleted.")
    if todo.unknown_sends:
        click.echo(f"{todo.unknown_sends} rows have an unknown outcome (maybe on the portal): not deleted.")
    from .after.undo import CANNOT_REMOVE

    click.echo(CANNOT_REMOVE)


def _config(text: str) -> Exception:
    from .errors import ConfigError

    return ConfigError(text)


def _parse_rows(spec: str) -> list[int]:
    """``"12,40-45"`` → [12, 40, 41, …, 45]; a one-line error for anything else."""
    out: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        first, dash, last = part.partition("-")
        try:
            lo = int(first)
            hi = int(last) if dash else lo
        except ValueError:
            raise _config(f"--rows {spec!r}: use row numbers and ranges, e.g. --rows 12,40-45") from None
        if hi < lo or hi - lo > 1_000_000:
            raise _config(f"--rows {spec!r}: the range {part} is reversed or too long")
        out.extend(range(lo, hi + 1))
    return out


def _find_journal() -> Path:
    """The one ``*.bulkimport.db`` journal in the current folder, or a one-line error."""
    found = sorted(Path.cwd().glob("*.bulkimport.db"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise _config("no journal (*.bulkimport.db) in this folder: pass STATE, the --state file of a run")
    names = ", ".join(p.name for p in found[:5])
    raise _config(f"several journals here ({names}): pass the one you mean as STATE")


def _register_sandbox() -> None:
    from .sandbox.command import sandbox

    main.add_command(sandbox)


_register_sandbox()
