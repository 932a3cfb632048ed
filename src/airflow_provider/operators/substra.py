"""Operators for the Substra pipeline steps: register data and functions, run compute plans, read scores.

Every operator is a thin translation of one step of :mod:`substra_flows.steps` (which owns the
HTTP calls, retries, idempotency and waiting) into Airflow: templated parameters in, a
JSON-serialisable XCom out, Airflow exceptions for failures: an error that a retry cannot fix
(a refused permission, model export off, a build error...) fails the task for good, with its cause
(:mod:`airflow_provider.errors`).
"""

from __future__ import annotations

import datetime as dt
import enum
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider.errors import event_fails_for_good, failing_for_good, surfaces_errors
from airflow_provider.hooks.substra import DEFAULT_CONN_ID, SubstraHook
from airflow_provider.links.substra import KEY_XCOM_KEY, SubstraComputePlanLink
from airflow_provider.triggers.substra import (
    CANCELED,
    COMPUTE_PLAN,
    FAILED,
    SUCCESS,
    TIMEOUT,
    WAIT_TRY_XCOM_KEY,
    SubstraComputePlanTrigger,
    check_event,
)
from substra_flows import steps
from substra_flows.exceptions import FutureFailureError, FutureTimeoutError

if TYPE_CHECKING:
    from airflow.sdk import Context

#: extra time the task-level deferral timeout gives the trigger to report its own deadline first
DEFERRAL_GRACE_SECONDS = 60.0


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable`` setting."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def to_jsonable(value: Any) -> Any:
    """A copy of ``value`` made of JSON types only (XCom must stay readable by any backend)."""
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return to_jsonable(value.to_dict())
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(mode="json"))
    return str(value)


