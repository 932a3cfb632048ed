"""Sensor unit tests (fake steps, real wait machine): poke, reschedule and deferrable modes, soft_fail."""

from __future__ import annotations

import time
from typing import Any

import pytest
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider.links.substra import SubstraComputePlanLink
from airflow_provider.sensors.substra import SubstraComputePlanSensor, SubstraTaskSensor
from airflow_provider.triggers.substra import SubstraComputePlanTrigger, SubstraTaskTrigger
from tests.airflow.fakes import (
    PLAN_CANCELED,
    PLAN_DOING,
    PLAN_DONE,
    PLAN_FAILED,
    TASK_DONE,
    TASK_EXECUTING,
    TASK_FAILED,
    FakeSubstra,
)

PLAN = "3f1d6a57-6a1e-4c43-8f6b-2d9b1c6e5a10"
TASK = "8c2e4b6a-1f3d-4e5c-9a7b-0d1e2f3a4b5c"


def plan_sensor(**kwargs: Any) -> SubstraComputePlanSensor:
    kwargs.setdefault("task_id", "sensor")
    kwargs.setdefault("poke_interval", 0)
    kwargs.setdefault("deferrable", False)
    return SubstraComputePlanSensor(compute_plan_key=PLAN, **kwargs)


def task_sensor(**kwargs: Any) -> SubstraTaskSensor:
    kwargs.setdefault("task_id", "sensor")
    kwargs.setdefault("poke_interval", 0)
    kwargs.setdefault("deferrable", False)
    return SubstraTaskSensor(task_key=TASK, **kwargs)


