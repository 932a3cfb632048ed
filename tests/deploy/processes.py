"""Processes of the deployment tier: started by the test, on loopback, stopped by PID, bounded in time.

Every service runs in a session of its own, so that stopping it (by the PID the test started) also
ends what it forked (LocalExecutor workers, API-server workers, flow-run processes), and nothing
outlives the test. Output goes to a log file per service, read by the tests and shown when a wait
times out.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import requests

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Service:
    """One long-running command of a deployment (scheduler, triggerer, Prefect server...)."""

    def __init__(self, name: str, command: Sequence[str], env: dict[str, str], log_dir: Path, cwd: Path) -> None:
        self.name = name
        self.command = list(command)
        self.env = env
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        """PID of the running command (also its process group id)."""
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    def start(self) -> Service:
        """Start the command in a new session; output appended to the service's log file."""
        assert self.process is None or self.process.poll() is not None, f"{self.name} is already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts}: {' '.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def running(self) -> bool:
        """True while the command has not exited."""
        return self.process is not None and self.process.poll() is None

    def terminate(self, timeout: float = 30.0) -> float | None:
        """Send SIGTERM to the command's PID only (as a process manager does); return the seconds it
        took to exit, or None if it had not exited after ``timeout`` (it is then left running)."""
        assert self.process is not None
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
        return time.monotonic() - started

    def stop(self, grace: float = 20.0) -> None:
        """Stop the command and everything in its session: SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.process is None:
            return
        pgid = self.process.pid  # the session we created: its id is the PID we started
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(pgid):
                break
            time.sleep(0.5)
            if not _group_alive(pgid):
                break
        if self.process.poll() is None:
            self.process.wait(timeout=10)

    def log_text(self) -> str:
        """Everything the service printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        """The last lines of the service's log (for failure messages)."""
        return "\n".join(self.log_text().splitlines()[-lines:])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 1.0,
    services: Sequence[Service] = (),
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds, showing the
    tails of the given services' logs (and failing at once if one of them died)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (requests.RequestException, OSError) as error:
            value, last_error = None, error
        if value:
            return value
        dead = [s for s in services if s.process is not None and not s.running()]
        if dead:
            raise AssertionError(f"{what}: {dead[0].name} exited\n{_tails(dead)}")
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})\n{_tails(services)}"
    )


def _tails(services: Sequence[Service]) -> str:
    return "\n".join(f"--- {s.name} ({s.log_path}):\n{s.tail()}" for s in services)


def http_ok(url: str) -> bool:
    """True when ``url`` answers 2xx (a readiness probe)."""
    return requests.get(url, timeout=5).ok
