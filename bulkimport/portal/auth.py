"""OAuth tokens for the portal: where they come from, refreshing them, and the token file.

Sources, strongest first: explicit arguments, environment variables (``BITRIX24_CLIENT_ID``,
``BITRIX24_CLIENT_SECRET``, ``BITRIX24_ACCESS_TOKEN``, ``BITRIX24_REFRESH_TOKEN``,
``BITRIX24_OAUTH_URL``), the token file (``token_file=``, else ``$BITRIX24_TOKEN_FILE``, else
``$XDG_CONFIG_HOME/bulkimport/tokens.json`` i.e. ``~/.config/bulkimport/tokens.json``).

**Why a newer token file beats stale environment values.** Refresh tokens rotate on every refresh
(reference §7): once a run refreshed, the refresh token still sitting in the environment is dead.
The token file therefore records a SHA-256 fingerprint of every token pair it superseded. On the
next run, if the environment's refresh (or access) token is one the file has already superseded,
the file wins; a token the file has never seen (the user pasted fresh ones) wins over the file.

Refreshing happens reactively on ``expired_token`` and proactively shortly before ``expires``;
one refresh at a time (a lock), and a caller holding a token someone else already refreshed just
gets the new one. The rotated pair is written atomically (temp file + ``os.replace``, mode 0600)
*before* it is used. The client secret goes only to the OAuth server. No token or secret appears
in ``repr``/``str``, log records or exception text; a logging filter scrubs urllib3's debug lines,
which would otherwise print the OAuth server URL with its query string.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from ..clock import Clock, SystemClock, interrupts_deferred
from ..errors import AmbiguousError, AuthError, ConfigError
from .client import USER_AGENT, _is_loopback, error_for

log = logging.getLogger("bulkimport.auth")

DEFAULT_OAUTH_URL = "https://oauth.bitrix.info/oauth/token/"
ENV = {
    "client_id": "BITRIX24_CLIENT_ID",
    "client_secret": "BITRIX24_CLIENT_SECRET",
    "access_token": "BITRIX24_ACCESS_TOKEN",
    "refresh_token": "BITRIX24_REFRESH_TOKEN",
    "oauth_url": "BITRIX24_OAUTH_URL",
    "token_file": "BITRIX24_TOKEN_FILE",
}
#: Refresh this many seconds before ``expires`` (portal clock).
REFRESH_MARGIN = 120.0
_SUPERSEDED_KEEP = 64
#: Pauses (portal seconds) before repeating a refresh the OAuth server failed transiently (no answer,
#: 5xx, 429, a non-JSON page): an unattended run rides out a blip of about two minutes instead of
#: stopping until a human notices. Safe: if the server had rotated the pair and the answer was lost,
#: the repeat gets invalid_grant, which stops the run exactly as before.
OAUTH_RETRY_PAUSES = (2.0, 5.0, 15.0, 30.0, 60.0)


def _fp(secret: str | None) -> str:
    """A short one-way fingerprint of a token (safe to store and compare)."""
    return hashlib.sha256((secret or "").encode()).hexdigest()[:32]


def default_token_file(env: Mapping[str, str] | None = None) -> Path:
    """``$BITRIX24_TOKEN_FILE`` or ``$XDG_CONFIG_HOME/bulkimport/tokens.json`` (~/.config/…)."""
    env = os.environ if env is None else env
    if env.get(ENV["token_file"]):
        return Path(env[ENV["token_file"]]).expanduser()
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "bulkimport" / "tokens.json"


# --------------------------------------------------------------------------------------------------
# Secret scrubbing for log records
# --------------------------------------------------------------------------------------------------
class _SecretFilter(logging.Filter):
    """Replaces every registered secret in a log record's text with ``***``."""

    def __init__(self) -> None:
        super().__init__("bulkimport-secrets")
        self.secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        with self._lock:
            self.secrets.update(v for v in values if v and len(v) >= 6)

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_FILTER = _SecretFilter()
for _name in (
    "urllib3.connectionpool",
    "urllib3",
    "requests",
    "bulkimport",
    "bulkimport.auth",
    "bulkimport.portal",
    "bulkimport.sending",
):
    logging.getLogger(_name).addFilter(_FILTER)


def scrub(text: str) -> str:
    """``text`` with every known secret replaced by ``***`` (for messages built from answers)."""
    return _FILTER.scrub(text)


