"""The portal client: addresses, envelopes, classification of every answer, refresh-once, redirects."""

from __future__ import annotations

import socket
import threading
from typing import Any, ClassVar

import pytest

from bulkimport.clock import ManualClock
from bulkimport.errors import (
    AmbiguousError,
    AuthError,
    BlockedError,
    ConfigError,
    FatalError,
    OperatingLimitError,
    RateLimitedError,
    RequestRejectedError,
    RetryableError,
    SetupError,
    TlsError,
)
from bulkimport.portal.answers import classify
from bulkimport.portal.client import Client
from bulkimport.portal.encoding import decode_query
from bulkimport.portal.transport import MockTransport, RawResponse, RequestsTransport
from bulkimport.portal.urls import rest_url

OK = {
    "result": {"ok": True},
    "time": {"duration": 0.1, "operating": 1.0, "operating_reset_at": 1_700_000_600},
}


class Tokens:
    """A token source that counts refreshes."""

    def __init__(self) -> None:
        self.current = "access-1111"
        self.refreshes = 0

    def token(self) -> str:
        return self.current

    def refresh(self, stale: str | None = None) -> str:
        self.refreshes += 1
        self.current = f"access-{self.refreshes + 1}{self.refreshes + 1}{self.refreshes + 1}"
        return self.current


def client(handler, **kw: Any) -> tuple[Client, MockTransport]:
    t = MockTransport(handler)
    return Client("acme.bitrix24.ru", kw.pop("auth", "tok-123456"), clock=ManualClock(), session=t, **kw), t


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("acme.bitrix24.ru", "https://acme.bitrix24.ru/rest/"),
        ("https://ACME.bitrix24.ru/", "https://acme.bitrix24.ru/rest/"),
        ("https://acme.bitrix24.ru/rest/", "https://acme.bitrix24.ru/rest/"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/rest/"),
        ("http://localhost:1/rest/", "http://localhost:1/rest/"),
        ("http://[::1]:9/", "http://[::1]:9/rest/"),
    ],
)
def test_portal_addresses(given, expected):
    assert rest_url(given) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "http://acme.bitrix24.ru",
        "ftp://x",
        "",
        "https://acme.bitrix24.ru/rest/1/abc/",
        "exa mple.bitrix24.ru",
        "https://exa mple.bitrix24.ru",
        "acme<x>.bitrix24.ru",
        "acme.bitrix24.ru:99999",
        "acme.bitrix24.ru:port",
        "https://[::1",
        "acme..bitrix24.ru",
        "user:pw@acme.bitrix24.ru",
    ],
)
def test_bad_portal_addresses(bad):
    with pytest.raises(ConfigError, match="--portal"):
        rest_url(bad)


def test_unicode_portal_host_is_accepted():
    assert rest_url("портал.рф") == "https://портал.рф/rest/"


def test_a_url_requests_refuses_is_a_config_error_not_a_network_fault():
    """requests refuses the URL before connecting: nothing was sent, and retrying cannot help."""
    with pytest.raises(ConfigError, match="--portal"):
        RequestsTransport().post("https://exa mple.bitrix24.ru/rest/x", b"{}", {}, (1, 1))


def test_a_tls_handshake_failure_is_not_sent_and_fatal():
    """https:// to a plain-http port: the handshake fails before the request is written."""
    import http.server

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.path)
            self.send_response(500)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        c = Client(f"https://127.0.0.1:{srv.server_port}", "tok-123456", clock=ManualClock(), timeout=5)
        with pytest.raises(TlsError) as info:
            c.call("x.y")
    finally:
        srv.shutdown()
        srv.server_close()
    assert isinstance(info.value, FatalError) and not isinstance(info.value, AmbiguousError)
    assert info.value.code == "tls-failed" and "nothing was sent" in str(info.value)
    assert hits == []


