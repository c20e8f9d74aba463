"""Outcome frame → a report a person can read (xlsx or csv), plus the summary tables behind it.

The report is written from the frame :func:`bulkimport.send` returns (the input rows plus the
``import_*``/``b24_*`` status columns). Everything users typed is data and no cell can become a
formula: in xlsx every text is written as a string cell (an inline string is never evaluated, so
it needs no prefix and ``+7 916 …`` reads as typed); in csv, which has no cell types, text that a
spreadsheet would start a formula with (``=``, ``+``, ``-``, ``@``, tab or CR, other than a plain
number such as ``-1``) is prefixed with ``'``. Times are wall times in the import's time zone, to
the second. No token or secret is ever written: the summary sheet is built from an allow-list of
run figures, never from objects.

At any size (docs/scale.md): a frame longer than an xlsx sheet (``XLSX_MAX_ROWS``) is written as
CSV beside the asked-for ``.xlsx`` path — openpyxl needs minutes per million rows and Excel opens a
sheet of at most 1,048,576 lines; :func:`write_journal_report` streams the per-row statuses of a
journal of any size straight from SQLite to CSV (``bulkimport report STATE``).
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import logging
import math
import re
import sqlite3
from collections.abc import Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from . import codes
from .errors import ConfigError
from .mapping import FIELDS

#: The status columns the sender adds to the input rows, in report order.
STATUS_COLUMNS = codes.STATUS_COLUMNS

log = logging.getLogger("bulkimport.reporting")

#: Statuses in the order people read them.
STATUS_ORDER = ["sent", "failed", "invalid", "unknown", "pending"]  # + "deleted" when there are any (undo)

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


#: Text a spreadsheet reads as a number, not a formula, although it starts with ``+`` or ``-``.
_PLAIN_NUMBER = re.compile(r"^[+-]?\d+(?:[.,]\d+)?$")


def neutralise(value: object) -> object:
    """``value`` unchanged unless it is text a spreadsheet would run as a formula when it opens a
    CSV; then ``'``-prefixed. A plain number (``-1``, ``+79161234567``) starts no formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


