"""Response models: what the server returns, tolerant to the fields it may add later.

Field names follow the official SDK's models. Status enums are ``str`` enums carrying the exact
wire strings, so ``task.status == "STATUS_DONE"`` and ``task.status is ComputeTaskStatus.done``
both hold. A status value unknown to this version is kept as a plain string rather than
rejected, so a newer server does not break waits and listings.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar, Union, cast

import pydantic
from pydantic import AfterValidator, ConfigDict, Field

from substra_flows.schemas import AssetKind

__all__ = [
    "AssetKind",
    "ComputePlan",
    "ComputePlanStatus",
    "ComputeTaskOutput",
    "ComputeTaskStatus",
    "DataSample",
    "Dataset",
    "File",
    "Function",
    "FunctionInput",
    "FunctionOutput",
    "FunctionStatus",
    "InputAsset",
    "InputRef",
    "Model",
    "Organization",
    "OrganizationInfo",
    "OutModel",
    "OutputAsset",
    "Performance",
    "Performances",
    "Permission",
    "Permissions",
    "Task",
    "TaskErrorType",
]


class ComputePlanStatus(str, enum.Enum):
    """Compute plan status (wire strings)."""

    unknown = "PLAN_STATUS_UNKNOWN"
    created = "PLAN_STATUS_CREATED"
    doing = "PLAN_STATUS_DOING"
    done = "PLAN_STATUS_DONE"
    failed = "PLAN_STATUS_FAILED"
    canceled = "PLAN_STATUS_CANCELED"


class ComputeTaskStatus(str, enum.Enum):
    """Task status (wire strings)."""

    unknown = "STATUS_UNKNOWN"
    waiting_for_builder_slot = "STATUS_WAITING_FOR_BUILDER_SLOT"
    building = "STATUS_BUILDING"
    waiting_for_parent_tasks = "STATUS_WAITING_FOR_PARENT_TASKS"
    waiting_for_executor_slot = "STATUS_WAITING_FOR_EXECUTOR_SLOT"
    executing = "STATUS_EXECUTING"
    done = "STATUS_DONE"
    failed = "STATUS_FAILED"
    canceled = "STATUS_CANCELED"


class FunctionStatus(str, enum.Enum):
    """Function (image build) status (wire strings)."""

    unknown = "FUNCTION_STATUS_UNKNOWN"
    waiting = "FUNCTION_STATUS_WAITING"
    building = "FUNCTION_STATUS_BUILDING"
    ready = "FUNCTION_STATUS_READY"
    failed = "FUNCTION_STATUS_FAILED"
    canceled = "FUNCTION_STATUS_CANCELED"


class TaskErrorType(str, enum.Enum):
    """Why a task failed (wire strings)."""

    build = "BUILD_ERROR"
    execution = "EXECUTION_ERROR"
    internal = "INTERNAL_ERROR"


# A status value unknown to this version stays a plain string: the enum is tried first, then str.
# left_to_right keeps that in pydantic-core (no Python call per value when a page is parsed).
_ENUM_FIRST = Field(union_mode="left_to_right")
PlanStatus = Annotated[Union[ComputePlanStatus, str], _ENUM_FIRST]
TaskStatus = Annotated[Union[ComputeTaskStatus, str], _ENUM_FIRST]
FnStatus = Annotated[Union[FunctionStatus, str], _ENUM_FIRST]
ErrorType = Annotated[Union[TaskErrorType, str], _ENUM_FIRST]
Kind = Annotated[Union[AssetKind, str], _ENUM_FIRST]


class _Model(pydantic.BaseModel):
    """Base of response models: extra server fields are kept, never rejected. Validators are built
    on first use (``defer_build``), so importing the package stays fast."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=(), defer_build=True)

    def __str__(self) -> str:
        return self.model_dump_json(indent=2)


class Permission(_Model):
    """Flat permission: public, or the listed organization ids."""

    public: bool
    authorized_ids: list[str] = Field(default_factory=list)


class Permissions(_Model):
    """Response-side permissions: ``process`` and ``download`` (always equal in 1.0)."""

    process: Permission
    download: Optional[Permission] = None


class File(_Model):
    """A stored file: checksum and absolute download URL."""

    checksum: str = ""
    storage_address: str = ""


class Organization(_Model):
    """One organization of the channel (``GET /organization/``)."""

    id: str
    is_current: bool = False
    creation_date: Optional[datetime] = None
    address: Optional[str] = None


class OrganizationInfoConfig(_Model):
    """``config`` of ``/info/``."""

    model_export_enabled: Optional[bool] = None


class OrganizationInfo(_Model):
    """``GET /info/``. Optional fields are absent for anonymous calls or in isolated mode."""

    host: Optional[str] = None
    organization_id: str
    organization_name: str
    config: OrganizationInfoConfig = Field(default_factory=OrganizationInfoConfig)
    channel: Optional[str] = None
    version: Optional[str] = None
    orchestrator_version: Optional[str] = None
    user: Optional[str] = None
    user_role: Optional[str] = None


