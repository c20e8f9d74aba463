"""The HTTP transport: the only code that touches the network (swap in :class:`MockTransport` offline).

A transport POSTs bytes and returns a :class:`RawResponse`; what the answer *means* is
:mod:`.answers`' business. Network failures are sorted here by whether the request left:

*Before* vs *after* sending: ``requests`` reports a failed TCP connect (refused, unreachable, DNS, a
connect timeout) as ``ConnectTimeout`` or as a ``ConnectionError`` wrapping urllib3's
``NewConnectionError``; in both cases no byte of the request was written, so it is safe to retry
(:class:`NotSent`). A TLS handshake failure also happens before any byte of the request is written
(:class:`~bulkimport.errors.TlsError`, fatal: retrying cannot fix a certificate). Everything else
(read timeout, reset, "Connection aborted", a truncated body) happens after the request was
written and is ambiguous. urllib3 drops pooled keep-alive connections the server has closed before
reusing them, so a stale socket rarely turns into a false "ambiguous".
"""

from __future__ import annotations

import json
import ssl
import threading
import time as _time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from ..errors import ConfigError, TlsError, ambiguous
from ..version import __version__

USER_AGENT = f"bulkimport/{__version__}"
#: (connect, read) seconds; the read timeout is above the portal's 60 s cap so a long but
#: successful request is not cut off by us.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 75.0)


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
                    f"({getattr(tls, 'reason', None) or type(tls).__name__}); nothing was sent",  # the
                    # code's hint says what to check (it was said twice)
                    None,
                ) from None
            if _not_sent(exc):
                raise NotSent(type(exc).__name__) from None
            if isinstance(exc, requests.Timeout):
                raise ambiguous("timeout", "no answer within the read timeout") from None
            raise ambiguous(
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
