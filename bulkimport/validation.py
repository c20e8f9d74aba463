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

    def add(self, code: str, field: str, mask: pd.Series | np.ndarray, raw: pd.Series | None) -> None:
        if not isinstance(mask, pd.Series):  # a boolean array aligned with the frame's rows
            mask = pd.Series(mask, index=self.index)
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


def conversation_keys(df: pd.DataFrame, mapping: Mapping) -> pd.Series:
    """Each row's conversation key as :func:`prepare` finds it (chat.id, else user.id; missing:
    none), without the rest of the checks: what splits a big file into parts of whole
    conversations (:mod:`bulkimport.bigfile`)."""
    keys = []
    for f in ("chat.id", "user.id"):
        raw = _source(df, mapping, f)
        keys.append(clean_ids(raw)[0] if raw is not None else pd.Series(np.nan, index=df.index, dtype="str"))
    return keys[0].fillna(keys[1])


def _system_operator(ops: pd.Series, opts: Any) -> tuple[pd.Series, pd.Series | None]:
    """With ``unmapped_operators = "system"`` an operator id of 0 is the portal's system user
    (message.user_id = 0): those cells are set aside from the employee-id check."""
    if opts.get("unmapped_operators") != "system":
        return ops, None
    zero = as_text(ops).str.strip().eq("0").fillna(False).astype(bool)
    return ops.mask(zero), zero


def prepare(df: pd.DataFrame, mapping: Mapping | None = None) -> Prepared:
    """Map, clean and check every row; resolve conversations, customers, operators and ids."""
    if mapping is None:
        mapping = Mapping.guess(df)
    _check_frame(df, mapping)
    idx = df.index
    out = pd.DataFrame(index=idx)
    col = _Collector(idx)
    raw = {f: s for f in _RAW_ORDER if (s := _source(df, mapping, f)) is not None}
    _ids(out, raw, col)
    op, operator = _sides(df, mapping, _operators(df, mapping, raw, col), col)
    out["message.user_id"] = op
    out["operator"] = operator
    _dates(df, mapping, raw, col, out)
    _content(mapping, raw, col, out)
    _people(mapping, raw, col, out)
    _surrogates(out, col)
    _merged_people(out, col)  # before the user blocks make every row of a customer alike
    has_key = _conversations(out, col)
    _user_blocks(out, has_key)
    _message_ids(out, raw, col)
    _unmapped_authors(df, mapping, out, col)
    _duplicate_rows(df, mapping, out, col)
    _read_notes(df, col)
    failures = col.frame()
    invalid = col.error_mask.copy()
    return Prepared(out, failures, invalid, mapping)


#: Fields read from the source, in the order they are cleaned.
_RAW_ORDER = (
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
)


def _check_frame(df: pd.DataFrame, mapping: Mapping) -> None:
    """Mapped columns exist, required fields are mapped and the index can serve as row ids."""
    mapping.check(df)
    if not df.index.is_unique:
        raise InputError(
            "the frame's index must be unique (it holds the row ids); use df.reset_index(drop=True)"
        )
    if bool(df.index.hasnans):
        raise InputError(
            "the frame's index has missing values (it holds the row ids); use df.reset_index(drop=True)"
        )


def _ids(out: pd.DataFrame, raw: dict[str, pd.Series], col: _Collector) -> None:
    """chat.id, user.id and message.id as trimmed text (``bad-id`` beyond 255 characters)."""
    for f in ("chat.id", "user.id", "message.id"):
        if f in raw:
            out[f], issues = clean_ids(raw[f])
            for code, mask in issues:
                col.add(code, f, mask, raw[f])
        else:
            out[f] = pd.Series(np.nan, index=out.index, dtype="str")


def _operators(df: pd.DataFrame, mapping: Mapping, raw: dict[str, pd.Series], col: _Collector) -> pd.Series:
    """Employee id per row (NaN: a customer row): message.user_id, else the author via [operators]."""
    idx = df.index
    opts = mapping.options
    op = pd.Series(np.nan, index=idx, dtype="float64")
    if "message.user_id" in raw:
        ops_raw, system = _system_operator(raw["message.user_id"], opts)
        op, issues = clean_operator_ids(ops_raw)
        for code, mask in issues:
            col.add(code, "message.user_id", mask, raw["message.user_id"])
        if system is not None:
            op = op.mask(system, 0.0)  # --unmapped-operators system: the portal's system user
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
    return op


