"""Connector set-up and the preflight check that runs before the first message (reference §5).

Messages reach an open line only through a connector that is registered on the portal, active on
that line and has its data set. :func:`setup` does those steps (idempotently: re-registering the
same ID updates it) and reports what is ready; :func:`preflight` only *checks* — line exists and is
active, connector registered and active, token valid with the needed scopes — and raises
:class:`~bulkimport.errors.SetupError` / :class:`~bulkimport.errors.AuthError` whose message holds
the exact ``bulkimport setup …`` or ``bulkimport auth`` command that fixes it.

Both take any client with ``call(method, params) -> result`` that raises the exceptions of
:mod:`bulkimport.errors` (``bulkimport.portal.client.Client`` does).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from .errors import (
    AuthError,
    ConfigError,
    FatalError,
    InputError,
    PortalError,
    RequestRejectedError,
    RetryableError,
    SetupError,
)
from .settings import DEFAULT_CONNECTOR, ENV_PORTAL, parse_line

#: Scopes the import needs (reference §1): imconnector.* and imopenlines.* methods, plus im.
REQUIRED_SCOPES = ("imopenlines", "imconnector", "im")

#: Default connector id and name (lower-case, no dots: reference §5).
DEFAULT_NAME = "Imported history (bulkimport)"

_CONNECTOR_ID = re.compile(r"[a-z0-9_]{1,64}")

# A small neutral icon (a speech bubble with an arrow) as the data URI imconnector.register wants.
_ICON_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 70 70">'
    '<rect width="70" height="70" rx="12" fill="#2fc6f6"/>'
    '<path d="M18 22h34v20H34l-9 8v-8h-7z" fill="#fff"/>'
    '<path d="M35 26v10m-4-4 4 4 4-4" stroke="#2fc6f6" stroke-width="3" fill="none"/></svg>'
)
DEFAULT_ICON = "data:image/svg+xml;charset=US-ASCII," + quote(_ICON_SVG, safe="")


class Caller(Protocol):
    """What set-up needs from a portal client."""

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call a REST method and return its ``result`` (raising bulkimport.errors on errors)."""
        ...


