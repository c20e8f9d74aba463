"""The sender's parts on their own: progress collectors, the run state's stop rules, the schedule's
choice of chunks and what one answer means for its rows — without HTTP where it is not the point."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from test_send import FakePortal, client_for, make_plan

from bulkimport.clock import ManualClock
from bulkimport.errors import (
    AmbiguousError,
    ConfigError,
    FatalError,
    OperatingLimitError,
    RequestRejectedError,
    RetryableError,
    TokenExpiredError,
)
from bulkimport.journal import RowUpdate
from bulkimport.sending import CallbackProgress, NullProgress, ProgressCollector, Sender, TqdmProgress
from bulkimport.sending.outcome import _item_error, settle_result
from bulkimport.sending.scheduling import Schedule, _Conv, _Request, hold, locks_in_flight
from bulkimport.sending.state import (
    MAX_AMBIGUOUS_IN_A_ROW,
    MAX_CONNECT_FAILURES,
    MAX_REFUSALS_IN_A_ROW,
    MAX_SAME_REJECTION,
    RunState,
)


class Recorder:
    """A progress collector that writes down every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def start(self, total: int, done: int) -> None:
        self.calls.append(("start", (total, done)))

    def update(self, n: int, counts: Mapping[str, int]) -> None:
        self.calls.append(("update", (n, dict(counts))))

    def waiting(self, seconds: float | None, reason: str | None) -> None:
        self.calls.append(("waiting", (seconds, reason)))

    def close(self) -> None:
        self.calls.append(("close", None))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.calls]

    def updates(self) -> list[tuple[int, dict[str, int]]]:
        return [v for k, v in self.calls if k == "update"]


def _sender(plan: Any, fake: FakePortal, clock: ManualClock, tmp_path: Path, **kw: Any) -> Sender:
    client = client_for(fake, clock)
    return Sender(plan, line=1, connector="hist", state=tmp_path / "j.db", client=client, **kw)


# ------------------------------------------------------------------------------------------------
# progress
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_in_flight", [1, 2])
def test_a_custom_collector_hears_start_updates_and_close_with_the_counts(tmp_path, max_in_flight):
    clock = ManualClock()
    fake = FakePortal(clock)
    fake.reject_items = {"m4"}  # one item answered SUCCESS: false
    plan = make_plan([7, 3, 5])
    seen = Recorder()
    assert isinstance(seen, ProgressCollector)
    out = _sender(plan, fake, clock, tmp_path, progress=seen, max_in_flight=max_in_flight).run()
    assert out.summary.counts["sent"] == 14 and out.summary.counts["failed"] == 1
    kinds = seen.kinds()
    assert kinds[0] == "start" and kinds[-1] == "close"
    assert kinds.count("start") == 1 and kinds.count("close") == 1
    assert seen.calls[0][1] == (15, 0)
    updates = seen.updates()
    assert sum(n for n, _ in updates) == 15  # every settled row once
    assert updates[-1][1] == {"sent": 14, "failed": 1, "unknown": 0}
    sent = [counts["sent"] for _, counts in updates]
    assert sent == sorted(sent)  # running counts of this run, never going back

    # resume: the failed row is sent again, the others were settled before this run
    fake.reject_items = set()
    again = Recorder()
    out = _sender(plan, fake, clock, tmp_path, progress=again, retry_failed=True).run()
    assert out.summary.counts["sent"] == 15
    assert again.calls[0] == ("start", (15, 14))
    assert again.updates()[-1] == (1, {"sent": 1, "failed": 0, "unknown": 0})
    assert again.kinds()[-1] == "close"


def test_a_collector_is_told_what_the_governor_waits_for(tmp_path):
    clock = ManualClock()
    fake = FakePortal(clock)
    seen = Recorder()
    # one message per request: the leaky bucket (50 requests, 2 per second) makes the sender wait
    plan = make_plan([80], chunk_size=1)
    out = _sender(plan, fake, clock, tmp_path, progress=seen, max_in_flight=1).run()
    assert out.summary.counts["sent"] == 80
    waits = [v for k, v in seen.calls if k == "waiting"]
    reasons = [r for s, r in waits if r and s]
    assert reasons, seen.calls[:20]
    assert sum(s for s, r in waits if s) > 0
    assert all("token" not in r for r in reasons)
    assert seen.kinds()[-1] == "close"


