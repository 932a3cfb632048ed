"""Attempts of a run: the one rule both faces use to resubmit after a FAILED or CANCELED plan.

The real client talks to the in-process fake server; plan statuses are set by the tests.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from substra_flows import SubstraClient, models, steps
from substra_flows import exceptions as exc
from substra_flows.steps import attempt_key, derive_key, derive_task_key

from ._fakes import FakeAdapter, MiniServer, plan_body
from .test_steps_plans import FUNCTION, _chain

RUN = ("dag", "2024-05-01T00:00:00", "submit")
RUN_KEY = derive_key(*RUN)


SPEC = {"name": "nightly", "tasks": _chain(3)}


def _end(server: MiniServer, key: str, status: str, failed_task_key: str | None = None) -> None:
    server.plans[key]["status"] = status
    server.plans[key]["failed_task_key"] = failed_task_key


def _creations(adapter: FakeAdapter) -> list[str]:
    return [c.json()["key"] for c in adapter.calls if c.method == "POST" and c.path == "/compute_plan/"]


def test_attempt_keys_are_the_run_key_first_then_derived_from_it_and_the_number():
    assert attempt_key(RUN_KEY, 1) == RUN_KEY
    second, third = attempt_key(RUN_KEY, 2), attempt_key(RUN_KEY, 3)
    assert len({RUN_KEY, second, third}) == 3
    assert second == str(uuid.uuid5(uuid.UUID(RUN_KEY), "attempt/2"))  # fixed forever: reruns must find it
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(exc.SpecValidationError, match="attempt"):
            attempt_key(RUN_KEY, bad)  # type: ignore[arg-type]


def test_the_first_submission_is_attempt_1_and_records_the_run_and_the_attempt(
    client: SubstraClient, server: MiniServer
):
    first = steps.submit_compute_plan(client, SPEC, run_identity=RUN)
    assert (first.compute_plan_key, first.attempt, first.run_key, first.created) == (RUN_KEY, 1, RUN_KEY, True)
    assert server.plans[RUN_KEY]["metadata"] == {"substra_flows_run": RUN_KEY, "substra_flows_attempt": "1"}
    assert first.added_task_keys == [derive_task_key(RUN_KEY, f"t{i}") for i in range(3)]


@pytest.mark.parametrize("ended", ["PLAN_STATUS_FAILED", "PLAN_STATUS_CANCELED"])
def test_a_rerun_after_a_failed_or_canceled_plan_submits_exactly_one_new_plan_attempt_2(
    client: SubstraClient, server: MiniServer, adapter: FakeAdapter, ended: str
):
    steps.submit_compute_plan(client, SPEC, run_identity=RUN)
    _end(server, RUN_KEY, ended)
    adapter.calls.clear()
    second = steps.submit_compute_plan(client, SPEC, run_identity=RUN)
    key_2 = attempt_key(RUN_KEY, 2)
    assert (second.compute_plan_key, second.attempt, second.run_key, second.created) == (key_2, 2, RUN_KEY, True)
    assert _creations(adapter) == [key_2]
    assert set(server.plans) == {RUN_KEY, key_2}
    assert server.plans[key_2]["metadata"] == {"substra_flows_run": RUN_KEY, "substra_flows_attempt": "2"}
    # the new attempt's tasks are its own: no key shared with the dead plan
    assert second.added_task_keys == [derive_task_key(key_2, f"t{i}") for i in range(3)]
    assert {server.tasks[k]["compute_plan_key"] for k in second.added_task_keys} == {key_2}
    assert len(server.tasks) == 6
    # and once attempt 2 runs (or is DONE), rerunning again finds it
    for status in ("PLAN_STATUS_DOING", "PLAN_STATUS_DONE"):
        server.plans[key_2]["status"] = status
        adapter.calls.clear()
        again = steps.submit_compute_plan(client, SPEC, run_identity=RUN)
        assert (again.compute_plan_key, again.attempt, again.created, again.status) == (key_2, 2, False, status)
        assert _creations(adapter) == [] and again.added_task_keys == []
    assert len(server.plans) == 2 and len(server.tasks) == 6


def test_a_rerun_after_a_done_plan_creates_nothing(client: SubstraClient, server: MiniServer, adapter: FakeAdapter):
    steps.submit_compute_plan(client, SPEC, run_identity=RUN)
    _end(server, RUN_KEY, "PLAN_STATUS_DONE")
    adapter.calls.clear()
    again = steps.submit_compute_plan(client, SPEC, run_identity=RUN)
    assert (again.compute_plan_key, again.attempt, again.created) == (RUN_KEY, 1, False)
    assert again.existing_task_keys == [derive_task_key(RUN_KEY, f"t{i}") for i in range(3)]
    assert _creations(adapter) == [] and not any(c.path == "/task/bulk_create/" for c in adapter.calls)
    # one look at attempt 1, one at attempt 2 (absent), one listing of the tasks
    assert [c.path for c in adapter.calls] == [
        f"/compute_plan/{RUN_KEY}/",
        f"/compute_plan/{attempt_key(RUN_KEY, 2)}/",
        "/task/",
    ]


def test_every_failure_gets_its_own_next_attempt(client: SubstraClient, server: MiniServer):
    keys = []
    for _ in range(3):
        submitted = steps.submit_compute_plan(client, SPEC, run_identity=RUN)
        keys.append(submitted.compute_plan_key)
        _end(server, submitted.compute_plan_key, "PLAN_STATUS_FAILED")
    assert keys == [attempt_key(RUN_KEY, n) for n in (1, 2, 3)]
    latest = steps.latest_attempt(client, RUN_KEY)
    assert latest is not None and (latest.number, latest.status) == (3, "PLAN_STATUS_FAILED")
    assert steps.latest_done_attempt(client, RUN_KEY) is None


def test_on_failed_fail_names_the_plan_its_failed_task_and_its_logs(
    client: SubstraClient, server: MiniServer, adapter: FakeAdapter
):
    first = steps.submit_compute_plan(client, SPEC, run_identity=RUN)
    culprit = first.added_task_keys[1]
    _end(server, RUN_KEY, "PLAN_STATUS_FAILED", failed_task_key=culprit)
    server.logs[culprit] = "loading data\nValueError: column 'y' is missing"
    adapter.calls.clear()
    with pytest.raises(exc.FutureFailureError) as failed:
        steps.submit_compute_plan(client, SPEC, run_identity=RUN, on_failed="fail")
    message = str(failed.value)
    assert f"compute plan {RUN_KEY} failed" in message
    assert f"failed task: {culprit}" in message
    assert f"attempt 1 of run {RUN_KEY}" in message and "not submitting attempt 2" in message
    assert "column 'y' is missing" in message
    assert failed.value.failed_task_keys == [culprit] and failed.value.key == RUN_KEY
    assert _creations(adapter) == [] and len(server.plans) == 1


def test_on_failed_fail_on_a_canceled_plan_says_it_was_canceled(client: SubstraClient, server: MiniServer):
    steps.submit_compute_plan(client, SPEC, run_identity=RUN)
    _end(server, RUN_KEY, "PLAN_STATUS_CANCELED")
    with pytest.raises(exc.FutureFailureError, match=f"compute plan {RUN_KEY} was canceled"):
        steps.submit_compute_plan(client, SPEC, run_identity=RUN, on_failed="fail")


def test_on_failed_fail_on_a_plan_a_failure_canceled_names_the_failure(client: SubstraClient, server: MiniServer):
    """The orchestrator may record CANCELED for a plan whose task failed (the queued tasks were aborted)."""
    first = steps.submit_compute_plan(client, SPEC, run_identity=RUN)
    culprit = first.added_task_keys[0]
    _end(server, RUN_KEY, "PLAN_STATUS_CANCELED", failed_task_key=culprit)
    server.logs[culprit] = "MemoryError"
    with pytest.raises(exc.FutureFailureError) as failed:
        steps.submit_compute_plan(client, SPEC, run_identity=RUN, on_failed="fail")
    assert f"compute plan {RUN_KEY} failed" in str(failed.value) and f"failed task: {culprit}" in str(failed.value)
    assert "MemoryError" in str(failed.value)
    retried = steps.submit_compute_plan(client, SPEC, run_identity=RUN)  # and by default: attempt 2
    assert retried.attempt == 2 and retried.created


def test_on_failed_fail_still_reuses_a_running_or_done_plan(client: SubstraClient, server: MiniServer):
    steps.submit_compute_plan(client, SPEC, run_identity=RUN, on_failed="fail")
    again = steps.submit_compute_plan(client, SPEC, run_identity=RUN, on_failed="fail")
    assert (again.compute_plan_key, again.created) == (RUN_KEY, False)


def test_a_bad_on_failed_is_refused_before_any_request(client: SubstraClient, adapter: FakeAdapter):
    adapter.calls.clear()
    with pytest.raises(exc.SpecValidationError, match="on_failed") as refused:
        steps.submit_compute_plan(client, SPEC, run_identity=RUN, on_failed="ignore")
    assert "'ignore'" in str(refused.value) and adapter.calls == []


def test_metadata_the_rule_owns_cannot_be_set_by_the_caller(client: SubstraClient, adapter: FakeAdapter):
    adapter.calls.clear()
    spec = {**SPEC, "metadata": {"day": "3", "substra_flows_attempt": "7"}}
    with pytest.raises(exc.SpecValidationError, match="metadata.substra_flows_attempt"):
        steps.submit_compute_plan(client, spec, run_identity=RUN)
    assert adapter.calls == []
    kept = steps.prepare_compute_plan({**SPEC, "metadata": {"day": "3"}}, RUN)[0]
    assert kept.metadata == {"day": "3", "substra_flows_run": RUN_KEY, "substra_flows_attempt": "1"}


def test_uuid_task_ids_are_kept_in_attempt_1_and_rekeyed_under_later_attempts(
    client: SubstraClient, server: MiniServer
):
    first_id, second_id = str(uuid.uuid4()), str(uuid.uuid4())
    external = str(uuid.uuid4())  # a task of another plan (e.g. a model to start from): never rewritten
    spec = {
        "name": "uuids",
        "tasks": [
            {"task_id": first_id, "function_key": FUNCTION, "worker": "MyOrg1MSP", "inputs": []},
            {
                "task_id": second_id,
                "function_key": FUNCTION,
                "worker": "MyOrg1MSP",
                "inputs": [
                    {"identifier": "model", "parent_task_key": first_id, "parent_task_output_identifier": "m"},
                    {"identifier": "init", "parent_task_key": external, "parent_task_output_identifier": "m"},
                ],
            },
        ],
    }
    one, _ = steps.prepare_compute_plan(spec, RUN)
    assert [t.task_id for t in one.tasks] == [first_id, second_id]
    two, names = steps.prepare_compute_plan(spec, RUN, attempt=2)
    key_2 = attempt_key(RUN_KEY, 2)
    assert two.key == key_2
    assert names == {first_id: derive_task_key(key_2, first_id), second_id: derive_task_key(key_2, second_id)}
    assert [t.task_id for t in two.tasks] == [names[first_id], names[second_id]]
    parents = [i.parent_task_key for i in two.tasks[1].inputs]
    assert parents == [names[first_id], external]


def test_a_given_key_is_the_run_key(client: SubstraClient, server: MiniServer):
    given = "5e0f3c57-8d43-4c39-9b5c-111111111111"
    first = steps.submit_compute_plan(client, {**SPEC, "key": given})
    assert (first.compute_plan_key, first.run_key) == (given, given)
    _end(server, given, "PLAN_STATUS_FAILED")
    second = steps.submit_compute_plan(client, {**SPEC, "key": given})
    assert (second.compute_plan_key, second.attempt) == (attempt_key(given, 2), 2)


def test_a_submission_racing_another_finds_the_attempt_it_created(
    client: SubstraClient, server: MiniServer, adapter: FakeAdapter
):
    """Two tries of the same task both see attempt 1 FAILED: the second one's create answers 409, and
    it joins attempt 2 instead of making a third plan."""
    steps.submit_compute_plan(client, SPEC, run_identity=RUN)
    _end(server, RUN_KEY, "PLAN_STATUS_FAILED")
    key_2 = attempt_key(RUN_KEY, 2)
    looks = {"n": 0}

    def attempt_2_absent_once(call: Any, match: Any) -> Any:
        if match.group(1) == key_2 and looks["n"] == 0:
            looks["n"] += 1
            steps.submit_compute_plan(client, SPEC, run_identity=RUN)  # the other try wins the race
            return 404, {"detail": "No ComputePlan matches the given query."}, {}
        return server.get_plan(call, match)

    adapter.route("GET", r"/compute_plan/([^/]+)/", attempt_2_absent_once)
    late = steps.submit_compute_plan(client, SPEC, run_identity=RUN)
    assert (late.compute_plan_key, late.created, late.added_task_keys) == (key_2, False, [])
    assert set(server.plans) == {RUN_KEY, key_2} and len(server.tasks) == 6


# -- reading the latest DONE attempt ------------------------------------------------------------------


def _plan(key: str, run_key: str | None, number: int | None, status: str = "PLAN_STATUS_DONE") -> models.ComputePlan:
    metadata = {"experiment": "x"}
    if run_key:
        metadata |= {"substra_flows_run": run_key, "substra_flows_attempt": str(number)}
    return models.ComputePlan.model_validate(plan_body(key, name=f"plan {key[:4]}", status=status, metadata=metadata))


class BoardClient:
    """Lists the plans it holds (DONE ones for the leaderboard's filter) and their performances."""

    def __init__(self, plans: list[models.ComputePlan], scores: dict[str, float]) -> None:
        self.plans = {p.key: p for p in plans}
        self.scores = scores
        self.performance_reads: list[str] = []

    def list_compute_plan(self, filters: dict[str, Any]) -> list[models.ComputePlan]:
        return [p for p in self.plans.values() if p.status.value in filters["status"]]

    def get_compute_plan(self, key: str) -> models.ComputePlan:
        if key not in self.plans:
            raise exc.NotFound("No ComputePlan matches the given query.", status_code=404, key=key)
        return self.plans[key]

    def get_performances(self, key: str) -> Any:
        self.performance_reads.append(key)
        row = {"compute_plan_key": key, "identifier": "performance", "task_rank": 1, "performance": self.scores[key]}
        return SimpleNamespace(rows=lambda: [row])


def test_the_leaderboard_ranks_only_the_latest_done_attempt_of_each_run():
    run_a, run_b = str(uuid.uuid4()), str(uuid.uuid4())
    a1, a2, a3 = (attempt_key(run_a, n) for n in (1, 2, 3))
    b1, other = run_b, str(uuid.uuid4())
    plans = [
        _plan(a1, run_a, 1, "PLAN_STATUS_FAILED"),
        _plan(a2, run_a, 2, "PLAN_STATUS_DONE"),
        _plan(a3, run_a, 3, "PLAN_STATUS_CANCELED"),
        _plan(b1, run_b, 1, "PLAN_STATUS_DONE"),
        _plan(other, None, None, "PLAN_STATUS_DONE"),  # submitted without the steps: ranked as it is
    ]
    client = BoardClient(plans, {a1: 0.99, a2: 0.7, a3: 0.98, b1: 0.8, other: 0.6})
    board = steps.leaderboard(client, metadata_filters={"experiment": "x"})
    assert [e.compute_plan_key for e in board] == [b1, a2, other]
    assert sorted(client.performance_reads) == sorted([a2, b1, other])  # failed attempts are not even read
    assert steps.quality_gate(a2, board).best_previous_key == b1


def test_two_done_attempts_of_one_run_rank_once_with_the_later_one():
    run = str(uuid.uuid4())
    one, two = attempt_key(run, 1), attempt_key(run, 2)
    plans = [_plan(two, run, 2), _plan(one, run, 1)]
    assert [p.key for p in steps.latest_attempts(plans)] == [two]
    board = steps.leaderboard(BoardClient(plans, {one: 0.9, two: 0.5}))
    assert [e.compute_plan_key for e in board] == [two]


def test_performances_of_a_run_come_from_its_latest_done_attempt():
    run = str(uuid.uuid4())
    one, two, three = (attempt_key(run, n) for n in (1, 2, 3))
    client = BoardClient(
        [_plan(one, run, 1, "PLAN_STATUS_FAILED"), _plan(two, run, 2), _plan(three, run, 3, "PLAN_STATUS_DOING")],
        {one: 0.1, two: 0.7, three: 0.9},
    )
    rows = steps.fetch_performances(client, run, latest_attempt=True)
    assert [r["compute_plan_key"] for r in rows] == [two]
    assert steps.fetch_performances(client, one) == [{**rows[0], "compute_plan_key": one, "performance": 0.1}]
    failed_only = BoardClient([_plan(run, run, 1, "PLAN_STATUS_FAILED")], {run: 0.1})
    with pytest.raises(exc.NotFound, match=f"run {run} has no DONE attempt"):
        steps.fetch_performances(failed_only, run, latest_attempt=True)
