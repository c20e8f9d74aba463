"""What one answer means for its rows: sent, failed, unknown, or back to pending — journalled at once.

Rules kept here (see docs/sending.md, *Row statuses*):

* refused before execution (503, 429, failed connect) or a fatal error → the rows go back;
* no usable answer (timeout, dropped connection, HTML/empty answer, 5xx) → ``unknown``, held;
* a request-level rejection of one command: ``ERROR_ARGUMENT`` on several messages → split and
  re-sent; a definite rejection code on one message → ``failed``; anything else (it may have stored
  some messages first) → ``unknown`` (``refused-maybe-stored``). Either way its conversation is held;
* per item: ``SUCCESS: true`` (or a session) → ``sent``; ``SUCCESS: false``/``ERRORS`` → ``failed``
  (the conversation goes on); neither → ``unknown`` (``result-mismatch``), held.

The verdicts that steer the run (which conversations were rejected with which code) are returned
in a :class:`Settlement`; the counters that turn them into a stop live in :mod:`.state`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import codes
from ..errors import (
    AmbiguousError,
    FatalError,
    RequestRejectedError,
    RetryableError,
    TokenExpiredError,
)
from ..journal import Journal, RowUpdate
from .scheduling import _Conv, _Request, hold

#: Request-level codes after which a call of several messages is split and re-sent: only the
#: documented structural checks that run before anything is stored (reference §6; the sandbox's
#: per-call message cap uses the same code).
SPLIT_ON = frozenset({"ERROR_ARGUMENT"})
#: Request-level codes that definitely reject a call of ONE message (it is then ``failed``); any
#: other code on a one-message call, and any non-split code on a bigger call, leaves the rows
#: ``unknown`` (code ``refused-maybe-stored``) because the call may have stored some of them.
DEFINITE_REJECTIONS = frozenset(
    {
        "ERROR_ARGUMENT",
        "IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA",
        "CONNECTOR_PROXY_NO_ADD_USER",
        "CONNECTOR_PROXY_NO_USER_IM",
        "PROVIDER_UNSUPPORTED_TYPE_INCOMING_MESSAGE",
        "IMCONNECTOR_NOT_SPECIFIED_CORRECT_COMMAND",
    }
)

_UNUSABLE = ("held-after-unknown", "held: the answer for earlier rows was unusable")


def _wall() -> float:
    """Real wall-clock time for the journal and ``sent_at``: a sandbox runs on a scaled clock
    (pacing), but what the journal and the report show must be when things really happened."""
    return time.time()


def _str_or_none(value: Any) -> str | None:
    if type(value) is str:  # the common case first: ids in an answer are strings
        return value or None
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _catalogue_code(text: str) -> str | None:
    """The catalogue code a prose error names (the text itself, or a portal code inside it)."""
    if text.upper() in codes.CATALOGUE:
        return text
    for key, entry in codes.CATALOGUE.items():
        if entry.stage == "portal" and len(key) > 6 and key in text.upper():
            return entry.code
    return None


def _item_error(item: Mapping[str, Any]) -> tuple[str, str]:
    """The catalogue code and text of a rejected item (``ERRORS`` may hold codes or prose)."""
    errors = item.get("ERRORS") or item.get("errors") or []
    if isinstance(errors, (str, dict)):
        errors = [errors]
    texts: list[str] = []
    found: str | None = None
    for err in errors:
        if isinstance(err, dict):
            code = str(err.get("code") or err.get("error") or "")
            text = str(err.get("message") or err.get("error_description") or code)
            if code and found is None:
                found = code
            texts.append(text)
            continue
        text = str(err)
        texts.append(text)
        if found is None:
            found = _catalogue_code(text)
    return found or "item-rejected", "; ".join(texts) or "the portal rejected the message without a reason"


def _unusable_result(result: Any, items: Any, rids: list[str]) -> tuple[list[RowUpdate], tuple[str, str]]:
    """Rows of a command whose answer has no per-item list that matches what was sent."""
    if result.get("SUCCESS") is False and not items:
        code, text = _item_error(result)
        if len(rids) == 1:  # one message refused as a whole: it was not stored
            ups = [RowUpdate(rids[0], "failed", code, text, hold=1)]
            return ups, ("held-after-failure", f"held: the portal refused an earlier request ({code})")
        # Several messages refused with no per-item results: the reference does not say the
        # call stored none of them, so --retry-failed must never see these rows.
        text = codes.get("refused-maybe-stored").render(code=code) + f" ({text})"
        ups = [RowUpdate(r, "unknown", "refused-maybe-stored", text, hold=1) for r in rids]
        return ups, ("held-after-unknown", f"held: an earlier request may have stored rows ({code})")
    listed = len(items) if isinstance(items, list) else "no"
    text = f"sent {len(rids)} messages, the answer listed {listed} results"
    return [RowUpdate(r, "unknown", "result-mismatch", text, hold=1) for r in rids], _UNUSABLE


def settle_result(result: Any, rids: list[str], now: float) -> tuple[list[RowUpdate], Any]:
    """Per-row outcomes of one answered command; second value is True or a hold (code, detail)."""
    if not isinstance(result, Mapping):
        text = "the answer is not a result object"
        return [RowUpdate(r, "unknown", "result-mismatch", text, hold=1) for r in rids], _UNUSABLE
    data = result.get("DATA") if isinstance(result.get("DATA"), Mapping) else {}
    items = data.get("RESULT") if isinstance(data, Mapping) else None
    if not isinstance(items, list) or len(items) != len(rids):
        return _unusable_result(result, items, rids)
    ups = []
    outcome: Any = True
    for rid, item in zip(rids, items, strict=True):
        # type() first: decoded JSON objects are dicts, and the ABC check costs per message
        if type(item) is not dict and not isinstance(item, Mapping):
            item = {}
        flag = item.get("SUCCESS")
        session: Mapping[str, Any] = item.get("session") or {}
        if type(session) is not dict and not isinstance(session, Mapping):
            session = {}
        if flag is True or flag in ("Y", "true", 1):
            ok = True
        elif flag is False or flag in ("N", "false", 0) or item.get("ERRORS") or item.get("errors"):
            ok = False  # explicitly rejected: it was not stored
        elif session.get("ID") or session.get("CHAT_ID"):
            ok = True  # no flag, but an open-line session: it reached the line
        else:
            # Neither a verdict nor a session: it may have been stored. Not ``failed`` (that
            # would let --retry-failed duplicate it): unknown, and the conversation waits.
            text = "the answer for this message has neither SUCCESS, ERRORS nor a session"
            ups.append(RowUpdate(rid, "unknown", "result-mismatch", text, hold=1))
            outcome = ("held-after-unknown", "held: the answer for an earlier row was unusable")
            continue
        if ok:
            message: Mapping[str, Any] = item.get("message") or {}
            if type(message) is not dict and not isinstance(message, Mapping):
                message = {}
            ups.append(
                RowUpdate(
                    rid,
                    "sent",
                    None,
                    None,
                    hold=0,
                    message_id=_str_or_none(message.get("id")),
                    user_id=_str_or_none(item.get("user")),
                    chat_id=_str_or_none(session.get("CHAT_ID")),
                    session_id=_str_or_none(session.get("ID")),
                    sent_at=now,
                )
            )
        else:
            code, text = _item_error(item)
            ups.append(RowUpdate(rid, "failed", code, text, hold=0))
    return ups, outcome


@dataclass
class Settlement:
    """What settling one request did: the rows' new states (none when its rows went back) and, in
    order, one verdict per conversation that steers the run: ``None`` for a clean answer, a code
    for a request-level rejection (the run stops after several in a row with the same code)."""

    updates: list[RowUpdate] = field(default_factory=list)
    verdicts: list[str | None] = field(default_factory=list)


class Outcomes:
    """Turns each answer into row states in one journal transaction and moves its conversations on."""

    def __init__(self, journal: Journal, governor: Any, keys: Sequence[Sequence[str]]) -> None:
        self.journal = journal
        self.governor = governor
        self.keys = keys

    def settle(self, req: _Request) -> Settlement:
        """Journal ``req``'s outcome (its ``error`` or its per-command answers) in one transaction."""
        exc = req.error
        if isinstance(exc, RetryableError):
            self.journal.revert(req.request_id, req.rids, _wall(), f"refused {exc.code}")
            return Settlement()
        if isinstance(exc, AmbiguousError):
            return Settlement(self._lost(req, exc))
        if isinstance(exc, FatalError):
            self.journal.revert(req.request_id, req.rids, _wall(), f"fatal {exc.code}")
            return Settlement()
        if isinstance(exc, (RequestRejectedError, TokenExpiredError)):
            return self._answered(req, {}, {key: exc for key in req.commands}, {})
        if exc is not None:  # e.g. a redirect to a plain-http address: not run
            self.journal.revert(req.request_id, req.rids, _wall(), type(exc).__name__)
            return Settlement()
        return self._answered(req, req.results, req.errors, req.times)

    def _lost(self, req: _Request, exc: AmbiguousError) -> list[RowUpdate]:
        """No usable answer: every row of the request is unknown and its conversations held."""
        code = getattr(exc, "code", "bad-answer")
        if code == "timeout":
            self.governor.on_timeout()
        self.governor.on_ambiguous()
        now = _wall()  # journal and sent_at: real time, whatever the pacing clock
        lost = [RowUpdate(rid, "unknown", code, str(exc), hold=1) for rid in req.rids]
        self.journal.settle(req.request_id, lost, now, f"ambiguous {code}")
        for conv, positions in req.chosen:
            conv.queue = conv.queue[len(positions) :]
            hold(conv, "held-after-unknown", f"held: rows before it are unknown ({code})")
        return lost

    def _answered(
        self,
        req: _Request,
        results: dict[str, Any],
        errors: dict[str, Any],
        times: dict[str, dict[str, Any]],
    ) -> Settlement:
        """The portal answered: settle each command's rows, all in one transaction."""
        self.governor.on_batch_answered()
        now = _wall()  # journal and sent_at: real time, whatever the pacing clock
        out = Settlement()
        reverted: list[str] = []
        for conv, positions in req.chosen:
            key = f"c{conv.index}"
            rids = [self.keys[conv.index][p] for p in positions]
            if key in results:
                self._result(conv, positions, rids, results[key], times.get(key) or {}, now, out)
            else:
                self._error(req, conv, positions, rids, errors.get(key), out, reverted)
        # one transaction: a kill between two commits would leave half an answer
        self.journal.settle(req.request_id, out.updates, now, "answered", revert=reverted)
        return out

    def _result(
        self,
        conv: _Conv,
        positions: list[int],
        rids: list[str],
        result: Any,
        timing: Mapping[str, Any],
        now: float,
        out: Settlement,
    ) -> None:
        """One command with a result: per-item outcomes, the cost measured, the queue moved on."""
        ups, ok = settle_result(result, rids, now)
        out.updates += ups
        self.governor.call_answered(len(rids))
        cost = timing.get("processing", timing.get("duration"))
        if cost is not None:
            self.governor.record_messages(len(rids), float(cost))
        conv.queue = conv.queue[len(positions) :]
        if ok is not True:
            hold(conv, *ok)
        else:
            out.verdicts.append(None)

    def _error(
        self,
        req: _Request,
        conv: _Conv,
        positions: list[int],
        rids: list[str],
        err: Any,
        out: Settlement,
        reverted: list[str],
    ) -> None:
        """One command refused (or missing from the answer): back, split, failed or unknown."""
        if isinstance(err, (RetryableError, TokenExpiredError)):
            reverted += rids  # refused before execution: send again later
            return
        if isinstance(err, FatalError):
            reverted += rids
            req.fatal = req.fatal or err
            return
        rejected_code = str(getattr(err, "code", "") or "").upper()
        if isinstance(err, RequestRejectedError) and len(positions) > 1 and rejected_code in SPLIT_ON:
            # ERROR_ARGUMENT: the documented structural checks that run before anything is
            # stored, so nothing ran: split it. This finds the portal's (undocumented) per-call
            # limit, and a single malformed message fails alone instead of taking its neighbours.
            reverted += rids
            conv.cap = max(1, len(positions) // 2)
            if len(positions) > self.governor.largest_call_ok:
                # never answered a call this big: most likely the per-call limit
                self.governor.cap_messages(conv.cap)
            return
        conv.queue = conv.queue[len(positions) :]
        if isinstance(err, RequestRejectedError):
            self._rejected(conv, positions, rids, err, rejected_code, out)
        else:  # ambiguous nested error, or the key is missing from both maps
            code = getattr(err, "code", None) or "result-mismatch"
            text = str(err) if err is not None else "the command is missing from the answer"
            out.updates += [RowUpdate(r, "unknown", code, text, hold=1) for r in rids]
            hold(conv, "held-after-unknown", f"held: rows before it are unknown ({code})")

    @staticmethod
    def _rejected(
        conv: _Conv,
        positions: list[int],
        rids: list[str],
        err: RequestRejectedError,
        rejected_code: str,
        out: Settlement,
    ) -> None:
        """A command refused as a whole: ``failed`` when the code is definite for one message,
        else ``unknown`` (it may have stored some messages first); its conversation is held."""
        if not (len(positions) == 1 and rejected_code in DEFINITE_REJECTIONS):
            # Refused as a whole with a code that may be raised half-way through the messages
            # (the "probably per-item" codes of the older docs), an unknown code, a code-less 4xx
            # or a malformed batch error entry: some messages may be stored. Never re-send them.
            text = codes.get("refused-maybe-stored").render(code=err.code) + (
                f" ({err.description})" if err.description else ""
            )
            out.updates += [RowUpdate(r, "unknown", "refused-maybe-stored", text, hold=1) for r in rids]
            hold(conv, "held-after-unknown", f"held: rows before it are unknown (refused with {err.code})")
            out.verdicts.append(rejected_code)
            return
        text = err.description or codes.render(err.code)
        out.updates += [RowUpdate(r, "failed", err.code, text, hold=1) for r in rids]
        hold(
            conv,
            "held-after-failure",
            f"held: the portal refused an earlier request of this conversation ({err.code})",
        )
        out.verdicts.append(err.code.upper())
