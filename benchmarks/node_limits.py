"""The local node under oversized and slow input: time to the refusal, node memory, responsiveness.

    .venv/bin/python -m benchmarks.node_limits [--gib 1] [--bomb-gib 2] [--slow 1100]

A fresh one-organization node runs in a child process with its default limits (``NodeLimits()``)
for each scenario. While a scenario runs, a sampler reads the node's RSS every 20 ms (/proc) and
a prober sends ``GET /info/`` every 100 ms: the table gives the time until the node answered the
hostile request, the answer, the node's peak RSS growth over its idle RSS, and the slowest
``/info/`` answer meanwhile (how long legitimate clients were stalled). Scenarios:

- JSON body of ``--gib`` GiB announced by Content-Length (refused before reading), and the same
  sent chunked without a length (read up to ``max_json_bytes``, then refused);
- multipart upload of ``--gib`` GiB + 1 MiB (read up to ``max_body_bytes``, then refused);
- zip bomb: a few MiB of zip announcing ``--bomb-gib`` GiB (refused from its central directory);
- tar.gz bomb: three members of ``--bomb-gib`` / 3 GiB each, every one under ``max_sample_bytes``,
  their sum over it (extraction counts the bytes written and stops at the limit);
- JSON nested 1,000,000 levels deep (16 MB);
- ``--slow`` connections that open and send half a request head, then a legitimate client.

Loopback only; the node is stopped after each scenario. Linux (reads /proc).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

MiB = 1024 * 1024
GiB = 1024 * MiB
ACCEPT = "application/json;version=0.0"


@dataclass
class Node:
    process: subprocess.Popen[str]
    url: str
    token: str
    port: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}", "Accept": ACCEPT}


def start_node() -> Node:
    command = [sys.executable, "-m", "substra_flows.cli", "local-node", "--organizations", "1", "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(3)]
    url = lines[2].split("url=")[1].split()[0]
    token = lines[2].split("token=")[1].split()[0]
    return Node(process, url, token, int(url.split(":")[2].split("/")[0]))


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class Watch:
    """RSS sampler and /info/ prober running beside a scenario."""

    node: Node
    peak: int = 0
    slowest_probe: float = 0.0
    failed_probes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Watch:
        self.idle = rss(self.node.process.pid)
        self._threads = [threading.Thread(target=self._sample), threading.Thread(target=self._probe)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss(self.node.process.pid))

    def _probe(self) -> None:
        session = requests.Session()
        while not self._stop.wait(0.1):
            started = time.monotonic()
            try:
                ok = session.get(f"{self.node.url}/info/", headers=self.node.headers, timeout=120).status_code == 200
            except requests.RequestException:
                ok = False
            self.slowest_probe = max(self.slowest_probe, time.monotonic() - started)
            self.failed_probes += 0 if ok else 1


def repeat(block: bytes, total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        piece = block[: total - sent]
        sent += len(piece)
        yield piece


class Sized:
    """A streamed body whose length requests announces in Content-Length."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        return repeat(b" " * MiB, self.size)


def json_announced(node: Node, size: int) -> requests.Response:
    headers = {**node.headers, "Content-Type": "application/json"}
    return requests.post(f"{node.url}/compute_plan/", data=Sized(size), headers=headers, timeout=600)


def json_chunked(node: Node, size: int) -> requests.Response:
    headers = {**node.headers, "Content-Type": "application/json"}
    return requests.post(f"{node.url}/compute_plan/", data=repeat(b" " * MiB, size), headers=headers, timeout=600)


