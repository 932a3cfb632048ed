"""N concurrent waits through the async client against one local node: memory, load, event delay.

    .venv/bin/python -m benchmarks.load_waits [--waits 100 500 1000] [--polling-period 2] [--timeout SECONDS]

For each N: a fresh one-organization local node runs in a child process (so the client's memory
is measured alone); N compute plans are created EMPTY, N ``async_wait_compute_plan`` coroutines
start polling them, and only then is one ``noop`` task added to each plan. The node executes the
tasks (one at a time, oldest first), so every wait sees its plan go DOING -> DONE while all the
others are still polling. Measured per N:

- peak RSS of the client process (``ru_maxrss``; the node's own RSS beside it, via psutil when
  installed) and how much the peak grew during the waits (their own cost);
- requests per second served by the node while the waits ran (the node counts them);
- event delay = wall time when a wait returned minus the plan's ``end_date`` set by the node:
  p50 / p95 / max (while the polls keep up, the delay stays under one polling period, p50 near
  half of it; beyond that, polls queue up and the delay grows);
- waits delivered: every wait must return its own plan, DONE (anything else is reported and the
  exit status is 1).

Loopback only; every wait has a deadline (``--timeout``) and the node is stopped at the end, so
the run ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from examples import assets
from substra_flows import SubstraClient
from substra_flows import exceptions as exc

PUBLIC = {"public": True, "authorized_ids": []}


# -- the node, in its own process -----------------------------------------------------------------


def _serve_node(conn: Connection) -> None:
    """Child process: start a node, send its coordinates, count requests, stop on request."""
    from substra_flows.local_node import FaultConfig, LocalNode

    with LocalNode(organizations=1) as node:
        node.set_faults(FaultConfig(rate=0.0))  # no fault: only the request counter
        org = node.organizations[0]
        conn.send({"url": org.url, "token": org.token, "organization_id": org.organization_id})
        while True:
            command = conn.recv()
            if command == "reset":
                node.set_faults(FaultConfig(rate=0.0))
                conn.send(None)
            elif command == "stats":
                conn.send({"requests": node.fault_stats()["requests"], "rss_bytes": _rss_bytes()})
            else:
                conn.send(None)
                return


def _rss_bytes() -> int | None:
    """Current RSS of this process, via psutil when installed."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process(os.getpid()).memory_info().rss)


def _peak_rss_bytes() -> int:
    """Peak RSS of this process so far (``ru_maxrss`` is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class NodeProcess:
    """A local node served by a child process, driven through a pipe."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_node, args=(child,), name="load-waits-node")
        self._process.start()
        if not self._conn.poll(120):
            self._process.kill()
            raise RuntimeError("the local node did not start within 120 s")
        self.coordinates: dict[str, str] = self._conn.recv()

    def ask(self, command: str) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    def stop(self) -> None:
        try:
            self.ask("stop")
        except (EOFError, OSError):
            pass
        self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.kill()


# -- one load run ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """Figures of one N."""

    waits: int
    delivered: int
    failures: list[str]
    wall_seconds: float
    wait_phase_seconds: float
    requests: int
    client_requests: int
    delays: list[float]
    client_peak_rss: int
    client_rss_growth: int
    node_rss: int | None

    def percentile(self, q: float) -> float:
        """The q-quantile of the event delays (nearest rank)."""
        ordered = sorted(self.delays)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _noop_function(client: SubstraClient, workdir: Path) -> str:
    return client.add_function(
        {
            "name": "load noop",
            "file": assets.build_function_archive("noop", workdir),
            "description": assets.write_description(workdir / "noop.md", "noop"),
            "permissions": PUBLIC,
            "inputs": [{"identifier": i, **v} for i, v in assets.function_inputs("noop").items()],
            "outputs": [{"identifier": i, **v} for i, v in assets.function_outputs("noop").items()],
        }
    )


