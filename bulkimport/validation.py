"""Canonical frame → tidy failures: every problem of every row (collect-all), with its catalogue code.

:func:`prepare` does the work shared with the plan: it maps the source columns onto the target
fields, cleans every value (bulkimport.values), resolves conversations, operators and customers,
fills generated message ids, and records each problem as one failures row
(``row, field, code, level, message, value``). :func:`validate` returns just the failures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import codes
from .attachments import apply_rules, files_base
from .errors import InputError
from .mapping import FIELDS, Mapping
from .sources import Source
from .values import (
    as_text,
    clean_emails,
    clean_gender,
    clean_ids,
    clean_names,
    clean_operator_ids,
    clean_phones,
    clean_urls,
    lone_surrogates,
    parse_dates,
    parse_files,
    replace_surrogates,
    too_long_text,
)

#: Customer fields copied from the conversation's customer rows onto every row of that customer.
#: Columns of the tidy failures frame (one row per problem of a row).
FAILURE_COLUMNS = ["row", "field", "code", "level", "message", "value"]

USER_FIELDS = tuple(f for f in FIELDS if f.startswith("user.") and f != "user.id")
CHAT_FIELDS = ("chat.name", "chat.url")


@dataclass
class Prepared:
    """The cleaned, canonical frame (one row per source row) and the failures found on the way."""

    canonical: pd.DataFrame  # columns: key, FIELDS that are mapped, operator, pos
    failures: pd.DataFrame
    invalid: pd.Series  # bool per row
    mapping: Mapping


class _Collector:
    """Accumulates (code, field, mask, raw values) and renders the failures frame once."""

    def __init__(self, index: pd.Index) -> None:
        self.index = index
        self.parts: list[pd.DataFrame] = []
        self.error_mask = pd.Series(False, index=index)

    def add(self, code: str, field: str, mask: pd.Series, raw: pd.Series | None) -> None:
        mask = mask.reindex(self.index, fill_value=False).fillna(False).astype(bool)
        if not bool(mask.any()):
            return
        entry = codes.get(code)
        rows = self.index[mask.to_numpy()]
        if raw is None:
            value = pd.Series(None, index=rows, dtype=object)
        else:
            value = as_text(raw.reindex(rows), strip=False).astype(object)
            value = value.where(value.notna(), None)
        self.parts.append(
            pd.DataFrame(
                {
                    "row": rows,
                    "field": field,
                    "code": entry.code,
                    "level": entry.level,
                    "message": entry.render(field=field),
                    "value": value.to_numpy(),
                }
            )
        )
        if entry.level == "error":
            self.error_mask = self.error_mask | mask

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in FAILURE_COLUMNS})
        out = pd.concat(self.parts, ignore_index=True)
        pos = pd.Series(np.arange(len(self.index)), index=self.index)
        order = np.lexsort((out.index.to_numpy(), pos.reindex(out["row"]).to_numpy()))
        return out.iloc[order].reset_index(drop=True)[FAILURE_COLUMNS]


def _source(df: pd.DataFrame, mapping: Mapping, f: str) -> pd.Series | None:
    """The raw series feeding field ``f`` (joined with spaces for a list of columns), or None."""
    if f in mapping.columns:
        cols = mapping.columns[f]
        if isinstance(cols, str):
            return df[cols]
        if f == "message.date":
            return df[cols[0]]
        parts = [as_text(df[c]) for c in cols]
        joined = parts[0].fillna("")
        for p in parts[1:]:
            joined = joined.str.cat(p.fillna(""), sep=" ")
        return joined.str.strip()
    if f in mapping.constants:
        return pd.Series(str(mapping.constants[f]), index=df.index, dtype="str")
    return None


def prepare(df: pd.DataFrame, mapping: Mapping | None = None) -> Prepared:
    """Map, clean and check every row; resolve conversations, customers, operators and ids."""
    if mapping is None:
        mapping = Mapping.guess(df)
    mapping.check(df)
    if not df.index.is_unique:
        raise InputError(
            "the frame's index must be unique (it holds the row ids); use df.reset_index(drop=True)"
        )
    if bool(df.index.hasnans):
        raise InputError(
            "the frame's index has missing values (it holds the row ids); use df.reset_index(drop=True)"
        )
    opts = mapping.options
    idx = df.index
    n = len(df)
    out = pd.DataFrame(index=idx)
    col = _Collector(idx)
    raw: dict[str, pd.Series] = {}
    for f in (
        "chat.id",
        "chat.name",
        "chat.url",
        "user.id",
        *USER_FIELDS,
        "message.id",
        "message.date",
        "message.text",
        "message.files",
        "message.user_id",
    ):
        s = _source(df, mapping, f)
        if s is not None:
            raw[f] = s

    # ids
    for f in ("chat.id", "user.id", "message.id"):
        if f in raw:
            out[f], issues = clean_ids(raw[f])
            for code, mask in issues:
                col.add(code, f, mask, raw[f])
        else:
            out[f] = pd.Series(np.nan, index=idx, dtype="str")

    # operators: message.user_id directly, or the author column through [operators]
    op = pd.Series(np.nan, index=idx, dtype="float64")
    if "message.user_id" in raw:
        op, issues = clean_operator_ids(raw["message.user_id"])
        for code, mask in issues:
            col.add(code, "message.user_id", mask, raw["message.user_id"])
    author_col = opts.get("author")
    if author_col and mapping.operators:
        table = {str(k).strip().casefold(): v for k, v in mapping.operators.items()}
        # authors repeat (a few operators, a few customer spellings): look each distinct one up once
        # (factorize the TEXT form: on raw objects pandas counts True and 1 as one value)
        codes_, uniques = pd.factorize(as_text(df[author_col]), use_na_sentinel=True)
        names = pd.Series(np.asarray(uniques, dtype=object), dtype="str").str.casefold()
        ids = pd.to_numeric(names.map(table), errors="coerce").to_numpy(dtype="float64")
        found = np.append(ids, np.nan)[codes_]  # code -1 (missing author) → NaN
        op = op.fillna(pd.Series(found, index=idx))
    out["message.user_id"] = op
    out["operator"] = op.notna()

    # dates
    time = None
    date_cols = mapping.columns.get("message.date")
    if isinstance(date_cols, list) and len(date_cols) > 1:
        time = df[date_cols[1]]
    if "message.date" in raw:
        res = parse_dates(
            raw["message.date"],
            timezone=opts["timezone"],
            dayfirst=opts["dayfirst"],
            date1904=bool(df.attrs.get("date1904", False)),
            time=time,
        )
        out["message.date"] = res.seconds
        date_raw = raw["message.date"]
        if time is not None:
            date_raw = as_text(date_raw).fillna("").str.cat(as_text(time).fillna(""), sep=" ").str.strip()
        for code, mask in res.issues:
            col.add(code, "message.date", mask, date_raw)
    else:
        out["message.date"] = np.nan
        col.add("missing-date", "message.date", pd.Series(True, index=idx), None)

    # content
    if "message.text" in raw:
        text = as_text(raw["message.text"], strip=False)
        col.add("text-too-long", "message.text", too_long_text(text), None)
    else:
        text = pd.Series(np.nan, index=idx, dtype="str")
    out["message.text"] = text
    files = pd.Series(None, index=idx, dtype=object)
    if "message.files" in raw:
        files, issues = parse_files(raw["message.files"], files_base(opts), opts.get("files_folder"))
        for code, mask in issues:
            col.add(code, "message.files", mask, raw["message.files"])
        files_present = files.notna() | issues[0][1]
        files, text, masks, paths = apply_rules(files, text, opts)  # local files: missing, too large
        for code, mask in masks.items():
            col.add(code, "message.files", mask, pd.Series(paths, index=list(paths), dtype=object))
        out["message.text"] = text
    else:
        files_present = pd.Series(False, index=idx)
    out["message.files"] = files
    col.add("missing-content", "message.text", text.isna() & ~files_present, None)

    # people and chat details
    cleaners: dict[str, Any] = {
        "user.name": clean_names,
        "user.last_name": clean_names,
        "user.email": clean_emails,
        "user.phone": lambda s: clean_phones(s, opts["phone_region"], bool(opts["skip_phone_validate"])),
        "user.gender": clean_gender,
        "user.url": clean_urls,
        "user.picture": clean_urls,
        "chat.url": clean_urls,
        "chat.name": lambda s: (as_text(s), []),
    }
    for f, fn in cleaners.items():
        if f in raw:
            values, issues = fn(raw[f])
            out[f] = values
            warn_rows = ~out["operator"] if f.startswith("user.") else pd.Series(True, index=idx)
            for code, mask in issues:  # operator rows' user fields are not sent: no warnings for them
                col.add(code, f, mask & warn_rows, raw[f])

    # text no request can carry (lone surrogates, from a DataFrame built in Python or a lenient
    # decoder): the row is refused, and the cell is made encodable so that ids, the fingerprint
    # and the report still work for it (raw value left out of the failure: it cannot be printed)
    for f in ("chat.id", "user.id", "message.id", "message.text", *USER_FIELDS, *CHAT_FIELDS):
        if f in out.columns and (out[f].dtype == object or isinstance(out[f].dtype, pd.StringDtype)):
            bad = lone_surrogates(out[f])
            if bool(bad.any()):
                col.add("bad-characters", f, bad, None)
                out[f] = replace_surrogates(out[f], bad)

    # conversations: chat.id, defaulting to user.id (grouping works on integer codes: fast)
    key = out["chat.id"].fillna(out["user.id"])
    has_key = key.notna()
    conv = pd.factorize(key)[0]  # -1: no conversation
    has_uid = out["user.id"].notna()
    pos = np.arange(n)
    out["pos"] = pos
    cand = pd.DataFrame(
        {"conv": conv, "op": out["operator"].to_numpy(), "date": out["message.date"].to_numpy(), "pos": pos}
    )[(has_uid & has_key).to_numpy()]
    cand = cand.sort_values(["op", "date", "pos"], na_position="last", kind="stable").drop_duplicates("conv")
    # the conversation's primary customer: its first customer row (operator rows only as a last resort)
    primary = pd.Series(out["user.id"].to_numpy()[cand["pos"].to_numpy()], index=cand["conv"].to_numpy())
    fill = (~has_uid & has_key).to_numpy()
    if bool(fill.any()):
        out.loc[fill, "user.id"] = primary.reindex(conv[fill]).to_numpy()
    col.add("no-conversation", "chat.id", ~has_key, None)
    still = has_key & out["user.id"].isna()
    col.add("no-customer", "user.id", still & out["operator"], None)
    col.add("missing-user-id", "user.id", still & ~out["operator"], None)
    out["key"] = key
    out["conv"] = conv
    out["cust"] = pd.factorize(out["user.id"])[0]

    # one user block per (conversation, customer): first value per field from the customer's own rows
    present_user = [f for f in USER_FIELDS if f in out.columns]
    if present_user:
        src = out.loc[
            (~out["operator"] & out["user.id"].notna() & has_key).to_numpy(),
            ["conv", "cust", "message.date", "pos", *present_user],
        ]
        src = src.sort_values(["message.date", "pos"], na_position="last", kind="stable")
        block = src.groupby(["conv", "cust"], sort=False)[present_user].first()
        joined = out[["conv", "cust"]].join(block, on=["conv", "cust"])
        for f in present_user:
            out[f] = joined[f]
    present_chat = [f for f in CHAT_FIELDS if f in out.columns]
    if present_chat:
        srt = out.sort_values(["message.date", "pos"], na_position="last", kind="stable")
        cblock = srt.groupby("conv", sort=False)[present_chat].first()
        joined = out[["conv"]].join(cblock, on="conv")
        for f in present_chat:
            out[f] = joined[f].where(has_key)

    # message ids: given, or a stable hash of conversation, time, content and occurrence
    mid = out["message.id"]
    need = mid.isna() & key.notna()
    if bool(need.all()):  # no ids in the input: no partial frame to copy
        out["message.id"] = _generated_ids(out)
    elif bool(need.any()):
        out.loc[need, "message.id"] = _generated_ids(out[need])
    if "message.id" in raw:  # generated ids cannot repeat within a chat
        dup = out["message.id"].notna() & key.notna() & out.duplicated(["conv", "message.id"], keep="first")
        col.add("duplicate-message-id", "message.id", dup & ~need, raw.get("message.id"))

    failures = col.frame()
    invalid = col.error_mask.copy()
    return Prepared(out, failures, invalid, mapping)


def _generated_ids(sub: pd.DataFrame) -> pd.Series:
    """Deterministic ids for rows without one: same file → same ids (occurrence counts repeats).

    64 bits of pandas' vectorised SipHash (the values of ``hash_pandas_object`` with a fixed key)
    over the conversation, the time, the text, the file URLs and the occurrence number of
    identical content: ids only need to be unique within a chat, where 64 bits leave no practical
    chance of a collision. Each column is hashed once per distinct value where values repeat.
    """
    files = pd.Series("", index=sub.index, dtype="str")
    has = sub["message.files"].notna()
    if bool(has.any()):
        files[has] = sub.loc[has, "message.files"].map(lambda v: " ".join(f["url"] for f in v))
    conv = sub["conv"].to_numpy()
    d = sub["message.date"].fillna(-1).astype("int64").to_numpy()
    t = sub["message.text"].fillna("\x00")
    # occurrence number of identical content: only rows sharing conversation and time can repeat
    n = np.zeros(len(sub), dtype="int64")
    cand = _repeated_pairs(conv, d)
    if cand.any():
        same = pd.DataFrame(
            {
                "c": conv[cand],
                "d": d[cand],
                "t": pd.factorize(t[cand])[0],
                "f": pd.factorize(files[cand])[0],
            }
        )
        n[cand] = same.groupby(["c", "d", "t", "f"], sort=False).cumcount().to_numpy()
    key = _IDS_KEY
    hashed = _combine_hashes(
        [
            _hash_by_value(sub["key"].astype("str"), conv),
            pd.util.hash_array(d, hash_key=key, categorize=False),
            pd.util.hash_array(t.array, hash_key=key, categorize=False),
            _hash_files(files, has.to_numpy()),
            pd.util.hash_array(n, hash_key=key, categorize=False),
        ]
    )
    hexed = hashed.astype(">u8").tobytes().hex()
    ids = [f"bi-{hexed[i : i + 16]}" for i in range(0, len(hexed), 16)]
    return pd.Series(ids, index=sub.index, dtype="str")


_IDS_KEY = "bulkimport-ids-1"


def _repeated_pairs(conv: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Rows whose (conversation, time) pair occurs more than once (one int64 key when it fits)."""
    if len(d) == 0:
        return np.zeros(0, dtype=bool)
    lo, span = int(d.min()), int(d.max()) - int(d.min()) + 1
    c = conv.astype("int64") - int(conv.min())
    if int(c.max()) * span + span < 2**62:
        key = c * span + (d - lo)
        return pd.Series(key).duplicated(keep=False).to_numpy()
    return pd.DataFrame({"c": conv, "d": d}).duplicated(keep=False).to_numpy()


