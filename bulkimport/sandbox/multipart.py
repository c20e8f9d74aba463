"""A streaming ``multipart/form-data`` reader for the Drive upload URL: file parts go straight to disk.

The email-based parser of server.py reads a whole body into memory, which is right for REST calls
and wrong for files of any size; this one reads the socket in chunks and writes the one file part
asked for into a file, hashing it on the way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import BinaryIO

_CHUNK = 1 << 16
_HEADER_LIMIT = 16 * 1024


class BodyError(Exception):
    """The body is not the multipart message it claims to be (or ended early)."""


class Body:
    """The request body: ``Content-Length`` bytes, or a chunked transfer encoding, as a stream."""

    def __init__(self, raw: BinaryIO, length: int | None, chunked: bool) -> None:
        self.raw, self.left, self.chunked, self.done = raw, length or 0, chunked, False
        self._chunk_left = 0

    def read(self, n: int = _CHUNK) -> bytes:
        """Up to ``n`` bytes; b"" at the end of the body."""
        if self.done:
            return b""
        if not self.chunked:
            if self.left <= 0:
                self.done = True
                return b""
            data = self.raw.read(min(n, self.left))
            if not data:
                raise BodyError("the body ended early")
            self.left -= len(data)
            return data
        if self._chunk_left == 0:
            line = self.raw.readline(1024).split(b";", 1)[0].strip()
            try:
                self._chunk_left = int(line, 16)
            except ValueError:
                raise BodyError("bad chunk size") from None
            if self._chunk_left == 0:
                while self.raw.readline(1024).strip():
                    pass  # trailers
                self.done = True
                return b""
        data = self.raw.read(min(n, self._chunk_left))
        if not data:
            raise BodyError("the body ended early")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self.raw.readline(8)  # the CRLF after a chunk
        return data

    def drain(self) -> None:
        """Read and discard what is left."""
        while self.read():
            pass


def _disposition(headers: bytes) -> tuple[str | None, str | None]:
    """(name, filename) of a part's Content-Disposition."""
    name = filename = None
    for line in headers.decode("utf-8", "replace").split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() != "content-disposition":
            continue
        for item in value.split(";")[1:]:
            k, _, v = item.strip().partition("=")
            v = v.strip().strip('"')
            if k.lower() == "name":
                name = v
            elif k.lower() == "filename":
                filename = v
    return name, filename


def save_part(
    body: Body, boundary: str, field: str, open_sink: Callable[[], BinaryIO]
) -> tuple[str, int, str] | None:
    """Stream the file part named ``field`` into ``open_sink()``; (filename, size, sha256) or None."""
    delimiter = b"--" + boundary.encode("latin-1")
    marker = b"\r\n" + delimiter
    buf = b"\r\n"  # so the first delimiter looks like every later one
    found: tuple[str, int, str] | None = None

    def fill() -> bool:
        nonlocal buf
        data = body.read()
        buf += data
        return bool(data)

    while marker not in buf:  # skip the preamble
        if len(buf) > _HEADER_LIMIT:
            buf = buf[-len(marker) :]
        if not fill():
            raise BodyError("no multipart boundary")
    buf = buf[buf.index(marker) + len(marker) :]
    while True:
        while len(buf) < 2 and fill():
            pass
        if buf.startswith(b"--"):
            body.drain()
            return found
        while b"\r\n\r\n" not in buf:
            if len(buf) > _HEADER_LIMIT or not fill():
                raise BodyError("bad part headers")
        headers, buf = buf.split(b"\r\n\r\n", 1)
        name, filename = _disposition(headers)
        wanted = found is None and name == field and filename is not None
        sink = open_sink() if wanted else None
        digest, size = hashlib.sha256(), 0
        try:
            while True:
                at = buf.find(marker)
                if at >= 0:
                    piece, buf = buf[:at], buf[at + len(marker) :]
                else:
                    safe = max(0, len(buf) - len(marker))
                    piece, buf = buf[:safe], buf[safe:]
                if sink is not None:  # other parts (fields, other files) are skipped
                    sink.write(piece)
                    digest.update(piece)
                    size += len(piece)
                if at >= 0:
                    break
                if not fill():
                    raise BodyError("the body ended inside a part")
        finally:
            if sink is not None:
                sink.close()
        if wanted:
            found = (filename or "", size, digest.hexdigest())
