"""The sandbox Bitrix24 portal: a local HTTP server that behaves like a cloud portal for bulkimport.

::

    with Sandbox(time_scale=100) as portal:
        requests.post(portal.rest_url + "imconnector.register", json={..., "auth": portal.access_token})
        portal.store.messages()          # what the portal received, as a DataFrame

It is an independent implementation of the reference (/work/shared/reference/bitrix24.md): it shares
no code with bulkimport's client. See docs/sandbox.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from typing import Any

from . import disk, openlines  # noqa: F401  (they register their REST methods)
from .faults import Faults
from .fetch import FETCH_TIMEOUT
from .limits import LeakyBucket, OperatingLedger, VirtualClock
from .portal import DEFAULT_LINES, SCOPES, Config, Portal
from .server import SandboxServer, Stats
from .store import Store

__all__ = ["Sandbox"]

#: Simulated server time per call and per message (virtual seconds). 0.7 + 0.5 = 1.2 s for a
#: one-message imconnector.send.messages, the figure of the documentation's example; a 50-message
#: call costs 25.7 s, and the 480 s budget allows about 930 messages per 10 minutes.
COST_PER_CALL = 0.7
COST_PER_MESSAGE = 0.5


def _lines(lines: Iterable[Any] | None) -> list[tuple[int, str, str]]:
    """Open lines from dicts ``{"id", "name", "active"}`` (or ``ID/LINE_NAME/ACTIVE``) or tuples."""
    if lines is None:
        return list(DEFAULT_LINES)
    out = []
    for line in lines:
        if isinstance(line, dict):
            keys = {str(k).lower(): v for k, v in line.items()}
            line_id = keys["id"]
            name = keys.get("name", keys.get("line_name", f"Line {line_id}"))
            active = keys.get("active", "Y")
        else:
            line_id, name, active = (*tuple(line), "Y")[:3]
        flag = active if active in ("Y", "N") else ("Y" if active else "N")
        out.append((int(line_id), str(name), flag))
    return out


class Sandbox:
    """A local Bitrix24 portal: REST, OAuth server, limits, faults and an inspectable store."""

    def __init__(self, db: str | os.PathLike[str] | None = None, host: str = "127.0.0.1", port: int = 0,
                 time_scale: float = 1.0, token_lifetime: float = 3600, lines: Iterable[Any] | None = None,
                 bucket_size: float = 50, drain_rate: float = 2.0, operating_limit: float = 480.0,
                 operating_window: float = 600.0, request_cap: float = 60.0,
                 cost_per_call: float = COST_PER_CALL, cost_per_message: float = COST_PER_MESSAGE,
                 limits: bool = True, seed: int = 0, max_messages: int | None = 100,
                 redirect_uri: str | None = None, fetch_timeout: float = FETCH_TIMEOUT,
                 disk_quota: int | None = None) -> None:
        self._temp = db is None
        if db is None:
            fd, path = tempfile.mkstemp(prefix="bulkimport-sandbox-", suffix=".db")
            os.close(fd)
            db = path
        self.db_path = os.fspath(db)
        self.host, self._port = host, port
        self.clock = VirtualClock(time_scale)
        self.store = Store(self.db_path)
        self.faults = Faults(seed=seed)
        self.bucket = LeakyBucket(self.clock, bucket_size, drain_rate)
        self.ledger = OperatingLedger(self.clock, operating_limit, operating_window)
        self.config = Config(token_lifetime=float(token_lifetime), limits=limits, request_cap=request_cap,
                             cost_per_call=cost_per_call, cost_per_message=cost_per_message,
                             max_messages=max_messages, redirect_uri=redirect_uri,
                             fetch_timeout=fetch_timeout, disk_quota=disk_quota,
                             files_dir=self.db_path + ".files")
        self.portal = Portal(self.store, self.clock, self.bucket, self.ledger, self.config, _lines(lines))
        self._stats = Stats()
        self._server: SandboxServer | None = None
        self._thread: threading.Thread | None = None
        self._tokens: dict[str, Any] | None = None

    # ------------------------------------------------------------------ life cycle
    def start(self) -> Sandbox:
        """Bind and serve in a background thread."""
        if self._server is not None:
            return self
        self._server = SandboxServer((self.host, self._port), self.portal, self.faults, self._stats)
        host, port = self._server.server_address[:2]
        self.portal.base_url = f"http://{host!s}:{port}"
        # A fresh valid pair on every start (tokens of earlier runs of a persistent db stay valid).
        self._tokens = self.portal.issue_tokens(self.portal.client_id, SCOPES, 1)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="bulkimport-sandbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the store; a temporary database is deleted."""
        if self._server is not None:
            # Let requests being handled finish before the store closes under them (a slow fault
            # can hold one for long: after the timeout the store closes anyway, quietly).
            self._server.drain(timeout=10)
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.store.close()
        if self._temp:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.db_path + suffix)
            shutil.rmtree(self.config.files_dir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = self.url if self._server is not None else "stopped"
        return f"<Sandbox {state} db={self.db_path!r}>"

    # ------------------------------------------------------------------ addresses and credentials
    @property
    def url(self) -> str:
        """The portal address (``http://127.0.0.1:PORT``)."""
        if not self.portal.base_url:
            raise RuntimeError("the sandbox is not started")
        return self.portal.base_url

    @property
    def rest_url(self) -> str:
        """``url + "/rest/"``."""
        return self.url + "/rest/"

    @property
    def oauth_url(self) -> str:
        """The OAuth server's token endpoint for this sandbox."""
        return self.url + "/oauth/token/"

    @property
    def webhook_url(self) -> str:
        """An incoming webhook of user 1 (``/rest/1/<code>/``): imconnector.* refuse it."""
        return f"{self.url}/rest/1/{self.portal.webhook_code}/"

    @property
    def client_id(self) -> str:
        """The pre-installed local application's client id."""
        return self.portal.client_id

    @property
    def client_secret(self) -> str:
        """The pre-installed local application's client secret."""
        return self.portal.client_secret

    def _pair(self) -> dict[str, Any]:
        if self._tokens is None:
            raise RuntimeError("the sandbox is not started")
        return self._tokens

    @property
    def access_token(self) -> str:
        """The initial access token (scopes imopenlines, imconnector, im, disk)."""
        return str(self._pair()["access_token"])

    @property
    def refresh_token(self) -> str:
        """The initial refresh token."""
        return str(self._pair()["refresh_token"])

    @property
    def member_id(self) -> str:
        """The portal's member_id."""
        return self.portal.member_id

    @property
    def domain(self) -> str:
        """``host:port`` of the portal."""
        return self.portal.domain

    # ------------------------------------------------------------------ time
    @property
    def time_scale(self) -> float:
        """Virtual seconds per real second."""
        return self.clock.time_scale

    @property
    def epoch(self) -> float:
        """The real unix time at which virtual and real time coincided (before any advance)."""
        return self.clock.epoch

    def now(self) -> float:
        """Virtual unix time."""
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Move virtual time forward (drains the bucket, expires baskets, tokens and codes)."""
        self.clock.advance(seconds)

    # ------------------------------------------------------------------ control and inspection
    def stats(self) -> dict[str, Any]:
        """Requests in total, by HTTP status (int keys), by error code, by method and by fault kind."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the request counters."""
        self._stats.reset()

    def expire_tokens(self) -> None:
        """Force every issued access token to expire now (next call: 401 expired_token)."""
        self.portal.expire_tokens()

    def issue_code(self) -> str:
        """An authorization code for ``grant_type=authorization_code`` (valid 30 virtual seconds)."""
        return self.portal.issue_code()

    def credentials(self) -> dict[str, Any]:
        """Everything a client needs to talk to this sandbox (its own fake application's secrets)."""
        return {"url": self.url, "rest_url": self.rest_url, "oauth_url": self.oauth_url,
                "client_id": self.client_id, "client_secret": self.client_secret,
                "access_token": self.access_token, "refresh_token": self.refresh_token,
                "member_id": self.member_id, "domain": self.domain, "webhook_url": self.webhook_url}
