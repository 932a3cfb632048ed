"""The wait machine bounds each request by what is left of its timeout, and turns a request cut by
that bound into FutureTimeoutError (the I/O side is tests/faults/test_slow_server.py)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from substra_flows import exceptions as exc
from substra_flows.waiting import MIN_OVERRUN, Fetch, Report, Sleep, WaitKind, run_sync, wait_machine


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def doing() -> SimpleNamespace:
    return SimpleNamespace(status="PLAN_STATUS_DOING")


def test_each_fetch_carries_what_is_left_of_the_timeout_plus_one_period():
    clock = Clock()
    machine = wait_machine(WaitKind.compute_plan, "p", timeout=10, polling_period=3, clock=clock)
    first = next(machine)
    assert first == Fetch(WaitKind.compute_plan, "p", budget=13)
    clock.now += 4  # the first status request took 4 s
    assert isinstance(machine.send(doing()), Report)  # the first look is reported
    assert machine.send(None) == Sleep(3)
    clock.now += 3
    assert machine.send(None) == Fetch(WaitKind.compute_plan, "p", budget=6)


def test_no_timeout_means_no_budget():
    machine = wait_machine(WaitKind.task, "t", timeout=None, polling_period=2)
    assert next(machine).budget is None


def test_timeout_zero_still_allows_one_check():
    machine = wait_machine(WaitKind.task, "t", timeout=0, polling_period=0)
    assert next(machine).budget == pytest.approx(MIN_OVERRUN, abs=0.05)


def test_a_request_cut_past_the_deadline_is_a_wait_timeout():
    clock = Clock()
    machine = wait_machine(WaitKind.compute_plan, "p", timeout=2, polling_period=1, clock=clock)
    next(machine)
    clock.now += 3  # the request ran past the deadline before it was cut
    cut = exc.Timeout("GET /compute_plan/p/: the caller's deadline (e.g. a wait's timeout) passed")
    with pytest.raises(exc.FutureTimeoutError, match=r"compute plan p still unknown after 2s \(timeout; the last") as e:
        machine.throw(cut)
    assert e.value.__cause__ is cut and e.value.status == "unknown"


def test_a_timeout_before_the_deadline_is_the_transport_error_itself():
    clock = Clock()
    machine = wait_machine(WaitKind.compute_plan, "p", timeout=60, polling_period=1, clock=clock)
    next(machine)
    with pytest.raises(exc.Timeout):
        machine.throw(exc.Timeout("read timeout"))


def test_the_sync_driver_bounds_each_fetch_with_within():
    clock = Clock()
    bounds: list[float] = []

    @contextlib.contextmanager
    def within(seconds: float):
        bounds.append(seconds)
        yield

    statuses = iter(["PLAN_STATUS_DOING", "PLAN_STATUS_DONE"])
    machine = wait_machine(WaitKind.compute_plan, "p", timeout=10, polling_period=2, clock=clock)
    result = run_sync(
        machine,
        fetch=lambda kind, key: SimpleNamespace(status=next(statuses)),
        fetch_logs=lambda key, lines: None,
        sleep=clock.sleep,
        within=within,
    )
    assert result.status == "PLAN_STATUS_DONE"
    assert bounds == [12, 10]
