"""The local node behaves as a default substra-backend 1.0 deployment where the audit found it did not.

Each test sends the request, checks the node's answer against the real server's (per
/work/shared/backend-1.0-audit.md), and, where the client copes, the client's outcome. The node
here keeps a default deployment's settings (model export off, login throttled), except for a build
phase with no minimum duration and no package index (tests stay fast and offline).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from substra_flows import SubstraClient
from substra_flows.local_node import LocalNode, NodeOrganization
from tests.recording import OFFLINE_BUILD

pytestmark = pytest.mark.live

ACCEPT = "application/json;version=0.0"
PUBLIC = {"public": True, "authorized_ids": []}

FUNCTION_PY = """
import json
import substratools as tools


def _write(path, value):
    with open(path, "w") as handle:
        json.dump(value, handle)


@tools.register
def noop(inputs, outputs, task_properties):
    _write(outputs["model"], {"rank": task_properties["rank"]})


@tools.register
def fail(inputs, outputs, task_properties):
    raise RuntimeError("deliberate failure of a test function")


@tools.register
def slow(inputs, outputs, task_properties):
    import time
    time.sleep(1.5)
    _write(outputs["model"], {})


@tools.register
def marker(inputs, outputs, task_properties):
    with open("built.txt") as handle:
        _write(outputs["model"], {"marker": handle.read().strip()})


@tools.register
def uses_dependency(inputs, outputs, task_properties):
    import flows_test_dependency
    _write(outputs["model"], {"value": flows_test_dependency.VALUE})


if __name__ == "__main__":
    tools.execute()
