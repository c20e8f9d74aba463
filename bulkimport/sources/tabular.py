"""Files → DataFrame: xlsx and csv/tsv/txt exports, ids kept as text, spreadsheet row numbers kept.

The frame's index is named ``"row"`` and holds the row number the user sees in the spreadsheet
(header = 1, first data row = 2; for CSV the record's ordinal + 1), so every message about a row
can say ``history.xlsx row 17``. Every cell is text (``str``) or missing, except genuine Excel
date/datetime cells which stay ``datetime``: ids and phones are never coerced, leading zeros and
long ids survive, and an Excel number that is an id comes out as ``"12345"`` not ``"12345.0"``.

xlsx engine: python-calamine (Rust; 11-13x faster than openpyxl on 100,000 rows, see
bench/bench_prepare.py) reads the workbook. It is called directly rather than through
``pandas.read_excel(engine="calamine")`` because pandas would turn integral numbers into floats
and drop the leading empty rows that fix the spreadsheet row numbers; the raw cells keep both.
openpyxl is the fallback for files calamine refuses (unusual writers, XML quirks); both give the
same values (formula errors such as ``#N/A`` are empty in both).

The Excel date system (1900 or 1904) is read from ``xl/workbook.xml`` and kept in
``df.attrs["date1904"]`` because plain numbers in a date column are Excel serials whose meaning
depends on it.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import math
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ReadError

EXCEL_EXTENSIONS = {".xlsx", ".xlsm"}
TEXT_EXTENSIONS = {".csv", ".tsv", ".txt"}
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ZIP_MAGIC = b"PK\x03\x04"
_DELIMITERS = [",", ";", "\t", "|"]
_EXCEL_ERRORS = frozenset(
    {"#N/A", "#REF!", "#VALUE!", "#DIV/0!", "#NAME?", "#NULL!", "#NUM!", "#GETTING_DATA"}
)
#: attrs keys set on every frame read
ATTR_SOURCE = "source"
ATTR_DATE1904 = "date1904"
#: rows above the header (a title, an export note): [{"row": n, "text": ...}] (+ "sheet")
ATTR_SKIPPED = "skipped_above_header"
#: totals/footer rows below the data, left out: [{"row": n, "text": ...}] (+ "sheet")
ATTR_FOOTER = "footer_rows"
#: formula cells without a computed value, kept as their formula text: {row: {column: "=..."}}
ATTR_FORMULAS = "formula_cells"
#: the spreadsheet row number of the header (found or given; one sheet)
ATTR_HEADER_ROW = "header_row"
#: what a CSV was read as: the encoding and the delimiter (detected or given)
ATTR_ENCODING = "encoding"
ATTR_DELIMITER = "delimiter"
#: every key above, what the CLI may print after reading
ATTRS = (
    ATTR_SOURCE,
    ATTR_DATE1904,
    ATTR_SKIPPED,
    ATTR_FOOTER,
    ATTR_FORMULAS,
    ATTR_ENCODING,
    ATTR_DELIMITER,
    "sheet",
    "sheets",
)


def read(
    path: str | Path,
    sheet: str | int | Sequence[str | int] | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    header_row: int | None = None,
) -> pd.DataFrame:
    """Read an xlsx/csv/tsv/txt export into a text DataFrame indexed by the spreadsheet row number.

    ``sheet``: a name or 0-based number, a list of them, or ``"*"`` for every sheet (rows are then
    indexed ``"<sheet>!<row>"``). ``header_row``: the row number (as the spreadsheet shows it) of
    the header, when the detection of the header below a title picks the wrong one. What reading
    decided is in ``df.attrs`` (:data:`ATTRS`)."""
    p = Path(path)
    name = p.name
    if not p.exists():
        raise ReadError(f"{p}: no such file; check the path (current folder: {Path.cwd()})")
    if p.is_dir():
        raise ReadError(f"{p}: is a folder, not a file; pass the xlsx or csv file inside it")
    ext = p.suffix.lower()
    if ext not in EXCEL_EXTENSIONS | TEXT_EXTENSIONS:
        if ext == ".xls":
            raise ReadError(
                f"{name}: the old .xls format is not supported; open it in Excel and save as .xlsx"
            )
        raise ReadError(
            f"{name}: unknown file type {ext or '(no extension)'!r}; use .xlsx, .csv, .tsv or .txt "
            "(rename the file if its content is one of these)"
        )
    if p.stat().st_size == 0:
        raise ReadError(f"{name}: the file is empty; export the history again")
    if header_row is not None and (
        isinstance(header_row, bool) or not isinstance(header_row, int) or header_row < 1
    ):
        raise ReadError(
            f"{name}: header_row must be a row number from 1, got {header_row!r}",
            cli=f"{name}: --header-row must be a row number from 1, got {header_row!r}",
        )
    if ext in EXCEL_EXTENSIONS:
        df = _read_excel(p, sheet, header_row)
    else:
        if sheet is not None:
            raise ReadError(
                f"{name}: a CSV file has no sheets; drop the sheet argument",
                cli=f"{name}: a CSV file has no sheets; drop --sheet",
            )
        df = _read_text(p, encoding, delimiter, header_row)
    df.attrs[ATTR_SOURCE] = name
    df.attrs.setdefault(ATTR_DATE1904, False)
    for key in (ATTR_SKIPPED, ATTR_FOOTER):
        df.attrs.setdefault(key, [])
    df.attrs.setdefault(ATTR_FORMULAS, {})
    if df.empty:
        raise _no_data_rows(name, df)
    return df


def _no_data_rows(name: str, df: pd.DataFrame) -> ReadError:
    """The one-line error for a file (or sheet) whose header has nothing but blank rows below it."""
    where = f" (row {df.attrs[ATTR_HEADER_ROW]})" if df.attrs.get(ATTR_HEADER_ROW) else ""
    sheet = f", sheet {df.attrs['sheet']!r}," if df.attrs.get("sheet") else ""
    footer = " (only totals rows)" if df.attrs.get(ATTR_FOOTER) else ""
    head = f"{name}{sheet} has no data rows: only the header{where}{footer}, nothing to import; export "
    if not sheet:
        return ReadError(head + "the history again with its messages")
    return ReadError(
        head + "the history with its messages, or pick the sheet that holds them (sheet=)",
        cli=head + "the history with its messages, or pick the sheet that holds them (--sheet NAME)",
    )


# --------------------------------------------------------------------------------------------------
# xlsx
# --------------------------------------------------------------------------------------------------
def _read_excel(p: Path, sheet: Any, header_row: int | None) -> pd.DataFrame:
    name = p.name
    with p.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(_OLE_MAGIC):
        raise ReadError(
            f"{name}: the workbook is password-protected (encrypted); open it in Excel, remove the "
            "password (File → Info → Protect Workbook) and save it again"
        )
    if not head.startswith(_ZIP_MAGIC) or not zipfile.is_zipfile(p):
        raise ReadError(
            f"{name}: not a valid xlsx workbook (corrupt or another format); re-export it as .xlsx"
        )
    date1904 = _date1904(p)
    try:
        sheets = _calamine_rows(p, sheet)
    except ReadError:
        raise
    except Exception:  # calamine refused the file: try openpyxl before calling it corrupt
        try:
            sheets = _openpyxl_rows(p, sheet)
        except ReadError:
            raise
        except Exception as exc:
            raise ReadError(
                f"{name}: the workbook is corrupt and cannot be read ({type(exc).__name__}); "
                "open it in Excel and save it again as .xlsx"
            ) from None
    every = _every_sheet(sheet)
    frames: list[tuple[str, pd.DataFrame]] = []
    for chosen, rows in sheets:
        if every and not any(v is not None and v != "" for r in rows for v in r):
            continue  # "*": an empty sheet (notes, a chart) is not an error
        formulas = _formula_cells(p, chosen)
        frame = _frame_from_rows(rows, name, 1, header_row, formulas)
        if every and frame.empty:
            continue  # "*": a sheet with only a header (a template) holds no messages either
        frames.append((chosen, frame))
    if not frames:
        raise ReadError(f"{name}: every sheet is empty (no data rows); export the history again")
    _same_headers(name, frames)
    df = frames[0][1] if len(frames) == 1 and not _several(sheet) else _combine(frames)
    df.attrs[ATTR_DATE1904] = date1904
    df.attrs["sheet"] = ", ".join(n for n, _ in frames)
    df.attrs["sheets"] = [n for n, _ in frames]
    df.attrs["workbook_sheets"] = _sheet_names(p) or [n for n, _ in frames]
    return df


def _sheet_names(p: Path) -> list[str]:
    """Every sheet name of the workbook (so a reader of one sheet can be told of the others)."""
    try:
        from python_calamine import CalamineWorkbook

        wb = CalamineWorkbook.from_path(str(p))
        try:
            return list(wb.sheet_names)
        finally:
            wb.close()
    except Exception:  # calamine refused it: the rows came from openpyxl, which says less cheaply
        return []


def _every_sheet(sheet: Any) -> bool:
    return isinstance(sheet, str) and sheet.strip() == "*"


def _several(sheet: Any) -> bool:
    """Whether ``sheet`` asks for several sheets (a list, or "*"): rows are then named by sheet."""
    return _every_sheet(sheet) or (isinstance(sheet, (list, tuple)) and len(sheet) != 1)


def _same_headers(name: str, frames: list[tuple[str, pd.DataFrame]]) -> None:
    """Refuse sheets read together whose column names differ (as sets; the order may differ): one
    mapping for all of them would read one sheet's columns as the other's fields."""
    first, ours = frames[0][0], [str(c) for c in frames[0][1].columns]
    for other, df in frames[1:]:
        theirs = [str(c) for c in df.columns]
        if set(theirs) == set(ours):
            continue
        only = ", ".join(c for c in ours if c not in theirs) or "nothing"
        extra = ", ".join(c for c in theirs if c not in ours) or "nothing"
        head = (
            f"{name}: sheets {first!r} and {other!r} have different column headers ({first!r} has "
            f"{only} that {other!r} lacks; {other!r} has {extra}), and one mapping cannot read both; "
        )
        raise ReadError(
            head + "read each sheet on its own (sheet=NAME) with its own mapping and journal",
            cli=head + f"run each sheet on its own: --sheet {first!r} with its own --mapping and --state, "
            f"then --sheet {other!r} with its own",
        )


def _combine(frames: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
    """Sheets' frames → one, in sheet order; each row indexed ``"<sheet>!<row>"``, the attrs merged."""
    parts, skipped, footer, formulas = [], [], [], {}
    for sheet, df in frames:
        label = [f"{sheet}!{r}" for r in df.index]
        parts.append(df.set_axis(pd.Index(label, dtype=object, name="row"), axis=0))
        skipped += [{**e, "sheet": sheet} for e in df.attrs.get(ATTR_SKIPPED, [])]
        footer += [{**e, "sheet": sheet} for e in df.attrs.get(ATTR_FOOTER, [])]
        formulas.update({f"{sheet}!{r}": v for r, v in df.attrs.get(ATTR_FORMULAS, {}).items()})
    out = pd.concat([p for p in parts], axis=0) if len(parts) > 1 else parts[0]
    out = out.astype(object)
    out.index.name = "row"
    out.attrs = {ATTR_SKIPPED: skipped, ATTR_FOOTER: footer, ATTR_FORMULAS: formulas}
    return out


