"""Fault campaign through the orchestrator faces: the example Airflow DAG and the example Prefect flow.

    .venv/bin/python -m benchmarks.fault_campaign_faces [--faces airflow prefect] [--rate 0.2]
                                                       [--seeds 1] [--kinds 429 ... mixed]

The same judge as ``benchmarks/fault_campaign.py`` (which drives the steps through the client), but
the step sequence is one day of the retraining pipeline as users run it: the DAG
``examples/airflow/dags/substra_retraining.py`` with ``dag.test()`` (deferrable wait, Airflow's own
task retries), or the flow ``examples/prefect/retraining.py`` (Prefect's task retries on transient
errors). Each (face, kind, seed) gets a fresh 2-organization local node injecting that fault into
``--rate`` of the requests; a failed DAG run is run again (the same DAG run, cleared), a failed flow
run is followed by a new one for the same day, with the faults on, then once without. The node's
assets must then equal those of a fault-free run of the same face EXACTLY, and every error that
stopped a run must name its cause. Prints one row per (face, kind, seed); exits 1 on any violation.

The tests ``tests/airflow/test_dag_under_faults.py`` and ``tests/prefect/test_flow_under_faults.py``
run one mixed-kind campaign each.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.fault_campaign import (
    CAMPAIGN_NODE_OPTIONS,
    MIXED,
    CampaignSettings,
    KindResult,
    baseline,
    count_all,
    format_table,
    run_kind,
)
from substra_flows.local_node import FAULT_KINDS, LocalNode

DAY = 1  # the day of data both pipelines run for
#: the faces' nodes: the client campaign's settings plus model export on, since both pipelines end with a
#: promote step that downloads the model (refused with ModelExportDisabled on a default deployment)
FACES_NODE_OPTIONS: dict[str, Any] = {**CAMPAIGN_NODE_OPTIONS, "model_export": True}


@contextlib.contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then restore what was there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- Airflow ----------------------------------------------------------------------------------------

#: parse-time settings of the example DAG for a campaign (set before the DAG file is parsed)
AIRFLOW_DAG_ENV = {
    "SUBSTRA_RETRAINING_CONN_IDS": "substra_org1,substra_org2",
    "SUBSTRA_RETRAINING_DEFERRABLE": "true",
    "SUBSTRA_RETRAINING_POLL_SECONDS": "0.3",
    "SUBSTRA_RETRAINING_RETRIES": "2",
    "SUBSTRA_RETRAINING_RETRY_DELAY": "1",
}


@contextlib.contextmanager
def recorded_task_errors() -> Iterator[list[str]]:
    """Collect the exception of every failed task try that ``dag.test()`` runs in the block.

    ``dag.test()`` runs each try in-process through ``supervisor.run_task_in_process``, whose result
    carries the exception; its task logs go to the console, not to files."""
    from airflow.sdk.execution_time import supervisor

    real = supervisor.run_task_in_process
    errors: list[str] = []

    def recording(ti: Any, task: Any, client: Any = None) -> Any:
        result = real(ti=ti, task=task, client=client)
        if result.error is not None:
            errors.append(f"{ti.task_id} (try {ti.try_number}): {type(result.error).__name__}: {result.error}")
        return result

    supervisor.run_task_in_process = recording
    try:
        yield errors
    finally:
        supervisor.run_task_in_process = real


class DagRunFailed(RuntimeError):
    """A DAG run ended in failure; the message holds the errors of its failed task tries."""


def airflow_pipeline(dag: Any) -> Callable[..., list[dict[str, Any]]]:
    """One day of the example DAG as a campaign pipeline: ``dag.test()`` against the node."""
    import pendulum

    from examples.airflow.run_days import xcoms

    logical_date = pendulum.datetime(2025, 1, 1, tz="UTC").add(days=DAY)

    def run(node: LocalNode, run_id: str, workdir: Path, settings: CampaignSettings) -> list[dict[str, Any]]:
        environ = {
            "SUBSTRA_RETRAINING_DATA_DIR": str(workdir / "data"),
            "SUBSTRA_RETRAINING_MODELS_DIR": str(workdir / "models"),
            "SUBSTRA_RETRAINING_ROUNDS": "1",
            "SUBSTRA_FLOWS_LEDGER_DIR": str(workdir / "ledgers"),
        }
        for i, org in enumerate(node.organizations, start=1):
            conn = {
                "conn_type": "substra",
                "host": org.url,
                "login": org.username,  # a password, so an expired token is survived by logging in again
                "password": org.password,
                "extra": settings.client_settings(),
            }
            environ[f"AIRFLOW_CONN_SUBSTRA_ORG{i}"] = json.dumps(conn)
        # the same run_id is the same DAG run: a rerun clears it and runs it again
        run_after = logical_date.add(seconds=zlib.crc32(run_id.encode()) % 86_400)
        with patched_environ(environ), recorded_task_errors() as errors:
            dag_run = dag.test(logical_date=logical_date, run_after=run_after)
        state = str(getattr(dag_run.state, "value", dag_run.state))
        if state != "success":
            raise DagRunFailed(f"DAG run {dag_run.run_id} {state}: " + "; ".join(errors or ["no task error recorded"]))
        return xcoms(dag_run).get(("get_performances", "return_value")) or []

    return run


# -- Prefect ----------------------------------------------------------------------------------------


def prefect_pipeline() -> Callable[..., list[dict[str, Any]]]:
    """One day of the example flow as a campaign pipeline (each attempt is a new flow run for the same day)."""
    from examples.prefect.retraining import retraining
    from substra_flows.prefect import SubstraCredentials

    def attempt(node: LocalNode, run_id: str, workdir: Path, settings: CampaignSettings) -> list[dict[str, Any]]:
        credentials = [
            SubstraCredentials(url=o.url, username=o.username, password=o.password, **settings.client_settings())
            for o in node.organizations
        ]
        state = retraining(
            credentials,
            day=DAY,
            pipeline="faults",
            workdir=str(workdir / "work"),
            models_dir=str(workdir / "models"),
            rounds=1,
            polling_period=settings.polling_period,
            wait_timeout=settings.wait_timeout,
            return_state=True,
        )
        outcome = state.result()  # raises the flow run's error when it failed
        return list(outcome["performances"])

    return attempt


# -- campaign ---------------------------------------------------------------------------------------


def run_face(
    face: str,
    pipeline: Callable[..., list[dict[str, Any]]],
    kinds: Sequence[str],
    seeds: Sequence[int],
    settings: CampaignSettings,
    workdir: Path,
    progress: Callable[[str], None] = print,
    node_options: dict[str, Any] | None = None,
) -> list[KindResult]:
    """Baseline on a fresh node, then every (kind, seed) on a fresh node of its own.

    ``node_options`` are the nodes' ``LocalNode`` settings (default :data:`FACES_NODE_OPTIONS`)."""
    options = FACES_NODE_OPTIONS if node_options is None else node_options
    with LocalNode(organizations=2, **options) as node:
        expected = baseline(node, settings, workdir / f"{face}-baseline", run=pipeline, count=count_all)
    progress(f"{face}: fault-free run: {expected}")
    results = []
    for seed in seeds:
        for kind in kinds:
            with LocalNode(organizations=2, **options) as node:
                result = run_kind(
                    node, kind, seed, settings, workdir / face, expected, run=pipeline, count=count_all, face=face
                )
            progress(f"{face}:{kind} seed {seed}: {result.outcome} ({result.seconds:.1f} s)")
            results.append(result)
    return results


