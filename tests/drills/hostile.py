"""A corpus of hostile input files, generated on the fly (nothing binary is checked in).

:func:`corpus` writes every case into a folder and returns ``{name: path}``. Each case is what a real
export from an uncleaned system can look like: empty files, header only, binary junk named ``.xlsx``,
a password-protected workbook (an OLE compound file), a 1 MB cell, 5,000 columns, formulas, merged
cells, mixed-type columns, invalid UTF-8, NUL bytes, ragged rows, dates in many formats, emoji and
right-to-left text, duplicate headers, a header in the third row, and a few more.
"""

from __future__ import annotations

import csv
import io
import random
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import openpyxl

HEADER = ["Chat ID", "Client ID", "Client name", "Message ID", "Date", "Text"]


def _row(i: int, *, chat: str | None = None, date: str | None = None, text: str | None = None) -> list[str]:
    return [chat or f"chat{i % 3}", f"client{i % 3}", "Ann", f"m{i}",
            date or f"2025-01-0{1 + i % 9} 10:{i % 60:02d}:00", text if text is not None else f"hello {i}"]


def _csv_text(rows: list[list[str]], header: list[str] = HEADER) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _xlsx(path: Path, rows: list[list[object]], header: list[object] | None = HEADER,
          edit: Callable[[object], None] | None = None) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    if header is not None:
        ws.append(header)
    for r in rows:
        ws.append(r)
    if edit is not None:
        edit(ws)
    wb.save(path)


