"""The SMTP outbox against real relays on loopback: what they get, and each failure."""

from __future__ import annotations

import logging
import pickle
import time
from email.message import EmailMessage
from urllib.parse import quote

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from connectors.email.errors import (
    EmailAuthenticationError,
    EmailDeliveryError,
    EmailError,
    EmailOutcomeUnknownError,
    EmailRejectedError,
)
from connectors.email.messages import build_message
from connectors.email.smtp import SmtpOutbox
from connectors.email.templates import RenderedEmail
from leads.tracebacks import valueless

SENDER = "Automation Orchestrator <noreply@example.com>"
RENDERED = RenderedEmail("Welcome, Ada!", "Hello Ada,\n", "<p>Hello Ada,</p>\n")
USER = "orch"
PASSWORD = "pässw/rd@s3cret"
LOGIN = f"{USER}:{quote(PASSWORD, safe='')}"


def a_message(
    recipient: str = "ada@example.com", rendered: RenderedEmail = RENDERED
) -> EmailMessage:
    return build_message(rendered, sender=SENDER, recipient=recipient)


def check_login(server, session, envelope, mechanism, auth_data) -> AuthResult:
    expected = LoginPassword(USER.encode(), PASSWORD.encode())
    if auth_data == expected:
        return AuthResult(success=True, auth_data=auth_data)
    # Not handled: aiosmtpd answers with this message. Relays quote the login
    # they refused, as this one does.
    login = auth_data.login.decode()
    return AuthResult(
        success=False,
        handled=False,
        message=f"535 5.7.8 Login {login} refused, see https://relay.example/help",
    )


def cafile(certificate) -> str:
    return f"cafile={quote(str(certificate.cert), safe='')}"


class TestSending:
    def test_sends_the_message_to_its_one_recipient_with_every_part(self, relay):
        message = a_message()
        outbox = SmtpOutbox.from_url(relay.url())

        message_id = outbox.send(message)

        (got,) = relay.handler.received
        assert message_id == message["Message-ID"]
        assert got.mail_from == "noreply@example.com"
        assert got.rcpt_tos == ["ada@example.com"]
        read = got.message
        assert read["Message-ID"] == message_id
        assert read["From"] == SENDER
        assert read["To"] == "ada@example.com"
        assert read["Subject"] == "Welcome, Ada!"
        assert read.get_body(("plain",)).get_content() == "Hello Ada,\r\n"
        assert read.get_body(("html",)).get_content() == "<p>Hello Ada,</p>\r\n"
        assert b"\n" not in got.content.replace(b"\r\n", b"")
        assert outbox.delivered(message_id) is None

    def test_never_transmits_a_bcc_header(self, relay):
        message = a_message()
        message["Bcc"] = ""

        SmtpOutbox.from_url(relay.url()).send(message)

        (got,) = relay.handler.received
        assert b"bcc" not in got.content.lower()
        assert "Bcc" in message, "the caller's message is left as it was"

    @pytest.mark.parametrize(
        ("header", "value"),
        [
            ("To", "ada@example.com, eve@example.com"),
            ("Cc", "eve@example.com"),
            ("Bcc", "eve@example.com"),
        ],
    )
    def test_refuses_a_second_recipient_before_connecting(
        self, closed_port, header, value
    ):
        message = a_message()
        del message[header]
        message[header] = value
        outbox = SmtpOutbox.from_url(f"smtp://127.0.0.1:{closed_port}")

        with pytest.raises(ValueError, match="2 recipients") as caught:
            outbox.send(message)

        assert "example.com" not in str(caught.value)

    def test_refuses_a_message_without_a_recipient_or_message_id(self, closed_port):
        outbox = SmtpOutbox.from_url(f"smtp://127.0.0.1:{closed_port}")
        no_recipient = a_message()
        del no_recipient["To"]
        no_id = a_message()
        del no_id["Message-ID"]

        with pytest.raises(ValueError, match="0 recipients"):
            outbox.send(no_recipient)
        with pytest.raises(ValueError, match="Message-ID"):
            outbox.send(no_id)

    def test_a_line_holding_only_a_dot_does_not_end_the_message(self, relay):
        text = "Hello Ada,\n.\n..two dots\n.the end\n"
        message = a_message(rendered=RenderedEmail("Dots", text, "<p>.</p>\n"))

        SmtpOutbox.from_url(relay.url()).send(message)

        (got,) = relay.handler.received
        plain = got.message.get_body(("plain",)).get_content()
        assert plain.replace("\r\n", "\n") == text

    def test_a_non_ascii_body_goes_as_8bit_where_the_relay_offers_8bitmime(self, relay):
        message = a_message(rendered=RenderedEmail("Olá", "Olá José\n", "<p>Olá</p>"))

        SmtpOutbox.from_url(relay.url()).send(message)

        (got,) = relay.handler.received
        assert got.mail_options == ["BODY=8BITMIME"]
        assert "Olá José".encode() in got.content
        assert got.message.get_body(("plain",)).get_content() == "Olá José\r\n"

    def test_a_non_ascii_body_is_re_encoded_for_a_relay_without_8bitmime(
        self, start_relay
    ):
        # aiosmtpd offers no 8BITMIME when it decodes, and then refuses 8-bit data.
        relay = start_relay(decode_data=True, enable_SMTPUTF8=False)
        message = a_message(rendered=RenderedEmail("Olá", "Olá José\n", "<p>Olá</p>"))

        SmtpOutbox.from_url(relay.url()).send(message)

        (got,) = relay.handler.received
        assert got.mail_options == []
        assert got.content.isascii()
        assert got.message["Subject"] == "Olá"
        plain = got.message.get_body(("plain",)).get_content()
        assert plain.replace("\r\n", "\n") == "Olá José\n"

    def test_greets_with_its_address_literal_unless_given_a_name(self, relay):
        SmtpOutbox.from_url(relay.url()).send(a_message())
        SmtpOutbox.from_url(relay.url(query="local_hostname=mail.example.org")).send(
            a_message()
        )

        names = [got.ehlo_name for got in relay.handler.received]
        assert names == ["[127.0.0.1]", "mail.example.org"]


