"""Finish the open-line sessions an import opened (``imopenlines.operator.another.finish``).

Every imported conversation opens a session that lands in an operator's queue (at most 1,000 open
per operator): a run finishes, by default, each conversation's session as soon as its rows are all
settled — inside the send loop (:mod:`bulkimport.sending.finishing`: the finish commands ride in the
send batches, or go in batches of their own) — then, at the end of the run, whatever the loop did
not finish (:func:`finish_sessions`, the safety net); ``bulkimport finish STATE`` does it later
(after ``--keep-open``, or for what an earlier run left).

* **Which**: a conversation is *complete* when none of its rows is pending, unknown, in flight or a
  failure that holds the rest, and at least one was sent; its ``CHAT_ID`` is the portal chat the
  journal recorded for its sent rows (never the external ``chat.id``).
* **Once**: the journal's own table ``finished(chat_id, finished_at, code)`` records each finished
  chat, so a resumed run or a second ``finish`` makes no call. The call is idempotent on the
  portal (a finished chat answers ``true`` again), so a cut-off batch is simply tried again.
* **Cost**: up to 50 finish commands per ``batch`` request (in the loop: the room a send batch
  leaves), through the client's governor (bucket and the finish method's own operating budget).
* **Errors** are per chat (kept in :attr:`FinishResult.failed`), never fatal for the others; only
  an answer that stops every call (credentials, set-up) ends the pass early, its chats reported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..codes import count_of
from ..errors import AmbiguousError, BulkImportError, FatalError
from ..journal import Journal
from ..portal.methods import FINISH_METHOD

#: Commands per batch request (the portal's cap).
PER_BATCH = 50
#: Retries of a batch the portal refused before running it (503/429: the governor waits).
RETRIES = 8

FINISHED_SCHEMA = """
CREATE TABLE IF NOT EXISTS finished (
    chat_id TEXT PRIMARY KEY,   -- the portal's CHAT_ID (rows.chat_id)
    finished_at REAL NOT NULL,
    code TEXT NOT NULL          -- 'finished' (the portal answered true)
);
"""

#: Rows that keep a conversation from being complete (more may still be sent into its session).
_COMPLETE_SQL = """
SELECT conv, MAX(CASE WHEN status = 'sent' THEN chat_id END) AS chat
FROM rows WHERE conv IS NOT NULL GROUP BY conv
HAVING SUM(status IN ('pending', 'unknown', 'inflight') OR (status = 'failed' AND hold = 1)) = 0
   AND SUM(status = 'sent') > 0
ORDER BY conv
"""

#: The same rule for some conversations (``{marks}``: one ``?`` per conversation index).
_COMPLETE_OF_SQL = """
SELECT conv, MAX(CASE WHEN status = 'sent' THEN chat_id END) AS chat
FROM rows WHERE conv IN ({marks}) GROUP BY conv
HAVING SUM(status IN ('pending', 'unknown', 'inflight') OR (status = 'failed' AND hold = 1)) = 0
   AND SUM(status = 'sent') > 0
"""
#: Conversations per ``conv IN (…)`` query (well under SQLite's bound-parameter limit).
_PER_QUERY = 500


@dataclass
class FinishResult:
    """What one finishing pass did: calls made, chats finished, already done, failed, unknowable."""

    finished: int = 0  # chats closed by this pass
    already: int = 0  # complete chats the journal had already finished: no call
    no_chat: int = 0  # complete conversations without a known CHAT_ID (e.g. confirmed-arrived)
    requests: int = 0  # batch requests made (in the send loop: requests of finish commands only)
    carried: int = 0  # finish commands that rode in the send loop's send batches (no request of their own)
    failed: dict[str, str] = field(default_factory=dict)  # CHAT_ID → why it was not finished
    interrupted: bool = False  # Ctrl-C while finishing: what finished is recorded, the rest is not

    @property
    def complete(self) -> bool:
        """Every complete conversation's session is finished."""
        return not self.failed and not self.no_chat and not self.interrupted

    def __str__(self) -> str:
        text = f"Finished {count_of(self.finished, 'session')} ({count_of(self.requests, 'batch request')}"
        text += f", {count_of(self.carried, 'finish command')} in send batches)" if self.carried else ")"
        if self.already:
            text += f", {self.already} already finished"
        if self.failed:
            text += f", {len(self.failed)} not finished (errors)"
        if self.interrupted:
            text += ", interrupted (Ctrl-C)"
        if self.no_chat:
            text += f", {self.no_chat} without a known CHAT_ID (finish them in the open line)"
        return text

    def lines(self, limit: int = 10) -> list[str]:
        """The summary line, then one line per failed chat (the first ``limit``)."""
        out = [str(self)]
        for chat, why in list(self.failed.items())[:limit]:
            out.append(f"  chat {chat}: {why}")
        if len(self.failed) > limit:
            out.append(f"  … and {len(self.failed) - limit} more")
        return out


