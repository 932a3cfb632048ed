"""Live tests: the example DAG and the sensors run with ``dag.test()`` against the session's local node.

Each DAG run ends with its compute plan done and its performances in XCom; rerunning the same
DAG run creates no second plan; killing a waiting operator cancels its plan; no token or
password reaches XCom or the logs.
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider.hooks.substra import SubstraHook
from airflow_provider.operators.substra import (
    SubstraAddComputePlanOperator,
    SubstraGetPerformancesOperator,
    derive_compute_plan_key,
)
from airflow_provider.sensors.substra import SubstraComputePlanSensor, SubstraTaskSensor
from airflow_provider.triggers.substra import SubstraComputePlanTrigger
from examples import assets
from substra_flows import SubstraClient, steps
from substra_flows.local_node import LocalNode
from tests.airflow.conftest import DAGS_FOLDER, conn_env, sync_dag, task_states, xcoms_of
from tests.airflow.fakes import FakeTI, wait_until

pytestmark = pytest.mark.live

DAG_ID = "substra_retraining"
RUN_AFTER = pendulum.datetime(2025, 6, 1, 12, tz="UTC")  # fixed: the same run id when a run is repeated
DAY_1 = pendulum.datetime(2025, 1, 1, tz="UTC")
DAY_2 = pendulum.datetime(2025, 1, 2, tz="UTC")
PUBLIC = {"public": True, "authorized_ids": []}


@pytest.fixture(scope="module")
def live(local_node: LocalNode, dag_test: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Connections substra_org1/2 to the node, and the example DAG's run-time settings."""
    data_dir = tmp_path_factory.mktemp("retraining-data")
    patch = pytest.MonkeyPatch()
    for i, org in enumerate(local_node.organizations, start=1):
        patch.setenv(*conn_env(f"substra_org{i}", {"conn_type": "substra", "host": org.url, "password": org.token}))
    patch.setenv("SUBSTRA_RETRAINING_CONN_IDS", "substra_org1,substra_org2")
    patch.setenv("SUBSTRA_RETRAINING_DATA_DIR", str(data_dir))
    patch.setenv("SUBSTRA_RETRAINING_ROUNDS", "1")
    patch.setenv("SUBSTRA_RETRAINING_POLL_SECONDS", "0.2")
    yield {"node": local_node, "data_dir": data_dir, "patch": patch}
    patch.undo()


@pytest.fixture(scope="module")
def client1(live: dict[str, Any]) -> Iterator[SubstraClient]:
    org = live["node"].organizations[0]
    with SubstraClient(url=org.url, token=org.token) as client:
        yield client


def load_example_dag(live: dict[str, Any], *, deferrable: bool) -> Any:
    """Parse the example DAG file as the DAG processor would, with the deferrable switch set."""
    from airflow.dag_processing.dagbag import DagBag

    live["patch"].setenv("SUBSTRA_RETRAINING_DEFERRABLE", str(deferrable).lower())
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag(DAG_ID)
    sync_dag(dag)
    return dag


def plans_of_the_pipeline(client: SubstraClient) -> list[Any]:
    return client.list_compute_plan(filters={"tag": [DAG_ID]})


def check_finished_run(run: Any, client: SubstraClient) -> dict[tuple[str, str], Any]:
    """The run succeeded, its plan is done and its performances are in XCom."""
    assert str(run.state) in ("success", "DagRunState.SUCCESS"), task_states(run)
    assert set(task_states(run).values()) == {"success"}, task_states(run)
    xcoms = xcoms_of(run)
    plan_key = xcoms[("add_compute_plan", "return_value")]
    assert client.get_compute_plan(plan_key).status.value == "PLAN_STATUS_DONE"
    rows = xcoms[("get_performances", "return_value")]
    assert len(rows) == 2 and {r["worker"] for r in rows} == {"MyOrg1MSP", "MyOrg2MSP"}
    assert all(r["compute_plan_key"] == plan_key and 0 <= r["performance"] <= 1 for r in rows)
    assert xcoms[("add_compute_plan", "_link_SubstraComputePlanLink")] == f"{client.url}/compute_plan/{plan_key}/"
    gate = xcoms[("quality_gate", "return_value")]
    assert gate["compute_plan_key"] == plan_key and isinstance(gate["promote"], bool)
    return xcoms