@dataclass(frozen=True)
class Check:
    """One item of the readiness list: what was checked, whether it is ready, and how to fix it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def __str__(self) -> str:
        mark = "ok " if self.ok else "NOT"
        text = f"[{mark}] {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text} — fix: {self.fix}"


@dataclass
class SetupResult:
    """What :func:`setup` or :func:`preflight` found, check by check; ``ready`` when all are ok."""

    line: int
    connector: str
    checks: list[Check] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    line_name: str = ""

    @property
    def ready(self) -> bool:
        """True when every check passed (messages can be sent)."""
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if not c.ok]

    def __str__(self) -> str:
        head = f"Open line {self.line}, connector {self.connector!r}: " + (
            "READY" if self.ready else f"NOT READY ({len(self.problems)} problem(s))"
        )
        return "\n".join([head, *(f"  {c}" for c in self.checks)])


def setup_command(portal: str | None, line: int | str, connector: str) -> str:
    """The exact ``bulkimport setup`` command for this portal, line and connector."""
    parts = ["bulkimport", "setup"]
    if portal:
        parts += ["--portal", portal]
    parts += ["--line", str(line), "--connector", connector]
    return shlex.join(parts)


def auth_command(portal: str | None) -> str:
    """The exact ``bulkimport auth`` command for this portal."""
    return shlex.join(["bulkimport", "auth", *(["--portal", portal] if portal else [])])


def fix_for(code: str | None, portal: str | None, line: int | str, connector: str) -> str | None:
    """The command that fixes a run stopped by ``code``: ``bulkimport auth`` for credentials,
    ``bulkimport setup …`` for the line or connector; None when no command can fix it."""
    if not code:
        return None
    from .portal.client import error_for

    exc = error_for(code)
    if isinstance(exc, AuthError):
        return auth_command(portal)
    if isinstance(exc, SetupError):
        return setup_command(portal, line, connector)
    return None


def check_connector_id(connector: str) -> str:
    """``connector`` if it is a valid connector ID, else a one-line ConfigError saying what to use."""
    if not isinstance(connector, str) or not _CONNECTOR_ID.fullmatch(connector):
        raise ConfigError(
            f"--connector {connector!r}: a connector ID is 1-64 lower-case letters, digits or "
            f"underscores (no dots), e.g. --connector {DEFAULT_CONNECTOR}"
        )
    return connector


def _portal_of(client: Any, portal: str | None) -> str | None:
    """The portal address for fix commands: explicit, else what the client knows."""
    if portal:
        return portal
    for name in ("portal", "base_url", "url"):
        value = getattr(client, name, None)
        if isinstance(value, str) and value:
            return value
    return None


def _ok_flag(result: Any) -> bool:
    """True for the shapes imconnector.* use for success: ``true`` or ``{"result": true}``."""
    if isinstance(result, Mapping):
        if "error" in result or ("ERROR" in result and result.get("ERROR")):
            return False
        return bool(result.get("result", result.get("RESULT", False)))
    return bool(result)


def _error_in(result: Any) -> tuple[str, str] | None:
    """(code, description) when a 200 answer carries an error inside ``result`` (imconnector.register)."""
    if isinstance(result, Mapping):
        code = result.get("error") or result.get("ERROR")
        if code and isinstance(code, str):
            return code, str(result.get("error_description") or result.get("ERROR_DESCRIPTION") or "")
    return None


def _y(value: Any) -> bool:
    """Bitrix24 booleans: ``"Y"``/``"N"``, ``true``/``false``, ``1``/``0``."""
    if isinstance(value, str):
        return value.strip().upper() in ("Y", "1", "TRUE")
    return bool(value)


def _scopes(client: Caller) -> list[str] | None:
    """The token's scopes from the ``scope`` method; None when the portal lacks that method."""
    try:
        result = client.call("scope", {})
    except RequestRejectedError as exc:
        if exc.code.upper() == "ERROR_METHOD_NOT_FOUND":
            return None
        raise
    if isinstance(result, Mapping):
        result = list(result.values())
    return [str(s) for s in result or []]


def _check_token(client: Caller, result: SetupResult, portal: str | None) -> None:
    """Token works (any AuthError propagates, with the auth command) and carries the scopes."""
    try:
        scopes = _scopes(client)
    except AuthError as exc:
        text = f"{exc.description or exc.code}; fix: {auth_command(portal)}"
        raise AuthError(exc.code, text, exc.status) from None
    if scopes is None:
        result.checks.append(Check("token", True, "accepted (the portal does not list scopes)"))
        return
    result.scopes = scopes
    missing = [s for s in REQUIRED_SCOPES if s not in scopes]
    if missing:
        result.checks.append(
            Check(
                "token",
                False,
                f"scopes {', '.join(scopes) or '(none)'} lack {', '.join(missing)}",
                f"add the scopes {', '.join(REQUIRED_SCOPES)} to the local application, then run "
                f"`{auth_command(portal)}`",
            )
        )
    else:
        result.checks.append(Check("token", True, f"valid, scopes include {', '.join(REQUIRED_SCOPES)}"))


def _known_lines(client: Caller) -> str:
    """A short "1 (Name), 3 (Other)" list of the portal's open lines, for a message; "" if unavailable."""
    try:
        found = client.call("imopenlines.config.list.get", {"PARAMS": {"select": ["ID", "LINE_NAME"]}})
    except PortalError:
        return ""
    if isinstance(found, Mapping):
        found = list(found.values())
    items = [f"{x.get('ID')} ({x.get('LINE_NAME', '')})" for x in found or [] if isinstance(x, Mapping)]
    return ", ".join(items[:10])


