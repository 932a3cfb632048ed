"""One injected fault at a time: what the node does, and how SubstraClient copes, without duplicates."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from examples import assets
from substra_flows import SubstraClient, steps
from substra_flows import exceptions as exc
from substra_flows.local_node import FAULT_KINDS, FaultConfig, LocalNode
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


# ---- login_throttle: substra-backend's login throttle refusing a login --------------------------------


def _login(org_url: str, username: str, password: str) -> requests.Response:
    return requests.post(f"{org_url}/api-token-auth/", data={"username": username, "password": password}, timeout=10)


def test_throttled_login_is_answered_as_drf_does_until_retry_after(node: LocalNode) -> None:
    org = node.organizations[0]
    node.set_faults(FaultConfig(rate=1.0, kinds=("login_throttle",), max_faults=1, retry_after_seconds=5))
    try:
        refused = _login(org.url, org.username, org.password)
        again = _login(org.url, org.username, org.password)  # the window is still full
    finally:
        node.set_faults(None)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "5"
    assert refused.json() == {"detail": "Request was throttled. Expected available in 5 seconds."}
    assert again.status_code == 429 and 1 <= int(again.headers["Retry-After"]) <= 5
    assert _login(org.url, org.username, org.password).status_code == 200  # faults off: the window is gone


def test_client_login_waits_out_retry_after_once(node: LocalNode) -> None:
    org = node.organizations[0]
    node.set_faults(FaultConfig(rate=1.0, kinds=("login_throttle",), max_faults=1, path_contains="/api-token-auth/"))
    try:
        with SubstraClient(url=org.url, backoff=0.05, backoff_max=0.2) as client:
            token = client.login(org.username, org.password)
            assert isinstance(client.list_compute_plan(), list)
        stats = node.fault_stats()
    finally:
        node.set_faults(None)
    assert len(token) == 40
    assert stats["injected"] == {"login_throttle": 1}  # a retry before Retry-After would be refused again


def test_forced_expiry_makes_the_next_login_the_throttled_one(node: LocalNode) -> None:
    org = node.organizations[0]
    token = _login(org.url, org.username, org.password).json()["token"]
    node.set_faults(FaultConfig(rate=1.0, kinds=("login_throttle",), max_faults=1, path_contains="/compute_plan/"))
    try:
        expired = requests.get(f"{org.url}/compute_plan/", headers={"Authorization": f"Token {token}"}, timeout=10)
        relogin = _login(org.url, org.username, org.password)
    finally:
        node.set_faults(None)
    assert expired.status_code == 401 and expired.json() == {"detail": "The token is expired"}
    assert relogin.status_code == 429 and relogin.headers["Retry-After"] == "1"
    assert relogin.json()["detail"] == "Request was throttled. Expected available in 1 second."


def test_client_logs_in_again_through_the_throttle_and_repeats_its_request(
    node: LocalNode, client: SubstraClient
) -> None:
    key = client.add_compute_plan({"key": str(uuid.uuid4()), "name": "relogin", "tasks": []}).key
    _one_fault(node, "login_throttle", f"/compute_plan/{key}/", ("GET",))
    assert client.get_compute_plan(key).key == key  # 401, login 429, Retry-After, login, the GET again
    assert node.fault_stats()["injected"] == {"login_throttle": 1}


def test_other_kinds_never_hit_a_login(node: LocalNode) -> None:
    org = node.organizations[0]
    others = tuple(k for k in FAULT_KINDS if k != "login_throttle")
    node.set_faults(FaultConfig(rate=1.0, kinds=others, slow_seconds=0.0))
    try:
        answers = [_login(org.url, org.username, org.password).status_code for _ in range(5)]
    finally:
        node.set_faults(None)
    assert answers == [200] * 5


# ---- replication_lag: another organization has not received what one just wrote -----------------------


@pytest.fixture(scope="module")
def two_orgs() -> Iterator[LocalNode]:
    """Two organizations (the lag is between them) and no lag of the node's own."""
    with LocalNode(organizations=2, **TEST_NODE_OPTIONS) as started:
        yield started


def test_replication_lag_hides_a_new_plan_from_the_other_organization(two_orgs: LocalNode) -> None:
    org1, org2 = two_orgs.organizations
    two_orgs.set_faults(FaultConfig(kinds=("replication_lag",), replication_lag_seconds=30.0))
    try:
        with SubstraClient(url=org1.url, token=org1.token) as one, SubstraClient(url=org2.url, token=org2.token) as two:
            key = one.add_compute_plan({"key": str(uuid.uuid4()), "name": "lagged", "tasks": []}).key
            on_org2 = requests.get(f"{org2.url}/compute_plan/{key}/", headers=_auth(org2.token), timeout=10)
            on_org1 = requests.get(f"{org1.url}/compute_plan/{key}/", headers=_auth(org1.token), timeout=10)
            listed = [p.key for p in two.list_compute_plan()]
            with pytest.raises(exc.NotFound) as raised:
                two.get_compute_plan(key)  # a plain read does not wait: the waits do (next test)
            stats = two_orgs.fault_stats()
    finally:
        two_orgs.set_faults(None)
    assert on_org2.status_code == 404
    assert on_org2.json() == {"detail": "No ComputePlan matches the given query."}
    assert on_org1.status_code == 200  # the writer sees its own write
    assert key not in listed
    assert "404" in str(raised.value)
    assert stats["injected"] == {"replication_lag": 3}  # org 2's raw read, its list, its client read
    assert requests.get(f"{org2.url}/compute_plan/{key}/", headers=_auth(org2.token), timeout=10).status_code == 200


def test_a_wait_on_the_other_organization_rides_out_the_replication_lag(two_orgs: LocalNode, tmp_path: Path) -> None:
    org1, org2 = two_orgs.organizations
    two_orgs.set_faults(FaultConfig(kinds=("replication_lag",), replication_lag_seconds=1.0))
    try:
        with SubstraClient(url=org1.url, token=org1.token) as one, SubstraClient(url=org2.url, token=org2.token) as two:
            key = steps.register_function(
                one,
                name=f"lagged {uuid.uuid4().hex[:6]}",
                archive=assets.build_function_archive("score", tmp_path),
                inputs=assets.function_inputs("score"),
                outputs=assets.function_outputs("score"),
                description=assets.write_description(tmp_path / "f.md", "f"),
                permissions={"public": True, "authorized_ids": []},
            ).function_key
            first = requests.get(f"{org2.url}/function/{key}/", headers=_auth(org2.token), timeout=10)
            seen = two.wait_function(key, timeout=30, polling_period=0.1)  # 404 polled again, then READY
            stats = two_orgs.fault_stats()
    finally:
        two_orgs.set_faults(None)
    assert first.status_code == 404
    assert seen.key == key and seen.status.value == "FUNCTION_STATUS_READY"
    assert stats["injected"]["replication_lag"] >= 2  # the raw read and at least one poll of the wait


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}