def assert_no_secret(node: LocalNode, *texts: str) -> None:
    secrets = [s for org in node.organizations for s in (org.token, org.password)]
    for text in texts:
        for secret in secrets:
            assert secret not in text


@pytest.fixture(scope="module")
def first_run(live: dict[str, Any], client1: SubstraClient) -> Any:
    dag = load_example_dag(live, deferrable=False)
    return dag.test(logical_date=DAY_1, run_after=RUN_AFTER)


def test_example_dag_blocking(first_run: Any, client1: SubstraClient) -> None:
    check_finished_run(first_run, client1)


def test_rerunning_the_same_dag_run_creates_no_second_plan(
    first_run: Any, live: dict[str, Any], client1: SubstraClient
) -> None:
    key = xcoms_of(first_run)[("add_compute_plan", "return_value")]
    plans_before = {p.key for p in plans_of_the_pipeline(client1)}
    dag = load_example_dag(live, deferrable=False)
    rerun = dag.test(logical_date=DAY_1, run_after=RUN_AFTER)  # same run id: the run is cleared and run again
    assert rerun.run_id == first_run.run_id
    xcoms = check_finished_run(rerun, client1)
    assert xcoms[("add_compute_plan", "return_value")] == key
    assert {p.key for p in plans_of_the_pipeline(client1)} == plans_before


