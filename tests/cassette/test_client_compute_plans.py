"""Cassettes: compute plans and tasks (add in batches, add again, add tasks, get, list, rename, cancel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from examples.assets import task_key
from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.client import implicit_plan_key
from substra_flows.models import ComputePlanStatus, ComputeTaskStatus
from substra_flows.schemas import UpdateComputePlanTasksSpec
from tests.cassette import RequestLog, client_for, function_spec, noop_task, setup_cassette, stable_key, unknown_key
from tests.recording import Target

pytestmark = [pytest.mark.vcr, pytest.mark.cassette]

MODULE = "test_client_compute_plans"
LETTERS = ("alpha", "bravo", "charlie")  # words no hex key contains: "match" also searches keys


def plan_key(name: str) -> str:
    """This module's plan keys."""
    return stable_key(MODULE, name)


def chain(key: str, function_key: str, worker: str, length: int, prefix: str = "noop") -> list[dict[str, Any]]:
    """``length`` noop tasks, each reading its predecessor's model."""
    tasks: list[dict[str, Any]] = []
    for i in range(length):
        parent = tasks[-1]["task_id"] if tasks else None
        tasks.append(
            noop_task(
                task_key(key, f"{prefix}/{i}"),
                function_key,
                worker,
                parent=parent,
                metadata={"index": str(i)},
                tag=f"cassette-tag-{i}",
            )
        )
    return tasks


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, org1: Target, workdir: Path) -> dict[str, Any]:
    """Functions, three empty plans to list, a plan to rename and a small plan whose tasks are listed."""
    with setup_cassette(request):
        client = client_for(org1)
        noop = client.add_function(function_spec("noop", workdir, title="cassette plans noop"))
        train = client.add_function(function_spec("train", workdir, title="cassette plans train"))
        listed = []
        for letter in LETTERS:
            spec = {
                "key": plan_key(f"listing {letter}"),
                "name": f"cassette listing plan {letter}",
                "tag": "cassette-listing",
                "metadata": {"group": "listing", "letter": letter},
            }
            listed.append(client.add_compute_plan(spec).key)
        renamed = client.add_compute_plan({"key": plan_key("rename"), "name": "cassette plan to rename"}).key
        tasks_plan = plan_key("listed tasks")
        client.add_compute_plan(
            {
                "key": tasks_plan,
                "name": "cassette plan of listed tasks",
                "tasks": chain(tasks_plan, noop, org1.organization_id, 3),
            }
        )
        client.close()
    return {"noop": noop, "train": train, "listed": listed, "renamed": renamed, "tasks_plan": tasks_plan}


# -- add_compute_plan -------------------------------------------------------------------------------


def test_add_compute_plan_in_batches(client1: SubstraClient, org1: Target, world: dict) -> None:
    key = plan_key("batched")
    tasks = chain(key, world["noop"], org1.organization_id, 5)
    log = RequestLog(client1)
    plan = client1.add_compute_plan(
        {"key": key, "name": "cassette batched plan", "tasks": tasks[::-1]}, auto_batching=True, batch_size=2
    )
    assert plan.key == key and plan.name == "cassette batched plan"
    assert plan.owner == org1.organization_id and plan.task_count == 5
    assert log.count("POST", "/compute_plan/") == 1
    assert log.count("POST", "/task/bulk_create/") == 3  # 2 + 2 + 1, parents first
    registered = client1.list_task(filters={"compute_plan_key": [key]}, order_by="rank", ascending=True)
    assert [t.key for t in registered] == [t["task_id"] for t in tasks]
    assert [t.rank for t in registered] == [0, 1, 2, 3, 4]


def test_add_compute_plan_without_auto_batching_sends_one_batch(
    client1: SubstraClient, org1: Target, world: dict
) -> None:
    key = plan_key("one batch")
    log = RequestLog(client1)
    plan = client1.add_compute_plan(
        {"key": key, "name": "cassette one batch", "tasks": chain(key, world["noop"], org1.organization_id, 3)},
        auto_batching=False,
        batch_size=1,
    )
    assert plan.task_count == 3
    assert log.count("POST", "/task/bulk_create/") == 1


