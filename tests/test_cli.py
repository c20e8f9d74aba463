"""The command line: exit codes, one-line errors, dry runs, sandbox imports, setup, status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bulkimport.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_XLSX = ROOT / "data_examples" / "history.xlsx"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """No BITRIX24_* settings leak in from the machine; tokens go to a temporary file."""
    for name in list(os.environ):
        if name.startswith("BITRIX24_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BITRIX24_TOKEN_FILE", str(tmp_path / "tokens.json"))


def _cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bulkimport`` as a user would; the worktree's package comes first on the path."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX24_")}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bulkimport", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: ") and "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in ("run", "validate", "mapping", "setup", "auth", "status", "sandbox"):
        assert f"  {name}" in result.output


def test_unknown_option_is_one_line_and_exit_2():
    _assert_one_line_error(_cli("run", "x.xlsx", "--bogus"), "--bogus", "--help")


def test_bad_plan_choice_is_one_line_and_exit_2():
    _assert_one_line_error(_cli("run", "x.xlsx", "--dry-run", "--plan", "gold"), "--plan", "gold")


def test_missing_portal_names_the_option_and_the_fix():
    _assert_one_line_error(_cli("run", "x.xlsx"), "--portal", "BITRIX24_PORTAL", "--sandbox")


def test_bad_connector_id_is_refused_before_anything_happens():
    _assert_one_line_error(
        _cli("run", "x.xlsx", "--sandbox", "--connector", "my.conn"), "--connector", "no dots"
    )


def test_bad_line_is_refused():
    _assert_one_line_error(
        _cli("run", "x.xlsx", "--portal", "https://p.example", "--line", "first"), "--line"
    )


def test_auth_without_application_credentials_names_them():
    _assert_one_line_error(_cli("auth", "--portal", "https://p.example"), "--client-id", "BITRIX24_CLIENT_ID")


def test_status_of_a_missing_journal_is_exit_2(tmp_path):
    _assert_one_line_error(_cli("status", str(tmp_path / "nope.bulkimport.db")), "nope.bulkimport.db")


def test_status_without_a_journal_in_the_folder(tmp_path):
    _assert_one_line_error(_cli("status", cwd=tmp_path), "STATE")


def test_debug_shows_the_traceback():
    proc = _cli("--debug", "run", "x.xlsx")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
