"""Findings of the third new-user trial (#14): a note below the data, a deleted invalid row, sheets
with different headers, a role column."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from bulkimport import codes, read, validate
from bulkimport.cli import main
from bulkimport.errors import ReadError
from bulkimport.mapping import Mapping

# the trial's empty_first_col.orig.csv, as the user had it (an empty first column, a note at the end)
NOTE_CSV = (
    ";Chat;Client;Author;Date;Text\n"
    ";wa-77;Dmitry;Dmitry;2026-10-01 10:00;Hi\n"
    ";wa-77;Dmitry;Operator Lena;2026-10-01 10:01;Hello Dmitry\n"
    ";wa-78;Sergey;Sergey;2026-10-01 11:00;Price?\n"
    ";wa-78;Sergey;Operator Lena;2026-10-01 11:05;100 EUR\n"
    "\n"
    ';"Exported by admin on 2026-10-02; 4 messages";;;;\n'
)


def _cli(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes else "")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _helpdesk(tmp_path: Path) -> Path:
    """The trial's helpdesk.xlsx: an empty first column, Date + Time, a blank row and a notes row."""
    import datetime as dt

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Export"
    ws.append([None, "Conversation ID", "Customer ID", "Customer", "Agent", "Date", "Time", "Message"])
    day = dt.datetime(2026, 3, 29)
    ws.append([None, "T-1", "C-9", "Eva Novak", None, day, "1:30 AM", "Before DST"])
    ws.append([None, "T-1", "C-9", "Eva Novak", "Mark", day, "3:30 AM", "Reply"])
    ws.append([None, "T-2", "C-10", "Ola Berg", None, day, "12:00 PM", "Noon"])
    ws.append([None] * 8)
    ws.append([None, "Notes: exported from HelpDesk Pro, times are CET"])
    p = tmp_path / "helpdesk.xlsx"
    wb.save(p)
    return p


# ------------------------------------------------------------------ 1: a note below the data
def test_a_note_row_at_the_bottom_of_a_csv_is_left_out_and_said(tmp_path):
    p = _write(tmp_path, "notes.csv", NOTE_CSV)
    df = read(p)
    assert df.index.tolist() == [2, 3, 4, 5]
    assert df.attrs["footer_rows"] == [{"row": 7, "text": "Exported by admin on 2026-10-02; 4 messages"}]
    code, out = _cli("validate", p, "--timezone", "UTC")
    assert code == 0, out
    assert "missing-date" not in out and "missing-content" not in out
    assert "rows below the data (totals, notes), not read as messages: row 7 'Exported by admin" in out


def test_a_note_row_at_the_bottom_of_a_workbook_is_left_out(tmp_path):
    df = read(_helpdesk(tmp_path))
    assert df.index.tolist() == [2, 3, 4]
    assert [e["row"] for e in df.attrs["footer_rows"]] == [6]  # openpyxl writes no blank row
    assert df.attrs["footer_rows"][0]["text"].startswith("Notes: exported from HelpDesk Pro")
    failures = validate(df, Mapping.guess(df).with_options(timezone="Europe/Berlin"))
    assert not (failures["level"] == "error").any(), failures


def test_a_short_row_in_the_middle_or_one_with_a_date_or_text_stays_a_row(tmp_path):
    middle = NOTE_CSV.replace(";wa-78;Sergey;Sergey;2026-10-01 11:00;Price?\n", ";just a remark;;;;\n")
    df = read(_write(tmp_path, "middle.csv", middle))
    assert 4 in df.index  # in the middle of the data: a row (invalid), never left out silently
    for last, row in ((";wa-78;;;2026-10-01 11:07;\n", 6), (";;;;;one more thing\n", 6),
                      (";;;;2026-10-01 11:09;thanks\n", 6)):
        df = read(_write(tmp_path, "tail.csv", NOTE_CSV.split("\n\n")[0] + "\n" + last))
        assert row in df.index and df.attrs["footer_rows"] == [], last  # a date or a text: a message


def test_missing_user_id_hint_does_not_ask_to_map_chat_id(tmp_path):
    text = "Chat,Client ID,Date,Text\nc1,,2026-01-01 10:00,hi\nc2,u2,2026-01-01 10:05,x\n"
    p = _write(tmp_path, "nouid.csv", text)
    failures = validate(read(p), Mapping.guess(read(p)))
    assert failures["code"].tolist() == ["missing-user-id"]
    assert "map chat.id" not in codes.hint("missing-user-id")
    code, out = _cli("validate", p, "--timezone", "UTC")
    assert code == 1 and "missing-user-id" in out and "map chat.id" not in out, out


# ------------------------------------------------------------------ 2: a deleted invalid row
def test_an_invalid_row_deleted_from_the_file_leaves_the_journal(tmp_path):
    rows = ("Chat,Client ID,Date,Text\nc1,u1,2026-01-01 10:00,hi\nc1,u1,2026-01-01 10:01,again\n"
            "c2,u2,2026-01-01 11:00,hello\nc2,u2,2026-01-01 11:05,bye\n")
    p = _write(tmp_path, "h.csv", rows + "c2,u2,,no date here\n")
    state, db = tmp_path / "j.db", tmp_path / "sb.db"
    run = ("run", p, "--sandbox", "--sandbox-db", db, "--state", state, "--yes", "--no-progress",
           "--timezone", "UTC")
    code, out = _cli(*run)
    assert code == 1 and "invalid 1 (of 5)" in out, out
    code, out = _cli("status", state)
    assert "invalid 1" in out and "(of 5)" in out, out
    p.write_text(rows, encoding="utf-8")  # the user deletes the bad row and runs again
    code, out = _cli(*run)
    assert code == 0 and "Rows: sent 4 (of 4)" in out, out
    assert "rows no longer in the file (kept in the journal, listed in the report): 6" in out, out
    code, out = _cli("status", state)
    assert code == 0 and "invalid 0" in out and "(of 4)" in out and "missing-date" not in out, out
    with sqlite3.connect(state) as conn:
        assert conn.execute("SELECT rid, status, code FROM gone_rows").fetchall() == [
            ("6", "invalid", "missing-date")
        ]
    code, out = _cli(*run)  # once gone, it stays gone: nothing more to say
    assert code == 0 and "no longer in the file" not in out, out


