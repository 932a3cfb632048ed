"""0.x tuples as 1.0 tasks: pure functions from validated 0.x specs and what they refer to.

Nothing here talks to a server: the assets a tuple names arrive as small records (an algo, a
dataset, an objective, parent tuples), so every rule can be unit-tested. What each 0.x kind
becomes:

- traintuple -> one task of the algo's train function: ``opener``, ``datasamples``, ``models``
  (the input models, in order) -> ``model``. Model permissions: the intersection of the dataset's
  and the algo's (the 0.x rule), plus the worker.
- aggregatetuple -> one task of the aggregate function on ``worker``: ``models`` -> ``model``,
  readable by whoever could read every input model and the algo (plus the worker).
- composite traintuple -> one task of the composite train function: ``opener``, ``datasamples``,
  ``local`` (in head model), ``shared`` (in trunk model) -> ``local`` (head: the worker and the
  creator only, as in 0.x) and ``shared`` (trunk: ``out_trunk_model_permissions``, never public).
- testtuple -> a predict task (the parent's algo's predict function on the test data: ``model``,
  or ``local`` + ``shared`` for a composite parent -> ``predictions``) and a test task (the
  objective's metric function: ``predictions`` -> ``performance``, public). The testtuple's key is
  the test task's key.

Ranks are the server's in 1.0 (0 without input models, else 1 + the highest parent rank); a 0.x
rank that disagrees would change what the function receives, so it is refused, not dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from substra_flows.legacy import keys, metadata, specs
from substra_flows.legacy.exceptions import LegacyTranslationError, invalid_request

# output identifiers of each train kind, and the one read as "the model" by children
OUTPUTS = {
    metadata.TRAINTUPLE: ("model",),
    metadata.AGGREGATETUPLE: ("model",),
    metadata.COMPOSITE_TRAINTUPLE: ("local", "shared"),
}
ALGO_OF = {
    metadata.TRAINTUPLE: metadata.ALGO,
    metadata.AGGREGATETUPLE: metadata.AGGREGATE_ALGO,
    metadata.COMPOSITE_TRAINTUPLE: metadata.COMPOSITE_ALGO,
}
A_KIND = {
    metadata.ALGO: "an algo",
    metadata.AGGREGATE_ALGO: "an aggregate algo",
    metadata.COMPOSITE_ALGO: "a composite algo",
    metadata.TRAINTUPLE: "a traintuple",
    metadata.AGGREGATETUPLE: "an aggregatetuple",
    metadata.COMPOSITE_TRAINTUPLE: "a composite traintuple",
}
ADD_METHOD = {
    metadata.ALGO: "add_traintuple",
    metadata.AGGREGATE_ALGO: "add_aggregatetuple",
    metadata.COMPOSITE_ALGO: "add_composite_traintuple",
}


@dataclass(frozen=True)
class Perm:
    """Permissions as sets: public, or the organizations in ``ids``."""

    public: bool
    ids: frozenset[str] = frozenset()

    @classmethod
    def of(cls, value: Any) -> Perm:
        """From a request dict, a response Permission model, or a response ``{process: ...}`` dict."""
        if isinstance(value, Mapping) and "process" in value:
            value = value["process"]
        public = value["public"] if isinstance(value, Mapping) else value.public
        ids = value.get("authorized_ids", []) if isinstance(value, Mapping) else value.authorized_ids
        return cls(bool(public), frozenset() if public else frozenset(ids or []))

    def intersect(self, other: Perm) -> Perm:
        """Who may read both."""
        if self.public:
            return other
        if other.public:
            return self
        return Perm(False, self.ids & other.ids)

    def including(self, *orgs: str) -> Perm:
        """These organizations too (nothing changes for a public permission)."""
        return self if self.public else Perm(False, self.ids | frozenset(orgs))

    def wire(self) -> dict[str, Any]:
        """1.0 request shape."""
        return {"public": self.public, "authorized_ids": [] if self.public else sorted(self.ids)}

    def view(self) -> dict[str, Any]:
        """0.x response shape."""
        return {"process": self.wire()}


PUBLIC = Perm(True)


@dataclass(frozen=True)
class AlgoInfo:
    """A 0.x algo of any kind, as registered on 1.0."""

    key: str
    kind: str
    name: str
    predict_key: str
    permissions: Perm


@dataclass(frozen=True)
class DatasetInfo:
    """What translation needs of a dataset."""

    key: str
    owner: str
    permissions: Perm


@dataclass(frozen=True)
class ObjectiveInfo:
    """A 0.x objective: its metric function and its test data."""

    key: str
    name: str
    test_dataset: Optional[str]
    test_samples: tuple[str, ...]
    permissions: Perm


@dataclass(frozen=True)
class TupleInfo:
    """A train tuple seen as a parent: enough to wire a child to its outputs."""

    key: str
    kind: str
    rank: int
    worker: str
    compute_plan_key: str
    algo_key: str
    outputs: Mapping[str, Perm]

    def model_output(self) -> str:
        """The output a child reads as an input model (a composite's trunk)."""
        return "shared" if self.kind == metadata.COMPOSITE_TRAINTUPLE else "model"


@dataclass
class Translated:
    """One 0.x tuple as 1.0 task specs (plan task dicts, ``task_id`` = key), parents first."""

    kind: str
    key: str
    tasks: list[dict[str, Any]]
    info: Optional[TupleInfo] = None
    legacy_id: Optional[str] = None


class Resolver(Protocol):
    """What translation looks up on the server (a fake in unit tests)."""

    def algo(self, key: str, field: str) -> AlgoInfo:
        """A 0.x algo (NotFound naming ``field`` otherwise)."""

    def dataset(self, key: str, field: str) -> DatasetInfo:
        """A dataset."""

    def objective(self, key: str, field: str) -> ObjectiveInfo:
        """A 0.x objective."""

    def tuple(self, key: str, field: str) -> TupleInfo:
        """A 0.x train tuple by its key."""

    def test_only(self, sample_keys: Sequence[str]) -> set[str]:
        """Which of these samples were registered with ``test_only=True``."""


# -- inputs and outputs -------------------------------------------------------------------------------


def _data_inputs(dataset_key: str, sample_keys: Sequence[str]) -> list[dict[str, Any]]:
    refs = [{"identifier": "opener", "asset_key": dataset_key}]
    return refs + [{"identifier": "datasamples", "asset_key": k} for k in sample_keys]


def _parent_input(identifier: str, parent_key: str, output: str) -> dict[str, Any]:
    return {"identifier": identifier, "parent_task_key": parent_key, "parent_task_output_identifier": output}


def _output(permissions: Perm) -> dict[str, Any]:
    return {"permissions": permissions.wire(), "is_transient": False}


def _task(
    key: str, function_key: str, worker: str, tag: Optional[str], meta: dict[str, str], inputs: list, outputs: dict
):
    task: dict[str, Any] = {
        "task_id": key,
        "function_key": function_key,
        "worker": worker,
        "metadata": meta,
        "inputs": inputs,
        "outputs": outputs,
    }
    if tag:
        task["tag"] = tag
    return task


def _tuple_metadata(
    kind: str, user: Mapping[str, str], legacy_id: Optional[str], rank: Optional[int]
) -> dict[str, str]:
    meta = {**user, metadata.KIND: kind}
    if legacy_id is not None:
        meta[metadata.TUPLE_ID] = legacy_id
    if rank is not None:
        meta[metadata.RANK] = str(rank)
    return meta


def derived_rank(parents: Sequence[TupleInfo]) -> int:
    """The rank 1.0 gives a task: 0 without parents, else 1 + the highest parent rank."""
    return 1 + max(p.rank for p in parents) if parents else 0


def _check_rank(rank: Optional[int], parents: Sequence[TupleInfo], field: str) -> int:
    expected = derived_rank(parents)
    if rank is not None and rank != expected:
        raise LegacyTranslationError.for_field(
            field,
            rank,
            f"1.0 derives ranks from the input models (0 without any, else 1 + the highest of theirs): this "
            f"tuple gets rank {expected}, which its function would see instead of {rank}",
        )
    return expected


def _check_algo(algo: AlgoInfo, kind: str, field: str) -> None:
    wanted = ALGO_OF[kind]
    if algo.kind != wanted:
        raise invalid_request(
            f"{field}={algo.key} is {A_KIND[algo.kind]}, which {A_KIND[kind]} cannot run; "
            f"use {ADD_METHOD[algo.kind]} (or its list in add_compute_plan)",
            key=algo.key,
        )


def check_train_samples(resolver: Resolver, sample_keys: Sequence[str], field: str) -> None:
    """0.x refused test-only samples in traintuples and composite traintuples."""
    test_only = resolver.test_only(sample_keys)
    if test_only:
        raise invalid_request(
            f"{field}: not possible to create a traintuple with test only data ({sorted(test_only)})",
            key=sorted(test_only),
        )


def _model_parent(parent: TupleInfo, field: str) -> str:
    if parent.kind not in OUTPUTS:
        raise invalid_request(f"{field}={parent.key} is a {parent.kind}, not a tuple with an out model", key=parent.key)
    return parent.model_output()


# -- train tuples ---------------------------------------------------------------------------------------


def traintuple(
    *,
    key: str,
    plan_key: str,
    algo: AlgoInfo,
    dataset: DatasetInfo,
    sample_keys: Sequence[str],
    parents: Sequence[TupleInfo],
    tag: Optional[str],
    user_metadata: Mapping[str, str],
    legacy_id: Optional[str] = None,
    rank: Optional[int] = None,
    field: str = "add_traintuple",
) -> Translated:
    """A traintuple: the algo's train function on the dataset's owner."""
    _check_algo(algo, metadata.TRAINTUPLE, f"{field}.algo_key")
    derived = _check_rank(rank, parents, f"{field}.rank")
    worker = dataset.owner
    inputs = _data_inputs(dataset.key, sample_keys)
    inputs += [_parent_input("models", p.key, _model_parent(p, f"{field}.in_models")) for p in parents]
    out = dataset.permissions.intersect(algo.permissions).including(worker)
    meta = _tuple_metadata(metadata.TRAINTUPLE, user_metadata, legacy_id, rank)
    task = _task(key, algo.key, worker, tag, meta, inputs, {"model": _output(out)})
    info = TupleInfo(key, metadata.TRAINTUPLE, derived, worker, plan_key, algo.key, {"model": out})
    return Translated(metadata.TRAINTUPLE, key, [task], info, legacy_id)


def aggregatetuple(
    *,
    key: str,
    plan_key: str,
    algo: AlgoInfo,
    worker: str,
    parents: Sequence[TupleInfo],
    tag: Optional[str],
    user_metadata: Mapping[str, str],
    legacy_id: Optional[str] = None,
    rank: Optional[int] = None,
    field: str = "add_aggregatetuple",
) -> Translated:
    """An aggregatetuple: the aggregate function on ``worker``, over the input models in order."""
    _check_algo(algo, metadata.AGGREGATETUPLE, f"{field}.algo_key")
    if not parents:
        raise LegacyTranslationError.for_field(f"{field}.in_models", [], "an aggregatetuple needs input models")
    derived = _check_rank(rank, parents, f"{field}.rank")
    inputs = []
    out = algo.permissions
    for parent in parents:
        output = _model_parent(parent, f"{field}.in_models")
        inputs.append(_parent_input("models", parent.key, output))
        out = out.intersect(parent.outputs[output])
    out = out.including(worker)
    meta = _tuple_metadata(metadata.AGGREGATETUPLE, user_metadata, legacy_id, rank)
    task = _task(key, algo.key, worker, tag, meta, inputs, {"model": _output(out)})
    info = TupleInfo(key, metadata.AGGREGATETUPLE, derived, worker, plan_key, algo.key, {"model": out})
    return Translated(metadata.AGGREGATETUPLE, key, [task], info, legacy_id)


def composite_traintuple(
    *,
    key: str,
    plan_key: str,
    creator: str,
    algo: AlgoInfo,
    dataset: DatasetInfo,
    sample_keys: Sequence[str],
    head: Optional[TupleInfo],
    trunk: Optional[TupleInfo],
    trunk_permissions: specs.TrunkPermissions,
    tag: Optional[str],
    user_metadata: Mapping[str, str],
    legacy_id: Optional[str] = None,
    rank: Optional[int] = None,
    field: str = "add_composite_traintuple",
) -> Translated:
    """A composite traintuple: head (``local``) and trunk (``shared``) models in and out."""
    _check_algo(algo, metadata.COMPOSITE_TRAINTUPLE, f"{field}.algo_key")
    parents = [p for p in (head, trunk) if p is not None]
    derived = _check_rank(rank, parents, f"{field}.rank")
    worker = dataset.owner
    inputs = _data_inputs(dataset.key, sample_keys)
    if head is not None:
        if head.kind != metadata.COMPOSITE_TRAINTUPLE:
            raise invalid_request(
                f"{field}.in_head_model={head.key} is a {head.kind}: head models come from composite traintuples",
                key=head.key,
            )
        if head.worker != worker:
            raise invalid_request(
                f"{field}.in_head_model={head.key} was trained on {head.worker}, not on {worker} (the owner of "
                f"dataset {dataset.key}): head models never leave their worker",
                key=head.key,
            )
        inputs.append(_parent_input("local", head.key, "local"))
    if trunk is not None:
        inputs.append(_parent_input("shared", trunk.key, _model_parent(trunk, f"{field}.in_trunk_model")))
    local = Perm(False, frozenset({worker, creator}))
    shared = Perm(False, frozenset(trunk_permissions.authorized_ids)).including(worker)
    meta = _tuple_metadata(metadata.COMPOSITE_TRAINTUPLE, user_metadata, legacy_id, rank)
    outputs = {"local": _output(local), "shared": _output(shared)}
    task = _task(key, algo.key, worker, tag, meta, inputs, outputs)
    info = TupleInfo(
        key, metadata.COMPOSITE_TRAINTUPLE, derived, worker, plan_key, algo.key, {"local": local, "shared": shared}
    )
    return Translated(metadata.COMPOSITE_TRAINTUPLE, key, [task], info, legacy_id)


# -- testtuples -----------------------------------------------------------------------------------------


def test_data(
    objective: ObjectiveInfo, data_manager_key: Optional[str], sample_keys: Sequence[str], field: str
) -> tuple[str, list[str], bool]:
    """The dataset and samples a testtuple runs on, and whether it is certified (the objective's own)."""
    if data_manager_key and sample_keys:
        certified = data_manager_key == objective.test_dataset and sorted(sample_keys) == sorted(objective.test_samples)
        return data_manager_key, list(sample_keys), certified
    if data_manager_key or sample_keys:
        raise invalid_request(f"{field}: data_manager_key and test_data_sample_keys should be provided together")
    if not objective.test_dataset or not objective.test_samples:
        raise invalid_request(
            f"{field}: can not create a certified testtuple, no data associated with objective {objective.key}",
            key=objective.key,
        )
    return objective.test_dataset, list(objective.test_samples), True


def testtuple(
    *,
    key: str,
    objective: ObjectiveInfo,
    parent: TupleInfo,
    parent_algo: AlgoInfo,
    dataset: DatasetInfo,
    sample_keys: Sequence[str],
    certified: bool,
    tag: Optional[str],
    user_metadata: Mapping[str, str],
) -> Translated:
    """A testtuple: predict with the parent's model on the test data, then score with the metric."""
    worker = dataset.owner
    predict = keys.predict_key(key)
    data = _data_inputs(dataset.key, sample_keys)
    if parent.kind == metadata.COMPOSITE_TRAINTUPLE:
        model_inputs = [_parent_input("local", parent.key, "local"), _parent_input("shared", parent.key, "shared")]
    else:
        model_inputs = [_parent_input("model", parent.key, "model")]
    common = {metadata.TRAINTUPLE_KEY: parent.key}
    predict_meta = {metadata.KIND: metadata.TESTTUPLE_PREDICT, metadata.TESTTUPLE_KEY: key, **common}
    predict_task = _task(
        predict,
        parent_algo.predict_key,
        worker,
        tag,
        predict_meta,
        data + model_inputs,
        {"predictions": _output(Perm(False, frozenset({worker})))},
    )
    test_meta = {
        **user_metadata,
        metadata.KIND: metadata.TESTTUPLE,
        metadata.CERTIFIED: metadata.flag(certified),
        metadata.RANK: str(parent.rank),
        **common,
    }
    test_task = _task(
        key,
        objective.key,
        worker,
        tag,
        test_meta,
        data + [_parent_input("predictions", predict, "predictions")],
        {"performance": _output(PUBLIC)},
    )
    return Translated(metadata.TESTTUPLE, key, [predict_task, test_task])
