"""Wall time of SubstraClient (and compat.Client) against the official SDK (remote mode), on one local node.

    .venv/bin/python -m benchmarks.client [--repeat 5] [--imports 5]

Goals of issue 13, each printed as a ratio substra-flows / SDK:
1. list_task over the 1,000 tasks of one plan: <= 0.6;
2. list_task over the 10,000 tasks of one plan: <= 0.6;
3. add_compute_plan of 1,000 trivial tasks (chains of 10; batches of 500 for every client): <= 0.7;
4. ``import substra_flows`` in a fresh process: < 150 ms (median of ``--imports`` processes), with
   ``from substra_flows import SubstraClient`` and ``import substra`` shown beside it.
The node runs in a process of its own (as a real server would: the clients' parsing and the server's
serializing do not share one interpreter) with ``run_tasks=False``, so nothing executes while the
clients are timed. Every figure is the median of ``--repeat`` runs, the clients taking turns.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import substra

from examples import assets
from substra_flows import SubstraClient, compat
from substra_flows.local_node import LocalNode

CHAIN = 10
SDK, OURS, COMPAT = "official SDK", "substra-flows", "compat.Client"


def _plan(function_key: str, worker: str, n_tasks: int) -> dict[str, Any]:
    keys = [str(uuid.uuid4()) for _ in range(n_tasks)]
    parent = {"identifier": "model", "parent_task_output_identifier": "model"}
    tasks = [
        {
            "task_id": key,
            "function_key": function_key,
            "worker": worker,
            "inputs": [] if i % CHAIN == 0 else [{**parent, "parent_task_key": keys[i - 1]}],
            "outputs": {"model": {"permissions": {"public": True, "authorized_ids": []}}},
        }
        for i, key in enumerate(keys)
    ]
    return {"key": str(uuid.uuid4()), "name": "benchmark plan", "tasks": tasks}


def _serve_node(pipe: Connection) -> None:
    """Child process: run a one-organization node without task execution until told to stop."""
    with LocalNode(organizations=1, run_tasks=False) as node:
        org = node.organizations[0]
        pipe.send({"url": org.url, "token": org.token, "organization_id": org.organization_id})
        pipe.recv()


@contextlib.contextmanager
def _node_process() -> Iterator[dict[str, str]]:
    """The URL, token and organization id of a node served by a child process (stopped on exit)."""
    ours, theirs = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_serve_node, args=(theirs,), daemon=True)
    process.start()
    try:
        if not ours.poll(120):
            raise SystemExit("the local node did not start within 120 s")
        yield ours.recv()
    finally:
        ours.send("stop")
        process.join(30)
        if process.is_alive():
            process.kill()


def _timed(action: Callable[[], Any]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _import_ms(statement: str, processes: int) -> float:
    """Median wall time of ``statement`` in fresh interpreters (interpreter start-up excluded)."""
    code = f"import time; s = time.perf_counter(); {statement}; print((time.perf_counter() - s) * 1000)"
    times = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(processes)]
    return statistics.median(times)


def main() -> None:
    """Run every client against one node and print the medians, the ratios and the import times."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--imports", type=int, default=5)
    parser.add_argument("--plan-tasks", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, _node_process() as org:
        url, token, worker = org["url"], org["token"], org["organization_id"]
        clients: dict[str, Any] = {
            SDK: substra.Client(url=url, token=token, backend_type="remote"),
            OURS: SubstraClient(url=url, token=token),
            COMPAT: compat.Client(url=url, token=token, backend_type="remote"),
        }
        function_key = clients[OURS].add_function(
            {
                "name": "benchmark noop",
                "file": assets.build_function_archive("noop", Path(tmp)),
                "description": assets.write_description(Path(tmp) / "noop.md", "noop"),
                "permissions": {"public": True, "authorized_ids": []},
                "inputs": [{"identifier": i, **v} for i, v in assets.function_inputs("noop").items()],
                "outputs": [{"identifier": i, **v} for i, v in assets.function_outputs("noop").items()],
            }
        )
        timings: dict[str, dict[str, list[float]]] = {}

        def record(what: str, name: str, seconds: float) -> None:
            timings.setdefault(what, {}).setdefault(name, []).append(seconds)

        add_what = f"add_compute_plan, {args.plan_tasks:,} tasks"
        for _ in range(args.repeat):
            for name, client in clients.items():
                plan = _plan(function_key, worker, args.plan_tasks)
                record(add_what, name, _timed(lambda c=client, p=plan: c.add_compute_plan(p, batch_size=500)))

        for size in (1000, 10000):
            plan = _plan(function_key, worker, size)
            clients[OURS].add_compute_plan(plan, batch_size=500)
            filters = {"compute_plan_key": [plan["key"]]}
            what = f"list_task, the {size:,} tasks of one plan"
            for _ in range(args.repeat):
                for name, client in clients.items():
                    start = time.perf_counter()
                    count = len(client.list_task(filters=filters))
                    record(what, name, time.perf_counter() - start)
                    if count != size:
                        raise SystemExit(f"{name} listed {count} tasks, not {size}")

    goals = {add_what: 0.7}
    for what, per_client in timings.items():
        medians = {name: statistics.median(v) for name, v in per_client.items()}
        print(f"{what} (median of {args.repeat}):")
        for name, seconds in medians.items():
            print(f"  {name:14s} {seconds:7.3f} s")
        goal = goals.get(what, 0.6)
        print(f"  ratio substra-flows / SDK: {medians[OURS] / medians[SDK]:.2f} (goal <= {goal})")
        print(f"  ratio compat.Client / SDK: {medians[COMPAT] / medians[SDK]:.2f}")

    print(f"import time in a fresh process (median of {args.imports}):")
    light = _import_ms("import substra_flows", args.imports)
    print(f"  import substra_flows                    {light:6.0f} ms (goal < 150 ms)")
    client_import = _import_ms("from substra_flows import SubstraClient", args.imports)
    print(f"  from substra_flows import SubstraClient {client_import:6.0f} ms")
    print(f"  import substra (official SDK)           {_import_ms('import substra', args.imports):6.0f} ms")


if __name__ == "__main__":
    main()
