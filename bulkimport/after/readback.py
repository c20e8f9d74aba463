"""Read an imported chat back from the portal: which external message ids it holds (reference §3a).

One chat costs ``imopenlines.session.join`` (the app user becomes a member, which
``im.dialog.messages.get`` requires) and one ``im.dialog.messages.get`` per 50 messages, walked
from the newest backwards with ``LAST_ID``. System messages (author 0: welcome texts, "a lead was
created") are ignored; a connector message names the external ``message.id`` it was sent with in
``params.CONNECTOR_MID`` (likely, unconfirmed on a live portal: ``bulkimport setup
--check-readback`` checks it). Every call goes through the client, hence through the governor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import BulkImportError, FatalError, PortalError

#: ``im.dialog.messages.get`` returns at most this many messages per call.
PAGE = 50
#: Chats read per ``batch`` request (two commands each: join and the first page; 50 at most).
BATCH_CHATS = 25
#: ``imopenlines.session.history.get`` calls per ``batch`` request (the batch maximum).
BATCH_HISTORY = 50
HISTORY = "imopenlines.session.history.get"
#: Refusals before execution (rate limits) are waited out and repeated this many times per call.
RETRIES = 8
#: Codes that mean "this caller may not read this chat" rather than "there is no such chat".
REFUSED = frozenset({"insufficient_scope", "ACCESS_DENIED", "WRONG_AUTH_TYPE", "user_access_error"})


#: … of those, the ones a join may answer that still mean "not allowed to read" (a finished session
#: refuses the join with ACCESS_DENIED, and a member may read on).
_JOIN_REFUSED = REFUSED - {"ACCESS_DENIED"}


class ReadbackRefused(BulkImportError):
    """The portal refuses read-back (scope, permissions): nothing can be concluded from it."""


@dataclass
class ChatContents:
    """What one portal chat holds: external message id → portal message id, and the counts."""

    chat_id: int
    found: dict[str, str] = field(default_factory=dict)
    system: int = 0  # author-0 messages (ignored)
    without_mid: int = 0  # non-system messages carrying no CONNECTOR_MID
    calls: int = 0
    want: frozenset[str] = frozenset()  # stop walking once these are found (empty: read it all)

    def done(self) -> bool:
        """Every wanted id is found (never, when nothing in particular is wanted)."""
        return bool(self.want) and self.want <= self.found.keys()


def _mids(params: Any) -> list[str]:
    """The CONNECTOR_MID values of one message's params (an array of strings, or one value)."""
    if not isinstance(params, Mapping):
        return []
    value = params.get("CONNECTOR_MID")
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


