"""Flow-run parameters go to Prefect as JSON that carries ids, never personal data.

Case PF-01: a deployment called with a pydantic model, a date and an aware
datetime must get ISO strings (never Unix floats, which a schema-enforcing
deployment refuses with 409), and the flow must read the original values back.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import pytest
from prefect import flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.exceptions import PrefectHTTPStatusError
from prefect.utilities.callables import parameter_schema
from pydantic import BaseModel

from leads.run_parameters import (
    ParameterNotSerialisable,
    PersonalDataInParameters,
    json_ready,
    personal_data_kind,
)

CASE = json.loads(
    (Path(__file__).parents[1] / "cases" / "PF-01.json").read_text(encoding="utf-8")
)
LEAD_EMAIL = "v.ames@example.com"


class SyncRequest(BaseModel):
    lead_id: str
    captured_at: datetime


@flow(name="sync-lead")
def sync_lead(request: SyncRequest, since: date, not_before: datetime) -> None:
    """The case's flow: only its signature matters, it is never run."""


def case_parameters() -> dict[str, Any]:
    """The case's `parameters_python`, as the Python values they describe."""
    return {
        "request": SyncRequest(
            lead_id="lead_123", captured_at=datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
        ),
        "since": date(2024, 6, 1),
        "not_before": datetime(2024, 6, 1, 9, 0, tzinfo=ZoneInfo("Europe/Paris")),
    }


def instants(value: Any) -> Any:
    """`value` with each ISO datetime string read as (instant, UTC offset).

    `Z` and `+00:00` then compare equal, while an offset that was dropped or
    changed still shows.
    """
    if isinstance(value, dict):
        return {key: instants(item) for key, item in value.items()}
    if isinstance(value, str) and "T" in value:
        moment = datetime.fromisoformat(value)
        return moment, moment.utcoffset()
    return value


class TestJsonReady:
    def test_turns_the_cases_values_into_the_json_it_expects(self):
        sent = json_ready(case_parameters())

        assert instants(sent) == instants(CASE["expected"]["parameters_json_sent"])
        assert sent["not_before"] == "2024-06-01T09:00:00+02:00", "offset kept"

    def test_gives_only_json_types_and_no_datetime_as_a_number(self):
        sent = json_ready(case_parameters())

        assert json.loads(json.dumps(sent)) == sent
        assert isinstance(sent["request"]["captured_at"], str)
        assert isinstance(sent["not_before"], str)

    def test_turns_ids_sets_and_durations_into_json_too(self):
        lead = uuid.uuid4()

        sent = json_ready(
            {"lead_ids": (lead,), "tags": {"web"}, "grace": timedelta(seconds=90)}
        )

        assert sent == {"lead_ids": [str(lead)], "tags": ["web"], "grace": "PT1M30S"}

    def test_leaves_the_callers_mapping_alone(self):
        given = case_parameters()

        json_ready(given)

        assert isinstance(given["request"], SyncRequest)


class TestPersonalData:
    def test_a_lead_email_in_a_model_is_refused_naming_its_path(self):
        class LeadRequest(BaseModel):
            lead_id: str
            email: str

        with pytest.raises(PersonalDataInParameters) as refused:
            json_ready({"request": LeadRequest(lead_id="lead_123", email=LEAD_EMAIL)})

        assert (refused.value.path, refused.value.kind) == ("request.email", "email")
        assert "request.email" in str(refused.value)
        assert LEAD_EMAIL not in str(refused.value), "the error repeats no address"
        assert isinstance(refused.value, ValueError)

    def test_a_lead_email_passed_as_the_cases_lead_id_is_refused(self):
        parameters = case_parameters()
        parameters["request"] = parameters["request"].model_copy(
            update={"lead_id": LEAD_EMAIL}
        )

        with pytest.raises(PersonalDataInParameters) as refused:
            json_ready(parameters)

        assert refused.value.path == "request.lead_id"

    @pytest.mark.parametrize(
        ("parameters", "path"),
        [
            ({"note": f"Ada Lovelace <{LEAD_EMAIL}>"}, "note"),
            ({"lead_ids": ["lead_1", LEAD_EMAIL]}, "lead_ids[1]"),
            ({"by_address": {LEAD_EMAIL: "lead_1"}}, "by_address.<key>"),
            ({"batch": [{"to": " V.Ames@Example.COM "}]}, "batch[0].to"),
        ],
    )
    def test_an_email_anywhere_is_refused(self, parameters, path):
        with pytest.raises(PersonalDataInParameters) as refused:
            json_ready(parameters)

        assert refused.value.path == path
        assert LEAD_EMAIL not in str(refused.value).lower()

    @pytest.mark.parametrize(
        "phone",
        [
            "+44 20 7946 0958",
            "+33612345678",
            "(415) 555-2671",
            "415-555-2671",
            "415.555.2671",
            "06 12 34 56 78",
            "020 7946 0958",
        ],
    )
    def test_a_phone_number_is_refused(self, phone):
        with pytest.raises(PersonalDataInParameters) as refused:
            json_ready({"callback": phone})

        assert (refused.value.path, refused.value.kind) == ("callback", "phone")
        assert phone not in str(refused.value)

    @pytest.mark.parametrize(
        "value",
        [
            str(uuid.UUID(int=7)),
            "5d4bd39e-7b0e-4b5e-8a0c-9a9f0d0f0f0f",
            "12345678-1234-1234-1234-123456789012",
            "2024-06-01",
            "2024/06/01",
            "01/06/2024",
            "01.06.2024",
            "20240601",
            "2024-06-01T09:00:00+02:00",
            "1234567",
            "-1234567",
            "1234567.89",
            "1 234 567",
            "1.234.567",
            "192.168.100.200",
            "3.9.1",
            "lead_123",
            "welcome_sequence",
            "09:00-17:00",
            "0 9 * * 1-5",
            "@example",
            "crm-sync/crm_sync",
        ],
    )
    def test_ids_dates_and_numbers_as_strings_are_not_mistaken_for_it(self, value):
        assert personal_data_kind(value) is None
        assert json_ready({"value": value}) == {"value": value}


