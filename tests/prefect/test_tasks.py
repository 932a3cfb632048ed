"""Unit tests of the Prefect tasks over doubles of the steps and the client (no Substra server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect import flow

from substra_flows import exceptions as exc
from substra_flows import schemas, steps
from substra_flows.prefect import (
    SubstraCredentials,
    add_compute_plan,
    add_data_samples,
    add_function,
    async_cancel_compute_plan,
    async_get_compute_plan,
    async_get_performances,
    async_get_task,
    async_get_task_logs,
    async_wait_compute_plan,
    async_wait_task,
    cancel_compute_plan,
    download_model,
    evaluate_quality_gate,
    get_compute_plan,
    get_leaderboard,
    get_organization_info,
    get_performances,
    get_task,
    get_task_logs,
    is_transient_error,
    register_dataset,
    wait_compute_plan,
    wait_task,
)
from tests.prefect._fakes import DATASET_KEY, FUNCTION_KEY, MODEL_KEY, OWNER, TASK_KEY, FakeClient, FakeSteps, plan
from tests.prefect._helpers import everything_stored, run_logs
from tests.prefect.conftest import UNIT_TOKEN

PLAN_KEY = "5e0f3c57-8d43-4c39-9b5c-111111111111"


def _gateway_error() -> exc.GatewayUnavailable:
    return exc.GatewayUnavailable("GET /compute_plan/x/: 503 Service Unavailable", status_code=503)


# -- retry policy -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (exc.ConnectionError("reset", request_sent=True), True),
        (exc.ConnectionError("bad certificate", transient=False), False),
        (exc.Timeout("read timeout"), True),
        (exc.TooManyRequests("429", status_code=429), True),
        (_gateway_error(), True),
        (exc.RequestTimeout("408", status_code=408), True),
        (exc.AssetMaybeCreatedError("maybe", cause=exc.Timeout("t"), asset_type="dataset"), True),
        (exc.NotFound("404", status_code=404), False),
        (exc.AuthenticationError("401", status_code=401), False),
        (exc.InvalidRequest("400", status_code=400), False),
        (exc.InternalServerError("500", status_code=500), False),
        (exc.FutureFailureError("failed", key="k", kind="compute plan", status="PLAN_STATUS_FAILED"), False),
        (exc.FutureTimeoutError("late", key="k", kind="compute plan", status="x", timeout=1), False),
        (TimeoutError("builtin"), False),
        (ValueError("bug"), False),
        (None, False),
    ],
)
def test_only_transient_errors_are_retried(error, transient):
    assert is_transient_error(error) is transient


def test_a_transient_error_is_retried(fake_steps: FakeSteps, unit_credentials):
    fake_steps.fetch_performances.script(_gateway_error(), lambda client, key: [{"performance": 1.0}])
    rows = get_performances.with_options(retry_delay_seconds=0)(unit_credentials, PLAN_KEY)
    assert rows == [{"performance": 1.0}]
    assert fake_steps.fetch_performances.count == 2


def test_a_refusal_is_not_retried(fake_steps: FakeSteps, unit_credentials):
    fake_steps.fetch_performances.script(exc.NotFound("GET /compute_plan/x/: 404", status_code=404))
    state = get_performances.with_options(retry_delay_seconds=0)(unit_credentials, PLAN_KEY, return_state=True)
    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), exc.NotFound)
    assert fake_steps.fetch_performances.count == 1


# -- registration ---------------------------------------------------------------------------------------


def test_register_dataset_returns_plain_data(fake_steps: FakeSteps, unit_credentials, fake_client: FakeClient):
    result = register_dataset(
        unit_credentials, name="d", opener="opener.py", sample_paths=["a", "b"], permissions={"public": True}
    )
    assert result["dataset_key"] == DATASET_KEY and len(result["sample_keys"]) == 2 and result["created"]
    json.dumps(result)
    (args, kwargs) = fake_steps.register_dataset.calls[0]
    assert args == (fake_client,) and kwargs["name"] == "d" and kwargs["permissions"] == {"public": True}
    assert fake_client.closed == 1  # every task closes (logs out) its client


def test_register_dataset_failure_propagates(fake_steps: FakeSteps, unit_credentials):
    fake_steps.register_dataset.script(exc.AuthenticationError("401 Invalid token", status_code=401))
    with pytest.raises(exc.AuthenticationError):
        register_dataset(unit_credentials, name="d", opener="o.py", sample_paths=["a"])
    assert fake_steps.register_dataset.count == 1


def test_add_data_samples_and_its_failure(fake_steps: FakeSteps, unit_credentials):
    keys = add_data_samples(unit_credentials, DATASET_KEY, ["x", "y", "z"])
    assert len(keys) == 3 and fake_steps.add_data_samples.calls[0][1]["dataset_key"] == DATASET_KEY
    fake_steps.add_data_samples.script(exc.NotFound("unknown dataset", status_code=404))
    with pytest.raises(exc.NotFound):
        add_data_samples(unit_credentials, DATASET_KEY, ["x"])


def test_add_function_and_its_failure(fake_steps: FakeSteps, unit_credentials):
    result = add_function(unit_credentials, name="f", archive="f.tar.gz", inputs={}, outputs={})
    assert result == {"function_key": FUNCTION_KEY, "created": True}
    fake_steps.register_function.script(exc.InvalidRequest("400 bad archive", status_code=400))
    with pytest.raises(exc.InvalidRequest):
        add_function(unit_credentials, name="f", archive="f.tar.gz", inputs={}, outputs={})


# -- compute plans ------------------------------------------------------------------------------------


def test_add_compute_plan_derives_its_key_from_the_flow_run_and_keeps_it_on_retry(
    fake_steps: FakeSteps, unit_credentials
):
    attempts: list[dict] = []

    @flow(retries=1, retry_delay_seconds=0)
    def pipeline() -> dict:
        first = add_compute_plan(unit_credentials, {"name": "p", "tasks": []})
        second = add_compute_plan(unit_credentials, {"name": "q", "tasks": []})
        attempts.append({"first": first, "second": second})
        if len(attempts) == 1:
            raise RuntimeError("crash after submitting, before waiting")
        return first

    state = pipeline(return_state=True)
    assert state.is_completed()
    first_try, retry = attempts
    # same flow run, same step: the retry finds the plans of the first attempt
    assert retry["first"]["compute_plan_key"] == first_try["first"]["compute_plan_key"]
    assert retry["second"]["compute_plan_key"] == first_try["second"]["compute_plan_key"]
    assert first_try["first"]["created"] and not retry["first"]["created"]
    # two submissions of one run are two plans
    assert first_try["first"]["compute_plan_key"] != first_try["second"]["compute_plan_key"]
    flow_run_id = str(state.state_details.flow_run_id)
    identities = [kwargs["run_identity"] for _, kwargs in fake_steps.submit_compute_plan.calls]
    assert identities[0] == ("prefect", flow_run_id, "add_compute_plan-0")
    assert identities[1] == ("prefect", flow_run_id, "add_compute_plan-1")
    assert identities[2:] == identities[:2]
    assert first_try["first"]["compute_plan_key"] == steps.derive_key("prefect", flow_run_id, "add_compute_plan-0")
    # another flow run is another plan
    again = pipeline(return_state=True).result()
    assert again["compute_plan_key"] != first_try["first"]["compute_plan_key"]


def test_add_compute_plan_uses_a_given_key(fake_steps: FakeSteps, unit_credentials):
    assert add_compute_plan(unit_credentials, {"key": PLAN_KEY, "tasks": []})["compute_plan_key"] == PLAN_KEY
    other = "5e0f3c57-8d43-4c39-9b5c-222222222222"
    assert add_compute_plan(unit_credentials, {"tasks": []}, compute_plan_key=other)["compute_plan_key"] == other
    assert [kw["run_identity"] for _, kw in fake_steps.submit_compute_plan.calls] == [None, None]


def test_add_compute_plan_refuses_two_different_keys(fake_steps: FakeSteps, unit_credentials):
    other = "5e0f3c57-8d43-4c39-9b5c-222222222222"
    with pytest.raises(exc.SpecValidationError, match="compute_plan_key") as refused:
        add_compute_plan(unit_credentials, {"key": PLAN_KEY, "tasks": []}, compute_plan_key=other)
    assert other in str(refused.value) and PLAN_KEY in str(refused.value)
    assert fake_steps.submit_compute_plan.calls == []  # refused before anything is submitted


def test_add_compute_plan_accepts_a_spec_object(fake_steps: FakeSteps, unit_credentials):
    result = add_compute_plan(unit_credentials, schemas.ComputePlanSpec(name="from a spec object"))
    (args, kwargs) = fake_steps.submit_compute_plan.calls[0]
    assert args[1].model_dump(exclude_unset=True) == {"name": "from a spec object"}  # no random default key
    assert kwargs["run_identity"][2] == "add_compute_plan-0"
    assert result["compute_plan_key"] == steps.derive_key(*kwargs["run_identity"])


def test_add_compute_plan_failure_propagates(fake_steps: FakeSteps, unit_credentials):
    fake_steps.submit_compute_plan.script(exc.InvalidRequest("400 unknown function", status_code=400))
    with pytest.raises(exc.InvalidRequest, match="unknown function"):
        add_compute_plan(unit_credentials, {"key": PLAN_KEY, "tasks": []})


def test_wait_compute_plan_and_its_failure(fake_steps: FakeSteps, unit_credentials):
    done = wait_compute_plan(unit_credentials, PLAN_KEY, timeout=5, polling_period=0)
    assert done["key"] == PLAN_KEY and done["status"] == "PLAN_STATUS_DONE"
    kwargs = dict(fake_steps.wait_compute_plan.calls[0][1])
    assert callable(kwargs.pop("on_progress")) and kwargs == {"timeout": 5, "polling_period": 0}
    failure = exc.FutureFailureError(
        "compute plan failed; failed task: t\n--- last lines ---\nboom",
        key=PLAN_KEY,
        kind="compute plan",
        status="PLAN_STATUS_FAILED",
        failed_task_keys=[TASK_KEY],
        logs={TASK_KEY: "boom"},
    )
    fake_steps.wait_compute_plan.script(failure)
    state = wait_compute_plan(unit_credentials, PLAN_KEY, polling_period=0, return_state=True)
    assert state.result(raise_on_failure=False) is failure


async def test_async_wait_compute_plan_and_its_failure(fake_steps: FakeSteps, unit_credentials):
    done = await async_wait_compute_plan(unit_credentials, PLAN_KEY, polling_period=0)
    assert done["status"] == "PLAN_STATUS_DONE"
    fake_steps.async_wait_compute_plan.script(
        exc.FutureTimeoutError("late", key=PLAN_KEY, kind="compute plan", status="PLAN_STATUS_DOING", timeout=1)
    )
    with pytest.raises(exc.FutureTimeoutError):
        await async_wait_compute_plan(unit_credentials, PLAN_KEY, timeout=1, polling_period=0)


def test_wait_task_and_its_failure(fake_steps: FakeSteps, unit_credentials):
    assert wait_task(unit_credentials, TASK_KEY, polling_period=0)["status"] == "STATUS_DONE"
    fake_steps.wait_task.script(
        exc.FutureFailureError("task failed", key=TASK_KEY, kind="task", status="STATUS_FAILED")
    )
    with pytest.raises(exc.FutureFailureError):
        wait_task(unit_credentials, TASK_KEY, polling_period=0)


async def test_async_wait_task_and_its_failure(fake_steps: FakeSteps, unit_credentials):
    assert (await async_wait_task(unit_credentials, TASK_KEY, polling_period=0))["key"] == TASK_KEY
    fake_steps.async_wait_task.script(exc.NotFound("404", status_code=404))
    with pytest.raises(exc.NotFound):
        await async_wait_task(unit_credentials, TASK_KEY, polling_period=0)


def test_cancel_compute_plan_and_its_failure(fake_steps: FakeSteps, unit_credentials):
    assert cancel_compute_plan(unit_credentials, PLAN_KEY) is True
    fake_steps.cancel_compute_plan.script(False)
    assert cancel_compute_plan(unit_credentials, PLAN_KEY) is False
    fake_steps.cancel_compute_plan.script(exc.NotFound("404", status_code=404))
    with pytest.raises(exc.NotFound):
        cancel_compute_plan(unit_credentials, PLAN_KEY)


async def test_async_cancel_compute_plan(fake_steps: FakeSteps, unit_credentials):
    assert await async_cancel_compute_plan(unit_credentials, PLAN_KEY) is True
    fake_steps.cancel_compute_plan.script(exc.AuthorizationError("403", status_code=403))
    with pytest.raises(exc.AuthorizationError):
        await async_cancel_compute_plan(unit_credentials, PLAN_KEY)


# -- reads ----------------------------------------------------------------------------------------------


def test_reads_return_plain_data(fake_steps: FakeSteps, unit_credentials, fake_client: FakeClient):
    assert get_compute_plan(unit_credentials, PLAN_KEY)["status"] == "PLAN_STATUS_DOING"
    assert get_task(unit_credentials, TASK_KEY)["status"] == "STATUS_EXECUTING"
    assert get_organization_info(unit_credentials)["organization_id"] == OWNER
    rows = get_performances(unit_credentials, PLAN_KEY)
    assert [r["performance"] for r in rows] == [0.9, 0.8]
    json.dumps(rows)
    fake_client.errors["get_task"] = exc.NotFound("404", status_code=404)
    with pytest.raises(exc.NotFound):
        get_task(unit_credentials, TASK_KEY)


async def test_async_reads(fake_steps: FakeSteps, unit_credentials, fake_client: FakeClient):
    assert (await async_get_compute_plan(unit_credentials, PLAN_KEY))["key"] == PLAN_KEY
    assert (await async_get_task(unit_credentials, TASK_KEY))["key"] == TASK_KEY
    assert len(await async_get_performances(unit_credentials, PLAN_KEY)) == 2
    assert (await async_get_task_logs(unit_credentials, TASK_KEY, tail_lines=1)) == "Traceback: deliberate failure"
    fake_client.errors["get_compute_plan"] = exc.NotFound("404", status_code=404)
    with pytest.raises(exc.NotFound):
        await async_get_compute_plan(unit_credentials, PLAN_KEY)


def test_get_task_logs_tail_and_redaction(fake_steps: FakeSteps, unit_credentials, fake_client: FakeClient):
    assert get_task_logs(unit_credentials, TASK_KEY).splitlines() == [
        "line 1",
        "line 2",
        "Traceback: deliberate failure",
    ]
    assert get_task_logs(unit_credentials, TASK_KEY, tail_lines=2).splitlines() == [
        "line 2",
        "Traceback: deliberate failure",
    ]
    exc.register_secret(UNIT_TOKEN)
    fake_client.logs = f"printed the token {UNIT_TOKEN} by mistake"
    assert UNIT_TOKEN not in get_task_logs(unit_credentials, TASK_KEY)
    fake_client.errors["get_logs"] = exc.HTTPError("410 Gone: the task has no logs", status_code=410)
    with pytest.raises(exc.HTTPError):
        get_task_logs(unit_credentials, TASK_KEY)


def test_download_model(fake_steps: FakeSteps, unit_credentials, fake_client: FakeClient, tmp_path: Path):
    path = download_model(unit_credentials, tmp_path / "models" / "1", model_key=MODEL_KEY)
    assert Path(path).is_file() and Path(path).parent == tmp_path / "models" / "1"
    assert Path(download_model(unit_credentials, tmp_path, task_key=TASK_KEY)).name == f"model_{MODEL_KEY}"
    with pytest.raises(ValueError, match="exactly one"):
        download_model(unit_credentials, tmp_path)
    fake_client.errors["download_model"] = exc.NotFound("404", status_code=404)
    with pytest.raises(exc.NotFound):
        download_model(unit_credentials, tmp_path, model_key=MODEL_KEY)


def test_leaderboard_and_quality_gate(fake_steps: FakeSteps, unit_credentials):
    previous = "5e0f3c57-8d43-4c39-9b5c-333333333333"
    fake_steps.leaderboard.script(
        [
            steps.LeaderboardEntry(compute_plan_key=PLAN_KEY, name="today", score=0.9, metadata={}),
            steps.LeaderboardEntry(compute_plan_key=previous, name="yesterday", score=0.8, metadata={}),
        ]
    )
    board = get_leaderboard(unit_credentials, metadata_filters=[{"key": "pipeline", "type": "is", "value": "r"}])
    assert [e["score"] for e in board] == [0.9, 0.8]
    assert fake_steps.leaderboard.calls[0][1]["metadata_filters"] == [{"key": "pipeline", "type": "is", "value": "r"}]
    decision = evaluate_quality_gate(PLAN_KEY, board, min_improvement=0.05)
    assert decision["promote"] is True and decision["best_previous_key"] == previous
    assert evaluate_quality_gate(previous, board)["promote"] is False
    with pytest.raises(ValueError, match="not on the leaderboard"):
        evaluate_quality_gate("5e0f3c57-8d43-4c39-9b5c-444444444444", board)


def test_tasks_log_through_the_run_logger_and_never_the_token(fake_steps: FakeSteps, fake_client: FakeClient):
    credentials = SubstraCredentials(url="http://substra.test/org-1", token=UNIT_TOKEN)

    @flow
    def pipeline() -> dict:
        add_compute_plan(credentials, {"key": PLAN_KEY, "tasks": []})
        return wait_compute_plan(credentials, PLAN_KEY, polling_period=0)

    state = pipeline(return_state=True)
    logs = run_logs(state.state_details.flow_run_id)
    messages = "\n".join(log.message for log in logs)
    assert (
        f"compute plan {PLAN_KEY} (attempt 1) submitted, 0 task(s) added now: {credentials.url}/compute_plan/"
        in messages
    )
    assert f"compute plan {PLAN_KEY}: PLAN_STATUS_DONE, 0/0 tasks done, 0 failed, 0s elapsed" in messages
    assert UNIT_TOKEN not in messages
    assert UNIT_TOKEN not in json.dumps(state.result())
    assert UNIT_TOKEN not in everything_stored(state.state_details.flow_run_id)


def test_plain_results_of_models(fake_steps: FakeSteps, unit_credentials):
    fake_steps.wait_compute_plan.script(plan(PLAN_KEY, "PLAN_STATUS_DONE", metadata={"day": "1"}))
    done = wait_compute_plan(unit_credentials, PLAN_KEY, polling_period=0)
    assert done["metadata"] == {"day": "1"}
    json.dumps(done)


def test_no_task_is_ever_cached():
    """Reruns are made safe by the steps finding what exists; a cached result would skip them."""
    from prefect.cache_policies import NO_CACHE
    from prefect.tasks import Task

    from substra_flows.prefect import tasks as module

    found = {name: t for name, t in vars(module).items() if isinstance(t, Task)}
    assert len(found) >= 20, sorted(found)
    assert {name for name, t in found.items() if t.cache_policy is not NO_CACHE} == set()
