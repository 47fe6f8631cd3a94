"""Signed unsubscribe tokens: each names its target only, and tampering shows."""

from __future__ import annotations

import base64
import uuid

import pytest
from pydantic import SecretStr

from leads.settings import Settings
from leads.suppression import address_hash
from leads.unsubscribe import (
    InvalidToken,
    UnsubscribeTarget,
    make_token,
    read_token,
    signing_key,
    unsubscribe_url,
)

KEY = signing_key(Settings(secret_key=SecretStr("a passphrase for the tests")))
LEAD = str(uuid.uuid4())
HASH = address_hash("ada@example.com")


def decoded(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


class TestRoundTrip:
    def test_a_lead_token_reads_back_as_its_tenant_and_lead(self):
        token = make_token(KEY, "default", lead_id=LEAD)

        assert read_token(KEY, token) == UnsubscribeTarget("default", lead_id=LEAD)

    def test_an_address_token_reads_back_as_the_hash_not_the_address(self):
        token = make_token(KEY, "acme", address_hash=HASH)

        assert read_token(KEY, token) == UnsubscribeTarget("acme", address_hash=HASH)
        assert b"ada" not in decoded(token)
        assert b"example" not in decoded(token)

    def test_tokens_are_url_safe_and_short_enough_for_a_text_email(self):
        for token in (
            make_token(KEY, "default", lead_id=LEAD),
            make_token(KEY, "default", address_hash=HASH),
        ):
            assert token.replace("-", "").replace("_", "").isalnum()
            assert len(token) < 100

    def test_the_same_target_always_gets_the_same_token(self):
        # No expiry and no nonce: a years-old link keeps working.
        assert make_token(KEY, "default", lead_id=LEAD) == make_token(
            KEY, "default", lead_id=LEAD
        )

    @pytest.mark.parametrize(
        "targets",
        [{}, {"lead_id": LEAD, "address_hash": HASH}],
        ids=["neither", "both"],
    )
    def test_a_token_names_exactly_one_target(self, targets):
        with pytest.raises(ValueError, match="one"):
            make_token(KEY, "default", **targets)

    def test_an_address_hash_must_be_a_sha256_hex_digest(self):
        with pytest.raises(ValueError, match="64"):
            make_token(KEY, "default", address_hash="ada@example.com")


class TestTampering:
    def test_every_changed_character_is_refused(self):
        token = make_token(KEY, "default", lead_id=LEAD)

        for position in range(len(token)):
            swapped = "A" if token[position] != "A" else "B"
            changed = token[:position] + swapped + token[position + 1 :]
            with pytest.raises(InvalidToken):
                read_token(KEY, changed)

    def test_a_token_moved_to_another_tenant_is_refused(self):
        data = bytearray(decoded(make_token(KEY, "acme", lead_id=LEAD)))
        data[3:7] = b"evil"
        forged = base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode()

        with pytest.raises(InvalidToken, match="signature"):
            read_token(KEY, forged)

    def test_a_token_of_another_secret_key_is_refused(self):
        other = signing_key(Settings(secret_key=SecretStr("another passphrase")))
        token = make_token(other, "default", lead_id=LEAD)

        with pytest.raises(InvalidToken):
            read_token(KEY, token)

    @pytest.mark.parametrize(
        "token",
        ["", "a", "not a token", "%2F%2F", "é" * 40, "A" * 2000, "AAAA===="],
    )
    def test_garbage_is_refused_without_an_unexpected_error(self, token):
        with pytest.raises(InvalidToken):
            read_token(KEY, token)

    def test_a_padded_spelling_of_a_valid_token_is_refused(self):
        token = make_token(KEY, "default", lead_id=LEAD)

        with pytest.raises(InvalidToken):
            read_token(KEY, token + "==")


class TestKeys:
    def test_the_generated_secret_key_signs_alike_across_processes(self, tmp_path):
        first = Settings(data_dir=tmp_path, secret_key=None)
        again = Settings(data_dir=tmp_path, secret_key=None)

        assert signing_key(first) == signing_key(again)
        assert (tmp_path / "secret.key").exists()

    def test_the_signing_key_is_not_the_secret_key_itself(self):
        secret = "a passphrase for the tests"

        assert secret.encode() not in KEY
        assert len(KEY) == 32


class TestUrl:
    def test_the_link_is_under_the_public_base_url(self):
        settings = Settings(
            secret_key=SecretStr("a passphrase for the tests"),
            public_base_url="https://crm.example.com/",
        )

        url = unsubscribe_url(settings, "default", lead_id=LEAD)

        base, token = url.rsplit("/u/", 1)
        assert base == "https://crm.example.com"
        assert read_token(KEY, token) == UnsubscribeTarget("default", lead_id=LEAD)
