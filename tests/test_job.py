"""ImportJob: a whole import through the library, no CLI involved — paths, options, sandbox, result."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bulkimport.errors import ConfigError
from bulkimport.exits import EXIT_INPUT, EXIT_OK, EXIT_ROWS
from bulkimport.job import ImportJob
from bulkimport.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "data_examples"


pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def history(tmp_path) -> Path:
    target = tmp_path / "history.xlsx"
    shutil.copy(EXAMPLE / "history.xlsx", target)
    return target


def _stored(db: Path):
    with Sandbox(db=db) as sb:
        return sb.store.messages(), sb.store.duplicates()


def test_a_sandbox_import_through_the_job_then_a_resume_sends_nothing_twice(history):
    said: list[str] = []
    job = ImportJob(
        history, mapping=EXAMPLE / "history_xlsx.toml", sandbox=True, progress=False, notify=said.append
    )
    plan = job.plan()
    assert job.plan() is plan and not job.guessed  # cached, and the mapping came from the file
    result = job.run()
    valid, invalid = plan.counts["valid"], plan.counts["invalid"]
    assert invalid > 0  # the example has broken rows on purpose
    assert result.exit_code == EXIT_ROWS and not result.interrupted and result.fix is None
    assert result.summary.counts["sent"] == valid and result.summary.counts["invalid"] == invalid
    assert result.report == history.with_name("history.xlsx.report.xlsx") and result.report.is_file()
    assert result.journal == history.with_name("history.xlsx.bulkimport.db") and result.journal.is_file()
    assert any(s.startswith("Sandbox portal at http://127.0.0.1:") for s in said)
    assert any("READY" in s for s in said)  # the connector set-up checklist
    assert "bulkimport sandbox --db" in result.note
    assert result.command[:3] == ["bulkimport", "run", str(history)] and "--sandbox" in result.command
    db = history.with_name("sandbox-history.db")
    messages, duplicates = _stored(db)
    assert len(messages) == valid and duplicates.empty
    # the summary's hints name the command line's options (the example has a local file path)
    hint = next(t for t in result.summary_lines() if t.strip().startswith("bad-file-url"))
    assert "--files-base-url URL" in hint and "--upload-files" in hint

    again = ImportJob(history, mapping=EXAMPLE / "history_xlsx.toml", sandbox=True, progress=False).run()
    assert again.summary.sent_this_run == 0 and again.exit_code == EXIT_ROWS
    messages, duplicates = _stored(db)
    assert len(messages) == valid and duplicates.empty


def test_a_complete_import_exits_ok_and_lists_no_next_step(tmp_path):
    csv = tmp_path / "ok.csv"
    csv.write_text(
        "chat,user,date,text\nc1,u1,2024-01-02T10:00:00+00:00,hello\nc1,u1,2024-01-02T10:01:00+00:00,again\n",
        encoding="utf-8",
    )
    job = ImportJob(csv, mapping=_csv_mapping(tmp_path), sandbox=True, progress=False)
    result = job.run()
    assert result.exit_code == EXIT_OK, result.summary
    assert result.next_steps() == [] and result.summary.counts["sent"] == 2


def _csv_mapping(tmp_path: Path) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(
        '[columns]\n"chat.id" = "chat"\n"user.id" = "user"\n"message.date" = "date"\n'
        '"message.text" = "text"\n',
        encoding="utf-8",
    )
    return path


def test_defaults_sit_beside_the_input_and_options_are_checked_before_reading(tmp_path):
    job = ImportJob(tmp_path / "missing.csv")
    assert job.state == tmp_path / "missing.csv.bulkimport.db"
    assert job.report == tmp_path / "missing.csv.report.xlsx"
    with pytest.raises(ConfigError, match="--portal is required"):
        job.check_options()
    job.check_options(dry_run=True)  # an offline dry run needs no portal
    with pytest.raises(ConfigError, match="only apply to a --sandbox run"):
        ImportJob(tmp_path / "x.csv", sandbox_db=tmp_path / "s.db").check_options(dry_run=True)
    with pytest.raises(ConfigError, match=r"--report .*unsupported report type"):
        ImportJob(tmp_path / "x.csv", sandbox=True, report=tmp_path / "r.txt").check_options()
    with pytest.raises(ConfigError, match=r"folder .* does not exist"):
        ImportJob(tmp_path / "x.csv", sandbox=True, state=tmp_path / "no" / "j.db").check_options()
    with pytest.raises(ConfigError, match="not a known plan"):
        ImportJob(tmp_path / "x.csv", limits="platinum")


def _env(sb) -> dict[str, str]:
    return {
        "BITRIX24_CLIENT_ID": sb.client_id,
        "BITRIX24_CLIENT_SECRET": sb.client_secret,
        "BITRIX24_ACCESS_TOKEN": sb.access_token,
        "BITRIX24_REFRESH_TOKEN": sb.refresh_token,
        "BITRIX24_OAUTH_URL": sb.oauth_url,
    }


def test_a_portal_job_asks_first_and_a_no_sends_nothing(history, tmp_path, monkeypatch):
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        for name, value in _env(sb).items():
            monkeypatch.setenv(name, value)
        job = ImportJob(history, portal=sb.url, line=1, progress=False, accept_guess=True)
        from bulkimport import connector

        connector.setup(connector.portal_client(sb.url), 1, "bulkimport")
        questions: list[str] = []
        declined = job.run(confirm=lambda q: questions.append(q) or False)
        assert declined.declined and declined.exit_code == EXIT_ROWS
        assert questions == [f"Send {job.plan().counts['messages']} messages to open line 1 of {sb.url}?"]
        assert sb.store.messages().empty and not job.report.exists()

        result = job.run(confirm=lambda q: True)
        assert result.summary.counts["sent"] == job.plan().counts["valid"]
        assert "--portal" in result.command and "--line" in result.command


def test_a_run_the_portal_stops_over_its_set_up_names_the_fix(history, tmp_path, monkeypatch):
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        for name, value in _env(sb).items():
            monkeypatch.setenv(name, value)
        from bulkimport import connector

        connector.setup(connector.portal_client(sb.url), 1, "bulkimport")
        job = ImportJob(history, mapping=EXAMPLE / "history_xlsx.toml", portal=sb.url, line=1, progress=False)
        # the line is switched off behind the job's back, after its preflight passed
        real_preflight = job.preflight

        def preflight_then_deactivate():
            found = real_preflight()
            sb.store.run("UPDATE lines SET active = 'N' WHERE id = 1")
            return found

        monkeypatch.setattr(job, "preflight", preflight_then_deactivate)
        result = job.run()
        assert result.exit_code == EXIT_INPUT, result.summary
        assert result.fix and "bulkimport setup" in result.fix
        assert result.fix_message().startswith("Error: the run stopped on ")


def test_resume_says_what_an_existing_journal_left_and_estimates_only_that(history):
    import sqlite3

    job = ImportJob(history, mapping=EXAMPLE / "history_xlsx.toml", sandbox=True, progress=False)
    assert job.resume() is None  # a fresh import
    job.run()
    again = ImportJob(history, mapping=EXAMPLE / "history_xlsx.toml", sandbox=True, progress=False)
    done = again.resume()
    valid = again.plan().counts["valid"]
    assert done is not None and (done.sent, done.total, done.to_go, done.waiting) == (valid, valid, 0, 0)
    assert done.estimate.messages == 0 and "Resuming" in str(done)

    # two conversations taken back: the first entirely pending, the second with an unknown first row
    convs = again.plan().conversations
    first, second = len(convs[0]), len(convs[1])
    with sqlite3.connect(again.state) as db:
        db.execute("UPDATE rows SET status='pending' WHERE conv=0")
        db.execute("UPDATE rows SET status='pending' WHERE conv=1")
        db.execute("UPDATE rows SET status='unknown' WHERE conv=1 AND seq=0")
    later = ImportJob(history, mapping=EXAMPLE / "history_xlsx.toml", sandbox=True, progress=False)
    left = later.resume()
    assert left is not None
    assert (left.sent, left.to_go, left.waiting) == (valid - first - second, first, second)
    assert left.estimate.messages == first
    assert later.plan().estimate(later.limits).messages == valid  # the whole plan is unchanged
    retrying = ImportJob(history, mapping=EXAMPLE / "history_xlsx.toml", sandbox=True, retry_unknown=True)
    assert retrying.resume().to_go == first + second


def test_a_journal_of_another_plan_is_not_taken_for_a_resume(history, tmp_path):
    ImportJob(history, mapping=EXAMPLE / "history_xlsx.toml", sandbox=True, progress=False).run()
    other = ImportJob(history, sandbox=True, progress=False)  # the guessed mapping: another plan
    assert other.resume() is None
