"""Read-back of imported chats: imopenlines.dialog.get, session.history.get, session.join,
im.dialog.messages.get."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import call, msg, register

from bulkimport.sandbox import Sandbox


def send(portal: Sandbox, messages: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
    r = call(portal, "imconnector.send.messages", CONNECTOR="hist_import", LINE=1, MESSAGES=messages, **extra)
    assert r.status_code == 200, r.text
    return r.json()["result"]["DATA"]["RESULT"]


def first_session(portal: Sandbox, n: int = 3) -> tuple[int, int]:
    items = send(portal, [msg(i) for i in range(n)])
    return int(items[0]["session"]["CHAT_ID"]), int(items[0]["session"]["ID"])


def test_dialog_get_by_each_key_and_message_count_includes_the_welcome(
    sandbox: Sandbox, connector: str
) -> None:
    chat, session = first_session(sandbox)
    by_chat = call(sandbox, "imopenlines.dialog.get", CHAT_ID=chat).json()["result"]
    assert by_chat["id"] == chat and by_chat["type"] == "lines" and by_chat["entity_type"] == "LINES"
    assert by_chat["dialog_id"] == f"chat{chat}" and by_chat["entity_id"] == "hist_import|1|c1|u1"
    assert by_chat["message_count"] == 4  # three messages + the welcome text the line sends
    assert by_chat["entity_data_1"].split("|")[5] == str(session)
    for params in (
        {"DIALOG_ID": f"chat{chat}"},
        {"SESSION_ID": session},
        {"USER_CODE": "hist_import|1|c1|u1"},
    ):
        assert call(sandbox, "imopenlines.dialog.get", **params).json()["result"] == by_chat
    assert by_chat["last_message_id"] == int(sandbox.store.chat_messages(chat)["id"].max())


@pytest.mark.parametrize(
    "params",
    [
        {"CHAT_ID": 999},
        {"DIALOG_ID": "chat999"},
        {"DIALOG_ID": "1001"},
        {"SESSION_ID": 9},
        {"USER_CODE": "hist_import|1|nope|u1"},
        {},
    ],
)
def test_dialog_get_unknown_dialog_is_access_error(sandbox: Sandbox, connector: str, params: dict) -> None:
    first_session(sandbox, 1)
    r = call(sandbox, "imopenlines.dialog.get", **params)
    assert r.status_code == 400 and r.json() == {
        "error": "ACCESS_ERROR",
        "error_description": "You do not have access to the specified dialog",
    }


def test_dialog_get_needs_access_and_the_imopenlines_scope(sandbox: Sandbox, connector: str) -> None:
    chat, _ = first_session(sandbox, 1)
    employee = sandbox.portal.issue_tokens(sandbox.client_id, "imopenlines,im", 7)["access_token"]
    r = call(sandbox, "imopenlines.dialog.get", token=employee, CHAT_ID=chat)
    assert r.status_code == 400 and r.json()["error"] == "ACCESS_ERROR"
    no_scope = sandbox.portal.issue_tokens(sandbox.client_id, "im", 1)["access_token"]
    r = call(sandbox, "imopenlines.dialog.get", token=no_scope, CHAT_ID=chat)
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"


def test_session_history_get_one_session_with_connector_mid(sandbox: Sandbox, connector: str) -> None:
    chat, session = first_session(sandbox)
    result = call(sandbox, "imopenlines.session.history.get", SESSION_ID=session).json()["result"]
    assert result["chatId"] == chat and result["sessionId"] == session
    ids = list(result["message"])
    assert ids == sorted(ids, key=int, reverse=True) and result["usersMessage"] == {f"chat{chat}": ids}
    client = [m for m in result["message"].values() if m["senderid"] != "0"]
    system = [m for m in result["message"].values() if m["senderid"] == "0"]
    assert sorted(m["params"]["connectorMid"][0] for m in client) == ["c1-m0", "c1-m1", "c1-m2"]
    welcome = call(sandbox, "imopenlines.config.get", CONFIG_ID=1).json()["result"]["WELCOME_MESSAGE_TEXT"]
    assert [m["text"] for m in system] == [welcome]
    assert result["chat"][str(chat)]["messageCount"] == 4
    assert any(u["connector"] for u in result["users"].values())
    by_chat = call(sandbox, "imopenlines.session.history.get", CHAT_ID=chat).json()["result"]
    assert by_chat["message"] == result["message"]


def test_session_history_get_errors(sandbox: Sandbox, connector: str) -> None:
    _, session = first_session(sandbox, 1)
    r = call(sandbox, "imopenlines.session.history.get")
    assert r.status_code == 400 and r.json()["error"] == "MISSING_REQUIRED_PARAM"
    r = call(sandbox, "imopenlines.session.history.get", CHAT_ID=4242)
    assert r.status_code == 400 and r.json()["error"] == "INVALID_SESSION_ID"
    r = call(sandbox, "imopenlines.session.history.get", SESSION_ID=4242)
    assert r.status_code == 400 and r.json()["error"] == "ACCESS_DENIED"
    employee = sandbox.portal.issue_tokens(sandbox.client_id, "imopenlines", 7)["access_token"]
    r = call(sandbox, "imopenlines.session.history.get", token=employee, SESSION_ID=session)
    assert r.status_code == 400 and r.json()["error"] == "ACCESS_DENIED"


def test_history_works_without_membership_but_messages_get_needs_it(sandbox: Sandbox, connector: str) -> None:
    chat, session = first_session(sandbox, 2)
    assert call(sandbox, "imopenlines.session.history.get", SESSION_ID=session).status_code == 200
    r = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}")
    assert r.status_code == 403 and r.json() == {
        "error": "ACCESS_ERROR",
        "error_description": "You do not have access to the specified dialog",
    }
    r = call(sandbox, "imopenlines.session.join", CHAT_ID=chat)
    assert r.status_code == 200 and r.json()["result"] is True
    r = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}")
    assert r.status_code == 200
    body = r.json()["result"]
    assert body["chat_id"] == chat and len(body["messages"]) == 3
    assert [m["params"].get("CONNECTOR_MID") for m in body["messages"]] == [["c1-m1"], None, ["c1-m0"]]
    assert body["messages"][1]["author_id"] == 0 and body["messages"][1]["uuid"] is None
    assert {u["id"] for u in body["users"]} == {body["messages"][0]["author_id"]}


def test_session_join_errors(sandbox: Sandbox, connector: str) -> None:
    chat, _ = first_session(sandbox, 1)
    for value in (None, 0, "x", 424242):
        r = call(sandbox, "imopenlines.session.join", **({} if value is None else {"CHAT_ID": value}))
        assert r.status_code == 400 and r.json()["error"] == "CHAT_ID", value
    employee = sandbox.portal.issue_tokens(sandbox.client_id, "imopenlines,im", 7)["access_token"]
    r = call(sandbox, "imopenlines.session.join", token=employee, CHAT_ID=chat)
    assert r.status_code == 400 and r.json()["error"] == "ACCESS_DENIED"
    assert call(sandbox, "im.dialog.messages.get", token=employee, DIALOG_ID=f"chat{chat}").status_code == 403


def walk(portal: Sandbox, chat: int, limit: int, anchor: str, start: int | None) -> list[int]:
    """Every id met walking the chat with LAST_ID (backwards from the latest page) or FIRST_ID."""
    seen: list[int] = []
    at = start
    while True:
        params = {"DIALOG_ID": f"chat{chat}", "LIMIT": limit, **({anchor: at} if at is not None else {})}
        page = call(portal, "im.dialog.messages.get", **params).json()["result"]["messages"]
        if not page:
            return sorted(seen)
        ids = [m["id"] for m in page]
        assert ids == sorted(ids, reverse=True) and len(ids) <= min(limit, 50)  # newest first, capped
        assert not set(ids) & set(seen)
        seen += ids
        at = min(ids) if anchor == "LAST_ID" else max(ids)


def test_keyset_paging_edges(connector: str, sandbox: Sandbox) -> None:
    send(sandbox, [msg(i) for i in range(60)])
    chat = int(sandbox.store.chats()["id"].iloc[0])
    call(sandbox, "imopenlines.session.join", CHAT_ID=chat)
    every = [int(i) for i in sandbox.store.chat_messages(chat)["id"]]
    assert len(every) == 61
    # no FIRST_ID/LAST_ID: the latest LIMIT (default 20), newest first
    latest = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}").json()["result"]["messages"]
    assert [m["id"] for m in latest] == list(reversed(every))[:20]
    # LIMIT is capped at 50
    capped = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}", LIMIT=500).json()["result"]
    assert len(capped["messages"]) == 50
    # walking backwards (LAST_ID = min id) and forwards (FIRST_ID = max id) meets every message once
    for limit in (1, 7, 50, 61):
        assert walk(sandbox, chat, limit, "LAST_ID", None) == every
        assert walk(sandbox, chat, limit, "FIRST_ID", every[0]) == every[1:]
    # FIRST_ID=0 is no anchor: the latest page
    zero = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}", FIRST_ID=0).json()["result"]
    assert [m["id"] for m in zero["messages"]] == [m["id"] for m in latest]
    # LAST_ID walks backwards
    older = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}", LAST_ID=every[10], LIMIT=50)
    assert [m["id"] for m in older.json()["result"]["messages"]] == list(reversed(every[:10]))
    # the last page after the newest message is empty; a non-existent anchor gives an empty page
    for anchor in ({"FIRST_ID": every[-1]}, {"FIRST_ID": every[-1] + 1000}, {"LAST_ID": 12}):
        r = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}", **anchor).json()["result"]
        assert r["messages"] == [] and r["users"] == [] and r["files"] == []


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({}, 400, "DIALOG_ID_EMPTY"),
        ({"DIALOG_ID": ""}, 400, "DIALOG_ID_EMPTY"),
        ({"DIALOG_ID": "chatx"}, 400, "DIALOG_ID_EMPTY"),
        ({"DIALOG_ID": "chat1001", "FIRST_ID": "abc"}, 400, "FIRST_ID_STRING"),
        ({"DIALOG_ID": "chat1001", "LAST_ID": "abc"}, 400, "LAST_ID_STRING"),
        ({"DIALOG_ID": "chat999"}, 403, "ACCESS_ERROR"),
    ],
)
def test_dialog_messages_get_errors(
    sandbox: Sandbox, connector: str, params: dict, status: int, code: str
) -> None:
    chat, _ = first_session(sandbox, 1)
    assert chat == 1001
    call(sandbox, "imopenlines.session.join", CHAT_ID=chat)
    r = call(sandbox, "im.dialog.messages.get", **params)
    assert r.status_code == status and r.json()["error"] == code


def test_dialog_messages_get_needs_the_im_scope(sandbox: Sandbox, connector: str) -> None:
    chat, _ = first_session(sandbox, 1)
    call(sandbox, "imopenlines.session.join", CHAT_ID=chat)
    token = sandbox.portal.issue_tokens(sandbox.client_id, "imopenlines", 1)["access_token"]
    r = call(sandbox, "im.dialog.messages.get", token=token, DIALOG_ID=f"chat{chat}")
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"


def test_operator_messages_come_back_with_their_author(sandbox: Sandbox, connector: str) -> None:
    send(sandbox, [msg(0), msg(1, m={"user_id": 1})])
    chat = int(sandbox.store.chats()["id"].iloc[0])
    # the operator (the application's user) who posted became a member: no join needed
    page = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}").json()["result"]["messages"]
    assert page[0]["author_id"] == 1 and page[0]["params"]["CONNECTOR_MID"] == ["c1-m1"]


def test_deleted_and_updated_messages_in_read_back(sandbox: Sandbox, connector: str) -> None:
    chat, session = first_session(sandbox, 3)
    call(sandbox, "imopenlines.session.join", CHAT_ID=chat)
    r = call(
        sandbox,
        "imconnector.update.messages",
        CONNECTOR="hist_import",
        LINE=1,
        MESSAGES=[{"user": {"id": "u1"}, "message": {"id": "c1-m0", "text": "edited"}, "chat": {"id": "c1"}}],
    )
    assert r.json()["result"]["SUCCESS"] is True
    r = call(
        sandbox,
        "imconnector.delete.messages",
        CONNECTOR="hist_import",
        LINE=1,
        MESSAGES=[{"user": {"id": "u1"}, "message": {"id": "c1-m1"}, "chat": {"id": "c1"}}],
    )
    assert r.json()["result"]["SUCCESS"] is True
    page = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}").json()["result"]["messages"]
    mids = [m["params"].get("CONNECTOR_MID", [None])[0] for m in page if m["author_id"]]
    assert mids == ["c1-m2", "c1-m0"] and page[-1]["text"] == "edited"
    history = call(sandbox, "imopenlines.session.history.get", SESSION_ID=session).json()["result"]
    assert len(history["message"]) == 3  # two left + the welcome
    assert call(sandbox, "imopenlines.dialog.get", CHAT_ID=chat).json()["result"]["message_count"] == 3
    # the deleted id is no anchor any more
    deleted_id = int(
        sandbox.portal.store.one(
            "SELECT i.id FROM im_messages i JOIN messages m ON m.seq = i.seq WHERE m.message_id = 'c1-m1'"
        )["id"]
    )
    r = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}", LAST_ID=deleted_id).json()["result"]
    assert r["messages"] == []


def test_read_back_is_batchable_and_charged(sandbox: Sandbox, connector: str) -> None:
    chat, session = first_session(sandbox, 1)
    cmd = {
        "d": f"imopenlines.dialog.get?CHAT_ID={chat}",
        "h": f"imopenlines.session.history.get?SESSION_ID={session}",
        "j": f"imopenlines.session.join?CHAT_ID={chat}",
        "m": f"im.dialog.messages.get?DIALOG_ID=chat{chat}",
    }
    body = call(sandbox, "batch", halt=0, cmd=cmd).json()["result"]
    assert body["result_error"] == [] and set(body["result"]) == set(cmd)
    assert body["result"]["m"]["chat_id"] == chat
    assert body["result_time"]["h"]["operating"] >= 0.7


def test_a_database_of_an_earlier_sandbox_gets_its_messenger_view(tmp_path: Any) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with Sandbox(db=db, time_scale=100) as portal:
        register(portal)
        send(portal, [msg(i) for i in range(3)])
        chat = int(portal.store.chats()["id"].iloc[0])
    raw = sqlite3.connect(db)  # what an earlier sandbox left: no messenger rows, no line settings
    raw.execute("DELETE FROM im_messages")
    raw.execute("ALTER TABLE lines DROP COLUMN settings")
    raw.commit()
    raw.close()
    with Sandbox(db=db, time_scale=100) as portal:
        assert call(portal, "imopenlines.config.get", CONFIG_ID=1).json()["result"]["WELCOME_MESSAGE"] == "Y"
        dialog = call(portal, "imopenlines.dialog.get", CHAT_ID=chat).json()["result"]
        assert dialog["message_count"] == 3
        mids = portal.store.chat_messages(chat)["message_id"].tolist()
        assert mids == ["c1-m0", "c1-m1", "c1-m2"]