class ChatReader:
    """Reads chats back through ``client`` (``Client.call``: so through the governor).

    ``sessions`` (portal CHAT_ID → the SESSION_IDs the import's rows were stored in, from the
    journal) lets a chat whose session was finished be read without membership: a finished session
    refuses ``imopenlines.session.join``, so ``im.dialog.messages.get`` is refused too, while
    ``imopenlines.session.history.get`` reads one session of any chat the caller has rights to.
    """

    def __init__(self, client: Any, sessions: Mapping[int, list[str]] | None = None) -> None:
        self.client = client
        self.calls = 0
        self.sessions = dict(sessions or {})
        self._admin: bool | None = None

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        self.calls += 1
        try:
            return self.client.call(method, params, retries=RETRIES)
        except PortalError as exc:
            if isinstance(exc, FatalError) or exc.code in REFUSED:
                raise _refused(method, exc) from None
            raise

    def find_chat(
        self, connector: str, line: int | str, chat: str, user: str
    ) -> tuple[int, str | None] | None:
        """The portal CHAT_ID and current SESSION_ID of an external chat (None: no such dialog)."""
        code = f"{connector}|{line}|{chat}|{user}"
        try:
            result = self._call("imopenlines.dialog.get", {"USER_CODE": code})
        except PortalError as exc:
            if exc.code != "ACCESS_ERROR":
                raise
            # ACCESS_ERROR answers both "no such dialog" and "you may not open it": only for a
            # portal administrator, who may open every open-line dialog, does it mean the first
            if self.is_admin():
                return None
            raise ReadbackRefused(
                f"imopenlines.dialog.get answered ACCESS_ERROR ({exc.description}) for chat {chat!r}, "
                "and the application's user is not a portal administrator: a dialog that does not "
                "exist cannot be told from one it may not open; authorise the application as a portal "
                "administrator (`bulkimport auth`), or settle the rows with `bulkimport resolve`"
            ) from None
        parts = str(result.get("entity_data_1") or "").split("|")
        session = parts[5] if len(parts) > 5 and parts[5] else None
        return int(result["id"]), session

    def is_admin(self) -> bool:
        """Whether the application's user is a portal administrator (``profile``'s ``ADMIN``; asked
        once). A profile the portal will not give counts as not."""
        if self._admin is None:
            self.calls += 1
            try:
                answer = self.client.call("profile", {}, retries=RETRIES)
            except PortalError:
                answer = None
            self._admin = isinstance(answer, Mapping) and answer.get("ADMIN") in (True, "true", "Y", 1, "1")
        return self._admin

    def _join(self, chat_id: int) -> str:
        """Become a member of the chat (a finished session refuses: then we may be one already)."""
        self.calls += 1
        try:
            self.client.call("imopenlines.session.join", {"CHAT_ID": chat_id}, retries=RETRIES)
        except PortalError as exc:
            if exc.code in ("ACCESS_DENIED", "CHAT_ID"):
                return f"refused with {exc.code}"
            raise
        return "joined"

    def read(self, chat_id: int, want: frozenset[str] = frozenset()) -> ChatContents:
        """Every non-system message of portal chat ``chat_id``, walked 50 at a time (``want``: stop
        as soon as these external ids are found — a complete walk only proves what is absent)."""
        out = ChatContents(chat_id, want=want)
        before = self.calls
        joined = self._join(chat_id)
        try:
            self._walk(out, None, joined)
        except ReadbackRefused:
            if joined == "joined":
                raise
            out = self._history(chat_id, want)  # a finished session: read it without membership
        out.calls = self.calls - before
        return out

    def _history(self, chat_id: int, want: frozenset[str]) -> ChatContents:
        """The chat read session by session with ``imopenlines.session.history.get`` (no membership
        needed). unknown: whether it truncates a session of very many messages (reference §5.4);
        a session read this way that holds none of the wanted ids proves nothing by itself, so
        settling still waits out the request cap before it re-sends."""
        out = ChatContents(chat_id, want=want)
        for params in self._history_params(chat_id):
            _consume_history(out, self._call(HISTORY, params))
            if out.done():
                break
        return out

    def _history_params(self, chat_id: int) -> list[dict[str, Any]]:
        """One ``session.history.get`` per session the journal knows of the chat (else its last)."""
        sessions = list(self.sessions.get(chat_id) or [])
        return [{"SESSION_ID": s} for s in sessions] or [{"CHAT_ID": chat_id}]

    def _histories(self, chats: dict[int, frozenset[str]]) -> dict[int, ChatContents]:
        """Finished-session chats read with ``session.history.get``, :data:`BATCH_HISTORY` calls per
        ``batch`` request; a command refused for the rate (or not run) is read on its own."""
        out = {chat: ChatContents(chat, want=want) for chat, want in chats.items()}
        commands = [(chat, params) for chat in chats for params in self._history_params(chat)]
        for start in range(0, len(commands), BATCH_HISTORY):
            part = commands[start:start + BATCH_HISTORY]
            self.calls += 1
            try:
                answer = self.client.batch({f"h{k}": (HISTORY, params) for k, (_, params) in enumerate(part)},
                                           retries=RETRIES)
            except PortalError as exc:
                if isinstance(exc, FatalError) or exc.code in REFUSED:
                    raise _refused("batch", exc) from None
                raise
            for k, (chat, params) in enumerate(part):
                error = answer.errors.get(f"h{k}")
                if isinstance(error, FatalError) or getattr(error, "code", None) in REFUSED:
                    raise _refused(HISTORY, error)
                if error is None and f"h{k}" in answer.results:
                    _consume_history(out[chat], answer.results[f"h{k}"])
                else:
                    _consume_history(out[chat], self._call(HISTORY, params))
        return out

    def _walk(self, out: ChatContents, last: int | None, joined: str) -> None:
        """Read pages older than ``last`` (None: from the newest) until a page is not full."""
        while True:
            params: dict[str, Any] = {"DIALOG_ID": f"chat{out.chat_id}", "LIMIT": PAGE}
            if last is not None:
                params["LAST_ID"] = last
            try:
                page = self._call("im.dialog.messages.get", params).get("messages") or []
            except PortalError as exc:
                if exc.code != "ACCESS_ERROR":
                    raise
                raise _unreadable(out.chat_id, joined) from None
            last = _consume(out, page)
            if last is None or out.done():
                return

    def read_many(
        self, chat_ids: list[int], want: dict[int, frozenset[str]] | None = None
    ) -> dict[int, ChatContents]:
        """Like :meth:`read` for many chats, :data:`BATCH_CHATS` per ``batch`` request (a join and
        the first page each): a chat of fewer than 50 messages costs 1/25 of a request, not two."""
        out: dict[int, ChatContents] = {}
        history: dict[int, frozenset[str]] = {}  # finished sessions: read in batches afterwards
        for start in range(0, len(chat_ids), BATCH_CHATS):
            part = chat_ids[start:start + BATCH_CHATS]
            commands: dict[str, tuple[str, dict[str, Any]]] = {}
            for k, chat in enumerate(part):
                commands[f"j{k}"] = ("imopenlines.session.join", {"CHAT_ID": chat})
                commands[f"p{k}"] = ("im.dialog.messages.get", {"DIALOG_ID": f"chat{chat}", "LIMIT": PAGE})
            self.calls += 1
            try:
                answer = self.client.batch(commands, retries=RETRIES)
            except PortalError as exc:
                if isinstance(exc, FatalError) or exc.code in REFUSED:
                    raise _refused("batch", exc) from None
                raise
            for k, chat in enumerate(part):
                got = self._from_batch(chat, answer, k, (want or {}).get(chat, frozenset()))
                if got is None:
                    history[chat] = (want or {}).get(chat, frozenset())
                else:
                    out[chat] = got
        out.update(self._histories(history))
        return out

    def _from_batch(self, chat: int, answer: Any, k: int, want: frozenset[str]) -> ChatContents | None:
        """One chat's contents from its two batch commands (walking on, or alone, when needed); None:
        a finished session, to be read without membership (:meth:`_histories`)."""
        join_error, page_error = answer.errors.get(f"j{k}"), answer.errors.get(f"p{k}")
        joined = "joined" if join_error is None else f"refused with {join_error.code}"
        if getattr(join_error, "code", None) == "ACCESS_DENIED" and page_error is not None:
            return None
        if isinstance(join_error, FatalError) or getattr(join_error, "code", None) in _JOIN_REFUSED:
            raise _refused("imopenlines.session.join", join_error)
        if page_error is not None or f"p{k}" not in answer.results:
            code = getattr(page_error, "code", None)
            if code == "ACCESS_ERROR":
                raise _unreadable(chat, joined)
            if isinstance(page_error, FatalError) or code in REFUSED:
                raise _refused("im.dialog.messages.get", page_error)
            return self.read(chat, want)  # refused for the rate (or not run): read it on its own
        out = ChatContents(chat, want=want)
        last = _consume(out, (answer.results[f"p{k}"] or {}).get("messages") or [])
        if last is not None and not out.done():
            self._walk(out, last, joined)
        return out


