"""Wall time of SubstraClient against the official SDK (remote mode), on the same local node.

    .venv/bin/python -m benchmarks.client [--tasks 2000] [--list-tasks 10000] [--repeat 3]

1. add_compute_plan of a plan of ``--tasks`` trivial tasks (chains of 10; batches of 500 for both);
2. list_task over ``--list-tasks`` registered tasks (every page).
The node runs with ``run_tasks=False`` so that nothing executes while the clients are timed.
Prints the median of ``--repeat`` runs per client, and the ratio substra-flows / SDK (goal <= 0.8).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import substra

from examples import assets
from substra_flows import SubstraClient
from substra_flows.local_node import LocalNode

CHAIN = 10


def _plan(function_key: str, worker: str, n_tasks: int) -> dict[str, Any]:
    keys = [str(uuid.uuid4()) for _ in range(n_tasks)]
    tasks = [
        {
            "task_id": key,
            "function_key": function_key,
            "worker": worker,
            "inputs": []
            if i % CHAIN == 0
            else [{"identifier": "model", "parent_task_key": keys[i - 1], "parent_task_output_identifier": "model"}],
            "outputs": {"model": {"permissions": {"public": True, "authorized_ids": []}}},
        }
        for i, key in enumerate(keys)
    ]
    return {"key": str(uuid.uuid4()), "name": "benchmark plan", "tasks": tasks}


def _timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    """Run both clients against one node and print the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--list-tasks", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalNode(organizations=1, run_tasks=False) as node:
        org = node.organizations[0]
        clients: dict[str, Any] = {
            "official SDK": substra.Client(url=org.url, token=org.token, backend_type="remote"),
            "substra-flows": SubstraClient(url=org.url, token=org.token),
        }
        function_key = clients["substra-flows"].add_function(
            {
                "name": "benchmark noop",
                "file": assets.build_function_archive("noop", Path(tmp)),
                "description": assets.write_description(Path(tmp) / "noop.md", "noop"),
                "permissions": {"public": True, "authorized_ids": []},
                "inputs": [{"identifier": i, **v} for i, v in assets.function_inputs("noop").items()],
                "outputs": [{"identifier": i, **v} for i, v in assets.function_outputs("noop").items()],
            }
        )
        add_times: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(args.repeat):
            for name, client in clients.items():
                plan = _plan(function_key, org.organization_id, args.tasks)
                add_times[name].append(_timed(lambda c=client, p=plan: c.add_compute_plan(p, batch_size=500)))

        registered = 2 * args.repeat * args.tasks
        while registered < args.list_tasks:
            clients["substra-flows"].add_compute_plan(_plan(function_key, org.organization_id, args.tasks))
            registered += args.tasks
        list_times: dict[str, list[float]] = {name: [] for name in clients}
        counts: dict[str, int] = {}
        for _ in range(args.repeat):
            for name, client in clients.items():
                start = time.perf_counter()
                counts[name] = len(client.list_task())
                list_times[name].append(time.perf_counter() - start)

    sdk, ours = "official SDK", "substra-flows"
    add = {n: statistics.median(v) for n, v in add_times.items()}
    listed = {n: statistics.median(v) for n, v in list_times.items()}
    print(f"add_compute_plan, {args.tasks} tasks (median of {args.repeat}):")
    for name in clients:
        print(f"  {name:14s} {add[name]:7.2f} s")
    print(f"  ratio substra-flows / SDK: {add[ours] / add[sdk]:.2f} (goal <= 0.8)")
    print(f"list_task, {counts[ours]} tasks (median of {args.repeat}):")
    for name in clients:
        print(f"  {name:14s} {listed[name]:7.2f} s  ({counts[name]} tasks)")
    print(f"  ratio substra-flows / SDK: {listed[ours] / listed[sdk]:.2f} (goal <= 0.8)")


if __name__ == "__main__":
    main()
