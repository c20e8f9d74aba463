"""Sandbox fault injection: every kind observable with plain requests, and whether the method ran."""

from __future__ import annotations

import time

import pytest
import requests
from conftest import FAST, call, msg, register

from bulkimport.sandbox import Sandbox
from bulkimport.sandbox.faults import parse_spec

SEND = "imconnector.send.messages"


def send(portal: Sandbox, i: int = 0, timeout: float = 30) -> requests.Response:
    body = {"CONNECTOR": "hist_import", "LINE": 1, "MESSAGES": [msg(i)], "auth": portal.access_token}
    return requests.post(portal.rest_url + SEND, json=body, timeout=timeout)


def stored(portal: Sandbox) -> int:
    return len(portal.store.messages())


@pytest.mark.parametrize(
    ("kind", "status", "error"),
    [
        ("503", 503, "QUERY_LIMIT_EXCEEDED"),
        ("429", 429, "OPERATION_TIME_LIMIT"),
        ("500", 500, "INTERNAL_SERVER_ERROR"),
    ],
)
def test_json_error_faults_do_not_run_the_method(
    sandbox: Sandbox, connector: str, kind: str, status: int, error: str
) -> None:
    sandbox.faults.add(kind, count=1)
    r = send(sandbox)
    assert r.status_code == status and r.json()["error"] == error and r.json()["error_description"]
    assert stored(sandbox) == 0
    assert send(sandbox).status_code == 200 and stored(sandbox) == 1


