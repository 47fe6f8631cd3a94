"""Choosing the outbox from the settings, and the batch session both backends share."""

from __future__ import annotations

import pytest

from connectors.email.backends import Outbox, outbox_from_settings
from connectors.email.errors import EmailConfigError
from connectors.email.file_outbox import FileOutbox
from connectors.email.messages import build_message
from connectors.email.smtp import SmtpOutbox
from connectors.email.templates import RenderedEmail
from leads.settings import Settings
from leads.tracebacks import withholding

RENDERED = RenderedEmail("Welcome, Ada!", "Hello Ada,\n", "<p>Hello Ada,</p>\n")


def a_message():
    return build_message(
        RENDERED,
        sender="Automation Orchestrator <noreply@example.com>",
        recipient="ada@example.com",
    )


def test_the_file_backend_writes_into_the_data_dirs_outbox(tmp_path):
    outbox = outbox_from_settings(Settings(data_dir=tmp_path, email_backend="file"))

    with outbox.session():
        message_id = outbox.send(a_message())
        outbox.send(a_message())

    assert isinstance(outbox, FileOutbox)
    assert len(list((tmp_path / "outbox").iterdir())) == 2
    assert outbox.delivered(message_id) is True


def test_the_smtp_backend_sends_through_the_relay_in_the_url(tmp_path, relay):
    settings = Settings(data_dir=tmp_path, email_backend="smtp", smtp_url=relay.url())
    outbox = outbox_from_settings(settings)

    with outbox.session():
        outbox.send(a_message())

    assert isinstance(outbox, SmtpOutbox)
    assert [got.rcpt_tos for got in relay.handler.received] == [["ada@example.com"]]
    assert not (tmp_path / "outbox").exists()


def test_the_smtp_backend_without_a_url_says_which_setting_to_set(tmp_path):
    settings = Settings(data_dir=tmp_path, email_backend="smtp", smtp_url=None)

    with pytest.raises(ValueError, match="ORCH_SMTP_URL"):
        outbox_from_settings(settings)


def test_a_wrong_smtp_url_names_the_setting_and_not_the_password(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        email_backend="smtp",
        smtp_url="smtp://user:s3cret@relay.example.com:25",
    )

    with pytest.raises(ValueError, match="ORCH_SMTP_URL cannot be used") as caught:
        outbox_from_settings(settings)

    assert "unencrypted" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_settings_error_keeps_its_words_when_a_flow_run_fails_on_it(tmp_path):
    settings = Settings(data_dir=tmp_path, email_backend="smtp", smtp_url=None)

    with pytest.raises(EmailConfigError) as caught:
        withholding(outbox_from_settings)(settings)

    assert "ORCH_EMAIL_BACKEND=smtp needs ORCH_SMTP_URL" in str(caught.value)


@pytest.mark.parametrize(
    "outbox",
    [FileOutbox("outbox"), SmtpOutbox("relay.example.com")],
    ids=["file", "smtp"],
)
def test_both_backends_are_outboxes(outbox):
    assert isinstance(outbox, Outbox)
