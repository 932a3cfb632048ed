"""Steps for server-keyed assets: datasets (+ their samples) and functions.

The server chooses these keys, so a rerun recognises what a previous attempt registered by
fingerprint: datasets and functions carry theirs in their metadata; data samples, which have
no metadata, are tracked by content hash in a client-side ledger (see :mod:`.ledger`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from substra_flows import exceptions as exc
from substra_flows import schemas
from substra_flows.schemas import MAX_NAME_LENGTH, build_spec, check_key

from .fingerprints import FINGERPRINT_KEY, asset_fingerprint, deterministic_targz, file_sha256, sample_fingerprint
from .ledger import PendingBatch, SampleLedger

__all__ = [
    "ReconciliationError",
    "RegisteredDataset",
    "RegisteredFunction",
    "add_data_samples",
    "register_dataset",
    "register_function",
]

logger = logging.getLogger("substra_flows.steps")

#: how many times an in-doubt creation is looked up before it is judged "not created"
RECONCILE_CHECKS = 3
#: seconds between those looks (the server may still be processing a request whose answer was lost)
RECONCILE_PAUSE = 2.0
#: a pending batch younger than this may still be in flight: look RECONCILE_CHECKS times, not once
RECENT_BATCH_SECONDS = 600.0
_sleep: Callable[[float], None] = time.sleep

T = TypeVar("T")


class ReconciliationError(exc.SubstraError):
    """The server's state cannot be matched with what this step recorded (e.g. samples added by
    someone else while a batch was in doubt): the step stops rather than guess and duplicate."""


@dataclass
class RegisteredDataset:
    """Result of :func:`register_dataset`."""

    dataset_key: str
    sample_keys: list[str]  # every sample of this registration, in the order of the given paths
    new_sample_keys: list[str]  # those this call created (empty on a full rerun)
    created: bool  # the dataset itself was created by this call

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for XCom and Prefect results)."""
        return dataclasses.asdict(self)


@dataclass
class RegisteredFunction:
    """Result of :func:`register_function`."""

    function_key: str
    created: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Argument checks (all run before the first request)
# --------------------------------------------------------------------------------------------


