"""WhatsApp "Export chat" (``WhatsApp Chat with NAME.txt``, or a zip with ``_chat.txt`` and media).

A message starts with a line that begins with a timestamp — Android ``DATE, TIME - AUTHOR: TEXT``,
iOS ``[DATE, TIME] AUTHOR: TEXT`` and their localised variants — and every other line continues
it. The date order (day-, month- or year-first) is decided from every date of the file (a part
above 12, then which part goes down within a year, then which part changes more often); a file
where nothing decides is refused with the ``date_order`` hint. Invisible marks (U+200E, U+200F,
U+2068/9 …) are removed and odd spaces (U+202F, U+00A0, U+2009) made plain before matching.
The file is read line by line (twice: a short look at its first lines fixes the timestamp
layout), so a 100 MB chat never sits in memory as one string.

Row id = the line number where the message starts; ``message.id`` = ``<chat id>:<line>:<unix
seconds>`` where the chat id is a hash of the chat's name and its first line: the same export
gives the same ids on every run. See docs/sources.md for what is kept and dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from collections.abc import Mapping as ABCMapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..attachments import mark_export, original_name
from ..errors import InputError, ReadError
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
    phone_like,
)
from .source import Source, build

_INVISIBLE = dict.fromkeys(
    map(ord, "\u200e\u200f\u2068\u2069\u202a\u202b\u202c\u202d\u202e\ufeff\u2066\u2067")
)
_INVISIBLE.update(dict.fromkeys(map(ord, "\u202f\u00a0\u2009\u2007"), " "))
_ODD = re.compile("[" + "".join(map(chr, _INVISIBLE)) + "]")
_AMPM = r"[AaPp]\.?\s?[Mm]\.?|vorm\.|nachm\.|de\.|du\.|ص|م|π\.?μ\.?|μ\.?μ\.?|午前|午後|上午|下午|오전|오후"
_HEADER = re.compile(
    r"(?P<br>\[)?"
    r"(?P<date>\d{1,4}(?P<s1>[./-]) ?\d{1,2}(?P=s1) ?\d{1,4})\.?"
    r",? +(?:klo +)?"
    rf"(?:(?P<pre>{_AMPM}) ?)?"
    r"(?P<h>\d{1,2})[:.](?P<m>\d{2})(?:[:.](?P<s>\d{2}))?"
    rf"(?: ?(?P<ap>{_AMPM}))?"
    r"(?P<sep>\] ?| [-–] |: | )"
)
_AM = {"am", "a", "vorm", "de", "午前", "上午", "오전", "ص", "πμ"}
_PM = {"pm", "p", "nachm", "du", "午後", "下午", "오후", "م", "μμ"}
_AUTHOR = re.compile(r"(?P<author>[^:\n]{1,80}?):(?: (?P<text>.*))?$", re.S)
_SYSTEM_NO_AUTHOR = re.compile(
    r"end-to-end|сквозным шифрованием|Ende-zu-Ende|extremo a extremo|bout en bout|ponta a ponta|"
    r" created group | created this group|^You were added|^You joined| added | removed | left$|"
    r" joined using | changed the subject | changed this group's | changed the group | deleted this group's|"
    r" changed their phone number| changed to | security code | is now an admin| no longer an admin|"
    r" создал\(-а\) группу| добавил\(-а\) | покинул\(-а\) группу| удалил\(-а\) ",
)
_SYSTEM_TEXT = re.compile(
    r"^(?:Messages and calls are end-to-end encrypted|Messages to this (?:chat|group) and calls are now "
    r"secured|Сообщения и звонки защищены|Your security code with|Missed (?:voice|video) call|"
    r"Waiting for this message)"
)
_DELETED = re.compile(
    r"^(?:This message was deleted\.?|You deleted this message\.?|Este mensaje fue eliminado\.?|"
    r"Сообщение удалено|Данное сообщение удалено\.?|Diese Nachricht wurde gelöscht\.?|"
    r"Ce message a été supprimé\.?|Essa mensagem foi apagada\.?|Questo messaggio è stato eliminato\.?)$"
)
_EDITED = re.compile(
    r"\s*<(?:This message was edited|Сообщение изменено|Diese Nachricht wurde bearbeitet|"
    r"Se editó este mensaje\.?)>$"
)
_IOS_ATTACHED = re.compile(r"<(?P<word>[^<>:\d][^<>:]{1,25}): (?P<name>[^<>]+?)>")
_ANDROID_ATTACHED = re.compile(r"^(?P<name>[^\n]+?\.[\w]{0,6}) \((?P<word>[^()\n]{3,30})\)$")
_IOS_COUNTER = re.compile(r"^\d{8}-(.+)$")
_ATTACHED_WORDS = {
    "file attached",
    "файл добавлен",
    "datei angehängt",
    "archivo adjunto",
    "fichier joint",
    "arquivo anexado",
    "file allegato",
    "dosya eklendi",
    "plik załączony",
    "bestand bijgevoegd",
}
_MEDIA_OMITTED = re.compile(
    r"^<(?:Media omitted|Без медиафайлов|Média vynechány|Medien ausgeschlossen|Multimedia omitido|"
    r"Archivo omitido|Médias omis|Mídia oculta|Media weggelaten|Media omessi|Medya dahil edilmedi)>$|"
    r"(?:^|\s)(?:image|video|audio|GIF|sticker|document|Contact card|photo) omitted$|"
    r"^(?:imagen|video|audio|sticker|documento|GIF) omitid[oa]$|"
    r"^(?:Bild|Video|Audio|Sticker|GIF|Dokument) weggelassen$|"
    r"^(?:изображение|видео|аудио|стикер|GIF|документ) отсутствует$",
    re.I,
)
_OMITTED_ENDINGS = (">", "omitted", "omitida", "omitido", "weggelassen", "отсутствует")
_NAMED = [
    re.compile(r"^WhatsApp Chat\s*-\s*(?P<name>.+)$", re.I),
    re.compile(r"^WhatsApp[- ]Chat (?:with|mit|con|met|com) (?P<name>.+)$", re.I),
    re.compile(
        r"^(?:Chat|Conversa|Discussion) (?:de |do )?WhatsApp (?:con|com|avec|with) (?P<name>.+)$", re.I
    ),
    re.compile(r"^Чат WhatsApp с (?:контактом |группой )?(?P<name>.+)$", re.I),
]
_CHAT_NAMES = re.compile(r"(^|/)(_chat\.txt|WhatsApp.*\.txt|Чат WhatsApp.*\.txt|.*WhatsApp.*\.txt)$", re.I)
ORDERS = ("dmy", "mdy", "ymd")
Opener = Callable[[], AbstractContextManager[IO[bytes]]]


def clean(line: str) -> str:
    """A line without invisible direction marks and with odd spaces made plain."""
    return line.translate(_INVISIBLE) if _ODD.search(line) else line


def is_header(line: str) -> bool:
    """Whether ``line`` starts with a WhatsApp timestamp (used by detection)."""
    return _HEADER.match(clean(line)) is not None


def customer_from_name(stem: str) -> str | None:
    """The chat partner named in an export's file name (``WhatsApp Chat with Anna`` → ``Anna``)."""
    for rx in _NAMED:
        m = rx.match(stem.strip())
        if m:
            return m.group("name").strip()
    return None


