"""Scale of one import on one machine (issue #19): prepare, memory, start, resume, Ctrl-C, journal, report.

Usage::

    python bench/scale.py                              # 1,000,000 and 3,000,000 rows
    python bench/scale.py --rows 1000000               # one size
    python bench/scale.py --rows 10000000 --skip-xlsx  # the goal size (needs ~10 GiB today)
    python bench/scale.py --report-only --journal-rows 10000000   # only the report writers

For each size a CSV history is generated (``data_examples/generate.py`` ``big_csv``, the benchmark
mapping ``BIG_MAPPING``) and the real CLI runs in a subprocess against a sandbox portal in this
process (real clock, light server costs), the way a user runs it:

* **prepare**: ``bulkimport run FILE --dry-run`` (read → map → validate → plan), wall seconds and
  the child's peak memory (VmHWM, polled);
* **first request**: ``bulkimport run FILE --portal …`` until the sandbox has stored its first
  message (the first send request answered), and its peak memory while sending;
* **Ctrl-C → exit**: one SIGINT a few seconds into sending; seconds to the process's end, and from
  the last answer to the end (the first Ctrl-C waits for the answers in flight);
* **resume**: the same command again until its first new message is stored, then Ctrl-C again;
* **journal**: the SQLite file's size after the two runs;
* **report**: ``bulkimport report JOURNAL`` (CSV streamed from the journal); and, with the
  writers side by side, the frame report of ``write_report`` as xlsx (openpyxl write-only, on a
  slice, scaled) and as CSV, and the journal report of a synthetic journal of ``--journal-rows``.

Prints figures only; never asserts. The goals (issue #19) are printed beside them.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, header, hwm_mib

sys.path.insert(0, str(ROOT / "data_examples"))

#: Server seconds per call and per message of the sandbox: requests take a fraction of a second.
COSTS = {"cost_per_call": 0.05, "cost_per_message": 0.002}


def _env(portal: Any, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BITRIX24_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(
        BITRIX24_CLIENT_ID=portal.client_id,
        BITRIX24_CLIENT_SECRET=portal.client_secret,
        BITRIX24_ACCESS_TOKEN=portal.access_token,
        BITRIX24_REFRESH_TOKEN=portal.refresh_token,
        BITRIX24_OAUTH_URL=portal.oauth_url,
        BITRIX24_TOKEN_FILE=str(tmp / "tokens.json"),
    )
    return env


def _register(portal: Any) -> None:
    """The CLI's default connector registered and active on line 1 (what `bulkimport setup` does)."""
    import requests

    icon = {"DATA_IMAGE": "data:image/svg+xml;charset=US-ASCII,%3Csvg%2F%3E"}
    for method, params in (
        ("imconnector.register", {"ID": "bulkimport", "NAME": "History", "ICON": icon,
                                  "PLACEMENT_HANDLER": "https://example.invalid/h"}),
        ("imconnector.activate", {"CONNECTOR": "bulkimport", "LINE": 1, "ACTIVE": 1}),
    ):
        requests.post(portal.rest_url + method, json={**params, "auth": portal.access_token}, timeout=30)


def _watch(proc: subprocess.Popen[bytes], until: Any, limit: float) -> tuple[float | None, float]:
    """Poll until ``until()`` is true (→ seconds since start) or the process ends; peak memory."""
    t0, peak = time.monotonic(), 0.0
    while time.monotonic() - t0 < limit:
        hwm = hwm_mib(proc.pid)
        peak = max(peak, hwm or 0.0)
        if until():
            return time.monotonic() - t0, peak
        if proc.poll() is not None:
            return None, peak
        time.sleep(0.05)
    return None, peak


def _interrupt(proc: subprocess.Popen[bytes], portal: Any, peak: float) -> dict[str, float]:
    """SIGINT once; seconds to exit, seconds from the last stored message to exit, peak memory."""
    stored = lambda: len(portal.store.messages())  # noqa: E731
    proc.send_signal(signal.SIGINT)
    t_int = time.monotonic()
    last, last_change = stored(), t_int
    while proc.poll() is None and time.monotonic() - t_int < 600:
        peak = max(peak, hwm_mib(proc.pid) or 0.0)
        now = stored()
        if now != last:
            last, last_change = now, time.monotonic()
        time.sleep(0.05)
    t_exit = time.monotonic()
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    return {"exit": t_exit - t_int, "after_last_answer": t_exit - last_change, "peak": peak,
            "code": float(proc.returncode)}


