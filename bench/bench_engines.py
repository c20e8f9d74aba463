"""Engines for ordering a big CSV out of core (issue #19): ours, SQLite alone, DuckDB, Polars streaming.

Usage::

    python bench/bench_engines.py --rows 1000000            # engines 0-2 (project venv)
    /work/venv-bench/bin/python bench/bench_engines.py      # all of them, 10,000,000 rows
    python bench/bench_engines.py --engines ours sqlite --csv /tmp/big.csv   # generate once, reuse
    /work/venv-bench/bin/python bench/bench_engines.py --engines duckdb --memory-limit 256MB

The side venv (never a dependency of the project)::

    python3 -m venv /work/venv-bench && /work/venv-bench/bin/pip install duckdb pandas numpy polars

The job, for every engine, on the same generated file (``data_examples/generate.py`` ``big_csv``):
give every data row (``row``: 0-based, file order) its conversation index (``conv``: conversations by
first message time, ties by their first row) and its position inside the conversation (``seq``:
by time, ties by row), reading the CSV itself, within bounded memory. Each engine runs in its own
child process; its wall seconds and its peak resident memory (VmHWM of /proc/<pid>/status, which
counts the engine's threads and its memory-mapped pages) are printed. The child then reads its
result back in row order and prints the SHA-256 of the (row, conv, seq) triples (little-endian
int64): a result equals ours when the digests are equal.

0. **read** — a baseline, not an engine: the pandas chunked read and date parse of 1-2, nothing else.
1. **ours** — what bulkimport.bigfile/planstore do: pandas reads Chat and Date in chunks of
   200,000, rows go by a hash of the key to parts of ~400,000 rows (pickled spool files), each
   part is sorted in pandas, SQLite orders the conversations (ROW_NUMBER() OVER (ORDER BY
   first_date, first_pos)); the per-row result is written per part, sorted by row, and merged
   when read back.
2. **sqlite** — pandas reads the chunks, SQLite holds every row (key, date, row), ``CREATE INDEX``
   on (key, date, row) and two window queries; ``temp_store=FILE``, a 64 MiB page cache.
3. **duckdb** — ``read_csv`` into a table of an on-disk database, window functions, the result
   read back ordered by row; ``memory_limit='1GB'``, a temp directory beside it.
4. **polars** — ``scan_csv`` with a row index, the streaming engine (``sink_parquet``), the result
   read back in batches.

Prints figures only; never asserts. Engines whose package does not import are skipped, and say so.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import math
import os
import pickle
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _common import hwm_mib

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("read", "ours", "sqlite", "duckdb", "polars")
#: Records read at once (bulkimport.bigfile.CHUNK_ROWS) and rows of one part (PART_ROWS).
CHUNK_ROWS = 200_000
PART_ROWS = 400_000
DATE_FORMAT = "%d.%m.%Y %H:%M:%S"
#: Rows per batch when a result is read back for its digest.
VERIFY_ROWS = 200_000
Batches = Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]


# ------------------------------------------------------------------------------------ the digest
class Digest:
    """SHA-256 of (row, conv, seq) triples fed in row order; checks the rows run 0, 1, 2, …"""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.rows = 0
        self.in_order = True

    def update(self, row: np.ndarray, conv: np.ndarray, seq: np.ndarray) -> None:
        row = np.asarray(row, dtype="<i8")
        expected = np.arange(self.rows, self.rows + len(row), dtype="<i8")
        self.in_order = self.in_order and bool(np.array_equal(row, expected))
        triples = np.column_stack([row, np.asarray(conv, dtype="<i8"), np.asarray(seq, dtype="<i8")])
        self.h.update(np.ascontiguousarray(triples, dtype="<i8").tobytes())
        self.rows += len(row)


def _chunks(csv: Path) -> Iterator[tuple[pd.Series, np.ndarray, np.ndarray]]:
    """(key, date as epoch seconds, row) of the CSV in chunks of CHUNK_ROWS, as bigfile reads it."""
    start = 0
    reader = pd.read_csv(csv, sep=";", usecols=["Chat", "Date"], dtype=str, keep_default_na=False,
                         chunksize=CHUNK_ROWS)
    for chunk in reader:
        dates = pd.to_datetime(chunk["Date"], format=DATE_FORMAT).to_numpy()
        secs = dates.astype("datetime64[s]").astype("int64")
        rows = np.arange(start, start + len(chunk), dtype="int64")
        start += len(chunk)
        yield chunk["Chat"].reset_index(drop=True), secs, rows


# ------------------------------------------------------------------------------------ 0. the read alone
def engine_read(csv: Path, work: Path, rows: int) -> Callable[[], Batches]:
    """The baseline: pandas' chunked read and date parse that engines 1-2 start with, nothing else."""
    for _chunk in _chunks(csv):
        pass
    return lambda: iter(())


