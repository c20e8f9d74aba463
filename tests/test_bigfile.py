"""A big CSV planned on disk, in parts (bulkimport.bigfile, bulkimport.planstore): the same plan as
in memory, sent, resumed from the stored plan, reported from the journal; options it cannot honour
refused. Small files stand in for big ones: BULKIMPORT_STORED_PLAN_ROWS and the part size are
lowered, so every code path of a ten-million-row run is taken in a second."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import tomli_w
from click.testing import CliRunner

from bulkimport import bigfile, planstore
from bulkimport.cli import main
from bulkimport.errors import ConfigError, JournalMismatchError
from bulkimport.job import ImportJob
from bulkimport.journal import Journal
from bulkimport.planning import plan as build_plan
from bulkimport.sandbox import Sandbox
from bulkimport.sources import load

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "data_examples"))
from generate import BIG_MAPPING, big_csv  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, clean_env):
    monkeypatch.setenv("BULKIMPORT_STORED_PLAN_ROWS", "100")  # every test file here is "big"
    monkeypatch.setattr(bigfile, "PART_ROWS", 400)  # several parts
    monkeypatch.setattr(bigfile, "CHUNK_ROWS", 250)  # several chunks, cut across conversations


def _history(tmp_path: Path, rows: int = 2000, conversations: int = 120) -> tuple[Path, Path]:
    """A generated history with a few broken rows, and its mapping file."""
    src = big_csv(tmp_path / "big.csv", rows, seed=3, conversations=conversations)
    frame = pd.read_csv(src, sep=";", dtype=str, keep_default_na=False)
    frame.loc[[5, rows // 3, rows - 10], "Date"] = "not a date"  # three invalid rows, in different parts
    frame.to_csv(src, sep=";", index=False)
    mapping = tmp_path / "big.toml"
    mapping.write_text(tomli_w.dumps(BIG_MAPPING), encoding="utf-8")
    return src, mapping


def _job(src: Path, mapping: Path, **options) -> ImportJob:
    options.setdefault("progress", False)
    return ImportJob(src, mapping=mapping, sandbox=True, time_scale=500.0, **options)


def test_a_big_csv_is_planned_on_disk_exactly_as_in_memory(tmp_path):
    src, mapping = _history(tmp_path)
    said: list[str] = []
    job = _job(src, mapping, notify=said.append)
    stored = job.plan()
    assert planstore.is_stored(stored) and job.planned_on_disk
    assert any(" parts of whole conversations" in s for s in said)  # ~2,000 rows / 400 a part
    assert stored.store.meta()["fingerprint"].startswith("stored-v2:")
    from bulkimport.mapping import Mapping

    whole = build_plan(load(src).frame, Mapping.load(mapping))
    assert stored.counts == whole.counts
    assert [c.key for c in stored.conversations] == [c.key for c in whole.conversations]
    for a, b in zip(stored.conversations, whole.conversations, strict=True):
        assert list(a.rows) == list(b.rows) and a.lock_keys == b.lock_keys
        assert list(a.messages) == list(b.messages)  # every MESSAGES item, wire-ready, the same
    assert set(stored.invalid_rows) == set(whole.invalid_rows) and len(stored.invalid_rows) == 3
    codes = lambda f: sorted(f["code"].value_counts().items())  # noqa: E731
    assert codes(stored.failures) == codes(whole.failures)
    assert stored.estimate().requests == whole.estimate().requests
    authors = stored.authors  # added up from the parts
    assert authors["messages"].sum() == len(load(src).frame)
    assert set(authors["side"]) == {"operator", "customer"}


def test_sent_from_the_stored_plan_every_message_once_in_order_then_resumed_from_it(tmp_path):
    src, mapping = _history(tmp_path)
    first_said: list[str] = []
    result = _job(src, mapping, notify=first_said.append).run()
    plan = result.plan
    assert any(t.startswith(f"Journalling {plan.counts['valid']:,} rows and their ids") for t in first_said)
    assert result.summary.counts["sent"] == plan.counts["valid"] and result.summary.counts["invalid"] == 3
    assert result.frame is None and result.report == src.with_name("big.csv.report.csv")
    assert result.exit_code == 1 and result.next_steps() == []  # three invalid rows, nothing to resume
    report = pd.read_csv(result.report, dtype=str)
    assert len(report) == plan.counts["rows"]
    assert (report["import_status"] == "sent").sum() == plan.counts["valid"]
    with Sandbox(db=src.with_name("sandbox-big.db")) as sb:
        assert len(sb.store.messages()) == plan.counts["valid"]
        assert sb.store.duplicates().empty and sb.store.out_of_order().empty
    with Journal.open(result.journal) as journal:  # what verify, undo and settling read
        assert journal.query("SELECT COUNT(*) FROM row_ids")[0][0] == plan.counts["valid"]
        assert journal.query("SELECT COUNT(*) FROM rows WHERE status = 'invalid'")[0][0] == 3

    said: list[str] = []
    again = _job(src, mapping, notify=said.append)
    assert any(s.startswith("Plan read back from") for s in [*said, *_notes(again)])
    resumed = again.resume()
    assert resumed is not None and resumed.sent == plan.counts["valid"] and resumed.to_go == 0
    later: list[str] = []
    again.notify = later.append
    second = again.run()
    assert second.summary.sent_this_run == 0
    assert later and not any(t.startswith("Journalling") for t in later)  # once per plan
    with Sandbox(db=src.with_name("sandbox-big.db")) as sb:
        assert len(sb.store.messages()) == plan.counts["valid"] and sb.store.duplicates().empty


def _notes(job: ImportJob) -> list[str]:
    said: list[str] = []
    job.notify = said.append
    job.plan()
    return said


def test_a_run_stopped_half_way_resumes_from_the_journal_and_sends_the_rest(tmp_path):
    src, mapping = _history(tmp_path, rows=1500, conversations=90)
    job = _job(src, mapping)
    plan = job.plan()
    keys = [str(r) for c in list(plan.conversations)[:40] for r in c.rows]
    state = Path(str(job.state))
    with Journal.bind(state, portal="http://127.0.0.1:1/rest/", line="1", connector="bulkimport",
                      fingerprint=plan.fingerprint) as journal:
        plan.journal_rows(journal)
        journal.executemany("UPDATE rows SET status = 'sent' WHERE rid = ?", [(k,) for k in keys])
    resumed = _job(src, mapping).resume()
    assert resumed is not None and resumed.sent == len(keys)
    assert resumed.to_go == plan.counts["valid"] - len(keys)


def test_options_a_stored_plan_cannot_honour_are_refused_before_anything_is_read(tmp_path):
    src, mapping = _history(tmp_path, rows=300, conversations=20)
    with pytest.raises(ConfigError, match=r"--update-changed is not available for big\.csv"):
        _job(src, mapping, update_changed=True).plan()
    with pytest.raises(ConfigError, match="--upload-files is not available"):
        _job(src, mapping, upload_files=True).plan()


def test_an_edited_file_against_its_journal_is_refused_with_the_way_out(tmp_path):
    src, mapping = _history(tmp_path, rows=300, conversations=20)
    first = _job(src, mapping).run()
    assert first.summary.counts["sent"] > 0
    with src.open("a", encoding="utf-8") as fh:
        fh.write("wa-0000001;000000001;Иван Петров;+79160000001;client;01.03.2025 10:00:00;new row;\n")
    with pytest.raises(JournalMismatchError, match="another version of this file"):
        _job(src, mapping).check_journal()


def test_the_cli_plans_a_big_file_on_disk_and_says_so(tmp_path, monkeypatch):
    src, mapping = _history(tmp_path, rows=600, conversations=40)
    monkeypatch.setattr(planstore, "EXAMPLES", 1)  # the store lists one problem of each code
    runner = CliRunner()
    out = runner.invoke(main, ["run", str(src), "--mapping", str(mapping), "--dry-run"])
    assert out.exit_code == 1, out.output  # three invalid rows: exit 1, as for any file
    assert "parts of whole conversations" in out.output
    assert "(error) ×3:" in out.output and "First invalid rows (of 3):" in out.output  # exact counts
    assert "Plan: 600 rows" in out.output and "Dry run: nothing was sent." in out.output
    assert planstore.path_for(src.with_name("big.csv.bulkimport.db")).is_file()
    run = runner.invoke(main, ["run", str(src), "--mapping", str(mapping), "--sandbox",
                               "--time-scale", "500", "--no-progress"])
    assert run.exit_code == 1 and isinstance(run.exception, SystemExit), (run.output, run.exception)
    assert "Plan read back from" in run.output and "big.csv.report.csv" in run.output
    assert "Resume (sends the pending rows)" not in run.output
    refused = runner.invoke(main, ["run", str(src), "--mapping", str(mapping), "--sandbox",
                                   "--update-changed"])
    assert refused.exit_code == 2 and "--update-changed is not available" in refused.output
    assert "Traceback" not in refused.output


def test_verify_and_undo_read_a_stored_runs_journal_alone(tmp_path):
    src, mapping = _history(tmp_path, rows=400, conversations=25)
    result = _job(src, mapping).run()
    sent = result.summary.counts["sent"]
    db = src.with_name("sandbox-big.db")
    runner = CliRunner()
    checked = runner.invoke(main, ["verify", str(result.journal), "--sandbox-db", str(db)])
    assert checked.exit_code == 0, checked.output
    assert f"sent {sent}, found {sent}, missing 0, unexpected 0" in checked.output
    undone = runner.invoke(main, ["undo", str(result.journal), "--sandbox-db", str(db), "--yes"])
    assert undone.exit_code == 0, undone.output
    with Journal.open(result.journal) as journal:
        assert dict(journal.query("SELECT status, COUNT(*) FROM rows GROUP BY status")) == {
            "deleted": sent, "invalid": 3}
    assert f"Deleted {sent} messages" in undone.output
    with Sandbox(db=db) as sb:
        assert sb.store.counts()["deleted_messages"] == sent == sb.store.counts()["messages"]


def test_the_identities_read_from_the_plans_columns_are_those_of_the_items(tmp_path):
    from bulkimport.after import identities
    from bulkimport.journal import row_key
    from bulkimport.mapping import Mapping

    src, mapping = _history(tmp_path, rows=600, conversations=30)
    frame = load(src).frame
    frame.loc[frame.index[:40:3], "Text"] = None  # messages with files only, and no text at all
    plan = build_plan(frame, Mapping.load(mapping))
    slow = [
        (row_key(rid), ci, seq, identities._id(item, "chat"), identities._id(item, "user"),
         identities._id(item, "message"), identities.digest(item), identities._date(item),
         identities.body(item))
        for ci, conv in enumerate(plan.conversations)
        for seq, (rid, item) in enumerate(zip(conv.rows, conv.messages, strict=True))
    ]
    fast = identities.planned(plan)
    assert fast == slow
    assert any(item["message"].get("files") for c in plan.conversations for item in c.messages)
    assert any("user_id" in item["message"] for c in plan.conversations for item in c.messages)


def test_a_stored_run_the_portal_stops_says_why_each_row_is_still_pending(tmp_path):
    from bulkimport import connector as conn
    from bulkimport.sending.sender import Sender

    src, mapping = _history(tmp_path, rows=300, conversations=20)
    plan = _job(src, mapping).plan()
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        target = conn.sandbox_target(sb)
        conn.setup(target.client, 1, "bulkimport")
        sb.faults.add("NO_AUTH_FOUND", methods=["batch", "imconnector.send.messages"])
        outcome = Sender(plan, client=target.client, clock=target.clock, line=1, connector="bulkimport",
                         state=tmp_path / "s.db").run()
    assert outcome.frame is None and outcome.summary.stopped == "NO_AUTH_FOUND"
    with Journal.open(tmp_path / "s.db") as journal:
        got = dict(journal.query("SELECT code, COUNT(*) FROM rows WHERE status = 'pending' GROUP BY code"))
    assert got == {"not-reached": plan.counts["valid"]}


def test_validate_and_mapping_of_a_big_file_count_every_row_on_disk(tmp_path, monkeypatch):
    src, mapping = _history(tmp_path, rows=300, conversations=20)
    monkeypatch.setattr(planstore, "EXAMPLES", 1)  # in memory one problem of each code …
    problems = tmp_path / "problems.csv"
    args = ["validate", str(src), "--mapping", str(mapping), "--problems", str(problems)]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 1, out.output
    assert "300 rows: 297 valid, 3 invalid." in out.output  # every row, not the first 10,000
    assert "(error) ×3:" in out.output and "Every problem, row by row (4):" in out.output
    listed = pd.read_csv(problems, dtype=str, encoding="utf-8-sig")
    bad = listed.loc[listed["code"] == "bad-date", "row"].astype(int)
    assert sorted(bad) == [7, 102, 292]  # … all of them on disk
    assert list(tmp_path.glob("*.plan"))  # and the plan is kept for the run
    shown = CliRunner().invoke(main, ["mapping", str(src), "--mapping", str(mapping)])
    assert shown.exit_code == 0, shown.output
    assert "client" in shown.output and "Authors (3)" in shown.output
    assert "Plan read back from" in shown.output
    assert not planstore.is_stored(_job(src, mapping, plan_on_disk=False).plan())
    with pytest.raises(ConfigError, match="only a CSV, TSV or TXT file is planned on disk"):
        ImportJob(ROOT / "data_examples" / "history.xlsx", plan_on_disk=True).plan()


def test_a_plan_cut_short_leaves_no_half_plan_and_a_journal_planned_in_memory_is_not_taken(
        tmp_path, monkeypatch):
    src, mapping = _history(tmp_path, rows=300, conversations=20)
    real = bigfile._plan_parts

    def cut(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bigfile, "_plan_parts", cut)
    with pytest.raises(KeyboardInterrupt):
        _job(src, mapping).plan()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["big.csv", "big.csv.bulkimport.db.plan.lock", "big.toml"]  # no .new, no spool
    monkeypatch.setattr(bigfile, "_plan_parts", real)
    first = _job(src, mapping, plan_on_disk=False).run()  # an earlier run, in memory
    assert first.summary.counts["sent"] == 297
    again = _job(src, mapping)  # the same rows planned on disk: the journal is taken, nothing resent
    again.check_journal()
    assert again.run().summary.sent_this_run == 0
    with Sandbox(db=src.with_name("sandbox-big.db")) as sb:
        assert len(sb.store.messages()) == 297 and sb.store.duplicates().empty
    with src.open("a", encoding="utf-8") as fh:  # now edited: the in-memory way is the way out
        fh.write("wa-0000001;000000001;Иван Петров;+79160000001;client;01.03.2025 10:00:00;new row;\n")
    with pytest.raises(JournalMismatchError, match="BULKIMPORT_STORED_PLAN_ROWS=603 bulkimport run"):
        _job(src, mapping).check_journal()


def test_the_mappings_own_upload_and_skip_options_are_refused_too(tmp_path):
    src, _ = _history(tmp_path, rows=300, conversations=20)
    for option, value in (("files_upload", "disk"), ("missing_files", "skip")):
        given = tmp_path / f"{option}.toml"
        given.write_text(tomli_w.dumps({**BIG_MAPPING, "options": {**BIG_MAPPING["options"], option: value}}),
                         encoding="utf-8")
        with pytest.raises(ConfigError, match=f'{option} = "{value}" .the mapping.s. is not available'):
            _job(src, given).plan()


def test_a_stopped_stored_run_notes_its_queued_rows_not_reached_even_if_once_held(tmp_path):
    from bulkimport import connector as conn
    from bulkimport.portal.urls import rest_url
    from bulkimport.sending.sender import Sender

    src, mapping = _history(tmp_path, rows=300, conversations=20)
    plan = _job(src, mapping).plan()
    state = tmp_path / "s.db"
    first = next(iter(plan.conversations))
    with Sandbox(db=tmp_path / "portal.db", time_scale=200.0) as sb:
        target = conn.sandbox_target(sb)
        conn.setup(target.client, 1, "bulkimport")
        with Journal.bind(state, portal=rest_url(target.client.portal), line="1", connector="bulkimport",
                          fingerprint=plan.fingerprint) as journal:
            plan.journal_rows(journal)  # the first row failed (held), the rest of its chat behind it
            journal.execute("UPDATE rows SET status = 'failed', hold = 1, code = 'x' "
                            "WHERE conv = 0 AND seq = 0")
            journal.execute("UPDATE rows SET code = 'held-after-failure' WHERE conv = 0 AND seq > 0")
        sb.faults.add("NO_AUTH_FOUND", methods=["batch", "imconnector.send.messages"])
        Sender(plan, client=target.client, clock=target.clock, line=1, connector="bulkimport", state=state,
               retry_failed=True).run()
    with Journal.open(state) as journal:
        codes = dict(journal.query("SELECT code, COUNT(*) FROM rows WHERE status = 'pending' GROUP BY code"))
    assert codes == {"not-reached": plan.counts["valid"] - 1} and len(first) > 1


def test_status_rows_of_a_status_no_row_has_is_said_not_a_traceback(tmp_path):
    src, mapping = _history(tmp_path, rows=200, conversations=10)
    result = _job(src, mapping).run()
    for status, said in (("unknown", "No rows unknown."), ("failed", "No rows failed.")):
        out = CliRunner().invoke(main, ["status", str(result.journal), "--rows", status])
        assert out.exit_code == 0 and out.exception is None, out.output
        assert said in out.output
    out = CliRunner().invoke(main, ["status", str(result.journal), "--rows", "invalid"])
    assert out.exit_code == 0 and "bad-date" in out.output
