"""The wait state machine (pure), its sync and async drivers, and the client's wait_* twins."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

from substra_flows import exceptions as exc
from substra_flows import models
from substra_flows.waiting import (
    TERMINAL_STATES,
    Fetch,
    FetchLogs,
    Outcome,
    Progress,
    Report,
    Sleep,
    WaitKind,
    classify,
    run_async,
    run_sync,
    wait_machine,
)

from ._fakes import plan_body, task_body


def asset(status: str, **extra: object) -> SimpleNamespace:
    return SimpleNamespace(key=extra.pop("key", "k"), status=status, error_type=extra.pop("error_type", None), **extra)


def send(machine, value):
    """``machine.send(value)``, then past any progress report: the next action that is not a Report."""
    action = machine.send(value)
    while isinstance(action, Report):
        action = machine.send(None)
    return action


class FakeClock:
    """Monotonic clock advanced only by the fake sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


# -- terminal-state table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "error_type", "outcome"),
    [
        (WaitKind.compute_plan, "PLAN_STATUS_CREATED", None, Outcome.pending),
        (WaitKind.compute_plan, "PLAN_STATUS_DOING", None, Outcome.pending),
        (WaitKind.compute_plan, "PLAN_STATUS_DONE", None, Outcome.succeeded),
        (WaitKind.compute_plan, "PLAN_STATUS_FAILED", None, Outcome.failed),
        (WaitKind.compute_plan, "PLAN_STATUS_CANCELED", None, Outcome.canceled),
        (WaitKind.task, "STATUS_WAITING_FOR_PARENT_TASKS", None, Outcome.pending),
        (WaitKind.task, "STATUS_EXECUTING", None, Outcome.pending),
        (WaitKind.task, "STATUS_DONE", None, Outcome.succeeded),
        (WaitKind.task, "STATUS_CANCELED", None, Outcome.canceled),
        (WaitKind.task, "STATUS_FAILED", None, Outcome.pending),  # failure report not in yet
        (WaitKind.task, "STATUS_FAILED", "EXECUTION_ERROR", Outcome.failed),
        (WaitKind.function, "FUNCTION_STATUS_WAITING", None, Outcome.pending),
        (WaitKind.function, "FUNCTION_STATUS_BUILDING", None, Outcome.pending),
        (WaitKind.function, "FUNCTION_STATUS_READY", None, Outcome.succeeded),
        (WaitKind.function, "FUNCTION_STATUS_FAILED", None, Outcome.failed),
        (WaitKind.function, "FUNCTION_STATUS_CANCELED", None, Outcome.canceled),
    ],
)
def test_classify(kind, status, error_type, outcome):
    assert classify(kind, asset(status, error_type=error_type)) is outcome


def test_classify_accepts_enums_and_unknown_strings():
    assert classify(WaitKind.compute_plan, asset(models.ComputePlanStatus.done)) is Outcome.succeeded
    assert classify(WaitKind.compute_plan, asset("PLAN_STATUS_SOMETHING_NEW")) is Outcome.pending


def test_terminal_table_uses_wire_strings():
    assert TERMINAL_STATES[WaitKind.compute_plan].succeeded == {"PLAN_STATUS_DONE"}
    assert TERMINAL_STATES[WaitKind.task].needs_error_type == {"STATUS_FAILED"}
    assert TERMINAL_STATES[WaitKind.function].succeeded == {"FUNCTION_STATUS_READY"}


# -- the machine, step by step -------------------------------------------------------------------


def test_machine_polls_then_returns():
    clock = FakeClock()
    machine = wait_machine(WaitKind.task, "k", timeout=None, polling_period=2.0, clock=clock)
    assert next(machine) == Fetch(WaitKind.task, "k")
    assert send(machine, asset("STATUS_EXECUTING")) == Sleep(2.0)
    assert send(machine, None) == Fetch(WaitKind.task, "k")
    done = asset("STATUS_DONE")
    with pytest.raises(StopIteration) as stop:
        send(machine, done)
    assert stop.value.value is done


