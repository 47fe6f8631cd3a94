"""The sandbox's contact search: filters, sorting, paging and HubSpot's caps."""

from __future__ import annotations

import json
import time

import pytest
from hubspot.crm.contacts import PublicObjectSearchRequest
from hubspot.crm.contacts.exceptions import ApiException

JAN = "2024-01-01T00:00:00Z"
JAN_MS = 1704067200000
FEB_MS = 1706745600000


def rule(name: str, operator: str, value: str | None = None, **more) -> dict:
    """One search filter in the request's JSON shape."""
    spec = {"propertyName": name, "operator": operator} | more
    return spec if value is None else spec | {"value": value}


def search(sandbox, *filters: dict, **request) -> object:
    groups = [{"filters": list(filters)}] if filters else None
    return sandbox.client().crm.contacts.search_api.do_search(
        PublicObjectSearchRequest(filter_groups=groups, **request)
    )


@pytest.fixture
def people(sandbox):
    sandbox.seed(
        contacts=[
            {
                "id": 1,
                "properties": {"email": "ann@example.com", "lead_score": "10"},
                "createdate": "2024-01-05T00:00:00Z",
            },
            {
                "id": 2,
                "properties": {"email": "bob@example.com", "lead_score": "50"},
                "createdate": "2024-01-20T00:00:00Z",
            },
            {
                "id": 3,
                "properties": {"email": "cy@example.com", "company": "Acme"},
                "createdate": "2024-02-10T00:00:00Z",
            },
        ]
    )
    return sandbox


def ids(answer) -> list[str]:
    return [r.id for r in answer.results]


class TestFilters:
    @pytest.mark.parametrize(
        ("spec", "expected"),
        [
            (rule("email", "EQ", "BOB@example.com"), ["2"]),
            (rule("email", "NEQ", "bob@example.com"), ["1", "3"]),
            (rule("lead_score", "GT", "10"), ["2"]),
            (rule("lead_score", "GTE", "10"), ["1", "2"]),
            (rule("createdate", "LT", str(FEB_MS)), ["1", "2"]),
            (rule("hs_object_id", "LTE", "2"), ["1", "2"]),
            (
                rule("email", "IN", values=["ann@example.com", "cy@example.com"]),
                ["1", "3"],
            ),
            (rule("company", "HAS_PROPERTY"), ["3"]),
            (rule("company", "NOT_HAS_PROPERTY"), ["1", "2"]),
        ],
    )
    def test_each_operator_selects_the_matching_contacts(self, people, spec, expected):
        assert ids(search(people, spec)) == expected

    def test_groups_are_ored_and_filters_within_a_group_anded(self, people):
        answer = people.client().crm.contacts.search_api.do_search(
            PublicObjectSearchRequest(
                filter_groups=[
                    {
                        "filters": [
                            rule("createdate", "GTE", JAN),
                            rule("lead_score", "GT", "20"),
                        ]
                    },
                    {"filters": [rule("company", "HAS_PROPERTY")]},
                ]
            )
        )

        assert ids(answer) == ["2", "3"]

    def test_more_than_five_groups_are_refused(self, people):
        groups = [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}]

        with pytest.raises(ApiException) as caught:
            people.client().crm.contacts.search_api.do_search(
                PublicObjectSearchRequest(filter_groups=groups * 6)
            )

        assert caught.value.status == 400


class TestSortingAndPaging:
    def test_sorts_descending_and_reports_the_real_total(self, people):
        answer = search(
            people,
            sorts=[{"propertyName": "createdate", "direction": "DESCENDING"}],
            limit=2,
        )

        assert answer.total == 3
        assert ids(answer) == ["3", "2"]
        assert answer.paging.next.after == "2"

    def test_a_second_sorting_rule_is_refused(self, people):
        with pytest.raises(ApiException) as caught:
            search(people, sorts=["createdate", "hs_object_id"])

        assert caught.value.status == 400

    def test_limit_above_200_is_refused(self, people):
        with pytest.raises(ApiException) as caught:
            search(people, limit=201)

        assert caught.value.status == 400

    def test_after_at_10000_is_refused_as_hubspot_does(self, sandbox):
        sandbox.seed(
            ranges=[{"count": 10_100, "start": JAN, "end": "2024-02-01T00:00:00Z"}]
        )

        last = search(sandbox, limit=200, after="9800")
        with pytest.raises(ApiException) as caught:
            search(sandbox, limit=200, after=last.paging.next.after)

        assert last.total == 10_100
        assert last.paging.next.after == "10000"
        assert caught.value.status == 400
        assert "10000" in json.loads(caught.value.body)["message"]
        assert sandbox.received()["search_afters"] == [9800, 10000]


class TestScale:
    def test_pages_a_window_of_25000_contacts_quickly(self, sandbox):
        sandbox.seed(
            ranges=[{"count": 25_000, "start": JAN, "end": "2024-07-01T00:00:00Z"}]
        )
        sandbox.limits(search_per_second=None)
        window = [
            rule("lastmodifieddate", "GTE", str(JAN_MS)),
            rule("lastmodifieddate", "LT", str(FEB_MS)),
        ]

        started = time.monotonic()
        first = search(sandbox, *window, limit=200, sorts=["lastmodifieddate"])
        for after in range(200, 2000, 200):
            search(
                sandbox,
                *window,
                limit=200,
                after=str(after),
                sorts=["lastmodifieddate"],
            )
        elapsed = time.monotonic() - started

        assert 4_000 < first.total < 4_300
        assert elapsed < 5