def _date1904(p: Path) -> bool:
    """Whether the workbook uses the 1904 date system (``<workbookPr date1904="1"/>``)."""
    try:
        with zipfile.ZipFile(p) as zf:
            xml = zf.read("xl/workbook.xml")[:4096].decode("utf-8", "replace")
    except (KeyError, zipfile.BadZipFile, OSError):
        return False
    m = re.search(r"<(?:\w+:)?workbookPr\b[^>]*\bdate1904\s*=\s*\"(1|true)\"", xml)
    return m is not None


def _pick_sheets(name: str, sheets: Sequence[str], sheet: Any) -> list[str]:
    """The sheet names asked for: one (name, case-insensitive, or 0-based number), a list, or "*"."""
    if _every_sheet(sheet):
        if not sheets:
            raise ReadError(f"{name}: the workbook has no sheets; re-export it")
        return list(sheets)
    if isinstance(sheet, (list, tuple)):
        return list(dict.fromkeys(_pick_sheet(name, sheets, s) for s in sheet)) or [
            _pick_sheet(name, sheets, None)
        ]
    return [_pick_sheet(name, sheets, sheet)]


def _pick_sheet(name: str, sheets: Sequence[str], sheet: str | int | None) -> str:
    listing = ", ".join(repr(s) for s in sheets)
    if sheet is None:
        if not sheets:
            raise ReadError(f"{name}: the workbook has no sheets; re-export it")
        return sheets[0]
    if isinstance(sheet, int) and not isinstance(sheet, bool):
        if 0 <= sheet < len(sheets):
            return sheets[sheet]
        raise ReadError(f"{name}: there is no sheet number {sheet} (0-based); the sheets are {listing}")
    text = str(sheet)
    if text in sheets:
        return text
    lowered = {s.lower(): s for s in sheets}
    if text.lower() in lowered:
        return lowered[text.lower()]
    if text.isdigit() and int(text) < len(sheets):
        return sheets[int(text)]
    raise ReadError(f"{name}: there is no sheet {text!r}; the sheets are {listing}")


