"""Shared example assets: a CSV opener, a federated logistic regression, a data generator, a plan builder.

Tests, benchmarks, the demo and both orchestrator examples use these, so they all train the
same small model that really learns.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import random
import tarfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ASSETS_DIR = Path(__file__).resolve().parent
FUNCTION_NAMES = ("train", "aggregate", "predict", "score", "fail", "noop")

_SAMPLES = {"kind": "ASSET_DATA_SAMPLE", "optional": False, "multiple": True}
_OPENER = {"kind": "ASSET_DATA_MANAGER", "optional": False, "multiple": False}
_MODEL_IN = {"kind": "ASSET_MODEL", "optional": False, "multiple": False}
_MODEL_OUT = {"kind": "ASSET_MODEL", "multiple": False}

_INPUTS: dict[str, dict[str, dict[str, Any]]] = {
    "train": {"datasamples": _SAMPLES, "opener": _OPENER, "model": {**_MODEL_IN, "optional": True}},
    "aggregate": {"models": {**_MODEL_IN, "multiple": True}},
    "predict": {"datasamples": _SAMPLES, "opener": _OPENER, "model": _MODEL_IN},
    "score": {"datasamples": _SAMPLES, "opener": _OPENER, "predictions": _MODEL_IN},
    "fail": {"datasamples": _SAMPLES, "opener": _OPENER},
    "noop": {"model": {**_MODEL_IN, "optional": True}},
}
_OUTPUTS: dict[str, dict[str, dict[str, Any]]] = {
    "train": {"model": _MODEL_OUT},
    "aggregate": {"model": _MODEL_OUT},
    "predict": {"predictions": _MODEL_OUT},
    "score": {"performance": {"kind": "ASSET_PERFORMANCE", "multiple": False}},
    "fail": {"model": _MODEL_OUT},
    "noop": {"model": _MODEL_OUT},
}

# The functions a federated plan (build_federated_plan) runs.
_PLAN_FUNCTIONS = ("train", "aggregate", "predict", "score")

# Ground truth shared by every organization: y = 1 when 1.5*x1 - x2 + 0.3 > 0 (with label noise).
_TRUE_WEIGHTS = (1.5, -1.0)
_TRUE_BIAS = 0.3
_LABEL_NOISE = 0.05


def function_inputs(name: str) -> dict[str, dict[str, Any]]:
    """Wire shape of a function's inputs, keyed by identifier."""
    return {k: dict(v) for k, v in _INPUTS[_known(name)].items()}


def function_outputs(name: str) -> dict[str, dict[str, Any]]:
    """Wire shape of a function's outputs, keyed by identifier."""
    return {k: dict(v) for k, v in _OUTPUTS[_known(name)].items()}


def _known(name: str) -> str:
    """``name`` if it is one of the example functions, else a ValueError listing them."""
    if name not in FUNCTION_NAMES:
        raise ValueError(f"unknown example function {name!r}; expected one of {FUNCTION_NAMES}")
    return name


def opener_path() -> Path:
    """The CSV opener every example dataset uses."""
    return ASSETS_DIR / "opener.py"


def dockerfile(name: str) -> str:
    """The Dockerfile of a function archive: its ENTRYPOINT names the function to run."""
    return (
        "FROM python:3.11-slim\n"
        "RUN pip install substratools==1.0.0\n"
        "COPY function.py .\n"
        f'ENTRYPOINT ["python3", "function.py", "--function-name", "{_known(name)}"]\n'
    )


def build_function_archive(name: str, dest_dir: Path) -> Path:
    """Write ``<dest_dir>/<name>.tar.gz`` (Dockerfile + function.py); same name, same bytes."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    entries = {"Dockerfile": dockerfile(name).encode(), "function.py": (ASSETS_DIR / "function.py").read_bytes()}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry_name in sorted(entries):
            info = tarfile.TarInfo(entry_name)
            info.size = len(entries[entry_name])
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            archive.addfile(info, io.BytesIO(entries[entry_name]))
    packed = io.BytesIO()
    # GzipFile (not gzip.compress) writes the same header on every Python version: no name, mtime 0.
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=0) as zipped:
        zipped.write(raw.getvalue())
    target = dest_dir / f"{name}.tar.gz"
    target.write_bytes(packed.getvalue())
    return target


def write_description(dest: Path, title: str) -> Path:
    """A small markdown description file."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(f"# {title}\n\nAn example asset of substra-flows.\n", encoding="utf-8")
    return dest


