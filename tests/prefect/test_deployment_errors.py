"""The Prefect face against a node set up as a default real deployment: an error a retry cannot fix
fails its task run once, with its cause (no retries spent), while a transient one is retried.

The node keeps a default deployment's model export (off) and a build phase (no minimum time, no
package index); the refusals are those a real deployment makes (backend-1.0 audit).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.local_node import FaultConfig, LocalNode
from substra_flows.prefect import SubstraCredentials, add_compute_plan, download_model, get_performances
from substra_flows.prefect import wait_compute_plan as wait_compute_plan_task
from tests.live._node_functions import BROKEN_BUILD, MODEL_IN, SLEEP, register, task
from tests.recording import OFFLINE_BUILD

pytestmark = pytest.mark.live

NOOP = SLEEP.format(seconds=0)
NO_DELAY: dict[str, Any] = {"retry_delay_seconds": 0, "retry_jitter_factor": None}


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    """Model export off (the default), builds on."""
    with LocalNode(organizations=1, build_seconds=0.0, build_env=OFFLINE_BUILD) as started:
        yield started


@pytest.fixture(scope="module")
def credentials(node: LocalNode) -> SubstraCredentials:
    """One attempt per call: a transient error reaches Prefect's retries at once."""
    org = node.organizations[0]
    return SubstraCredentials(url=org.url, token=org.token, retry_timeout=5.0, max_attempts=1)


@pytest.fixture(scope="module")
def world(node: LocalNode, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A done plan (its model to download) and a function whose image cannot be built."""
    folder = tmp_path_factory.mktemp("prefect-deployment-errors")
    org = node.organizations[0]
    with SubstraClient(url=org.url, token=org.token) as client:
        noop = register(client, folder, "noop", NOOP, inputs=MODEL_IN)
        done_task, done_plan = str(uuid.uuid4()), str(uuid.uuid4())
        done = [task(done_task, noop, org.organization_id)]
        client.add_compute_plan({"key": done_plan, "name": "done", "tasks": done})
        client.wait_compute_plan(done_plan, timeout=120, polling_period=0.2)
        broken = register(client, folder, "noop", NOOP, inputs=MODEL_IN, build_lines=(BROKEN_BUILD,))
    return {"org": org.organization_id, "done_plan": done_plan, "done_task": done_task, "broken": broken}


@contextlib.contextmanager
def counting(node: LocalNode, path_part: str) -> Iterator[dict[str, int]]:
    """Count the requests whose path holds ``path_part`` (a fault injector that injects nothing): one
    request of that kind per run of a task tells how many times Prefect ran it."""
    seen: dict[str, int] = {}
    node.set_faults(FaultConfig(rate=0.0, path_contains=path_part))
    try:
        yield seen
    finally:
        seen["requests"] = node.fault_stats()["requests"]
        node.set_faults(None)


def test_a_download_refused_by_model_export_off_fails_once_naming_the_setting(
    node: LocalNode, credentials: SubstraCredentials, world: dict[str, Any], tmp_path: Path
) -> None:
    with counting(node, "/file/") as downloads:
        state = download_model.with_options(**NO_DELAY)(
            credentials, str(tmp_path), task_key=world["done_task"], return_state=True
        )
    assert state.is_failed() and downloads["requests"] == 1  # no retry
    error = state.result(raise_on_failure=False)
    assert isinstance(error, exc.ModelExportDisabled) and "model_export_enabled" in str(error)
    assert exc.retry_cannot_help(error) == "model export is disabled on the channel (model_export_enabled is false)"


def test_a_build_error_fails_the_wait_once_with_the_error_type_and_the_build_output(
    node: LocalNode, credentials: SubstraCredentials, world: dict[str, Any]
) -> None:
    failing = str(uuid.uuid4())
    tasks = [task(failing, world["broken"], world["org"])]
    spec = {"key": str(uuid.uuid4()), "name": "prefect build error", "tasks": tasks}
    submitted = add_compute_plan(credentials, spec)
    with counting(node, "/logs/") as log_reads:  # a failed wait reads the culprit's logs once
        state = wait_compute_plan_task.with_options(**NO_DELAY)(
            credentials, submitted["compute_plan_key"], timeout=120, polling_period=0.2, return_state=True
        )
    assert state.is_failed() and log_reads["requests"] == 1  # no retry
    error = state.result(raise_on_failure=False)
    assert isinstance(error, exc.FutureFailureError) and error.error_types == {failing: "BUILD_ERROR"}
    assert f"{failing} (error type BUILD_ERROR)" in str(error) and "installing-a-missing-dependency" in str(error)


def test_a_transient_error_is_still_retried(node: LocalNode, credentials: SubstraCredentials, world: dict) -> None:
    """The control: one 503 on the plan read (the client makes one attempt per call), and the task's
    second run succeeds."""
    node.set_faults(FaultConfig(rate=1.0, kinds=("503",), max_faults=1, path_contains="/compute_plan/"))
    try:
        state = get_performances.with_options(**NO_DELAY)(credentials, world["done_plan"], return_state=True)
        injected = node.fault_stats()["total"]
    finally:
        node.set_faults(None)
    assert injected == 1 and state.is_completed()
