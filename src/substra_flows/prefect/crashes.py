"""Crashed flow runs: make a run whose process died end Crashed, and leave its plan for the retry.

A flow run process that dies without a word (SIGKILL, a lost machine, an evicted container) cannot
report anything, so Prefect shows it ``Running`` forever. Prefect's documented remedy (“Detect
zombie flows”) is two-fold: flow runs emit heartbeat events (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``,
seconds, at least 30; Prefect 3.1.8 and later), and an automation marks a run Crashed when its
heartbeats stop. :func:`ensure_zombie_automation` creates that automation once per server.

The compute plan of a crashed run is never cancelled: a retry (or a rerun of the same day) finds it
through the attempt rule of :mod:`substra_flows.steps.attempts` and waits for it again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Optional
from uuid import UUID

from prefect.automations import Automation
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.settings import get_current_settings

__all__ = ["ZOMBIE_AUTOMATION_NAME", "ensure_zombie_automation", "heartbeat_frequency", "zombie_automation"]

#: name of the automation :func:`ensure_zombie_automation` creates (and finds again)
ZOMBIE_AUTOMATION_NAME = "substra-flows: crash flow runs that stopped sending heartbeats"
#: heartbeats a run may miss before it is declared crashed
MISSED_HEARTBEATS = 3
_ENDED = ("Completed", "Failed", "Cancelled", "Crashed")


def heartbeat_frequency() -> Optional[int]:
    """Seconds between two heartbeats of a flow run (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``), None when off."""
    return get_current_settings().flows.heartbeat_frequency


def zombie_automation(silence: Optional[timedelta] = None) -> Automation:
    """The automation (not saved) that marks a flow run Crashed once it sent no heartbeat nor final state
    for ``silence`` (default: :data:`MISSED_HEARTBEATS` heartbeat periods)."""
    if silence is None:
        frequency = heartbeat_frequency()
        if not frequency:
            raise ValueError(
                "flow run heartbeats are off: set PREFECT_FLOWS_HEARTBEAT_FREQUENCY (seconds, >= 30) "
                "where the flows run, or give silence="
            )
        silence = timedelta(seconds=MISSED_HEARTBEATS * frequency)
    if silence.total_seconds() <= 0:
        raise ValueError(f"silence={silence!r}: must be a positive duration")
    return Automation(
        name=ZOMBIE_AUTOMATION_NAME,
        description="Marks Crashed a flow run whose heartbeats stopped (its process died); its Substra plan "
        "keeps running for a retry to attach to.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{state}" for state in _ENDED)},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=silence,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {silence.total_seconds():g}s: the flow run's process is gone",
            )
        ],
    )


def ensure_zombie_automation(silence: Optional[timedelta] = None) -> UUID:
    """Create the zombie automation on the current Prefect server unless one of that name exists; its id."""
    try:
        existing: Any = Automation.read(name=ZOMBIE_AUTOMATION_NAME, _sync=True)  # type: ignore[call-overload]
    except ValueError:  # Prefect's answer for "no automation of that name"
        existing = None
    if existing is not None:
        return existing.id
    created: Any = zombie_automation(silence).create(_sync=True)  # type: ignore[call-arg]
    return created.id
