"""What every messenger reader shares: the canonical columns, the row collector, sides, time zones.

A messenger reader (Telegram, WhatsApp) appends one :class:`Rows` entry per message it keeps and
counts every message it drops (:meth:`Rows.skip`), then :func:`finish` turns the collected values
into the canonical frame: the same text columns for every messenger, indexed by a stable source
position (``tg:<dialog>:<message>`` or the WhatsApp line number), so that mapping, validation,
planning, the journal and the report see one shape. Memory is what limits a 1 GB export: values
that repeat (chats, authors, sides) are shared objects, the index and ``message_id`` share one string
per message and dates stay integer seconds until the frame is built.
"""

from __future__ import annotations

import contextlib
import os
from array import array
from collections import Counter
from collections.abc import Mapping as ABCMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

from ..errors import InputError, ReadError

#: Columns of a messenger frame, in order; ``MAPPING_COLUMNS`` says which field each one feeds.
COLUMNS = [
    "chat",
    "chat_name",
    "author",
    "author_id",
    "side",
    "user_id",
    "user_name",
    "user_phone",
    "operator_id",
    "date",
    "text",
    "files",
    "attachments",
    "message_id",
]
MAPPING_COLUMNS: dict[str, str] = {
    "chat.id": "chat",
    "chat.name": "chat_name",
    "user.id": "user_id",
    "user.name": "user_name",
    "user.phone": "user_phone",
    "message.id": "message_id",
    "message.date": "date",
    "message.text": "text",
    "message.files": "files",
    "message.user_id": "operator_id",
}
CUSTOMER, OPERATOR = "customer", "operator"


@dataclass
class Author:
    """One author of one conversation: who, which side, how many messages were kept."""

    conversation: str
    name: str
    author_id: str
    side: str = CUSTOMER
    operator_id: int | None = None
    messages: int = 0
    user_id: str | None = None  # user.id of its rows: its own (customer) or the chat's customer


@dataclass
class Conversation:
    """One conversation of the source (a Telegram dialog, a WhatsApp chat)."""

    key: str
    name: str
    type: str
    messages: int = 0
    group: bool = False


@dataclass
class Rows:
    """Column values collected message by message (plain lists; shared objects where values repeat)."""

    index: list[Any] = field(default_factory=list)
    chat: list[str] = field(default_factory=list)
    chat_name: list[str | None] = field(default_factory=list)
    author: list[Author] = field(default_factory=list)
    seconds: array = field(default_factory=lambda: array("q"))  # unix seconds, or wall seconds if naive
    naive: bytearray = field(default_factory=bytearray)  # 1 where ``seconds`` is wall time in the zone
    text: list[str | None] = field(default_factory=list)
    files: list[str | None] = field(default_factory=list)
    message_id: list[str] = field(default_factory=list)
    notes: list[tuple[Any, str, str]] = field(default_factory=list)  # (row, code, value)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(
        self,
        key: Any,
        mid: str,
        conv: Conversation,
        author: Author,
        seconds: int,
        naive: bool,
        text: str | None,
        files: str | None,
    ) -> None:
        """Keep one message."""
        self.index.append(key)
        self.chat.append(conv.key)
        self.chat_name.append(conv.name)
        self.author.append(author)
        self.seconds.append(seconds)
        self.naive.append(naive)
        self.text.append(text)
        self.files.append(files)
        self.message_id.append(mid)
        author.messages += 1
        conv.messages += 1

    def note(self, key: Any, code: str, value: str) -> None:
        """A warning for the row ``key`` (travels to the plan's failures and the report)."""
        self.notes.append((key, code, value))

    def skip(self, reason: str, n: int = 1) -> None:
        """Count a message that is not imported, by reason."""
        self.skipped[reason] += n


# --------------------------------------------------------------------------------------------------
# time zones
# --------------------------------------------------------------------------------------------------
def local_zone() -> str:
    """The machine's IANA time zone name (TZ, /etc/localtime, /etc/timezone), else ``UTC``."""
    candidates: list[str] = []
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz:
        candidates.append(tz)
    target = os.path.realpath("/etc/localtime")
    if "zoneinfo/" in target:
        candidates.append(target.split("zoneinfo/", 1)[1])
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    for name in candidates:
        if name.startswith("posix/") or name.startswith("right/"):
            name = name.split("/", 1)[1]
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return name
    return "UTC"


