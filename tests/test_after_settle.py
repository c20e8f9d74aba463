"""Settling unknown rows by read-back: kill -9 the CLI mid-import, then the resumed run reads the
chats of the cut rows back and ends with 0 unknown rows and no duplicate; a portal that refuses
read-back leaves them unknown and says why."""

from __future__ import annotations

import logging
import random
import subprocess
import time
from pathlib import Path

from drills.kit import check_store, cli_env, journal_statuses, register, run_args, write_history
from test_drill_kill_resume import _quiesce, _wait_sending
from test_send_sandbox import assert_exactly_once_in_order, connect, make_plan, sender, setup_connector

import bulkimport
from bulkimport.clock import for_sandbox
from bulkimport.portal.client import Client
from bulkimport.sandbox import Sandbox
from bulkimport.sending.sender import Sender

#: The sandbox runs 20× faster than real time (the 60 s request cap passes in 3 s); its server cost
#: per call and per message (portal seconds) makes requests take long enough for a kill to cut one.
SCALE = 20.0
COSTS = {"cost_per_call": 0.4, "cost_per_message": 0.08}


def _killed_import(tmp_path: Path, portal: Sandbox, seed: int) -> set[str]:
    """Run the CLI, kill -9 it while it sends (until a kill leaves rows in flight); the cut row ids."""
    rng = random.Random(seed)
    env = cli_env(portal, tmp_path)
    args = run_args(portal, tmp_path / "history.csv", tmp_path)
    for _ in range(6):
        before = len(portal.store.messages())
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_sending(portal, proc, before)
            time.sleep(rng.uniform(0.0, 0.3))
            proc.kill()
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        _quiesce(portal)
        cut = {r for r, s in journal_statuses(tmp_path / "journal.db").items() if s == "inflight"}
        if cut:
            return cut
    raise AssertionError("no kill landed while a request was in flight")


def _resume(portal: Sandbox, tmp_path: Path, token: str | None = None):
    frame = bulkimport.read(tmp_path / "history.csv")
    plan = bulkimport.plan(frame, bulkimport.Mapping.guess(frame))
    clock = for_sandbox(portal)
    client = Client(portal.url, token or portal.access_token, clock=clock)
    sender = Sender(plan, portal=portal.url, line=1, connector="bulkimport", client=client, clock=clock,
                    state=tmp_path / "journal.db", progress=False, settle_unknown=True)
    return sender, sender.run()


def test_kill_9_then_the_resumed_run_settles_every_unknown_row_and_duplicates_nothing(
    tmp_path: Path, caplog
) -> None:
    history = write_history(tmp_path / "history.csv", conversations=20, per_conversation=12)
    with Sandbox(time_scale=SCALE, seed=5, **COSTS) as portal:
        register(portal)
        cut = _killed_import(tmp_path, portal, seed=5)
        stored = set(portal.store.messages()["message_id"])
        # a token without the im scope: read-back is refused, the rows stay unknown, the reason is said
        weak = portal.portal.issue_tokens(portal.client_id, "imopenlines,imconnector", 1)["access_token"]
        with caplog.at_level(logging.WARNING, logger="bulkimport.after"):
            refused, outcome = _resume(portal, tmp_path, weak)
        assert refused.settled.found == 0 and refused.settled.left == len(cut)
        assert "insufficient_scope" in (refused.settled.reason or ""), refused.settled
        assert "refuses read-back" in caplog.text
        frame = outcome.frame
        assert set(frame.loc[frame.index.astype(str).isin(cut), "import_status"]) == {"unknown"}
        # the full token: found rows become sent, the others are sent again once the cap has passed
        sender, outcome = _resume(portal, tmp_path)
        frame = outcome.frame
        assert sender.settled.left == 0 and sender.settled.reason is None
        assert sender.settled.found == len({r for r in cut if history.by_row[r] in stored})
        assert sender.settled.found + sender.settled.resent == len(cut)
        assert set(frame["import_status"]) == {"sent"}, frame["import_status"].value_counts()
        found = frame.index.astype(str).isin({r for r in cut if history.by_row[r] in stored})
        assert set(frame.loc[found, "import_error_code"].fillna("")) <= {"found-on-portal"}
        status = {history.by_row[str(r)]: s for r, s in frame["import_status"].items()}
        copies = check_store(portal, history.want, status)
        assert set(copies) == history.ids and set(copies.values()) == {1}


