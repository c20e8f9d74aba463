"""HTTP to a Bitrix24 portal: envelopes, redirects and the classification of every answer.

Every answer becomes exactly one of (reference §2):

* **success** — ``{"result": …}``: returned;
* **refused before execution** — 503 ``QUERY_LIMIT_EXCEEDED``, 429 ``OPERATION_TIME_LIMIT``, or a
  connection that failed *before the request left* → :class:`RetryableError` with ``retry_after``;
* **expired token** — 401 ``expired_token`` → the token is refreshed and the call repeated once;
* **fatal for the run** — auth, set-up and block codes → :class:`AuthError`, :class:`SetupError`,
  :class:`BlockedError`;
* **answered error** — any other code → :class:`RequestRejectedError` (it did not commit);
* **ambiguous** — a timeout or a dropped connection after the request was sent, a 5xx without a
  code (or with a generic server-error code), an HTML page, an empty or unparseable body →
  :class:`AmbiguousError`: the write may have run.

*Before* vs *after* sending: ``requests`` reports a failed TCP connect (refused, unreachable, DNS, a
connect timeout) as ``ConnectTimeout`` or as a ``ConnectionError`` wrapping urllib3's
``NewConnectionError``; in both cases no byte of the request was written, so it is safe to retry.
Everything else (read timeout, reset, "Connection aborted", a truncated body) happens after the
request was written and is ambiguous. urllib3 drops pooled keep-alive connections the server has
closed before reusing them, so a stale socket rarely turns into a false "ambiguous".

Tokens travel in the JSON body (``auth``), never in a URL, so they cannot leak into logs of URLs.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
import threading
import time as _time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import orjson
import requests

from .. import __version__
from ..clock import Clock, SystemClock
from ..errors import (
    AmbiguousError,
    AuthError,
    BlockedError,
    ConfigError,
    OperatingLimitError,
    PortalError,
    RateLimitedError,
    RequestRejectedError,
    RetryableError,
    SetupError,
    TlsError,
    TokenExpiredError,
)
from ..limits import STANDARD, PortalLimits
from .encoding import command as encode_command

log = logging.getLogger("bulkimport.portal")

USER_AGENT = f"bulkimport/{__version__}"
#: (connect, read) seconds; the read timeout is above the portal's 60 s cap so a long but
#: successful request is not cut off by us.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 75.0)
MAX_REDIRECTS = 5
#: Repeats of one request after expired_token (see ``Client._authorised``).
MAX_TOKEN_REPEATS = 3

AUTH_CODES = frozenset(
    c.upper()
    for c in (
        "WRONG_AUTH_TYPE",
        "NO_AUTH_FOUND",
        "insufficient_scope",
        "INVALID_CREDENTIALS",
        "user_access_error",
        "ACCESS_DENIED",
        "invalid_token",
        "invalid_grant",
        "invalid_client",
        "PAYMENT_REQUIRED",
        "authorization_error",
    )
)
SETUP_CODES = frozenset(
    c.upper()
    for c in (
        "NOT_ACTIVE_LINE",
        "IMCONNECTOR_NO_CORRECT_PROVIDER",
        "IMCONNECTOR_COULD_NOT_GET_PROVIDER_OBJECT",
        "IMCONNECTOR_NOT_SPECIFIED_CORRECT_CONNECTOR",
        "ERROR_METHOD_NOT_FOUND",
        "INVALID_REQUEST",
        "ERROR_BATCH_LENGTH_EXCEEDED",
        "ERROR_BATCH_METHOD_NOT_ALLOWED",
    )
)
BLOCKED_CODES = frozenset(("OVERLOAD_LIMIT", "PORTAL_DELETED"))
#: Server-side failures that may have happened half-way through a write.
SERVER_ERROR_CODES = frozenset(("INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"))


# --------------------------------------------------------------------------------------------------
# Transport: the only part that touches the network (swap it for MockTransport in tests)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RawResponse:
    """An HTTP answer as bytes: status, headers (lower-case names) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class NotSent(Exception):
    """The request never left this machine (connect refused/failed): always safe to retry."""


class Transport(Protocol):
    """POSTs bytes; raises :class:`NotSent` or :class:`AmbiguousError` for network failures."""

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: tuple[float, float]
    ) -> RawResponse: ...


