"""SMTP servers on loopback for the outbox tests: aiosmtpd, and a scripted one."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Received:
    """One message as the relay got it."""

    peer: tuple[str, int]
    ehlo_name: str | None
    tls: bool
    login: bytes | None
    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        """The content as a receiving program reads it."""
        return cast(
            EmailMessage, message_from_bytes(self.content, policy=policy.SMTPUTF8)
        )


@dataclass
class Recorder:
    """An aiosmtpd handler keeping every message, and refusing as told.

    `mail_replies` answers successive MAIL FROM commands (None accepts); a 421
    among them also closes the connection, as relays do. `rcpt_replies` answers
    RCPT TO for the addresses it names; `data_reply` answers every message.
    """

    received: list[Received] = field(default_factory=list)
    mail_replies: list[str | None] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str = "250 2.0.0 queued"
    mails: int = 0
    quits: int = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mails += 1
        reply = self.mail_replies.pop(0) if self.mail_replies else None
        if reply is None:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return "250 OK"
        if reply.startswith("421"):
            server.loop.call_soon(server.transport.close)
        return reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append(
            Received(
                peer=session.peer,
                ehlo_name=session.host_name,
                tls=server.transport.get_extra_info("ssl_object") is not None,
                login=session.auth_data.login if session.authenticated else None,
                mail_from=envelope.mail_from,
                mail_options=list(envelope.mail_options),
                rcpt_tos=list(envelope.rcpt_tos),
                content=envelope.original_content,
            )
        )
        return self.data_reply

    async def handle_QUIT(self, server, session, envelope):
        self.quits += 1
        return "221 Bye"


class _LoopbackController(Controller):
    def _trigger_server(self) -> None:
        # Bound to port 0, the server knows its port only once it listens.
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class Relay:
    """A running aiosmtpd relay on 127.0.0.1."""

    port: int
    handler: Recorder

    def url(self, scheme: str = "smtp", *, login: str = "", query: str = "") -> str:
        """This relay's URL; `timeout=2` keeps a failing test short."""
        at = f"{login}@" if login else ""
        options = "&".join(part for part in ("timeout=2", query) if part)
        return f"{scheme}://{at}127.0.0.1:{self.port}?{options}"


@pytest.fixture
def start_relay() -> Iterator[Callable[..., Relay]]:
    """Starts aiosmtpd relays with the given SMTP options; stops them after."""
    controllers: list[Controller] = []

    def start(*, ssl_context: ssl.SSLContext | None = None, **options: Any) -> Relay:
        handler = Recorder()
        controller = _LoopbackController(
            handler,
            hostname="127.0.0.1",
            port=0,
            # Named, so aiosmtpd does not look this machine's name up.
            server_hostname="relay.test",
            ssl_context=ssl_context,
            **options,
        )
        controller.start()
        controllers.append(controller)
        return Relay(controller.port, handler)

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def relay(start_relay: Callable[..., Relay]) -> Relay:
    """A plain relay offering 8BITMIME and SMTPUTF8, without TLS or login."""
    return start_relay()


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""

    cert: Path
    key: Path


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test relay")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        # Marked as its own CA so that strict verification (X509_STRICT, the
        # default from Python 3.13) takes it as a trust anchor.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    paths = Certificate(folder / "relay.pem", folder / "relay.key")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture(scope="session")
def server_tls(certificate: Certificate) -> ssl.SSLContext:
    """The relay's side of TLS, presenting the self-signed certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert, certificate.key)
    return context


HangUp = Literal["at DATA", "after the message", "never answer"]


class ScriptedRelay:
    """A relay for one connection that accepts everything, then breaks as told.

    `at DATA` hangs up on the DATA command; `after the message` hangs up once
    the message has come in; `never answer` keeps quiet after it until the
    client gives up.
    """

    def __init__(self, hang_up: HangUp) -> None:
        self.hang_up = hang_up
        self.message = b""
        self._listener = socket.create_server(("127.0.0.1", 0))
        # Bounds the thread's life when no client ever comes.
        self._listener.settimeout(5)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._thread.join(timeout=10)
        self._listener.close()

    def _serve(self) -> None:
        try:
            connection, _ = self._listener.accept()
            connection.settimeout(5)
            with connection, connection.makefile("rb") as lines:
                self._converse(connection, lines)
        except OSError:
            return

    def _converse(self, connection: socket.socket, lines: BinaryIO) -> None:
        connection.sendall(b"220 scripted ESMTP\r\n")
        for line in lines:
            command = line[:4].upper()
            if command == b"EHLO":
                connection.sendall(b"250-scripted\r\n250 8BITMIME\r\n")
            elif command in (b"MAIL", b"RCPT", b"RSET"):
                connection.sendall(b"250 OK\r\n")
            elif command == b"DATA":
                if self.hang_up == "at DATA":
                    return
                connection.sendall(b"354 go ahead\r\n")
                body = []
                for data_line in lines:
                    if data_line == b".\r\n":
                        break
                    body.append(data_line)
                self.message = b"".join(body)
                if self.hang_up == "never answer":
                    lines.read()
                return
            else:
                connection.sendall(b"221 Bye\r\n")
                return


@pytest.fixture
def scripted_relay() -> Iterator[Callable[[HangUp], ScriptedRelay]]:
    relays: list[ScriptedRelay] = []

    def start(hang_up: HangUp) -> ScriptedRelay:
        relays.append(ScriptedRelay(hang_up))
        return relays[-1]

    yield start
    for relay in relays:
        relay.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that takes connections and never says a word."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]
