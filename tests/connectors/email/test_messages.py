"""Building messages: every header in place, and no header a lead's value can forge."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.policy import SMTP, SMTPUTF8
from pathlib import Path

import pytest

from connectors.email.errors import EmailRenderError
from connectors.email.messages import build_message, parse_sender
from connectors.email.templates import RenderedEmail, TemplateRenderer

SENDER = "Automation Orchestrator <noreply@localhost>"
NOW = datetime(2026, 12, 4, 10, 30, tzinfo=UTC)
RENDERED = RenderedEmail("Welcome, Ada!", "Hello Ada,\n", "<p>Hello Ada,</p>\n")
CONFIG = Path(__file__).parents[3] / "config"


def parsed(message):
    """The message as a receiving program would read it from the bytes."""
    return message_from_bytes(message.as_bytes(), policy=policy.default)


def body(message, kind: str) -> str:
    return message.get_body((kind,)).get_content().replace("\r\n", "\n")


def test_has_every_header_and_a_text_part_with_an_html_alternative():
    message = parsed(
        build_message(RENDERED, sender=SENDER, recipient="Ada@Example.com", now=NOW)
    )

    assert message["From"] == SENDER
    assert message["To"] == "Ada@example.com", "the local part keeps its case"
    assert message["Subject"] == "Welcome, Ada!"
    assert message["Date"].datetime == NOW
    assert message["Message-ID"].endswith("@localhost>")
    assert message.get_content_type() == "multipart/alternative"
    assert body(message, "plain") == "Hello Ada,\n"
    assert body(message, "html") == "<p>Hello Ada,</p>\n"


def test_every_message_gets_its_own_message_id():
    first = build_message(RENDERED, sender=SENDER, recipient="a@example.com")
    second = build_message(RENDERED, sender=SENDER, recipient="a@example.com")

    assert first["Message-ID"] != second["Message-ID"]


def test_lines_end_in_crlf_as_mail_transport_needs():
    data = build_message(RENDERED, sender=SENDER, recipient="a@example.com").as_bytes()

    assert b"\r\nSubject: Welcome, Ada!\r\n" in data
    assert b"\n" not in data.replace(b"\r\n", b"")


class TestHeaderInjection:
    def test_a_first_name_with_a_line_break_adds_no_header_or_recipient(self):
        lead = {"first_name": "Ada\r\nBcc: x@evil", "company": None}
        rendered = TemplateRenderer(CONFIG / "templates").render(
            "welcome_1",
            "Welcome{% if lead.first_name %}, {{ lead.first_name }}{% endif %}!",
            lead,
        )

        message = parsed(
            build_message(rendered, sender=SENDER, recipient="ada@example.com")
        )

        assert message["Bcc"] is None
        assert [name.lower() for name in message] == [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
        ]
        assert [a.addr_spec for a in message["To"].addresses] == ["ada@example.com"]
        assert message["Subject"] == "Welcome, Ada Bcc: x@evil!"

    @pytest.mark.parametrize(
        "hidden",
        [
            b"\r\nBcc: victim@evil.example",
            b"\r\nReply-To: a@evil.example\r\n\r\nYour account is locked.",
        ],
    )
    def test_a_name_typed_as_an_encoded_word_stays_text_in_the_subject(self, hidden):
        # RFC 2047 encoded words are decoded when a header is parsed; one
        # hiding line breaks must not become headers or a body (CVE-2024-6923).
        word = "=?utf-8?b?" + base64.b64encode(hidden).decode() + "?="
        rendered = TemplateRenderer(CONFIG / "templates").render(
            "welcome_1",
            "Welcome, {{ lead.first_name }}!",
            {"first_name": word, "company": None},
        )

        built = build_message(rendered, sender=SENDER, recipient="ada@example.com")
        raw, message = built.as_bytes(), parsed(built)

        header_block = raw.split(b"\r\n\r\n", 1)[0]
        assert b"Bcc" not in header_block and b"Reply-To" not in header_block
        assert message["Bcc"] is None and message["Reply-To"] is None
        subject = str(message["Subject"])
        assert "\n" not in subject and "\r" not in subject
        assert subject.replace("\u2060", "") == f"Welcome, {word}!"
        assert [a.addr_spec for a in message["To"].addresses] == ["ada@example.com"]

    @pytest.mark.parametrize(
        "recipient",
        [
            "ada@example.com\r\nBcc: x@evil",
            "ada@example.com\nBcc: x@evil",
            "ada@example.com, x@evil.example",
            "Ada <ada@example.com>",
            "not an address",
        ],
    )
    def test_a_recipient_must_be_exactly_one_address(self, recipient):
        with pytest.raises(EmailRenderError, match="recipient") as caught:
            build_message(RENDERED, sender=SENDER, recipient=recipient)

        assert "evil" not in str(caught.value), "the address stays out of errors"

    @pytest.mark.parametrize(
        "sender",
        [
            "Orchestrator <noreply@localhost>\r\nBcc: x@evil",
            "a@localhost, b@localhost",
            "noreply",
            "",
        ],
    )
    def test_a_sender_must_be_exactly_one_address(self, sender):
        with pytest.raises(EmailRenderError, match="From address"):
            build_message(RENDERED, sender=sender, recipient="ada@example.com")

    def test_the_stdlib_policy_refuses_line_breaks_in_any_header(self):
        message = build_message(RENDERED, sender=SENDER, recipient="ada@example.com")

        with pytest.raises(ValueError, match="linefeed or carriage return"):
            message["X-Note"] = "x\r\nBcc: x@evil"


def test_parse_sender_reads_name_and_address():
    address = parse_sender(SENDER)

    assert (address.display_name, address.addr_spec) == (
        "Automation Orchestrator",
        "noreply@localhost",
    )


def test_an_international_address_is_written_as_utf8_not_encoded_words():
    message = build_message(RENDERED, sender=SENDER, recipient="zoë@bücher.example")

    data = message.as_bytes()

    # The local part as typed; the domain in its ASCII (IDNA) form.
    assert "\r\nTo: zoë@xn--bcher-kva.example\r\n".encode() in data


class TestOneClickUnsubscribe:
    URL = "https://crm.example.com/u/" + "Ab-_9" * 16

    def test_a_marketing_message_carries_both_rfc_8058_headers(self):
        message = parsed(
            build_message(
                RENDERED,
                sender=SENDER,
                recipient="ada@example.com",
                unsubscribe_url=self.URL,
            )
        )

        assert message["List-Unsubscribe"] == f"<{self.URL}>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert [a.addr_spec for a in message["To"].addresses] == ["ada@example.com"]
        assert message.get_all("To") == ["ada@example.com"]
        assert message["Cc"] is None and message["Bcc"] is None

    def test_the_link_stays_whole_on_one_line_however_long(self):
        data = build_message(
            RENDERED,
            sender=SENDER,
            recipient="ada@example.com",
            unsubscribe_url=self.URL,
        ).as_bytes()

        line = f"\r\nList-Unsubscribe: <{self.URL}>\r\n".encode()
        assert line in data
        assert b"=?utf-8?" not in data

    def test_the_headers_hold_no_line_break(self):
        message = parsed(
            build_message(
                RENDERED,
                sender=SENDER,
                recipient="zoë@bücher.example",
                unsubscribe_url=self.URL,
            )
        )

        for name in ("List-Unsubscribe", "List-Unsubscribe-Post", "Message-ID"):
            assert "\r" not in str(message[name]) and "\n" not in str(message[name])

    def test_a_transactional_message_has_neither_header(self):
        message = parsed(
            build_message(RENDERED, sender=SENDER, recipient="ada@example.com")
        )

        assert message["List-Unsubscribe"] is None
        assert message["List-Unsubscribe-Post"] is None

    @pytest.mark.parametrize(
        "url",
        [
            "https://crm.example.com/u/x\r\nBcc: x@evil.example",
            "https://crm.example.com/u/x y",
            "https://crm.example.com/u/x>, <mailto:x@evil.example",
            "javascript:alert(1)",
            "https://crm.example.com/u/" + "x" * 1000,
        ],
    )
    def test_a_url_that_could_break_the_header_is_refused(self, url):
        with pytest.raises(EmailRenderError, match="unsubscribe URL"):
            build_message(
                RENDERED,
                sender=SENDER,
                recipient="ada@example.com",
                unsubscribe_url=url,
            )


class TestGivenMessageId:
    def test_the_given_message_id_is_used(self):
        message = parsed(
            build_message(
                RENDERED,
                sender=SENDER,
                recipient="ada@example.com",
                message_id="<made-earlier@localhost>",
            )
        )

        assert message["Message-ID"] == "<made-earlier@localhost>"

    @pytest.mark.parametrize(
        "message_id",
        [
            "made-earlier@localhost",
            "<a@b>\r\nBcc: x@evil",
            "<no-at-sign>",
            "<a@b> <c@d>",
        ],
    )
    def test_a_message_id_of_another_form_is_refused(self, message_id):
        with pytest.raises(EmailRenderError, match="Message-ID"):
            build_message(
                RENDERED,
                sender=SENDER,
                recipient="ada@example.com",
                message_id=message_id,
            )


class TestHeadersParsedOnce:
    """Structural headers are parsed and folded once; no header is ever mixed up."""

    SUBJECT = RenderedEmail("Grüße, Ada!", "Hallo Ada,\n", "<p>Hallo Ada,</p>\n")

    def test_structural_headers_are_shared_and_personal_ones_are_not(self):
        first = build_message(RENDERED, sender=SENDER, recipient="a@example.com")
        second = build_message(RENDERED, sender=SENDER, recipient="b@example.com")

        for kind in ("plain", "html"):
            one, other = first.get_body((kind,)), second.get_body((kind,))
            assert one["Content-Type"] is other["Content-Type"]
            assert (
                one["Content-Transfer-Encoding"] is other["Content-Transfer-Encoding"]
            )
        assert first["MIME-Version"] is second["MIME-Version"]
        # A subject may name the person: it is not kept beyond its message.
        assert first["Subject"] == second["Subject"]
        assert first["Subject"] is not second["Subject"]

    def test_a_header_is_folded_for_each_charset_and_line_length(self):
        header = build_message(self.SUBJECT, sender=SENDER, recipient="a@example.com")[
            "Subject"
        ]
        long = build_message(
            RenderedEmail("word " * 40, "text\n", "<p>html</p>\n"),
            sender=SENDER,
            recipient="a@example.com",
        )["Subject"]

        # Each asked in turn, so that a fold kept for one is never given out
        # for the other.
        for _ in range(2):
            assert header.fold(policy=SMTPUTF8) == "Subject: Grüße, Ada!\r\n"
            assert header.fold(policy=SMTP).startswith("Subject: =?utf-8?")
            assert long.fold(policy=SMTP).count("\r\n") > 1
            assert long.fold(policy=SMTP.clone(max_line_length=None)).count("\r\n") == 1
            assert "\n " in long.fold(policy=SMTP.clone(linesep="\n"))

    def test_messages_sharing_a_subject_each_carry_it_as_their_relay_needs(self):
        plain = build_message(self.SUBJECT, sender=SENDER, recipient="a@example.com")
        wide = build_message(self.SUBJECT, sender=SENDER, recipient="zoë@example.com")

        for first, second in ((plain, wide), (wide, plain)):
            first.as_bytes()
            second.as_bytes()
        ascii_data, utf8_data = plain.as_bytes(), wide.as_bytes()

        assert "\r\nSubject: Grüße, Ada!\r\n".encode() in utf8_data
        assert "Grüße".encode() not in ascii_data
        assert parsed(plain)["Subject"] == "Grüße, Ada!"
        assert b"\n" not in ascii_data.replace(b"\r\n", b"")
