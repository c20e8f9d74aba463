"""The SQLite journal: binding, write-ahead marks, transactions, recovery, summary, run lock."""

from __future__ import annotations

import json
import sqlite3

import pytest

from bulkimport.errors import ConfigError, JournalMismatchError
from bulkimport.journal import Journal, RowUpdate, default_path, row_key

BIND = {"portal": "https://acme.bitrix24.ru/rest/", "line": "1", "connector": "hist", "fingerprint": "fp"}


def make(tmp_path, **over: str) -> Journal:
    j = Journal.bind(tmp_path / "j.db", **{**BIND, **over})
    j.add_rows(
        [(row_key(i), 0, i, "pending", None, None) for i in range(5)]
        + [(row_key(99), None, None, "invalid", "bad-date", "no date")]
    )
    return j


def test_pragmas_wal_and_full(tmp_path):
    j = make(tmp_path)
    assert j._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert j._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_row_keys_are_stable():
    import numpy as np

    assert row_key(np.int64(5)) == row_key(5) == "5"
    assert row_key("a") == '"a"'
    # the int fast path gives what json.dumps gives (journals written before it stay readable)
    for n in (0, -3, 2**70):
        assert row_key(n) == json.dumps(n)
    assert row_key(True) == "true"


def test_binding_mismatches_name_what_changed(tmp_path):
    make(tmp_path).close()
    with pytest.raises(JournalMismatchError, match="fingerprint"):
        Journal.bind(tmp_path / "j.db", **{**BIND, "fingerprint": "other"})
    with pytest.raises(JournalMismatchError, match=r"line '1' \(now '2'\).*--state"):
        Journal.bind(tmp_path / "j.db", **{**BIND, "line": "2"})
    with pytest.raises(JournalMismatchError, match="portal"):
        Journal.bind(tmp_path / "j.db", **{**BIND, "portal": "https://x/rest/"})
    Journal.bind(tmp_path / "j.db", **BIND).close()  # same binding reopens


def test_add_rows_is_idempotent(tmp_path):
    j = make(tmp_path)
    assert j.add_rows([(row_key(i), 0, i, "pending", None, None) for i in range(7)]) == 2
    assert j.counts() == {"pending": 7, "invalid": 1}


def test_inflight_settle_revert_and_recover(tmp_path):
    j = make(tmp_path)
    run = j.start_run(1.0)
    req = j.mark_inflight([row_key(0), row_key(1)], run, 2.0)
    assert j.counts()["inflight"] == 2
    j.settle(
        req,
        [
            RowUpdate(row_key(0), "sent", session_id="7", sent_at=3.0),
            RowUpdate(row_key(1), "failed", "item-rejected", "no", hold=0),
        ],
        3.0,
        "answered",
    )
    rows = j.rows().set_index("rid")
    assert rows.loc["0", "status"] == "sent" and rows.loc["0", "session_id"] == "7"
    assert rows.loc["0", "attempts"] == 1
    # refused before execution: back to the previous state, attempt not counted
    req2 = j.mark_inflight([row_key(1), row_key(2)], run, 4.0)
    j.revert(req2, [row_key(1), row_key(2)], 5.0, "refused")
    rows = j.rows().set_index("rid")
    assert rows.loc["1", "status"] == "failed" and rows.loc["1", "code"] == "item-rejected"
    assert rows.loc["2", "status"] == "pending" and rows.loc["2", "attempts"] == 0
    # a crash with rows in flight: the next open makes them unknown
    j.mark_inflight([row_key(3)], run, 6.0)
    j.close()
    j2 = Journal.bind(tmp_path / "j.db", **BIND)
    assert j2.recover() == 1
    r = j2.rows().set_index("rid").loc["3"]
    assert r["status"] == "unknown" and r["code"] == "interrupted" and r["hold"] == 1


def test_a_failed_transaction_leaves_nothing_half_done(tmp_path):
    j = make(tmp_path)
    run = j.start_run(0.0)
    req = j.mark_inflight([row_key(0), row_key(1)], run, 0.0)

    class Boom(Exception):
        pass

    def half_done() -> None:
        with j._tx() as cur:
            Journal._settle(cur, [RowUpdate(row_key(0), "sent")])
            raise Boom

    with pytest.raises(Boom):
        half_done()
    assert j.counts()["inflight"] == 2  # rolled back as a whole
    j.settle(req, [RowUpdate(row_key(0), "sent"), RowUpdate(row_key(1), "sent")], 1.0, "ok")
    assert j.counts()["sent"] == 2


