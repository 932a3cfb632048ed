"""The 0.x ``data`` dicts, validated: the schemas of the 0.x reference, field by field.

Every add_* of the 0.x SDK took a plain dict. These models check one before anything is sent:
an unknown field, a missing one or a bad value raises
:class:`~substra_flows.exceptions.SpecValidationError` naming the field and the value (a typo in a
0.x field name would otherwise be dropped without a word). Keys must be 1.0 keys (UUIDs): a
64-character 0.x hash names an asset of a 0.x deployment, which a 1.0 server cannot know.
"""

from __future__ import annotations

import pathlib
import re
from typing import Any, Optional, TypeVar, Union

import pydantic
from pydantic import ConfigDict, Field

from substra_flows.exceptions import KeyFormatError
from substra_flows.schemas import MAX_NAME_LENGTH, build_spec, check_key

SpecT = TypeVar("SpecT", bound=pydantic.BaseModel)

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def legacy_key(value: Any) -> str:
    """A 1.0 key in canonical form; a 0.x hash or anything else gets a ValueError saying why."""
    if isinstance(value, str) and _SHA256.fullmatch(value):
        raise ValueError(
            "this is a 0.x key (a sha256): 1.0 keys are UUIDs; register the asset on the 1.0 deployment "
            "and use the key this client returns"
        )
    try:
        return check_key(value)
    except KeyFormatError:
        raise ValueError("must be a key returned by this client (a UUID string)") from None


def _keys(value: Any) -> Any:
    return [legacy_key(v) for v in value] if isinstance(value, list) else value


def _optional_key(value: Any) -> Any:
    return None if value in (None, "") else legacy_key(value)


def _existing(value: pathlib.Path) -> pathlib.Path:
    if not value.is_file():
        raise ValueError(f"{str(value)!r} is not an existing file")
    return value


