"""OAuth for the portal: where the tokens come from, the OAuth server's flows, and refreshing them.

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
*before* it is used (:mod:`.tokens` keeps the file and the secret filter). The client secret goes
only to the OAuth server. No token or secret appears in ``repr``/``str``, log records or exception
text: every secret is registered with the filter that scrubs log records (:mod:`.tokens`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

from ..clock import Clock, SystemClock, interrupts_deferred
from ..errors import AmbiguousError, AuthError, ConfigError
from ..settings import (
    ENV_ACCESS_TOKEN,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_OAUTH_URL,
    ENV_REFRESH_TOKEN,
    ENV_TOKEN_FILE,
)
from .answers import error_for
from .tokens import (
    SUPERSEDED_KEEP,
    Tokens,
    default_token_file,
    fingerprint,
    read_token_file,
    register_secrets,
    scrub,
    write_token_file,
)
from .transport import USER_AGENT
from .urls import DEFAULT_OAUTH_URL, authorize_page, check_oauth_url

# Compatibility: ``Tokens`` and the token file's helpers lived here before tokens.py; callers and
# tests still reach them as ``bulkimport.portal.auth.<name>`` (``write_token_file`` is also what a
# test replaces here to simulate a full disk).
__all__ = [
    "DEFAULT_OAUTH_URL",
    "ENV",
    "OAUTH_RETRY_PAUSES",
    "REFRESH_MARGIN",
    "Auth",
    "Tokens",
    "authorize_url",
    "default_token_file",
    "exchange_code",
    "read_token_file",
    "scrub",
    "write_token_file",
]

log = logging.getLogger("bulkimport.auth")

#: Which environment variable feeds which :class:`Auth` argument.
ENV = {
    "client_id": ENV_CLIENT_ID,
    "client_secret": ENV_CLIENT_SECRET,
    "access_token": ENV_ACCESS_TOKEN,
    "refresh_token": ENV_REFRESH_TOKEN,
    "oauth_url": ENV_OAUTH_URL,
    "token_file": ENV_TOKEN_FILE,
}
#: Refresh this many seconds before ``expires`` (portal clock).
REFRESH_MARGIN = 120.0
#: Pauses (portal seconds) before repeating a refresh the OAuth server failed transiently (no answer,
#: 5xx, 429, a non-JSON page): an unattended run rides out a blip of about two minutes instead of
#: stopping until a human notices. Safe: if the server had rotated the pair and the answer was lost,
#: the repeat gets invalid_grant, which stops the run exactly as before.
OAUTH_RETRY_PAUSES = (2.0, 5.0, 15.0, 30.0, 60.0)


# --------------------------------------------------------------------------------------------------
# The OAuth server
# --------------------------------------------------------------------------------------------------
def _shown_url(url: str) -> str:
    """The OAuth address as it may be shown: scheme, host, port and path (no user info or query)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _oauth_request(
    oauth_url: str,
    params: dict[str, str],
    clock: Clock,
    session: requests.Session | None = None,
    timeout: float = 30.0,
) -> Tokens:
    """GET the OAuth server (as documented) and return the new pair; errors carry no secrets."""
    register_secrets(params.get("client_secret"), params.get("refresh_token"), params.get("code"))
    url = check_oauth_url(oauth_url)
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
        raise AmbiguousError(
            f"the OAuth server {_shown_url(url)} did not answer ({type(exc).__name__}): check the "
            f"network, or name the server with --oauth-url URL of bulkimport auth (env {ENV_OAUTH_URL})"
        ) from None
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("error"):
        code = str(data["error"])
        desc = scrub(str(data.get("error_description") or ""))
        exc2 = error_for(code, desc, resp.status_code)
        if code.lower() == "invalid_grant" and params.get("grant_type") == "authorization_code":
            raise AuthError(
                code,
                "the portal did not accept the authorisation code: it is valid once and for 30 seconds, "
                "so it was mistyped, had expired or was already used; run `bulkimport auth` again and "
                "paste the new code (or the whole address) at once",
                resp.status_code,
            ) from None
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
    register_secrets(tokens.access_token, tokens.refresh_token)
    return tokens


def authorize_url(portal: str, client_id: str, state: str | None = None) -> str:
    """The page where a portal administrator approves the application and gets a code (valid 30 s)."""
    query = {"client_id": client_id}
    if state:
        query["state"] = state
    return f"{authorize_page(portal)}?{urlencode(query)}"


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
        self.oauth_url = check_oauth_url(oauth_url or env.get(ENV["oauth_url"]) or DEFAULT_OAUTH_URL)
        self.token_file = Path(token_file).expanduser() if token_file else default_token_file(env)
        self.clock: Clock = clock or SystemClock()
        self.refresh_margin = refresh_margin
        self._session = session
        self._lock = threading.Lock()
        self.refreshes = 0
        register_secrets(self._client_secret)

        given_access = access_token or env.get(ENV["access_token"]) or None
        given_refresh = refresh_token or env.get(ENV["refresh_token"]) or None
        register_secrets(given_access, given_refresh)
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
                f"no OAuth tokens: set {ENV_ACCESS_TOKEN} and {ENV_REFRESH_TOKEN} (with "
                f"{ENV_CLIENT_ID}/{ENV_CLIENT_SECRET}) or run `bulkimport auth`"
            )
        self._tokens = tokens

    @staticmethod
    def _given_is_stale(given: Tokens, stored: Tokens) -> bool:
        """True when the file already replaced the given pair (or holds exactly it, with more detail)."""
        superseded = set(stored.superseded)
        if given.refresh_token and fingerprint(given.refresh_token) in superseded:
            return True
        if given.access_token and fingerprint(given.access_token) in superseded:
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
                        (ENV_REFRESH_TOKEN, self._tokens.refresh_token),
                        (ENV_CLIENT_ID, self.client_id),
                        (ENV_CLIENT_SECRET, self._client_secret),
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
        gone = [fingerprint(old.refresh_token), fingerprint(old.access_token)]
        new.superseded = [*old.superseded, *gone][-SUPERSEDED_KEEP:]
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
