"""The Bitrix24 REST client: ``call`` one method or ``batch`` up to 50 commands, paced and authorised.

What it adds to the floors below: the access token in the JSON body (``auth``; never in a URL, so
it cannot leak into logs of URLs), pacing by the shared :class:`~.governor.Governor`, refresh and
repeat on ``expired_token``, redirects to a new portal address, and repeats of requests refused
before execution (``retries``). The wire is :mod:`.transport`'s, what an answer means is
:mod:`.answers`' (the classification is drawn there), addresses are :mod:`.urls`'. The client takes
any object with ``token()`` and ``refresh(stale)`` (an :class:`~.auth.Auth`) or a plain access
token, and imports no OAuth code.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urljoin

import requests

from ..clock import Clock, SystemClock
from ..errors import (
    AmbiguousError,
    AuthError,
    ConfigError,
    OperatingLimitError,
    PortalError,
    RateLimitedError,
    RetryableError,
    TokenExpiredError,
    ambiguous,
)
from ..limits import STANDARD, PortalLimits
from ..settings import ENV_ACCESS_TOKEN
from .answers import Answer, batch_sections, classify
from .answers import error_for as error_for  # compatibility, see below
from .encoding import command as encode_command
from .governor import Governor
from .methods import BATCH_METHOD
from .transport import DEFAULT_TIMEOUT, USER_AGENT, NotSent, RequestsTransport, Transport
from .transport import MockTransport as MockTransport  # compatibility, see below
from .transport import RawResponse as RawResponse  # compatibility, see below
from .urls import base_from_location, rest_url

log = logging.getLogger("bulkimport.portal")

# Compatibility: error_for, MockTransport, RawResponse, NotSent, RequestsTransport, rest_url and
# _ambiguous lived here before portal/ became leaf modules; callers not yet rewired
# (connector.py, sending/, tests, bench) still import them from here.
_ambiguous = ambiguous

MAX_REDIRECTS = 5
#: Repeats of one request after expired_token (see ``Client._authorised``).
MAX_TOKEN_REPEATS = 3


def _jsonable(value: Any) -> Any:
    """``json.dumps``' fallback for the sequences that encode themselves in a batch (the plan's
    lazy ``Messages`` views, see portal/encoding.py): sent as the list of items they stand for.
    Anything else is refused as before."""
    if hasattr(value, "php_query_pairs") and isinstance(value, Sequence):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")



@dataclass
class BatchResult:
    """What a ``batch`` answered, per command key: a result, an error, and the command's time."""

    results: dict[str, Any]
    errors: dict[str, PortalError | AmbiguousError]
    times: dict[str, dict[str, Any]]
    time: dict[str, Any]
    keys: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """Keys sent but absent from both maps (not run, or lost)."""
        return [k for k in self.keys if k not in self.results and k not in self.errors]


class _TokenSource(Protocol):
    def token(self) -> str: ...
    def refresh(self, stale: str | None = None) -> str: ...