def _calamine_rows(p: Path, sheet: Any) -> list[tuple[str, list[list[Any]]]]:
    import python_calamine as pc

    try:
        wb = pc.CalamineWorkbook.from_path(str(p))
    except pc.PasswordError:
        raise ReadError(
            f"{p.name}: the workbook is password-protected; remove the password in Excel and save it again"
        ) from None
    try:
        chosen = _pick_sheets(p.name, list(wb.sheet_names), sheet)
        return [(c, wb.get_sheet_by_name(c).to_python(skip_empty_area=False)) for c in chosen]
    finally:
        wb.close()


def _openpyxl_rows(p: Path, sheet: Any) -> list[tuple[str, list[list[Any]]]]:
    import openpyxl

    wb = openpyxl.load_workbook(p, read_only=True, data_only=True)
    try:
        out = []
        for chosen in _pick_sheets(p.name, list(wb.sheetnames), sheet):
            ws = wb[chosen]
            # openpyxl gives formula errors as their text; calamine gives them as empty: match calamine
            rows = [
                [None if v in _EXCEL_ERRORS else v for v in r]
                for r in ws.iter_rows(min_row=1, values_only=True)
            ]
            out.append((chosen, rows))
        return out
    finally:
        wb.close()


_NS_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_NS_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"


def _sheet_part(zf: zipfile.ZipFile, sheet: str) -> str | None:
    """The zip member holding ``sheet``'s cells (workbook.xml → its relationship → the part)."""
    import xml.etree.ElementTree as ET

    try:
        book = ET.fromstring(zf.read("xl/workbook.xml"))  # noqa: S314
        rels = ET.fromstring(zf.read("xl/_rels/workbook.xml.rels"))  # noqa: S314
    except (KeyError, ET.ParseError):
        return None
    rid = next((s.get(f"{_NS_REL}id") for s in book.iter(f"{_NS_MAIN}sheet") if s.get("name") == sheet), None)
    for rel in rels:
        if rel.get("Id") == rid:
            target = str(rel.get("Target", ""))
            return target.lstrip("/") if target.startswith("/") else "xl/" + target
    return None


