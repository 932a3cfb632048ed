"""A federated learning script in the 0.x SDK's style, run unchanged on Substra 1.0.

Everything below :func:`run` uses only what the 0.x reference documents describe (profiles,
``add_objective``, ``add_dataset`` + ``add_data_samples``, the three kinds of algo, a compute plan
of composite traintuples, aggregatetuples and testtuples over two organizations, ``leaderboard``,
``exist_ok``), with ``substra_flows.legacy.Client`` in place of ``substra.Client``::

    .venv/bin/python -m examples.legacy.federated_0x            # a local node, the script twice

The second run passes ``exist_ok=True`` everywhere and loads the profiles and their tokens from
the files the first run wrote: it finds every asset and the compute plan instead of creating them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from examples import assets
from examples import legacy as legacy_assets
from substra_flows.legacy import Client

PROFILES = ("org-1", "org-2")
ROUNDS = 2
FINAL = ("done", "failed", "canceled")


@dataclass(frozen=True)
class Credentials:
    """How to reach one organization (a 0.x profile)."""

    url: str
    username: str
    password: str


def _files(workdir: Path) -> dict[str, Path]:
    """The archives, descriptions and sample folders of the script (same bytes on every run)."""
    archives = workdir / "archives"
    files = {name: legacy_assets.build_archive(name, archives) for name in legacy_assets.SCRIPTS}
    for name in ("objective", "algo", "aggregate_algo", "composite_algo", "dataset-1", "dataset-2"):
        files[f"{name}.md"] = legacy_assets.write_description(workdir / "descriptions" / f"{name}.md", name)
    return files


def _clients(config_path: Path, user_path: Path, credentials: Sequence[Credentials] | None) -> list[Client]:
    """One client per organization: profiles added and logged in, or loaded from the files."""
    clients = []
    for name, creds in zip(PROFILES, credentials or [None] * len(PROFILES), strict=True):
        if creds is None:  # a later run: the profile and its token come from the files
            clients.append(Client(config_path=str(config_path), profile_name=name, user_path=str(user_path)))
            continue
        client = Client(config_path=str(config_path), user_path=str(user_path))
        client.add_profile(name, creds.username, creds.password, creds.url)
        client.login()
        clients.append(client)
    return clients


def run(
    config_path: Path,
    user_path: Path,
    workdir: Path,
    credentials: Sequence[Credentials] | None = None,
    exist_ok: bool = False,
    timeout: float = 600,
    polling_period: float = 1.0,
) -> dict[str, Any]:
    """Register everything, train for ROUNDS rounds, wait, and read the scores and the leaderboard."""
    files = _files(workdir)
    org1, org2 = _clients(config_path, user_path, credentials)
    nodes = [node["id"] for node in org1.list_node()]
    current = [n["id"] for n in org1.list_node() if n["is_current"]][0]
    other = [n for n in nodes if n != current][0]
    shared = {"public": False, "authorized_ids": [current, other]}

    datasets, train_keys, test_keys = [], [], []
    for index, client in enumerate((org1, org2)):
        dataset = client.add_dataset(
            {
                "name": f"0.x example data {index + 1}",
                "description": str(files[f"dataset-{index + 1}.md"]),
                "type": "csv",
                "data_opener": str(assets.opener_path()),
                "permissions": shared,
            },
            exist_ok=exist_ok,
        )
        folders = workdir / "samples"
        train = assets.generate_samples(index, folders, split="train")
        test = assets.generate_samples(index, folders, split="test", n_samples=1)
        if exist_ok:  # add_data_samples has no exist_ok in 0.x: rerun sample by sample
            trained = [
                client.add_data_sample({"path": str(p), "data_manager_keys": [dataset["key"]]}, exist_ok=True)
                for p in train
            ]
        else:
            trained = client.add_data_samples(
                {"paths": [str(p) for p in train], "data_manager_keys": [dataset["key"]], "test_only": False}
            )
        tested = client.add_data_sample(
            {"path": str(test[0]), "data_manager_keys": [dataset["key"]], "test_only": True}, exist_ok=exist_ok
        )
        datasets.append(dataset)
        train_keys.append(sorted(s["key"] for s in trained))
        test_keys.append([tested["key"]])

    public = {"public": True, "authorized_ids": []}
    objective = org1.add_objective(
        {
            "name": "0.x example accuracy",
            "description": str(files["objective.md"]),
            "metrics_name": "accuracy",
            "metrics": str(files["metrics"]),
            "test_data_manager_key": datasets[0]["key"],
            "test_data_sample_keys": test_keys[0],
            "permissions": public,
        },
        exist_ok=exist_ok,
    )
    org1.link_dataset_with_objective(datasets[0]["key"], objective["key"])
    algos = {}
    for kind, add in (
        ("algo", org1.add_algo),
        ("aggregate_algo", org1.add_aggregate_algo),
        ("composite_algo", org1.add_composite_algo),
    ):
        algos[kind] = add(
            {
                "name": f"0.x example {kind.replace('_', ' ')}",
                "description": str(files[f"{kind}.md"]),
                "file": str(files[kind]),
                "permissions": public,
            },
            exist_ok=exist_ok,
        )

    composites, aggregates = [], []
    for rank in range(ROUNDS):
        for index, dataset in enumerate(datasets):
            tuple_spec: dict[str, Any] = {
                "composite_traintuple_id": f"composite-{rank}-{index}",
                "algo_key": algos["composite_algo"]["key"],
                "data_manager_key": dataset["key"],
                "train_data_sample_keys": train_keys[index],
                "out_trunk_model_permissions": {"authorized_ids": [current, other]},
                "tag": f"round {rank}",
            }
            if rank:
                tuple_spec["in_head_model_id"] = f"composite-{rank - 1}-{index}"
                tuple_spec["in_trunk_model_id"] = f"aggregate-{rank - 1}"
            composites.append(tuple_spec)
        aggregates.append(
            {
                "aggregatetuple_id": f"aggregate-{rank}",
                "algo_key": algos["aggregate_algo"]["key"],
                "worker": current,
                "in_models_ids": [f"composite-{rank}-{i}" for i in range(len(datasets))],
                "tag": f"round {rank}",
            }
        )
    testtuples = [
        {
            "objective_key": objective["key"],
            "data_manager_key": dataset["key"],
            "test_data_sample_keys": test_keys[index],
            "traintuple_id": f"composite-{ROUNDS - 1}-{index}",
            "tag": "evaluation",
        }
        for index, dataset in enumerate(datasets)
    ]
    plan = org1.add_compute_plan(
        {
            "composite_traintuples": composites,
            "aggregatetuples": aggregates,
            "testtuples": testtuples,
            "clean_models": False,
            "tag": "0.x example",
            "metadata": {"script": "federated_0x"},
        }
    )

    deadline = time.monotonic() + timeout
    while True:
        plan = org1.get_compute_plan(plan["compute_plan_id"])
        if plan["status"] in FINAL or time.monotonic() > deadline:
            break
        time.sleep(polling_period)

    scores = {}
    for key in plan["testtuple_keys"]:
        testtuple = org1.get_testtuple(key)
        scores[testtuple["dataset"]["worker"]] = testtuple["dataset"]["perf"]
    board = org1.leaderboard(objective["key"], sort="desc")
    for client in (org1, org2):
        client.close()
    return {
        "compute_plan_id": plan["compute_plan_id"],
        "status": plan["status"],
        "done_count": plan["done_count"],
        "tuple_count": plan["tuple_count"],
        "scores": scores,
        "leaderboard": [(t["key"], t["perf"]) for t in board["testtuples"]],
        "keys": {
            "datasets": [d["key"] for d in datasets],
            "train_samples": train_keys,
            "test_samples": test_keys,
            "objective": objective["key"],
            "algos": {kind: algo["key"] for kind, algo in algos.items()},
            "testtuples": plan["testtuple_keys"],
        },
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Start a local node and run the script twice (the second run with ``exist_ok=True``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    from substra_flows.local_node import LocalNode

    with tempfile.TemporaryDirectory() as tmp, LocalNode(organizations=2) as node:
        folder = Path(tmp)
        creds = [Credentials(o.url, o.username, o.password) for o in node.organizations]
        first = run(folder / "substra.json", folder / "substra-user.json", folder / "work", creds)
        print("first run:", json.dumps({k: first[k] for k in ("status", "scores", "leaderboard")}, indent=2))
        second = run(folder / "substra.json", folder / "substra-user.json", folder / "work", exist_ok=True)
        print("rerun, exist_ok=True:", json.dumps({k: second[k] for k in ("status", "scores")}, indent=2))
        print("same keys:", first["keys"] == second["keys"])


if __name__ == "__main__":
    main()
