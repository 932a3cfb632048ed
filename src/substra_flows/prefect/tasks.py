"""Prefect tasks, one per Substra pipeline step, each a thin call of :mod:`substra_flows.steps`.

Every task takes ``credentials`` first (a :class:`SubstraCredentials` block, or the name of a saved
one), logs through the run logger and returns plain JSON-serialisable data. Prefect retries a task
only when its error is transient (connection lost, 429, 502-504, timeouts), on top of the retries
the client already makes per call; nothing is cached: reruns are made safe by the steps, which
find what an earlier attempt created.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.context import FlowRunContext, TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.states import State
from prefect.tasks import Task

from substra_flows import exceptions as exc
from substra_flows import steps
from substra_flows.client import SubstraClient
from substra_flows.prefect.artifacts import WaitReporter
from substra_flows.prefect.credentials import CredentialsLike, aresolve_credentials, resolve_credentials

__all__ = [
    "add_compute_plan",
    "add_data_samples",
    "add_function",
    "async_cancel_compute_plan",
    "async_download_model",
    "async_get_compute_plan",
    "async_get_performances",
    "async_get_task",
    "async_get_task_logs",
    "async_wait_compute_plan",
    "async_wait_task",
    "cancel_compute_plan",
    "download_model",
    "evaluate_quality_gate",
    "get_compute_plan",
    "get_leaderboard",
    "get_organization_info",
    "get_performances",
    "get_task",
    "get_task_logs",
    "is_transient_error",
    "register_dataset",
    "retry_on_transient_error",
    "run_identity",
    "wait_compute_plan",
    "wait_task",
]

# -- retries ---------------------------------------------------------------------------------------

#: errors worth another attempt once the client's own retries are spent (shared with the Airflow face)
TRANSIENT_ERRORS = exc.TRANSIENT_ERRORS


def is_transient_error(error: Optional[BaseException]) -> bool:
    """True for errors a later attempt may not meet (never for refusals, failures or deadlines)."""
    return exc.is_transient(error)


def _logger() -> Any:
    """The task run's logger (shown in the UI), or this module's outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def retry_on_transient_error(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """``retry_condition_fn`` of every task: retry a failed run only when its error is transient, and say
    why not when a retry cannot help (a refused permission, model export off, a build error...)."""
    error = state.data if isinstance(state.data, BaseException) else None
    cause = exc.retry_cannot_help(error)
    if cause is not None:
        _logger().warning("%s failed for good, not retrying: %s", task_run.name, cause)
    return is_transient_error(error)


#: options shared by every task: no cache, a few spaced retries on transient errors only
_TASK_OPTIONS: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "retries": 3,
    "retry_delay_seconds": [10, 30, 90],
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": retry_on_transient_error,
}
#: waits already span long periods: one retry after a lost connection is enough
_WAIT_OPTIONS: dict[str, Any] = {**_TASK_OPTIONS, "retries": 1, "retry_delay_seconds": 30}

# -- helpers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _connect(credentials: CredentialsLike) -> Iterator[SubstraClient]:
    """A client for the duration of one task, closed (logged out) afterwards."""
    client = resolve_credentials(credentials).get_client()
    try:
        yield client
    finally:
        client.close()


@contextlib.asynccontextmanager
async def _aconnect(credentials: CredentialsLike) -> AsyncIterator[SubstraClient]:
    """:func:`_connect` for async tasks: login and logout happen off the event loop."""
    block = await aresolve_credentials(credentials)
    client = await asyncio.to_thread(block.get_client)
    try:
        yield client
    finally:
        await asyncio.to_thread(client.close)


