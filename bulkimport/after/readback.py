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
#: Refusals before execution (rate limits) are waited out and repeated this many times per call.
RETRIES = 8
#: Codes that mean "this caller may not read this chat" rather than "there is no such chat".
REFUSED = frozenset({"insufficient_scope", "ACCESS_DENIED", "WRONG_AUTH_TYPE", "user_access_error"})


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
    """Reads chats back through ``client`` (``Client.call``: so through the governor)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0

    def _call(self, method: str, params: dict[str, Any]) -> Any:
        self.calls += 1
        try:
            return self.client.call(method, params, retries=RETRIES)
        except PortalError as exc:
            if isinstance(exc, FatalError) or exc.code in REFUSED:
                raise ReadbackRefused(
                    f"the portal refuses read-back ({method}: {exc.code} {exc.description}); "
                    "give the application the scopes imopenlines and im and authorise it as a "
                    "portal administrator (`bulkimport auth`), or settle the rows with `bulkimport resolve`"
                ) from None
            raise

    def find_chat(
        self, connector: str, line: int | str, chat: str, user: str
    ) -> tuple[int, str | None] | None:
        """The portal CHAT_ID and current SESSION_ID of an external chat (None: no such dialog)."""
        code = f"{connector}|{line}|{chat}|{user}"
        try:
            result = self._call("imopenlines.dialog.get", {"USER_CODE": code})
        except PortalError as exc:
            if exc.code == "ACCESS_ERROR":  # the documented answer for a dialog that does not exist
                return None
            raise
        parts = str(result.get("entity_data_1") or "").split("|")
        session = parts[5] if len(parts) > 5 and parts[5] else None
        return int(result["id"]), session

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

    def read(self, chat_id: int) -> ChatContents:
        """Every non-system message of portal chat ``chat_id``, walked 50 at a time."""
        out = ChatContents(chat_id)
        before = self.calls
        joined = self._join(chat_id)
        last: int | None = None
        while True:
            params: dict[str, Any] = {"DIALOG_ID": f"chat{chat_id}", "LIMIT": PAGE}
            if last is not None:
                params["LAST_ID"] = last
            try:
                page = self._call("im.dialog.messages.get", params).get("messages") or []
            except PortalError as exc:
                if exc.code != "ACCESS_ERROR":
                    raise
                raise ReadbackRefused(
                    f"chat {chat_id} cannot be read back (im.dialog.messages.get: ACCESS_ERROR; "
                    f"imopenlines.session.join: {joined}); settle its rows with `bulkimport resolve`"
                ) from None
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
                break
            last = min(int(m["id"]) for m in page)
        out.calls = self.calls - before
        return out


__all__ = ["PAGE", "ChatContents", "ChatReader", "ReadbackRefused"]
