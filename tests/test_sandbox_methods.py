"""Sandbox methods: connector life cycle, open lines, chat name, update/delete messages."""

from __future__ import annotations

import json

import pytest
from conftest import ICON, call, msg, register

from bulkimport.sandbox import Sandbox

REGISTER = {
    "ID": "hist_import",
    "NAME": "History import",
    "ICON": ICON,
    "PLACEMENT_HANDLER": "https://example.com/settings",
}


def test_register_success_is_nested_result(sandbox: Sandbox) -> None:
    r = call(sandbox, "imconnector.register", **REGISTER)
    assert r.status_code == 200
    body = r.json()
    assert body["result"] == {"result": True} and "time" in body


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"ID": ""}, "CONNECTOR_ID_REQUIRED"),
        ({"ID": None}, "CONNECTOR_ID_REQUIRED"),
        ({"ID": "hist.import"}, "APPLICATION_REGISTRATION_ERROR_POINT"),
        ({"NAME": ""}, "NAME_REQUIRED"),
        ({"ICON": {}}, "ICON_REQUIRED"),
        ({"ICON": {"COLOR": "#fff"}}, "ICON_REQUIRED"),
        ({"PLACEMENT_HANDLER": ""}, "NO_PLACEMENT_HANDLER"),
        ({"ID": "hist-import"}, "GENERAL_CONNECTOR_REGISTRATION_ERROR"),
    ],
)
def test_register_errors_come_with_http_200_inside_result(sandbox: Sandbox, change: dict, code: str) -> None:
    params = {**REGISTER, **change}
    params = {k: v for k, v in params.items() if v is not None}
    r = call(sandbox, "imconnector.register", **params)
    assert r.status_code == 200
    result = r.json()["result"]
    assert result["result"] is False and result["error"] == code and result["error_description"]
    assert sandbox.store.connectors().empty


def test_register_lowercases_id_and_reregister_updates(sandbox: Sandbox) -> None:
    call(sandbox, "imconnector.register", **{**REGISTER, "ID": "Hist_IMPORT"})
    call(sandbox, "imconnector.register", **{**REGISTER, "NAME": "Renamed", "CHAT_GROUP": True})
    frame = sandbox.store.connectors()
    assert list(frame["connector"]) == ["hist_import"]
    assert frame.loc[0, "name"] == "Renamed" and frame.loc[0, "chat_group"] == 1
    listed = call(sandbox, "imconnector.list").json()["result"]
    assert listed["hist_import"] == "Renamed" and "livechat" in listed


def test_register_refuses_webhook(sandbox: Sandbox) -> None:
    import requests

    r = requests.post(sandbox.webhook_url + "imconnector.register", json=REGISTER, timeout=30)
    assert r.status_code == 403 and r.json()["error"] == "WRONG_AUTH_TYPE"


def test_unregister(sandbox: Sandbox, connector: str) -> None:
    r = call(sandbox, "imconnector.unregister", ID=connector)
    assert r.json()["result"] == {"result": True}
    assert connector not in call(sandbox, "imconnector.list").json()["result"]
    r = call(sandbox, "imconnector.unregister", ID=connector)
    assert r.status_code == 200
    assert r.json()["result"]["error"] == "APPLICATION_UNREGISTRATION_ERROR"
    status = call(sandbox, "imconnector.status", CONNECTOR=connector, LINE=1).json()["result"]
    assert status["STATUS"] is False


@pytest.mark.parametrize("missing", ["CONNECTOR", "LINE", "ACTIVE"])
def test_activate_missing_argument(sandbox: Sandbox, missing: str) -> None:
    params = {"CONNECTOR": "hist_import", "LINE": 1, "ACTIVE": 1}
    del params[missing]
    r = call(sandbox, "imconnector.activate", **params)
    assert r.status_code == 400
    assert r.json() == {
        "error": "ERROR_ARGUMENT",
        "error_description": f"Argument '{missing}' is null or empty",
    }


