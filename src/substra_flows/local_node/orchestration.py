"""Task and plan state changes, as orchestrator 1.0 and the backend's compute engine make them.

Every function here runs under the store's lock and only edits records; who calls them decides
when (the API on registration and cancel, the builder on build events, the scheduler on execution).

- A new task's status comes from its function and parents (``orch: getInitialStatus``): a failed or
  cancelled parent gives CANCELED, a function not built yet gives WAITING_FOR_BUILDER_SLOT or BUILDING.
- Build events move the function's tasks: started -> BUILDING, finished -> waiting for parents or
  for an executor slot, failed -> FAILED with ``BUILD_ERROR``.
- Cancel only records a date. A failure records the plan's failure date. Either way, a queued task
  is aborted to CANCELED when a worker picks it up, and a task waiting for its parents keeps its
  status for good (the real server never queues it).
- Transient outputs are disabled once every task that consumes them is done.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from .store import (
    FINAL_TASK_STATUSES,
    FUNCTION_BUILDING,
    FUNCTION_FAILED,
    FUNCTION_READY,
    FUNCTION_WAITING,
    TASK_CANCELED,
    TASK_DONE,
    TASK_FAILED,
    TASK_WAITING_BUILDER,
    TASK_WAITING_EXECUTOR,
    TASK_WAITING_PARENTS,
    Store,
    now,
)

TASK_BUILDING = "STATUS_BUILDING"


def is_terminated(plan: dict[str, Any]) -> bool:
    """The orchestrator's ``IsTerminated``: a cancel or a failure was recorded (a DONE plan is not)."""
    return bool(plan["_cancelled"] or plan.get("_failed"))


def initial_status(store: Store, function: dict[str, Any], parents: list[str]) -> str:
    """Status of a task at registration, from its parents and its function's build state."""
    parent_statuses = [store.tasks[p]["status"] for p in parents]
    if any(s in (TASK_FAILED, TASK_CANCELED) for s in parent_statuses):
        return TASK_CANCELED
    status = function["status"]
    if status == FUNCTION_WAITING:
        return TASK_WAITING_BUILDER
    if status == FUNCTION_BUILDING:
        return TASK_BUILDING
    if status == FUNCTION_FAILED:
        return TASK_FAILED
    return TASK_WAITING_EXECUTOR if all(s == TASK_DONE for s in parent_statuses) else TASK_WAITING_PARENTS


def register(store: Store, task: dict[str, Any]) -> None:
    """Bookkeeping of a task just stored with its initial status (final states get their end date)."""
    if task["status"] in FINAL_TASK_STATUSES:
        task["end_date"] = task["creation_date"]
    if task["status"] == TASK_FAILED:
        function = store.functions[task["function"]["key"]]
        task["error_type"] = "BUILD_ERROR"
        task["_log_path"] = function.get("_build_log")
        fail_plan(store, task)


def fail_plan(store: Store, task: dict[str, Any]) -> None:
    """``failPlan``: the first failure of a running plan records its date and its failed task."""
    plan = store.plans[task["compute_plan_key"]]
    if not is_terminated(plan):
        plan["_failed"] = task["end_date"] or now()
        plan["failed_task_key"] = task["key"]


def abort(task: dict[str, Any]) -> None:
    """A queued task of a terminated plan, as a worker picking it up marks it."""
    task["status"] = TASK_CANCELED
    task["end_date"] = now()


def start_dependent(store: Store, task: dict[str, Any]) -> bool:
    """After its build or its last parent: wait for an executor slot if every parent is done."""
    if all(store.tasks[p]["status"] == TASK_DONE for p in task["_parents"]):
        task["status"] = TASK_WAITING_EXECUTOR
        return True
    task["status"] = TASK_WAITING_PARENTS
    return False


def _tasks_of(store: Store, function_key: str, status: str) -> list[dict[str, Any]]:
    return [t for t in store.tasks.values() if t["function"]["key"] == function_key and t["status"] == status]


