"""Drill: secrets never leak, report cells are never formulas, insecure addresses are refused.

A full CLI import (``--debug``: DEBUG logging on) against a sandbox whose tokens expire every two
seconds, so the pair rotates several times mid-run, with a forced token expiry and an ambiguous drop.
Every token the sandbox ever issued (read from its database) and the client secret are then looked
for in stdout, stderr, the xlsx and csv reports (every cell of every sheet), the journal's SQLite
files, every other file the run left, and the output of failing runs (with tracebacks): they may
only be in the token file, which must be mode 0600.
"""

from __future__ import annotations

import csv
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
from drills.kit import HEADER, ROOT, cli_env, register, run_args, run_cli

from bulkimport.sandbox import Sandbox

HOSTILE = ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-1+1", "\t=1+1", "\r=2+2",
           "=1+1\nsecond line"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _history(path: Path) -> None:
    """8 conversations × 12 messages; hostile text in names and messages (and one chat id)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i in range(12):
            for c in range(8):
                text = HOSTILE[(i + c) % len(HOSTILE)] if (i + c) % 3 == 0 else f"plain {c}.{i}"
                name = "@Ann" if c % 2 else "Ann"
                chat = "=chat1" if c == 1 else f"chat{c}"
                w.writerow([chat, f"client{c}", name, f"c{c}-m{i}", f"2025-02-01 10:{i:02d}:{c:02d}", text])


def _secrets(portal: Sandbox) -> set[str]:
    """The client secret and every access and refresh token the sandbox ever issued."""
    found = {portal.client_secret}
    con = sqlite3.connect(portal.db_path)
    try:
        for a, r in con.execute("select access_token, refresh_token from tokens"):
            found |= {a, r}
        found |= {r for (r,) in con.execute("select refresh_token from refresh_tokens")}
    finally:
        con.close()
    assert all(len(s) >= 16 for s in found)
    return found


def _leaks(text: str | bytes, secrets: set[str]) -> list[str]:
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    return sorted(s[:6] + "…" for s in secrets if s.encode() in data)


def _xlsx_cells(path: Path) -> list[object]:
    wb = openpyxl.load_workbook(path)  # formulas stay formulas (data_only=False)
    cells = []
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (ws.title, cell.coordinate, cell.value)
                cells.append(cell.value)
    return cells


def _csv_cells(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return [cell for row in csv.reader(f) for cell in row]


REPORTED = ('=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-1+1", "@Ann", "=chat1")


def _assert_neutral(cells: list[object], where: str) -> None:
    """CSV: no cell starts a formula (the hostile values carry a leading apostrophe)."""
    texts = [c for c in cells if isinstance(c, str)]
    bad = [c for c in texts if c.startswith(FORMULA_START)]
    assert not bad, (where, bad[:5])
    for value in REPORTED:
        assert "'" + value in texts, (where, value)


def _assert_as_typed(cells: list[object], where: str) -> None:
    """xlsx: the hostile values are there exactly as typed — as text cells (``_xlsx_cells`` has
    already refused any formula cell), so Excel shows them and never evaluates them."""
    texts = [c for c in cells if isinstance(c, str)]
    for value in REPORTED:
        assert value in texts, (where, value)


@pytest.fixture
def portal():
    with Sandbox(time_scale=1.0, token_lifetime=2, cost_per_call=0.05, cost_per_message=0.02, seed=3) as p:
        register(p)
        yield p


def test_no_secret_anywhere_but_the_token_file(portal, tmp_path):
    _history(tmp_path / "history.csv")
    env = cli_env(portal, tmp_path)
    portal.faults.add("expire-token", count=1, methods=["batch", "imconnector.send.messages"])
    portal.faults.add("drop-after", count=1, methods=["batch", "imconnector.send.messages"])
    base = run_args(portal, tmp_path / "history.csv", tmp_path)
    xlsx = [*base[:-1], str(tmp_path / "report.xlsx")]
    debug = [xlsx[0], "-m", "bulkimport", "--debug", *xlsx[3:]]
    outputs = []
    first = run_cli(debug, env)
    outputs += [first.stdout, first.stderr]
    assert first.returncode in (0, 1), first.stdout + first.stderr
    assert "DEBUG" in first.stderr  # logging really was on
    again = run_cli(base, env)  # a resume writing the csv report
    outputs += [again.stdout, again.stderr]
    status = run_cli([sys.executable, "-m", "bulkimport", "status", str(tmp_path / "journal.db")], env)
    outputs += [status.stdout, status.stderr]
    # failing runs print errors (and with --debug tracebacks): a dead refresh token, a wrong secret
    broken = {**env, "BITRIX24_TOKEN_FILE": str(tmp_path / "other-tokens.json")}
    portal.expire_tokens()
    failed = run_cli(debug, broken)  # the environment's refresh token was rotated long ago
    outputs += [failed.stdout, failed.stderr]
    # (--debug lets the error through as a traceback: exit 1 instead of the one-line exit 2)
    assert failed.returncode in (1, 2) and "invalid_grant" in failed.stdout + failed.stderr
    wrong = {**broken, "BITRIX24_CLIENT_SECRET": "x" * 40}
    failed2 = run_cli(base, wrong)
    outputs += [failed2.stdout, failed2.stderr]
    assert failed2.returncode == 2 and "invalid_client" in failed2.stderr, failed2.stderr

    secrets = _secrets(portal)
    assert len(secrets) >= 6  # the pair really rotated during the run
    for text in outputs:
        assert not _leaks(text, secrets), text[-3000:]
    xlsx_cells = _xlsx_cells(tmp_path / "report.xlsx")
    assert not _leaks("\n".join(map(str, xlsx_cells)), secrets)
    _assert_as_typed(xlsx_cells, "xlsx")
    csv_cells = _csv_cells(tmp_path / "report.csv")
    _assert_neutral(csv_cells, "csv")
    token_file = tmp_path / "tokens.json"
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != token_file:
            assert not _leaks(path.read_bytes(), secrets), path
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert _leaks(token_file.read_bytes(), secrets)  # the live pair is there (and only there)


@pytest.mark.parametrize(
    "portal_url",
    ["http://192.0.2.1", "http://10.0.0.1:80/", "http://0.0.0.0", "http://127.0.0.1.nip.io",
     "http://[::ffff:127.0.0.1]", "http://example.invalid/rest/"],
)
def test_plain_http_to_a_non_loopback_portal_is_refused(tmp_path, portal_url):
    _history(tmp_path / "history.csv")
    proc = subprocess.run(
        [sys.executable, "-m", "bulkimport", "run", str(tmp_path / "history.csv"), "--portal", portal_url,
         "--line", "1", "--yes", "--state", str(tmp_path / "j.db"), "--report", str(tmp_path / "r.csv")],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        env={**cli_env_stub(tmp_path)},
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert "https" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "j.db").exists()


def test_plain_http_oauth_server_is_refused_before_anything_is_sent(portal, tmp_path):
    """The client secret travels to the OAuth server: a non-loopback http:// address there must stop
    the run up front, not an hour in at the first refresh (after messages went out)."""
    _history(tmp_path / "history.csv")
    env = cli_env(portal, tmp_path, BITRIX24_OAUTH_URL="http://192.0.2.1/oauth/token/")
    proc = run_cli(run_args(portal, tmp_path / "history.csv", tmp_path), env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "BITRIX24_OAUTH_URL" in lines[0], proc.stderr
    assert portal.store.messages().empty


def cli_env_stub(tmp_path: Path) -> dict[str, str]:
    """Credentials that look real but belong to no portal (nothing may be contacted anyway)."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX24_")}
    env.update(PYTHONPATH=str(ROOT), BITRIX24_CLIENT_ID="local.0123456789abcd.12345678",
               BITRIX24_CLIENT_SECRET="s" * 40, BITRIX24_ACCESS_TOKEN="a" * 40,
               BITRIX24_REFRESH_TOKEN="r" * 40, BITRIX24_TOKEN_FILE=str(tmp_path / "tokens.json"))
    return env
