"""The sandbox's HTTP layer: routes, body decoding, fault injection and statistics.

Routes: ``/rest/<method>`` and ``/rest/<method>.json`` (OAuth token in ``auth``), webhook-style
``/rest/<user_id>/<code>/<method>``, ``/oauth/token/`` and ``/oauth/authorize/``. Bodies may be JSON,
``application/x-www-form-urlencoded`` or ``multipart/form-data``; form and query keys use PHP bracket
syntax. Everything the methods mean lives in portal.py.
"""

from __future__ import annotations

import email.parser
import email.policy
import ipaddress
import json
import os
import shutil
import socket
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .disk import serve_download, serve_upload
from .faults import OAUTH_METHOD, SYSTEM_ERRORS, Fault, Faults
from .portal import Portal, Reply, decode_pairs, decode_query, error_reply, html_reply


class Stats:
    """Request counters: total, by HTTP status, by error code, by method, by fault kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self.requests = 0
            self.by_status: Counter[int | str] = Counter()
            self.by_error: Counter[str] = Counter()
            self.by_method: Counter[str] = Counter()
            self.faults: Counter[str] = Counter()

    def count(self, method: str, status: int | str, error: str | None, fault: Fault | None) -> None:
        """Record one HTTP request's outcome (status "dropped" when no answer was sent)."""
        with self._lock:
            self.requests += 1
            self.by_status[status] += 1
            self.by_method[method] += 1
            if error:
                self.by_error[error] += 1
            if fault is not None:
                self.faults[fault.kind] += 1

    def snapshot(self) -> dict[str, Any]:
        """A plain-dict copy."""
        with self._lock:
            return {"requests": self.requests, "by_status": dict(self.by_status),
                    "by_error": dict(self.by_error), "by_method": dict(self.by_method),
                    "faults": dict(self.faults)}


class SandboxServer(ThreadingHTTPServer):
    """A threading HTTP server carrying the portal it serves."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], portal: Portal, faults: Faults, stats: Stats) -> None:
        super().__init__(address, Handler)
        self.portal, self.faults, self.stats = portal, faults, stats
        self.stopping = False
        self._active = 0  # requests being handled now (idle keep-alive connections don't count)
        self._idle = threading.Condition()

    def begin_request(self) -> bool:
        """Count a request in; False once stopping (the handler then drops the connection)."""
        with self._idle:
            if self.stopping:
                return False
            self._active += 1
            return True

    def end_request(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def drain(self, timeout: float) -> bool:
        """Stop taking requests and wait until those being handled have answered (True) or timeout."""
        with self._idle:
            self.stopping = True
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet while stopping (a request still sleeping finds its store closed); else report."""
        if not self.stopping:
            super().handle_error(request, client_address)


def parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    """Request body → parameters (JSON object, urlencoded or multipart; anything else is ignored)."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return {}
    if kind in ("application/json", "text/json"):
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return {}  # the portal sees no parameters at all
        return data if isinstance(data, dict) else {}
    if kind == "application/x-www-form-urlencoded":
        return decode_query(body.decode("utf-8", errors="replace"))
    if kind == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        pairs: list[tuple[str, Any]] = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str) or part.get_filename():
                continue  # uploaded files go to $_FILES in PHP, not to the parameters
            payload = part.get_payload(decode=True)
            raw = payload if isinstance(payload, bytes) else b""
            pairs.append((name, raw.decode(part.get_content_charset() or "utf-8", errors="replace")))
        return decode_pairs(pairs)
    return {}


class Handler(BaseHTTPRequestHandler):
    """One HTTP request to the sandbox."""

    server: SandboxServer
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""

    def setup(self) -> None:
        """No Nagle delay on keep-alive connections (answers are written in one piece anyway)."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the sandbox's traffic is visible through stats() and the store."""

    def do_GET(self) -> None:
        """GET: REST calls with query parameters, the OAuth endpoints."""
        self._handle()

    def do_POST(self) -> None:
        """POST: REST calls with a body, the OAuth token endpoint."""
        self._handle()

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        if not self.server.begin_request():
            self.close_connection = True  # stopping: the store may be closing under us
            return
        try:
            self._handle_request()
        finally:
            self.server.end_request()

    def _handle_request(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        transfer = FILE_ROUTES.get(path.rstrip("/"))
        if transfer is not None:  # Drive's upload/download URLs: the body is streamed, not read here
            self._transfer(transfer, url.query)
            return
        body = self._body()
        params = decode_query(url.query)
        params.update(parse_body(self.headers.get("Content-Type", ""), body))
        portal = self.server.portal
        if path.rstrip("/") == "/oauth/token":
            self._serve(OAUTH_METHOD, lambda: portal.oauth_token(params), None)
            return
        if path.rstrip("/") == "/oauth/authorize":
            self._write("oauth.authorize", portal.oauth_authorize(params), None)
            return
        if not path.startswith("/rest/"):
            self._write("-", html_reply(404, "404 Not Found"), None)
            return
        parts = [p for p in path[len("/rest/"):].split("/") if p]
        webhook: tuple[str, str] | None = None
        if len(parts) == 3:
            webhook = (parts[0], parts[1])
        elif len(parts) != 1:
            self._write("-", error_reply(404, "ERROR_METHOD_NOT_FOUND", "Method not found!"), None)
            return
        method = parts[-1].lower().removesuffix(".json")
        token = params.pop("auth", None)
        ip = self.client_address[0]
        if not ipaddress.ip_address(ip).is_loopback:
            # The real service refuses plain http; the sandbox only speaks http, so it serves
            # loopback clients and answers every other one as the portal answers http.
            self._write(method, error_reply(400, "INVALID_REQUEST", "Https required"), None)
            return

        def call() -> Reply:
            return portal.rest(method, params, token, webhook, ip)

        self._serve(method, call, token)

    def _transfer(self, kind: str, query: str) -> None:
        """``/rest/upload.json`` (a multipart POST, streamed to disk) or ``/rest/download.json``."""
        params = decode_query(query)
        portal = self.server.portal
        ip = self.client_address[0]
        if not ipaddress.ip_address(ip).is_loopback:
            self.close_connection = True
            self._write(kind, error_reply(400, "INVALID_REQUEST", "Https required"), None)
            return
        if kind == "download":
            with portal.store.request():
                reply = serve_download(portal, params)
            self._write(kind, reply, None)
            return
        self.close_connection = True  # an upload refused early leaves its body unread
        self._serve(kind, lambda: serve_upload(portal, params, self.headers, self.rfile, ip),
                    params.get("auth"))

    def _serve(self, method: str, call: Callable[[], Reply], token: Any) -> None:
        """Apply an armed fault (if one fires) around the call, then answer."""
        fault = self.server.faults.draw(method)
        if fault is None:
            self._write(method, self._run(call), None)
            return
        kind = fault.kind
        if kind == "expire-token":
            if isinstance(token, str):
                self.server.portal.expire_tokens(token)
            self._write(method, self._run(call), fault)
            return
        if fault.after:
            reply = self._run(call)  # the method runs and commits first
            if kind == "slow":
                self.server.portal.clock.sleep(fault.delay)
                self._write(method, reply, fault)
                return
        if kind == "drop-before" or kind == "drop-after":
            self._drop(method, fault)
            return
        if kind == "redirect":
            location = self.server.portal.base_url + self.path
            self._write(method, Reply(302, b"", "text/html; charset=utf-8", {"Location": location},
                                      error="redirect"), fault)
            return
        self._write(method, _faulty_reply(kind), fault)

    def _run(self, call: Callable[[], Reply]) -> Reply:
        """Run the portal's side of a request; its writes are committed when this returns (or raises)."""
        with self.server.portal.store.request():
            return call()

    def _drop(self, method: str, fault: Fault) -> None:
        """Close the connection without an answer."""
        self.close_connection = True
        self.server.stats.count(method, "dropped", None, fault)

    def _write(self, method: str, reply: Reply, fault: Fault | None) -> None:
        if reply.path is not None:
            self._write_file(method, reply)
            return
        payload = reply.payload()
        # Counted before the answer leaves, so a client that got it sees it in stats().
        self.server.stats.count(method, reply.status, reply.error, fault)
        try:
            self.send_response(reply.status)
            if reply.status != 204:
                self.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            # Headers and body in one write (end_headers() would send the headers on their own).
            self._headers_buffer.append(b"\r\n" + payload)  # type: ignore[attr-defined]
            self.flush_headers()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


    def _write_file(self, method: str, reply: Reply) -> None:
        """Stream a file as the body (Drive downloads can be large)."""
        assert reply.path is not None
        self.server.stats.count(method, reply.status, reply.error, None)
        try:
            with open(reply.path, "rb") as fh:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(os.fstat(fh.fileno()).st_size))
                self.end_headers()
                shutil.copyfileobj(fh, self.wfile, 1 << 16)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


#: Drive's file-transfer URLs (they live under /rest/ but are not REST methods).
FILE_ROUTES = {"/rest/upload.json": "upload", "/rest/upload": "upload",
               "/rest/download.json": "download", "/rest/download": "download"}


def _faulty_reply(kind: str) -> Reply:
    """The answer a fault of ``kind`` sends instead of the method's."""
    if kind == "503":
        return error_reply(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
    if kind == "503-bare":
        return Reply(503, b"", "text/html; charset=utf-8", error="503 bare")
    if kind in SYSTEM_ERRORS:
        status, text = SYSTEM_ERRORS[kind]
        return error_reply(status, kind, text)
    if kind == "overload":
        return error_reply(503, "OVERLOAD_LIMIT", "REST API is blocked due to overload")
    if kind == "429":
        return error_reply(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")
    if kind == "500":
        return error_reply(500, "INTERNAL_SERVER_ERROR", "Internal server error")
    if kind == "500-bare":
        return Reply(500, b"Internal Server Error", "text/plain; charset=utf-8", error="500 bare")
    if kind == "html":
        return html_reply(502, "502 Bad Gateway")
    if kind == "empty":
        return Reply(200, b"", "application/json; charset=utf-8", error="empty body")
    raise ValueError(kind)
