"""The sandbox portal's REST methods, OAuth server and their semantics (reference §1–7).

Written from the reference (``/work/shared/reference/bitrix24.md``) and the official method pages;
it shares no code with bulkimport's client on purpose, so the two can't be wrong the same way. Where
the documentation is silent the comment says ``unknown:`` and what the sandbox does instead; the
same decisions are tabled in docs/sandbox.md.

The HTTP layer (server.py) turns a request into ``(method, params, auth)`` and calls
:meth:`Portal.rest`; it gets back a :class:`Reply` to write.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus, urlencode

from . import chatlog, lineconfig
from .fetch import FETCH_TIMEOUT, fetch, redact
from .limits import LeakyBucket, OperatingLedger, VirtualClock
from .store import Store, dumps

# ----------------------------------------------------------------------------- wire strings (reference)
WRONG_AUTH_TYPE = "Current authorization type is denied for this method Application context required"
NOT_ACTIVE_LINE = "The line with this ID is inactive or does not exist"
NO_CORRECT_PROVIDER = "Failed to find a suitable provider for the connector"
MESSAGES_NOT_ARRAY = "The value of an argument 'MESSAGES' must be of type array"
MESSAGES_NOT_ARRAYS = "The MESSAGES parameter must be an array of messages (arrays)"
MESSAGE_BAD_STRUCTURE = "The incorrect structure of a message inside MESSAGES parameter"
# Per-item error texts (English renderings of the seed page's texts for these codes).
ITEM_NO_USER_ID = "The messenger user ID was not received"  # CONNECTOR_PROXY_NO_USER_IM
ITEM_NOT_ALL_DATA = "Not all the required data was transferred"  # IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA
# unknown: what the portal says for an invalid operator user_id / a message it can't find.
ITEM_BAD_OPERATOR = "The user_id of the message must be the ID of a Bitrix24 employee"
ITEM_NOT_FOUND = "The message was not found"

SCOPES = "imopenlines,imconnector,im,disk"
IMOPENLINES_SCOPE = "imopenlines"
#: Connectors every portal lists in imconnector.list besides the registered ones (not usable by apps).
BUILTIN_CONNECTORS = {"livechat": "Live Chat", "network": "Bitrix24.Network", "telegrambot": "Telegram"}
#: Sessions, chats and technical users get ids above these floors, like a portal with some history.
USER_ID_FLOOR, CHAT_ID_FLOOR, SESSION_ID_FLOOR = 500, 1000, 300
#: Chat messages elsewhere in Bitrix24 are cut at 20,000 characters (reference §6).
TEXT_LIMIT = 20_000
NAME_LIMIT = 25
REFRESH_LIFETIME = 180 * 86400.0
CODE_LIFETIME = 30.0
#: While a request spends simulated time, writes pending longer than this (real seconds) are
#: committed before it sleeps: another process watching the file sees a long request's items appear
#: as they are made, while cheap calls are not dominated by a commit per item.
COMMIT_INTERVAL = 0.05

DEFAULT_LINES: list[tuple[int, str, str]] = [
    (1, "Imported history", "Y"), (2, "Support", "Y"), (3, "Archive", "N")]

_NAME_RE = re.compile(r"^[^\W\d_]+(?:[ \-'’][^\W\d_]+|[ \-'’])*$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE_RE = re.compile(r"^\+?[0-9][0-9 ()\-]{4,30}$")
_CONNECTOR_ID_RE = re.compile(r"^[a-z0-9_]+$")
_INT_RE = re.compile(r"\s*-?\d+\s*")


# ----------------------------------------------------------------------------- PHP-style parameters
#: name -> its path (base, *keys; None for "[]"), () for a name PHP ignores. Batch commands repeat a
#: handful of names (MESSAGES[0][user][id], ...) thousands of times: each is split once.
_PATHS: dict[str, tuple[str | None, ...]] = {}
_PATHS_MAX = 4096


def _split_name(name: str) -> tuple[str | None, ...]:
    """A PHP bracket name → (base, key, ...) with None for ``[]``; () when PHP drops the pair."""
    if "[" in name and name.find("]", name.find("[")) > 0 and name.find("[") > 0:
        base, rest = name[: name.find("[")], name[name.find("[") :]
    else:
        base, rest = name, ""
    # PHP turns spaces and dots of the top-level name into underscores.
    base = base.replace(" ", "_").replace(".", "_")
    if not base:
        return ()
    keys: list[str | None] = []
    while rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            break
        inner = rest[1:close]
        keys.append(None if inner == "" else inner)
        rest = rest[close + 1 :]
    return (base, *keys)


def _assign(target: dict[str, Any], name: str, value: Any) -> None:
    """Store ``value`` under a PHP bracket name (``a[b][]``) in ``target`` as PHP's parser does."""
    path = _PATHS.get(name)
    if path is None:
        path = _split_name(name)
        if len(_PATHS) < _PATHS_MAX:
            _PATHS[name] = path
    if not path:
        return
    last = len(path) - 1
    if last == 0:
        target[path[0]] = value  # type: ignore[index]  # the base is never None
        return
    node = target
    for i, key in enumerate(path):
        if key is None:  # "[]" appends: the next integer key, like PHP
            ints = [int(k) for k in node if isinstance(k, str) and _is_index(k)]
            key = str(max(ints) + 1 if ints else 0)
        if i == last:
            node[key] = value
        else:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child


_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def _unescape_run(match: re.Match[str]) -> str:
    """``%D0%94…`` → its bytes, one character per byte (latin-1), to be decoded as UTF-8 after."""
    return bytes.fromhex(match.group().replace("%", "")).decode("latin-1")


def _unquote_plus(text: str) -> str:
    """``urllib.parse.unquote_plus(text)`` (UTF-8, errors replaced), faster.

    Text without escapes is returned as is; ASCII text (what a client's percent-encoding gives)
    has each run of valid ``%XX`` turned into bytes at C speed and the whole decoded as UTF-8 at
    once, exactly as ``unquote`` does with an ASCII string; anything else goes to ``unquote_plus``.
    """
    if "%" not in text:
        return text.replace("+", " ") if "+" in text else text
    if not text.isascii():
        return unquote_plus(text)
    if "+" in text:
        text = text.replace("+", " ")
    return _ESCAPES.sub(_unescape_run, text).encode("latin-1").decode("utf-8", "replace")


def _is_index(key: str) -> bool:
    return key == "0" or (key.isdigit() and not key.startswith("0")) or (
        key.startswith("-") and key[1:].isdigit() and not key[1:].startswith("0"))


def decode_query(query: str) -> dict[str, Any]:
    """A PHP-bracket query string (``MESSAGES[0][user][id]=42&a[]=1``) → nested dicts, as PHP parses it."""
    params: dict[str, Any] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        _assign(params, _unquote_plus(name), _unquote_plus(value))
    return params


def decode_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Already-decoded (name, value) pairs (multipart fields) → nested dicts."""
    params: dict[str, Any] = {}
    for name, value in pairs:
        _assign(params, name, value)
    return params


def php_list(value: Any) -> list[Any] | None:
    """A PHP array's values in order (a JSON list, or a dict from bracket keys); None for a scalar."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    return None


