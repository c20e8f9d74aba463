"""The Bitrix24 chat as the messenger sees it: messenger ids, members, and the line's own messages.

Every stored connector message also gets a messenger message (``im_messages``: the id the read-back
methods page by); the portal adds its system messages (author 0) to the same chat — the welcome
text when a session starts, the rating request when it is finished — as the line's settings say.
These functions run inside the caller's store transaction (``db`` is its connection).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from . import lineconfig
from .store import dumps

#: The application's user: the portal administrator who installed the local application.
ADMIN_USER = 1


def add_message(
    db: sqlite3.Connection,
    chat: int,
    session: int,
    author: int,
    now: float,
    *,
    seq: int | None = None,
    text: str | None = None,
    params: dict[str, Any] | None = None,
) -> int:
    """Append a messenger message to ``chat`` (a connector message by ``seq``, or a system one); its id."""
    cursor = db.execute(
        "INSERT INTO im_messages (chat, session, author, seq, text, params, date) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (chat, session, author, seq, text, dumps(params) if params else None, now),
    )
    return int(cursor.lastrowid or 0)


def add_member(db: sqlite3.Connection, chat: int, user: int, now: float) -> None:
    """Make ``user`` a member of ``chat`` (no-op if already one)."""
    db.execute("INSERT OR IGNORE INTO chat_members (chat, user, joined) VALUES (?, ?, ?)", (chat, user, now))


def is_member(db: Any, chat: int, user: int) -> bool:
    """Whether ``user`` is a member of ``chat``."""
    return db.one("SELECT 1 FROM chat_members WHERE chat = ? AND user = ?", (chat, user)) is not None


def session_started(
    db: sqlite3.Connection, line_row: Any, chat: int, session: int, client: int, now: float
) -> None:
    """A session was opened by a client's message: the client and the queue's operator join the chat,
    and the welcome message follows the client's message while the line's setting is on.

    unknown: the exact automation; the sandbox sends the welcome text in the first session of a chat,
    and in every later one only with ``SEND_WELCOME_EACH_SESSION = Y`` (the setting's plain reading).
    """
    add_member(db, chat, client, now)
    operators = lineconfig.queue(line_row)
    if operators:
        add_member(db, chat, int(operators[0]), now)
    line = lineconfig.line_object(line_row)
    if line["WELCOME_MESSAGE"] != "Y":
        return
    earlier = db.execute(
        "SELECT COUNT(*) FROM sessions WHERE chat = ? AND id != ?", (chat, session)
    ).fetchone()[0]
    if earlier and line["SEND_WELCOME_EACH_SESSION"] != "Y":
        return
    add_message(
        db,
        chat,
        session,
        0,
        now,
        text=str(line["WELCOME_MESSAGE_TEXT"]),
        params={"CLASS": "bx-messenger-content-item-ol-output", "IMOL_SID": session},
    )


def session_finished(db: sqlite3.Connection, line_row: Any, chat: int, session: int, now: float) -> None:
    """The rating request a finished session ends with, while the line's ``VOTE_MESSAGE`` is on."""
    # unknown: which text and author; the sandbox posts VOTE_MESSAGE_2_TEXT (the text-channel
    # variant) as a system message (author 0), and no "conversation closed" message.
    line = lineconfig.line_object(line_row)
    if line["VOTE_MESSAGE"] == "Y":
        add_message(
            db,
            chat,
            session,
            0,
            now,
            text=str(line["VOTE_MESSAGE_2_TEXT"]),
            params={"IMOL_VOTE_SID": session, "IMOL_VOTE": "none"},
        )
