"""Attempts against the local node: a rerun after a FAILED or CANCELED plan runs exactly one new plan
(attempt 2) to DONE; a rerun after DONE creates nothing; on_failed="fail" explains the failure; the
leaderboard ranks the DONE attempt and ignores the canceled one, even when it has scores."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from examples import assets
from substra_flows import SubstraClient, steps
from substra_flows import exceptions as exc
from substra_flows.local_node import LocalNode

pytestmark = pytest.mark.live

POLL = 0.1
MARKER = "substra-flows example: deliberate failure"


@pytest.fixture(scope="module")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def client(local_node: LocalNode) -> Iterator[SubstraClient]:
    org = local_node.organizations[0]
    with SubstraClient(url=org.url, token=org.token) as made:
        yield made


@pytest.fixture(scope="module")
def world(
    local_node: LocalNode, client: SubstraClient, tmp_path_factory: pytest.TempPathFactory, run_id: str
) -> dict[str, Any]:
    """The first organization's functions and dataset (its train and test samples)."""
    workdir = tmp_path_factory.mktemp("attempts-live")
    org_id = local_node.organizations[0].organization_id
    functions = {}
    for name in ("train", "aggregate", "predict", "score", "fail", "noop"):
        functions[name] = steps.register_function(
            client,
            name=f"attempts {name} {run_id}",
            archive=assets.build_function_archive(name, workdir / "functions"),
            inputs=assets.function_inputs(name),
            outputs=assets.function_outputs(name),
            permissions={"public": True, "authorized_ids": []},
        ).function_key
    train = assets.generate_samples(1, workdir / "samples", split="train", n_samples=2)
    test = assets.generate_samples(1, workdir / "samples", split="test", n_samples=1)
    dataset = steps.register_dataset(
        client,
        name=f"attempts dataset {run_id}",
        opener=assets.opener_path(),
        sample_paths=[*train, *test],
        ledger_dir=workdir / "ledgers",
    )
    org = {
        "organization_id": org_id,
        "dataset_key": dataset.dataset_key,
        "train_sample_keys": dataset.sample_keys[:2],
        "test_sample_keys": dataset.sample_keys[2:],
    }
    return {"functions": functions, "org": org, "worker": org_id}


def noop_chain(world: dict[str, Any], length: int, first_parent: str | None = None) -> list[dict[str, Any]]:
    out = {"model": {"permissions": {"public": False, "authorized_ids": [world["worker"]]}}}
    tasks = []
    for i in range(length):
        parent = first_parent if i == 0 else f"noop-{i - 1}"
        inputs = [{"identifier": "model", "parent_task_key": parent, "parent_task_output_identifier": "model"}]
        tasks.append(
            {
                "task_id": f"noop-{i}",
                "function_key": world["functions"]["noop"],
                "worker": world["worker"],
                "inputs": inputs if parent else [],
                "outputs": out,
            }
        )
    return tasks


def failing_task(world: dict[str, Any]) -> dict[str, Any]:
    org = world["org"]
    inputs = [{"identifier": "opener", "asset_key": org["dataset_key"]}]
    inputs += [{"identifier": "datasamples", "asset_key": k} for k in org["train_sample_keys"]]
    out = {"model": {"permissions": {"public": False, "authorized_ids": [world["worker"]]}}}
    return {
        "task_id": "fail",
        "function_key": world["functions"]["fail"],
        "worker": world["worker"],
        "inputs": inputs,
        "outputs": out,
    }