def php_array(mapping: dict[Any, Any]) -> Any:
    """Serialise like PHP's json_encode: empty → ``[]``, keys 0..n-1 in order → a list, else an object."""
    if not mapping:
        return []
    keys = list(mapping)
    if all(str(k) == str(i) for i, k in enumerate(keys)):
        return list(mapping.values())
    return {str(k): v for k, v in mapping.items()}


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _truthy(value: Any) -> bool:
    """A PHP-ish boolean flag: true/1/"1"/"Y"/"true" are true."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return str(value).strip().lower() in ("1", "y", "yes", "true", "on")


def _int(value: Any) -> int | None:
    """An integer from an int or a decimal string (PHP-lax); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT_RE.fullmatch(value):
        return int(value)
    return None


def _scalar_text(value: Any) -> str | None:
    """A scalar as text (ids: ``42`` and ``"42"`` are the same id); None for arrays and empties."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    return text if text.strip() else None


def _token(length: int = 40) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


# ----------------------------------------------------------------------------- replies and errors
@dataclass
class Reply:
    """What the HTTP layer writes: a status, a body (JSON-able or raw bytes) and its type."""

    status: int
    body: Any = None
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # the error code, for stats
    path: str | None = None  # a file to stream as the body (Drive downloads)

    def payload(self) -> bytes:
        """The body as bytes."""
        if isinstance(self.body, bytes):
            return self.body
        if self.body is None:
            return b""
        return json.dumps(self.body, ensure_ascii=False).encode("utf-8")


def error_reply(status: int, code: str, description: str) -> Reply:
    """The reference's error envelope."""
    return Reply(status, {"error": code, "error_description": description}, error=code)


def html_reply(status: int, title: str, text: str = "") -> Reply:
    """An HTML page (what a proxy or the portal's own pages send)."""
    body = (f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>{text}</p><hr><center>nginx</center></body></html>\n")
    return Reply(status, body.encode("utf-8"), "text/html; charset=utf-8", error=f"HTML {status}")


class ApiError(Exception):
    """A method's error: becomes the error envelope (or a batch ``result_error`` entry)."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.status, self.code, self.description = status, code, description


class CutOff(Exception):
    """The request's simulated processing reached the request cap (60 s on the cloud)."""


@dataclass
class Work:
    """The simulated server time one HTTP request spends; enforces the request cap."""

    clock: VirtualClock
    cap: float
    request: int = 0  # the HTTP request's number (stored with the messages it carried)
    spent: float = 0.0
    store: Store | None = None  # its pending writes commit while time passes (see COMMIT_INTERVAL)
    _credit: float = 0.0  # real seconds already overslept, taken off the next sleep

    def spend(self, seconds: float) -> None:
        """Spend ``seconds`` of server time (really sleeping, scaled); CutOff when the cap is reached."""
        if seconds <= 0:
            return
        if self.store is not None:
            self.store.commit(older_than=COMMIT_INTERVAL)
        if self.spent + seconds > self.cap:
            rest = max(0.0, self.cap - self.spent)
            self._sleep(rest)
            self.spent = self.cap
            raise CutOff
        self._sleep(seconds)
        self.spent += seconds

    def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of virtual time. ``time.sleep`` oversleeps (≈ 60 µs a call on Linux): the
        excess is credited to the next sleep, so a request's real sleep totals its cost (never less
        at any moment) instead of growing with its number of items."""
        if self.clock.manual or seconds <= 0:
            self.clock.sleep(seconds)
            return
        want = seconds / self.clock.time_scale - self._credit
        if want <= 0:
            self._credit = -want
            return
        started = time.perf_counter()
        time.sleep(want)
        self._credit = time.perf_counter() - started - want


@dataclass
class Caller:
    """Who is calling: an application's OAuth token or an incoming webhook."""

    kind: str  # "oauth" or "webhook"
    app: str  # client id, or "webhook:<user>" — the operating-time account
    scope: frozenset[str]
    user_id: int
    token: str | None = field(default=None, repr=False)  # never in a repr (logs, tracebacks)


@dataclass
class Config:
    """The sandbox's tunables (see :class:`bulkimport.sandbox.Sandbox`)."""

    token_lifetime: float = 3600.0
    limits: bool = True
    request_cap: float = 60.0
    cost_per_call: float = 0.7
    cost_per_message: float = 0.5
    max_messages: int | None = 100
    redirect_uri: str | None = None
    fetch_timeout: float = FETCH_TIMEOUT  # real seconds the portal waits for a files[].url
    disk_quota: int | None = None  # bytes of Drive; None: unlimited
    files_dir: str = ""  # where Drive keeps file bytes (next to the database)


Handler = Callable[["Portal", Caller, dict[str, Any], Work], Any]
METHODS: dict[str, Handler] = {}
#: The scope a method needs when it is not the imopenlines of imconnector.* / imopenlines.* methods.
METHOD_SCOPES: dict[str, str] = {}
#: imconnector.* refuse webhooks (403 WRONG_AUTH_TYPE); these need the imopenlines scope.
APP_ONLY = "imconnector."


def method(name: str, scope: str | None = None) -> Callable[[Handler], Handler]:
    """Register a REST method handler (``scope``: the one it needs, if not imopenlines by its name)."""
    def wrap(fn: Handler) -> Handler:
        METHODS[name] = fn
        if scope is not None:
            METHOD_SCOPES[name] = scope
        return fn
    return wrap


@dataclass
class Paged:
    """A list method's result with the envelope's ``total`` and ``next`` (None: no next page)."""

    items: list[Any]
    total: int
    next: int | None = None


_last_iso: tuple[int, str] = (-1, "")  # (whole second, its ISO text): every command reports two dates


