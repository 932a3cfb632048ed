"""Request specs: what the client sends, with the official SDK's names, fields and aliases.

Every spec is validated before a single byte goes out: bad values raise
:class:`~substra_flows.exceptions.SpecValidationError` naming the field path and the value.
``to_wire()`` on each spec returns the exact JSON document the REST API expects.
"""

from __future__ import annotations

import collections
import enum
import heapq
import pathlib
import re
import sys
import uuid
import warnings
from collections.abc import Mapping
from typing import Any, Optional, TypeVar

import pydantic
from pydantic import ConfigDict, Field

from substra_flows.exceptions import KeyFormatError, SpecRuleError, SpecValidationError, UnknownSpecKeysWarning

__all__ = [
    "AssetKind",
    "ComputePlanSpec",
    "ComputePlanTaskSpec",
    "ComputeTaskOutputSpec",
    "DataSampleSpec",
    "DatasetSpec",
    "FunctionInputSpec",
    "FunctionOutputSpec",
    "FunctionSpec",
    "InputRef",
    "Permissions",
    "PrivatePermissions",
    "StaticInputIdentifier",
    "TaskSpec",
    "UpdateComputePlanSpec",
    "UpdateComputePlanTasksSpec",
    "UpdateDatasetSpec",
    "UpdateFunctionSpec",
    "build_spec",
    "check_key",
    "new_key",
]

MAX_NAME_LENGTH = 100  # server limit on asset names (datasets, functions, plans), tags, metadata keys and values

SpecT = TypeVar("SpecT", bound=pydantic.BaseModel)


class AssetKind(str, enum.Enum):
    """Kinds of function inputs/outputs, with the exact wire strings."""

    model = "ASSET_MODEL"
    performance = "ASSET_PERFORMANCE"
    data_manager = "ASSET_DATA_MANAGER"
    data_sample = "ASSET_DATA_SAMPLE"


class StaticInputIdentifier(str, enum.Enum):
    """Input identifiers reserved by the platform."""

    chainkeys = "chainkeys"
    datasamples = "datasamples"
    opener = "opener"


_INPUT_KINDS = {AssetKind.data_sample, AssetKind.data_manager, AssetKind.model}
_OUTPUT_KINDS = {AssetKind.model, AssetKind.performance}


class ServerRule(ValueError):
    """Raised by validators that check what the server itself refuses with a 400: the spec error
    then becomes a :class:`~substra_flows.exceptions.SpecRuleError` (an ``InvalidRequest``)."""


#: pydantic error types that mirror a server-side 400 (names, tags and ids of the wrong length)
_SERVER_RULE_TYPES = frozenset({"string_too_long", "string_too_short"})


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def new_key() -> str:
    """A fresh client-chosen key (uuid4, canonical form)."""
    return str(uuid.uuid4())


_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_key(value: Any, what: str = "key") -> str:
    """Return ``value`` as a canonical hyphenated UUID string, or raise KeyFormatError."""
    if isinstance(value, str) and _CANONICAL_UUID.fullmatch(value):
        return value  # fast path: plans carry thousands of keys, nearly all already canonical
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            parsed = uuid.UUID(value)
        except ValueError:
            parsed = None
        if parsed is not None and len(value.strip("{}").replace("urn:uuid:", "")) in (32, 36):
            return str(parsed)
    raise KeyFormatError.for_field(what, value, "must be a UUID string, e.g. str(uuid.uuid4())")


def _uuid_field(value: Any) -> str:
    """pydantic hook: canonical UUID or a ValueError that pydantic reports with the field path."""
    try:
        return check_key(value)
    except KeyFormatError:
        raise ServerRule("must be a UUID string, e.g. str(uuid.uuid4())") from None


def _optional_uuid_field(value: Any) -> Any:
    """Like :func:`_uuid_field` but lets None through."""
    return None if value is None else _uuid_field(value)


