"""What a run returns: the plan's frame with one status per row (from the journal) and a summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import codes
from ..journal import Journal, row_key
from ..planning import Plan

#: Columns added to ``plan.frame`` in the returned frame (defined with the statuses in codes.py).
STATUS_COLUMNS = codes.STATUS_COLUMNS


@dataclass
class SendSummary:
    """How a run went, for the CLI and notebooks."""

    counts: dict[str, int]
    top_errors: list[tuple[str, int]]
    elapsed: float  # seconds on the portal clock
    messages_per_second: float
    sent_this_run: int
    requests: int
    stopped: str | None  # the code that stopped the run early, if any
    stopped_message: str | None
    journal: Path
    interrupted: bool
    seconds_per_message: float | None  # measured server seconds per message
    recovered_unknown: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly values (what ``frame.attrs["bulkimport_summary"]`` holds)."""
        return {
            "counts": dict(self.counts),
            "top_errors": [[c, n] for c, n in self.top_errors],
            "elapsed": self.elapsed,
            "messages_per_second": self.messages_per_second,
            "sent_this_run": self.sent_this_run,
            "requests": self.requests,
            "stopped": self.stopped,
            "stopped_message": self.stopped_message,
            "journal": str(self.journal),
            "interrupted": self.interrupted,
            "seconds_per_message": self.seconds_per_message,
            "recovered_unknown": self.recovered_unknown,
            "complete": self.complete,
        }

    @property
    def complete(self) -> bool:
        """True when nothing is left pending or unknown."""
        return self.counts.get("pending", 0) == 0 and self.counts.get("unknown", 0) == 0

    def __str__(self) -> str:
        parts = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n)
        lines = [
            f"{parts or 'nothing to send'} ({self.sent_this_run} sent in this run, "
            f"{self.requests} requests, {self.elapsed:.0f} s, {self.messages_per_second:.2f} msg/s)"
        ]
        if self.top_errors:
            lines.append("top codes: " + ", ".join(f"{c} ×{n}" for c, n in self.top_errors))
        if self.stopped:
            lines.append(f"stopped early: {self.stopped_message}")
        if self.interrupted:
            lines.append("interrupted: run the same command again to resume")
        lines.append(f"journal: {self.journal}")
        return "\n".join(lines)


@dataclass
class SendOutcome:
    """What :meth:`Sender.run` returns: the per-row frame and the summary."""

    frame: pd.DataFrame
    summary: SendSummary


def warnings_by_row(plan: Plan) -> dict[str, str]:
    """The validation warnings of each row (``code: message; …``), keyed like the journal."""
    failures = plan.failures
    if failures is None or failures.empty:
        return {}
    warns = failures[failures["level"].astype(str) == "warning"]
    out: dict[str, str] = {}
    for rid, group in warns.groupby("row", sort=False):
        pairs = zip(group["code"], group["message"], strict=True)
        out[row_key(rid)] = "; ".join(f"{c}: {m}" for c, m in pairs)
    return out


def _frame_keys(frame: pd.DataFrame) -> list[str]:
    """The journal key of every frame row, in frame order."""
    if frame.index.dtype.kind in "iu":  # row numbers: row_key(n) == str(n), without a call per row
        return list(map(str, frame.index.tolist()))
    return [row_key(r) for r in frame.index]


def result_frame(plan: Plan, journal: Journal) -> pd.DataFrame:
    """``plan.frame`` plus the status columns, from the journal (the source of truth)."""
    frame = plan.frame.copy()
    names = (
        "status", "code", "error", "attempts", "message_id", "user_id", "chat_id", "session_id", "sent_at"
    )
    rids, cols = journal.columns(names)
    keys = _frame_keys(frame)
    # journal order (conversations) → frame order; a frame row missing from the journal takes the
    # None appended at position len(rids)
    order = pd.Index(rids, dtype=object).get_indexer(pd.Index(keys, dtype=object))
    order[order < 0] = len(rids)

    def column(name: str) -> np.ndarray:
        values = np.empty(len(rids) + 1, dtype=object)
        values[: len(rids)] = cols[name]
        return values[order]

    status = column("status")
    missing = order == len(rids)
    status[status == "inflight"] = "unknown"
    status[missing] = "pending"
    col_code, col_error = column("code"), column("error")
    if missing.any():
        col_code[missing] = "not-in-plan"
        col_error[missing] = codes.render("not-in-plan")
    warnings = warnings_by_row(plan)
    index = frame.index
    frame["import_status"] = pd.Series(status, index=index, dtype="str")
    frame["import_error_code"] = pd.Series(col_code, index=index, dtype="str")
    frame["import_error"] = pd.Series(col_error, index=index, dtype="str")
    frame["import_warnings"] = pd.Series(
        [warnings.get(k) for k in keys] if warnings else None, index=index, dtype="str"
    )
    attempts = column("attempts")
    attempts[missing] = 0
    frame["import_attempts"] = pd.Series(attempts.astype("int64"), index=index)
    for col, src in (
        ("import_message_id", "message_id"),
        ("b24_user_id", "user_id"),
        ("b24_chat_id", "chat_id"),
        ("b24_session_id", "session_id"),
    ):
        frame[col] = pd.Series(column(src), index=index, dtype="str")
    sent_at = column("sent_at")
    sent_at[pd.isna(sent_at)] = np.nan
    sent = pd.Series(sent_at.astype("float64"), index=index)
    frame["sent_at"] = pd.to_datetime(sent, unit="s", utc=True)
    return frame


def summarize(frame: pd.DataFrame, **figures: Any) -> SendSummary:
    """The summary of a run: counts and top codes from its result ``frame``, plus the run's
    ``figures`` (elapsed, sent_this_run, requests, stopped, …, the other SendSummary fields)."""
    by_status = frame["import_status"].value_counts()
    bad = frame.loc[frame["import_status"] != "sent", "import_error_code"].dropna()
    elapsed = figures["elapsed"]
    return SendSummary(
        counts={
            s: int(by_status.get(s, 0)) for s in codes.STATUSES if s != codes.DELETED or by_status.get(s)
        },
        top_errors=[(str(c), int(n)) for c, n in bad.value_counts().head(5).items()],
        messages_per_second=figures["sent_this_run"] / elapsed if elapsed > 0 else 0.0,
        **figures,
    )
