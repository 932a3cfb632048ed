"""Each organization's task code sees its own inputs, and nothing else of the node.

An org-2 function "spies": it reports what it can read and what its environment holds, into its
own output model. The node process holds a secret in its environment, org-1 holds a private
dataset; the spy must find neither, and must still read its own inputs.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples import assets
from substra_flows import SubstraClient
from substra_flows.local_node import LocalNode
from substra_flows.local_node.sandbox import landlock_abi
from substra_flows.models import ComputeTaskStatus
from tests.live._node_functions import DATA_IN, register, task
from tests.recording import TEST_NODE_OPTIONS

pytestmark = pytest.mark.live

SECRET_VARIABLE = "SUBSTRA_ORG1_TOKEN"
SECRET = "0123456789abcdef-not-for-task-code"

SPY = """
TARGETS = {targets}


def _try(action):
    try:
        return action()
    except OSError as error:
        return type(error).__name__


@tools.register
def spy(inputs, outputs, task_properties):
    found = {{"environment": dict(os.environ), "own": {{}}, "others": {{}}}}
    data = inputs["datasamples"]  # loaded by the dataset's opener from the task's own samples
    found["own"]["rows"] = len(data["X"]) if isinstance(data, dict) else len(data)
    for name, path in TARGETS.items():
        if path.endswith("/"):
            found["others"][name] = _try(lambda path=path: sorted(os.listdir(path)))
        else:
            found["others"][name] = _try(lambda path=path: open(path).read())
    _write(outputs["model"], found)
"""


def _dataset(client: SubstraClient, index: int, folder: Path, name: str) -> tuple[str, list[str], list[Path]]:
    key = client.add_dataset(
        {
            "name": name,
            "data_opener": assets.opener_path(),
            "description": assets.write_description(folder / f"{name}.md", name),
            "permissions": {"public": False, "authorized_ids": []},
            "logs_permission": {"public": False, "authorized_ids": []},
        }
    )
    paths = assets.generate_samples(index, folder / name, n_samples=1, rows_per_sample=5)
    samples = client.add_data_samples({"paths": paths, "data_manager_keys": [key]})
    return key, samples, paths


@pytest.fixture(scope="module")
def spied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the spy once (org-2, on org-2's dataset) next to org-1's private dataset."""
    folder = tmp_path_factory.mktemp("isolation")
    os.environ[SECRET_VARIABLE] = SECRET  # in the node's process, as a host with credentials would have
    try:
        with LocalNode(organizations=2, **TEST_NODE_OPTIONS) as node:
            org1, org2 = node.organizations
            with (
                SubstraClient(url=org1.url, token=org1.token) as c1,
                SubstraClient(url=org2.url, token=org2.token) as c2,
            ):
                private, private_samples, _ = _dataset(c1, 1, folder, "org-1 private")
                own, own_samples, _ = _dataset(c2, 2, folder, "org-2 own")
                store = node.store
                targets = {
                    "org-1 opener": store.datasets[private]["_opener_path"],
                    "org-1 sample": next(Path(store.samples[private_samples[0]]["_path"]).iterdir()).as_posix(),
                    "node folder": f"{node.api.workdir}/",
                    "node environment": f"/proc/{os.getpid()}/environ",
                    "executor environment": f"/proc/{node.executor_pid}/environ",
                }
                spy = register(c2, folder / "spy", "spy", SPY.format(targets=json.dumps(targets)), inputs=DATA_IN)
                key = str(uuid.uuid4())
                spec = task(
                    key,
                    spy,
                    org2.organization_id,
                    inputs=[
                        {"identifier": "opener", "asset_key": own},
                        *({"identifier": "datasamples", "asset_key": s} for s in own_samples),
                    ],
                )
                c2.add_compute_plan({"key": str(uuid.uuid4()), "name": "spy", "tasks": [spec]})
                done = c2.wait_task(key, timeout=120, polling_period=0.2)
                assert done.status is ComputeTaskStatus.done
                model = next(m for m in store.models.values() if m["compute_task_key"] == key)
                yield json.loads(Path(model["_path"]).read_text())
    finally:
        os.environ.pop(SECRET_VARIABLE, None)


def test_task_code_gets_a_clean_environment(spied):
    environment = spied["environment"]
    assert SECRET_VARIABLE not in environment and SECRET not in json.dumps(environment)
    assert not [name for name in environment if name.startswith("SUBSTRA")]
    assert set(environment) <= {
        "PATH",
        "LANG",
        "LANGUAGE",
        "LC_ALL",
        "LC_CTYPE",
        "LC_NUMERIC",
        "TZ",
        "TERM",
        "HOME",
        "TMPDIR",
        "PYTHONDONTWRITEBYTECODE",
        "VIRTUAL_ENV",
    }


def test_task_code_reads_its_own_inputs(spied):
    assert spied["own"]["rows"] == 5  # one sample of 5 rows, read through the opener


@pytest.mark.skipif(landlock_abi() < 1, reason="no Landlock on this kernel: the node warns that files are not confined")
def test_task_code_cannot_read_other_organizations_files_nor_the_node(spied):
    assert spied["others"] == {
        "org-1 opener": "PermissionError",
        "org-1 sample": "PermissionError",
        "node folder": "PermissionError",
        "node environment": "PermissionError",
        "executor environment": "PermissionError",
    }