def _cell(value: object, *, xlsx: bool) -> object:
    """One value made safe and representable for a report cell (None for missing); in xlsx text is
    left as it is (:func:`_typed` writes it as a string cell), in csv it is :func:`neutralise`-d."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NaT or (not isinstance(value, (str, bytes, list, tuple, dict)) and _isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime(warn=False)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        # Excel has no time zones: keep the offset visible rather than silently drop it.
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (list, tuple, set, dict)):
        value = "; ".join(str(v) for v in value) if not isinstance(value, dict) else str(value)
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars → Python
        try:
            value = value.item()
        except (AttributeError, ValueError):
            value = str(value)
    if isinstance(value, (bool, int, float, dt.date)):
        return value if xlsx or not isinstance(value, dt.datetime) else value.isoformat(sep=" ")
    text = str(value)
    if xlsx:
        return _ILLEGAL_XLSX.sub("\ufffd", text)
    if not text.isascii():
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
    """Rows per status for each conversation, invalid rows included (from the plan: its
    conversations, and for rows in none of them the conversation key validation gave them;
    else the ``chat.id`` column); in send order, then by first appearance."""
    status = _status(frame, plan)
    key, order = _conversation_keys(frame, plan)
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
    order = list(dict.fromkeys([*order, *key.dropna()]))
    table = table.reindex([k for k in order if k in table.index])
    return table.reset_index().rename(columns={"index": "conversation"}).rename_axis(columns=None)


def _conversation_keys(frame: pd.DataFrame, plan: Any) -> tuple[pd.Series | None, list[Any]]:
    """Each row's conversation key and the plan's send order of the keys."""
    conversations = getattr(plan, "conversations", None) if plan is not None else None
    canon = getattr(plan, "canonical", None) if plan is not None else None
    if not conversations and canon is None:
        return (frame["chat.id"], []) if "chat.id" in frame.columns else (None, [])
    pairs = {row: conv.key for conv in conversations or () for row in conv.rows}
    key = pd.Series([pairs.get(r) for r in frame.index], index=frame.index, dtype="object")
    if canon is not None and "key" in canon.columns:  # invalid rows: the key validation gave them
        rest = canon["key"].reindex(frame.index).astype(object)
        key = key.where(key.notna(), rest)
    return key, [conv.key for conv in conversations or ()]


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


def summary_tables(
    frame: pd.DataFrame, plan: Any = None, summary: Any = None, runs: list[dict[str, Any]] | None = None
) -> dict[str, pd.DataFrame]:
    """The tables of the ``summary`` sheet: per status, per error code, per conversation, run
    figures and every run of the journal (``runs``: ``Journal.summary()["runs"]``; by default read
    from the journal the summary names)."""
    figures = run_figures(summary)
    zone = report_zone(plan)
    figures.append(("times are in", zone))
    return {
        "status": status_counts(frame, plan),
        "codes": code_counts(frame, plan),
        "conversations": conversation_counts(frame, plan),
        "run": pd.DataFrame(figures, columns=["figure", "value"]),
        "runs": runs_table(journal_runs(summary) if runs is None else runs, zone),
    }


def report_zone(plan: Any = None) -> str:
    """The import's time zone (its mapping's), in which a report shows every time; else UTC."""
    mapping = getattr(plan, "mapping", None) if plan is not None else None
    options = getattr(mapping, "options", None) or {}
    return str(options.get("timezone") or "UTC")


def journal_runs(summary: Any) -> list[dict[str, Any]]:
    """Every run the journal named by ``summary`` (its ``journal``) recorded; [] without one."""
    from .journal import Journal

    path = _summary_value(summary, "journal") or _summary_value(summary, "journal_path")
    if not path or not Path(str(path)).is_file():
        return []
    try:
        journal = Journal.open(str(path))
    except (ConfigError, OSError):
        return []
    try:
        return list(journal.summary().get("runs") or [])
    finally:
        journal.close()


def runs_table(runs: list[dict[str, Any]], zone: str = "UTC") -> pd.DataFrame:
    """One line per run: when it started and finished (in ``zone``, to the second), what it sent
    and how it ended."""
    lines = []
    for r in runs:
        if r.get("interrupted"):
            ended = "interrupted"
        elif r.get("stopped"):
            ended = f"stopped by {r['stopped']}"
        else:
            ended = "finished" if r.get("finished_at") else "did not finish (killed or still running)"
        started, finished = _local(r.get("started_at"), zone), _local(r.get("finished_at"), zone)
        lines.append([r.get("id"), started, finished, r.get("sent") or 0, ended])
    return pd.DataFrame(lines, columns=["run", "started", "finished", "sent", "ended"])


def _local(stamp: Any, zone: str) -> str | None:
    """Unix seconds → ``YYYY-MM-DD HH:MM:SS`` wall time in ``zone``."""
    if stamp is None or _isna(stamp):
        return None
    return pd.Timestamp(float(stamp), unit="s", tz="UTC").tz_convert(zone).strftime("%Y-%m-%d %H:%M:%S")


def _rows_table(frame: pd.DataFrame, plan: Any = None) -> pd.DataFrame:
    """Every input row with the status columns last (index ``row`` as the first column); from the
    plan ``import_date`` (message.date as sent) and ``import_phone`` (E.164 as sent) before them;
    every time a wall time in the import's zone, to the second."""
    out = frame.copy()
    if "import_status" not in out.columns:
        out["import_status"] = _status(frame, plan)
        if plan is not None and getattr(plan, "failures", None) is not None and len(plan.failures):
            errs = plan.failures[plan.failures["level"] == "error"].drop_duplicates("row")
            first = dict(zip(errs["row"], errs["code"], strict=True))
            out["import_error_code"] = [first.get(r) for r in out.index]
    canon = getattr(plan, "canonical", None) if plan is not None else None
    if canon is not None and "message.date" in canon.columns:
        seconds = pd.to_numeric(canon["message.date"].reindex(out.index), errors="coerce")
        out["import_date"] = pd.to_datetime(seconds, unit="s", utc=True)
        if "user.phone" in canon.columns:
            out["import_phone"] = canon["user.phone"].reindex(out.index)
    if canon is not None and "operator" in canon.columns and "b24_user_id" in out.columns:
        # the portal answers an operator's reply with the conversation's customer: not the author
        operator = canon["operator"].reindex(out.index).fillna(False).astype(bool).to_numpy()
        out["b24_user_id"] = out["b24_user_id"].astype(object).where(~operator, None)
    zone = report_zone(plan)
    for c in out.columns:
        if isinstance(out[c].dtype, pd.DatetimeTZDtype):
            out[c] = out[c].dt.tz_convert(zone).dt.tz_localize(None).dt.floor("s")
    status_cols = [c for c in STATUS_COLUMNS if c in out.columns]
    added = [c for c in ADDED_COLUMNS if c in out.columns]
    others = [c for c in out.columns if c not in status_cols and c not in added]
    out = out[others + added + status_cols]
    out.index.name = out.index.name or "row"
    return out.reset_index()


