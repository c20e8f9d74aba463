"""The code catalogue is the single source of codes: its entries must be complete and well-formed."""

import re

import pytest

from bulkimport import codes

REFERENCE_CODES = [
    "QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "OVERLOAD_LIMIT", "expired_token", "NO_AUTH_FOUND",
    "WRONG_AUTH_TYPE", "insufficient_scope", "INVALID_CREDENTIALS", "user_access_error", "ACCESS_DENIED",
    "INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER", "PORTAL_DELETED", "ERROR_METHOD_NOT_FOUND",
    "ERROR_BATCH_LENGTH_EXCEEDED", "ERROR_BATCH_METHOD_NOT_ALLOWED", "ERROR_ARGUMENT", "NOT_ACTIVE_LINE",
    "IMCONNECTOR_NO_CORRECT_PROVIDER", "IMCONNECTOR_NOT_SPECIFIED_CORRECT_COMMAND",
    "IMCONNECTOR_NOT_ALL_THE_REQUIRED_DATA", "CONNECTOR_PROXY_NO_ADD_USER", "CONNECTOR_PROXY_NO_USER_IM",
    "IMCONNECTOR_COULD_NOT_GET_PROVIDER_OBJECT", "IMCONNECTOR_NOT_SPECIFIED_CORRECT_CONNECTOR",
    "PROVIDER_UNSUPPORTED_TYPE_INCOMING_MESSAGE", "CONNECTOR_ID_REQUIRED", "NAME_REQUIRED",
    "ICON_REQUIRED", "NO_PLACEMENT_HANDLER", "APPLICATION_REGISTRATION_ERROR_POINT", "invalid_grant",
    "invalid_client", "INVALID_REQUEST", "PAYMENT_REQUIRED",
]


@pytest.mark.parametrize("code", REFERENCE_CODES)
def test_every_reference_code_is_catalogued_with_a_hint(code):
    entry = codes.CATALOGUE[code.upper()]
    assert entry.code == code
    assert len(entry.hint) > 20


def test_lookup_is_case_insensitive_like_the_portal():
    assert codes.get("EXPIRED_TOKEN") is codes.get("expired_token")


def test_unknown_portal_code_gets_a_generic_entry_not_an_exception():
    entry = codes.get("SOMETHING_NEW")
    assert entry.code == "SOMETHING_NEW" and entry.level == "error" and "catalogue" in entry.hint


def test_own_codes_are_kebab_case_and_entries_well_formed():
    for key, entry in codes.CATALOGUE.items():
        assert key == entry.code.upper()
        assert entry.level in ("error", "warning")
        assert entry.message and entry.hint
        if entry.stage in ("read", "validate", "send"):
            assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", entry.code), entry.code


def test_render_fills_placeholders_and_keeps_unknown_ones():
    entry = codes.Code("x", "error", "validate", "bad {field}: {value!r} {other}", "fix it")
    assert entry.render(field="message.date", value="31.02") == "bad message.date: '31.02' {other}"


def test_duplicate_code_is_refused():
    with pytest.raises(ValueError, match="twice"):
        codes._add("QUERY_LIMIT_EXCEEDED", "error", "portal", "m", "h")


def test_one_spelling_of_the_row_statuses():
    assert codes.STATUS_ORDER == ("sent", "failed", "invalid", "unknown", "pending", "deleted")
    assert tuple(codes.STATUSES) == codes.STATUS_ORDER  # meanings listed in report order
    assert codes.INFLIGHT not in codes.STATUS_ORDER  # the journal's own state, shown as unknown