def test_machine_last_sleep_is_cut_to_the_deadline():
    clock = FakeClock()
    machine = wait_machine(WaitKind.compute_plan, "p", timeout=5.0, polling_period=2.0, clock=clock)
    next(machine)
    sleeps = []
    action = send(machine, asset("PLAN_STATUS_DOING"))
    with pytest.raises(exc.FutureTimeoutError) as info:
        while True:
            assert isinstance(action, Sleep)
            sleeps.append(action.seconds)
            clock.sleep(action.seconds)
            assert isinstance(send(machine, None), Fetch)
            action = send(machine, asset("PLAN_STATUS_DOING"))
    assert sleeps == [2.0, 2.0, 1.0]
    assert info.value.key == "p" and info.value.status == "PLAN_STATUS_DOING" and info.value.timeout == 5.0
    assert "compute plan p still PLAN_STATUS_DOING after 5s" in str(info.value)


def test_machine_asks_for_logs_of_failed_task_of_plan():
    machine = wait_machine(WaitKind.compute_plan, "p", timeout=None, polling_period=0)
    next(machine)
    action = send(machine, asset("PLAN_STATUS_FAILED", key="p", failed_task_key="t1"))
    assert action == Fetch(WaitKind.task, "t1")  # its error type
    action = send(machine, asset("STATUS_FAILED", key="t1", error_type="EXECUTION_ERROR"))
    assert action == FetchLogs(("t1",), 40)
    with pytest.raises(exc.FutureFailureError) as info:
        send(machine, {"t1": "Traceback...\nValueError: bad input"})
    error = info.value
    assert error.failed_task_keys == ["t1"] and error.key == "p" and error.status == "PLAN_STATUS_FAILED"
    assert "failed task: t1 (error type EXECUTION_ERROR)" in str(error) and "ValueError: bad input" in str(error)
    assert error.error_types == {"t1": "EXECUTION_ERROR"}


def test_a_build_error_is_named_even_when_the_failed_task_cannot_be_read():
    """BUILD_ERROR reaches the error (and the faces' classification); an unreadable task only loses it."""
    machine = wait_machine(WaitKind.compute_plan, "p", timeout=None, polling_period=0)
    next(machine)
    send(machine, asset("PLAN_STATUS_FAILED", key="p", failed_task_key="t1"))
    send(machine, asset("STATUS_FAILED", key="t1", error_type="BUILD_ERROR"))
    with pytest.raises(exc.FutureFailureError) as built:
        send(machine, {"t1": "Step 3/5 : RUN pip install missing\nERROR: No matching distribution"})
    assert built.value.error_types == {"t1": "BUILD_ERROR"} and "(error type BUILD_ERROR)" in str(built.value)
    machine = wait_machine(WaitKind.compute_plan, "p", timeout=None, polling_period=0)
    next(machine)
    send(machine, asset("PLAN_STATUS_FAILED", key="p", failed_task_key="t1"))
    action = machine.throw(exc.GatewayUnavailable("503", status_code=503))
    assert action == FetchLogs(("t1",), 40)
    with pytest.raises(exc.FutureFailureError) as unread:
        send(machine, {})
    assert unread.value.error_types == {} and "failed task: t1" in str(unread.value)


def test_machine_canceled_raises_without_logs():
    machine = wait_machine(WaitKind.compute_plan, "p", timeout=None, polling_period=0)
    next(machine)
    with pytest.raises(exc.FutureFailureError, match="was canceled"):
        send(machine, asset("PLAN_STATUS_CANCELED", failed_task_key=None))


def test_machine_no_raise_returns_failed_asset():
    machine = wait_machine(WaitKind.function, "f", timeout=None, polling_period=0, raise_on_failure=False)
    next(machine)
    failed = asset("FUNCTION_STATUS_FAILED")
    with pytest.raises(StopIteration) as stop:
        send(machine, failed)
    assert stop.value.value is failed