# ------------------------------------------------------------------------------------ 1. ours
def engine_ours(csv: Path, work: Path, rows: int) -> Callable[[], Batches]:
    """Hash-split into pickled parts, sort each part in pandas, order the conversations in SQLite."""
    parts = max(1, math.ceil(rows / PART_ROWS))
    spool = work / "spool"
    spool.mkdir()
    files = [(spool / f"{b}.pkl").open("wb") for b in range(parts)]
    total = 0
    for key, secs, row in _chunks(csv):
        part = pd.util.hash_pandas_object(key, index=False).to_numpy() % np.uint64(parts)
        frame = pd.DataFrame({"key": key, "date": secs, "row": row})
        for b in np.unique(part).tolist():
            pickle.dump(frame[part == b], files[b], protocol=pickle.HIGHEST_PROTOCOL)
        total += len(frame)
    for fh in files:
        fh.close()
    con = sqlite3.connect(work / "plan.db")
    con.execute("CREATE TABLE bconvs (bucket INTEGER NOT NULL, bconv INTEGER NOT NULL, key TEXT NOT NULL, "
                "n INTEGER NOT NULL, first_date INTEGER NOT NULL, first_pos INTEGER NOT NULL, "
                "PRIMARY KEY (bucket, bconv)) WITHOUT ROWID")
    for b in range(parts):
        _ours_part(con, spool, b)
    con.execute("CREATE TABLE convs (conv INTEGER PRIMARY KEY, bucket INTEGER NOT NULL, bconv INTEGER NOT NULL)")
    con.execute("INSERT INTO convs SELECT ROW_NUMBER() OVER (ORDER BY first_date, first_pos) - 1, bucket, bconv "
                "FROM bconvs")
    con.execute("CREATE UNIQUE INDEX convs_bucket ON convs (bucket, bconv)")
    con.commit()
    for b in range(parts):  # each part's rows with their conversation index, sorted by row
        conv_of = np.array([c for (c,) in con.execute(
            "SELECT conv FROM convs WHERE bucket = ? ORDER BY bconv", (b,))], dtype="int64")
        res = np.load(spool / f"{b}.res.npy")
        (spool / f"{b}.res.npy").unlink()
        res[:, 1] = conv_of[res[:, 1]]
        res[np.argsort(res[:, 0], kind="stable")].astype("<i8").tofile(spool / f"{b}.out")
        del res
    con.close()
    return lambda: _merge_parts([spool / f"{b}.out" for b in range(parts)], total)


def _merge_parts(paths: list[Path], total: int, read_rows: int = 8192) -> Batches:
    """ours read back in row order: the parts' files (each sorted by row) merged block by block,
    read with plain reads (a memory map's pages would count in the peak)."""
    files = [p.open("rb") for p in paths]
    ahead = [np.empty((0, 3), dtype="<i8") for _ in paths]
    for a in range(0, total, VERIFY_ROWS):
        end, block = a + VERIFY_ROWS, []
        for i, fh in enumerate(files):
            while not len(ahead[i]) or ahead[i][-1, 0] < end:
                more = np.fromfile(fh, dtype="<i8", count=3 * read_rows).reshape(-1, 3)
                if not len(more):
                    break
                ahead[i] = np.concatenate([ahead[i], more])
            cut = int(np.searchsorted(ahead[i][:, 0], end))
            block.append(ahead[i][:cut])
            ahead[i] = ahead[i][cut:]
        got = np.concatenate(block)
        got = got[np.argsort(got[:, 0], kind="stable")]
        yield got[:, 0], got[:, 1], got[:, 2]
    for fh in files:
        fh.close()


def _ours_part(con: sqlite3.Connection, spool: Path, b: int) -> None:
    """One part in memory: its conversations (bconvs rows) and each row's (row, bconv, seq)."""
    pieces = []
    with (spool / f"{b}.pkl").open("rb") as fh:
        while True:
            try:
                pieces.append(pickle.load(fh))  # noqa: S301 (this process's own spool file)
            except EOFError:
                break
    (spool / f"{b}.pkl").unlink()
    if not pieces:
        np.save(spool / f"{b}.res.npy", np.empty((0, 3), dtype="int64"))
        return
    df = pd.concat(pieces, ignore_index=True) if len(pieces) > 1 else pieces[0].reset_index(drop=True)
    del pieces
    df = df.sort_values(["key", "date", "row"], kind="stable", ignore_index=True)
    bconv, keys = pd.factorize(df["key"], sort=False)
    seq = df.groupby(bconv, sort=False).cumcount().to_numpy()
    g = df.groupby(bconv, sort=True)
    heads = pd.DataFrame({"n": g.size(), "first_date": g["date"].min(), "first_pos": g["row"].min()})
    con.executemany("INSERT INTO bconvs VALUES (?, ?, ?, ?, ?, ?)", zip(
        [b] * len(heads), heads.index.tolist(), [str(k) for k in keys], heads["n"].tolist(),
        heads["first_date"].tolist(), heads["first_pos"].tolist(), strict=True))
    np.save(spool / f"{b}.res.npy", np.column_stack([df["row"].to_numpy(), bconv, seq]).astype("int64"))


