"""Every flow prefect.yaml deploys keeps the same hygiene, whoever wrote it.

Prefect retries only what can succeed by trying again, never a flow as a whole;
no task with a side effect caches; parameters travel as JSON and come back as
the annotated types.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import Flow, Task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed
from prefect.utilities.callables import parameter_schema
from pydantic import BaseModel, ValidationError

from deployments.definitions import load_definitions
from leads.run_parameters import json_ready

DEFINITIONS = load_definitions()
FLOWS: dict[str, Flow[..., Any]] = {d.entrypoint: d.load_flow() for d in DEFINITIONS}


def tasks_of(flow: Flow[..., Any]) -> list[Task[..., Any]]:
    """The Prefect tasks the flow's module holds: its own and those it imports."""
    module = sys.modules[flow.fn.__module__]
    return [value for value in vars(module).values() if isinstance(value, Task)]


def http_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/crm")
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


def validation_error() -> ValidationError:
    class Lead(BaseModel):
        email: str

    try:
        Lead.model_validate({})
    except ValidationError as exc:
        return exc
    raise AssertionError("an empty lead validated")


# Errors that come back the same however often a task is run again.
PERMANENT = [
    ValueError("a record the flow cannot read"),
    PermissionError("credentials refused"),
    http_error(400),
    http_error(401),
    http_error(403),
    http_error(404),
    http_error(422),
]

TASKS = {
    f"{entrypoint} > {task.name}": task
    for entrypoint, flow in FLOWS.items()
    for task in tasks_of(flow)
}


def test_the_walk_finds_the_tasks_that_send_and_write():
    names = {task.name for task in TASKS.values()}

    assert {"send sequence steps", "upsert leads to the CRM", "import chunk"} <= names


def test_loading_a_flow_leaves_scikit_learn_unloaded():
    # Every run is a new process, and a lead waits while it starts: a drain
    # that never scores a lead must not pay scikit-learn's import (about a
    # second). The scorer imports it when a lead is first scored.
    load_all = (
        "import sys\n"
        "from deployments.definitions import load_definitions\n"
        "for definition in load_definitions():\n"
        "    definition.load_flow()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy'}))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", load_all],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).parents[2],
    )

    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize("flow", FLOWS.values(), ids=FLOWS.keys())
def test_a_flow_is_never_retried_whole(flow):
    # A flow run retried by Prefect repeats every step, permanent failures too;
    # the drains' schedule and claims are what try again.
    assert flow.retries == 0


@pytest.mark.parametrize("task", TASKS.values(), ids=TASKS.keys())
class TestEveryTaskOfAFlow:
    def test_never_caches_its_side_effect(self, task):
        assert task.cache_policy is NO_CACHE
        assert task.cache_key_fn is None
        assert task.cache_expiration is None

    def test_is_retried_only_on_a_condition(self, task):
        if task.retries:
            assert task.retry_condition_fn is not None

    @pytest.mark.parametrize("error", PERMANENT, ids=lambda e: type(e).__name__)
    def test_never_retries_an_error_that_would_come_again(self, task, error):
        if not task.retries:
            return
        assert not task.retry_condition_fn(task, None, Failed(data=error))

    def test_never_retries_a_validation_error(self, task):
        if not task.retries:
            return
        failed = Failed(data=validation_error())

        assert not task.retry_condition_fn(task, None, failed)


@pytest.mark.parametrize("definition", DEFINITIONS, ids=lambda d: d.name)
class TestParameters:
    def test_every_parameter_is_annotated_so_it_comes_back_typed(self, definition):
        flow = definition.load_flow()
        hints = typing.get_type_hints(flow.fn)

        for name in inspect.signature(flow.fn).parameters:
            assert name in hints, f"{name} has no annotation: it would stay JSON"
            assert hints[name] is not Any

    def test_defaults_and_the_deployments_values_round_trip_as_json(self, definition):
        flow = definition.load_flow()
        given = {
            name: parameter.default
            for name, parameter in inspect.signature(flow.fn).parameters.items()
            if parameter.default is not inspect.Parameter.empty
        } | definition.parameters

        sent = json.loads(json.dumps(json_ready(given)))
        back = flow.validate_parameters(sent)

        assert back == given
        assert {k: type(v) for k, v in back.items()} == {
            k: type(v) for k, v in given.items()
        }

    def test_the_schema_prefect_deploy_sends_types_every_parameter(self, definition):
        flow = definition.load_flow()

        schema = parameter_schema(flow).model_dump()

        for name, spec in schema["properties"].items():
            typed = {"type", "anyOf", "allOf", "$ref", "enum"} & set(spec)
            assert typed, f"{name}: {spec}"


class _Started(Exception):
    """Raised by the collector setting, to stop a flow body at its first line."""


@pytest.mark.parametrize("entrypoint", sorted(FLOWS))
def test_a_flow_sets_the_collector_before_anything_else(entrypoint, monkeypatch):
    flow = FLOWS[entrypoint]
    module = sys.modules[flow.fn.__module__]

    def started() -> None:
        raise _Started

    monkeypatch.setattr(module, "collect_less_often", started)

    # Every deployed flow takes its parameters' defaults; no run context is
    # needed to reach the first line.
    with pytest.raises(_Started):
        flow.fn()