def chat_member(names: list[str]) -> str | None:
    """The chat text inside a zip: ``_chat.txt`` or ``WhatsApp Chat….txt`` (shortest path first)."""
    hits = [n for n in names if _CHAT_NAMES.search(n) and not n.startswith("__MACOSX")]
    return min(hits, key=lambda n: (n.count("/"), len(n))) if hits else None


@dataclass
class Options:
    """What to take and how to read dates (see :func:`bulkimport.sources.load`)."""

    operators: dict[str, int] = field(default_factory=dict)
    date_order: str | None = None
    customer: str | None = None
    include_service: bool = False


@dataclass(slots=True)
class _Msg:
    line: int
    day: str
    tod: int
    author: Author | None
    lines: list[str]
    system: bool


class WhatsAppReader:
    """Parses one chat text into :class:`Rows`; dates and sides are decided after the last line."""

    def __init__(self, name: str, title: str, container: Container, options: Options) -> None:
        self.name = name
        self.title = title  # the chat's name from the file name, or the file's stem
        self.container = container
        self.opt = options
        self.rows = Rows()
        self.problems: list[str] = []
        self.authors: dict[str, Author] = {}
        self.group_hint = False
        self.conv: Conversation | None = None
        self.order: str | None = None
        self.prefix = ""  # folder of the chat text inside the zip (attachments sit beside it)
        self.names: dict[str, str] = {}  # attachment path → its name without the iOS counter (00000013-)
        self.named: str | None = None  # the chat partner the file name names
        self._days: dict[str, str] = {}  # distinct date strings, in file order (shared objects)

    # ------------------------------------------------------------------ reading
    def read(self, opener: Opener) -> None:
        """Two passes over ``opener()`` streams: the timestamp layout, then every message."""
        with opener() as fh:
            shape = self._shape(_lines(fh, self.name))
        msgs: list[_Msg] = []
        first: str | None = None
        with opener() as fh:
            cur: _Msg | None = None
            for no, raw in enumerate(_lines(fh, self.name), start=1):
                line = clean(raw.rstrip("\r\n"))
                m = _HEADER.match(line)
                if m is not None and _signature(m) == shape:
                    if first is None:
                        first = line
                    cur = self._start(no, m, line[m.end() :], raw)
                    msgs.append(cur)
                elif cur is not None:
                    cur.lines.append(line)
                elif line.strip():
                    self.rows.skip("lines before the first message")
        if first is None:
            raise ReadError(
                f"{self.name}: no line starts with a WhatsApp date and time; this is not a WhatsApp chat "
                "export (WhatsApp → chat → More → Export chat)"
            )
        key = hashlib.sha256(f"{self.title}\n{first}".encode()).hexdigest()[:12]
        self.conv = Conversation(f"wa:{key}", self.title, "whatsapp")
        self._collect(msgs)

    def _shape(self, lines: Iterator[str]) -> tuple[bool, str] | None:
        seen: Counter[tuple[bool, str]] = Counter()
        for i, raw in enumerate(lines):
            if i >= 2000:
                break
            m = _HEADER.match(clean(raw))
            if m is not None:
                seen[_signature(m)] += 1
        return seen.most_common(1)[0][0] if seen else None

    def _start(self, no: int, m: re.Match[str], rest: str, raw: str) -> _Msg:
        h, mi, s = int(m.group("h")), int(m.group("m")), int(m.group("s") or 0)
        marker = (m.group("ap") or m.group("pre") or "").lower().replace(".", "").replace(" ", "")
        if marker in _PM and h < 12:
            h += 12
        elif marker in _AM and h == 12:
            h = 0
        tod = h * 3600 + mi * 60 + s
        day = self._days.setdefault(m.group("date").replace(" ", ""), m.group("date").replace(" ", ""))
        lrm = "\u200e" in raw[: m.end() + 90]  # iOS marks system lines (and attachments) with U+200E
        author, text, system = self._split(rest, bracket=bool(m.group("br")), lrm=lrm)
        return _Msg(no, day, tod, author, [text], system)

    def _split(self, rest: str, bracket: bool, lrm: bool) -> tuple[Author | None, str, bool]:
        am = _AUTHOR.match(rest)
        if am is None or (not bracket and _SYSTEM_NO_AUTHOR.search(am.group("author"))):
            # Android system lines have no "author: "; one whose text holds a colon ('X changed
            # the subject to "a: b"') shows the system phrase in what would be the author
            self._group_words(rest)
            return None, rest, True
        name = am.group("author").strip()
        text = am.group("text") or ""
        system = bool(_SYSTEM_TEXT.match(text))
        if (
            bracket
            and lrm
            and not system
            and _SYSTEM_NO_AUTHOR.search(text)
            and not _IOS_ATTACHED.search(text)
        ):
            system = True
            self._group_words(text)
        author = self.authors.get(name.casefold())
        if author is None:
            author = Author("", name, name)
            self.authors[name.casefold()] = author
        return author, text, system

    def _group_words(self, text: str) -> None:
        if re.search(
            r"created group|created this group| added | joined using|changed the subject|"
            r"создал\(-а\) группу|добавил\(-а\)",
            text,
        ):
            self.group_hint = True

    # ------------------------------------------------------------------ messages → rows
    def _collect(self, msgs: list[_Msg]) -> None:
        assert self.conv is not None
        days = self._resolve_days()
        conv = self.conv
        for a in self.authors.values():
            a.conversation = conv.key
        for i, msg in enumerate(msgs):
            msgs[i] = None  # type: ignore[call-overload]  # each parsed line freed once it is a row
            text = "\n".join(msg.lines).strip("\n")
            if msg.system or msg.author is None:
                if self.opt.include_service and msg.author is not None:
                    text = f"[i]{text}[/i]"
                else:
                    self.rows.skip("system lines (encryption notices, joins, subject changes)")
                    continue
            if text.endswith(">"):
                text = _EDITED.sub("", text)
            if _DELETED.match(text.strip()):
                self.rows.skip("deleted messages")
                continue
            seconds = days[msg.day] + msg.tod
            mid = f"{conv.key}:{msg.line}:{seconds}"
            text, files = self._attachments(msg.line, text)
            if not text and files is None:
                self.rows.skip("empty messages")
                continue
            self.rows.add(msg.line, mid, conv, msg.author, seconds, True, text or None, files)

    def _attachments(self, row: int, text: str) -> tuple[str, str | None]:
        paths: list[str] = []
        notes: list[str] = []

        def attach(name: str) -> bool:
            rel = self._find(name)
            if rel is not None:
                paths.append(rel)
                counted = _IOS_COUNTER.match(rel.rsplit("/", 1)[-1])
                if counted:  # iOS saves "Contract.pdf" as "00000013-Contract.pdf"
                    self.names[rel] = original_name(counted.group(1), rel)
                return True
            notes.append(f"(attachment {name} is missing from the export)")
            self.rows.note(row, "attachment-missing", name)
            return True

        def ios(m: re.Match[str]) -> str:
            name = m.group("name").strip()
            if re.match(r"^\d{8}-", name) or self._find(name) is not None:
                attach(name)
                return ""
            return m.group(0)

        if "<" in text:
            text = _IOS_ATTACHED.sub(ios, text)
        lines = text.split("\n")
        am = _ANDROID_ATTACHED.match(lines[0].strip()) if lines[0].rstrip().endswith(")") else None
        if am and (
            am.group("word").strip().lower() in _ATTACHED_WORDS or self._find(am.group("name")) is not None
        ):
            name = am.group("name").strip()
            attach(name)
            lines = lines[1:]
            if lines and lines[0].strip() == name:  # documents: Android repeats the name
                lines = lines[1:]
        text = "\n".join(lines).strip()
        if text.endswith(_OMITTED_ENDINGS) and _MEDIA_OMITTED.search(text):
            notes.append("(media not included in the export)")
            self.rows.note(row, "media-not-included", text)
            text = _MEDIA_OMITTED.sub("", text).strip()
        body = "\n".join(x for x in [text, *notes] if x)
        return body, ("\n".join(paths) if paths else None)

    def _find(self, name: str) -> str | None:
        name = name.strip()
        for rel in (name, f"{self.prefix}{name}"):
            if self.container.exists(rel):
                return rel
        return None

    # ------------------------------------------------------------------ dates
    def _resolve_days(self) -> dict[str, int]:
        """Each distinct date string → unix seconds of its midnight (wall time)."""
        keys = list(self._days)
        parts = [tuple(int(p) for p in re.split(r"[./-]", k)) for k in keys]
        order = self.opt.date_order or decide_order(parts, keys, self.name)
        self.order = order
        out: dict[str, int] = {}
        epoch = dt.date(1970, 1, 1)
        for k, (a, b, c) in zip(keys, parts, strict=True):
            y, mo, d = (a, b, c) if order == "ymd" else (c, b, a) if order == "dmy" else (c, a, b)
            if y < 100:
                y += 2000
            try:
                day = dt.date(y, mo, d)
            except ValueError:
                raise ReadError(
                    f"{self.name}: the date {k!r} is not a valid {order} date; pass the right "
                    "--date-order (dmy, mdy or ymd)"
                ) from None
            out[k] = (day - epoch).days * 86400
        return out

    # ------------------------------------------------------------------ sides
    def decide_sides(self) -> list[Author]:
        """Customer or business for every author; returns business authors without an employee."""
        assert self.conv is not None
        conv = self.conv
        authors = [a for a in self.authors.values() if a.messages]
        named = (self.opt.customer or self.named or "").strip()
        customer = (
            next((a for a in authors if a.name.casefold() == named.casefold()), None) if named else None
        )
        conv.group = customer is None and (self.group_hint or len(authors) > 2)
        # the customer's user.id: the named author's, or the named person's who wrote nothing
        cust = customer.name if customer is not None else (named or None) if not conv.group else None
        if cust is None and not conv.group:
            cust = self._unnamed_customer(authors)
        unmapped = []
        for a in authors:
            emp = operator_for(self.opt.operators, a.name)
            if a is not customer and (cust is not None or emp is not None) and a.name != cust:
                a.side, a.operator_id = OPERATOR, emp
                a.user_id = _user_id(conv.key, cust) if cust is not None else None
                if emp is None:
                    unmapped.append(a)
            else:
                a.side, a.operator_id, a.user_id = CUSTOMER, None, _user_id(conv.key, a.name)
        if conv.group and not any(a.side == OPERATOR for a in authors):
            self.problems.append(
                f"{self.name}: a group chat and nobody in it is on the business side; name the employees "
                "among its authors with --operator 'AUTHOR=<employee id>'"
            )
        return unmapped

    def _unnamed_customer(self, authors: list[Author]) -> str | None:
        """A 1:1 chat whose file name names nobody: the one author not given as an operator."""
        mapped = [a for a in authors if operator_for(self.opt.operators, a.name) is not None]
        rest = [a for a in authors if a not in mapped]
        if len(rest) == 1 and (mapped or len(authors) == 1):
            return rest[0].name
        names = ", ".join(repr(a.name) for a in authors)
        self.problems.append(
            f"{self.name}: cannot tell the customer among {names} (the file name names none); give the "
            "business side with --operator 'AUTHOR=<employee id>'"
        )
        return None


