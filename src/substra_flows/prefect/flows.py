"""Ready-made flows: submit a compute plan, wait for it, publish its performances.

:func:`run_compute_plan` is the building block of larger pipelines (see
``examples/prefect/retraining.py``). Its run key is derived from the flow run, so a flow run that
is retried or rerun after a crash finds the plan it already submitted while that plan runs or once
it is DONE, and submits the next attempt after a FAILED or CANCELED one (see
:mod:`substra_flows.steps.attempts`). A plan is never left running by a flow run that stopped on
purpose: cancelling the flow run or hitting its timeout cancels the plan, both from the flow itself
and from an ``on_cancellation`` hook for when the flow process is gone. A crash does not cancel the
plan, so that a retry can pick it up.
"""

import asyncio
import functools
import uuid
from collections.abc import Mapping
from typing import Any, Optional, Union

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.exceptions import TerminationSignal
from prefect.flows import Flow
from prefect.logging.loggers import flow_run_logger
from prefect.runtime import flow_run as current_flow_run
from prefect.states import State

from substra_flows import exceptions as exc
from substra_flows import steps
from substra_flows.prefect import artifacts
from substra_flows.prefect.credentials import SubstraCredentials, resolve_credentials
from substra_flows.prefect.tasks import add_compute_plan, get_performances, wait_compute_plan

__all__ = [
    "cancel_compute_plan_on_cancellation",
    "compute_plan_key_for_run",
    "leave_plan_running_on_crash",
    "run_compute_plan",
    "run_identity_of",
]

#: the step name :func:`run_compute_plan` derives its plan key from
RUN_COMPUTE_PLAN_STEP = "run_compute_plan"
#: a clean-up call must not hang on an unreachable server
CLEANUP_RETRY_TIMEOUT = 30.0

# plans being run by flow runs of this process: {flow run id: (credentials, plan key)}; lets the
# cancellation hook act even when the credentials cannot be rebuilt from the run's parameters
_RUNNING: dict[str, tuple[SubstraCredentials, str]] = {}


def compute_plan_key_for_run(step: str = RUN_COMPUTE_PLAN_STEP, flow_run_id: Any = None) -> str:
    """Run key of the plans that ``step`` of a flow run (the current one by default) submits: the key of
    its attempt 1, from which later attempts' keys derive.

    The same flow run and step always give the same key: a retry or a rerun after a crash finds the
    plan instead of submitting another. This is the key :func:`run_compute_plan` uses when it runs on
    its own; as a subflow it is named after its caller (:func:`run_identity_of`).
    """
    run_id = flow_run_id or current_flow_run.get_id()
    if not run_id:
        raise RuntimeError("compute_plan_key_for_run() needs a running flow, or a flow_run_id")
    return steps.derive_key("prefect", str(run_id), step)


def run_identity_of(flow_run: FlowRun) -> tuple[str, ...]:
    """The run identity of a run of :func:`run_compute_plan` (its plans' keys derive from it).

    A flow run on its own is named by its id (a retry keeps it); a subflow by its parent's flow run
    and the position of the call there, since a retry of the parent starts a new subflow run with a
    new id but calls it from the same place. (Prefect gives such a call the same tracking task run
    at each attempt of the parent.)
    """
    if flow_run.parent_task_run_id is not None:
        with get_client(sync_client=True) as client:
            caller = client.read_task_run(flow_run.parent_task_run_id)
        if caller.flow_run_id is not None:
            return ("prefect", str(caller.flow_run_id), f"{RUN_COMPUTE_PLAN_STEP}-{caller.dynamic_key}")
    return ("prefect", str(flow_run.id), RUN_COMPUTE_PLAN_STEP)


def _run_key(compute_plan: Mapping[str, Any], flow_run: FlowRun) -> str:
    """The spec's own key, else the one derived from the flow run: the run key of its attempts."""
    return str(compute_plan.get("key") or steps.derive_key(*run_identity_of(flow_run)))


def _calling_flow_run_id() -> Optional[str]:
    """The flow run the user started, when this one is a subflow of it (else None)."""
    try:
        root = current_flow_run.root_flow_run_id
    except Exception:  # best effort: the artifacts then stay on this run only
        return None
    own = current_flow_run.get_id()
    return str(root) if root and str(root) != str(own) else None


