"""Trigger unit tests (fake steps, real wait machine): serialisation, one event, every outcome as an event."""

from __future__ import annotations

import asyncio
import importlib
import time
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider.triggers.substra import (
    WAIT_TRY_XCOM_KEY,
    SubstraComputePlanTrigger,
    SubstraTaskTrigger,
    check_event,
    kill_verdict,
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

    def __init__(self, try_number: int = 2) -> None:
        self.try_number = try_number


class FakeSupervisor:
    """The triggerer's channel to its supervisor: answers the task state and the waiting-try XCom."""

    def __init__(self, state: str | None, waiting_try: Any = 2, *, hang: bool = False, delay: float = 0.0) -> None:
        self.state, self.waiting_try, self.hang, self.delay = state, waiting_try, hang, delay
        self.asked: list[Any] = []

    async def asend(self, message: Any) -> Any:
        if message.type not in ("GetTaskStates", "GetXCom"):
            return None  # e.g. the hook masking the connection's secret
        self.asked.append(message)
        if self.hang:  # a supervisor that no longer answers (shutting down)
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay)
        if message.type == "GetTaskStates":
            return SimpleNamespace(task_states={message.run_ids[0]: {message.task_ids[0]: self.state}})
        assert message.type == "GetXCom" and message.key == WAIT_TRY_XCOM_KEY
        return SimpleNamespace(value=self.waiting_try)


