"""Deleting a Lead for an erasure through simple-salesforce, against the sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.crm.errors import CrmAuthError


class TestErase:
    def test_deletes_the_lead_then_finds_it_gone(self, sandbox: Any) -> None:
        [lead_id] = sandbox.seed({"LastName": "Noether", "Company": "Erlangen"})
        connector = sandbox.connector()

        assert connector.erase(lead_id) is True
        assert sandbox.leads() == []
        # Salesforce answers 404 ENTITY_IS_DELETED for a Lead in the recycle bin.
        assert connector.erase(lead_id) is False
        assert sandbox.requests()["delete"] == 2

    def test_an_id_salesforce_never_had_is_gone_already(self, sandbox: Any) -> None:
        assert sandbox.connector().erase("00Q000000000999AAA") is False

    def test_the_sandbox_answers_with_salesforce_error_arrays(
        self, sandbox: Any
    ) -> None:
        [lead_id] = sandbox.seed({"LastName": "Germain", "Company": "Paris"})
        sandbox.connector().erase(lead_id)
        token = sandbox.http.post(
            "/services/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": sandbox.credentials().client_id,
                "client_secret": sandbox.credentials().client_secret.get_secret_value(),
            },
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        path = "/services/data/v59.0/sobjects/Lead/"

        deleted = sandbox.http.delete(path + lead_id, headers=headers)
        unknown = sandbox.http.delete(path + "00Q000000000999AAA", headers=headers)

        assert deleted.status_code == 404
        assert deleted.json()[0]["errorCode"] == "ENTITY_IS_DELETED"
        assert unknown.status_code == 404
        assert unknown.json()[0]["errorCode"] == "NOT_FOUND"

    def test_a_refusal_other_than_not_found_is_raised(self, sandbox: Any) -> None:
        [lead_id] = sandbox.seed({"LastName": "Hopper", "Company": "Navy"})
        refusal = [{"message": "no", "errorCode": "INSUFFICIENT_ACCESS"}]
        sandbox.arm(method="DELETE", path="/sobjects/Lead/", status=403, body=refusal)

        with pytest.raises(CrmAuthError):
            sandbox.connector().erase(lead_id)
