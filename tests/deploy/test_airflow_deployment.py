"""The example DAG in a real Airflow deployment: scheduler, dag-processor, triggerer, api-server.

An operator's day, in order: the scheduled run defers its plan to the triggerer, the triggerer is
restarted (SIGTERM) during the wait and the run still succeeds on the same plan; clearing that
finished run submits nothing; a second run's deferred plan task is marked failed and its plan is
cancelled; clearing it runs attempt 2 to success. Every task log is read for the progress lines
and for the absence of any token or password.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from substra_flows import SubstraClient
from substra_flows.local_node import LocalNode
from tests.deploy.airflow_stack import PLAN_TASK, AirflowDeployment, airflow_deployment
from tests.deploy.checks import ATTEMPT_METADATA, assert_no_secret, assert_progress_lines, plans_for, wait_plan_status
from tests.deploy.gate import TaskGate
from tests.deploy.processes import wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]

#: what Airflow's triggerer logs when its trigger process ignores SIGINT and is escalated to SIGTERM, then
#: SIGKILL (10 s each): before the fix, the Substra trigger's cancellation handler waited for a task-state
#: query nobody answers during shutdown, and every trigger of the process was killed with it
ESCALATION = "Process did not terminate in time; escalating"
#: the triggerer exits before its first escalation (Airflow waits 10 s for the trigger process after SIGINT)
TRIGGERER_EXIT_SECONDS = 10.0
CANCELLED_DS = "2025-03-01"


@pytest.fixture(scope="module")
def airflow(deploy_node: LocalNode, module_tmp: Path) -> Iterator[AirflowDeployment]:
    """The four components, started once for the module and stopped by PID at its end."""
    home = module_tmp / "airflow-home"
    home.mkdir()
    with airflow_deployment(home, deploy_node, module_tmp / "data") as deployment:
        print(f"\nairflow deployment up in {deployment.started_in:.0f} s")  # type: ignore[attr-defined]
        yield deployment


@pytest.fixture(scope="module")
def state() -> dict[str, str]:
    """What one step leaves for the next (the scheduled run's id)."""
    return {}


def test_the_scheduled_run_defers_survives_a_triggerer_restart_and_succeeds(
    airflow: AirflowDeployment, gate: TaskGate, substra: SubstraClient, state: dict[str, str], secrets_of: list[str]
) -> None:
    gate.close()
    try:
        airflow.unpause()
        run = wait_for("the scheduled run", lambda: airflow.dag_runs(), 120, 2, airflow.services)[0]
        run_id = state["scheduled"] = run["dag_run_id"]
        assert run["run_type"] == "scheduled"
        assert airflow.wait_task_state(run_id, {"deferred", "failed", "success"}) == "deferred"
        [plan] = wait_for("the run's plan", lambda: plans_for(substra, run["logical_date"][:10]), 60)
        assert plan.status.value in ("PLAN_STATUS_TODO", "PLAN_STATUS_DOING"), plan.status
        airflow.wait_trigger_running(run_id)
        time.sleep(5)  # a couple of status polls (every 2 s): the trigger is waiting, not starting

        log_start = len(airflow.triggerer.log_text())
        took = airflow.triggerer.terminate(timeout=60)
        assert took is not None, f"the triggerer did not exit within 60 s of SIGTERM\n{airflow.triggerer.tail()}"
        print(f"triggerer exit {took:.1f} s after SIGTERM, with the Substra trigger waiting")
        shutdown = airflow.triggerer.log_text()[log_start:]
        assert ESCALATION not in shutdown, f"the trigger process had to be killed ({took:.1f} s):\n{shutdown[-3000:]}"
        assert took < TRIGGERER_EXIT_SECONDS, f"the triggerer took {took:.1f} s to exit:\n{shutdown[-3000:]}"
        airflow.triggerer.stop()
        time.sleep(3)  # the plan would be cancelled by now if the shutdown had cancelled it
        assert substra.get_compute_plan(plan.key).status.value != "PLAN_STATUS_CANCELED"
        assert airflow.task_instance(run_id)["state"] == "deferred"
    finally:
        gate.open()
        if not airflow.triggerer.running():  # the next steps need a triggerer, whatever failed here
            airflow.triggerer.stop()
            airflow.triggerer.start()
    assert airflow.wait_run_state(run_id, {"success", "failed"}) == "success", airflow.task_instances(run_id)
    assert substra.get_compute_plan(plan.key).status.value == "PLAN_STATUS_DONE"
    assert [p.key for p in plans_for(substra, run["logical_date"][:10])] == [plan.key]

    ti = airflow.task_instance(run_id)
    log = airflow.task_log(run_id, PLAN_TASK, ti["try_number"])
    assert_progress_lines(log, at_least=2)  # the gate held the plan for several polls, then let it run
    assert f"/compute_plan/{plan.key}" in log, "the plan's link is not in the task's log"
    assert_no_secret(secrets_of, log, *airflow.log_files(), *(s.log_path for s in airflow.services))


def test_clearing_a_finished_run_creates_no_plan(
    airflow: AirflowDeployment, substra: SubstraClient, state: dict[str, str]
) -> None:
    run_id = state["scheduled"]
    assert airflow.wait_run_state(run_id, {"success", "failed"}) == "success", airflow.task_instances(run_id)
    before = {p.key: p.status for p in substra.list_compute_plan()}
    tries = airflow.task_instance(run_id)["try_number"]
    cleared = airflow.clear(run_id)
    assert PLAN_TASK in cleared
    wait_for("the cleared plan task to run again", lambda: airflow.task_instance(run_id)["try_number"] > tries, 120)
    assert airflow.wait_run_state(run_id, {"success", "failed"}) == "success", airflow.task_instances(run_id)
    assert {p.key: p.status for p in substra.list_compute_plan()} == before


def test_marking_the_deferred_task_failed_cancels_its_plan(
    airflow: AirflowDeployment, gate: TaskGate, substra: SubstraClient, state: dict[str, str]
) -> None:
    gate.close()
    try:
        run_id = state["cancelled"] = airflow.trigger(CANCELLED_DS, "deploy-mark-failed")
        assert airflow.wait_task_state(run_id, {"deferred", "failed", "success"}) == "deferred"
        [plan] = wait_for("the run's plan", lambda: plans_for(substra, CANCELLED_DS), 60)
        # a user marks a task that is waiting in the triggerer; in the second between the deferral and
        # the triggerer's pick-up no code of ours runs (the README says so)
        airflow.wait_trigger_running(run_id)
        airflow.mark(run_id, PLAN_TASK, "failed")
        wait_plan_status(substra, plan.key, "PLAN_STATUS_CANCELED", timeout=60)
    finally:
        gate.open()
    assert airflow.wait_run_state(run_id, {"success", "failed"}) == "failed"


def test_a_clear_after_the_cancelled_plan_runs_attempt_2_to_success(
    airflow: AirflowDeployment, substra: SubstraClient, state: dict[str, str], secrets_of: list[str]
) -> None:
    run_id = state["cancelled"]
    [cancelled] = plans_for(substra, CANCELLED_DS)
    airflow.clear(run_id, [PLAN_TASK])
    assert airflow.wait_run_state(run_id, {"success", "failed"}) == "success", airflow.task_instances(run_id)
    plans = plans_for(substra, CANCELLED_DS)
    assert len(plans) == 2, [(p.key, p.status, p.metadata) for p in plans]
    retried = next(p for p in plans if p.key != cancelled.key)
    assert substra.get_compute_plan(cancelled.key).status.value == "PLAN_STATUS_CANCELED"
    assert retried.status.value == "PLAN_STATUS_DONE"
    assert retried.metadata.get(ATTEMPT_METADATA) == "2", retried.metadata
    ti = airflow.task_instance(run_id)
    assert_no_secret(secrets_of, airflow.task_log(run_id, PLAN_TASK, ti["try_number"]), *airflow.log_files())