def upload(node: Node, size: int) -> requests.Response:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="json"\r\n\r\n{{"data_manager_keys": []}}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="s"; filename="s.bin"\r\n\r\n'
    ).encode()

    def parts() -> Iterator[bytes]:
        yield head
        yield from repeat(os.urandom(MiB), size)
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {**node.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    return requests.post(f"{node.url}/data_sample/", data=parts(), headers=headers, timeout=600)


def zip_bomb(size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as bundle:
        with bundle.open("zeros.csv", "w", force_zip64=True) as entry:
            for block in repeat(b"\0" * (16 * MiB), size):
                entry.write(block)
    return buffer.getvalue()


def tar_bomb(members: int, size: int) -> bytes:
    """A tar.gz of ``members`` files of ``size`` zeros each: every member is under the limit, their sum is not."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=9) as bundle:
        for i in range(members):
            info = tarfile.TarInfo(f"zeros-{i}.csv")
            info.size = size
            bundle.addfile(info, Zeros(size))
    return buffer.getvalue()


class Zeros(io.RawIOBase):
    """``size`` zero bytes, read without holding them."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = b"\0" * count
        self.left -= count
        return count


def bomb(node: Node, archive: bytes) -> requests.Response:
    files = {"data_opener": ("opener.py", b"#"), "description": ("d.md", b"#")}
    dataset = requests.post(
        f"{node.url}/data_manager/", files=files, data={"json": json.dumps({"name": "bomb"})}, headers=node.headers
    ).json()["key"]
    spec = json.dumps({"data_manager_keys": [dataset]})
    return requests.post(
        f"{node.url}/data_sample/", files={"s": ("s.zip", archive)}, data={"json": spec}, headers=node.headers
    )


def deep(node: Node) -> requests.Response:
    body = "[" * 1_000_000 + "]" * 1_000_000
    headers = {**node.headers, "Content-Type": "application/json"}
    return requests.post(f"{node.url}/compute_plan/", data=body, headers=headers, timeout=600)


def slow_connections(node: Node, count: int) -> requests.Response:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", node.port))
            sock.sendall(b"GET /org-1/info/ HTTP/1.1\r\nHost: x\r\n")
            sockets.append(sock)
        return requests.get(f"{node.url}/info/", headers=node.headers, timeout=60)
    finally:
        for sock in sockets:
            sock.close()


def run(name: str, action: Callable[[Node], requests.Response]) -> dict[str, Any]:
    node = start_node()
    try:
        with Watch(node) as watch:
            started = time.monotonic()
            try:
                answer = action(node)
                outcome = f"{answer.status_code} {answer.json().get('detail', '')[:70]}"
            except requests.RequestException as error:
                outcome = f"client error: {type(error).__name__}"
            elapsed = time.monotonic() - started
            time.sleep(0.3)
        return {
            "scenario": name,
            "seconds": elapsed,
            "answer": outcome,
            "rss_growth_mib": max(0, watch.peak - watch.idle) / MiB,
            "idle_rss_mib": watch.idle / MiB,
            "slowest_info_s": watch.slowest_probe,
            "failed_info": watch.failed_probes,
        }
    finally:
        node.process.terminate()
        node.process.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the oversized bodies, GiB (default 1)")
    parser.add_argument("--bomb-gib", type=float, default=2.0, help="extracted size of the zip bomb, GiB (default 2)")
    parser.add_argument("--slow", type=int, default=1100, help="slow connections (default 1100)")
    args = parser.parse_args(argv)
    size = int(args.gib * GiB)
    archive = zip_bomb(int(args.bomb_gib * GiB))
    third = int(args.bomb_gib * GiB / 3)
    tarball = tar_bomb(3, third)
    scenarios: list[tuple[str, Callable[[Node], requests.Response]]] = [
        (f"JSON body, {args.gib:g} GiB announced", lambda n: json_announced(n, size)),
        (f"JSON body, {args.gib:g} GiB chunked", lambda n: json_chunked(n, size)),
        (f"upload, {args.gib:g} GiB + 1 MiB", lambda n: upload(n, size + MiB)),
        (f"zip bomb, {len(archive) / MiB:.1f} MiB -> {args.bomb_gib:g} GiB", lambda n: bomb(n, archive)),
        (
            f"tar.gz bomb, {len(tarball) / MiB:.1f} MiB -> 3 x {third / GiB:.2f} GiB",
            lambda n: bomb(n, tarball),
        ),
        ("JSON nested 1,000,000 deep", deep),
        (f"{args.slow} slow connections, then a client", lambda n: slow_connections(n, args.slow)),
    ]
    rows = [run(name, action) for name, action in scenarios]
    print(f"{'scenario':44} {'answer after':>12} {'node RSS +':>11} {'slowest /info/':>15}  answer")
    for row in rows:
        print(
            f"{row['scenario']:44} {row['seconds']:>10.2f} s {row['rss_growth_mib']:>7.0f} MiB "
            f"{row['slowest_info_s']:>13.2f} s  {row['answer']}"
            + (f" ({row['failed_info']} /info/ failed)" if row["failed_info"] else "")
        )
    print(f"idle node RSS: {rows[0]['idle_rss_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