# --------------------------------------------------------------------------------------------------
# Tokens and the token file
# --------------------------------------------------------------------------------------------------
@dataclass(repr=False)
class Tokens:
    """An access/refresh pair with what the OAuth server said about it (secrets hidden in repr)."""

    access_token: str
    refresh_token: str | None = None
    expires: float | None = None  # unix seconds on the portal clock
    client_endpoint: str | None = None
    domain: str | None = None
    member_id: str | None = None
    scope: str | None = None
    issued_at: float | None = None
    superseded: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"Tokens(access_token=<hidden>, refresh_token=<hidden>, expires={self.expires}, "
            f"domain={self.domain!r})"
        )

    __str__ = __repr__

    def to_json(self, client_id: str | None) -> dict[str, Any]:
        """The token file's content."""
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires": self.expires,
            "client_endpoint": self.client_endpoint,
            "domain": self.domain,
            "member_id": self.member_id,
            "scope": self.scope,
            "issued_at": self.issued_at,
            "client_id": client_id,
            "superseded": self.superseded[-_SUPERSEDED_KEEP:],
        }

    @classmethod
    def from_oauth(cls, data: Mapping[str, Any], now: float) -> Tokens:
        """From an OAuth server answer (``expires`` is absolute; ``expires_in`` relative)."""
        expires = data.get("expires")
        if expires is None and data.get("expires_in") is not None:
            expires = now + float(data["expires_in"])
        return cls(
            access_token=str(data["access_token"]),
            refresh_token=str(data["refresh_token"]) if data.get("refresh_token") else None,
            expires=float(expires) if expires is not None else None,
            client_endpoint=data.get("client_endpoint"),
            domain=data.get("domain"),
            member_id=data.get("member_id"),
            scope=data.get("scope"),
            issued_at=now,
        )


def read_token_file(path: Path) -> tuple[Tokens | None, str | None]:
    """The tokens (and client id) in ``path``; ``(None, None)`` when it does not exist."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"token file {path} cannot be read ({type(exc).__name__}); delete it and run `bulkimport auth`"
        ) from None
    if not isinstance(data, dict) or not data.get("access_token"):
        raise ConfigError(f"token file {path} has no access_token; delete it and run `bulkimport auth`")
    tokens = Tokens(
        access_token=str(data["access_token"]),
        refresh_token=data.get("refresh_token") or None,
        expires=data.get("expires"),
        client_endpoint=data.get("client_endpoint"),
        domain=data.get("domain"),
        member_id=data.get("member_id"),
        scope=data.get("scope"),
        issued_at=data.get("issued_at"),
        superseded=list(data.get("superseded") or []),
    )
    _FILTER.add(tokens.access_token, tokens.refresh_token)
    return tokens, data.get("client_id")


def write_token_file(path: Path, tokens: Tokens, client_id: str | None) -> None:
    """Write ``tokens`` atomically (temp file in the same directory + ``os.replace``), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".tokens-", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(tokens.to_json(client_id), fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable too
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


# --------------------------------------------------------------------------------------------------
# The OAuth server
# --------------------------------------------------------------------------------------------------
def _check_oauth_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname or "")):
        return url
    raise ConfigError(f"BITRIX24_OAUTH_URL {url!r} must be an https:// address (http only for loopback)")


