"""The old SDK's leaderboard, rebuilt on compute-plan metadata filters, and a quality gate.

Plans of one experiment are tagged with metadata (e.g. ``{"experiment": "fedavg"}``); the
leaderboard lists the DONE ones (of a run with several attempts, its latest DONE attempt only:
failed and canceled attempts never rank), scores each on one metric, and ranks them; the gate
decides whether a new plan beats the best previous one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from substra_flows import models

from .attempts import attempt_of
from .plans import fetch_performances

__all__ = [
    "AGGREGATES",
    "GateDecision",
    "LeaderboardEntry",
    "aggregate_performances",
    "leaderboard",
    "quality_gate",
    "rank_entries",
]

logger = logging.getLogger("substra_flows.steps")

AGGREGATES: dict[str, Callable[[list[float]], float]] = {
    "mean": statistics.fmean,
    "median": statistics.median,
    "min": min,
    "max": max,
}


@dataclass
class LeaderboardEntry:
    """One plan's score on a metric."""

    compute_plan_key: str
    name: str
    score: float
    metadata: dict[str, str]
    tag: str = ""
    rank: int | None = None  # task rank the score was taken at (the highest one with max_rank_only)
    n_values: int = 0  # how many performances (typically one per worker) were aggregated
    creation_date: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)


@dataclass
class GateDecision:
    """Whether a candidate plan beats the best previous one."""

    promote: bool
    reason: str
    candidate_score: float
    best_previous_score: float | None
    best_previous_key: str | None
    improvement: float | None = field(default=None)  # candidate minus best previous (sign-adjusted)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)


def _valid(value: Any) -> bool:
    """A finite number."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def aggregate_performances(
    rows: Sequence[Mapping[str, Any]],
    *,
    identifier: str = "performance",
    aggregate: str = "mean",
    max_rank_only: bool = True,
) -> tuple[float, int, int | None] | None:
    """Score one plan from its performance rows: (score, number of values, rank), or None without values.

    Keeps the rows of ``identifier`` with a finite value; with ``max_rank_only`` only those at the
    highest task rank (the final evaluation of each worker), then aggregates them.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r}: expected one of {sorted(AGGREGATES)}")
    kept = [r for r in rows if r.get("identifier") == identifier and _valid(r.get("performance"))]
    if not kept:
        return None
    rank: int | None = None
    if max_rank_only:
        ranks = [int(r["task_rank"]) for r in kept if isinstance(r.get("task_rank"), int)]
        if ranks:
            rank = max(ranks)
            kept = [r for r in kept if r.get("task_rank") == rank]
    values = [float(r["performance"]) for r in kept]
    return float(AGGREGATES[aggregate](values)), len(values), rank


def rank_entries(entries: Sequence[LeaderboardEntry], *, higher_is_better: bool = True) -> list[LeaderboardEntry]:
    """Best first; ties go to the older plan (the incumbent), then by key."""
    sign = -1.0 if higher_is_better else 1.0
    return sorted(
        entries,
        key=lambda e: (sign * e.score, e.creation_date is None, e.creation_date or "", e.compute_plan_key),
    )


def _metadata_filters(value: Sequence[Mapping[str, str]] | Mapping[str, str] | None) -> list[dict[str, Any]] | None:
    """SDK-shaped filters as given; a plain {key: value} dict means "is" on each key."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return [{"key": k, "type": "is", "value": v} for k, v in value.items()]
    return [dict(f) if isinstance(f, Mapping) else f for f in value]


def leaderboard(
    client: Any,
    *,
    metadata_filters: Sequence[Mapping[str, str]] | None = None,
    identifier: str = "performance",
    aggregate: str = "mean",
    max_rank_only: bool = True,
    higher_is_better: bool = True,
) -> list[LeaderboardEntry]:
    """Rank DONE plans matching the metadata filters by their aggregated metric, best first (of a run's
    attempts, the latest DONE one only).

    ``metadata_filters`` uses the SDK's shape ``[{"key": k, "type": "is"|"contains"|"exists",
    "value": v}]`` (a plain ``{k: v}`` dict is accepted as "is" filters). Each plan's score is the
    ``aggregate`` (mean, median, min, max) over its ``identifier`` performances, taken at the highest
    task rank with ``max_rank_only``. Plans without such a performance are left out.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate={aggregate!r}: expected one of {sorted(AGGREGATES)}")
    if not isinstance(identifier, str) or not identifier:
        raise ValueError(f"identifier={identifier!r}: must be a non-empty string")
    filters: dict[str, Any] = {"status": [models.ComputePlanStatus.done.value]}
    metadata = _metadata_filters(metadata_filters)
    if metadata:
        filters["metadata"] = metadata
    entries: list[LeaderboardEntry] = []
    for plan in latest_attempts(client.list_compute_plan(filters=filters)):
        rows = fetch_performances(client, plan.key)
        scored = aggregate_performances(rows, identifier=identifier, aggregate=aggregate, max_rank_only=max_rank_only)
        if scored is None:
            logger.info("leaderboard: compute plan %s has no %r performance; left out", plan.key, identifier)
            continue
        score, count, rank = scored
        entries.append(
            LeaderboardEntry(
                compute_plan_key=plan.key,
                name=plan.name,
                score=score,
                metadata=dict(plan.metadata),
                tag=plan.tag or "",
                rank=rank,
                n_values=count,
                creation_date=plan.creation_date.isoformat() if plan.creation_date else None,
            )
        )
    return rank_entries(entries, higher_is_better=higher_is_better)


