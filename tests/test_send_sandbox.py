"""The sender against the sandbox portal (compressed time): the drills that matter for a real migration.

Token expiry and rotation mid-run, 503/429 storms, ambiguous drops after commit, order and one
conversation in flight, kill -9 and resume, partial batch failures, fatal stops, no secret leaks.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bulkimport.clock import for_sandbox
from bulkimport.journal import Journal
from bulkimport.planning import FAILURE_COLUMNS, Conversation, Plan
from bulkimport.portal.auth import Auth
from bulkimport.portal.client import Client, RequestsTransport

try:
    from bulkimport.sandbox import Sandbox
except ImportError:  # the sandbox lands on main separately
    Sandbox = None  # type: ignore[assignment,misc]

from bulkimport.sending.sender import Sender

pytestmark = pytest.mark.skipif(Sandbox is None, reason="bulkimport.sandbox.Sandbox is not available yet")

ROOT = Path(__file__).resolve().parents[1]
CONNECTOR = "hist_import"


def make_plan(sizes: list[int], *, prefix: str = "c", chunk_size: int = 50, fingerprint: str = "fp") -> Plan:
    """Conversations of the given sizes; row ids 2… like a spreadsheet; message ids m<row>."""
    rows: list[dict[str, Any]] = []
    convs = []
    rid = 2
    for ci, size in enumerate(sizes):
        ids, msgs = [], []
        for i in range(size):
            msg = {
                "user": {"id": f"{prefix}u{ci}", "name": "Ольга"},
                "message": {
                    "id": f"m{rid}",
                    "date": 1_600_000_000 + 60 * i,
                    "text": f"{prefix}{ci} #{i}: a & b = c + d % 5\nnext line",
                    "disable_crm": "Y",
                },
                "chat": {"id": f"{prefix}{ci}"},
            }
            rows.append({"row": rid, "chat": f"{prefix}{ci}"})
            ids.append(rid)
            msgs.append(msg)
            rid += 1
        convs.append(
            Conversation(
                f"{prefix}{ci}", tuple(ids), tuple(msgs), frozenset({f"{prefix}{ci}", f"{prefix}u{ci}"})
            )
        )
    frame = pd.DataFrame(rows).set_index("row")
    return Plan(
        frame=frame,
        conversations=convs,
        failures=pd.DataFrame(columns=FAILURE_COLUMNS),
        chunk_size=chunk_size,
        fingerprint=fingerprint,
    )


class Watch(RequestsTransport):
    """The real transport, counting requests in flight and recording which chats each carried."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.chats_per_request: list[list[str]] = []
        self.fail_after: int | None = None  # raise after this many requests were answered (crash)
        self.bodies: list[bytes] = []  # everything sent to the portal

    def post(self, url: str, body: bytes, headers: Any, timeout: Any) -> Any:
        self.bodies.append(body)
        payload = json.loads(body)
        chats: list[str] = []
        if url.endswith("/batch"):
            from bulkimport.portal.encoding import decode_query

            for cmd in payload["cmd"].values():
                q = decode_query(cmd.split("?", 1)[1]) if "?" in cmd else {}
                chats += sorted({m["chat"]["id"] for m in q.get("MESSAGES", [])})
        else:
            chats += sorted({m["chat"]["id"] for m in payload.get("MESSAGES", [])})
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.chats_per_request.append(chats)
        try:
            answer = super().post(url, body, headers, timeout)
        finally:
            with self.lock:
                self.in_flight -= 1
        if self.fail_after is not None and chats:
            self.fail_after -= 1
            if self.fail_after < 0:
                raise RuntimeError("simulated crash after the request was answered")
        return answer


def connect(
    portal: Any,
    tmp_path: Path,
    transport: Any = None,
    *,
    line: int = 1,
    timeout: tuple[float, float] = (2.0, 5.0),
) -> tuple[Client, Auth]:
    clock = for_sandbox(portal)
    auth = Auth(
        client_id=portal.client_id,
        client_secret=portal.client_secret,
        access_token=portal.access_token,
        refresh_token=portal.refresh_token,
        oauth_url=portal.oauth_url,
        token_file=tmp_path / "tokens.json",
        clock=clock,
        env={},
    )
    client = Client(portal.url, auth, clock=clock, session=transport or Watch(), timeout=timeout)
    return client, auth


