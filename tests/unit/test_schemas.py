"""Specs: validation before sending, errors naming field and value, exact wire shapes."""

from __future__ import annotations

import uuid

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from substra_flows import exceptions as exc
from substra_flows import schemas
from substra_flows.schemas import build_spec, check_key


def k() -> str:
    return str(uuid.uuid4())


PUBLIC = {"public": True, "authorized_ids": []}


def field_errors(error: exc.SpecValidationError) -> dict[str, object]:
    return {e["field"]: e["value"] for e in error.errors}


# -- keys ------------------------------------------------------------------------------------------


def test_check_key_accepts_and_normalizes_uuids():
    key = uuid.uuid4()
    assert check_key(str(key)) == str(key)
    assert check_key(str(key).upper()) == str(key)
    assert check_key(key.hex) == str(key)
    assert check_key(key) == str(key)


@pytest.mark.parametrize("bad", ["", "abc", "../../etc", "1234", None, 42, "a428d7a3-7458-421d-a818"])
def test_check_key_rejects_non_uuids(bad):
    with pytest.raises(exc.KeyFormatError) as info:
        check_key(bad, "compute_plan_key")
    assert info.value.field == "compute_plan_key"
    assert info.value.value == bad
    assert repr(bad) in str(info.value)


def test_plan_key_defaults_to_uuid4_and_rejects_bad_key():
    spec = build_spec(schemas.ComputePlanSpec, {"name": "p"})
    assert uuid.UUID(spec.key).version == 4
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.ComputePlanSpec, {"name": "p", "key": "my-plan"})
    assert field_errors(info.value) == {"key": "my-plan"}
    assert "ComputePlanSpec.key='my-plan'" in str(info.value)


def test_task_ids_must_be_uuids_with_path_in_error():
    data = {"name": "p", "tasks": [{"task_id": "train-1", "function_key": k(), "worker": "o"}]}
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.ComputePlanSpec, data)
    assert field_errors(info.value) == {"tasks.0.task_id": "train-1"}
    assert "tasks.0.task_id='train-1'" in str(info.value)


# -- errors name field and value -----------------------------------------------------------------


def test_missing_and_wrong_type_fields_are_named():
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.UpdateDatasetSpec, {})
    assert info.value.field == "name"
    assert "name=(missing)" in str(info.value)
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.ComputePlanSpec, {"name": "p", "tag": 12})
    assert field_errors(info.value) == {"tag": 12}


def test_unknown_fields_are_refused_when_strict():
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.ComputePlanSpec, {"name": "p", "nmae": "typo"}, strict=True)
    assert info.value.field == "nmae"
    assert "unknown key" in str(info.value) and "strict=True" in str(info.value)


def test_unknown_fields_are_dropped_with_one_warning_naming_them():
    task = {"task_id": k(), "function_key": k(), "worker": "org", "priority": "high"}
    with pytest.warns(exc.UnknownSpecKeysWarning) as caught:
        spec = build_spec(schemas.ComputePlanSpec, {"name": "p", "nmae": "typo", "tasks": [task]})
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "'nmae'" in text and "'tasks.0.priority'" in text and "strict=True" in text
    assert caught[0].filename == __file__  # points at the caller, not at substra_flows
    assert spec.name == "p" and "priority" not in spec.tasks[0].model_dump()
    assert task["priority"] == "high"  # the caller's dict is not mutated


def test_unknown_fields_dropped_still_report_the_real_errors():
    with pytest.warns(exc.UnknownSpecKeysWarning), pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.ComputePlanSpec, {"nmae": "typo"})
    assert info.value.field == "name" and "(missing)" in str(info.value)


def test_specs_of_another_library_are_accepted_nested_and_unknown_keys_dropped():
    class ForeignInput(pydantic.BaseModel):  # e.g. substra.sdk.schemas.FunctionInputSpec (extra="ignore")
        identifier: str
        kind: str
        optional: bool
        multiple: bool
        comment: str = ""

    foreign = ForeignInput(identifier="model", kind="ASSET_MODEL", optional=True, multiple=False, comment="x")
    data = {"name": "f", "description": __file__, "file": __file__, "permissions": PUBLIC, "inputs": [foreign]}
    with pytest.warns(exc.UnknownSpecKeysWarning, match="'inputs.0.comment'"):
        spec = build_spec(schemas.FunctionSpec, data)
    assert spec.inputs[0].identifier == "model" and spec.inputs[0].kind is schemas.AssetKind.model


