"""Loading sequences: the shipped file, and errors that say where a file is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from leads.sequences import SequenceConfigError, Step, load_sequences

SHIPPED = Path(__file__).parents[2] / "config" / "sequences.yaml"


def load_text(tmp_path: Path, text: str):
    path = tmp_path / "sequences.yaml"
    path.write_text(text, encoding="utf-8")
    return load_sequences(path)


def test_the_shipped_file_has_a_one_step_welcome_sequence():
    sequences = load_sequences(SHIPPED)

    (step,) = sequences["welcome_sequence"].steps
    assert step == Step(
        template="welcome_1",
        subject="Welcome{% if lead.first_name %}, {{ lead.first_name }}{% endif %}!",
    )


def test_steps_keep_their_order(tmp_path):
    sequences = load_text(
        tmp_path,
        """
sequences:
  follow_up:
    steps:
      - {template: follow_up_1, subject: First}
      - {template: follow_up_2, subject: Second}
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
      - {template: welcome_1, subject: Hi}
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
                "      - {template: welcome_1, subject: Hi, subjet: Hi}\n",
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
                "      - {template: ../../etc/passwd, subject: Hi}\n",
            )

    def test_a_sequence_name_must_be_a_plain_identifier(self, tmp_path):
        with pytest.raises(SequenceConfigError, match="sequence name 'Welcome Mail'"):
            load_text(
                tmp_path,
                "sequences:\n  Welcome Mail:\n    steps:\n"
                "      - {template: welcome_1, subject: Hi}\n",
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
