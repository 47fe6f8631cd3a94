"""Reading `prefect.yaml`, the single list of deployments, into servable deployments."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"


class DefinitionError(ValueError):
    """`prefect.yaml` declares something that cannot be served."""


@dataclass(frozen=True)
class DeploymentDefinition:
    """One entry of `prefect.yaml`'s `deployments` list."""

    name: str
    entrypoint: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    concurrency_limit: dict[str, Any] | int | None = None
    tags: list[str] = field(default_factory=list)
    # Read by `prefect deploy` (and `orchestrator deploy`/`worker` for its name);
    # serving ignores it.
    work_pool: dict[str, Any] | None = None

    @property
    def work_pool_name(self) -> str | None:
        return (self.work_pool or {}).get("name")

    @property
    def module(self) -> str:
        """The entrypoint as an importable module path (`flows.x`)."""
        path, _, _ = self.entrypoint.partition(":")
        return path.removesuffix(".py").replace("/", ".")

    @property
    def function(self) -> str:
        return self.entrypoint.partition(":")[2]

    def load_flow(self) -> Flow[..., Any]:
        """Imports the entrypoint and returns its flow.

        Raises:
            DefinitionError: the module or the function is missing, or not a flow.
        """
        from prefect import Flow

        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            raise DefinitionError(
                f"deployment {self.name!r}: cannot import {self.module}: {exc}"
            ) from exc
        candidate = getattr(module, self.function, None)
        if not isinstance(candidate, Flow):
            raise DefinitionError(
                f"deployment {self.name!r}: {self.entrypoint} is not a Prefect flow"
            )
        return candidate


def load_definitions(path: Path = PREFECT_YAML) -> list[DeploymentDefinition]:
    """Every deployment `prefect.yaml` declares, in file order.

    Raises:
        DefinitionError: the file is missing, malformed, or names a deployment twice.
    """
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DefinitionError(f"cannot read {path.name}: {exc}") from exc
    entries = document.get("deployments") or []
    known = set(DeploymentDefinition.__dataclass_fields__)
    definitions = []
    for position, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not entry.get("name"):
            raise DefinitionError(f"deployment #{position} in {path.name} has no name")
        if not entry.get("entrypoint"):
            raise DefinitionError(f"deployment {entry['name']!r} has no entrypoint")
        # Keys only `prefect deploy` reads (version, sla, per-deployment steps)
        # are not ours.
        definitions.append(
            DeploymentDefinition(**{k: v for k, v in entry.items() if k in known})
        )
    names = [d.name for d in definitions]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DefinitionError(f"deployment names used twice: {', '.join(duplicated)}")
    return definitions


def work_pool_name(definitions: list[DeploymentDefinition]) -> str:
    """The one work pool every deployment names, which workers take runs from.

    Raises:
        DefinitionError: a deployment names no pool, or two pools are named.
    """
    unpooled = [d.name for d in definitions if not d.work_pool_name]
    if unpooled:
        raise DefinitionError(
            f"deployments without a work_pool: {', '.join(unpooled)}; give each "
            "`work_pool: *work_pool` in prefect.yaml"
        )
    pools = sorted({d.work_pool_name for d in definitions if d.work_pool_name})
    if len(pools) != 1:
        raise DefinitionError(
            f"expected one work pool for every deployment, got {', '.join(pools)}"
        )
    return pools[0]


def _schedule(spec: dict[str, Any]) -> Any:
    from prefect.schedules import Cron, Interval

    active = spec.get("active", True)
    if "cron" in spec:
        return Cron(spec["cron"], timezone=spec.get("timezone"), active=active)
    if "interval" in spec:
        return Interval(timedelta(seconds=spec["interval"]), active=active)
    raise DefinitionError(f"schedule {spec!r} has neither cron nor interval")


def to_runner_deployment(definition: DeploymentDefinition) -> RunnerDeployment:
    """The definition as a deployment the flow runner can serve."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.deployments.runner import EntrypointType
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    flow = definition.load_flow()
    triggers = TypeAdapter(list[DeploymentTriggerTypes]).validate_python(
        definition.triggers
    )
    limit = definition.concurrency_limit
    if isinstance(limit, dict):
        limit = ConcurrencyLimitConfig.model_validate(limit)
    return flow.to_deployment(
        name=definition.name,
        description=definition.description,
        parameters=definition.parameters,
        schedules=[_schedule(spec) for spec in definition.schedules],
        triggers=triggers,
        concurrency_limit=limit,
        # prefect.yaml gives each deployment RUN_TAG, so a deployed one is
        # tagged the same as a served one.
        tags=list(definition.tags),
        # Runs import the flow by module, so they work from any directory.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
