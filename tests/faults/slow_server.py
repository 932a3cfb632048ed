"""A hostile HTTP server on 127.0.0.1 that answers too slowly, or without end, on purpose.

Raw sockets, one thread per connection: each mode is an exact misbehaviour (a status line sent
one byte at a time, a body trickled, an endless body) that no well-behaved server framework
would produce.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

#: seconds between two trickled bytes
TRICKLE_PAUSE = 0.25
#: a trickling answer stops (and the connection closes) after this many seconds
TRICKLE_FOR = 8.0


def _plan(key: str) -> bytes:
    return json.dumps({"key": key, "owner": "MyOrg1MSP", "name": "slow", "status": "PLAN_STATUS_DOING"}).encode()


def _answer(mode: str, path: str) -> tuple[bytes, bytes]:
    """(head sent at once, part sent one byte at a time) for ``mode``."""
    body = _plan(path.rstrip("/").rsplit("/", 1)[-1]) if "/compute_plan/" in path else b"{}"
    length = b"Content-Length: %d\r\n" % len(body)
    status = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    if mode == "trickle_head":
        return b"", status + length + b"\r\n" + body
    if mode == "trickle_body":
        return status + length + b"\r\n", body
    if mode == "trickle_close":  # no length: the body ends when the connection closes
        return status + b"Connection: close\r\n\r\n", body + b" " * 10_000
    raise ValueError(mode)


def _serve_one(conn: socket.socket, mode: str) -> None:
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            data = conn.recv(65536)
            if not data:
                return
            request += data
        path = request.split(b" ", 2)[1].decode()
        with suppress(OSError):
            if mode.startswith("endless"):  # "endless": loopback speed; "endless_paced": about 3 MB/s
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
                block = b"\0" * 65536
                while True:
                    conn.sendall(block)
                    if mode == "endless_paced":
                        time.sleep(0.02)
            head, trickled = _answer(mode, path)
            conn.sendall(head)
            stop = time.monotonic() + TRICKLE_FOR
            for byte in trickled:
                if time.monotonic() > stop:
                    return
                conn.sendall(bytes([byte]))
                time.sleep(TRICKLE_PAUSE)


@contextmanager
def slow_server(mode: str) -> Iterator[str]:
    """Serve ``mode`` on a free loopback port; yield the base URL of an organization on it."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve_one, args=(conn, mode), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/org-1"
    finally:
        listener.close()
