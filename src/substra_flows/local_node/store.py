"""The node's asset store: every asset of the channel, in memory, in the wire shape of substra-backend 1.0.

All organizations of a node share this one store, as a real channel shares the orchestrator's
ledger. Records are plain dicts shaped like the JSON the real server returns; a few private
fields (prefixed with ``_``) hold what the node needs but never serves (file paths, sequence).
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .replication import Replica

# Exact wire strings (substra-rest-api.md section 5.1).
PLAN_CREATED = "PLAN_STATUS_CREATED"
PLAN_DOING = "PLAN_STATUS_DOING"
PLAN_DONE = "PLAN_STATUS_DONE"
PLAN_FAILED = "PLAN_STATUS_FAILED"
PLAN_CANCELED = "PLAN_STATUS_CANCELED"
TASK_WAITING_BUILDER = "STATUS_WAITING_FOR_BUILDER_SLOT"
TASK_WAITING_PARENTS = "STATUS_WAITING_FOR_PARENT_TASKS"
TASK_WAITING_EXECUTOR = "STATUS_WAITING_FOR_EXECUTOR_SLOT"
TASK_EXECUTING = "STATUS_EXECUTING"
TASK_DONE = "STATUS_DONE"
TASK_FAILED = "STATUS_FAILED"
TASK_CANCELED = "STATUS_CANCELED"
TASK_STATUSES = (
    TASK_WAITING_BUILDER,
    "STATUS_BUILDING",
    TASK_WAITING_PARENTS,
    TASK_WAITING_EXECUTOR,
    TASK_EXECUTING,
    TASK_DONE,
    TASK_FAILED,
    TASK_CANCELED,
)
PLAN_STATUSES = (PLAN_CREATED, PLAN_DOING, PLAN_DONE, PLAN_FAILED, PLAN_CANCELED)
WAITING_TASK_STATUSES = (TASK_WAITING_BUILDER, TASK_WAITING_PARENTS, TASK_WAITING_EXECUTOR)
FUNCTION_WAITING = "FUNCTION_STATUS_WAITING"
FUNCTION_BUILDING = "FUNCTION_STATUS_BUILDING"
FUNCTION_READY = "FUNCTION_STATUS_READY"
FUNCTION_FAILED = "FUNCTION_STATUS_FAILED"
FINAL_TASK_STATUSES = (TASK_DONE, TASK_FAILED, TASK_CANCELED)
ASSET_KINDS = ("ASSET_MODEL", "ASSET_PERFORMANCE", "ASSET_DATA_MANAGER", "ASSET_DATA_SAMPLE")


def now() -> str:
    """Timestamp in the server's format: ISO-8601 UTC, microseconds, ``Z``."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> dt.datetime:
    """Inverse of :func:`now`, also accepting dates without time or zone."""
    text = value.strip().replace("Z", "+00:00")
    parsed = dt.datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def is_uuid(value: Any) -> bool:
    """True for a hyphenated UUID string, the only key format the orchestrator accepts."""
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


@dataclass
class Token:
    """An API token of one organization's user."""

    id: str
    token: str
    organization_id: str
    username: str
    created_at: str
    expires_at: dt.datetime
    implicit: bool
    note: str = ""

    def public(self) -> dict[str, Any]:
        """The token as listed by ``/active-api-tokens/`` (the secret itself left out)."""
        body = {"id": self.id, "expires_at": _fmt(self.expires_at), "created_at": self.created_at}
        if not self.implicit:
            body["note"] = self.note
        return body


def _fmt(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Store:
    """Assets by kind and key, under one lock; also the tokens of every organization."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: dict[str, dict[str, Any]] = field(default_factory=dict)
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    performances: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by task key
    tokens: dict[str, Token] = field(default_factory=dict)
    tasks_by_plan: dict[str, list[str]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)  # parent task key -> child keys
    replica: Replica | None = None  # replication lag between organizations (replication.py)
    _sequence: int = 0

    def next_sequence(self) -> int:
        """Monotonic insertion counter, the tie-breaker of the default ordering."""
        self._sequence += 1
        return self._sequence

    # ---- compute plan bookkeeping ---------------------------------------------------------------

    def refresh_plan(self, plan: dict[str, Any]) -> None:
        """Recompute a plan's counters, status and dates from its tasks (the server's own rule)."""
        tasks = [self.tasks[k] for k in self.tasks_by_plan.get(plan["key"], [])]
        if self.replica is not None:
            self.replica.observe(plan, tasks)
        derive_plan(plan, tasks)


def derive_plan(plan: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
    """Set a plan's counters, status and dates from the given views of its tasks."""
    counts = {status: 0 for status in TASK_STATUSES}
    end_dates: list[str] = []
    for task in tasks:
        counts[task["status"]] += 1
        if task["end_date"]:
            end_dates.append(task["end_date"])
    total = len(tasks)
    plan["task_count"] = total
    plan["done_count"] = counts[TASK_DONE]
    plan["waiting_builder_slot_count"] = counts[TASK_WAITING_BUILDER]
    plan["building_count"] = counts["STATUS_BUILDING"]
    plan["waiting_parent_tasks_count"] = counts[TASK_WAITING_PARENTS]
    plan["waiting_executor_slot_count"] = counts[TASK_WAITING_EXECUTOR]
    plan["executing_count"] = counts[TASK_EXECUTING]
    plan["canceled_count"] = counts[TASK_CANCELED]
    plan["failed_count"] = counts[TASK_FAILED]

    if plan["_cancelled"] or counts[TASK_CANCELED]:
        status = PLAN_CANCELED
    elif total == 0 or counts[TASK_WAITING_BUILDER] == total:
        status = PLAN_CREATED
    elif counts[TASK_DONE] == total:
        status = PLAN_DONE
    elif counts[TASK_FAILED]:
        status = PLAN_FAILED
    else:
        status = PLAN_DOING
    plan["status"] = status
    # start_date: set once, at the plan's first status other than CREATED (backend computeplan.py)
    if status != PLAN_CREATED and not plan.get("_started"):
        plan["_started"] = now()
    plan["start_date"] = plan.get("_started")
    terminal = status in (PLAN_DONE, PLAN_FAILED, PLAN_CANCELED)
    # end_date: the cancel date, else the last ended task's, kept up to date at every task event
    if plan["_cancelled"]:
        plan["end_date"] = plan["_cancelled"]
    elif terminal:
        plan["end_date"] = max(end_dates) if end_dates else now()
    else:
        plan["end_date"] = None
    plan["duration"] = _seconds_between(plan["start_date"], plan["end_date"])
    if terminal:
        plan["estimated_end_date"] = plan["end_date"]
    elif status == PLAN_DOING and counts[TASK_DONE] and plan["start_date"]:
        plan["estimated_end_date"] = _estimate_end(plan["start_date"], counts[TASK_DONE], total)
    else:
        plan.pop("estimated_end_date", None)


def _seconds_between(start: str | None, end: str | None) -> int:
    if not start:
        return 0
    stop = parse_time(end) if end else dt.datetime.now(dt.timezone.utc)
    return max(0, int((stop - parse_time(start)).total_seconds()))


def _estimate_end(start: str, done: int, total: int) -> str:
    begun = parse_time(start)
    elapsed = dt.datetime.now(dt.timezone.utc) - begun
    return _fmt(begun + elapsed * (total / done))


def public_view(record: dict[str, Any]) -> dict[str, Any]:
    """The record without the node's private fields."""
    return {k: v for k, v in record.items() if not k.startswith("_")}
