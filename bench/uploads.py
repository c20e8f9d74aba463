"""Upload throughput (MB/s, files/s) and the client's peak memory for staging attachments on Drive.

Generates ``--mb`` megabytes of random attachments in /tmp (a mix: 80 % of the files small enough
for base64 ``fileContent``, the rest 8–40 MB through the streamed two-step upload), then stages
them with ``bulkimport.sending.uploads.stage`` against the sandbox portal in a SUBPROCESS (`python
-m bulkimport sandbox --no-limits --cost-per-call 0 --cost-per-message 0`: its CPU, memory and
simulated server time are not counted), with a client governor whose limits never bind. Prints
wall seconds, MB/s, files/s, the client's peak RSS growth and tracemalloc's Python peak; the goal
is a peak far below the largest file (nothing is ever held whole, let alone as base64, for big ones).

Usage: python bench/uploads.py [--mb 1024] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
from client_overhead import start_sandbox, stop_sandbox


def generate(folder: Path, total_mb: float, seed: int = 0) -> list[tuple[str, int]]:
    """Random files adding up to ``total_mb`` MB: (relative path, size) in order."""
    rng = random.Random(seed)
    left, files, i = int(total_mb * 1e6), [], 0
    block = os.urandom(1 << 20)
    while left > 0:
        size = rng.randint(8_000_000, 40_000_000) if rng.random() < 0.2 else rng.randint(20_000, 1_500_000)
        size = min(size, left)
        name = f"f{i:05d}.{'jpg' if i % 3 else 'pdf'}"
        with (folder / name).open("wb") as fh:
            for start in range(0, size, len(block)):
                fh.write(block[: min(len(block), size - start)])
        files.append((name, size))
        left -= size
        i += 1
    return files


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=1024.0, help="megabytes of attachments (default 1024)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    from bulkimport.limits import STANDARD
    from bulkimport.portal.auth import Auth
    from bulkimport.portal.client import Client
    from bulkimport.portal.drive import SMALL_FILE
    from bulkimport.sending import uploads

    C.header(f"bench/uploads.py — staging {args.mb:g} MB of attachments on the sandbox's Drive (issue 18)")
    tmp = Path(tempfile.mkdtemp(prefix="bulkimport-uploads-", dir="/tmp"))
    try:
        media = tmp / "media"
        media.mkdir()
        t = time.perf_counter()
        made = generate(media, args.mb)
        print(
            f"generated {len(made)} files, {sum(s for _, s in made) / 1e6:,.0f} MB in "
            f"{time.perf_counter() - t:.1f} s; {sum(s > SMALL_FILE for _, s in made)} above "
            f"{SMALL_FILE / 1e6:.1f} MB (two-step upload), largest {max(s for _, s in made) / 1e6:.1f} MB"
        )
        proc, creds = start_sandbox(tmp)
        try:
            auth = Auth(
                client_id=creds["client_id"],
                client_secret=creds["client_secret"],
                access_token=creds["access_token"],
                refresh_token=creds["refresh_token"],
                oauth_url=creds["oauth_url"],
                token_file=tmp / "tokens.json",
                env={},
            )
            unbounded = STANDARD.with_(
                name="unbounded", bucket_size=10**9, drain_rate=1e9, operating_limit=1e12
            )
            client = Client(creds["url"], auth, limits=unbounded)
            files = {rel: uploads.LocalFile(rel, rel, size, [str(i)]) for i, (rel, size) in enumerate(made)}
            before = rss_mb()
            tracemalloc.start()
            wall, cpu = time.perf_counter(), time.process_time()
            staged = uploads.stage(
                files,
                client,
                tmp / "journal.db",
                "bench",
                lambda rel: (media / rel).open("rb"),
                max_bytes=1e12,
            )
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            after = rss_mb()
        finally:
            stop_sandbox(proc)
        ok = sum(f.status == "uploaded" for f in staged.files.values())
        total = sum(s for _, s in made) / 1e6
        print(
            f"uploaded {ok} of {len(made)} files, {total:,.0f} MB in {wall:.1f} s wall ({cpu:.1f} s client CPU)"
        )
        print(f"throughput: {total / wall:,.1f} MB/s, {len(made) / wall:,.1f} files/s")
        print(
            f"client memory: peak RSS {after:,.0f} MB (grew {after - before:,.0f} MB during the uploads); "
            f"Python allocations peak {peak / 1e6:,.1f} MB (tracemalloc)"
        )
        return 0 if ok == len(made) else 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
