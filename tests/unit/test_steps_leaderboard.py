"""Pure parts of the steps: leaderboard aggregation and ranking, and the quality gate."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from substra_flows.steps import LeaderboardEntry, aggregate_performances, quality_gate, rank_entries


def _row(worker: str, rank: int | None, value: float | None, identifier: str = "performance") -> dict[str, Any]:
    return {"worker": worker, "task_rank": rank, "identifier": identifier, "performance": value}


ROWS = [
    _row("org1", 2, 0.60),
    _row("org2", 2, 0.70),
    _row("org1", 5, 0.80),
    _row("org2", 5, 0.90),
    _row("org1", 5, 0.10, identifier="loss"),
]


def test_max_rank_only_averages_the_last_evaluation_over_workers():
    score, count, rank = aggregate_performances(ROWS)
    assert score == pytest.approx(0.85)
    assert (count, rank) == (2, 5)


def test_all_ranks_and_other_aggregates():
    assert aggregate_performances(ROWS, max_rank_only=False)[0] == pytest.approx(0.75)
    assert aggregate_performances(ROWS, aggregate="min")[0] == pytest.approx(0.80)
    assert aggregate_performances(ROWS, aggregate="max")[0] == pytest.approx(0.90)
    assert aggregate_performances(ROWS, aggregate="median", max_rank_only=False)[0] == pytest.approx(0.75)
    assert aggregate_performances(ROWS, identifier="loss") == (pytest.approx(0.10), 1, 5)


def test_missing_or_invalid_values_are_ignored():
    rows = [_row("a", 1, None), _row("b", 1, math.nan), _row("c", 0, 0.5)]
    assert aggregate_performances(rows) == (0.5, 1, 0)
    assert aggregate_performances(rows, identifier="accuracy") is None
    assert aggregate_performances([]) is None


def test_unknown_aggregate_is_refused():
    with pytest.raises(ValueError, match="aggregate"):
        aggregate_performances(ROWS, aggregate="sum")


def _entry(key: str, score: float, created: str = "2024-01-01T00:00:00", name: str | None = None) -> LeaderboardEntry:
    return LeaderboardEntry(key, name or f"plan-{key}", score, {"experiment": "x"}, creation_date=created)


def test_ranking_is_best_first_with_the_incumbent_winning_ties():
    entries = [_entry("b", 0.7, "2024-01-02"), _entry("a", 0.9), _entry("c", 0.7, "2024-01-01")]
    assert [e.compute_plan_key for e in rank_entries(entries)] == ["a", "c", "b"]
    assert [e.compute_plan_key for e in rank_entries(entries, higher_is_better=False)] == ["c", "b", "a"]


def test_gate_promotes_a_candidate_that_beats_the_best_previous_plan():
    entries = [_entry("old1", 0.78), _entry("old2", 0.81, name="fedavg-v1"), _entry("new", 0.84, name="fedavg-v2")]
    decision = quality_gate("new", entries)
    assert decision.promote
    assert decision.best_previous_key == "old2"
    assert decision.best_previous_score == 0.81
    assert decision.improvement == pytest.approx(0.03)
    assert decision.reason == (
        "candidate 'fedavg-v2' [new] (0.84) beats best previous plan 'fedavg-v1' [old2] (0.81) by 0.03"
    )
    json.dumps(decision.to_dict())


def test_gate_refuses_a_candidate_that_does_not_beat_it():
    entries = [_entry("old", 0.81, name="v1"), _entry("new", 0.80, name="v2")]
    decision = quality_gate("new", entries)
    assert not decision.promote
    assert "does not beat best previous plan 'v1' [old] (0.81)" in decision.reason
    assert "-0.01" in decision.reason


def test_a_tie_does_not_promote_and_min_improvement_is_required():
    assert not quality_gate("new", [_entry("old", 0.8), _entry("new", 0.8)]).promote
    small = quality_gate("new", [_entry("old", 0.80), _entry("new", 0.81)], min_improvement=0.05)
    assert not small.promote
    assert "at least 0.05 required" in small.reason
    assert quality_gate("new", [_entry("old", 0.80), _entry("new", 0.86)], min_improvement=0.05).promote


def test_gate_for_a_lower_is_better_metric():
    entries = [_entry("old", 0.30), _entry("new", 0.25)]
    decision = quality_gate("new", entries, higher_is_better=False)
    assert decision.promote
    assert decision.improvement == pytest.approx(0.05)
    assert not quality_gate("old", entries, higher_is_better=False).promote


def test_the_first_plan_is_promoted():
    decision = quality_gate("new", [_entry("new", 0.5)])
    assert decision.promote
    assert decision.best_previous_key is None
    assert "no previous plan" in decision.reason


def test_invalid_scores_are_ignored_or_block_promotion():
    assert quality_gate("new", [_entry("old", math.nan), _entry("new", 0.5)]).promote
    assert not quality_gate("new", [_entry("old", 0.1), _entry("new", math.nan)]).promote


def test_gate_refuses_an_unknown_candidate_and_a_negative_margin():
    with pytest.raises(ValueError, match="candidate_key='zzz'"):
        quality_gate("zzz", [_entry("old", 0.5)])
    with pytest.raises(ValueError, match="min_improvement"):
        quality_gate("old", [_entry("old", 0.5)], min_improvement=-1)
