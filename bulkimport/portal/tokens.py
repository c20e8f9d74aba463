"""Secrets at rest and in logs: the token pair, the token file, and the filter that scrubs secrets.

A leaf (errors and settings only). The token file is ``token_file=``, else ``$BITRIX24_TOKEN_FILE``,
else ``$XDG_CONFIG_HOME/bulkimport/tokens.json`` (``~/.config/bulkimport/tokens.json``); it is
written atomically (temp file in the same directory + ``os.replace``, fsynced) with mode 0600, and
it keeps a SHA-256 fingerprint of every pair it superseded (see :mod:`.auth` for why).

Every secret this package sees (tokens, the client secret, an authorisation code) is registered
with one logging filter, installed on the loggers of ``requests``, urllib3 and bulkimport, which
replaces it with ``***`` in every record: urllib3's debug lines would otherwise print the OAuth
server URL with its query string. :func:`scrub` applies the same replacement to text built from
answers.
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

from ..errors import ConfigError
from ..settings import ENV_TOKEN_FILE

#: Fingerprints of superseded pairs the token file keeps (the newest ones).
SUPERSEDED_KEEP = 64


def fingerprint(secret: str | None) -> str:
    """A short one-way fingerprint of a token (safe to store and compare)."""
    return hashlib.sha256((secret or "").encode()).hexdigest()[:32]


def default_token_file(env: Mapping[str, str] | None = None) -> Path:
    """``$BITRIX24_TOKEN_FILE`` or ``$XDG_CONFIG_HOME/bulkimport/tokens.json`` (~/.config/…)."""
    env = os.environ if env is None else env
    if env.get(ENV_TOKEN_FILE):
        return Path(env[ENV_TOKEN_FILE]).expanduser()
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "bulkimport" / "tokens.json"


# --------------------------------------------------------------------------------------------------
# Secret scrubbing for log records and messages
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


def register_secrets(*values: str | None) -> None:
    """Scrub these values (tokens, the client secret, a code) from every log record from now on."""
    _FILTER.add(*values)


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
            "superseded": self.superseded[-SUPERSEDED_KEEP:],
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
    register_secrets(tokens.access_token, tokens.refresh_token)
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
