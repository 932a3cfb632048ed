"""Registering 0.x assets on 1.0: algos (three kinds), objectives, datasets and data samples.

Each 0.x algo becomes two 1.0 functions from its one archive (:mod:`archives`): the function its
tuples run (train, or aggregate) and a predict function its testtuples run; an objective becomes
a metric function (``score``) whose metadata holds the metrics name and the test dataset and
samples. Inputs and outputs are those each 0.x kind implied (see :data:`FUNCTION_IO`).

AlreadyExists follows 0.x: the same archive for an algo of the same kind, the same description
for an objective, the same opener for a dataset, the same content for a data sample, "on the
server", that is among the assets this organization registered (two organizations may register
the same opener or archive, as federated setups do). ``exist_ok=True`` returns the existing
asset instead. A creation whose answer was lost (``AssetMaybeCreatedError``) is looked up again
by the same rule before the error is let through, so a rerun never registers a duplicate.
"""

from __future__ import annotations

import logging
import pathlib
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

from substra_flows import SubstraClient, models
from substra_flows.exceptions import AlreadyExists, AssetMaybeCreatedError
from substra_flows.legacy import archives, metadata, specs, views
from substra_flows.legacy.catalog import Catalog, OrganizationRoom
from substra_flows.legacy.exceptions import LegacyTranslationError, already_exists, invalid_request
from substra_flows.legacy.records import Records
from substra_flows.steps.fingerprints import file_sha256, sample_fingerprint

logger = logging.getLogger("substra_flows.legacy")

_OPENER = {"identifier": "opener", "kind": "ASSET_DATA_MANAGER", "optional": False, "multiple": False}
_SAMPLES = {"identifier": "datasamples", "kind": "ASSET_DATA_SAMPLE", "optional": False, "multiple": True}


def _model_in(identifier: str, *, optional: bool = False, multiple: bool = False) -> dict[str, Any]:
    return {"identifier": identifier, "kind": "ASSET_MODEL", "optional": optional, "multiple": multiple}


def _model_out(identifier: str) -> dict[str, Any]:
    return {"identifier": identifier, "kind": "ASSET_MODEL", "multiple": False}


_PREDICT_MODEL = ([_OPENER, _SAMPLES, _model_in("model")], [_model_out("predictions")])
#: (0.x kind, role) -> (inputs, outputs) of the 1.0 function; the role is the ``--function-name``
FUNCTION_IO: dict[tuple[str, str], tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    (metadata.ALGO, "train"): (
        [_OPENER, _SAMPLES, _model_in("models", optional=True, multiple=True)],
        [_model_out("model")],
    ),
    (metadata.ALGO, "predict"): _PREDICT_MODEL,
    (metadata.AGGREGATE_ALGO, "aggregate"): ([_model_in("models", multiple=True)], [_model_out("model")]),
    (metadata.AGGREGATE_ALGO, "predict"): _PREDICT_MODEL,
    (metadata.COMPOSITE_ALGO, "train"): (
        [_OPENER, _SAMPLES, _model_in("local", optional=True), _model_in("shared", optional=True)],
        [_model_out("local"), _model_out("shared")],
    ),
    (metadata.COMPOSITE_ALGO, "predict"): (
        [_OPENER, _SAMPLES, _model_in("local"), _model_in("shared")],
        [_model_out("predictions")],
    ),
    (metadata.OBJECTIVE, "score"): (
        [_OPENER, _SAMPLES, _model_in("predictions")],
        [{"identifier": "performance", "kind": "ASSET_PERFORMANCE", "multiple": False}],
    ),
}
MAIN_ROLE = {
    metadata.ALGO: "train",
    metadata.AGGREGATE_ALGO: "aggregate",
    metadata.COMPOSITE_ALGO: "train",
    metadata.OBJECTIVE: "score",
}
PREDICT_FOR = "legacy_predict_for"
KIND_WORDS = {
    metadata.ALGO: "an algo",
    metadata.AGGREGATE_ALGO: "an aggregate algo",
    metadata.COMPOSITE_ALGO: "a composite algo",
    metadata.OBJECTIVE: "an objective",
}


def _permissions(value: specs.Permissions) -> dict[str, Any]:
    return {"public": value.public, "authorized_ids": [] if value.public else list(value.authorized_ids)}


def _predict_name(name: str) -> str:
    suffix = " (predict)"
    return name[: 100 - len(suffix)] + suffix