#: Columns the report adds from the plan, before the status columns.
ADDED_COLUMNS = ("import_date", "import_phone")


def check_report_path(path: str | Path, option: str = "--report") -> Path:
    """``path`` as a Path if a report can be written there (.xlsx/.csv in an existing folder), else a
    one-line ConfigError naming ``option`` — checked before an import starts, not after it ends."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (".xlsx", ".csv"):
        raise ConfigError(
            f"{option} {target}: unsupported report type {suffix or '(none)'!r}; use .xlsx or .csv"
        )
    if not target.parent.exists():
        raise ConfigError(
            f"{option} {target}: folder {target.parent} does not exist; create it or pick another path"
        )
    return target


def write_report(
    frame: pd.DataFrame,
    path: str | Path,
    plan: Any = None,
    summary: Any = None,
    runs: list[dict[str, Any]] | None = None,
) -> Path:
    """Write the report to ``path`` (``.xlsx``: sheets rows/errors/summary; ``.csv``: the rows with
    a hint column) and return the path written — the ``.csv`` beside an ``.xlsx`` path when the
    frame has more rows than a sheet holds. No cell can become a formula in either format; ``runs``:
    the journal's runs for the summary (default: read from the journal ``summary`` names)."""
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
        return target
    tables = summary_tables(frame, plan, summary, runs)
    blocks = [
        ("Rows per status", tables["status"]),
        ("Rows per error code", tables["codes"]),
        ("Rows per conversation", tables["conversations"]),
        ("Run", tables["run"]),
    ]
    if len(tables["runs"]):
        blocks.append(("Runs of this journal", tables["runs"]))
    _write_xlsx(
        [
            ("rows", [(None, rows)], "B2"),
            ("errors", [(None, error_rows(frame, plan))], "A2"),
            ("summary", blocks, "A3"),
        ],
        target,
    )
    return target


def _write_csv(rows: pd.DataFrame, target: Path) -> None:
    """The rows table with an ``import_hint`` column, UTF-8 with BOM so Excel reads the accents."""
    if "import_error_code" in rows.columns:
        rows = rows.assign(
            import_hint=[codes.hint(c) if isinstance(c, str) and c else "" for c in rows["import_error_code"]]
        )
    _write_csv_table(rows, target)


def _write_csv_table(rows: pd.DataFrame, target: Path) -> None:
    """A table as CSV (UTF-8 with BOM), every cell :func:`neutralise`-d; written beside, then moved."""
    _write_csv_tables(list(rows.columns), [rows], target)


def _write_csv_tables(columns: list[Any], tables: Iterable[pd.DataFrame], target: Path) -> None:
    """:func:`_write_csv_table` of tables given one after another (streamed: one in memory)."""
    tmp = target.with_name(target.name + ".tmp")
    with tmp.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([_cell(str(c), xlsx=False) for c in columns])
        for rows in tables:
            for record in rows.itertuples(index=False, name=None):
                writer.writerow(["" if (v := _cell(x, xlsx=False)) is None else v for x in record])
    tmp.replace(target)


#: Rows an Excel sheet holds (header included): a longer table continues on "<name> 2", "<name> 3" …
XLSX_MAX_ROWS = 1_048_576

#: Text openpyxl would store as something other than a string: a formula (``=…``) or an error.
_NOT_TEXT = frozenset(["#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A"])

Blocks = list[tuple[str | None, pd.DataFrame]]


def _typed(ws: Any, value: object, bold: Any = None) -> object:
    """A value for ``ws.append``: text openpyxl would turn into a formula or an error becomes a
    string cell (an inline string is never evaluated), so no user text is ever a formula."""
    from openpyxl.cell import WriteOnlyCell

    is_odd = isinstance(value, str) and ((len(value) > 1 and value[0] == "=") or value in _NOT_TEXT)
    if bold is None and not is_odd:
        return value
    cell = WriteOnlyCell(ws, value=value)
    if is_odd:
        cell.data_type = "s"
    if bold is not None:
        cell.font = bold
    return cell


