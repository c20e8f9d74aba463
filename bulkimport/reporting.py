"""Outcome frame → a report a person can read (xlsx or csv), plus the summary tables behind it.

The report is written from the frame :func:`bulkimport.send` returns (the input rows plus the
``import_*``/``b24_*`` status columns). Everything users typed is data: a cell that a spreadsheet
would read as a formula (text starting with ``=``, ``+``, ``-``, ``@``, tab or CR) is prefixed with
``'`` in xlsx and csv alike, so opening a report can never run anything. No token or secret is
ever written: the summary sheet is built from an allow-list of run figures, never from objects.

At any size (docs/scale.md): a frame longer than an xlsx sheet (``XLSX_MAX_ROWS``) is written as
CSV beside the asked-for ``.xlsx`` path — openpyxl needs minutes per million rows and Excel opens a
sheet of at most 1,048,576 lines; :func:`write_journal_report` streams the per-row statuses of a
journal of any size straight from SQLite to CSV (``bulkimport report STATE``).
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import logging
import math
import re
import sqlite3
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from . import codes
from .errors import ConfigError

#: The status columns the sender adds to the input rows, in report order.
STATUS_COLUMNS = codes.STATUS_COLUMNS

log = logging.getLogger("bulkimport.reporting")

#: Statuses in the order people read them.
STATUS_ORDER = ["sent", "failed", "invalid", "unknown", "pending"]

#: First characters that make a spreadsheet treat text as a formula (OWASP CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: Characters an xlsx file cannot hold (control characters other than tab, LF, CR, and lone
#: surrogates, which no UTF-8 file can hold either).
_ILLEGAL_XLSX = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")

#: Excel's limit on the characters in one cell.
_XLSX_CELL_MAX = 32767

#: Names that must never reach a report, whatever object a caller passes as summary.
_SECRET_WORDS = re.compile(r"token|secret|password|auth|credential", re.IGNORECASE)

#: Run figures copied from the sender's summary into the report, in this order (allow-list).
_SUMMARY_FIELDS = [
    ("elapsed", "elapsed (s)"),
    ("messages_per_second", "messages/s"),
    ("sent_this_run", "sent in this run"),
    ("requests", "requests"),
    ("seconds_per_message", "server seconds per message (measured)"),
    ("stopped", "stopped by code"),
    ("stopped_message", "stopped because"),
    ("stopped_reason", "stopped because"),
    ("interrupted", "interrupted"),
    ("journal", "journal"),
    ("journal_path", "journal"),
    ("portal", "portal"),
    ("line", "line"),
    ("connector", "connector"),
]


def neutralise(value: object) -> object:
    """``value`` unchanged unless it is text a spreadsheet would run as a formula; then ``'``-prefixed."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _cell(value: object, *, xlsx: bool) -> object:
    """One value made safe and representable for a report cell (None for missing)."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT or (not isinstance(value, (str, bytes, list, tuple, dict)) and _isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime(warn=False)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        # Excel has no time zones: keep the offset visible as ISO text rather than silently drop it.
        return value.isoformat()
    if isinstance(value, (list, tuple, set, dict)):
        value = "; ".join(str(v) for v in value) if not isinstance(value, dict) else str(value)
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars → Python
        try:
            value = value.item()
        except (AttributeError, ValueError):
            value = str(value)
    if isinstance(value, (bool, int, float, dt.datetime, dt.date)):
        return value
    text = str(value)
    if xlsx:
        text = _ILLEGAL_XLSX.sub("\ufffd", text)
    elif not text.isascii():
        text = _SURROGATES.sub("\ufffd", text)  # a lone surrogate would stop the CSV writer
        if len(text) > _XLSX_CELL_MAX:
            text = text[: _XLSX_CELL_MAX - 12] + " …[truncated]"
    return neutralise(text)


def _isna(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _status(frame: pd.DataFrame, plan: Any = None) -> pd.Series:
    """The import_status column, or (for a frame that was never sent) invalid/pending from the plan."""
    if "import_status" in frame.columns:
        return frame["import_status"].astype("str").where(frame["import_status"].notna(), "pending")
    invalid = set(_invalid_rows(plan))
    return pd.Series(
        ["invalid" if row in invalid else "pending" for row in frame.index], index=frame.index, dtype="str"
    )


def _invalid_rows(plan: Any) -> list[Hashable]:
    if plan is None:
        return []
    rows = getattr(plan, "invalid_rows", None)
    if rows is not None:
        return list(rows)
    failures = getattr(plan, "failures", None)
    if failures is None or len(failures) == 0:
        return []
    return list(failures.loc[failures["level"] == "error", "row"].unique())


def status_counts(frame: pd.DataFrame, plan: Any = None) -> pd.DataFrame:
    """Rows per status (all five statuses, zeros included), with what each status means."""
    status = _status(frame, plan)
    counts = status.value_counts()
    order = STATUS_ORDER + sorted(set(counts.index) - set(STATUS_ORDER))
    return pd.DataFrame(
        {
            "status": order,
            "rows": [int(counts.get(s, 0)) for s in order],
            "meaning": [codes.STATUSES.get(s, "") for s in order],
        }
    )


def _row_codes(frame: pd.DataFrame, plan: Any = None) -> pd.DataFrame:
    """One line per (row, code) for rows not sent: the plan's validation failures (which name the
    field and value) first, then ``import_error_code`` for rows the validation did not explain."""
    columns = ["row", "status", "code", "field", "message", "value"]
    status = _status(frame, plan)
    parts: list[pd.DataFrame] = []
    explained: set[Hashable] = set()
    failures = getattr(plan, "failures", None) if plan is not None else None
    if failures is not None and len(failures):
        errs = failures[(failures["level"] == "error") & failures["row"].isin(set(frame.index))]
        explained = set(errs["row"])
        parts.append(
            pd.DataFrame(
                {
                    "row": errs["row"].to_numpy(),
                    "status": status.reindex(errs["row"]).fillna("invalid").to_numpy(),
                    "code": errs["code"].astype("str").to_numpy(),
                    "field": errs["field"].to_numpy(),
                    "message": errs["message"].to_numpy(),
                    "value": errs["value"].to_numpy(),
                }
            )
        )
    if "import_error_code" in frame.columns:
        code = frame["import_error_code"]
        keep = (status != "sent") & code.notna() & (code.astype("str") != "") & ~frame.index.isin(explained)
        message = frame.loc[keep, "import_error"].to_numpy() if "import_error" in frame.columns else None
        parts.append(
            pd.DataFrame(
                {
                    "row": frame.index[keep],
                    "status": status[keep].to_numpy(),
                    "code": code[keep].astype("str").to_numpy(),
                    "field": None,
                    "message": message,
                    "value": None,
                }
            )
        )
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]


def code_counts(frame: pd.DataFrame, plan: Any = None) -> pd.DataFrame:
    """Rows per error code (most frequent first) with the catalogue's message and hint."""
    table = _row_codes(frame, plan)
    if table.empty:
        return pd.DataFrame(columns=["code", "status", "rows", "level", "message", "hint"])
    grouped = (
        table.groupby(["code", "status"], sort=False)["row"]
        .nunique()
        .reset_index(name="rows")
        .sort_values(["rows", "code"], ascending=[False, True], kind="stable")
        .reset_index(drop=True)
    )
    grouped["level"] = [codes.get(c).level for c in grouped["code"]]
    grouped["message"] = [codes.get(c).message for c in grouped["code"]]
    grouped["hint"] = [codes.get(c).hint for c in grouped["code"]]
    return grouped


