"""Everything that speaks Bitrix24 REST: the client, OAuth, the rate governor, query encoding."""

from __future__ import annotations

from .auth import Auth, Tokens, authorize_url, exchange_code
from .client import BatchResult, Client, MockTransport, RawResponse, rest_url
from .governor import Governor

__all__ = [
    "Auth",
    "BatchResult",
    "Client",
    "Governor",
    "MockTransport",
    "RawResponse",
    "Tokens",
    "authorize_url",
    "exchange_code",
    "rest_url",
]
