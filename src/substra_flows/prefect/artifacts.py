"""Prefect artifacts of a compute plan: its performances as a table, a link to it, a Markdown summary.

The ``*_markdown`` / ``*_table`` builders are pure (easy to test); the ``create_*`` functions publish
them on the current flow or task run. Nothing here sees credentials: only keys, statuses, scores and
log tails (already scrubbed of registered secrets by the client).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Optional
from uuid import UUID

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from substra_flows.exceptions import redact

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


def create_performance_artifact(
    rows: Sequence[Mapping[str, Any]], compute_plan_key: str, *, key_prefix: str = "substra"
) -> UUID:
    """Publish the performance rows as a table artifact (key ``<prefix>-performances``)."""
    return create_table_artifact(  # type: ignore[return-value]
        table=performance_table(rows),
        key=artifact_key(key_prefix, "performances"),
        description=f"Performances of compute plan {compute_plan_key}",
    )


def create_plan_link_artifact(link: str, compute_plan_key: str, *, key_prefix: str = "substra") -> UUID:
    """Publish a link to the plan in the Substra web app (or its API resource without one)."""
    return create_link_artifact(  # type: ignore[return-value]
        link=link,
        link_text=f"Compute plan {compute_plan_key} in Substra",
        key=artifact_key(key_prefix, "compute-plan"),
        description=f"Compute plan {compute_plan_key}",
    )


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
) -> UUID:
    """Publish :func:`summary_markdown` as a Markdown artifact (key ``<prefix>-summary``)."""
    markdown = summary_markdown(
        compute_plan_key, status=status, link=link, name=name, rows=rows, failure=failure, note=note
    )
    return create_markdown_artifact(  # type: ignore[return-value]
        markdown=markdown,
        key=artifact_key(key_prefix, "summary"),
        description=f"Summary of compute plan {compute_plan_key}",
    )


__all__ = [
    "artifact_key",
    "create_performance_artifact",
    "create_plan_link_artifact",
    "create_summary_artifact",
    "mean_scores",
    "performance_table",
    "summary_markdown",
]