def ole_encrypted() -> bytes:
    """A minimal OLE compound file as Excel writes for a password-protected workbook: the CFB magic,
    a header, a FAT sector and a directory whose entries are named ``EncryptionInfo`` and
    ``EncryptedPackage`` (what detection keys on; the streams themselves are empty)."""
    sector = 512
    header = bytearray(sector)
    header[0:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHHH", header, 24, 0x3E, 3, 0xFFFE, 9, 6)  # minor, major, byte order, shifts
    struct.pack_into("<I", header, 44, 1)  # FAT sectors
    struct.pack_into("<I", header, 48, 1)  # first directory sector
    struct.pack_into("<I", header, 56, 4096)  # mini stream cutoff
    struct.pack_into("<I", header, 60, 0xFFFFFFFE)  # no mini FAT
    struct.pack_into("<I", header, 68, 0xFFFFFFFE)  # no DIFAT sectors
    struct.pack_into("<I", header, 76, 0)  # DIFAT[0] = FAT in sector 0
    for k in range(1, 109):
        struct.pack_into("<I", header, 76 + 4 * k, 0xFFFFFFFF)
    fat = bytearray(b"\xff" * sector)
    struct.pack_into("<II", fat, 0, 0xFFFFFFFD, 0xFFFFFFFE)  # sector 0: FAT, sector 1: directory (end)
    directory = bytearray(sector)

    def entry(k: int, name: str, kind: int, child: int = 0xFFFFFFFF, right: int = 0xFFFFFFFF) -> None:
        raw = name.encode("utf-16-le") + b"\0\0"
        off = 128 * k
        directory[off:off + len(raw)] = raw
        struct.pack_into("<HBB", directory, off + 64, len(raw), kind, 1)
        struct.pack_into("<III", directory, off + 68, 0xFFFFFFFF, right, child)
        struct.pack_into("<II", directory, off + 116, 0xFFFFFFFE, 0)

    entry(0, "Root Entry", 5, child=1)
    entry(1, "EncryptionInfo", 2, right=2)
    entry(2, "EncryptedPackage", 2)
    entry(3, "", 0)
    return bytes(header + fat + directory)


def corpus(folder: Path, seed: int = 7) -> dict[str, Path]:
    """Write every hostile case into ``folder``; returns {case name: path}."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}

    def text(name: str, content: str | bytes) -> None:
        p = folder / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        out[name] = p

    good = [_row(i) for i in range(6)]
    text("empty.csv", b"")
    text("empty.xlsx", b"")
    text("whitespace.csv", "   \n\n \t\n")
    text("header_only.csv", ",".join(HEADER) + "\n")
    text("junk.xlsx", bytes(rng.getrandbits(8) for _ in range(4096)))
    text("junk_zip.xlsx", _zip_not_xlsx())
    text("encrypted.xlsx", ole_encrypted())
    text("truncated.xlsx", _truncated_xlsx(folder))
    text("big_cell.csv", _csv_text([*good, _row(50, text="x" * 1_000_000)]))
    wide = [f"col{k}" for k in range(5000 - len(HEADER))]
    text("wide.csv", _csv_text([[*r, *("v" for _ in wide)] for r in good], [*HEADER, *wide]))
    bad = b"chat1,client1,Ann,m99,2025-01-02,bad \xff\xfe\xc3(\n"
    text("invalid_utf8.csv", _csv_text(good).encode("utf-8") + bad)
    text("nul_bytes.csv", _csv_text([*good, _row(60, text="nul\x00inside")]).encode("utf-8") + b"\x00\x00\n")
    ragged = _csv_text(good) + "chat1,client1\nchat2,client2,Ann,m70,2025-01-03 10:00:00,hi,extra,more\n\n"
    text("ragged.csv", ragged)
    dates = ["2025-01-02 10:00", "02.01.2025 10:01", "01/02/2025 10:02", "2 Jan 2025 10:03", "1735812240",
             "45659.42", "2025-01-02T10:05:00+03:00", "Jan 2, 2025 10:06 AM", "20250102T100700Z", "вчера",
             "31.02.2025", "0000-00-00", "2025-13-45 99:99", "", "10:00"]
    text("dates.csv", _csv_text([_row(80 + k, chat="chatd", date=d) for k, d in enumerate(dates)]))
    text("emoji_rtl.csv", _csv_text([
        _row(90, text="😀👍🏽 family: 👨‍👩‍👧‍👦"), _row(91, text="مرحبا، كيف حالك؟"),
        _row(92, text="שלום \u202eevil\u202c"), _row(93, chat="чат-😀", text="\u200f\u200e\ufeff zero-width"),
        ["chat9", "client9", "محمد", "m94", "2025-01-03 10:00:00", "سلام"],
    ]))
    text("dup_headers.csv", _csv_text(good, ["Chat ID", "Text", "Client ID", "Text", "Date", "Message ID"]))
    text("header_third_row.csv", "Chat export\nexported 2025-01-01,,,,,\n" + _csv_text(good))
    text("injection.csv", _csv_text([_row(100, text='=HYPERLINK("http://x","y")'),
                                     _row(101, text="+cmd|' /C calc'!A0"), _row(102, text="@SUM(1+1)"),
                                     _row(103, text="-1+1"), _row(104, text="\t=1+1"),
                                     _row(105, chat="=1+1", text="\r=2")]))
    text("semicolon_bom.csv", "\ufeff" + _csv_text(good).replace(",", ";"))
    text("utf16.csv", _csv_text(good).encode("utf-16"))
    text("only_newlines.csv", "\r\n" * 100)
    text("quotes_unbalanced.csv", _csv_text(good) + 'chat1,client1,Ann,m110,2025-01-02,"never closed\n')

    for name, rows, edit in (
        ("formulas.xlsx", [*good, ["chat1", "client1", "Ann", "=1+1", "=NOW()", '=HYPERLINK("http://x","y")']],
         None),
        ("merged.xlsx", good, lambda ws: (ws.merge_cells("A2:A4"), ws.merge_cells("F5:F7"))),
        ("mixed_types.xlsx", [["chat1", 12345, "Ann", 1, 45659.5, 3.14],
                              ["chat1", True, None, 2.0, "2025-01-02 10:00", None],
                              ["chat1", "client1", 7, "m3", _dt(), False]], None),
        ("header_third_row.xlsx", [["exported by CRM"], [], HEADER, *good], None),
        ("big_cell.xlsx", [*good, _row(51, text="y" * 1_000_000)], None),
    ):
        p = folder / name
        _xlsx(p, rows, None if name == "header_third_row.xlsx" else HEADER, edit)
        out[name] = p
    p = folder / "empty_sheet.xlsx"
    _xlsx(p, [], None)
    out["empty_sheet.xlsx"] = p
    p = folder / "wide.xlsx"
    _xlsx(p, [[*r, *("v" for _ in range(300))] for r in good], [*HEADER, *(f"c{k}" for k in range(300))])
    out["wide.xlsx"] = p
    return out


def _dt() -> object:
    import datetime as dt

    return dt.datetime(2025, 1, 2, 10, 0, 0)


def _zip_not_xlsx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "not a workbook")
    return buf.getvalue()


def _truncated_xlsx(folder: Path) -> bytes:
    tmp = folder / ".full.xlsx"
    _xlsx(tmp, [_row(i) for i in range(50)])
    data = tmp.read_bytes()
    tmp.unlink()
    return data[: len(data) // 2]
