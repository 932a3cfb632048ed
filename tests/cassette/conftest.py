"""Fixtures of the client cassette tests: the two organizations, one fresh client of each per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from substra_flows import SubstraClient
from tests.cassette import client_for
from tests.recording import Target


@pytest.fixture(scope="session")
def org1(substra_targets: list[Target]) -> Target:
    """The first organization (owner of most assets)."""
    return substra_targets[0]


@pytest.fixture(scope="session")
def org2(substra_targets: list[Target]) -> Target:
    """The second organization (the 'other org' of 403 paths)."""
    return substra_targets[1]


@pytest.fixture()
def client1(org1: Target) -> Iterator[SubstraClient]:
    """A client of org1, created per test so that no pooled connection outlives its cassette."""
    client = client_for(org1)
    yield client
    client.close()


@pytest.fixture()
def client2(org2: Target) -> Iterator[SubstraClient]:
    """A client of org2."""
    client = client_for(org2)
    yield client
    client.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files (archives, descriptions, samples) the module's assets are built from."""
    return tmp_path_factory.mktemp("cassette-assets")