# ------------------------------------------------------------------ 3: sheets with different headers
def _two_sheets(tmp_path: Path, feb: list[list[str]]) -> Path:
    wb = openpyxl.Workbook()
    jan = wb.active
    jan.title = "Jan"
    for r in (["Chat ID", "Client ID", "Author", "Date", "Message"],
              ["A", "u1", "u1", "15.01.2026 10:00", "jan msg"],
              ["A", "u1", "Max", "15.01.2026 10:05", "reply"]):
        jan.append(r)
    sheet = wb.create_sheet("Feb")
    for r in feb:
        sheet.append(r)
    p = tmp_path / "two.xlsx"
    wb.save(p)
    return p


def test_sheets_with_different_headers_are_refused_in_one_line(tmp_path):
    feb = [["Дата", "Чат", "Клиент", "Текст"], ["01.02.2026 09:00", "A", "u1", "feb msg"]]
    p = _two_sheets(tmp_path, feb)
    with pytest.raises(ReadError) as err:
        read(p, sheet="*")
    text = str(err.value)
    assert "'Jan'" in text and "'Feb'" in text and "Chat ID" in text and "Клиент" in text
    assert "\n" not in text and "sheet=NAME" in text
    for args in (["--sheet", "*"], ["--sheet", "Jan", "--sheet", "Feb"]):
        code, out = _cli("mapping", p, *args)
        assert code == 2 and "different column headers" in out and "Traceback" not in out, out
        assert "--sheet 'Jan'" in out and "--sheet 'Feb'" in out and "--state" in out, out
    assert read(p, sheet="Feb").columns.tolist() == ["Дата", "Чат", "Клиент", "Текст"]  # one by one


def test_sheets_with_the_same_headers_in_another_order_are_read_together(tmp_path):
    p = _two_sheets(tmp_path, [["Message", "Date", "Author", "Client ID", "Chat ID"],
                               ["feb msg", "01.02.2026 09:00", "u1", "u1", "A"]])
    df = read(p, sheet="*")
    assert df.index.tolist() == ["Jan!2", "Jan!3", "Feb!2"]
    assert df.loc["Feb!2", "Message"] == "feb msg"


# ------------------------------------------------------------------ 4: a role column
@pytest.mark.parametrize(
    ("header", "customer", "operator"),
    [("Роль", "клиент", "менеджер"), ("Role", "client", "manager"), ("Role", "customer", "agent"),
     ("Role", "user", "support"), ("Роль", "Клиент", "Оператор"),
     ("Роль отправителя", "заказчик", "консультант")],
)
def test_a_role_column_is_guessed_as_the_side_column(tmp_path, header, customer, operator):
    p = _write(tmp_path, "roles.csv", f"Chat,Client ID,{header},Date,Text\n"
               f"c1,u1,{customer},2026-01-01 10:00,hi\nc1,u1,{operator},2026-01-01 10:01,hello\n")
    code, out = _cli("mapping", p)
    assert code == 0, out
    assert f"side column ← {header!r} ({operator!r} = operator, {customer!r} = customer)" in out, out
    assert f"Rows whose {header!r} is {operator!r} are sent as the operator's replies" in out, out


def test_a_sandbox_run_sends_the_managers_rows_as_operator_replies(tmp_path):
    ru = _write(tmp_path, "ru.csv", "Чат,Клиент,Роль,Дата,Текст\nc1,u1,клиент,2026-01-01 10:00,добрый день\n"
                "c1,u1,менеджер,2026-01-01 10:01,здравствуйте\nc2,u2,клиент,2026-01-01 10:02,цена?\n"
                "c2,u2,оператор,2026-01-01 10:03,100\n")
    en = _write(tmp_path, "en.csv", "Chat,Client ID,Role,Author,Date,Text\n"
                "D1,tom,client,Tom,2026-09-10 08:00,help\nD1,tom,manager,Sarah,2026-09-10 08:03,reset it\n"
                "D1,tom,client,Tom,2026-09-10 08:10,thanks\n")
    for p, extra, replies in ((ru, ["--unmapped-operators", "system"], {"здравствуйте": 0, "100": 0}),
                              (en, ["--operator", "Sarah=7"], {"reset it": 7})):
        db = tmp_path / f"{p.stem}.sb.db"
        code, out = _cli("run", p, "--sandbox", "--sandbox-db", db, "--state", tmp_path / f"{p.stem}.j.db",
                         "--yes", "--no-progress", "--timezone", "UTC", *extra)
        rows = out.split("Rows: ")[1].split("\n")[0]
        assert code == 0 and rows.startswith("sent") and "invalid" not in rows, out
        with sqlite3.connect(db) as conn:
            got = dict(conn.execute("SELECT text, author_id FROM messages").fetchall())
        assert {t: a for t, a in got.items() if a is not None} == replies, got
        assert all(got[t] is None for t in got if t not in replies)  # the clients' rows: the customer's
