"""Re-run after editing the file: the journal knows rows by (chat id, message id). Fix 3 invalid rows,
add 5 rows, change the text of 2 sent rows: exactly the 8 are sent, the 2 are reported (and updated
with --update-changed), nothing else is sent twice; a changed identity mapping is refused before
the sandbox is set up."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd
import pytest

from bulkimport.errors import JournalMismatchError
from bulkimport.job import ImportJob
from bulkimport.sandbox import Sandbox

HEADER = ["Chat ID", "Client ID", "Client name", "Message ID", "Date", "Text"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith("BITRIX24_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BITRIX24_TOKEN_FILE", str(tmp_path / "tokens.json"))


def _row(chat: int, i: int, *, date: str | None = None, text: str | None = None) -> list[str]:
    stamp = pd.Timestamp("2025-01-01") + pd.Timedelta(hours=i, minutes=chat)
    when = date or stamp.strftime("%Y-%m-%d %H:%M")
    return [f"chat{chat}", f"client{chat}", "Ann", f"c{chat}-m{i}", when, text or f"message {chat}.{i}"]


def _write(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(rows)


def _job(path: Path, **kw) -> ImportJob:
    said: list[str] = []
    job = ImportJob(path, sandbox=True, time_scale=500.0, progress=False, notify=said.append,
                    report=path.with_name("report.csv"), **kw)
    job.said = said  # type: ignore[attr-defined]
    return job


def _stored(db: Path) -> pd.DataFrame:
    with Sandbox(db=db) as sb:
        assert sb.store.duplicates().empty
        return sb.store.messages()


def test_fix_add_and_change_rows_then_run_again(tmp_path: Path) -> None:
    src = tmp_path / "history.csv"
    good = [_row(c, i) for i in range(4) for c in range(4)]  # 16 valid rows, 4 chats
    broken = [_row(c, 10, date="not a date") for c in (0, 1, 2)]  # 3 invalid rows
    _write(src, good + broken)
    first = _job(src).run()
    assert first.summary.counts["sent"] == 16 and first.summary.counts["invalid"] == 3
    db = tmp_path / "sandbox-history.db"
    before = _stored(db)
    assert len(before) == 16

    fixed = [_row(c, 10) for c in (0, 1, 2)]
    changed = [_row(0, 1, text="message 0.1 (corrected)"), _row(3, 2, text="message 3.2 (corrected)")]
    edited = [changed[0] if r[3] == "c0-m1" else changed[1] if r[3] == "c3-m2" else r for r in good]
    early = _row(1, 0, date="2024-12-31 23:00")
    early[3] = "c1-early"
    added = [_row(5, 0), _row(5, 1), _row(2, 20), _row(3, 20), early]
    # two new rows go to the top: every row below moves, the journal must follow by identity
    _write(src, added[:2] + edited + fixed + added[2:])
    job = _job(src)
    second = job.run()
    after = _stored(db)
    new = after[~after["seq"].isin(before["seq"])]
    want = {"c0-m10", "c1-m10", "c2-m10", "c5-m0", "c5-m1", "c2-m20", "c3-m20", "c1-early"}
    assert sorted(new["message_id"]) == sorted(want)  # exactly the 8, each once
    assert second.summary.sent_this_run == 8 and set(second.frame["import_status"]) == {"sent"}
    codes = dict(zip(second.frame["Message ID"], second.frame["import_error_code"], strict=True))
    assert {m for m, c in codes.items() if c == "changed-after-sent"} == {"c0-m1", "c3-m2"}
    assert second.changes is not None and second.changes.early == [
        str(r) for r in second.frame.index[second.frame["Message ID"] == "c1-early"]]
    assert any("dated-before-sent" in s for s in job.said)
    report = pd.read_csv(tmp_path / "report.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    flagged = report.loc[report["import_error_code"] == "changed-after-sent", "Message ID"]
    assert set(flagged) == {"c0-m1", "c3-m2"}
    assert set(after.loc[after["message_id"] == "c0-m1", "text"]) == {"message 0.1"}  # not yet updated

    # the same file again: nothing sent, the 2 still reported
    again = _job(src).run()
    assert again.summary.sent_this_run == 0
    assert (again.frame["import_error_code"] == "changed-after-sent").sum() == 2

    # --update-changed: the 2 are updated on the portal, nothing is sent
    updated = _job(src, update_changed=True).run()
    assert updated.summary.sent_this_run == 0
    final = _stored(db)
    assert len(final) == len(after)
    text = dict(zip(final["message_id"], final["text"], strict=True))
    assert text["c0-m1"] == "message 0.1 (corrected)" and text["c3-m2"] == "message 3.2 (corrected)"
    codes = dict(zip(updated.frame["Message ID"], updated.frame["import_error_code"], strict=True))
    assert {m for m, c in codes.items() if c == "updated-after-sent"} == {"c0-m1", "c3-m2"}
    assert not (_job(src).run().frame["import_error_code"] == "changed-after-sent").any()


def test_removed_rows_are_listed_and_a_changed_identity_is_refused_before_set_up(tmp_path: Path) -> None:
    src = tmp_path / "history.csv"
    rows = [_row(c, i) for i in range(3) for c in range(2)]
    _write(src, rows)
    _job(src).run()
    _write(src, rows[1:])  # c0-m0 removed
    result = _job(src).run()
    assert result.summary.sent_this_run == 0
    assert [g[2] for g in result.changes.gone] == ["c0-m0"]
    listed = pd.read_csv(tmp_path / "report.changes.csv", dtype=str, keep_default_na=False,
                         encoding="utf-8-sig")
    assert list(listed["message_id"]) == ["c0-m0"] and list(listed["change"]) == ["no-longer-in-file"]

    moved = [[*r[:1], "someone-else", *r[2:]] if r[0] == "chat1" else r for r in rows[1:]]
    _write(src, moved)
    job = _job(src)
    with pytest.raises(JournalMismatchError, match=r"chat 'chat1' now belongs to customer 'someone-else'"):
        job.run()
    assert not any(s.startswith("Sandbox portal at") for s in job.said)  # refused before any set-up


def test_an_edited_text_without_a_message_id_column_is_said_to_go_as_a_new_message(tmp_path: Path) -> None:
    """Without a message-id column the id is a hash of chat, time and content: a corrected text is a
    new row to the journal. The run must say that the old message stays on the portal."""
    src = tmp_path / "h.csv"
    src.write_text("chat,user,date,text\nc1,u1,2024-05-06 10:00,hello\nc1,u1,2024-05-06 10:01,thanks\n",
                   encoding="utf-8")
    db, state = tmp_path / "sb.db", tmp_path / "j.db"
    said: list[str] = []

    def job() -> ImportJob:
        return ImportJob(src, sandbox=True, sandbox_db=db, state=state, time_scale=500.0, progress=False,
                         notify=said.append)

    assert job().run().summary.counts["sent"] == 2
    src.write_text(src.read_text(encoding="utf-8").replace("thanks", "thanks!"), encoding="utf-8")
    said.clear()
    result = job().run()
    text = "\n".join(said) + "\n" + "\n".join(result.changes.lines() if result.changes else [])
    assert "a corrected text goes as a NEW message" in text and "chats c1" in text, text
    with Sandbox(db=db) as sb:
        assert sorted(sb.store.messages()["text"]) == ["hello", "thanks", "thanks!"]  # what the warning says
