"""Fixtures of the 0.x surface tests: the two organizations, and a 0.x client of each per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from substra_flows.legacy import Client
from tests.recording import Target


@pytest.fixture(scope="session")
def org1(substra_targets: list[Target]) -> Target:
    """The first organization (owner of most assets)."""
    return substra_targets[0]


@pytest.fixture(scope="session")
def org2(substra_targets: list[Target]) -> Target:
    """The second organization."""
    return substra_targets[1]


def legacy_client(target: Target) -> Client:
    """A 0.x client of one organization (``Client(url=..., token=...)``, a fresh HTTP session)."""
    return Client(url=target.url, token=target.token)


@pytest.fixture()
def client1(org1: Target) -> Iterator[Client]:
    """A 0.x client of org1, per test (no pooled connection outlives its cassette)."""
    client = legacy_client(org1)
    yield client
    client.close()


@pytest.fixture()
def client2(org2: Target) -> Iterator[Client]:
    """A 0.x client of org2."""
    client = legacy_client(org2)
    yield client
    client.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files (archives, descriptions, samples) the module's assets are built from."""
    return tmp_path_factory.mktemp("legacy-assets")
