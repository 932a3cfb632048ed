"""Cassettes of the 0.x surface: tuples one by one, compute plans of tuples, the leaderboard.

Each add_*tuple, get_*tuple and list_*tuple, add / update / get / list / cancel of compute plans
and leaderboard, with exist_ok / AlreadyExists and the main error path, replayed from traffic
recorded against the local node (scripts/record-cassettes tests/legacy/test_cassette_tuples.py).
Tests that need results wait with the 1.0 client underneath (``client.backend``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from substra_flows import exceptions as exc
from substra_flows.legacy import Client
from substra_flows.legacy.exceptions import LegacyTranslationError
from tests.cassette import RequestLog, setup_cassette, unknown_key
from tests.legacy import _world
from tests.legacy.conftest import legacy_client
from tests.recording import Target

pytestmark = [pytest.mark.vcr, pytest.mark.cassette]

V = "legacy-tuples"


def wait(client: Client, target: Target, plan_id: str) -> None:
    client.backend.wait_compute_plan(plan_id, timeout=600, polling_period=target.polling_period)


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, org1: Target, org2: Target, workdir: Path) -> dict[str, Any]:
    """Data on both organizations, an objective on org1's test data, one algo of each kind, and a
    federated compute plan (two rounds of composite traintuples + aggregatetuples, two testtuples)."""
    ids = [org1.organization_id, org2.organization_id]
    with setup_cassette(request):
        client1, client2 = legacy_client(org1), legacy_client(org2)
        data = [_world.register_org(client1, workdir, V, 0, ids), _world.register_org(client2, workdir, V, 1, ids)]
        objective = client1.add_objective(_world.objective_data(workdir, V, data[0]["dataset"], data[0]["test"]))
        algo = client1.add_algo(_world.algo_data("algo", workdir, V))
        aggregate = client1.add_aggregate_algo(_world.algo_data("aggregate_algo", workdir, V))
        composite = client1.add_composite_algo(_world.algo_data("composite_algo", workdir, V))
        spec = federated_plan(data, objective["key"], aggregate["key"], composite["key"], ids, rounds=2)
        plan = client1.add_compute_plan(spec)
        wait(client1, org1, plan["compute_plan_id"])
        # the order of a plan's tuples is the server's (by key within one batch on 1.0): find each by its worker
        tests = {client1.get_testtuple(k)["dataset"]["worker"]: k for k in plan["testtuple_keys"]}
        client1.close()
        client2.close()
    return {
        "data": data,
        "objective": objective["key"],
        "algo": algo["key"],
        "aggregate": aggregate["key"],
        "composite": composite["key"],
        "plan_spec": spec,
        "plan": plan,
        "test_on": [tests[org1.organization_id], tests[org2.organization_id]],
    }


def federated_plan(
    data: list[dict[str, Any]], objective: str, aggregate: str, composite: str, ids: list[str], rounds: int
) -> dict[str, Any]:
    """A 0.x compute plan spec over both organizations."""
    composites, aggregates = [], []
    for rank in range(rounds):
        for index, org in enumerate(data):
            spec: dict[str, Any] = {
                "composite_traintuple_id": f"c{rank}-{index}",
                "algo_key": composite,
                "data_manager_key": org["dataset"],
                "train_data_sample_keys": org["train"],
                "out_trunk_model_permissions": {"authorized_ids": ids},
                "tag": f"round-{rank}",
            }
            if rank:
                spec |= {"in_head_model_id": f"c{rank - 1}-{index}", "in_trunk_model_id": f"a{rank - 1}"}
            composites.append(spec)
        aggregates.append(
            {
                "aggregatetuple_id": f"a{rank}",
                "algo_key": aggregate,
                "worker": ids[0],
                "in_models_ids": [f"c{rank}-{i}" for i in range(len(data))],
                "tag": f"round-{rank}",
                "metadata": {"round": str(rank)},
            }
        )
    tests = [
        {
            "objective_key": objective,
            "data_manager_key": org["dataset"],
            "test_data_sample_keys": org["test"],
            "traintuple_id": f"c{rounds - 1}-{index}",
            "tag": "evaluation",
        }
        for index, org in enumerate(data)
    ]
    return {
        "composite_traintuples": composites,
        "aggregatetuples": aggregates,
        "testtuples": tests,
        "tag": f"{V} plan",
        "metadata": {"purpose": "cassette"},
    }


def traintuple_data(world: dict[str, Any], org: int = 1, **extra: Any) -> dict[str, Any]:
    """A standalone traintuple on an organization's dataset."""
    data = world["data"][org]
    return {
        "algo_key": world["algo"],
        "data_manager_key": data["dataset"],
        "train_data_sample_keys": data["train"],
        **extra,
    }


