"""Logging in to Salesforce: each OAuth flow's settings, and the token request."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import jwt
import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors.crm.errors import CrmAuthError, CrmConfigError, CrmUnavailable
from connectors.crm.urls import host_of, is_loopback

Flow = Literal["client_credentials", "jwt_bearer", "refresh_token", "password"]

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Salesforce accepts a JWT assertion for at most three minutes after `exp` is
# set (https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm).
JWT_LIFETIME_SECONDS = 180

# The settings each flow cannot do without; validation names the missing ones.
REQUIRED_BY_FLOW: dict[str, tuple[str, ...]] = {
    "client_credentials": ("client_id", "client_secret"),
    "password": ("client_id", "client_secret", "username", "password"),
    "jwt_bearer": ("client_id", "username", "private_key"),
    "refresh_token": ("client_id", "refresh_token"),
}


class SalesforceCredentials(BaseModel):
    """A Salesforce org and connected app, and the OAuth flow to log in with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flow: Flow = Field(
        description=(
            "OAuth flow: `client_credentials` or `jwt_bearer` for servers; "
            "`password` is being retired by Salesforce."
        )
    )
    token_url: str = Field(
        description=(
            "Token endpoint: `https://<My Domain>.my.salesforce.com/services/oauth2/"
            "token`, `https://login.salesforce.com/services/oauth2/token`, or the "
            "sandbox's. Plain HTTP only to 127.0.0.1/localhost."
        )
    )
    client_id: str | None = Field(None, description="Connected app consumer key.")
    client_secret: SecretStr | None = Field(
        None, description="Connected app consumer secret."
    )
    username: str | None = Field(
        None, description="Salesforce user (password and JWT bearer flows)."
    )
    password: SecretStr | None = Field(None, description="The user's password.")
    security_token: SecretStr | None = Field(
        None,
        description="Appended to the password, unless the org trusts our IP range.",
    )
    private_key: SecretStr | None = Field(
        None, description="RSA private key (PEM) the JWT assertion is signed with."
    )
    private_key_file: Path | None = Field(
        None, description="File holding the PEM private key, instead of the key."
    )
    audience: str = Field(
        "https://login.salesforce.com",
        description=(
            "JWT `aud`: `https://login.salesforce.com`, `https://test.salesforce.com` "
            "for sandboxes, or the My Domain URL."
        ),
    )
    refresh_token: SecretStr | None = Field(
        None, description="Refresh token issued to the connected app."
    )
    api_version: str = Field(
        "59.0", pattern=r"^\d{2,3}\.\d$", description="REST API version."
    )
    external_id_field: str | None = Field(
        None,
        pattern=r"^[A-Za-z][A-Za-z0-9_]*$",
        description=(
            "Lead external-id field holding our lead id (e.g. `Web_Lead_Id__c`); "
            "unset means records are found by e-mail."
        ),
    )
    bulk_threshold: int = Field(
        2000,
        ge=1,
        description="Above this many records in one upsert, Bulk API 2.0 is used.",
    )
    bulk_poll_seconds: int = Field(
        5, ge=0, le=60, description="Wait between Bulk API 2.0 job status checks."
    )
    bulk_timeout_seconds: float = Field(
        240,
        gt=0,
        le=480,
        description=(
            "Longest one bulk upsert waits for its Bulk API 2.0 jobs (plus at most "
            "one poll interval); a job still running then is aborted and its "
            "records fail as retryable (`bulk_timeout`). Keep it well under the "
            "sync's 10-minute claim lease."
        ),
    )
    timeout_seconds: float = Field(
        30, gt=0, le=600, description="Timeout of each HTTP request."
    )

    @model_validator(mode="after")
    def _flow_has_its_settings(self) -> SalesforceCredentials:
        present = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "username": self.username,
            "password": self.password,
            "private_key": self.private_key or self.private_key_file,
            "refresh_token": self.refresh_token,
        }
        missing = [name for name in REQUIRED_BY_FLOW[self.flow] if not present[name]]
        if missing:
            names = ", ".join(
                "private_key (or private_key_file)" if name == "private_key" else name
                for name in missing
            )
            raise ValueError(
                f"the {self.flow} flow needs {names}; set them or choose another flow"
            )
        parts = urlsplit(self.token_url)
        if parts.scheme != "https" and not is_loopback(self.token_url):
            raise ValueError(
                f"token_url must be https (plain http only to 127.0.0.1 or "
                f"localhost), got {parts.scheme}://{parts.hostname}"
            )
        return self