def _oauth_request(
    oauth_url: str,
    params: dict[str, str],
    clock: Clock,
    session: requests.Session | None = None,
    timeout: float = 30.0,
) -> Tokens:
    """GET the OAuth server (as documented) and return the new pair; errors carry no secrets."""
    _FILTER.add(params.get("client_secret"), params.get("refresh_token"), params.get("code"))
    url = _check_oauth_url(oauth_url)
    http = session or requests
    try:
        resp = http.get(
            url + ("&" if "?" in url else "?") + urlencode(params),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=timeout,
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        # Never chain the requests exception: its text holds the URL with the secret.
        raise AmbiguousError(f"the OAuth server did not answer ({type(exc).__name__})") from None
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        code = str(data["error"])
        desc = scrub(str(data.get("error_description") or ""))
        exc2 = error_for(code, desc, resp.status_code)
        if code.lower() == "invalid_grant":
            raise AuthError(
                code,
                "the refresh token is no longer valid (it rotates on every refresh and "
                "lives 180 days): run `bulkimport auth` to authorise again",
                resp.status_code,
            ) from None
        if isinstance(exc2, AuthError):
            raise exc2 from None
        raise AuthError(code, desc or "the OAuth server refused the request", resp.status_code) from None
    if not (isinstance(data, dict) and data.get("access_token")):
        raise AmbiguousError("the OAuth server answered without an access token", resp.status_code)
    tokens = Tokens.from_oauth(data, clock.now())
    _FILTER.add(tokens.access_token, tokens.refresh_token)
    return tokens


def authorize_url(portal: str, client_id: str, state: str | None = None) -> str:
    """The page where a portal administrator approves the application and gets a code (valid 30 s)."""
    from .client import rest_url

    base = rest_url(portal)[: -len("rest/")]
    query = {"client_id": client_id}
    if state:
        query["state"] = state
    return f"{base}oauth/authorize/?{urlencode(query)}"


def exchange_code(
    code: str,
    client_id: str,
    client_secret: str,
    oauth_url: str = DEFAULT_OAUTH_URL,
    token_file: str | os.PathLike[str] | None = None,
    *,
    clock: Clock | None = None,
) -> Tokens:
    """Trade an authorisation code for the first token pair and save it to the token file."""
    clock = clock or SystemClock()
    tokens = _oauth_request(
        oauth_url,
        {
            "grant_type": "authorization_code",
            "client_id": client_id,
            "client_secret": client_secret,
            "code": code,
        },
        clock,
    )
    path = Path(token_file) if token_file else default_token_file()
    write_token_file(path, tokens, client_id)
    log.info("saved new tokens to %s", path)
    return tokens


def _transient_oauth(exc: AuthError) -> bool:
    """A refresh failure worth repeating: no usable answer, a server error or a rate limit — never a
    verdict on the credentials (invalid_grant, invalid_client, …)."""
    if exc.code == "oauth-unreachable":
        return True
    return exc.status is not None and (exc.status >= 500 or exc.status == 429)


# --------------------------------------------------------------------------------------------------
# Auth: what the client asks for a token
# --------------------------------------------------------------------------------------------------
class Auth:
    """Current access token for the client; refreshes it (once at a time) and keeps the file current."""

    def __init__(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        oauth_url: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        expires: float | None = None,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
        refresh_margin: float = REFRESH_MARGIN,
        session: requests.Session | None = None,
    ) -> None:
        env = os.environ if env is None else env
        self.client_id = client_id or env.get(ENV["client_id"]) or None
        self._client_secret = client_secret or env.get(ENV["client_secret"]) or None
        # Checked now, not at the first refresh an hour into the run: the client secret goes there.
        self.oauth_url = _check_oauth_url(oauth_url or env.get(ENV["oauth_url"]) or DEFAULT_OAUTH_URL)
        self.token_file = Path(token_file).expanduser() if token_file else default_token_file(env)
        self.clock: Clock = clock or SystemClock()
        self.refresh_margin = refresh_margin
        self._session = session
        self._lock = threading.Lock()
        self.refreshes = 0
        _FILTER.add(self._client_secret)

        given_access = access_token or env.get(ENV["access_token"]) or None
        given_refresh = refresh_token or env.get(ENV["refresh_token"]) or None
        _FILTER.add(given_access, given_refresh)
        stored, stored_client = read_token_file(self.token_file)
        if stored is not None and self.client_id and stored_client and stored_client != self.client_id:
            log.warning("ignoring token file %s: it belongs to another client id", self.token_file)
            stored = None
        self.source = "none"
        tokens: Tokens | None = None
        if given_access or given_refresh:
            given = Tokens(access_token=given_access or "", refresh_token=given_refresh, expires=expires)
            if stored is not None and self._given_is_stale(given, stored):
                tokens, self.source = stored, f"token file {self.token_file} (newer than the given tokens)"
            else:
                tokens, self.source = given, "arguments/environment"
                if stored is not None:
                    tokens.superseded = list(stored.superseded)
        elif stored is not None:
            tokens, self.source = stored, f"token file {self.token_file}"
        if tokens is None:
            raise ConfigError(
                "no OAuth tokens: set BITRIX24_ACCESS_TOKEN and BITRIX24_REFRESH_TOKEN (with "
                "BITRIX24_CLIENT_ID/BITRIX24_CLIENT_SECRET) or run `bulkimport auth`"
            )
        self._tokens = tokens

    @staticmethod
    def _given_is_stale(given: Tokens, stored: Tokens) -> bool:
        """True when the file already replaced the given pair (or holds exactly it, with more detail)."""
        superseded = set(stored.superseded)
        if given.refresh_token and _fp(given.refresh_token) in superseded:
            return True
        if given.access_token and _fp(given.access_token) in superseded:
            return True
        same = (given.refresh_token or None) == (stored.refresh_token or None) and (
            not given.access_token or given.access_token == stored.access_token
        )
        return same

    @classmethod
    def from_env(cls, **kwargs: Any) -> Auth:
        """An Auth from the environment and the default token file (keyword overrides allowed)."""
        return cls(**kwargs)

    def __repr__(self) -> str:
        return (
            f"Auth(client_id={'set' if self.client_id else 'missing'}, secret=<hidden>, "
            f"tokens=<hidden>, token_file={str(self.token_file)!r}, source={self.source!r})"
        )

    __str__ = __repr__

    @property
    def expires(self) -> float | None:
        """When the current access token expires (portal clock), if known."""
        return self._tokens.expires

    @property
    def can_refresh(self) -> bool:
        """True when a refresh token and the client credentials are known."""
        return bool(self._tokens.refresh_token and self.client_id and self._client_secret)

    def token(self) -> str:
        """The access token to use now (refreshed first if it expires within the margin)."""
        current = self._tokens
        if (
            current.expires is not None
            and self.can_refresh
            and current.expires - self.clock.now() <= self._margin(current)
        ):
            return self.refresh(stale=current.access_token)
        if not current.access_token:
            return self.refresh(stale=current.access_token)
        return current.access_token

    def _margin(self, tokens: Tokens) -> float:
        """Refresh this long before expiry: the margin, but at most a tenth of the token's life."""
        if tokens.expires is not None and tokens.issued_at is not None:
            return min(self.refresh_margin, max(0.0, (tokens.expires - tokens.issued_at) / 10))
        return self.refresh_margin

    def refresh(self, stale: str | None = None) -> str:
        """Get a new pair unless someone already replaced ``stale``; save it before returning it."""
        with self._lock:
            if stale is not None and self._tokens.access_token and self._tokens.access_token != stale:
                return self._tokens.access_token  # another thread refreshed meanwhile
            if not self.can_refresh:
                missing = [
                    name
                    for name, ok in (
                        ("BITRIX24_REFRESH_TOKEN", self._tokens.refresh_token),
                        ("BITRIX24_CLIENT_ID", self.client_id),
                        ("BITRIX24_CLIENT_SECRET", self._client_secret),
                    )
                    if not ok
                ]
                raise AuthError(
                    "expired_token",
                    "the access token expired and it cannot be refreshed "
                    f"(missing {', '.join(missing)}); run `bulkimport auth`",
                    401,
                )
            old = self._tokens
            for pause in (*OAUTH_RETRY_PAUSES, None):
                try:
                    with interrupts_deferred():  # a rotated pair must reach the file: hold back Ctrl-C
                        return self._rotate(old)
                except AuthError as exc:
                    if pause is None or not _transient_oauth(exc):
                        raise
                    log.warning("token refresh failed (%s); trying again in %g s", exc.code, pause)
                    self.clock.sleep(pause)
            raise AssertionError("unreachable")  # pragma: no cover

    def _rotate(self, old: Tokens) -> str:
        """Trade ``old``'s refresh token for a new pair, save it, and return the access token."""
        try:
            new = _oauth_request(
                self.oauth_url,
                {
                    "grant_type": "refresh_token",
                    "client_id": str(self.client_id),
                    "client_secret": str(self._client_secret),
                    "refresh_token": str(old.refresh_token),
                },
                self.clock,
                self._session,
            )
        except AmbiguousError as exc:
            # The portal call waiting for this token was refused (not run), so nothing is
            # ambiguous for the rows; but the run cannot go on without a token.
            raise AuthError(
                "oauth-unreachable",
                f"{exc}; if the OAuth server rotated the refresh token meanwhile it is lost: "
                "run `bulkimport auth`",
            ) from None
        new.superseded = [*old.superseded, _fp(old.refresh_token), _fp(old.access_token)][-_SUPERSEDED_KEEP:]
        # The old refresh token is dead from now on: persist the new pair before anyone uses it.
        try:
            write_token_file(self.token_file, new, self.client_id)
        except OSError as exc:
            # The old pair is already dead, so refusing the new one would not save anything:
            # go on with it in memory and say loudly that the next run needs `bulkimport auth`.
            log.error(
                "could not save the rotated tokens to %s (%s): this run continues, but the "
                "next one will need `bulkimport auth` (or --token-file on a writable disk)",
                self.token_file,
                type(exc).__name__,
            )
        self._tokens = new
        self.refreshes += 1
        log.info("refreshed the access token (saved to %s)", self.token_file)
        return new.access_token