class TestSessions:
    def test_sends_a_batch_over_one_connection_and_quits_once(self, relay):
        outbox = SmtpOutbox.from_url(relay.url())

        with outbox.session():
            for number in range(5):
                outbox.send(a_message(f"lead{number}@example.com"))
            assert relay.handler.quits == 0

        received = relay.handler.received
        assert [got.rcpt_tos for got in received] == [
            [f"lead{number}@example.com"] for number in range(5)
        ]
        assert len({got.peer for got in received}) == 1
        assert relay.handler.quits == 1

    def test_a_session_without_messages_opens_no_connection(self, closed_port):
        outbox = SmtpOutbox.from_url(f"smtp://127.0.0.1:{closed_port}")

        with outbox.session():
            pass

    def test_a_session_inside_a_session_shares_its_connection(self, relay):
        outbox = SmtpOutbox.from_url(relay.url())

        with outbox.session():
            outbox.send(a_message())
            with outbox.session():
                outbox.send(a_message())
            outbox.send(a_message())

        assert len({got.peer for got in relay.handler.received}) == 1
        assert relay.handler.quits == 1

    def test_a_send_outside_a_session_has_a_connection_of_its_own(self, relay):
        outbox = SmtpOutbox.from_url(relay.url())

        outbox.send(a_message())
        assert relay.handler.quits == 1
        outbox.send(a_message())

        assert len({got.peer for got in relay.handler.received}) == 2
        assert relay.handler.quits == 2

    def test_reopens_a_connection_the_relay_closed_while_idle(self, start_relay):
        relay = start_relay(timeout=0.2)
        outbox = SmtpOutbox.from_url(relay.url())

        with outbox.session():
            outbox.send(a_message("first@example.com"))
            time.sleep(0.6)
            outbox.send(a_message("second@example.com"))

        received = relay.handler.received
        assert [got.rcpt_tos for got in received] == [
            ["first@example.com"],
            ["second@example.com"],
        ]
        assert received[0].peer != received[1].peer

    def test_reopens_a_connection_answered_421_at_mail_from(self, relay):
        relay.handler.mail_replies = [None, "421 4.4.2 idle too long, closing"]
        outbox = SmtpOutbox.from_url(relay.url())

        with outbox.session():
            outbox.send(a_message("first@example.com"))
            outbox.send(a_message("second@example.com"))

        received = relay.handler.received
        assert [got.rcpt_tos for got in received] == [
            ["first@example.com"],
            ["second@example.com"],
        ]
        assert received[0].peer != received[1].peer
        assert relay.handler.mails == 3

    def test_reopens_only_once_and_never_a_fresh_connection(self, relay):
        relay.handler.mail_replies = [None] + ["421 4.3.2 shutting down"] * 2
        outbox = SmtpOutbox.from_url(relay.url())

        with outbox.session():
            outbox.send(a_message())
            with pytest.raises(EmailDeliveryError, match="421 4.3.2"):
                outbox.send(a_message())

        assert relay.handler.mails == 3, "one retry, on a new connection"
        assert len(relay.handler.received) == 1

    def test_logs_connections_and_messages_without_addresses(self, relay, caplog):
        caplog.set_level(logging.DEBUG, logger="connectors.email.smtp")
        outbox = SmtpOutbox.from_url(relay.url())

        with outbox.session():
            message_ids = [outbox.send(a_message()) for _ in range(3)]

        records = [r for r in caplog.records if r.name == "connectors.email.smtp"]
        info = [r.getMessage() for r in records if r.levelno == logging.INFO]
        debug = [r.getMessage() for r in records if r.levelno == logging.DEBUG]
        where = f"127.0.0.1:{relay.port}"
        assert info == [
            f"Opened an SMTP connection to {where} (TLS: none)",
            f"Closed the SMTP connection to {where} (TLS: none) after 3 message(s)",
        ]
        assert len(debug) == 3
        assert all(mid in line for mid, line in zip(message_ids, debug, strict=True))
        assert "ada@example.com" not in caplog.text


