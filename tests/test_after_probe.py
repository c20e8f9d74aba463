"""setup --check-readback against the sandbox: the probe finds the id it sent in CONNECTOR_MID; on a
portal whose messages carry no CONNECTOR_MID the probe says so and verify concludes nothing."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from conftest import register
from drills.kit import ROOT, cli_env
from test_send_sandbox import connect, make_plan

from bulkimport.after.probe import PROBE_CHAT, check_readback
from bulkimport.after.verify import verify
from bulkimport.journal import Journal
from bulkimport.portal.transport import RequestsTransport
from bulkimport.sandbox import Sandbox
from bulkimport.sending.sender import Sender


class NoMidPortal(RequestsTransport):
    """The sandbox as a portal that does not keep the external id: CONNECTOR_MID stripped from
    every im.dialog.messages.get answer on its way back."""

    def post(self, url, body, headers, timeout):  # type: ignore[no-untyped-def]
        raw = super().post(url, body, headers, timeout)
        if raw.status != 200:
            return raw
        answer = json.loads(raw.body)
        if url.endswith("im.dialog.messages.get"):
            pages = [answer["result"]]
        elif url.endswith("/batch"):
            pages = [r for r in (answer["result"]["result"] or {}).values()
                     if isinstance(r, dict) and "messages" in r]
        else:
            return raw
        for page in pages:
            for m in page["messages"]:
                if isinstance(m.get("params"), dict):
                    m["params"].pop("CONNECTOR_MID", None)
        return dataclasses.replace(raw, body=json.dumps(answer).encode())


def test_the_probe_finds_the_sent_id_in_connector_mid(sandbox: Sandbox, tmp_path: Path) -> None:
    register(sandbox)
    client, _ = connect(sandbox, tmp_path)
    found = check_readback(client, "hist_import", 1)
    assert found.carries_id and found.chat_id and found.mids == (found.sent_id,)
    assert "OK" in str(found) and found.calls == 3  # send, join, one page
    stored = sandbox.store.messages()
    assert list(stored["chat_id"]) == [PROBE_CHAT] and list(stored["message_id"]) == [found.sent_id]
    # the probe's session does not stay in an operator's queue (found by a new-user trial)
    assert sandbox.store.sessions()["closed"].notna().all()


def test_setup_check_readback_from_the_command_line(tmp_path: Path) -> None:
    with Sandbox(time_scale=100.0) as portal:
        args = [sys.executable, "-m", "bulkimport", "setup", "--portal", portal.url, "--line", "1",
                "--check-readback"]
        done = subprocess.run(args, env=cli_env(portal, tmp_path), capture_output=True, text=True,
                              timeout=120, cwd=ROOT, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "CONNECTOR_MID carries the sent id" in done.stdout
        assert portal.access_token not in done.stdout + done.stderr


def test_without_connector_mid_the_probe_fails_and_verify_concludes_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    register(sandbox)
    client, _ = connect(sandbox, tmp_path, NoMidPortal())
    found = check_readback(client, "hist_import", 1)
    assert not found.carries_id and found.mids == () and found.bare == 1
    assert "carry no CONNECTOR_MID" in str(found)
    plan = make_plan([4, 3])
    Sender(plan, portal=sandbox.url, line=1, connector="hist_import", client=client,
           state=tmp_path / "j.db", progress=False).run()
    journal = Journal.open(tmp_path / "j.db")
    try:
        result = verify(journal, client)
        assert result.exit_code == 1 and "no CONNECTOR_MID" in (result.refused or "")
        assert result.missing_rows == [] and journal.counts() == {"sent": 7}  # nothing marked missing
    finally:
        journal.close()
