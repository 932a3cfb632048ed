"""add_traintuple, add_aggregatetuple, add_composite_traintuple, add_testtuple: one tuple at a time.

The key of a standalone tuple is derived from what 0.x identified it by (see :mod:`keys`), so the
same spec sent twice names the same task: ``AlreadyExists`` (0.x's rule), or the existing tuple
with ``exist_ok=True``. Where it goes follows 0.x's ``rank`` / ``compute_plan_id`` rules:

- neither: a tuple outside any compute plan (1.0 puts it in a plan of its own, which the 0.x
  views hide: its ``compute_plan_id`` is "");
- ``rank=0`` without ``compute_plan_id``: the tuple starts a new compute plan;
- both: the tuple joins that compute plan;
- ``compute_plan_id`` without ``rank``, or a rank other than 0 without ``compute_plan_id``: the
  0.x errors.

A testtuple joins its traintuple's plan when this organization owns it (only a plan's owner may add
tasks to it in 1.0), and a plan of its own otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

from substra_flows import models
from substra_flows.exceptions import NotFound
from substra_flows.legacy import keys, metadata, specs, translate
from substra_flows.legacy.catalog import OrganizationRoom, tuple_info
from substra_flows.legacy.exceptions import already_exists, invalid_request
from substra_flows.legacy.reads import TupleReader

WHAT = {
    metadata.TRAINTUPLE: "a traintuple with the same algo, data and in models",
    metadata.AGGREGATETUPLE: "an aggregatetuple with the same algo and in models",
    metadata.COMPOSITE_TRAINTUPLE: "a composite traintuple with the same algo, data and in models",
    metadata.TESTTUPLE: "a testtuple with the same traintuple, objective and test data",
}


class TupleRegistry(OrganizationRoom):
    """Standalone tuples for one organization (``creator``)."""

    # -- shared steps ---------------------------------------------------------------------------------

    def _existing(self, kind: str, key: str, exist_ok: bool) -> Optional[dict[str, Any]]:
        try:
            self.client.get_task(key)
        except NotFound:
            return None
        if not exist_ok:
            raise already_exists(WHAT[kind], key)
        return TupleReader(self.client, self.catalog).get(kind, key)

    def _placement(self, rank: Optional[int], compute_plan_id: Optional[str], key: str, method: str) -> tuple[str, Any]:
        """(plan key, spec of a plan to create or None), by 0.x's rank / compute_plan_id rules."""
        if rank is None and compute_plan_id is None:
            plan_key = keys.standalone_plan_key(key)
            return plan_key, {"name": f"0.x tuple {key}", "metadata": {metadata.KIND: metadata.STANDALONE_PLAN}}
        if rank is None:
            raise invalid_request(f"{method}: invalid inputs, a ComputePlan should have a rank")
        if compute_plan_id is None:
            if rank != 0:
                raise invalid_request(f"{method}: invalid inputs, a new ComputePlan should have a rank 0")
            plan_key = keys.new_plan_key(key)
            meta = {metadata.KIND: metadata.COMPUTE_PLAN, metadata.CLEAN_MODELS: metadata.flag(False)}
            return plan_key, {"name": f"0.x compute plan started by {key}", "metadata": meta}
        try:
            plan = self.client.get_compute_plan(compute_plan_id)
        except NotFound:
            raise invalid_request(
                f"{method}.compute_plan_id: cannot find the ComputePlanID {compute_plan_id}"
            ) from None
        if plan.metadata.get(metadata.KIND) != metadata.COMPUTE_PLAN:
            raise invalid_request(f"{method}.compute_plan_id={compute_plan_id}: not a compute plan of the 0.x surface")
        return plan.key, None

    def _submit(self, plan_key: str, new_plan: Any, tasks: list[dict[str, Any]]) -> None:
        if new_plan is not None:
            self.client.add_compute_plan({"key": plan_key, **new_plan, "tasks": tasks})
        else:
            self.client.add_compute_plan_tasks(plan_key, tasks)

    def _parents(self, parent_keys: Sequence[str], field: str) -> list[translate.TupleInfo]:
        return [self.catalog.tuple(k, f"{field}.{i}") for i, k in enumerate(parent_keys)]

    def _finish(self, kind: str, key: str, plan_key: str, new_plan: Any, result: translate.Translated) -> dict:
        self._submit(plan_key, new_plan, result.tasks)
        return TupleReader(self.client, self.catalog).get(kind, key)

    def _add_train_tuple(
        self,
        kind: str,
        key: str,
        spec: Any,
        exist_ok: bool,
        method: str,
        translation: Callable[[str], translate.Translated],
    ) -> dict[str, Any]:
        """The existing tuple, or a new one placed by the 0.x rank rules (``translation(plan_key)``)."""
        found = self._existing(kind, key, exist_ok)
        if found is not None:
            return found
        plan_key, new_plan = self._placement(spec.rank, spec.compute_plan_id, key, method)
        return self._finish(kind, key, plan_key, new_plan, translation(plan_key))

    # -- the four kinds ---------------------------------------------------------------------------------

    def add_traintuple(self, data: Any, exist_ok: bool) -> dict[str, Any]:
        """add_traintuple."""
        method, kind = "add_traintuple", metadata.TRAINTUPLE
        spec = specs.parse(specs.TraintupleData, data, method)
        user = metadata.check_user_metadata(spec.metadata, f"{method}.metadata")
        algo = self.catalog.algo(spec.algo_key, f"{method}.algo_key")
        dataset = self.catalog.dataset(spec.data_manager_key, f"{method}.data_manager_key")
        translate.check_train_samples(self.catalog, spec.train_data_sample_keys, f"{method}.train_data_sample_keys")
        parents = self._parents(spec.in_models_keys, f"{method}.in_models_keys")
        samples = spec.train_data_sample_keys
        key = keys.derive_key(kind, self.creator, algo.key, dataset.key, sorted(samples), spec.in_models_keys)
        common: dict[str, Any] = {
            "key": key,
            "tag": spec.tag,
            "user_metadata": user,
            "rank": spec.rank,
            "field": method,
        }
        return self._add_train_tuple(
            kind,
            key,
            spec,
            exist_ok,
            method,
            lambda plan_key: translate.traintuple(
                plan_key=plan_key, algo=algo, dataset=dataset, sample_keys=samples, parents=parents, **common
            ),
        )

    def add_aggregatetuple(self, data: Any, exist_ok: bool) -> dict[str, Any]:
        """add_aggregatetuple."""
        method, kind = "add_aggregatetuple", metadata.AGGREGATETUPLE
        spec = specs.parse(specs.AggregatetupleData, data, method)
        user = metadata.check_user_metadata(spec.metadata, f"{method}.metadata")
        algo = self.catalog.algo(spec.algo_key, f"{method}.algo_key")
        parents = self._parents(spec.in_models_keys, f"{method}.in_models_keys")
        key = keys.derive_key(kind, self.creator, algo.key, spec.in_models_keys)
        common: dict[str, Any] = {
            "key": key,
            "tag": spec.tag,
            "user_metadata": user,
            "rank": spec.rank,
            "field": method,
        }
        return self._add_train_tuple(
            kind,
            key,
            spec,
            exist_ok,
            method,
            lambda plan_key: translate.aggregatetuple(
                plan_key=plan_key, algo=algo, worker=spec.worker, parents=parents, **common
            ),
        )

    def add_composite_traintuple(self, data: Any, exist_ok: bool) -> dict[str, Any]:
        """add_composite_traintuple."""
        method, kind = "add_composite_traintuple", metadata.COMPOSITE_TRAINTUPLE
        spec = specs.parse(specs.CompositeTraintupleData, data, method)
        user = metadata.check_user_metadata(spec.metadata, f"{method}.metadata")
        algo = self.catalog.algo(spec.algo_key, f"{method}.algo_key")
        dataset = self.catalog.dataset(spec.data_manager_key, f"{method}.data_manager_key")
        samples = spec.train_data_sample_keys
        translate.check_train_samples(self.catalog, samples, f"{method}.train_data_sample_keys")
        head_key, trunk_key = spec.in_head_model_key, spec.in_trunk_model_key
        head = self.catalog.tuple(head_key, f"{method}.in_head_model_key") if head_key else None
        trunk = self.catalog.tuple(trunk_key, f"{method}.in_trunk_model_key") if trunk_key else None
        key = keys.derive_key(kind, self.creator, algo.key, dataset.key, sorted(samples), head_key, trunk_key)
        common: dict[str, Any] = {
            "key": key,
            "tag": spec.tag,
            "user_metadata": user,
            "rank": spec.rank,
            "field": method,
        }
        return self._add_train_tuple(
            kind,
            key,
            spec,
            exist_ok,
            method,
            lambda plan_key: translate.composite_traintuple(
                plan_key=plan_key,
                creator=self.creator,
                algo=algo,
                dataset=dataset,
                sample_keys=samples,
                head=head,
                trunk=trunk,
                trunk_permissions=spec.out_trunk_model_permissions,
                **common,
            ),
        )

    def add_testtuple(self, data: Any, exist_ok: bool) -> dict[str, Any]:
        """add_testtuple: a predict task and a test task."""
        method, kind = "add_testtuple", metadata.TESTTUPLE
        spec = specs.parse(specs.TesttupleData, data, method)
        user = metadata.check_user_metadata(spec.metadata, f"{method}.metadata")
        objective = self.catalog.objective(spec.objective_key, f"{method}.objective_key")
        parent_task = self.catalog.task(spec.traintuple_key, metadata.TRAIN_KINDS, f"{method}.traintuple_key")
        if str(getattr(parent_task.status, "value", parent_task.status)) == models.ComputeTaskStatus.failed.value:
            raise invalid_request(
                f"{method}: could not register this testtuple, the traintuple {parent_task.key} has a failed status",
                key=parent_task.key,
            )
        parent = tuple_info(parent_task)
        dm, samples, certified = translate.test_data(
            objective, spec.data_manager_key, spec.test_data_sample_keys, method
        )
        dataset = self.catalog.dataset(dm, f"{method}.data_manager_key")
        key = keys.derive_key(kind, self.creator, parent.key, objective.key, dm, sorted(samples))
        found = self._existing(kind, key, exist_ok)
        if found is not None:
            return found
        plan = self.client.get_compute_plan(parent.compute_plan_key)
        if plan.owner == self.creator:
            plan_key, new_plan = plan.key, None
        else:
            plan_key = keys.standalone_plan_key(key)
            new_plan = {"name": f"0.x tuple {key}", "metadata": {metadata.KIND: metadata.STANDALONE_PLAN}}
        result = translate.testtuple(
            key=key,
            objective=objective,
            parent=parent,
            parent_algo=self.catalog.algo(parent.algo_key, f"{method}.traintuple_key"),
            dataset=dataset,
            sample_keys=samples,
            certified=certified,
            tag=spec.tag,
            user_metadata=user,
        )
        return self._finish(kind, key, plan_key, new_plan, result)