def plans_of_run(client: SubstraClient, run_key: str) -> list[tuple[str, str, str]]:
    """(key, attempt, status) of every plan the run owns, by attempt."""
    plans = client.list_compute_plan(
        filters={"metadata": [{"key": steps.RUN_METADATA, "type": "is", "value": run_key}]}
    )
    return sorted((p.key, p.metadata[steps.ATTEMPT_METADATA], p.status.value) for p in plans)


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_rerun_after_a_failed_plan_runs_attempt_2_to_done(client: SubstraClient, world: dict[str, Any], run_id: str):
    run = ("attempts-live", run_id, "failed")
    run_key = steps.derive_key(*run)
    first = steps.submit_compute_plan(
        client, {"name": f"failing {run_id}", "tasks": [failing_task(world)]}, run_identity=run
    )
    with pytest.raises(exc.FutureFailureError):
        steps.wait_compute_plan(client, first.compute_plan_key, timeout=120, polling_period=POLL)
    failed_task = steps.derive_task_key(run_key, "fail")

    # on_failed="fail": a clear error naming the plan, its failed task and its logs, and no new plan
    with pytest.raises(exc.FutureFailureError) as refused:
        steps.submit_compute_plan(
            client, {"name": f"fixed {run_id}", "tasks": noop_chain(world, 2)}, run_identity=run, on_failed="fail"
        )
    message = str(refused.value)
    assert f"compute plan {run_key} failed" in message and f"failed task: {failed_task}" in message
    assert f"attempt 1 of run {run_key}" in message and MARKER in message
    assert plans_of_run(client, run_key) == [(run_key, "1", "PLAN_STATUS_FAILED")]

    # the default: the rerun (here with the failing step fixed) is attempt 2, and it runs to DONE
    second = steps.submit_compute_plan(
        client, {"name": f"fixed {run_id}", "tasks": noop_chain(world, 2)}, run_identity=run
    )
    assert (second.attempt, second.created) == (2, True)
    assert second.compute_plan_key == steps.attempt_key(run_key, 2)
    done = steps.wait_compute_plan(client, second.compute_plan_key, timeout=120, polling_period=POLL)
    assert done.status.value == "PLAN_STATUS_DONE"
    assert plans_of_run(client, run_key) == sorted(
        [(run_key, "1", "PLAN_STATUS_FAILED"), (second.compute_plan_key, "2", "PLAN_STATUS_DONE")]
    )
    # a rerun after DONE creates nothing
    third = steps.submit_compute_plan(
        client, {"name": f"fixed {run_id}", "tasks": noop_chain(world, 2)}, run_identity=run
    )
    assert (third.compute_plan_key, third.attempt, third.created, third.added_task_keys) == (
        second.compute_plan_key,
        2,
        False,
        [],
    )
    assert len(plans_of_run(client, run_key)) == 2


def scored_plan_that_runs_on(world: dict[str, Any], run_id: str, experiment: str, noops: int) -> dict[str, Any]:
    """A federated plan on one organization whose scores come early, then a chain of noop tasks."""
    spec = assets.build_federated_plan(
        name=f"attempts scored {run_id}",
        function_keys=world["functions"],
        orgs=[world["org"]],
        rounds=1,
        metadata={"experiment": experiment},
    )
    spec["tasks"] += noop_chain(world, noops, first_parent="aggregate/0")
    return spec


def test_a_rerun_after_a_canceled_plan_runs_attempt_2_and_only_it_ranks(
    client: SubstraClient, world: dict[str, Any], run_id: str
):
    experiment = f"attempts-{run_id}"
    run = ("attempts-live", run_id, "canceled")
    run_key = steps.derive_key(*run)
    spec = scored_plan_that_runs_on(world, run_id, experiment, noops=40)
    first = steps.submit_compute_plan(client, spec, run_identity=run)
    # cancelled once it has scores, while its noop tail still runs
    wait_for(lambda: len(steps.fetch_performances(client, first.compute_plan_key)) == 1, timeout=120)
    assert steps.cancel_compute_plan(client, first.compute_plan_key) is True
    assert client.get_compute_plan(first.compute_plan_key).status.value == "PLAN_STATUS_CANCELED"
    assert steps.leaderboard(client, metadata_filters={"experiment": experiment}) == []

    second = steps.submit_compute_plan(client, spec, run_identity=run)  # the same spec: a retry, a Clear
    assert (second.attempt, second.created, second.compute_plan_key) == (2, True, steps.attempt_key(run_key, 2))
    assert steps.wait_compute_plan(client, second.compute_plan_key, timeout=240, polling_period=POLL).status.value == (
        "PLAN_STATUS_DONE"
    )
    assert plans_of_run(client, run_key) == sorted(
        [(run_key, "1", "PLAN_STATUS_CANCELED"), (second.compute_plan_key, "2", "PLAN_STATUS_DONE")]
    )
    board = steps.leaderboard(client, metadata_filters={"experiment": experiment})
    assert [e.compute_plan_key for e in board] == [second.compute_plan_key]
    assert steps.quality_gate(second.compute_plan_key, board).promote  # nothing else to beat
    rows = steps.fetch_performances(client, run_key, latest_attempt=True)
    assert rows and {r["compute_plan_key"] for r in rows} == {second.compute_plan_key}
    # the next rerun finds attempt 2 DONE: no new plan
    again = steps.submit_compute_plan(client, spec, run_identity=run)
    assert (again.compute_plan_key, again.created) == (second.compute_plan_key, False)
    assert len(plans_of_run(client, run_key)) == 2
