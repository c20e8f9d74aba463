"""Reports at any size and a cheap end of run (issue #19): the journal report, CSV past a sheet,
no per-row report after Ctrl-C."""

from __future__ import annotations

import csv
import os
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import bulkimport.reporting as reporting
from bulkimport import codes
from bulkimport.cli import main
from bulkimport.errors import ConfigError
from bulkimport.exits import EXIT_INTERRUPTED
from bulkimport.job import ImportJob
from bulkimport.journal import Journal, RowUpdate
from bulkimport.reporting import default_journal_report, write_journal_report, write_report

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "data_examples"


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def _journal(path: Path) -> None:
    """A journal with a sent row, a failed one with formula-like text, one in flight, a pending
    one and an invalid one (a text row id too)."""
    journal = Journal.bind(path, portal="https://acme.bitrix24.ru/rest/", line="1", connector="c",
                           fingerprint="f")
    journal.add_rows([
        ("2", 0, 0, "pending", None, None), ("3", 0, 1, "pending", None, None),
        ('"x-4"', 1, 0, "pending", None, None), ("5", 1, 1, "pending", None, None),
        ("9", None, None, "invalid", "empty-text", "message.text is empty"),
    ])
    run = journal.start_run(1_700_000_000.0)
    request = journal.mark_inflight(["2", "3"], run, 1_700_000_000.0)
    journal.settle(request, [
        RowUpdate("2", "sent", message_id="=77", chat_id="1767", sent_at=1_700_000_000.0),
        RowUpdate("3", "failed", code="CONNECTOR_PROXY_NO_ADD_USER", error="=HYPERLINK(\"x\")"),
    ], 1_700_000_001.0, "answered")
    journal.mark_inflight(['"x-4"'], run, 1_700_000_002.0)
    journal.close()


def test_the_journal_report_holds_every_row_formula_safe_with_hints(tmp_path):
    state = tmp_path / "history.csv.bulkimport.db"
    _journal(state)
    target, rows = write_journal_report(state)
    assert target == tmp_path / "history.csv.bulkimport.report.csv" == default_journal_report(state)
    assert rows == 5
    lines = _read(target)
    by_row = {line["row"]: line for line in lines}
    assert [line["row"] for line in lines] == ["2", "3", "x-4", "5", "9"]  # plan order, invalid last
    assert by_row["2"]["import_status"] == "sent" and by_row["2"]["import_message_id"] == "'=77"
    assert by_row["2"]["sent_at"] == "2023-11-14 22:13:20+00:00" and by_row["2"]["b24_chat_id"] == "1767"
    assert by_row["3"]["import_error"] == "'=HYPERLINK(\"x\")"
    assert by_row["3"]["import_hint"] == codes.hint("CONNECTOR_PROXY_NO_ADD_USER") != ""
    assert by_row["x-4"]["import_status"] == "unknown"  # in flight when the journal was read
    assert by_row["5"]["import_status"] == "pending" and by_row["5"]["import_hint"] == ""
    assert by_row["9"]["import_status"] == "invalid" and by_row["9"]["conversation"] == ""


def test_the_report_command_writes_it_and_bad_paths_are_one_line(tmp_path):
    state = tmp_path / "j.db"
    _journal(state)
    out = CliRunner().invoke(main, ["report", str(state), "--report", str(tmp_path / "r.csv")])
    assert out.exit_code == 0, out.output
    assert f"Report: {tmp_path / 'r.csv'} (5 rows)" in out.output
    assert len(_read(tmp_path / "r.csv")) == 5
    for args, word in (([str(state), "--report", str(tmp_path / "r.xlsx")], ".csv"),
                       ([str(tmp_path / "none.db")], "no such journal")):
        bad = CliRunner().invoke(main, ["report", *args])
        assert bad.exit_code == 2 and word in bad.output and "Traceback" not in bad.output, bad.output
    (tmp_path / "junk.db").write_text("not sqlite " * 100)
    with pytest.raises(ConfigError, match="not a bulkimport journal"):
        write_journal_report(tmp_path / "junk.db")
    assert not (tmp_path / "junk.report.csv").exists() and not (tmp_path / "junk.report.csv.tmp").exists()


