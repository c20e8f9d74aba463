"""Reading: every input kind becomes the same text DataFrame, indexed by its source position.

One module per input kind: :mod:`.tabular` (xlsx, csv, tsv, txt), :mod:`.telegram` (Telegram
Desktop JSON), :mod:`.whatsapp` (WhatsApp chat text or zip). :func:`detect` tells the kind from
the content, :func:`load` reads any of them into a :class:`Source` (the frame, the mapping a
messenger reader builds for its own columns, and what was found), :func:`read` stays the
tabular reader. Adding a source = one module + one branch in :func:`detect` and :func:`load`.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping as ABCMapping
from pathlib import Path
from typing import Any

from ..errors import InputError, ReadError
from .source import Source
from .tabular import ATTR_DATE1904, ATTR_SOURCE, read, read_text_sample

KINDS = ("xlsx", "csv", "telegram", "whatsapp")

__all__ = ["ATTR_DATE1904", "ATTR_SOURCE", "KINDS", "Source", "detect", "load", "read", "read_text_sample"]

_HTML_HINT = (
    "is a Telegram HTML export; export the chat again as JSON (Telegram Desktop → Export chat history "
    "→ Format: Machine-readable JSON) and pass its result.json"
)


def detect(path: str | Path) -> str:
    """The kind of input at ``path``, by content: ``xlsx``, ``csv``, ``telegram`` or ``whatsapp``.

    Raises ReadError (one line, with the fix) for what is recognisably unusable: a Telegram HTML
    export, an empty zip or one without a chat file, a chat text without one timestamped line.
    """
    p = Path(path)
    if not p.exists():
        raise ReadError(f"{p}: no such file or folder; check the path (current folder: {Path.cwd()})")
    if p.is_dir():
        return _detect_folder(p)
    ext = p.suffix.lower()
    if ext in (".xlsx", ".xlsm"):
        return "xlsx"
    if ext in (".html", ".htm"):
        if p.name.startswith(("messages", "export_results")):
            raise ReadError(f"{p.name} {_HTML_HINT}")
        raise ReadError(
            f"{p.name}: an HTML file is not a chat export bulkimport reads; use xlsx, csv or JSON"
        )
    if p.stat().st_size == 0:
        raise ReadError(f"{p.name}: the file is empty; export the history again")
    with p.open("rb") as fh:
        head = fh.read(1 << 16)
    if ext == ".zip" or head.startswith(b"PK\x03\x04"):
        return _detect_zip(p)
    if ext == ".json" or head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return "telegram" if ext == ".json" or _looks_telegram(head) else "csv"
    if ext in (".txt", "") and _looks_whatsapp(head, p.name):
        return "whatsapp"
    return "csv"


def _looks_telegram(head: bytes) -> bool:
    return any(k in head for k in (b'"messages"', b'"chats"', b'"personal_information"'))


def _looks_whatsapp(head: bytes, name: str) -> bool:
    from .whatsapp import chat_member, is_header

    text = head.decode("utf-8", errors="ignore")
    lines = [ln for ln in text.splitlines()[:30] if ln.strip()]
    hits = sum(is_header(ln) for ln in lines)
    if lines and hits * 2 >= min(len(lines), 10):
        return True
    if chat_member([name]) is not None:  # named like a WhatsApp export: read it as one (clear errors)
        return True
    return bool(lines) and is_header(lines[0])


def _detect_zip(p: Path) -> str:
    from .whatsapp import chat_member

    try:
        with zipfile.ZipFile(p) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except zipfile.BadZipFile:
        raise ReadError(
            f"{p.name}: not a valid zip file (damaged or cut off); copy or export it again"
        ) from None
    if any(n.startswith("xl/") for n in names) and "[Content_Types].xml" in names:
        return "xlsx"
    if not names:
        raise ReadError(f"{p.name}: the zip is empty; export the chat again (WhatsApp → Export chat)")
    if any(n.rsplit("/", 1)[-1] == "result.json" for n in names):
        return "telegram"
    if chat_member(names) is not None:
        return "whatsapp"
    if any(n.rsplit("/", 1)[-1].startswith("messages") and n.endswith(".html") for n in names):
        raise ReadError(f"{p.name} holds a Telegram HTML export; {_HTML_HINT.split('; ', 1)[1]}")
    raise ReadError(
        f"{p.name}: the zip holds no chat file (_chat.txt, WhatsApp Chat….txt or result.json); "
        "pass the zip WhatsApp's Export chat made, or the chat's .txt"
    )


def _detect_folder(p: Path) -> str:
    from .whatsapp import chat_member

    if (p / "result.json").is_file():
        return "telegram"
    if any(p.glob("messages*.html")) or (p / "export_results.html").is_file():
        raise ReadError(f"{p.name}: the folder {_HTML_HINT}")
    texts = [c.name for c in p.iterdir() if c.is_file() and c.suffix.lower() == ".txt"]
    if chat_member(texts) is not None:
        return "whatsapp"
    raise ReadError(
        f"{p}: is a folder without result.json or a WhatsApp chat text; pass the xlsx/csv file, the "
        "Telegram export folder or the WhatsApp .txt/.zip"
    )


def load(
    path: str | Path,
    *,
    sheet: str | int | list[str] | None = None,
    header_row: int | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    timezone: str | None = None,
    operators: ABCMapping[str, Any] | None = None,
    date_order: str | None = None,
    customer: str | None = None,
    include_groups: bool = False,
    include_service: bool = False,
    include_left: bool = False,
    files_base_url: str | None = None,
    strict: bool = True,
) -> Source:
    """Read any supported input into a :class:`Source` (see docs/sources.md).

    * ``timezone``: zone of dates without one (WhatsApp, old Telegram exports); default: the
      machine's zone. ``date_order``: ``dmy``, ``mdy`` or ``ymd`` for WhatsApp dates.
    * ``operators``: ``{author: employee id}``; author = display name or Telegram ``from_id``.
      ``customer``: the WhatsApp author who is the customer when the file name does not say.
    * ``include_groups`` (Telegram full export), ``include_service`` (service/system lines as
      notes), ``include_left`` (Telegram ``left_chats``).
    * ``strict``: raise InputError when a business-side author maps to no employee, or the side of
      the authors cannot be told; ``strict=False`` keeps these in :attr:`Source.problems` (for
      ``bulkimport mapping PATH``, which shows them).

    Tabular files give ``mapping=None``: their mapping is guessed or loaded as before.
    """
    p = Path(path)
    kind = detect(p)
    if kind in ("xlsx", "csv"):
        frame = read(p, sheet=sheet, encoding=encoding, delimiter=delimiter, header_row=header_row)
        return Source(path=p, kind=kind, frame=frame, mapping=None)
    if sheet is not None or header_row is not None:
        raise InputError(f"{p.name}: a {kind} export has no sheets or header row; drop --sheet/--header-row")
    if date_order is not None and date_order not in ("dmy", "mdy", "ymd"):
        raise InputError(f"date order {date_order!r} is not one of dmy, mdy, ymd (--date-order)")
    from . import telegram, whatsapp

    common: dict[str, Any] = {
        "timezone": timezone,
        "operators": operators,
        "include_service": include_service,
        "files_base_url": files_base_url,
        "strict": strict,
    }
    if kind == "telegram":
        return telegram.load_export(p, include_groups=include_groups, include_left=include_left, **common)
    return whatsapp.load_export(p, date_order=date_order, customer=customer, **common)
