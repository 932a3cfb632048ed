"""Building blocks of the 0.x cassette tests: specs of 0.x assets, in the 0.x dict shapes.

Every module passes its own ``variant``: its openers, archives and sample contents differ from
the other modules' (the 0.x AlreadyExists rules compare files, and modules recorded in one session
share one node).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from examples import assets
from examples import legacy as legacy_assets
from substra_flows.legacy import Client

PUBLIC = {"public": True, "authorized_ids": []}


def algo_data(kind: str, workdir: Path, variant: str, name: str | None = None) -> dict[str, Any]:
    """``add_algo`` / ``add_aggregate_algo`` / ``add_composite_algo`` data (kind: a script of examples.legacy)."""
    folder = workdir / variant / kind
    return {
        "name": name or f"{variant} {kind.replace('_', ' ')}",
        "description": str(legacy_assets.write_description(folder / "description.md", f"{variant} {kind}")),
        "file": str(legacy_assets.build_archive(kind, folder, variant)),
        "permissions": dict(PUBLIC),
    }


def objective_data(
    workdir: Path, variant: str, dataset_key: str | None = None, sample_keys: list[str] | None = None
) -> dict[str, Any]:
    """``add_objective`` data."""
    folder = workdir / variant / "objective"
    data: dict[str, Any] = {
        "name": f"{variant} accuracy",
        "description": str(legacy_assets.write_description(folder / "description.md", f"{variant} objective")),
        "metrics_name": "accuracy",
        "metrics": str(legacy_assets.build_archive("metrics", folder, variant)),
        "permissions": dict(PUBLIC),
    }
    if dataset_key:
        data["test_data_manager_key"] = dataset_key
        data["test_data_sample_keys"] = sample_keys or []
    return data


def dataset_data(workdir: Path, variant: str, name: str, authorized_ids: list[str], **extra: Any) -> dict[str, Any]:
    """``add_dataset`` data with an opener of this variant."""
    folder = workdir / variant / name.replace(" ", "-")
    return {
        "name": name,
        "description": str(legacy_assets.write_description(folder / "description.md", name)),
        "type": "csv",
        "data_opener": str(legacy_assets.opener_copy(folder / "opener.py", f"{variant} {name}")),
        "permissions": {"public": False, "authorized_ids": list(authorized_ids)},
        **extra,
    }


def samples(workdir: Path, variant: str, org_index: int, split: str, count: int, seed: int = 0) -> list[str]:
    """Sample folders whose content belongs to this variant."""
    folder = workdir / variant / f"samples-{org_index}-{split}-{seed}"
    shift = sum(map(ord, variant)) + seed
    return [str(p) for p in assets.generate_samples(org_index, folder, split=split, n_samples=count, seed=shift)]


def register_org(client: Client, workdir: Path, variant: str, org_index: int, shared_with: list[str]) -> dict[str, Any]:
    """One organization's dataset, two train samples and one test-only sample."""
    dataset = client.add_dataset(dataset_data(workdir, variant, f"{variant} data {org_index}", shared_with))
    train = client.add_data_samples(
        {"paths": samples(workdir, variant, org_index, "train", 2), "data_manager_keys": [dataset["key"]]}
    )
    test = client.add_data_sample(
        {
            "path": samples(workdir, variant, org_index, "test", 1)[0],
            "data_manager_keys": [dataset["key"]],
            "test_only": True,
        }
    )
    return {
        "dataset": dataset["key"],
        "train": sorted(s["key"] for s in train),
        "test": [test["key"]],
    }