def _iso(ts: float) -> str:
    """ISO 8601 (UTC, whole seconds) of a unix time; the last second's text is reused."""
    global _last_iso
    second = int(ts)
    # Reuse only where rounding to microseconds cannot carry into the next second.
    if ts >= 0 and ts - second < 0.999999:
        cached = _last_iso
        if cached[0] == second:
            return cached[1]
        text = datetime.fromtimestamp(second, tz=UTC).isoformat(timespec="seconds")
        _last_iso = (second, text)
        return text
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- the portal
class Portal:
    """One sandbox portal: its store, clock, limits, OAuth server and REST methods."""

    def __init__(self, store: Store, clock: VirtualClock, bucket: LeakyBucket, ledger: OperatingLedger,
                 config: Config, lines: list[tuple[int, str, str]] | None = None) -> None:
        self.store, self.clock, self.bucket, self.ledger, self.config = store, clock, bucket, ledger, config
        self.base_url = ""  # set by the server once it knows its port
        self._request_seq = 0
        self._seq_lock = threading.Lock()
        store.seed_lines(lines or DEFAULT_LINES)
        self.client_id = self._meta_or(
            "client_id", lambda: f"local.{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}")
        self.client_secret = self._meta_or("client_secret", lambda: _token(50))
        self.member_id = self._meta_or("member_id", lambda: secrets.token_hex(16))
        self.webhook_code = self._meta_or("webhook_code", lambda: _token(16))
        last = store.one("SELECT MAX(request) AS n FROM messages")
        self._request_seq = int(last["n"] or 0) if last is not None else 0

    def _meta_or(self, key: str, make: Callable[[], str]) -> str:
        value = self.store.meta(key)
        if value is None:
            value = make()
            self.store.set_meta(key, value)
        return value

    @property
    def rest_url(self) -> str:
        """The REST endpoint (``client_endpoint``)."""
        return self.base_url + "/rest/"

    @property
    def domain(self) -> str:
        """host:port of the portal (and of its OAuth server)."""
        return self.base_url.split("://", 1)[-1]

    def next_request(self) -> int:
        """A number for each HTTP request (stored with the messages it carried)."""
        with self._seq_lock:
            self._request_seq += 1
            return self._request_seq

    # ------------------------------------------------------------------------- OAuth server
    def issue_tokens(self, client_id: str, scope: str, user_id: int) -> dict[str, Any]:
        """A new access/refresh pair, as the OAuth server returns it (reference §7)."""
        now = self.clock.now()
        access, refresh = _token(), _token()
        expires = now + self.config.token_lifetime
        with self.store.transaction() as db:
            db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (access, refresh, client_id, scope, user_id, now, expires))
            db.execute("INSERT INTO refresh_tokens (refresh_token, client_id, scope, user_id, expires) "
                       "VALUES (?, ?, ?, ?, ?)", (refresh, client_id, scope, user_id, now + REFRESH_LIFETIME))
        return {
            "access_token": access, "refresh_token": refresh, "expires": int(expires),
            "expires_in": int(self.config.token_lifetime), "client_endpoint": self.rest_url,
            "server_endpoint": self.base_url + "/rest/", "domain": self.domain,
            "member_id": self.member_id, "scope": scope, "status": "L", "user_id": user_id,
        }

    def issue_code(self) -> str:
        """An authorization code for ``grant_type=authorization_code`` (valid 30 virtual seconds)."""
        code = _token(32)
        self.store.run("INSERT INTO auth_codes (code, client_id, expires) VALUES (?, ?, ?)",
                       (code, self.client_id, self.clock.now() + CODE_LIFETIME))
        return code

    def expire_tokens(self, token: str | None = None) -> None:
        """Expire every issued access token now (or just ``token``)."""
        now = self.clock.now()
        if token is None:
            self.store.run("UPDATE tokens SET expires = ? WHERE expires > ?", (now, now))
        else:
            self.store.run("UPDATE tokens SET expires = ? WHERE access_token = ? AND expires > ?",
                           (now, token, now))

    def oauth_token(self, params: dict[str, Any]) -> Reply:
        """``/oauth/token/``: the refresh_token and authorization_code grants (reference §7).

        unknown: the HTTP statuses of OAuth errors; the sandbox sends 400 (invalid_request,
        invalid_grant) and 401 (invalid_client).
        """
        grant = params.get("grant_type")
        if grant not in ("refresh_token", "authorization_code"):
            return error_reply(400, "invalid_request",
                               "grant_type must be refresh_token or authorization_code")
        client_id, secret = params.get("client_id"), params.get("client_secret")
        if _empty(client_id) or _empty(secret):
            return error_reply(400, "invalid_request", "client_id and client_secret are required")
        if client_id != self.client_id or not secrets.compare_digest(str(secret), self.client_secret):
            return error_reply(401, "invalid_client", "Invalid client credentials")
        now = self.clock.now()
        if grant == "refresh_token":
            refresh = params.get("refresh_token")
            if _empty(refresh) or not isinstance(refresh, str):
                return error_reply(400, "invalid_request", "refresh_token is required")
            with self.store.transaction() as db:
                row = db.execute("SELECT * FROM refresh_tokens WHERE refresh_token = ?",
                                 (refresh,)).fetchone()
                if row is None or row["used"] or row["expires"] <= now or row["client_id"] != client_id:
                    return error_reply(400, "invalid_grant", "Invalid refresh token")
                # Rotation: the old refresh token stops working (reference §7).
                db.execute("UPDATE refresh_tokens SET used = 1 WHERE refresh_token = ?", (refresh,))
            return Reply(200, self.issue_tokens(client_id, row["scope"], row["user_id"]))
        code = params.get("code")
        if _empty(code) or not isinstance(code, str):
            return error_reply(400, "invalid_request", "code is required")
        with self.store.transaction() as db:
            row = db.execute("SELECT * FROM auth_codes WHERE code = ?", (code,)).fetchone()
            if row is None or row["used"] or row["expires"] <= now:
                return error_reply(400, "invalid_grant", "Invalid authorization code")
            db.execute("UPDATE auth_codes SET used = 1 WHERE code = ?", (code,))
        return Reply(200, self.issue_tokens(client_id, SCOPES, 1))

    def oauth_authorize(self, params: dict[str, Any]) -> Reply:
        """``/oauth/authorize/?client_id=...&state=...``: the user is "already logged in" and consents.

        With a redirect_uri configured it redirects there with ``code, state, domain, member_id,
        scope, server_domain``; without one it shows the code on a page (as the documentation
        describes for applications without a redirect address).
        """
        if params.get("client_id") != self.client_id:
            return html_reply(400, "Authorization error", "The application is not installed on this portal.")
        code = self.issue_code()
        query = {"code": code, "state": params.get("state", ""), "domain": self.domain,
                 "member_id": self.member_id, "scope": SCOPES, "server_domain": self.domain}
        if self.config.redirect_uri:
            sep = "&" if "?" in self.config.redirect_uri else "?"
            return Reply(302, b"", "text/html; charset=utf-8",
                         {"Location": self.config.redirect_uri + sep + urlencode(query)})
        body = ("<!DOCTYPE html>\n<html><head><title>Authorization code</title></head><body>"
                f"<p>Authorization code for the application (valid 30 seconds):</p>"
                f'<code id="code">{code}</code>'
                f'<a id="redirect" href="?{urlencode(query)}">{urlencode(query)}</a></body></html>\n')
        return Reply(200, body.encode("utf-8"), "text/html; charset=utf-8")

    # ------------------------------------------------------------------------- authentication
    def authenticate(self, method: str, token: Any, webhook: tuple[str, str] | None) -> Caller:
        """The caller of a REST request, or ApiError 401/403 (reference §1, §2)."""
        if webhook is not None:
            user, code = webhook
            # imconnector.* refuse the webhook authorization type whatever the code (reference §1).
            if method.startswith(APP_ONLY):
                raise ApiError(403, "WRONG_AUTH_TYPE", WRONG_AUTH_TYPE)
            if user != "1" or not secrets.compare_digest(code, self.webhook_code):
                raise ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data")
            return Caller("webhook", "webhook:1", frozenset(SCOPES.split(",")), 1)
        # unknown: the code for a request without auth; the sandbox answers as for a wrong token.
        if _empty(token) or not isinstance(token, str):
            raise ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        row = self.store.one("SELECT * FROM tokens WHERE access_token = ?", (token,))
        if row is None:
            raise ApiError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        if row["expires"] <= self.clock.now():
            raise ApiError(401, "expired_token", "The access token provided has expired")
        return Caller("oauth", row["client_id"], frozenset(row["scope"].split(",")), row["user_id"], token)

    def authorize(self, caller: Caller, method: str) -> None:
        """Auth type and scope checks for one method (also for each command of a batch)."""
        if method.startswith(APP_ONLY) and caller.kind != "oauth":
            raise ApiError(403, "WRONG_AUTH_TYPE", WRONG_AUTH_TYPE)
        needed = METHOD_SCOPES.get(method)
        if needed is None and method.startswith(("imconnector.", "imopenlines.")):
            needed = IMOPENLINES_SCOPE
        if needed is not None and needed not in caller.scope:
            raise ApiError(403, "insufficient_scope",
                           "The request requires higher privileges than provided by the access token")

    # ------------------------------------------------------------------------- REST
    def time_info(self, caller: Caller | None, method: str, start: float,
                  processing: float) -> dict[str, Any]:
        """The ``time`` object (reference §1): start, finish, duration, processing, dates, operating."""
        finish = self.clock.now()
        operating, reset_at = self.ledger.status(caller.app if caller else "-", method, finish)
        return {"start": start, "finish": finish, "duration": finish - start, "processing": processing,
                "date_start": _iso(start), "date_finish": _iso(finish),
                "operating_reset_at": reset_at, "operating": operating}

    def rest(self, method: str, params: dict[str, Any], token: Any, webhook: tuple[str, str] | None,
             ip: str) -> Reply:
        """One HTTP request to ``/rest/<method>``: bucket, method, auth, operating time, then the method."""
        start = self.clock.now()
        if self.config.limits and not self.bucket.admit(ip):
            return error_reply(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
        if method not in METHODS:
            return error_reply(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        try:
            caller = self.authenticate(method, token, webhook)
            self.authorize(caller, method)
        except ApiError as exc:
            return error_reply(exc.status, exc.code, exc.description)
        work = Work(self.clock, self.config.request_cap, self.next_request(), store=self.store)
        try:
            if method == "batch":
                result = self.batch(caller, params, work)
                time_info = self.time_info(caller, method, start, work.spent)
                return Reply(200, {"result": result, "time": time_info})
            result, processing = self.execute(caller, method, params, work)
        except ApiError as exc:
            return error_reply(exc.status, exc.code, exc.description)
        except CutOff:
            # The request cap (60 s) cuts the request off: what ran so far stays committed and the
            # client gets what the proxy sends on a timeout (unknown: the real answer's shape).
            return html_reply(504, "504 Gateway Time-out", "The request was cut off at the processing limit.")
        body: dict[str, Any] = {"result": result}
        if isinstance(result, Paged):  # a list method: total (and next) beside the result
            body = {"result": result.items, "total": result.total}
            if result.next is not None:
                body["next"] = result.next
        body["time"] = self.time_info(caller, method, start, processing)
        return Reply(200, body)

    def execute(self, caller: Caller, method: str, params: dict[str, Any], work: Work) -> tuple[Any, float]:
        """Run one method (top level or inside a batch) with its own operating-time account."""
        if self.config.limits and self.ledger.blocked(caller.app, method):
            raise ApiError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")
        started, spent_before = self.clock.now(), work.spent
        try:
            work.spend(self.config.cost_per_call)
            return METHODS[method](self, caller, params, work), work.spent - spent_before
        finally:
            # Errors and cut-off calls still used server time: it is charged all the same.
            self.ledger.charge(caller.app, method, started, work.spent - spent_before)

    def batch(self, caller: Caller, params: dict[str, Any], work: Work) -> dict[str, Any]:
        """``batch`` (reference §4): ≤ 50 commands run in order; per-key results, errors and times."""
        cmd = params.get("cmd")
        commands: list[tuple[Any, Any]] = []
        if isinstance(cmd, dict):
            commands = list(cmd.items())
        elif isinstance(cmd, list):
            commands = list(enumerate(cmd))
        if len(commands) > 50:
            raise ApiError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
        halt = _truthy(params.get("halt", 0))
        results: dict[Any, Any] = {}
        errors: dict[Any, Any] = {}
        times: dict[Any, Any] = {}
        totals: dict[Any, Any] = {}
        nexts: dict[Any, Any] = {}
        for key, command in commands:
            sub_start = self.clock.now()
            text = command if isinstance(command, str) else ""
            name, _, query = text.partition("?")
            name = name.strip().lower().removesuffix(".json")
            try:
                if name == "batch":
                    raise ApiError(405, "ERROR_BATCH_METHOD_NOT_ALLOWED",
                                   "Method is not allowed for batch usage")
                if name not in METHODS:
                    raise ApiError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
                self.authorize(caller, name)
                sub_params = decode_query(query)
                sub_params.pop("auth", None)  # the batch's own authorization is used
                result, processing = self.execute(caller, name, sub_params, work)
            except ApiError as exc:
                errors[key] = {"error": exc.code, "error_description": exc.description}
                if halt:
                    break
                continue
            if isinstance(result, Paged):
                totals[key] = result.total
                if result.next is not None:
                    nexts[key] = result.next
                result = result.items
            results[key] = result
            times[key] = self.time_info(caller, name, sub_start, processing)
        return {"result": php_array(results), "result_error": php_array(errors),
                "result_total": php_array(totals), "result_next": php_array(nexts),
                "result_time": php_array(times)}

    # ------------------------------------------------------------------------- shared checks
    def line_or_fail(self, value: Any) -> int:
        """An existing, active open line id, or 400 NOT_ACTIVE_LINE."""
        line = _int(value)
        row = self.store.line(line) if line is not None else None
        if row is None or row["active"] != "Y":
            raise ApiError(400, "NOT_ACTIVE_LINE", NOT_ACTIVE_LINE)
        assert line is not None
        return line

    def connector_row(self, value: Any) -> Any:
        """The registered connector called ``value`` (case-insensitive), or None."""
        if not isinstance(value, str | int):
            return None
        return self.store.one("SELECT * FROM connectors WHERE id = ?", (str(value).lower(),))

    def active_connector(self, value: Any, line: int) -> Any:
        """A connector registered and active on ``line``, or 400 IMCONNECTOR_NO_CORRECT_PROVIDER."""
        if isinstance(value, str | int):  # the connector and its link to the line in one look-up
            row = self.store.one(
                "SELECT c.*, cl.active AS line_active FROM connectors c LEFT JOIN connector_lines cl "
                "ON cl.connector = c.id AND cl.line = ? WHERE c.id = ?", (line, str(value).lower()))
            if row is not None and row["line_active"]:
                return row
        raise ApiError(400, "IMCONNECTOR_NO_CORRECT_PROVIDER", NO_CORRECT_PROVIDER)

    def message_items(self, params: dict[str, Any]) -> tuple[Any, int, list[dict[str, Any]]]:
        """The request-level checks shared by send/update/delete.messages (reference §6)."""
        connector = required(params, "CONNECTOR")
        line_value = required(params, "LINE")
        messages = required(params, "MESSAGES")
        items = php_list(messages)
        if items is None:
            raise ApiError(400, "ERROR_ARGUMENT", MESSAGES_NOT_ARRAY)
        for item in items:
            if not isinstance(item, dict | list):
                raise ApiError(400, "ERROR_ARGUMENT", MESSAGES_NOT_ARRAYS)
        for item in items:
            if not isinstance(item, dict) or not all(isinstance(item.get(k), dict | list) for k in
                                                     ("user", "message", "chat")):
                raise ApiError(400, "ERROR_ARGUMENT", MESSAGE_BAD_STRUCTURE)
        line = self.line_or_fail(line_value)
        row = self.active_connector(connector, line)
        limit = self.config.max_messages
        if limit is not None and len(items) > limit:
            # unknown: the real maximum and its error; the sandbox refuses the whole call.
            raise ApiError(400, "ERROR_ARGUMENT",
                           f"The MESSAGES parameter must contain at most {limit} messages")
        return row, line, [_as_dict_item(i) for i in items]


def required(params: dict[str, Any], name: str) -> Any:
    """A required argument, or 400 ERROR_ARGUMENT "Argument 'NAME' is null or empty"."""
    value = params.get(name)
    if _empty(value):
        raise ApiError(400, "ERROR_ARGUMENT", f"Argument '{name}' is null or empty")
    return value


def _as_dict_item(item: dict[str, Any]) -> dict[str, Any]:
    out = dict(item)
    for key in ("user", "message", "chat"):
        block = out[key]
        out[key] = block if isinstance(block, dict) else {str(i): v for i, v in enumerate(block)}
    return out


# ----------------------------------------------------------------------------- helper methods
@method("batch")
def _batch(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    # Only reached for a batch inside a batch; Portal.rest runs the top-level batch itself.
    raise ApiError(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")


@method("app.info")
def _app_info(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    if caller.kind != "oauth":
        raise ApiError(400, "ACCESS_DENIED", "Access denied! Application context required")
    return {"ID": 1, "CODE": portal.client_id, "VERSION": 1, "STATUS": "L", "INSTALLED": True,
            "PAYMENT_EXPIRED": "N", "DAYS": None, "LANGUAGE_ID": "en", "LICENSE": "en_std",
            "LICENSE_TYPE": "std", "LICENSE_FAMILY": "std"}


@method("scope")
def _scope(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    return sorted(caller.scope)


@method("server.time")
def _server_time(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    return _iso(portal.clock.now())


@method("profile")
def _profile(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    return {"ID": str(caller.user_id), "ADMIN": caller.user_id == chatlog.ADMIN_USER,
            "NAME": "Sandbox",
            "LAST_NAME": "Administrator" if caller.user_id == chatlog.ADMIN_USER else "Employee",
            "PERSONAL_GENDER": "", "TIME_ZONE": ""}


# ----------------------------------------------------------------------------- open lines
def _line_object(row: Any) -> dict[str, Any]:
    """The line object of imopenlines.config.get (the documented fields; see lineconfig.py)."""
    return lineconfig.line_object(row)


_LINE_FIELDS = lineconfig.FIELDS
_PARAMS_KEYS = ("select", "filter", "order", "limit", "offset")
_OPTIONS_KEYS = ("QUEUE", "CONFIG_QUEUE", "CHECK_PERMISSION")
_PERMISSIONS = ("VIEW", "MODIFY", "JOIN", "TRANSFER", "SESSION", "HISTORY", "SETTINGS", "CONNECTORS",
                "STATISTIC", "VOTEHEAD")


def _bad_format(text: str) -> ApiError:
    return ApiError(400, "INVALID_FORMAT", text)


@method("imopenlines.config.get")
def _config_get(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    config_id = _int(params.get("CONFIG_ID"))
    if config_id is None or config_id <= 0:
        raise ApiError(400, "CONFIG_ID_EMPTY", "Config ID can't be empty")
    row = portal.store.line(config_id)
    if row is None:
        return False
    line = _line_object(row)
    if _truthy(params.get("WITH_QUEUE", "N")):
        users = lineconfig.queue(row)
        fields = {"USER_NAME": None, "USER_WORK_POSITION": None, "USER_AVATAR": None, "USER_AVATAR_ID": "0"}
        line.update({"QUEUE": users, "QUEUE_FULL": {u: {"ID": str(i + 1), "SORT": str(i), "USER_ID": u,
                                                         "DEPARTMENT_ID": "0", **fields}
                                                     for i, u in enumerate(users)},
                     "QUEUE_USERS_FIELDS": {u: dict(fields) for u in users}})
    return line


def _nonneg(value: Any, name: str, default: int) -> int:
    if value is None:
        return default
    number = _int(value)
    if number is None or number < 0:
        raise _bad_format(f"A non-negative integer is expected in the PARAMS field '{name}'")
    return number


def _field_name(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise _bad_format(f"A wrong field name is passed in the PARAMS field '{where}'")
    name = raw.strip().upper()
    if name not in _LINE_FIELDS:
        raise _bad_format(f"An unknown field '{raw}' is passed in the PARAMS field '{where}'")
    return name


@method("imopenlines.config.list.get")
def _config_list(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    query = params.get("PARAMS") or {}
    options = params.get("OPTIONS") or {}
    if not isinstance(query, dict):
        query = {}
    if not isinstance(options, dict):
        options = {}
    extra = [k for k in query if k not in _PARAMS_KEYS]
    if extra:
        raise _bad_format(f"Unsupported PARAMS fields are passed: {', '.join(map(str, extra))}")
    extra = [k for k in options if k not in _OPTIONS_KEYS]
    if extra:
        raise _bad_format(f"Unsupported OPTIONS fields are passed: {', '.join(map(str, extra))}")
    select: list[str] | None = None
    if "select" in query:
        names = php_list(query["select"])
        if names is None:
            raise _bad_format("A wrong format for the PARAMS field 'select' is passed")
        select = [_field_name(n, "select") for n in names]
    order: list[tuple[str, bool]] = []
    if "order" in query:
        if not isinstance(query["order"], dict):
            raise _bad_format("A wrong format for the PARAMS field 'order' is passed")
        for raw, direction in query["order"].items():
            name = _field_name(raw, "order")
            if not isinstance(direction, str) or direction.upper() not in ("ASC", "DESC"):
                raise _bad_format("A wrong sorting direction is passed in the PARAMS field 'order'")
            order.append((name, direction.upper() == "DESC"))
    filters: list[tuple[str, bool, Any]] = []
    if "filter" in query:
        if not isinstance(query["filter"], dict):
            raise _bad_format("A wrong format for the PARAMS field 'filter' is passed")
        for raw, value in query["filter"].items():
            negate = isinstance(raw, str) and raw.startswith("!")
            bare = raw.lstrip("!=") if isinstance(raw, str) else raw
            filters.append((_field_name(bare, "filter"), negate, value))
    limit = min(_nonneg(query.get("limit"), "limit", 50), 200)
    offset = _nonneg(query.get("offset"), "offset", 0)
    for key in ("QUEUE", "CONFIG_QUEUE"):
        if key in options and isinstance(options[key], dict | list):
            raise _bad_format(f"A wrong format for the OPTIONS field '{key}' is passed")
    if "CHECK_PERMISSION" in options and str(options["CHECK_PERMISSION"]).upper() not in _PERMISSIONS:
        raise _bad_format("An unknown value for the OPTIONS field 'CHECK_PERMISSION' is passed")
    rows = [_line_object(r) for r in portal.store.all("SELECT * FROM lines ORDER BY id")]

    def keep(line: dict[str, Any]) -> bool:
        for name, negate, value in filters:
            values = php_list(value)
            wanted = [str(v) for v in values] if values is not None else [str(value)]
            if (str(line[name]) in wanted) == negate:
                return False
        return True

    rows = [r for r in rows if keep(r)]
    def sort_key(name: str) -> Callable[[dict[str, Any]], tuple[bool, int, str]]:
        return lambda r: (_int(r[name]) is None, _int(r[name]) or 0, str(r[name]))

    for name, desc in reversed(order):
        rows.sort(key=sort_key(name), reverse=desc)
    rows = rows[offset : offset + limit]
    out = []
    queues = {r["id"]: lineconfig.queue(r) for r in portal.store.all("SELECT * FROM lines")}
    for line in rows:
        item = {k: line[k] for k in select} if select else dict(line)
        if _truthy(options.get("QUEUE", "N")):
            item.update({"QUEUE": [int(u) for u in queues.get(int(line["ID"]), [])],
                         "QUEUE_USERS_FIELDS": {}})
        if _truthy(options.get("CONFIG_QUEUE", "N")):
            item["CONFIG_QUEUE"] = []
        out.append(item)
    return out


# ----------------------------------------------------------------------------- connector life cycle
def _register_error(code: str, description: str) -> dict[str, Any]:
    return {"result": False, "error": code, "error_description": description}


@method("imconnector.register")
def _register(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    raw_id = params.get("ID")
    if not isinstance(raw_id, str) or not raw_id.strip():
        return _register_error("CONNECTOR_ID_REQUIRED", "Connector ID is not specified")
    connector_id = raw_id.strip().lower()
    if "." in connector_id:
        return _register_error("APPLICATION_REGISTRATION_ERROR_POINT",
                               "Application registration error. Using a dot in the connector identifier "
                               "is not allowed")
    name = params.get("NAME")
    if not isinstance(name, str) or not name.strip():
        return _register_error("NAME_REQUIRED", "Connector name is not specified")
    icon = params.get("ICON")
    if not isinstance(icon, dict) or not isinstance(icon.get("DATA_IMAGE"), str) or not icon["DATA_IMAGE"]:
        return _register_error("ICON_REQUIRED", "Connector icon is not specified")
    handler = params.get("PLACEMENT_HANDLER")
    if not isinstance(handler, str) or not handler.strip():
        return _register_error("NO_PLACEMENT_HANDLER", "Failed to get embedding handler URL")
    if not _CONNECTOR_ID_RE.match(connector_id):
        # unknown: what other characters do; the documentation allows digits, letters and "_".
        return _register_error("GENERAL_CONNECTOR_REGISTRATION_ERROR", "General connector registration error")
    options = {k: params[k] for k in ("ICON_DISABLED", "DEL_EXTERNAL_MESSAGES", "EDIT_INTERNAL_MESSAGES",
                                      "DEL_INTERNAL_MESSAGES", "NEWSLETTER", "NEED_SYSTEM_MESSAGES",
                                      "NEED_SIGNATURE") if k in params}
    chat_group = 1 if _truthy(params.get("CHAT_GROUP", False)) else 0
    now = portal.clock.now()
    portal.store.run(
        "INSERT INTO connectors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
        "name = excluded.name, icon = excluded.icon, placement_handler = excluded.placement_handler, "
        "chat_group = excluded.chat_group, options = excluded.options, updated = excluded.updated",
        (connector_id, name, dumps(icon), handler, chat_group, dumps(options), caller.app, now, now))
    return {"result": True}


@method("imconnector.unregister")
def _unregister(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    row = portal.connector_row(params.get("ID"))
    if row is None:
        return _register_error("APPLICATION_UNREGISTRATION_ERROR", "Error unregistering the application")
    with portal.store.transaction() as db:
        db.execute("DELETE FROM connectors WHERE id = ?", (row["id"],))
        db.execute("DELETE FROM connector_lines WHERE connector = ?", (row["id"],))
    return {"result": True}


def _existing_line(value: Any) -> int:
    """activate/data.set accept any existing line, active or not (unknown: the real check)."""
    line = _int(value)
    return line if line is not None else -1


def _line_and_connector(portal: Portal, line_value: Any, connector: Any) -> tuple[int, Any]:
    """The existing line and the registered connector a set-up call names, or the portal's error."""
    line = _existing_line(line_value)
    if portal.store.line(line) is None:
        raise ApiError(400, "NOT_ACTIVE_LINE", NOT_ACTIVE_LINE)
    row = portal.connector_row(connector)
    if row is None:
        raise ApiError(400, "IMCONNECTOR_NO_CORRECT_PROVIDER", NO_CORRECT_PROVIDER)
    return line, row


@method("imconnector.activate")
def _activate(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    connector = required(params, "CONNECTOR")
    line_value = required(params, "LINE")
    active = params.get("ACTIVE")
    if active is None or active == "":
        raise ApiError(400, "ERROR_ARGUMENT", "Argument 'ACTIVE' is null or empty")
    line, row = _line_and_connector(portal, line_value, connector)
    # "Any non-empty value enables the connector, while an empty value or 0 disables it"; N too.
    on = 0 if str(active).strip().upper() in ("0", "N", "FALSE") or active is False else 1
    portal.store.run(
        "INSERT INTO connector_lines (connector, line, active, updated) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (connector, line) DO UPDATE SET active = excluded.active, updated = excluded.updated",
        (row["id"], line, on, portal.clock.now()))
    return True


@method("imconnector.connector.data.set")
def _data_set(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    connector = required(params, "CONNECTOR")
    line_value = required(params, "LINE")
    data = required(params, "DATA")
    if not isinstance(data, dict):
        raise ApiError(400, "ERROR_ARGUMENT", "Argument 'DATA' is null or empty")
    line, row = _line_and_connector(portal, line_value, connector)
    portal.store.run(  # DATA is replaced as a whole (reference §5)
        "INSERT INTO connector_lines (connector, line, active, data, updated) VALUES (?, ?, 0, ?, ?) "
        "ON CONFLICT (connector, line) DO UPDATE SET data = excluded.data, updated = excluded.updated",
        (row["id"], line, dumps(data), portal.clock.now()))
    return True


@method("imconnector.status")
def _status(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    connector = required(params, "CONNECTOR")
    line = _int(params.get("LINE", 0)) or 0
    row = portal.connector_row(connector)
    active = False
    if row is not None:
        link = portal.store.one("SELECT active FROM connector_lines WHERE connector = ? AND line = ?",
                                (row["id"], line))
        active = bool(link is not None and link["active"] and portal.store.line(line) is not None)
    # Activation alone makes a REST connector configured and ready (unknown: whether the real
    # portal also wants connector.data.set first; the sandbox does not).
    return {"LINE": line, "CONNECTOR": str(connector).lower(), "ERROR": False, "CONFIGURED": active,
            "STATUS": active}


@method("imconnector.list")
def _list(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    out = dict(BUILTIN_CONNECTORS)
    for row in portal.store.all("SELECT id, name FROM connectors ORDER BY registered"):
        out[row["id"]] = row["name"]
    return out


# ----------------------------------------------------------------------------- messages
def _clean_name(value: Any, field_name: str, flags: list[str]) -> str | None:
    """name / last_name: letters, spaces, hyphens, apostrophes, ≤ 25 characters (reference §6).

    unknown: what the portal does with a violation; the sandbox keeps the user, cuts the name at 25
    characters, and flags both problems in ``store.users().flags``.
    """
    text = _scalar_text(value)
    if text is None:
        return None
    if not _NAME_RE.match(text):
        flags.append(f"{field_name}-invalid-characters")
    if len(text) > NAME_LIMIT:
        flags.append(f"{field_name}-truncated")
        text = text[:NAME_LIMIT]
    return text


def _user_fields(user: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    flags: list[str] = []
    fields: dict[str, Any] = {
        "name": _clean_name(user.get("name"), "name", flags),
        "last_name": _clean_name(user.get("last_name"), "last_name", flags),
    }
    gender = user.get("gender", user.get("sex"))
    if gender is not None and gender not in ("male", "female"):
        flags.append("bad-gender")  # unknown: the sandbox ignores an unsupported gender
        gender = None
    fields["gender"] = gender
    email = _scalar_text(user.get("email"))
    if email is not None and not _EMAIL_RE.match(email):
        flags.append("email-dropped")
        email = None
    fields["email"] = email
    phone = _scalar_text(user.get("phone"))
    if phone is not None and not _PHONE_RE.match(phone) and user.get("skip_phone_validate") != "Y":
        flags.append("phone-dropped")  # the phone validator refuses it unless skip_phone_validate=Y
        phone = None
    fields["phone"] = phone
    picture = user.get("picture")
    fields["picture"] = _scalar_text(picture.get("url")) if isinstance(picture, dict) else None
    fields["url"] = _scalar_text(user.get("url"))
    return fields, flags


def _files(value: Any, flags: list[str]) -> list[dict[str, Any]]:
    items = php_list(value) if value is not None else []
    if items is None:
        flags.append("bad-files")
        return []
    files = []
    for item in items:
        url = _scalar_text(item.get("url")) if isinstance(item, dict) else None
        if url is None:
            flags.append("bad-file")
            continue
        entry = {"url": url}
        name = _scalar_text(item.get("name"))
        if name is not None:
            entry["name"] = name
        files.append(entry)
    return files


def _chat_echo(chat: dict[str, Any], with_name: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"id": chat.get("id")}
    if with_name and chat.get("name") is not None:
        out["name"] = chat.get("name")
    url = _scalar_text(chat.get("url"))
    if url is not None:
        out["description"] = f"Link to the original post: {url}"
    return out


def _user_for(portal: Portal, connector: str, external_id: str, user: dict[str, Any]) -> int:
    """The technical user for an external user id (created on first sight)."""
    store = portal.store
    with store.lock:  # look-up and creation as one step (the insert is a single atomic statement)
        row = store.one("SELECT id FROM users WHERE connector = ? AND external_id = ? ORDER BY id LIMIT 1",
                        (connector, external_id))
        if row is not None:
            return int(row["id"])
        fields, flags = _user_fields(user)
        return store.insert_next(
            "users", USER_ID_FLOOR,
            (connector, external_id, fields["name"], fields["last_name"], fields["gender"], fields["email"],
             fields["phone"], fields["picture"], fields["url"], ",".join(flags), portal.clock.now()))


def _validate_item(item: dict[str, Any], need_content: bool) -> tuple[list[str], str | None, str | None]:
    errors: list[str] = []
    user_id = _scalar_text(item["user"].get("id"))
    chat_id = _scalar_text(item["chat"].get("id"))
    if user_id is None:
        errors.append(ITEM_NO_USER_ID)
    if chat_id is None:
        errors.append(ITEM_NOT_ALL_DATA)
    if need_content:
        message = item["message"]
        text = _scalar_text(message.get("text"))
        files = php_list(message.get("files")) if message.get("files") is not None else None
        if text is None and not files and ITEM_NOT_ALL_DATA not in errors:
            errors.append(ITEM_NOT_ALL_DATA)
    return errors, user_id, chat_id


def _failed(item: dict[str, Any], errors: list[str]) -> dict[str, Any]:
    message = {k: item["message"].get(k) for k in ("id",) if k in item["message"]}
    return {"message": message, "chat": _chat_echo(item["chat"]), "SUCCESS": False, "ERRORS": errors}


@method("imconnector.send.messages")
def _send(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    connector_row, line, items = portal.message_items(params)
    connector = connector_row["id"]
    chat_group = bool(connector_row["chat_group"])
    request = work.request
    half = portal.config.cost_per_message / 2
    line_row = portal.store.line(line)
    results = []
    for item in items:
        errors, ext_user, ext_chat = _validate_item(item, need_content=True)
        message, chat, user = item["message"], item["chat"], item["user"]
        operator = message.get("user_id")
        author = None
        if operator is not None and operator != "":
            author = _int(operator)
            # user_id 0 posts as the portal's system user (reference 2 §4 #4, estvita/separator#5)
            if author is None or author < 0:
                errors.append(ITEM_BAD_OPERATOR)
        # Older docs make message.id and message.date (unix seconds) required; whether today's
        # portal accepts an item without them is unknown, so the sandbox takes the strict reading
        # (reference: never rely on the lenient one) and fails the item.
        incomplete = _scalar_text(message.get("id")) is None or _int(message.get("date")) is None
        if incomplete and ITEM_NOT_ALL_DATA not in errors:
            errors.append(ITEM_NOT_ALL_DATA)
        # Every item, failed or not, costs the portal its per-message time.
        work.spend(half)
        if errors:
            work.spend(portal.config.cost_per_message - half)
            results.append(_failed(item, errors))
            continue
        assert ext_user is not None and ext_chat is not None
        flags: list[str] = []
        b24_user = _user_for(portal, connector, ext_user, user)
        entity = f"{connector}|{line}|{ext_chat}" + ("" if chat_group else f"|{ext_user}")
        found = portal.store.one("SELECT id FROM chats WHERE entity_id = ? ORDER BY id LIMIT 1", (entity,))
        # Creating a chat takes time and is not re-checked afterwards: two requests for the same new
        # conversation in flight at once create two dialogs, as connector authors report (ref. §6).
        work.spend(portal.config.cost_per_message - half)
        files = _files(message.get("files"), flags)
        fetched = _fetch_files(portal, files)  # outside the store lock: the url may be the sandbox's own
        now = portal.clock.now()
        with portal.store.transaction() as db:
            if found is None:
                chat_b24 = portal.store.insert_next("chats", CHAT_ID_FLOOR, (
                    connector, line, ext_chat, "" if chat_group else ext_user, entity,
                    _scalar_text(chat.get("name")), _scalar_text(chat.get("url")), now))
            else:
                chat_b24 = int(found["id"])
            # A chat created just now has no session yet (its id is above every stored chat id).
            session = None if found is None else db.execute(
                "SELECT id FROM sessions WHERE chat = ? AND closed IS NULL ORDER BY id LIMIT 1",
                (chat_b24,)).fetchone()
            if session is None:
                session_id = portal.store.insert_next("sessions", SESSION_ID_FLOOR, (chat_b24, now, None))
            else:
                session_id = int(session["id"])
            new_session = session is None
            date = _int(message.get("date"))
            assert date is not None  # checked above: an item without a date fails
            text = _scalar_text(message.get("text"))
            if text is not None and len(text) > TEXT_LIMIT:
                flags.append("text-truncated")
                text = text[:TEXT_LIMIT]
            message_id = _scalar_text(message.get("id"))
            disable_crm = message.get("disable_crm") == "Y"
            seq = db.execute(
                "INSERT INTO messages (line, connector, chat_id, user_id, message_id, date, text, files, "
                "author_id, b24_user_id, b24_chat_id, session_id, received, request, disable_crm, flags) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (line, connector, ext_chat, ext_user, message_id, date, text, _stored(files), author,
                 b24_user, chat_b24, session_id, now, request, int(disable_crm), ",".join(flags))).lastrowid
            _record_arrival(db, line_row, seq, chat_b24, session_id, b24_user, author, new_session, fetched,
                            now)
        results.append(_sent_item(item, b24_user, text, files, disable_crm or chat_group, session_id,
                                  chat_b24))
    # unknown: the top-level SUCCESS when some items fail; the sandbox says true only if all succeeded.
    return {"SUCCESS": all(r["SUCCESS"] for r in results), "DATA": {"RESULT": results}}


def _sent_item(item: dict[str, Any], b24_user: int, text: str | None, files: list[dict[str, Any]],
               no_tracker: bool, session_id: int, chat_b24: int) -> dict[str, Any]:
    """One successful item of send.messages' ``DATA.RESULT`` (reference §6)."""
    extra: dict[str, str] = {}
    if item["user"].get("skip_phone_validate") == "Y":
        extra["skip_phone_validate"] = "Y"
    if no_tracker:
        extra["disable_tracker"] = "Y"
    return {
        "user": str(b24_user),
        "message": {"id": item["message"].get("id"), "date": {}, "text": text if text is not None else "",
                    "files": files},
        "chat": _chat_echo(item["chat"]),
        "extra": extra or [],
        "SUCCESS": True,
        "session": {"ID": str(session_id), "CHAT_ID": str(chat_b24)},
    }


def _stored(files: list[dict[str, Any]]) -> str:
    """``files`` as stored: a token in a URL (a Drive DOWNLOAD_URL carries one) is blanked to ``***``."""
    return dumps([{**f, "url": redact(f["url"])} for f in files])


def _fetch_files(portal: Portal, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fetch every file of a message as the portal does on receipt (see fetch.py)."""
    out = []
    for entry in files:
        outcome = fetch(entry["url"], portal.config.fetch_timeout)
        outcome.update(url=redact(entry["url"]), name=entry.get("name"))
        out.append(outcome)
    return out


def _record_downloads(db: Any, seq: int, fetched: list[dict[str, Any]], now: float) -> None:
    """What the portal could fetch of each file of message ``seq`` (``store.downloads()``)."""
    for position, outcome in enumerate(fetched):
        db.execute("INSERT INTO downloads (seq, position, url, name, status, http_status, size, sha256, "
                   "content_type, error, fetched) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (seq, position, outcome["url"], outcome["name"], outcome["status"], outcome["http_status"],
                    outcome["size"], outcome["sha256"], outcome["content_type"], outcome["error"], now))


def _record_arrival(db: Any, line_row: Any, seq: int | None, chat: int, session: int, client: int,
                    operator: int | None, new_session: bool, fetched: list[dict[str, Any]],
                    now: float) -> None:
    """The messenger side of a stored connector message: its chat message, its files, the session's
    start (members, welcome text) and the operator's membership.

    A file the portal could not fetch is recorded and left out of the chat (plausibly what the real
    portal does: it posts the message without the file; unknown: whether it says so in the chat).
    """
    assert seq is not None
    _record_downloads(db, seq, fetched, now)
    chatlog.add_message(db, chat, session, client if operator is None else operator, now, seq=seq)
    if new_session:
        chatlog.session_started(db, line_row, chat, session, client, now)
    if operator:  # the system user (0) is no member
        chatlog.add_member(db, chat, operator, now)


def _locate(portal: Portal, connector: str, line: int, chat_id: str, message_id: str | None) -> list[Any]:
    if message_id is None:
        return []
    return portal.store.all(
        "SELECT * FROM messages WHERE connector = ? AND line = ? AND chat_id = ? AND message_id = ? "
        "AND deleted IS NULL ORDER BY seq", (connector, line, chat_id, message_id))


@method("imconnector.update.messages")
def _update(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    connector_row, line, items = portal.message_items(params)
    results = []
    for item in items:
        work.spend(portal.config.cost_per_message)
        errors, _, ext_chat = _validate_item(item, need_content=True)
        message = item["message"]
        message_id = _scalar_text(message.get("id"))
        rows = [] if errors else _locate(portal, connector_row["id"], line, str(ext_chat), message_id)
        if not errors and not rows:
            errors.append(ITEM_NOT_FOUND)
        if errors:
            results.append(_failed(item, errors))
            continue
        flags: list[str] = []
        text = _scalar_text(message.get("text"))
        files = _files(message.get("files"), flags)
        fetched = _fetch_files(portal, files)  # new files are fetched as on arrival; they replace the old
        now = portal.clock.now()
        with portal.store.transaction() as db:
            for row in rows:  # every stored copy of that message id
                db.execute("UPDATE messages SET text = COALESCE(?, text), files = ?, updated = ? "
                           "WHERE seq = ?",
                           (text, _stored(files) if files else row["files"], now, row["seq"]))
                if files:
                    db.execute("DELETE FROM downloads WHERE seq = ?", (row["seq"],))
                    _record_downloads(db, int(row["seq"]), fetched, now)
        results.append({"user": str(rows[-1]["b24_user_id"]),
                        "message": {"id": message.get("id"), "date": {}, "text": text or ""},
                        "chat": _chat_echo(item["chat"]), "SUCCESS": True})
    return {"SUCCESS": all(r["SUCCESS"] for r in results), "DATA": {"RESULT": results}}


@method("imconnector.delete.messages")
def _delete(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    connector_row, line, items = portal.message_items(params)
    results = []
    for item in items:
        work.spend(portal.config.cost_per_message)
        errors, _, ext_chat = _validate_item(item, need_content=False)
        message_id = _scalar_text(item["message"].get("id"))
        if message_id is None and not errors:
            errors.append(ITEM_NOT_ALL_DATA)
        rows = [] if errors else _locate(portal, connector_row["id"], line, str(ext_chat), message_id)
        if not errors and not rows:
            errors.append(ITEM_NOT_FOUND)
        if errors:
            results.append(_failed(item, errors))
            continue
        now = portal.clock.now()
        with portal.store.transaction() as db:
            for row in rows:
                db.execute("UPDATE messages SET deleted = ? WHERE seq = ?", (now, row["seq"]))
        chat = {"id": item["chat"].get("id")}
        if _scalar_text(item["chat"].get("url")) is not None:
            chat["description"] = f"Link to the original post: {item['chat']['url']}"
        results.append({"user": str(rows[-1]["b24_user_id"]), "message": {"id": item["message"].get("id")},
                        "chat": chat, "SUCCESS": True})
    return {"SUCCESS": all(r["SUCCESS"] for r in results), "DATA": {"RESULT": results}}


@method("imconnector.chat.name.set")
def _chat_name(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    connector = required(params, "CONNECTOR")
    line_value = required(params, "LINE")
    chat_id = required(params, "CHAT_ID")
    name = required(params, "NAME")
    line = portal.line_or_fail(line_value)
    row = portal.active_connector(connector, line)
    if row["chat_group"]:
        entity = f"{row['id']}|{line}|{_scalar_text(chat_id)}"
    else:
        user_id = required(params, "USER_ID")  # mandatory for connectors without group chats
        entity = f"{row['id']}|{line}|{_scalar_text(chat_id)}|{_scalar_text(user_id)}"
    if portal.store.one("SELECT id FROM chats WHERE entity_id = ?", (entity,)) is None:
        raise ApiError(400, "CHAT_RENAMING_FAILED", "Failed to rename the chat")
    portal.store.run("UPDATE chats SET name = ? WHERE entity_id = ?", (_scalar_text(name), entity))
    return {"SUCCESS": True, "DATA": {"RESULT": {}}}
