"""Unit-test doubles: the shared steps and the client, as the Prefect face sees them.

``FakeSteps`` replaces the step functions the tasks and flows call; each double records its calls
and plays scripted outcomes (a value, an exception to raise, or a callable) in order, the last one
repeating. ``FakeClient`` stands for ``SubstraClient`` in the read tasks.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from substra_flows import models, steps
from substra_flows.waiting import Progress, WaitKind, progress_of

OWNER = "MyOrg1MSP"
DATASET_KEY = "0c5d7bd0-0000-4000-8000-000000000001"
FUNCTION_KEY = "0c5d7bd0-0000-4000-8000-000000000002"
TASK_KEY = "0c5d7bd0-0000-4000-8000-000000000003"
MODEL_KEY = "0c5d7bd0-0000-4000-8000-000000000004"


def plan(key: str, status: str = "PLAN_STATUS_DONE", **extra: Any) -> models.ComputePlan:
    """A compute plan as the client returns it."""
    return models.ComputePlan.model_validate({"key": key, "owner": OWNER, "status": status, "name": "p", **extra})


def compute_task(key: str = TASK_KEY, status: str = "STATUS_DONE", **extra: Any) -> models.Task:
    """A compute task as the client returns it."""
    return models.Task.model_validate(
        {"key": key, "owner": OWNER, "compute_plan_key": str(uuid.uuid4()), "status": status, "worker": OWNER, **extra}
    )


def performance_rows(key: str) -> list[dict[str, Any]]:
    """Two final scores of a plan, as fetch_performances returns them."""
    return [
        {
            "compute_plan_key": key,
            "worker": worker,
            "task_key": str(uuid.uuid5(uuid.UUID(key), worker)),
            "task_rank": 3,
            "round_idx": 0,
            "identifier": "performance",
            "performance": value,
        }
        for worker, value in (("MyOrg1MSP", 0.9), ("MyOrg2MSP", 0.8))
    ]


class StepDouble:
    """One step replaced: records calls, plays scripted outcomes."""

    def __init__(self, name: str, default: Callable[..., Any]) -> None:
        self.name = name
        self.default = default
        self.outcomes: list[Any] = []
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def script(self, *outcomes: Any) -> None:
        """Outcomes of the next calls: values, exceptions (raised) or callables (called with the arguments)."""
        self.outcomes = list(outcomes)

    def play(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Record the call and produce its outcome."""
        self.calls.append((args, kwargs))
        if not self.outcomes:
            return self.default(*args, **kwargs)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            return outcome(*args, **kwargs)
        return outcome

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.play(args, kwargs)

    @property
    def count(self) -> int:
        return len(self.calls)


class AsyncStepDouble(StepDouble):
    """A double of an awaitable step."""

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        await asyncio.sleep(0)
        result = self.play(args, kwargs)
        if asyncio.iscoroutine(result):
            result = await result
        return result


