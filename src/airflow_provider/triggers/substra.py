"""Triggers that wait for a Substra compute plan or task in the triggerer's event loop.

Each trigger awaits the shared client's awaitable wait (HTTP in worker threads, sleeps on the
loop), against an absolute deadline, and fires exactly one event whose payload is plain JSON:

``{"status": "success" | "failed" | "canceled" | "timeout" | "error", "kind": "compute_plan" | "task",
"key": ..., "asset_status": ..., "message": ..., "failed_task_keys": [...], "logs": {task key: tail},
"error_types": {task key: error type}, "retry_cannot_help": why (only when a retry would fail the same
way: a build error, a refused permission...)}``

Errors never escape ``run()``: they become ``error`` events, so the task (not the triggerer)
reports them.

Cancelling the plan when the task is stopped (``cancel_on_kill``): only a try that a user or the
scheduler stopped (marked failed, skipped or removed, itself or with its DAG run) cancels its plan,
and only while it is still the latest try waiting for that plan (the operator records which try
deferred in the ``substra_wait_try`` XCom, which Airflow clears when a new try starts). A Clear
(the new try waits for the same plan), "mark success", a triggerer restart or SIGTERM, and the
trigger's own timeout leave the plan running. Airflow >= 3.3 tells a user's action apart from a
shutdown by calling :meth:`BaseTrigger.on_kill`; the check runs there. Older versions cancel the
trigger the same way in both cases: the check then runs in ``run()``'s cancellation, skipped at
once when the triggerer is stopping, and always bounded (:data:`STATE_CHECK_TIMEOUT`), so it never
holds a shutdown.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider.errors import RETRY_CANNOT_HELP
from airflow_provider.hooks.substra import DEFAULT_CONN_ID, SubstraHook
from substra_flows import steps
from substra_flows.exceptions import FutureFailureError, FutureTimeoutError, redact, retry_cannot_help

SUCCESS, FAILED, CANCELED, TIMEOUT, ERROR = "success", "failed", "canceled", "timeout", "error"
EVENT_STATUSES = frozenset({SUCCESS, FAILED, CANCELED, TIMEOUT, ERROR})
COMPUTE_PLAN, TASK = "compute_plan", "task"

#: XCom where the plan operator records the try number that deferred (cleared when a new try starts)
WAIT_TRY_XCOM_KEY = "substra_wait_try"
#: task instance states meaning "stopped by a user or the scheduler": the plan is cancelled
STOPPED_STATES = frozenset({"failed", "upstream_failed", "skipped", "removed"})
#: seconds the questions to Airflow (task state, waiting try) may take before the plan is left running;
#: under the triggerer's ``on_kill_timeout`` (30 s by default), since a busy supervisor can take seconds
STATE_CHECK_TIMEOUT = 20.0
#: whether this Airflow calls BaseTrigger.on_kill on a user's action only (3.3 and later)
HAS_TRIGGER_ON_KILL = callable(getattr(BaseTrigger, "on_kill", None))


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
        "error_types": dict(error.error_types),
        **_classified(error),
    }


def _classified(error: BaseException) -> dict[str, str]:
    """The ``retry_cannot_help`` field of an event, present only when a retry would fail the same way."""
    cause = retry_cannot_help(error)
    return {} if cause is None else {RETRY_CANNOT_HELP: cause}


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

    def _log_progress(self, progress: Any) -> None:
        """Log a progress report of the wait in the task's trigger log."""
        self.log.info("%s", progress.describe())

    async def _on_cancel(self) -> None:
        """Called when the triggerer cancels the wait: a shutdown, a move, or (before Airflow 3.3) a user's action."""

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Wait for the target, then fire exactly one event."""
        payload: dict[str, Any] = {"kind": self.kind, "key": self.key}
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
            await self._on_cancel()
            raise
        except Exception as error:  # anything else reaches the task as an error event
            payload.update(status=ERROR, message=redact(f"{type(error).__name__}: {error}"), **_classified(error))
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
            client,
            self.key,
            timeout=timeout,
            polling_period=self.polling_period_seconds,
            on_progress=self._log_progress,
        )

    async def on_kill(self) -> None:
        """Airflow >= 3.3, on a user's action on the deferred task: cancel the plan if that action stopped it."""
        await _shielded(self._cancel_if_stopped())

    async def _on_cancel(self) -> None:
        """Before Airflow 3.3: a shutdown keeps the plan running; else check (bounded) whether the task was stopped."""
        if HAS_TRIGGER_ON_KILL or not self.cancel_on_kill:
            return  # on_kill() decides, and is never called for a shutdown or a move to another triggerer
        if triggerer_is_stopping():
            self.log.info("Triggerer stopping: compute plan %s keeps running for the next triggerer", self.key)
            return
        await _shielded(self._cancel_if_stopped())

    async def _cancel_if_stopped(self) -> None:
        """Cancel the plan when the deferred try was stopped and no newer try waits for it; never raises."""
        if not self.cancel_on_kill:
            return
        try:
            stopped, reason = await self._was_stopped()
        except Exception as error:  # no answer in time: assume a restart, keep the plan running
            stopped, reason = False, f"its state could not be read ({type(error).__name__}: {redact(str(error))})"
        if not stopped:
            self.log.info("Compute plan %s keeps running: %s", self.key, reason)
            return
        try:
            client = await SubstraHook(self.substra_conn_id).aget_conn(shared=True)
            canceled = await asyncio.to_thread(steps.cancel_compute_plan, client, self.key)
            self.log.info("Compute plan %s %s: %s", self.key, "canceled" if canceled else "had already ended", reason)
        except Exception as error:  # never mask the cancellation itself
            self.log.warning("Could not cancel compute plan %s: %s", self.key, redact(str(error)))

    async def _was_stopped(self) -> tuple[bool, str]:
        """Ask Airflow (bounded) the task instance's state and which try deferred last; :func:`kill_verdict` decides."""
        ti = self.task_instance
        if ti is None:
            return False, "no task instance is known to the trigger"
        from airflow.sdk.execution_time.comms import GetTaskStates, GetXCom

        map_index = getattr(ti, "map_index", -1)
        questions = (
            GetTaskStates(dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=map_index),
            GetXCom(
                key=WAIT_TRY_XCOM_KEY,
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                map_index=map_index if map_index is not None and map_index >= 0 else None,
            ),
        )
        states, marker = await asyncio.wait_for(
            asyncio.gather(*(ask_supervisor(q) for q in questions)), timeout=STATE_CHECK_TIMEOUT
        )
        by_task = (getattr(states, "task_states", None) or {}).get(ti.run_id, {})
        state = by_task.get(ti.task_id, by_task.get(f"{ti.task_id}_{map_index}"))
        return kill_verdict(
            None if state is None else str(getattr(state, "value", state)),
            _as_try_number(getattr(marker, "value", None)),
            int(getattr(ti, "try_number", 0) or 0),
        )


