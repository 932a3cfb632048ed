"""Plan steps: idempotent submission (real client over the in-process fake server), failure
completion of waits, cancel, performance rows and the leaderboard (small fake clients)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from substra_flows import SubstraClient, models, steps
from substra_flows import exceptions as exc
from substra_flows.steps import derive_key, derive_task_key

from ._fakes import FakeAdapter, MiniServer, plan_body

FUNCTION = "17f98afc-2b82-4ce9-b232-1a471633d020"
DATASET = "d7dc4a5b-e81f-4f3f-b94c-5e2bbaca15cd"
RUN = ("dag", "2024-05-01T00:00:00", "submit")


def _chain(n: int) -> list[dict[str, Any]]:
    """n tasks named t0..t{n-1}, each reading the previous one's model."""
    tasks = []
    for i in range(n):
        inputs: list[dict[str, Any]] = [{"identifier": "opener", "asset_key": DATASET}]
        if i:
            inputs.append({"identifier": "model", "parent_task_key": f"t{i - 1}", "parent_task_output_identifier": "m"})
        tasks.append({"task_id": f"t{i}", "function_key": FUNCTION, "worker": "MyOrg1MSP", "inputs": inputs})
    return tasks


def _bulk_sizes(adapter: FakeAdapter) -> list[int]:
    return [len(c.json()["tasks"]) for c in adapter.calls if c.path == "/task/bulk_create/"]


def test_submit_twice_gives_one_plan_and_no_duplicated_task(
    client: SubstraClient, server: MiniServer, adapter: FakeAdapter
):
    spec = {"name": "plan", "tasks": _chain(5)}
    first = steps.submit_compute_plan(client, spec, run_identity=RUN, batch_size=2)
    plan_key = derive_key(*RUN)
    assert first.compute_plan_key == plan_key and first.created
    assert first.added_task_keys == [derive_task_key(plan_key, f"t{i}") for i in range(5)]
    assert _bulk_sizes(adapter) == [2, 2, 1]
    adapter.calls.clear()
    second = steps.submit_compute_plan(client, spec, run_identity=RUN, batch_size=2)
    assert not second.created and second.added_task_keys == []
    assert second.existing_task_keys == first.added_task_keys
    assert _bulk_sizes(adapter) == []
    assert len(server.plans) == 1 and len(server.tasks) == 5
    json.dumps(second.to_dict())


def test_resubmission_after_a_partial_submission_adds_only_the_missing_tasks(
    client: SubstraClient, server: MiniServer, adapter: FakeAdapter
):
    calls = {"n": 0}

    def crash_on_second_batch(call: Any, match: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker killed while sending batch 2")
        return server.bulk_create(call, match)

    adapter.route("POST", r"/task/bulk_create/", crash_on_second_batch)
    spec = {"name": "plan", "tasks": _chain(6)}
    with pytest.raises(RuntimeError):
        steps.submit_compute_plan(client, spec, run_identity=RUN, batch_size=2)
    assert len(server.tasks) == 2
    adapter.calls.clear()
    again = steps.submit_compute_plan(client, spec, run_identity=RUN, batch_size=4)
    plan_key = derive_key(*RUN)
    assert not again.created
    assert again.existing_task_keys == [derive_task_key(plan_key, f"t{i}") for i in range(2)]
    assert again.added_task_keys == [derive_task_key(plan_key, f"t{i}") for i in range(2, 6)]
    assert _bulk_sizes(adapter) == [4]
    assert len(server.tasks) == 6


def test_existing_tasks_are_looked_up_in_chunks_of_the_plan(
    client: SubstraClient, server: MiniServer, adapter: FakeAdapter
):
    spec = {"name": "plan", "tasks": _chain(230)}
    steps.submit_compute_plan(client, spec, run_identity=RUN)
    adapter.calls.clear()
    steps.submit_compute_plan(client, spec, run_identity=RUN)
    lookups = [c for c in adapter.calls if c.method == "GET" and c.path == "/task/"]
    assert [len(c.query["key"][-1].split(",")) for c in lookups] == [100, 100, 30]
    assert all(c.query["compute_plan_key"] == [derive_key(*RUN)] for c in lookups)


def test_a_given_plan_key_wins_over_the_run_identity(client: SubstraClient, server: MiniServer):
    key = str(uuid.uuid4())
    assert steps.submit_compute_plan(client, {"key": key, "name": "p"}, run_identity=RUN).compute_plan_key == key
    assert list(server.plans) == [key]


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, "3", None, True])
def test_bad_batch_size_is_refused_before_any_request(client: SubstraClient, adapter: FakeAdapter, batch_size: Any):
    with pytest.raises(exc.SpecValidationError, match="batch_size"):
        steps.submit_compute_plan(client, {"name": "p", "tasks": _chain(2)}, run_identity=RUN, batch_size=batch_size)
    assert adapter.calls == []


