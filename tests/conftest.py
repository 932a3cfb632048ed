"""Fixtures shared by every test tier.

- ``local_node``: one 2-organization local node for the session (live tests).
- ``campaign_report``: lines the fault campaigns print in pytest's terminal summary.
- ``prefect_server``: one Prefect test server for the session (``prefect_test_harness``; starting
  one takes ~15 s), used by every Prefect test and by the demo test.
- Cassette tests: mark them ``@pytest.mark.vcr`` and ``@pytest.mark.cassette``, take their
  organizations from the ``substra_targets`` fixture, and choose keys with
  ``tests.recording.stable_key``; see tests/recording.py for replay and re-recording.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from substra_flows.local_node import LocalNode
from tests.recording import TEST_NODE_OPTIONS, substra_targets, vcr_settings

__all__ = ["substra_targets"]


@pytest.fixture(scope="session")
def local_node() -> Iterator[LocalNode]:
    """One 2-organization local node for the whole session (tests must not rely on an empty store)."""
    with LocalNode(organizations=2, **TEST_NODE_OPTIONS) as node:  # opt-ins: tests/recording.py
        yield node


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """A temporary Prefect server and database for the session (Prefect is imported only when needed)."""
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    quiet = {PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}  # standalone task runs log locally only
    with prefect_test_harness(server_startup_timeout=120), temporary_settings(quiet):
        yield


_CAMPAIGN_TABLE = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def campaign_report(request: pytest.FixtureRequest) -> list[str]:
    """Fault-campaign report lines, printed at the end of the session (no ``-s`` needed)."""
    return request.config.stash.setdefault(_CAMPAIGN_TABLE, [])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print the fault campaign tables collected by the campaign tests, if any ran."""
    lines = config.stash.get(_CAMPAIGN_TABLE, [])
    if lines:
        terminalreporter.section("fault campaign")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def vcr_config() -> dict[str, Any]:
    """vcrpy settings of every cassette test (matching, scrubbing)."""
    return vcr_settings()


@pytest.fixture(scope="module")
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    """Cassettes live under tests/cassettes/<test folder>/<test module>/."""
    from tests.recording import CASSETTES

    module = request.node.path
    return str(CASSETTES / module.parent.name / module.stem)
