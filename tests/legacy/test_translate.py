"""Unit tests of the translation of each 0.x tuple kind into 1.0 task specs (no server)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest

from substra_flows import exceptions as exc
from substra_flows.legacy import keys, metadata, specs, translate, translate_plan
from substra_flows.legacy.exceptions import LegacyTranslationError
from substra_flows.legacy.translate import AlgoInfo, DatasetInfo, ObjectiveInfo, Perm, TupleInfo
from substra_flows.schemas import ComputePlanSpec

ORG1, ORG2 = "MyOrg1MSP", "MyOrg2MSP"
PLAN = "5e9d1a7c-3f4b-4c2d-9a8e-1b2c3d4e5f60"


def k(name: str) -> str:
    """A readable stable key."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


ALGO = AlgoInfo(k("algo"), metadata.ALGO, "algo", k("algo-predict"), Perm(True))
AGGREGATE = AlgoInfo(k("agg"), metadata.AGGREGATE_ALGO, "agg", k("agg-predict"), Perm(True))
COMPOSITE = AlgoInfo(k("comp"), metadata.COMPOSITE_ALGO, "comp", k("comp-predict"), Perm(True))
DS1 = DatasetInfo(k("ds1"), ORG1, Perm(False, frozenset({ORG1, ORG2})))
DS2 = DatasetInfo(k("ds2"), ORG2, Perm(False, frozenset({ORG2})))
TRAIN1 = [k("s1a"), k("s1b")]
TRAIN2 = [k("s2a")]
TEST1 = [k("t1")]
OBJECTIVE = ObjectiveInfo(k("objective"), "acc", DS1.key, tuple(TEST1), Perm(True))


class FakeResolver:
    """The assets of the tests, and tuples 'already on the server'."""

    def __init__(self, tuples: Sequence[TupleInfo] = (), test_only: Sequence[str] = ()) -> None:
        self.algos = {a.key: a for a in (ALGO, AGGREGATE, COMPOSITE)}
        self.datasets = {d.key: d for d in (DS1, DS2)}
        self.tuples = {t.key: t for t in tuples}
        self.test_only_keys = set(test_only)

    def algo(self, key: str, field: str) -> AlgoInfo:
        if key not in self.algos:
            raise exc.NotFound(f"no algo {key} ({field})", status_code=404)
        return self.algos[key]

    def dataset(self, key: str, field: str) -> DatasetInfo:
        return self.datasets[key]

    def objective(self, key: str, field: str) -> ObjectiveInfo:
        assert key == OBJECTIVE.key, field
        return OBJECTIVE

    def tuple(self, key: str, field: str) -> TupleInfo:
        if key not in self.tuples:
            raise exc.NotFound(f"no tuple {key} ({field})", status_code=404)
        return self.tuples[key]

    def test_only(self, sample_keys: Sequence[str]) -> set[str]:
        return self.test_only_keys & set(sample_keys)