def _formula_cells(p: Path, sheet: str) -> dict[tuple[int, int], str]:
    """(0-based row, column) → ``"=formula"`` of every formula cell without a computed value (a
    workbook written by a program and never opened in Excel: readers then see an empty cell)."""
    import xml.etree.ElementTree as ET

    try:
        with zipfile.ZipFile(p) as zf:
            part = _sheet_part(zf, sheet)
            data = zf.read(part) if part else b""
    except (KeyError, zipfile.BadZipFile, OSError):
        return {}
    if b"<f" not in data and b":f" not in data:  # no formula at all: the common case, no parse
        return {}
    out: dict[tuple[int, int], str] = {}
    try:
        for _, el in ET.iterparse(io.BytesIO(data)):  # noqa: S314
            if el.tag != f"{_NS_MAIN}c":
                continue
            f, v = el.find(f"{_NS_MAIN}f"), el.find(f"{_NS_MAIN}v")
            if f is not None and (v is None or not (v.text or "").strip()):
                ref = _cell_ref(el.get("r", ""))
                if ref is not None:
                    out[ref] = "=" + (f.text or "(shared formula)")
            el.clear()
    except ET.ParseError:
        return out
    return out


def _cell_ref(ref: str) -> tuple[int, int] | None:
    """``"B5"`` → (4, 1), 0-based."""
    m = re.fullmatch(r"([A-Z]{1,3})(\d+)", ref)
    if m is None:
        return None
    col = 0
    for ch in m.group(1):
        col = col * 26 + ord(ch) - 64
    return int(m.group(2)) - 1, col - 1


def _cell_text(v: Any) -> Any:
    """One Excel cell → str, datetime or None (integral numbers without '.0')."""
    if v is None:
        return None
    if isinstance(v, str):
        return v if v.strip() else None
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return None
        if v.is_integer():  # Excel stores every number as a float; ids come back integral
            return str(int(v))
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dt.datetime):
        return v
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day)
    if isinstance(v, dt.time):
        return v.strftime("%H:%M:%S")
    if isinstance(v, dt.timedelta):
        total = int(v.total_seconds())
        return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"
    return str(v)


def _frame_from_rows(
    rows: list[list[Any]],
    name: str,
    first_row_number: int,
    header_row: int | None = None,
    formulas: dict[tuple[int, int], str] | None = None,
) -> pd.DataFrame:
    """Cells (first row = spreadsheet row ``first_row_number``) → frame indexed by row number; the
    header found below any title (or given), formula cells without a value kept as their text."""
    cleaned = [[_cell_text(v) for v in r] for r in rows]
    kept: dict[tuple[int, int], str] = {}
    for (i, j), text in (formulas or {}).items():
        if i < len(cleaned) and cleaned[i][j : j + 1] in ([], [None]):
            cleaned[i] = cleaned[i] + [None] * (j + 1 - len(cleaned[i]))
            cleaned[i][j] = text
            kept[(i, j)] = text
    header_at = _header_index(cleaned, name, header_row, first_row_number)
    header = cleaned[header_at]
    width = max(len(r) for r in cleaned[header_at:])
    header = header + [None] * (width - len(header))
    columns = _header_names(header, name, header_at + first_row_number)
    body = cleaned[header_at + 1 :]
    data = [r + [None] * (width - len(r)) for r in body]
    start = header_at + first_row_number + 1
    df = pd.DataFrame(data, columns=columns, index=pd.RangeIndex(start, start + len(data)), dtype=object)
    df.index.name = "row"
    df = _drop_footer(_drop_empty(df))
    df.attrs[ATTR_SKIPPED] = _described(cleaned[:header_at], first_row_number)
    df.attrs[ATTR_FORMULAS] = _formulas_by_row(kept, columns, header_at, first_row_number, df.index)
    df.attrs[ATTR_HEADER_ROW] = header_at + first_row_number
    return df


def _header_index(cleaned: list[list[Any]], name: str, header_row: int | None, first_row_number: int) -> int:
    """Index into ``cleaned`` of the header row: ``header_row`` if given, else :func:`_find_header`."""
    if header_row is not None:
        at = header_row - first_row_number
        if not 0 <= at < len(cleaned) or all(v is None for v in cleaned[at]):
            fix = "give the row number the column names are on"
            raise ReadError(
                f"{name}: header_row {header_row} is empty or past the last row; {fix}",
                cli=f"{name}: --header-row {header_row} is empty or past the last row; {fix}",
            )
        return at
    at = _find_header(cleaned)
    if at is None:
        raise ReadError(
            f"{name}: the sheet is empty; choose the sheet with the history (sheet=...)",
            cli=f"{name}: the sheet is empty; choose the sheet with the history (--sheet NAME)",
        )
    return at


_HEADERISH = re.compile(r"^[\d\s.,:/+\-]+$")


