"""The Prefect automations the product needs, installed (or replaced) at start.

The open-source server leaves a killed run RUNNING forever and its deployment
concurrency slot taken. Two automations close that gap: a run that stops sending
heartbeats is marked CRASHED, and so is a run stuck in PENDING (killed between
taking its slot and starting).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from deployments.prefect_env import HEARTBEAT_SECONDS, RUN_TAG

logger = logging.getLogger(__name__)

# How long each part of set-up at start (the automations, the work pool) waits
# for the Prefect server: its client gives each try a minute and retries, so a
# server that accepts and never answers would otherwise hold the start for
# minutes.
SETUP_SECONDS = 60.0

# Three missed beats mean the run's process is gone.
MISSED_HEARTBEATS = 3
# A run takes seconds from PENDING to RUNNING here (a new Python process);
# one still PENDING after this long was killed before it started.
PENDING_LIMIT = timedelta(seconds=120)

FLOW_RUNS = ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]})
OUR_RUNS = ResourceSpecification(
    {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{RUN_TAG}"}
)
_FINAL = {
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
}


def product_automations() -> list[Automation]:
    """The automations `install` keeps on the server, named for the product."""
    silent = Automation(
        name="orchestrator: crash runs that stopped heartbeating",
        description="A flow run that missed three heartbeats lost its process.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *_FINAL},
            match=FLOW_RUNS,
            match_related=OUR_RUNS,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=HEARTBEAT_SECONDS * MISSED_HEARTBEATS),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message="No heartbeat: the process running this flow run died.",
            )
        ],
    )
    stuck = Automation(
        name="orchestrator: crash runs stuck in pending",
        description="A run killed before it started must not keep its slot.",
        trigger=EventTrigger(
            after={"prefect.flow-run.Pending"},
            expect={"prefect.flow-run.Running", *_FINAL},
            match=FLOW_RUNS,
            match_related=OUR_RUNS,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=PENDING_LIMIT,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message="Stuck in Pending: the process starting it died.",
            )
        ],
    )
    return [silent, stuck]


def _canonical(value: Any) -> Any:
    # Triggers hold sets, whose order changes from one process to the next.
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        items = [_canonical(item) for item in value]
        return sorted(items, key=json.dumps)
    return value


def _fingerprinted(automation: Automation) -> Automation:
    """The automation with a digest of its definition at the end of its description."""
    definition = _canonical(
        automation.model_dump(mode="json", include={"trigger", "actions"})
    )
    digest = hashlib.sha256(json.dumps(definition).encode()).hexdigest()[:12]
    automation.description = f"{automation.description} [definition {digest}]"
    return automation


async def install() -> list[str]:
    """Creates the product's automations, replacing only those whose definition changed.

    An unchanged automation is left alone: replacing it would drop the state of
    its proactive trigger, so a run whose process died just before a flow
    runner restart would never be marked crashed.

    Raises:
        TimeoutError: the Prefect server did not finish within `SETUP_SECONDS`.
    """
    names = []
    async with asyncio.timeout(SETUP_SECONDS), get_client() as client:
        for automation in map(_fingerprinted, product_automations()):
            existing = await client.read_automations_by_name(name=automation.name)
            kept = next(
                (a for a in existing if a.description == automation.description), None
            )
            for other in existing:
                if other is not kept:
                    await client.delete_automation(other.id)
            if kept is None:
                await automation.acreate()
                logger.info("installed automation %r", automation.name)
            names.append(automation.name)
    return names
