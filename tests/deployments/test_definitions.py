"""prefect.yaml is the single list of deployments, and every entry is servable."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
)

from deployments.definitions import (
    DefinitionError,
    load_definitions,
    to_runner_deployment,
)

DEFINITIONS = load_definitions()


def test_prefect_yaml_declares_the_workflows_the_api_names():
    assert {d.name for d in DEFINITIONS} >= {"sequence_dispatcher", "welcome_sequence"}


def test_every_configured_sequence_has_a_deployment_of_its_own_name():
    from leads.sequences import load_sequences

    config = Path(__file__).parents[2] / "config" / "sequences.yaml"
    by_name = {d.name: d for d in DEFINITIONS}

    for name in load_sequences(config):
        assert name in by_name, f"prefect.yaml has no deployment for {name!r}"
        assert by_name[name].parameters == {"sequence": name}


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda d: d.name)
class TestEveryDeployment:
    def test_entrypoint_imports_to_a_flow(self, definition):
        flow = definition.load_flow()

        assert flow.name

    def test_parameters_are_the_flows_own_and_validate(self, definition):
        flow = definition.load_flow()
        accepted = set(inspect.signature(flow.fn).parameters)

        assert set(definition.parameters) <= accepted
        flow.validate_parameters(definition.parameters)

    def test_builds_a_servable_deployment_with_a_concurrency_limit(self, definition):
        deployment = to_runner_deployment(definition)

        limit = ConcurrencyLimitConfig.model_validate(definition.concurrency_limit)
        assert deployment.name == definition.name
        assert deployment.concurrency_limit == limit.limit >= 1
        assert deployment.concurrency_options.collision_strategy == (
            limit.collision_strategy
        )
        assert deployment.entrypoint.startswith("flows.")
        assert "orchestrator" in deployment.tags

    def test_schedules_are_valid_cron(self, definition):
        from prefect.client.schemas.schedules import CronSchedule

        for schedule in definition.schedules:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))


def test_drains_run_one_at_a_time_and_cancel_newcomers():
    drains = [d for d in DEFINITIONS if d.schedules or d.triggers]

    assert drains
    for drain in drains:
        limit = ConcurrencyLimitConfig.model_validate(drain.concurrency_limit)
        assert limit.limit == 1
        assert limit.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
        # A run killed before it started must give the slot back in a minute.
        assert limit.grace_period_seconds == 60


def test_both_drains_react_to_the_apis_event():
    from api.events import EVENT, RESOURCE_ID

    drains = [d for d in DEFINITIONS if d.triggers]

    assert {d.name for d in drains} == {"sequence_dispatcher", "crm_sync"}
    for drain in drains:
        [trigger] = drain.triggers
        assert trigger["expect"] == [EVENT]
        assert trigger["match"] == {"prefect.resource.id": RESOURCE_ID}


def test_a_broken_file_is_a_clear_error(tmp_path: Path):
    twice = tmp_path / "prefect.yaml"
    twice.write_text(
        "deployments:\n"
        "  - {name: a, entrypoint: 'flows/sequence_dispatch.py:dispatch_sequence'}\n"
        "  - {name: a, entrypoint: 'flows/sequence_dispatch.py:dispatch_sequence'}\n"
    )
    nameless = tmp_path / "nameless.yaml"
    nameless.write_text("deployments:\n  - {entrypoint: 'x.py:y'}\n")
    missing = tmp_path / "missing.yaml"
    missing.write_text("deployments:\n  - {name: b, entrypoint: 'flows/nope.py:y'}\n")

    with pytest.raises(DefinitionError, match="used twice: a"):
        load_definitions(twice)
    with pytest.raises(DefinitionError, match="#1 .* has no name"):
        load_definitions(nameless)
    with pytest.raises(DefinitionError, match="cannot import flows.nope"):
        load_definitions(missing)[0].load_flow()
