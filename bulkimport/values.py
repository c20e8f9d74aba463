"""Vectorised cleaning of one kind of value each: text, dates, names, gender, phones, e-mails, URLs, files.

Every function takes a Series indexed by row and returns the cleaned Series (missing = NaN/None)
and a list of ``(code, mask)`` issues: ``mask`` is a boolean Series marking the rows the code
applies to. Codes are catalogued in bulkimport/codes.py; rules are documented in docs/mapping.md.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

Issues = list[tuple[str, pd.Series]]

#: Strings that are artefacts of missing values in exported frames, never data.
NA_STRINGS = ("nan", "NaN", "None", "<NA>", "NaT")
#: Longest text sent as one message (chat messages elsewhere in Bitrix24 are cut at 20,000).
MAX_TEXT = 20_000
#: Longest user.name / user.last_name the portal documents.
MAX_NAME = 25
#: Below this many rows, or when most values are distinct, cleaning runs on the column directly.
_UNIQUE_MIN_ROWS = 64
_UNIQUE_MAX_SHARE = 0.6
_PROBE = 20_000


def _factorize(s: pd.Series) -> tuple[np.ndarray, pd.Series] | None:
    """(codes, distinct values) when working per distinct value pays off, else None.

    Chat exports repeat most values (names, phones, chat ids, authors, even times), and string
    operations on pandas' ``str`` columns run per element: cleaning each distinct value once and
    expanding by code keeps every cleaner vectorised and proportional to the distinct values.
    """
    if len(s) < _UNIQUE_MIN_ROWS or pd.api.types.is_datetime64_any_dtype(s.dtype):
        return None
    if len(s) > 4 * _PROBE:  # a column whose first rows are nearly all distinct (texts, times): skip
        head = s.iloc[:_PROBE]
        if head.nunique() > 0.9 * head.notna().sum():
            return None
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    if len(uniques) > _UNIQUE_MAX_SHARE * len(s):
        return None
    return codes, pd.Series(np.asarray(uniques, dtype=object), dtype=object)


def _expand(values: pd.Series, codes: np.ndarray, index: pd.Index) -> pd.Series:
    """Per-distinct results → per-row (code -1, a missing cell, gets a missing result)."""
    base = values.astype(object).where(values.notna(), None).to_numpy(dtype=object)
    arr = np.concatenate([base, np.array([None], dtype=object)])[codes]
    out = pd.Series(arr, index=index, dtype=object)
    if isinstance(values.dtype, pd.StringDtype):
        return out.astype("str")
    if pd.api.types.is_float_dtype(values.dtype):
        return out.astype("float64")
    return out


def _expand_mask(mask: pd.Series, codes: np.ndarray, index: pd.Index) -> pd.Series:
    return pd.Series(np.append(mask.to_numpy(dtype=bool, na_value=False), False)[codes], index=index)


def _unique_wise(fn: Callable[..., tuple[pd.Series, Issues]]) -> Callable[..., tuple[pd.Series, Issues]]:
    """Run a cleaner ``(series, ...) -> (values, issues)`` once per distinct value of the column."""

    @functools.wraps(fn)
    def wrapper(s: pd.Series, *args: Any, **kwargs: Any) -> tuple[pd.Series, Issues]:
        fz = _factorize(s)
        if fz is None:
            return fn(s, *args, **kwargs)
        codes, uniques = fz
        values, issues = fn(uniques, *args, **kwargs)
        return (
            _expand(values, codes, s.index),
            [(code, _expand_mask(mask, codes, s.index)) for code, mask in issues],
        )

    return wrapper


# --------------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------------
def _one_text(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, bool | np.bool_):
        return "TRUE" if v else "FALSE"
    if isinstance(v, float | np.floating):
        if np.isnan(v):
            return None
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, pd.Timestamp | dt.datetime):
        return v.isoformat(sep=" ")
    return str(v)


def as_text(s: pd.Series, strip: bool = True, distinct: bool = True) -> pd.Series:
    """Any column → ``str`` Series with NaN for missing; integral floats lose their '.0'.

    Empty/whitespace-only strings and the artefacts in :data:`NA_STRINGS` become missing. With
    ``strip=False`` the text itself keeps its surrounding whitespace (message text is data).
    """
    fz = _factorize(s) if distinct and (s.dtype == object or isinstance(s.dtype, pd.StringDtype)) else None
    if fz is not None:
        codes, uniques = fz
        return _expand(as_text(uniques, strip), codes, s.index)
    dtype = s.dtype
    if isinstance(dtype, pd.StringDtype):
        t = s
    elif pd.api.types.is_bool_dtype(dtype):
        t = s.map(_one_text).astype("str")
    elif pd.api.types.is_integer_dtype(dtype):
        t = s.astype("str")
    elif pd.api.types.is_float_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        t = s.astype(object).map(_one_text, na_action="ignore").astype("str")
    else:
        nonstr = s.notna() & ~s.map(lambda v: isinstance(v, str)).astype(bool)
        if bool(nonstr.any()):
            s = s.astype(object).copy()
            s[nonstr] = s[nonstr].map(_one_text)
        t = s.astype("str")
    stripped = t.str.strip()
    # only short values can be empty or an artefact in NA_STRINGS: compare just those
    short = stripped.str.len().le(max(map(len, NA_STRINGS))).fillna(False).to_numpy(dtype=bool)
    out = stripped if strip else t
    if short.any():
        few = stripped[short]
        missing = np.zeros(len(t), dtype=bool)
        missing[short] = (few.eq("") | few.isin(NA_STRINGS)).to_numpy(dtype=bool)
        if missing.any():
            out = out.mask(pd.Series(missing, index=t.index, dtype=bool))
    return out


_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogates(t: pd.Series) -> pd.Series:
    """Rows whose text holds a lone surrogate (half of a UTF-16 pair, what a lenient decoder leaves
    for bytes it could not read): no UTF-8 request can carry it. One encode of the whole column
    decides the common case (none) at C speed; only then is each row looked at."""
    try:
        joined = "".join(t.dropna().tolist())
        if not joined.isascii():  # ASCII (ids, most names) is decided without encoding
            joined.encode("utf-8")
    except (UnicodeEncodeError, TypeError):  # TypeError: a non-text value; look row by row
        return t.map(lambda v: isinstance(v, str) and _SURROGATE.search(v) is not None).astype(bool)
    return pd.Series(False, index=t.index)


def replace_surrogates(t: pd.Series, mask: pd.Series) -> pd.Series:
    """``t`` with each lone surrogate of the ``mask`` rows replaced by U+FFFD (rows refused
    anyway: this only keeps hashing and reports from failing on them)."""
    out = t.copy()
    out[mask] = t[mask].map(lambda v: _SURROGATE.sub("\ufffd", v) if isinstance(v, str) else v)
    return out


def too_long_text(t: pd.Series) -> pd.Series:
    """Rows whose text exceeds :data:`MAX_TEXT` characters (flagged, never cut)."""
    return t.str.len().gt(MAX_TEXT).fillna(False).astype(bool)


# --------------------------------------------------------------------------------------------------
# dates
# --------------------------------------------------------------------------------------------------
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
_MIN_YEAR, _MAX_YEAR = 1970, 2100
_PARSE_YEARS = (1900, 2200)  # parsed at all (outside: bad-date); keeps nanosecond timestamps in range
# (name, length, {part: (start, stop)}, {position: allowed separator characters})
_Layout = tuple[str, int, dict[str, tuple[int, int]], dict[int, str]]
_FIXED_LAYOUTS: tuple[_Layout, ...] = (
    (
        "dmy",
        19,
        {"d": (0, 2), "m": (3, 5), "y": (6, 10), "H": (11, 13), "M": (14, 16), "S": (17, 19)},
        {2: ".", 5: ".", 10: " ", 13: ":", 16: ":"},
    ),
    (
        "dmy",
        16,
        {"d": (0, 2), "m": (3, 5), "y": (6, 10), "H": (11, 13), "M": (14, 16)},
        {2: ".", 5: ".", 10: " ", 13: ":"},
    ),
    ("dmy", 10, {"d": (0, 2), "m": (3, 5), "y": (6, 10)}, {2: ".", 5: "."}),
    (
        "ymd",
        19,
        {"y": (0, 4), "m": (5, 7), "d": (8, 10), "H": (11, 13), "M": (14, 16), "S": (17, 19)},
        {4: "-", 7: "-", 10: " T", 13: ":", 16: ":"},
    ),
    (
        "ymd",
        16,
        {"y": (0, 4), "m": (5, 7), "d": (8, 10), "H": (11, 13), "M": (14, 16)},
        {4: "-", 7: "-", 10: " T", 13: ":"},
    ),
    ("ymd", 10, {"y": (0, 4), "m": (5, 7), "d": (8, 10)}, {4: "-", 7: "-"}),
)
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_NUM = re.compile(r"^(\d+)(?:\.(\d+))?$")
_ISO = (
    r"^(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})"
    r"(?:[T ]+(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:[.,](?P<f>\d+))?)?)?"
    r"\s*(?P<tz>Z|z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?$"
)
_DMY = (
    r"^(?P<a>\d{1,2})(?P<sep>[./-])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4}|\d{2})"
    r"(?:[ ,T]+(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?\s*(?P<ap>[AaPp]\.?[Mm]\.?)?)?$"
)
_TIME = r"^(?P<H>\d{1,2}):(?P<M>\d{2})(?::(?P<S>\d{2}))?\s*(?P<ap>[AaPp]\.?[Mm]\.?)?$"
_RU_MONTHS = {
    "январ": "Jan",
    "феврал": "Feb",
    "март": "Mar",
    "апрел": "Apr",
    "ма": "May",
    "июн": "Jun",
    "июл": "Jul",
    "август": "Aug",
    "сентябр": "Sep",
    "октябр": "Oct",
    "ноябр": "Nov",
    "декабр": "Dec",
}
_RU_MONTH_RE = re.compile(
    r"(?i)\b(январ[ьяе]|феврал[ьяе]|марта?|марте|апрел[ьяе]|ма[йяе]|июн[ьяе]|июл[ьяе]|августа?|августе|"
    r"сентябр[ьяе]|октябр[ьяе]|ноябр[ьяе]|декабр[ьяе]|янв|фев|мар|апр|июн|июл|авг|сен|сент|окт|ноя|дек)\.?(?=\s|$|,)"
)


def _ru_month(m: re.Match[str]) -> str:
    word = m.group(1).lower()
    if word.startswith("ма") and not word.startswith("мар"):
        return "May"
    for stem, eng in _RU_MONTHS.items():
        if stem != "ма" and word.startswith(stem[:3]):
            return eng
    return word


def _to_num(df: pd.DataFrame, col: str, default: int = 0) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce").fillna(default).astype("int64")


def _assemble(
    y: pd.Series, m: pd.Series, d: pd.Series, hh: pd.Series, mm: pd.Series, ss: pd.Series
) -> pd.Series:
    """Components → naive datetime64 (NaT where the date does not exist, e.g. 31.02)."""
    frame = pd.DataFrame({"year": y, "month": m, "day": d, "hour": hh, "minute": mm, "second": ss})
    bad = (frame["hour"] > 23) | (frame["minute"] > 59) | (frame["second"] > 59)
    bad |= (frame["year"] < _PARSE_YEARS[0]) | (frame["year"] > _PARSE_YEARS[1])
    out = pd.to_datetime(
        frame.where(~bad, other=0).assign(month=frame["month"].where(~bad, 13)), errors="coerce"
    )
    return out.astype("datetime64[ns]")


def _ampm(hh: pd.Series, ap: pd.Series) -> tuple[pd.Series, pd.Series]:
    """12-hour clock → 24-hour; returns (hours, invalid mask)."""
    ap = ap.fillna("").str.lower().str.replace(".", "", regex=False)
    is_pm, is_am = ap.eq("pm"), ap.eq("am")
    bad = (is_pm | is_am) & ((hh < 1) | (hh > 12))
    hh = hh.where(~(is_am & hh.eq(12)), 0)
    hh = hh.where(~(is_pm & hh.lt(12)), hh + 12)
    return hh, bad


class DateResult:
    """Parsed dates: ``seconds`` (float unix seconds, NaN where not parsed) and issues."""

    def __init__(self, seconds: pd.Series, issues: Issues, dayfirst_used: bool | None) -> None:
        self.seconds = seconds
        self.issues = issues
        self.dayfirst_used = dayfirst_used


def parse_dates(
    s: pd.Series,
    timezone: str = "UTC",
    dayfirst: bool | None = None,
    date1904: bool = False,
    time: pd.Series | None = None,
) -> DateResult:
    """Any supported date form → unix seconds; naive values are wall time in ``timezone``.

    Forms: datetime cells, Excel serials (1900/1904), ISO 8601 with or without offset, D.M.Y /
    D/M/Y / M/D/Y with optional time and AM/PM, unix seconds and milliseconds, yyyymmdd, and
    textual months (English, Russian) through dateutil. ``time``: a separate time-of-day column.
    Each distinct value is parsed once.
    """
    fz = _factorize(s) if time is None else None
    if fz is None:
        return _parse_dates(s, timezone, dayfirst, date1904, time)
    codes, uniques = fz
    res = _parse_dates(uniques, timezone, dayfirst, date1904, None)
    seconds = _expand(res.seconds, codes, s.index)
    issues = [
        (
            code,
            _expand_mask(mask, codes, s.index)
            | (pd.Series(codes == -1, index=s.index) if code == "missing-date" else False),
        )
        for code, mask in res.issues
    ]
    return DateResult(seconds, issues, res.dayfirst_used)


@dataclass
class _DateWork:
    """What :func:`_parse_dates` has found so far, step by step (each step takes the values the
    ones before it left in ``rest``)."""

    idx: pd.Index
    naive: pd.Series  # wall-clock datetime64 of naive forms (localised at the end)
    absolute: pd.Series  # unix seconds of offset/unix forms
    failed: pd.Series
    ambiguous: pd.Series
    present: pd.Series
    rest: pd.Series = field(default_factory=lambda: pd.Series(dtype="str"))  # text not parsed yet
    rest_pos: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # in ``s``
    early: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # decoded early
    layout: _Layout | None = None
    layout_known: bool = False  # whether ``layout`` was already chosen (None then means: no fast path)
    decided: bool | None = None  # day-first (True), month-first (False) or not known yet

    @classmethod
    def start(cls, s: pd.Series) -> _DateWork:
        """Nothing parsed yet."""
        idx = s.index
        return cls(
            idx=idx,
            naive=pd.Series(pd.NaT, index=idx, dtype="datetime64[ns]"),
            absolute=pd.Series(np.nan, index=idx, dtype="float64"),
            failed=pd.Series(False, index=idx),
            ambiguous=pd.Series(False, index=idx),
            present=s.notna(),
        )


def _parse_dates(
    s: pd.Series,
    timezone: str = "UTC",
    dayfirst: bool | None = None,
    date1904: bool = False,
    time: pd.Series | None = None,
) -> DateResult:
    """:func:`parse_dates` on the column as given (no per-distinct shortcut)."""
    w = _DateWork.start(s)
    # 1. genuine datetime values (Excel cells or a datetime64 column), and the text of the rest
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        if getattr(s.dtype, "tz", None) is not None:
            w.absolute = w.absolute.where(s.isna(), (s - _EPOCH).dt.total_seconds())
        else:
            w.naive = s.astype("datetime64[ns]")
    else:
        _text_of_column(s, w, dayfirst)
    w.decided = dayfirst
    if len(w.rest) + len(w.early) >= _UNIQUE_MIN_ROWS:
        _fixed_width_column(w, dayfirst)
    if len(w.rest):
        _numeric_dates(w, date1904)
    if len(w.rest):
        _iso_dates(w)
    if len(w.rest):
        _dmy_dates(w)
    if len(w.rest):
        _free_text_dates(w)
    return _date_result(w, timezone, time)


def _datetime_cells(s: pd.Series, w: _DateWork) -> pd.Series:
    """Take the datetime/date objects of an object column (Excel cells); returns where they are."""
    if s.dtype == object:
        is_dt = s.map(lambda v: isinstance(v, dt.datetime | dt.date)).astype(bool)
    else:
        is_dt = pd.Series(False, index=w.idx)
    if bool(is_dt.any()):
        cells = s[is_dt]
        sane = cells.map(lambda v: _PARSE_YEARS[0] <= v.year <= _PARSE_YEARS[1]).astype(bool)
        w.failed[cells.index[~sane.to_numpy()]] = True
        cells = cells[sane]
        aware = cells.map(lambda v: getattr(v, "tzinfo", None) is not None).astype(bool)
        if bool(aware.any()):  # offsets may differ from cell to cell: convert each to UTC
            got = pd.Series(pd.to_datetime(cells[aware].tolist(), utc=True), index=cells.index[aware])
            w.absolute[got.index] = (got - _EPOCH).dt.total_seconds()
        if bool((~aware).any()):
            got = pd.Series(pd.to_datetime(cells[~aware].tolist()), index=cells.index[~aware])
            w.naive[got.index] = got.astype("datetime64[ns]")
    return is_dt


def _text_of_column(s: pd.Series, w: _DateWork, dayfirst: bool | None) -> None:
    """Datetime cells, then the cleaned text of every other value into ``w.rest``.

    A long string column in one fixed-width layout is decoded *before* the clean-up (see below).
    """
    is_dt = _datetime_cells(s, w)
    take = (~is_dt & w.present).to_numpy()
    pos = np.flatnonzero(take)
    raw = s[take]
    has_text = np.zeros(len(w.idx), dtype=bool)
    if isinstance(s.dtype, pd.StringDtype) and len(raw) >= _UNIQUE_MIN_ROWS:
        # the layout is chosen exactly as below (from the first 50 cleaned values); values of
        # exactly its width with digits and separators in place start and end with a digit,
        # so the clean-up would leave them as they are: decode those before it
        w.layout = _pick_layout(_cleaned_head(raw), dayfirst)
        w.layout_known = True
        found = None if w.layout is None else _fixed_width(raw, w.layout)
        if found is not None:
            decoded, used = found
            w.naive.iloc[pos[used]] = decoded.to_numpy()  # positional: no label lookups
            w.early = pos[used]
            raw, pos = raw[~used], pos[~used]
    text = as_text(raw, distinct=False)
    got_text = text.notna().to_numpy()
    w.rest = text[got_text]
    w.rest_pos = pos[got_text]
    if len(w.early) and len(w.early) + len(w.rest) < _UNIQUE_MIN_ROWS:
        # too few dates for the fast path after all (the clean-up removed blanks): undo it
        w.naive.iloc[w.early] = pd.NaT
        text = as_text(s[take], distinct=False)
        got_text = text.notna().to_numpy()
        w.rest, w.rest_pos = text[got_text], np.flatnonzero(take)[got_text]
        w.early = np.zeros(0, dtype=np.int64)
    has_text[w.early] = True
    has_text[w.rest_pos] = True
    w.present = is_dt | pd.Series(has_text, index=w.idx)


def _fixed_width_column(w: _DateWork, dayfirst: bool | None) -> None:
    """1b. fast path: ONE fixed-width layout per column (the one dominant among its first 50
    values), decoded with numpy; every other value goes through the general parsers after it,
    where it also counts as day-first / month-first evidence."""
    if not w.layout_known:
        w.layout = _pick_layout(w.rest.iloc[:50], dayfirst)
    found = None if w.layout is None else _fixed_width(w.rest, w.layout)
    if found is not None:
        decoded, used = found
        w.naive.iloc[w.rest_pos[used]] = decoded.to_numpy()  # positional: no label lookups
        w.rest = w.rest[~used]


def _numeric_dates(w: _DateWork, date1904: bool) -> None:
    """2. plain numbers: Excel serials, unix seconds / ms, yyyymmdd."""
    rest = w.rest
    num = rest.str.extract(_NUM)
    is_num = num[0].notna()
    if bool(is_num.any()):
        ip = num.loc[is_num, 0]
        digits = ip.str.len()
        value = pd.to_numeric(rest[is_num], errors="coerce")
        serial = digits.le(5)
        unix_s = digits.between(9, 10) & num.loc[is_num, 1].isna()
        unix_ms = digits.between(12, 13) & num.loc[is_num, 1].isna()
        ymd_year = ip.str.slice(0, 4).astype("int64")
        ymd = digits.eq(8) & num.loc[is_num, 1].isna() & ymd_year.between(*_PARSE_YEARS)
        base = pd.Timestamp("1904-01-01") if date1904 else pd.Timestamp("1899-12-30")
        if bool(serial.any()):
            secs = (value[serial] * 86400).round()
            w.naive[secs.index] = base + pd.to_timedelta(secs, unit="s")
        if bool(unix_s.any()):
            w.absolute[value[unix_s].index] = value[unix_s].astype("float64")
        if bool(unix_ms.any()):
            w.absolute[value[unix_ms].index] = np.floor(value[unix_ms].astype("float64") / 1000)
        if bool(ymd.any()):
            w.naive[ip[ymd].index] = pd.to_datetime(ip[ymd], format="%Y%m%d", errors="coerce")
        other = ~(serial | unix_s | unix_ms | ymd)
        w.failed[other[other].index] = True
    w.rest = rest[~is_num]


def _iso_dates(w: _DateWork) -> None:
    """3. ISO 8601 and other year-first forms, with or without an offset."""
    iso = w.rest.str.extract(_ISO)
    is_iso = iso["y"].notna()
    if not bool(is_iso.any()):
        return
    g = iso[is_iso]
    frac = g["f"].fillna("0").str.slice(0, 6).str.ljust(6, "0")
    stamp = _assemble(
        _to_num(g, "y"), _to_num(g, "m"), _to_num(g, "d"), _to_num(g, "H"), _to_num(g, "M"), _to_num(g, "S")
    )
    stamp = stamp + pd.to_timedelta(pd.to_numeric(frac), unit="us")
    tz = g["tz"]
    has_tz = tz.notna()
    if bool((~has_tz).any()):
        w.naive[stamp[~has_tz].index] = stamp[~has_tz]
    if bool(has_tz.any()):
        t = tz[has_tz].str.upper()
        zero = t.isin(["Z", "UTC", "GMT"])
        sign = np.where(t.str.startswith("-"), -1, 1)
        hh = pd.to_numeric(t.str.slice(1, 3), errors="coerce").fillna(0)
        mm = pd.to_numeric(t.str.replace(":", "", regex=False).str.slice(3, 5), errors="coerce").fillna(0)
        offset = pd.Series(np.where(zero, 0, sign * (hh * 3600 + mm * 60)), index=t.index)
        st = stamp[has_tz]
        secs = (st - pd.Timestamp("1970-01-01")).dt.total_seconds() - offset
        w.absolute[secs.index] = secs
    w.rest = w.rest[~is_iso]


def dmy_evidence(s: pd.Series) -> tuple[bool, bool]:
    """(a value only day-first reads, a value only month-first reads) among the D/M/Y texts of
    ``s``: what :func:`parse_dates` decides the order from when ``dayfirst`` is not given — a
    file read in parts (bulkimport.bigfile) adds up this evidence to decide once for all parts."""
    text = as_text(s).dropna().str.strip()
    dmy = pd.Series(pd.unique(text.to_numpy()), dtype="str").str.extract(_DMY)
    g = dmy[dmy["a"].notna()]
    if g.empty:
        return False, False
    a, b = _to_num(g, "a"), _to_num(g, "b")
    return bool(((a > 12) & (b <= 12)).any()), bool(((b > 12) & (a <= 12)).any())


def _dmy_dates(w: _DateWork) -> None:
    """4. day/month/year with '.', '/' or '-' (and an optional time, 12- or 24-hour); decides
    day-first or month-first from the values when ``dayfirst`` did not."""
    dmy = w.rest.str.extract(_DMY)
    is_dmy = dmy["a"].notna()
    if not bool(is_dmy.any()):
        return
    g = dmy[is_dmy]
    a, b = _to_num(g, "a"), _to_num(g, "b")
    y = _to_num(g, "y")
    y = y.where(y >= 100, y + 2000)
    hh, bad_ap = _ampm(_to_num(g, "H"), g["ap"])
    dotted = g["sep"].eq(".")
    day_only = (a > 12) & (b <= 12)  # only valid day-first
    month_only = (b > 12) & (a <= 12)  # only valid month-first
    if w.decided is None:
        if bool(day_only.any()) and not bool(month_only.any()):
            w.decided = True
        elif bool(month_only.any()) and not bool(day_only.any()):
            w.decided = False
    if w.decided is None:
        # no evidence either way: dotted dates are day-first by convention; slashed or
        # dashed ones that read differently both ways are ambiguous (an error, see docs)
        first = dotted | day_only
        amb = ~dotted & ~day_only & ~month_only & a.ne(b) & (a <= 12) & (b <= 12)
        w.ambiguous[amb[amb].index] = True
    else:
        first = pd.Series(w.decided, index=g.index)
    day = a.where(first, b)
    month = b.where(first, a)
    stamp = _assemble(y, month, day, hh, _to_num(g, "M"), _to_num(g, "S"))
    stamp = stamp.mask(bad_ap)
    ok = ~w.ambiguous[g.index]
    w.naive[stamp[ok].index] = stamp[ok]
    w.rest = w.rest[~is_dmy]


#: A date that starts with a four-digit year and a separator: year-month-day, never year-day-month.
_YEAR_FIRST_RE = re.compile(r"^\s*\d{4}[-./]\d{1,2}[-./]\d{1,2}(?!\d)")


def _free_text_dates(w: _DateWork) -> None:
    """5. anything else: textual months and rarer layouts, parsed once per distinct value."""
    from dateutil import parser as du

    rest, decided = w.rest, w.decided

    def one(text: str) -> Any:
        txt = _RU_MONTH_RE.sub(_ru_month, text)
        if not re.search(r"(?<!\d)\d{4}(?!\d)", txt):
            return None  # no year: dateutil would fill in today's date
        # A date written year first (2024-05-06 7:00 PM) is year-month-day in every convention;
        # dateutil's dayfirst would read it as 5 June, so it is never asked for one.
        yearfirst = _YEAR_FIRST_RE.match(txt) is not None
        try:
            if yearfirst:
                got = du.parse(txt, yearfirst=True, dayfirst=False)
            else:
                got = du.parse(txt, dayfirst=bool(decided) if decided is not None else True)
        except (ValueError, OverflowError):
            return None
        return got if _PARSE_YEARS[0] <= got.year <= _PARSE_YEARS[1] else None

    parsed = {u: one(u) for u in rest.unique()}
    naive_tab = {k: pd.Timestamp(v) for k, v in parsed.items() if v is not None and v.tzinfo is None}
    abs_tab = {
        k: (pd.Timestamp(v) - _EPOCH).total_seconds()
        for k, v in parsed.items()
        if v is not None and v.tzinfo is not None
    }
    if naive_tab:
        got = rest.map(naive_tab)
        got = got[got.notna()]
        w.naive[got.index] = pd.to_datetime(got.tolist()).astype("datetime64[ns]")
    if abs_tab:
        got2 = rest.map(abs_tab)
        got2 = got2[got2.notna()]
        w.absolute[got2.index] = got2.astype("float64")
    none_keys = [k for k, v in parsed.items() if v is None]
    if none_keys:
        w.failed[rest.index[rest.isin(none_keys)]] = True


def _date_result(w: _DateWork, timezone: str, time: pd.Series | None) -> DateResult:
    """Add a separate time-of-day column, localise wall times, check the range, name the issues."""
    idx, naive, failed, ambiguous, present = w.idx, w.naive, w.failed, w.ambiguous, w.present
    absolute = w.absolute
    if time is not None:
        add = _time_of_day(time.reindex(idx))
        naive = naive.dt.normalize() + pd.to_timedelta(add.fillna(0), unit="s")
        failed = failed | (add.isna() & time.reindex(idx).notna() & naive.notna() & ~ambiguous)

    # wall time → unix seconds in the configured zone (DST gaps shift forward; repeated hour: first)
    has_naive = naive.notna()
    if bool(has_naive.any()):
        local = naive[has_naive].dt.tz_localize(
            ZoneInfo(timezone),
            ambiguous=np.ones(int(has_naive.sum()), dtype=bool),
            nonexistent="shift_forward",
        )
        absolute[local.index] = (local - _EPOCH).dt.total_seconds()

    secs = pd.Series(np.floor(absolute.to_numpy()), index=idx)
    in_range = secs.between(_year_start(_MIN_YEAR), _year_start(_MAX_YEAR), inclusive="left")
    unparsed = present & (secs.isna() | ~in_range) & ~ambiguous
    secs = secs.where(in_range)
    issues: Issues = [
        ("missing-date", ~present),
        ("bad-date", unparsed | (failed & present & ~ambiguous)),
        ("ambiguous-date", ambiguous),
    ]
    secs = secs.where(~(failed & present))
    return DateResult(secs, issues, w.decided)


def _cleaned_head(raw: pd.Series) -> pd.Series:
    """The first 50 values of ``raw`` that :func:`as_text` keeps, cleaned (what picks the layout)."""
    k = 64
    while True:
        head = as_text(raw.iloc[:k], distinct=False).dropna()
        if len(head) >= 50 or k >= len(raw):
            return head.iloc[:50]
        k *= 4


def _pick_layout(head: pd.Series, dayfirst: bool | None) -> _Layout | None:
    """The first fixed-width layout (D.M.Y ones unless ``dayfirst`` is False) that at least half
    of ``head`` (the column's first cleaned values) has the width of, or None."""
    lens = [len(v) for v in head.to_numpy(dtype=object)]
    for layout in _FIXED_LAYOUTS:
        if layout[0] == "dmy" and dayfirst is False:
            continue
        if sum(n == layout[1] for n in lens) >= len(lens) / 2:
            return layout
    return None


def _fixed_width(rest: pd.Series, layout: _Layout) -> tuple[pd.Series, np.ndarray] | None:
    """Rows of ``rest`` in one fixed-width layout → (naive datetime64, positions of ``rest`` decoded).

    None if no value has the layout's width (:func:`_pick_layout` chooses the layout).

    Exports write one layout for the whole column; decoding its digits with numpy instead of a
    per-value parser is what keeps a million dates fast. Rows in other forms, and impossible
    dates (31.02), are left for the general parsers.
    """
    _, width, parts, seps = layout
    if rest.empty:
        return None
    vals = rest.to_numpy(dtype=object)
    if "\x00" in "".join(vals):  # numpy's fixed-width strings drop trailing NULs: measure instead
        lens = np.fromiter((len(v) for v in vals), dtype=np.int64, count=len(vals))
        wide = np.zeros((len(vals), width + 1), dtype=np.uint32)
        sel = lens == width
        wide[sel, :width] = vals[sel].astype(f"U{width}").view(np.uint32).reshape(-1, width)
    else:  # one character more than the layout: a longer value shows a character there
        wide = vals.astype(f"U{width + 1}").view(np.uint32).reshape(-1, width + 1)
        sel = (wide[:, width] == 0) & (wide[:, width - 1] != 0)
    if not sel.any():
        return None
    chars = wide if sel.all() else wide[sel]  # uint32 code points; columns converted one by one
    ok = np.ones(len(chars), dtype=bool)
    for pos, allowed in seps.items():
        hit = np.zeros(len(chars), dtype=bool)
        for c in allowed:
            hit |= chars[:, pos] == ord(c)
        ok &= hit
    num: dict[str, np.ndarray] = {}
    for part, (a, b) in parts.items():
        value = np.zeros(len(chars), dtype=np.int64)
        for k in range(a, b):  # column by column: no per-row reductions
            digit = chars[:, k].astype(np.int64) - 48
            ok &= (digit >= 0) & (digit <= 9)
            value = value * 10 + digit
        num[part] = value
    y, m, d = num["y"], num["m"], num["d"]
    hh, mm, ss = num.get("H", 0 * y), num.get("M", 0 * y), num.get("S", 0 * y)
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    mdays = _MONTH_DAYS[np.clip(m, 0, 12)] + ((m == 2) & leap)
    ok &= (m >= 1) & (m <= 12) & (d >= 1) & (d <= mdays) & (hh <= 23) & (mm <= 59) & (ss <= 59)
    ok &= (y >= _PARSE_YEARS[0]) & (y <= _PARSE_YEARS[1])  # far outside 1970-2099 anyway: bad-date
    # days from civil (Howard Hinnant's algorithm), exact for the proleptic Gregorian calendar
    yy = y - (m <= 2)
    era = np.floor_divide(yy, 400)
    yoe = yy - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    secs = days * 86400 + hh * 3600 + mm * 60 + ss
    index = rest.index[sel][ok]
    used = np.zeros(len(rest), dtype=bool)
    used[np.flatnonzero(sel)[ok]] = True
    return pd.Series(secs[ok].astype("datetime64[s]").astype("datetime64[ns]"), index=index), used


def _year_start(year: int) -> float:
    return float((pd.Timestamp(f"{year}-01-01", tz="UTC") - _EPOCH).total_seconds())


def _time_of_day(t: pd.Series) -> pd.Series:
    """Time-of-day column (``14:05``, ``2:05 PM``, Excel fraction ``0.5868``) → seconds since midnight."""
    text = as_text(t)
    out = pd.Series(np.nan, index=t.index, dtype="float64")
    g = text.str.extract(_TIME)
    ok = g["H"].notna()
    if bool(ok.any()):
        gg = g[ok]
        hh, bad_ap = _ampm(_to_num(gg, "H"), gg["ap"])
        mm, ss = _to_num(gg, "M"), _to_num(gg, "S")
        valid = (hh <= 23) & (mm <= 59) & (ss <= 59) & ~bad_ap
        out[gg.index[valid]] = (hh * 3600 + mm * 60 + ss)[valid].astype("float64")
    frac = text[~ok].str.fullmatch(r"0?\.\d+|0|1")
    frac = frac[frac.fillna(False).astype(bool)]
    if len(frac):
        out[frac.index] = (pd.to_numeric(text[frac.index]) * 86400).round()
    return out


# --------------------------------------------------------------------------------------------------
# people
# --------------------------------------------------------------------------------------------------
_NOT_NAME = re.compile(r"[^\w\s'\-]|[\d_]")


@_unique_wise
def clean_names(s: pd.Series) -> tuple[pd.Series, Issues]:
    """Keep letters, spaces, hyphens and apostrophes; at most 25 characters (warn, never drop the row)."""
    t = as_text(s)
    norm = t.str.replace("’", "'", regex=False).str.replace("ʼ", "'", regex=False)
    cleaned = norm.str.replace(_NOT_NAME, " ", regex=True).str.replace(r"\s+", " ", regex=True).str.strip()
    cleaned = cleaned.mask(cleaned.eq("") | cleaned.str.fullmatch(r"['\-\s]+").fillna(False).astype(bool))
    changed = t.notna() & (cleaned.isna() | cleaned.ne(norm))
    long = cleaned.str.len().gt(MAX_NAME).fillna(False).astype(bool)
    cut = cleaned.str.slice(0, MAX_NAME).str.rstrip(" -'")
    out = cleaned.where(~long, cut)
    return out, [("name-cleaned", changed.fillna(False).astype(bool)), ("name-truncated", long)]


_GENDER = {
    "male": "male",
    "m": "male",
    "man": "male",
    "men": "male",
    "boy": "male",
    "mr": "male",
    "мужской": "male",
    "муж": "male",
    "м": "male",
    "мужчина": "male",
    "мужск": "male",
    "мж": None,
    "female": "female",
    "f": "female",
    "w": "female",
    "woman": "female",
    "women": "female",
    "girl": "female",
    "mrs": "female",
    "ms": "female",
    "женский": "female",
    "жен": "female",
    "ж": "female",
    "женщина": "female",
    "женск": "female",
}


@_unique_wise
def clean_gender(s: pd.Series) -> tuple[pd.Series, Issues]:
    """male/female from common spellings (M/F, «м»/«ж», «муж»/«жен» …); anything else dropped, warned."""
    t = as_text(s)
    key = t.str.lower().str.replace(".", "", regex=False).str.strip()
    out = key.map(lambda k: _GENDER.get(k), na_action="ignore")
    bad = t.notna() & out.isna()
    return out.astype(object).where(out.notna(), None), [("bad-gender", bad)]


@_unique_wise
def clean_phones(s: pd.Series, region: str = "RU", keep_unparsed: bool = False) -> tuple[pd.Series, Issues]:
    """Phones → E.164 by phonenumbers' rules (once per distinct value); unparseable dropped, warned.

    Values already written as ``+<country code> <digits>`` are decided in bulk by
    :func:`_fast_e164` from phonenumbers' own metadata; every other value (and any the fast path
    is not certain of) goes through ``phonenumbers.parse`` + ``is_valid_number``. With
    ``keep_unparsed`` (option skip_phone_validate) an unparseable phone is sent as written.
    """
    import phonenumbers

    labels = s.index
    t = as_text(s).reset_index(drop=True)  # positional: the labels may repeat (set back below)

    def one(raw: str) -> str | None:
        try:
            num = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(num):
            return None
        return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)

    decided, fast = _fast_e164(t)
    out = fast.astype(object).where(decided, None)
    rest = t.notna() & ~decided
    if bool(rest.any()):
        slow = _per_unique(t[rest], one)
        out[slow.index] = slow
    out = out.where(out.notna(), None)
    bad = t.notna() & out.isna()
    if keep_unparsed:
        out = out.where(~bad, t)
        bad = pd.Series(False, index=t.index)
    return out.set_axis(labels), [("bad-phone", bad.set_axis(labels))]


