"""Choosing a lead file's delimiter from its start."""

from __future__ import annotations

import pytest

from leads.imports.delimiter import sniff_delimiter


@pytest.mark.parametrize(
    ("sample", "delimiter"),
    [
        ("email,name\r\na@example.com,Ann\r\n", ","),
        ("email;street;amount\na@example.com;Rue X, 1;1.234,50\n", ";"),
        ("email\tamount\na@example.com\t1,5\n", "\t"),
        ("email|name\na@example.com|Lee, Ann\n", "|"),
        ('email,notes\na@example.com,"x; y; z"\n', ","),
        ("email;name\n", ";"),
    ],
)
def test_picks_the_delimiter_that_splits_header_and_records_alike(sample, delimiter):
    assert sniff_delimiter(sample, complete=True) == delimiter


def test_a_file_of_one_column_gets_a_delimiter_that_leaves_its_values_whole():
    sample = "name\nLee, Ann\nKim, Bo\n"

    delimiter = sniff_delimiter(sample, complete=True)

    assert delimiter not in sample


def test_a_plain_one_column_file_is_comma_separated():
    assert sniff_delimiter("email\na@example.com\n", complete=True) == ","


def test_a_few_ragged_records_do_not_change_the_delimiter():
    rows = "".join(f"a{n}@example.com,Ann,Oslo\n" for n in range(20))
    sample = "email,name,city\n" + rows + "b@example.com,Bo,Main St, 4,Oslo\n"

    assert sniff_delimiter(sample, complete=True) == ","
