"""Two requests in flight (``max_in_flight``): lock keys never shared by overlapping requests, each
conversation in order and exactly once, and refusals, unusable answers, fatal stops, token expiry,
Ctrl-C and kill -9 with two requests on the wire each settle exactly their own rows."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from drills.kit import check_store, cli_env, journal_statuses, register, run_args, run_cli, write_history
from test_send import FakePortal, make_plan

from bulkimport.clock import ManualClock
from bulkimport.errors import ConfigError
from bulkimport.journal import Journal
from bulkimport.planning import FAILURE_COLUMNS, Conversation, Plan
from bulkimport.portal.client import Client, MockTransport, RawResponse, _ambiguous
from bulkimport.portal.encoding import decode_query
from bulkimport.sandbox import Sandbox
from bulkimport.sending.sender import Sender

Answer = Callable[[str, dict[str, Any]], RawResponse]


def _messages(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The MESSAGES items one request carries (a batch or a single call)."""
    if url.endswith("/batch"):
        out: list[dict[str, Any]] = []
        for cmd in body["cmd"].values():
            out += decode_query(cmd.split("?", 1)[1])["MESSAGES"]
        return out
    return list(body.get("MESSAGES", []))


class Wire:
    """A fake portal's handler that records what was in flight together.

    For each send request (numbered from 1) it notes the chats and customers it carries, checks
    them against every request on the wire at that moment, and can hold chosen requests at a
    barrier (so they are provably in flight together) or answer them differently (``answers``).
    """

    def __init__(self, fake: FakePortal, *, hold: tuple[int, ...] = (), delay: float = 0.0,
                 answers: dict[int, Answer] | None = None) -> None:
        self.fake = fake
        self.lock = threading.Lock()
        self.active: dict[int, set[str]] = {}
        self.most = 0
        self.count = 0
        self.shared: list[tuple[int, int, set[str]]] = []  # overlapping requests sharing a key
        self.carried: dict[int, list[str]] = {}  # message ids per request number
        self.together: dict[int, int] = {}  # requests on the wire when request n arrived
        self.hold = set(hold)
        self.barrier = threading.Barrier(len(hold), timeout=10) if hold else None
        self.delay = delay
        self.answers = answers or {}

    def __call__(self, url: str, body: dict[str, Any]) -> RawResponse | BaseException:
        msgs = _messages(url, body)
        keys = {f"chat:{m['chat']['id']}" for m in msgs} | {f"user:{m['user']['id']}" for m in msgs}
        with self.lock:
            self.count += 1
            n = self.count
            for other, their in self.active.items():
                if their & keys:
                    self.shared.append((n, other, their & keys))
            self.active[n] = keys
            self.most = max(self.most, len(self.active))
            self.together[n] = len(self.active)
            self.carried[n] = [str(m["message"]["id"]) for m in msgs]
        try:
            if n in self.hold and self.barrier is not None:
                self.barrier.wait()
            if self.delay:
                time.sleep(self.delay)
            answer = self.answers.get(n)
            if answer is not None:
                return answer(url, body)
            return self.fake.handler(url, body)
        finally:
            with self.lock:
                del self.active[n]


def _sender(plan: Plan, wire: Wire, clock: ManualClock, tmp_path: Path,
            auth: Any = "token-aaaaaaaa", **kw: Any) -> Sender:
    client = Client("https://acme.bitrix24.ru", auth, clock=clock, session=MockTransport(wire))
    return Sender(plan, line=1, connector="hist", state=tmp_path / "j.db", progress=False, client=client,
                  **kw)