def test_connections_dropped_after_the_portal_committed_are_settled_on_the_next_run(tmp_path: Path) -> None:
    """drop-after: the portal stores the messages, the answer never arrives — rows unknown; the next
    run reads their chats back: every row sent, each message exactly once, in order."""
    with Sandbox(time_scale=100.0, seed=11) as portal:
        client, _ = connect(portal, tmp_path)
        setup_connector(client)
        portal.faults.add("drop-after", count=2, methods=["batch", "imconnector.send.messages"])
        plan = make_plan([6] * 10, chunk_size=3)
        first = sender(plan, client, tmp_path, settle_unknown=True).run()
        cut = first.frame.index[first.frame["import_status"] == "unknown"]
        assert len(cut) > 0 and portal.stats()["faults"]
        portal.faults.clear()
        s = sender(plan, client, tmp_path, settle_unknown=True)
        final = s.run()
        assert s.settled.left == 0 and s.settled.found >= 1 and s.settled.found + s.settled.resent == len(cut)
        assert set(final.frame["import_status"]) == {"sent"}
        stored = assert_exactly_once_in_order(portal, plan, final.frame)
        assert sorted(stored["message_id"]) == sorted(f"m{r}" for r in final.frame.index)


def test_a_dialog_the_portal_will_not_open_is_a_refused_read_back_not_a_missing_dialog(
    tmp_path: Path, caplog
) -> None:
    """imopenlines.dialog.get answers ACCESS_ERROR both for a dialog that does not exist and for one
    the caller may not open. For an application user who is no portal administrator that proves
    nothing: the rows stay unknown, with the reason, and nothing is sent twice. For an administrator
    it means no such dialog: the rows are sent (once)."""
    with Sandbox(time_scale=100.0, seed=3) as portal:
        client, _ = connect(portal, tmp_path)
        setup_connector(client)
        plan = make_plan([3, 3], chunk_size=3)
        # the first request of both conversations: stored, but no answer (so no CHAT_ID is known)
        portal.faults.add("drop-after", count=1, methods=["batch", "imconnector.send.messages"])
        first = sender(plan, client, tmp_path).run()
        assert set(first.frame["import_status"]) == {"unknown"}
        portal.faults.clear()
        employee = portal.portal.issue_tokens(portal.client_id, "imopenlines,imconnector,im", 7)
        weak = Client(portal.url, employee["access_token"], clock=for_sandbox(portal))
        with caplog.at_level(logging.WARNING, logger="bulkimport.after"):
            s = sender(plan, weak, tmp_path, settle_unknown=True)
            refused = s.run()
        assert s.settled.found == 0 and s.settled.resent == 0 and s.settled.left == 6
        assert "ACCESS_ERROR" in (s.settled.reason or "") and "not a portal administrator" in s.settled.reason
        assert set(refused.frame["import_status"]) == {"unknown"}
        assert "not a portal administrator" in caplog.text
        assert portal.store.duplicates().empty and len(portal.store.messages()) == 6
        # the administrator: both dialogs exist, every row is found on the portal
        s = sender(plan, client, tmp_path, settle_unknown=True)
        final = s.run()
        assert s.settled.found == 6 and s.settled.left == 0
        assert_exactly_once_in_order(portal, plan, final.frame)

    with Sandbox(time_scale=100.0, seed=4) as portal:  # a dialog that does not exist
        (tmp_path / "b").mkdir()
        client, _ = connect(portal, tmp_path / "b")
        setup_connector(client)
        plan = make_plan([3], chunk_size=3)
        portal.faults.add("drop-before", count=1, methods=["batch", "imconnector.send.messages"])
        first = sender(plan, client, tmp_path / "b").run()
        assert set(first.frame["import_status"]) == {"unknown"} and portal.store.messages().empty
        portal.faults.clear()
        s = sender(plan, client, tmp_path / "b", settle_unknown=True)
        final = s.run()
        assert s.settled.resent == 3 and s.settled.reason is None
        assert_exactly_once_in_order(portal, plan, final.frame)
