"""The sandbox portal's own cost per request and per command (server CPU and wall), nothing else.

A ``bulkimport.Sandbox`` runs in a thread of this process with zero simulated cost (so nothing is
slept) and its limits on (a bucket too large to refuse, so the bucket and operating-time
bookkeeping still run). Plain ``requests`` sends ``batch`` requests of N ``imconnector.send.messages``
commands, one message each, encoded the way bulkimport's client does it (JSON body, each command a
PHP-bracket query from ``bulkimport.portal.encoding``). Every command is a new conversation (the
bucket-bound enterprise scenario of bench/limits_utilisation.py: 20,000 chats of 1 message) or, with
``--same-chats``, the next message of an existing one.

Server CPU is ``time.thread_time()`` of the sandbox's handler thread around each request
(``BaseHTTPRequestHandler.handle_one_request``: header parsing, body decoding, the methods, SQLite,
the JSON answer, the socket write); wall is the client's round trip. Prints figures only.

Usage: python bench/sandbox_cost.py [--requests 200] [--commands 50] [--same-chats] [--concurrency 1]
                                    [--profile] [--db PATH]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/sandbox_cost.py` from anywhere
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bulkimport.portal.encoding import command  # noqa: E402
from bulkimport.sandbox import Sandbox  # noqa: E402
from bulkimport.sandbox.server import Handler  # noqa: E402

CONNECTOR = "bench_cost"
ICON = {"DATA_IMAGE": "data:image/svg+xml;charset=US-ASCII,%3Csvg%2F%3E"}


class ServerMeter:
    """Server-side CPU per request: wraps Handler.handle_one_request (optionally under cProfile)."""

    def __init__(self, profile: bool) -> None:
        self.cpu: list[float] = []
        self.wall: list[float] = []  # from the parsed request to the answer written (no keep-alive idling)
        self.lock = threading.Lock()
        self.profiler = cProfile.Profile() if profile else None
        self.profile_lock = threading.Lock()  # one profiled request at a time (cProfile is per thread)
        self._original = Handler.handle_one_request
        self._original_handle = Handler._handle

    def install(self) -> None:
        meter, original, handle = self, self._original, self._original_handle

        def timed(handler: Any) -> None:
            handler.metered = True
            t0 = time.perf_counter()
            try:
                handle(handler)
            finally:
                with meter.lock:
                    meter.wall.append(time.perf_counter() - t0)

        def measured(handler: Any) -> None:
            handler.metered = False
            t0 = time.thread_time()
            profiler = meter.profiler  # the one enabled here is the one disabled (it may be swapped meanwhile)
            if profiler is not None:
                with meter.profile_lock:
                    profiler.enable()
                    try:
                        original(handler)
                    finally:
                        profiler.disable()
            else:
                original(handler)
            spent = time.thread_time() - t0
            if handler.metered:  # a request was handled (not the final EOF of a keep-alive connection)
                with meter.lock:
                    meter.cpu.append(spent)

        Handler.handle_one_request = measured  # type: ignore[method-assign,assignment]
        Handler._handle = timed  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        Handler.handle_one_request = self._original  # type: ignore[method-assign]
        Handler._handle = self._original_handle  # type: ignore[method-assign]

    def wait(self, n: int, timeout: float = 10.0) -> None:
        """Until ``n`` requests are metered (the client can read an answer before the meter notes it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.cpu) >= n:
                    return
            time.sleep(0.01)


def message(chat: int, n: int) -> dict[str, Any]:
    """One MESSAGES item shaped as bulkimport.plan() makes it."""
    return {"user": {"id": f"client-{chat}", "name": "Ольга" if chat % 2 else "Ivan"},
            "message": {"id": f"m-{chat}-{n}", "date": 1_704_067_200 + 7 * n,
                        "text": "Добрый день заказ No. 4471 не пришёл & more 100%"},
            "chat": {"id": f"chat-{chat}"}}


def body(token: str, first_chat: int, commands: int, n: int, same_chats: bool) -> bytes:
    """A batch of ``commands`` one-message send commands (keys c0.., as the sender names them)."""
    cmd = {}
    for i in range(commands):
        chat = i if same_chats else first_chat + i
        cmd[f"c{chat}"] = command("imconnector.send.messages",
                                  {"CONNECTOR": CONNECTOR, "LINE": 1, "MESSAGES": [message(chat, n)]})
    return json.dumps({"halt": 0, "cmd": cmd, "auth": token}, ensure_ascii=False).encode("utf-8")


HEADERS = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json"}


def setup(session: requests.Session, portal: Sandbox) -> None:
    for method, params in (
            ("imconnector.register", {"ID": CONNECTOR, "NAME": "Bench cost", "ICON": ICON,
                                      "PLACEMENT_HANDLER": "https://example.invalid/handler"}),
            ("imconnector.activate", {"CONNECTOR": CONNECTOR, "LINE": 1, "ACTIVE": 1})):
        r = session.post(portal.rest_url + method, json={**params, "auth": portal.access_token}, timeout=30)
        r.raise_for_status()