def _sides(df: pd.DataFrame, mapping: Mapping, op: pd.Series, col: _Collector) -> tuple[pd.Series, pd.Series]:
    """(employee id, operator-side mask) per row. Without a side column a row is the operator's
    when it has an employee id; with one (option side: Agent? yes/no, Direction in/out) the column
    decides, the employee ids apply to its operator rows only, a cell of neither side is
    ``bad-side`` and an operator row without an employee id is ``unmapped-operator`` (or the
    portal's system user, id 0, with unmapped_operators = "system")."""
    side_col = mapping.options.get("side")
    if not side_col:
        return op, op.notna()
    operator, bad = mapping.side_of(df[side_col])
    col.add("bad-side", str(side_col), bad, as_text(df[side_col]))
    op = op.where(operator)
    unmapped = operator & op.isna()
    if mapping.options.get("unmapped_operators") == "system":
        return op.mask(unmapped, 0.0), operator
    who = mapping.options.get("author")
    col.add("unmapped-operator", "message.user_id", unmapped, as_text(df[who] if who else df[side_col]))
    return op, operator


def check_side_operators(failures: pd.DataFrame, mapping: Mapping, where: str) -> None:
    """Refuse (InputError, one line) a plan whose side column marks rows as the operator's that map
    to no employee: sending the customers' half of each conversation now and the replies later
    would put them out of order. Names the authors (or rows) and each way to fix it."""
    bad = failures[failures["code"].eq("unmapped-operator")] if len(failures) else failures
    if bad.empty:
        return
    side = mapping.options.get("side")
    if mapping.options.get("author"):
        counts = bad["value"].fillna("(no author)").value_counts()
        who = ", ".join(f"{a!r} ({n} rows)" for a, n in counts.head(8).items())
        who = f"authors {who}" + (f" and {len(counts) - 8} more" if len(counts) > 8 else "")
        first = str(counts.index[0])
        lib = f'operators={{"{first}": <employee id>}} ([operators] of the mapping)'
        cli = f"--operator '{first}=<employee id>' (repeatable; or [operators] in the mapping file)"
    else:
        rows = ", ".join(str(r) for r in bad["row"].head(5)) + (" …" if len(bad) > 5 else "")
        who = f"rows {rows} (no author column names them)"
        lib = cli = '"message.user_id" = <employee id> under [constants] (one employee for all replies)'
    head = (
        f"{where}: {len(bad)} row(s) the side column {side!r} marks as the operator's map to no "
        f"Bitrix24 employee: {who}; give their employee id with "
    )
    tail = " or map message.user_id to a column of employee ids, or send them as the portal's system user"
    raise InputError(
        head + lib + tail + ' (unmapped_operators="system")',
        cli=head + cli + tail + " (--unmapped-operators system)",
    )


def _dates(
    df: pd.DataFrame, mapping: Mapping, raw: dict[str, pd.Series], col: _Collector, out: pd.DataFrame
) -> None:
    """message.date → unix seconds in the mapping's zone (one column, or a date and a time column)."""
    opts = mapping.options
    time = None
    date_cols = mapping.columns.get("message.date")
    if isinstance(date_cols, list) and len(date_cols) > 1:
        time = df[date_cols[1]]
    if "message.date" not in raw:
        out["message.date"] = np.nan
        col.add("missing-date", "message.date", pd.Series(True, index=df.index), None)
        return
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


def first_naive_date(df: pd.DataFrame, mapping: Mapping, head: int = 2000) -> Any:
    """The first row (of the first ``head``) whose date has no offset, so that the mapping's time
    zone decides when it was sent: parsed in two zones 14 hours apart it moves. None when every
    date there is absolute (an offset, unix time) or no date is mapped."""
    cols = mapping.columns.get("message.date")
    if cols is None:
        return None
    date_col, time_col = (
        (cols, None) if isinstance(cols, str) else (cols[0], cols[1] if len(cols) > 1 else None)
    )
    sample = df.iloc[:head]
    seconds = [
        parse_dates(
            sample[date_col],
            timezone=zone,
            dayfirst=mapping.options["dayfirst"],
            date1904=bool(df.attrs.get("date1904", False)),
            time=None if time_col is None else sample[time_col],
        ).seconds
        for zone in ("Etc/GMT+12", "Etc/GMT-2")
    ]
    moved = (seconds[0] != seconds[1]) & seconds[0].notna()
    return moved.index[moved.to_numpy()][0] if bool(moved.any()) else None