def _plain(value: Any) -> Any:
    """JSON-ready form of a step result: pydantic models and dataclasses become dicts."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _status(asset: Mapping[str, Any]) -> str:
    """Status wire string of a dumped plan or task."""
    return str(asset.get("status"))


def run_identity(step: Optional[str] = None) -> tuple[str, ...]:
    """Identity of the calling task within its flow run: ``("prefect", <flow run id>, <step>)``.

    The step defaults to the task's name and its call index in the flow run (``add_compute_plan-0``
    for the first call): both are the same when the flow run is retried or rerun after a crash,
    unlike the task run id, which is new at each attempt. Keys derived from it are therefore found
    again, not duplicated. Calls submitted concurrently get their index in the order they start:
    give them explicit step names instead.
    """
    context = TaskRunContext.get()
    if context is None:
        raise RuntimeError("run_identity() needs a running Prefect task; pass an explicit key instead")
    task_run = context.task_run
    if step is None:
        step = _call_step_name(context.task.name, str(task_run.id))
    owner = task_run.flow_run_id or task_run.id  # a task run outside a flow keeps its id across its retries
    return ("prefect", str(owner), step)


def _call_step_name(task_name: str, task_run_id: str) -> str:
    """``<task name>-<n>``: the n-th run of this task in the current flow-run attempt (0 first).

    Counted in the flow run context, which a retry or a rerun creates afresh, so the same calls get
    the same names; a task run retried on its own keeps the name it got first.
    """
    flow_context = FlowRunContext.get()
    if flow_context is None:
        return f"{task_name}-0"
    counters = flow_context.task_run_dynamic_keys  # per-attempt dict of the flow run context
    named = f"substra-flows:run:{task_run_id}"
    if named not in counters:
        counted = f"substra-flows:count:{task_name}"
        index = int(counters.get(counted, 0))
        counters[counted] = index + 1
        counters[named] = f"{task_name}-{index}"
    return str(counters[named])


# -- datasets, samples, functions ------------------------------------------------------------------


@task(**_TASK_OPTIONS)
def register_dataset(
    credentials: CredentialsLike,
    name: str,
    opener: Union[str, Path],
    sample_paths: Sequence[Union[str, Path]],
    description: Union[str, Path, None] = None,
    permissions: Optional[Mapping[str, Any]] = None,
    logs_permission: Optional[Mapping[str, Any]] = None,
    metadata: Optional[Mapping[str, str]] = None,
    local: bool = True,
    batch_size: int = 20,
    ledger_dir: Union[str, Path, None] = None,
) -> dict[str, Any]:
    """Find or create the dataset ``name`` (by opener fingerprint), then add the samples not registered yet.

    Returns ``{"dataset_key", "sample_keys", "new_sample_keys", "created"}``; ``sample_keys``
    follows the order of ``sample_paths``.
    """
    logger = get_run_logger()
    with _connect(credentials) as client:
        registered = steps.register_dataset(
            client,
            name=name,
            opener=opener,
            sample_paths=list(sample_paths),
            description=description,
            permissions=permissions,
            logs_permission=logs_permission,
            metadata=metadata,
            local=local,
            batch_size=batch_size,
            ledger_dir=ledger_dir,
        )
    result = _plain(registered)
    logger.info(
        "dataset %r %s: %s (%d sample(s), %d new)",
        name,
        "created" if result["created"] else "found",
        result["dataset_key"],
        len(result["sample_keys"]),
        len(result["new_sample_keys"]),
    )
    return result


@task(**_TASK_OPTIONS)
def add_data_samples(
    credentials: CredentialsLike,
    dataset_key: str,
    sample_paths: Sequence[Union[str, Path]],
    local: bool = True,
    batch_size: int = 20,
    ledger_dir: Union[str, Path, None] = None,
) -> list[str]:
    """Register the sample folders not registered for this dataset yet; return the keys of all of them."""
    logger = get_run_logger()
    with _connect(credentials) as client:
        keys = steps.add_data_samples(
            client,
            dataset_key=dataset_key,
            sample_paths=list(sample_paths),
            local=local,
            batch_size=batch_size,
            ledger_dir=ledger_dir,
        )
    logger.info("dataset %s: %d sample(s) registered", dataset_key, len(keys))
    return list(keys)


@task(**_TASK_OPTIONS)
def add_function(
    credentials: CredentialsLike,
    name: str,
    archive: Union[str, Path],
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    description: Union[str, Path, None] = None,
    permissions: Optional[Mapping[str, Any]] = None,
    metadata: Optional[Mapping[str, str]] = None,
) -> dict[str, Any]:
    """Find (by archive fingerprint) or create the function ``name``; return ``{"function_key", "created"}``."""
    logger = get_run_logger()
    with _connect(credentials) as client:
        registered = steps.register_function(
            client,
            name=name,
            archive=archive,
            inputs=inputs,
            outputs=outputs,
            description=description,
            permissions=permissions,
            metadata=metadata,
        )
    result = _plain(registered)
    logger.info("function %r %s: %s", name, "created" if result["created"] else "found", result["function_key"])
    return result


# -- compute plans ---------------------------------------------------------------------------------


@task(**_TASK_OPTIONS)
def add_compute_plan(
    credentials: CredentialsLike,
    compute_plan: Union[Mapping[str, Any], Any],
    compute_plan_key: Optional[str] = None,
    batch_size: int = 500,
    step: Optional[str] = None,
    on_failed: str = "retry",
) -> dict[str, Any]:
    """Submit the current attempt of a compute plan, or find the one an earlier attempt of this flow run submitted.

    The run key is ``compute_plan_key``, else the spec's ``key``, else derived from the flow run and
    this task (see :func:`run_identity`; ``step`` names the submission explicitly). A retried or
    rerun flow run finds its plan while it runs or once it is DONE (adding any missing task); after
    a FAILED or CANCELED plan it submits the next attempt (``on_failed="retry"``) or raises, naming
    the plan and its failed task (``"fail"``). Returns ``{"compute_plan_key", "created",
    "added_task_keys", "existing_task_keys", "attempt", "run_key", "status", "link"}``.
    """
    logger = get_run_logger()
    # the run's identity is looked up only when no key is given (it needs a running task)
    given = steps.given_compute_plan_key(compute_plan, compute_plan_key)
    identity = None if given is not None else run_identity(step)
    block = resolve_credentials(credentials)
    with _connect(block) as client:
        submitted = steps.submit_compute_plan(
            client,
            compute_plan,
            compute_plan_key=compute_plan_key,
            run_identity=identity,
            batch_size=batch_size,
            on_failed=on_failed,
        )
    result = _plain(submitted)
    result["link"] = block.compute_plan_url(result["compute_plan_key"])
    logger.info(
        "compute plan %s (attempt %d) %s, %d task(s) added now: %s",
        result["compute_plan_key"],
        result["attempt"],
        "submitted" if result["created"] else f"found, {result['status'] or 'just created'}",
        len(result["added_task_keys"]),
        result["link"],
    )
    return result


@task(**_WAIT_OPTIONS)
def wait_compute_plan(
    credentials: CredentialsLike,
    compute_plan_key: str,
    timeout: Optional[float] = None,
    polling_period: float = 5.0,
    progress_artifact_key: Optional[str] = None,
) -> dict[str, Any]:
    """Wait until the plan is done and return it; raise ``FutureFailureError`` (failed tasks and their
    log tail in the message) or ``FutureTimeoutError`` past ``timeout`` seconds.

    While it waits, logs the plan's status, tasks done / total, failed tasks and the time waited (at
    the first look, at each change, at the end, at least every minute), and keeps a progress artifact
    of the task run up to date (keyed ``progress_artifact_key`` when given, to show in the Artifacts page).
    """
    logger = get_run_logger()
    logger.info("waiting for compute plan %s (polling every %gs)", compute_plan_key, polling_period)
    reporter = WaitReporter(logger, progress_artifact_key)
    with _connect(credentials) as client:
        plan = _plain(
            steps.wait_compute_plan(
                client, compute_plan_key, timeout=timeout, polling_period=polling_period, on_progress=reporter.report
            )
        )
    return plan


@task(**_WAIT_OPTIONS)
async def async_wait_compute_plan(
    credentials: CredentialsLike,
    compute_plan_key: str,
    timeout: Optional[float] = None,
    polling_period: float = 5.0,
    progress_artifact_key: Optional[str] = None,
) -> dict[str, Any]:
    """Awaitable :func:`wait_compute_plan`: sleeps on the event loop, never blocking it."""
    logger = get_run_logger()
    logger.info("waiting for compute plan %s (polling every %gs)", compute_plan_key, polling_period)
    reporter = WaitReporter(logger, progress_artifact_key)
    async with _aconnect(credentials) as client:
        plan = await steps.async_wait_compute_plan(
            client, compute_plan_key, timeout=timeout, polling_period=polling_period, on_progress=reporter.areport
        )
    return _plain(plan)


@task(**_WAIT_OPTIONS)
def wait_task(
    credentials: CredentialsLike, task_key: str, timeout: Optional[float] = None, polling_period: float = 5.0
) -> dict[str, Any]:
    """Wait until the compute task is done and return it (errors and progress lines as :func:`wait_compute_plan`)."""
    logger = get_run_logger()
    logger.info("waiting for task %s (polling every %gs)", task_key, polling_period)
    reporter = WaitReporter(logger)
    with _connect(credentials) as client:
        found = steps.wait_task(
            client, task_key, timeout=timeout, polling_period=polling_period, on_progress=reporter.report
        )
    return _plain(found)


@task(**_WAIT_OPTIONS)
async def async_wait_task(
    credentials: CredentialsLike, task_key: str, timeout: Optional[float] = None, polling_period: float = 5.0
) -> dict[str, Any]:
    """Awaitable :func:`wait_task`."""
    logger = get_run_logger()
    logger.info("waiting for task %s (polling every %gs)", task_key, polling_period)
    async with _aconnect(credentials) as client:
        found = await steps.async_wait_task(
            client, task_key, timeout=timeout, polling_period=polling_period, on_progress=WaitReporter(logger).areport
        )
    return _plain(found)


@task(**_TASK_OPTIONS)
def cancel_compute_plan(credentials: CredentialsLike, compute_plan_key: str) -> bool:
    """Cancel the plan unless it already ended; True when this call cancelled it."""
    logger = get_run_logger()
    with _connect(credentials) as client:
        cancelled = bool(steps.cancel_compute_plan(client, compute_plan_key))
    logger.info("compute plan %s %s", compute_plan_key, "cancelled" if cancelled else "had already ended")
    return cancelled


@task(**_TASK_OPTIONS)
async def async_cancel_compute_plan(credentials: CredentialsLike, compute_plan_key: str) -> bool:
    """Awaitable :func:`cancel_compute_plan`."""
    logger = get_run_logger()
    async with _aconnect(credentials) as client:
        cancelled = bool(await asyncio.to_thread(steps.cancel_compute_plan, client, compute_plan_key))
    logger.info("compute plan %s %s", compute_plan_key, "cancelled" if cancelled else "had already ended")
    return cancelled


# -- reads -----------------------------------------------------------------------------------------


@task(**_TASK_OPTIONS)
def get_compute_plan(credentials: CredentialsLike, compute_plan_key: str) -> dict[str, Any]:
    """The plan as it is now (status and per-status task counts), without waiting."""
    with _connect(credentials) as client:
        return _plain(client.get_compute_plan(compute_plan_key))


@task(**_TASK_OPTIONS)
async def async_get_compute_plan(credentials: CredentialsLike, compute_plan_key: str) -> dict[str, Any]:
    """Awaitable :func:`get_compute_plan`."""
    async with _aconnect(credentials) as client:
        return _plain(await client.async_get_compute_plan(compute_plan_key))


@task(**_TASK_OPTIONS)
def get_task(credentials: CredentialsLike, task_key: str) -> dict[str, Any]:
    """The compute task as it is now, without waiting."""
    with _connect(credentials) as client:
        return _plain(client.get_task(task_key))


@task(**_TASK_OPTIONS)
async def async_get_task(credentials: CredentialsLike, task_key: str) -> dict[str, Any]:
    """Awaitable :func:`get_task`."""
    async with _aconnect(credentials) as client:
        return _plain(await client.async_get_task(task_key))


@task(**_TASK_OPTIONS)
def get_performances(credentials: CredentialsLike, compute_plan_key: str) -> list[dict[str, Any]]:
    """The plan's performance rows: one dict per scoring task output (worker, rank, round, identifier, value)."""
    logger = get_run_logger()
    with _connect(credentials) as client:
        rows = list(steps.fetch_performances(client, compute_plan_key))
    logger.info("compute plan %s: %d performance(s)", compute_plan_key, len(rows))
    return rows


