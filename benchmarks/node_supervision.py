"""The local node's executor supervision and task confinement: how long recovering takes.

    .venv/bin/python -m benchmarks.node_supervision [--rounds 5]

One node (in this process) with a 3 s task time limit. Each round:

- the executor is killed (SIGKILL) while a task sleeps in it: time until that task reads FAILED,
  the executor's restart time (start of the new process to its first answer), and the time until
  a task queued behind it (reading a model made before the kill) is DONE;
- a task sleeps past the time limit: how far past the limit it reads FAILED;
- a task's plan is cancelled while it sleeps: time until the task reads CANCELED;

then once, ``stop()`` while a task sleeps. Also the cost confinement adds to each task start: a
trivial Python process run directly and through the Landlock launcher (median of 20 each).
Medians and maxima are printed; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from substra_flows import SubstraClient
from substra_flows.local_node import LocalNode
from substra_flows.local_node.sandbox import Confinement, clean_environment, landlock_abi
from substra_flows.models import ComputeTaskStatus
from tests.live._node_functions import MODEL_IN, SLEEP, parent_input, register, task

NODE_OPTIONS = {"model_export": True, "build_seconds": 0.0, "build_env": {"PIP_NO_INDEX": "1"}}


def until(condition: Callable[[], bool], timeout: float = 120.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError("condition never held")
        time.sleep(0.02)
    return time.monotonic() - started


def submit(client: SubstraClient, tasks: list[dict]) -> str:
    key = str(uuid.uuid4())
    client.add_compute_plan({"key": key, "name": f"bench {key[:8]}", "tasks": tasks})
    return key


def launcher_overhead(samples: int = 20) -> tuple[float, float]:
    """Median seconds of ``python -c pass``, directly and confined."""
    direct, confined_times = [], []
    with tempfile.TemporaryDirectory() as folder:
        env = clean_environment(Path(folder))
        for _ in range(samples):
            started = time.monotonic()
            subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
            direct.append(time.monotonic() - started)
            with Confinement([], [Path(folder)]) as confined:
                started = time.monotonic()
                subprocess.run(
                    confined.argv([sys.executable, "-c", "pass"]), env=env, pass_fds=confined.fds, check=True
                )
                confined_times.append(time.monotonic() - started)
    return statistics.median(direct), statistics.median(confined_times)


def row(name: str, values: list[float]) -> str:
    return f"{name:62} median {statistics.median(values):6.2f} s   max {max(values):6.2f} s   (n={len(values)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    limit = 3.0
    figures: dict[str, list[float]] = {k: [] for k in ("failed", "restart", "next", "overshoot", "cancel")}
    with (
        tempfile.TemporaryDirectory() as folder,
        LocalNode(organizations=1, task_time_limit=limit, **NODE_OPTIONS) as node,
    ):
        org = node.organizations[0]
        worker = org.organization_id
        with SubstraClient(url=org.url, token=org.token) as client:
            sleep = register(client, Path(folder), "sleep", SLEEP.format(seconds=600), inputs=MODEL_IN)
            noop = register(client, Path(folder), "noop", SLEEP.format(seconds=600), inputs=MODEL_IN)

            def state(key: str) -> ComputeTaskStatus:
                return client.get_task(key).status

            for _ in range(args.rounds):
                parent = str(uuid.uuid4())
                plan = submit(client, [task(parent, noop, worker)])
                client.wait_compute_plan(plan, timeout=120, polling_period=0.1)
                doomed, after = str(uuid.uuid4()), str(uuid.uuid4())
                submit(client, [task(doomed, sleep, worker)])
                until(lambda key=doomed: state(key) is ComputeTaskStatus.executing)
                time.sleep(0.5)
                restarts = len(node.executor_restart_seconds)
                os.kill(node.executor_pid, signal.SIGKILL)
                killed = time.monotonic()
                client.add_compute_plan_tasks(plan, [task(after, noop, worker, inputs=parent_input(parent))])
                until(lambda key=doomed: state(key) is ComputeTaskStatus.failed)
                figures["failed"].append(time.monotonic() - killed)
                until(lambda key=after: state(key) is ComputeTaskStatus.done)
                figures["next"].append(time.monotonic() - killed)
                figures["restart"].extend(node.executor_restart_seconds[restarts:])

                slow = str(uuid.uuid4())
                submit(client, [task(slow, sleep, worker)])
                until(lambda key=slow: state(key) is ComputeTaskStatus.executing)
                started = time.monotonic()
                until(lambda key=slow: state(key) is ComputeTaskStatus.failed)
                figures["overshoot"].append(time.monotonic() - started - limit)

                cancelled = str(uuid.uuid4())
                plan = submit(client, [task(cancelled, sleep, worker)])
                until(lambda key=cancelled: state(key) is ComputeTaskStatus.executing)
                time.sleep(0.5)
                started = time.monotonic()
                client.cancel_compute_plan(plan)
                until(lambda key=cancelled: state(key) is ComputeTaskStatus.canceled)
                figures["cancel"].append(time.monotonic() - started)

            last = str(uuid.uuid4())
            submit(client, [task(last, sleep, worker)])
            until(lambda: state(last) is ComputeTaskStatus.executing)
        started = time.monotonic()
        node.stop()
        stop_seconds = time.monotonic() - started
    direct, confined = launcher_overhead()
    print(row("executor killed mid-task -> that task FAILED", figures["failed"]))
    print(row("executor restart (new process to its first answer)", figures["restart"]))
    print(row("executor killed -> next task (reading an older model) DONE", figures["next"]))
    print(row(f"task past its {limit:g} s time limit -> FAILED, beyond the limit", figures["overshoot"]))
    print(row("cancel of an executing task -> CANCELED", figures["cancel"]))
    print(f"{'stop() while a task runs':62} {stop_seconds:6.2f} s")
    print(
        f"{'task start, python -c pass: direct / confined (Landlock ABI ' + str(landlock_abi()) + ')':62} "
        f"{direct * 1000:6.0f} ms / {confined * 1000:.0f} ms (+{(confined - direct) * 1000:.0f} ms a task)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
