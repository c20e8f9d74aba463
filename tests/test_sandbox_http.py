"""Sandbox HTTP layer: URLs, encodings (JSON, form, multipart, query), envelopes, auth errors."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
import requests
from conftest import call, msg

from bulkimport.sandbox import Sandbox


# An independent, tiny PHP-bracket encoder (the sandbox's decoder must agree with it, and neither
# shares code with bulkimport's client encoder).
def php_pairs(value: Any, prefix: str | None = None) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        if value is True:
            text = "1"
        elif value is False or value is None:
            text = ""
        else:
            text = str(value)
        assert prefix is not None
        return [(prefix, text)]
    out: list[tuple[str, str]] = []
    for key, item in items:
        out += php_pairs(item, str(key) if prefix is None else f"{prefix}[{key}]")
    return out


def php_query(value: dict[str, Any]) -> str:
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in php_pairs(value))


WRONG_AUTH_TYPE = "Current authorization type is denied for this method Application context required"
TRICKY = "Привет & до свидания = 100% + ещё\nвторая строка; a+b=c&d [b]жирный[/b] 🙂"


def _payload(chat: str) -> dict[str, Any]:
    return {
        "CONNECTOR": "hist_import",
        "LINE": 1,
        "MESSAGES": [
            msg(
                0,
                chat=chat,
                user="ü-1",
                m={"text": TRICKY, "files": [{"url": "https://x/a b.png?q=1&r=2", "name": "a b.png"}]},
            ),
            msg(1, chat=chat, user="ü-1", m={"text": "line1\r\nline2\ttab %20 %zz"}),
        ],
    }


def _stored(portal: Sandbox, chat: str) -> list[tuple[Any, ...]]:
    frame = portal.store.messages(chat_id=chat)
    return [
        (r.user_id, r.message_id.split("-", 1)[1], r.date, r.text, json.loads(r.files))
        for r in frame.itertuples()
    ]


def test_php_bracket_form_query_and_multipart_decode_like_json(sandbox: Sandbox, connector: str) -> None:
    r = call(sandbox, "imconnector.send.messages", **_payload("json"))
    assert r.status_code == 200, r.text
    form = _payload("form")
    form["auth"] = sandbox.access_token
    r = requests.post(
        sandbox.rest_url + "imconnector.send.messages",
        data=php_query(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    query = _payload("query")
    query["auth"] = sandbox.access_token
    r = requests.get(sandbox.rest_url + "imconnector.send.messages.json?" + php_query(query), timeout=30)
    assert r.status_code == 200, r.text
    multi = _payload("multi")
    multi["auth"] = sandbox.access_token
    r = requests.post(
        sandbox.rest_url + "imconnector.send.messages",
        files=[(k, (None, v)) for k, v in php_pairs(multi)],
        timeout=30,
    )
    assert r.status_code == 200, r.text
    expected = _stored(sandbox, "json")
    assert expected[0][3] == TRICKY and expected[0][4] == [
        {"url": "https://x/a b.png?q=1&r=2", "name": "a b.png"}
    ]
    for chat in ("form", "query", "multi"):
        assert _stored(sandbox, chat) == expected, chat


def test_bracket_append_syntax_builds_lists(sandbox: Sandbox) -> None:
    query = "PARAMS[select][]=ID&PARAMS[select][]=ACTIVE&PARAMS[order][ID]=desc&auth=" + sandbox.access_token
    r = requests.get(sandbox.rest_url + "imopenlines.config.list.get?" + query, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == [
        {"ID": "3", "ACTIVE": "N"},
        {"ID": "2", "ACTIVE": "Y"},
        {"ID": "1", "ACTIVE": "Y"},
    ]


def test_success_envelope_has_result_and_full_time_object(sandbox: Sandbox) -> None:
    r = requests.post(sandbox.rest_url + "server.time.json", json={"auth": sandbox.access_token}, timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"result", "time"}
    t = body["time"]
    assert set(t) == {
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating_reset_at",
        "operating",
    }
    assert isinstance(t["start"], float) and t["finish"] >= t["start"]
    assert abs(t["duration"] - (t["finish"] - t["start"])) < 1e-6
    assert t["date_start"].endswith("+00:00") and "T" in t["date_start"]
    assert isinstance(t["operating_reset_at"], int) and isinstance(t["operating"], float)
    assert body["result"].endswith("+00:00")


def test_auth_in_query_string_and_form(sandbox: Sandbox) -> None:
    r = requests.get(sandbox.rest_url + "profile", params={"auth": sandbox.access_token}, timeout=30)
    assert r.status_code == 200 and r.json()["result"]["ID"] == "1"
    r = requests.post(sandbox.rest_url + "profile", data={"auth": sandbox.access_token}, timeout=30)
    assert r.status_code == 200 and r.json()["result"]["ADMIN"] is True


def test_unknown_method_is_404_error_method_not_found(sandbox: Sandbox) -> None:
    r = call(sandbox, "imconnector.no.such.method")
    assert r.status_code == 404
    assert r.json() == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}


def test_missing_auth_is_401_no_auth_found(sandbox: Sandbox) -> None:
    r = requests.post(sandbox.rest_url + "profile", json={}, timeout=30)
    assert r.status_code == 401
    assert r.json() == {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}


def test_unknown_token_is_401_no_auth_found(sandbox: Sandbox) -> None:
    r = call(sandbox, "profile", token="not-a-token")
    assert r.status_code == 401 and r.json()["error"] == "NO_AUTH_FOUND"


def test_invalid_json_body_means_no_parameters(sandbox: Sandbox) -> None:
    r = requests.post(
        sandbox.rest_url + "profile",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 401 and r.json()["error"] == "NO_AUTH_FOUND"


def test_webhook_refused_by_imconnector_methods(sandbox: Sandbox) -> None:
    for url in (sandbox.webhook_url, sandbox.url + "/rest/1/wrongcode/"):
        r = requests.post(url + "imconnector.send.messages", json={}, timeout=30)
        assert r.status_code == 403
        assert r.json() == {
            "error": "WRONG_AUTH_TYPE",
            "error_description": WRONG_AUTH_TYPE,
        }


def test_webhook_serves_imopenlines_and_helpers_but_not_app_info(sandbox: Sandbox) -> None:
    r = requests.post(sandbox.webhook_url + "imopenlines.config.get", json={"CONFIG_ID": 2}, timeout=30)
    assert r.status_code == 200 and r.json()["result"]["LINE_NAME"] == "Support"
    r = requests.post(sandbox.webhook_url + "app.info", json={}, timeout=30)
    assert r.status_code == 400 and r.json()["error"] == "ACCESS_DENIED"
    r = requests.post(sandbox.url + "/rest/1/wrongcode/profile", json={}, timeout=30)
    assert r.status_code == 401 and r.json()["error"] == "NO_AUTH_FOUND"


def test_webhook_batch_refuses_nested_imconnector(sandbox: Sandbox) -> None:
    r = requests.post(
        sandbox.webhook_url + "batch", json={"cmd": {"a": "imconnector.list", "b": "scope"}}, timeout=30
    )
    assert r.status_code == 200
    result = r.json()["result"]
    assert result["result_error"]["a"]["error"] == "WRONG_AUTH_TYPE"
    assert "imopenlines" in result["result"]["b"]


def test_paths_outside_rest_are_html_404(sandbox: Sandbox) -> None:
    r = requests.get(sandbox.url + "/crm/", timeout=30)
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("text/html")


def test_method_names_are_case_insensitive(sandbox: Sandbox) -> None:
    r = call(sandbox, "Server.Time")
    assert r.status_code == 200


def test_helpers_app_info_scope(sandbox: Sandbox) -> None:
    r = call(sandbox, "app.info")
    info = r.json()["result"]
    assert info["CODE"] == sandbox.client_id and info["STATUS"] == "L" and info["INSTALLED"] is True
    r = call(sandbox, "scope")
    assert sorted(r.json()["result"]) == ["disk", "im", "imconnector", "imopenlines"]


def test_keep_alive_session_serves_many_calls(sandbox: Sandbox) -> None:
    with requests.Session() as session:
        for _ in range(20):
            r = session.post(
                sandbox.rest_url + "server.time", json={"auth": sandbox.access_token}, timeout=30
            )
            assert r.status_code == 200
    assert sandbox.stats()["by_status"][200] >= 20


def test_non_loopback_clients_get_https_required(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    import ipaddress

    from bulkimport.sandbox import server

    class Remote:
        is_loopback = False

    class FakeIpaddress:
        @staticmethod
        def ip_address(value: str) -> Remote:
            assert ipaddress.ip_address(value).is_loopback  # the test itself only uses loopback
            return Remote()

    monkeypatch.setattr(server, "ipaddress", FakeIpaddress)
    r = call(sandbox, "profile")
    assert r.status_code == 400
    assert r.json() == {"error": "INVALID_REQUEST", "error_description": "Https required"}


def test_requests_are_served_concurrently() -> None:
    import threading
    import time

    with Sandbox(time_scale=10, cost_per_call=5.0) as portal:  # each call: 0.5 s real
        codes: list[int] = []

        def one() -> None:
            codes.append(call(portal, "server.time").status_code)

        threads = [threading.Thread(target=one) for _ in range(4)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [200] * 4
        assert time.monotonic() - start < 1.5  # serialised it would take 2 s


def test_body_without_a_known_content_type_is_ignored(sandbox: Sandbox) -> None:
    r = requests.post(
        sandbox.rest_url + "profile",
        data=f'{{"auth": "{sandbox.access_token}"}}'.encode(),
        headers={"Content-Type": "text/plain"},
        timeout=30,
    )
    assert r.status_code == 401 and r.json()["error"] == "NO_AUTH_FOUND"