def _cancel_quietly(
    credentials: SubstraCredentials, key: str, reason: str, logger: Any, *, latest_attempt: bool = False
) -> bool:
    """Cancel the plan as part of a clean-up: log the outcome, never raise (the original error matters more).

    With ``latest_attempt``, ``key`` is a run key and its latest attempt is cancelled.
    """
    try:
        with credentials.get_client(retry_timeout=CLEANUP_RETRY_TIMEOUT) as client:
            if latest_attempt:
                found, cancelled = steps.cancel_latest_attempt(client, key)
                if found is None:
                    raise exc.NotFound(f"run {key} has no plan", key=key)
                key = found
            else:
                cancelled = bool(steps.cancel_compute_plan(client, key))
    except exc.NotFound:
        logger.info("compute plan %s was never created: nothing to cancel (%s)", key, reason)
        return False
    except Exception as error:  # a clean-up reports; it must not mask the reason it runs
        logger.error("could not cancel compute plan %s (%s): %s", key, reason, exc.redact(str(error)))
        return False
    if cancelled:
        logger.warning("compute plan %s cancelled (%s)", key, reason)
    else:
        logger.info("compute plan %s had already ended: nothing to cancel (%s)", key, reason)
    return cancelled


def _flow_run_is_cancelling(flow_run_id: Optional[str]) -> bool:
    """Whether Prefect asked this flow run to stop (state Cancelling or Cancelled)."""
    if not flow_run_id:
        return False
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(uuid.UUID(str(flow_run_id))).state
    except Exception:  # unknown means "not asked": a crash must not cancel the plan
        return False
    return bool(state and (state.is_cancelling() or state.is_cancelled()))


def _stop_reason(interruption: BaseException, flow_run_id: Optional[str]) -> Optional[str]:
    """Why the flow stops, when it stops on purpose (cancel, timeout); None for a crash or an error."""
    if isinstance(interruption, asyncio.CancelledError):
        return "the flow run was cancelled or timed out"
    if isinstance(interruption, TimeoutError):
        return "the flow run timed out"
    if isinstance(interruption, Exception):
        return None
    if _flow_run_is_cancelling(flow_run_id):  # TerminationSignal and co: cancel only if Prefect asked
        kind = "termination signal" if isinstance(interruption, TerminationSignal) else type(interruption).__name__
        return f"the flow run was cancelled ({kind})"
    return None


def _credentials_from_parameter(value: Any) -> Optional[SubstraCredentials]:
    """Rebuild the credentials of a flow run from its stored parameter: a block name or a saved block.

    An unsaved block is stored with its secrets masked and cannot be rebuilt: None.
    """
    if isinstance(value, SubstraCredentials):
        return value
    if isinstance(value, str):
        return resolve_credentials(value)
    if isinstance(value, Mapping):
        ref = value.get("$ref") or (
            {"block_document_id": value["_block_document_id"]} if value.get("_block_document_id") else None
        )
        if ref:
            return SubstraCredentials.load_from_ref(ref, _sync=True)  # type: ignore[call-arg,return-value]
    return None


