"""The Airflow face against a node set up as a default real deployment: errors that a retry cannot fix
fail the task for good (``AirflowFailException``), their cause first, the Substra error chained.

The node keeps a default deployment's model export (off) and a build phase (no minimum time, no
package index). Each refusal is one a real deployment makes (backend-1.0 audit): a model download
refused by the channel's ``model_export_enabled``, a function whose image fails to build
(``BUILD_ERROR`` for its tasks), a dataset the plan owner may not process (403 ``OE0102``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider.errors import RETRY_CANNOT_HELP, failing_for_good
from airflow_provider.operators.substra import SubstraAddComputePlanOperator, SubstraDownloadModelOperator
from airflow_provider.triggers.substra import SubstraComputePlanTrigger
from substra_flows import SubstraClient
from substra_flows import exceptions as exc
from substra_flows.local_node import LocalNode
from tests.airflow.conftest import conn_env
from tests.airflow.fakes import FakeTI
from tests.cassette import dataset_spec
from tests.live._node_functions import BROKEN_BUILD, MODEL_IN, OPENER_IN, SLEEP, opener_task, register, task
from tests.recording import OFFLINE_BUILD

pytestmark = pytest.mark.live

NOOP = SLEEP.format(seconds=0)


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    """Model export off (the default), builds on."""
    with LocalNode(organizations=2, build_seconds=0.0, build_env=OFFLINE_BUILD) as started:
        yield started


@pytest.fixture(scope="module")
def conn_ids(node: LocalNode) -> Iterator[list[str]]:
    with pytest.MonkeyPatch.context() as patch:
        names = []
        for i, org in enumerate(node.organizations, start=1):
            name = f"substra_deploy_org{i}"
            patch.setenv(*conn_env(name, {"conn_type": "substra", "host": org.url, "password": org.token}))
            names.append(name)
        yield names


@pytest.fixture(scope="module")
def world(node: LocalNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A done plan (its model to download), a function that cannot be built, a dataset only org-2 may process."""
    folder = tmp_path_factory.mktemp("deployment-errors")
    org1, org2 = node.organizations
    with SubstraClient(url=org1.url, token=org1.token) as one, SubstraClient(url=org2.url, token=org2.token) as two:
        noop = register(one, folder, "noop", NOOP, inputs=MODEL_IN)
        done_task = str(uuid.uuid4())
        done_plan = str(uuid.uuid4())
        one.add_compute_plan({"key": done_plan, "name": "done", "tasks": [task(done_task, noop, org1.organization_id)]})
        one.wait_compute_plan(done_plan, timeout=120, polling_period=0.2)
        yield {
            "org1": org1.organization_id,
            "org2": org2.organization_id,
            "done_task": done_task,
            "broken": register(one, folder, "noop", NOOP, inputs=MODEL_IN, build_lines=(BROKEN_BUILD,)),
            "reads_opener": register(one, folder, "noop", NOOP, inputs=OPENER_IN),
            "org2_only": two.add_dataset(dataset_spec("org-2 only", folder)),
            "client": one,
        }


def context(run_id: str) -> dict[str, Any]:
    ti = FakeTI(dag_id="deployment_errors", run_id=run_id, task_id="step")
    return {"ti": ti, "run_id": run_id}


def plan_operator(conn_id: str, tasks: list[dict[str, Any]], **kwargs: Any) -> SubstraAddComputePlanOperator:
    return SubstraAddComputePlanOperator(
        task_id="plan",
        substra_conn_id=conn_id,
        compute_plan={"key": str(uuid.uuid4()), "name": "deployment errors", "tasks": tasks},
        polling_period_seconds=0.2,
        timeout=120,
        deferrable=False,
        **kwargs,
    )


def test_promoting_a_model_with_model_export_off_fails_for_good_naming_the_setting(
    conn_ids: list[str], world: dict[str, Any], tmp_path: Path
) -> None:
    download = SubstraDownloadModelOperator(
        task_id="promote", substra_conn_id=conn_ids[0], destination_folder=str(tmp_path), task_key=world["done_task"]
    )
    with pytest.raises(AirflowFailException, match="model_export_enabled") as refused:
        download.execute(context("promote"))
    assert isinstance(refused.value.__cause__, exc.ModelExportDisabled)
    assert list(tmp_path.iterdir()) == []


def test_a_build_error_fails_the_plan_task_for_good_even_when_retries_resubmit(
    conn_ids: list[str], world: dict[str, Any]
) -> None:
    """``on_failed="retry"`` submits the next attempt on a retry; it would use the same unbuildable function."""
    failing = str(uuid.uuid4())
    operator = plan_operator(conn_ids[0], [task(failing, world["broken"], world["org1"])], on_failed="retry")
    with pytest.raises(AirflowFailException) as failed:
        operator.execute(context("build error"))
    message = str(failed.value)
    assert message.startswith("the function's image failed to build (BUILD_ERROR)")
    assert f"{failing} (error type BUILD_ERROR)" in message and "installing-a-missing-dependency" in message


def test_a_deferred_wait_brings_the_classification_in_its_event(conn_ids: list[str], world: dict[str, Any]) -> None:
    failing = str(uuid.uuid4())
    operator = plan_operator(conn_ids[0], [task(failing, world["broken"], world["org1"])], wait_for_completion=False)
    key = operator.execute(context("deferred build error"))

    async def first_event() -> dict[str, Any]:
        trigger = SubstraComputePlanTrigger(key, conn_ids[0], polling_period_seconds=0.2)
        async for fired in trigger.run():
            return dict(fired.payload)
        raise AssertionError("the trigger fired no event")

    event = asyncio.run(first_event())
    assert event["status"] == "failed" and event["error_types"] == {failing: "BUILD_ERROR"}
    assert event[RETRY_CANNOT_HELP].startswith("the function's image failed to build")
    with pytest.raises(AirflowFailException, match="BUILD_ERROR"):
        operator.execute_complete(context("deferred build error"), event=event, compute_plan_key=key)


def test_a_plan_using_a_dataset_its_owner_may_not_process_fails_for_good_with_oe0102(
    conn_ids: list[str], world: dict[str, Any]
) -> None:
    """Org-1 owns the plan, org-2 (the dataset's owner) works: the orchestrator checks the owner, org-1."""
    refused_task = opener_task(str(uuid.uuid4()), world["reads_opener"], world["org2"], world["org2_only"])
    operator = plan_operator(conn_ids[0], [refused_task])
    with pytest.raises(AirflowFailException, match=r"permission refused \(403\) by the orchestrator \(OE0102\)") as e:
        operator.execute(context("refused dataset"))
    assert isinstance(e.value.__cause__, exc.AuthorizationError) and world["org2_only"] in str(e.value)


@pytest.mark.parametrize(
    "error",
    [
        exc.GatewayUnavailable("503 from the gateway", status_code=503),
        exc.TooManyRequests("429", status_code=429),
        exc.NotFound("404", status_code=404),
        exc.InternalServerError("500", status_code=500),
        exc.SpecValidationError("invalid name=''"),
        AirflowException("decided by the operator"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_a_retry_may_fix_and_bad_arguments_are_left_as_they_are(error: Exception) -> None:
    assert failing_for_good(error) is None
