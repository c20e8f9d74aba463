"""The portal's Drive over REST (reference §2.1): the application's storage, one folder per import,
uploads (base64 for small files, the two-step ``uploadUrl`` multipart POST streamed from disk for
large ones) and a fresh ``DOWNLOAD_URL`` per file.

Every call goes through the client, hence the governor; the multipart POST takes its own bucket
token from the same governor. ``DOWNLOAD_URL`` and ``uploadUrl`` carry the access token: nothing
here logs them, stores them or puts them in an exception.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..errors import AuthError, ConfigError, PortalError, TokenExpiredError
from .answers import classify
from .transport import RawResponse

GET_FOR_APP = "disk.storage.getForApp"
ADD_SUBFOLDER = "disk.folder.addSubFolder"
GET_CHILDREN = "disk.folder.getChildren"
UPLOAD_FILE = "disk.folder.uploadFile"
FILE_GET = "disk.file.get"
NAME_TAKEN = "DISK_OBJ_22000"
#: Files up to this size go base64 in ``fileContent`` (one JSON call); larger ones stream.
SMALL_FILE = 2 * 1024 * 1024
_CHUNK = 1 << 20
_RETRIES = 3


@dataclass(frozen=True)
class DriveFile:
    """One file object on Drive: its id, its name there and its size (no URL: it carries a token)."""

    id: int
    name: str
    size: int


def _file(obj: Any) -> DriveFile:
    return DriveFile(int(obj["ID"]), str(obj.get("NAME") or ""), int(obj.get("SIZE") or 0))


class _Multipart:
    """A ``multipart/form-data`` body with one file part, read from ``stream`` in 1 MB pieces (a
    file-like object with a length, so requests sends Content-Length and never loads the file)."""

    def __init__(
        self,
        field: str,
        filename: str,
        stream: BinaryIO,
        size: int,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.boundary = "bulkimport" + secrets.token_hex(12)
        quoted = filename.replace("\\", "_").replace('"', "%22").replace("\r", " ").replace("\n", " ")
        self._head = (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{quoted}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._stream, self._left, self._stage = stream, size, 0
        self.length = len(self._head) + size + len(self._tail)
        self._on_bytes, self._pending = on_bytes, 0
        self.counted = 0  # file bytes told to ``on_bytes`` so far (a progress bar's bytes)

    def _count(self, n: int, flush: bool) -> None:
        """Tell ``on_bytes`` about the file's bytes read, about every 1 MB (and at the end)."""
        self._pending += n
        if self._on_bytes is not None and self._pending and (flush or self._pending >= _CHUNK):
            self._on_bytes(self._pending)
            self.counted += self._pending
            self._pending = 0

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        if self._stage == 0:
            self._stage = 1
            return self._head
        if self._stage == 1:
            data = self._stream.read(min(_CHUNK if n is None or n < 0 else max(n, 1), self._left))
            self._left -= len(data)
            if self._left <= 0 or not data:
                self._stage = 2
            self._count(len(data), self._stage == 2)
            if data:
                return data
        if self._stage == 2:
            self._stage = 3
            return self._tail
        return b""


class _Tally:
    """Passes byte counts on to ``on_bytes`` and can take them all back (an attempt that failed)."""

    def __init__(self, on_bytes: Callable[[int], None] | None) -> None:
        self.on_bytes, self.total = on_bytes, 0

    def __call__(self, n: int) -> None:
        self.total += n
        if self.on_bytes is not None:
            self.on_bytes(n)

    def take_back(self) -> None:
        if self.on_bytes is not None and self.total:
            self.on_bytes(-self.total)
        self.total = 0


