"""Rules for every local attachment: a missing file is a row warning with its path, and
--missing-files note|skip|fail decides what the row does; files over --max-file-size are reported."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pandas as pd
from test_uploads_drive import EXAMPLES, WHATSAPP_ZIP, cli, received

from bulkimport.job import ImportJob


def history(tmp_path: Path) -> None:
    """Two conversations; c1's first row names a file that is not there."""
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "here.png").write_bytes(b"\x89PNG" + b"x" * 5000)
    pd.DataFrame(
        {
            "chat_id": ["c1", "c1", "c2"],
            "user_id": ["u1", "u1", "u2"],
            "date": ["2024-03-01 10:00", "2024-03-01 10:05", "2024-03-01 10:01"],
            "text": ["the contract", "and later", "a picture"],
            "files": ["media/gone.pdf", "", "media/here.png"],
        }
    ).to_csv(tmp_path / "history.csv", index=False)


def report(tmp_path: Path) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "history.report.csv")


RUN = ["run", "history.csv", "--sandbox", "--no-progress", "--upload-files", "--report", "history.report.csv"]


def test_note_sends_the_text_with_a_note_and_warns_with_the_path(tmp_path):
    history(tmp_path)
    proc = cli(*RUN, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = report(tmp_path)
    assert (rows["import_status"] == "sent").all()
    first = rows.iloc[0]
    assert "file-missing" in first["import_warnings"]
    _, stored, _, on_drive = received(tmp_path / "sandbox-history.db")
    assert on_drive == 1
    texts = stored.sort_values("message_id")["text"].tolist()
    assert any("(file gone.pdf is missing)" in t for t in texts)
    from bulkimport.job import ImportJob

    failures = ImportJob(tmp_path / "history.csv", upload_files=True, sandbox=True).plan().failures
    warning = failures[failures["code"] == "file-missing"]
    assert warning["value"].tolist() == ["media/gone.pdf"] and warning["level"].tolist() == ["warning"]


def test_skip_lets_the_row_wait_pending_until_the_file_is_back(tmp_path):
    history(tmp_path)
    proc = cli(*RUN, "--missing-files", "skip", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = report(tmp_path).set_index("text")
    assert rows.loc["the contract", "import_status"] == "pending"
    assert rows.loc["the contract", "import_error_code"] == "file-missing"
    assert rows.loc["and later", "import_status"] == "pending"  # its conversation keeps its order
    assert rows.loc["a picture", "import_status"] == "sent"
    resume = next(line for line in proc.stdout.splitlines() if line.startswith("Resume"))
    assert "--upload-files --missing-files skip" in resume  # the command that resumes keeps the options
    (tmp_path / "media" / "gone.pdf").write_bytes(b"%PDF-1.4 contract")
    again = cli(*RUN, "--missing-files", "skip", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (report(tmp_path)["import_status"] == "sent").all()
    downloads, _, _, on_drive = received(tmp_path / "sandbox-history.db")
    assert on_drive == 2 and sorted(downloads["name"]) == ["gone.pdf", "here.png"]


def test_fail_makes_the_row_invalid_naming_the_path(tmp_path):
    history(tmp_path)
    proc = cli(*RUN, "--missing-files", "fail", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    rows = report(tmp_path).set_index("text")
    assert rows.loc["the contract", "import_status"] == "invalid"
    assert rows.loc["the contract", "import_error_code"] == "file-missing-fail"
    assert rows.loc["the contract", "import_error"].endswith(": media/gone.pdf")
    assert rows.loc["a picture", "import_status"] == "sent"
    assert rows.loc["and later", "import_status"] == "sent"  # an invalid row does not hold its chat


def test_a_file_over_the_size_limit_is_reported_not_uploaded(tmp_path):
    history(tmp_path)
    (tmp_path / "media" / "gone.pdf").write_bytes(b"small")
    proc = cli(*RUN, "--max-file-size", "0.001", cwd=tmp_path)  # 1 KB: here.png (5 KB) is over
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = report(tmp_path).set_index("text")
    assert "file-too-large" in rows.loc["a picture", "import_warnings"]
    downloads, _, _, on_drive = received(tmp_path / "sandbox-history.db")
    assert on_drive == 1 and downloads["name"].tolist() == ["gone.pdf"]


def test_an_export_with_a_missing_file_under_fail_marks_that_row_and_sends_the_rest(tmp_path):
    export = tmp_path / "ChatExport"
    shutil.copytree(EXAMPLES / "telegram", export)
    photo = next((export / "photos").iterdir())
    photo.unlink()
    proc = cli(
        "run",
        str(export),
        "--sandbox",
        "--no-progress",
        "--operator",
        "Northwind Support=12",
        "--upload-files",
        "--missing-files",
        "fail",
        "--report",
        "r.csv",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # rows are left: the exit status says so
    rows = pd.read_csv(tmp_path / "r.csv").set_index("row")
    bad = rows[rows["import_status"] == "invalid"]
    assert len(bad) == 1 and bad["import_error_code"].tolist() == ["file-missing-fail"]
    assert bad["import_error"].iloc[0].endswith(f": photos/{photo.name}")  # the code's message names the path
    assert (rows.drop(bad.index)["import_status"] == "sent").all() and len(rows) == 9
    _, stored, _, on_drive = received(tmp_path / "sandbox-ChatExport.db")
    assert len(stored) == 8 and on_drive == 1  # the others went, with the file that is there


def test_a_whatsapp_zip_missing_a_file_follows_the_same_three_choices(tmp_path):
    """fail: the row is invalid (code, path); note: sent with the reader's note; skip: it waits."""
    export = tmp_path / WHATSAPP_ZIP.name
    with zipfile.ZipFile(WHATSAPP_ZIP) as zin, zipfile.ZipFile(export, "w") as zout:
        for item in zin.infolist():
            if not item.filename.endswith(".pdf"):
                zout.writestr(item, zin.read(item))
    kw = {"operators": {"Northwind Support": 7}, "timezone": "Europe/Berlin", "upload_files": True}
    failed = ImportJob(export, missing_files="fail", **kw).plan()
    errors = failed.failures[failed.failures["level"] == "error"]
    assert errors[["code", "value"]].values.tolist() == [["file-missing-fail", "00000005-invoice 2291.pdf"]]
    assert errors["message"].iloc[0].endswith(": 00000005-invoice 2291.pdf")
    assert list(failed.invalid_rows) == errors["row"].tolist() and failed.counts["valid"] == 5
    noted = ImportJob(export, missing_files="note", **kw).plan()
    assert noted.counts["invalid"] == 0 and noted.counts["valid"] == 6
    row = errors["row"].iloc[0]
    text = noted.canonical.loc[row, "message.text"]
    assert text.endswith("(attachment 00000005-invoice 2291.pdf is missing from the export)")
    warned = noted.failures[noted.failures["row"] == row]
    assert warned["code"].tolist() == ["attachment-missing"] and warned["level"].tolist() == ["warning"]
    skipped = ImportJob(export, missing_files="skip", **kw)
    from bulkimport.staging import waiting_rows

    assert skipped.plan().counts["valid"] == 6
    assert {code for code, _ in waiting_rows(skipped, skipped.plan()).values()} == {"attachment-missing"}
