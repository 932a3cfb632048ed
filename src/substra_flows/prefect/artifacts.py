"""Prefect artifacts of a compute plan: its performances as a table, a link to it, a Markdown summary,
and a progress artifact kept up to date while it runs.

The ``*_markdown`` / ``*_table`` builders are pure (easy to test); the ``create_*`` functions publish
them on the current flow or task run, and also on another flow run when given one (the flow run a
user started, when the artifacts are made in a subflow). :class:`WaitReporter` renders the progress
reports of a wait (logged lines, and the progress artifact). Nothing here sees credentials: only
keys, statuses, scores and log tails (already scrubbed of registered secrets by the client).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union
from uuid import UUID

from prefect.artifacts import (
    Artifact,
    LinkArtifact,
    MarkdownArtifact,
    TableArtifact,
    acreate_progress_artifact,
    aupdate_progress_artifact,
    create_progress_artifact,
    update_progress_artifact,
)

from substra_flows.exceptions import redact
from substra_flows.waiting import Progress

TABLE_COLUMNS = ("worker", "round_idx", "task_rank", "identifier", "performance", "task_key")
_KEY_CHARS = re.compile(r"[^a-z0-9-]+")


def artifact_key(prefix: str, kind: str) -> str:
    """An artifact key Prefect accepts (lowercase letters, digits, dashes), e.g. ``retraining-performances``."""
    key = _KEY_CHARS.sub("-", f"{prefix}-{kind}".lower()).strip("-")
    return re.sub("-{2,}", "-", key)


def performance_table(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The columns worth showing of each performance row, in a stable order."""
    return [{column: row.get(column) for column in TABLE_COLUMNS} for row in rows]