def _check_line(client: Caller, line: int, result: SetupResult, portal: str | None) -> bool:
    """Line exists and is active (imopenlines.config.get); returns True when it exists."""
    config = client.call("imopenlines.config.get", {"CONFIG_ID": line})
    if not config:
        known = _known_lines(client)
        result.checks.append(
            Check(
                "open line",
                False,
                f"open line {line} does not exist on this portal",
                "create it in Contact Center → Open Lines, or pass --line with an existing id"
                + (f" ({known})" if known else ""),
            )
        )
        return False
    result.line_name = str(config.get("LINE_NAME", "")) if isinstance(config, Mapping) else ""
    name = f" {result.line_name!r}" if result.line_name else ""
    active = isinstance(config, Mapping) and _y(config.get("ACTIVE", "N"))
    result.checks.append(
        Check(
            "open line",
            active,
            f"open line {line}{name} is " + ("active" if active else "inactive"),
            "" if active else "activate the open line in Contact Center → Open Lines (its settings page)",
        )
    )
    return True


def _registered(client: Caller, connector: str) -> bool | None:
    """Whether ``connector`` is in imconnector.list (None when the list is unavailable)."""
    try:
        listed = client.call("imconnector.list", {})
    except (RequestRejectedError, SetupError):
        return None
    if isinstance(listed, Mapping):
        return connector in {str(k).lower() for k in listed}
    if isinstance(listed, list):
        return connector in {str(k).lower() for k in listed}
    return None


def _status(client: Caller, line: int, connector: str) -> Mapping[str, Any] | None:
    """imconnector.status for the pair; None when the portal says the connector is unknown."""
    try:
        status = client.call("imconnector.status", {"CONNECTOR": connector, "LINE": line})
    except SetupError:
        return None
    except RequestRejectedError as exc:
        if exc.code.upper().startswith("IMCONNECTOR") or exc.code.upper() == "ERROR_ARGUMENT":
            return None
        raise
    return status if isinstance(status, Mapping) else {"STATUS": bool(status)}


def setup(
    client: Caller,
    line: int | str,
    connector: str = DEFAULT_CONNECTOR,
    *,
    name: str = DEFAULT_NAME,
    icon: str = DEFAULT_ICON,
    placement_handler: str | None = None,
    portal: str | None = None,
    chat_group: bool = False,
) -> SetupResult:
    """Register ``connector`` (idempotent), activate it on ``line``, set its data, check its status.

    Returns what is ready and what is not (:attr:`SetupResult.ready`); raises AuthError when the
    token is refused. The line itself is never created or activated here: that is the portal
    administrator's decision, so an absent or inactive line is reported with the fix.
    """
    line = parse_line(line)
    connector = check_connector_id(connector)
    portal = _portal_of(client, portal)
    result = SetupResult(line, connector)
    _check_token(client, result, portal)
    line_exists = _check_line(client, line, result, portal)

    was_registered = _registered(client, connector)
    # The placement handler is the page Contact Center opens for the connector's settings; the
    # import needs none, so it points at the portal itself (the docs require some URL).
    handler = placement_handler or ((portal.rstrip("/") + "/") if portal else "https://localhost/")
    params: dict[str, Any] = {
        "ID": connector,
        "NAME": name,
        "ICON": {"DATA_IMAGE": icon},
        "PLACEMENT_HANDLER": handler,
    }
    if chat_group:  # default false: Bitrix24 groups chats by user.id (reference §5)
        params["CHAT_GROUP"] = "Y"
    answer = client.call("imconnector.register", params)
    error = _error_in(answer)
    if error is not None or not _ok_flag(answer):
        code, text = error or ("ERROR_UNEXPECTED_ANSWER", f"imconnector.register answered {answer!r}")
        raise RequestRejectedError(code, f"registering connector {connector!r}: {text}")
    result.checks.append(
        Check(
            "connector registered",
            True,
            f"{connector!r} " + ("was already registered (updated)" if was_registered else "registered"),
        )
    )
    if not line_exists:
        result.checks.append(
            Check(
                "connector active",
                False,
                "not activated: the open line does not exist",
                "fix the open line first, then run " + setup_command(portal, line, connector),
            )
        )
        return result

    active = client.call("imconnector.activate", {"CONNECTOR": connector, "LINE": line, "ACTIVE": 1})
    if not _ok_flag(active):
        raise RequestRejectedError("ERROR_UNEXPECTED_ANSWER", f"imconnector.activate answered {active!r}")
    data = {"ID": connector, "URL": handler, "URL_IM": handler, "NAME": name}
    done = client.call("imconnector.connector.data.set", {"CONNECTOR": connector, "LINE": line, "DATA": data})
    result.checks.append(
        Check(
            "connector data",
            _ok_flag(done),
            "name and links set" if _ok_flag(done) else f"imconnector.connector.data.set answered {done!r}",
            "run " + setup_command(portal, line, connector) + " again",
        )
    )
    _check_status(client, line, connector, result, portal)
    return result


