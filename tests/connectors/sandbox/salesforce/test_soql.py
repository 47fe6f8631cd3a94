"""The sandbox's SOQL engine: parsing, escapes, filters, order and limits."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.sandbox.salesforce.soql import SoqlError, parse, run

LEADS: list[dict[str, Any]] = [
    {
        "Id": "00Q1",
        "LastName": "O'Shea",
        "Email": "Dan.O'Shea@example.com",
        "Company": 'Dan\'s "Best" Bikes \\ Co',
        "Lead_Score__c": 10.0,
        "LastModifiedDate": "2024-01-01T10:00:00.000+0000",
    },
    {
        "Id": "00Q2",
        "LastName": "Abara",
        "Email": "k.abara@example.com",
        "Company": "100%_Growth",
        "Lead_Score__c": 30.0,
        "LastModifiedDate": "2024-01-02T10:00:00.000+0000",
    },
    {
        "Id": "00Q3",
        "LastName": "Brandt",
        "Email": None,
        "Company": "1000 Growth",
        "Lead_Score__c": None,
        "LastModifiedDate": "2024-01-03T10:00:00.000+0000",
    },
]


def ids(query: str) -> list[str]:
    return [row["Id"] for row in run(parse(query), LEADS)]


class TestStrings:
    def test_backslash_escapes_find_the_value(self) -> None:
        assert ids("SELECT Id FROM Lead WHERE LastName = 'O\\'Shea'") == ["00Q1"]
        assert ids(
            "SELECT Id FROM Lead WHERE Company = 'Dan\\'s \\\"Best\\\" Bikes \\\\ Co'"
        ) == ["00Q1"]

    def test_a_doubled_quote_is_a_malformed_query(self) -> None:
        with pytest.raises(SoqlError) as caught:
            parse("SELECT Id FROM Lead WHERE LastName = 'O''Shea'")
        assert caught.value.code == "MALFORMED_QUERY"

    def test_like_escapes_percent_and_underscore(self) -> None:
        assert ids("SELECT Id FROM Lead WHERE Company LIKE '100\\%\\_G%'") == ["00Q2"]
        assert ids("SELECT Id FROM Lead WHERE Company LIKE '100%G%'") == [
            "00Q2",
            "00Q3",
        ]

    def test_like_escapes_outside_like_are_malformed(self) -> None:
        with pytest.raises(SoqlError, match="Illegal"):
            parse("SELECT Id FROM Lead WHERE Company = '100\\%'")

    def test_emails_compare_case_blind(self) -> None:
        assert ids("SELECT Id FROM Lead WHERE Email = 'dan.o\\'shea@EXAMPLE.com'") == [
            "00Q1"
        ]
        assert ids(
            "SELECT Id FROM Lead WHERE Email IN ('K.ABARA@example.com', 'x@y.z')"
        ) == ["00Q2"]


class TestFilters:
    def test_datetime_literals_are_unquoted_and_zoned(self) -> None:
        query = (
            "SELECT Id FROM Lead WHERE LastModifiedDate >= 2024-01-02T00:00:00Z "
            "AND LastModifiedDate < 2024-01-03T10:00:00+00:00"
        )
        assert ids(query) == ["00Q2"]

    def test_a_quoted_or_zoneless_datetime_is_refused(self) -> None:
        with pytest.raises(SoqlError):
            parse("SELECT Id FROM Lead WHERE LastModifiedDate > '2024-01-01T00:00:00Z'")
        with pytest.raises(SoqlError):
            parse("SELECT Id FROM Lead WHERE LastModifiedDate > 2024-01-01T00:00:00")

    def test_and_or_not_and_parentheses(self) -> None:
        query = (
            "SELECT Id FROM Lead WHERE (Lead_Score__c > 20 OR Email = null) "
            "AND NOT LastName = 'Brandt'"
        )
        assert ids(query) == ["00Q2"]
        assert ids(
            "SELECT Id FROM Lead WHERE Email != null AND Id NOT IN ('00Q1')"
        ) == ["00Q2"]

    def test_unknown_fields_and_objects_are_named(self) -> None:
        with pytest.raises(SoqlError) as field:
            parse("SELECT Nickname FROM Lead")
        with pytest.raises(SoqlError) as sobject:
            parse("SELECT Id FROM Opportunity")
        assert (field.value.code, sobject.value.code) == (
            "INVALID_FIELD",
            "INVALID_TYPE",
        )


class TestOrder:
    def test_orders_with_nulls_first_ascending_and_last_descending(self) -> None:
        assert ids("SELECT Id FROM Lead ORDER BY Lead_Score__c") == [
            "00Q3",
            "00Q1",
            "00Q2",
        ]
        assert ids("SELECT Id FROM Lead ORDER BY Lead_Score__c DESC") == [
            "00Q2",
            "00Q1",
            "00Q3",
        ]

    def test_limit_and_offset(self) -> None:
        assert ids(
            "SELECT Id FROM Lead ORDER BY LastModifiedDate LIMIT 1 OFFSET 1"
        ) == ["00Q2"]
