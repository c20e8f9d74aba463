"""Finishing the sessions an import opened: during a run by default, later with `bulkimport finish`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from bulkimport.cli import main
from bulkimport.exits import EXIT_OK
from bulkimport.job import ImportJob
from bulkimport.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "data_examples"


pytestmark = pytest.mark.usefixtures("clean_env")


def _csv(tmp_path: Path, chats: int = 3, per_chat: int = 4) -> tuple[Path, Path]:
    lines = ["chat,user,date,text"]
    for c in range(chats):
        for i in range(per_chat):
            lines.append(f"c{c},u{c},2024-01-02T10:{i:02d}:00+00:00,hello {c}-{i}")
    csv = tmp_path / "history.csv"
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        '[columns]\n"chat.id" = "chat"\n"user.id" = "user"\n"message.date" = "date"\n'
        '"message.text" = "text"\n',
        encoding="utf-8",
    )
    return csv, mapping


def _env(sb: Sandbox, monkeypatch) -> None:
    for name, value in {
        "BITRIX24_CLIENT_ID": sb.client_id,
        "BITRIX24_CLIENT_SECRET": sb.client_secret,
        "BITRIX24_ACCESS_TOKEN": sb.access_token,
        "BITRIX24_REFRESH_TOKEN": sb.refresh_token,
        "BITRIX24_OAUTH_URL": sb.oauth_url,
    }.items():
        monkeypatch.setenv(name, value)


def _refusals(sb: Sandbox) -> int:
    by_status = sb.stats()["by_status"]
    return by_status.get(503, 0) + by_status.get(429, 0)


def _finished(journal: Path) -> int:
    with sqlite3.connect(journal) as db:
        return db.execute("SELECT COUNT(*) FROM finished").fetchone()[0]


def _portal_job(csv: Path, mapping: Path, sb: Sandbox, **kw) -> ImportJob:
    from bulkimport import connector

    connector.setup(connector.portal_client(sb.url), 1, "bulkimport")
    return ImportJob(csv, mapping=mapping, portal=sb.url, line=1, progress=False, **kw)


def test_a_default_run_finishes_every_session_once_and_a_resume_makes_no_call(tmp_path, monkeypatch):
    csv, mapping = _csv(tmp_path)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        job = _portal_job(csv, mapping, sb)
        # the finish commands ride in the room the three send requests leave: no request more
        assert job.estimate().requests == job.plan().estimate(job.limits).requests == 3
        result = job.run()
        assert result.exit_code == EXIT_OK, result.summary
        sessions = sb.store.sessions()
        assert len(sessions) == 3 and sessions["closed"].notna().all()  # each closed once, none reopened
        assert _refusals(sb) == 0
        assert result.finish.finished == 3 and result.finish.complete and result.finish.requests == 1
        assert _finished(result.journal) == 3 and result.next_steps() == []
        sb.reset_stats()
        again = _portal_job(csv, mapping, sb).run()
        assert again.summary.sent_this_run == 0 and again.finish.finished == 0 and again.finish.already == 3
        assert "batch" not in sb.stats()["by_method"]  # no finish call the second time


def test_keep_open_then_finish_gives_the_same_end_state_and_a_second_finish_calls_nothing(
    tmp_path, monkeypatch
):
    csv, mapping = _csv(tmp_path)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        job = _portal_job(csv, mapping, sb, keep_open=True)
        assert job.estimate() == job.plan().estimate(job.limits)
        result = job.run()
        assert result.finish is None and sb.store.sessions()["closed"].isna().all()
        assert any("bulkimport finish" in s for s in result.next_steps())
        assert "--keep-open" in result.command
        sb.reset_stats()
        out = CliRunner().invoke(main, ["finish", str(result.journal)])
        assert out.exit_code == EXIT_OK, out.output
        assert "Finished 3 sessions (1 batch request)" in out.output
        assert sb.store.sessions()["closed"].notna().all() and len(sb.store.sessions()) == 3
        assert sb.stats()["by_method"].get("batch") == 1 and _refusals(sb) == 0
        sb.reset_stats()
        out = CliRunner().invoke(main, ["finish", str(result.journal)])
        assert out.exit_code == EXIT_OK and "Finished 0 sessions" in out.output and "3 already" in out.output
        assert "batch" not in sb.stats()["by_method"]


def test_errors_are_per_conversation_and_the_rest_are_finished(tmp_path, monkeypatch):
    csv, mapping = _csv(tmp_path)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        result = _portal_job(csv, mapping, sb, keep_open=True).run()
        # one conversation's journalled CHAT_ID points at no chat: the portal refuses that one
        with sqlite3.connect(result.journal) as db:
            db.execute("UPDATE rows SET chat_id='999999' WHERE conv=0")
        out = CliRunner().invoke(main, ["finish", str(result.journal)])
        assert out.exit_code == 1, out.output
        assert "Finished 2 sessions" in out.output and "1 not finished" in out.output
        assert "chat 999999: CHAT_ID" in out.output
        assert int(sb.store.sessions()["closed"].notna().sum()) == 2
        assert _finished(result.journal) == 2


def test_ctrl_c_while_finishing_keeps_what_finished_and_the_next_pass_does_the_rest(tmp_path, monkeypatch):
    from bulkimport import connector
    from bulkimport.after.finish import finish_sessions
    from bulkimport.journal import Journal

    csv, mapping = _csv(tmp_path, chats=60, per_chat=1)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        result = _portal_job(csv, mapping, sb, keep_open=True).run()
        client = connector.portal_client(sb.url)
        real_batch, calls = client.batch, []

        def batch_then_ctrl_c(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt  # the user presses Ctrl-C before the second batch leaves
            return real_batch(*args, **kwargs)

        monkeypatch.setattr(client, "batch", batch_then_ctrl_c)
        journal = Journal.open(result.journal)
        try:
            first = finish_sessions(client, journal)
        finally:
            journal.close()
        assert first.interrupted and not first.complete and first.finished == 50
        assert _finished(result.journal) == 50 and int(sb.store.sessions()["closed"].notna().sum()) == 50
        out = CliRunner().invoke(main, ["finish", str(result.journal)])
        assert out.exit_code == EXIT_OK, out.output
        assert "Finished 10 sessions" in out.output and "50 already" in out.output
        assert sb.store.sessions()["closed"].notna().all() and len(sb.store.sessions()) == 60