def _check_status(client: Caller, line: int, connector: str, result: SetupResult, portal: str | None) -> None:
    """Append the imconnector.status check (active on the line)."""
    status = _status(client, line, connector)
    ok = bool(status) and _y(status.get("STATUS", False)) if status else False
    detail = f"active on open line {line}" if ok else f"not active on open line {line}"
    if status and status.get("ERROR") and _y(status.get("ERROR")):
        detail += " (the portal reports an error for it)"
    result.checks.append(
        Check("connector active", ok, detail, "" if ok else "run " + setup_command(portal, line, connector))
    )


def preflight(client: Caller, line: int | str, connector: str, *, portal: str | None = None) -> SetupResult:
    """Check, without changing anything, that messages can be sent; raise with the fixing command.

    Raises AuthError (``bulkimport auth``) when the token is refused or lacks scopes, SetupError
    (``bulkimport setup …``) when the line is missing/inactive or the connector is not registered
    or not active on it. Returns the passing checks otherwise.
    """
    line = parse_line(line)
    connector = check_connector_id(connector)
    portal = _portal_of(client, portal)
    try:
        return _preflight(client, line, connector, portal)
    except RetryableError as exc:
        if exc.code != "connection-failed":
            raise
        # The generic connection-failed hint promises retries with back-off; preflight makes one
        # attempt, so say what is true: nothing was sent, check the address and the network.
        raise FatalError(
            "preflight-unreachable", f"could not connect to {portal or 'the portal'}; nothing was sent"
        ) from None


def _preflight(client: Caller, line: int, connector: str, portal: str | None) -> SetupResult:
    """The checks of :func:`preflight` (arguments already validated)."""
    result = SetupResult(line, connector)
    _check_token(client, result, portal)
    if result.problems:
        bad = result.problems[0]
        raise AuthError("insufficient_scope", f"the token's {bad.detail}; fix: {bad.fix}")
    fix = setup_command(portal, line, connector)
    if not _check_line(client, line, result, portal):
        raise SetupError("NOT_ACTIVE_LINE", f"{result.checks[-1].detail}; fix: {result.checks[-1].fix}")
    if result.problems:
        raise SetupError(
            "NOT_ACTIVE_LINE", f"{result.checks[-1].detail}; fix: {result.checks[-1].fix}, then run {fix}"
        )
    registered = _registered(client, connector)
    if registered is False:
        text = f"connector {connector!r} is not registered; fix: {fix}"
        raise SetupError("IMCONNECTOR_NO_CORRECT_PROVIDER", text)
    result.checks.append(Check("connector registered", True, f"{connector!r} registered"))
    _check_status(client, line, connector, result, portal)
    if result.problems:
        text = f"connector {connector!r} {result.checks[-1].detail}; fix: {fix}"
        raise SetupError("IMCONNECTOR_NO_CORRECT_PROVIDER", text)
    return result


