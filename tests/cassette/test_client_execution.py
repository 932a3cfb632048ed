"""Cassettes: executed plans (waits, async waits, performances, task assets, models, logs).

The setup runs a one-round federated plan on both organizations, a plan whose task fails (with a
child that therefore never starts), a plan whose model only org1 may download, and an empty plan.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from examples import assets
from examples.assets import task_key
from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.models import (
    AssetKind,
    ComputePlanStatus,
    ComputeTaskStatus,
    DataSample,
    Dataset,
    Model,
    TaskErrorType,
)
from tests.cassette import (
    MARKER,
    RequestLog,
    client_for,
    function_spec,
    noop_task,
    register_org_data,
    setup_cassette,
    sha256,
    stable_key,
    unknown_key,
)
from tests.recording import Target

pytestmark = [pytest.mark.vcr, pytest.mark.cassette]

MODULE = "test_client_execution"
FUNCTIONS = ("train", "aggregate", "predict", "score", "fail", "noop")
WAIT = 300.0  # generous deadline while recording; replay ends with the recorded answers


def plan_key(name: str) -> str:
    """This module's plan keys."""
    return stable_key(MODULE, name)


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, org1: Target, org2: Target, workdir: Path) -> dict[str, Any]:
    """Register functions and data, submit the plans and wait until they have run."""
    ids = [org1.organization_id, org2.organization_id]
    with setup_cassette(request):
        client1, client2 = client_for(org1), client_for(org2)
        functions = {
            name: client1.add_function(function_spec(name, workdir, title=f"cassette run {name}")) for name in FUNCTIONS
        }
        orgs = [
            register_org_data(
                client1, 1, ids[0], workdir, title="cassette run org1", authorized_ids=ids, logs_ids=ids[:1]
            ),
            register_org_data(client2, 2, ids[1], workdir, title="cassette run org2", authorized_ids=ids, logs_ids=ids),
        ]
        federated = plan_key("federated")
        client1.add_compute_plan(
            assets.build_federated_plan(
                compute_plan_key=federated,
                name="cassette federated plan",
                function_keys=functions,
                orgs=orgs,
                rounds=1,
                tag="cassette-run",
            )
        )
        failing = plan_key("failing")
        fail_task = task_key(failing, "fail")
        org1_data = [{"identifier": "opener", "asset_key": orgs[0]["dataset_key"]}] + [
            {"identifier": "datasamples", "asset_key": k} for k in orgs[0]["train_sample_keys"]
        ]
        client1.add_compute_plan(
            {
                "key": failing,
                "name": "cassette failing plan",
                "tasks": [
                    {
                        "task_id": fail_task,
                        "function_key": functions["fail"],
                        "worker": ids[0],
                        "inputs": org1_data,
                        "outputs": {"model": {"permissions": {"public": False, "authorized_ids": []}}},
                    },
                    noop_task(task_key(failing, "after fail"), functions["noop"], ids[0], parent=fail_task),
                ],
            }
        )
        private = plan_key("private model")
        client1.add_compute_plan(
            {
                "key": private,
                "name": "cassette private model",
                "tasks": [noop_task(task_key(private, "noop"), functions["noop"], ids[0])],
            }
        )
        empty = client1.add_compute_plan({"key": plan_key("empty"), "name": "cassette empty plan"}).key
        for key in (federated, private):
            client1.wait_compute_plan(key, timeout=WAIT, polling_period=org1.polling_period)
        client1.wait_compute_plan(failing, timeout=WAIT, polling_period=org1.polling_period, raise_on_failure=False)
        client1.close()
        client2.close()
    return {
        "functions": functions,
        "orgs": orgs,
        "federated": federated,
        "failing": failing,
        "fail_task": fail_task,
        "after_fail": task_key(failing, "after fail"),
        "private": private,
        "private_task": task_key(private, "noop"),
        "empty": empty,
    }