def test_changes_are_durable_for_other_connections(tmp_path):
    j = make(tmp_path)
    j.mark_inflight([row_key(4)], j.start_run(0.0), 0.0)
    other = sqlite3.connect(tmp_path / "j.db")
    assert other.execute("SELECT status FROM rows WHERE rid='4'").fetchone()[0] == "inflight"
    other.close()


def test_summary_for_status_command(tmp_path):
    j = make(tmp_path)
    run = j.start_run(0.0)
    req = j.mark_inflight([row_key(0)], run, 0.0)
    j.settle(req, [RowUpdate(row_key(0), "sent")], 1.0, "ok")
    j.note_pending([(row_key(4), "held-after-unknown", "held")])
    j.finish_run(run, 2.0, None, False, 1)
    j.close()
    s = Journal.open(tmp_path / "j.db").summary()
    assert s["counts"] == {"sent": 1, "failed": 0, "invalid": 1, "unknown": 0, "pending": 4}
    assert s["line"] == "1" and s["connector"] == "hist" and s["total"] == 6
    assert ("held-after-unknown", 1) in s["top_codes"] and ("bad-date", 1) in s["top_codes"]
    assert s["runs"][0]["sent"] == 1 and not s["complete"]


def test_open_missing_or_foreign(tmp_path):
    with pytest.raises(ConfigError, match="no journal"):
        Journal.open(tmp_path / "nope.db")
    bad = tmp_path / "bad.db"
    bad.write_text("not sqlite at all" * 100)
    with pytest.raises(ConfigError):
        Journal.open(bad)


def test_run_lock_excludes_a_second_run(tmp_path):
    j = make(tmp_path)
    j.lock()
    j2 = Journal.bind(tmp_path / "j.db", **BIND)
    with pytest.raises(ConfigError, match="another bulkimport run"):
        j2.lock()
    j.close()
    j2.lock()
    j2.close()


def test_default_path():
    assert str(default_path("/d/history.xlsx", None)) == "/d/history.xlsx.bulkimport.db"
    assert str(default_path("/d/history.xlsx", "/s/x.db")) == "/s/x.db"
    with pytest.raises(ConfigError, match="--state"):
        default_path(None, None)