def test_machine_rejects_bad_arguments():
    with pytest.raises(ValueError):
        next(wait_machine(WaitKind.task, "k", timeout=None, polling_period=-1))
    with pytest.raises(ValueError):
        next(wait_machine(WaitKind.task, "k", timeout=-1, polling_period=1))


# -- drivers ----------------------------------------------------------------------------------------


def scripted(statuses: list[SimpleNamespace]):
    seq = iter(statuses)
    return lambda kind, key: next(seq)


def test_sync_driver_with_fake_clock():
    clock = FakeClock()
    statuses = [asset("STATUS_WAITING_FOR_EXECUTOR_SLOT"), asset("STATUS_EXECUTING"), asset("STATUS_FAILED")]
    statuses += [asset("STATUS_FAILED", error_type="EXECUTION_ERROR")]
    machine = wait_machine(WaitKind.task, "t", timeout=60, polling_period=3, clock=clock)
    with pytest.raises(exc.FutureFailureError) as info:
        run_sync(machine, fetch=scripted(statuses), fetch_logs=lambda key, n: f"log of {key}", sleep=clock.sleep)
    assert clock.now == 9
    assert "error type EXECUTION_ERROR" in str(info.value) and "log of t" in str(info.value)
    assert info.value.logs == {"t": "log of t"}


async def test_async_driver_matches_sync():
    clock = FakeClock()
    statuses = [asset("PLAN_STATUS_DOING")] * 3 + [asset("PLAN_STATUS_DONE")]

    async def fetch(kind, key):
        return scripted_async.pop(0)

    scripted_async = list(statuses)

    async def sleep(seconds):
        clock.sleep(seconds)

    async def logs(key, n):
        return None

    machine = wait_machine(WaitKind.compute_plan, "p", timeout=None, polling_period=0.5, clock=clock)
    result = await run_async(machine, fetch=fetch, fetch_logs=logs, sleep=sleep)
    assert result.status == "PLAN_STATUS_DONE" and clock.now == 1.5


# -- client wait twins -------------------------------------------------------------------------------


def _advance(server, key, statuses, kind="task"):
    """Make successive GETs of ``key`` return ``statuses`` in order (the last one sticks)."""
    route = {"task": r"/task/([^/]+)/", "plan": r"/compute_plan/([^/]+)/", "function": r"/function/([^/]+)/"}[kind]
    queue = list(statuses)

    def handler(call, match):
        body = queue.pop(0) if len(queue) > 1 else queue[0]
        return 200, body, {}

    server.adapter.route("GET", route, handler)


def test_wait_task_sync(client, server, sleeps):
    key, plan = str(uuid.uuid4()), str(uuid.uuid4())
    _advance(server, key, [task_body(key, plan, "STATUS_EXECUTING"), task_body(key, plan, "STATUS_DONE")])
    task = client.wait_task(key, polling_period=0.25)
    assert task.status is models.ComputeTaskStatus.done
    assert sleeps == [0.25]


def test_wait_compute_plan_failure_carries_log_tail(client, server, adapter):
    key, failed = str(uuid.uuid4()), str(uuid.uuid4())
    body = plan_body(key, status="PLAN_STATUS_FAILED", failed_task_key=failed)
    _advance(server, key, [body], kind="plan")
    long_log = "".join(f"line {i}\n" for i in range(100))
    adapter.route("GET", rf"/task/{failed}/logs/", lambda c, m: (200, long_log, {}))
    with pytest.raises(exc.FutureFailureError) as info:
        client.wait_compute_plan(key, polling_period=0)
    error = info.value
    assert error.failed_task_keys == [failed]
    assert "line 99" in str(error) and "line 60" in str(error) and "line 59\n" not in str(error)
    assert error.logs[failed].count("\n") == 39


