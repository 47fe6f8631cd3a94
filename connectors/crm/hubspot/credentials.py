"""How the connector signs in to HubSpot: a private-app token, or an OAuth app."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

# The rule the Salesforce credentials apply to their URLs: one rule for both.
from connectors.crm.urls import is_loopback

TOKEN_PATH = "/oauth/v1/token"
OAUTH_FIELDS = ("client_id", "client_secret", "refresh_token")


class HubSpotCredentials(BaseModel):
    """A HubSpot account's credentials.

    Give either `access_token` (a private app's token, which does not expire)
    or all three OAuth fields, whose refresh token the connector trades for
    short-lived access tokens at `token_url`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    access_token: SecretStr | None = Field(
        None, description="A private app's access token (`pat-…`)."
    )
    client_id: str | None = Field(None, description="The OAuth app's client id.")
    client_secret: SecretStr | None = Field(
        None, description="The OAuth app's client secret."
    )
    refresh_token: SecretStr | None = Field(
        None, description="The refresh token the account's owner granted the app."
    )
    host: str = Field(
        "https://api.hubapi.com",
        description="The API's base URL, without a trailing slash. https, or plain "
        "http only to 127.0.0.1, ::1 or localhost (the sandbox).",
        min_length=1,
    )
    token_url: str | None = Field(
        None,
        description="Where OAuth tokens are refreshed; `<host>/oauth/v1/token` "
        "when not given. Must end in /oauth/v1/token, the path the client posts to, "
        "and be https unless it is on 127.0.0.1, ::1 or localhost.",
    )
    timeout_seconds: float = Field(
        30, gt=0, le=300, description="How long one call may take before it fails."
    )

    @field_validator("host", "token_url")
    @classmethod
    def _https_off_loopback(cls, url: str | None) -> str | None:
        # The bearer token and the OAuth secrets travel with every request: in
        # clear text only to this machine.
        if url is None:
            return url
        parts = urlsplit(url)
        if parts.scheme != "https" and not is_loopback(url):
            got = (
                f"{parts.scheme}://{parts.hostname or ''}"
                if parts.scheme
                else "a URL without a scheme"
            )
            raise ValueError(
                "must be https (plain http only to 127.0.0.1, ::1 or localhost), "
                f"got {got}"
            )
        if not parts.hostname:
            raise ValueError(f"names no host: {url!r}")
        return url

    @model_validator(mode="after")
    def _one_way_in(self) -> HubSpotCredentials:
        given = [name for name in OAUTH_FIELDS if getattr(self, name) is not None]
        if self.access_token is not None and given:
            raise ValueError(
                "give access_token (private app) or the OAuth fields, not both; "
                f"got access_token and {', '.join(given)}"
            )
        if self.access_token is None:
            missing = [name for name in OAUTH_FIELDS if name not in given]
            if missing:
                raise ValueError(
                    "HubSpot needs access_token (private app) or all of "
                    f"{', '.join(OAUTH_FIELDS)} (OAuth); missing: {', '.join(missing)}"
                )
        if self.token_url is not None and not self.token_url.rstrip("/").endswith(
            TOKEN_PATH
        ):
            raise ValueError(
                f"token_url must end in {TOKEN_PATH}, got {self.token_url!r}"
            )
        return self

    @property
    def uses_oauth(self) -> bool:
        return self.access_token is None

    @property
    def api_host(self) -> str:
        return self.host.rstrip("/")

    @property
    def token_host(self) -> str:
        """The base URL the OAuth client posts `/oauth/v1/token` to."""
        url = (self.token_url or self.api_host + TOKEN_PATH).rstrip("/")
        return url[: -len(TOKEN_PATH)]
