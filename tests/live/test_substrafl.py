"""substrafl 1.0 on the hardened client: a numpy-only FedAvg experiment over 2 organizations, with
an evaluation every round, run through ``compat.Client`` and through the official ``substra.Client``
on the same local node. Performances and final weights must be equal.

substrafl's model-loading helpers test ``task.status is not ComputeTaskStatus.done`` and read the
SDK's models: they only work when the client answers with ``substra.sdk.models`` instances.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import substra
from substra.sdk import models as sdk_models
from substrafl import (
    execute_experiment,
    nodes,  # (not `import TestDataNode`: pytest would try to collect it)
)
from substrafl.dependency import Dependency
from substrafl.evaluation_strategy import EvaluationStrategy
from substrafl.model_loading import (
    download_aggregate_shared_state,
    download_algo_state,
    download_train_shared_state,
)
from substrafl.strategies import FedAvg

from examples import assets
from substra_flows import compat
from substra_flows.local_node import LocalNode
from tests.live import _numpy_fedavg

pytestmark = [pytest.mark.live, pytest.mark.fidelity]

ROUNDS = 2
KINDS = ("official-sdk", "compat")
RESULTS: dict[str, dict[str, Any]] = {}


def _client(kind: str, url: str, token: str) -> substra.Client:
    if kind == "official-sdk":
        return substra.Client(url=url, token=token, backend_type="remote")
    return compat.Client(url=url, token=token, backend_type="remote")


def _register_data(client: substra.Client, index: int, org_ids: list[str], workdir: Path) -> dict[str, Any]:
    """Dataset (the example CSV opener) and train/test samples of one organization, registered by it."""
    everyone = {"public": False, "authorized_ids": org_ids}
    dataset_key = client.add_dataset(
        {
            "name": f"substrafl dataset org {index}",
            "data_opener": assets.opener_path(),
            "description": assets.write_description(workdir / f"dataset-{index}.md", "dataset"),
            "permissions": everyone,
            "logs_permission": everyone,
        }
    )
    train = assets.generate_samples(index, workdir / f"org{index}-train", split="train")
    test = assets.generate_samples(index, workdir / f"org{index}-test", split="test", n_samples=1)
    return {
        "organization_id": client.organization_info().organization_id,
        "dataset_key": dataset_key,
        "train": client.add_data_samples({"paths": train, "data_manager_keys": [dataset_key]}),
        "test": client.add_data_samples({"paths": test, "data_manager_keys": [dataset_key]}),
    }


@pytest.fixture(scope="module", autouse=True)
def _algo_pickled_by_value() -> Any:
    """Task processes load the algorithm from the function archive, without importing the tests."""
    cloudpickle.register_pickle_by_value(_numpy_fedavg)
    yield
    cloudpickle.unregister_pickle_by_value(_numpy_fedavg)


@pytest.mark.parametrize("kind", KINDS)
def test_fedavg_experiment(kind: str, local_node: LocalNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # substrafl builds its function archives under the working directory
    org1, org2 = local_node.organizations
    clients = [_client(kind, org1.url, org1.token), _client(kind, org2.url, org2.token)]
    org_ids = [org1.organization_id, org2.organization_id]
    data = [_register_data(c, i, org_ids, tmp_path) for i, c in enumerate(clients, start=1)]

    algo = _numpy_fedavg.NumpyLogisticRegression()
    strategy = FedAvg(algo=algo, metric_functions={"accuracy": _numpy_fedavg.accuracy})
    where = [{"organization_id": d["organization_id"], "data_manager_key": d["dataset_key"]} for d in data]
    train_nodes = [nodes.TrainDataNode(**w, data_sample_keys=d["train"]) for w, d in zip(where, data, strict=True)]
    test_nodes = [nodes.TestDataNode(**w, data_sample_keys=d["test"]) for w, d in zip(where, data, strict=True)]
    plan = execute_experiment(
        client=clients[0],
        strategy=strategy,
        train_data_nodes=train_nodes,
        evaluation_strategy=EvaluationStrategy(test_data_nodes=test_nodes, eval_frequency=1),
        aggregation_node=nodes.AggregationNode(org1.organization_id),
        num_rounds=ROUNDS,
        experiment_folder=tmp_path / "experiment",
        dependencies=Dependency(pypi_dependencies=["numpy"]),
        clean_models=False,
        name=f"substrafl {kind} {uuid.uuid4()}",
    )
    assert isinstance(plan, sdk_models.ComputePlan)
    done = clients[0].wait_compute_plan(plan.key, timeout=600, polling_period=1, raise_on_failure=False)
    if done.failed_task_key:
        pytest.fail(f"task {done.failed_task_key} failed:\n{clients[0].get_logs(done.failed_task_key)}")
    assert done.status is sdk_models.ComputePlanStatus.done

    performances = clients[0].get_performances(plan.key)
    assert isinstance(performances, sdk_models.Performances)
    rows = sorted(
        zip(
            (org_ids.index(w) for w in performances.worker),
            performances.round_idx,
            performances.identifier,
            performances.performance,
            strict=True,
        )
    )
    # an evaluation per organization after every round, plus the one before training (round 0)
    assert [(org, rnd) for org, rnd, _, _ in rows] == [(o, r) for o in (0, 1) for r in range(ROUNDS + 1)]
    assert all(0.0 <= value <= 1.0 for *_, value in rows)
    assert rows[-1][3] > 0.5  # the trained model classifies better than chance

    final = download_algo_state(clients[0], plan.key)
    assert isinstance(final, _numpy_fedavg.NumpyLogisticRegression)
    train_state = download_train_shared_state(clients[0], plan.key)
    aggregate_state = download_aggregate_shared_state(clients[0], plan.key)
    assert train_state.n_samples > 0 and len(aggregate_state.avg_parameters_update) == 2
    RESULTS[kind] = {
        "performances": [(org, rnd, ident, value) for org, rnd, ident, value in rows],
        "weights": np.concatenate([final.weights, final.bias]),
        "train_update": np.concatenate(train_state.parameters_update),
        "aggregate_update": np.concatenate(aggregate_state.avg_parameters_update),
    }


def test_compat_and_official_sdk_give_the_same_results() -> None:
    if set(RESULTS) != set(KINDS):
        pytest.fail(f"the experiment did not run with every client: {sorted(RESULTS)}")
    ours, theirs = RESULTS["compat"], RESULTS["official-sdk"]
    assert ours["performances"] == theirs["performances"]
    # equal up to float summation order: the aggregate task receives the organizations' updates in the
    # order of their (random) task keys, and FedAvg adds them in that order
    for name in ("weights", "train_update", "aggregate_update"):
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-12, atol=1e-15, err_msg=name)
    assert np.any(ours["weights"] != 0.0)  # something was learned
