"""The flow runner: one process serving every deployment in `prefect.yaml`."""

from __future__ import annotations

import asyncio
import logging

from prefect import serve

from deployments import automations
from deployments.definitions import load_definitions, to_runner_deployment

logger = logging.getLogger(__name__)


def serve_all(limit: int) -> None:
    """Installs the automations, then serves every deployment until stopped.

    A Prefect server that does not answer the installation in time ends the
    process with status 1, which `orchestrator up` reports.

    Schedules are not paused on shutdown (Prefect's default is to pause them,
    which would silently stop the every-minute safety net after a restart).
    """
    try:
        asyncio.run(automations.install())
    except TimeoutError:
        logger.error(
            "the Prefect server did not answer within %g s; not serving",
            automations.SETUP_SECONDS,
        )
        raise SystemExit(1) from None
    deployments = [to_runner_deployment(d) for d in load_definitions()]
    logger.info(
        "serving %d deployments, at most %d runs at once", len(deployments), limit
    )
    serve(
        *deployments,
        limit=limit,
        pause_on_shutdown=False,
        print_starting_message=False,
    )