def check_zone(timezone: str | None, option: str = "timezone") -> str:
    """``timezone`` checked (default: the machine's zone); unknown names are an InputError."""
    if timezone is None:
        return local_zone()
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            f"{option} {timezone!r} is not a known time zone; use an IANA name such as "
            "'Europe/Moscow' or 'UTC' (--timezone)"
        ) from None
    return str(timezone)


def to_dates(seconds: array, naive: bytearray, zone: str) -> pd.Series:
    """Unix seconds (or wall seconds in ``zone`` where ``naive``) → tz-aware datetimes in ``zone``.

    Wall times follow the rule of :func:`bulkimport.values.parse_dates`: a repeated hour (autumn)
    is the first one, a skipped hour (spring) moves forward.
    """
    secs = np.array(np.frombuffer(seconds, dtype="int64")) if len(seconds) else np.zeros(0, dtype="int64")
    flags = np.frombuffer(bytes(naive), dtype=np.uint8).astype(bool)
    if flags.any():  # wall time → unix seconds, all at once (no per-value objects)
        wall = pd.to_datetime(secs[flags], unit="s")
        local = wall.tz_localize(
            ZoneInfo(zone), ambiguous=np.ones(len(wall), dtype=bool), nonexistent="shift_forward"
        )
        secs[flags] = (
            local.tz_convert("UTC").tz_localize(None).to_numpy().astype("datetime64[s]").astype("int64")
        )
    return pd.Series(pd.to_datetime(secs, unit="s", utc=True)).dt.tz_convert(zone)


# --------------------------------------------------------------------------------------------------
# operators and sides
# --------------------------------------------------------------------------------------------------
def normalise_operators(operators: ABCMapping[str, Any] | None) -> dict[str, int]:
    """``{author: employee id}`` with keys case-folded; ids must be positive whole numbers."""
    out: dict[str, int] = {}
    for name, emp in (operators or {}).items():
        value = emp
        if isinstance(emp, str) and emp.strip().isdigit():
            value = int(emp.strip())
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise InputError(
                f"operator {name!r}: {emp!r} is not a Bitrix24 employee id; use --operator "
                f"'{name}=<positive whole number>' (the employee's user id on the portal)"
            )
        out[str(name).strip().casefold()] = value
    return out


def operator_for(operators: dict[str, int], *names: str | None) -> int | None:
    """The employee id of the first of ``names`` (display name, author id …) listed in ``operators``."""
    for n in names:
        if n:
            found = operators.get(str(n).strip().casefold())
            if found is not None:
                return found
    return None


def unmapped_message(source: str, authors: list[Author]) -> str:
    """The one-line refusal for business-side authors without an employee id (each author once,
    its messages summed over its conversations)."""
    counts: Counter[tuple[str, str]] = Counter()
    for a in authors:
        counts[(a.author_id, a.name)] += a.messages
    listed = ", ".join(f"{name or aid!r} ({n} messages)" for (aid, name), n in list(counts.items())[:10])
    more = f" and {len(counts) - 10} more" if len(counts) > 10 else ""
    first = next(iter(counts))
    return (
        f"{source}: business-side author(s) {listed}{more} map to no Bitrix24 employee; give each one "
        f"with --operator '{first[1] or first[0]}=<employee id>' (repeatable; or [operators] in the "
        "mapping file)"
    )


# --------------------------------------------------------------------------------------------------
# the canonical frame
# --------------------------------------------------------------------------------------------------
def _column(values: list[Any]) -> Any:
    """Python values → a ``str`` array (missing values stay missing)."""
    return pd.array(np.asarray(values, dtype=object), dtype="str")


def _urls(base_url: str, cell: str | None) -> str | None:
    """Relative attachment paths (one per line) → URLs under ``base_url``."""
    if cell is None:
        return None
    base = base_url.rstrip("/")
    return "\n".join(f"{base}/{quote(rel, safe='/')}" for rel in cell.split("\n"))


def _take(values: list[Any]) -> Any:
    """:func:`_column`, then the list is emptied (its column holds the same string objects)."""
    out = _column(values)
    values.clear()
    return out


