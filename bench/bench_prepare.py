"""Speed of the rows→MESSAGES half: read + map + validate + plan vs a bare ``pandas.read_csv``.

Usage::

    python bench/bench_prepare.py                  # 1,000,000-row CSV
    python bench/bench_prepare.py --rows 200000    # smaller
    python bench/bench_prepare.py --xlsx-rows 100000 --skip-csv   # only the xlsx reader comparison

Each measurement runs in a fresh subprocess so its peak memory (VmHWM) is its own. The
pipeline is ``bulkimport.read`` → mapping → ``bulkimport.plan`` (which validates every row and
builds every MESSAGES item and the fingerprint); the baseline is ``pd.read_csv(path, sep=";")``
of the same file. Goal: pipeline / baseline ≤ 1.5. Prints figures only; never asserts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data_examples"))

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {examples!r})
kind, path = sys.argv[1], sys.argv[2]
import pandas as pd  # imports are not timed in either run
if kind != "bare":
    import bulkimport, bulkimport.read, bulkimport.plan, bulkimport.validate, bulkimport.mapping
t0 = time.perf_counter()
c0 = time.process_time()  # CPU seconds of this process (all threads): steadier on a shared machine
extra = {{}}
if kind == "bare":
    df = pd.read_csv(path, sep=";")
    extra["rows"] = len(df)
elif kind == "pipeline":
    import bulkimport
    from bulkimport.mapping import Mapping
    from generate import BIG_MAPPING
    t = time.perf_counter()
    df = bulkimport.read(path)
    extra["read"] = time.perf_counter() - t
    mapping = Mapping.from_dict(BIG_MAPPING)
    import functools
    import bulkimport.planning as P, bulkimport.validate as V
    steps = {{}}
    def timed(mod, name, label):
        fn = getattr(mod, name)
        @functools.wraps(fn)
        def wrapper(*a, **k):
            c = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                steps[label] = steps.get(label, 0.0) + time.process_time() - c
        setattr(mod, name, wrapper)
    for mod, name, label in [
        (V, "parse_dates", "dates"), (V, "clean_phones", "phones"), (V, "clean_ids", "ids"),
        (V, "_generated_ids", "generated ids"), (V, "as_text", "as_text"), (P, "_payloads", "payload columns"),
        (P, "_conversations", "conversations"), (P, "_fingerprint", "fingerprint"),
    ]:
        timed(mod, name, label)
    t = time.perf_counter()
    plan = bulkimport.plan(df, mapping)
    extra["map+validate+plan"] = time.perf_counter() - t
    extra["steps_cpu"] = steps
    extra["counts"] = plan.counts
elif kind == "breakdown":
    import gc
    import bulkimport
    from bulkimport.mapping import Mapping
    from bulkimport.validation import prepare
    from generate import BIG_MAPPING
    df = bulkimport.read(path)
    mapping = Mapping.from_dict(BIG_MAPPING)
    gc.disable()
    t = time.perf_counter()
    prepare(df, mapping)
    extra["of which validate"] = time.perf_counter() - t
    cols = {{k: v for k, v in BIG_MAPPING["columns"].items() if k != "user.phone"}}
    t = time.perf_counter()
    prepare(df, Mapping.from_dict({{**BIG_MAPPING, "columns": cols}}))
    extra["validate without phones"] = time.perf_counter() - t
elif kind in ("calamine", "openpyxl"):
    from pathlib import Path
    from bulkimport.sources.tabular import _calamine_rows, _openpyxl_rows, _frame_from_rows
    rows = (_calamine_rows if kind == "calamine" else _openpyxl_rows)(Path(path), None)[1]
    df = _frame_from_rows(rows, "bench", 1)
    extra["rows"] = len(df)
seconds = time.perf_counter() - t0
extra["cpu"] = time.process_time() - c0
# VmHWM is this process's own peak; ru_maxrss would also count the parent's memory at fork time
try:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
    peak = int(hwm.split()[1]) / 1024
except (OSError, IndexError):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
print(json.dumps({{"seconds": seconds, "peak_mib": peak, **extra}}))
"""


def _run(kind: str, path: Path) -> dict[str, object]:
    code = _CHILD.format(root=str(ROOT), examples=str(ROOT / "data_examples"))
    out = subprocess.run(
        [sys.executable, "-c", code, kind, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_csv(rows: int, workdir: Path) -> None:
    from generate import big_csv

    path = workdir / "big.csv"
    t = time.perf_counter()
    big_csv(path, rows)
    print(
        f"generated {rows:,} rows ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t:.1f} s"
    )
    bare = _run("bare", path)
    pipe = _run("pipeline", path)
    parts = _run("breakdown", path)
    ratio = float(pipe["seconds"]) / float(bare["seconds"])  # type: ignore[arg-type]
    cpu_ratio = float(pipe["cpu"]) / float(bare["cpu"])  # type: ignore[arg-type]
    print(f"bare pandas.read_csv      : {bare['seconds']:7.2f} s   peak {bare['peak_mib']:7.0f} MiB   cpu {bare['cpu']:6.2f} s")
    print(f"bulkimport read+plan      : {pipe['seconds']:7.2f} s   peak {pipe['peak_mib']:7.0f} MiB   cpu {pipe['cpu']:6.2f} s")
    print(f"   read                   : {pipe['read']:7.2f} s")
    print(f"   map+validate+plan      : {pipe['map+validate+plan']:7.2f} s")
    print(f"     of which validation  : {parts['of which validate']:7.2f} s (timed again, own process)")
    print(f"     validation w/o phones: {parts['validate without phones']:7.2f} s (the difference is the phones)")
    steps = ", ".join(f"{k} {v:.2f}" for k, v in pipe["steps_cpu"].items())  # type: ignore[union-attr]
    print(f"     steps (cpu s, nested) : {steps}")
    print(f"   counts                 : {pipe['counts']}")
    print(f"ratio pipeline / bare     : {ratio:7.2f}  (goal <= 1.5; wall clock)")
    print(f"cpu ratio pipeline / bare : {cpu_ratio:7.2f}  (CPU seconds: less sensitive to other jobs)")


def bench_xlsx(rows: int, workdir: Path) -> None:
    import datetime as dt

    import openpyxl

    path = workdir / "big.xlsx"
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("History")
    ws.append(["Chat", "Client ID", "Author", "Date", "Text"])
    base = dt.datetime(2026, 1, 1)
    for i in range(rows):
        ws.append(
            [
                f"wa-{i // 20:07d}",
                f"{i // 20:09d}",
                "client" if i % 2 else "Oleg Ivanov",
                base + dt.timedelta(minutes=i),
                f"message number {i} — сообщение",
            ]
        )
    wb.save(path)
    cal = _run("calamine", path)
    opx = _run("openpyxl", path)
    print(
        f"xlsx {rows:,} rows: calamine {cal['seconds']:.2f} s (peak {cal['peak_mib']:.0f} MiB), "
        f"openpyxl {opx['seconds']:.2f} s (peak {opx['peak_mib']:.0f} MiB), "
        f"openpyxl/calamine = {float(opx['seconds']) / float(cal['seconds']):.1f}x"
    )  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="CSV rows (default 1,000,000)")
    ap.add_argument("--xlsx-rows", type=int, default=100_000, help="xlsx rows for the reader comparison")
    ap.add_argument("--skip-csv", action="store_true")
    ap.add_argument("--skip-xlsx", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_csv:
            bench_csv(args.rows, Path(tmp))
        if not args.skip_xlsx:
            bench_xlsx(args.xlsx_rows, Path(tmp))


if __name__ == "__main__":
    main()