def test_add_compute_plan_again_finds_it_instead_of_duplicating(
    client1: SubstraClient, org1: Target, world: dict
) -> None:
    key = plan_key("submitted twice")
    spec = {"key": key, "name": "cassette submitted twice", "tasks": chain(key, world["noop"], org1.organization_id, 3)}
    first = client1.submit_compute_plan(spec, batch_size=2)
    assert first.created and sorted(first.added_task_keys) == sorted(t["task_id"] for t in spec["tasks"])
    log = RequestLog(client1)
    second = client1.submit_compute_plan(spec, batch_size=2)
    assert not second.created and second.added_task_keys == []
    assert sorted(second.existing_task_keys) == sorted(first.added_task_keys)
    assert log.count("POST", "/compute_plan/") == 1 and log.count("POST", "/task/bulk_create/") == 2
    again = client1.add_compute_plan(spec, batch_size=2)
    assert again.key == key and again.task_count == 3
    assert [p.key for p in client1.list_compute_plan(filters={"key": [key]})] == [key]
    assert len(client1.list_task(filters={"compute_plan_key": [key]})) == 3


def test_add_compute_plan_with_a_task_missing_an_input_is_a_400(
    client1: SubstraClient, org1: Target, world: dict
) -> None:
    key = plan_key("missing input")
    task = {
        "task_id": task_key(key, "train"),
        "function_key": world["train"],
        "worker": org1.organization_id,
        "inputs": [],
        "outputs": {"model": {"permissions": {"public": False, "authorized_ids": []}}},
    }
    with pytest.raises(exc.InvalidRequest) as raised:
        client1.add_compute_plan({"key": key, "name": "cassette missing input", "tasks": [task]})
    assert raised.value.status_code == 400
    assert task["task_id"] in str(raised.value)
    assert "datasamples" in str(raised.value) or "opener" in str(raised.value)  # the missing input is named


def test_submit_compute_plan_refused_by_the_server_then_fixed(
    client1: SubstraClient, org1: Target, world: dict
) -> None:
    key = plan_key("submit refused")
    unknown = plan_key("no such function")
    broken = {"key": key, "name": "cassette submit refused", "tasks": chain(key, unknown, org1.organization_id, 2)}
    with pytest.raises(exc.NotFound) as raised:  # OE0002, as orchestrator 1.0 answers an unknown function
        client1.submit_compute_plan(broken)
    assert raised.value.status_code == 404 and unknown in str(raised.value)
    assert client1.list_task(filters={"compute_plan_key": [key]}) == []  # the batch was refused as a whole
    fixed = {**broken, "tasks": chain(key, world["noop"], org1.organization_id, 2)}
    resubmitted = client1.submit_compute_plan(fixed)  # the same run, fixed: finds its (empty) plan, adds the tasks
    assert not resubmitted.created and len(resubmitted.added_task_keys) == 2
    assert len(client1.list_task(filters={"compute_plan_key": [key]})) == 2


def test_add_compute_plan_with_a_bad_spec_sends_nothing(client1: SubstraClient, org1: Target, world: dict) -> None:
    key = plan_key("bad spec")
    a, b = task_key(key, "a"), task_key(key, "b")
    log = RequestLog(client1)
    cycle = [
        noop_task(a, world["noop"], org1.organization_id, parent=b),
        noop_task(b, world["noop"], org1.organization_id, parent=a),
    ]
    with pytest.raises(exc.SpecValidationError) as raised:
        client1.add_compute_plan({"key": key, "name": "cassette cycle", "tasks": cycle})
    assert "cycle" in str(raised.value)
    with pytest.raises(exc.SpecValidationError) as bad_key:
        client1.add_compute_plan({"key": "not-a-uuid", "name": "cassette bad key"})
    assert bad_key.value.field == "key"
    with pytest.raises(exc.SpecValidationError):
        client1.add_compute_plan({"key": key, "name": "x", "tasks": cycle[:1]}, batch_size=0)
    assert log.calls == []


