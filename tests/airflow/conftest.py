"""Fixtures of the Airflow provider tests.

Airflow reads its configuration when first imported, so this module points it at a throw-away
AIRFLOW_HOME before anything imports ``airflow`` (never ~/airflow), with the example DAGs folder
as DAGS_FOLDER and no example DAGs. The metadata database is migrated once per session, and only
by the tests that need it (``airflow_db``).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.airflow.run_days import DAGS_FOLDER, local_airflow_environment  # noqa: F401  (DAGS_FOLDER: re-exported)

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="substra-flows-airflow-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
AIRFLOW_ENV = local_airflow_environment(_AIRFLOW_HOME, AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR="False")
os.environ.update(AIRFLOW_ENV)

from tests.airflow.fakes import FakeSubstra, FakeTI, install  # noqa: E402  (after the Airflow env is set)

#: the connection every unit test uses: a token, no network (the fake steps never send requests)
UNIT_TOKEN = "unit-test-token-5b0c1f9e8d7a"
UNIT_CONN = {
    "conn_type": "substra",
    "host": "http://substra.invalid/org-1",
    "password": UNIT_TOKEN,
    "extra": {"frontend_url": "https://substra-frontend.invalid/"},
}


def conn_env(conn_id: str, conn: dict[str, Any]) -> tuple[str, str]:
    """The environment variable that defines an Airflow connection as JSON."""
    return f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn)


@pytest.fixture()
def unit_conn(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``substra_default`` as an offline connection with a frontend URL."""
    monkeypatch.setenv(*conn_env("substra_default", UNIT_CONN))
    return UNIT_CONN


@pytest.fixture()
def fake_substra(monkeypatch: pytest.MonkeyPatch, unit_conn: dict[str, Any]) -> Iterator[FakeSubstra]:
    """Replace the steps every face module calls by an in-memory Substra (the real wait machine)."""
    fake = FakeSubstra()
    install(monkeypatch, fake)
    yield fake


@pytest.fixture()
def context() -> dict[str, Any]:
    """A task context with just what the operators read (ti, ds, run_id)."""
    ti = FakeTI()
    return {"ti": ti, "ds": "2025-01-01", "run_id": ti.run_id, "dag_run": None}


@pytest.fixture(autouse=True)
def _fresh_shared_clients() -> Iterator[None]:
    """Clients shared by triggers never outlive a test (nor a cassette)."""
    yield
    from airflow_provider.hooks.substra import clear_shared_clients

    clear_shared_clients()


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrate the session's Airflow metadata database once (SQLite in the temporary AIRFLOW_HOME)."""
    airflow = Path(sys.executable).with_name("airflow")
    command = [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]
    done = subprocess.run(
        [*command, "db", "migrate"], env={**os.environ, **AIRFLOW_ENV}, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout}\n{done.stderr}")
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def dag_test(airflow_db: Path) -> Iterator[Path]:
    """What ``dag.test()`` needs: the migrated database, and one in-process execution API for the session.

    Airflow builds a fresh in-process execution API (a Cadwyn app, several seconds of route
    generation on this machine) for every task it runs in ``dag.test()``; sharing one keeps a DAG
    run at seconds per task instead of five, and keeps the API's lifespan (and its service
    registry) alive between tasks.
    """
    import functools

    import airflow.sdk.execution_time.supervisor as supervisor

    patch = pytest.MonkeyPatch()
    patch.setattr(supervisor, "in_process_api_server", functools.lru_cache(maxsize=1)(supervisor.in_process_api_server))
    patch.setenv("SUBSTRA_FLOWS_LEDGER_DIR", str(airflow_db / "ledgers"))
    yield airflow_db
    patch.undo()


def sync_dag(dag: Any) -> None:
    """Serialise a DAG into the session's database (``dag.test()`` runs only serialised DAGs)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def xcoms_of(run: Any) -> dict[tuple[str, str], Any]:
    """Every XCom of a DAG run, by (task id, key)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id)).all()
        return {(row.task_id, row.key): XComModel.deserialize_value(row) for row in rows}


def task_states(run: Any) -> dict[str, str]:
    """Final state of every task of a DAG run."""
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in run.get_task_instances()}