class DataSample(_Model):
    """A data sample (its ``path`` is never returned by the server)."""

    key: str
    owner: str
    data_manager_keys: Optional[list[str]] = None
    path: Optional[str] = None
    creation_date: Optional[datetime] = None


class Dataset(_Model):
    """A dataset (``data_manager`` on the wire)."""

    key: str
    name: str
    owner: str
    permissions: Permissions
    data_sample_keys: list[str] = Field(default_factory=list)
    opener: File
    description: File
    metadata: dict[str, str] = Field(default_factory=dict)
    creation_date: Optional[datetime] = None
    logs_permission: Optional[Permission] = None


class FunctionInput(_Model):
    """A function input, flattened from the server's keyed object (``identifier`` is the key there)."""

    identifier: str = ""
    kind: Kind
    optional: bool = False
    multiple: bool = False


class FunctionOutput(_Model):
    """A function output, flattened from the server's keyed object."""

    identifier: str = ""
    kind: Kind
    multiple: bool = False


IO = TypeVar("IO", FunctionInput, FunctionOutput)


def _keyed_as_list(value: Union[dict[str, IO], list[IO]]) -> list[IO]:
    """``{"model": FunctionInput(...)}`` (validated by pydantic-core, identifier unset) ->
    ``[FunctionInput(identifier="model", ...)]``: only the identifier is written, nothing is rebuilt."""
    if isinstance(value, dict):
        for identifier, item in value.items():
            item.__dict__["identifier"] = identifier
            item.__pydantic_fields_set__.add("identifier")
        return list(value.values())
    return value


if TYPE_CHECKING:
    FunctionInputs = list[FunctionInput]
    FunctionOutputs = list[FunctionOutput]
else:
    # the server keys inputs/outputs by identifier, the SDK lists them: pydantic-core validates
    # either shape, and a small after-validator only renames (no second validation pass)
    FunctionInputs = Annotated[
        Union[dict[str, FunctionInput], list[FunctionInput]], _ENUM_FIRST, AfterValidator(_keyed_as_list)
    ]
    FunctionOutputs = Annotated[
        Union[dict[str, FunctionOutput], list[FunctionOutput]], _ENUM_FIRST, AfterValidator(_keyed_as_list)
    ]


class Function(_Model):
    """A function; ``inputs``/``outputs`` are lists with ``identifier`` as in the SDK."""

    key: str
    name: str
    owner: str
    permissions: Permissions
    metadata: dict[str, str] = Field(default_factory=dict)
    creation_date: Optional[datetime] = None
    inputs: FunctionInputs = Field(default_factory=list)
    outputs: FunctionOutputs = Field(default_factory=list)
    status: FnStatus = FunctionStatus.unknown
    description: File
    archive: File


class InputRef(_Model):
    """A task input as the server echoes it."""

    identifier: str
    asset_key: Optional[str] = None
    parent_task_key: Optional[str] = None
    parent_task_output_identifier: Optional[str] = None


class ComputeTaskOutput(_Model):
    """A task output's permissions; ``transient`` on the wire, ``is_transient`` here."""

    permissions: Permissions
    is_transient: bool = Field(False, alias="transient")


class Task(_Model):
    """A compute task."""

    key: str
    function: Optional[Function] = None
    owner: str
    compute_plan_key: str
    metadata: dict[str, str] = Field(default_factory=dict)
    status: TaskStatus
    worker: str
    rank: Optional[int] = None
    tag: str = ""
    creation_date: Optional[datetime] = None
    start_date: Optional[datetime] = None
    end_date: Optional[datetime] = None
    duration: Optional[int] = None
    error_type: Optional[ErrorType] = None
    logs_permission: Optional[Permission] = None
    inputs: list[InputRef] = Field(default_factory=list)
    outputs: dict[str, ComputeTaskOutput] = Field(default_factory=dict)

    @pydantic.field_validator("metadata", mode="before")
    @classmethod
    def _null_metadata(cls, value: Any) -> Any:
        """The server may send null metadata."""
        return value or {}

    @pydantic.field_validator("tag", mode="before")
    @classmethod
    def _null_tag(cls, value: Any) -> Any:
        """Unset tags travel as "" (or null)."""
        return value or ""


class ComputePlan(_Model):
    """A compute plan with its per-status task counters."""

    key: str
    tag: str = ""
    name: str = ""
    owner: str
    metadata: dict[str, str] = Field(default_factory=dict)
    task_count: int = 0
    waiting_builder_slot_count: int = 0
    building_count: int = 0
    waiting_parent_tasks_count: int = 0
    waiting_executor_slot_count: int = 0
    executing_count: int = 0
    canceled_count: int = 0
    failed_count: int = 0
    done_count: int = 0
    failed_task_key: Optional[str] = None
    status: PlanStatus
    creation_date: Optional[datetime] = None
    start_date: Optional[datetime] = None
    end_date: Optional[datetime] = None
    estimated_end_date: Optional[datetime] = None
    duration: Optional[int] = None
    creator: Optional[str] = None

    @pydantic.field_validator("metadata", mode="before")
    @classmethod
    def _null_metadata(cls, value: Any) -> Any:
        """The server may send null metadata."""
        return value or {}

    @pydantic.field_validator("tag", mode="before")
    @classmethod
    def _null_tag(cls, value: Any) -> Any:
        """Unset tags travel as "" (or null)."""
        return value or ""


