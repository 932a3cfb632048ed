"""Operator unit tests (fake steps, real wait machine): parameters, XCom, idempotent keys, waits, kills."""

from __future__ import annotations

import datetime as dt
import enum
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from airflow_provider.operators.substra import (
    SubstraAddComputePlanOperator,
    SubstraAddDataSamplesOperator,
    SubstraAddFunctionOperator,
    SubstraCancelComputePlanOperator,
    SubstraGetPerformancesOperator,
    SubstraRegisterDatasetOperator,
    default_deferrable,
    derive_compute_plan_key,
    sample_folders,
    to_jsonable,
)
from airflow_provider.triggers.substra import WAIT_TRY_XCOM_KEY, SubstraComputePlanTrigger
from substra_flows.steps import attempt_key
from tests.airflow.conftest import UNIT_TOKEN
from tests.airflow.fakes import (
    PLAN_CANCELED,
    PLAN_DOING,
    PLAN_DONE,
    PLAN_FAILED,
    FakeSubstra,
    FakeTI,
    wait_until,
)

TASK = "8c2e4b6a-1f3d-4e5c-9a7b-0d1e2f3a4b5c"
SPEC = {"name": "nightly", "tasks": [{"task_id": TASK, "function_key": "f", "worker": "MyOrg1MSP"}]}


def plan_operator(**kwargs: Any) -> SubstraAddComputePlanOperator:
    kwargs.setdefault("task_id", "task")
    kwargs.setdefault("compute_plan", SPEC)
    kwargs.setdefault("polling_period_seconds", 0)
    kwargs.setdefault("deferrable", False)
    return SubstraAddComputePlanOperator(**kwargs)


def derived_key() -> str:
    ti = FakeTI()
    return derive_compute_plan_key(ti.dag_id, ti.run_id, ti.task_id)


def assert_secret_free(*values: Any) -> None:
    for value in values:
        text = json.dumps(value)  # also proves the value is JSON
        assert UNIT_TOKEN not in text


# -- registration operators ---------------------------------------------------------------------


