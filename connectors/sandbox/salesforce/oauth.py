"""The sandbox's OAuth 2.0 token endpoint and its connected app and user."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import jwt
from fastapi import Request
from fastapi.responses import JSONResponse

from connectors.sandbox.salesforce.state import ORG_ID, USER_ID, State

# The sandbox's connected app, user and refresh token. Fake values that only
# this sandbox accepts.
SANDBOX_CLIENT_ID = "3MVG9sandbox.connected.app.consumer.key"
SANDBOX_CLIENT_SECRET = "sandbox-consumer-secret"
SANDBOX_USERNAME = "sync@sandbox.example.com"
SANDBOX_PASSWORD = "sandbox-password"
SANDBOX_SECURITY_TOKEN = "SANDBOXTOKEN"
SANDBOX_REFRESH_TOKEN = "5Aep861sandbox.refresh.token"

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Audiences Salesforce accepts in a JWT assertion; the sandbox also takes its
# own base URL, as a My Domain would be given.
JWT_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")


class TokenRefused(Exception):
    """A token request Salesforce would answer with 400 `{error, error_description}`."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _client(request: Request, form: dict[str, str]) -> tuple[str, str | None]:
    """The client id and secret, from Basic auth or the form (both are allowed)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:]).decode()
        except ValueError as exc:
            raise TokenRefused("invalid_client", "invalid client credentials") from exc
        client_id, _, secret = decoded.partition(":")
        return client_id, secret
    return form.get("client_id", ""), form.get("client_secret")


def _check_client(client_id: str, secret: str | None, *, secret_required: bool) -> None:
    if client_id != SANDBOX_CLIENT_ID:
        raise TokenRefused("invalid_client_id", "client identifier invalid")
    if (secret is not None or secret_required) and secret != SANDBOX_CLIENT_SECRET:
        raise TokenRefused("invalid_client", "invalid client credentials")


def _jwt_subject(state: State, assertion: str, base_url: str) -> str:
    """The user a JWT bearer assertion names, once its signature checks out."""
    for key in state.jwt_keys:
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=["RS256"],
                audience=[*JWT_AUDIENCES, base_url],
                # simple-salesforce sends `exp` as a string; PyJWT wants a number.
                options={"verify_exp": False},
            )
        except jwt.InvalidAudienceError as exc:
            raise TokenRefused("invalid_grant", "audience is invalid") from exc
        except jwt.InvalidTokenError:
            continue
        try:
            expires = float(claims.get("exp", 0))
        except (TypeError, ValueError) as exc:
            raise TokenRefused("invalid_grant", "invalid assertion") from exc
        if expires < time.time():
            raise TokenRefused("invalid_grant", "expired authorization code")
        if claims.get("iss") != SANDBOX_CLIENT_ID:
            raise TokenRefused("invalid_client_id", "client identifier invalid")
        if claims.get("sub") != SANDBOX_USERNAME:
            raise TokenRefused("invalid_grant", "user hasn't approved this consumer")
        return SANDBOX_USERNAME
    raise TokenRefused("invalid_grant", "invalid assertion")


def grant(state: State, request: Request, form: dict[str, str]) -> dict[str, Any]:
    """The token response for `form`, or `TokenRefused` as Salesforce words it."""
    grant_type = form.get("grant_type", "")
    base_url = str(request.base_url).rstrip("/")
    if grant_type == "password":
        client_id, secret = _client(request, form)
        _check_client(client_id, secret, secret_required=True)
        # Loopback counts as a trusted IP range, so the security token may be
        # appended to the password or left off.
        passwords = (SANDBOX_PASSWORD, SANDBOX_PASSWORD + SANDBOX_SECURITY_TOKEN)
        if form.get("username") != SANDBOX_USERNAME or form.get("password") not in (
            passwords
        ):
            raise TokenRefused("invalid_grant", "authentication failure")
        username = SANDBOX_USERNAME
    elif grant_type == "client_credentials":
        client_id, secret = _client(request, form)
        _check_client(client_id, secret, secret_required=True)
        username = SANDBOX_USERNAME
    elif grant_type == JWT_BEARER:
        client_id = SANDBOX_CLIENT_ID
        username = _jwt_subject(state, form.get("assertion", ""), base_url)
    elif grant_type == "refresh_token":
        client_id, secret = _client(request, form)
        _check_client(client_id, secret, secret_required=False)
        if form.get("refresh_token") != SANDBOX_REFRESH_TOKEN:
            raise TokenRefused("invalid_grant", "expired access/refresh token")
        username = SANDBOX_USERNAME
    else:
        raise TokenRefused("unsupported_grant_type", "grant type not supported")

    access_token = state.issue_session(username, client_id)
    issued_at = str(int(time.time() * 1000))
    identity = f"{base_url}/id/{ORG_ID}/{USER_ID}"
    signature = base64.b64encode(
        hmac.new(
            SANDBOX_CLIENT_SECRET.encode(),
            (identity + issued_at).encode(),
            hashlib.sha256,
        ).digest()
    ).decode()
    # None of these four flows returns a refresh token (only the web-server
    # and user-agent flows do), so the body never carries one.
    return {
        "access_token": access_token,
        "instance_url": base_url,
        "id": identity,
        "token_type": "Bearer",
        "issued_at": issued_at,
        "signature": signature,
        "scope": "api",
    }


async def token_endpoint(state: State, request: Request) -> JSONResponse:
    """Answers `POST /services/oauth2/token` for all four grant types."""
    form = {key: str(value) for key, value in (await request.form()).items()}
    state.count("token")
    try:
        body = grant(state, request, form)
    except TokenRefused as exc:
        return JSONResponse(
            {"error": exc.error, "error_description": exc.description},
            status_code=400,
        )
    return JSONResponse(body)
