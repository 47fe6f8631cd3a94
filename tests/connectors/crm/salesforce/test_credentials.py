"""Each OAuth flow's settings, and logging in with it against the sandbox."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from connectors.crm.errors import CrmAuthError
from connectors.crm.salesforce import SalesforceCredentials
from connectors.sandbox.salesforce import (
    SANDBOX_PASSWORD,
    SANDBOX_REFRESH_TOKEN,
    SANDBOX_SECURITY_TOKEN,
    SANDBOX_USERNAME,
)

TOKEN_URL = "https://example.my.salesforce.com/services/oauth2/token"


class TestValidation:
    @pytest.mark.parametrize(
        ("flow", "given", "missing"),
        [
            ("client_credentials", {"client_id": "id"}, "client_secret"),
            ("password", {"client_id": "id", "client_secret": "s"}, "username"),
            ("jwt_bearer", {"client_id": "id", "username": "u"}, "private_key"),
            ("refresh_token", {"client_id": "id"}, "refresh_token"),
        ],
    )
    def test_names_the_setting_the_chosen_flow_misses(
        self, flow: str, given: dict[str, Any], missing: str
    ) -> None:
        with pytest.raises(ValidationError, match=missing) as caught:
            SalesforceCredentials(flow=flow, token_url=TOKEN_URL, **given)
        assert flow in str(caught.value)

    def test_refuses_plain_http_to_a_real_host(self) -> None:
        with pytest.raises(ValidationError, match="https"):
            SalesforceCredentials(
                flow="client_credentials",
                token_url="http://login.salesforce.com/services/oauth2/token",
                client_id="id",
                client_secret="secret",
            )

    def test_never_shows_secrets(self) -> None:
        credentials = SalesforceCredentials(
            flow="client_credentials",
            token_url=TOKEN_URL,
            client_id="id",
            client_secret="very-secret",
        )
        assert "very-secret" not in repr(credentials)


class TestFlowsAgainstTheSandbox:
    def test_client_credentials_logs_in(self, sandbox: Any) -> None:
        info = sandbox.connector().test_connection()
        assert info.account == sandbox.base_url

    def test_password_flow_appends_the_security_token(self, sandbox: Any) -> None:
        connector = sandbox.connector(
            flow="password",
            username=SANDBOX_USERNAME,
            password=SANDBOX_PASSWORD,
            security_token=SANDBOX_SECURITY_TOKEN,
        )
        assert connector.test_connection().provider == "salesforce"

    def test_refresh_token_flow_logs_in(self, sandbox: Any) -> None:
        connector = sandbox.connector(
            flow="refresh_token",
            client_secret=None,
            refresh_token=SANDBOX_REFRESH_TOKEN,
        )
        assert connector.test_connection().account == sandbox.base_url

    def test_jwt_bearer_flow_signs_an_assertion_the_org_trusts(
        self, sandbox: Any, rsa_key_pair: tuple[str, str]
    ) -> None:
        private, public = rsa_key_pair
        sandbox.http.post(
            "/_sandbox/salesforce/jwt-keys", json={"public_key": public}
        ).raise_for_status()
        connector = sandbox.connector(
            flow="jwt_bearer",
            client_secret=None,
            username=SANDBOX_USERNAME,
            private_key=private,
        )
        assert connector.test_connection().account == sandbox.base_url

    def test_jwt_bearer_flow_reads_the_key_from_a_file(
        self, sandbox: Any, rsa_key_pair: tuple[str, str], tmp_path: Any
    ) -> None:
        private, public = rsa_key_pair
        sandbox.http.post("/_sandbox/salesforce/jwt-keys", json={"public_key": public})
        key_file = tmp_path / "server.key"
        key_file.write_text(private)
        connector = sandbox.connector(
            flow="jwt_bearer",
            client_secret=None,
            username=SANDBOX_USERNAME,
            private_key_file=key_file,
        )
        assert connector.test_connection().account == sandbox.base_url

    def test_jwt_signed_by_an_untrusted_key_is_refused(
        self, sandbox: Any, rsa_key_pair: tuple[str, str]
    ) -> None:
        private, _ = rsa_key_pair
        connector = sandbox.connector(
            flow="jwt_bearer",
            client_secret=None,
            username=SANDBOX_USERNAME,
            private_key=private,
        )
        with pytest.raises(CrmAuthError, match="invalid assertion"):
            connector.test_connection()

    def test_a_wrong_secret_is_an_auth_error_not_a_retry(self, sandbox: Any) -> None:
        connector = sandbox.connector(client_secret="wrong")
        with pytest.raises(CrmAuthError, match="invalid_client"):
            connector.test_connection()
        assert sandbox.requests().get("token") == 1
