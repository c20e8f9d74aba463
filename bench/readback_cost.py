"""The cost of `bulkimport verify` and of settling unknown rows: calls and seconds per 1,000 conversations.

A ``bulkimport.Sandbox`` runs in this process (limits on: the standard plan's bucket of 50 draining 2
per second; clock 1000× real time, no simulated server cost). N conversations of M messages are
imported through the Sender; then

* **verify** reads every conversation back (``bulkimport.after.verify.verify``);
* **settle**: the last row of every conversation is set to ``unknown`` in the journal by hand (what a
  kill leaves, with its request long finished), and ``settle_unknown`` reads their chats back.

For each: read-back requests (a ``batch`` of 25 chats' join + first page is one request; each
further page of 50 messages one more), requests per 1,000 conversations, the seconds those take at
the standard plan's sustained bucket pace of 2 requests per second (what binds on a real portal;
the read methods' server time on a live portal is not known) and the real seconds here (client and
sandbox CPU). Prints figures only.

``--finished`` finishes every session first (what a default run does at its end): a finished session
refuses the join, so its chat is read with ``imopenlines.session.history.get``, 50 calls per batch.

Usage: python bench/readback_cost.py [--conversations 1000] [--messages 3] [--finished]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import requests  # noqa: E402

from bulkimport.after.settle import settle_unknown  # noqa: E402
from bulkimport.after.verify import estimate, verify  # noqa: E402
from bulkimport.connector import sandbox_target  # noqa: E402
from bulkimport.journal import Journal  # noqa: E402
from bulkimport.limits import STANDARD  # noqa: E402
from bulkimport.planning import FAILURE_COLUMNS, Conversation, Plan  # noqa: E402
from bulkimport.sandbox import Sandbox  # noqa: E402
from bulkimport.sending.sender import Sender  # noqa: E402

CONNECTOR = "bench_readback"
ICON = {"DATA_IMAGE": "data:image/svg+xml;charset=US-ASCII,%3Csvg%2F%3E"}


def _plan(conversations: int, messages: int) -> Plan:
    convs, rows, rid = [], [], 2
    for c in range(conversations):
        ids, msgs = [], []
        for i in range(messages):
            msgs.append({"user": {"id": f"u{c}", "name": "Ann"}, "chat": {"id": f"c{c}"},
                         "message": {"id": f"m{rid}", "date": 1_600_000_000 + 60 * i, "text": f"{c}.{i}",
                                     "disable_crm": "Y"}})
            ids.append(rid)
            rows.append({"row": rid})
            rid += 1
        convs.append(Conversation(f"c{c}", tuple(ids), tuple(msgs), frozenset({f"c{c}", f"u{c}"})))
    return Plan(pd.DataFrame(rows).set_index("row"), convs, pd.DataFrame(columns=FAILURE_COLUMNS),
                fingerprint="bench")


def _register(sb: Sandbox) -> None:
    for method, params in (
        ("imconnector.register", {"ID": CONNECTOR, "NAME": "bench", "ICON": ICON,
                                  "PLACEMENT_HANDLER": "https://example.invalid/h"}),
        ("imconnector.activate", {"CONNECTOR": CONNECTOR, "LINE": 1, "ACTIVE": 1}),
    ):
        r = requests.post(sb.rest_url + method, json={**params, "auth": sb.access_token}, timeout=30)
        r.raise_for_status()


def _measure(name: str, client: Any, conversations: int, run: Any) -> None:
    before, real0 = client.governor.requests, time.perf_counter()
    calls = run()
    requests_made, real = client.governor.requests - before, time.perf_counter() - real0
    per = 1000 / conversations
    print(f"{name:7s} {calls:6d} requests (governor: {requests_made})  {calls * per:7.0f} requests/1000 conv  "
          f"{calls * per / STANDARD.drain_rate:7.0f} s/1000 conv at the standard bucket's 2/s  "
          f"{real * per:6.2f} real s/1000 conv here (client + sandbox CPU)")


def _verified(result: Any) -> int:
    if result.refused or result.missing_rows:
        print(f"verify: refused={result.refused} missing={len(result.missing_rows)}")
    return int(result.calls)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=3)
    ap.add_argument("--finished", action="store_true", help="finish every session before reading back")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Sandbox(time_scale=1000.0, cost_per_call=0.0,
                                                       cost_per_message=0.0) as sb:
        _register(sb)
        target = sandbox_target(sb, line=1)  # OAuth with refresh: tokens live 3.6 real seconds here
        client, clock = target.client, target.clock
        state = Path(tmp) / "j.db"
        plan = _plan(args.conversations, args.messages)
        sent = Sender(plan, portal=sb.url, line=1, connector=CONNECTOR, client=client, clock=clock,
                      state=state, progress=False).run().summary
        if sent.stopped:
            print(f"the import stopped: {sent.stopped} {sent.stopped_message}")
        print(f"{args.conversations} conversations x {args.messages} messages imported; standard plan")
        if args.finished:
            from bulkimport.after.finish import finish_sessions

            with Journal.open(state) as journal:
                print(f"finished: {finish_sessions(client, journal)}")
        journal = Journal.open(state)
        try:
            calls, eta = estimate(journal)
            print(f"verify estimate: {calls} calls, ETA {eta:.0f} s (bucket pace)")
            _measure("verify", client, args.conversations, lambda: _verified(verify(journal, client, clock=clock)))
            last = [(f"m{2 + c * args.messages + args.messages - 1}",) for c in range(args.conversations)]
            journal.executemany("UPDATE rows SET status='unknown', hold=1, code='interrupted', request=NULL "
                                "WHERE rid = (SELECT rid FROM row_ids WHERE mid = ?)", last)
            _measure("settle", client, args.conversations,
                     lambda: settle_unknown(journal, client, connector=CONNECTOR, line=1, clock=clock,
                                            notify=lambda _t: None).calls)
            print(f"after settling: {journal.counts()}")
        finally:
            journal.close()


if __name__ == "__main__":
    main()
