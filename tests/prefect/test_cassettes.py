"""Cassettes: the block and every Prefect task against recorded Substra traffic, success and main failure.

The module's shared assets (datasets, functions, a done plan, a failed plan) are registered once in
``_setup.yaml``; each test replays its own cassette. Prefect's own API calls go to the session's test
server and are never recorded. Re-record with ``scripts/record-cassettes tests/prefect``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from examples import assets
from substra_flows import SubstraClient, steps
from substra_flows import exceptions as exc
from substra_flows.prefect import (
    SubstraCredentials,
    add_compute_plan,
    add_data_samples,
    add_function,
    async_cancel_compute_plan,
    async_download_model,
    async_get_compute_plan,
    async_get_performances,
    async_get_task,
    async_get_task_logs,
    async_wait_compute_plan,
    async_wait_task,
    cancel_compute_plan,
    download_model,
    evaluate_quality_gate,
    get_compute_plan,
    get_leaderboard,
    get_organization_info,
    get_performances,
    get_task,
    get_task_logs,
    register_dataset,
    wait_compute_plan,
    wait_task,
)
from tests.cassette import setup_cassette
from tests.prefect._assets import MARKER, failing_spec, federated_spec, register_world, sleep_spec
from tests.prefect.conftest import credentials_for, prefect_vcr_settings
from tests.recording import Target, stable_key

pytestmark = [pytest.mark.vcr, pytest.mark.cassette]

PREFIX = "prefect cassette"
PIPELINE = {"pipeline": "prefect-cassette"}
BAD_TOKEN = "not-a-token-of-this-substra-node"


def _key(*parts: str) -> str:
    return stable_key("prefect", *parts)


UNKNOWN = _key("unknown asset")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files the module's assets are built from."""
    return tmp_path_factory.mktemp("prefect-cassettes")


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, org1: Target, org2: Target, workdir: Path) -> dict[str, Any]:
    """Both organizations' datasets, the functions, a done plan and a failed plan, recorded once."""
    with setup_cassette(request, settings=prefect_vcr_settings()):
        clients = [SubstraClient(url=t.url, token=t.token) for t in (org1, org2)]
        found = register_world(clients, [org1.organization_id, org2.organization_id], workdir, PREFIX)
        done_key, failed_key = _key("done plan"), _key("failed plan")
        steps.submit_compute_plan(
            clients[0], federated_spec(f"{PREFIX} done plan", found, key=done_key, metadata=PIPELINE)
        )
        steps.submit_compute_plan(clients[0], failing_spec(f"{PREFIX} failed plan", found, key=failed_key))
        clients[0].wait_compute_plan(done_key, polling_period=org1.polling_period, timeout=120)
        clients[0].wait_compute_plan(
            failed_key, polling_period=org1.polling_period, timeout=120, raise_on_failure=False
        )
        for client in clients:
            client.close()
    return {**found, "done": done_key, "failed": failed_key}


@pytest.fixture()
def creds(org1: Target) -> SubstraCredentials:
    """A token block of the first organization."""
    return credentials_for(org1)


@pytest.fixture()
def bad_creds(org1: Target) -> SubstraCredentials:
    """A block whose token the node refuses."""
    return credentials_for(org1, token=BAD_TOKEN)


def _task_key(plan_key: str, name: str) -> str:
    return steps.derive_task_key(plan_key, name)


# -- the block --------------------------------------------------------------------------------------------


def test_the_block_logs_in_with_username_and_password_and_out_after_the_task(org1: Target):
    block = SubstraCredentials(url=org1.url, username=org1.username, password=org1.password)
    info = get_organization_info(block)
    assert info["organization_id"] == org1.organization_id
    assert info["user"]  # authenticated as the organization's user


def test_the_block_with_a_wrong_password_is_refused_once(org1: Target):
    block = SubstraCredentials(url=org1.url, username=org1.username, password="wrong-password-of-cassette")
    with pytest.raises(exc.BadLoginException) as raised:
        get_organization_info(block)
    assert "wrong-password-of-cassette" not in str(raised.value)


