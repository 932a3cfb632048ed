"""Reading back what a Prefect run left on the test server: logs, artifacts, the run itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Artifact, FlowRun, Log
from prefect.client.schemas.sorting import ArtifactSort
from prefect.logging.handlers import APILogHandler

PAGE = 200  # the server's page size for logs and artifacts


def _every_page(read: Callable[[int], list[Any]]) -> list[Any]:
    """All items of a paged read (a secret scan must not stop at the first page)."""
    items: list[Any] = []
    while True:
        page = read(len(items))
        items.extend(page)
        if len(page) < PAGE:
            return items


def run_logs(flow_run_id: UUID) -> list[Log]:
    """Every log line of a flow run and its task runs (after sending the ones still queued)."""
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
        return _every_page(lambda offset: client.read_logs(logs, limit=PAGE, offset=offset))


def run_artifacts(flow_run_id: UUID) -> list[Artifact]:
    """Every artifact a flow run (or its task runs) created."""
    with get_client(sync_client=True) as client:
        artifacts = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        return _every_page(
            lambda offset: client.read_artifacts(
                artifact_filter=artifacts, sort=ArtifactSort.CREATED_DESC, limit=PAGE, offset=offset
            )
        )


def artifacts_by_key(flow_run_id: UUID) -> dict[str, Artifact]:
    """The run's latest artifact of each key (link artifacts are stored as Markdown ``[text](url)``)."""
    found: dict[str, Artifact] = {}
    for artifact in sorted(run_artifacts(flow_run_id), key=lambda a: a.created or 0):
        found[str(artifact.key)] = artifact
    return found


def table_rows(artifact: Artifact) -> list[dict[str, Any]]:
    """The rows of a table artifact."""
    data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    return list(data)


def flow_run(flow_run_id: UUID) -> FlowRun:
    """The flow run as the server has it (state, parameters)."""
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def everything_stored(flow_run_id: UUID) -> str:
    """One text of all a run stored: logs, artifacts, its parameters and state (for secret checks)."""
    parts = [log.message for log in run_logs(flow_run_id)]
    for artifact in run_artifacts(flow_run_id):
        parts += [json.dumps(artifact.data, default=str), str(artifact.description)]
    run = flow_run(flow_run_id)
    parts += [json.dumps(run.parameters, default=str), str(run.state.message if run.state else "")]
    return "\n".join(parts)
