"""Keeping imported chats quiet: preflight warnings, setup --import-mode and --restore."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_finish import _csv, _env, _portal_job

from bulkimport import connector
from bulkimport.cli import main
from bulkimport.exits import EXIT_OK
from bulkimport.sandbox import Sandbox

pytestmark = pytest.mark.usefixtures("clean_env")


def _config(client) -> dict:
    return client.call("imopenlines.config.get", {"CONFIG_ID": 1})


def test_import_mode_then_restore_round_trips_the_line_settings_exactly(tmp_path, monkeypatch):
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        client = connector.portal_client(sb.url)
        noisy = {
            "VOTE_MESSAGE": "Y", "AUTO_CLOSE_RULE": "text", "AUTO_CLOSE_TEXT": "Bye!", "CLOSE_RULE": "form"
        }
        assert client.call("imopenlines.config.update", {"CONFIG_ID": 1, "PARAMS": noisy}) is True
        before = _config(client)
        state = tmp_path / "history.csv.bulkimport.db"
        args = ["setup", "--portal", sb.url, "--line", "1", "--state", str(state)]
        out = CliRunner().invoke(main, [*args, "--import-mode"])
        assert out.exit_code == EXIT_OK, out.output
        saved = tmp_path / "history.csv.bulkimport.db.line-settings.json"
        assert saved.is_file() and str(saved) in out.output
        assert json.loads(saved.read_text())["previous"] == {
            "WELCOME_MESSAGE": "Y", "VOTE_MESSAGE": "Y", "AUTO_CLOSE_RULE": "text", "CLOSE_RULE": "form"
        }
        quiet = _config(client)
        switches = (quiet["WELCOME_MESSAGE"], quiet["VOTE_MESSAGE"], quiet["AUTO_CLOSE_RULE"])
        assert switches == ("N", "N", "none")
        assert quiet["AUTO_CLOSE_TEXT"] == "Bye!"  # texts are kept, only the switches change
        again = CliRunner().invoke(main, [*args, "--import-mode"])  # would lose the saved values
        assert again.exit_code == 2 and "--restore" in again.output
        out = CliRunner().invoke(main, [*args, "--restore"])
        assert out.exit_code == EXIT_OK, out.output
        assert _config(client) == before and not saved.exists()
        out = CliRunner().invoke(main, [*args, "--restore"])
        assert out.exit_code == 2 and "no saved line settings" in out.output


def test_import_mode_keeps_the_welcome_message_out_of_imported_chats_and_the_run_reminds(
    tmp_path, monkeypatch
):
    csv, mapping = _csv(tmp_path, chats=2, per_chat=2)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        said: list[str] = []
        job = _portal_job(csv, mapping, sb)
        job.notify = said.append
        job.connect()
        assert any(s.startswith("Warning: WELCOME_MESSAGE=Y") for s in said), said
        assert any("CRM=Y, CRM_CREATE=lead" in s for s in said) and any("QUEUE (1" in s for s in said)
        out = CliRunner().invoke(
            main, ["setup", "--portal", sb.url, "--line", "1", "--state", str(job.state), "--import-mode"]
        )
        assert out.exit_code == EXIT_OK, out.output
        job = _portal_job(csv, mapping, sb)
        said.clear()
        job.notify = said.append
        result = job.run()
        assert not any("WELCOME_MESSAGE" in s for s in said)
        system = sb.store.chat_messages()
        assert not system["text"].astype(str).str.contains("Welcome to the open line").any()
        reminder = [s for s in result.next_steps() if "setup --restore" in s]
        assert reminder and str(job.state) + ".line-settings.json" in reminder[0]
