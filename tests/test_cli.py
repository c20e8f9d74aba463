"""The command line: exit codes, one-line errors, dry runs, sandbox imports, setup, status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bulkimport.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_XLSX = ROOT / "data_examples" / "history.xlsx"


pytestmark = pytest.mark.usefixtures("clean_env")


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


def test_sandbox_options_without_sandbox_are_refused():
    _assert_one_line_error(_cli("run", "x.xlsx", "--dry-run", "--time-scale", "10"), "--sandbox")


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


# ------------------------------------------------------------------------------------------------
# with the example data, the sandbox and the sender
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def history(tmp_path) -> Path:
    """A private copy of the example history so reports, journals and sandbox DBs land in tmp_path."""
    import shutil

    target = tmp_path / "history.xlsx"
    shutil.copy(EXAMPLE_XLSX, target)
    return target


def _example_plan(path: Path):
    import bulkimport

    df = bulkimport.read(path)
    return bulkimport.plan(df, bulkimport.Mapping.guess(df))


def test_dry_run_shows_mapping_plan_invalid_rows_and_eta(history):
    plan = _example_plan(history)
    proc = _cli("run", str(history), "--dry-run", "--plan", "enterprise")
    assert proc.returncode == (1 if plan.counts["invalid"] else 0), proc.stderr
    out = proc.stdout
    assert "guessed from the column headers" in out and "message.date" in out
    assert f"{plan.counts['conversations']} conversations" in out
    assert "Estimate:" in out and "enterprise" in out and "requests" in out
    assert "Dry run: nothing was sent." in out
    assert "First messages in send order:" in out and plan.preview(1).iloc[0]["message_id"] in out
    if plan.counts["invalid"]:
        assert "Problems by code:" in out
    assert not (history.parent / "history.xlsx.bulkimport.db").exists()


def test_validate_lists_invalid_rows_by_code_and_sends_nothing(history):
    plan = _example_plan(history)
    result = CliRunner().invoke(main, ["validate", str(history)])
    invalid = plan.counts["invalid"]
    assert result.exit_code == (1 if invalid else 0), result.output
    assert f"{invalid} invalid" in result.output
    for code in plan.failures.loc[plan.failures["level"] == "error", "code"].unique():
        assert code in result.output


def test_csv_encoding_and_delimiter_can_be_given(tmp_path):
    source = tmp_path / "export.csv"
    source.write_text("Чат|Клиент|Дата|Текст\nc1|u1|2025-01-02 10:00|Привет\n", encoding="cp1251")
    result = CliRunner().invoke(main, ["validate", str(source), "--encoding", "cp1251", "--delimiter", "|"])
    assert result.exit_code == 0, result.output
    assert "1 row: 1 valid, 0 invalid." in result.output and "'Текст'" in result.output
    _assert_one_line_error(_cli("validate", str(source), "--encoding", "klingon"), "klingon")


def test_mapping_is_shown_saved_and_reusable(history, tmp_path):
    saved = tmp_path / "mapping.toml"
    result = CliRunner().invoke(main, ["mapping", str(history), "--save", str(saved)])
    assert result.exit_code == 0, result.output
    assert saved.is_file() and "--mapping" in result.output
    # the [operators] skeleton holds placeholder ids: refused, naming the fix, until they are filled in
    unedited = CliRunner().invoke(main, ["validate", str(history), "--mapping", str(saved)])
    assert unedited.exit_code == 2 and "placeholder" in unedited.output
    import re

    text = saved.read_text(encoding="utf-8")
    ids = iter(range(100, 200))
    saved.write_text(re.sub(r"= 0(\s)", lambda m: f"= {next(ids)}{m.group(1)}", text), encoding="utf-8")
    again = CliRunner().invoke(main, ["validate", str(history), "--mapping", str(saved)])
    assert again.exit_code in (0, 1), again.output
    assert "guessed" not in again.output


def test_missing_input_file_is_one_line(tmp_path):
    _assert_one_line_error(_cli("validate", str(tmp_path / "nope.xlsx")), "nope.xlsx")


def test_bad_mapping_file_is_one_line(history, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[columns]\n"message.text" = "No such column"\n', encoding="utf-8")
    _assert_one_line_error(_cli("run", str(history), "--dry-run", "--mapping", str(bad)), "No such column")


def _sandbox_messages(db: Path):
    from bulkimport.sandbox import Sandbox

    with Sandbox(db=db) as sb:
        return sb.store.messages(), sb.store.duplicates()


def test_run_sandbox_end_to_end_then_resume_sends_nothing_twice(history):
    plan = _example_plan(history)
    proc = _cli("run", str(history), "--sandbox", "--no-progress")
    out = proc.stdout
    assert proc.returncode == (1 if plan.counts["invalid"] else 0), out + proc.stderr
    assert "faster than real" in out and "Sandbox portal at http://127.0.0.1:" in out
    assert "READY" in out
    assert f"sent {plan.counts['valid']}" in out
    report = history.parent / "history.xlsx.report.xlsx"
    journal = history.parent / "history.xlsx.bulkimport.db"
    db = history.parent / "sandbox-history.db"
    assert f"Report: {report}" in out and f"Journal: {journal}" in out
    assert "bulkimport sandbox" in out
    assert report.is_file() and journal.is_file() and db.is_file()
    messages, duplicates = _sandbox_messages(db)
    assert len(messages) == plan.counts["valid"] and duplicates.empty

    again = _cli("run", str(history), "--sandbox", "--no-progress")
    assert again.returncode == proc.returncode, again.stdout + again.stderr
    messages, duplicates = _sandbox_messages(db)
    assert len(messages) == plan.counts["valid"] and duplicates.empty

    status = _cli("status", str(journal))
    assert status.returncode == 0, status.stderr
    assert f"sent {plan.counts['valid']}" in status.stdout
    assert f"Input: {history}" in status.stdout and "Complete: nothing pending or unknown." in status.stdout


def _portal_env(sb) -> dict[str, str]:
    return {
        "BITRIX24_PORTAL": sb.url,
        "BITRIX24_CLIENT_ID": sb.client_id,
        "BITRIX24_CLIENT_SECRET": sb.client_secret,
        "BITRIX24_ACCESS_TOKEN": sb.access_token,
        "BITRIX24_REFRESH_TOKEN": sb.refresh_token,
        "BITRIX24_OAUTH_URL": sb.oauth_url,
    }


def test_setup_then_run_against_a_portal_given_by_the_environment(history, tmp_path, monkeypatch):
    from bulkimport.sandbox import Sandbox

    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        for name, value in _portal_env(sb).items():
            monkeypatch.setenv(name, value)
        env = {**_portal_env(sb), "BITRIX24_TOKEN_FILE": str(tmp_path / "tokens.json")}

        # a guess nobody can confirm (--yes, no terminal) is refused before the portal is contacted
        proc = _cli("run", str(history), "--line", "1", "--yes", "--no-progress", env=env)
        _assert_one_line_error(proc, "would be guessed from its headers", "--accept-guessed-mapping")
        # not set up yet: the preflight stops before the first message, naming the fix
        proc = _cli("run", str(history), "--line", "1", "--yes", "--accept-guessed-mapping", "--no-progress",
                    env=env)
        _assert_one_line_error(proc, f"bulkimport setup --portal {sb.url} --line 1 --connector bulkimport")
        assert sb.store.messages().empty

        result = CliRunner().invoke(main, ["setup", "--line", "1"])
        assert result.exit_code == 0, result.output
        assert "READY" in result.output

        # a dry run against the portal also runs the preflight, and sends nothing
        result = CliRunner().invoke(main, ["run", str(history), "--line", "1", "--dry-run"])
        assert "connector active: active on open line 1" in result.output, result.output
        assert "Dry run: nothing was sent." in result.output and sb.store.messages().empty

        result = CliRunner().invoke(main, ["setup", "--line", "3"])  # the sandbox's inactive line
        assert result.exit_code == 1 and "inactive" in result.output

        # on a terminal the plan is shown and a "no" sends nothing
        monkeypatch.setattr("bulkimport.cli._interactive", lambda: True)
        args = ["run", str(history), "--line", "1", "--no-progress", "--accept-guessed-mapping"]
        plan = _example_plan(history)
        result = CliRunner().invoke(main, args, input="n\n")
        assert result.exit_code == 1, result.output
        assert f"Send {plan.counts['messages']} messages to open line 1" in result.output
        assert "Nothing was sent." in result.output
        assert sb.store.messages().empty

        result = CliRunner().invoke(main, args, input="y\n")
        assert result.exit_code == (1 if plan.counts["invalid"] else 0), result.output
        assert "connector active" in result.output  # the preflight checklist
        assert len(sb.store.messages()) == plan.counts["valid"] and sb.store.duplicates().empty
        assert (history.parent / "history.xlsx.report.xlsx").is_file()


def test_auth_exchanges_a_code_and_stores_the_tokens_privately(tmp_path):
    import requests

    from bulkimport.sandbox import Sandbox

    with Sandbox(db=tmp_path / "portal.db", redirect_uri="https://app.example/callback") as sb:
        url = f"{sb.url}/oauth/authorize/?client_id={sb.client_id}"
        answer = requests.get(url, allow_redirects=False, timeout=10)
        location = answer.headers["Location"]  # the address the browser lands on, with ?code=…
        token_file = tmp_path / "tokens.json"
        proc = _cli(
            "auth",
            "--portal",
            sb.url,
            "--client-id",
            sb.client_id,
            "--client-secret",
            sb.client_secret,
            "--oauth-url",
            sb.oauth_url,
            "--token-file",
            str(token_file),
            "--code",
            location,
        )
        assert proc.returncode == 0, proc.stderr
        assert token_file.is_file() and (token_file.stat().st_mode & 0o777) == 0o600
        assert sb.client_secret not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_ctrl_c_exits_130_keeps_the_journal_and_the_printed_command_resumes(history):
    import shlex
    import signal
    import time

    plan = _example_plan(history)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX24_")}
    env["PYTHONPATH"] = str(ROOT)
    # A slow sandbox clock so the import is still running when Ctrl-C arrives.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulkimport",
            "run",
            str(history),
            "--sandbox",
            "--no-progress",
            "--time-scale",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
        # Ctrl-C as in a terminal: a test run started in the background (``cmd &``) has SIGINT
        # ignored, the child would inherit that, and bulkimport rightly honours an ignored SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "connector active" in line:
                break
        time.sleep(1.5)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, rest + err
    # No traceback from bulkimport's own thread. (Known sandbox issue, reported: stopping the sandbox
    # while its handler thread still serves the interrupted request can print that thread's error.)
    own = err.replace("Exception occurred during processing of request", "")
    assert own.count("Traceback") == err.count("Exception occurred during processing of request")
    resume = next(line for line in rest.splitlines() if "Resume with: " in line).split("Resume with: ", 1)[1]
    args = shlex.split(resume)
    assert args[:2] == ["bulkimport", "run"] and "--state" in args and "--sandbox" in args
    messages, _ = _sandbox_messages(history.parent / "sandbox-history.db")
    assert 0 < len(messages) < plan.counts["valid"]

    again = _cli(*args[1:], "--time-scale", "300", "--no-progress")  # the printed command, faster
    assert again.returncode == 1, again.stdout + again.stderr  # invalid rows, maybe unknown ones
    messages, duplicates = _sandbox_messages(history.parent / "sandbox-history.db")
    assert duplicates.empty
    from bulkimport.journal import Journal

    journal = Journal.open(history.parent / "history.xlsx.bulkimport.db")
    counts = journal.summary()["counts"]
    journal.close()
    # Rows in flight at Ctrl-C are 'unknown' (they may or may not have landed) and are never re-sent
    # without --retry-unknown; everything else went exactly once.
    assert counts["sent"] <= len(messages) <= counts["sent"] + counts["unknown"]
    assert counts["sent"] + counts["unknown"] + counts["pending"] == plan.counts["valid"]
    if counts["unknown"]:
        assert "--retry-unknown" in again.stdout


def test_hostile_text_survives_the_whole_pipeline_as_text(tmp_path):
    import csv

    import openpyxl

    hostile = ['=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-1+1"]
    source = tmp_path / "hostile.csv"
    with source.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Chat ID", "Client ID", "Date", "Message"])
        for i, text in enumerate(hostile):
            writer.writerow(["=chat()", f"c{i}", f"2025-01-0{i + 1} 10:00", text])
    for report in ("out.xlsx", "out.csv"):
        proc = _cli(
            "run",
            str(source),
            "--sandbox",
            "--time-scale",
            "50",
            "--no-progress",
            "--report",
            str(tmp_path / report),
            "--state",
            str(tmp_path / f"{report}.bulkimport.db"),
            "--sandbox-db",
            str(tmp_path / f"{report}.db"),
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = [
        c
        for ws in openpyxl.load_workbook(tmp_path / "out.xlsx").worksheets
        for row in ws.iter_rows()
        for c in row
    ]
    assert all(c.data_type != "f" for c in cells)
    texts = {c.value for c in cells}
    assert set(hostile) <= texts and "=chat()" in texts  # typed as text cells: as typed, never a formula
    with (tmp_path / "out.csv").open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["Message"] for r in rows] == ["'" + h for h in hostile]
    assert {r["import_status"] for r in rows} == {"sent"}


def test_a_run_stopped_by_the_portal_refusing_the_token_exits_2_with_the_auth_command(history, tmp_path):
    from bulkimport import connector as conn
    from bulkimport.sandbox import Sandbox

    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        conn.setup(conn.sandbox_target(sb).client, 1, "bulkimport")
        # the preflight passes; the first send is refused as if the token had been revoked
        sb.faults.add("NO_AUTH_FOUND", methods=["batch", "imconnector.send.messages"])
        env = {**_portal_env(sb), "BITRIX24_TOKEN_FILE": str(tmp_path / "tokens.json")}
        args = ["run", str(history), "--line", "1", "--yes", "--no-progress", "--accept-guessed-mapping"]
        proc = _cli(*args, env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("Error: the run stopped on NO_AUTH_FOUND")
        assert f"bulkimport auth --portal {sb.url}" in last
        assert "Traceback" not in proc.stderr
        assert sb.store.messages().empty
        assert "Resume (sends the pending rows)" in proc.stdout
        assert (history.parent / "history.xlsx.report.xlsx").is_file()

        status = _cli("status", cwd=history.parent)  # finds the one journal in the folder
        assert status.returncode == 0, status.stderr
        assert "the last run sent 0 and stopped by NO_AUTH_FOUND" in status.stdout
        assert f"bulkimport run {history} --state" in status.stdout and f"--portal {sb.url}" in status.stdout


def test_auth_prints_the_address_and_takes_the_pasted_redirect(tmp_path, monkeypatch):
    import requests

    from bulkimport.portal.auth import authorize_url
    from bulkimport.sandbox import Sandbox

    with Sandbox(db=tmp_path / "portal.db", redirect_uri="https://app.example/callback") as sb:
        address = authorize_url(sb.url, sb.client_id)
        answer = requests.get(address, allow_redirects=False, timeout=10)
        pasted = answer.headers["Location"]
        token_file = tmp_path / "tokens.json"
        for name, value in _portal_env(sb).items():
            if name in (
                "BITRIX24_PORTAL",
                "BITRIX24_CLIENT_ID",
                "BITRIX24_CLIENT_SECRET",
                "BITRIX24_OAUTH_URL",
            ):
                monkeypatch.setenv(name, value)
        result = CliRunner().invoke(main, ["auth", "--token-file", str(token_file)], input=pasted + "\n")
        assert result.exit_code == 0, result.output
        assert address in result.output and "Code:" in result.output
        assert f"Tokens saved to {token_file}" in result.output
        assert sb.client_secret not in result.output and token_file.stat().st_mode & 0o777 == 0o600

        # the stored tokens work: setup reads them from the token file
        monkeypatch.setenv("BITRIX24_TOKEN_FILE", str(token_file))
        result = CliRunner().invoke(main, ["setup", "--line", "1"])
        assert result.exit_code == 0 and "READY" in result.output, result.output


# ------------------------------------------------------------------------------------------- resolve
def _journal_with_unknown_rows(path: Path) -> None:
    """A journal whose rows 2, 3, 4 were cut off mid-request (unknown) and 5, 6 are pending."""
    from bulkimport.journal import Journal, RowUpdate, row_key

    j = Journal.bind(path, portal="https://acme.bitrix24.ru/rest/", line="1", connector="hist",
                     fingerprint="fp")
    j.add_rows([(row_key(i), 0, i, "pending", None, None) for i in range(2, 7)])
    run = j.start_run(0.0)
    req = j.mark_inflight([row_key(i) for i in (2, 3, 4)], run, 0.0)
    j.settle(req, [RowUpdate(row_key(i), "unknown", "connection-lost", "x", hold=1) for i in (2, 3, 4)],
             1.0, "amb")
    j.close()


def _statuses(path: Path) -> dict[str, str]:
    from bulkimport.journal import Journal

    j = Journal.open(path)
    try:
        return dict(zip(j.rows()["rid"], j.rows()["status"], strict=True))
    finally:
        j.close()


def test_resolve_marks_checked_unknown_rows_and_leaves_the_rest(tmp_path):
    state = tmp_path / "history.xlsx.bulkimport.db"
    _journal_with_unknown_rows(state)
    result = CliRunner().invoke(main, ["resolve", str(state), "--arrived", "--rows", "2,3"])
    assert result.exit_code == 0, result.output
    assert "2 unknown rows marked sent" in result.output
    result = CliRunner().invoke(main, ["resolve", str(state), "--not-arrived"])
    assert result.exit_code == 0, result.output
    assert "1 unknown row marked pending" in result.output
    assert _statuses(state) == {"2": "sent", "3": "sent", "4": "pending", "5": "pending", "6": "pending"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rows", "2"], "--arrived or --not-arrived"),
        (["--arrived", "--rows", "two"], "--rows 'two': use row numbers"),
        (["--arrived", "--rows", "9-3"], "reversed or too long"),
    ],
)
def test_resolve_refuses_unclear_answers_with_one_line(tmp_path, args, message):
    state = tmp_path / "j.bulkimport.db"
    _journal_with_unknown_rows(state)
    result = CliRunner().invoke(main, ["resolve", str(state), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert _statuses(state)["2"] == "unknown"  # nothing changed


def test_everything_a_real_portal_run_lacks_offline_is_said_at_once(tmp_path):
    """Missing credentials, a missing file, an http:// portal, a missing line, a bad report path and
    a guess nobody can confirm: one line listing each with its fix, before the portal is contacted
    (never "no OAuth tokens" now and the next problem after it is fixed)."""
    missing = tmp_path / "not-read-yet.xlsx"
    proc = _cli("run", str(missing), "--portal", "https://example.bitrix24.eu", "--line", "1")
    _assert_one_line_error(proc, "2 things to fix", "(1) no OAuth tokens", "bulkimport auth",
                           "(2) ", "not-read-yet.xlsx: no such file")
    csv = tmp_path / "h.csv"
    csv.write_text("Chat,Client ID,Date,Text\nc1,1,2024-01-01 10:00,hi\n", encoding="utf-8")
    proc = _cli("run", str(csv), "--portal", "http://example.bitrix24.eu", "--report", "r.pdf", "--yes")
    line = proc.stderr.strip()
    _assert_one_line_error(proc, "5 things to fix", "uses http://; Bitrix24 requires https://",
                           "no OAuth tokens", "--line is missing", "--report r.pdf",
                           "would be guessed from its headers", "--accept-guessed-mapping")
    assert line.index("http://") < line.index("no OAuth tokens")


def test_an_offline_dry_run_says_no_portal_was_checked(history):
    proc = _cli("run", str(history), "--dry-run")
    assert "Planned offline: no --portal given" in proc.stdout, proc.stdout + proc.stderr
    assert "Dry run: nothing was sent." in proc.stdout


def test_a_rerun_says_what_it_resumes(history):
    first = _cli("run", str(history), "--sandbox", "--no-progress")
    assert "Resuming" not in first.stdout
    again = _cli("run", str(history), "--sandbox", "--no-progress", "--dry-run")
    assert "Resuming " in again.stdout and " to go; nothing left to send." in again.stdout, again.stdout
    assert "ETA for the 0" not in again.stdout


def test_a_real_portal_never_gets_a_guessed_mapping_nobody_confirmed(history, tmp_path, monkeypatch):
    from bulkimport.sandbox import Sandbox

    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        for name, value in _portal_env(sb).items():
            monkeypatch.setenv(name, value)
        assert CliRunner().invoke(main, ["setup", "--line", "1"]).exit_code == 0
        # a script (no terminal), even with --yes: refused with the way to confirm
        result = CliRunner().invoke(main, ["run", str(history), "--line", "1", "--yes", "--no-progress"])
        refused = result.output
        assert result.exit_code == 2 and "guessed from its headers" in refused, result.output
        assert "--accept-guessed-mapping" in refused and sb.store.messages().empty
        # on a terminal the guess is a question of its own; "no" sends nothing
        monkeypatch.setattr("bulkimport.cli._interactive", lambda: True)
        result = CliRunner().invoke(main, ["run", str(history), "--line", "1", "--no-progress"], input="n\n")
        assert "Send with the mapping guessed from the headers" in result.output
        assert "Nothing was sent." in result.output and sb.store.messages().empty
        assert "Assumed (timezone-not-set)" in result.output  # what the guess assumes was shown first


def test_validate_writes_every_problem_and_status_lists_rows(history, tmp_path):
    import csv

    problems = tmp_path / "problems.csv"
    result = CliRunner().invoke(main, ["validate", str(history), "--problems", str(problems)])
    assert result.exit_code == 1 and problems.is_file(), result.output
    with problems.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"row", "code", "value", "hint"} <= set(rows[0]) and any(r["code"] == "bad-date" for r in rows)
    _cli("run", str(history), "--sandbox", "--no-progress")
    listed = CliRunner().invoke(main, ["status", str(history.with_name("history.xlsx.bulkimport.db")),
                                       "--rows", "invalid"])
    assert listed.exit_code == 0 and "Rows invalid (6):" in listed.output and "bad-date" in listed.output
    bad = CliRunner().invoke(main, ["status", str(history.with_name("history.xlsx.bulkimport.db")),
                                    "--rows", "lost"])
    assert bad.exit_code == 2 and "not a row status" in bad.output


def test_mapping_save_does_not_overwrite_without_being_told(history, tmp_path):
    target = tmp_path / "m.toml"
    target.write_text("# mine\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["mapping", str(history), "--save", str(target)])
    assert result.exit_code != 0 and target.read_text(encoding="utf-8") == "# mine\n"
    result = CliRunner().invoke(main, ["mapping", str(history), "--save", str(target), "--force"])
    assert result.exit_code == 0 and "[operators]" in target.read_text(encoding="utf-8")


def test_auth_says_what_went_wrong_with_the_code(tmp_path, monkeypatch):
    from bulkimport.sandbox import Sandbox

    with Sandbox(db=tmp_path / "portal.db") as sb:
        for name in ("BITRIX24_PORTAL", "BITRIX24_CLIENT_ID", "BITRIX24_CLIENT_SECRET", "BITRIX24_OAUTH_URL"):
            monkeypatch.setenv(name, _portal_env(sb)[name])
        token_file = str(tmp_path / "tokens.json")
        typo = CliRunner().invoke(main, ["auth", "--token-file", token_file, "--code", "not-the-code"])
        assert typo.exit_code == 2 and "did not accept the authorisation code" in typo.output, typo.output
        assert "refresh token" not in typo.output
        empty = CliRunner().invoke(main, ["auth", "--token-file", token_file], input="\n")
        assert empty.exit_code == 2 and "--code is empty" in empty.output, empty.output
        closed = CliRunner().invoke(main, ["auth", "--token-file", token_file], input="")
        assert closed.exit_code == 2 and "no authorisation code on standard input" in closed.output
        assert "Interrupted" not in empty.output + closed.output


def test_status_repeats_the_last_runs_own_resume_command_with_every_option(history, tmp_path):
    """Found by a new-user trial: status printed a resume command without --operator / --timezone,
    and following it sent the operators' replies as the customer's. It repeats the run's command."""
    import shlex

    from bulkimport import connector as conn
    from bulkimport.sandbox import Sandbox

    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        conn.setup(conn.sandbox_target(sb).client, 1, "bulkimport")
        sb.faults.add("NO_AUTH_FOUND", methods=["batch", "imconnector.send.messages"])  # rows stay pending
        env = {**_portal_env(sb), "BITRIX24_TOKEN_FILE": str(tmp_path / "tokens.json")}
        args = ["run", str(history), "--line", "1", "--yes", "--no-progress", "--accept-guessed-mapping",
                "--operator", "Anna Operator=7", "--timezone", "Europe/Berlin"]
        proc = _cli(*args, env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        status = _cli("status", cwd=history.parent)
    assert status.returncode == 0, status.stderr
    line = next(t for t in status.stdout.splitlines() if t.startswith("Resume"))
    command = shlex.split(line.split(": ", 1)[1])
    assert command[:3] == ["bulkimport", "run", str(history)]
    assert command[command.index("--operator"):][:2] == ["--operator", "Anna Operator=7"]
    assert command[command.index("--timezone"):][:2] == ["--timezone", "Europe/Berlin"]
    assert "--state" in command and "--portal" in command


def test_status_of_an_older_journal_without_a_stored_command_still_says_the_target(tmp_path):
    from bulkimport.journal import Journal
    from bulkimport.reporting import journal_lines

    with Journal.bind(tmp_path / "j.db", portal="https://x.example/rest/", line=1, connector="c",
                      fingerprint="f", source="in.csv") as journal:
        journal.add_rows([("1", 0, 0, "pending", None, None)])
        summary = journal.summary()
    assert summary["resume_command"] is None
    text = "\n".join(journal_lines(summary, tmp_path / "j.db"))
    assert "Resume (with the same --mapping as before, if any): bulkimport run in.csv" in text


def test_a_sandbox_rehearsal_on_a_line_the_sandbox_lacks_sends_nothing_and_names_the_env(history):
    """Found by a new-user trial: BITRIX24_LINE=5 with --sandbox printed NOT READY, then sent and
    stopped on NOT_ACTIVE_LINE with a fix for a sandbox that is gone after the run."""
    proc = _cli("run", str(history), "--sandbox", "--no-progress", "--accept-guessed-mapping",
                env={"BITRIX24_LINE": "5"}, cwd=history.parent)
    _assert_one_line_error(proc, "open line 5 does not exist", "BITRIX24_LINE", "--line")
    assert "Traceback" not in proc.stderr
    assert not (history.parent / "history.xlsx.bulkimport.db").exists()  # nothing was sent


# ------------------------------------------------------------------ second new-user trial (#14)
HELPDESK = (
    "Ticket,Customer email,Customer name,Agent?,Created,Body\n"
    "T-100,ann@example.com,Ann Lee,no,2024-03-01 09:00,My order did not arrive\n"
    "T-100,ann@example.com,Ann Lee,yes,2024-03-01 09:05,Sorry to hear that. Checking now.\n"
    "T-101,bob@example.com,Bob Ray,no,2024-03-02 10:00,How do I reset my password?\n"
    "T-101,bob@example.com,Bob Ray,yes,2024-03-02 10:03,Use the link on the login page.\n"
)


def _invoke(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _one_error_line(result: Any, *words: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_a_helpdesk_agent_column_is_the_side_shown_confirmed_saved_and_previewed(tmp_path):
    csv = tmp_path / "helpdesk.csv"
    csv.write_text(HELPDESK, encoding="utf-8")
    shown = _invoke("mapping", str(csv), "--save", str(tmp_path / "m.toml"))
    assert shown.exit_code == 0, shown.output
    assert "side column ← 'Agent?' ('yes' = operator, 'no' = customer)" in shown.output
    assert "chat.id           ← 'Ticket'" in shown.output and "(same as user.id)" not in shown.output
    assumed = "Assumed (side-from-column): Rows whose 'Agent?' is 'yes' are sent as the operator's"
    assert assumed in shown.output
    saved = (tmp_path / "m.toml").read_text(encoding="utf-8")
    assert 'side = "Agent?"' in saved and "operator_values" in saved and "customer_values" in saved
    # operator rows with no employee: refused in one line that says each fix, in the CLI's words
    refused = _invoke("run", str(csv), "--dry-run")
    line = _one_error_line(refused, "helpdesk.csv", "'Agent?'", "--unmapped-operators system")
    assert "unmapped_operators=" not in line
    dry = _invoke("run", str(csv), "--dry-run", "--unmapped-operators", "system")
    assert dry.exit_code == 0, dry.output
    preview = dry.output.split("First messages in send order:")[1].splitlines()
    assert "side" in preview[1]
    assert "operator" in next(ln for ln in preview if "Sorry to hear that" in ln)
    assert "customer" in next(ln for ln in preview if "did not arrive" in ln)


def test_mapping_that_cannot_be_used_exits_2_with_the_problem_and_lists_unused_columns(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("Foo,Date,Text\n1,2024-01-01 10:00,hi\n", encoding="utf-8")
    result = _invoke("mapping", str(csv))
    _one_error_line(result, "x.csv", "user.id", "--mapping mapping.toml")
    assert "Columns not used: 'Foo'." in result.stdout


def test_command_line_errors_name_options_not_python_keywords(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("a;b\n1;2\n", encoding="utf-8")
    line = _one_error_line(_invoke("validate", str(csv), "--delimiter", "xx"), "--delimiter 'xx'")
    assert "delimiter=" not in line
    missing = _one_error_line(_invoke("validate", str(csv), "-m", str(tmp_path / "none.toml")))
    assert f"bulkimport mapping {csv} --save" in missing and "Mapping.save" not in missing
    zone = _one_error_line(_invoke("validate", str(csv), "--timezone", "Mars/Base"), "--timezone 'Mars/Base'")
    assert "guess:" not in zone and "option timezone" not in zone
    guessed = _one_error_line(_invoke("validate", str(csv)), "x.csv", "--mapping mapping.toml")
    assert "guess:" not in guessed and "Mapping." not in guessed


def test_a_header_only_file_is_refused_naming_the_file(tmp_path):
    csv = tmp_path / "empty_export.csv"
    csv.write_text("Chat,Client,Date,Text\n,,,\n\n", encoding="utf-8")
    for cmd in (["validate"], ["run", "--dry-run"], ["run", "--sandbox"], ["mapping"]):
        _one_error_line(_invoke(*cmd, str(csv)), "empty_export.csv has no data rows")


def test_the_sandbox_line_never_says_1x_faster_and_nothing_to_send_takes_no_time(tmp_path):
    csv = tmp_path / "h.csv"
    csv.write_text("Chat,Client ID,Date,Text\nc1,1,2024-01-01T10:00:00+00:00,hi\n", encoding="utf-8")
    first = _invoke("run", str(csv), "--sandbox", "--no-progress")
    assert first.exit_code == 0, first.output
    assert "Its clock runs in real time" in first.output and "1× faster" not in first.output
    again = _invoke("run", str(csv), "--sandbox", "--no-progress")
    assert "Nothing to send" in again.output and "of sandbox time" not in again.output, again.output


def test_operator_without_an_author_column_and_readable_layout_notes(tmp_path):
    csv = tmp_path / "x.csv"
    csv.write_text("Chat,Client ID,Date,Text\nc1,1,2024-01-01 10:00,hi\n", encoding="utf-8")
    _one_error_line(_invoke("validate", str(csv), "--operator", "Kate=3"),
                    "--operator 'Kate=…' needs the column that names each row's author", "author = ")
    titled = tmp_path / "t.csv"
    body = "Chat,Client ID,Date,Text\nc1,1,2024-01-01 10:00,hi\nc1,1,2024-01-01 10:01,ok\n"
    titled.write_text("Chat export\n\n" + body, encoding="utf-8")
    shown = _invoke("validate", str(titled)).output
    assert "Note: rows above the header, not read as messages: row 1 'Chat export'." in shown, shown
