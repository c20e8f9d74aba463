"""bulkimport's own CPU cost per 100,000 messages sent (encode, journal, bookkeeping).

The sandbox runs in a SUBPROCESS (`python -m bulkimport sandbox --no-limits --cost-per-call 0
--cost-per-message 0`), so its CPU is not counted; the client's governor is given limits that never
bind, so nothing waits. The figure is ``time.process_time()`` of this process around
``Sender.run()`` (plan building is reported separately). Goal: ≤ 5 CPU seconds per 100,000 messages.

Usage: python bench/client_overhead.py [--messages N] [--shape CONVERSATIONSxSIZE ...] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

GOAL = 5.0  # CPU seconds per 100,000 messages


def start_sandbox(tmp: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """`bulkimport sandbox` with zero cost and no limits, in its own process; its credentials."""
    creds = tmp / "sandbox.json"
    cmd = [sys.executable, "-m", "bulkimport", "sandbox", "--no-limits", "--cost-per-call", "0",
           "--cost-per-message", "0", "--token-lifetime", "864000", "--db", str(tmp / "sandbox.db"),
           "--credentials", str(creds)]
    proc = subprocess.Popen(cmd, cwd=C.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(C.ROOT)})
    deadline = time.time() + 60
    while not creds.exists():
        if proc.poll() is not None or time.time() > deadline:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"the sandbox did not start: {err[-500:]}")
        time.sleep(0.05)
    time.sleep(0.05)
    return proc, json.loads(creds.read_text())


def stop_sandbox(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(
    messages: int, conversations: int, tmp: Path, profile: bool = False, max_in_flight: int = 2
) -> dict[str, Any]:
    from bulkimport.limits import STANDARD
    from bulkimport.portal.auth import Auth
    from bulkimport.portal.client import Client
    from bulkimport.sandbox.store import Store
    from bulkimport.sending.sender import Sender

    t = time.process_time()
    plan = C.build_plan(C.sizes(messages, conversations))
    plan_cpu = time.process_time() - t
    proc, creds = start_sandbox(tmp)
    try:
        auth = Auth(client_id=creds["client_id"], client_secret=creds["client_secret"],
                    access_token=creds["access_token"], refresh_token=creds["refresh_token"],
                    oauth_url=creds["oauth_url"], token_file=tmp / "tokens.json", env={})
        unbounded = STANDARD.with_(name="unbounded", bucket_size=10**9, drain_rate=1e9, operating_limit=1e12)
        client = Client(creds["url"], auth, limits=unbounded)
        C.setup_connector(client)
        sender = Sender(plan, line=1, connector=C.CONNECTOR, state=tmp / "journal.db", progress=False,
                        client=client, limits=unbounded, max_in_flight=max_in_flight)
        prof = None
        if profile:
            import cProfile

            prof = cProfile.Profile(time.process_time)  # CPU, like the figure (not wall time)
            prof.enable()
        wall, cpu = time.perf_counter(), time.process_time()
        out = sender.run()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if prof is not None:
            import pstats

            prof.disable()
            pstats.Stats(prof).sort_stats(os.environ.get("SORT","tottime")).print_stats(int(os.environ.get("TOP","25")))
    finally:
        stop_sandbox(proc)
    store = Store(str(tmp / "sandbox.db"))
    stored = store.counts()["messages"]
    store.close()
    s = out.summary
    return {"messages": messages, "conversations": conversations, "plan_cpu": plan_cpu, "cpu": cpu,
            "wall": wall, "sent": s.counts["sent"], "requests": s.requests, "stored": stored,
            "per_100k": cpu / messages * 100_000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--shape", action="append", default=None,
                    help="conversations, e.g. 2000 (50 messages each at 100,000); repeatable")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--max-in-flight", type=int, default=2, help="the sender's requests in flight (default 2)")
    args = ap.parse_args()
    shapes = [int(s) for s in (args.shape or ["2000", "20000"])]
    C.header("bench/client_overhead.py — client CPU per 100,000 messages (issue 6, part 3)")
    print("sandbox: `python -m bulkimport sandbox --no-limits --cost-per-call 0 --cost-per-message 0` in a "
          "subprocess (its CPU not counted); client governor with unbounded limits")
    ok = True
    rows = []
    for conversations in shapes:
        with tempfile.TemporaryDirectory() as tmp:
            r = measure(args.messages, conversations, Path(tmp), args.profile, args.max_in_flight)
        rows.append(r)
        good = r["per_100k"] <= GOAL and r["sent"] == r["messages"] == r["stored"]
        ok &= good
        print(f"\n{r['messages']} messages in {conversations} conversations of ~{r['messages'] // conversations}: "
              f"{r['sent']} sent, {r['stored']} stored, {r['requests']} requests, {r['wall']:.1f} s wall")
        print(f"  client CPU in Sender.run(): {r['cpu']:.2f} s → {r['per_100k']:.2f} s per 100,000 messages "
              f"(plan building, not counted: {r['plan_cpu']:.2f} s)")
        print(f"  {C.verdict(good)} ≤ {GOAL:g} CPU s per 100,000 messages, all sent and stored once")
    print(json.dumps({"client_overhead": rows}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