def _check_metadata(value: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
    """Metadata keys may not contain '__' (the server reserves them); sizes are capped."""
    if value is None:
        return value
    for k, v in value.items():
        if "__" in k:
            raise ServerRule(f"metadata key {k!r} contains '__', which the server reserves; use '_'")
        if not k:
            raise ServerRule("metadata keys must not be empty")
        if len(k) > MAX_NAME_LENGTH or len(v) > MAX_NAME_LENGTH:
            raise ServerRule(f"metadata key {k!r}: keys and values are limited to {MAX_NAME_LENGTH} characters")
    return value


def _existing_file(value: pathlib.Path) -> pathlib.Path:
    """The path must name an existing regular file (checked before any upload)."""
    if not value.exists():
        raise ValueError(f"file {str(value)!r} does not exist")
    if not value.is_file():
        raise ValueError(f"{str(value)!r} is not a regular file")
    return value


# --------------------------------------------------------------------------------------------
# Base
# --------------------------------------------------------------------------------------------


class _Spec(pydantic.BaseModel):
    """Base of every spec. Unknown fields are refused here; :func:`build_spec` drops them with a
    warning first (as the SDK ignores them), unless the client is ``strict``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)

    def __str__(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True)


_MAX_PASSES = 6  # unknown keys hidden behind other errors surface pass after pass; bounded anyway


def build_spec(spec_class: type[SpecT], data: Any, *, what: str | None = None, strict: bool = False) -> SpecT:
    """Accept a spec instance, a dict, or another library's spec (e.g. ``substra.sdk.schemas``)
    and return a validated spec.

    Keys the spec does not define are dropped with one :class:`UnknownSpecKeysWarning` naming
    them (``strict=True``: refused instead). pydantic errors become one
    :class:`SpecValidationError` listing every bad field path with its value, e.g.
    ``ComputePlanSpec.tasks.0.task_id='x': must be a UUID``; a :class:`SpecRuleError` (also an
    ``InvalidRequest``) when every problem is one the server would refuse with a 400.
    """
    name = what or spec_class.__name__
    if isinstance(data, pydantic.BaseModel):
        # re-validate our own specs too: the object may have been mutated after construction
        data = data.model_dump(by_alias=False, exclude_unset=True)
    if not isinstance(data, Mapping):
        raise SpecValidationError.for_field(name, data, f"expected a dict or a {spec_class.__name__}")
    data = dict(data)
    dropped: list[str] = []
    plain = False
    for _ in range(_MAX_PASSES):
        try:
            spec = spec_class.model_validate(data)
            break
        except pydantic.ValidationError as err:
            if not plain:  # nested models of other libraries become dicts (a copy: the caller's data is kept)
                data, plain = _plain(data), True
                continue
            unknown = [e["loc"] for e in err.errors(include_url=False) if e["type"] == "extra_forbidden"]
            if strict or not unknown:
                _warn_dropped(name, dropped)
                raise spec_error(name, err, strict=strict) from None
            for loc in unknown:
                _drop(data, loc)
            dropped.extend(".".join(str(p) for p in loc) for loc in unknown)
    else:
        raise SpecValidationError.for_field(name, data, "could not be validated (unknown keys kept appearing)")
    _warn_dropped(name, dropped)
    return spec


def _warn_dropped(name: str, dropped: list[str]) -> None:
    """The one warning naming every key :func:`build_spec` dropped (nothing when none was)."""
    if dropped:
        warnings.warn(
            f"{name}: ignored key(s) {', '.join(repr(d) for d in dropped)}, which the spec does not define "
            "(the official SDK ignores them too); the client setting strict=True refuses them",
            UnknownSpecKeysWarning,
            stacklevel=_caller_stacklevel(),
        )


def _plain(value: Any) -> Any:
    """``value`` with every pydantic model turned into a dict and containers copied."""
    if isinstance(value, pydantic.BaseModel):
        return _plain(value.model_dump(by_alias=False, exclude_unset=True))
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _drop(data: Any, loc: tuple[int | str, ...]) -> None:
    """Delete the key at path ``loc`` (as pydantic reports it) from nested dicts and lists."""
    target = data
    for part in loc[:-1]:
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(target, dict):
        target.pop(loc[-1], None)


def _caller_stacklevel() -> int:
    """stacklevel that points a warning at the first frame outside substra_flows (the user's call)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("substra_flows"):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def spec_error(name: str, err: pydantic.ValidationError, *, strict: bool = False) -> SpecValidationError:
    """Translate a pydantic ValidationError into our error, keeping field paths and values."""
    errors = []
    lines = []
    server_rules = 0
    for item in err.errors(include_url=False):
        field = ".".join(str(p) for p in item["loc"]) or "(spec)"
        value = item.get("input")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key" + (" (strict=True refuses keys the spec does not define)" if strict else "")
        cause = (item.get("ctx") or {}).get("error")
        if item["type"] in _SERVER_RULE_TYPES or isinstance(cause, ServerRule):
            server_rules += 1
        errors.append({"field": field, "value": value, "message": message})
        shown = "(missing)" if item["type"] == "missing" else _short(value)
        lines.append(f"{name}.{field}={shown}: {message}")
    text = "invalid spec: " + "; ".join(lines)
    if errors and server_rules == len(errors):
        return SpecRuleError(text, errors=errors)
    return SpecValidationError(text, errors=errors)


def _short(value: Any, limit: int = 120) -> str:
    """Bounded repr for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Shared shapes
# --------------------------------------------------------------------------------------------


class Permissions(_Spec):
    """Request-side permissions: public, or restricted to ``authorized_ids`` (organization ids)."""

    public: bool
    authorized_ids: list[str] = Field(default_factory=list)


class PrivatePermissions(_Spec):
    """Permissions restricted to the listed organization ids."""

    authorized_ids: list[str]


class InputRef(_Spec):
    """One task input: either ``asset_key``, or a parent task's output."""

    identifier: str = Field(min_length=1)
    asset_key: Optional[str] = None
    parent_task_key: Optional[str] = None
    parent_task_output_identifier: Optional[str] = None

    _keys = pydantic.field_validator("asset_key", "parent_task_key")(_optional_uuid_field)

    @pydantic.model_validator(mode="after")
    def _asset_xor_parent(self) -> InputRef:
        """Exactly one of asset_key / (parent_task_key + parent_task_output_identifier)."""
        has_asset = bool(self.asset_key)
        has_parent = bool(self.parent_task_key) and bool(self.parent_task_output_identifier)
        half_parent = bool(self.parent_task_key) != bool(self.parent_task_output_identifier)
        if has_asset == has_parent or half_parent:
            raise ValueError(
                f"input {self.identifier!r}: give either asset_key, or both parent_task_key and "
                "parent_task_output_identifier"
            )
        return self

    def to_wire(self) -> dict[str, Any]:
        """All four keys, with nulls: the server reads ``asset_key`` without a default."""
        return {
            "identifier": self.identifier,
            "asset_key": self.asset_key,
            "parent_task_key": self.parent_task_key,
            "parent_task_output_identifier": self.parent_task_output_identifier,
        }


class ComputeTaskOutputSpec(_Spec):
    """One task output's permissions; ``is_transient`` travels as ``transient``."""

    permissions: Permissions
    is_transient: Optional[bool] = Field(False, alias="transient")

    def to_wire(self) -> dict[str, Any]:
        """Wire shape: ``{"permissions": {...}, "transient": bool}``."""
        return {"permissions": self.permissions.model_dump(), "transient": bool(self.is_transient)}


# --------------------------------------------------------------------------------------------
# Datasets and data samples
# --------------------------------------------------------------------------------------------


class DatasetSpec(_Spec):
    """A dataset (``data_manager`` on the wire): an opener script plus a Markdown description.

    Without ``description`` a placeholder is generated in memory at upload time (the SDK
    writes one next to the opener; we never touch the caller's folders).
    """

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    data_opener: pathlib.Path
    description: Optional[pathlib.Path] = None
    permissions: Permissions
    metadata: Optional[dict[str, str]] = None
    logs_permission: Permissions

    _files = pydantic.field_validator("data_opener")(_existing_file)
    _meta = pydantic.field_validator("metadata")(_check_metadata)

    @pydantic.field_validator("description")
    @classmethod
    def _description_exists(cls, value: Optional[pathlib.Path]) -> Optional[pathlib.Path]:
        """A given description must exist."""
        return None if value is None else _existing_file(value)

    def to_wire(self) -> dict[str, Any]:
        """The multipart ``json`` field; files travel as separate parts."""
        body: dict[str, Any] = {
            "name": self.name,
            "permissions": self.permissions.model_dump(),
            "logs_permission": self.logs_permission.model_dump(),
        }
        if self.metadata is not None:
            body["metadata"] = self.metadata
        return body


class UpdateDatasetSpec(_Spec):
    """Rename a dataset."""

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)


class DataSampleSpec(_Spec):
    """One (``path``) or several (``paths``) sample folders to attach to datasets."""

    path: Optional[pathlib.Path] = None
    paths: Optional[list[pathlib.Path]] = None
    data_manager_keys: list[str] = Field(min_length=1)
    followlinks: Optional[bool] = False

    @pydantic.field_validator("data_manager_keys")
    @classmethod
    def _dataset_keys(cls, value: list[str]) -> list[str]:
        """Dataset keys must be UUIDs."""
        return [_uuid_field(v) for v in value]

    @pydantic.model_validator(mode="after")
    def _one_of_path_paths(self) -> DataSampleSpec:
        """``path`` and ``paths`` are exclusive and one of them is required."""
        if self.path is not None and self.paths is not None:
            raise ValueError("'path' and 'paths' are exclusive: give one of them")
        if self.path is None and not self.paths:
            raise ValueError("give 'path' (one sample) or a non-empty 'paths' (several samples)")
        return self

    def is_many(self) -> bool:
        """True for a multi-sample spec."""
        return bool(self.paths)

    def folders(self) -> list[pathlib.Path]:
        """The sample folders, as given."""
        return list(self.paths) if self.paths else [self.path]  # type: ignore[list-item]


# --------------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------------


class FunctionInputSpec(_Spec):
    """A function input; reserved identifiers must match their kind."""

    identifier: str = Field(min_length=1)
    multiple: bool
    optional: bool
    kind: AssetKind

    @pydantic.model_validator(mode="after")
    def _reserved_identifiers(self) -> FunctionInputSpec:
        """opener <-> DATA_MANAGER (single, required); datasamples <-> DATA_SAMPLE."""
        if self.kind not in _INPUT_KINDS:
            raise ValueError(f"input {self.identifier!r}: kind {self.kind.value} cannot be a function input")
        if self.kind is AssetKind.data_manager:
            if self.identifier != StaticInputIdentifier.opener.value:
                raise ValueError(f"a data manager input must be named 'opener', not {self.identifier!r}")
            if self.multiple or self.optional:
                raise ValueError("the 'opener' input can be neither multiple nor optional")
        elif self.kind is AssetKind.data_sample:
            if self.identifier != StaticInputIdentifier.datasamples.value:
                raise ValueError(f"a data sample input must be named 'datasamples', not {self.identifier!r}")
        elif self.identifier in {i.value for i in StaticInputIdentifier}:
            raise ValueError(f"identifier {self.identifier!r} is reserved; kind {self.kind.value} cannot use it")
        return self


class FunctionOutputSpec(_Spec):
    """A function output (a model or a performance)."""

    identifier: str = Field(min_length=1)
    kind: AssetKind
    multiple: bool

    @pydantic.model_validator(mode="after")
    def _output_kind(self) -> FunctionOutputSpec:
        """Outputs are models or performances; a performance is single."""
        if self.kind not in _OUTPUT_KINDS:
            raise ValueError(f"output {self.identifier!r}: kind {self.kind.value} cannot be a function output")
        if self.kind is AssetKind.performance and self.multiple:
            raise ValueError(f"output {self.identifier!r}: a performance output cannot be multiple")
        return self


class FunctionSpec(_Spec):
    """A function: an archive with a Dockerfile, a description, and its inputs/outputs."""

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    description: pathlib.Path
    file: pathlib.Path
    permissions: Permissions
    metadata: Optional[dict[str, str]] = None
    inputs: Optional[list[FunctionInputSpec]] = None
    outputs: Optional[list[FunctionOutputSpec]] = None

    _files = pydantic.field_validator("description", "file")(_existing_file)
    _meta = pydantic.field_validator("metadata")(_check_metadata)

    @pydantic.field_validator("inputs", "outputs")
    @classmethod
    def _unique_identifiers(cls, value: Optional[list[Any]]) -> Optional[list[Any]]:
        """Identifiers must be unique within inputs, and within outputs."""
        seen: set[str] = set()
        for item in value or []:
            if item.identifier in seen:
                raise ValueError(f"identifier {item.identifier!r} is used twice")
            seen.add(item.identifier)
        return value

    def to_wire(self) -> dict[str, Any]:
        """Inputs and outputs become objects keyed by identifier (always sent, maybe empty)."""
        body: dict[str, Any] = {
            "name": self.name,
            "permissions": self.permissions.model_dump(),
            "inputs": {
                i.identifier: {"kind": i.kind.value, "optional": i.optional, "multiple": i.multiple}
                for i in self.inputs or []
            },
            "outputs": {o.identifier: {"kind": o.kind.value, "multiple": o.multiple} for o in self.outputs or []},
        }
        if self.metadata is not None:
            body["metadata"] = self.metadata
        return body


class UpdateFunctionSpec(_Spec):
    """Rename a function."""

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)


