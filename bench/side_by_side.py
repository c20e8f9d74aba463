"""The same import through bulkimport, fast-bitrix24 and b24pysdk, against the same sandbox.

Run it with the bench venv (the two libraries are never project dependencies):

    python3 -m venv /work/benchvenv
    /work/benchvenv/bin/pip install -e . -r bench/requirements-bench.txt
    /work/benchvenv/bin/python bench/side_by_side.py [--full]

Workload: short chats plus one long conversation (its chunks must arrive in order), cheap server
cost so the leaky bucket (50 requests, 2 per second) binds, time scale 1: the other libraries pace
themselves by the wall clock, so the sandbox must run in real time for a fair comparison. Each
library is used as its documentation shows, with the sandbox application's OAuth tokens:

* bulkimport — ``Sender(plan).run()`` (one request at a time, batches of one chunk per
  conversation, journal);
* fast-bitrix24 — ``Bitrix(rest_url, token_func=…).call("imconnector.send.messages", items)``
  (its README's OAuth recipe: ``token_func`` does the refresh grant; it batches and sends in
  parallel with its own leaky-bucket and operating-time throttling);
* b24pysdk — ``client.call_batches([client.imconnector.send.messages(...) …])``. It builds
  ``https://<domain>/rest/`` URLs and has no scheme option, while the sandbox speaks plain http,
  so a local TLS terminator with a self-signed certificate stands in front of the sandbox and is
  trusted through ``REQUESTS_CA_BUNDLE`` (the ``requests`` setting b24pysdk's transport honours).
  No refresh token is given to it: its refresh goes to a fixed internet host, which this bench
  must never contact (the sandbox's tokens outlive the run). It paces nothing itself: 503s are
  retried (3 attempts, 1 s then 2 s apart), as its README says.

Printed per library: messages/s, refusals (503/429) the sandbox sent, whether the job completed,
and messages lost, duplicated or out of order in the sandbox's store.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

COST_PER_CALL = 0.0005
COST_PER_MESSAGE = 0.0002


def workload(messages: int) -> list[int]:
    """One conversation of a fifth of the messages, the rest as 2-message chats."""
    big = messages // 5
    return [big, *([2] * ((messages - big) // 2))]


def chunks(plan: Any, size: int = 50) -> list[list[dict[str, Any]]]:
    """The plan's MESSAGES in plan order, at most ``size`` per call, one conversation per call."""
    out = []
    for conv in plan.conversations:
        for start, stop in conv.chunks(size):
            out.append(list(conv.messages[start:stop]))
    return out


# ------------------------------------------------------------------------------------------ clients
def run_bulkimport(portal: Any, plan: Any, tmp: Path) -> dict[str, Any]:
    from bulkimport.sending.sender import Sender

    client = C.bulkimport_client(portal, tmp)
    out = Sender(plan, line=1, connector=C.CONNECTOR, state=tmp / "journal.db", progress=False,
                 client=client).run()
    s = out.summary
    return {"completed": s.complete and s.stopped is None, "note": s.stopped_message or ""}


def run_fast_bitrix24(portal: Any, plan: Any, tmp: Path) -> dict[str, Any]:
    import requests
    from fast_bitrix24 import Bitrix

    state = {"refresh": portal.refresh_token}

    async def get_new_token() -> str:  # the README's OAuth recipe (refresh grant), on the sandbox
        result = requests.get(portal.oauth_url, timeout=10, params={
            "grant_type": "refresh_token", "client_id": portal.client_id,
            "client_secret": portal.client_secret, "refresh_token": state["refresh"]})
        data = result.json()
        state["refresh"] = data["refresh_token"]  # rotated: keep the new one
        return str(data["access_token"])

    bx = Bitrix(portal.rest_url, token_func=get_new_token, verbose=False)
    items = [{"CONNECTOR": C.CONNECTOR, "LINE": 1, "MESSAGES": m} for m in chunks(plan)]
    bx.call("imconnector.send.messages", items)
    return {"completed": True, "note": ""}