def test_503_bare_has_no_body(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("503-bare", count=1)
    r = send(sandbox)
    assert r.status_code == 503 and r.content == b""
    assert stored(sandbox) == 0


def test_500_bare_is_not_json(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("500-bare", count=1)
    r = send(sandbox)
    assert r.status_code == 500
    with pytest.raises(ValueError):  # noqa: PT011 - requests' JSONDecodeError is a ValueError
        r.json()
    assert stored(sandbox) == 0


def test_500_after_commits_then_fails(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("500", count=1, after=True)
    assert send(sandbox).status_code == 500
    assert stored(sandbox) == 1


def test_html_is_a_proxy_page_with_502(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("html", count=1)
    r = send(sandbox)
    assert r.status_code == 502 and r.headers["Content-Type"].startswith("text/html") and "<html>" in r.text
    assert stored(sandbox) == 0


def test_empty_is_200_without_body_and_committed(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("empty", count=1)
    r = send(sandbox)
    assert r.status_code == 200 and r.content == b""
    assert stored(sandbox) == 1


def test_drop_before_closes_without_answer_nothing_committed(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("drop-before", count=1)
    with pytest.raises(requests.ConnectionError):
        send(sandbox)
    assert stored(sandbox) == 0
    assert sandbox.stats()["by_status"]["dropped"] == 1


def test_drop_after_commits_then_closes_the_ambiguous_case(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("drop-after", count=1)
    with pytest.raises(requests.ConnectionError):
        send(sandbox)
    assert stored(sandbox) == 1
    send(sandbox)  # a blind retry duplicates
    assert len(sandbox.store.duplicates()) == 2


def test_slow_holds_the_answer_for_virtual_seconds(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("slow", count=1, delay=0.3 * FAST)  # 0.3 s real
    start = time.monotonic()
    assert send(sandbox).status_code == 200
    assert time.monotonic() - start >= 0.3 - 0.01


def test_slow_past_the_client_timeout_is_ambiguous(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("slow", count=1, delay=1.5 * FAST)
    with pytest.raises(requests.Timeout):
        send(sandbox, timeout=0.3)
    assert stored(sandbox) == 1


def test_expire_token_gives_401_expired_token(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("expire-token", count=1)
    r = send(sandbox)
    assert r.status_code == 401 and r.json()["error"] == "expired_token"
    assert call(sandbox, "profile").status_code == 401  # the token really expired
    fresh = requests.get(
        sandbox.oauth_url,
        params={
            "grant_type": "refresh_token",
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "refresh_token": sandbox.refresh_token,
        },
        timeout=30,
    ).json()
    assert call(sandbox, "profile", token=fresh["access_token"]).status_code == 200


def test_methods_filter_and_count(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("503", count=2, methods=[SEND])
    assert call(sandbox, "server.time").status_code == 200
    assert [send(sandbox, i).status_code for i in range(3)] == [503, 503, 200]


def test_batch_is_a_method_name_for_faults(sandbox: Sandbox) -> None:
    sandbox.faults.add("500", methods="batch")
    assert call(sandbox, "batch", cmd={"a": "scope"}).status_code == 500
    assert call(sandbox, "scope").status_code == 200


def test_oauth_token_endpoint_only_when_named(sandbox: Sandbox) -> None:
    sandbox.faults.add("html")
    params = {
        "grant_type": "refresh_token",
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "refresh_token": sandbox.refresh_token,
    }
    assert requests.get(sandbox.oauth_url, params=params, timeout=30).status_code == 200
    sandbox.faults.clear()
    sandbox.faults.add("503-bare", methods=["oauth.token"])
    assert requests.get(sandbox.oauth_url, params=params, timeout=30).status_code == 503


def test_rate_is_seeded_and_reproducible() -> None:
    def run(seed: int) -> list[int]:
        with Sandbox(time_scale=FAST, seed=seed) as portal:
            portal.faults.add("503", rate=0.5)
            return [call(portal, "scope").status_code for _ in range(30)]

    first = run(7)
    assert first == run(7)
    assert 5 < first.count(503) < 25


def test_clear_disarms(sandbox: Sandbox) -> None:
    sandbox.faults.add("503")
    sandbox.faults.clear()
    assert call(sandbox, "scope").status_code == 200


def test_stats_count_fault_kinds(sandbox: Sandbox) -> None:
    sandbox.faults.add("503", count=3)
    for _ in range(4):
        call(sandbox, "scope")
    stats = sandbox.stats()
    assert stats["faults"] == {"503": 3} and stats["by_status"][503] == 3 and stats["requests"] == 4


def test_unknown_kind_and_spec_parsing() -> None:
    with Sandbox(time_scale=FAST) as portal, pytest.raises(ValueError, match="unknown fault kind"):
        portal.faults.add("teapot")
    assert parse_spec("drop-after:0.5:3@imconnector.send.messages,batch") == {
        "kind": "drop-after",
        "rate": 0.5,
        "count": 3,
        "methods": ["imconnector.send.messages", "batch"],
    }
    assert parse_spec("503") == {"kind": "503", "rate": 1.0, "count": None, "methods": None}


def test_faults_apply_with_registration_flow() -> None:
    with Sandbox(time_scale=FAST) as portal:
        portal.faults.add("drop-after", count=1, methods=["imconnector.register"])
        with pytest.raises(requests.ConnectionError):
            register(portal)
        assert list(portal.store.connectors()["connector"]) == ["hist_import"]


def test_overload_is_503_overload_limit(sandbox: Sandbox) -> None:
    sandbox.faults.add("overload", count=1)
    r = call(sandbox, "scope")
    assert r.status_code == 503
    assert r.json() == {"error": "OVERLOAD_LIMIT", "error_description": "REST API is blocked due to overload"}


def test_redirect_must_be_followed_with_the_same_post(sandbox: Sandbox, connector: str) -> None:
    sandbox.faults.add("redirect", count=1, methods=[SEND])
    body = {"CONNECTOR": "hist_import", "LINE": 1, "MESSAGES": [msg(0)], "auth": sandbox.access_token}
    r = requests.post(sandbox.rest_url + SEND, json=body, allow_redirects=False, timeout=30)
    assert r.status_code == 302 and r.headers["Location"] == sandbox.rest_url + SEND
    assert stored(sandbox) == 0
    r = requests.post(r.headers["Location"], json=body, timeout=30)
    assert r.status_code == 200 and stored(sandbox) == 1


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("PORTAL_DELETED", 500),
        ("ERROR_UNEXPECTED_ANSWER", 500),
        ("insufficient_scope", 403),
        ("INVALID_CREDENTIALS", 403),
        ("user_access_error", 403),
        ("ACCESS_DENIED", 403),
        ("IMCONNECTOR_NOT_SPECIFIED_CORRECT_COMMAND", 400),
        ("NO_AUTH_FOUND", 401),
    ],
)
def test_every_system_error_code_is_a_fault_kind(
    sandbox: Sandbox, connector: str, code: str, status: int
) -> None:
    sandbox.faults.add(code, count=1)
    r = send(sandbox)
    assert r.status_code == status and r.json()["error"] == code and r.json()["error_description"]
    assert stored(sandbox) == 0


def test_oauth_server_errors_as_faults(sandbox: Sandbox) -> None:
    sandbox.faults.add("PAYMENT_REQUIRED", methods=["oauth.token"], count=1)
    params = {
        "grant_type": "refresh_token",
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "refresh_token": sandbox.refresh_token,
    }
    r = requests.get(sandbox.oauth_url, params=params, timeout=30)
    assert r.json() == {"error": "PAYMENT_REQUIRED", "error_description": "Payment required"}
    assert requests.get(sandbox.oauth_url, params=params, timeout=30).status_code == 200