def _user_id(chat: str, name: str) -> str:
    if phone_like(name):
        return "wa:+" + "".join(ch for ch in name if ch.isdigit())
    return f"{chat}:{name}"


def _signature(m: re.Match[str]) -> tuple[bool, str]:
    return bool(m.group("br")), m.group("sep").strip() or " "


def decide_order(parts: list[tuple[int, ...]], keys: list[str], name: str) -> str:
    """dmy, mdy or ymd from every distinct date of a file (in file order); ambiguous → InputError."""
    if not parts:
        return "dmy"
    if all(len(re.split(r"[./-]", k)[0]) == 4 for k in keys):
        return "ymd"
    first_big = any(p[0] > 12 for p in parts)
    second_big = any(p[1] > 12 for p in parts)
    if first_big and not second_big:
        return "dmy"
    if second_big and not first_big:
        return "mdy"
    if not (first_big or second_big):
        down_a = down_b = changes_a = changes_b = 0
        for prev, cur in itertools.pairwise(parts):
            if prev[2] != cur[2]:
                continue
            down_a += cur[0] < prev[0]
            down_b += cur[1] < prev[1]
            changes_a += cur[0] != prev[0]
            changes_b += cur[1] != prev[1]
        if down_a and not down_b:
            return "dmy"
        if down_b and not down_a:
            return "mdy"
        if not (down_a or down_b):
            if changes_a >= 3 and changes_a >= 2 * changes_b:
                return "dmy"
            if changes_b >= 3 and changes_b >= 2 * changes_a:
                return "mdy"
    sample = ", ".join(repr(k) for k in keys[:3])
    raise InputError(
        f"{name}: cannot tell whether the dates ({sample} …) are day-first or month-first; pass "
        "--date-order dmy (31/12/24) or --date-order mdy (12/31/24)"
    )


