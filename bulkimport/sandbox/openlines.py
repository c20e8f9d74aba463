"""Open-line read-back, finishing sessions and line settings (reference §3a, §3b; official pages
``imopenlines.dialog.get``, ``imopenlines.session.history.get``, ``imopenlines.session.join``,
``im.dialog.messages.get``, ``imopenlines.operator.another.finish``, ``imopenlines.config.update``).

The chats, sessions and messenger messages these read are written by ``imconnector.send.messages``
(portal.py) through chatlog.py. Who may read: the administrator (the application's user, 1) may
open any open-line dialog; other employees only those they are members of; ``im.dialog.messages.get``
wants membership from everyone (``imopenlines.session.join`` gives it).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from . import chatlog, lineconfig
from .portal import ApiError, Caller, Portal, Work, _int, _iso, method

DIALOG_NO_ACCESS = "You do not have access to the specified dialog"
NO_RIGHTS = "You cannot open this conversation as you do not have sufficient permissions"
HISTORY_NO_RIGHTS = "You cannot open this conversation as you do not have sufficient rights"
MESSAGES_DEFAULT_LIMIT, MESSAGES_MAX_LIMIT = 20, 50
#: Files the portal fetched get ids above this floor (chat files live on the portal's Drive).
FILE_ID_FLOOR = 5000
_DIALOG_RE = re.compile(r"^chat(\d+)$")
_IMAGE = {"jpe", "jpg", "jpeg", "png", "webp", "gif", "bmp"}
_BB = [(re.compile(r"\[(/?)(b|i|u|s)\]", re.I), r"<\1\2>"), (re.compile(r"\[br\]", re.I), "<br />")]


# ----------------------------------------------------------------------------- shared look-ups
def _chat(portal: Portal, chat_id: int | None) -> Any:
    return None if chat_id is None else portal.store.one("SELECT * FROM chats WHERE id = ?", (chat_id,))


def _can_open(portal: Portal, caller: Caller, chat: int) -> bool:
    """The administrator opens any open-line dialog; others need to be members."""
    return caller.user_id == chatlog.ADMIN_USER or chatlog.is_member(portal.store, chat, caller.user_id)


def _sessions(portal: Portal, chat: int) -> list[Any]:
    return portal.store.all("SELECT * FROM sessions WHERE chat = ? ORDER BY id", (chat,))


def _visible(
    portal: Portal,
    chat: int,
    where: str = "",
    params: tuple[Any, ...] = (),
    order: str = "DESC",
    limit: int | None = None,
) -> list[Any]:
    """The chat's messages as the messenger shows them (deleted and lost connector messages are gone)."""
    # ``where`` is always one of this module's own fixed clauses; values are bound parameters.
    sql = (
        "SELECT i.id, i.chat, i.session, i.author, i.seq, i.text AS system_text, i.params, i.date, "
        "m.text, m.message_id FROM im_messages i LEFT JOIN messages m ON m.seq = i.seq WHERE i.chat = ? "
        "AND (i.seq IS NULL OR (m.seq IS NOT NULL AND m.deleted IS NULL))"
    )
    sql += where + f" ORDER BY i.id {'ASC' if order == 'ASC' else 'DESC'}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return portal.store.all(sql, (chat, *params))


def _files_of(portal: Portal, rows: list[Any]) -> dict[int, list[Any]]:
    """Fetched files per connector message (``seq``)."""
    seqs = [r["seq"] for r in rows if r["seq"] is not None]
    out: dict[int, list[Any]] = {}
    if not seqs:
        return out
    marks = ",".join("?" * len(seqs))
    for f in portal.store.all(
        f"SELECT * FROM downloads WHERE status = 'ok' AND seq IN ({marks}) "  # noqa: S608
        "ORDER BY seq, position",
        seqs,
    ):
        out.setdefault(int(f["seq"]), []).append(f)
    return out


# unknown: which date the messenger shows for an imported message; the sandbox shows the arrival
# time (``im_messages.date``, when the portal created the message), not the ``message.date`` sent —
# both stay in ``store.messages()`` (``received``, ``date``).