def assumptions(df: pd.DataFrame, mapping: Mapping) -> list[tuple[str, str]]:
    """What sending on this mapping would only assume, as (code, one-line message), for the CLI to
    show before it asks for confirmation (a guess must be confirmed; ``[]``: nothing assumed):
    the zone of dates without an offset when the mapping states none (``timezone-not-set``,
    naming the zone used and the first such row), a user.id guessed from a column of names
    (``user-id-from-name``), an author column without [operators] (``no-operators``)."""
    out: list[tuple[str, str]] = []
    for code, text in mapping.warnings():
        if code == "timezone-not-set":
            row = first_naive_date(df, mapping)
            if row is None:
                continue
            where = df.attrs.get("source", "the data")
            text = f"{text.rstrip('.')} (e.g. {where} row {row})."
        out.append((code, text))
    return out


def _content(mapping: Mapping, raw: dict[str, pd.Series], col: _Collector, out: pd.DataFrame) -> None:
    """message.text (kept exactly) and message.files; a row needs one of them."""
    idx = out.index
    opts = mapping.options
    if "message.text" in raw:
        text = as_text(raw["message.text"], strip=False)
        long = too_long_text(text)
        if bool(np.asarray(long).any()):  # the excerpts of the too-long rows only (not a lambda per row)
            col.add("text-too-long", "message.text", long, _length_and_excerpt(text[np.asarray(long)]))
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


def _people(mapping: Mapping, raw: dict[str, pd.Series], col: _Collector, out: pd.DataFrame) -> None:
    """Names, e-mail, phone, gender, URLs and the chat name cleaned (dropped values are warnings)."""
    opts = mapping.options
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
            warn_rows = ~out["operator"] if f.startswith("user.") else pd.Series(True, index=out.index)
            for code, mask in issues:  # operator rows' user fields are not sent: no warnings for them
                col.add(code, f, mask & warn_rows, raw[f])


def _surrogates(out: pd.DataFrame, col: _Collector) -> None:
    """Text no request can carry (lone surrogates, from a DataFrame built in Python or a lenient
    decoder): the row is refused, and the cell is made encodable so that ids, the fingerprint
    and the report still work for it (raw value left out of the failure: it cannot be printed)."""
    for f in ("chat.id", "user.id", "message.id", "message.text", *USER_FIELDS, *CHAT_FIELDS):
        if f in out.columns and (out[f].dtype == object or isinstance(out[f].dtype, pd.StringDtype)):
            bad = lone_surrogates(out[f])
            if bool(bad.any()):
                col.add("bad-characters", f, bad, None)
                out[f] = replace_surrogates(out[f], bad)


def _merged_people(out: pd.DataFrame, col: _Collector) -> None:
    """One user.id with several different phones or e-mails: two people merged under one id, most
    likely (e.g. an id guessed from a name column). Warned on the first row of each value, whose
    ``value`` lists them all."""
    customer = ~out["operator"] & out["user.id"].notna()
    for f in ("user.phone", "user.email"):
        if f not in out.columns:
            continue
        sub = out.loc[(customer & out[f].notna()).to_numpy(), ["user.id", f]]
        if sub.empty:
            continue
        same = sub[f].astype("str").str.casefold()
        firsts = sub[~pd.DataFrame({"u": sub["user.id"], "v": same}).duplicated()]
        many = firsts["user.id"].duplicated(keep=False)
        if not bool(many.any()):
            continue
        flagged = firsts[many.to_numpy()]
        listing = flagged.groupby("user.id", sort=False)[f].agg(lambda v: ", ".join(map(str, v)))
        col.add("user-id-merged", f, out.index.isin(flagged.index), flagged["user.id"].map(listing))


