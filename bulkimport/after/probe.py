"""``bulkimport setup --check-readback``: does this portal keep the external id of a connector message?

Sends one probe message (``message.id = "probe-<uuid>"``) to a dedicated test chat of the line —
external chat ``bulkimport-readback-probe``, customer ``bulkimport-probe`` — reads that chat back
(:mod:`bulkimport.after.readback`) and says whether ``params.CONNECTOR_MID`` carries the id sent
(reference §5, item 1). Verify and the settling of unknown rows depend on it: on a portal whose
messages carry no ``CONNECTOR_MID`` at all they refuse to conclude anything.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..codes import count_of
from ..portal.methods import SEND_METHOD
from .readback import ChatReader

log = logging.getLogger("bulkimport.after")

PROBE_CHAT = "bulkimport-readback-probe"
PROBE_USER = "bulkimport-probe"


@dataclass(frozen=True)
class ProbeResult:
    """What the probe found: the id sent, the portal chat, and what CONNECTOR_MID held."""

    sent_id: str
    chat_id: int | None
    carries_id: bool
    mids: tuple[str, ...]  # CONNECTOR_MID values seen in the probe chat
    bare: int  # non-system messages of the chat without any CONNECTOR_MID
    calls: int

    def __str__(self) -> str:
        if self.chat_id is None:
            return "Read-back check: the portal gave no CHAT_ID for the probe message; nothing to read."
        where = f"probe message {self.sent_id} in chat {self.chat_id} (external chat {PROBE_CHAT})"
        if self.carries_id:
            calls = count_of(self.calls, "call")
            return f"Read-back check: OK — CONNECTOR_MID carries the sent id ({where}); {calls}."
        if not self.mids:
            return (
                f"Read-back check: FAILED — the portal's messages carry no CONNECTOR_MID ({where}); "
                "verify and the settling of unknown rows cannot work here: use `bulkimport resolve`."
            )
        return (
            f"Read-back check: FAILED — CONNECTOR_MID holds {', '.join(self.mids[:3])}, not the sent id "
            f"({where}); verify cannot match rows on this portal: use `bulkimport resolve`."
        )


def check_readback(client: Any, connector: str, line: int | str) -> ProbeResult:
    """Send one probe message to the test chat, read the chat back, compare CONNECTOR_MID."""
    sent_id = f"probe-{uuid.uuid4()}"
    item = {
        "user": {"id": PROBE_USER, "name": "bulkimport read-back probe"},
        "message": {"id": sent_id, "date": int(time.time()), "text": "bulkimport read-back probe",
                    "disable_crm": "Y"},
        "chat": {"id": PROBE_CHAT},
    }
    result = client.call(SEND_METHOD, {"CONNECTOR": connector, "LINE": line, "MESSAGES": [item]}, retries=8)
    items = ((result or {}).get("DATA") or {}).get("RESULT") or [{}]
    session = (items[0] or {}).get("session") or {}
    chat = int(session["CHAT_ID"]) if session.get("CHAT_ID") else None
    reader = ChatReader(client)
    if chat is None:
        return ProbeResult(sent_id, None, False, (), 0, 1)
    contents = reader.read(chat)
    mids = tuple(contents.found)
    _finish_probe_session(client, chat)
    return ProbeResult(sent_id, chat, sent_id in contents.found, mids, contents.without_mid, 1 + reader.calls)


def _finish_probe_session(client: Any, chat: int) -> None:
    """Finish the session the probe opened, so that it does not wait in an operator's queue (a
    failure is logged, never fatal: the check's answer is what matters)."""
    from ..errors import BulkImportError
    from ..portal.methods import FINISH_METHOD

    try:
        client.call(FINISH_METHOD, {"CHAT_ID": chat}, retries=8)
    except BulkImportError as exc:
        log.warning("could not finish the probe's session (chat %s): %s", chat, exc)


__all__ = ["PROBE_CHAT", "PROBE_USER", "ProbeResult", "check_readback"]
