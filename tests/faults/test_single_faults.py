"""One injected fault at a time: what the node does, and how SubstraClient copes, without duplicates."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from examples import assets
from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.local_node import FaultConfig, LocalNode
from tests.recording import TEST_NODE_OPTIONS

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    """A node of our own: faults must not leak into other modules' node."""
    with LocalNode(organizations=1, **TEST_NODE_OPTIONS) as started:
        yield started


@pytest.fixture()
def client(node: LocalNode) -> Iterator[SubstraClient]:
    org = node.organizations[0]
    with SubstraClient(url=org.url, read_timeout=1.0, backoff=0.05, backoff_max=0.2) as c:
        c.login(org.username, org.password)
        yield c
    node.set_faults(None)


def _one_fault(node: LocalNode, kind: str, path: str, methods: tuple[str, ...] = ()) -> None:
    node.set_faults(
        FaultConfig(rate=1.0, kinds=(kind,), max_faults=1, path_contains=path, methods=methods, slow_seconds=1.5)
    )


def _plans_named(client: SubstraClient, name: str) -> int:
    return sum(1 for p in client.list_compute_plan() if p.name == name)


@pytest.mark.parametrize("kind", ["429", "502", "503", "504", "reset_after", "slow_after", "reset_before"])
def test_client_keyed_creation_survives_and_is_not_duplicated(
    node: LocalNode, client: SubstraClient, kind: str
) -> None:
    name = f"fault {kind} {uuid.uuid4().hex[:6]}"
    _one_fault(node, kind, "/compute_plan/", ("POST",))
    plan = client.add_compute_plan({"key": str(uuid.uuid4()), "name": name, "tasks": []})
    assert node.fault_stats()["injected"] == {kind: 1}
    assert plan.name == name
    assert _plans_named(client, name) == 1


@pytest.mark.parametrize("kind", ["429", "502", "503", "504", "reset_before", "slow_before"])
def test_reads_are_retried(node: LocalNode, client: SubstraClient, kind: str) -> None:
    key = client.add_compute_plan({"key": str(uuid.uuid4()), "name": "read me", "tasks": []}).key
    _one_fault(node, kind, "/compute_plan/", ("GET",))
    assert client.get_compute_plan(key).key == key
    assert node.fault_stats()["injected"] == {kind: 1}


@pytest.mark.parametrize("kind", ["reset_after", "slow_after"])
def test_server_keyed_creation_with_lost_answer_is_not_resent(
    node: LocalNode, client: SubstraClient, kind: str, tmp_path: Path
) -> None:
    name = f"maybe created {kind} {uuid.uuid4().hex[:6]}"
    _one_fault(node, kind, "/data_manager/", ("POST",))
    with pytest.raises(exc.AssetMaybeCreatedError) as raised:
        client.add_dataset(
            {
                "name": name,
                "data_opener": assets.opener_path(),
                "description": assets.write_description(tmp_path / "d.md", "d"),
                "permissions": {"public": True, "authorized_ids": []},
                "logs_permission": {"public": True, "authorized_ids": []},
            }
        )
    assert "data_manager" in str(raised.value)
    node.set_faults(None)
    assert sum(1 for d in client.list_dataset() if d.name == name) == 1  # created once, never resent


def test_expired_token_is_renewed_by_login(node: LocalNode, client: SubstraClient) -> None:
    _one_fault(node, "expire_token", "/compute_plan/")
    assert isinstance(client.list_compute_plan(), list)
    assert node.fault_stats()["injected"] == {"expire_token": 1}


def test_expired_token_without_credentials_fails_clearly(node: LocalNode) -> None:
    org = node.organizations[0]
    token = requests.post(
        f"{org.url}/api-token-auth/", data={"username": org.username, "password": org.password}, timeout=10
    ).json()["token"]
    only_token = SubstraClient(url=org.url, token=token)
    _one_fault(node, "expire_token", "/compute_plan/")
    with pytest.raises(exc.AuthenticationError) as raised:
        only_token.list_compute_plan()
    assert "expired" in str(raised.value)
    assert token not in str(raised.value)


def test_malformed_json_is_a_clear_error(node: LocalNode, client: SubstraClient) -> None:
    key = str(uuid.uuid4())
    _one_fault(node, "malformed_json", f"/compute_plan/{key}/", ("GET",))
    client.add_compute_plan({"key": key, "name": "garbled", "tasks": []})
    try:
        plan = client.get_compute_plan(key)  # a retry of the read is fine too
        assert plan.key == key
    except exc.InvalidResponse as error:
        assert "JSON" in str(error) or "json" in str(error)
    assert node.fault_stats()["injected"] == {"malformed_json": 1}


def test_fault_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="rate"):
        FaultConfig(rate=1.5)
    with pytest.raises(ValueError, match="kinds"):
        FaultConfig(kinds=("teapot",))