class Drive:
    """Drive calls for one import through ``client`` (a :class:`~bulkimport.portal.client.Client`)."""

    def __init__(self, client: Any, session: Any = None) -> None:
        self.client = client
        self._session = session

    # ------------------------------------------------------------------ storage and folder
    def storage_root(self) -> int:
        """The application storage's root folder id; ConfigError saying what to change when the
        token lacks the ``disk`` scope or is not an administrator's in the application's context."""
        try:
            storage = self.client.call(GET_FOR_APP, {}, retries=_RETRIES)
        except (AuthError, PortalError) as exc:
            raise ConfigError(_storage_fix(exc)) from None
        return int(storage["ROOT_OBJECT_ID"])

    def folder(self, parent: int, name: str) -> int:
        """The id of folder ``name`` in ``parent``: created, or the existing one (DISK_OBJ_22000)."""
        try:
            made = self.client.call(ADD_SUBFOLDER, {"id": parent, "data": {"NAME": name}}, retries=_RETRIES)
            return int(made["ID"])
        except PortalError as exc:
            if exc.code != NAME_TAKEN:
                raise
        found = self.child(parent, name, "folder")
        if found is None:
            raise PortalError(NAME_TAKEN, f"folder {name!r} exists but getChildren does not list it")
        return int(found["ID"])

    def child(self, parent: int, name: str, kind: str = "file") -> dict[str, Any] | None:
        """The object named ``name`` of type ``kind`` in folder ``parent``, or None."""
        result = self.client.call(GET_CHILDREN, {"id": parent, "filter": {"NAME": name}}, retries=_RETRIES)
        for obj in result or []:
            if obj.get("NAME") == name and obj.get("TYPE") == kind:
                return dict(obj)
        return None

    # ------------------------------------------------------------------ uploads
    def upload(
        self,
        folder: int,
        name: str,
        opener: Callable[[], BinaryIO],
        size: int,
        on_bytes: Callable[[int], None] | None = None,
    ) -> DriveFile:
        """Upload one file as ``name``: base64 up to :data:`SMALL_FILE`, else the streamed two-step
        upload. Raises PortalError (``DISK_OBJ_22000`` when the name is taken)."""
        if size <= SMALL_FILE:
            with opener() as fh:
                content = base64.b64encode(fh.read()).decode("ascii")
            params = {"id": folder, "data": {"NAME": name}, "fileContent": [name, content]}
            obj = self.client.call(UPLOAD_FILE, params, retries=_RETRIES)
            if on_bytes is not None:
                on_bytes(size)
            return _file(obj)
        return self._upload_large(folder, name, opener, size, on_bytes)

    def _upload_large(
        self,
        folder: int,
        name: str,
        opener: Callable[[], BinaryIO],
        size: int,
        on_bytes: Callable[[int], None] | None,
    ) -> DriveFile:
        """The two-step upload; an upload URL whose token expired meanwhile is asked for again once.
        ``on_bytes`` hears the bytes as they are read for the POST (taken back when it is redone)."""
        for attempt in range(2):
            target = self.client.call(UPLOAD_FILE, {"id": folder, "data": {"NAME": name}}, retries=_RETRIES)
            tally = _Tally(on_bytes)
            try:
                with opener() as fh:
                    field = str(target.get("field") or "file")
                    obj = self._post(str(target["uploadUrl"]), field, name, fh, size, tally)
            except BaseException as exc:
                tally.take_back()  # this attempt's bytes did not make a file
                if attempt or not isinstance(exc, TokenExpiredError):
                    raise
                self.client.auth.refresh()
                continue
            return _file(obj)
        raise AssertionError("unreachable")

    def _post(
        self,
        url: str,
        field: str,
        name: str,
        fh: BinaryIO,
        size: int,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Any:
        """POST the multipart body to ``url`` through the governor; the answer's ``result``."""
        import requests

        self.client.governor.acquire([UPLOAD_FILE])
        body = _Multipart(field, name, fh, size, on_bytes)
        session = self._session or requests
        try:
            resp = session.post(
                url,
                data=body,
                timeout=(10.0, 600.0),
                headers={
                    "Content-Type": f"multipart/form-data; boundary={body.boundary}",
                    "Content-Length": str(body.length),
                    "Accept": "application/json",
                },
            )
        except requests.RequestException as exc:
            raise PortalError("upload-failed", f"the upload POST failed ({type(exc).__name__})") from None
        raw = RawResponse(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, resp.content)
        return classify(raw, self.client.governor.portal_now()).result

    # ------------------------------------------------------------------ download URLs
    def download_urls(self, ids: Iterable[int]) -> dict[int, str]:
        """A fresh ``DOWNLOAD_URL`` for each Drive file id (``disk.file.get`` in batches of 50)."""
        wanted = list(dict.fromkeys(int(i) for i in ids))
        out: dict[int, str] = {}
        for start in range(0, len(wanted), 50):
            part = wanted[start : start + 50]
            if len(part) == 1:
                out[part[0]] = str(
                    self.client.call(FILE_GET, {"id": part[0]}, retries=_RETRIES)["DOWNLOAD_URL"]
                )
                continue
            answer = self.client.batch({f"f{i}": (FILE_GET, {"id": i}) for i in part}, retries=_RETRIES)
            for i in part:
                err = answer.errors.get(f"f{i}")
                if err is not None:
                    raise err if isinstance(err, BaseException) else PortalError(str(err))
                out[i] = str(answer.results[f"f{i}"]["DOWNLOAD_URL"])
        return out


def _storage_fix(exc: PortalError) -> str:
    """What to change when ``disk.storage.getForApp`` is refused (one line, no token)."""
    code = getattr(exc, "code", "")
    head = f"--upload-files: the portal refused {GET_FOR_APP} ({code})"
    if code in ("insufficient_scope", "INSUFFICIENT_SCOPE"):
        return f"{head}; add the 'disk' scope to the application, reinstall it, then run `bulkimport auth`"
    if code == "ACCESS_DENIED":
        return (
            f"{head}; authorise the application as a portal administrator (`bulkimport auth` with an "
            "administrator's account) — the app's Drive storage needs one — or publish the files and "
            "use --files-base-url instead"
        )
    return f"{head}: {getattr(exc, 'description', '') or code}; or use --files-base-url instead"


def file_size(path: str | os.PathLike[str]) -> int:
    """The size of a local file in bytes."""
    return os.stat(path).st_size


__all__ = ["SMALL_FILE", "Drive", "DriveFile"]