class _Legacy(pydantic.BaseModel):
    """Base of the 0.x schemas: unknown fields are refused, so a typo cannot pass unnoticed."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def parse(spec_class: type[SpecT], data: Any, method: str) -> SpecT:
    """Validate a 0.x ``data`` dict; errors name ``<method>.<field>`` and the value.

    Strict: the 0.x SDK refused unknown fields, so a misspelt 0.x field must not be dropped."""
    return build_spec(spec_class, data, what=method, strict=True)


class Permissions(_Legacy):
    """0.x request permissions; the reference spells the list ``authorized_ids`` or ``authorizedIDs``."""

    public: bool
    authorized_ids: list[str] = Field(default_factory=list, alias="authorizedIDs")


class TrunkPermissions(_Legacy):
    """Out-trunk-model permissions: 0.x never let a trunk model be public (no ``public`` field)."""

    authorized_ids: list[str] = Field(alias="authorizedIDs")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _never_public(cls, value: Any) -> Any:
        if isinstance(value, dict) and "public" in value:
            raise ValueError("out trunk models cannot be made public (0.x rule): give authorized_ids only")
        return value


Metadata = Optional[dict[str, str]]
Tag = Optional[str]


class AlgoData(_Legacy):
    """``add_algo`` / ``add_aggregate_algo`` / ``add_composite_algo``."""

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    description: pathlib.Path
    file: pathlib.Path
    permissions: Permissions
    metadata: Metadata = None

    _files = pydantic.field_validator("description", "file")(_existing)


class ObjectiveData(_Legacy):
    """``add_objective``: a metrics archive, its name, and optionally the test dataset and samples."""

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    description: pathlib.Path
    metrics_name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    metrics: pathlib.Path
    test_data_manager_key: Optional[str] = None
    test_data_sample_keys: list[str] = Field(default_factory=list)
    permissions: Permissions
    metadata: Metadata = None

    _files = pydantic.field_validator("description", "metrics")(_existing)
    _dm = pydantic.field_validator("test_data_manager_key", mode="before")(_optional_key)
    _samples = pydantic.field_validator("test_data_sample_keys", mode="before")(_keys)

    @pydantic.model_validator(mode="after")
    def _samples_need_dataset(self) -> ObjectiveData:
        if self.test_data_sample_keys and not self.test_data_manager_key:
            raise ValueError("test_data_sample_keys are given without test_data_manager_key")
        return self


class DatasetData(_Legacy):
    """``add_dataset``: an opener, its description, a type and an optional objective."""

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    description: pathlib.Path
    type: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    data_opener: pathlib.Path
    objective_key: Optional[str] = None
    permissions: Permissions
    metadata: Metadata = None

    _files = pydantic.field_validator("description", "data_opener")(_existing)
    _objective = pydantic.field_validator("objective_key", mode="before")(_optional_key)


class DataSampleData(_Legacy):
    """``add_data_sample``: one folder."""

    path: pathlib.Path
    data_manager_keys: list[str] = Field(min_length=1)
    test_only: bool = False

    _datasets = pydantic.field_validator("data_manager_keys", mode="before")(_keys)


class DataSamplesData(_Legacy):
    """``add_data_samples``: several folders, one sample each."""

    paths: list[pathlib.Path] = Field(min_length=1)
    data_manager_keys: list[str] = Field(min_length=1)
    test_only: bool = False

    _datasets = pydantic.field_validator("data_manager_keys", mode="before")(_keys)


def _rank(value: Any) -> Any:
    """0.x took ranks as ints or as digit strings (the ledger stored strings)."""
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise ValueError("must be an integer >= 0")
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and value >= 0:
        return value
    raise ValueError("must be an integer >= 0")


class _StandaloneTuple(_Legacy):
    tag: Tag = Field(None, max_length=MAX_NAME_LENGTH)
    metadata: Metadata = None
    rank: Optional[int] = None
    compute_plan_id: Optional[str] = None

    _rank = pydantic.field_validator("rank", mode="before")(_rank)
    _plan = pydantic.field_validator("compute_plan_id", mode="before")(_optional_key)


class TraintupleData(_StandaloneTuple):
    """``add_traintuple``."""

    algo_key: str
    data_manager_key: str
    train_data_sample_keys: list[str] = Field(min_length=1)
    in_models_keys: list[str] = Field(default_factory=list)

    _key = pydantic.field_validator("algo_key", "data_manager_key", mode="before")(legacy_key)
    _lists = pydantic.field_validator("train_data_sample_keys", "in_models_keys", mode="before")(_keys)


class AggregatetupleData(_StandaloneTuple):
    """``add_aggregatetuple``."""

    algo_key: str
    in_models_keys: list[str] = Field(min_length=1)
    worker: str = Field(min_length=1)

    _key = pydantic.field_validator("algo_key", mode="before")(legacy_key)
    _lists = pydantic.field_validator("in_models_keys", mode="before")(_keys)


class CompositeTraintupleData(_StandaloneTuple):
    """``add_composite_traintuple`` (its AlreadyExists rule names ``train_data_sample_keys``)."""

    algo_key: str
    data_manager_key: str
    train_data_sample_keys: list[str] = Field(min_length=1)
    in_head_model_key: Optional[str] = None
    in_trunk_model_key: Optional[str] = None
    out_trunk_model_permissions: TrunkPermissions

    _key = pydantic.field_validator("algo_key", "data_manager_key", mode="before")(legacy_key)
    _models = pydantic.field_validator("in_head_model_key", "in_trunk_model_key", mode="before")(_optional_key)
    _lists = pydantic.field_validator("train_data_sample_keys", mode="before")(_keys)

    @pydantic.model_validator(mode="after")
    def _head_with_trunk(self) -> CompositeTraintupleData:
        if bool(self.in_head_model_key) != bool(self.in_trunk_model_key):
            raise ValueError("in_head_model_key and in_trunk_model_key go together: give both or neither")
        return self


class TesttupleData(_Legacy):
    """``add_testtuple``: the objective's test data unless a dataset and samples are given."""

    objective_key: str
    traintuple_key: str
    data_manager_key: Optional[str] = None
    test_data_sample_keys: list[str] = Field(default_factory=list)
    tag: Tag = Field(None, max_length=MAX_NAME_LENGTH)
    metadata: Metadata = None

    _key = pydantic.field_validator("objective_key", "traintuple_key", mode="before")(legacy_key)
    _dm = pydantic.field_validator("data_manager_key", mode="before")(_optional_key)
    _lists = pydantic.field_validator("test_data_sample_keys", mode="before")(_keys)


# -- compute plans ----------------------------------------------------------------------------------


def _tuple_id(value: Any) -> Any:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"must be a non-empty string of at most {MAX_NAME_LENGTH} characters")
    return value