def _records(blocks: Blocks) -> Iterator[tuple[str, list[object]]]:
    """(kind, cells) for every line of a sheet: kind is title, columns, data or blank."""
    for n, (title, table) in enumerate(blocks):
        if title is not None:
            if n:
                yield "blank", []
            yield "title", [title]
        yield "columns", [_cell(str(c), xlsx=True) for c in table.columns]
        for record in table.itertuples(index=False, name=None):
            yield "data", [_cell(v, xlsx=True) for v in record]


def _write_xlsx(sheets: list[tuple[str, Blocks, str]], target: Path) -> None:
    """Sheets of (name, blocks of (title, table), frozen cell); written beside, then moved."""
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    for name, blocks, freeze in sheets:
        _write_sheet(wb, name, blocks, freeze)
    tmp = target.with_name(target.name + ".tmp")
    wb.save(tmp)
    tmp.replace(target)


def _write_sheet(wb: Any, name: str, blocks: Blocks, freeze: str) -> None:
    """One table (or titled blocks) on a sheet; a table longer than a sheet continues on more sheets
    of the same name and a number, each with the header; header frozen, widths fitted. Write-only
    mode and rows streamed from the frame, so millions of rows need no copy of them in memory."""
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    bold = Font(bold=True)
    widths: dict[int, int] = {}
    for _, cells in itertools.islice(_records(blocks), 2000):  # a sample is enough to size columns
        for i, v in enumerate(cells):
            if v is not None:
                widths[i] = max(widths.get(i, 0), min(len(str(v)), 60))
    lines = _records(blocks)
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
            ws.append([_typed(ws, v, bold) for v in columns])
            used = 1
        while line is not None and used < XLSX_MAX_ROWS:
            kind, cells = line
            if kind == "columns":
                columns = cells
            if kind in ("title", "columns"):
                ws.append([_typed(ws, v, bold) for v in cells])
            elif any(type(v) is str and (v[:1] == "=" or v[:1] == "#") for v in cells):
                ws.append([_typed(ws, v) for v in cells])
            else:  # the common row: nothing openpyxl would read as a formula or an error
                ws.append(cells)
            used += 1
            line = next(lines, None)


#: Columns of :func:`problems_table` (what ``validate --problems FILE`` writes).
PROBLEM_COLUMNS = ["row", "level", "code", "field", "column", "value", "message", "hint"]


def problems_table(failures: pd.DataFrame, mapping: Any = None) -> pd.DataFrame:
    """Every problem of every invalid or warned row, in row order: the row number, level, code, the
    field and the source column it came from (``mapping``), the value, the message and the hint."""
    if failures is None or len(failures) == 0:
        return pd.DataFrame(columns=PROBLEM_COLUMNS)
    sources = mapping.source_columns() if mapping is not None and hasattr(mapping, "source_columns") else {}
    table = failures.reset_index(drop=True)
    column = [", ".join(sources.get(f, [])) or (f if f not in _FIELD_NAMES else "") for f in table["field"]]
    return pd.DataFrame(
        {
            "row": table["row"],
            "level": table["level"],
            "code": table["code"],
            "field": table["field"],
            "column": column,
            "value": table["value"],
            "message": table["message"],
            "hint": [codes.hint(c) for c in table["code"]],
        }
    )[PROBLEM_COLUMNS]


#: The target fields (a failure's ``field``); anything else there is a source column already.
_FIELD_NAMES = frozenset(FIELDS)


def write_problems_stream(
    frames: Iterable[pd.DataFrame], total: int, path: str | Path, mapping: Any = None
) -> Path:
    """:func:`write_problems` of ``total`` problems given ``frames`` at a time (a plan stored on
    disk): CSV streamed; an ``.xlsx`` asked for holds them if a sheet can, else they go to the
    ``.csv`` beside it (the path returned says which)."""
    target = check_report_path(path, option="--problems")
    if target.suffix.lower() != ".csv" and total < XLSX_MAX_ROWS:
        from .validation import FAILURE_COLUMNS

        every = list(frames)
        table = pd.concat(every, ignore_index=True) if every else pd.DataFrame(columns=FAILURE_COLUMNS)
        return write_problems(table, target, mapping)
    target = target if target.suffix.lower() == ".csv" else target.with_suffix(".csv")
    _write_csv_tables(PROBLEM_COLUMNS, (problems_table(f, mapping) for f in frames), target)
    return target


