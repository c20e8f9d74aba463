"""Drive in the sandbox: the app storage, folders, base64 and two-step uploads, DOWNLOAD_URL."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import call

from bulkimport.sandbox import Sandbox


def ok(r: requests.Response) -> Any:
    assert r.status_code == 200, r.text
    return r.json()["result"]


def error(r: requests.Response, status: int, code: str) -> str:
    assert r.status_code == status and r.json()["error"] == code, r.text
    return str(r.json()["error_description"])


@pytest.fixture
def root(sandbox: Sandbox) -> int:
    return int(ok(call(sandbox, "disk.storage.getForApp"))["ROOT_OBJECT_ID"])


def folder(portal: Sandbox, parent: int, name: str = "import-1") -> int:
    return int(ok(call(portal, "disk.folder.addSubFolder", id=parent, data={"NAME": name}))["ID"])


def upload64(portal: Sandbox, parent: int, name: str, data: bytes, **extra: Any) -> requests.Response:
    return call(
        portal,
        "disk.folder.uploadFile",
        id=parent,
        data={"NAME": name},
        fileContent=[name, base64.b64encode(data).decode()],
        **extra,
    )


def employee(portal: Sandbox, scope: str = "disk") -> str:
    return str(portal.portal.issue_tokens(portal.client_id, scope, 7)["access_token"])


def test_get_for_app_creates_the_storage_once(sandbox: Sandbox) -> None:
    storage = ok(call(sandbox, "disk.storage.getForApp"))
    assert set(storage) == {"ID", "NAME", "CODE", "MODULE_ID", "ENTITY_TYPE", "ENTITY_ID", "ROOT_OBJECT_ID"}
    assert storage["MODULE_ID"] == "disk" and storage["ENTITY_TYPE"] == "restapp"
    assert ok(call(sandbox, "disk.storage.getForApp")) == storage


def test_get_for_app_errors(sandbox: Sandbox) -> None:
    r = requests.post(sandbox.webhook_url + "disk.storage.getForApp", json={}, timeout=30)
    assert error(r, 400, "ACCESS_DENIED") == "Access denied! Application context required"
    error(call(sandbox, "disk.storage.getForApp", token=employee(sandbox)), 400, "ACCESS_DENIED")
    no_disk = sandbox.portal.issue_tokens(sandbox.client_id, "imopenlines,imconnector,im", 1)["access_token"]
    error(call(sandbox, "disk.storage.getForApp", token=no_disk), 403, "insufficient_scope")


def test_add_subfolder_and_its_errors(sandbox: Sandbox, root: int) -> None:
    made = ok(call(sandbox, "disk.folder.addSubFolder", id=root, data={"NAME": "Run 1"}))
    assert made["TYPE"] == "folder" and made["NAME"] == "Run 1" and made["PARENT_ID"] == str(root)
    assert made["REAL_OBJECT_ID"] == made["ID"] and made["DELETED_TYPE"] == 0
    r = call(sandbox, "disk.folder.addSubFolder", id=root, data={"NAME": "run 1"})
    assert error(r, 400, "DISK_OBJ_22000") == "A folder with this name already exists"
    error(call(sandbox, "disk.folder.addSubFolder", id=root, data={}), 400, "ERROR_ARGUMENT")
    error(call(sandbox, "disk.folder.addSubFolder", data={"NAME": "x"}), 400, "ERROR_ARGUMENT")
    r = call(sandbox, "disk.folder.addSubFolder", id=424242, data={"NAME": "x"})
    assert error(r, 400, "ERROR_NOT_FOUND") == "Could not find entity with id `424242`"
    error(
        call(sandbox, "disk.folder.addSubFolder", token=employee(sandbox), id=root, data={"NAME": "y"}),
        400,
        "ACCESS_DENIED",
    )
    r = requests.post(
        sandbox.webhook_url + "disk.folder.addSubFolder", json={"id": root, "data": {"NAME": "z"}}, timeout=30
    )
    error(r, 400, "ACCESS_DENIED")


def test_get_children_pages_filters_and_orders(sandbox: Sandbox, root: int) -> None:
    parent = folder(sandbox, root)
    for i in range(55):
        folder(sandbox, parent, f"f{i:02d}")
    ok(upload64(sandbox, parent, "note.txt", b"hi"))
    r = call(sandbox, "disk.folder.getChildren", id=parent)
    body = r.json()
    assert body["total"] == 56 and body["next"] == 50 and len(body["result"]) == 50
    assert all(isinstance(item["ID"], str) for item in body["result"])
    last = call(sandbox, "disk.folder.getChildren", id=parent, start=50).json()
    assert len(last["result"]) == 6 and "next" not in last
    files = ok(call(sandbox, "disk.folder.getChildren", id=parent, filter={"TYPE": "file"}))
    assert [f["NAME"] for f in files] == ["note.txt"] and files[0]["SIZE"] == "2" and files[0]["DOWNLOAD_URL"]
    named = ok(
        call(sandbox, "disk.folder.getChildren", id=parent, filter={"%NAME": "f5"}, order={"NAME": "DESC"})
    )
    assert [f["NAME"] for f in named] == [f"f{i}" for i in range(54, 49, -1)]
    some = ok(call(sandbox, "disk.folder.getChildren", id=parent, filter={"@NAME": ["f01", "f02", "zz"]}))
    assert sorted(f["NAME"] for f in some) == ["f01", "f02"]
    error(call(sandbox, "disk.folder.getChildren"), 400, "ERROR_ARGUMENT")
    error(call(sandbox, "disk.folder.getChildren", id=999_999), 400, "ERROR_NOT_FOUND")
    error(call(sandbox, "disk.folder.getChildren", id=parent, filter={"BOGUS": 1}), 400, "ERROR_ARGUMENT")
    batch = ok(call(sandbox, "batch", cmd={"a": f"disk.folder.getChildren?id={parent}"}))
    assert batch["result_total"] == {"a": 56} and batch["result_next"] == {"a": 50}


def test_upload_base64_and_download_url_serves_the_bytes(sandbox: Sandbox, root: int) -> None:
    parent = folder(sandbox, root)
    data = os.urandom(3000)
    made = ok(upload64(sandbox, parent, "photo.png", data))
    assert made["TYPE"] == "file" and made["SIZE"] == "3000" and made["NAME"] == "photo.png"
    assert made["DOWNLOAD_URL"].startswith(sandbox.rest_url + "download.json?auth=")
    r = requests.get(made["DOWNLOAD_URL"], timeout=30)
    assert r.status_code == 200 and r.content == data
    got = ok(call(sandbox, "disk.file.get", id=made["ID"]))
    assert {k: got[k] for k in ("ID", "NAME", "SIZE", "PARENT_ID")} == {
        k: made[k] for k in ("ID", "NAME", "SIZE", "PARENT_ID")
    }
    assert requests.get(got["DOWNLOAD_URL"], timeout=30).content == data
    # the bytes are a file next to the database, not held in memory
    stored = Path(sandbox.db_path + ".files") / str(made["ID"])
    assert stored.read_bytes() == data


def test_upload_errors(sandbox: Sandbox, root: int) -> None:
    parent = folder(sandbox, root)
    r = call(
        sandbox, "disk.folder.uploadFile", id=parent, data={"NAME": "a.txt"}, fileContent=["a.txt", "@@@"]
    )
    assert error(r, 400, "ERROR_COULD_NOT_SAVE_FILE") == "Could not save file"
    r = call(sandbox, "disk.folder.uploadFile", id=parent, fileContent=["a.txt", "aGk="])
    error(r, 400, "DISK_BASE_SERVICE_22001")
    error(call(sandbox, "disk.folder.uploadFile", fileContent=["a.txt", "aGk="]), 400, "ERROR_ARGUMENT")
    error(
        call(sandbox, "disk.folder.uploadFile", id=31337, data={"NAME": "a"}, fileContent=["a", "aGk="]),
        400,
        "ERROR_NOT_FOUND",
    )
    ok(upload64(sandbox, parent, "a.txt", b"one"))
    error(upload64(sandbox, parent, "A.TXT", b"two"), 400, "DISK_OBJ_22000")
    assert ok(upload64(sandbox, parent, "a.txt", b"two", generateUniqueName=True))["NAME"] == "a (1).txt"
    assert ok(upload64(sandbox, parent, "a.txt", b"three", generateUniqueName=True))["NAME"] == "a (2).txt"
    error(
        call(
            sandbox,
            "disk.folder.uploadFile",
            token=employee(sandbox),
            id=parent,
            data={"NAME": "b"},
            fileContent=["b", "aGk="],
        ),
        400,
        "ACCESS_DENIED",
    )
    no_disk = sandbox.portal.issue_tokens(sandbox.client_id, "imopenlines,im", 1)["access_token"]
    error(call(sandbox, "disk.folder.uploadFile", token=no_disk, id=parent), 403, "insufficient_scope")


def test_disk_quota_refuses_to_save() -> None:
    with Sandbox(time_scale=100, disk_quota=1000) as portal:
        root = int(ok(call(portal, "disk.storage.getForApp"))["ROOT_OBJECT_ID"])
        ok(upload64(portal, root, "a.bin", b"x" * 900))
        error(upload64(portal, root, "b.bin", b"x" * 200), 400, "ERROR_COULD_NOT_SAVE_FILE")
        step = ok(call(portal, "disk.folder.uploadFile", id=root))
        r = requests.post(step["uploadUrl"], files={"file": ("c.bin", b"x" * 200)}, timeout=30)
        error(r, 400, "ERROR_COULD_NOT_SAVE_FILE")
        assert portal.store.counts()["disk_files"] == 1
        assert [p.name for p in Path(portal.db_path + ".files").iterdir()] != []
        assert not [p for p in Path(portal.db_path + ".files").iterdir() if p.suffix == ".part"]


def test_two_step_upload(sandbox: Sandbox, root: int) -> None:
    parent = folder(sandbox, root)
    step = ok(call(sandbox, "disk.folder.uploadFile", id=parent))
    assert step["field"] == "file" and step["uploadUrl"].startswith(sandbox.rest_url + "upload.json?auth=")
    data = os.urandom(200_000)
    r = requests.post(
        step["uploadUrl"],
        files={"file": ("scan.pdf", data, "application/pdf")},
        data={"other": "field"},
        timeout=30,
    )
    made = ok(r)
    assert made["NAME"] == "scan.pdf" and made["SIZE"] == str(len(data)) and "time" in r.json()
    assert requests.get(made["DOWNLOAD_URL"], timeout=30).content == data
    # the URL is spent once a file went through it
    again = requests.post(step["uploadUrl"], files={"file": ("scan2.pdf", b"x")}, timeout=30)
    error(again, 400, "ACCESS_DENIED")
    # data.NAME given in step one names the file; the part must be called as `field` says
    named = ok(call(sandbox, "disk.folder.uploadFile", id=parent, data={"NAME": "chosen.bin"}))
    wrong = requests.post(named["uploadUrl"], files={"upload": ("x.bin", b"abc")}, timeout=30)
    error(wrong, 400, "ERROR_COULD_NOT_SAVE_FILE")
    assert (
        ok(requests.post(named["uploadUrl"], files={"file": ("x.bin", b"abc")}, timeout=30))["NAME"]
        == "chosen.bin"
    )


def chunked_body(boundary: str, data_chunks: Iterator[bytes]) -> Iterator[bytes]:
    yield (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield from data_chunks
    yield f"\r\n--{boundary}--\r\n".encode()


def test_large_streamed_chunked_upload(sandbox: Sandbox, root: int) -> None:
    step = ok(call(sandbox, "disk.folder.uploadFile", id=root))
    digest = hashlib.sha256()
    boundary = "sandbox-boundary-42"
    # almost-delimiters inside the data, one of them across the 64 KiB read boundary
    near = b"\r\n--sandbox-boundary-4"
    block = bytearray(os.urandom(1 << 20))
    block[100 : 100 + len(near)] = near
    block[(1 << 16) - 5 : (1 << 16) - 5 + len(near)] = near
    block = bytes(block)

    def data() -> Iterator[bytes]:
        for _ in range(12):  # 12 MiB, sent with Transfer-Encoding: chunked
            digest.update(block)
            yield block

    r = requests.post(
        step["uploadUrl"],
        data=chunked_body(boundary, data()),
        timeout=60,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    made = ok(r)
    assert made["SIZE"] == str(12 << 20)
    got = requests.get(made["DOWNLOAD_URL"], timeout=60, stream=True)
    check = hashlib.sha256()
    for piece in got.iter_content(1 << 16):
        check.update(piece)
    assert check.hexdigest() == digest.hexdigest()


def test_truncated_upload_saves_nothing(sandbox: Sandbox, root: int) -> None:
    step = ok(call(sandbox, "disk.folder.uploadFile", id=root))
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="t.bin"\r\n\r\nno end'
    r = requests.post(
        step["uploadUrl"], data=body, headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=30
    )
    error(r, 400, "ERROR_COULD_NOT_SAVE_FILE")
    r = requests.post(step["uploadUrl"], data=b"plain", headers={"Content-Type": "text/plain"}, timeout=30)
    error(r, 400, "ERROR_COULD_NOT_SAVE_FILE")
    assert sandbox.store.counts()["disk_files"] == 0


def test_urls_die_with_their_token(sandbox: Sandbox, root: int) -> None:
    made = ok(upload64(sandbox, root, "a.txt", b"abc"))
    step = ok(call(sandbox, "disk.folder.uploadFile", id=root))
    assert requests.get(made["DOWNLOAD_URL"], timeout=30).content == b"abc"
    sandbox.advance(3601)  # the access token in both URLs expires
    r = requests.get(made["DOWNLOAD_URL"], timeout=30)
    assert r.status_code == 401 and r.json()["error"] == "expired_token" and r.content != b"abc"
    r = requests.post(step["uploadUrl"], files={"file": ("b.txt", b"x")}, timeout=30)
    assert r.status_code == 401 and r.json()["error"] == "expired_token"


def test_download_url_cannot_be_forged(sandbox: Sandbox, root: int) -> None:
    one = ok(upload64(sandbox, root, "a.txt", b"secret a"))
    two = ok(upload64(sandbox, root, "b.txt", b"secret b"))
    token_one = one["DOWNLOAD_URL"].split("&token=")[1]
    forged = two["DOWNLOAD_URL"].split("&token=")[0] + "&token=" + token_one
    assert requests.get(forged, timeout=30).content == b"secret a"  # same token: a valid URL of file one
    other = sandbox.portal.issue_tokens(sandbox.client_id, "disk", 1)["access_token"]
    stolen = one["DOWNLOAD_URL"].replace(sandbox.access_token, other)
    error(requests.get(stolen, timeout=30), 400, "ACCESS_DENIED")
    bad = one["DOWNLOAD_URL"].split("&token=")[0] + "&token=disk%7Cxx%7Cyy"
    error(requests.get(bad, timeout=30), 400, "ACCESS_DENIED")
    error(
        requests.get(sandbox.rest_url + "download.json?auth=nope&token=x", timeout=30), 401, "NO_AUTH_FOUND"
    )


def test_file_get_errors(sandbox: Sandbox, root: int) -> None:
    error(call(sandbox, "disk.file.get"), 400, "ERROR_ARGUMENT")
    error(call(sandbox, "disk.file.get", id=root), 400, "ERROR_NOT_FOUND")  # a folder is no file
    error(call(sandbox, "disk.file.get", id=777_777), 400, "ERROR_NOT_FOUND")
    made = ok(upload64(sandbox, root, "a.txt", b"abc"))
    reader = employee(sandbox)
    assert ok(call(sandbox, "disk.file.get", token=reader, id=made["ID"]))["NAME"] == "a.txt"


def test_disk_calls_cost_operating_time(sandbox: Sandbox, root: int) -> None:
    r = call(sandbox, "disk.folder.getChildren", id=root)
    assert r.json()["time"]["operating"] >= 0.7
    step = ok(call(sandbox, "disk.folder.uploadFile", id=root))
    r = requests.post(step["uploadUrl"], files={"file": ("a.bin", b"1")}, timeout=30)
    assert r.json()["time"]["processing"] >= 0.7 and r.json()["time"]["operating"] >= 0.7 * 2