def latest_attempts(plans: Sequence[Any]) -> list[Any]:
    """The plans, keeping of each run's attempts only the highest one (plans without attempt metadata all stay)."""
    kept: list[Any] = []
    best: dict[str, tuple[int, int]] = {}  # run key -> (attempt number, index in kept)
    for plan in plans:
        attempt = attempt_of(plan)
        if attempt is None:
            kept.append(plan)
            continue
        run_key, number = attempt
        if run_key not in best:
            best[run_key] = (number, len(kept))
            kept.append(plan)
        elif number > best[run_key][0]:
            best[run_key] = (number, best[run_key][1])
            kept[best[run_key][1]] = plan
    return kept


def _fmt(value: float) -> str:
    """Short human form of a score (0.8100000001 -> 0.81)."""
    return f"{value:.4g}"


def _describe(entry: LeaderboardEntry) -> str:
    return f"{entry.name!r} [{entry.compute_plan_key}]"


def quality_gate(
    candidate_key: str,
    entries: Sequence[LeaderboardEntry],
    *,
    min_improvement: float = 0.0,
    higher_is_better: bool = True,
) -> GateDecision:
    """Promote the candidate when it beats every other entry by at least ``min_improvement``.

    Pure: decides from the entries only. "Beats" is strict (a tie does not promote). With no other
    entry the candidate is promoted (nothing to beat). Entries with a non-finite score are ignored;
    a candidate without a finite score is not promoted. Raises ValueError if the candidate is not
    among the entries (not DONE, no such metric, or filtered out) or ``min_improvement`` < 0.
    """
    if not _valid(min_improvement) or min_improvement < 0:
        raise ValueError(f"min_improvement={min_improvement!r}: must be a number >= 0")
    candidates = [e for e in entries if e.compute_plan_key == candidate_key]
    if not candidates:
        raise ValueError(
            f"candidate_key={candidate_key!r} is not on the leaderboard (is the plan DONE, with the metric, "
            "and matched by the metadata filters?)"
        )
    candidate = candidates[0]
    others = [e for e in entries if e.compute_plan_key != candidate_key and _valid(e.score)]
    if not _valid(candidate.score):
        return GateDecision(
            promote=False,
            reason=f"candidate {_describe(candidate)} has no valid score ({candidate.score!r})",
            candidate_score=candidate.score,
            best_previous_score=None,
            best_previous_key=None,
        )
    if not others:
        return GateDecision(
            promote=True,
            reason=f"no previous plan to compare with: candidate {_describe(candidate)} "
            f"({_fmt(candidate.score)}) is the first",
            candidate_score=candidate.score,
            best_previous_score=None,
            best_previous_key=None,
        )
    best = rank_entries(others, higher_is_better=higher_is_better)[0]
    improvement = candidate.score - best.score if higher_is_better else best.score - candidate.score
    promote = improvement > 0 and improvement >= min_improvement
    head = f"candidate {_describe(candidate)} ({_fmt(candidate.score)})"
    versus = f"best previous plan {_describe(best)} ({_fmt(best.score)})"
    if promote:
        reason = f"{head} beats {versus} by {_fmt(improvement)}"
    else:
        needed = f"; at least {_fmt(min_improvement)} required" if min_improvement > 0 else ""
        reason = f"{head} does not beat {versus}: improvement {_fmt(improvement)}{needed}"
    return GateDecision(
        promote=promote,
        reason=reason,
        candidate_score=candidate.score,
        best_previous_score=best.score,
        best_previous_key=best.compute_plan_key,
        improvement=improvement,
    )
