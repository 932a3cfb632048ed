"""Fixtures shared by every test tier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from substra_flows.local_node import LocalNode


@pytest.fixture(scope="session")
def local_node() -> Iterator[LocalNode]:
    """One 2-organization local node for the whole session (tests must not rely on an empty store)."""
    with LocalNode(organizations=2) as node:
        yield node
