"""The client against a hostile server: endless downloads, answers trickled one byte at a time.

    .venv/bin/python -m benchmarks.client_limits [--download-gib 1] [--trickle-pause 0.25]

A raw-socket server on 127.0.0.1 (a thread per connection) plays each misbehaviour; the client is
``SubstraClient`` with its defaults but for the limit under test. Printed per scenario: how long
the call took to end, what it raised, the client's peak RSS growth (ru_maxrss) and the files left
in the download folder (the goal is none, whatever happened).

- an endless body at full loopback speed, ``max_download_bytes`` = ``--download-gib`` GiB;
- the same, the downloading process killed (SIGKILL) after 2 s;
- a status line and headers trickled one byte every ``--trickle-pause`` s, ``total_timeout=5``;
- ``wait_compute_plan(timeout=3, polling_period=2)`` while every status answer trickles.
"""

from __future__ import annotations

import argparse
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from substra_flows import SubstraClient
from substra_flows import exceptions as exc

TOKEN = "0123456789abcdef0123456789abcdef01234567"
GiB = 1024**3


def serve(mode: str, pause: float) -> tuple[socket.socket, str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def one(conn: socket.socket) -> None:
        with conn, suppress(OSError):
            conn.recv(65536)
            if mode == "endless":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
                block = b"\0" * (1 << 20)
                while True:
                    conn.sendall(block)
            body = b'{"status": "PLAN_STATUS_DOING"}'
            answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
                len(body),
                body,
            )
            for byte in answer:
                conn.sendall(bytes([byte]))
                time.sleep(pause)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, f"http://127.0.0.1:{listener.getsockname()[1]}/org-1"


def timed(action: Callable[[], object]) -> tuple[float, str]:
    started = time.monotonic()
    try:
        action()
        outcome = "returned"
    except exc.SubstraError as error:
        outcome = f"{type(error).__name__}: {str(error)[:90]}"
    return time.monotonic() - started, outcome


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


KILLED = f"""
import sys
from substra_flows import SubstraClient
SubstraClient(url=sys.argv[1], token="{TOKEN}", max_download_bytes=0).download_model("{uuid.uuid4()}", sys.argv[2])
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--download-gib", type=float, default=1.0)
    parser.add_argument("--trickle-pause", type=float, default=0.25)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        listener, url = serve("endless", args.trickle_pause)
        cap = int(args.download_gib * GiB)
        before = peak_rss_mib()
        with SubstraClient(url=url, token=TOKEN, max_download_bytes=cap) as client:
            seconds, outcome = timed(lambda: client.download_model(str(uuid.uuid4()), folder))
        left = len(list(Path(folder).iterdir()))
        rows.append(
            (
                f"endless body, max_download_bytes={args.download_gib:g} GiB",
                seconds,
                outcome,
                peak_rss_mib() - before,
                left,
            )
        )
        child = subprocess.Popen([sys.executable, "-c", KILLED, url, folder])
        time.sleep(2.0)
        child.send_signal(signal.SIGKILL)
        child.wait()
        rows.append(
            ("endless body, downloader killed after 2 s", 2.0, "SIGKILL", 0.0, len(list(Path(folder).iterdir())))
        )
        listener.close()
        listener, url = serve("trickle", args.trickle_pause)
        with SubstraClient(url=url, token=TOKEN, total_timeout=5, max_attempts=1) as client:
            seconds, outcome = timed(lambda: client.get_compute_plan(str(uuid.uuid4())))
            rows.append(("trickled answer, total_timeout=5", seconds, outcome, 0.0, 0))
        with SubstraClient(url=url, token=TOKEN) as client:
            key = str(uuid.uuid4())
            seconds, outcome = timed(lambda: client.wait_compute_plan(key, timeout=3, polling_period=2))
            rows.append(("wait_compute_plan(timeout=3, polling_period=2)", seconds, outcome, 0.0, 0))
        listener.close()
    print(f"{'scenario':52} {'ended after':>11} {'RSS +':>8} {'files left':>10}  outcome")
    for name, seconds, outcome, rss, left in rows:
        print(f"{name:52} {seconds:>9.2f} s {rss:>5.0f} MiB {left:>10}  {outcome}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
