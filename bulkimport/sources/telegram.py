"""Telegram Desktop "Export chat history" (machine-readable JSON, ``result.json``) → canonical rows.

Both shapes are read: a single chat (the file *is* the dialog: ``name``, ``type``, ``id``,
``messages``) and a full account export (``personal_information``, ``chats.list``, ``left_chats``).
The file is streamed (:class:`JsonStream`): one message object at a time is decoded with the
standard library's C scanner, so a 1 GB export never sits in memory as one parsed tree.

Row id (and ``message.id``) = ``tg:<dialog id>:<message id>`` (message ids are unique only within
a dialog); ``chat.id`` = ``tg:<dialog id>``; ``user.id`` = ``tg:<from_id>`` of the customer. Which
side: in a full export the exporter (``personal_information.user_id``) is the business; in a single
personal chat the dialog's ``id`` is the customer and the other author the business; in a group
the authors given as operators are the business. See docs/sources.md for what is kept and dropped.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from collections.abc import Iterator
from collections.abc import Mapping as ABCMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..attachments import mark_export, original_name
from ..errors import ReadError
from .common import (
    CUSTOMER,
    OPERATOR,
    Author,
    Container,
    Conversation,
    Rows,
    check_zone,
    normalise_operators,
    operator_for,
)
from .source import Source, build

PERSONAL = {"personal_chat"}
GROUPS = {"private_group", "private_supergroup", "public_supergroup"}
_SKIP_TYPES = {
    "saved_messages": "saved messages",
    "replies": "replies",
    "bot_chat": "bot chats",
    "private_channel": "channels",
    "public_channel": "channels",
}
_BB = {"bold": "b", "italic": "i", "underline": "u", "strikethrough": "s", "code": "code", "pre": "code"}
_SNIPPETS = 50_000  # replied-to texts remembered per dialog (replies point at recent messages)
_EPOCH = dt.datetime(1970, 1, 1)


class JsonStream:
    """A forward-only JSON reader: walk objects and arrays, decode one value at a time.

    Keeps a window of the text (a few MB) and decodes each value with ``json``'s C scanner
    (``raw_decode``); a value cut at the window's end is retried after reading more.
    """

    CHUNK = 1 << 22

    def __init__(self, fh: IO[bytes], name: str) -> None:
        self.fh = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="strict")
        self.name = name
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.consumed = 0  # characters dropped from the front of the window
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.fh.read(self.CHUNK)
        except UnicodeDecodeError:
            raise ReadError(
                f"{self.name}: not UTF-8 text; this is not a Telegram Desktop export (export it again)"
            ) from None
        if not chunk:
            self.eof = True
            return False
        if self.pos > len(self.buf) // 2:
            self.consumed += self.pos
            self.buf = self.buf[self.pos :]
            self.pos = 0
        self.buf += chunk
        return True

    def peek(self) -> str:
        """The next non-blank character ('' at the end of the file)."""
        while True:
            buf, n = self.buf, len(self.buf)
            while self.pos < n and buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < n:
                return buf[self.pos]
            if not self._fill():
                return ""

    def truncated(self) -> ReadError:
        """The error for a file that ends in the middle of the JSON."""
        return ReadError(
            f"{self.name}: the JSON ends early (cut off after {self.consumed + self.pos:,} characters); "
            "the export or the copy did not finish: export the chat history again"
        )

    def bad(self, what: str) -> ReadError:
        """The error for malformed JSON at the current position."""
        line = self.buf.count("\n", 0, self.pos) + 1
        return ReadError(
            f"{self.name}: not valid JSON ({what} near window line {line}, character "
            f"{self.consumed + self.pos:,}); export the chat history again as machine-readable JSON"
        )

    def expect(self, ch: str) -> None:
        """Consume ``ch`` (after blanks) or fail."""
        got = self.peek()
        if got == "":
            raise self.truncated()
        if got != ch:
            raise self.bad(f"expected {ch!r}, found {got!r}")
        self.pos += 1

    def value(self) -> Any:
        """Decode the next complete value."""
        if self.peek() == "":
            raise self.truncated()
        while True:
            try:
                obj, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if self._fill():
                    continue
                if exc.pos >= len(self.buf) - 1 or "Unterminated" in exc.msg:
                    raise self.truncated() from None
                self.pos = exc.pos
                raise self.bad(exc.msg) from None
            if end >= len(self.buf) and self._fill():
                continue  # a number at the window's end may go on
            self.pos = end
            return obj

    def members(self) -> Iterator[str]:
        """Iterate an object's keys; the caller consumes each value before the next key."""
        self.expect("{")
        if self.peek() == "}":
            self.pos += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise self.bad("expected a key")
            self.expect(":")
            yield key
            sep = self.peek()
            if sep == ",":
                self.pos += 1
                continue
            if sep == "}":
                self.pos += 1
                return
            raise self.truncated() if sep == "" else self.bad("expected ',' or '}'")

    def items(self) -> Iterator[None]:
        """Iterate an array; the caller consumes each element."""
        self.expect("[")
        if self.peek() == "]":
            self.pos += 1
            return
        while True:
            yield None
            sep = self.peek()
            if sep == ",":
                self.pos += 1
                continue
            if sep == "]":
                self.pos += 1
                return
            raise self.truncated() if sep == "" else self.bad("expected ',' or ']'")