def error_rows(frame: pd.DataFrame, plan: Any = None) -> pd.DataFrame:
    """Rows not sent: one line per problem with status, code, field, value, message and hint."""
    status = _status(frame, plan)
    table = _row_codes(frame, plan)
    # Rows not sent that carry no code (e.g. pending after a stop) still deserve a line; a frame
    # that was never sent (a dry run) lists only the invalid rows.
    unsent = status[status != "sent"] if "import_status" in frame.columns else status.iloc[:0]
    bare = unsent[~unsent.index.isin(set(table["row"]))]
    if len(bare):
        extra = pd.DataFrame({"row": bare.index, "status": bare.to_numpy(), "code": ""})
        table = (
            pd.concat([table, extra], ignore_index=True)
            if len(table)
            else extra.reindex(columns=table.columns)
        )
    if table.empty:
        return pd.DataFrame(columns=["row", "status", "code", "field", "value", "message", "hint"])
    table["hint"] = [
        codes.hint(c) if c else codes.STATUSES.get(s, "")
        for c, s in zip(table["code"], table["status"], strict=True)
    ]
    table["message"] = [
        m if isinstance(m, str) and m else (codes.get(c).message if c else "")
        for m, c in zip(table["message"], table["code"], strict=True)
    ]
    table = table[["row", "status", "code", "field", "value", "message", "hint"]]
    return table.sort_values("row", kind="stable").reset_index(drop=True)


