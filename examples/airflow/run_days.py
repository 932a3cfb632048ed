"""Run the example retraining DAG with ``dag.test()`` for given logical dates; print one JSON result per day.

    python -m examples.airflow.run_days 2025-01-02 2025-01-03 2025-01-04

Used by the demo (``scripts/demo``) in a child process: Airflow reads its configuration when first
imported, so the caller sets AIRFLOW_HOME, the DAGs folder, the ``AIRFLOW_CONN_*`` connections and
the ``SUBSTRA_RETRAINING_*`` settings in this process's environment before it starts.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULT_PREFIX = "DAG-RESULT "
DAGS_FOLDER = Path(__file__).resolve().parent / "dags"


def local_airflow_environment(home: Path, **extra: str) -> dict[str, str]:
    """Environment of a throw-away Airflow (never ~/airflow): SQLite in ``home``, the example DAGs
    folder (``dag.test()`` runs only DAGs found there), no example DAGs. Airflow reads it when first
    imported, so it must be in place before that."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAG_DISCOVERY_SAFE_MODE": "False",
        **extra,
    }


def migrate_database() -> None:
    """``airflow db migrate`` on the (SQLite) database of this AIRFLOW_HOME."""
    airflow = Path(sys.executable).with_name("airflow")
    command = [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]
    done = subprocess.run([*command, "db", "migrate"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")


def load_dag() -> Any:
    """Parse the example DAG file and serialise it into the database (``dag.test()`` runs serialised DAGs)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RuntimeError(f"the example DAG does not import: {bag.import_errors}")
    dag = bag.get_dag("substra_retraining")
    sync_bag_to_db(bag, "dags-folder", None)
    return dag


def xcoms(run: Any) -> dict[tuple[str, str], Any]:
    """Every XCom of a DAG run, by (task id, key)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id)).all()
        return {(row.task_id, row.key): XComModel.deserialize_value(row) for row in rows}


def main(argv: list[str] | None = None) -> int:
    """Migrate, load, and test the DAG once per date; exit non-zero if a run fails."""
    import pendulum
    from airflow.sdk.execution_time import supervisor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dates", nargs="+", help="logical dates, YYYY-MM-DD (a date given twice is run twice)")
    args = parser.parse_args(argv)
    # One in-process execution API for all tasks of all runs (Airflow would build one per task).
    supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)
    migrate_database()
    dag = load_dag()
    failed = 0
    for date in args.dates:
        logical_date = pendulum.parse(date)
        # run_after fixed by the date, so the same date is the same DAG run (a rerun clears and repeats it)
        run = dag.test(logical_date=logical_date, run_after=logical_date.add(days=1))
        state = str(getattr(run.state, "value", run.state))
        values = xcoms(run)
        result = {
            "date": date,
            "state": state,
            "compute_plan_key": values.get(("add_compute_plan", "return_value")),
            "performances": values.get(("get_performances", "return_value")) or [],
            "gate": values.get(("quality_gate", "return_value")) or {},
            "promoted_model": values.get(("promote", "return_value")),
            "task_states": {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in run.get_task_instances()},
        }
        print(RESULT_PREFIX + json.dumps(result, default=str), flush=True)
        failed += state != "success"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
