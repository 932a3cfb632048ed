"""What the deployment tests check in both orchestrators: plans on the node, progress lines, no secret."""

from __future__ import annotations

import re
from pathlib import Path

from substra_flows import SubstraClient
from substra_flows.models import ComputePlan
from substra_flows.steps.attempts import ATTEMPT_METADATA
from tests.deploy.processes import wait_for

#: a progress line of a wait: "<done>/<total> tasks done" (with status and elapsed time around it)
PROGRESS = re.compile(r"\b\d+/\d+ tasks done\b")


def plans_for(client: SubstraClient, day: str, metadata_key: str = "ds") -> list[ComputePlan]:
    """The node's plans whose metadata ``metadata_key`` is ``day``, oldest first."""
    plans = [p for p in client.list_compute_plan(ascending=True) if p.metadata.get(metadata_key) == day]
    return plans


def wait_plan_status(client: SubstraClient, key: str, status: str, timeout: float) -> ComputePlan:
    """Wait until the plan has ``status``; return it."""

    def probe() -> ComputePlan | None:
        plan = client.get_compute_plan(key)
        return plan if plan.status.value == status else None

    return wait_for(f"plan {key} to be {status}", probe, timeout, 1.0)


def assert_progress_lines(log: str, at_least: int = 1) -> None:
    """The wait logged its progress (``<done>/<total> tasks done``) at least ``at_least`` times."""
    lines = [line for line in log.splitlines() if PROGRESS.search(line)]
    assert len(lines) >= at_least, (
        f"expected {at_least}+ progress lines (tasks done / total) in the log, found {lines}:\n{log[-3000:]}"
    )


def assert_no_secret(secrets: list[str], *sources: str | Path) -> None:
    """No token or password in any of the texts or files given."""
    for source in sources:
        text = source.read_text(errors="replace") if isinstance(source, Path) else source
        name = str(source) if isinstance(source, Path) else "the log read through the API"
        for secret in secrets:
            assert secret not in text, f"a token or password appears in {name}"


__all__ = ["ATTEMPT_METADATA", "assert_no_secret", "assert_progress_lines", "plans_for", "wait_plan_status"]