class _TLSProxy:
    """https://127.0.0.1:PORT → the sandbox's http://127.0.0.1:PORT (b24pysdk only builds https URLs)."""

    def __init__(self, target: str, tmp: Path) -> None:
        host, port = target.split("//", 1)[1].split(":")
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        self.cert = cert

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(host, int(port), timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.domain = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_b24pysdk(portal: Any, plan: Any, tmp: Path) -> dict[str, Any]:
    proxy = _TLSProxy(portal.url, tmp)
    old = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = str(proxy.cert)
    try:
        from b24pysdk import BitrixApp, BitrixToken, Client

        # README "OAuth application". No refresh_token: its refresh endpoint is a fixed internet
        # host this bench must never contact; the sandbox's token outlives the run, and the
        # instance flag below only guarantees that an unexpected expiry fails instead of calling out.
        app = BitrixApp(client_id=portal.client_id, client_secret=portal.client_secret)
        token = BitrixToken(domain=proxy.domain, auth_token=portal.access_token, bitrix_app=app)
        token._AUTO_REFRESH_EXPIRED_TOKEN = False
        client = Client(token)
        requests_ = [client.imconnector.send.messages(C.CONNECTOR, 1, m) for m in chunks(plan)]
        result = client.call_batches(requests_).result
        errors = result.result_error
        n_err = len(errors) if errors else 0
        return {"completed": n_err == 0,
                "note": f"{n_err} commands answered with an error" if n_err else ""}
    finally:
        if old is None:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
        else:
            os.environ["REQUESTS_CA_BUNDLE"] = old
        proxy.close()


CLIENTS: dict[str, Callable[[Any, Any, Path], dict[str, Any]]] = {
    "bulkimport": run_bulkimport, "fast-bitrix24": run_fast_bitrix24, "b24pysdk": run_b24pysdk}


def version(name: str) -> str:
    if name == "bulkimport":
        import bulkimport

        return str(getattr(bulkimport, "__version__", "?"))
    try:
        from importlib.metadata import version as v

        return v(name)
    except Exception:
        return "not installed"


def run(name: str, sizes: list[int], timeout: float) -> dict[str, Any]:
    from bulkimport.sandbox import Sandbox

    plan = C.build_plan(sizes)
    want = C.expected_ids(plan)
    n = plan.messages
    with tempfile.TemporaryDirectory() as tmp, Sandbox(time_scale=1.0, cost_per_call=COST_PER_CALL,
                                                       cost_per_message=COST_PER_MESSAGE, seed=1,
                                                       token_lifetime=86400) as portal:
        C.setup_connector(C.bulkimport_client(portal, Path(tmp)))
        portal.advance(600)
        portal.reset_stats()
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["outcome"] = CLIENTS[name](portal, plan, Path(tmp))
            except BaseException as exc:
                box["outcome"] = {"completed": False,
                                  "note": f"{type(exc).__name__}: {str(exc)[:160]}".replace("\n", " ")}
                box["trace"] = traceback.format_exc(limit=4)

        t0 = time.perf_counter()
        worker = threading.Thread(target=target, daemon=True)
        worker.start()
        worker.join(timeout)
        elapsed = time.perf_counter() - t0
        if worker.is_alive():
            box["outcome"] = {"completed": False, "note": f"still running after {timeout:.0f} s: abandoned"}
        stats = portal.stats()
        check = C.store_check(portal, want)
    out = box["outcome"]
    distinct = n - check["lost"]
    return {"client": name, "version": version(name), "messages": n, "elapsed": elapsed,
            "rate": distinct / elapsed if elapsed else 0.0, "requests": stats["requests"],
            "http503": stats["by_status"].get(503, 0), "http429": stats["by_status"].get(429, 0),
            "by_error": stats["by_error"], **check, **out, "trace": box.get("trace", "")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="20,000 messages (default 10,000)")
    ap.add_argument("--messages", type=int, default=None)
    ap.add_argument("--only", default="", help="comma-separated: bulkimport,fast-bitrix24,b24pysdk")
    ap.add_argument("--timeout", type=float, default=300.0, help="give up on a library after this many s")
    args = ap.parse_args()
    n = args.messages or (20_000 if args.full else 10_000)
    sizes = workload(n)
    C.header("bench/side_by_side.py — bulkimport vs fast-bitrix24 vs b24pysdk on one sandbox (issue 6, part 2)")
    x = 50
    calls = sum(-(-s // 50) for s in sizes)
    r = max(-(-calls // 50), -(-sizes[0] // 50))
    t_ideal = max(0, r - x) / 2
    print(f"workload: {sum(sizes)} messages: one conversation of {sizes[0]} + {len(sizes) - 1} chats of 2; "
          f"server cost {COST_PER_CALL:g} s/call + {COST_PER_MESSAGE:g} s/message; standard limits 50/2; "
          f"time scale 1\nceiling: {calls} calls in ≥ {r} requests → ≥ {t_ideal:.1f} s "
          + (f"(≤ {sum(sizes) / t_ideal:.0f} msg/s) for a client that never gets refused" if t_ideal else
             "(inside the bucket's burst: the bucket does not bind)"))
    wanted = [c for c in args.only.split(",") if c] or list(CLIENTS)
    rows = []
    for name in wanted:
        res = run(name, sizes, args.timeout)
        rows.append(res)
        print(f"\n--- {name} {res['version']}: {'completed' if res['completed'] else 'DID NOT COMPLETE'}"
              f"{': ' + res['note'] if res['note'] else ''}")
        print(f"  {res['elapsed']:.1f} s, {res['rate']:.0f} msg/s stored; {res['requests']} HTTP requests; "
              f"refusals: 503 ×{res['http503']}, 429 ×{res['http429']}; errors by code {res['by_error']}")
        print(f"  sandbox store: {res['stored']} stored of {res['messages']}: lost {res['lost']}, duplicated "
              f"{res['duplicated']}, out-of-order chats {res['out_of_order_chats']}, duplicate chats "
              f"{res['duplicate_chats']}")
        if res["trace"] and os.environ.get("BENCH_TRACE"):
            print(res["trace"])
    print("\nsummary:")
    print(f"  {'client':22} {'done':>5} {'s':>7} {'msg/s':>7} {'req':>6} {'503':>5} {'429':>5} {'lost':>6} "
          f"{'dup':>5} {'disorder':>8}")
    for res in rows:
        print(f"  {res['client'] + ' ' + res['version']:22} {'yes' if res['completed'] else 'NO':>5} "
              f"{res['elapsed']:7.1f} {res['rate']:7.0f} {res['requests']:6} {res['http503']:5} {res['http429']:5} "
              f"{res['lost']:6} {res['duplicated']:5} {res['out_of_order_chats']:8}")
    print(json.dumps({"side_by_side": [{k: v for k, v in r.items() if k != "trace"} for r in rows]}, default=str))
    ours = next((r for r in rows if r["client"] == "bulkimport"), None)
    ok = ours is None or (ours["completed"] and ours["lost"] == 0 and ours["duplicated"] == 0
                          and ours["out_of_order_chats"] == 0 and ours["http503"] == 0 and ours["http429"] == 0)
    print(f"\nbulkimport: {C.verdict(ok)} complete, exactly once, in order, never refused")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