# --------------------------------------------------------------------------------------------
# Tasks and compute plans
# --------------------------------------------------------------------------------------------


class _TaskFields(_Spec):
    """Fields shared by standalone tasks and tasks inside a plan."""

    function_key: str
    worker: str = Field(min_length=1)
    tag: Optional[str] = Field(None, max_length=MAX_NAME_LENGTH)
    metadata: Optional[dict[str, str]] = None
    inputs: Optional[list[InputRef]] = None
    outputs: Optional[dict[str, ComputeTaskOutputSpec]] = None

    _function_key = pydantic.field_validator("function_key")(_uuid_field)
    _meta = pydantic.field_validator("metadata")(_check_metadata)

    def parent_keys(self) -> list[str]:
        """Keys of the tasks this one reads outputs from."""
        return [i.parent_task_key for i in self.inputs or [] if i.parent_task_key]


class TaskSpec(_TaskFields):
    """A task for ``bulk_create``; ``key`` is chosen by the client (uuid4 unless given)."""

    key: str = Field(default_factory=new_key)
    compute_plan_key: Optional[str] = None
    rank: Optional[int] = None

    _key = pydantic.field_validator("key")(_uuid_field)
    _plan_key = pydantic.field_validator("compute_plan_key")(_optional_uuid_field)

    def to_wire(self) -> dict[str, Any]:
        """One item of ``{"tasks": [...]}``, exactly as the SDK sends it."""
        return {
            "key": self.key,
            "function_key": self.function_key,
            "compute_plan_key": self.compute_plan_key,
            "worker": self.worker,
            "rank": self.rank,
            "tag": self.tag,
            "metadata": self.metadata,
            "inputs": [i.to_wire() for i in self.inputs or []],
            "outputs": {name: out.to_wire() for name, out in (self.outputs or {}).items()},
        }

    @classmethod
    def from_compute_plan(cls, compute_plan_key: str, spec: ComputePlanTaskSpec) -> TaskSpec:
        """The task of a plan spec, with ``task_id`` as its key (fields already validated by the plan spec)."""
        return cls.model_construct(
            key=spec.task_id,
            compute_plan_key=compute_plan_key,
            function_key=spec.function_key,
            worker=spec.worker,
            tag=spec.tag,
            metadata=spec.metadata,
            inputs=spec.inputs,
            outputs=spec.outputs,
        )


