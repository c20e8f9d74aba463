"""Re-run after editing the file: the journal knows rows by (chat id, message id). Fix 3 invalid rows,
add 5 rows, change the text of 2 sent rows: exactly the 8 are sent, the 2 are reported (and updated
with --update-changed), nothing else is sent twice; a changed identity mapping is refused before
the sandbox is set up."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from bulkimport.cli import main
from bulkimport.errors import JournalMismatchError
from bulkimport.job import ImportJob
from bulkimport.sandbox import Sandbox

HEADER = ["Chat ID", "Client ID", "Client name", "Message ID", "Date", "Text"]


pytestmark = pytest.mark.usefixtures("clean_env")


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


NO_ID = ["Chat ID", "Client ID", "Client name", "Date", "Text"]


def _plain(rows: list[list[str]]) -> list[list[str]]:
    """The rows without their message-id column (the README's history.xlsx: most spreadsheets)."""
    return [[r[0], r[1], r[2], r[4], r[5]] for r in rows]


def _write_plain(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(NO_ID)
        w.writerows(_plain(rows))


def test_fix_add_and_change_rows_of_a_file_without_message_ids(tmp_path: Path) -> None:
    """The issue's scenario on a file WITHOUT a message-id column: its ids are generated from chat,
    customer, time and occurrence, so a corrected text is the same row (changed-after-sent, updated
    in place with --update-changed), and exactly the 3 fixed and 5 new rows are sent."""
    src = tmp_path / "history.csv"
    good = [_row(c, i) for i in range(4) for c in range(4)]
    broken = [_row(c, 10, date="not a date") for c in (0, 1, 2)]
    _write_plain(src, good + broken)
    first = _job(src).run()
    assert first.summary.counts["sent"] == 16 and first.summary.counts["invalid"] == 3
    db = tmp_path / "sandbox-history.db"
    before = _stored(db)
    assert len(before) == 16 and all(m.startswith("bi2-") for m in before["message_id"])

    fixed = [_row(c, 10) for c in (0, 1, 2)]
    changed = {"c0-m1": _row(0, 1, text="message 0.1 (corrected)"),
               "c3-m2": _row(3, 2, text="message 3.2 (corrected)")}
    edited = [changed.get(r[3], r) for r in good]
    early = _row(1, 0, date="2024-12-31 23:00", text="an early one")
    added = [_row(5, 0), _row(5, 1), _row(2, 20), _row(3, 20), early]
    _write_plain(src, added[:2] + edited + fixed + added[2:])  # two rows at the top: every row moves
    job = _job(src)
    second = job.run()
    after = _stored(db)
    new = after[~after["seq"].isin(before["seq"])]
    want = {"message 0.10", "message 1.10", "message 2.10", "message 5.0", "message 5.1", "message 2.20",
            "message 3.20", "an early one"}
    assert sorted(new["text"]) == sorted(want)  # exactly the 8, each once
    assert second.summary.sent_this_run == 8 and set(second.frame["import_status"]) == {"sent"}
    codes = dict(zip(second.frame["Text"], second.frame["import_error_code"], strict=True))
    assert {t for t, c in codes.items() if c == "changed-after-sent"} == {
        "message 0.1 (corrected)", "message 3.2 (corrected)"}
    assert second.changes.gone == [] and second.changes.retimed == []
    assert any("dated-before-sent" in s for s in job.said)
    assert not any("NEW message" in s for s in job.said)
    assert "message 0.1" in set(after["text"])  # not updated yet

    again = _job(src).run()
    assert again.summary.sent_this_run == 0
    assert (again.frame["import_error_code"] == "changed-after-sent").sum() == 2

    updated = _job(src, update_changed=True).run()
    assert updated.summary.sent_this_run == 0
    final = _stored(db)  # asserts no duplicate
    assert len(final) == 24 and final["message_id"].is_unique
    texts = sorted(final["text"])
    assert texts == sorted([r[5] for r in edited] + sorted(want))  # each message once, corrected
    assert "message 0.1" not in texts and "message 3.2" not in texts
    codes = dict(zip(updated.frame["Text"], updated.frame["import_error_code"], strict=True))
    assert {t for t, c in codes.items() if c == "updated-after-sent"} == {
        "message 0.1 (corrected)", "message 3.2 (corrected)"}
    assert _job(src).run().summary.sent_this_run == 0


def _same_minute(path: Path, texts: list[str], *, at: str = "2025-01-01 10:00") -> None:
    path.write_text("chat,user,date,text\n" + "".join(f"c1,u1,{at},{t}\n" for t in texts), encoding="utf-8")


def _plain_job(src: Path, **kw) -> ImportJob:
    said: list[str] = []
    job = ImportJob(src, sandbox=True, sandbox_db=src.with_name("sb.db"), state=src.with_name("j.db"),
                    time_scale=500.0, progress=False, notify=said.append, **kw)
    job.said = said  # type: ignore[attr-defined]
    return job


def test_a_row_inserted_between_rows_of_the_same_minute_is_sent_once_and_reuses_no_id(tmp_path: Path) -> None:
    """Rows of one chat, customer and time are told apart by their order; a row inserted among them
    takes the occurrence number of the one after it, yet the journal matches those by content and
    the new row is sent with an id no sent message of the chat has."""
    src = tmp_path / "h.csv"
    _same_minute(src, ["first", "second", "third"])
    assert _plain_job(src).run().summary.sent_this_run == 3
    _same_minute(src, ["first", "inserted", "second", "third (edited)"])
    result = _plain_job(src).run()
    assert result.summary.sent_this_run == 1
    edited = result.frame.index[result.frame["text"] == "third (edited)"]
    assert result.changes.changed == [str(r) for r in edited]
    with Sandbox(db=tmp_path / "sb.db") as sb:
        stored = sb.store.messages()
        assert sb.store.duplicates().empty and stored["message_id"].is_unique
    assert sorted(stored["text"]) == ["first", "inserted", "second", "third"]
    assert _plain_job(src).run().summary.sent_this_run == 0


def test_a_sent_row_whose_time_is_edited_is_reported_as_gone_and_sent_anew(tmp_path: Path) -> None:
    """Without a message-id column the time is part of a row's identity: an edited time makes the
    row another one. It is sent (the portal cannot move a message), and the run says clearly that
    the message sent before stays, pairing the two in the report."""
    src = tmp_path / "h.csv"
    src.write_text("chat,user,date,text\nc1,u1,2025-01-01 10:00,hello\nc1,u1,2025-01-01 10:01,thanks\n",
                   encoding="utf-8")
    assert _plain_job(src).run().summary.sent_this_run == 2
    src.write_text(src.read_text(encoding="utf-8").replace("10:01", "10:05"), encoding="utf-8")
    job = _plain_job(src, report=tmp_path / "report.csv")
    result = job.run()
    assert result.summary.sent_this_run == 1
    assert result.changes.retimed == [("3", "3")] and [g[0] for g in result.changes.gone] == ["3"]
    said = "\n".join(job.said)
    assert "time-changed-after-sent: rows 3 (was 3)" in said and "stays on the portal" in said, said
    listed = pd.read_csv(tmp_path / "report.changes.csv", dtype=str, keep_default_na=False,
                         encoding="utf-8-sig")
    assert set(listed["change"]) == {"time-changed-after-sent", "no-longer-in-file"}
    with Sandbox(db=tmp_path / "sb.db") as sb:
        assert sorted(sb.store.messages()["text"]) == ["hello", "thanks", "thanks"]  # as said
    assert _plain_job(src).run().summary.sent_this_run == 0
    # verify: the old message is the journal's (a row no longer in the file), not unexpected
    args = ["verify", str(tmp_path / "j.db"), "--sandbox-db", str(tmp_path / "sb.db")]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0 and "c1: sent 2, found 2, missing 0, unexpected 0" in done.output, done.output


def _as_before_id_schemes(state: Path) -> None:
    """Make a journal exactly what the version before id schemes wrote: no row_identity table and
    no id_scheme in its meta (its generated ids are the content hashes made by the legacy function)."""
    import sqlite3

    with sqlite3.connect(state) as conn:
        conn.execute("DROP TABLE row_identity")
        conn.execute("DELETE FROM meta WHERE key = 'id_scheme'")


def _journal(state: Path, sql: str, params: tuple = ()) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(state) as conn:
        return conn.execute(sql, params).fetchall()


def test_a_journal_of_content_hashed_ids_resumes_and_re_runs_without_sending_anything_twice(
    tmp_path: Path, monkeypatch
) -> None:
    """Migration: a journal written with the old generated ids (bi-: hashes of the content) keeps
    them — they are the ids on the portal, which update, undo and read-back name — while the
    file's rows are matched by identity: its unknown rows are settled by read-back under their
    old ids, nothing is sent twice, and an edited text is changed-after-sent, updated in place."""
    from bulkimport import validation

    src = tmp_path / "history.csv"
    state = tmp_path / "history.csv.bulkimport.db"
    good = [_row(c, i) for i in range(4) for c in range(3)]
    _write_plain(src, [*good, _row(0, 10, date="not a date")])
    with monkeypatch.context() as m:
        m.setattr(validation, "_generated_ids", validation._legacy_generated_ids)
        assert _job(src).run().summary.counts["sent"] == 12
    _as_before_id_schemes(state)
    old_ids = dict(_journal(state, "SELECT rid, mid FROM row_ids"))
    assert all(v.startswith("bi-") and not v.startswith("bi2-") for v in old_ids.values())
    db = tmp_path / "sandbox-history.db"
    # a killed run: three sent rows left unknown, one of which the portal never stored
    cut = [r for r, in _journal(state, "SELECT rid FROM rows WHERE status = 'sent' ORDER BY rid")[:3]]
    _journal(state, "UPDATE rows SET status = 'unknown', code = 'interrupted', request = NULL WHERE rid IN "
             "(?, ?, ?)", tuple(cut))
    with Sandbox(db=db) as sb:
        sb.store.lose_messages(message_ids=[old_ids[cut[0]]])

    job = _job(src)
    resumed = job.run()  # the same file, today's id scheme
    assert resumed.summary.sent_this_run == 1 and resumed.settled.found == 2
    said = "\n".join(job.said)
    assert "written by an earlier version" in said and "its 12 rows keep the ids" in said, said
    assert "The input changed" not in said
    stored = _stored(db)
    assert len(stored) == 12 and set(stored["message_id"]) == set(old_ids.values())
    assert dict(_journal(state, "SELECT rid, mid FROM row_ids")) == old_ids  # the ids on the portal
    assert _journal(state, "SELECT value FROM meta WHERE key = 'id_scheme'") == [(validation.ID_SCHEME,)]
    assert _job(src).run().summary.sent_this_run == 0

    # then an edit: a fixed row, a new one, two corrected texts
    edited = [_row(0, 1, text="corrected 0.1") if r[5] == "message 0.1" else
              _row(2, 3, text="corrected 2.3") if r[5] == "message 2.3" else r for r in good]
    _write_plain(src, [*edited, _row(0, 10), _row(1, 30)])
    second = _job(src).run()
    assert second.summary.sent_this_run == 2
    codes = dict(zip(second.frame["Text"], second.frame["import_error_code"], strict=True))
    assert {t for t, c in codes.items() if c == "changed-after-sent"} == {"corrected 0.1", "corrected 2.3"}
    assert _job(src, update_changed=True).run().summary.sent_this_run == 0
    final = _stored(db)
    assert len(final) == 14 and {"corrected 0.1", "corrected 2.3"} <= set(final["text"])
    assert not {"message 0.1", "message 2.3"} & set(final["text"])
    assert set(old_ids.values()) <= set(final["message_id"])


def test_dates_shifted_for_every_row_of_a_file_without_message_ids_are_refused_before_set_up(
    tmp_path: Path,
) -> None:
    """Without message ids the time is part of the identity: a file whose every date moved (another
    date column, another time zone) matches none of the sent rows, and would send everything again.
    That is refused, naming it, before the sandbox is set up."""
    src = tmp_path / "h.csv"
    src.write_text("chat,user,date,text\nc1,u1,2025-01-01 10:00,hello\nc1,u1,2025-01-01 10:01,thanks\n",
                   encoding="utf-8")
    assert _plain_job(src).run().summary.sent_this_run == 2
    src.write_text(src.read_text(encoding="utf-8").replace(" 10:", " 11:"), encoding="utf-8")
    job = _plain_job(src)
    with pytest.raises(JournalMismatchError, match=r"none of the 2 sent rows .* by chat, customer and time"):
        job.run()
    assert not any(s.startswith("Sandbox portal at") for s in job.said)
    with Sandbox(db=tmp_path / "sb.db") as sb:
        assert len(sb.store.messages()) == 2


def test_matching_pairs_only_what_it_can_tell_apart() -> None:
    """bulkimport.after.matching on hand-made rows of one chat, customer and minute: same content
    pairs first, whatever moved; rows left between the same matched neighbours pair in order only
    when both sides have as many — an insert next to an edit is not guessed."""
    from bulkimport.after.matching import Old, match

    def old(k: int, dig: str, date: int | None = 60, mid: str | None = None) -> Old:
        return Old(str(k), "c1", "u1", mid or f"bi2-{k:016x}", dig, date, "b" + dig, 0, k, "sent")

    def new(k: int, dig: str, date: int = 60) -> tuple:
        return (str(k), 0, k, "c1", "u1", f"bi2-n{k:015x}", dig, date, "b" + dig)

    before = [old(0, "a"), old(1, "b"), old(2, "c")]
    # b edited in place: paired (between a and c)
    assert match(before, [new(0, "a"), new(1, "B"), new(2, "c")]) == {0: 0, 1: 1, 2: 2}
    # x inserted before b: a, b, c found by content wherever they are now; x is new
    assert match(before, [new(0, "a"), new(1, "x"), new(2, "b"), new(3, "c")]) == {0: 0, 2: 1, 3: 2}
    # x inserted next to an edited b (two new rows, one old, in the same gap): not guessed
    assert match(before, [new(0, "a"), new(1, "x"), new(2, "B"), new(3, "c")]) == {0: 0, 3: 2}
    # another minute is another row
    assert match(before, [new(0, "a"), new(1, "b", date=120), new(2, "c")]) == {0: 0, 2: 2}
    # a journal of content-hashed ids (no times): by content, then a lone edit between anchors
    legacy = [old(k, d, date=None, mid=f"bi-{k:016x}") for k, d in enumerate("abc")]
    assert match(legacy, [new(0, "a"), new(1, "B"), new(2, "c")]) == {0: 0, 1: 1, 2: 2}
    assert match(legacy, [new(0, "a"), new(1, "x"), new(2, "B"), new(3, "c")]) == {0: 0, 3: 2}


def test_update_changed_says_a_changed_date_cannot_be_updated(tmp_path: Path, caplog) -> None:
    """Found by a new-user trial: --update-changed said "updated" for rows whose date changed, and
    the portal kept the old date (imconnector.update.messages changes text and files only)."""
    import logging

    src = tmp_path / "history.csv"
    rows = [_row(c, i) for i in range(3) for c in range(2)]
    _write(src, rows)
    assert _job(src).run().summary.counts["sent"] == 6
    db = tmp_path / "sandbox-history.db"
    sent_date = dict(zip(_stored(db)["message_id"], _stored(db)["date"], strict=True))["c0-m2"]
    redated = [_row(0, 2, date="2025-01-01 02:30") if r[3] == "c0-m2" else r for r in rows]
    retexted = [_row(1, 1, text="message 1.1 (corrected)") if r[3] == "c1-m1" else r for r in redated]
    _write(src, retexted)
    with caplog.at_level(logging.WARNING, logger="bulkimport"):
        done = _job(src, update_changed=True).run()
    assert done.summary.sent_this_run == 0
    final = _stored(db)
    date = dict(zip(final["message_id"], final["date"], strict=True))
    text = dict(zip(final["message_id"], final["text"], strict=True))
    assert date["c0-m2"] == sent_date and text["c1-m1"] == "message 1.1 (corrected)"
    frame = done.frame.set_index("Message ID")
    assert frame.loc["c1-m1", "import_error_code"] == "updated-after-sent"
    assert frame.loc["c0-m2", "import_error_code"] == "changed-after-sent"
    assert "only the date changed" in frame.loc["c0-m2", "import_error"]
    said = caplog.text
    assert "1 changed rows updated" in said and "keeps the date and author" in said
    assert "1 changed rows differ only in their date" in said
