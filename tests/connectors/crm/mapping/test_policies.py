"""Field policies: what is sent given the CRM's current record."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from connectors.crm.mapping import CrmMapping, apply_policies
from connectors.crm.protocol import CrmSnapshot

FIELDS = {"Title": "CTO", "Rating": "Warm", "Status": "Open"}


@pytest.fixture
def mapping(mapping_of: Callable[..., CrmMapping]) -> CrmMapping:
    return mapping_of(
        {
            "Title": {"source": "job_title"},
            "Rating": {"source": "custom.rating", "policy": "if_empty"},
            "Status": {"constant": "Open", "policy": "never_overwrite"},
        }
    )


def _held(**fields: object) -> CrmSnapshot:
    return CrmSnapshot(crm_id="00Q1", key="ada@example.com", fields=fields)


def test_sends_every_field_when_the_crm_has_no_record(mapping: CrmMapping) -> None:
    assert apply_policies(FIELDS, mapping, None) == FIELDS


def test_always_overwrites_what_the_crm_holds(mapping: CrmMapping) -> None:
    sent = apply_policies(FIELDS, mapping, _held(Title="CEO", Rating=None))

    assert sent["Title"] == "CTO"


@pytest.mark.parametrize("held", [None, "", "  "])
def test_if_empty_writes_over_an_empty_value(mapping: CrmMapping, held: object) -> None:
    sent = apply_policies(FIELDS, mapping, _held(Rating=held))

    assert sent == {"Title": "CTO", "Rating": "Warm"}


def test_if_empty_writes_a_field_the_record_lacks(mapping: CrmMapping) -> None:
    assert apply_policies(FIELDS, mapping, _held()) == {
        "Title": "CTO",
        "Rating": "Warm",
    }


@pytest.mark.parametrize("held", ["Hot", 0, False])
def test_if_empty_keeps_a_value_the_crm_holds(
    mapping: CrmMapping, held: object
) -> None:
    assert apply_policies(FIELDS, mapping, _held(Rating=held)) == {"Title": "CTO"}


def test_never_overwrite_is_left_out_of_an_update(mapping: CrmMapping) -> None:
    sent = apply_policies(FIELDS, mapping, _held(Status=None, Rating="Hot"))

    assert "Status" not in sent


def test_a_field_the_mapping_does_not_name_is_sent(mapping: CrmMapping) -> None:
    sent = apply_policies({"Email": "ada@example.com"}, mapping, _held())

    assert sent == {"Email": "ada@example.com"}


def test_returns_a_new_dict(mapping: CrmMapping) -> None:
    fields = dict(FIELDS)

    sent = apply_policies(fields, mapping, None)
    sent.pop("Title")

    assert fields == FIELDS


class TestIfTrue:
    @pytest.fixture
    def flagged(self, mapping_of: Callable[..., CrmMapping]) -> CrmMapping:
        return mapping_of(
            {
                "Title": {"source": "job_title"},
                "HasOptedOutOfEmail": {
                    "source": "email_opt_out",
                    "transform": "boolean",
                    "policy": "if_true",
                },
            }
        )

    @pytest.mark.parametrize("held", [None, _held(HasOptedOutOfEmail=False)])
    def test_writes_true_on_create_and_over_false(
        self, flagged: CrmMapping, held: CrmSnapshot | None
    ) -> None:
        sent = apply_policies({"HasOptedOutOfEmail": True}, flagged, held)

        assert sent == {"HasOptedOutOfEmail": True}

    @pytest.mark.parametrize("held", [None, _held(HasOptedOutOfEmail=True)])
    def test_never_writes_false_so_an_opt_out_made_in_the_crm_stays(
        self, flagged: CrmMapping, held: CrmSnapshot | None
    ) -> None:
        sent = apply_policies(
            {"Title": "CTO", "HasOptedOutOfEmail": False}, flagged, held
        )

        assert sent == {"Title": "CTO"}