# ------------------------------------------------------------------------------------ 2. SQLite alone
def engine_sqlite(csv: Path, work: Path, rows: int) -> Callable[[], Batches]:
    """Every row in an SQLite table, an index on (key, date, row), window functions over it."""
    con = sqlite3.connect(work / "rows.db", isolation_level=None)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-65536"):
        con.execute(f"PRAGMA {pragma}")
    con.execute("CREATE TABLE rows (row INTEGER PRIMARY KEY, key TEXT NOT NULL, date INTEGER NOT NULL)")
    for key, secs, row in _chunks(csv):
        con.execute("BEGIN")
        con.executemany("INSERT INTO rows VALUES (?, ?, ?)",
                        zip(row.tolist(), key.tolist(), secs.tolist(), strict=True))
        con.execute("COMMIT")
    con.execute("CREATE INDEX rows_key ON rows (key, date, row)")
    con.execute("CREATE TABLE convs (key TEXT PRIMARY KEY, conv INTEGER NOT NULL) WITHOUT ROWID")
    con.execute("INSERT INTO convs SELECT key, ROW_NUMBER() OVER (ORDER BY first_date, first_pos) - 1 FROM "
                "(SELECT key, MIN(date) AS first_date, MIN(row) AS first_pos FROM rows GROUP BY key)")
    con.execute("CREATE TABLE res (row INTEGER PRIMARY KEY, conv INTEGER NOT NULL, seq INTEGER NOT NULL)")
    con.execute("INSERT INTO res SELECT r.row, c.conv, ROW_NUMBER() OVER (PARTITION BY r.key ORDER BY r.date, "
                "r.row) - 1 FROM rows AS r JOIN convs AS c ON c.key = r.key ORDER BY r.row")

    def read() -> Batches:
        cur = con.execute("SELECT row, conv, seq FROM res ORDER BY row")
        while batch := cur.fetchmany(VERIFY_ROWS):
            a = np.array(batch, dtype="int64")
            yield a[:, 0], a[:, 1], a[:, 2]
        con.close()

    return read


