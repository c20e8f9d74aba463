"""Undo: every message the journal says was sent is deleted from the portal, once, resumably."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_finish import _csv, _env, _portal_job

from bulkimport.after import undo as undoing
from bulkimport.cli import main
from bulkimport.exits import EXIT_OK
from bulkimport.journal import Journal
from bulkimport.sandbox import Sandbox

pytestmark = pytest.mark.usefixtures("clean_env")


def _live(sb: Sandbox):
    messages = sb.store.messages()
    return messages[messages["deleted"].isna()]


def _statuses(journal: Path) -> dict[str, int]:
    with sqlite3.connect(journal) as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM rows GROUP BY status").fetchall())


def test_undo_deletes_every_sent_message_and_a_second_undo_sends_nothing(tmp_path, monkeypatch):
    csv, mapping = _csv(tmp_path, chats=3, per_chat=30)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        result = _portal_job(csv, mapping, sb).run()
        assert result.exit_code == EXIT_OK and len(_live(sb)) == 90
        journal = str(result.journal)
        no_credentials = {
            k: None for k in os.environ if k.startswith("BITRIX24_") and k != "BITRIX24_TOKEN_FILE"
        }
        dry = CliRunner().invoke(main, ["undo", journal, "--dry-run"], env=no_credentials)
        assert dry.exit_code == EXIT_OK, dry.output
        assert "To delete: 90 messages in 3 conversations." in dry.output and "c0: 30" in dry.output
        assert "chats, open-line sessions" in dry.output and len(_live(sb)) == 90
        asked = CliRunner().invoke(main, ["undo", journal])  # not a terminal, no --yes: nothing deleted
        assert asked.exit_code == 1 and "pass --yes" in asked.output and len(_live(sb)) == 90
        out = CliRunner().invoke(main, ["undo", journal, "--yes", "--chats", "c1"])
        assert out.exit_code == EXIT_OK, out.output
        assert "Deleted 30 messages (2 requests)" in out.output
        assert set(_live(sb)["chat_id"]) == {"c0", "c2"}
        out = CliRunner().invoke(main, ["undo", journal, "--yes"])
        assert out.exit_code == EXIT_OK and "Deleted 60 messages" in out.output, out.output
        assert _live(sb).empty and _statuses(result.journal) == {"deleted": 90}
        sb.reset_stats()
        out = CliRunner().invoke(main, ["undo", journal, "--yes"])
        assert out.exit_code == EXIT_OK and "Nothing to delete." in out.output
        assert sb.stats()["requests"] == 0
        status = CliRunner().invoke(main, ["status", journal])
        assert "deleted" in status.output, status.output


def test_a_cut_off_delete_stays_unknown_and_the_next_undo_settles_it(tmp_path, monkeypatch):
    csv, mapping = _csv(tmp_path, chats=1, per_chat=5)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        result = _portal_job(csv, mapping, sb).run()
        # the delete runs on the portal, but its answer never arrives
        sb.faults.add("drop-after", count=1, methods=["imconnector.delete.messages"])
        journal = Journal.open(result.journal)
        try:
            from bulkimport import connector

            client = connector.portal_client(sb.url)
            todo = undoing.undo_plan(journal)
            done = undoing.undo(client, journal, todo, line=1, connector="bulkimport")
        finally:
            journal.close()
        assert done.unknown == 5 and done.deleted == 0 and not done.complete
        assert _live(sb).empty  # it did run
        assert _statuses(result.journal) == {"sent": 5}  # never assumed deleted
        out = CliRunner().invoke(main, ["undo", str(result.journal), "--yes"])
        assert out.exit_code == EXIT_OK, out.output
        assert _statuses(result.journal) == {"deleted": 5}
        with sqlite3.connect(result.journal) as db:
            codes = {c for (c,) in db.execute("SELECT code FROM rows")}
        assert codes == {"delete-confirmed-gone"}


def test_a_killed_undo_leaves_inflight_rows_that_the_next_undo_settles(tmp_path, monkeypatch):
    csv, mapping = _csv(tmp_path, chats=1, per_chat=5)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        result = _portal_job(csv, mapping, sb).run()
        # a kill between the write-ahead mark and the answer: rows inflight in the undo table
        # (which that undo had created)
        journal = Journal.open(result.journal)
        undoing.ensure_tables(journal)
        journal.close()
        with sqlite3.connect(result.journal) as db:
            db.execute("INSERT INTO undo (rid, state, at) SELECT rid, 'inflight', 0 FROM rows")
        journal = Journal.open(result.journal)
        try:
            todo = undoing.undo_plan(journal)
        finally:
            journal.close()
        assert len(todo.targets) == 5 and all(t.retry for t in todo.targets)
        out = CliRunner().invoke(main, ["undo", str(result.journal), "--yes"])
        assert out.exit_code == EXIT_OK, out.output
        assert _live(sb).empty and _statuses(result.journal) == {"deleted": 5}


def test_a_refused_delete_is_reported_per_row_and_the_others_go(tmp_path, monkeypatch):
    csv, mapping = _csv(tmp_path, chats=2, per_chat=2)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        result = _portal_job(csv, mapping, sb).run()
        with sqlite3.connect(result.journal) as db:  # one id the portal never saw
            db.execute("UPDATE row_ids SET mid='nope' WHERE rid=(SELECT MIN(rid) FROM row_ids)")
        out = CliRunner().invoke(main, ["undo", str(result.journal), "--yes"])
        assert out.exit_code == 1, out.output
        assert "Deleted 3 messages" in out.output and "1 not deleted" in out.output
        assert "The message was not found" in out.output
        assert len(_live(sb)) == 1 and _statuses(result.journal) == {"deleted": 3, "sent": 1}
