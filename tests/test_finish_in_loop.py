"""Finishing inside the send loop: a conversation's session is finished as soon as its rows are
settled, while later conversations are still being sent — once, also across Ctrl-C and a kill."""

from __future__ import annotations

import collections
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from test_finish import _csv as _finish_csv  # the same CSV, mapping and portal env
from test_finish import _env, _refusals

from bulkimport.cli import main
from bulkimport.exits import EXIT_OK
from bulkimport.job import ImportJob
from bulkimport.planning import Conversation
from bulkimport.portal.client import Client
from bulkimport.portal.methods import FINISH_METHOD
from bulkimport.sandbox import Sandbox
from bulkimport.sending.sender import Sender

CHATS, PER_CHAT = 30, 3


pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def finish_calls(monkeypatch) -> collections.Counter[int]:
    """Every finish command any client sends, by CHAT_ID (in a batch or as one call)."""
    seen: collections.Counter[int] = collections.Counter()
    batch, call_full = Client.batch, Client.call_full

    def counted_batch(self, commands, *args, **kwargs):
        for method, params in commands.values():
            if method == FINISH_METHOD:
                seen[int(params["CHAT_ID"])] += 1
        return batch(self, commands, *args, **kwargs)

    def counted_call(self, method, params=None, *args, **kwargs):
        if method == FINISH_METHOD:
            seen[int((params or {})["CHAT_ID"])] += 1
        return call_full(self, method, params, *args, **kwargs)

    monkeypatch.setattr(Client, "batch", counted_batch)
    monkeypatch.setattr(Client, "call_full", counted_call)
    return seen


def _csv(tmp_path: Path, chats: int = CHATS, per_chat: int = PER_CHAT) -> tuple[Path, Path]:
    return _finish_csv(tmp_path, chats, per_chat)


def _job(csv: Path, mapping: Path, sb: Sandbox, **kw: Any) -> ImportJob:
    from bulkimport import connector

    connector.setup(connector.portal_client(sb.url), 1, "bulkimport")
    kw.setdefault("progress", False)
    return ImportJob(csv, mapping=mapping, portal=sb.url, line=1, **kw)


def _finished(journal: Path) -> set[str]:
    with sqlite3.connect(journal) as db:
        return {str(r[0]) for r in db.execute("SELECT chat_id FROM finished")}


class Watch:
    """A progress collector that looks at the sandbox's store after every settled request; ``then``
    (if given) runs at the ``at``-th update (a Ctrl-C, a crash), or at every one when ``at`` is None."""

    def __init__(self, sb: Sandbox, at: int | None = None, then: Any = None) -> None:
        self.sb, self.at, self.then = sb, at, then
        self.seen: list[tuple[int, int, int | None]] = []  # (sessions closed, messages stored, finished)
        self.updates = 0

    def start(self, total: int, done: int) -> None:
        pass

    def update(self, n: int, counts: Any) -> None:
        if not n and "finished" not in counts:
            return
        self.updates += 1
        closed = int(self.sb.store.sessions()["closed"].notna().sum())
        self.seen.append((closed, len(self.sb.store.messages()), counts.get("finished")))
        if self.then is not None and (self.at is None or self.updates == self.at):
            self.then()

    def waiting(self, seconds: float | None, reason: str | None) -> None:
        pass

    def close(self) -> None:
        pass


def test_an_early_session_is_finished_while_later_conversations_are_still_being_sent(
    tmp_path, monkeypatch, finish_calls
):
    csv, mapping = _csv(tmp_path)
    total = CHATS * PER_CHAT
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        watch = Watch(sb)
        # one request at a time: the batches grow 1, 4, 16 … conversations, so several requests go
        job = _job(csv, mapping, sb, progress=watch, max_in_flight=1)
        result = job.run()
        assert result.exit_code == EXIT_OK, result.summary
        # at some settled request, a session was closed while messages of later chats were unsent
        assert any(closed >= 1 and stored < total for closed, stored, _ in watch.seen), watch.seen
        assert any(fin and stored < total for _, stored, fin in watch.seen)  # progress counts them
        sessions = sb.store.sessions()
        assert len(sessions) == CHATS and sessions["closed"].notna().all()  # none reopened
        assert sorted(finish_calls.values()) == [1] * CHATS  # one finish call per conversation
        assert result.finish.finished == CHATS and result.finish.complete
        assert result.finish.carried > 0  # some rode in send batches
        assert len(_finished(result.journal)) == CHATS and _refusals(sb) == 0
        assert result.next_steps() == []
        finish_calls.clear()
        out = CliRunner().invoke(main, ["finish", str(result.journal)])  # a second pass: no call
        assert out.exit_code == EXIT_OK and "Finished 0 sessions" in out.output, out.output
        assert not finish_calls