def cancel_compute_plan_on_cancellation(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """``on_cancellation`` hook: cancel the plan the cancelled flow run submitted.

    Runs in the flow's process or, when the process was killed, in the runner that served it; it
    finds the plan key from the run's parameters or id, and the credentials from this process or
    from the saved block the run was given.
    """
    logger: Any = flow_run_logger(flow_run, flow)
    running = _RUNNING.get(str(flow_run.id))
    if running is not None:
        credentials, key = running
    else:  # another process: the run's latest attempt is the one to cancel
        parameters = flow_run.parameters or {}
        compute_plan = parameters.get("compute_plan")
        try:
            key = _run_key(compute_plan if isinstance(compute_plan, Mapping) else {}, flow_run)
        except Exception as error:
            logger.error(
                "cannot tell which compute plan flow run %s submitted: %s", flow_run.id, exc.redact(str(error))
            )
            return
        try:
            found = _credentials_from_parameter(parameters.get("credentials"))
        except Exception as error:
            logger.error("cannot load the credentials to cancel compute plan %s: %s", key, exc.redact(str(error)))
            return
        if found is None:
            logger.warning(
                "cannot cancel compute plan %s from here: pass the credentials as a saved block (or its name)", key
            )
            return
        credentials = found
    _cancel_quietly(credentials, key, f"flow run entered {state.name}", logger, latest_attempt=running is None)


def leave_plan_running_on_crash(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """``on_crashed`` hook: say which plan keeps running, and that a retry of this run waits for it.

    A crash (the process died, or was marked Crashed by the zombie automation of
    :mod:`substra_flows.prefect.crashes`) is not a decision to stop: the plan is not cancelled, and a
    retry or rerun of the same run finds it again (see :mod:`substra_flows.steps.attempts`).
    """
    logger: Any = flow_run_logger(flow_run, flow)
    running = _RUNNING.pop(str(flow_run.id), None)
    if running is not None:
        what = f"compute plan {running[1]}"
    else:
        compute_plan = (flow_run.parameters or {}).get("compute_plan")
        spec = compute_plan if isinstance(compute_plan, Mapping) else {}
        try:
            what = f"the latest attempt of run {_run_key(spec, flow_run)}"
        except Exception:  # the server is unreachable: say it without the key
            what = "its compute plan"
    logger.warning(
        "flow run crashed (%s): %s is left running; retry this flow run (or rerun the same day) to wait for it again",
        state.message or state.name,
        what,
    )


@flow(
    name="substra-run-compute-plan",
    on_cancellation=[cancel_compute_plan_on_cancellation],
    on_crashed=[leave_plan_running_on_crash],
)
def run_compute_plan(
    credentials: Union[SubstraCredentials, str],
    compute_plan: dict[str, Any],
    wait_timeout: Optional[float] = None,
    polling_period: float = 5.0,
    cancel_on_timeout: bool = True,
    artifact_key_prefix: str = "substra",
    on_failed: str = "retry",
) -> dict[str, Any]:
    """Submit a compute plan (or find it, on a rerun), wait for it, and publish its performances.

    ``credentials`` is a block or the name of a saved one (prefer names in deployments: parameters
    are stored). The run key is the spec's ``key``, else derived from this flow run; a rerun after a
    FAILED or CANCELED plan submits the next attempt (``on_failed="retry"``) or raises
    (``"fail"``). On failure, raises ``FutureFailureError`` naming the failed tasks with their log
    tail; past ``wait_timeout`` seconds, cancels the plan (unless ``cancel_on_timeout=False``) and
    raises ``FutureTimeoutError``. Artifacts: a link to the plan, a table of performances, a summary.
    Returns ``{"compute_plan_key", "attempt", "created", "status", "link", "performances"}``.
    """
    logger = get_run_logger()
    block = resolve_credentials(credentials)
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("run_compute_plan must run as a flow")
    run_id = str(context.flow_run.id)
    run_key = _run_key(compute_plan, context.flow_run)
    name = compute_plan.get("name")
    prefix = artifact_key_prefix
    caller = _calling_flow_run_id()  # a subflow publishes its artifacts on the user's flow run as well
    key = run_key
    crashing = False
    try:
        submitted = add_compute_plan(block, {**compute_plan, "key": run_key}, on_failed=on_failed)
        key, link = submitted["compute_plan_key"], submitted["link"]
        _RUNNING[run_id] = (block, key)
        artifacts.create_plan_link_artifact(link, key, key_prefix=prefix, also_on_flow_run=caller)
        summary = functools.partial(
            artifacts.create_summary_artifact, key, link=link, name=name, key_prefix=prefix, also_on_flow_run=caller
        )
        try:
            plan = wait_compute_plan(
                block,
                key,
                timeout=wait_timeout,
                polling_period=polling_period,
                progress_artifact_key=artifacts.artifact_key(prefix, "progress"),
            )
        except exc.FutureFailureError as failure:
            summary(status=str(failure.status), failure=failure)
            raise
        except exc.FutureTimeoutError as late:
            note = f"Still `{late.status}` after {late.timeout:g}s."
            if cancel_on_timeout:
                cancelled = _cancel_quietly(block, key, f"not done after {late.timeout:g}s", logger)
                note += " Cancelled." if cancelled else ""
            summary(status=str(late.status), note=note)
            raise
        rows = get_performances(block, key)
        artifacts.create_performance_artifact(rows, key, key_prefix=prefix, also_on_flow_run=caller)
        summary(status=str(plan["status"]), rows=rows)
        logger.info("compute plan %s done: %d performance(s)", key, len(rows))
        return {
            "compute_plan_key": key,
            "attempt": submitted["attempt"],
            "created": submitted["created"],
            "status": plan["status"],
            "link": link,
            "performances": rows,
        }
    except BaseException as interruption:
        reason = _stop_reason(interruption, run_id)
        if reason is not None:
            # before the submission returned, only the run key is known: cancel its latest attempt
            _cancel_quietly(block, key, reason, logger, latest_attempt=run_id not in _RUNNING)
        elif not isinstance(interruption, Exception):
            crashing = True  # the on_crashed hook still names the plan, then forgets it
        raise
    finally:
        if not crashing:
            _RUNNING.pop(run_id, None)