# -- compute plans ------------------------------------------------------------------------------------------


def test_the_federated_plan_ran_and_reads_back_in_the_0x_shape(client1: Client, world: dict):
    plan = client1.get_compute_plan(world["plan"]["compute_plan_id"])
    assert plan["status"] == "done" and plan["tuple_count"] == plan["done_count"] == 8
    assert len(plan["composite_traintuple_keys"]) == 4 and len(plan["aggregatetuple_keys"]) == 2
    assert len(plan["testtuple_keys"]) == 2 and plan["traintuple_keys"] == []
    assert plan["tag"] == f"{V} plan" and plan["metadata"] == {"purpose": "cassette"} and plan["clean_models"] is False
    assert set(plan["id_to_key"]) == {"c0-0", "c0-1", "a0", "c1-0", "c1-1", "a1"}
    assert plan["id_to_key"] == world["plan"]["id_to_key"]


def test_add_compute_plan_again_finds_the_plan(client1: Client, world: dict):
    log = RequestLog(client1.backend)
    again = client1.add_compute_plan(world["plan_spec"])
    assert again["compute_plan_id"] == world["plan"]["compute_plan_id"]
    assert again["id_to_key"] == world["plan"]["id_to_key"]
    assert again["tuple_count"] == 8 and again["status"] == "done"
    assert log.count("POST", "/compute_plan/") == 1  # answered 409: the plan is found, not duplicated


def test_update_compute_plan_appends_tuples_that_name_earlier_ids(client1: Client, org1: Target, world: dict):
    plan_id = world["plan"]["compute_plan_id"]
    update = {
        "testtuples": [{"objective_key": world["objective"], "traintuple_id": "a1", "tag": "aggregate evaluation"}],
        "aggregatetuples": [
            {
                "aggregatetuple_id": "a-extra",
                "algo_key": world["aggregate"],
                "worker": org1.organization_id,
                "in_models_ids": ["a0", "a1"],
            }
        ],
    }
    updated = client1.update_compute_plan(plan_id, update)
    assert updated["tuple_count"] == 10 and list(updated["id_to_key"]) == ["a-extra"]
    wait(client1, org1, plan_id)
    again = client1.update_compute_plan(plan_id, update)
    assert again["tuple_count"] == 10
    aggregate_test = [
        t
        for t in client1.list_testtuple(filters=["testtuple:tag:aggregate evaluation"])
        if t["compute_plan_id"] == plan_id
    ]
    assert len(aggregate_test) == 1 and aggregate_test[0]["traintuple_type"] == "aggregatetuple"
    assert aggregate_test[0]["certified"] is True and aggregate_test[0]["status"] == "done"
    assert 0.0 <= aggregate_test[0]["dataset"]["perf"] <= 1.0


def test_update_compute_plan_with_an_unknown_id(client1: Client, world: dict):
    update = {"testtuples": [{"objective_key": world["objective"], "traintuple_id": "no-such-id"}]}
    with pytest.raises(exc.InvalidRequest, match="no-such-id"):
        client1.update_compute_plan(world["plan"]["compute_plan_id"], update)


def test_clean_models_makes_intermediate_models_transient(client1: Client, org1: Target, world: dict):
    ids = [org1.organization_id]
    spec = federated_plan(world["data"][:1], world["objective"], world["aggregate"], world["composite"], ids, rounds=2)
    spec |= {"clean_models": True, "tag": f"{V} clean"}
    plan = client1.add_compute_plan(spec)
    assert plan["clean_models"] is True
    first = client1.backend.get_task(plan["id_to_key"]["c0-0"])
    last = client1.backend.get_task(plan["id_to_key"]["a1"])
    assert first.outputs["shared"].is_transient and first.outputs["local"].is_transient
    assert not last.outputs["model"].is_transient


def test_list_compute_plan_with_filters(client1: Client, world: dict):
    listed = client1.list_compute_plan(filters=[f"compute_plan:tag:{V} plan"])
    assert [p["compute_plan_id"] for p in listed] == [world["plan"]["compute_plan_id"]]
    everything = client1.list_compute_plan()
    assert all(p["tag"] != "substra-flows-legacy-record" for p in everything)  # records never show


