"""Uploads in the ETA and the progress: the plan, a dry run and a resumed run count the upload
requests in the bucket and the bytes at the stated assumed upload speed (a resumed run only the files
not on Drive yet); the byte bar moves while a large file goes up, not only when it is done."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from test_uploads_drive import cli

from bulkimport.job import ImportJob
from bulkimport.portal.client import Client
from bulkimport.portal.drive import SMALL_FILE, Drive
from bulkimport.sandbox import Sandbox
from bulkimport.sending import uploads

BIG = 3 * 1024 * 1024 + 5  # above SMALL_FILE: the two-step upload (two requests)


def history(tmp_path: Path, *, with_big: bool = True) -> None:
    """Three rows with local files: two small ones, and a big one unless ``with_big`` is false."""
    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    (media / "a.png").write_bytes(b"\x89PNG" + b"a" * 20_000)
    (media / "b.txt").write_bytes(b"b" * 30_000)
    if with_big:
        (media / "big.pdf").write_bytes(os.urandom(BIG))
    pd.DataFrame(
        {
            "chat_id": ["c1", "c1", "c2"],
            "user_id": ["u1", "u1", "u2"],
            "date": ["2024-03-01 10:00", "2024-03-01 10:05", "2024-03-01 10:01"],
            "text": ["one", "two", "three"],
            "files": ["media/a.png", "media/big.pdf", "media/b.txt"],
        }
    ).to_csv(tmp_path / "history.csv", index=False)


def test_the_estimate_counts_upload_requests_and_bytes_at_the_assumed_speed(tmp_path):
    history(tmp_path)
    job = ImportJob(tmp_path / "history.csv", upload_files=True, keep_open=True)
    messages_only = job.plan().estimate(job.limits)
    found = job.estimate()
    sizes = [20_004, 30_000, BIG]
    assert (
        sorted(
            f.size for f in uploads.local_files(job.plan(), lambda r: (tmp_path / r).stat().st_size).values()
        )
        == sizes
    )
    # storage + folder, one uploadFile per small file, two for the big one, fresh links per send request
    expected = 2 + 1 + 1 + 2 + min(messages_only.requests, 3)
    assert found.requests == messages_only.requests + expected
    wire = 4 * -(-20_004 // 3) + 4 * -(-30_000 // 3) + BIG
    assert found.seconds >= messages_only.seconds + wire / uploads.ASSUMED_UPLOAD_BYTES_PER_SECOND - 1e-9
    text = str(found)
    assert "uploads first: 3 file(s), 3.2 MB" in text and "assumed upload speed of 2 MB/s" in text
    assert SMALL_FILE < BIG


def test_a_dry_run_prints_the_eta_with_the_uploads(tmp_path):
    history(tmp_path)
    proc = cli("run", "history.csv", "--upload-files", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("Estimate"))
    assert "uploads first: 3 file(s)" in line and "assumed upload speed of 2 MB/s" in line, line


def test_a_resumed_run_counts_only_the_files_not_on_drive_yet(tmp_path):
    history(tmp_path, with_big=False)  # big.pdf is missing: under skip its row waits, the rest go
    args = ["run", "history.csv", "--sandbox", "--no-progress", "--upload-files", "--missing-files", "skip"]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    (tmp_path / "media" / "big.pdf").write_bytes(os.urandom(BIG))
    again = cli(*args, "--dry-run", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    resumed = next(x for x in again.stdout.splitlines() if x.startswith("Resuming"))
    assert "uploads first: 1 file(s), 3.1 MB" in resumed, resumed  # a.png and b.txt are on Drive
    job = ImportJob(tmp_path / "history.csv", upload_files=True, missing_files="skip", sandbox=True)
    left = job.resume()
    assert left is not None and left.to_go == 1
    base = job.plan().estimate(job.limits, remaining=[1, 0])
    assert left.estimate.requests == base.requests + 2 + 2 + 1  # setup, the big file's two, one link request


def test_the_byte_bar_moves_while_a_large_file_goes_up(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 123)
    (tmp_path / "big.bin").write_bytes(data)
    heard: list[int] = []
    with Sandbox(db=tmp_path / "s.db") as sb:
        drive = Drive(Client(sb.url, sb.access_token))
        folder = drive.folder(drive.storage_root(), "bar")
        drive.upload(folder, "big.bin", lambda: (tmp_path / "big.bin").open("rb"), len(data), heard.append)
    assert sum(heard) == len(data)
    assert len(heard) >= 3 and max(heard) <= (1 << 20) + 65536  # about every MB, not once at the end


def test_the_upload_bar_follows_the_jobs_progress_choice():
    from bulkimport.staging import _bar

    bar = _bar(SimpleNamespace(progress=True), 1000)
    try:
        assert bar is not None and bar.unit == "B" and bar.total == 1000
    finally:
        bar.close()
    assert _bar(SimpleNamespace(progress=False), 1000) is None
    collector = SimpleNamespace(start=None, update=None, waiting=None, close=None)
    assert _bar(SimpleNamespace(progress=collector), 1000) is None  # the caller's collector, no second bar