@task(**_TASK_OPTIONS)
async def async_get_performances(credentials: CredentialsLike, compute_plan_key: str) -> list[dict[str, Any]]:
    """Awaitable :func:`get_performances`."""
    logger = get_run_logger()
    async with _aconnect(credentials) as client:
        rows = list(await asyncio.to_thread(steps.fetch_performances, client, compute_plan_key))
    logger.info("compute plan %s: %d performance(s)", compute_plan_key, len(rows))
    return rows


def _tail(text: str, lines: Optional[int]) -> str:
    """The last ``lines`` lines of ``text`` (all of it for None)."""
    if lines is None:
        return text
    return "\n".join(text.splitlines()[-lines:]) if lines > 0 else ""


@task(**_TASK_OPTIONS)
def get_task_logs(credentials: CredentialsLike, task_key: str, tail_lines: Optional[int] = None) -> str:
    """A failed task's logs (its last ``tail_lines`` lines when given); the server keeps logs of failed tasks only."""
    with _connect(credentials) as client:
        text = client.get_logs(task_key)
    return exc.redact(_tail(text, tail_lines))


@task(**_TASK_OPTIONS)
async def async_get_task_logs(credentials: CredentialsLike, task_key: str, tail_lines: Optional[int] = None) -> str:
    """Awaitable :func:`get_task_logs`."""
    async with _aconnect(credentials) as client:
        text = await asyncio.to_thread(client.get_logs, task_key)
    return exc.redact(_tail(text, tail_lines))