def mean_scores(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean value of each metric identifier over the rows of its highest rank (the final evaluation)."""
    best_rank: dict[str, int] = {}
    for row in rows:
        rank = row.get("task_rank") or 0
        best_rank[row["identifier"]] = max(best_rank.get(row["identifier"], rank), rank)
    values: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.get("performance") is not None and (row.get("task_rank") or 0) == best_rank[row["identifier"]]:
            values[row["identifier"]].append(float(row["performance"]))
    return {identifier: sum(v) / len(v) for identifier, v in values.items() if v}


def summary_markdown(
    compute_plan_key: str,
    *,
    status: str,
    link: Optional[str] = None,
    name: Optional[str] = None,
    rows: Sequence[Mapping[str, Any]] = (),
    failure: Optional[BaseException] = None,
    note: Optional[str] = None,
) -> str:
    """A short report: the plan, its outcome, its mean scores, and each failed task with its log tail."""
    title = f"Compute plan `{compute_plan_key}`" + (f" ({name})" if name else "")
    lines = [f"# {title}", "", f"**Status:** `{status}`"]
    if link:
        lines.append(f"**Link:** [{link}]({link})")
    if note:
        lines += ["", redact(note)]
    scores = mean_scores(rows)
    if scores:
        lines += ["", "## Scores", "", "| metric | mean of the final evaluation |", "|---|---|"]
        lines += [f"| {identifier} | {value:.4f} |" for identifier, value in sorted(scores.items())]
    if failure is not None:
        lines += ["", "## Failure", ""]
        failed = list(getattr(failure, "failed_task_keys", []) or [])
        logs = dict(getattr(failure, "logs", {}) or {})
        if failed:
            lines += ["| failed task | logs |", "|---|---|"]
            lines += [f"| `{key}` | {'below' if logs.get(key) else 'unavailable'} |" for key in failed]
            for key in failed:
                if logs.get(key):
                    lines += [
                        "",
                        f"### Last lines of the logs of task `{key}`",
                        "",
                        "```text",
                        redact(logs[key]).rstrip(),
                        "```",
                    ]
        else:
            lines += ["```text", redact(str(failure)).rstrip(), "```"]
    return "\n".join(lines) + "\n"


FlowRunId = Union[UUID, str, None]


def _publish(artifact: Artifact, also_on_flow_run: FlowRunId) -> UUID:
    """Create the artifact on the current run, and a copy on ``also_on_flow_run`` when given; the first one's id."""
    created = artifact.create(_sync=True)  # type: ignore[call-arg]
    if also_on_flow_run is not None:
        artifact.model_copy(update={"flow_run_id": UUID(str(also_on_flow_run)), "task_run_id": None}).create(
            _sync=True  # type: ignore[call-arg]
        )
    return created.id  # type: ignore[union-attr]


def create_performance_artifact(
    rows: Sequence[Mapping[str, Any]],
    compute_plan_key: str,
    *,
    key_prefix: str = "substra",
    also_on_flow_run: FlowRunId = None,
) -> UUID:
    """Publish the performance rows as a table artifact (key ``<prefix>-performances``)."""
    artifact = TableArtifact(
        table=performance_table(rows),
        key=artifact_key(key_prefix, "performances"),
        description=f"Performances of compute plan {compute_plan_key}",
    )
    return _publish(artifact, also_on_flow_run)


def create_plan_link_artifact(
    link: str, compute_plan_key: str, *, key_prefix: str = "substra", also_on_flow_run: FlowRunId = None
) -> UUID:
    """Publish a link to the plan in the Substra web app (or its API resource without one)."""
    artifact = LinkArtifact(
        link=link,
        link_text=f"Compute plan {compute_plan_key} in Substra",
        key=artifact_key(key_prefix, "compute-plan"),
        description=f"Compute plan {compute_plan_key}",
    )
    return _publish(artifact, also_on_flow_run)


def create_summary_artifact(
    compute_plan_key: str,
    *,
    status: str,
    link: Optional[str] = None,
    name: Optional[str] = None,
    rows: Sequence[Mapping[str, Any]] = (),
    failure: Optional[BaseException] = None,
    note: Optional[str] = None,
    key_prefix: str = "substra",
    also_on_flow_run: FlowRunId = None,
) -> UUID:
    """Publish :func:`summary_markdown` as a Markdown artifact (key ``<prefix>-summary``)."""
    markdown = summary_markdown(
        compute_plan_key, status=status, link=link, name=name, rows=rows, failure=failure, note=note
    )
    artifact = MarkdownArtifact(
        markdown=markdown,
        key=artifact_key(key_prefix, "summary"),
        description=f"Summary of compute plan {compute_plan_key}",
    )
    return _publish(artifact, also_on_flow_run)


class WaitReporter:
    """Renders a wait's progress reports: one log line each, and for a compute plan a progress artifact
    (percentage of its tasks done, the report's line as description), created at the first report and
    updated at the next ones. An artifact that cannot be written is logged once and never fails the wait."""

    def __init__(self, logger: Any, artifact_key: Optional[str] = None) -> None:
        self.logger = logger
        self.artifact_key = artifact_key
        self.artifact_id: Optional[UUID] = None
        self._broken = False

    def report(self, progress: Progress) -> None:
        """Render one report (sync runs)."""
        self.logger.info("%s", progress.describe())
        if self._skip(progress):
            return
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(  # type: ignore[call-arg,assignment]
                    progress=self._percent(progress), key=self.artifact_key, description=progress.describe(), _sync=True
                )
            else:
                update_progress_artifact(  # type: ignore[call-arg]
                    self.artifact_id, progress=self._percent(progress), description=progress.describe(), _sync=True
                )
        except Exception as error:  # a dashboard hiccup must not end a long wait
            self._give_up(error)

    async def areport(self, progress: Progress) -> None:
        """Render one report without blocking the event loop (async runs)."""
        self.logger.info("%s", progress.describe())
        if self._skip(progress):
            return
        try:
            if self.artifact_id is None:
                self.artifact_id = await acreate_progress_artifact(
                    progress=self._percent(progress), key=self.artifact_key, description=progress.describe()
                )
            else:
                await aupdate_progress_artifact(
                    self.artifact_id, progress=self._percent(progress), description=progress.describe()
                )
        except Exception as error:  # a dashboard hiccup must not end a long wait
            self._give_up(error)

    def _skip(self, progress: Progress) -> bool:
        return self._broken or progress.fraction is None

    @staticmethod
    def _percent(progress: Progress) -> float:
        return round(100.0 * (progress.fraction or 0.0), 1)

    def _give_up(self, error: Exception) -> None:
        self._broken = True
        self.logger.warning("progress artifact not updated any more: %s", redact(f"{type(error).__name__}: {error}"))


__all__ = [
    "WaitReporter",
    "artifact_key",
    "create_performance_artifact",
    "create_plan_link_artifact",
    "create_summary_artifact",
    "mean_scores",
    "performance_table",
    "summary_markdown",
]