def test_json_body_auth_user_agent_and_result():
    c, t = client(lambda url, body: MockTransport.json(200, OK))
    assert c.call("imconnector.status", {"LINE": 1}) == {"ok": True}
    url, body = t.requests[0]
    assert url == "https://acme.bitrix24.ru/rest/imconnector.status"
    assert body == {"LINE": 1, "auth": "tok-123456"}


def _raw(
    status: int, payload: Any = None, text: str | None = None, headers: dict[str, str] | None = None
) -> RawResponse:
    if text is not None:
        return MockTransport.text(status, text, headers=headers)
    return MockTransport.json(status, payload, headers=headers)


@pytest.mark.parametrize(
    ("raw", "exc", "code"),
    [
        (
            _raw(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}),
            RateLimitedError,
            None,
        ),
        (_raw(429, {"error": "OPERATION_TIME_LIMIT", "error_description": "x"}), OperatingLimitError, None),
        (_raw(429, text=""), OperatingLimitError, None),
        (_raw(503, {"error": "OVERLOAD_LIMIT", "error_description": "blocked"}), BlockedError, None),
        (_raw(500, {"error": "PORTAL_DELETED"}), BlockedError, None),
        (_raw(403, {"error": "WRONG_AUTH_TYPE"}), AuthError, None),
        (_raw(401, {"error": "NO_AUTH_FOUND"}), AuthError, None),
        (_raw(403, {"error": "insufficient_scope"}), AuthError, None),
        (_raw(403, {"error": "INSUFFICIENT_SCOPE"}), AuthError, None),  # case-insensitive
        (_raw(400, {"error": "invalid_grant"}), AuthError, None),
        (_raw(400, {"error": "NOT_ACTIVE_LINE"}), SetupError, None),
        (_raw(400, {"error": "imconnector_no_correct_provider"}), SetupError, None),
        (_raw(404, {"error": "ERROR_METHOD_NOT_FOUND"}), SetupError, None),
        (_raw(400, {"error": "ERROR_ARGUMENT", "error_description": "MESSAGES"}), RequestRejectedError, None),
        (_raw(500, {"error": "INTERNAL_SERVER_ERROR"}), AmbiguousError, "INTERNAL_SERVER_ERROR"),
        (_raw(500, text=""), AmbiguousError, "bad-answer"),
        (_raw(503, text=""), AmbiguousError, "bad-answer"),
        (_raw(502, text="<html><body>Bad gateway</body></html>"), AmbiguousError, "bad-answer"),
        (_raw(200, text="<html>maintenance</html>"), AmbiguousError, "bad-answer"),
        (_raw(200, text=""), AmbiguousError, "bad-answer"),
        (_raw(200, text='{"resu'), AmbiguousError, "bad-answer"),
        (_raw(200, {"nothing": 1}), AmbiguousError, "bad-answer"),
        (_raw(404, text="not found"), AmbiguousError, "bad-answer"),
    ],
)
def test_classification(raw, exc, code):
    with pytest.raises(exc) as info:
        classify(raw, now=1_700_000_000)
    if code is not None:
        assert info.value.code == code  # type: ignore[attr-defined]


def test_retry_after_from_reset_and_header():
    with pytest.raises(OperatingLimitError) as info:
        classify(
            _raw(429, {"error": "OPERATION_TIME_LIMIT", "time": {"operating_reset_at": 1_700_000_042}}),
            now=1_700_000_000,
        )
    assert info.value.retry_after == pytest.approx(42)
    with pytest.raises(RateLimitedError) as info2:
        classify(_raw(503, {"error": "QUERY_LIMIT_EXCEEDED"}, headers={"retry-after": "3"}), now=0)
    assert info2.value.retry_after == 3


