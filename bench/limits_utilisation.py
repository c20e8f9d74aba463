"""How fully bulkimport uses the portal's binding limit, and how honest the plan's ETA is.

The sandbox runs with the cloud limits (leaky bucket X/Y, 480 s of operating time per method per
600 s, 60 s request cap) under a time scale; the sender sends a Plan built by ``bulkimport.plan()``
from a generated DataFrame. For each scenario the script computes from the sandbox's configuration
the shortest time any client keeping the rules (one conversation in flight, chunks of a
conversation in order; the operating term assumes one request's work at a time, so with the
sender's two requests in flight the last window's work can run faster and a ratio slightly above
1 is possible in the operating-bound rows) could need, and prints achieved/ceiling, refusals (503/429, in
total and after the first minute), p50/p95 request duration, lost/duplicated messages, and the
plan's estimate against the measured duration.

Finishing (issue 16): by default the sender finishes every conversation's session
(``imopenlines.operator.another.finish``) inside the send loop, as soon as the conversation's rows
are settled: the finish commands ride in send batches that have room, or go in batches of their
own (50 per ``batch``), through the governor, inside the measured time; the ceiling counts them
(a request holds at most 50 commands of either kind), and the report says how many sessions are
left open (must be 0) and how the finish commands went. ``--keep-open`` measures sending alone.

The sandbox runs in its own process by default (``python -m bulkimport sandbox``), so its CPU
and the client's do not share one interpreter lock — a real portal answers concurrent requests in
parallel on other machines; ``--sandbox thread`` runs it in a thread of this process (the figures
of bench/RESULTS.md before the sender's requests in flight).

Usage: python bench/limits_utilisation.py [--full] [--only NAME[,NAME]] [--messages N]
       [--sandbox process|thread] [--max-in-flight N] [--keep-open]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

FORMULA = """\
Ceiling (shortest possible duration T_ideal for the workload, from the sandbox's configuration):
  m      = messages per call = min(chunk_size, max_messages, floor((cap - c_call) / c_msg))
  K      = calls = sum over conversations of ceil(n_i / m);  K_max = most calls of one conversation
  B      = calls per request = min(50, floor(cap / (c_call + m * c_msg)))
  R      = requests = max(ceil(K / B), K_max, ceil((K + F) / 50))
           (one conversation in flight: its chunks are sequential; F = C finish commands, one per
           conversation, 0 with --keep-open: a request holds at most 50 commands, and B of them may be
           sends; the finish method's operating time is budgeted apart from the send method's)
  W      = server work = K * c_call + N * c_msg    (virtual seconds, charged to the operating budget)
  T_bucket    = max(0, R - X) / Y                  (leaky bucket: X burst, Y per second)
  T_operating = W                       if W <= L
              = k * window + (W - k*L)  otherwise, k = ceil(W / L) - 1
                (the budget L per window is spent at rate 1 by sequential work, then the baskets expire)
  T_ideal = max(T_bucket, T_operating);  ceiling = N / T_ideal messages per sandbox second
  steady-state ceilings: bucket Y * N / R; operating (L / window) * N / W
Diagnostic (not the goal): under a time scale the sandbox's own CPU time is scaled too, so its
wall time per call (D = sum of the time.duration it reports) exceeds the charged work W. A client
sending one request at a time cannot beat T_server = max(T_bucket, T_operating at rate W/D, D);
T_server / measured is the share of the time the client itself is responsible for.
Goal: achieved / ceiling >= 0.95, zero 503 and zero 429 after the first (virtual) minute;
ETA: plan.estimate(limits, seconds_per_message=measured) within +-15 % of the measured duration."""


@dataclass
class Scenario:
    name: str
    regime: str  # "bucket" or "operating" (which limit is meant to bind)
    messages: int
    conversations: int
    skewed: bool
    preset: str  # "standard" / "enterprise"
    cost_per_call: float
    cost_per_message: float
    time_scale: float
    chunk_size: int = 50
    finish: bool = True  # finish every session at the end of the run (inside the measured time)


def scenarios(full: bool, messages: int | None) -> list[Scenario]:
    """Bucket-bound: short chats (2 messages each; 1 for enterprise, whose 250-request burst needs
    more requests) and cheap messages, time scale 1; operating-bound: 100-message conversations at
    a tenth of the sandbox's default cost (same call/message ratio), time scale 10."""
    n = messages or (20_000 if full else 10_000)
    convs = max(200, n // 100)
    out = [
        Scenario("bucket-standard", "bucket", n, n // 2, False, "standard", 0.0005, 0.0002, 1.0),
        Scenario("bucket-standard-skewed", "bucket", n, n // 4 + 1, True, "standard", 0.0005, 0.0002, 1.0),
        # the 250-request burst needs ≥ 20,000 one-message chats (400 requests) for the bucket to bind
        Scenario("bucket-enterprise", "bucket", max(n, 20_000), max(n, 20_000), False, "enterprise", 0.0005,
                 0.0002, 1.0),
        Scenario("operating-standard", "operating", n, convs, False, "standard", 0.07, 0.05, 10.0),
        Scenario("operating-standard-skewed", "operating", n, convs, True, "standard", 0.07, 0.05, 10.0),
    ]
    if full:
        out.append(Scenario("operating-enterprise", "operating", n, convs, False, "enterprise", 0.07, 0.05, 10.0))
        # the sandbox's default, documented cost (0.7 s per call + 0.5 s per message): 3,000 messages
        # already take 3 windows (~32 sandbox minutes), hence the smaller size and the larger scale
        out.append(Scenario("operating-documented-cost", "operating", 3000, 60, False, "standard", 0.7, 0.5,
                            50.0))
    return out


def ideal(sizes: list[int], sc: Scenario, x: float, y: float, limit: float = 480.0, window: float = 600.0,
          cap: float = 60.0, max_messages: int = 100, server_wall: float | None = None) -> dict[str, float]:
    """The formula above; with ``server_wall`` (the portal's own summed ``time.duration``) also the
    bound a sequential client meets when the server's wall time exceeds the charged time."""
    c_call, c_msg = sc.cost_per_call, sc.cost_per_message
    m = min(sc.chunk_size, max_messages, int((cap - c_call) // c_msg) if c_msg else sc.chunk_size)
    calls = [math.ceil(s / m) for s in sizes]
    k, k_max = sum(calls), max(calls)
    b = min(50, int(cap // (c_call + m * c_msg)))
    f = len(sizes) if sc.finish else 0
    r = max(math.ceil(k / b), k_max, math.ceil((k + f) / 50))
    n = sum(sizes)
    w = k * c_call + n * c_msg

    def operating(rate: float) -> float:
        # sequential work consumes the budget at `rate` charged seconds per wall second
        if w <= limit:
            return w / rate
        if limit / rate >= window:
            return w / rate  # never idle: the wall time itself binds
        kk = math.ceil(w / limit) - 1
        return kk * window + (w - kk * limit) / rate

    t_bucket = max(0.0, r - x) / y
    t_oper = operating(1.0)
    t = max(t_bucket, t_oper)
    out = {"m": m, "K": k, "K_max": k_max, "B": b, "R": r, "W": w, "T_bucket": t_bucket,
           "T_operating": t_oper, "T_ideal": t, "ceiling": n / t if t else math.inf,
           "steady_bucket": y * n / r, "steady_operating": (limit / window) * n / w,
           "binding": "bucket" if t_bucket >= t_oper else "operating"}
    if server_wall:
        rho = min(1.0, w / server_wall)
        t_srv = max(t_bucket, operating(rho), server_wall)
        out.update({"D": server_wall, "rho": rho, "T_server": t_srv})
    return out


class _ProcessSandbox:
    """``python -m bulkimport sandbox`` in a subprocess, with what ``run`` needs of a Sandbox."""

    def __init__(self, sc: Scenario, tmp: Path) -> None:
        self.db = tmp / "sandbox.db"
        creds = tmp / "sandbox.json"
        cmd = [sys.executable, "-m", "bulkimport", "sandbox", "--db", str(self.db), "--credentials", str(creds),
               "--time-scale", f"{sc.time_scale:g}", "--plan", sc.preset,
               "--cost-per-call", f"{sc.cost_per_call:g}", "--cost-per-message", f"{sc.cost_per_message:g}",
               "--seed", "1", "--token-lifetime", "86400"]
        self.proc = subprocess.Popen(cmd, cwd=C.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env={**os.environ, "PYTHONPATH": str(C.ROOT)})
        deadline = time.time() + 60
        while not creds.exists():
            if self.proc.poll() is not None or time.time() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"the sandbox did not start: {err[-500:]}")
            time.sleep(0.05)
        time.sleep(0.05)
        for key, value in json.loads(creds.read_text()).items():
            setattr(self, key, value)
        self.time_scale = sc.time_scale
        self.epoch = self._epoch()

    def _epoch(self) -> float:
        """The sandbox clock's epoch: virtual = epoch + (real - epoch) x scale, from one answer's
        ``time.finish`` (microseconds) read at its arrival."""
        import requests

        if self.time_scale == 1:
            return time.time()
        r = requests.post(self.rest_url + "server.time", json={"auth": self.access_token}, timeout=30)
        real = time.time()
        finish = float(r.json()["time"]["finish"])
        return (finish - real * self.time_scale) / (1 - self.time_scale)

    def clock(self) -> Any:
        from bulkimport.clock import ScaledClock

        return ScaledClock(self.time_scale, self.epoch)

    def now(self) -> float:
        return self.epoch + (time.time() - self.epoch) * self.time_scale

    def settle_setup(self, limits: Any) -> None:
        """Let the set-up calls drain out of the bucket (the thread mode advances the clock)."""
        time.sleep(2 / limits.drain_rate / self.time_scale + 0.2)

    def stop(self) -> SimpleNamespace:
        """Stop the sandbox; its store, read from the database it leaves."""
        from bulkimport.sandbox.store import Store

        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return SimpleNamespace(store=Store(str(self.db)))


def run(sc: Scenario, mode: str = "process", max_in_flight: int | None = None) -> dict[str, Any]:
    from bulkimport.limits import ENTERPRISE, STANDARD

    limits = ENTERPRISE if sc.preset == "enterprise" else STANDARD
    sizes = C.sizes(sc.messages, sc.conversations, sc.skewed)
    t = time.perf_counter()
    plan = C.build_plan(sizes, sc.chunk_size)
    plan_seconds = time.perf_counter() - t
    want = C.expected_ids(plan)
    if mode == "process":
        return _run_process(sc, limits, sizes, plan, plan_seconds, want, max_in_flight)
    return _run_thread(sc, limits, sizes, plan, plan_seconds, want, max_in_flight)


def _send_timed(portal: Any, clock: Any, tmp: Path, limits: Any, plan: Any, max_in_flight: int | None,
                settle: Any, finish: bool = True) -> tuple[Any, Any, float, float, float, float]:
    """Set the connector up, ``settle(recorder)`` the portal after it, then run the sender over
    ``plan``: (outcome, recorder, virtual start, virtual end, real start, real end)."""
    from bulkimport.sending.sender import Sender

    kw = {} if max_in_flight is None else {"max_in_flight": max_in_flight}
    rec = C.Recorder(clock=clock)
    client = C.bulkimport_client(portal, tmp, limits=limits, transport=C.recording_transport(rec), clock=clock)
    C.setup_connector(client)
    settle(rec)
    rec.durations.clear()
    rec.events.clear()
    v0, r0 = portal.now(), time.perf_counter()
    # as ``bulkimport run`` does by default: sessions finished in the send loop, then what is left
    sender = Sender(plan, line=1, connector=C.CONNECTOR, state=tmp / "journal.db", progress=False,
                    client=client, limits=limits, finish_sessions=finish, **kw)
    out = sender.run()
    out.finish = sender.finished
    return out, rec, v0, portal.now(), r0, time.perf_counter()


def _run_process(sc: Scenario, limits: Any, sizes: list[int], plan: Any, plan_seconds: float,
                 want: set[tuple[str, str]], max_in_flight: int | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        portal = _ProcessSandbox(sc, Path(tmp))
        try:
            def settle(rec: Any) -> None:
                portal.settle_setup(limits)
                rec.server.clear()

            out, rec, v0, v1, r0, r1 = _send_timed(portal, portal.clock(), Path(tmp), limits, plan,
                                                   max_in_flight, settle, sc.finish)
        finally:
            stopped = portal.stop()
        check = C.store_check(stopped, want)
        check["open_sessions"] = int(stopped.store.sessions()["closed"].isna().sum())
        stopped.store.close()
    by_status = {503: sum(1 for e in rec.events if e[1] == 503), 429: sum(1 for e in rec.events if e[1] == 429)}
    return _result(sc, limits, sizes, plan, plan_seconds, out, rec, check, v0, v1, r0, r1, by_status,
                   "process", max_in_flight)


def _run_thread(sc: Scenario, limits: Any, sizes: list[int], plan: Any, plan_seconds: float,
                want: set[tuple[str, str]], max_in_flight: int | None) -> dict[str, Any]:
    from bulkimport.clock import for_sandbox
    from bulkimport.sandbox import Sandbox

    with tempfile.TemporaryDirectory() as tmp, Sandbox(
        time_scale=sc.time_scale, bucket_size=limits.bucket_size, drain_rate=limits.drain_rate,
        cost_per_call=sc.cost_per_call, cost_per_message=sc.cost_per_message, seed=1,
    ) as portal:
        def settle(rec: Any) -> None:
            portal.advance(600)  # set-up calls out of the bucket and the baskets: the import starts fresh
            portal.reset_stats()

        out, rec, v0, v1, r0, r1 = _send_timed(portal, for_sandbox(portal), Path(tmp), limits, plan,
                                               max_in_flight, settle, sc.finish)
        stats = portal.stats()
        check = C.store_check(portal, want)
        check["open_sessions"] = int(portal.store.sessions()["closed"].isna().sum())
    return _result(sc, limits, sizes, plan, plan_seconds, out, rec, check, v0, v1, r0, r1, stats["by_status"],
                   "thread", max_in_flight)


def _result(sc: Scenario, limits: Any, sizes: list[int], plan: Any, plan_seconds: float, out: Any, rec: Any,
            check: dict[str, Any], v0: float, v1: float, r0: float, r1: float,
            by_status: dict[int, int], mode: str, max_in_flight: int | None) -> dict[str, Any]:
    from bulkimport.sending.sender import DEFAULT_MAX_IN_FLIGHT

    mif = max_in_flight or DEFAULT_MAX_IN_FLIGHT
    ceiling = ideal(sizes, sc, limits.bucket_size, limits.drain_rate, server_wall=sum(rec.server))
    s = out.summary
    measured = v1 - v0
    spm = s.seconds_per_message or ceiling["W"] / sc.messages
    est = plan.estimate(limits, seconds_per_message=spm)
    est_prior = plan.estimate(limits, seconds_per_message=ceiling["W"] / sc.messages)
    if sc.finish:  # the job's ETA counts finishing the same way
        from bulkimport.after.finish import with_finishing

        est, est_prior = with_finishing(est, len(sizes)), with_finishing(est_prior, len(sizes))
    after = rec.refusals(after=v0 + 60)
    p50, p95 = rec.percentiles()
    return {
        "scenario": sc.name, "sizes": sizes, "plan_seconds": plan_seconds, "ceiling": ceiling,
        "sent": s.counts["sent"], "complete": s.complete, "measured": measured, "real": r1 - r0,
        "rate": s.counts["sent"] / measured if measured else 0.0,
        "ratio": ceiling["T_ideal"] / measured if measured else 0.0,
        "ratio_server": ceiling["T_server"] / measured if measured else 0.0,
        "http503": by_status.get(503, 0), "http429": by_status.get(429, 0), "max_in_flight": mif, "mode": mode,
        "refusals_total": rec.refusals(), "refusals_after_1min": after,
        "requests": len(rec.durations), "p50": p50, "p95": p95, "check": check,
        "spm": spm, "estimate": est.seconds, "estimate_binding": est.binding,
        "estimate_prior": est_prior.seconds, "finish": getattr(out, "finish", None),
    }


def report(sc: Scenario, r: dict[str, Any]) -> bool:
    c = r["ceiling"]
    shape = (f"{sc.conversations} conversations, one holding {r['sizes'][0]}" if sc.skewed
             else f"{sc.conversations} conversations of ~{sc.messages // sc.conversations}")
    print(f"\n--- {sc.name}: {sc.messages} messages, {shape}; {sc.preset} limits; "
          f"cost {sc.cost_per_call:g} s/call + {sc.cost_per_message:g} s/message; time scale {sc.time_scale:g}")
    print(f"  plan: bulkimport.plan() from a generated DataFrame in {r['plan_seconds']:.2f} s; sender "
          f"max_in_flight={r['max_in_flight']}; sandbox in a {r['mode']}")
    print(f"  ceiling: m={c['m']} K={c['K']} K_max={c['K_max']} B={c['B']} R={c['R']} W={c['W']:.1f} s; "
          f"T_bucket={c['T_bucket']:.1f} s T_operating={c['T_operating']:.1f} s → T_ideal={c['T_ideal']:.1f} s "
          f"({c['binding']}-bound), ceiling {c['ceiling']:.2f} msg/s "
          f"(steady: bucket {c['steady_bucket']:.2f}, operating {c['steady_operating']:.2f})")
    if "T_server" in c:
        print(f"  diagnostic: sandbox wall D={c['D']:.1f} s for W={c['W']:.1f} s charged (rate {c['rho']:.2f}) "
              f"→ T_server={c['T_server']:.1f} s; client efficiency T_server/measured = {r['ratio_server']:.3f}")
    print(f"  measured: {r['sent']} sent{'' if r['complete'] else ' (INCOMPLETE)'} in {r['measured']:.1f} "
          f"sandbox s ({r['real']:.1f} real s) = {r['rate']:.2f} msg/s; achieved/ceiling = {r['ratio']:.3f}")
    n503, n429 = r["refusals_total"]
    a503, a429 = r["refusals_after_1min"]
    print(f"  refusals: 503 {n503} / 429 {n429} in total (portal.stats: HTTP 503 {r['http503']}, HTTP 429 "
          f"{r['http429']}); after the first minute: 503 {a503} / 429 {a429}")
    print(f"  requests: {r['requests']}; duration p50 {r['p50'] * 1000:.1f} ms / p95 {r['p95'] * 1000:.1f} ms real "
          f"(×{sc.time_scale:g} = {r['p50'] * sc.time_scale:.2f} / {r['p95'] * sc.time_scale:.2f} sandbox s)")
    ck = r["check"]
    print(f"  sandbox store: {ck['stored']} stored, lost {ck['lost']}, duplicated {ck['duplicated']}, "
          f"out-of-order chats {ck['out_of_order_chats']}, duplicate chats {ck['duplicate_chats']}")
    fin = r["finish"]
    if fin is not None:
        print(f"  finishing: {fin} (in the send loop, inside the measured time); sessions left open: "
              f"{ck['open_sessions']}")
    dev = r["estimate"] / r["measured"] - 1 if r["measured"] else math.inf
    dev0 = r["estimate_prior"] / r["measured"] - 1 if r["measured"] else math.inf
    print(f"  ETA: plan.estimate(seconds_per_message={r['spm']:.4f} measured) = {r['estimate']:.1f} s "
          f"({r['estimate_binding']}) vs measured {r['measured']:.1f} s: {dev:+.1%}; "
          f"with the configured cost W/N: {r['estimate_prior']:.1f} s ({dev0:+.1%})")
    util_ok = r["ratio"] >= 0.95
    refusal_ok = a503 == 0 and a429 == 0
    exact_ok = ck["lost"] == 0 and ck["duplicated"] == 0 and ck["out_of_order_chats"] == 0 and r["complete"]
    exact_ok &= fin is None or (fin.complete and ck["open_sessions"] == 0)
    eta_ok = abs(dev) <= 0.15
    print(f"  {C.verdict(util_ok)} utilisation ≥ 0.95 | {C.verdict(refusal_ok)} no refusal after 1 min | "
          f"{C.verdict(exact_ok)} exactly once, in order | {C.verdict(eta_ok)} ETA within ±15 %")
    return util_ok and refusal_ok and exact_ok and eta_ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true",
                    help="20,000 messages per scenario and the operating-bound enterprise case (default 10,000)")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--messages", type=int, default=None)
    ap.add_argument("--sandbox", choices=["process", "thread"], default="process",
                    help="run the sandbox in a subprocess (default) or in a thread of this process")
    ap.add_argument("--max-in-flight", type=int, default=None,
                    help="the sender's requests in flight (default: the sender's default)")
    ap.add_argument("--keep-open", action="store_true", help="do not finish the sessions (sending alone)")
    args = ap.parse_args()
    C.header("bench/limits_utilisation.py — limit utilisation and ETA honesty (issue 6, parts 1 and 5)")
    print(FORMULA)
    wanted = {s for s in args.only.split(",") if s}
    ok = True
    rows = []
    for sc in scenarios(args.full, args.messages):
        if wanted and sc.name not in wanted:
            continue
        sc.finish = not args.keep_open
        r = run(sc, args.sandbox, args.max_in_flight)
        ok &= report(sc, r)
        rows.append((sc, r))
    print("\nsummary (sandbox seconds):")
    print(f"  {'scenario':28} {'ceiling':>9} {'achieved':>9} {'ratio':>6} {'client':>6} {'503/429':>8} {'after1m':>8} "
          f"{'p50 ms':>7} {'p95 ms':>7} {'ETA dev':>8} {'lost/dup':>8}")
    for sc, r in rows:
        n503, n429 = r["refusals_total"]
        a503, a429 = r["refusals_after_1min"]
        dev = r["estimate"] / r["measured"] - 1
        print(f"  {sc.name:28} {r['ceiling']['ceiling']:9.2f} {r['rate']:9.2f} {r['ratio']:6.3f} {r['ratio_server']:6.3f} "
              f"{n503:>3}/{n429:<4} {a503:>3}/{a429:<4} {r['p50'] * 1000:7.1f} {r['p95'] * 1000:7.1f} "
              f"{dev:+8.1%} {r['check']['lost']:>3}/{r['check']['duplicated']:<4}")
    print(f"\noverall: {C.verdict(ok)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