def test_a_plan_without_key_nor_run_identity_is_refused(client: SubstraClient, adapter: FakeAdapter):
    with pytest.raises(exc.SpecValidationError, match="run_identity"):
        steps.submit_compute_plan(client, {"name": "p"})
    assert adapter.calls == []


# -- waits ------------------------------------------------------------------------------------------


class WaitingClient:
    """A client whose waits fail the way the real one does, with what the server gave."""

    def __init__(self, error: exc.FutureFailureError, failed_tasks: list[str], logs: dict[str, str]) -> None:
        self.error = error
        self.failed_tasks = failed_tasks
        self.logs = logs
        self.list_filters: list[dict[str, Any]] = []

    def wait_compute_plan(self, key: str, **kwargs: Any) -> Any:
        raise self.error

    wait_task = wait_compute_plan

    async def async_wait_compute_plan(self, key: str, **kwargs: Any) -> Any:
        raise self.error

    async_wait_task = async_wait_compute_plan

    def list_task(self, filters: dict[str, Any]) -> list[Any]:
        self.list_filters.append(filters)
        return [SimpleNamespace(key=k) for k in self.failed_tasks]

    def log_tail(self, task_key: str) -> str | None:
        return self.logs.get(task_key)


def _plan_failure(plan_key: str, culprits: list[str], logs: dict[str, str]) -> exc.FutureFailureError:
    plan = models.ComputePlan.model_validate(plan_body(plan_key, status="PLAN_STATUS_FAILED"))
    return exc.FutureFailureError(
        f"compute plan {plan_key} failed",
        key=plan_key,
        kind="compute plan",
        status="PLAN_STATUS_FAILED",
        failed_task_keys=culprits,
        logs=logs,
        asset=plan,
    )


def test_a_complete_failure_is_passed_through_unchanged():
    plan, task = str(uuid.uuid4()), str(uuid.uuid4())
    error = _plan_failure(plan, [task], {task: "boom"})
    with pytest.raises(exc.FutureFailureError) as raised:
        steps.wait_compute_plan(WaitingClient(error, [], {}), plan)
    assert raised.value is error


def test_failed_tasks_are_listed_when_the_plan_does_not_name_them():
    plan, task = str(uuid.uuid4()), str(uuid.uuid4())
    client = WaitingClient(_plan_failure(plan, [], {}), [task], {task: "line 1\nsubstra-flows example: boom"})
    with pytest.raises(exc.FutureFailureError) as raised:
        steps.wait_compute_plan(client, plan, timeout=1, polling_period=0)
    error = raised.value
    assert error.failed_task_keys == [task]
    assert task in str(error) and "substra-flows example: boom" in str(error)
    assert error.logs == {task: "line 1\nsubstra-flows example: boom"}
    assert client.list_filters == [{"compute_plan_key": [plan], "status": ["STATUS_FAILED"]}]


def test_logs_the_client_missed_are_fetched_again_in_async_waits():
    plan, task = str(uuid.uuid4()), str(uuid.uuid4())
    client = WaitingClient(_plan_failure(plan, [task], {}), [], {task: "Traceback: marker"})

    async def run() -> None:
        await steps.async_wait_compute_plan(client, plan, polling_period=0)

    with pytest.raises(exc.FutureFailureError) as raised:
        asyncio.run(run())
    assert "Traceback: marker" in str(raised.value) and raised.value.logs == {task: "Traceback: marker"}