def conversation_counts(frame: pd.DataFrame, plan: Any = None) -> pd.DataFrame:
    """Rows per status for each conversation (from the plan, else the ``chat.id`` column)."""
    status = _status(frame, plan)
    key: pd.Series | None = None
    if plan is not None and getattr(plan, "conversations", None):
        pairs = {row: conv.key for conv in plan.conversations for row in conv.rows}
        key = pd.Series([pairs.get(r) for r in frame.index], index=frame.index, dtype="object")
    elif "chat.id" in frame.columns:
        key = frame["chat.id"]
    if key is None:
        return pd.DataFrame(columns=["conversation", "rows", *STATUS_ORDER])
    data = pd.DataFrame({"conversation": key, "status": status}).dropna(subset=["conversation"])
    if data.empty:
        return pd.DataFrame(columns=["conversation", "rows", *STATUS_ORDER])
    table = pd.crosstab(data["conversation"], data["status"])
    for s in STATUS_ORDER:
        if s not in table.columns:
            table[s] = 0
    table = table[STATUS_ORDER + [c for c in table.columns if c not in STATUS_ORDER]]
    table.insert(0, "rows", table.sum(axis=1))
    order = list(dict.fromkeys(key.dropna()))  # send order (plan) or first appearance
    table = table.reindex([k for k in order if k in table.index])
    return table.reset_index().rename(columns={"index": "conversation"}).rename_axis(columns=None)


def _summary_value(summary: Any, name: str) -> Any:
    if summary is None:
        return None
    if isinstance(summary, Mapping):
        return summary.get(name)
    return getattr(summary, name, None)


def run_figures(summary: Any) -> list[tuple[str, object]]:
    """The allow-listed run figures of a sender summary (object or mapping) as (label, value)."""
    out: list[tuple[str, object]] = []
    seen: set[str] = set()
    for name, label in _SUMMARY_FIELDS:
        value = _summary_value(summary, name)
        if value is None or label in seen or _SECRET_WORDS.search(name):
            continue
        if isinstance(value, float):
            value = round(value, 2)
        elif not isinstance(value, (int, bool, str, Path)):
            value = str(value)
        seen.add(label)
        out.append((label, str(value) if isinstance(value, Path) else value))
    return out


def summary_tables(frame: pd.DataFrame, plan: Any = None, summary: Any = None) -> dict[str, pd.DataFrame]:
    """The tables of the ``summary`` sheet: per status, per error code, per conversation, run figures."""
    figures = run_figures(summary)
    return {
        "status": status_counts(frame, plan),
        "codes": code_counts(frame, plan),
        "conversations": conversation_counts(frame, plan),
        "run": pd.DataFrame(figures, columns=["figure", "value"]),
    }


def _rows_table(frame: pd.DataFrame, plan: Any = None) -> pd.DataFrame:
    """Every input row with the status columns last (index ``row`` as the first column)."""
    out = frame.copy()
    if "import_status" not in out.columns:
        out["import_status"] = _status(frame, plan)
        if plan is not None and getattr(plan, "failures", None) is not None and len(plan.failures):
            errs = plan.failures[plan.failures["level"] == "error"].drop_duplicates("row")
            first = dict(zip(errs["row"], errs["code"], strict=True))
            out["import_error_code"] = [first.get(r) for r in out.index]
    status_cols = [c for c in STATUS_COLUMNS if c in out.columns]
    others = [c for c in out.columns if c not in status_cols]
    out = out[others + status_cols]
    out.index.name = out.index.name or "row"
    return out.reset_index()


