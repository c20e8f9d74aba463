"""Attachments that live as local files: which entries of ``message.files`` are local, where the
file is, and the rules for all of them (missing files, the size limit), applied while validating.

When the files go to the portal's Drive (``files_upload = "disk"``), a local path becomes a
*placeholder* URL, ``local://file/<path>``: stable (the plan's fingerprint never holds a token), and
replaced by a fresh ``DOWNLOAD_URL`` right before its message is sent (``sending/uploads.py``).
The name sent is the original one: a messenger's own file name (Telegram's ``file_name``, a WhatsApp
file without its iOS counter), else the path's last part; the extension is kept (images show inline).
A reader hands those names, and the rows whose attachment is missing from the export, to planning
in its frame's ``attrs`` (:data:`NAMES_ATTR`, :data:`MISSING_ATTR`); :func:`export_rules` applies
them to the prepared rows.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pandas as pd

from . import codes

#: The base of placeholder URLs for files that will be uploaded to Drive.
LOCAL_BASE = "local://file"
#: What ``--missing-files`` may say: send the text with a note, let the row wait, or refuse it.
MISSING_POLICIES = ("note", "skip", "fail")
#: The default ``--max-file-size`` (MB). The REST documentation names no per-file cap for Drive
#: (reference §2.1: [UNKNOWN]; the quota applies, and a cloud POST is capped at 2 GB).
DEFAULT_MAX_FILE_MB = 100.0
#: Frame attribute of a messenger export: local path → the file's original name (where it differs).
NAMES_ATTR = "attachment_names"
#: Frame attribute of a messenger export: row → the path of an attachment missing from the export.
MISSING_ATTR = "attachments_missing"
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f]+")


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


def original_name(shown: str | None, rel: str) -> str:
    """The name to send for local file ``rel`` whose messenger calls it ``shown``: ``shown`` without
    any folder part or control character, with ``rel``'s extension added when it has none (an image
    shows inline only with its extension); ``rel``'s last part when ``shown`` is empty."""
    tail = rel.replace("\\", "/").rsplit("/", 1)[-1]
    name = _BAD_NAME.sub(" ", str(shown or "")).replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name in (".", ".."):
        return tail
    ext = tail.rpartition(".")[2] if "." in tail.lstrip(".") else ""
    if ext and "." not in name.lstrip("."):
        name = f"{name}.{ext}"
    return name


def mark_export(frame: pd.DataFrame, names: Mapping[str, str], notes: Any) -> None:
    """Hand planning a messenger export's original file names and its rows whose attachment is
    missing (``notes``: the reader's ``(row, code, value)`` warnings), in ``frame.attrs``."""
    frame.attrs[NAMES_ATTR] = dict(names)
    missing: dict[Any, str] = {}
    for key, code, value in notes:
        if code == "attachment-missing":
            missing.setdefault(key, str(value))
    frame.attrs[MISSING_ATTR] = missing


def export_rules(prep: Any, frame: pd.DataFrame) -> Any:
    """The prepared rows of ``frame`` (validation's ``Prepared``) with a messenger export's rules:
    each attachment sent under its original name (:data:`NAMES_ATTR`), and under
    ``--missing-files fail`` each row whose attachment is missing from the export (:data:`MISSING_ATTR`)
    invalid, code ``file-missing-fail``; that code's message names the path (spreadsheets too)."""
    names: Mapping[str, str] = frame.attrs.get(NAMES_ATTR) or {}
    missing: Mapping[Any, str] = frame.attrs.get(MISSING_ATTR) or {}
    canon, failures, invalid = prep.canonical, prep.failures, prep.invalid
    opts = prep.mapping.options
    base = files_base(opts)
    if names and base is not None and "message.files" in canon.columns:
        canon["message.files"] = canon["message.files"].map(lambda v: _renamed(v, names, base))
    if missing and opts.get("missing_files") == "fail":
        entry = codes.get("file-missing-fail")
        rows = [r for r in missing if r in invalid.index]
        extra = pd.DataFrame(
            {
                "row": rows,
                "field": "message.files",
                "code": entry.code,
                "level": entry.level,
                "message": entry.render(field="message.files"),
                "value": [missing[r] for r in rows],
            },
            columns=failures.columns,
        )
        failures = pd.concat([failures, extra], ignore_index=True) if len(extra) else failures
        invalid = invalid.copy()
        invalid.loc[rows] = True
    hit = failures["code"].eq("file-missing-fail") & failures["value"].notna()
    if bool(hit.any()):
        failures = failures.copy()
        failures.loc[hit, "message"] = (
            failures.loc[hit, "message"].str.rstrip(".") + ": " + failures.loc[hit, "value"].astype(str)
        )
    return dataclasses.replace(prep, canonical=canon, failures=failures, invalid=invalid)


def _renamed(entries: Any, names: Mapping[str, str], base: str) -> Any:
    """A row's ``message.files`` with each local file under its original name."""
    if not isinstance(entries, list):
        return entries
    out = []
    for entry in entries:
        rel = rel_of(entry["url"], base)
        name = names.get(rel) if rel is not None else None
        out.append({**entry, "name": name} if name else entry)
    return out


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
    "MISSING_ATTR",
    "MISSING_POLICIES",
    "NAMES_ATTR",
    "apply_rules",
    "export_rules",
    "files_base",
    "is_local",
    "local_rel",
    "local_url",
    "mark_export",
    "original_name",
    "rel_of",
    "resolve",
]