def test_task_wait_failures_carry_the_task_logs():
    task = str(uuid.uuid4())
    error = exc.FutureFailureError(
        f"task {task} failed", key=task, kind="task", status="STATUS_FAILED", failed_task_keys=[task], asset=None
    )
    with pytest.raises(exc.FutureFailureError) as raised:
        steps.wait_task(WaitingClient(error, [], {task: "the tail"}), task)
    assert "the tail" in str(raised.value) and raised.value.failed_task_keys == [task]


# -- cancel, performances, leaderboard -----------------------------------------------------------------


class PlanClient:
    """Plans by key with scripted statuses and cancel outcomes; performances per plan."""

    def __init__(self, statuses: list[str], cancel_error: exc.SubstraError | None = None) -> None:
        self.statuses = statuses
        self.cancel_error = cancel_error
        self.cancels = 0
        self.perf: dict[str, list[dict[str, Any]]] = {}
        self.plans: list[models.ComputePlan] = []
        self.list_filters: list[dict[str, Any]] = []

    def get_compute_plan(self, key: str) -> Any:
        return SimpleNamespace(status=models.ComputePlanStatus(self.statuses.pop(0)))

    def cancel_compute_plan(self, key: str) -> None:
        self.cancels += 1
        if self.cancel_error:
            raise self.cancel_error

    def get_performances(self, key: str) -> Any:
        return SimpleNamespace(rows=lambda: self.perf.get(key, []))

    def list_compute_plan(self, filters: dict[str, Any]) -> list[models.ComputePlan]:
        self.list_filters.append(filters)
        return self.plans


KEY = "a428d7a3-7458-421d-a818-7a2448225b8d"


@pytest.mark.parametrize("status", ["PLAN_STATUS_DONE", "PLAN_STATUS_FAILED", "PLAN_STATUS_CANCELED"])
def test_cancel_does_nothing_on_a_final_plan(status: str):
    client = PlanClient([status])
    assert steps.cancel_compute_plan(client, KEY) is False
    assert client.cancels == 0


def test_cancel_a_running_plan():
    client = PlanClient(["PLAN_STATUS_DOING"])
    assert steps.cancel_compute_plan(client, KEY) is True
    assert client.cancels == 1


@pytest.mark.parametrize(("after", "expected"), [("PLAN_STATUS_CANCELED", True), ("PLAN_STATUS_DONE", False)])
def test_a_500_on_a_plan_that_became_final_is_not_an_error(after: str, expected: bool):
    client = PlanClient(["PLAN_STATUS_DOING", after], exc.InternalServerError("500", status_code=500))
    assert steps.cancel_compute_plan(client, KEY) is expected


def test_a_cancel_failure_on_a_running_plan_is_raised():
    client = PlanClient(["PLAN_STATUS_DOING", "PLAN_STATUS_DOING"], exc.InternalServerError("500", status_code=500))
    with pytest.raises(exc.InternalServerError):
        steps.cancel_compute_plan(client, KEY)


def test_performance_rows_are_json_serialisable():
    client = PlanClient([])
    client.perf[KEY] = [
        {
            "compute_plan_key": KEY,
            "compute_plan_status": models.ComputePlanStatus.done,
            "compute_plan_start_date": dt.datetime(2024, 5, 1, 10, tzinfo=dt.timezone.utc),
            "compute_plan_end_date": None,
            "compute_plan_metadata": {"experiment": "x"},
            "task_rank": 3,
            "performance": 0.5,
        }
    ]
    rows = steps.fetch_performances(client, KEY)
    assert rows[0]["compute_plan_status"] == "PLAN_STATUS_DONE"
    assert rows[0]["compute_plan_start_date"] == "2024-05-01T10:00:00+00:00"
    assert json.loads(json.dumps(rows)) == rows