def train_task(world: dict, org: Target) -> str:
    """Key of the round-0 train task of ``org``."""
    return task_key(world["federated"], f"train/0/{org.organization_id}")


def score_task(world: dict, org: Target) -> str:
    """Key of the score task of ``org``."""
    return task_key(world["federated"], f"score/0/{org.organization_id}")


# -- waits ------------------------------------------------------------------------------------------


def test_wait_compute_plan_returns_the_done_plan(client1: SubstraClient, org1: Target, world: dict) -> None:
    plan = client1.wait_compute_plan(world["federated"], timeout=WAIT, polling_period=org1.polling_period)
    assert plan.status is ComputePlanStatus.done
    assert plan.task_count == plan.done_count == 7
    assert plan.tag == "cassette-run" and plan.end_date is not None


def test_wait_task_polls_until_done(client1: SubstraClient, org1: Target, world: dict) -> None:
    key = plan_key("polled")
    task = task_key(key, "noop")
    client1.add_compute_plan(
        {
            "key": key,
            "name": "cassette polled plan",
            "tasks": [noop_task(task, world["functions"]["noop"], org1.organization_id)],
        }
    )
    log = RequestLog(client1)
    done = client1.wait_task(task, timeout=WAIT, polling_period=org1.polling_period)
    assert done.status is ComputeTaskStatus.done and done.end_date is not None
    assert log.count("GET", f"/task/{task}/") >= 2  # it was still running at first
    assert client1.wait_compute_plan(key, timeout=WAIT, polling_period=org1.polling_period).done_count == 1


def test_wait_task_of_a_failing_task_raises_with_its_logs(client1: SubstraClient, org1: Target, world: dict) -> None:
    key = world["fail_task"]
    with pytest.raises(exc.FutureFailureError) as raised:
        client1.wait_task(key, timeout=WAIT, polling_period=org1.polling_period)
    error = raised.value
    assert error.key == key and error.status == ComputeTaskStatus.failed.value
    assert error.failed_task_keys == [key]
    assert MARKER in error.logs[key] and MARKER in str(error)
    assert "EXECUTION_ERROR" in str(error)
    task = client1.wait_task(key, timeout=WAIT, polling_period=org1.polling_period, raise_on_failure=False)
    assert task.error_type is TaskErrorType.execution


def test_wait_compute_plan_of_a_failing_plan_names_the_task(client1: SubstraClient, org1: Target, world: dict) -> None:
    with pytest.raises(exc.FutureFailureError) as raised:
        client1.wait_compute_plan(world["failing"], timeout=WAIT, polling_period=org1.polling_period)
    error = raised.value
    assert error.failed_task_keys == [world["fail_task"]]
    assert world["fail_task"] in str(error) and MARKER in str(error)
    plan = client1.wait_compute_plan(world["failing"], polling_period=org1.polling_period, raise_on_failure=False)
    assert plan.status is ComputePlanStatus.failed and plan.failed_task_key == world["fail_task"]


def test_wait_timeouts(client1: SubstraClient, org1: Target, world: dict) -> None:
    # a task waiting for a failed parent never runs on a real server: the wait ends, naming the failure
    with pytest.raises(exc.FutureFailureError) as stranded:
        client1.wait_task(world["after_fail"], timeout=0, polling_period=org1.polling_period)
    assert stranded.value.status == ComputeTaskStatus.waiting_for_parent_tasks.value
    assert stranded.value.key == world["after_fail"] and "will never run" in str(stranded.value)
    assert stranded.value.failed_task_keys == [world["fail_task"]]
    with pytest.raises(exc.FutureTimeoutError) as plan_timeout:
        client1.wait_compute_plan(world["empty"], timeout=0, polling_period=org1.polling_period)
    assert plan_timeout.value.status == ComputePlanStatus.created.value