def generate_samples(
    org_index: int,
    dest_dir: Path,
    *,
    day: int = 0,
    split: str = "train",
    n_samples: int = 2,
    rows_per_sample: int = 40,
    seed: int = 0,
) -> list[Path]:
    """Write ``n_samples`` folders of ``data.csv``; same arguments, same bytes.

    All organizations share one labelling rule; each sees features shifted its own way (non-IID
    but learnable). Each day draws new rows.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if n_samples < 0 or rows_per_sample < 1:
        raise ValueError(f"need n_samples >= 0 and rows_per_sample >= 1, got {n_samples!r} and {rows_per_sample!r}")
    dest_dir = Path(dest_dir)
    rng = random.Random(f"{seed}/{org_index}/{day}/{split}")
    shift = (0.6 * math.cos(org_index), 0.6 * math.sin(org_index))
    folders = []
    for index in range(n_samples):
        folder = dest_dir / f"org{org_index}-day{day}-{split}-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["x1", "x2", "y"])
        for _ in range(rows_per_sample):
            x1, x2 = rng.gauss(shift[0], 1.0), rng.gauss(shift[1], 1.0)
            label = int(_TRUE_WEIGHTS[0] * x1 + _TRUE_WEIGHTS[1] * x2 + _TRUE_BIAS > 0)
            if rng.random() < _LABEL_NOISE:
                label = 1 - label
            writer.writerow([f"{x1:.6f}", f"{x2:.6f}", label])
        (folder / "data.csv").write_bytes(buffer.getvalue().encode("ascii"))  # bytes: no newline translation
        folders.append(folder)
    return folders


def _field(org: Any, name: str) -> Any:
    """An organization's field, whether it is given as a mapping or as an object with attributes."""
    return org[name] if isinstance(org, Mapping) else getattr(org, name)


def _check_plan_arguments(function_keys: Mapping[str, str], orgs: Sequence[Any], rounds: int) -> None:
    """Fail early, with a readable message, on arguments that would build an unusable plan."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds!r}")
    if not orgs:
        raise ValueError("orgs must name at least one organization")
    missing = [n for n in _PLAN_FUNCTIONS if not function_keys.get(n)]
    if missing:
        raise ValueError(f"function_keys lacks a key for: {', '.join(missing)}")
    ids = [_field(o, "organization_id") for o in orgs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"orgs name an organization twice: {ids}")
    for org in orgs:
        for samples in ("train_sample_keys", "test_sample_keys"):
            if not _field(org, samples):
                raise ValueError(f"organization {_field(org, 'organization_id')!r} has no {samples}")


def _task_id(compute_plan_key: str | None, task_name: str) -> str:
    """The task's key under the plan key, or its name when the plan has no key yet (the submission
    then derives the same key, :func:`task_key`, under whichever attempt's key it submits)."""
    return task_key(compute_plan_key, task_name) if compute_plan_key else task_name


def _evaluation_tasks(
    compute_plan_key: str | None,
    orgs: Sequence[Any],
    model_task: str,
    round_idx: int,
    function_keys: Mapping[str, str],
    shared: dict[str, Any],
) -> list[dict[str, Any]]:
    """Predict then score on every organization's test samples with the model of ``model_task``."""
    tasks = []
    for org in orgs:
        org_id = _field(org, "organization_id")
        data = [{"identifier": "opener", "asset_key": _field(org, "dataset_key")}]
        data += [{"identifier": "datasamples", "asset_key": k} for k in _field(org, "test_sample_keys")]
        predict_key = _task_id(compute_plan_key, f"predict/{round_idx}/{org_id}")
        tasks.append(
            {
                "task_id": predict_key,
                "function_key": function_keys["predict"],
                "worker": org_id,
                "inputs": data
                + [{"identifier": "model", "parent_task_key": model_task, "parent_task_output_identifier": "model"}],
                "outputs": {"predictions": {"permissions": dict(shared), "is_transient": False}},
                "metadata": {"round_idx": str(round_idx), "step": "predict"},
            }
        )
        tasks.append(
            {
                "task_id": _task_id(compute_plan_key, f"score/{round_idx}/{org_id}"),
                "function_key": function_keys["score"],
                "worker": org_id,
                "inputs": data
                + [
                    {
                        "identifier": "predictions",
                        "parent_task_key": predict_key,
                        "parent_task_output_identifier": "predictions",
                    }
                ],
                "outputs": {
                    "performance": {"permissions": {"public": True, "authorized_ids": []}, "is_transient": False}
                },
                "metadata": {"round_idx": str(round_idx), "step": "score"},
            }
        )
    return tasks