def write_problems(failures: pd.DataFrame, path: str | Path, mapping: Any = None) -> Path:
    """Write :func:`problems_table` to ``path`` (``.xlsx``: one sheet ``problems``; ``.csv``), the
    whole list however long (for ``validate --problems FILE``); returns the path."""
    target = check_report_path(path, option="--problems")
    table = problems_table(failures, mapping)
    if target.suffix.lower() == ".csv":
        _write_csv_table(table, target)
    else:
        _write_xlsx([("problems", [(None, table)], "A2")], target)
    return target


#: What the journal keeps of every row for the reports made from it alone (table owned here):
#: the external chat id, the side (1: operator), the message's time and, for rows not sent, a text
#: excerpt (:func:`record_rows`); ``report_meta`` holds
#: the import's time zone and the fingerprint of the plan they were recorded for.
_ROWS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS report_rows "
    "(rid TEXT PRIMARY KEY, chat TEXT, side INTEGER, date REAL, text TEXT) WITHOUT ROWID"
)
_META_SCHEMA = "CREATE TABLE IF NOT EXISTS report_meta (key TEXT PRIMARY KEY, value TEXT)"
#: Characters of each row's text the journal keeps for ``status --rows`` (one line).
KEPT_EXCERPT = 60


def record_rows(journal: Any, plan: Any, rows: bool = True) -> int:
    """Keep, in the journal, what its own reports show of the rows of ``plan`` (invalid rows too):
    external chat id, operator side (1/0), message time and, for the rows not sent (the ones
    ``status --rows`` is for), a text excerpt; and the import's zone. Every row once per plan; a
    later run of the same plan adds the excerpts of rows no longer sent. Returns the rows written.
    ``rows=False`` keeps the zone only (after Ctrl-C: the run exits at once)."""
    from .journal import row_key

    canon = getattr(plan, "canonical", None)
    if (canon is None or not len(canon)) and getattr(plan, "store", None) is None:
        return 0
    journal.execute(_ROWS_SCHEMA)
    journal.execute(_META_SCHEMA)
    journal.execute("INSERT OR REPLACE INTO report_meta VALUES ('zone', ?)", (report_zone(plan),))
    if canon is None:  # a plan stored on disk: the zone only (the chats come from row_ids)
        return 0
    done = dict(journal.query("SELECT key, value FROM report_meta"))
    if not rows:
        return 0
    text = canon.get("message.text")
    if done.get("fingerprint") == plan.fingerprint:
        return _kept_texts(journal, canon.index, text)
    n = len(canon)
    rids = [row_key(r) for r in canon.index]
    key = canon["key"].astype(object).where(canon["key"].notna(), None).tolist()
    side = canon["operator"].to_numpy(dtype=bool).astype(int).tolist() if "operator" in canon else [None] * n
    date = pd.to_numeric(canon.get("message.date", pd.Series(index=canon.index, dtype=float)),
                         errors="coerce")
    dates = [None if d != d else float(d) for d in date.tolist()]  # NaN → None
    waiting = {r for (r,) in journal.query("SELECT rid FROM rows WHERE status != 'sent'")}
    texts = [None] * n if text is None else text.tolist()
    texts = [_excerpt(t, KEPT_EXCERPT) if r in waiting else None for r, t in zip(rids, texts, strict=True)]
    values = list(zip(rids, key, side, dates, texts, strict=True))
    journal.executemany("INSERT OR REPLACE INTO report_rows VALUES (?, ?, ?, ?, ?)", values)
    journal.execute("INSERT OR REPLACE INTO report_meta VALUES ('fingerprint', ?)", (plan.fingerprint,))
    return len(values)


def _kept_texts(journal: Any, index: pd.Index, text: pd.Series | None) -> int:
    """The excerpts of rows kept without one that are no longer sent (a later run of the plan)."""
    from .journal import row_key

    need = [r for (r,) in journal.query(
        "SELECT k.rid FROM report_rows AS k JOIN rows AS r ON r.rid = k.rid "
        "WHERE r.status != 'sent' AND k.text IS NULL"
    )]
    if not need or text is None:
        return 0
    where = {row_key(r): i for i, r in enumerate(index)}
    values = [(_excerpt(text.iloc[where[r]], KEPT_EXCERPT), r) for r in need if r in where]
    journal.executemany("UPDATE report_rows SET text = ? WHERE rid = ?", values)
    return len(values)


def _kept(query: Any) -> tuple[dict[str, tuple[Any, ...]], str]:
    """(rid → (chat, side, date, text), zone) of what :func:`record_rows` kept ({}, "UTC" if none);
    ``query(sql)`` runs one SELECT on the journal."""
    try:
        rows = query("SELECT rid, chat, side, date, text FROM report_rows")
        zone = dict(query("SELECT key, value FROM report_meta")).get("zone", "UTC")
    except sqlite3.Error:
        return {}, "UTC"
    return {r[0]: r[1:] for r in rows}, zone


