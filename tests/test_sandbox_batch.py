"""batch in the sandbox: order, halt, empty sections, length limit, nesting, per-method accounting."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
import requests
from conftest import FAST, call, msg, register

from bulkimport.sandbox import Sandbox


def php_query(value: Any, prefix: str = "") -> list[str]:
    """Independent PHP-bracket encoder for the test's batch commands."""
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        out: list[str] = []
        for key, item in items:
            out += php_query(item, f"{prefix}[{key}]" if prefix else str(key))
        return out
    return [f"{quote(prefix, safe='[]')}={quote(str(value), safe='')}"]


def command(method: str, **params: Any) -> str:
    return method + "?" + "&".join(php_query(params))


def batch(portal: Sandbox, cmd: Any, halt: int = 0) -> requests.Response:
    return call(portal, "batch", cmd=cmd, halt=halt)


def test_batch_runs_commands_in_order_with_result_time(sandbox: Sandbox, connector: str) -> None:
    cmd = {
        f"k{i}": command("imconnector.send.messages", CONNECTOR=connector, LINE=1, MESSAGES=[msg(i)])
        for i in range(5)
    }
    r = batch(sandbox, cmd)
    assert r.status_code == 200
    body = r.json()
    result = body["result"]
    assert set(result) == {"result", "result_error", "result_total", "result_next", "result_time"}
    assert list(result["result"]) == [f"k{i}" for i in range(5)]
    assert result["result_error"] == [] and result["result_total"] == [] and result["result_next"] == []
    for key in result["result"]:
        assert result["result"][key]["DATA"]["RESULT"][0]["SUCCESS"] is True
        t = result["result_time"][key]
        assert {"start", "finish", "duration", "processing", "date_start", "date_finish"} <= set(t)
        assert t["processing"] == pytest.approx(1.2)
    starts = [result["result_time"][f"k{i}"]["start"] for i in range(5)]
    assert starts == sorted(starts)
    assert list(sandbox.store.messages()["message_id"]) == [f"c1-m{i}" for i in range(5)]
    assert body["time"]["processing"] == pytest.approx(5 * 1.2)


def test_list_cmd_gives_list_sections(sandbox: Sandbox) -> None:
    r = batch(sandbox, ["server.time", "scope"])
    result = r.json()["result"]
    assert isinstance(result["result"], list) and len(result["result"]) == 2
    assert isinstance(result["result_time"], list)


def test_errors_without_halt_are_per_key(sandbox: Sandbox, connector: str) -> None:
    cmd = {
        "a": command("imconnector.send.messages", CONNECTOR=connector, LINE=3, MESSAGES=[msg(0)]),
        "b": "server.time",
        "c": "no.such.method",
        "d": command("imconnector.activate", CONNECTOR=connector, LINE=1),
    }
    result = batch(sandbox, cmd).json()["result"]
    assert list(result["result"]) == ["b"]
    assert result["result_error"] == {
        "a": {
            "error": "NOT_ACTIVE_LINE",
            "error_description": "The line with this ID is inactive or does not exist",
        },
        "c": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"},
        "d": {"error": "ERROR_ARGUMENT", "error_description": "Argument 'ACTIVE' is null or empty"},
    }
    assert list(result["result_time"]) == ["b"]


def test_halt_stops_at_the_first_error(sandbox: Sandbox, connector: str) -> None:
    cmd = {
        "a": command("imconnector.send.messages", CONNECTOR=connector, LINE=1, MESSAGES=[msg(0)]),
        "b": command("imconnector.send.messages", CONNECTOR=connector, LINE=3, MESSAGES=[msg(1)]),
        "c": command("imconnector.send.messages", CONNECTOR=connector, LINE=1, MESSAGES=[msg(2)]),
    }
    result = batch(sandbox, cmd, halt=1).json()["result"]
    assert list(result["result"]) == ["a"] and list(result["result_error"]) == ["b"]
    assert list(sandbox.store.messages()["message_id"]) == ["c1-m0"]


def test_all_failed_gives_empty_result_as_list(sandbox: Sandbox) -> None:
    result = batch(sandbox, {"a": "nope.a", "b": "nope.b"}).json()["result"]
    assert result["result"] == [] and result["result_time"] == [] and len(result["result_error"]) == 2


def test_51_commands_are_refused_50_accepted(sandbox: Sandbox) -> None:
    r = batch(sandbox, {f"k{i}": "server.time" for i in range(51)})
    assert r.status_code == 400
    assert r.json() == {
        "error": "ERROR_BATCH_LENGTH_EXCEEDED",
        "error_description": "Max batch length exceeded",
    }
    r = batch(sandbox, {f"k{i}": "server.time" for i in range(50)})
    assert r.status_code == 200 and len(r.json()["result"]["result"]) == 50


def test_nested_batch_is_not_allowed(sandbox: Sandbox) -> None:
    result = batch(sandbox, {"inner": "batch?cmd[x]=server.time", "ok": "scope"}).json()["result"]
    assert result["result_error"]["inner"] == {
        "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
        "error_description": "Method is not allowed for batch usage",
    }
    assert "ok" in result["result"]


def test_batch_form_encoded_with_double_encoding(sandbox: Sandbox, connector: str) -> None:
    inner = command(
        "imconnector.send.messages", CONNECTOR=connector, LINE=1, MESSAGES=[msg(0, m={"text": "a&b=c %"})]
    )
    data = f"halt=0&cmd[x]={quote(inner, safe='')}&auth={sandbox.access_token}"
    r = requests.post(
        sandbox.rest_url + "batch",
        data=data,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert r.status_code == 200
    assert r.json()["result"]["result"]["x"]["SUCCESS"] is True
    assert sandbox.store.messages().iloc[0]["text"] == "a&b=c %"


def test_batch_counts_once_against_the_bucket() -> None:
    with Sandbox(time_scale=FAST, bucket_size=3, drain_rate=0.0001) as portal:
        r = batch(portal, {f"k{i}": "server.time" for i in range(20)})
        assert r.status_code == 200
        assert call(portal, "server.time").status_code == 200
        assert call(portal, "server.time").status_code == 200
        assert call(portal, "server.time").status_code == 503


def test_nested_calls_count_against_their_own_method() -> None:
    with Sandbox(time_scale=FAST, cost_per_call=1.0, cost_per_message=2.0, operating_limit=10.0) as portal:
        register(portal)
        cmd = {
            f"k{i}": command("imconnector.send.messages", CONNECTOR="hist_import", LINE=1, MESSAGES=[msg(i)])
            for i in range(5)
        }
        r = batch(portal, cmd)
        result = r.json()["result"]
        # 3 s per call: k0..k3 run (12 s > 10 after k3), k4 is refused with 429's code
        assert list(result["result"]) == ["k0", "k1", "k2", "k3"]
        assert result["result_error"]["k4"]["error"] == "OPERATION_TIME_LIMIT"
        assert result["result_time"]["k3"]["operating"] == pytest.approx(12.0)
        # the outer batch is not accounted; other methods still run
        assert r.json()["time"]["operating"] == 0
        assert call(portal, "server.time").status_code == 200
        assert (
            call(
                portal, "imconnector.send.messages", CONNECTOR="hist_import", LINE=1, MESSAGES=[msg(9)]
            ).status_code
            == 429
        )


def test_batch_without_cmd_has_empty_sections(sandbox: Sandbox) -> None:
    r = call(sandbox, "batch")
    assert r.status_code == 200
    assert r.json()["result"] == {
        "result": [],
        "result_error": [],
        "result_total": [],
        "result_next": [],
        "result_time": [],
    }