def test_wait_for_unknown_keys_is_not_found(client1: SubstraClient, org1: Target) -> None:
    with pytest.raises(exc.NotFound):
        client1.wait_task(
            unknown_key("task", "wait"), timeout=10, polling_period=org1.polling_period, not_found_grace=0
        )
    with pytest.raises(exc.NotFound):
        client1.wait_compute_plan(
            unknown_key("plan", "wait"), timeout=10, polling_period=org1.polling_period, not_found_grace=0
        )


async def test_async_waits_and_getters(client1: SubstraClient, org1: Target, world: dict) -> None:
    key = plan_key("async polled")
    task = task_key(key, "noop")
    client1.add_compute_plan(
        {
            "key": key,
            "name": "cassette async polled plan",
            "tasks": [noop_task(task, world["functions"]["noop"], org1.organization_id)],
        }
    )
    done = await client1.async_wait_task(task, timeout=WAIT, polling_period=org1.polling_period)
    assert done.status is ComputeTaskStatus.done
    plan = await client1.async_wait_compute_plan(key, timeout=WAIT, polling_period=org1.polling_period)
    assert plan.status is ComputePlanStatus.done
    assert (await client1.async_get_task(task)).key == task
    assert (await client1.async_get_compute_plan(key)).done_count == 1


async def test_async_wait_errors(client1: SubstraClient, org1: Target, world: dict) -> None:
    with pytest.raises(exc.FutureFailureError) as failed:
        await client1.async_wait_task(world["fail_task"], timeout=WAIT, polling_period=org1.polling_period)
    assert MARKER in failed.value.logs[world["fail_task"]]
    with pytest.raises(exc.FutureFailureError) as plan_failed:
        await client1.async_wait_compute_plan(world["failing"], polling_period=org1.polling_period)
    assert plan_failed.value.failed_task_keys == [world["fail_task"]] and MARKER in str(plan_failed.value)
    with pytest.raises(exc.FutureTimeoutError):
        await client1.async_wait_compute_plan(world["empty"], timeout=0, polling_period=org1.polling_period)
    with pytest.raises(exc.FutureFailureError, match="will never run"):
        await client1.async_wait_task(world["after_fail"], timeout=0, polling_period=org1.polling_period)
    with pytest.raises(exc.NotFound):
        await client1.async_get_task(unknown_key("task", "async"))
    with pytest.raises(exc.NotFound):
        await client1.async_get_compute_plan(unknown_key("plan", "async"))


# -- performances -----------------------------------------------------------------------------------


def test_get_performances(client1: SubstraClient, org1: Target, org2: Target, world: dict) -> None:
    perfs = client1.get_performances(world["federated"])
    assert len(perfs) == 2
    rows = sorted(perfs.rows(), key=lambda r: r["worker"])
    assert [r["worker"] for r in rows] == [org1.organization_id, org2.organization_id]
    assert [r["task_key"] for r in rows] == [score_task(world, org1), score_task(world, org2)]
    for row in rows:
        assert row["compute_plan_key"] == world["federated"] and row["compute_plan_tag"] == "cassette-run"
        assert row["compute_plan_status"] == ComputePlanStatus.done.value
        assert row["identifier"] == "performance" and row["round_idx"] == 0
        assert 0.5 < row["performance"] <= 1.0  # the example model really learns


def test_get_performances_waiting_for_completion(client1: SubstraClient, org1: Target, world: dict) -> None:
    log = RequestLog(client1)
    perfs = client1.get_performances(world["federated"], wait_completion=True)
    assert len(perfs) == 2
    assert log.count("GET", "/perf/") == 1
    assert log.count("GET", f"/compute_plan/{world['federated']}/") >= 2  # the wait, then the plan itself


def test_get_performances_errors(client1: SubstraClient, org1: Target, world: dict) -> None:
    with pytest.raises(exc.NotFound):
        client1.get_performances(unknown_key("plan", "perf"))
    with pytest.raises(exc.FutureFailureError):
        client1.get_performances(world["failing"], wait_completion=True)
    assert len(client1.get_performances(world["failing"])) == 0


# -- task assets ------------------------------------------------------------------------------------