#: ``+<digits>`` with spaces, hyphens or brackets between digits: the only form :func:`_fast_e164` decides.
_PLUS_FORM = r"\+[0-9][0-9 \-()]*[0-9]"  # ASCII digits only: phonenumbers maps other digits
_DESC_NAMES = (
    "mobile",
    "fixed_line",
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)


def _matches_desc(nsn: pd.Series, desc: Any) -> pd.Series:
    """Vectorised ``phonenumbers._is_number_matching_desc``: possible length, then full pattern match."""
    if desc is None or not desc.national_number_pattern:
        return pd.Series(False, index=nsn.index)
    ok = pd.Series(True, index=nsn.index)
    if len(desc.possible_length) > 0:
        ok = nsn.str.len().isin(list(desc.possible_length))
    if bool(ok.any()):
        ok = ok & nsn.str.fullmatch(desc.national_number_pattern).fillna(False).astype(bool)
    return ok


def _type_known(nsn: pd.Series, meta: Any) -> pd.Series:
    """Vectorised ``_number_type_helper(nsn, meta) != UNKNOWN``: the general pattern and any type's."""
    known = _matches_desc(nsn, meta.general_desc)
    undecided = known.copy()
    hit = pd.Series(False, index=nsn.index)
    for name in _DESC_NAMES:  # any one type decides (their order only picks WHICH type it is)
        if not bool(undecided.any()):
            break
        got = _matches_desc(nsn[undecided], getattr(meta, name))
        hit[got[got].index] = True
        undecided &= ~hit
    return known & hit