def run(n_waits: int, polling_period: float, timeout: float) -> RunResult:
    """Create N empty plans, wait on all of them, then give each one noop task; collect the figures."""
    started = time.monotonic()
    node = NodeProcess()
    try:
        coords = node.coordinates
        client = SubstraClient(url=coords["url"], token=coords["token"], read_timeout=30, backoff=0.2)
        sent = itertools.count()
        counter_lock = threading.Lock()

        def count(response: Any, *args: Any, **kwargs: Any) -> Any:
            with counter_lock:
                next(sent)
            return response

        client.transport.session.hooks["response"].append(count)
        with tempfile.TemporaryDirectory(prefix="load-waits-") as tmp:
            function_key = _noop_function(client, Path(tmp))
        plan_keys = [str(uuid.uuid4()) for _ in range(n_waits)]
        for key in plan_keys:
            client.add_compute_plan({"key": key, "name": f"load {key[:8]}", "tasks": []})
        baseline_rss = _peak_rss_bytes()
        node.ask("reset")
        first_sent = next(sent)
        returned_at: dict[str, float] = {}
        failures: list[str] = []

        async def wait_one(key: str) -> Any:
            try:
                plan = await client.async_wait_compute_plan(key, timeout=timeout, polling_period=polling_period)
            except exc.SubstraError as error:
                failures.append(f"{key}: {type(error).__name__}: {error}")
                return None
            returned_at[key] = time.time()
            return plan

        def add_tasks() -> None:
            for key in plan_keys:
                task = {
                    "task_id": str(uuid.uuid4()),
                    "function_key": function_key,
                    "worker": coords["organization_id"],
                    "inputs": [],
                    "outputs": {"model": {"permissions": PUBLIC}},
                }
                client.add_compute_plan_tasks(key, [task])

        async def main() -> list[Any]:
            waits = [asyncio.create_task(wait_one(key)) for key in plan_keys]
            await asyncio.sleep(min(polling_period, 1.0))  # every wait has polled at least once: plans are empty
            await asyncio.to_thread(add_tasks)
            return await asyncio.gather(*waits)

        phase_started = time.monotonic()
        plans = asyncio.run(main())
        phase = time.monotonic() - phase_started
        stats = node.ask("stats")
        delays = []
        delivered = 0
        for key, plan in zip(plan_keys, plans, strict=True):
            if plan is None:
                continue
            status = getattr(plan.status, "value", plan.status)
            if plan.key != key or status != "PLAN_STATUS_DONE" or plan.end_date is None:
                failures.append(f"{key}: returned {plan.key} in status {status}")
                continue
            delivered += 1
            end = plan.end_date if plan.end_date.tzinfo else plan.end_date.replace(tzinfo=timezone.utc)
            delays.append(returned_at[key] - end.timestamp())
        client.close()
        peak = _peak_rss_bytes()
        return RunResult(
            waits=n_waits,
            delivered=delivered,
            failures=failures,
            wall_seconds=time.monotonic() - started,
            wait_phase_seconds=phase,
            requests=stats["requests"],
            client_requests=next(sent) - first_sent - 1,
            delays=delays,
            client_peak_rss=peak,
            client_rss_growth=max(0, peak - baseline_rss),
            node_rss=stats["rss_bytes"],
        )
    finally:
        node.stop()


# -- report ------------------------------------------------------------------------------------------


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f} MiB"


def print_table(results: list[RunResult], polling_period: float) -> None:
    """One row per N."""
    print()
    print(f"Concurrent async waits on one local node (polling period {polling_period:g} s; {datetime.now():%Y-%m-%d})")
    header = (
        f"| {'waits':>5} | {'delivered':>9} | {'wait phase':>10} | {'req/s needed':>12} | {'req/s served':>12} | "
        f"{'delay p50':>9} | {'delay p95':>9} | {'delay max':>9} | {'client peak RSS':>15} | "
        f"{'RSS growth':>10} | {'node RSS':>8} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell) + 0) for cell in header.split("|")[1:-1]) + "|")
    for r in results:
        print(
            f"| {r.waits:>5} | {f'{r.delivered}/{r.waits}':>9} | {r.wait_phase_seconds:>8.1f} s | "
            f"{r.waits / polling_period:>12.0f} | "
            f"{r.requests / r.wait_phase_seconds:>12.0f} | {r.percentile(0.5):>7.2f} s | "
            f"{r.percentile(0.95):>7.2f} s | {max(r.delays, default=float('nan')):>7.2f} s | "
            f"{_mib(r.client_peak_rss):>15} | {_mib(r.client_rss_growth):>10} | {_mib(r.node_rss):>8} |"
        )
    for r in results:
        for failure in r.failures[:5]:
            print(f"  N={r.waits} FAILED: {failure}")
        if r.client_requests != r.requests:
            print(f"  N={r.waits}: the client sent {r.client_requests} requests, the node counted {r.requests}")


def main(argv: list[str] | None = None) -> int:
    """Run each N in turn and print the table; exit status 1 if any wait was not delivered."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--waits", type=int, nargs="+", default=[100], help="numbers of concurrent waits (e.g. 100 500 1000)"
    )
    parser.add_argument("--polling-period", type=float, default=2.0, help="seconds between two polls of one wait")
    parser.add_argument(
        "--timeout", type=float, default=None, help="deadline of every wait, in seconds (default: 300 + N)"
    )
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.waits):
        parser.error("--waits must be positive")
    results = []
    for n in args.waits:
        print(f"N={n}: creating {n} plans, waiting on all of them, then adding one noop task to each...", flush=True)
        result = run(n, args.polling_period, args.timeout if args.timeout is not None else 300.0 + n)
        print(
            f"N={n}: {result.delivered}/{n} delivered in {result.wait_phase_seconds:.1f} s "
            f"(whole run {result.wall_seconds:.1f} s)",
            flush=True,
        )
        results.append(result)
    print_table(results, args.polling_period)
    return 0 if all(r.delivered == r.waits and not r.failures for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
