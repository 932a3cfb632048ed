"""Fixtures of the Prefect tests.

- Every test here uses the session's Prefect test server (``prefect_server`` in tests/conftest.py).
- ``vcr_config``: the shared cassette settings, except that Prefect's own API calls (flow and task
  runs, logs, artifacts) go to the test server untouched and are never recorded.
- ``fake_steps`` / ``fake_credentials``: unit-test doubles of the steps and of the client.
- ``node_credentials``: blocks for the session's local node (live tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prefect.settings import get_current_settings

from substra_flows.local_node import LocalNode
from substra_flows.prefect import SubstraCredentials
from tests.prefect._fakes import FakeClient, FakeSteps
from tests.recording import Target, vcr_settings


@pytest.fixture(scope="session", autouse=True)
def _prefect_tests_use_the_session_server(prefect_server: None) -> None:
    """Every Prefect test runs against the session's Prefect test server (tests/conftest.py)."""


def _prefect_api_prefix() -> str:
    """Scheme, host and port of the Prefect API in use (the test server's)."""
    url = str(get_current_settings().api.url or "")
    return url.split("/api")[0] if url else "\0"


def passthrough_prefect(scrub: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A ``before_record_request`` that leaves Prefect API calls alone (None: not recorded, sent for real)."""

    def before_record_request(request: Any) -> Any:
        if request.uri.startswith(_prefect_api_prefix()):
            return None
        return scrub(request)

    return before_record_request


def prefect_vcr_settings() -> dict[str, Any]:
    """The shared cassette settings, with Prefect's own traffic passing through."""
    settings = vcr_settings()
    settings["before_record_request"] = passthrough_prefect(settings["before_record_request"])
    return settings


@pytest.fixture(scope="module")
def vcr_config() -> dict[str, Any]:
    """Cassette settings of the Prefect cassette tests."""
    return prefect_vcr_settings()


def credentials_for(target: Target, **overrides: Any) -> SubstraCredentials:
    """A token block for a cassette target, with a small retry budget (a replay miss fails fast)."""
    settings: dict[str, Any] = {"url": target.url, "token": target.token, "retry_timeout": 5.0, "max_attempts": 2}
    settings.update(overrides)
    return SubstraCredentials(**settings)


@pytest.fixture(scope="session")
def org1(substra_targets: list[Target]) -> Target:
    """First cassette organization (owner of the assets)."""
    return substra_targets[0]


@pytest.fixture(scope="session")
def org2(substra_targets: list[Target]) -> Target:
    """Second cassette organization."""
    return substra_targets[1]


# -- unit-test doubles -------------------------------------------------------------------------------

UNIT_TOKEN = "unit-test-token-3f9a2c1e8b7d6f5a4e3d2c1b0a9f8e7d"


@pytest.fixture()
def fake_client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    """What every ``SubstraCredentials.get_client()`` returns during the test."""
    client = FakeClient()

    def get_client(self: SubstraCredentials, **overrides: Any) -> FakeClient:
        client.opened.append(overrides)
        return client

    monkeypatch.setattr(SubstraCredentials, "get_client", get_client)
    return client


@pytest.fixture()
def fake_steps(monkeypatch: pytest.MonkeyPatch, fake_client: FakeClient) -> FakeSteps:
    """Doubles of the shared steps the Prefect tasks call (see FakeSteps)."""
    doubles = FakeSteps()
    doubles.install(monkeypatch)
    return doubles


@pytest.fixture()
def unit_credentials() -> SubstraCredentials:
    """A block whose client is the fake (with ``fake_client``)."""
    return SubstraCredentials(url="http://substra.test/org-1", token=UNIT_TOKEN, frontend_url="https://ui.test")


# -- live tests ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_credentials(local_node: LocalNode) -> list[SubstraCredentials]:
    """Token blocks of the local node's two organizations."""
    return [SubstraCredentials(url=o.url, token=o.token, retry_timeout=30.0) for o in local_node.organizations]
