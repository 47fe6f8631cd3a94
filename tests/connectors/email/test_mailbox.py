"""The local mailbox: a real SMTP server on loopback that keeps what it gets."""

from __future__ import annotations

from email import message_from_bytes, policy

from connectors.email.mailbox import running_mailbox
from connectors.email.messages import build_message
from connectors.email.smtp import SmtpOutbox
from connectors.email.templates import RenderedEmail

SENDER = "Automation Orchestrator <noreply@localhost>"


def message(to: str):
    return build_message(
        RenderedEmail("Hello", "Hi\n", "<p>Hi</p>"), sender=SENDER, recipient=to
    )


def test_keeps_every_message_with_its_envelope_recipient(tmp_path):
    with running_mailbox(tmp_path / "box") as box:
        relay = SmtpOutbox.from_url(box.url)
        with relay.session():
            relay.send(message("ada@example.com"))
            relay.send(message("josé@example.com"))
        envelopes, connections = box.received, box.connections

    files = sorted((tmp_path / "box").glob("*.eml"))
    kept = [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]
    assert [str(m["X-Mailbox-Rcpt-To"]) for m in kept] == [
        "ada@example.com",
        "josé@example.com",
    ]
    assert [e.rcpt_tos for e in envelopes] == [
        ["ada@example.com"],
        ["josé@example.com"],
    ]
    assert connections == 1


def test_without_a_folder_keeps_messages_in_memory_only(tmp_path):
    with running_mailbox(None) as box:
        SmtpOutbox.from_url(box.url).send(message("ada@example.com"))
        received = box.received

    assert len(received) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_restarted_mailbox_keeps_what_the_last_one_wrote(tmp_path):
    for address in ("ada@example.com", "bo@example.com"):
        with running_mailbox(tmp_path / "box") as box:
            SmtpOutbox.from_url(box.url).send(message(address))

    files = sorted((tmp_path / "box").glob("*.eml"))
    kept = [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]
    assert [str(m["X-Mailbox-Rcpt-To"]) for m in kept] == [
        "ada@example.com",
        "bo@example.com",
    ]
