"""What deferring buys: worker-slot seconds of a long plan wait, and how many waits one triggerer holds.

    .venv/bin/python -m benchmarks.airflow_deferral [--plan-seconds 32] [--waits 500 1000] [--polling-period 2]

1. Worker-slot seconds while a compute plan of one ``--plan-seconds`` task runs on a local node:
   ``SubstraAddComputePlanOperator`` blocking (``execute`` holds the slot until the plan is done)
   against deferrable (``execute`` submits and defers; the trigger waits in an event loop standing
   in for the triggerer; ``execute_complete`` resumes). Slot seconds = the time the operator's own
   code runs (Airflow's per-try start-up cost, the same in both modes, is left out). Goal:
   deferrable <= 5 % of blocking.
2. Concurrent plan waits in one triggerer process: N ``SubstraComputePlanTrigger`` run in one
   asyncio loop of a separate process (so its memory is measured alone), against N empty plans
   of the node; once every trigger has polled, one ``noop`` task is added to each plan and the
   node runs them one at a time. Reported per N: events delivered (goal: N, every one a success),
   how many waits were pending at once, requests per second, event delay (event time minus the
   plan's end date), event-loop lag, peak RSS and its growth. Goal: >= 500.

Prints figures and ratios only; nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import multiprocessing
import os
import sys
import tarfile
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

PUBLIC = {"public": True, "authorized_ids": []}
SLEEP_FUNCTION = '''import time

import substratools as tools


@tools.register
def sleep(inputs, outputs, task_properties):
    """Sleeps, then writes a tiny model: a task whose duration is known."""
    time.sleep({seconds})
    with open(outputs["model"], "w") as f:
        f.write("slept")


if __name__ == "__main__":
    tools.execute()
'''


def airflow_environment(home: Path) -> None:
    """A throw-away Airflow home (never ~/airflow); must run before anything imports airflow."""
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"


def connection_env(conn_id: str, url: str, token: str) -> None:
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({"conn_type": "substra", "host": url, "password": token})


class BenchTI:
    """The bits of a task instance the operator touches: identity and XCom pushes."""

    def __init__(self, run_id: str) -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index = "benchmark", run_id, "plan", -1
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def sleep_archive(dest: Path, seconds: float) -> Path:
    """A function archive whose ``sleep`` function sleeps ``seconds``."""
    entries = {
        "Dockerfile": (
            b"FROM python:3.11-slim\nRUN pip install substratools==1.0.0\nCOPY function.py .\n"
            b'ENTRYPOINT ["python3", "function.py", "--function-name", "sleep"]\n'
        ),
        "function.py": SLEEP_FUNCTION.format(seconds=seconds).encode(),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "sleep.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return path


def register_function(client: Any, workdir: Path, name: str, archive: Path) -> str:
    from examples import assets

    return client.add_function(
        {
            "name": f"benchmark {name}",
            "file": archive,
            "description": assets.write_description(workdir / f"{name}.md", name),
            "permissions": PUBLIC,
            "inputs": [{"identifier": i, **v} for i, v in assets.function_inputs("noop").items()],
            "outputs": [{"identifier": i, **v} for i, v in assets.function_outputs("noop").items()],
        }
    )


def one_task_plan(function_key: str, worker: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "tasks": [
            {
                "task_id": "only",
                "function_key": function_key,
                "worker": worker,
                "inputs": [],
                "outputs": {"model": {"permissions": PUBLIC}},
            }
        ],
    }


# -- 1. worker-slot seconds ---------------------------------------------------------------------------


def slot_seconds(plan_seconds: float, polling_period: float, workdir: Path) -> dict[str, float]:
    """Run the same long plan blocking, then deferrable; return slot seconds of each."""
    from airflow.sdk.exceptions import TaskDeferred

    from airflow_provider.operators.substra import SubstraAddComputePlanOperator
    from substra_flows import SubstraClient
    from substra_flows.local_node import LocalNode

    results: dict[str, float] = {}
    with LocalNode(organizations=1) as node:
        org = node.organizations[0]
        connection_env("substra_bench", org.url, org.token)
        with SubstraClient(url=org.url, token=org.token) as client:
            function = register_function(client, workdir, "sleep", sleep_archive(workdir / "sleep", plan_seconds))

        def operator(deferrable: bool) -> SubstraAddComputePlanOperator:
            spec = one_task_plan(
                function, org.organization_id, f"benchmark {'deferrable' if deferrable else 'blocking'}"
            )
            return SubstraAddComputePlanOperator(
                task_id="plan",
                substra_conn_id="substra_bench",
                compute_plan=spec,
                deferrable=deferrable,
                polling_period_seconds=polling_period,
                timeout=plan_seconds * 10,
            )

        context = {"ti": BenchTI(f"blocking-{uuid.uuid4()}")}
        started = time.perf_counter()
        operator(False).execute(context)
        results["blocking"] = time.perf_counter() - started

        context = {"ti": BenchTI(f"deferrable-{uuid.uuid4()}")}
        started = time.perf_counter()
        try:
            operator(True).execute(context)
            raise RuntimeError("the plan finished before the operator deferred: raise --plan-seconds")
        except TaskDeferred as deferred:
            first = time.perf_counter() - started
            trigger = deferred.trigger

        async def triggerer() -> Any:
            return [event async for event in trigger.run()]

        started = time.perf_counter()
        (event,) = asyncio.run(triggerer())
        results["triggerer"] = time.perf_counter() - started
        started = time.perf_counter()
        operator(True).execute_complete(context, event.payload)  # a fresh operator, as after a resume
        results["deferrable"] = first + time.perf_counter() - started
        results["deferrable_execute"] = first
    return results


# -- 2. concurrent waits in one triggerer process --------------------------------------------------------


def rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # ru_maxrss is in KiB on Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def triggerer_process(conn: Connection, home: str, url: str, token: str, keys: list[str], period: float) -> None:
    """Child process: N plan triggers in one event loop, as a triggerer runs them; report what happened."""
    airflow_environment(Path(home))
    connection_env("substra_bench", url, token)
    import requests

    from airflow_provider.triggers.substra import SubstraComputePlanTrigger

    sent = {"requests": 0}
    real_send = requests.Session.send

    def counting_send(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        sent["requests"] += 1
        return real_send(session, request, **kwargs)

    requests.Session.send = counting_send  # type: ignore[method-assign]  # the triggers' HTTP requests

    before_triggers = rss_bytes()
    peak = before_triggers
    lag_max = {"startup": 0.0, "steady": 0.0}
    lags: list[float] = []
    phase = "startup"
    pending = 0
    max_pending = 0
    events: list[dict[str, Any]] = []

    async def one(key: str) -> None:
        nonlocal pending, max_pending
        trigger = SubstraComputePlanTrigger(
            key, "substra_bench", end_time=time.time() + 1800, polling_period_seconds=period
        )
        pending += 1
        max_pending = max(max_pending, pending)
        try:
            async for event in trigger.run():
                events.append({**event.payload, "at": time.time()})
        finally:
            pending -= 1

    async def watch(stop: asyncio.Event) -> None:
        nonlocal lag_max, peak
        while not stop.is_set():
            expected = time.perf_counter() + 0.1
            await asyncio.sleep(0.1)
            lag = time.perf_counter() - expected
            lag_max[phase] = max(lag_max[phase], lag)
            if phase == "steady":
                lags.append(lag)
            peak = max(peak, rss_bytes())

    async def main() -> float:
        nonlocal phase
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop))
        waits = [asyncio.create_task(one(k)) for k in keys]
        await asyncio.sleep(max(3 * period, 5))  # every trigger has polled its (empty, pending) plan
        conn.send({"ready": True, "pending": pending, "rss": rss_bytes()})
        phase = "steady"
        started, requests_before = time.perf_counter(), sent["requests"]
        await asyncio.gather(*waits)
        steady["requests"] = sent["requests"] - requests_before
        stop.set()
        await watcher
        return time.perf_counter() - started

    steady: dict[str, int] = {}
    drained = asyncio.run(main())
    statuses: dict[str, int] = {}
    for event in events:
        statuses[event["status"]] = statuses.get(event["status"], 0) + 1
    conn.send(
        {
            "events": len(events),
            "distinct_keys": len({e["key"] for e in events}),
            "statuses": statuses,
            "max_pending": max_pending,
            "lag_max": lag_max,
            "lag_p50": sorted(lags)[len(lags) // 2] if lags else 0.0,
            "lag_p99": sorted(lags)[int(len(lags) * 0.99)] if lags else 0.0,
            "rss_before": before_triggers,
            "rss_peak": peak,
            "drain_seconds": drained,
            "requests_per_second": steady["requests"] / drained if drained else 0.0,
            "event_times": {e["key"]: e["at"] for e in events},
        }
    )


def concurrent_waits(n: int, period: float, workdir: Path) -> dict[str, Any]:
    """N empty plans, N triggers in a child process, then one noop task per plan."""
    from examples import assets
    from substra_flows import SubstraClient
    from substra_flows.local_node import LocalNode

    with LocalNode(organizations=1) as node:
        org = node.organizations[0]
        with SubstraClient(url=org.url, token=org.token) as client:
            noop = register_function(client, workdir, "noop", assets.build_function_archive("noop", workdir / "noop"))
            keys = [str(uuid.uuid4()) for _ in range(n)]
            for i, key in enumerate(keys):
                client.add_compute_plan({"key": key, "name": f"benchmark wait {i}"})
            ctx = multiprocessing.get_context("spawn")
            parent, child = ctx.Pipe()
            process = ctx.Process(
                target=triggerer_process,
                args=(child, str(workdir / "triggerer-home"), org.url, org.token, keys, period),
            )
            process.start()
            ready = parent.recv()
            started = time.perf_counter()
            for key in keys:
                task = one_task_plan(noop, org.organization_id, "")["tasks"][0]
                client.add_compute_plan_tasks(key, [{**task, "task_id": str(uuid.uuid5(uuid.UUID(key), "only"))}])
            added = time.perf_counter() - started
            result = parent.recv()
            process.join(60)
            # event delay: when the trigger fired, after the plan's end as the node recorded it
            ends = {p.key: p.end_date.timestamp() for p in client.list_compute_plan() if p.end_date}
        delays = sorted(at - ends[k] for k, at in result.pop("event_times").items() if k in ends)
        result.update(
            pending_when_tasks_added=ready["pending"],
            rss_ready=ready["rss"],
            tasks_added_seconds=added,
            delay_p50=delays[len(delays) // 2] if delays else float("nan"),
            delay_p95=delays[int(len(delays) * 0.95)] if delays else float("nan"),
            delay_max=delays[-1] if delays else float("nan"),
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan-seconds", type=float, default=32.0, help="duration of the long plan (>= 30)")
    parser.add_argument("--waits", type=int, nargs="+", default=[500, 1000], help="concurrent trigger counts")
    parser.add_argument("--polling-period", type=float, default=2.0, help="seconds between two status requests")
    parser.add_argument("--skip-slots", action="store_true", help="only measure concurrent waits")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="substra-flows-bench-airflow-") as tmp:
        workdir = Path(tmp)
        airflow_environment(workdir / "airflow-home")
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        ok = True
        if not args.skip_slots:
            print(f"== worker-slot seconds while a {args.plan_seconds:g} s compute plan runs", flush=True)
            slots = slot_seconds(args.plan_seconds, args.polling_period, workdir)
            ratio = slots["deferrable"] / slots["blocking"]
            print(f"blocking   : {slots['blocking']:8.2f} slot-seconds")
            print(
                f"deferrable : {slots['deferrable']:8.2f} slot-seconds "
                f"(execute + defer {slots['deferrable_execute']:.2f} s; the trigger waited {slots['triggerer']:.2f} s "
                "in the event loop)"
            )
            print(f"ratio      : {100 * ratio:.2f} % (goal <= 5 %)", flush=True)
            ok &= ratio <= 0.05
        for n in args.waits:
            print(f"== {n} concurrent plan waits in one triggerer process (polling every {args.polling_period:g} s)")
            r = concurrent_waits(n, args.polling_period, workdir)
            delivered = r["events"] == n and r["distinct_keys"] == n and r["statuses"] == {"success": n}
            growth = r["rss_peak"] - r["rss_before"]
            print(f"events delivered  : {r['events']} of {n}, {r['distinct_keys']} distinct plans, {r['statuses']}")
            pending = f"{r['max_pending']} (all {r['pending_when_tasks_added']} when the tasks were added)"
            print(f"pending at once   : {pending}")
            print(f"drain             : {r['drain_seconds']:.1f} s (node runs the {n} tasks one at a time)")
            print(f"requests / second : {r['requests_per_second']:.0f} (status polls of all triggers while draining)")
            print(
                f"event delay       : p50 {r['delay_p50']:.2f} s, p95 {r['delay_p95']:.2f} s, "
                f"max {r['delay_max']:.2f} s after the plan ended (polling period {args.polling_period:g} s)"
            )
            lag = r["lag_max"]
            print(
                f"event-loop lag    : p50 {1000 * r['lag_p50']:.0f} ms, p99 {1000 * r['lag_p99']:.0f} ms, "
                f"max {1000 * lag['steady']:.0f} ms while waiting "
                f"({1000 * lag['startup']:.0f} ms while {n} triggers started)"
            )
            print(
                f"triggerer memory  : {r['rss_before'] / 2**20:.0f} MiB before the triggers, "
                f"{r['rss_peak'] / 2**20:.0f} MiB peak "
                f"(+{growth / 2**20:.1f} MiB, {growth / n / 1024:.1f} KiB per wait)",
                flush=True,
            )
            ok &= delivered
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
