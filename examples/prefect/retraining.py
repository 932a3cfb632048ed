"""A scheduled federated retraining pipeline, as a Prefect flow over substra-flows.

Each run is one "day": every organization extracts that day's data; the datasets and functions are
registered (found, not duplicated, from the second day on); a federated plan is trained and
evaluated; the new plan is ranked against the previous days' on a leaderboard, and its final model
is promoted (downloaded to ``models/<day>/``) when it beats them.

Serve it on a schedule (the organizations' credentials are saved blocks, passed by name):

    .venv/bin/python -m examples.prefect.retraining --cron "0 3 * * *" --credentials org-1 org-2

or call it directly, e.g. ``retraining(organizations=[block1, block2], day=1)``. Each day's samples
and ledgers go under ``workdir`` and promoted models under ``models_dir`` (default: a
``substra-retraining`` folder in the system's temporary directory, never the current folder;
``--workdir`` and ``--models-dir`` set them for a served deployment). Serving also creates, once, the
automation that marks Crashed a run whose process died (see ``substra_flows.prefect.crashes``).
"""

import argparse
import datetime as dt
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from examples import assets
from substra_flows.prefect import (
    SubstraCredentials,
    add_data_samples,
    add_function,
    download_model,
    ensure_zombie_automation,
    evaluate_quality_gate,
    get_leaderboard,
    get_organization_info,
    register_dataset,
    resolve_credentials,
    run_compute_plan,
)
from substra_flows.prefect.artifacts import artifact_key
from substra_flows.steps import derive_key

FUNCTIONS = ("train", "aggregate", "predict", "score")
METRIC = "performance"  # output identifier of the example score function
DEFAULT_WORKDIR = str(Path(tempfile.gettempdir()) / "substra-retraining" / "prefect")


@task(cache_policy=NO_CACHE)
def extract_day_samples(org_index: int, day: int, workdir: str, n_samples: int = 2) -> dict[str, list[str]]:
    """ETL stand-in: write one organization's train and test sample folders for ``day``."""
    base = Path(workdir) / f"day-{day}" / f"org-{org_index}"
    train = assets.generate_samples(org_index, base / "train", day=day, split="train", n_samples=n_samples)
    test = assets.generate_samples(org_index, base / "test", day=day, split="test", n_samples=1)
    return {"train": [str(p) for p in train], "test": [str(p) for p in test]}


@task(cache_policy=NO_CACHE)
def build_function_files(workdir: str) -> dict[str, dict[str, str]]:
    """Archive and description of each function; same bytes every day, so they are found, not re-created."""
    folder = Path(workdir) / "functions"
    return {
        name: {
            "archive": str(assets.build_function_archive(name, folder)),
            "description": str(assets.write_description(folder / f"{name}.md", f"federated {name}")),
        }
        for name in FUNCTIONS
    }


def _default_day() -> int:
    """The day a scheduled run is for: its scheduled date, as days since 1970-01-01."""
    scheduled = flow_run.scheduled_start_time or dt.datetime.now(dt.timezone.utc)
    return (scheduled.date() - dt.date(1970, 1, 1)).days


def _register_organization(
    credentials: SubstraCredentials,
    index: int,
    samples: dict[str, list[str]],
    org_ids: list[str],
    pipeline: str,
    workdir: Path,
) -> dict[str, Any]:
    """Register (or find) the organization's dataset with that day's samples; return its plan inputs."""
    shared = {"public": False, "authorized_ids": org_ids}
    ledger_dir = str(workdir / "ledgers")
    # train and test samples go in separate calls: a server need not return keys in request order
    registered = register_dataset(
        credentials,
        name=f"{pipeline} org-{index}",
        opener=str(assets.opener_path()),
        sample_paths=samples["train"],
        description=str(assets.write_description(workdir / f"dataset-org-{index}.md", f"{pipeline} org-{index}")),
        permissions=shared,
        logs_permission=shared,
        ledger_dir=ledger_dir,
    )
    test_keys = add_data_samples(credentials, registered["dataset_key"], samples["test"], ledger_dir=ledger_dir)
    return {
        "organization_id": org_ids[index - 1],
        "dataset_key": registered["dataset_key"],
        "dataset_created": registered["created"],
        "train_sample_keys": registered["sample_keys"],
        "test_sample_keys": test_keys,
    }


def _register_functions(
    credentials: SubstraCredentials, files: dict[str, dict[str, str]], pipeline: str
) -> dict[str, Any]:
    """Register (or find) the federated learning functions, shared with every organization."""
    found = {
        name: add_function(
            credentials,
            name=f"{pipeline} {name}",
            archive=files[name]["archive"],
            description=files[name]["description"],
            inputs=assets.function_inputs(name),
            outputs=assets.function_outputs(name),
            permissions={"public": True, "authorized_ids": []},
        )
        for name in FUNCTIONS
    }
    return {
        "keys": {n: r["function_key"] for n, r in found.items()},
        "created": [n for n, r in found.items() if r["created"]],
    }