def _lines(fh: IO[bytes], name: str) -> Iterator[str]:
    text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="strict", newline=None)
    try:
        yield from text
    except UnicodeDecodeError:
        raise ReadError(
            f"{name}: not UTF-8 text; WhatsApp exports are UTF-8 — export the chat again"
        ) from None


@contextmanager
def _open_file(path: Path) -> Iterator[IO[bytes]]:
    with path.open("rb") as fh:
        yield fh


@contextmanager
def _open_member(path: Path, member: str) -> Iterator[IO[bytes]]:
    with zipfile.ZipFile(path) as zf, zf.open(member) as fh:
        yield fh


def opener_for(path: Path, member: str | None) -> Opener:
    """A function that opens the chat text afresh (a file, or a member of a zip)."""
    if member is None:
        return lambda: _open_file(path)
    return lambda: _open_member(path, member)


def load_export(
    path: Path,
    *,
    timezone: str | None,
    operators: ABCMapping[str, Any] | None,
    date_order: str | None,
    customer: str | None,
    include_service: bool,
    files_base_url: str | None,
    strict: bool,
) -> Source:
    """A WhatsApp chat text, a zip holding one (with media) or a folder holding one → :class:`Source`."""
    zone = check_zone(timezone)
    opts = Options(normalise_operators(operators), date_order, customer, include_service)
    member: str | None = None
    if path.is_dir():
        texts = sorted(c.name for c in path.iterdir() if c.is_file() and c.suffix.lower() == ".txt")
        found = chat_member(texts)
        if found is None:
            raise ReadError(f"{path}: no WhatsApp chat text (_chat.txt or WhatsApp Chat….txt) in the folder")
        text_path, container, stem = path / found, Container(path), Path(found).stem
        opener = opener_for(text_path, None)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
        member = chat_member(names)
        if member is None:
            raise ReadError(
                f"{path.name}: the zip holds no WhatsApp chat text (_chat.txt or WhatsApp Chat….txt)"
            )
        container = Container(path.parent, path, names)
        inner = Path(member).stem
        stem = path.stem if customer_from_name(inner) is None else inner
        opener = opener_for(path, member)
    else:
        container, stem, opener = Container(path.parent), path.stem, opener_for(path, None)
    named = customer_from_name(stem)
    reader = WhatsAppReader(path.name, named or stem, container, opts)
    reader.named = named
    if member is not None and "/" in member:
        reader.prefix = member.rsplit("/", 1)[0] + "/"
    reader.read(opener)
    unmapped = reader.decide_sides()
    assert reader.conv is not None
    notes = list(reader.rows.notes)
    src = build(
        path=path,
        kind="whatsapp",
        rows=reader.rows,
        conversations=[reader.conv],
        authors=list(reader.authors.values()),
        unmapped=unmapped,
        problems=reader.problems,
        zone=zone,
        container=container,
        files_base_url=files_base_url,
        strict=strict,
        date_order=reader.order,
    )
    mark_export(src.frame, reader.names, notes)  # original file names; rows missing a file
    return src
