"""HubSpot credentials: one way in, said plainly when something is missing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from connectors.crm.hubspot import HubSpotCredentials
from connectors.crm.hubspot.contacts import InvalidValue, to_hubspot


class TestCredentials:
    def test_a_private_app_token_is_enough(self):
        credentials = HubSpotCredentials(access_token="pat-1")

        assert not credentials.uses_oauth
        assert credentials.token_host == "https://api.hubapi.com"
        assert "pat-1" not in repr(credentials)

    def test_oauth_names_the_missing_fields(self):
        with pytest.raises(
            ValidationError, match="missing: client_secret, refresh_token"
        ):
            HubSpotCredentials(client_id="cid")

    def test_both_ways_at_once_are_refused(self):
        with pytest.raises(ValidationError, match="not both"):
            HubSpotCredentials(access_token="pat-1", client_id="cid")

    def test_a_token_url_must_end_in_the_token_path(self):
        with pytest.raises(ValidationError, match="token_url"):
            HubSpotCredentials(access_token="pat-1", token_url="https://auth.example/t")

    def test_the_token_host_follows_a_custom_token_url(self):
        credentials = HubSpotCredentials(
            client_id="c",
            client_secret="s",
            refresh_token="r",
            token_url="http://127.0.0.1:9/oauth/v1/token",
        )

        assert credentials.token_host == "http://127.0.0.1:9"


class TestPlainHttp:
    """The token goes with every request: in clear text only to this machine."""

    @pytest.mark.parametrize(
        "host",
        [
            "http://api.hubapi.com",
            "http://10.0.0.5:8080",
            "http://127.0.0.1.example.com",
            "ftp://api.hubapi.com",
            "api.hubapi.com",
        ],
    )
    def test_a_host_that_is_not_https_or_loopback_is_refused(self, host):
        with pytest.raises(ValidationError, match="must be https"):
            HubSpotCredentials(access_token="pat-1", host=host)

    @pytest.mark.parametrize(
        "host",
        [
            "https://api.hubapi.com",
            "http://127.0.0.1:8100",
            "http://localhost:8100",
            "http://[::1]:8100",
        ],
    )
    def test_https_and_loopback_hosts_are_accepted(self, host):
        assert HubSpotCredentials(access_token="pat-1", host=host).api_host == host

    def test_a_plain_http_token_url_off_loopback_is_refused(self):
        with pytest.raises(ValidationError, match="must be https"):
            HubSpotCredentials(
                client_id="c",
                client_secret="s",
                refresh_token="r",
                token_url="http://auth.example.com/oauth/v1/token",
            )

    def test_the_refusal_does_not_repeat_a_password_in_the_url(self):
        with pytest.raises(ValidationError) as caught:
            HubSpotCredentials(
                access_token="pat-1", host="http://u:hunter2@crm.example"
            )

        [error] = caught.value.errors()
        assert "hunter2" not in error["msg"]


class TestValues:
    @pytest.mark.parametrize(
        ("value", "sent"),
        [
            (True, "true"),
            (False, "false"),
            (62, "62"),
            (62.0, "62"),
            (62.5, "62.5"),
            ("", ""),
            ("Ada", "Ada"),
        ],
    )
    def test_values_become_hubspot_strings(self, value, sent):
        assert to_hubspot(value) == sent

    def test_a_date_is_midnight_utc_in_epoch_milliseconds(self):
        from datetime import date

        assert to_hubspot(date(2024, 5, 2)) == "1714608000000"

    def test_an_aware_datetime_is_its_instant_and_a_naive_one_is_refused(self):
        from datetime import datetime, timedelta, timezone

        berlin = timezone(timedelta(hours=2))
        assert to_hubspot(datetime(2024, 5, 2, 11, 0, tzinfo=berlin)) == "1714640400000"
        with pytest.raises(InvalidValue, match="no time zone"):
            to_hubspot(datetime(2024, 5, 2, 11, 0))

    def test_a_number_that_is_not_finite_is_refused(self):
        with pytest.raises(InvalidValue):
            to_hubspot(float("nan"))
