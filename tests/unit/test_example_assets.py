"""The shared example assets: deterministic archives and data, and a well-formed federated plan."""

from __future__ import annotations

import hashlib
import tarfile
import uuid
from pathlib import Path

import pytest
from substra.sdk.backends.local.compute.spawner.subprocess import _get_entrypoint_from_dockerfile

from examples import assets


@pytest.mark.parametrize("name", assets.FUNCTION_NAMES)
def test_function_archive_is_deterministic_and_runnable_by_the_sdk(name: str, tmp_path: Path) -> None:
    first = assets.build_function_archive(name, tmp_path / "a")
    second = assets.build_function_archive(name, tmp_path / "b")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    with tarfile.open(first) as archive:
        assert sorted(archive.getnames()) == ["Dockerfile", "function.py"]
        archive.extractall(tmp_path / "x", filter="data")
    assert _get_entrypoint_from_dockerfile(tmp_path / "x") == ("function.py", name)


def test_samples_are_deterministic_per_day(tmp_path: Path) -> None:
    day0 = assets.generate_samples(1, tmp_path / "a", day=0)
    again = assets.generate_samples(1, tmp_path / "b", day=0)
    day1 = assets.generate_samples(1, tmp_path / "c", day=1)
    assert [p.joinpath("data.csv").read_bytes() for p in day0] == [p.joinpath("data.csv").read_bytes() for p in again]
    assert day0[0].joinpath("data.csv").read_bytes() != day1[0].joinpath("data.csv").read_bytes()
    with pytest.raises(ValueError, match="split"):
        assets.generate_samples(1, tmp_path, split="validation")


def test_federated_plan_shape() -> None:
    orgs = [
        {
            "organization_id": f"Org{i}",
            "dataset_key": f"d{i}",
            "train_sample_keys": ["s1", "s2"],
            "test_sample_keys": ["t"],
        }
        for i in (1, 2)
    ]
    key = str(uuid.uuid4())
    functions = {n: f"f-{n}" for n in assets.FUNCTION_NAMES}
    spec = assets.build_federated_plan(compute_plan_key=key, name="p", function_keys=functions, orgs=orgs, rounds=3)
    assert spec == assets.build_federated_plan(
        compute_plan_key=key, name="p", function_keys=functions, orgs=orgs, rounds=3
    )
    tasks = spec["tasks"]
    assert len(tasks) == 3 * (2 + 1) + 2 * 2
    ids = [t["task_id"] for t in tasks]
    seen: set[str] = set()
    for task in tasks:  # parents-first, and every parent exists
        for ref in task["inputs"]:
            if "parent_task_key" in ref:
                assert ref["parent_task_key"] in seen
        seen.add(task["task_id"])
    assert len(set(ids)) == len(ids)
    scores = [t for t in tasks if t["function_key"] == "f-score"]
    assert all(t["outputs"]["performance"]["permissions"]["public"] for t in scores)
    with pytest.raises(ValueError, match="rounds"):
        assets.build_federated_plan(compute_plan_key=key, name="p", function_keys=functions, orgs=orgs, rounds=0)
