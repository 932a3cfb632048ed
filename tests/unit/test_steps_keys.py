"""Pure parts of the steps: derived keys and task-name derivation in plan specs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from examples import assets
from substra_flows import exceptions as exc
from substra_flows import schemas, steps
from substra_flows.steps import derive_key, derive_task_key, prepare_compute_plan

FUNCTION = "17f98afc-2b82-4ce9-b232-1a471633d020"
DATASET = "d7dc4a5b-e81f-4f3f-b94c-5e2bbaca15cd"
SAMPLE = "3180e12c-a821-434a-ad8a-a341076c7f98"


def test_derive_key_is_a_stable_uuid():
    key = derive_key("dag", "run-1", "submit")
    assert key == derive_key("dag", "run-1", "submit")
    assert uuid.UUID(key).version == 5
    assert key == str(uuid.uuid5(steps.PROJECT_NAMESPACE, '["dag","run-1","submit"]'))
    # pinned: a change of namespace or encoding would give every existing run new keys
    assert derive_key("a") == "7991fe69-e552-581d-8bac-3a5160e858c8"


def test_derive_key_separates_parts_unambiguously():
    assert derive_key("a/b", "c") != derive_key("a", "b/c")
    assert derive_key("ab", "c") != derive_key("a", "bc")
    assert derive_key("a", "b") != derive_key("b", "a")
    assert derive_key("a") != derive_key("a", "a")


@pytest.mark.parametrize("parts", [(), ("",), ("dag", ""), ("dag", 3), ("dag", None)])
def test_derive_key_refuses_bad_parts(parts: tuple[Any, ...]):
    with pytest.raises(exc.SpecValidationError) as raised:
        derive_key(*parts)
    assert "parts" in str(raised.value)


def test_derive_task_key_matches_example_assets():
    plan = derive_key("dag", "run")
    assert derive_task_key(plan, "train/0/MyOrg1MSP") == assets.task_key(plan, "train/0/MyOrg1MSP")


def _task(task_id: str, parents: tuple[str, ...] = ()) -> dict[str, Any]:
    inputs: list[dict[str, Any]] = [
        {"identifier": "opener", "asset_key": DATASET},
        {"identifier": "datasamples", "asset_key": SAMPLE},
    ]
    inputs += [{"identifier": "model", "parent_task_key": p, "parent_task_output_identifier": "model"} for p in parents]
    return {"task_id": task_id, "function_key": FUNCTION, "worker": "MyOrg1MSP", "inputs": inputs, "outputs": {}}


def test_plan_key_comes_from_the_spec_first_then_the_run_identity():
    given = str(uuid.uuid4())
    spec, _ = prepare_compute_plan({"key": given, "name": "p"}, run_identity=("dag", "run"))
    assert spec.key == given
    spec, _ = prepare_compute_plan({"name": "p"}, run_identity=("dag", "run"))
    assert spec.key == derive_key("dag", "run")
    spec, _ = prepare_compute_plan({"key": None, "name": "p"}, run_identity=["dag", "run"])
    assert spec.key == derive_key("dag", "run")


def test_a_pydantic_spec_without_key_uses_the_run_identity():
    spec, _ = prepare_compute_plan(schemas.ComputePlanSpec(name="p"), run_identity=("dag", "run"))
    assert spec.key == derive_key("dag", "run")


def test_no_key_and_no_run_identity_is_refused():
    with pytest.raises(exc.SpecValidationError) as raised:
        prepare_compute_plan({"name": "p"})
    assert "run_identity" in str(raised.value)
    assert raised.value.field == "key"


@pytest.mark.parametrize("identity", ["dag/run", ("dag", ""), (), ("dag", 1)])
def test_bad_run_identity_is_refused(identity: Any):
    with pytest.raises(exc.SpecValidationError) as raised:
        prepare_compute_plan({"name": "p"}, run_identity=identity)
    assert "run_identity" in str(raised.value)


def test_task_names_become_keys_derived_from_the_plan_key_with_parents_rewritten():
    plan = derive_key("dag", "run")
    raw = {"name": "p", "tasks": [_task("train"), _task("eval", parents=("train",))]}
    spec, names = prepare_compute_plan(raw, run_identity=("dag", "run"))
    train, evaluate = derive_task_key(plan, "train"), derive_task_key(plan, "eval")
    assert names == {"train": train, "eval": evaluate}
    assert [t.task_id for t in spec.tasks] == [train, evaluate]
    assert spec.tasks[1].inputs[-1].parent_task_key == train
    assert raw["tasks"][0]["task_id"] == "train", "the caller's spec is not modified"
    again, _ = prepare_compute_plan(raw, run_identity=("dag", "run"))
    assert [t.task_id for t in again.tasks] == [train, evaluate]


def test_uuid_task_ids_are_kept_and_may_be_mixed_with_names():
    plan, fixed = str(uuid.uuid4()), str(uuid.uuid4())
    raw = {"key": plan, "name": "p", "tasks": [_task(fixed), _task("child", parents=(fixed,))]}
    spec, names = prepare_compute_plan(raw)
    assert spec.tasks[0].task_id == fixed
    assert spec.tasks[1].task_id == derive_task_key(plan, "child")
    assert spec.tasks[1].inputs[-1].parent_task_key == fixed
    assert names == {"child": derive_task_key(plan, "child")}


def test_a_parent_that_is_neither_a_uuid_nor_a_task_name_is_refused():
    raw = {"key": str(uuid.uuid4()), "name": "p", "tasks": [_task("a"), _task("b", parents=("typo",))]}
    with pytest.raises(exc.SpecValidationError) as raised:
        prepare_compute_plan(raw)
    assert raised.value.field == "tasks.1.inputs.2.parent_task_key"
    assert "'typo'" in str(raised.value)


def test_duplicate_task_names_are_refused():
    raw = {"key": str(uuid.uuid4()), "name": "p", "tasks": [_task("a"), _task("a")]}
    with pytest.raises(exc.SpecValidationError, match="'a'"):
        prepare_compute_plan(raw)


def test_an_empty_task_id_is_refused():
    raw = {"key": str(uuid.uuid4()), "name": "p", "tasks": [_task("")]}
    with pytest.raises(exc.SpecValidationError) as raised:
        prepare_compute_plan(raw)
    assert "tasks.0.task_id" in str(raised.value)


def test_errors_name_the_tasks_as_the_caller_wrote_them():
    raw = {"key": str(uuid.uuid4()), "name": "p", "tasks": [_task("a", parents=("b",)), _task("b", parents=("a",))]}
    with pytest.raises(exc.SpecValidationError) as raised:
        prepare_compute_plan(raw)
    assert "cycle" in str(raised.value)
    assert "task_id 'a'" in str(raised.value) and "task_id 'b'" in str(raised.value)


def test_malformed_tasks_are_left_for_the_spec_to_report():
    with pytest.raises(exc.SpecValidationError) as raised:
        prepare_compute_plan({"key": str(uuid.uuid4()), "name": "p", "tasks": "nope"})
    assert "tasks" in str(raised.value)
    with pytest.raises(exc.SpecValidationError):
        prepare_compute_plan({"key": "not-a-uuid", "name": "p", "tasks": [_task("a")]})
