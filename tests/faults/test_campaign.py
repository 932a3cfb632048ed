"""Fault campaign: the whole step sequence under >= 20 % injected faults of each kind, then all kinds mixed.

Each run registers 2 datasets with their samples (several batches each), 4 functions, a federated
plan submitted in several ``bulk_create`` batches on organization 1, waits for it and fetches its
performances on organization 2 (under ``replication_lag`` it first answers 404, then stale), all
through SubstraClient (username/password) and the pipeline steps, against a node of this module
injecting one fault kind (``login_throttle``: throttled logins after forced token expiries). A
step may fail, but only with an error naming the cause; the sequence is then rerun (faults on,
then off if needed) and must end with EXACTLY the assets of a fault-free run: no duplicate,
nothing lost. The figures are printed in the terminal summary.

The runner is shared with ``benchmarks/fault_campaign.py`` (the full campaign: 30 %, 3 seeds).
``SUBSTRA_FLOWS_CAMPAIGN_RATE`` and ``SUBSTRA_FLOWS_CAMPAIGN_SEED`` change the rate and seed here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.fault_campaign import (
    MIXED,
    CampaignSettings,
    KindResult,
    baseline,
    expected_task_batches,
    format_table,
    names_cause,
    run_kind,
)
from substra_flows import exceptions as exc
from substra_flows.local_node import FAULT_KINDS, LocalNode
from tests.faults.checks import assert_guarantees_held
from tests.recording import TEST_NODE_OPTIONS

pytestmark = pytest.mark.live

SETTINGS = dataclasses.replace(CampaignSettings(), rate=float(os.environ.get("SUBSTRA_FLOWS_CAMPAIGN_RATE", "0.2")))
SEED = int(os.environ.get("SUBSTRA_FLOWS_CAMPAIGN_SEED", "1"))


@pytest.fixture(scope="module")
def node() -> Iterator[LocalNode]:
    """A node of this module only: its faults must not reach other modules' node."""
    with LocalNode(organizations=2, **TEST_NODE_OPTIONS) as started:
        yield started


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("campaign")


@pytest.fixture(scope="module")
def expected(node: LocalNode, workdir: Path) -> dict[str, int]:
    """Asset counts of one fault-free run: the reference every faulty run must reach exactly."""
    return baseline(node, SETTINGS, workdir)


@pytest.fixture(scope="module")
def results(campaign_report: list[str]) -> Iterator[list[KindResult]]:
    """Results of this module's runs, turned into the summary table once they are all in."""
    collected: list[KindResult] = []
    yield collected
    if collected:
        campaign_report.extend(format_table(collected, SETTINGS).splitlines())


def test_the_fault_free_run_is_the_reference(expected: dict[str, int]) -> None:
    n = SETTINGS.samples_per_split
    assert expected == {
        "datasets": 2,
        "samples": 2 * 2 * n,
        "functions": 4,
        "plans": 1,
        "tasks": 7,
        "tasks done": 7,
        "performances": 2,
    }
    assert 2 * n > SETTINGS.sample_batch_size  # samples go in several batches per dataset
    assert expected_task_batches(SETTINGS) >= 3  # and tasks in at least 3 bulk_create batches


@pytest.mark.parametrize("kind", [*FAULT_KINDS, MIXED])
def test_pipeline_under_faults_ends_with_exact_counts(
    node: LocalNode, workdir: Path, expected: dict[str, int], results: list[KindResult], kind: str
) -> None:
    result = run_kind(node, kind, SEED, SETTINGS, workdir, expected)
    results.append(result)

    assert set(result.injected) <= (set(FAULT_KINDS) if kind == MIXED else {kind})  # only the kind asked
    assert_guarantees_held(result, SETTINGS)


@pytest.mark.parametrize(
    ("kind", "error", "named"),
    [
        ("502", exc.GatewayUnavailable("GET /org-1/task/ -> 502 Bad Gateway: (HTML body)"), True),
        ("slow_after", exc.Timeout("GET /org-1/task/: no answer within the read timeout"), True),
        ("expire_token", exc.AuthenticationError("GET /x/ -> 401 Unauthorized: The token is expired"), True),
        ("malformed_json", exc.InvalidResponse("GET /x/: expected JSON, got application/json"), True),
        ("login_throttle", exc.TooManyRequests("POST /org-1/api-token-auth/ -> 429 Too Many Requests"), True),
        ("login_throttle", exc.AuthenticationError("GET /x/ -> 401 Unauthorized: The token is expired"), True),
        ("login_throttle", exc.InternalServerError("POST /org-1/api-token-auth/ -> 500: boom"), False),
        ("replication_lag", exc.NotFound("GET /org-2/compute_plan/k/ -> 404 Not Found: Not found."), True),
        (
            "replication_lag",
            exc.FutureTimeoutError("plan still doing", key="k", kind="plan", status="x", timeout=1),
            False,
        ),
        ("reset_after", exc.InternalServerError("GET /x/ -> 500: boom"), False),
        ("429", KeyError("dataset_key"), False),
        (MIXED, exc.ConnectionError("POST /org-1/data_sample/: connection error"), True),
        (MIXED, exc.FutureTimeoutError("plan still doing", key="k", kind="plan", status="x", timeout=1), False),
    ],
)
def test_cause_naming_is_judged_by_the_error_text(kind: str, error: BaseException, named: bool) -> None:
    """The campaign's judge itself: an error that does not say what happened does not pass."""
    assert names_cause(kind, error) is named
