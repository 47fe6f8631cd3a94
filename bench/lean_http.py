"""A small HTTP/1.1 client over asyncio streams, for load generators on loopback.

httpx spends about 5 ms of CPU on each request here; at 200 requests a
second that is half of a two-core machine, taken from the server being
measured. This client does only what a load generator needs: POST a body
with fixed headers, read the status and the body (`Content-Length` or
chunked), keep connections alive and reuse them. It sends to one host:port
given as a loopback URL, never anywhere else.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# uvicorn closes a connection idle for 5 s; one idle this long is not reused,
# so a request seldom meets a connection the server is closing.
IDLE_EXPIRY_S = 3.0


class ProtocolError(Exception):
    """The server's answer was not HTTP/1.1 this client can read; says why."""


@dataclass(frozen=True)
class Answer:
    """A response: its status and body."""

    status: int
    body: bytes


class _ClosedWhileIdle(ConnectionError):
    """The connection ended before any byte of the answer came."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class LeanClient:
    """POSTs to one loopback server over a pool of keep-alive connections.

    A request takes an idle connection or opens one: the number of connections
    grows with the requests in flight, as an open-loop generator needs, up to
    `most_connections`; past that a request waits for one to come free. A
    reused connection that ends before any byte of the answer was one the
    server closed while it was idle: the request goes again on another
    connection, and `retried` counts it.
    """

    def __init__(
        self, base_url: str, headers: dict[str, str], most_connections: int = 2_000
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
            raise ValueError(
                f"base_url: expected http://<loopback>:<port>, got {base_url!r}"
            )
        self._host = parts.hostname
        self._port = parts.port or 80
        fixed = {"host": f"{self._host}:{self._port}", **headers}
        self._head = "".join(f"{name}: {value}\r\n" for name, value in fixed.items())
        self._idle: list[tuple[_Connection, float]] = []
        self._slots = asyncio.Semaphore(most_connections)
        self.opened = 0
        self.retried = 0

    async def post(self, path: str, body: bytes) -> Answer:
        """Sends `body` to `path` and reads the whole answer.

        Raises:
            OSError: the connection failed.
            ProtocolError: the answer could not be read.
        """
        request = (
            f"POST {path} HTTP/1.1\r\n{self._head}content-length: {len(body)}\r\n\r\n"
        ).encode() + body
        async with self._slots:
            return await self._send(request)

    async def _send(self, request: bytes) -> Answer:
        while self._idle:
            connection, since = self._idle.pop()
            if time.monotonic() - since > IDLE_EXPIRY_S:
                connection.close()
                continue
            try:
                return await self._exchange(connection, request)
            except _ClosedWhileIdle:
                self.retried += 1
        reader, writer = await asyncio.open_connection(self._host, self._port)
        self.opened += 1
        try:
            return await self._exchange(_Connection(reader, writer), request)
        except _ClosedWhileIdle as exc:
            raise ConnectionResetError(
                "the server closed a new connection before answering"
            ) from exc

    async def _exchange(self, connection: _Connection, request: bytes) -> Answer:
        try:
            connection.writer.write(request)
            await connection.writer.drain()
            head = await connection.reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            connection.close()
            if not getattr(exc, "partial", b""):
                raise _ClosedWhileIdle from exc
            raise
        except BaseException:
            connection.close()
            raise
        try:
            status, keep, body = await _read_answer(head, connection.reader)
        except BaseException:
            connection.close()
            raise
        if keep:
            self._idle.append((connection, time.monotonic()))
        else:
            connection.close()
        return Answer(status, body)

    async def close(self) -> None:
        """Closes every idle connection."""
        while self._idle:
            connection, _ = self._idle.pop()
            connection.close()
            await connection.writer.wait_closed()


async def _read_answer(
    head: bytes, reader: asyncio.StreamReader
) -> tuple[int, bool, bytes]:
    """Status, whether the connection may be reused, and the body after `head`."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1."):
        raise ProtocolError(f"status line: expected HTTP/1.x, got {lines[0][:80]!r}")
    status = int(rest.split(" ", 1)[0])
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    keep = fields.get("connection", "").lower() != "close" and version == "HTTP/1.1"
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return status, keep, await _read_chunks(reader)
    if "content-length" in fields:
        return status, keep, await reader.readexactly(int(fields["content-length"]))
    # Neither: the body runs until the server closes the connection.
    return status, False, await reader.read()


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailers, if any, end with an empty line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
