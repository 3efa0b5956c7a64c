"""A slow or stalling network link in front of a real `mlflow server`, for tests: a forwarding TCP
proxy on 127.0.0.1 whose threads serve real sockets.

- ``rate``: bytes per second in the upload direction (client to server), shared by all connections
  as one link is; answers come back at full speed.
- ``buffered``: the proxy reads an upload from the client at full speed and keeps what it has not
  forwarded at ``rate`` yet (as a proxy that buffers request bodies does, or a server that stores an
  upload in S3 before it answers): the client has written its last byte long before the answer comes;
- ``stall``: while set, an artifact upload (``PUT .../mlflow-artifacts/artifacts/...``) is forwarded
  for ``stall_after`` bytes, then the proxy stops reading from the client (its send buffers fill and
  its writes block) until ``hold_seconds`` pass or ``stall`` is cleared, and then closes both sides:
  the server sees a body cut short, the client a dead connection.

:func:`throttle_proxy` yields the proxy's URL; :class:`Link` is what the test turns while it runs.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlparse

CHUNK = 16 * 1024
UPLOAD_MARKER = b"/mlflow-artifacts/artifacts/"


@dataclass
class Link:
    """What the proxy does to traffic; ``stalled`` lists each upload it stalled ("PUT <path>"), and
    ``uploaded`` counts the bytes it forwarded in the upload direction."""

    rate: float | None = None
    buffered: bool = False
    stall: bool = False
    stall_after: int = 256 * 1024
    hold_seconds: float = 60.0
    stalled: list[str] = field(default_factory=list)
    uploaded: int = 0
    _free_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_turn(self, size: int) -> None:
        """Sleep until ``size`` more bytes fit the link's rate (one timeline for all connections)."""
        with self._lock:
            self.uploaded += size
            if self.rate is None:
                return
            start = max(time.monotonic(), self._free_at)
            self._free_at = start + size / self.rate
            until = self._free_at
        time.sleep(max(0.0, until - time.monotonic()))


def _request_path(data: bytes, at: int) -> str:
    """Return the request line's path around ``at`` in ``data`` (for the stalled list)."""
    start = data.rfind(b"PUT ", 0, at)
    end = data.find(b" ", at)
    return data[start + 4 if start >= 0 else at : end if end >= 0 else len(data)].decode("latin-1")


class _Connection:
    """One client connection and its own connection to the server, pumped by two threads."""

    def __init__(self, client: socket.socket, upstream: tuple[str, int], link: Link, stopping: threading.Event) -> None:
        self.client = client
        self.server = socket.create_connection(upstream)
        self.link = link
        self.stopping = stopping
        self.upload_bytes: int | None = None  # bytes of an artifact upload seen so far on this connection
        self.backlog: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # buffered: read, not yet forwarded

    def start(self) -> None:
        threading.Thread(target=self._upload, daemon=True).start()
        threading.Thread(target=self._download, daemon=True).start()
        if self.link.buffered:
            threading.Thread(target=self._drain, daemon=True).start()

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _download(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.server.recv(CHUNK):
                self.client.sendall(data)
        self.close()

    def _upload(self) -> None:
        tail, path = b"", ""
        with contextlib.suppress(OSError):
            while data := self.client.recv(CHUNK):
                seen = tail + data
                at = seen.find(UPLOAD_MARKER)
                if at >= 0:
                    self.upload_bytes = len(seen) - at
                    path = _request_path(seen, at)
                elif self.upload_bytes is not None:
                    self.upload_bytes += len(data)
                tail = seen[-len(UPLOAD_MARKER) :]
                if self.link.stall and self.upload_bytes is not None and self.upload_bytes > self.link.stall_after:
                    keep = max(0, len(data) - (self.upload_bytes - self.link.stall_after))
                    self._forward(data[:keep])
                    self._hold(path)
                    break
                self._forward(data)
        if self.link.buffered:
            self.backlog.put(None)
        else:
            self.close()

    def _forward(self, data: bytes) -> None:
        if self.link.buffered:
            self.backlog.put(data)
        else:
            self.link.wait_turn(len(data))
            self.server.sendall(data)

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while (data := self.backlog.get()) is not None:
                self.link.wait_turn(len(data))
                self.server.sendall(data)
        self.close()

    def _hold(self, path: str) -> None:
        """Read nothing more from the client until the hold ends (or the stall is cleared)."""
        self.link.stalled.append(f"PUT {path}")
        deadline = time.monotonic() + self.link.hold_seconds
        while self.link.stall and time.monotonic() < deadline and not self.stopping.is_set():
            time.sleep(0.05)


@contextlib.contextmanager
def throttle_proxy(upstream: str, link: Link) -> Iterator[str]:
    """Forward a free 127.0.0.1 port to the server at URL ``upstream`` as ``link`` says, in threads;
    yield the proxy's URL; close every connection on exit."""
    parsed = urlparse(upstream)
    target = (parsed.hostname or "127.0.0.1", parsed.port or 80)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stopping = threading.Event()
    connections: list[_Connection] = []

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            connection = _Connection(client, target, link, stopping)
            connections.append(connection)
            connection.start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join()
        listener.close()
        for connection in connections:
            connection.close()