class TestTls:
    def test_starttls_trusting_a_self_signed_relay_through_cafile(
        self, start_relay, server_tls, certificate
    ):
        relay = start_relay(tls_context=server_tls, require_starttls=True)
        url = relay.url(query=f"starttls=true&{cafile(certificate)}")

        SmtpOutbox.from_url(url).send(a_message())

        (got,) = relay.handler.received
        assert got.tls
        assert got.rcpt_tos == ["ada@example.com"]

    def test_smtps_speaks_tls_from_the_first_byte(
        self, start_relay, server_tls, certificate
    ):
        relay = start_relay(ssl_context=server_tls)
        outbox = SmtpOutbox.from_url(relay.url("smtps", query=cafile(certificate)))

        with outbox.session():
            outbox.send(a_message())
            outbox.send(a_message())

        received = relay.handler.received
        assert [got.tls for got in received] == [True, True]
        assert len({got.peer for got in received}) == 1

    def test_an_untrusted_certificate_is_a_delivery_error_naming_cafile(
        self, start_relay, server_tls
    ):
        relay = start_relay(tls_context=server_tls)

        with pytest.raises(EmailDeliveryError, match="cafile") as caught:
            SmtpOutbox.from_url(relay.url(query="starttls=true")).send(a_message())

        assert "does not verify" in str(caught.value)
        assert relay.handler.received == []

    def test_verify_false_reaches_a_self_signed_relay_on_this_machine(
        self, start_relay, server_tls
    ):
        relay = start_relay(ssl_context=server_tls)

        SmtpOutbox.from_url(relay.url("smtps", query="verify=false")).send(a_message())

        assert [got.tls for got in relay.handler.received] == [True]

    def test_a_relay_without_starttls_is_not_sent_the_message_in_clear(self, relay):
        url = relay.url(query="starttls=required")

        with pytest.raises(EmailDeliveryError, match="does not offer STARTTLS"):
            SmtpOutbox.from_url(url).send(a_message())

        assert relay.handler.received == []