def _conversations(out: pd.DataFrame, col: _Collector) -> pd.Series:
    """Conversation key (chat.id, defaulting to user.id) and customer per row; returns has-key.
    Grouping works on integer codes; a row without user.id takes its conversation's primary
    customer (its first customer row; operator rows only as a last resort)."""
    key = out["chat.id"].fillna(out["user.id"])
    has_key = key.notna()
    conv = pd.factorize(key)[0]  # -1: no conversation
    has_uid = out["user.id"].notna()
    pos = np.arange(len(out))
    out["pos"] = pos
    cand = pd.DataFrame(
        {"conv": conv, "op": out["operator"].to_numpy(), "date": out["message.date"].to_numpy(), "pos": pos}
    )[(has_uid & has_key).to_numpy()]
    cand = cand.sort_values(["op", "date", "pos"], na_position="last", kind="stable").drop_duplicates("conv")
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
    return has_key


def _user_blocks(out: pd.DataFrame, has_key: pd.Series) -> None:
    """One user block per (conversation, customer): per field the first value of the customer's own
    rows in time order; one chat block per conversation."""
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


def _message_ids(out: pd.DataFrame, raw: dict[str, pd.Series], col: _Collector) -> None:
    """message.id: given, or a stable hash of conversation, customer, time and occurrence."""
    key = out["key"]
    need = out["message.id"].isna() & key.notna()
    if bool(need.all()):  # no ids in the input: no partial frame to copy
        out["message.id"] = _generated_ids(out)
    elif bool(need.any()):
        out.loc[need, "message.id"] = _generated_ids(out[need])
    if "message.id" in raw:  # generated ids cannot repeat within a chat
        dup = out["message.id"].notna() & key.notna() & out.duplicated(["conv", "message.id"], keep="first")
        col.add("duplicate-message-id", "message.id", dup & ~need, raw.get("message.id"))


#: An author whose rows belong to at least this many customers is most likely an operator: a
#: customer writes in their own conversations only, so two customers are already one too many.
MANY_CUSTOMERS = 2

#: Columns of :func:`authors`.
AUTHOR_COLUMNS = [
    "author",
    "messages",
    "conversations",
    "customers",
    "side",
    "operator_id",
    "likely_operator",
]


def authors(df: pd.DataFrame, mapping: Mapping, prepared: Prepared | None = None) -> pd.DataFrame:
    """Every value of the author column with its messages, conversations, customers and side
    (``operator`` when it has an employee id from [operators] or message.user_id, else
    ``customer``); ``likely_operator``: a customer-side author who writes to several customers.
    Most messages first. Empty without an author column (option ``author``)."""
    author_col = mapping.options.get("author")
    if not author_col:
        return pd.DataFrame(columns=AUTHOR_COLUMNS)
    prep = prepared if prepared is not None else prepare(df, mapping)
    return _author_table(df[author_col], prep.canonical)


def _author_table(author: pd.Series, canon: pd.DataFrame) -> pd.DataFrame:
    """:func:`authors` from the author column and the prepared frame (authors compared case-blind)."""
    name = as_text(author)
    data = pd.DataFrame(
        {
            "author": name,
            "key": name.str.casefold(),
            "conv": canon["conv"].where(canon["conv"] >= 0),
            "cust": canon["cust"].where(canon["cust"] >= 0),
            "op": canon["message.user_id"],
            "side": canon["operator"],
        }
    )
    data = data[data["author"].notna()]
    if data.empty:
        return pd.DataFrame(columns=AUTHOR_COLUMNS)
    g = data.groupby("key", sort=False)
    table = pd.DataFrame(
        {
            "author": g["author"].first(),
            "messages": g.size(),
            "conversations": g["conv"].nunique(),
            "customers": g["cust"].nunique(),
            "operator_id": g["op"].max().astype("Int64"),
            "operator_rows": g["side"].sum(),
        }
    )
    operator = table["operator_id"].notna() | (table["operator_rows"] > 0)
    table["side"] = np.where(operator, "operator", "customer")
    table["likely_operator"] = (table["side"] == "customer") & (table["customers"] >= MANY_CUSTOMERS)
    table = table.sort_values(["messages", "author"], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True)[AUTHOR_COLUMNS]