def test_keep_open_makes_no_finish_call_and_the_resume_eta_counts_the_finishes(
    tmp_path, monkeypatch, finish_calls
):
    csv, mapping = _csv(tmp_path, chats=4)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        result = _job(csv, mapping, sb, keep_open=True).run()
        assert result.exit_code == EXIT_OK and result.finish is None
        assert not finish_calls and sb.store.sessions()["closed"].isna().all()
        # a later default run sends nothing, but still has the four sessions to finish: its ETA says so
        again = _job(csv, mapping, sb)
        resume = again.resume()
        assert resume is not None and resume.to_go == 0 and resume.to_finish == 4
        assert resume.estimate.requests == 1 and "4 session finishes" in str(resume)
        assert _job(csv, mapping, sb, keep_open=True).resume().estimate.requests == 0
        done = again.run()
        assert done.finish.finished == 4 and sorted(finish_calls.values()) == [1] * 4
        assert again.resume().to_finish == 0


def test_the_plan_eta_counts_the_finish_commands_in_the_requests(tmp_path):
    from bulkimport.after.finish import with_finishing

    csv, mapping = _csv(tmp_path, chats=120, per_chat=1)
    job = ImportJob(csv, mapping=mapping, sandbox=True, progress=False)
    plan = job.plan()
    cheap = plan.estimate(job.limits, seconds_per_message=0.01)  # batches of 50 one-message calls
    assert cheap.requests == 3
    # 120 send and 120 finish commands: 5 requests of at most 50 commands, the bucket's time with them
    finishing = with_finishing(cheap, 120)
    assert finishing.requests == 5 and finishing.seconds >= cheap.seconds
    # at the assumed 1.2 s per message one call per request: the finish commands ride in their room
    slow = plan.estimate(job.limits)
    assert slow.requests == 120 and with_finishing(slow, 120) == slow
    assert job.estimate() == with_finishing(slow, 120)
    assert ImportJob(csv, mapping=mapping, sandbox=True, keep_open=True).estimate() == slow


def _held_plan(job: ImportJob) -> Any:
    """The job's plan with conversation 1's third message broken (the portal refuses it: the
    conversation is held behind it, its last row stays pending)."""
    plan = job.plan()
    conv = plan.conversations[1]
    messages = [dict(m) for m in conv.messages]
    messages[2] = {**messages[2], "user": "not-a-dict"}
    plan.conversations[1] = Conversation(conv.key, conv.rows, tuple(messages), conv.lock_keys)
    return plan


def test_a_held_conversation_is_not_finished_and_the_library_option_finishes_the_others(
    tmp_path, monkeypatch, finish_calls
):
    from bulkimport import connector

    csv, mapping = _csv(tmp_path, chats=3, per_chat=4)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        job = _job(csv, mapping, sb)
        plan = _held_plan(job)
        client = connector.portal_client(sb.url)
        state = tmp_path / "journal.db"
        sender = Sender(plan, line=1, connector="bulkimport", client=client, state=state,
                        progress=False, finish_sessions=True)
        out = sender.run()
        frame = out.frame
        held = list(plan.conversations[1].rows)
        assert frame.loc[held[2], "import_status"] == "failed"
        assert frame.loc[held[3], "import_status"] == "pending"
        with sqlite3.connect(state) as db:
            chats = dict(db.execute("SELECT conv, MAX(chat_id) FROM rows WHERE status='sent' GROUP BY conv"))
        assert set(finish_calls) == {int(chats[0]), int(chats[2])}  # never the held one
        sessions = sb.store.sessions().set_index("chat")
        assert pd.isna(sessions.loc[int(chats[1]), "closed"])  # still open
        assert sessions.loc[[int(chats[0]), int(chats[2])], "closed"].notna().all()
        assert sender.finished.finished == 2 and sender.finished.complete
        assert _finished(state) == {chats[0], chats[2]}
        # the library default leaves sessions open
        finish_calls.clear()
        plain = Sender(job.plan(), line=1, connector="bulkimport", client=client,
                       state=tmp_path / "other.db", progress=False)
        plain.run()
        assert plain.finished is None and not finish_calls


class Killed(BaseException):
    """The process dies here (no handler runs; what the journal committed is what survives)."""


def _kill() -> None:
    raise Killed


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C: the answers in flight are awaited