# ------------------------------------------------------------------------------------ 3. DuckDB
def engine_duckdb(csv: Path, work: Path, rows: int, memory_limit: str = "1GB") -> Callable[[], Batches]:
    """read_csv into an on-disk DuckDB table (rowid = file order), window functions, a memory limit."""
    import duckdb

    con = duckdb.connect(str(work / "rows.duckdb"))
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{work / 'duckdb.tmp'}'")
    con.execute("SET preserve_insertion_order = true")
    con.execute(
        "CREATE TABLE rows AS SELECT Chat AS key, strptime(Date, ?) AS date "
        "FROM read_csv(?, delim = ';', header = true, all_varchar = true)", [DATE_FORMAT, str(csv)])
    con.execute(
        "CREATE TABLE convs AS SELECT key, row_number() OVER (ORDER BY min(date), min(rowid)) - 1 AS conv "
        "FROM rows GROUP BY key")
    con.execute(
        "CREATE TABLE res AS SELECT r.rowid AS row, c.conv, "
        "row_number() OVER (PARTITION BY r.key ORDER BY r.date, r.rowid) - 1 AS seq "
        "FROM rows AS r JOIN convs AS c USING (key) ORDER BY row")
    con.execute("CHECKPOINT")

    def read() -> Batches:
        res = con.execute("SELECT row, conv, seq FROM res ORDER BY row")
        while True:
            df = res.fetch_df_chunk(VERIFY_ROWS // 2048)
            if not len(df):
                break
            yield df["row"].to_numpy(), df["conv"].to_numpy(), df["seq"].to_numpy()
        con.close()

    return read


# ------------------------------------------------------------------------------------ 4. Polars
def engine_polars(csv: Path, work: Path, rows: int) -> Callable[[], Batches]:
    """scan_csv with a row index, the streaming engine, the result sunk to Parquet and read in batches."""
    import polars as pl

    base = pl.scan_csv(csv, separator=";", infer_schema=False, row_index_name="row").select(
        pl.col("row").cast(pl.Int64), pl.col("Chat").alias("key"),
        pl.col("Date").str.strptime(pl.Datetime("us"), DATE_FORMAT).alias("date"))
    convs = (base.group_by("key").agg(first_date=pl.col("date").min(), first_pos=pl.col("row").min(),
                                      n=pl.len())
             .sort("first_date", "first_pos").with_row_index("conv")
             .with_columns(start=pl.col("n").cum_sum() - pl.col("n")))
    res = (base.join(convs.select("key", pl.col("conv").cast(pl.Int64), "start"), on="key")
           .sort("conv", "date", "row").with_row_index("i")
           .select("row", "conv", seq=pl.col("i").cast(pl.Int64) - pl.col("start").cast(pl.Int64))
           .sort("row"))
    out = work / "result.parquet"
    res.sink_parquet(out, engine="streaming")

    def read() -> Batches:
        for df in pl.scan_parquet(out).collect_batches(chunk_size=VERIFY_ROWS, engine="streaming"):
            yield df["row"].to_numpy(), df["conv"].to_numpy(), df["seq"].to_numpy()

    return read


# ------------------------------------------------------------------------------------ a child
def child(engine: str, csv: Path, work: Path, rows: int, memory_limit: str) -> None:
    """Run one engine, then read its result back in row order for the digest; print one JSON line."""
    run: Callable[..., Callable[[], Batches]] = globals()[f"engine_{engine}"]
    kwargs = {"memory_limit": memory_limit} if engine == "duckdb" else {}
    t0, c0 = time.perf_counter(), time.process_time()
    read = run(csv, work, rows, **kwargs)
    job = time.perf_counter() - t0
    hwm_job = hwm_mib()
    digest = Digest()
    for row, conv, seq in read():
        digest.update(row, conv, seq)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    disk = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
    print(json.dumps({"engine": engine, "rows": digest.rows, "in_order": digest.in_order,
                      "job_s": job, "total_s": total, "cpu_s": cpu, "hwm_job_mib": hwm_job, "hwm_mib": hwm_mib(),
                      "disk_mib": disk / 2**20, "sha256": digest.h.hexdigest()}), flush=True)


def generate(csv: Path, rows: int) -> None:
    """The benchmark CSV (data_examples/generate.py big_csv), in a child so the parent stays small."""
    sys.path.insert(0, str(ROOT / "data_examples"))
    from generate import big_csv

    big_csv(csv, rows)


# ------------------------------------------------------------------------------------ the parent
def _versions(engine: str) -> str:
    """The version of the engine's own package (pandas and sqlite3 for ours/sqlite)."""
    if engine in ("read", "ours", "sqlite"):
        return f"pandas {pd.__version__}, SQLite {sqlite3.sqlite_version}"
    mod = __import__(engine)
    return f"{engine} {mod.__version__}"


def _disk_mib(work: Path) -> float:
    """Bytes of the files under ``work`` now (engines create and delete them as they go), MiB."""
    total = 0
    for dirpath, _dirs, files in os.walk(work):
        for name in files:
            with contextlib.suppress(OSError):  # deleted meanwhile
                total += os.stat(os.path.join(dirpath, name)).st_size
    return total / 2**20


def _env(work: Path) -> dict[str, str]:
    """The child's environment: SQLite's and Polars' temporary files in the engine's directory."""
    return dict(os.environ, SQLITE_TMPDIR=str(work), POLARS_TEMP_DIR=str(work))


def _spawn(args: list[str], tmp: Path, work: Path | None = None
           ) -> tuple[dict[str, Any] | None, float, float, float, str]:
    """Run this script as a child; (its JSON, wall seconds, peak MiB and peak disk MiB polled, stderr tail)."""
    out, err = tmp / "child.out", tmp / "child.err"
    with out.open("w") as fo, err.open("w") as fe:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], stdout=fo, stderr=fe,
                                cwd=ROOT, env=_env(work or tmp))
        peak = disk = 0.0
        polls = 0
        while proc.poll() is None:
            peak = max(peak, hwm_mib(proc.pid) or 0.0)
            if work is not None and polls % 5 == 0:
                disk = max(disk, _disk_mib(work))
            polls += 1
            time.sleep(0.05)
        wall = time.monotonic() - t0
    lines = [ln for ln in out.read_text().splitlines() if ln.startswith("{")]
    tail = " | ".join(err.read_text().strip().splitlines()[-3:])
    return (json.loads(lines[-1]) if lines and proc.returncode == 0 else None), wall, peak, disk, tail