class PlanTraintuple(_Legacy):
    """A traintuple of a compute plan spec."""

    traintuple_id: str
    algo_key: str
    data_manager_key: str
    train_data_sample_keys: list[str] = Field(min_length=1)
    in_models_ids: list[str] = Field(default_factory=list)
    tag: Tag = Field(None, max_length=MAX_NAME_LENGTH)
    metadata: Metadata = None

    _id = pydantic.field_validator("traintuple_id", mode="before")(_tuple_id)
    _key = pydantic.field_validator("algo_key", "data_manager_key", mode="before")(legacy_key)
    _lists = pydantic.field_validator("train_data_sample_keys", mode="before")(_keys)


class PlanCompositeTraintuple(_Legacy):
    """A composite traintuple of a compute plan spec."""

    composite_traintuple_id: str
    algo_key: str
    data_manager_key: str
    train_data_sample_keys: list[str] = Field(min_length=1)
    in_head_model_id: Optional[str] = None
    in_trunk_model_id: Optional[str] = None
    out_trunk_model_permissions: TrunkPermissions
    tag: Tag = Field(None, max_length=MAX_NAME_LENGTH)
    metadata: Metadata = None

    _id = pydantic.field_validator("composite_traintuple_id", mode="before")(_tuple_id)
    _key = pydantic.field_validator("algo_key", "data_manager_key", mode="before")(legacy_key)
    _lists = pydantic.field_validator("train_data_sample_keys", mode="before")(_keys)

    @pydantic.model_validator(mode="after")
    def _head_with_trunk(self) -> PlanCompositeTraintuple:
        if bool(self.in_head_model_id) != bool(self.in_trunk_model_id):
            raise ValueError("in_head_model_id and in_trunk_model_id go together: give both or neither")
        return self


class PlanAggregatetuple(_Legacy):
    """An aggregatetuple of a compute plan spec."""

    aggregatetuple_id: str
    algo_key: str
    worker: str = Field(min_length=1)
    in_models_ids: list[str] = Field(min_length=1)
    tag: Tag = Field(None, max_length=MAX_NAME_LENGTH)
    metadata: Metadata = None

    _id = pydantic.field_validator("aggregatetuple_id", mode="before")(_tuple_id)
    _key = pydantic.field_validator("algo_key", mode="before")(legacy_key)


class PlanTesttuple(_Legacy):
    """A testtuple of a compute plan spec (0.x gave testtuples no id)."""

    objective_key: str
    traintuple_id: str
    data_manager_key: Optional[str] = None
    test_data_sample_keys: list[str] = Field(default_factory=list)
    tag: Tag = Field(None, max_length=MAX_NAME_LENGTH)
    metadata: Metadata = None

    _key = pydantic.field_validator("objective_key", mode="before")(legacy_key)
    _dm = pydantic.field_validator("data_manager_key", mode="before")(_optional_key)
    _lists = pydantic.field_validator("test_data_sample_keys", mode="before")(_keys)


PlanTuple = Union[PlanTraintuple, PlanCompositeTraintuple, PlanAggregatetuple, PlanTesttuple]


class PlanTuples(_Legacy):
    """The tuples of ``update_compute_plan`` (no plan-level fields there in 0.x)."""

    traintuples: list[PlanTraintuple] = Field(default_factory=list)
    composite_traintuples: list[PlanCompositeTraintuple] = Field(default_factory=list)
    aggregatetuples: list[PlanAggregatetuple] = Field(default_factory=list)
    testtuples: list[PlanTesttuple] = Field(default_factory=list)

    def is_empty(self) -> bool:
        """True when the spec holds no tuple at all."""
        return not (self.traintuples or self.composite_traintuples or self.aggregatetuples or self.testtuples)


class ComputePlanData(PlanTuples):
    """``add_compute_plan``: tuples, plus ``clean_models``, ``tag`` and ``metadata``."""

    clean_models: bool = False
    tag: Tag = Field(None, max_length=MAX_NAME_LENGTH)
    metadata: Metadata = None


def legacy_key_for(value: Any, field: str) -> str:
    """A key argument (not inside a ``data`` dict), checked like the keys of the schemas."""
    try:
        return legacy_key(value)
    except ValueError as error:
        raise KeyFormatError.for_field(field, value, str(error)) from None
