"""Sandbox store and inspection: duplicates, order, counts, persistence, the parallel-dialog race."""

from __future__ import annotations

import threading
from pathlib import Path

import requests
from conftest import FAST, call, msg, register

from bulkimport.sandbox import Sandbox


def send(portal: Sandbox, messages: list, token: str | None = None) -> requests.Response:
    return call(
        portal, "imconnector.send.messages", token=token, CONNECTOR="hist_import", LINE=1, MESSAGES=messages
    )


def test_clean_import_has_no_duplicates_and_no_disorder(sandbox: Sandbox, connector: str) -> None:
    send(sandbox, [msg(i) for i in range(5)])
    send(sandbox, [msg(i, chat="c2", user="u2") for i in range(3)])
    assert sandbox.store.duplicates().empty
    assert sandbox.store.out_of_order().empty
    counts = sandbox.store.counts()
    assert counts == {
        "lines": 3,
        "connectors": 1,
        "users": 2,
        "chats": 2,
        "duplicate_chats": 0,
        "sessions": 2,
        "messages": 8,
        "duplicate_messages": 0,
        "out_of_order_chats": 0,
        "updated_messages": 0,
        "deleted_messages": 0,
        "system_messages": 2,  # the welcome text of each new session (the line's default)
        "lost_messages": 0,
        "failed_downloads": 0,
        "disk_files": 0,
    }


def test_out_of_order_names_the_chat_and_the_offending_message(sandbox: Sandbox, connector: str) -> None:
    send(sandbox, [msg(0, date=100), msg(2, date=300)])
    send(sandbox, [msg(1, date=200)])
    send(sandbox, [msg(0, chat="ok", date=100), msg(1, chat="ok", date=100)])  # equal dates are in order
    frame = sandbox.store.out_of_order()
    assert len(frame) == 1
    row = frame.iloc[0]
    assert (row["chat_id"], row["message_id"], row["previous_message_id"]) == ("c1", "c1-m1", "c1-m2")


def test_duplicates_lists_every_copy(sandbox: Sandbox, connector: str) -> None:
    send(sandbox, [msg(0), msg(1)])
    send(sandbox, [msg(1), msg(1)])
    dup = sandbox.store.duplicates()
    assert list(dup["seq"]) == [2, 3, 4] and set(dup["copies"]) == {3}
    assert sandbox.store.counts()["duplicate_messages"] == 2


def test_same_message_id_in_another_chat_is_not_a_duplicate(sandbox: Sandbox, connector: str) -> None:
    send(sandbox, [msg(0), {**msg(0), "chat": {"id": "c9"}}])
    assert sandbox.store.duplicates().empty


def test_inspection_frames_have_columns_when_empty(sandbox: Sandbox) -> None:
    assert "message_id" in sandbox.store.messages().columns
    assert "copies" in sandbox.store.duplicates().columns
    assert "chat_id" in sandbox.store.out_of_order().columns
    assert list(sandbox.store.lines()["name"]) == ["Imported history", "Support", "Archive"]
    assert sandbox.store.chats().empty and sandbox.store.users().empty and sandbox.store.sessions().empty


def test_parallel_requests_for_one_new_conversation_create_two_dialogs() -> None:
    # Each request spends 2 real seconds before it stores its message, so the two overlap however
    # late a busy machine schedules the second thread (0.2 s was sometimes not enough).
    with Sandbox(time_scale=10, cost_per_call=0.1, cost_per_message=20.0) as portal:
        register(portal)
        barrier = threading.Barrier(2)
        codes: list[int] = []

        def one(i: int) -> None:
            barrier.wait()
            codes.append(send(portal, [msg(i)]).status_code)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [200, 200]
        assert portal.store.counts()["duplicate_chats"] == 1
        assert portal.store.messages()["b24_chat_id"].nunique() == 2


def test_persistent_db_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "portal.db"
    with Sandbox(db=db, time_scale=FAST) as first:
        register(first)
        send(first, [msg(0)])
        client_id, secret, token = first.client_id, first.client_secret, first.access_token
        refresh = first.refresh_token
        first_request = int(first.store.messages()["request"].iloc[0])
    assert db.exists()
    with Sandbox(db=db, time_scale=FAST) as second:
        assert (second.client_id, second.client_secret) == (client_id, secret)
        assert call(second, "profile", token=token).status_code == 200
        assert send(second, [msg(1)], token=token).status_code == 200
        frame = second.store.messages()
        assert list(frame["seq"]) == [1, 2] and frame["request"].iloc[1] > first_request
        r = requests.get(
            second.oauth_url,
            params={
                "grant_type": "refresh_token",
                "client_id": client_id,
                "client_secret": secret,
                "refresh_token": refresh,
            },
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["client_endpoint"] == second.rest_url
    assert db.exists()


def test_temporary_db_is_deleted_on_stop() -> None:
    portal = Sandbox(time_scale=FAST)
    portal.start()
    path = Path(portal.db_path)
    assert path.exists()
    portal.stop()
    assert not path.exists()