def _unmapped_authors(df: pd.DataFrame, mapping: Mapping, out: pd.DataFrame, col: _Collector) -> None:
    """``operator-unmapped`` on the first row of each author not in [operators] who writes to
    several customers (value: the author)."""
    author_col = mapping.options.get("author")
    if not author_col or mapping.options.get("side"):  # a side column says who is an operator
        return
    table = _author_table(df[author_col], out)
    likely = set(table.loc[table["likely_operator"], "author"].str.casefold())
    if not likely:
        return
    key = as_text(df[author_col]).str.casefold()
    first = key[key.isin(likely)].drop_duplicates()
    col.add("operator-unmapped", "message.user_id", df.index.isin(first.index), as_text(df[author_col]))


def _duplicate_rows(df: pd.DataFrame, mapping: Mapping, out: pd.DataFrame, col: _Collector) -> None:
    """``duplicate-row`` on a row that repeats an earlier one exactly — chat, customer, time, text,
    files, author (and message.id when the file has one) — value ``same as row N``; both are sent.
    A 64-bit hash per row first (vectorised: a million rows in a fraction of a second), then the
    exact comparison only among the rows that share a hash."""
    keys = [c for c in ("chat.id", "user.id", "message.date", "message.text", "message.files") if c in out]
    parts = {c: out[c] for c in keys}
    if "message.files" in parts:
        parts["message.files"] = parts["message.files"].map(str, na_action="ignore")
    extra = {"author": mapping.options.get("author"), "id": mapping.columns.get("message.id")}
    for name, column in extra.items():
        if isinstance(column, str) and column in df.columns:
            parts[f"raw {name}"] = as_text(df[column])
    if not parts or not len(out):
        return
    hashed = np.zeros(len(out), dtype="uint64")
    for values in parts.values():
        hashed = (hashed * np.uint64(1_000_003)) ^ pd.util.hash_pandas_object(values, index=False).to_numpy()
    maybe = pd.Series(hashed, index=out.index).duplicated(keep=False).to_numpy()
    if not maybe.any():
        return
    frame = pd.DataFrame({k: v[maybe].astype(object) for k, v in parts.items()})
    frame = frame.where(frame.notna(), "")
    dup = frame.duplicated(keep="first")
    if not bool(dup.any()):
        return
    labels = pd.Series(frame.index, index=frame.index)
    first = labels.groupby([frame[c] for c in frame.columns], sort=False).transform("first")
    earlier = "same as row " + first[dup].astype(str)
    col.add("duplicate-row", "message.text", dup.reindex(out.index, fill_value=False), earlier)


def _length_and_excerpt(text: pd.Series, keep: int = 60) -> pd.Series:
    """``"12,345 characters: Hello, this is…"`` per text: the value a text-too-long row shows
    (the whole text would make the problems list unreadable)."""
    lengths = text.str.len()
    head = text.str.slice(0, keep).str.replace(r"\s+", " ", regex=True) + "…"
    return lengths.map(lambda n: f"{int(n):,} characters: " if n == n else "") + head.fillna("")


def phone_region_assumption(df: pd.DataFrame, mapping: Mapping) -> list[tuple[str, str]]:
    """``phone-region-not-set`` when the mapping states no phone_region and a phone is written
    without +country code: naming the region used, an example as read and its row."""
    column = mapping.columns.get("user.phone")
    if mapping.phone_region_given or not isinstance(column, str) or column not in df.columns:
        return []
    phones = as_text(df[column]).dropna()
    national = phones[~phones.str.match(r"^\s*(\+|00)") & phones.str.contains(r"\d")]
    if national.empty:
        return []
    region = str(mapping.options["phone_region"])
    row, raw = national.index[0], str(national.iloc[0])
    read, _ = clean_phones(pd.Series([raw]), region)
    became = f" → {read.iloc[0]}" if read.notna().iloc[0] else " (not a valid number there)"
    where = df.attrs.get("source", "the data")
    text = (
        f"{codes.render('phone-region-not-set', region=region).rstrip('.')}: e.g. {raw!r}{became} "
        f"({where} row {row}); {len(national)} such phone(s); set --phone-region or phone_region."
    )
    return [("phone-region-not-set", text)]


