"""Live: Prefect flow runs against the session's local Substra node, end to end."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect import task
from prefect.client.orchestration import get_client
from prefect.flow_engine import FlowRunTimeoutError, run_flow
from prefect.runner import Runner
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelling, Scheduled

from examples.prefect.retraining import retraining
from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.local_node import LocalNode
from substra_flows.prefect import SubstraCredentials, compute_plan_key_for_run, run_compute_plan
from substra_flows.prefect import flows as flows_module
from tests.prefect._assets import MARKER, failing_spec, federated_spec, register_world, sleep_spec
from tests.prefect._helpers import artifacts_by_key, everything_stored, flow_run, table_rows

pytestmark = pytest.mark.live

POLL = 0.1


@pytest.fixture(scope="module")
def clients(local_node: LocalNode) -> list[SubstraClient]:
    """Plain clients of both organizations, for setting up and checking from outside Prefect."""
    made = [SubstraClient(url=o.url, token=o.token) for o in local_node.organizations]
    yield made
    for client in made:
        client.close()


@pytest.fixture(scope="module")
def world(local_node: LocalNode, clients, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Datasets of both organizations and the functions, registered once for the module."""
    org_ids = [o.organization_id for o in local_node.organizations]
    return register_world(clients, org_ids, tmp_path_factory.mktemp("prefect-live"), "prefect live")


def _plans_named(client: SubstraClient, name: str) -> list:
    return client.list_compute_plan(filters={"name": name})


