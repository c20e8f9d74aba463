"""Column mapping: which source column (or constant) feeds each Bitrix24 field, plus value options.

A mapping is a small TOML file (``[columns]``, ``[constants]``, ``[options]``, ``[operators]``;
reference in docs/mapping.md) or a guess from the headers in English or Russian. The field names
are a contract shared with the plan and the CLI: :data:`FIELDS`.
"""

from __future__ import annotations

import difflib
import re
import shlex
import tomllib
from collections.abc import Iterable
from collections.abc import Mapping as ABCMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from .errors import MappingError

#: Target fields, in the order they are shown (a contract: exactly these names).
FIELDS: tuple[str, ...] = (
    "chat.id",
    "chat.name",
    "chat.url",
    "user.id",
    "user.name",
    "user.last_name",
    "user.email",
    "user.phone",
    "user.picture",
    "user.url",
    "user.gender",
    "message.id",
    "message.date",
    "message.text",
    "message.files",
    "message.user_id",
)

#: option name → (default, accepted python types, one-line description)
OPTIONS: dict[str, tuple[Any, tuple[type, ...], str]] = {
    "timezone": ("UTC", (str,), "zone for dates without an offset (IANA name, e.g. Europe/Moscow)"),
    "dayfirst": (None, (bool,), "ambiguous textual dates: true = 03.04 is 3 April, false = March 4"),
    "disable_crm": (True, (bool,), "send message.disable_crm=Y so the import creates no CRM lead per chat"),
    "skip_phone_validate": (False, (bool,), "send user.skip_phone_validate=Y and keep unparseable phones"),
    "author": (None, (str,), "column naming who wrote the row; values listed in [operators] are operators"),
    "phone_region": ("RU", (str,), "region for phones without +country code (ISO code, e.g. RU, US)"),
    "files_base_url": (None, (str,), "base URL under which local attachment paths are published"),
    "files_folder": (
        None,
        (str,),
        "local folder prefix stripped from attachment paths before files_base_url",
    ),
    "files_upload": (None, (str,), 'set to "disk" to upload local attachments to the portal\'s Drive'),
    "missing_files": (
        "note",
        (str,),
        "a missing local attachment: note (text with a note), skip (row waits), fail",
    ),
    "max_file_mb": (100.0, (int, float), "local attachments above this size (MB) are reported, not sent"),
    "files_root": (
        None,
        (str,),
        "folder that relative attachment paths are relative to (default: the file's)",
    ),
    "side": (None, (str,), "column saying which side wrote each row (Agent? yes/no, Direction in/out)"),
    "operator_values": (
        None,
        (list,),
        "values of the side column meaning an operator wrote the row [default: yes, true, 1, agent, out …]",
    ),
    "customer_values": (
        None,
        (list,),
        "values of the side column meaning the customer wrote it [default: no, false, 0, customer, in …]",
    ),
    "unmapped_operators": (
        "refuse",
        (str,),
        "operator-side authors without an employee: refuse, or system (sent with message.user_id = 0)",
    ),
}

SECTIONS = ("columns", "constants", "options", "operators")


