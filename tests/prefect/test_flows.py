"""Unit tests of run_compute_plan and its cancellation paths, over doubles of the steps (no Substra server)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.flow_engine import FlowRunTimeoutError
from prefect.runtime import flow_run as current_flow_run
from prefect.states import Cancelling

from substra_flows import exceptions as exc
from substra_flows.prefect import (
    SubstraCredentials,
    cancel_compute_plan_on_cancellation,
    compute_plan_key_for_run,
    run_compute_plan,
)
from substra_flows.prefect import flows as flows_module
from tests.prefect._fakes import TASK_KEY, FakeClient, FakeSteps
from tests.prefect._helpers import artifacts_by_key, everything_stored, table_rows
from tests.prefect.conftest import UNIT_TOKEN

SPEC = {"name": "unit plan", "tasks": []}


class SimulatedCrash(BaseException):
    """Stands for the process dying (not a cancellation)."""


def _flow_run_id(state) -> uuid.UUID:
    return state.state_details.flow_run_id


def test_a_plan_is_submitted_waited_for_and_reported(fake_steps: FakeSteps, unit_credentials):
    state = run_compute_plan(unit_credentials, SPEC, polling_period=0, return_state=True)
    result = state.result()
    run_id = _flow_run_id(state)
    key = compute_plan_key_for_run(flow_run_id=run_id)
    assert result["compute_plan_key"] == key and result["created"] is True
    assert result["status"] == "PLAN_STATUS_DONE"
    assert result["link"] == f"https://ui.test/compute_plans/{key}/tasks"
    assert [r["performance"] for r in result["performances"]] == [0.9, 0.8]
    submitted = fake_steps.submit_compute_plan.calls[0][0][1]
    assert submitted["key"] == key and submitted["name"] == "unit plan"
    artifacts = artifacts_by_key(run_id)
    assert set(artifacts) == {"substra-performances", "substra-compute-plan", "substra-summary"}
    assert artifacts["substra-performances"].type == "table"
    assert [r["performance"] for r in table_rows(artifacts["substra-performances"])] == [0.9, 0.8]
    assert f"({result['link']})" in artifacts["substra-compute-plan"].data
    summary = artifacts["substra-summary"].data
    assert key in summary and "PLAN_STATUS_DONE" in summary and "| performance | 0.8500 |" in summary
    assert fake_steps.cancel_compute_plan.count == 0
    assert UNIT_TOKEN not in everything_stored(run_id)
    assert UNIT_TOKEN not in json.dumps(result)


def test_a_given_key_is_kept(fake_steps: FakeSteps, unit_credentials):
    key = "9a0c6d35-7b1f-4a8e-8d2a-000000000001"
    result = run_compute_plan(unit_credentials, {**SPEC, "key": key}, polling_period=0)
    assert result["compute_plan_key"] == key


def test_a_failed_plan_raises_naming_its_failed_tasks_with_their_logs(fake_steps: FakeSteps, unit_credentials):
    failure = exc.FutureFailureError(
        f"compute plan k failed (status PLAN_STATUS_FAILED); failed task: {TASK_KEY}\n"
        "--- last lines of the logs ---\nRuntimeError: deliberate failure for tests\n--- end of logs ---",
        key="k",
        kind="compute plan",
        status="PLAN_STATUS_FAILED",
        failed_task_keys=[TASK_KEY],
        logs={TASK_KEY: "Traceback (most recent call last):\nRuntimeError: deliberate failure for tests"},
    )
    fake_steps.wait_compute_plan.script(failure)
    state = run_compute_plan(unit_credentials, SPEC, polling_period=0, return_state=True)
    assert state.is_failed()
    raised = state.result(raise_on_failure=False)
    assert isinstance(raised, exc.FutureFailureError)
    assert TASK_KEY in str(raised) and "deliberate failure for tests" in str(raised)
    summary = artifacts_by_key(_flow_run_id(state))["substra-summary"].data
    assert f"`{TASK_KEY}`" in summary and "RuntimeError: deliberate failure for tests" in summary
    assert "PLAN_STATUS_FAILED" in summary
    assert fake_steps.cancel_compute_plan.count == 0  # a failed plan is over: nothing to cancel


def test_a_wait_past_its_timeout_cancels_the_plan(fake_steps: FakeSteps, unit_credentials, fake_client: FakeClient):
    late = exc.FutureTimeoutError(
        "compute plan still PLAN_STATUS_DOING after 2s",
        key="k",
        kind="compute plan",
        status="PLAN_STATUS_DOING",
        timeout=2,
    )
    fake_steps.wait_compute_plan.script(late)
    state = run_compute_plan(unit_credentials, SPEC, wait_timeout=2, polling_period=0, return_state=True)
    assert isinstance(state.result(raise_on_failure=False), exc.FutureTimeoutError)
    key = compute_plan_key_for_run(flow_run_id=_flow_run_id(state))
    assert [args[1] for args, _ in fake_steps.cancel_compute_plan.calls] == [key]
    assert {"retry_timeout": flows_module.CLEANUP_RETRY_TIMEOUT} in fake_client.opened  # clean-up never hangs
    summary = artifacts_by_key(_flow_run_id(state))["substra-summary"].data
    assert "after 2s. Cancelled." in summary


def test_a_wait_timeout_can_leave_the_plan_running(fake_steps: FakeSteps, unit_credentials):
    fake_steps.wait_compute_plan.script(
        exc.FutureTimeoutError("late", key="k", kind="compute plan", status="PLAN_STATUS_DOING", timeout=2)
    )
    state = run_compute_plan(unit_credentials, SPEC, wait_timeout=2, cancel_on_timeout=False, return_state=True)
    assert state.is_failed() and fake_steps.cancel_compute_plan.count == 0


def test_the_flow_timeout_cancels_the_plan(fake_steps: FakeSteps, unit_credentials):
    def poll_forever(client, key, **_):
        while True:  # like the client's wait: short sleeps, each a point where Prefect can interrupt
            time.sleep(0.05)

    fake_steps.wait_compute_plan.script(poll_forever)
    started = time.monotonic()
    state = run_compute_plan.with_options(timeout_seconds=2)(unit_credentials, SPEC, return_state=True)
    assert time.monotonic() - started < 20
    assert isinstance(state.result(raise_on_failure=False), FlowRunTimeoutError)
    key = compute_plan_key_for_run(flow_run_id=_flow_run_id(state))
    assert [args[1] for args, _ in fake_steps.cancel_compute_plan.calls] == [key]


def test_a_crash_leaves_the_plan_running_for_a_rerun(fake_steps: FakeSteps, unit_credentials):
    fake_steps.wait_compute_plan.script(SimulatedCrash("the process died"))
    with pytest.raises(SimulatedCrash):
        run_compute_plan(unit_credentials, SPEC, polling_period=0)
    assert fake_steps.cancel_compute_plan.count == 0


def test_an_interruption_of_a_cancelled_run_cancels_the_plan(fake_steps: FakeSteps, unit_credentials):
    # what a runner's SIGTERM does (TerminationSignal, a BaseException) once the run is Cancelling; the
    # real signal is exercised by the live test, since Prefect re-raises it to the process afterwards
    def cancelled_while_waiting(client, key, **_):
        with get_client(sync_client=True) as prefect:
            prefect.set_flow_run_state(current_flow_run.get_id(), Cancelling(), force=True)
        raise SimulatedCrash("terminated")

    fake_steps.wait_compute_plan.script(cancelled_while_waiting)
    with pytest.raises(SimulatedCrash):
        run_compute_plan(unit_credentials, SPEC, polling_period=0)
    assert fake_steps.cancel_compute_plan.count == 1


# -- the on_cancellation hook ---------------------------------------------------------------------------


def _cancelled_run(parameters: dict) -> FlowRun:
    return FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="cancelled-run", parameters=parameters)


def test_the_hook_cancels_the_derived_plan_with_a_saved_block(fake_steps: FakeSteps):
    SubstraCredentials(url="http://substra.test/org-1", token=UNIT_TOKEN).save("hook-test", overwrite=True)
    run = _cancelled_run({"credentials": "hook-test", "compute_plan": SPEC})
    cancel_compute_plan_on_cancellation(run_compute_plan, run, Cancelling())
    # from another process, the run key is all it knows: the step cancels that run's latest attempt
    assert [args[1] for args, _ in fake_steps.cancel_latest_attempt.calls] == [
        compute_plan_key_for_run(flow_run_id=run.id)
    ]


def test_the_hook_loads_a_block_passed_as_a_saved_document(fake_steps: FakeSteps):
    block = SubstraCredentials(url="http://substra.test/org-1", token=UNIT_TOKEN)
    block_id = block.save("hook-ref-test", overwrite=True)
    key = "9a0c6d35-7b1f-4a8e-8d2a-000000000002"
    stored = {**json.loads(block.model_dump_json()), "_block_document_id": str(block_id)}
    run = _cancelled_run({"credentials": stored, "compute_plan": {**SPEC, "key": key}})
    cancel_compute_plan_on_cancellation(run_compute_plan, run, Cancelling())
    assert [args[1] for args, _ in fake_steps.cancel_latest_attempt.calls] == [key]


def test_the_hook_cannot_use_masked_secrets(fake_steps: FakeSteps, unit_credentials):
    masked = json.loads(unit_credentials.model_dump_json())
    run = _cancelled_run({"credentials": masked, "compute_plan": SPEC})
    cancel_compute_plan_on_cancellation(run_compute_plan, run, Cancelling())
    assert fake_steps.cancel_compute_plan.count == 0 and fake_steps.cancel_latest_attempt.count == 0


def test_the_hook_uses_the_plan_of_a_run_of_this_process(fake_steps: FakeSteps, unit_credentials):
    run = _cancelled_run({})
    flows_module._RUNNING[str(run.id)] = (unit_credentials, "9a0c6d35-7b1f-4a8e-8d2a-000000000003")
    try:
        cancel_compute_plan_on_cancellation(run_compute_plan, run, Cancelling())
    finally:
        flows_module._RUNNING.pop(str(run.id))
    assert [args[1] for args, _ in fake_steps.cancel_compute_plan.calls] == ["9a0c6d35-7b1f-4a8e-8d2a-000000000003"]


def test_a_plan_never_submitted_is_not_an_error(fake_steps: FakeSteps, unit_credentials):
    fake_steps.cancel_compute_plan.script(exc.NotFound("404", status_code=404))
    run = _cancelled_run({})
    flows_module._RUNNING[str(run.id)] = (unit_credentials, "9a0c6d35-7b1f-4a8e-8d2a-000000000004")
    try:
        cancel_compute_plan_on_cancellation(run_compute_plan, run, Cancelling())  # logs, does not raise
    finally:
        flows_module._RUNNING.pop(str(run.id))


def test_compute_plan_key_for_run_is_deterministic():
    run_id = uuid.uuid4()
    assert compute_plan_key_for_run(flow_run_id=run_id) == compute_plan_key_for_run(flow_run_id=str(run_id))
    assert compute_plan_key_for_run("a", run_id) != compute_plan_key_for_run("b", run_id)
    with pytest.raises(RuntimeError):
        compute_plan_key_for_run()


def test_the_hook_of_a_run_that_never_submitted_is_not_an_error(fake_steps: FakeSteps):
    SubstraCredentials(url="http://substra.test/org-1", token=UNIT_TOKEN).save("hook-none-test", overwrite=True)
    fake_steps.cancel_latest_attempt.script((None, False))
    run = _cancelled_run({"credentials": "hook-none-test", "compute_plan": SPEC})
    cancel_compute_plan_on_cancellation(run_compute_plan, run, Cancelling())  # logs, does not raise
    assert fake_steps.cancel_latest_attempt.count == 1 and fake_steps.cancel_compute_plan.count == 0