def ensure_table(journal: Journal) -> None:
    """Create the ``finished`` table if this journal has none yet."""
    with journal.transaction() as cur:
        cur.execute(FINISHED_SCHEMA)


def _has_table(journal: Journal, name: str) -> bool:
    return bool(journal.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)))


#: Chats finished after the last message sent into them. A message sent into a finished chat (a
#: row verify found missing, a fixed or new row of a re-run, a resolved one) opens a new session on
#: the portal, so the chat is to be finished again (found by a new-user trial: those sessions were
#: left open, the journal saying "already finished"). Both times are wall-clock (``time.time()``).
_FRESH_FINISHED_SQL = """
SELECT f.chat_id FROM finished f
LEFT JOIN (SELECT chat_id, MAX(sent_at) AS last FROM rows
           WHERE status = 'sent' AND chat_id IN (SELECT chat_id FROM finished) GROUP BY chat_id) s
       ON s.chat_id = f.chat_id
WHERE s.last IS NULL OR f.finished_at >= s.last
"""


def finished_chats(journal: Journal) -> set[str]:
    """CHAT_IDs the journal records as finished after their last sent message."""
    if not _has_table(journal, "finished"):
        return set()
    return {str(r[0]) for r in journal.query(_FRESH_FINISHED_SQL)}


def to_finish(journal: Journal) -> tuple[list[str], int, int]:
    """(CHAT_IDs of complete conversations not yet finished, how many already are, how many
    complete conversations have no known CHAT_ID)."""
    done = finished_chats(journal)
    todo: list[str] = []
    seen: set[str] = set()
    already = no_chat = 0
    for _conv, chat in journal.query(_COMPLETE_SQL):
        if chat is None or str(chat) in ("", "None"):
            no_chat += 1
        elif str(chat) in done:
            already += 1
        elif str(chat) not in seen:
            seen.add(str(chat))
            todo.append(str(chat))
    return todo, already, no_chat


def complete_chats(journal: Journal, convs: Iterable[int]) -> dict[int, str | None]:
    """Of the conversations ``convs`` (plan indices), the complete ones → their CHAT_ID (None when
    the journal knows none): the rule of :func:`to_finish`, asked for a few at a time by the loop."""
    wanted = sorted({int(c) for c in convs})
    out: dict[int, str | None] = {}
    for start in range(0, len(wanted), _PER_QUERY):
        part = wanted[start : start + _PER_QUERY]
        sql = _COMPLETE_OF_SQL.format(marks=",".join("?" * len(part)))
        for conv, chat in journal.query(sql, part):
            out[int(conv)] = None if chat is None or str(chat) in ("", "None") else str(chat)
    return out


def unfinished_conversations(journal: Journal, conversations: int) -> int:
    """How many of a plan's ``conversations`` the journal does not record as finished (what a
    resumed run still has to finish: its ETA counts their finish calls)."""
    if not _has_table(journal, "finished"):
        return conversations
    done = journal.query(
        "SELECT COUNT(DISTINCT conv) FROM rows WHERE conv IS NOT NULL AND status = 'sent' "  # noqa: S608
        f"AND chat_id IN ({_FRESH_FINISHED_SQL})"  # a constant of this module: no user text
    )
    return max(0, conversations - int(done[0][0] or 0))


def merged(in_loop: FinishResult | None, at_end: FinishResult | None) -> FinishResult | None:
    """One run's finishing: what the send loop did, then the end-of-run pass (which retried what
    the loop could not finish, so its failures are the last word)."""
    if in_loop is None or at_end is None:
        return at_end if in_loop is None else in_loop
    return FinishResult(
        finished=in_loop.finished + at_end.finished,
        already=max(0, at_end.already - in_loop.finished),  # finished before this run
        no_chat=at_end.no_chat,
        requests=in_loop.requests + at_end.requests,
        carried=in_loop.carried,
        failed=dict(at_end.failed),
        interrupted=at_end.interrupted,
    )


def finish_requests(conversations: int) -> int:
    """Batch requests finishing ``conversations`` sessions takes (what the ETA adds)."""
    return math.ceil(conversations / PER_BATCH) if conversations > 0 else 0


