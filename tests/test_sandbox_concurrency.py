"""Sandbox under concurrent requests, and the group commit's durability: what is on disk, and when.

The store commits a request's writes together (before its answer, and before simulated time
passes); these tests read the database through a *separate* SQLite connection, as another process
would, so they see only what is committed.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest
import requests
from conftest import FAST, msg, register

from bulkimport.sandbox import Sandbox
from bulkimport.sandbox.store import Store

SEND = "imconnector.send.messages"


def batch_body(portal: Sandbox, chats: list[str], n: int = 0) -> dict[str, Any]:
    """A JSON batch of one-message sends (one command per chat), PHP-bracket commands as the client sends."""
    cmd = {}
    for chat in chats:
        item = msg(n, chat=chat, user=f"user-{chat}")
        query = (f"CONNECTOR=hist_import&LINE=1&MESSAGES[0][user][id]={item['user']['id']}"
                 f"&MESSAGES[0][user][name]=Ann&MESSAGES[0][message][id]={item['message']['id']}"
                 f"&MESSAGES[0][message][date]={item['message']['date']}"
                 f"&MESSAGES[0][message][text]=text%20{n}&MESSAGES[0][chat][id]={chat}")
        cmd[f"c-{chat}"] = f"{SEND}?{query}"
    return {"halt": 0, "cmd": cmd, "auth": portal.access_token}


def post_batch(portal: Sandbox, body: dict[str, Any], timeout: float = 60) -> requests.Response:
    return requests.post(portal.rest_url + "batch", json=body, timeout=timeout)


def committed(portal: Sandbox, sql: str = "SELECT COUNT(*) FROM messages") -> int:
    """A count read through another connection: committed rows only."""
    con = sqlite3.connect(portal.db_path, timeout=10)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


def run_together(*jobs: Any) -> list[Any]:
    """Start the jobs at the same moment in threads; their results (an exception fails the test)."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = jobs[i]()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors, errors
    return results


def test_two_concurrent_batches_are_both_stored_and_accounted() -> None:
    cost_call, cost_msg, commands = 1.0, 0.5, 5
    costs = {"cost_per_call": cost_call, "cost_per_message": cost_msg}
    with Sandbox(time_scale=10, drain_rate=1e-9, **costs) as portal:
        register(portal)
        level_before = portal.bucket.level()
        operating_before = portal.ledger.status(portal.client_id, SEND)[0]
        a = batch_body(portal, [f"a{i}" for i in range(commands)])
        b = batch_body(portal, [f"b{i}" for i in range(commands)])
        ra, rb = run_together(lambda: post_batch(portal, a), lambda: post_batch(portal, b))
        for r in (ra, rb):
            assert r.status_code == 200, r.text
            result = r.json()["result"]
            assert result["result_error"] == [] and len(result["result"]) == commands
            assert all(v["SUCCESS"] for v in result["result"].values())
            assert len(result["result_time"]) == commands
        # each request ran 1.5 s of virtual work per command (0.15 s real): they overlapped in time
        ta, tb = ra.json()["time"], rb.json()["time"]
        assert ta["start"] < tb["finish"] and tb["start"] < ta["finish"]
        assert ta["processing"] == pytest.approx(commands * (cost_call + cost_msg))
        # both stored (committed, seen from another connection), 10 chats, distinct request numbers
        assert committed(portal) == 2 * commands
        frame = portal.store.messages()
        assert sorted(frame["chat_id"]) == sorted([f"a{i}" for i in range(commands)] +
                                                  [f"b{i}" for i in range(commands)])
        assert frame["request"].nunique() == 2
        assert portal.store.counts()["duplicate_chats"] == 0
        # the bucket counted both requests, the operating ledger every command of both
        assert portal.bucket.level() == pytest.approx(level_before + 2, abs=1e-6)
        operating = portal.ledger.status(portal.client_id, SEND)[0] - operating_before
        assert operating == pytest.approx(2 * commands * (cost_call + cost_msg))
        stats = portal.stats()
        assert stats["by_method"]["batch"] == 2 and stats["by_status"][200] >= 4


