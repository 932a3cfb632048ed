"""Self-check of the shared example assets, without any Substra node.

The functions run the way the official SDK's subprocess spawner runs them: unpack the archive,
read script and function name from the Dockerfile ENTRYPOINT, then
``python <script> @<args file>`` with substratools' ``--inputs`` / ``--outputs`` JSON.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from substra.sdk import schemas as sdk_schemas
from substra.sdk.archive import uncompress
from substra.sdk.backends.local.compute.spawner.base import write_command_args_file
from substra.sdk.backends.local.compute.spawner.subprocess import _get_entrypoint_from_dockerfile

from examples import assets

FAILURE_MARKER = "substra-flows example: deliberate failure"
N_ORGS = 2
ROUNDS = 3


# --- running a function like the SDK subprocess spawner ----------------------------------------


class TaskRunner:
    """Runs example functions as tasks: one fresh unpacked archive and one args file per task."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.archives = {name: assets.build_function_archive(name, root / "archives") for name in assets.FUNCTION_NAMES}
        self.opener = root / "opener.py"  # a copy, like the node's inputs volume (and no .pyc in the repo)
        shutil.copyfile(assets.opener_path(), self.opener)
        self._count = 0

    def run(
        self,
        name: str,
        *,
        samples: list[Path] | None = None,
        inputs: dict[str, Path | list[Path]] | None = None,
        rank: int | None = None,
    ) -> tuple[subprocess.CompletedProcess[str], dict[str, Path]]:
        """Run function ``name``; send back the finished process and its output paths by identifier."""
        self._count += 1
        task_dir = self.root / f"task-{self._count}-{name}"
        function_dir, outputs_dir = task_dir / "function", task_dir / "outputs"
        outputs_dir.mkdir(parents=True)
        uncompress(self.archives[name], function_dir)
        script, function_name = _get_entrypoint_from_dockerfile(function_dir)
        assert function_name == name

        declared = assets.function_inputs(name)
        resources: list[dict[str, Any]] = []
        if samples is not None:
            resources.append({"id": "opener", "value": str(self.opener), "multiple": False})
            resources += [{"id": "datasamples", "value": str(s), "multiple": True} for s in samples]
        for identifier, value in (inputs or {}).items():
            multiple = declared[identifier]["multiple"]
            paths = value if isinstance(value, list) else [value]
            resources += [{"id": identifier, "value": str(p), "multiple": multiple} for p in paths]
        outputs = {identifier: outputs_dir / identifier for identifier in assets.function_outputs(name)}
        arguments = [
            "--function-name",
            function_name,
            "--task-properties",
            json.dumps({"rank": rank}),
            "--inputs",
            json.dumps(resources),
            "--outputs",
            json.dumps([{"id": i, "value": str(p), "multiple": False} for i, p in outputs.items()]),
        ]
        args_file = task_dir / "arguments.txt"
        write_command_args_file(args_file, arguments)
        process = subprocess.run(
            [sys.executable, str(function_dir / script), f"@{args_file}"],
            cwd=function_dir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return process, outputs

    def ok(self, name: str, **kwargs: Any) -> dict[str, Path]:
        """Run a function that must succeed; send back its output paths."""
        process, outputs = self.run(name, **kwargs)
        assert process.returncode == 0, f"{name} failed:\n{process.stderr}"
        for identifier, path in outputs.items():
            assert path.is_file(), f"{name} did not write its output {identifier!r}"
        return outputs


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> TaskRunner:
    return TaskRunner(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def org_samples(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, list[Path]]]:
    root = tmp_path_factory.mktemp("samples")
    return [
        {
            "train": assets.generate_samples(i, root / f"org{i}" / "train", split="train", n_samples=2),
            "test": assets.generate_samples(i, root / f"org{i}" / "test", split="test", n_samples=2),
        }
        for i in range(1, N_ORGS + 1)
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- archives ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", assets.FUNCTION_NAMES)
def test_archive_is_deterministic_and_its_entrypoint_parsed_by_the_sdk(name: str, tmp_path: Path) -> None:
    first = assets.build_function_archive(name, tmp_path / "first")
    second = assets.build_function_archive(name, tmp_path / "second")
    assert first.name == f"{name}.tar.gz"
    assert _sha256(first) == _sha256(second)
    assert _sha256(assets.build_function_archive(name, tmp_path / "first")) == _sha256(first)  # rewrite in place

    with tarfile.open(first) as archive:
        assert archive.getnames() == ["Dockerfile", "function.py"]
        assert {m.mtime for m in archive.getmembers()} == {0}
    unpacked = tmp_path / "unpacked"
    uncompress(first, unpacked)
    assert (unpacked / "function.py").read_bytes() == (assets.ASSETS_DIR / "function.py").read_bytes()
    dockerfile = (unpacked / "Dockerfile").read_text()
    assert dockerfile.startswith("FROM python:3.11-slim\n")
    assert "RUN pip install substratools==1.0.0\n" in dockerfile
    assert _get_entrypoint_from_dockerfile(unpacked) == ("function.py", name)


def test_archives_differ_by_function_and_unknown_names_are_refused(tmp_path: Path) -> None:
    digests = {_sha256(assets.build_function_archive(n, tmp_path)) for n in assets.FUNCTION_NAMES}
    assert len(digests) == len(assets.FUNCTION_NAMES)
    with pytest.raises(ValueError, match="unknown example function"):
        assets.build_function_archive("nope", tmp_path)


@pytest.mark.parametrize("name", assets.FUNCTION_NAMES)
def test_declared_shapes_are_valid_sdk_function_specs(name: str) -> None:
    inputs = [sdk_schemas.FunctionInputSpec(identifier=i, **v) for i, v in assets.function_inputs(name).items()]
    outputs = [sdk_schemas.FunctionOutputSpec(identifier=i, **v) for i, v in assets.function_outputs(name).items()]
    assert inputs or name == "noop"
    assert len(outputs) == 1
    assert assets.function_inputs(name) is not assets.function_inputs(name)  # callers may mutate their copy


# --- data ----------------------------------------------------------------------------------------


def test_samples_are_byte_identical_for_the_same_arguments(tmp_path: Path) -> None:
    first = assets.generate_samples(2, tmp_path / "a", day=3, split="test", n_samples=3, rows_per_sample=7, seed=5)
    again = assets.generate_samples(2, tmp_path / "b", day=3, split="test", n_samples=3, rows_per_sample=7, seed=5)
    other_day = assets.generate_samples(2, tmp_path / "c", day=4, split="test", n_samples=3, rows_per_sample=7, seed=5)
    assert [p.name for p in first] == [f"org2-day3-test-{i}" for i in range(3)]
    assert [(p / "data.csv").read_bytes() for p in first] == [(p / "data.csv").read_bytes() for p in again]
    assert (first[0] / "data.csv").read_bytes() != (other_day[0] / "data.csv").read_bytes()
    lines = (first[0] / "data.csv").read_text().splitlines()
    assert lines[0] == "x1,x2,y" and len(lines) == 1 + 7


def test_opener_concatenates_sorted_folders(tmp_path: Path) -> None:
    from examples.assets.opener import CsvOpener

    folders = assets.generate_samples(1, tmp_path, n_samples=3, rows_per_sample=5)
    opener = CsvOpener()
    data = opener.get_data([str(f) for f in reversed(folders)])
    assert data == opener.get_data([str(f) for f in folders])
    assert len(data["X"]) == len(data["y"]) == 15
    assert all(len(row) == 2 and all(isinstance(v, float) for v in row) for row in data["X"])
    assert set(data["y"]) <= {0, 1}
    fake = opener.fake_data(6)
    assert fake == opener.fake_data(6) and len(fake["X"]) == len(fake["y"]) == 6


# --- the functions, run as tasks -----------------------------------------------------------------


def _accuracies(runner: TaskRunner, model: Path, org_samples: list[dict[str, list[Path]]]) -> list[float]:
    """Predict then score on every organization's test samples."""
    result = []
    for rank_offset, org in enumerate(org_samples):
        predictions = runner.ok("predict", samples=org["test"], inputs={"model": model}, rank=rank_offset)
        probabilities = json.loads(predictions["predictions"].read_text())
        assert len(probabilities) == 2 * 40 and all(0.0 <= p <= 1.0 for p in probabilities)
        score = runner.ok("score", samples=org["test"], inputs={"predictions": predictions["predictions"]})
        performance = json.loads(score["performance"].read_text())  # substratools' save_performance format
        assert set(performance) == {"all"} and isinstance(performance["all"], float)
        result.append(performance["all"])
    return result


def test_federated_training_really_learns(
    runner: TaskRunner, org_samples: list[dict[str, list[Path]]], tmp_path: Path
) -> None:
    untrained = tmp_path / "untrained.json"  # what train starts from: the model after 0 rounds
    untrained.write_text(json.dumps({"weights": [0.0, 0.0], "bias": 0.0, "n_samples": 0}))
    baseline = _accuracies(runner, untrained, org_samples)

    model: Path | None = None
    for round_idx in range(ROUNDS):
        local_models = []
        for org in org_samples:
            inputs = {"model": model} if model is not None else {}
            local_models.append(runner.ok("train", samples=org["train"], inputs=inputs, rank=2 * round_idx)["model"])
        aggregated = runner.ok("aggregate", inputs={"models": local_models}, rank=2 * round_idx + 1)["model"]

        # FedAvg: the sample-weighted mean of the local models
        locals_ = [json.loads(p.read_text()) for p in local_models]
        merged = json.loads(aggregated.read_text())
        total = sum(m["n_samples"] for m in locals_)
        assert merged["n_samples"] == total == N_ORGS * 2 * 40
        assert merged["bias"] == pytest.approx(sum(m["bias"] * m["n_samples"] for m in locals_) / total)
        for j, weight in enumerate(merged["weights"]):
            assert weight == pytest.approx(sum(m["weights"][j] * m["n_samples"] for m in locals_) / total)
        model = aggregated

    assert model is not None
    trained = _accuracies(runner, model, org_samples)
    for org_index, (before, after) in enumerate(zip(baseline, trained, strict=True), start=1):
        assert after > 0.8, f"org{org_index}: accuracy {after} after {ROUNDS} rounds"
        assert after > before, f"org{org_index}: {after} is no better than the untrained {before}"


def test_fail_exits_non_zero_with_the_marker_on_stderr(
    runner: TaskRunner, org_samples: list[dict[str, list[Path]]]
) -> None:
    process, outputs = runner.run("fail", samples=org_samples[0]["train"])
    assert process.returncode != 0
    assert FAILURE_MARKER in process.stderr.splitlines()
    assert "RuntimeError: deliberate failure for tests" in process.stderr
    assert not outputs["model"].exists()


def test_noop_chains_with_and_without_a_model(runner: TaskRunner) -> None:
    first = runner.ok("noop")["model"]
    second = runner.ok("noop", inputs={"model": first})["model"]
    assert json.loads(second.read_text()) == json.loads(first.read_text())
    assert second.stat().st_size < 64


# --- the compute plan ----------------------------------------------------------------------------


def _orgs(n: int) -> list[dict[str, Any]]:
    return [
        {
            "organization_id": f"Org{i}MSP",
            "dataset_key": str(uuid.uuid5(uuid.NAMESPACE_OID, f"dataset-{i}")),
            "train_sample_keys": [str(uuid.uuid5(uuid.NAMESPACE_OID, f"train-{i}-{s}")) for s in range(2)],
            "test_sample_keys": [str(uuid.uuid5(uuid.NAMESPACE_OID, f"test-{i}"))],
        }
        for i in range(1, n + 1)
    ]


FUNCTION_KEYS = {n: str(uuid.uuid5(uuid.NAMESPACE_OID, f"function-{n}")) for n in assets.FUNCTION_NAMES}


@pytest.mark.parametrize(("n_orgs", "rounds"), [(2, 3), (3, 1), (1, 2)])
def test_federated_plan_is_deterministic_and_well_formed(n_orgs: int, rounds: int) -> None:
    key = str(uuid.uuid4())
    orgs = _orgs(n_orgs)
    org_ids = [o["organization_id"] for o in orgs]

    def build(plan_key: str = key, organizations: Any = orgs) -> dict[str, Any]:
        return assets.build_federated_plan(
            compute_plan_key=plan_key, name="plan", function_keys=FUNCTION_KEYS, orgs=organizations, rounds=rounds
        )

    spec = build()
    assert spec == build()
    assert spec == build(organizations=[SimpleNamespace(**o) for o in orgs])  # objects work like dicts
    assert spec["key"] == key and spec["name"] == "plan"
    sdk_schemas.ComputePlanSpec.model_validate(spec)  # the official SDK 1.0 shape

    tasks = spec["tasks"]
    assert len(tasks) == rounds * (n_orgs + 1) + 2 * n_orgs
    ids = [t["task_id"] for t in tasks]
    assert len(set(ids)) == len(ids)
    assert all(str(uuid.UUID(i)) == i for i in ids)
    assert not set(ids) & {t["task_id"] for t in build(plan_key=str(uuid.uuid4()))["tasks"]}

    by_function = {name: [t for t in tasks if t["function_key"] == k] for name, k in FUNCTION_KEYS.items()}
    assert [len(by_function[n]) for n in ("train", "aggregate", "predict", "score")] == [
        rounds * n_orgs,
        rounds,
        n_orgs,
        n_orgs,
    ]
    seen: dict[str, dict[str, Any]] = {}
    for task in tasks:  # parents first, and each parent output exists
        assert set(task["metadata"]) >= {"round_idx"} and "rank" not in task and "rank" not in task["metadata"]
        assert isinstance(task["metadata"]["round_idx"], str)
        for ref in task["inputs"]:
            if "parent_task_key" in ref:
                parent = seen[ref["parent_task_key"]]
                assert ref["parent_task_output_identifier"] in parent["outputs"]
        seen[task["task_id"]] = task
        for identifier, output in task["outputs"].items():
            assert output["is_transient"] is False
            if identifier == "performance":
                assert output["permissions"]["public"] is True
            else:
                assert output["permissions"] == {"public": False, "authorized_ids": org_ids}

    trains = by_function["train"]
    assert all(not any(r["identifier"] == "model" for r in t["inputs"]) for t in trains[:n_orgs])  # from scratch
    for train in trains[n_orgs:]:
        (model_ref,) = [r for r in train["inputs"] if r["identifier"] == "model"]
        assert seen[model_ref["parent_task_key"]]["function_key"] == FUNCTION_KEYS["aggregate"]
    assert {t["worker"] for t in by_function["aggregate"]} == {org_ids[0]}
    assert [len(t["inputs"]) for t in by_function["aggregate"]] == [n_orgs] * rounds
    for score in by_function["score"]:
        assert score["metadata"]["round_idx"] == str(rounds - 1)
        test_keys = next(o["test_sample_keys"] for o in orgs if o["organization_id"] == score["worker"])
        assert [r["asset_key"] for r in score["inputs"] if r["identifier"] == "datasamples"] == test_keys


def test_federated_plan_refuses_unusable_arguments() -> None:
    key = str(uuid.uuid4())
    good: dict[str, Any] = {"compute_plan_key": key, "name": "p", "function_keys": FUNCTION_KEYS, "orgs": _orgs(2)}
    with pytest.raises(ValueError, match="rounds"):
        assets.build_federated_plan(**good, rounds=0)
    with pytest.raises(ValueError, match="aggregate"):
        assets.build_federated_plan(**{**good, "function_keys": {"train": "t"}}, rounds=1)
    with pytest.raises(ValueError, match="twice"):
        assets.build_federated_plan(**{**good, "orgs": _orgs(1) * 2}, rounds=1)
    with pytest.raises(ValueError, match="test_sample_keys"):
        assets.build_federated_plan(**{**good, "orgs": [{**_orgs(1)[0], "test_sample_keys": []}]}, rounds=1)