def inputs(task: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """Inputs as (identifier, asset or parent key, parent output)."""
    return [
        (i["identifier"], i.get("asset_key") or i.get("parent_task_key"), i.get("parent_task_output_identifier"))
        for i in task["inputs"]
    ]


def parent(kind: str, key: str, rank: int = 0, worker: str = ORG1, plan: str = PLAN) -> TupleInfo:
    outputs = {o: Perm(False, frozenset({ORG1, ORG2})) for o in translate.OUTPUTS[kind]}
    return TupleInfo(key, kind, rank, worker, plan, COMPOSITE.key if "composite" in kind else ALGO.key, outputs)


def valid_plan_tasks(translated: Sequence[translate.Translated]) -> None:
    """The tasks pass SubstraClient's own plan validation (the spec the server receives)."""
    ComputePlanSpec.model_validate({"key": PLAN, "name": "x", "tasks": [t for tr in translated for t in tr.tasks]})


# -- traintuple ---------------------------------------------------------------------------------------------


def test_traintuple_is_one_train_task_on_the_dataset_owner():
    first = parent(metadata.TRAINTUPLE, k("p1"), rank=0)
    second = parent(metadata.AGGREGATETUPLE, k("p2"), rank=3)
    result = translate.traintuple(
        key=k("tt"),
        plan_key=PLAN,
        algo=ALGO,
        dataset=DS2,
        sample_keys=TRAIN2,
        parents=[first, second],
        tag="round-1",
        user_metadata={"lr": "0.1"},
        rank=4,
    )
    (task,) = result.tasks
    assert task["task_id"] == k("tt") and task["function_key"] == ALGO.key and task["worker"] == ORG2
    assert inputs(task) == [
        ("opener", DS2.key, None),
        ("datasamples", TRAIN2[0], None),
        ("models", first.key, "model"),
        ("models", second.key, "model"),
    ]
    assert task["tag"] == "round-1"
    assert task["metadata"] == {"lr": "0.1", metadata.KIND: metadata.TRAINTUPLE, metadata.RANK: "4"}
    # out model: dataset perms (ORG2 only) intersected with the public algo, plus the worker
    assert task["outputs"] == {
        "model": {"permissions": {"public": False, "authorized_ids": [ORG2]}, "is_transient": False}
    }
    assert result.info is not None and result.info.rank == 4 and result.info.worker == ORG2


def test_traintuple_model_permissions_intersect_dataset_and_algo():
    algo = AlgoInfo(k("private algo"), metadata.ALGO, "a", k("pp"), Perm(False, frozenset({ORG1})))
    result = translate.traintuple(
        key=k("tt"), plan_key=PLAN, algo=algo, dataset=DS1, sample_keys=TRAIN1, parents=[], tag=None, user_metadata={}
    )
    assert result.tasks[0]["outputs"]["model"]["permissions"] == {"public": False, "authorized_ids": [ORG1]}
    assert "tag" not in result.tasks[0]


def test_traintuple_reads_a_composite_parent_as_its_trunk():
    result = translate.traintuple(
        key=k("tt"),
        plan_key=PLAN,
        algo=ALGO,
        dataset=DS1,
        sample_keys=TRAIN1,
        parents=[parent(metadata.COMPOSITE_TRAINTUPLE, k("c"))],
        tag=None,
        user_metadata={},
    )
    assert ("models", k("c"), "shared") in inputs(result.tasks[0])


def test_a_rank_that_1_0_would_not_derive_is_refused_not_dropped():
    with pytest.raises(LegacyTranslationError) as raised:
        translate.traintuple(
            key=k("tt"),
            plan_key=PLAN,
            algo=ALGO,
            dataset=DS1,
            sample_keys=TRAIN1,
            parents=[parent(metadata.TRAINTUPLE, k("p"), rank=0)],
            tag=None,
            user_metadata={},
            rank=5,
        )
    assert raised.value.field == "add_traintuple.rank" and raised.value.value == 5
    assert "rank 1" in str(raised.value)


def test_a_traintuple_cannot_run_a_composite_algo():
    with pytest.raises(exc.InvalidRequest) as raised:
        translate.traintuple(
            key=k("tt"),
            plan_key=PLAN,
            algo=COMPOSITE,
            dataset=DS1,
            sample_keys=TRAIN1,
            parents=[],
            tag=None,
            user_metadata={},
        )
    assert "add_composite_traintuple" in str(raised.value) and COMPOSITE.key in str(raised.value)


def test_test_only_samples_are_refused_for_training():
    resolver = FakeResolver(test_only=[TRAIN1[1]])
    with pytest.raises(exc.InvalidRequest) as raised:
        translate.check_train_samples(resolver, TRAIN1, "add_traintuple.train_data_sample_keys")
    assert "test only data" in str(raised.value) and TRAIN1[1] in str(raised.value)
    translate.check_train_samples(resolver, TRAIN1[:1], "add_traintuple.train_data_sample_keys")


# -- aggregatetuple -----------------------------------------------------------------------------------------


def test_aggregatetuple_reads_every_model_in_order_and_narrows_permissions():
    narrow = TupleInfo(k("n"), metadata.TRAINTUPLE, 2, ORG2, PLAN, ALGO.key, {"model": Perm(False, frozenset({ORG2}))})
    trunk = parent(metadata.COMPOSITE_TRAINTUPLE, k("c"), rank=1)
    result = translate.aggregatetuple(
        key=k("agg"),
        plan_key=PLAN,
        algo=AGGREGATE,
        worker=ORG1,
        parents=[trunk, narrow],
        tag=None,
        user_metadata={},
        legacy_id="a0",
    )
    (task,) = result.tasks
    assert task["worker"] == ORG1 and task["function_key"] == AGGREGATE.key
    assert inputs(task) == [("models", k("c"), "shared"), ("models", k("n"), "model")]
    # readable by whoever could read every input ({ORG2}), plus the worker
    assert task["outputs"]["model"]["permissions"] == {"public": False, "authorized_ids": [ORG1, ORG2]}
    assert task["metadata"] == {metadata.KIND: metadata.AGGREGATETUPLE, metadata.TUPLE_ID: "a0"}
    assert result.info is not None and result.info.rank == 3 and result.legacy_id == "a0"


def test_aggregatetuple_needs_an_aggregate_algo_and_models():
    with pytest.raises(exc.InvalidRequest):
        translate.aggregatetuple(
            key=k("agg"),
            plan_key=PLAN,
            algo=ALGO,
            worker=ORG1,
            parents=[parent(metadata.TRAINTUPLE, k("p"))],
            tag=None,
            user_metadata={},
        )
    with pytest.raises(LegacyTranslationError):
        translate.aggregatetuple(
            key=k("agg"), plan_key=PLAN, algo=AGGREGATE, worker=ORG1, parents=[], tag=None, user_metadata={}
        )


# -- composite traintuple ----------------------------------------------------------------------------------


def test_composite_first_round_has_no_model_inputs_and_two_outputs():
    result = translate.composite_traintuple(
        key=k("c0"),
        plan_key=PLAN,
        creator=ORG1,
        algo=COMPOSITE,
        dataset=DS2,
        sample_keys=TRAIN2,
        head=None,
        trunk=None,
        trunk_permissions=specs.TrunkPermissions(authorized_ids=[ORG1]),
        tag=None,
        user_metadata={},
    )
    (task,) = result.tasks
    assert task["worker"] == ORG2
    assert [i[0] for i in inputs(task)] == ["opener", "datasamples"]
    assert task["outputs"]["local"]["permissions"] == {
        "public": False,
        "authorized_ids": [ORG1, ORG2],
    }  # worker + creator
    assert task["outputs"]["shared"]["permissions"] == {
        "public": False,
        "authorized_ids": [ORG1, ORG2],
    }  # given + worker


def test_composite_reads_its_head_and_the_trunk_of_an_aggregate():
    head = parent(metadata.COMPOSITE_TRAINTUPLE, k("c0"), rank=0, worker=ORG1)
    trunk = parent(metadata.AGGREGATETUPLE, k("a0"), rank=1)
    result = translate.composite_traintuple(
        key=k("c1"),
        plan_key=PLAN,
        creator=ORG1,
        algo=COMPOSITE,
        dataset=DS1,
        sample_keys=TRAIN1,
        head=head,
        trunk=trunk,
        trunk_permissions=specs.TrunkPermissions(authorized_ids=[ORG1, ORG2]),
        tag=None,
        user_metadata={},
        rank=2,
    )
    assert inputs(result.tasks[0])[-2:] == [("local", k("c0"), "local"), ("shared", k("a0"), "model")]
    assert result.info is not None and result.info.rank == 2


def second_round_composite(head: TupleInfo) -> translate.Translated:
    """A composite traintuple on org1's data whose head model is ``head``."""
    return translate.composite_traintuple(
        key=k("c1"),
        plan_key=PLAN,
        creator=ORG1,
        algo=COMPOSITE,
        dataset=DS1,
        sample_keys=TRAIN1,
        head=head,
        trunk=parent(metadata.AGGREGATETUPLE, k("a0")),
        trunk_permissions=specs.TrunkPermissions(authorized_ids=[ORG1]),
        tag=None,
        user_metadata={},
    )


def test_a_head_model_never_leaves_its_worker():
    with pytest.raises(exc.InvalidRequest, match="never leave their worker"):
        second_round_composite(parent(metadata.COMPOSITE_TRAINTUPLE, k("c0"), worker=ORG2))


def test_a_head_model_must_come_from_a_composite():
    with pytest.raises(exc.InvalidRequest, match="head models come from composite traintuples"):
        second_round_composite(parent(metadata.TRAINTUPLE, k("t")))
    assert second_round_composite(parent(metadata.COMPOSITE_TRAINTUPLE, k("c0"))).tasks


# -- testtuple ----------------------------------------------------------------------------------------------


def test_testtuple_is_a_predict_task_then_a_test_task():
    model_parent = parent(metadata.TRAINTUPLE, k("tt"), rank=2)
    result = translate.testtuple(
        key=k("test"),
        objective=OBJECTIVE,
        parent=model_parent,
        parent_algo=ALGO,
        dataset=DS1,
        sample_keys=TEST1,
        certified=True,
        tag="eval",
        user_metadata={"note": "x"},
    )
    predict, test = result.tasks
    assert predict["task_id"] == keys.predict_key(k("test")) and predict["function_key"] == ALGO.predict_key
    assert inputs(predict) == [("opener", DS1.key, None), ("datasamples", TEST1[0], None), ("model", k("tt"), "model")]
    assert predict["outputs"] == {
        "predictions": {"permissions": {"public": False, "authorized_ids": [ORG1]}, "is_transient": False}
    }
    assert test["task_id"] == k("test") and test["function_key"] == OBJECTIVE.key and test["worker"] == ORG1
    assert inputs(test)[-1] == ("predictions", predict["task_id"], "predictions")
    assert test["outputs"]["performance"]["permissions"] == {"public": True, "authorized_ids": []}
    assert test["metadata"] == {
        "note": "x",
        metadata.KIND: metadata.TESTTUPLE,
        metadata.CERTIFIED: "true",
        metadata.RANK: "2",
        metadata.TRAINTUPLE_KEY: k("tt"),
    }
    assert predict["metadata"][metadata.KIND] == metadata.TESTTUPLE_PREDICT


def test_testtuple_of_a_composite_predicts_with_head_and_trunk():
    result = translate.testtuple(
        key=k("test"),
        objective=OBJECTIVE,
        parent=parent(metadata.COMPOSITE_TRAINTUPLE, k("c")),
        parent_algo=COMPOSITE,
        dataset=DS1,
        sample_keys=TEST1,
        certified=False,
        tag=None,
        user_metadata={},
    )
    assert inputs(result.tasks[0])[-2:] == [("local", k("c"), "local"), ("shared", k("c"), "shared")]
    assert result.tasks[0]["function_key"] == COMPOSITE.predict_key


def test_test_data_defaults_to_the_objective_and_says_when_it_is_certified():
    assert translate.test_data(OBJECTIVE, None, [], "t") == (DS1.key, TEST1, True)
    assert translate.test_data(OBJECTIVE, DS1.key, TEST1, "t") == (DS1.key, TEST1, True)
    assert translate.test_data(OBJECTIVE, DS2.key, TRAIN2, "t") == (DS2.key, TRAIN2, False)
    with pytest.raises(exc.InvalidRequest, match="should be provided together"):
        translate.test_data(OBJECTIVE, DS2.key, [], "t")
    bare = ObjectiveInfo(k("bare"), "bare", None, (), Perm(True))
    with pytest.raises(exc.InvalidRequest, match="no data associated with objective"):
        translate.test_data(bare, None, [], "t")


# -- compute plans ------------------------------------------------------------------------------------------


def federated_spec(rounds: int = 2) -> specs.ComputePlanData:
    """The 0.x plan of the acceptance script: composite traintuples + aggregatetuples + testtuples."""
    composites, aggregates = [], []
    for r in range(rounds):
        for name, ds, samples in (("o1", DS1, TRAIN1), ("o2", DS2, TRAIN2)):
            spec: dict[str, Any] = {
                "composite_traintuple_id": f"c{r}-{name}",
                "algo_key": COMPOSITE.key,
                "data_manager_key": ds.key,
                "train_data_sample_keys": samples,
                "out_trunk_model_permissions": {"authorized_ids": [ORG1, ORG2]},
            }
            if r:
                spec |= {"in_head_model_id": f"c{r - 1}-{name}", "in_trunk_model_id": f"a{r - 1}"}
            composites.append(spec)
        aggregates.append(
            {
                "aggregatetuple_id": f"a{r}",
                "algo_key": AGGREGATE.key,
                "worker": ORG1,
                "in_models_ids": [f"c{r}-o1", f"c{r}-o2"],
            }
        )
    tests = [{"objective_key": OBJECTIVE.key, "traintuple_id": f"c{rounds - 1}-o1"}]
    # listed children first: the translation orders them parents first
    return specs.parse(
        specs.ComputePlanData,
        {
            "composite_traintuples": composites[::-1],
            "aggregatetuples": aggregates,
            "testtuples": tests,
            "clean_models": True,
        },
        "add_compute_plan",
    )


def test_compute_plan_translation_orders_parents_first_and_derives_keys():
    translated = translate_plan.compute_plan(
        plan_key=PLAN,
        spec=federated_spec(),
        creator=ORG1,
        resolver=FakeResolver(),
        clean_models=False,
        method="add_compute_plan",
    )
    ids = [t.legacy_id for t in translated]
    assert ids.index("c0-o1") < ids.index("a0") < ids.index("c1-o1") < ids.index("a1")
    assert all(t.key == keys.plan_tuple_key(PLAN, t.legacy_id) for t in translated if t.legacy_id)
    c1 = next(t for t in translated if t.legacy_id == "c1-o1")
    assert inputs(c1.tasks[0])[-2:] == [
        ("local", keys.plan_tuple_key(PLAN, "c0-o1"), "local"),
        ("shared", keys.plan_tuple_key(PLAN, "a0"), "model"),
    ]
    assert [t.kind for t in translated][-1] == metadata.TESTTUPLE
    assert len(translated[-1].tasks) == 2
    valid_plan_tasks(translated)
    again = translate_plan.compute_plan(
        plan_key=PLAN,
        spec=federated_spec(),
        creator=ORG1,
        resolver=FakeResolver(),
        clean_models=False,
        method="add_compute_plan",
    )
    assert [t.tasks for t in again] == [t.tasks for t in translated]


def test_clean_models_makes_every_consumed_output_transient_and_keeps_final_ones():
    translated = translate_plan.compute_plan(
        plan_key=PLAN,
        spec=federated_spec(),
        creator=ORG1,
        resolver=FakeResolver(),
        clean_models=True,
        method="add_compute_plan",
    )
    transient = {
        (task["task_id"], name): out["is_transient"]
        for t in translated
        for task in t.tasks
        for name, out in task["outputs"].items()
    }
    c0 = keys.plan_tuple_key(PLAN, "c0-o1")
    c1_o2 = keys.plan_tuple_key(PLAN, "c1-o2")
    assert transient[(c0, "local")] and transient[(c0, "shared")]  # read by c1-o1 and a0
    assert transient[(keys.plan_tuple_key(PLAN, "a0"), "model")]
    assert not transient[(keys.plan_tuple_key(PLAN, "a1"), "model")]  # the final aggregate is kept
    assert not transient[(c1_o2, "local")]  # nobody reads it
    predict = translated[-1].tasks[0]
    assert transient[(predict["task_id"], "predictions")]
    assert not transient[(translated[-1].key, "performance")]


def test_update_references_tuples_of_the_plan_by_id():
    existing = parent(metadata.AGGREGATETUPLE, keys.plan_tuple_key(PLAN, "a1"), rank=3)
    spec = specs.parse(
        specs.PlanTuples,
        {"testtuples": [{"objective_key": OBJECTIVE.key, "traintuple_id": "a1"}]},
        "update_compute_plan",
    )
    (result,) = translate_plan.compute_plan(
        plan_key=PLAN, spec=spec, creator=ORG1, resolver=FakeResolver([existing]), clean_models=False, method="m"
    )
    assert inputs(result.tasks[0])[-1] == ("model", existing.key, "model")
    assert result.tasks[1]["metadata"][metadata.RANK] == "3"


def test_an_unknown_id_a_duplicate_id_and_a_cycle_are_named():
    def plan(data: dict[str, Any]) -> Any:
        spec = specs.parse(specs.ComputePlanData, data, "add_compute_plan")
        return translate_plan.compute_plan(
            plan_key=PLAN,
            spec=spec,
            creator=ORG1,
            resolver=FakeResolver(),
            clean_models=False,
            method="add_compute_plan",
        )

    def train(tid: str, parents: list[str]) -> dict[str, Any]:
        return {
            "traintuple_id": tid,
            "algo_key": ALGO.key,
            "data_manager_key": DS1.key,
            "train_data_sample_keys": TRAIN1,
            "in_models_ids": parents,
        }

    with pytest.raises(exc.InvalidRequest) as raised:
        plan({"traintuples": [train("t1", ["nope"])]})
    assert "add_compute_plan.traintuples.0.in_models_ids='nope'" in str(raised.value)
    with pytest.raises(LegacyTranslationError) as raised:
        plan(
            {
                "traintuples": [train("t1", [])],
                "aggregatetuples": [
                    {"aggregatetuple_id": "t1", "algo_key": AGGREGATE.key, "worker": ORG1, "in_models_ids": ["t1"]}
                ],
            }
        )
    assert raised.value.field == "add_compute_plan.aggregatetuples.0" and "already used" in str(raised.value)
    with pytest.raises(LegacyTranslationError) as raised:
        plan({"traintuples": [train("t1", ["t2"]), train("t2", ["t1"])]})
    assert "dependency cycle: t1 -> t2 -> t1" in str(raised.value)


def test_the_same_testtuple_twice_in_a_plan_is_refused():
    data = federated_spec(1).model_dump()
    data["testtuples"] = data["testtuples"] * 2
    spec = specs.parse(specs.ComputePlanData, data, "add_compute_plan")
    with pytest.raises(LegacyTranslationError, match="same testtuple as add_compute_plan.testtuples.0"):
        translate_plan.compute_plan(
            plan_key=PLAN,
            spec=spec,
            creator=ORG1,
            resolver=FakeResolver(),
            clean_models=False,
            method="add_compute_plan",
        )


def test_perm_algebra():
    a, b = Perm(False, frozenset({ORG1, ORG2})), Perm(False, frozenset({ORG2}))
    assert a.intersect(b) == b and Perm(True).intersect(a) == a and a.intersect(Perm(True)) == a
    assert Perm(True).including(ORG1) == Perm(True)
    assert Perm.of({"process": {"public": False, "authorized_ids": [ORG1]}}) == Perm(False, frozenset({ORG1}))
    assert Perm(True).view() == {"process": {"public": True, "authorized_ids": []}}