def check_report_path(path: str | Path) -> Path:
    """``path`` as a Path if a report can be written there (.xlsx/.csv in an existing folder), else a
    one-line ConfigError naming --report — checked before an import starts, not after it ends."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".xlsx", ".csv"):
        raise ConfigError(
            f"--report {target}: unsupported report type {suffix or '(none)'!r}; use .xlsx or .csv"
        )
    if not target.parent.exists():
        raise ConfigError(
            f"--report {target}: folder {target.parent} does not exist; create it or pick another path"
        )
    return target


def write_report(frame: pd.DataFrame, path: str | Path, plan: Any = None, summary: Any = None) -> Path:
    """Write the report to ``path`` (``.xlsx``: sheets rows/errors/summary; ``.csv``: the rows with
    a hint column) and return the path written — the ``.csv`` beside an ``.xlsx`` path when the
    frame has more rows than a sheet holds. Formula-like text is neutralised in both formats."""
    target = check_report_path(path)
    suffix = target.suffix.lower()
    if suffix == ".xlsx" and len(frame) >= XLSX_MAX_ROWS:
        target = target.with_suffix(".csv")
        log.warning(
            "%d rows are more than an xlsx sheet holds: the report is written as CSV to %s",
            len(frame),
            target,
        )
        suffix = ".csv"
    rows = _rows_table(frame, plan)
    if suffix == ".csv":
        _write_csv(rows, target)
    else:
        _write_xlsx(rows, error_rows(frame, plan), summary_tables(frame, plan, summary), target)
    return target


def _write_csv(rows: pd.DataFrame, target: Path) -> None:
    """The rows table with an ``import_hint`` column, UTF-8 with BOM so Excel reads the accents."""
    if "import_error_code" in rows.columns:
        rows = rows.assign(
            import_hint=[codes.hint(c) if isinstance(c, str) and c else "" for c in rows["import_error_code"]]
        )
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([_cell(str(c), xlsx=False) for c in rows.columns])
        for record in rows.itertuples(index=False, name=None):
            writer.writerow(["" if (v := _cell(x, xlsx=False)) is None else v for x in record])
    tmp.replace(target)


#: Rows an Excel sheet holds (header included): a longer table continues on "<name> 2", "<name> 3" …
XLSX_MAX_ROWS = 1_048_576


def _write_xlsx(
    rows: pd.DataFrame, errors: pd.DataFrame, tables: dict[str, pd.DataFrame], target: Path
) -> None:
    """Three sheets (a table longer than a sheet continues on more sheets of the same name and
    a number, each with the header), header frozen, widths fitted. Write-only mode and rows
    streamed from the frame, so a report of millions of rows needs no copy of them in memory."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook(write_only=True)
    bold = Font(bold=True)

    def records(blocks: list[tuple[str | None, pd.DataFrame]]) -> Iterator[tuple[str, list[object]]]:
        """(kind, cells) for every line of a sheet: kind is title, columns, data or blank."""
        for n, (title, table) in enumerate(blocks):
            if title is not None:
                if n:
                    yield "blank", []
                yield "title", [title]
            yield "columns", [_cell(str(c), xlsx=True) for c in table.columns]
            for record in table.itertuples(index=False, name=None):
                yield "data", [_cell(v, xlsx=True) for v in record]

    def bold_cells(ws: Any, cells: list[object]) -> list[object]:
        out = []
        for v in cells:
            c = WriteOnlyCell(ws, value=v)
            c.font = bold
            out.append(c)
        return out

    def sheet(name: str, blocks: list[tuple[str | None, pd.DataFrame]], freeze: str) -> None:
        widths: dict[int, int] = {}
        for _, cells in itertools.islice(records(blocks), 2000):  # a sample is enough to size columns
            for i, v in enumerate(cells):
                if v is not None:
                    widths[i] = max(widths.get(i, 0), min(len(str(v)), 60))
        lines = records(blocks)
        line = next(lines, None)
        columns: list[object] = []
        part = 0
        while part == 0 or line is not None:
            part += 1
            ws = wb.create_sheet(name if part == 1 else f"{name} {part}")
            ws.freeze_panes = freeze
            for i, w in widths.items():
                ws.column_dimensions[get_column_letter(i + 1)].width = max(8, w + 2)
            used = 0
            if part > 1:  # a continuation sheet starts with its table's header again
                ws.append(bold_cells(ws, columns))
                used = 1
            while line is not None and used < XLSX_MAX_ROWS:
                kind, cells = line
                if kind == "columns":
                    columns = cells
                ws.append(bold_cells(ws, cells) if kind in ("title", "columns") else cells)
                used += 1
                line = next(lines, None)

    sheet("rows", [(None, rows)], "B2")
    sheet("errors", [(None, errors)], "A2")
    sheet(
        "summary",
        [
            ("Rows per status", tables["status"]),
            ("Rows per error code", tables["codes"]),
            ("Rows per conversation", tables["conversations"]),
            ("Run", tables["run"]),
        ],
        "A3",
    )
    tmp = target.with_name(target.name + ".tmp")
    wb.save(tmp)
    tmp.replace(target)