# -- errors the SDK reports as InvalidRequest ----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        {"name": "p", "metadata": {"a__b": "c"}},
        {"name": "p", "metadata": {"k": "v" * 101}},
        {"name": "n" * 101},
        {"name": "p", "tasks": [{"task_id": "not-a-uuid", "function_key": str(uuid.UUID(int=1)), "worker": "o"}]},
    ],
    ids=["metadata key with __", "metadata value too long", "name too long", "task id not a UUID"],
)
def test_rules_the_server_enforces_are_invalid_requests_too(data):
    with pytest.raises(exc.InvalidRequest) as info:
        build_spec(schemas.ComputePlanSpec, data)
    assert isinstance(info.value, exc.SpecRuleError) and isinstance(info.value, exc.SpecValidationError)
    assert isinstance(info.value, ValueError)
    assert info.value.errors and info.value.errors[0]["field"]  # the field list survives the double base


def test_a_task_cycle_is_an_invalid_request():
    a, b, fn = k(), k(), k()

    def task(key: str, parent: str) -> dict:
        ref = {"identifier": "model", "parent_task_key": parent, "parent_task_output_identifier": "model"}
        return {"task_id": key, "function_key": fn, "worker": "o", "inputs": [ref]}

    with pytest.raises(exc.InvalidRequest, match="dependency cycle"):
        build_spec(schemas.ComputePlanSpec, {"name": "p", "tasks": [task(a, b), task(b, a)]})


def test_shape_errors_are_not_invalid_requests():
    """A missing or mistyped field: the SDK's own pydantic refuses it (a ValueError), nothing is sent."""
    for data in ({}, {"name": 3}, {"name": "p", "metadata": {"a__b": "c"}, "tag": ["x"]}):
        with pytest.raises(exc.SpecValidationError) as info:
            build_spec(schemas.ComputePlanSpec, data)
        assert not isinstance(info.value, exc.InvalidRequest), data


def test_spec_error_is_a_value_error_and_substra_error():
    with pytest.raises(ValueError):
        build_spec(schemas.UpdateComputePlanSpec, {"name": ""})
    assert issubclass(exc.SpecValidationError, exc.SubstraError)
    assert exc.InvalidSpec is exc.SpecValidationError


def test_not_a_dict():
    with pytest.raises(exc.SpecValidationError, match="expected a dict"):
        build_spec(schemas.ComputePlanSpec, ["name"])


def test_instances_are_revalidated():
    spec = schemas.UpdateComputePlanSpec(name="ok")
    assert build_spec(schemas.UpdateComputePlanSpec, spec).name == "ok"


# -- metadata -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec_class", [schemas.ComputePlanSpec])
def test_metadata_double_underscore_rejected(spec_class):
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(spec_class, {"name": "p", "metadata": {"__tag__": "x"}})
    assert info.value.field == "metadata"
    assert "'__tag__'" in str(info.value)


def test_task_metadata_checked_and_sizes_capped():
    task = {"task_id": k(), "function_key": k(), "worker": "o", "metadata": {"a__b": "1"}}
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.ComputePlanSpec, {"name": "p", "tasks": [task]})
    assert info.value.field == "tasks.0.metadata"
    with pytest.raises(exc.SpecValidationError):
        build_spec(schemas.ComputePlanSpec, {"name": "p", "metadata": {"k": "v" * 101}})
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.ComputePlanSpec, {"name": "n" * 101})
    assert info.value.field == "name"


# -- files ------------------------------------------------------------------------------------------


def test_dataset_files_must_exist(tmp_path):
    data = {
        "name": "d",
        "data_opener": tmp_path / "missing.py",
        "permissions": PUBLIC,
        "logs_permission": PUBLIC,
    }
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.DatasetSpec, data)
    assert info.value.field == "data_opener"
    assert "missing.py" in str(info.value)
    opener = tmp_path / "opener.py"
    opener.write_text("x")
    data["data_opener"] = opener
    data["description"] = tmp_path
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.DatasetSpec, data)
    assert info.value.field == "description"
    del data["description"]
    spec = build_spec(schemas.DatasetSpec, data)
    assert spec.description is None
    assert list(tmp_path.iterdir()) == [opener]  # no generated file written next to the opener


def test_function_files_must_exist(tmp_path):
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(
            schemas.FunctionSpec,
            {"name": "f", "file": tmp_path / "a.tgz", "description": tmp_path / "d.md", "permissions": PUBLIC},
        )
    assert set(field_errors(info.value)) == {"file", "description"}


