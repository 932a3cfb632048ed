"""The node survives its executor: a killed executor is restarted and the task it held fails with a
clear error; a task past its time limit is stopped; cancel stops an executing task; stop() and
SIGTERM return within seconds whatever runs.

The bounds below check that something ends (today's node waits for ever); they are generous and
are not performance goals (benchmarks/node_supervision.py measures the restart time).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from substra_flows import SubstraClient
from substra_flows.local_node import LocalNode
from substra_flows.models import ComputeTaskStatus
from tests.live._node_functions import MODEL_IN, SLEEP, parent_input, register, task
from tests.recording import TEST_NODE_OPTIONS

pytestmark = pytest.mark.live

LONG = 600  # seconds a sleeping task would run if nothing stopped it


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    with LocalNode(organizations=2, task_time_limit=4.0, **TEST_NODE_OPTIONS) as started:
        yield started


@pytest.fixture(scope="module")
def clients(node: LocalNode) -> Iterator[list[SubstraClient]]:
    made = [SubstraClient(url=o.url, token=o.token) for o in node.organizations]
    yield made
    for client in made:
        client.close()


@pytest.fixture(scope="module")
def functions(clients: list[SubstraClient], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("supervision-functions")
    code = SLEEP.format(seconds=LONG)
    return {method: register(clients[0], folder, method, code, inputs=MODEL_IN) for method in ("sleep", "noop")}


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> float:
    """Seconds until ``condition()`` holds (fails past ``timeout``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "the condition never held"
        time.sleep(0.05)
    return time.monotonic() - started


def submit(client: SubstraClient, tasks: list[dict]) -> str:
    key = str(uuid.uuid4())
    client.add_compute_plan({"key": key, "name": f"supervision {key[:8]}", "tasks": tasks})
    return key


def status(client: SubstraClient, key: str) -> ComputeTaskStatus:
    return client.get_task(key).status


def task_processes(node: LocalNode) -> list[int]:
    """Processes running code from the node's folder (task functions), other than the executor."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == node.executor_pid:
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(node.api.workdir) in command and "function.py" in command:
            found.append(int(entry.name))
    return found


def test_a_killed_executor_is_restarted_and_only_its_task_fails(node, clients, functions):
    org1, org2 = node.organizations
    parent = str(uuid.uuid4())
    first_plan = submit(clients[0], [task(parent, functions["noop"], org1.organization_id)])
    clients[0].wait_compute_plan(first_plan, timeout=60, polling_period=0.2)
    doomed = str(uuid.uuid4())
    submit(clients[0], [task(doomed, functions["sleep"], org1.organization_id)])
    wait_for(lambda: status(clients[0], doomed) is ComputeTaskStatus.executing)
    wait_for(lambda: bool(task_processes(node)))
    killed = node.executor_pid
    os.kill(killed, signal.SIGKILL)  # as the OOM killer or an operator would
    failed = clients[0].wait_task(doomed, timeout=30, polling_period=0.2, raise_on_failure=False)
    assert failed.status is ComputeTaskStatus.failed and str(failed.error_type.value) == "INTERNAL_ERROR"
    logs = clients[0].get_logs(doomed)
    assert "the executor process died (killed by signal SIGKILL)" in logs and "restarted" in logs
    assert task_processes(node) == []  # the function the dead executor ran is gone too
    # every organization's next tasks run, on a new executor that knows the models made before
    after = str(uuid.uuid4())
    clients[0].add_compute_plan_tasks(
        first_plan, [task(after, functions["noop"], org1.organization_id, inputs=parent_input(parent))]
    )
    other = str(uuid.uuid4())
    submit(clients[1], [task(other, functions["noop"], org2.organization_id)])
    for client, key in ((clients[0], after), (clients[1], other)):
        assert client.wait_task(key, timeout=60, polling_period=0.2).status is ComputeTaskStatus.done
    assert node.executor_pid != killed and len(node.executor_restart_seconds) >= 1


def test_a_task_past_the_time_limit_is_stopped_and_failed(node, clients, functions):
    org1 = node.organizations[0]
    key = str(uuid.uuid4())
    submit(clients[0], [task(key, functions["sleep"], org1.organization_id)])
    wait_for(lambda: status(clients[0], key) is ComputeTaskStatus.executing)
    stopped = clients[0].wait_task(key, timeout=60, polling_period=0.2, raise_on_failure=False)
    assert stopped.status is ComputeTaskStatus.failed and str(stopped.error_type.value) == "EXECUTION_ERROR"
    assert "ran longer than the task time limit of 4s" in clients[0].get_logs(key)
    assert task_processes(node) == []
    after = str(uuid.uuid4())
    submit(clients[0], [task(after, functions["noop"], org1.organization_id)])
    assert clients[0].wait_task(after, timeout=60, polling_period=0.2).status is ComputeTaskStatus.done


def test_cancel_stops_an_executing_task(node, clients, functions):
    org1 = node.organizations[0]
    key, child = str(uuid.uuid4()), str(uuid.uuid4())
    plan = submit(
        clients[0],
        [
            task(key, functions["sleep"], org1.organization_id),
            task(child, functions["noop"], org1.organization_id, inputs=parent_input(key)),
        ],
    )
    wait_for(lambda: status(clients[0], key) is ComputeTaskStatus.executing)
    wait_for(lambda: bool(task_processes(node)))
    clients[0].cancel_compute_plan(plan)
    wait_for(lambda: status(clients[0], key) is ComputeTaskStatus.canceled, timeout=3.0)  # not after 600 s
    wait_for(lambda: task_processes(node) == [], timeout=3.0)
    assert status(clients[0], child) is ComputeTaskStatus.waiting_for_parent_tasks
    after = str(uuid.uuid4())
    submit(clients[0], [task(after, functions["noop"], org1.organization_id)])
    assert clients[0].wait_task(after, timeout=60, polling_period=0.2).status is ComputeTaskStatus.done


def test_stop_returns_within_seconds_while_a_task_runs(tmp_path):
    with LocalNode(organizations=1, task_time_limit=None, **TEST_NODE_OPTIONS) as node:
        org = node.organizations[0]
        with SubstraClient(url=org.url, token=org.token) as client:
            function = register(client, tmp_path, "sleep", SLEEP.format(seconds=LONG), inputs=MODEL_IN)
            key = str(uuid.uuid4())
            submit(client, [task(key, function, org.organization_id)])
            wait_for(lambda: status(client, key) is ComputeTaskStatus.executing)
            wait_for(lambda: bool(task_processes(node)))
        workdir = node.api.workdir
        started = time.monotonic()
        node.stop()
        assert time.monotonic() - started < 15
        assert not workdir.exists()
        assert not [p for p in _all_commands() if str(workdir) in p]  # nothing it started lives on


_SERVE = """
import sys, uuid
from pathlib import Path
from substra_flows import SubstraClient
from tests.live._node_functions import MODEL_IN, SLEEP, register, task
from substra_flows.local_node import LocalNode
node = LocalNode(organizations=1, task_time_limit=None, model_export=True, build_seconds=0.0,
                 build_env={"PIP_NO_INDEX": "1"}).start()
org = node.organizations[0]
client = SubstraClient(url=org.url, token=org.token)
function = register(client, Path(sys.argv[1]), "sleep", SLEEP.format(seconds=600), inputs=MODEL_IN)
key = str(uuid.uuid4())
tasks = [task(key, function, org.organization_id)]
client.add_compute_plan({"key": str(uuid.uuid4()), "name": "sigterm", "tasks": tasks})
print(node.api.workdir, key, flush=True)
import signal, threading
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
node.stop()
"""


def test_sigterm_stops_a_node_process_within_seconds(tmp_path):
    """The CLI's way (a SIGTERM handler calling stop()), in a process of its own, while a task runs."""
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", _SERVE, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=root)
    try:
        assert child.stdout is not None
        workdir, _ = child.stdout.readline().split()
        wait_for(lambda: any(workdir in c and "function.py" in c for c in _all_commands()), timeout=60)
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
        assert not [c for c in _all_commands() if workdir in c]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _all_commands() -> list[str]:
    commands = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                commands.append((entry / "cmdline").read_bytes().decode(errors="replace"))
            except OSError:
                continue
    return commands
