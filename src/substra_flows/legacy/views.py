"""The 0.x response dicts, built from 1.0 objects.

Field names and nesting are those of the 0.x backend of the reference documents' era (snake case,
``compute_plan_id``, ``hash`` + ``storage_address`` file records, ``permissions.process``).
Statuses are the 0.x words: ``waiting`` (for parents or a build), ``todo`` (ready),
``doing``, ``done``, ``failed``, ``canceled``. What 1.0 cannot say is given the 0.x empty value
(``log`` is the failure log only for a failed tuple read one at a time: listings leave it "").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

from substra_flows import models
from substra_flows.legacy import metadata
from substra_flows.legacy.translate import Perm

TASK_STATUS = {
    models.ComputeTaskStatus.waiting_for_builder_slot.value: "waiting",
    models.ComputeTaskStatus.building.value: "waiting",
    models.ComputeTaskStatus.waiting_for_parent_tasks.value: "waiting",
    models.ComputeTaskStatus.waiting_for_executor_slot.value: "todo",
    models.ComputeTaskStatus.executing.value: "doing",
    models.ComputeTaskStatus.done.value: "done",
    models.ComputeTaskStatus.failed.value: "failed",
    models.ComputeTaskStatus.canceled.value: "canceled",
}
PLAN_STATUS = {
    models.ComputePlanStatus.created.value: "todo",
    models.ComputePlanStatus.doing.value: "doing",
    models.ComputePlanStatus.done.value: "done",
    models.ComputePlanStatus.failed.value: "failed",
    models.ComputePlanStatus.canceled.value: "canceled",
}


def _value(status: Any) -> str:
    return str(getattr(status, "value", status))


def task_status(task: models.Task) -> str:
    """A task's 0.x status (an unknown 1.0 status is shown as it is)."""
    return TASK_STATUS.get(_value(task.status), _value(task.status))


def plan_status(plan: models.ComputePlan) -> str:
    """A plan's 0.x status."""
    return PLAN_STATUS.get(_value(plan.status), _value(plan.status))


def file_view(file: Optional[models.File]) -> dict[str, str]:
    """A 0.x ``{hash, storage_address}`` file record."""
    return {"hash": file.checksum if file else "", "storage_address": file.storage_address if file else ""}


def permissions_view(permissions: models.Permissions) -> dict[str, Any]:
    """0.x ``{process: {public, authorized_ids}}`` (no ids listed when public, as 0.x did)."""
    return Perm.of(permissions.process).view()


# -- assets -----------------------------------------------------------------------------------------


def algo_view(function: models.Function) -> dict[str, Any]:
    """An algo, aggregate algo or composite algo."""
    return {
        "key": function.key,
        "name": function.name,
        "content": file_view(function.archive),
        "description": file_view(function.description),
        "owner": function.owner,
        "permissions": permissions_view(function.permissions),
        "metadata": metadata.user_metadata(function.metadata),
    }


def objective_view(function: models.Function, test_worker: Optional[str]) -> dict[str, Any]:
    """An objective: the metric function and the test data recorded in its metadata."""
    meta = function.metadata
    test_dataset = meta.get(metadata.TEST_DATASET)
    return {
        "key": function.key,
        "name": function.name,
        "description": file_view(function.description),
        "metrics": {
            "name": meta.get(metadata.METRICS_NAME, ""),
            "hash": function.archive.checksum,
            "storage_address": function.archive.storage_address,
        },
        "owner": function.owner,
        "test_dataset": None
        if not test_dataset
        else {
            "data_manager_key": test_dataset,
            "data_sample_keys": metadata.joined_keys(metadata.TEST_SAMPLES, meta),
            "metadata": {},
            "worker": test_worker or "",
        },
        "permissions": permissions_view(function.permissions),
        "metadata": metadata.user_metadata(meta),
    }


def dataset_view(
    dataset: models.Dataset,
    objective_key: str,
    split: Optional[tuple[list[str], list[str]]] = None,
) -> dict[str, Any]:
    """A dataset; with ``split`` (train keys, test keys), the ``get_dataset`` shape."""
    view: dict[str, Any] = {
        "key": dataset.key,
        "name": dataset.name,
        "description": file_view(dataset.description),
        "opener": file_view(dataset.opener),
        "owner": dataset.owner,
        "objective_key": objective_key,
        "permissions": permissions_view(dataset.permissions),
        "type": dataset.metadata.get(metadata.DATASET_TYPE, ""),
        "metadata": metadata.user_metadata(dataset.metadata),
    }
    if split is not None:
        view["train_data_sample_keys"], view["test_data_sample_keys"] = split
    return view


def data_sample_view(sample: models.DataSample, test_only: bool) -> dict[str, Any]:
    """A data sample."""
    return {
        "key": sample.key,
        "owner": sample.owner,
        "data_manager_keys": list(sample.data_manager_keys or []),
        "test_only": test_only,
    }


def node_view(organization: models.Organization) -> dict[str, Any]:
    """A node (an organization of the channel)."""
    return {"id": organization.id, "is_current": organization.is_current}


# -- tuples -------------------------------------------------------------------------------------------


def inputs_of(task: models.Task, identifier: str) -> list[models.InputRef]:
    """A task's inputs with this identifier, in order."""
    return [i for i in task.inputs if i.identifier == identifier]


def asset_inputs(task: models.Task, identifier: str) -> list[str]:
    """The asset keys of a task's inputs with this identifier."""
    return [i.asset_key for i in inputs_of(task, identifier) if i.asset_key]


