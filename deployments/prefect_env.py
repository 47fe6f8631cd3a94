"""The Prefect environment every process of the product shares.

`orchestrator up` gives it to its children; `orchestrator serve` applies it to
itself when started alone, so a flow runner behaves the same either way.
"""

from __future__ import annotations

import os

from leads.settings import Settings

# Flow runs send a heartbeat this often (30 is Prefect's minimum; its default
# is 180). The crash-detection automation counts missed beats of this length.
HEARTBEAT_SECONDS = 30
# Deployments and their runs carry this tag; the product's automations act on
# tagged runs only, never on other projects' runs on a shared server.
RUN_TAG = "orchestrator"


def prefect_environment(settings: Settings) -> dict[str, str]:
    """Environment every process of the stack shares for Prefect."""
    home = settings.prefect_home
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": settings.prefect_url,
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": (  # the embedded server's
            f"sqlite+aiosqlite:///{home / 'prefect.db'}"
        ),
        # Nothing may call out: no analytics from the server or the client.
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # Heartbeats let the product's automation crash runs whose process died.
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
        "PREFECT_RUNNER_POLL_FREQUENCY": str(settings.flow_runner_poll_seconds),
        "PREFECT_LOGGING_LEVEL": "INFO",
    }


def apply_runner_defaults(settings: Settings) -> None:
    """Sets heartbeat and polling for this process and the runs it starts.

    Values already in the environment win; call before Prefect is imported.
    """
    wanted = prefect_environment(settings)
    for name in ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_POLL_FREQUENCY"):
        os.environ.setdefault(name, wanted[name])
