"""Fault injection: make the sandbox misbehave the way a portal or the proxy in front of it can.

``portal.faults.add(kind, rate=1.0, count=None, methods=None)`` arms a fault; each HTTP request
whose REST method matches draws once (seeded random) against the armed faults in the order they
were added, and the first that fires shapes the answer. See docs/sandbox.md for each kind.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

#: kind -> (runs the method and commits?, description). "after" faults run the handler first.
KINDS: dict[str, tuple[bool, str]] = {
    "503": (False, "503 QUERY_LIMIT_EXCEEDED JSON, the method does not run"),
    "503-bare": (False, "503 with an empty body, the method does not run"),
    "429": (False, "429 OPERATION_TIME_LIMIT JSON, the method does not run"),
    "500": (False, "500 INTERNAL_SERVER_ERROR JSON, the method does not run (after=True: it runs)"),
    "500-bare": (False, "500 with a non-JSON body, the method does not run (after=True: it runs)"),
    "html": (False, "502 HTML error page as a proxy sends, the method does not run (after=True: it runs)"),
    "empty": (True, "200 with an empty body; the method ran and committed (after=False: it did not)"),
    "drop-before": (False, "connection closed without an answer before the method runs"),
    "drop-after": (True, "the method runs and commits, then the connection closes without an answer"),
    "slow": (True, "the method runs, the answer is delayed by `delay` virtual seconds"),
    "expire-token": (False, "the caller's access token expires just before the call → 401 expired_token"),
    "overload": (False, "503 OVERLOAD_LIMIT JSON (the manual block), the method does not run"),
    "redirect": (False, "302 to the same URL, as a portal that changed its address; the method does not run"),
}

#: The system errors any call can return (reference §2, official "system errors" table): each code is
#: also a fault kind, answered as ``{"error": code, "error_description": text}`` with its status; the
#: method does not run. OAuth-server codes are kinds too (for ``methods=["oauth.token"]``).
SYSTEM_ERRORS: dict[str, tuple[int, str]] = {
    "INTERNAL_SERVER_ERROR": (500, "Internal server error"),
    "ERROR_UNEXPECTED_ANSWER": (500, "Server returned an unexpected response"),
    "QUERY_LIMIT_EXCEEDED": (503, "Too many requests"),
    "OVERLOAD_LIMIT": (503, "REST API is blocked due to overload"),
    "OPERATION_TIME_LIMIT": (429, "Method is blocked due to operation time limit."),
    "NO_AUTH_FOUND": (401, "Wrong authorization data"),
    "expired_token": (401, "The access token provided has expired"),
    "INVALID_REQUEST": (400, "Https required"),
    "ACCESS_DENIED": (403, "REST API is available only on commercial plans"),
    "INVALID_CREDENTIALS": (403, "Invalid request credentials"),
    "insufficient_scope": (403, "The request requires higher privileges than provided by the webhook token"),
    "user_access_error": (403, "The user does not have access to the application"),
    "PORTAL_DELETED": (500, "Portal was deleted"),
    "ERROR_METHOD_NOT_FOUND": (404, "Method not found!"),
    "IMCONNECTOR_NOT_SPECIFIED_CORRECT_COMMAND": (400, "No valid command specified"),
    "invalid_grant": (400, "Invalid grant"),
    "invalid_client": (401, "Invalid client credentials"),
    "PAYMENT_REQUIRED": (402, "Payment required"),
}
for _code, (_status, _text) in SYSTEM_ERRORS.items():
    KINDS[_code] = (False, f"{_status} {_code} JSON, the method does not run")

#: The pseudo-method name faults use to target the OAuth server's /oauth/token/ endpoint.
OAUTH_METHOD = "oauth.token"


@dataclass
class Fault:
    """One armed fault."""

    kind: str
    rate: float = 1.0
    count: int | None = None  # fire at most this many times (None: unlimited)
    methods: frozenset[str] | None = None  # lower-case REST method names; None: every REST method
    after: bool = False  # run (and commit) the method before misbehaving
    delay: float = 10.0  # "slow": virtual seconds to hold the answer
    fired: int = 0

    def matches(self, method: str) -> bool:
        """Whether this fault applies to ``method`` (the top-level method of the HTTP request)."""
        if self.count is not None and self.fired >= self.count:
            return False
        if self.methods is None:
            return method != OAUTH_METHOD
        return method in self.methods


@dataclass
class Faults:
    """The armed faults of one sandbox; thread-safe, seeded (``Sandbox(seed=...)``)."""

    seed: int = 0
    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def add(self, kind: str, rate: float = 1.0, count: int | None = None,
            methods: Iterable[str] | str | None = None, *, after: bool | None = None,
            delay: float = 10.0) -> Fault:
        """Arm a fault of ``kind`` firing with probability ``rate``, at most ``count`` times."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; use one of: {', '.join(KINDS)}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if isinstance(methods, str):
            methods = [methods]
        names = None if methods is None else frozenset(m.lower().removesuffix(".json") for m in methods)
        if kind in ("drop-after", "slow"):
            after = True
        elif kind in ("503", "503-bare", "429", "drop-before", "expire-token", "overload", "redirect") or (
                kind in SYSTEM_ERRORS):
            after = False
        elif after is None:
            after = KINDS[kind][0]
        fault = Fault(kind, rate, count, names, after, delay)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    def armed(self) -> list[Fault]:
        """The armed faults (copies of their state)."""
        with self._lock:
            return list(self._faults)

    def draw(self, method: str) -> Fault | None:
        """The fault that fires for one request of ``method``, if any (counts it as fired)."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method) and self._random.random() < fault.rate:
                    fault.fired += 1
                    return fault
        return None


def parse_spec(spec: str) -> dict[str, object]:
    """``KIND[:RATE[:COUNT]][@method,method]`` (the CLI's ``--fault``) → keyword arguments for add."""
    methods: list[str] | None = None
    if "@" in spec:
        spec, _, names = spec.partition("@")
        methods = [n.strip() for n in names.split(",") if n.strip()]
    parts = spec.split(":")
    kind = parts[0].strip()
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; use one of: {', '.join(KINDS)}")
    rate = float(parts[1]) if len(parts) > 1 and parts[1] else 1.0
    count = int(parts[2]) if len(parts) > 2 and parts[2] else None
    if len(parts) > 3:
        raise ValueError(f"fault {spec!r}: expected KIND[:RATE[:COUNT]][@methods]")
    return {"kind": kind, "rate": rate, "count": count, "methods": methods}