def test_example_dag_deferrable(
    live: dict[str, Any], client1: SubstraClient, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    fired: list[Any] = []
    original = SubstraComputePlanTrigger.run

    async def counting_run(self: SubstraComputePlanTrigger) -> Any:
        async for event in original(self):
            fired.append(event.payload)
            yield event

    monkeypatch.setattr(SubstraComputePlanTrigger, "run", counting_run)
    dag = load_example_dag(live, deferrable=True)
    run = dag.test(logical_date=DAY_2, run_after=RUN_AFTER + dt.timedelta(days=1))
    xcoms = check_finished_run(run, client1)
    assert len(fired) == 1 and fired[0]["status"] == "success"
    assert fired[0]["key"] == xcoms[("add_compute_plan", "return_value")]
    # secrets: never in XCom, nor in the task logs, which dag.test() prints to the console
    captured = capfd.readouterr()
    printed = captured.out + captured.err
    assert "Deferring the wait for compute plan" in printed  # the operator's own log lines were captured
    assert_no_secret(live["node"], repr(xcoms), printed)
    key = xcoms[("add_compute_plan", "return_value")]
    # the link at submission, once; then the wait's progress (first look, changes, end), not a line per poll
    url = xcoms[("add_compute_plan", "compute_plan_url")]
    assert printed.count(f"Compute plan {key} (attempt 1) created") == 1
    assert (
        f"(attempt 1) created, {len(xcoms[('build_plan', 'return_value')]['tasks'])} task(s) added now: {url}"
        in printed
    )
    progress = [line for line in printed.splitlines() if f"compute plan {key}: PLAN_STATUS_" in line]
    assert len(progress) >= 2 and "PLAN_STATUS_DONE" in progress[-1] and "tasks done" in progress[-1]
    assert "url from code" not in printed
    for name in ("retraining dataset org-1", "retraining train"):  # a creation is told once, by the operator
        assert sum(name in line and ("created" in line or "found" in line) for line in printed.splitlines()) <= 1, name


def small_plan(client: SubstraClient, tmp_path: Path, org_ids: list[str], *, tasks: int, name: str) -> dict[str, Any]:
    """A chain of ``noop`` tasks on the first organization (a plan that runs a little while)."""
    function = steps.register_function(
        client,
        name="airflow live noop",
        archive=assets.build_function_archive("noop", tmp_path / "fn"),
        inputs=assets.function_inputs("noop"),
        outputs=assets.function_outputs("noop"),
        description=assets.write_description(tmp_path / "noop.md", "noop"),
        permissions=PUBLIC,
    )
    chain = []
    for i in range(tasks):
        inputs = (
            []
            if i == 0
            else [{"identifier": "model", "parent_task_key": f"noop-{i - 1}", "parent_task_output_identifier": "model"}]
        )
        chain.append(
            {
                "task_id": f"noop-{i}",
                "function_key": function.function_key,
                "worker": org_ids[0],
                "inputs": inputs,
                "outputs": {"model": {"permissions": {"public": False, "authorized_ids": [org_ids[0]]}}},
            }
        )
    return {"name": name, "tasks": chain}


def federated_plan_from(run: Any, name: str, rounds: int) -> dict[str, Any]:
    """A new federated plan (fresh key) on the datasets, samples and functions a DAG run registered."""
    xcoms = xcoms_of(run)
    prepared = xcoms[("prepare_data", "return_value")]
    orgs = [
        {
            "organization_id": org["organization_id"],
            "dataset_key": xcoms[(f"register_dataset_org{i}", "return_value")]["dataset_key"],
            "train_sample_keys": xcoms[(f"register_dataset_org{i}", "return_value")]["sample_keys"],
            "test_sample_keys": xcoms[(f"add_test_samples_org{i}", "return_value")],
        }
        for i, org in enumerate(prepared["orgs"], start=1)
    ]
    functions = {
        n: xcoms[(f"add_function_{n}", "return_value")]["function_key"]
        for n in ("train", "aggregate", "predict", "score")
    }
    return assets.build_federated_plan(
        compute_plan_key=str(uuid.uuid4()), name=name, function_keys=functions, orgs=orgs, rounds=rounds
    )


def test_sensors_in_reschedule_mode(first_run: Any, client1: SubstraClient) -> None:
    from airflow.sdk import DAG

    plan = federated_plan_from(first_run, "airflow live sensors", rounds=3)
    last_score = assets.task_key(plan["key"], "score/2/MyOrg2MSP")
    with DAG(dag_id="substra_live_sensors", schedule=None, start_date=DAY_1, catchup=False) as dag:
        submit = SubstraAddComputePlanOperator(
            task_id="submit", substra_conn_id="substra_org1", compute_plan=plan, wait_for_completion=False
        )
        plan_sensor = SubstraComputePlanSensor(
            task_id="wait_plan",
            substra_conn_id="substra_org1",
            compute_plan_key=submit.output,
            mode="reschedule",
            poke_interval=1,
            timeout=300,
        )
        task_sensor = SubstraTaskSensor(
            task_id="wait_last_task",
            substra_conn_id="substra_org2",
            task_key=last_score,
            mode="reschedule",
            poke_interval=1,
            timeout=300,
        )
        perf = SubstraGetPerformancesOperator(
            task_id="performances", substra_conn_id="substra_org1", compute_plan_key=submit.output
        )
        submit >> [plan_sensor, task_sensor] >> perf
    sync_dag(dag)
    run = dag.test(logical_date=DAY_1)
    assert set(task_states(run).values()) == {"success"}, task_states(run)
    xcoms = xcoms_of(run)
    key = xcoms[("submit", "return_value")]
    assert key == plan["key"]
    assert xcoms[("wait_plan", "return_value")] == {"kind": "compute_plan", "key": key, "status": "PLAN_STATUS_DONE"}
    assert xcoms[("wait_last_task", "return_value")] == {"kind": "task", "key": last_score, "status": "STATUS_DONE"}
    rows = xcoms[("performances", "return_value")]
    assert {r["worker"] for r in rows} == {"MyOrg1MSP", "MyOrg2MSP"} and all(0 <= r["performance"] <= 1 for r in rows)
    assert client1.get_compute_plan(key).status.value == "PLAN_STATUS_DONE"
    assert reschedules_of(run) >= 1  # a sensor gave its slot back at least once


def reschedules_of(run: Any) -> int:
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    ids = [ti.id for ti in run.get_task_instances()]
    with create_session() as session:
        return session.query(TaskReschedule).filter(TaskReschedule.ti_id.in_(ids)).count()


def test_killing_a_waiting_operator_cancels_its_plan(
    live: dict[str, Any], client1: SubstraClient, tmp_path: Path
) -> None:
    org_ids = [o.organization_id for o in live["node"].organizations]
    plan = small_plan(client1, tmp_path, org_ids, tasks=30, name="airflow live on_kill")
    ti = FakeTI(dag_id="live", run_id=f"kill-{uuid.uuid4()}", task_id="submit")
    op = SubstraAddComputePlanOperator(
        task_id="submit", substra_conn_id="substra_org1", compute_plan=plan, polling_period_seconds=0.2
    )
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            op.execute({"ti": ti})
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: "compute_plan_key" in ti.xcom, timeout=60)
    key = ti.xcom["compute_plan_key"]
    wait_until(lambda: client1.get_compute_plan(key).done_count >= 1, timeout=60)
    op.on_kill()
    thread.join(60)
    assert client1.get_compute_plan(key).status.value == "PLAN_STATUS_CANCELED"
    assert "canceled" in str(outcome["error"]).lower()