@pytest.mark.parametrize("status", [403, 410, 404])
def test_wait_failure_ignores_unavailable_logs(client, server, adapter, status):
    key, plan = str(uuid.uuid4()), str(uuid.uuid4())
    _advance(server, key, [task_body(key, plan, "STATUS_FAILED", error_type="BUILD_ERROR")])
    adapter.route("GET", rf"/task/{key}/logs/", lambda c, m: (status, {"detail": "Asset not available anymore"}, {}))
    with pytest.raises(exc.FutureFailureError) as info:
        client.wait_task(key, polling_period=0)
    assert info.value.logs == {}
    assert f"task {key} failed (status STATUS_FAILED), error type BUILD_ERROR" == str(info.value)


def test_wait_timeout_names_key_and_status(client, server):
    key = str(uuid.uuid4())
    _advance(server, key, [{**_fn(key), "status": "FUNCTION_STATUS_BUILDING"}], kind="function")
    clock = FakeClock()
    client._clock = clock
    client._sleep = clock.sleep
    with pytest.raises(exc.FutureTimeoutError) as info:
        client.wait_function(key, timeout=10, polling_period=3)
    assert info.value.key == key and info.value.status == "FUNCTION_STATUS_BUILDING"
    assert clock.now == 10
    assert isinstance(info.value, exc.FutureError)


def test_wait_rejects_bad_key(client):
    with pytest.raises(exc.KeyFormatError):
        client.wait_task("not-a-key")


async def test_async_wait_does_not_block_the_loop(client, server):
    key, plan = str(uuid.uuid4()), str(uuid.uuid4())
    statuses = [task_body(key, plan, "STATUS_EXECUTING")] * 3 + [task_body(key, plan, "STATUS_DONE")]
    _advance(server, key, statuses)
    client._async_sleep = asyncio.sleep
    loop_thread = threading.get_ident()
    http_threads: set[int] = set()
    original = client.get_task

    def spy(k):
        http_threads.add(threading.get_ident())
        time.sleep(0.01)
        return original(k)

    client.get_task = spy
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    tick_task = asyncio.create_task(ticker())
    task = await client.async_wait_task(key, polling_period=0.01)
    tick_task.cancel()
    assert task.status is models.ComputeTaskStatus.done
    assert loop_thread not in http_threads  # HTTP ran in worker threads
    assert ticks >= 4  # the loop kept running meanwhile


async def test_async_wait_compute_plan_failure(client, server, adapter):
    key, failed = str(uuid.uuid4()), str(uuid.uuid4())
    _advance(server, key, [plan_body(key, status="PLAN_STATUS_FAILED", failed_task_key=failed)], kind="plan")
    adapter.route("GET", rf"/task/{failed}/logs/", lambda c, m: (200, "boom\n", {}))
    with pytest.raises(exc.FutureFailureError, match="boom"):
        await client.async_wait_compute_plan(key, polling_period=0)


async def test_async_wait_function_timeout(client, server):
    key = str(uuid.uuid4())
    _advance(server, key, [{**_fn(key), "status": "FUNCTION_STATUS_WAITING"}], kind="function")
    clock = FakeClock()
    client._clock = clock

    async def fake_sleep(seconds):
        clock.sleep(seconds)

    client._async_sleep = fake_sleep
    with pytest.raises(exc.FutureTimeoutError, match="FUNCTION_STATUS_WAITING"):
        await client.async_wait_function(key, timeout=2, polling_period=1)


async def test_async_getters_and_cancel(client, server, adapter):
    key = str(uuid.uuid4())
    server.plans[key] = plan_body(key)
    assert (await client.async_get_compute_plan(key)).key == key
    adapter.route("POST", rf"/compute_plan/{key}/cancel/", lambda c, m: (200, {}, {}))
    await client.async_cancel_compute_plan(key)
    assert adapter.paths("POST")[-1] == f"/compute_plan/{key}/cancel/"
    t = str(uuid.uuid4())
    server.tasks[t] = task_body(t, key)
    assert (await client.async_get_task(t)).key == t


def _fn(key):
    from ._fakes import function_body

    return function_body(key)


# -- real-deployment behaviours (backend-1.0 audit, top 2, 3 and 8) ------------------------------


