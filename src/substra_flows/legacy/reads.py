"""Reading 0.x tuples back: get_*tuple / list_*tuple from 1.0 tasks, models and performances.

A listing is a few bulk requests, not one per tuple: the tasks of a kind (a metadata filter), the
models of done tasks (``/model/?compute_task_key=...`` in chunks; the output assets only for
composite traintuples, whose two models the model list cannot tell apart), each plan once, each
dataset once, and the performances of each plan once for testtuples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from substra_flows import SubstraClient, models
from substra_flows.exceptions import SubstraError
from substra_flows.legacy import keys, metadata, views
from substra_flows.legacy.catalog import Catalog

logger = logging.getLogger("substra_flows.legacy")

CHUNK = 100  # keys per filtered request (keeps URLs short)
LOG_LINES = 200


def _chunks(items: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield list(items[start : start + CHUNK])


def _done(task: models.Task) -> bool:
    return str(getattr(task.status, "value", task.status)) == models.ComputeTaskStatus.done.value


def _failed(task: models.Task) -> bool:
    return str(getattr(task.status, "value", task.status)) == models.ComputeTaskStatus.failed.value


class TupleReader:
    """Builds 0.x tuple views for one request (its caches live as long as the reader)."""

    def __init__(self, client: SubstraClient, catalog: Catalog) -> None:
        self.client = client
        self.catalog = catalog
        self._plans: dict[str, models.ComputePlan] = {}
        self._models: dict[tuple[str, str], Optional[models.Model]] = {}
        self._tasks: dict[str, models.Task] = {}
        self._perfs: dict[str, float] = {}
        self._perf_plans: set[str] = set()

    # -- entry points ----------------------------------------------------------------------------

    def get(self, kind: str, key: str) -> dict[str, Any]:
        """One tuple (with its failure log when it failed)."""
        task = self.catalog.task(key, (kind,))
        return self.views(kind, [task], with_logs=True)[0]

    def of_kind(self, kind: str, extra_filters: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
        """Every tuple of a kind visible to this organization, oldest first."""
        return self.views(kind, self.tasks_of_kind(kind, extra_filters))

    def tasks_of_kind(self, kind: str, extra_filters: Optional[dict[str, Any]] = None) -> list[models.Task]:
        """The 1.0 tasks of a 0.x kind."""
        filters = {"metadata": [{"key": metadata.KIND, "type": "is", "value": kind}], **(extra_filters or {})}
        tasks = self.client.list_task(filters=filters, order_by="creation_date", ascending=True)
        for task in tasks:
            self._tasks[task.key] = task
        return tasks

    def views(self, kind: str, tasks: Sequence[models.Task], with_logs: bool = False) -> list[dict[str, Any]]:
        """The 0.x views of tasks of one kind."""
        if kind == metadata.TESTTUPLE:
            return self._testtuple_views(tasks, with_logs)
        self._prefetch_models(tasks)
        build = {
            metadata.TRAINTUPLE: self._traintuple,
            metadata.AGGREGATETUPLE: self._aggregatetuple,
            metadata.COMPOSITE_TRAINTUPLE: self._composite,
        }[kind]
        return [build(task, self._log(task) if with_logs else "") for task in tasks]

    # -- shared pieces ---------------------------------------------------------------------------

    def plan_id(self, task: models.Task) -> str:
        """The 0.x ``compute_plan_id`` of a task: "" for a tuple added outside any compute plan."""
        plan = self._plans.get(task.compute_plan_key)
        if plan is None:
            plan = self._plans[task.compute_plan_key] = self.client.get_compute_plan(task.compute_plan_key)
        return "" if plan.metadata.get(metadata.KIND) == metadata.STANDALONE_PLAN else plan.key

    def _log(self, task: models.Task) -> str:
        if not _failed(task):
            return ""
        return self.client.log_tail(task.key, LOG_LINES) or ""

    def _opener_checksum(self, task: models.Task) -> str:
        datasets = views.asset_inputs(task, "opener")
        if not datasets:
            return ""
        try:
            return self.catalog.dataset_model(datasets[0]).opener.checksum
        except SubstraError as error:
            logger.debug("no opener checksum for dataset %s: %s", datasets[0], error)
            return ""

    def _prefetch_models(self, tasks: Sequence[models.Task]) -> None:
        """Load the models the views will show: the tasks' own outputs and their parents'."""
        single: set[str] = set()
        composite: set[str] = set()
        for task in tasks:
            if _done(task):  # a task has models only once done
                kind = task.metadata.get(metadata.KIND)
                (composite if kind == metadata.COMPOSITE_TRAINTUPLE else single).add(task.key)
            for ref in task.inputs:
                if ref.parent_task_key:
                    target = single if ref.parent_task_output_identifier == "model" else composite
                    target.add(ref.parent_task_key)
        wanted = sorted(k for k in single if (k, "model") not in self._models)
        for chunk in _chunks(wanted):
            found = self.client.list_model(filters={"compute_task_key": chunk})
            by_task = {m.compute_task_key: m for m in found}
            for key in chunk:
                self._models[(key, "model")] = by_task.get(key)
        for key in sorted(composite):
            if (key, "local") not in self._models:
                self._load_outputs(key)

    def _load_outputs(self, task_key: str) -> None:
        self._models[(task_key, "local")] = self._models[(task_key, "shared")] = None
        for output in self.client.list_task_output_assets(task_key):
            if isinstance(output.asset, models.Model):
                self._models[(task_key, output.identifier)] = output.asset

    def model(self, task_key: str, identifier: str) -> Optional[models.Model]:
        """The model a task produced under ``identifier`` (None while it does not exist)."""
        if (task_key, identifier) not in self._models:
            if identifier == "model":
                found = self.client.list_model(filters={"compute_task_key": [task_key]})
                self._models[(task_key, "model")] = found[0] if found else None
            else:
                self._load_outputs(task_key)
        return self._models.get((task_key, identifier))

    def _in_model(self, ref: models.InputRef) -> dict[str, str]:
        key = ref.parent_task_key or ""
        return views.in_model_ref(key, self.model(key, ref.parent_task_output_identifier or "model"))

    # -- train tuples ------------------------------------------------------------------------------

    def _traintuple(self, task: models.Task, log: str) -> dict[str, Any]:
        return {
            **views.common_tuple_fields(task, self.plan_id(task), log),
            "algo": views.algo_ref(task.function),
            "dataset": views.tuple_dataset(task, self._opener_checksum(task)),
            "in_models": [self._in_model(r) for r in views.inputs_of(task, "models")],
            "out_model": views.model_ref(self.model(task.key, "model")) if _done(task) else None,
            "permissions": views.output_permissions(task, "model"),
        }

    def _aggregatetuple(self, task: models.Task, log: str) -> dict[str, Any]:
        return {
            **views.common_tuple_fields(task, self.plan_id(task), log),
            "algo": views.algo_ref(task.function),
            "in_models": [self._in_model(r) for r in views.inputs_of(task, "models")],
            "out_model": views.model_ref(self.model(task.key, "model")) if _done(task) else None,
            "permissions": views.output_permissions(task, "model"),
            "worker": task.worker,
        }

    def _composite(self, task: models.Task, log: str) -> dict[str, Any]:
        head = views.inputs_of(task, "local")
        trunk = views.inputs_of(task, "shared")
        done = _done(task)
        head_model = self.model(task.key, "local") if done else None
        return {
            **views.common_tuple_fields(task, self.plan_id(task), log),
            "algo": views.algo_ref(task.function),
            "dataset": views.tuple_dataset(task, self._opener_checksum(task)),
            "in_head_model": self._in_model(head[0]) if head else None,
            "in_trunk_model": self._in_model(trunk[0]) if trunk else None,
            "out_head_model": {
                "out_model": {"key": head_model.key, "hash": views.file_view(head_model.address)["hash"]}
                if head_model
                else None,
                "permissions": views.output_permissions(task, "local"),
            },
            "out_trunk_model": {
                "out_model": views.model_ref(self.model(task.key, "shared")) if done else None,
                "permissions": views.output_permissions(task, "shared"),
            },
        }

    # -- testtuples --------------------------------------------------------------------------------

    def load_tasks(self, task_keys: Iterable[str]) -> None:
        """Fetch (in chunks) the tasks not seen yet."""
        missing = sorted({k for k in task_keys if k not in self._tasks})
        for chunk in _chunks(missing):
            for task in self.client.list_task(filters={"key": chunk}):
                self._tasks[task.key] = task

    def cached_task(self, key: str) -> Optional[models.Task]:
        """A task this reader has already fetched."""
        return self._tasks.get(key)

    def _perf(self, task: models.Task, single: bool) -> Optional[float]:
        if not _done(task):
            return None
        if single:
            asset = self.client.get_task_output_asset(task.key, "performance").asset
            return float(asset) if isinstance(asset, (int, float)) else None
        if task.compute_plan_key not in self._perf_plans:
            self._perf_plans.add(task.compute_plan_key)
            for row in self.client.get_performances(task.compute_plan_key).rows():
                if row["performance"] is not None:
                    self._perfs[row["task_key"]] = row["performance"]
        return self._perfs.get(task.key)

    def _testtuple_views(self, tasks: Sequence[models.Task], with_logs: bool) -> list[dict[str, Any]]:
        predicts = {t.key: keys.predict_key(t.key) for t in tasks}
        parents = {t.key: t.metadata.get(metadata.TRAINTUPLE_KEY, "") for t in tasks}
        self.load_tasks([*predicts.values(), *(p for p in parents.values() if p)])
        return [
            self._testtuple(t, self._tasks.get(predicts[t.key]), self._tasks.get(parents[t.key]), with_logs)
            for t in tasks
        ]

    def _testtuple(
        self,
        task: models.Task,
        predict: Optional[models.Task],
        parent: Optional[models.Task],
        with_logs: bool,
    ) -> dict[str, Any]:
        # the predict task decides the status until it is done; then the test task does
        status_task = task if predict is None or _done(predict) else predict
        log = self._log(status_task) if with_logs else ""
        view = views.common_tuple_fields(task, self.plan_id(task), log)
        view["status"] = views.task_status(status_task)
        view["rank"] = int(task.metadata.get(metadata.RANK, "0") or 0)
        objective = task.function
        view.update(
            {
                "algo": views.algo_ref(parent.function if parent else None),
                "certified": metadata.is_true(task.metadata, metadata.CERTIFIED),
                "dataset": views.tuple_dataset(task, self._opener_checksum(task), self._perf(task, with_logs)),
                "objective": {
                    "key": objective.key if objective else "",
                    "hash": objective.key if objective else "",
                    "metrics": views.file_view(objective.archive if objective else None),
                },
                "traintuple_key": parents_key if (parents_key := task.metadata.get(metadata.TRAINTUPLE_KEY)) else "",
                "traintuple_type": parent.metadata.get(metadata.KIND, "") if parent else "",
            }
        )
        return view