# -- functions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "fragment"),
    [
        ({"identifier": "data", "kind": "ASSET_DATA_MANAGER", "multiple": False, "optional": False}, "'opener'"),
        ({"identifier": "opener", "kind": "ASSET_DATA_MANAGER", "multiple": True, "optional": False}, "multiple"),
        ({"identifier": "samples", "kind": "ASSET_DATA_SAMPLE", "multiple": True, "optional": False}, "datasamples"),
        ({"identifier": "opener", "kind": "ASSET_MODEL", "multiple": False, "optional": True}, "reserved"),
        ({"identifier": "perf", "kind": "ASSET_PERFORMANCE", "multiple": False, "optional": False}, "input"),
        ({"identifier": "m", "kind": "MODEL", "multiple": False, "optional": False}, "ASSET_MODEL"),
    ],
)
def test_function_input_rules(item, fragment):
    with pytest.raises(exc.SpecValidationError, match=fragment):
        build_spec(schemas.FunctionInputSpec, item)


def test_function_output_rules():
    with pytest.raises(exc.SpecValidationError, match="cannot be multiple"):
        build_spec(schemas.FunctionOutputSpec, {"identifier": "p", "kind": "ASSET_PERFORMANCE", "multiple": True})
    with pytest.raises(exc.SpecValidationError, match="cannot be a function output"):
        build_spec(schemas.FunctionOutputSpec, {"identifier": "o", "kind": "ASSET_DATA_MANAGER", "multiple": False})


def test_function_identifiers_unique_and_wire_shape(tmp_path):
    (tmp_path / "a.tgz").write_bytes(b"x")
    (tmp_path / "d.md").write_text("d")
    base = {"name": "f", "file": tmp_path / "a.tgz", "description": tmp_path / "d.md", "permissions": PUBLIC}
    dup = [{"identifier": "model", "kind": "ASSET_MODEL", "multiple": False}] * 2
    with pytest.raises(exc.SpecValidationError, match="used twice"):
        build_spec(schemas.FunctionSpec, {**base, "outputs": dup})
    spec = build_spec(schemas.FunctionSpec, base)
    assert spec.to_wire() == {"name": "f", "permissions": PUBLIC, "inputs": {}, "outputs": {}}


# -- tasks and plans ------------------------------------------------------------------------------


def test_input_ref_xor():
    with pytest.raises(exc.SpecValidationError, match="either asset_key"):
        build_spec(schemas.InputRef, {"identifier": "m"})
    with pytest.raises(exc.SpecValidationError, match="either asset_key"):
        build_spec(schemas.InputRef, {"identifier": "m", "asset_key": k(), "parent_task_key": k()})
    with pytest.raises(exc.SpecValidationError, match="either asset_key"):
        build_spec(schemas.InputRef, {"identifier": "m", "parent_task_key": k()})
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.InputRef, {"identifier": "m", "asset_key": "nope"})
    assert field_errors(info.value) == {"asset_key": "nope"}


def test_task_wire_shape_matches_sdk():
    plan, fn, ds, sample, parent = k(), k(), k(), k(), k()
    spec = build_spec(
        schemas.TaskSpec,
        {
            "compute_plan_key": plan,
            "function_key": fn,
            "worker": "MyOrg1MSP",
            "metadata": {"round_idx": "1"},
            "inputs": [
                {"identifier": "opener", "asset_key": ds},
                {"identifier": "datasamples", "asset_key": sample},
                {"identifier": "model", "parent_task_key": parent, "parent_task_output_identifier": "model"},
            ],
            "outputs": {"model": {"permissions": PUBLIC, "transient": True}},
        },
    )
    wire = spec.to_wire()
    assert wire["key"] == spec.key and uuid.UUID(spec.key)
    assert wire["rank"] is None and wire["tag"] is None
    assert wire["inputs"][0] == {
        "identifier": "opener",
        "asset_key": ds,
        "parent_task_key": None,
        "parent_task_output_identifier": None,
    }
    assert all(
        set(i) == {"identifier", "asset_key", "parent_task_key", "parent_task_output_identifier"}
        for i in wire["inputs"]
    )
    assert wire["outputs"] == {"model": {"permissions": PUBLIC, "transient": True}}


def test_is_transient_alias_both_ways():
    by_alias = schemas.ComputeTaskOutputSpec.model_validate({"permissions": PUBLIC, "transient": True})
    by_name = schemas.ComputeTaskOutputSpec.model_validate({"permissions": PUBLIC, "is_transient": True})
    assert by_alias.is_transient and by_name.is_transient
    assert by_alias.to_wire()["transient"] is True