def _drive(machine, answers):
    """Feed ``answers`` to the machine's Fetch actions in order; sleeps and logs get None / {}."""
    action = next(machine)
    fed = iter(answers)
    while True:
        if isinstance(action, Fetch):
            action = send(machine, next(fed))
        elif isinstance(action, FetchLogs):
            action = send(machine, {})
        else:
            action = send(machine, None)


def test_a_plan_canceled_behind_a_failure_is_reported_as_failed() -> None:
    machine = wait_machine(WaitKind.compute_plan, "p", timeout=None, polling_period=0)
    plan = asset("PLAN_STATUS_CANCELED", key="p", failed_task_key="t1")
    with pytest.raises(exc.FutureFailureError) as raised:
        _drive(machine, [plan, asset("STATUS_FAILED", key="t1", error_type="EXECUTION_ERROR")])
    assert "failed" in str(raised.value) and raised.value.failed_task_keys == ["t1"]


def test_a_task_waiting_for_parents_in_a_cancelled_plan_ends_the_wait() -> None:
    machine = wait_machine(WaitKind.task, "t", timeout=None, polling_period=0)
    stranded = asset("STATUS_WAITING_FOR_PARENT_TASKS", key="t", compute_plan_key="p")
    with pytest.raises(exc.FutureFailureError, match="will never run"):
        _drive(machine, [stranded, asset("PLAN_STATUS_CANCELED", key="p", failed_task_key=None)])


def test_a_404_is_polled_again_for_the_grace_period_then_raised() -> None:
    from substra_flows.waiting import NotVisible

    clock = FakeClock()
    machine = wait_machine(WaitKind.compute_plan, "p", timeout=None, polling_period=1.0, clock=clock, not_found_grace=3)
    missing = NotVisible(exc.NotFound("404", status_code=404))
    action = next(machine)
    seen = 0
    with pytest.raises(exc.NotFound):
        while True:
            if isinstance(action, Fetch):
                seen += 1
                action = send(machine, missing)
            else:
                clock.sleep(action.seconds)
                action = send(machine, None)
    assert seen == 4  # at 0, 1, 2 and 3 s
    machine = wait_machine(WaitKind.compute_plan, "p", timeout=None, polling_period=1.0, clock=FakeClock())
    next(machine)
    assert isinstance(send(machine, missing), Sleep)
    with pytest.raises(StopIteration) as done:
        send(machine, None)
        send(machine, asset("PLAN_STATUS_DONE", key="p"))
    assert done.value.value.status == "PLAN_STATUS_DONE"


# -- progress -----------------------------------------------------------------------------------------


def plan_at(status: str, done: int, total: int = 10, failed: int = 0) -> SimpleNamespace:
    return asset(status, key="p", task_count=total, done_count=done, failed_count=failed, canceled_count=0)


def reports_of(answers: list[SimpleNamespace], **kwargs: object) -> tuple[list[Progress], float]:
    """Drive a plan wait through ``answers`` (one per look), polling every 10 s on a fake clock."""
    clock = FakeClock()
    reports: list[Progress] = []
    fed = iter(answers)
    machine = wait_machine(WaitKind.compute_plan, "p", polling_period=10, clock=clock, **kwargs)  # type: ignore[arg-type]
    try:
        run_sync(
            machine,
            fetch=lambda kind, key: next(fed),
            fetch_logs=lambda k, n: None,
            sleep=clock.sleep,
            report=reports.append,
        )
    except exc.FutureError:
        pass
    return reports, clock.now


