"""Loading mapping files: the shape they take and every problem they can have."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from connectors.crm.errors import CrmConfigError
from connectors.crm.mapping import CrmMapping, MappingFileError, load_mapping


def _problems(write_file: Callable[[str], Path], fields: str) -> str:
    path = write_file(f"provider: salesforce\nfields:\n{fields}")
    with pytest.raises(MappingFileError) as caught:
        load_mapping(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message


class TestAValidFile:
    def test_reads_sources_constants_transforms_and_policies(
        self, write_file: Callable[[str], Path]
    ) -> None:
        mapping = load_mapping(
            write_file(
                "provider: hubspot\n"
                "fields:\n"
                "  firstname: {source: first_name}\n"
                "  industry: {source: custom.industry, policy: if_empty}\n"
                "  lifecyclestage: {constant: lead, policy: never_overwrite}\n"
                "  lead_score: {source: score, transform: number}\n"
            )
        )

        assert mapping.provider == "hubspot"
        assert list(mapping.fields) == [
            "firstname",
            "industry",
            "lifecyclestage",
            "lead_score",
        ]
        assert mapping.fields["firstname"].transform == "text"
        assert mapping.fields["firstname"].policy == "always"
        assert mapping.fields["lifecyclestage"].constant == "lead"
        assert mapping.fields["lead_score"].transform == "number"

    def test_says_which_fields_need_the_crm_record_read_first(
        self, mapping_of: Callable[..., CrmMapping]
    ) -> None:
        mapping = mapping_of(
            {
                "FirstName": {"source": "first_name"},
                "Rating": {"constant": "Warm", "policy": "if_empty"},
                "Status": {"constant": "Open", "policy": "never_overwrite"},
            }
        )

        assert mapping.needs_current_record
        assert mapping.fields_to_read == ("Rating", "Status")

    def test_needs_no_read_when_every_policy_is_always(
        self, mapping_of: Callable[..., CrmMapping]
    ) -> None:
        mapping = mapping_of({"FirstName": {"source": "first_name"}})

        assert not mapping.needs_current_record
        assert mapping.fields_to_read == ()

    def test_accepts_quoted_yes_and_no_as_picklist_words(
        self, write_file: Callable[[str], Path]
    ) -> None:
        mapping = load_mapping(
            write_file(
                "provider: salesforce\n"
                "fields:\n"
                "  Rating: {source: custom.hot, transform: picklist,\n"
                "           values: {'yes': Hot, 'no': Cold, 1: Warm}}\n"
            )
        )

        assert mapping.fields["Rating"].values == {
            "yes": "Hot",
            "no": "Cold",
            "1": "Warm",
        }


class TestFileErrors:
    def test_is_a_value_error_and_a_crm_config_error(
        self, write_file: Callable[[str], Path]
    ) -> None:
        with pytest.raises(MappingFileError) as caught:
            load_mapping(write_file("provider: salesforce\nfields: {}\n"))

        assert isinstance(caught.value, ValueError)
        assert isinstance(caught.value, CrmConfigError)
        assert "fields: map at least one CRM field" in str(caught.value)

    def test_names_a_file_that_cannot_be_read(self, tmp_path: Path) -> None:
        missing = tmp_path / "absent.yaml"

        with pytest.raises(MappingFileError, match="absent.yaml: cannot be read"):
            load_mapping(missing)

    def test_names_a_file_that_is_not_yaml(
        self, write_file: Callable[[str], Path]
    ) -> None:
        with pytest.raises(MappingFileError, match="is not valid YAML"):
            load_mapping(write_file("fields: [unclosed\n"))

    def test_expects_a_mapping_at_the_top(
        self, write_file: Callable[[str], Path]
    ) -> None:
        with pytest.raises(MappingFileError, match="expected a mapping with"):
            load_mapping(write_file("- firstname\n"))

    def test_names_an_unknown_provider(self, write_file: Callable[[str], Path]) -> None:
        with pytest.raises(MappingFileError, match=r"provider: .*'hubspot'"):
            load_mapping(write_file("provider: pipedrive\nfields: {x: {source: id}}\n"))

    def test_lists_every_problem_of_the_file_at_once(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(
            write_file,
            "  FirstName: {source: frist_name}\n"
            "  Rating: {source: score, transform: nmber}\n"
            "  Status: {constant: Open, policy: sometimes}\n",
        )

        assert "fields.FirstName: unknown lead field 'frist_name'" in message
        assert "fields.Rating.transform:" in message
        assert "fields.Status.policy:" in message


class TestFieldErrors:
    def test_names_an_unknown_lead_field_and_the_closest_ones(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(write_file, "  FirstName: {source: frist_name}\n")

        assert (
            "fields.FirstName: unknown lead field 'frist_name' (did you mean first_name"
        ) in message

    def test_asks_for_the_name_of_a_custom_field(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(write_file, "  Industry: {source: custom.}\n")

        assert "fields.Industry: name the custom field: custom.<name>" in message

    def test_names_an_unknown_transform_and_the_known_ones(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(
            write_file, "  Lead_Score__c: {source: score, transform: int}\n"
        )

        assert "fields.Lead_Score__c.transform: Input should be 'text'" in message
        assert "'picklist'" in message

    def test_names_an_unknown_policy(self, write_file: Callable[[str], Path]) -> None:
        message = _problems(write_file, "  Title: {source: job_title, policy: once}\n")

        assert "fields.Title.policy: Input should be 'always'" in message

    def test_refuses_both_source_and_constant(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(write_file, "  Title: {source: job_title, constant: CEO}\n")

        assert "fields.Title: give `source` or `constant`, not both" in message

    def test_refuses_neither_source_nor_constant(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(write_file, "  Title: {policy: if_empty}\n")

        assert "fields.Title: give `source`" in message

    def test_refuses_a_picklist_map_on_another_transform(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(
            write_file, "  LeadSource: {source: source, values: {web: Web}}\n"
        )

        assert (
            "fields.LeadSource: `values` is a picklist map and needs "
            "`transform: picklist` (the transform is text)"
        ) in message

    def test_refuses_a_picklist_default_on_another_transform(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(
            write_file, "  LeadSource: {source: source, transform: text, default: X}\n"
        )

        assert "fields.LeadSource: `default` is the picklist option" in message

    def test_refuses_transform_and_fallback_on_a_constant(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(
            write_file,
            "  Rating: {constant: Hot, transform: picklist, fallback: Cold}\n",
        )

        assert (
            "fields.Rating: `transform`, `fallback` apply to a `source` (a constant "
            "is written as given)"
        ) in message

    def test_refuses_a_null_constant(self, write_file: Callable[[str], Path]) -> None:
        message = _problems(write_file, "  Rating: {constant: null}\n")

        assert "fields.Rating: `constant: null` writes nothing" in message

    def test_refuses_a_constant_that_is_a_list(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(write_file, "  Rating: {constant: [Hot]}\n")

        assert "fields.Rating: `constant` must be text, a number" in message

    def test_refuses_a_constant_time_without_a_zone(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(write_file, "  Seen__c: {constant: 2024-03-10 09:00:00}\n")

        assert (
            "fields.Seen__c: `constant` 2024-03-10T09:00:00 has no time zone" in message
        )

    def test_refuses_truncate_on_a_transform_other_than_text(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(
            write_file,
            "  Lead_Score__c: {source: score, transform: number, truncate: 5}\n",
        )

        assert "fields.Lead_Score__c: `truncate` cuts text" in message

    @pytest.mark.parametrize("value", ["0", "-3", "long", "2.5"])
    def test_refuses_a_truncate_that_is_not_a_length(
        self, write_file: Callable[[str], Path], value: str
    ) -> None:
        message = _problems(
            write_file, f"  Title: {{source: job_title, truncate: {value}}}\n"
        )

        assert "fields.Title.truncate: expected true" in message

    def test_refuses_a_blank_fallback(self, write_file: Callable[[str], Path]) -> None:
        message = _problems(write_file, "  Company: {source: company, fallback: ' '}\n")

        assert "fields.Company: a blank fallback would clear" in message

    def test_refuses_an_unquoted_yes_as_a_picklist_word(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(
            write_file,
            "  Rating: {source: custom.hot, transform: picklist, values: {yes: Hot}}\n",
        )

        assert "fields.Rating.values: the word True was read by YAML" in message

    def test_refuses_a_word_mapped_twice_in_different_cases(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(
            write_file,
            "  LeadSource: {source: source, transform: picklist,\n"
            "               values: {Web: Web, web: Other}}\n",
        )

        assert "fields.LeadSource.values: 'web' appear more than once" in message

    def test_names_an_unknown_key_of_a_field(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(write_file, "  Title: {source: job_title, trunc: 5}\n")

        assert "fields.Title: unknown key 'trunc' (a field takes source" in message

    def test_explains_a_field_written_without_a_rule(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(write_file, "  Title: job_title\n")

        assert (
            "fields.Title: expected a mapping such as {source: first_name}" in message
        )

    def test_refuses_a_label_instead_of_a_field_name(
        self, write_file: Callable[[str], Path]
    ) -> None:
        message = _problems(write_file, "  Job Title: {source: job_title}\n")

        assert "'Job Title' is not a CRM field name" in message


class TestIfTrue:
    def test_goes_by_the_lead_alone_so_needs_no_read(
        self, mapping_of: Callable[..., CrmMapping]
    ) -> None:
        mapping = mapping_of(
            {
                "HasOptedOutOfEmail": {
                    "source": "email_opt_out",
                    "transform": "boolean",
                    "policy": "if_true",
                }
            }
        )

        assert mapping.fields["HasOptedOutOfEmail"].policy == "if_true"
        assert not mapping.needs_current_record
        assert mapping.fields_to_read == ()

    def test_needs_a_boolean_source(self, write_file: Callable[[str], Path]) -> None:
        message = _problems(
            write_file,
            "  HasOptedOutOfEmail: {source: email_opt_out, policy: if_true}\n",
        )

        assert (
            "fields.HasOptedOutOfEmail: `policy: if_true` writes a lead's boolean "
            "only when it is true, so it needs a `source` with `transform: boolean`"
        ) in message

    def test_refuses_a_constant(self, write_file: Callable[[str], Path]) -> None:
        message = _problems(
            write_file, "  HasOptedOutOfEmail: {constant: true, policy: if_true}\n"
        )

        assert "`policy: if_true` writes a lead's boolean" in message


class TestOptOut:
    def test_a_hubspot_mapping_without_it_unsubscribes_by_the_defaults(
        self, mapping_of: Callable[..., CrmMapping]
    ) -> None:
        mapping = mapping_of({"firstname": {"source": "first_name"}}, "hubspot")

        assert mapping.opt_out is None
        assert mapping.unsubscribes is not None
        assert mapping.unsubscribes.source == "email_opt_out"
        assert mapping.unsubscribes.subscription_id is None

    def test_a_salesforce_mapping_has_no_unsubscribes(
        self, mapping_of: Callable[..., CrmMapping]
    ) -> None:
        assert mapping_of({"FirstName": {"source": "first_name"}}).unsubscribes is None

    def test_reads_the_subscription_type_and_the_legal_basis(
        self, write_file: Callable[[str], Path]
    ) -> None:
        mapping = load_mapping(
            write_file(
                "provider: hubspot\n"
                "fields: {firstname: {source: first_name}}\n"
                "opt_out:\n"
                "  source: custom.unsubscribed\n"
                "  subscription_id: 289137114\n"
                "  legal_basis: LEGITIMATE_INTEREST_CLIENT\n"
                "  legal_basis_explanation: The person asked us to stop.\n"
            )
        )

        rule = mapping.unsubscribes
        assert rule is mapping.opt_out
        assert rule is not None
        # Unquoted in YAML the id is a number; HubSpot's ids are text.
        assert rule.subscription_id == "289137114"
        assert rule.legal_basis == "LEGITIMATE_INTEREST_CLIENT"
        assert rule.applies_to({"custom": {"unsubscribed": "yes"}})
        assert not rule.applies_to({"custom": {"unsubscribed": "no"}})
        assert not rule.applies_to({"custom": {}})

    @pytest.mark.parametrize(
        ("value", "opted_out"),
        [(True, True), (False, False), (None, False), ("true", True)],
    )
    def test_applies_to_a_lead_whose_source_reads_true(
        self,
        mapping_of: Callable[..., CrmMapping],
        make_lead: Callable[..., dict],
        value: object,
        opted_out: bool,
    ) -> None:
        mapping = mapping_of({"firstname": {"source": "first_name"}}, "hubspot")
        assert mapping.unsubscribes is not None

        lead = make_lead(email_opt_out=value)

        assert mapping.unsubscribes.applies_to(lead) is opted_out

    def test_is_refused_in_a_salesforce_mapping_naming_the_field_instead(
        self, write_file: Callable[[str], Path]
    ) -> None:
        path = write_file(
            "provider: salesforce\n"
            "fields: {LastName: {source: last_name}}\n"
            "opt_out: {subscription_id: '1001'}\n"
        )

        with pytest.raises(MappingFileError) as caught:
            load_mapping(path)

        assert "Salesforce keeps an opt-out in the Lead field HasOptedOutOfEmail" in (
            str(caught.value)
        )

    def test_names_an_unknown_source(self, write_file: Callable[[str], Path]) -> None:
        path = write_file(
            "provider: hubspot\n"
            "fields: {firstname: {source: first_name}}\n"
            "opt_out: {source: email_optout}\n"
        )

        with pytest.raises(MappingFileError) as caught:
            load_mapping(path)

        assert "opt_out.source: unknown lead field 'email_optout'" in str(caught.value)
        assert "did you mean email_opt_out" in str(caught.value)

    @pytest.mark.parametrize(
        "given",
        [
            "legal_basis: NON_GDPR",
            "legal_basis_explanation: Asked us to stop.",
        ],
    )
    def test_wants_the_legal_basis_and_its_explanation_together(
        self, write_file: Callable[[str], Path], given: str
    ) -> None:
        path = write_file(
            "provider: hubspot\n"
            "fields: {firstname: {source: first_name}}\n"
            f"opt_out: {{{given}}}\n"
        )

        with pytest.raises(MappingFileError) as caught:
            load_mapping(path)

        assert "give `legal_basis` and `legal_basis_explanation` together" in str(
            caught.value
        )

    def test_names_an_unknown_legal_basis(
        self, write_file: Callable[[str], Path]
    ) -> None:
        path = write_file(
            "provider: hubspot\n"
            "fields: {firstname: {source: first_name}}\n"
            "opt_out: {legal_basis: CONSENT, legal_basis_explanation: Why.}\n"
        )

        with pytest.raises(MappingFileError) as caught:
            load_mapping(path)

        assert "opt_out.legal_basis: Input should be 'LEGITIMATE_INTEREST_PQL'" in (
            str(caught.value)
        )
