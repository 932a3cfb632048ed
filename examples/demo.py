"""The main job: a local 2-organization Substra node trains a federated model, driven by SubstraClient.

    scripts/demo            (or: .venv/bin/python -m examples.demo --rounds 3)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from examples import assets
from substra_flows import SubstraClient
from substra_flows.local_node import LocalNode

FUNCTIONS = ("train", "aggregate", "predict", "score")


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def register_organization(client: SubstraClient, index: int, org_ids: list[str], workdir: Path) -> dict[str, Any]:
    """One dataset per organization, with its train and test samples uploaded."""
    dataset_key = client.add_dataset(
        {
            "name": f"demo dataset org-{index}",
            "data_opener": assets.opener_path(),
            "description": assets.write_description(workdir / f"dataset-{index}.md", f"org-{index} data"),
            "permissions": {"public": False, "authorized_ids": org_ids},
            "logs_permission": {"public": False, "authorized_ids": org_ids},
        }
    )
    train = assets.generate_samples(index, workdir / f"org{index}-train", split="train", n_samples=2)
    test = assets.generate_samples(index, workdir / f"org{index}-test", split="test", n_samples=1)
    train_keys = client.add_data_samples({"paths": train, "data_manager_keys": [dataset_key]})
    test_keys = client.add_data_samples({"paths": test, "data_manager_keys": [dataset_key]})
    return {
        "organization_id": client.organization_info().organization_id,
        "dataset_key": dataset_key,
        "train_sample_keys": train_keys,
        "test_sample_keys": test_keys,
    }


def register_functions(client: SubstraClient, workdir: Path) -> dict[str, str]:
    """The federated logistic regression's functions, shared with every organization."""
    keys = {}
    for name in FUNCTIONS:
        keys[name] = client.add_function(
            {
                "name": f"demo {name}",
                "file": assets.build_function_archive(name, workdir),
                "description": assets.write_description(workdir / f"{name}.md", name),
                "permissions": {"public": True, "authorized_ids": []},
                "inputs": [{"identifier": i, **v} for i, v in assets.function_inputs(name).items()],
                "outputs": [{"identifier": i, **v} for i, v in assets.function_outputs(name).items()],
            }
        )
    return keys


def print_table(rows: list[dict[str, Any]]) -> None:
    """Performances as an aligned text table."""
    header = ("worker", "round", "rank", "metric", "value")
    lines = [
        (r["worker"], str(r["round_idx"]), str(r["task_rank"]), r["identifier"], f"{r['performance']:.4f}")
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    """Start the node, run one federated plan, print its performances."""
    parser = argparse.ArgumentParser(description="substra-flows demo")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="substra-flows-demo-") as tmp, LocalNode(organizations=2) as node:
        workdir = Path(tmp)
        _step(f"local Substra node up on {node.url} with {len(node.organizations)} organizations")
        clients = [SubstraClient(url=o.url, token=o.token) for o in node.organizations]
        org_ids = [o.organization_id for o in node.organizations]
        orgs = [register_organization(c, i, org_ids, workdir) for i, c in enumerate(clients, start=1)]
        _step("datasets and data samples registered on both organizations")
        function_keys = register_functions(clients[0], workdir)
        _step(f"functions registered: {', '.join(function_keys)}")
        spec = assets.build_federated_plan(
            compute_plan_key=str(uuid.uuid4()),
            name="demo federated logistic regression",
            function_keys=function_keys,
            orgs=orgs,
            rounds=args.rounds,
        )
        plan = clients[0].add_compute_plan(spec)
        _step(f"compute plan {plan.key} submitted: {len(spec['tasks'])} tasks, {args.rounds} rounds")
        done = clients[0].wait_compute_plan(plan.key, timeout=600, polling_period=0.5)
        _step(f"compute plan {done.status.value} in {done.duration} s")
        rows = clients[0].get_performances(plan.key).rows()
        print()
        print_table(rows)
        print()
    _step(f"finished in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