def _text(row: Any) -> str:
    text = row["system_text"] if row["seq"] is None else row["text"]
    return text or ""


def _legacy(text: str) -> str:
    for pattern, html in _BB:
        text = pattern.sub(html, text)
    return text.replace("\n", "<br />")


def _file_object(f: Any, chat: int, author: int, camel: bool) -> dict[str, Any]:
    name = f["name"] or f["url"].rsplit("/", 1)[-1].split("?", 1)[0] or "file"
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    keys = ("chatId", "authorId") if camel else ("chatid", "authorid")
    # unknown: the file's own URLs (urlDownload, urlShow); the sandbox keeps no bytes of fetched files.
    return {
        "id": FILE_ID_FLOOR + int(f["id"]),
        keys[0]: chat,
        "date": _iso(f["fetched"]),
        "type": "image" if ext in _IMAGE else "file",
        "name": name,
        "extension": ext,
        "size": f["size"],
        "status": "done",
        "progress": 100,
        keys[1]: author,
    }


def _user_object(portal: Portal, user: int) -> dict[str, Any]:
    row = portal.store.one("SELECT * FROM users WHERE id = ?", (user,))
    if row is not None:  # a connector's technical user
        first, last = row["name"] or "Guest", row["last_name"] or ""
        return {
            "id": user,
            "active": True,
            "name": f"{first} {last}".strip(),
            "first_name": first,
            "last_name": last,
            "gender": {"male": "M", "female": "F"}.get(row["gender"] or "", ""),
            "extranet": True,
            "network": False,
            "bot": False,
            "connector": True,
            "external_auth_id": "imconnector",
            "type": "user",
        }
    name = ("Sandbox", "Administrator") if user == chatlog.ADMIN_USER else ("Employee", str(user))
    return {
        "id": user,
        "active": True,
        "name": " ".join(name),
        "first_name": name[0],
        "last_name": name[1],
        "gender": "",
        "extranet": False,
        "network": False,
        "bot": False,
        "connector": False,
        "external_auth_id": "default",
        "type": "user",
    }


def _params(row: Any, files: list[Any], mid_key: str, file_key: str) -> dict[str, Any]:
    """A message's params: the external id it was sent with and its files (connector messages).

    inferred (reference §3a): a connector message keeps the ``message.id`` it was sent with as
    ``CONNECTOR_MID`` (``connectorMid`` in session.history.get), an array of strings.
    """
    params: dict[str, Any] = json.loads(row["params"]) if row["params"] else {}
    if row["seq"] is not None and row["message_id"] is not None:
        params[mid_key] = [str(row["message_id"])]
    if files:
        params[file_key] = [FILE_ID_FLOOR + int(f["id"]) for f in files]
    return params


def _owner(portal: Portal, chat: int) -> int:
    """The operator of the chat (the first employee member), or 0."""
    row = portal.store.one(
        "SELECT m.user FROM chat_members m WHERE m.chat = ? AND m.user NOT IN "
        "(SELECT id FROM users) ORDER BY m.joined, m.user LIMIT 1",
        (chat,),
    )
    return int(row["user"]) if row is not None else 0


def _entity_data_1(session: Any) -> str:
    """``entity_data_1``: its 6th ``|`` field is the current session's id (no CRM entity is simulated)."""
    if session is None:
        return "N|NONE|0|N|N|0|0|0|0|0"
    return f"N|NONE|0|N|N|{session['id']}|{int(session['opened'])}|0|0|0"


def _chat_name(portal: Portal, chat: Any) -> str:
    if chat["name"]:
        return str(chat["name"])
    user = portal.store.one(
        "SELECT name, last_name FROM users WHERE connector = ? AND external_id = ?",
        (chat["connector"], chat["user_key"]),
    )
    line = portal.store.line(int(chat["line"]))
    who = " ".join(p for p in ((user["name"], user["last_name"]) if user else ()) if p) or "Guest"
    return f"{who} - {line['name'] if line else 'Open line'}"