def _phone_max_input() -> int:
    """The longest input ``phonenumbers.parse`` accepts (its private constant; 250 if it moves)."""
    from phonenumbers import phonenumberutil

    return int(getattr(phonenumberutil, "_MAX_INPUT_STRING_LENGTH", 250))


def _fast_e164(t: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``(decided, e164)`` for values in international ``+<digits>`` form, from phonenumbers' metadata.

    Replicates, for this form only, what ``phonenumbers.parse(v, region)`` then
    ``is_valid_number`` and E.164 formatting do: the country code is the shortest known 1-3 digit
    prefix (the default region plays no part after a '+'), the national number is the rest, and
    validity is the region choice of ``region_code_for_number`` (first region whose
    ``leading_digits`` match or whose patterns know the number) followed by the type patterns.
    Undecided (left to phonenumbers itself): no known country code, non-geographic codes,
    national numbers a region's ``national_prefix_for_parsing`` could strip, leading zeros
    (Italian-style), lengths outside 7-17 digits, and input longer than phonenumbers accepts.
    tests/test_phones.py compares the verdicts with phonenumbers on generated numbers.
    """
    from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

    decided = pd.Series(False, index=t.index)
    e164 = pd.Series(np.nan, index=t.index, dtype="str")
    # phonenumbers rejects longer input as TOO_LONG whatever it holds: leave that to it
    short = t.str.len().le(_phone_max_input()).fillna(False).astype(bool)
    form = short & t.str.fullmatch(_PLUS_FORM).fillna(False).astype(bool)
    if not bool(form.any()):
        return decided, e164
    digits = t[form].str.replace(r"[^0-9]", "", regex=True)
    digits = digits[digits.str.len().between(7, 17)]
    cc = pd.Series(0, index=digits.index, dtype="int64")
    for width in (3, 2, 1):  # the shortest known prefix wins: assign longest first, overwrite
        head = pd.to_numeric(digits.str.slice(0, width), errors="coerce").fillna(0).astype("int64")
        known = head.isin(list(COUNTRY_CODE_TO_REGION_CODE)) & digits.str.slice(0, 1).ne("0")
        cc = cc.where(~known, head)
    for code in pd.unique(cc[cc > 0]).tolist():
        regions = COUNTRY_CODE_TO_REGION_CODE[code]
        if regions[0] == "001":
            continue  # non-geographic entity: phonenumbers decides
        main = PhoneMetadata.metadata_for_region(regions[0], None)
        if main is None:
            continue
        nsn = digits[cc == code].str.slice(len(str(code)))
        keep = nsn.str.len().between(2, 17) & nsn.str.slice(0, 1).ne("0")
        if main.national_prefix_for_parsing:  # parse might strip a national prefix: not certain
            keep &= ~nsn.str.match(main.national_prefix_for_parsing).fillna(True).astype(bool)
        nsn = nsn[keep]
        if nsn.empty:
            continue
        valid = pd.Series(False, index=nsn.index)
        if len(regions) == 1:
            valid = _type_known(nsn, main)
        else:
            open_ = pd.Series(True, index=nsn.index)  # no region chosen yet
            for region in regions:
                meta = PhoneMetadata.metadata_for_region(region, None)
                if meta is None or not bool(open_.any()):
                    continue
                cand = nsn[open_]
                if meta.leading_digits is not None:
                    chosen = cand.str.match(meta.leading_digits).fillna(False).astype(bool)
                    chosen_idx = chosen[chosen].index
                    valid[chosen_idx] = _type_known(nsn[chosen_idx], meta)
                else:
                    known = _type_known(cand, meta)
                    chosen_idx = known[known].index
                    valid[chosen_idx] = True
                open_[chosen_idx] = False
        decided[nsn.index] = True
        e164[nsn.index[valid.to_numpy()]] = "+" + str(code) + nsn[valid]
    return decided, e164


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL = rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\.{_LABEL})+$"


@_unique_wise
def clean_emails(s: pd.Series) -> tuple[pd.Series, Issues]:
    """Syntactically valid addresses kept (lower-cased domain untouched); bad ones dropped with a warning."""
    t = as_text(s)
    ok = t.str.fullmatch(_EMAIL).fillna(False).astype(bool) & t.str.len().le(254).fillna(False).astype(bool)
    bad = t.notna() & ~ok
    return t.where(ok), [("bad-email", bad)]


_URL = r"(?i)^https?://[^\s/?#.][^\s]*$"


@_unique_wise
def clean_urls(s: pd.Series) -> tuple[pd.Series, Issues]:
    """http(s) URLs kept; anything else dropped with a warning (``bad-url``)."""
    t = as_text(s)
    ok = t.str.match(_URL).fillna(False).astype(bool)
    bad = t.notna() & ~ok
    return t.where(ok), [("bad-url", bad)]


def _per_unique(t: pd.Series, fn: Callable[[str], Any]) -> pd.Series:
    """Apply ``fn`` once per distinct non-missing value."""
    present = t.dropna()
    if present.empty:
        return pd.Series(None, index=t.index, dtype=object)
    uniq = present.unique()
    table = {u: fn(u) for u in uniq}
    res = t.map(table, na_action="ignore").astype(object)
    return res.where(res.notna(), None)


@_unique_wise
def clean_ids(s: pd.Series, max_len: int = 255) -> tuple[pd.Series, Issues]:
    """External ids: text, stripped; longer than ``max_len`` is an error (``bad-id``)."""
    t = as_text(s)
    bad = t.str.len().gt(max_len).fillna(False).astype(bool)
    return t.where(~bad), [("bad-id", bad)]


@_unique_wise
def clean_operator_ids(s: pd.Series) -> tuple[pd.Series, Issues]:
    """Bitrix24 employee ids: positive whole numbers → int64 (NaN when missing)."""
    t = as_text(s)
    t = t.str.replace(r"\.0+$", "", regex=True)
    ok = t.str.fullmatch(r"[1-9]\d{0,17}").fillna(False).astype(bool)
    out = pd.to_numeric(t.where(ok), errors="coerce")
    bad = t.notna() & ~ok
    return out, [("bad-operator-id", bad)]


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------
_IS_URL = r"(?i)^https?://[^\s/?#]+\S*$"


@_unique_wise
def parse_files(
    s: pd.Series, base_url: str | None = None, folder: str | None = None
) -> tuple[pd.Series, Issues]:
    """Cells with one or more URLs → ``[{"url", "name"}]`` per row; local paths need ``base_url``.

    Separators: newline, comma, semicolon, and spaces between URLs (a local path may contain
    spaces). ``name`` is the last path segment (decoded).
    A row with any entry that is neither http(s) nor a local path under ``base_url`` is
    ``bad-file-url`` (an error: a missing attachment would silently change the message).
    """
    t = as_text(s)
    out = pd.Series(None, index=t.index, dtype=object)
    bad_rows = pd.Series(False, index=t.index)
    present = t.dropna()
    if present.empty:
        return out, [("bad-file-url", bad_rows)]
    pieces = present.str.split(r"[\r\n;,]+", regex=True).explode().str.strip()
    has_url = pieces.str.contains("://", regex=False).fillna(False).astype(bool)
    if bool(has_url.any()):  # URLs never contain spaces; local paths may
        pieces = pieces.astype(object).where(~has_url, pieces.str.split(r"\s+", regex=True))
    exploded = pieces.explode()
    rows = exploded.index.to_numpy()
    parts = pd.Series(exploded.to_numpy(), dtype="str")  # positional index: a row may have many parts
    keep_part = (parts.notna() & parts.ne("")).to_numpy()
    rows, parts = rows[keep_part], parts[keep_part].reset_index(drop=True)
    is_url = parts.str.match(_IS_URL).fillna(False).astype(bool)
    urls = parts.where(is_url)
    if base_url is not None:
        local = parts[~is_url]
        if len(local):
            rel = local.str.replace("\\", "/", regex=False)
            if folder:
                prefix = folder.replace("\\", "/").rstrip("/") + "/"
                rel = rel.where(~rel.str.startswith(prefix), rel.str.slice(len(prefix)))
            rel = rel.str.replace(r"^(\./)+", "", regex=True).str.lstrip("/")
            bad_local = rel.str.contains(r"(?:^|/)\.\.(?:/|$)|^[A-Za-z]:|^file:", regex=True).fillna(True)
            joined = base_url.rstrip("/") + "/" + rel.map(lambda r: quote(r, safe="/"))
            urls[joined.index] = joined.where(~bad_local)
    bad = urls.isna().to_numpy()
    bad_rows[pd.unique(rows[bad])] = True
    good = urls[~bad]
    good_rows = rows[~bad]
    if len(good):
        tail = good.str.replace(r"[?#].*$", "", regex=True).str.rstrip("/").str.rsplit("/", n=1).str[-1]
        names = tail.map(unquote).str.strip()
        bare = good.str.fullmatch(r"(?i)https?://[^/]+/?").fillna(False).astype(bool)
        names = names.where(names.ne("") & ~bare, "file")
        lists: dict[Any, list[dict[str, str]]] = {}
        for row, u, n in zip(good_rows.tolist(), good.tolist(), names.tolist(), strict=True):
            lists.setdefault(row, []).append({"url": u, "name": n})
        keep = [r for r in lists if not bad_rows[r]]
        if keep:
            out[keep] = pd.Series({r: lists[r] for r in keep}, dtype=object)
    return out.where(out.notna(), None), [("bad-file-url", bad_rows)]