class ComputePlanTaskSpec(_TaskFields):
    """A task inside a compute plan spec; ``task_id`` becomes the task key (a UUID)."""

    task_id: str

    _task_id = pydantic.field_validator("task_id")(_uuid_field)


class _BaseComputePlanSpec(_Spec):
    """A plan key plus tasks; checks the task graph before anything is sent."""

    key: str
    tasks: Optional[list[ComputePlanTaskSpec]] = None

    _key = pydantic.field_validator("key")(_uuid_field)

    @pydantic.field_validator("tasks")
    @classmethod
    def _task_graph(cls, value: Optional[list[ComputePlanTaskSpec]]) -> Optional[list[ComputePlanTaskSpec]]:
        """Unique task ids and no dependency cycle."""
        if not value:
            return value
        ids = [t.task_id for t in value]
        duplicates = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
        if duplicates:
            raise ServerRule(f"task_id used by several tasks: {duplicates}")
        order_tasks_parents_first(value)  # raises ServerRule on a cycle
        return value

    def task_specs(self) -> list[TaskSpec]:
        """The plan's tasks as TaskSpecs, parents before children."""
        return [TaskSpec.from_compute_plan(self.key, t) for t in order_tasks_parents_first(self.tasks or [])]


class ComputePlanSpec(_BaseComputePlanSpec):
    """A compute plan; ``key`` is chosen by the client (uuid4 unless given)."""

    key: str = Field(default_factory=new_key)
    tag: Optional[str] = Field(None, max_length=MAX_NAME_LENGTH)
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    metadata: Optional[dict[str, str]] = None

    _meta = pydantic.field_validator("metadata")(_check_metadata)

    def to_wire(self) -> dict[str, Any]:
        """The ``POST /compute_plan/`` body (tasks go through ``bulk_create`` separately)."""
        body: dict[str, Any] = {"key": self.key, "name": self.name}
        if self.tag is not None:
            body["tag"] = self.tag
        if self.metadata is not None:
            body["metadata"] = self.metadata
        return body


