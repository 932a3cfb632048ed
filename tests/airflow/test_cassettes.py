"""Cassettes: the hook, every operator, sensor and trigger against recorded local-node traffic.

The module's shared assets (a dataset with samples on each organization, the example functions,
a finished federated plan) are registered once, in ``_setup.yaml``. Each test then records its
own exchanges: success, failure (with the failed task's log tail), timeout and already-finished
paths. Replay: record mode ``none``, network blocked, zero polling periods.

Re-record (with the rest of the suite's cassettes, or just this module):
``scripts/record-cassettes tests/airflow/test_cassettes.py``
"""

from __future__ import annotations

import asyncio
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowRescheduleException,
    AirflowSensorTimeout,
    TaskDeferred,
)

from airflow_provider.hooks.substra import SubstraHook
from airflow_provider.operators.substra import (
    SubstraAddComputePlanOperator,
    SubstraAddDataSamplesOperator,
    SubstraAddFunctionOperator,
    SubstraCancelComputePlanOperator,
    SubstraGetPerformancesOperator,
    SubstraRegisterDatasetOperator,
    derive_compute_plan_key,
)
from airflow_provider.sensors.substra import SubstraComputePlanSensor, SubstraTaskSensor
from airflow_provider.triggers.substra import SubstraComputePlanTrigger, SubstraTaskTrigger
from examples import assets
from substra_flows import SubstraClient, steps
from substra_flows import exceptions as exc
from tests.airflow.conftest import conn_env
from tests.airflow.fakes import FakeTI
from tests.cassette import MARKER, client_for, function_spec, register_org_data, setup_cassette, stable_key
from tests.recording import CASSETTES, REDACTED, Target

pytestmark = [pytest.mark.vcr, pytest.mark.cassette]

MODULE = "airflow_test_cassettes"
DAG_ID = "airflow_cassettes"
LONG_CHAIN = 25  # noop tasks: long enough to still be running at the first look
FUNCTIONS = ("train", "aggregate", "predict", "score", "fail", "noop")


@pytest.fixture(scope="module")
def orgs(substra_targets: list[Target]) -> list[Target]:
    return substra_targets


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("airflow-cassette-assets")


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, orgs: list[Target], workdir: Path) -> dict[str, Any]:
    """Datasets with samples on both organizations, the example functions and a finished federated plan."""
    with setup_cassette(request):
        clients = [client_for(t) for t in orgs]
        ids = [t.organization_id for t in orgs]
        data = [
            register_org_data(
                c, i, t.organization_id, workdir, title=f"airflow cassettes org-{i}", authorized_ids=ids, logs_ids=ids
            )
            for i, (c, t) in enumerate(zip(clients, orgs, strict=True), start=1)
        ]
        functions = {
            name: clients[0].add_function(function_spec(name, workdir, title=f"airflow cassettes {name}"))
            for name in FUNCTIONS
        }
        done = stable_key(MODULE, "finished federated plan")
        spec = assets.build_federated_plan(
            compute_plan_key=done, name="airflow cassettes finished", function_keys=functions, orgs=data, rounds=1
        )
        clients[0].add_compute_plan(spec)
        clients[0].wait_compute_plan(done, timeout=300, polling_period=orgs[0].polling_period)
        for client in clients:
            client.close()
    return {"data": data, "functions": functions, "done_plan": done, "ids": ids}


