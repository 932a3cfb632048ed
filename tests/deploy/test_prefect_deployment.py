"""The example flow served on a cron schedule by a real Prefect server (``prefect server start``).

An operator's day, in order: the cron schedule creates a run, which completes; a run cancelled
with ``prefect flow-run cancel`` during its wait cancels its plan and ends Cancelled; a rerun of that
day runs attempt 2 to success. Every flow run's logs are read for the progress lines and for the
absence of any token or password.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from substra_flows import SubstraClient
from substra_flows.local_node import LocalNode
from tests.deploy.checks import ATTEMPT_METADATA, assert_no_secret, assert_progress_lines, plans_for, wait_plan_status
from tests.deploy.gate import TaskGate
from tests.deploy.prefect_stack import PrefectDeployment, prefect_deployment
from tests.deploy.processes import wait_for

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]

CANCELLED_DAY = 20000  # days since 1970-01-01: a day no schedule reaches


@pytest.fixture(scope="module")
def prefect(deploy_node: LocalNode, module_tmp: Path) -> Iterator[PrefectDeployment]:
    """The server and the serving process, started once for the module and stopped by PID at its end."""
    with prefect_deployment(module_tmp / "prefect", deploy_node) as deployment:
        print(f"\nprefect deployment up in {deployment.started_in:.0f} s")  # type: ignore[attr-defined]
        yield deployment


@pytest.fixture(scope="module")
def state() -> dict[str, str]:
    """What one step leaves for the next."""
    return {}


def _log_text(prefect: PrefectDeployment, run_id: str) -> str:
    return "\n".join(str(record.get("message", "")) for record in prefect.logs(run_id))


def test_the_cron_schedule_creates_a_run_that_completes(
    prefect: PrefectDeployment, substra: SubstraClient, secrets_of: list[str]
) -> None:
    (home_schedule,) = prefect.deployment()["schedules"]
    assert home_schedule["schedule"]["cron"] == "* * * * *"

    def first_scheduled_run() -> dict | None:
        runs = [r for r in prefect.flow_runs() if r.get("auto_scheduled")]
        return runs[0] if runs else None

    run = wait_for("the scheduler to create a run from the cron schedule", first_scheduled_run, 90, 2, prefect.services)
    prefect.wait_state(run["id"], {"RUNNING", *{"COMPLETED", "FAILED", "CRASHED"}}, timeout=120)
    prefect.pause()  # one scheduled run is enough; later minutes would only repeat the same day
    assert prefect.wait_state(run["id"], {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}) == "COMPLETED"

    day = str(prefect.flow_run(run["id"])["parameters"].get("day") or "")
    plans = [p for p in substra.list_compute_plan() if p.metadata.get("pipeline") == "retraining"]
    assert len(plans) == 1 and plans[0].status.value == "PLAN_STATUS_DONE", plans
    assert not day or plans[0].metadata["day"] == day
    log = _log_text(prefect, run["id"])
    assert_progress_lines(log)
    assert_no_secret(secrets_of, log, prefect.serve.log_path, prefect.server.log_path)


def test_cancelling_a_run_during_its_wait_cancels_its_plan(
    prefect: PrefectDeployment, gate: TaskGate, substra: SubstraClient, state: dict[str, str]
) -> None:
    gate.close()
    try:
        run_id = state["cancelled"] = prefect.run_deployment(day=CANCELLED_DAY, polling_period=2)
        prefect.wait_state(run_id, {"RUNNING"}, timeout=120)
        [plan] = wait_for(
            "the run's plan", lambda: plans_for(substra, str(CANCELLED_DAY), "day"), 180, 2, prefect.services
        )
        prefect.cli("flow-run", "cancel", run_id)
        wait_plan_status(substra, plan.key, "PLAN_STATUS_CANCELED", timeout=90)
    finally:
        gate.open()
    assert prefect.wait_state(run_id, {"CANCELLED", "COMPLETED", "FAILED", "CRASHED"}, timeout=120) == "CANCELLED"
    assert_progress_lines(_log_text(prefect, run_id))  # the wait reported while the plan was held


def test_a_rerun_of_the_cancelled_day_runs_attempt_2(
    prefect: PrefectDeployment, substra: SubstraClient, state: dict[str, str], secrets_of: list[str]
) -> None:
    [cancelled] = plans_for(substra, str(CANCELLED_DAY), "day")
    run_id = prefect.run_deployment(day=CANCELLED_DAY, polling_period=2)
    assert prefect.wait_state(run_id, {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, timeout=300) == "COMPLETED"
    plans = plans_for(substra, str(CANCELLED_DAY), "day")
    assert len(plans) == 2, [(p.key, p.status, p.metadata) for p in plans]
    retried = next(p for p in plans if p.key != cancelled.key)
    assert substra.get_compute_plan(cancelled.key).status.value == "PLAN_STATUS_CANCELED"
    assert retried.status.value == "PLAN_STATUS_DONE"
    assert retried.metadata.get(ATTEMPT_METADATA) == "2", retried.metadata
    log = _log_text(prefect, run_id)
    assert_progress_lines(log)
    assert_no_secret(secrets_of, log, _log_text(prefect, state["cancelled"]), prefect.serve.log_path)
