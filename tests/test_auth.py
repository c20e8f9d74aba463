"""OAuth: sources and precedence, refresh (reactive, proactive, one at a time), the token file, secrets."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bulkimport.clock import ManualClock
from bulkimport.errors import AuthError, ConfigError
from bulkimport.portal.auth import Auth, Tokens, authorize_url, default_token_file, exchange_code

SECRET = "client-secret-XYZ123"


class FakeOAuth:
    """A requests-like session answering the OAuth token endpoint; rotates refresh tokens."""

    def __init__(self, clock: ManualClock, valid_refresh: str = "refresh-0000") -> None:
        self.clock = clock
        self.valid = {valid_refresh}
        self.calls: list[dict[str, str]] = []
        self.n = 0
        self.delay = 0.0

    def get(self, url: str, **kw: Any) -> Any:
        q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        self.calls.append(q)
        if self.delay:
            time.sleep(self.delay)
        if q.get("client_secret") != SECRET:
            return _Resp(401, {"error": "invalid_client", "error_description": "bad client"})
        token = q.get("refresh_token") or q.get("code")
        if token not in self.valid:
            return _Resp(400, {"error": "invalid_grant", "error_description": "Invalid refresh token"})
        self.valid.discard(token)
        self.n += 1
        new_refresh = f"refresh-{self.n:04d}"
        self.valid.add(new_refresh)
        return _Resp(
            200,
            {
                "access_token": f"access-{self.n:04d}",
                "refresh_token": new_refresh,
                "expires": int(self.clock.now() + 3600),
                "expires_in": 3600,
                "domain": "acme.bitrix24.ru",
                "client_endpoint": "https://acme.bitrix24.ru/rest/",
            },
        )


class _Resp:
    def __init__(self, status: int, payload: Any) -> None:
        self.status_code = status
        self._payload = payload

    def json(self) -> Any:
        return self._payload


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {
        "BITRIX24_CLIENT_ID": "app.123",
        "BITRIX24_CLIENT_SECRET": SECRET,
        "BITRIX24_ACCESS_TOKEN": "access-env0",
        "BITRIX24_REFRESH_TOKEN": "refresh-0000",
        "BITRIX24_TOKEN_FILE": str(tmp_path / "tokens.json"),
    }


def test_missing_credentials(tmp_path):
    with pytest.raises(ConfigError, match="bulkimport auth"):
        Auth(env={"BITRIX24_TOKEN_FILE": str(tmp_path / "none.json")})


def test_default_token_file_location(tmp_path):
    assert default_token_file({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "bulkimport" / "tokens.json"
    assert default_token_file({"BITRIX24_TOKEN_FILE": "/x/t.json"}).as_posix() == "/x/t.json"


def test_refresh_rotates_and_writes_file_0600_before_use(env, tmp_path):
    clock = ManualClock()
    oauth = FakeOAuth(clock)
    auth = Auth(env=env, clock=clock, session=oauth)  # type: ignore[arg-type]
    assert auth.token() == "access-env0"
    new = auth.refresh(stale="access-env0")
    assert new == "access-0001"
    path = tmp_path / "tokens.json"
    data = json.loads(path.read_text())
    assert data["access_token"] == "access-0001" and data["refresh_token"] == "refresh-0001"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tokens-")]  # temp file renamed
    # a caller holding the old token does not cause a second refresh
    assert auth.refresh(stale="access-env0") == "access-0001" and oauth.n == 1
    # the secret went to the OAuth server only
    assert oauth.calls[0]["client_secret"] == SECRET and oauth.calls[0]["grant_type"] == "refresh_token"


def test_newer_token_file_beats_stale_environment(env):
    clock = ManualClock()
    oauth = FakeOAuth(clock)
    Auth(env=env, clock=clock, session=oauth).refresh()  # type: ignore[arg-type]
    again = Auth(env=env, clock=clock, session=oauth)  # type: ignore[arg-type]  # env still has the dead pair
    assert again.token() == "access-0001" and "token file" in again.source
    assert again.refresh() == "access-0002"  # refresh-0001 is the live one
    # fresh tokens the file has never seen (a new `bulkimport auth` pasted in) beat the file
    oauth.valid.add("refresh-fresh")
    fresh = Auth(
        env={**env, "BITRIX24_ACCESS_TOKEN": "access-fresh", "BITRIX24_REFRESH_TOKEN": "refresh-fresh"},
        clock=clock,
        session=oauth,
    )  # type: ignore[arg-type]
    assert fresh.token() == "access-fresh" and fresh.source == "arguments/environment"


def test_token_file_of_another_client_is_ignored(env, tmp_path):
    clock = ManualClock()
    Auth(env=env, clock=clock, session=FakeOAuth(clock)).refresh()  # type: ignore[arg-type]
    other = Auth(env={**env, "BITRIX24_CLIENT_ID": "app.999"}, clock=clock)
    assert other.token() == "access-env0"


def test_proactive_refresh_shortly_before_expiry(env):
    clock = ManualClock()
    oauth = FakeOAuth(clock)
    auth = Auth(env=env, clock=clock, session=oauth)  # type: ignore[arg-type]
    auth.refresh()
    assert auth.token() == "access-0001"
    clock.advance(3600 - 200)
    assert auth.token() == "access-0001"  # not yet: 200 s left, margin 120 s
    clock.advance(100)
    assert auth.token() == "access-0002" and oauth.n == 2


def test_one_refresh_at_a_time(env):
    clock = ManualClock()
    oauth = FakeOAuth(clock)
    oauth.delay = 0.05
    auth = Auth(env=env, clock=clock, session=oauth)  # type: ignore[arg-type]
    got: list[str] = []
    threads = [
        threading.Thread(target=lambda: got.append(auth.refresh(stale="access-env0"))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert oauth.n == 1 and set(got) == {"access-0001"}


def test_invalid_grant_says_how_to_reauthorise(env):
    clock = ManualClock()
    oauth = FakeOAuth(clock, valid_refresh="something-else")
    auth = Auth(env=env, clock=clock, session=oauth)  # type: ignore[arg-type]
    with pytest.raises(AuthError, match="bulkimport auth") as info:
        auth.refresh()
    text = str(info.value)
    assert SECRET not in text and "refresh-0000" not in text


def test_cannot_refresh_without_client_credentials(tmp_path):
    auth = Auth(
        env={"BITRIX24_ACCESS_TOKEN": "access-only1", "BITRIX24_TOKEN_FILE": str(tmp_path / "t.json")}
    )
    with pytest.raises(AuthError, match="BITRIX24_REFRESH_TOKEN"):
        auth.refresh()


def test_reprs_hide_secrets(env):
    clock = ManualClock()
    auth = Auth(env=env, clock=clock, session=FakeOAuth(clock))  # type: ignore[arg-type]
    for text in (repr(auth), str(auth), repr(Tokens("access-xyz123", "refresh-xyz123"))):
        assert SECRET not in text and "access-env0" not in text and "refresh-0000" not in text
        assert "xyz123" not in text


def test_authorize_url_and_exchange_code(tmp_path):
    assert (
        authorize_url("acme.bitrix24.ru", "app.1")
        == "https://acme.bitrix24.ru/oauth/authorize/?client_id=app.1"
    )
    assert authorize_url("http://127.0.0.1:5", "a", state="s").startswith(
        "http://127.0.0.1:5/oauth/authorize/?"
    )
    calls: list[dict[str, list[str]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            q = parse_qs(urlsplit(self.path).query)
            calls.append(q)
            body = json.dumps(
                {"access_token": "access-first1", "refresh_token": "refresh-first1", "expires_in": 3600}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        path = tmp_path / "t.json"
        tokens = exchange_code(
            "code-1234567", "app.1", SECRET, f"http://127.0.0.1:{srv.server_port}/oauth/token/", path
        )
    finally:
        srv.shutdown()
    assert tokens.access_token == "access-first1"
    assert calls[0]["grant_type"] == ["authorization_code"] and calls[0]["code"] == ["code-1234567"]
    assert json.loads(path.read_text())["refresh_token"] == "refresh-first1"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_oauth_url_must_be_https(env):
    # refused when the credentials are loaded, before any portal call (not at the first refresh)
    with pytest.raises(ConfigError, match="https"):
        Auth(env={**env, "BITRIX24_OAUTH_URL": "http://oauth.example/token/"}, clock=ManualClock())


def test_urllib3_debug_lines_are_scrubbed(env, caplog):
    """urllib3 logs request URLs at DEBUG; the OAuth URL carries the secret in its query."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"error": "invalid_grant"}).encode()
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    caplog.set_level(logging.DEBUG)
    try:
        auth = Auth(
            env={**env, "BITRIX24_OAUTH_URL": f"http://127.0.0.1:{srv.server_port}/oauth/token/"},
            clock=ManualClock(),
        )
        with pytest.raises(AuthError):
            auth.refresh()
    finally:
        srv.shutdown()
    assert "127.0.0.1" in caplog.text  # urllib3 did log the request …
    assert SECRET not in caplog.text and "refresh-0000" not in caplog.text  # … without secrets


def test_unwritable_token_file_keeps_the_new_pair_and_says_so(env, caplog, monkeypatch):
    import bulkimport.portal.auth as auth_module

    def disk_full(*a: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(auth_module, "write_token_file", disk_full)
    clock = ManualClock()
    auth = Auth(env=env, clock=clock, session=FakeOAuth(clock))  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        assert auth.refresh() == "access-0001"
    assert "bulkimport auth" in caplog.text and "refresh-0001" not in caplog.text
