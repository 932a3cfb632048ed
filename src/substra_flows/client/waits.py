"""Waiting for tasks, plans and functions (sync and async drivers of waiting.py's state machine)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from substra_flows import exceptions as exc
from substra_flows import models, waiting
from substra_flows.client.functions import FunctionMethods
from substra_flows.client.plans import PlanMethods
from substra_flows.schemas import check_key

logger = logging.getLogger("substra_flows")

LOG_TAIL_LINES = waiting.LOG_TAIL_LINES


class WaitMethods(PlanMethods, FunctionMethods):
    """Waits, their async twins, and the log tail a failure report carries."""

    # -- waiting -----------------------------------------------------------------------------------

    def wait_task(
        self,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 2.0,
        raise_on_failure: bool = True,
        not_found_grace: float = waiting.NOT_FOUND_GRACE,
        on_progress: waiting.ProgressCallback | None = None,
    ) -> models.Task:
        """Block until the task is done, canceled, or failed (with its failure report).

        Also ends when the task can never run (its plan was cancelled or failed while it waited for
        its parents); a 404 is polled again for ``not_found_grace`` seconds (replication lag between
        organizations: pass 0 for a key that must already exist here). ``on_progress`` (every wait
        has it) receives a :class:`~substra_flows.waiting.Progress` at the first look, at each
        change, at the end, and at least every minute.
        """
        return self._wait(
            waiting.WaitKind.task,
            key,
            timeout,
            polling_period,
            raise_on_failure,
            not_found_grace,
            on_progress=on_progress,
        )

    def wait_compute_plan(
        self,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 2.0,
        raise_on_failure: bool = True,
        not_found_grace: float = waiting.NOT_FOUND_GRACE,
        on_progress: waiting.ProgressCallback | None = None,
    ) -> models.ComputePlan:
        """Block until the plan is done, failed or canceled."""
        return self._wait(
            waiting.WaitKind.compute_plan,
            key,
            timeout,
            polling_period,
            raise_on_failure,
            not_found_grace,
            on_progress=on_progress,
        )

    def wait_function(
        self,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 1.0,
        raise_on_failure: bool = True,
        not_found_grace: float = waiting.NOT_FOUND_GRACE,
        on_progress: waiting.ProgressCallback | None = None,
    ) -> models.Function:
        """Block until the function is built (ready), failed or canceled."""
        return self._wait(
            waiting.WaitKind.function,
            key,
            timeout,
            polling_period,
            raise_on_failure,
            not_found_grace,
            on_progress=on_progress,
        )

    async def async_wait_task(
        self,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 2.0,
        raise_on_failure: bool = True,
        not_found_grace: float = waiting.NOT_FOUND_GRACE,
        on_progress: waiting.ProgressCallback | None = None,
    ) -> models.Task:
        """Awaitable :meth:`wait_task` (HTTP in a worker thread, sleeps on the loop)."""
        return await self._async_wait(
            waiting.WaitKind.task,
            key,
            timeout,
            polling_period,
            raise_on_failure,
            not_found_grace,
            on_progress=on_progress,
        )

    async def async_wait_compute_plan(
        self,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 2.0,
        raise_on_failure: bool = True,
        not_found_grace: float = waiting.NOT_FOUND_GRACE,
        on_progress: waiting.ProgressCallback | None = None,
    ) -> models.ComputePlan:
        """Awaitable :meth:`wait_compute_plan`."""
        return await self._async_wait(
            waiting.WaitKind.compute_plan,
            key,
            timeout,
            polling_period,
            raise_on_failure,
            not_found_grace,
            on_progress=on_progress,
        )

    async def async_wait_function(
        self,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 1.0,
        raise_on_failure: bool = True,
        not_found_grace: float = waiting.NOT_FOUND_GRACE,
        on_progress: waiting.ProgressCallback | None = None,
    ) -> models.Function:
        """Awaitable :meth:`wait_function`."""
        return await self._async_wait(
            waiting.WaitKind.function,
            key,
            timeout,
            polling_period,
            raise_on_failure,
            not_found_grace,
            on_progress=on_progress,
        )

    async def async_get_task(self, key: str) -> models.Task:
        """Awaitable :meth:`get_task`."""
        return await asyncio.to_thread(self.get_task, key)

    async def async_get_compute_plan(self, key: str) -> models.ComputePlan:
        """Awaitable :meth:`get_compute_plan`."""
        return await asyncio.to_thread(self.get_compute_plan, key)

    async def async_get_function(self, key: str) -> models.Function:
        """Awaitable :meth:`get_function`."""
        return await asyncio.to_thread(self.get_function, key)

    async def async_cancel_compute_plan(self, key: str) -> None:
        """Awaitable :meth:`cancel_compute_plan`."""
        await asyncio.to_thread(self.cancel_compute_plan, key)

    def _fetch(self, kind: waiting.WaitKind, key: str) -> Any:
        """Getter for a wait target; a 404 comes back as ``NotVisible`` (the machine decides)."""
        getters = {
            waiting.WaitKind.task: self.get_task,
            waiting.WaitKind.compute_plan: self.get_compute_plan,
            waiting.WaitKind.function: self.get_function,
        }
        try:
            return getters[kind](key)
        except exc.NotFound as error:
            return waiting.NotVisible(error)

    def log_tail(self, task_key: str, max_lines: int = LOG_TAIL_LINES) -> str | None:
        """Last lines of a task's logs, or None when unavailable (403, 404, 410 or any error)."""
        try:
            return self._transport.tail_text(self._transport.url("task", task_key, "logs"), max_lines)
        except (exc.AuthorizationError, exc.NotFound) as error:
            logger.debug("no logs for task %s: %s", task_key, error)
        except exc.HTTPError as error:
            if error.status_code != 410:
                logger.warning("could not fetch the logs of task %s: %s", task_key, error)
        except exc.SubstraError as error:
            logger.warning("could not fetch the logs of task %s: %s", task_key, error)
        return None

    def _machine(
        self,
        kind: waiting.WaitKind,
        key: str,
        timeout: float | None,
        polling_period: float,
        raise_on_failure: bool,
        not_found_grace: float,
    ) -> waiting.WaitMachine:
        """The shared wait state machine for ``key``."""
        key = check_key(key, "key")
        return waiting.wait_machine(
            kind,
            key,
            timeout=timeout,
            polling_period=polling_period,
            raise_on_failure=raise_on_failure,
            clock=self._clock,
            not_found_grace=not_found_grace,
        )

    def _wait(
        self,
        kind: waiting.WaitKind,
        key: str,
        timeout: float | None,
        polling_period: float,
        raise_on_failure: bool,
        not_found_grace: float = waiting.NOT_FOUND_GRACE,
        on_progress: waiting.ProgressCallback | None = None,
    ) -> Any:
        """Sync driver of the wait machine."""
        machine = self._machine(kind, key, timeout, polling_period, raise_on_failure, not_found_grace)
        return waiting.run_sync(
            machine, fetch=self._fetch, fetch_logs=self.log_tail, sleep=self._sleep, report=on_progress
        )

    async def _async_wait(
        self,
        kind: waiting.WaitKind,
        key: str,
        timeout: float | None,
        polling_period: float,
        raise_on_failure: bool,
        not_found_grace: float = waiting.NOT_FOUND_GRACE,
        on_progress: waiting.ProgressCallback | None = None,
    ) -> Any:
        """Async driver of the wait machine: HTTP in threads, sleeps on the event loop."""
        machine = self._machine(kind, key, timeout, polling_period, raise_on_failure, not_found_grace)

        async def fetch(k: waiting.WaitKind, asset_key: str) -> Any:
            return await asyncio.to_thread(self._fetch, k, asset_key)

        async def fetch_logs(task_key: str, lines: int) -> str | None:
            return await asyncio.to_thread(self.log_tail, task_key, lines)

        return await waiting.run_async(
            machine, fetch=fetch, fetch_logs=fetch_logs, sleep=self._async_sleep, report=on_progress
        )