def test_the_collector_is_closed_when_the_run_is_interrupted(tmp_path):
    clock = ManualClock()
    fake = FakePortal(clock)
    calls = {"n": 0}

    def ctrl_c_on_second(method: str, messages: list[dict[str, Any]]) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return None

    fake.faults.append(ctrl_c_on_second)
    seen = Recorder()
    out = _sender(make_plan([4, 4]), fake, clock, tmp_path, progress=seen, max_in_flight=1).run()
    assert out.summary.interrupted
    assert seen.kinds()[-1] == "close" and seen.kinds().count("close") == 1


class CountingTqdm:
    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, **kw: Any) -> None:
        CountingTqdm.made.append(kw)
        self.n = kw.get("initial", 0)

    def set_postfix(self, post: Any, refresh: bool = True) -> None:
        pass

    def update(self, n: int) -> None:
        self.n += n

    def close(self) -> None:
        pass


def test_progress_false_builds_no_tqdm(tmp_path, monkeypatch):
    import tqdm.auto

    CountingTqdm.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", CountingTqdm)
    clock = ManualClock()
    fake = FakePortal(clock)
    plan = make_plan([3, 2])
    out = _sender(plan, fake, clock, tmp_path / "a", progress=False).run()
    assert out.summary.counts["sent"] == 5 and CountingTqdm.made == []
    if "ipykernel" not in sys.modules:  # None: a bar only on a terminal (pytest captures stderr)
        _sender(plan, fake, clock, tmp_path / "b", progress=None).run()
        assert CountingTqdm.made == []
    _sender(plan, fake, clock, tmp_path / "c", progress=True).run()  # and the check can fail
    assert len(CountingTqdm.made) == 1 and CountingTqdm.made[0]["total"] == 5


def test_on_progress_is_called_beside_a_collector(tmp_path):
    clock = ManualClock()
    fake = FakePortal(clock)
    seen = Recorder()
    infos: list[dict[str, Any]] = []
    sender = _sender(make_plan([2, 2]), fake, clock, tmp_path, progress=seen)
    sender.on_progress = infos.append
    sender.run()
    assert seen.updates()[-1][1]["sent"] == 4
    assert infos[-1]["sent"] == 4 and "waiting_for" in infos[-1]


def test_callback_and_null_progress_on_their_own():
    infos: list[dict[str, Any]] = []
    cb = CallbackProgress(infos.append)
    cb.start(5, 0)
    cb.update(2, {"sent": 2, "failed": 0, "unknown": 0})
    why = "imconnector.send.messages operating budget (3.0s)"
    cb.waiting(3.0, why)
    cb.update(3, {"sent": 4, "failed": 1, "unknown": 0})
    cb.close()
    assert infos == [
        {"sent": 2, "failed": 0, "unknown": 0, "waiting_for": None},
        {"sent": 2, "failed": 0, "unknown": 0, "waiting_for": why},
        {"sent": 4, "failed": 1, "unknown": 0, "waiting_for": why},
    ]
    for collector in (NullProgress(), TqdmProgress(), cb):
        assert isinstance(collector, ProgressCollector)
    empty = TqdmProgress()
    empty.start(0, 0)  # nothing to send: no bar, and the other calls are harmless
    empty.update(0, {})
    empty.waiting(None, None)
    empty.close()


def test_a_progress_that_is_no_collector_is_refused(tmp_path):
    clock = ManualClock()
    with pytest.raises(ConfigError, match="progress=str"):
        _sender(make_plan([1]), FakePortal(clock), clock, tmp_path, progress="yes")


# ------------------------------------------------------------------------------------------------
# the run state's stop rules
# ------------------------------------------------------------------------------------------------
def test_failed_connects_in_a_row_stop_as_portal_unreachable():
    state = RunState(2)
    for _ in range(MAX_CONNECT_FAILURES - 1):
        state.settled(RetryableError("connection-failed"), [])
    assert state.stopped is None
    state.settled(RetryableError("QUERY_LIMIT_EXCEEDED", status=503), [])  # not a connect: starts again
    for _ in range(MAX_CONNECT_FAILURES - 1):
        state.settled(RetryableError("connection-failed"), [])
    assert state.stopped is None
    state.settled(RetryableError("connection-failed"), [])
    assert state.stopped is not None and state.stopped.code == "portal-unreachable"
    assert "portal-unreachable" in (state.pending_reason() or "")