# ------------------------------------------------------------------------------------------------
# Clients for the CLI and the notebook: a real portal from the environment, or a sandbox
# ------------------------------------------------------------------------------------------------
def portal_client(portal: str | None, *, limits: Any = None, clock: Any = None, auth: Any = None) -> Any:
    """A :class:`bulkimport.portal.client.Client` for ``portal`` with credentials from ``auth`` or
    the environment and token file (ConfigError naming the fix when there are none)."""
    from .portal.auth import Auth
    from .portal.client import Client

    if not portal:
        raise ConfigError(
            f"--portal is required (or set {ENV_PORTAL}), e.g. --portal https://example.bitrix24.eu"
        )
    if auth is None:
        auth = Auth.from_env(**({"clock": clock} if clock is not None else {}))
    kwargs: dict[str, Any] = {}
    if clock is not None:
        kwargs["clock"] = clock
    if limits is not None:
        kwargs["limits"] = limits
    return Client(portal, auth, **kwargs)


def demo_time_scale(seconds: float, target: float = 10.0) -> float:
    """How much faster than real time a sandbox must run for ``seconds`` of portal time to take about
    ``target`` real seconds (at least 1: never slower than real time)."""
    if seconds <= target:
        return 1.0
    return float(max(1, round(seconds / target)))


@dataclass
class SandboxTarget:
    """Where to send when importing into a running sandbox: portal, line, client and its clock."""

    portal: str
    line: int
    client: Any
    clock: Any
    auth: Any = None
    _tokens_dir: Any = None  # keeps the temporary token folder alive as long as the target


def sandbox_target(sb: Any, *, limits: Any = None, line: int | None = None) -> SandboxTarget:
    """A client for a started :class:`bulkimport.sandbox.Sandbox`, on its clock, with its tokens
    (rotated tokens go to a private temporary token file, never beside the user's data)."""
    import tempfile

    from .clock import ScaledClock
    from .portal.auth import Auth
    from .portal.client import Client

    clock = ScaledClock(sb.time_scale, sb.epoch)
    tokens_dir = tempfile.TemporaryDirectory(prefix="bulkimport-sandbox-tokens-")
    auth = Auth(
        client_id=sb.client_id,
        client_secret=sb.client_secret,
        access_token=sb.access_token,
        refresh_token=sb.refresh_token,
        oauth_url=sb.oauth_url,
        token_file=Path(tokens_dir.name) / "tokens.json",
        clock=clock,
        env={},
    )
    kwargs: dict[str, Any] = {"clock": clock}
    if limits is not None:
        kwargs["limits"] = limits
    if line is None:
        line = int(_first_line_id(sb.store.lines()))
    client = Client(sb.url, auth, **kwargs)
    return SandboxTarget(sb.url, line, client, clock, auth, tokens_dir)


def default_sandbox_db(file: str | Path) -> Path:
    """Where ``bulkimport run FILE --sandbox`` keeps the sandbox's database: beside FILE."""
    file = Path(file)
    return file.with_name(f"sandbox-{file.stem}.db")


def sandbox_port_for(state: str | Path | None) -> int:
    """The loopback port a journal's sandbox import ran on (so a resumed run talks to the same
    portal address the journal is bound to), or 0 (any free port) for a new import."""
    from urllib.parse import urlsplit

    if state is None or not Path(state).is_file():
        return 0
    from .journal import Journal

    try:
        journal = Journal.open(state)
    except InputError:
        return 0
    try:
        portal = journal.meta().get("portal", "")
    finally:
        journal.close()
    parts = urlsplit(portal)
    if parts.hostname in ("127.0.0.1", "localhost", "::1") and parts.port:
        return int(parts.port)
    return 0


def _first_line_id(lines: Any) -> Any:
    """The id of the first active open line in what ``store.lines()`` returned (frame or dicts)."""
    if hasattr(lines, "iloc"):
        for flag in ("active", "ACTIVE"):
            if flag in lines.columns and (lines[flag].astype("str").str.upper() == "Y").any():
                lines = lines[lines[flag].astype("str").str.upper() == "Y"]
                break
        for name in ("ID", "id", "line", "LINE"):
            if name in lines.columns:
                return lines[name].iloc[0]
        return lines.index[0]
    first = next(iter(lines))
    if isinstance(first, Mapping):
        return first.get("ID", first.get("id"))
    return first