def test_expired_token_refreshes_and_repeats_once():
    tokens = Tokens()

    def handler(url: str, body: dict[str, Any]) -> RawResponse:
        if body["auth"] == "access-1111":
            return MockTransport.json(401, {"error": "expired_token", "error_description": "expired"})
        return MockTransport.json(200, OK)

    c, t = client(handler, auth=tokens)
    assert c.call("x.y") == {"ok": True}
    assert tokens.refreshes == 1 and [b["auth"] for _, b in t.requests] == ["access-1111", "access-222"]


def test_expired_twice_is_auth_error_not_a_loop():
    tokens = Tokens()
    c, t = client(lambda url, body: MockTransport.json(401, {"error": "expired_token"}), auth=tokens)
    with pytest.raises(AuthError):
        c.call("x.y")
    assert tokens.refreshes == 1 and len(t.requests) == 2


def test_static_token_cannot_refresh():
    c, _ = client(lambda url, body: MockTransport.json(401, {"error": "expired_token"}))
    with pytest.raises(AuthError, match="expired"):
        c.call("x.y")


def test_redirect_reposts_and_remembers_new_address():
    def handler(url: str, body: dict[str, Any]) -> RawResponse:
        if url.startswith("https://acme.bitrix24.ru/"):
            return RawResponse(301, {"location": "https://acme.bitrix24.kz/rest/x.y"}, b"")
        return MockTransport.json(200, OK)

    c, t = client(handler)
    assert c.call("x.y", {"A": 1}) == {"ok": True}
    assert [u for u, _ in t.requests] == [
        "https://acme.bitrix24.ru/rest/x.y",
        "https://acme.bitrix24.kz/rest/x.y",
    ]
    assert t.requests[1][1] == {"A": 1, "auth": "tok-123456"}  # the same POST body, not a GET
    assert c.rest_url == "https://acme.bitrix24.kz/rest/"
    c.call("a.b")
    assert t.requests[-1][0] == "https://acme.bitrix24.kz/rest/a.b"


def test_redirect_to_plain_http_is_refused():
    c, _ = client(lambda url, body: RawResponse(302, {"location": "http://evil.example/rest/x.y"}, b""))
    with pytest.raises(ConfigError):
        c.call("x.y")


def test_batch_envelope_and_empty_sections():
    answer = {
        "result": {
            "result": {"a": {"SUCCESS": True}},
            "result_error": {
                "b": {"error": "NOT_ACTIVE_LINE", "error_description": "x"},
                "c": {"error": "OPERATION_TIME_LIMIT", "error_description": "y"},
            },
            "result_total": [],
            "result_next": [],
            "result_time": {"a": {"duration": 0.5, "operating": 3}},
        },
        "time": {"duration": 0.6},
    }

    def handler(url: str, body: dict[str, Any]) -> RawResponse:
        assert url.endswith("/batch") and body["halt"] == 0
        q = decode_query(body["cmd"]["a"].split("?", 1)[1])
        assert q == {"LINE": "1", "MESSAGES": [{"message": {"text": "a&b"}}]}
        return MockTransport.json(200, answer)

    c, _ = client(handler)
    cmds = {
        k: ("imconnector.send.messages", {"LINE": 1, "MESSAGES": [{"message": {"text": "a&b"}}]})
        for k in "abcd"
    }
    res = c.batch(cmds)
    assert res.results == {"a": {"SUCCESS": True}}
    assert isinstance(res.errors["b"], SetupError) and isinstance(res.errors["c"], OperatingLimitError)
    assert res.missing() == ["d"]
    assert res.times["a"]["operating"] == 3
    # all sections empty are [] (PHP): still parsed
    c2, _ = client(
        lambda u, b: MockTransport.json(
            200, {"result": {"result": [], "result_error": [], "result_time": []}, "time": {}}
        )
    )
    assert c2.batch({"a": ("x.y", {})}).results == {}
    with pytest.raises(ValueError, match="50"):
        c.batch({str(i): ("x.y", {}) for i in range(51)})


