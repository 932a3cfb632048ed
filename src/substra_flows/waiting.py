"""Waiting for tasks, compute plans and functions: one state machine, two drivers.

:func:`wait_machine` is a pure generator. It never does I/O: it yields *actions*
(:class:`Fetch` the asset, :class:`Sleep` N seconds, :class:`FetchLogs` of failed tasks,
:class:`Report` progress) and receives their results. :func:`run_sync` performs the actions with
blocking calls; :func:`run_async` performs them without blocking an asyncio loop. Both therefore
share the deadline, the polling period, the terminal-state table, the error messages and the
progress reports: the faces only log or render the :class:`Progress` they are handed.

Each I/O action carries a ``budget``: the seconds it may take so that the wait ends at most one
polling period (at least :data:`MIN_OVERRUN`) after its ``timeout``. A driver given ``within`` (a
context manager factory, e.g. ``Transport.within``) bounds each action by it; an error raised by
an action is thrown into the machine, which turns a timeout past the deadline into
:class:`FutureTimeoutError`.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Union

from substra_flows.exceptions import FutureFailureError, FutureTimeoutError, Timeout
from substra_flows.models import ComputePlanStatus, ComputeTaskStatus, FunctionStatus

LOG_TAIL_LINES = 40
#: seconds between two progress reports when nothing changes (a change is reported at once)
PROGRESS_EVERY = 60.0
#: how long a wait treats 404 as "not replicated yet": on a real deployment each organization serves
#: its own database, fed by orchestrator events, so a key created through another organization
#: shows up a little later
NOT_FOUND_GRACE = 30.0
#: a status request may overrun the wait's timeout by one polling period, and at least this much
#: (so that ``timeout=0, polling_period=0`` still makes its one check)
MIN_OVERRUN = 1.0


class WaitKind(str, enum.Enum):
    """What is being waited for."""

    task = "task"
    compute_plan = "compute plan"
    function = "function"


class Outcome(str, enum.Enum):
    """Classification of one observed status."""

    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


@dataclass(frozen=True)
class TerminalStates:
    """Which statuses end a wait, and how."""

    succeeded: frozenset[str]
    failed: frozenset[str]
    canceled: frozenset[str]
    #: failed statuses that only count once ``error_type`` is set (the failure report is in)
    needs_error_type: frozenset[str] = frozenset()


TERMINAL_STATES: dict[WaitKind, TerminalStates] = {
    WaitKind.compute_plan: TerminalStates(
        succeeded=frozenset({ComputePlanStatus.done.value}),
        failed=frozenset({ComputePlanStatus.failed.value}),
        canceled=frozenset({ComputePlanStatus.canceled.value}),
    ),
    WaitKind.task: TerminalStates(
        succeeded=frozenset({ComputeTaskStatus.done.value}),
        failed=frozenset({ComputeTaskStatus.failed.value}),
        canceled=frozenset({ComputeTaskStatus.canceled.value}),
        needs_error_type=frozenset({ComputeTaskStatus.failed.value}),
    ),
    WaitKind.function: TerminalStates(
        succeeded=frozenset({FunctionStatus.ready.value}),
        failed=frozenset({FunctionStatus.failed.value}),
        canceled=frozenset({FunctionStatus.canceled.value}),
    ),
}


def status_of(asset: Any) -> str:
    """The asset's status as its wire string."""
    status = getattr(asset, "status", None)
    return str(getattr(status, "value", status))


def classify(kind: WaitKind, asset: Any) -> Outcome:
    """Decide whether ``asset`` is still running, or how it ended."""
    table = TERMINAL_STATES[kind]
    status = status_of(asset)
    if status in table.succeeded:
        return Outcome.succeeded
    if status in table.canceled:
        return Outcome.canceled
    if status in table.failed:
        if status in table.needs_error_type and getattr(asset, "error_type", None) is None:
            return Outcome.pending
        return Outcome.failed
    return Outcome.pending


@dataclass(frozen=True)
class NotVisible:
    """What a fetch returns instead of raising on 404 (the asset may not be replicated yet)."""

    error: Exception


def _terminated(plan: Any) -> bool:
    return status_of(plan) in (ComputePlanStatus.canceled.value, ComputePlanStatus.failed.value)


def failed_task_keys(kind: WaitKind, asset: Any, key: str) -> list[str]:
    """Tasks to blame for a failure: the task ``key`` itself, or the plan's ``failed_task_key``."""
    if kind is WaitKind.task:
        return [key]
    if kind is WaitKind.compute_plan and getattr(asset, "failed_task_key", None):
        return [asset.failed_task_key]
    return []


