"""A server that answers one byte at a time, or never stops answering, cannot hold the client.

The bounds below check that a call *ends* (today's requests would read for as long as the server
trickles); they are generous on purpose and are not performance goals.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from substra_flows import SubstraClient
from substra_flows import exceptions as exc

from .slow_server import TRICKLE_FOR, slow_server

TOKEN = "0123456789abcdef0123456789abcdef01234567"
SLACK = 1.5  # scheduling noise on a shared 2-core machine, far below TRICKLE_FOR


def _client(url: str, **kwargs) -> SubstraClient:
    options = {"url": url, "token": TOKEN, "read_timeout": 5.0, "max_attempts": 1, **kwargs}
    return SubstraClient(**options)


@pytest.mark.parametrize("mode", ["trickle_head", "trickle_body", "trickle_close"])
def test_a_trickling_answer_is_cut_at_total_timeout(mode: str) -> None:
    with slow_server(mode) as url, _client(url, total_timeout=1.0) as client:
        started = time.monotonic()
        with pytest.raises(exc.Timeout, match="total_timeout=1s"):
            client.get_compute_plan(str(uuid.uuid4()))
        assert time.monotonic() - started < 1.0 + SLACK < TRICKLE_FOR


def test_retries_stop_at_the_enclosing_deadline() -> None:
    with slow_server("trickle_body") as url, _client(url, total_timeout=100, max_attempts=5, backoff=0.1) as client:
        started = time.monotonic()
        with client.transport.within(1.5), pytest.raises(exc.Timeout, match="caller's deadline"):
            client.get_compute_plan(str(uuid.uuid4()))
        assert time.monotonic() - started < 1.5 + SLACK


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_a_wait_honours_its_timeout_against_a_slow_server(driver: str) -> None:
    """Each status request takes longer than the whole wait: the wait still ends one period after its timeout."""
    timeout, period = 2.0, 1.0
    with slow_server("trickle_body") as url, _client(url) as client:
        key = str(uuid.uuid4())
        started = time.monotonic()
        with pytest.raises(exc.FutureTimeoutError) as raised:
            if driver == "sync":
                client.wait_compute_plan(key, timeout=timeout, polling_period=period)
            else:
                asyncio.run(client.async_wait_compute_plan(key, timeout=timeout, polling_period=period))
        elapsed = time.monotonic() - started
    assert elapsed < timeout + period + SLACK
    assert "after 2s (timeout" in str(raised.value) and key in str(raised.value)
    assert isinstance(raised.value.__cause__, exc.Timeout)


def test_an_endless_download_stops_at_max_download_bytes_and_leaves_nothing(tmp_path: Path) -> None:
    with slow_server("endless") as url, _client(url, max_download_bytes=4 * 1024 * 1024) as client:
        with pytest.raises(exc.InvalidResponse, match="max_download_bytes=4194304"):
            client.download_model(str(uuid.uuid4()), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_endless_download_cut_by_total_timeout_leaves_nothing(tmp_path: Path) -> None:
    with slow_server("endless_paced") as url, _client(url, total_timeout=1.0, max_download_bytes=0) as client:
        with pytest.raises(exc.Timeout):
            client.download_model(str(uuid.uuid4()), tmp_path)
    assert list(tmp_path.iterdir()) == []


_KILLED_DOWNLOADER = """
import sys
from substra_flows import SubstraClient
client = SubstraClient(url=sys.argv[1], token="0123456789abcdef0123456789abcdef01234567", max_download_bytes=0)
print("downloading", flush=True)
client.download_model("6e1f1a5c-45d3-4a47-9d8e-0b1c9d2e7f10", sys.argv[2])
"""


@pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="unnamed temporary files are a Linux feature")
def test_a_download_killed_mid_file_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "models"
    target.mkdir()
    with slow_server("endless_paced") as url:
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED_DOWNLOADER, url, str(target)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "downloading"
            time.sleep(1.5)  # megabytes are on disk by now
            assert _writing_into(child.pid, target), "the download had not started: the test proves nothing"
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(timeout=30)
    assert list(target.iterdir()) == []


def _writing_into(pid: int, folder: Path) -> bool:
    """Whether process ``pid`` holds a file open in ``folder`` (an unnamed one shows as ``#ino (deleted)``)."""
    fds = Path(f"/proc/{pid}/fd")
    links = []
    for fd in fds.iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue
    return any(link.startswith(str(folder)) for link in links)
