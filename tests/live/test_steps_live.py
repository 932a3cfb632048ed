"""The pipeline steps against the local node: reruns find instead of duplicating, interrupted
registrations resume, waits explain failures, and the leaderboard feeds the quality gate."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples import assets
from substra_flows import SubstraClient, steps
from substra_flows import exceptions as exc
from substra_flows.local_node import LocalNode
from substra_flows.steps import assets as asset_steps

pytestmark = pytest.mark.live

POLL = 0.1
MARKER = "substra-flows example: deliberate failure"


@pytest.fixture(autouse=True)
def quick_reconciliation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node answers at once: no need to wait for in-flight requests before resending."""
    monkeypatch.setattr(asset_steps, "RECONCILE_PAUSE", 0.0)


@pytest.fixture(scope="module")
def run_id() -> str:
    """Names of this module's assets (the node is shared by the whole session)."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def clients(local_node: LocalNode) -> Iterator[list[SubstraClient]]:
    made = [SubstraClient(url=org.url, token=org.token) for org in local_node.organizations]
    yield made
    for client in made:
        client.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("steps-live")


@pytest.fixture(scope="module")
def functions(clients: list[SubstraClient], workdir: Path, run_id: str) -> dict[str, str]:
    keys = {}
    for name in ("train", "aggregate", "predict", "score", "fail", "noop"):
        registered = steps.register_function(
            clients[0],
            name=f"steps {name} {run_id}",
            archive=assets.build_function_archive(name, workdir / "functions"),
            inputs=assets.function_inputs(name),
            outputs=assets.function_outputs(name),
            permissions={"public": True, "authorized_ids": []},
        )
        keys[name] = registered.function_key
    return keys


@pytest.fixture(scope="module")
def orgs(local_node: LocalNode, clients: list[SubstraClient], workdir: Path, run_id: str) -> list[dict[str, Any]]:
    """Each organization's dataset (org 1 uploads its samples, org 2 registers server paths)."""
    org_ids = [org.organization_id for org in local_node.organizations]
    shared = {"public": False, "authorized_ids": org_ids}
    described = []
    for index, (client, org) in enumerate(zip(clients, local_node.organizations, strict=True), start=1):
        local = index == 1
        root = (workdir if local else org.servermedias_root) / f"steps-{run_id}-org{index}"
        train = assets.generate_samples(index, root, split="train", n_samples=2)
        test = assets.generate_samples(index, root, split="test", n_samples=1)
        dataset = steps.register_dataset(
            client,
            name=f"steps dataset {run_id} org {index}",
            opener=assets.opener_path(),
            sample_paths=[*train, *test],
            permissions=shared,
            local=local,
            ledger_dir=workdir / "ledgers",
        )
        described.append(
            {
                "organization_id": org.organization_id,
                "dataset_key": dataset.dataset_key,
                "train_sample_keys": dataset.sample_keys[:2],
                "test_sample_keys": dataset.sample_keys[2:],
            }
        )
    return described


# -- datasets and samples -----------------------------------------------------------------------------------


def _register(client: SubstraClient, name: str, paths: list[Path], ledger: Path, **kwargs: Any) -> Any:
    return steps.register_dataset(
        client, name=name, opener=assets.opener_path(), sample_paths=paths, batch_size=2, ledger_dir=ledger, **kwargs
    )


def test_register_dataset_twice_gives_one_dataset_and_no_duplicate_sample(
    clients: list[SubstraClient], tmp_path: Path, run_id: str
):
    client = clients[0]
    paths = assets.generate_samples(1, tmp_path / "samples", day=7, n_samples=5, rows_per_sample=5)
    name = f"steps twice {run_id}"
    first = _register(client, name, paths, tmp_path / "ledgers")
    second = _register(client, name, paths, tmp_path / "ledgers")
    assert first.created and not second.created
    assert second.dataset_key == first.dataset_key
    assert second.sample_keys == first.sample_keys and second.new_sample_keys == []
    assert len(client.get_dataset(first.dataset_key).data_sample_keys) == 5
    assert len(client.list_data_sample(filters={"dataset_key": first.dataset_key})) == 5
    assert [d.key for d in client.list_dataset(filters={"name": name})] == [first.dataset_key]
    json.dumps(second.to_dict())