def test_organization_info_and_a_refused_token(creds, bad_creds, org1: Target):
    assert get_organization_info(creds)["organization_id"] == org1.organization_id
    with pytest.raises(exc.AuthenticationError) as raised:
        get_organization_info(bad_creds)
    assert raised.value.status_code == 401


# -- datasets, samples, functions -------------------------------------------------------------------------


def test_register_dataset_creates_then_finds(creds, world, workdir: Path):
    folders = assets.generate_samples(1, workdir / "registered", day=7, n_samples=1)
    arguments = {
        "name": f"{PREFIX} registered dataset",
        "opener": str(assets.opener_path()),
        "sample_paths": [str(f) for f in folders],
        "description": str(assets.write_description(workdir / "registered.md", "registered")),
        "ledger_dir": str(workdir / "ledger-registered"),
    }
    first = register_dataset(creds, **arguments)
    assert first["created"] is True and len(first["new_sample_keys"]) == 1
    again = register_dataset(creds, **arguments)
    assert again["created"] is False and again["dataset_key"] == first["dataset_key"]
    assert again["sample_keys"] == first["sample_keys"] and again["new_sample_keys"] == []


def test_register_dataset_with_a_refused_token(bad_creds, workdir: Path):
    folders = assets.generate_samples(1, workdir / "refused", day=8, n_samples=1)
    with pytest.raises(exc.AuthenticationError):
        register_dataset(
            bad_creds, name=f"{PREFIX} refused dataset", opener=str(assets.opener_path()), sample_paths=folders
        )


def test_add_data_samples_adds_only_new_ones(creds, world, workdir: Path):
    dataset_key = world["orgs"][0]["dataset_key"]
    folders = [str(f) for f in assets.generate_samples(1, workdir / "more", day=9, n_samples=2)]
    keys = add_data_samples(creds, dataset_key, folders, ledger_dir=str(workdir / "ledger-more"))
    assert len(keys) == 2
    assert add_data_samples(creds, dataset_key, folders, ledger_dir=str(workdir / "ledger-more")) == keys


def test_add_data_samples_to_an_unknown_dataset(creds, workdir: Path):
    folders = assets.generate_samples(1, workdir / "orphan", day=10, n_samples=1)
    with pytest.raises(exc.NotFound) as raised:
        add_data_samples(creds, UNKNOWN, folders, ledger_dir=str(workdir / "ledger-orphan"))
    assert UNKNOWN in str(raised.value)


def test_add_function_creates_then_finds(creds, workdir: Path):
    arguments = {
        "name": f"{PREFIX} noop",
        "archive": str(assets.build_function_archive("noop", workdir / "noop")),
        "description": str(assets.write_description(workdir / "noop" / "noop.md", "noop")),
        "inputs": assets.function_inputs("noop"),
        "outputs": assets.function_outputs("noop"),
    }
    first = add_function(creds, **arguments)
    assert first["created"] is True
    assert add_function(creds, **arguments) == {"function_key": first["function_key"], "created": False}


def test_add_function_with_a_refused_token(bad_creds, workdir: Path):
    with pytest.raises(exc.AuthenticationError):
        add_function(
            bad_creds,
            name=f"{PREFIX} refused noop",
            archive=str(assets.build_function_archive("noop", workdir / "refused-noop")),
            inputs=assets.function_inputs("noop"),
            outputs=assets.function_outputs("noop"),
        )


# -- compute plans ----------------------------------------------------------------------------------------


def test_add_compute_plan_submits_then_finds(creds, world):
    key = _key("submitted plan")
    spec = federated_spec(f"{PREFIX} submitted plan", world)
    first = add_compute_plan(creds, spec, compute_plan_key=key)
    assert first["compute_plan_key"] == key and first["created"] is True and len(first["added_task_keys"]) == 7
    again = add_compute_plan(creds, {**spec, "key": key})
    assert again["created"] is False and again["added_task_keys"] == []


