"""Acceptance: the 0.x script runs on the local node, scores like the same plan in 1.0 specs, and
its rerun with ``exist_ok=True`` creates nothing.

The script (examples/legacy/federated_0x.py) uses only the 0.x surface. The reference plan
(examples/legacy/federated_1_0.py) uses only SubstraClient and 1.0 specs, written by hand: its
own functions (the same scripts, packed with explicit ``--function-name`` entrypoints), datasets
and samples, and every task.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.legacy import federated_0x, federated_1_0
from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.local_node import LocalNode
from tests.recording import TEST_NODE_OPTIONS

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    """A node of this module's own: the 0.x AlreadyExists rules look at everything an organization owns."""
    with LocalNode(organizations=2, **TEST_NODE_OPTIONS) as started:  # the opt-ins of every test node
        yield started


@pytest.fixture(scope="module")
def clients(node: LocalNode) -> Iterator[list[SubstraClient]]:
    made = [SubstraClient(url=org.url, token=org.token) for org in node.organizations]
    yield made
    for client in made:
        client.close()


def inventory(client: SubstraClient) -> dict[str, list[str]]:
    """Every key of every kind of asset the channel holds."""
    return {
        "datasets": sorted(d.key for d in client.list_dataset()),
        "samples": sorted(s.key for s in client.list_data_sample()),
        "functions": sorted(f.key for f in client.list_function()),
        "plans": sorted(p.key for p in client.list_compute_plan()),
        "tasks": sorted(t.key for t in client.list_task()),
    }


@pytest.fixture(scope="module")
def runs(node: LocalNode, clients: list[SubstraClient], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The script once (profiles added, logins), then again from the saved profiles, exist_ok=True."""
    folder = tmp_path_factory.mktemp("legacy-0x-script")
    files = {
        "config_path": folder / "substra.json",
        "user_path": folder / "substra-user.json",
        "workdir": folder / "work",
    }
    creds = [federated_0x.Credentials(o.url, o.username, o.password) for o in node.organizations]
    first = federated_0x.run(**files, credentials=creds, polling_period=0.2)
    before = inventory(clients[0])
    second = federated_0x.run(**files, exist_ok=True, polling_period=0.2)
    after = inventory(clients[0])
    return {"first": first, "second": second, "before": before, "after": after, "files": files}


def test_the_0x_script_trains_and_tests_on_both_organizations(runs: dict[str, Any], node: LocalNode):
    first = runs["first"]
    assert first["status"] == "done" and first["done_count"] == first["tuple_count"] == 8
    ids = {o.organization_id for o in node.organizations}
    assert set(first["scores"]) == ids
    assert all(0.8 <= score <= 1.0 for score in first["scores"].values())  # the model really learns
    # the leaderboard holds the certified testtuple (on the objective's own test data, on org 1)
    (entry,) = first["leaderboard"]
    assert entry[1] == first["scores"][node.organizations[0].organization_id]


def test_the_rerun_with_exist_ok_creates_nothing_and_finds_everything(runs: dict[str, Any]):
    assert runs["after"] == runs["before"]
    assert runs["second"]["keys"] == runs["first"]["keys"]
    assert runs["second"]["compute_plan_id"] == runs["first"]["compute_plan_id"]
    assert runs["second"]["scores"] == runs["first"]["scores"]


def test_a_rerun_without_exist_ok_raises_already_exists_as_0x_did(runs: dict[str, Any], clients: list[SubstraClient]):
    with pytest.raises(exc.AlreadyExists) as raised:
        federated_0x.run(**runs["files"], exist_ok=False)
    assert raised.value.key in runs["first"]["keys"]["datasets"]
    assert inventory(clients[0]) == runs["before"]


# -- the same plan, written directly with 1.0 specs ---------------------------------------------------------


def test_its_scores_equal_the_same_plan_written_with_1_0_specs(
    runs: dict[str, Any], clients: list[SubstraClient], tmp_path: Path
):
    reference = federated_1_0.run(clients, tmp_path, polling_period=0.2)
    assert reference == runs["first"]["scores"]
