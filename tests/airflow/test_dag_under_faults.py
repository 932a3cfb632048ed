"""The example DAG under >= 20 % injected faults of every kind mixed, run with ``dag.test()``.

The DAG (deferrable wait, Airflow's own task retries) runs one day against a node that injects 429,
502-504, resets, slow answers, expired tokens and truncated JSON; a failed DAG run is run again (the
same run, cleared). It must end with exactly the assets of a fault-free run of the same DAG, and
every error that stopped a run must name its cause. The full campaign, kind by kind, is
``.venv/bin/python -m benchmarks.fault_campaign_faces --faces airflow``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.fault_campaign import MIXED, CampaignSettings, format_table
from benchmarks.fault_campaign_faces import AIRFLOW_DAG_ENV, airflow_pipeline, run_face
from substra_flows.local_node import LocalNode
from tests.airflow.conftest import DAGS_FOLDER, sync_dag
from tests.faults.checks import assert_guarantees_held
from tests.recording import TEST_NODE_OPTIONS

pytestmark = pytest.mark.live

SETTINGS = dataclasses.replace(CampaignSettings(), rate=float(os.environ.get("SUBSTRA_FLOWS_CAMPAIGN_RATE", "0.2")))
SEED = int(os.environ.get("SUBSTRA_FLOWS_CAMPAIGN_SEED", "1"))


@pytest.fixture(scope="module")
def dag(dag_test: Path) -> Iterator[Any]:
    """The example DAG parsed with the campaign's settings (short polling, quick task retries)."""
    from airflow.dag_processing.dagbag import DagBag

    patch = pytest.MonkeyPatch()
    for name, value in AIRFLOW_DAG_ENV.items():
        patch.setenv(name, value)
    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert not bag.import_errors, bag.import_errors
    parsed = bag.get_dag("substra_retraining")
    sync_dag(parsed)
    yield parsed
    patch.undo()


def test_the_dag_under_mixed_faults_ends_with_the_fault_free_assets(
    dag: Any, dag_test: Path, tmp_path: Path, campaign_report: list[str]
) -> None:
    # the tests' opt-ins (tests/recording.py): model export on, since the DAG's promote step downloads the model
    (result,) = run_face(
        "airflow", airflow_pipeline(dag), [MIXED], [SEED], SETTINGS, tmp_path, lambda _: None, TEST_NODE_OPTIONS
    )
    expected = result.expected  # the fault-free run of the same DAG, on a node of its own
    assert expected["datasets"] == 2 and expected["functions"] == 4 and expected["plans"] == 1
    campaign_report.extend(format_table([result], SETTINGS).splitlines())
    assert_guarantees_held(result, SETTINGS)


def test_a_failed_dag_run_reports_errors_that_name_their_cause(dag: Any, dag_test: Path, tmp_path: Path) -> None:
    """The judge's own check: a DAG run against a node that is gone fails, and the errors recorded
    from its failed task tries say why (so a failure in the campaign above cannot pass unexplained)."""
    from benchmarks.fault_campaign import text_names_cause
    from benchmarks.fault_campaign_faces import DagRunFailed

    with LocalNode(organizations=2, **TEST_NODE_OPTIONS) as node:
        pipeline = airflow_pipeline(dag)
        gone = node
    with pytest.raises(DagRunFailed) as failed:
        pipeline(gone, "node-gone", tmp_path, dataclasses.replace(SETTINGS, retry_timeout=2.0, max_attempts=2))
    assert "prepare_data" in str(failed.value)
    assert text_names_cause("reset_before", str(failed.value)), str(failed.value)  # "connection ..."