def with_finishing(estimate: Any, conversations: int) -> Any:
    """``estimate`` (a plan's :class:`~bulkimport.planning.Estimate`) plus finishing
    ``conversations`` sessions. The finish commands ride in the send batches' room (a request holds
    at most ``batch_max`` commands of either kind) or go in batches of their own, so the requests
    become ``max(the sends' requests, ceil((calls + conversations) / batch_max))`` — one more per 50
    sessions when the send batches are full — sharing the bucket (drained at Y per second); the
    finish method's server time is budgeted apart from the send method's."""
    import dataclasses

    if conversations <= 0:
        return estimate
    limits = estimate.limits
    packed = math.ceil((estimate.calls + conversations) / max(1, limits.batch_max))
    requests = max(estimate.requests, packed)
    bucket = max(0.0, (requests - limits.bucket_size) / limits.drain_rate)
    binding = "bucket" if bucket > estimate.seconds else estimate.binding
    return dataclasses.replace(
        estimate, requests=requests, seconds=max(estimate.seconds, bucket), binding=binding
    )


def finish_sessions(
    client: Any,
    journal: Journal,
    *,
    chats: Iterable[str] | None = None,
    progress: Any = None,
    now: Callable[[], float] = time.time,
) -> FinishResult:
    """Finish every complete, unfinished conversation's session (or only ``chats``) in batches;
    ``progress``: a progress collector told the number of calls and how many are done. Ctrl-C
    stops the pass (``interrupted``) with what finished recorded: finishing is idempotent."""
    ensure_table(journal)
    todo, already, no_chat = to_finish(journal)
    if chats is not None:
        wanted = {str(c) for c in chats}
        todo = [c for c in todo if c in wanted]
    result = FinishResult(already=already, no_chat=no_chat)
    if progress is not None:
        progress.start(len(todo), 0)
    for start in range(0, len(todo), PER_BATCH):
        part = todo[start : start + PER_BATCH]
        try:
            stop = _finish_batch(client, journal, part, result, now)
        except KeyboardInterrupt:  # what finished is recorded; the rest waits for the next pass
            result.interrupted = True
            break
        if progress is not None:
            progress.update(len(part), {"finished": result.finished, "failed": len(result.failed)})
        if stop is not None:
            for chat in todo[start + PER_BATCH :]:
                result.failed[chat] = f"not tried: {stop}"
            break
    if progress is not None:
        progress.close()
    return result


def _finish_batch(
    client: Any, journal: Journal, chats: list[str], result: FinishResult, now: Callable[[], float]
) -> str | None:
    """One batch of finish commands; records what finished; returns why to stop, if it must."""
    commands = {f"f{i}": (FINISH_METHOD, {"CHAT_ID": int(chat)}) for i, chat in enumerate(chats)}
    try:
        answer = client.batch(commands, retries=RETRIES)
    except (BulkImportError, AmbiguousError) as exc:
        reason = why(exc)
        for chat in chats:
            result.failed[chat] = reason
        return reason if isinstance(exc, FatalError) else None
    finally:
        result.requests += 1
    done: list[str] = []
    for key, chat in zip(commands, chats, strict=True):
        if key in answer.errors:
            result.failed[chat] = why(answer.errors[key])
        elif finished_answer(answer.results.get(key)):
            done.append(chat)
        elif key in answer.results:
            result.failed[chat] = f"unexpected answer {answer.results[key]!r}"
        else:
            result.failed[chat] = "no answer for this command (try `bulkimport finish` again)"
    record(journal, done, now())
    result.finished += len(done)
    return None


def finished_answer(value: Any) -> bool:
    """Whether a finish command's result says the session is finished (``true``; also when it
    already was)."""
    return value is True or value in ("true", 1)


def record(journal: Journal, chats: Iterable[str], when: float) -> None:
    """Record ``chats`` as finished at ``when``, in one transaction (a chat finished again after a
    message reopened it gets the new time)."""
    rows = [(str(chat), when, "finished") for chat in chats]
    if rows:
        with journal.transaction() as cur:
            cur.executemany(
                "INSERT OR REPLACE INTO finished (chat_id, finished_at, code) VALUES (?, ?, ?)", rows
            )


def why(exc: BaseException) -> str:
    """A one-line reason from an error (codes and descriptions only: no secrets)."""
    code = getattr(exc, "code", None) or type(exc).__name__
    text = getattr(exc, "description", "") or ""
    return f"{code}: {text}" if text else str(code)


__all__ = [
    "FINISHED_SCHEMA", "FinishResult", "complete_chats", "finish_requests", "finish_sessions", "merged",
    "to_finish", "unfinished_conversations", "with_finishing",
]
