"""The send plan: validated rows grouped into conversations, ordered in time, chunked.

CONTRACT between the rows→MESSAGES half (read/mapping/values/validate/plan) and the sender.
The sender relies only on what is documented in this module's public names; keep it stable.

* Row ids are the values of ``plan.frame.index`` (named ``"row"``; for files read with
  :func:`bulkimport.read` it is the 1-based row number as the spreadsheet shows it, header = 1).
* ``plan.conversations`` are in send order (by first message time, ties by source order).
  Within a conversation ``rows[i]`` is carried by ``messages[i]``, in time order (stable for equal
  times). Every valid row is in exactly one conversation; every invalid row is in
  ``plan.failures`` with at least one error and in no conversation.
* ``messages`` is a read-only sequence (``len``, indexing, slicing, iteration, ``list(...)``,
  ``==`` with a list/tuple of dicts); plans built by :func:`plan` build each item when it is read
  (:class:`Messages`), so ask for what you send. ``messages[i]`` is one ``MESSAGES`` item ready
  for the wire: plain ``dict``/``list``/``str``/``int`` only — never NaN, None, floats for ids or
  empty strings. Items are fresh dicts on every read, but their ``user``/``chat`` blocks (and
  ``files`` lists) are shared within a conversation: treat them as read-only. :class:`Messages`
  also has ``view(start, stop)``: a lazy window that the sender puts in a call and the encoder
  writes straight from the plan's columns. ``message.id`` is always present (a deterministic id
  when the input has none), ``message.date`` is integer unix seconds.
* ``chunk_size`` is the most messages the plan puts in one call; the sender may send smaller
  pieces (it sizes them adaptively) but never reorders rows or mixes conversations in one call.
* ``lock_keys`` are the conversation's chat id and customer user ids: the sender never has two
  requests in flight that share a lock key (Bitrix24 groups chats by ``user.id`` by default).
  They are spelled ``"chat:<chat.id>"`` and ``"user:<user.id>"`` so the two kinds never collide.
* ``fingerprint`` changes when and only when what would be sent changes; the journal binds to it.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import math
import operator
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .attachments import export_rules
from .codes import count_of
from .limits import ASSUMED_SECONDS_PER_MESSAGE, STANDARD, PortalLimits
from .sources import Source
from .validation import FAILURE_COLUMNS, prepare

if TYPE_CHECKING:
    from .mapping import Mapping


@dataclass(frozen=True, slots=True)
class _Columns:
    """The plan's payload columns as Python lists (one entry per message, send order) and the
    shared user/chat blocks: what :class:`Messages` builds MESSAGES items from."""

    users: list[dict[str, Any]]
    chats: list[dict[str, Any]]
    ucodes: list[int]  # users[ucodes[j]] is message j's user block
    kcodes: list[int]  # chats[kcodes[j]] is message j's chat block
    mid: list[str]
    date: list[int]
    text: list[str | None]
    files: list[Any] | None  # None: no message has files
    ops: list[int | None] | None  # None: no message has an operator
    crm: bool

    def item(self, j: int) -> dict[str, Any]:
        """MESSAGES item of message ``j`` (keys in the order the eager builder used)."""
        m: dict[str, Any] = {"id": self.mid[j], "date": self.date[j]}
        text = self.text[j]
        if text is not None:
            m["text"] = text
        if self.files is not None and self.files[j] is not None:
            m["files"] = self.files[j]
        if self.crm:
            m["disable_crm"] = "Y"
        if self.ops is not None and self.ops[j] is not None:
            m["user_id"] = self.ops[j]
        return {"user": self.users[self.ucodes[j]], "message": m, "chat": self.chats[self.kcodes[j]]}

    def php_query_pairs(self, start: int, stop: int, prefix: str, out: list[str]) -> None:
        """Messages ``start..stop`` as the query pairs :mod:`~bulkimport.portal.encoding` makes of
        ``[item(j) ...]`` — the same text, without building the dicts (the sender's largest CPU
        cost per message; tests/test_plan.py compares the two).

        Each message is written once with a NUL where its ``MESSAGES[i]`` prefix goes, then the
        NULs are replaced: every key and value is percent-encoded, so no other NUL can occur."""
        from .portal.encoding import pairs, quote, shared_pairs

        users, chats, ucodes, kcodes = self.users, self.chats, self.ucodes, self.kcodes
        mid, date, text, files, ops = self.mid, self.date, self.text, self.files, self.ops
        crm = "&\0[message][disable_crm]=Y" if self.crm else ""
        tkey = "&\0[message][text]="
        okey = "&\0[message][user_id]="
        # the user/chat blocks as query text ("\0" where MESSAGES[i] goes), once per call: a
        # call holds one conversation, whose messages share them (nothing kept between calls, so
        # nothing grows with the plan and an edited block is never sent stale)
        ublocks: dict[int, str] = {}
        kblocks: dict[int, str] = {}

        def block(name: str, value: Any) -> str:
            tails: list[str] = []
            shared_pairs(f"\0[{name}]", value, tails, None)
            return "".join("&" + t for t in tails)

        lu = lk = -1
        user = chat = ""
        for i, j in enumerate(range(start, stop)):
            u, k = ucodes[j], kcodes[j]
            if u != lu:  # a conversation's messages mostly share one user and one chat block
                lu, user = u, ublocks.get(u) or ublocks.setdefault(u, block("user", users[u]))
            if k != lk:
                lk, chat = k, kblocks.get(k) or kblocks.setdefault(k, block("chat", chats[k]))
            mj, dj, tj = mid[j], date[j], text[j]
            op = None if ops is None else ops[j]
            if (
                type(mj) is str
                and type(dj) is int
                and (tj is None or type(tj) is str)
                and (files is None or files[j] is None)
                and (op is None or type(op) is int)
            ):  # the common case (operators' messages included) in one f-string
                one = (
                    f"{user}&\0[message][id]={quote(mj)}&\0[message][date]={dj}"
                    f"{'' if tj is None else tkey + quote(tj)}{crm}"
                    f"{'' if op is None else okey + str(op)}{chat}"
                )
            else:  # files or unusual types: the generic walk of the item itself
                parts: list[str] = []
                pairs("\0", self.item(j), parts, None)
                one = "".join("&" + t for t in parts)
            # one starts with "&": the item's first pair follows the previous item's last one
            out.append(one[1:].replace("\0", f"{prefix}[{i}]"))


class Messages(Sequence[dict[str, Any]]):
    """One conversation's MESSAGES items, built from the plan's columns when read (read-only).

    Building a million nested dicts up front was the largest single cost of :func:`plan`; the
    sender reads a conversation's items one chunk at a time, so they are made on access.
    """

    __slots__ = ("_cols", "_start", "_stop")
    __hash__ = None  # type: ignore[assignment]  # compares by content, like the tuple it replaces

    def __init__(self, cols: _Columns, start: int, stop: int) -> None:
        self._cols, self._start, self._stop = cols, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return tuple(self._cols.item(self._start + j) for j in range(*i.indices(len(self))))
        n = len(self)
        j = operator.index(i)  # like a tuple: integers only (1.7 or "1" is a TypeError)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError("message index out of range")
        return self._cols.item(self._start + j)

    def view(self, start: int, stop: int) -> Messages:
        """Items ``start..stop`` as another lazy sequence (what the sender puts in one call)."""
        a, b, _ = slice(start, stop).indices(len(self))
        return Messages(self._cols, self._start + a, self._start + max(a, b))

    def php_query_pairs(self, prefix: str, out: list[str], memo: Any) -> None:
        """Encode as a ``MESSAGES`` list without building the items (see
        :mod:`~bulkimport.portal.encoding`)."""
        self._cols.php_query_pairs(self._start, self._stop, prefix, out)  # blocks memoised per call inside

    def __iter__(self) -> Iterator[dict[str, Any]]:
        item = self._cols.item
        for j in range(self._start, self._stop):
            yield item(j)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Messages | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __repr__(self) -> str:
        return f"Messages({len(self)} items)"


@dataclass(frozen=True)
class Conversation:
    """One conversation's messages in send order."""

    key: str  # the chat.id sent to the portal; unique within a plan
    rows: tuple[Hashable, ...]  # row ids, aligned with ``messages``
    messages: Sequence[dict[str, Any]]  # MESSAGES items, wire-ready (a tuple or a lazy Messages)
    lock_keys: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.rows)

    def chunks(self, size: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` slices of at most ``size`` messages, in order."""
        for start in range(0, len(self.rows), size):
            yield start, min(start + size, len(self.rows))


def set_message_ids(conversation: Conversation, ids: dict[int, str]) -> None:
    """Send the messages at positions ``ids`` (seq → id) of ``conversation`` with other message ids:
    the ones a journal recorded for those rows (:mod:`bulkimport.after.identities`), so that a row
    keeps the id it was sent with when the file's generated ids change. The fingerprint stays the
    file's."""
    msgs = conversation.messages
    if isinstance(msgs, Messages):
        for seq, mid in ids.items():
            msgs._cols.mid[msgs._start + seq] = mid
    else:  # items held as dicts (plans not built by plan())
        for seq, mid in ids.items():
            msgs[seq]["message"]["id"] = mid


@dataclass(frozen=True)
class Estimate:
    """Requests and time a plan needs under given limits; ``binding`` names the limit that sets the pace."""

    messages: int
    calls: int
    requests: int
    seconds: float
    binding: str  # "bucket" or "operating"
    limits: PortalLimits
    seconds_per_message: float
    includes: tuple[str, ...] = ()  # what else the requests and time count, one phrase each (uploads)

    def __str__(self) -> str:
        from datetime import timedelta

        eta = timedelta(seconds=round(self.seconds))
        return (
            f"{count_of(self.messages, 'message')} in {count_of(self.calls, 'call')} / "
            f"{count_of(self.requests, 'request')}; "
            f"about {eta} on the {self.limits.name} plan (bound by the {self.binding} limit, "
            f"assuming {self.seconds_per_message:g} s of server time per message)"
        ) + "".join(f"; {part}" for part in self.includes)


@dataclass
class Plan:
    """What will be sent, and what will not be and why."""

    frame: pd.DataFrame
    conversations: list[Conversation]
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FAILURE_COLUMNS))
    chunk_size: int = 50
    fingerprint: str = ""
    mapping: Any = None  # bulkimport.mapping.Mapping when built by plan()
    counts: dict[str, int] = field(default_factory=dict)
    canonical: pd.DataFrame | None = None  # cleaned values per row (bulkimport.validation.prepare)

    @property
    def invalid_rows(self) -> pd.Index:
        """Row ids that will not be sent (each has at least one error in ``failures``)."""
        errors = self.failures[self.failures["level"] == "error"]
        rows = pd.unique(errors["row"].to_numpy())
        return self.frame.index[self.frame.index.isin(rows)]

    @property
    def messages(self) -> int:
        """Number of messages to send."""
        return sum(len(c) for c in self.conversations)

    def calls(self, chunk_size: int | None = None) -> int:
        """imconnector.send.messages calls at ``chunk_size`` messages per call (default: the plan's)."""
        size = chunk_size or self.chunk_size
        return sum(math.ceil(len(c) / size) for c in self.conversations)

    def preview(self, n: int = 10) -> pd.DataFrame:
        """The first ``n`` messages in send order as a readable table (one row per message)."""
        tz = self.mapping.options["timezone"] if self.mapping is not None else "UTC"
        out: list[dict[str, Any]] = []
        for conv in self.conversations:
            for row, msg in zip(conv.rows, conv.messages, strict=True):
                if len(out) >= n:
                    break
                m = msg["message"]
                text = m.get("text", "")
                out.append(
                    {
                        "row": row,
                        "chat": conv.key,
                        "user": msg["user"]["id"],
                        "operator": m.get("user_id"),
                        "date": pd.Timestamp(m["date"], unit="s", tz="UTC").tz_convert(tz),
                        "text": text if len(text) <= 60 else text[:59] + "…",
                        "files": len(m.get("files", [])),
                        "message_id": m["id"],
                    }
                )
            if len(out) >= n:
                break
        cols = ["row", "chat", "user", "operator", "date", "text", "files", "message_id"]
        frame = pd.DataFrame(out, columns=cols)
        frame["operator"] = frame["operator"].astype("Int64")
        return frame.set_index("row")

    def estimate(
        self,
        limits: PortalLimits = STANDARD,
        seconds_per_message: float = ASSUMED_SECONDS_PER_MESSAGE,
        remaining: Sequence[int] | None = None,
    ) -> Estimate:
        """Requests and wall time under ``limits`` (reference §3); see docs/mapping.md "Estimate".

        ``remaining`` (messages still to send per conversation, in plan order) estimates what a
        resumed run has left instead of the whole plan.

        * A call carries at most ``chunk_size`` messages, fewer when one call's server time would
          pass the portal's 60 s request cap.
        * A batch holds at most ``batch_max`` commands and one chunk per conversation (one
          conversation's chunks go sequentially), and the commands of a batch run one after
          another, so their total server time must also fit in the request cap.
        * requests = max(ceil(calls / per-batch), the most chunks of one conversation).
        * bucket-bound = requests beyond the bucket's burst X, drained at Y per second.
        * operating-bound = server seconds, run back to back until a window's budget is spent,
          then idle until the window's oldest baskets expire: ``k·window + (work − k·budget)``
          with ``k = ceil(work / budget) − 1`` and ``budget = limit × budget_safety`` (the
          sender's pace; the portal runs one method's work sequentially).
        """
        spm = max(float(seconds_per_message), 1e-9)
        per_call = max(1, min(self.chunk_size, int(limits.request_timeout // spm) or 1))
        sizes = [len(c) for c in self.conversations] if remaining is None else list(remaining)
        chunks = [math.ceil(n / per_call) for n in sizes]
        calls = sum(chunks)
        messages = sum(sizes)
        per_batch = max(1, min(limits.batch_max, int(limits.request_timeout // (per_call * spm)) or 1))
        requests = max(math.ceil(calls / per_batch), max(chunks, default=0)) if calls else 0
        bucket = max(0.0, (requests - limits.bucket_size) / limits.drain_rate)
        work = messages * spm
        budget = limits.operating_limit * limits.budget_safety  # the sender's pace: see limits.py
        if work <= budget:
            operating = work
        else:
            # Sequential work spends a window's (safety-trimmed) budget at full speed, then waits for
            # the oldest baskets to expire (window − budget idle per window): k full windows, then the rest.
            full = math.ceil(work / budget) - 1
            operating = full * limits.operating_window + (work - full * budget)
        binding = "operating" if operating >= bucket else "bucket"
        return Estimate(messages, calls, requests, max(bucket, operating), binding, limits, spm)


def plan(
    df: pd.DataFrame | Source, mapping: Mapping | None = None, chunk_size: int = 50, *,
    prepared: Any = None,
) -> Plan:
    """Rows → validated, grouped, time-ordered and chunked MESSAGES (the contract above).

    ``df`` may be a :class:`~bulkimport.sources.Source` (``bulkimport.load(path)``): its frame is
    planned with its own mapping (or ``mapping``), and the reader's warnings join the failures.
    ``prepared``: :func:`bulkimport.validation.prepare` of ``df`` and ``mapping``, if the caller has it.
    """
    from .mapping import Mapping as _Mapping

    if isinstance(df, Source):
        df.check()
        made = plan(df.frame, mapping if mapping is not None else df.mapping, chunk_size)
        made.failures = df.with_notes(made.failures)
        made.counts["warnings"] = int((made.failures["level"] == "warning").sum())
        return made
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if mapping is None:
        mapping = _Mapping.guess(df)
    with _gc_paused():
        # ``prepared``: validation.prepare(df, mapping) run already by the caller (ImportJob shares one
        # pass with the authors table and validate), taken only when made from this frame and mapping
        ok = prepared is not None and prepared.mapping is mapping and len(prepared.canonical) == len(df)
        prep = export_rules(prepared if ok else prepare(df, mapping), df)  # original names, missing files
        canon = prep.canonical
        invalid = prep.invalid.to_numpy()
        valid = canon[~invalid] if invalid.any() else canon
        # send order: conversations by first message time (ties: source order), messages by time, stable
        by_conv = valid.groupby("conv", sort=False)
        first_date = by_conv["message.date"].transform("min")
        first_pos = by_conv["pos"].transform("min")
        order = np.lexsort(
            (
                valid["pos"].to_numpy(),
                valid["message.date"].to_numpy(),
                first_pos.to_numpy(),
                first_date.to_numpy(),
            )
        )
        ordered = valid.iloc[order]
        messages = _payloads(ordered, mapping)
        conversations = _conversations(ordered, messages)
        fingerprint = _fingerprint(ordered, mapping, messages)
    failures = prep.failures
    with_files = ordered["message.files"][ordered["message.files"].notna()]
    files = sum(map(len, with_files.tolist()))
    counts = {
        "rows": len(df),
        "valid": len(ordered),
        "invalid": int(prep.invalid.sum()),
        "conversations": len(conversations),
        "messages": len(ordered),
        "files": files,
        "warnings": int((failures["level"] == "warning").sum()),
    }
    return Plan(
        frame=df,
        conversations=conversations,
        failures=failures,
        chunk_size=chunk_size,
        fingerprint=fingerprint,
        mapping=mapping,
        counts=counts,
        canonical=canon,
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of small dicts are built.

    The payload holds no reference cycles; without this, CPython's generational GC rescans the
    growing heap again and again and building a million messages becomes several times slower.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _conversations(ordered: pd.DataFrame, messages: _Columns | None) -> list[Conversation]:
    """Split the send-ordered rows into conversations (rows of one conversation are contiguous)."""
    n = len(ordered)
    if n == 0 or messages is None:
        return []
    conv = ordered["conv"].to_numpy()
    starts = [*np.flatnonzero(np.r_[True, conv[1:] != conv[:-1]]).tolist(), n]
    keys = ordered["key"].tolist()
    rows = ordered.index.tolist()
    uids = ordered["user.id"].tolist()
    out: list[Conversation] = []
    for a, b in itertools.pairwise(starts):
        locks = frozenset([f"chat:{keys[a]}", *(f"user:{u}" for u in set(uids[a:b]))])
        out.append(Conversation(keys[a], tuple(rows[a:b]), Messages(messages, a, b), locks))
    return out


def _none(s: pd.Series) -> list[Any]:
    """Column → python list with None for missing."""
    values = s.tolist()
    missing = s.isna().to_numpy()
    if missing.any():
        for i in np.flatnonzero(missing).tolist():
            values[i] = None
    return values


def _ints_or_none(s: pd.Series) -> list[int | None]:
    """Float column of whole numbers → python ints, None for missing."""
    ints = s.fillna(0).astype("int64").tolist()
    return [v if ok else None for v, ok in zip(ints, s.notna().tolist(), strict=True)]


_USER_KEYS = ("user.name", "user.last_name", "user.email", "user.phone", "user.url", "user.gender")
_CHAT_KEYS = ("chat.name", "chat.url")


def _payloads(ordered: pd.DataFrame, mapping: Mapping) -> _Columns | None:
    """The columns wire-ready MESSAGES items are built from (plain dict/list/str/int, no NaN/None/'').

    A conversation's customer has one user block and the chat one chat block (validate.prepare
    makes them identical per conversation and customer), so those dicts are built once and shared
    by the conversation's messages; treat payloads as read-only.
    """
    opts = mapping.options
    n = len(ordered)
    if n == 0:
        return None
    skip = bool(opts.get("skip_phone_validate"))
    crm = bool(opts.get("disable_crm", True))
    user_cols = [f for f in _USER_KEYS if f in ordered]
    chat_cols = [f for f in _CHAT_KEYS if f in ordered]

    # user blocks, once per (conversation, customer)
    pair = (
        ordered["conv"].to_numpy().astype("int64") * (int(ordered["cust"].max()) + 2)
        + ordered["cust"].to_numpy()
    )
    ucodes, _ = pd.factorize(pair)
    first = pd.Series(ucodes).duplicated().to_numpy() == False  # noqa: E712
    ublock = ordered.loc[
        first, ["user.id", *user_cols, *(["user.picture"] if "user.picture" in ordered else [])]
    ]
    users: list[dict[str, Any]] = []
    cols = {c: _none(ublock[c]) for c in ublock.columns}
    for i in range(len(ublock)):
        user: dict[str, Any] = {"id": cols["user.id"][i]}
        for f in user_cols:
            v = cols[f][i]
            if v is not None:
                user[f[5:]] = v
        if "user.picture" in cols and cols["user.picture"][i] is not None:
            user["picture"] = {"url": cols["user.picture"][i]}
        if skip:
            user["skip_phone_validate"] = "Y"
        users.append(user)

    # chat blocks, once per conversation
    kcodes, _ = pd.factorize(ordered["conv"].to_numpy())
    kfirst = pd.Series(kcodes).duplicated().to_numpy() == False  # noqa: E712
    cblock = ordered.loc[kfirst, ["key", *chat_cols]]
    ccols = {c: _none(cblock[c]) for c in cblock.columns}
    chats: list[dict[str, Any]] = []
    for i in range(len(cblock)):
        chat: dict[str, Any] = {"id": ccols["key"][i]}
        for f in chat_cols:
            v = ccols[f][i]
            if v is not None:
                chat[f[5:]] = v
        chats.append(chat)

    # message columns: the items themselves are built on access (Messages)
    files_col = ordered["message.files"]
    op_col = ordered["message.user_id"]
    return _Columns(
        users=users,
        chats=chats,
        ucodes=ucodes.tolist(),
        kcodes=kcodes.tolist(),
        mid=ordered["message.id"].tolist(),
        date=ordered["message.date"].astype("int64").tolist(),
        text=_none(ordered["message.text"]),
        files=_none(files_col) if bool(files_col.notna().any()) else None,
        ops=_ints_or_none(op_col) if bool(op_col.notna().any()) else None,
        crm=crm,
    )


def _fingerprint(ordered: pd.DataFrame, mapping: Mapping, cols: _Columns | None) -> str:
    """sha256 over what goes on the wire: rows, send order and every payload value.

    Hashes exactly what :class:`Messages` builds items from (so it changes when and only when
    what would be sent changes): the two payload options, the row ids in send order, the shared
    user and chat blocks as canonical JSON with each message's block numbers, and the per-message
    columns — text values length-prefixed (character counts, -1 for missing, then their UTF-8
    bytes), integers as little-endian int64, the files lists as one canonical JSON document.
    Integer row ids are hashed as int64, or as uint64 under their own tag when one is >= 2**63,
    so distinct ids never share bytes.
    v2: replaces v1's per-row SipHash of the canonical frame (a fraction of the time).
    """
    h = hashlib.sha256(b"bulkimport-plan-v2\n")
    flags = {
        "disable_crm": bool(mapping.options.get("disable_crm", True)),
        "skip_phone_validate": bool(mapping.options.get("skip_phone_validate")),
    }
    h.update(json.dumps(flags, sort_keys=True).encode())
    rows = ordered.index
    if pd.api.types.is_integer_dtype(rows.dtype) and (
        pd.api.types.is_signed_integer_dtype(rows.dtype) or len(rows) == 0 or rows.max() < 2**63
    ):
        h.update(b"rows:int64\x00" + np.asarray(rows, dtype="<i8").tobytes())
    elif pd.api.types.is_unsigned_integer_dtype(rows.dtype):  # ids >= 2**63: no int64 alias
        h.update(b"rows:uint64\x00" + np.asarray(rows, dtype="<u8").tobytes())
    else:
        h.update(json.dumps([_jsonable(r) for r in rows.tolist()]).encode())
    if cols is None:
        return h.hexdigest()

    def part(name: str, data: bytes) -> None:
        h.update(b"\x00%s\x00%d\x00" % (name.encode(), len(data)))
        h.update(data)

    def ints(values: Any) -> bytes:
        return np.asarray(values, dtype="<i8").tobytes()

    def texts(name: str, values: list[Any]) -> None:
        present = values if values.count(None) == 0 else [v for v in values if v is not None]
        if len(present) == len(values):
            lengths = np.fromiter(map(len, values), dtype="<i8", count=len(values))
        else:
            lengths = np.fromiter(
                (-1 if v is None else len(v) for v in values), dtype="<i8", count=len(values)
            )
        part(name + ".len", lengths.tobytes())
        # the text itself, streamed in blocks (one joined string of a million texts is slower
        # to build and encode); the character counts above delimit it
        h.update(b"\x00%s\x00chars=%d\x00" % (name.encode(), int(lengths[lengths > 0].sum())))
        for i in range(0, len(present), 1 << 14):
            h.update("".join(present[i : i + (1 << 14)]).encode("utf-8", "surrogatepass"))

    part("users", _canonical_json(cols.users))
    part("chats", _canonical_json(cols.chats))
    part("ucodes", ints(cols.ucodes))
    part("kcodes", ints(cols.kcodes))
    texts("message.id", cols.mid)
    part("message.date", ints(cols.date))
    texts("message.text", cols.text)
    if cols.ops is not None:
        part("message.user_id", ints([-1 if v is None else v for v in cols.ops]))
    if cols.files is not None:
        at = [i for i, v in enumerate(cols.files) if v is not None]
        part("message.files.at", ints(at))
        part("message.files", _canonical_json([cols.files[i] for i in at]))
    return h.hexdigest()


def _canonical_json(value: Any) -> bytes:
    """One canonical JSON encoding (sorted keys, no spaces, UTF-8) for hashing."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return text.encode("utf-8", "surrogatepass")


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (int, str, float)):
        return v
    return str(v)