def test_activate_deactivate_and_status(sandbox: Sandbox) -> None:
    call(sandbox, "imconnector.register", **REGISTER)
    status = call(sandbox, "imconnector.status", CONNECTOR="hist_import", LINE=1).json()["result"]
    assert status == {
        "LINE": 1,
        "CONNECTOR": "hist_import",
        "ERROR": False,
        "CONFIGURED": False,
        "STATUS": False,
    }
    assert (
        call(sandbox, "imconnector.activate", CONNECTOR="hist_import", LINE=1, ACTIVE="1").json()["result"]
        is True
    )
    status = call(sandbox, "imconnector.status", CONNECTOR="hist_import", LINE="1").json()["result"]
    assert status["STATUS"] is True and status["CONFIGURED"] is True and status["LINE"] == 1
    assert call(sandbox, "imconnector.status", CONNECTOR="hist_import").json()["result"]["STATUS"] is False
    call(sandbox, "imconnector.activate", CONNECTOR="hist_import", LINE=1, ACTIVE=0)
    assert (
        call(sandbox, "imconnector.status", CONNECTOR="hist_import", LINE=1).json()["result"]["STATUS"]
        is False
    )


def test_status_needs_connector(sandbox: Sandbox) -> None:
    r = call(sandbox, "imconnector.status", LINE=1)
    assert r.status_code == 400 and r.json()["error_description"] == "Argument 'CONNECTOR' is null or empty"


def test_activate_unknown_connector_or_line(sandbox: Sandbox) -> None:
    r = call(sandbox, "imconnector.activate", CONNECTOR="nobody", LINE=1, ACTIVE=1)
    assert r.status_code == 400 and r.json()["error"] == "IMCONNECTOR_NO_CORRECT_PROVIDER"
    call(sandbox, "imconnector.register", **REGISTER)
    r = call(sandbox, "imconnector.activate", CONNECTOR="hist_import", LINE=99, ACTIVE=1)
    assert r.status_code == 400 and r.json()["error"] == "NOT_ACTIVE_LINE"


@pytest.mark.parametrize("missing", ["CONNECTOR", "LINE", "DATA"])
def test_data_set_missing_argument(sandbox: Sandbox, missing: str) -> None:
    params = {"CONNECTOR": "hist_import", "LINE": 1, "DATA": {"ID": "x"}}
    del params[missing]
    r = call(sandbox, "imconnector.connector.data.set", **params)
    assert r.status_code == 400 and r.json()["error_description"] == f"Argument '{missing}' is null or empty"


def test_data_set_replaces_data_as_a_whole(sandbox: Sandbox, connector: str) -> None:
    data = {
        "ID": "hist_line1",
        "URL": "https://old.example/chats",
        "URL_IM": "https://old.example/im",
        "NAME": "Old",
    }
    r = call(sandbox, "imconnector.connector.data.set", CONNECTOR=connector, LINE=1, DATA=data)
    assert r.status_code == 200 and r.json()["result"] is True
    call(sandbox, "imconnector.connector.data.set", CONNECTOR=connector, LINE=1, DATA={"NAME": "New"})
    frame = sandbox.store.connectors()
    assert json.loads(frame.loc[frame["line"] == 1, "data"].iloc[0]) == {"NAME": "New"}


def test_config_get_line_object_and_false(sandbox: Sandbox) -> None:
    line = call(sandbox, "imopenlines.config.get", CONFIG_ID=1).json()["result"]
    assert line["ID"] == "1" and line["ACTIVE"] == "Y" and line["LINE_NAME"] == "Imported history"
    assert call(sandbox, "imopenlines.config.get", CONFIG_ID=3).json()["result"]["ACTIVE"] == "N"
    r = call(sandbox, "imopenlines.config.get", CONFIG_ID=42)
    assert r.status_code == 200 and r.json()["result"] is False
    r = call(sandbox, "imopenlines.config.get")
    assert r.status_code == 400 and r.json() == {
        "error": "CONFIG_ID_EMPTY",
        "error_description": "Config ID can't be empty",
    }


