"""Fixtures of the deployment tier (tests/deploy): real orchestrator processes against a local node.

Each test module starts its own 2-organization local node (in this process, on a free loopback
port) with a task gate (gate.py), and its own deployment (airflow_stack.py, prefect_stack.py),
which it stops by PID at the end whatever happened. The tests of a module run in file order: each
one is a step of an operator's day (a scheduled run, a restart, a cancel, a rerun).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from substra_flows import SubstraClient
from substra_flows.local_node import LocalNode
from tests.deploy.gate import TaskGate
from tests.recording import TEST_NODE_OPTIONS


@pytest.fixture(scope="module")
def deploy_node() -> Iterator[LocalNode]:
    """A fresh 2-organization local node for the module (so its plans are this module's only), with the
    test opt-ins (model export on: the pipelines promote models; offline builds)."""
    with LocalNode(organizations=2, **TEST_NODE_OPTIONS) as node:
        yield node


@pytest.fixture(scope="module")
def gate(deploy_node: LocalNode) -> Iterator[TaskGate]:
    """The node's task gate, open at the start and at the end of the module."""
    task_gate = TaskGate(deploy_node)
    yield task_gate
    task_gate.open()


@pytest.fixture(scope="module")
def substra(deploy_node: LocalNode) -> Iterator[SubstraClient]:
    """A client of the first organization (which submits the plans), to check plans through the API."""
    org = deploy_node.organizations[0]
    client = SubstraClient(url=org.url, token=org.token)
    yield client
    client.close()


@pytest.fixture(scope="module")
def secrets_of(deploy_node: LocalNode) -> list[str]:
    """Every token and password of the node's organizations: none may appear in any log."""
    return [value for org in deploy_node.organizations for value in (org.token, org.password) if value]


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A scratch folder for the module's deployment (homes, data, logs)."""
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
