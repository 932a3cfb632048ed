"""Triggers that wait for a Substra compute plan or task in the triggerer's event loop.

Each trigger awaits the shared client's awaitable wait (HTTP in worker threads, sleeps on the
loop), against an absolute deadline, and fires exactly one event whose payload is plain JSON:

``{"status": "success" | "failed" | "canceled" | "timeout" | "error", "kind": "compute_plan" | "task",
"key": ..., "asset_status": ..., "message": ..., "failed_task_keys": [...], "logs": {task key: tail}}``

Errors never escape ``run()``: they become ``error`` events, so the task (not the triggerer)
reports them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider.hooks.substra import DEFAULT_CONN_ID, SubstraHook
from substra_flows import steps
from substra_flows.exceptions import FutureFailureError, FutureTimeoutError, redact

SUCCESS, FAILED, CANCELED, TIMEOUT, ERROR = "success", "failed", "canceled", "timeout", "error"
EVENT_STATUSES = frozenset({SUCCESS, FAILED, CANCELED, TIMEOUT, ERROR})
COMPUTE_PLAN, TASK = "compute_plan", "task"


def _status_text(asset: Any) -> str | None:
    """An asset's status as its wire string."""
    status = getattr(asset, "status", None)
    if status is None:
        return None
    return str(getattr(status, "value", status))


def _failure_payload(error: FutureFailureError) -> dict[str, Any]:
    """Event fields of a failed or canceled target: culprit task keys and the tail of their logs."""
    status = error.status or ""
    # a failed task behind the error means a failure, even when the plan reads CANCELED (the failure
    # aborted the queued tasks); without one, the target was canceled or will never run after a cancel
    canceled = not error.failed_task_keys and not status.endswith("FAILED")
    return {
        "status": CANCELED if canceled else FAILED,
        "asset_status": error.status,
        "message": str(error),
        "failed_task_keys": list(error.failed_task_keys),
        "logs": {k: redact(v) for k, v in error.logs.items()},
    }


def check_event(event: Any, *, kind: str, key: str) -> dict[str, Any]:
    """Validate an event payload received by ``execute_complete`` and return it.

    Raises ValueError when the payload is not one of this module's events for ``kind`` ``key``
    (a stale or foreign event must not pass for a success).
    """
    if not isinstance(event, Mapping):
        raise ValueError(f"expected a Substra trigger event for {kind} {key}, got {event!r}")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise ValueError(f"Substra trigger event for {kind} {key} has an unknown status {status!r}")
    if event.get("kind") != kind or event.get("key") != key:
        raise ValueError(
            f"Substra trigger event is about {event.get('kind')} {event.get('key')}, expected {kind} {key}"
        )
    return dict(event)


class _SubstraWaitTrigger(BaseTrigger):
    """Common part of the triggers: serialisation, deadline, one event, errors as events."""

    kind: str = ""

    def __init__(
        self,
        key: str,
        substra_conn_id: str = DEFAULT_CONN_ID,
        *,
        end_time: float | None = None,
        polling_period_seconds: float = 10.0,
    ) -> None:
        super().__init__()
        self.key = key
        self.substra_conn_id = substra_conn_id
        self.end_time = end_time  # absolute (epoch seconds): survives a triggerer restart unchanged
        self.polling_period_seconds = polling_period_seconds

    def _kwargs(self) -> dict[str, Any]:
        return {
            "substra_conn_id": self.substra_conn_id,
            "end_time": self.end_time,
            "polling_period_seconds": self.polling_period_seconds,
        }

    def _classpath(self) -> str:
        return f"{type(self).__module__}.{type(self).__qualname__}"

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without deadline."""
        if self.end_time is None:
            return None
        return max(0.0, self.end_time - time.time())

    async def _wait(self, client: Any, timeout: float | None) -> Any:
        raise NotImplementedError

    async def _on_cancel(self, client: Any) -> None:
        """Called when the triggerer cancels the wait (subclasses may clean up)."""

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait for the target, then fire exactly one event."""
        payload: dict[str, Any] = {"kind": self.kind, "key": self.key}
        client = None
        try:
            client = await SubstraHook(self.substra_conn_id).aget_conn(shared=True)
            asset = await self._wait(client, self.remaining())
            payload.update(
                status=SUCCESS,
                asset_status=_status_text(asset),
                message=f"{self.kind.replace('_', ' ')} {self.key} is {_status_text(asset)}",
            )
        except FutureFailureError as error:
            payload.update(_failure_payload(error))
        except FutureTimeoutError as error:
            payload.update(status=TIMEOUT, asset_status=error.status, message=str(error))
        except asyncio.CancelledError:
            if client is not None:
                await self._on_cancel(client)
            raise
        except Exception as error:  # anything else reaches the task as an error event
            payload.update(status=ERROR, message=redact(f"{type(error).__name__}: {error}"))
        self.log.info("Substra %s %s: %s", self.kind, self.key, payload["status"])
        yield TriggerEvent(payload)