#: Columns of :func:`status_rows` (what ``status --rows`` lists).
STATUS_ROW_COLUMNS = ["row", "status", "code", "chat", "time", "text"]

#: What ``status --rows`` accepts; ``inflight`` (a killed run's rows) is listed as unknown.
ROW_STATUSES = ("unknown", "failed", "invalid", "pending", "sent")


def status_rows(journal: Any, statuses: Iterable[str], plan: Any = None, excerpt: int = 60) -> pd.DataFrame:
    """The journal's rows of ``statuses`` (unknown, failed, invalid, pending, sent), in row order:
    row, status, code, chat, time and a text excerpt. Chat, time (the message's, in the import's
    zone) and text come from ``plan`` (the same input and mapping) where given, else the chat
    and the time the portal recorded. Reads the journal only (``Journal.rows``)."""
    wanted = [str(s).strip().lower() for s in statuses]
    bad = [s for s in wanted if s not in ROW_STATUSES]
    if bad or not wanted:
        raise ConfigError(
            f"--rows {','.join(bad) or '(none)'}: not a row status; use one or more of "
            f"{', '.join(ROW_STATUSES)}"
        )
    rows = journal.rows()
    status = rows["status"].replace("inflight", "unknown")
    keep = status.isin(wanted).to_numpy()
    # the statuses as an array: a Series assigned to an empty frame would give it the Series' index
    rows = rows[keep].assign(status=status.to_numpy()[keep])
    zone = report_zone(plan)
    ids = [json.loads(r) for r in rows["rid"]]
    out = pd.DataFrame(
        {
            "row": ids,
            "status": rows["status"].to_numpy(),
            "code": rows["code"].astype(object).where(rows["code"].notna(), None).to_numpy(),
            "chat": rows["chat_id"].to_numpy(),
            "time": [_local(t, zone) for t in rows["sent_at"]],
            "text": None,
        },
        columns=STATUS_ROW_COLUMNS,
    )
    canon = getattr(plan, "canonical", None) if plan is not None else None
    if canon is not None and len(out):
        _from_plan(out, canon, zone, excerpt)
    elif len(out):
        _from_journal(out, rows["rid"].tolist(), journal)
    out = out.sort_values("row", key=_row_order, kind="stable").reset_index(drop=True).astype(object)
    return out.where(out.notna(), None)


def _from_journal(out: pd.DataFrame, rids: list[str], journal: Any) -> None:
    """Chat, message time and text excerpt of ``out``'s rows as the journal kept them
    (:func:`record_rows`; a journal written before it keeps none: the portal's chat and time)."""
    kept, zone = _kept(journal.query)
    if not kept:
        return
    got = [kept.get(r) for r in rids]
    out["chat"] = [g[0] if g else c for g, c in zip(got, out["chat"], strict=True)]
    out["time"] = [_local(g[2], zone) if g else t for g, t in zip(got, out["time"], strict=True)]
    out["text"] = [g[3] if g else None for g in got]


def _from_plan(out: pd.DataFrame, canon: pd.DataFrame, zone: str, excerpt: int) -> None:
    """Chat, message time and text excerpt of ``out``'s rows from the plan's canonical frame."""
    sub = canon.reindex(pd.Index(out["row"], dtype=object))
    out["chat"] = sub["key"].where(sub["key"].notna(), out["chat"].to_numpy()).to_numpy()
    out["time"] = [_local(t, zone) for t in sub["message.date"]]
    texts = sub["message.text"] if "message.text" in sub.columns else pd.Series(None, index=sub.index)
    out["text"] = [_excerpt(t, excerpt) for t in texts]


def preview_table(plan: Any, frame: pd.DataFrame | None = None, n: int = 5) -> pd.DataFrame:
    """The plan's first ``n`` messages in send order (:meth:`Plan.preview`) with who wrote each: the
    ``side`` (operator or customer) and, with an author column, the ``author`` as the file has it,
    so that a dry run shows whether the replies go as the operator's."""
    table = plan.preview(n).reset_index()
    side = table["operator"].notna().map({True: "operator", False: "customer"})
    table.insert(table.columns.get_loc("user") + 1, "side", side)
    author = plan.mapping.options.get("author") if plan.mapping is not None else None
    if author and frame is not None and author in frame.columns:
        names = frame[author].reindex(table["row"]).astype("str").str.slice(0, 30).fillna("")
        table.insert(table.columns.get_loc("side"), "author", names.to_numpy())
    return table


