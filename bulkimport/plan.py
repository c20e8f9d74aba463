"""The send plan: validated rows grouped into conversations, ordered in time, chunked.

CONTRACT between the rows→MESSAGES half (read/mapping/values/validate/plan) and the sender.
The sender relies only on what is documented in this module's public names; keep it stable.

* Row ids are the values of ``plan.frame.index`` (named ``"row"``; for files read with
  :func:`bulkimport.read` it is the 1-based row number as the spreadsheet shows it, header = 1).
* ``plan.conversations`` are in send order (by first message time, ties by source order).
  Within a conversation ``rows[i]`` is carried by ``messages[i]``, in time order (stable for equal
  times). Every valid row is in exactly one conversation; every invalid row is in
  ``plan.failures`` with at least one error and in no conversation.
* ``messages[i]`` is one ``MESSAGES`` item ready for the wire: plain ``dict``/``list``/``str``/``int``
  only — never NaN, None, floats for ids or empty strings. ``message.id`` is always present (a
  deterministic id when the input has none), ``message.date`` is integer unix seconds.
* ``chunk_size`` is the most messages the plan puts in one call; the sender may send smaller
  pieces (it sizes them adaptively) but never reorders rows or mixes conversations in one call.
* ``lock_keys`` are the conversation's chat id and customer user ids: the sender never has two
  requests in flight that share a lock key (Bitrix24 groups chats by ``user.id`` by default).
* ``fingerprint`` changes when and only when what would be sent changes; the journal binds to it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import types
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .limits import ASSUMED_SECONDS_PER_MESSAGE, STANDARD, PortalLimits

if TYPE_CHECKING:
    from .mapping import Mapping

#: Columns of ``Plan.failures`` (one row per problem; a source row may have several).
FAILURE_COLUMNS = ["row", "field", "code", "level", "message", "value"]


@dataclass(frozen=True)
class Conversation:
    """One conversation's messages in send order."""

    key: str  # the chat.id sent to the portal; unique within a plan
    rows: tuple[Hashable, ...]  # row ids, aligned with ``messages``
    messages: tuple[dict[str, Any], ...]  # MESSAGES items, wire-ready
    lock_keys: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.rows)

    def chunks(self, size: int) -> Iterator[tuple[int, int]]:
        """``(start, stop)`` slices of at most ``size`` messages, in order."""
        for start in range(0, len(self.rows), size):
            yield start, min(start + size, len(self.rows))


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

    def __str__(self) -> str:
        from datetime import timedelta

        eta = timedelta(seconds=round(self.seconds))
        return (
            f"{self.messages} messages in {self.calls} calls / {self.requests} requests; "
            f"about {eta} on the {self.limits.name} plan (bound by the {self.binding} limit, "
            f"assuming {self.seconds_per_message:g} s of server time per message)"
        )


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
    canonical: pd.DataFrame | None = None  # cleaned values per row (bulkimport.validate.prepare)

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
                out.append({
                    "row": row, "chat": conv.key, "user": msg["user"]["id"],
                    "operator": m.get("user_id"),
                    "date": pd.Timestamp(m["date"], unit="s", tz="UTC").tz_convert(tz),
                    "text": text if len(text) <= 60 else text[:59] + "…",
                    "files": len(m.get("files", [])), "message_id": m["id"],
                })
            if len(out) >= n:
                break
        cols = ["row", "chat", "user", "operator", "date", "text", "files", "message_id"]
        return pd.DataFrame(out, columns=cols).set_index("row")

    def estimate(
        self, limits: PortalLimits = STANDARD, seconds_per_message: float = ASSUMED_SECONDS_PER_MESSAGE
    ) -> Estimate:
        """Requests and wall time under ``limits`` (reference §3); see docs/mapping.md "Estimate".

        * A call carries at most ``chunk_size`` messages, fewer when one call's server time would
          pass the portal's 60 s request cap.
        * A batch holds at most ``batch_max`` commands and one chunk per conversation (one
          conversation's chunks go sequentially), and the commands of a batch run one after
          another, so their total server time must also fit in the request cap.
        * requests = max(ceil(calls / per-batch), the most chunks of one conversation).
        * bucket-bound = requests beyond the bucket's burst X, drained at Y per second.
        * operating-bound = server seconds, paced at limit/window once the first window's
          budget is spent (the portal runs one method's work sequentially for one application).
        """
        spm = max(float(seconds_per_message), 1e-9)
        per_call = max(1, min(self.chunk_size, int(limits.request_timeout // spm) or 1))
        chunks = [math.ceil(len(c) / per_call) for c in self.conversations]
        calls = sum(chunks)
        messages = self.messages
        per_batch = max(1, min(limits.batch_max, int(limits.request_timeout // (per_call * spm)) or 1))
        requests = max(math.ceil(calls / per_batch), max(chunks, default=0)) if calls else 0
        bucket = max(0.0, (requests - limits.bucket_size) / limits.drain_rate)
        work = messages * spm
        if work <= limits.operating_limit:
            operating = work
        else:
            operating = limits.operating_limit + (work - limits.operating_limit) / limits.operating_rate
        binding = "operating" if operating >= bucket else "bucket"
        return Estimate(messages, calls, requests, max(bucket, operating), binding, limits, spm)


def plan(df: pd.DataFrame, mapping: Mapping | None = None, chunk_size: int = 50) -> Plan:
    """Rows → validated, grouped, time-ordered and chunked MESSAGES (the contract above)."""
    from .mapping import Mapping as _Mapping
    from .validate import prepare

    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if mapping is None:
        mapping = _Mapping.guess(df)
    prep = prepare(df, mapping)
    canon = prep.canonical
    valid = canon[~prep.invalid.to_numpy()]
    # send order: conversations by first message time (ties: source order), messages by time, stable
    first_date = valid.groupby("key", sort=False)["message.date"].transform("min")
    first_pos = valid.groupby("key", sort=False)["pos"].transform("min")
    order = np.lexsort((valid["pos"].to_numpy(), valid["message.date"].to_numpy(),
                        first_pos.to_numpy(), first_date.to_numpy()))
    ordered = valid.iloc[order]
    messages = _payloads(ordered, mapping)
    keys = ordered["key"].tolist()
    rows = ordered.index.tolist()
    uids = ordered["user.id"].tolist()
    conversations: list[Conversation] = []
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            locks = frozenset([f"chat:{keys[start]}", *(f"user:{u}" for u in set(uids[start:i]))])
            conversations.append(Conversation(keys[start], tuple(rows[start:i]), tuple(messages[start:i]), locks))
            start = i
    failures = prep.failures
    files = int(ordered["message.files"].map(len, na_action="ignore").sum()) if len(ordered) else 0
    counts = {
        "rows": len(df), "valid": len(ordered), "invalid": int(prep.invalid.sum()),
        "conversations": len(conversations), "messages": len(ordered), "files": files,
        "warnings": int((failures["level"] == "warning").sum()),
    }
    return Plan(
        frame=df, conversations=conversations, failures=failures, chunk_size=chunk_size,
        fingerprint=_fingerprint(ordered, messages, mapping), mapping=mapping, counts=counts, canonical=canon,
    )


def _none(s: pd.Series) -> list[Any]:
    """Column → python list with None for missing."""
    return s.astype(object).where(s.notna(), None).tolist()


def _payloads(ordered: pd.DataFrame, mapping: Mapping) -> list[dict[str, Any]]:
    """One wire-ready MESSAGES item per row (plain dict/list/str/int, no NaN/None/empty strings)."""
    opts = mapping.options
    n = len(ordered)
    uid = ordered["user.id"].tolist()
    mid = ordered["message.id"].tolist()
    date = ordered["message.date"].astype("int64").tolist() if n else []
    key = ordered["key"].tolist()
    text = _none(ordered["message.text"])
    files = _none(ordered["message.files"]) if "message.files" in ordered else [None] * n
    op = [None if v is None else int(v) for v in _none(ordered["message.user_id"])]
    user_opt = [(f.split(".", 1)[1], _none(ordered[f])) for f in
                ("user.name", "user.last_name", "user.email", "user.phone", "user.url", "user.gender")
                if f in ordered]
    picture = _none(ordered["user.picture"]) if "user.picture" in ordered else None
    chat_opt = [(f.split(".", 1)[1], _none(ordered[f])) for f in ("chat.name", "chat.url") if f in ordered]
    skip = bool(opts.get("skip_phone_validate"))
    crm = bool(opts.get("disable_crm", True))
    out: list[dict[str, Any]] = []
    for i in range(n):
        user: dict[str, Any] = {"id": uid[i]}
        for name, vals in user_opt:
            v = vals[i]
            if v is not None:
                user[name] = v
        if picture is not None and picture[i] is not None:
            user["picture"] = {"url": picture[i]}
        if skip:
            user["skip_phone_validate"] = "Y"
        message: dict[str, Any] = {"id": mid[i], "date": date[i]}
        if text[i] is not None:
            message["text"] = text[i]
        if files[i] is not None:
            message["files"] = [dict(f) for f in files[i]]
        if crm:
            message["disable_crm"] = "Y"
        if op[i] is not None:
            message["user_id"] = op[i]
        chat: dict[str, Any] = {"id": key[i]}
        for name, vals in chat_opt:
            v = vals[i]
            if v is not None:
                chat[name] = v
        out.append({"user": user, "message": message, "chat": chat})
    return out


def _fingerprint(ordered: pd.DataFrame, messages: list[dict[str, Any]], mapping: Mapping) -> str:
    """sha256 over what goes on the wire: rows, send order and every payload value."""
    h = hashlib.sha256(b"bulkimport-plan-v1\n")
    h.update(json.dumps([_jsonable(r) for r in ordered.index.tolist()]).encode())
    h.update(json.dumps(messages, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8",
                                                                                                    "surrogatepass"))
    return h.hexdigest()


class _CallableModule(types.ModuleType):
    """A module that forwards calls to its namesake function.

    ``bulkimport.read``, ``bulkimport.validate`` and ``bulkimport.plan`` are both modules and the
    functions the package exports lazily. Importing a submodule makes Python set the package
    attribute to the *module*, shadowing the lazy export; making the module callable keeps
    ``bulkimport.plan(df)`` working whichever was touched first.
    """

    __call_target__: Any

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__call_target__(*args, **kwargs)


def make_callable(module_name: str, fn: Any) -> None:
    """Let module ``module_name`` be called like ``fn`` (see :class:`_CallableModule`)."""
    mod = sys.modules[module_name]
    mod.__class__ = _CallableModule
    mod.__call_target__ = fn  # type: ignore[attr-defined]


make_callable(__name__, plan)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (int, str, float)):
        return v
    return str(v)
