"""Open-line settings: the documented line object of ``imopenlines.config.get`` and its updates.

Field names, order and example values follow the official ``imopenlines.config.get`` /
``imopenlines.config.add`` pages; every value is a string as the portal returns it. A line's own
settings (``imopenlines.config.update``) are stored as JSON in ``lines.settings`` over these defaults.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Defaults of a line (documented fields, documented order). The sandbox's choices where the
#: example differs: CRM on with lead creation, welcome message on, rating request off.
DEFAULTS: dict[str, Any] = {
    "CRM": "Y",
    "CRM_CREATE": "lead",
    "CRM_CREATE_SECOND": "0",
    "CRM_CREATE_THIRD": "Y",
    "CRM_FORWARD": "Y",
    "CRM_CHAT_TRACKER": "Y",
    "CRM_TRANSFER_CHANGE": "Y",
    "CRM_SOURCE": "create",
    "QUEUE_TIME": "60",
    "NO_ANSWER_TIME": "60",
    "QUEUE_TYPE": "evenly",
    "CHECK_AVAILABLE": "N",
    "WATCH_TYPING": "Y",
    "WELCOME_BOT_ENABLE": "N",
    "WELCOME_MESSAGE": "Y",
    "WELCOME_MESSAGE_TEXT": "Welcome to the open line. The first available operator will respond to you.",
    "VOTE_MESSAGE": "N",
    "VOTE_TIME_LIMIT": "0",
    "VOTE_BEFORE_FINISH": "Y",
    "VOTE_CLOSING_DELAY": "N",
    "VOTE_MESSAGE_1_TEXT": "Please rate the quality of service.",
    "VOTE_MESSAGE_1_LIKE": "Thank you for your feedback!",
    "VOTE_MESSAGE_1_DISLIKE": "We are sorry we couldn't assist you, we will strive to improve.",
    "VOTE_MESSAGE_2_TEXT": "Please rate the quality of service.\r\n\r\nSend: 1 - good, 0 - bad",
    "VOTE_MESSAGE_2_LIKE": "Thank you for your feedback!",
    "VOTE_MESSAGE_2_DISLIKE": "We are sorry we couldn't assist you, we will strive to improve.",
    "AGREEMENT_MESSAGE": "N",
    "AGREEMENT_ID": "0",
    "CATEGORY_ENABLE": "N",
    "CATEGORY_ID": "0",
    "WELCOME_BOT_JOIN": "always",
    "WELCOME_BOT_ID": "0",
    "WELCOME_BOT_TIME": "180",
    "WELCOME_BOT_LEFT": "close",
    "NO_ANSWER_RULE": "none",
    "NO_ANSWER_FORM_ID": "0",
    "NO_ANSWER_BOT_ID": "0",
    "NO_ANSWER_TEXT": "",
    "WORKTIME_ENABLE": "N",
    "WORKTIME_FROM": "9",
    "WORKTIME_TO": "18.30",
    "WORKTIME_TIMEZONE": "UTC",
    "WORKTIME_HOLIDAYS": [""],
    "WORKTIME_DAYOFF": [""],
    "WORKTIME_DAYOFF_RULE": "text",
    "WORKTIME_DAYOFF_FORM_ID": "0",
    "WORKTIME_DAYOFF_BOT_ID": "0",
    "WORKTIME_DAYOFF_TEXT": "",
    "CLOSE_RULE": "none",
    "CLOSE_FORM_ID": "0",
    "CLOSE_BOT_ID": "0",
    "CLOSE_TEXT": "",
    "FULL_CLOSE_TIME": "0",
    "AUTO_CLOSE_RULE": "none",
    "AUTO_CLOSE_FORM_ID": "0",
    "AUTO_CLOSE_BOT_ID": "0",
    "AUTO_CLOSE_TIME": "3600",
    "AUTO_CLOSE_TEXT": "",
    "AUTO_EXPIRE_TIME": "86400",
    "DATE_CREATE": {},
    "DATE_MODIFY": {},
    "MODIFY_USER_ID": "1",
    "TEMPORARY": "N",
    "XML_ID": None,
    "LANGUAGE_ID": "en",
    "QUICK_ANSWERS_IBLOCK_ID": "0",
    "SESSION_PRIORITY": "0",
    "TYPE_MAX_CHAT": "answered_new",
    "MAX_CHAT": "0",
    "OPERATOR_DATA": "profile",
    "DEFAULT_OPERATOR_DATA": [],
    "KPI_FIRST_ANSWER_TIME": "0",
    "KPI_FIRST_ANSWER_ALERT": "N",
    "KPI_FIRST_ANSWER_LIST": None,
    "KPI_FIRST_ANSWER_TEXT": "",
    "KPI_FURTHER_ANSWER_TIME": "0",
    "KPI_FURTHER_ANSWER_ALERT": "N",
    "KPI_FURTHER_ANSWER_LIST": None,
    "KPI_FURTHER_ANSWER_TEXT": "",
    "KPI_CHECK_OPERATOR_ACTIVITY": "N",
    "SEND_NOTIFICATION_EMPTY_QUEUE": "N",
    "USE_WELCOME_FORM": "N",
    "WELCOME_FORM_ID": "0",
    "WELCOME_FORM_DELAY": "Y",
    "SEND_WELCOME_EACH_SESSION": "N",
    "CONFIRM_CLOSE": "Y",
    "IGNORE_WELCOME_FORM_RESPONSIBLE": "N",
}
#: unknown: the sandbox's queue holds one operator, employee 2 — not the application's user (1), who
#: therefore is no member of an imported chat until imopenlines.session.join.
DEFAULT_QUEUE = ["2"]
#: Fields imopenlines.config.update may not change (the portal keeps them itself).
READ_ONLY = frozenset({"ID", "DATE_CREATE", "DATE_MODIFY", "MODIFY_USER_ID"})
LIST_FIELDS = frozenset(
    {
        "WORKTIME_HOLIDAYS",
        "WORKTIME_DAYOFF",
        "DEFAULT_OPERATOR_DATA",
        "KPI_FIRST_ANSWER_LIST",
        "KPI_FURTHER_ANSWER_LIST",
    }
)
YN_FIELDS = frozenset(k for k, v in DEFAULTS.items() if v in ("Y", "N")) | {"ACTIVE"}
INT_FIELDS = frozenset(k for k, v in DEFAULTS.items() if isinstance(v, str) and re.fullmatch(r"\d+", v))
FIELDS = ["ID", "ACTIVE", "LINE_NAME", *DEFAULTS]
_LEADING_INT = re.compile(r"\s*([+-]?\d+)")


def settings(row: Any) -> dict[str, Any]:
    """The stored overrides of one line (``lines.settings``)."""
    raw = row["settings"] if "settings" in row.keys() else None  # noqa: SIM118 (a sqlite3.Row)
    return json.loads(raw) if raw else {}


def line_object(row: Any) -> dict[str, Any]:
    """The line object of imopenlines.config.get for a ``lines`` row: defaults with its own settings."""
    own = settings(row)
    out: dict[str, Any] = {"ID": str(row["id"]), "ACTIVE": row["active"], "LINE_NAME": row["name"]}
    for key, default in DEFAULTS.items():
        out[key] = own.get(key, default)
    return out


def queue(row: Any) -> list[str]:
    """The line's operator queue (employee ids as strings, in order)."""
    return list(settings(row).get("QUEUE", DEFAULT_QUEUE))


