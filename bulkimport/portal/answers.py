"""What the portal answered: every HTTP answer becomes a result or exactly one exception (reference §2).

* **success** — ``{"result": …}``: returned as an :class:`Answer` (result and ``time``);
* **refused before execution** — 503 ``QUERY_LIMIT_EXCEEDED``, 429 ``OPERATION_TIME_LIMIT`` →
  :class:`RetryableError` with ``retry_after``;
* **expired token** — 401 ``expired_token`` → :class:`TokenExpiredError` (the client refreshes and
  repeats);
* **fatal for the run** — auth, set-up and block codes → :class:`AuthError`, :class:`SetupError`,
  :class:`BlockedError`;
* **answered error** — any other code → :class:`RequestRejectedError` (it did not commit);
* **ambiguous** — a 5xx without a code (or with a generic server-error code), an HTML page, an
  empty or unparseable body → :class:`AmbiguousError`: the write may have run.

:func:`error_for` maps a code to its exception for every caller (the client, batch results, the
OAuth server's answers, connector set-up). Descriptions are scrubbed of known secrets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import (
    AmbiguousError,
    AuthError,
    BlockedError,
    OperatingLimitError,
    PortalError,
    RateLimitedError,
    RequestRejectedError,
    SetupError,
    TokenExpiredError,
    ambiguous,
)
from .tokens import scrub
from .transport import RawResponse

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
        exc = ambiguous(
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
        raise ambiguous("bad-answer", "empty answer", status)
    if payload is None:
        kind = "an HTML page" if text.lstrip().startswith("<") else "a non-JSON answer"
        raise ambiguous("bad-answer", f"{kind} instead of JSON", status)
    if status >= 500 or 200 <= status < 300:
        raise ambiguous("bad-answer", "a JSON answer without result or error", status)
    raise RequestRejectedError(f"HTTP_{status}", "an error answer without a code", status)


def _num(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None



def _as_dict(section: Any) -> dict[str, Any]:
    """Batch sections are ``[]`` when empty (a PHP quirk), a dict otherwise."""
    if isinstance(section, dict):
        return section
    if isinstance(section, list):
        return {str(i): v for i, v in enumerate(section)}
    return {}


def batch_sections(
    result: Any, now: float
) -> tuple[dict[str, Any], dict[str, PortalError | AmbiguousError], dict[str, dict[str, Any]]]:
    """A ``batch`` result → (results, errors as exceptions, ``time`` per command key).

    Each command's error gets the exception its code stands for, with ``retry_after`` from that
    command's own ``operating_reset_at`` (``now``: the portal's clock).
    """
    payload = result if isinstance(result, dict) else {}
    results = _as_dict(payload.get("result"))
    raw_errors = _as_dict(payload.get("result_error"))
    times = {k: v for k, v in _as_dict(payload.get("result_time")).items() if isinstance(v, dict)}
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
    return results, errors, times