def _excerpt(text: Any, width: int) -> str | None:
    """The first ``width`` characters of ``text`` on one line (… when cut)."""
    if text is None or _isna(text):
        return None
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _row_order(rows: pd.Series) -> pd.Series:
    """Row ids in file order: numbers by value, ``sheet!row`` by sheet then number."""
    return rows.map(lambda r: (0, "", r) if isinstance(r, int) else (1, *_sheet_row(str(r))))


def _sheet_row(r: str) -> tuple[str, int]:
    sheet, _, number = r.rpartition("!")
    return (sheet, int(number)) if number.isdigit() else (r, 0)


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
            lines.append(f"  {r.code} ×{r.rows} ({r.status}): {r.message} — {codes.cli_hint(r.code)}")
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
            lines.append(f"  {code} ×{n}: {codes.get(str(code)).render()} — {codes.cli_hint(str(code))}")
    return lines + _figure_lines(summary, wall)


def failure_counts(
    failures: pd.DataFrame, exact: Mapping[tuple[str, str], int] | None = None
) -> pd.DataFrame:
    """Validation failures (``row, field, code, level, message, value``) counted per code: rows,
    level, the catalogue's message and hint; errors first, most frequent first. ``exact``: the rows
    per (code, level) when ``failures`` lists only examples of each (a plan stored on disk)."""
    columns = ["code", "level", "rows", "message", "hint"]
    if failures is None or len(failures) == 0:
        return pd.DataFrame(columns=columns)
    grouped = failures.groupby(["code", "level"], sort=False)["row"].nunique().reset_index(name="rows")
    if exact:
        keyed = grouped[["code", "level", "rows"]].itertuples(index=False)
        grouped["rows"] = [int(exact.get((c, lv), n)) for c, lv, n in keyed]
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
        if len(runs) > 1:  # every run, so that a resumed import's history is visible
            for r in runs_table(runs).itertuples(index=False):
                lines.append(
                    f"  run {r.run}: {r.started} – {r.finished or '?'} UTC, sent {r.sent}, {r.ended}"
                )
    requests = summary.get("requests")
    if requests is not None:
        lines.append(f"Requests made: {requests}")
    if summary.get("complete"):
        lines.append("Complete: nothing pending or unknown.")
    else:
        target = ["--state", str(path)]
        # A loopback portal with the --sandbox database beside the input was a `run --sandbox`.
        sandbox = sandbox_db_of({**summary, "source": source}, path) is not None
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
        stored = summary.get("resume_command")
        if stored:  # the last run's own command: every option it was given
            lines.append(f"Resume: {shlex.join(stored)}")
        else:  # a journal of an older version (or of the library): the target only
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


def sandbox_db_of(summary: Mapping[str, Any], path: str | Path) -> Path | None:
    """The sandbox database a ``run --sandbox`` journal (``summary``: its :meth:`Journal.summary`
    or meta, at ``path``) was written against, if it is still there: the ``--sandbox-db`` of its
    resume command, else ``sandbox-<input stem>.db`` beside the input — each as the run spelled it,
    then beside the journal. None for a journal of a portal that is not on this machine."""
    from .connector import default_sandbox_db

    if not _is_loopback(str(summary.get("portal") or "")):
        return None
    found: list[Path] = []
    stored = list(summary.get("resume_command") or [])
    if "--sandbox-db" in stored[:-1]:
        found.append(Path(stored[stored.index("--sandbox-db") + 1]))
    if summary.get("source"):
        found.append(default_sandbox_db(str(summary["source"])))
    beside = Path(path).parent
    for db in found:
        for where in (db,) if db.is_absolute() else (db, beside / db.name):
            if where.is_file():
                return where
    return None


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