class AssetRegistry(OrganizationRoom):
    """add_algo & co. for one organization."""

    def __init__(self, client: SubstraClient, catalog: Catalog, records: Records, creator: Callable[[], str]) -> None:
        super().__init__(client, catalog, creator)
        self.records = records

    # -- lookups -----------------------------------------------------------------------------------

    def functions(
        self, predicate: Callable[[models.Function], bool], owner: Optional[str] = None
    ) -> list[models.Function]:
        """Visible functions (of ``owner`` only, if given) matching ``predicate``, oldest first."""
        found = []
        filters = {"owner": [owner]} if owner else None
        for function in self.client.list_function(filters=filters, order_by="creation_date", ascending=True):
            self.catalog.remember(function)
            if predicate(function):
                found.append(function)
        return found

    @staticmethod
    def _find(
        functions: Sequence[models.Function], kind: str, checksum: str, predict_for: Optional[str] = None
    ) -> Optional[models.Function]:
        for function in functions:
            meta = function.metadata
            if (
                meta.get(metadata.KIND) == kind
                and meta.get(metadata.CHECKSUM) == checksum
                and (predict_for is None or meta.get(PREDICT_FOR) == predict_for)
            ):
                return function
        return None

    def _same_file(self, kind: str, checksum: str, predict_for: Optional[str] = None) -> Optional[models.Function]:
        """This organization's oldest function of ``kind`` registered from the same file."""
        return self._find(self.functions(lambda _: True, owner=self.creator), kind, checksum, predict_for)

    def _create(self, create: Callable[[], str], find: Callable[[], Optional[str]]) -> str:
        """Create and return the key; after a lost answer, look again before giving up (never send twice)."""
        try:
            return create()
        except AssetMaybeCreatedError:
            found = find()
            if found is None:
                raise
            logger.info("the creation's answer was lost, but the asset is there: %s", found)
            return found

    def _same_file_key(self, kind: str, checksum: str, predict_for: Optional[str] = None) -> Optional[str]:
        found = self._same_file(kind, checksum, predict_for)
        return found.key if found else None

    # -- functions ---------------------------------------------------------------------------------

    def _register_function(
        self,
        kind: str,
        role: str,
        *,
        name: str,
        archive: pathlib.Path,
        description: pathlib.Path,
        permissions: dict[str, Any],
        meta: Mapping[str, str],
        field: str,
    ) -> str:
        inputs, outputs = FUNCTION_IO[(kind, role)]
        with tempfile.TemporaryDirectory(prefix="substra-legacy-") as tmp:
            rewritten = archives.role_archive(archive, role, pathlib.Path(tmp) / f"{role}.tar.gz", field)
            return self.client.add_function(
                {
                    "name": name,
                    "description": description,
                    "file": rewritten,
                    "permissions": permissions,
                    "metadata": dict(meta),
                    "inputs": inputs,
                    "outputs": outputs,
                }
            )

    def add_algo(self, kind: str, data: Any, exist_ok: bool, method: str) -> dict[str, Any]:
        """add_algo / add_aggregate_algo / add_composite_algo."""
        spec = specs.parse(specs.AlgoData, data, method)
        user = metadata.check_user_metadata(spec.metadata, f"{method}.metadata")
        checksum = file_sha256(spec.file)
        field = f"{method}.file"
        archives.with_function_name(self._dockerfile(spec.file, field), MAIN_ROLE[kind], field)  # before any request
        mine = self.functions(lambda _: True, owner=self.creator)  # one listing for both look-ups
        existing = self._find(mine, kind, checksum)
        if existing is not None:
            return self._existing(existing, kind, exist_ok)
        common: dict[str, Any] = {
            "archive": spec.file,
            "description": spec.description,
            "permissions": _permissions(spec.permissions),
            "field": field,
        }
        # a predict function left by an earlier attempt that stopped before the algo itself is reused
        leftover = self._find(mine, metadata.PREDICT, checksum, predict_for=kind)
        predict = (
            leftover.key
            if leftover
            else self._create(
                lambda: self._register_function(
                    kind,
                    "predict",
                    name=_predict_name(spec.name),
                    meta={metadata.KIND: metadata.PREDICT, metadata.CHECKSUM: checksum, PREDICT_FOR: kind},
                    **common,
                ),
                lambda: self._same_file_key(metadata.PREDICT, checksum, predict_for=kind),
            )
        )
        meta = {**user, metadata.KIND: kind, metadata.CHECKSUM: checksum, metadata.PREDICT_KEY: predict}
        key = self._create(
            lambda: self._register_function(kind, MAIN_ROLE[kind], name=spec.name, meta=meta, **common),
            lambda: self._same_file_key(kind, checksum),
        )
        return views.algo_view(self.catalog.function(key, (kind,)))

    def _dockerfile(self, archive: pathlib.Path, field: str) -> str:
        members = [m for m in archives.read_members(archive, field) if m.name == archives.DOCKERFILE]
        if not members:
            raise LegacyTranslationError.for_field(field, str(archive), "has no Dockerfile at its root")
        return members[-1].data.decode("utf-8")

    def _existing(self, function: models.Function, kind: str, exist_ok: bool) -> dict[str, Any]:
        if not exist_ok:
            what = KIND_WORDS[kind] + (
                " with the same description" if kind == metadata.OBJECTIVE else " with the same archive"
            )
            raise already_exists(what, function.key)
        if kind == metadata.OBJECTIVE:
            return self.objective_view(function)
        return views.algo_view(function)

    def objective_view(self, function: models.Function) -> dict[str, Any]:
        """An objective, with the worker of its test dataset."""
        test_dataset = function.metadata.get(metadata.TEST_DATASET)
        worker = self.catalog.dataset_model(test_dataset).owner if test_dataset else None
        return views.objective_view(function, worker)

    def add_objective(self, data: Any, exist_ok: bool) -> dict[str, Any]:
        """add_objective: a metric function carrying the objective's test data."""
        method = "add_objective"
        spec = specs.parse(specs.ObjectiveData, data, method)
        user = metadata.check_user_metadata(spec.metadata, f"{method}.metadata")
        checksum = file_sha256(spec.description)
        archives.with_function_name(self._dockerfile(spec.metrics, f"{method}.metrics"), "score", f"{method}.metrics")
        existing = self._same_file(metadata.OBJECTIVE, checksum)
        if existing is not None:
            return self._existing(existing, metadata.OBJECTIVE, exist_ok)
        meta = {**user, metadata.KIND: metadata.OBJECTIVE, metadata.CHECKSUM: checksum}
        meta[metadata.METRICS_NAME] = spec.metrics_name
        meta[metadata.METRICS_CHECKSUM] = file_sha256(spec.metrics)
        if spec.test_data_manager_key:
            self.catalog.dataset(spec.test_data_manager_key, f"{method}.test_data_manager_key")
            meta[metadata.TEST_DATASET] = spec.test_data_manager_key
            meta.update(metadata.split_keys(metadata.TEST_SAMPLES, spec.test_data_sample_keys))
        key = self._create(
            lambda: self._register_function(
                metadata.OBJECTIVE,
                "score",
                name=spec.name,
                archive=spec.metrics,
                description=spec.description,
                permissions=_permissions(spec.permissions),
                meta=meta,
                field=f"{method}.metrics",
            ),
            lambda: self._same_file_key(metadata.OBJECTIVE, checksum),
        )
        return self.objective_view(self.catalog.function(key, (metadata.OBJECTIVE,)))

    # -- datasets ------------------------------------------------------------------------------------

    def _same_opener(self, checksum: str) -> Optional[models.Dataset]:
        mine = {"owner": [self.creator]}
        for dataset in self.client.list_dataset(filters=mine, order_by="creation_date", ascending=True):
            if dataset.opener.checksum == checksum or dataset.metadata.get(metadata.CHECKSUM) == checksum:
                return dataset
        return None

    def dataset_view(self, dataset: models.Dataset, full: bool) -> dict[str, Any]:
        """A dataset's 0.x view; ``full`` adds the train/test split of its samples."""
        split = None
        if full:
            test_only = self.catalog.test_only(dataset.data_sample_keys)  # recorded by whichever organization
            keys = list(dataset.data_sample_keys)
            split = ([k for k in keys if k not in test_only], [k for k in keys if k in test_only])
        return views.dataset_view(dataset, self.catalog.objective_of_dataset(dataset), split)

    def add_dataset(self, data: Any, exist_ok: bool) -> dict[str, Any]:
        """add_dataset: opener, description, permissions; ``type`` and ``objective_key`` in metadata."""
        method = "add_dataset"
        spec = specs.parse(specs.DatasetData, data, method)
        user = metadata.check_user_metadata(spec.metadata, f"{method}.metadata")
        checksum = file_sha256(spec.data_opener)
        existing = self._same_opener(checksum)
        if existing is not None:
            if not exist_ok:
                raise already_exists("a dataset with the same opener", existing.key)
            return self.dataset_view(existing, full=True)
        meta = {**user, metadata.CHECKSUM: checksum, metadata.DATASET_TYPE: spec.type}
        if spec.objective_key:
            self.catalog.objective(spec.objective_key, f"{method}.objective_key")
            meta[metadata.OBJECTIVE_KEY] = spec.objective_key
        permissions = _permissions(spec.permissions)
        key = self._create(
            lambda: self.client.add_dataset(
                {
                    "name": spec.name,
                    "data_opener": spec.data_opener,
                    "description": spec.description,
                    "permissions": permissions,
                    # 0.x had no log permission: whoever may process the data may read the logs
                    "logs_permission": permissions,
                    "metadata": meta,
                }
            ),
            lambda: getattr(self._same_opener(checksum), "key", None),
        )
        return self.dataset_view(self.catalog.dataset_model(key), full=True)

    def link_dataset_with_objective(self, dataset_key: str, objective_key: str) -> dict[str, Any]:
        """0.x allowed one objective per dataset; linking the same one again is a no-op here."""
        dataset_key = specs.legacy_key_for(dataset_key, "dataset_key")
        objective_key = specs.legacy_key_for(objective_key, "objective_key")
        dataset = self.catalog.dataset_model(dataset_key, "dataset_key")
        self.catalog.objective(objective_key, "objective_key")
        current = self.catalog.objective_of_dataset(dataset)
        if current and current != objective_key:
            raise invalid_request(
                f"dataset {dataset_key} is already associated with objective {current}", key=dataset_key
            )
        if not current:
            self.records.link_objective(dataset_key, objective_key)
        return self.dataset_view(dataset, full=True)

    # -- data samples --------------------------------------------------------------------------------

    def _fingerprints(self, folders: Sequence[pathlib.Path], field: str, local: bool) -> list[str]:
        prints = []
        for i, folder in enumerate(folders):
            where = f"{field}.{i}" if len(folders) > 1 or field == "paths" else field
            if not folder.is_dir():
                where_text = "on this machine" if local else "from this machine (local=False)"
                raise LegacyTranslationError.for_field(
                    where,
                    str(folder),
                    f"is not a readable folder {where_text}: the 0.x AlreadyExists rule for samples compares "
                    "their content, so the client must read it",
                )
            prints.append(sample_fingerprint(folder, where).split(":", 1)[1])
        return prints

    def add_data_samples(
        self,
        folders: Sequence[pathlib.Path],
        dataset_keys: list[str],
        *,
        test_only: bool,
        local: bool,
        exist_ok: bool,
        field: str,
    ) -> list[dict[str, Any]]:
        """Register sample folders (or return them, with ``exist_ok``); record content and test_only."""
        prints = self._fingerprints(folders, field, local)
        for i, content in enumerate(prints):
            if content in prints[:i]:
                raise LegacyTranslationError.for_field(
                    f"{field}.{i}", str(folders[i]), f"has the same content as {field}.{prints.index(content)}"
                )
        for dataset_key in dataset_keys:
            self.catalog.dataset(dataset_key, "data_manager_keys")
        known = self.records.samples(owner=self.creator)
        existing = [known[p] for p in prints if p in known]
        if existing and exist_ok and len(existing) == len(prints):
            return [views.data_sample_view(self.client.get_data_sample(s.key), s.test_only) for s in existing]
        if len(existing) == 1 and len(prints) == 1:
            raise already_exists("a data sample with the same content", existing[0].key)
        if existing:
            found = [s.key for s in existing]
            raise AlreadyExists(
                f"data samples with the same content as some of the paths already exist: {found}",
                status_code=409,
                key=found,
            )
        payload = {"data_manager_keys": dataset_keys}
        if field == "path":
            keys = [self.client.add_data_sample({**payload, "path": folders[0]}, local=local)]
        else:
            keys = self.client.add_data_samples({**payload, "paths": list(folders)}, local=local)
        if len(keys) != len(prints):
            raise invalid_request(f"{field}: the server returned {len(keys)} keys for {len(prints)} folders", key=keys)
        self.records.record_samples(dict(zip(prints, keys, strict=True)), test_only)
        return [
            {"key": k, "owner": self.creator, "data_manager_keys": list(dataset_keys), "test_only": test_only}
            for k in keys
        ]
