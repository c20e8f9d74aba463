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
from ..planning import Estimate, Plan
from ..portal.drive import NAME_TAKEN, SMALL_FILE, Drive

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


#: The upload speed the ETA assumes, in bytes per second from this machine to the portal's Drive.
#: An ASSUMPTION, neither measured nor documented: about a 16 Mbit/s uplink. The real figure is set
#: by your line and the portal (bench/uploads.py measures the sandbox on this machine, not a portal).
ASSUMED_UPLOAD_BYTES_PER_SECOND = 2_000_000
#: Requests staging takes before any file: ``disk.storage.getForApp`` and ``disk.folder.addSubFolder``.
SETUP_REQUESTS = 2


def upload_requests(sizes: Sequence[int]) -> int:
    """Requests that uploading files of ``sizes`` takes through the governor: the storage and the
    folder, then one ``disk.folder.uploadFile`` per small file (base64) and two per large one (the
    call answering an ``uploadUrl``, then the POST to it)."""
    if not sizes:
        return 0
    return SETUP_REQUESTS + sum(1 if size <= SMALL_FILE else 2 for size in sizes)


def wire_bytes(sizes: Sequence[int]) -> int:
    """Bytes that go up for files of ``sizes``: base64 (4 per 3) for small ones, as they are for large."""
    return sum(4 * -(-size // 3) if size <= SMALL_FILE else size for size in sizes)


def with_uploads(estimate: Estimate, sizes: Sequence[int], url_requests: int) -> Estimate:
    """``estimate`` (the messages') plus uploading files of ``sizes`` first and ``url_requests``
    ``disk.file.get`` requests for fresh download links while sending: the requests share the
    bucket (drained at Y per second); the bytes take their time at
    :data:`ASSUMED_UPLOAD_BYTES_PER_SECOND` before the first message (uploads go one at a time)."""
    import dataclasses
    from datetime import timedelta

    requests = upload_requests(sizes) + url_requests
    if not requests:
        return estimate
    limits = estimate.limits
    transfer = wire_bytes(sizes) / ASSUMED_UPLOAD_BYTES_PER_SECOND
    total = estimate.requests + requests
    bucket = max(0.0, (total - limits.bucket_size) / limits.drain_rate)
    ahead = estimate.seconds + transfer
    rate = f"{ASSUMED_UPLOAD_BYTES_PER_SECOND / 1e6:g} MB/s"
    if sizes:
        phrase = (
            f"uploads first: {len(sizes):,} file(s), {sum(sizes) / 1e6:,.1f} MB, about "
            f"{timedelta(seconds=round(transfer))} at an assumed upload speed of {rate}, and "
            f"{requests:,} of the requests (uploads, fresh download links)"
        )
    else:
        phrase = f"{requests:,} of the requests fetch fresh download links of files already on Drive"
    return dataclasses.replace(
        estimate,
        requests=total,
        seconds=max(ahead, bucket),
        binding="bucket" if bucket > ahead else estimate.binding,
        includes=(*estimate.includes, phrase),
    )


def done_paths(journal: str | Path) -> set[str]:
    """Paths the journal's ``uploads`` table has on Drive already (empty: no journal, no table)."""
    path = Path(journal)
    if not path.is_file():
        return set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        rows = conn.execute(
            "SELECT path FROM uploads WHERE status IN (?, ?) AND file_id IS NOT NULL", DONE
        ).fetchall()
    except sqlite3.OperationalError:  # a journal of an import without uploads
        return set()
    finally:
        conn.close()
    return {str(r[0]) for r in rows}


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


#: Characters a file name on Drive is kept free of (the Drive UI refuses them; which ones the REST
#: method refuses is not documented): replaced by "_" on Drive only, the name sent stays as it is.
_NOT_ON_DRIVE = str.maketrans({c: "_" for c in '\\/:*?"<>|'})
#: How many names (``name``, ``name (2)`` …) an upload tries when other files hold them.
_NAME_TRIES = 20


def drive_name(name: str, taken: set[str]) -> str:
    """The file's name on Drive: its original name (extension kept), or ``stem (2).ext``, ``(3)`` …
    when another file of the folder holds it (names compare case-insensitively there); reserved
    in ``taken``. Deterministic: the same files in the same order get the same names."""
    clean = name.translate(_NOT_ON_DRIVE).strip() or "file"
    stem, dot, ext = clean.rpartition(".") if "." in clean.lstrip(".") else (clean, "", "")
    candidate, n = clean, 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{stem} ({n}){dot}{ext}"
    taken.add(candidate.casefold())
    return candidate


def drive_names(files: dict[str, LocalFile], known: dict[str, tuple[Any, ...]]) -> dict[str, str]:
    """Each file's name on Drive: the journal's for a file it knows (a resumed run keeps them), else
    a fresh one from :func:`drive_name`, unique among all of them."""
    taken = {str(k[3]).casefold() for rel, k in known.items() if rel in files}
    return {
        rel: str(known[rel][3]) if rel in known else drive_name(f.name, taken) for rel, f in files.items()
    }


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
        names = drive_names(files, known)
        one = _One(drive, table, folder, opener, max_bytes, on_bytes, {n.casefold() for n in names.values()})
        for f in files.values():
            one.stage(f, names[f.rel], known.get(f.rel))
    finally:
        table.close()
    waiting: dict[str, tuple[str, str]] = {}
    for f in files.values():
        if f.status not in DONE:
            for rid in f.rows:
                code = f.code if f.status in ("missing", "too-large") and f.code else "upload-failed"
                waiting.setdefault(rid, (code, f"{f.rel}: {f.status}" + (f" ({f.code})" if f.code else "")))
    return Staged(drive, files, waiting)


@dataclass
class _One:
    """Brings one file onto Drive (or records why not); every state change is journalled first."""

    drive: Drive
    table: UploadTable
    folder: int
    opener: Callable[[str], BinaryIO]
    max_bytes: float
    on_bytes: Callable[[int], None] | None
    taken: set[str]  # names of the folder's files (casefolded) this import holds or met

    def stage(self, f: LocalFile, name: str, known: tuple[str, str | None, int | None, str] | None) -> None:
        """Upload ``f`` as ``name`` unless the journal has it on Drive, it is missing or too large."""
        if known and known[0] in DONE and known[2] is not None:
            f.status, f.file_id = known[0], int(known[2])
            return
        if f.size is None or f.size > self.max_bytes:
            missing = f.size is None
            f.status, f.code = ("missing", "file-missing") if missing else ("too-large", "file-too-large")
            self.table.put(f, name, self.folder)
            return
        if known and known[0] == "uploading" and _reuse(self.drive, self.folder, f, name):  # killed meanwhile
            self.table.put(f, name, self.folder)
            return
        for _ in range(_NAME_TRIES):
            taken_by_another = self._upload(f, name)
            if not taken_by_another:
                break
            name = drive_name(f.name, self.taken)  # never overwrite that file: the next free name
        else:
            f.status, f.code = "failed", NAME_TAKEN
        self.table.put(f, name, self.folder)

    def _upload(self, f: LocalFile, name: str) -> bool:
        """One upload of ``f`` as ``name``; True when another file of the folder holds that name."""
        f.status, f.code = "uploading", None
        self.table.put(f, name, self.folder)
        try:
            obj = self.drive.upload(self.folder, name, lambda: self.opener(f.rel), f.size or 0, self.on_bytes)
            f.status, f.file_id = "uploaded", obj.id
        except FatalError:  # credentials, a blocked app: the run stops (the file stays ``uploading``)
            raise
        except (PortalError, AmbiguousError) as exc:  # this file failed (or may be there); the rest go
            code = str(getattr(exc, "code", None) or "upload-failed")
            maybe_saved = code == NAME_TAKEN or isinstance(exc, AmbiguousError)
            if maybe_saved and _reuse(self.drive, self.folder, f, name):
                return False
            if code == NAME_TAKEN:
                return True
            f.status, f.code = "failed", code
        except OSError:  # unreadable since it was measured
            f.status, f.code = "failed", "file-missing"
        return False


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


__all__ = [
    "ASSUMED_UPLOAD_BYTES_PER_SECOND",
    "LocalFile",
    "Staged",
    "UploadTable",
    "check_published",
    "describe",
    "done_paths",
    "drive_name",
    "local_files",
    "stage",
    "upload_requests",
    "with_uploads",
]