def _run_cli(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def bench_size(rows: int, tmp: Path, sending: float, prepare_only: bool = False) -> None:
    """Every figure for one generated size."""
    from generate import BIG_MAPPING, big_csv

    from bulkimport.mapping import Mapping
    from bulkimport.sandbox import Sandbox

    source, mapping = tmp / f"big-{rows}.csv", tmp / "big.toml"
    t = time.perf_counter()
    big_csv(source, rows)
    Mapping.from_dict(BIG_MAPPING).save(mapping)
    print(f"\n{rows:,} rows ({source.stat().st_size / 2**20:.0f} MiB CSV, generated in "
          f"{time.perf_counter() - t:.0f} s)")
    cli = [sys.executable, "-m", "bulkimport", "run", str(source), "--mapping", str(mapping), "--no-progress"]
    state = tmp / f"journal-{rows}.db"
    t = time.monotonic()
    # the dry run beside the journal of the run: a stored plan (a big CSV) is read back by the run
    dry = _run_cli([*cli, "--dry-run", "--state", str(state)], dict(os.environ, PYTHONPATH=str(ROOT)))
    _, dry_peak = _watch(dry, lambda: False, 3600)
    dry.wait()
    print(f"  prepare (dry-run, offline)      : {time.monotonic() - t:7.1f} s   peak {dry_peak:6.0f} MiB")
    stored = state.with_name(state.name + ".plan")
    if stored.is_file():
        print(f"  stored plan (planned on disk)   : {stored.stat().st_size / 2**20:7.0f} MiB "
              f"({stored.stat().st_size / rows:.0f} bytes per row)")
    if prepare_only:
        return
    with Sandbox(time_scale=1.0, seed=1, **COSTS) as portal:
        _register(portal)
        env = _env(portal, tmp)
        args = [*cli, "--portal", portal.url, "--line", "1", "--yes", "--state", str(state),
                "--report", str(tmp / f"report-{rows}.csv")]
        for label in ("first run", "resume"):
            before = len(portal.store.messages())
            proc = _run_cli(args, env)
            first, peak = _watch(proc, lambda b=before: len(portal.store.messages()) > b, 3600)
            if first is None:
                print(f"  {label}: ended before its first request: {proc.stderr.read()[-500:]!r}")
                return
            time.sleep(sending)
            stop = _interrupt(proc, portal, peak)
            print(f"  {label:<9} first request answered: {first:7.1f} s   peak {stop['peak']:6.0f} MiB   "
                  f"Ctrl-C → exit {stop['exit']:5.1f} s ({stop['after_last_answer']:4.1f} s after the last "
                  f"answer, exit {stop['code']:.0f})")
        unknown = _count(state, "unknown")
    size = sum(p.stat().st_size for p in tmp.glob(state.name + "*") if p.is_file() and p != stored)
    print(f"  journal                         : {size / 2**20:7.0f} MiB ({size / rows:.0f} bytes per row), "
          f"{unknown} rows unknown after two Ctrl-C")
    t = time.monotonic()
    subprocess.run([sys.executable, "-m", "bulkimport", "report", str(state)], cwd=ROOT, check=True,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True)
    print(f"  bulkimport report JOURNAL (CSV) : {time.monotonic() - t:7.1f} s")


def _count(state: Path, status: str) -> int:
    import sqlite3

    con = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return int(con.execute("SELECT COUNT(*) FROM rows WHERE status = ?", (status,)).fetchone()[0])
    finally:
        con.close()


def _result_frame(rows: int) -> Any:
    """A per-row result frame shaped like a run's (input columns + status columns), half sent."""
    import numpy as np
    import pandas as pd
    from generate import big_csv

    path = Path(tempfile.mkstemp(suffix=".csv")[1])
    try:
        frame = pd.read_csv(big_csv(path, rows), sep=";", dtype=str, keep_default_na=False)
    finally:
        path.unlink()
    frame.index = pd.RangeIndex(2, 2 + rows, name="row")
    sent = np.arange(rows) % 2 == 0
    frame["import_status"] = np.where(sent, "sent", "pending")
    frame["import_error_code"] = np.where(sent, None, "not-reached")
    frame["import_error"] = np.where(sent, None, "the run was interrupted before this row was sent")
    frame["import_attempts"] = sent.astype("int64")
    frame["import_message_id"] = np.where(sent, pd.Series(np.arange(rows)).astype(str), None)
    frame["b24_chat_id"] = np.where(sent, "1767", None)
    frame["sent_at"] = pd.to_datetime(np.where(sent, 1_740_000_000.0, np.nan), unit="s", utc=True)
    return frame


def _journal(path: Path, rows: int) -> None:
    """A synthetic journal of ``rows`` rows (20 per conversation), half settled sent with ids."""
    from bulkimport.journal import Journal

    journal = Journal.bind(path, portal="https://bench.example/rest/", line="1", connector="bulkimport",
                           fingerprint="bench")
    step = 500_000
    for start in range(0, rows, step):
        journal.add_rows((str(i + 2), i // 20, i % 20, "pending", None, None)
                         for i in range(start, min(rows, start + step)))
    journal.close()
    import sqlite3

    con = sqlite3.connect(path)
    con.execute("UPDATE rows SET status='sent', attempts=1, message_id=rid, chat_id='1767', "
                "sent_at=1740000000.0 WHERE conv % 2 = 0")
    con.commit()
    con.close()


def bench_reports(frame_rows: int, journal_rows: int, tmp: Path, xlsx: bool) -> None:
    """The report writers side by side (issue #19 goal: 10M rows of per-row detail in ≤ 60 s)."""
    from bulkimport import reporting

    print("\nReport writers (goal: per-row detail of 10,000,000 rows in <= 60 s)")
    frame = _result_frame(frame_rows)
    t = time.perf_counter()
    reporting.write_report(frame, tmp / "frame.csv")
    csv_s = time.perf_counter() - t
    print(f"  frame → CSV (write_report)      : {csv_s:7.1f} s for {frame_rows:,} rows "
          f"→ {csv_s * 10_000_000 / frame_rows:5.0f} s per 10M")
    if xlsx:
        part = min(frame_rows, 100_000)
        t = time.perf_counter()
        reporting.write_report(frame.head(part), tmp / "frame.xlsx")
        x_s = time.perf_counter() - t
        print(f"  frame → xlsx (openpyxl, w/o)    : {x_s:7.1f} s for {part:,} rows "
              f"→ {x_s * 1_000_000 / part:5.0f} s per 1M (scaled; a sheet holds 1,048,575)")
    del frame
    path = tmp / "synthetic.db"
    t = time.perf_counter()
    _journal(path, journal_rows)
    built = time.perf_counter() - t
    t = time.perf_counter()
    _, n = reporting.write_journal_report(path, tmp / "synthetic.report.csv")
    j_s = time.perf_counter() - t
    mib = (tmp / "synthetic.report.csv").stat().st_size / 2**20
    print(f"  journal → CSV (bulkimport report): {j_s:6.1f} s for {n:,} rows ({mib:.0f} MiB; journal "
          f"built in {built:.0f} s, {path.stat().st_size / 2**20:.0f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000])
    ap.add_argument("--sending", type=float, default=3.0, help="seconds of sending before each Ctrl-C")
    ap.add_argument("--frame-rows", type=int, default=1_000_000, help="rows of the frame report timing")
    ap.add_argument("--journal-rows", type=int, default=10_000_000, help="rows of the journal report timing")
    ap.add_argument("--skip-xlsx", action="store_true", help="do not time the openpyxl report")
    ap.add_argument("--report-only", action="store_true", help="only the report writers")
    ap.add_argument("--prepare-only", action="store_true", help="per size only the dry-run (no sending)")
    ap.add_argument("--skip-reports", action="store_true", help="not the report writers side by side")
    ap.add_argument("--stored-rows", type=int, default=None,
                    help="BULKIMPORT_STORED_PLAN_ROWS for the runs (default: bulkimport's, 2,000,000)")
    args = ap.parse_args()
    if args.stored_rows is not None:
        os.environ["BULKIMPORT_STORED_PLAN_ROWS"] = str(args.stored_rows)
    header("bench/scale.py — one import at scale (issue #19)")
    print("Goals: 10M rows in <= 2 GiB peak; first request <= 60 s (10M); resume <= 30 s to its first "
          "request (10M);\n       Ctrl-C: no row unknown, exit <= 5 s after the last answer; "
          "10M rows of per-row report <= 60 s")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.report_only:
            for rows in args.rows:
                bench_size(rows, Path(tmp), args.sending, args.prepare_only)
        if not args.skip_reports:
            bench_reports(args.frame_rows, args.journal_rows, Path(tmp), not args.skip_xlsx)


if __name__ == "__main__":
    main()