#: checks started by on_kill(), kept referenced until they end (the event loop holds tasks weakly)
_KILL_CHECKS: set[asyncio.Task[None]] = set()


async def _shielded(check: Any) -> None:
    """Run the kill check as a task of its own: the triggerer cancels a trigger again at every state sync
    (about every second) until it ends, and that must not cut the check short. A shutdown still cancels it."""
    task = asyncio.ensure_future(check)
    _KILL_CHECKS.add(task)
    task.add_done_callback(_KILL_CHECKS.discard)
    await asyncio.shield(task)


def kill_verdict(state: str | None, waiting_try: int | None, own_try: int) -> tuple[bool, str]:
    """Whether a cancelled trigger should cancel its plan, and why: only when its task instance is in a
    stopped state (:data:`STOPPED_STATES`) and the latest try that deferred on the plan is its own."""
    if state not in STOPPED_STATES:
        return False, f"the task instance is {state or 'cleared'} (try {own_try} was not stopped)"
    if waiting_try is None:
        return False, "a newer try started (the marker of the waiting try is gone)"
    if waiting_try != own_try:
        return False, f"try {waiting_try} waits for it now, not try {own_try}"
    return True, f"try {own_try} was stopped ({state})"


def _as_try_number(value: Any) -> int | None:
    """The try number stored in the marker XCom, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().strip('"').isdigit():
        return int(value.strip().strip('"'))
    return None


async def ask_supervisor(message: Any, timeout: float | None = None) -> Any:
    """Send a request to the triggerer's supervisor on the event loop (no thread that a shutdown would
    wait for), and give up after ``timeout`` seconds (default :data:`STATE_CHECK_TIMEOUT`; TimeoutError)."""
    from airflow.sdk.execution_time import task_runner

    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    asend = getattr(comms, "asend", None)
    if asend is None:
        raise RuntimeError("no channel to the triggerer's supervisor")
    return await asyncio.wait_for(asend(message), timeout=STATE_CHECK_TIMEOUT if timeout is None else timeout)


def triggerer_is_stopping() -> bool:
    """Whether this triggerer process is shutting down (Airflow 3.1 and 3.2 only need this).

    Their trigger runner sets its ``stop`` flag from its SIGTERM/SIGINT handler before cancelling
    the triggers, and 3.2 also ends the reader of its supervisor channel; asking the supervisor then
    would wait for an answer that never comes.
    """
    runner = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if getattr(runner, "stop", False) is True:
        return True
    try:
        from airflow.sdk.execution_time import task_runner

        reader = getattr(getattr(task_runner, "SUPERVISOR_COMMS", None), "_reader_task", None)
    except Exception:
        return False
    return bool(reader is not None and reader.done())


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
            client,
            self.key,
            timeout=timeout,
            polling_period=self.polling_period_seconds,
            on_progress=self._log_progress,
        )
