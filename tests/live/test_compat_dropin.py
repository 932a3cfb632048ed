"""The official-SDK fidelity workflow run unchanged with ``substra_flows.compat.Client``.

Every test runs twice: with ``substra.Client`` (so the assertions are proven true of the SDK
itself) and with ``compat.Client`` in its place. Same calls, same spec dicts, the SDK's
``isinstance`` checks on ``substra.sdk.models`` and ``is`` on its enums, and its error paths
(``pytest.raises`` of ``substra.sdk.exceptions`` classes). The last test checks that both
clients got the same performances from the same plan.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import substra
from substra.sdk import exceptions as sdk_exceptions
from substra.sdk import models as sdk_models

from examples import assets
from substra_flows import compat
from substra_flows.local_node import LocalNode
from tests.live.test_sdk_fidelity import ROUNDS, _perf_by_position, _register_functions, _register_org_data

pytestmark = [pytest.mark.live, pytest.mark.fidelity]

KINDS = ("official-sdk", "compat")
PERFORMANCES: dict[str, dict[tuple[int, int], float]] = {}


def _client(kind: str, **kwargs: Any) -> substra.Client:
    """The only line that differs between the two runs."""
    if kind == "official-sdk":
        return substra.Client(backend_type="remote", **kwargs)
    return compat.Client(backend_type="remote", **kwargs)


@pytest.fixture(scope="module", params=KINDS)
def world(request: pytest.FixtureRequest, local_node: LocalNode, tmp_path_factory: pytest.TempPathFactory) -> dict:
    kind = request.param
    workdir = tmp_path_factory.mktemp(f"dropin-{kind}")
    org1, org2 = local_node.organizations
    client1 = _client(kind, url=org1.url, token=org1.token)
    client2 = _client(kind, url=org2.url, username=org2.username, password=org2.password)
    org_ids = [org1.organization_id, org2.organization_id]
    orgs = [
        _register_org_data(client1, 1, org_ids, workdir, upload=True, media_root=None),
        _register_org_data(client2, 2, org_ids, workdir, upload=False, media_root=local_node.servermedias_root),
    ]
    functions = _register_functions(client1, workdir)
    return {"kind": kind, "clients": (client1, client2), "orgs": orgs, "functions": functions}


def test_assets_are_sdk_models(world: dict) -> None:
    client1, client2 = world["clients"]
    org1 = world["orgs"][0]
    assert isinstance(client1, substra.Client)
    assert client1.backend_mode == substra.BackendType.REMOTE
    info = client1.organization_info()
    assert isinstance(info, sdk_models.OrganizationInfo) and info.organization_id == org1["organization_id"]
    organizations = client1.list_organization()
    assert organizations and all(isinstance(o, sdk_models.Organization) for o in organizations)
    dataset = client1.get_dataset(org1["dataset_key"])
    assert isinstance(dataset, sdk_models.Dataset)
    assert set(org1["train_sample_keys"]) <= set(dataset.data_sample_keys)
    sample = client1.get_data_sample(org1["train_sample_keys"][0])
    assert isinstance(sample, sdk_models.DataSample) and org1["dataset_key"] in sample.data_manager_keys
    function = client1.get_function(world["functions"]["train"])
    assert isinstance(function, sdk_models.Function)
    assert all(isinstance(i, sdk_models.FunctionInput) for i in function.inputs)
    assert {i.identifier for i in function.inputs} >= {"opener", "datasamples"}
    assert any(i.kind is substra.schemas.AssetKind.data_manager for i in function.inputs)
    listed = client1.list_function(filters={"key": [function.key]})
    assert listed == [function]
    assert "fidelity dataset org 1" in [d.name for d in client1.list_dataset()]
    assert client1.describe_function(function.key).strip()  # the Markdown text, as a str


def test_federated_workflow_with_sdk_models_and_enums(world: dict, tmp_path: Path) -> None:
    client1, client2 = world["clients"]
    plan_key = str(uuid.uuid4())
    spec = assets.build_federated_plan(
        compute_plan_key=plan_key,
        name="drop-in plan",
        function_keys=world["functions"],
        orgs=world["orgs"],
        rounds=ROUNDS,
    )
    created = client1.add_compute_plan(spec, auto_batching=True, batch_size=5)
    assert isinstance(created, sdk_models.ComputePlan) and created.key == plan_key
    done = client2.wait_compute_plan(plan_key, timeout=300, polling_period=0.5)
    assert isinstance(done, sdk_models.ComputePlan)
    assert done.status is sdk_models.ComputePlanStatus.done
    assert done.done_count == len(spec["tasks"])

    tasks = client1.list_task(filters={"compute_plan_key": [plan_key]})
    assert len(tasks) == len(spec["tasks"])
    assert all(isinstance(t, sdk_models.Task) and t.status is sdk_models.ComputeTaskStatus.done for t in tasks)
    assert all(isinstance(t.function, sdk_models.Function) for t in tasks)
    one = client1.get_task(tasks[0].key)
    assert one == tasks[0]

    aggregates = client1.list_task(
        filters={"compute_plan_key": [plan_key], "function_key": [world["functions"]["aggregate"]]}
    )
    last = max(aggregates, key=lambda t: t.rank)
    outputs = client1.list_task_output_assets(last.key)
    assert outputs and all(isinstance(o, sdk_models.OutputAsset) for o in outputs)
    model = client1.get_task_output_asset(last.key, "model").asset
    assert isinstance(model, sdk_models.OutModel)
    assert isinstance(client1.get_model(model.key), sdk_models.OutModel)
    inputs = client1.list_task_input_assets(last.key)
    assert inputs and all(isinstance(i, sdk_models.InputAsset) for i in inputs)
    path = client2.download_model_from_task(last.key, identifier="model", folder=tmp_path)
    assert Path(path).read_bytes()

    perfs = client1.get_performances(plan_key)
    assert isinstance(perfs, sdk_models.Performances)
    assert all(s == sdk_models.ComputePlanStatus.done for s in perfs.compute_plan_status)
    org_ids = [o["organization_id"] for o in world["orgs"]]
    PERFORMANCES[world["kind"]] = _perf_by_position(client1, plan_key, org_ids)
    assert len(PERFORMANCES[world["kind"]]) == 2


def test_error_paths_raise_sdk_exceptions(world: dict, tmp_path: Path) -> None:
    client1, _ = world["clients"]
    org1 = world["orgs"][0]
    functions = world["functions"]
    with pytest.raises(sdk_exceptions.NotFound):
        client1.get_task(str(uuid.uuid4()))
    with pytest.raises(sdk_exceptions.NotFound):
        client1.get_compute_plan(str(uuid.uuid4()))
    with pytest.raises(sdk_exceptions.InvalidRequest):  # the SDK: the server's 400; compat: refused before sending
        client1.add_compute_plan({"key": str(uuid.uuid4()), "name": "bad metadata", "metadata": {"a__b": "c"}})
    with pytest.raises(sdk_exceptions.ComputePlanKeyFormatError):
        client1.add_compute_plan({"key": "not-a-uuid", "name": "bad key"})
    with pytest.raises(FileNotFoundError):
        client1.download_dataset(org1["dataset_key"], tmp_path / "no such folder")

    failing_plan, fail_key = str(uuid.uuid4()), str(uuid.uuid4())
    client1.add_compute_plan(
        {
            "key": failing_plan,
            "name": "drop-in failing plan",
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
    with pytest.raises(sdk_exceptions.FutureFailureError):
        client1.wait_compute_plan(failing_plan, timeout=120, polling_period=0.3)
    task = client1.get_task(fail_key)
    assert task.status is sdk_models.ComputeTaskStatus.failed
    assert task.error_type is sdk_models.TaskErrorType.execution
    assert "substra-flows example: deliberate failure" in client1.get_logs(fail_key)
    with pytest.raises(sdk_exceptions.TaskAssetNotFoundError):
        client1.get_task_output_asset(fail_key, "no such output")

    slow_plan, slow_keys = str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(20)]
    parent = {"identifier": "model", "parent_task_output_identifier": "model"}
    chain = [
        {
            "task_id": key,
            "function_key": functions["noop"],
            "worker": org1["organization_id"],
            "inputs": [] if i == 0 else [{**parent, "parent_task_key": slow_keys[i - 1]}],
            "outputs": {"model": {"permissions": {"public": False, "authorized_ids": []}}},
        }
        for i, key in enumerate(slow_keys)
    ]
    client1.add_compute_plan({"key": slow_plan, "name": "drop-in chain", "tasks": chain})
    with pytest.raises(sdk_exceptions.FutureTimeoutError):
        client1.wait_task(slow_keys[-1], timeout=0.2, polling_period=0.1)
    client1.cancel_compute_plan(slow_plan)
    canceled = client1.wait_compute_plan(slow_plan, timeout=120, polling_period=0.3, raise_on_failure=False)
    assert canceled.status is sdk_models.ComputePlanStatus.canceled


def test_both_clients_got_the_same_performances() -> None:
    """Runs after both parametrizations of the workflow (module order): same plan, same results."""
    if set(PERFORMANCES) != set(KINDS):
        pytest.fail(f"the workflow did not run for every client: {sorted(PERFORMANCES)}")
    assert PERFORMANCES["compat"] == PERFORMANCES["official-sdk"]