def test_refused_connection_is_retryable_not_ambiguous():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens: connect is refused before any byte is sent
    c = Client(f"http://127.0.0.1:{port}", "tok-123456", clock=ManualClock(), timeout=2)
    with pytest.raises(RetryableError) as info:
        c.call("x.y")
    assert info.value.code == "connection-failed"


def _server(behaviour: str) -> tuple[int, threading.Event]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    stop = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)  # the request arrived: from here on the outcome is ambiguous
        if behaviour == "drop":
            conn.close()
        else:
            stop.wait(5)
            conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], stop


@pytest.mark.parametrize(("behaviour", "code"), [("drop", "connection-lost"), ("hang", "timeout")])
def test_failures_after_sending_are_ambiguous(behaviour, code):
    port, stop = _server(behaviour)
    c = Client(f"http://127.0.0.1:{port}", "tok-123456", clock=ManualClock(), timeout=(2, 0.5))
    with pytest.raises(AmbiguousError) as info:
        c.call("x.y")
    stop.set()
    assert info.value.code == code  # type: ignore[attr-defined]
    assert "tok-123456" not in str(info.value)


def test_repr_and_errors_hide_token():
    c, _ = client(lambda url, body: MockTransport.json(401, {"error": "NO_AUTH_FOUND"}))
    assert "tok-123456" not in repr(c)
    with pytest.raises(AuthError) as info:
        c.call("x.y")
    assert "tok-123456" not in str(info.value)