# -- add_compute_plan_tasks / add_task -------------------------------------------------------------


def test_add_compute_plan_tasks(client1: SubstraClient, org1: Target, world: dict) -> None:
    key = plan_key("extended")
    tasks = chain(key, world["noop"], org1.organization_id, 3)
    client1.add_compute_plan({"key": key, "name": "cassette extended plan", "tasks": tasks[:1]})
    log = RequestLog(client1)
    plan = client1.add_compute_plan_tasks(key, tasks[1:], batch_size=1)
    assert plan.key == key and plan.task_count == 3
    assert log.count("POST", "/task/bulk_create/") == 2
    extra = chain(key, world["noop"], org1.organization_id, 1, prefix="extra")
    plan = client1.add_compute_plan_tasks(key, {"key": key, "tasks": extra})
    assert plan.task_count == 4
    keys = {t.key for t in client1.list_task(filters={"compute_plan_key": [key]})}
    assert keys == {t["task_id"] for t in tasks + extra}


def test_add_compute_plan_tasks_to_another_organizations_plan_is_forbidden(
    client2: SubstraClient, org2: Target, world: dict
) -> None:
    key = world["tasks_plan"]
    task = noop_task(task_key(key, "intruder"), world["noop"], org2.organization_id)
    with pytest.raises(exc.AuthorizationError) as raised:
        client2.add_compute_plan_tasks(key, [task])
    assert raised.value.status_code == 403
    log = RequestLog(client2)
    other = UpdateComputePlanTasksSpec(key=plan_key("another plan"), tasks=[task])
    with pytest.raises(exc.SpecValidationError) as mismatch:
        client2.add_compute_plan_tasks(key, other)  # a spec naming another plan (a dict's key is overridden)
    assert mismatch.value.field == "tasks.key"
    assert log.calls == []


def test_add_task_to_a_plan_twice_registers_it_once(client1: SubstraClient, org1: Target, world: dict) -> None:
    key = plan_key("single task")
    client1.add_compute_plan({"key": key, "name": "cassette single task plan"})
    spec = {
        "key": task_key(key, "single"),
        "compute_plan_key": key,
        "function_key": world["noop"],
        "worker": org1.organization_id,
        "metadata": {"kind": "single"},
        "outputs": {"model": {"permissions": {"public": False, "authorized_ids": []}}},
    }
    assert client1.add_task(spec) == spec["key"]
    assert client1.add_task(spec) == spec["key"]  # 409, confirmed: found, not duplicated
    task = client1.get_task(spec["key"])
    assert task.compute_plan_key == key and task.metadata == {"kind": "single"}
    assert task.function is not None and task.function.key == world["noop"]
    assert [t.key for t in client1.list_task(filters={"compute_plan_key": [key]})] == [spec["key"]]


def test_add_task_without_a_plan_creates_its_own(client1: SubstraClient, org1: Target, world: dict) -> None:
    key = stable_key(MODULE, "task alone")
    spec = {
        "key": key,
        "function_key": world["noop"],
        "worker": org1.organization_id,
        "outputs": {"model": {"permissions": {"public": False, "authorized_ids": []}}},
    }
    assert client1.add_task(spec) == key
    plan = client1.get_compute_plan(implicit_plan_key(key))
    assert plan.name == key and plan.task_count == 1
    assert client1.get_task(key).compute_plan_key == plan.key


def test_add_task_with_an_unknown_function_is_a_400(client1: SubstraClient, org1: Target, world: dict) -> None:
    function_key = unknown_key("function", "task")
    spec = {
        "key": task_key(world["tasks_plan"], "unknown function"),
        "compute_plan_key": world["tasks_plan"],
        "function_key": function_key,
        "worker": org1.organization_id,
    }
    with pytest.raises(exc.NotFound) as raised:  # OE0002: NotFound
        client1.add_task(spec)
    assert function_key in str(raised.value)