def test_refusals_in_a_row_give_up_and_an_answer_starts_them_again():
    state = RunState(2)
    for _ in range(MAX_REFUSALS_IN_A_ROW - 1):
        state.settled(RetryableError("QUERY_LIMIT_EXCEEDED", status=503), [])
    assert state.stopped is None and state.refusals == MAX_REFUSALS_IN_A_ROW - 1
    state.settled(None, [RowUpdate("2", "sent", None, None)], [None])
    assert state.refusals == 0 and state.stopped is None
    for _ in range(MAX_REFUSALS_IN_A_ROW):
        state.settled(RetryableError("QUERY_LIMIT_EXCEEDED", status=503), [])
    assert state.stopped is not None and state.stopped.code == "gave-up-retrying"


def test_unusable_answers_in_a_row_stop_as_repeated_ambiguous():
    state = RunState(2)
    lost = [RowUpdate("2", "unknown", "timeout", "read timeout", hold=1)]
    for _ in range(MAX_AMBIGUOUS_IN_A_ROW - 1):
        state.settled(AmbiguousError("read timeout"), lost, conversations=1)
    state.settled(None, [], [None])  # a clean answer in between
    for _ in range(MAX_AMBIGUOUS_IN_A_ROW - 1):
        state.settled(AmbiguousError("read timeout"), lost, conversations=1)
    assert state.stopped is None
    state.settled(AmbiguousError("read timeout"), lost, conversations=1)
    assert state.stopped is not None and state.stopped.code == "repeated-ambiguous"
    assert state.tally["unknown"] == 2 * MAX_AMBIGUOUS_IN_A_ROW - 1


def test_the_same_request_level_rejection_in_a_row_stops_the_run():
    rejected = RequestRejectedError("CONNECTOR_PROXY_NO_ADD_USER")
    state = RunState(2)
    for _ in range(MAX_SAME_REJECTION - 1):
        state.settled(rejected, [], ["CONNECTOR_PROXY_NO_ADD_USER"])
    state.settled(None, [], ["ERROR_ARGUMENT"])  # a different code breaks the row
    for _ in range(MAX_SAME_REJECTION - 1):
        state.settled(rejected, [], ["CONNECTOR_PROXY_NO_ADD_USER"])
    state.settled(None, [], [None])  # a clean conversation breaks it too
    for _ in range(MAX_SAME_REJECTION - 1):
        state.settled(rejected, [], ["CONNECTOR_PROXY_NO_ADD_USER"])
    state.settled(None, [], ["CONNECTOR_PROXY_NO_ADD_USER", None])  # verdicts apply in order
    assert state.stopped is None
    state.settled(None, [], ["CONNECTOR_PROXY_NO_ADD_USER"] * (MAX_SAME_REJECTION - 1))
    assert state.stopped is None
    state.settled(rejected, [], ["CONNECTOR_PROXY_NO_ADD_USER"])
    assert state.stopped is not None and state.stopped.code == "repeated-rejection"
    assert "CONNECTOR_PROXY_NO_ADD_USER" in str(state.stopped)


def test_fatal_errors_stop_and_the_first_reason_wins():
    state = RunState(2)
    state.settled(TokenExpiredError("expired_token"), [])  # answered: refreshed and repeated
    assert state.stopped is None
    first = FatalError("NOT_ACTIVE_LINE")
    state.settled(first, [])
    state.settled(FatalError("PORTAL_DELETED"), [])
    assert state.stopped is first
    nested = RunState(2)
    nested.settled(None, [], fatal=FatalError("WRONG_AUTH_TYPE"))  # a command's fatal error
    assert nested.stopped is not None and nested.stopped.code == "WRONG_AUTH_TYPE"
    assert not nested.may_launch(0)


def test_concurrency_comes_back_only_after_a_clean_answer_and_never_after_a_429():
    state = RunState(3)
    assert state.in_flight_now == 1 and state.may_launch(0) and not state.may_launch(1)
    state.answer_arrived(None)
    state.settled(None, [], [None])
    assert state.in_flight_now == 3 and state.may_launch(2) and not state.may_launch(3)
    state.answer_arrived(RetryableError("QUERY_LIMIT_EXCEEDED", status=503))
    state.settled(RetryableError("QUERY_LIMIT_EXCEEDED", status=503), [])
    assert state.in_flight_now == 1
    state.answer_arrived(None, [OperatingLimitError("OPERATION_TIME_LIMIT", status=429)])
    state.settled(None, [], [])
    assert state.budget_refused and state.in_flight_now == 1
    state.answer_arrived(None)
    state.settled(None, [], [None])
    assert state.in_flight_now == 1  # for the rest of the run