def _chain(exc: BaseException) -> Iterable[object]:
    """The exception, its args, urllib3 ``reason`` and causes, depth-first (bounded)."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack and len(seen) < 50:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, BaseException):
            stack.extend(a for a in item.args if isinstance(a, BaseException))
            for attr in ("reason", "__cause__", "__context__"):
                nxt = getattr(item, attr, None)
                if isinstance(nxt, BaseException):
                    stack.append(nxt)


def _not_sent(exc: requests.RequestException) -> bool:
    """True when the failure happened while connecting, before any byte of the request left."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if not isinstance(exc, requests.ConnectionError):
        return False
    try:
        from urllib3.exceptions import NewConnectionError
    except ImportError:  # pragma: no cover
        NewConnectionError = ()  # type: ignore[assignment,misc]
    return any(isinstance(item, (NewConnectionError, ConnectionRefusedError)) for item in _chain(exc))


#: OpenSSL reasons that only occur while the TLS handshake runs, before any byte of the request is
#: written (a wrong certificate, plain http on the https port, no common protocol version …).
_HANDSHAKE_REASONS = frozenset(
    {
        "CERTIFICATE_VERIFY_FAILED",
        "WRONG_VERSION_NUMBER",
        "UNSUPPORTED_PROTOCOL",
        "UNKNOWN_PROTOCOL",
        "NO_PROTOCOLS_AVAILABLE",
        "WRONG_SSL_VERSION",
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_INTERNAL_ERROR",
        "TLSV1_UNRECOGNIZED_NAME",
        "TLSV1_ALERT_ACCESS_DENIED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "NO_SHARED_CIPHER",
        "NO_CIPHERS_AVAILABLE",
        "UNSAFE_LEGACY_RENEGOTIATION_DISABLED",
        "DH_KEY_TOO_SMALL",
        "EE_KEY_TOO_SMALL",
        "CA_MD_TOO_WEAK",
    }
)


def _tls_handshake_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl`` error when ``exc`` is a TLS failure of the handshake (nothing was sent), else None.

    Errors that can also happen after the request was written (an EOF, a bad record MAC) are not
    handshake failures: they stay ambiguous.
    """
    for item in _chain(exc):
        if isinstance(item, ssl.SSLCertVerificationError):
            return item
        if isinstance(item, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            continue
        reason = str(getattr(item, "reason", "") or "").upper()
        if isinstance(item, ssl.SSLError) and reason in _HANDSHAKE_REASONS:
            return item
    return None


class RequestsTransport:
    """The real transport: one ``requests.Session`` (keep-alive), no automatic redirects.

    A pooled connection idle for more than ``idle_reset`` seconds (real time) is dropped before
    the next request: servers close idle keep-alive connections after about a minute, and a
    request written into a socket the server is closing at that moment fails *after* sending —
    an ambiguous outcome the sender would have to report as ``unknown``. A fresh connection
    after long pauses (operating-budget waits last minutes) costs one handshake.
    """

    def __init__(self, session: requests.Session | None = None, idle_reset: float = 20.0) -> None:
        # Our own session reads the environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, …)
        # once per origin instead of on every request: requests re-parses it per call, ~1 ms of
        # CPU per request (bench/client_overhead.py). Its trust_env is off so ~/.netrc is never
        # sent to the portal as Basic auth either (the token is in the body). A session passed in
        # is the caller's: used as it is.
        self._environment: requests.Session | None = None
        if session is None:
            session = requests.Session()
            session.trust_env = False
            self._environment = requests.Session()  # trust_env on: only asked for settings
        self._settings: dict[str, dict[str, Any]] = {}
        self.session = session
        self.idle_reset = idle_reset
        self._last_used: float | None = None
        # Several threads may post at once (the sender's requests in flight share the session's
        # connection pool): the idle reset only happens while no other request is on the wire.
        self._lock = threading.Lock()
        self._busy = 0

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: tuple[float, float]
    ) -> RawResponse:
        """POST ``body``; map network failures to NotSent / AmbiguousError."""
        with self._lock:
            idle_since = self._last_used
            idle = idle_since is not None and _time.monotonic() - idle_since > self.idle_reset
            if idle and self._busy == 0:
                self.session.close()  # drop pooled connections; the next request opens a fresh one
            self._busy += 1
        try:
            resp = self.session.post(
                url,
                data=body,
                headers=dict(headers),
                timeout=timeout,
                allow_redirects=False,
                **self._environment_for(url),
            )
            content = resp.content
            self._last_used = _time.monotonic()
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            # refused by requests before opening any connection: a bad address, not a network fault
            raise ConfigError(
                f"--portal: {urlsplit(url).netloc!r} is not a usable portal address ({type(exc).__name__}); "
                "use e.g. acme.bitrix24.ru (nothing was sent)"
            ) from None
        except requests.RequestException as exc:
            self._last_used = None  # whatever the pool holds now is suspect
            tls = _tls_handshake_failure(exc)
            if tls is not None:
                raise TlsError(
                    "tls-failed",
                    f"the TLS handshake with {urlsplit(url).netloc} failed "
                    f"({getattr(tls, 'reason', None) or type(tls).__name__}); nothing was sent. Check "
                    "the portal address (https:// on the right port) and the certificate",
                    None,
                ) from None
            if _not_sent(exc):
                raise NotSent(type(exc).__name__) from None
            if isinstance(exc, requests.Timeout):
                raise _ambiguous("timeout", "no answer within the read timeout") from None
            raise _ambiguous(
                "connection-lost", f"connection lost after sending ({type(exc).__name__})"
            ) from None
        finally:
            with self._lock:
                self._busy -= 1
        return RawResponse(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, content)

    def _environment_for(self, url: str) -> dict[str, Any]:
        """Proxies and CA bundle the environment gives ``url``'s origin (read once per origin)."""
        if self._environment is None:
            return {}
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        found = self._settings.get(origin)
        if found is None:
            # as requests does: for the prepared URL (an internationalised host in its xn-- form,
            # which is what NO_PROXY entries name)
            prepared = requests.Request("POST", url).prepare().url or url
            merged = self._environment.merge_environment_settings(prepared, {}, None, None, None)
            found = {"proxies": merged["proxies"], "verify": merged["verify"], "cert": merged["cert"]}
            self._settings[origin] = found
        return found

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()
        if self._environment is not None:
            self._environment.close()


