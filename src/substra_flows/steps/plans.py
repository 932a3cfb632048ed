"""Steps for client-keyed assets: compute plans and their tasks, waiting, performances, cancel.

Plan and task keys are chosen here, deterministically from the run identity, so a rerun of the
same pipeline run finds the plan a first attempt created and adds only the tasks it lacks.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic

from substra_flows import exceptions as exc
from substra_flows import models, schemas, waiting
from substra_flows.schemas import build_spec, check_key

from .assets import check_batch_size
from .attempts import (
    ATTEMPT_METADATA,
    RUN_METADATA,
    attempt_key,
    check_on_failed,
    choose_attempt,
    latest_attempt,
    latest_done_attempt,
)
from .keys import as_uuid, check_run_identity, derive_key, derive_task_key

__all__ = [
    "SubmittedPlan",
    "async_wait_compute_plan",
    "async_wait_task",
    "cancel_compute_plan",
    "cancel_latest_attempt",
    "fetch_performances",
    "prepare_compute_plan",
    "submit_compute_plan",
    "wait_compute_plan",
    "wait_task",
]

logger = logging.getLogger("substra_flows.steps")

_LOOKUP_CHUNK = 100  # task keys per GET /task/?key=... (keeps URLs short)
_FINAL_PLAN_STATUSES = frozenset(
    {
        models.ComputePlanStatus.done.value,
        models.ComputePlanStatus.failed.value,
        models.ComputePlanStatus.canceled.value,
    }
)


@dataclass
class SubmittedPlan:
    """Result of :func:`submit_compute_plan`."""

    compute_plan_key: str  # the key of the attempt submitted to (or found)
    created: bool  # the plan was created by this call (False: found, submitted by an earlier call)
    added_task_keys: list[str] = field(default_factory=list)  # tasks this call registered
    existing_task_keys: list[str] = field(default_factory=list)  # tasks found registered already
    attempt: int = 1  # which attempt of the run the plan is (see steps.attempts)
    run_key: str = ""  # the run's key: the given key or derive_key(*run_identity), attempt 1's key
    status: str | None = None  # the plan's status when found (None for a plan created by this call)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Submission
# --------------------------------------------------------------------------------------------


def given_compute_plan_key(compute_plan: Mapping[str, Any] | Any, compute_plan_key: str | None = None) -> str | None:
    """The key the caller chose: ``compute_plan_key``, else the spec's ``key``, else None. The two
    differing is an error (which one was meant?). No request is sent."""
    in_spec = _as_dict(compute_plan).get("key")
    if compute_plan_key and in_spec and str(compute_plan_key) != str(in_spec):
        raise exc.SpecValidationError.for_field(
            "compute_plan_key", compute_plan_key, f"differs from the spec's key {in_spec!r}: give only one"
        )
    if compute_plan_key:
        return str(compute_plan_key)
    # a key written in the spec, even an empty one, is the caller's: a bad one is reported, not replaced
    return None if in_spec is None else str(in_spec)


def resolve_compute_plan_key(
    compute_plan: Mapping[str, Any] | Any,
    compute_plan_key: str | None = None,
    run_identity: Sequence[str] | None = None,
) -> str:
    """The key a plan is submitted under: the one the caller chose (:func:`given_compute_plan_key`),
    else ``derive_key(*run_identity)``; having neither is an error. No request is sent."""
    key = given_compute_plan_key(compute_plan, compute_plan_key)
    if key is not None:
        return key
    if run_identity is None:
        raise exc.SpecValidationError.for_field(
            "key",
            None,
            "the plan has no key: give compute_plan['key'] or run_identity=(dag_id, run_id, ...) so that "
            "a rerun of the same run finds the same plan",
        )
    return derive_key(*check_run_identity(run_identity))


def prepare_compute_plan(
    compute_plan: Mapping[str, Any] | Any,
    run_identity: Sequence[str] | None = None,
    *,
    compute_plan_key: str | None = None,
    attempt: int = 1,
    strict: bool = False,
) -> tuple[schemas.ComputePlanSpec, dict[str, str]]:
    """Validate a plan spec and give it deterministic keys for one attempt of its run; no request is sent.
    Unknown keys are dropped with a warning, or refused with ``strict`` (as the client's setting of that name).

    - Plan key: the run key (:func:`resolve_compute_plan_key`) for attempt 1, else
      :func:`~substra_flows.steps.attempts.attempt_key` of it; the metadata records both
      (``substra_flows_run``, ``substra_flows_attempt``).
    - Task keys: a ``task_id`` that is a UUID is kept for attempt 1 (it must then be stable across
      reruns: derive it, e.g. with :func:`derive_key`) and becomes ``uuid5(plan key, task_id)`` for
      later attempts (a task key belongs to one plan only); any other non-empty ``task_id`` is a task
      *name* and becomes ``uuid5(plan key, task_id)`` (:func:`derive_task_key`). Every
      ``parent_task_key`` naming a task of the plan is rewritten to match.

    Returns the validated spec and the map {task_id as given: task key} of the rewritten ids.
    """
    raw = _as_dict(compute_plan)
    run_key = resolve_compute_plan_key(raw, compute_plan_key, run_identity)
    raw["key"] = attempt_key(run_key, attempt) if as_uuid(run_key) else run_key  # a bad key: the spec reports it
    raw["metadata"] = _attempt_metadata(raw.get("metadata"), run_key, attempt)
    names: dict[str, str] = {}
    plan_key = as_uuid(raw["key"])
    tasks = raw.get("tasks")
    if plan_key is not None and isinstance(tasks, list):
        _derive_task_keys(plan_key, tasks, names, rekey_uuids=attempt > 1)
    try:
        spec = build_spec(schemas.ComputePlanSpec, raw, strict=strict)
    except exc.SpecValidationError as error:
        raise _with_task_names(error, names) from None
    return spec, names


def _attempt_metadata(metadata: Any, run_key: str, attempt: int) -> Any:
    """The spec's metadata plus the run key and attempt number (set by the caller to other values: an error)."""
    if metadata is not None and not isinstance(metadata, Mapping):
        return metadata  # not a mapping: the spec reports it
    merged = dict(metadata or {})
    for name, value in ((RUN_METADATA, str(run_key)), (ATTEMPT_METADATA, str(attempt))):
        given = merged.get(name)
        if given is not None and str(given) != value:
            raise exc.SpecValidationError.for_field(
                f"metadata.{name}", given, f"is set by submit_compute_plan (here {value!r}): leave it out"
            )
        merged[name] = value
    return merged


def _as_dict(compute_plan: Any) -> dict[str, Any]:
    """A deep copy of the spec as a dict (a pydantic spec keeps only the fields that were set, so a
    ComputePlanSpec built without key does not carry its random default key)."""
    if isinstance(compute_plan, pydantic.BaseModel):
        return compute_plan.model_dump(exclude_unset=True)
    if not isinstance(compute_plan, Mapping):
        raise exc.SpecValidationError.for_field("compute_plan", compute_plan, "expected a dict or a ComputePlanSpec")
    return copy.deepcopy(dict(compute_plan))


def _derive_task_keys(plan_key: str, tasks: list[Any], names: dict[str, str], *, rekey_uuids: bool = False) -> None:
    """Rewrite task names (and, with ``rekey_uuids``, UUID task ids) into keys under the plan key, in
    place (malformed entries are left for the spec to report)."""
    for task in tasks:
        if not isinstance(task, dict):
            continue
        task_id = task.get("task_id")
        if isinstance(task_id, str) and task_id.strip() and (rekey_uuids or as_uuid(task_id) is None):
            if task_id in names:
                raise exc.SpecValidationError.for_field("tasks", task_id, f"task_id used by several tasks: {task_id!r}")
            names[task_id] = derive_task_key(plan_key, task_id)
            task["task_id"] = names[task_id]
    for i, task in enumerate(tasks):
        inputs = task.get("inputs") if isinstance(task, dict) else None
        if not isinstance(inputs, list):
            continue
        for j, ref in enumerate(inputs):
            parent = ref.get("parent_task_key") if isinstance(ref, dict) else None
            if not isinstance(parent, str) or not parent:
                continue
            if parent in names:
                ref["parent_task_key"] = names[parent]
            elif as_uuid(parent) is None:
                raise exc.SpecValidationError.for_field(
                    f"tasks.{i}.inputs.{j}.parent_task_key",
                    parent,
                    "is neither a UUID nor the task_id of a task of this plan",
                )


def _with_task_names(error: exc.SpecValidationError, names: Mapping[str, str]) -> exc.SpecValidationError:
    """Show task names next to the keys derived from them, so errors name what the caller wrote."""
    if not names:
        return error
    text = str(error)
    for name, key in names.items():
        text = text.replace(key, f"{key} (task_id {name!r})")
    return type(error)(text, errors=error.errors)


def submit_compute_plan(
    client: Any,
    compute_plan: Mapping[str, Any] | Any,
    *,
    run_identity: Sequence[str] | None = None,
    compute_plan_key: str | None = None,
    batch_size: int = 500,
    on_failed: str = "retry",
) -> SubmittedPlan:
    """Submit the current attempt of a run's plan: reuse it while it runs or once DONE, start the
    next attempt after a FAILED or CANCELED one (``on_failed="retry"``), or raise (``"fail"``).

    The run is named by the given key (``compute_plan_key`` or the spec's) or by ``run_identity``
    (see :mod:`substra_flows.steps.attempts`). Steps: validate the spec (no request before), read
    the run's attempts, create the chosen attempt's plan when it does not exist (a plan that
    appeared meanwhile is found, not an error), list which of the spec's task keys an existing plan
    already holds (``GET /task/?compute_plan_key=..&key=..``), and register only the others with
    ``add_compute_plan_tasks`` in parents-first batches of ``batch_size``. Task names are turned into
    keys as described in :func:`prepare_compute_plan`.
    """
    check_batch_size(batch_size)
    check_on_failed(on_failed)
    strict = bool(getattr(getattr(client, "settings", None), "strict", False))
    spec, _ = prepare_compute_plan(compute_plan, run_identity, compute_plan_key=compute_plan_key, strict=strict)
    run_key = str((spec.metadata or {})[RUN_METADATA])
    attempt = choose_attempt(client, run_key, on_failed)
    if attempt.number > 1:
        spec, _ = prepare_compute_plan(
            compute_plan, run_identity, compute_plan_key=compute_plan_key, attempt=attempt.number, strict=strict
        )
    created = attempt.plan is None and _create_plan(client, spec)
    tasks = list(spec.tasks or [])
    existing = set() if created else _registered_task_keys(client, spec.key, [t.task_id for t in tasks])
    missing = [t for t in tasks if t.task_id not in existing]
    if missing:
        client.add_compute_plan_tasks(spec.key, missing, batch_size=batch_size)
    logger.debug(  # the faces report the outcome once, with the plan's link
        "compute plan %s (attempt %d of run %s) %s: %d task(s) added, %d already registered",
        spec.key,
        attempt.number,
        run_key,
        "created" if created else f"found ({attempt.status or 'just created'})",
        len(missing),
        len(existing),
    )
    return SubmittedPlan(
        compute_plan_key=spec.key,
        created=created,
        added_task_keys=[t.task_id for t in missing],
        existing_task_keys=[t.task_id for t in tasks if t.task_id in existing],
        attempt=attempt.number,
        run_key=run_key,
        status=attempt.status,
    )


def _create_plan(client: Any, spec: schemas.ComputePlanSpec) -> bool:
    """Create the plan without tasks (an existing plan with this key is found); True if created now."""
    if hasattr(client, "submit_compute_plan"):
        return bool(client.submit_compute_plan(spec.to_wire()).created)
    client.add_compute_plan(spec.to_wire())  # SDK-like client: cannot tell created from found
    return False


def _registered_task_keys(client: Any, plan_key: str, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` are tasks of the plan already."""
    found: set[str] = set()
    for start in range(0, len(keys), _LOOKUP_CHUNK):
        chunk = list(keys[start : start + _LOOKUP_CHUNK])
        tasks = client.list_task(filters={"compute_plan_key": [plan_key], "key": chunk})
        found.update(t.key for t in tasks if t.key in chunk)
    return found


# --------------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------------


def _progress_kwargs(on_progress: waiting.ProgressCallback | None) -> dict[str, Any]:
    """The client's ``on_progress`` argument, sent only when given (SDK-like clients do not take it)."""
    return {} if on_progress is None else {"on_progress": on_progress}


def wait_compute_plan(
    client: Any,
    compute_plan_key: str,
    *,
    timeout: float | None = None,
    polling_period: float = 5.0,
    on_progress: waiting.ProgressCallback | None = None,
) -> Any:
    """Wait until the plan is DONE; raise ``FutureFailureError`` naming failed tasks with their log tail,
    ``FutureTimeoutError`` past the deadline. ``on_progress`` receives the wait's
    :class:`~substra_flows.waiting.Progress` reports (status, tasks done / total, failed, elapsed)."""
    try:
        return client.wait_compute_plan(
            compute_plan_key, timeout=timeout, polling_period=polling_period, **_progress_kwargs(on_progress)
        )
    except exc.FutureFailureError as error:
        completed = complete_failure(client, error)
        if completed is error:
            raise
        raise completed from error


async def async_wait_compute_plan(
    client: Any,
    compute_plan_key: str,
    *,
    timeout: float | None = None,
    polling_period: float = 5.0,
    on_progress: waiting.ProgressCallback | None = None,
) -> Any:
    """Awaitable twin of :func:`wait_compute_plan`, never blocking the event loop (``on_progress`` may be async)."""
    try:
        return await client.async_wait_compute_plan(
            compute_plan_key, timeout=timeout, polling_period=polling_period, **_progress_kwargs(on_progress)
        )
    except exc.FutureFailureError as error:
        completed = await asyncio.to_thread(complete_failure, client, error)
        if completed is error:
            raise
        raise completed from error


def wait_task(
    client: Any,
    task_key: str,
    *,
    timeout: float | None = None,
    polling_period: float = 5.0,
    on_progress: waiting.ProgressCallback | None = None,
) -> Any:
    """Wait until the task is DONE (errors and progress as :func:`wait_compute_plan`)."""
    try:
        return client.wait_task(
            task_key, timeout=timeout, polling_period=polling_period, **_progress_kwargs(on_progress)
        )
    except exc.FutureFailureError as error:
        completed = complete_failure(client, error)
        if completed is error:
            raise
        raise completed from error


async def async_wait_task(
    client: Any,
    task_key: str,
    *,
    timeout: float | None = None,
    polling_period: float = 5.0,
    on_progress: waiting.ProgressCallback | None = None,
) -> Any:
    """Awaitable twin of :func:`wait_task`."""
    try:
        return await client.async_wait_task(
            task_key, timeout=timeout, polling_period=polling_period, **_progress_kwargs(on_progress)
        )
    except exc.FutureFailureError as error:
        completed = await asyncio.to_thread(complete_failure, client, error)
        if completed is error:
            raise
        raise completed from error


def complete_failure(client: Any, error: exc.FutureFailureError) -> exc.FutureFailureError:
    """Make sure a failure names the failed task(s) and carries their log tails.

    The client blames a plan's ``failed_task_key``; when the server did not set it, the plan's FAILED
    tasks are listed instead. Log tails the client could not fetch are tried once more. Returns
    ``error`` itself when it was already complete, else a new error with the full message.
    """
    culprits = list(error.failed_task_keys)
    logs = dict(error.logs)
    failed = waiting.status_of(error.asset) == models.ComputePlanStatus.failed.value
    if error.kind == waiting.WaitKind.compute_plan.value and failed and not culprits:
        try:
            tasks = client.list_task(
                filters={"compute_plan_key": [error.key], "status": [models.ComputeTaskStatus.failed.value]}
            )
            culprits = [t.key for t in tasks]
        except exc.SubstraError as lookup_error:
            logger.warning("could not list the failed tasks of compute plan %s: %s", error.key, lookup_error)
    error_types = dict(error.error_types)
    for task_key in culprits:
        if not logs.get(task_key):
            tail = _log_tail(client, task_key)
            if tail:
                logs[task_key] = tail
        if task_key not in error_types:
            error_type = _error_type(client, task_key)
            if error_type:
                error_types[task_key] = error_type
    if culprits == list(error.failed_task_keys) and logs == dict(error.logs) and error_types == error.error_types:
        return error
    kind = waiting.WaitKind(error.kind)
    outcome = (
        waiting.Outcome.canceled if error.status == models.ComputePlanStatus.canceled.value else waiting.Outcome.failed
    )
    return exc.FutureFailureError(
        waiting.failure_message(kind, str(error.key), error.asset, outcome, culprits, logs, error_types=error_types),
        key=str(error.key),
        kind=error.kind,
        status=error.status,
        failed_task_keys=culprits,
        logs=logs,
        error_types=error_types,
        asset=error.asset,
    )


def _error_type(client: Any, task_key: str) -> str | None:
    """A failed task's error type as text (``BUILD_ERROR``, ``EXECUTION_ERROR``...), or None."""
    try:
        error_type = client.get_task(task_key).error_type
    except (exc.SubstraError, AttributeError):
        return None
    return None if error_type is None else str(getattr(error_type, "value", error_type))


def _log_tail(client: Any, task_key: str) -> str | None:
    """Last lines of a task's logs, or None."""
    if hasattr(client, "log_tail"):
        return client.log_tail(task_key)
    try:
        text = client.get_logs(task_key)
    except exc.SubstraError:
        return None
    return "\n".join(text.splitlines()[-waiting.LOG_TAIL_LINES :])


# --------------------------------------------------------------------------------------------
# Performances and cancel
# --------------------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Dates as ISO strings, enums as their wire strings, containers recursively."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def fetch_performances(client: Any, compute_plan_key: str, *, latest_attempt: bool = False) -> list[dict[str, Any]]:
    """Performance rows of a plan (one dict per task output), JSON-serialisable.

    With ``latest_attempt``, ``compute_plan_key`` names a run (its attempt 1 key, see
    :mod:`substra_flows.steps.attempts`) and the rows are those of its latest DONE attempt; a run
    with no DONE attempt raises :class:`~substra_flows.exceptions.NotFound`.

    Keys: compute_plan_key, compute_plan_tag, compute_plan_status, compute_plan_start_date,
    compute_plan_end_date, compute_plan_metadata, worker, task_key, task_rank, round_idx,
    identifier, performance.
    """
    compute_plan_key = check_key(compute_plan_key, "compute_plan_key")
    if latest_attempt:
        done = latest_done_attempt(client, compute_plan_key)
        if done is None:
            raise exc.NotFound(f"run {compute_plan_key} has no DONE attempt", key=compute_plan_key)
        compute_plan_key = done.compute_plan_key
    return [jsonable(row) for row in client.get_performances(compute_plan_key).rows()]


def cancel_compute_plan(client: Any, compute_plan_key: str) -> bool:
    """Cancel a plan unless already in a final state; True when this call cancelled it.

    The plan is read first: DONE, FAILED or CANCELED -> nothing sent, False. If the cancel request
    fails (e.g. the server's 500 on a plan that just reached a final state), the plan is read again:
    final -> no error (True if it is now CANCELED, False if it ended DONE or FAILED); else re-raised.
    """
    compute_plan_key = check_key(compute_plan_key, "compute_plan_key")
    status = waiting.status_of(client.get_compute_plan(compute_plan_key))
    if status in _FINAL_PLAN_STATUSES:
        logger.debug("compute plan %s is already final (%s): nothing to cancel", compute_plan_key, status)
        return False
    try:
        client.cancel_compute_plan(compute_plan_key)
    except exc.SubstraError as error:
        status = waiting.status_of(client.get_compute_plan(compute_plan_key))
        if status not in _FINAL_PLAN_STATUSES:
            raise
        logger.info("compute plan %s: cancel answered %s, but the plan is %s", compute_plan_key, error, status)
        return status == models.ComputePlanStatus.canceled.value
    logger.debug("compute plan %s canceled", compute_plan_key)
    return True


def cancel_latest_attempt(client: Any, run_key: str) -> tuple[str | None, bool]:
    """Cancel a run's latest attempt unless it already ended (earlier attempts always have):
    (its key, or None when the run has no plan; whether this call cancelled it)."""
    latest = latest_attempt(client, check_key(run_key, "run_key"))
    if latest is None:
        return None, False
    return latest.compute_plan_key, cancel_compute_plan(client, latest.compute_plan_key)