@flow(name="substra-federated-retraining")
def retraining(
    organizations: list[Union[SubstraCredentials, str]],
    day: Optional[int] = None,
    pipeline: str = "retraining",
    workdir: str = DEFAULT_WORKDIR,
    models_dir: Optional[str] = None,
    rounds: int = 1,
    evaluate_every_round: bool = False,
    n_samples: int = 2,
    min_improvement: float = 0.0,
    wait_timeout: Optional[float] = 3600.0,
    polling_period: float = 5.0,
) -> dict[str, Any]:
    """One day of federated retraining: ETL, register, train, evaluate, rank, and promote if better.

    ``organizations`` are credentials blocks (or saved block names), the first one submitting the plan;
    ``day`` defaults to the scheduled date. The plan's run key is derived from the pipeline and the day,
    so a retried or repeated run for the same day finds that day's plan instead of training again, or
    trains again in a new attempt when that plan failed or was cancelled. ``models_dir`` defaults to
    ``<workdir>/models``. Returns the day's plan key (the attempt that ran) and attempt number,
    performances, gate decision and the promoted model's path (None when the gate kept the previous
    model).
    """
    logger = get_run_logger()
    orgs = [resolve_credentials(c) for c in organizations]
    day = _default_day() if day is None else day
    work = Path(workdir).resolve() / pipeline
    models = Path(models_dir).resolve() if models_dir else Path(workdir).resolve() / "models"
    org_ids = [get_organization_info(c)["organization_id"] for c in orgs]

    samples = [extract_day_samples(i, day, str(work), n_samples) for i in range(1, len(orgs) + 1)]
    datasets = [
        _register_organization(c, i, s, org_ids, pipeline, work)
        for i, (c, s) in enumerate(zip(orgs, samples, strict=True), 1)
    ]
    functions = _register_functions(orgs[0], build_function_files(str(work)), pipeline)

    # the day's run key; its tasks are named, so that each attempt gets task keys of its own
    spec = assets.build_federated_plan(
        name=f"{pipeline} day {day}",
        function_keys=functions["keys"],
        orgs=datasets,
        rounds=rounds,
        tag=pipeline,
        metadata={"pipeline": pipeline, "day": str(day)},
        evaluate_every_round=evaluate_every_round,
    )
    spec["key"] = derive_key("prefect-retraining", pipeline, str(day))
    outcome = run_compute_plan(
        orgs[0], spec, wait_timeout=wait_timeout, polling_period=polling_period, artifact_key_prefix=pipeline
    )
    plan_key = outcome["compute_plan_key"]

    board = get_leaderboard(
        orgs[0], metadata_filters=[{"key": "pipeline", "type": "is", "value": pipeline}], identifier=METRIC
    )
    decision = evaluate_quality_gate(plan_key, board, min_improvement=min_improvement)
    model_path = None
    if decision["promote"]:
        final_aggregate = assets.task_key(plan_key, f"aggregate/{rounds - 1}")
        model_path = download_model(orgs[0], str(models / str(day)), task_key=final_aggregate)
    logger.info("day %s: %s", day, decision["reason"])
    create_markdown_artifact(
        markdown=_day_report(day, plan_key, decision, model_path, board),
        key=artifact_key(pipeline, "day-report"),
        description=f"{pipeline}: day {day}",
    )
    return {
        "day": day,
        "compute_plan_key": plan_key,
        "attempt": outcome["attempt"],
        "plan_created": outcome["created"],
        "datasets_created": [d["dataset_created"] for d in datasets],
        "functions_created": functions["created"],
        "performances": outcome["performances"],
        "gate": decision,
        "model_path": model_path,
    }


def _day_report(
    day: int, plan_key: str, decision: dict[str, Any], model_path: Optional[str], board: list[dict[str, Any]]
) -> str:
    """Markdown: the gate's verdict, the promoted model, and the leaderboard."""
    verdict = "promoted" if decision["promote"] else "not promoted"
    lines = [f"# Day {day}: model {verdict}", "", decision["reason"], ""]
    if model_path:
        lines += [f"Promoted model: `{model_path}`", ""]
    lines += ["| rank | plan | score |", "|---|---|---|"]
    for rank, entry in enumerate(board, 1):
        mark = " (today)" if entry["compute_plan_key"] == plan_key else ""
        lines.append(f"| {rank} | {entry['name']}{mark} | {entry['score']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> None:
    """Serve the flow on a cron schedule, with credentials taken from saved blocks."""
    parser = argparse.ArgumentParser(description="Serve the federated retraining flow on a schedule")
    parser.add_argument("--cron", default="0 3 * * *", help="cron schedule (default: every day at 03:00)")
    parser.add_argument("--credentials", nargs="+", default=["substra-org-1", "substra-org-2"], help="block names")
    parser.add_argument("--name", default="daily-retraining", help="deployment name")
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR, help=f"samples and ledgers (default: {DEFAULT_WORKDIR})")
    parser.add_argument("--models-dir", default=None, help="promoted models (default: <workdir>/models)")
    args = parser.parse_args(argv)
    parameters: dict[str, Any] = {"organizations": args.credentials, "workdir": str(Path(args.workdir).resolve())}
    if args.models_dir:
        parameters["models_dir"] = str(Path(args.models_dir).resolve())
    try:  # a run whose process dies ends Crashed (its plan keeps running for a retry), not Running forever
        ensure_zombie_automation()
    except ValueError as off:
        print(f"zombie flow runs will not be detected: {off}")
    retraining.serve(name=args.name, cron=args.cron, parameters=parameters)


if __name__ == "__main__":
    main()
