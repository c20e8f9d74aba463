"""Drive (reference §2.1; official pages ``disk.storage.getForApp``, ``disk.folder.addSubFolder``,
``disk.folder.getChildren``, ``disk.folder.uploadFile``, ``disk.file.get``): the application's
storage, folders, files, the two-step upload URL and the ``DOWNLOAD_URL`` the portal serves.

File bytes live in files next to the database (``Config.files_dir``), one per file object; uploads
stream into them. ``DOWNLOAD_URL`` and ``uploadUrl`` carry the caller's access token (as the
documentation's examples do) and a signed ``token=disk|…``; they work while that token lives.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, quote, urlencode

from . import chatlog
from .multipart import Body, BodyError, save_part
from .portal import (
    ApiError,
    Caller,
    CutOff,
    Paged,
    Portal,
    Reply,
    Work,
    _int,
    _iso,
    _truthy,
    error_reply,
    html_reply,
    method,
)

STORAGE_ID_FLOOR, OBJECT_ID_FLOOR, FILE_ID_OFFSET = 1300, 8900, 24000
PAGE = 50
UPLOAD_METHOD = "disk.folder.uploadfile"
UPLOAD_FIELD = "file"
NOT_SAVED = ("ERROR_COULD_NOT_SAVE_FILE", "Could not save file")
_FILTER_FIELDS = {
    "ID": "id",
    "NAME": "name",
    "TYPE": "type",
    "PARENT_ID": "parent",
    "STORAGE_ID": "storage",
    "SIZE": "size",
    "CREATE_TIME": "created",
    "UPDATE_TIME": "updated",
    "CREATED_BY": "created_by",
}
_PREFIXES = (">=", "<=", "!@", "!=", "=%", "%=", ">", "<", "@", "%", "!", "=")


def _denied() -> ApiError:
    return ApiError(400, "ACCESS_DENIED", "Access denied")


def _not_found(value: Any) -> ApiError:
    return ApiError(400, "ERROR_NOT_FOUND", f"Could not find entity with id `{value}`")


def _argument(n: int) -> ApiError:
    return ApiError(400, "ERROR_ARGUMENT", f"Invalid value of parameter {{Parameter #{n}}}")


# ----------------------------------------------------------------------------- storage and objects
def _secret(portal: Portal) -> bytes:
    return portal._meta_or("disk_secret", lambda: secrets.token_hex(32)).encode()


def _sign(portal: Portal, kind: str, payload: str, auth: str) -> str:
    """``disk|<payload, base64>|<signature>``: the payload signed for one access token."""
    mac = hmac.new(_secret(portal), f"{kind}|{payload}|{auth}".encode(), hashlib.sha256).hexdigest()
    return f"disk|{base64.urlsafe_b64encode(payload.encode()).decode()}|{mac}"


def _unsign(portal: Portal, kind: str, token: Any, auth: str) -> dict[str, str] | None:
    if not isinstance(token, str) or token.count("|") != 2 or not token.startswith("disk|"):
        return None
    _, raw, mac = token.split("|")
    try:
        payload = base64.urlsafe_b64decode(raw.encode()).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    want = hmac.new(_secret(portal), f"{kind}|{payload}|{auth}".encode(), hashlib.sha256).hexdigest()
    return dict(parse_qsl(payload)) if hmac.compare_digest(want, mac) else None


def _storage(portal: Portal, caller: Caller, create: bool) -> Any:
    """The application's storage (created on first use by getForApp)."""
    row = portal.store.one("SELECT * FROM disk_storages WHERE app = ?", (caller.app,))
    if row is not None or not create:
        return row
    now = portal.clock.now()
    with portal.store.transaction() as db:
        storage = portal.store.insert_next("disk_storages", STORAGE_ID_FLOOR, (caller.app, 0, now))
        root = portal.store.insert_next(
            "disk_objects",
            OBJECT_ID_FLOOR,
            (storage, None, "folder", caller.app, None, None, now, now, caller.user_id),
        )
        db.execute("UPDATE disk_storages SET root = ? WHERE id = ?", (root, storage))
    return portal.store.one("SELECT * FROM disk_storages WHERE id = ?", (storage,))