@pytest.fixture()
def supervisor(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install a FakeSupervisor as the task SDK's supervisor channel."""
    from airflow.sdk.execution_time import task_runner

    def install(*args: Any, **kwargs: Any) -> FakeSupervisor:
        fake = FakeSupervisor(*args, **kwargs)
        monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", fake, raising=False)
        return fake

    return install


def killable_trigger(try_number: int = 2) -> SubstraComputePlanTrigger:
    trigger = plan_trigger(polling_period_seconds=0.01, cancel_on_kill=True)
    trigger.task_instance = FakeTaskInstance(try_number)
    return trigger


@pytest.mark.parametrize(
    ("state", "waiting_try", "cancel"),
    [
        ("failed", 2, True),  # marked failed (itself, or its DAG run)
        ("skipped", 2, True),
        ("upstream_failed", 2, True),
        ("removed", 2, True),
        (None, 2, False),  # cleared: the new try waits for the same plan
        ("scheduled", 2, False),
        ("queued", None, False),
        ("running", None, False),
        ("deferred", 3, False),
        ("up_for_retry", 2, False),
        ("success", 2, False),  # marked success: the plan goes on
        ("failed", 3, False),  # a newer try (after a Clear) failed: not this trigger's business
        ("failed", None, False),  # a newer try started and has not deferred yet
    ],
)
def test_kill_verdict(state: str | None, waiting_try: int | None, cancel: bool) -> None:
    verdict, reason = kill_verdict(state, waiting_try, 2)
    assert verdict is cancel and reason


@pytest.mark.parametrize(
    ("state", "waiting_try", "canceled"),
    [("failed", 2, True), ("failed", "2", True), ("failed", 3, False), (None, 2, False)],
)
async def test_on_kill_cancels_the_plan_only_for_the_stopped_latest_try(
    fake_substra: FakeSubstra, supervisor: Any, state: str | None, waiting_try: Any, canceled: bool
) -> None:
    fake_substra.script(PLAN, PLAN_DOING)
    fake = supervisor(state, waiting_try)
    await killable_trigger().on_kill()
    assert [m.type for m in fake.asked] == ["GetTaskStates", "GetXCom"]
    assert bool(fake_substra.called("cancel_compute_plan")) is canceled


async def test_on_kill_with_no_answer_gives_up_in_bounded_time_and_keeps_the_plan(
    fake_substra: FakeSubstra, supervisor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow_provider.triggers.substra as module

    monkeypatch.setattr(module, "STATE_CHECK_TIMEOUT", 0.2)
    supervisor("failed", hang=True)
    started = time.monotonic()
    await killable_trigger().on_kill()
    assert time.monotonic() - started < 2
    assert not fake_substra.called("cancel_compute_plan")


async def test_on_kill_finishes_its_check_when_the_triggerer_cancels_it_again(
    fake_substra: FakeSubstra, supervisor: Any
) -> None:
    """Airflow 3.3 re-sends the cancellation at each state sync until the trigger ends: a slow answer must
    still lead to the plan being cancelled."""
    fake_substra.script(PLAN, PLAN_DOING)
    fake = supervisor("failed", 2, delay=0.3)
    killing = asyncio.create_task(killable_trigger().on_kill())
    await asyncio.sleep(0.05)
    killing.cancel()  # the next sync's cancellation
    with pytest.raises(asyncio.CancelledError):
        await killing
    assert not fake_substra.called("cancel_compute_plan")  # still waiting for the answer
    await asyncio.sleep(0.6)
    assert fake_substra.called("cancel_compute_plan") == [PLAN]
    assert len(fake.asked) == 2


async def test_on_kill_without_cancel_on_kill_asks_nothing(fake_substra: FakeSubstra, supervisor: Any) -> None:
    fake = supervisor("failed")
    trigger = killable_trigger()
    trigger.cancel_on_kill = False
    await trigger.on_kill()
    assert fake.asked == [] and not fake_substra.called("cancel_compute_plan")


async def cancel_while_waiting(trigger: SubstraComputePlanTrigger) -> float:
    """Cancel the trigger's run() as a triggerer does; return how long the cancellation took."""
    running = asyncio.create_task(events_of(trigger))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    return time.monotonic() - started


async def test_with_trigger_on_kill_a_cancelled_run_asks_nothing_and_keeps_the_plan(
    fake_substra: FakeSubstra, supervisor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow >= 3.3: run() is cancelled alone for a shutdown or a move; it must neither ask nor cancel."""
    import airflow_provider.triggers.substra as module

    monkeypatch.setattr(module, "HAS_TRIGGER_ON_KILL", True)
    fake_substra.script(PLAN, PLAN_DOING)
    fake = supervisor("failed", hang=True)  # a shutdown: the supervisor no longer answers
    assert await cancel_while_waiting(killable_trigger()) < 0.5
    assert fake.asked == [] and not fake_substra.called("cancel_compute_plan")


class StoppingRunner:
    """What Airflow 3.1 and 3.2 install as SIGTERM handler: a bound method of a runner with a stop flag."""

    stop = False

    def _handle_signal(self, signum: int, frame: Any) -> None:
        self.stop = True


@pytest.fixture()
def legacy_airflow(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Behave as Airflow 3.1/3.2: no BaseTrigger.on_kill, a runner's SIGTERM handler."""
    import signal

    import airflow_provider.triggers.substra as module

    monkeypatch.setattr(module, "HAS_TRIGGER_ON_KILL", False)
    runner = StoppingRunner()
    previous = signal.signal(signal.SIGTERM, runner._handle_signal)
    yield runner
    signal.signal(signal.SIGTERM, previous)


async def test_before_3_3_a_triggerer_shutdown_asks_nothing_and_keeps_the_plan(
    fake_substra: FakeSubstra, supervisor: Any, legacy_airflow: StoppingRunner
) -> None:
    import os
    import signal

    fake_substra.script(PLAN, PLAN_DOING)
    fake = supervisor("failed", hang=True)
    os.kill(os.getpid(), signal.SIGTERM)  # the runner's own handler sets its stop flag
    assert legacy_airflow.stop is True
    assert await cancel_while_waiting(killable_trigger()) < 0.5
    assert fake.asked == [] and not fake_substra.called("cancel_compute_plan")


@pytest.mark.parametrize(
    ("state", "waiting_try", "canceled"), [("failed", 2, True), (None, 2, False), ("failed", 3, False)]
)
async def test_before_3_3_a_users_action_is_checked_in_the_cancellation(
    fake_substra: FakeSubstra,
    supervisor: Any,
    legacy_airflow: StoppingRunner,
    state: str | None,
    waiting_try: int,
    canceled: bool,
) -> None:
    fake_substra.script(PLAN, PLAN_DOING)
    fake = supervisor(state, waiting_try)
    await cancel_while_waiting(killable_trigger())
    assert [m.type for m in fake.asked] == ["GetTaskStates", "GetXCom"]
    assert bool(fake_substra.called("cancel_compute_plan")) is canceled


async def test_before_3_3_an_unanswered_check_never_holds_the_cancellation(
    fake_substra: FakeSubstra, supervisor: Any, legacy_airflow: StoppingRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow_provider.triggers.substra as module

    monkeypatch.setattr(module, "STATE_CHECK_TIMEOUT", 0.2)
    fake_substra.script(PLAN, PLAN_DOING)
    supervisor("failed", hang=True)
    assert await cancel_while_waiting(killable_trigger()) < 2
    assert not fake_substra.called("cancel_compute_plan")


def test_this_airflow_calls_on_kill_from_3_3() -> None:
    import airflow

    from airflow_provider.triggers.substra import HAS_TRIGGER_ON_KILL

    major_minor = tuple(int(part) for part in airflow.__version__.split(".")[:2])
    assert HAS_TRIGGER_ON_KILL is (major_minor >= (3, 3))


def test_check_event_refuses_foreign_or_malformed_events() -> None:
    good = {"kind": "compute_plan", "key": PLAN, "status": "success"}
    assert check_event(good, kind="compute_plan", key=PLAN) == good
    for bad in (None, "success", {**good, "status": "great"}, {**good, "key": TASK}, {**good, "kind": "task"}):
        with pytest.raises(ValueError):
            check_event(bad, kind="compute_plan", key=PLAN)


async def test_a_waiting_trigger_logs_its_progress(fake_substra: FakeSubstra, capfd: pytest.CaptureFixture) -> None:
    fake_substra.script(PLAN, PLAN_DOING, PLAN_DOING, PLAN_DONE)
    await events_of(plan_trigger())
    printed = capfd.readouterr()
    lines = [line for line in (printed.out + printed.err).splitlines() if f"compute plan {PLAN}: " in line]
    assert len(lines) == 2 and PLAN_DOING in lines[0] and PLAN_DONE in lines[1]