def check_name(name: Any, field: str = "name") -> str:
    """A non-empty string of at most 100 characters (the orchestrator's limit)."""
    if not isinstance(name, str) or not name.strip():
        raise exc.SpecValidationError.for_field(field, name, "must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise exc.SpecValidationError.for_field(field, name, f"is longer than {MAX_NAME_LENGTH} characters")
    return name


def check_batch_size(batch_size: Any, field: str = "batch_size") -> int:
    """A positive integer (booleans refused)."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise exc.SpecValidationError.for_field(field, batch_size, "must be an integer >= 1")
    return batch_size


def _existing_file(value: Any, field: str) -> Path:
    """An existing regular file."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise exc.SpecValidationError.for_field(field, value, "must be a file path")
    path = Path(value)
    if not path.exists():
        raise exc.LoadDataException.for_field(field, str(path), f"file {path} does not exist")
    if not path.is_file():
        raise exc.LoadDataException.for_field(field, str(path), f"{path} is not a regular file")
    return path


def _sample_folders(sample_paths: Any, field: str = "sample_paths") -> tuple[list[Path], list[str]]:
    """Check every sample folder and fingerprint its content."""
    if isinstance(sample_paths, (str, bytes, os.PathLike)) or not isinstance(sample_paths, Sequence):
        raise exc.SpecValidationError.for_field(field, sample_paths, "must be a list of sample folders")
    folders: list[Path] = []
    hashes: list[str] = []
    for i, raw in enumerate(sample_paths):
        where = f"{field}.{i}"
        if not isinstance(raw, (str, os.PathLike)) or not str(raw):
            raise exc.SpecValidationError.for_field(where, raw, "must be a folder path")
        folder = Path(raw)
        if not folder.exists():
            raise exc.LoadDataException.for_field(where, str(folder), f"folder {folder} does not exist")
        if not folder.is_dir():
            raise exc.LoadDataException.for_field(where, str(folder), f"{folder} is not a folder")
        folders.append(folder)
        hashes.append(sample_fingerprint(folder, where))
    return folders, hashes


def _permissions(value: Mapping[str, Any] | None, default: Mapping[str, Any]) -> dict[str, Any]:
    """The given permissions, or the default (checked later by the spec)."""
    if value is None:
        return {"public": default["public"], "authorized_ids": list(default["authorized_ids"])}
    if not isinstance(value, Mapping):
        return value  # type: ignore[return-value]  # let the spec report it with its field name
    return dict(value)


def _normalized_permissions(permissions: schemas.Permissions) -> dict[str, Any]:
    """Order-free form of permissions, for fingerprints."""
    return {"public": permissions.public, "authorized_ids": sorted(set(permissions.authorized_ids))}


def _user_metadata(metadata: Mapping[str, str] | None) -> dict[str, Any]:
    """The caller's metadata, refusing our reserved fingerprint key."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise exc.SpecValidationError.for_field("metadata", metadata, "must be a dict of strings")
    if FINGERPRINT_KEY in metadata:
        raise exc.SpecValidationError.for_field(
            f"metadata.{FINGERPRINT_KEY}", metadata[FINGERPRINT_KEY], "is reserved for substra-flows' fingerprint"
        )
    return dict(metadata)


_PLACEHOLDER_FINGERPRINT = "v1:" + "0" * 64


# --------------------------------------------------------------------------------------------
# Lookups
# --------------------------------------------------------------------------------------------


def my_organization(client: Any) -> str:
    """The organization id of the client's user (owner of what it creates)."""
    return str(client.organization_info().organization_id)


def _oldest_with_fingerprint(assets: Sequence[Any], name: str, fingerprint: str) -> Any | None:
    """Among listed assets, the oldest one with this exact name and fingerprint (deterministic if
    an earlier failure left duplicates)."""
    matches = [a for a in assets if a.name == name and (a.metadata or {}).get(FINGERPRINT_KEY) == fingerprint]
    if not matches:
        return None
    if len(matches) > 1:
        logger.warning(
            "%d assets named %r share fingerprint %s (%s); using the oldest",
            len(matches),
            name,
            fingerprint,
            ", ".join(a.key for a in matches),
        )
    return min(matches, key=lambda a: (a.creation_date is None, a.creation_date or 0, a.key))


def find_dataset(client: Any, name: str, fingerprint: str, owner: str) -> Any | None:
    """The dataset of ``owner`` with this name and fingerprint, if any."""
    return _oldest_with_fingerprint(client.list_dataset(filters={"name": name, "owner": [owner]}), name, fingerprint)


def find_function(client: Any, name: str, fingerprint: str, owner: str) -> Any | None:
    """The function of ``owner`` with this name and fingerprint, if any."""
    return _oldest_with_fingerprint(client.list_function(filters={"name": name, "owner": [owner]}), name, fingerprint)


def _create_or_find(what: str, create: Callable[[], str], find: Callable[[], Any | None]) -> str:
    """Create a server-keyed asset. If the answer is lost (the request may have created it), look it
    up a few times before sending once more, so a lost answer does not become a duplicate."""
    try:
        return create()
    except exc.AssetMaybeCreatedError as error:
        logger.warning("%s: creation in doubt (%s); looking it up before resending", what, error.cause)
        for attempt in range(RECONCILE_CHECKS):
            found = find()
            if found is not None:
                logger.info("%s: the in-doubt request did create it (%s)", what, found.key)
                return str(found.key)
            if attempt + 1 < RECONCILE_CHECKS:
                _sleep(RECONCILE_PAUSE)
        logger.warning("%s: not found after the in-doubt request; sending it once more", what)
        return create()


# --------------------------------------------------------------------------------------------
# Datasets and samples
# --------------------------------------------------------------------------------------------


def dataset_fingerprint(spec: schemas.DatasetSpec, opener_sha256: str) -> str:
    """What identifies a dataset: its name, opener bytes and permissions (not description or metadata)."""
    return asset_fingerprint(
        "dataset",
        {
            "name": spec.name,
            "opener_sha256": opener_sha256,
            "permissions": _normalized_permissions(spec.permissions),
            "logs_permission": _normalized_permissions(spec.logs_permission),
        },
    )


def register_dataset(
    client: Any,
    *,
    name: str,
    opener: str | Path,
    sample_paths: Sequence[str | Path],
    description: str | Path | None = None,
    permissions: Mapping[str, Any] | None = None,
    logs_permission: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
    local: bool = True,
    batch_size: int = 20,
    ledger_dir: str | Path | None = None,
) -> RegisteredDataset:
    """Find (by fingerprint: name + opener hash in metadata) or create a dataset, then add the samples
    not registered yet, in batches recorded in a resumable ledger.

    Defaults: ``permissions`` private to the owner; ``logs_permission`` private, shared with the same
    organizations as ``permissions``. The fingerprint also covers both permissions, since they cannot
    be changed after registration; description and metadata are not part of it.
    """
    check_name(name)
    check_batch_size(batch_size)
    opener_path = _existing_file(opener, "opener")
    description_path = None if description is None else _existing_file(description, "description")
    folders, hashes = _sample_folders(sample_paths)
    user_metadata = _user_metadata(metadata)
    data_permissions = _permissions(permissions, {"public": False, "authorized_ids": []})
    default_logs = {
        "public": False,
        "authorized_ids": data_permissions.get("authorized_ids", []) if isinstance(data_permissions, dict) else [],
    }
    raw_spec: dict[str, Any] = {
        "name": name,
        "data_opener": opener_path,
        "description": description_path,
        "permissions": data_permissions,
        "logs_permission": _permissions(logs_permission, default_logs),
        "metadata": {**user_metadata, FINGERPRINT_KEY: _PLACEHOLDER_FINGERPRINT},
    }
    spec = build_spec(schemas.DatasetSpec, raw_spec)
    fingerprint = dataset_fingerprint(spec, file_sha256(opener_path))
    spec = spec.model_copy(update={"metadata": {**user_metadata, FINGERPRINT_KEY: fingerprint}})

    owner = my_organization(client)
    found = find_dataset(client, name, fingerprint, owner)
    if found is not None:
        dataset_key, created = str(found.key), False
        logger.debug("dataset %r found by fingerprint: %s", name, dataset_key)
    else:
        dataset_key = _create_or_find(
            f"dataset {name!r}",
            lambda: client.add_dataset(spec),
            lambda: find_dataset(client, name, fingerprint, owner),
        )
        created = True
        logger.debug("dataset %r created: %s", name, dataset_key)
    all_keys, new_keys = sync_samples(
        client, dataset_key, folders, hashes, local=local, batch_size=batch_size, ledger_dir=ledger_dir
    )
    return RegisteredDataset(dataset_key=dataset_key, sample_keys=all_keys, new_sample_keys=new_keys, created=created)


def add_data_samples(
    client: Any,
    *,
    dataset_key: str,
    sample_paths: Sequence[str | Path],
    local: bool = True,
    batch_size: int = 20,
    ledger_dir: str | Path | None = None,
) -> list[str]:
    """Register the samples of ``sample_paths`` not yet registered for the dataset (found by content
    hash); return the keys of ALL given paths, in their order (so a rerun returns the same list)."""
    dataset_key = check_key(dataset_key, "dataset_key")
    check_batch_size(batch_size)
    folders, hashes = _sample_folders(sample_paths)
    all_keys, _ = sync_samples(
        client, dataset_key, folders, hashes, local=local, batch_size=batch_size, ledger_dir=ledger_dir
    )
    return all_keys


def sync_samples(
    client: Any,
    dataset_key: str,
    folders: Sequence[Path],
    hashes: Sequence[str],
    *,
    local: bool,
    batch_size: int,
    ledger_dir: str | Path | None,
) -> tuple[list[str], list[str]]:
    """Make every content of ``hashes`` a sample of the dataset, registering only what the ledger
    does not already hold. Returns (keys of all folders in order, keys created now).

    Folders with identical content are one sample (the same key is returned for each).
    """
    if not folders:
        return [], []
    ledger = SampleLedger.for_dataset(ledger_dir, client.url, dataset_key)
    with ledger.locked():
        ledger.load()
        on_server = set(client.get_dataset(dataset_key).data_sample_keys)
        gone = ledger.forget_missing(on_server)
        if gone:
            logger.warning(
                "dataset %s: %d sample(s) of the ledger are no longer on the server (%s); they will be "
                "registered again",
                dataset_key,
                len(gone),
                ", ".join(sorted(gone.values())[:5]),
            )
            ledger.save()
        if ledger.pending is not None:
            on_server |= _settle_pending(client, ledger, "left by an interrupted run")
        by_hash: dict[str, Path] = {}
        for folder, content in zip(folders, hashes, strict=True):
            by_hash.setdefault(content, folder)
        todo = [h for h in by_hash if h not in ledger.samples]
        created: list[str] = []
        if todo:
            logger.info(
                "dataset %s: %d sample(s) to register, %d already registered",
                dataset_key,
                len(todo),
                len(by_hash) - len(todo),
            )
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            keys = _send_batch(client, ledger, batch, [by_hash[h] for h in batch], on_server, local)
            created.extend(keys)
            on_server.update(keys)
        return [ledger.samples[h] for h in hashes], created


def _send_batch(
    client: Any,
    ledger: SampleLedger,
    hashes: list[str],
    folders: list[Path],
    on_server: set[str],
    local: bool,
) -> list[str]:
    """Register one batch, recorded in the ledger as pending first, so that whatever happens (lost
    answer, crash) a later look at the dataset can tell whether it was applied."""
    ledger.pending = PendingBatch(hashes=list(hashes), foreign=sorted(on_server - set(ledger.samples.values())))
    ledger.save()
    spec = {"paths": [str(f) for f in folders], "data_manager_keys": [ledger.dataset_key]}
    resent = False
    while True:
        try:
            keys = list(client.add_data_samples(spec, local=local))
            break
        except exc.AssetMaybeCreatedError as error:
            logger.warning(
                "dataset %s: batch of %d sample(s) in doubt (%s); checking the dataset before resending",
                ledger.dataset_key,
                len(hashes),
                error.cause,
            )
            found = _reconcile(client, ledger, ledger.pending)
            if found is not None:
                keys = found
                break
            if resent:
                raise  # the pending entry stays: the next run reconciles it
            resent = True
            logger.warning("dataset %s: the in-doubt batch was not applied; sending it again", ledger.dataset_key)
        except (exc.InvalidRequest, exc.AuthorizationError, exc.NotFound, exc.SpecValidationError):
            ledger.pending = None  # refused outright: nothing was created
            ledger.save()
            raise
    if len(keys) != len(hashes):
        raise exc.InvalidResponse(
            f"dataset {ledger.dataset_key}: sent {len(hashes)} sample(s) but the server answered "
            f"{len(keys)} key(s); the batch stays pending in {ledger.path} and is checked on the next run",
            key=ledger.dataset_key,
        )
    ledger.record(hashes, keys)
    ledger.pending = None
    ledger.save()
    return keys


def _settle_pending(client: Any, ledger: SampleLedger, why: str) -> set[str]:
    """Resolve the ledger's pending batch: record its keys if it was applied, drop it otherwise.
    Returns the keys adopted."""
    pending = ledger.pending
    assert pending is not None
    logger.info("dataset %s: checking a batch of %d sample(s) %s", ledger.dataset_key, len(pending.hashes), why)
    found = _reconcile(client, ledger, pending)
    if found is not None:
        ledger.record(pending.hashes, found)
        logger.info("dataset %s: that batch was applied; recorded %d key(s)", ledger.dataset_key, len(found))
    else:
        logger.info("dataset %s: that batch was not applied; its samples will be sent", ledger.dataset_key)
    ledger.pending = None
    ledger.save()
    return set(found or ())


def _reconcile(client: Any, ledger: SampleLedger, pending: PendingBatch) -> list[str] | None:
    """Decide whether ``pending`` was applied, from the dataset's sample list.

    New keys = keys on the server that neither the ledger nor the batch's ``foreign`` snapshot know.
    Exactly as many as the batch: applied (returns them, in server order). None: not applied (after
    a few looks while the batch is recent: its request may still be in flight). Anything else: the
    counts cannot be explained by this batch alone -> ReconciliationError.
    """
    known = set(ledger.samples.values()) | set(pending.foreign)
    expected = len(pending.hashes)
    checks = RECONCILE_CHECKS if pending.age_seconds() < RECENT_BATCH_SECONDS else 1
    new: list[str] = []
    for attempt in range(checks):
        current = list(client.get_dataset(ledger.dataset_key).data_sample_keys)
        new = [k for k in current if k not in known]
        if len(new) == expected:
            return new
        if len(new) > expected:
            break
        if attempt + 1 < checks:
            _sleep(RECONCILE_PAUSE)
    if not new:
        return None
    raise ReconciliationError(
        f"dataset {ledger.dataset_key}: a batch of {expected} sample(s) is in doubt, but the dataset holds "
        f"{len(new)} sample(s) unknown to the ledger ({', '.join(new[:5])}{'...' if len(new) > 5 else ''}); "
        "someone else may be adding samples to it. Nothing was resent, to avoid duplicates; the batch stays "
        f"pending in {ledger.path}",
        key=ledger.dataset_key,
    )


# --------------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------------


def _io_list(value: Any, field: str) -> Any:
    """Function inputs/outputs keyed by identifier (wire shape) -> the SDK's list shape."""
    if isinstance(value, Mapping):
        return [
            {"identifier": ident, **spec} if isinstance(spec, Mapping) else {"identifier": ident, "kind": spec}
            for ident, spec in value.items()
        ]
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise exc.SpecValidationError.for_field(field, value, "must be a dict keyed by identifier, or a list")
    return [dict(item) if isinstance(item, Mapping) else item for item in value]


def function_fingerprint(spec: schemas.FunctionSpec, archive_sha256: str) -> str:
    """What identifies a function: name, archive bytes, inputs/outputs and permissions."""
    return asset_fingerprint(
        "function",
        {
            "name": spec.name,
            "archive_sha256": archive_sha256,
            "inputs": sorted((i.identifier, i.kind.value, i.optional, i.multiple) for i in spec.inputs or []),
            "outputs": sorted((o.identifier, o.kind.value, o.multiple) for o in spec.outputs or []),
            "permissions": _normalized_permissions(spec.permissions),
        },
    )


def register_function(
    client: Any,
    *,
    name: str,
    archive: str | Path,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    description: str | Path | None = None,
    permissions: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> RegisteredFunction:
    """Find (by fingerprint: name + archive hash in metadata) or create a function. ``archive`` may be a
    folder, tar-gzipped deterministically first.

    ``inputs``/``outputs`` may be keyed by identifier (the wire shape) or lists of dicts with an
    ``identifier`` (the SDK's). The fingerprint also covers inputs, outputs and permissions, so a
    changed signature gives a new function instead of reusing one that would not fit. Default
    permissions: private to the owner.
    """
    check_name(name)
    if not isinstance(archive, (str, os.PathLike)) or not str(archive):
        raise exc.SpecValidationError.for_field("archive", archive, "must be a file or folder path")
    archive_path = Path(archive)
    if not archive_path.exists():
        raise exc.LoadDataException.for_field("archive", str(archive_path), f"{archive_path} does not exist")
    description_path = None if description is None else _existing_file(description, "description")
    user_metadata = _user_metadata(metadata)
    input_list, output_list = _io_list(inputs, "inputs"), _io_list(outputs, "outputs")

    with tempfile.TemporaryDirectory(prefix="substra-flows-function-") as tmp:
        if archive_path.is_dir():
            if not (archive_path / "Dockerfile").is_file():
                raise exc.LoadDataException.for_field(
                    "archive", str(archive_path), f"folder {archive_path} has no Dockerfile at its root"
                )
            file_path = deterministic_targz(archive_path, Path(tmp) / "function.tar.gz")
        else:
            if not (zipfile.is_zipfile(archive_path) or _is_tar(archive_path)):
                raise exc.LoadDataException.for_field(
                    "archive", str(archive_path), f"{archive_path} is neither a folder, a tar nor a zip archive"
                )
            file_path = archive_path
        if description_path is None:
            description_path = Path(tmp) / "description.md"
            description_path.write_text(f"# {name}\n\nRegistered by substra-flows without a description.\n")
        raw_spec = {
            "name": name,
            "description": description_path,
            "file": file_path,
            "permissions": _permissions(permissions, {"public": False, "authorized_ids": []}),
            "metadata": {**user_metadata, FINGERPRINT_KEY: _PLACEHOLDER_FINGERPRINT},
            "inputs": input_list,
            "outputs": output_list,
        }
        spec = build_spec(schemas.FunctionSpec, raw_spec)
        fingerprint = function_fingerprint(spec, file_sha256(file_path))
        spec = spec.model_copy(update={"metadata": {**user_metadata, FINGERPRINT_KEY: fingerprint}})

        owner = my_organization(client)
        found = find_function(client, name, fingerprint, owner)
        if found is not None:
            logger.debug("function %r found by fingerprint: %s", name, found.key)
            return RegisteredFunction(function_key=str(found.key), created=False)
        key = _create_or_find(
            f"function {name!r}",
            lambda: client.add_function(spec),
            lambda: find_function(client, name, fingerprint, owner),
        )
        logger.debug("function %r created: %s", name, key)
        return RegisteredFunction(function_key=key, created=True)


def _is_tar(path: Path) -> bool:
    """tarfile.is_tarfile without raising on unreadable files."""
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False