def test_consecutive_503_back_off_grows_through_the_client():
    state = {"n": 0}

    def handler(url: str, body: dict[str, Any]) -> RawResponse:
        state["n"] += 1
        if state["n"] <= 4:
            return MockTransport.json(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many"})
        return MockTransport.json(200, OK)

    c, _ = client(handler)
    clock = c.clock
    assert c.call("x.y", retries=5) == {"ok": True}
    assert isinstance(clock, ManualClock)
    # back-off 1, 2, 4, 8 s (each at least the bucket's own re-sync wait of 1.5 s)
    assert sum(clock.slept) >= 1.5 + 2 + 4 + 8 - 1e-6
    assert c.governor.refusals == 4
    state["n"] = 0
    c.governor._paused_until = 0.0
    c.call("x.y", retries=5)  # after a success the back-off starts from 1 s again
    assert c.governor._backoff == 0.0


def test_idle_keep_alive_connections_are_dropped_before_reuse(monkeypatch):
    from bulkimport.portal import transport as transport_module

    closed: list[int] = []

    class Session:
        def post(self, url: str, **kw: Any) -> Any:
            class R:
                status_code = 200
                headers: ClassVar[dict[str, str]] = {}
                content = b'{"result": 1}'

            return R()

        def close(self) -> None:
            closed.append(1)

    now = [1000.0]
    monkeypatch.setattr(transport_module._time, "monotonic", lambda: now[0])
    t = RequestsTransport(Session(), idle_reset=20.0)  # type: ignore[arg-type]
    t.post("http://127.0.0.1/rest/x", b"{}", {}, (1, 1))
    now[0] += 5
    t.post("http://127.0.0.1/rest/x", b"{}", {}, (1, 1))
    assert closed == []
    now[0] += 60  # a long operating-budget wait: the server has likely closed the socket
    t.post("http://127.0.0.1/rest/x", b"{}", {}, (1, 1))
    assert closed == [1]


def test_429_with_reset_already_past_does_not_cause_a_burst():
    """A 429 whose integer operating_reset_at is already past: the retry waits, never bursts."""
    clock = ManualClock(1_700_000_000.5)
    unblock = clock.now() + 1.0
    calls: list[float] = []

    def handler(url: str, body: dict[str, Any]) -> RawResponse:
        calls.append(clock.now())
        if clock.now() < unblock:
            return MockTransport.json(
                429,
                {"error": "OPERATION_TIME_LIMIT", "error_description": "x",
                 "time": {"operating_reset_at": int(clock.now())}},
            )
        return MockTransport.json(200, {"result": True, "time": {}})

    c = Client("acme.bitrix24.ru", "tok-123456", clock=clock, session=MockTransport(handler))
    assert c.call("imconnector.send.messages", {}, retries=5) is True
    assert len(calls) == 2 and calls[1] - calls[0] >= 1.0


def test_own_session_reads_the_environment_once_per_origin(monkeypatch):
    """Proxies and the CA bundle come from the environment as requests would take them, read
    once per origin (requests re-reads them on every call); ~/.netrc is never consulted. A
    session passed in is the caller's and is used as it is."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/corp-ca.pem")
    t = RequestsTransport()
    assert t.session.trust_env is False
    calls: list[dict[str, Any]] = []

    class R:
        status_code = 200
        headers: ClassVar[dict[str, str]] = {}
        content = b'{"result": 1}'

    class Recording:
        def post(self, url: str, **kw: Any) -> Any:
            calls.append(kw)
            return R()

        def close(self) -> None:
            pass

    asked: list[str] = []
    merge = t._environment.merge_environment_settings  # type: ignore[union-attr]

    def counting(url: str, *a: Any) -> Any:
        asked.append(url)
        return merge(url, *a)

    monkeypatch.setattr(t._environment, "merge_environment_settings", counting)
    t.session = Recording()  # type: ignore[assignment]
    for _ in range(3):
        t.post("https://acme.bitrix24.ru/rest/batch", b"{}", {}, (1, 1))
    t.post("http://127.0.0.1:8080/rest/batch", b"{}", {}, (1, 1))
    assert asked == ["https://acme.bitrix24.ru/rest/batch", "http://127.0.0.1:8080/rest/batch"]
    assert calls[0]["proxies"]["https"] == "http://proxy.corp.example:3128"
    assert calls[0]["verify"] == "/etc/corp-ca.pem" and calls[-1]["verify"] == "/etc/corp-ca.pem"
    assert "https" not in calls[-1]["proxies"]  # NO_PROXY

    # NO_PROXY names an internationalised host in its xn-- form, as requests compares it
    monkeypatch.setenv("NO_PROXY", "xn--80aswg.xn--p1ai")
    idn = RequestsTransport()
    assert "https" not in idn._environment_for("https://сайт.рф/rest/batch")["proxies"]
    assert idn._environment_for("https://acme.bitrix24.ru/rest/batch")["proxies"]["https"]

    given = RequestsTransport(Recording())  # type: ignore[arg-type]
    calls.clear()
    given.post("https://acme.bitrix24.ru/rest/batch", b"{}", {}, (1, 1))
    assert "proxies" not in calls[0] and "verify" not in calls[0]


def test_a_lazy_sequence_in_a_single_call_is_sent_as_a_json_list():
    """call_full's JSON body takes the sequences that encode themselves in a batch (the plan's
    lazy views) as the list they stand for; any other object still fails loudly."""
    from collections import UserString
    from collections.abc import Sequence as AbcSequence

    class Lazy(AbcSequence[Any]):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: Any) -> Any:
            if not 0 <= i < 2:
                raise IndexError(i)
            return {"n": i}

        def php_query_pairs(self, prefix: str, out: list[str], memo: Any) -> None:
            raise AssertionError("a single call is JSON, not a query string")

    sent: list[dict[str, Any]] = []

    def handler(url: str, body: dict[str, Any]) -> RawResponse:
        sent.append(body)
        return MockTransport.json(200, {"result": True, "time": {}})

    c = Client("acme.bitrix24.ru", "tok-123456", session=MockTransport(handler))
    c.call("imconnector.send.messages", {"MESSAGES": Lazy()})
    assert sent[0]["MESSAGES"] == [{"n": 0}, {"n": 1}]
    for odd in (object(), UserString("abc")):
        with pytest.raises(TypeError, match="not JSON serializable"):
            c.call("imconnector.send.messages", {"MESSAGES": odd})
