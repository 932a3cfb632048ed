"""A real Prefect 3 deployment for the tests: ``prefect server start`` and the README's serve command.

The server runs with its services (the scheduler among them) on 127.0.0.1 and a free port, with a
SQLite database in a throw-away PREFECT_HOME. The example flow is served with the command the
README gives (``python -m examples.prefect.retraining --cron ...``), from a scratch folder, with the
organizations' credentials saved as blocks first. The test reads runs and logs through the REST API
and acts with the ``prefect`` CLI, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from substra_flows.local_node import LocalNode
from tests.deploy.processes import Service, free_port, http_ok, wait_for

ROOT = Path(__file__).resolve().parents[2]
FLOW_NAME = "substra-federated-retraining"
DEPLOYMENT = "deploy-test"
BLOCKS = ("substra-org-1", "substra-org-2")
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


class PrefectDeployment:
    """A Prefect server and one serving process of the example flow."""

    def __init__(self, home: Path, node: LocalNode, cron: str = "* * * * *") -> None:
        self.home = home
        self.node = node
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.workdir = home / "serve-cwd"
        self.workdir.mkdir(parents=True, exist_ok=True)
        (home / "tmp").mkdir(exist_ok=True)
        keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "HOME", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
        self.env = {
            **{k: os.environ[k] for k in keep if k in os.environ},
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "PREFECT_HOME": str(home / "prefect-home"),
            "TMPDIR": str(home / "tmp"),  # what the flow or DAG writes by default stays in the test's folder
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            # the scheduler looks for deployments to schedule every 5 s instead of 60 s (same code path)
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
            "PREFECT_RUNNER_POLL_FREQUENCY": "2",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_CLI_PROMPT": "false",
        }
        logs = home / "service-logs"
        logs.mkdir(exist_ok=True)
        prefect = [str(Path(sys.executable).with_name("prefect"))]
        self.server = Service(
            "prefect-server",
            [*prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            self.env,
            logs,
            home,
        )
        serve = [
            sys.executable,
            "-m",
            "examples.prefect.retraining",
            "--cron",
            cron,
            "--name",
            DEPLOYMENT,
            "--credentials",
            *BLOCKS,
        ]
        self.serve = Service("prefect-serve", serve, self.env, logs, self.workdir)
        self.services = [self.server, self.serve]
        self.deployment_id = ""

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        """Start the server, save the credentials blocks, serve the example flow, wait for its deployment."""
        self.server.start()
        wait_for("the Prefect server", lambda: http_ok(f"{self.api}/health"), timeout, 1.0, [self.server])
        self.save_blocks()
        self.serve.start()
        found = wait_for("the served deployment", self._deployment, timeout, 1.0, self.services)
        self.deployment_id = str(found["id"])

    def stop(self) -> None:
        """Stop the serving process (and its flow-run processes), then the server."""
        self.serve.stop()
        self.server.stop()

    def save_blocks(self) -> None:
        """One ``SubstraCredentials`` block per organization, saved on this server (as the README says)."""
        orgs = [{"url": o.url, "token": o.token} for o in self.node.organizations]
        script = (
            "import json, sys\n"
            "from substra_flows.prefect import SubstraCredentials\n"
            "for name, org in zip(sys.argv[1:], json.loads(sys.stdin.read())):\n"
            "    SubstraCredentials(url=org['url'], token=org['token']).save(name, overwrite=True)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, *BLOCKS],
            input=json.dumps(orgs),
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"saving the credentials blocks failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")

    # -- REST API and CLI ----------------------------------------------------------------------------

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST to the server's API; the JSON answer."""
        answer = requests.post(self.api + path, json=body, timeout=30)
        if not answer.ok:
            raise AssertionError(f"POST {path}: {answer.status_code} {answer.text[:1000]}")
        return answer.json() if answer.content else None

    def get(self, path: str) -> Any:
        """GET from the server's API; the JSON answer."""
        answer = requests.get(self.api + path, timeout=30)
        if not answer.ok:
            raise AssertionError(f"GET {path}: {answer.status_code} {answer.text[:1000]}")
        return answer.json()

    def _deployment(self) -> dict[str, Any] | None:
        answer = requests.get(f"{self.api}/deployments/name/{FLOW_NAME}/{DEPLOYMENT}", timeout=30)
        return dict(answer.json()) if answer.status_code == 200 else None

    def deployment(self) -> dict[str, Any]:
        """The served deployment as the API shows it (schedules included)."""
        return dict(self.get(f"/deployments/{self.deployment_id}"))

    def flow_runs(self) -> list[dict[str, Any]]:
        """Every flow run of the deployment, by expected start time."""
        body = {"flow_runs": {"deployment_id": {"any_": [self.deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return list(self.post("/flow_runs/filter", body))

    def flow_run(self, run_id: str) -> dict[str, Any]:
        """One flow run (state, parameters, auto_scheduled)."""
        return dict(self.get(f"/flow_runs/{run_id}"))

    def state(self, run_id: str) -> str:
        """The flow run's state type (SCHEDULED, RUNNING, COMPLETED, CANCELLED...)."""
        return str((self.flow_run(run_id).get("state") or {}).get("type"))

    def run_tree(self, run_id: str) -> list[str]:
        """The flow run and every subflow run under it (``run_compute_plan`` runs as a subflow)."""
        found, frontier = [run_id], [run_id]
        while frontier:
            body = {"flow_runs": {"parent_flow_run_id": {"any_": frontier}}}
            frontier = [str(child["id"]) for child in self.post("/flow_runs/filter", body)]
            found += frontier
        return found

    def logs(self, run_id: str) -> list[dict[str, Any]]:
        """Every log record of a flow run, its tasks' and its subflows' included, every page: what the
        user reads of that run in the UI."""
        runs = self.run_tree(run_id)
        records: list[dict[str, Any]] = []
        while True:
            page = self.post(
                "/logs/filter",
                {
                    "logs": {"flow_run_id": {"any_": runs}},
                    "sort": "TIMESTAMP_ASC",
                    "limit": 200,
                    "offset": len(records),
                },
            )
            records.extend(page)
            if len(page) < 200:
                return records

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        """Every artifact of a flow run."""
        return list(self.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}}))

    def cli(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``prefect <args>`` against this server; its output (fails on a non-zero exit)."""
        prefect = str(Path(sys.executable).with_name("prefect"))
        done = subprocess.run(
            [prefect, *args], env=self.env, cwd=self.home, capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise AssertionError(f"prefect {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return done.stdout

    def run_deployment(self, **parameters: Any) -> str:
        """``prefect deployment run <flow>/<deployment> --param k=v...``; the new flow run's id."""
        params = [item for k, v in parameters.items() for item in ("--param", f"{k}={json.dumps(v)}")]
        out = self.cli("deployment", "run", f"{FLOW_NAME}/{DEPLOYMENT}", *params)
        match = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
        assert match, f"no flow run id in the output of prefect deployment run:\n{out}"
        return match.group(1)

    def pause(self) -> None:
        """Pause the deployment's schedule (the UI's toggle); auto-scheduled runs not started are dropped."""
        self.post(f"/deployments/{self.deployment_id}/pause_deployment", {})

    # -- waits ---------------------------------------------------------------------------------------

    def wait_state(self, run_id: str, states: set[str], timeout: float = 300.0) -> str:
        """Wait until a flow run is in one of ``states``; return it."""

        def probe() -> str | None:
            state = self.state(run_id)
            return state if state in states else None

        return wait_for(f"flow run {run_id} in {sorted(states)}", probe, timeout, 1.0, self.services)


@contextmanager
def prefect_deployment(home: Path, node: LocalNode, cron: str = "* * * * *") -> Iterator[PrefectDeployment]:
    """Start the server and the serving process; stop both on exit, whatever happened."""
    deployment = PrefectDeployment(home, node, cron)
    started = time.monotonic()
    try:
        deployment.start()
        deployment.started_in = time.monotonic() - started  # type: ignore[attr-defined]
        yield deployment
    finally:
        deployment.stop()
