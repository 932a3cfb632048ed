"""SubstraClient against the local node when answers are lost: nothing created twice, nothing resent blindly.

A transport adapter mounted on the client's requests session forwards every request for real and,
for chosen requests, throws the answer away and raises a ConnectionError: the server did the work,
the client never heard of it. The same adapter counts what was sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter

from examples import assets
from examples.assets import task_key
from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.local_node import LocalNode, NodeOrganization
from tests.cassette import function_spec

pytestmark = pytest.mark.live

FAST_RETRIES: dict[str, Any] = {"backoff": 0.01, "backoff_max": 0.05, "max_attempts": 4}


class LossyAdapter(HTTPAdapter):
    """Sends every request; loses the answer of the n-th request matching a rule (1-based)."""

    def __init__(self, drops: dict[tuple[str, str], set[int]] | None = None) -> None:
        super().__init__()
        self.drops = drops or {}
        self.sent: list[tuple[str, str]] = []
        self.dropped: list[tuple[str, str]] = []
        self.login_ids: list[str] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        """Forward for real, then maybe pretend the connection died before the answer arrived."""
        method, path = str(request.method), urlsplit(str(request.url)).path
        self.sent.append((method, path))
        response = super().send(request, *args, **kwargs)
        if method == "POST" and path.endswith("/api-token-auth/") and response.ok:
            self.login_ids.append(response.json()["id"])
        for (rule_method, suffix), occurrences in self.drops.items():
            if method == rule_method and path.endswith(suffix):
                if self.count(rule_method, suffix) in occurrences:
                    _ = response.content  # the server has answered: the work is done
                    response.close()
                    self.dropped.append((method, path))
                    raise requests.exceptions.ConnectionError(
                        f"connection reset while reading the answer to {method} {path} (injected)", request=request
                    )
        return response

    def count(self, method: str, suffix: str) -> int:
        """Requests sent with this method and a path ending with ``suffix``."""
        return sum(1 for m, p in self.sent if m == method and p.endswith(suffix))


def lossy_client(org: NodeOrganization, adapter: LossyAdapter, **kwargs: Any) -> SubstraClient:
    """A client whose session goes through ``adapter``."""
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    options = {"url": org.url, **FAST_RETRIES, **kwargs}
    if "username" not in kwargs:
        options["token"] = org.token
    return SubstraClient(session=session, **options)


@pytest.fixture(scope="module")
def org(local_node: LocalNode) -> NodeOrganization:
    return local_node.organizations[0]


@pytest.fixture(scope="module")
def noop_function(org: NodeOrganization, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Key of a noop function registered by org1."""
    with SubstraClient(url=org.url, token=org.token) as client:
        return client.add_function(
            function_spec("noop", tmp_path_factory.mktemp("resilience-function"), title="resilience noop")
        )


@pytest.fixture()
def observer(org: NodeOrganization) -> Iterator[SubstraClient]:
    """A plain client that counts what the node really holds."""
    with SubstraClient(url=org.url, token=org.token) as client:
        yield client


def _chain(plan_key: str, function_key: str, worker: str, length: int) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for i in range(length):
        inputs = (
            [{"identifier": "model", "parent_task_key": tasks[-1]["task_id"], "parent_task_output_identifier": "model"}]
            if tasks
            else []
        )
        tasks.append(
            {
                "task_id": task_key(plan_key, f"noop/{i}"),
                "function_key": function_key,
                "worker": worker,
                "inputs": inputs,
                "outputs": {"model": {"permissions": {"public": False, "authorized_ids": []}}},
            }
        )
    return tasks


def test_client_keyed_posts_whose_answers_are_lost_create_nothing_twice(
    org: NodeOrganization, noop_function: str, observer: SubstraClient
) -> None:
    plan_key = str(uuid.uuid4())
    tasks = _chain(plan_key, noop_function, org.organization_id, 5)
    adapter = LossyAdapter({("POST", "/compute_plan/"): {1}, ("POST", "/task/bulk_create/"): {2}})
    with lossy_client(org, adapter) as client:
        submission = client.submit_compute_plan(
            {"key": plan_key, "name": "resilience lost answers", "tasks": tasks}, batch_size=2
        )
    assert adapter.dropped == [("POST", "/org-1/compute_plan/"), ("POST", "/org-1/task/bulk_create/")]
    assert adapter.count("POST", "/compute_plan/") == 2  # sent, answer lost, sent again: 409 = already there
    assert adapter.count("POST", "/task/bulk_create/") == 4  # 3 batches, the 2nd sent twice
    assert submission.plan.key == plan_key and submission.plan.task_count == 5
    assert sorted(submission.added_task_keys + submission.existing_task_keys) == sorted(t["task_id"] for t in tasks)
    assert sorted(submission.existing_task_keys) == sorted(t["task_id"] for t in tasks[2:4])  # the lost batch
    assert [p.key for p in observer.list_compute_plan(filters={"key": [plan_key]})] == [plan_key]
    assert sorted(t.key for t in observer.list_task(filters={"compute_plan_key": [plan_key]})) == sorted(
        t["task_id"] for t in tasks
    )