class Model(_Model):
    """A model produced by a task (the SDK's ``OutModel``); ``address`` is None once deleted."""

    key: str
    compute_task_key: str
    address: Optional[File] = None
    permissions: Permissions
    owner: str
    creation_date: Optional[datetime] = None


OutModel = Model


class Performance(_Model):
    """A performance output as ``/output_assets/`` returns it."""

    compute_task_key: Optional[str] = None
    compute_task_output_identifier: Optional[str] = None
    performance_value: float
    creation_date: Optional[datetime] = None


class InputAsset(_Model):
    """One task input: a dataset, a data sample or a model, according to ``kind``."""

    identifier: str
    kind: Kind
    asset: Union[Dataset, DataSample, Model, dict[str, Any]]

    @pydantic.model_validator(mode="before")
    @classmethod
    def _by_kind(cls, values: Any) -> Any:
        """Pick the asset model from ``kind`` instead of guessing from the shape."""
        if isinstance(values, dict) and isinstance(values.get("asset"), dict):
            targets: dict[str, type[_Model]] = {
                AssetKind.data_manager.value: Dataset,
                AssetKind.data_sample.value: DataSample,
                AssetKind.model.value: Model,
            }
            target = targets.get(str(getattr(values.get("kind"), "value", values.get("kind"))))
            if target is not None:
                values = {**values, "asset": target.model_validate(values["asset"])}
        return values


class OutputAsset(_Model):
    """One task output: a model, or a performance reduced to its float value (as in the SDK)."""

    identifier: str
    kind: Kind
    asset: Union[float, Model, dict[str, Any]]

    @pydantic.model_validator(mode="before")
    @classmethod
    def _by_kind(cls, values: Any) -> Any:
        """Performance objects become their ``performance_value``; models become Model."""
        if isinstance(values, dict) and isinstance(values.get("asset"), dict):
            kind = str(getattr(values.get("kind"), "value", values.get("kind")))
            asset = values["asset"]
            if kind == AssetKind.performance.value:
                values = {**values, "asset": float(asset["performance_value"])}
            elif kind == AssetKind.model.value:
                values = {**values, "asset": Model.model_validate(asset)}
        return values


_PERF_COLUMNS = (
    "compute_plan_key",
    "compute_plan_tag",
    "compute_plan_status",
    "compute_plan_start_date",
    "compute_plan_end_date",
    "compute_plan_metadata",
    "worker",
    "task_key",
    "task_rank",
    "round_idx",
    "identifier",
    "performance",
)


class Performances(_Model):
    """A plan's performances, column-oriented like the SDK's (``pd.DataFrame(p.model_dump())``).

    :meth:`rows` gives the same data row-oriented.
    """

    compute_plan_key: list[str] = Field(default_factory=list)
    compute_plan_tag: list[str] = Field(default_factory=list)
    compute_plan_status: list[str] = Field(default_factory=list)
    compute_plan_start_date: list[Optional[datetime]] = Field(default_factory=list)
    compute_plan_end_date: list[Optional[datetime]] = Field(default_factory=list)
    compute_plan_metadata: list[dict[str, Any]] = Field(default_factory=list)
    worker: list[str] = Field(default_factory=list)
    task_key: list[str] = Field(default_factory=list)
    task_rank: list[Optional[int]] = Field(default_factory=list)
    round_idx: list[Optional[int]] = Field(default_factory=list)
    identifier: list[str] = Field(default_factory=list)
    performance: list[Optional[float]] = Field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per performance, with every column as a key."""
        return [{col: getattr(self, col)[i] for col in _PERF_COLUMNS} for i in range(len(self.task_key))]

    def __len__(self) -> int:
        return len(self.task_key)

    @classmethod
    def from_server(cls, plan: ComputePlan, results: list[dict[str, Any]]) -> Performances:
        """Build from a plan and the ``results`` of ``GET /compute_plan/{key}/perf/``."""
        perf = cls()
        status = getattr(plan.status, "value", plan.status)
        for item in results:
            task: dict[str, Any] = item.get("compute_task") or {}
            perf.compute_plan_key.append(plan.key)
            perf.compute_plan_tag.append(plan.tag)
            perf.compute_plan_status.append(status)
            perf.compute_plan_start_date.append(plan.start_date)
            perf.compute_plan_end_date.append(plan.end_date)
            perf.compute_plan_metadata.append(dict(plan.metadata))
            perf.worker.append(cast(str, task.get("worker")))  # as the server sent it (None if missing)
            perf.task_key.append(cast(str, task.get("key")))
            perf.task_rank.append(task.get("rank"))
            perf.round_idx.append(_int_or_none(task.get("round_idx")))
            perf.identifier.append(cast(str, item.get("identifier")))
            value = item.get("perf")
            perf.performance.append(float(value) if value is not None else None)
        return perf


def _int_or_none(value: Any) -> Optional[int]:
    """``round_idx`` is a metadata string such as "1"; non-numeric values become None."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
