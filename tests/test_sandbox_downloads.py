"""The portal fetches files[].url of incoming messages: loopback only, recorded per file with size
and sha256."""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import call, msg, register

from bulkimport.sandbox import Sandbox
from bulkimport.sandbox.command import sandbox as sandbox_command

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


class _Files(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(2)
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", "http://example.com/x.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/here":
            self.send_response(302)
            self.send_header("Location", "/pic.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path not in ("/pic.png", "/slow"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)


@pytest.fixture
def files_host() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def send(
    portal: Sandbox, files: list[dict[str, Any]], text: str | None = "see file", i: int = 0
) -> dict[str, Any]:
    m: dict[str, Any] = {"files": files}
    if text is None:
        m["text"] = None
    r = call(
        portal,
        "imconnector.send.messages",
        CONNECTOR="hist_import",
        LINE=1,
        MESSAGES=[
            msg(i, m=m)
            if text is not None
            else {**msg(i), "message": {"id": f"c1-m{i}", "date": 1_700_000_000 + i, "files": files}}
        ],
    )
    assert r.status_code == 200, r.text
    item = r.json()["result"]["DATA"]["RESULT"][0]
    assert item["SUCCESS"] is True, item
    return item


def test_a_reachable_file_is_fetched_and_shows_in_read_back(
    sandbox: Sandbox, connector: str, files_host: str
) -> None:
    item = send(sandbox, [{"url": files_host + "/pic.png", "name": "pic.png"}])
    downloads = sandbox.store.downloads()
    assert len(downloads) == 1
    row = downloads.iloc[0]
    assert (
        row["status"] == "ok" and row["size"] == len(PNG) and row["sha256"] == hashlib.sha256(PNG).hexdigest()
    )
    assert row["message_id"] == "c1-m0" and row["content_type"] == "image/png"
    messages = sandbox.store.messages()
    assert messages["files_fetched"].tolist() == [1] and messages["files_failed"].tolist() == [0]
    chat = item["session"]["CHAT_ID"]
    call(sandbox, "imopenlines.session.join", CHAT_ID=chat)
    page = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}").json()["result"]
    client = next(m for m in page["messages"] if m["author_id"])
    assert len(page["files"]) == 1 and client["params"]["FILE_ID"] == [page["files"][0]["id"]]
    assert page["files"][0]["name"] == "pic.png" and page["files"][0]["size"] == len(PNG)
    assert page["files"][0]["type"] == "image"
    history = call(sandbox, "imopenlines.session.history.get", SESSION_ID=item["session"]["ID"]).json()[
        "result"
    ]
    assert [f["name"] for f in history["files"].values()] == ["pic.png"]


def test_redirects_are_followed_only_on_loopback(sandbox: Sandbox, connector: str, files_host: str) -> None:
    send(sandbox, [{"url": files_host + "/here"}, {"url": files_host + "/away"}])
    statuses = sandbox.store.downloads()["status"].tolist()
    assert statuses == ["ok", "unreachable"]


def test_nothing_but_loopback_is_ever_contacted(
    sandbox: Sandbox, connector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    contacted: list[str] = []
    original = http.client.HTTPConnection.connect

    def spy(self: http.client.HTTPConnection) -> None:
        contacted.append(self.host)
        original(self)

    monkeypatch.setattr(http.client.HTTPConnection, "connect", spy)
    urls = [
        "https://example.com/a.png",
        "http://10.0.0.1/a.png",
        "http://192.168.1.5:8080/x",
        "http://files.internal/x",
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "http://[::ffff:8.8.8.8]/x",
    ]
    send(sandbox, [{"url": u} for u in urls])
    frame = sandbox.store.downloads()
    assert frame["status"].tolist() == ["unreachable"] * len(urls)
    assert contacted == []


def test_unreachable_loopback_errors_and_timeouts(connector: str, files_host: str) -> None:
    with Sandbox(time_scale=100, fetch_timeout=0.5) as portal:
        register(portal)
        started = time.monotonic()
        send(
            portal,
            [
                {"url": "http://127.0.0.1:9/closed.png"},
                {"url": files_host + "/missing"},
                {"url": files_host + "/slow"},
            ],
        )
        assert time.monotonic() - started < 10
        frame = portal.store.downloads()
        assert frame["status"].tolist() == ["unreachable", "error", "unreachable"]
        assert frame["http_status"].tolist()[1] == 404 and frame["error"].tolist()[2] == "TimeoutError"


def test_a_message_whose_only_file_is_unreachable_is_stored_without_it(
    sandbox: Sandbox, connector: str
) -> None:
    item = send(sandbox, [{"url": "https://example.com/lost.jpg", "name": "lost.jpg"}], text=None)
    chat = item["session"]["CHAT_ID"]
    call(sandbox, "imopenlines.session.join", CHAT_ID=chat)
    page = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}").json()["result"]
    client = next(m for m in page["messages"] if m["author_id"])
    assert client["params"] == {"CONNECTOR_MID": ["c1-m0"]} and client["text"] == "" and page["files"] == []
    assert sandbox.store.counts()["failed_downloads"] == 1


def test_the_portal_fetches_its_own_download_url_and_tokens_are_not_recorded(
    sandbox: Sandbox, connector: str
) -> None:
    root = call(sandbox, "disk.storage.getForApp").json()["result"]["ROOT_OBJECT_ID"]
    made = call(
        sandbox,
        "disk.folder.uploadFile",
        id=root,
        data={"NAME": "doc.pdf"},
        fileContent=["doc.pdf", base64.b64encode(PNG).decode()],
    ).json()["result"]
    send(sandbox, [{"url": made["DOWNLOAD_URL"], "name": "doc.pdf"}])
    row = sandbox.store.downloads().iloc[0]
    assert row["status"] == "ok" and row["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert sandbox.access_token not in row["url"] and "auth=***" in row["url"]
    assert sandbox.access_token not in sandbox.store.messages()["files"].iloc[0]
    # once the token is dead the portal can no longer fetch it
    sandbox.advance(3601)
    fresh = sandbox.portal.issue_tokens(sandbox.client_id, "imopenlines,imconnector,im,disk", 1)[
        "access_token"
    ]
    r = call(
        sandbox,
        "imconnector.send.messages",
        token=fresh,
        CONNECTOR="hist_import",
        LINE=1,
        MESSAGES=[msg(1, m={"files": [{"url": made["DOWNLOAD_URL"]}]})],
    )
    assert r.json()["result"]["SUCCESS"] is True
    assert sandbox.store.downloads()["status"].tolist() == ["ok", "error"]
    assert sandbox.store.downloads()["http_status"].tolist()[1] == 401


def test_show_messages_and_downloads_from_the_command_line(tmp_path: Path, files_host: str) -> None:
    db = tmp_path / "portal.db"
    with Sandbox(db=db, time_scale=100) as portal:
        register(portal)
        send(portal, [{"url": files_host + "/pic.png"}, {"url": "https://example.com/x"}])
    runner = CliRunner()
    out = runner.invoke(sandbox_command, ["--db", str(db), "--show", "messages", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert '"files_fetched":1' in out.output.replace(" ", "") and '"files_failed":1' in out.output.replace(
        " ", ""
    )
    out = runner.invoke(sandbox_command, ["--db", str(db), "--show", "downloads", "--format", "csv"])
    assert (
        out.exit_code == 0 and hashlib.sha256(PNG).hexdigest() in out.output and "unreachable" in out.output
    )


def test_update_with_new_files_fetches_them_in_place_of_the_old(
    sandbox: Sandbox, connector: str, files_host: str
) -> None:
    send(sandbox, [{"url": "https://example.com/old.png"}])
    assert sandbox.store.downloads()["status"].tolist() == ["unreachable"]
    r = call(
        sandbox,
        "imconnector.update.messages",
        CONNECTOR="hist_import",
        LINE=1,
        MESSAGES=[
            {
                "user": {"id": "u1"},
                "message": {"id": "c1-m0", "files": [{"url": files_host + "/pic.png"}]},
                "chat": {"id": "c1"},
            }
        ],
    )
    assert r.json()["result"]["SUCCESS"] is True
    frame = sandbox.store.downloads()
    assert frame["status"].tolist() == ["ok"] and frame["size"].tolist() == [len(PNG)]
    assert sandbox.store.messages()["files_fetched"].tolist() == [1]
