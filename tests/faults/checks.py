"""The campaign tests' shared verdict on one run of a fault campaign."""

from __future__ import annotations

from benchmarks.fault_campaign import CampaignSettings, KindResult


def assert_guarantees_held(result: KindResult, settings: CampaignSettings) -> None:
    """The faults were really there, every error that stopped an attempt named its cause, and the
    reruns ended the job with exactly the fault-free assets (nothing duplicated, nothing lost)."""
    assert result.faults >= 3, result.injected
    assert result.faults >= result.requests * settings.rate / 2, (result.faults, result.requests)
    for attempt in result.attempts:
        if attempt.error:
            assert attempt.names_cause, f"error does not name its cause: {attempt.error}"
    assert result.completed, result.outcome
    assert result.counts == result.expected, result.outcome