def _hash_by_value(s: pd.Series, codes: np.ndarray) -> np.ndarray:
    """``hash_array`` of a column whose rows repeat (``codes``: equal code ⇔ equal value): each
    distinct value hashed once (what pandas' ``categorize=True`` does, without factorizing text)."""
    first = pd.Series(codes).drop_duplicates()
    uniq = s.array[first.index.to_numpy()]
    table = np.empty(int(codes.max()) + 1 if len(codes) else 0, dtype="uint64")
    table[first.to_numpy()] = pd.util.hash_array(uniq, hash_key=_IDS_KEY, categorize=False)
    return table[codes]


def _hash_files(files: pd.Series, has: np.ndarray) -> np.ndarray:
    """``hash_array`` of the file-URL column: most rows have no files (the empty string)."""
    out = np.full(len(files), pd.util.hash_array(np.array([""], dtype=object), hash_key=_IDS_KEY)[0])
    if has.any():
        out[has] = pd.util.hash_array(files.array[has], hash_key=_IDS_KEY, categorize=False)
    return out


def _combine_hashes(arrays: list[np.ndarray]) -> np.ndarray:
    """Row hashes from column hashes exactly as ``pandas.util.hash_pandas_object`` combines a
    frame's columns (CPython's tuple-hash mixing), so ids keep their values.
    tests/test_validate.py pins the equality."""
    num = len(arrays)
    mult = np.uint64(1000003)
    out = np.zeros_like(arrays[0]) + np.uint64(0x345678)
    for i, a in enumerate(arrays):
        inverse = num - i
        out ^= a
        out *= mult
        mult += np.uint64(82520 + inverse + inverse)
    return out + np.uint64(97531)


def validate(df: pd.DataFrame | Source, mapping: Mapping | None = None) -> pd.DataFrame:
    """Every problem of every row: a frame with columns FAILURE_COLUMNS (errors and warnings).
    A :class:`~bulkimport.sources.Source` is validated with its own mapping, plus its reader's warnings."""
    if isinstance(df, Source):
        return df.with_notes(prepare(df.frame, mapping if mapping is not None else df.mapping).failures)
    return prepare(df, mapping).failures