def _available(engine: str) -> bool:
    return engine in ("read", "ours", "sqlite") or importlib.util.find_spec(engine) is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    ap.add_argument("--csv", type=Path, help="use (or generate once into) this CSV instead of a temp one")
    ap.add_argument("--memory-limit", default="1GB", help="DuckDB's memory_limit")
    ap.add_argument("--tmp", type=Path, help="where the CSV and the engines' files go (default: a temp dir)")
    ap.add_argument("--child", choices=[*ENGINES, "generate"], help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "generate":
        return generate(args.csv, args.rows)
    if args.child:
        return child(args.child, args.csv, args.work, args.rows, args.memory_limit)
    sys.path.insert(0, str(ROOT / "bench"))
    from _common import header

    header("bench/bench_engines.py — engines for ordering a big CSV out of core (issue #19)")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        csv = args.csv or tmp / f"big-{args.rows}.csv"
        if not csv.exists():
            t = time.monotonic()
            _, _, _, _, tail = _spawn(["--child", "generate", "--csv", str(csv), "--rows", str(args.rows)], tmp)
            if not csv.exists():
                sys.exit(f"could not generate {csv}: {tail}")
            print(f"generated {csv} ({csv.stat().st_size / 2**20:,.0f} MiB) in {time.monotonic() - t:.0f} s")
        print(f"{args.rows:,} rows in {csv} ({csv.stat().st_size / 2**20:,.0f} MiB)\n")
        results = _run_engines(args, csv, tmp)
    _table(results, args.rows)


def _run_engines(args: argparse.Namespace, csv: Path, tmp: Path) -> list[dict[str, Any]]:
    """Each engine in its child, one after another; its figures, or why it was skipped."""
    results = []
    for engine in args.engines:
        if not _available(engine):
            print(f"{engine}: skipped — `import {engine}` fails in {sys.executable} (run with the side venv: "
                  f"/work/venv-bench/bin/python bench/bench_engines.py)")
            results.append({"engine": engine, "skipped": True})
            continue
        work = tmp / engine
        work.mkdir()
        load = os.getloadavg()[0]
        got, wall, peak, disk, tail = _spawn(["--child", engine, "--csv", str(csv), "--work", str(work), "--rows",
                                              str(args.rows), "--memory-limit", args.memory_limit], tmp, work)
        shutil.rmtree(work, ignore_errors=True)
        if got is None:
            print(f"{engine}: FAILED after {wall:.0f} s (peak {peak:.0f} MiB): {tail}")
            results.append({"engine": engine, "failed": tail, "wall": wall, "peak": peak})
            continue
        got.update(wall=wall, peak=max(peak, got["hwm_mib"] or 0.0), load=load, version=_versions(engine),
                   disk_mib=max(disk, got["disk_mib"]))
        print(f"{engine}: {got['total_s']:.1f} s (job {got['job_s']:.1f} s, CPU {got['cpu_s']:.1f} s), peak {got['peak']:,.0f} MiB "
              f"(job {got['hwm_job_mib']:,.0f}), disk peak {got['disk_mib']:,.0f} MiB, load {load:.2f} at start; "
              f"{got['version']}")
        results.append(got)
    return results


def _table(results: list[dict[str, Any]], args_rows: int) -> None:
    """The figures side by side, and whether each result equals ours."""
    ours = next((r.get("sha256") for r in results if r["engine"] == "ours"), None)
    print(f"\n{'engine':<8} {'rows':>11} {'seconds':>8} {'job s':>7} {'CPU s':>7} {'peak MiB':>9} "
          f"{'disk MiB':>9} {'load':>5}  equals ours")
    for r in results:
        if r.get("skipped") or r.get("failed"):
            print(f"{r['engine']:<8} {'skipped (not importable)' if r.get('skipped') else 'FAILED'}")
            continue
        same = "—" if ours is None else ("yes" if r["sha256"] == ours else "NO")
        if r["engine"] == "read":
            same = "(baseline: reads and parses only)"
        elif not r["in_order"]:
            same += " (rows out of order!)"
        digest = "" if r["engine"] == "read" else r["sha256"][:12]
        print(f"{r['engine']:<8} {r['rows'] or args_rows:>11,} {r['total_s']:>8.1f} {r['job_s']:>7.1f} "
              f"{r['cpu_s']:>7.1f} {r['peak']:>9,.0f} {r['disk_mib']:>9,.0f} {r['load']:>5.2f}  {same}  {digest}")


if __name__ == "__main__":
    main()
