"""Compute plans of tuples: add, update (append tuples), cancel, get, list.

``add_compute_plan`` derives the plan key from the creator and the whole spec, so sending the same
spec again finds the plan it created instead of starting another (0.x had no ``exist_ok`` here and
started a new plan each time; change the tag or the metadata to get a new one on purpose). Every
tuple id becomes a task key derived from the plan key and the id, so ``update_compute_plan`` can
reference tuples of earlier calls by id, and sending the same update twice adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from substra_flows import models
from substra_flows.exceptions import NotFound
from substra_flows.legacy import keys, listing, metadata, specs, translate, translate_plan, views
from substra_flows.legacy.catalog import OrganizationRoom
from substra_flows.legacy.exceptions import not_found
from substra_flows.legacy.reads import CHUNK

DEFAULT_NAME = "0.x compute plan"


class PlanRegistry(OrganizationRoom):
    """0.x compute plans for one organization (``creator``)."""

    def _plan(self, compute_plan_id: Any, field: str = "compute_plan_id") -> models.ComputePlan:
        key = specs.legacy_key_for(compute_plan_id, field)
        try:
            plan = self.client.get_compute_plan(key)
        except NotFound:
            raise not_found("compute plan", key) from None
        if plan.metadata.get(metadata.KIND) != metadata.COMPUTE_PLAN:
            raise not_found("compute plan", key, "it is not a compute plan of the 0.x surface")
        return plan

    def _tasks(self, plan_keys: Sequence[str]) -> list[models.Task]:
        tasks: list[models.Task] = []
        for start in range(0, len(plan_keys), CHUNK):
            chunk = list(plan_keys[start : start + CHUNK])
            tasks.extend(
                self.client.list_task(filters={"compute_plan_key": chunk}, order_by="creation_date", ascending=True)
            )
        return tasks

    def view(self, plan: models.ComputePlan, id_to_key: Optional[dict[str, str]] = None) -> dict[str, Any]:
        """A plan's 0.x view (``id_to_key``: every tuple id of the plan unless given)."""
        tasks = self._tasks([plan.key])
        if id_to_key is None:
            id_to_key = {t.metadata[metadata.TUPLE_ID]: t.key for t in tasks if metadata.TUPLE_ID in t.metadata}
        return views.plan_view(plan, tasks, id_to_key)

    @staticmethod
    def _flatten(translated: Sequence[translate.Translated]) -> list[dict[str, Any]]:
        return [task for t in translated for task in t.tasks]

    def add(self, data: Any) -> dict[str, Any]:
        """add_compute_plan."""
        method = "add_compute_plan"
        spec = specs.parse(specs.ComputePlanData, data, method)
        user = metadata.check_user_metadata(spec.metadata, f"{method}.metadata")
        plan_key = keys.derive_key("compute-plan", self.creator, spec.model_dump(mode="json"))
        translated = translate_plan.compute_plan(
            plan_key=plan_key,
            spec=spec,
            creator=self.creator,
            resolver=self.catalog,
            clean_models=spec.clean_models,
            method=method,
        )
        plan_spec: dict[str, Any] = {
            "key": plan_key,
            "name": spec.tag or DEFAULT_NAME,
            "metadata": {
                **user,
                metadata.KIND: metadata.COMPUTE_PLAN,
                metadata.CLEAN_MODELS: metadata.flag(spec.clean_models),
            },
            "tasks": self._flatten(translated),
        }
        if spec.tag:
            plan_spec["tag"] = spec.tag
        plan = self.client.add_compute_plan(plan_spec)
        return self.view(plan, {t.legacy_id: t.key for t in translated if t.legacy_id})

    def update(self, compute_plan_id: Any, data: Any) -> dict[str, Any]:
        """update_compute_plan: append tuples (which may reference the plan's tuples by id)."""
        method = "update_compute_plan"
        plan = self._plan(compute_plan_id)
        spec = specs.parse(specs.PlanTuples, data, method)
        translated = translate_plan.compute_plan(
            plan_key=plan.key,
            spec=spec,
            creator=self.creator,
            resolver=self.catalog,
            clean_models=metadata.is_true(plan.metadata, metadata.CLEAN_MODELS),
            method=method,
        )
        tasks = self._flatten(translated)
        if tasks:
            plan = self.client.add_compute_plan_tasks(plan.key, tasks)
        return self.view(plan, {t.legacy_id: t.key for t in translated if t.legacy_id})

    def cancel(self, compute_plan_id: Any) -> dict[str, Any]:
        """cancel_compute_plan: the canceled plan."""
        plan = self._plan(compute_plan_id)
        self.client.cancel_compute_plan(plan.key)
        return self.view(self.client.get_compute_plan(plan.key))

    def get(self, compute_plan_id: Any) -> dict[str, Any]:
        """get_compute_plan."""
        return self.view(self._plan(compute_plan_id, "compute_plan_key"))

    def list(self, filters: Any, is_complex: bool) -> Any:
        """list_compute_plan: the plans made through the 0.x surface."""
        groups = listing.parse(filters, "compute_plan", views.FIELDS["compute_plan"])
        plans = self.client.list_compute_plan(
            filters={"metadata": [{"key": metadata.KIND, "type": "is", "value": metadata.COMPUTE_PLAN}]},
            order_by="creation_date",
            ascending=True,
        )
        by_plan: dict[str, list[models.Task]] = {p.key: [] for p in plans}
        for task in self._tasks([p.key for p in plans]):
            by_plan[task.compute_plan_key].append(task)
        found = []
        for plan in plans:
            tasks = by_plan[plan.key]
            ids = {t.metadata[metadata.TUPLE_ID]: t.key for t in tasks if metadata.TUPLE_ID in t.metadata}
            found.append(views.plan_view(plan, tasks, ids))
        return listing.apply(found, "compute_plan", groups, is_complex)