# -- getters --------------------------------------------------------------------------------------


def test_get_compute_plan(client1: SubstraClient, org1: Target, world: dict) -> None:
    plan = client1.get_compute_plan(world["listed"][0])
    assert plan.key == world["listed"][0] and plan.name == "cassette listing plan alpha"
    assert plan.tag == "cassette-listing" and plan.metadata == {"group": "listing", "letter": "alpha"}
    assert plan.owner == org1.organization_id
    assert plan.status is ComputePlanStatus.created and plan.task_count == 0


def test_get_task(client1: SubstraClient, org1: Target, world: dict) -> None:
    key = task_key(world["tasks_plan"], "noop/1")
    task = client1.get_task(key)
    assert task.key == key and task.compute_plan_key == world["tasks_plan"]
    assert task.worker == org1.organization_id and task.owner == org1.organization_id
    assert task.rank == 1 and task.tag == "cassette-tag-1" and task.metadata == {"index": "1"}
    assert [i.parent_task_key for i in task.inputs] == [task_key(world["tasks_plan"], "noop/0")]
    assert set(task.outputs) == {"model"}
    assert isinstance(task.status, ComputeTaskStatus)


def test_getters_of_unknown_keys_are_not_found(client1: SubstraClient) -> None:
    for getter in (client1.get_compute_plan, client1.get_task):
        key = unknown_key("plans", getter.__name__)
        with pytest.raises(exc.NotFound) as raised:
            getter(key)
        assert raised.value.key == key
    log = RequestLog(client1)
    with pytest.raises(exc.KeyFormatError):
        client1.get_task("not-a-key")
    assert log.calls == []


# -- lists ------------------------------------------------------------------------------------------


def test_list_compute_plan_filters_order_and_pages(client1: SubstraClient, org1: Target, world: dict) -> None:
    keys = world["listed"]
    log = RequestLog(client1)
    ascending = client1.list_compute_plan(filters={"key": keys}, order_by="name", ascending=True, page_size=1)
    assert [p.key for p in ascending] == keys
    assert log.count("GET", "/compute_plan/") == 3
    descending = client1.list_compute_plan(filters={"key": keys}, order_by="name", ascending=False)
    assert [p.key for p in descending] == keys[::-1]
    assert [p.key for p in client1.list_compute_plan(filters={"key": keys}, ascending=True)] == keys
    tagged = client1.list_compute_plan(filters={"tag": ["cassette-listing"]}, order_by="creation_date", ascending=True)
    assert [p.key for p in tagged] == keys
    assert [p.key for p in client1.list_compute_plan(filters={"name": "plan bravo"})] == [keys[1]]
    by_metadata = client1.list_compute_plan(filters={"metadata": [{"key": "letter", "type": "is", "value": "charlie"}]})
    assert [p.key for p in by_metadata] == [keys[2]]
    created = client1.list_compute_plan(filters={"key": keys, "status": ["PLAN_STATUS_CREATED"]})
    assert sorted(p.key for p in created) == sorted(keys)
    owned = client1.list_compute_plan(filters={"key": keys, "owner": [org1.organization_id]})
    assert len(owned) == 3


def test_list_compute_plan_refuses_bad_arguments_before_sending(client1: SubstraClient) -> None:
    log = RequestLog(client1)
    with pytest.raises(exc.NotAllowedFilterError):
        client1.list_compute_plan(filters={"worker": ["MyOrg1MSP"]})
    with pytest.raises(exc.FilterFormatError):
        client1.list_compute_plan(filters={"status": ["DONE"]})
    with pytest.raises(exc.FilterFormatError):
        client1.list_compute_plan(filters={"metadata": [{"key": "letter", "type": "equals", "value": "a"}]})
    with pytest.raises(exc.OrderingFormatError):
        client1.list_compute_plan(order_by="rank")
    assert log.calls == []


