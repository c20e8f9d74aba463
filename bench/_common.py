"""Shared pieces of the bench scripts: workloads, a sandbox connection, a recording transport, machine facts.

Not a test helper: the bench scripts print figures (see bench/RESULTS.md); nothing here asserts.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere without installing
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def hwm_mib(pid: int | str = "self") -> float | None:
    """A process's peak resident memory so far (VmHWM), MiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


CONNECTOR = "bench_import"
_DURATION = re.compile(rb'"duration": ?([0-9.eE+-]+)')
ICON = {"DATA_IMAGE": "data:image/svg+xml;charset=US-ASCII,%3Csvg%2F%3E"}


# ------------------------------------------------------------------------------------------ machine
def machine() -> dict[str, str]:
    """nproc, memory, python, load average, date: written beside every figure."""
    mem = "?"
    try:
        with open("/proc/meminfo") as fh:
            kb = int(fh.readline().split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": str(os.cpu_count()),
        "memory": mem,
        "python": f"{platform.python_version()} ({sys.executable})",
        "load": load,
    }


def header(title: str, command: str | None = None) -> None:
    """Print the script's header: title, machine, the exact command."""
    m = machine()
    print("=" * 100)
    print(title)
    print(f"  {m['date']}; nproc {m['nproc']}; memory {m['memory']}; python {m['python']}")
    print(f"  load average (1/5/15 min) at start: {m['load']}")
    print(f"  command: {command or ' '.join([Path(sys.executable).name, *sys.argv])}")
    print("=" * 100)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# ------------------------------------------------------------------------------------------ workloads
def sizes(messages: int, conversations: int, skewed: bool = False) -> list[int]:
    """Messages per conversation: even, or (skewed) one conversation holding half of them."""
    if not skewed:
        base, extra = divmod(messages, conversations)
        return [base + (1 if i < extra else 0) for i in range(conversations)]
    big = messages // 2
    rest = sizes(messages - big, conversations - 1)
    return [big, *rest]


def frame(conv_sizes: list[int], seed: int = 0) -> pd.DataFrame:
    """A history export as an analyst has it: chat, client, name, date, text (one row per message)."""
    n = sum(conv_sizes)
    conv = np.repeat(np.arange(len(conv_sizes)), conv_sizes)
    rng = np.random.default_rng(seed)
    rng.shuffle(conv)  # rows of conversations interleave, as in a real export sorted by time
    start = pd.Timestamp("2024-01-01", tz="UTC")
    dates = start + pd.to_timedelta(np.arange(n) * 7, unit="s")
    words = np.array(["Добрый день", "заказ", "No. 4471", "не пришёл", "спасибо", "[b]срочно[/b]",
                      "tracking", "& more", "100%", "ok"])
    text = [" ".join(words[(i + np.arange(3 + i % 5)) % len(words)]) for i in range(n)]
    df = pd.DataFrame({
        "Chat": [f"chat-{c}" for c in conv],
        "Client": [f"client-{c}" for c in conv],
        "Name": ["Ольга" if c % 2 else "Ivan" for c in conv],
        "Date": dates,
        "Text": text,
    })
    df.index = pd.RangeIndex(2, 2 + n, name="row")
    return df


def build_plan(conv_sizes: list[int], chunk_size: int = 50, seed: int = 0) -> Any:
    """A Plan through the public path: generated DataFrame → bulkimport.plan()."""
    import bulkimport
    from bulkimport.mapping import Mapping

    mapping = Mapping(columns={"chat.id": "Chat", "user.id": "Client", "user.name": "Name",
                               "message.date": "Date", "message.text": "Text"})
    return bulkimport.plan(frame(conv_sizes, seed), mapping, chunk_size=chunk_size)


