"""Applying a mapping to a lead: each transform, blanks, fallbacks and truncation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from connectors.crm.mapping import CrmMapping
from connectors.crm.protocol import CrmField

Lead = Callable[..., dict[str, Any]]
MappingOf = Callable[..., CrmMapping]


class TestText:
    def test_trims_the_lead_value(self, mapping_of: MappingOf, make_lead: Lead) -> None:
        mapped = mapping_of({"FirstName": {"source": "first_name"}}).apply(
            make_lead(first_name="  Ada \n")
        )

        assert mapped.fields == {"FirstName": "Ada"}
        assert mapped.warnings == []

    @pytest.mark.parametrize(
        ("value", "text"),
        [
            (42, "42"),
            (2.5, "2.5"),
            (True, "true"),
            (date(2024, 3, 10), "2024-03-10"),
            (
                ["title_seniority:vp +20", " source=Referral + "],
                "title_seniority:vp +20; source=Referral +",
            ),
        ],
    )
    def test_writes_other_values_as_text(
        self, mapping_of: MappingOf, make_lead: Lead, value: Any, text: str
    ) -> None:
        mapping = mapping_of({"Notes__c": {"source": "custom.note"}})

        assert mapping.apply(make_lead(custom={"note": value})).fields == {
            "Notes__c": text
        }

    def test_reads_a_custom_field(self, mapping_of: MappingOf, make_lead: Lead) -> None:
        mapping = mapping_of({"Industry": {"source": "custom.industry"}})

        assert mapping.apply(make_lead(custom={"industry": "Software"})).fields == {
            "Industry": "Software"
        }


class TestNumber:
    @pytest.mark.parametrize(
        ("value", "number"),
        [(87, 87), (0, 0), (4.5, 4.5), (" 42 ", 42), ("-3.25", -3.25), ("1e3", 1000.0)],
    )
    def test_takes_numbers_and_decimal_strings(
        self, mapping_of: MappingOf, make_lead: Lead, value: Any, number: float
    ) -> None:
        mapping = mapping_of({"N__c": {"source": "custom.n", "transform": "number"}})

        mapped = mapping.apply(make_lead(custom={"n": value}))

        assert mapped.fields == {"N__c": number}
        assert type(mapped.fields["N__c"]) is type(number)

    @pytest.mark.parametrize("value", ["1,000", "ten", True, float("nan"), "inf"])
    def test_leaves_out_what_is_not_a_number_with_a_warning(
        self, mapping_of: MappingOf, make_lead: Lead, value: Any
    ) -> None:
        mapping = mapping_of({"N__c": {"source": "custom.n", "transform": "number"}})

        mapped = mapping.apply(make_lead(custom={"n": value}))

        assert mapped.fields == {}
        assert mapped.warnings == ["invalid_number:N__c"]


class TestBoolean:
    @pytest.mark.parametrize(
        ("value", "flag"),
        [
            ("true", True),
            ("TRUE", True),
            ("Yes", True),
            ("1", True),
            (1, True),
            (True, True),
            ("false", False),
            ("No", False),
            (" 0 ", False),
            (0, False),
            (False, False),
        ],
    )
    def test_accepts_true_false_yes_no_one_zero_in_any_case(
        self, mapping_of: MappingOf, make_lead: Lead, value: Any, flag: bool
    ) -> None:
        mapping = mapping_of(
            {"HasOptedOutOfEmail": {"source": "custom.optout", "transform": "boolean"}}
        )

        mapped = mapping.apply(make_lead(custom={"optout": value}))

        assert mapped.fields == {"HasOptedOutOfEmail": flag}
        assert mapped.warnings == []

    @pytest.mark.parametrize("value", ["maybe", "y", 2, 1.0])
    def test_leaves_out_anything_else_with_a_warning(
        self, mapping_of: MappingOf, make_lead: Lead, value: Any
    ) -> None:
        mapping = mapping_of(
            {"HasOptedOutOfEmail": {"source": "custom.optout", "transform": "boolean"}}
        )

        mapped = mapping.apply(make_lead(custom={"optout": value}))

        assert mapped.fields == {}
        assert mapped.warnings == ["invalid_boolean:HasOptedOutOfEmail"]


class TestDate:
    @pytest.fixture
    def mapping(self, mapping_of: MappingOf) -> CrmMapping:
        return mapping_of(
            {"Captured_Date__c": {"source": "captured_at", "transform": "date"}}
        )

    def test_takes_the_day_in_los_angeles_for_a_lead_there(
        self, mapping: CrmMapping, make_lead: Lead
    ) -> None:
        lead = make_lead(
            timezone="America/Los_Angeles",
            captured_at=datetime(2024, 3, 10, 5, 30, tzinfo=UTC),
        )

        assert mapping.apply(lead).fields == {"Captured_Date__c": date(2024, 3, 9)}

    def test_takes_the_day_in_tokyo_for_a_lead_there(
        self, mapping: CrmMapping, make_lead: Lead
    ) -> None:
        lead = make_lead(
            timezone="Asia/Tokyo", captured_at=datetime(2024, 3, 9, 16, 0, tzinfo=UTC)
        )

        assert mapping.apply(lead).fields == {"Captured_Date__c": date(2024, 3, 10)}

    def test_uses_the_default_zone_for_a_lead_without_one(
        self, mapping: CrmMapping, make_lead: Lead
    ) -> None:
        lead = make_lead(captured_at=datetime(2024, 3, 9, 16, 0, tzinfo=UTC))

        assert mapping.apply(lead).fields == {"Captured_Date__c": date(2024, 3, 9)}
        assert mapping.apply(lead, default_zone="Asia/Tokyo").fields == {
            "Captured_Date__c": date(2024, 3, 10)
        }

    def test_prefers_the_lead_zone_to_the_default(
        self, mapping: CrmMapping, make_lead: Lead
    ) -> None:
        lead = make_lead(
            timezone="America/Los_Angeles",
            captured_at=datetime(2024, 3, 10, 5, 30, tzinfo=UTC),
        )

        mapped = mapping.apply(lead, default_zone="Asia/Tokyo")

        assert mapped.fields == {"Captured_Date__c": date(2024, 3, 9)}

    def test_warns_of_an_unknown_lead_zone_and_uses_the_default(
        self, mapping: CrmMapping, make_lead: Lead
    ) -> None:
        lead = make_lead(
            timezone="Mars/Olympus", captured_at=datetime(2024, 3, 9, 16, tzinfo=UTC)
        )

        mapped = mapping.apply(lead, default_zone="Asia/Tokyo")

        assert mapped.fields == {"Captured_Date__c": date(2024, 3, 10)}
        assert mapped.warnings == ["unknown_timezone:Captured_Date__c"]

    def test_refuses_an_unknown_default_zone(
        self, mapping: CrmMapping, make_lead: Lead
    ) -> None:
        with pytest.raises(ValueError, match="default_zone 'Mars/Olympus'"):
            mapping.apply(make_lead(), default_zone="Mars/Olympus")

    def test_takes_a_day_written_as_yyyy_mm_dd(
        self, mapping_of: MappingOf, make_lead: Lead
    ) -> None:
        mapping = mapping_of(
            {"Event__c": {"source": "custom.day", "transform": "date"}}
        )

        mapped = mapping.apply(make_lead(custom={"day": " 2024-02-29 "}))

        assert mapped.fields == {"Event__c": date(2024, 2, 29)}

    def test_takes_a_date_as_it_is(
        self, mapping_of: MappingOf, make_lead: Lead
    ) -> None:
        mapping = mapping_of(
            {"Event__c": {"source": "custom.day", "transform": "date"}}
        )

        mapped = mapping.apply(make_lead(custom={"day": date(2024, 2, 29)}))

        assert mapped.fields == {"Event__c": date(2024, 2, 29)}

    @pytest.mark.parametrize(
        "value",
        ["2023-02-29", "10/03/2024", "20240310", "2024-03-10T05:30:00Z", 20240310],
    )
    def test_leaves_out_anything_else_with_a_warning(
        self, mapping_of: MappingOf, make_lead: Lead, value: Any
    ) -> None:
        mapping = mapping_of(
            {"Event__c": {"source": "custom.day", "transform": "date"}}
        )

        mapped = mapping.apply(make_lead(custom={"day": value}))

        assert mapped.fields == {}
        assert mapped.warnings == ["invalid_date:Event__c"]

    def test_refuses_a_time_without_a_zone(
        self, mapping: CrmMapping, make_lead: Lead
    ) -> None:
        mapped = mapping.apply(make_lead(captured_at=datetime(2024, 3, 10, 5, 30)))

        assert mapped.fields == {}
        assert mapped.warnings == ["naive_datetime:Captured_Date__c"]


class TestDatetime:
    @pytest.fixture
    def mapping(self, mapping_of: MappingOf) -> CrmMapping:
        return mapping_of(
            {"Seen__c": {"source": "custom.seen", "transform": "datetime"}}
        )

    @pytest.mark.parametrize(
        "value",
        [
            datetime(2024, 3, 10, 14, 30, tzinfo=timezone(timedelta(hours=9))),
            "2024-03-10T14:30:00+09:00",
            "2024-03-10T05:30:00Z",
        ],
    )
    def test_gives_the_instant_in_utc(
        self, mapping: CrmMapping, make_lead: Lead, value: Any
    ) -> None:
        mapped = mapping.apply(make_lead(custom={"seen": value}))

        assert mapped.fields == {"Seen__c": datetime(2024, 3, 10, 5, 30, tzinfo=UTC)}
        assert mapped.fields["Seen__c"].tzinfo is UTC

    @pytest.mark.parametrize(
        "value", [datetime(2024, 3, 10, 5, 30), "2024-03-10T05:30:00", "2024-03-10"]
    )
    def test_refuses_a_time_without_a_zone(
        self, mapping: CrmMapping, make_lead: Lead, value: Any
    ) -> None:
        mapped = mapping.apply(make_lead(custom={"seen": value}))

        assert mapped.fields == {}
        assert mapped.warnings == ["naive_datetime:Seen__c"]

    @pytest.mark.parametrize("value", ["yesterday", date(2024, 3, 10), 1710048600])
    def test_leaves_out_what_is_not_a_time(
        self, mapping: CrmMapping, make_lead: Lead, value: Any
    ) -> None:
        mapped = mapping.apply(make_lead(custom={"seen": value}))

        assert mapped.fields == {}
        assert mapped.warnings == ["invalid_datetime:Seen__c"]


class TestPicklist:
    @pytest.fixture
    def rating(self) -> CrmField:
        return CrmField(
            name="Rating",
            label="Rating",
            type="picklist",
            picklist=("Hot", "Warm", "Cold"),
        )

    def test_maps_words_in_any_case(
        self, mapping_of: MappingOf, make_lead: Lead
    ) -> None:
        mapping = mapping_of(
            {
                "LeadSource": {
                    "source": "source",
                    "transform": "picklist",
                    "values": {"Web Form": "Web", "webinar": "Webinar"},
                }
            }
        )

        assert mapping.apply(make_lead(source=" WEB form ")).fields == {
            "LeadSource": "Web"
        }
        assert mapping.apply(make_lead(source="Webinar")).fields == {
            "LeadSource": "Webinar"
        }

    def test_gives_the_default_for_an_unmapped_word(
        self, mapping_of: MappingOf, make_lead: Lead
    ) -> None:
        mapping = mapping_of(
            {
                "LeadSource": {
                    "source": "source",
                    "transform": "picklist",
                    "values": {"web": "Web"},
                    "default": "Other",
                }
            }
        )

        mapped = mapping.apply(make_lead(source="trade show"))

        assert mapped.fields == {"LeadSource": "Other"}
        assert mapped.warnings == []

    def test_passes_through_a_valid_option_in_the_crm_spelling(
        self, mapping_of: MappingOf, make_lead: Lead, rating: CrmField
    ) -> None:
        mapping = mapping_of(
            {"Rating": {"source": "custom.rating", "transform": "picklist"}}
        )

        mapped = mapping.apply(
            make_lead(custom={"rating": "warm"}), crm_fields={"Rating": rating}
        )

        assert mapped.fields == {"Rating": "Warm"}

    def test_leaves_out_an_unknown_word_with_a_warning(
        self, mapping_of: MappingOf, make_lead: Lead, rating: CrmField
    ) -> None:
        mapping = mapping_of(
            {"Rating": {"source": "custom.rating", "transform": "picklist"}}
        )
        lead = make_lead(custom={"rating": "lukewarm"})

        with_options = mapping.apply(lead, crm_fields={"Rating": rating})
        without_options = mapping.apply(make_lead(custom={"rating": "Warm"}))

        assert with_options.fields == {}
        assert with_options.warnings == ["unmapped_picklist:Rating"]
        assert without_options.fields == {}
        assert without_options.warnings == ["unmapped_picklist:Rating"]


class TestConstants:
    @pytest.mark.parametrize(
        ("yaml_value", "value"),
        [
            ("lead", "lead"),
            (7, 7),
            (2.5, 2.5),
            (True, True),
            (date(2024, 1, 1), date(2024, 1, 1)),
            (
                datetime(2024, 1, 1, 9, tzinfo=UTC),
                datetime(2024, 1, 1, 9, tzinfo=UTC),
            ),
        ],
    )
    def test_writes_a_constant_of_any_type_as_given(
        self, mapping_of: MappingOf, make_lead: Lead, yaml_value: Any, value: Any
    ) -> None:
        mapping = mapping_of({"X__c": {"constant": yaml_value}})

        assert mapping.apply(make_lead()).fields == {"X__c": value}

    def test_clears_the_crm_value_only_with_an_empty_constant(
        self, mapping_of: MappingOf, make_lead: Lead
    ) -> None:
        mapping = mapping_of({"Rating": {"constant": ""}})

        assert mapping.apply(make_lead()).fields == {"Rating": ""}


class TestBlanks:
    @pytest.mark.parametrize("value", [None, "", "   ", []])
    def test_a_blank_source_leaves_the_field_out(
        self, mapping_of: MappingOf, make_lead: Lead, value: Any
    ) -> None:
        mapping = mapping_of(
            {
                "Title": {"source": "job_title"},
                "Tags__c": {"source": "custom.tags"},
                "LeadSource": {
                    "source": "source",
                    "transform": "picklist",
                    "default": "Other",
                },
                "Lead_Score__c": {"source": "score", "transform": "number"},
                "Opt__c": {"source": "custom.opt", "transform": "boolean"},
                "Day__c": {"source": "captured_at", "transform": "date"},
                "Seen__c": {"source": "custom.seen", "transform": "datetime"},
            }
        )
        blank = None if value == [] else value
        lead = make_lead(
            job_title=blank,
            source=blank,
            score=None,
            captured_at=None,
            custom={"tags": value, "opt": blank, "seen": blank},
        )

        mapped = mapping.apply(lead)

        assert mapped.fields == {}
        assert mapped.warnings == []

    def test_a_custom_field_the_lead_lacks_leaves_the_field_out(
        self, mapping_of: MappingOf, make_lead: Lead
    ) -> None:
        mapping = mapping_of({"Industry": {"source": "custom.industry"}})

        assert mapping.apply(make_lead(custom={})).fields == {}
        assert mapping.apply(make_lead(custom=None)).fields == {}

    def test_a_fallback_stands_in_for_a_blank(
        self, mapping_of: MappingOf, make_lead: Lead
    ) -> None:
        mapping = mapping_of(
            {"Company": {"source": "company", "fallback": "[not provided]"}}
        )

        assert mapping.apply(make_lead(company="  ")).fields == {
            "Company": "[not provided]"
        }
        assert mapping.apply(make_lead(company="Acme")).fields == {"Company": "Acme"}

    def test_a_fallback_stands_in_for_a_refused_value_which_is_still_reported(
        self, mapping_of: MappingOf, make_lead: Lead
    ) -> None:
        mapping = mapping_of(
            {
                "HasOptedOutOfEmail": {
                    "source": "custom.optout",
                    "transform": "boolean",
                    "fallback": False,
                }
            }
        )

        mapped = mapping.apply(make_lead(custom={"optout": "maybe"}))

        assert mapped.fields == {"HasOptedOutOfEmail": False}
        assert mapped.warnings == ["invalid_boolean:HasOptedOutOfEmail"]


class TestTruncation:
    def test_cuts_at_the_crm_length_and_warns(
        self,
        mapping_of: MappingOf,
        make_lead: Lead,
        salesforce_by_name: dict[str, CrmField],
    ) -> None:
        mapping = mapping_of({"City": {"source": "city", "truncate": True}})

        mapped = mapping.apply(
            make_lead(city="Llanfair" + "x" * 60), crm_fields=salesforce_by_name
        )

        assert mapped.fields == {"City": ("Llanfair" + "x" * 60)[:40]}
        assert mapped.warnings == ["truncated:City"]

    def test_cuts_at_an_explicit_length_without_the_crm_fields(
        self, mapping_of: MappingOf, make_lead: Lead
    ) -> None:
        mapping = mapping_of({"Description": {"source": "notes", "truncate": 10}})

        mapped = mapping.apply(make_lead(notes="Call after the launch"))

        assert mapped.fields == {"Description": "Call after"}
        assert mapped.warnings == ["truncated:Description"]

    def test_leaves_text_within_the_length_alone(
        self,
        mapping_of: MappingOf,
        make_lead: Lead,
        salesforce_by_name: dict[str, CrmField],
    ) -> None:
        mapping = mapping_of({"City": {"source": "city", "truncate": True}})

        mapped = mapping.apply(make_lead(city="x" * 40), crm_fields=salesforce_by_name)

        assert mapped.fields == {"City": "x" * 40}
        assert mapped.warnings == []

    def test_cannot_cut_at_the_crm_length_without_the_crm_fields(
        self, mapping_of: MappingOf, make_lead: Lead
    ) -> None:
        mapping = mapping_of({"City": {"source": "city", "truncate": True}})

        mapped = mapping.apply(make_lead(city="x" * 60))

        assert mapped.fields == {"City": "x" * 60}
        assert mapped.warnings == []

    def test_does_not_cut_without_truncate(
        self,
        mapping_of: MappingOf,
        make_lead: Lead,
        salesforce_by_name: dict[str, CrmField],
    ) -> None:
        mapping = mapping_of({"City": {"source": "city"}})

        mapped = mapping.apply(make_lead(city="x" * 60), crm_fields=salesforce_by_name)

        assert mapped.fields == {"City": "x" * 60}
