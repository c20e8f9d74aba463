"""Everything that speaks Bitrix24 REST, as leaf modules that never import each other in a circle.

From the bottom up (each imports only the ones above it in this list, and the ground floor)::

    methods    REST method names (SEND_METHOD, BATCH_METHOD)
    encoding   PHP-bracket query strings for batch commands
    urls       the REST base, redirects, the OAuth server's address, loopback checks
    tokens     Tokens, the token file (atomic, 0600), the secret filter and scrub()
    transport  RawResponse, RequestsTransport, MockTransport (offline tests): bytes on the wire
    answers    an answer → Answer or the exception it stands for (error_for, classify)
    governor   leaky bucket, operating budgets, call sizing (methods)
    auth       Auth and the OAuth flows (urls, tokens, transport, answers)
    client     Client, BatchResult (urls, transport, answers, governor, encoding, methods)
"""

from __future__ import annotations

from .answers import Answer, classify, error_for
from .auth import Auth, authorize_url, exchange_code
from .client import BatchResult, Client
from .governor import Governor, Ticket
from .methods import BATCH_METHOD, SEND_METHOD
from .tokens import Tokens, default_token_file, scrub
from .transport import MockTransport, NotSent, RawResponse, RequestsTransport, Transport
from .urls import DEFAULT_OAUTH_URL, rest_url

__all__ = [
    "BATCH_METHOD",
    "DEFAULT_OAUTH_URL",
    "SEND_METHOD",
    "Answer",
    "Auth",
    "BatchResult",
    "Client",
    "Governor",
    "MockTransport",
    "NotSent",
    "RawResponse",
    "RequestsTransport",
    "Ticket",
    "Tokens",
    "Transport",
    "authorize_url",
    "classify",
    "default_token_file",
    "error_for",
    "exchange_code",
    "rest_url",
    "scrub",
]