def test_no_index_on_status(tmp_path):
    # bench/client_overhead.py: the status index cost ~0.5 CPU s per 100,000 rows sent (two status
    # changes per row); journals made before are fixed when reopened
    j = make(tmp_path)
    j._conn.execute("CREATE INDEX rows_status ON rows (status)")
    j.close()
    j = Journal.bind(tmp_path / "j.db", **BIND)
    names = {r[0] for r in j._conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "rows_status" not in names and "rows_conv" in names
    assert j.recover() == 0
    j.close()


def test_resolve_unknown_for_some_rows(tmp_path):
    j = make(tmp_path)
    run = j.start_run(0.0)
    req = j.mark_inflight([row_key(0), row_key(1), row_key(2)], run, 0.0)
    j.settle(req, [RowUpdate(row_key(i), "unknown", "timeout", "x", hold=1) for i in range(3)], 1.0, "amb")
    assert j.resolve_unknown(arrived=False, rows=[0]) == 1
    assert j.resolve_unknown(arrived=True, rows=[1, 4]) == 1  # 4 is pending: untouched
    rows = j.rows().set_index("rid")
    assert rows.loc["0", "status"] == "pending" and rows.loc["0", "hold"] == 0
    assert rows.loc["1", "status"] == "sent" and rows.loc["1", "code"] == "confirmed-arrived"
    assert rows.loc["2", "status"] == "unknown"
    assert j.resolve_unknown(arrived=True) == 1


def test_settle_with_revert_is_one_transaction(tmp_path):
    j = make(tmp_path)
    req = j.mark_inflight([row_key(0), row_key(1)], j.start_run(0.0), 0.0)

    class Boom(Exception):
        pass

    original = Journal._settle

    def crash(cur, updates):  # the process dies after the revert statement, before COMMIT
        raise Boom

    Journal._settle = staticmethod(crash)  # type: ignore[method-assign]
    try:
        with pytest.raises(Boom):
            j.settle(req, [RowUpdate(row_key(0), "sent")], 1.0, "answered", revert=[row_key(1)])
    finally:
        Journal._settle = staticmethod(original)  # type: ignore[method-assign]
    assert j.counts()["inflight"] == 2  # neither the revert nor the settle was committed
    j.settle(req, [RowUpdate(row_key(0), "sent")], 1.0, "answered", revert=[row_key(1)])
    rows = j.rows().set_index("rid")
    assert rows.loc[row_key(0), "status"] == "sent"
    assert rows.loc[row_key(1), "status"] == "pending" and rows.loc[row_key(1), "attempts"] == 0


def test_resolve_unknown_includes_rows_a_killed_run_left_in_flight(tmp_path):
    """``status`` counts rows left ``inflight`` by a killed run as unknown; resolving must too."""
    j = make(tmp_path)
    j.mark_inflight([row_key(0), row_key(1)], j.start_run(0.0), 0.0)
    j.close()  # the run was killed: no recover() yet
    with Journal.open(tmp_path / "j.db") as j2:
        assert j2.summary()["counts"]["unknown"] == 2
        assert j2.resolve_unknown(arrived=True, rows=[0]) == 1
        assert j2.resolve_unknown(arrived=False) == 1
        rows = j2.rows().set_index("rid")
    assert rows.loc[row_key(0), "status"] == "sent"
    assert rows.loc[row_key(1), "status"] == "pending"


def test_resolve_unknown_refuses_while_a_run_holds_the_journal(tmp_path):
    j = make(tmp_path)
    j.lock()
    j.mark_inflight([row_key(0)], j.start_run(0.0), 0.0)
    with Journal.open(tmp_path / "j.db") as other, pytest.raises(ConfigError, match="another bulkimport run"):
        other.resolve_unknown(arrived=True)
    assert j.counts()["inflight"] == 1
    j.close()


def test_opening_for_inspection_never_changes_the_file(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError):
        Journal.open(empty)
    assert empty.read_bytes() == b""
    # a foreign SQLite file (e.g. the sandbox's store) keeps its journal mode and content
    foreign = tmp_path / "sandbox.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    con.commit()
    con.close()
    before = foreign.read_bytes()
    with pytest.raises(ConfigError):
        Journal.open(foreign)
    assert foreign.read_bytes() == before
    con = sqlite3.connect(foreign)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    con.close()


def test_status_reads_a_journal_without_writing(tmp_path):
    j = make(tmp_path)
    j.mark_inflight([row_key(0)], j.start_run(0.0), 0.0)
    j.close()
    path = tmp_path / "j.db"
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=DELETE")  # as if copied elsewhere: no WAL
    con.close()
    before = path.read_bytes()
    with Journal.open(path) as j2:
        assert j2.summary()["counts"]["unknown"] == 1
    assert path.read_bytes() == before
    with Journal.open(path) as j3:  # a write still works: it reopens the file writable
        assert j3.resolve_unknown(arrived=False) == 1


def test_columns_and_rows_without_pending(tmp_path):
    j = Journal.bind(tmp_path / "c.db", **BIND)
    j.add_rows([("2", 0, 0, "pending", None, None), ("3", 0, 1, "pending", None, None),
                ("4", None, None, "invalid", "missing-text", "no text")])
    req = j.mark_inflight(["2"], j.start_run(1.0), 2.0)
    j.settle(req, [RowUpdate("2", "sent", message_id="77", sent_at=3.0)], 3.0, "answered")
    rids, cols = j.columns(["status", "message_id", "attempts"])
    assert rids == ["2", "3", "4"]
    assert cols == {"status": ("sent", "pending", "invalid"), "message_id": ("77", None, None),
                    "attempts": (1, 0, 0)}
    assert sorted(j.rows(skip_pending=True)["rid"]) == ["2", "4"] and len(j.rows()) == 3
    with pytest.raises(ValueError, match="no journal column 'rid; DROP TABLE rows'"):
        j.columns(["rid; DROP TABLE rows"])
    with pytest.raises(ValueError, match="no columns"):
        j.columns([])
    empty = Journal.bind(tmp_path / "e.db", **BIND)
    assert empty.columns(["status"]) == ([], {"status": ()})