def task_key(compute_plan_key: str, task_name: str) -> str:
    """Deterministic task key: the same plan key and task name always give the same key."""
    return str(uuid.uuid5(uuid.UUID(compute_plan_key), task_name))


def build_federated_plan(
    *,
    compute_plan_key: str | None = None,
    name: str,
    function_keys: Mapping[str, str],
    orgs: Sequence[Any],
    rounds: int,
    tag: str | None = None,
    metadata: Mapping[str, str] | None = None,
    evaluate_every_round: bool = False,
) -> dict[str, Any]:
    """A ComputePlanSpec dict: ``rounds`` of train on every organization + aggregate on the first,
    then predict and score on every organization's test samples with the last aggregate (after
    every round's aggregate with ``evaluate_every_round``, for learning curves).

    Tasks are named ``train/<round>/<org>``, ``aggregate/<round>``, ``predict/<round>/<org>`` and
    ``score/<round>/<org>``. With ``compute_plan_key`` the spec has that key and task keys
    ``task_key(compute_plan_key, name)``; without, it has no key and the names are its task ids,
    for a submission that picks the key (a run's attempt): the task keys are then
    ``task_key(<the submitted key>, name)``."""
    _check_plan_arguments(function_keys, orgs, rounds)
    org_ids = [_field(o, "organization_id") for o in orgs]
    shared = {"public": False, "authorized_ids": org_ids}

    def model_output(identifier: str = "model") -> dict[str, Any]:
        return {identifier: {"permissions": dict(shared), "is_transient": False}}

    def data_inputs(org: Any, samples: str) -> list[dict[str, Any]]:
        refs = [{"identifier": "opener", "asset_key": _field(org, "dataset_key")}]
        return refs + [{"identifier": "datasamples", "asset_key": k} for k in _field(org, samples)]

    def parent(key: str, identifier: str, output: str = "model") -> dict[str, Any]:
        return {"identifier": identifier, "parent_task_key": key, "parent_task_output_identifier": output}

    tasks: list[dict[str, Any]] = []
    previous_aggregate: str | None = None
    for round_idx in range(rounds):
        train_keys = []
        for org in orgs:
            key = _task_id(compute_plan_key, f"train/{round_idx}/{_field(org, 'organization_id')}")
            inputs = data_inputs(org, "train_sample_keys")
            if previous_aggregate:
                inputs.append(parent(previous_aggregate, "model"))
            tasks.append(
                {
                    "task_id": key,
                    "function_key": function_keys["train"],
                    "worker": _field(org, "organization_id"),
                    "inputs": inputs,
                    "outputs": model_output(),
                    "metadata": {"round_idx": str(round_idx), "step": "train"},
                }
            )
            train_keys.append(key)
        aggregate_key = _task_id(compute_plan_key, f"aggregate/{round_idx}")
        tasks.append(
            {
                "task_id": aggregate_key,
                "function_key": function_keys["aggregate"],
                "worker": org_ids[0],
                "inputs": [parent(k, "models") for k in train_keys],
                "outputs": model_output(),
                "metadata": {"round_idx": str(round_idx), "step": "aggregate"},
            }
        )
        previous_aggregate = aggregate_key
        if evaluate_every_round or round_idx == rounds - 1:
            tasks.extend(_evaluation_tasks(compute_plan_key, orgs, aggregate_key, round_idx, function_keys, shared))
    spec: dict[str, Any] = {"name": name, "tasks": tasks}
    if compute_plan_key:
        spec["key"] = compute_plan_key
    if tag:
        spec["tag"] = tag
    if metadata:
        spec["metadata"] = dict(metadata)
    return spec
