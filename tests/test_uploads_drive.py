"""--upload-files: local attachments staged on the sandbox portal's Drive, downloaded by the portal
on receipt with the same bytes and the original names; no token anywhere but the token store."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from bulkimport.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "data_examples"
WHATSAPP_ZIP = EXAMPLES / "whatsapp" / "WhatsApp Chat - Lena Fischer.zip"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX24_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["BITRIX24_TOKEN_FILE"] = str(cwd / "tokens.json")
    return subprocess.run(
        [sys.executable, "-m", "bulkimport", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def received(db: Path) -> tuple[pd.DataFrame, pd.DataFrame, str, int]:
    """The sandbox's downloads, its messages, its access token and how many files its Drive holds."""
    with Sandbox(db=db) as sb:
        files = sb.store.one("SELECT COUNT(*) AS n FROM disk_objects WHERE type = 'file'")
        return sb.store.downloads(), sb.store.messages(), sb.access_token, int(files["n"])


def no_token_anywhere(token: str, folder: Path, proc: subprocess.CompletedProcess[str], db: Path) -> None:
    """The access token is in no output and no file of ``folder`` except the sandbox's own database."""
    assert token not in proc.stdout and token not in proc.stderr
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.startswith(db.name) and path.name != "tokens.json":
            assert token.encode() not in path.read_bytes(), path
    report = pd.read_excel(
        folder / next(p.name for p in folder.iterdir() if p.name.endswith(".report.xlsx")), engine="openpyxl"
    )
    assert not report.astype(str).apply(lambda c: c.str.contains(token, regex=False)).any().any()


def test_a_telegram_export_uploads_its_media_to_drive_and_the_portal_downloads_them(tmp_path):
    export = tmp_path / "ChatExport"
    shutil.copytree(EXAMPLES / "telegram", export)
    proc = cli(
        "run",
        str(export),
        "--sandbox",
        "--no-progress",
        "--operator",
        "Northwind Support=12",
        "--upload-files",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Attachments: 2 local file(s)" in proc.stdout and "2 uploaded" in proc.stdout
    db = tmp_path / "sandbox-ChatExport.db"
    downloads, stored, token, on_drive = received(db)
    assert len(stored) == 9 and on_drive == 2
    local = {p.name: sha(p.read_bytes()) for p in export.rglob("*") if p.is_file() and p.suffix != ".json"}
    assert downloads["status"].tolist() == ["ok", "ok"]
    assert (
        dict(zip(downloads["name"], downloads["sha256"], strict=True)) == local
    )  # original names, same bytes
    assert downloads["url"].str.contains("download.json").all()
    journal = sqlite3.connect(tmp_path / "ChatExport.bulkimport.db")
    statuses = journal.execute("SELECT path, status, file_id FROM uploads ORDER BY path").fetchall()
    assert [s for _, s, _ in statuses] == ["uploaded", "uploaded"] and all(f for _, _, f in statuses)
    report = pd.read_excel(tmp_path / "ChatExport.report.xlsx", engine="openpyxl")
    assert report["import_files"].dropna().str.contains(": uploaded").sum() == 2
    no_token_anywhere(token, tmp_path, proc, db)
    again = cli(
        "run",
        str(export),
        "--sandbox",
        "--no-progress",
        "--operator",
        "Northwind Support=12",
        "--upload-files",
        cwd=tmp_path,
    )
    assert again.returncode == 0 and "Resuming" in again.stdout, again.stdout + again.stderr
    assert received(db)[3] == 2  # nothing uploaded twice


def test_a_whatsapp_zip_uploads_from_inside_the_zip(tmp_path):
    export = tmp_path / WHATSAPP_ZIP.name
    shutil.copy(WHATSAPP_ZIP, export)
    args = ["--operator", "Northwind Support=7", "--timezone", "Europe/Berlin", "--upload-files"]
    proc = cli("run", str(export), "--sandbox", "--no-progress", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    db = tmp_path / f"sandbox-{export.stem}.db"
    downloads, _, token, on_drive = received(db)
    with zipfile.ZipFile(export) as zf:
        inside = {n: sha(zf.read(n)) for n in zf.namelist() if not n.endswith(".txt")}
    assert on_drive == len(inside) == 2
    assert (downloads["status"] == "ok").all()
    # sent (and kept on Drive) under WhatsApp's names: iOS's counter (00000005-) is not part of them
    assert dict(zip(downloads["name"], downloads["sha256"], strict=True)) == {
        n.split("-", 1)[1]: digest for n, digest in inside.items()
    }
    assert "invoice 2291.pdf" in set(downloads["name"])
    assert any(n.endswith(".jpg") for n in downloads["name"])  # an image keeps its extension
    no_token_anywhere(token, tmp_path, proc, db)


def test_a_spreadsheet_of_local_paths_uses_both_upload_flows(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    small, big = media / "small note.txt", media / "big scan.pdf"
    small.write_bytes(b"hello " * 100)
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # above SMALL_FILE: the two-step multipart upload
    table = pd.DataFrame(
        {
            "chat_id": ["c1", "c1"],
            "user_id": ["u1", "u1"],
            "date": ["2024-03-01 10:00", "2024-03-01 10:05"],
            "text": ["see attached", ""],
            "files": ["media/small note.txt", "media/big scan.pdf"],
        }
    )
    table.to_csv(tmp_path / "history.csv", index=False)
    proc = cli("run", "history.csv", "--sandbox", "--no-progress", "--upload-files", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    db = tmp_path / "sandbox-history.db"
    downloads, _, token, on_drive = received(db)
    assert on_drive == 2 and (downloads["status"] == "ok").all()
    got = dict(zip(downloads["name"], zip(downloads["sha256"], downloads["size"], strict=True), strict=True))
    assert got == {p.name: (sha(p.read_bytes()), p.stat().st_size) for p in (small, big)}
    no_token_anywhere(token, tmp_path, proc, db)
    with Sandbox(db=db) as sb:  # the big file went through the upload URL, once
        assert sb.store.one("SELECT COUNT(*) AS n FROM disk_uploads WHERE used IS NOT NULL")["n"] == 1


def test_preflight_says_what_to_change_when_drive_is_not_allowed(tmp_path):
    """A token without the disk scope: one line naming the scope, exit 2, nothing sent."""
    from bulkimport.errors import ConfigError
    from bulkimport.portal.client import Client
    from bulkimport.portal.drive import Drive

    with Sandbox(db=tmp_path / "s.db") as sb:
        token = str(sb.portal.issue_tokens(sb.client_id, "imopenlines,imconnector", 1)["access_token"])
        with pytest.raises(ConfigError, match="add the 'disk' scope") as err:
            Drive(Client(sb.url, token)).storage_root()
        assert token not in str(err.value)
        employee = str(sb.portal.issue_tokens(sb.client_id, "disk", 7)["access_token"])
        with pytest.raises(ConfigError, match="administrator"):
            Drive(Client(sb.url, employee)).storage_root()