def _find_header(cleaned: Sequence[Sequence[Any]], look: int = 30) -> int | None:
    """The header row below a title, an export note, merged cells or blank rows. The first non-empty
    row when it is about as wide as the rows below it (80 %); else the first of the first ``look``
    non-empty rows with at least two cells, all text that is not a number or a date, filling at
    least 60 % of the widest of the 20 rows below it; else the first non-empty row."""
    filled = [sum(v is not None for v in r) for r in cleaned]
    present = [i for i, n in enumerate(filled) if n][:look]
    if not present:
        return None
    first = present[0]
    if filled[first] >= 0.8 * max(filled[first : first + 21]):
        return first  # as wide as the table: the header, even with a number among its names
    for i in present:
        below = filled[i + 1 : i + 21]
        cells = [v for v in cleaned[i] if v is not None]
        texts = all(isinstance(v, str) and not _HEADERISH.match(v) and len(v) <= 200 for v in cells)
        if filled[i] >= 2 and texts and filled[i] >= 0.6 * max([filled[i], *below]):
            return i
    return first


def _described(rows: Sequence[Sequence[Any]], first_row_number: int) -> list[dict[str, Any]]:
    """Non-empty rows as ``{"row": number, "text": "cell | cell"}`` (what was left out, said)."""
    out = []
    for i, r in enumerate(rows):
        cells = [str(v) for v in r if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if cells:
            out.append({"row": i + first_row_number, "text": " | ".join(cells)[:200]})
    return out


def _formulas_by_row(
    kept: dict[tuple[int, int], str], columns: list[str], header_at: int, first: int, rows: pd.Index
) -> dict[Any, dict[str, str]]:
    """Formula cells kept in the data: spreadsheet row → column → formula text."""
    out: dict[Any, dict[str, str]] = {}
    present = set(rows)
    for (i, j), text in sorted(kept.items()):
        row = i + first
        if i > header_at and row in present and j < len(columns):
            out.setdefault(row, {})[columns[j]] = text
    return out


#: The first cell of a totals or footer row.
_TOTAL = re.compile(
    r"^\s*(итого|итог|всего|сумма|количество|кол-во|total|totals|grand total|subtotal|sum|count)\b",
    re.IGNORECASE,
)


def _drop_footer(df: pd.DataFrame, look: int = 5) -> pd.DataFrame:
    """Leave out the totals/footer rows at the bottom (kept in ``attrs["footer_rows"]``): from the
    last row up, while a row fills fewer cells than most rows and starts with a totals word
    (Итого, Total …) or holds numbers only, or is a note (:func:`_note_row`: text in one or two
    cells, none of them a date column's or a text column's)."""
    if len(df) < 2:
        return df
    filled = df.notna().sum(axis=1)
    typical = float(filled.median())
    dated = _date_columns(df)
    footer: list[Any] = []
    for row in reversed(df.index[-look:].tolist()):
        cells = [
            v for v in df.loc[row].tolist() if v is not None and not (isinstance(v, float) and math.isnan(v))
        ]
        total = bool(cells) and isinstance(cells[0], str) and bool(_TOTAL.match(cells[0]))
        numbers = bool(cells) and all(isinstance(v, str) and _NUMBERISH.match(v) for v in cells)
        if filled[row] < typical and (total or numbers or _note_row(df.loc[row], typical, dated)):
            footer.append(row)
        else:
            break
    if not footer:
        return df
    notes = [
        {"row": r, "text": " | ".join(str(v) for v in df.loc[r] if not pd.isna(v))[:200]}
        for r in footer[::-1]
    ]
    out = df.drop(index=footer)
    out.attrs[ATTR_FOOTER] = notes
    return out


#: Headers of a column that holds a message's content (a row with a value there is a message).
_CONTENT_HEADER = re.compile(
    r"(text|message|body|content|comment|attachment|file|текст|сообщени|вложени|файл|коммент)",
    re.IGNORECASE,
)
_DATEISH = re.compile(r"^\s*\d{1,4}[./\-]\d{1,2}[./\-]\d{1,4}([ T].*)?$")


def _date_columns(df: pd.DataFrame) -> set[Any]:
    """Columns whose cells are mostly dates (Excel dates or text like ``2026-10-01 10:00``)."""
    out: set[Any] = set()
    for col in df.columns:
        values = df[col].dropna().head(200).tolist()
        dates = sum(isinstance(v, (dt.date, dt.datetime)) or bool(_DATEISH.match(str(v))) for v in values)
        if values and dates >= 0.6 * len(values):
            out.add(col)
    return out


def _note_row(row: pd.Series, typical: float, dated: set[Any]) -> bool:
    """A note below the data ("Exported by admin on …", "Notes: …"): text in one or two cells of a
    table whose rows fill four or more, no cell in a date column or a message-content column — so it
    holds nothing a message needs (a message row missing its chat or author still has those)."""
    present = [c for c, v in row.items() if not pd.isna(v)]
    if not 1 <= len(present) <= 2 or typical < 4:
        return False
    if not all(isinstance(row[c], str) for c in present):
        return False
    return not any(c in dated or _CONTENT_HEADER.search(str(c)) for c in present)


_NUMBERISH = re.compile(r"^[\s+\-]*[\d.,:/\s]+$")


def _header_names(header: Iterable[Any], name: str, row_number: int) -> list[str]:
    """Header cells → unique column names; refuses a first row that is data, not headers."""
    cells = list(header)
    present = [c for c in cells if c is not None]
    texts = [c for c in present if isinstance(c, str) and not _NUMBERISH.match(c)]
    if not texts:
        raise ReadError(
            f"{name}: row {row_number} looks like data, not a header row; add a first row with "
            "column names (e.g. Date, Client ID, Message)"
        )
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, c in enumerate(cells):
        base = str(c).strip() if c is not None and str(c).strip() else f"Unnamed: {i}"
        label = base
        if label in seen:
            seen[base] += 1
            label = f"{base}.{seen[base]}"
        seen.setdefault(label, 0)
        out.append(label)
    return out


def _drop_empty(df: pd.DataFrame) -> pd.DataFrame:
    """Drop rows with no value at all and trailing unnamed empty columns (row numbers kept)."""
    if len(df.columns):
        keep = df.notna().any(axis=1)
        if not bool(keep.all()):
            df = df[keep]
    drop = [c for c in df.columns if c.startswith("Unnamed: ") and df[c].isna().all()]
    if drop:
        df = df.drop(columns=drop)
    return df


# --------------------------------------------------------------------------------------------------
# csv / tsv / txt
# --------------------------------------------------------------------------------------------------
def _detect_encoding(p: Path, raw_head: bytes) -> str:
    """BOM → utf-8-sig/utf-16; valid UTF-8 → utf-8; otherwise charset-normalizer's best guess."""
    if raw_head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if raw_head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    sample = raw_head[:4096]
    if b"\x00" in sample and sample.count(b"\x00") * 10 < len(sample):
        # UTF-16 text has a NUL in every ASCII character (digits, commas, newlines): at least a
        # tenth of the bytes. A few NULs are stray bytes in an 8-bit/UTF-8 export.
        line = raw_head[: raw_head.index(b"\x00")].count(b"\n") + 1
        raise ReadError(
            f"{p.name}: line {line} contains NUL bytes (\\0), which a text export never has; remove them "
            "(e.g. with a text editor) or export the history again"
        )
    if b"\x00" in sample:
        # UTF-16 without a BOM (NULs in text), or a binary file
        best_enc, best_score = "", 0.0
        for cand in ("utf-16-le", "utf-16-be"):
            try:
                txt = sample[: len(sample) // 2 * 2].decode(cand)
            except UnicodeDecodeError:
                continue
            score = sum(ch.isprintable() or ch in "\r\n\t" for ch in txt) / max(1, len(txt))
            if score > best_score:
                best_enc, best_score = cand, score
        if best_score >= 0.95:
            return best_enc
        raise ReadError(f"{p.name}: the file is binary, not text; export the history as CSV or xlsx")
    try:
        _decode_whole(p, "utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    _refuse_damaged_utf8(p)
    from charset_normalizer import from_bytes

    best = from_bytes(raw_head[: 1 << 20]).best()
    if best is None:
        raise ReadError(
            f"{p.name}: cannot tell the text encoding; pass encoding= (e.g. 'cp1251' or 'utf-8')",
            cli=f"{p.name}: cannot tell the text encoding; pass --encoding (e.g. --encoding cp1251)",
        )
    enc = best.encoding
    if enc in ("cp1251", "windows_1251", "koi8_r", "mac_cyrillic", "cp866", "iso8859_5"):
        # Russian exports from Windows are cp1251 far more often than the look-alikes the detector
        # can pick on short samples; prefer it when it decodes the whole file.
        try:
            _decode_whole(p, "cp1251")
            return "cp1251"
        except UnicodeDecodeError:
            pass
    return enc


def _refuse_damaged_utf8(p: Path) -> None:
    """A UTF-8 file with a few broken bytes is not a legacy-encoded file: decoding all of it as
    cp1251 would silently turn every non-ASCII message into mojibake ('РџСЂРёРІРµС‚'). When the valid
    multi-byte UTF-8 characters outnumber the broken bytes, name the first broken line instead."""
    import codecs

    dec = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    bad, wide = re.compile("[\udc80-\udcff]"), re.compile("[^\x00-\x7f]")
    valid = broken = lines = first = 0
    with p.open("rb") as fh:
        while block := fh.read(1 << 24):
            text = dec.decode(block)
            found = len(bad.findall(text))
            if found and not first:
                first = lines + text.count("\n", 0, bad.search(text).start()) + 1  # type: ignore[union-attr]
            broken += found
            valid += len(wide.findall(text)) - found
            lines += text.count("\n")
    if broken and valid >= broken:
        raise ReadError(
            f"{p.name}: line {first} has bytes that are not valid UTF-8 ({broken} in the file) while the "
            "rest is UTF-8; fix or delete them, or open the file in a text editor and save it again as UTF-8"
        )


def _decode_whole(p: Path, enc: str) -> None:
    """Decode the file in blocks (raises UnicodeDecodeError); keeps memory flat on big files."""
    import codecs

    dec = codecs.getincrementaldecoder(enc)("strict")
    with p.open("rb") as fh:
        while block := fh.read(1 << 24):
            dec.decode(block)
        dec.decode(b"", final=True)


def _sniff_delimiter(text: str) -> str:
    """The candidate that splits the most lines the same number of times (a title or a blank line
    above the header must not decide it), ties by the header's count, then by list order."""
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    if not lines:
        return ","

    def agreement(d: str) -> tuple[int, int, int]:
        counts = [_count_outside_quotes(ln, d) for ln in lines]
        used = [n for n in counts if n]
        if not used:
            return (0, 0, -_DELIMITERS.index(d))
        mode = max(set(used), key=used.count)
        return (used.count(mode), mode, -_DELIMITERS.index(d))

    best = max(_DELIMITERS, key=agreement)
    if agreement(best)[0] == 0:
        try:
            return csv.Sniffer().sniff("\n".join(lines), delimiters="".join(_DELIMITERS)).delimiter
        except csv.Error:
            return ","
    return best


def _count_outside_quotes(line: str, d: str) -> int:
    n, quoted = 0, False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        elif ch == d and not quoted:
            n += 1
    return n


class _NotUtf8(Exception):
    """The parser met bytes that are not UTF-8 in a file whose first megabyte was: detect properly."""


def _utf8_head(raw_head: bytes) -> bool:
    """Whether the first megabyte is plain UTF-8 (no BOM, no NULs): then the file is read as UTF-8
    straight away and the parser's strict decoding checks the rest, instead of a separate pass
    over the whole file; on a decoding error the full detection runs as before."""
    if raw_head.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw_head[:4096]:
        return False
    import codecs

    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(raw_head, final=len(raw_head) < 1 << 20)
    except UnicodeDecodeError:
        return False
    return True


def _read_text(
    p: Path, encoding: str | None, delimiter: str | None, header_row: int | None = None
) -> pd.DataFrame:
    if encoding is None:
        with p.open("rb") as fh:
            head = fh.read(1 << 20)
        if _utf8_head(head):
            # any failure (bad bytes, a bad record, ...): the full path below, detection first,
            # decides and words the error exactly as it always has
            with contextlib.suppress(Exception):
                return _read_text_as(p, None, delimiter, header_row, tentative_utf8=True)
    return _read_text_as(p, encoding, delimiter, header_row)


def _read_text_as(
    p: Path, encoding: str | None, delimiter: str | None, header_row: int | None, tentative_utf8: bool = False
) -> pd.DataFrame:
    name = p.name
    with p.open("rb") as fh:
        raw_head = fh.read(1 << 20)
    if not raw_head.strip(b" \t\r\n\xef\xbb\xbf\xff\xfe\x00"):
        raise ReadError(f"{name}: the file is empty; export the history again")
    if encoding is None and tentative_utf8:
        enc = "utf-8"  # the parser decodes strictly: any bad byte later sends us to _detect_encoding
    elif encoding is None:
        enc = _detect_encoding(p, raw_head)
    else:
        enc = encoding
        try:
            "".encode(enc)
        except LookupError:
            raise ReadError(
                f"{name}: unknown encoding {encoding!r}; use e.g. 'utf-8', 'cp1251' or 'utf-16'"
            ) from None
    try:
        head_text = raw_head.decode(enc, errors="ignore" if len(raw_head) == 1 << 20 else "strict")
    except UnicodeDecodeError as exc:
        raise ReadError(
            f"{name}: byte {exc.start} is not valid {enc}; pass the right encoding= "
            "(e.g. 'cp1251' or 'utf-8')",
            cli=f"{name}: byte {exc.start} is not valid {enc}; pass the right --encoding "
            "(e.g. --encoding cp1251)",
        ) from None
    head_text = head_text.lstrip("\ufeff")
    sep = _separator(p, delimiter, head_text)
    if sep is None:
        raise ReadError(
            f"{p.name}: delimiter {delimiter!r} is not one character; give the separator itself, "
            "e.g. delimiter=';' or delimiter='tab'",
            cli=f"{p.name}: --delimiter {delimiter!r} is not one character; give the separator "
            "itself, e.g. --delimiter ';' or --delimiter tab",
        )
    skip = 0 if header_row is None else header_row - 1
    try:
        df = _parse_csv(p, sep, enc, skip)
    except pd.errors.ParserError as exc:
        if header_row is not None:
            raise _ragged(name, sep, exc) from None
        m = re.search(r"line (\d+), saw (\d+)", str(exc))
        skip = _header_line(head_text, sep, int(m.group(1)), int(m.group(2))) - 1 if m else -1
        if skip < 1:  # not title lines above the header: a record wider than the header
            raise _ragged(name, sep, exc) from None
        try:  # title lines above the header: read from the header's line
            df = _parse_csv(p, sep, enc, skip)
        except pd.errors.ParserError as again:
            raise _ragged(name, sep, again) from None
    except UnicodeDecodeError as exc:
        if tentative_utf8:
            raise _NotUtf8 from None
        raise ReadError(
            f"{name}: the file is not valid {enc} (byte {exc.start}); pass the right encoding= "
            "(e.g. 'cp1251', 'utf-8' or 'utf-16')",
            cli=f"{name}: the file is not valid {enc} (byte {exc.start}); pass the right --encoding "
            "(e.g. --encoding cp1251, utf-8 or utf-16)",
        ) from None
    except pd.errors.EmptyDataError:
        raise ReadError(f"{name}: the file is empty; export the history again") from None
    out = _text_frame(df, name, skip, explicit=header_row is not None)
    if skip:
        titles = list(csv.reader(io.StringIO("\n".join(head_text.splitlines()[:skip])), delimiter=sep))
        out.attrs[ATTR_SKIPPED] = _described(titles, 1) + out.attrs.get(ATTR_SKIPPED, [])
    out.attrs[ATTR_ENCODING] = enc
    out.attrs[ATTR_DELIMITER] = sep
    return out


def _csv_options(sep: str, enc: str, skip: int) -> dict[str, Any]:
    """The ``pandas.read_csv`` options of every CSV read (whole here, in chunks in chunked.py):
    raw records, no header applied, from line ``skip + 1`` on; every cell text or missing."""
    return {
        "sep": sep, "dtype": str, "encoding": enc, "encoding_errors": "strict", "keep_default_na": False,
        "na_values": [""], "skip_blank_lines": False, "header": None, "engine": "c", "skiprows": skip,
    }


def _separator(p: Path, delimiter: str | None, head_text: str) -> str | None:
    """The field separator: ``delimiter`` as given (``tab`` or ``\\t`` for a tab), else a tab for
    .tsv, else sniffed from the head of the text; None when the given one is not one character."""
    if delimiter is None:
        return "\t" if p.suffix.lower() == ".tsv" else _sniff_delimiter(head_text)
    sep = "\t" if delimiter in ("\\t", "tab") else delimiter
    return sep if len(sep) == 1 else None


def _parse_csv(p: Path, sep: str, enc: str, skip: int) -> pd.DataFrame:
    """The raw records (no header applied), from line ``skip + 1`` on; every cell text or missing."""
    return pd.read_csv(p, **_csv_options(sep, enc, skip))


def _ragged(name: str, sep: str, exc: Exception) -> ReadError:
    """The one-line error for a record wider than the header."""
    detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "malformed CSV"
    m = re.search(r"line (\d+), saw (\d+)", detail)
    if m:
        detail = f"record {m.group(1)} has {m.group(2)} fields but the header has fewer"
    shown = "tab" if sep == "\t" else repr(sep)
    return ReadError(
        f"{name}: {detail}; check the delimiter (found {sep!r}; pass delimiter=) and quoting of cells",
        cli=f"{name}: {detail}; check the delimiter (found {shown}; pass e.g. --delimiter ';' or "
        "--delimiter tab) and quoting of cells",
    )


def _header_line(text: str, sep: str, first_wide: int, width: int) -> int:
    """The 1-based line of a header sitting below title lines, or 0: pandas stopped at line
    ``first_wide`` (``width`` fields) near the top, and from there a line with every one of the
    ``width`` cells filled is followed by records of the same width."""
    if first_wide > 10:
        return 0
    try:
        rows = [r for _, r in zip(range(16), csv.reader(io.StringIO(text), delimiter=sep), strict=False)]
    except csv.Error:
        return 0
    for i in range(first_wide - 1, min(len(rows), 12)):
        after = rows[i + 1 : i + 4]
        filled = len(rows[i]) == width and all(c.strip() for c in rows[i])
        if filled and after and all(len(r) == width for r in after):
            return i + 1
    return 0


def _text_frame(df: pd.DataFrame, name: str, skipped: int = 0, explicit: bool = False) -> pd.DataFrame:
    """Raw header=None frame (its first record on line ``skipped + 1``) → header row applied (the
    first record when given explicitly, else found below any title), index = record ordinal + 1."""
    head = [[None if pd.isna(v) else str(v) for v in r] for r in df.iloc[:100].itertuples(index=False)]
    first = 0 if explicit else _find_header(head)
    if first is None:
        present = df.notna().any(axis=1).to_numpy()
        if not present.any():
            raise ReadError(f"{name}: the file has no rows; export the history again")
        first = int(present.argmax())
    header_vals = [None if pd.isna(v) else str(v) for v in df.iloc[first].tolist()]
    if header_vals and isinstance(header_vals[0], str):
        header_vals[0] = header_vals[0].lstrip("\ufeff")
    if explicit and all(v is None for v in header_vals):
        fix = "give the row number the column names are on"
        raise ReadError(
            f"{name}: header_row {skipped + 1} is empty; {fix}",
            cli=f"{name}: --header-row {skipped + 1} is empty; {fix}",
        )
    columns = _header_names(header_vals, name, skipped + first + 1)
    body = df.iloc[first + 1 :]
    body = body.set_axis(columns, axis=1)
    body.index = pd.RangeIndex(skipped + first + 2, skipped + first + 2 + len(body), name="row")
    out = _drop_footer(_drop_empty(body))
    out.attrs[ATTR_SKIPPED] = _described(head[:first], skipped + 1)
    out.attrs[ATTR_HEADER_ROW] = skipped + first + 1
    return out


def read_text_sample(text: str, **kwargs: Any) -> pd.DataFrame:
    """Parse CSV text already in memory (tests and notebooks)."""
    df = pd.read_csv(
        io.StringIO(text),
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        skip_blank_lines=False,
        header=None,
        **kwargs,
    )
    return _text_frame(df, "<text>")