#: The columns of a report built from a journal alone (``bulkimport report``), and what feeds them.
JOURNAL_REPORT_COLUMNS = [
    ("row", "rid"),
    ("chat", "chat"),
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
    """SQL for ``column`` with formula-like text ``'``-prefixed: the cells that start like a formula
    go through :func:`neutralise` (registered as ``neutralise``), so a plain number (``-1``)
    stays as it is, exactly as in the frame report."""
    starts = "'=', '+', '-', '@', char(9), char(13)"
    return f"CASE WHEN substr({column}, 1, 1) IN ({starts}) THEN neutralise({column}) ELSE {column} END"


#: Where the journal report finds a row's external chat id: what the reports kept, else the ids
#: read-back and undo record (tables of after/; a journal may have none of them).
_CHAT_SOURCES = (("report_rows", "chat"), ("row_ids", "chat"), ("external_ids", "chat"))


def _journal_report_sql(tables: set[str], local: str = "NULL") -> str:
    """The journal report's query: SQLite formats every cell, so the rows go to the CSV writer as
    they come (Python only for formula-like cells and the times). A row id that is JSON text
    becomes its text; the chat is the external chat id where the journal knows it; an in-flight
    row reads ``unknown`` (as the run's own report says); ``b24_user_id`` (the customer's portal
    id) is left empty on operator rows; the time is the import's zone, to the second; the hint
    comes from the catalogue through a temporary table."""
    joins, chats = [], []
    for i, (table, column) in enumerate(t for t in _CHAT_SOURCES if t[0] in tables):
        joins.append(f"LEFT JOIN {table} AS c{i} ON c{i}.rid = rows.rid")
        chats.append(f"c{i}.{column}")
    chat = f"coalesce({', '.join(chats)})" if chats else "NULL"
    side = "c0.side" if "report_rows" in tables else "NULL"
    user = f"CASE WHEN {side} = 1 THEN NULL ELSE user_id END"
    rid = "CASE WHEN substr(rows.rid, 1, 1) = char(34) THEN json_extract(rows.rid, '$') ELSE rows.rid END"
    return f"""
SELECT {_safe_sql(rid)},
       {_safe_sql(chat)}, rows.conv, rows.seq, CASE status WHEN 'inflight' THEN 'unknown' ELSE status END,
       rows.code, {_safe_sql("error")}, attempts, {_safe_sql("message_id")}, {_safe_sql(user)},
       {_safe_sql("chat_id")}, {_safe_sql("session_id")}, {local}, coalesce(h.hint, '')
FROM rows {" ".join(joins)} LEFT JOIN temp.hints AS h ON h.code = rows.code ORDER BY rows.rowid
"""  # noqa: S608 (fixed table and column names, no user text)


def _offsets(zone: str, lo: float, hi: float) -> list[tuple[float, int]]:
    """(from when, UTC offset in seconds) of ``zone`` over [lo, hi]: its offset at ``lo`` and each
    change after it (found hour by hour, then to the second)."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(zone)

    def offset(t: float) -> int:
        delta = dt.datetime.fromtimestamp(t, tz).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    out = [(lo, offset(lo))]
    t = lo
    while t < hi:
        step = min(3600.0, hi - t)
        if offset(t + step) != out[-1][1]:
            a, b = t, t + step  # the change is in (a, b]: halve to the second
            while b - a > 1:
                mid = (a + b) // 2
                a, b = (mid, b) if offset(mid) == out[-1][1] else (a, mid)
            out.append((b, offset(b)))
        t += step
    return out


def _local_sql(con: Any, zone: str) -> str:
    """SQL for ``sent_at`` as ``YYYY-MM-DD HH:MM:SS+HH:MM`` in ``zone``, to the second: the zone's
    offsets over the journal's send times become a CASE of constants, so SQLite formats every row
    with no Python call per row (the report's pace at 10M rows)."""
    lo, hi = con.execute("SELECT min(sent_at), max(sent_at) FROM rows").fetchone()
    if lo is None:
        return "NULL"

    def label(off: int) -> str:
        sign = "+" if off >= 0 else "-"
        return f"{sign}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}"

    def fmt(off: int) -> str:
        return f"strftime('%Y-%m-%d %H:%M:%S', sent_at + {off}, 'unixepoch') || '{label(off)}'"

    spans = _offsets(zone, float(lo), float(hi))
    cases = [f"WHEN sent_at < {start!r} THEN {fmt(prev)}" for (start, _), (_, prev) in
             zip(spans[1:], spans, strict=False)]
    return f"CASE WHEN sent_at IS NULL THEN NULL {' '.join(cases)} ELSE {fmt(spans[-1][1])} END"


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
        tables = {n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        meta = con.execute("SELECT key, value FROM report_meta").fetchall() if "report_meta" in tables else []
        zone = dict(meta).get("zone", "UTC")
        con.create_function("neutralise", 1, neutralise, deterministic=True)
        cur = con.execute(_journal_report_sql(tables, _local_sql(con, zone)))
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
