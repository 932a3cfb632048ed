"""Attempts: one run identity owns compute plans 1, 2, ...; a failed or canceled plan is followed by the next.

A pipeline run (a DAG run's task, a flow run, a pipeline's day) is named by a *run key*: the key it
gives, or ``derive_key(*run_identity)``. Its attempt ``n`` is submitted under :func:`attempt_key`
(attempt 1 under the run key itself, so plans submitted before attempts existed are found again),
and records ``substra_flows_run`` (the run key) and ``substra_flows_attempt`` (``n``) in its
metadata. :func:`choose_attempt` is the one rule both faces follow: the latest attempt DONE or still
running is reused; FAILED or CANCELED leads to the next attempt, or, with ``on_failed="fail"``, to
an error naming the plan and its failed task.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from substra_flows import exceptions as exc
from substra_flows import models, waiting
from substra_flows.schemas import check_key

from .keys import check_run_identity, derive_key

__all__ = [
    "ATTEMPT_METADATA",
    "MAX_ATTEMPTS",
    "ON_FAILED",
    "RUN_METADATA",
    "Attempt",
    "attempt_key",
    "attempt_of",
    "check_on_failed",
    "choose_attempt",
    "latest_attempt",
    "latest_done_attempt",
    "run_key_of",
]

#: metadata of every plan submitted by the steps: the run key, and the attempt number (as text)
RUN_METADATA = "substra_flows_run"
ATTEMPT_METADATA = "substra_flows_attempt"
#: what to do when the latest attempt FAILED or was CANCELED: submit the next one, or raise
ON_FAILED = ("retry", "fail")
#: a run that failed this many times is not resubmitted (a bound on the attempts probed)
MAX_ATTEMPTS = 50

_DONE = models.ComputePlanStatus.done.value
_FAILED = models.ComputePlanStatus.failed.value
_CANCELED = models.ComputePlanStatus.canceled.value


@dataclass(frozen=True)
class Attempt:
    """One attempt of a run: its number and key, and the plan when it exists already."""

    run_key: str
    number: int
    compute_plan_key: str
    plan: Any = None  # the ComputePlan read from the server; None for an attempt still to submit

    @property
    def status(self) -> str | None:
        """The plan's status wire string, or None when the attempt is not submitted yet."""
        return None if self.plan is None else waiting.status_of(self.plan)


def attempt_key(run_key: str, number: int) -> str:
    """Key of attempt ``number`` of the run: the run key for attempt 1, ``uuid5(run key, "attempt/<n>")`` after."""
    run_key = check_key(run_key, "run_key")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise exc.SpecValidationError.for_field("attempt", number, "must be an integer >= 1")
    if number == 1:
        return run_key
    return str(uuid.uuid5(uuid.UUID(run_key), f"attempt/{number}"))


def run_key_of(run_identity: Sequence[str] | None = None, compute_plan_key: str | None = None) -> str:
    """The run key: ``compute_plan_key`` when given, else ``derive_key(*run_identity)``; no request is sent."""
    if compute_plan_key:
        return check_key(compute_plan_key, "compute_plan_key")
    if run_identity is None:
        raise exc.SpecValidationError.for_field("run_identity", None, "give run_identity or compute_plan_key")
    return derive_key(*check_run_identity(run_identity))


def check_on_failed(on_failed: str) -> str:
    """Validate ``on_failed`` ("retry" or "fail")."""
    if on_failed not in ON_FAILED:
        raise exc.SpecValidationError.for_field("on_failed", on_failed, f"expected one of {', '.join(ON_FAILED)}")
    return on_failed


def attempt_of(plan: Any) -> tuple[str, int] | None:
    """(run key, attempt number) recorded in a plan's metadata, or None for a plan the steps did not submit."""
    metadata = getattr(plan, "metadata", None) or {}
    run_key, number = metadata.get(RUN_METADATA), metadata.get(ATTEMPT_METADATA)
    if not run_key or not str(number or "").isdigit():
        return None
    return str(run_key), int(str(number))


def _read(client: Any, key: str) -> Any | None:
    """The plan of that key, or None when it does not exist."""
    try:
        return client.get_compute_plan(key)
    except exc.NotFound:
        return None