def test_cancel_compute_plan(client1: Client):
    plan = client1.add_compute_plan({"tag": f"{V} to cancel"})
    assert plan["status"] == "todo" and plan["tuple_count"] == 0
    canceled = client1.cancel_compute_plan(plan["compute_plan_id"])
    assert canceled["status"] == "canceled"


def test_cancel_compute_plan_of_an_unknown_key(client1: Client):
    with pytest.raises(exc.NotFound, match="no compute plan"):
        client1.cancel_compute_plan(unknown_key(V, "plan"))


def test_get_compute_plan_of_a_record_plan_is_not_found(client1: Client, world: dict):
    record = next(p for p in client1.backend.list_compute_plan() if p.tag == "substra-flows-legacy-record")
    with pytest.raises(exc.NotFound, match="not a compute plan of the 0.x surface"):
        client1.get_compute_plan(record.key)


# -- tuples read back ---------------------------------------------------------------------------------------


def test_get_composite_traintuple(client1: Client, org2: Target, world: dict):
    key = world["plan"]["id_to_key"]["c1-1"]
    composite = client1.get_composite_traintuple(key)
    assert composite["status"] == "done" and composite["rank"] == 2
    assert (
        composite["dataset"]["worker"] == org2.organization_id
        and composite["dataset"]["key"] == world["data"][1]["dataset"]
    )
    assert composite["in_head_model"]["traintuple_key"] == world["plan"]["id_to_key"]["c0-1"]
    assert composite["in_trunk_model"]["traintuple_key"] == world["plan"]["id_to_key"]["a0"]
    assert (
        composite["out_head_model"]["out_model"]["hash"]
        and composite["out_trunk_model"]["out_model"]["storage_address"]
    )
    assert composite["out_trunk_model"]["permissions"]["process"]["public"] is False
    assert composite["compute_plan_id"] == world["plan"]["compute_plan_id"] and composite["tag"] == "round-1"


def test_get_aggregatetuple(client1: Client, org1: Target, world: dict):
    aggregate = client1.get_aggregatetuple(world["plan"]["id_to_key"]["a1"])
    assert aggregate["worker"] == org1.organization_id and aggregate["metadata"] == {"round": "1"}
    assert [m["traintuple_key"] for m in aggregate["in_models"]] == [
        world["plan"]["id_to_key"]["c1-0"],
        world["plan"]["id_to_key"]["c1-1"],
    ]
    assert all(m["hash"] for m in aggregate["in_models"]) and aggregate["out_model"]["hash"]


def test_get_testtuple_and_the_wrong_kind(client1: Client, org1: Target, world: dict):
    key = world["test_on"][0]
    testtuple = client1.get_testtuple(key)
    assert testtuple["status"] == "done" and testtuple["certified"] is True
    assert (
        testtuple["objective"]["hash"] == world["objective"] and testtuple["traintuple_type"] == "composite_traintuple"
    )
    assert testtuple["algo"]["key"] == world["composite"] and 0.5 <= testtuple["dataset"]["perf"] <= 1.0
    assert testtuple["dataset"]["worker"] == org1.organization_id
    with pytest.raises(exc.NotFound, match="not a 0.x traintuple"):
        client1.get_traintuple(key)


def test_list_tuples_with_filters(client1: Client, org2: Target, world: dict):
    mine = world["plan"]["compute_plan_id"]
    composites = client1.list_composite_traintuple(
        filters=[f"composite_traintuple:compute_plan_id:{mine}", "composite_traintuple:tag:round-0"]
    )
    assert sorted(c["key"] for c in composites) == sorted(world["plan"]["id_to_key"][f"c0-{i}"] for i in (0, 1))
    on_org2 = client1.list_composite_traintuple(
        filters=[f"dataset:worker:{org2.organization_id}", f"composite_traintuple:compute_plan_id:{mine}"]
    )
    assert len(on_org2) == 2
    aggregates = client1.list_aggregatetuple(filters=[f"aggregatetuple:compute_plan_id:{mine}"])
    assert {a["key"] for a in aggregates} >= {world["plan"]["id_to_key"]["a0"], world["plan"]["id_to_key"]["a1"]}
    tests = client1.list_testtuple(
        filters=["testtuple:certified:false", "OR", "testtuple:certified:true"], is_complex=True
    )
    assert {t["key"] for group in tests for t in group} >= set(world["plan"]["testtuple_keys"])
    with pytest.raises(exc.InvalidRequest, match="cannot be filtered on 'objective'"):
        client1.list_traintuple(filters=["objective:key:x"])


# -- standalone tuples --------------------------------------------------------------------------------------