class UpdateComputePlanTasksSpec(_BaseComputePlanSpec):
    """Tasks to add to an existing plan."""


class UpdateComputePlanSpec(_Spec):
    """Rename a compute plan."""

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)


TaskLike = TypeVar("TaskLike", ComputePlanTaskSpec, TaskSpec)


def order_tasks_parents_first(tasks: list[TaskLike]) -> list[TaskLike]:
    """Stable topological sort: every task after the parents it references in ``tasks``.

    Parents not in ``tasks`` are assumed to exist already on the server. Raises ServerRule (a
    ValueError) naming the tasks caught in a cycle.
    """
    keys = [t.task_id if isinstance(t, ComputePlanTaskSpec) else t.key for t in tasks]
    by_key = dict(zip(keys, tasks, strict=True))
    parents_of = [t.parent_keys() for t in tasks]  # once per task: plans run to thousands of tasks
    self_loops = [k for k, parents in zip(keys, parents_of, strict=True) if k in parents]
    if self_loops:
        raise ServerRule(f"task(s) {self_loops} use their own output as input")
    pending_parents = {k: {p for p in parents if p in by_key} for k, parents in zip(keys, parents_of, strict=True)}
    children: dict[str, list[str]] = {k: [] for k in by_key}
    for k, parents in pending_parents.items():
        for p in parents:
            children[p].append(k)
    position = {k: i for i, k in enumerate(keys)}
    ordered: list[str] = []
    heap = [(position[k], k) for k, parents in pending_parents.items() if not parents]
    heapq.heapify(heap)
    while heap:
        _, k = heapq.heappop(heap)
        ordered.append(k)
        for child in children[k]:
            pending_parents[child].discard(k)
            if not pending_parents[child]:
                heapq.heappush(heap, (position[child], child))
    if len(ordered) != len(tasks):
        stuck = sorted(k for k, ps in pending_parents.items() if ps)
        raise ServerRule(f"dependency cycle between tasks {stuck}")
    return [by_key[k] for k in ordered]