def sessions_of(journal: Any) -> dict[int, list[str]]:
    """Portal CHAT_ID → the SESSION_IDs the journal's sent rows were stored in (oldest first)."""
    out: dict[int, list[str]] = {}
    rows = journal.query(
        "SELECT chat_id, session_id FROM rows WHERE chat_id IS NOT NULL AND session_id IS NOT NULL "
        "GROUP BY chat_id, session_id ORDER BY chat_id, MIN(seq)"
    )
    for chat, session in rows:
        if str(chat).isdigit():
            out.setdefault(int(chat), []).append(str(session))
    return out


def _refused(method: str, exc: Any) -> ReadbackRefused:
    """The one-line reason a portal refuses read-back, with the fix."""
    return ReadbackRefused(
        f"the portal refuses read-back ({method}: {exc.code} {exc.description}); "
        "give the application the scopes imopenlines and im and authorise it as a "
        "portal administrator (`bulkimport auth`), or settle the rows with `bulkimport resolve`"
    )


def _unreadable(chat_id: int, joined: str) -> ReadbackRefused:
    return ReadbackRefused(
        f"chat {chat_id} cannot be read back (im.dialog.messages.get: ACCESS_ERROR; "
        f"imopenlines.session.join: {joined}); settle its rows with `bulkimport resolve`"
    )


def _consume_history(out: ChatContents, result: Any) -> None:
    """Add one ``session.history.get`` answer's messages to ``out`` (system ones counted apart)."""
    messages = (result or {}).get("message") or {} if isinstance(result, Mapping) else {}
    for m in messages.values() if isinstance(messages, Mapping) else messages:
        if int(m.get("senderid") or m.get("author_id") or 0) == 0:
            out.system += 1
            continue
        params = m.get("params") if isinstance(m.get("params"), Mapping) else {}
        mids = _mids({"CONNECTOR_MID": params.get("connectorMid", params.get("CONNECTOR_MID"))})
        if not mids:
            out.without_mid += 1
        for mid in mids:
            out.found.setdefault(mid, str(m.get("id")))


def _consume(out: ChatContents, page: list[Any]) -> int | None:
    """Add one page's messages to ``out``; the id to walk on from (None: the page was the last)."""
    for m in page:
        if int(m.get("author_id") or 0) == 0:
            out.system += 1
            continue
        mids = _mids(m.get("params"))
        if not mids:
            out.without_mid += 1
        for mid in mids:
            out.found.setdefault(mid, str(m.get("id")))
    if len(page) < PAGE:
        return None
    return min(int(m["id"]) for m in page)


__all__ = ["BATCH_CHATS", "BATCH_HISTORY", "PAGE", "ChatContents", "ChatReader", "ReadbackRefused",
           "sessions_of"]
