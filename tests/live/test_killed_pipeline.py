"""A pipeline killed mid-way and run again ends with exactly the assets of an uninterrupted run.

The whole step sequence (two datasets with samples in several batches, four functions, a federated
plan in several ``bulk_create`` batches, the wait, the performances; ``benchmarks.fault_campaign``'s
pipeline) is killed at one request (before it reaches the server, or right after the server acted
and before the answer is read, the worst case) and then rerun as is. Counted on the node: datasets,
samples, functions, plans, tasks (all done) and performances must equal the uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from benchmarks.fault_campaign import CampaignSettings, count_assets, pipeline
from substra_flows.local_node import LocalNode

pytestmark = pytest.mark.live

SETTINGS = CampaignSettings()


class Killed(BaseException):
    """The worker process dies (not an Exception: nothing may catch and retry it)."""


@pytest.fixture(scope="module")
def uninterrupted(local_node: LocalNode, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The reference: one run that nobody kills, and how many requests it sends."""
    sent = _RequestCounter()
    run_id = f"uninterrupted-{uuid.uuid4().hex[:6]}"
    with sent.installed():
        pipeline(local_node, run_id, tmp_path_factory.mktemp("uninterrupted"), SETTINGS)
    local_node.wait_idle(timeout=SETTINGS.wait_timeout)
    return {"counts": count_assets(local_node, run_id), "requests": sent.count}


class _RequestCounter:
    """Counts the HTTP requests sent through requests, and kills the run at one of them.

    A GET the run already sent (a status poll while a function builds or a plan runs) is not
    counted: how many polls a run makes depends on timing, so counting them would move the
    kill points between the reference run and the killed ones. The first poll of each still
    counts, so the waits remain kill points."""

    def __init__(self, kill_at: int | None = None, after_the_server_acted: bool = True) -> None:
        self.count = 0
        self.kill_at = kill_at
        self.after = after_the_server_acted
        self.killed: str | None = None
        self._gets_seen: set[str] = set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Route every request of the block through the counter."""
        real = requests.Session.send
        counter = self

        def send(session: requests.Session, request: requests.PreparedRequest, **kwargs: Any) -> Any:
            if request.method == "GET":
                if request.path_url in counter._gets_seen:
                    return real(session, request, **kwargs)
                counter._gets_seen.add(request.path_url)
            counter.count += 1
            if counter.count != counter.kill_at:
                return real(session, request, **kwargs)
            counter.killed = f"{request.method} {request.path_url}"
            if counter.after:
                real(session, request, **kwargs)  # the server acts; the answer is never read
            raise Killed(f"killed at request {counter.count}: {counter.killed}")

        patch = pytest.MonkeyPatch()
        patch.setattr(requests.Session, "send", send)
        try:
            yield
        finally:
            patch.undo()


def kill_points(total: int) -> Iterator[int]:
    """Requests spread over the whole sequence: registration, functions, plan batches, waiting."""
    for share in (0.1, 0.3, 0.5, 0.7, 0.9):
        yield max(1, int(total * share))


@pytest.mark.parametrize("after_the_server_acted", [True, False], ids=["answer-lost", "request-lost"])
def test_a_run_killed_anywhere_then_rerun_has_exactly_the_assets_of_an_uninterrupted_run(
    local_node: LocalNode, uninterrupted: dict[str, Any], tmp_path: Path, after_the_server_acted: bool
) -> None:
    expected = uninterrupted["counts"]
    assert expected["tasks done"] == expected["tasks"] > 0 and expected["performances"] > 0
    for kill_at in kill_points(uninterrupted["requests"]):
        run_id = f"killed-{kill_at}-{uuid.uuid4().hex[:6]}"
        counter = _RequestCounter(kill_at, after_the_server_acted)
        with counter.installed(), pytest.raises(Killed):
            pipeline(local_node, run_id, tmp_path / run_id, SETTINGS)
        assert counter.killed, f"the run ended before request {kill_at}"
        pipeline(local_node, run_id, tmp_path / run_id, SETTINGS)  # the rerun, with the same workdir (ledgers)
        local_node.wait_idle(timeout=SETTINGS.wait_timeout)
        assert count_assets(local_node, run_id) == expected, f"killed at request {kill_at} ({counter.killed})"
