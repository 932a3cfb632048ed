"""substrafl 1.0 on a local node configured as a default real deployment, through the official SDK.

The node builds every function (build phase on, 1 s at least per build, one builder slot) with no
package index (``PIP_NO_INDEX``), so the declared dependency, a wheel built here, reaches the tasks
only through the build's ``RUN pip install``. Model export is on (a deployment whose channel sets
``model_export_enabled``), because the test downloads the final model (substrafl's
``download_algo_state``) and a disabled one (410): with export off every download is 403. Everything
else keeps a default deployment's settings.

One FedAvg experiment (numpy Algo, 2 organizations, 2 rounds, evaluation every round,
``clean_models=True``) runs on the node and the same one in substrafl's own local mode
(``backend_type="subprocess"``); the module's tests read both. Each organization has one train and one
test sample, so the opener reads rows in one order in both modes and the results agree to the bit
(with two, the opener's sorted order follows sample folders named by random keys, and the weights
differed in their last bits). With 2 organizations FedAvg's sum of updates does not depend on order.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import substra
from substra.sdk import models as sdk_models
from substra.sdk.schemas import AssetKind
from substrafl import (
    execute_experiment,
    nodes,  # (not `import TestDataNode`: pytest would try to collect it)
)
from substrafl.dependency import Dependency
from substrafl.evaluation_strategy import EvaluationStrategy
from substrafl.model_loading import download_algo_state
from substrafl.strategies import FedAvg

from examples import assets
from substra_flows.local_node import LocalNode
from tests.live import _numpy_fedavg

pytestmark = [pytest.mark.live, pytest.mark.fidelity]

ROUNDS = 2
HELPERS_INIT = '''"""The logistic function, shipped as a dependency of the substrafl test's algorithm."""

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))
'''


@pytest.fixture(scope="module", autouse=True)
def _algo_pickled_by_value() -> Iterator[None]:
    """Task processes load the algorithm from the function archive, without importing the tests."""
    cloudpickle.register_pickle_by_value(_numpy_fedavg)
    yield
    cloudpickle.unregister_pickle_by_value(_numpy_fedavg)


@pytest.fixture(scope="module")
def helpers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ``fedavg_helpers`` project and its wheel (built offline, without build isolation)."""
    root = tmp_path_factory.mktemp("helpers")
    project = root / "fedavg_helpers_project"
    (project / "fedavg_helpers").mkdir(parents=True)
    (project / "fedavg_helpers" / "__init__.py").write_text(HELPERS_INIT)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "fedavg-helpers"\nversion = "1.0"\n'
    )
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*pip, "-w", str(root / "dist"), str(project)], check=True, capture_output=True)
    return {"project": project, "wheel": next((root / "dist").glob("fedavg_helpers-*.whl"))}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, list[Path]]]:
    """One train and one test sample per organization, the same bytes for both modes."""
    root = tmp_path_factory.mktemp("samples")
    return {
        index: {
            "train": assets.generate_samples(index, root / f"org{index}-train", n_samples=1, rows_per_sample=80),
            "test": assets.generate_samples(index, root / f"org{index}-test", split="test", n_samples=1),
        }
        for index in (1, 2)
    }


@pytest.fixture(scope="module")
def deployment() -> Iterator[LocalNode]:
    """A default deployment (build phase, builder slot, login throttle, export off...) but offline and
    with model export on (see the module docstring)."""
    with LocalNode(organizations=2, model_export=True, build_env={"PIP_NO_INDEX": "1"}) as node:
        yield node


def _register(
    client: substra.Client, index: int, samples: dict[str, list[Path]], authorized: list[str], folder: Path
) -> dict[str, Any]:
    """Dataset (the example CSV opener) and samples of one organization, registered by it."""
    permissions = {"public": False, "authorized_ids": authorized}
    dataset_key = client.add_dataset(
        {
            "name": f"substrafl deployment dataset org {index}",
            "data_opener": assets.opener_path(),
            "description": assets.write_description(folder / f"dataset-{index}.md", "dataset"),
            "permissions": permissions,
            "logs_permission": permissions,
        }
    )
    return {
        "organization_id": client.organization_info().organization_id,
        "dataset_key": dataset_key,
        "train": client.add_data_samples({"paths": samples["train"], "data_manager_keys": [dataset_key]}),
        "test": client.add_data_samples({"paths": samples["test"], "data_manager_keys": [dataset_key]}),
    }


def _experiment(
    client: substra.Client, data: list[dict[str, Any]], folder: Path, dependencies: Dependency, name: str
) -> sdk_models.ComputePlan:
    """The FedAvg experiment over the organizations of ``data``, aggregated on the first."""
    strategy = FedAvg(
        algo=_numpy_fedavg.HelperLogisticRegression(), metric_functions={"accuracy": _numpy_fedavg.accuracy}
    )
    where = [{"organization_id": d["organization_id"], "data_manager_key": d["dataset_key"]} for d in data]
    return execute_experiment(
        client=client,
        strategy=strategy,
        train_data_nodes=[
            nodes.TrainDataNode(**w, data_sample_keys=d["train"]) for w, d in zip(where, data, strict=True)
        ],
        evaluation_strategy=EvaluationStrategy(
            test_data_nodes=[
                nodes.TestDataNode(**w, data_sample_keys=d["test"]) for w, d in zip(where, data, strict=True)
            ],
            eval_frequency=1,
        ),
        aggregation_node=nodes.AggregationNode(data[0]["organization_id"]),
        num_rounds=ROUNDS,
        experiment_folder=folder / "experiment",
        dependencies=dependencies,
        clean_models=True,
        name=name,
    )


def _results(client: substra.Client, plan_key: str, org_ids: list[str]) -> dict[str, Any]:
    """Performances as (organization index, round, identifier, value), and the final weights."""
    performances = client.get_performances(plan_key)
    rows = sorted(
        zip(
            (org_ids.index(w) for w in performances.worker),
            performances.round_idx,
            performances.identifier,
            performances.performance,
            strict=True,
        )
    )
    final = download_algo_state(client, plan_key)
    return {"performances": rows, "weights": np.concatenate([final.weights, final.bias])}


@pytest.fixture(scope="module")
def remote_submitted(
    deployment: LocalNode, helpers: dict[str, Path], samples: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The experiment submitted to the node through ``substra.Client(backend_type="remote")``."""
    folder = tmp_path_factory.mktemp("remote")
    org1, org2 = deployment.organizations
    clients = [substra.Client(url=o.url, token=o.token, backend_type="remote") for o in (org1, org2)]
    org_ids = [org1.organization_id, org2.organization_id]
    data = [_register(c, i, samples[i], org_ids, folder) for i, c in enumerate(clients, start=1)]
    dependencies = Dependency(pypi_dependencies=["numpy"], local_installable_dependencies=[helpers["wheel"]])
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # substrafl builds its function archives under the working directory
        plan = _experiment(clients[0], data, folder, dependencies, f"substrafl deployment {uuid.uuid4()}")
    return {"clients": clients, "org_ids": org_ids, "data": data, "plan": plan, "folder": folder}


@pytest.fixture(scope="module")
def local_run(
    remote_submitted: dict[str, Any], helpers: dict[str, Path], samples: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The same experiment in substrafl's local mode, run while the node builds and runs its own
    (local mode ignores the Dockerfile: its tasks run in this environment, which sees ``fedavg_helpers``
    through PYTHONPATH; the node's tasks and builds start from a clean environment, without it)."""
    folder = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("PYTHONPATH", str(helpers["project"]))
        clients = [substra.Client(backend_type="subprocess") for _ in range(2)]
        org_ids = [c.organization_info().organization_id for c in clients]
        data = [_register(c, i, samples[i], org_ids, folder) for i, c in enumerate(clients, start=1)]
        dependencies = Dependency(pypi_dependencies=["numpy"], local_installable_dependencies=[helpers["wheel"]])
        plan = _experiment(clients[0], data, folder, dependencies, "substrafl local mode")
        return _results(clients[0], plan.key, org_ids)


@pytest.fixture(scope="module")
def remote_run(remote_submitted: dict[str, Any], local_run: dict[str, Any]) -> dict[str, Any]:
    """The node's experiment, run to its end (waited for once the local mode has run)."""
    client = remote_submitted["clients"][0]
    done = client.wait_compute_plan(
        remote_submitted["plan"].key, timeout=600, polling_period=0.5, raise_on_failure=False
    )
    if done.failed_task_key:
        pytest.fail(f"task {done.failed_task_key} failed:\n{client.get_logs(done.failed_task_key)}")
    return {**remote_submitted, "plan": done}


def test_the_experiment_runs_with_the_dependency_its_build_installed(remote_run: dict[str, Any]) -> None:
    client = remote_run["clients"][0]
    plan = remote_run["plan"]
    assert plan.status is sdk_models.ComputePlanStatus.done
    tasks = client.list_task(filters={"compute_plan_key": [plan.key]})
    functions = {t.function.key for t in tasks}
    assert len(functions) >= 3  # train, aggregate, evaluate (each built)
    assert {client.get_function(k).status for k in functions} == {sdk_models.FunctionStatus.ready}
    with pytest.raises(ModuleNotFoundError):
        __import__("fedavg_helpers")  # the node's own environment does not have it: the build installed it


def test_performances_equal_substrafl_local_mode(remote_run: dict[str, Any], local_run: dict[str, Any]) -> None:
    remote = _results(remote_run["clients"][0], remote_run["plan"].key, remote_run["org_ids"])
    # an evaluation per organization after every round, plus the one before training (round 0)
    assert [(org, rnd) for org, rnd, _, _ in remote["performances"]] == [
        (o, r) for o in (0, 1) for r in range(ROUNDS + 1)
    ]
    assert remote["performances"][-1][3] > 0.5  # the trained model classifies better than chance
    assert remote["performances"] == local_run["performances"]
    assert np.array_equal(remote["weights"], local_run["weights"])  # to the bit
    assert np.any(remote["weights"] != 0.0)


def test_intermediate_models_are_disabled_once_the_plan_is_done(remote_run: dict[str, Any]) -> None:
    client = remote_run["clients"][0]
    plan = remote_run["plan"]
    tasks = client.list_task(filters={"compute_plan_key": [plan.key]})
    transient: list[tuple[sdk_models.Task, str]] = []
    kept: list[tuple[sdk_models.Task, str]] = []
    for task in tasks:
        models = {o.identifier for o in task.function.outputs if o.kind is AssetKind.model}
        for identifier, output in task.outputs.items():
            if identifier in models:
                (transient if output.is_transient else kept).append((task, identifier))
    # clean_models=True: the models of every round but the last are transient
    assert {int(t.metadata["round_idx"]) for t, _ in transient} == set(range(ROUNDS))
    assert {int(t.metadata["round_idx"]) for t, _ in kept} == {ROUNDS}
    for task, identifier in transient:
        model = client.get_task_output_asset(task.key, identifier).asset
        assert client.get_model(model.key).address is None, (task.key, identifier)
    for task, identifier in kept:
        assert client.get_task_output_asset(task.key, identifier).asset.address is not None
    disabled = client.get_task_output_asset(transient[0][0].key, transient[0][1]).asset
    with pytest.raises(substra.exceptions.HTTPError) as gone:
        client.download_model(disabled.key, remote_run["folder"])
    assert gone.value.status_code == 410

    # the last round's train task on the plan owner consumes disabled models: a copy of it is refused
    last_train = next(
        t for t in tasks if t.metadata["round_idx"] == str(ROUNDS) and t.worker == plan.owner and "local" in t.outputs
    )
    disabled_outputs = {(t.key, identifier) for t, identifier in transient}
    assert any((i.parent_task_key, i.parent_task_output_identifier) in disabled_outputs for i in last_train.inputs)
    copy = {
        "task_id": str(uuid.uuid4()),
        "function_key": last_train.function.key,
        "worker": last_train.worker,
        "inputs": [i.model_dump() for i in last_train.inputs],
        "outputs": {
            name: {"permissions": {"public": False, "authorized_ids": remote_run["org_ids"]}, "transient": False}
            for name in last_train.outputs
        },
    }
    with pytest.raises(substra.exceptions.InvalidRequest) as refused:
        client.add_compute_plan_tasks(plan.key, {"tasks": [copy]})
    assert "has been disabled" in str(refused.value)


def test_without_the_declared_dependency_the_tasks_fail(remote_run: dict[str, Any]) -> None:
    """The mutation check of the build: the same experiment without the wheel fails in its first train task."""
    client = remote_run["clients"][0]
    folder = remote_run["folder"] / "without-dependency"
    folder.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        plan = _experiment(
            client, remote_run["data"], folder, Dependency(pypi_dependencies=["numpy"]), f"no helpers {uuid.uuid4()}"
        )
    failed = client.wait_compute_plan(plan.key, timeout=600, polling_period=0.5, raise_on_failure=False)
    assert failed.failed_task_key is not None
    task = client.get_task(failed.failed_task_key)
    assert task.error_type is sdk_models.TaskErrorType.execution
    assert "ModuleNotFoundError: No module named 'fedavg_helpers'" in client.get_logs(task.key)


def test_a_dataset_that_excludes_the_plan_owner_is_refused_with_403(remote_run: dict[str, Any], samples: Any) -> None:
    """The orchestrator checks that the task owner may process each dataset (OE0102) when the tasks are
    registered: the SDK has already created the plan, which stays empty, as on a real server."""
    client1, client2 = remote_run["clients"]
    folder = remote_run["folder"] / "own-only"
    folder.mkdir()
    org1_data, _ = remote_run["data"]
    own_only = _register(client2, 2, samples[2], [client2.organization_info().organization_id], folder)
    name = f"dataset not shared with the plan owner {uuid.uuid4()}"
    with pytest.MonkeyPatch.context() as patch, pytest.raises(substra.exceptions.AuthorizationError) as refused:
        patch.chdir(folder)
        dependencies = Dependency(pypi_dependencies=["numpy"])
        _experiment(client1, [org1_data, own_only], folder, dependencies, name)
    assert refused.value.status_code == 403
    assert "OE0102" in str(refused.value) and own_only["dataset_key"] in str(refused.value)
    (plan,) = client1.list_compute_plan(filters={"name": name})
    assert plan.task_count == 0 and client1.list_task(filters={"compute_plan_key": [plan.key]}) == []
