"""bulkimport verify against the sandbox: messages lost behind the client's back are found missing by
row, the next run sends exactly those, and a portal without CONNECTOR_MID is refused."""

from __future__ import annotations

from pathlib import Path

from conftest import register
from test_send_sandbox import connect, make_plan

from bulkimport.after.verify import estimate, verify
from bulkimport.journal import Journal
from bulkimport.sandbox import Sandbox
from bulkimport.sending.sender import Sender

CONNECTOR = "hist_import"


def _send(portal: Sandbox, tmp_path: Path, sizes: list[int]):
    plan = make_plan(sizes)
    client, _ = connect(portal, tmp_path)
    outcome = Sender(plan, portal=portal.url, line=1, connector=CONNECTOR, client=client,
                     state=tmp_path / "j.db", progress=False, settle_unknown=True).run()
    return plan, client, outcome


def test_verify_finds_lost_messages_by_row_and_the_next_run_sends_exactly_those(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    register(sandbox)
    plan, client, outcome = _send(sandbox, tmp_path, [60, 7, 3])
    assert set(outcome.frame["import_status"]) == {"sent"}
    lost = sandbox.store.lose_messages(5, seed=3)
    lost_ids = set(lost["message_id"])
    journal = Journal.open(tmp_path / "j.db")
    try:
        calls, _ = estimate(journal)
        result = verify(journal, client)
    finally:
        journal.close()
    # one batch for the three chats (a join and the first page each), one more page for the chat of
    # 60 messages (+1 welcome message): the estimate is what verify then spends
    assert calls == 2 and result.calls == 2
    assert result.exit_code == 1 and result.refused is None
    row_of = {str(m["message"]["id"]): str(r) for c in plan.conversations
              for r, m in zip(c.rows, c.messages, strict=True)}
    assert set(result.missing_rows) == {row_of[m] for m in lost_ids}
    t = result.table
    assert int(t["sent"].sum()) == 70 and int(t["missing"].sum()) == 5 and int(t["found"].sum()) == 65
    assert int(t["unexpected"].sum()) == 0
    before = sandbox.store.messages()
    assert not set(before["message_id"]) & lost_ids
    _, client, again = _send(sandbox, tmp_path, [60, 7, 3])
    after = sandbox.store.messages()
    resent = after[~after["seq"].isin(before["seq"])]
    assert sorted(resent["message_id"]) == sorted(lost_ids)  # exactly the lost ones, once each
    assert set(again.frame["import_status"]) == {"sent"}
    journal = Journal.open(tmp_path / "j.db")
    try:
        assert verify(journal, client).exit_code == 0
    finally:
        journal.close()
