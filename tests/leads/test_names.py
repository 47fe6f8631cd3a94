"""Person names: cleaned without mangling, control characters refused."""

from __future__ import annotations

import pytest

from leads.names import clean_name


@pytest.mark.parametrize(
    "name",
    [
        "O'Neil",
        "McDonald",
        "van der Berg",
        "DeAndre",
        "Smith-Jones",
        "MCDONALD",
        "o'neil",
        "José",
        "Null",
    ],
)
def test_case_is_kept_as_typed(name):
    assert clean_name(name) == name


def test_inner_runs_of_white_space_collapse_to_one_space():
    assert clean_name("Mary \u00a0  Ann") == "Mary Ann"


@pytest.mark.parametrize("name", ["Ola\r\nBcc: list@attacker.test", "Ola\tBerg"])
def test_control_characters_are_refused_not_cleaned_away(name):
    with pytest.raises(ValueError, match="control characters"):
        clean_name(name)
