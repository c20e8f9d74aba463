"""What a run is configured by outside its arguments: environment variable names and the line id.

Ground floor, beside ``errors``: the CLI (click's ``envvar=``), the sender's defaults, connector
set-up and the portal's OAuth code all read these names, so they are spelled once here, below
every layer that reads them (a string constant must not make the CLI or the sender import the
portal package). The open line id is parsed by one function for the same reason.
"""

from __future__ import annotations

from .errors import ConfigError

#: The portal address (``--portal``).
ENV_PORTAL = "BITRIX24_PORTAL"
#: The open line id (``--line``).
ENV_LINE = "BITRIX24_LINE"
#: The connector id (``--connector``).
ENV_CONNECTOR = "BITRIX24_CONNECTOR"
#: The local application's client id (``bulkimport auth --client-id``, token refresh).
ENV_CLIENT_ID = "BITRIX24_CLIENT_ID"
#: The local application's client secret (goes only to the OAuth server).
ENV_CLIENT_SECRET = "BITRIX24_CLIENT_SECRET"  # noqa: S105 - a variable name, not a secret
#: An access token given by hand (the token file wins once it superseded it).
ENV_ACCESS_TOKEN = "BITRIX24_ACCESS_TOKEN"  # noqa: S105 - a variable name, not a secret
#: A refresh token given by hand (same rule).
ENV_REFRESH_TOKEN = "BITRIX24_REFRESH_TOKEN"  # noqa: S105 - a variable name, not a secret
#: The OAuth server's token address (``bulkimport auth --oauth-url``).
ENV_OAUTH_URL = "BITRIX24_OAUTH_URL"
#: Where the token file lives (``bulkimport auth --token-file``).
ENV_TOKEN_FILE = "BITRIX24_TOKEN_FILE"  # noqa: S105 - a variable name, not a secret
#: inputs of at least this many rows are planned on disk, in parts (bulkimport.bigfile)
ENV_STORED_PLAN_ROWS = "BULKIMPORT_STORED_PLAN_ROWS"

#: The connector id used when ``--connector`` / ``BITRIX24_CONNECTOR`` is not given.
DEFAULT_CONNECTOR = "bulkimport"


def parse_line(line: int | str | None) -> int:
    """The open line id as an int, or a one-line ConfigError naming --line / BITRIX24_LINE."""
    try:
        value = int(str(line).strip())
    except (TypeError, ValueError):
        value = 0
    if line is None or not str(line).strip():
        raise ConfigError(
            f"--line is missing: pass the numeric id of the open line (Contact Center → Open Lines), "
            f"e.g. --line 1, or set {ENV_LINE}"
        )
    if value <= 0:
        raise ConfigError(
            f"--line {line!r}: pass the numeric id of the open line (Contact Center → Open Lines), "
            f"e.g. --line 1, or set {ENV_LINE}"
        )
    return value