"""


def dockerfile(method: str, *lines: str) -> str:
    body = "\n".join(lines)
    return (
        f"FROM python:3.11-slim\nRUN pip install substratools==1.0.0\n{body}\nCOPY function.py .\n"
        f'ENTRYPOINT ["python3", "function.py", "--function-name", "{method}"]\n'
    )


def archive(folder: Path, name: str, docker: str, extra: dict[str, bytes] | None = None) -> Path:
    entries = {"Dockerfile": docker.encode(), "function.py": FUNCTION_PY.encode(), **(extra or {})}
    path = folder / f"{name}-{uuid.uuid4().hex[:6]}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for entry, data in entries.items():
            info = tarfile.TarInfo(entry)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


MODEL_IN = {"identifier": "model", "kind": "ASSET_MODEL", "optional": True, "multiple": False}
MODEL_OUT = {"identifier": "model", "kind": "ASSET_MODEL", "multiple": False}


def add_function(
    client: SubstraClient,
    folder: Path,
    method: str,
    *lines: str,
    permissions: dict[str, Any] = PUBLIC,
    extra: dict[str, bytes] | None = None,
) -> str:
    description = folder / "description.md"
    description.write_text("# test function\n")
    return client.add_function(
        {
            "name": f"test {method}",
            "file": archive(folder, method, dockerfile(method, *lines), extra),
            "description": description,
            "permissions": permissions,
            "inputs": [MODEL_IN],
            "outputs": [MODEL_OUT],
        }
    )


def task(key: str, function_key: str, worker: str, parent: str | None = None, **output: Any) -> dict[str, Any]:
    inputs = [{"identifier": "model", "parent_task_key": parent, "parent_task_output_identifier": "model"}]
    return {
        "task_id": key,
        "function_key": function_key,
        "worker": worker,
        "inputs": inputs if parent else [],
        "outputs": {"model": {"permissions": {"public": False, "authorized_ids": []}, **output}},
    }


def headers(org: NodeOrganization) -> dict[str, str]:
    return {"Authorization": f"Token {org.token}", "Accept": ACCEPT}


def get(org: NodeOrganization, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{org.url}/{path}", headers=headers(org), params=params, timeout=30)


def wait_for(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout} s")


def statuses(org: NodeOrganization, plan_key: str) -> dict[str, str]:
    tasks = get(org, "task/", compute_plan_key=plan_key, page_size=1000).json()["results"]
    return {t["key"]: t["status"] for t in tasks}


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    with LocalNode(organizations=2, build_seconds=0.0, build_env=OFFLINE_BUILD) as started:
        yield started


@pytest.fixture(scope="module")
def clients(node: LocalNode) -> Iterator[tuple[SubstraClient, SubstraClient]]:
    org1, org2 = node.organizations
    with SubstraClient(url=org1.url, token=org1.token) as one, SubstraClient(url=org2.url, token=org2.token) as two:
        yield one, two


@pytest.fixture(scope="module")
def functions(clients: tuple[SubstraClient, SubstraClient], tmp_path_factory: pytest.TempPathFactory) -> dict:
    client = clients[0]
    folder = tmp_path_factory.mktemp("functions")
    return {m: add_function(client, folder, m) for m in ("noop", "fail", "slow")}


def run_plan(client: SubstraClient, tasks: list[dict[str, Any]]) -> str:
    key = str(uuid.uuid4())
    client.add_compute_plan({"key": key, "name": "behaviour plan", "tasks": tasks})
    return key


# ---- model export (audit top 1) -------------------------------------------------------------------


def test_model_download_is_refused_when_model_export_is_off(node: LocalNode, clients, functions) -> None:
    org1 = node.organizations[0]
    key = str(uuid.uuid4())
    plan = run_plan(clients[0], [task(key, functions["noop"], org1.organization_id)])
    clients[0].wait_compute_plan(plan, timeout=60, polling_period=0.2)
    assert get(org1, "info/").json()["config"] == {"model_export_enabled": False}
    model = get(org1, "model/", compute_task_key=key).json()["results"][0]
    refused = get(org1, f"model/{model['key']}/file/")
    assert refused.status_code == 403
    assert "model_export_enabled is disabled" in refused.json()["detail"]


# ---- cancel (audit top 2, P1, P2) -----------------------------------------------------------------


def test_cancel_records_a_date_and_tasks_waiting_for_parents_keep_their_status(node, clients, functions) -> None:
    org1 = node.organizations[0]
    keys = [str(uuid.uuid4()) for _ in range(4)]
    chain = [task(keys[0], functions["slow"], org1.organization_id)]
    chain += [task(k, functions["noop"], org1.organization_id, parent=p) for p, k in zip(keys, keys[1:], strict=False)]
    plan_key = run_plan(clients[0], chain)
    wait_for(lambda: statuses(org1, plan_key)[keys[0]] == "STATUS_EXECUTING")
    response = requests.post(f"{org1.url}/compute_plan/{plan_key}/cancel/", headers=headers(org1), timeout=30)
    assert response.status_code == 200 and response.json() == {}
    plan = get(org1, f"compute_plan/{plan_key}/").json()
    assert plan["status"] == "PLAN_STATUS_CANCELED"
    assert statuses(org1, plan_key)[keys[-1]] == "STATUS_WAITING_FOR_PARENT_TASKS"  # not CANCELED at once
    node.wait_idle(30)
    final = statuses(org1, plan_key)
    # the executing task is stopped (issue 15: a cancel stops what runs); its children never start
    assert [final[k] for k in keys] == [
        "STATUS_CANCELED",
        "STATUS_WAITING_FOR_PARENT_TASKS",
        "STATUS_WAITING_FOR_PARENT_TASKS",
        "STATUS_WAITING_FOR_PARENT_TASKS",
    ]
    plan = get(org1, f"compute_plan/{plan_key}/").json()
    assert plan["waiting_parent_tasks_count"] == 3 and plan["canceled_count"] == 1


def test_cancelling_a_done_plan_flips_it_to_canceled_and_a_second_cancel_is_a_slow_json_500(
    node, clients, functions
) -> None:
    org1 = node.organizations[0]
    plan_key = run_plan(clients[0], [task(str(uuid.uuid4()), functions["noop"], org1.organization_id)])
    clients[0].wait_compute_plan(plan_key, timeout=60, polling_period=0.2)
    url = f"{org1.url}/compute_plan/{plan_key}/cancel/"
    first = requests.post(url, headers=headers(org1), timeout=30)
    assert first.status_code == 200
    plan = get(org1, f"compute_plan/{plan_key}/").json()
    assert plan["status"] == "PLAN_STATUS_CANCELED" and plan["done_count"] == 1
    started = time.monotonic()
    second = requests.post(url, headers=headers(org1), timeout=30)
    assert time.monotonic() - started >= 4.5  # the backend retries OE0109 five times, one second apart
    assert second.status_code == 500
    assert second.json() == {"detail": f"OE0109: compute plan {plan_key} is already terminated"}


# ---- a failed plan can read CANCELED (audit top 3), tasks added to a failed plan (P3) ------------


def test_a_failure_aborts_queued_tasks_so_the_plan_reads_canceled(node, clients, functions) -> None:
    org1 = node.organizations[0]
    failing, queued = str(uuid.uuid4()), str(uuid.uuid4())
    plan_key = run_plan(
        clients[0],
        [task(failing, functions["fail"], org1.organization_id), task(queued, functions["noop"], org1.organization_id)],
    )
    node.wait_idle(60)
    assert statuses(org1, plan_key) == {failing: "STATUS_FAILED", queued: "STATUS_CANCELED"}
    plan = get(org1, f"compute_plan/{plan_key}/").json()
    assert plan["status"] == "PLAN_STATUS_CANCELED" and plan["failed_task_key"] == failing

    # tasks may still be added; one whose parent failed starts CANCELED
    child = str(uuid.uuid4())
    clients[0].add_compute_plan_tasks(plan_key, [task(child, functions["noop"], org1.organization_id, parent=failing)])
    assert statuses(org1, plan_key)[child] == "STATUS_CANCELED"


# ---- permissions (audit top 4, 5, 6; M6; P5; P8) ---------------------------------------------------


def test_the_task_owner_must_be_allowed_to_process_the_dataset(node, clients, tmp_path: Path) -> None:
    from tests.cassette import dataset_spec

    org1, org2 = node.organizations
    own_only = clients[1].add_dataset(dataset_spec("org-2 only", tmp_path))  # authorizes its owner alone
    function = add_function(clients[0], tmp_path, "noop")
    spec = {
        "key": str(uuid.uuid4()),
        "name": "uses a dataset it may not process",
        "tasks": [],
    }
    clients[0].add_compute_plan(spec)
    body = {
        "tasks": [
            {
                "key": str(uuid.uuid4()),
                "compute_plan_key": spec["key"],
                "function_key": function,
                "worker": org2.organization_id,
                "inputs": [
                    {
                        "identifier": "model",
                        "asset_key": own_only,
                        "parent_task_key": None,
                        "parent_task_output_identifier": None,
                    }
                ],
                "outputs": {"model": {"permissions": PUBLIC, "transient": False}},
            }
        ]
    }
    # a model input given by a dataset key is not a dataset input: use the real dataset check below
    refused = requests.post(f"{org1.url}/task/bulk_create/", json=body, headers=headers(org1), timeout=30)
    assert refused.status_code == 404  # no model has that key (OE0002)
    data_function = clients[0].add_function(
        {
            "name": "needs a dataset",
            "file": archive(tmp_path, "noop", dockerfile("noop")),
            "description": tmp_path / "description.md",
            "permissions": PUBLIC,
            "inputs": [{"identifier": "opener", "kind": "ASSET_DATA_MANAGER", "optional": False, "multiple": False}],
            "outputs": [MODEL_OUT],
        }
    )
    body["tasks"][0].update(
        function_key=data_function,
        inputs=[
            {
                "identifier": "opener",
                "asset_key": own_only,
                "parent_task_key": None,
                "parent_task_output_identifier": None,
            }
        ],
    )
    refused = requests.post(f"{org1.url}/task/bulk_create/", json=body, headers=headers(org1), timeout=30)
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("OE0102:") and own_only in refused.json()["detail"]


def test_the_task_owner_not_the_worker_must_be_allowed_to_process_the_function(node, clients, tmp_path) -> None:
    org1, org2 = node.organizations
    for_worker_only = add_function(
        clients[1], tmp_path, "noop", permissions={"public": False, "authorized_ids": [org2.organization_id]}
    )
    plan = str(uuid.uuid4())
    clients[0].add_compute_plan({"key": plan, "name": "function of another org", "tasks": []})
    body = {
        "tasks": [{**_wire(task(str(uuid.uuid4()), for_worker_only, org2.organization_id)), "compute_plan_key": plan}]
    }
    refused = requests.post(f"{org1.url}/task/bulk_create/", json=body, headers=headers(org1), timeout=30)
    assert refused.status_code == 403 and refused.json()["detail"].startswith("OE0102:")

    shared_with_owner = add_function(
        clients[1], tmp_path, "noop", permissions={"public": False, "authorized_ids": [org1.organization_id]}
    )
    body["tasks"][0].update(key=str(uuid.uuid4()), function_key=shared_with_owner)
    accepted = requests.post(f"{org1.url}/task/bulk_create/", json=body, headers=headers(org1), timeout=30)
    assert accepted.status_code == 200  # org-2 runs it although the function names only org-1


def test_outputs_get_the_task_owner_appended_even_when_public(node, clients, functions) -> None:
    org1, org2 = node.organizations
    key = str(uuid.uuid4())
    plan = run_plan(clients[0], [task(key, functions["noop"], org2.organization_id)])
    created = get(org1, f"task/{key}/").json()
    assert created["outputs"]["model"]["permissions"]["process"]["authorized_ids"] == [org1.organization_id]
    assert created["logs_permission"] == {"public": False, "authorized_ids": [org1.organization_id]}
    function = get(org1, f"function/{functions['noop']}/").json()
    assert function["permissions"]["process"] == {"public": True, "authorized_ids": [org1.organization_id]}
    clients[0].wait_compute_plan(plan, timeout=60, polling_period=0.2)


def _wire(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": spec["task_id"],
        "function_key": spec["function_key"],
        "worker": spec["worker"],
        "inputs": [{"asset_key": None, **i} for i in spec["inputs"]],
        "outputs": {"model": {"permissions": PUBLIC, "transient": False}},
    }


# ---- transient outputs (audit top 9), model inputs by key (P4) -------------------------------------


def test_transient_outputs_are_disabled_once_their_consumers_are_done(node, clients, functions) -> None:
    org1 = node.organizations[0]
    parent, child, kept = (str(uuid.uuid4()) for _ in range(3))
    plan_key = run_plan(
        clients[0],
        [
            task(parent, functions["noop"], org1.organization_id, transient=True),
            task(child, functions["noop"], org1.organization_id, parent=parent),
            task(kept, functions["noop"], org1.organization_id),
        ],
    )
    clients[0].wait_compute_plan(plan_key, timeout=60, polling_period=0.2)
    disabled = get(org1, "model/", compute_task_key=parent).json()["results"][0]
    assert disabled["address"] is None
    assert get(org1, f"model/{disabled['key']}/").json()["address"] is None
    still_there = get(org1, "model/", compute_task_key=kept).json()["results"][0]
    assert still_there["address"] is not None

    reuse = {
        "tasks": [
            {
                "key": str(uuid.uuid4()),
                "compute_plan_key": plan_key,
                "function_key": functions["noop"],
                "worker": org1.organization_id,
                "inputs": [
                    {
                        "identifier": "model",
                        "asset_key": None,
                        "parent_task_key": parent,
                        "parent_task_output_identifier": "model",
                    }
                ],
                "outputs": {"model": {"permissions": PUBLIC, "transient": False}},
            }
        ]
    }
    refused = requests.post(f"{org1.url}/task/bulk_create/", json=reuse, headers=headers(org1), timeout=30)
    assert refused.status_code == 400 and "has been disabled" in refused.json()["detail"]

    by_key = dict(reuse["tasks"][0])
    by_key.update(
        key=str(uuid.uuid4()),
        inputs=[
            {
                "identifier": "model",
                "asset_key": still_there["key"],
                "parent_task_key": None,
                "parent_task_output_identifier": None,
            }
        ],
    )
    accepted = requests.post(
        f"{org1.url}/task/bulk_create/", json={"tasks": [by_key]}, headers=headers(org1), timeout=30
    )
    assert accepted.status_code == 200  # a model input given by key (P4)
    node.wait_idle(60)
    assert statuses(org1, plan_key)[by_key["key"]] == "STATUS_DONE"


# ---- build phase (audit top 10) ----------------------------------------------------------------------


def test_functions_build_and_their_tasks_wait_for_the_build(tmp_path: Path) -> None:
    with LocalNode(organizations=1, build_seconds=2.0, build_env=OFFLINE_BUILD) as slow_builds:
        org = slow_builds.organizations[0]
        with SubstraClient(url=org.url, token=org.token) as client:
            function = add_function(client, tmp_path, "noop")
            assert get(org, f"function/{function}/").json()["status"] in (
                "FUNCTION_STATUS_WAITING",
                "FUNCTION_STATUS_BUILDING",
            )
            key = str(uuid.uuid4())
            plan_key = run_plan(client, [task(key, function, org.organization_id)])
            assert get(org, f"task/{key}/").json()["status"] in ("STATUS_WAITING_FOR_BUILDER_SLOT", "STATUS_BUILDING")
            plan = get(org, f"compute_plan/{plan_key}/").json()
            assert plan["status"] in ("PLAN_STATUS_CREATED", "PLAN_STATUS_DOING")
            client.wait_compute_plan(plan_key, timeout=60, polling_period=0.2)
            assert get(org, f"function/{function}/").json()["status"] == "FUNCTION_STATUS_READY"
            profiling = get(org, f"task_profiling/{key}/").json()
            assert profiling["compute_task_key"] == key
            assert [s["step"] for s in profiling["execution_rundown"]] == [
                "prepare_inputs",
                "task_execution",
                "save_outputs",
            ]


def test_dockerfile_steps_are_applied_in_order_in_the_image_folder(node, clients, tmp_path: Path) -> None:
    org1 = node.organizations[0]
    function = add_function(
        clients[0],
        tmp_path,
        "marker",
        "WORKDIR /home/user",
        "RUN apt-get update -y && echo from-run > built.txt",
        "COPY extra.txt extra/",
        "RUN test -f extra/extra.txt && cat extra/extra.txt >> built.txt",
        extra={"extra.txt": b"from-copy"},
    )
    key = str(uuid.uuid4())
    plan = run_plan(clients[0], [task(key, function, org1.organization_id)])
    clients[0].wait_compute_plan(plan, timeout=60, polling_period=0.2)
    model = get(org1, "model/", compute_task_key=key).json()["results"][0]
    # model export is off on this node: read the produced file from the store instead
    produced = json.loads(Path(node.store.models[model["key"]]["_path"]).read_text())
    assert produced == {"marker": "from-run\nfrom-copy"}


def test_run_lines_go_through_a_shell_so_an_unquoted_version_bound_is_a_redirect(node, clients, tmp_path) -> None:
    """Docker runs a shell-form RUN as ``/bin/sh -c``: substrafl's ``pip install -U setuptools>=70.0.0`` installs
    ``setuptools`` with its output redirected to a file named ``=70.0.0``. Here ``pip>=999`` (no such pip) would
    fail the offline build if the line were run without a shell."""
    org1 = node.organizations[0]
    function = add_function(
        clients[0],
        tmp_path,
        "marker",
        "WORKDIR /home/user",
        "RUN python3 -m pip install -U pip>=999",
        'RUN test -s "=999" && echo redirected > built.txt',
    )
    key = str(uuid.uuid4())
    plan = run_plan(clients[0], [task(key, function, org1.organization_id)])
    clients[0].wait_compute_plan(plan, timeout=60, polling_period=0.2)
    model = get(org1, "model/", compute_task_key=key).json()["results"][0]
    assert json.loads(Path(node.store.models[model["key"]]["_path"]).read_text()) == {"marker": "redirected"}


def test_a_failing_run_line_fails_the_function_and_its_tasks_with_the_build_output_as_logs(
    node, clients, tmp_path: Path
) -> None:
    org1 = node.organizations[0]
    function = add_function(clients[0], tmp_path, "noop", "RUN echo building-now && exit 3")
    key = str(uuid.uuid4())
    plan_key = run_plan(clients[0], [task(key, function, org1.organization_id)])
    node.wait_idle(60)
    assert get(org1, f"function/{function}/").json()["status"] == "FUNCTION_STATUS_FAILED"
    failed = get(org1, f"task/{key}/").json()
    assert failed["status"] == "STATUS_FAILED" and failed["error_type"] == "BUILD_ERROR"
    logs = get(org1, f"task/{key}/logs/")
    assert logs.status_code == 200 and "building-now" in logs.text and "non-zero code: 3" in logs.text
    plan = get(org1, f"compute_plan/{plan_key}/").json()
    assert plan["status"] == "PLAN_STATUS_FAILED" and plan["failed_task_key"] == key
    # a task registered afterwards fails at once
    later = str(uuid.uuid4())
    clients[0].add_compute_plan_tasks(plan_key, [task(later, function, org1.organization_id)])
    assert get(org1, f"task/{later}/").json()["error_type"] == "BUILD_ERROR"


def test_run_pip_install_of_a_local_wheel_installs_into_that_function_only(node, clients, tmp_path: Path) -> None:
    package = tmp_path / "dependency"
    (package / "flows_test_dependency").mkdir(parents=True)
    (package / "flows_test_dependency" / "__init__.py").write_text("VALUE = 42\n")
    (package / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "flows-test-dependency"\nversion = "1.0"\n'
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(package),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("*.whl"))
    org1 = node.organizations[0]
    function = add_function(
        clients[0],
        tmp_path,
        "uses_dependency",
        f"COPY {wheel.name} .",
        f"RUN pip install {wheel.name}",
        extra={wheel.name: wheel.read_bytes()},
    )
    key = str(uuid.uuid4())
    plan = run_plan(clients[0], [task(key, function, org1.organization_id)])
    clients[0].wait_compute_plan(plan, timeout=120, polling_period=0.2)
    model = get(org1, "model/", compute_task_key=key).json()["results"][0]
    assert json.loads(Path(node.store.models[model["key"]]["_path"]).read_text()) == {"value": 42}
    with pytest.raises(ModuleNotFoundError):
        __import__("flows_test_dependency")  # the node's own environment is untouched


# ---- login throttle (audit top 7, A8) -------------------------------------------------------------


def test_login_and_anonymous_calls_are_throttled_to_40_a_minute(node: LocalNode) -> None:
    org2 = node.organizations[1]
    login = {"username": org2.username, "password": org2.password}
    answers = [requests.post(f"{org2.url}/api-token-auth/", data=login, timeout=30) for _ in range(40)]
    assert {a.status_code for a in answers} == {200}
    throttled = requests.post(f"{org2.url}/api-token-auth/", data=login, timeout=30)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) >= 1
    assert throttled.json()["detail"].startswith("Request was throttled. Expected available in")
    assert requests.get(f"{org2.url}/info/", timeout=30).status_code == 429  # anonymous: the same window
    assert get(org2, "info/").status_code == 200  # a token is not throttled
    org1 = node.organizations[0]
    assert requests.get(f"{org1.url}/info/", timeout=30).status_code == 200  # each organization has its own


# ---- request size (P10) -----------------------------------------------------------------------------


def test_bulk_create_over_the_orchestrator_message_limit_is_413(node, clients, functions) -> None:
    org1 = node.organizations[0]
    plan = str(uuid.uuid4())
    clients[0].add_compute_plan({"key": plan, "name": "big batch", "tasks": []})
    metadata = {f"k{i}": "v" * 90 for i in range(90)}
    tasks = [
        {
            **_wire(task(str(uuid.uuid4()), functions["noop"], org1.organization_id)),
            "compute_plan_key": plan,
            "metadata": metadata,
        }
        for _ in range(500)
    ]
    refused = requests.post(f"{org1.url}/task/bulk_create/", json={"tasks": tasks}, headers=headers(org1), timeout=60)
    assert refused.status_code == 413 and "larger than max" in refused.json()["detail"]
    assert statuses(org1, plan) == {}
    accepted = requests.post(
        f"{org1.url}/task/bulk_create/", json={"tasks": tasks[:50]}, headers=headers(org1), timeout=60
    )
    assert accepted.status_code == 200 and "duration" not in accepted.json()[0]


# ---- replication lag (audit top 8) and the plan seen from another organization (P12) --------------


def test_other_organizations_see_new_assets_and_statuses_after_the_replication_lag(tmp_path: Path) -> None:
    with LocalNode(organizations=2, build_seconds=0.0, build_env=OFFLINE_BUILD, replication_lag=1.5) as lagging:
        org1, org2 = lagging.organizations
        with SubstraClient(url=org1.url, token=org1.token) as client:
            function = add_function(client, tmp_path, "noop")
            assert get(org2, f"function/{function}/").status_code == 404
            assert get(org1, f"function/{function}/").status_code == 200
            wait_for(lambda: get(org2, f"function/{function}/").status_code == 200, timeout=5)
            key = str(uuid.uuid4())
            plan_key = run_plan(client, [task(key, function, org1.organization_id)])
            assert get(org2, f"compute_plan/{plan_key}/").status_code == 404
            client.wait_compute_plan(plan_key, timeout=60, polling_period=0.1)
            seen_by_owner = get(org1, f"compute_plan/{plan_key}/").json()
            assert seen_by_owner["status"] == "PLAN_STATUS_DONE" and seen_by_owner["creator"] == org1.username
            stale = get(org2, f"compute_plan/{plan_key}/")
            assert stale.status_code == 404 or stale.json()["status"] != "PLAN_STATUS_DONE"
            caught_up = wait_for(
                lambda: (
                    (r := get(org2, f"compute_plan/{plan_key}/")).status_code == 200
                    and r.json()["status"] == "PLAN_STATUS_DONE"
                    and r.json()
                ),
                timeout=10,
            )
            assert caught_up["creator"] == "external"


# ---- smaller differences of the audit's table -------------------------------------------------------


def test_plan_creator_filter_takes_one_exact_value(node: LocalNode, clients) -> None:
    org1 = node.organizations[0]
    key = str(uuid.uuid4())
    clients[0].add_compute_plan({"key": key, "name": "creator filter", "tasks": []})
    one = get(org1, "compute_plan/", creator=org1.username, key=key).json()
    assert one["count"] == 1
    two = get(org1, "compute_plan/", creator=f"{org1.username},other", key=key).json()
    assert two["count"] == 0  # L2: a plain CharFilter, no IN list


def test_unknown_url_is_an_html_404(node: LocalNode) -> None:
    org1 = node.organizations[0]
    response = get(org1, "no_such_route/")
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")


# ---- the client copes with each of them ---------------------------------------------------------------


def test_client_wait_task_ends_for_a_task_stranded_in_a_cancelled_plan(node, clients, functions) -> None:
    from substra_flows.exceptions import FutureFailureError

    org1 = node.organizations[0]
    first, stranded = str(uuid.uuid4()), str(uuid.uuid4())
    plan_key = run_plan(
        clients[0],
        [
            task(first, functions["slow"], org1.organization_id),
            task(stranded, functions["noop"], org1.organization_id, parent=first),
        ],
    )
    wait_for(lambda: statuses(org1, plan_key)[first] == "STATUS_EXECUTING")
    clients[0].cancel_compute_plan(plan_key)
    started = time.monotonic()
    with pytest.raises(FutureFailureError) as raised:
        clients[0].wait_task(stranded, timeout=60, polling_period=0.2)
    assert time.monotonic() - started < 10  # a real server keeps it waiting for good: the wait looks at the plan
    assert "will never run" in str(raised.value) and "PLAN_STATUS_CANCELED" in str(raised.value)
    task_now = clients[0].wait_task(stranded, timeout=60, polling_period=0.2, raise_on_failure=False)
    assert task_now.status.value in ("STATUS_WAITING_FOR_PARENT_TASKS", "STATUS_CANCELED")


def test_client_waits_report_a_failure_when_the_plan_reads_canceled(node, clients, functions) -> None:
    from substra_flows.exceptions import FutureFailureError

    org1 = node.organizations[0]
    failing, queued = str(uuid.uuid4()), str(uuid.uuid4())
    plan_key = run_plan(
        clients[0],
        [task(failing, functions["fail"], org1.organization_id), task(queued, functions["noop"], org1.organization_id)],
    )
    node.wait_idle(60)
    with pytest.raises(FutureFailureError) as plan_error:
        clients[0].wait_compute_plan(plan_key, timeout=30, polling_period=0.2)
    assert plan_error.value.status == "PLAN_STATUS_CANCELED"
    assert "failed" in str(plan_error.value) and failing in str(plan_error.value)
    assert "deliberate failure of a test function" in str(plan_error.value)  # the failed task's logs
    with pytest.raises(FutureFailureError) as task_error:
        clients[0].wait_task(queued, timeout=30, polling_period=0.2)
    assert f"task {failing} failed" in str(task_error.value)


def test_client_cancel_of_a_done_plan_succeeds_as_on_a_real_server(node, clients, functions) -> None:
    org1 = node.organizations[0]
    plan_key = run_plan(clients[0], [task(str(uuid.uuid4()), functions["noop"], org1.organization_id)])
    clients[0].wait_compute_plan(plan_key, timeout=60, polling_period=0.2)
    clients[0].cancel_compute_plan(plan_key)
    assert clients[0].get_compute_plan(plan_key).status.value == "PLAN_STATUS_CANCELED"


def test_client_download_under_model_export_off_names_the_channel_setting(node, clients, functions, tmp_path) -> None:
    from substra_flows.exceptions import ModelExportDisabled

    org1 = node.organizations[0]
    key = str(uuid.uuid4())
    plan = run_plan(clients[0], [task(key, functions["noop"], org1.organization_id)])
    clients[0].wait_compute_plan(plan, timeout=60, polling_period=0.2)
    with pytest.raises(ModelExportDisabled) as raised:
        clients[0].download_model_from_task(key, "model", tmp_path)
    assert "model_export_enabled" in str(raised.value) and raised.value.status_code == 403


def test_client_add_compute_plan_splits_a_batch_refused_with_413(tmp_path: Path) -> None:
    with LocalNode(organizations=1, build_seconds=0.0, build_env=OFFLINE_BUILD, max_message_bytes=20_000) as small:
        org = small.organizations[0]
        with SubstraClient(url=org.url, token=org.token) as client:
            function = add_function(client, tmp_path, "noop")
            keys = [str(uuid.uuid4()) for _ in range(120)]
            tasks = [task(keys[0], function, org.organization_id)]
            tasks += [task(k, function, org.organization_id, parent=p) for p, k in zip(keys, keys[1:], strict=False)]
            plan_key = str(uuid.uuid4())
            client.add_compute_plan({"key": plan_key, "name": "split me", "tasks": tasks})  # one 500-task batch
            assert client.get_compute_plan(plan_key).task_count == 120


def test_client_login_retries_after_429(tmp_path: Path) -> None:
    from substra_flows.local_node.throttle import LoginThrottle

    with LocalNode(organizations=1, build_seconds=0.0, build_env=OFFLINE_BUILD) as throttled:
        assert throttled.api is not None
        throttled.api.throttle = LoginThrottle(2, window=2.0)  # 2 a window of 2 s, so the test is short
        org = throttled.organizations[0]
        for _ in range(2):
            requests.post(f"{org.url}/api-token-auth/", data={"username": org.username, "password": org.password})
        assert requests.get(f"{org.url}/info/", timeout=10).status_code == 429
        with SubstraClient(url=org.url) as client:
            token = client.login(org.username, org.password)  # waits out Retry-After, then logs in
            assert len(token) == 40


def test_client_waits_on_another_organization_ride_out_the_replication_lag(tmp_path: Path) -> None:
    with LocalNode(organizations=2, build_seconds=0.0, build_env=OFFLINE_BUILD, replication_lag=1.5) as lagging:
        org1, org2 = lagging.organizations
        with SubstraClient(url=org1.url, token=org1.token) as one, SubstraClient(url=org2.url, token=org2.token) as two:
            function = add_function(one, tmp_path, "noop")
            plan_key = run_plan(one, [task(str(uuid.uuid4()), function, org1.organization_id)])
            done = two.wait_compute_plan(plan_key, timeout=60, polling_period=0.2)  # 404 first, then stale, then DONE
            assert done.status.value == "PLAN_STATUS_DONE"