class TestLogin:
    @pytest.mark.parametrize("excluded", [[], ["PLAIN"]], ids=["PLAIN", "LOGIN"])
    def test_logs_in_over_tls_with_a_utf8_password(
        self, start_relay, server_tls, certificate, excluded
    ):
        relay = start_relay(
            tls_context=server_tls,
            authenticator=check_login,
            auth_required=True,
            auth_exclude_mechanism=excluded,
        )
        url = relay.url(login=LOGIN, query=f"starttls=true&{cafile(certificate)}")

        SmtpOutbox.from_url(url).send(a_message())

        (got,) = relay.handler.received
        assert got.login == USER.encode()
        assert got.tls

    def test_a_wrong_password_is_an_authentication_error_without_it(
        self, start_relay, server_tls, certificate, caplog
    ):
        caplog.set_level(logging.DEBUG, logger="connectors.email.smtp")
        relay = start_relay(
            tls_context=server_tls, authenticator=check_login, auth_required=True
        )
        wrong = "wrong-s3cret"
        url = relay.url(
            login=f"{USER}:{wrong}", query=f"starttls=true&{cafile(certificate)}"
        )

        with pytest.raises(EmailAuthenticationError) as caught:
            SmtpOutbox.from_url(url).send(a_message())

        error = caught.value
        assert isinstance(error, EmailRejectedError)
        assert (error.code, error.bounce) == (535, False)
        assert "535" in str(error) and "ORCH_SMTP_URL" in str(error)
        assert wrong not in str(error) and wrong not in repr(error)
        assert wrong not in caplog.text
        assert relay.handler.received == []
        # The relay's words quote the login: kept out of the message, which a
        # flow run then shows whole, and logged at DEBUG only.
        assert USER not in str(error) and "relay.example" not in str(error)
        assert valueless(error).endswith(f"EmailAuthenticationError: {error}")
        assert [r.levelno for r in caplog.records if USER in r.getMessage()] == [
            logging.DEBUG
        ]

    def test_a_relay_that_wants_a_login_we_lack_is_an_authentication_error(
        self, start_relay, server_tls, certificate
    ):
        relay = start_relay(
            tls_context=server_tls, authenticator=check_login, auth_required=True
        )
        url = relay.url(query=f"starttls=true&{cafile(certificate)}")

        with pytest.raises(EmailAuthenticationError, match="530") as caught:
            SmtpOutbox.from_url(url).send(a_message())

        assert caught.value.code == 530
        assert relay.handler.received == []


class TestRefusals:
    def test_a_550_at_rcpt_is_a_bounce_and_the_batch_goes_on(self, relay):
        relay.handler.rcpt_replies["gone@example.com"] = (
            "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
        )
        outbox = SmtpOutbox.from_url(relay.url())

        with outbox.session():
            with pytest.raises(EmailRejectedError) as caught:
                outbox.send(a_message("gone@example.com"))
            outbox.send(a_message("ada@example.com"))

        error = caught.value
        assert (error.code, error.bounce) == (550, True)
        assert "550 5.1.1" in str(error) and "User unknown" in str(error)
        assert "gone" not in str(error)
        (got,) = relay.handler.received
        assert got.rcpt_tos == ["ada@example.com"], "RSET left no recipient behind"
        assert relay.handler.quits == 1, "one connection for both"

    def test_a_policy_refusal_at_rcpt_is_not_the_recipients_fault(self, relay):
        relay.handler.rcpt_replies["ada@example.com"] = (
            "554 5.7.1 <ada@example.com>: Relay access denied"
        )

        with pytest.raises(EmailRejectedError) as caught:
            SmtpOutbox.from_url(relay.url()).send(a_message())

        assert (caught.value.code, caught.value.bounce) == (554, False)

    def test_a_451_at_rcpt_may_go_through_later_and_the_batch_goes_on(self, relay):
        relay.handler.rcpt_replies["busy@example.com"] = "451 4.3.0 try again later"
        outbox = SmtpOutbox.from_url(relay.url())

        with outbox.session():
            with pytest.raises(EmailDeliveryError, match="451 4.3.0") as caught:
                outbox.send(a_message("busy@example.com"))
            outbox.send(a_message("ada@example.com"))

        assert isinstance(caught.value, OSError)
        assert not isinstance(caught.value, EmailRejectedError)
        assert [got.rcpt_tos for got in relay.handler.received] == [["ada@example.com"]]

    def test_a_refused_sender_is_not_the_recipients_fault(self, relay):
        relay.handler.mail_replies = ["553 5.7.1 Sender address rejected"]
        outbox = SmtpOutbox.from_url(relay.url())

        with outbox.session():
            with pytest.raises(EmailRejectedError, match="MAIL FROM") as caught:
                outbox.send(a_message())
            outbox.send(a_message())

        assert (caught.value.code, caught.value.bounce) == (553, False)
        assert len(relay.handler.received) == 1

    @pytest.mark.parametrize(
        ("reply", "error", "bounce"),
        [
            ("550 5.1.1 mailbox unknown", EmailRejectedError, True),
            ("554 5.6.0 message content rejected", EmailRejectedError, False),
            ("452 4.3.1 insufficient system storage", EmailDeliveryError, None),
        ],
    )
    def test_a_refusal_after_the_message_is_a_final_answer(
        self, relay, reply, error, bounce
    ):
        relay.handler.data_reply = reply

        with pytest.raises(error, match=reply) as caught:
            SmtpOutbox.from_url(relay.url()).send(a_message())

        assert getattr(caught.value, "bounce", None) == bounce

    def test_refusals_keep_their_code_and_bounce_through_pickling(self):
        error = EmailRejectedError("550 mailbox unknown", code=550, bounce=True)

        copied = pickle.loads(pickle.dumps(error))

        assert (str(copied), copied.code, copied.bounce) == (str(error), 550, True)


