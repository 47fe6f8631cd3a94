"""Loading sequences: the shipped file, and errors that say where a file is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from leads.sequences import (
    Enrolment,
    FieldCondition,
    SequenceConfigError,
    Step,
    load_sequences,
)
from leads.store.tables import Lead

SHIPPED = Path(__file__).parents[2] / "config" / "sequences.yaml"


def load_text(tmp_path: Path, text: str):
    path = tmp_path / "sequences.yaml"
    path.write_text(text, encoding="utf-8")
    return load_sequences(path)


class TestTheShippedFile:
    def test_has_a_three_step_welcome_sequence_whose_first_step_goes_at_once(self):
        welcome = load_sequences(SHIPPED)["welcome_sequence"]

        assert [step.id for step in welcome.steps] == [
            "welcome_1",
            "welcome_2",
            "welcome_3",
        ]
        first = welcome.steps[0]
        assert first == Step(
            id="welcome_1",
            template="welcome_1",
            subject=(
                "Welcome{% if lead.first_name %}, {{ lead.first_name }}{% endif %}!"
            ),
            window="anytime",
        )
        assert welcome.window_of(first) is None
        assert welcome.window_of(welcome.steps[1]) is not None
        assert welcome.category == "marketing"

    def test_has_a_follow_up_a_week_after_enrolment_for_promising_leads(self):
        follow_up = load_sequences(SHIPPED)["follow_up"]

        (step,) = follow_up.steps
        assert (step.delay, step.after) == ("7d", "enrolment")
        assert follow_up.enrol is not None and follow_up.enrol.min_score == 40
        assert {"replied", "converted"} <= set(follow_up.stop_when)


def test_steps_keep_their_order(tmp_path):
    sequences = load_text(
        tmp_path,
        """
sequences:
  follow_up:
    steps:
      - {id: follow_up_1, template: follow_up_1, subject: First}
      - {id: follow_up_2, template: follow_up_2, subject: Second}
""",
    )

    assert [s.template for s in sequences["follow_up"].steps] == [
        "follow_up_1",
        "follow_up_2",
    ]


class TestErrors:
    def test_a_missing_field_names_the_sequence_step_and_field(self, tmp_path):
        with pytest.raises(SequenceConfigError) as caught:
            load_text(
                tmp_path,
                """
sequences:
  welcome_sequence:
    steps:
      - {id: welcome_1, template: welcome_1, subject: Hi}
      - {template: welcome_2}
