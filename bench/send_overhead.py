"""The sender's own overhead (journal, scheduling, encoding, frame) against an instant fake portal.

Prints rows/s for a plan of N rows in C conversations; the portal answers at once, so the figure is
what bulkimport itself costs per row (the real pace is set by the portal's limits, see
docs/sending.md). Usage: python bench/send_overhead.py [rows] [conversations]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bulkimport.clock import ManualClock
from bulkimport.planning import FAILURE_COLUMNS, Conversation, Plan
from bulkimport.portal.client import Client, MockTransport, RawResponse
from bulkimport.portal.encoding import decode_query
from bulkimport.sending.sender import Sender


def build(rows: int, convs: int) -> Plan:
    per = max(1, rows // convs)
    conversations, index = [], []
    rid = 2
    for c in range(convs):
        ids = tuple(range(rid, rid + per))
        msgs = tuple(
            {
                "user": {"id": f"u{c}"},
                "message": {"id": f"m{r}", "date": 1_600_000_000 + r, "text": f"message {r} & more"},
                "chat": {"id": f"c{c}"},
            }
            for r in ids
        )
        conversations.append(Conversation(f"c{c}", ids, msgs, frozenset({f"c{c}", f"u{c}"})))
        index.extend(ids)
        rid += per
    frame = pd.DataFrame({"row": index, "x": 1}).set_index("row")
    return Plan(frame, conversations, pd.DataFrame(columns=FAILURE_COLUMNS), 50, "bench")


def answer(url: str, body: dict[str, Any]) -> RawResponse:
    def items(messages: list[dict[str, Any]]) -> dict[str, Any]:
        res = [
            {
                "SUCCESS": True,
                "user": "1",
                "message": {"id": m["message"]["id"]},
                "session": {"ID": "1", "CHAT_ID": "1"},
            }
            for m in messages
        ]
        return {"SUCCESS": True, "DATA": {"RESULT": res}}

    t = {"duration": 0.01 * 1, "processing": 0.01, "operating": 0, "operating_reset_at": 0}
    if url.endswith("/batch"):
        out = {k: items(decode_query(v.split("?", 1)[1])["MESSAGES"]) for k, v in body["cmd"].items()}
        return MockTransport.json(
            200,
            {"result": {"result": out, "result_error": [], "result_time": {k: t for k in out}}, "time": t},
        )
    return MockTransport.json(200, {"result": items(body["MESSAGES"]), "time": t})


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    convs = int(sys.argv[2]) if len(sys.argv) > 2 else 5_000
    plan = build(rows, convs)
    clock = ManualClock()
    client = Client("https://bench.bitrix24.ru", "token", clock=clock, session=MockTransport(answer))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        out = Sender(
            plan, line=1, connector="bench", state=Path(tmp) / "j.db", progress=False, client=client
        ).run()
        elapsed = time.perf_counter() - started
    s = out.summary
    print(
        f"{s.counts['sent']} rows in {convs} conversations: {elapsed:.1f} s wall, "
        f"{s.counts['sent'] / elapsed:,.0f} rows/s of sender overhead, {s.requests} requests"
    )


if __name__ == "__main__":
    main()