class SubstraComputePlanTrigger(_SubstraWaitTrigger):
    """Wait until a compute plan is done, failed or canceled, or until ``end_time``.

    :param compute_plan_key: the plan to wait for.
    :param substra_conn_id: the Airflow connection of the organization to ask.
    :param end_time: absolute deadline in epoch seconds (None: none).
    :param polling_period_seconds: seconds between two status requests.
    :param cancel_on_kill: cancel the plan when the task is killed while deferred (the trigger is
        cancelled and the task instance is no longer ``deferred``).
    """

    kind = COMPUTE_PLAN

    def __init__(
        self,
        compute_plan_key: str,
        substra_conn_id: str = DEFAULT_CONN_ID,
        *,
        end_time: float | None = None,
        polling_period_seconds: float = 10.0,
        cancel_on_kill: bool = False,
    ) -> None:
        super().__init__(
            compute_plan_key, substra_conn_id, end_time=end_time, polling_period_seconds=polling_period_seconds
        )
        self.cancel_on_kill = cancel_on_kill

    @property
    def compute_plan_key(self) -> str:
        """The plan waited for."""
        return self.key

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and keyword arguments that rebuild this trigger in a triggerer."""
        return self._classpath(), {
            "compute_plan_key": self.key,
            **self._kwargs(),
            "cancel_on_kill": self.cancel_on_kill,
        }

    async def _wait(self, client: Any, timeout: float | None) -> Any:
        return await steps.async_wait_compute_plan(
            client, self.key, timeout=timeout, polling_period=self.polling_period_seconds
        )

    async def _on_cancel(self, client: Any) -> None:
        """Cancel the plan if the task was killed (not merely moved to another triggerer)."""
        if not self.cancel_on_kill or not await self._task_was_killed():
            return
        try:
            canceled = await asyncio.to_thread(steps.cancel_compute_plan, client, self.key)
            self.log.info("Task killed while deferred: compute plan %s canceled=%s", self.key, canceled)
        except Exception as error:  # never mask the cancellation itself
            self.log.warning("Could not cancel compute plan %s: %s", self.key, redact(str(error)))

    async def _task_was_killed(self) -> bool:
        """True when the deferred task instance left the ``deferred`` state (cleared, marked, timed out)."""
        ti = self.task_instance
        if ti is None:
            return False
        try:
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

            states = await asyncio.to_thread(
                RuntimeTaskInstance.get_task_states,
                dag_id=ti.dag_id,
                task_ids=[ti.task_id],
                run_ids=[ti.run_id],
                map_index=ti.map_index,
            )
        except Exception as error:  # no answer: assume a triggerer restart, keep the plan running
            self.log.warning("Could not read the state of %s: %s", ti.task_id, error)
            return False
        by_task = states.get(ti.run_id, {}) if isinstance(states, Mapping) else {}
        state = by_task.get(ti.task_id, by_task.get(f"{ti.task_id}_{ti.map_index}"))
        return state is not None and str(getattr(state, "value", state)) != "deferred"


class SubstraTaskTrigger(_SubstraWaitTrigger):
    """Wait until one compute task is done, failed or canceled, or until ``end_time``.

    :param task_key: the task to wait for.
    :param substra_conn_id: the Airflow connection of the organization to ask.
    :param end_time: absolute deadline in epoch seconds (None: none).
    :param polling_period_seconds: seconds between two status requests.
    """

    kind = TASK

    def __init__(
        self,
        task_key: str,
        substra_conn_id: str = DEFAULT_CONN_ID,
        *,
        end_time: float | None = None,
        polling_period_seconds: float = 10.0,
    ) -> None:
        super().__init__(task_key, substra_conn_id, end_time=end_time, polling_period_seconds=polling_period_seconds)

    @property
    def task_key(self) -> str:
        """The task waited for."""
        return self.key

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and keyword arguments that rebuild this trigger in a triggerer."""
        return self._classpath(), {"task_key": self.key, **self._kwargs()}

    async def _wait(self, client: Any, timeout: float | None) -> Any:
        return await steps.async_wait_task(
            client, self.key, timeout=timeout, polling_period=self.polling_period_seconds
        )