def test_list_task_filters_order_and_pages(client1: SubstraClient, org1: Target, world: dict) -> None:
    plan = world["tasks_plan"]
    keys = [task_key(plan, f"noop/{i}") for i in range(3)]
    log = RequestLog(client1)
    ranked = client1.list_task(filters={"compute_plan_key": [plan]}, order_by="rank", ascending=True, page_size=2)
    assert [t.key for t in ranked] == keys
    assert log.count("GET", "/task/") == 2
    reverse = client1.list_task(filters={"compute_plan_key": [plan]}, order_by="rank", ascending=False)
    assert [t.key for t in reverse] == keys[::-1]
    by_rank = client1.list_task(filters={"compute_plan_key": [plan], "rank": [0, 2]}, order_by="rank", ascending=True)
    assert [t.key for t in by_rank] == [keys[0], keys[2]]
    by_metadata = client1.list_task(
        filters={"compute_plan_key": [plan], "metadata": [{"key": "index", "type": "is", "value": "1"}]}
    )
    assert [t.key for t in by_metadata] == [keys[1]]
    by_tag = client1.list_task(filters={"tag": ["cassette-tag-2"], "compute_plan_key": [plan]})
    assert [t.key for t in by_tag] == [keys[2]]
    by_function = client1.list_task(
        filters={"function_key": world["noop"], "worker": [org1.organization_id], "key": keys}, order_by="key"
    )
    assert [t.key for t in by_function] == sorted(keys, reverse=True)
    with pytest.raises(exc.FilterFormatError):
        client1.list_task(filters={"status": ["RUNNING"]})


# -- rename / cancel --------------------------------------------------------------------------------


def test_update_compute_plan(client1: SubstraClient, world: dict) -> None:
    client1.update_compute_plan(world["renamed"], "cassette plan renamed")
    assert client1.get_compute_plan(world["renamed"]).name == "cassette plan renamed"


def test_update_compute_plan_errors(client1: SubstraClient, client2: SubstraClient, world: dict) -> None:
    with pytest.raises(exc.NotFound):
        client1.update_compute_plan(unknown_key("plan", "rename"), "whatever")
    with pytest.raises(exc.AuthorizationError) as raised:
        client2.update_compute_plan(world["renamed"], "not yours")
    assert raised.value.status_code == 403


def test_cancel_compute_plan_is_idempotent(client1: SubstraClient, world: dict) -> None:
    key = client1.add_compute_plan({"key": plan_key("canceled"), "name": "cassette canceled plan"}).key
    client1.cancel_compute_plan(key)
    assert client1.get_compute_plan(key).status is ComputePlanStatus.canceled
    log = RequestLog(client1)
    client1.cancel_compute_plan(key)  # the server answers 500; the plan is canceled: success
    assert log.count("POST", "/cancel/") == 1
    assert client1.get_compute_plan(key).status is ComputePlanStatus.canceled


def test_cancel_compute_plan_errors(client1: SubstraClient, client2: SubstraClient, world: dict) -> None:
    with pytest.raises(exc.NotFound):
        client1.cancel_compute_plan(unknown_key("plan", "cancel"))
    with pytest.raises(exc.AuthorizationError) as raised:
        client2.cancel_compute_plan(world["listed"][0])
    assert raised.value.status_code == 403
    assert client1.get_compute_plan(world["listed"][0]).status is ComputePlanStatus.created


async def test_async_cancel_compute_plan(client1: SubstraClient, client2: SubstraClient, world: dict) -> None:
    key = client1.add_compute_plan({"key": plan_key("async canceled"), "name": "cassette async canceled"}).key
    await client1.async_cancel_compute_plan(key)
    assert (await client1.async_get_compute_plan(key)).status is ComputePlanStatus.canceled
    with pytest.raises(exc.AuthorizationError):
        await client2.async_cancel_compute_plan(world["listed"][1])
    with pytest.raises(exc.NotFound):
        await client1.async_cancel_compute_plan(unknown_key("plan", "async cancel"))