def latest_attempt(client: Any, run_key: str) -> Attempt | None:
    """The run's highest submitted attempt (None when it has none), probing attempt keys 1, 2, ... in order."""
    run_key = check_key(run_key, "run_key")
    latest: Attempt | None = None
    for number in range(1, MAX_ATTEMPTS + 1):
        key = attempt_key(run_key, number)
        plan = _read(client, key)
        if plan is None:
            return latest
        latest = Attempt(run_key, number, key, plan)
    return latest


def latest_done_attempt(client: Any, run_key: str) -> Attempt | None:
    """The run's highest DONE attempt, or None when none is DONE."""
    latest = latest_attempt(client, run_key)
    if latest is None:
        return None
    if latest.status == _DONE:
        return latest
    for number in range(latest.number - 1, 0, -1):  # a DONE attempt is reused, so this is rare
        key = attempt_key(run_key, number)
        plan = _read(client, key)
        if plan is not None and waiting.status_of(plan) == _DONE:
            return Attempt(run_key, number, key, plan)
    return None


def choose_attempt(client: Any, run_key: str, on_failed: str = "retry") -> Attempt:
    """The attempt a submission for this run goes to (the rule of the module docstring).

    Returns the latest attempt when it is DONE or still running (``plan`` set), else the next one
    to submit (``plan`` None). With ``on_failed="fail"``, a FAILED or CANCELED latest attempt raises
    :class:`~substra_flows.exceptions.FutureFailureError` naming the plan, its failed task(s) and
    their log tail.
    """
    check_on_failed(on_failed)
    latest = latest_attempt(client, run_key)
    if latest is None:
        return Attempt(run_key, 1, attempt_key(run_key, 1))
    if latest.status not in (_FAILED, _CANCELED):
        return latest
    if on_failed == "fail":
        raise _ended_attempt_error(client, latest)
    if latest.number >= MAX_ATTEMPTS:
        raise exc.FutureFailureError(
            f"run {run_key} has {MAX_ATTEMPTS} attempts, the last one {latest.compute_plan_key} "
            f"{latest.status}: not submitting another",
            key=latest.compute_plan_key,
            kind=waiting.WaitKind.compute_plan.value,
            status=latest.status,
            asset=latest.plan,
        )
    number = latest.number + 1
    return Attempt(run_key, number, attempt_key(run_key, number))


def _ended_attempt_error(client: Any, attempt: Attempt) -> exc.FutureFailureError:
    """The failure report of an ended attempt (culprit tasks and log tails), saying no attempt follows."""
    from .plans import complete_failure  # plans imports this module

    plan = attempt.plan
    # a plan reading CANCELED with a failed task was stopped by that failure (as the orchestrator records it)
    failed = getattr(plan, "failed_task_key", None) or attempt.status == _FAILED
    outcome = waiting.Outcome.failed if failed else waiting.Outcome.canceled
    culprits = waiting.failed_task_keys(waiting.WaitKind.compute_plan, plan, attempt.compute_plan_key)
    bare = exc.FutureFailureError(
        "",
        key=attempt.compute_plan_key,
        kind=waiting.WaitKind.compute_plan.value,
        status=attempt.status,
        failed_task_keys=culprits,
        logs={},
        asset=plan,
    )
    full = complete_failure(client, bare)
    report = waiting.failure_message(
        waiting.WaitKind.compute_plan,
        attempt.compute_plan_key,
        plan,
        outcome,
        list(full.failed_task_keys),
        full.logs,
        error_types=full.error_types,
    )
    head, _, tail = report.partition("\n")
    message = (
        f"{head} (attempt {attempt.number} of run {attempt.run_key}); on_failed='fail': "
        f"not submitting attempt {attempt.number + 1}" + (f"\n{tail}" if tail else "")
    )
    return exc.FutureFailureError(
        message,
        key=attempt.compute_plan_key,
        kind=waiting.WaitKind.compute_plan.value,
        status=attempt.status,
        failed_task_keys=list(full.failed_task_keys),
        logs=dict(full.logs),
        error_types=dict(full.error_types),
        asset=plan,
    )