def _paired_plan(pairs: int, size: int) -> Plan:
    """Conversations in pairs that share one customer (lock key), ``size`` messages each."""
    rows, convs, rid = [], [], 2
    for ci in range(2 * pairs):
        user = f"u{ci // 2}"
        ids, msgs = [], []
        for i in range(size):
            msgs.append({"user": {"id": user, "name": "Ann"},
                         "message": {"id": f"m{rid}", "date": 1_600_000_000 + i, "text": f"c{ci} #{i}"},
                         "chat": {"id": f"chat{ci}"}})
            rows.append({"row": rid, "chat": f"chat{ci}"})
            ids.append(rid)
            rid += 1
        convs.append(Conversation(f"chat{ci}", tuple(ids), tuple(msgs), frozenset({f"chat{ci}", user})))
    frame = pd.DataFrame(rows).set_index("row")
    return Plan(frame=frame, conversations=convs, failures=pd.DataFrame([], columns=FAILURE_COLUMNS),
                chunk_size=5, fingerprint="pairs")


def _stored_in_order(fake: FakePortal, plan: Plan) -> dict[str, int]:
    """Copies per message id in the fake portal; asserts each chat's stored ids keep plan order."""
    copies: dict[str, int] = {}
    by_chat: dict[str, list[str]] = {}
    for m in fake.stored:
        mid = str(m["message"]["id"])
        copies[mid] = copies.get(mid, 0) + 1
        by_chat.setdefault(str(m["chat"]["id"]), []).append(mid)
    for conv in plan.conversations:
        want = [str(m["message"]["id"]) for m in conv.messages]
        got = by_chat.get(conv.key, [])
        assert got == [w for w in want if w in got], (conv.key, got)
    return copies


def test_overlapping_requests_never_share_a_lock_key_and_keep_order(tmp_path):
    clock = ManualClock()
    fake = FakePortal(clock)
    # requests 2 and 3 wait for each other (provably together on the wire, however busy the
    # machine: a delay alone let them miss each other under load)
    wire = Wire(fake, hold=(2, 3), delay=0.003)
    # 80 chats (more than one batch of 50 commands holds); chats 2k and 2k+1 share customer u<k>
    plan = _paired_plan(pairs=40, size=23)
    out = _sender(plan, wire, clock, tmp_path, max_in_flight=2).run()
    assert out.summary.counts["sent"] == 80 * 23
    assert wire.most == 2  # two requests really were on the wire together …
    assert wire.shared == []  # … and never for the same chat or customer
    copies = _stored_in_order(fake, plan)
    assert len(copies) == 80 * 23 and set(copies.values()) == {1}


def test_one_in_flight_is_one_after_another(tmp_path):
    clock = ManualClock()
    fake = FakePortal(clock)
    wire = Wire(fake, delay=0.002)
    plan = make_plan([12] * 10, chunk_size=4)
    out = _sender(plan, wire, clock, tmp_path, max_in_flight=1).run()
    assert out.summary.counts["sent"] == 120 and wire.most == 1


def test_three_in_flight_are_allowed_and_disjoint(tmp_path):
    clock = ManualClock()
    fake = FakePortal(clock)
    wire = Wire(fake, hold=(2, 3, 4))
    plan = make_plan([8] * 200, chunk_size=4)
    out = _sender(plan, wire, clock, tmp_path, max_in_flight=3).run()
    assert out.summary.counts["sent"] == 1600
    assert wire.most == 3 and wire.shared == []
    assert set(_stored_in_order(fake, plan).values()) == {1}


def test_the_first_request_goes_alone(tmp_path):
    """A wrong line or token costs one request, not two: concurrency starts after an answer."""
    clock = ManualClock()
    fake = FakePortal(clock)
    started: list[int] = []

    def first(url: str, body: dict[str, Any]) -> RawResponse:
        time.sleep(0.05)  # a second request would have left meanwhile
        started.append(wire.count)
        return fake.handler(url, body)

    wire = Wire(fake, answers={1: first}, delay=0.01)
    out = _sender(make_plan([6] * 40), wire, clock, tmp_path).run()
    assert out.summary.counts["sent"] == 240
    assert started == [1] and wire.most == 2