def test_add_traintuple_outside_any_plan_then_again(client1: Client, org1: Target, org2: Target, world: dict):
    data = traintuple_data(world, tag="standalone", metadata={"kind": "plain"})
    traintuple = client1.add_traintuple(data)
    assert traintuple["compute_plan_id"] == "" and traintuple["rank"] == 0 and traintuple["tag"] == "standalone"
    assert traintuple["dataset"]["worker"] == org2.organization_id and traintuple["metadata"] == {"kind": "plain"}
    with pytest.raises(exc.AlreadyExists) as raised:
        client1.add_traintuple({**data, "tag": "another tag, same tuple"})
    assert raised.value.key == traintuple["key"]
    log = RequestLog(client1.backend)
    assert client1.add_traintuple(data, exist_ok=True)["key"] == traintuple["key"]
    assert log.count("POST", "/task/bulk_create/") == 0
    plan = client1.backend.get_task(traintuple["key"]).compute_plan_key
    wait(client1, org1, plan)
    done = client1.get_traintuple(traintuple["key"])
    assert done["status"] == "done" and done["out_model"]["hash"] and done["in_models"] == []
    listed = client1.list_traintuple(filters=["traintuple:tag:standalone"])
    assert [t["key"] for t in listed] == [traintuple["key"]] and listed[0]["out_model"] == done["out_model"]
    assert listed[0]["log"] == "" and listed[0]["algo"]["key"] == world["algo"]


def test_add_traintuple_rank_rules(client1: Client, org1: Target, world: dict):
    first = client1.add_traintuple(traintuple_data(world, org=0, rank=0, tag="rank chain"))
    plan_id = first["compute_plan_id"]
    assert plan_id and client1.get_compute_plan(plan_id)["traintuple_keys"] == [first["key"]]
    second = client1.add_traintuple(
        traintuple_data(world, org=1, rank=1, compute_plan_id=plan_id, in_models_keys=[first["key"]])
    )
    assert second["compute_plan_id"] == plan_id and second["rank"] == 1
    assert [m["traintuple_key"] for m in second["in_models"]] == [first["key"]]
    log = RequestLog(client1.backend)
    with pytest.raises(LegacyTranslationError) as raised:
        client1.add_traintuple(traintuple_data(world, rank=3, compute_plan_id=plan_id, in_models_keys=[second["key"]]))
    assert raised.value.field == "add_traintuple.rank" and "rank 2" in str(raised.value)
    with pytest.raises(exc.InvalidRequest, match="a ComputePlan should have a rank"):
        client1.add_traintuple(traintuple_data(world, compute_plan_id=plan_id, in_models_keys=[second["key"]]))
    with pytest.raises(exc.InvalidRequest, match="a new ComputePlan should have a rank 0"):
        client1.add_traintuple(traintuple_data(world, rank=2, in_models_keys=[second["key"]]))
    assert log.count("POST", "/task/bulk_create/") == 0
    wait(client1, org1, plan_id)


def test_add_traintuple_on_test_only_data_is_refused(client1: Client, world: dict):
    data = {**traintuple_data(world, org=0), "train_data_sample_keys": world["data"][0]["test"]}
    with pytest.raises(exc.InvalidRequest, match="test only data"):
        client1.add_traintuple(data)


def test_add_traintuple_with_an_unknown_algo(client1: Client, world: dict):
    with pytest.raises(exc.NotFound, match="add_traintuple.algo_key"):
        client1.add_traintuple({**traintuple_data(world), "algo_key": unknown_key(V, "algo")})


def test_add_aggregatetuple_then_again(client1: Client, org1: Target, world: dict):
    ids = world["plan"]["id_to_key"]
    data = {
        "algo_key": world["aggregate"],
        "in_models_keys": [ids["c1-0"], ids["c1-1"]],
        "worker": org1.organization_id,
        "tag": "standalone aggregate",
    }
    aggregate = client1.add_aggregatetuple(data)
    assert aggregate["worker"] == org1.organization_id and aggregate["rank"] == 3
    assert aggregate["compute_plan_id"] == ""
    with pytest.raises(exc.AlreadyExists):
        client1.add_aggregatetuple(data)
    assert client1.add_aggregatetuple(data, exist_ok=True)["key"] == aggregate["key"]


def test_add_aggregatetuple_with_a_plain_algo(client1: Client, org1: Target, world: dict):
    data = {
        "algo_key": world["algo"],
        "in_models_keys": [world["plan"]["id_to_key"]["a0"]],
        "worker": org1.organization_id,
    }
    with pytest.raises(exc.InvalidRequest, match="is an algo, which an aggregatetuple cannot run; use add_traintuple"):
        client1.add_aggregatetuple(data)