def test_config_list_get_select_filter_order_limit_offset(sandbox: Sandbox) -> None:
    rows = call(sandbox, "imopenlines.config.list.get").json()["result"]
    assert [r["ID"] for r in rows] == ["1", "2", "3"]
    params = {
        "select": ["ID", "LINE_NAME"],
        "filter": {"ACTIVE": "Y"},
        "order": {"ID": "DESC"},
        "limit": 1,
        "offset": 1,
    }
    rows = call(sandbox, "imopenlines.config.list.get", PARAMS=params).json()["result"]
    assert rows == [{"ID": "1", "LINE_NAME": "Imported history"}]
    rows = call(sandbox, "imopenlines.config.list.get", PARAMS={"limit": 500}).json()["result"]
    assert len(rows) == 3  # limit is capped at 200, not refused


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"where": 1}, "Unsupported PARAMS fields are passed: where"),
        ({"select": "ID"}, "A wrong format for the PARAMS field 'select' is passed"),
        ({"select": ["NOPE"]}, "An unknown field 'NOPE' is passed in the PARAMS field 'select'"),
        ({"order": {"ID": "up"}}, "A wrong sorting direction is passed in the PARAMS field 'order'"),
        ({"filter": "x"}, "A wrong format for the PARAMS field 'filter' is passed"),
        ({"limit": -1}, "A non-negative integer is expected in the PARAMS field 'limit'"),
        ({"offset": "x"}, "A non-negative integer is expected in the PARAMS field 'offset'"),
    ],
)
def test_config_list_get_invalid_format(sandbox: Sandbox, params: dict, text: str) -> None:
    r = call(sandbox, "imopenlines.config.list.get", PARAMS=params)
    assert r.status_code == 400 and r.json() == {"error": "INVALID_FORMAT", "error_description": text}


def test_chat_name_set(sandbox: Sandbox, connector: str) -> None:
    call(sandbox, "imconnector.send.messages", CONNECTOR=connector, LINE=1, MESSAGES=[msg(0)])
    r = call(sandbox, "imconnector.chat.name.set", CONNECTOR=connector, LINE=1, CHAT_ID="c1", NAME="Renamed")
    assert r.status_code == 400 and r.json()["error_description"] == "Argument 'USER_ID' is null or empty"
    r = call(
        sandbox,
        "imconnector.chat.name.set",
        CONNECTOR=connector,
        LINE=1,
        CHAT_ID="c1",
        NAME="Renamed",
        USER_ID="u1",
    )
    assert r.status_code == 200 and r.json()["result"] == {"SUCCESS": True, "DATA": {"RESULT": {}}}
    assert sandbox.store.chats().loc[0, "name"] == "Renamed"
    r = call(
        sandbox,
        "imconnector.chat.name.set",
        CONNECTOR=connector,
        LINE=1,
        CHAT_ID="zz",
        NAME="x",
        USER_ID="u1",
    )
    assert r.status_code == 400 and r.json()["error"] == "CHAT_RENAMING_FAILED"
    r = call(
        sandbox,
        "imconnector.chat.name.set",
        CONNECTOR=connector,
        LINE=3,
        CHAT_ID="c1",
        NAME="x",
        USER_ID="u1",
    )
    assert r.json()["error"] == "NOT_ACTIVE_LINE"


