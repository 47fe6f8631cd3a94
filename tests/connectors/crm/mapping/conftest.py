"""The CRM field lists the sandboxes serve, and builders of mappings and leads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.crm.mapping import CrmMapping, load_mapping
from connectors.crm.protocol import CrmField
from leads.store.tables import Lead

CONFIG = Path(__file__).parents[4] / "config" / "crm"

LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
LEAD_STATUSES = (
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
)
LEAD_SOURCES = (
    "Web",
    "Phone Inquiry",
    "Partner Referral",
    "Purchased List",
    "Webinar",
    "Other",
)


def _text(name: str, **kwargs: Any) -> CrmField:
    return CrmField(name=name, label=name, type="string", **kwargs)


def _read_only(name: str, type_: str) -> CrmField:
    return CrmField(
        name=name, label=name, type=type_, createable=False, updateable=False
    )


def hubspot_contact_fields() -> list[CrmField]:
    """HubSpot contact properties; text ones have no length limit."""
    return [
        # HubSpot keeps one contact per e-mail address.
        _text("email", unique=True),
        *(
            _text(name)
            for name in (
                "firstname",
                "lastname",
                "company",
                "phone",
                "jobtitle",
                "website",
                "address",
                "city",
                "state",
                "zip",
                "country",
            )
        ),
        CrmField(name="message", label="Message", type="textarea"),
        CrmField(
            name="lifecyclestage",
            label="Lifecycle Stage",
            type="enumeration",
            picklist=LIFECYCLE_STAGES,
        ),
        CrmField(
            name="hs_lead_status",
            label="Lead Status",
            type="enumeration",
            picklist=LEAD_STATUSES,
        ),
        _read_only("hs_email_optout", "bool"),
        _read_only("createdate", "datetime"),
        _read_only("lastmodifieddate", "datetime"),
        _read_only("hs_object_id", "number"),
        CrmField(name="lead_score", label="Lead score", type="number"),
        _text("lead_source"),
        _text("orchestrator_lead_id"),
        CrmField(name="lead_captured_date", label="Captured", type="date"),
    ]


def salesforce_lead_fields() -> list[CrmField]:
    """Salesforce Lead fields, with their lengths and picklists."""
    return [
        _text("FirstName", length=40),
        _text("LastName", length=80, required=True),
        _text("Company", length=255, required=True),
        CrmField(name="Email", label="Email", type="email", length=80),
        CrmField(name="Phone", label="Phone", type="phone", length=40),
        _text("Title", length=128),
        CrmField(name="Website", label="Website", type="url", length=255),
        CrmField(name="Street", label="Street", type="textarea", length=255),
        _text("City", length=40),
        _text("State", length=80),
        _text("PostalCode", length=20),
        _text("Country", length=80),
        CrmField(
            name="LeadSource",
            label="Lead Source",
            type="picklist",
            length=255,
            picklist=LEAD_SOURCES,
        ),
        # Required in the schema but defaulted on create, so not required of us.
        CrmField(
            name="Status",
            label="Status",
            type="picklist",
            length=255,
            picklist=(
                "Open - Not Contacted",
                "Working - Contacted",
                "Closed - Converted",
                "Closed - Not Converted",
            ),
        ),
        CrmField(
            name="Description", label="Description", type="textarea", length=32000
        ),
        CrmField(
            name="Rating",
            label="Rating",
            type="picklist",
            length=255,
            picklist=("Hot", "Warm", "Cold"),
        ),
        CrmField(name="HasOptedOutOfEmail", label="Email Opt Out", type="boolean"),
        _read_only("IsConverted", "boolean"),
        _read_only("ConvertedDate", "date"),
        _read_only("CreatedDate", "datetime"),
        _read_only("LastModifiedDate", "datetime"),
        _text("Web_Lead_Id__c", length=64, unique=True, external_id=True),
        CrmField(name="Lead_Score__c", label="Lead Score", type="double"),
        CrmField(name="Captured_Date__c", label="Captured Date", type="date"),
    ]


@pytest.fixture
def hubspot_fields() -> list[CrmField]:
    return hubspot_contact_fields()


@pytest.fixture
def salesforce_fields() -> list[CrmField]:
    return salesforce_lead_fields()


@pytest.fixture
def salesforce_by_name() -> dict[str, CrmField]:
    return {field.name: field for field in salesforce_lead_fields()}


@pytest.fixture
def hubspot_mapping() -> CrmMapping:
    return load_mapping(CONFIG / "hubspot.yaml")


@pytest.fixture
def salesforce_mapping() -> CrmMapping:
    return load_mapping(CONFIG / "salesforce.yaml")


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[[str], Path]:
    """Writes YAML text to a mapping file and gives its path."""

    def write(text: str) -> Path:
        path = tmp_path / "mapping.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def mapping_of(
    write_file: Callable[[str], Path],
) -> Callable[..., CrmMapping]:
    """A mapping loaded from a file holding `fields` (CRM field → rule)."""

    def build(
        fields: dict[str, dict[str, Any]], provider: str = "salesforce"
    ) -> CrmMapping:
        text = yaml.safe_dump({"provider": provider, "fields": fields}, sort_keys=False)
        return load_mapping(write_file(text))

    return build


@pytest.fixture
def make_lead() -> Callable[..., dict[str, Any]]:
    """A lead as the sync step passes it: every column, blank unless given."""

    def build(**values: Any) -> dict[str, Any]:
        lead: dict[str, Any] = dict.fromkeys(Lead.__table__.columns.keys())
        lead.update(
            id="3f2b9a4e-0000-4000-8000-000000000001",
            tenant_id="default",
            status="new",
            score_reasons=[],
            warnings=[],
            flags=[],
            custom={},
        )
        lead.update(values)
        return lead

    return build
