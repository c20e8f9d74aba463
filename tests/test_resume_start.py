"""A resumed run of an unchanged file starts without re-writing every row (at 10M rows the rows and
their ids cost minutes and gigabytes to journal again), and an edited file is journalled again."""

from __future__ import annotations

import csv
from pathlib import Path

import bulkimport
from bulkimport.after import identities
from bulkimport.journal import Journal
from bulkimport.mapping import Mapping
from bulkimport.sending.sender import _journal_rows_once

MAPPING = {"columns": {"chat.id": "Chat", "user.id": "Client", "message.date": "Date",
                       "message.text": "Text"}, "options": {"timezone": "UTC"}}


def _plan(tmp_path: Path, texts: list[str]):
    path = tmp_path / "in.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Chat", "Client", "Date", "Text"])
        for i, text in enumerate(texts):
            w.writerow([f"c{i % 2}", f"u{i % 2}", f"2025-01-01 10:{i:02d}", text])
    return bulkimport.plan(bulkimport.read(path), Mapping.from_dict(MAPPING))


def _bind(tmp_path: Path, plan) -> Journal:
    return Journal.bind(tmp_path / "j.db", portal="https://x.example/rest/", line=1, connector="c",
                        fingerprint=plan.fingerprint, source="in.csv", rebind=True)


def _rows(plan):
    return [(str(r), ci, seq, "pending", None, None)
            for ci, c in enumerate(plan.conversations) for seq, r in enumerate(c.rows)]


def test_row_ids_are_recorded_once_per_plan_and_again_after_an_edit(tmp_path):
    plan = _plan(tmp_path, ["a", "b", "c", "d"])
    with _bind(tmp_path, plan) as journal:
        assert identities.record(journal, plan) == 4
        assert journal.meta()["ids_adopted"] == "0"
        assert identities.record(journal, plan) == 0  # the same plan: nothing written again
        # the journal bound to another plan (what an edit does): every row is recorded again
        journal.execute("UPDATE meta SET value = 'other' WHERE key = 'fingerprint'")
        assert identities.record(journal, plan) == 4


def test_a_journal_whose_ids_differ_from_the_files_is_always_adopted(tmp_path):
    plan = _plan(tmp_path, ["a", "b"])
    with _bind(tmp_path, plan) as journal:
        identities.record(journal, plan)
        journal.execute("UPDATE row_ids SET mid = 'sent-as-this' WHERE seq = 0 AND conv = 0")
        journal.execute("UPDATE meta SET value = 'other' WHERE key = 'ids_fingerprint'")
        assert identities.record(journal, plan) == 2
        assert journal.meta()["ids_adopted"] == "1"
        assert plan.conversations[0].messages[0]["message"]["id"] == "sent-as-this"
        again = _plan(tmp_path, ["a", "b"])  # a new start: the file's ids, the journal's kept
        assert identities.record(journal, again) == 2  # never skipped while an id was adopted
        assert again.conversations[0].messages[0]["message"]["id"] == "sent-as-this"


def test_the_plans_rows_are_journalled_once_and_a_new_invalid_row_still_is(tmp_path):
    plan = _plan(tmp_path, ["a", "b"])
    calls: list[int] = []

    def rows():
        calls.append(1)
        return _rows(plan)

    with _bind(tmp_path, plan) as journal:
        _journal_rows_once(journal, rows, {})
        _journal_rows_once(journal, rows, {})
        assert len(calls) == 1
        _journal_rows_once(journal, lambda: [("9", None, None, "invalid", "bad-date", "x")],
                           {"9": ("bad-date", "x")})
        assert journal.counts() == {"pending": 2, "invalid": 1}


def test_a_job_validates_its_input_once_for_the_authors_table_validate_and_the_plan(tmp_path, monkeypatch):
    """Each validation pass costs seconds per million rows: the CLI's authors table, validate's
    problems and the plan share one (a run did it twice, start-up at scale paid for both)."""
    from bulkimport import planning, validation
    from bulkimport.job import ImportJob, prepared_of

    _plan(tmp_path, ["a", "b", "c"])  # writes in.csv
    mapping = tmp_path / "m.toml"
    Mapping.from_dict(MAPPING).save(mapping)
    calls: list[int] = []
    real = validation.prepare

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(validation, "prepare", counted)
    monkeypatch.setattr(planning, "prepare", counted)
    job = ImportJob(tmp_path / "in.csv", mapping=mapping, sandbox=True, progress=False)
    frame, m = job.load()
    validation.authors(frame, m, prepared=prepared_of(job))
    assert job.failures().empty
    assert job.plan().counts["valid"] == 3
    assert len(calls) == 1
