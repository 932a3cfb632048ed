"""compat.Client against the in-process fake: the SDK's signatures, models and exception classes."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
import substra
from substra.sdk import exceptions as sdk_exc
from substra.sdk import models as sdk_models

from substra_flows import SubstraClient
from substra_flows import exceptions as flows_exc
from substra_flows.compat import Client
from substra_flows.compat import exceptions as twins

from ._fakes import BASE, TOKEN, FakeAdapter, MiniServer

pytestmark = pytest.mark.fidelity


def k() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def make_compat(adapter: FakeAdapter, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Client]:
    for name in list(__import__("os").environ):
        if name.startswith("SUBSTRA_"):
            monkeypatch.delenv(name)

    def make(**kwargs: Any) -> Client:
        session = requests.Session()
        session.mount("http://", adapter)
        client = Client(url=BASE, token=TOKEN, session=session, max_attempts=1, **kwargs)
        client._sleep = lambda _: None
        return client

    return make


@pytest.fixture
def compat(make_compat: Callable[..., Client], server: MiniServer) -> Client:
    return make_compat()


# -- the SDK's surface ----------------------------------------------------------------------------------


SDK_PUBLIC = sorted(n for n, v in vars(substra.Client).items() if not n.startswith("_"))


@pytest.mark.parametrize("name", SDK_PUBLIC)
def test_every_public_name_of_the_sdk_client_accepts_the_sdk_call(name: str) -> None:
    """Each SDK parameter exists here, of the same kind, with the same default; extras are optional."""
    sdk_attr = inspect.getattr_static(substra.Client, name)
    ours = inspect.getattr_static(Client, name)
    if isinstance(sdk_attr, property):
        assert isinstance(ours, property), name
        return
    sdk_sig, our_sig = inspect.signature(sdk_attr), inspect.signature(ours)
    ours_params = our_sig.parameters
    for param in sdk_sig.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            assert any(p.kind is p.VAR_KEYWORD for p in ours_params.values()), name
            continue
        if param.kind is param.VAR_POSITIONAL:
            assert any(p.kind is p.VAR_POSITIONAL for p in ours_params.values()), name
            continue
        assert param.name in ours_params, (name, param.name)
        mine = ours_params[param.name]
        assert mine.kind == param.kind, (name, param.name, mine.kind, param.kind)
        assert mine.default == param.default, (name, param.name, mine.default, param.default)
    positional_sdk = [p.name for p in sdk_sig.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    positional_ours = [p.name for p in ours_params.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional_ours[: len(positional_sdk)] == positional_sdk, name
    for extra in set(ours_params) - set(sdk_sig.parameters):
        p = ours_params[extra]
        assert p.kind is p.VAR_KEYWORD or p.default is not p.empty, (name, extra)


def test_the_constructor_takes_the_sdk_keywords_and_is_an_sdk_client(compat: Client) -> None:
    sdk_params = set(inspect.signature(substra.Client.__init__).parameters) - {"self"}
    assert sdk_params <= set(inspect.signature(Client.__init__).parameters)
    assert isinstance(compat, substra.Client) and isinstance(compat, SubstraClient)
    assert compat.backend_mode is substra.BackendType.REMOTE
    assert compat.temp_directory is None


def test_subclassable_as_the_sdk_client(server: MiniServer) -> None:
    class Audited(Client):
        seen: list[str] = []

        def get_task(self, key: str) -> sdk_models.Task:
            self.seen.append(key)
            return super().get_task(key)

    audited = Audited(url=BASE, token=TOKEN, session=_session(server.adapter), max_attempts=1)
    with pytest.raises(sdk_exc.NotFound):
        audited.get_task(k())
    assert len(Audited.seen) == 1


def _session(adapter: FakeAdapter) -> requests.Session:
    session = requests.Session()
    session.mount("http://", adapter)
    return session


def test_a_local_backend_type_is_refused_with_an_sdk_error(make_compat: Callable[..., Client]) -> None:
    with pytest.raises(sdk_exc.SDKException) as raised:
        make_compat(backend_type="subprocess")
    assert isinstance(raised.value, flows_exc.ConfigurationError)
    assert isinstance(raised.value, sdk_exc.BadConfiguration)


# -- answers are the SDK's models --------------------------------------------------------------------------


def _plan_with_one_task(compat: Client) -> tuple[str, str]:
    plan, task = k(), k()
    spec = {"key": plan, "name": "p", "tasks": [{"task_id": task, "function_key": k(), "worker": "MyOrg1MSP"}]}
    created = compat.add_compute_plan(spec)
    assert isinstance(created, sdk_models.ComputePlan)
    return plan, task


def test_answers_are_sdk_models_with_sdk_enums(compat: Client) -> None:
    plan_key, task_key = _plan_with_one_task(compat)
    task = compat.get_task(task_key)
    assert type(task) is sdk_models.Task
    assert task.status is sdk_models.ComputeTaskStatus.waiting_for_parent_tasks
    assert type(task.function) is sdk_models.Function
    listed = compat.list_task(filters={"compute_plan_key": [plan_key]})
    assert [type(t) for t in listed] == [sdk_models.Task] and listed[0] == task
    plan = compat.get_compute_plan(plan_key)
    assert type(plan) is sdk_models.ComputePlan and isinstance(plan.status, sdk_models.ComputePlanStatus)


# -- errors of both families -------------------------------------------------------------------------------


def test_http_errors_are_instances_of_both_families(compat: Client) -> None:
    with pytest.raises(sdk_exc.NotFound) as raised:
        compat.get_task(k())
    error = raised.value
    assert isinstance(error, flows_exc.NotFound) and isinstance(error, sdk_exc.HTTPError)
    assert error.status_code == 404 and "GET /org-1/task/" in str(error)
    with pytest.raises(flows_exc.NotFound):
        compat.get_compute_plan(k())


def test_errors_the_sdk_reports_as_invalid_request(compat: Client) -> None:
    with pytest.raises(sdk_exc.InvalidRequest) as raised:
        compat.add_compute_plan({"key": k(), "name": "p", "metadata": {"a__b": "c"}})
    assert isinstance(raised.value, flows_exc.SpecValidationError) and raised.value.field == "metadata"
    a, b, fn = k(), k(), k()
    ref = {"identifier": "model", "parent_task_output_identifier": "model"}
    tasks = [
        {"task_id": a, "function_key": fn, "worker": "o", "inputs": [{**ref, "parent_task_key": b}]},
        {"task_id": b, "function_key": fn, "worker": "o", "inputs": [{**ref, "parent_task_key": a}]},
    ]
    with pytest.raises(sdk_exc.InvalidRequest, match="cycle"):
        compat.add_compute_plan({"key": k(), "name": "p", "tasks": tasks})


def test_a_plan_key_that_is_not_a_uuid_is_the_sdk_key_format_error(compat: Client, adapter: FakeAdapter) -> None:
    with pytest.raises(sdk_exc.ComputePlanKeyFormatError):
        compat.add_compute_plan({"key": "plan-1", "name": "p"})
    assert adapter.calls == []


def test_a_spec_with_the_sdk_type_key_is_accepted_with_a_warning(compat: Client, tmp_path) -> None:
    compat._transport.session.adapters["http://"].route(
        "POST", r"/data_manager/", lambda c, m: (201, {"key": "ds"}, {})
    )
    opener = tmp_path / "opener.py"
    opener.write_text("x = 1\n")
    spec = {"name": "d", "type": "csv", "data_opener": opener, "permissions": {"public": True, "authorized_ids": []}}
    spec["logs_permission"] = spec["permissions"]
    with pytest.warns(flows_exc.UnknownSpecKeysWarning, match="'type'"):
        assert compat.add_dataset(spec) == "ds"


def test_downloads_into_a_missing_folder_raise_file_not_found(compat: Client, tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        compat.download_model(k(), tmp_path / "missing")


ERROR_CLASSES = [
    getattr(flows_exc, n)
    for n in flows_exc.__all__
    if isinstance(getattr(flows_exc, n), type) and issubclass(getattr(flows_exc, n), flows_exc.SubstraError)
]


@pytest.mark.parametrize("cls", sorted(set(ERROR_CLASSES), key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_every_project_error_has_a_twin_of_the_sdk_class_of_that_name(cls: type) -> None:
    twin = twins.twin_class(cls)
    assert issubclass(twin, cls) and twin.__name__ == cls.__name__
    sdk_names = {"KeyFormatError": "ComputePlanKeyFormatError", "SubstraError": "SDKException",
                 "ConfigurationError": "BadConfiguration", "TaskAssetError": "_TaskAssetError"}
    sdk_class = getattr(sdk_exc, sdk_names.get(cls.__name__, cls.__name__), None)
    if sdk_class is not None:
        assert issubclass(twin, sdk_class), (cls, sdk_class)
    assert getattr(twins, cls.__name__) is twins.twin_class(getattr(flows_exc, cls.__name__))


def test_translation_keeps_message_attributes_and_cause() -> None:
    cause = ValueError("root")
    error = flows_exc.FutureFailureError("plan failed", key="k", kind="compute plan", status="PLAN_STATUS_FAILED",
                                         failed_task_keys=["t"], logs={"t": "boom"})
    error.__cause__ = cause
    twin = twins.translate(error)
    assert isinstance(twin, sdk_exc.FutureFailureError) and isinstance(twin, flows_exc.FutureFailureError)
    assert str(twin) == "plan failed" and twin.failed_task_keys == ["t"] and twin.logs == {"t": "boom"}
    assert twin.__cause__ is cause and twins.translate(twin) is twin
    missing = twins.translate(flows_exc.TaskAssetNotFoundError("t", "model"))
    assert isinstance(missing, sdk_exc.TaskAssetNotFoundError) and missing.message == str(missing)
    throttled = twins.translate(flows_exc.TooManyRequests("slow down", status_code=429))
    assert isinstance(throttled, sdk_exc.HTTPError) and isinstance(throttled, flows_exc.TooManyRequests)
