"""The sender over an offline fake portal: order, holds, statuses, resume, fatal stops, Ctrl-C."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkimport.clock import ManualClock
from bulkimport.errors import ConfigError, InputError, JournalMismatchError
from bulkimport.journal import Journal
from bulkimport.planning import FAILURE_COLUMNS, Conversation, Plan
from bulkimport.portal.client import Client, MockTransport, NotSent, RawResponse, _ambiguous
from bulkimport.portal.encoding import decode_query
from bulkimport.sending.sender import STATUS_COLUMNS, Sender, send

Fault = Callable[[str, list[dict[str, Any]]], Any]


def make_plan(
    sizes: list[int],
    *,
    invalid: list[int] | None = None,
    warnings: list[int] | None = None,
    chunk_size: int = 50,
    fingerprint: str = "fp-1",
    shared_user: bool = False,
) -> Plan:
    """A plan with conversations of the given sizes; rows numbered from 2 like a spreadsheet."""
    rows: list[dict[str, Any]] = []
    convs: list[Conversation] = []
    rid = 2
    for ci, size in enumerate(sizes):
        ids, msgs = [], []
        for i in range(size):
            user = "u-shared" if shared_user else f"u{ci}"
            msg = {
                "user": {"id": user, "name": "Иван"},
                "message": {"id": f"m{rid}", "date": 1_600_000_000 + i, "text": f"c{ci} #{i} & =+%\nok"},
                "chat": {"id": f"chat{ci}"},
            }
            rows.append({"row": rid, "chat": f"chat{ci}", "text": msg["message"]["text"]})
            ids.append(rid)
            msgs.append(msg)
            rid += 1
        convs.append(
            Conversation(
                f"chat{ci}",
                tuple(ids),
                tuple(msgs),
                frozenset({f"chat{ci}", "u-shared" if shared_user else f"u{ci}"}),
            )
        )
    fails = []
    for _ in invalid or []:
        rows.append({"row": rid, "chat": "", "text": ""})
        fails.append(
            {
                "row": rid,
                "field": "message.text",
                "code": "missing-text",
                "level": "error",
                "message": "no text",
                "value": "",
            }
        )
        rid += 1
    frame = pd.DataFrame(rows).set_index("row")
    for r in warnings or []:
        fails.append(
            {
                "row": r,
                "field": "user.name",
                "code": "name-trimmed",
                "level": "warning",
                "message": "name cut to 25 characters",
                "value": "x",
            }
        )
    failures = pd.DataFrame(fails, columns=FAILURE_COLUMNS)
    return Plan(
        frame=frame, conversations=convs, failures=failures, chunk_size=chunk_size, fingerprint=fingerprint
    )


class FakePortal:
    """Enough of a portal for the sender: stores messages, answers batch and single calls."""

    def __init__(self, clock: ManualClock, cost_per_message: float = 0.05) -> None:
        self.clock = clock
        self.stored: list[dict[str, Any]] = []
        self.faults: list[
            Fault
        ] = []  # each: (method, messages) -> None | RawResponse | Exception | item-level
        self.cost = cost_per_message
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.in_flight_keys: list[set[str]] = []
        self.reject_items: set[str] = set()  # message ids answered SUCCESS false
        self.operating = 0.0

    def _time(self, duration: float) -> dict[str, Any]:
        now = self.clock.now()
        return {
            "start": now,
            "finish": now + duration,
            "duration": duration,
            "processing": duration,
            "operating": self.operating,
            "operating_reset_at": int(now + 600),
        }

    def send_messages(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        messages = params.get("MESSAGES")
        if isinstance(messages, dict):  # decoded PHP lists come back as lists already
            messages = list(messages.values())
        if not params.get("LINE"):
            return 400, {"error": "ERROR_ARGUMENT", "error_description": "Argument 'LINE' is null or empty"}
        items = []
        for m in messages:
            if m["message"]["id"] in self.reject_items:
                items.append({"SUCCESS": False, "ERRORS": ["IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA"]})
                continue
            self.stored.append(m)
            items.append(
                {
                    "user": "585",
                    "message": {"id": m["message"]["id"], "date": {}},
                    "chat": {"id": m["chat"]["id"]},
                    "SUCCESS": True,
                    "session": {"ID": "323", "CHAT_ID": "1767"},
                }
            )
        self.operating += self.cost * len(messages)
        return 200, {
            "result": {"SUCCESS": True, "DATA": {"RESULT": items}},
            "time": self._time(self.cost * len(messages)),
        }

    def handler(self, url: str, body: dict[str, Any]) -> RawResponse | BaseException:
        method = url.rsplit("/", 1)[1]
        self.requests.append((method, body))
        if method == "batch":
            cmds = {k: v.split("?", 1) for k, v in body["cmd"].items()}
            parsed = {k: (m, decode_query(q)) for k, (m, q) in cmds.items()}
            messages = [m for _, p in parsed.values() for m in p["MESSAGES"]]
        else:
            parsed = {"_": (method, {k: v for k, v in body.items() if k != "auth"})}
            messages = list(body.get("MESSAGES", []))
        for fault in list(self.faults):
            out = fault(method, messages)
            if out is not None:
                if isinstance(out, tuple) and out[0] == "after":  # commit, then lose the answer
                    self._run(parsed)
                    return out[1]
                return out
        status, payload = self._run(parsed) if method == "batch" else self.send_messages(parsed["_"][1])
        return MockTransport.json(status, payload)

    def _run(self, parsed: dict[str, tuple[str, dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
        result, errors, times = {}, {}, {}
        for key, (_m, params) in parsed.items():
            _status, payload = self.send_messages(params)
            if "error" in payload:
                errors[key] = payload
            else:
                result[key] = payload["result"]
                times[key] = payload["time"]
        return 200, {
            "result": {
                "result": result or [],
                "result_error": errors or [],
                "result_time": times or [],
                "result_total": [],
                "result_next": [],
            },
            "time": self._time(sum(t["duration"] for t in times.values())),
        }


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> FakePortal:
    return FakePortal(clock)


def client_for(fake: FakePortal, clock: ManualClock) -> Client:
    return Client(
        "https://acme.bitrix24.ru", "token-aaaaaaaa", clock=clock, session=MockTransport(fake.handler)
    )


def run(plan: Plan, fake: FakePortal, clock: ManualClock, tmp_path: Any, **kw: Any):
    sender = Sender(
        plan,
        line=1,
        connector="hist",
        state=tmp_path / "j.db",
        progress=False,
        client=client_for(fake, clock),
        **kw,
    )
    return sender.run()


def test_sends_everything_in_order_with_status_columns(fake, clock, tmp_path):
    plan = make_plan([3, 25, 1, 7], invalid=[1], warnings=[3])
    out = run(plan, fake, clock, tmp_path)
    frame = out.frame
    assert list(frame.columns[-len(STATUS_COLUMNS) :]) == STATUS_COLUMNS
    assert frame["import_status"].value_counts().to_dict() == {"sent": 36, "invalid": 1}
    # every message exactly once, per conversation in plan order
    ids = [m["message"]["id"] for m in fake.stored]
    assert sorted(ids) == sorted(f"m{r}" for c in plan.conversations for r in c.rows)
    for conv in plan.conversations:
        got = [m["message"]["id"] for m in fake.stored if m["chat"]["id"] == conv.key]
        assert got == [f"m{r}" for r in conv.rows]
    sent = frame[frame["import_status"] == "sent"]
    assert (sent["b24_session_id"] == "323").all() and (sent["b24_chat_id"] == "1767").all()
    assert (sent["import_attempts"] == 1).all()
    assert sent["sent_at"].notna().all()
    assert frame.loc[3, "import_warnings"].startswith("name-trimmed")
    bad = frame[frame["import_status"] == "invalid"]
    assert bad["import_error_code"].tolist() == ["missing-text"]
    assert out.summary.counts["sent"] == 36 and out.summary.complete
    # UTF-8, newline, & = + % survived the PHP-bracket encoding of batch commands
    assert fake.stored[0]["message"]["text"] == "c0 #0 & =+%\nok"
    assert fake.stored[0]["user"]["name"] == "Иван"


def test_one_command_per_conversation_and_disjoint_locks_per_batch(fake, clock, tmp_path):
    plan = make_plan([30, 30, 30, 30], shared_user=False)
    run(plan, fake, clock, tmp_path)
    for method, body in fake.requests:
        if method == "batch":
            chats = []
            for cmd in body["cmd"].values():
                q = decode_query(cmd.split("?", 1)[1])
                chats.append({m["chat"]["id"] for m in q["MESSAGES"]})
            flat = [c for s in chats for c in s]
            assert len(flat) == len(set(flat)) and all(len(s) == 1 for s in chats)


def test_shared_lock_key_never_in_one_batch(fake, clock, tmp_path):
    plan = make_plan([12, 12, 12], shared_user=True)  # all share the customer: one at a time
    out = run(plan, fake, clock, tmp_path)
    assert out.summary.counts["sent"] == 36
    for method, body in fake.requests:
        if method == "batch":
            assert len(body["cmd"]) == 1


def test_item_rejection_is_failed_and_conversation_goes_on(fake, clock, tmp_path):
    plan = make_plan([5])
    fake.reject_items = {"m4"}
    out = run(plan, fake, clock, tmp_path)
    f = out.frame
    assert f.loc[4, "import_status"] == "failed"
    assert f.loc[4, "import_error_code"] == "IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA"
    assert (f.drop(index=4)["import_status"] == "sent").all()
    # retry_failed resends just that row
    fake.reject_items = set()
    out2 = run(plan, fake, clock, tmp_path, retry_failed=True)
    assert out2.frame.loc[4, "import_status"] == "sent"
    assert out2.frame.loc[4, "import_attempts"] == 2
    assert [m["message"]["id"] for m in fake.stored].count("m4") == 1


def test_ambiguous_drop_holds_conversation_and_never_resends(fake, clock, tmp_path):
    plan = make_plan([15, 4])
    state = {"n": 0}

    def drop_first(method: str, messages: list[dict[str, Any]]) -> Any:
        if any(m["chat"]["id"] == "chat0" for m in messages) and state["n"] == 0:
            state["n"] += 1
            return ("after", _ambiguous("connection-lost", "connection lost after sending"))
        return None

    fake.faults.append(drop_first)
    out = run(plan, fake, clock, tmp_path)
    f = out.frame
    conv0 = f.loc[list(plan.conversations[0].rows)]
    unknown = conv0[conv0["import_status"] == "unknown"]
    assert len(unknown) >= 1 and (unknown["import_error_code"] == "connection-lost").all()
    pending = conv0[conv0["import_status"] == "pending"]
    assert len(unknown) + len(pending) == 15
    assert (pending["import_error_code"] == "held-after-unknown").all()
    assert (f.loc[list(plan.conversations[1].rows), "import_status"] == "sent").all()
    stored = [m["message"]["id"] for m in fake.stored]
    assert len(stored) == len(set(stored))  # the dropped request committed once, never re-sent
    # a plain re-run keeps the hold; retry_unknown resends (the user checked the line)
    out2 = run(plan, fake, clock, tmp_path)
    assert out2.summary.counts["unknown"] == len(unknown)
    before = len(fake.stored)
    out3 = run(plan, fake, clock, tmp_path, retry_unknown=True)
    assert out3.summary.counts["sent"] == 19
    assert len(fake.stored) == before + 15


def test_refused_requests_are_retried_without_loss(fake, clock, tmp_path):
    plan = make_plan([8, 8])
    state = {"n": 0}

    def storm(method: str, messages: list[dict[str, Any]]) -> Any:
        state["n"] += 1
        if state["n"] <= 3:
            return MockTransport.json(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many"})
        if state["n"] == 4:
            return MockTransport.json(
                429,
                {
                    "error": "OPERATION_TIME_LIMIT",
                    "error_description": "x",
                    "time": {"operating_reset_at": clock.now() + 30},
                },
            )
        if state["n"] == 5:
            return NotSent("ConnectionRefusedError")
        return None

    fake.faults.append(storm)
    out = run(plan, fake, clock, tmp_path)
    assert out.summary.counts["sent"] == 16
    assert (out.frame["import_attempts"] == 1).all()  # refusals are not attempts
    assert sum(clock.slept) >= 30  # waited for the operating reset


def test_fatal_error_stops_early_with_pending_rows(fake, clock, tmp_path):
    plan = make_plan([10, 10, 10])
    state = {"n": 0}

    def line_off(method: str, messages: list[dict[str, Any]]) -> Any:
        state["n"] += 1
        if state["n"] >= 2:
            return MockTransport.json(400, {"error": "NOT_ACTIVE_LINE", "error_description": "inactive"})
        return None

    fake.faults.append(line_off)
    out = run(plan, fake, clock, tmp_path)
    s = out.summary
    assert s.stopped == "NOT_ACTIVE_LINE"
    assert s.counts["failed"] == 0 and s.counts["sent"] >= 1 and s.counts["pending"] >= 10
    pend = out.frame[out.frame["import_status"] == "pending"]
    assert (pend["import_error_code"] == "not-reached").all()
    assert pend["import_error"].str.contains("NOT_ACTIVE_LINE").all()
    fake.faults.clear()
    out2 = run(plan, fake, clock, tmp_path)
    assert out2.summary.counts["sent"] == 30
    stored = [m["message"]["id"] for m in fake.stored]
    assert len(stored) == len(set(stored)) == 30


def test_request_rejection_holds_only_that_conversation(fake, clock, tmp_path):
    plan = make_plan([3, 3, 3], chunk_size=2)
    orig = fake.send_messages

    def send_messages(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if params["MESSAGES"][0]["chat"]["id"] == "chat1":
            return 400, {
                "error": "ERROR_ARGUMENT",
                "error_description": "The incorrect structure of a message",
            }
        return orig(params)

    fake.send_messages = send_messages  # type: ignore[method-assign]
    out = run(plan, fake, clock, tmp_path)
    f = out.frame
    rows1 = list(plan.conversations[1].rows)
    # the 2-message call was refused as a whole: split, then the first message fails alone
    assert f.loc[rows1, "import_status"].tolist() == ["failed", "pending", "pending"]
    assert f.loc[rows1[0], "import_error_code"] == "ERROR_ARGUMENT"
    assert (f.loc[rows1[1:], "import_error_code"] == "held-after-failure").all()
    assert out.summary.counts["sent"] == 6 and out.summary.stopped is None


def test_partial_batch_failure(fake, clock, tmp_path):
    """In one batch: one command answered with an error, one with an item failure, one fine."""
    plan = make_plan([2, 2, 3], chunk_size=2)
    fake.reject_items = {"m4"}
    orig = fake.send_messages

    def send_messages(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if params["MESSAGES"][0]["chat"]["id"] == "chat2":
            return 400, {"error": "CONNECTOR_PROXY_NO_ADD_USER", "error_description": "no user"}
        return orig(params)

    fake.send_messages = send_messages  # type: ignore[method-assign]
    client = client_for(fake, clock)
    client.governor.record_messages(2, 0.01)  # measured fast: several calls per batch
    out = Sender(plan, line=1, connector="hist", state=tmp_path / "j.db", progress=False, client=client).run()
    f = out.frame
    assert any(m == "batch" for m, _ in fake.requests)
    assert f.loc[[2, 3], "import_status"].tolist() == ["sent", "sent"]
    assert f.loc[[4, 5], "import_status"].tolist() == ["failed", "sent"]
    # CONNECTOR_PROXY_NO_ADD_USER on a 2-message command may have stored the first: unknown, held
    assert (f.loc[[6, 7], "import_error_code"] == "refused-maybe-stored").all()
    assert "CONNECTOR_PROXY_NO_ADD_USER" in f.loc[6, "import_error"]
    assert f.loc[[6, 7, 8], "import_status"].tolist() == ["unknown", "unknown", "pending"]
    assert f.loc[8, "import_error_code"] == "held-after-unknown"


def test_interrupt_mid_request_marks_unknown_and_resume(fake, clock, tmp_path):
    plan = make_plan([6, 6, 6])
    state = {"n": 0}

    def ctrl_c(method: str, messages: list[dict[str, Any]]) -> Any:
        state["n"] += 1
        if state["n"] == 2:
            return KeyboardInterrupt()
        return None

    fake.faults.append(ctrl_c)
    out = run(plan, fake, clock, tmp_path)
    assert out.summary.interrupted
    st = out.frame["import_status"].value_counts().to_dict()
    assert st.get("unknown", 0) >= 1 and st.get("pending", 0) >= 0
    assert "inflight" not in st
    fake.faults.clear()
    fake.faults.append(lambda m, msgs: KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        send(
            plan,
            line=1,
            connector="hist",
            state=tmp_path / "other.db",
            progress=False,
            client=client_for(fake, clock),
            max_in_flight=1,  # one request cut; two in flight: tests/test_send_concurrency.py
        )
    assert Journal.open(tmp_path / "other.db").summary()["counts"]["unknown"] == 6
    fake.faults.clear()
    out2 = run(plan, fake, clock, tmp_path, retry_unknown=True)
    assert out2.summary.counts["sent"] == 18


def test_crash_between_mark_and_answer_becomes_unknown(fake, clock, tmp_path):
    """A process killed after marking in flight: the next open turns those rows unknown."""
    plan = make_plan([4])

    class Boom(Exception):
        pass

    fake.faults.append(lambda m, msgs: Boom())
    with pytest.raises(Boom):
        run(plan, fake, clock, tmp_path)
    j = Journal.open(tmp_path / "j.db")
    assert j.counts() == {"inflight": 4}
    j.close()
    fake.faults.clear()
    out = run(plan, fake, clock, tmp_path)
    assert out.summary.counts["unknown"] == 4 and out.summary.recovered_unknown == 4
    assert (out.frame["import_error_code"] == "interrupted").all()
    assert fake.stored == []


def test_journal_mismatch(fake, clock, tmp_path):
    plan = make_plan([2])
    run(plan, fake, clock, tmp_path)
    # An edited input (another fingerprint, the same chat/customer/message ids) resumes by identity:
    # nothing is sent twice. (This asserted a refusal before the journal knew rows by identity.)
    stored = len(fake.stored)
    edited = run(make_plan([2], fingerprint="fp-2"), fake, clock, tmp_path)
    assert edited.summary.sent_this_run == 0 and len(fake.stored) == stored
    # Another identity mapping (the chats' customer changed) is still refused, naming what changed.
    with pytest.raises(JournalMismatchError, match="now belongs to customer 'u-shared'"):
        run(make_plan([2], fingerprint="fp-3", shared_user=True), fake, clock, tmp_path)
    with pytest.raises(JournalMismatchError, match="line"):
        Sender(
            plan,
            line=2,
            connector="hist",
            state=tmp_path / "j.db",
            progress=False,
            client=client_for(fake, clock),
        ).run()


def test_resume_skips_sent(fake, clock, tmp_path):
    plan = make_plan([5, 5])
    run(plan, fake, clock, tmp_path)
    n = len(fake.requests)
    out = run(plan, fake, clock, tmp_path)
    assert len(fake.requests) == n and out.summary.sent_this_run == 0
    assert out.summary.counts["sent"] == 10


def test_missing_options_name_option_and_env(tmp_path, monkeypatch):
    plan = make_plan([1])
    for name in ("BITRIX24_PORTAL", "BITRIX24_LINE", "BITRIX24_CONNECTOR"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="BITRIX24_PORTAL"):
        send(plan, line=1, connector="x", state=tmp_path / "j.db", auth="t")
    with pytest.raises(ConfigError, match=r"--line.*BITRIX24_LINE"):
        send(plan, portal="acme.bitrix24.ru", connector="x", state=tmp_path / "j.db", auth="t")
    with pytest.raises(ConfigError, match="--state"):
        send(plan, portal="acme.bitrix24.ru", line=1, connector="x", auth="t")


def test_journal_default_beside_input(fake, clock, tmp_path):
    plan = make_plan([1])
    plan.frame.attrs["source"] = str(tmp_path / "history.xlsx")
    out = Sender(plan, line=1, connector="hist", progress=False, client=client_for(fake, clock)).run()
    assert out.summary.journal == tmp_path / "history.xlsx.bulkimport.db"
    summary = Journal.open(out.summary.journal).summary()
    assert summary["counts"]["sent"] == 1 and summary["complete"]


def test_secrets_not_in_logs_or_frame(fake, clock, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    plan = make_plan([3])
    fake.faults.append(lambda m, msgs: None)
    out = run(plan, fake, clock, tmp_path)
    text = caplog.text + out.frame.to_csv() + str(out.summary)
    assert "token-aaaaaaaa" not in text
    assert all(body["auth"] == "token-aaaaaaaa" for _, body in fake.requests)
    assert json.dumps(fake.requests).count("token-aaaaaaaa") == len(fake.requests)
    assert unquote("x") == "x"


def test_ctrl_c_during_a_pacing_wait_leaves_rows_pending(fake, clock, tmp_path):
    """Rows are journalled in flight only when bytes leave: Ctrl-C while waiting for a 429 reset
    must not turn unsent rows into 'unknown'."""
    plan = make_plan([4, 4])
    state = {"n": 0}

    def once_429(method: str, messages: list[dict[str, Any]]) -> Any:
        state["n"] += 1
        if state["n"] == 2:
            return MockTransport.json(
                429,
                {
                    "error": "OPERATION_TIME_LIMIT",
                    "error_description": "x",
                    "time": {"operating_reset_at": clock.now() + 300},
                },
            )
        return None

    fake.faults.append(once_429)
    real_sleep = clock.sleep

    def sleep(seconds: float) -> None:
        if seconds > 4:
            raise KeyboardInterrupt
        real_sleep(seconds)

    clock.sleep = sleep  # type: ignore[method-assign]
    client = client_for(fake, clock)
    out = Sender(plan, line=1, connector="hist", state=tmp_path / "j.db", progress=False, client=client).run()
    assert out.summary.interrupted
    counts = out.summary.counts
    assert counts["unknown"] == 0 and counts["sent"] == 4 and counts["pending"] == 4
    pend = out.frame[out.frame["import_status"] == "pending"]
    assert (pend["import_error_code"] == "not-reached").all()
    assert (pend["import_attempts"] == 0).all()


def test_progress_bar_counts_rows_and_hides_secrets(fake, clock, tmp_path, capsys):
    plan = make_plan([7, 3])
    sender = Sender(
        plan, line=1, connector="hist", state=tmp_path / "j.db", progress=True, client=client_for(fake, clock)
    )
    seen: list[dict[str, Any]] = []
    sender.on_progress = seen.append
    out = sender.run()
    err = capsys.readouterr().err
    assert "10/10" in err and "sent=10" in err
    assert "token-aaaaaaaa" not in err
    assert seen[-1]["sent"] == 10 and out.summary.counts["sent"] == 10


def test_a_failing_proxy_stops_the_run_instead_of_making_everything_unknown(fake, clock, tmp_path):
    plan = make_plan([3] * 100)
    client = client_for(fake, clock)
    client.governor.record_messages(3, 0.01)  # fast portal: big batches
    fake.faults.append(lambda m, msgs: MockTransport.text(502, "<html>Bad Gateway</html>"))
    out = Sender(plan, line=1, connector="hist", state=tmp_path / "j.db", progress=False, client=client).run()
    s = out.summary
    assert s.stopped == "repeated-ambiguous"
    assert len(fake.requests) == 5
    # each unusable answer halved the next batch: the damage stays small
    sizes = [len(body["cmd"]) if m == "batch" else 1 for m, body in fake.requests]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]
    assert s.counts["unknown"] == 3 * sum(sizes) < 30
    assert s.counts["pending"] == 300 - s.counts["unknown"]
    assert sum(clock.slept) >= 1 + 2 + 4 + 8  # backed off between them


def test_duplicate_row_ids_are_refused(tmp_path):
    plan = make_plan([2])
    plan.frame.index = pd.Index([2, 2], name="row")
    with pytest.raises(InputError, match="unique"):
        Sender(plan, portal="acme.bitrix24.ru", line=1, connector="x", state=tmp_path / "j.db", auth="t")


def test_ctrl_c_while_journalling_an_answer_keeps_the_known_outcome(fake, clock, tmp_path, monkeypatch):
    import os
    import signal

    plan = make_plan([3, 3])
    real_settle = Journal.settle
    calls = {"n": 0}

    def settle_with_sigint(self, *a, **kw):  # the interrupt lands in the middle of the commit
        calls["n"] += 1
        if calls["n"] == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real_settle(self, *a, **kw)

    monkeypatch.setattr(Journal, "settle", settle_with_sigint)
    out = run(plan, fake, clock, tmp_path)
    assert out.summary.interrupted
    assert out.summary.counts["unknown"] == 0  # the answer was journalled, not lost to the interrupt
    assert out.summary.counts["sent"] >= 3


def test_bulkimport_send_is_the_function_after_the_module_was_imported(fake, clock, tmp_path):
    import types

    import bulkimport
    import bulkimport.sending.sender as module

    assert bulkimport.send is module.send and not isinstance(bulkimport.send, types.ModuleType)
    out = bulkimport.send(
        make_plan([2]),
        line=1,
        connector="hist",
        state=tmp_path / "j.db",
        progress=False,
        client=client_for(fake, clock),
    )
    assert (out["import_status"] == "sent").all()


def test_redirect_to_plain_http_stops_without_unknown_rows(fake, clock, tmp_path):
    plan = make_plan([3, 3])
    fake.faults.append(
        lambda m, msgs: RawResponse(302, {"location": "http://elsewhere.example/rest/batch"}, b"")
    )
    out = run(plan, fake, clock, tmp_path)
    assert out.summary.stopped == "ConfigError"
    assert out.summary.counts["pending"] == 6 and out.summary.counts["unknown"] == 0
    assert (out.frame["import_attempts"] == 0).all()


def test_summary_travels_with_the_frame_as_plain_values(fake, clock, tmp_path):
    out = run(make_plan([2]), fake, clock, tmp_path)
    attrs = out.frame.attrs["bulkimport_summary"]
    assert json.loads(json.dumps(attrs)) == attrs
    assert attrs["counts"]["sent"] == 2 and attrs["complete"] and attrs["journal"].endswith("j.db")


# ------------------------------------------------------------------------------------------------
# Property: whatever the portal does, in whatever order, over resumed runs, the invariants hold.
# ------------------------------------------------------------------------------------------------

FAULTS = [
    None,
    None,
    None,
    "503",
    "429",
    "drop-after",
    "drop-before",
    "html-after",
    "notsent",
    "fatal",
    "reject-item",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=6),
    schedule=st.lists(st.sampled_from(FAULTS), max_size=40),
    chunk=st.integers(1, 5),
    runs=st.integers(1, 3),
)
def test_invariants_under_any_fault_sequence(tmp_path_factory, sizes, schedule, chunk, runs):
    tmp = tmp_path_factory.mktemp("prop")
    clock = ManualClock()
    fake = FakePortal(clock)
    plan = make_plan(sizes, chunk_size=chunk)
    queue = list(schedule)

    def scripted(method: str, messages: list[dict[str, Any]]) -> Any:
        kind = queue.pop(0) if queue else None
        if kind == "503":
            return MockTransport.json(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "x"})
        if kind == "429":
            return MockTransport.json(429, {"error": "OPERATION_TIME_LIMIT", "error_description": "x"})
        if kind == "drop-after":
            return ("after", _ambiguous("connection-lost", "dropped"))
        if kind == "html-after":
            return ("after", MockTransport.text(502, "<html>bad gateway</html>"))
        if kind == "drop-before":
            return _ambiguous("connection-lost", "dropped")
        if kind == "notsent":
            return NotSent("ConnectionRefusedError")
        if kind == "fatal":
            return MockTransport.json(400, {"error": "NOT_ACTIVE_LINE", "error_description": "x"})
        if kind == "reject-item" and messages:
            fake.reject_items.add(messages[0]["message"]["id"])
        return None

    fake.faults.append(scripted)
    for _ in range(runs):
        out = Sender(
            plan, line=1, connector="hist", state=tmp / "j.db", progress=False, client=client_for(fake, clock)
        ).run()
    f = out.frame
    stored = [m["message"]["id"] for m in fake.stored]
    assert len(stored) == len(set(stored))  # never a duplicate without --retry-unknown
    position = {f"m{r}": i for c in plan.conversations for i, r in enumerate(c.rows)}
    for conv in plan.conversations:
        got = [m["message"]["id"] for m in fake.stored if m["chat"]["id"] == conv.key]
        assert [position[g] for g in got] == sorted(position[g] for g in got)  # plan order
    status = f["import_status"]
    for rid, st_ in status.items():
        mid = f"m{rid}"
        if st_ == "sent":
            assert mid in stored
        elif st_ in ("pending", "failed"):
            assert mid not in stored
        else:
            assert st_ == "unknown"
    assert set(status) <= {"sent", "failed", "unknown", "pending"}
    assert out.summary.counts["sent"] == int((status == "sent").sum())


def test_plan_with_nothing_valid(fake, clock, tmp_path):
    plan = make_plan([], invalid=[1, 2])
    out = run(plan, fake, clock, tmp_path)
    assert out.frame["import_status"].tolist() == ["invalid", "invalid"]
    assert fake.requests == [] and out.summary.complete


def test_an_undocumented_per_call_limit_is_found_by_splitting(fake, clock, tmp_path):
    """The portal refuses calls of more than 4 messages as a whole: nothing fails, calls shrink."""
    plan = make_plan([20, 20, 20])
    orig = fake.send_messages

    def limited(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if len(params["MESSAGES"]) > 4:
            return 400, {"error": "ERROR_ARGUMENT", "error_description": "too many messages"}
        return orig(params)

    fake.send_messages = limited  # type: ignore[method-assign]
    client = client_for(fake, clock)
    out = Sender(plan, line=1, connector="hist", state=tmp_path / "j.db", progress=False, client=client).run()
    assert out.summary.counts["sent"] == 60 and out.summary.counts["failed"] == 0
    assert client.governor.messages_per_call(50) <= 4
    assert (out.frame["import_attempts"] == 1).all()  # refused calls are not attempts
    for conv in plan.conversations:
        got = [m["message"]["id"] for m in fake.stored if m["chat"]["id"] == conv.key]
        assert got == [f"m{r}" for r in conv.rows]


def test_a_malformed_message_fails_alone(fake, clock, tmp_path):
    plan = make_plan([6], chunk_size=6)
    orig = fake.send_messages

    def strict(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if any(m["message"]["id"] == "m5" for m in params["MESSAGES"]):
            return 400, {"error": "ERROR_ARGUMENT", "error_description": "incorrect structure"}
        return orig(params)

    fake.send_messages = strict  # type: ignore[method-assign]
    out = run(plan, fake, clock, tmp_path)
    f = out.frame
    assert f.loc[[2, 3, 4], "import_status"].tolist() == ["sent"] * 3  # before it: sent
    assert f.loc[5, "import_status"] == "failed" and f.loc[5, "import_error_code"] == "ERROR_ARGUMENT"
    assert (f.loc[[6, 7], "import_error_code"] == "held-after-failure").all()


def test_unknown_rows_confirmed_as_arrived_are_not_resent(fake, clock, tmp_path):
    plan = make_plan([6])
    state = {"n": 0}

    def drop_first(method: str, messages: list[dict[str, Any]]) -> Any:
        state["n"] += 1
        return ("after", _ambiguous("connection-lost", "lost")) if state["n"] == 1 else None

    fake.faults.append(drop_first)
    out = run(
        plan,
        fake,
        clock,
        tmp_path,
    )
    unknown = out.frame.index[out.frame["import_status"] == "unknown"].tolist()
    assert unknown and out.summary.counts["pending"] == 6 - len(unknown)
    with Journal.open(tmp_path / "j.db") as j:  # the user looked: they are in the open line
        assert j.resolve_unknown(arrived=True) == len(unknown)
    out2 = run(plan, fake, clock, tmp_path)
    f = out2.frame
    assert (f.loc[unknown, "import_status"] == "sent").all()
    assert (f.loc[unknown, "import_error_code"] == "confirmed-arrived").all()
    assert out2.summary.counts["sent"] == 6
    ids = [m["message"]["id"] for m in fake.stored]
    assert len(ids) == len(set(ids)) == 6  # nothing re-sent, the rest of the conversation went on


@pytest.mark.parametrize(
    ("status", "payload"),
    [
        (400, {"error": "CONNECTOR_PROXY_NO_ADD_USER", "error_description": "x"}),
        (400, {"error": "CONNECTOR_PROXY_NO_USER_IM", "error_description": "x"}),
        (400, {"error": "PROVIDER_UNSUPPORTED_TYPE_INCOMING_MESSAGE", "error_description": "x"}),
        (400, {"error": "SOMETHING_NEW", "error_description": "x"}),
        (422, {"message": "no code"}),
    ],
)
def test_a_whole_call_refusal_that_may_have_stored_is_never_resent(fake, clock, tmp_path, status, payload):
    """A multi-message call refused with anything but ERROR_ARGUMENT may have stored some messages
    before the refusal: its rows are unknown and the conversation held, nothing is re-sent."""
    plan = make_plan([5], chunk_size=5)
    orig = fake.send_messages

    def partial(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        msgs = params["MESSAGES"]
        if any(m["message"]["id"] == "m4" for m in msgs):  # stores those before m4, then throws
            orig({**params, "MESSAGES": [m for m in msgs[: [m["message"]["id"] for m in msgs].index("m4")]]})
            return status, payload
        return orig(params)

    fake.send_messages = partial  # type: ignore[method-assign]
    out = run(plan, fake, clock, tmp_path)
    ids = [m["message"]["id"] for m in fake.stored]
    assert len(ids) == len(set(ids)), f"duplicates on the portal: {ids}"
    assert len(fake.requests) == 1
    f = out.frame
    assert (f["import_status"] == "unknown").all()
    assert (f["import_error_code"] == "refused-maybe-stored").all()


def test_a_batch_command_error_without_status_is_unknown_for_a_multi_message_call(fake, clock, tmp_path):
    """ERROR_CORE or a malformed result_error entry inside a batch: the command may have run."""
    plan = make_plan([3, 3], chunk_size=3)
    state = {"n": 0}

    def core(method: str, messages: list[dict[str, Any]]) -> Any:
        if method != "batch" or state["n"]:
            return None
        state["n"] += 1
        for m in messages:
            fake.stored.append(m)
        return MockTransport.json(
            200,
            {
                "result": {
                    "result": [],
                    "result_error": {"c0": {"error": "ERROR_CORE", "error_description": "x"}, "c1": "boom"},
                    "result_time": [],
                    "result_total": [],
                    "result_next": [],
                },
                "time": {"duration": 0.1},
            },
        )

    fake.faults.append(core)
    client = client_for(fake, clock)
    client.governor.record_messages(3, 0.01)
    out = Sender(plan, line=1, connector="hist", state=tmp_path / "j.db", progress=False, client=client).run()
    ids = [m["message"]["id"] for m in fake.stored]
    assert len(ids) == len(set(ids)) == 6
    assert (out.frame["import_status"] == "unknown").all()


def test_a_definite_rejection_of_a_single_message_call_is_failed(fake, clock, tmp_path):
    plan = make_plan([1])

    def refuse(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return 400, {"error": "CONNECTOR_PROXY_NO_USER_IM", "error_description": "x"}

    fake.send_messages = refuse  # type: ignore[method-assign]
    out = run(plan, fake, clock, tmp_path)
    assert out.frame["import_status"].tolist() == ["failed"]
    assert out.frame["import_error_code"].tolist() == ["CONNECTOR_PROXY_NO_USER_IM"]


def test_an_item_without_a_success_flag_is_never_failed(fake, clock, tmp_path):
    """Stored items whose SUCCESS flag is missing: with a session they are sent, without one
    unknown (held) — never failed, or --retry-failed would duplicate them."""
    plan = make_plan([2, 2])
    orig = fake.send_messages

    def no_flag(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        status, payload = orig(params)
        for item in payload["result"]["DATA"]["RESULT"]:
            item.pop("SUCCESS")
            if item["chat"]["id"] == "chat1":
                item.pop("session")
        return status, payload

    fake.send_messages = no_flag  # type: ignore[method-assign]
    out = run(plan, fake, clock, tmp_path)
    f = out.frame
    rows0, rows1 = list(plan.conversations[0].rows), list(plan.conversations[1].rows)
    assert (f.loc[rows0, "import_status"] == "sent").all()
    assert (f.loc[rows0, "b24_session_id"] == "323").all()
    assert (f.loc[rows1, "import_status"] == "unknown").all()
    assert (f["import_status"] != "failed").all()
    run(plan, fake, clock, tmp_path, retry_failed=True)
    ids = [m["message"]["id"] for m in fake.stored]
    assert len(ids) == len(set(ids)) == 4  # nothing re-sent by --retry-failed


def test_a_bare_refusal_of_several_messages_is_unknown_and_never_retried_as_failed(fake, clock, tmp_path):
    """SUCCESS: false with no per-item results: one message is failed, several are unknown (the call
    may have stored some), so --retry-failed cannot duplicate them."""
    plan = make_plan([3, 1])
    orig = fake.send_messages

    def bare_refusal(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        # the adversarial reading: a call of several messages stored them all, a single one nothing
        msgs = params["MESSAGES"]
        if len(msgs) > 1:
            _status, payload = orig(params)
        else:
            payload = {"time": fake._time(0.1)}
        return 200, {"result": {"SUCCESS": False, "ERRORS": ["CONNECTOR_PROXY_NO_ADD_USER"]},
                     "time": payload["time"]}

    fake.send_messages = bare_refusal  # type: ignore[method-assign]
    out = run(plan, fake, clock, tmp_path)
    f = out.frame
    many, one = list(plan.conversations[0].rows), list(plan.conversations[1].rows)
    assert f.loc[many, "import_status"].tolist() == ["unknown"] * 3
    assert set(f.loc[many, "import_error_code"]) == {"refused-maybe-stored"}
    assert f.loc[one, "import_status"].tolist() == ["failed"]
    fake.send_messages = orig  # type: ignore[method-assign]
    again = run(plan, fake, clock, tmp_path, retry_failed=True)
    ids = [m["message"]["id"] for m in fake.stored]
    assert len(ids) == len(set(ids)) == 4  # the failed one re-sent once; the unknown three never
    assert again.frame.loc[one, "import_status"].tolist() == ["sent"]


def test_an_item_with_errors_but_no_flag_is_failed(fake, clock, tmp_path):
    plan = make_plan([1])

    def errors_only(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        item = {"ERRORS": ["IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA"]}
        return 200, {"result": {"SUCCESS": True, "DATA": {"RESULT": [item]}}, "time": fake._time(0.1)}

    fake.send_messages = errors_only  # type: ignore[method-assign]
    out = run(plan, fake, clock, tmp_path)
    assert out.frame["import_status"].tolist() == ["failed"]
    assert out.frame["import_error_code"].tolist() == ["IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA"]


def test_a_tls_failure_stops_the_run_with_rows_pending_not_unknown(tmp_path):
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    clock = ManualClock()
    try:
        client = Client(f"https://127.0.0.1:{srv.server_port}", "tok-abcdefgh", clock=clock, timeout=5)
        plan = make_plan([3, 2])
        sender = Sender(plan, line=1, connector="hist", client=client, state=tmp_path / "j", progress=False)
        out = sender.run()
    finally:
        srv.shutdown()
        srv.server_close()
    assert out.summary.stopped == "tls-failed"
    assert (out.frame["import_status"] == "pending").all()
    assert (out.frame["import_attempts"] == 0).all()


def test_an_answered_batch_with_a_refused_command_is_journalled_in_one_commit(
    fake, clock, tmp_path, monkeypatch
):
    """One command refused (429) beside answered ones: a kill while journalling the answer must
    not leave the refused rows settled and the answered ones in flight (or the reverse)."""
    plan = make_plan([2, 2, 2])
    orig_run = fake._run

    def run_with_429(parsed: dict[str, tuple[str, dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
        last = list(parsed)[-1]
        status, payload = orig_run({k: v for k, v in parsed.items() if k != last})
        errors = payload["result"]["result_error"] or {}
        errors[last] = {"error": "OPERATION_TIME_LIMIT", "error_description": "x"}
        payload["result"]["result_error"] = errors
        return status, payload

    fake._run = run_with_429  # type: ignore[method-assign]
    client = client_for(fake, clock)
    client.governor.record_messages(2, 0.01)

    class Killed(BaseException):
        pass

    real_settle = Journal._settle

    def killed(cur: Any, updates: Any) -> None:  # the process dies inside the answer's commit
        raise Killed

    monkeypatch.setattr(Journal, "_settle", staticmethod(killed))
    sender = Sender(plan, line=1, connector="hist", state=tmp_path / "j.db", progress=False, client=client)
    with pytest.raises(Killed):
        sender.run()
    monkeypatch.setattr(Journal, "_settle", staticmethod(real_settle))
    with Journal.open(tmp_path / "j.db") as j:
        statuses = set(j.rows()["status"])
    assert statuses == {"inflight"}, statuses  # all or nothing


def test_journal_and_sent_at_use_wall_clock_time_not_the_pacing_clock(fake, clock, tmp_path):
    """A sandbox runs on a scaled (virtual) clock; status and reports must show real times."""
    import time

    clock.advance(86_400 * 400)  # the pacing clock is far from real time
    before = time.time()
    out = run(make_plan([2, 2]), fake, clock, tmp_path)
    after = time.time()
    sent_at = out.frame["sent_at"].map(lambda t: t.timestamp())
    assert ((sent_at >= before - 1) & (sent_at <= after + 1)).all()
    with Journal.open(tmp_path / "j.db") as j:
        summary = j.summary()
        times = j._conn.execute("SELECT started_at, finished_at FROM requests").fetchall()
    for r in summary["runs"]:
        assert before - 1 <= r["started_at"] <= r["finished_at"] <= after + 1
    assert times and all(before - 1 <= a <= b <= after + 1 for a, b in times)


def _real_plan(chats: list[str]) -> Plan:
    import bulkimport
    from bulkimport.mapping import Mapping

    n = len(chats)
    df = pd.DataFrame(
        {
            "Chat": chats,
            "Client": [f"cl-{c}" for c in chats],
            "Date": [f"2026-01-01 10:{i:02d}" for i in range(n)],
            "Text": [f"т {i} & = + % 😀\nok" for i in range(n)],
        },
        index=pd.RangeIndex(2, 2 + n, name="row"),
    )
    cols = {"chat.id": "Chat", "user.id": "Client", "message.date": "Date", "message.text": "Text"}
    return bulkimport.plan(df, Mapping(columns=cols))


def test_a_plans_lazy_messages_reach_the_portal_as_their_items(fake, clock, tmp_path):
    """Chunks of a real plan go out as lazy views (encoded from the plan's columns): batch
    commands and a single call's JSON body carry exactly the items the plan gives."""
    p = _real_plan(["a", "b", "a", "c", "b", "a"])
    out = run(p, fake, clock, tmp_path / "batch")
    assert out.summary.counts["sent"] == 6 and "batch" in [method for method, _ in fake.requests]
    def text(item: Any) -> Any:  # a batch's query strings decode to text values, a JSON body keeps ints
        return json.loads(json.dumps(item), parse_int=str)

    for conv in p.conversations:
        got = [text(m) for m in fake.stored if m["chat"]["id"] == conv.key]
        assert got == [text(item) for item in conv.messages]

    single = FakePortal(clock)
    q = _real_plan(["only", "only", "only"])
    out = run(q, single, clock, tmp_path / "single")
    assert [method for method, _ in single.requests] == ["imconnector.send.messages"]
    assert single.stored == list(q.conversations[0].messages)  # JSON: the very items, ints included


def test_the_heap_is_frozen_only_while_a_run_lasts(fake, clock, tmp_path):
    """The run keeps the pre-existing heap out of full GC passes and gives it back at the end;
    a heap someone else froze stays as they left it."""
    import gc

    seen: list[int] = []

    def spy(method: str, messages: list[dict[str, Any]]) -> None:
        seen.append(gc.get_freeze_count())

    fake.faults.append(spy)
    assert gc.get_freeze_count() == 0
    run(make_plan([2, 2]), fake, clock, tmp_path / "a")
    assert seen and min(seen) > 0 and gc.get_freeze_count() == 0

    gc.freeze()
    try:
        freezes: list[int] = []
        real_freeze = gc.freeze
        gc.freeze = lambda: freezes.append(1)  # type: ignore[assignment]  # the run must add nothing
        try:
            run(make_plan([2]), fake, clock, tmp_path / "b")
        finally:
            gc.freeze = real_freeze  # type: ignore[assignment]
        assert freezes == [] and gc.get_freeze_count() > 0  # neither frozen more nor thawed by the run
    finally:
        gc.unfreeze()