def _dialog(portal: Portal, caller: Caller, chat: Any) -> dict[str, Any]:
    """The chat object of imopenlines.dialog.get."""
    chat_id = int(chat["id"])
    sessions = _sessions(portal, chat_id)
    count = portal.store.one(
        "SELECT COUNT(*) AS n, MAX(i.id) AS last FROM im_messages i LEFT JOIN messages m ON m.seq = i.seq "
        "WHERE i.chat = ? AND (i.seq IS NULL OR (m.seq IS NOT NULL AND m.deleted IS NULL))",
        (chat_id,),
    )
    members = [
        int(r["user"]) for r in portal.store.all("SELECT user FROM chat_members WHERE chat = ?", (chat_id,))
    ]
    owner = _owner(portal, chat_id)
    last = int(count["last"] or 0) if count else 0
    return {
        "id": chat_id,
        "parent_chat_id": 0,
        "parent_message_id": 0,
        "name": _chat_name(portal, chat),
        "description": None,
        "owner": owner,
        "extranet": False,
        "avatar": "",
        "color": "#58cc47",
        "type": "lines",
        "counter": 0,
        "user_counter": len(members),
        "message_count": int(count["n"]) if count else 0,
        "unread_id": 0,
        "restrictions": {
            k: True
            for k in (
                "avatar",
                "rename",
                "extend",
                "call",
                "mute",
                "leave",
                "leave_owner",
                "send",
                "user_list",
            )
        },
        "last_message_id": last,
        "last_id": last,
        "marked_id": 0,
        "disk_folder_id": 0,
        "entity_type": "LINES",
        "entity_id": chat["entity_id"],
        "entity_data_1": _entity_data_1(sessions[-1] if sessions else None),
        "entity_data_2": "LEAD|0|COMPANY|0|CONTACT|0|DEAL|0",
        "entity_data_3": "N",
        "mute_list": [],
        "date_create": _iso(chat["created"]),
        "message_type": "L",
        "public": "",
        "role": "member" if caller.user_id in members else "none",
        "entity_link": {"type": "LINES", "url": "", "id": chat["entity_id"]},
        "text_field_enabled": True,
        "background_id": None,
        "permissions": {
            "manage_users_add": "member",
            "manage_users_delete": "manager",
            "manage_ui": "member",
            "manage_settings": "owner",
            "manage_messages": "member",
            "can_post": "member",
        },
        "is_new": False,
        "readed_list": [],
        "manager_list": [owner] if owner else [],
        "last_message_views": {"message_id": last, "first_viewers": [], "count_of_viewers": 0},
        "dialog_id": f"chat{chat_id}",
    }


