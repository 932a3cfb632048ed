"""Assets of the Prefect live and cassette tests: plan specs written with task *names* (the steps
turn them into keys under the plan key, so a plan keyed by its flow run needs no key up front), and
a ``sleep`` function that keeps a plan running long enough to be cancelled."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from examples import assets
from substra_flows import SubstraClient, steps

SLEEP_SECONDS = 1.0
_SLEEP_FUNCTION = f'''"""Sleeps, then writes a tiny model: a task that is still running when a test cancels its plan."""
import json
import time

import substratools as tools


@tools.register
def sleep(inputs, outputs, task_properties):
    time.sleep({SLEEP_SECONDS})
    with open(outputs["model"], "w") as handle:
        json.dump({{"slept": {SLEEP_SECONDS}}}, handle)


if __name__ == "__main__":
    tools.execute()
'''
_SLEEP_DOCKERFILE = (
    "FROM python:3.11-slim\nRUN pip install substratools==1.0.0\nCOPY function.py .\n"
    'ENTRYPOINT ["python3", "function.py", "--function-name", "sleep"]\n'
)
SLEEP_INPUTS = {"model": {"kind": "ASSET_MODEL", "optional": True, "multiple": False}}
SLEEP_OUTPUTS = {"model": {"kind": "ASSET_MODEL", "multiple": False}}
EXAMPLE_FUNCTIONS = ("train", "aggregate", "predict", "score", "fail")


def sleep_archive(folder: Path) -> Path:
    """``sleep.tar.gz`` (Dockerfile + function.py), byte-identical on every call."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, text in sorted({"Dockerfile": _SLEEP_DOCKERFILE, "function.py": _SLEEP_FUNCTION}.items()):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            archive.addfile(info, io.BytesIO(data))
    target = folder / "sleep.tar.gz"
    target.write_bytes(gzip.compress(raw.getvalue(), mtime=0))
    return target


def register_world(clients: Sequence[SubstraClient], org_ids: Sequence[str], workdir: Path, prefix: str) -> dict:
    """Both organizations' datasets (2 train + 1 test samples each) and the example and sleep functions."""
    shared = {"public": False, "authorized_ids": list(org_ids)}
    orgs = []
    for index, (client, org_id) in enumerate(zip(clients, org_ids, strict=True), start=1):
        folder = workdir / f"org-{index}"
        train = assets.generate_samples(index, folder / "train", split="train", n_samples=2)
        test = assets.generate_samples(index, folder / "test", split="test", n_samples=1)
        registered = steps.register_dataset(
            client,
            name=f"{prefix} dataset org-{index}",
            opener=assets.opener_path(),
            sample_paths=[*train, *test],
            description=assets.write_description(folder / "dataset.md", f"{prefix} org-{index}"),
            permissions=shared,
            logs_permission=shared,
            ledger_dir=workdir / "ledgers",
        )
        orgs.append(
            {
                "organization_id": org_id,
                "dataset_key": registered.dataset_key,
                "train_sample_keys": registered.sample_keys[:2],
                "test_sample_keys": registered.sample_keys[2:],
            }
        )
    functions = {}
    for name in EXAMPLE_FUNCTIONS:
        functions[name] = steps.register_function(
            clients[0],
            name=f"{prefix} {name}",
            archive=assets.build_function_archive(name, workdir / "functions"),
            description=assets.write_description(workdir / "functions" / f"{name}.md", name),
            inputs=assets.function_inputs(name),
            outputs=assets.function_outputs(name),
            permissions={"public": True, "authorized_ids": []},
        ).function_key
    functions["sleep"] = steps.register_function(
        clients[0],
        name=f"{prefix} sleep",
        archive=sleep_archive(workdir / "functions"),
        description=assets.write_description(workdir / "functions" / "sleep.md", "sleep"),
        inputs=SLEEP_INPUTS,
        outputs=SLEEP_OUTPUTS,
        permissions={"public": True, "authorized_ids": []},
    ).function_key
    return {"orgs": orgs, "functions": functions}


def _data(org: Mapping[str, Any], samples: str) -> list[dict[str, Any]]:
    return [{"identifier": "opener", "asset_key": org["dataset_key"]}] + [
        {"identifier": "datasamples", "asset_key": key} for key in org[samples]
    ]


def _parent(name: str, identifier: str, output: str) -> dict[str, Any]:
    return {"identifier": identifier, "parent_task_key": name, "parent_task_output_identifier": output}


def federated_spec(name: str, world: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """One round: train on every organization, aggregate, then predict and score everywhere (7 tasks)."""
    orgs, fn = world["orgs"], world["functions"]
    ids = [o["organization_id"] for o in orgs]
    model = {"model": {"permissions": {"public": False, "authorized_ids": ids}}}
    tasks: list[dict[str, Any]] = [
        {
            "task_id": f"train/{o['organization_id']}",
            "function_key": fn["train"],
            "worker": o["organization_id"],
            "inputs": _data(o, "train_sample_keys"),
            "outputs": model,
            "metadata": {"round_idx": "0"},
        }
        for o in orgs
    ]
    tasks.append(
        {
            "task_id": "aggregate",
            "function_key": fn["aggregate"],
            "worker": ids[0],
            "inputs": [_parent(f"train/{i}", "models", "model") for i in ids],
            "outputs": model,
            "metadata": {"round_idx": "0"},
        }
    )
    for o in orgs:
        org_id = o["organization_id"]
        tasks.append(
            {
                "task_id": f"predict/{org_id}",
                "function_key": fn["predict"],
                "worker": org_id,
                "inputs": _data(o, "test_sample_keys") + [_parent("aggregate", "model", "model")],
                "outputs": {"predictions": {"permissions": {"public": False, "authorized_ids": ids}}},
                "metadata": {"round_idx": "0"},
            }
        )
        tasks.append(
            {
                "task_id": f"score/{org_id}",
                "function_key": fn["score"],
                "worker": org_id,
                "inputs": _data(o, "test_sample_keys") + [_parent(f"predict/{org_id}", "predictions", "predictions")],
                "outputs": {"performance": {"permissions": {"public": True, "authorized_ids": []}}},
                "metadata": {"round_idx": "0"},
            }
        )
    return {"name": name, "tasks": tasks, **extra}


def failing_spec(name: str, world: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """One task of the ``fail`` function: the plan fails, with recognizable lines in the task's logs."""
    org = world["orgs"][0]
    task = {
        "task_id": "fail",
        "function_key": world["functions"]["fail"],
        "worker": org["organization_id"],
        "inputs": _data(org, "train_sample_keys"),
        "outputs": {"model": {"permissions": {"public": False, "authorized_ids": [org["organization_id"]]}}},
    }
    return {"name": name, "tasks": [task], **extra}


def sleep_spec(name: str, world: Mapping[str, Any], length: int = 6, **extra: Any) -> dict[str, Any]:
    """A chain of ``length`` sleep tasks on the first organization (about ``length`` seconds)."""
    worker = world["orgs"][0]["organization_id"]
    output = {"model": {"permissions": {"public": False, "authorized_ids": [worker]}}}
    tasks = []
    for i in range(length):
        inputs = [_parent(f"sleep/{i - 1}", "model", "model")] if i else []
        tasks.append(
            {
                "task_id": f"sleep/{i}",
                "function_key": world["functions"]["sleep"],
                "worker": worker,
                "inputs": inputs,
                "outputs": output,
            }
        )
    return {"name": name, "tasks": tasks, **extra}


MARKER = "substra-flows example: deliberate failure"