class TestWhatJsonCannotCarry:
    def test_an_unknown_object_is_refused_naming_the_parameter(self):
        with pytest.raises(ParameterNotSerialisable) as refused:
            json_ready({"lead_id": "lead_123", "mailer": object()})

        assert refused.value.path == "mailer"
        assert isinstance(refused.value, TypeError)
        assert isinstance(refused.value, ValueError)

    @pytest.mark.parametrize("number", [math.nan, math.inf])
    def test_a_float_json_has_no_form_for_is_refused(self, number):
        with pytest.raises(ParameterNotSerialisable) as refused:
            json_ready({"limits": {"score": number}})

        assert refused.value.path == "limits.score"


def on_prefect(url: str, call: Callable[[PrefectClient], Any]) -> Any:
    async def run() -> Any:
        async with PrefectClient(api=url) as client:
            return await call(client)

    return asyncio.run(run())


@pytest.fixture
def deployment(prefect_server) -> Iterator[UUID]:
    """The case's `sync-lead/default`, enforcing the flow's real parameter schema.

    Removed afterwards with its runs: the server is the whole session's.
    """
    flow_name, deployment_name = CASE["input"]["deployment"].split("/")
    assert flow_name == sync_lead.name
    schema = parameter_schema(sync_lead).model_dump(exclude_unset=True)

    async def register(client: PrefectClient) -> tuple[UUID, UUID]:
        flow_id = await client.create_flow(sync_lead)
        deployment_id = await client.create_deployment(
            flow_id,
            deployment_name,
            parameter_openapi_schema=schema,
            enforce_parameter_schema=True,
        )
        return flow_id, deployment_id

    async def remove(client: PrefectClient) -> None:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[made]))
        )
        for run in runs:
            await client.delete_flow_run(run.id)
        await client.delete_deployment(made)
        await client.delete_flow(flow_id)

    flow_id, made = on_prefect(prefect_server.api_url, register)
    yield made
    on_prefect(prefect_server.api_url, remove)


@pytest.mark.slow
class TestOnThePrefectServer:
    def test_a_run_is_created_and_the_flow_reads_the_original_values(
        self, prefect_server, deployment
    ):
        expected = CASE["expected"]

        async def create_and_read(client: PrefectClient):
            created = await client.create_flow_run_from_deployment(
                deployment, parameters=json_ready(case_parameters())
            )
            return await client.read_flow_run(created.id)

        run = on_prefect(prefect_server.api_url, create_and_read)

        assert expected["flow_run_created"] and run.deployment_id == deployment
        assert instants(run.parameters) == instants(expected["parameters_json_sent"])
        inside = sync_lead.validate_parameters(run.parameters)
        assert (
            type(inside["request"]).__name__ == expected["inside_flow"]["type(request)"]
        )
        assert inside["request"] == case_parameters()["request"]
        assert type(inside["since"]) is date
        assert inside["since"] == date(2024, 6, 1)
        not_before = inside["not_before"]
        assert not_before.utcoffset() is not None, "aware"
        assert not_before == case_parameters()["not_before"]
        assert not_before == datetime.fromisoformat(
            expected["inside_flow"]["not_before_utc"]
        )

    def test_the_deployment_refuses_a_datetime_sent_as_a_float(
        self, prefect_server, deployment
    ):
        as_floats = json_ready(case_parameters()) | {
            "not_before": case_parameters()["not_before"].timestamp()
        }

        with pytest.raises(PrefectHTTPStatusError) as refused:
            on_prefect(
                prefect_server.api_url,
                lambda client: client.create_flow_run_from_deployment(
                    deployment, parameters=as_floats
                ),
            )

        assert refused.value.response.status_code == 409, "what #19257 reported"
