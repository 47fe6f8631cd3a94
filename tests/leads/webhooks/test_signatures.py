"""Signature formats on raw bytes: ours, `sha256=` (WH-02), HubSpot v3, token."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hubspot.utils.signature import Signature

from leads.webhooks.signatures import (
    SignatureRejected,
    hubspot_uri,
    sign_hubspot_v3,
    sign_orchestrator,
    sign_sha256,
    verify,
)
from leads.webhooks.sources import WebhookSource

CASES = Path(__file__).parents[2] / "cases"
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
SECRET = "s3cret"


def source(**given) -> WebhookSource:
    return WebhookSource(name="test", secret_env="TEST_SECRET", **given)


def check(src: WebhookSource, body: bytes, headers: dict, **kw) -> None:
    verify(
        src,
        kw.pop("secret", SECRET),
        body,
        headers,
        token=kw.pop("token", None),
        method=kw.pop("method", "POST"),
        url=kw.pop("url", "https://leads.example.com/api/webhooks/test"),
        now=kw.pop("now", NOW),
    )


def reason(src: WebhookSource, body: bytes, headers: dict, **kw) -> str:
    with pytest.raises(SignatureRejected) as caught:
        check(src, body, headers, **kw)
    return caught.value.reason


class TestCaseWh02:
    """WH-02: the sender signs its own bytes; a re-serialised body differs."""

    @pytest.fixture
    def wh02(self) -> dict:
        return json.loads((CASES / "WH-02.json").read_text())

    def test_the_raw_body_matches_the_senders_signature(self, wh02):
        raw = (CASES / "WH-02.body.bin").read_bytes()
        headers = wh02["input"]["headers"]
        signed_at = datetime.fromtimestamp(int(headers["X-Timestamp"]), tz=UTC)

        check(
            source(signature="sha256"),
            raw,
            headers,
            secret=wh02["input"]["secret"],
            now=signed_at + timedelta(seconds=200),
        )

    def test_the_re_serialised_body_signs_differently(self, wh02):
        reserialised = wh02["input"]["reserialised_body_utf8"].encode()
        stamp = wh02["input"]["headers"]["X-Timestamp"]

        signature = sign_sha256(wh02["input"]["secret"], stamp, reserialised)

        assert signature == wh02["expected"]["signature_over_reserialised_body"]
        assert signature != wh02["input"]["headers"]["X-Signature"]

    def test_tampered_and_stale_deliveries_are_refused(self, wh02):
        raw = (CASES / "WH-02.body.bin").read_bytes()
        tampered = wh02["input"]["tampered_body_utf8"].encode()
        headers = wh02["input"]["headers"]
        signed_at = datetime.fromtimestamp(int(headers["X-Timestamp"]), tz=UTC)
        src = source(signature="sha256")
        secret = wh02["input"]["secret"]

        assert (
            reason(src, tampered, headers, secret=secret, now=signed_at)
            == "bad_signature"
        )
        stale = signed_at + timedelta(seconds=600)
        assert reason(src, raw, headers, secret=secret, now=stale) == "stale_timestamp"


class TestOrchestratorFormat:
    def test_a_body_signed_now_verifies(self):
        body = b'{"email": "a@example.com"}'
        header = sign_orchestrator(SECRET, int(NOW.timestamp()), body)

        check(source(), body, {"X-Orchestrator-Signature": header})

    def test_during_secret_rotation_either_signature_is_taken(self):
        body = b"{}"
        stamp = int(NOW.timestamp())
        old = sign_orchestrator("old", stamp, body).split(",")[1]
        new = sign_orchestrator(SECRET, stamp, body).split(",")[1]

        check(source(), body, {"X-Orchestrator-Signature": f"t={stamp},{old},{new}"})

    @pytest.mark.parametrize("offset", [-301, 301])
    def test_a_timestamp_outside_five_minutes_either_way_is_stale(self, offset):
        body = b"{}"
        header = sign_orchestrator(SECRET, int(NOW.timestamp()) + offset, body)

        assert (
            reason(source(), body, {"X-Orchestrator-Signature": header})
            == "stale_timestamp"
        )

    def test_a_signature_with_non_ascii_characters_is_refused_not_an_error(self):
        stamp = int(NOW.timestamp())

        assert (
            reason(source(), b"{}", {"X-Orchestrator-Signature": f"t={stamp},v1=é"})
            == "bad_signature"
        )


class TestHubSpotV3:
    URL = "https://leads.example.com/api/webhooks/hubspot?portal=62515"

    def test_our_signature_is_the_official_clients(self):
        body = b'[{"eventId":1,"objectId":123,"subscriptionType":"contact.creation"}]'
        stamp = str(int(NOW.timestamp() * 1000))

        ours = sign_hubspot_v3(SECRET, "POST", self.URL, body, stamp)

        assert ours == Signature.get_signature(
            SECRET, body.decode(), "v3", self.URL, "POST", stamp
        )

    def test_a_signed_batch_verifies_and_a_changed_url_does_not(self):
        body = b"[]"
        stamp = str(int(NOW.timestamp() * 1000))
        headers = {
            "X-HubSpot-Signature-v3": sign_hubspot_v3(
                SECRET, "POST", self.URL, body, stamp
            ),
            "X-HubSpot-Request-Timestamp": stamp,
        }
        src = source(signature="hubspot_v3", payload="hubspot")

        check(src, body, headers, url=self.URL)
        assert (
            reason(src, body, headers, url=self.URL.replace("62515", "1"))
            == "bad_signature"
        )

    def test_escaped_url_syntax_is_decoded_as_hubspot_signs_it(self):
        assert (
            hubspot_uri("https://x.test/a%3Ab?c=%2F%20") == "https://x.test/a:b?c=/%20"
        )


class TestToken:
    def test_only_the_exact_token_passes(self):
        src = source(signature="token")

        check(src, b"{}", {}, token=SECRET)
        assert reason(src, b"{}", {}, token=SECRET + "x") == "bad_signature"
        assert reason(src, b"{}", {}) == "missing_signature"
