"""Messages lost behind the client's back (Store.lose_messages, ``bulkimport sandbox --lose``)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from conftest import call, msg, register

from bulkimport.sandbox import Sandbox
from bulkimport.sandbox.command import sandbox as sandbox_command
from bulkimport.sandbox.store import Store


def fill(portal: Sandbox, chats: int = 3, per_chat: int = 5) -> None:
    for c in range(chats):
        r = call(
            portal,
            "imconnector.send.messages",
            CONNECTOR="hist_import",
            LINE=1,
            MESSAGES=[msg(i, chat=f"c{c}", user=f"u{c}") for i in range(per_chat)],
        )
        assert r.json()["result"]["SUCCESS"] is True


def test_lost_messages_vanish_from_every_read_back(sandbox: Sandbox, connector: str) -> None:
    fill(sandbox)
    lost = sandbox.store.lose_messages(4, seed=1)
    assert len(lost) == 4 and len(sandbox.store.messages()) == 11
    assert sandbox.store.lost()["seq"].tolist() == lost["seq"].tolist()
    assert sandbox.store.counts()["lost_messages"] == 4 and sandbox.store.counts()["deleted_messages"] == 0
    gone = set(lost["message_id"])
    for chat in sandbox.store.chats()["id"]:
        chat = int(chat)
        call(sandbox, "imopenlines.session.join", CHAT_ID=chat)
        page = call(sandbox, "im.dialog.messages.get", DIALOG_ID=f"chat{chat}", LIMIT=50).json()["result"]
        mids = {m["params"]["CONNECTOR_MID"][0] for m in page["messages"] if m["author_id"]}
        assert not mids & gone
        dialog = call(sandbox, "imopenlines.dialog.get", CHAT_ID=chat).json()["result"]
        assert dialog["message_count"] == len(page["messages"])
        history = call(sandbox, "imopenlines.session.history.get", CHAT_ID=chat).json()["result"]
        assert len(history["message"]) == len(page["messages"])
    # a lost message can no longer be updated or deleted by its id either
    first = lost.iloc[0]
    r = call(
        sandbox,
        "imconnector.delete.messages",
        CONNECTOR="hist_import",
        LINE=1,
        MESSAGES=[
            {
                "user": {"id": "u" + first["chat_id"][1:]},
                "message": {"id": first["message_id"]},
                "chat": {"id": first["chat_id"]},
            }
        ],
    )
    assert r.json()["result"]["DATA"]["RESULT"][0]["SUCCESS"] is False


def test_lose_is_seeded_and_can_target_chats_and_ids(
    sandbox: Sandbox, connector: str, tmp_path: Path
) -> None:
    fill(sandbox)
    picks = sandbox.store.lose_messages(0)
    assert picks.empty
    by_chat = sandbox.store.lose_messages(2, seed=3, chat_id="c1")
    assert set(by_chat["chat_id"]) == {"c1"}
    by_id = sandbox.store.lose_messages(message_ids=["c2-m0", "c2-m4"])
    assert sorted(by_id["message_id"]) == ["c2-m0", "c2-m4"]
    assert len(sandbox.store.lose_messages(100, seed=0)) == 15 - 4
    assert sandbox.store.messages().empty


def test_same_seed_loses_the_same_messages(tmp_path: Path) -> None:
    picked = []
    for run in range(2):
        with Sandbox(db=tmp_path / f"p{run}.db", time_scale=100) as portal:
            register(portal)
            fill(portal)
            picked.append(portal.store.lose_messages(5, seed=42)["message_id"].tolist())
    assert picked[0] == picked[1] and len(picked[0]) == 5


def test_lose_from_the_command_line(tmp_path: Path) -> None:
    db = tmp_path / "portal.db"
    with Sandbox(db=db, time_scale=100) as portal:
        register(portal)
        fill(portal, chats=2, per_chat=4)
    runner = CliRunner()
    out = runner.invoke(sandbox_command, ["--db", str(db), "--lose", "3", "--seed", "9"])
    assert out.exit_code == 0, out.output
    assert "Lost 3 messages" in out.output
    store = Store(str(db))
    try:
        assert len(store.messages()) == 5 and len(store.lost()) == 3
    finally:
        store.close()
    out = runner.invoke(sandbox_command, ["--db", str(db), "--show", "lost", "--format", "csv"])
    assert out.exit_code == 0 and len(out.output.strip().splitlines()) == 4
    assert runner.invoke(sandbox_command, ["--lose", "1"]).exit_code != 0  # needs --db
    assert "--lose" in runner.invoke(sandbox_command, ["--help"]).output