def parent_keys(task: models.Task, identifier: str) -> list[str]:
    """The parent task keys of a task's inputs with this identifier."""
    return [i.parent_task_key for i in inputs_of(task, identifier) if i.parent_task_key]


def algo_ref(function: Optional[models.Function]) -> dict[str, Any]:
    """0.x ``algo`` sub-record of a tuple."""
    if function is None:
        return {"key": "", "name": "", "hash": "", "storage_address": ""}
    return {"key": function.key, "name": function.name, **file_view(function.archive)}


def model_ref(model: Optional[models.Model]) -> Optional[dict[str, str]]:
    """0.x ``out_model``: None until the model exists."""
    if model is None:
        return None
    return {"key": model.key, **file_view(model.address)}


def in_model_ref(parent_key: str, model: Optional[models.Model]) -> dict[str, str]:
    """0.x ``in_models`` item."""
    return {"traintuple_key": parent_key, **file_view(model.address if model else None)}


def tuple_dataset(task: models.Task, opener_checksum: str, perf: Optional[float] = None) -> dict[str, Any]:
    """0.x ``dataset`` sub-record of a tuple."""
    datasets = asset_inputs(task, "opener")
    view: dict[str, Any] = {
        "key": datasets[0] if datasets else "",
        "worker": task.worker,
        "keys": asset_inputs(task, "datasamples"),
        "opener_hash": opener_checksum,
    }
    if perf is not None or task.metadata.get(metadata.KIND) == metadata.TESTTUPLE:
        view["perf"] = perf
    else:
        view["metadata"] = {}
    return view


def common_tuple_fields(task: models.Task, compute_plan_id: str, log: str) -> dict[str, Any]:
    """Fields every tuple view shares."""
    return {
        "key": task.key,
        "creator": task.owner,
        "compute_plan_id": compute_plan_id,
        "log": log,
        "metadata": metadata.user_metadata(task.metadata),
        "rank": task.rank or 0,
        "status": task_status(task),
        "tag": task.tag,
    }


def output_permissions(task: models.Task, identifier: str) -> dict[str, Any]:
    """0.x permissions of one output."""
    output = task.outputs.get(identifier)
    return Perm.of(output.permissions.process).view() if output else Perm(False).view()


def plan_view(plan: models.ComputePlan, tasks: Sequence[models.Task], id_to_key: Mapping[str, str]) -> dict[str, Any]:
    """A 0.x compute plan from the 1.0 plan and its tasks."""
    by_kind: dict[str, list[str]] = {k: [] for k in (*metadata.TRAIN_KINDS, metadata.TESTTUPLE)}
    done = 0
    for task in tasks:
        kind = task.metadata.get(metadata.KIND)
        if kind in by_kind:
            by_kind[kind].append(task.key)
            done += _value(task.status) == models.ComputeTaskStatus.done.value
    return {
        "compute_plan_id": plan.key,
        "traintuple_keys": by_kind[metadata.TRAINTUPLE],
        "aggregatetuple_keys": by_kind[metadata.AGGREGATETUPLE],
        "composite_traintuple_keys": by_kind[metadata.COMPOSITE_TRAINTUPLE],
        "testtuple_keys": by_kind[metadata.TESTTUPLE],
        "clean_models": metadata.is_true(plan.metadata, metadata.CLEAN_MODELS),
        "tag": plan.tag,
        "metadata": metadata.user_metadata(plan.metadata),
        "status": plan_status(plan),
        "tuple_count": sum(len(v) for v in by_kind.values()),
        "done_count": done,
        "id_to_key": dict(id_to_key),
    }


# -- what each listing can be filtered on (listing.parse) -------------------------------------------------

_FILE = {"hash", "storage_address"}
_TUPLE = {"key", "creator", "compute_plan_id", "log", "metadata", "rank", "status", "tag"}
_ALGO_REF = {"key", "name", "hash", "storage_address"}
_TUPLE_DATASET = {"key", "worker", "keys", "opener_hash"}
FIELDS: dict[str, dict[str, set[str]]] = {
    "algo": {"algo": {"key", "name", "owner", "metadata"}, "content": _FILE, "description": _FILE},
    "objective": {
        "objective": {"key", "name", "owner", "metadata"},
        "metrics": {"name", *_FILE},
        "description": _FILE,
        "test_dataset": {"data_manager_key", "data_sample_keys", "worker"},
    },
    "dataset": {
        "dataset": {"key", "name", "owner", "objective_key", "type", "metadata"},
        "opener": _FILE,
        "description": _FILE,
    },
    "data_sample": {"data_sample": {"key", "owner", "data_manager_keys", "test_only"}},
    "traintuple": {"traintuple": _TUPLE, "algo": _ALGO_REF, "dataset": _TUPLE_DATASET},
    "aggregatetuple": {"aggregatetuple": {*_TUPLE, "worker"}, "algo": _ALGO_REF},
    "composite_traintuple": {"composite_traintuple": _TUPLE, "algo": _ALGO_REF, "dataset": _TUPLE_DATASET},
    "testtuple": {
        "testtuple": {*_TUPLE, "certified", "traintuple_key", "traintuple_type"},
        "algo": _ALGO_REF,
        "dataset": {*_TUPLE_DATASET, "perf"},
        "objective": {"key", "hash"},
    },
    "compute_plan": {
        "compute_plan": {
            "compute_plan_id",
            "traintuple_keys",
            "aggregatetuple_keys",
            "composite_traintuple_keys",
            "testtuple_keys",
            "clean_models",
            "tag",
            "status",
            "tuple_count",
            "done_count",
        }
    },
}
