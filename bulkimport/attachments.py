"""Attachments that live as local files: which entries of ``message.files`` are local, where the
file is, and the rules for all of them (missing files, the size limit), applied while validating.

When the files go to the portal's Drive (``files_upload = "disk"``), a local path becomes a
*placeholder* URL, ``local://file/<path>``: stable (the plan's fingerprint never holds a token), and
replaced by a fresh ``DOWNLOAD_URL`` right before its message is sent (``sending/uploads.py``).
The name sent is the original one: the path's last part, extension kept (images show inline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pandas as pd

#: The base of placeholder URLs for files that will be uploaded to Drive.
LOCAL_BASE = "local://file"
#: What ``--missing-files`` may say: send the text with a note, let the row wait, or refuse it.
MISSING_POLICIES = ("note", "skip", "fail")
#: The default ``--max-file-size`` (MB). The REST documentation names no per-file cap for Drive
#: (reference §2.1: [UNKNOWN]; the quota applies, and a cloud POST is capped at 2 GB).
DEFAULT_MAX_FILE_MB = 100.0


def is_local(url: str) -> bool:
    """Whether ``url`` is a placeholder for a local file to upload."""
    return url.startswith(LOCAL_BASE + "/")


def local_url(rel: str) -> str:
    """The placeholder URL of local path ``rel`` (``/``-separated)."""
    return LOCAL_BASE + "/" + quote(rel, safe="/")


def local_rel(url: str) -> str:
    """The local path a placeholder URL stands for."""
    return unquote(url[len(LOCAL_BASE) + 1 :])


def files_base(opts: dict[str, Any]) -> str | None:
    """The base URL validation joins local paths to: the user's, or the placeholder base."""
    if opts.get("files_upload") == "disk":
        return LOCAL_BASE
    return opts.get("files_base_url")


def rel_of(url: str, base: str) -> str | None:
    """The local path behind ``url`` when it was built from a local path under ``base``."""
    prefix = base.rstrip("/") + "/"
    return unquote(url[len(prefix) :]) if url.startswith(prefix) else None


def resolve(rel: str, root: Path) -> Path:
    """The local file of path ``rel`` under ``root`` (an absolute path given in a cell stays)."""
    absolute = Path("/" + rel)
    candidate = root / rel
    return candidate if candidate.exists() or not absolute.exists() else absolute


def apply_rules(
    files: pd.Series, text: pd.Series, opts: dict[str, Any]
) -> tuple[pd.Series, pd.Series, dict[str, pd.Series], dict[Any, str]]:
    """Check the local files of ``files`` under ``opts["files_root"]``: a missing one or one above
    ``max_file_mb`` is dropped with a note in the text (``note``), kept for the row to wait
    (``skip``) or makes the row invalid (``fail``). Returns the new files and text, the issue
    masks by code and the offending path per row (the failure's value)."""
    idx = files.index
    masks = {c: pd.Series(False, index=idx) for c in ("file-missing", "file-too-large", "file-missing-fail")}
    values: dict[Any, str] = {}
    root, base = opts.get("files_root"), files_base(opts)
    if not root or base is None or not bool(files.notna().any()):
        return files, text, masks, values
    policy = opts.get("missing_files") or "note"
    limit = float(opts.get("max_file_mb") or DEFAULT_MAX_FILE_MB) * 1024 * 1024
    text = text.copy()
    out = files.tolist()
    for i, (row, entries) in enumerate(files.items()):
        if entries is None or not isinstance(entries, list):
            continue
        kept, notes = [], []
        for entry in entries:
            rel = rel_of(entry["url"], base)
            path = None if rel is None else resolve(rel, Path(root))
            problem = None
            if path is not None and not path.is_file():
                problem, note = "file-missing", f"(file {entry['name']} is missing)"
            elif path is not None and path.stat().st_size > limit:
                problem, note = (
                    "file-too-large",
                    f"(file {entry['name']} was not attached: over the size limit)",
                )
            if problem is None:
                kept.append(entry)
                continue
            values.setdefault(row, rel or entry["url"])
            if policy == "fail":
                masks["file-missing-fail"][row] = True
            else:
                masks[problem][row] = True
            if policy == "note":
                notes.append(note)
            else:
                kept.append(entry)
        if notes:
            old = text.get(row)
            text[row] = "\n".join([old, *notes] if isinstance(old, str) and old else notes)
        out[i] = kept or None
    return pd.Series(out, index=idx, dtype=object), text, masks, values


__all__ = [
    "DEFAULT_MAX_FILE_MB",
    "LOCAL_BASE",
    "MISSING_POLICIES",
    "apply_rules",
    "files_base",
    "is_local",
    "local_rel",
    "local_url",
    "rel_of",
    "resolve",
]
