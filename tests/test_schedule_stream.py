"""The schedule built from streams (conversations in plan order, the journal's non-pending rows in
(conv, seq) order) is the schedule built from row keys and a state frame, read lazily in step."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bulkimport.journal import Journal
from bulkimport.planning import Conversation
from bulkimport.sending.scheduling import Mark, _Conv, build_schedule, build_schedule_sorted

STATUSES = ["pending", "sent", "deleted", "failed", "unknown", "inflight", "missing", "invalid"]
CODES = [None, "ERROR_ARGUMENT", "interrupted", "QUERY_LIMIT_EXCEEDED"]
# What the integrator's journal query gives (the sorted builder's marks)
MARKS_SQL = (
    "SELECT conv, seq, status, hold, code FROM rows WHERE status != 'pending' AND conv IS NOT NULL "
    "ORDER BY conv, seq"
)

Row = tuple[str, Any, Any]  # (status, hold, code) of one row


def _plan(states: list[list[Row]], locks: list[frozenset[str]]) -> list[Conversation]:
    """Conversations ``chat<i>`` whose row keys are ``"<i>:<pos>"`` (no messages needed here)."""
    return [
        Conversation(f"chat{i}", tuple(_keys(i, len(rows))), (), locks[i]) for i, rows in enumerate(states)
    ]


def _keys(i: int, n: int) -> list[str]:
    return [f"{i}:{pos}" for pos in range(n)]


def _frame(states: list[list[Row]], with_pending: bool, rng: random.Random | None = None) -> pd.DataFrame:
    """The state frame ``build_schedule`` reads: indexed by row key, in no particular order (the
    journal's ``rows()`` has no ORDER BY); hold and code as object columns so None stays None."""
    entries = [
        (f"{i}:{pos}", *row)
        for i, rows in enumerate(states)
        for pos, row in enumerate(rows)
        if with_pending or row[0] != "pending"
    ]
    if rng is not None:
        rng.shuffle(entries)
    rids = [e[0] for e in entries]
    return pd.DataFrame(
        {
            "status": pd.Series([e[1] for e in entries], index=rids, dtype="str"),
            "hold": pd.Series([e[2] for e in entries], index=rids, dtype=object),
            "code": pd.Series([e[3] for e in entries], index=rids, dtype=object),
        },
        index=pd.Index(rids, name="rid"),
    )


def _marks(states: list[list[Row]]) -> Iterator[Mark]:
    """The non-pending rows as (conv, seq, status, hold, code), in (conv, seq) order."""
    for i, rows in enumerate(states):
        for pos, (status, flag, code) in enumerate(rows):
            if status != "pending":
                yield i, pos, status, flag, code


def _both(
    states: list[list[Row]],
    retry_failed: bool,
    retry_unknown: bool,
    locks: list[frozenset[str]] | None = None,
) -> tuple[dict[int, _Conv], dict[int, _Conv]]:
    """(build_schedule, build_schedule_sorted) of the same rows."""
    locks = locks or [frozenset() for _ in states]
    plan = _plan(states, locks)
    keys = [_keys(i, len(rows)) for i, rows in enumerate(states)]
    ref = build_schedule(plan, keys, _frame(states, with_pending=False), retry_failed, retry_unknown)
    streamed = ((c.key, c.lock_keys, len(c)) for c in plan)
    got = build_schedule_sorted(streamed, _marks(states), retry_failed, retry_unknown)
    return ref, got


def _random_states(rng: random.Random) -> tuple[list[list[Row]], list[frozenset[str]]]:
    """1–30 conversations of 1–40 rows; statuses skewed per conversation so that long sent or
    pending runs and holds in the middle all happen; lock keys drawn from a few customers."""
    states: list[list[Row]] = []
    locks: list[frozenset[str]] = []
    for _ in range(rng.randint(1, 30)):
        weights = [rng.random() ** 2 for _ in STATUSES]
        rows = [
            (rng.choices(STATUSES, weights)[0], rng.choice([0, 1, None]), rng.choice(CODES))
            for _ in range(rng.randint(1, 40))
        ]
        states.append(rows)
        locks.append(frozenset(f"customer:{c}" for c in rng.sample(range(6), rng.randint(0, 2))))
    return states, locks


def test_random_plans_give_the_same_schedule_as_build_schedule() -> None:
    held = queued = 0
    for seed in range(400):
        rng = random.Random(seed)
        states, locks = _random_states(rng)
        for retry_failed in (False, True):
            for retry_unknown in (False, True):
                ref, got = _both(states, retry_failed, retry_unknown, locks)
                assert list(got) == list(ref) == list(range(len(states))), seed
                assert got == ref, (seed, retry_failed, retry_unknown)
                held += sum(c.held is not None for c in got.values())
                queued += sum(bool(c.queue) for c in got.values())
    assert held > 1000 and queued > 1000  # the plans exercise holds and queues both


def test_state_frame_with_pending_rows_and_shuffled_order_changes_nothing() -> None:
    """build_schedule may get pending rows and rows in any order; the marks never carry pending."""
    for seed in range(100):
        rng = random.Random(seed)
        states, locks = _random_states(rng)
        plan = _plan(states, locks)
        keys = [_keys(i, len(rows)) for i, rows in enumerate(states)]
        ref = build_schedule(plan, keys, _frame(states, with_pending=True, rng=rng), False, False)
        got = build_schedule_sorted(
            ((c.key, c.lock_keys, len(c)) for c in plan), _marks(states), False, False
        )
        assert got == ref, seed


def test_a_real_journal_cursor_gives_the_same_schedule(tmp_path: Path) -> None:
    """The marks straight from a journal's sqlite cursor (the integrator's query), against the
    frame ``Journal.rows(skip_pending=True)`` gives ``build_schedule``."""
    rng = random.Random(7)
    states, locks = _random_states(rng)
    # the journal's hold is NOT NULL and failed/unknown rows carry a code
    states = [[(s, f or 0, c or "ERROR_X") for s, f, c in rows] for rows in states]
    path = tmp_path / "j.db"
    journal = Journal.bind(path, portal="p", line="1", connector="c", fingerprint="f")
    journal.add_rows(
        (f"{i}:{pos}", i, pos, "pending", None, None)
        for i, rows in enumerate(states)
        for pos in range(len(rows))
    )
    journal.executemany(
        "UPDATE rows SET status=?, hold=?, code=? WHERE rid=?",
        [(*row, f"{i}:{pos}") for i, rows in enumerate(states) for pos, row in enumerate(rows)],
    )
    plan = _plan(states, locks)
    keys = [_keys(i, len(rows)) for i, rows in enumerate(states)]
    for retry_failed, retry_unknown in [(False, False), (True, False), (False, True), (True, True)]:
        ref = build_schedule(
            plan, keys, journal.rows(skip_pending=True).set_index("rid"), retry_failed, retry_unknown
        )
        with sqlite3.connect(path) as conn:
            got = build_schedule_sorted(
                ((c.key, c.lock_keys, len(c)) for c in plan),
                conn.execute(MARKS_SQL),
                retry_failed,
                retry_unknown,
            )
        assert got == ref
    journal.close()


def test_empty_plan() -> None:
    ref, got = _both([], False, False)
    assert got == ref == {}
    assert build_schedule_sorted([], [(0, 0, "sent", 0, None)], False, False) == {}


def test_all_sent() -> None:
    states = [[("sent", 0, None)] * 3, [("sent", 0, None), ("deleted", 0, "undone")]]
    ref, got = _both(states, True, True)
    assert got == ref
    assert [(c.queue, c.held, c.rest) for c in got.values()] == [([], None, []), ([], None, [])]


def test_a_failed_held_row_mid_conversation_holds_the_rest() -> None:
    rows = [
        ("sent", 0, None),
        ("failed", 0, "ERROR_A"),  # failed without hold: skipped, the conversation goes on
        ("pending", 0, None),
        ("failed", 1, "ERROR_B"),  # failed and holding
        ("pending", 0, None),
        ("inflight", 0, None),  # behind the hold: only pending rows wait in ``rest``
        ("unknown", 1, "interrupted"),
        ("sent", 0, None),
        ("pending", 0, None),
    ]
    ref, got = _both([rows], False, False)
    assert got == ref
    c = got[0]
    assert (c.queue, c.rest) == ([2], [4, 8])
    assert c.held == "held-after-failure" and c.held_detail is not None and "ERROR_B" in c.held_detail
    ref, got = _both([rows], True, False)  # failed rows go again; the unknown one holds
    assert got == ref
    c = got[0]
    assert (c.queue, c.held, c.rest) == ([1, 2, 3, 4, 5], "held-after-unknown", [8])


def test_an_unknown_first_row() -> None:
    rows = [("unknown", 1, "interrupted"), ("pending", 0, None), ("pending", 0, None)]
    ref, got = _both([rows], False, False)
    assert got == ref
    assert (got[0].queue, got[0].held, got[0].rest) == ([], "held-after-unknown", [1, 2])
    ref, got = _both([rows], False, True)
    assert got == ref
    assert (got[0].queue, got[0].held, got[0].rest) == ([0, 1, 2], None, [])


def test_marks_of_conversations_the_plan_lacks_are_ignored() -> None:
    plan = [("a", frozenset({"customer:1"}), 2), ("b", frozenset(), 3)]
    marks = [
        (-1, 0, "sent", 0, None),
        (0, 1, "sent", 0, None),
        (1, 0, "unknown", 1, "interrupted"),
        (2, 0, "sent", 0, None),
        (9, 5, "failed", 1, "E"),
    ]
    got = build_schedule_sorted(plan, marks, False, False)
    assert got[0] == _Conv(0, "a", frozenset({"customer:1", "chat:a"}), [0])
    assert (got[1].queue, got[1].held, got[1].rest) == ([], "held-after-unknown", [1, 2])
    assert list(got) == [0, 1]


def test_unsorted_marks_are_an_error() -> None:
    plan = [("a", frozenset(), 5), ("b", frozenset(), 5)]
    with pytest.raises(ValueError, match="position order"):
        build_schedule_sorted(plan, [(0, 3, "sent", 0, None), (0, 1, "sent", 0, None)], False, False)
    with pytest.raises(ValueError, match="conv, seq"):
        build_schedule_sorted(plan, [(1, 0, "sent", 0, None), (0, 1, "sent", 0, None)], False, False)


def test_marks_are_read_in_step_with_the_conversations() -> None:
    """Neither stream is read more than one conversation ahead of the other (at 10M rows the marks
    come from a cursor: holding them all, or all the conversations first, is what this forbids)."""
    rng = random.Random(3)
    n = 300
    # every third conversation has no mark at all; the others a few, and marks of convs past the end
    states = [
        [(rng.choice(STATUSES), rng.choice([0, 1]), "E") if i % 3 else ("pending", 0, None) for _ in range(8)]
        for i in range(n)
    ]
    marks = [*_marks(states), (n, 0, "sent", 0, None), (n + 5, 1, "sent", 0, None)]
    pulled = {"convs": 0, "marks": 0}  # items handed out so far

    def conversations() -> Iterator[tuple[str, frozenset[str], int]]:
        for i in range(n):
            # conversation i asked for: every mark of conversation i - 2 and before must be read
            owed = sum(1 for m in marks if m[0] <= i - 2)
            if pulled["marks"] < owed:
                raise AssertionError(f"conversation {i} pulled with {pulled['marks']}/{owed} marks read")
            pulled["convs"] = i + 1
            yield f"chat{i}", frozenset(), len(states[i])

    def lazy_marks() -> Iterator[Mark]:
        for k, mark in enumerate(marks):
            if k:  # asked for another: the mark handed out last may be at most one conversation ahead
                current = pulled["convs"] - 1
                if marks[k - 1][0] > current + 1:
                    raise AssertionError(f"mark {k} pulled while at conversation {current}")
            pulled["marks"] = k + 1
            yield mark

    got = build_schedule_sorted(conversations(), lazy_marks(), False, False)
    ref, _ = _both(states, False, False)
    assert got == ref
    assert pulled["convs"] == n
    assert pulled["marks"] >= len(marks) - 2  # the marks past the end: one read ahead at most