# -- actions -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetch:
    """Get the asset now; send the fresh asset back."""

    kind: WaitKind
    key: str
    #: seconds the fetch may take (None: no bound)
    budget: float | None = None


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds`` before the next action; send None back."""

    seconds: float


@dataclass(frozen=True)
class FetchLogs:
    """Get the log tails of ``task_keys``; send back ``{task_key: text}``."""

    task_keys: tuple[str, ...]
    max_lines: int = LOG_TAIL_LINES
    #: seconds fetching them may take (None: no bound)
    budget: float | None = None


@dataclass(frozen=True)
class Progress:
    """Where a wait stands: the target's status, its tasks (compute plans), and the time waited so far."""

    kind: WaitKind
    key: str
    status: str
    elapsed: float  # seconds since this wait started
    done: int | None = None  # tasks done (compute plans only)
    total: int | None = None  # tasks in the plan
    failed: int | None = None
    canceled: int | None = None
    final: bool = False  # the last report of this wait: the target ended, or the deadline passed

    @property
    def fraction(self) -> float | None:
        """Share of the plan's tasks done (0 to 1), or None without a task count."""
        if not self.total or self.done is None:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    def same_state(self, other: Progress | None) -> bool:
        """True when ``other`` reports the same status and counts (only the time differs)."""
        if other is None:
            return False
        return (self.status, self.done, self.total, self.failed, self.canceled) == (
            other.status,
            other.done,
            other.total,
            other.failed,
            other.canceled,
        )

    def describe(self) -> str:
        """One log line: ``compute plan <key>: PLAN_STATUS_DOING, 3/10 tasks done, 0 failed, 1m05s elapsed``."""
        text = f"{self.kind.value} {self.key}: {self.status}"
        if self.total is not None:
            text += f", {self.done or 0}/{self.total} tasks done, {self.failed or 0} failed"
            if self.canceled:
                text += f", {self.canceled} canceled"
        return f"{text}, {format_duration(self.elapsed)} elapsed"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "kind": self.kind.value,
            "key": self.key,
            "status": self.status,
            "elapsed": round(self.elapsed, 3),
            "done": self.done,
            "total": self.total,
            "failed": self.failed,
            "canceled": self.canceled,
            "final": self.final,
        }


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _count(asset: Any, name: str) -> int | None:
    value = getattr(asset, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def progress_of(kind: WaitKind, key: str, asset: Any, elapsed: float, *, final: bool = False) -> Progress:
    """The progress an observed asset shows (task counts for compute plans)."""
    if kind is WaitKind.compute_plan:
        return Progress(
            kind,
            key,
            status_of(asset),
            elapsed,
            done=_count(asset, "done_count"),
            total=_count(asset, "task_count"),
            failed=_count(asset, "failed_count"),
            canceled=_count(asset, "canceled_count"),
            final=final,
        )
    return Progress(kind, key, status_of(asset), elapsed, final=final)


@dataclass(frozen=True)
class Report:
    """Hand ``progress`` to the caller's progress callback; send None back."""

    progress: Progress


Action = Union[Fetch, Sleep, FetchLogs, Report]
WaitMachine = Generator[Action, Any, Any]


def wait_machine(
    kind: WaitKind,
    key: str,
    *,
    timeout: float | None,
    polling_period: float,
    raise_on_failure: bool = True,
    clock: Callable[[], float] = time.monotonic,
    log_lines: int = LOG_TAIL_LINES,
    not_found_grace: float = NOT_FOUND_GRACE,
    progress_every: float = PROGRESS_EVERY,
) -> WaitMachine:
    """Poll until ``key`` reaches a final state; return the final asset.

    ``timeout=None`` waits without deadline (as the SDK does). Raises FutureTimeoutError when the
    deadline passes, FutureFailureError on failure/cancellation if ``raise_on_failure``.

    As a real deployment behaves: a 404 (the fetch sends back :class:`NotVisible`) is polled again
    for ``not_found_grace`` seconds; a task still waiting for its parents once its plan is cancelled
    or failed ends the wait (it would never run); and a plan, or a task, that reads CANCELED because a
    failure aborted the queued tasks is reported as FAILED, naming the failed task.

    Progress is reported (:class:`Report`) at most once per look, hence once per polling period: at
    the first look, whenever the status or a task count changed, at the end (``final``: the target
    ended or the deadline passed), and otherwise every ``progress_every`` seconds.
    """
    if polling_period < 0:
        raise ValueError(f"polling_period must be >= 0, got {polling_period!r}")
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
    if progress_every < 0:
        raise ValueError(f"progress_every must be >= 0, got {progress_every!r}")
    started = clock()
    deadline = None if timeout is None else started + timeout
    # the latest moment a request may end: the deadline plus one polling period
    hard_deadline = None if deadline is None else deadline + max(polling_period, MIN_OVERRUN)
    asset: Any = None

    def budget() -> float | None:
        return None if hard_deadline is None else max(0.0, hard_deadline - clock())

    def raise_if_past_deadline(error: Timeout) -> None:
        """A request cut by the wait's own bound ends the wait as a timeout."""
        if deadline is None or clock() < deadline:
            return
        seen = status_of(asset) if asset is not None and not isinstance(asset, NotVisible) else "unknown"
        raise FutureTimeoutError(
            f"{kind.value} {key} still {seen} after {timeout:g}s (timeout; the last status request "
            f"did not finish in time: {error})",
            key=key,
            kind=kind.value,
            status=seen,
            timeout=timeout,
            asset=asset,
        ) from error

    reported: Progress | None = None
    reported_at = started
    while True:
        try:
            asset = yield Fetch(kind, key, budget())
        except Timeout as error:
            raise_if_past_deadline(error)
            raise
        if isinstance(asset, NotVisible):
            if clock() - started >= not_found_grace:
                raise asset.error
            yield Sleep(polling_period)
            continue
        outcome = classify(kind, asset)
        plan = None
        if kind is WaitKind.task and getattr(asset, "compute_plan_key", None) and _plan_matters(asset, outcome):
            try:
                fetched = yield Fetch(WaitKind.compute_plan, asset.compute_plan_key, budget())
            except Timeout as error:
                raise_if_past_deadline(error)
                raise
            plan = None if isinstance(fetched, NotVisible) else fetched
            if outcome is Outcome.pending and plan is not None and _terminated(plan):
                # a task waiting for its parents in a cancelled or failed plan is never queued: it stays so for good
                outcome = Outcome.canceled
        if outcome is Outcome.canceled and _failure_behind(kind, asset, plan):
            outcome = Outcome.failed  # a failure aborts queued tasks to CANCELED: report the failure
        now = clock()
        late = outcome is Outcome.pending and deadline is not None and now >= deadline
        progress = progress_of(kind, key, asset, now - started, final=late or outcome is not Outcome.pending)
        if progress.final or not progress.same_state(reported) or now - reported_at >= progress_every:
            yield Report(progress)
            reported, reported_at = progress, now
        if outcome is Outcome.pending:
            if late:
                raise FutureTimeoutError(
                    f"{kind.value} {key} still {status_of(asset)} after {timeout:g}s (timeout)",
                    key=key,
                    kind=kind.value,
                    status=status_of(asset),
                    timeout=timeout,
                    asset=asset,
                )
            delay = polling_period if deadline is None else max(0.0, min(polling_period, deadline - now))
            yield Sleep(delay)
            continue
        if outcome is Outcome.succeeded or not raise_on_failure:
            return asset
        culprits = failed_task_keys(kind, asset, key) if outcome is Outcome.failed else []
        if plan is not None and getattr(plan, "failed_task_key", None) and status_of(asset) != "STATUS_FAILED":
            culprits = [plan.failed_task_key]
        logs: Mapping[str, str] = {}
        error_types: dict[str, str] = {}
        if culprits:
            # error types and logs only sharpen the error: they get at least one polling period, even
            # past the deadline
            log_budget = None if hard_deadline is None else max(hard_deadline - clock(), polling_period)
            for culprit in culprits:
                known = asset if kind is WaitKind.task and culprit == key else None
                if known is None:
                    try:
                        known = yield Fetch(WaitKind.task, culprit, log_budget)
                    except Exception:
                        known = None
                error_type = _error_type_of(known)
                if error_type:
                    error_types[culprit] = error_type
            logs = (yield FetchLogs(tuple(culprits), log_lines, log_budget)) or {}
        raise FutureFailureError(
            failure_message(kind, key, asset, outcome, culprits, logs, plan=plan, error_types=error_types),
            key=key,
            kind=kind.value,
            status=status_of(asset),
            failed_task_keys=culprits,
            logs=logs,
            error_types=error_types,
            asset=asset,
        )


def _error_type_of(task: Any) -> str | None:
    """A fetched task's ``error_type`` as text (None for a task not visible or without one)."""
    error_type = None if task is None or isinstance(task, NotVisible) else getattr(task, "error_type", None)
    return None if error_type is None else str(getattr(error_type, "value", error_type))


def _plan_matters(task: Any, outcome: Outcome) -> bool:
    """Whether the task's plan can change how the wait ends: a task canceled (maybe by a failure) or
    one waiting for parents (never queued once the plan is terminated)."""
    return outcome is Outcome.canceled or (
        outcome is Outcome.pending and status_of(task) == ComputeTaskStatus.waiting_for_parent_tasks.value
    )


def _failure_behind(kind: WaitKind, asset: Any, plan: Any) -> bool:
    """A CANCELED plan (or a task of one) whose ``failed_task_key`` is set: a failure, not a cancel."""
    if kind is WaitKind.compute_plan:
        return bool(getattr(asset, "failed_task_key", None))
    return plan is not None and bool(getattr(plan, "failed_task_key", None))


def failure_message(
    kind: WaitKind,
    key: str,
    asset: Any,
    outcome: Outcome,
    culprits: list[str],
    logs: Mapping[str, str],
    *,
    plan: Any = None,
    error_types: Mapping[str, str] | None = None,
) -> str:
    """Readable failure text: what failed, which task(s) with their error type, and the tail of their logs."""
    verb = "was canceled" if outcome is Outcome.canceled else "failed"
    text = f"{kind.value} {key} {verb} (status {status_of(asset)})"
    if kind is WaitKind.task and plan is not None and status_of(asset) != ComputeTaskStatus.failed.value:
        if TERMINAL_STATES[WaitKind.task].canceled.isdisjoint({status_of(asset)}):
            text = f"task {key} will never run (status {status_of(asset)})"
        else:
            text = f"task {key} was canceled"
        cause = f"task {plan.failed_task_key} failed" if getattr(plan, "failed_task_key", None) else "it was canceled"
        text += f": its compute plan {plan.key} is {status_of(plan)} ({cause})"
    elif kind is WaitKind.compute_plan and outcome is Outcome.failed and status_of(asset) != "PLAN_STATUS_FAILED":
        text += ": a task failed and the tasks queued behind it were canceled"
    error_type = getattr(asset, "error_type", None)
    if error_type is not None:
        text += f", error type {getattr(error_type, 'value', error_type)}"
    types = error_types or {}
    if kind is WaitKind.compute_plan and culprits:
        named = [f"{c} (error type {types[c]})" if c in types else c for c in culprits]
        text += f"; failed task: {', '.join(named)}"
    elif kind is WaitKind.task and error_type is None and culprits and culprits[0] in types:
        text += f"; failed task: {culprits[0]} (error type {types[culprits[0]]})"
    for task_key in culprits:
        tail = logs.get(task_key)
        if tail:
            text += f"\n--- last lines of the logs of task {task_key} ---\n{tail.rstrip()}\n--- end of logs ---"
    return text


# -- drivers -----------------------------------------------------------------------------------


Within = Callable[[Union[float, None]], AbstractContextManager[Any]]


def _bound(within: Within | None, budget: float | None) -> AbstractContextManager[Any]:
    return nullcontext() if within is None or budget is None else within(budget)


ProgressCallback = Callable[[Progress], Any]


def run_sync(
    machine: WaitMachine,
    *,
    fetch: Callable[[WaitKind, str], Any],
    fetch_logs: Callable[[str, int], str | None],
    sleep: Callable[[float], None] = time.sleep,
    within: Within | None = None,
    report: ProgressCallback | None = None,
) -> Any:
    """Drive ``machine`` with blocking calls, handing its progress reports to ``report``; return its
    result. ``within(budget)`` bounds each I/O."""
    try:
        action = next(machine)
        while True:
            if isinstance(action, Sleep):
                sleep(action.seconds)
                action = machine.send(None)
                continue
            if isinstance(action, Report):
                if report is not None:
                    report(action.progress)
                action = machine.send(None)
                continue
            try:
                with _bound(within, action.budget):
                    if isinstance(action, Fetch):
                        result: Any = fetch(action.kind, action.key)
                    else:
                        result = {k: v for k in action.task_keys if (v := fetch_logs(k, action.max_lines))}
            except Exception as error:
                action = machine.throw(error)
                continue
            action = machine.send(result)
    except StopIteration as stop:
        return stop.value


async def run_async(
    machine: WaitMachine,
    *,
    fetch: Callable[[WaitKind, str], Awaitable[Any]],
    fetch_logs: Callable[[str, int], Awaitable[str | None]],
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    within: Within | None = None,
    report: ProgressCallback | None = None,
) -> Any:
    """Drive ``machine`` without blocking the event loop; return its result. ``report`` may be a plain
    or an async callable; ``within(budget)`` bounds each I/O (the bound follows the context into
    ``asyncio.to_thread`` workers)."""
    try:
        action = next(machine)
        while True:
            if isinstance(action, Sleep):
                await sleep(action.seconds)
                action = machine.send(None)
                continue
            if isinstance(action, Report):
                if report is not None and inspect.isawaitable(reported := report(action.progress)):
                    await reported
                action = machine.send(None)
                continue
            try:
                with _bound(within, action.budget):
                    if isinstance(action, Fetch):
                        result: Any = await fetch(action.kind, action.key)
                    else:
                        result = {}
                        for task_key in action.task_keys:
                            text = await fetch_logs(task_key, action.max_lines)
                            if text:
                                result[task_key] = text
            except Exception as error:
                action = machine.throw(error)
                continue
            action = machine.send(result)
    except StopIteration as stop:
        return stop.value