def _read_notes(df: pd.DataFrame, col: _Collector) -> None:
    """What reading could only guess, as warnings on the rows they concern:
    formula cells without a computed value (``df.attrs["formula_cells"]``: row → column → formula).
    What the mapping assumes for the whole file is :func:`assumptions`, not a row's problem."""
    cells = df.attrs.get("formula_cells") or {}
    for column in dict.fromkeys(c for row in cells.values() for c in row):
        rows = {r: formulas[column] for r, formulas in cells.items() if column in formulas}
        mask = pd.Series(df.index.isin(list(rows)), index=df.index)
        col.add("formula-without-value", str(column), mask, pd.Series(rows, dtype=object))


#: How message ids are generated for rows without one (recorded in the journal's meta ``id_scheme``).
ID_SCHEME = "chat-user-time-v2"
#: The prefix of generated message ids, and that of the scheme before (content hashes, ``bi-``):
#: journals written then keep those ids for the rows they hold (bulkimport.after.rebind).
GENERATED_PREFIX = "bi2-"
LEGACY_PREFIX = "bi-"


def is_generated(mid: object) -> bool:
    """True for a message id bulkimport made (either scheme), not one the input gave."""
    return isinstance(mid, str) and mid.startswith((GENERATED_PREFIX, LEGACY_PREFIX))


def _generated_ids(sub: pd.DataFrame) -> pd.Series:
    """Deterministic ids for rows without one, from the row's identity and never its content.

    64 bits of pandas' vectorised SipHash (key ``bulkimport-ids-2``) over the conversation, the
    customer (``user.id``), the time and the occurrence number among rows of that conversation,
    customer and time, in file order (two messages in the same second stay two). Editing a text,
    the files or the operator of a row keeps its id — a re-run reports it as changed instead of
    sending it as a new message; editing its time makes it another row.
    """
    conv = sub["conv"].to_numpy()
    d = sub["message.date"].fillna(-1).astype("int64").to_numpy()
    user = sub["user.id"].fillna("").astype("str")
    # the customer codes _conversations made (-1: no user.id, hashed as ""): no second factorize
    ucode = sub["cust"].to_numpy().astype("int64") + 1 if "cust" in sub else pd.factorize(user)[0]
    n = np.zeros(len(sub), dtype="int64")
    cand = _repeated_pairs(conv, d)
    if cand.any():
        same = pd.DataFrame({"c": conv[cand], "u": ucode[cand], "d": d[cand]})
        n[cand] = same.groupby(["c", "u", "d"], sort=False).cumcount().to_numpy()
    key = _IDS_KEY_2
    hashed = _combine_hashes(
        [
            _hash_by_value(sub["key"].astype("str"), conv, key),
            _hash_by_value(user, ucode, key),
            pd.util.hash_array(d, hash_key=key, categorize=False),
            pd.util.hash_array(n, hash_key=key, categorize=False),
        ]
    )
    hexed = hashed.astype(">u8").tobytes().hex()
    ids = [f"{GENERATED_PREFIX}{hexed[i : i + 16]}" for i in range(0, len(hexed), 16)]
    return pd.Series(ids, index=sub.index, dtype="str")


_IDS_KEY_2 = "bulkimport-ids-2"


def _legacy_generated_ids(sub: pd.DataFrame) -> pd.Series:
    """The ids of the scheme before :data:`ID_SCHEME` (``bi-``: content hashes), exactly as earlier
    versions made them — journals written then hold them; tests make such journals with it.

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


def _hash_by_value(s: pd.Series, codes: np.ndarray, key: str = _IDS_KEY) -> np.ndarray:
    """``hash_array`` of a column whose rows repeat (``codes``: equal code ⇔ equal value): each
    distinct value hashed once (what pandas' ``categorize=True`` does, without factorizing text)."""
    first = pd.Series(codes).drop_duplicates()
    uniq = s.array[first.index.to_numpy()]
    table = np.empty(int(codes.max()) + 1 if len(codes) else 0, dtype="uint64")
    table[first.to_numpy()] = pd.util.hash_array(uniq, hash_key=key, categorize=False)
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
