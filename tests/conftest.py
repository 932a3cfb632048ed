"""Fixtures shared by every test tier.

- ``local_node``: one 2-organization local node for the session (live tests).
- Cassette tests: mark them ``@pytest.mark.vcr`` and ``@pytest.mark.cassette``, take their
  organizations from the ``substra_targets`` fixture, and choose keys with
  ``tests.recording.stable_key``; see tests/recording.py for replay and re-recording.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from substra_flows.local_node import LocalNode
from tests.recording import substra_targets, vcr_settings

__all__ = ["substra_targets"]


@pytest.fixture(scope="session")
def local_node() -> Iterator[LocalNode]:
    """One 2-organization local node for the whole session (tests must not rely on an empty store)."""
    with LocalNode(organizations=2) as node:
        yield node


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
