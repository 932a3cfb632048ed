"""The plan of ``federated_0x.py``, written directly with 1.0 specs and SubstraClient.

What the 0.x script becomes on 1.0, by hand: four functions (composite train and predict, the
aggregate, the metric) whose ENTRYPOINTs name the function, a dataset and samples per
organization, and every task of the plan (two rounds of composite train tasks and aggregates,
then a predict and a score task per organization). Used as the reference the 0.x script's scores
must equal (tests/legacy/test_live_0x_script.py) and by ``benchmarks.legacy``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from examples import assets
from examples import legacy as legacy_assets
from substra_flows import SubstraClient
from substra_flows.legacy.archives import Member, write_targz

ROUNDS = 2
MODEL = {"kind": "ASSET_MODEL", "optional": False, "multiple": False}
OUT_MODEL = {"kind": "ASSET_MODEL", "multiple": False}
DATA = [
    {"identifier": "opener", "kind": "ASSET_DATA_MANAGER", "optional": False, "multiple": False},
    {"identifier": "datasamples", "kind": "ASSET_DATA_SAMPLE", "optional": False, "multiple": True},
]


def archive(script: str, function: str, folder: Path) -> Path:
    """An example script packed as a 1.0 function: its ENTRYPOINT names the function."""
    entries = {
        "Dockerfile": (
            "FROM python:3.11-slim\nRUN pip install substratools==1.0.0\n"
            f"COPY {script}.py logreg.py ./\n"
            f'ENTRYPOINT ["python3", "{script}.py", "--function-name", "{function}"]\n'
        ).encode(),
        f"{script}.py": (legacy_assets.LEGACY_DIR / f"{script}.py").read_bytes(),
        "logreg.py": (legacy_assets.LEGACY_DIR / "logreg.py").read_bytes(),
    }
    return write_targz([Member(n, d, 0o644) for n, d in entries.items()], folder / f"{script}-{function}.tar.gz")


def _function(client: SubstraClient, folder: Path, script: str, function: str, inputs: list, outputs: list) -> str:
    return client.add_function(
        {
            "name": f"1.0 {script} {function}",
            "description": legacy_assets.write_description(folder / f"{script}-{function}.md", function),
            "file": archive(script, function, folder),
            "permissions": {"public": True, "authorized_ids": []},
            "inputs": inputs,
            "outputs": outputs,
        }
    )


def run(clients: Sequence[SubstraClient], workdir: Path, polling_period: float = 1.0) -> dict[str, float]:
    """Register, submit, wait; return the score per organization."""
    org_ids = [c.organization_info().organization_id for c in clients]
    shared = {"public": False, "authorized_ids": org_ids}
    owner = clients[0]
    local = {"identifier": "local", **MODEL}
    trunk = {"identifier": "shared", **MODEL}
    train = _function(
        owner,
        workdir,
        "composite_algo",
        "train",
        [*DATA, {**local, "optional": True}, {**trunk, "optional": True}],
        [{"identifier": "local", **OUT_MODEL}, {"identifier": "shared", **OUT_MODEL}],
    )
    predict = _function(
        owner, workdir, "composite_algo", "predict", [*DATA, local, trunk], [{"identifier": "predictions", **OUT_MODEL}]
    )
    aggregate = _function(
        owner,
        workdir,
        "aggregate_algo",
        "aggregate",
        [{"identifier": "models", **MODEL, "multiple": True}],
        [{"identifier": "model", **OUT_MODEL}],
    )
    score = _function(
        owner,
        workdir,
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
        folders = workdir / "samples"
        train_keys = client.add_data_samples(
            {"paths": assets.generate_samples(index, folders, split="train"), "data_manager_keys": [dataset]}
        )
        test = assets.generate_samples(index, folders, split="test", n_samples=1)[0]
        test_key = client.add_data_sample({"path": test, "data_manager_keys": [dataset]})
        data.append((dataset, sorted(train_keys), [test_key]))

    plan_key = str(uuid.uuid4())
    key = {name: str(uuid.uuid5(uuid.UUID(plan_key), name)) for name in _task_names()}

    def parent(identifier: str, task: str, output: str) -> dict[str, Any]:
        return {"identifier": identifier, "parent_task_key": key[task], "parent_task_output_identifier": output}

    def data_inputs(dataset: str, samples: list[str]) -> list[dict[str, Any]]:
        return [{"identifier": "opener", "asset_key": dataset}] + [
            {"identifier": "datasamples", "asset_key": s} for s in samples
        ]

    def outputs(*names: str, public: bool = False) -> dict[str, Any]:
        permissions = {"public": True, "authorized_ids": []} if public else shared
        return {n: {"permissions": permissions, "is_transient": False} for n in names}

    tasks = []
    for rank in range(ROUNDS):
        for index, (dataset, train_keys, _) in enumerate(data):
            inputs = data_inputs(dataset, train_keys)
            if rank:
                inputs += [parent("local", f"c{rank - 1}-{index}", "local"), parent("shared", f"a{rank - 1}", "model")]
            tasks.append(
                {
                    "task_id": key[f"c{rank}-{index}"],
                    "function_key": train,
                    "worker": org_ids[index],
                    "inputs": inputs,
                    "outputs": outputs("local", "shared"),
                }
            )
        tasks.append(
            {
                "task_id": key[f"a{rank}"],
                "function_key": aggregate,
                "worker": org_ids[0],
                "inputs": [parent("models", f"c{rank}-{i}", "shared") for i in range(len(data))],
                "outputs": outputs("model"),
            }
        )
    last = ROUNDS - 1
    for index, (dataset, _, test_keys) in enumerate(data):
        model = [parent("local", f"c{last}-{index}", "local"), parent("shared", f"c{last}-{index}", "shared")]
        tasks.append(
            {
                "task_id": key[f"p{index}"],
                "function_key": predict,
                "worker": org_ids[index],
                "inputs": data_inputs(dataset, test_keys) + model,
                "outputs": outputs("predictions"),
            }
        )
        tasks.append(
            {
                "task_id": key[f"s{index}"],
                "function_key": score,
                "worker": org_ids[index],
                "inputs": data_inputs(dataset, test_keys) + [parent("predictions", f"p{index}", "predictions")],
                "outputs": outputs("performance", public=True),
            }
        )
    owner.add_compute_plan({"key": plan_key, "name": "1.0 reference of the 0.x script", "tasks": tasks})
    owner.wait_compute_plan(plan_key, timeout=600, polling_period=polling_period)
    return {row["worker"]: row["performance"] for row in owner.get_performances(plan_key).rows()}


def _task_names() -> list[str]:
    composites = [f"c{rank}-{index}" for rank in range(ROUNDS) for index in range(2)]
    return [*composites, *(f"a{rank}" for rank in range(ROUNDS)), "p0", "p1", "s0", "s1"]
