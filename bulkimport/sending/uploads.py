"""Local attachments on their way to the portal: staging them on Drive (once, resumably) and
putting a fresh ``DOWNLOAD_URL`` into each message right before it is sent; or, when the user
publishes them under a base URL, checking a few of them through that URL before anything is sent.

Per-file state lives in the journal's own table ``uploads`` (created here), one row per local
path: ``uploading`` (the call went out), ``uploaded``, ``reused`` (found on Drive already: a run
killed mid-upload, or the same file twice), ``failed`` with the portal's code, ``missing`` or
``too-large``. A resumed run uploads only what is not ``uploaded``/``reused``; a row whose file is
not on Drive waits (``pending``, code ``upload-failed``) so the chat never gets it without its file.
No URL is ever written there: a ``DOWNLOAD_URL`` carries the access token.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..attachments import is_local, local_rel
from ..errors import AmbiguousError, BulkImportError, ConfigError, FatalError, PortalError
from ..journal import row_key
from ..planning import Plan
from ..portal.drive import NAME_TAKEN, Drive

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    path TEXT PRIMARY KEY,      -- the attachment's local path, as in the plan
    name TEXT NOT NULL,         -- its name on Drive (unique in the import's folder)
    size INTEGER,
    status TEXT NOT NULL,       -- uploading | uploaded | reused | failed | missing | too-large
    code TEXT,
    file_id INTEGER,            -- the Drive file object
    folder_id INTEGER,
    updated_at REAL
);
"""
DONE = ("uploaded", "reused")


@dataclass
class LocalFile:
    """One local attachment of the plan: its path, the name sent, its size and the rows using it."""

    rel: str
    name: str
    size: int | None
    rows: list[str] = field(default_factory=list)
    status: str = "pending"
    code: str | None = None
    file_id: int | None = None


def local_files(plan: Plan, sizer: Callable[[str], int | None]) -> dict[str, LocalFile]:
    """The plan's local attachments (placeholder URLs), in send order, with the rows using each."""
    out: dict[str, LocalFile] = {}
    for conv in plan.conversations:
        for rid, item in zip(conv.rows, conv.messages, strict=True):
            for entry in item["message"].get("files") or ():
                if is_local(entry["url"]):
                    rel = local_rel(entry["url"])
                    f = out.get(rel)
                    if f is None:
                        f = out[rel] = LocalFile(rel, entry["name"], sizer(rel))
                    f.rows.append(row_key(rid))
    return out


def describe(files: dict[str, LocalFile]) -> str:
    """ "Attachments: N local files, X MB to upload to the portal's Drive" (the plan's line)."""
    total = sum(f.size or 0 for f in files.values())
    return f"Attachments: {len(files):,} local file(s), {total / 1e6:,.1f} MB to upload to the portal's Drive"


class UploadTable:
    """The journal's ``uploads`` table (own connection; WAL lets it sit beside the journal's)."""

    def __init__(self, journal: str | Path) -> None:
        self.conn = sqlite3.connect(str(journal), isolation_level=None, timeout=30.0)
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(_SCHEMA)

    def load(self) -> dict[str, tuple[str, str | None, int | None, str]]:
        """path → (status, code, file_id, name on Drive)."""
        rows = self.conn.execute("SELECT path, status, code, file_id, name FROM uploads").fetchall()
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}

    def put(self, f: LocalFile, name: str, folder: int | None) -> None:
        """Record ``f``'s state durably (before and after each upload call)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO uploads (path, name, size, status, code, file_id, folder_id, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (f.rel, name, f.size, f.status, f.code, f.file_id, folder, time.time()),
        )

    def close(self) -> None:
        self.conn.close()


def drive_name(index: int, name: str) -> str:
    """The file's name on Drive: unique in the folder, deterministic, extension kept."""
    return f"{index:05d} {name}"


@dataclass
class Staged:
    """What the upload stage left: the Drive file of each path, and the rows that must wait."""

    drive: Drive
    files: dict[str, LocalFile]
    waiting: dict[str, tuple[str, str]]

    def resolve(
        self, commands: dict[str, tuple[str, dict[str, Any]]]
    ) -> dict[str, tuple[str, dict[str, Any]]]:
        """The commands with every placeholder URL replaced by a ``DOWNLOAD_URL`` taken now."""
        needed: dict[str, int] = {}
        for _, params in commands.values():
            for item in params["MESSAGES"]:
                for entry in item["message"].get("files") or ():
                    f = self.files.get(local_rel(entry["url"])) if is_local(entry["url"]) else None
                    if f is not None and f.file_id is not None:
                        needed[f.rel] = f.file_id
        if not needed:
            return commands
        urls = self.drive.download_urls(needed.values())
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for key, (method, params) in commands.items():
            out[key] = (
                method,
                {**params, "MESSAGES": [self._item(i, needed, urls) for i in params["MESSAGES"]]},
            )
        return out

    @staticmethod
    def _item(item: dict[str, Any], needed: dict[str, int], urls: dict[int, str]) -> dict[str, Any]:
        files = item["message"].get("files")
        if not files:
            return item
        fresh = []
        for e in files:
            rel = local_rel(e["url"]) if is_local(e["url"]) else None
            fresh.append({"url": urls[needed[rel]], "name": e["name"]} if rel in needed else e)
        return {**item, "message": {**item["message"], "files": fresh}}

    def column(self, keys: Sequence[str]) -> list[str | None]:
        """Per row (journal keys): each file's outcome, e.g. ``photo.jpg: uploaded`` (the report)."""
        by_row: dict[str, list[str]] = {}
        for f in self.files.values():
            text = f"{f.name}: {f.status}" + (f" ({f.code})" if f.code and f.status not in DONE else "")
            for rid in f.rows:
                by_row.setdefault(rid, []).append(text)
        return ["; ".join(by_row[k]) if k in by_row else None for k in keys]