@task(**_TASK_OPTIONS)
def download_model(
    credentials: CredentialsLike,
    destination_folder: Union[str, Path],
    model_key: Optional[str] = None,
    task_key: Optional[str] = None,
    identifier: str = "model",
) -> str:
    """Save a model in ``destination_folder`` (created if needed): by ``model_key``, or the output
    ``identifier`` of ``task_key``. Returns the file path."""
    with _connect(credentials) as client:
        path = steps.download_model(
            client, destination_folder, model_key=model_key, task_key=task_key, identifier=identifier
        )
    get_run_logger().info("model saved to %s", path)
    return path


@task(**_TASK_OPTIONS)
async def async_download_model(
    credentials: CredentialsLike,
    destination_folder: Union[str, Path],
    model_key: Optional[str] = None,
    task_key: Optional[str] = None,
    identifier: str = "model",
) -> str:
    """Awaitable :func:`download_model` (the download streams to disk off the event loop)."""
    async with _aconnect(credentials) as client:
        path = await asyncio.to_thread(
            steps.download_model,
            client,
            destination_folder,
            model_key=model_key,
            task_key=task_key,
            identifier=identifier,
        )
    get_run_logger().info("model saved to %s", path)
    return path


@task(**_TASK_OPTIONS)
def get_organization_info(credentials: CredentialsLike) -> dict[str, Any]:
    """Who the credentials' organization is (``organization_id``, ``host``, channel, versions)."""
    with _connect(credentials) as client:
        return _plain(client.organization_info())


