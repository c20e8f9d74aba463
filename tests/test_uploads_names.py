"""The name sent is the original one: Telegram's ``file_name`` where it differs from the path's last
part (photos keep the path's name), WhatsApp's name without the iOS counter; Drive keeps the file
under that name too, and a name another file of the folder holds is never overwritten."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
from pathlib import Path

import requests
from test_uploads_drive import EXAMPLES, cli, received, sha

from bulkimport.attachments import original_name
from bulkimport.portal.client import Client
from bulkimport.portal.drive import Drive
from bulkimport.sandbox import Sandbox
from bulkimport.sending import uploads

CONTRACT = "Contract March.pdf"


def renamed_export(tmp_path: Path) -> Path:
    """The example Telegram export, its PDF kept as files/abc_123.pdf, file_name "Contract March.pdf"."""
    export = tmp_path / "ChatExport"
    shutil.copytree(EXAMPLES / "telegram", export)
    (export / "files" / "price list 2024.pdf").rename(export / "files" / "abc_123.pdf")
    data = json.loads((export / "result.json").read_text(encoding="utf-8"))
    for msg in data["messages"]:
        if msg.get("file") == "files/price list 2024.pdf":
            msg["file"], msg["file_name"] = "files/abc_123.pdf", CONTRACT
    (export / "result.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return export


def test_original_name_keeps_the_extension_and_drops_folders():
    assert original_name("Contract March.pdf", "files/abc_123.pdf") == CONTRACT
    assert original_name("Contract March", "files/abc_123.pdf") == CONTRACT  # the path's extension added
    assert original_name(None, "photos/photo_1.jpg") == "photo_1.jpg"  # photos have no file_name
    assert original_name("C:\\Users\\olga\\scan.png", "files/x.png") == "scan.png"
    assert original_name("two\nlines.txt", "files/x.txt") == "two lines.txt"
    assert original_name("  ", "files/x.txt") == "x.txt"


def test_drive_mode_sends_and_stores_telegrams_file_name(tmp_path):
    export = renamed_export(tmp_path)
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
    downloads, _, _, on_drive = received(tmp_path / "sandbox-ChatExport.db")
    got = dict(zip(downloads["name"], downloads["sha256"], strict=True))
    assert got == {
        CONTRACT: sha((export / "files" / "abc_123.pdf").read_bytes()),
        "photo_1@04-03-2024_12-20-00.jpg": sha(next((export / "photos").iterdir()).read_bytes()),
    }
    assert (downloads["status"] == "ok").all() and on_drive == 2
    with Sandbox(db=tmp_path / "sandbox-ChatExport.db") as sb:
        names = {r["name"] for r in sb.store.all("SELECT name FROM disk_objects WHERE type = 'file'")}
    assert names == set(got)  # Drive holds it under the same name, extension kept
    journal = sqlite3.connect(tmp_path / "ChatExport.bulkimport.db")
    assert ("files/abc_123.pdf", CONTRACT) in journal.execute("SELECT path, name FROM uploads").fetchall()


def test_a_name_another_file_holds_is_never_overwritten_and_resuming_keeps_the_names(tmp_path):
    """Two local files called scan.pdf, and a stranger scan.pdf already in the folder."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "scan.pdf").write_bytes(b"first scan " * 50)
    (tmp_path / "b" / "scan.pdf").write_bytes(b"second scan " * 70)
    journal = tmp_path / "journal.db"

    def files() -> dict[str, uploads.LocalFile]:
        return {
            rel: uploads.LocalFile(rel, "scan.pdf", (tmp_path / rel).stat().st_size)
            for rel in ("a/scan.pdf", "b/scan.pdf")
        }

    def opener(rel: str):
        return (tmp_path / rel).open("rb")

    with Sandbox(db=tmp_path / "s.db") as sb:
        client = Client(sb.url, sb.access_token)
        drive = Drive(client)
        folder = drive.folder(drive.storage_root(), "import")
        stranger = drive.upload(
            folder, "SCAN.pdf", lambda: io.BytesIO(b"not ours"), 8
        )  # names are case-blind
        staged = uploads.stage(files(), client, journal, "import", opener, max_bytes=1e9)
        assert {f.status for f in staged.files.values()} == {"uploaded"}
        on_drive = {
            r["name"]: r["id"] for r in sb.store.all("SELECT id, name FROM disk_objects WHERE type = 'file'")
        }
        assert len(on_drive) == 3 and on_drive["SCAN.pdf"] == stranger.id
        for f in staged.files.values():  # each went up whole, under a name of its own
            url = drive.download_urls([f.file_id])[f.file_id]
            assert requests.get(url, timeout=10).content == (tmp_path / f.rel).read_bytes()
        assert (
            requests.get(drive.download_urls([stranger.id])[stranger.id], timeout=10).content == b"not ours"
        )
        names = dict(sqlite3.connect(journal).execute("SELECT path, name FROM uploads").fetchall())
        assert sorted(names.values()) == ["scan (2).pdf", "scan (3).pdf"]
        again = uploads.stage(files(), client, journal, "import", opener, max_bytes=1e9)  # a resumed run
        assert {f.file_id for f in again.files.values()} == {f.file_id for f in staged.files.values()}
        assert sb.store.one("SELECT COUNT(*) AS n FROM disk_objects WHERE type = 'file'")["n"] == 3
        messages = again.resolve(
            {
                "c": (
                    "imconnector.send.messages",
                    {
                        "MESSAGES": [
                            {"message": {"files": [{"url": "local://file/a/scan.pdf", "name": "scan.pdf"}]}}
                        ]
                    },
                )
            }
        )
        sent = messages["c"][1]["MESSAGES"][0]["message"]["files"][0]
        assert sent["name"] == "scan.pdf" and "download" in sent["url"]  # the name sent stays the original
