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

from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .limits import PortalLimits

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
