"""The example retraining flow under >= 20 % injected faults of every kind mixed.

The flow runs one day against a node that injects 429, 502-504, resets, slow answers, expired
tokens and truncated JSON; a failed flow run is followed by a new one for the same day (the plan
key comes from the pipeline and the day, so it is found again). It must end with exactly the assets
of a fault-free run of the same flow, and every error that stopped a run must name its cause. The
full campaign, kind by kind, is ``.venv/bin/python -m benchmarks.fault_campaign_faces --faces prefect``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from benchmarks.fault_campaign import MIXED, CampaignSettings, format_table
from benchmarks.fault_campaign_faces import prefect_pipeline, run_face
from tests.faults.checks import assert_guarantees_held
from tests.recording import TEST_NODE_OPTIONS

pytestmark = pytest.mark.live

SETTINGS = dataclasses.replace(CampaignSettings(), rate=float(os.environ.get("SUBSTRA_FLOWS_CAMPAIGN_RATE", "0.2")))
SEED = int(os.environ.get("SUBSTRA_FLOWS_CAMPAIGN_SEED", "1"))


def test_the_flow_under_mixed_faults_ends_with_the_fault_free_assets(
    tmp_path: Path, campaign_report: list[str]
) -> None:
    # the tests' opt-ins (tests/recording.py): model export on, since the flow's promote step downloads the model
    (result,) = run_face(
        "prefect", prefect_pipeline(), [MIXED], [SEED], SETTINGS, tmp_path, lambda _: None, TEST_NODE_OPTIONS
    )
    expected = result.expected  # the fault-free run of the same flow, on a node of its own
    assert expected["datasets"] == 2 and expected["functions"] == 4 and expected["plans"] == 1
    campaign_report.extend(format_table([result], SETTINGS).splitlines())
    assert_guarantees_held(result, SETTINGS)
