"""bulkimport verify against the sandbox: messages lost behind the client's back are found missing by
row, the next run sends exactly those, and a portal without CONNECTOR_MID is refused."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd
from click.testing import CliRunner
from conftest import register
from test_send_sandbox import connect, make_plan

from bulkimport.after.verify import estimate, verify
from bulkimport.cli import main
from bulkimport.job import ImportJob
from bulkimport.journal import Journal
from bulkimport.sandbox import Sandbox
from bulkimport.sending.sender import Sender

CONNECTOR = "hist_import"


def _send(portal: Sandbox, tmp_path: Path, sizes: list[int]):
    plan = make_plan(sizes)
    client, _ = connect(portal, tmp_path)
    outcome = Sender(plan, portal=portal.url, line=1, connector=CONNECTOR, client=client,
                     state=tmp_path / "j.db", progress=False, settle_unknown=True).run()
    return plan, client, outcome


def test_verify_finds_lost_messages_by_row_and_the_next_run_sends_exactly_those(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    register(sandbox)
    plan, client, outcome = _send(sandbox, tmp_path, [60, 7, 3])
    assert set(outcome.frame["import_status"]) == {"sent"}
    lost = sandbox.store.lose_messages(5, seed=3)
    lost_ids = set(lost["message_id"])
    journal = Journal.open(tmp_path / "j.db")
    try:
        calls, _ = estimate(journal)
        result = verify(journal, client)
    finally:
        journal.close()
    # one batch for the three chats (a join and the first page each), one more page for the chat of
    # 60 messages (+1 welcome message): the estimate is what verify then spends
    assert calls == 2 and result.calls == 2
    assert result.exit_code == 1 and result.refused is None
    row_of = {str(m["message"]["id"]): str(r) for c in plan.conversations
              for r, m in zip(c.rows, c.messages, strict=True)}
    assert set(result.missing_rows) == {row_of[m] for m in lost_ids}
    t = result.table
    assert int(t["sent"].sum()) == 70 and int(t["missing"].sum()) == 5 and int(t["found"].sum()) == 65
    assert int(t["unexpected"].sum()) == 0
    before = sandbox.store.messages()
    assert not set(before["message_id"]) & lost_ids
    _, client, again = _send(sandbox, tmp_path, [60, 7, 3])
    after = sandbox.store.messages()
    resent = after[~after["seq"].isin(before["seq"])]
    assert sorted(resent["message_id"]) == sorted(lost_ids)  # exactly the lost ones, once each
    assert set(again.frame["import_status"]) == {"sent"}
    journal = Journal.open(tmp_path / "j.db")
    try:
        assert verify(journal, client).exit_code == 0
    finally:
        journal.close()


def _three_chats(tmp_path: Path, monkeypatch, text: str) -> Path:
    """A CSV of 3 chats × 4 messages (ids c<chat>-m<i>) with ``text``, and no BITRIX24_* settings."""
    for name in [n for n in os.environ if n.startswith("BITRIX24_")]:
        monkeypatch.delenv(name)
    src = tmp_path / "history.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Chat ID", "Client ID", "Client name", "Message ID", "Date", "Text"])
        w.writerows([[f"chat{c}", f"client{c}", "Ann", f"c{c}-m{i}", f"2025-01-0{i + 1} 10:0{c}", text]
                     for i in range(4) for c in range(3)])
    return src


def test_the_verify_command_on_a_sandbox_import(tmp_path: Path, monkeypatch) -> None:
    src = _three_chats(tmp_path, monkeypatch, "=1+1")
    db, state = tmp_path / "sandbox.db", tmp_path / "j.db"

    def job() -> ImportJob:
        return ImportJob(src, sandbox=True, sandbox_db=db, state=state, time_scale=500.0, progress=False)

    assert job().run().summary.counts["sent"] == 12
    with Sandbox(db=db) as sb:
        lost = set(sb.store.lose_messages(message_ids=["c1-m2", "c2-m0"])["message_id"])
    assert lost == {"c1-m2", "c2-m0"}
    args = ["verify", str(state), "--sandbox-db", str(db), "--report", str(tmp_path / "verify.csv")]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 1, done.output
    assert "chat1: sent 4, found 3, missing 1, unexpected 0" in done.output
    assert "Total: 3 conversations, sent 12, found 10, missing 2, unexpected 0" in done.output
    assert done.output.index("Verify reads") < done.output.index("chat0:")  # cost and ETA first
    table = pd.read_csv(tmp_path / "verify.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert list(table["missing"]) == ["0", "1", "1"]
    journal = Journal.open(state)
    try:
        assert journal.counts() == {"sent": 10, "missing": 2}
    finally:
        journal.close()
    again = job().run()
    assert again.summary.sent_this_run == 2
    with Sandbox(db=db) as sb:
        stored = sb.store.messages()
        assert sb.store.duplicates().empty and len(stored) == 12
        assert set(stored["text"]) == {"=1+1"}
    assert CliRunner().invoke(main, args).exit_code == 0


def test_verify_reads_finished_sessions_back_without_membership(tmp_path: Path, monkeypatch) -> None:
    """A default run finishes every session it opened; a finished session refuses
    imopenlines.session.join, so verify must read it with imopenlines.session.history.get."""
    src = _three_chats(tmp_path, monkeypatch, "hi")
    db, state = tmp_path / "sandbox.db", tmp_path / "j.db"
    result = ImportJob(src, sandbox=True, sandbox_db=db, state=state, time_scale=500.0, progress=False).run()
    assert result.summary.counts["sent"] == 12 and result.finish is not None
    with Sandbox(db=db) as sb:
        assert sb.store.sessions()["closed"].notna().all()  # every session was finished
        sb.store.lose_messages(message_ids=["c0-m1"])
    done = CliRunner().invoke(main, ["verify", str(state), "--sandbox-db", str(db)])
    assert done.exit_code == 1, done.output
    assert "chat0: sent 4, found 3, missing 1, unexpected 0" in done.output, done.output
    assert "chat1: sent 4, found 4, missing 0" in done.output


def test_verify_chats_settles_only_the_unknown_rows_of_those_chats(tmp_path: Path, monkeypatch) -> None:
    """`verify --chats chat0` reads chat0 back and settles its unknown rows; the unknown rows of the
    other chats stay as they are (settling them is the next run's or a full verify's work)."""
    import sqlite3

    src = _three_chats(tmp_path, monkeypatch, "hi")
    db, state = tmp_path / "sandbox.db", tmp_path / "j.db"
    assert ImportJob(src, sandbox=True, sandbox_db=db, state=state, time_scale=500.0,
                     progress=False).run().summary.counts["sent"] == 12
    with sqlite3.connect(state) as conn:  # a killed run: two rows of chat0 and two of chat1 unknown
        cut = {chat: [r for r, in conn.execute("SELECT rid FROM row_ids WHERE chat = ? ORDER BY seq LIMIT 2",
                                              (chat,))] for chat in ("chat0", "chat1")}
        conn.executemany("UPDATE rows SET status = 'unknown', code = 'interrupted', request = NULL "
                         "WHERE rid = ?", [(r,) for rows in cut.values() for r in rows])
    done = CliRunner().invoke(main, ["verify", str(state), "--sandbox-db", str(db), "--chats", "chat0"])
    assert done.exit_code == 0, done.output
    assert "chat0: sent 4, found 4, missing 0" in done.output and "chat1:" not in done.output, done.output
    with sqlite3.connect(state) as conn:
        status = dict(conn.execute("SELECT rid, status || ':' || COALESCE(code, '') FROM rows"))
    assert {status[r] for r in cut["chat0"]} == {"sent:found-on-portal"}
    assert {status[r] for r in cut["chat1"]} == {"unknown:interrupted"}


def test_finished_sessions_are_read_back_fifty_history_calls_per_batch(tmp_path: Path, monkeypatch) -> None:
    """30 chats whose sessions the run finished: the join + first page batch refuses them, and their
    imopenlines.session.history.get calls go 50 per batch request — 3 requests in all (not 2 + 30),
    and the estimate shown first says so."""
    for name in [n for n in os.environ if n.startswith("BITRIX24_")]:
        monkeypatch.delenv(name)
    src = tmp_path / "history.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Chat ID", "Client ID", "Message ID", "Date", "Text"])
        w.writerows([[f"chat{c}", f"client{c}", f"c{c}-m{i}", f"2025-01-0{i + 1} 10:{c:02d}", "hi"]
                     for i in range(2) for c in range(30)])
    db, state = tmp_path / "sandbox.db", tmp_path / "j.db"
    result = ImportJob(src, sandbox=True, sandbox_db=db, state=state, time_scale=500.0, progress=False).run()
    assert result.summary.counts["sent"] == 60 and result.finish is not None
    with Sandbox(db=db) as sb:
        assert sb.store.sessions()["closed"].notna().all()
        sb.store.lose_messages(message_ids=["c7-m1"])
    done = CliRunner().invoke(main, ["verify", str(state), "--sandbox-db", str(db)])
    assert done.exit_code == 1, done.output
    assert "Verify reads the chats back in about 3 calls" in done.output, done.output
    assert "Total: 30 conversations, sent 60, found 59, missing 1, unexpected 0; 3 calls" in done.output
    assert "chat7: sent 2, found 1, missing 1" in done.output
