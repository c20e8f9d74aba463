"""--files-base-url is checked before sending: a few files are fetched through it (real HTTP, a local
http.server) and compared with the local bytes; a wrong base URL is refused, naming the failure."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_uploads_drive import EXAMPLES, cli

from bulkimport.sandbox import Sandbox


@pytest.fixture
def export(tmp_path: Path) -> Path:
    target = tmp_path / "ChatExport"
    shutil.copytree(EXAMPLES / "telegram", target)
    return target


@pytest.fixture
def serve() -> Iterator[object]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(folder: Path) -> str:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


ARGS = ["--sandbox", "--no-progress", "--operator", "Northwind Support=12"]


def test_a_base_url_that_serves_the_export_passes_and_the_portal_gets_the_same_bytes(export, tmp_path, serve):
    base = serve(export)
    proc = cli("run", str(export), *ARGS, "--files-base-url", base, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 file(s) fetched through" in proc.stdout
    with Sandbox(db=tmp_path / "sandbox-ChatExport.db") as sb:
        downloads = sb.store.downloads()
    assert (downloads["status"] == "ok").all() and len(downloads) == 2
    for _, d in downloads.iterrows():
        local = next(export.rglob(d["name"]))
        assert d["sha256"] == hashlib.sha256(local.read_bytes()).hexdigest()


def test_a_base_url_with_nothing_there_is_refused_before_anything_is_sent(export, tmp_path, serve):
    empty = tmp_path / "empty"
    empty.mkdir()
    base = serve(empty)
    proc = cli("run", str(export), *ARGS, "--files-base-url", base + "/tg", cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--files-base-url" in lines[0] and "HTTP 404" in lines[0], proc.stderr
    assert "photos/" in lines[0] or "files/" in lines[0]  # names the file
    assert not (tmp_path / "sandbox-ChatExport.db").exists()  # no portal was even set up


def test_a_base_url_serving_other_bytes_is_refused(export, tmp_path, serve):
    other = tmp_path / "other"
    shutil.copytree(export, other)
    for f in other.rglob("*"):
        if f.is_file() and f.suffix != ".json":
            f.write_bytes(b"not the same file")
    proc = cli("run", str(export), *ARGS, "--files-base-url", serve(other), cwd=tmp_path)
    assert proc.returncode == 2 and "not the same file" in proc.stderr, proc.stdout + proc.stderr


def test_an_unreachable_base_url_is_refused(export, tmp_path):
    proc = cli("run", str(export), *ARGS, "--files-base-url", "http://127.0.0.1:9/x", cwd=tmp_path)
    assert proc.returncode == 2 and "is not reachable" in proc.stderr, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1


def test_a_base_url_sends_telegrams_file_name_with_the_published_path(tmp_path, serve):
    from test_uploads_names import CONTRACT, renamed_export

    export = renamed_export(tmp_path)
    proc = cli("run", str(export), *ARGS, "--files-base-url", serve(export), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with Sandbox(db=tmp_path / "sandbox-ChatExport.db") as sb:
        downloads = sb.store.downloads().set_index("name")
    assert (downloads["status"] == "ok").all()
    contract = downloads.loc[CONTRACT]  # the name sent is the original one, the URL the file's path
    assert contract["url"].endswith("/files/abc_123.pdf")
    assert contract["sha256"] == hashlib.sha256((export / "files" / "abc_123.pdf").read_bytes()).hexdigest()
    assert "photo_1@04-03-2024_12-20-00.jpg" in downloads.index  # a photo keeps the path's name