def test_poke_mode_waits_until_done(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    fake_substra.script(PLAN, PLAN_DOING, PLAN_DOING, PLAN_DONE)
    assert plan_sensor().execute(context) == {"kind": "compute_plan", "key": PLAN, "status": PLAN_DONE}
    assert fake_substra.fetches[PLAN] == 3
    assert context["ti"].xcom["compute_plan_url"].endswith(f"/compute_plans/{PLAN}/tasks")


def test_a_failed_plan_fails_the_sensor_with_the_failed_task_and_logs(
    fake_substra: FakeSubstra, context: dict[str, Any]
) -> None:
    fake_substra.script(PLAN, PLAN_DOING, PLAN_FAILED, failed_task_key=TASK, logs="MemoryError in train")
    with pytest.raises(AirflowFailException) as caught:
        plan_sensor().execute(context)
    assert TASK in str(caught.value) and "MemoryError in train" in str(caught.value)


@pytest.mark.parametrize("status", [PLAN_FAILED, PLAN_CANCELED])
def test_soft_fail_skips_instead(fake_substra: FakeSubstra, context: dict[str, Any], status: str) -> None:
    fake_substra.script(PLAN, status)
    with pytest.raises(AirflowSkipException):
        plan_sensor(soft_fail=True).execute(context)


def test_sensor_timeout_in_poke_mode(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    fake_substra.script(PLAN, PLAN_DOING)
    with pytest.raises(AirflowSensorTimeout):
        plan_sensor(timeout=0).execute(context)
    with pytest.raises(AirflowSkipException):
        plan_sensor(timeout=0, soft_fail=True).execute(context)


def test_reschedule_mode_gives_the_slot_back_while_running(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    fake_substra.script(PLAN, PLAN_DOING, PLAN_DONE)
    sensor = plan_sensor(mode="reschedule", poke_interval=30)
    with pytest.raises(AirflowRescheduleException):
        sensor.execute(context)
    assert sensor.execute(context)["status"] == PLAN_DONE


def test_task_sensor_failure_names_the_task_and_its_log_tail(
    fake_substra: FakeSubstra, context: dict[str, Any]
) -> None:
    fake_substra.script(TASK, TASK_EXECUTING, TASK_DONE)
    assert task_sensor().execute(context) == {"kind": "task", "key": TASK, "status": TASK_DONE}
    fake_substra.script(TASK, TASK_FAILED, failed_task_key=TASK, logs="RuntimeError: deliberate failure")
    with pytest.raises(AirflowFailException) as caught:
        task_sensor().execute(context)
    assert TASK in str(caught.value) and "deliberate failure" in str(caught.value)


@pytest.mark.parametrize(
    ("make", "key", "trigger_class"),
    [(plan_sensor, PLAN, SubstraComputePlanTrigger), (task_sensor, TASK, SubstraTaskTrigger)],
)
def test_deferrable_mode_looks_once_then_defers(
    fake_substra: FakeSubstra, context: dict[str, Any], make: Any, key: str, trigger_class: type
) -> None:
    fake_substra.script(key, PLAN_DOING if key == PLAN else TASK_EXECUTING)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        make(deferrable=True, timeout=300, poke_interval=4).execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, trigger_class)
    assert trigger.key == key
    assert trigger.polling_period_seconds == 4
    assert before + 300 <= trigger.end_time <= time.time() + 300
    assert fake_substra.fetches[key] == 1


def test_deferrable_mode_does_not_defer_for_a_finished_target(
    fake_substra: FakeSubstra, context: dict[str, Any]
) -> None:
    fake_substra.script(PLAN, PLAN_DONE)
    assert plan_sensor(deferrable=True)._result(PLAN_DONE) == plan_sensor(deferrable=True).execute(context)
    fake_substra.script(PLAN, PLAN_FAILED)
    with pytest.raises(AirflowFailException):
        plan_sensor(deferrable=True).execute(context)
    with pytest.raises(AirflowSkipException):
        plan_sensor(deferrable=True, soft_fail=True).execute(context)


def event(status: str, kind: str = "compute_plan", key: str = PLAN) -> dict[str, Any]:
    return {"kind": kind, "key": key, "status": status, "asset_status": "X", "message": f"it is {status}"}


def test_execute_complete(context: dict[str, Any], unit_conn: dict[str, Any]) -> None:
    sensor = plan_sensor(deferrable=True)
    assert sensor.execute_complete(context, event("success")) == {"kind": "compute_plan", "key": PLAN, "status": "X"}
    with pytest.raises(AirflowFailException, match="it is failed"):
        sensor.execute_complete(context, event("failed"))
    with pytest.raises(AirflowSensorTimeout, match="it is timeout"):
        sensor.execute_complete(context, event("timeout"))
    with pytest.raises(AirflowException, match="it is error"):
        sensor.execute_complete(context, event("error"))
    with pytest.raises(AirflowException, match="expected compute_plan"):
        sensor.execute_complete(context, event("success", kind="task"))


@pytest.mark.parametrize("status", ["failed", "canceled", "timeout", "error"])
def test_soft_fail_applies_to_deferred_outcomes(
    context: dict[str, Any], unit_conn: dict[str, Any], status: str
) -> None:
    sensor = plan_sensor(deferrable=True, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        sensor.resume_execution("execute_complete", {"event": event(status)}, context)


def test_the_plan_sensor_offers_the_link() -> None:
    assert any(isinstance(link, SubstraComputePlanLink) for link in SubstraComputePlanSensor.operator_extra_links)
    assert {"compute_plan_key", "substra_conn_id"} <= set(SubstraComputePlanSensor.template_fields)
    assert {"task_key", "substra_conn_id"} <= set(SubstraTaskSensor.template_fields)


def test_link_reads_xcom_only(monkeypatch: pytest.MonkeyPatch, context: dict[str, Any]) -> None:
    from airflow_provider.links import substra as links

    stored: dict[str, Any] = {}
    monkeypatch.setattr(links.XCom, "get_value", staticmethod(lambda *, ti_key, key: stored.get(key)))
    link = SubstraComputePlanLink()
    assert link.name == "See in Substra"
    assert link.get_link(plan_sensor(), ti_key=object()) == ""
    SubstraComputePlanLink.persist(context, compute_plan_key=PLAN, url="https://app/compute_plans/x/tasks")
    stored.update(context["ti"].xcom)
    assert link.get_link(plan_sensor(), ti_key=object()) == "https://app/compute_plans/x/tasks"
    assert context["ti"].xcom[link.xcom_key] == "https://app/compute_plans/x/tasks"


def test_every_poke_logs_where_the_target_stands(
    fake_substra: FakeSubstra, context: dict[str, Any], capfd: pytest.CaptureFixture
) -> None:
    fake_substra.script(TASK, TASK_EXECUTING, TASK_EXECUTING, TASK_DONE)
    task_sensor().execute(context)
    printed = capfd.readouterr()
    lines = [line for line in (printed.out + printed.err).splitlines() if f"task {TASK}: " in line]
    assert [TASK_EXECUTING in lines[0], TASK_EXECUTING in lines[1], TASK_DONE in lines[2]] == [True, True, True]