@dataclass
class Options:
    """What to take from an export (see :func:`bulkimport.sources.load`)."""

    operators: dict[str, int] = field(default_factory=dict)
    include_groups: bool = False
    include_service: bool = False
    include_left: bool = False


@dataclass
class _Dialog:
    conv: Conversation
    did: str
    dtype: str
    authors: dict[str, Author] = field(default_factory=dict)
    snippets: dict[int, tuple[str, str]] = field(default_factory=dict)


class TelegramReader:
    """Streams one ``result.json`` into :class:`Rows`; sides are decided after the last message."""

    def __init__(self, name: str, container: Container, options: Options) -> None:
        self.name = name
        self.container = container
        self.opt = options
        self.rows = Rows()
        self.exporter: str | None = None
        self.full = False
        self.dialogs: list[_Dialog] = []
        self.problems: list[str] = []
        self.names: dict[str, str] = {}  # attachment path → its original name (file_name), where it differs

    # ------------------------------------------------------------------ structure
    def read(self, fh: IO[bytes]) -> None:
        """Walk the top level: a dialog (single chat) or a full account export."""
        js = JsonStream(fh, self.name)
        if js.peek() != "{":
            if js.peek() == "":
                raise ReadError(f"{self.name}: the file is empty; export the chat history again")
            raise ReadError(f"{self.name}: not a Telegram Desktop JSON export (it does not start with '{{')")
        head: dict[str, Any] = {}
        seen_messages = False
        for key in js.members():
            if key == "messages":
                seen_messages = True
                self._dialog(js, head, single=True, left=False)
            elif key in ("chats", "left_chats"):
                self.full = True
                for sub in js.members():
                    if sub == "list":
                        for _ in js.items():
                            self._dialog_object(js, left=key == "left_chats")
                    else:
                        js.value()
            elif key == "personal_information":
                info = js.value()
                if isinstance(info, dict) and info.get("user_id") is not None:
                    self.exporter = f"user{info['user_id']}"
            else:
                head[key] = js.value()
        if js.peek() != "":
            raise js.bad("text after the end of the export")
        if not seen_messages and not self.full:
            raise ReadError(
                f"{self.name}: a JSON file without 'messages' or 'chats': not a Telegram Desktop export "
                "(Telegram Desktop → Export chat history → Format: Machine-readable JSON)"
            )

    def _dialog_object(self, js: JsonStream, left: bool) -> None:
        head: dict[str, Any] = {}
        for key in js.members():
            if key == "messages":
                self._dialog(js, head, single=False, left=left)
            else:
                head[key] = js.value()

    def _dialog(self, js: JsonStream, head: dict[str, Any], single: bool, left: bool) -> None:
        """The ``messages`` array of one dialog whose ``name``/``type``/``id`` came before it."""
        dtype = str(head.get("type") or "")
        did = head.get("id")
        if did is None or not dtype:
            raise ReadError(
                f"{self.name}: a dialog's 'messages' come before its 'id' and 'type'; this is not a "
                "file written by Telegram Desktop: export the chat history again"
            )
        why = self._skip_reason(dtype, single, left)
        if why is not None:
            n = sum(1 for _ in self._skip_all(js))
            self.rows.skip(why, n)
            return
        did_s = str(did)
        name = head.get("name")
        conv = Conversation(
            f"tg:{did_s}", str(name) if name else f"Telegram {did_s}", dtype, group=dtype in GROUPS
        )
        dialog = _Dialog(conv, did_s, dtype)
        self.dialogs.append(dialog)
        for _ in js.items():
            msg = js.value()
            if isinstance(msg, dict):
                self._message(dialog, msg)
            else:
                self.rows.skip("not a message object")
        dialog.snippets.clear()  # replies point inside their dialog: no need to keep these

    def _skip_all(self, js: JsonStream) -> Iterator[None]:
        for _ in js.items():
            js.value()
            yield None

    def _skip_reason(self, dtype: str, single: bool, left: bool) -> str | None:
        if left and not self.opt.include_left:
            return "messages of left chats (include_left)"
        if dtype in PERSONAL:
            return None
        if dtype in GROUPS:
            return None if (single or self.opt.include_groups) else "group messages (include_groups)"
        return f"messages of {_SKIP_TYPES.get(dtype, dtype or 'unknown dialogs')}"

    # ------------------------------------------------------------------ one message
    def _message(self, d: _Dialog, msg: dict[str, Any]) -> None:
        mtype = msg.get("type", "message")
        if mtype == "unsupported":
            self.rows.skip("unsupported messages")
            return
        service = mtype == "service"
        if service and not self.opt.include_service:
            self.rows.skip("service messages (calls, pins, group changes)")
            return
        mid = msg.get("id")
        if not isinstance(mid, int):
            self.rows.skip("messages without an id")
            return
        key = f"tg:{d.did}:{mid}"
        seconds, naive = self._date(msg)
        if seconds is None:
            self.rows.skip("messages without a date")
            return
        author = self._author(d, msg, service)
        body = render_text(msg.get("text", ""))
        notes: list[str] = []
        files = self._media(msg, key, notes)
        if service:
            body = _service_text(msg)
        lines = [*self._quote(d, msg), body, *notes]
        text = "\n".join(x for x in lines if x) or None
        if text is None and files is None:
            self.rows.skip("empty messages")
            return
        snippet = body or ("(attachment)" if files else "\n".join(notes))
        if snippet:
            d.snippets[mid] = (author.name or "", snippet)
            if len(d.snippets) > _SNIPPETS:
                for k in list(d.snippets)[: _SNIPPETS // 2]:
                    del d.snippets[k]
        self.rows.add(key, key, d.conv, author, seconds, naive, text, files)

    def _date(self, msg: dict[str, Any]) -> tuple[int | None, bool]:
        unix = msg.get("date_unixtime")
        if isinstance(unix, (str, int)) and str(unix).isdigit():
            return int(unix), False
        date = msg.get("date")
        if isinstance(date, str):
            try:
                wall = dt.datetime.fromisoformat(date)
            except ValueError:
                return None, False
            if wall.tzinfo is not None:
                return int(wall.timestamp()), False
            return int((wall - _EPOCH).total_seconds()), True
        return None, False

    def _author(self, d: _Dialog, msg: dict[str, Any], service: bool) -> Author:
        raw_id = msg.get("actor_id" if service else "from_id")
        name = msg.get("actor" if service else "from")
        if isinstance(raw_id, int):  # very old exports: a bare number
            raw_id = f"user{raw_id}"
        aid = str(raw_id) if raw_id else f"name:{name or 'unknown'}"
        found = d.authors.get(aid)
        if found is None:
            found = Author(d.conv.key, str(name) if name else "", aid)
            d.authors[aid] = found
        elif not found.name and name:
            found.name = str(name)
        return found

    def _quote(self, d: _Dialog, msg: dict[str, Any]) -> list[str]:
        out = []
        if "forwarded_from" in msg:
            who = msg.get("forwarded_from")
            out.append(f"[i]Forwarded from {who}[/i]" if who else "[i]Forwarded message[/i]")
        reply = msg.get("reply_to_message_id")
        if isinstance(reply, int):
            if msg.get("reply_to_peer_id"):
                out.append("[i]In reply to a message in another chat[/i]")
            elif reply in d.snippets:
                who, text = d.snippets[reply]
                short = " ".join(text.split())
                short = short if len(short) <= 60 else short[:59] + "…"
                out.append(f"[i]In reply to {who or 'a message'}: «{short}»[/i]")
            else:
                out.append("[i]In reply to an earlier message[/i]")
        return out

    def _media(self, msg: dict[str, Any], key: str, notes: list[str]) -> str | None:
        paths = []
        for field_, kind in (("photo", "photo"), ("file", msg.get("media_type") or "file")):
            value = msg.get(field_)
            if not isinstance(value, str) or not value:
                continue
            label = str(kind).replace("_", " ")
            shown = msg.get("file_name") if field_ == "file" else None
            if value.startswith("(") and not self.container.exists(value):
                notes.append(f"({label}{' ' + shown if shown else ''} not included in the export)")
                self.rows.note(key, "media-not-included", value)
            elif self.container.exists(value):
                rel = value.replace("\\", "/")
                paths.append(rel)
                name = original_name(shown, rel)
                if name != rel.rsplit("/", 1)[-1]:
                    self.names[rel] = name
            else:
                notes.append(f"({label} {value.rsplit('/', 1)[-1]} is missing from the export)")
                self.rows.note(key, "attachment-missing", value)
        if msg.get("media_type") == "sticker" and not paths and msg.get("sticker_emoji"):
            notes.append(str(msg["sticker_emoji"]))
        notes.extend(_other_media(msg))
        return "\n".join(paths) if paths else None

    # ------------------------------------------------------------------ sides
    def decide_sides(self) -> list[Author]:
        """Customer or business for every author; returns the business authors without an employee."""
        unmapped: list[Author] = []
        for d in self.dialogs:
            customer = f"user{d.did}" if d.dtype in PERSONAL else None
            for a in d.authors.values():
                emp = operator_for(self.opt.operators, a.author_id, a.author_id.removeprefix("user"), a.name)
                if customer is not None:  # a personal chat: its peer is the customer, whoever else
                    business = a.author_id != customer
                    emp = emp if business else None
                else:
                    business = emp is not None or a.author_id == self.exporter
                if business:
                    a.side, a.operator_id = OPERATOR, emp
                    a.user_id = f"tg:{customer}" if customer else None
                    if emp is None:
                        unmapped.append(a)
                else:
                    a.side, a.user_id = CUSTOMER, f"tg:{a.author_id}"
            if d.conv.group and d.authors and not any(a.side == OPERATOR for a in d.authors.values()):
                self.problems.append(
                    f"{self.name}: nobody in group {d.conv.name!r} is on the business side; name the "
                    "employees among its authors with --operator 'AUTHOR=<employee id>'"
                )
        return unmapped


def render_text(text: Any) -> str:
    """Telegram ``text`` (a string, or strings mixed with entity objects) → text with BB-codes."""
    if isinstance(text, str):
        return text
    if not isinstance(text, list):
        return ""
    out: list[str] = []
    for part in text:
        if isinstance(part, str):
            out.append(part)
            continue
        if not isinstance(part, dict):
            continue
        t = str(part.get("text") or "")
        if not t:
            continue
        kind = part.get("type")
        tag = _BB.get(str(kind))
        if tag is not None:
            out.append(f"[{tag}]{t}[/{tag}]")
        elif kind == "text_link" and _safe_href(part.get("href")):
            out.append(f"[url={_safe_href(part.get('href'))}]{t}[/url]")
        else:
            out.append(t)
    return "".join(out)


def _safe_href(href: Any) -> str | None:
    if not isinstance(href, str):
        return None
    href = href.strip().replace("]", "%5D").replace("[", "%5B")
    if any(ch.isspace() for ch in href) or not href.lower().startswith(
        ("http://", "https://", "tg://", "mailto:")
    ):
        return None
    return href


def _service_text(msg: dict[str, Any]) -> str:
    action = str(msg.get("action") or "service message").replace("_", " ")
    extra = render_text(msg.get("text", ""))
    who = msg.get("actor") or "someone"
    detail = ""
    if msg.get("duration_seconds") is not None:
        detail = f", {msg['duration_seconds']} s"
    if msg.get("discard_reason"):
        detail += f", {msg['discard_reason']}"
    if isinstance(msg.get("members"), list):
        detail += ": " + ", ".join(str(m) for m in msg["members"] if m)
    if msg.get("title"):
        detail += f": {msg['title']}"
    return f"[i]{who}: {action}{detail}[/i]" + (f"\n{extra}" if extra else "")


def _other_media(msg: dict[str, Any]) -> list[str]:
    out = []
    contact = msg.get("contact_information")
    if isinstance(contact, dict):
        who = " ".join(str(contact.get(k) or "") for k in ("first_name", "last_name")).strip()
        out.append(f"Contact: {who} {contact.get('phone_number') or ''}".strip())
    loc = msg.get("location_information")
    if isinstance(loc, dict) and loc.get("latitude") is not None:
        place = " ".join(str(msg.get(k)) for k in ("place_name", "address") if msg.get(k))
        url = f"https://maps.google.com/?q={loc.get('latitude')},{loc.get('longitude')}"
        out.append(f"Location: {place + ' ' if place else ''}{url}")
    poll = msg.get("poll")
    if isinstance(poll, dict):
        answers = [str(a.get("text")) for a in poll.get("answers") or [] if isinstance(a, dict)]
        out.append("Poll: " + str(poll.get("question") or "") + "".join(f"\n- {a}" for a in answers))
    return out


def load_export(
    path: Path,
    *,
    timezone: str | None,
    operators: ABCMapping[str, Any] | None,
    include_groups: bool,
    include_service: bool,
    include_left: bool,
    files_base_url: str | None,
    strict: bool,
) -> Source:
    """A ``result.json`` (or its folder, or a zip holding it) → :class:`Source`."""
    zone = check_zone(timezone)
    opts = Options(normalise_operators(operators), include_groups, include_service, include_left)
    if path.is_dir():
        path = path / "result.json"
    if zipfile.is_zipfile(path) and path.suffix.lower() != ".json":
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            member = min((n for n in names if n.rsplit("/", 1)[-1] == "result.json"), key=len)
            prefix = member[: -len("result.json")]
            inner = [n[len(prefix) :] for n in names if n.startswith(prefix)]
            container: Container = _PrefixedZip(path, prefix, inner)
            reader = TelegramReader(path.name, container, opts)
            with zf.open(member) as fh:
                reader.read(fh)
    else:
        container = Container(path.parent)
        reader = TelegramReader(path.name, container, opts)
        with path.open("rb") as fh:
            reader.read(fh)
    unmapped = reader.decide_sides()
    authors = [a for d in reader.dialogs for a in d.authors.values()]
    notes = list(reader.rows.notes)
    src = build(
        path=path,
        kind="telegram",
        rows=reader.rows,
        conversations=[d.conv for d in reader.dialogs],
        authors=authors,
        unmapped=[a for a in unmapped if a.messages],
        problems=reader.problems,
        zone=zone,
        container=container,
        files_base_url=files_base_url,
        strict=strict,
    )
    mark_export(src.frame, reader.names, notes)  # original file names; rows missing a file
    return src


class _PrefixedZip(Container):
    """A zip whose export root is a folder inside it (``Telegram Export/result.json``)."""

    def __init__(self, zip_path: Path, prefix: str, names: list[str]) -> None:
        super().__init__(zip_path.parent, zip_path, names)
        self.prefix = prefix

    def open(self, rel: str) -> Any:
        """The attachment's bytes from inside the zip."""
        if not self.exists(rel):
            raise ReadError(f"{rel}: no such attachment in {self.where()}")
        assert self.zip_path is not None
        return zipfile.ZipFile(self.zip_path).open(self.prefix + rel.replace("\\", "/").lstrip("/"))
