"""Generate the messenger example exports (invented people): run ``python data_examples/messengers.py``.

Writes, next to this script:

* ``telegram/`` — a Telegram Desktop single-chat export folder: ``result.json`` (a personal chat
  between the customer Olga Smirnova and the business account "Northwind Support", formatted
  text, a reply, a forward, a service message, a photo, a file and a media placeholder) plus
  ``photos/`` and ``files/``.
* ``whatsapp/WhatsApp Chat with Pavel Novak.txt`` — an Android export (en-GB, day-first, 24 h)
  with a multi-line message, system lines, an omitted medium and a deleted message.
* ``whatsapp/WhatsApp Chat - Lena Fischer.zip`` — an iOS export (en-US, month-first, 12 h with
  U+202F before AM/PM) with ``_chat.txt`` and two attached media files.

The functions build the other shapes the tests need (full-account exports, old exports without
``date_unixtime``, other locales and date orders, groups) from the same few building blocks.
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: 1x1 PNG, a minimal PDF: real files of the right kind, a few bytes each
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ffff3f0005fe02fe"
    "a7d6a4b50000000049454e44ae426082"
)
PDF = (
    b"%PDF-1.1\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


# --------------------------------------------------------------------------------------------------
# Telegram
# --------------------------------------------------------------------------------------------------
def tg_message(
    mid: int,
    when: dt.datetime,
    author: str | None,
    from_id: str,
    text: Any = "",
    *,
    unixtime: bool = True,
    local_offset: int = 3,
    **extra: Any,
) -> dict[str, Any]:
    """One message object as Telegram Desktop writes it (``date`` = exporter's local time, naive)."""
    local = (when + dt.timedelta(hours=local_offset)).replace(tzinfo=None)
    msg: dict[str, Any] = {"id": mid, "type": "message", "date": local.isoformat(timespec="seconds")}
    if unixtime:
        msg["date_unixtime"] = str(int(when.timestamp()))
    msg["from"] = author
    msg["from_id"] = from_id
    msg.update(extra)
    msg["text"] = text
    if unixtime:
        msg["text_entities"] = _entities(text)
    return msg


def _entities(text: Any) -> list[dict[str, Any]]:
    if isinstance(text, str):
        return [{"type": "plain", "text": text}] if text else []
    return [p if isinstance(p, dict) else {"type": "plain", "text": p} for p in text]


def tg_service(
    mid: int, when: dt.datetime, actor: str, actor_id: str, action: str, **extra: Any
) -> dict[str, Any]:
    """A service message (a call, a pin, a group change)."""
    msg = {
        "id": mid,
        "type": "service",
        "date": when.replace(tzinfo=None).isoformat(timespec="seconds"),
        "date_unixtime": str(int(when.timestamp())),
        "actor": actor,
        "actor_id": actor_id,
        "action": action,
    }
    msg.update(extra)
    msg["text"] = ""
    return msg


def example_dialog(prefix: str = "", unixtime: bool = True) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The example personal chat and the media files it references (paths under ``prefix``)."""
    t0 = dt.datetime(2024, 3, 4, 9, 15, tzinfo=dt.UTC)
    olga, biz = ("Olga Smirnova", "user5550001"), ("Northwind Support", "user5550100")
    photo = f"{prefix}photos/photo_1@04-03-2024_12-20-00.jpg"
    pdf = f"{prefix}files/price list 2024.pdf"

    def at(minutes: int) -> dt.datetime:
        return t0 + dt.timedelta(minutes=minutes)

    kw = {"unixtime": unixtime}
    messages = [
        tg_message(101, at(0), *olga, "Hello! Is the blue kettle still in stock?", **kw),
        tg_message(
            102, at(3), *biz, ["Hi Olga, ", {"type": "bold", "text": "yes"}, ", we have 4 left."], **kw
        ),
        tg_message(103, at(4), *olga, "", photo=photo, photo_file_size=len(PNG), width=1, height=1, **kw),
        tg_message(104, at(5), *olga, "Is it this one?", reply_to_message_id=103, **kw),
        tg_message(
            105,
            at(9),
            *biz,
            [
                "Exactly. The price list: ",
                {"type": "text_link", "text": "our site", "href": "https://example.com/prices"},
            ],
            reply_to_message_id=104,
            **kw,
        ),
        tg_message(
            106,
            at(10),
            *biz,
            "",
            file=pdf,
            file_name="price list 2024.pdf",
            mime_type="application/pdf",
            **kw,
        ),
        tg_service(
            107,
            at(12),
            "Olga Smirnova",
            "user5550001",
            "phone_call",
            duration_seconds=65,
            discard_reason="hangup",
        ),
        tg_message(108, at(14), *olga, "A friend recommended you:", forwarded_from="Ivan Petrov", **kw),
        tg_message(
            109,
            at(15),
            *olga,
            "",
            file="(File not included. Change data exporting settings to download.)",
            file_name="voice.ogg",
            media_type="voice_message",
            mime_type="audio/ogg",
            **kw,
        ),
        tg_message(110, at(20), *biz, ["Thank you! ", {"type": "italic", "text": "Have a nice day."}], **kw),
    ]
    dialog = {"name": "Olga Smirnova", "type": "personal_chat", "id": 5550001, "messages": messages}
    return dialog, {photo: PNG, pdf: PDF}


def write_telegram_single(folder: Path, unixtime: bool = True) -> Path:
    """A single-chat export folder (``result.json`` + media); returns the folder."""
    dialog, media = example_dialog(unixtime=unixtime)
    return _write_export(folder, dialog, media)


def full_export(
    dialogs: list[dict[str, Any]], exporter: int, left: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A full-account export object around ``dialogs``."""
    return {
        "about": "Here is the data you requested.",
        "personal_information": {
            "user_id": exporter,
            "first_name": "Northwind",
            "last_name": "Support",
            "phone_number": "+000 000 0000",
            "username": "@northwind",
            "bio": "",
        },
        "contacts": {"about": "contacts", "list": [{"first_name": "Olga", "last_name": "Smirnova"}]},
        "chats": {"about": "chats", "list": dialogs},
        "left_chats": {"about": "left", "list": left or []},
        "other_data": {"about": "", "changes_log": []},
    }


def write_telegram_full(folder: Path) -> Path:
    """A full-account export: the example chat, a group, a channel and saved messages."""
    first, media = example_dialog(prefix="chats/chat_001/")
    t = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
    group = {
        "name": "Kettle owners",
        "type": "private_supergroup",
        "id": 7770001,
        "messages": [
            tg_message(1, t, "Mark Brown", "user5550002", "Mine leaks, help"),
            tg_message(2, t + dt.timedelta(minutes=1), "Sara Lee", "user5550003", "Same here"),
            tg_message(
                3, t + dt.timedelta(minutes=5), "Northwind Support", "user5550100", "Please send us a photo"
            ),
        ],
    }
    channel = {
        "name": "Northwind news",
        "type": "public_channel",
        "id": 8880001,
        "messages": [tg_message(1, t, "Northwind news", "channel8880001", "New kettles!")],
    }
    saved = {
        "type": "saved_messages",
        "id": 5550100,
        "messages": [tg_message(1, t, "Northwind Support", "user5550100", "note to self")],
    }
    second = {
        "name": None,
        "type": "personal_chat",
        "id": 5550009,
        "messages": [
            tg_message(1, t, None, "user5550009", "Are you open on Sunday?"),
            tg_message(2, t + dt.timedelta(minutes=2), "Northwind Support", "user5550100", "Yes, 10 to 16."),
        ],
    }
    left = [
        {
            "name": "Old chat",
            "type": "private_group",
            "id": 9990001,
            "messages": [tg_message(1, t, "Zed", "user5550008", "bye")],
        }
    ]
    data = full_export([first, group, channel, saved, second], exporter=5550100, left=left)
    return _write_export(folder, data, media)


def _write_export(folder: Path, data: dict[str, Any], media: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "result.json").write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    for rel, blob in media.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
    return folder


# --------------------------------------------------------------------------------------------------
# WhatsApp
# --------------------------------------------------------------------------------------------------
def wa_stamp(
    when: dt.datetime,
    platform: str = "android",
    order: str = "dmy",
    sep: str = "/",
    twelve: bool = False,
    year_digits: int = 2,
    seconds: bool | None = None,
    ampm: tuple[str, str] = ("AM", "PM"),
) -> str:
    """A WhatsApp timestamp as a locale writes it (without the separator that follows it)."""
    y = f"{when.year % 100:02d}" if year_digits == 2 else str(when.year)
    d, m = str(when.day), str(when.month)
    if platform == "ios" or sep == ".":
        d, m = f"{when.day:02d}", f"{when.month:02d}"
    date = {
        "dmy": f"{d}{sep}{m}{sep}{y}",
        "mdy": f"{m}{sep}{d}{sep}{y}",
        "ymd": f"{when.year}{sep}{when.month:02d}{sep}{when.day:02d}",
    }[order]
    with_s = platform == "ios" if seconds is None else seconds
    if twelve:
        h = when.hour % 12 or 12
        mark = ampm[0] if when.hour < 12 else ampm[1]
        time = f"{h}:{when.minute:02d}" + (f":{when.second:02d}" if with_s else "") + "\u202f" + mark
    else:
        time = f"{when.hour:02d}:{when.minute:02d}" + (f":{when.second:02d}" if with_s else "")
    return f"[{date}, {time}]" if platform == "ios" else f"{date}, {time}"


def wa_line(when: dt.datetime, author: str | None, text: str, platform: str = "android", **fmt: Any) -> str:
    """One message (or system line when ``author`` is None) in the platform's layout."""
    stamp = wa_stamp(when, platform, **fmt)
    if platform == "ios":
        return f"{stamp} {author}: {text}" if author else f"{stamp} {text}"
    return f"{stamp} - {author}: {text}" if author else f"{stamp} - {text}"


def android_example() -> str:
    """The Android example chat (en-GB, day-first): customer Pavel Novak, business Northwind Support."""
    t = dt.datetime(2024, 1, 28, 18, 2)
    p, b = "Pavel Novak", "Northwind Support"

    def at(minutes: int) -> dt.datetime:
        return t + dt.timedelta(minutes=minutes)

    lines = [
        wa_line(
            at(0),
            None,
            "Messages and calls are end-to-end encrypted. No one outside of this chat, not even "
            "WhatsApp, can read or listen to them. Tap to learn more.",
        ),
        wa_line(at(1), p, "Good evening, my order #1043 has not arrived"),
        wa_line(at(3), b, "Sorry to hear that! Let me check."),
        wa_line(
            at(4), b, "It left our warehouse on 25 January.\nTracking: NW-1043-XY\nIt should arrive tomorrow."
        ),
        wa_line(at(6), p, "<Media omitted>"),
        wa_line(at(7), p, "That was the screenshot of the tracking page"),
        wa_line(at(8), p, "This message was deleted"),
        wa_line(dt.datetime(2024, 2, 13, 9, 30), p, "It arrived, thank you!"),
        wa_line(dt.datetime(2024, 2, 13, 9, 41), b, "Great, enjoy it \U0001f600"),
    ]
    return "\n".join(lines) + "\n"


def ios_example() -> tuple[str, dict[str, bytes]]:
    """The iOS example chat (en-US, month-first, 12 h) and its media: customer Lena Fischer."""
    t = dt.datetime(2024, 7, 3, 20, 15, 5)
    lf, b = "Lena Fischer", "Northwind Support"
    photo, pdf = "00000003-PHOTO-2024-07-03-20-17-40.jpg", "00000005-invoice 2291.pdf"

    def at(minutes: int) -> dt.datetime:
        return t + dt.timedelta(minutes=minutes)

    fmt = {"order": "mdy", "twelve": True}
    lines = [
        "\u200e"
        + wa_line(
            at(0),
            lf,
            "\u200eMessages and calls are end-to-end encrypted. No one outside of this "
            "chat, not even WhatsApp, can read or listen to them.",
            "ios",
            **fmt,
        ),
        wa_line(at(1), lf, "Hi, the lid of my kettle broke", "ios", **fmt),
        wa_line(at(2), lf, f"\u200e<attached: {photo}>", "ios", **fmt),
        wa_line(at(9), b, "Thanks Lena, we will send a new lid.\nNo charge, of course.", "ios", **fmt),
        wa_line(at(10), b, f"invoice 2291.pdf • 1 page \u200e<attached: {pdf}>", "ios", **fmt),
        wa_line(at(11), lf, "\u200eimage omitted", "ios", **fmt),
        wa_line(dt.datetime(2024, 7, 15, 8, 5, 0), lf, "Got it, works perfectly", "ios", **fmt),
    ]
    return "\n".join(lines) + "\n", {photo: PNG, pdf: PDF}


def write_zip(path: Path, chat: str, media: dict[str, bytes], member: str = "_chat.txt") -> Path:
    """A zip holding the chat text and its media (as WhatsApp shares it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in {member: chat.encode("utf-8"), **media}.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 7, 15, 8, 10, 0))  # fixed: same bytes every run
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, blob)
    return path


def main() -> None:
    """Write the examples next to this script."""
    write_telegram_single(HERE / "telegram")
    wa = HERE / "whatsapp"
    wa.mkdir(exist_ok=True)
    (wa / "WhatsApp Chat with Pavel Novak.txt").write_text(android_example(), encoding="utf-8")
    chat, media = ios_example()
    write_zip(wa / "WhatsApp Chat - Lena Fischer.zip", chat, media)
    print(f"wrote {HERE / 'telegram'} and {wa}")


if __name__ == "__main__":
    main()
