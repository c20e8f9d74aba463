"""The portal fetching ``files[].url`` of incoming connector messages (reference §2: "the url must be
reachable by the portal"; the portal downloads it itself).

The sandbox may only reach loopback addresses (this machine has no network, and a test portal must
not call out): any other host — names included, never resolved — is recorded as unreachable without
connecting. Redirects are followed (at most 3), each hop checked the same way. The bytes are hashed
as they stream in and not kept.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import re
import ssl
from typing import Any
from urllib.parse import urljoin, urlsplit

#: Real seconds for connecting and for each read (a portal gives up on a slow source quickly).
FETCH_TIMEOUT = 5.0
MAX_REDIRECTS = 3
_CHUNK = 1 << 16
_AUTH = re.compile(r"(?i)(?<=[?&])(auth|access_token|refresh_token)=[^&#]*")


def redact(url: str) -> str:
    """The URL with token-bearing query values blanked (a DOWNLOAD_URL carries the access token)."""
    return _AUTH.sub(lambda m: f"{m.group(1)}=***", url)


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: the sandbox never resolves it


def _outcome(status: str, error: str | None = None, http_status: int | None = None) -> dict[str, Any]:
    return {
        "status": status,
        "error": error,
        "http_status": http_status,
        "size": None,
        "sha256": None,
        "content_type": None,
    }


def fetch(url: str, timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    """Download ``url`` as the portal would: ``{status: ok|unreachable|error, http_status, size, sha256,
    content_type, error}``."""
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return _outcome("unreachable", f"unsupported scheme {parts.scheme or '(none)'!r}")
        if not _loopback(parts.hostname):
            return _outcome("unreachable", "not a loopback address: not contacted")
        try:
            port = parts.port
        except ValueError:
            return _outcome("unreachable", "bad port")
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(
                parts.hostname or "", port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "", port, timeout=timeout)
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request(
                "GET",
                path,
                headers={
                    "User-Agent": "Bitrix24 sandbox portal",
                    "Accept": "*/*",
                    "Accept-Language": "en",
                    "Referer": f"{parts.scheme}://{parts.netloc}/",
                },
            )
            response = conn.getresponse()
            if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
                url = urljoin(url, response.getheader("Location") or "")
                continue
            if response.status != 200:
                return _outcome("error", f"HTTP {response.status}", response.status)
            digest, size = hashlib.sha256(), 0
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
            out = _outcome("ok", None, 200)
            out.update(size=size, sha256=digest.hexdigest(), content_type=response.getheader("Content-Type"))
            return out
        except (OSError, http.client.HTTPException) as exc:
            return _outcome("unreachable", type(exc).__name__)
        finally:
            conn.close()
    return _outcome("error", "too many redirects")
