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


# -- progress, artifacts on the user's flow run, subflow retries ------------------------------------


def _reports_then_done(client, key, *, on_progress=None, **_):
    """A wait that reports three looks at a 4-task plan, then returns it DONE."""
    from substra_flows.waiting import WaitKind, progress_of
    from tests.prefect._fakes import plan

    for done in (0, 2, 4):
        status = "PLAN_STATUS_DONE" if done == 4 else "PLAN_STATUS_DOING"
        on_progress(
            progress_of(
                WaitKind.compute_plan,
                key,
                plan(key, status, task_count=4, done_count=done),
                5.0 * done,
                final=done == 4,
            )
        )
    return plan(key, "PLAN_STATUS_DONE", task_count=4, done_count=4)


def test_the_wait_keeps_a_progress_artifact_and_logs_each_report(fake_steps: FakeSteps, unit_credentials):
    from tests.prefect._helpers import run_logs

    fake_steps.wait_compute_plan.script(_reports_then_done)
    state = run_compute_plan(unit_credentials, SPEC, polling_period=0, return_state=True)
    run_id = _flow_run_id(state)
    key = state.result()["compute_plan_key"]
    progress = artifacts_by_key(run_id)["substra-progress"]
    assert progress.type == "progress" and progress.data == 100.0
    assert progress.description == f"compute plan {key}: PLAN_STATUS_DONE, 4/4 tasks done, 0 failed, 20s elapsed"
    messages = [log.message for log in run_logs(run_id)]
    assert f"compute plan {key}: PLAN_STATUS_DOING, 2/4 tasks done, 0 failed, 10s elapsed" in messages
    assert sum(m.startswith(f"compute plan {key}: ") and m.endswith("elapsed") for m in messages) == 3


def test_a_progress_artifact_that_cannot_be_written_does_not_stop_the_wait(
    fake_steps: FakeSteps, unit_credentials, monkeypatch: pytest.MonkeyPatch
):
    from substra_flows.prefect import artifacts as artifacts_module

    def broken(*args, **kwargs):
        raise RuntimeError("Prefect API unavailable")

    monkeypatch.setattr(artifacts_module, "create_progress_artifact", broken)
    fake_steps.wait_compute_plan.script(_reports_then_done)
    state = run_compute_plan(unit_credentials, SPEC, polling_period=0, return_state=True)
    assert state.is_completed() and "substra-progress" not in artifacts_by_key(_flow_run_id(state))


def test_as_a_subflow_its_artifacts_are_on_the_users_flow_run_too(fake_steps: FakeSteps, unit_credentials):
    from prefect import flow

    @flow
    def nightly() -> dict:
        return run_compute_plan(unit_credentials, SPEC, polling_period=0)

    state = nightly(return_state=True)
    parent = artifacts_by_key(_flow_run_id(state))
    assert {"substra-performances", "substra-compute-plan", "substra-summary"} <= set(parent)
    key = state.result()["compute_plan_key"]
    assert (
        key in parent["substra-summary"].data and f"/compute_plans/{key}/tasks" in parent["substra-compute-plan"].data
    )


def test_a_retry_of_the_calling_flow_finds_the_subflows_run_key(fake_steps: FakeSteps, unit_credentials):
    """A retry of the parent starts a new subflow run: its plans must still be named after the same call."""
    from prefect import flow

    ended = exc.FutureFailureError(
        "compute plan was canceled", key="k", kind="compute plan", status="PLAN_STATUS_CANCELED"
    )
    fake_steps.wait_compute_plan.script(
        ended, lambda client, key, **_: _reports_then_done(client, key, on_progress=lambda p: None)
    )

    @flow(retries=1, retry_delay_seconds=0)
    def nightly() -> tuple[dict, dict]:
        first = run_compute_plan(unit_credentials, SPEC, polling_period=0)
        second = run_compute_plan(unit_credentials, {**SPEC, "name": "another"}, polling_period=0)
        return first, second

    state = nightly(return_state=True)
    assert state.is_completed()
    keys = [args[1]["key"] for args, _ in fake_steps.submit_compute_plan.calls]
    # try 1: the first call's plan ended (the flow failed); try 2: both calls, the first under the same run key
    assert len(keys) == 3 and keys[1] == keys[0] and keys[2] != keys[0]
    parent_id = str(_flow_run_id(state))
    assert keys[0] == steps_derive("prefect", parent_id, "run_compute_plan-0")
    assert keys[2] == steps_derive("prefect", parent_id, "run_compute_plan-1")


def steps_derive(*parts: str) -> str:
    from substra_flows.steps import derive_key

    return derive_key(*parts)


# -- crashes -------------------------------------------------------------------------------------------------


def test_a_crashed_run_ends_crashed_and_says_its_plan_keeps_running(fake_steps: FakeSteps, unit_credentials):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from tests.prefect._helpers import run_logs

    fake_steps.wait_compute_plan.script(SimulatedCrash("the process died"))
    name = f"crash-{uuid.uuid4().hex[:8]}"
    with pytest.raises(SimulatedCrash):
        run_compute_plan.with_options(flow_run_name=name)(unit_credentials, SPEC, polling_period=0)
    with get_client(sync_client=True) as client:
        (crashed,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
    assert crashed.state is not None and crashed.state.is_crashed()
    key = compute_plan_key_for_run(flow_run_id=crashed.id)
    assert fake_steps.cancel_compute_plan.count == 0 and fake_steps.cancel_latest_attempt.count == 0
    messages = [log.message for log in run_logs(crashed.id)]
    assert any(f"compute plan {key} is left running; retry this flow run" in m for m in messages), messages


def test_the_zombie_automation_marks_silent_runs_crashed_and_is_created_once():
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType

    from substra_flows.prefect import ensure_zombie_automation, zombie_automation
    from substra_flows.prefect.crashes import ZOMBIE_AUTOMATION_NAME

    automation = zombie_automation(timedelta(seconds=90))
    trigger = automation.trigger
    assert trigger.after == {"prefect.flow-run.heartbeat"} and trigger.within == timedelta(seconds=90)
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Crashed"} <= trigger.expect
    assert [a.state for a in automation.actions] == [StateType.CRASHED]
    first = ensure_zombie_automation(timedelta(seconds=90))
    assert ensure_zombie_automation(timedelta(seconds=90)) == first
    saved = Automation.read(name=ZOMBIE_AUTOMATION_NAME)
    assert saved.id == first and saved.enabled
    with pytest.raises(ValueError, match="silence"):
        zombie_automation(timedelta(0))
