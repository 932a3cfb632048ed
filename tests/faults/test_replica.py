"""The node's replication model on its own (a fake clock, no server): what another organization sees."""

from __future__ import annotations

from typing import Any

from substra_flows.local_node.replication import Replica
from substra_flows.local_node.store import derive_plan

ORG1, ORG2 = "MyOrg1MSP", "MyOrg2MSP"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _plan(key: str = "plan") -> dict[str, Any]:
    return {"key": key, "owner": ORG1, "_cancelled": None}


def _task(key: str, status: str = "STATUS_WAITING_FOR_EXECUTOR_SLOT") -> dict[str, Any]:
    return {
        "key": key,
        "owner": ORG1,
        "worker": ORG1,
        "status": status,
        "start_date": None,
        "end_date": None,
        "error_type": None,
        "compute_plan_key": "plan",
    }


def test_a_plan_seen_from_another_organization_counts_only_the_tasks_it_has_received() -> None:
    clock = Clock()
    replica = Replica(2.0, clock=clock)
    plan, task = _plan(), _task("t1")
    replica.created("ComputePlan", plan["key"], ORG1)
    replica.created("ComputeTask", task["key"], ORG1)  # the kind api.py creates tasks with
    derive_plan(plan, [task])
    replica.observe(plan, [task])

    assert replica.plan_view(plan, [task], ORG1)["task_count"] == 1  # the writer sees its task at once
    assert replica.plan_view(plan, [task], ORG2)["task_count"] == 0  # not received yet elsewhere
    assert replica.plan_view(plan, [task], ORG2)["status"] == "PLAN_STATUS_CREATED"
    clock.now += 2.0
    assert replica.plan_view(plan, [task], ORG2)["task_count"] == 1


def test_a_status_change_reaches_other_organizations_after_the_lag() -> None:
    clock = Clock()
    replica = Replica(2.0, clock=clock)
    task = _task("t1")
    replica.created("ComputeTask", "t1", ORG1)
    replica.observe(_plan(), [task])
    clock.now += 3.0
    done = {**task, "status": "STATUS_DONE"}
    replica.observe(_plan(), [done])

    assert replica.task_view(done, ORG1)["status"] == "STATUS_DONE"  # the worker
    assert replica.task_view(done, ORG2)["status"] == "STATUS_WAITING_FOR_EXECUTOR_SLOT"  # stale
    clock.now += 2.0
    assert replica.task_view(done, ORG2)["status"] == "STATUS_DONE"


def test_no_lag_shows_everything_at_once() -> None:
    replica = Replica(0.0, clock=Clock())
    replica.created("ComputeTask", "t1", ORG1)
    assert replica.visible("ComputeTask", "t1", ORG2)
    assert replica.plan_view(_plan(), [_task("t1")], ORG2) == _plan()
