"""The main job, shortened: two days of the retraining pipeline (one round) in Prefect then Airflow,
then the second day again, on a fresh local node; the node is then inspected through the API.

Checks what the demo promises: no duplicated dataset or function, each day's samples registered
once, one plan per day (the rerun finds it), the gate's decision follows the metrics, promoted
models on disk, the learning-curve plot written.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.demo import DayResult, run_demo
from substra_flows import SubstraClient
from substra_flows.local_node import LocalNode
from tests.recording import TEST_NODE_OPTIONS

pytestmark = pytest.mark.live

ORCHESTRATORS = ("prefect", "airflow")
DATASET_NAMES = {
    "prefect": ["prefect-retraining org-1", "prefect-retraining org-2"],
    "airflow": ["retraining dataset org-1", "retraining dataset org-2"],
}
FUNCTION_PREFIX = {"prefect": "prefect-retraining ", "airflow": "retraining "}
SAMPLES_PER_DAY = 3  # 2 train + 1 test per organization


@pytest.fixture(scope="module")
def demo(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the shortened demo on a node of its own, then read back everything it holds."""
    out = tmp_path_factory.mktemp("demo")
    with LocalNode(organizations=2, **TEST_NODE_OPTIONS) as node:
        rows = run_demo(node, days=[1, 2], rounds=1, out=out, workdir=out / "work", orchestrators=ORCHESTRATORS)
        org = node.organizations[0]
        with SubstraClient(url=org.url, token=org.token) as client:
            datasets = client.list_dataset()
            yield {
                "rows": rows,
                "out": out,
                "datasets": datasets,
                "samples": {d.name: client.get_dataset(d.key).data_sample_keys for d in datasets},
                "functions": client.list_function(),
                "plans": client.list_compute_plan(),
                "performances": {r.plan: client.get_performances(r.plan).rows() for r in rows},
            }


def runs_of(demo: dict[str, Any], orchestrator: str) -> list[DayResult]:
    return [r for r in demo["rows"] if r.orchestrator == orchestrator]


def final_mean(rows: list[dict[str, Any]]) -> float:
    """Mean of the last round's scores, computed here from the API's performance rows."""
    last = max(r["round_idx"] for r in rows)
    values = [r["performance"] for r in rows if r["round_idx"] == last]
    return sum(values) / len(values)


def test_each_orchestrator_ran_two_days_and_a_rerun(demo: dict[str, Any]) -> None:
    for orchestrator in ORCHESTRATORS:
        runs = runs_of(demo, orchestrator)
        assert [(r.day, r.rerun) for r in runs] == [(1, False), (2, False), (2, True)]


def test_no_dataset_or_function_is_duplicated(demo: dict[str, Any]) -> None:
    names = Counter(d.name for d in demo["datasets"])
    assert names == Counter(n for o in ORCHESTRATORS for n in DATASET_NAMES[o])
    functions = Counter(f.name for f in demo["functions"])
    assert all(count == 1 for count in functions.values()), functions
    for orchestrator in ORCHESTRATORS:
        expected = {FUNCTION_PREFIX[orchestrator] + n for n in ("train", "aggregate", "predict", "score")}
        assert expected <= set(functions)
    assert len(functions) == 8


def test_each_days_samples_are_registered_once(demo: dict[str, Any]) -> None:
    for orchestrator in ORCHESTRATORS:
        for name in DATASET_NAMES[orchestrator]:
            keys = demo["samples"][name]
            assert len(keys) == len(set(keys)) == 2 * SAMPLES_PER_DAY, (name, keys)
        day1, day2, rerun = runs_of(demo, orchestrator)
        assert day1.added["datasets"] == 2 and day1.added["functions"] == 4
        assert day2.added == {"datasets": 0, "functions": 0, "samples": 2 * SAMPLES_PER_DAY, "plans": 1, "tasks": 7}
        assert rerun.added == dict.fromkeys(rerun.added, 0) and rerun.added


def test_one_plan_per_day_and_the_rerun_finds_it(demo: dict[str, Any]) -> None:
    plans = {p.key: p for p in demo["plans"]}
    assert len(plans) == 4
    for orchestrator in ORCHESTRATORS:
        day1, day2, rerun = runs_of(demo, orchestrator)
        assert day1.plan != day2.plan and rerun.plan == day2.plan
        for run in (day1, day2):
            assert plans[run.plan].status.value == "PLAN_STATUS_DONE"


def test_the_gate_follows_the_metrics(demo: dict[str, Any]) -> None:
    for orchestrator in ORCHESTRATORS:
        day1, day2, rerun = runs_of(demo, orchestrator)
        mean1, mean2 = (final_mean(demo["performances"][r.plan]) for r in (day1, day2))
        assert day1.mean == pytest.approx(mean1) and day2.mean == pytest.approx(mean2)
        assert day1.gate["promote"] is True and day1.gate["best_previous_score"] is None
        assert day2.gate["promote"] is (mean2 > mean1)
        assert day2.gate["best_previous_score"] == pytest.approx(mean1)
        assert rerun.gate["promote"] is day2.gate["promote"]
        for run in (day1, day2):
            if run.gate["promote"]:
                assert run.model and Path(run.model).is_file() and Path(run.model).stat().st_size > 0
                assert Path(run.model).is_relative_to(demo["out"] / "models" / orchestrator)
            else:
                assert run.model is None


def test_the_learning_curves_are_plotted(demo: dict[str, Any]) -> None:
    picture = demo["out"] / "reports" / "retraining.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