@pytest.mark.parametrize("stop", ["kill", "ctrl-c"])
def test_a_resumed_run_finishes_nothing_twice(tmp_path, monkeypatch, finish_calls, stop):
    csv, mapping = _csv(tmp_path)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        # one request at a time when killed: nothing is on the wire at the kill (no unknown row)
        watch = Watch(sb, at=3, then=_kill if stop == "kill" else _ctrl_c)
        job = _job(csv, mapping, sb, progress=watch, max_in_flight=1 if stop == "kill" else 2)
        if stop == "kill":
            with pytest.raises(Killed):
                job.run()
            journal = job.state
        else:
            first = job.run()
            assert first.interrupted
            journal = first.journal
        before = _finished(journal)
        assert before and len(before) < CHATS  # some finished in the loop, not all
        assert {str(c) for c in finish_calls} >= before
        result = _job(csv, mapping, sb).run()
        assert result.exit_code == EXIT_OK, result.summary
        assert sorted(finish_calls.values()) == [1] * CHATS  # nobody finished twice
        sessions = sb.store.sessions()
        assert len(sessions) == CHATS and sessions["closed"].notna().all()
        assert len(_finished(result.journal)) == CHATS and _refusals(sb) == 0
        assert result.finish.finished == CHATS - len(before) and result.finish.complete


def test_a_cut_off_finish_batch_is_tried_again_and_the_sends_are_untouched(
    tmp_path, monkeypatch, finish_calls
):
    csv, mapping = _csv(tmp_path, chats=6, per_chat=2)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)

        armed: list[int] = []

        def cut_the_next_request() -> None:  # every message is stored: what follows only finishes
            if watch.seen[-1][1] == 12 and not armed:
                armed.append(1)
                sb.faults.add("drop-after", count=1, methods=["batch", FINISH_METHOD])

        watch = Watch(sb, then=cut_the_next_request)
        result = _job(csv, mapping, sb, progress=watch, max_in_flight=1).run()
        assert armed, watch.seen
        assert result.exit_code == EXIT_OK and result.summary.counts["sent"] == 12, result.summary
        assert sb.stats()["faults"].get("drop-after") == 1
        sessions = sb.store.sessions()
        assert len(sessions) == 6 and sessions["closed"].notna().all()
        assert set(finish_calls) == {int(c) for c in sessions["chat"]}
        assert sum(finish_calls.values()) > 6  # the cut-off ones were called again …
        assert result.finish.finished == 6 and result.finish.complete  # … and recorded once
        assert len(_finished(result.journal)) == 6 and sb.store.duplicates().empty


def test_a_conversation_sharing_a_customer_waits_for_the_other_before_its_session_is_finished(
    tmp_path, monkeypatch, finish_calls
):
    """A portal may put one customer's conversations in one chat (Bitrix24 groups chats by
    ``user.id`` by default; the sandbox keeps them apart): the first one's session is finished only
    once the other has nothing left to send, while unrelated ones are finished at once."""
    csv, mapping = _csv(tmp_path, chats=8, per_chat=2)
    text = csv.read_text(encoding="utf-8").replace(",u7,", ",u0,")  # c0 and c7: one customer
    csv.write_text(text, encoding="utf-8")
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        moments: list[tuple[set[int], int]] = []  # (chats finished so far, c7's messages stored)
        watch = Watch(sb, then=lambda: moments.append(
            (set(finish_calls), len(sb.store.messages(chat_id="c7")))))
        result = _job(csv, mapping, sb, progress=watch, max_in_flight=1).run()
        assert result.exit_code == EXIT_OK, result.summary
        c0 = int(sb.store.messages(chat_id="c0")["b24_chat_id"].iloc[0])  # the portal's CHAT_ID
        early = [finished for finished, c7 in moments if c7 < 2]
        assert any(finished - {c0} for finished in early)  # unrelated sessions went early …
        assert all(c0 not in finished for finished in early)  # … c0's waited for c7's last row
        assert sorted(finish_calls.values()) == [1] * 8 and sb.store.sessions()["closed"].notna().all()


def test_a_row_sent_into_a_finished_chat_reopens_it_and_the_run_finishes_it_again(tmp_path, monkeypatch):
    """Found by a new-user trial: a fixed or appended row (or one verify found missing) sent into a
    chat finished by an earlier run opens a new session, and the journal said "already finished"."""
    csv, mapping = _csv(tmp_path, chats=3, per_chat=2)
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        _env(sb, monkeypatch)
        first = _job(csv, mapping, sb).run()
        assert first.exit_code == 0 and sb.store.sessions()["closed"].notna().all()
        with csv.open("a", encoding="utf-8") as fh:  # a later message of chat c1
            fh.write("c1,u1,2024-01-02T11:00:00+00:00,one more\n")
        second = _job(csv, mapping, sb).run()
        assert second.exit_code == 0
        sessions = sb.store.sessions()
        assert len(sessions) == 4, sessions  # c1 got a second session …
        assert sessions["closed"].notna().all(), sessions  # … and it was finished
        assert second.finish is not None and second.finish.finished == 1
        third = _job(csv, mapping, sb).run()  # nothing new: nothing finished again
        assert third.finish is None or third.finish.finished == 0