class TestSmtputf8:
    @pytest.mark.parametrize(
        ("recipient", "delivered"),
        [
            # The domain goes in its ASCII (IDNA) form; the local part as typed.
            ("用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v"),
            ("josé@example.com", "josé@example.com"),
        ],
    )
    def test_an_international_address_arrives_intact(self, relay, recipient, delivered):
        SmtpOutbox.from_url(relay.url()).send(a_message(recipient))

        (got,) = relay.handler.received
        assert got.rcpt_tos == [delivered]
        assert set(got.mail_options) == {"SMTPUTF8", "BODY=8BITMIME"}
        assert got.message["To"] == delivered
        assert f"To: {delivered}\r\n".encode() in got.content

    def test_an_internationalised_domain_alone_needs_no_smtputf8(self, start_relay):
        relay = start_relay(enable_SMTPUTF8=False)

        SmtpOutbox.from_url(relay.url()).send(a_message("user@bücher.de"))

        (got,) = relay.handler.received
        assert got.rcpt_tos == ["user@xn--bcher-kva.de"]
        assert "SMTPUTF8" not in got.mail_options

    def test_a_relay_without_smtputf8_refuses_that_message_only(self, start_relay):
        relay = start_relay(enable_SMTPUTF8=False)
        outbox = SmtpOutbox.from_url(relay.url())

        with outbox.session():
            with pytest.raises(EmailRejectedError, match="SMTPUTF8") as caught:
                outbox.send(a_message("josé@example.com"))
            outbox.send(a_message("ada@example.com"))

        assert (caught.value.code, caught.value.bounce) == (None, False)
        assert "josé" not in str(caught.value)
        assert [got.rcpt_tos for got in relay.handler.received] == [["ada@example.com"]]
        assert relay.handler.quits == 1


class TestBrokenConnections:
    def test_a_closed_port_is_a_delivery_error_naming_host_and_port(self, closed_port):
        outbox = SmtpOutbox.from_url(f"smtp://{LOGIN}@127.0.0.1:{closed_port}")

        with pytest.raises(EmailDeliveryError) as caught:
            outbox.send(a_message())

        message = str(caught.value)
        assert f"127.0.0.1:{closed_port} refused the connection" in message
        assert "s3cret" not in message

    def test_a_relay_that_never_greets_is_a_delivery_error_in_time(self, silent_port):
        outbox = SmtpOutbox.from_url(f"smtp://127.0.0.1:{silent_port}?timeout=0.3")
        started = time.monotonic()

        with pytest.raises(EmailDeliveryError, match="did not answer within 0.3 s"):
            outbox.send(a_message())

        assert time.monotonic() - started < 2

    def test_a_hang_up_at_the_data_command_means_nothing_was_sent(self, scripted_relay):
        relay = scripted_relay("at DATA")
        outbox = SmtpOutbox.from_url(f"smtp://127.0.0.1:{relay.port}?timeout=2")

        with pytest.raises(EmailDeliveryError, match="broke at DATA"):
            outbox.send(a_message())

        relay.close()
        assert relay.message == b""

    @pytest.mark.parametrize("hang_up", ["after the message", "never answer"])
    def test_a_break_after_the_message_is_an_unknown_outcome(
        self, scripted_relay, hang_up
    ):
        relay = scripted_relay(hang_up)
        outbox = SmtpOutbox.from_url(f"smtp://127.0.0.1:{relay.port}?timeout=0.5")
        message = a_message()

        with pytest.raises(EmailOutcomeUnknownError, match="do not send it again"):
            outbox.send(message)

        relay.close()
        assert message["Message-ID"].encode() in relay.message
        assert b"Hello Ada," in relay.message

    def test_an_unknown_outcome_is_not_an_error_worth_retrying(self):
        error = EmailOutcomeUnknownError("broke after the message")

        assert isinstance(error, EmailError)
        assert not isinstance(error, OSError | EmailDeliveryError)