def test_add_composite_traintuple_then_again(client1: Client, org2: Target, world: dict):
    ids = world["plan"]["id_to_key"]
    data = {
        "algo_key": world["composite"],
        "data_manager_key": world["data"][1]["dataset"],
        "train_data_sample_keys": world["data"][1]["train"],
        "in_head_model_key": ids["c1-1"],
        "in_trunk_model_key": ids["a1"],
        "out_trunk_model_permissions": {"authorized_ids": [org2.organization_id]},
        "rank": "4",  # 1 + the rank of a1 (0.x sent ranks as strings too)
        "compute_plan_id": world["plan"]["compute_plan_id"],
    }
    composite = client1.add_composite_traintuple(data)
    assert composite["rank"] == 4 and composite["compute_plan_id"] == world["plan"]["compute_plan_id"]
    assert composite["in_head_model"]["traintuple_key"] == ids["c1-1"]
    with pytest.raises(exc.AlreadyExists):
        client1.add_composite_traintuple(data)
    assert client1.add_composite_traintuple(data, exist_ok=True)["key"] == composite["key"]


def test_add_composite_traintuple_with_a_head_from_another_worker(client1: Client, org2: Target, world: dict):
    ids = world["plan"]["id_to_key"]
    data = {
        "algo_key": world["composite"],
        "data_manager_key": world["data"][1]["dataset"],
        "train_data_sample_keys": world["data"][1]["train"],
        "in_head_model_key": ids["c1-0"],
        "in_trunk_model_key": ids["a1"],
        "out_trunk_model_permissions": {"authorized_ids": [org2.organization_id]},
    }
    with pytest.raises(exc.InvalidRequest, match="never leave their worker"):
        client1.add_composite_traintuple(data)


def test_add_testtuple_on_the_objective_data_then_on_other_data(client1: Client, org1: Target, world: dict):
    ids = world["plan"]["id_to_key"]
    data = {"objective_key": world["objective"], "traintuple_key": ids["a1"], "tag": "standalone test"}
    testtuple = client1.add_testtuple(data)
    assert testtuple["certified"] is True and testtuple["traintuple_type"] == "aggregatetuple"
    with pytest.raises(exc.AlreadyExists):
        client1.add_testtuple(data)
    assert client1.add_testtuple(data, exist_ok=True)["key"] == testtuple["key"]
    other = client1.add_testtuple(
        {
            **data,
            "data_manager_key": world["data"][1]["dataset"],
            "test_data_sample_keys": world["data"][1]["test"],
        }
    )
    assert other["certified"] is False and other["key"] != testtuple["key"]
    wait(client1, org1, world["plan"]["compute_plan_id"])
    assert client1.get_testtuple(testtuple["key"])["dataset"]["perf"] is not None


def test_add_testtuple_with_samples_but_no_dataset(client1: Client, world: dict):
    data = {
        "objective_key": world["objective"],
        "traintuple_key": world["plan"]["id_to_key"]["a1"],
        "test_data_sample_keys": world["data"][1]["test"],
    }
    with pytest.raises(exc.InvalidRequest, match="should be provided together"):
        client1.add_testtuple(data)


# -- leaderboard --------------------------------------------------------------------------------------------


def test_leaderboard_ranks_the_certified_done_testtuples(client1: Client, world: dict):
    board = client1.leaderboard(world["objective"])
    assert board["objective"]["key"] == world["objective"]
    perfs = [t["perf"] for t in board["testtuples"]]
    assert perfs == sorted(perfs, reverse=True) and perfs
    keys = {t["key"] for t in board["testtuples"]}
    assert world["test_on"][0] in keys  # on the objective's own data (org1's)
    assert world["test_on"][1] not in keys  # on org2's data: not certified
    first = board["testtuples"][0]
    assert set(first) == {"algo", "creator", "key", "traintuple_key", "perf", "tag"}
    ascending = client1.leaderboard(world["objective"], sort="asc")
    assert [t["perf"] for t in ascending["testtuples"]] == sorted(perfs)


def test_leaderboard_errors(client1: Client, world: dict):
    with pytest.raises(LegacyTranslationError) as raised:
        client1.leaderboard(world["objective"], sort="up")
    assert raised.value.field == "sort"
    with pytest.raises(exc.NotFound, match="no objective"):
        client1.leaderboard(world["algo"])
