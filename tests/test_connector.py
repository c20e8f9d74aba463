"""Connector set-up and preflight against the sandbox portal: ready lists, idempotence, fixing commands."""

from __future__ import annotations

import pytest

from bulkimport import connector as conn
from bulkimport.errors import AuthError, ConfigError, SetupError


@pytest.fixture
def sandbox(tmp_path):
    from bulkimport.sandbox import Sandbox

    with Sandbox(db=tmp_path / "sandbox.db", time_scale=50.0) as sb:
        yield sb


@pytest.fixture
def target(sandbox, tmp_path):
    return conn.sandbox_target(sandbox)


def _linked(sandbox, connector_id: str):
    rows = sandbox.store.connectors()
    return rows[rows["connector"] == connector_id]


def test_setup_registers_activates_and_reports_ready(sandbox, target):
    result = conn.setup(target.client, target.line, "history_import")
    assert result.ready, str(result)
    assert [c.name for c in result.checks] == [
        "token",
        "open line",
        "connector registered",
        "connector data",
        "connector active",
    ]
    assert "READY" in str(result)
    linked = _linked(sandbox, "history_import")
    assert len(linked) == 1
    assert int(linked["line"].iloc[0]) == target.line and int(linked["active"].iloc[0]) == 1
    assert "history_import" in str(linked["data"].iloc[0])


def test_setup_is_idempotent(sandbox, target):
    conn.setup(target.client, target.line, "history_import")
    again = conn.setup(target.client, target.line, "history_import")
    assert again.ready
    assert "already registered" in str(again)
    assert len(_linked(sandbox, "history_import")) == 1


def test_preflight_before_setup_names_the_setup_command(target):
    with pytest.raises(SetupError) as info:
        conn.preflight(target.client, target.line, "history_import")
    text = str(info.value)
    fix = f"bulkimport setup --portal {target.portal} --line {target.line} --connector history_import"
    assert fix in text
    assert "\n" not in text


def test_preflight_after_setup_passes(target):
    conn.setup(target.client, target.line, "history_import")
    result = conn.preflight(target.client, target.line, "history_import")
    assert result.ready and {c.name for c in result.checks} >= {"token", "open line", "connector active"}


def test_preflight_on_a_missing_line_lists_the_existing_ones(target):
    with pytest.raises(SetupError, match="does not exist") as info:
        conn.preflight(target.client, 999, "history_import")
    assert "Imported history" in str(info.value)


def test_inactive_line_is_not_ready_and_preflight_says_activate_it(sandbox, target):
    lines = sandbox.store.lines()
    inactive = int(lines.loc[lines["active"] == "N", "id"].iloc[0])
    result = conn.setup(target.client, inactive, "history_import")
    assert not result.ready
    assert any(c.name == "open line" and not c.ok and "activate" in c.fix for c in result.checks)
    with pytest.raises(SetupError, match="inactive"):
        conn.preflight(target.client, inactive, "history_import")


def test_a_refused_token_asks_for_bulkimport_auth(sandbox):
    from bulkimport.portal.client import Client

    client = Client(sandbox.url, "not-a-valid-token")
    with pytest.raises(AuthError, match="bulkimport auth"):
        conn.preflight(client, 1, "history_import")


def test_preflight_with_the_connector_deactivated(sandbox, target):
    conn.setup(target.client, target.line, "history_import")
    off = {"CONNECTOR": "history_import", "LINE": target.line, "ACTIVE": 0}
    target.client.call("imconnector.activate", off)
    with pytest.raises(SetupError, match="not active"):
        conn.preflight(target.client, target.line, "history_import")


@pytest.mark.parametrize("bad", ["my.conn", "Upper", "", "a b", "x" * 65])
def test_connector_ids_are_checked_before_any_call(bad):
    with pytest.raises(ConfigError, match="--connector"):
        conn.check_connector_id(bad)


@pytest.mark.parametrize("bad", [None, "", "first", "0", "-3"])
def test_line_ids_are_checked(bad):
    from bulkimport.settings import parse_line

    with pytest.raises(ConfigError, match="--line"):
        parse_line(bad)


def test_commands_are_shell_quoted():
    assert conn.setup_command("https://p.example/x y", 3, "c") == (
        "bulkimport setup --portal 'https://p.example/x y' --line 3 --connector c"
    )
    assert conn.auth_command(None) == "bulkimport auth"


def test_demo_time_scale_fits_the_target_and_never_slows_down():
    assert conn.demo_time_scale(5, target=10) == 1.0
    assert conn.demo_time_scale(1200, target=10) == 120.0


def test_a_sandbox_journal_brings_its_port_back_for_resuming(tmp_path):
    from bulkimport.journal import Journal

    assert conn.sandbox_port_for(tmp_path / "none.db") == 0
    for portal, port in (("http://127.0.0.1:5555/rest/", 5555), ("https://p.example/rest/", 0)):
        path = tmp_path / f"{port}.bulkimport.db"
        Journal.bind(path, portal=portal, line="1", connector="c", fingerprint="f").close()
        assert conn.sandbox_port_for(path) == port


def test_fix_for_names_auth_or_setup_by_code():
    assert (
        conn.fix_for("NO_AUTH_FOUND", "https://p.example", 1, "c")
        == "bulkimport auth --portal https://p.example"
    )
    assert conn.fix_for("NOT_ACTIVE_LINE", "https://p.example", 1, "c") == (
        "bulkimport setup --portal https://p.example --line 1 --connector c"
    )
    assert conn.fix_for("OVERLOAD_LIMIT", None, 1, "c") is None and conn.fix_for(None, None, 1, "c") is None


def test_preflight_that_cannot_connect_says_nothing_was_sent_and_promises_no_retry():
    import socket

    from bulkimport.clock import ManualClock
    from bulkimport.errors import FatalError
    from bulkimport.portal.client import Client

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens
    portal = f"http://127.0.0.1:{port}"
    client = Client(portal, "tok-123456", clock=ManualClock(), timeout=2)
    with pytest.raises(FatalError) as info:
        conn.preflight(client, 1, "history_import", portal=portal)
    text = str(info.value)
    assert info.value.code == "preflight-unreachable"
    assert "nothing was sent" in text and "--portal" in text and "network" in text
    assert "retries" not in text
