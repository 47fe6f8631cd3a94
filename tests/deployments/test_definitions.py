"""prefect.yaml is the single list of deployments, and every entry is servable."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
)

from deployments.definitions import (
    PREFECT_YAML,
    DefinitionError,
    load_definitions,
    to_runner_deployment,
    work_pool_name,
)
from deployments.prefect_env import HEARTBEAT_SECONDS, RUN_TAG

DEFINITIONS = load_definitions()
DOCUMENT = yaml.safe_load(PREFECT_YAML.read_text())


def strings(value: object) -> list[str]:
    """Every string in a parsed YAML document."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


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

    def test_is_deployed_to_the_work_pool_with_the_tag_it_is_served_with(
        self, definition
    ):
        deployment = to_runner_deployment(definition)

        assert definition.work_pool_name == work_pool_name(DEFINITIONS)
        assert RUN_TAG in definition.tags
        assert deployment.tags == definition.tags

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
    from leads.store.outbox import PENDING_DRAINS

    drains = [d for d in DEFINITIONS if d.triggers]

    # The API leaves the event out while the drains it names are present.
    assert {d.name for d in drains} == set(PENDING_DRAINS)
    assert set(PENDING_DRAINS) == {"sequence_dispatcher", "crm_sync"}
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


class TestDeployingToAWorkPool:
    """`prefect deploy --all` reads the same file; these keys are for it."""

    def test_every_deployment_names_one_process_pool(self):
        assert work_pool_name(DEFINITIONS) == "orchestrator"

    def test_worker_runs_send_the_heartbeat_the_crash_automation_counts(self):
        for definition in DEFINITIONS:
            env = definition.work_pool["job_variables"]["env"]
            assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS)

    def test_runs_change_to_the_directory_deploy_ran_in_named_nowhere_in_the_file(
        self,
    ):
        [build] = DOCUMENT["build"]
        [pull] = DOCUMENT["pull"]
        recorded = build["prefect.deployments.steps.set_working_directory"]
        changed_to = pull["prefect.deployments.steps.set_working_directory"]

        assert recorded["directory"] == "."
        assert changed_to["directory"] == f"{{{{ {recorded['id']}.directory }}}}"
        machine_paths = [v for v in strings(DOCUMENT) if v.startswith(("/", "~"))]
        assert machine_paths == []

    def test_prefects_own_reader_takes_every_deployment_with_its_settings(self):
        # `prefect deploy` skips a file its model refuses, with only a warning.
        from prefect.cli.deploy._models import PrefectYamlModel

        model = PrefectYamlModel.model_validate(DOCUMENT)

        assert [d.name for d in model.deployments] == [d.name for d in DEFINITIONS]
        for read, definition in zip(model.deployments, DEFINITIONS, strict=True):
            assert read.entrypoint == definition.entrypoint
            assert read.work_pool.name == definition.work_pool_name
            assert read.parameters == definition.parameters
            assert read.tags == definition.tags
            assert len(read.schedules or []) == len(definition.schedules)
            assert len(read.triggers or []) == len(definition.triggers)


def test_the_work_pool_must_be_named_once_for_every_deployment(tmp_path: Path):
    def entry(name: str, pool: str | None) -> str:
        pooled = f", work_pool: {{name: {pool}}}" if pool else ""
        flow = "entrypoint: 'flows/crm_sync.py:crm_sync'"
        return f"  - {{name: {name}, {flow}{pooled}}}\n"

    unpooled = tmp_path / "unpooled.yaml"
    unpooled.write_text("deployments:\n" + entry("a", "p") + entry("b", None))
    two = tmp_path / "two.yaml"
    two.write_text("deployments:\n" + entry("a", "p") + entry("b", "q"))

    with pytest.raises(DefinitionError, match="without a work_pool: b"):
        work_pool_name(load_definitions(unpooled))
    with pytest.raises(DefinitionError, match="one work pool .* got p, q"):
        work_pool_name(load_definitions(two))


def test_keys_only_prefect_deploy_reads_are_tolerated(tmp_path: Path):
    path = tmp_path / "prefect.yaml"
    path.write_text(
        "pull: [{prefect.deployments.steps.set_working_directory: {directory: .}}]\n"
        "deployments:\n"
        "  - name: a\n"
        "    entrypoint: flows/crm_sync.py:crm_sync\n"
        "    version: '1'\n"
        "    enforce_parameter_schema: true\n"
        "    pull: []\n"
    )

    [definition] = load_definitions(path)

    assert definition.name == "a"
    assert definition.work_pool_name is None
