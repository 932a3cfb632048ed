"""A whole federated workflow on the local node, driven twice: by the official substra 1.0 SDK in
remote mode, and by substra_flows.SubstraClient (same method names, same spec dicts).

The same plan is also run in the SDK's own subprocess mode; all must give the same performances.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import substra
from substra.sdk import exceptions as sdk_exceptions

from examples import assets
from substra_flows import SubstraClient
from substra_flows import exceptions as flows_exceptions
from substra_flows.local_node import LocalNode

pytestmark = [pytest.mark.live, pytest.mark.fidelity]

ROUNDS = 3
FUNCTIONS = ("train", "aggregate", "predict", "score", "fail", "noop")


def _register_functions(client: Any, workdir: Path) -> dict[str, str]:
    keys = {}
    for name in FUNCTIONS:
        spec = {
            "name": f"fidelity {name}",
            "file": assets.build_function_archive(name, workdir),
            "description": assets.write_description(workdir / f"{name}.md", name),
            "permissions": {"public": True, "authorized_ids": []},
            "inputs": [{"identifier": i, **v} for i, v in assets.function_inputs(name).items()],
            "outputs": [{"identifier": i, **v} for i, v in assets.function_outputs(name).items()],
        }
        keys[name] = client.add_function(spec)
    return keys


def _register_org_data(
    client: Any,
    org_index: int,
    all_org_ids: list[str],
    workdir: Path,
    *,
    upload: bool,
    media_root: Path | None,
) -> dict[str, Any]:
    org_id = client.organization_info().organization_id
    dataset_key = client.add_dataset(
        {
            "name": f"fidelity dataset org {org_index}",
            "data_opener": assets.opener_path(),
            "description": assets.write_description(workdir / f"dataset-{org_index}.md", "dataset"),
            "permissions": {"public": False, "authorized_ids": all_org_ids},
            "logs_permission": {"public": False, "authorized_ids": all_org_ids},
        }
    )
    sample_root = media_root if media_root is not None else workdir
    train = assets.generate_samples(org_index, sample_root / f"org{org_index}-train", split="train")
    test = assets.generate_samples(org_index, sample_root / f"org{org_index}-test", split="test", n_samples=1)
    train_keys = client.add_data_samples({"paths": train, "data_manager_keys": [dataset_key]}, local=upload)
    test_keys = [client.add_data_sample({"path": p, "data_manager_keys": [dataset_key]}, local=upload) for p in test]
    return {
        "organization_id": org_id,
        "dataset_key": dataset_key,
        "train_sample_keys": sorted(train_keys),
        "test_sample_keys": test_keys,
    }


def _perf_by_position(client: Any, plan_key: str, org_ids: list[str]) -> dict[tuple[int, int], float]:
    """Performances keyed by (organization index, task rank): comparable across two runs of a plan."""
    perfs = client.get_performances(plan_key)
    return {
        (org_ids.index(worker), rank): value
        for worker, rank, value in zip(perfs.worker, perfs.task_rank, perfs.performance, strict=True)
    }


def _client(kind: str, url: str, token: str | None = None) -> Any:
    if kind == "official-sdk":
        return substra.Client(url=url, token=token, backend_type="remote")
    return SubstraClient(url=url, token=token)


@pytest.fixture(scope="module", params=["official-sdk", "substra-flows"])
def remote_setup(
    request: pytest.FixtureRequest, local_node: LocalNode, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    kind = request.param
    workdir = tmp_path_factory.mktemp(f"fidelity-{kind}")
    org1, org2 = local_node.organizations
    client1 = _client(kind, org1.url, org1.token)
    client2 = _client(kind, org2.url)
    client2.login(org2.username, org2.password)
    org_ids = [org1.organization_id, org2.organization_id]
    orgs = [
        _register_org_data(client1, 1, org_ids, workdir, upload=True, media_root=None),
        _register_org_data(client2, 2, org_ids, workdir, upload=False, media_root=local_node.servermedias_root),
    ]
    function_keys = _register_functions(client1, workdir)
    return {"clients": (client1, client2), "orgs": orgs, "functions": function_keys, "kind": kind}


def test_federated_workflow_matches_subprocess_mode(
    remote_setup: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client1, client2 = remote_setup["clients"]
    plan_key = str(uuid.uuid4())
    spec = assets.build_federated_plan(
        compute_plan_key=plan_key,
        name="fidelity plan",
        function_keys=remote_setup["functions"],
        orgs=remote_setup["orgs"],
        rounds=ROUNDS,
    )
    assert len(spec["tasks"]) >= 12
    created = client1.add_compute_plan(spec, auto_batching=True, batch_size=5)  # 3 batches
    assert created.key == plan_key
    right_after = client1.get_compute_plan(plan_key)
    assert right_after.task_count == len(spec["tasks"])
    assert right_after.status.value in ("PLAN_STATUS_DOING", "PLAN_STATUS_CREATED")

    done = client2.wait_compute_plan(plan_key, timeout=300, polling_period=0.5)
    assert done.status.value == "PLAN_STATUS_DONE"
    assert done.done_count == len(spec["tasks"])
    org_ids = [o["organization_id"] for o in remote_setup["orgs"]]
    remote_perfs = _perf_by_position(client1, plan_key, org_ids)
    assert len(remote_perfs) == 2 and all(0.5 < v <= 1.0 for v in remote_perfs.values())

    # a model, downloaded through the API, is the JSON the train function wrote
    aggregates = [
        t
        for t in client1.list_task(
            filters={"compute_plan_key": [plan_key], "function_key": [remote_setup["functions"]["aggregate"]]}
        )
    ]
    last_aggregate = max(aggregates, key=lambda t: t.rank)
    model_path = client2.download_model_from_task(last_aggregate.key, identifier="model", folder=tmp_path)
    assert set(json.loads(Path(model_path).read_text())) >= {"weights", "bias"}

    # filters and ordering
    org2_id = remote_setup["orgs"][1]["organization_id"]
    org2_tasks = client1.list_task(
        filters={"compute_plan_key": [plan_key], "worker": [org2_id]}, order_by="start_date", ascending=True
    )
    assert org2_tasks and {t.worker for t in org2_tasks} == {org2_id}
    starts = [t.start_date for t in org2_tasks]
    assert starts == sorted(starts)
    ranked = client1.list_task(filters={"compute_plan_key": [plan_key], "rank": [0]})
    assert {t.rank for t in ranked} == {0} and len(ranked) == 2

    # the same plan in the SDK's own subprocess mode gives the same performances
    monkeypatch.chdir(tmp_path)
    local_perfs = _run_in_subprocess_mode(tmp_path)
    assert local_perfs.keys() == remote_perfs.keys()
    for position, value in remote_perfs.items():
        assert value == pytest.approx(local_perfs[position], abs=1e-12), position


def _run_in_subprocess_mode(tmp_path: Path) -> dict[tuple[int, int], float]:
    clients = [substra.Client(backend_type="subprocess") for _ in range(2)]
    org_ids = [c.organization_info().organization_id for c in clients]
    orgs = []
    for index, client in enumerate(clients, start=1):
        # same generator arguments as the remote run, so the same bytes
        data_dir = tmp_path / f"local-{index}"
        orgs.append(_register_org_data(client, index, org_ids, data_dir, upload=True, media_root=None))
    function_keys = _register_functions(clients[0], tmp_path)
    plan_key = str(uuid.uuid4())
    spec = assets.build_federated_plan(
        compute_plan_key=plan_key, name="fidelity plan", function_keys=function_keys, orgs=orgs, rounds=ROUNDS
    )
    clients[0].add_compute_plan(spec)
    return _perf_by_position(clients[0], plan_key, org_ids)


def test_failing_task_logs_and_cancel(remote_setup: dict[str, Any], local_node: LocalNode) -> None:
    client1, _ = remote_setup["clients"]
    org1 = remote_setup["orgs"][0]
    functions = remote_setup["functions"]
    failing_plan = str(uuid.uuid4())
    fail_key = str(uuid.uuid4())
    client1.add_compute_plan(
        {
            "key": failing_plan,
            "name": "fidelity failing plan",
            "tasks": [
                {
                    "task_id": fail_key,
                    "function_key": functions["fail"],
                    "worker": org1["organization_id"],
                    "inputs": [{"identifier": "opener", "asset_key": org1["dataset_key"]}]
                    + [{"identifier": "datasamples", "asset_key": k} for k in org1["train_sample_keys"]],
                    "outputs": {"model": {"permissions": {"public": False, "authorized_ids": []}}},
                }
            ],
        }
    )
    with pytest.raises((substra.sdk.exceptions.FutureFailureError, flows_exceptions.FutureFailureError)):
        client1.wait_compute_plan(failing_plan, timeout=120, polling_period=0.3)
    task = client1.get_task(fail_key)
    assert task.status.value == "STATUS_FAILED" and task.error_type.value == "EXECUTION_ERROR"
    assert client1.get_compute_plan(failing_plan).failed_task_key == fail_key
    assert "substra-flows example: deliberate failure" in client1.get_logs(fail_key)

    # a long chain of trivial tasks, cancelled once it has started
    chain_plan = str(uuid.uuid4())
    keys = [str(uuid.uuid4()) for _ in range(40)]
    tasks = []
    for i, key in enumerate(keys):
        inputs = (
            []
            if i == 0
            else [
                {
                    "identifier": "model",
                    "parent_task_key": keys[i - 1],
                    "parent_task_output_identifier": "model",
                }
            ]
        )
        tasks.append(
            {
                "task_id": key,
                "function_key": functions["noop"],
                "worker": org1["organization_id"],
                "inputs": inputs,
                "outputs": {"model": {"permissions": {"public": False, "authorized_ids": []}}},
            }
        )
    client1.add_compute_plan({"key": chain_plan, "name": "fidelity chain", "tasks": tasks})
    client1.wait_task(keys[0], timeout=120, polling_period=0.2)
    client1.cancel_compute_plan(chain_plan)
    plan = client1.wait_compute_plan(chain_plan, timeout=120, polling_period=0.3, raise_on_failure=False)
    assert plan.status.value == "PLAN_STATUS_CANCELED"
    local_node.wait_idle(60)  # the task executing at cancel time runs to its end
    statuses = [client1.get_task(k).status.value for k in keys]
    assert statuses[0] == "STATUS_DONE"
    # as on a real server: the queued task is aborted when picked up, tasks waiting for parents keep their status
    assert statuses.count("STATUS_CANCELED") == 1
    assert statuses[-1] == "STATUS_WAITING_FOR_PARENT_TASKS"
    if remote_setup["kind"] == "official-sdk":
        with pytest.raises(sdk_exceptions.InternalServerError):
            client1.cancel_compute_plan(chain_plan)  # a second cancel gives 500, as on a real server
    else:
        client1.cancel_compute_plan(chain_plan)  # SubstraClient settles it: the plan is already canceled
        assert client1.get_compute_plan(chain_plan).status.value == "PLAN_STATUS_CANCELED"


def test_node_leaves_no_local_worker_folder_in_the_caller_directory() -> None:
    """The SDK writes ``local-worker/`` into its working directory; the node's executor must use its temp dir."""
    assert not (Path.cwd() / "local-worker").exists()