def test_a_frame_longer_than_a_sheet_is_written_as_csv_beside_the_xlsx_path(tmp_path, monkeypatch):
    assert reporting.XLSX_MAX_ROWS == 1_048_576  # Excel's documented sheet limit
    monkeypatch.setattr(reporting, "XLSX_MAX_ROWS", 5)
    n = 13
    frame = pd.DataFrame(
        {"Text": [f"=m{i}" for i in range(n)], "import_status": ["sent"] * (n - 2) + ["failed"] * 2,
         "import_error_code": [None] * (n - 2) + ["ERROR_ARGUMENT"] * 2},
        index=pd.RangeIndex(2, 2 + n, name="row"),
    )
    path = write_report(frame, tmp_path / "big.xlsx")
    assert path == tmp_path / "big.csv" and not (tmp_path / "big.xlsx").exists()
    lines = _read(path)
    assert [int(line["row"]) for line in lines] == list(range(2, 2 + n))
    assert lines[0]["Text"] == "'=m0" and lines[-1]["import_hint"] == codes.hint("ERROR_ARGUMENT")
    small = write_report(frame.head(4), tmp_path / "small.xlsx")  # under the limit: xlsx as asked
    assert small == tmp_path / "small.xlsx"


def test_after_ctrl_c_the_job_exits_without_the_per_row_report_and_says_how_to_write_it(
    tmp_path, monkeypatch
):
    for name in list(os.environ):
        if name.startswith("BITRIX24_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BITRIX24_TOKEN_FILE", str(tmp_path / "tokens.json"))
    history = tmp_path / "history.xlsx"
    shutil.copy(EXAMPLE / "history.xlsx", history)
    original = Journal.mark_inflight
    fired: list[int] = []

    def mark_then_ctrl_c(self: Journal, *args: object, **kwargs: object) -> int:
        request = original(self, *args, **kwargs)
        if not fired:
            fired.append(request)
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C as the first request leaves
        return request

    monkeypatch.setattr(Journal, "mark_inflight", mark_then_ctrl_c)
    job = ImportJob(history, mapping=EXAMPLE / "history_xlsx.toml", sandbox=True, progress=False,
                    notify=lambda _text: None)
    result = job.run()
    assert fired and result.interrupted and result.exit_code == EXIT_INTERRUPTED
    assert result.report is None and not job.report.exists()
    later = result.report_later
    assert later is not None and later[:3] == ["bulkimport", "report", str(result.journal)]
    assert any("bulkimport report" in line for line in result.next_steps())
    counts = result.summary.counts
    assert counts["unknown"] == 0 and counts["sent"] > 0 and counts["pending"] > 0  # answer awaited
    target, rows = write_journal_report(result.journal, later[-1])
    statuses = pd.Series([line["import_status"] for line in _read(target)]).value_counts().to_dict()
    assert result.frame is None  # no per-row frame was built: the run ended at once
    assert rows == sum(counts.values()) and statuses["sent"] == counts["sent"] and "unknown" not in statuses
    assert "not-reached" not in {line["import_error_code"] for line in _read(target)}  # no note per row
    assert result.summary_lines()[0].startswith(f"Rows: sent {counts['sent']}, invalid")


def test_the_journal_report_shows_chat_ids_local_times_and_no_customer_id_on_replies(tmp_path):
    """From the journal alone: the external chat id (not the conversation's index), every time to
    the second in the import's zone, b24_user_id only where it is the author's (customer rows),
    and a plain negative number as it is while a formula is still escaped; status --rows shows
    chat, time and text without the input."""
    from bulkimport.reporting import status_rows

    history = tmp_path / "h.csv"
    history.write_text(
        "Chat,Client ID,Message ID,Date,Text,Author\n"
        "T-1,c1,-1,2024-03-01 09:00,hello,Ann\n"
        "T-1,c1,=2,2024-03-01 09:05,how can I help?,Olga\n"
        "T-2,c2,3,31.02.2024 10:00,a date that never was,Bob\n",
        encoding="utf-8",
    )
    job = ImportJob(history, sandbox=True, progress=False, operators={"Olga": 5}, timezone="Europe/Moscow")
    result = job.run()
    assert result.summary.counts["sent"] == 2
    target, rows = write_journal_report(result.journal)
    by_row = {line["row"]: line for line in _read(target)}
    assert rows == 3 and by_row["2"]["chat"] == by_row["3"]["chat"] == "T-1" and by_row["4"]["chat"] == "T-2"
    assert by_row["2"]["import_message_id"] == "-1" and by_row["3"]["import_message_id"] == "'=2"
    sent = by_row["2"]["sent_at"]  # when it was sent: to the second, in the import's zone
    assert sent.endswith("+03:00") and len(sent) == len("2026-12-03 21:00:00+03:00"), sent
    assert by_row["2"]["b24_user_id"] != "" and by_row["3"]["b24_user_id"] == ""  # a reply: not its author
    journal = Journal.open(result.journal)
    try:
        listed = status_rows(journal, ["invalid", "sent"]).set_index("row")
    finally:
        journal.close()
    assert listed.loc[4, "chat"] == "T-2" and listed.loc[4, "status"] == "invalid"
    assert listed.loc[4, "text"] == "a date that never was"  # kept for the rows not sent
    assert listed.loc[3, "chat"] == "T-1" and listed.loc[2, "time"] == "2024-03-01 09:00:00"
    report = pd.read_excel(result.report, sheet_name=0, dtype=str, engine="openpyxl").set_index("row")
    assert pd.isna(report.loc["3", "b24_user_id"]) and not pd.isna(report.loc["2", "b24_user_id"])