def _php_int(value: Any) -> str:
    """PHP ``intval`` as text: leading digits, else 0 (unknown: the portal's cast of a bad number)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return str(int(value))
    match = _LEADING_INT.match(str(value))
    return str(int(match.group(1))) if match else "0"


def _yn(value: Any) -> str:
    if isinstance(value, bool):
        return "Y" if value else "N"
    return "Y" if str(value).strip().upper() in ("Y", "1", "TRUE") else "N"


def _queue(value: Any) -> list[str]:
    """config.add's QUEUE (``[{ENTITY_TYPE: "user", ENTITY_ID: 27}, …]`` or plain ids) → user ids."""
    items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else [value]
    out: list[str] = []
    for item in items:
        if isinstance(item, dict):
            # unknown: departments are not expanded (the sandbox has none); they are skipped.
            if str(item.get("ENTITY_TYPE", "user")).lower() != "user":
                continue
            item = item.get("ENTITY_ID")
        text = _php_int(item) if item is not None else "0"
        if text != "0" and text not in out:
            out.append(text)
    return out


def normalize(params: dict[str, Any]) -> dict[str, Any]:
    """PARAMS of imopenlines.config.update → stored values (strings as config.get returns them).

    unknown: fields the documentation does not list are ignored, as an ORM update ignores them.
    """
    out: dict[str, Any] = {}
    for raw_key, value in params.items():
        key = str(raw_key).upper()
        if key == "QUEUE":
            out[key] = _queue(value)
        elif key in READ_ONLY or key not in FIELDS:
            continue
        elif key in YN_FIELDS:
            out[key] = _yn(value)
        elif key in INT_FIELDS:
            out[key] = _php_int(value)
        elif key in LIST_FIELDS:
            items = (
                list(value.values())
                if isinstance(value, dict)
                else value
                if isinstance(value, list)
                else [value]
            )
            out[key] = [str(v) for v in items]
        elif value is None:
            out[key] = None
        else:
            out[key] = str(value) if not isinstance(value, dict | list) else json.dumps(value)
    return out