# -- model selection -------------------------------------------------------------------------------


@task(**_TASK_OPTIONS)
def get_leaderboard(
    credentials: CredentialsLike,
    metadata_filters: Optional[Sequence[Mapping[str, str]]] = None,
    identifier: str = "performance",
    aggregate: str = "mean",
) -> list[dict[str, Any]]:
    """Done plans matching ``metadata_filters``, ranked by their aggregated ``identifier`` metric, best first."""
    logger = get_run_logger()
    with _connect(credentials) as client:
        entries = steps.leaderboard(
            client, metadata_filters=metadata_filters, identifier=identifier, aggregate=aggregate
        )
    rows = [_plain(entry) for entry in entries]
    logger.info("leaderboard of %r: %d plan(s)", identifier, len(rows))
    return rows


@task(cache_policy=NO_CACHE)
def evaluate_quality_gate(
    candidate_key: str, entries: Sequence[Mapping[str, Any]], min_improvement: float = 0.0
) -> dict[str, Any]:
    """Decide whether the candidate plan beats every other leaderboard entry by ``min_improvement``."""
    logger = get_run_logger()
    ranked = [steps.LeaderboardEntry(**dict(entry)) for entry in entries]
    decision = _plain(steps.quality_gate(candidate_key, ranked, min_improvement=min_improvement))
    logger.info(
        "quality gate for %s: %s (%s)", candidate_key, "promote" if decision["promote"] else "keep", decision["reason"]
    )
    return decision
