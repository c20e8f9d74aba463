"""Finishing sessions: imopenlines.operator.another.finish, and the session the next message opens."""

from __future__ import annotations

from typing import Any

from conftest import call, msg

from bulkimport.sandbox import Sandbox


def send(portal: Sandbox, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = call(portal, "imconnector.send.messages", CONNECTOR="hist_import", LINE=1, MESSAGES=messages)
    assert r.status_code == 200, r.text
    return r.json()["result"]["DATA"]["RESULT"]


def test_finish_closes_the_session_and_the_next_message_opens_a_new_one(
    sandbox: Sandbox, connector: str
) -> None:
    first = send(sandbox, [msg(0), msg(1)])[0]["session"]
    r = call(sandbox, "imopenlines.operator.another.finish", CHAT_ID=first["CHAT_ID"])
    assert r.status_code == 200 and r.json()["result"] is True
    sessions = sandbox.store.sessions()
    assert len(sessions) == 1 and sessions["closed"].notna().all()
    second = send(sandbox, [msg(2)])[0]["session"]
    assert second["CHAT_ID"] == first["CHAT_ID"] and second["ID"] != first["ID"]
    sessions = sandbox.store.sessions()
    assert list(sessions["closed"].isna()) == [False, True]
    assert len(sandbox.store.chats()) == 1
    dialog = call(sandbox, "imopenlines.dialog.get", CHAT_ID=first["CHAT_ID"]).json()["result"]
    assert dialog["entity_data_1"].split("|")[5] == second["ID"]
    # each session's history holds its own messages; the later one is the default for CHAT_ID
    old = call(sandbox, "imopenlines.session.history.get", SESSION_ID=first["ID"]).json()["result"]
    new = call(sandbox, "imopenlines.session.history.get", CHAT_ID=first["CHAT_ID"]).json()["result"]
    assert new["sessionId"] == int(second["ID"])
    assert sorted(
        m["params"]["connectorMid"][0] for m in old["message"].values() if m["senderid"] != "0"
    ) == ["c1-m0", "c1-m1"]
    assert [m["params"]["connectorMid"][0] for m in new["message"].values() if m["senderid"] != "0"] == [
        "c1-m2"
    ]


def test_finish_of_a_finished_chat_answers_true_and_changes_nothing(sandbox: Sandbox, connector: str) -> None:
    chat = send(sandbox, [msg(0)])[0]["session"]["CHAT_ID"]
    assert call(sandbox, "imopenlines.operator.another.finish", CHAT_ID=chat).json()["result"] is True
    closed = sandbox.store.sessions()["closed"].tolist()
    count = call(sandbox, "imopenlines.dialog.get", CHAT_ID=chat).json()["result"]["message_count"]
    r = call(sandbox, "imopenlines.operator.another.finish", CHAT_ID=chat)
    assert r.status_code == 200 and r.json()["result"] is True
    assert sandbox.store.sessions()["closed"].tolist() == closed
    assert call(sandbox, "imopenlines.dialog.get", CHAT_ID=chat).json()["result"]["message_count"] == count


def test_finish_errors(sandbox: Sandbox, connector: str) -> None:
    chat = send(sandbox, [msg(0)])[0]["session"]["CHAT_ID"]
    for value in (None, "", 0, "abc", 999_999):
        r = call(
            sandbox, "imopenlines.operator.another.finish", **({} if value is None else {"CHAT_ID": value})
        )
        assert r.status_code == 400 and r.json() == {
            "error": "CHAT_ID",
            "error_description": "The provided chat identifier is invalid",
        }, value
    employee = sandbox.portal.issue_tokens(sandbox.client_id, "imopenlines", 7)["access_token"]
    r = call(sandbox, "imopenlines.operator.another.finish", token=employee, CHAT_ID=chat)
    assert r.status_code == 400 and r.json()["error"] == "ACCESS_DENIED"
    assert sandbox.store.sessions()["closed"].isna().all()
    no_scope = sandbox.portal.issue_tokens(sandbox.client_id, "im", 1)["access_token"]
    r = call(sandbox, "imopenlines.operator.another.finish", token=no_scope, CHAT_ID=chat)
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"


def test_the_operator_of_the_chat_may_finish_it(sandbox: Sandbox, connector: str) -> None:
    chat = send(sandbox, [msg(0)])[0]["session"]["CHAT_ID"]
    operator = sandbox.portal.issue_tokens(sandbox.client_id, "imopenlines", 2)["access_token"]  # the queue's
    r = call(sandbox, "imopenlines.operator.another.finish", token=operator, CHAT_ID=chat)
    assert r.status_code == 200 and r.json()["result"] is True


def test_join_after_finish_is_refused_but_history_still_reads(sandbox: Sandbox, connector: str) -> None:
    item = send(sandbox, [msg(0)])[0]["session"]
    call(sandbox, "imopenlines.operator.another.finish", CHAT_ID=item["CHAT_ID"])
    r = call(sandbox, "imopenlines.session.join", CHAT_ID=item["CHAT_ID"])
    assert r.status_code == 400 and r.json()["error"] == "ACCESS_DENIED"
    r = call(sandbox, "imopenlines.session.history.get", SESSION_ID=item["ID"])
    assert r.status_code == 200 and len(r.json()["result"]["message"]) == 2


def test_new_session_sends_the_welcome_again_only_when_configured(sandbox: Sandbox, connector: str) -> None:
    chat = int(send(sandbox, [msg(0)])[0]["session"]["CHAT_ID"])
    call(sandbox, "imopenlines.operator.another.finish", CHAT_ID=chat)
    send(sandbox, [msg(1)])
    assert int(sandbox.store.chat_messages(chat)["system"].sum()) == 1  # SEND_WELCOME_EACH_SESSION = N
    call(sandbox, "imopenlines.config.update", CONFIG_ID=1, PARAMS={"SEND_WELCOME_EACH_SESSION": "Y"})
    call(sandbox, "imopenlines.operator.another.finish", CHAT_ID=chat)
    send(sandbox, [msg(2)])
    assert int(sandbox.store.chat_messages(chat)["system"].sum()) == 2


def test_vote_request_ends_a_finished_session_when_switched_on(sandbox: Sandbox, connector: str) -> None:
    chat = int(send(sandbox, [msg(0)])[0]["session"]["CHAT_ID"])
    call(sandbox, "imopenlines.operator.another.finish", CHAT_ID=chat)
    assert int(sandbox.store.chat_messages(chat)["system"].sum()) == 1  # only the welcome: VOTE_MESSAGE = N
    call(sandbox, "imopenlines.config.update", CONFIG_ID=1, PARAMS={"VOTE_MESSAGE": "Y"})
    send(sandbox, [msg(1)])
    call(sandbox, "imopenlines.operator.another.finish", CHAT_ID=chat)
    texts = sandbox.store.chat_messages(chat)
    vote = call(sandbox, "imopenlines.config.get", CONFIG_ID=1).json()["result"]["VOTE_MESSAGE_2_TEXT"]
    assert texts["text"].iloc[-1] == vote and bool(texts["system"].iloc[-1])


def test_finish_is_batchable_and_costs_operating_time(sandbox: Sandbox, connector: str) -> None:
    chats = {send(sandbox, [msg(0, chat=f"c{i}", user=f"u{i}")])[0]["session"]["CHAT_ID"] for i in range(3)}
    cmd = {f"f{i}": f"imopenlines.operator.another.finish?CHAT_ID={c}" for i, c in enumerate(sorted(chats))}
    body = call(sandbox, "batch", halt=0, cmd=cmd).json()["result"]
    assert body["result"] == {k: True for k in cmd}
    assert body["result_time"]["f2"]["operating"] >= 3 * 0.7 - 1e-9
    assert sandbox.store.sessions()["closed"].notna().all()