class _StaticToken:
    """A fixed access token without refresh (expired_token then becomes fatal)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def token(self) -> str:
        return self._token

    def refresh(self, stale: str | None = None) -> str:
        raise AuthError("expired_token", "the access token expired and no refresh token was given", 401)

    def __repr__(self) -> str:
        return "_StaticToken(<hidden>)"



class Client:
    """A Bitrix24 REST client: ``call`` one method, or ``batch`` up to 50 commands."""

    def __init__(
        self,
        portal: str,
        auth: Any,
        *,
        limits: PortalLimits = STANDARD,
        clock: Clock | None = None,
        session: requests.Session | Transport | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        governor: Any = None,
    ) -> None:
        self._base = rest_url(portal)
        self.portal = portal
        self.clock: Clock = clock or SystemClock()
        self.limits = limits
        self.auth: _TokenSource = _StaticToken(auth) if isinstance(auth, str) else auth
        if auth is None:
            raise ConfigError(
                f"no credentials: pass auth= or set {ENV_ACCESS_TOKEN} (or run `bulkimport auth`)"
            )
        if session is None or isinstance(session, requests.Session):
            self.transport: Transport = RequestsTransport(session)
        else:
            self.transport = session
        self.timeout: tuple[float, float] = (
            (float(timeout), float(timeout))
            if isinstance(timeout, (int, float))
            else (timeout[0], timeout[1])
        )
        self.governor = governor or Governor(limits, self.clock)
        self._lock = threading.Lock()
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"Client({self._base!r}, limits={self.limits.name!r})"

    @property
    def rest_url(self) -> str:
        """The REST base in use (follows redirects to a new portal address)."""
        return self._base

    # ---------------------------------------------------------------- public API
    def call(self, method: str, params: Mapping[str, Any] | None = None, *, retries: int = 0) -> Any:
        """Call ``method`` with JSON ``params``; return its ``result`` (see the module docstring)."""
        return self.call_full(method, params, retries=retries).result

    def call_full(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        retries: int = 0,
        acquired: bool = False,
    ) -> Answer:
        """Like :meth:`call` but returns the whole :class:`Answer` (result and ``time``).

        ``acquired``: the caller already took this request's bucket token
        (``Governor.try_acquire``); a repeat after a token refresh takes its own.
        """
        body = dict(params or {})
        answer = self._with_retries(method, body, [method], retries, acquired)
        self.governor.observe(method, answer.time)
        return answer

    def batch(
        self,
        commands: Mapping[str, tuple[str, Mapping[str, Any]]],
        halt: bool = False,
        *,
        retries: int = 0,
        acquired: bool = False,
    ) -> BatchResult:
        """Run up to 50 ``{key: (method, params)}`` commands in one request (``halt=0`` by default;
        ``acquired`` as for :meth:`call_full`)."""
        if not commands:
            return BatchResult({}, {}, {}, {}, ())
        if len(commands) > self.limits.batch_max:
            raise ValueError(f"a batch holds at most {self.limits.batch_max} commands")
        cmd = {key: encode_command(method, params) for key, (method, params) in commands.items()}
        methods = [method for method, _ in commands.values()]
        answer = self._with_retries(
            BATCH_METHOD, {"halt": 1 if halt else 0, "cmd": cmd}, methods, retries, acquired
        )
        results, errors, times = batch_sections(answer.result, self.governor.portal_now())
        for key, (method, _) in commands.items():
            if key in times:
                self.governor.observe(method, times[key])
            err = errors.get(key)
            if isinstance(err, OperatingLimitError):
                self.governor.on_operating_limit(method, err.retry_after)
        self.governor.observe_request(answer.time)
        return BatchResult(results, errors, times, answer.time, tuple(commands))

    def close(self) -> None:
        """Release pooled connections."""
        close = getattr(self.transport, "close", None)
        if close:
            close()

    # ---------------------------------------------------------------- internals
    def _with_retries(
        self,
        method: str,
        body: dict[str, Any],
        methods: list[str],
        retries: int,
        acquired: bool = False,
    ) -> Answer:
        """One request, repeated up to ``retries`` times while it is refused before execution."""
        attempt = 0
        while True:
            try:
                return self._authorised(method, body, methods, acquired and attempt == 0)
            except RetryableError as exc:
                attempt += 1
                if attempt > retries:
                    raise
                self.governor.wait_after(exc)

    def _authorised(
        self,
        method: str,
        body: dict[str, Any],
        methods: list[str],
        acquired: bool = False,
    ) -> Answer:
        """One request with the current token; on expired_token refresh and repeat (a 401 is
        refused before execution, and each repeat is a new request with its own bucket token).

        Our own refresh is repeated once. With requests in flight on other threads the token a
        repeat carried may have been replaced by another thread's refresh meanwhile (its
        request met a new expiry): then the repeat goes again with the current token, at most
        ``MAX_TOKEN_REPEATS`` times in all, never in a loop.
        """
        token = self.auth.token()
        try:
            return self._send(method, {**body, "auth": token}, methods, acquired)
        except TokenExpiredError:
            log.info("access token expired; refreshing and repeating %s once", method)
        refreshed = False
        for _ in range(MAX_TOKEN_REPEATS):
            if refreshed:
                current = self.auth.token()
                if current == token:
                    break  # nobody replaced the token we refreshed: it really is refused
                token = current
            else:
                token = self.auth.refresh(stale=token)
                refreshed = True
            try:
                return self._send(method, {**body, "auth": token}, methods, reserved=acquired)
            except TokenExpiredError as again:
                last = again
        raise AuthError(
            last.code, "the portal still reports an expired token after a refresh", last.status
        ) from None

    def _send(
        self,
        method: str,
        body: dict[str, Any],
        methods: list[str],
        acquired: bool = False,
        *,
        reserved: bool = False,
    ) -> Answer:
        """POST one request (following redirects) and classify the answer (``acquired``: the
        caller took the bucket token; ``reserved``: a repeat whose operating seconds are reserved)."""
        if not acquired:
            if reserved:
                self.governor.acquire(methods, reserved=True)
            else:
                self.governor.acquire(methods)
        data = json.dumps(body, ensure_ascii=False, default=_jsonable).encode("utf-8")
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        url = self._base + method
        for _ in range(MAX_REDIRECTS + 1):
            started = self.clock.now()
            try:
                raw = self.transport.post(url, data, headers, self.timeout)
            except NotSent as exc:
                self.governor.on_connection_failed()
                raise RetryableError("connection-failed", f"could not connect ({exc})", None) from None
            finally:
                with self._lock:
                    self.requests_sent += 1
            self.governor.measured(self.clock.now() - started)
            if raw.status in (301, 302, 303, 307, 308) and raw.headers.get("location"):
                location = urljoin(url, raw.headers["location"])
                new_base = base_from_location(location, method)
                if new_base != self._base:
                    log.warning(
                        "the portal moved: %s -> %s (requests now go to the new address)",
                        self._base,
                        new_base,
                    )
                    self._base = new_base
                url = new_base + method
                continue
            try:
                answer = classify(raw, self.governor.portal_now())
                self.governor.observe_clock(answer.time)
                self.governor.on_success()
            except RateLimitedError as exc:
                self.governor.on_rate_limited(exc.retry_after)
                raise
            except OperatingLimitError as exc:
                for m in set(methods):  # for a batch: the nested methods (batch has no budget)
                    self.governor.on_operating_limit(m, exc.retry_after)
                raise
            return answer
        raise ambiguous("bad-answer", f"more than {MAX_REDIRECTS} redirects")
