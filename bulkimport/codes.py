"""The one catalogue of row statuses and of error and warning codes.

Validation, the sender, the DataFrame columns (``import_error_code``), the CLI summary, the report
and ``docs/codes.md`` all read from :data:`CATALOGUE`, so a code can never mean two things.

Two families live here:

* **bulkimport's own codes**, lower-case kebab-case (``bad-date``, ``held``): produced by reading,
  validation and the sender.
* **Portal codes**, exactly as Bitrix24 sends them (``QUERY_LIMIT_EXCEEDED``, ``expired_token``):
  looked up case-insensitively because the portal mixes cases. A portal code that is not in the
  catalogue still works through :func:`get` (it gets a generic hint) so nothing is ever lost.

Add a code by adding one ``_add(...)`` line in the section of the stage that produces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["error", "warning"]
Stage = Literal["read", "validate", "send", "portal", "oauth"]

# The values of the ``import_status`` column: one spelling each, for every stage that sets or reads one.
SENT = "sent"
FAILED = "failed"
INVALID = "invalid"
UNKNOWN = "unknown"
PENDING = "pending"
#: Sent, then taken back by ``bulkimport undo`` (imconnector.delete.messages confirmed it).
DELETED = "deleted"
#: The journal's state of a row whose request is on the wire; reported as ``unknown`` (the row is
#: never shown in flight: a run that stopped there may or may not have delivered it).
INFLIGHT = "inflight"
#: A row the journal had as ``sent`` that ``bulkimport verify`` did not find on the portal; the next
#: run sends it again (after newer messages of its chat). Not in :data:`STATUS_ORDER`: it lasts only
#: until that run.
MISSING = "missing"

#: Final and intermediate values of the ``import_status`` column, in the order reports list them.
STATUS_ORDER: tuple[str, ...] = (SENT, FAILED, INVALID, UNKNOWN, PENDING, DELETED)

#: What each ``import_status`` means (README, docs/codes.md, the report), in :data:`STATUS_ORDER`.
STATUSES: dict[str, str] = {
    SENT: "The portal accepted the message (its session and chat ids are recorded).",
    FAILED: "The portal answered and rejected the message; see import_error_code.",
    INVALID: "The row did not pass validation and was not sent; see import_error_code.",
    UNKNOWN: (
        "The request carrying the row was cut off after it was sent: the portal may or may not have "
        "stored it. Never re-sent automatically; check the open line, then use --retry-unknown."
    ),
    PENDING: "Not sent yet (the run stopped or the conversation is held); running again sends it.",
    DELETED: "Sent, then deleted from the open line by `bulkimport undo` (the portal confirmed it).",
}


#: The columns the sender adds to every input row (send(), the report, the notebook), in order.
STATUS_COLUMNS = [
    "import_status",
    "import_error_code",
    "import_error",
    "import_warnings",
    "import_attempts",
    "import_message_id",
    "b24_user_id",
    "b24_chat_id",
    "b24_session_id",
    "sent_at",
]


@dataclass(frozen=True)
class Code:
    """One catalogue entry: what went wrong (``message``) and what to do about it (``hint``)."""

    code: str
    level: Level
    stage: Stage
    message: str
    hint: str

    def render(self, **values: object) -> str:
        """The message with ``{placeholders}`` filled; unknown placeholders are left as they are."""
        try:
            return self.message.format_map(_Default(values))
        except (ValueError, IndexError):  # a stray brace in a template must not hide the error
            return self.message


class _Default(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


CATALOGUE: dict[str, Code] = {}


def _add(code: str, level: Level, stage: Stage, message: str, hint: str) -> None:
    key = code.upper()
    if key in CATALOGUE:
        raise ValueError(f"code {code!r} is catalogued twice")
    CATALOGUE[key] = Code(code, level, stage, message, hint)


def get(code: str) -> Code:
    """The catalogue entry for ``code`` (case-insensitive); an uncatalogued portal code gets a
    generic entry instead of an exception, so an unexpected answer is still reported."""
    found = CATALOGUE.get(str(code).upper())
    if found is not None:
        return found
    return Code(
        str(code),
        "error",
        "portal",
        f"The portal answered {code}.",
        "This code is not in bulkimport's catalogue; the portal's description is in import_error.",
    )


def hint(code: str) -> str:
    """Shortcut for ``get(code).hint``."""
    return get(code).hint


def render(code: str, **values: object) -> str:
    """Shortcut for ``get(code).render(**values)``."""
    return get(code).render(**values)


# --------------------------------------------------------------------------------------------------
# Portal: system errors any call can return (reference §2)
# --------------------------------------------------------------------------------------------------
_add(
    "QUERY_LIMIT_EXCEEDED",
    "error",
    "portal",
    "Too many requests (the portal's leaky bucket is full).",
    "Refused before execution, safe to retry; bulkimport paces itself and retries automatically. "
    "If it persists, another application shares the portal's request budget from this address.",
)
_add(
    "OPERATION_TIME_LIMIT",
    "error",
    "portal",
    "The method's operating-time budget (10-minute window) is spent.",
    "Refused before execution; bulkimport waits until operating_reset_at and continues.",
)
_add(
    "OVERLOAD_LIMIT",
    "error",
    "portal",
    "REST API is blocked due to overload.",
    "The portal's REST API was blocked manually by Bitrix24; contact Bitrix24 support, then resume.",
)
_add(
    "expired_token",
    "error",
    "portal",
    "The access token provided has expired.",
    "bulkimport refreshes the token automatically; if this persists run `bulkimport auth`.",
)
_add(
    "NO_AUTH_FOUND",
    "error",
    "portal",
    "Wrong authorization data.",
    "The access token is not valid for this portal: run `bulkimport auth` to get new tokens.",
)
_add(
    "WRONG_AUTH_TYPE",
    "error",
    "portal",
    "Current authorization type is denied for this method. Application context required.",
    "imconnector.* methods refuse webhooks: create a local application (scopes imopenlines, "
    "imconnector, im) and use its OAuth tokens (`bulkimport auth`).",
)
_add(
    "insufficient_scope",
    "error",
    "portal",
    "The token lacks a required scope.",
    "Give the local application the scopes imopenlines, imconnector and im, then `bulkimport auth` again.",
)
_add(
    "INVALID_CREDENTIALS",
    "error",
    "portal",
    "Invalid request credentials.",
    "The user who authorised the application lacks rights: authorise as a portal administrator.",
)
_add(
    "user_access_error",
    "error",
    "portal",
    "The user has no access to this application or method.",
    "Authorise the application as a user with access to Open Lines (an administrator).",
)
_add(
    "ACCESS_DENIED",
    "error",
    "portal",
    "Access denied.",
    "The authorising user lacks the rights for this method: authorise as a portal administrator.",
)
_add(
    "INTERNAL_SERVER_ERROR",
    "error",
    "portal",
    "Internal server error.",
    "A server-side failure; the rows of that request are marked unknown if the request may have run.",
)
_add(
    "ERROR_UNEXPECTED_ANSWER",
    "error",
    "portal",
    "The server returned an unexpected answer.",
    "A server-side failure; check the open line for the rows marked unknown, then retry them.",
)
_add(
    "PORTAL_DELETED",
    "error",
    "portal",
    "The portal was deleted.",
    "Check the portal address (--portal / BITRIX24_PORTAL).",
)
_add(
    "ERROR_METHOD_NOT_FOUND",
    "error",
    "portal",
    "Method not found.",
    "The portal does not know this method: check the portal address and that Open Lines is enabled.",
)
_add(
    "ERROR_BATCH_LENGTH_EXCEEDED",
    "error",
    "portal",
    "Max batch length exceeded.",
    "A batch may hold at most 50 commands; this is a bulkimport bug, please report it.",
)
_add(
    "ERROR_BATCH_METHOD_NOT_ALLOWED",
    "error",
    "portal",
    "Method is not allowed for batch usage.",
    "This is a bulkimport bug, please report it.",
)
# The portal says INVALID_REQUEST ("Https required"); the OAuth server says invalid_request for a
# malformed token request. Codes compare case-insensitively, so one entry serves both.
_add(
    "INVALID_REQUEST",
    "error",
    "portal",
    'The request was refused as malformed (e.g. "Https required").',
    "Use an https:// portal address (plain http:// only for a loopback sandbox); for the OAuth server "
    "check the BITRIX24_* OAuth variables and run `bulkimport auth` again.",
)

# --------------------------------------------------------------------------------------------------
# Portal: connector set-up and imconnector.send.messages (reference §5, §6 and the seed page)
# --------------------------------------------------------------------------------------------------
_add(
    "ERROR_ARGUMENT",
    "error",
    "portal",
    "A required argument is missing or malformed.",
    "The request lacked CONNECTOR, LINE, MESSAGES, ACTIVE or DATA, or MESSAGES was not an array of "
    "messages; check --line and --connector.",
)
_add(
    "NOT_ACTIVE_LINE",
    "error",
    "portal",
    "The open line with this ID is inactive or does not exist.",
    "Check --line; activate the open line in Contact Center, or run `bulkimport setup`.",
)
_add(
    "IMCONNECTOR_NO_CORRECT_PROVIDER",
    "error",
    "portal",
    "No suitable provider found for the connector.",
    "The connector is not registered or not active on this line: run `bulkimport setup`.",
)
_add(
    "IMCONNECTOR_COULD_NOT_GET_PROVIDER_OBJECT",
    "error",
    "portal",
    "Could not get the provider object.",
    "The CONNECTOR value is wrong: check --connector and run `bulkimport setup`.",
)
_add(
    "IMCONNECTOR_NOT_SPECIFIED_CORRECT_COMMAND",
    "error",
    "portal",
    "No correct command specified.",
    "A portal-side inconsistency; report it with the journal attached.",
)
_add(
    "IMCONNECTOR_NOT_SPECIFIED_CORRECT_CONNECTOR",
    "error",
    "portal",
    "No connector specified.",
    "The CONNECTOR value is wrong: check --connector and run `bulkimport setup`.",
)
_add(
    "PROVIDER_UNSUPPORTED_TYPE_INCOMING_MESSAGE",
    "error",
    "portal",
    "Unsupported type of incoming message.",
    "The message shape is not supported; report it.",
)
_add(
    "IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA",
    "error",
    "portal",
    "Not all the required data was passed.",
    "The message lacks user.id, or both text and files: fix the row and retry with --retry-failed.",
)
_add(
    "CONNECTOR_PROXY_NO_ADD_USER",
    "error",
    "portal",
    "Could not create or get the system user mapped to the remote messenger user.",
    "The portal lacks the special technical user for messenger connectors; ask Bitrix24 support to "
    "create it, then retry with --retry-failed.",
)
_add(
    "CONNECTOR_PROXY_NO_USER_IM",
    "error",
    "portal",
    "No messenger user id was obtained.",
    "Follows CONNECTOR_PROXY_NO_ADD_USER: fix that first, then retry with --retry-failed.",
)
_add(
    "CONNECTOR_ID_REQUIRED",
    "error",
    "portal",
    "The connector ID is required.",
    "Pass --connector (lower-case letters, digits, underscores; no dots).",
)
_add("NAME_REQUIRED", "error", "portal", "The connector name is required.", "Pass a connector name.")
_add(
    "ICON_REQUIRED",
    "error",
    "portal",
    "The connector icon is required.",
    "bulkimport sends a default icon; this is a bug if you see it.",
)
_add(
    "NO_PLACEMENT_HANDLER",
    "error",
    "portal",
    "The placement handler is required.",
    "bulkimport sends a default handler URL; this is a bug if you see it.",
)
_add(
    "APPLICATION_REGISTRATION_ERROR_POINT",
    "error",
    "portal",
    "The connector ID must not contain a dot.",
    "Choose a --connector without dots (lower-case letters, digits, underscores).",
)
_add(
    "100",
    "error",
    "portal",
    "The MESSAGES parameter is not an array of well-formed messages.",
    "A payload shape problem; this is a bulkimport bug, please report it with the row.",
)

# --------------------------------------------------------------------------------------------------
# OAuth server (reference §7)
# --------------------------------------------------------------------------------------------------
_add(
    "invalid_grant",
    "error",
    "oauth",
    "The refresh token is no longer valid.",
    "Refresh tokens rotate and expire after 180 days: run `bulkimport auth` to authorise again.",
)
_add(
    "invalid_client",
    "error",
    "oauth",
    "The OAuth server does not know this client id/secret.",
    "Check BITRIX24_CLIENT_ID and BITRIX24_CLIENT_SECRET (the local application's credentials).",
)
_add(
    "PAYMENT_REQUIRED",
    "error",
    "oauth",
    "The portal's plan does not allow this application.",
    "The portal's subscription has lapsed or does not include REST applications.",
)

# --------------------------------------------------------------------------------------------------
# Reading (bulkimport.sources) — codes for per-cell problems found while reading
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# Validation (bulkimport.validation / planning) — errors make a row `invalid`, warnings travel with it
# --------------------------------------------------------------------------------------------------
_add("missing-user-id", "error", "validate", "No customer id (user.id) in the row or its conversation.",
     "Fill the customer id (user.id) column in this row or in another row of the same chat.id: "
     "no row of this conversation names its customer.")
_add("no-conversation", "error", "validate",
     "Neither chat.id nor user.id: the row belongs to no conversation.",
     "Fill the chat or customer id column for this row (map chat.id or user.id in [columns]).")
_add("no-customer", "error", "validate",
     "The conversation has only operator rows: there is no customer to post them in.",
     "Add the customer's id to these rows (user.id) or include the customer's messages of the same chat.")
_add("bad-id", "error", "validate", "{field} is longer than 255 characters.",
     "Use a shorter external id (the column holds something other than an id?).")
_add("duplicate-message-id", "error", "validate", "message.id repeats an earlier row of the same chat.",
     "Message ids must be unique per chat; remove the duplicate row or unmap message.id to generate ids.")
_add("missing-date", "error", "validate", "message.date is empty.",
     "Fill the date of this message; every message needs its original time.")
_add("bad-date", "error", "validate",
     "message.date is not a date bulkimport understands (or not in 1970–2099).",
     "Use e.g. 2026-11-23 14:05, 23.11.2026 14:05, an Excel date cell or unix seconds (docs/mapping.md).")
_add("ambiguous-date", "error", "validate",
     "message.date reads as two different days (day-first or month-first) and nothing in the column decides.",
     "Set dayfirst = true (23/11 style) or dayfirst = false (11/23 style) under [options] of the mapping.")
_add("missing-content", "error", "validate", "The row has neither message text nor files.",
     "Fill message.text or message.files; a message needs at least one of them.")
_add("text-too-long", "error", "validate", "message.text is over 20,000 characters.",
     "Bitrix24 cuts chat messages at 20,000 characters; split the cell into several rows (same chat, "
     "consecutive times) so nothing is lost.")
_add("bad-characters", "error", "validate",
     "The value holds characters that are not valid Unicode (lone surrogates) and cannot be sent.",
     "The text was decoded wrongly before it reached bulkimport (e.g. with errors='surrogateescape'); "
     "read the source again with its real encoding, or remove the damaged characters.")
_add("bad-file-url", "error", "validate", "message.files has an entry that is not an http(s) URL.",
     "Use full http(s) URLs the portal can reach, or publish the folder and set files_base_url "
     "(and files_folder) under [options].")
_add("bad-operator-id", "error", "validate",
     "message.user_id is not a Bitrix24 employee id (positive whole number).",
     "Put the employee's numeric Bitrix24 user id in the column, or map authors to ids under [operators].")
_add("name-cleaned", "warning", "validate",
     "{field} had characters other than letters, spaces, hyphens and apostrophes; they were removed.",
     "Nothing to do unless the cleaned name is wrong; Bitrix24 accepts only these characters.")
_add("name-truncated", "warning", "validate", "{field} was longer than 25 characters and was shortened.",
     "Nothing to do; Bitrix24 accepts at most 25 characters per name field.")
_add("bad-gender", "warning", "validate", "user.gender is neither male nor female; it was left out.",
     "Use male/female (M/F, м/ж, муж/жен are understood) or unmap user.gender.")
_add("bad-phone", "warning", "validate", "user.phone is not a valid phone number; it was left out.",
     "Use the international form (+7 916 123-45-67) or set phone_region under [options]; "
     "skip_phone_validate = true sends phones as written.")
_add("bad-email", "warning", "validate", "user.email is not a valid e-mail address; it was left out.",
     "Fix the address in the source file if it matters.")
_add("bad-url", "warning", "validate", "{field} is not an http(s) URL; it was left out.",
     "Use a full http(s) URL.")

# --------------------------------------------------------------------------------------------------
# Sending (bulkimport.sending) — why a row is pending, unknown or failed
# --------------------------------------------------------------------------------------------------
_add("connection-failed", "error", "send", "Could not connect to the portal (nothing was sent).",
     "Refused or timed out while connecting, before any request left: always safe to retry; bulkimport "
     "retries with back-off. Check the portal address and your network if it persists.")
_add("portal-unreachable", "error", "send", "The portal could not be reached for several attempts in a row.",
     "Nothing was lost: check the portal address and the network, then run the same command again.")
_add("timeout", "error", "send", "No answer arrived in time after the request was sent.",
     "The portal may or may not have stored these messages: check the open line, then resend with "
     "--retry-unknown (or leave them if they arrived).")
_add("connection-lost", "error", "send", "The connection dropped after the request was sent.",
     "The portal may or may not have stored these messages: check the open line, then resend with "
     "--retry-unknown (or leave them if they arrived).")
_add("bad-answer", "error", "send",
     "The answer was unusable (an HTML page, an empty body or a server error without a code).",
     "Usually a proxy or an overloaded portal; the messages may have been stored: check the open line, "
     "then resend with --retry-unknown.")
_add("result-mismatch", "error", "send", "The portal's answer did not list one result per message sent.",
     "The outcome of these messages cannot be told apart: check the open line, then use --retry-unknown.")
_add("interrupted", "error", "send", "The run was interrupted while this row's request was in flight.",
     "The portal may or may not have stored it: check the open line, then resend with --retry-unknown.")
_add("item-rejected", "error", "send", "The portal rejected this message.",
     "See import_error for the portal's words; fix the row and resend with --retry-failed.")
_add("held-after-unknown", "warning", "send",
     "Not sent: an earlier message of this conversation has an unknown outcome.",
     "Sending later messages first would break the order: check the open line for the unknown rows, "
     "then run again with --retry-unknown.")
_add("held-after-failure", "warning", "send",
     "Not sent: an earlier request of this conversation was refused by the portal.",
     "Fix the cause shown on the failed rows of this conversation, then run again with --retry-failed.")
_add("not-reached", "warning", "send", "Not sent: the run ended before reaching this row.",
     "Nothing is lost: run the same command again to continue where it stopped.")
_add("not-in-plan", "error", "send", "The row is neither in a conversation nor in the plan's failures.",
     "A bug in planning; report it with the row.")
_add("gave-up-retrying", "error", "send", "The portal kept refusing requests (rate limits) for too long.",
     "Another application may be using the portal's request budget; run again later to continue.")
_add("repeated-rejection", "error", "send",
     "The portal rejected the requests of several conversations in a row with the same error.",
     "The cause is not in one conversation (see the code on the failed rows); fix it, then run again "
     "with --retry-failed.")
_add("oauth-unreachable", "error", "oauth", "The OAuth server did not answer a token refresh.",
     "Check the network and BITRIX24_OAUTH_URL, then run again; if it reports invalid_grant afterwards, "
     "run `bulkimport auth`.")
_add("repeated-ambiguous", "error", "send", "Several requests in a row got no usable answer.",
     "The portal or a proxy in front of it is failing; bulkimport stopped so that few conversations are "
     "left unknown. Check the open line for the unknown rows, then run again (with --retry-unknown for "
     "the ones that did not arrive).")
_add("confirmed-arrived", "warning", "send",
     "The outcome was unknown; you confirmed the message is in the open line.",
     "Nothing to do: it was not re-sent. Its Bitrix24 chat and session ids are not known to bulkimport.")
_add("tls-failed", "error", "send", "The secure (TLS) connection to the portal could not be set up; "
     "nothing was sent.",
     "Check the portal address (https:// on the right host and port) and its certificate (or the "
     "system's CA certificates / a TLS-inspecting proxy), then run the same command again.")
_add("preflight-unreachable", "error", "send",
     "Could not connect to the portal for the checks before sending (nothing was sent).",
     "Check the portal address (--portal) and your network, then run the same command again.")
_add("refused-maybe-stored", "error", "send",
     "The portal refused a call of several messages (or answered an unrecognised error) with {code}; "
     "some of its messages may already be stored.",
     "Not re-sent automatically (a re-send may duplicate): check the open line, then resolve_unknown / "
     "--retry-unknown. Fix the cause the code names first.")

# --------------------------------------------------------------------------------------------------
# Messenger exports (bulkimport.sources.telegram / .whatsapp) — warnings found while reading
# --------------------------------------------------------------------------------------------------
_add("media-not-included", "warning", "read",
     "The export holds a placeholder instead of this message's media; a note says so in the text.",
     "Nothing is lost from what the export has. To import the media, export again with media "
     "(Telegram: Export chat history → photos/files ticked, size limit raised; WhatsApp: Include media).")
_add("attachment-missing", "warning", "read",
     "The message names an attachment that is not in the export's folder or zip; a note says so in the text.",
     "Put the file back where the export had it (the path is in the value) and run again, or accept "
     "the note.")

# --------------------------------------------------------------------------------------------------
# A first run that cannot go wrong (#14): what a guess, a layout or a person's file only lets
# bulkimport assume. Warnings: the row is sent; the user should look.
# --------------------------------------------------------------------------------------------------
_add("timezone-not-set", "warning", "validate",
     "Dates without a time zone were read as {zone}: the mapping states no timezone.",
     "Set timezone under [options] of the mapping (e.g. timezone = \"Europe/Moscow\") or pass "
     "--timezone, naming the zone the export was written in.")
_add("user-id-from-name", "warning", "validate",
     "{field} was guessed from a column of names: customers who share a name become one person.",
     "Map user.id to a column that tells customers apart (an id, phone or e-mail) in a mapping file, "
     "or confirm that the names are unique.")
_add("user-id-merged", "warning", "validate",
     "One user.id has several different {field} values (listed in value): two people may share one id.",
     "Check the customer id column; map user.id to a column that tells people apart (an id, phone or "
     "e-mail).")
_add("operator-unmapped", "warning", "validate",
     "An author who is not in [operators] writes to several customers (most likely an operator): "
     "their messages go as the customer's.",
     "Add the author (value) under [operators] with their Bitrix24 employee id (`bulkimport mapping "
     "--save` writes a skeleton), or leave them out if they are a customer.")
_add("no-operators", "warning", "validate",
     "The author column {column!r} is mapped but [operators] lists nobody: every row is sent as a "
     "customer's message.",
     "List the operators under [operators] (author = employee id); `bulkimport mapping --save` writes "
     "a skeleton with the author values found.")
_add("side-from-column", "warning", "validate",
     "Rows whose {column!r} is {operators} are sent as the operator's replies, {customers} as the "
     "customer's.",
     "Check the guess; if it is wrong, write the mapping (`bulkimport mapping FILE --save M.toml`) and "
     "correct side, operator_values and customer_values under [options].")
_add("bad-side", "error", "validate",
     "The side column holds neither an operator value nor a customer value (value), so who wrote "
     "the row is not known.",
     "Fill the cell with one of the side's values, or list the value under operator_values or "
     "customer_values in [options] of the mapping.")
_add("formula-without-value", "warning", "read",
     "A formula cell has no computed value (the workbook was written by a program and never "
     "recalculated); its formula text is used where it is the row's only content.",
     "Open the workbook in Excel or LibreOffice and save it, so that the formulas are computed, then "
     "read it again.")

# --------------------------------------------------------------------------------------------------
# After the import (bulkimport.after: finish, undo, import mode)
# --------------------------------------------------------------------------------------------------
_add("delete-refused", "error", "send", "The portal did not delete this message (undo).",
     "The reason is in import_error; check that the line and the connector are still active "
     "(`bulkimport setup`), then run `bulkimport undo` again.")
_add("delete-confirmed-gone", "warning", "send",
     "An earlier delete of this message was cut off; the portal no longer has it, so it was deleted.",
     "Nothing to do.")
_add("finish-failed", "error", "send", "The session of this conversation could not be finished.",
     "Run `bulkimport finish STATE` again later, or finish the chat in the open line.")
_add("unmapped-operator", "error", "validate",
     "An operator-side author maps to no Bitrix24 employee.",
     "Add the author to [operators] (or --operator AUTHOR=ID), or pass --unmapped-operators system "
     "to send such messages as the portal's system user (message.user_id = 0).")

# --------------------------------------------------------------------------------------------------
# Read-back, verify and settling (bulkimport.after.readback / .settle / .verify)
# --------------------------------------------------------------------------------------------------
_add("found-on-portal", "warning", "send",
     "The outcome was unknown; reading the chat back found the message on the portal.",
     "Nothing to do: it was not re-sent; its portal message id comes from the read-back.")
_add("missing-on-portal", "error", "send",
     "The journal had this row as sent, but `bulkimport verify` did not find it in its chat.",
     "The next run sends it again; it will appear after newer messages of its chat.")
_add("changed-after-sent", "warning", "send",
     "The row was sent, then its content changed in the file; the portal keeps what was sent.",
     "Run the same command with --update-changed to update the message on the portal "
     "(imconnector.update.messages), or leave it as it is.")
_add("updated-after-sent", "warning", "send",
     "The row's content changed after it was sent; --update-changed updated the message on the portal.",
     "Nothing to do.")
_add("dated-before-sent", "warning", "send",
     "A new row is dated before messages already sent in its chat: it will appear after them.",
     "Nothing to do if the order does not matter; otherwise import the chat again into a new one.")
_add("time-changed-after-sent", "warning", "send",
     "The row was sent, then its date or time changed in a file without a message-id column: a row "
     "is known by its chat, customer and time, so it is sent as a new message and the one sent "
     "before stays on the portal (the changes sheet of the report pairs them).",
     "Delete the old message in the open line if it is unwanted; to keep times editable, map "
     "message.id to a column of stable ids before the first import.")

# --------------------------------------------------------------------------------------------------
# Local attachments (bulkimport.attachments, bulkimport.sending.uploads) — issue #18
# --------------------------------------------------------------------------------------------------
_add("file-missing", "warning", "validate",
     "A local attachment of the row is not there (the path is in the value).",
     "Put the file where the path says and run again; --missing-files decides meanwhile: note (the text "
     "is sent with a note), skip (the row waits, pending), fail (the row is invalid).")
_add("file-missing-fail", "error", "validate",
     "A local attachment of the row is missing or over --max-file-size, and --missing-files is fail.",
     "Put the file back (the path is in the value) or choose --missing-files note or skip.")
_add("file-too-large", "warning", "validate",
     "A local attachment is larger than --max-file-size: it is reported, not sent.",
     "Raise --max-file-size (the portal's own per-file limit is not documented; its Drive quota applies) "
     "or send the file another way.")
_add("upload-failed", "warning", "send",
     "The row's attachment is not on the portal's Drive (its upload failed or was cut off): the row waits.",
     "See import_files for the file's code; fix the cause (Drive quota, rights) and run again: only "
     "what is not on Drive yet is uploaded.")

# --------------------------------------------------------------------------------------------------
# A second new-user trial (issue #14, h14b): duplicate rows, the assumed phone region, CLI hints
# --------------------------------------------------------------------------------------------------
_add("duplicate-row", "warning", "validate",
     "The row repeats an earlier row exactly (same chat, customer, time, text and author; the value "
     "names the earlier row).",
     "Both rows are sent as two messages: delete one of them from the file if the repetition is a "
     "copy-paste or export slip, then run again.")
_add("phone-region-not-set", "warning", "validate",
     "Phones without +country code were read as {region} numbers: the mapping states no phone_region.",
     "Pass --phone-region CC (e.g. US) or set phone_region under [options] of the mapping, naming the "
     "country the national numbers belong to.")

#: code → the hint as the command line says it (the catalogue's hint names the mapping's options)
CLI_HINTS: dict[str, str] = {
    "ambiguous-date": "Pass --date-order dmy (23/11 style) or --date-order mdy (11/23 style), or set "
    "dayfirst = true / false under [options] of the mapping.",
    "bad-file-url": "Use full http(s) URLs the portal can reach, or pass --files-base-url URL (where the "
    "files are published) or --upload-files (upload them to the portal's Drive); in a mapping file: "
    "files_base_url (and files_folder) under [options].",
}


def cli_hint(code: str) -> str:
    """The hint of ``code`` as the command line says it: its options, not only the mapping's."""
    return CLI_HINTS.get(str(code), get(code).hint)


def count_of(count: int, noun: str, plural: str | None = None) -> str:
    """``"1 call"``, ``"4 calls"``, ``"1,200 messages"``: a count with its noun in the right number
    (every line that prints a count says it through this)."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"