def test_progress_is_reported_at_the_first_look_on_every_change_and_at_the_end():
    doing = "PLAN_STATUS_DOING"
    answers = [plan_at(doing, 0), plan_at(doing, 0), plan_at(doing, 3), plan_at(doing, 3), plan_at(doing, 3)]
    answers += [plan_at(doing, 4, failed=1), plan_at("PLAN_STATUS_DONE", 10)]
    reports, _ = reports_of(answers, timeout=None)
    assert [(r.done, r.failed, r.elapsed, r.final) for r in reports] == [
        (0, 0, 0, False),
        (3, 0, 20, False),
        (4, 1, 50, False),
        (10, 0, 60, True),
    ]
    assert reports[-1].status == "PLAN_STATUS_DONE" and reports[-1].fraction == 1.0
    assert reports[1].describe() == "compute plan p: PLAN_STATUS_DOING, 3/10 tasks done, 0 failed, 20s elapsed"


def test_without_change_progress_is_reported_every_progress_every_seconds():
    reports, _ = reports_of(
        [plan_at("PLAN_STATUS_DOING", 2)] * 13 + [plan_at("PLAN_STATUS_DONE", 10)], timeout=None, progress_every=60
    )
    assert [r.elapsed for r in reports] == [0, 60, 120, 130]  # first look, two heartbeats, the end


def test_a_timeout_ends_with_a_final_report_and_a_failure_too():
    reports, now = reports_of([plan_at("PLAN_STATUS_DOING", 1)] * 5, timeout=25)
    assert now == 25 and [r.elapsed for r in reports] == [0, 25] and reports[-1].final
    reports, _ = reports_of([plan_at("PLAN_STATUS_DOING", 1), plan_at("PLAN_STATUS_FAILED", 1, failed=1)], timeout=None)
    assert reports[-1].final and reports[-1].status == "PLAN_STATUS_FAILED"
    assert "1/10 tasks done, 1 failed" in reports[-1].describe()


def test_progress_of_a_task_has_no_counts():
    clock = FakeClock()
    reports: list[Progress] = []
    statuses = iter([asset("STATUS_EXECUTING"), asset("STATUS_DONE")])
    machine = wait_machine(WaitKind.task, "t", timeout=None, polling_period=75, clock=clock)
    run_sync(
        machine,
        fetch=lambda kind, key: next(statuses),
        fetch_logs=lambda k, n: None,
        sleep=clock.sleep,
        report=reports.append,
    )
    assert [r.describe() for r in reports] == [
        "task t: STATUS_EXECUTING, 0s elapsed",
        "task t: STATUS_DONE, 1m15s elapsed",
    ]
    assert reports[0].fraction is None and reports[0].to_dict()["kind"] == "task"


def test_a_driver_without_a_progress_callback_ignores_the_reports():
    machine = wait_machine(WaitKind.task, "t", timeout=None, polling_period=0)
    done = asset("STATUS_DONE")
    assert run_sync(machine, fetch=lambda kind, key: done, fetch_logs=lambda k, n: None) is done


async def test_the_async_driver_awaits_an_async_progress_callback():
    reports: list[Progress] = []

    async def report(progress: Progress) -> None:
        await asyncio.sleep(0)
        reports.append(progress)

    statuses = iter([plan_at("PLAN_STATUS_DOING", 1), plan_at("PLAN_STATUS_DONE", 10)])

    async def fetch(kind, key):
        return next(statuses)

    async def no_logs(key, n):
        return None

    machine = wait_machine(WaitKind.compute_plan, "p", timeout=None, polling_period=0)
    await run_async(machine, fetch=fetch, fetch_logs=no_logs, sleep=asyncio.sleep, report=report)
    assert [(r.done, r.final) for r in reports] == [(1, False), (10, True)]
    sync_reports: list[Progress] = []
    statuses = iter([plan_at("PLAN_STATUS_DONE", 10)])
    await run_async(
        wait_machine(WaitKind.compute_plan, "p", timeout=None, polling_period=0),
        fetch=fetch,
        fetch_logs=no_logs,
        report=sync_reports.append,
    )
    assert len(sync_reports) == 1


def test_durations_read_well():
    from substra_flows.waiting import format_duration

    assert [format_duration(s) for s in (0, 59.9, 60, 125, 3600, 7325)] == [
        "0s",
        "59s",
        "1m00s",
        "2m05s",
        "1h00m",
        "2h02m",
    ]
