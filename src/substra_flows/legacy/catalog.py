"""Look-ups of the 1.0 assets behind 0.x keys, for translation and for the 0.x views.

A 0.x algo, aggregate algo, composite algo or objective is a 1.0 function whose metadata says so
(``legacy_kind``); a 0.x tuple is a task whose metadata says so. A key that names something else
is answered ``NotFound`` naming the argument, as 0.x did for a key of the wrong asset type.
Functions and datasets never change after creation, so they are cached for the client's life.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Optional

from substra_flows import SubstraClient, models
from substra_flows.exceptions import NotFound
from substra_flows.legacy import metadata
from substra_flows.legacy.exceptions import not_found
from substra_flows.legacy.records import Records
from substra_flows.legacy.translate import AlgoInfo, DatasetInfo, ObjectiveInfo, Perm, TupleInfo

KIND_NAMES = {
    metadata.ALGO: "algo",
    metadata.AGGREGATE_ALGO: "aggregate algo",
    metadata.COMPOSITE_ALGO: "composite algo",
    metadata.OBJECTIVE: "objective",
    metadata.TRAINTUPLE: "traintuple",
    metadata.AGGREGATETUPLE: "aggregatetuple",
    metadata.COMPOSITE_TRAINTUPLE: "composite traintuple",
    metadata.TESTTUPLE: "testtuple",
}


def _named_by(field: str) -> str:
    return f"named by {field}" if field else ""


class Catalog:
    """The 0.x reading of one organization's view of the channel (implements translate.Resolver)."""

    def __init__(self, client: SubstraClient, records: Records) -> None:
        self.client = client
        self.records = records
        self._functions: dict[str, models.Function] = {}
        self._datasets: dict[str, models.Dataset] = {}

    # -- functions -------------------------------------------------------------------------------

    def function(self, key: str, kinds: Sequence[str], field: str = "") -> models.Function:
        """The function behind a 0.x key of one of ``kinds`` (NotFound otherwise)."""
        wanted = " or ".join(KIND_NAMES.get(k, k) for k in kinds)
        function = self._functions.get(key)
        if function is None:
            try:
                function = self.client.get_function(key)
            except NotFound:
                raise not_found(wanted, key, _named_by(field)) from None
            self._functions[key] = function
        kind = function.metadata.get(metadata.KIND)
        if kind not in kinds:
            what = f"a 0.x {KIND_NAMES[kind]}" if kind in KIND_NAMES else "a 1.0 function not registered as a 0.x asset"
            raise not_found(wanted, key, f"{_named_by(field)}; it is {what}".lstrip("; "))
        return function

    def remember(self, function: models.Function) -> None:
        """Cache a function seen in a listing."""
        self._functions[function.key] = function

    def algo(self, key: str, field: str = "", kinds: Sequence[str] = metadata.ALGO_KINDS) -> AlgoInfo:
        """A 0.x algo of any kind (or of ``kinds``)."""
        function = self.function(key, kinds, field)
        return AlgoInfo(
            key=function.key,
            kind=function.metadata[metadata.KIND],
            name=function.name,
            predict_key=function.metadata.get(metadata.PREDICT_KEY, ""),
            permissions=Perm.of(function.permissions.process),
        )

    def objective(self, key: str, field: str = "") -> ObjectiveInfo:
        """A 0.x objective."""
        function = self.function(key, (metadata.OBJECTIVE,), field)
        return ObjectiveInfo(
            key=function.key,
            name=function.name,
            test_dataset=function.metadata.get(metadata.TEST_DATASET) or None,
            test_samples=tuple(metadata.joined_keys(metadata.TEST_SAMPLES, function.metadata)),
            permissions=Perm.of(function.permissions.process),
        )

    # -- datasets --------------------------------------------------------------------------------

    def dataset_model(self, key: str, field: str = "") -> models.Dataset:
        """A dataset (cached: only its sample list changes, and that is not read from here)."""
        dataset = self._datasets.get(key)
        if dataset is None:
            try:
                dataset = self.client.get_dataset(key)
            except NotFound:
                raise not_found("dataset", key, _named_by(field)) from None
            self._datasets[key] = dataset
        return dataset

    def dataset(self, key: str, field: str = "") -> DatasetInfo:
        """What translation needs of a dataset."""
        dataset = self.dataset_model(key, field)
        return DatasetInfo(key=dataset.key, owner=dataset.owner, permissions=Perm.of(dataset.permissions.process))

    def objective_of_dataset(self, dataset: models.Dataset) -> str:
        """The objective a dataset is associated with: at creation (metadata) or linked later (record)."""
        return dataset.metadata.get(metadata.OBJECTIVE_KEY) or self.records.linked_objective(dataset.key) or ""

    # -- tuples ----------------------------------------------------------------------------------

    def task(self, key: str, kinds: Sequence[str], field: str = "") -> models.Task:
        """The task behind a 0.x tuple key of one of ``kinds``."""
        wanted = " or ".join(KIND_NAMES[k] for k in kinds)
        try:
            task = self.client.get_task(key)
        except NotFound:
            raise not_found(wanted, key, _named_by(field)) from None
        if task.metadata.get(metadata.KIND) not in kinds:
            raise not_found(wanted, key, f"{_named_by(field)}; task {key} is not a 0.x {wanted}".lstrip("; "))
        return task

    def tuple(self, key: str, field: str = "") -> TupleInfo:
        """A train tuple seen as a parent."""
        task = self.task(key, metadata.TRAIN_KINDS, field)
        return tuple_info(task)

    def test_only(self, sample_keys: Sequence[str]) -> set[str]:
        """Which of these samples are test-only (from the sample records)."""
        return self.records.test_only(sample_keys) if sample_keys else set()


class OrganizationRoom:
    """What a room working for one organization holds: its client, its catalog, and who it is."""

    def __init__(self, client: SubstraClient, catalog: Catalog, creator: Callable[[], str]) -> None:
        self.client = client
        self.catalog = catalog
        self._creator = creator

    @property
    def creator(self) -> str:
        """This organization's id (asked only when needed: bad input fails before any request)."""
        return self._creator()


def tuple_info(task: models.Task) -> TupleInfo:
    """A train task's parent-side description."""
    return TupleInfo(
        key=task.key,
        kind=task.metadata[metadata.KIND],
        rank=task.rank or 0,
        worker=task.worker,
        compute_plan_key=task.compute_plan_key,
        algo_key=task.function.key if task.function else "",
        outputs={name: Perm.of(out.permissions.process) for name, out in task.outputs.items()},
    )


def function_key_of(task: models.Task) -> Optional[str]:
    """The key of a task's function (the nested object may be absent on odd servers)."""
    return task.function.key if task.function else None