def _object(portal: Portal, caller: Caller, value: Any, kind: str, write: bool = False) -> Any:
    """A folder or file of the caller's application storage, or the documented error.

    unknown: rights inside an application storage; the sandbox lets the application's users read
    it, only the administrator write to it, and no webhook (not the application's context) near it.
    """
    object_id = _int(value)
    row = (
        None
        if object_id is None
        else portal.store.one(
            "SELECT o.*, s.app FROM disk_objects o JOIN disk_storages s ON s.id = o.storage WHERE o.id = ?",
            (object_id,),
        )
    )
    if row is None or row["type"] != kind:
        raise _not_found(value)
    if caller.kind != "oauth" or row["app"] != caller.app:
        raise _denied()
    if write and caller.user_id != chatlog.ADMIN_USER:
        raise _denied()
    return row


def _path(portal: Portal, row: Any) -> str:
    names: list[str] = []
    while row is not None and row["parent"] is not None:
        names.append(str(row["name"]))
        row = portal.store.one("SELECT * FROM disk_objects WHERE id = ?", (row["parent"],))
    return "/".join(reversed(names))


def object_view(portal: Portal, caller: Caller, row: Any, strings: bool = False) -> dict[str, Any]:
    """A folder or file object as the Drive methods return it (``strings``: getChildren's all-text ids)."""

    def n(value: Any) -> Any:
        return None if value is None else (str(value) if strings else int(value))

    out: dict[str, Any] = {
        "ID": n(row["id"]),
        "NAME": row["name"],
        "CODE": None,
        "STORAGE_ID": str(row["storage"]),
        "TYPE": row["type"],
    }
    if row["type"] == "folder":
        out["REAL_OBJECT_ID"] = n(row["id"])
    out.update({"PARENT_ID": None if row["parent"] is None else str(row["parent"]), "DELETED_TYPE": n(0)})
    if row["type"] == "file":
        out.update(
            {
                "GLOBAL_CONTENT_VERSION": n(1),
                "FILE_ID": n(int(row["id"]) + FILE_ID_OFFSET),
                "SIZE": str(row["size"]),
            }
        )
    out.update(
        {
            "CREATE_TIME": _iso(row["created"]),
            "UPDATE_TIME": _iso(row["updated"]),
            "DELETE_TIME": None,
            "CREATED_BY": str(row["created_by"]),
            "UPDATED_BY": str(row["created_by"]),
            "DELETED_BY": "0" if strings else None,
        }
    )
    kind = "file" if row["type"] == "file" else "path"
    if row["type"] == "file" and caller.token:
        token = _sign(portal, "download", f"id={row['id']}&_={secrets.token_hex(8)}", caller.token)
        out["DOWNLOAD_URL"] = (
            f"{portal.rest_url}download.json?auth={caller.token}&token={quote(token, safe='')}"
        )
    # DETAIL_URL opens the object in the portal's interface, which the sandbox does not have.
    out["DETAIL_URL"] = (
        f"{portal.base_url}/company/personal/user/{row['created_by']}/disk/{kind}/{_path(portal, row)}"
    )
    return out