def setup_connector(client: Client, line: int = 1) -> None:
    result = client.call(
        "imconnector.register",
        {
            "ID": CONNECTOR,
            "NAME": "History import",
            "ICON": {"DATA_IMAGE": "data:image/svg+xml;charset=US-ASCII,%3Csvg%2F%3E"},
            "PLACEMENT_HANDLER": "https://example.invalid/handler",
        },
        retries=3,
    )
    assert result in (True, {"result": True})
    assert client.call("imconnector.activate", {"CONNECTOR": CONNECTOR, "LINE": line, "ACTIVE": 1}, retries=3)


def sender(plan: Plan, client: Client, tmp_path: Path, line: int = 1, **kw: Any) -> Sender:
    return Sender(
        plan,
        line=line,
        connector=CONNECTOR,
        state=tmp_path / "journal.db",
        progress=kw.pop("progress", False),
        client=client,
        **kw,
    )


def assert_exactly_once_in_order(portal: Any, plan: Plan, frame: pd.DataFrame) -> pd.DataFrame:
    stored = portal.store.messages()
    assert portal.store.duplicates().empty
    assert portal.store.out_of_order().empty
    sent = frame[frame["import_status"] == "sent"]
    sent_ids = {f"m{r}" for r in sent.index}
    assert sent_ids <= set(stored["message_id"])
    for conv in plan.conversations:
        got = stored.loc[stored["chat_id"] == conv.key, "message_id"].tolist()
        want = [f"m{r}" for r in conv.rows if frame.loc[r, "import_status"] != "failed"]
        assert got == want[: len(got)]  # a prefix, in plan order (rejected rows were never stored)
    return stored


@pytest.fixture
def portal():
    with Sandbox(time_scale=100.0, token_lifetime=3600, seed=1) as p:
        yield p