def test_many_concurrent_requests_no_lock_errors_nothing_lost() -> None:
    with Sandbox(time_scale=FAST, cost_per_call=0.0, cost_per_message=0.0, bucket_size=1000) as portal:
        register(portal)

        def client(k: int) -> list[int]:
            codes = []
            with requests.Session() as session:
                for r in range(6):
                    body = batch_body(portal, [f"k{k}-r{r}-{i}" for i in range(10)])
                    codes.append(session.post(portal.rest_url + "batch", json=body, timeout=60).status_code)
                    one = {"CONNECTOR": "hist_import", "LINE": 1, "auth": portal.access_token,
                           "MESSAGES": [msg(r, chat=f"single-{k}", user=f"s{k}")]}
                    codes.append(session.post(portal.rest_url + SEND, json=one, timeout=60).status_code)
            return codes

        results = run_together(*[lambda k=k: client(k) for k in range(4)])
        assert all(code == 200 for codes in results for code in codes), results
        assert committed(portal) == 4 * 6 * 11
        counts = portal.store.counts()
        assert counts["messages"] == 4 * 6 * 11 and counts["duplicate_messages"] == 0
        assert counts["chats"] == 4 * 6 * 10 + 4 and counts["duplicate_chats"] == 0
        assert counts["out_of_order_chats"] == 0
        # every HTTP request got its own number; ids stayed unique
        assert portal.store.messages()["request"].nunique() == 4 * 6 * 2
        assert portal.store.chats()["id"].is_unique and portal.store.users()["id"].is_unique
        assert portal.stats()["by_status"][200] == 2 + 4 * 6 * 2


def test_answered_request_is_committed_before_its_answer(sandbox: Sandbox, connector: str) -> None:
    with requests.Session() as session:
        for n in range(5):
            r = session.post(sandbox.rest_url + "batch", json=batch_body(sandbox, ["x", "y"], n), timeout=30)
            assert r.status_code == 200
            # read the moment the answer arrived
            xy = committed(sandbox, "SELECT COUNT(*) FROM messages WHERE chat_id IN ('x', 'y')")
            assert xy == 2 * (n + 1)
            one = {"CONNECTOR": "hist_import", "LINE": 1, "auth": sandbox.access_token,
                   "MESSAGES": [msg(n, chat="z")]}
            assert session.post(sandbox.rest_url + SEND, json=one, timeout=30).status_code == 200
            assert committed(sandbox, "SELECT COUNT(*) FROM messages WHERE chat_id = 'z'") == n + 1


