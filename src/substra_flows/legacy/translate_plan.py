"""A 0.x compute plan spec as 1.0 task specs: ids resolved, parents first, clean_models applied.

Tuple ids share one namespace per plan (0.x's ``id_to_key``) and become task keys derived from
the plan key and the id (:func:`keys.plan_tuple_key`), so a later ``update_compute_plan`` can
name tuples of an earlier call by id. A testtuple (which 0.x gave no id) gets a key derived from
the plan, its traintuple id, its objective and its test data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from substra_flows.legacy import keys, metadata, specs
from substra_flows.legacy.exceptions import LegacyTranslationError, NotFound, invalid_request
from substra_flows.legacy.translate import (
    Resolver,
    Translated,
    TupleInfo,
    aggregatetuple,
    check_train_samples,
    composite_traintuple,
    test_data,
    testtuple,
    traintuple,
)

# -- compute plans --------------------------------------------------------------------------------------


@dataclass
class _Entry:
    kind: str
    legacy_id: str
    spec: Any
    where: str
    refs: list[tuple[str, str]] = field(default_factory=list)  # (role, id)


def _entries(spec: specs.PlanTuples, method: str) -> list[_Entry]:
    entries: list[_Entry] = []
    for i, t in enumerate(spec.traintuples):
        entry = _Entry(metadata.TRAINTUPLE, t.traintuple_id, t, f"{method}.traintuples.{i}")
        entry.refs = [("model", ref) for ref in t.in_models_ids]
        entries.append(entry)
    for i, c in enumerate(spec.composite_traintuples):
        entry = _Entry(
            metadata.COMPOSITE_TRAINTUPLE, c.composite_traintuple_id, c, f"{method}.composite_traintuples.{i}"
        )
        entry.refs = [(r, ref) for r, ref in (("head", c.in_head_model_id), ("trunk", c.in_trunk_model_id)) if ref]
        entries.append(entry)
    for i, a in enumerate(spec.aggregatetuples):
        entry = _Entry(metadata.AGGREGATETUPLE, a.aggregatetuple_id, a, f"{method}.aggregatetuples.{i}")
        entry.refs = [("model", ref) for ref in a.in_models_ids]
        entries.append(entry)
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.legacy_id in seen:
            raise LegacyTranslationError.for_field(
                entry.where,
                entry.legacy_id,
                f"this id is already used by {seen[entry.legacy_id]}: tuple ids are unique within a compute plan",
            )
        seen[entry.legacy_id] = entry.where
    return entries


def _parents_first(entries: list[_Entry]) -> list[_Entry]:
    """Order the entries so that every one comes after the entries it references (stable)."""
    by_id = {e.legacy_id: e for e in entries}
    state: dict[str, str] = {}
    ordered: list[_Entry] = []

    def visit(entry: _Entry, path: list[str]) -> None:
        mark = state.get(entry.legacy_id)
        if mark == "done":
            return
        if mark == "active":
            cycle = path[path.index(entry.legacy_id) :] + [entry.legacy_id]
            raise LegacyTranslationError.for_field(
                entry.where, entry.legacy_id, f"dependency cycle: {' -> '.join(cycle)}"
            )
        state[entry.legacy_id] = "active"
        for _, ref in entry.refs:
            if ref in by_id:
                visit(by_id[ref], [*path, entry.legacy_id])
        state[entry.legacy_id] = "done"
        ordered.append(entry)

    for entry in entries:
        visit(entry, [])
    return ordered


class _PlanParents:
    """Tuples of this spec by id, then tuples already in the plan (``update_compute_plan``)."""

    def __init__(self, plan_key: str, resolver: Resolver) -> None:
        self.plan_key = plan_key
        self.resolver = resolver
        self.new: dict[str, TupleInfo] = {}

    def get(self, tuple_id: str, field: str) -> TupleInfo:
        if tuple_id in self.new:
            return self.new[tuple_id]
        try:
            info = self.resolver.tuple(keys.plan_tuple_key(self.plan_key, tuple_id), field)
        except NotFound:
            raise invalid_request(
                f"{field}={tuple_id!r}: no tuple has this id in compute plan {self.plan_key}"
            ) from None
        if info.compute_plan_key != self.plan_key:
            raise invalid_request(f"{field}={tuple_id!r}: no tuple has this id in compute plan {self.plan_key}")
        return info


def compute_plan(
    *,
    plan_key: str,
    spec: specs.PlanTuples,
    creator: str,
    resolver: Resolver,
    clean_models: bool,
    method: str,
) -> list[Translated]:
    """Every tuple of a 0.x compute plan spec, parents first; with ``clean_models`` the outputs
    another tuple of the spec consumes are transient (deleted by 1.0 once their consumers ran)."""
    parents = _PlanParents(plan_key, resolver)
    translated: list[Translated] = []
    for entry in _parents_first(_entries(spec, method)):
        key = keys.plan_tuple_key(plan_key, entry.legacy_id)
        result = _plan_train_tuple(entry, key, plan_key, creator, resolver, parents)
        parents.new[entry.legacy_id] = result.info  # type: ignore[assignment]
        translated.append(result)
    seen_tests: dict[str, str] = {}
    for i, test in enumerate(spec.testtuples):
        field_name = f"{method}.testtuples.{i}"
        objective = resolver.objective(test.objective_key, f"{field_name}.objective_key")
        parent = parents.get(test.traintuple_id, f"{field_name}.traintuple_id")
        dm, samples, certified = test_data(objective, test.data_manager_key, test.test_data_sample_keys, field_name)
        key = keys.derive_key("plan-testtuple", plan_key, test.traintuple_id, objective.key, dm, sorted(samples))
        if key in seen_tests:
            raise LegacyTranslationError.for_field(
                field_name, test.traintuple_id, f"same testtuple as {seen_tests[key]}"
            )
        seen_tests[key] = field_name
        translated.append(
            testtuple(
                key=key,
                objective=objective,
                parent=parent,
                parent_algo=resolver.algo(parent.algo_key, f"{field_name}.traintuple_id"),
                dataset=resolver.dataset(dm, f"{field_name}.data_manager_key"),
                sample_keys=samples,
                certified=certified,
                tag=test.tag,
                user_metadata=metadata.check_user_metadata(test.metadata, f"{field_name}.metadata"),
            )
        )
    if clean_models:
        mark_consumed_transient(translated)
    return translated


def _plan_train_tuple(
    entry: _Entry, key: str, plan_key: str, creator: str, resolver: Resolver, parents: _PlanParents
) -> Translated:
    spec = entry.spec
    user = metadata.check_user_metadata(spec.metadata, f"{entry.where}.metadata")
    algo = resolver.algo(spec.algo_key, f"{entry.where}.algo_key")
    common = {"key": key, "plan_key": plan_key, "tag": spec.tag, "user_metadata": user, "legacy_id": entry.legacy_id}
    if entry.kind == metadata.AGGREGATETUPLE:
        models = [parents.get(ref, f"{entry.where}.in_models_ids") for _, ref in entry.refs]
        return aggregatetuple(algo=algo, worker=spec.worker, parents=models, field=entry.where, **common)
    dataset = resolver.dataset(spec.data_manager_key, f"{entry.where}.data_manager_key")
    check_train_samples(resolver, spec.train_data_sample_keys, f"{entry.where}.train_data_sample_keys")
    if entry.kind == metadata.TRAINTUPLE:
        models = [parents.get(ref, f"{entry.where}.in_models_ids") for _, ref in entry.refs]
        return traintuple(
            algo=algo,
            dataset=dataset,
            sample_keys=spec.train_data_sample_keys,
            parents=models,
            field=entry.where,
            **common,
        )
    head = parents.get(spec.in_head_model_id, f"{entry.where}.in_head_model_id") if spec.in_head_model_id else None
    trunk = parents.get(spec.in_trunk_model_id, f"{entry.where}.in_trunk_model_id") if spec.in_trunk_model_id else None
    return composite_traintuple(
        creator=creator,
        algo=algo,
        dataset=dataset,
        sample_keys=spec.train_data_sample_keys,
        head=head,
        trunk=trunk,
        trunk_permissions=spec.out_trunk_model_permissions,
        field=entry.where,
        **common,
    )


def mark_consumed_transient(translated: Sequence[Translated]) -> None:
    """``clean_models``: every output read by another task of these tuples becomes transient."""
    consumed = {
        (ref["parent_task_key"], ref["parent_task_output_identifier"])
        for t in translated
        for task in t.tasks
        for ref in task["inputs"]
        if ref.get("parent_task_key")
    }
    for t in translated:
        for task in t.tasks:
            for identifier, output in task["outputs"].items():
                if (task["task_id"], identifier) in consumed:
                    output["is_transient"] = True
