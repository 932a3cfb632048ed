"""Acceptance: the 0.x script runs on the local node, scores like the same plan in 1.0 specs, and
its rerun with ``exist_ok=True`` creates nothing.

The script (examples/legacy/federated_0x.py) uses only the 0.x surface. The reference plan below
uses only SubstraClient and 1.0 specs, written by hand: its own functions (the same scripts,
packed with explicit ``--function-name`` entrypoints), datasets and samples, and every task.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples import assets
from examples import legacy as legacy_assets
from examples.legacy import federated_0x
from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.local_node import LocalNode

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    """A node of this module's own: the 0.x AlreadyExists rules look at everything an organization owns."""
    with LocalNode(organizations=2) as started:
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


def archive_1_0(script: str, function: str, folder: Path) -> Path:
    """The example script packed as a 1.0 function: its ENTRYPOINT names the function."""
    entries = {
        "Dockerfile": (
            "FROM python:3.11-slim\nRUN pip install substratools==1.0.0\n"
            f"COPY {script}.py logreg.py ./\n"
            f'ENTRYPOINT ["python3", "{script}.py", "--function-name", "{function}"]\n'
        ).encode(),
        f"{script}.py": (legacy_assets.LEGACY_DIR / f"{script}.py").read_bytes(),
        "logreg.py": (legacy_assets.LEGACY_DIR / "logreg.py").read_bytes(),
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{script}-{function}.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


MODEL = {"kind": "ASSET_MODEL", "optional": False, "multiple": False}
DATA = [
    {"identifier": "opener", "kind": "ASSET_DATA_MANAGER", "optional": False, "multiple": False},
    {"identifier": "datasamples", "kind": "ASSET_DATA_SAMPLE", "optional": False, "multiple": True},
]


def function_1_0(client: SubstraClient, folder: Path, script: str, function: str, inputs: list, outputs: list) -> str:
    return client.add_function(
        {
            "name": f"1.0 {script} {function}",
            "description": legacy_assets.write_description(folder / f"{script}-{function}.md", function),
            "file": archive_1_0(script, function, folder),
            "permissions": {"public": True, "authorized_ids": []},
            "inputs": inputs,
            "outputs": outputs,
        }
    )


def test_its_scores_equal_the_same_plan_written_with_1_0_specs(
    runs: dict[str, Any], node: LocalNode, clients: list[SubstraClient], tmp_path: Path
):
    org_ids = [o.organization_id for o in node.organizations]
    shared = {"public": False, "authorized_ids": org_ids}
    owner = clients[0]
    train = function_1_0(
        owner,
        tmp_path,
        "composite_algo",
        "train",
        [
            *DATA,
            {"identifier": "local", **MODEL, "optional": True},
            {"identifier": "shared", **MODEL, "optional": True},
        ],
        [
            {"identifier": "local", "kind": "ASSET_MODEL", "multiple": False},
            {"identifier": "shared", "kind": "ASSET_MODEL", "multiple": False},
        ],
    )
    predict = function_1_0(
        owner,
        tmp_path,
        "composite_algo",
        "predict",
        [*DATA, {"identifier": "local", **MODEL}, {"identifier": "shared", **MODEL}],
        [{"identifier": "predictions", "kind": "ASSET_MODEL", "multiple": False}],
    )
    aggregate = function_1_0(
        owner,
        tmp_path,
        "aggregate_algo",
        "aggregate",
        [{"identifier": "models", **MODEL, "multiple": True}],
        [{"identifier": "model", "kind": "ASSET_MODEL", "multiple": False}],
    )
    score = function_1_0(
        owner,
        tmp_path,
        "metrics",
        "score",
        [*DATA, {"identifier": "predictions", **MODEL}],
        [{"identifier": "performance", "kind": "ASSET_PERFORMANCE", "multiple": False}],
    )
    data = []
    for index, client in enumerate(clients):
        dataset = client.add_dataset(
            {
                "name": f"1.0 reference data {index}",
                "data_opener": assets.opener_path(),
                "permissions": shared,
                "logs_permission": shared,
            }
        )
        folders = tmp_path / "samples"
        train_keys = client.add_data_samples(
            {"paths": assets.generate_samples(index, folders, split="train"), "data_manager_keys": [dataset]}
        )
        test_key = client.add_data_sample(
            {
                "path": assets.generate_samples(index, folders, split="test", n_samples=1)[0],
                "data_manager_keys": [dataset],
            }
        )
        data.append((dataset, sorted(train_keys), [test_key]))

    def ref(identifier: str, task: str, output: str) -> dict[str, Any]:
        return {"identifier": identifier, "parent_task_key": f"{task}", "parent_task_output_identifier": output}

    def opener_and(dataset: str, samples: list[str]) -> list[dict[str, Any]]:
        return [{"identifier": "opener", "asset_key": dataset}] + [
            {"identifier": "datasamples", "asset_key": s} for s in samples
        ]

    def out(*names: str, public: bool = False) -> dict[str, Any]:
        perms = {"public": True, "authorized_ids": []} if public else shared
        return {n: {"permissions": perms, "is_transient": False} for n in names}

    plan_key = str(uuid.uuid4())
    key = {
        name: str(uuid.uuid5(uuid.UUID(plan_key), name))
        for name in ("c0-0", "c0-1", "a0", "c1-0", "c1-1", "a1", "p0", "p1", "s0", "s1")
    }
    tasks = []
    for rank in range(2):
        for index, (dataset, train_keys, _) in enumerate(data):
            inputs = opener_and(dataset, train_keys)
            if rank:
                inputs += [ref("local", key[f"c0-{index}"], "local"), ref("shared", key["a0"], "model")]
            tasks.append(
                {
                    "task_id": key[f"c{rank}-{index}"],
                    "function_key": train,
                    "worker": org_ids[index],
                    "inputs": inputs,
                    "outputs": out("local", "shared"),
                }
            )
        tasks.append(
            {
                "task_id": key[f"a{rank}"],
                "function_key": aggregate,
                "worker": org_ids[0],
                "inputs": [ref("models", key[f"c{rank}-{i}"], "shared") for i in range(2)],
                "outputs": out("model"),
            }
        )
    for index, (dataset, _, test_keys) in enumerate(data):
        tasks.append(
            {
                "task_id": key[f"p{index}"],
                "function_key": predict,
                "worker": org_ids[index],
                "inputs": opener_and(dataset, test_keys)
                + [ref("local", key[f"c1-{index}"], "local"), ref("shared", key[f"c1-{index}"], "shared")],
                "outputs": out("predictions"),
            }
        )
        tasks.append(
            {
                "task_id": key[f"s{index}"],
                "function_key": score,
                "worker": org_ids[index],
                "inputs": opener_and(dataset, test_keys) + [ref("predictions", key[f"p{index}"], "predictions")],
                "outputs": out("performance", public=True),
            }
        )
    owner.add_compute_plan({"key": plan_key, "name": "1.0 reference of the 0.x script", "tasks": tasks})
    owner.wait_compute_plan(plan_key, timeout=600, polling_period=0.2)
    rows = owner.get_performances(plan_key).rows()
    reference = {row["worker"]: row["performance"] for row in rows}
    assert reference == runs["first"]["scores"]