@pytest.fixture()
def conns(orgs: list[Target], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Airflow connections substra_org1/2 to the recorded organizations."""
    names = []
    for i, target in enumerate(orgs, start=1):
        name = f"substra_org{i}"
        monkeypatch.setenv(*conn_env(name, {"conn_type": "substra", "host": target.url, "password": target.token}))
        names.append(name)
    return names


@pytest.fixture()
def client1(orgs: list[Target]) -> Iterator[SubstraClient]:
    client = client_for(orgs[0])
    yield client
    client.close()


def context_for(test: str, task_id: str = "plan") -> dict[str, Any]:
    """A task context whose identity (hence derived plan key) is unique to the test."""
    return {"ti": FakeTI(dag_id=DAG_ID, run_id=test, task_id=task_id)}


def plan_key_of(context: dict[str, Any]) -> str:
    ti = context["ti"]
    return derive_compute_plan_key(ti.dag_id, ti.run_id, ti.task_id)


def noop_chain(world: dict[str, Any], length: int, name: str) -> dict[str, Any]:
    """A plan of ``length`` chained noop tasks on the first organization, by task name."""
    worker = world["ids"][0]
    tasks = []
    for i in range(length):
        parents = [
            {"identifier": "model", "parent_task_key": f"noop-{i - 1}", "parent_task_output_identifier": "model"}
        ]
        tasks.append(
            {
                "task_id": f"noop-{i}",
                "function_key": world["functions"]["noop"],
                "worker": worker,
                "inputs": parents if i else [],
                "outputs": {"model": {"permissions": {"public": False, "authorized_ids": [worker]}}},
            }
        )
    return {"name": f"airflow cassettes {name}", "tasks": tasks}


def failing_plan(world: dict[str, Any], name: str) -> dict[str, Any]:
    """One task running the ``fail`` function on the first organization's data."""
    org = world["data"][0]
    inputs = [{"identifier": "opener", "asset_key": org["dataset_key"]}]
    inputs += [{"identifier": "datasamples", "asset_key": k} for k in org["train_sample_keys"]]
    task = {
        "task_id": "fail",
        "function_key": world["functions"]["fail"],
        "worker": org["organization_id"],
        "inputs": inputs,
        "outputs": {"model": {"permissions": {"public": False, "authorized_ids": [org["organization_id"]]}}},
    }
    return {"name": f"airflow cassettes {name}", "tasks": [task]}


def run_trigger(trigger: Any) -> list[Any]:
    """Every event of a trigger, run in an event loop as a triggerer would."""

    async def collect() -> list[Any]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def plan_op(orgs: list[Target], conn: str, spec: dict[str, Any], **kwargs: Any) -> SubstraAddComputePlanOperator:
    kwargs.setdefault("polling_period_seconds", orgs[0].polling_period)
    kwargs.setdefault("deferrable", False)
    return SubstraAddComputePlanOperator(task_id="plan", substra_conn_id=conn, compute_plan=spec, **kwargs)


# -- hook ---------------------------------------------------------------------------------------------


def test_hook_test_connection(conns: list[str]) -> None:
    ok, message = SubstraHook(conns[0]).test_connection()
    assert ok and message.startswith("Connected to Substra organization MyOrg1MSP")


def test_hook_test_connection_with_a_bad_token(orgs: list[Target], monkeypatch: pytest.MonkeyPatch) -> None:
    bad = "wrong-token-0123456789abcdef"
    monkeypatch.setenv(*conn_env("substra_bad", {"conn_type": "substra", "host": orgs[0].url, "password": bad}))
    ok, message = SubstraHook("substra_bad").test_connection()
    assert not ok and message.startswith("AuthenticationError")
    assert bad not in message


# -- registration operators ---------------------------------------------------------------------------


def test_register_dataset_operator_then_again(
    conns: list[str], world: dict[str, Any], tmp_path: Path, workdir: Path
) -> None:
    samples = assets.generate_samples(1, workdir / "operator-samples", day=11, n_samples=2)
    op = SubstraRegisterDatasetOperator(
        task_id="register",
        substra_conn_id=conns[0],
        name="airflow cassettes registered by the operator",
        opener=str(assets.opener_path()),
        sample_paths=[str(p) for p in samples],
        permissions={"public": False, "authorized_ids": world["ids"]},
        logs_permission={"public": False, "authorized_ids": world["ids"]},
        metadata={"pipeline": DAG_ID},
        ledger_dir=str(tmp_path),
    )
    first = op.execute(context_for("register dataset"))
    assert first["created"] and len(first["sample_keys"]) == 2 and first["new_sample_keys"] == first["sample_keys"]
    again = op.execute(context_for("register dataset"))
    assert again == {**first, "created": False, "new_sample_keys": []}


def test_add_data_samples_operator(conns: list[str], world: dict[str, Any], tmp_path: Path, workdir: Path) -> None:
    folder = workdir / "operator-extra-samples"
    assets.generate_samples(1, folder, day=12, split="test", n_samples=2)
    op = SubstraAddDataSamplesOperator(
        task_id="samples",
        substra_conn_id=conns[0],
        dataset_key=world["data"][0]["dataset_key"],
        samples_dir=str(folder),
        ledger_dir=str(tmp_path),
    )
    keys = op.execute(context_for("add samples"))
    assert len(keys) == 2
    assert op.execute(context_for("add samples")) == keys  # found in the ledger: nothing sent twice


def test_add_function_operator_from_a_folder(conns: list[str], workdir: Path) -> None:
    folder = workdir / "function-folder"
    folder.mkdir(exist_ok=True)
    (folder / "Dockerfile").write_text(assets.dockerfile("noop"))
    (folder / "function.py").write_bytes((assets.ASSETS_DIR / "function.py").read_bytes())
    op = SubstraAddFunctionOperator(
        task_id="function",
        substra_conn_id=conns[0],
        name="airflow cassettes folder function",
        archive=str(folder),
        inputs=assets.function_inputs("noop"),
        outputs=assets.function_outputs("noop"),
        description=str(assets.write_description(workdir / "folder-function.md", "folder function")),
        permissions={"public": True, "authorized_ids": []},
    )
    first = op.execute(context_for("add function"))
    assert first["created"]
    assert op.execute(context_for("add function")) == {**first, "created": False}


def test_register_dataset_operator_refused_by_the_server_creates_nothing(
    conns: list[str], tmp_path: Path, workdir: Path, client1: SubstraClient
) -> None:
    name = "airflow cassettes refused dataset"
    op = SubstraRegisterDatasetOperator(
        task_id="register",
        substra_conn_id=conns[0],
        name=name,
        opener=str(assets.opener_path()),
        sample_paths=[str(p) for p in assets.generate_samples(1, workdir / "refused-samples", day=13, n_samples=1)],
        permissions={"public": False, "authorized_ids": ["NoSuchOrgMSP"]},
        ledger_dir=str(tmp_path),
    )
    with pytest.raises(AirflowFailException, match="invalid.*NoSuchOrgMSP") as refused:  # a retry would be refused too
        op.execute(context_for("register refused"))
    assert isinstance(refused.value.__cause__, exc.InvalidRequest)
    assert client1.list_dataset(filters={"name": name}) == []


def test_add_data_samples_operator_to_an_unknown_dataset(conns: list[str], tmp_path: Path, workdir: Path) -> None:
    unknown = stable_key(MODULE, "no such dataset")
    folder = workdir / "orphan-samples"
    assets.generate_samples(1, folder, day=14, n_samples=1)
    op = SubstraAddDataSamplesOperator(
        task_id="samples",
        substra_conn_id=conns[0],
        dataset_key=unknown,
        samples_dir=str(folder),
        ledger_dir=str(tmp_path),
    )
    with pytest.raises(exc.NotFound, match=unknown):
        op.execute(context_for("add samples unknown"))


def test_add_function_operator_from_an_archive_and_a_refused_archive(conns: list[str], workdir: Path) -> None:
    common = {
        "task_id": "function",
        "substra_conn_id": conns[0],
        "inputs": assets.function_inputs("noop"),
        "outputs": assets.function_outputs("noop"),
        "permissions": {"public": True, "authorized_ids": []},
    }
    archive = assets.build_function_archive("noop", workdir / "archive-function")
    first = SubstraAddFunctionOperator(name="airflow cassettes archive function", archive=str(archive), **common)
    created = first.execute(context_for("add function archive"))
    assert created["created"] and created["function_key"]
    no_dockerfile = workdir / "no-dockerfile.zip"
    with zipfile.ZipFile(no_dockerfile, "w") as zipped:
        zipped.writestr("function.py", (assets.ASSETS_DIR / "function.py").read_text())
        zipped.writestr("README.md", "no Dockerfile here")
    refused = SubstraAddFunctionOperator(name="airflow cassettes no dockerfile", archive=str(no_dockerfile), **common)
    with pytest.raises(AirflowFailException, match="refused the request as invalid.*Dockerfile") as raised:
        refused.execute(context_for("add function refused"))
    assert isinstance(raised.value.__cause__, exc.InvalidRequest)


# -- compute plan operator -------------------------------------------------------------------------------


def test_plan_operator_blocking_success_then_a_retry_finds_the_plan(
    conns: list[str], orgs: list[Target], world: dict[str, Any], client1: SubstraClient
) -> None:
    context = context_for("blocking success")
    spec = noop_chain(world, 2, "blocking success")
    assert plan_op(orgs, conns[0], spec).execute(context) == plan_key_of(context)
    assert context["ti"].xcom["compute_plan_url"] == f"{orgs[0].url}/compute_plan/{plan_key_of(context)}/"
    assert plan_op(orgs, conns[0], spec).execute(context_for("blocking success")) == plan_key_of(context)
    assert [p.key for p in client1.list_compute_plan(filters={"key": [plan_key_of(context)]})] == [plan_key_of(context)]
    assert len(client1.list_task(filters={"compute_plan_key": [plan_key_of(context)]})) == 2


def test_plan_operator_failure_names_the_task_and_its_logs_and_a_retry_submits_attempt_2(
    conns: list[str], orgs: list[Target], world: dict[str, Any], client1: SubstraClient
) -> None:
    context = context_for("blocking failure")
    spec = failing_plan(world, "blocking failure")
    with pytest.raises(AirflowException) as failed:
        plan_op(orgs, conns[0], spec).execute(context)
    assert not isinstance(failed.value, AirflowFailException)  # a retry may run the next attempt
    run_key = plan_key_of(context)
    fail_task = steps.derive_task_key(run_key, "fail")
    assert fail_task in str(failed.value) and MARKER in str(failed.value)
    # with on_failed="fail", the next try reports the failed plan instead of submitting another
    with pytest.raises(AirflowFailException) as refused:
        plan_op(orgs, conns[0], spec, on_failed="fail").execute(context_for("blocking failure"))
    assert f"attempt 1 of run {run_key}" in str(refused.value) and fail_task in str(refused.value)
    # by default it submits attempt 2 (not waited for here: it runs the same failing function)
    retry = context_for("blocking failure")
    second = plan_op(orgs, conns[0], spec, wait_for_completion=False).execute(retry)
    assert second == steps.attempt_key(run_key, 2) == retry["ti"].xcom["compute_plan_key"]
    plans = client1.list_compute_plan(filters={"key": [run_key, second]})
    assert sorted((p.key, p.metadata["substra_flows_attempt"]) for p in plans) == sorted(
        [(run_key, "1"), (second, "2")]
    )
    assert all(p.metadata["substra_flows_run"] == run_key for p in plans)
    (task,) = client1.list_task(filters={"compute_plan_key": [second]})
    assert task.key == steps.derive_task_key(second, "fail")


def test_plan_operator_timeout(conns: list[str], orgs: list[Target], world: dict[str, Any], client1: SubstraClient):
    context = context_for("blocking timeout")
    with pytest.raises(AirflowException) as timed_out:
        plan_op(orgs, conns[0], noop_chain(world, LONG_CHAIN, "timeout"), timeout=0).execute(context)
    assert not isinstance(timed_out.value, AirflowFailException) and "timeout" in str(timed_out.value)
    client1.cancel_compute_plan(plan_key_of(context))


def test_plan_operator_deferred_then_resumed(conns: list[str], orgs: list[Target], world: dict[str, Any]) -> None:
    context = context_for("deferrable")
    op = plan_op(orgs, conns[0], noop_chain(world, 4, "deferrable"), deferrable=True, timeout=600)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    (event,) = run_trigger(deferred.value.trigger)
    assert event["status"] == "success" and event["key"] == plan_key_of(context)
    resumed = plan_op(orgs, conns[0], noop_chain(world, 4, "deferrable"), deferrable=True, timeout=600)
    assert resumed.execute_complete(context, event) == plan_key_of(context)


def test_plan_operator_deferrable_with_an_already_finished_plan_does_not_defer(
    conns: list[str], orgs: list[Target], world: dict[str, Any]
) -> None:
    op = plan_op(orgs, conns[0], {"name": "ignored"}, compute_plan_key=world["done_plan"], deferrable=True)
    assert op.execute(context_for("already finished")) == world["done_plan"]


def test_plan_operator_deferred_then_failed_and_an_already_failed_plan_does_not_defer(
    conns: list[str], orgs: list[Target], world: dict[str, Any]
) -> None:
    context = context_for("deferrable failure")
    spec = failing_plan(world, "deferrable failure")
    with pytest.raises(TaskDeferred) as deferred:
        plan_op(orgs, conns[0], spec, deferrable=True, timeout=600).execute(context)
    (event,) = run_trigger(deferred.value.trigger)
    fail_task = steps.derive_task_key(plan_key_of(context), "fail")
    assert event["status"] == "failed" and event["failed_task_keys"] == [fail_task]
    with pytest.raises(AirflowException) as failed:
        plan_op(orgs, conns[0], spec, deferrable=True, timeout=600).execute_complete(context, event)
    assert fail_task in str(failed.value) and MARKER in str(failed.value)
    # with on_failed="fail", a retry of the task finds the failed plan and fails at once, without deferring
    with pytest.raises(AirflowFailException) as again:
        plan_op(orgs, conns[0], spec, deferrable=True, timeout=600, on_failed="fail").execute(context)
    assert fail_task in str(again.value)


def test_plan_operator_deferred_past_its_timeout(
    conns: list[str], orgs: list[Target], world: dict[str, Any], client1: SubstraClient
) -> None:
    context = context_for("deferrable timeout")
    op = plan_op(orgs, conns[0], noop_chain(world, LONG_CHAIN, "deferrable timeout"), deferrable=True, timeout=0)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    (event,) = run_trigger(deferred.value.trigger)
    assert event["status"] == "timeout" and event["key"] == plan_key_of(context)
    with pytest.raises(AirflowException) as timed_out:
        op.execute_complete(context, event)
    assert not isinstance(timed_out.value, AirflowFailException)  # a retry may still see the plan finish
    client1.cancel_compute_plan(plan_key_of(context))


def test_get_performances_and_cancel_operators_on_an_unknown_plan(conns: list[str]) -> None:
    unknown = stable_key(MODULE, "no such plan")
    perf = SubstraGetPerformancesOperator(task_id="perf", substra_conn_id=conns[0], compute_plan_key=unknown)
    with pytest.raises(exc.NotFound, match=unknown):
        perf.execute(context_for("performances unknown", "perf"))
    cancel = SubstraCancelComputePlanOperator(task_id="cancel", substra_conn_id=conns[0], compute_plan_key=unknown)
    with pytest.raises(exc.NotFound, match=unknown):
        cancel.execute(context_for("cancel unknown", "cancel"))


def test_get_performances_operator(conns: list[str], world: dict[str, Any]) -> None:
    op = SubstraGetPerformancesOperator(task_id="perf", substra_conn_id=conns[1], compute_plan_key=world["done_plan"])
    rows = op.execute(context_for("performances", "perf"))
    assert {r["worker"] for r in rows} == set(world["ids"])
    assert all(r["identifier"] == "performance" and 0 <= r["performance"] <= 1 for r in rows)


def test_cancel_operator(conns: list[str], orgs: list[Target], world: dict[str, Any], client1: SubstraClient) -> None:
    context = context_for("cancel")
    plan_op(orgs, conns[0], noop_chain(world, LONG_CHAIN, "to cancel"), wait_for_completion=False).execute(context)
    cancel = SubstraCancelComputePlanOperator(
        task_id="cancel", substra_conn_id=conns[0], compute_plan_key=plan_key_of(context)
    )
    assert cancel.execute(context_for("cancel", "cancel")) == {
        "compute_plan_key": plan_key_of(context),
        "canceled": True,
    }
    assert client1.get_compute_plan(plan_key_of(context)).status.value == "PLAN_STATUS_CANCELED"
    assert cancel.execute(context_for("cancel", "cancel"))["canceled"] is False


# -- sensors -------------------------------------------------------------------------------------------


def sensor_kwargs(orgs: list[Target], **kwargs: Any) -> dict[str, Any]:
    return {"task_id": "sensor", "poke_interval": orgs[0].polling_period, "deferrable": False, **kwargs}


def test_plan_sensor_poke_mode_on_a_running_plan(conns: list[str], orgs: list[Target], world: dict[str, Any]) -> None:
    context = context_for("sensor poke")
    plan_op(orgs, conns[0], noop_chain(world, 3, "sensor poke"), wait_for_completion=False).execute(context)
    sensor = SubstraComputePlanSensor(
        compute_plan_key=plan_key_of(context), **sensor_kwargs(orgs, substra_conn_id=conns[1])
    )
    result = sensor.execute(context_for("sensor poke", "sensor"))
    assert result == {"kind": "compute_plan", "key": plan_key_of(context), "status": "PLAN_STATUS_DONE"}


def test_plan_sensor_fails_with_the_failed_task_and_its_logs(
    conns: list[str], orgs: list[Target], world: dict[str, Any]
) -> None:
    context = context_for("sensor failure")
    plan_op(orgs, conns[0], failing_plan(world, "sensor failure"), wait_for_completion=False).execute(context)
    sensor = SubstraComputePlanSensor(
        compute_plan_key=plan_key_of(context), **sensor_kwargs(orgs, substra_conn_id=conns[0])
    )
    with pytest.raises(AirflowFailException) as failed:
        sensor.execute(context_for("sensor failure", "sensor"))
    assert steps.derive_task_key(plan_key_of(context), "fail") in str(failed.value) and MARKER in str(failed.value)


def test_task_sensor_success_and_failure(conns: list[str], orgs: list[Target], world: dict[str, Any]) -> None:
    context = context_for("task sensor")
    plan_op(orgs, conns[0], failing_plan(world, "task sensor"), wait_for_completion=False).execute(context)
    fail_task = steps.derive_task_key(plan_key_of(context), "fail")
    with pytest.raises(AirflowFailException) as failed:
        SubstraTaskSensor(task_key=fail_task, **sensor_kwargs(orgs, substra_conn_id=conns[0])).execute(context)
    assert fail_task in str(failed.value) and MARKER in str(failed.value)
    done_task = assets.task_key(world["done_plan"], "aggregate/0")
    result = SubstraTaskSensor(task_key=done_task, **sensor_kwargs(orgs, substra_conn_id=conns[1])).execute(context)
    assert result == {"kind": "task", "key": done_task, "status": "STATUS_DONE"}


def test_plan_sensor_timeout_and_reschedule(
    conns: list[str], orgs: list[Target], world: dict[str, Any], client1: SubstraClient
) -> None:
    context = context_for("sensor timeout")
    plan_op(orgs, conns[0], noop_chain(world, LONG_CHAIN, "sensor timeout"), wait_for_completion=False).execute(context)
    key = plan_key_of(context)
    with pytest.raises(AirflowSensorTimeout):
        SubstraComputePlanSensor(
            compute_plan_key=key, **sensor_kwargs(orgs, substra_conn_id=conns[0], timeout=0)
        ).execute(context)
    rescheduling = SubstraComputePlanSensor(
        compute_plan_key=key, **sensor_kwargs(orgs, substra_conn_id=conns[0], mode="reschedule", poke_interval=60)
    )
    with pytest.raises(AirflowRescheduleException):
        rescheduling.execute(context)
    client1.cancel_compute_plan(key)


def test_plan_sensor_deferrable(conns: list[str], orgs: list[Target], world: dict[str, Any]) -> None:
    context = context_for("sensor deferrable")
    plan_op(orgs, conns[0], noop_chain(world, 4, "sensor deferrable"), wait_for_completion=False).execute(context)
    sensor = SubstraComputePlanSensor(
        compute_plan_key=plan_key_of(context), **sensor_kwargs(orgs, substra_conn_id=conns[0], deferrable=True)
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    (event,) = run_trigger(deferred.value.trigger)
    assert sensor.execute_complete(context, event)["status"] == "PLAN_STATUS_DONE"


def test_plan_sensor_deferred_failure_timeout_and_soft_fail(
    conns: list[str], orgs: list[Target], world: dict[str, Any], client1: SubstraClient
) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    failing = context_for("sensor deferred failure")
    plan_op(orgs, conns[0], failing_plan(world, "sensor deferred failure"), wait_for_completion=False).execute(failing)
    key = plan_key_of(failing)
    sensor = SubstraComputePlanSensor(
        compute_plan_key=key, **sensor_kwargs(orgs, substra_conn_id=conns[0], deferrable=True)
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(failing)
    (failed,) = run_trigger(deferred.value.trigger)
    with pytest.raises(AirflowFailException) as raised:
        sensor.execute_complete(failing, failed)
    assert steps.derive_task_key(key, "fail") in str(raised.value) and MARKER in str(raised.value)
    soft = SubstraComputePlanSensor(
        compute_plan_key=key, **sensor_kwargs(orgs, substra_conn_id=conns[0], deferrable=True, soft_fail=True)
    )
    with pytest.raises(AirflowSkipException):  # the plan has failed by now: skipped at the first look
        soft.execute(failing)

    running = context_for("sensor deferred timeout")
    plan_op(
        orgs, conns[0], noop_chain(world, LONG_CHAIN, "sensor deferred timeout"), wait_for_completion=False
    ).execute(running)
    late = SubstraComputePlanSensor(
        compute_plan_key=plan_key_of(running),
        **sensor_kwargs(orgs, substra_conn_id=conns[0], deferrable=True, timeout=0),
    )
    with pytest.raises(TaskDeferred) as deferred:
        late.execute(running)
    (timed_out,) = run_trigger(deferred.value.trigger)
    assert timed_out["status"] == "timeout"
    with pytest.raises(AirflowSensorTimeout):
        late.execute_complete(running, timed_out)
    client1.cancel_compute_plan(plan_key_of(running))


def test_task_sensor_timeout_reschedule_and_deferrable(
    conns: list[str], orgs: list[Target], world: dict[str, Any], client1: SubstraClient
) -> None:
    context = context_for("task sensor modes")
    plan_op(orgs, conns[0], noop_chain(world, LONG_CHAIN, "task sensor modes"), wait_for_completion=False).execute(
        context
    )
    last = steps.derive_task_key(plan_key_of(context), f"noop-{LONG_CHAIN - 1}")
    with pytest.raises(AirflowSensorTimeout):
        SubstraTaskSensor(task_key=last, **sensor_kwargs(orgs, substra_conn_id=conns[0], timeout=0)).execute(context)
    with pytest.raises(AirflowRescheduleException):
        SubstraTaskSensor(
            task_key=last, **sensor_kwargs(orgs, substra_conn_id=conns[0], mode="reschedule", poke_interval=60)
        ).execute(context)
    deferring = SubstraTaskSensor(task_key=last, **sensor_kwargs(orgs, substra_conn_id=conns[1], deferrable=True))
    with pytest.raises(TaskDeferred) as deferred:
        deferring.execute(context)
    assert deferred.value.trigger.serialize()[1]["task_key"] == last
    client1.cancel_compute_plan(plan_key_of(context))
    (canceled,) = run_trigger(deferred.value.trigger)
    assert canceled["status"] == "canceled"
    with pytest.raises(AirflowFailException):
        deferring.execute_complete(context, canceled)


# -- triggers ------------------------------------------------------------------------------------------


def test_plan_trigger_outcomes(conns: list[str], orgs: list[Target], world: dict[str, Any], client1: SubstraClient):
    period = orgs[0].polling_period
    (done,) = run_trigger(SubstraComputePlanTrigger(world["done_plan"], conns[1], polling_period_seconds=period))
    assert done["status"] == "success" and done["asset_status"] == "PLAN_STATUS_DONE"

    failing = context_for("trigger failure")
    plan_op(orgs, conns[0], failing_plan(world, "trigger failure"), wait_for_completion=False).execute(failing)
    (failed,) = run_trigger(SubstraComputePlanTrigger(plan_key_of(failing), conns[0], polling_period_seconds=period))
    fail_task = steps.derive_task_key(plan_key_of(failing), "fail")
    assert failed["status"] == "failed" and failed["failed_task_keys"] == [fail_task]
    assert MARKER in failed["logs"][fail_task] and MARKER in failed["message"]

    running = context_for("trigger timeout")
    plan_op(orgs, conns[0], noop_chain(world, LONG_CHAIN, "trigger timeout"), wait_for_completion=False).execute(
        running
    )
    trigger = SubstraComputePlanTrigger(
        plan_key_of(running), conns[0], end_time=time.time() - 1, polling_period_seconds=1
    )
    (timed_out,) = run_trigger(trigger)
    assert timed_out["status"] == "timeout" and timed_out["asset_status"] != "PLAN_STATUS_DONE"
    client1.cancel_compute_plan(plan_key_of(running))
    (canceled,) = run_trigger(SubstraComputePlanTrigger(plan_key_of(running), conns[0], polling_period_seconds=period))
    assert canceled["status"] == "canceled"


def test_task_trigger_outcomes(conns: list[str], orgs: list[Target], world: dict[str, Any]) -> None:
    period = orgs[0].polling_period
    context = context_for("task trigger")
    plan_op(orgs, conns[0], noop_chain(world, 3, "task trigger"), wait_for_completion=False).execute(context)
    last = steps.derive_task_key(plan_key_of(context), "noop-2")
    (done,) = run_trigger(SubstraTaskTrigger(last, conns[1], end_time=time.time() + 600, polling_period_seconds=period))
    assert done == {
        "kind": "task",
        "key": last,
        "status": "success",
        "asset_status": "STATUS_DONE",
        "message": f"task {last} is STATUS_DONE",
    }
    failing = context_for("task trigger failure")
    plan_op(orgs, conns[0], failing_plan(world, "task trigger failure"), wait_for_completion=False).execute(failing)
    fail_task = steps.derive_task_key(plan_key_of(failing), "fail")
    (failed,) = run_trigger(SubstraTaskTrigger(fail_task, conns[0], polling_period_seconds=period))
    assert failed["status"] == "failed" and MARKER in failed["message"]


def test_task_trigger_timeout(conns: list[str], orgs: list[Target], world: dict[str, Any], client1: SubstraClient):
    context = context_for("task trigger timeout")
    plan_op(orgs, conns[0], noop_chain(world, LONG_CHAIN, "task trigger timeout"), wait_for_completion=False).execute(
        context
    )
    last = steps.derive_task_key(plan_key_of(context), f"noop-{LONG_CHAIN - 1}")
    (timed_out,) = run_trigger(SubstraTaskTrigger(last, conns[0], end_time=time.time() - 1, polling_period_seconds=1))
    assert timed_out["status"] == "timeout" and timed_out["key"] == last and timed_out["asset_status"] != "STATUS_DONE"
    client1.cancel_compute_plan(plan_key_of(context))


def test_triggers_turn_errors_into_one_error_event(orgs: list[Target], world: dict[str, Any], monkeypatch) -> None:
    bad = "wrong-token-fedcba9876543210"
    monkeypatch.setenv(*conn_env("substra_bad", {"conn_type": "substra", "host": orgs[0].url, "password": bad}))
    for trigger in (
        SubstraComputePlanTrigger(world["done_plan"], "substra_bad", polling_period_seconds=0),
        SubstraTaskTrigger(assets.task_key(world["done_plan"], "aggregate/0"), "substra_bad", polling_period_seconds=0),
    ):
        events = run_trigger(trigger)
        assert len(events) == 1
        (error,) = events
        assert error["status"] == "error" and "AuthenticationError" in error["message"]
        assert bad not in repr(error)


def test_the_cassettes_hold_no_credentials() -> None:
    """Every Authorization header and login field of this module's cassettes is the scrubbed placeholder."""
    import yaml

    folder = CASSETTES / "airflow" / "test_cassettes"
    files = sorted(folder.glob("*.yaml"))
    assert files, f"no cassette in {folder}"
    for path in files:
        for exchange in yaml.safe_load(path.read_text())["interactions"]:
            for name, values in exchange["request"]["headers"].items():
                if name.lower() == "authorization":
                    assert values == [f"Token {REDACTED}"], path.name
            body = str(exchange["request"].get("body") or "")
            assert "password=" not in body or f"password={REDACTED}" in body, path.name