@dataclass
class MockTransport:
    """An offline transport for tests: ``handler(url, json_body) -> RawResponse | Exception``.

    ``requests`` records every ``(url, body)`` sent, so tests can assert what went on the wire.
    """

    handler: Callable[[str, dict[str, Any]], RawResponse | BaseException]
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: tuple[float, float]
    ) -> RawResponse:
        """Record the request and answer (or raise) what the handler says."""
        payload = json.loads(body.decode("utf-8"))
        self.requests.append((url, payload))
        answer = self.handler(url, payload)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    @staticmethod
    def json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> RawResponse:
        """A JSON answer."""
        return RawResponse(
            status, {"content-type": "application/json", **(headers or {})}, json.dumps(payload).encode()
        )

    @staticmethod
    def text(
        status: int, body: str, content_type: str = "text/html", headers: Mapping[str, str] | None = None
    ) -> RawResponse:
        """A non-JSON answer (HTML page, empty body …)."""
        return RawResponse(status, {"content-type": content_type, **(headers or {})}, body.encode())


# --------------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------------
def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _valid_host(host: str) -> bool:
    """A DNS name (letters of any script, digits, ``-``, ``_``, dots) or an IP address."""
    if not host or len(host) > 253:
        return False
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    labels = host.split(".")
    return all(
        label and len(label) <= 63 and all(ch.isalnum() or ch in "-_" for ch in label) for label in labels
    )


def rest_url(portal: str) -> str:
    """The REST base ``https://host/rest/`` for ``acme.bitrix24.ru``, ``https://acme…/`` or ``…/rest/``.

    ``http://`` is accepted only for loopback addresses (the sandbox); webhook URLs are refused
    because ``imconnector.*`` needs an application's OAuth token.
    """
    text = str(portal or "").strip()
    if not text:
        raise ConfigError("the portal address is empty: pass --portal (or set BITRIX24_PORTAL)")
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        raise ConfigError(f"--portal {portal!r} is not a portal address; use e.g. acme.bitrix24.ru") from None
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        host = ""
    if scheme not in ("http", "https") or not _valid_host(host) or parts.username or parts.password:
        raise ConfigError(f"--portal {portal!r} is not a portal address; use e.g. acme.bitrix24.ru")
    if scheme == "http" and not _is_loopback(host):
        raise ConfigError(
            f"--portal {portal!r} uses http://; Bitrix24 requires https:// (plain http only for a "
            "local sandbox on 127.0.0.1/localhost)"
        )
    segments = [s for s in parts.path.split("/") if s]
    if segments[:1] == ["rest"] and len(segments) >= 3 and segments[1].isdigit():
        raise ConfigError(
            f"--portal {portal!r} looks like an inbound webhook; imconnector.* methods refuse webhooks: "
            "give the portal address and authorise a local application with `bulkimport auth`"
        )
    return f"{scheme}://{parts.netloc.lower()}/rest/"


