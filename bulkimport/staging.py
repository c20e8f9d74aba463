"""What an :class:`~bulkimport.job.ImportJob` does with local attachments around the send: find
and measure them (and what uploading them adds to the ETA), refuse a wrong ``--files-base-url``
before anything is sent, stage them on the portal's Drive and hand the sender the rows that must
wait and the last-moment URL filler, then add each row's file outcomes to the result frame.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .attachments import DEFAULT_MAX_FILE_MB, rel_of, resolve
from .journal import row_key
from .sending import uploads

#: Codes of the warnings that say a row's attachment is missing or too large.
MISSING_CODES = ("file-missing", "file-too-large", "attachment-missing")


def file_options(job: Any, options: dict[str, Any], *, tabular: bool) -> dict[str, Any]:
    """``options`` with the job's --upload-files, --missing-files and --max-file-size laid over
    them; a spreadsheet's relative attachment paths are relative to its folder (``files_root``)."""
    if job.upload_files:
        options["files_upload"] = "disk"
    if job.missing_files:
        options["missing_files"] = job.missing_files
    if job.max_file_mb is not None:
        options["max_file_mb"] = float(job.max_file_mb)
    if tabular and options.get("files_upload") == "disk" and not options.get("files_root"):
        options["files_root"] = str(Path(job.source).resolve().parent)
    return options


def command_options(job: Any) -> list[str]:
    """The job's attachment options as they go on the command line that resumes it."""
    out = ["--upload-files"] if job.upload_files else []
    if job.missing_files:
        out += ["--missing-files", job.missing_files]
    if job.max_file_mb is not None:
        out += ["--max-file-size", f"{job.max_file_mb:g}"]
    return out


def uploading(job: Any) -> bool:
    """Whether the job's local attachments go to the portal's Drive (--upload-files, files_upload)."""
    return job.load()[1].options.get("files_upload") == "disk"


def access(job: Any) -> tuple[Callable[[str], BinaryIO], Callable[[str], int | None]]:
    """How to open a local attachment of ``job`` by its path, and its size (None: missing)."""
    src, options = job.source_info, job.load()[1].options
    container = getattr(src, "container", None)
    if container is not None:
        if container.zip_path is not None:
            names = {i.filename: i.file_size for i in zipfile.ZipFile(container.zip_path).infolist()}
            return container.open, lambda rel: names.get(rel.lstrip("/"))
        root = Path(container.root)
    else:
        root = Path(options.get("files_root") or Path(job.source).resolve().parent)

    def opener(rel: str) -> BinaryIO:
        return resolve(rel, root).open("rb")

    def sizer(rel: str) -> int | None:
        path = resolve(rel, root)
        return path.stat().st_size if path.is_file() else None

    return opener, sizer


def local_files(job: Any) -> dict[str, uploads.LocalFile]:
    """The plan's local attachments to upload (empty when not uploading)."""
    if not uploading(job):
        return {}
    return uploads.local_files(job.plan(), access(job)[1])


def _limit(job: Any) -> float:
    """``--max-file-size`` in bytes."""
    return float(job.load()[1].options.get("max_file_mb") or DEFAULT_MAX_FILE_MB) * 1024 * 1024


def with_uploads(job: Any, estimate: Any, *, resumed: bool = False) -> Any:
    """``estimate`` plus what uploading the job's local attachments takes (requests in the bucket,
    bytes at the assumed upload speed); ``resumed``: only the files the journal has not on Drive."""
    files = local_files(job)
    if not files:
        return estimate
    done = uploads.done_paths(job.state) if resumed and job.state is not None else set()
    limit = _limit(job)
    sizes = [f.size for f in files.values() if f.rel not in done and f.size is not None and f.size <= limit]
    rows = {rid for f in files.values() for rid in f.rows}  # each send request with one gets fresh links
    return uploads.with_uploads(estimate, sizes, min(estimate.requests, len(rows)))


def plan_line(job: Any) -> str | None:
    """The plan's attachments line for the CLI (files and bytes to upload), or None."""
    files = local_files(job)
    return uploads.describe(files) if files else None


def _policy(job: Any) -> str:
    return str(job.load()[1].options.get("missing_files") or "note")


