"""The summary every flow run leaves in Prefect: counts and reasons, no personal data.

Prefect keeps artifacts and shows them in its UI beside the run, so they carry
what flow parameters carry: counts and reason codes, never a lead's e-mail,
name or phone (those stay in the lead store, where erasure reaches them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from uuid import UUID

from prefect.artifacts import create_table_artifact

# Prefect's rule for artifact keys (prefect.types.names).
ARTIFACT_KEY = re.compile(r"[a-z0-9-]+")
# Outcome names are code-made: `sent`, `failed_tenants:CrmAuthError`, …
OUTCOME = re.compile(r"[A-Za-z0-9_:.-]+")


def summary_rows(counts: Mapping[str, int]) -> list[dict[str, str | int]]:
    """One `{"outcome", "count"}` row per outcome, in name order.

    Raises:
        ValueError: an outcome is not a code-made name or a count not a number.
    """
    rows: list[dict[str, str | int]] = []
    for outcome, count in sorted(counts.items()):
        if not OUTCOME.fullmatch(outcome):
            raise ValueError(
                f"summary outcome {outcome!r} is not a name made of letters, "
                "digits and _:.-; outcomes are codes, never data"
            )
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"summary count of {outcome!r} is not a whole number")
        rows.append({"outcome": outcome, "count": count})
    return rows


def publish_summary(key: str, counts: Mapping[str, int], description: str) -> UUID:
    """Leaves this run's summary as the table artifact `key`.

    Args:
        key: the flow's summary key, e.g. `crm-sync-summary` (Prefect allows
            lowercase letters, digits and dashes).
        counts: outcome or reason code → how many.
        description: what the run was, in words (no lead data).

    Returns:
        The artifact's id.
    """
    if not ARTIFACT_KEY.fullmatch(key):
        raise ValueError(
            f"artifact key {key!r} must be lowercase letters, digits and dashes"
        )
    rows = summary_rows(counts)
    if not rows:
        description = f"{description} Nothing was due."
    return create_table_artifact(key=key, table=rows, description=description)