def _base_from_location(location: str, method: str) -> str:
    """The new REST base implied by a redirect ``Location`` for ``method``."""
    parts = urlsplit(location)
    path = parts.path
    for suffix in (f"/rest/{method}.json", f"/rest/{method}"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    else:
        path = ""
    return rest_url(f"{parts.scheme}://{parts.netloc}{path}")


# --------------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------------
def _ambiguous(code: str, reason: str, status: int | None = None) -> AmbiguousError:
    exc = AmbiguousError(reason, status)
    exc.code = code  # type: ignore[attr-defined]  # the catalogue code rows get
    return exc


def error_for(
    code: str, description: str = "", status: int | None = None, *, retry_after: float | None = None
) -> PortalError | AmbiguousError:
    """The exception an error ``code`` (any case) stands for."""
    key = str(code).upper()
    if key == "QUERY_LIMIT_EXCEEDED":
        return RateLimitedError(code, description, status, retry_after=retry_after)
    if key == "OPERATION_TIME_LIMIT":
        return OperatingLimitError(code, description, status, retry_after=retry_after)
    if key == "EXPIRED_TOKEN":
        return TokenExpiredError(code, description, status)
    if key in AUTH_CODES:
        return AuthError(code, description, status)
    if key in SETUP_CODES:
        return SetupError(code, description, status)
    if key in BLOCKED_CODES:
        return BlockedError(code, description, status)
    if key in SERVER_ERROR_CODES or (status is not None and status >= 500):
        exc = _ambiguous(
            key if key in SERVER_ERROR_CODES else "bad-answer", f"{code}: {description}".strip(": "), status
        )
        exc.code = code  # type: ignore[attr-defined]
        return exc
    return RequestRejectedError(code, description, status)


def _retry_after(headers: Mapping[str, str], reset_at: float | None, now: float) -> float | None:
    """Seconds until the portal said the limit resets (``operating_reset_at`` if still ahead, else
    a ``Retry-After`` header); 0.0 for a reset already past — the governor then still waits at
    least 1 s with back-off (a truncated integer reset often looks past)."""
    if reset_at is not None and float(reset_at) - now > 0:
        return float(reset_at) - now
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    return 0.0 if reset_at is not None else None


@dataclass
class Answer:
    """A successful answer: the ``result`` and the ``time`` object (may be empty)."""

    result: Any
    time: dict[str, Any]
    status: int = 200


def classify(raw: RawResponse, now: float) -> Answer:
    """Turn an HTTP answer into an :class:`Answer` or raise the exception it stands for."""
    status = raw.status
    payload: Any = None
    text: str | None = None  # the decoded body, for the messages of answers without an envelope
    try:
        # orjson parses the UTF-8 bytes directly, ~2x faster than json on the ~400 bytes per
        # message an answer echoes back (client CPU, bench/client_overhead.py); it is strict
        # (invalid UTF-8, NaN, ints over 64 bits), so anything it refuses takes the tolerant path.
        payload = orjson.loads(raw.body)
    except orjson.JSONDecodeError:
        text = raw.body.decode("utf-8", errors="replace").strip()
        if text:
            try:
                payload = json.loads(text)
            except ValueError:
                payload = None
    if isinstance(payload, dict) and payload.get("error"):
        from .auth import scrub  # late: auth imports this module

        code = str(payload.get("error"))
        description = scrub(str(payload.get("error_description") or ""))
        timing = payload.get("time") if isinstance(payload.get("time"), dict) else {}
        reset_at = timing.get("operating_reset_at") if isinstance(timing, dict) else None
        if reset_at is None:
            reset_at = payload.get("operating_reset_at")
        exc = error_for(code, description, status, retry_after=_retry_after(raw.headers, _num(reset_at), now))
        raise exc
    if 200 <= status < 300 and isinstance(payload, dict) and "result" in payload:
        timing = payload.get("time")
        return Answer(payload["result"], timing if isinstance(timing, dict) else {}, status)
    # No usable envelope.
    if status == 429:
        raise OperatingLimitError(
            "OPERATION_TIME_LIMIT",
            "HTTP 429 without a body",
            status,
            retry_after=_retry_after(raw.headers, None, now),
        )
    if text is None:
        text = raw.body.decode("utf-8", errors="replace").strip()
    if not text:
        raise _ambiguous("bad-answer", "empty answer", status)
    if payload is None:
        kind = "an HTML page" if text.lstrip().startswith("<") else "a non-JSON answer"
        raise _ambiguous("bad-answer", f"{kind} instead of JSON", status)
    if status >= 500 or 200 <= status < 300:
        raise _ambiguous("bad-answer", "a JSON answer without result or error", status)
    raise RequestRejectedError(f"HTTP_{status}", "an error answer without a code", status)


def _jsonable(value: Any) -> Any:
    """``json.dumps``' fallback for the sequences that encode themselves in a batch (the plan's
    lazy ``Messages`` views, see portal/encoding.py): sent as the list of items they stand for.
    Anything else is refused as before."""
    if hasattr(value, "php_query_pairs") and isinstance(value, Sequence):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _num(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------------
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


def _as_dict(section: Any) -> dict[str, Any]:
    """Batch sections are ``[]`` when empty (a PHP quirk), a dict otherwise."""
    if isinstance(section, dict):
        return section
    if isinstance(section, list):
        return {str(i): v for i, v in enumerate(section)}
    return {}


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
        from .governor import Governor

        self._base = rest_url(portal)
        self.portal = portal
        self.clock: Clock = clock or SystemClock()
        self.limits = limits
        self.auth: _TokenSource = _StaticToken(auth) if isinstance(auth, str) else auth
        if auth is None:
            raise ConfigError(
                "no credentials: pass auth= or set BITRIX24_ACCESS_TOKEN (or run `bulkimport auth`)"
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
        before_send: Callable[[], None] | None = None,
        acquired: bool = False,
    ) -> Answer:
        """Like :meth:`call` but returns the whole :class:`Answer` (result and ``time``).

        ``before_send`` runs right before the request's bytes go on the wire (after any pacing
        wait and token refresh): the sender journals rows as in flight there, so a Ctrl-C during a
        long wait never turns unsent rows into ``unknown``. ``acquired``: the caller already took
        this request's bucket token (``Governor.try_acquire``); a repeat after a token refresh
        takes its own.
        """
        body = dict(params or {})
        answer = self._with_retries(method, body, [method], retries, before_send, acquired)
        self.governor.observe(method, answer.time)
        return answer

    def batch(
        self,
        commands: Mapping[str, tuple[str, Mapping[str, Any]]],
        halt: bool = False,
        *,
        retries: int = 0,
        before_send: Callable[[], None] | None = None,
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
            "batch", {"halt": 1 if halt else 0, "cmd": cmd}, methods, retries, before_send, acquired
        )
        payload = answer.result if isinstance(answer.result, dict) else {}
        results = _as_dict(payload.get("result"))
        raw_errors = _as_dict(payload.get("result_error"))
        times = {k: v for k, v in _as_dict(payload.get("result_time")).items() if isinstance(v, dict)}
        now = self.governor.portal_now()
        errors: dict[str, PortalError | AmbiguousError] = {}
        for key, err in raw_errors.items():
            if isinstance(err, dict):
                code = str(err.get("error") or "bad-answer")
                desc = str(err.get("error_description") or "")
            else:
                code, desc = "bad-answer", str(err)
            timing = times.get(key, {})
            retry_after = _retry_after({}, _num(timing.get("operating_reset_at")), now)
            errors[key] = error_for(code, desc, None, retry_after=retry_after)
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
        before_send: Callable[[], None] | None = None,
        acquired: bool = False,
    ) -> Answer:
        attempt = 0
        while True:
            try:
                return self._authorised(method, body, methods, before_send, acquired and attempt == 0)
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
        before_send: Callable[[], None] | None = None,
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
            return self._send(method, {**body, "auth": token}, methods, before_send, acquired)
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
                return self._send(method, {**body, "auth": token}, methods, before_send, reserved=acquired)
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
        before_send: Callable[[], None] | None = None,
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
            if before_send is not None:
                before_send()
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
                new_base = _base_from_location(location, method)
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
        raise _ambiguous("bad-answer", f"more than {MAX_REDIRECTS} redirects")
