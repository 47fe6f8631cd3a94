"""Reading contacts back: by e-mail, by modification window, and the field list."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.crm.errors import CrmRequestError
from connectors.crm.protocol import CrmRecord

SEARCH = "POST /crm/v3/objects/contacts/search"


class TestRead:
    def test_reads_contacts_by_email_in_batches_of_100(self, sandbox):
        sandbox.seed(
            contacts=[
                {"properties": {"email": f"p{i}@example.com", "city": f"C{i}"}}
                for i in range(150)
            ]
        )
        keys = [f"P{i}@example.com" for i in range(150)] + ["nobody@example.com"]

        found = sandbox.connector().read(keys, ["city", "company"])

        assert len(found) == 150
        assert found["p7@example.com"].fields == {"city": "C7"}
        assert found["p7@example.com"].updated_at.tzinfo is not None
        assert sandbox.count("POST /crm/v3/objects/contacts/batch/read") == 2


class TestHS08ChangedWindow:
    def test_a_window_of_24000_contacts_yields_each_id_once_within_the_cap(
        self, sandbox, case, sleep, budget
    ):
        given = case("HS-08")["input"]
        expected = case("HS-08")["expected"]
        months = sorted(given["totals_by_month"].items())
        ends = [f"{m}-01T00:00:00Z" for m, _ in months[1:]] + ["2024-07-01T00:00:00Z"]
        sandbox.seed(
            ranges=[
                {"count": count, "start": f"{month}-01T00:00:00Z", "end": end}
                for (month, count), end in zip(months, ends, strict=True)
            ]
        )
        # The connector paces searches itself (recorded, not slept, here).
        sandbox.limits(search_per_second=None)
        connector = sandbox.connector(sleep=sleep, budget=budget)

        snapshots = list(
            connector.changed(
                datetime(2024, 1, 1, tzinfo=UTC),
                datetime(2024, 7, 1, tzinfo=UTC),
                ["email"],
            )
        )

        ids = [s.crm_id for s in snapshots]
        assert len(ids) == len(set(ids)) == expected["unique_ids_collected"]
        afters = sandbox.received()["search_afters"]
        assert max(afters) < expected["max_after_sent_must_be_below"]
        assert sandbox.count(SEARCH) == budget.acquired
        assert len(sleep.waits) == sandbox.count(SEARCH) - 1
        assert all(0 < wait <= 0.25 for wait in sleep.waits)

    def test_the_window_is_half_open(self, sandbox):
        sandbox.seed(
            contacts=[
                {"properties": {"email": email}, "createdate": created}
                for email, created in [
                    ("edge@example.com", "2024-02-01T00:00:00Z"),
                    ("in@example.com", "2024-01-01T00:00:00Z"),
                ]
            ]
        )

        found = list(
            sandbox.connector().changed(
                datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC), []
            )
        )

        assert [s.key for s in found] == ["in@example.com"]

    def test_a_naive_window_is_refused(self, sandbox):
        with pytest.raises(CrmRequestError):
            list(
                sandbox.connector().changed(
                    datetime(2024, 1, 1), datetime(2024, 2, 1), []
                )
            )


class TestFieldsAndConnection:
    def test_lists_fields_with_types_options_and_writability(self, sandbox):
        fields = {f.name: f for f in sandbox.connector().list_fields()}

        assert fields["email"].unique
        assert fields["lifecyclestage"].picklist[0] == "subscriber"
        assert fields["lead_captured_date"].type == "date"
        assert not fields["hs_email_optout"].updateable
        assert not fields["createdate"].createable
        assert fields["firstname"].updateable and fields["firstname"].picklist is None

    def test_test_connection_makes_one_cheap_call(self, sandbox):
        info = sandbox.connector().test_connection()

        assert (info.provider, info.account) == ("hubspot", sandbox.base_url)
        assert sandbox.received()["counts"] == {"GET /crm/v3/objects/contacts": 1}

    def test_the_connector_satisfies_the_protocol_attributes(self, sandbox):
        connector = sandbox.connector()

        assert (connector.provider, connector.key_field, connector.key_source) == (
            "hubspot",
            "email",
            "email",
        )
        assert connector.batch_size == 100
        connector.upsert([CrmRecord("l1", "a@example.com", {})])
        connector.close()