def test_list_task_input_assets(client1: SubstraClient, org1: Target, world: dict) -> None:
    org_data = world["orgs"][0]
    inputs = client1.list_task_input_assets(train_task(world, org1))
    kinds = sorted((i.identifier, i.kind) for i in inputs)
    assert kinds == [
        ("datasamples", AssetKind.data_sample),
        ("datasamples", AssetKind.data_sample),
        ("opener", AssetKind.data_manager),
    ]
    datasets = [i.asset for i in inputs if isinstance(i.asset, Dataset)]
    assert [d.key for d in datasets] == [org_data["dataset_key"]]
    samples = sorted(i.asset.key for i in inputs if isinstance(i.asset, DataSample))
    assert samples == org_data["train_sample_keys"]
    aggregate = client1.list_task_input_assets(task_key(world["federated"], "aggregate/0"))
    assert [(i.identifier, type(i.asset)) for i in aggregate] == [("models", Model), ("models", Model)]
    assert client1.list_task_input_assets(unknown_key("task", "inputs")) == []  # the server filters: no 404
    with pytest.raises(exc.KeyFormatError):
        client1.list_task_input_assets("not-a-key")


def test_list_task_output_assets(client1: SubstraClient, org1: Target, world: dict) -> None:
    outputs = client1.list_task_output_assets(train_task(world, org1))
    assert [(o.identifier, o.kind) for o in outputs] == [("model", AssetKind.model)]
    assert isinstance(outputs[0].asset, Model) and outputs[0].asset.compute_task_key == train_task(world, org1)
    scores = client1.list_task_output_assets(score_task(world, org1), wait_completion=True)
    assert [(o.identifier, o.kind) for o in scores] == [("performance", AssetKind.performance)]
    assert isinstance(scores[0].asset, float) and 0.5 < scores[0].asset <= 1.0
    assert client1.list_task_output_assets(world["fail_task"]) == []
    assert client1.list_task_output_assets(unknown_key("task", "outputs")) == []  # the server filters: no 404
    with pytest.raises(exc.NotFound):
        client1.list_task_output_assets(unknown_key("task", "outputs"), wait_completion=True)


def test_get_task_output_asset(client1: SubstraClient, org1: Target, world: dict) -> None:
    output = client1.get_task_output_asset(train_task(world, org1), "model", wait_completion=True)
    assert output.identifier == "model" and isinstance(output.asset, Model)
    performance = client1.get_task_output_asset(score_task(world, org1), "performance")
    perfs = client1.get_performances(world["federated"])
    assert performance.asset == perfs.performance[perfs.task_key.index(score_task(world, org1))]
    with pytest.raises(exc.TaskAssetNotFoundError) as raised:
        client1.get_task_output_asset(train_task(world, org1), "predictions")
    assert raised.value.identifier == "predictions"
    with pytest.raises(exc.TaskAssetNotFoundError):
        client1.get_task_output_asset(unknown_key("task", "output"), "model")  # no 404 from the server
    with pytest.raises(exc.NotFound):
        client1.get_task_output_asset(unknown_key("task", "output"), "model", wait_completion=True)


# -- models ---------------------------------------------------------------------------------------


def test_get_model_and_list_model(client1: SubstraClient, org1: Target, org2: Target, world: dict) -> None:
    trains = [train_task(world, org1), train_task(world, org2)]
    log = RequestLog(client1)
    models = client1.list_model(filters={"compute_task_key": trains}, order_by="key", ascending=True, page_size=1)
    assert log.count("GET", "/model/") == 2
    assert sorted(m.compute_task_key for m in models) == sorted(trains)
    assert [m.key for m in models] == sorted(m.key for m in models)
    owned = client1.list_model(filters={"compute_task_key": trains, "owner": [org2.organization_id]})
    assert [m.compute_task_key for m in owned] == [trains[1]]
    model = client1.get_model(models[0].key)
    assert model.key == models[0].key and model.address is not None and model.address.checksum
    with pytest.raises(exc.NotFound):
        client1.get_model(unknown_key("model"))
    with pytest.raises(exc.NotAllowedFilterError):
        client1.list_model(filters={"permissions": "x"})


