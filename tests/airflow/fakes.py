"""An in-memory stand-in for ``substra_flows.steps``, for unit tests of the Airflow faces.

Waits go through the real wait machine of ``substra_flows.waiting`` (so deadlines, terminal
states and failure texts are the client's); only the asset fetches are fake: each fetch of a
key returns the next status of its script, then keeps returning the last one.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from substra_flows import steps, waiting
from substra_flows.exceptions import FutureFailureError

PLAN_DONE, PLAN_DOING = "PLAN_STATUS_DONE", "PLAN_STATUS_DOING"
PLAN_FAILED, PLAN_CANCELED = "PLAN_STATUS_FAILED", "PLAN_STATUS_CANCELED"
TASK_DONE, TASK_EXECUTING, TASK_FAILED = "STATUS_DONE", "STATUS_EXECUTING", "STATUS_FAILED"
FINAL_PLAN = {PLAN_DONE, PLAN_FAILED, PLAN_CANCELED}
MODULES = (
    "airflow_provider.operators.substra",
    "airflow_provider.sensors.substra",
    "airflow_provider.triggers.substra",
)


@dataclass
class Registered:
    """Result object of the fake registration steps (same ``to_dict`` contract as the real ones)."""

    values: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.values)


@dataclass
class Submitted:
    compute_plan_key: str
    created: bool
    added_task_keys: list[str] = field(default_factory=list)
    attempt: int = 1
    run_key: str = ""
    status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FakeSubstra:
    """Plans and tasks whose statuses follow scripts; records every step call."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[str]] = {}
        self.failed_task: dict[str, str] = {}
        self.logs: dict[str, str] = {}
        self.plans: dict[str, dict[str, Any]] = {}
        self.attempts: dict[str, list[str]] = {}  # run key -> keys of its attempts, in order
        self.calls: list[tuple[str, Any]] = []
        self.fetches: dict[str, int] = {}
        self.sleep = lambda seconds: None
        self.lock = threading.Lock()

    # -- scripting --------------------------------------------------------------------------

    def script(self, key: str, *statuses: str, failed_task_key: str | None = None, logs: str | None = None) -> None:
        """Statuses returned by successive fetches of ``key`` (the last one repeats)."""
        self.scripts[key] = list(statuses)
        if failed_task_key:
            self.failed_task[key] = failed_task_key
            if logs:
                self.logs[failed_task_key] = logs

    def _fetch(self, kind: waiting.WaitKind, key: str) -> Any:
        with self.lock:
            self.fetches[key] = self.fetches.get(key, 0) + 1
            statuses = self.scripts.get(key) or [PLAN_DOING if kind is waiting.WaitKind.compute_plan else TASK_DONE]
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        if kind is waiting.WaitKind.task:
            error_type = "EXECUTION_ERROR" if status == TASK_FAILED else None
            return SimpleNamespace(key=key, status=status, error_type=error_type)
        return SimpleNamespace(key=key, status=status, failed_task_key=self.failed_task.get(key))

    def _logs(self, task_key: str, lines: int) -> str | None:
        return self.logs.get(task_key)

    def _machine(self, kind: waiting.WaitKind, key: str, timeout: float | None, polling_period: float) -> Any:
        return waiting.wait_machine(kind, key, timeout=timeout, polling_period=polling_period)

    # -- steps API --------------------------------------------------------------------------

    @staticmethod
    def derive_key(*parts: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "fake/" + "/".join(parts)))

    given_compute_plan_key = staticmethod(steps.given_compute_plan_key)  # pure: the real one
    ON_FAILED = steps.ON_FAILED

    def status(self, key: str) -> str:
        """What the next fetch of a plan would answer."""
        with self.lock:
            statuses = self.scripts.get(key) or [PLAN_DOING]
            return statuses[0]

    def register_dataset(self, client: Any, **kwargs: Any) -> Registered:
        self.calls.append(("register_dataset", kwargs))
        keys = [self.derive_key("sample", str(p)) for p in kwargs["sample_paths"]]
        return Registered(
            {
                "dataset_key": self.derive_key("dataset", kwargs["name"]),
                "sample_keys": keys,
                "new_sample_keys": keys,
                "created": True,
            }
        )

    def add_data_samples(self, client: Any, **kwargs: Any) -> list[str]:
        self.calls.append(("add_data_samples", kwargs))
        return [self.derive_key("sample", str(p)) for p in kwargs["sample_paths"]]

    def register_function(self, client: Any, **kwargs: Any) -> Registered:
        self.calls.append(("register_function", kwargs))
        return Registered({"function_key": self.derive_key("function", kwargs["name"]), "created": True})

    def submit_compute_plan(
        self,
        client: Any,
        compute_plan: Mapping[str, Any],
        *,
        run_identity: Sequence[str] | None = None,
        batch_size: int = 500,
        on_failed: str = "retry",
    ) -> Submitted:
        """The attempt rule of the real step, on scripted statuses."""
        self.calls.append(("submit_compute_plan", dict(compute_plan)))
        run_key = compute_plan["key"]
        attempts = self.attempts.setdefault(run_key, [])
        status = self.status(attempts[-1]) if attempts else None
        if status in (PLAN_FAILED, PLAN_CANCELED) and on_failed == "fail":
            raise FutureFailureError(
                f"compute plan {attempts[-1]} failed (attempt {len(attempts)} of run {run_key}); on_failed='fail'",
                key=attempts[-1],
                kind="compute plan",
                status=status,
            )
        created = not attempts or status in (PLAN_FAILED, PLAN_CANCELED)
        if created:
            attempts.append(steps.attempt_key(run_key, len(attempts) + 1))
        key = attempts[-1]
        self.plans.setdefault(key, dict(compute_plan))
        tasks = [t["task_id"] for t in compute_plan.get("tasks", [])] if created else []
        return Submitted(key, created, tasks, len(attempts), run_key, None if created else status)

    def wait_compute_plan(
        self,
        client: Any,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 5.0,
        on_progress: Any = None,
    ) -> Any:
        self.calls.append(("wait_compute_plan", key))
        return waiting.run_sync(
            self._machine(waiting.WaitKind.compute_plan, key, timeout, polling_period),
            fetch=self._fetch,
            fetch_logs=self._logs,
            sleep=self.sleep,
            report=on_progress,
        )

    def wait_task(
        self,
        client: Any,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 5.0,
        on_progress: Any = None,
    ) -> Any:
        self.calls.append(("wait_task", key))
        return waiting.run_sync(
            self._machine(waiting.WaitKind.task, key, timeout, polling_period),
            fetch=self._fetch,
            fetch_logs=self._logs,
            sleep=self.sleep,
            report=on_progress,
        )

    async def _async_wait(
        self, kind: waiting.WaitKind, key: str, timeout: float | None, polling_period: float, on_progress: Any = None
    ) -> Any:
        async def fetch(k: waiting.WaitKind, asset_key: str) -> Any:
            return self._fetch(k, asset_key)

        async def fetch_logs(task_key: str, lines: int) -> str | None:
            return self._logs(task_key, lines)

        return await waiting.run_async(
            self._machine(kind, key, timeout, polling_period),
            fetch=fetch,
            fetch_logs=fetch_logs,
            sleep=asyncio.sleep,
            report=on_progress,
        )

    async def async_wait_compute_plan(
        self,
        client: Any,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 5.0,
        on_progress: Any = None,
    ) -> Any:
        self.calls.append(("async_wait_compute_plan", key))
        return await self._async_wait(waiting.WaitKind.compute_plan, key, timeout, polling_period, on_progress)

    async def async_wait_task(
        self,
        client: Any,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 5.0,
        on_progress: Any = None,
    ) -> Any:
        self.calls.append(("async_wait_task", key))
        return await self._async_wait(waiting.WaitKind.task, key, timeout, polling_period, on_progress)

    def fetch_performances(self, client: Any, key: str) -> list[dict[str, Any]]:
        self.calls.append(("fetch_performances", key))
        return [{"compute_plan_key": key, "worker": "MyOrg1MSP", "identifier": "performance", "performance": 0.9}]

    def cancel_compute_plan(self, client: Any, key: str) -> bool:
        self.calls.append(("cancel_compute_plan", key))
        with self.lock:
            statuses = self.scripts.get(key) or [PLAN_DOING]
            if statuses[-1] in FINAL_PLAN:
                return False
            self.scripts[key] = [PLAN_CANCELED]
        return True

    def called(self, name: str) -> list[Any]:
        """Arguments of every call of step ``name``."""
        return [args for step, args in self.calls if step == name]


def install(monkeypatch: pytest.MonkeyPatch, fake: FakeSubstra) -> None:
    """Make every face module call ``fake`` instead of ``substra_flows.steps``."""
    import importlib

    for name in MODULES:
        monkeypatch.setattr(importlib.import_module(name), "steps", fake)


class FakeTI:
    """The part of a task instance the operators use: identity and XCom pushes."""

    def __init__(
        self, dag_id: str = "dag", run_id: str = "manual__2025-01-01T00:00:00+00:00", task_id: str = "task"
    ) -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index = dag_id, run_id, task_id, -1
        self.try_number = 1
        self.xcom: dict[str, Any] = {}
        self.first_reschedule_date: Any = None

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value") -> Any:
        return self.xcom.get(key)

    def get_first_reschedule_date(self, context: Any) -> Any:
        return self.first_reschedule_date


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true (tests of threads)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
