"""Addresses: the portal's REST base, redirects to a new address, and the OAuth server's address.

A leaf (errors and settings only): the client, the transport and the OAuth code all ask it, so it
imports none of them. Portal addresses are ``https://``; plain ``http://`` only for a loopback
sandbox; inbound webhook URLs are refused because ``imconnector.*`` needs an application's token.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..settings import ENV_OAUTH_URL, ENV_PORTAL

#: The Bitrix24 OAuth server's token address (``BITRIX24_OAUTH_URL`` overrides it).
DEFAULT_OAUTH_URL = "https://oauth.bitrix.info/oauth/token/"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (where plain http is allowed)."""
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
        raise ConfigError(f"the portal address is empty: pass --portal (or set {ENV_PORTAL})")
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
    if scheme == "http" and not is_loopback(host):
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


def base_from_location(location: str, method: str) -> str:
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


def check_oauth_url(url: str) -> str:
    """``url`` if it may receive the client secret (https, or http on loopback), else ConfigError."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname or "")):
        return url
    raise ConfigError(f"{ENV_OAUTH_URL} {url!r} must be an https:// address (http only for loopback)")


def authorize_page(portal: str) -> str:
    """The portal's OAuth authorisation page (``https://host/oauth/authorize/``)."""
    return rest_url(portal)[: -len("rest/")] + "oauth/authorize/"