""",
            )

        message = str(caught.value)
        assert "sequences.yaml" in message
        assert "sequence 'welcome_sequence', step 2, field 'subject'" in message
        assert "Field required" in message

    def test_a_misspelt_field_is_refused_not_ignored(self, tmp_path):
        with pytest.raises(SequenceConfigError, match="step 1, field 'subjet'"):
            load_text(
                tmp_path,
                "sequences:\n  welcome_sequence:\n    steps:\n"
                "      - {id: welcome_1, template: welcome_1, subject: Hi,"
                " subjet: Hi}\n",
            )

    def test_a_sequence_without_steps_is_refused(self, tmp_path):
        with pytest.raises(
            SequenceConfigError,
            match="sequence 'welcome_sequence', field 'steps'.*at least one step",
        ):
            load_text(tmp_path, "sequences:\n  welcome_sequence:\n    steps: []\n")

    def test_a_template_name_cannot_leave_the_templates_folder(self, tmp_path):
        with pytest.raises(SequenceConfigError, match="step 1, field 'template'"):
            load_text(
                tmp_path,
                "sequences:\n  welcome_sequence:\n    steps:\n"
                "      - {id: etc_passwd, template: ../../etc/passwd, subject: Hi}\n",
            )

    def test_a_sequence_name_must_be_a_plain_identifier(self, tmp_path):
        with pytest.raises(SequenceConfigError, match="sequence name 'Welcome Mail'"):
            load_text(
                tmp_path,
                "sequences:\n  Welcome Mail:\n    steps:\n"
                "      - {id: welcome_1, template: welcome_1, subject: Hi}\n",
            )

    def test_a_file_without_sequences_is_refused(self, tmp_path):
        with pytest.raises(SequenceConfigError, match="field 'sequences'"):
            load_text(tmp_path, "")

    def test_a_list_at_the_top_is_refused(self, tmp_path):
        with pytest.raises(SequenceConfigError, match="expected a mapping"):
            load_text(tmp_path, "- welcome_sequence\n")

    def test_broken_yaml_is_reported_with_the_file(self, tmp_path):
        with pytest.raises(SequenceConfigError, match="is not valid YAML"):
            load_text(tmp_path, "sequences: [\n")

    def test_a_missing_file_is_reported_with_its_path(self, tmp_path):
        with pytest.raises(SequenceConfigError, match="absent.yaml: cannot be read"):
            load_sequences(tmp_path / "absent.yaml")


class TestStepsAndRules:
    def test_a_step_without_an_id_is_refused_naming_it(self, tmp_path):
        # Defaulting it to the template would make a template change a new
        # step, sent again to every lead that had the old one.
        with pytest.raises(SequenceConfigError, match="step 1, field 'id'"):
            load_text(
                tmp_path,
                "sequences:\n  s:\n    steps:\n"
                "      - {template: welcome_1, subject: Hi}\n",
            )

    def test_two_steps_with_one_id_are_refused(self, tmp_path):
        with pytest.raises(SequenceConfigError, match="id 'welcome_1' of an earlier"):
            load_text(
                tmp_path,
                "sequences:\n  s:\n    steps:\n"
                "      - {id: welcome_1, template: welcome_1, subject: Hi}\n"
                "      - {id: welcome_1, template: welcome_1, subject: Again}\n",
            )

    @pytest.mark.parametrize(
        ("step", "where"),
        [
            ("{id: t, template: t, subject: Hi, delay: soon}", "step 1, field 'delay'"),
            (
                "{id: t, template: t, subject: Hi, after: lunch}",
                "step 1, field 'after'",
            ),
            (
                "{id: t, template: t, subject: Hi, window: {hours: '9-5'}}",
                "step 1, field 'window",
            ),
        ],
    )
    def test_a_bad_delay_or_window_names_its_step(self, tmp_path, step, where):
        with pytest.raises(SequenceConfigError, match=where):
            load_text(tmp_path, f"sequences:\n  s:\n    steps:\n      - {step}\n")

    def test_a_condition_on_an_unknown_field_is_refused(self, tmp_path):
        with pytest.raises(SequenceConfigError, match="'stauts' is not a lead field"):
            load_text(
                tmp_path,
                "sequences:\n  s:\n    stop_when: [{field: stauts, in: [x]}]\n"
                "    steps: [{id: t, template: t, subject: Hi}]\n",
            )

    def test_a_condition_needs_exactly_one_test(self, tmp_path):
        with pytest.raises(SequenceConfigError, match="exactly one of"):
            load_text(
                tmp_path,
                "sequences:\n  s:\n"
                "    stop_when: [{field: score, at_least: 1, below: 9}]\n"
                "    steps: [{id: t, template: t, subject: Hi}]\n",
            )

    def test_enrolment_rules_admit_by_channel_source_and_score(self):
        rule = Enrolment(channels=("api",), sources=("website",), min_score=50)

        def lead(**values):
            return Lead(
                **{"email": "a@example.com", "source": "website", "score": 70} | values
            )

        assert rule.admits(lead(), "api")
        assert not rule.admits(lead(), "import")
        assert not rule.admits(lead(source="fair"), "api")
        assert not rule.admits(lead(score=49), "api")
        assert not rule.admits(lead(score=None), "api")
        assert not rule.admits(lead(email=None), "api")

    def test_a_batch_comes_in_by_the_api_and_a_named_webhook_by_webhook(self):
        by_api = Enrolment(channels=("api",))
        by_webhook = Enrolment(channels=("webhook",))
        lead = Lead(email="a@example.com", source="website")

        assert by_api.admits(lead, "batch")
        assert not by_webhook.admits(lead, "batch")
        assert by_webhook.admits(lead, "webhook:typeform")
        assert not by_api.admits(lead, "webhook:typeform")

    def test_field_conditions_reach_into_json_documents(self):
        condition = FieldCondition.model_validate(
            {"field": "crm_state.lifecycle_stage", "in": ["customer"]}
        )

        assert condition.holds(Lead(crm_state={"lifecycle_stage": "customer"}))
        assert not condition.holds(Lead(crm_state={}))
        assert not condition.holds(Lead(crm_state=None))


class TestTransactionalSequences:
    def test_are_not_stopped_by_a_marketing_opt_out_by_default(self, tmp_path):
        sequences = load_text(
            tmp_path,
            "sequences:\n  receipts:\n    category: transactional\n    steps:\n"
            "      - {id: r1, template: welcome_1, subject: Receipt}\n",
        )

        assert "unsubscribed" not in sequences["receipts"].stop_when
        assert "bounced" in sequences["receipts"].stop_when

    def test_refuse_unsubscribed_as_a_stop_condition(self, tmp_path):
        with pytest.raises(SequenceConfigError, match="cannot stop on `unsubscribed`"):
            load_text(
                tmp_path,
                "sequences:\n  receipts:\n    category: transactional\n"
                "    stop_when: [unsubscribed]\n    steps:\n"
                "      - {id: r1, template: welcome_1, subject: Receipt}\n",
            )


def test_a_sequence_defined_twice_is_refused_not_silently_replaced(tmp_path):
    with pytest.raises(SequenceConfigError, match="found the key 's' twice"):
        load_text(
            tmp_path,
            "sequences:\n"
            "  s:\n    steps: [{id: a, template: welcome_1, subject: One}]\n"
            "  s:\n    steps: [{id: b, template: welcome_2, subject: Two}]\n",
        )