def _wait_status(client: SubstraClient, key: str, statuses: set[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = client.get_compute_plan(key).status.value
        except exc.NotFound:
            status = "absent"
        if status in statuses or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_run_compute_plan_end_to_end(world, node_credentials, clients):
    name = f"prefect live e2e {uuid.uuid4()}"
    state = run_compute_plan(node_credentials[0], federated_spec(name, world), polling_period=POLL, return_state=True)
    result = state.result()
    run_id = state.state_details.flow_run_id
    key = compute_plan_key_for_run(flow_run_id=run_id)
    assert result["compute_plan_key"] == key and result["created"] is True
    assert result["status"] == "PLAN_STATUS_DONE"
    rows = result["performances"]
    assert sorted(r["worker"] for r in rows) == sorted(o["organization_id"] for o in world["orgs"])
    assert all(r["identifier"] == "performance" and 0.5 <= r["performance"] <= 1.0 for r in rows)
    plan = clients[0].get_compute_plan(key)
    assert plan.name == name and plan.task_count == 7 and plan.done_count == 7
    artifacts = artifacts_by_key(run_id)
    table = table_rows(artifacts["substra-performances"])
    assert sorted((r["worker"], r["performance"]) for r in table) == sorted(
        (r["worker"], r["performance"]) for r in rows
    )
    assert f"/compute_plan/{key}/" in artifacts["substra-compute-plan"].data
    assert "PLAN_STATUS_DONE" in artifacts["substra-summary"].data
    token = node_credentials[0].token.get_secret_value()
    assert token not in everything_stored(run_id)
    assert token not in json.dumps(result)


def test_a_failed_plan_fails_the_flow_naming_the_task_and_its_logs(world, local_node, clients):
    org = local_node.organizations[0]
    credentials = SubstraCredentials(url=org.url, username=org.username, password=org.password)
    name = f"prefect live failure {uuid.uuid4()}"
    state = run_compute_plan(credentials, failing_spec(name, world), polling_period=POLL, return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, exc.FutureFailureError)
    run_id = state.state_details.flow_run_id
    key = compute_plan_key_for_run(flow_run_id=run_id)
    (failed_task,) = error.failed_task_keys
    assert failed_task in str(error) and MARKER in str(error)
    summary = artifacts_by_key(run_id)["substra-summary"].data
    assert f"`{failed_task}`" in summary and MARKER in summary and key in summary
    stored = everything_stored(run_id)
    for secret in (org.password, org.token):
        assert secret not in stored
        assert secret not in str(error)


def test_a_rerun_after_a_crash_between_submit_and_wait_creates_no_second_plan(
    world, node_credentials, clients, monkeypatch
):
    class ProcessDied(BaseException):
        """Stands for the worker being killed after the plan was submitted."""

    crashed_runs: list[str] = []

    @task
    def crash(*args: Any, **kwargs: Any) -> None:
        crashed_runs.append(current_flow_run.get_id())
        raise ProcessDied("killed between submit and wait")

    name = f"prefect live rerun {uuid.uuid4()}"
    spec = federated_spec(name, world)
    monkeypatch.setattr(flows_module, "wait_compute_plan", crash)
    with pytest.raises(ProcessDied):
        run_compute_plan(node_credentials[0], spec, polling_period=POLL)
    (run_id,) = crashed_runs
    assert flow_run(run_id).state.is_crashed()
    key = compute_plan_key_for_run(flow_run_id=run_id)
    assert [p.key for p in _plans_named(clients[0], name)] == [key]
    assert _wait_status(clients[0], key, {"PLAN_STATUS_DONE"}) == "PLAN_STATUS_DONE"  # a crash does not cancel

    monkeypatch.undo()
    with get_client(sync_client=True) as prefect:
        prefect.set_flow_run_state(run_id, Scheduled(), force=True)
        crashed_run = prefect.read_flow_run(run_id)
    result = run_flow(
        run_compute_plan,
        flow_run=crashed_run,
        parameters={"credentials": node_credentials[0], "compute_plan": spec, "polling_period": POLL},
    )
    assert result["compute_plan_key"] == key
    assert result["created"] is False
    assert len(result["performances"]) == 2
    assert [p.key for p in _plans_named(clients[0], name)] == [key]


def test_the_flow_timeout_cancels_the_plan(world, node_credentials, clients, local_node):
    name = f"prefect live timeout {uuid.uuid4()}"
    started = time.monotonic()
    state = run_compute_plan.with_options(timeout_seconds=3)(
        node_credentials[0], sleep_spec(name, world), polling_period=POLL, return_state=True
    )
    assert isinstance(state.result(raise_on_failure=False), FlowRunTimeoutError)
    assert time.monotonic() - started < 30
    key = compute_plan_key_for_run(flow_run_id=state.state_details.flow_run_id)
    plan = clients[0].get_compute_plan(key)
    assert plan.status.value == "PLAN_STATUS_CANCELED"
    assert plan.done_count < plan.task_count
    local_node.wait_idle()


def test_the_wait_timeout_cancels_the_plan(world, node_credentials, clients, local_node):
    name = f"prefect live wait timeout {uuid.uuid4()}"
    state = run_compute_plan(
        node_credentials[0], sleep_spec(name, world), wait_timeout=1.5, polling_period=POLL, return_state=True
    )
    assert isinstance(state.result(raise_on_failure=False), exc.FutureTimeoutError)
    key = compute_plan_key_for_run(flow_run_id=state.state_details.flow_run_id)
    assert clients[0].get_compute_plan(key).status.value == "PLAN_STATUS_CANCELED"
    assert "Cancelled." in artifacts_by_key(state.state_details.flow_run_id)["substra-summary"].data
    local_node.wait_idle()


async def test_cancelling_a_served_flow_run_cancels_its_plan(world, local_node, clients):
    """The real thing: a runner serves the flow in a child process; cancelling the run in Prefect
    makes the runner stop the process, and the plan is cancelled."""
    org = local_node.organizations[0]
    block_name = f"prefect-live-{uuid.uuid4().hex[:8]}"
    await SubstraCredentials(url=org.url, token=org.token).save(block_name, overwrite=True)
    name = f"prefect live cancel {uuid.uuid4()}"
    previous_sigterm = signal.getsignal(signal.SIGTERM)
    runner = Runner(name=f"runner-{block_name}", query_seconds=1)
    try:
        deployment_id = await runner.aadd_flow(run_compute_plan, name=block_name)
        async with get_client() as prefect:
            submitted = await prefect.create_flow_run_from_deployment(
                deployment_id,
                parameters={
                    "credentials": block_name,
                    "compute_plan": sleep_spec(name, world, length=8),
                    "polling_period": POLL,
                },
            )
            serving = asyncio.create_task(runner.start(run_once=True))
            key = compute_plan_key_for_run(flow_run_id=submitted.id)
            status = await asyncio.to_thread(_wait_status, clients[0], key, {"PLAN_STATUS_DOING"}, 90)
            assert status == "PLAN_STATUS_DOING", f"the served flow run did not submit its plan ({status})"
            await prefect.set_flow_run_state(submitted.id, Cancelling(), force=True)
            await asyncio.wait_for(serving, timeout=90)
            status = await asyncio.to_thread(_wait_status, clients[0], key, {"PLAN_STATUS_CANCELED"}, 30)
            assert status == "PLAN_STATUS_CANCELED"
            final = await prefect.read_flow_run(submitted.id)
            assert final.state is not None and final.state.is_cancelled()
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
    plan = clients[0].get_compute_plan(key)
    assert plan.done_count < plan.task_count
    await asyncio.to_thread(local_node.wait_idle)


def test_the_retraining_flow_for_three_days(node_credentials, clients, tmp_path: Path):
    pipeline = f"retraining-live-{uuid.uuid4().hex[:8]}"
    days = []
    for day in (1, 2, 3):
        state = retraining(
            node_credentials,
            day=day,
            pipeline=pipeline,
            workdir=str(tmp_path / "work"),
            models_dir=str(tmp_path / "models"),
            polling_period=POLL,
            return_state=True,
        )
        days.append((state.state_details.flow_run_id, state.result()))
    (first_run, first), (_, second), (third_run, third) = days
    assert first["datasets_created"] == [True, True] and sorted(first["functions_created"]) == sorted(
        ["train", "aggregate", "predict", "score"]
    )
    for later in (second, third):
        assert later["datasets_created"] == [False, False] and later["functions_created"] == []
    assert len({d["compute_plan_key"] for _, d in days}) == 3 and all(d["plan_created"] for _, d in days)
    assert all(len(d["performances"]) == 2 for _, d in days)
    assert first["gate"]["promote"] is True and first["gate"]["best_previous_key"] is None
    for _, outcome in days:
        if outcome["gate"]["promote"]:
            assert Path(outcome["model_path"]).is_file()
            assert Path(outcome["model_path"]).parent == tmp_path / "models" / str(outcome["day"])
        else:
            assert outcome["model_path"] is None
    plans = clients[0].list_compute_plan(filters={"metadata": [{"key": "pipeline", "type": "is", "value": pipeline}]})
    assert sorted(p.key for p in plans) == sorted(d["compute_plan_key"] for _, d in days)
    datasets = clients[0].list_dataset(filters={"name": f"{pipeline} org-1"})
    assert len(datasets) == 1
    report = artifacts_by_key(third_run)[f"{pipeline}-day-report"].data
    assert "# Day 3: model" in report and f"{pipeline} day 3 (today)" in report
    assert flow_run(first_run).state.is_completed()
    token = node_credentials[0].token.get_secret_value()
    for run_id, outcome in days:
        assert token not in everything_stored(run_id)
        assert token not in json.dumps(outcome)


def _cancel_when_running(client: SubstraClient, key: str) -> Any:
    """Cancel the plan from outside Prefect once one of its tasks is done (a person in the web app)."""
    import threading

    def cancel() -> None:
        _wait_status(client, key, {"PLAN_STATUS_DOING"}, timeout=60)
        deadline = time.monotonic() + 60
        while client.get_compute_plan(key).done_count < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.cancel_compute_plan(key)

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    return thread


def _owned(client: SubstraClient, run_key: str) -> list[tuple[str, str, str]]:
    from substra_flows import steps

    plans = client.list_compute_plan(
        filters={"metadata": [{"key": steps.RUN_METADATA, "type": "is", "value": run_key}]}
    )
    return sorted((p.key, p.metadata[steps.ATTEMPT_METADATA], p.status.value) for p in plans)


def test_a_rerun_of_a_day_whose_plan_was_canceled_runs_attempt_2(world, node_credentials, clients):
    from substra_flows import steps
    from tests.prefect._helpers import run_logs

    run_key = str(uuid.uuid4())  # "the day": a key of the caller's, as the example derives from pipeline and day
    spec = sleep_spec(f"prefect live attempts {run_key[:8]}", world, length=4, key=run_key)
    canceller = _cancel_when_running(clients[0], run_key)
    first = run_compute_plan(node_credentials[0], spec, polling_period=POLL, return_state=True)
    canceller.join(60)
    assert first.is_failed() and isinstance(first.result(raise_on_failure=False), exc.FutureFailureError)
    assert _owned(clients[0], run_key) == [(run_key, "1", "PLAN_STATUS_CANCELED")]

    second = run_compute_plan(node_credentials[0], spec, polling_period=POLL, return_state=True)
    result = second.result()
    attempt_2 = steps.attempt_key(run_key, 2)
    assert (result["compute_plan_key"], result["attempt"], result["created"], result["status"]) == (
        attempt_2,
        2,
        True,
        "PLAN_STATUS_DONE",
    )
    assert _owned(clients[0], run_key) == sorted(
        [(run_key, "1", "PLAN_STATUS_CANCELED"), (attempt_2, "2", "PLAN_STATUS_DONE")]
    )
    run_id = second.state_details.flow_run_id
    messages = [log.message for log in run_logs(run_id)]
    assert any(
        m.startswith(f"compute plan {attempt_2} (attempt 2) submitted") and f"/compute_plan/{attempt_2}/" in m
        for m in messages
    )
    assert any(m.startswith(f"compute plan {attempt_2}: PLAN_STATUS_DONE, 4/4 tasks done") for m in messages)
    progress = artifacts_by_key(run_id)["substra-progress"]
    assert progress.data == 100.0 and "4/4 tasks done" in progress.description
    assert node_credentials[0].token.get_secret_value() not in everything_stored(run_id)

    third = run_compute_plan(node_credentials[0], spec, polling_period=POLL, return_state=True).result()
    assert (third["compute_plan_key"], third["created"]) == (attempt_2, False)
    assert len(_owned(clients[0], run_key)) == 2


def test_a_retry_of_the_users_flow_waits_for_the_same_plan_or_the_next_attempt(world, node_credentials, clients):
    """The subflow of a retried flow run is a new flow run: the plan must still be found (named by the call)."""
    from prefect import flow

    from substra_flows import steps

    name = f"prefect live retry {uuid.uuid4().hex[:8]}"
    keys: list[str] = []

    @flow(retries=1, retry_delay_seconds=0)
    def nightly() -> dict[str, Any]:
        run_key = steps.derive_key("prefect", str(current_flow_run.get_id()), "run_compute_plan-0")
        keys.append(run_key)
        if len(keys) == 1:
            canceller = _cancel_when_running(clients[0], run_key)
            try:
                return run_compute_plan(node_credentials[0], sleep_spec(name, world, length=4), polling_period=POLL)
            finally:
                canceller.join(60)
        return run_compute_plan(node_credentials[0], sleep_spec(name, world, length=4), polling_period=POLL)

    state = nightly(return_state=True)
    result = state.result()
    assert keys[0] == keys[1]  # the same parent flow run, the same call
    assert (result["attempt"], result["status"]) == (2, "PLAN_STATUS_DONE")
    assert _owned(clients[0], keys[0]) == sorted(
        [(keys[0], "1", "PLAN_STATUS_CANCELED"), (steps.attempt_key(keys[0], 2), "2", "PLAN_STATUS_DONE")]
    )
    parent = artifacts_by_key(state.state_details.flow_run_id)
    assert "PLAN_STATUS_DONE" in parent["substra-summary"].data and "substra-performances" in parent
