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

        # not set up yet: the preflight stops before the first message, naming the fix
        proc = _cli("run", str(history), "--line", "1", "--yes", "--no-progress", env=env)
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


def test_the_portal_credentials_are_checked_before_the_file_is_read(tmp_path):
    missing = tmp_path / "not-read-yet.xlsx"
    proc = _cli("run", str(missing), "--portal", "https://example.bitrix24.eu", "--line", "1")
    _assert_one_line_error(proc)
    assert "not-read-yet" not in proc.stderr and "no such file" not in proc.stderr, proc.stderr


def test_an_offline_dry_run_says_no_portal_was_checked(history):
    proc = _cli("run", str(history), "--dry-run")
    assert "Planned offline: no --portal given" in proc.stdout, proc.stdout + proc.stderr
    assert "Dry run: nothing was sent." in proc.stdout


def test_a_rerun_says_what_it_resumes(history):
    first = _cli("run", str(history), "--sandbox", "--no-progress")
    assert "Resuming" not in first.stdout
    again = _cli("run", str(history), "--sandbox", "--no-progress", "--dry-run")
    assert "Resuming " in again.stdout and " to go; ETA for the 0: 0 messages" in again.stdout, again.stdout


def test_a_real_portal_never_gets_a_guessed_mapping_nobody_confirmed(history, tmp_path, monkeypatch):
    from bulkimport.sandbox import Sandbox

    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        for name, value in _portal_env(sb).items():
            monkeypatch.setenv(name, value)
        assert CliRunner().invoke(main, ["setup", "--line", "1"]).exit_code == 0
        # a script (no terminal), even with --yes: refused with the way to confirm
        result = CliRunner().invoke(main, ["run", str(history), "--line", "1", "--yes", "--no-progress"])
        refused = result.output
        assert result.exit_code == 2 and "was guessed from its headers" in refused, result.output
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
