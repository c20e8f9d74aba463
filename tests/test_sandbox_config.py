"""Line settings: imopenlines.config.get's documented fields, imopenlines.config.update and its effects."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import call, msg

from bulkimport.sandbox import Sandbox

#: The settings the product reads before an import (welcome, rating, auto-close, CRM, queue).
PRODUCT_FIELDS = [
    "WELCOME_MESSAGE",
    "WELCOME_MESSAGE_TEXT",
    "SEND_WELCOME_EACH_SESSION",
    "VOTE_MESSAGE",
    "VOTE_MESSAGE_1_TEXT",
    "VOTE_MESSAGE_2_TEXT",
    "AUTO_CLOSE_RULE",
    "AUTO_CLOSE_TIME",
    "AUTO_CLOSE_TEXT",
    "AUTO_EXPIRE_TIME",
    "FULL_CLOSE_TIME",
    "CLOSE_RULE",
    "CRM",
    "CRM_CREATE",
    "CRM_CHAT_TRACKER",
    "QUEUE_TYPE",
    "QUEUE_TIME",
    "NO_ANSWER_TIME",
    "WORKTIME_ENABLE",
]


def config(portal: Sandbox, line: int = 1, **extra: Any) -> dict[str, Any]:
    r = call(portal, "imopenlines.config.get", CONFIG_ID=line, **extra)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def test_config_get_has_the_documented_fields_as_strings(sandbox: Sandbox) -> None:
    line = config(sandbox)
    for name in PRODUCT_FIELDS:
        assert isinstance(line[name], str), name
    assert line["ID"] == "1" and line["LINE_NAME"] == "Imported history" and line["WELCOME_MESSAGE"] == "Y"
    assert "QUEUE" not in line
    queued = config(sandbox, WITH_QUEUE="Y")
    assert (
        queued["QUEUE"] == ["2"]
        and set(queued["QUEUE_FULL"]) == {"2"}
        and "2" in queued["QUEUE_USERS_FIELDS"]
    )


def test_config_update_round_trips(sandbox: Sandbox) -> None:
    params = {
        "WELCOME_MESSAGE": "N",
        "WELCOME_MESSAGE_TEXT": "Hi [b]there[/b]",
        "VOTE_MESSAGE": "Y",
        "AUTO_CLOSE_RULE": "text",
        "AUTO_CLOSE_TIME": "600",
        "AUTO_CLOSE_TEXT": "Closed.",
        "CRM": "N",
        "CRM_CREATE": "none",
        "FULL_CLOSE_TIME": "5",
        "LINE_NAME": "Renamed",
    }
    before = config(sandbox)
    r = call(sandbox, "imopenlines.config.update", CONFIG_ID=1, PARAMS=params)
    assert r.status_code == 200 and r.json()["result"] is True
    after = config(sandbox)
    assert {k: after[k] for k in params} == params
    assert {k: v for k, v in after.items() if k not in params} == {
        k: v for k, v in before.items() if k not in params
    }
    # the other lines keep theirs; a second update merges with the first
    assert config(sandbox, 2)["WELCOME_MESSAGE"] == "Y"
    call(sandbox, "imopenlines.config.update", CONFIG_ID=1, PARAMS={"VOTE_MESSAGE": "N"})
    assert config(sandbox)["VOTE_MESSAGE"] == "N" and config(sandbox)["WELCOME_MESSAGE"] == "N"


def test_config_update_normalizes_like_the_portal_stores(sandbox: Sandbox) -> None:
    call(
        sandbox,
        "imopenlines.config.update",
        CONFIG_ID=1,
        PARAMS={
            "AUTO_CLOSE_TIME": 1200,
            "WELCOME_MESSAGE": False,
            "QUEUE": [{"ENTITY_TYPE": "user", "ENTITY_ID": 1}, {"ENTITY_TYPE": "user", "ENTITY_ID": 7}],
            "NOT_A_FIELD": "x",
            "ID": 99,
        },
    )
    line = config(sandbox, WITH_QUEUE="Y")
    assert line["AUTO_CLOSE_TIME"] == "1200" and line["WELCOME_MESSAGE"] == "N" and line["ID"] == "1"
    assert line["QUEUE"] == ["1", "7"] and "NOT_A_FIELD" not in line
    rows = call(sandbox, "imopenlines.config.list.get", OPTIONS={"QUEUE": "Y"}).json()["result"]
    assert rows[0]["QUEUE"] == [1, 7] and rows[0]["AUTO_CLOSE_TIME"] == "1200"


def test_config_update_active_and_persistence(tmp_path: Any) -> None:
    db = tmp_path / "portal.db"
    with Sandbox(db=db, time_scale=100) as portal:
        call(portal, "imopenlines.config.update", CONFIG_ID=2, PARAMS={"ACTIVE": "N", "WELCOME_MESSAGE": "N"})
        rows = call(portal, "imopenlines.config.list.get", PARAMS={"filter": {"ACTIVE": "N"}}).json()[
            "result"
        ]
        assert [r["ID"] for r in rows] == ["2", "3"]
    with Sandbox(db=db, time_scale=100) as portal:
        line = config(portal, 2)
        assert line["ACTIVE"] == "N" and line["WELCOME_MESSAGE"] == "N"


@pytest.mark.parametrize("value", [None, "", 0, "abc", -3])
def test_config_update_needs_config_id(sandbox: Sandbox, value: Any) -> None:
    params = {} if value is None else {"CONFIG_ID": value}
    r = call(sandbox, "imopenlines.config.update", PARAMS={"CRM": "N"}, **params)
    assert r.status_code == 400 and r.json() == {
        "error": "CONFIG_ID_EMPTY",
        "error_description": "Config ID can't be empty",
    }


def test_config_update_missing_line_is_false_and_non_admin_is_refused(sandbox: Sandbox) -> None:
    r = call(sandbox, "imopenlines.config.update", CONFIG_ID=42, PARAMS={"CRM": "N"})
    assert r.status_code == 200 and r.json()["result"] is False
    employee = sandbox.portal.issue_tokens(sandbox.client_id, "imopenlines", 7)["access_token"]
    r = call(sandbox, "imopenlines.config.update", token=employee, CONFIG_ID=1, PARAMS={"CRM": "N"})
    assert r.status_code == 403 and r.json()["error"] == "CONFIG_WRONG_USER_PERMISSION"
    assert config(sandbox)["CRM"] == "Y"
    no_scope = sandbox.portal.issue_tokens(sandbox.client_id, "im", 1)["access_token"]
    r = call(sandbox, "imopenlines.config.update", token=no_scope, CONFIG_ID=1, PARAMS={"CRM": "N"})
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"


def test_welcome_message_appears_only_while_switched_on(sandbox: Sandbox, connector: str) -> None:
    def new_chat(name: str) -> int:
        r = call(
            sandbox,
            "imconnector.send.messages",
            CONNECTOR="hist_import",
            LINE=1,
            MESSAGES=[msg(0, chat=name, user=name)],
        )
        return int(r.json()["result"]["DATA"]["RESULT"][0]["session"]["CHAT_ID"])

    on = new_chat("a")
    call(sandbox, "imopenlines.config.update", CONFIG_ID=1, PARAMS={"WELCOME_MESSAGE": "N"})
    off = new_chat("b")
    call(
        sandbox,
        "imopenlines.config.update",
        CONFIG_ID=1,
        PARAMS={"WELCOME_MESSAGE": "Y", "WELCOME_MESSAGE_TEXT": "Hello again"},
    )
    again = new_chat("c")
    counts = {
        c: call(sandbox, "imopenlines.dialog.get", CHAT_ID=c).json()["result"]["message_count"]
        for c in (on, off, again)
    }
    assert counts == {on: 2, off: 1, again: 2}
    frame = sandbox.store.chat_messages(again)
    assert frame[frame["system"]]["text"].tolist() == ["Hello again"]


def test_queue_decides_who_is_a_member(sandbox: Sandbox, connector: str) -> None:
    call(
        sandbox,
        "imopenlines.config.update",
        CONFIG_ID=1,
        PARAMS={"QUEUE": [{"ENTITY_TYPE": "user", "ENTITY_ID": 1}]},
    )
    r = call(sandbox, "imconnector.send.messages", CONNECTOR="hist_import", LINE=1, MESSAGES=[msg(0)])
    chat = r.json()["result"]["DATA"]["RESULT"][0]["session"]["CHAT_ID"]
    # the application's user is now the chat's operator: a member without joining
    assert call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}").status_code == 200
    assert call(sandbox, "imopenlines.dialog.get", CHAT_ID=chat).json()["result"]["manager_list"] == [1]
