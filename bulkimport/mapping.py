"""Column mapping: which source column (or constant) feeds each Bitrix24 field, plus value options.

A mapping is a small TOML file (``[columns]``, ``[constants]``, ``[options]``, ``[operators]``;
reference in docs/mapping.md) or a guess from the headers in English or Russian. The field names
are a contract shared with the plan and the CLI: :data:`FIELDS`.
"""

from __future__ import annotations

import difflib
import re
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
}

SECTIONS = ("columns", "constants", "options", "operators")


def _norm(header: object) -> str:
    """Header → comparison key: lower case, ё→е, punctuation to spaces, spaces collapsed."""
    text = str(header).strip().lower().replace("ё", "е")
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
        "ticket id",
        "обращение",
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
        "created at",
        "created",
        "date",
        "дата",
        "time",
        "время",
    ],
    "message.text": [
        "message text",
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


def _quote(names: Iterable[object]) -> str:
    return ", ".join(repr(str(n)) for n in names)


@dataclass
class Mapping:
    """field → column(s), constants, options and operator ids; see docs/mapping.md."""

    columns: dict[str, str | list[str]] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    operators: dict[str, int] = field(default_factory=dict)
    source: str = "mapping"  # file name, or "guess"

    def __post_init__(self) -> None:
        merged = {k: v[0] for k, v in OPTIONS.items()}
        merged.update(self.options)
        self.options = merged
        self._validate(self.source)

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | Path) -> Mapping:
        """Read a TOML mapping file; unknown sections, fields and options are MappingErrors."""
        p = Path(path)
        if not p.is_file():
            raise MappingError(
                f"mapping file {p} does not exist; write one (see docs/mapping.md) or "
                "let bulkimport guess and save it with Mapping.save"
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
        if self.operators and not self.options.get("author"):
            raise MappingError(
                f"{source}: [operators] needs the column that names each row's author: add "
                'author = "<column>" under [options]'
            )
        for name, emp in self.operators.items():
            if isinstance(emp, bool) or not isinstance(emp, int) or emp <= 0:
                raise MappingError(
                    f"{source}: [operators] {name!r} must be a Bitrix24 employee id (a positive "
                    f"whole number), got {emp!r}"
                )

    @classmethod
    def guess(cls, df: pd.DataFrame) -> Mapping:
        """Guess the mapping from English or Russian headers (shown with :meth:`describe`)."""
        keys = {c: _norm(c) for c in df.columns}
        used: set[object] = set()
        columns: dict[str, str | list[str]] = {}
        options: dict[str, Any] = {}

        def find(synonyms: list[str]) -> str | None:
            for syn in synonyms:
                for col, key in keys.items():
                    if col not in used and key == syn:
                        return str(col)
            return None

        # date and time in two columns
        d, t = find(_DATE_ONLY), find(_TIME_ONLY)
        if d is not None and t is not None and d != t:
            columns["message.date"] = [d, t]
            used.update((d, t))
        # an "operator" column holding numbers is message.user_id, otherwise it names the author
        author = find(_AUTHOR)
        if author is not None:
            values = df[author].dropna().astype(str).str.strip()
            if len(values) and values.str.fullmatch(r"\d+").all():
                columns["message.user_id"] = author
            else:
                options["author"] = author
            used.add(author)
        for f in FIELDS:
            if f in columns:
                continue
            col = find(_SYNONYMS.get(f, []))
            if col is not None:
                columns[f] = col
                used.add(col)
        if "message.date" in columns and isinstance(columns["message.date"], str):
            t2 = find(_TIME_ONLY)
            if t2 is not None and _norm(columns["message.date"]) in _DATE_ONLY:
                columns["message.date"] = [columns["message.date"], t2]
        return cls(columns=columns, options=options, source="guess")

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """The TOML structure (options equal to their defaults are kept so the file documents them)."""
        out: dict[str, Any] = {"columns": {f: self.columns[f] for f in FIELDS if f in self.columns}}
        if self.constants:
            out["constants"] = {f: self.constants[f] for f in FIELDS if f in self.constants}
        out["options"] = {k: v for k, v in self.options.items() if v is not None}
        if self.operators:
            out["operators"] = dict(self.operators)
        return out

    def save(self, path: str | Path) -> Path:
        """Write the mapping as TOML (UTF-8); :meth:`load` reads it back unchanged."""
        import tomli_w

        p = Path(path)
        p.write_text(tomli_w.dumps(self.to_dict()), encoding="utf-8")
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
            else:
                src = "-"
            lines.append(f"  {f:<17} ← {src}")
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if v is not None)
        lines.append(f"  options: {opts}")
        if self.operators:
            lines.append(
                f"  operators: {len(self.operators)} ({_quote(list(self.operators)[:5])}"
                f"{' …' if len(self.operators) > 5 else ''})"
            )
        if self.options.get("author") and not self.operators:
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
        return out

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
                        f"{self.source}: column {c!r} for {f} is not in {where}{hint}; the columns "
                        f"are {_quote(existing)}"
                    )
        if require:
            self.require(existing)

    def require(self, existing: Iterable[str] = ()) -> None:
        """Raise MappingError naming each unmapped required field and how to map it."""
        missing = self.missing_required()
        if not missing:
            return
        cols = list(existing)
        listing = f"; the columns are {_quote(cols)}" if cols else ""
        first = missing[0].split(" or ")[0]
        raise MappingError(
            f"{self.source}: required field(s) {', '.join(missing)} not mapped; add e.g. "
            f'"{first}" = "<column>" under [columns] of a mapping file (--mapping){listing}'
        )
