"""``bulkimport sandbox``: serve in a subprocess, print credentials, inspect a database with --show."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import requests
from click.testing import CliRunner
from conftest import ICON, msg

from bulkimport.cli import main


def _serve(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bulkimport", "sandbox", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    info: dict[str, str] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Sandbox Bitrix24 portal:"):
            info["url"] = line.split(": ", 1)[1].strip()
        elif ":" in line and line.startswith("  "):
            key, _, value = line.strip().partition(":")
            info[key.strip()] = value.strip()
        if line.startswith("Serving"):
            break
    return proc, info


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGINT) -> str:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return out


def test_serve_prints_credentials_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    db = tmp_path / "portal.db"
    creds = tmp_path / "creds.json"
    proc, info = _serve(
        "--db", str(db), "--time-scale", "1000", "--credentials", str(creds), "--plan", "enterprise"
    )
    try:
        assert info["url"].startswith("http://127.0.0.1:")
        assert info["time scale"] == "1000; limits enterprise"
        assert info["REST endpoint"] == info["url"] + "/rest/"
        assert info["OAuth server"] == info["url"] + "/oauth/token/"
        token = info["access_token"]
        rest = info["REST endpoint"]
        r = requests.post(
            rest + "imconnector.register",
            json={
                "ID": "hist_import",
                "NAME": "H",
                "ICON": ICON,
                "PLACEMENT_HANDLER": "https://x",
                "auth": token,
            },
            timeout=30,
        )
        assert r.json()["result"] == {"result": True}
        requests.post(
            rest + "imconnector.activate",
            json={"CONNECTOR": "hist_import", "LINE": 1, "ACTIVE": 1, "auth": token},
            timeout=30,
        )
        r = requests.post(
            rest + "imconnector.send.messages",
            json={"CONNECTOR": "hist_import", "LINE": 1, "MESSAGES": [msg(0), msg(1)], "auth": token},
            timeout=30,
        )
        assert r.status_code == 200
        r = requests.get(
            info["OAuth server"],
            params={
                "grant_type": "refresh_token",
                "client_id": info["client_id"],
                "client_secret": info["client_secret"],
                "refresh_token": info["refresh_token"],
            },
            timeout=30,
        )
        assert r.status_code == 200
        saved = json.loads(creds.read_text())
        assert saved["client_secret"] == info["client_secret"]
        assert oct(os.stat(creds).st_mode & 0o777) == "0o600"
    finally:
        out = _stop(proc)
    assert "Received 2 messages in 1 chat." in out

    result = CliRunner().invoke(main, ["sandbox", "--db", str(db), "--show", "messages"])
    assert result.exit_code == 0, result.output
    assert "c1-m0" in result.output and "text 1" in result.output
    header, first = result.output.splitlines()[:2]  # a header, then one line per message
    assert header.startswith("time (UTC)")
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  chat ", first) and "customer" in first, first
    result = CliRunner().invoke(main, ["sandbox", "--db", str(db), "--show", "counts", "--format", "json"])
    assert json.loads(result.output)["messages"] == 2
    result = CliRunner().invoke(main, ["sandbox", "--db", str(db), "--show", "messages", "--chat", "zz"])
    assert "(no messages)" in result.output
    result = CliRunner().invoke(main, ["sandbox", "--db", str(db), "--show", "connectors", "--format", "csv"])
    assert result.output.splitlines()[0].startswith("connector,name")


def test_serve_with_faults_and_no_limits_stops_on_sigterm() -> None:
    proc, info = _serve("--time-scale", "1000", "--fault", "503:1:1@server.time", "--no-limits")
    try:
        token = info["access_token"]
        url = info["REST endpoint"] + "server.time"
        assert requests.post(url, json={"auth": token}, timeout=30).status_code == 503
        assert requests.post(url, json={"auth": token}, timeout=30).status_code == 200
    finally:
        out = _stop(proc, signal.SIGTERM)
    assert "Stopped" in out


def test_serve_with_zero_simulated_cost() -> None:
    proc, info = _serve("--cost-per-call", "0", "--cost-per-message", "0", "--no-limits")
    try:
        url = info["REST endpoint"] + "server.time"
        answer = requests.post(url, json={"auth": info["access_token"]}, timeout=30).json()
        assert answer["time"]["processing"] == 0
    finally:
        _stop(proc, signal.SIGTERM)


def test_show_needs_db_and_bad_fault_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["sandbox", "--show", "messages"])
    assert result.exit_code == 2 and "--db" in result.output
    result = CliRunner().invoke(main, ["sandbox", "--db", str(tmp_path / "none.db"), "--show", "chats"])
    assert result.exit_code == 2 and "does not exist" in result.output
    result = CliRunner().invoke(main, ["sandbox", "--fault", "teapot:1"])
    assert result.exit_code == 2 and "unknown fault kind" in result.output


def test_help_documents_serve_and_show() -> None:
    result = CliRunner().invoke(main, ["sandbox", "--help"])
    assert result.exit_code == 0
    for word in ("--show", "--fault", "--time-scale", "--db", "--no-limits", "drop-after", "--cost-per-call"):
        assert word in result.output


def test_show_messages_names_the_side_of_a_system_user_reply():
    """Found by new-user trials: a reply sent as the system user (message.user_id 0, from
    --unmapped-operators system) was listed as the customer's."""
    import pandas as pd

    from bulkimport.sandbox.command import _readable_messages

    frame = pd.DataFrame({
        "date": [1_700_000_000] * 3, "chat_id": ["c1"] * 3, "user_id": ["u1"] * 3,
        "author_id": [None, 0, 7], "text": ["hi", "hello", "bye"], "files": ["[]"] * 3,
        "message_id": ["m1", "m2", "m3"], "deleted": [None] * 3,
    })
    lines = _readable_messages(frame).splitlines()[1:]
    assert "customer u1" in lines[0]
    assert "operator (system)" in lines[1] and "customer" not in lines[1]
    assert "operator 7" in lines[2]
