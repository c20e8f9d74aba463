"""A stored plan against what a review of it found (session 6): the date order decided by the whole
file, a resume of the same file taken whatever planned it before (in memory, another version,
options that only state what was detected), and one planner at a time. Each test failed on the
reviewed change and states what it now keeps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bulkimport import bigfile, planstore
from bulkimport.job import ImportJob
from bulkimport.mapping import Mapping
from bulkimport.planning import plan as build_plan
from bulkimport.sources import load

MAPPING = """\
[columns]
"chat.id" = "Chat"
"user.id" = "Client"
"message.date" = "Date"
"message.text" = "Text"

[options]
timezone = "UTC"
"""


@pytest.fixture(autouse=True)
def _small_parts(monkeypatch, clean_env):
    monkeypatch.setenv("BULKIMPORT_STORED_PLAN_ROWS", "100")
    monkeypatch.setattr(bigfile, "PART_ROWS", 400)
    monkeypatch.setattr(bigfile, "CHUNK_ROWS", 250)


def _slashed_history(tmp_path: Path, convs: int = 60, per: int = 20) -> tuple[Path, Path]:
    """D/M/Y dates with day <= 12 everywhere, except one conversation whose days are past 12:
    the file as a whole proves the dates day-first (no ``dayfirst`` in the mapping)."""
    lines = ["Chat;Client;Date;Text"]
    for c in range(convs):
        for i in range(per):
            day = 25 if c == 0 else 3 + (i % 5)  # 03..07: the day never equals the month (11)
            lines.append(f"chat-{c};user-{c};{day:02d}/11/2024 10:{i:02d};message {c}-{i}")
    src = tmp_path / "big.csv"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mapping = tmp_path / "big.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    return src, mapping


def _job(src: Path, mapping: Path, **options) -> ImportJob:
    options.setdefault("progress", False)
    return ImportJob(src, mapping=mapping, sandbox=True, time_scale=500.0, **options)


def test_the_date_order_is_decided_by_the_whole_file_not_by_each_part(tmp_path):
    src, mapping = _slashed_history(tmp_path)
    whole = build_plan(load(src).frame, Mapping.load(mapping))
    assert whole.counts["invalid"] == 0  # in memory: the file says day-first, every row is valid
    stored = _job(src, mapping).plan()
    assert planstore.is_stored(stored)
    assert stored.counts == whole.counts, stored.store.code_counts()
    assert stored.fingerprint.startswith("stored-v2:")


def test_a_journal_of_an_in_memory_run_of_the_same_file_is_resumed_on_disk(tmp_path, monkeypatch):
    src, mapping = _slashed_history(tmp_path)
    monkeypatch.setenv("BULKIMPORT_STORED_PLAN_ROWS", "100000000")  # planned in memory
    job = _job(src, mapping)
    assert not job.planned_on_disk
    job.run()
    monkeypatch.setenv("BULKIMPORT_STORED_PLAN_ROWS", "100")  # the same file, now planned on disk
    again = _job(src, mapping)
    assert again.planned_on_disk
    again.check_journal()
    assert again.run().summary.sent_this_run == 0


def test_an_upgrade_or_a_stated_delimiter_does_not_refuse_the_resume(tmp_path, monkeypatch):
    src, mapping = _slashed_history(tmp_path)
    first = _job(src, mapping).plan()
    _job(src, mapping).run()
    monkeypatch.setattr(bigfile, "__version__", "99.0.0")  # the cache is made anew …
    upgraded = _job(src, mapping)
    assert upgraded.plan().fingerprint == first.fingerprint  # … and sends the same: the same plan
    upgraded.check_journal()
    _job(src, mapping, delimiter=";").check_journal()


_PLAN_IN_A_PROCESS = """
import os, sys
os.environ["BULKIMPORT_STORED_PLAN_ROWS"] = "1000"
from bulkimport import bigfile
bigfile.PART_ROWS = 40_000
from bulkimport.job import ImportJob
ImportJob(sys.argv[1], mapping=sys.argv[2], sandbox=True, progress=False).plan()
"""


def test_a_second_planner_of_the_same_file_is_refused_and_the_first_plans_every_row(tmp_path):
    import json
    import subprocess
    import sys
    import time

    import tomli_w

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "data_examples"))
    from generate import BIG_MAPPING, big_csv

    rows = 100_000
    src = big_csv(tmp_path / "big.csv", rows, seed=3)
    mapping = tmp_path / "big.toml"
    mapping.write_text(tomli_w.dumps(BIG_MAPPING), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    cmd = [sys.executable, "-c", _PLAN_IN_A_PROCESS, str(src), str(mapping)]
    first = subprocess.Popen(cmd, env=env, cwd=tmp_path, stderr=subprocess.PIPE)
    spool = tmp_path / "big.csv.bulkimport.db.plan.spool"
    deadline = time.monotonic() + 60
    while not (spool.is_dir() and any(spool.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.02)
    second = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, check=False)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err.decode()[-500:]
    # refused while the first plans (or, on a machine fast enough to finish first, read back)
    assert second.returncode == 0 or b"another bulkimport is planning into" in second.stderr, second.stderr
    store = planstore.PlanStore.open(tmp_path / "big.csv.bulkimport.db.plan")
    assert store is not None
    planned = json.loads(store.meta()["counts"])["rows"]
    store.close()
    assert planned == rows  # a complete plan holds every row of the file


def test_planning_while_another_process_holds_the_plan_lock_is_a_one_line_refusal(tmp_path):
    from bulkimport.errors import ConfigError

    src, mapping = _slashed_history(tmp_path)
    job = _job(src, mapping)
    with bigfile._planning(planstore.path_for(Path(str(job.state)))), \
            pytest.raises(ConfigError, match=r"another bulkimport is planning into .* wait for it"):
        job.plan()
    assert planstore.is_stored(_job(src, mapping).plan())  # the lock released: planned
