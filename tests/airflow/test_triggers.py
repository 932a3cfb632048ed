"""Trigger unit tests (fake steps, real wait machine): serialisation, one event, every outcome as an event."""

from __future__ import annotations

import asyncio
import importlib
import time
from typing import Any

import pytest

from airflow_provider.triggers.substra import (
    SubstraComputePlanTrigger,
    SubstraTaskTrigger,
    check_event,
)
from tests.airflow.conftest import UNIT_TOKEN
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


async def events_of(trigger: Any) -> list[Any]:
    """Every event the trigger fires (it must then stop on its own)."""
    return [event async for event in trigger.run()]


def plan_trigger(**kwargs: Any) -> SubstraComputePlanTrigger:
    kwargs.setdefault("polling_period_seconds", 0)
    return SubstraComputePlanTrigger(PLAN, "substra_default", **kwargs)


@pytest.mark.parametrize(
    "trigger",
    [
        SubstraComputePlanTrigger(PLAN, "conn", end_time=123.5, polling_period_seconds=3, cancel_on_kill=True),
        SubstraTaskTrigger(TASK, "conn", end_time=None, polling_period_seconds=7),
    ],
)
def test_serialize_rebuilds_the_same_trigger_from_its_class_path(trigger: Any) -> None:
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    assert module == "airflow_provider.triggers.substra"
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    import json

    json.dumps(kwargs)  # plain JSON: any triggerer can store it


async def test_a_plan_that_finishes_gives_exactly_one_success_event(fake_substra: FakeSubstra) -> None:
    fake_substra.script(PLAN, PLAN_DOING, PLAN_DOING, PLAN_DONE)
    (event,) = await events_of(plan_trigger(end_time=time.time() + 60))
    assert event.payload == {
        "kind": "compute_plan",
        "key": PLAN,
        "status": "success",
        "asset_status": PLAN_DONE,
        "message": f"compute plan {PLAN} is {PLAN_DONE}",
    }
    assert fake_substra.fetches[PLAN] == 3


async def test_an_already_finished_plan_fires_at_once(fake_substra: FakeSubstra) -> None:
    fake_substra.script(PLAN, PLAN_DONE)
    (event,) = await events_of(plan_trigger())
    assert event.payload["status"] == "success"
    assert fake_substra.fetches[PLAN] == 1


async def test_a_failed_plan_names_the_failed_task_and_its_log_tail(fake_substra: FakeSubstra) -> None:
    fake_substra.script(PLAN, PLAN_DOING, PLAN_FAILED, failed_task_key=TASK, logs="Traceback...\nboom: bad data")
    (event,) = await events_of(plan_trigger())
    payload = event.payload
    assert payload["status"] == "failed"
    assert payload["asset_status"] == PLAN_FAILED
    assert payload["failed_task_keys"] == [TASK]
    assert payload["logs"] == {TASK: "Traceback...\nboom: bad data"}
    assert TASK in payload["message"] and "boom: bad data" in payload["message"]


async def test_a_canceled_plan_is_a_canceled_event(fake_substra: FakeSubstra) -> None:
    fake_substra.script(PLAN, PLAN_CANCELED)
    (event,) = await events_of(plan_trigger())
    assert event.payload["status"] == "canceled"


async def test_a_past_deadline_is_a_timeout_event_after_one_look(fake_substra: FakeSubstra) -> None:
    fake_substra.script(PLAN, PLAN_DOING)
    (event,) = await events_of(plan_trigger(end_time=time.time() - 5))
    assert event.payload["status"] == "timeout"
    assert event.payload["asset_status"] == PLAN_DOING
    assert fake_substra.fetches[PLAN] == 1


async def test_the_deadline_is_absolute(fake_substra: FakeSubstra) -> None:
    fake_substra.script(PLAN, PLAN_DOING)
    trigger = plan_trigger(end_time=time.time() + 0.3, polling_period_seconds=0.05)
    started = time.monotonic()
    (event,) = await events_of(trigger)
    assert event.payload["status"] == "timeout"
    assert 0.2 < time.monotonic() - started < 5
    assert trigger.remaining() == 0.0


async def test_errors_become_error_events_without_secrets(
    fake_substra: FakeSubstra, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"proxy said no to Token {UNIT_TOKEN}")

    monkeypatch.setattr(fake_substra, "async_wait_compute_plan", broken)
    (event,) = await events_of(plan_trigger())
    assert event.payload["status"] == "error"
    assert event.payload["message"].startswith("RuntimeError: proxy said no")
    assert UNIT_TOKEN not in event.payload["message"]


async def test_a_missing_connection_is_an_error_event(fake_substra: FakeSubstra) -> None:
    (event,) = await events_of(SubstraComputePlanTrigger(PLAN, "no_such_connection", polling_period_seconds=0))
    assert event.payload["status"] == "error"
    assert "no_such_connection" in event.payload["message"]


async def test_task_trigger_success_and_failure(fake_substra: FakeSubstra) -> None:
    fake_substra.script(TASK, TASK_EXECUTING, TASK_DONE)
    (event,) = await events_of(SubstraTaskTrigger(TASK, polling_period_seconds=0))
    assert event.payload["kind"] == "task"
    assert event.payload["status"] == "success"
    assert event.payload["asset_status"] == TASK_DONE

    fake_substra.script(TASK, TASK_FAILED, failed_task_key=TASK, logs="ValueError: nan in column x1")
    (event,) = await events_of(SubstraTaskTrigger(TASK, polling_period_seconds=0))
    assert event.payload["status"] == "failed"
    assert event.payload["failed_task_keys"] == [TASK]
    assert "nan in column x1" in event.payload["message"]


async def test_the_event_loop_keeps_running_while_triggers_wait(fake_substra: FakeSubstra) -> None:
    fake_substra.script(PLAN, PLAN_DOING)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    tick = asyncio.create_task(ticker())
    await events_of(plan_trigger(end_time=time.time() + 0.3, polling_period_seconds=0.05))
    tick.cancel()
    assert ticks >= 10


class FakeTaskInstance:
    dag_id, run_id, task_id, map_index = "dag", "run", "add_compute_plan", -1


@pytest.mark.parametrize(("state", "canceled"), [("failed", True), ("deferred", False), (None, False)])
async def test_cancel_on_kill_cancels_only_when_the_task_left_deferred(
    fake_substra: FakeSubstra, monkeypatch: pytest.MonkeyPatch, state: str | None, canceled: bool
) -> None:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    def task_states(**kwargs: Any) -> dict[str, Any]:
        if state is None:
            raise RuntimeError("no supervisor")
        return {kwargs["run_ids"][0]: {kwargs["task_ids"][0]: state}}

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(task_states))
    fake_substra.script(PLAN, PLAN_DOING)
    trigger = plan_trigger(polling_period_seconds=0.01, cancel_on_kill=True)
    trigger.task_instance = FakeTaskInstance()
    running = asyncio.create_task(events_of(trigger))
    await asyncio.sleep(0.1)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert bool(fake_substra.called("cancel_compute_plan")) is canceled


def test_check_event_refuses_foreign_or_malformed_events() -> None:
    good = {"kind": "compute_plan", "key": PLAN, "status": "success"}
    assert check_event(good, kind="compute_plan", key=PLAN) == good
    for bad in (None, "success", {**good, "status": "great"}, {**good, "key": TASK}, {**good, "kind": "task"}):
        with pytest.raises(ValueError):
            check_event(bad, kind="compute_plan", key=PLAN)