def test_hook_test_connection_against_the_node(live: dict[str, Any]) -> None:
    ok, message = SubstraHook("substra_org2").test_connection()
    assert ok and message.startswith("Connected to Substra organization MyOrg2MSP")
    assert_no_secret(live["node"], message)


def cancel_once_running(client: SubstraClient, key: str) -> threading.Thread:
    """Cancel the plan from outside (as a person in the Substra web app would) once a task of it is done."""

    def cancel() -> None:
        wait_until(lambda: _plan_exists(client, key) and client.get_compute_plan(key).done_count >= 1, timeout=120)
        steps.cancel_compute_plan(client, key)

    thread = threading.Thread(target=cancel, daemon=True)
    thread.start()
    return thread


def _plan_exists(client: SubstraClient, key: str) -> bool:
    return bool(client.list_compute_plan(filters={"key": [key]}))


@pytest.mark.parametrize("deferrable", [False, True], ids=["blocking", "deferrable"])
def test_a_rerun_of_a_dag_run_whose_plan_was_canceled_runs_attempt_2(
    live: dict[str, Any], client1: SubstraClient, tmp_path: Path, deferrable: bool
) -> None:
    from airflow.sdk import DAG

    org_ids = [o.organization_id for o in live["node"].organizations]
    plan = small_plan(client1, tmp_path, org_ids, tasks=25, name="airflow live attempts")
    dag_id = f"substra_live_attempts_{'deferrable' if deferrable else 'blocking'}"
    with DAG(dag_id=dag_id, schedule=None, start_date=DAY_1, catchup=False) as dag:
        SubstraAddComputePlanOperator(
            task_id="submit",
            substra_conn_id="substra_org1",
            compute_plan=plan,
            deferrable=deferrable,
            polling_period_seconds=0.2,
            retries=0,
        )
    sync_dag(dag)
    run_after = RUN_AFTER + dt.timedelta(days=30 if deferrable else 31)

    def run() -> Any:
        return dag.test(logical_date=DAY_1, run_after=run_after)

    run_id = f"manual__{run_after.isoformat()}"  # the run dag.test makes (and clears to repeat it)
    run_key = derive_compute_plan_key(dag_id, run_id, "submit")
    canceller = cancel_once_running(client1, run_key)
    first = run()
    canceller.join(120)
    assert first.run_id == run_id
    assert task_states(first) == {"submit": "failed"}
    assert client1.get_compute_plan(run_key).status.value == "PLAN_STATUS_CANCELED"

    second = run()  # the same DAG run, cleared and run again (what a Clear does)
    assert task_states(second) == {"submit": "success"}, task_states(second)
    attempt_2 = steps.attempt_key(run_key, 2)
    assert xcoms_of(second)[("submit", "return_value")] == attempt_2
    assert xcoms_of(second)[("submit", "compute_plan_url")].endswith(f"/compute_plan/{attempt_2}/")
    assert client1.get_compute_plan(attempt_2).status.value == "PLAN_STATUS_DONE"
    owned = client1.list_compute_plan(
        filters={"metadata": [{"key": steps.RUN_METADATA, "type": "is", "value": run_key}]}
    )
    assert sorted(p.key for p in owned) == sorted([run_key, attempt_2])

    third = run()  # a rerun after DONE: no new plan
    assert task_states(third) == {"submit": "success"}
    assert xcoms_of(third)[("submit", "return_value")] == attempt_2
    assert (
        len(
            client1.list_compute_plan(
                filters={"metadata": [{"key": steps.RUN_METADATA, "type": "is", "value": run_key}]}
            )
        )
        == 2
    )