@dataclass(frozen=True)
class Token:
    """An access token and the instance it is valid on."""

    access_token: str
    instance_url: str


def _token_form(
    credentials: SalesforceCredentials,
) -> tuple[dict[str, str], tuple[str, str] | None]:
    """The form fields of `credentials.flow`'s token request, and Basic auth if used."""
    client_id = credentials.client_id or ""
    secret = (
        credentials.client_secret.get_secret_value()
        if credentials.client_secret
        else None
    )
    if credentials.flow == "client_credentials":
        # Salesforce takes the client credentials as Basic auth or in the body;
        # Basic keeps the secret out of anything that logs form bodies.
        return {"grant_type": "client_credentials"}, (client_id, secret or "")
    if credentials.flow == "password":
        assert credentials.password is not None
        password = credentials.password.get_secret_value()
        if credentials.security_token:
            password += credentials.security_token.get_secret_value()
        return {
            "grant_type": "password",
            "client_id": client_id,
            "client_secret": secret or "",
            "username": credentials.username or "",
            "password": password,
        }, None
    if credentials.flow == "refresh_token":
        assert credentials.refresh_token is not None
        form = {
            "grant_type": "refresh_token",
            "client_id": client_id,
            "refresh_token": credentials.refresh_token.get_secret_value(),
        }
        if secret:
            form["client_secret"] = secret
        return form, None
    return {"grant_type": JWT_BEARER_GRANT, "assertion": _assertion(credentials)}, None


def _assertion(credentials: SalesforceCredentials) -> str:
    if credentials.private_key is not None:
        key = credentials.private_key.get_secret_value()
    else:
        assert credentials.private_key_file is not None
        try:
            key = credentials.private_key_file.read_text()
        except OSError as exc:
            raise CrmConfigError(
                f"cannot read the JWT private key file {credentials.private_key_file}: "
                f"{exc.strerror}"
            ) from exc
    claims = {
        "iss": credentials.client_id,
        "sub": credentials.username,
        "aud": credentials.audience,
        "exp": int(time.time()) + JWT_LIFETIME_SECONDS,
    }
    try:
        return jwt.encode(claims, key, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise CrmConfigError(
            "the JWT private key is not a usable RSA key in PEM form"
        ) from exc


def fetch_token(credentials: SalesforceCredentials, session: requests.Session) -> Token:
    """Logs in with the configured flow.

    Raises:
        CrmAuthError: Salesforce refused the credentials.
        CrmUnavailable: the token endpoint did not answer or answered 5xx.
        CrmConfigError: the key is unusable, or the org's instance is plain HTTP
            on a real host.
    """
    form, basic = _token_form(credentials)
    try:
        response = session.post(
            credentials.token_url,
            data=form,
            auth=basic,
            timeout=credentials.timeout_seconds,
        )
    except requests.Timeout as exc:
        # ConnectTimeout is also a ConnectionError: it is a wait that ran out.
        raise CrmUnavailable(
            f"the Salesforce token endpoint at {host_of(credentials.token_url)} did "
            f"not answer in time ({type(exc).__name__}); retry later or raise "
            "timeout_seconds"
        ) from exc
    except requests.ConnectionError as exc:
        raise CrmUnavailable(
            f"the Salesforce token endpoint at {host_of(credentials.token_url)} "
            f"could not be reached ({type(exc).__name__}); check token_url and "
            "the network"
        ) from exc
    if response.status_code >= 500:
        raise CrmUnavailable(
            f"the Salesforce token endpoint answered {response.status_code}",
            status=response.status_code,
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        description = body.get("error_description") if isinstance(body, dict) else None
        raise CrmAuthError(
            f"Salesforce refused the {credentials.flow} login "
            f"({response.status_code} {error or 'no error code'}: "
            f"{description or 'no description'}); check the connected app and user",
            status=response.status_code,
        )
    access_token = body.get("access_token")
    instance_url = str(body.get("instance_url") or "").rstrip("/")
    if not access_token or not instance_url:
        raise CrmAuthError(
            "the Salesforce token response lacks access_token or instance_url",
            status=response.status_code,
        )
    parts = urlsplit(instance_url)
    if parts.scheme != "https" and not is_loopback(instance_url):
        raise CrmConfigError(
            f"Salesforce gave the instance {parts.scheme}://{parts.hostname}; only "
            "https is used outside 127.0.0.1/localhost"
        )
    return Token(access_token=access_token, instance_url=instance_url)