class FakeSteps:
    """Doubles of every step the Prefect face calls; ``quality_gate`` and ``derive_key`` stay real."""

    def __init__(self) -> None:
        self.created_plans: set[str] = set()
        self.register_dataset = StepDouble("register_dataset", self._register_dataset)
        self.add_data_samples = StepDouble(
            "add_data_samples", lambda client, *, sample_paths, **_: [_sample_key(p) for p in sample_paths]
        )
        self.register_function = StepDouble(
            "register_function", lambda client, **_: steps.RegisteredFunction(FUNCTION_KEY, True)
        )
        self.submit_compute_plan = StepDouble("submit_compute_plan", self._submit)
        self.wait_compute_plan = StepDouble("wait_compute_plan", _reported(WaitKind.compute_plan, plan))
        self.async_wait_compute_plan = AsyncStepDouble(
            "async_wait_compute_plan", _areported(WaitKind.compute_plan, plan)
        )
        self.wait_task = StepDouble("wait_task", _reported(WaitKind.task, compute_task))
        self.async_wait_task = AsyncStepDouble("async_wait_task", _areported(WaitKind.task, compute_task))
        self.fetch_performances = StepDouble("fetch_performances", lambda client, key: performance_rows(key))
        self.cancel_compute_plan = StepDouble("cancel_compute_plan", lambda client, key: True)
        self.cancel_latest_attempt = StepDouble("cancel_latest_attempt", lambda client, key: (key, True))
        self.leaderboard = StepDouble("leaderboard", lambda client, **_: [])

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Put the doubles in place of the real steps for the test."""
        for name, value in vars(self).items():
            if isinstance(value, StepDouble):
                monkeypatch.setattr(steps, name, value)

    def _register_dataset(self, client: Any, *, sample_paths: list[Any], **_: Any) -> steps.RegisteredDataset:
        keys = [_sample_key(p) for p in sample_paths]
        return steps.RegisteredDataset(DATASET_KEY, keys, keys, True)

    def _submit(
        self,
        client: Any,
        spec: Any,
        *,
        run_identity: Any = None,
        compute_plan_key: Any = None,
        batch_size: int = 500,
        on_failed: str = "retry",
    ) -> Any:
        """Attempt 1 of the run, created once then found (tests of later attempts script their own outcome)."""
        key = steps.resolve_compute_plan_key(spec, compute_plan_key, run_identity)
        created = key not in self.created_plans
        self.created_plans.add(key)
        raw = spec.model_dump(exclude_unset=True) if hasattr(spec, "model_dump") else spec
        tasks = [t["task_id"] for t in raw.get("tasks", [])] if created else []
        return steps.SubmittedPlan(
            compute_plan_key=key,
            created=created,
            added_task_keys=tasks,
            run_key=key,
            status=None if created else "PLAN_STATUS_DOING",
        )


def _final(kind: WaitKind, found: Any) -> Progress:
    return progress_of(kind, found.key, found, 0.0, final=True)


def _reported(kind: WaitKind, make: Callable[[str], Any]) -> Callable[..., Any]:
    """A wait that ends at once, handing its one (final) progress report to ``on_progress``."""

    def wait(client: Any, key: str, *, on_progress: Any = None, **_: Any) -> Any:
        found = make(key)
        if on_progress is not None:
            on_progress(_final(kind, found))
        return found

    return wait


def _areported(kind: WaitKind, make: Callable[[str], Any]) -> Callable[..., Any]:
    """:func:`_reported` for awaitable waits (``on_progress`` is then awaitable)."""

    async def wait(client: Any, key: str, *, on_progress: Any = None, **_: Any) -> Any:
        found = make(key)
        if on_progress is not None:
            await on_progress(_final(kind, found))
        return found

    return wait


def _sample_key(path: Any) -> str:
    """A sample key derived from its folder name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, Path(path).name))


class FakeClient:
    """The reads of ``SubstraClient`` the tasks use directly, recording what they were asked."""

    def __init__(self) -> None:
        self.opened: list[dict[str, Any]] = []
        self.closed = 0
        self.logs = "line 1\nline 2\nTraceback: deliberate failure\n"
        self.errors: dict[str, BaseException] = {}

    def _maybe_fail(self, method: str) -> None:
        if method in self.errors:
            raise self.errors[method]

    def close(self) -> None:
        self.closed += 1

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get_compute_plan(self, key: str) -> models.ComputePlan:
        self._maybe_fail("get_compute_plan")
        return plan(key, "PLAN_STATUS_DOING")

    async def async_get_compute_plan(self, key: str) -> models.ComputePlan:
        return self.get_compute_plan(key)

    def get_task(self, key: str) -> models.Task:
        self._maybe_fail("get_task")
        return compute_task(key, "STATUS_EXECUTING")

    async def async_get_task(self, key: str) -> models.Task:
        return self.get_task(key)

    def get_logs(self, task_key: str) -> str:
        self._maybe_fail("get_logs")
        return self.logs

    def download_model(self, key: str, folder: Any) -> Path:
        self._maybe_fail("download_model")
        target = Path(folder) / f"model_{key}"
        target.write_text("{}")
        return target

    def download_model_from_task(self, task_key: str, identifier: str, folder: Any) -> Path:
        self._maybe_fail("download_model_from_task")
        return self.download_model(MODEL_KEY, folder)

    def organization_info(self) -> models.OrganizationInfo:
        self._maybe_fail("organization_info")
        return models.OrganizationInfo(organization_id=OWNER, organization_name=OWNER)