def test_parents_first_order_is_stable():
    a, b, c, d = k(), k(), k(), k()
    fn = k()

    def task(tid, *parents):
        return {
            "task_id": tid,
            "function_key": fn,
            "worker": "o",
            "inputs": [
                {"identifier": "m", "parent_task_key": p, "parent_task_output_identifier": "m"} for p in parents
            ],
        }

    external = k()  # already on the server: not a blocker
    spec = build_spec(
        schemas.ComputePlanSpec, {"name": "p", "tasks": [task(d, b, c), task(c, a), task(b, external), task(a)]}
    )
    order = [t.key for t in spec.task_specs()]
    assert order == [b, a, c, d]
    assert all(t.compute_plan_key == spec.key for t in spec.task_specs())


def test_cycles_and_duplicates_rejected():
    a, b, fn = k(), k(), k()

    def task(tid, parent):
        return {
            "task_id": tid,
            "function_key": fn,
            "worker": "o",
            "inputs": [{"identifier": "m", "parent_task_key": parent, "parent_task_output_identifier": "m"}],
        }

    with pytest.raises(exc.SpecValidationError, match="dependency cycle") as info:
        build_spec(schemas.ComputePlanSpec, {"name": "p", "tasks": [task(a, b), task(b, a)]})
    assert info.value.field == "tasks"
    with pytest.raises(exc.SpecValidationError, match="own output"):
        build_spec(schemas.ComputePlanSpec, {"name": "p", "tasks": [task(a, a)]})
    plain = {"task_id": a, "function_key": fn, "worker": "o"}
    with pytest.raises(exc.SpecValidationError, match="several tasks"):
        build_spec(schemas.ComputePlanSpec, {"name": "p", "tasks": [plain, plain]})


def test_plan_wire_shape_omits_tasks_and_unset_fields():
    spec = build_spec(schemas.ComputePlanSpec, {"name": "p", "tasks": []})
    assert spec.to_wire() == {"key": spec.key, "name": "p"}
    spec = build_spec(schemas.ComputePlanSpec, {"name": "p", "tag": "t", "metadata": {"lr": "0.1"}})
    assert spec.to_wire() == {"key": spec.key, "name": "p", "tag": "t", "metadata": {"lr": "0.1"}}


def test_data_sample_spec_rules():
    ds = k()
    with pytest.raises(exc.SpecValidationError, match="exclusive"):
        build_spec(schemas.DataSampleSpec, {"path": "/a", "paths": ["/b"], "data_manager_keys": [ds]})
    with pytest.raises(exc.SpecValidationError, match="give 'path'"):
        build_spec(schemas.DataSampleSpec, {"data_manager_keys": [ds]})
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.DataSampleSpec, {"path": "/a", "data_manager_keys": []})
    assert info.value.field == "data_manager_keys"
    with pytest.raises(exc.SpecValidationError) as info:
        build_spec(schemas.DataSampleSpec, {"path": "/a", "data_manager_keys": ["x"]})
    assert info.value.field == "data_manager_keys"
    spec = build_spec(schemas.DataSampleSpec, {"paths": ["/a", "/b"], "data_manager_keys": [ds]})
    assert spec.is_many() and len(spec.folders()) == 2


def test_asset_kind_wire_strings():
    assert [kind.value for kind in schemas.AssetKind] == [
        "ASSET_MODEL",
        "ASSET_PERFORMANCE",
        "ASSET_DATA_MANAGER",
        "ASSET_DATA_SAMPLE",
    ]


# -- property: parents-first ordering ----------------------------------------------------------------


@st.composite
def dags(draw):
    """Random DAGs: task i may depend on any task j < i, then the list is shuffled."""
    n = draw(st.integers(min_value=1, max_value=25))
    keys = [str(uuid.UUID(int=i + 1)) for i in range(n)]
    parents = [draw(st.lists(st.sampled_from(keys[:i]), unique=True, max_size=3)) if i else [] for i in range(n)]
    order = draw(st.permutations(range(n)))
    return [(keys[i], parents[i]) for i in order]


@settings(max_examples=60, deadline=None)
@given(dags())
def test_parents_first_property(graph):
    fn = str(uuid.UUID(int=10**6))
    tasks = [
        {
            "task_id": key,
            "function_key": fn,
            "worker": "o",
            "inputs": [
                {"identifier": "m", "parent_task_key": p, "parent_task_output_identifier": "m"} for p in parents
            ],
        }
        for key, parents in graph
    ]
    ordered = [t.key for t in build_spec(schemas.ComputePlanSpec, {"name": "p", "tasks": tasks}).task_specs()]
    assert sorted(ordered) == sorted(key for key, _ in graph)
    position = {key: i for i, key in enumerate(ordered)}
    for key, parents in graph:
        assert all(position[p] < position[key] for p in parents)