def test_journal_report_times_follow_the_zone_across_a_daylight_saving_change(tmp_path):
    """Berlin moves from +01:00 to +02:00 at 2024-03-31 01:00 UTC: a row sent a second before and
    one sent at the change show their own offsets (the zone's offsets become SQL, no Python per row)."""
    import sqlite3

    state = tmp_path / "j.db"
    journal = Journal.bind(state, portal="https://acme.bitrix24.ru/rest/", line="1", connector="c",
                           fingerprint="f")
    journal.add_rows([("2", 0, 0, "pending", None, None), ("3", 0, 1, "pending", None, None)])
    change = 1711846800.0  # 2024-03-31T01:00:00Z
    run = journal.start_run(change)
    request = journal.mark_inflight(["2", "3"], run, change)
    updates = [RowUpdate("2", "sent", sent_at=change - 1.5), RowUpdate("3", "sent", sent_at=change)]
    journal.settle(request, updates, change, "answered")
    journal.close()
    con = sqlite3.connect(state)
    con.execute("CREATE TABLE report_meta (key TEXT PRIMARY KEY, value TEXT)")
    con.execute("INSERT INTO report_meta VALUES ('zone', 'Europe/Berlin')")
    con.commit()
    con.close()
    target, _ = write_journal_report(state)
    sent = {line["row"]: line["sent_at"] for line in _read(target)}
    assert sent == {"2": "2024-03-31 01:59:58+01:00", "3": "2024-03-31 03:00:00+02:00"}


def test_the_journal_keeps_the_text_of_rows_not_sent_and_adds_it_when_a_row_stops_being_sent(tmp_path):
    import bulkimport
    from bulkimport.reporting import record_rows, status_rows

    df = pd.DataFrame(
        {"Chat": ["a", "a"], "Client ID": ["1", "1"], "Date": ["2024-01-01 10:00", "2024-01-01 10:01"],
         "Text": ["first message", "second message"]},
        index=pd.RangeIndex(2, 4, name="row"),
    )
    plan = bulkimport.plan(df, bulkimport.Mapping.guess(df).with_options(timezone="Europe/Moscow"))
    journal = Journal.bind(tmp_path / "j.db", portal="https://acme.bitrix24.ru/rest/", line="1",
                           connector="c", fingerprint=plan.fingerprint)
    try:
        journal.add_rows([("2", 0, 0, "sent", None, None), ("3", 0, 1, "pending", None, None)])
        assert record_rows(journal, plan) == 2
        assert record_rows(journal, plan) == 0  # once per plan
        kept = dict(journal.query("SELECT rid, text FROM report_rows"))
        assert kept == {"2": None, "3": "second message"}
        journal.execute("UPDATE rows SET status = 'failed' WHERE rid = '2'")
        assert record_rows(journal, plan) == 1  # a row no longer sent gets its excerpt
        listed = status_rows(journal, ["failed", "pending"]).set_index("row")
    finally:
        journal.close()
    assert listed.loc[2, "text"] == "first message" and listed.loc[3, "chat"] == "a"
    assert listed.loc[2, "time"] == "2024-01-01 10:00:00"  # the message's time, in the import's zone