def test_dropped_after_request_is_committed(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("drop-after", count=1, methods=["batch"])
    with pytest.raises(requests.ConnectionError):
        post_batch(sandbox, batch_body(sandbox, ["d1", "d2", "d3"]))
    assert committed(sandbox) == 3


def test_work_done_is_committed_while_simulated_time_passes() -> None:
    # 3 commands of 4 virtual s each at ×10: the request takes 1.2 s; the first command's message
    # must be on disk while the later ones are still "running" (writes wait at most 50 ms).
    with Sandbox(time_scale=10, cost_per_call=2.0, cost_per_message=2.0) as portal:
        register(portal)
        done = threading.Event()
        seen_in_flight: list[int] = []

        def send() -> None:
            try:
                assert post_batch(portal, batch_body(portal, ["s1", "s2", "s3"])).status_code == 200
            finally:
                done.set()

        thread = threading.Thread(target=send)
        thread.start()
        deadline = time.monotonic() + 30
        while not done.is_set() and time.monotonic() < deadline:
            n = committed(portal)
            if n and not done.is_set():
                seen_in_flight.append(n)
            time.sleep(0.01)
        thread.join(timeout=30)
        assert seen_in_flight and min(seen_in_flight) < 3  # some, not all, while in flight
        assert committed(portal) == 3


def test_slow_fault_commits_before_holding_the_answer(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("slow", count=1, methods=["batch"], delay=100.0)  # 1 s real at FAST
    result: list[int] = []
    body = batch_body(sandbox, ["w"])
    thread = threading.Thread(target=lambda: result.append(post_batch(sandbox, body).status_code))
    thread.start()
    deadline = time.monotonic() + 20
    while committed(sandbox) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert committed(sandbox) == 1 and thread.is_alive()  # stored while the answer is held
    thread.join(timeout=30)
    assert result == [200]


# ------------------------------------------------------------------------------ Store-level rules
def test_store_writes_outside_a_request_commit_at_once(tmp_path: Any) -> None:
    path = str(tmp_path / "s.db")
    store = Store(path)
    try:
        store.set_meta("k", "v")
        other = sqlite3.connect(path)
        assert other.execute("SELECT value FROM meta WHERE key = 'k'").fetchone() == ("v",)
        other.close()
    finally:
        store.close()


def failing_block(store: Store) -> None:
    """A transaction block that writes, then fails."""
    with store.transaction() as db:
        db.execute("INSERT INTO meta (key, value) VALUES ('b', '2')")
        raise RuntimeError("boom")


def test_store_request_defers_then_commits_and_a_failed_block_undoes_only_itself(tmp_path: Any) -> None:
    path = str(tmp_path / "s.db")
    store = Store(path)
    other = sqlite3.connect(path)
    try:
        with store.request():
            store.set_meta("a", "1")
            with pytest.raises(RuntimeError):
                failing_block(store)
            with store.transaction() as db:
                db.execute("INSERT INTO meta (key, value) VALUES ('c', '3')")
            # the connection's own view has them; another connection sees nothing yet
            assert store.meta("a") == "1" and store.meta("b") is None and store.meta("c") == "3"
            assert other.execute("SELECT COUNT(*) FROM meta").fetchone() == (0,)
        assert dict(other.execute("SELECT key, value FROM meta").fetchall()) == {"a": "1", "c": "3"}
    finally:
        other.close()
        store.close()


def test_store_api_write_from_another_thread_commits_pending_work(tmp_path: Any) -> None:
    path = str(tmp_path / "s.db")
    store = Store(path)
    other = sqlite3.connect(path)
    inside, release = threading.Event(), threading.Event()

    def request() -> None:
        with store.request():
            store.set_meta("req", "1")
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=request)
    thread.start()
    try:
        assert inside.wait(10)
        store.set_meta("api", "1")  # not in a request: commits at once (the request's write too)
        assert dict(other.execute("SELECT key, value FROM meta").fetchall()) == {"req": "1", "api": "1"}
    finally:
        release.set()
        thread.join(10)
        other.close()
        store.close()


def test_store_close_commits_what_is_pending(tmp_path: Any) -> None:
    path = str(tmp_path / "s.db")
    store = Store(path)
    with store.request():
        store.set_meta("x", "1")
        store.close()  # e.g. stop() while a request is still running
    other = sqlite3.connect(path)
    try:
        assert other.execute("SELECT value FROM meta WHERE key = 'x'").fetchone() == ("1",)
    finally:
        other.close()


def test_concurrent_requests_for_one_user_create_one_technical_user() -> None:
    with Sandbox(time_scale=20, cost_per_call=0.2, cost_per_message=0.2) as portal:
        register(portal)

        def send(tag: str) -> int:
            cmd = {}
            for i in range(6):  # the same six external users from both requests, in other chats
                query = (f"CONNECTOR=hist_import&LINE=1&MESSAGES[0][user][id]=shared-{i}"
                         f"&MESSAGES[0][message][id]={tag}-{i}&MESSAGES[0][message][date]={1_700_000_000 + i}"
                         f"&MESSAGES[0][message][text]=hi&MESSAGES[0][chat][id]={tag}-chat-{i}")
                cmd[f"c{i}"] = f"{SEND}?{query}"
            return post_batch(portal, {"halt": 0, "cmd": cmd, "auth": portal.access_token}).status_code

        assert run_together(lambda: send("a"), lambda: send("b")) == [200, 200]
        users = portal.store.users()
        assert sorted(users["external_id"]) == [f"shared-{i}" for i in range(6)]
        assert committed(portal, "SELECT COUNT(*) FROM users") == 6 and committed(portal) == 12