def test_interrupted_rows_are_not_reached_for_that_reason():
    state = RunState()
    assert state.pending_reason() is None
    state.interrupted = True
    assert "interrupted" in (state.pending_reason() or "")


# ------------------------------------------------------------------------------------------------
# scheduling and outcome
# ------------------------------------------------------------------------------------------------
def _conv(i: int, size: int, *locks: str) -> _Conv:
    return _Conv(i, f"chat{i}", frozenset({f"chat:chat{i}", *locks}), list(range(size)))


def test_the_schedule_never_puts_two_conversations_sharing_a_lock_key_in_one_request():
    convs = {0: _conv(0, 5, "user:a"), 1: _conv(1, 3, "user:a"), 2: _conv(2, 2, "user:b"), 3: _conv(3, 1)}
    schedule = Schedule(convs)
    chosen = schedule.choose(set(), mpc=2, cpb=10)
    assert [(c.index, pos) for c, pos in chosen] == [(0, [0, 1]), (2, [0, 1]), (3, [0])]
    req = _Request(0, chosen, {}, [], None)
    taken = locks_in_flight([req])
    assert "user:a" in taken and "chat:chat1" not in taken
    assert schedule.choose(taken, mpc=2, cpb=10) == []  # chat1 shares user:a with chat0 on the wire
    hold(convs[1], "held-after-unknown", "held")
    assert convs[1].queue == [] and convs[1].rest == [0, 1, 2]
    notes = schedule.pending_notes([[f"r{i}-{p}" for p in range(5)] for i in range(4)], None)
    assert ("r1-0", "held-after-unknown", "held") in notes and len(notes) == 3


def test_the_critical_conversation_on_the_wire_holds_back_a_request_without_it():
    convs = {0: _conv(0, 200), 1: _conv(1, 2), 2: _conv(2, 2)}
    schedule = Schedule(convs)
    assert schedule.critical_on_the_wire({"chat:chat0"}, mpc=10, cpb=4)  # 20 chunks ≫ 2 calls left
    assert not schedule.critical_on_the_wire({"chat:chat1"}, mpc=10, cpb=4)
    # many short conversations need more calls than the long one has chunks: no reason to wait
    many = Schedule({0: _conv(0, 200), **{i: _conv(i, 2) for i in range(1, 101)}})
    assert not many.critical_on_the_wire({"chat:chat0"}, mpc=10, cpb=4)


def test_what_one_answer_means_for_its_rows():
    ups, ok = settle_result(
        {"SUCCESS": True, "DATA": {"RESULT": [
            {"SUCCESS": True, "message": {"id": "m1"}, "user": 585, "session": {"ID": 3, "CHAT_ID": "9"}},
            {"SUCCESS": False, "ERRORS": ["IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA"]},
            {"session": {"CHAT_ID": "9"}},
        ]}},
        ["2", "3", "4"],
        1.0,
    )
    assert ok is True
    assert [(u.status, u.code) for u in ups] == [
        ("sent", None), ("failed", "IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA"), ("sent", None)
    ]
    assert (ups[0].message_id, ups[0].user_id, ups[0].session_id, ups[0].chat_id) == ("m1", "585", "3", "9")
    ups, ok = settle_result({"SUCCESS": True, "DATA": {"RESULT": [{}]}}, ["2", "3"], 1.0)  # one for two
    assert ok[0] == "held-after-unknown" and {u.code for u in ups} == {"result-mismatch"}
    ups, ok = settle_result({"SUCCESS": False, "ERRORS": [{"code": "X", "message": "no"}]}, ["2", "3"], 1.0)
    assert {u.status for u in ups} == {"unknown"} and ups[0].code == "refused-maybe-stored"
    ups, ok = settle_result({"SUCCESS": False, "ERRORS": [{"code": "X", "message": "no"}]}, ["2"], 1.0)
    assert ups[0].status == "failed" and ok[0] == "held-after-failure"
    prose = {"ERRORS": ["user: CONNECTOR_PROXY_NO_ADD_USER here"]}
    assert _item_error(prose)[0] == "CONNECTOR_PROXY_NO_ADD_USER"
    assert _item_error({})[0] == "item-rejected"
