"""Parse speed and peak memory of the messenger readers: a generated Telegram ``result.json`` and
a generated WhatsApp chat text, each loaded with :func:`bulkimport.sources.load`.

Usage::

    python bench/sources_parse.py                      # 1 GB Telegram JSON, 100 MB WhatsApp text
    python bench/sources_parse.py --telegram-mb 100 --whatsapp-mb 20     # quicker
    python bench/sources_parse.py --dir /tmp/bench-sources --keep        # reuse generated files

The files are generated into ``--dir`` (default: a temporary folder under /tmp) by a seeded
generator: a full-account Telegram export (personal chats of a few thousand messages each,
formatted text with entities, replies, forwards, photos and placeholders, ``date_unixtime`` and
``text_entities`` as recent Telegram Desktop writes them) and an Android WhatsApp chat with
multi-line messages. Each load runs in a fresh subprocess so its peak memory (VmHWM, which
includes the interpreter and pandas, about 100 MB) is its own. Prints figures; never asserts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import header  # noqa: E402

WORDS = [
    "hello",
    "order",
    "kettle",
    "delivery",
    "tomorrow",
    "thank",
    "you",
    "please",
    "price",
    "invoice",
    "address",
    "warehouse",
    "tracking",
    "return",
    "broken",
    "lid",
    "колпак",
    "заказ",
    "доставка",
    "спасибо",
    "пожалуйста",
    "цена",
    "счёт",
    "адрес",
    "когда",
    "сегодня",
]

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import pandas as pd
import bulkimport.sources as S
path, kind = sys.argv[1], sys.argv[2]
ops = {{"Northwind Support": 7}}
t0 = time.perf_counter(); c0 = time.process_time()
src = S.load(path, operators=ops, timezone="Europe/Berlin", date_order="dmy" if kind == "whatsapp" else None)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
peak = 0
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        peak = int(line.split()[1]) * 1024
print(json.dumps({{"messages": len(src.frame), "wall": wall, "cpu": cpu, "peak": peak,
                  "skipped": sum(src.skipped.values())}}))
"""


