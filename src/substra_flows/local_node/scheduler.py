"""The node's worker: runs ready tasks one at a time, oldest first, through the executor.

It plays the backend's compute engine: it takes tasks waiting for an executor slot, aborts those
whose plan was cancelled or failed meanwhile (as ``abort_task_if_not_runnable`` does), runs the
others in their function's image (see ``build.py``) and records what they produced. State rules
live in ``orchestration.py``; this file is only the loop and the hand-off to the executor.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from pathlib import Path
from typing import Any

from . import orchestration
from .executor import Executor, ExecutorError
from .store import TASK_EXECUTING, TASK_WAITING_EXECUTOR, Store, now

logger = logging.getLogger("substra_flows.local_node")


class Scheduler:
    """Runs tasks whose parents are done and whose image is built, one at a time, oldest first."""

    def __init__(self, store: Store, executor: Executor, workdir: Path) -> None:
        self._store = store
        self._executor = executor
        self._workdir = workdir
        self._wakeup = threading.Condition(store.lock)
        self._ready: list[tuple[int, str]] = []
        self._queued: set[str] = set()
        self._stopping = False
        self._mirrored: set[tuple[str, str]] = set()
        self._thread = threading.Thread(target=self._loop, name="substra-flows-scheduler", daemon=True)

    def start(self) -> None:
        """Start the scheduling thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop after the task it runs, and wait for it."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        self._thread.join(timeout=60)

    def poke(self) -> None:
        """Tasks were registered or built: queue those waiting for an executor slot."""
        with self._wakeup:
            for key, task in self._store.tasks.items():
                if task["status"] == TASK_WAITING_EXECUTOR and key not in self._queued:
                    self._push(task)
            self._wakeup.notify_all()

    def _push(self, task: dict[str, Any]) -> None:
        heapq.heappush(self._ready, (task["_seq"], task["key"]))
        self._queued.add(task["key"])

    def _next_task(self) -> dict[str, Any] | None:
        """Pop the oldest runnable task; a queued task of a terminated plan is aborted to CANCELED."""
        while self._ready:
            _, key = heapq.heappop(self._ready)
            self._queued.discard(key)
            task = self._store.tasks[key]
            if task["status"] != TASK_WAITING_EXECUTOR:
                continue
            plan = self._store.plans[task["compute_plan_key"]]
            if orchestration.is_terminated(plan):
                orchestration.abort(task)
                self._store.refresh_plan(plan)
                continue
            return task
        return None

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                task = None
                while not self._stopping:
                    task = self._next_task()
                    if task is not None:
                        break
                    self._wakeup.wait()
                if self._stopping:
                    return
                assert task is not None
                task["status"] = TASK_EXECUTING
                task["start_date"] = now()
                self._store.refresh_plan(self._store.plans[task["compute_plan_key"]])
                job = self._job(task)
            steps: list[dict[str, Any]] = []
            try:
                started = time.monotonic()
                self._mirror(job["mirror"])
                steps.append(_step("prepare_inputs", started))
                started = time.monotonic()
                result = self._executor.run_task(**job["run"])
                steps.append(_step("task_execution", started))
                ok, outputs = result.ok, result.outputs
                error_type = None if ok else "EXECUTION_ERROR"
            except ExecutorError as exc:
                logger.error("task %s could not be run: %s", task["key"], exc)
                with open(job["run"]["log_path"], "a", encoding="utf-8") as log:
                    log.write(f"\nlocal node: the task could not be run: {exc}\n")
                ok, outputs, error_type = False, [], "INTERNAL_ERROR"
            with self._wakeup:
                started = time.monotonic()
                self._finish(task, ok, outputs, error_type, job["run"]["log_path"])
                task["_profiling"] = [*steps, _step("save_outputs", started)]

    def _job(self, task: dict[str, Any]) -> dict[str, Any]:
        """Snapshot (under the lock) of what the executor needs to run a task."""
        store = self._store
        function = store.functions[task["function"]["key"]]
        plan = store.plans[task["compute_plan_key"]]
        mirror: list[tuple[str, dict[str, Any]]] = [
            (
                "function",
                {
                    "owner": function["owner"],
                    "key": function["key"],
                    "name": function["name"],
                    "archive_path": function["_archive_path"],
                    "description_path": function["_description_path"],
                    "permissions": function["permissions"]["process"],
                    "inputs": function["inputs"],
                    "outputs": function["outputs"],
                },
            ),
            ("plan", {"owner": plan["owner"], "key": plan["key"], "name": plan["name"]}),
        ]
        dataset_key = None
        for entry in task["inputs"]:
            kind = function["inputs"][entry["identifier"]]["kind"]
            if kind == "ASSET_DATA_MANAGER":
                dataset = store.datasets[entry["asset_key"]]
                dataset_key = dataset["key"]
                mirror.append(
                    (
                        "dataset",
                        {
                            "owner": dataset["owner"],
                            "key": dataset["key"],
                            "name": dataset["name"],
                            "opener_path": dataset["_opener_path"],
                            "description_path": dataset["_description_path"],
                            "permissions": dataset["permissions"]["process"],
                            "logs_permission": dataset["logs_permission"],
                        },
                    )
                )
        for entry in task["inputs"]:
            kind = function["inputs"][entry["identifier"]]["kind"]
            if kind == "ASSET_DATA_SAMPLE" and dataset_key:
                sample = store.samples[entry["asset_key"]]
                mirror.append(
                    (
                        "sample",
                        {
                            "owner": sample["owner"],
                            "key": sample["key"],
                            "path": sample["_path"],
                            "dataset_key": dataset_key,
                        },
                    )
                )
        return {
            "mirror": mirror,
            "run": {
                "owner": task["owner"],
                "key": task["key"],
                "function_key": function["key"],
                "compute_plan_key": plan["key"],
                "worker": task["worker"],
                "rank": task["rank"],
                "inputs": [_sdk_input(store, entry) for entry in task["inputs"]],
                "outputs": {i: {"permissions": o["permissions"]["process"]} for i, o in task["outputs"].items()},
                "log_path": str(self._workdir / "logs" / f"{task['key']}.txt"),
                "image": function.get("_image"),
            },
        }

    def _mirror(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Register in the SDK, once each, the assets a task needs (the SDK wants them in its own DB)."""
        for kind, spec in items:
            if kind == "sample":
                sample_id = ("sample", spec["key"])
                link_id = ("link", f"{spec['dataset_key']}/{spec['key']}")
                if sample_id not in self._mirrored:
                    self._executor.add_data_sample(
                        owner=spec["owner"],
                        key=spec["key"],
                        path=spec["path"],
                        dataset_keys=[spec["dataset_key"]],
                    )
                    self._mirrored.update({sample_id, link_id})
                elif link_id not in self._mirrored:
                    self._executor.link_data_samples(
                        owner=spec["owner"], dataset_key=spec["dataset_key"], data_sample_keys=[spec["key"]]
                    )
                    self._mirrored.add(link_id)
                continue
            ident = (kind, spec["key"])
            if ident in self._mirrored:
                continue
            if kind == "function":
                self._executor.add_function(**spec)
            elif kind == "plan":
                self._executor.add_compute_plan(**spec)
            elif kind == "dataset":
                self._executor.add_dataset(**spec)
            self._mirrored.add(ident)

    def _finish(
        self,
        task: dict[str, Any],
        ok: bool,
        outputs: list[dict[str, Any]],
        error_type: str | None,
        log_path: str,
    ) -> None:
        store = self._store
        stamp = now()
        task["end_date"] = stamp
        task["_log_path"] = log_path
        plan = store.plans[task["compute_plan_key"]]
        if ok:
            self._store_outputs(task, outputs, stamp)
            for child in orchestration.task_done(store, task):
                self._push(child)
        else:
            orchestration.task_failed(store, task, error_type or "EXECUTION_ERROR")
        store.refresh_plan(plan)

    def _store_outputs(self, task: dict[str, Any], outputs: list[dict[str, Any]], stamp: str) -> None:
        store = self._store
        for out in outputs:
            if out["kind"] == "ASSET_PERFORMANCE":
                store.performances.setdefault(task["key"], []).append(
                    {
                        "channel": "mychannel",
                        "compute_task_key": task["key"],
                        "creation_date": stamp,
                        "compute_task_output_identifier": out["identifier"],
                        "performance_value": out["value"],
                    }
                )
                continue
            store.models[out["key"]] = {
                "key": out["key"],
                "compute_task_key": task["key"],
                "permissions": task["outputs"][out["identifier"]]["permissions"],
                "owner": task["worker"],
                "creation_date": stamp,
                "_identifier": out["identifier"],
                "_path": out["path"],
                "_checksum": out["checksum"],
                "_seq": store.next_sequence(),
            }


def _sdk_input(store: Store, entry: dict[str, Any]) -> dict[str, Any]:
    """A task input as the SDK takes it: a model given by key is handed over as its producing task's output."""
    model = store.models.get(entry["asset_key"] or "")
    if model is None:
        return entry
    return {
        "identifier": entry["identifier"],
        "asset_key": None,
        "parent_task_key": model["compute_task_key"],
        "parent_task_output_identifier": model["_identifier"],
    }


def _step(name: str, started: float) -> dict[str, Any]:
    return {"step": name, "duration": int((time.monotonic() - started) * 1_000_000)}