# ----------------------------------------------------------------------------- read-back
@method("imopenlines.dialog.get")
def _dialog_get(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    """One of CHAT_ID, DIALOG_ID (``chatNNN``), SESSION_ID, USER_CODE → the open-line chat."""
    chat = None
    if params.get("CHAT_ID") not in (None, ""):
        chat = _chat(portal, _int(params["CHAT_ID"]))
    elif params.get("DIALOG_ID") not in (None, ""):
        match = _DIALOG_RE.match(str(params["DIALOG_ID"]).strip())
        chat = _chat(portal, int(match.group(1))) if match else None
    elif params.get("SESSION_ID") not in (None, ""):
        session = portal.store.one(
            "SELECT chat FROM sessions WHERE id = ?", (_int(params["SESSION_ID"]) or 0,)
        )
        chat = _chat(portal, int(session["chat"])) if session else None
    elif params.get("USER_CODE") not in (None, ""):
        # A duplicated dialog (two chats for one code) answers with the first one created.
        chat = portal.store.one(
            "SELECT * FROM chats WHERE entity_id = ? ORDER BY id LIMIT 1", (str(params["USER_CODE"]),)
        )
    # unknown: the answer when no parameter is given; the sandbox treats it as a dialog not found.
    if chat is None or not _can_open(portal, caller, int(chat["id"])):
        raise ApiError(400, "ACCESS_ERROR", DIALOG_NO_ACCESS)
    return _dialog(portal, caller, chat)


def _history_session(portal: Portal, params: dict[str, Any]) -> Any:
    """The session session.history.get reads: SESSION_ID, else the last (ID DESC) of CHAT_ID."""
    if params.get("SESSION_ID") not in (None, "", 0, "0"):
        session = portal.store.one("SELECT * FROM sessions WHERE id = ?", (_int(params["SESSION_ID"]) or 0,))
        if session is None:
            raise ApiError(400, "ACCESS_DENIED", HISTORY_NO_RIGHTS)
        return session
    if params.get("CHAT_ID") in (None, "", 0, "0"):
        raise ApiError(400, "MISSING_REQUIRED_PARAM", "Session ID or Chat ID must be provided")
    session = portal.store.one(
        "SELECT * FROM sessions WHERE chat = ? ORDER BY id DESC LIMIT 1", (_int(params["CHAT_ID"]) or 0,)
    )
    if session is None:
        raise ApiError(400, "INVALID_SESSION_ID", "Unable to determine session ID from provided parameters")
    return session


def _history_messages(
    portal: Portal, chat_id: int, rows: list[Any]
) -> tuple[dict[str, Any], list[int], dict[str, Any]]:
    """session.history.get's ``message`` map, its authors and ``files`` map."""
    files = _files_of(portal, rows)
    messages: dict[str, Any] = {}
    authors: list[int] = []
    file_objects: dict[str, Any] = {}
    for row in rows:
        own = files.get(int(row["seq"]), []) if row["seq"] is not None else []
        text = _text(row)
        messages[str(row["id"])] = {
            "id": str(row["id"]),
            "chatid": str(chat_id),
            "senderid": str(row["author"]),
            "recipientid": f"chat{chat_id}",
            "date": _iso(row["date"]),
            "text": text,
            "textlegacy": _legacy(text),
            "params": _params(row, own, "connectorMid", "fileId") or [],
        }
        if row["author"] and int(row["author"]) not in authors:
            authors.append(int(row["author"]))
        for f in own:
            obj = _file_object(f, chat_id, int(row["author"]), camel=False)
            file_objects[str(obj["id"])] = obj
    return messages, authors, file_objects


def _history_user(portal: Portal, user: int) -> dict[str, Any]:
    """A user as session.history.get describes one (camelCase keys)."""
    obj = _user_object(portal, user)
    return {
        "id": str(user),
        "name": obj["name"],
        "active": True,
        "firstName": obj["first_name"],
        "lastName": obj["last_name"],
        "gender": obj["gender"] or "M",
        "extranet": obj["extranet"],
        "network": False,
        "bot": False,
        "connector": obj["connector"],
        "externalAuthId": obj["external_auth_id"],
        "type": "user",
    }


def _history_chat(chat: Any, card: dict[str, Any]) -> dict[str, Any]:
    """The chat as session.history.get describes it (camelCase keys)."""
    return {
        "id": str(chat["id"]),
        "parentChatId": 0,
        "parentMessageId": 0,
        "name": card["name"],
        "owner": str(card["owner"]),
        "color": card["color"],
        "extranet": False,
        "avatar": "",
        "call": "0",
        "callNumber": "",
        "entityType": "LINES",
        "entityId": chat["entity_id"],
        "entityData1": card["entity_data_1"],
        "entityData2": card["entity_data_2"],
        "entityData3": "",
        "messageCount": card["message_count"],
        "public": "",
        "managerList": card["manager_list"],
        "dateCreate": card["date_create"],
        "type": "lines",
        "messageType": "L",
        "isNew": False,
    }


@method("imopenlines.session.history.get")
def _history(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    """One session's messages (newest first), users, chat and files; no membership needed.

    unknown: whether a long session is truncated; the sandbox returns all of its messages.
    """
    session = _history_session(portal, params)
    chat_id = int(session["chat"])
    chat = _chat(portal, chat_id)
    if chat is None or not _can_open(portal, caller, chat_id):
        raise ApiError(400, "ACCESS_DENIED", HISTORY_NO_RIGHTS)
    rows = _visible(portal, chat_id, " AND i.session = ?", (int(session["id"]),))
    messages, authors, file_objects = _history_messages(portal, chat_id, rows)
    members = [
        int(r["user"])
        for r in portal.store.all(
            "SELECT user FROM chat_members WHERE chat = ? ORDER BY joined, user", (chat_id,)
        )
    ]
    dialog = f"chat{chat_id}"
    return {
        "chatId": chat_id,
        "canJoin": "Y",
        "canVoteHead": "Y",
        "sessionId": int(session["id"]),
        "sessionVoteHead": 0,
        "sessionCommentHead": None,
        "userId": dialog,
        "message": messages or [],
        "usersMessage": {dialog: list(messages)},
        "users": {str(u): _history_user(portal, u) for u in authors} or [],
        "openlines": {"canvoteashead": {str(chat["line"]): True}},
        "userInGroup": [],
        "woUserInGroup": [],
        "chat": {str(chat_id): _history_chat(chat, _dialog(portal, caller, chat))},
        "userBlockChat": {str(chat_id): {str(u): False for u in members}},
        "userInChat": {str(chat_id): members},
        "files": file_objects or [],
    }


@method("imopenlines.session.join")
def _join(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    """The calling user becomes a member of the chat of an active dialogue.

    unknown: joining a chat whose session is finished; the documentation speaks of "an active
    dialogue", so the sandbox refuses it (ACCESS_DENIED): read a finished one with session.history.get.
    """
    chat_id = _int(params.get("CHAT_ID"))
    chat = _chat(portal, chat_id) if chat_id is not None and chat_id > 0 else None
    if chat is None:
        raise ApiError(400, "CHAT_ID", "The specified chat identifier is incorrect")
    open_session = portal.store.one("SELECT id FROM sessions WHERE chat = ? AND closed IS NULL", (chat_id,))
    if not _can_open(portal, caller, int(chat["id"])) or open_session is None:
        raise ApiError(400, "ACCESS_DENIED", NO_RIGHTS)
    with portal.store.transaction() as db:
        chatlog.add_member(db, int(chat["id"]), caller.user_id, portal.clock.now())
    return True


def _keyset(params: dict[str, Any], name: str, code: str, text: str) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    number = _int(value)
    if number is None:
        raise ApiError(400, code, text)
    return number if number > 0 else None  # 0: not given (the walk's start)


def _page_rows(portal: Portal, chat: int, first: int | None, last: int | None, limit: int) -> list[Any]:
    """The LIMIT messages next to FIRST_ID (newer) or LAST_ID (older), or the latest; newest first.

    A FIRST_ID/LAST_ID that names no message of the chat gives an empty page (documented). unknown:
    both given; the sandbox lets FIRST_ID decide, as the newer-than walk is what readers use.
    """
    for anchor in (first, last):
        if anchor is not None and not _visible(portal, chat, " AND i.id = ?", (anchor,)):
            return []
    if first is not None:
        rows = _visible(portal, chat, " AND i.id > ?", (first,), order="ASC", limit=limit)
        return list(reversed(rows))
    if last is not None:
        return _visible(portal, chat, " AND i.id < ?", (last,), limit=limit)
    return _visible(portal, chat, limit=limit)


@method("im.dialog.messages.get", scope="im")
def _dialog_messages(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    """A page of a chat's messages (system ones included) for a member of the chat."""
    match = _DIALOG_RE.match(str(params.get("DIALOG_ID") or "").strip())
    if params.get("DIALOG_ID") in (None, "") or not (match or str(params["DIALOG_ID"]).strip().isdigit()):
        raise ApiError(400, "DIALOG_ID_EMPTY", "Dialog ID can't be empty")
    first = _keyset(params, "FIRST_ID", "FIRST_ID_STRING", "First ID can't be string")
    last = _keyset(params, "LAST_ID", "LAST_ID_STRING", "Last ID can't be string")
    limit = _int(params.get("LIMIT"))
    # unknown: a LIMIT below 1 or not a number; the sandbox uses the default.
    limit = MESSAGES_DEFAULT_LIMIT if limit is None or limit < 1 else min(limit, MESSAGES_MAX_LIMIT)
    chat = _chat(portal, int(match.group(1))) if match else None  # personal chats are not simulated
    if chat is None or not chatlog.is_member(portal.store, int(chat["id"]), caller.user_id):
        raise ApiError(403, "ACCESS_ERROR", DIALOG_NO_ACCESS)
    chat_id = int(chat["id"])
    rows = _page_rows(portal, chat_id, first, last, limit)
    files = _files_of(portal, rows)
    messages, authors, file_objects = [], [], []
    for row in rows:
        own = files.get(int(row["seq"]), []) if row["seq"] is not None else []
        system = row["seq"] is None
        messages.append(
            {
                "id": int(row["id"]),
                "chat_id": chat_id,
                "author_id": int(row["author"]),
                "date": _iso(row["date"]),
                "text": _text(row),
                "unread": False,
                "uuid": None
                if system
                else str(uuid.uuid5(uuid.NAMESPACE_URL, f"sandbox-message-{row['id']}")),
                "replaces": [],
                "params": _params(row, own, "CONNECTOR_MID", "FILE_ID") or [],
                "disappearing_date": None,
            }
        )
        if row["author"] and int(row["author"]) not in authors:
            authors.append(int(row["author"]))
        file_objects += [_file_object(f, chat_id, int(row["author"]), camel=True) for f in own]
    return {
        "chat_id": chat_id,
        "messages": messages,
        "users": [_user_object(portal, u) for u in authors],
        "files": file_objects,
    }


# ----------------------------------------------------------------------------- finishing, settings
@method("imopenlines.operator.another.finish")
def _another_finish(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    """Close the chat's open session; the next client message opens a new one in the same chat.

    unknown: a chat whose session is already finished; the sandbox answers ``true`` again (nothing
    to close — the reading of the portal's code path that finishes "the current session", if any).
    """
    chat_id = _int(params.get("CHAT_ID"))
    chat = _chat(portal, chat_id) if chat_id is not None and chat_id > 0 else None
    if chat is None:
        raise ApiError(400, "CHAT_ID", "The provided chat identifier is invalid")
    if not _can_open(portal, caller, int(chat["id"])):
        raise ApiError(400, "ACCESS_DENIED", NO_RIGHTS)
    now = portal.clock.now()
    line_row = portal.store.line(int(chat["line"]))
    with portal.store.transaction() as db:
        for session in db.execute(
            "SELECT id FROM sessions WHERE chat = ? AND closed IS NULL ORDER BY id", (chat["id"],)
        ).fetchall():
            db.execute("UPDATE sessions SET closed = ? WHERE id = ?", (now, session["id"]))
            if line_row is not None:
                chatlog.session_finished(db, line_row, int(chat["id"]), int(session["id"]), now)
    return True


@method("imopenlines.config.update")
def _config_update(portal: Portal, caller: Caller, params: dict[str, Any], work: Work) -> Any:
    """Change a line's settings (PARAMS as in imopenlines.config.add); ``false`` for a missing line."""
    config_id = _int(params.get("CONFIG_ID"))
    if config_id is None or config_id <= 0:
        raise ApiError(400, "CONFIG_ID_EMPTY", "Config ID can't be empty")
    if caller.user_id != chatlog.ADMIN_USER:
        raise ApiError(403, "CONFIG_WRONG_USER_PERMISSION", "Permission denied")
    row = portal.store.line(config_id)
    if row is None:
        return False
    raw = params.get("PARAMS")
    # unknown: PARAMS missing or not an object; the sandbox changes nothing and answers true.
    changes = lineconfig.normalize(raw) if isinstance(raw, dict) else {}
    name, active = changes.pop("LINE_NAME", None), changes.pop("ACTIVE", None)
    merged = {**lineconfig.settings(row), **changes}
    portal.store.run(
        "UPDATE lines SET name = COALESCE(?, name), active = COALESCE(?, active), settings = ? WHERE id = ?",
        (name, active, json.dumps(merged, ensure_ascii=False), config_id),
    )
    return True