def test_an_interrupted_registration_resumes_with_exactly_n_samples(
    clients: list[SubstraClient], tmp_path: Path, run_id: str, monkeypatch: pytest.MonkeyPatch
):
    client = clients[0]
    paths = assets.generate_samples(1, tmp_path / "samples", day=8, n_samples=5, rows_per_sample=5)
    name = f"steps interrupted {run_id}"
    real = client.add_data_samples
    sent: list[int] = []

    def dies_on_second_batch(spec: dict[str, Any], local: bool = True) -> list[str]:
        sent.append(len(spec["paths"]))
        if len(sent) == 2:
            raise KeyboardInterrupt("worker killed while sending batch 2")
        return real(spec, local=local)

    monkeypatch.setattr(client, "add_data_samples", dies_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        _register(client, name, paths, tmp_path / "ledgers")
    monkeypatch.setattr(client, "add_data_samples", real)
    dataset_key = client.list_dataset(filters={"name": name})[0].key
    assert len(client.get_dataset(dataset_key).data_sample_keys) == 2, "1 batch of 2 registered before the kill"

    resumed = _register(client, name, paths, tmp_path / "ledgers")
    assert resumed.dataset_key == dataset_key
    assert len(resumed.new_sample_keys) == 3
    on_server = client.get_dataset(dataset_key).data_sample_keys
    assert len(on_server) == 5 and sorted(on_server) == sorted(resumed.sample_keys)


def test_a_batch_whose_answer_was_lost_is_not_registered_twice(
    clients: list[SubstraClient], tmp_path: Path, run_id: str, monkeypatch: pytest.MonkeyPatch
):
    client = clients[0]
    paths = assets.generate_samples(1, tmp_path / "samples", day=9, n_samples=4, rows_per_sample=5)
    real = client.add_data_samples
    calls: list[int] = []

    def answer_lost_on_second_batch(spec: dict[str, Any], local: bool = True) -> list[str]:
        calls.append(len(spec["paths"]))
        keys = real(spec, local=local)
        if len(calls) == 2:
            raise exc.AssetMaybeCreatedError(
                "read timeout: the data samples may have been created",
                cause=exc.Timeout("read timeout"),
                asset_type="data samples",
            )
        return keys

    monkeypatch.setattr(client, "add_data_samples", answer_lost_on_second_batch)
    result = _register(client, f"steps lost answer {run_id}", paths, tmp_path / "ledgers")
    assert calls == [2, 2], "the in-doubt batch was found applied, not resent"
    on_server = client.get_dataset(result.dataset_key).data_sample_keys
    assert len(on_server) == 4 and sorted(on_server) == sorted(result.sample_keys)


def test_server_path_samples_are_found_again(
    local_node: LocalNode, clients: list[SubstraClient], tmp_path: Path, run_id: str
):
    client = clients[1]
    root = local_node.organizations[1].servermedias_root / f"steps-server-paths-{run_id}"
    paths = assets.generate_samples(2, root, day=3, n_samples=3, rows_per_sample=5)
    first = _register(client, f"steps server paths {run_id}", paths, tmp_path / "ledgers", local=False)
    keys = steps.add_data_samples(
        client, dataset_key=first.dataset_key, sample_paths=paths[::-1], local=False, ledger_dir=tmp_path / "ledgers"
    )
    assert keys == first.sample_keys[::-1]
    assert len(client.get_dataset(first.dataset_key).data_sample_keys) == 3


def test_register_function_twice_gives_one_function(
    clients: list[SubstraClient], functions: dict[str, str], workdir: Path, run_id: str
):
    client = clients[0]
    again = steps.register_function(
        client,
        name=f"steps train {run_id}",
        archive=assets.build_function_archive("train", workdir / "again"),
        inputs=assets.function_inputs("train"),
        outputs=assets.function_outputs("train"),
        permissions={"public": True, "authorized_ids": []},
    )
    assert not again.created and again.function_key == functions["train"]
    assert [f.key for f in client.list_function(filters={"name": f"steps train {run_id}"})] == [functions["train"]]


# -- compute plans ------------------------------------------------------------------------------------------


def _plan_tasks(client: SubstraClient, plan_key: str) -> list[str]:
    return sorted(t.key for t in client.list_task(filters={"compute_plan_key": [plan_key]}))


def test_submit_twice_gives_one_plan_and_no_duplicated_task(
    clients: list[SubstraClient], functions: dict[str, str], orgs: list[dict[str, Any]], run_id: str
):
    client = clients[0]
    run = ("steps-live", run_id, "submit-twice")
    plan_key = steps.derive_key(*run)
    spec = assets.build_federated_plan(
        compute_plan_key=plan_key, name=f"steps twice {run_id}", function_keys=functions, orgs=orgs, rounds=1
    )
    del spec["key"]  # the key comes from the run identity
    first = steps.submit_compute_plan(client, spec, run_identity=run, batch_size=3)
    second = steps.submit_compute_plan(client, spec, run_identity=run, batch_size=3)
    assert first.compute_plan_key == second.compute_plan_key == plan_key
    assert first.created and not second.created
    assert len(first.added_task_keys) == len(spec["tasks"]) and second.added_task_keys == []
    assert sorted(second.existing_task_keys) == _plan_tasks(client, plan_key)
    assert len(client.list_compute_plan(filters={"key": [plan_key]})) == 1
    done = steps.wait_compute_plan(client, plan_key, timeout=120, polling_period=POLL)
    assert done.status.value == "PLAN_STATUS_DONE" and done.task_count == len(spec["tasks"])


def test_a_resubmission_after_a_partial_submission_adds_only_the_missing_tasks(
    clients: list[SubstraClient],
    functions: dict[str, str],
    orgs: list[dict[str, Any]],
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
):
    client = clients[0]
    run = ("steps-live", run_id, "partial")
    plan_key = steps.derive_key(*run)
    spec = assets.build_federated_plan(
        compute_plan_key=plan_key, name=f"steps partial {run_id}", function_keys=functions, orgs=orgs, rounds=1
    )
    real = client.add_compute_plan_tasks

    def dies_after_first_batch(key: str, tasks: Any, auto_batching: bool = True, batch_size: int = 500) -> Any:
        real(key, tasks[:batch_size], batch_size=batch_size)
        raise KeyboardInterrupt("worker killed after batch 1")

    monkeypatch.setattr(client, "add_compute_plan_tasks", dies_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        steps.submit_compute_plan(client, spec, run_identity=run, batch_size=3)
    monkeypatch.setattr(client, "add_compute_plan_tasks", real)
    registered = _plan_tasks(client, plan_key)
    assert len(registered) == 3

    again = steps.submit_compute_plan(client, spec, run_identity=run, batch_size=3)
    assert not again.created
    assert sorted(again.existing_task_keys) == registered
    assert len(again.added_task_keys) == len(spec["tasks"]) - 3
    assert len(_plan_tasks(client, plan_key)) == len(spec["tasks"])
    steps.wait_compute_plan(client, plan_key, timeout=120, polling_period=POLL)


def _failing_plan(functions: dict[str, str], org: dict[str, Any], name: str) -> dict[str, Any]:
    inputs = [{"identifier": "opener", "asset_key": org["dataset_key"]}]
    inputs += [{"identifier": "datasamples", "asset_key": k} for k in org["train_sample_keys"]]
    task = {
        "task_id": "fail",
        "function_key": functions["fail"],
        "worker": org["organization_id"],
        "inputs": inputs,
        "outputs": {"model": {"permissions": {"public": False, "authorized_ids": [org["organization_id"]]}}},
    }
    return {"name": name, "tasks": [task]}


def test_a_failed_plan_names_the_failed_task_with_its_log_tail(
    clients: list[SubstraClient], functions: dict[str, str], orgs: list[dict[str, Any]], run_id: str
):
    client = clients[0]
    run = ("steps-live", run_id, "fail")
    submitted = steps.submit_compute_plan(client, _failing_plan(functions, orgs[0], f"fail {run_id}"), run_identity=run)
    (task_key,) = submitted.added_task_keys
    assert task_key == steps.derive_task_key(submitted.compute_plan_key, "fail")
    with pytest.raises(exc.FutureFailureError) as raised:
        steps.wait_compute_plan(client, submitted.compute_plan_key, timeout=120, polling_period=POLL)
    error = raised.value
    assert error.failed_task_keys == [task_key]
    assert task_key in str(error) and MARKER in str(error)
    assert MARKER in error.logs[task_key]

    with pytest.raises(exc.FutureFailureError) as raised_task:
        steps.wait_task(client, task_key, timeout=60, polling_period=POLL)
    assert MARKER in str(raised_task.value)

    async def wait_async() -> None:
        await steps.async_wait_compute_plan(client, submitted.compute_plan_key, timeout=60, polling_period=POLL)

    with pytest.raises(exc.FutureFailureError) as raised_async:
        asyncio.run(wait_async())
    assert task_key in str(raised_async.value) and MARKER in str(raised_async.value)


def test_cancel_a_running_plan_once(
    clients: list[SubstraClient], functions: dict[str, str], orgs: list[dict[str, Any]], run_id: str
):
    client = clients[0]
    worker = orgs[0]["organization_id"]
    out = {"model": {"permissions": {"public": False, "authorized_ids": [worker]}}}
    tasks = [{"task_id": "noop-0", "function_key": functions["noop"], "worker": worker, "outputs": out}]
    for i in range(1, 30):
        parent = {"identifier": "model", "parent_task_key": f"noop-{i - 1}", "parent_task_output_identifier": "model"}
        tasks.append(
            {
                "task_id": f"noop-{i}",
                "function_key": functions["noop"],
                "worker": worker,
                "inputs": [parent],
                "outputs": out,
            }
        )
    submitted = steps.submit_compute_plan(
        client, {"name": f"cancel {run_id}", "tasks": tasks}, run_identity=("steps-live", run_id, "cancel")
    )
    assert steps.cancel_compute_plan(client, submitted.compute_plan_key) is True
    assert client.get_compute_plan(submitted.compute_plan_key).status.value == "PLAN_STATUS_CANCELED"
    assert steps.cancel_compute_plan(client, submitted.compute_plan_key) is False, "second cancel: no error"


# -- leaderboard and gate ------------------------------------------------------------------------------------


def test_leaderboard_and_quality_gate_on_two_plans(
    clients: list[SubstraClient], functions: dict[str, str], orgs: list[dict[str, Any]], run_id: str
):
    client = clients[0]
    experiment = f"steps-{run_id}"
    keys = []
    for variant, plan_orgs in (("both", orgs), ("org1-only", orgs[:1])):
        run = ("steps-live", run_id, "leaderboard", variant)
        spec = assets.build_federated_plan(
            compute_plan_key=steps.derive_key(*run),
            name=f"{experiment} {variant}",
            function_keys=functions,
            orgs=plan_orgs,
            rounds=1,
            metadata={"experiment": experiment, "variant": variant},
        )
        keys.append(steps.submit_compute_plan(client, spec, run_identity=run).compute_plan_key)
    for key in keys:
        steps.wait_compute_plan(client, key, timeout=120, polling_period=POLL)
    # a plan of another experiment is not on this leaderboard
    board = steps.leaderboard(client, metadata_filters=[{"key": "experiment", "type": "is", "value": experiment}])
    assert sorted(e.compute_plan_key for e in board) == sorted(keys)
    assert board[0].score > board[1].score
    for entry in board:
        rows = steps.fetch_performances(client, entry.compute_plan_key)
        json.dumps(rows)
        top = max(r["task_rank"] for r in rows)
        values = [r["performance"] for r in rows if r["task_rank"] == top]
        assert entry.score == pytest.approx(sum(values) / len(values))
        assert entry.n_values == len(values) and entry.metadata["experiment"] == experiment
    best, runner_up = board
    promote = steps.quality_gate(best.compute_plan_key, board)
    assert promote.promote and promote.best_previous_key == runner_up.compute_plan_key
    assert "beats best previous plan" in promote.reason
    refuse = steps.quality_gate(runner_up.compute_plan_key, board)
    assert not refuse.promote and "does not beat" in refuse.reason
    assert steps.cancel_compute_plan(client, best.compute_plan_key) is False, "a DONE plan is not cancelled"