def build_started(store: Store, function_key: str) -> None:
    """The builder took the function: it and its waiting tasks are BUILDING."""
    store.functions[function_key]["status"] = FUNCTION_BUILDING
    for task in _tasks_of(store, function_key, TASK_WAITING_BUILDER):
        task["status"] = TASK_BUILDING
    _refresh_plans_of(store, function_key)


def build_finished(store: Store, function_key: str) -> list[dict[str, Any]]:
    """The image is ready: its tasks move on; returns those now waiting for an executor slot."""
    store.functions[function_key]["status"] = FUNCTION_READY
    ready = [t for t in _tasks_of(store, function_key, TASK_BUILDING) if start_dependent(store, t)]
    _refresh_plans_of(store, function_key)
    return ready


def build_failed(store: Store, function_key: str, log_path: str) -> None:
    """The build failed: the function is FAILED and so is every task using it (``BUILD_ERROR``)."""
    function = store.functions[function_key]
    function["status"] = FUNCTION_FAILED
    function["_build_log"] = log_path
    for task in _tasks_of(store, function_key, TASK_BUILDING):
        task.update(status=TASK_FAILED, error_type="BUILD_ERROR", end_date=now(), _log_path=log_path)
        fail_plan(store, task)
    _refresh_plans_of(store, function_key)


def _refresh_plans_of(store: Store, function_key: str) -> None:
    plan_keys = {t["compute_plan_key"] for t in store.tasks.values() if t["function"]["key"] == function_key}
    for key in plan_keys:
        store.refresh_plan(store.plans[key])


def task_done(store: Store, task: dict[str, Any]) -> list[dict[str, Any]]:
    """A task ended well: its children whose parents are all done are returned, now queued."""
    task["status"] = TASK_DONE
    ready = []
    for child_key in store.children.get(task["key"], []):
        child = store.tasks[child_key]
        if child["status"] == TASK_WAITING_PARENTS and start_dependent(store, child):
            ready.append(child)
    disable_consumed_transients(store, task)
    return ready


def task_failed(store: Store, task: dict[str, Any], error_type: str) -> None:
    """A task's execution failed: FAILED, and the plan's failure is recorded."""
    task["status"] = TASK_FAILED
    task["error_type"] = error_type
    fail_plan(store, task)


def disable_consumed_transients(store: Store, task: dict[str, Any]) -> None:
    """Disable each transient model this task read once every task consuming it is done.

    substra-backend does it on the consumer's DONE event (``handler_compute_engine``): the model
    loses its address, its file is deleted, and the orchestrator refuses new tasks that use it.
    """
    for entry in task["inputs"]:
        parent_key = entry["parent_task_key"]
        if parent_key is None:
            continue
        parent = store.tasks[parent_key]
        output = parent["outputs"].get(entry["parent_task_output_identifier"], {})
        if not output.get("transient"):
            continue
        consumers = [store.tasks[k] for k in store.children.get(parent_key, [])]
        if all(c["status"] == TASK_DONE for c in consumers if _reads(c, parent_key, entry)):
            for model in models_of_output(store, parent_key, entry["parent_task_output_identifier"]):
                disable_model(model)


def _reads(task: dict[str, Any], parent_key: str, entry: dict[str, Any]) -> bool:
    return any(
        e["parent_task_key"] == parent_key
        and e["parent_task_output_identifier"] == entry["parent_task_output_identifier"]
        for e in task["inputs"]
    )


def models_of_output(store: Store, task_key: str, identifier: str) -> list[dict[str, Any]]:
    """The models a task produced under one output identifier."""
    return [m for m in store.models.values() if m["compute_task_key"] == task_key and m["_identifier"] == identifier]


def disable_model(model: dict[str, Any]) -> None:
    """``address`` becomes null and the file is deleted; the record stays listed."""
    if model.get("_disabled"):
        return
    model["_disabled"] = True
    path = model.get("_path")
    model["_path"] = None
    if path:
        with contextlib.suppress(OSError):
            Path(path).unlink()
