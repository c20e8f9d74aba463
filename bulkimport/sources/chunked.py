"""Big csv/tsv/txt files in chunks: the frame :func:`.tabular.read` gives, cut into pieces.

Issue #19: a 10M-row CSV must be prepared within ~2 GiB, so it cannot be one DataFrame. A
:class:`TextChunks` decides what ``read()`` decides (encoding, delimiter, the header below any
title, the row numbers) from the file's start with ``tabular``'s own helpers, then gives the
records in chunks of at most ``rows``. What ``read()`` decides from the whole file is decided from
the whole file here too, cheaply:

* unnamed columns dropped when empty (``_drop_empty``): when the header has such a column, one
  extra pass over just those columns at open time, stopping as soon as each has a value (a file
  with a trailing delimiter on every line: 0.4 s per million rows);
* the footer (``_drop_footer``): the last rows are held back so the final chunk has them, and the
  decision uses the whole file's statistics (the median of filled cells per row, the first values
  of each column for its date columns), collected while iterating, through a stand-in frame with
  exactly those statistics (:func:`_stand_in`).

Chunks hold at most ``rows`` rows; the last holds the (up to 5) rows kept back for the footer.
1M rows of ``data_examples/generate.py::big_csv`` (136 MB), rows=200,000: 1.9 s and 224 MiB peak
RSS (``read()``: 3.0 s, 512 MiB); the peak does not grow with the file.

Differences from ``read()``, both rare: ``footer_rows`` is known only once iteration reached the
end; a file whose first megabyte is UTF-8 but whose rest is not is refused when the bad bytes are
met (``read()`` would re-read all of it in the detected encoding; chunks already given cannot be).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import inspect
import io
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ReadError
from . import tabular
from .tabular import (
    ATTR_DATE1904,
    ATTR_DELIMITER,
    ATTR_ENCODING,
    ATTR_FOOTER,
    ATTR_FORMULAS,
    ATTR_HEADER_ROW,
    ATTR_SKIPPED,
    ATTR_SOURCE,
    EXCEL_EXTENSIONS,
    TEXT_EXTENSIONS,
    _csv_options,
    _date_columns,
    _described,
    _detect_encoding,
    _drop_empty,
    _drop_footer,
    _header_line,
    _header_names,
    _no_data_rows,
    _ragged,
    _separator,
    _text_frame,
    _utf8_head,
)

_HEAD_BYTES = 1 << 20  # what read() decides the encoding and delimiter from
_PROBE = 100  # records _text_frame looks at to find the header
_LOOK = inspect.signature(_drop_footer).parameters["look"].default  # rows _drop_footer may drop
_DATE_SAMPLE = 200  # values per column _date_columns judges a column by
_MIN_READ = 128  # fewest records asked of the parser at a time
_SCAN_READ = 1 << 16  # records per step of the pass over the unnamed columns


@dataclass
class _Plan:
    """What reading the file's start decided: how to parse it and which columns the frame has."""

    path: Path
    enc: str
    sep: str
    skip: int  # lines skipped before the parser's first record (title lines above the header)
    first: int  # the header's record number from there (0-based)
    positions: list[int]  # the raw columns kept, in order
    columns: list[str]  # their names
    attrs: dict[str, Any]
    tentative: bool  # read as UTF-8 on the strength of the first megabyte (like read())
    raw_head: bytes = field(repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    def reader(self, rows: int, usecols: list[int] | None = None) -> Any:
        """A fresh chunked parser over the records from line ``skip + 1``."""
        extra = {} if usecols is None else {"usecols": usecols}
        return pd.read_csv(self.path, chunksize=rows, **_csv_options(self.sep, self.enc, self.skip), **extra)


class TextChunks:
    """A delimited text file read in chunks of at most ``rows`` records: the same frames
    ``tabular.read()`` gives for the file, cut into pieces (the last one holds up to 5 rows held
    back for the footer decision, so with ``rows`` < 5 it may be longer than ``rows``)."""

    def __init__(self, plan: _Plan, rows: int) -> None:
        self._plan = plan
        self.rows = rows
        self.attrs: dict[str, Any] = plan.attrs
        self.columns: list[str] = list(plan.columns)
        self.size: int = plan.path.stat().st_size
        self.path: Path = plan.path

    def __iter__(self) -> Iterator[pd.DataFrame]:
        """The chunks in file order; ``attrs["footer_rows"]`` is filled once the end is reached."""
        return self._frames(max(self.rows, _MIN_READ), self.rows)

    def head(self, n: int = 10_000) -> pd.DataFrame:
        """``read(path)[:n]``: the first ``n`` rows (same index and attrs; ``footer_rows`` only
        when the file ended within them), reading no further than needed."""
        parts: list[pd.DataFrame] = []
        got = 0
        gen = self._frames(max(min(self.rows, n + _LOOK + 1), _MIN_READ), max(n, 1))
        with contextlib.closing(gen):
            for chunk in gen:
                parts.append(chunk)
                got += len(chunk)
                if got >= n:
                    break
        df = pd.concat(parts).iloc[:n] if parts else self._empty()
        df.attrs = dict(self.attrs)
        return df

    def _empty(self) -> pd.DataFrame:
        index = pd.Index([], dtype="int64", name="row")
        return pd.DataFrame({c: pd.Series([], dtype=str, index=index) for c in self.columns}, index=index)

    def _frames(self, read_rows: int, piece: int) -> Iterator[pd.DataFrame]:
        """Parse, number and clean the records; give all but the last ``_LOOK`` rows as they come,
        and those at the end with the footer left out."""
        plan, stats = self._plan, _Stats(self.columns)
        carry: pd.DataFrame | None = None
        given = 0
        with _errors(plan), plan.reader(read_rows) as reader:
            for raw in reader:
                body = self._body(raw)
                del raw  # held no longer than needed: at most about two chunks live at once
                if body.empty:
                    continue
                stats.add(body)
                both = body if carry is None else pd.concat([carry, body])
                del body
                carry, out = both.iloc[-_LOOK:], both.iloc[:-_LOOK]
                del both
                for start in range(0, len(out), piece):
                    chunk = out.iloc[start : start + piece]
                    chunk.attrs = dict(self.attrs)
                    given += len(chunk)
                    yield chunk
        final = self._finish(carry, stats)
        if given + len(final) == 0:
            empty = self._empty()
            empty.attrs = dict(self.attrs)
            raise _no_data_rows(plan.name, empty)
        if len(final):
            final.attrs = dict(self.attrs)
            yield final

    def _body(self, raw: pd.DataFrame) -> pd.DataFrame:
        """A raw chunk → the data records below the header, named, numbered, empty rows dropped."""
        plan = self._plan
        below = max(0, plan.first + 1 - int(raw.index[0])) if len(raw) else 0
        body = raw.iloc[below:, plan.positions]
        body = body.set_axis([str(i) for i in range(len(plan.positions))], axis=1)  # no "Unnamed: ":
        body.index = pd.Index(body.index + plan.skip + 1, name="row")  # _drop_empty drops rows only
        return _drop_empty(body).set_axis(plan.columns, axis=1)

    def _finish(self, carry: pd.DataFrame | None, stats: _Stats) -> pd.DataFrame:
        """The last rows less the footer ``read()`` would leave out; ``attrs["footer_rows"]`` set."""
        if carry is None:
            return self._empty()
        if stats.total < 2:
            self.attrs[ATTR_FOOTER] = []
            return carry
        found = _drop_footer(_stand_in(carry, stats)).attrs.get(ATTR_FOOTER, [])
        found = [e for e in found if e["row"] in carry.index]  # never a made-up row (see _stand_in)
        self.attrs[ATTR_FOOTER] = found
        return carry.drop(index=[e["row"] for e in found]) if found else carry


class _Stats:
    """The whole file's figures ``_drop_footer`` uses, gathered chunk by chunk: how many rows fill
    how many cells, and each column's first values."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.filled: Counter[int] = Counter()
        self.samples: dict[str, list[Any]] = {c: [] for c in columns}

    @property
    def total(self) -> int:
        return sum(self.filled.values())

    def add(self, body: pd.DataFrame) -> None:
        self.filled.update({int(k): int(v) for k, v in body.notna().sum(axis=1).value_counts().items()})
        for c in self.columns:
            need = _DATE_SAMPLE - len(self.samples[c])
            if need > 0:
                self.samples[c].extend(body[c].dropna().head(need).tolist())

    def middle(self) -> tuple[int, int]:
        """The two middle values of the sorted filled counts (the same one twice for an odd count)."""
        n, seen, want = self.total, 0, {(self.total - 1) // 2, self.total // 2}
        got: dict[int, int] = {}
        for value in sorted(self.filled):
            for pos in want:
                if seen <= pos < seen + self.filled[value]:
                    got[pos] = value
            seen += self.filled[value]
        return got[(n - 1) // 2], got[n // 2]

    def dated(self) -> set[Any]:
        frame = pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in self.samples.items()})
        return _date_columns(frame)


def _stand_in(tail: pd.DataFrame, stats: _Stats) -> pd.DataFrame:
    """``tail`` (the file's last rows) below made-up rows, so that the frame has the whole file's
    median of filled cells per row and the same date columns: ``_drop_footer`` on it decides what
    it would decide on the whole frame. Each made-up row fills a or b cells (the middle counts),
    balanced around the tail's; together they give every column ``_DATE_SAMPLE`` values, a date
    in the date columns and a word elsewhere."""
    columns, width = list(tail.columns), len(tail.columns)
    low, high = stats.middle()
    dated = stats.dated()

    def enough(k: int) -> int:
        return math.ceil(_DATE_SAMPLE * width / k) + 1

    if low == high:
        counts = [(low, max(enough(low), 2 * len(tail) + 1))]
    else:
        below = int((tail.notna().sum(axis=1) <= low).sum())
        above = len(tail) - below
        x = max(enough(low), enough(high) + above - below)
        counts = [(low, x), (high, x + below - above)]
    cells: list[list[Any]] = []
    at = 0
    for k, n in counts:
        for _ in range(n):
            row: list[Any] = [None] * width
            for j in range(k):
                c = (at + j) % width
                row[c] = "2000-01-01" if columns[c] in dated else "x"
            at = (at + k) % width
            cells.append(row)
    index = pd.Index(range(-len(cells), 0), name="row")
    made = pd.DataFrame(cells, columns=columns, index=index, dtype=object)
    return pd.concat([made, tail.astype(object)])


# --------------------------------------------------------------------------------------------------
# opening: read()'s decisions from the file's start
# --------------------------------------------------------------------------------------------------
def open_chunks(
    path: str | Path,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
    header_row: int | None = None,
    rows: int = 200_000,
) -> TextChunks:
    """Open a csv/tsv/txt file for reading in chunks of ``rows`` records: the header, encoding,
    delimiter and errors as ``tabular.read()`` (same arguments, same ReadError texts)."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be a whole number from 1, got {rows!r}")
    p = Path(path)
    _check(p, encoding, delimiter, header_row)
    with p.open("rb") as fh:
        raw_head = fh.read(_HEAD_BYTES)
    if encoding is None and _utf8_head(raw_head):
        # as read(): any failure of the UTF-8 guess → the full path, detection first, decides
        with contextlib.suppress(Exception):
            return TextChunks(_plan(p, raw_head, None, delimiter, header_row, tentative=True), rows)
    return TextChunks(_plan(p, raw_head, encoding, delimiter, header_row, tentative=False), rows)


def _refused(p: Path, encoding: str | None, delimiter: str | None, header_row: int | None) -> ReadError:
    """read()'s own error for a file it refuses before parsing it (missing, empty, a bad argument):
    read() is asked, so the texts cannot drift apart."""
    tabular.read(p, encoding=encoding, delimiter=delimiter, header_row=header_row)
    return ReadError(f"{p.name}: cannot be read")  # not reached: read() refuses every case passed here


def _check(p: Path, encoding: str | None, delimiter: str | None, header_row: int | None) -> None:
    """The refusals before any reading: a missing file or folder, an xlsx, another type, an empty
    file, a bad ``header_row``."""
    if not p.exists() or p.is_dir():
        raise _refused(p, encoding, delimiter, header_row)
    if p.suffix.lower() in EXCEL_EXTENSIONS:
        raise ReadError(
            f"{p.name}: an xlsx workbook is read whole (read()); reading in chunks is for csv, tsv "
            "and txt files (save the sheet as CSV for a file this big)"
        )
    bad_row = header_row is not None and (
        isinstance(header_row, bool) or not isinstance(header_row, int) or header_row < 1
    )
    if p.suffix.lower() not in TEXT_EXTENSIONS or p.stat().st_size == 0 or bad_row:
        raise _refused(p, encoding, delimiter, header_row)


def _plan(
    p: Path,
    raw_head: bytes,
    encoding: str | None,
    delimiter: str | None,
    header_row: int | None,
    tentative: bool,
) -> _Plan:
    """Decide as ``tabular._read_text_as`` does: encoding, delimiter, title lines, header, columns."""
    refuse = (p, encoding, delimiter, header_row)
    if not raw_head.strip(b" \t\r\n\xef\xbb\xbf\xff\xfe\x00"):
        raise _refused(*refuse)
    enc = "utf-8" if tentative else encoding or _detect_encoding(p, raw_head)
    try:
        "".encode(enc)
        text = raw_head.decode(enc, errors="ignore" if len(raw_head) == _HEAD_BYTES else "strict")
    except (LookupError, UnicodeDecodeError):
        raise _refused(*refuse) from None
    text = text.lstrip("\ufeff")
    sep = _separator(p, delimiter, text)
    if sep is None:
        raise _refused(*refuse)
    plan = _Plan(p, enc, sep, 0 if header_row is None else header_row - 1, 0, [], [], {}, tentative, raw_head)
    with _errors(plan):
        window = _window(plan, text, explicit=header_row is not None)
        framed = _text_frame(window, p.name, plan.skip, explicit=header_row is not None)
        if framed.empty and len(window) < _PROBE:  # the whole file, and nothing below the header
            raise _no_data_rows(p.name, framed)
        plan.first = framed.attrs[ATTR_HEADER_ROW] - plan.skip - 1
        _decide_columns(plan, window)
    titles = list(csv.reader(io.StringIO("\n".join(text.splitlines()[: plan.skip])), delimiter=sep))
    plan.attrs = {
        ATTR_SOURCE: p.name,
        ATTR_ENCODING: enc,
        ATTR_DELIMITER: sep,
        ATTR_HEADER_ROW: framed.attrs[ATTR_HEADER_ROW],
        ATTR_SKIPPED: _described(titles, 1) + framed.attrs.get(ATTR_SKIPPED, []),
        ATTR_FOOTER: [],
        ATTR_DATE1904: False,
        ATTR_FORMULAS: {},
    }
    return plan


def _window(plan: _Plan, text: str, explicit: bool) -> pd.DataFrame:
    """The first raw records, as many as ``_text_frame`` looks at to find the header (and on to the
    first non-empty one); title lines above a wider header skipped as read() skips them."""
    try:
        return _first_records(plan)
    except pd.errors.ParserError as exc:
        if explicit:
            raise
        m = re.search(r"line (\d+), saw (\d+)", str(exc))
        skip = _header_line(text, plan.sep, int(m.group(1)), int(m.group(2))) - 1 if m else -1
        if skip < 1:  # not title lines above the header: a record wider than the header
            raise
        plan.skip = skip
        return _first_records(plan)


def _first_records(plan: _Plan) -> pd.DataFrame:
    parts: list[pd.DataFrame] = []
    got, seen = 0, False
    with plan.reader(_PROBE) as reader:
        for raw in reader:
            parts.append(raw)
            got += len(raw)
            seen = seen or bool(raw.notna().any(axis=1).any())
            if got >= _PROBE and seen:
                break
    if not parts:
        raise pd.errors.EmptyDataError("no records")
    window = pd.concat(parts) if len(parts) > 1 else parts[0]
    present = window.notna().any(axis=1).to_numpy()
    return window.iloc[: max(_PROBE, int(present.argmax()) + 1 if present.any() else 0)]


def _decide_columns(plan: _Plan, window: pd.DataFrame) -> None:
    """The header's names, less the columns ``_drop_empty`` would drop for being empty in the whole
    file (unnamed ones): looked up in one pass over those columns only, when there are any."""
    values = [None if pd.isna(v) else str(v) for v in window.iloc[plan.first].tolist()]
    if values and isinstance(values[0], str):
        values[0] = values[0].lstrip("\ufeff")
    names = _header_names(values, plan.name, plan.skip + plan.first + 1)
    blank = pd.DataFrame([[None] * len(names)], columns=names, dtype=object)
    kept = set(_drop_empty(blank).columns)  # what _drop_empty would keep were the column empty
    droppable = [i for i, c in enumerate(names) if c not in kept]
    filled = _filled_columns(plan, droppable) if droppable else set()
    plan.positions = [i for i in range(len(names)) if i not in droppable or i in filled]
    plan.columns = [names[i] for i in plan.positions]


def _filled_columns(plan: _Plan, positions: list[int]) -> set[int]:
    """Which of the raw columns at ``positions`` have a value below the header anywhere in the file."""
    found: set[int] = set()
    with plan.reader(_SCAN_READ, usecols=positions) as reader:
        for raw in reader:
            below = raw[raw.index > plan.first]
            found |= {int(c) for c in below.columns if bool(below[c].notna().any())}
            if len(found) == len(positions):
                break
    return found


@contextlib.contextmanager
def _errors(plan: _Plan) -> Iterator[None]:
    """The parser's complaints → read()'s one-line errors (a record wider than the header, bytes
    not in the encoding, nothing to read)."""
    try:
        yield
    except pd.errors.ParserError as exc:
        if plan.tentative:
            _confirm_utf8(plan)
        raise _ragged(plan.name, plan.sep, exc) from None
    except UnicodeDecodeError as exc:
        if plan.tentative:
            _confirm_utf8(plan)
        raise _not_valid(plan.name, plan.enc, exc.start) from None
    except pd.errors.EmptyDataError:
        raise ReadError(f"{plan.name}: the file is empty; export the history again") from None


def _confirm_utf8(plan: _Plan) -> None:
    """A file read as UTF-8 from its first megabyte met trouble: run read()'s full detection (which
    names damaged UTF-8 or NUL bytes itself); in another encoding, parse it as read() would then
    (its error, if any), and refuse it when that encoding reads it: chunks already given were UTF-8."""
    enc = _detect_encoding(plan.path, plan.raw_head)
    if enc == "utf-8":
        return
    again = dataclasses.replace(plan, enc=enc, tentative=False)
    with _errors(again), again.reader(_SCAN_READ) as reader:
        for _ in reader:
            pass
    fix = "read it again with encoding=" + repr(enc)
    head = f"{plan.name}: the first megabyte is UTF-8 but the rest of the file is {enc}; "
    raise ReadError(head + fix, cli=head + f"run again with --encoding {enc}")


def _not_valid(name: str, enc: str, start: int) -> ReadError:
    """read()'s error for bytes the parser cannot decode in ``enc``."""
    return ReadError(
        f"{name}: the file is not valid {enc} (byte {start}); pass the right encoding= "
        "(e.g. 'cp1251', 'utf-8' or 'utf-16')",
        cli=f"{name}: the file is not valid {enc} (byte {start}); pass the right --encoding "
        "(e.g. --encoding cp1251, utf-8 or utf-16)",
    )


def estimated_rows(path: str | Path, sample_bytes: int = 1 << 20) -> int:
    """Data records in the file (lines less the header), estimated from the bytes per line of its
    first ``sample_bytes`` (exact count when the file is no bigger): fast, no full read."""
    p = Path(path)
    _check(p, None, None, None)
    size = p.stat().st_size
    with p.open("rb") as fh:
        sample = fh.read(sample_bytes)
    lines = sample.count(b"\n")
    if len(sample) >= size:
        lines += bool(sample.strip()) and not sample.endswith(b"\n")
        return max(0, lines - 1)
    if not lines:
        return 1
    return max(0, round(size * lines / len(sample)) - 1)
