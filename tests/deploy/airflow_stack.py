"""A real Airflow 3 deployment for the tests: scheduler, dag-processor, triggerer and api-server.

Configured as a small production install would be: LocalExecutor with a small parallelism, a SQLite
metadata database in a throw-away AIRFLOW_HOME, the example DAGs folder, password login on the
API server, one JWT secret shared by every component, serve-logs off (it would bind every
interface; the logs are read from the shared log folder). Everything listens on 127.0.0.1 on free
ports. The test talks to it through the REST API, as a user or the UI would.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from examples.airflow.run_days import DAGS_FOLDER, local_airflow_environment
from substra_flows.local_node import LocalNode
from tests.deploy.processes import Service, free_port, http_ok, wait_for

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "substra_retraining"
PLAN_TASK = "add_compute_plan"
USER = "deploy-admin"


def _airflow() -> list[str]:
    binary = Path(sys.executable).with_name("airflow")
    return [str(binary)] if binary.exists() else [sys.executable, "-m", "airflow"]


class AirflowDeployment:
    """The four Airflow components as processes, and a REST client for the API server."""

    def __init__(self, home: Path, node: LocalNode, data_dir: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(16)
        (home / "passwords.json").write_text(json.dumps({USER: self.password}))
        connections = {
            f"AIRFLOW_CONN_SUBSTRA_ORG{i}": json.dumps({"conn_type": "substra", "host": org.url, "password": org.token})
            for i, org in enumerate(node.organizations, start=1)
        }
        self.env = {
            **_base_environment(),
            **local_airflow_environment(home),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__SCHEDULER__STANDALONE_DAG_PROCESSOR": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__CAPACITY": "50",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # the example DAG: waits in the triggerer, polls every 2 s, no automatic retry (the tests clear)
            "SUBSTRA_RETRAINING_CONN_IDS": ",".join(f"substra_org{i}" for i in range(1, len(node.organizations) + 1)),
            "SUBSTRA_RETRAINING_DEFERRABLE": "true",
            "SUBSTRA_RETRAINING_POLL_SECONDS": "2",
            "SUBSTRA_RETRAINING_RETRIES": "0",
            "SUBSTRA_RETRAINING_DATA_DIR": str(data_dir),
            "SUBSTRA_RETRAINING_ROUNDS": "1",
            "SUBSTRA_FLOWS_LEDGER_DIR": str(home / "ledgers"),
            "TMPDIR": str(home / "tmp"),  # what the DAG writes by default stays in the test's folder
            **connections,
        }
        (home / "tmp").mkdir(exist_ok=True)
        logs = home / "service-logs"
        logs.mkdir(exist_ok=True)
        airflow = _airflow()

        def service(name: str, *args: str) -> Service:
            return Service(name, [*airflow, *args], self.env, logs, home)

        self.api_server = service("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.port))
        self.dag_processor = service("dag-processor", "dag-processor")
        self.scheduler = service("scheduler", "scheduler", "--skip-serve-logs")
        self.triggerer = service("triggerer", "triggerer", "--skip-serve-logs")
        self.services = [self.api_server, self.dag_processor, self.scheduler, self.triggerer]
        self._token: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self, timeout: float = 240.0) -> None:
        """Migrate the database, start the four components, wait until the example DAG is parsed."""
        done = subprocess.run(
            [*_airflow(), "db", "migrate"], env=self.env, cwd=self.home, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        for component in self.services:
            component.start()
        wait_for("the API server", lambda: http_ok(f"{self.url}/api/v2/monitor/health"), timeout, 2, self.services)
        wait_for(f"the DAG {DAG_ID} to be parsed", lambda: self._dag_parsed(), timeout, 2, self.services)

    def stop(self) -> None:
        """Stop every component (and what it forked), by the PID this test started."""
        for component in reversed(self.services):
            component.stop()

    def _dag_parsed(self) -> bool:
        answer = self.request("GET", f"/api/v2/dags/{DAG_ID}", check=False)
        return answer.status_code == 200

    # -- REST API ------------------------------------------------------------------------------------

    def token(self) -> str:
        """A JWT from the API server's password login (cached)."""
        if self._token is None:
            answer = requests.post(
                f"{self.url}/auth/token", json={"username": USER, "password": self.password}, timeout=30
            )
            answer.raise_for_status()
            self._token = answer.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, check: bool = True, **kwargs: Any) -> requests.Response:
        """One call to the REST API, authenticated."""
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        answer = requests.request(method, self.url + quote(path), headers=headers, timeout=60, **kwargs)
        if check and not answer.ok:
            raise AssertionError(f"{method} {path}: {answer.status_code} {answer.text[:1000]}")
        return answer

    def unpause(self) -> None:
        """Unpause the example DAG (paused at creation, as Airflow's default)."""
        self.request("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})

    def trigger(self, logical_date: str, run_id: str) -> str:
        """Trigger a run of the example DAG for ``logical_date`` (YYYY-MM-DD); return its run id."""
        body = {"dag_run_id": run_id, "logical_date": f"{logical_date}T00:00:00Z", "conf": {}}
        return str(self.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", json=body).json()["dag_run_id"])

    def dag_run(self, run_id: str) -> dict[str, Any]:
        """The DAG run as the API shows it."""
        return dict(self.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json())

    def dag_runs(self) -> list[dict[str, Any]]:
        """Every run of the example DAG, oldest first."""
        answer = self.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns", params={"order_by": "run_after"}).json()
        return list(answer["dag_runs"])

    def task_instance(self, run_id: str, task_id: str = PLAN_TASK) -> dict[str, Any]:
        """A task instance of a run (its state and try number)."""
        return dict(self.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}").json())

    def task_instances(self, run_id: str) -> dict[str, str | None]:
        """Every task instance's state in a run."""
        answer = self.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()
        return {ti["task_id"]: ti["state"] for ti in answer["task_instances"]}

    def mark(self, run_id: str, task_id: str, state: str) -> None:
        """Set a task instance's state, as "Mark failed" / "Mark success" in the UI does."""
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}"
        self.request("PATCH", path, json={"new_state": state})

    def clear(self, run_id: str, task_ids: list[str] | None = None) -> list[str]:
        """Clear task instances of a run (all of them, or ``task_ids`` and their downstream), as the UI does."""
        body: dict[str, Any] = {
            "dry_run": False,
            "dag_run_id": run_id,
            "only_failed": False,
            "reset_dag_runs": True,
            "include_downstream": True,
        }
        if task_ids is not None:
            body["task_ids"] = task_ids
        answer = self.request("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances", json=body).json()
        return [ti["task_id"] for ti in answer.get("task_instances", [])]

    def task_log(self, run_id: str, task_id: str, try_number: int) -> str:
        """The task instance's log for one try, as the UI shows it (including the triggerer's lines)."""
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        answer = self.request("GET", path, params={"full_content": "true"}, headers={"Accept": "application/json"})
        content = answer.json().get("content", "")
        if isinstance(content, list):
            return "\n".join(
                str(line.get("event", "")) + " " + json.dumps(line) if isinstance(line, dict) else str(line)
                for line in content
            )
        return str(content)

    # -- waits ---------------------------------------------------------------------------------------

    def wait_task_state(self, run_id: str, states: set[str], task_id: str = PLAN_TASK, timeout: float = 300.0) -> str:
        """Wait until a task instance is in one of ``states``; return it."""

        def probe() -> str | None:
            state = self.task_instance(run_id, task_id)["state"]
            return state if state in states else None

        return wait_for(f"{task_id} of {run_id} in {sorted(states)}", probe, timeout, 1.0, self.services)

    def wait_trigger_running(self, run_id: str, task_id: str = PLAN_TASK, timeout: float = 120.0) -> None:
        """Wait until the triggerer runs the trigger of the task instance's current try."""
        try_number = int(self.task_instance(run_id, task_id)["try_number"])
        wait_for(
            "the trigger to run in the triggerer",
            lambda: "starting" in self.trigger_log(run_id, try_number, task_id),
            timeout,
            1.0,
            self.services,
        )

    def wait_run_state(self, run_id: str, states: set[str], timeout: float = 400.0) -> str:
        """Wait until a DAG run ends in one of ``states``; return it."""

        def probe() -> str | None:
            state = self.dag_run(run_id)["state"]
            return state if state in states else None

        try:
            return wait_for(f"DAG run {run_id} in {sorted(states)}", probe, timeout, 2.0, self.services)
        except AssertionError as error:
            raise AssertionError(f"{error}\ntask states: {self.task_instances(run_id)}") from None

    def trigger_log(self, run_id: str, try_number: int, task_id: str = PLAN_TASK) -> str:
        """What the triggerer wrote for a task instance's try (every trigger log file of that try)."""
        folder = self.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
        files = sorted(folder.glob(f"attempt={try_number}.log.trigger.*.log"))
        return "".join(f.read_text(errors="replace") for f in files)

    def log_files(self) -> Iterator[Path]:
        """Every task and trigger log file written so far."""
        yield from (p for p in (self.home / "logs").rglob("*") if p.is_file())


def _base_environment() -> dict[str, str]:
    """What every component inherits: PATH and locale, the repository importable, nothing else of ours."""
    import os

    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextmanager
def airflow_deployment(home: Path, node: LocalNode, data_dir: Path) -> Iterator[AirflowDeployment]:
    """Start the deployment; stop every component on exit, whatever happened."""
    deployment = AirflowDeployment(home, node, data_dir)
    started = time.monotonic()
    try:
        deployment.start()
        deployment.started_in = time.monotonic() - started  # type: ignore[attr-defined]
        yield deployment
    finally:
        deployment.stop()


__all__ = ["DAGS_FOLDER", "DAG_ID", "PLAN_TASK", "AirflowDeployment", "airflow_deployment"]
