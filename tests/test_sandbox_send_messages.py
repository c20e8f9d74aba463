"""imconnector.send.messages in the sandbox: request errors, per-item results, chats, sessions, storage."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from conftest import FAST, call, msg, register

from bulkimport.sandbox import Sandbox


def send(
    portal: Sandbox, messages: Any, connector: str = "hist_import", line: Any = 1, **extra: Any
) -> requests.Response:
    return call(
        portal, "imconnector.send.messages", CONNECTOR=connector, LINE=line, MESSAGES=messages, **extra
    )


def items(r: requests.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    return r.json()["result"]["DATA"]["RESULT"]


def test_success_shape_matches_the_reference(sandbox: Sandbox, connector: str) -> None:
    item = msg(
        0,
        u={"skip_phone_validate": "Y", "phone": "+49 30 1234567"},
        m={"disable_crm": "Y", "files": [{"url": "https://x/a.png", "name": "a.png"}]},
        c={"name": "Support Channel", "url": "https://example.com/chats/123"},
    )
    r = send(sandbox, [item])
    body = r.json()
    assert body["result"]["SUCCESS"] is True
    assert items(r) == [
        {
            "user": "501",
            "message": {
                "id": "c1-m0",
                "date": {},
                "text": "text 0",
                "files": [{"url": "https://x/a.png", "name": "a.png"}],
            },
            "chat": {
                "id": "c1",
                "name": "Support Channel",
                "description": "Link to the original post: https://example.com/chats/123",
            },
            "extra": {"skip_phone_validate": "Y", "disable_tracker": "Y"},
            "SUCCESS": True,
            "session": {"ID": "301", "CHAT_ID": "1001"},
        }
    ]
    assert body["time"]["operating"] > 0


@pytest.mark.parametrize("missing", ["CONNECTOR", "LINE", "MESSAGES"])
def test_missing_arguments(sandbox: Sandbox, connector: str, missing: str) -> None:
    params = {"CONNECTOR": connector, "LINE": 1, "MESSAGES": [msg(0)]}
    params[missing] = "" if missing != "MESSAGES" else []
    r = call(sandbox, "imconnector.send.messages", **params)
    assert r.status_code == 400
    assert r.json() == {
        "error": "ERROR_ARGUMENT",
        "error_description": f"Argument '{missing}' is null or empty",
    }


@pytest.mark.parametrize(
    ("messages", "text"),
    [
        ("not an array", "The value of an argument 'MESSAGES' must be of type array"),
        ([msg(0), "x"], "The MESSAGES parameter must be an array of messages (arrays)"),
        (
            [{"user": {"id": 1}, "message": {"text": "a"}}],
            "The incorrect structure of a message inside MESSAGES parameter",
        ),
        (
            [{"user": "u1", "message": {"text": "a"}, "chat": {"id": 1}}],
            "The incorrect structure of a message inside MESSAGES parameter",
        ),
    ],
)
def test_malformed_messages(sandbox: Sandbox, connector: str, messages: Any, text: str) -> None:
    r = send(sandbox, messages)
    assert r.status_code == 400
    assert r.json() == {"error": "ERROR_ARGUMENT", "error_description": text}
    assert sandbox.store.counts()["messages"] == 0


def test_not_active_line(sandbox: Sandbox) -> None:
    register(sandbox, line=3)
    for line in (3, 99, "abc"):
        r = send(sandbox, [msg(0)], line=line)
        assert r.status_code == 400
        assert r.json() == {
            "error": "NOT_ACTIVE_LINE",
            "error_description": "The line with this ID is inactive or does not exist",
        }


def test_no_correct_provider_when_not_registered_or_not_active(sandbox: Sandbox) -> None:
    r = send(sandbox, [msg(0)], connector="nobody")
    assert r.status_code == 400 and r.json()["error"] == "IMCONNECTOR_NO_CORRECT_PROVIDER"
    register(sandbox, line=1)
    r = send(sandbox, [msg(0)], line=2)  # registered, but active on line 1 only
    assert r.status_code == 400 and r.json()["error"] == "IMCONNECTOR_NO_CORRECT_PROVIDER"
    assert send(sandbox, [msg(0)], connector="HIST_IMPORT").status_code == 200


def test_per_item_errors_in_input_order_without_session(sandbox: Sandbox, connector: str) -> None:
    no_user = msg(1)
    del no_user["user"]["id"]
    no_chat = msg(2)
    del no_chat["chat"]["id"]
    no_content = msg(3)
    del no_content["message"]["text"]
    r = send(sandbox, [msg(0), no_user, no_chat, no_content, msg(4)])
    result = items(r)
    assert [i["SUCCESS"] for i in result] == [True, False, False, False, True]
    for failed in result[1:4]:
        assert (
            failed["ERRORS"] and all(isinstance(e, str) for e in failed["ERRORS"]) and "session" not in failed
        )
    assert r.json()["result"]["SUCCESS"] is False
    assert list(sandbox.store.messages()["message_id"]) == ["c1-m0", "c1-m4"]


def test_files_only_message_is_accepted(sandbox: Sandbox, connector: str) -> None:
    item = msg(0, m={"files": [{"url": "https://x/f.pdf"}]})
    del item["message"]["text"]
    assert items(send(sandbox, [item]))[0]["SUCCESS"] is True


def test_resent_message_id_is_stored_again(sandbox: Sandbox, connector: str) -> None:
    send(sandbox, [msg(0), msg(1)])
    send(sandbox, [msg(1)])
    dup = sandbox.store.duplicates()
    assert list(dup["message_id"]) == ["c1-m1", "c1-m1"] and set(dup["copies"]) == {2}
    assert sandbox.store.counts()["duplicate_messages"] == 1


def test_chats_grouped_by_user_id_by_default(sandbox: Sandbox, connector: str) -> None:
    result = items(
        send(sandbox, [msg(0, user="a"), msg(1, user="b"), msg(2, user="a"), msg(3, chat="c2", user="a")])
    )
    chats = [i["session"]["CHAT_ID"] for i in result]
    assert chats[0] == chats[2] and len(set(chats)) == 3
    assert [i["user"] for i in result] == ["501", "502", "501", "501"]
    assert set(sandbox.store.chats()["entity_id"]) == {
        "hist_import|1|c1|a",
        "hist_import|1|c1|b",
        "hist_import|1|c2|a",
    }
    assert len(sandbox.store.users()) == 2 and len(sandbox.store.sessions()) == 3
    counts = sandbox.store.chats().set_index("entity_id")["messages"].to_dict()
    assert counts == {"hist_import|1|c1|a": 2, "hist_import|1|c1|b": 1, "hist_import|1|c2|a": 1}


def test_chat_group_groups_by_chat_id(sandbox: Sandbox) -> None:
    register(sandbox, chat_group=True)
    result = items(send(sandbox, [msg(0, user="a"), msg(1, user="b")]))
    assert result[0]["session"] == result[1]["session"]
    assert result[0]["extra"] == {"disable_tracker": "Y"}
    assert list(sandbox.store.chats()["entity_id"]) == ["hist_import|1|c1"]


def test_operator_messages_carry_the_employee_id(sandbox: Sandbox, connector: str) -> None:
    result = items(send(sandbox, [msg(0), msg(1, m={"user_id": 7}), msg(2, m={"user_id": "boss"})]))
    assert [i["SUCCESS"] for i in result] == [True, True, False]
    frame = sandbox.store.messages()
    assert frame["author_id"].isna().iloc[0] and frame["author_id"].iloc[1] == 7
    assert frame["session_id"].nunique() == 1


def test_stored_columns_and_arrival_sequence(sandbox: Sandbox, connector: str) -> None:
    send(sandbox, [msg(0, m={"files": [{"url": "https://x/a.png"}]}), msg(1)])
    send(sandbox, [msg(2, chat="c2", user="u2")])
    frame = sandbox.store.messages()
    assert list(frame["seq"]) == [1, 2, 3]
    row = frame.iloc[0]
    assert (row["line"], row["connector"], row["chat_id"], row["user_id"], row["message_id"]) == (
        1,
        "hist_import",
        "c1",
        "u1",
        "c1-m0",
    )
    assert row["date"] == 1_700_000_000 and row["text"] == "text 0"
    assert json.loads(row["files"]) == [{"url": "https://x/a.png"}]
    assert row["b24_chat_id"] == 1001 and row["session_id"] == 301 and row["received"] > 0
    assert frame["request"].tolist()[0] == frame["request"].tolist()[1] != frame["request"].tolist()[2]
    assert len(sandbox.store.messages(chat_id="c2")) == 1 and len(sandbox.store.messages(line=2)) == 0


def test_unknown_behaviours_are_flagged_not_hidden(sandbox: Sandbox, connector: str) -> None:
    item = msg(
        0,
        u={"name": "A" * 30, "last_name": "R2D2", "gender": "robot", "email": "nope", "phone": "call me"},
        m={"text": "x" * 20_005},
    )
    assert items(send(sandbox, [item]))[0]["SUCCESS"] is True
    user = sandbox.store.users().iloc[0]
    assert user["name"] == "A" * 25 and user["gender"] is None and user["phone"] is None
    assert set(user["flags"].split(",")) == {
        "name-truncated",
        "last_name-invalid-characters",
        "bad-gender",
        "email-dropped",
        "phone-dropped",
    }
    row = sandbox.store.messages().iloc[0]
    assert len(row["text"]) == 20_000 and set(row["flags"].split(",")) == {"text-truncated"}


@pytest.mark.parametrize(
    ("field", "value"), [("id", None), ("id", ""), ("date", None), ("date", ""), ("date", "yesterday")]
)
def test_an_item_without_message_id_or_date_fails(
    sandbox: Sandbox, connector: str, field: str, value: Any
) -> None:
    """Older docs make message.id and message.date required: the sandbox takes the strict reading."""
    bad = msg(1)
    if value is None:
        del bad["message"][field]
    else:
        bad["message"][field] = value
    got = items(send(sandbox, [msg(0), bad, msg(2)]))
    assert [i["SUCCESS"] for i in got] == [True, False, True]
    assert got[1]["ERRORS"] == ["Not all the required data was transferred"] and "session" not in got[1]
    assert len(sandbox.store.messages()) == 2


def test_max_messages_per_call_is_configurable() -> None:
    with Sandbox(time_scale=FAST, max_messages=3) as portal:
        register(portal)
        r = send(portal, [msg(i) for i in range(4)])
        assert r.status_code == 400 and r.json()["error"] == "ERROR_ARGUMENT"
        assert "at most 3" in r.json()["error_description"]
        assert send(portal, [msg(i) for i in range(3)]).status_code == 200


def test_default_max_is_100(sandbox: Sandbox, connector: str) -> None:
    r = send(sandbox, [msg(i) for i in range(101)])
    assert r.status_code == 400
    assert len(items(send(sandbox, [msg(i) for i in range(100)]))) == 100


def test_messages_as_php_array_with_keys(sandbox: Sandbox, connector: str) -> None:
    result = items(send(sandbox, {"0": msg(0), "1": msg(1)}))
    assert [i["message"]["id"] for i in result] == ["c1-m0", "c1-m1"]


def test_processing_cost_is_reported_and_slept(sandbox: Sandbox, connector: str) -> None:
    r = send(sandbox, [msg(i) for i in range(10)])
    t = r.json()["time"]
    assert t["processing"] == pytest.approx(0.7 + 10 * 0.5)
    assert t["duration"] >= t["processing"]
    r2 = send(sandbox, [msg(20)])
    assert r2.json()["time"]["operating"] == pytest.approx(0.7 + 10 * 0.5 + 1.2)