def test_leaderboard_lists_done_plans_by_metadata_and_ranks_them():
    client = PlanClient([])
    keys = [str(uuid.uuid4()) for _ in range(3)]
    for i, (key, value) in enumerate(zip(keys, (0.7, 0.9, None), strict=True)):
        client.plans.append(
            models.ComputePlan.model_validate(
                plan_body(key, name=f"p{i}", status="PLAN_STATUS_DONE", metadata={"experiment": "x"})
            )
        )
        if value is not None:
            client.perf[key] = [
                {"identifier": "performance", "task_rank": 1, "performance": value - 0.5, "worker": "a"},
                {"identifier": "performance", "task_rank": 4, "performance": value, "worker": "a"},
                {"identifier": "performance", "task_rank": 4, "performance": value - 0.1, "worker": "b"},
            ]
    board = steps.leaderboard(client, metadata_filters={"experiment": "x"})
    assert [e.compute_plan_key for e in board] == [keys[1], keys[0]]
    assert board[0].score == pytest.approx(0.85) and board[0].n_values == 2 and board[0].rank == 4
    assert client.list_filters == [
        {"status": ["PLAN_STATUS_DONE"], "metadata": [{"key": "experiment", "type": "is", "value": "x"}]}
    ]
    json.dumps([e.to_dict() for e in board])
    decision = steps.quality_gate(keys[0], board)
    assert not decision.promote and decision.best_previous_key == keys[1]


def test_the_plan_key_is_the_one_given_else_derived_and_two_different_keys_are_refused():
    given = "5e0f3c57-8d43-4c39-9b5c-111111111111"
    assert steps.resolve_compute_plan_key({"key": given}) == given
    assert steps.resolve_compute_plan_key({}, given) == given
    assert steps.resolve_compute_plan_key({"key": given}, given) == given
    assert steps.resolve_compute_plan_key({}, None, RUN) == derive_key(*RUN)
    assert steps.given_compute_plan_key({}) is None
    with pytest.raises(exc.SpecValidationError, match="compute_plan_key") as refused:
        steps.resolve_compute_plan_key({"key": given}, "5e0f3c57-8d43-4c39-9b5c-222222222222", RUN)
    assert "give only one" in str(refused.value)
    with pytest.raises(exc.SpecValidationError, match="no key"):
        steps.resolve_compute_plan_key({})


def test_submit_refuses_two_different_keys_before_any_request(client: SubstraClient, adapter: FakeAdapter):
    adapter.calls.clear()
    spec = {"key": "5e0f3c57-8d43-4c39-9b5c-111111111111", "name": "p", "tasks": _chain(2)}
    with pytest.raises(exc.SpecValidationError, match="compute_plan_key"):
        steps.submit_compute_plan(client, spec, compute_plan_key="5e0f3c57-8d43-4c39-9b5c-222222222222")
    assert adapter.calls == []


def test_waits_hand_their_progress_to_the_caller(client: SubstraClient, server: MiniServer, adapter: FakeAdapter):
    key = str(uuid.uuid4())
    looks = iter(
        [(0, "PLAN_STATUS_DOING"), (0, "PLAN_STATUS_DOING"), (2, "PLAN_STATUS_DOING"), (4, "PLAN_STATUS_DONE")]
    )

    def get_plan(call: Any, match: Any) -> Any:
        done, status = next(looks)
        return 200, plan_body(key, status=status, task_count=4, done_count=done), {}

    adapter.route("GET", r"/compute_plan/([^/]+)/", get_plan)
    seen: list[Any] = []
    steps.wait_compute_plan(client, key, polling_period=0, on_progress=seen.append)
    assert [(p.status, p.done, p.total, p.final) for p in seen] == [
        ("PLAN_STATUS_DOING", 0, 4, False),
        ("PLAN_STATUS_DOING", 2, 4, False),
        ("PLAN_STATUS_DONE", 4, 4, True),
    ]
    assert seen[1].describe().startswith(f"compute plan {key}: PLAN_STATUS_DOING, 2/4 tasks done, 0 failed, ")


async def test_async_waits_hand_their_progress_to_an_async_callback(client: SubstraClient, adapter: FakeAdapter):
    key = str(uuid.uuid4())
    adapter.route("GET", r"/compute_plan/([^/]+)/", lambda c, m: (200, plan_body(key, status="PLAN_STATUS_DONE"), {}))
    seen: list[Any] = []

    async def record(progress: Any) -> None:
        seen.append(progress)

    await steps.async_wait_compute_plan(client, key, polling_period=0, on_progress=record)
    assert [p.final for p in seen] == [True]
