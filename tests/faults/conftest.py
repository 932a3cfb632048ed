"""Fault-tier fixtures: the campaign's figures, printed in pytest's terminal summary (no ``-s`` needed)."""

from __future__ import annotations

from typing import Any

import pytest

_CAMPAIGN_TABLE = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def campaign_report(request: pytest.FixtureRequest) -> list[str]:
    """Append report lines here; they are printed at the end of the session."""
    return request.config.stash.setdefault(_CAMPAIGN_TABLE, [])


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Print the fault campaign table collected by tests/faults/test_campaign.py, if it ran."""
    lines = config.stash.get(_CAMPAIGN_TABLE, [])
    if lines:
        terminalreporter.section("fault campaign")
        for line in lines:
            terminalreporter.write_line(line)