def _words(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _tg_message(rng: random.Random, mid: int, when: int, customer: tuple[str, str]) -> dict:
    who = customer if rng.random() < 0.55 else ("Northwind Support", "user100")
    local = dt.datetime.fromtimestamp(when + 3600, dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    msg: dict = {
        "id": mid,
        "type": "message",
        "date": local,
        "date_unixtime": str(when),
        "from": who[0],
        "from_id": who[1],
    }
    r = rng.random()
    if r < 0.05:
        msg["reply_to_message_id"] = max(1, mid - rng.randint(1, 5))
    elif r < 0.07:
        msg["forwarded_from"] = "Ivan Petrov"
    if rng.random() < 0.04:
        msg["photo"] = f"chats/chat_001/photos/photo_{mid}@01-01-2024_10-00-00.jpg"
        msg["photo_file_size"], msg["width"], msg["height"] = 51234, 1280, 960
    elif rng.random() < 0.01:
        msg["file"] = "(File not included. Change data exporting settings to download.)"
        msg["file_name"], msg["media_type"] = "voice.ogg", "voice_message"
    if rng.random() < 0.25:
        text = [
            _words(rng, 2, 8) + " ",
            {"type": "bold", "text": _words(rng, 1, 3)},
            " " + _words(rng, 2, 10),
        ]
        entities = [{"type": "plain", "text": text[0]}, text[1], {"type": "plain", "text": text[2]}]
    else:
        text = _words(rng, 3, 30)
        entities = [{"type": "plain", "text": text}]
    msg["text"], msg["text_entities"] = text, entities
    return msg


def make_telegram(path: Path, megabytes: int, seed: int = 17) -> int:
    """A full-account export of about ``megabytes`` MB; returns the number of messages written."""
    rng = random.Random(seed)
    target = megabytes * 1024 * 1024
    written = n = 0
    with path.open("w", encoding="utf-8") as fh:
        head = (
            '{\n "about": "bench",\n "personal_information": {"user_id": 100, "first_name": "Northwind"},\n'
            ' "chats": {\n  "about": "",\n  "list": [\n'
        )
        fh.write(head)
        written += len(head)
        chat = 0
        while written < target:
            chat += 1
            cid = 5_000_000 + chat
            customer = (f"Customer {chat}", f"user{cid}")
            start = f'{"," if chat > 1 else ""}{{"name": "Customer {chat}", "type": "personal_chat", "id": {cid}, "messages": [\n'
            fh.write(start)
            written += len(start.encode())
            when = 1_700_000_000 + chat * 1000
            for mid in range(1, rng.randint(500, 5000)):
                when += rng.randint(5, 3600)
                line = (
                    ("," if mid > 1 else "")
                    + json.dumps(_tg_message(rng, mid, when, customer), ensure_ascii=False)
                    + "\n"
                )
                fh.write(line)
                written += len(line.encode())
                n += 1
                if written >= target:
                    break
            fh.write("]}\n")
        fh.write('  ]\n },\n "left_chats": {"about": "", "list": []}\n}\n')
    return n


def make_whatsapp(path: Path, megabytes: int, seed: int = 18) -> int:
    """An Android chat text of about ``megabytes`` MB (day-first, 24 h); returns its message count."""
    rng = random.Random(seed)
    target = megabytes * 1024 * 1024
    when = dt.datetime(2019, 1, 1, 8, 0)
    written = n = 0
    with path.open("w", encoding="utf-8") as fh:
        while written < target:
            when += dt.timedelta(seconds=rng.randint(20, 4000))
            who = "Pavel Novak" if rng.random() < 0.55 else "Northwind Support"
            text = _words(rng, 3, 25)
            if rng.random() < 0.1:
                text += "\n" + _words(rng, 2, 12)
            elif rng.random() < 0.03:
                text = "<Media omitted>"
            line = f"{when.day}/{when.month}/{when.year % 100:02d}, {when.hour:02d}:{when.minute:02d} - {who}: {text}\n"
            fh.write(line)
            written += len(line.encode())
            n += 1
    return n


def measure(path: Path, kind: str) -> dict:
    """Load ``path`` in a fresh interpreter; its wall/CPU seconds and peak memory."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD.format(root=str(ROOT)), str(path), kind],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} load failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Generate, measure, print."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--telegram-mb", type=int, default=1024)
    ap.add_argument("--whatsapp-mb", type=int, default=100)
    ap.add_argument("--dir", type=Path, default=None, help="where the generated files go (default: /tmp/…)")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the generated files")
    args = ap.parse_args()
    header("bulkimport.sources.load: messenger exports, parse speed and peak memory")
    folder = args.dir or Path(tempfile.mkdtemp(prefix="bench-sources-", dir="/tmp"))
    folder.mkdir(parents=True, exist_ok=True)
    cases = [
        ("telegram", folder / f"result-{args.telegram_mb}mb.json", args.telegram_mb, make_telegram),
        (
            "whatsapp",
            folder / f"whatsapp-{args.whatsapp_mb}mb" / "WhatsApp Chat with Pavel Novak.txt",
            args.whatsapp_mb,
            make_whatsapp,
        ),
    ]
    print(
        f"{'input':<10} {'size':>9} {'messages':>11} {'wall s':>8} {'CPU s':>8} {'msg/s':>10} {'MB/s':>7} "
        f"{'peak MB':>8}  generated in"
    )
    try:
        for kind, path, mb, make in cases:
            t = time.perf_counter()
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                make(path, mb)
            gen_s = time.perf_counter() - t
            size = path.stat().st_size
            r = measure(path, kind)
            print(
                f"{kind:<10} {size / 2**20:>7.0f}MB {r['messages']:>11,} {r['wall']:>8.1f} {r['cpu']:>8.1f} "
                f"{r['messages'] / r['wall']:>10,.0f} {size / 2**20 / r['wall']:>7.1f} {r['peak'] / 2**20:>8.0f}"
                f"  {gen_s:.0f} s"
            )
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
