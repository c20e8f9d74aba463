"""Kill -9 during the uploads, then resume: no file is uploaded twice and none is lost."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_uploads_drive import ROOT, cli, received

FILES = 24


def uploaded(journal: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=1)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM uploads WHERE status = 'uploaded'").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow  # a kill -9 drill of ~70 s: run by .ci/run (pytest -m slow)
def test_kill_during_uploads_then_resume_uploads_nothing_twice_and_loses_nothing(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    rows = []
    for i in range(FILES):
        # every fourth file takes the two-step upload; the rest go base64
        (media / f"scan {i:02d}.pdf").write_bytes(os.urandom(2_200_000 if i % 4 == 0 else 40_000 + i))
        rows.append(
            {
                "chat_id": f"c{i % 3}",
                "user_id": f"u{i % 3}",
                "date": f"2024-03-01 10:{i:02d}",
                "text": f"file {i}",
                "files": f"media/scan {i:02d}.pdf",
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "history.csv", index=False)
    args = ["run", "history.csv", "--sandbox", "--no-progress", "--upload-files", "--sandbox-db", "portal.db"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX24_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["BITRIX24_TOKEN_FILE"] = str(tmp_path / "tokens.json")
    first = subprocess.Popen(
        [sys.executable, "-m", "bulkimport", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = tmp_path / "history.csv.bulkimport.db"
    deadline = time.monotonic() + 240
    while uploaded(journal) < 4 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    done_before = uploaded(journal)
    assert 4 <= done_before < FILES, done_before  # killed in the middle of the uploads
    second = cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    downloads, stored, _, on_drive = received(tmp_path / "portal.db")
    assert on_drive == FILES  # no file uploaded twice (a file cut off mid-upload was found and reused)
    assert len(stored) == FILES and (downloads["status"] == "ok").all()
    local = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in media.iterdir()}
    assert dict(zip(downloads["name"], downloads["sha256"], strict=True)) == local  # none lost
    states = (
        sqlite3.connect(journal).execute("SELECT status, COUNT(*) FROM uploads GROUP BY status").fetchall()
    )
    assert sum(n for s, n in states if s in ("uploaded", "reused")) == FILES, states


def test_a_file_saved_on_drive_but_journalled_uploading_is_reused_not_uploaded_again(tmp_path):
    """The kill fell between the portal saving the file and the journal hearing of it."""
    from bulkimport.connector import sandbox_target
    from bulkimport.portal.drive import Drive
    from bulkimport.sandbox import Sandbox
    from bulkimport.sending import uploads

    data = os.urandom(3000)
    (tmp_path / "a.jpg").write_bytes(data)
    with Sandbox(db=tmp_path / "p.db", time_scale=1000) as sb:
        target = sandbox_target(sb)
        drive = Drive(target.client)
        folder = drive.folder(drive.storage_root(), "import")
        name = uploads.drive_name("a.jpg", set())  # the original name, as the first run chose it
        drive.upload(folder, name, lambda: (tmp_path / "a.jpg").open("rb"), len(data))
        table = uploads.UploadTable(tmp_path / "j.db")
        f = uploads.LocalFile("a.jpg", "a.jpg", len(data), ["1"], status="uploading")
        table.put(f, name, folder)
        table.close()
        files = {"a.jpg": uploads.LocalFile("a.jpg", "a.jpg", len(data), ["1"])}
        staged = uploads.stage(
            files,
            target.client,
            tmp_path / "j.db",
            "import",
            lambda rel: (tmp_path / rel).open("rb"),
            max_bytes=1e9,
        )
        assert staged.files["a.jpg"].status == "reused" and not staged.waiting
        n = sb.store.one("SELECT COUNT(*) AS n FROM disk_objects WHERE type = 'file'")["n"]
        assert n == 1