def test_a_refusal_with_two_in_flight_goes_back_and_the_other_is_settled(tmp_path):
    clock = ManualClock()
    fake = FakePortal(clock)
    refused = MockTransport.json(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many"})
    wire = Wire(fake, hold=(2, 3), answers={2: lambda url, body: refused})
    plan = make_plan([6] * 30)
    sender = _sender(plan, wire, clock, tmp_path)
    out = sender.run()
    assert out.summary.counts["sent"] == 180 and out.summary.complete
    assert wire.most == 2
    copies = _stored_in_order(fake, plan)
    assert set(copies.values()) == {1} and len(copies) == 180
    refused_rows = [int(m[1:]) for m in wire.carried[2]]
    # a refusal is not an attempt: the rows were carried once more, by the request that was answered
    assert refused_rows and (out.frame.loc[refused_rows, "import_attempts"] == 1).all()
    assert sender._client.governor.refusals >= 1  # and the governor backed off


def test_an_unusable_answer_with_two_in_flight_holds_only_its_own_conversations(tmp_path):
    clock = ManualClock()
    fake = FakePortal(clock)

    def commit_then_drop(url: str, body: dict[str, Any]) -> BaseException:
        fake.handler(url, body)  # the portal stores the messages …
        return _ambiguous("connection-lost", "connection lost after sending")  # … the answer is lost

    wire = Wire(fake, hold=(2, 3), answers={2: commit_then_drop})
    plan = make_plan([7] * 40, chunk_size=3)  # more chats than request 2 takes
    out = _sender(plan, wire, clock, tmp_path).run()
    f = out.frame
    lost = {int(m[1:]) for m in wire.carried[2]}
    assert lost and set(f.index[f["import_status"] == "unknown"]) == lost
    assert (f.loc[sorted(lost), "import_error_code"] == "connection-lost").all()
    held_chats = set(f.loc[sorted(lost), "chat"])
    for rid, row in f.iterrows():
        if rid in lost:
            continue
        if row["chat"] in held_chats:  # behind the unknown rows of its conversation, or before them
            assert row["import_status"] in ("pending", "sent")
            if row["import_status"] == "pending":
                assert row["import_error_code"] == "held-after-unknown" and rid > min(lost & set(
                    f.index[f["chat"] == row["chat"]]))
        else:
            assert row["import_status"] == "sent", (rid, row["import_status"])
    assert set(int(m[1:]) for m in wire.carried[3]) <= set(f.index[f["import_status"] == "sent"])
    assert set(_stored_in_order(fake, plan).values()) == {1}


def test_a_fatal_answer_waits_for_the_other_request_and_settles_it(tmp_path):
    clock = ManualClock()
    fake = FakePortal(clock)

    def denied(url: str, body: dict[str, Any]) -> RawResponse:
        return MockTransport.json(401, {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization"})

    def late(url: str, body: dict[str, Any]) -> RawResponse:
        time.sleep(0.2)  # answered after the fatal one
        return fake.handler(url, body)

    wire = Wire(fake, hold=(2, 3), answers={2: denied, 3: late})
    plan = make_plan([6] * 30)
    out = _sender(plan, wire, clock, tmp_path).run()
    f = out.frame
    assert out.summary.stopped == "NO_AUTH_FOUND"
    assert wire.count == 3  # nothing left after the fatal answer
    late_rows = [int(m[1:]) for m in wire.carried[3]]
    denied_rows = [int(m[1:]) for m in wire.carried[2]]
    assert (f.loc[late_rows, "import_status"] == "sent").all()  # the other answer was settled
    assert (f.loc[denied_rows, "import_status"] == "pending").all()
    assert (f.loc[denied_rows, "import_attempts"] == 0).all()
    assert "unknown" not in set(f["import_status"])
    assert "inflight" not in set(journal_statuses(tmp_path / "j.db").values())


class _Tokens:
    """A token source like ``Auth``: refresh is once-at-a-time and skips a token already replaced."""

    def __init__(self) -> None:
        self.current = "access-1"
        self.refreshes = 0
        self.lock = threading.Lock()

    def token(self) -> str:
        return self.current

    def refresh(self, stale: str | None = None) -> str:
        with self.lock:
            if stale is not None and stale != self.current:
                return self.current
            time.sleep(0.02)  # the OAuth round trip: the other thread arrives meanwhile
            self.refreshes += 1
            self.current = f"access-{self.refreshes + 1}"
            return self.current


def test_two_requests_meeting_an_expired_token_refresh_it_once(tmp_path):
    clock = ManualClock()
    fake = FakePortal(clock)
    tokens = _Tokens()
    expired = MockTransport.json(401, {"error": "expired_token", "error_description": "The token expired"})

    def expire_first(url: str, body: dict[str, Any]) -> RawResponse:
        return expired if body["auth"] == "access-1" else fake.handler(url, body)

    wire = Wire(fake, hold=(2, 3), answers={2: expire_first, 3: expire_first})
    plan = make_plan([6] * 30)
    out = _sender(plan, wire, clock, tmp_path, auth=tokens).run()
    assert out.summary.counts["sent"] == 180 and out.summary.stopped is None
    assert tokens.refreshes == 1
    assert set(_stored_in_order(fake, plan).values()) == {1}


def test_one_ctrl_c_with_two_requests_in_flight_waits_for_both_answers(tmp_path):
    """First Ctrl-C: nothing new is launched, both answers in flight are awaited and journalled."""
    clock = ManualClock()
    fake = FakePortal(clock)

    def interrupt_then_answer(url: str, body: dict[str, Any]) -> RawResponse:
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C while both are on the wire
        time.sleep(0.3)
        return fake.handler(url, body)

    def slow(url: str, body: dict[str, Any]) -> RawResponse:
        time.sleep(0.3)
        return fake.handler(url, body)

    wire = Wire(fake, hold=(2, 3), answers={2: slow, 3: interrupt_then_answer})
    plan = make_plan([6] * 150)
    out = _sender(plan, wire, clock, tmp_path).run()
    assert out.summary.interrupted
    assert wire.count == 3  # nothing was launched after the Ctrl-C
    f = out.frame
    carried = {int(m[1:]) for n in (1, 2, 3) for m in wire.carried[n]}
    assert set(f.index[f["import_status"] == "sent"]) == carried
    assert out.summary.counts["unknown"] == 0
    assert set(f["import_status"]) == {"sent", "pending"}  # the rest was not launched
    assert "inflight" not in set(journal_statuses(tmp_path / "j.db").values())
    again = _sender(plan, Wire(fake), clock, tmp_path).run()  # the resume sends the rest, once
    assert again.summary.counts["sent"] == 900
    copies = _stored_in_order(fake, plan)
    assert len(copies) == 900 and set(copies.values()) == {1}


def test_second_ctrl_c_with_two_requests_in_flight_makes_exactly_their_rows_unknown(tmp_path):
    """Second Ctrl-C: the run ends at once; the rows on the wire are ``unknown`` (``interrupted``)."""
    clock = ManualClock()
    fake = FakePortal(clock)

    import logging
    import threading

    second, heard = threading.Event(), threading.Event()

    class Heard(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "stopping:" in record.getMessage():
                heard.set()

    def interrupt_twice_then_answer(url: str, body: dict[str, Any]) -> RawResponse:
        os.kill(os.getpid(), signal.SIGINT)
        # the second signal only once the first was handled: two SIGINTs that arrive before the
        # main thread runs its handler are one signal to Python (a busy machine made it so)
        heard.wait(10)
        os.kill(os.getpid(), signal.SIGINT)  # … and again: exit at once
        second.set()
        time.sleep(1.0)
        return fake.handler(url, body)

    def slow(url: str, body: dict[str, Any]) -> RawResponse:
        # on the wire until well after the second Ctrl-C, however busy the machine (a fixed 0.3 s
        # let it answer first when request 3 started late, and its rows were then sent, not cut)
        second.wait(10)
        time.sleep(1.0)
        return fake.handler(url, body)

    wire = Wire(fake, hold=(2, 3), answers={2: slow, 3: interrupt_twice_then_answer})
    plan = make_plan([6] * 30)
    listener = Heard()
    logging.getLogger("bulkimport").addHandler(listener)
    try:
        out = _sender(plan, wire, clock, tmp_path).run()
    finally:
        logging.getLogger("bulkimport").removeHandler(listener)
    assert out.summary.interrupted
    f = out.frame
    cut = {int(m[1:]) for n in (2, 3) for m in wire.carried[n]}
    assert set(f.index[f["import_status"] == "unknown"]) == cut
    assert (f.loc[sorted(cut), "import_error_code"] == "interrupted").all()
    assert set(f["import_status"]) <= {"sent", "unknown", "pending"}
    assert "inflight" not in set(journal_statuses(tmp_path / "j.db").values())
    time.sleep(1.5)  # the cut requests were answered after all: the user checks the line …
    stored = {int(str(m["message"]["id"])[1:]) for m in fake.stored}
    journal = Journal.open(tmp_path / "j.db")
    try:
        journal.resolve_unknown(True, sorted(cut & stored))
        journal.resolve_unknown(False, sorted(cut - stored))
    finally:
        journal.close()
    again = _sender(plan, Wire(fake), clock, tmp_path).run()  # … and resumes: exactly once
    assert again.summary.counts["sent"] == 180
    copies = _stored_in_order(fake, plan)
    assert len(copies) == 180 and set(copies.values()) == {1}


def test_one_ctrl_c_with_one_request_in_flight_waits_for_its_answer(tmp_path):
    """max_in_flight=1: the exchange runs in a worker too, so the first Ctrl-C is acknowledged at
    once (the notice) and the answer still journalled."""
    clock = ManualClock()
    fake = FakePortal(clock)

    def interrupt_then_answer(url: str, body: dict[str, Any]) -> RawResponse:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.6)
        return fake.handler(url, body)

    class Said:
        def __init__(self) -> None:
            self.reasons: list[str | None] = []

        def start(self, total: int, done: int) -> None: ...
        def update(self, n: int, counts: Any) -> None: ...
        def close(self) -> None: ...

        def waiting(self, seconds: float | None, reason: str | None) -> None:
            self.reasons.append(reason)

    said = Said()
    wire = Wire(fake, answers={2: interrupt_then_answer})
    plan = make_plan([6] * 10)
    client = Client("https://acme.bitrix24.ru", "token-aaaaaaaa", clock=clock, session=MockTransport(wire))
    out = Sender(plan, line=1, connector="hist", state=tmp_path / "j.db", progress=said, client=client,
                 max_in_flight=1).run()
    assert "stopping: waiting for 1 answer in flight" in said.reasons  # said while it waited
    assert out.summary.interrupted and wire.count == 2
    assert out.summary.counts["unknown"] == 0 and out.summary.counts["sent"] == len(wire.carried[1]) + len(
        wire.carried[2]
    )


def _inflight_requests(path: Path) -> dict[int, set[str]]:
    """{request id: row ids} of the rows the journal holds ``inflight`` right now."""
    if not path.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            rows = con.execute("select rid, request from rows where status='inflight'").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return {}
    out: dict[int, set[str]] = {}
    for rid, request in rows:
        out.setdefault(int(request), set()).add(str(rid))
    return out


def test_kill_with_two_requests_in_flight_then_resume(tmp_path):
    """kill -9 while two requests are on the wire: both requests' rows are ``unknown`` on resume,
    nothing else is; the store never holds a duplicate or a chat out of order."""
    history = write_history(tmp_path / "history.csv", conversations=40, per_conversation=6)
    with Sandbox(time_scale=1.0, seed=3, cost_per_call=0.05, cost_per_message=0.01) as portal:
        register(portal)
        env = cli_env(portal, tmp_path)
        # --no-readback: this checks the journal's own record of the cut rows (read-back would
        # settle them; tests/test_after_settle.py drills that)
        args = run_args(portal, tmp_path / "history.csv", tmp_path, "--no-readback")
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cut: set[str] = set()
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                flying = _inflight_requests(tmp_path / "journal.db")
                if len(flying) >= 2:
                    proc.kill()
                    break
                time.sleep(0.005)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        states = journal_statuses(tmp_path / "journal.db")
        cut = {history.by_row[r] for r, s in states.items() if s == "inflight"}
        requests = _inflight_requests(tmp_path / "journal.db")
        assert len(requests) == 2, requests  # killed with two requests in flight
        deadline = time.monotonic() + 20
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:  # let the sandbox finish what the dead client sent
            now = (portal.stats()["requests"], len(portal.store.messages()))
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since > 0.5:
                break
            time.sleep(0.05)
        final = run_cli(args, env)
        assert final.returncode in (0, 1), final.stdout + final.stderr
        rep = pd.read_csv(tmp_path / "report.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
        status = dict(zip(rep["Message ID"], rep["import_status"], strict=True))
        code = dict(zip(rep["Message ID"], rep["import_error_code"], strict=True))
        unknown = {m for m, s in status.items() if s == "unknown"}
        assert unknown == cut and all(code[m] == "interrupted" for m in unknown)
        assert set(status.values()) <= {"sent", "unknown", "pending"}
        check_store(portal, history.want, status)


def test_max_in_flight_is_checked(tmp_path):
    plan = make_plan([2])
    for bad in (0, 11, 1.5, True):
        with pytest.raises(ConfigError, match="max-in-flight"):
            Sender(plan, portal="acme.bitrix24.ru", line=1, connector="x", state=tmp_path / "j.db", auth="t",
                   max_in_flight=bad)


def test_cli_max_in_flight_option(tmp_path):
    import sys

    history = write_history(tmp_path / "history.csv", conversations=2, per_conversation=2)
    assert history.ids
    bad = run_cli([sys.executable, "-m", "bulkimport", "run", str(tmp_path / "history.csv"), "--dry-run",
                   "--max-in-flight", "0"], env=dict(os.environ))
    assert bad.returncode == 2 and "--max-in-flight" in bad.stderr and "Traceback" not in bad.stderr
    with Sandbox(time_scale=50.0, seed=4) as portal:
        register(portal)
        env = cli_env(portal, tmp_path)
        done = run_cli(run_args(portal, tmp_path / "history.csv", tmp_path, "--max-in-flight", "1"), env)
        assert done.returncode == 0, done.stdout + done.stderr


def test_a_long_conversation_is_not_slowed_by_a_second_request_in_flight(tmp_path):
    """One conversation of 30 chunks among short ones: its chunks go one per request, so the run
    needs at least 30 requests. A second request in flight that cannot carry it (it is on the wire)
    only spends a bucket token one of its chunks needs later: the sender waits for its answer."""
    counts = {}
    for most in (1, 2):
        clock = ManualClock()
        fake = FakePortal(clock)
        wire = Wire(fake, delay=0.002)
        plan = make_plan([90] + [1] * 150, chunk_size=3)
        (tmp_path / str(most)).mkdir()
        out = _sender(plan, wire, clock, tmp_path / str(most), max_in_flight=most).run()
        assert out.summary.counts["sent"] == 240
        assert set(_stored_in_order(fake, plan).values()) == {1}
        counts[most] = wire.count
    assert counts[2] <= counts[1] + 2, counts


def test_after_a_429_one_request_at_a_time(tmp_path):
    """The portal's budget is tighter than the model (another application spends it): one request
    at a time for the rest of the run, so the next wall refuses one request, not two."""
    clock = ManualClock()
    fake = FakePortal(clock)
    wall = MockTransport.json(429, {"error": "OPERATION_TIME_LIMIT", "error_description": "Blocked"})
    wire = Wire(fake, hold=(2, 3), delay=0.003, answers={2: lambda url, body: wall})
    plan = make_plan([6] * 60)
    out = _sender(plan, wire, clock, tmp_path).run()
    assert out.summary.counts["sent"] == 360
    assert wire.together[2] == 2 or wire.together[3] == 2  # two were in flight at the wall …
    assert all(n == 1 for k, n in wire.together.items() if k > 3)  # … and never again after it
    assert set(_stored_in_order(fake, plan).values()) == {1}