def derive_compute_plan_key(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The run key of a task instance when no key is given: the same for every try of it, so a retry or
    a cleared task finds its plan instead of creating another, and submits the next attempt (derived
    from this key, see :mod:`substra_flows.steps.attempts`) after a failed or canceled one. It is
    also the key of attempt 1."""
    parts = [dag_id, run_id, task_id]
    if map_index is not None and map_index >= 0:
        parts.append(str(map_index))
    return steps.derive_key(*parts)


def sample_folders(sample_paths: str | Sequence[str] | None, samples_dir: str | None) -> list[str]:
    """Sample folders from an explicit list (or one path) and/or every sub-folder of ``samples_dir``."""
    folders: list[str] = []
    if isinstance(sample_paths, (str, PurePath)):
        folders.append(str(sample_paths))
    elif sample_paths:
        folders.extend(str(p) for p in sample_paths)
    if samples_dir:
        root = Path(samples_dir)
        if not root.is_dir():
            raise FileNotFoundError(f"samples_dir {str(root)!r} is not an existing folder")
        folders.extend(str(p) for p in sorted(root.iterdir()) if p.is_dir())
    return folders


def _fail_on_wait_error(error: FutureFailureError | FutureTimeoutError, on_failed: str) -> AirflowException:
    """Airflow exception for a failed wait. A retry submits the next attempt after a failed or canceled
    plan (``on_failed="retry"``), and keeps waiting after a timeout; with ``on_failed="fail"`` a
    failed or canceled plan fails the task for good, since a retry would only report it again."""
    final = failing_for_good(error)
    if final is not None:  # e.g. a build error: the next attempt would use the same function
        return final
    if isinstance(error, FutureFailureError) and on_failed == "fail":
        return AirflowFailException(str(error))
    return AirflowException(str(error))


class SubstraBaseOperator(BaseOperator):
    """Holds the connection id and a lazily created :class:`SubstraHook`.

    :param substra_conn_id: Airflow connection of the Substra organization to act as.
    """

    ui_color = "#d8f3ea"

    def __init__(self, *, substra_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.substra_conn_id = substra_conn_id

    @cached_property
    def hook(self) -> SubstraHook:
        """The hook of ``substra_conn_id``."""
        return SubstraHook(self.substra_conn_id)

    def _close(self) -> None:
        """Release the client once the step is over (logs out when the connection logged in)."""
        if "hook" in self.__dict__:
            self.hook.close()


class SubstraRegisterDatasetOperator(SubstraBaseOperator):
    """Find or create a dataset (by name and opener), then register the samples it does not have yet.

    Returns ``{"dataset_key", "sample_keys", "new_sample_keys", "created"}``; ``sample_keys``
    follow the order of the given folders. Samples come from ``sample_paths`` and/or every
    sub-folder of ``samples_dir``.

    :param name: dataset name.
    :param opener: path of the opener script.
    :param sample_paths: sample folders (or one folder).
    :param samples_dir: a folder whose sub-folders are samples.
    :param description: Markdown description file.
    :param permissions: ``{"public": bool, "authorized_ids": [...]}`` of the dataset.
    :param logs_permission: who may read the logs of tasks using this dataset.
    :param metadata: string metadata of the dataset.
    :param local: upload the folders (True) or register server-side paths (False).
    :param batch_size: samples per request.
    :param ledger_dir: folder of the ledger that lets an interrupted registration resume.
    """

    template_fields: Sequence[str] = (
        "substra_conn_id",
        "name",
        "opener",
        "sample_paths",
        "samples_dir",
        "description",
        "permissions",
        "logs_permission",
        "metadata",
        "ledger_dir",
    )

    def __init__(
        self,
        *,
        name: str,
        opener: str,
        sample_paths: str | Sequence[str] | None = None,
        samples_dir: str | None = None,
        description: str | None = None,
        permissions: Mapping[str, Any] | None = None,
        logs_permission: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        local: bool = True,
        batch_size: int = 20,
        ledger_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.opener = opener
        self.sample_paths = sample_paths
        self.samples_dir = samples_dir
        self.description = description
        self.permissions = permissions
        self.logs_permission = logs_permission
        self.metadata = metadata
        self.local = local
        self.batch_size = batch_size
        self.ledger_dir = ledger_dir

    @surfaces_errors
    def execute(self, context: Context) -> dict[str, Any]:
        """Register the dataset and its new samples; return their keys."""
        folders = sample_folders(self.sample_paths, self.samples_dir)
        try:
            result = steps.register_dataset(
                self.hook.get_conn(),
                name=self.name,
                opener=self.opener,
                sample_paths=folders,
                description=self.description,
                permissions=self.permissions,
                logs_permission=self.logs_permission,
                metadata=self.metadata,
                local=self.local,
                batch_size=self.batch_size,
                ledger_dir=self.ledger_dir,
            )
        finally:
            self._close()
        self.log.info(
            "Dataset %s (%s): %d sample(s), %d new",
            result.dataset_key,
            "created" if result.created else "found",
            len(result.sample_keys),
            len(result.new_sample_keys),
        )
        return to_jsonable(result.to_dict())


class SubstraAddDataSamplesOperator(SubstraBaseOperator):
    """Register the samples of a dataset that are not registered yet; return every sample's key.

    :param dataset_key: the dataset the samples belong to.
    :param sample_paths: sample folders (or one folder).
    :param samples_dir: a folder whose sub-folders are samples.
    :param local: upload the folders (True) or register server-side paths (False).
    :param batch_size: samples per request.
    :param ledger_dir: folder of the ledger that lets an interrupted registration resume.
    """

    template_fields: Sequence[str] = ("substra_conn_id", "dataset_key", "sample_paths", "samples_dir", "ledger_dir")

    def __init__(
        self,
        *,
        dataset_key: str,
        sample_paths: str | Sequence[str] | None = None,
        samples_dir: str | None = None,
        local: bool = True,
        batch_size: int = 20,
        ledger_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset_key = dataset_key
        self.sample_paths = sample_paths
        self.samples_dir = samples_dir
        self.local = local
        self.batch_size = batch_size
        self.ledger_dir = ledger_dir

    @surfaces_errors
    def execute(self, context: Context) -> list[str]:
        """Register the missing samples; return the keys of all given samples, in order."""
        folders = sample_folders(self.sample_paths, self.samples_dir)
        try:
            keys = steps.add_data_samples(
                self.hook.get_conn(),
                dataset_key=self.dataset_key,
                sample_paths=folders,
                local=self.local,
                batch_size=self.batch_size,
                ledger_dir=self.ledger_dir,
            )
        finally:
            self._close()
        self.log.info("Dataset %s: %d sample(s) registered or found", self.dataset_key, len(keys))
        return to_jsonable(keys)


class SubstraAddFunctionOperator(SubstraBaseOperator):
    """Find (by name and archive content) or register a function; return ``{"function_key", "created"}``.

    :param name: function name.
    :param archive: a zip or tar archive holding a Dockerfile, or a folder (archived reproducibly first).
    :param inputs: the function's inputs, keyed by identifier (``{"kind", "optional", "multiple"}``).
    :param outputs: the function's outputs, keyed by identifier (``{"kind", "multiple"}``).
    :param description: Markdown description file.
    :param permissions: ``{"public": bool, "authorized_ids": [...]}``.
    :param metadata: string metadata of the function.
    """

    template_fields: Sequence[str] = (
        "substra_conn_id",
        "name",
        "archive",
        "inputs",
        "outputs",
        "description",
        "permissions",
        "metadata",
    )

    def __init__(
        self,
        *,
        name: str,
        archive: str,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        description: str | None = None,
        permissions: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.name = name
        self.archive = archive
        self.inputs = inputs
        self.outputs = outputs
        self.description = description
        self.permissions = permissions
        self.metadata = metadata

    @surfaces_errors
    def execute(self, context: Context) -> dict[str, Any]:
        """Register (or find) the function; return its key."""
        try:
            result = steps.register_function(
                self.hook.get_conn(),
                name=self.name,
                archive=self.archive,
                inputs=self.inputs,
                outputs=self.outputs,
                description=self.description,
                permissions=self.permissions,
                metadata=self.metadata,
            )
        finally:
            self._close()
        self.log.info("Function %s %r %s", result.function_key, self.name, "created" if result.created else "found")
        return to_jsonable(result.to_dict())


class SubstraAddComputePlanOperator(SubstraBaseOperator):
    """Submit a compute plan (idempotently), then optionally wait for it, blocking or deferred.

    The run key is ``compute_plan_key``, else the spec's ``key``, else derived from the DAG id,
    run id and task id (:func:`derive_compute_plan_key`). A retry or a cleared task finds the plan
    its run already submitted while it runs or once it is DONE (and only adds missing tasks); after
    a FAILED or CANCELED plan it submits the next attempt (``on_failed="retry"``) or fails
    (``on_failed="fail"``). The attempt's key and its "See in Substra" link are pushed to XCom and
    logged before waiting. Returns the key of the attempt waited for.

    :param compute_plan: a ComputePlanSpec dict (``name``, ``tasks``, optional ``key``, ``tag``, ``metadata``).
    :param compute_plan_key: the run key to use (attempt 1's plan key).
    :param batch_size: tasks per registration request.
    :param wait_for_completion: wait until the plan is done (fail if it fails or is canceled).
    :param polling_period_seconds: seconds between two status requests while waiting.
    :param timeout: seconds to wait at most (None: no limit).
    :param deferrable: wait in the triggerer instead of holding a worker slot.
    :param cancel_on_kill: cancel the plan when the task is stopped while waiting: killed while it
        blocks, or marked failed (itself or its DAG run) while deferred. A triggerer restart and a
        Clear of the deferred task leave it running (the new try waits for the same plan).
    :param on_failed: ``"retry"`` (default): a try after a failed or canceled plan submits the next
        attempt; ``"fail"``: it fails, naming the plan and its failed task.
    """

    template_fields: Sequence[str] = ("substra_conn_id", "compute_plan", "compute_plan_key")
    template_fields_renderers = {"compute_plan": "json"}
    operator_extra_links = (SubstraComputePlanLink(),)

    def __init__(
        self,
        *,
        compute_plan: Mapping[str, Any] | Any,
        compute_plan_key: str | None = None,
        batch_size: int = 500,
        wait_for_completion: bool = True,
        polling_period_seconds: float = 10.0,
        timeout: float | None = None,
        deferrable: bool = default_deferrable(),
        cancel_on_kill: bool = True,
        on_failed: str = "retry",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_failed not in steps.ON_FAILED:
            raise ValueError(f"on_failed={on_failed!r}: expected one of {', '.join(steps.ON_FAILED)}")
        self.on_failed = on_failed
        self.compute_plan = compute_plan
        self.compute_plan_key = compute_plan_key
        self.batch_size = batch_size
        self.wait_for_completion = wait_for_completion
        self.polling_period_seconds = polling_period_seconds
        self.timeout = timeout
        self.deferrable = deferrable
        self.cancel_on_kill = cancel_on_kill
        self._submitted_key: str | None = None

    def plan_spec(self, context: Context) -> dict[str, Any]:
        """The rendered spec as a dict, with its run key (attempt 1's key)."""
        spec = self.compute_plan
        if hasattr(spec, "model_dump") and not isinstance(spec, Mapping):
            spec = spec.model_dump(by_alias=False, exclude_unset=True)
        if not isinstance(spec, Mapping):
            raise TypeError(f"compute_plan must be a ComputePlanSpec dict, got {type(spec).__name__}")
        key = steps.given_compute_plan_key(spec, self.compute_plan_key)
        if key is None:
            ti = context["ti"]
            key = derive_compute_plan_key(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1))
        return {**spec, "key": key}

    @surfaces_errors
    def execute(self, context: Context) -> str:
        """Submit (or find) the run's current attempt, publish its key and link, then wait as configured."""
        spec = self.plan_spec(context)
        try:
            client = self.hook.get_conn()
            try:
                submitted = steps.submit_compute_plan(
                    client, spec, batch_size=self.batch_size, on_failed=self.on_failed
                )
            except FutureFailureError as ended:  # on_failed="fail" and the run's plan ended: so would a retry
                raise AirflowFailException(str(ended)) from None
            key = submitted.compute_plan_key
            self._submitted_key = key
            url = self.hook.compute_plan_url(key)
            self.log.info(
                "Compute plan %s (attempt %d) %s, %d task(s) added now: %s",
                key,
                submitted.attempt,
                "created" if submitted.created else f"found, {submitted.status or 'just created'}",
                len(submitted.added_task_keys),
                url,
            )
            SubstraComputePlanLink.persist(context, compute_plan_key=key, url=url)
            if not self.wait_for_completion:
                return key
            if self.deferrable:
                self._defer_unless_finished(client, key, context)
                return key
            self.log.info("Waiting for compute plan %s (every %ss)", key, self.polling_period_seconds)
            try:
                steps.wait_compute_plan(
                    client,
                    key,
                    timeout=self.timeout,
                    polling_period=self.polling_period_seconds,
                    on_progress=self._log_progress,
                )
            except (FutureFailureError, FutureTimeoutError) as error:
                raise _fail_on_wait_error(error, self.on_failed) from None
        finally:
            self._close()
        self.log.info("Compute plan %s is done", key)
        return key

    def _defer_unless_finished(self, client: Any, key: str, context: Context) -> None:
        """Look once (a rerun may find the plan already finished); otherwise hand the wait to the triggerer."""
        try:
            steps.wait_compute_plan(client, key, timeout=0, polling_period=0, on_progress=self._log_progress)
            self.log.info("Compute plan %s is already done", key)
            return
        except FutureFailureError as error:
            raise _fail_on_wait_error(error, self.on_failed) from None
        except FutureTimeoutError:
            pass  # still running: defer
        end_time = None if self.timeout is None else time.time() + self.timeout
        ti = context["ti"]
        # which try waits for the plan: the trigger cancels it only for a stopped try that is still the latest
        ti.xcom_push(key=WAIT_TRY_XCOM_KEY, value=int(getattr(ti, "try_number", 0) or 0))
        self.log.info("Deferring the wait for compute plan %s to the triggerer", key)
        self.defer(
            trigger=SubstraComputePlanTrigger(
                key,
                self.substra_conn_id,
                end_time=end_time,
                polling_period_seconds=self.polling_period_seconds,
                cancel_on_kill=self.cancel_on_kill,
            ),
            method_name="execute_complete",
            kwargs={"compute_plan_key": key},
            timeout=None if self.timeout is None else dt.timedelta(seconds=self.timeout + DEFERRAL_GRACE_SECONDS),
        )

    def _deferred_key(self, context: Context) -> str:
        """The key of the attempt this try deferred on, when the resume did not bring it (``dag.test()``
        replaces the deferral's kwargs by the event): the key this try pushed to XCom, else the run key."""
        ti = context["ti"]
        pushed = ti.xcom_pull(task_ids=ti.task_id, key=KEY_XCOM_KEY) if hasattr(ti, "xcom_pull") else None
        return str(pushed) if pushed else self.plan_spec(context)["key"]

    def _log_progress(self, progress: Any) -> None:
        """Log a progress report of the wait (the wait decides when there is one)."""
        self.log.info("%s", progress.describe())

    @surfaces_errors
    def execute_complete(self, context: Context, event: Any = None, compute_plan_key: str | None = None) -> str:
        """Resume after the trigger fired: check that the event is about the plan deferred on, and that it succeeded."""
        key = compute_plan_key or self._deferred_key(context)
        try:
            payload = check_event(event, kind=COMPUTE_PLAN, key=key)
        except ValueError as error:
            raise AirflowException(str(error)) from None
        status = payload["status"]
        if status == SUCCESS:
            self.log.info("Compute plan %s is done", key)
            return key
        final = event_fails_for_good(payload)
        if final is not None:
            raise final
        message = payload.get("message") or f"compute plan {key}: {status}"
        if status in (FAILED, CANCELED):
            raise AirflowFailException(message) if self.on_failed == "fail" else AirflowException(message)
        if status == TIMEOUT:
            raise AirflowException(message)
        raise AirflowException(f"waiting for compute plan {key} failed: {message}")

    def on_kill(self) -> None:
        """Cancel the plan this task submitted (``cancel_on_kill``)."""
        key = self._submitted_key
        if not (self.cancel_on_kill and key):
            return
        try:
            canceled = steps.cancel_compute_plan(self.hook.get_conn(), key)
            self.log.info("Task killed: compute plan %s %s", key, "canceled" if canceled else "was already finished")
        except Exception as error:  # on_kill must not raise
            self.log.warning("Task killed, but compute plan %s could not be canceled: %s", key, error)


class SubstraGetPerformancesOperator(SubstraBaseOperator):
    """Return a compute plan's performances: one JSON row per task output (worker, rank, identifier, value...).

    :param compute_plan_key: the plan.
    """

    template_fields: Sequence[str] = ("substra_conn_id", "compute_plan_key")
    operator_extra_links = (SubstraComputePlanLink(),)

    def __init__(self, *, compute_plan_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.compute_plan_key = compute_plan_key

    @surfaces_errors
    def execute(self, context: Context) -> list[dict[str, Any]]:
        """Fetch the performance rows."""
        key = str(self.compute_plan_key)
        try:
            rows = steps.fetch_performances(self.hook.get_conn(), key)
            SubstraComputePlanLink.persist(context, compute_plan_key=key, url=self.hook.compute_plan_url(key))
        finally:
            self._close()
        self.log.info("Compute plan %s: %d performance(s)", key, len(rows))
        return to_jsonable(rows)


class SubstraCancelComputePlanOperator(SubstraBaseOperator):
    """Cancel a compute plan unless it already finished; return ``{"compute_plan_key", "canceled"}``.

    :param compute_plan_key: the plan.
    """

    template_fields: Sequence[str] = ("substra_conn_id", "compute_plan_key")

    def __init__(self, *, compute_plan_key: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.compute_plan_key = compute_plan_key

    @surfaces_errors
    def execute(self, context: Context) -> dict[str, Any]:
        """Cancel the plan (a plan already finished is left as it is)."""
        key = str(self.compute_plan_key)
        try:
            canceled = steps.cancel_compute_plan(self.hook.get_conn(), key)
        finally:
            self._close()
        self.log.info("Compute plan %s %s", key, "canceled" if canceled else "was already finished")
        return {"compute_plan_key": key, "canceled": bool(canceled)}


class SubstraDownloadModelOperator(SubstraBaseOperator):
    """Save a model to a folder of the worker, by model key or as an output of a task (promote a model).

    Returns the file path. A channel whose ``model_export_enabled`` is off (a default deployment)
    refuses the download: the task fails for good, the message naming that setting.

    :param destination_folder: folder to save the model in (created if needed).
    :param model_key: the model; or
    :param task_key: the task whose output ``identifier`` (default ``"model"``) is saved.
    """

    template_fields: Sequence[str] = ("substra_conn_id", "destination_folder", "model_key", "task_key", "identifier")

    def __init__(
        self,
        *,
        destination_folder: str,
        model_key: str | None = None,
        task_key: str | None = None,
        identifier: str = "model",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.destination_folder = destination_folder
        self.model_key = model_key
        self.task_key = task_key
        self.identifier = identifier

    @surfaces_errors
    def execute(self, context: Context) -> str:
        """Download the model and return its path."""
        try:
            path = steps.download_model(
                self.hook.get_conn(),
                self.destination_folder,
                model_key=self.model_key or None,
                task_key=self.task_key or None,
                identifier=self.identifier,
            )
        finally:
            self._close()
        self.log.info("Model saved to %s", path)
        return path