def test_add_compute_plan_with_an_unknown_function(creds, world):
    spec = federated_spec(f"{PREFIX} broken plan", world)
    for task_spec in spec["tasks"]:
        task_spec["function_key"] = UNKNOWN
    with pytest.raises(exc.NotFound) as raised:  # OE0002: orchestrator 1.0 answers 404
        add_compute_plan(creds, spec, compute_plan_key=_key("broken plan"))
    assert UNKNOWN in str(raised.value)  # the server's message names the missing function


def test_wait_compute_plan_done_and_failed(creds, world, org1: Target):
    done = wait_compute_plan(creds, world["done"], polling_period=org1.polling_period)
    assert done["status"] == "PLAN_STATUS_DONE" and done["done_count"] == 7
    with pytest.raises(exc.FutureFailureError) as raised:
        wait_compute_plan(creds, world["failed"], polling_period=org1.polling_period)
    assert raised.value.failed_task_keys == [_task_key(world["failed"], "fail")]
    assert MARKER in str(raised.value)


async def test_async_wait_compute_plan_done_and_failed(creds, world, org1: Target):
    done = await async_wait_compute_plan(creds, world["done"], polling_period=org1.polling_period)
    assert done["status"] == "PLAN_STATUS_DONE"
    with pytest.raises(exc.FutureFailureError) as raised:
        await async_wait_compute_plan(creds, world["failed"], polling_period=org1.polling_period)
    assert MARKER in str(raised.value)


def test_wait_task_done_and_failed(creds, world, org1: Target):
    aggregate = _task_key(world["done"], "aggregate")
    assert wait_task(creds, aggregate, polling_period=org1.polling_period)["status"] == "STATUS_DONE"
    with pytest.raises(exc.FutureFailureError) as raised:
        wait_task(creds, _task_key(world["failed"], "fail"), polling_period=org1.polling_period)
    assert MARKER in str(raised.value)


async def test_async_wait_task_done_and_failed(creds, world, org1: Target):
    aggregate = _task_key(world["done"], "aggregate")
    assert (await async_wait_task(creds, aggregate, polling_period=org1.polling_period))["key"] == aggregate
    with pytest.raises(exc.FutureFailureError):
        await async_wait_task(creds, _task_key(world["failed"], "fail"), polling_period=org1.polling_period)


def test_get_performances_and_an_unknown_plan(creds, world):
    rows = get_performances(creds, world["done"])
    assert sorted(r["worker"] for r in rows) == sorted(o["organization_id"] for o in world["orgs"])
    assert all(r["identifier"] == "performance" and 0 <= r["performance"] <= 1 for r in rows)
    with pytest.raises(exc.NotFound):
        get_performances(creds, UNKNOWN)


async def test_async_get_performances_and_an_unknown_plan(creds, world):
    assert len(await async_get_performances(creds, world["done"])) == 2
    with pytest.raises(exc.NotFound):
        await async_get_performances(creds, UNKNOWN)


def test_cancel_compute_plan_once_then_already_ended(creds, world):
    key = _key("cancelled plan")
    add_compute_plan(creds, sleep_spec(f"{PREFIX} cancelled plan", world, length=3), compute_plan_key=key)
    assert cancel_compute_plan(creds, key) is True
    assert get_compute_plan(creds, key)["status"] == "PLAN_STATUS_CANCELED"
    assert cancel_compute_plan(creds, key) is False
    with pytest.raises(exc.NotFound):
        cancel_compute_plan(creds, UNKNOWN)


async def test_async_cancel_compute_plan_and_an_unknown_plan(creds, world):
    key = _key("async cancelled plan")
    add_compute_plan(creds, sleep_spec(f"{PREFIX} async cancelled plan", world, length=3), compute_plan_key=key)
    assert await async_cancel_compute_plan(creds, key) is True
    with pytest.raises(exc.NotFound):
        await async_cancel_compute_plan(creds, UNKNOWN)


