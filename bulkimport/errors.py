"""Exceptions raised by bulkimport, in one picture::

    BulkImportError                    anything bulkimport raises on purpose
    ├── InputError                     the user can fix it: file, column, option, mapping (CLI exit 2)
    │   ├── ReadError                  a file cannot be read (missing, corrupt, encrypted, empty …)
    │   ├── MappingError               a mapping file or guess is unusable (unknown column/key …)
    │   ├── ConfigError                portal address, line, connector, credentials, options
    │   └── JournalMismatchError       the journal belongs to another input, mapping or portal
    ├── PortalError                    the portal (or its OAuth server) answered with an error code
    │   ├── RetryableError             refused *before* execution: safe to repeat after ``retry_after``
    │   │   ├── RateLimitedError       503 QUERY_LIMIT_EXCEEDED (leaky bucket)
    │   │   └── OperatingLimitError    429 OPERATION_TIME_LIMIT (per-method budget)
    │   ├── TokenExpiredError          401 expired_token: refresh and repeat once
    │   ├── FatalError                 the run cannot continue; stop early, leave rows pending
    │   │   ├── AuthError              WRONG_AUTH_TYPE, NO_AUTH_FOUND, insufficient_scope, invalid_grant …
    │   │   ├── SetupError             NOT_ACTIVE_LINE, IMCONNECTOR_NO_CORRECT_PROVIDER …
    │   │   ├── BlockedError           OVERLOAD_LIMIT, PORTAL_DELETED
    │   │   └── TlsError               the TLS handshake failed (certificate, http on the https
    │   │                              port …): nothing was sent, retrying cannot help
    │   └── RequestRejectedError       any other answered error (4xx/5xx with a code)
    └── AmbiguousError                 no usable answer after the request was sent (timeout, reset,
                                       5xx without a code, HTML or empty body): it may have run

Every :class:`PortalError` carries ``code`` (as the portal spelled it), ``status`` (HTTP) and
``description``; ``str()`` adds the catalogue hint. No exception ever carries a token or secret:
messages are built from codes and descriptions only. Every class drawn above is importable from
the package itself (``bulkimport.TlsError`` …).
"""

from __future__ import annotations

from . import codes


class BulkImportError(Exception):
    """Base of every exception bulkimport raises on purpose."""


class InputError(BulkImportError):
    """Something the user can fix (a file, a column, an option); the CLI exits with code 2.

    The message is one line that names the file/row/column/option and says how to fix it, in the
    words of the Python API (``delimiter=``, ``Mapping.save``); ``cli``, when given, is the same
    message in the command line's words (``--delimiter ';'``), which the CLI prints instead.
    """

    def __init__(self, *args: object, cli: str | None = None) -> None:
        super().__init__(*args)
        self.cli = cli


class ReadError(InputError):
    """A file cannot be read: missing, unknown extension, corrupt, encrypted, empty, undecodable."""


class MappingError(InputError):
    """A mapping (file or guess) is unusable: unknown columns or keys, required fields unmapped."""


class ConfigError(InputError):
    """Portal address, line, connector, credentials or another option is unusable."""


class JournalMismatchError(InputError):
    """The journal at ``state`` was written for a different input, mapping, portal, line or connector."""


class PortalError(BulkImportError):
    """The portal or its OAuth server answered with an error code."""

    def __init__(self, code: str, description: str = "", status: int | None = None) -> None:
        self.code = str(code)
        self.description = description
        self.status = status
        super().__init__(self._message())

    def _message(self) -> str:
        head = f"{self.code}"
        if self.status is not None:
            head = f"HTTP {self.status} {self.code}"
        text = self.description or codes.get(self.code).message
        return f"{head}: {text} — {codes.hint(self.code)}"


class RetryableError(PortalError):
    """Refused before execution; safe to repeat after ``retry_after`` seconds (None: back off)."""

    def __init__(
        self, code: str, description: str = "", status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(code, description, status)


class RateLimitedError(RetryableError):
    """503 QUERY_LIMIT_EXCEEDED: the leaky bucket is full."""


class OperatingLimitError(RetryableError):
    """429 OPERATION_TIME_LIMIT: the method's operating budget is spent until ``retry_after``."""


class TokenExpiredError(PortalError):
    """401 expired_token: refresh the access token and repeat the call once."""


class FatalError(PortalError):
    """The run cannot go on; the sender stops early and leaves untouched rows ``pending``."""


class AuthError(FatalError):
    """Credentials are unusable: WRONG_AUTH_TYPE, NO_AUTH_FOUND, insufficient_scope, invalid_grant …"""


class SetupError(FatalError):
    """The line or connector is not ready: NOT_ACTIVE_LINE, IMCONNECTOR_NO_CORRECT_PROVIDER …"""


class BlockedError(FatalError):
    """The portal refuses all REST traffic: OVERLOAD_LIMIT, PORTAL_DELETED."""


class RequestRejectedError(PortalError):
    """Any other answered error: the request did not succeed and did not commit."""


class AmbiguousError(BulkImportError):
    """No usable answer after the request was sent: it may or may not have run on the portal.

    Rows carried by such a request become ``unknown`` and are never re-sent automatically.
    """

    def __init__(self, reason: str, status: int | None = None) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason if status is None else f"HTTP {status}: {reason}")


def ambiguous(code: str, reason: str, status: int | None = None) -> AmbiguousError:
    """An :class:`AmbiguousError` carrying the catalogue ``code`` its rows get (``timeout``,
    ``connection-lost``, ``bad-answer`` …): the transport and the answer parser both make them."""
    exc = AmbiguousError(reason, status)
    exc.code = code  # type: ignore[attr-defined]
    return exc


class TlsError(FatalError):
    """The TLS handshake with the portal failed (code ``tls-failed``): nothing was sent; stop."""