class TestUrls:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("smtp://relay.example.com", ("relay.example.com", 25, "none", None)),
            (
                "smtp://relay.example.com?starttls=true",
                ("relay.example.com", 587, "starttls", None),
            ),
            (
                "smtp://u%40x:p%2F%3F@Relay.Example.com:2525/?starttls=REQUIRED",
                ("relay.example.com", 2525, "starttls", "u@x"),
            ),
            ("smtps://relay.example.com", ("relay.example.com", 465, "implicit", None)),
            ("smtp://[::1]:2525", ("::1", 2525, "none", None)),
            ("smtp://user:pw@localhost:1025", ("localhost", 1025, "none", "user")),
        ],
    )
    def test_reads_host_port_tls_and_user(self, url, expected):
        outbox = SmtpOutbox.from_url(url)

        assert (outbox.host, outbox.port, outbox.tls, outbox.username) == expected

    def test_the_url_timeout_wins_over_the_argument(self):
        outbox = SmtpOutbox.from_url("smtp://relay.example.com?timeout=7", timeout=3)

        assert outbox.timeout == 7

    @pytest.mark.parametrize(
        ("url", "complaint"),
        [
            ("http://relay.example.com", "smtp:// or smtps://"),
            ("relay.example.com:25", "smtp:// or smtps://"),
            ("smtp://:25", "no host"),
            ("smtp://u:s3cret@relay.example.com:port", "port"),
            ("smtp://u:s3/cret@relay.example.com", "port"),
            ("smtp://u:s3cret@relay.example.com/s3cret", "path"),
            ("smtp://u:s3#cret@relay.example.com", "port"),
            ("smtp://u:s3?cret@relay.example.com", "port"),
            ("smtp://relay.example.com?s3cret=1", "option it does not know"),
            ("smtp://relay.example.com?starttls=maybe", "true, required or false"),
            ("smtp://relay.example.com?starttls=1&starttls=1", "twice"),
            ("smtp://relay.example.com?timeout=0", "above 0"),
            ("smtp://relay.example.com?timeout=soon", "above 0"),
            ("smtp://u@relay.example.com?starttls=true", "user and a password"),
            ("smtp://:s3cret@relay.example.com?starttls=true", "user and a password"),
            ("smtp://u:%FFs3cret@relay.example.com?starttls=true", "UTF-8"),
            ("smtp://u:s3cret@relay.example.com", "unencrypted"),
            ("smtps://relay.example.com?starttls=true", "drop starttls"),
            ("smtps://relay.example.com?verify=false", "this machine"),
            ("smtp://127.0.0.1?verify=false", "only with TLS"),
            ("smtps://relay.example.com?verify=no", "true or false"),
            ("smtp://relay.example.com?local_hostname=a%20b", "EHLO name"),
        ],
    )
    def test_a_wrong_url_names_the_part_and_never_the_password(self, url, complaint):
        with pytest.raises(ValueError, match=complaint) as caught:
            SmtpOutbox.from_url(url)

        assert "s3" not in str(caught.value)
        assert caught.value.__cause__ is None

    def test_a_cafile_that_cannot_be_read_is_a_url_error(self, tmp_path):
        missing = quote(str(tmp_path / "missing.pem"), safe="")

        with pytest.raises(ValueError, match="cafile"):
            SmtpOutbox.from_url(f"smtps://relay.example.com?cafile={missing}")