# ----------------------------------------------------------------------------- REST methods
@method("disk.storage.getforapp", scope="disk")
def _get_for_app(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    """The application's storage; created when it does not exist (administrator, application only)."""
    if caller.kind != "oauth":
        raise ApiError(400, "ACCESS_DENIED", "Access denied! Application context required")
    if caller.user_id != chatlog.ADMIN_USER:  # unknown: the error a non-administrator gets
        raise _denied()
    row = _storage(portal, caller, create=True)
    return {
        "ID": str(row["id"]),
        "NAME": caller.app,
        "CODE": None,
        "MODULE_ID": "disk",
        "ENTITY_TYPE": "restapp",
        "ENTITY_ID": "1",
        "ROOT_OBJECT_ID": str(row["root"]),
    }


def _taken(portal: Portal, folder: int, name: str) -> bool:
    """Names are unique in a folder, case-insensitively, across files and folders."""
    return (
        portal.store.one(
            "SELECT 1 FROM disk_objects WHERE parent = ? AND lower(name) = lower(?)", (folder, name)
        )
        is not None
    )


def _name(params: dict[str, Any]) -> str | None:
    data = params.get("data")
    value = data.get("NAME") if isinstance(data, dict) else None
    return str(value).strip() if value is not None and str(value).strip() else None


@method("disk.folder.addsubfolder", scope="disk")
def _add_subfolder(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    """A new folder in folder ``id`` (``data.NAME``); an existing name → DISK_OBJ_22000."""
    if params.get("id") in (None, ""):
        raise _argument(0)  # unknown: the page documents only the missing NAME
    parent = _object(portal, caller, params["id"], "folder", write=True)
    name = _name(params)
    if name is None:
        raise _argument(1)
    if _taken(portal, int(parent["id"]), name):
        raise ApiError(400, "DISK_OBJ_22000", "A folder with this name already exists")
    now = portal.clock.now()
    with portal.store.transaction():
        new = portal.store.insert_next(
            "disk_objects",
            OBJECT_ID_FLOOR,
            (parent["storage"], parent["id"], "folder", name, None, None, now, now, caller.user_id),
        )
    return object_view(portal, caller, portal.store.one("SELECT * FROM disk_objects WHERE id = ?", (new,)))


def _filter_sql(raw: Any) -> tuple[str, list[Any]]:
    """getChildren's ``filter`` (prefixes >= > <= < @ !@ % =% %= = != !) as SQL on known fields."""
    if raw in (None, "", []):
        return "", []
    if not isinstance(raw, dict):
        raise _argument(1)
    sql, args = "", []
    for key, value in raw.items():
        key = str(key)
        prefix = next((p for p in _PREFIXES if key.startswith(p)), "")
        column = _FILTER_FIELDS.get(key[len(prefix) :].upper())
        if column is None:  # unknown: an unknown field; the sandbox refuses it rather than ignore it
            raise _argument(1)
        values = (
            list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
        )
        if column in ("created", "updated") and not isinstance(value, list | dict):
            from datetime import datetime

            try:
                values = [datetime.fromisoformat(str(value)).timestamp()]
            except ValueError:
                raise _argument(1) from None
        if prefix in ("@", "!@"):
            marks = ",".join("?" * len(values)) or "NULL"
            sql += f" AND {column} {'NOT ' if prefix == '!@' else ''}IN ({marks})"
            args += values
        elif prefix in ("%", "=%", "%="):
            sql += f" AND {column} LIKE ?"
            args.append(f"%{values[0]}%" if prefix == "%" else str(values[0]))
        else:
            op = {">=": ">=", "<=": "<=", ">": ">", "<": "<", "!": "!=", "!=": "!=", "=": "=", "": "="}[
                prefix
            ]
            sql += f" AND {column} {op} ?"
            args.append(values[0] if values else None)
    return sql, args


@method("disk.folder.getchildren", scope="disk")
def _get_children(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    """The folder's files and folders, 50 a page (``start``), with ``total`` and ``next``."""
    if params.get("id") in (None, ""):
        raise _argument(1)
    folder = _object(portal, caller, params["id"], "folder")
    where, args = _filter_sql(params.get("filter"))
    order = " ORDER BY id"
    if isinstance(params.get("order"), dict) and params["order"]:
        parts = []
        for key, direction in params["order"].items():
            column = _FILTER_FIELDS.get(str(key).upper())
            if column is None or str(direction).upper() not in ("ASC", "DESC"):
                raise _argument(1)
            parts.append(f"{column} {str(direction).upper()}")
        order = " ORDER BY " + ", ".join(parts) + ", id"
    start = max(_int(params.get("start")) or 0, 0)
    rows = portal.store.all(
        f"SELECT * FROM disk_objects WHERE parent = ?{where}{order}",  # noqa: S608
        (folder["id"], *args),
    )
    page = rows[start : start + PAGE]
    following = start + PAGE if start + PAGE < len(rows) else None
    return Paged([object_view(portal, caller, r, strings=True) for r in page], len(rows), following)


@method("disk.file.get", scope="disk")
def _file_get(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    """A file object (with a fresh DOWNLOAD_URL carrying the caller's token)."""
    if params.get("id") in (None, ""):
        raise _argument(0)
    return object_view(portal, caller, _object(portal, caller, params["id"], "file"))


# ----------------------------------------------------------------------------- saving files
def _files_dir(portal: Portal) -> Path:
    path = Path(portal.config.files_dir or (portal.store.path + ".files"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _unique(portal: Portal, folder: int, name: str, generate: bool) -> str:
    """The name to save under: as given, or ``name (1).ext`` … with ``generateUniqueName``."""
    if not _taken(portal, folder, name):
        return name
    if not generate:  # unknown: the text for a file (the code is Drive's "non-unique name" one)
        raise ApiError(400, "DISK_OBJ_22000", "A file with this name already exists")
    stem, dot, ext = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    for i in range(1, 10_000):
        candidate = f"{stem} ({i}){dot}{ext}"
        if not _taken(portal, folder, candidate):
            return candidate
    raise ApiError(400, *NOT_SAVED)


def _check_quota(portal: Portal, size: int) -> None:
    quota = portal.config.disk_quota
    if quota is None:
        return
    used = portal.store.one("SELECT COALESCE(SUM(size), 0) AS n FROM disk_objects WHERE type = 'file'")
    if int(used["n"] if used else 0) + size > quota:
        raise ApiError(400, *NOT_SAVED)  # no room on the portal's Drive


def _save(
    portal: Portal, caller: Caller, folder: Any, name: str, generate: bool, temp: Path, size: int, digest: str
) -> dict[str, Any]:
    """Turn an uploaded temporary file into a file object of ``folder``."""
    try:
        _check_quota(portal, size)
        final = _unique(portal, int(folder["id"]), name, generate)
        now = portal.clock.now()
        with portal.store.transaction():
            new = portal.store.insert_next(
                "disk_objects",
                OBJECT_ID_FLOOR,
                (folder["storage"], folder["id"], "file", final, size, digest, now, now, caller.user_id),
            )
            os.replace(temp, _files_dir(portal) / str(new))
    finally:
        temp.unlink(missing_ok=True)
    return object_view(portal, caller, portal.store.one("SELECT * FROM disk_objects WHERE id = ?", (new,)))


def _temp(portal: Portal) -> Path:
    return _files_dir(portal) / f"upload-{secrets.token_hex(8)}.part"


@method("disk.folder.uploadfile", scope="disk")
def _upload_file(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    """With ``fileContent`` [name, base64]: the file object. Without: ``{field, uploadUrl}`` to POST
    the file to as multipart/form-data."""
    if params.get("id") in (None, ""):
        raise _argument(0)
    folder = _object(portal, caller, params["id"], "folder", write=True)
    generate = _truthy(params.get("generateUniqueName", False))
    name = _name(params)
    content = params.get("fileContent")
    if content in (None, "", [], {}):
        if caller.token is None:
            raise _denied()
        payload = urlencode(
            {
                "id": folder["id"],
                "generateUniqueName": int(generate),
                "name": name or "",
                "_": secrets.token_hex(8),
            }
        )
        token = _sign(portal, "upload", payload, caller.token)
        return {
            "field": UPLOAD_FIELD,
            "uploadUrl": f"{portal.rest_url}upload.json?auth={caller.token}&token={quote(token, safe='')}",
        }
    if name is None:
        raise ApiError(
            400, "DISK_BASE_SERVICE_22001", "Error: required parameter NAME (DISK_BASE_SERVICE_22001)"
        )
    items = (
        list(content.values())
        if isinstance(content, dict)
        else content
        if isinstance(content, list)
        else None
    )
    if not items or len(items) < 2 or not isinstance(items[1], str):
        raise ApiError(400, *NOT_SAVED)
    try:
        data = base64.b64decode(items[1].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, *NOT_SAVED) from None
    temp = _temp(portal)
    temp.write_bytes(data)
    return _save(portal, caller, folder, name, generate, temp, len(data), hashlib.sha256(data).hexdigest())


# ----------------------------------------------------------------------------- upload.json and download.json
def _url_caller(portal: Portal, method_name: str, auth: Any) -> Caller:
    """The caller behind a URL's ``auth``: 401 once the token has expired (the URL dies with it)."""
    caller = portal.authenticate(method_name, auth, None)
    portal.authorize(caller, method_name)
    return caller


def serve_upload(portal: Portal, query: dict[str, Any], headers: Any, raw: BinaryIO, ip: str) -> Reply:
    """POST to an ``uploadUrl``: stream the multipart part named ``file`` into the folder; the file
    object in the usual envelope. Counted by the leaky bucket and charged to disk.folder.uploadFile.

    unknown: whether an upload URL can be used twice; the sandbox makes it single-use once a file
    was saved through it, and lets it live exactly as long as the access token it carries.
    """
    start = portal.clock.now()
    # unknown: how the portal accounts an upload POST; the sandbox counts it in the leaky bucket and
    # charges it to disk.folder.uploadFile's operating time (the call it completes).
    if portal.config.limits and not portal.bucket.admit(ip):
        return error_reply(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
    try:
        caller = _url_caller(portal, UPLOAD_METHOD, query.get("auth"))
        ticket = _unsign(portal, "upload", query.get("token"), str(query.get("auth")))
        if (
            ticket is None
            or portal.store.one(
                "SELECT 1 FROM disk_uploads WHERE nonce = ? AND used IS NOT NULL", (ticket.get("_"),)
            )
            is not None
        ):
            raise _denied()
        if portal.config.limits and portal.ledger.blocked(caller.app, UPLOAD_METHOD):
            raise ApiError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")
    except ApiError as exc:
        return error_reply(exc.status, exc.code, exc.description)
    work = Work(portal.clock, portal.config.request_cap, portal.next_request(), store=portal.store)
    started = portal.clock.now()
    try:
        work.spend(portal.config.cost_per_call)
        folder = _object(portal, caller, ticket.get("id"), "folder", write=True)
        result = _receive(portal, caller, folder, ticket, headers, raw)
        portal.store.run(
            "INSERT OR REPLACE INTO disk_uploads (nonce, used) VALUES (?, ?)",
            (ticket.get("_"), portal.clock.now()),
        )
    except ApiError as exc:
        return error_reply(exc.status, exc.code, exc.description)
    except CutOff:
        return html_reply(504, "504 Gateway Time-out", "The request was cut off at the processing limit.")
    finally:
        portal.ledger.charge(caller.app, UPLOAD_METHOD, started, work.spent)
    return Reply(200, {"result": result, "time": portal.time_info(caller, UPLOAD_METHOD, start, work.spent)})


def _receive(
    portal: Portal, caller: Caller, folder: Any, ticket: dict[str, str], headers: Any, raw: BinaryIO
) -> dict[str, Any]:
    """Read the multipart body of an upload into a temporary file, then save it."""
    content_type = headers.get("Content-Type", "")
    boundary = next(
        (
            p.split("=", 1)[1].strip().strip('"')
            for p in content_type.split(";")[1:]
            if p.strip().lower().startswith("boundary=")
        ),
        None,
    )
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        raise ApiError(400, *NOT_SAVED)  # unknown: the answer to a body that is not a form upload
    chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
    length = _int(headers.get("Content-Length")) if not chunked else None
    body = Body(raw, length, chunked)
    temp = _temp(portal)
    try:
        saved = save_part(body, boundary, UPLOAD_FIELD, lambda: open(temp, "wb"))  # noqa: SIM115
    except (BodyError, OSError):
        temp.unlink(missing_ok=True)
        raise ApiError(400, *NOT_SAVED) from None
    if saved is None:
        temp.unlink(missing_ok=True)
        raise ApiError(400, *NOT_SAVED)
    filename, size, digest = saved
    name = ticket.get("name") or os.path.basename(filename.replace("\\", "/")).strip()
    if not name:
        temp.unlink(missing_ok=True)
        raise ApiError(
            400, "DISK_BASE_SERVICE_22001", "Error: required parameter NAME (DISK_BASE_SERVICE_22001)"
        )
    return _save(portal, caller, folder, name, ticket.get("generateUniqueName") == "1", temp, size, digest)


def serve_download(portal: Portal, query: dict[str, Any]) -> Reply:
    """GET a ``DOWNLOAD_URL``: the file's bytes while the access token in it lives; 401 after.

    unknown: the answers to a dead token or a bad signature; the sandbox sends the REST errors
    (401 expired_token / NO_AUTH_FOUND, 400 ACCESS_DENIED, 400 ERROR_NOT_FOUND). Downloads are
    file transfers, not REST calls: the leaky bucket and operating time do not count them.
    """
    try:
        caller = _url_caller(portal, "disk.file.get", query.get("auth"))
        ticket = _unsign(portal, "download", query.get("token"), str(query.get("auth")))
        if ticket is None:
            raise _denied()
        row = _object(portal, caller, ticket.get("id"), "file")
    except ApiError as exc:
        return error_reply(exc.status, exc.code, exc.description)
    path = _files_dir(portal) / str(row["id"])
    if not path.exists():
        return error_reply(400, "ERROR_NOT_FOUND", f"Could not find entity with id `{row['id']}`")
    name = quote(str(row["name"]))
    return Reply(
        200,
        None,
        "application/octet-stream",
        {"Content-Disposition": f"attachment; filename*=UTF-8''{name}"},
        path=str(path),
    )
