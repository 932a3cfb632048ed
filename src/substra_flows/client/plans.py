"""Compute plans and tasks: idempotent creation in parents-first batches, cancel, reads."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

from substra_flows import exceptions as exc
from substra_flows import models, schemas, waiting
from substra_flows.client._core import ClientCore, _parse
from substra_flows.schemas import check_key
from substra_flows.transport import Safety, is_ambiguous

logger = logging.getLogger("substra_flows")

DEFAULT_BATCH_SIZE = 500

_CONFIRM_CHUNK = 100  # task keys per confirmation GET (keeps the URL well under proxy limits)
#: namespace of the implicit plan that add_task creates for a task given without a plan
IMPLICIT_PLAN_NAMESPACE = uuid.UUID("0b6f5a52-8a4e-4f7e-9a43-5b7c2f1e9d10")


def make_batches(tasks: Sequence[schemas.TaskSpec], auto_batching: bool, batch_size: int) -> list[list]:
    """Split parents-first ordered tasks into ``bulk_create`` batches."""
    if not auto_batching:
        return [list(tasks)] if tasks else []
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise exc.SpecValidationError.for_field("batch_size", batch_size, "must be a positive integer")
    return [list(tasks[i : i + batch_size]) for i in range(0, len(tasks), batch_size)]


def implicit_plan_key(task_key: str) -> str:
    """Key of the plan add_task creates for a task without plan: derived from the task key, so
    a rerun finds the same plan instead of creating another."""
    return str(uuid.uuid5(IMPLICIT_PLAN_NAMESPACE, task_key))


@dataclass(frozen=True)
class PlanSubmission:
    """What :meth:`SubstraClient.submit_compute_plan` did: the plan, whether this call created it
    (False: found from an earlier attempt), and which tasks it registered or found already there."""

    plan: models.ComputePlan
    created: bool
    added_task_keys: list[str] = field(default_factory=list)
    existing_task_keys: list[str] = field(default_factory=list)


class PlanMethods(ClientCore):
    """Compute plans, tasks and models."""

    # -- compute plans and tasks -------------------------------------------------------------

    def add_compute_plan(
        self,
        data: Union[dict, schemas.ComputePlanSpec],
        auto_batching: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> models.ComputePlan:
        """Create a plan, then its tasks in parents-first batches; safe to call again.

        The plan key is the client's (``data["key"]`` or a new uuid4): if the plan already
        exists it is reused, and batches already applied are skipped.
        """
        return self.submit_compute_plan(data, auto_batching, batch_size).plan

    def submit_compute_plan(
        self,
        data: Union[dict, schemas.ComputePlanSpec],
        auto_batching: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> PlanSubmission:
        """:meth:`add_compute_plan`, also telling what was created now and what already existed.

        "Existing" means answered 409 and confirmed present, which includes a retry of this
        very call whose first answer was lost.
        """
        spec = self._spec(schemas.ComputePlanSpec, data)
        tasks = spec.task_specs()
        batches = make_batches(tasks, auto_batching, batch_size)
        plan, created = self._create_plan(spec)
        added: list[str] = []
        existing: list[str] = []
        if batches:
            added, existing = self._submit_batches(spec.key, batches)
            plan = self.get_compute_plan(spec.key)
        return PlanSubmission(plan=plan, created=created, added_task_keys=added, existing_task_keys=existing)

    def add_compute_plan_tasks(
        self,
        key: str,
        tasks: Union[dict, list, schemas.UpdateComputePlanTasksSpec],
        auto_batching: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> models.ComputePlan:
        """Add tasks to an existing plan (parents first, in batches); return the updated plan."""
        key = check_key(key, "key")
        if isinstance(tasks, list):
            tasks = {"key": key, "tasks": tasks}
        elif isinstance(tasks, Mapping):
            tasks = {**tasks, "key": key}
        spec = self._spec(schemas.UpdateComputePlanTasksSpec, tasks)
        if spec.key != key:
            raise exc.SpecValidationError.for_field("tasks.key", spec.key, f"differs from the plan key {key}")
        batches = make_batches(spec.task_specs(), auto_batching, batch_size)
        self._submit_batches(key, batches)
        return self.get_compute_plan(key)

    def add_task(self, data: Union[dict, schemas.TaskSpec]) -> str:
        """Create one task; return its key.

        With ``compute_plan_key`` the task joins that plan. Without, a plan named after the task
        is created first, with a key derived from the task key (so a rerun reuses it).
        """
        spec = self._spec(schemas.TaskSpec, data)
        if spec.compute_plan_key is None:
            plan_spec = schemas.ComputePlanSpec(key=implicit_plan_key(spec.key), name=spec.key)
            self._create_plan(plan_spec)
            spec = spec.model_copy(update={"compute_plan_key": plan_spec.key})
        self._submit_batches(spec.compute_plan_key, [[spec]])  # type: ignore[arg-type]
        return spec.key

    def update_compute_plan(self, key: str, name: str) -> None:
        """Rename a compute plan."""
        self._update("compute_plan", key, self._spec(schemas.UpdateComputePlanSpec, {"name": name}))

    def cancel_compute_plan(self, key: str) -> None:
        """Cancel a plan. Idempotent: a plan already canceled counts as success.

        The server answers 500 to a second cancel, so an ambiguous failure (timeout, 5xx) is
        resolved by reading the plan's status rather than by blindly resending.
        """
        key = check_key(key, "key")
        url = self._transport.url("compute_plan", key, "cancel")
        resent = False
        while True:
            try:
                self._transport.request_json("POST", url, safety=Safety.CONNECT_ONLY, key=key)
                return
            except exc.SubstraError as error:
                if not (is_ambiguous(error) or isinstance(error, exc.InternalServerError)):
                    raise
                status = self._settle_cancel(key)
                if status == models.ComputePlanStatus.canceled.value:
                    logger.info("compute plan %s is canceled (after %s)", key, type(error).__name__)
                    return
                finished = status in (models.ComputePlanStatus.done.value, models.ComputePlanStatus.failed.value)
                if finished or resent or isinstance(error, exc.InternalServerError):
                    error.msg = f"{error.msg} (plan status: {status})"
                    error.args = (error.msg,)
                    raise error from None
                logger.warning("cancel of compute plan %s not confirmed (%s); sending it again", key, error)
                resent = True

    def _settle_cancel(self, key: str, attempts: int = 3, pause: float = 1.0) -> str:
        """Read the plan status a few times: cancellation reaches the database asynchronously."""
        status = ""
        for i in range(attempts):
            status = waiting.status_of(self.get_compute_plan(key))
            if status in {s.value for s in models.ComputePlanStatus} - {
                models.ComputePlanStatus.doing.value,
                models.ComputePlanStatus.created.value,
            }:
                return status
            if i + 1 < attempts:
                self._sleep(pause)
        return status

    def _create_plan(self, spec: schemas.ComputePlanSpec) -> tuple[models.ComputePlan, bool]:
        """POST the plan; a 409 on our own key means it exists already: fetch it.

        Returns the plan and whether this call created it.
        """
        try:
            body = self._transport.request_json(
                "POST",
                self._transport.url("compute_plan"),
                json_body=spec.to_wire(),
                safety=Safety.SAFE,
                key=spec.key,
            )
            return _parse(self._models.ComputePlan, body, "POST /compute_plan/"), True
        except exc.AlreadyExists:
            plan = self.get_compute_plan(spec.key)
            if plan.name != spec.name:
                logger.warning(
                    "compute plan %s already exists under another name (%r, not %r); reusing it",
                    spec.key,
                    plan.name,
                    spec.name,
                )
            else:
                logger.info("compute plan %s already exists; reusing it", spec.key)
            return plan, False

    def _submit_batches(self, plan_key: str, batches: Iterable[list[schemas.TaskSpec]]) -> tuple[list[str], list[str]]:
        """POST each batch to bulk_create; a 409 is checked to mean "already applied".

        Returns the task keys created now and those found already registered.
        """
        url = self._transport.url("task", "bulk_create")
        added: list[str] = []
        existing: list[str] = []
        pending = list(batches)
        n = 0
        while pending:
            batch = pending.pop(0)
            n += 1
            wire = [{**t.to_wire(), "compute_plan_key": plan_key} for t in batch]
            keys = [t["key"] for t in wire]
            try:
                # all-or-nothing: a 200 means every task of the batch was registered
                self._transport.request_ok("POST", url, json_body={"tasks": wire}, safety=Safety.SAFE, key=plan_key)
                added.extend(keys)
                logger.debug("compute plan %s: batch %d (%d tasks) created", plan_key, n, len(batch))
            except exc.AlreadyExists as error:
                self._confirm_batch(plan_key, keys, error)
                existing.extend(keys)
                logger.info("compute plan %s: batch %d (%d tasks) was already created", plan_key, n, len(batch))
            except exc.HTTPError as error:
                if error.status_code != 413:
                    raise
                # over the orchestrator's message limit (4 MiB): send the two halves, parents first
                if len(batch) == 1:
                    error.msg = f"{error.msg} (task {keys[0]} alone is over the server's request size limit)"
                    error.args = (error.msg,)
                    raise
                half = len(batch) // 2
                pending[:0] = [batch[:half], batch[half:]]
                logger.info("compute plan %s: batch of %d tasks too large (413); splitting it", plan_key, len(batch))
        return added, existing

    def _confirm_batch(self, plan_key: str, keys: list[str], error: exc.AlreadyExists) -> None:
        """After a 409, check that every task of the batch is in the plan (batches are
        all-or-nothing); otherwise the keys collide with other tasks: re-raise, explained."""
        found: set[str] = set()
        for i in range(0, len(keys), _CONFIRM_CHUNK):
            chunk = keys[i : i + _CONFIRM_CHUNK]
            items = self._transport.list_all(
                self._transport.url("task"),
                params={"compute_plan_key": plan_key, "key": ",".join(chunk), "page_size": len(chunk)},
            )
            found.update(item["key"] for item in items if isinstance(item, dict) and isinstance(item.get("key"), str))
        missing = [k for k in keys if k not in found]
        if missing:
            raise exc.AlreadyExists(
                f"{error}; {len(missing)} of the {len(keys)} task keys of this batch are not in compute plan "
                f"{plan_key} (e.g. {missing[:3]}): they collide with existing tasks, or the batch differs "
                "from the one first submitted",
                status_code=error.status_code,
                key=missing,
                method=error.method,
                url=error.url,
                detail=error.detail,
                errors=error.errors,
            ) from None

    def get_compute_plan(self, key: str) -> models.ComputePlan:
        """``GET /compute_plan/{key}/``."""
        return self._get("compute_plan", key, self._models.ComputePlan)

    def get_task(self, key: str) -> models.Task:
        """``GET /task/{key}/``."""
        return self._get("task", key, self._models.Task)

    def get_model(self, key: str) -> models.Model:
        """``GET /model/{key}/``."""
        return self._get("model", key, self._models.Model)


    def list_compute_plan(
        self,
        filters: dict | None = None,
        order_by: str | None = "creation_date",
        ascending: bool = False,
        *,
        page_size: int | None = None,
    ) -> list[models.ComputePlan]:
        """List compute plans (filters: key, name, owner, tag, status, function_key, creator, metadata)."""
        return self._list("compute_plan", self._models.ComputePlan, filters, order_by, ascending, page_size)

    def list_task(
        self,
        filters: dict | None = None,
        order_by: str | None = "creation_date",
        ascending: bool = False,
        *,
        page_size: int | None = None,
    ) -> list[models.Task]:
        """List tasks (filters: key, owner, worker, rank, tag, status, compute_plan_key,
        function_key, metadata)."""
        return self._list("task", self._models.Task, filters, order_by, ascending, page_size)

    def list_model(
        self,
        filters: dict | None = None,
        ascending: bool = False,
        *,
        order_by: str | None = "creation_date",
        page_size: int | None = None,
    ) -> list[models.Model]:
        """List models (filters: key, owner, compute_task_key)."""
        return self._list("model", self._models.Model, filters, order_by, ascending, page_size)