def airflow_setup(home: Path) -> Any:
    """A throw-away Airflow home, migrated, with the example DAG parsed and serialised; returns the DAG.

    Must run before anything imports Airflow."""
    from examples.airflow.run_days import load_dag, local_airflow_environment, migrate_database

    os.environ.update(local_airflow_environment(home, AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING", **AIRFLOW_DAG_ENV))
    import functools

    from airflow.sdk.execution_time import supervisor

    # one in-process execution API for every task of every run (Airflow would build one per task)
    supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)
    migrate_database()
    return load_dag()


def main(argv: list[str] | None = None) -> int:
    """Run the campaign through the chosen faces; print the table; exit 1 on any broken guarantee."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", nargs="+", default=["airflow", "prefect"], choices=["airflow", "prefect"])
    parser.add_argument("--rate", type=float, default=0.2, help="share of requests hit by a fault (default 0.2)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="fault seeds (default 1)")
    parser.add_argument("--kinds", nargs="+", default=[*FAULT_KINDS, MIXED], help=f"kinds (default: all and {MIXED})")
    parser.add_argument("--reruns", type=int, default=3, help="reruns with faults on before a fault-free one")
    args = parser.parse_args(argv)
    unknown = set(args.kinds) - {*FAULT_KINDS, MIXED}
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}")
    settings = dataclasses.replace(CampaignSettings(), rate=args.rate, reruns=args.reruns)
    logging.basicConfig(level=logging.ERROR)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    started = time.monotonic()
    results: list[KindResult] = []
    with tempfile.TemporaryDirectory(prefix="fault-campaign-faces-") as tmp:
        workdir = Path(tmp)
        for face in args.faces:
            if face == "airflow":
                pipeline = airflow_pipeline(airflow_setup(workdir / "airflow-home"))
            else:
                pipeline = prefect_pipeline()
            results += run_face(
                face, pipeline, args.kinds, args.seeds, settings, workdir, lambda m: print(m, flush=True)
            )
    print()
    print(format_table(results, settings))
    print(f"campaign finished in {time.monotonic() - started:.0f} s")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
