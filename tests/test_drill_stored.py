"""Drills of a big file planned on disk (bulkimport.bigfile): the kill -9 and Ctrl-C drills of
tests/test_drill_kill_resume.py run again with the stored plan (BULKIMPORT_STORED_PLAN_ROWS=1 makes
their small history "big"), so a real ``bulkimport run`` process killed while sending from a
stored plan resumes from it with every message once, in order, and no row in flight."""

from __future__ import annotations

import signal

import pytest
import test_drill_kill_resume as drill
from drills.kit import report_frame
from test_drill_kill_resume import _drill


@pytest.fixture(autouse=True)
def _stored_plan(monkeypatch):
    monkeypatch.setenv("BULKIMPORT_STORED_PLAN_ROWS", "1")  # the drills' CLI children inherit it
    monkeypatch.setattr(drill, "_statuses", _statuses)


def _statuses(tmp_path, history):
    """The drill's {message id: status}, {message id: code} from a stored run's report: the
    journal's CSV, which names each row by its number, not by the input's columns."""
    rep = report_frame(tmp_path / "report.csv")
    assert len(rep) == len(history.ids)
    mids = [history.by_row[str(r)] for r in rep["row"]]
    return (dict(zip(mids, rep["import_status"], strict=True)),
            dict(zip(mids, rep["import_error_code"], strict=True)))


def test_sigkill_while_sending_from_a_stored_plan_then_resume(tmp_path):
    result = _drill(tmp_path, seed=7, kills=3)
    assert result["landed"] >= 1  # the kills did happen while sending
    assert list(tmp_path.glob("*.plan")), "the drill's runs did plan on disk"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(21, 25))
def test_sigkill_at_random_moments_with_a_stored_plan(tmp_path, seed):
    _drill(tmp_path, seed=seed, kills=3)


def test_ctrl_c_while_sending_from_a_stored_plan_exits_130_and_resumes(tmp_path):
    _drill(tmp_path, seed=107, kills=2, sig=signal.SIGINT)