def check_before_sending(job: Any, plan: Any) -> None:
    """Refuse (one line, exit 2) a base URL that does not serve the local files; nothing has been
    sent yet. (Under ``--missing-files fail`` a row with a missing file is invalid, not the run.)"""
    base = job.load()[1].options.get("files_base_url")
    if not base or uploading(job):
        return
    if job.sandbox and not _loopback(base):
        job.notify(f"Files base URL {base} not checked: a sandbox rehearsal reaches only this machine.")
        return
    opener, sizer = access(job)
    rels = []
    for conv in plan.conversations:
        for item in conv.messages:
            for entry in item["message"].get("files") or ():
                rel = rel_of(entry["url"], base)
                if rel is not None and sizer(rel) is not None:
                    rels.append(rel)
        if len(rels) > 1000:
            break
    checked = uploads.check_published(base, rels, opener)
    if checked:
        job.notify(f"Files base URL: {checked} file(s) fetched through {base}, the same bytes as here.")


def _loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine (what a sandbox rehearsal may fetch)."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def waiting_rows(job: Any, plan: Any) -> dict[str, tuple[str, str]]:
    """Under ``--missing-files skip``: the rows whose attachment is missing wait (pending, code)."""
    failures = plan.failures
    if _policy(job) != "skip" or failures is None or not len(failures):
        return {}
    hit = failures[failures["code"].isin(MISSING_CODES)]
    return {
        row_key(r): (str(c), f"waits for its attachment {v}")
        for r, c, v in zip(hit["row"], hit["code"], hit["value"], strict=True)
    }


def prepare_sender(job: Any, plan: Any, sender: Any, client: Any) -> uploads.Staged | None:
    """Give ``sender`` the rows that wait and, when uploading, stage the files on Drive first."""
    sender.waiting = waiting_rows(job, plan)
    files = local_files(job)
    if not files:
        return None
    sender._journal().close()  # a journal of another import is refused before anything is uploaded
    opener, _ = access(job)
    limit = _limit(job)
    folder = f"bulkimport {Path(job.source).name} {str(plan.fingerprint or '')[:12]}".strip()
    done = uploads.done_paths(sender.state)  # a resumed run's bar counts only what goes up now
    total = sum(f.size or 0 for f in files.values() if f.rel not in done and (f.size or 0) <= limit)
    bar = _bar(job, total)
    started = time.monotonic()
    try:
        staged = uploads.stage(
            files,
            client,
            sender.state,
            folder,
            opener,
            max_bytes=limit,
            on_bytes=None if bar is None else bar.update,
        )
    finally:
        if bar is not None:
            bar.close()
    job.notify(_summary(staged, time.monotonic() - started))
    for rid, why in staged.waiting.items():
        sender.waiting.setdefault(rid, why)
    sender.resolve = staged.resolve
    return staged


def _bar(job: Any, total: int) -> Any:
    """A byte-counting tqdm bar when the job shows progress (``progress=True``, or None on a terminal
    or in Jupyter, as the sending bar), else None; a collector of the caller's gets no bar."""
    from .sending.progress import terminal_or_notebook

    wanted = terminal_or_notebook() if job.progress is None else job.progress is True
    if not wanted or not total:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="Uploading attachments")


def _summary(staged: uploads.Staged, seconds: float) -> str:
    """One line: how many files went up, were reused or are missing/too large/failed."""
    from collections import Counter

    count = Counter(f.status for f in staged.files.values())
    up = sum(f.size or 0 for f in staged.files.values() if f.status == "uploaded")
    parts = ", ".join(f"{n} {s}" for s, n in count.most_common())
    return f"Drive: {len(staged.files)} attachment(s): {parts} ({up / 1e6:,.1f} MB in {seconds:.1f} s)."


def add_column(staged: uploads.Staged | None, frame: Any) -> None:
    """``import_files``: each row's file outcomes (uploaded, reused, failed with its code)."""
    if staged is None or frame is None:
        return
    frame["import_files"] = staged.column([row_key(r) for r in frame.index])


__all__ = [
    "access",
    "add_column",
    "check_before_sending",
    "local_files",
    "plan_line",
    "prepare_sender",
    "with_uploads",
]