def test_a_lost_answer_to_a_dataset_creation_is_not_resent(
    org: NodeOrganization, observer: SubstraClient, tmp_path: Path
) -> None:
    name = f"resilience dataset {uuid.uuid4().hex[:12]}"
    adapter = LossyAdapter({("POST", "/data_manager/"): {1}})
    spec = {
        "name": name,
        "data_opener": assets.opener_path(),
        "description": assets.write_description(tmp_path / "dataset.md", name),
        "permissions": {"public": False, "authorized_ids": []},
        "logs_permission": {"public": False, "authorized_ids": []},
    }
    with lossy_client(org, adapter) as client, pytest.raises(exc.AssetMaybeCreatedError) as raised:
        client.add_dataset(spec)
    assert "may have been created" in str(raised.value)
    assert adapter.count("POST", "/data_manager/") == 1  # never resent
    assert [d.name for d in observer.list_dataset(filters={"name": name})] == [name]  # created exactly once


def test_a_bad_spec_raises_before_anything_is_sent(org: NodeOrganization, noop_function: str, tmp_path: Path) -> None:
    adapter = LossyAdapter()
    plan_key = str(uuid.uuid4())
    cycle = _chain(plan_key, noop_function, org.organization_id, 2)
    cycle[0]["inputs"] = [
        {"identifier": "model", "parent_task_key": cycle[1]["task_id"], "parent_task_output_identifier": "model"}
    ]
    with lossy_client(org, adapter) as client:
        with pytest.raises(exc.SpecValidationError, match="cycle"):
            client.add_compute_plan({"key": plan_key, "name": "resilience cycle", "tasks": cycle})
        with pytest.raises(exc.SpecValidationError):
            client.add_compute_plan({"key": plan_key, "name": "resilience", "tasks": cycle[1:]}, batch_size=0)
        with pytest.raises(exc.SpecValidationError):
            client.add_compute_plan({"key": "plan-1", "name": "resilience bad key"})
        with pytest.raises(exc.SpecValidationError):
            client.add_task({"key": str(uuid.uuid4()), "function_key": "nope", "worker": org.organization_id})
        with pytest.raises(exc.LoadDataException):
            client.add_data_sample({"path": tmp_path / "missing", "data_manager_keys": [str(uuid.uuid4())]})
        with pytest.raises(exc.SpecValidationError):
            client.add_dataset({"name": "resilience", "data_opener": tmp_path / "missing.py"})
        with pytest.raises(exc.NotAllowedFilterError):
            client.list_task(filters={"dataset_key": [str(uuid.uuid4())]})
        with pytest.raises(exc.KeyFormatError):
            client.get_compute_plan("../organization")
    assert adapter.sent == []


def test_a_401_logs_in_again_exactly_once(org: NodeOrganization) -> None:
    adapter = LossyAdapter()
    client = lossy_client(org, adapter, username=org.username, password=org.password)
    assert adapter.count("POST", "/api-token-auth/") == 1 and len(adapter.login_ids) == 1
    plan_key = client.add_compute_plan({"key": str(uuid.uuid4()), "name": "re-login probe", "tasks": []}).key
    # the token dies server-side (logged out elsewhere, or revoked by an admin)
    revoked = requests.delete(
        f"{org.url}/active-api-tokens/",
        params={"id": adapter.login_ids[0]},
        headers={"Authorization": f"Token {org.token}", "Accept": "application/json;version=0.0"},
        timeout=10,
    )
    assert revoked.status_code == 200
    assert client.get_compute_plan(plan_key).key == plan_key  # one page-free call: the shared node holds other plans
    assert adapter.count("POST", "/api-token-auth/") == 2  # one re-login
    assert adapter.count("GET", f"/compute_plan/{plan_key}/") == 2  # the refused call, then the same call again
    client.get_compute_plan(plan_key)
    assert adapter.count("POST", "/api-token-auth/") == 2  # the new token holds
    client.close()
    assert adapter.count("DELETE", "/active-api-tokens/") == 1