def summary_lines(
    frame: pd.DataFrame, plan: Any = None, summary: Any = None, top: int = 5, wall: float | None = None
) -> list[str]:
    """The end-of-run summary as lines of text: counts per status, top codes with hints, run figures
    (``wall``: real seconds the run took, shown when the portal's clock ran faster, as a sandbox's does)."""
    counts = status_counts(frame, plan)
    total = int(counts["rows"].sum())
    lines = [
        "Rows: "
        + ", ".join(f"{r.status} {r.rows}" for r in counts.itertuples() if r.rows or r.status in ("sent",))
        + f" (of {total})"
    ]
    top_codes = code_counts(frame, plan).head(top)
    if len(top_codes):
        lines.append("Top problems:")
        for r in top_codes.itertuples():
            lines.append(f"  {r.code} ×{r.rows} ({r.status}): {r.message} — {r.hint}")
    lines += _figure_lines(summary, wall)
    return lines


def _figure_lines(summary: Any, wall: float | None) -> list[str]:
    """The run-figure lines of the end-of-run summary: elapsed, pace, requests, why it stopped."""
    lines: list[str] = []
    figures = dict(run_figures(summary))
    if "elapsed (s)" in figures:
        rate = figures.get("messages/s")
        elapsed = float(figures["elapsed (s)"])  # type: ignore[arg-type]
        text = f"Elapsed {dt.timedelta(seconds=round(elapsed))}"
        if wall is not None and elapsed > 1.5 * wall + 1:
            text += f" on the portal's clock ({dt.timedelta(seconds=round(wall))} of real time)"
        if rate is not None:
            text += f", {rate} messages/s"
        if figures.get("sent in this run") is not None:
            text += f"; {figures['sent in this run']} sent in this run"
        if figures.get("requests") is not None:
            text += f" with {figures['requests']} requests"
        lines.append(text)
    if figures.get("stopped because"):
        lines.append(f"Stopped because: {figures['stopped because']}")
    return lines


def count_lines(counts: Mapping[str, int], top_errors: Any, summary: Any = None,
                wall: float | None = None) -> list[str]:
    """The end-of-run summary from counts alone (a run that kept no per-row frame: after Ctrl-C):
    rows per status, top codes with hints, run figures."""
    total = sum(int(n) for n in counts.values())
    shown = [s for s in STATUS_ORDER if counts.get(s) or s == "sent"]
    lines = ["Rows: " + ", ".join(f"{s} {int(counts.get(s, 0))}" for s in shown) + f" (of {total})"]
    if top_errors:
        lines.append("Top problems:")
        for code, n in top_errors:
            lines.append(f"  {code} ×{n}: {codes.get(str(code)).render()} — {codes.hint(str(code))}")
    return lines + _figure_lines(summary, wall)


