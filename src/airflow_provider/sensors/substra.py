"""Sensors that wait for a Substra compute plan or compute task, in poke, reschedule or deferrable mode.

A poke is one look through the shared wait (a wait with a zero deadline), so the terminal-state
table, the failure report and its log tail are the client's. A failed or canceled target fails
the sensor with the failed task's key and log tail (or skips it with ``soft_fail``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout, AirflowSkipException

from airflow_provider.errors import event_fails_for_good, surfaces_errors
from airflow_provider.hooks.substra import DEFAULT_CONN_ID, SubstraHook
from airflow_provider.links.substra import SubstraComputePlanLink
from airflow_provider.operators.substra import DEFERRAL_GRACE_SECONDS, default_deferrable
from airflow_provider.triggers.substra import (
    CANCELED,
    COMPUTE_PLAN,
    FAILED,
    SUCCESS,
    TASK,
    TIMEOUT,
    SubstraComputePlanTrigger,
    SubstraTaskTrigger,
    check_event,
)
from substra_flows import steps
from substra_flows.exceptions import FutureFailureError, FutureTimeoutError

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger


def _status_text(asset: Any) -> str | None:
    status = getattr(asset, "status", None)
    return None if status is None else str(getattr(status, "value", status))


class _SubstraSensor(BaseSensorOperator):
    """Common part: one look per poke, optional deferral, event checking."""

    kind: str = ""
    ui_color = "#d8f3ea"

    def __init__(
        self,
        *,
        substra_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = default_deferrable(),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.substra_conn_id = substra_conn_id
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> SubstraHook:
        """The hook of ``substra_conn_id``."""
        return SubstraHook(self.substra_conn_id)

    # -- to specialise --------------------------------------------------------------------

    @property
    def target_key(self) -> str:
        """Key of the asset watched."""
        raise NotImplementedError

    def _look(self, client: Any) -> Any:
        """One status request through the shared wait (its progress logged): return the finished asset,
        raise FutureTimeoutError while it runs, FutureFailureError when it failed."""
        raise NotImplementedError

    def _log_progress(self, progress: Any) -> None:
        """Log where the target stands (one line per poke)."""
        self.log.info("%s", progress.describe())

    def _trigger(self, end_time: float) -> BaseTrigger:
        raise NotImplementedError

    def _on_start(self, context: Context) -> None:
        """Called before the first look (the plan sensor publishes its link)."""

    # -- Airflow --------------------------------------------------------------------------

    def _result(self, status: str | None) -> dict[str, Any]:
        return {"kind": self.kind, "key": str(self.target_key), "status": status}

    @surfaces_errors
    def poke(self, context: Context) -> bool | PokeReturnValue:
        """Done: True (with the final status in XCom); still running: False; failed: AirflowFailException."""
        try:
            asset = self._look(self.hook.get_conn())
        except FutureTimeoutError:
            return False  # the look logged where the target stands
        except FutureFailureError as error:
            raise AirflowFailException(str(error)) from None
        return PokeReturnValue(is_done=True, xcom_value=self._result(_status_text(asset)))

    def execute(self, context: Context) -> Any:
        """Poke or reschedule as configured, or look once and then defer to the triggerer."""
        self._on_start(context)
        if not self.deferrable:
            return super().execute(context)
        try:
            done = self.poke(context)
        except AirflowFailException:
            if self.soft_fail or self.never_fail:
                raise AirflowSkipException(f"{self.kind} {self.target_key} failed; skipping (soft_fail)") from None
            raise
        if done:
            return done.xcom_value if isinstance(done, PokeReturnValue) else self._result(None)
        self.defer(
            trigger=self._trigger(time.time() + self.timeout),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=self.timeout + DEFERRAL_GRACE_SECONDS),
        )

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after the trigger fired (``soft_fail`` turns failures into a skip)."""
        try:
            payload = check_event(event, kind=self.kind, key=str(self.target_key))
        except ValueError as error:
            raise AirflowException(str(error)) from None
        status = payload["status"]
        if status == SUCCESS:
            return self._result(payload.get("asset_status"))
        final = event_fails_for_good(payload)
        if final is not None:
            raise final
        message = payload.get("message") or f"{self.kind} {self.target_key}: {status}"
        if status in (FAILED, CANCELED):
            raise AirflowFailException(message)
        if status == TIMEOUT:
            raise AirflowSensorTimeout(message)
        raise AirflowException(f"waiting for {self.kind} {self.target_key} failed: {message}")


class SubstraComputePlanSensor(_SubstraSensor):
    """Wait until a compute plan is done; fail when it fails or is canceled.

    XCom: ``{"kind": "compute_plan", "key", "status"}``.

    :param compute_plan_key: the plan to watch.
    :param substra_conn_id: Airflow connection of a Substra organization that can see the plan.
    :param deferrable: wait in the triggerer (polling every ``poke_interval`` seconds).
    """

    kind = COMPUTE_PLAN
    template_fields: Sequence[str] = ("substra_conn_id", "compute_plan_key")
    operator_extra_links = (SubstraComputePlanLink(),)

    def __init__(self, *, compute_plan_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.compute_plan_key = compute_plan_key

    @property
    def target_key(self) -> str:
        """The plan watched."""
        return str(self.compute_plan_key)

    def _on_start(self, context: Context) -> None:
        SubstraComputePlanLink.persist(
            context, compute_plan_key=self.target_key, url=self.hook.compute_plan_url(self.target_key)
        )

    def _look(self, client: Any) -> Any:
        return steps.wait_compute_plan(
            client, self.target_key, timeout=0, polling_period=0, on_progress=self._log_progress
        )

    def _trigger(self, end_time: float) -> BaseTrigger:
        return SubstraComputePlanTrigger(
            self.target_key, self.substra_conn_id, end_time=end_time, polling_period_seconds=self.poke_interval
        )


class SubstraTaskSensor(_SubstraSensor):
    """Wait until a compute task is done; fail (with its log tail) when it fails or is canceled.

    XCom: ``{"kind": "task", "key", "status"}``.

    :param task_key: the compute task to watch.
    :param substra_conn_id: Airflow connection of a Substra organization that can see the task.
    :param deferrable: wait in the triggerer (polling every ``poke_interval`` seconds).
    """

    kind = TASK
    template_fields: Sequence[str] = ("substra_conn_id", "task_key")

    def __init__(self, *, task_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task_key = task_key

    @property
    def target_key(self) -> str:
        """The task watched."""
        return str(self.task_key)

    def _look(self, client: Any) -> Any:
        return steps.wait_task(client, self.target_key, timeout=0, polling_period=0, on_progress=self._log_progress)

    def _trigger(self, end_time: float) -> BaseTrigger:
        return SubstraTaskTrigger(
            self.target_key, self.substra_conn_id, end_time=end_time, polling_period_seconds=self.poke_interval
        )
