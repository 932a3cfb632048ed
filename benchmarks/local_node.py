"""Throughput of the local node against the official SDK's own subprocess mode, on the same plan.

    .venv/bin/python -m benchmarks.local_node [--tasks 200]

Both run the same plan of trivial ``noop`` tasks (chains of 10, so parents must finish first)
on one organization. The SDK's subprocess mode runs the plan synchronously inside
``add_compute_plan``; the node runs it in the background while the official SDK, in remote mode,
polls it with ``wait_compute_plan``. Prints seconds, tasks per second and the ratio node / SDK
(goal: >= 0.8).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import substra
from substra.sdk import schemas

from examples import assets
from substra_flows.local_node import LocalNode

CHAIN_LENGTH = 10


def _noop_function(client: substra.Client, workdir: Path) -> str:
    spec = schemas.FunctionSpec(
        name="benchmark noop",
        file=assets.build_function_archive("noop", workdir),
        description=assets.write_description(workdir / "noop.md", "noop"),
        permissions=schemas.Permissions(public=True, authorized_ids=[]),
        inputs=[schemas.FunctionInputSpec(identifier=i, **v) for i, v in assets.function_inputs("noop").items()],
        outputs=[schemas.FunctionOutputSpec(identifier=i, **v) for i, v in assets.function_outputs("noop").items()],
    )
    return client.add_function(spec)


def _plan(function_key: str, worker: str, n_tasks: int) -> dict[str, Any]:
    keys = [str(uuid.uuid4()) for _ in range(n_tasks)]
    tasks = []
    for i, key in enumerate(keys):
        parent = [] if i % CHAIN_LENGTH == 0 else [keys[i - 1]]
        tasks.append(
            {
                "task_id": key,
                "function_key": function_key,
                "worker": worker,
                "inputs": [
                    {"identifier": "model", "parent_task_key": p, "parent_task_output_identifier": "model"}
                    for p in parent
                ],
                "outputs": {"model": {"permissions": {"public": True, "authorized_ids": []}}},
            }
        )
    return {"key": str(uuid.uuid4()), "name": "benchmark plan", "tasks": tasks}


@contextlib.contextmanager
def _quiet() -> Any:
    """Silence the SDK's progress bar and the tasks' own output (fd level) during a timed run."""
    with open(os.devnull, "w") as devnull:
        saved = os.dup(1), os.dup(2)
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_subprocess_mode(n_tasks: int, workdir: Path) -> float:
    """Seconds the SDK's subprocess mode takes to run the plan."""
    previous = Path.cwd()
    os.chdir(workdir)  # the SDK writes local-worker/ into the current directory
    try:
        client = substra.Client(backend_type="subprocess")
        function_key = _noop_function(client, workdir)
        plan = _plan(function_key, client.organization_info().organization_id, n_tasks)
        start = time.perf_counter()
        with _quiet():
            client.add_compute_plan(plan)
        return time.perf_counter() - start
    finally:
        os.chdir(previous)


def run_local_node(n_tasks: int, workdir: Path) -> float:
    """Seconds from submission to DONE for the same plan on the local node, driven by the SDK in remote mode."""
    with LocalNode(organizations=1) as node:
        org = node.organizations[0]
        client = substra.Client(url=org.url, token=org.token, backend_type="remote")
        function_key = _noop_function(client, workdir)
        plan = _plan(function_key, org.organization_id, n_tasks)
        start = time.perf_counter()
        client.add_compute_plan(plan)
        done = client.wait_compute_plan(plan["key"], polling_period=0.2, timeout=3600)
        elapsed = time.perf_counter() - start
        assert done.status.value == "PLAN_STATUS_DONE", done.status
        return elapsed


def main() -> None:
    """Run both and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sdk_dir, node_dir = Path(tmp, "sdk"), Path(tmp, "node")
        sdk_dir.mkdir()
        node_dir.mkdir()
        sdk_seconds = run_subprocess_mode(args.tasks, sdk_dir)
        node_seconds = run_local_node(args.tasks, node_dir)
    sdk_rate, node_rate = args.tasks / sdk_seconds, args.tasks / node_seconds
    print(f"plan: {args.tasks} noop tasks in chains of {CHAIN_LENGTH}")
    print(f"SDK subprocess mode : {sdk_seconds:8.2f} s  {sdk_rate:6.2f} tasks/s")
    print(f"local node (remote) : {node_seconds:8.2f} s  {node_rate:6.2f} tasks/s")
    print(f"throughput ratio node / SDK: {node_rate / sdk_rate:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