def failure_counts(failures: pd.DataFrame) -> pd.DataFrame:
    """Validation failures (``row, field, code, level, message, value``) counted per code: rows,
    level, the catalogue's message and hint; errors first, most frequent first."""
    columns = ["code", "level", "rows", "message", "hint"]
    if failures is None or len(failures) == 0:
        return pd.DataFrame(columns=columns)
    grouped = failures.groupby(["code", "level"], sort=False)["row"].nunique().reset_index(name="rows")
    grouped["_err"] = grouped["level"] != "error"
    grouped = grouped.sort_values(["_err", "rows", "code"], ascending=[True, False, True], kind="stable")
    # The failures carry their own rendered message ("user.name was longer …"); show the first one.
    first = failures.drop_duplicates("code").set_index("code")["message"]
    grouped["message"] = [
        str(first.get(c)) if isinstance(first.get(c), str) and first.get(c) else codes.get(c).message
        for c in grouped["code"]
    ]
    grouped["hint"] = [codes.get(c).hint for c in grouped["code"]]
    return grouped[columns].reset_index(drop=True)


def journal_lines(summary: Mapping[str, Any], path: str | Path) -> list[str]:
    """What ``Journal.summary()`` says, as lines: the import it belongs to, rows per status, top codes,
    runs and last activity, and the command that resumes it."""
    import shlex

    counts = dict(summary.get("counts") or {})
    order = STATUS_ORDER + sorted(set(counts) - set(STATUS_ORDER))
    total = sum(int(counts.get(s, 0) or 0) for s in order)
    lines = [f"Journal {path}"]
    source = summary.get("source")
    if source and not Path(source).is_absolute() and (Path(path).parent / source).is_file():
        source = str(Path(path).parent / source)  # the default journal sits beside its input
    if source:
        lines.append(f"Input: {source}")
    portal, line, connector = summary.get("portal"), summary.get("line"), summary.get("connector")
    lines.append(f"Target: {portal} open line {line}, connector {connector}")
    lines.append("Rows: " + ", ".join(f"{s} {int(counts.get(s, 0) or 0)}" for s in order) + f" (of {total})")
    top = summary.get("top_codes") or []
    if top:
        lines.append("Top codes:")
        lines += [f"  {code} ×{n}: {codes.hint(code)}" for code, n in top[:5]]
    runs = list(summary.get("runs") or [])
    if runs:
        last = runs[-1]
        stamps = [t for r in runs for t in (r.get("started_at"), r.get("finished_at")) if t]
        when = _when(max(stamps)) if stamps else "unknown"
        how = (
            "interrupted"
            if last.get("interrupted")
            else (
                f"stopped by {last['stopped']}"
                if last.get("stopped")
                else ("finished" if last.get("finished_at") else "did not finish (killed or still running)")
            )
        )
        lines.append(
            f"Runs: {len(runs)}; last activity {when}; the last run sent {last.get('sent') or 0} and {how}."
        )
    requests = summary.get("requests")
    if requests is not None:
        lines.append(f"Requests made: {requests}")
    if summary.get("complete"):
        lines.append("Complete: nothing pending or unknown.")
    else:
        target = ["--state", str(path)]
        # A loopback portal with the --sandbox database beside the input was a `run --sandbox`.
        from .connector import default_sandbox_db

        sandbox = (
            _is_loopback(str(portal or "")) and bool(source) and default_sandbox_db(str(source)).exists()
        )
        if sandbox:
            target += ["--sandbox"]
        else:
            target += [
                "--portal",
                str(portal or "").removesuffix("/rest/"),
                "--line",
                str(line),
                "--connector",
                str(connector),
            ]
        command = shlex.join(["bulkimport", "run", str(source or "FILE"), *target])
        lines.append(f"Resume (with the same --mapping as before, if any): {command}")
        if int(counts.get("unknown", 0) or 0):
            lines.append(
                "Rows with an unknown outcome are sent again only with --retry-unknown (check first)."
            )
        if int(counts.get("failed", 0) or 0):
            lines.append("Rows that failed are sent again only with --retry-failed (fix the cause first).")
    return lines