def test_update_messages_changes_text_of_every_copy(sandbox: Sandbox, connector: str) -> None:
    call(sandbox, "imconnector.send.messages", CONNECTOR=connector, LINE=1, MESSAGES=[msg(0), msg(0)])
    r = call(
        sandbox,
        "imconnector.update.messages",
        CONNECTOR=connector,
        LINE=1,
        MESSAGES=[msg(0, m={"text": "edited"}), msg(9)],
    )
    assert r.status_code == 200
    results = r.json()["result"]["DATA"]["RESULT"]
    assert results[0]["SUCCESS"] is True and results[0]["message"]["text"] == "edited"
    assert results[0]["message"]["date"] == {} and results[0]["user"] == "501"
    assert results[1]["SUCCESS"] is False and results[1]["ERRORS"]
    frame = sandbox.store.messages()
    assert list(frame["text"]) == ["edited", "edited"] and frame["updated"].notna().all()


def test_delete_messages(sandbox: Sandbox, connector: str) -> None:
    call(sandbox, "imconnector.send.messages", CONNECTOR=connector, LINE=1, MESSAGES=[msg(0), msg(1)])
    item = {"user": {"id": "u1"}, "message": {"id": "c1-m1"}, "chat": {"id": "c1", "url": "https://o/c1"}}
    r = call(sandbox, "imconnector.delete.messages", CONNECTOR=connector, LINE=1, MESSAGES=[item])
    result = r.json()["result"]["DATA"]["RESULT"][0]
    assert result == {
        "user": "501",
        "message": {"id": "c1-m1"},
        "chat": {"id": "c1", "description": "Link to the original post: https://o/c1"},
        "SUCCESS": True,
    }
    assert sandbox.store.counts()["deleted_messages"] == 1


@pytest.mark.parametrize("method", ["imconnector.update.messages", "imconnector.delete.messages"])
def test_update_delete_need_active_line_and_provider(sandbox: Sandbox, method: str) -> None:
    register(sandbox)
    r = call(sandbox, method, CONNECTOR="hist_import", LINE=3, MESSAGES=[msg(0)])
    assert r.status_code == 400 and r.json()["error"] == "NOT_ACTIVE_LINE"
    r = call(sandbox, method, CONNECTOR="other", LINE=1, MESSAGES=[msg(0)])
    assert r.status_code == 400 and r.json()["error"] == "IMCONNECTOR_NO_CORRECT_PROVIDER"
    r = call(sandbox, method, CONNECTOR="hist_import", LINE=1)
    assert r.status_code == 400 and r.json()["error_description"] == "Argument 'MESSAGES' is null or empty"


def test_custom_lines() -> None:
    with Sandbox(time_scale=1000, lines=[{"ID": 7, "LINE_NAME": "Seven"}, (8, "Eight", False)]) as portal:
        rows = call(portal, "imopenlines.config.list.get").json()["result"]
        assert [(r["ID"], r["ACTIVE"]) for r in rows] == [("7", "Y"), ("8", "N")]


def test_insufficient_scope(sandbox: Sandbox) -> None:
    pair = sandbox.portal.issue_tokens(sandbox.client_id, "im", 1)
    r = call(sandbox, "imconnector.list", token=pair["access_token"])
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    assert call(sandbox, "profile", token=pair["access_token"]).status_code == 200


def test_config_list_get_filter_negation_and_lists(sandbox: Sandbox) -> None:
    rows = call(sandbox, "imopenlines.config.list.get", PARAMS={"filter": {"!ACTIVE": "Y"}}).json()["result"]
    assert [r["ID"] for r in rows] == ["3"]
    rows = call(sandbox, "imopenlines.config.list.get", PARAMS={"filter": {"ID": [1, 3]}}).json()["result"]
    assert [r["ID"] for r in rows] == ["1", "3"]
    r = call(sandbox, "imopenlines.config.list.get", OPTIONS={"BAD": "Y"})
    assert (
        r.status_code == 400 and r.json()["error_description"] == "Unsupported OPTIONS fields are passed: BAD"
    )
    rows = call(sandbox, "imopenlines.config.list.get", OPTIONS={"QUEUE": "Y"}).json()["result"]
    assert all("QUEUE" in r for r in rows)