# ------------------------------------------------------------------------------------------ transport
@dataclass
class Recorder:
    """What went over the wire: per request its real duration, HTTP status, virtual time, nested 429s."""

    clock: Any = None  # the portal clock (virtual time of each answer)
    durations: list[float] = field(default_factory=list)
    events: list[tuple[float, int, int, int]] = field(default_factory=list)  # (vtime, status, n503, n429)
    server: list[float] = field(default_factory=list)  # the portal's own time.duration of each request
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, seconds: float, status: int, body: bytes) -> None:
        n503 = 1 if status == 503 else 0
        n429 = 1 if status == 429 else 0
        if status == 200 and b"OPERATION_TIME_LIMIT" in body:
            n429 += body.count(b"OPERATION_TIME_LIMIT")  # nested commands of a batch
        if status == 200 and b"QUERY_LIMIT_EXCEEDED" in body:
            n503 += body.count(b"QUERY_LIMIT_EXCEEDED")
        found = _DURATION.findall(body[-700:]) if status == 200 else []
        with self.lock:
            if found:
                self.server.append(float(found[-1]))
            self.durations.append(seconds)
            self.events.append((self.clock.now() if self.clock else time.time(), status, n503, n429))

    def refusals(self, after: float | None = None) -> tuple[int, int]:
        """(503s, 429s) answered at or after virtual time ``after`` (all when None)."""
        ev = [e for e in self.events if after is None or e[0] >= after]
        return sum(e[2] for e in ev), sum(e[3] for e in ev)

    def percentiles(self) -> tuple[float, float]:
        """p50, p95 of request durations in real seconds."""
        if not self.durations:
            return 0.0, 0.0
        d = sorted(self.durations)
        return statistics.median(d), d[min(len(d) - 1, round(0.95 * (len(d) - 1)))]


def recording_transport(recorder: Recorder) -> Any:
    """bulkimport's real transport, timing each request and noting refusals."""
    from bulkimport.portal.client import RequestsTransport

    class _Recording(RequestsTransport):
        def post(self, url: str, body: bytes, headers: Any, timeout: Any) -> Any:
            t = time.perf_counter()
            raw = super().post(url, body, headers, timeout)
            recorder.record(time.perf_counter() - t, raw.status, raw.body)
            return raw

    return _Recording()


# ------------------------------------------------------------------------------------------ sandbox
def bulkimport_client(portal: Any, tmp: Path, *, limits: Any = None, transport: Any = None,
                      clock: Any = None) -> Any:
    """A bulkimport Client with OAuth tokens of the sandbox's application, on the portal's clock."""
    from bulkimport.clock import for_sandbox
    from bulkimport.limits import STANDARD
    from bulkimport.portal.auth import Auth
    from bulkimport.portal.client import Client

    clock = clock or for_sandbox(portal)
    auth = Auth(client_id=portal.client_id, client_secret=portal.client_secret,
                access_token=portal.access_token, refresh_token=portal.refresh_token,
                oauth_url=portal.oauth_url, token_file=tmp / "tokens.json", clock=clock, env={})
    return Client(portal.url, auth, limits=limits or STANDARD, clock=clock, session=transport)


def setup_connector(client: Any, line: int = 1) -> None:
    """Register and activate the bench connector on ``line`` (what an admin does once)."""
    client.call("imconnector.register", {"ID": CONNECTOR, "NAME": "Bench import", "ICON": ICON,
                                         "PLACEMENT_HANDLER": "https://example.invalid/handler"}, retries=5)
    client.call("imconnector.activate", {"CONNECTOR": CONNECTOR, "LINE": line, "ACTIVE": 1}, retries=5)


def store_check(portal: Any, expected: set[tuple[str, str]]) -> dict[str, Any]:
    """Lost / duplicated / out-of-order messages as the sandbox stored them (``expected``: chat, message ids)."""
    counts = portal.store.counts()
    stored = portal.store.messages()[["chat_id", "message_id"]]
    keys = set(zip(stored["chat_id"].astype(str), stored["message_id"].astype(str), strict=True))
    return {"stored": len(stored), "lost": len(expected - keys), "duplicated": len(stored) - len(keys),
            "unexpected": len(keys - expected), "out_of_order_chats": counts["out_of_order_chats"],
            "duplicate_chats": counts["duplicate_chats"]}


def expected_ids(plan: Any) -> set[tuple[str, str]]:
    """(chat.id, message.id) of every message of a plan."""
    return {(m["chat"]["id"], str(m["message"]["id"])) for c in plan.conversations for m in c.messages}


def run_json(cmd: list[str], timeout: float = 900) -> dict[str, Any]:
    """Run a bench child process that prints one JSON line last; return it."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-5:] or [f"exit {proc.returncode}"]}
    return json.loads(lines[-1])