# -- reads ----------------------------------------------------------------------------------------------


def test_get_task_logs_of_a_failed_task_and_of_a_done_one(creds, world):
    failed = _task_key(world["failed"], "fail")
    logs = get_task_logs(creds, failed)
    assert MARKER in logs
    assert len(get_task_logs(creds, failed, tail_lines=2).splitlines()) == 2
    with pytest.raises(exc.HTTPError) as raised:
        get_task_logs(creds, _task_key(world["done"], "aggregate"))
    assert raised.value.status_code == 410


async def test_async_get_task_logs(creds, world):
    assert MARKER in await async_get_task_logs(creds, _task_key(world["failed"], "fail"))
    with pytest.raises(exc.NotFound):
        await async_get_task_logs(creds, UNKNOWN)


def test_download_model_of_a_task_and_an_unknown_model(creds, world, tmp_path: Path):
    path = Path(download_model(creds, tmp_path / "models" / "1", task_key=_task_key(world["done"], "aggregate")))
    assert path.is_file() and path.parent == tmp_path / "models" / "1" and path.read_bytes()
    with pytest.raises(exc.NotFound):
        download_model(creds, tmp_path, model_key=UNKNOWN)


async def test_async_download_model_of_a_task_and_an_unknown_task(creds, world, tmp_path: Path):
    path = Path(await async_download_model(creds, tmp_path / "async", task_key=_task_key(world["done"], "aggregate")))
    assert path.is_file() and path.parent == tmp_path / "async" and path.read_bytes()
    with pytest.raises(exc.TaskAssetNotFoundError):
        await async_download_model(creds, tmp_path, task_key=UNKNOWN)


def test_download_model_wants_exactly_one_key(creds, tmp_path: Path):
    with pytest.raises(exc.SpecValidationError, match="model_key"):
        download_model(creds, tmp_path, model_key=UNKNOWN, task_key=UNKNOWN)
    with pytest.raises(exc.SpecValidationError, match="model_key"):
        download_model(creds, tmp_path)


def test_get_compute_plan_and_get_task(creds, world):
    assert get_compute_plan(creds, world["done"])["name"] == f"{PREFIX} done plan"
    assert get_task(creds, _task_key(world["failed"], "fail"))["status"] == "STATUS_FAILED"
    with pytest.raises(exc.NotFound):
        get_compute_plan(creds, UNKNOWN)
    with pytest.raises(exc.NotFound):
        get_task(creds, UNKNOWN)


async def test_async_get_compute_plan_and_get_task(creds, world):
    assert (await async_get_compute_plan(creds, world["done"]))["status"] == "PLAN_STATUS_DONE"
    assert (await async_get_task(creds, _task_key(world["done"], "aggregate")))["status"] == "STATUS_DONE"
    with pytest.raises(exc.NotFound):
        await async_get_compute_plan(creds, UNKNOWN)
    with pytest.raises(exc.NotFound):
        await async_get_task(creds, UNKNOWN)


def test_leaderboard_and_quality_gate(creds, world):
    board = get_leaderboard(creds, metadata_filters=[{"key": "pipeline", "type": "is", "value": "prefect-cassette"}])
    assert [entry["compute_plan_key"] for entry in board] == [world["done"]]
    decision = evaluate_quality_gate(world["done"], board)
    assert decision["promote"] is True and decision["best_previous_key"] is None
    with pytest.raises(ValueError, match="not on the leaderboard"):
        evaluate_quality_gate(world["failed"], board)


def test_leaderboard_with_a_refused_token(bad_creds):
    with pytest.raises(exc.AuthenticationError):
        get_leaderboard(bad_creds, metadata_filters=[{"key": "pipeline", "type": "is", "value": "prefect-cassette"}])
