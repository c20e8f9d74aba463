"""The HTTP exchange of a request in flight, and the threads that run it.

Only the exchange leaves the calling thread: choosing, journalling and settling stay there, so every
answer settles exactly its own rows in one transaction.
"""

from __future__ import annotations

import threading
from queue import SimpleQueue
from typing import Any

from .scheduling import _Request


def _exchange(client: Any, req: _Request) -> None:
    """The HTTP exchange of one request (any thread): fills ``req``'s outcome, never raises."""
    try:
        if len(req.commands) == 1:
            ((key, (method, params)),) = req.commands.items()
            answer = client.call_full(method, params, acquired=True)
            req.results, req.errors, req.times = {key: answer.result}, {}, {key: answer.time}
        else:
            br = client.batch(req.commands, acquired=True)
            req.results, req.errors, req.times = br.results, br.errors, br.times
    except BaseException as exc:  # handed to the settling thread, which re-raises what is not ours
        req.error = exc


class _Workers:
    """Threads that run the HTTP exchanges of requests in flight and hand each back on ``done``.

    Also with one request in flight, so that the calling thread stays free to acknowledge a Ctrl-C
    while it waits. Daemon threads: after a second Ctrl-C the journal already says which rows were
    cut, so the process does not wait for an answer nobody will read.
    """

    def __init__(self, count: int, client: Any, done: SimpleQueue[_Request]) -> None:
        self._jobs: SimpleQueue[_Request | None] = SimpleQueue()
        self._threads = [
            threading.Thread(
                target=self._loop, args=(client, done), name=f"bulkimport-send-{i}", daemon=True
            )
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self, client: Any, done: SimpleQueue[_Request]) -> None:
        while True:
            req = self._jobs.get()
            if req is None:
                return
            _exchange(client, req)
            done.put(req)

    def submit(self, req: _Request) -> None:
        """Start ``req``'s exchange on a free thread."""
        self._jobs.put(req)

    def close(self) -> None:
        """Let the threads end once they are idle (never waits for one on the wire)."""
        for _ in self._threads:
            self._jobs.put(None)