def test_sample_folders_from_a_list_and_the_sub_folders_of_a_directory(tmp_path: Path) -> None:
    for name in ("b", "a"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("not a sample")
    assert sample_folders(["/x"], str(tmp_path)) == ["/x", str(tmp_path / "a"), str(tmp_path / "b")]
    assert sample_folders("/one", None) == ["/one"]
    with pytest.raises(FileNotFoundError, match="samples_dir"):
        sample_folders(None, str(tmp_path / "missing"))


def test_register_dataset(fake_substra: FakeSubstra, context: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "s1").mkdir()
    op = SubstraRegisterDatasetOperator(
        task_id="register",
        name="ds",
        opener="/opener.py",
        samples_dir=str(tmp_path),
        permissions={"public": False, "authorized_ids": ["MyOrg2MSP"]},
        metadata={"pipeline": "p"},
        ledger_dir=str(tmp_path / "ledger"),
    )
    result = op.execute(context)
    assert set(result) == {"dataset_key", "sample_keys", "new_sample_keys", "created"}
    assert len(result["sample_keys"]) == 1
    (call,) = fake_substra.called("register_dataset")
    assert call["sample_paths"] == [str(tmp_path / "s1")]
    assert call["permissions"] == {"public": False, "authorized_ids": ["MyOrg2MSP"]}
    assert call["ledger_dir"] == str(tmp_path / "ledger")
    assert_secret_free(result)
    assert {"name", "opener", "sample_paths", "samples_dir", "permissions", "metadata"} <= set(op.template_fields)


def test_add_data_samples(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    op = SubstraAddDataSamplesOperator(task_id="samples", dataset_key="dk", sample_paths=["/a", "/b"])
    keys = op.execute(context)
    assert len(keys) == 2
    assert fake_substra.called("add_data_samples")[0]["dataset_key"] == "dk"
    assert {"dataset_key", "sample_paths", "samples_dir"} <= set(op.template_fields)


def test_add_function(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    inputs = {"model": {"kind": "ASSET_MODEL", "optional": True, "multiple": False}}
    op = SubstraAddFunctionOperator(
        task_id="function", name="train", archive="/fn", inputs=inputs, outputs={"model": {"kind": "ASSET_MODEL"}}
    )
    result = op.execute(context)
    assert set(result) == {"function_key", "created"}
    assert fake_substra.called("register_function")[0]["archive"] == "/fn"
    assert {"name", "archive", "inputs", "outputs"} <= set(op.template_fields)


# -- compute plan: keys and idempotency ------------------------------------------------------------


def test_the_plan_key_is_derived_from_dag_run_and_task(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    fake_substra.script(derived_key(), PLAN_DONE)
    assert plan_operator().execute(context) == derived_key()
    (spec,) = fake_substra.called("submit_compute_plan")
    assert spec["key"] == derived_key()
    assert spec["tasks"] == SPEC["tasks"]
    assert "key" not in SPEC  # the operator's input is not mutated


def test_a_retry_finds_the_plan_instead_of_creating_another(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    fake_substra.script(derived_key(), PLAN_DONE)
    plan_operator().execute(context)
    plan_operator().execute({**context, "ti": FakeTI()})
    keys = [spec["key"] for spec in fake_substra.called("submit_compute_plan")]
    assert keys == [derived_key(), derived_key()]
    assert len(fake_substra.plans) == 1


def test_mapped_tasks_get_one_key_per_map_index() -> None:
    assert derive_compute_plan_key("d", "r", "t", 0) != derive_compute_plan_key("d", "r", "t", 1)
    assert derive_compute_plan_key("d", "r", "t", -1) == derive_compute_plan_key("d", "r", "t")


def test_a_given_key_or_the_spec_key_wins(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    key = "11111111-2222-4333-8444-555555555555"
    fake_substra.script(key, PLAN_DONE)
    assert plan_operator(compute_plan_key=key).execute(context) == key
    assert plan_operator(compute_plan={**SPEC, "key": key}).execute(context) == key
    with pytest.raises(ValueError, match="give only one"):
        plan_operator(compute_plan={**SPEC, "key": key}, compute_plan_key=derived_key()).execute(context)


def test_key_and_link_are_in_xcom_before_waiting(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    seen: dict[str, Any] = {}
    original = fake_substra.wait_compute_plan

    def spy(client: Any, key: str, **kwargs: Any) -> Any:
        seen.update(context["ti"].xcom)
        return original(client, key, **kwargs)

    fake_substra.wait_compute_plan = spy  # type: ignore[method-assign]
    fake_substra.script(derived_key(), PLAN_DONE)
    plan_operator().execute(context)
    url = f"https://substra-frontend.invalid/compute_plans/{derived_key()}/tasks"
    assert seen == {
        "compute_plan_key": derived_key(),
        "compute_plan_url": url,
        "_link_SubstraComputePlanLink": url,
    }
    assert_secret_free(context["ti"].xcom)


def test_without_waiting_the_key_returns_at_once(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    assert plan_operator(wait_for_completion=False).execute(context) == derived_key()
    assert not fake_substra.called("wait_compute_plan")


# -- compute plan: blocking wait ------------------------------------------------------------------


def test_blocking_wait_until_done(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    fake_substra.script(derived_key(), PLAN_DOING, PLAN_DOING, PLAN_DONE)
    assert plan_operator().execute(context) == derived_key()
    assert fake_substra.fetches[derived_key()] == 3


def test_a_failed_plan_fails_the_try_with_the_log_tail_and_the_next_try_submits_attempt_2(
    fake_substra: FakeSubstra, context: dict[str, Any]
) -> None:
    fake_substra.script(derived_key(), PLAN_DOING, PLAN_FAILED, failed_task_key=TASK, logs="KeyError: 'x3'")
    with pytest.raises(AirflowException) as caught:
        plan_operator().execute(context)
    assert not isinstance(caught.value, AirflowFailException)  # retries stay allowed: they start a new attempt
    assert TASK in str(caught.value) and "KeyError: 'x3'" in str(caught.value)
    second = attempt_key(derived_key(), 2)
    fake_substra.script(second, PLAN_DOING, PLAN_DONE)
    retry = {**context, "ti": FakeTI()}
    retry["ti"].try_number = 2
    assert plan_operator().execute(retry) == second
    assert retry["ti"].xcom["compute_plan_key"] == second
    assert second in retry["ti"].xcom["compute_plan_url"]
    assert fake_substra.attempts == {derived_key(): [derived_key(), second]}
    # and one more try after the DONE attempt 2 creates nothing
    assert plan_operator().execute({**context, "ti": FakeTI()}) == second
    assert fake_substra.attempts == {derived_key(): [derived_key(), second]}


@pytest.mark.parametrize("ended", [PLAN_FAILED, PLAN_CANCELED])
def test_on_failed_fail_fails_the_task_for_good(fake_substra: FakeSubstra, context: dict[str, Any], ended: str) -> None:
    fake_substra.script(derived_key(), ended, failed_task_key=TASK)
    with pytest.raises(AirflowFailException, match=derived_key()):
        plan_operator(on_failed="fail").execute(context)
    with pytest.raises(AirflowFailException, match="on_failed='fail'"):
        plan_operator(on_failed="fail").execute({**context, "ti": FakeTI()})
    assert fake_substra.attempts == {derived_key(): [derived_key()]}


def test_a_bad_on_failed_is_refused_when_the_dag_is_parsed() -> None:
    with pytest.raises(ValueError, match="on_failed='again'"):
        plan_operator(on_failed="again")


def test_a_timeout_fails_the_task_but_allows_a_retry(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    fake_substra.script(derived_key(), PLAN_DOING)
    with pytest.raises(AirflowException) as caught:
        plan_operator(timeout=0).execute(context)
    assert not isinstance(caught.value, AirflowFailException)
    assert "timeout" in str(caught.value)


def test_killing_a_blocking_wait_cancels_the_plan(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    fake_substra.sleep = lambda seconds: time.sleep(0.01)
    fake_substra.script(derived_key(), PLAN_DOING)
    op = plan_operator()
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            op.execute(context)
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: fake_substra.fetches.get(derived_key(), 0) >= 2)
    op.on_kill()
    thread.join(10)
    assert fake_substra.called("cancel_compute_plan") == [derived_key()]
    assert isinstance(outcome["error"], AirflowException)
    assert PLAN_CANCELED in str(outcome["error"])


def test_on_kill_does_nothing_when_told_not_to_or_before_submitting(fake_substra: FakeSubstra) -> None:
    plan_operator().on_kill()
    op = plan_operator(cancel_on_kill=False)
    op._submitted_key = derived_key()
    op.on_kill()
    assert not fake_substra.called("cancel_compute_plan")


# -- compute plan: deferrable ---------------------------------------------------------------------


def test_deferrable_hands_the_wait_to_the_trigger(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    fake_substra.script(derived_key(), PLAN_DOING)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        plan_operator(deferrable=True, timeout=600, polling_period_seconds=7).execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, SubstraComputePlanTrigger)
    assert trigger.compute_plan_key == derived_key()
    assert trigger.polling_period_seconds == 7
    assert trigger.cancel_on_kill is True
    assert before + 600 <= trigger.end_time <= time.time() + 600
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.kwargs == {"compute_plan_key": derived_key()}
    assert deferred.value.timeout > dt.timedelta(seconds=600)
    assert context["ti"].xcom["compute_plan_key"] == derived_key()
    assert context["ti"].xcom[WAIT_TRY_XCOM_KEY] == 1  # the try that waits: a stopped older try cancels nothing


def test_a_deferred_retry_waits_for_the_new_attempt(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    fake_substra.script(derived_key(), PLAN_CANCELED)
    fake_substra.script(attempt_key(derived_key(), 2), PLAN_DOING)
    fake_substra.attempts[derived_key()] = [derived_key()]
    context["ti"].try_number = 3
    with pytest.raises(TaskDeferred) as deferred:
        plan_operator(deferrable=True).execute(context)
    second = attempt_key(derived_key(), 2)
    assert deferred.value.trigger.compute_plan_key == second
    assert deferred.value.kwargs == {"compute_plan_key": second}
    assert context["ti"].xcom[WAIT_TRY_XCOM_KEY] == 3
    op = plan_operator(deferrable=True)
    done = {"kind": "compute_plan", "key": second, "status": "success", "message": "done"}
    assert op.execute_complete(context, done, compute_plan_key=second) == second
    with pytest.raises(AirflowException, match="expected compute_plan"):
        op.execute_complete(context, {**done, "key": derived_key()}, compute_plan_key=second)


def test_deferrable_does_not_defer_for_a_plan_already_done(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    fake_substra.script(derived_key(), PLAN_DONE)
    assert plan_operator(deferrable=True).execute(context) == derived_key()


def test_deferrable_fails_at_once_for_a_plan_already_failed(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    """A plan that ends between its submission and the first look fails the try without deferring."""
    fake_substra.script(derived_key(), PLAN_FAILED, failed_task_key=TASK)
    with pytest.raises(AirflowException, match=TASK):
        plan_operator(deferrable=True).execute(context)


def event(status: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "compute_plan", "key": derived_key(), "status": status, "message": f"it is {status}", **fields}


def test_execute_complete_checks_the_event(context: dict[str, Any], unit_conn: dict[str, Any]) -> None:
    op = plan_operator(deferrable=True)
    assert op.execute_complete(context, event("success")) == derived_key()
    for status in ("failed", "canceled"):  # a retry may run the next attempt; with on_failed="fail" it may not
        with pytest.raises(AirflowException, match=f"it is {status}") as caught:
            op.execute_complete(context, event(status, failed_task_keys=[TASK]))
        assert not isinstance(caught.value, AirflowFailException)
        with pytest.raises(AirflowFailException, match=f"it is {status}"):
            plan_operator(deferrable=True, on_failed="fail").execute_complete(context, event(status))
    with pytest.raises(AirflowException, match="it is timeout"):
        op.execute_complete(context, event("timeout"))
    with pytest.raises(AirflowException, match="waiting for compute plan .* failed: it is error"):
        op.execute_complete(context, event("error"))
    with pytest.raises(AirflowException, match="expected compute_plan"):
        op.execute_complete(context, {**event("success"), "key": TASK})
    with pytest.raises(AirflowException):
        op.execute_complete(context, None)


def test_deferrable_defaults_to_airflows_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert default_deferrable() is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert default_deferrable() is False


# -- reading and cancelling ------------------------------------------------------------------------


def test_get_performances_returns_json_rows_and_the_link(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    rows = SubstraGetPerformancesOperator(task_id="perf", compute_plan_key=derived_key()).execute(context)
    assert rows == [
        {"compute_plan_key": derived_key(), "worker": "MyOrg1MSP", "identifier": "performance", "performance": 0.9}
    ]
    assert context["ti"].xcom["compute_plan_key"] == derived_key()
    assert_secret_free(rows, context["ti"].xcom)


def test_cancel_operator(fake_substra: FakeSubstra, context: dict[str, Any]) -> None:
    fake_substra.script(derived_key(), PLAN_DOING)
    op = SubstraCancelComputePlanOperator(task_id="cancel", compute_plan_key=derived_key())
    assert op.execute(context) == {"compute_plan_key": derived_key(), "canceled": True}
    assert op.execute(context) == {"compute_plan_key": derived_key(), "canceled": False}


def test_to_jsonable() -> None:
    class Colour(enum.Enum):
        red = "RED"

    value = {"when": dt.datetime(2025, 1, 2, 3, 4, 5), "path": Path("/x"), "c": Colour.red, "t": (1, None)}
    assert to_jsonable(value) == {"when": "2025-01-02T03:04:05", "path": "/x", "c": "RED", "t": [1, None]}


def test_templated_fields_of_the_plan_operators() -> None:
    assert {"compute_plan", "compute_plan_key", "substra_conn_id"} <= set(SubstraAddComputePlanOperator.template_fields)
    assert "compute_plan_key" in SubstraGetPerformancesOperator.template_fields
    assert "compute_plan_key" in SubstraCancelComputePlanOperator.template_fields


def test_a_blocking_wait_logs_its_progress_and_the_link_at_submission(
    fake_substra: FakeSubstra, context: dict[str, Any], capfd: pytest.CaptureFixture
) -> None:
    fake_substra.script(derived_key(), PLAN_DOING, PLAN_DOING, PLAN_DOING, PLAN_DONE)
    plan_operator().execute(context)
    printed = capfd.readouterr()
    lines = [line for line in (printed.out + printed.err).splitlines() if f"compute plan {derived_key()}: " in line]
    # the first look and each change, not every poll (the fake's plans have no task counts)
    assert [line.split(f"{derived_key()}: ")[1].split(",")[0] for line in lines] == [PLAN_DOING, PLAN_DONE]
    assert "elapsed" in lines[-1]
    url = f"https://substra-frontend.invalid/compute_plans/{derived_key()}/tasks"
    assert f"(attempt 1) created, 1 task(s) added now: {url}" in printed.out + printed.err


def test_execute_complete_without_kwargs_uses_the_key_this_try_pushed(
    fake_substra: FakeSubstra, context: dict[str, Any]
) -> None:
    """``dag.test()`` resumes with the event only: the attempt's key then comes from this try's XCom."""
    second = attempt_key(derived_key(), 2)
    context["ti"].xcom["compute_plan_key"] = second
    done = {"kind": "compute_plan", "key": second, "status": "success", "message": "done"}
    assert plan_operator(deferrable=True).execute_complete(context, done) == second