def _when(stamp: float) -> str:
    """A unix time as ISO text (UTC)."""
    return dt.datetime.fromtimestamp(float(stamp), tz=dt.UTC).isoformat(timespec="seconds")


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


#: The columns of a report built from a journal alone (``bulkimport report``), and what feeds them.
JOURNAL_REPORT_COLUMNS = [
    ("row", "rid"),
    ("conversation", "conv"),
    ("position", "seq"),
    ("import_status", "status"),
    ("import_error_code", "code"),
    ("import_error", "error"),
    ("import_attempts", "attempts"),
    ("import_message_id", "message_id"),
    ("b24_user_id", "user_id"),
    ("b24_chat_id", "chat_id"),
    ("b24_session_id", "session_id"),
    ("sent_at", "sent_at"),
]


def default_journal_report(state: str | Path) -> Path:
    """Where ``bulkimport report STATE`` writes by default: ``<STATE without .db>.report.csv``."""
    state = Path(state)
    stem = state.name[: -len(".db")] if state.name.endswith(".db") else state.name
    return state.with_name(stem + ".report.csv")


def _safe_sql(column: str) -> str:
    """SQL for ``column`` with formula-like text ``'``-prefixed (as :func:`neutralise` does)."""
    starts = "'=', '+', '-', '@', char(9), char(13)"
    return f"CASE WHEN substr({column}, 1, 1) IN ({starts}) THEN char(39) || {column} ELSE {column} END"


#: The journal report's query: SQLite formats every cell, so the rows go to the CSV writer as
#: they come (no Python per cell). A row id that is JSON text becomes its text; an in-flight row
#: reads ``unknown`` (as the run's own report says); the time is ISO 8601 in UTC; the hint comes
#: from the catalogue through a temporary table.
_JOURNAL_REPORT_SQL = f"""
SELECT {_safe_sql("CASE WHEN substr(rid, 1, 1) = char(34) THEN json_extract(rid, '$') ELSE rid END")},
       conv, seq, CASE status WHEN 'inflight' THEN 'unknown' ELSE status END, rows.code,
       {_safe_sql("error")}, attempts, {_safe_sql("message_id")}, {_safe_sql("user_id")},
       {_safe_sql("chat_id")}, {_safe_sql("session_id")},
       strftime('%Y-%m-%dT%H:%M:%f+00:00', sent_at, 'unixepoch'), coalesce(h.hint, '')
FROM rows LEFT JOIN temp.hints AS h ON h.code = rows.code ORDER BY rows.rowid
"""  # noqa: S608 (fixed column names, no user text)


def write_journal_report(state: str | Path, path: str | Path | None = None) -> tuple[Path, int]:
    """Write the per-row statuses a journal holds as CSV (plan order: conversation, position;
    invalid rows last) and return (path, rows). Streamed from SQLite in constant memory, without
    the input file: for an interrupted run, or an import too large for the frame report."""
    source = Path(state)
    target = check_report_path(path or default_journal_report(source))
    if target.suffix.lower() != ".csv":
        raise ConfigError(f"--report {target}: a report from the journal alone is CSV; give a .csv path")
    if not source.is_file():
        raise ConfigError(f"{source}: no such journal; pass the --state file of a run")
    con = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    tmp = target.with_name(target.name + ".tmp")
    counted = 0
    try:
        con.execute("CREATE TEMP TABLE hints (code TEXT PRIMARY KEY, hint TEXT)")
        used = [c for (c,) in con.execute("SELECT DISTINCT code FROM rows WHERE code IS NOT NULL")]
        con.executemany("INSERT INTO temp.hints VALUES (?, ?)", [(c, codes.hint(c)) for c in used])
        cur = con.execute(_JOURNAL_REPORT_SQL)
        with tmp.open("w", encoding="utf-8-sig", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow([name for name, _ in JOURNAL_REPORT_COLUMNS] + ["import_hint"])
            while batch := cur.fetchmany(50_000):
                writer.writerows(batch)
                counted += len(batch)
    except sqlite3.DatabaseError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"{source}: not a bulkimport journal ({exc}); pass the --state file of a run"
        ) from None
    finally:
        con.close()
    tmp.replace(target)
    return target, counted