def test_import_with_token_expiry_and_rotation(tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with Sandbox(time_scale=100.0, token_lifetime=60, seed=2) as portal:
        watch = Watch()
        client, auth = connect(portal, tmp_path, watch)
        setup_connector(client)
        plan = make_plan([40, 25, 60, 5, 30])
        portal.faults.add("expire-token", count=1, methods=["batch", "imconnector.send.messages"])
        # one request at a time: slow enough for the 60 s lifetime to run out (two in flight with
        # expiring tokens: tests/test_send_concurrency.py)
        out = sender(plan, client, tmp_path, progress=True, max_in_flight=1).run()
        progress = capsys.readouterr().err
        assert "160/160" in progress
        assert out.summary.counts["sent"] == 160 and out.summary.complete, str(out.summary)
        stored = assert_exactly_once_in_order(portal, plan, out.frame)
        assert len(stored) == 160
        assert auth.refreshes >= 2  # the forced expiry and the 60 s lifetime
        token_file = tmp_path / "tokens.json"
        data = json.loads(token_file.read_text())
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        assert (
            data["access_token"] not in (portal.access_token,)
            and data["refresh_token"] != portal.refresh_token
        )
        # each row's Bitrix24 ids are the ones the portal stored for it
        by_row = stored.set_index(stored["message_id"].str[1:].astype(int))
        portal_ids = by_row[["b24_chat_id", "session_id"]].rename(columns=lambda c: f"portal_{c}")
        merged = out.frame.join(portal_ids)
        assert (merged["b24_chat_id"] == merged["portal_b24_chat_id"].astype(str)).all()
        assert (merged["b24_session_id"] == merged["portal_session_id"].astype(str)).all()
        secrets = [
            portal.client_secret,
            portal.access_token,
            portal.refresh_token,
            data["access_token"],
            data["refresh_token"],
        ]
        journal = (tmp_path / "journal.db").read_bytes().decode("latin-1")
        text = (
            caplog.text
            + progress
            + out.frame.to_csv()
            + str(out.summary)
            + repr(auth)
            + repr(client)
            + journal
        )
        for secret in secrets:
            assert secret not in text
        # the client secret goes to the OAuth server only, never to the portal
        assert watch.bodies and not any(portal.client_secret.encode() in b for b in watch.bodies)


@pytest.mark.parametrize("most", [1, 2])
def test_one_conversation_in_flight_and_batches_of_distinct_chats(portal, tmp_path, most):
    watch = Watch()
    client, _ = connect(portal, tmp_path, watch)
    setup_connector(client)
    plan = make_plan([30] * 8, chunk_size=10)
    out = sender(plan, client, tmp_path, max_in_flight=most).run()
    assert out.summary.counts["sent"] == 240
    assert_exactly_once_in_order(portal, plan, out.frame)
    assert watch.max_in_flight <= most  # overlapping requests' chats: tests/test_send_concurrency.py
    for chats in watch.chats_per_request:
        assert len(chats) == len(set(chats))  # one command per conversation per batch
    assert max(len(c) for c in watch.chats_per_request) > 1  # batching did happen


def test_503_and_429_storms(tmp_path):
    with Sandbox(time_scale=300.0, seed=1) as portal:
        client, _ = connect(portal, tmp_path)
        setup_connector(client)
        portal.faults.add("503", rate=0.5, count=12, methods=["batch", "imconnector.send.messages"])
        portal.faults.add("429", rate=0.5, count=4, methods=["batch", "imconnector.send.messages"])
        plan = make_plan([20, 20, 20])
        out = sender(plan, client, tmp_path).run()
        assert out.summary.counts["sent"] == 60, str(out.summary)
        assert (out.frame["import_attempts"] == 1).all()  # refusals are not attempts
        assert_exactly_once_in_order(portal, plan, out.frame)
        stats = portal.stats()
        assert stats["faults"].get("503", 0) >= 3 and stats["faults"].get("429", 0) >= 1, stats
        assert client.governor.refusals >= 4


def test_real_operating_limit_is_paced(tmp_path):
    """A small budget: the governor waits for the reset instead of hammering into 429s."""
    # ×100, not ×300: a busy machine's scheduling jitter is that many times longer on the portal's
    # clock, and at ×300 it made the pacing meet the wall 3 times in one loaded run
    with Sandbox(time_scale=100.0, operating_limit=60.0, seed=3) as portal:
        client, _ = connect(portal, tmp_path)
        setup_connector(client)
        plan = make_plan([50, 50, 50, 50])
        out = sender(plan, client, tmp_path).run()
        assert out.summary.counts["sent"] == 200
        assert_exactly_once_in_order(portal, plan, out.frame)
        stats = portal.stats()
        refused = stats["by_error"].get("OPERATION_TIME_LIMIT", 0)
        assert refused <= 2, stats  # paced from time.operating, not by hitting the wall
        # 200 messages at ~0.5 s each need ~100 s of budget: more than the 60 s limit, so it waited
        assert out.summary.elapsed >= 500


@pytest.mark.parametrize("kind", ["drop-after", "empty", "500-bare", "html", "500"])
def test_ambiguous_answers_make_rows_unknown_never_duplicated(portal, tmp_path, kind):
    client, _ = connect(portal, tmp_path)
    setup_connector(client)
    after = kind in ("drop-after", "empty", "500-bare", "html", "500")
    portal.faults.add(kind, count=1, methods=["batch", "imconnector.send.messages"], after=after)
    plan = make_plan([12, 12, 12], chunk_size=6)
    out = sender(plan, client, tmp_path).run()
    f = out.frame
    unknown = f[f["import_status"] == "unknown"]
    assert len(unknown) >= 1, str(out.summary)
    stored = assert_exactly_once_in_order(portal, plan, f)
    assert {f"m{r}" for r in unknown.index} <= set(stored["message_id"])  # they did commit
    pending = f[f["import_status"] == "pending"]
    assert (pending["import_error_code"] == "held-after-unknown").all()
    assert set(f["import_status"]) <= {"sent", "unknown", "pending"}
    # re-running does not resend the unknown rows
    before = len(stored)
    out2 = sender(plan, client, tmp_path).run()
    assert len(portal.store.messages()) == before and out2.summary.counts["unknown"] == len(unknown)


def test_drop_before_is_ambiguous_too_but_nothing_stored(portal, tmp_path):
    client, _ = connect(portal, tmp_path)
    setup_connector(client)
    portal.faults.add("drop-before", count=1, methods=["imconnector.send.messages", "batch"])
    plan = make_plan([5])
    out = sender(plan, client, tmp_path).run()
    assert out.summary.counts["unknown"] == 5  # the client cannot tell before from after
    assert portal.store.messages().empty
    out2 = sender(plan, client, tmp_path, retry_unknown=True).run()  # the user checked: resend
    assert out2.summary.counts["sent"] == 5 and len(portal.store.messages()) == 5


def test_partial_batch_failures(portal, tmp_path):
    client, _ = connect(portal, tmp_path)
    setup_connector(client)
    plan = make_plan([4, 4, 4])
    # an item without text or files (rejected per item) and a malformed message (whole command refused)
    c0 = plan.conversations[0]
    bad_item = {**c0.messages[1], "message": {"id": "m3", "date": 1_600_000_000}}
    c2 = plan.conversations[2]
    broken = {**c2.messages[0], "user": "not-a-dict"}
    plan.conversations[0] = Conversation(
        c0.key, c0.rows, (c0.messages[0], bad_item, *c0.messages[2:]), c0.lock_keys
    )
    plan.conversations[2] = Conversation(c2.key, c2.rows, (broken, *c2.messages[1:]), c2.lock_keys)
    client.governor.record_messages(4, 0.5)  # known to be fast: one batch of three commands
    out = sender(plan, client, tmp_path).run()
    f = out.frame
    assert f.loc[3, "import_status"] == "failed"
    assert f.loc[3, "import_error_code"] in ("IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA", "item-rejected")
    assert f.loc[[2, 4, 5], "import_status"].tolist() == ["sent"] * 3  # its conversation went on
    assert (f.loc[[6, 7, 8, 9], "import_status"] == "sent").all()
    rows2 = list(plan.conversations[2].rows)
    assert (
        f.loc[rows2[0], "import_status"] == "failed"
        and f.loc[rows2[0], "import_error_code"] == "ERROR_ARGUMENT"
    )
    assert (f.loc[rows2[-1:], "import_error_code"] == "held-after-failure").all() or (
        f.loc[rows2, "import_status"] == "failed"
    ).all()
    assert_exactly_once_in_order(portal, plan, f)


@pytest.mark.parametrize(
    ("line", "activate", "code"),
    [(3, False, "NOT_ACTIVE_LINE"), (2, False, "IMCONNECTOR_NO_CORRECT_PROVIDER")],
)
def test_fatal_errors_stop_early_with_pending_rows(portal, tmp_path, line, activate, code):
    watch = Watch()
    client, _ = connect(portal, tmp_path, watch)
    setup_connector(client, line=1)  # registered and active on line 1 only
    plan = make_plan([10] * 30)
    out = sender(plan, client, tmp_path, line=line).run()
    s = out.summary
    assert s.stopped == code and s.counts["pending"] == 300 and s.counts["failed"] == 0
    assert (out.frame["import_error_code"] == "not-reached").all()
    assert len([c for c in watch.chats_per_request if c]) == 1  # stopped after the first refusal
    assert portal.store.messages().empty


def test_crash_mid_run_then_resume_without_loss_or_duplicate(portal, tmp_path):
    watch = Watch()
    watch.fail_after = 2
    client, _ = connect(portal, tmp_path, watch)
    setup_connector(client)
    plan = make_plan([15] * 6, chunk_size=5)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sender(plan, client, tmp_path).run()
    j = Journal.open(tmp_path / "journal.db")
    assert j.counts().get("inflight", 0) >= 1
    j.close()
    watch.fail_after = None
    out = sender(plan, client, tmp_path).run()
    s = out.summary
    assert s.recovered_unknown >= 1
    assert s.counts["sent"] + s.counts["unknown"] + s.counts["pending"] == 90
    stored = assert_exactly_once_in_order(portal, plan, out.frame)
    # the crashed request had committed: its rows are unknown and in the portal exactly once
    unknown = out.frame[out.frame["import_status"] == "unknown"]
    assert {f"m{r}" for r in unknown.index} <= set(stored["message_id"])
    # nothing is lost: each row is in the portal, or honestly pending behind an unknown
    missing = set(f"m{r}" for r in out.frame.index) - set(stored["message_id"])
    assert all(out.frame.loc[int(m[1:]), "import_status"] == "pending" for m in missing)


SCRIPT = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from bulkimport.clock import ScaledClock
    from bulkimport.portal.auth import Auth
    from bulkimport.portal.client import Client
    from bulkimport.sending.sender import Sender
    from test_send_sandbox import make_plan, CONNECTOR
    env = os.environ
    clock = ScaledClock(float(env["T_SCALE"]), float(env["T_EPOCH"]))
    auth = Auth(client_id=env["T_ID"], client_secret=env["T_SECRET"], access_token=env["T_ACCESS"],
                refresh_token=env["T_REFRESH"], oauth_url=env["T_OAUTH"], token_file=env["T_TOKENS"],
                clock=clock, env={{}})
    client = Client(env["T_URL"], auth, clock=clock)
    plan = make_plan([20] * 10, chunk_size=4)
    print("start", flush=True)
    Sender(plan, line=1, connector=CONNECTOR, state=env["T_STATE"], progress=False, client=client).run()
    print("done", flush=True)
""")


def test_sigkill_and_resume(tmp_path):
    with Sandbox(time_scale=20.0, seed=4) as portal:
        client, _ = connect(portal, tmp_path)
        setup_connector(client)
        script = tmp_path / "run.py"
        script.write_text(SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests")))
        env = {
            **os.environ,
            "T_SCALE": str(portal.time_scale),
            "T_EPOCH": str(portal.epoch),
            "T_ID": portal.client_id,
            "T_SECRET": portal.client_secret,
            "T_ACCESS": portal.access_token,
            "T_REFRESH": portal.refresh_token,
            "T_OAUTH": portal.oauth_url,
            "T_URL": portal.url,
            "T_TOKENS": str(tmp_path / "tokens-child.json"),
            "T_STATE": str(tmp_path / "journal.db"),
        }
        proc = subprocess.Popen(
            [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 30
        while len(portal.store.messages()) < 40 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        stored_at_kill = len(portal.store.messages())
        assert 0 < stored_at_kill < 200, proc.stderr.read() if proc.stderr else ""
        plan = make_plan([20] * 10, chunk_size=4)
        out = sender(plan, client, tmp_path).run()
        s = out.summary
        assert s.counts["sent"] + s.counts["unknown"] + s.counts["pending"] == 200
        stored = assert_exactly_once_in_order(portal, plan, out.frame)
        missing = {f"m{r}" for r in out.frame.index} - set(stored["message_id"])
        assert all(out.frame.loc[int(m[1:]), "import_status"] in ("pending", "unknown") for m in missing)
        assert (
            s.counts["pending"] == 0
            or (
                out.frame.loc[out.frame["import_status"] == "pending", "import_error_code"]
                == "held-after-unknown"
            ).all()
        )
        # the user checks the line, then resends the unknown ones: every message is there
        out2 = sender(plan, client, tmp_path, retry_unknown=True).run()
        assert out2.summary.counts["sent"] == 200
        ids = portal.store.messages()["message_id"]
        assert set(ids) == {f"m{r}" for r in out.frame.index}


@pytest.mark.parametrize(
    ("kind", "stopped", "unknown"),
    [
        ("redirect", None, 0),
        ("overload", "OVERLOAD_LIMIT", 0),
        ("NO_AUTH_FOUND", "NO_AUTH_FOUND", 0),
        ("insufficient_scope", "insufficient_scope", 0),
        ("ACCESS_DENIED", "ACCESS_DENIED", 0),
        ("INVALID_REQUEST", "INVALID_REQUEST", 0),
        ("PORTAL_DELETED", "PORTAL_DELETED", 0),
        ("ERROR_UNEXPECTED_ANSWER", None, 5),
    ],
)
def test_system_errors_from_the_portal(portal, tmp_path, kind, stopped, unknown):
    client, _ = connect(portal, tmp_path)
    setup_connector(client)
    portal.faults.add(kind, count=1, methods=["batch", "imconnector.send.messages"])
    plan = make_plan([5, 5])
    out = sender(plan, client, tmp_path).run()
    s = out.summary
    assert s.stopped == stopped, str(s)
    assert s.counts["unknown"] == unknown
    if stopped:
        assert s.counts["pending"] == 10 and portal.store.messages().empty
        assert (out.frame["import_error_code"] == "not-reached").all()
        assert out.frame["import_error"].str.contains(stopped).all()
    else:
        assert s.counts["sent"] == 10 - unknown
    assert portal.store.duplicates().empty


def test_dead_refresh_token_stops_with_reauthorise_hint(portal, tmp_path):
    client, _ = connect(portal, tmp_path)
    setup_connector(client)
    portal.faults.add("invalid_grant", count=1, methods=["oauth.token"])
    portal.faults.add("expire-token", count=1, methods=["batch", "imconnector.send.messages"])
    plan = make_plan([5, 5])
    out = sender(plan, client, tmp_path).run()
    assert out.summary.stopped == "invalid_grant"
    assert "bulkimport auth" in (out.summary.stopped_message or "")
    assert out.summary.counts["pending"] == 10 and out.summary.counts["unknown"] == 0
    for secret in (portal.client_secret, portal.refresh_token, portal.access_token):
        assert secret not in (out.summary.stopped_message or "")


def test_answer_slower_than_the_read_timeout_is_unknown(portal, tmp_path):
    client, _auth = connect(portal, tmp_path, timeout=(2.0, 0.5))
    setup_connector(client)
    portal.faults.add("slow", count=1, methods=["imconnector.send.messages", "batch"], delay=150.0)
    plan = make_plan([20, 20])
    before = client.governor.messages_per_call(50)
    out = sender(plan, client, tmp_path).run()
    f = out.frame
    unknown = f[f["import_status"] == "unknown"]
    assert len(unknown) == before and (unknown["import_error_code"] == "timeout").all()
    stored = assert_exactly_once_in_order(portal, plan, f)
    assert {f"m{r}" for r in unknown.index} <= set(stored["message_id"])  # it ran, the answer was late
    assert out.summary.counts["sent"] == 40 - len(unknown) - out.summary.counts["pending"]


def test_chaos_mixed_faults_over_several_resumed_runs(tmp_path):
    """Every fault kind at once over ~150 requests and three resumed runs: never a duplicate,
    never out of order, and every row accounted for (sent and in the portal; unknown; or pending
    behind an unknown one and not in the portal)."""
    # The token lives 3,000 sandbox s = 10 real s: token expiry is injected by the expire-token
    # fault below; a natural lifetime of 0.4 real s let a busy machine's scheduler expire a fresh
    # token before its repeat arrived (a harness artefact, not a behaviour to test).
    with Sandbox(time_scale=300.0, token_lifetime=3000, seed=7) as portal:
        client, _ = connect(portal, tmp_path)
        client.governor.target_seconds = 2.0  # tiny requests: many of them, many faults
        setup_connector(client)
        methods = ["batch", "imconnector.send.messages"]
        for kind, rate in [
            ("503", 0.1),
            ("429", 0.03),
            ("drop-after", 0.03),
            ("html", 0.02),
            ("drop-before", 0.02),
            ("expire-token", 0.05),
            ("500-bare", 0.02),
            ("empty", 0.02),
        ]:
            portal.faults.add(kind, rate=rate, methods=methods)
        plan = make_plan([8] * 25, chunk_size=3)
        runs = [sender(plan, client, tmp_path).run() for _ in range(3)]
        f = runs[-1].frame
        fired = portal.stats()["faults"]
        assert sum(fired.values()) >= 10 and len(fired) >= 5, fired
        stored = assert_exactly_once_in_order(portal, plan, f)
        in_portal = set(stored["message_id"])
        for rid, status in f["import_status"].items():
            if status == "sent":
                assert f"m{rid}" in in_portal
            elif status == "pending":
                assert f"m{rid}" not in in_portal
                assert f.loc[rid, "import_error_code"] == "held-after-unknown"
            else:
                assert status == "unknown"
        assert runs[-1].summary.counts["sent"] >= 100
        # expired_token: the random expire-token fault can also hit the repeat that carries the
        # token just refreshed, and a refreshed token refused again stops the run (the client's
        # rule: never a refresh loop); the next run resumes — the invariants above still hold
        stops = [r.summary.stopped for r in runs]
        assert all(s in (None, "repeated-ambiguous", "expired_token") for s in stops), stops
        # The user checks the line and resends the unknown rows: everything arrives; the only
        # duplicates possible are unknown rows that had in fact arrived (the documented trade-off).
        unknown_arrived = {f"m{r}" for r in f.index[f["import_status"] == "unknown"]} & in_portal
        portal.faults.clear()
        final = sender(plan, client, tmp_path, retry_unknown=True).run()
        assert final.summary.counts["sent"] == 200 and final.summary.complete
        dupes = set(portal.store.duplicates()["message_id"])
        assert dupes <= unknown_arrived
        assert set(portal.store.messages()["message_id"]) == {f"m{r}" for r in f.index}


def test_portal_per_call_message_limit_is_discovered(tmp_path):
    """The real per-call limit is undocumented; a portal refusing big calls costs nothing."""
    with Sandbox(time_scale=300.0, max_messages=6, seed=5) as portal:
        client, _ = connect(portal, tmp_path)
        setup_connector(client)
        plan = make_plan([30, 30])
        out = sender(plan, client, tmp_path).run()
        assert out.summary.counts["sent"] == 60 and out.summary.counts["failed"] == 0, str(out.summary)
        assert_exactly_once_in_order(portal, plan, out.frame)
        assert client.governor.messages_per_call(50) <= 6