def run(args: argparse.Namespace) -> dict[str, Any]:
    meter = ServerMeter(args.profile)
    tmp = tempfile.mkdtemp(prefix="sandbox-cost-")
    db = args.db or os.path.join(tmp, "portal.db")
    portal = Sandbox(db=db, time_scale=1.0, cost_per_call=0.0, cost_per_message=0.0,
                     bucket_size=1e12, drain_rate=5.0, token_lifetime=10 * 86400)
    portal.start()
    try:
        sessions = [requests.Session() for _ in range(args.concurrency)]
        # metered from the first connection on (a keep-alive handler already waiting for its next
        # request would run the unwrapped method once)
        meter.install()
        setup(sessions[0], portal)
        # warm-up (imports, first statements, connection) outside the figures
        sessions[0].post(portal.rest_url + "batch", data=body(portal.access_token, 10**8, 5, 0, False),
                         headers=HEADERS, timeout=60).raise_for_status()
        meter.wait(3)  # register, activate, warm-up: then start the figures from zero
        with meter.lock:
            meter.cpu.clear()
            meter.wall.clear()
            if meter.profiler is not None:
                meter.profiler = cProfile.Profile()
        bodies = [body(portal.access_token, r * args.commands, args.commands, r, args.same_chats)
                  for r in range(args.requests)]
        walls: list[float] = []
        failures = 0
        lock = threading.Lock()
        cpu_before = time.process_time()

        def worker(k: int) -> None:
            nonlocal failures
            for r in range(k, args.requests, args.concurrency):
                t = time.perf_counter()
                resp = sessions[k].post(portal.rest_url + "batch", data=bodies[r], headers=HEADERS, timeout=120)
                spent = time.perf_counter() - t
                data = resp.json()
                ok = resp.status_code == 200 and not data["result"]["result_error"]
                with lock:
                    walls.append(spent)
                    failures += 0 if ok else 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.concurrency)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t0
        process_cpu = time.process_time() - cpu_before
        meter.wait(args.requests)
        meter.uninstall()
        counts = portal.store.counts()
    finally:
        portal.stop()
        if not args.db:
            for name in os.listdir(tmp):
                os.remove(os.path.join(tmp, name))
            os.rmdir(tmp)
    return {"meter": meter, "walls": walls, "elapsed": elapsed, "process_cpu": process_cpu,
            "failures": failures, "counts": counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200, help="batch requests to send (default 200)")
    ap.add_argument("--commands", type=int, default=50, help="send.messages commands per batch (≤ 50)")
    ap.add_argument("--same-chats", action="store_true", help="every batch writes to the same chats")
    ap.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default 1)")
    ap.add_argument("--profile", action="store_true", help="cProfile the server's handler thread")
    ap.add_argument("--db", default=None, help="SQLite file of the sandbox (default: a temporary one)")
    args = ap.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"bench/sandbox_cost.py — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; nproc "
          f"{os.cpu_count()}; load {load}; python {sys.version.split()[0]}")
    print(f"  {args.requests} batch requests × {args.commands} imconnector.send.messages commands × 1 message; "
          f"{'same' if args.same_chats else 'new'} chats; concurrency {args.concurrency}; cost 0; limits on")
    r = run(args)
    cpu = r["meter"].cpu
    n_cmd = args.commands
    total_cpu = sum(cpu)
    per_req = statistics.mean(cpu) if cpu else 0.0
    med_req = statistics.median(cpu) if cpu else 0.0
    walls = r["walls"]
    swall = r["meter"].wall
    print(f"  server wall per request (body read → answer written): median {statistics.median(swall) * 1e3:.2f} ms, "
          f"mean {statistics.mean(swall) * 1e3:.2f} ms = {statistics.mean(swall) / n_cmd * 1e3:.3f} ms per command")
    print(f"  server CPU per request: mean {per_req * 1e3:.2f} ms, median {med_req * 1e3:.2f} ms "
          f"(p95 {sorted(cpu)[int(0.95 * (len(cpu) - 1))] * 1e3:.2f} ms) over {len(cpu)} requests")
    print(f"  server CPU per command: mean {per_req / n_cmd * 1e3:.3f} ms, median {med_req / n_cmd * 1e3:.3f} ms")
    print(f"  wall per request (client round trip): median {statistics.median(walls) * 1e3:.2f} ms, "
          f"p95 {sorted(walls)[int(0.95 * (len(walls) - 1))] * 1e3:.2f} ms; "
          f"{len(walls) / r['elapsed']:.1f} requests/s, {len(walls) * n_cmd / r['elapsed']:.0f} commands/s")
    print(f"  process CPU (server + client) {r['process_cpu']:.2f} s for {r['elapsed']:.2f} s wall; "
          f"server share {total_cpu / max(r['process_cpu'], 1e-9):.0%}")
    c = r["counts"]
    print(f"  store: {c['messages']} messages, {c['chats']} chats, {c['duplicate_messages']} duplicates; "
          f"failed requests {r['failures']}")
    profiler = r["meter"].profiler
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue())
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
        print(out.getvalue())


if __name__ == "__main__":
    main()