def stage(
    files: dict[str, LocalFile],
    client: Any,
    journal: str | Path,
    folder_name: str,
    opener: Callable[[str], BinaryIO],
    *,
    max_bytes: float,
    on_bytes: Callable[[int], None] | None = None,
) -> Staged:
    """Upload every file not on Drive yet into the import's folder; returns the :class:`Staged`."""
    drive = Drive(client)
    folder = drive.folder(drive.storage_root(), folder_name)
    table = UploadTable(journal)
    try:
        known = table.load()
        for index, f in enumerate(files.values(), 1):
            _stage_one(drive, table, folder, f, index, known.get(f.rel), opener, max_bytes, on_bytes)
    finally:
        table.close()
    waiting: dict[str, tuple[str, str]] = {}
    for f in files.values():
        if f.status not in DONE:
            for rid in f.rows:
                code = f.code if f.status in ("missing", "too-large") and f.code else "upload-failed"
                waiting.setdefault(rid, (code, f"{f.rel}: {f.status}" + (f" ({f.code})" if f.code else "")))
    return Staged(drive, files, waiting)


def _stage_one(
    drive: Drive,
    table: UploadTable,
    folder: int,
    f: LocalFile,
    index: int,
    known: tuple[str, str | None, int | None, str] | None,
    opener: Callable[[str], BinaryIO],
    max_bytes: float,
    on_bytes: Callable[[int], None] | None,
) -> None:
    """Bring one file onto Drive (or record why not); every state change is journalled first."""
    name = known[3] if known else drive_name(index, f.name)
    if known and known[0] in DONE and known[2] is not None:
        f.status, f.file_id = known[0], int(known[2])
        return
    if f.size is None:
        f.status, f.code = "missing", "file-missing"
        table.put(f, name, folder)
        return
    if f.size > max_bytes:
        f.status, f.code = "too-large", "file-too-large"
        table.put(f, name, folder)
        return
    if known and known[0] == "uploading" and _reuse(drive, folder, f, name):  # killed mid-upload
        table.put(f, name, folder)
        return
    f.status, f.code = "uploading", None
    table.put(f, name, folder)
    try:
        obj = drive.upload(folder, name, lambda: opener(f.rel), f.size, on_bytes)
        f.status, f.file_id = "uploaded", obj.id
    except FatalError:  # credentials, a blocked app: the run stops (the file stays ``uploading``)
        raise
    except (PortalError, AmbiguousError) as exc:  # this file failed (or may be there); the rest go
        code = str(getattr(exc, "code", None) or "upload-failed")
        maybe_saved = code == NAME_TAKEN or isinstance(exc, AmbiguousError)
        if not (maybe_saved and _reuse(drive, folder, f, name)):
            f.status, f.code = "failed", code
    except OSError:  # unreadable since it was measured
        f.status, f.code = "failed", "file-missing"
    table.put(f, name, folder)


def _reuse(drive: Drive, folder: int, f: LocalFile, name: str) -> bool:
    """Take the file already on Drive under ``name`` when its size matches (``reused``)."""
    found = drive.child(folder, name)
    if found is None or int(found.get("SIZE") or -1) != f.size:
        return False
    f.status, f.file_id, f.code = "reused", int(found["ID"]), None
    return True


# ------------------------------------------------------------------------------------------------
# Published under a base URL: check a few files through it before anything is sent
# ------------------------------------------------------------------------------------------------
def check_published(
    base: str,
    rels: Sequence[str],
    opener: Callable[[str], BinaryIO],
    *,
    sample: int = 3,
    timeout: float = 10.0,
    session: Any = None,
) -> int:
    """Fetch up to ``sample`` of ``rels`` (first, last, one between) through ``base`` and compare
    them with the local bytes; ConfigError naming the first failure. Returns how many were checked."""
    from urllib.parse import quote

    import requests

    rels = list(dict.fromkeys(rels))
    if not rels:
        return 0
    picks = list(dict.fromkeys([rels[0], rels[-1], *random.Random(0).sample(rels, min(len(rels), sample))]))
    http = session or requests.Session()
    for rel in picks[:sample]:
        url = base.rstrip("/") + "/" + quote(rel, safe="/")
        why = _fetch_differs(http, url, rel, opener, timeout)
        if why:
            raise ConfigError(
                f"--files-base-url {base}: {rel} {why} at {url}; publish the export's folder there "
                "(the same files, the same paths) or use --upload-files; nothing was sent"
            )
    return min(len(picks), sample)


def _fetch_differs(
    http: Any, url: str, rel: str, opener: Callable[[str], BinaryIO], timeout: float
) -> str | None:
    """None when ``url`` serves the bytes of local ``rel``; else why not, in a few words."""
    import requests

    try:
        with opener(rel) as fh:
            local = hashlib.sha256()
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                local.update(chunk)
    except (OSError, BulkImportError):
        return None  # not here to compare: reachability is checked on the next pick
    try:
        with http.get(url, timeout=timeout, stream=True, headers={"User-Agent": "bulkimport"}) as resp:
            if resp.status_code != 200:
                return f"is not reachable (HTTP {resp.status_code})"
            remote = hashlib.sha256()
            for chunk in resp.iter_content(1 << 20):
                remote.update(chunk)
    except requests.RequestException as exc:
        return f"is not reachable ({type(exc).__name__})"
    return None if remote.digest() == local.digest() else "is not the same file (different bytes)"


__all__ = ["LocalFile", "Staged", "UploadTable", "check_published", "describe", "local_files", "stage"]
