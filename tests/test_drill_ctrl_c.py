"""Drill: one Ctrl-C to a real ``bulkimport run`` in the middle of a slow import.

The sandbox runs in the test process on a real clock with a high server cost per message, so each
request is on the wire for a while. The promise (issue #19): the first Ctrl-C launches nothing new,
waits for the answers in flight, journals them and exits 130 within a few seconds of the last
answer — no row ``unknown``, none ``inflight``; the resume sends the rest, every message once.
(The portal is an in-process ``Sandbox`` reached with ``run --portal`` rather than
``run --sandbox``: the drill needs the sandbox's costs and its store to see when the last answer
left; the CLI's run path is the same.)
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from drills.kit import (
    ROOT,
    check_store,
    cli_env,
    journal_statuses,
    register,
    run_args,
    run_cli,
    write_history,
)

from bulkimport.sandbox import Sandbox

#: Server seconds per command and per message: a batch of 50 conversations takes a few seconds.
COSTS = {"cost_per_call": 0.05, "cost_per_message": 0.01}


def _stored(portal: Sandbox) -> int:
    return len(portal.store.messages())


@pytest.mark.slow  # a real-process Ctrl-C drill of ~20 s: run by .ci/run (pytest -m slow)
def test_first_ctrl_c_waits_for_the_answers_in_flight_and_exits_130(tmp_path):
    history = write_history(tmp_path / "history.csv", conversations=200, per_conversation=4)
    with Sandbox(time_scale=1.0, seed=5, **COSTS) as portal:
        register(portal)
        env = cli_env(portal, tmp_path)
        args = run_args(portal, tmp_path / "history.csv", tmp_path, "--max-in-flight", "3")
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None and _stored(portal) < 20:
                time.sleep(0.01)
            proc.send_signal(signal.SIGINT)
            last, last_change = _stored(portal), time.monotonic()
            while proc.poll() is None and time.monotonic() < deadline + 60:
                now = _stored(portal)
                if now != last:
                    last, last_change = now, time.monotonic()
                time.sleep(0.01)
            exited = time.monotonic()
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, out + err
        assert "Traceback" not in err, err
        assert "stopping: waiting for" in err and "Ctrl-C again to exit at once" in err, err
        assert exited - last_change < 5.0, (exited - last_change, err)
        states = journal_statuses(tmp_path / "journal.db")
        counts = {s: list(states.values()).count(s) for s in set(states.values())}
        assert "unknown" not in counts and "inflight" not in counts, counts
        assert counts.get("sent", 0) == _stored(portal) and counts.get("pending", 0) > 0, counts
        assert "Resume with: " in out, out
        final = run_cli(args, env)
        assert final.returncode == 0, final.stdout + final.stderr
        status = journal_statuses(tmp_path / "journal.db")
        assert set(status.values()) == {"sent"}
        by_message = {history.by_row[r]: s for r, s in status.items()}
        copies = check_store(portal, history.want, by_message)
        assert set(copies) == history.ids and set(copies.values()) == {1}