def finish(rows: Rows, zone: str, source: str, base_url: str | None = None) -> pd.DataFrame:
    """Collected rows → the canonical frame (index ``row``, :data:`COLUMNS`, attrs ``source``).

    ``attachments`` holds the attachment paths relative to the export root (one per line);
    ``files`` (message.files) the same as URLs under ``base_url`` when it is given, percent-encoded
    here so that a comma or semicolon in a file name never splits it into two files."""
    if not rows.index:
        raise ReadError(f"{source}: no message to import ({skipped_text(rows.skipped)}); check the export")
    authors = rows.author
    seen: set[int] = set()
    user_name: list[str | None] = []
    user_phone: list[str | None] = []
    for a in authors:  # a customer's name and phone on its first row only: one warning at most
        first = a.side == CUSTOMER and id(a) not in seen
        if first:
            seen.add(id(a))
        phone = first and phone_like(a.name)
        user_name.append(a.name if first and not phone and a.name else None)
        user_phone.append(a.name if phone else None)
    # one column at a time, each source list emptied once its column exists: the lists and the
    # columns are never all alive at once (what bounds the peak memory of a 1 GB export)
    data: dict[str, Any] = {
        "chat": _take(rows.chat),
        "chat_name": _take(rows.chat_name),
        "author": _column([a.name or None for a in authors]),
        "author_id": _column([a.author_id for a in authors]),
        "side": _column([a.side for a in authors]),
        "user_id": _column([a.user_id for a in authors]),
        "user_name": _take(user_name),
        "user_phone": _take(user_phone),
        "operator_id": _column([None if a.operator_id is None else str(a.operator_id) for a in authors]),
    }
    authors.clear()
    data["date"] = to_dates(rows.seconds, rows.naive, zone).array
    del rows.seconds[:], rows.naive[:]
    data["text"] = _take(rows.text)
    data["files"] = _column(rows.files if base_url is None else [_urls(base_url, f) for f in rows.files])
    data["attachments"] = _take(rows.files)
    if rows.index and all(type(k) is int for k in rows.index[:100]):
        index = pd.Index(np.asarray(rows.index, dtype="int64"), name="row")
    else:
        index = pd.Index(_column(rows.index), name="row")
    rows.index.clear()
    data["message_id"] = _take(rows.message_id)
    frame = pd.DataFrame(data, index=index, copy=False)
    frame.attrs["source"] = source
    return frame


def phone_like(name: str | None) -> bool:
    """Whether an author string is a phone number (WhatsApp shows unsaved contacts so)."""
    if not name:
        return False
    digits = sum(ch.isdigit() for ch in name)
    return digits >= 7 and all(ch.isdigit() or ch in "+-() ." for ch in name)


def skipped_text(skipped: Counter[str]) -> str:
    if not skipped:
        return "the export holds no messages"
    return "skipped: " + ", ".join(f"{n} {why}" for why, n in skipped.most_common())


# --------------------------------------------------------------------------------------------------
# where attachments live: the export folder or the zip
# --------------------------------------------------------------------------------------------------
class Container:
    """The export's folder or zip: which attachment paths exist, and their bytes (for uploads)."""

    def __init__(self, root: Path, zip_path: Path | None = None, names: list[str] | None = None) -> None:
        self.root = root
        self.zip_path = zip_path
        self._names = None if names is None else {n.replace("\\", "/") for n in names}

    def exists(self, rel: str) -> bool:
        """Whether ``rel`` (a path relative to the export root, ``/``-separated) is a file there."""
        rel = rel.replace("\\", "/").lstrip("/")
        if not rel or any(p == ".." for p in rel.split("/")):
            return False
        if self._names is not None:
            return rel in self._names
        return (self.root / rel).is_file()

    def open(self, rel: str) -> Any:
        """A binary file object for the attachment ``rel`` (what the attachments upload reads)."""
        if not self.exists(rel):
            raise ReadError(f"{rel}: no such attachment in {self.zip_path or self.root}")
        if self.zip_path is not None:
            import zipfile

            zf = zipfile.ZipFile(self.zip_path)
            return zf.open(rel.replace("\\", "/").lstrip("/"))
        return (self.root / rel).open("rb")

    def where(self) -> str:
        """Human words for the container (a zip file or a folder)."""
        return f"the zip {self.zip_path.name}" if self.zip_path is not None else f"the folder {self.root}"
