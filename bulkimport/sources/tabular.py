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


def read(
    path: str | Path,
    sheet: str | int | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> pd.DataFrame:
    """Read an xlsx/csv/tsv/txt export into a text DataFrame indexed by the spreadsheet row number."""
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
    if ext in EXCEL_EXTENSIONS:
        if sheet is not None and (encoding is not None or delimiter is not None):
            pass  # encoding/delimiter are CSV options; harmless for xlsx
        df = _read_excel(p, sheet)
    else:
        if sheet is not None:
            raise ReadError(f"{name}: a CSV file has no sheets; drop the sheet option")
        df = _read_text(p, encoding, delimiter)
    df.attrs[ATTR_SOURCE] = name
    df.attrs.setdefault(ATTR_DATE1904, False)
    return df


# --------------------------------------------------------------------------------------------------
# xlsx
# --------------------------------------------------------------------------------------------------
def _read_excel(p: Path, sheet: str | int | None) -> pd.DataFrame:
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
        names, rows = _calamine_rows(p, sheet)
    except ReadError:
        raise
    except Exception:  # calamine refused the file: try openpyxl before calling it corrupt
        try:
            names, rows = _openpyxl_rows(p, sheet)
        except ReadError:
            raise
        except Exception as exc:
            raise ReadError(
                f"{name}: the workbook is corrupt and cannot be read ({type(exc).__name__}); "
                "open it in Excel and save it again as .xlsx"
            ) from None
    df = _frame_from_rows(rows, name, first_row_number=1)
    df.attrs[ATTR_DATE1904] = date1904
    df.attrs["sheet"] = names
    return df


def _date1904(p: Path) -> bool:
    """Whether the workbook uses the 1904 date system (``<workbookPr date1904="1"/>``)."""
    try:
        with zipfile.ZipFile(p) as zf:
            xml = zf.read("xl/workbook.xml")[:4096].decode("utf-8", "replace")
    except (KeyError, zipfile.BadZipFile, OSError):
        return False
    m = re.search(r"<(?:\w+:)?workbookPr\b[^>]*\bdate1904\s*=\s*\"(1|true)\"", xml)
    return m is not None


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


def _calamine_rows(p: Path, sheet: str | int | None) -> tuple[str, list[list[Any]]]:
    import python_calamine as pc

    try:
        wb = pc.CalamineWorkbook.from_path(str(p))
    except pc.PasswordError:
        raise ReadError(
            f"{p.name}: the workbook is password-protected; remove the password in Excel and save it again"
        ) from None
    try:
        chosen = _pick_sheet(p.name, list(wb.sheet_names), sheet)
        rows = wb.get_sheet_by_name(chosen).to_python(skip_empty_area=False)
    finally:
        wb.close()
    return chosen, rows


def _openpyxl_rows(p: Path, sheet: str | int | None) -> tuple[str, list[list[Any]]]:
    import openpyxl

    wb = openpyxl.load_workbook(p, read_only=True, data_only=True)
    try:
        chosen = _pick_sheet(p.name, list(wb.sheetnames), sheet)
        ws = wb[chosen]
        # openpyxl gives formula errors as their text; calamine gives them as empty: match calamine
        rows = [
            [None if v in _EXCEL_ERRORS else v for v in r] for r in ws.iter_rows(min_row=1, values_only=True)
        ]
    finally:
        wb.close()
    return chosen, rows


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


def _frame_from_rows(rows: list[list[Any]], name: str, first_row_number: int) -> pd.DataFrame:
    """Cells (first row = spreadsheet row ``first_row_number``) → frame indexed by row number."""
    cleaned = [[_cell_text(v) for v in r] for r in rows]
    header_at = next((i for i, r in enumerate(cleaned) if any(v is not None for v in r)), None)
    if header_at is None:
        raise ReadError(f"{name}: the sheet is empty; choose the sheet with the history (sheet=...)")
    header = cleaned[header_at]
    width = max(len(r) for r in cleaned[header_at:])
    header = header + [None] * (width - len(header))
    columns = _header_names(header, name, header_at + first_row_number)
    body = cleaned[header_at + 1 :]
    data = [r + [None] * (width - len(r)) for r in body]
    index = pd.RangeIndex(header_at + first_row_number + 1, header_at + first_row_number + 1 + len(data))
    df = pd.DataFrame(data, columns=columns, index=index, dtype=object)
    df.index.name = "row"
    return _drop_empty(df)


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
        raise ReadError(f"{p.name}: cannot tell the text encoding; pass encoding= (e.g. 'cp1251' or 'utf-8')")
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
    """The candidate that splits the header line most, confirmed by the next lines when possible."""
    lines = text.splitlines()[:50]
    if not lines:
        return ","
    header = lines[0]
    counts = {d: _count_outside_quotes(header, d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: (counts[d], -_DELIMITERS.index(d)))
    if counts[best] == 0:
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


def _read_text(p: Path, encoding: str | None, delimiter: str | None) -> pd.DataFrame:
    if encoding is None:
        with p.open("rb") as fh:
            head = fh.read(1 << 20)
        if _utf8_head(head):
            # any failure (bad bytes, a bad record, ...): the full path below, detection first,
            # decides and words the error exactly as it always has
            with contextlib.suppress(Exception):
                return _read_text_as(p, None, delimiter, tentative_utf8=True)
    return _read_text_as(p, encoding, delimiter)


def _read_text_as(
    p: Path, encoding: str | None, delimiter: str | None, tentative_utf8: bool = False
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
            "(e.g. 'cp1251' or 'utf-8')"
        ) from None
    head_text = head_text.lstrip("\ufeff")
    if delimiter is None:
        sep = "\t" if p.suffix.lower() == ".tsv" else _sniff_delimiter(head_text)
    else:
        sep = "\t" if delimiter in ("\\t", "tab") else delimiter
    try:
        df = pd.read_csv(
            p,
            sep=sep,
            dtype=str,
            encoding=enc,
            encoding_errors="strict",
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            header=None,
            engine="c",
        )
    except UnicodeDecodeError as exc:
        if tentative_utf8:
            raise _NotUtf8 from None
        raise ReadError(
            f"{name}: the file is not valid {enc} (byte {exc.start}); pass the right encoding= "
            "(e.g. 'cp1251', 'utf-8' or 'utf-16')"
        ) from None
    except pd.errors.EmptyDataError:
        raise ReadError(f"{name}: the file is empty; export the history again") from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "malformed CSV"
        m = re.search(r"line (\d+), saw (\d+)", detail)
        header_at = _header_line(head_text, sep, int(m.group(1)), int(m.group(2))) if m else 0
        if header_at > 1:
            raise ReadError(
                f"{name}: the column headers seem to be on line {header_at}, below title lines; delete "
                f"the {header_at - 1} line(s) above them and save the file again"
            ) from None
        if m:
            detail = f"record {m.group(1)} has {m.group(2)} fields but the header has fewer"
        raise ReadError(
            f"{name}: {detail}; check the delimiter (found {sep!r}; pass delimiter=) and quoting of cells"
        ) from None
    return _text_frame(df, name)


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


def _text_frame(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Raw header=None frame → header row applied, index = record ordinal + 1."""
    head = df.iloc[:100].notna().any(axis=1).to_numpy()
    if head.any():
        first = int(head.argmax())
    else:
        present = df.notna().any(axis=1).to_numpy()
        if not present.any():
            raise ReadError(f"{name}: the file has no rows; export the history again")
        first = int(present.argmax())
    header_vals = [None if pd.isna(v) else str(v) for v in df.iloc[first].tolist()]
    if header_vals and isinstance(header_vals[0], str):
        header_vals[0] = header_vals[0].lstrip("\ufeff")
    columns = _header_names(header_vals, name, first + 1)
    body = df.iloc[first + 1 :]
    body = body.set_axis(columns, axis=1)
    body.index = pd.RangeIndex(first + 2, first + 2 + len(body), name="row")
    return _drop_empty(body)


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
