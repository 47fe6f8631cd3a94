"""HubSpot's GDPR delete through hubspot-api-client, against the sandbox."""

from __future__ import annotations

import pytest

from connectors.crm.errors import CrmUnavailable


class TestErase:
    def test_deletes_the_contact_by_id_then_finds_it_gone(self, sandbox, sleep):
        [contact_id] = sandbox.seed(
            contacts=[{"properties": {"email": "mary@example.com"}}]
        )["ids"]
        connector = sandbox.connector(sleep=sleep)

        assert connector.erase(str(contact_id)) is True
        assert sandbox.contacts() == {}
        assert connector.erase(str(contact_id)) is False
        assert sandbox.bodies("POST /crm/v3/objects/contacts/gdpr-delete") == [
            {"objectId": str(contact_id)},
            {"objectId": str(contact_id)},
        ]

    def test_hubspot_down_is_retried_then_raised_as_may_pass(self, sandbox, sleep):
        sandbox.arm(path="/gdpr-delete", status=503, times=20)

        with pytest.raises(CrmUnavailable) as raised:
            sandbox.connector(sleep=sleep).erase("901")

        assert raised.value.retryable is True
        assert sleep.waits, "the connector retries before giving up"
