"""The ground floor's settings: environment names spelled once, and the one parser of a line id."""

from __future__ import annotations

import pytest

from bulkimport import settings
from bulkimport.errors import ConfigError
from bulkimport.portal import auth


@pytest.mark.parametrize(("given", "line"), [("1", 1), (" 7 ", 7), (3, 3), ("0012", 12)])
def test_a_line_id_is_a_positive_whole_number(given, line):
    assert settings.parse_line(given) == line


@pytest.mark.parametrize("given", ["0", "-1", "abc", "1.5", "", None, 0, "1 2"])
def test_anything_else_is_a_one_line_config_error_naming_the_option_and_the_variable(given):
    with pytest.raises(ConfigError) as info:
        settings.parse_line(given)
    message = str(info.value)
    assert "\n" not in message
    missing = given is None or not str(given).strip()  # said as missing, not as "--line None"
    assert message.startswith("--line is missing: " if missing else f"--line {given!r}: ")
    assert "e.g. --line 1" in message
    assert message.endswith("or set BITRIX24_LINE")


def test_environment_names_are_the_documented_ones():
    names = {v for k, v in vars(settings).items() if k.startswith("ENV_")}
    assert names == {
        "BITRIX24_PORTAL", "BITRIX24_LINE", "BITRIX24_CONNECTOR", "BITRIX24_CLIENT_ID",
        "BITRIX24_CLIENT_SECRET", "BITRIX24_ACCESS_TOKEN", "BITRIX24_REFRESH_TOKEN",
        "BITRIX24_OAUTH_URL", "BITRIX24_TOKEN_FILE", "BULKIMPORT_STORED_PLAN_ROWS",
    }
    assert set(auth.ENV.values()) <= names
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert [n for n in sorted(names) if f"`{n}" not in readme] == []  # each one documented


def test_auth_reads_the_names_from_settings(tmp_path):
    env = {
        settings.ENV_ACCESS_TOKEN: "access-from-env",
        settings.ENV_TOKEN_FILE: str(tmp_path / "tokens.json"),
        settings.ENV_OAUTH_URL: "https://oauth.example/token/",
    }
    a = auth.Auth(env=env)
    assert a.token() == "access-from-env" and a.token_file == tmp_path / "tokens.json"
    assert a.oauth_url == "https://oauth.example/token/"