def test_download_model(client1: SubstraClient, org1: Target, world: dict, tmp_path: Path) -> None:
    aggregate = client1.get_task_output_asset(task_key(world["federated"], "aggregate/0"), "model").asset
    assert isinstance(aggregate, Model) and aggregate.address is not None
    path = client1.download_model(aggregate.key, tmp_path)
    assert path.name == f"model_{aggregate.key}"
    assert sha256(path) == aggregate.address.checksum
    content = json.loads(path.read_text())
    assert content["n_samples"] == 160 and len(content["weights"]) == 2  # FedAvg of 2 x 80 rows


def test_download_model_errors(client1: SubstraClient, client2: SubstraClient, world: dict, tmp_path: Path) -> None:
    private = client1.get_task_output_asset(world["private_task"], "model").asset
    assert isinstance(private, Model)
    with pytest.raises(exc.AuthorizationError) as raised:
        client2.download_model(private.key, tmp_path)
    assert raised.value.status_code == 403
    with pytest.raises(exc.NotFound):
        client1.download_model(unknown_key("model", "download"), tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert json.loads(client1.download_model(private.key, tmp_path).read_text()) == {"noop": True}


def test_download_model_from_task(client1: SubstraClient, org1: Target, world: dict, tmp_path: Path) -> None:
    path = client1.download_model_from_task(train_task(world, org1), "model", tmp_path)
    content = json.loads(path.read_text())
    assert content["n_samples"] == 80 and len(content["weights"]) == 2 and "bias" in content
    with pytest.raises(exc.SpecValidationError) as raised:
        client1.download_model_from_task(score_task(world, org1), "performance", tmp_path)
    assert "not a model" in str(raised.value)
    with pytest.raises(exc.TaskAssetNotFoundError):
        client1.download_model_from_task(train_task(world, org1), "nothing", tmp_path)


# -- logs -----------------------------------------------------------------------------------------


def test_get_logs(client1: SubstraClient, world: dict) -> None:
    logs = client1.get_logs(world["fail_task"])
    assert MARKER in logs and "deliberate failure for tests" in logs


def test_log_tail(client1: SubstraClient, client2: SubstraClient, org1: Target, world: dict) -> None:
    tail = client1.log_tail(world["fail_task"], max_lines=40)
    assert tail is not None and MARKER in tail
    last = client1.log_tail(world["fail_task"], max_lines=1)
    assert last is not None and "\n" not in last and last in tail
    assert client1.log_tail(train_task(world, org1)) is None  # 410: no logs for a task that did not fail
    assert client2.log_tail(world["fail_task"]) is None  # 403: swallowed, the tail is only a courtesy


def test_get_logs_errors(client1: SubstraClient, client2: SubstraClient, org1: Target, world: dict) -> None:
    with pytest.raises(exc.AuthorizationError) as forbidden:
        client2.get_logs(world["fail_task"])  # the dataset's logs_permission is org1 only
    assert forbidden.value.status_code == 403
    with pytest.raises(exc.HTTPError) as gone:
        client1.get_logs(train_task(world, org1))  # a task that did not fail has no logs
    assert gone.value.status_code == 410
    with pytest.raises(exc.NotFound):
        client1.get_logs(unknown_key("task", "logs"))


def test_download_logs(client1: SubstraClient, client2: SubstraClient, world: dict, tmp_path: Path) -> None:
    path = Path(client1.download_logs(world["fail_task"], tmp_path))
    assert path.name == f"task_logs_{world['fail_task']}.txt"
    assert MARKER in path.read_text()
    with pytest.raises(exc.AuthorizationError):
        client2.download_logs(world["fail_task"], tmp_path / "org2")
    assert not (tmp_path / "org2").exists() or list((tmp_path / "org2").iterdir()) == []