def _norm(header: object) -> str:
    """Header → comparison key: lower case, ё→е, punctuation to spaces, spaces collapsed."""
    text = re.sub(r"(?<=[a-zа-яё])(?=[A-ZА-ЯЁ])", " ", str(header).strip())  # customerEmail
    text = text.lower().replace("ё", "е")
    text = re.sub(r"[_\-./:#№()\[\]]+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


# Synonyms in priority order (first match wins). Generic words ("client") come last so a more
# specific header ("Client ID") claims the field first.
_SYNONYMS: dict[str, list[str]] = {
    "message.id": [
        "message id",
        "msg id",
        "id сообщения",
        "ид сообщения",
        "номер сообщения",
        "message number",
    ],
    "chat.id": [
        "chat id",
        "chat",
        "id чата",
        "ид чата",
        "чат",
        "номер чата",
        "conversation id",
        "conversation",
        "dialog id",
        "dialogue id",
        "id диалога",
        "диалог",
        "thread id",
        "thread",
        "ticket id",
        "ticket number",
        "ticket no",
        "ticket",
        "case id",
        "case number",
        "case",
        "dialog",
        "dialogue",
        "session id",
        "обращение",
        "id обращения",
        "номер обращения",
        "тикет",
        "номер тикета",
        "заявка",
        "номер заявки",
        "обращения",
        "заявки",
        "переписка",
        "сделки",  # "№ сделки"
        "номер сделки",
        "id сделки",
        "deal id",
    ],
    "chat.name": ["chat name", "chat title", "название чата", "conversation name", "subject", "тема"],
    "chat.url": ["chat url", "chat link", "ссылка на чат", "conversation url"],
    "message.user_id": [
        "operator id",
        "employee id",
        "agent id",
        "bitrix user id",
        "id оператора",
        "ид оператора",
        "id сотрудника",
        "ид сотрудника",
        "message user id",
    ],
    "user.id": [
        "client id",
        "customer id",
        "user id",
        "contact id",
        "external id",
        "sender id",
        "from id",
        "id клиента",
        "ид клиента",
        "клиент id",
        "код клиента",
        "id контакта",
        "id пользователя",
        "client",
        "customer",
        "клиент",
        "контакт",
        "contact",
        "user",
    ],
    "user.name": [
        "client name",
        "customer name",
        "contact name",
        "user name",
        "first name",
        "name",
        "имя клиента",
        "имя",
        "фио",
        "фио клиента",
        "client",
        "customer",
        "клиент",
    ],
    "user.last_name": ["last name", "surname", "family name", "фамилия"],
    "user.email": ["email", "e mail", "mail", "email address", "почта", "электронная почта", "эл почта"],
    "user.phone": [
        "phone",
        "phone number",
        "telephone",
        "mobile",
        "tel",
        "телефон",
        "номер телефона",
        "мобильный",
        "тел",
    ],
    "user.picture": ["avatar", "picture", "photo", "userpic", "аватар", "фото"],
    "user.url": ["profile", "profile url", "user url", "профиль", "ссылка на профиль"],
    "user.gender": ["gender", "sex", "пол"],
    "message.date": [
        "datetime",
        "date time",
        "timestamp",
        "дата и время",
        "дата время",
        "дата сообщения",
        "message date",
        "sent at",
        "sent date",
        "date sent",
        "send time",
        "posted at",
        "sent",
        "created at",
        "created date",
        "created on",
        "creation date",
        "date created",
        "дата создания",
        "дата отправки",
        "время отправки",
        "created",
        "date",
        "дата",
        "time",
        "время",
    ],
    "message.text": [
        "message text",
        "message body",
        "comment body",
        "body text",
        "text",
        "message",
        "body",
        "content",
        "текст сообщения",
        "текст",
        "сообщение",
    ],
    "message.files": [
        "files",
        "attachments",
        "attachment",
        "file",
        "вложения",
        "вложение",
        "файлы",
        "файл",
        "attachment url",
        "file url",
    ],
}
_DATE_ONLY = ["date", "дата", "message date", "дата сообщения"]
_TIME_ONLY = ["time", "время", "message time", "время сообщения"]
_AUTHOR = [
    "author",
    "author name",
    "agent name",
    "operator name",
    "employee name",
    "sender name",
    "имя оператора",
    "имя сотрудника",
    "фио оператора",
    "фио сотрудника",
    "sender",
    "from",
    "автор",
    "отправитель",
    "от кого",
    "operator",
    "оператор",
    "agent",
    "сотрудник",
    "employee",
    "кто",
]


#: Side column values (compared case-blind): what a yes/no cell means depends on the header.
_YES = ("yes", "y", "true", "t", "1", "да", "д", "+", "x", "✓")
_NO = ("no", "n", "false", "f", "0", "нет", "н", "-", "")
_OPERATOR_WORDS = (
    "agent", "operator", "staff", "employee", "support", "manager", "admin", "out", "outgoing",
    "outbound", "sent", "reply", "оператор", "сотрудник", "менеджер", "поддержка", "исходящее",
    "исходящий", "исх", "consultant", "specialist", "консультант", "специалист", "техподдержка",
)
_CUSTOMER_WORDS = (
    "customer", "client", "user", "end-user", "end user", "enduser", "requester", "lead", "contact",
    "visitor", "guest", "in", "incoming", "inbound",
    "received", "клиент", "покупатель", "пользователь", "посетитель", "входящее", "входящий", "вх",
    "buyer", "заказчик", "абонент",
)
#: Headers of a yes/no column that is true when an operator wrote the row ("Agent?", "Is agent").
_OPERATOR_FLAG = [
    f"{pre}{w}"
    for w in ("agent", "operator", "staff", "employee", "support", "оператор", "сотрудник")
    for pre in ("", "is ", "from ", "by ", "sent by ", "от ", "is an ", "from an ")
] + ["agent reply", "is reply", "outgoing", "исходящее", "ответ оператора"]
#: Headers of a yes/no column that is true when the customer wrote it ("Is customer").
_CUSTOMER_FLAG = [
    f"{pre}{w}"
    for w in ("customer", "client", "клиент", "клиента")
    for pre in ("", "is ", "from ", "by ", "sent by ", "от ", "is a ", "from a ")
] + ["incoming", "входящее"]
#: Headers of a column naming the side in words (agent/customer, in/out).
_SIDE_WORDS = [
    "direction", "направление", "side", "сторона", "sender type", "author type", "from type",
    "sender role", "author role", "role", "роль", "user role", "participant role", "роль отправителя",
    "роль автора", "роль участника", "user type", "message type", "type", "тип",
    "тип отправителя", "тип автора", "who", "кто", "from", "sender", "author", "автор", "отправитель",
    "от кого",
]


def side_values(column: str, values: pd.Series) -> tuple[list[str], list[str]] | None:
    """(operator values, customer values) of a side column, as they are spelt in it, when its header
    says what a yes/no means (``Agent?`` yes = operator, ``Is customer`` yes = customer) or its
    values are words of one side or the other (agent/customer, in/out); None when it is not one."""
    key = _norm(column).rstrip(" ?").strip()
    polar = "operator" if key in _OPERATOR_FLAG else "customer" if key in _CUSTOMER_FLAG else None
    if polar is not None and " " not in key and not str(column).strip().endswith("?"):
        polar = None  # a bare "Client" or "Agent" names people; "Agent?" and "Is agent" ask yes/no
    if polar is None and key not in _SIDE_WORDS:
        return None
    seen = values.dropna().astype(str).str.strip()
    spelt = {v.casefold(): v for v in seen[seen != ""].drop_duplicates().head(20)}
    if not spelt or len(spelt) > 6:
        return None
    ops, custs = [], []
    for folded, v in spelt.items():
        if folded in _OPERATOR_WORDS:
            ops.append(v)
        elif folded in _CUSTOMER_WORDS:
            custs.append(v)
        elif polar is not None and folded in _YES:
            (ops if polar == "operator" else custs).append(v)
        elif polar is not None and folded in _NO:
            (custs if polar == "operator" else ops).append(v)
        else:
            return None  # a value that says neither: not a side column (or not one we can read)
    return ops or _opposite(custs), custs or _opposite(ops)


def _opposite(values: list[str]) -> list[str]:
    """The other answer of a yes/no column whose file holds only one (``["no"]`` → ``["yes"]``)."""
    pairs = dict(zip(_NO, _YES, strict=False)) | dict(zip(_YES, _NO, strict=False))
    pairs |= {"in": "out", "out": "in", "incoming": "outgoing", "outgoing": "incoming"}
    return [pairs[v.casefold()] for v in values if v.casefold() in pairs and pairs[v.casefold()]]


#: Written into a saved mapping whose time zone was not stated, for the user to fill in.
_PHONE_REGION_COMMENT = (
    '# phone_region = "RU"          # country of phones written without +country code (e.g. "US");\n'
    "#                              # unset, they are read as RU numbers and bulkimport says so\n"
)
_TIMEZONE_COMMENT = (
    '# timezone = "Europe/Moscow"   # the zone the dates were written in (dates without an offset);\n'
    "#                              # unset, they are read as UTC and bulkimport says so\n"
)

#: Written into a saved mapping whose side column's operator rows have no employee id yet.
_SIDE_EMPLOYEE_COMMENT = (
    "# The side column's operator rows need a Bitrix24 employee id: uncomment the two lines below\n"
    "# (one employee for every reply) and put the id in, or map message.user_id to a column of ids,\n"
    "# or run with --unmapped-operators system (the portal's system user).\n"
    "# [constants]\n"
    '# "message.user_id" = 12\n'
)

#: Words people put before a field's own name in a header ("customer_email", "clientPhone").
_QUALIFIERS = (
    "customer", "client", "user", "contact", "requester", "visitor", "guest", "msg", "клиент",
    "клиента", "пользователь", "пользователя", "покупатель", "покупателя", "заказчик", "заказчика",
    "абонент", "абонента",
)

#: A header word that makes a column an id rather than a name.
_ID_WORD = re.compile(r"\b(id|ид|код|номер|number|no|login|логин)\b")


def _unqualified(key: str) -> str:
    """``"customer email"`` → ``"email"``, ``"телефон клиента"`` → ``"телефон"``: the header
    without a qualifier word before it (or after it, as Russian headers put it)."""
    first, _, rest = key.partition(" ")
    if rest and first in _QUALIFIERS:
        return rest
    head, _, last = key.rpartition(" ")
    return head if head and last in _QUALIFIERS else key


def _looks_like_names(values: pd.Series) -> bool:
    """Whether most values are people's names (letters and spaces only), not ids, phones or e-mails."""
    sample = values.dropna().astype(str).str.strip()
    sample = sample[sample != ""].head(500)
    if sample.empty:
        return False
    named = sample.str.fullmatch(r"[^\W\d_]+(?:[ .'’-]+[^\W\d_]+)*\.?")
    return float(named.mean()) >= 0.8


class _Guess:
    """One guess in progress: header keys, the columns taken, and why each field got its column."""

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        self.keys = {c: _norm(c) for c in df.columns}
        self.used: set[object] = set()
        self.columns: dict[str, str | list[str]] = {}
        self.options: dict[str, Any] = {}
        self.why: dict[str, str] = {}

    def find(self, synonyms: list[str], loose: bool = False) -> tuple[str, str] | None:
        """(column, synonym) of the first free header equal to a synonym, in synonym order;
        ``loose``: compared without a leading qualifier word (``customer_email`` → ``email``)."""
        for syn in synonyms:
            for col, key in self.keys.items():
                if col not in self.used and (_unqualified(key) if loose else key) == syn:
                    return str(col), syn
        return None

    def take(self, f: str, column: str | list[str], why: str) -> None:
        self.columns[f] = column
        self.used.update(column if isinstance(column, list) else [column])
        self.why[f] = why

    def date_pair(self) -> None:
        """A date column and a time-of-day column (Дата + Время) → message.date of two columns."""
        d, t = self.find(_DATE_ONLY), self.find(_TIME_ONLY)
        if d is not None and t is not None and d[0] != t[0]:
            why = f"headers {d[0]!r} + {t[0]!r} (a date column and a time-of-day column)"
            self.take("message.date", [d[0], t[0]], why)

    def side(self) -> None:
        """A column saying which side wrote each row (``Agent?`` yes/no, ``Direction`` in/out):
        option side, with the values that mean each side as the file spells them."""
        for col in self.df.columns:
            if col in self.used:
                continue
            found = side_values(str(col), self.df[col])
            if found is None:
                continue
            ops, custs = found
            self.options.update(side=str(col), operator_values=ops, customer_values=custs)
            self.used.add(col)
            said = f"{_quote(ops)} = operator, {_quote(custs)} = customer"
            self.why["option side"] = f"header {str(col)!r} ({said})"
            return

    def author(self) -> None:
        """An author-like column: message.user_id when it holds whole numbers, else option author."""
        found = self.find(_AUTHOR)
        if found is None:
            return
        col, syn = found
        values = self.df[col].dropna().astype(str).str.strip()
        if len(values) and values.str.fullmatch(r"\d+").all():
            self.take(
                "message.user_id", col, f"header {col!r} (matches {syn!r}; all whole numbers: employee ids)"
            )
            return
        self.options["author"] = col
        self.used.add(col)
        self.why["option author"] = (
            f"header {col!r} (matches {syn!r}; it names who wrote each row: operators go under [operators])"
        )

    def fields(self) -> None:
        """Every other field: exact headers first, then headers with a qualifier word before them."""
        for loose in (False, True):
            for f in FIELDS:
                if f in self.columns:
                    continue
                found = self.find(_SYNONYMS.get(f, []), loose=loose)
                if found is not None:
                    how = "read as" if loose else "matches"
                    self.take(f, found[0], f"header {found[0]!r} ({how} {found[1]!r})")

    def id_from_contact(self) -> None:
        """No customer id column, or one of people's names while a name column is free: the
        customer's e-mail (or phone) column tells customers apart (the names become user.name)."""
        uid = self.columns.get("user.id")
        contact = any(isinstance(self.columns.get(f), str) for f in ("user.email", "user.phone"))
        if isinstance(uid, str) and contact and "user.name" not in self.columns and self.notes():
            self.columns["user.name"] = uid
            self.why["user.name"] = self.why.pop("user.id")
            del self.columns["user.id"]
        if "user.id" in self.columns:
            return
        for f in ("user.email", "user.phone"):
            column = self.columns.get(f)
            if isinstance(column, str):
                what = f.split(".")[1]
                why = f"header {column!r} (no customer id column: the {what} tells customers apart)"
                self.columns["user.id"], self.why["user.id"] = column, why
                return

    def time_after_date(self) -> None:
        """A lone date column (Дата) with a time column left (Время) becomes the pair."""
        date = self.columns.get("message.date")
        if isinstance(date, str) and _norm(date) in _DATE_ONLY:
            t = self.find(_TIME_ONLY)
            if t is not None:
                self.take("message.date", [date, t[0]], f"headers {date!r} + {t[0]!r} (a date and a time)")

    def notes(self) -> list[tuple[str, str, str]]:
        """What the guess could only assume: a user.id column that holds names (people who share a
        name would become one customer)."""
        uid = self.columns.get("user.id")
        if isinstance(uid, str) and not _ID_WORD.search(_norm(uid)) and _looks_like_names(self.df[uid]):
            return [("user-id-from-name", "user.id", uid)]
        return []


def _reason(why: str) -> str:
    """``"header 'Client' (matches 'client')"`` → ``"matches 'client'"``: why, without the header."""
    _, sep, rest = why.partition(" (")
    return rest[:-1] if sep and rest.endswith(")") else why


#: Mapping options a command-line flag sets, and the flag.
_OPTION_FLAGS = {
    "timezone": "--timezone",
    "files_base_url": "--files-base-url",
    "missing_files": "--missing-files",
    "max_file_mb": "--max-file-size",
    "unmapped_operators": "--unmapped-operators",
}


def _as_flag(message: str, options: ABCMapping[str, Any]) -> str | None:
    """``"m.toml: option timezone 'X' is not …"`` → ``"--timezone 'X' is not …"`` when the
    refused option was one of ``options`` and a flag sets it (None otherwise)."""
    for key in options:
        flag = _OPTION_FLAGS.get(key)
        found = re.search(rf"^.*?: option {re.escape(key)} ", message)
        if flag and found:
            return flag + " " + message[found.end() :]
    return None


def _quote(names: Iterable[object]) -> str:
    return ", ".join(repr(str(n)) for n in names)


class _Options(dict):  # type: ignore[type-arg]
    """A mapping's options; :attr:`assumed` names those filled in with their default, not stated."""

    assumed: frozenset[str] = frozenset()


@dataclass
class Mapping:
    """field → column(s), constants, options and operator ids; see docs/mapping.md."""

    columns: dict[str, str | list[str]] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    operators: dict[str, int] = field(default_factory=dict)
    source: str = "mapping"  # file name, or "guess"
    #: field (or "option author") → which header it was guessed from and why (a guess only)
    guessed_from: dict[str, str] = field(default_factory=dict, compare=False)
    #: (code, field, column) of what a guess could only assume (e.g. user-id-from-name)
    notes: list[tuple[str, str, str]] = field(default_factory=list, compare=False)
    #: whether the time zone of naive dates was stated (file, dict, with_options) rather than assumed
    timezone_given: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        # options a copy inherits (dataclasses.replace passes the same _Options) stay assumed while
        # they hold their default: a derived mapping keeps what was given and what was filled in
        inherited = getattr(self.options, "assumed", frozenset())
        given = {
            k: v
            for k, v in self.options.items()
            if not (k == "timezone" and v is None)
            and not (k in inherited and k in OPTIONS and v == OPTIONS[k][0])
        }
        self.timezone_given = given.get("timezone") is not None
        merged = _Options({k: v[0] for k, v in OPTIONS.items()})
        merged.update(given)
        merged.assumed = frozenset(k for k in OPTIONS if k not in given)
        self.options = merged
        self._validate("the mapping guessed from the headers" if self.source == "guess" else self.source)

    def stated_options(self) -> dict[str, Any]:
        """The options stated (file, dict, with_options, or changed since), without the defaults
        filled in: what a copy of this mapping is built from so it assumes what this one assumes."""
        assumed = getattr(self.options, "assumed", frozenset())
        out = {
            k: v
            for k, v in self.options.items()
            if k not in assumed or k not in OPTIONS or v != OPTIONS[k][0]
        }
        if not self.timezone_given:
            out.pop("timezone", None)
        return out

    @property
    def phone_region_given(self) -> bool:
        """Whether phone_region was stated (file, dict, --phone-region) rather than the default."""
        return "phone_region" in self.stated_options()

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | Path) -> Mapping:
        """Read a TOML mapping file; unknown sections, fields and options are MappingErrors."""
        p = Path(path)
        if not p.is_file():
            head = f"mapping file {p} does not exist; write one (see docs/mapping.md) or let bulkimport "
            save = shlex.quote(str(p))
            raise MappingError(
                head + "guess and save it with Mapping.guess(df).save(path)",
                cli=f"{head}guess it and write it there: bulkimport mapping FILE --save {save}",
            )
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8-sig"))
        except tomllib.TOMLDecodeError as exc:
            raise MappingError(f"{p.name}: not valid TOML ({exc}); fix the line shown") from None
        except UnicodeDecodeError:
            raise MappingError(f"{p.name}: not UTF-8 text; save the mapping file as UTF-8") from None
        return cls.from_dict(data, source=p.name)

    @classmethod
    def from_dict(cls, data: ABCMapping[str, Any], source: str = "mapping") -> Mapping:
        """Build from the parsed TOML structure (same checks as :meth:`load`)."""
        unknown = [k for k in data if k not in SECTIONS]
        if unknown:
            raise MappingError(
                f"{source}: unknown section(s) {_quote(unknown)}; the sections are {_quote(SECTIONS)}"
            )
        for sec in SECTIONS:
            if sec in data and not isinstance(data[sec], dict):
                raise MappingError(f"{source}: [{sec}] must be a table of key = value lines")
        return cls(
            columns=dict(data.get("columns", {})),
            constants=dict(data.get("constants", {})),
            options=dict(data.get("options", {})),
            operators=dict(data.get("operators", {})),
            source=source,
        )

    def side_of(self, values: pd.Series) -> tuple[pd.Series, pd.Series]:
        """(operator, unreadable) masks of the side column's ``values``: an operator value, and a
        cell that is neither side's value (empty included). Without operator_values and
        customer_values the header and the values decide (:func:`side_values`), or MappingError."""
        column = str(self.options["side"])
        ops, custs = self.options.get("operator_values"), self.options.get("customer_values")
        if ops is None or custs is None:
            found = side_values(column, values)
            if found is None:
                raise MappingError(
                    f"{self.label}: cannot tell which values of the side column {column!r} mean an "
                    'operator; add operator_values = ["…"] and customer_values = ["…"] under [options]'
                )
            ops = found[0] if ops is None else ops
            custs = found[1] if custs is None else custs
        folded = values.astype("str").str.strip().str.casefold()
        operator = folded.isin([str(v).strip().casefold() for v in ops]).fillna(False).astype(bool)
        customer = folded.isin([str(v).strip().casefold() for v in custs]).fillna(False).astype(bool)
        return operator, ~operator & ~customer

    def _validate(self, source: str) -> None:
        for sec, keys in (("columns", self.columns), ("constants", self.constants)):
            bad = [k for k in keys if k not in FIELDS]
            if bad:
                hint = difflib.get_close_matches(bad[0], FIELDS, n=1)
                near = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise MappingError(
                    f"{source}: unknown field(s) {_quote(bad)} in [{sec}]{near}; the fields are "
                    f"{_quote(FIELDS)}"
                )
        for f, col in self.columns.items():
            ok = (isinstance(col, str) and col.strip()) or (
                isinstance(col, list) and col and all(isinstance(c, str) and c.strip() for c in col)
            )
            if not ok:
                raise MappingError(
                    f"{source}: [columns] {f!r} must name a column (text) or a list of columns, got {col!r}"
                )
            if f == "message.date" and isinstance(col, list) and len(col) > 2:
                raise MappingError(
                    f'{source}: [columns] "message.date" takes one column or two (date, time), got {col!r}'
                )
        for f, val in self.constants.items():
            if isinstance(val, bool) or not isinstance(val, (str, int)) or str(val).strip() == "":
                raise MappingError(
                    f"{source}: [constants] {f!r} must be non-empty text or a whole number, got {val!r}"
                )
        both = sorted(set(self.columns) & set(self.constants))
        if both:
            raise MappingError(f"{source}: {_quote(both)} is both in [columns] and [constants]; keep one")
        bad = [k for k in self.options if k not in OPTIONS]
        if bad:
            raise MappingError(
                f"{source}: unknown option(s) {_quote(bad)} in [options]; the options are {_quote(OPTIONS)}"
            )
        for k, v in self.options.items():
            default, types, _ = OPTIONS[k]
            if v is None and default is None:
                continue
            if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
                kind = "true or false" if bool in types else "text"
                raise MappingError(f"{source}: option {k} must be {kind}, got {v!r}")
        try:
            ZoneInfo(str(self.options["timezone"]))
        except (ZoneInfoNotFoundError, ValueError):
            raise MappingError(
                f"{source}: option timezone {self.options['timezone']!r} is not a known time "
                "zone; use an IANA name such as 'Europe/Moscow' or 'UTC'"
            ) from None
        import phonenumbers

        region = str(self.options["phone_region"]).upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise MappingError(
                f"{source}: option phone_region {self.options['phone_region']!r} is not a "
                "known region; use a two-letter code such as 'RU', 'US' or 'DE'"
            )
        self.options["phone_region"] = region
        _check_file_options(self, source)
        _check_side(self, source)
        if self.operators and not self.options.get("author"):
            raise MappingError(
                f"{source}: [operators] needs the column that names each row's author: add "
                'author = "<column>" under [options]'
            )
        for name, emp in self.operators.items():
            if emp == 0 and not isinstance(emp, bool):
                raise MappingError(
                    f"{source}: [operators] {name!r} = 0 is the placeholder the saved skeleton holds; "
                    "replace 0 with the author's Bitrix24 employee id, or delete the line if they "
                    "are a customer"
                )
            if isinstance(emp, bool) or not isinstance(emp, int) or emp <= 0:
                raise MappingError(
                    f"{source}: [operators] {name!r} must be a Bitrix24 employee id (a positive "
                    f"whole number), got {emp!r}"
                )

    @classmethod
    def guess(cls, df: pd.DataFrame) -> Mapping:
        """Guess the mapping from English or Russian headers; :attr:`guessed_from` says which header
        each field came from and why, :attr:`notes` what the guess could only assume."""
        g = _Guess(df)
        g.date_pair()
        g.side()
        g.author()
        g.fields()
        g.id_from_contact()
        g.time_after_date()
        notes = g.notes()
        return cls(columns=g.columns, options=g.options, source="guess", guessed_from=g.why, notes=notes)

    def with_options(self, **options: Any) -> Mapping:
        """A copy with ``options`` set (checked like a file's); e.g. ``with_options(timezone=...)``
        for a ``--timezone`` option: the zone is then stated, no longer assumed. A refused value
        is a MappingError whose ``cli`` wording names the command-line option (``--timezone``)."""
        return _copy_with_options(self, options)

    @property
    def label(self) -> str:
        """How messages name this mapping: its file, or "the mapping guessed from the headers"."""
        return "the mapping guessed from the headers" if self.guessed else self.source

    @property
    def guessed(self) -> bool:
        """Whether this mapping is a guess from the headers (to be confirmed before sending)."""
        return self.source == "guess"

    @property
    def timezone(self) -> str:
        """The zone naive dates are read in: the stated one, or UTC (then :attr:`timezone_given` is False)."""
        return str(self.options["timezone"])

    def warnings(self) -> list[tuple[str, str]]:
        """(code, one-line message) of what this mapping only assumes: an unstated time zone, a
        user.id taken from a name column, an author column without [operators]."""
        from . import codes

        out: list[tuple[str, str]] = []
        if not self.timezone_given:
            out.append(("timezone-not-set", codes.render("timezone-not-set", zone=self.timezone)))
        for code, f, column in self.notes:
            out.append((code, f"{codes.render(code, field=f)} (column {column!r})"))
        if self.options.get("author") and not self.operators and not self.options.get("side"):
            out.append(("no-operators", codes.render("no-operators", column=self.options["author"])))
        if "option side" in self.guessed_from:
            values = {"column": self.options["side"], "operators": _quote(self.options["operator_values"])}
            values["customers"] = _quote(self.options["customer_values"])
            out.append(("side-from-column", codes.render("side-from-column", **values)))
        return out

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """The TOML structure (options equal to their defaults are kept so the file documents them)."""
        out: dict[str, Any] = {"columns": {f: self.columns[f] for f in FIELDS if f in self.columns}}
        if self.constants:
            out["constants"] = {f: self.constants[f] for f in FIELDS if f in self.constants}
        out["options"] = {
            k: v
            for k, v in self.options.items()
            if v is not None and (k != "timezone" or self.timezone_given)
            and (k != "phone_region" or self.phone_region_given)
        }
        if self.operators:
            out["operators"] = dict(self.operators)
        return out

    def save(self, path: str | Path, authors: pd.DataFrame | None = None) -> Path:
        """Write the mapping as TOML (UTF-8); :meth:`load` reads it back unchanged. An unstated time
        zone is written as a comment to fill in; ``authors`` (the table of
        :func:`bulkimport.validation.authors`) adds an ``[operators]`` skeleton: the likely
        operators with the placeholder id 0, which the loader refuses until each is replaced by
        an employee id or deleted, and every other author as a comment to uncomment."""
        import tomli_w

        p = Path(path)
        text = tomli_w.dumps(self.to_dict())
        if not self.timezone_given:
            text = text.replace("[options]\n", "[options]\n" + _TIMEZONE_COMMENT, 1)
        if not self.phone_region_given and "user.phone" in self.columns:  # stays assumed when loaded back
            text = text.replace("[options]\n", "[options]\n" + _PHONE_REGION_COMMENT, 1)
        if authors is not None and len(authors) and self.options.get("author"):
            text = text.split("[operators]\n")[0].rstrip("\n") + "\n\n" + _skeleton(self, authors)
        if self.options.get("side") and not self.options.get("author") and not self.has("message.user_id"):
            text = text.rstrip("\n") + "\n\n" + _SIDE_EMPLOYEE_COMMENT
        p.write_text(text, encoding="utf-8")
        return p

    def describe(self) -> str:
        """A human-readable table of field ← column (what a guess found, what is missing)."""
        lines = [f"Mapping ({self.source}):", f"  {'field':<17}   source"]
        for f in FIELDS:
            if f in self.columns:
                col = self.columns[f]
                src = " + ".join(repr(c) for c in col) if isinstance(col, list) else repr(col)
            elif f in self.constants:
                src = f"constant {self.constants[f]!r}"
            elif f == "chat.id" and self.has("user.id"):
                src = "(same as user.id)"
            elif f == "message.id":
                src = "(generated: stable hash of chat, time, content)"
            elif f == "message.user_id" and self.options.get("author"):
                src = f"(via [operators] from author column {self.options['author']!r})"
            elif f == "message.user_id" and self.options.get("side"):
                src = "- (the side column's operator rows need an employee id)"
            else:
                src = "-"
            why = self.guessed_from.get(f, "")
            lines.append(f"  {f:<17} ← {src}" + (f"  (guessed: {_reason(why)})" if why else ""))
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if v is not None)
        lines.append(f"  options: {opts}")
        if not self.timezone_given:
            lines.append(
                f"  time zone: {self.timezone} (not stated: dates without an offset are read as "
                f"{self.timezone})"
            )
        for code, text in self.warnings():
            if code == "user-id-from-name":
                lines.append(f"  warning ({code}): {text}")
        if "option author" in self.guessed_from:
            why = _reason(self.guessed_from["option author"])
            lines.append(f"  author column ← {self.options.get('author')!r}  (guessed: {why})")
        if self.options.get("side"):
            lines.append(_side_line(self))
        if self.operators:
            lines.append(
                f"  operators: {len(self.operators)} ({_quote(list(self.operators)[:5])}"
                f"{' …' if len(self.operators) > 5 else ''})"
            )
        if self.options.get("author") and not self.operators and not self.options.get("side"):
            lines.append(
                f"  note: author column {self.options['author']!r} but no [operators]: every row is "
                'sent as a customer message; add [operators] "<author>" = <employee id>'
            )
        missing = self.missing_required()
        if missing:
            lines.append(f"  MISSING (required): {', '.join(missing)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    # ------------------------------------------------------------------ checks
    def has(self, f: str) -> bool:
        """Whether field ``f`` has a column or a constant."""
        return f in self.columns or f in self.constants

    def missing_required(self) -> list[str]:
        """Required fields without a column or constant (empty when the mapping is usable)."""
        out = [f for f in ("user.id", "message.date") if not self.has(f)]
        if not (self.has("message.text") or self.has("message.files")):
            out.append("message.text or message.files")
        return out

    def source_columns(self) -> dict[str, list[str]]:
        """field (or ``option author``) → the source columns it reads."""
        out = {f: (c if isinstance(c, list) else [c]) for f, c in self.columns.items()}
        if self.options.get("author"):
            out["option author"] = [self.options["author"]]
        if self.options.get("side"):
            out["option side"] = [self.options["side"]]
        return out

    def unused_columns(self, df: pd.DataFrame) -> list[str]:
        """The columns of ``df`` this mapping does not read, in file order (what the plan lists as
        left out, so that a column the guess missed is seen)."""
        used = {c for cols in self.source_columns().values() for c in cols}
        return [str(c) for c in df.columns if c not in used]

    def check(self, df: pd.DataFrame, require: bool = True) -> None:
        """Raise MappingError unless every mapped column exists in ``df`` (and required fields are mapped)."""
        existing = [str(c) for c in df.columns]
        where = df.attrs.get("source", "the data")
        for f, cols in self.source_columns().items():
            for c in cols:
                if c not in df.columns:
                    near = difflib.get_close_matches(c, existing, n=1, cutoff=0.6)
                    hint = f" (did you mean {near[0]!r}?)" if near else ""
                    raise MappingError(
                        f"{self.label}: column {c!r} for {f} is not in {where}{hint}; the columns "
                        f"are {_quote(existing)}"
                    )
        if require:
            self.require(existing, where=df.attrs.get("source"))

    def require(self, existing: Iterable[str] = (), where: str | None = None) -> None:
        """Raise MappingError naming each unmapped required field and how to map it (``where``: the
        input's name, for the command that writes a guess to edit)."""
        missing = self.missing_required()
        if not missing:
            return
        cols = list(existing)
        listing = f"; the columns are {_quote(cols)}" if cols else ""
        first = missing[0].split(" or ")[0]
        line = f'"{first}" = "<column>" under [columns]'
        if not self.guessed:
            raise MappingError(
                f"{self.source}: required field(s) {', '.join(missing)} not mapped; add e.g. {line} "
                f"of the mapping file{listing}"
            )
        head = f"{where + ': ' if where else ''}no column header was recognised as the required field(s) "
        head += ", ".join(missing)
        save = shlex.join(["bulkimport", "mapping", where or "FILE", "--save", "mapping.toml"])
        raise MappingError(
            f"{head}; save the guess (Mapping.guess(df).save(path)), add e.g. {line} and load it with "
            f"Mapping.load(path){listing}",
            cli=f"{head}; write the guess with {save}, add e.g. {line}, then pass --mapping "
            f"mapping.toml{listing}",
        )


def _check_file_options(self: Mapping, source: str) -> None:
    """files_base_url is http(s); files_upload is "disk" or unset; missing_files is note, skip
    or fail (MappingError)."""
    base = self.options.get("files_base_url")
    if base is not None and not re.match(r"^https?://[^/\s]+", base):
        raise MappingError(
            f"{source}: option files_base_url {base!r} must start with http:// or https://"
        )
    upload = self.options.get("files_upload")
    if upload is not None and upload != "disk":
        raise MappingError(f'{source}: option files_upload {upload!r}: the only value is "disk"')
    if self.options.get("missing_files", "note") not in ("note", "skip", "fail"):
        raise MappingError(
            f"{source}: option missing_files {self.options['missing_files']!r}: use note, skip or fail"
        )


def _check_side(self: Mapping, source: str) -> None:
    """operator_values and customer_values are lists of text, only beside a side column."""
    for k in ("operator_values", "customer_values"):
        v = self.options.get(k)
        if v is None:
            continue
        if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
            raise MappingError(f'{source}: option {k} must be a list of values, e.g. ["yes"], got {v!r}')
        if not self.options.get("side"):
            raise MappingError(
                f'{source}: option {k} needs the column they are values of: add side = "<column>" '
                "under [options]"
            )


def _skeleton(self: Mapping, authors: pd.DataFrame, limit: int = 500) -> str:
    """The ``[operators]`` section: known operators, likely ones as ``= 0``, the rest commented."""
    import tomli_w

    known = {str(k).strip().casefold() for k in self.operators}
    lines = [
        "[operators]",
        f"# author ({self.options['author']!r} column) = Bitrix24 employee id. Replace each 0 with the",
        "# employee's id or delete the line (the file is refused while a 0 is left); uncomment the",
        "# lines of other operators. Authors not listed here are customers.",
    ]
    lines += [tomli_w.dumps({str(k): v}).strip() for k, v in self.operators.items()]
    shown = 0
    for r in authors.itertuples(index=False):
        if str(r.author).strip().casefold() in known or shown >= limit:
            continue
        shown += 1
        line = tomli_w.dumps({str(r.author): 0}).strip()
        note = f"{r.messages} messages, {r.conversations} conversations, {r.customers} customers"
        if bool(r.likely_operator):
            lines.append(f"{line}  # {note}: most likely an operator")
        else:
            lines.append(f"# {line}  # {note}")
    if len(authors) - len(known) > shown:
        lines.append(f"# … and {len(authors) - len(known) - shown} more authors")
    return "\n".join(lines) + "\n"


def _side_line(self: Mapping) -> str:
    """``side column ← 'Agent?' ('yes' = operator, 'no' = customer)`` (+ why, for a guess)."""
    ops, custs = self.options.get("operator_values"), self.options.get("customer_values")
    said = (
        f"{_quote(ops)} = operator, {_quote(custs)} = customer"
        if ops is not None and custs is not None
        else "values read from the header and the cells"
    )
    line = f"  side column ← {self.options['side']!r} ({said})"
    why = self.guessed_from.get("option side")
    return line + ("  (guessed from the header and its values)" if why else "")


def _copy_with_options(mapping: Mapping, options: dict[str, Any]) -> Mapping:
    """The body of :meth:`Mapping.with_options` (a function: the class stays under 400 lines)."""
    try:
        return Mapping(
            columns=dict(mapping.columns),
            constants=dict(mapping.constants),
            options={**mapping.stated_options(), **options},
            operators=dict(mapping.operators),
            source=mapping.source,
            guessed_from=dict(mapping.guessed_from),
            notes=list(mapping.notes),
        )
    except MappingError as exc:
        exc.cli = _as_flag(str(exc), options) or exc.cli
        raise
