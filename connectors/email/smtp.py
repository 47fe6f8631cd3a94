"""The SMTP e-mail backend: hands messages to a relay, one connection a batch."""

from __future__ import annotations

import base64
import contextlib
import copy
import ipaddress
import logging
import math
import re
import smtplib
import ssl
from collections.abc import Callable, Container, Iterator
from email.message import EmailMessage
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import SecretStr

from connectors.email.errors import (
    EmailAuthenticationError,
    EmailDeliveryError,
    EmailError,
    EmailOutcomeUnknownError,
    EmailRejectedError,
)

logger = logging.getLogger(__name__)

TlsMode = Literal["none", "starttls", "implicit"]

_DEFAULT_PORTS: dict[TlsMode, int] = {"none": 25, "starttls": 587, "implicit": 465}
_URL_OPTIONS = ("starttls", "timeout", "cafile", "verify", "local_hostname")
_EHLO_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[(?:IPv6:)?[0-9A-Fa-f:.]+\]"
)

# Relays often quote the address they refuse; it is personal data, so it stays
# out of every error message and log line.
_ADDRESS = re.compile(r"<?[^\s<>\"]+@[^\s<>\"]+>?")
_ENHANCED_STATUS = re.compile(r"5\.(\d{1,3})\.(\d{1,3})\b")
# RFC 3463 subjects of a 5xx to RCPT that blame something other than the
# recipient: the mail system (x.3), the protocol (x.5), the message's form (x.6;
# 5.6.7 is RFC 6531's "address needs SMTPUTF8") and policy (x.7, such as
# "relaying denied"). Anything else refused at RCPT is about the recipient.
_NOT_ABOUT_RECIPIENT = frozenset({"3", "5", "6", "7"})
# Relays that look recipients up only after the message say so at the end of
# DATA with these statuses: bad mailbox or domain, mailbox moved, disabled or
# full (RFC 3463), or a domain that takes no mail (RFC 7505).
_RECIPIENT_STATUSES = frozenset({"1.1", "1.2", "1.3", "1.6", "1.10", "2.1", "2.2"})


class SmtpOutbox:
    """Hands messages to an SMTP relay, over one connection for a whole batch.

    Each message goes to its one To address only, from its From address. The
    phase the relay refused in decides the error (see `send`). Not safe to share
    between threads: give each thread its own outbox.
    """

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        tls: TlsMode = "starttls",
        username: str | None = None,
        password: SecretStr | str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        """An outbox for one relay; nothing is opened until the first message.

        Args:
            host: the relay's name or address.
            port: its port; 465 for implicit TLS, 587 for STARTTLS, 25 otherwise.
            tls: `starttls` upgrades a plain connection and fails when the relay
                does not offer it; `implicit` speaks TLS from the first byte;
                `none` never encrypts.
            username: the login, given together with `password`.
            password: the login's password.
            timeout: seconds any one network step may take.
            ssl_context: the certificates to trust; the system's when not given.
            local_hostname: the EHLO name; the address literal of this end of the
                connection when not given, so this machine's name is never looked
                up.

        Raises:
            ValueError: an unknown TLS mode, a login without a password or the
                other way round, a password that would cross the network
                unencrypted, a timeout that is not above zero, or an EHLO name
                that is not a domain or an address literal.
        """
        if tls not in _DEFAULT_PORTS:
            raise ValueError(f"tls must be none, starttls or implicit, not {tls!r}")
        if (username is None) != (password is None):
            raise ValueError("an SMTP login needs both a user and a password")
        if username is not None and tls == "none" and not _is_loopback(host):
            raise ValueError(
                f"the SMTP password would cross the network to {host} unencrypted; "
                "use STARTTLS or implicit TLS (plain logins go only to this machine)"
            )
        if not 0 < timeout < math.inf:
            raise ValueError(f"the SMTP timeout must be seconds above 0, not {timeout}")
        if local_hostname is not None and not _EHLO_NAME.fullmatch(local_hostname):
            raise ValueError(
                f"the EHLO name {local_hostname!r} is neither a domain name nor an "
                "address literal like [192.0.2.1]"
            )
        self.host = host
        self.port = port or _DEFAULT_PORTS[tls]
        self.tls: TlsMode = tls
        self.username = username
        self._password = SecretStr(password) if isinstance(password, str) else password
        self.timeout = timeout
        self._ssl_context = ssl_context or ssl.create_default_context()
        self._local_hostname = local_hostname
        self._client: smtplib.SMTP | None = None
        self._sent = 0
        self._in_session = False

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 30.0) -> SmtpOutbox:
        """An outbox for `smtp://user:password@host:port?starttls=true` or `smtps://…`.

        `smtp://` is plain SMTP, on port 25, or STARTTLS, on port 587, with
        `starttls=true` (`required` says the same: there is no opportunistic
        mode, since a relay that stopped offering STARTTLS would then be sent
        the password in clear). `smtps://` is TLS from the first byte, on port
        465. Percent-encode the user and password.

        Options: `timeout` (seconds, overriding the argument), `cafile` (a PEM
        bundle of the CAs to trust instead of the system's), `verify=false` (no
        certificate check, for a relay on this machine only) and
        `local_hostname` (the EHLO name).

        Raises:
            ValueError: a part of the URL is wrong. The message names that part
                and never shows the password.
        """
        parts = urlsplit(url.strip())
        if parts.scheme not in ("smtp", "smtps"):
            raise ValueError("the SMTP URL must start with smtp:// or smtps://")
        # Each message below names the part that is wrong, never its text: a
        # password with an unencoded '/', '?', '#' or '@' spills into the host,
        # port, path or query, and would be shown.
        hint = "(percent-encode any '/', '?', '#' or '@' in the user or password)"
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError(
                f"the SMTP URL's port is not a number from 1 to 65535 {hint}"
            )
        if not parts.hostname:
            raise ValueError(
                "the SMTP URL names no host, as in smtp://relay.example.com:587"
            )
        if parts.path not in ("", "/") or parts.fragment:
            raise ValueError(f"the SMTP URL may not have a path or a '#' part {hint}")
        options = _url_options(parts.query)
        username, password = _credentials(parts.username, parts.password)

        starttls = options.get("starttls", "false").lower()
        if starttls not in ("true", "required", "false"):
            raise ValueError(
                f"the SMTP URL's starttls must be true, required or false, "
                f"not {starttls!r}"
            )
        tls: TlsMode = "starttls" if starttls != "false" else "none"
        if parts.scheme == "smtps":
            if tls == "starttls":
                raise ValueError(
                    "smtps:// speaks TLS from the first byte; drop starttls, or "
                    "use smtp://…?starttls=true for a relay that upgrades"
                )
            tls = "implicit"

        if "timeout" in options:
            try:
                timeout = float(options["timeout"])
            except ValueError:
                timeout = math.nan
        verify = options.get("verify", "true").lower()
        if verify not in ("true", "false"):
            raise ValueError(
                f"the SMTP URL's verify must be true or false, not {verify!r}"
            )
        if tls == "none" and ("cafile" in options or "verify" in options):
            raise ValueError(
                "the SMTP URL's cafile and verify apply only with TLS; add "
                "starttls=true or use smtps://"
            )
        if verify == "false" and not _is_loopback(parts.hostname):
            raise ValueError(
                "the SMTP URL's verify=false is allowed only for a relay on this "
                "machine; trust a self-signed relay's certificate with cafile="
            )
        return cls(
            parts.hostname,
            port,
            tls=tls,
            username=username,
            password=password,
            timeout=timeout,
            ssl_context=_tls_context(options.get("cafile"), verify=verify == "true"),
            local_hostname=options.get("local_hostname"),
        )

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """One connection for every message sent inside, opened by the first.

        The connection ends with QUIT when the block does. A session inside a
        session shares the outer one's connection.
        """
        if self._in_session:
            yield
            return
        self._in_session = True
        try:
            yield
        finally:
            self._in_session = False
            self._close()

    def send(self, message: EmailMessage) -> str:
        """Hands the message to the relay, for its one To address.

        Outside a session, a connection is opened and closed for this message
        alone. A connection the relay dropped while idle is opened again once.

        Returns:
            The message's Message-ID.

        Raises:
            ValueError: the message has no Message-ID, or not exactly one
                recipient (in To, with no Cc or Bcc address).
            EmailDeliveryError: nothing was sent, and the same message may go
                through later: the relay could not be reached, or answered 4xx.
            EmailRejectedError: nothing was sent, and sending again cannot help:
                the relay answered 5xx, or the address needs SMTPUTF8 and the
                relay does not offer it. `bounce` tells whether the recipient's
                address is the reason.
            EmailAuthenticationError: the relay refused the login or wants one;
                every message will fail the same way until the URL is fixed.
            EmailOutcomeUnknownError: the connection broke after the message was
                handed over, before the relay's answer. Do not send it again.
        """
        message_id = message["Message-ID"]
        if not message_id:
            raise ValueError(
                "the message has no Message-ID; make it with build_message"
            )
        sender, recipient = _envelope(message)
        if self._in_session:
            return self._send(message, str(message_id), sender, recipient)
        with self.session():
            return self._send(message, str(message_id), sender, recipient)

    def delivered(self, message_id: str) -> None:
        """Always None: a relay does not tell what became of a message it took."""
        return None

    @property
    def _where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def _send(
        self, message: EmailMessage, message_id: str, sender: str, recipient: str
    ) -> str:
        international = not f"{sender}{recipient}".isascii()
        try:
            client, eight_bit = self._mail_from(sender, recipient, international)
            try:
                self._expect("RCPT TO", self._ask("RCPT TO", client.rcpt, recipient))
                data = _wire_format(
                    message, international=international, eight_bit=eight_bit
                )
                self._expect("DATA", self._ask("DATA", client.docmd, "DATA"), (354,))
            except BaseException:
                # RFC 5321 4.1.1.5: RSET ends the refused transaction, so the
                # next message in the batch starts clean.
                self._reset()
                raise
            self._expect("the end of DATA", self._hand_over(client, data, message_id))
        except EmailError as exc:
            logger.debug("Message %s was not sent: %s", message_id, exc)
            raise

        self._sent += 1
        logger.debug(
            "Sent message %s through %s (%d bytes)", message_id, self._where, len(data)
        )
        return message_id

    def _mail_from(
        self, sender: str, recipient: str, international: bool
    ) -> tuple[smtplib.SMTP, bool]:
        while True:
            reused = self._client is not None
            client = self._client or self._open()
            options, eight_bit = self._mail_options(client, recipient, international)
            try:
                code, reply = client.mail(sender, options)
            except OSError as exc:
                self._drop()
                if reused:
                    continue
                raise EmailDeliveryError(
                    f"the SMTP relay at {self._where} closed the connection at MAIL "
                    f"FROM; nothing was sent: {exc}"
                ) from exc
            # Relays close idle connections, Postfix after 300 s, saying 421
            # (RFC 5321 3.8) or nothing; a new connection is then worth one try.
            if code == 421 and reused:
                self._drop()
                continue
            try:
                self._expect("MAIL FROM", (code, reply))
            except EmailError:
                self._reset()
                raise
            return client, eight_bit

    def _mail_options(
        self, client: smtplib.SMTP, recipient: str, international: bool
    ) -> tuple[list[str], bool]:
        if international:
            # RFC 6531: a relay offering SMTPUTF8 takes 8-bit bodies too.
            if client.has_extn("smtputf8"):
                return ["SMTPUTF8", "BODY=8BITMIME"], True
            whose = "sender's" if recipient.isascii() else "recipient's"
            raise EmailRejectedError(
                f"the {whose} address needs SMTPUTF8 (RFC 6531) and the SMTP "
                f"relay at {self._where} does not offer it; nothing was sent",
                bounce=False,
            )
        if client.has_extn("8bitmime"):
            return ["BODY=8BITMIME"], True
        return [], False

    def _ask(
        self,
        phase: str,
        command: Callable[[str], tuple[int, bytes]],
        argument: str,
    ) -> tuple[int, bytes]:
        try:
            return command(argument)
        except OSError as exc:
            self._drop()
            raise EmailDeliveryError(
                f"the connection to the SMTP relay at {self._where} broke at "
                f"{phase}; nothing was sent: {exc}"
            ) from exc

    def _hand_over(
        self, client: smtplib.SMTP, data: bytes, message_id: str
    ) -> tuple[int, bytes]:
        try:
            client.send(_dot_stuffed(data))
            code, reply = client.getreply()
        except OSError as exc:
            self._drop()
            raise EmailOutcomeUnknownError(
                f"the connection to the SMTP relay at {self._where} broke after "
                f"message {message_id} was handed over and before the relay "
                "answered; it may have been accepted, so do not send it again"
            ) from exc
        if code // 100 not in (2, 4, 5):
            self._drop()
            raise EmailOutcomeUnknownError(
                f"the SMTP relay at {self._where} answered message {message_id} "
                f"with something that is not a reply ({code}); it may have been "
                "accepted, so do not send it again"
            )
        return code, reply

    def _expect(
        self,
        phase: str,
        answer: tuple[int, bytes],
        wanted: Container[int] = range(200, 300),
    ) -> None:
        code, reply = answer
        if code in wanted:
            return
        text = _reply_text(reply)
        if code == 530:
            logger.debug("The SMTP relay's reply at %s: %s %s", phase, code, text)
            raise EmailAuthenticationError(
                f"the SMTP relay at {self._where} wants a login or TLS first "
                f"(SMTP {code} at {phase}); set them in ORCH_SMTP_URL",
                code=code,
            )
        if 500 <= code < 600:
            raise EmailRejectedError(
                f"the SMTP relay at {self._where} refused the message at {phase}: "
                f"{code} {text}; nothing was sent",
                code=code,
                bounce=_is_bounce(phase, text),
            )
        raise EmailDeliveryError(
            f"the SMTP relay at {self._where} did not take the message at {phase} "
            f"for now: {code} {text}; nothing was sent"
        )

    def _open(self) -> smtplib.SMTP:
        client: smtplib.SMTP | None = None
        step = "connecting"
        try:
            client = self._connect()
            step = "greeting it (EHLO)"
            self._greet(client)
            if self.tls == "starttls":
                step = "starting TLS"
                self._start_tls(client)
                step = "greeting it over TLS (EHLO)"
                self._greet(client)
            if self.username is not None and self._password is not None:
                step = "logging in"
                self._login(client, self.username, self._password.get_secret_value())
        except BaseException as exc:
            if client is not None:
                client.close()
            if isinstance(exc, OSError) and not isinstance(exc, EmailError):
                raise EmailDeliveryError(self._failure(step, exc)) from exc
            raise

        self._client = client
        self._sent = 0
        logger.info("Opened an SMTP connection to %s (TLS: %s)", self._where, self.tls)
        return client

    def _failure(self, step: str, exc: OSError) -> str:
        where = f"the SMTP relay at {self._where}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return (
                f"{where} sent a certificate that does not verify "
                f"({exc.verify_message}); trust its CA with the URL's cafile="
            )
        if isinstance(exc, ssl.SSLError):
            return f"TLS with {where} failed while {step}: {exc}"
        # smtplib reports a reply that timed out as a closed connection.
        if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
            return f"{where} did not answer within {self.timeout:g} s while {step}"
        if isinstance(exc, ConnectionRefusedError):
            return f"{where} refused the connection; is it running on that port?"
        return f"{where} failed while {step}: {exc}"

    def _connect(self) -> smtplib.SMTP:
        # A local_hostname given here keeps smtplib from asking DNS for this
        # machine's name; the EHLO name is chosen once the connection is up.
        if self.tls == "implicit":
            return smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname="localhost",
                timeout=self.timeout,
                context=self._ssl_context,
            )
        return smtplib.SMTP(
            self.host, self.port, local_hostname="localhost", timeout=self.timeout
        )

    def _greet(self, client: smtplib.SMTP) -> None:
        code, reply = client.ehlo(self._local_hostname or _address_literal(client))
        if code != 250:
            raise EmailDeliveryError(
                f"the SMTP relay at {self._where} refused our EHLO: "
                f"{code} {_reply_text(reply)}"
            )

    def _start_tls(self, client: smtplib.SMTP) -> None:
        if not client.has_extn("starttls"):
            raise EmailDeliveryError(
                f"the SMTP relay at {self._where} does not offer STARTTLS, which "
                "the URL asks for; use smtps:// for a relay that speaks TLS from "
                "the start"
            )
        client.starttls(context=self._ssl_context)

    def _login(self, client: smtplib.SMTP, user: str, password: str) -> None:
        mechanisms = client.esmtp_features.get("auth", "").upper().split()
        # smtplib's own login encodes the password as ASCII; PLAIN (RFC 4616)
        # and LOGIN carry UTF-8.
        if "PLAIN" in mechanisms:
            token = _base64(f"\0{user}\0{password}")
            code, reply = client.docmd("AUTH", f"PLAIN {token}")
        elif "LOGIN" in mechanisms:
            code, reply = client.docmd("AUTH", "LOGIN")
            if code == 334:
                code, reply = client.docmd(_base64(user))
            if code == 334:
                code, reply = client.docmd(_base64(password))
        else:
            raise EmailAuthenticationError(
                f"the SMTP relay at {self._where} offers no login we can use (PLAIN "
                "or LOGIN) but the URL has a user and password; some relays offer "
                "one only over TLS"
            )
        if code == 235:
            return
        if 400 <= code < 500:
            raise EmailDeliveryError(
                f"the SMTP relay at {self._where} cannot check the login for now: "
                f"{code} {_reply_text(reply)}"
            )
        logger.debug(
            "The SMTP relay's reply to the login: %s %s", code, _reply_text(reply)
        )
        raise EmailAuthenticationError(
            f"the SMTP relay at {self._where} refused the login (SMTP {code}); "
            "check the user and password in ORCH_SMTP_URL",
            code=code,
        )

    def _reset(self) -> None:
        if self._client is None:
            return
        try:
            code, _ = self._client.rset()
        except OSError:
            code = 0
        if code != 250:
            self._drop()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        # The messages are with the relay already; a QUIT that fails changes
        # nothing about them.
        with contextlib.suppress(OSError):
            client.quit()
        client.close()
        logger.info(
            "Closed the SMTP connection to %s (TLS: %s) after %d message(s)",
            self._where,
            self.tls,
            self._sent,
        )

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.close()
        logger.info(
            "Lost the SMTP connection to %s (TLS: %s) after %d message(s)",
            self._where,
            self.tls,
            self._sent,
        )


def _envelope(message: EmailMessage) -> tuple[str, str]:
    senders = _addresses(message, "From")
    recipients = _addresses(message, "To")
    others = _addresses(message, "Cc") + _addresses(message, "Bcc")
    if len(senders) != 1:
        raise ValueError(f"the message has {len(senders)} From addresses, not one")
    if len(recipients) != 1 or others:
        raise ValueError(
            f"the message has {len(recipients) + len(others)} recipients; an "
            "outbox sends each message to exactly one To address, with no Cc or Bcc"
        )
    return senders[0], recipients[0]


def _addresses(message: EmailMessage, name: str) -> list[str]:
    found: list[str] = []
    for header in message.get_all(name, []):
        addresses = getattr(header, "addresses", None)
        if addresses is None:
            raise ValueError(
                f"the message's {name} header was not parsed as addresses; make "
                "the message with build_message"
            )
        found.extend(address.addr_spec for address in addresses)
    return found


def _wire_format(
    message: EmailMessage, *, international: bool, eight_bit: bool
) -> bytes:
    if "Bcc" in message:
        message = copy.copy(message)
        del message["Bcc"]
    policy = message.policy.clone(
        # SMTP lines end in CRLF (RFC 5321 2.3.8).
        linesep="\r\n",
        # UTF-8 headers only where SMTPUTF8 carries them (RFC 6532), and 8-bit
        # parts only to a relay that offers 8BITMIME (RFC 6152); for others the
        # generator re-encodes those parts in base64.
        utf8=international,
        cte_type="8bit" if eight_bit else "7bit",
    )
    return message.as_bytes(policy=policy)


def _dot_stuffed(data: bytes) -> bytes:
    # RFC 5321 4.5.2: a line starting with a dot gets a second one, so that only
    # the final "." line ends the message.
    stuffed = re.sub(rb"(?m)^\.", b"..", data)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _is_bounce(phase: str, text: str) -> bool:
    status = _ENHANCED_STATUS.match(text)
    if phase == "RCPT TO":
        return status is None or status[1] not in _NOT_ABOUT_RECIPIENT
    if phase == "the end of DATA":
        return status is not None and f"{status[1]}.{status[2]}" in _RECIPIENT_STATUSES
    return False


def _reply_text(reply: bytes) -> str:
    text = " ".join(reply.decode("utf-8", "replace").split())
    return _ADDRESS.sub("<address>", text)[:300]


def _address_literal(client: smtplib.SMTP) -> str:
    # RFC 5321 4.1.4: a client without a name of its own greets with its address.
    if client.sock is None:
        raise smtplib.SMTPServerDisconnected("the connection closed before EHLO")
    address = ipaddress.ip_address(client.sock.getsockname()[0].split("%")[0])
    return f"[IPv6:{address}]" if address.version == 6 else f"[{address}]"


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in _URL_OPTIONS:
            raise ValueError(
                f"the SMTP URL has an option it does not know; it takes "
                f"{', '.join(_URL_OPTIONS)}"
            )
        if name in options:
            raise ValueError(f"the SMTP URL gives {name} twice")
        options[name] = value
    return options


def _credentials(
    quoted_user: str | None, quoted_password: str | None
) -> tuple[str | None, str | None]:
    if quoted_user is None:
        return None, None
    try:
        user = unquote(quoted_user, errors="strict")
        password = unquote(quoted_password or "", errors="strict")
    except UnicodeDecodeError:
        # Without its context: the decoding error quotes a byte of the password.
        raise ValueError(
            "the SMTP URL's user or password is not percent-encoded UTF-8"
        ) from None
    if not user or not password:
        raise ValueError(
            "the SMTP URL needs both a user and a password, as in "
            "smtp://user:password@relay.example.com:587?starttls=true"
        )
    return user, password


def _tls_context(cafile: str | None, *, verify: bool) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=cafile)
    except OSError as exc:
        raise ValueError(
            f"the SMTP URL's cafile cannot be read as PEM certificates: {exc}"
        ) from exc
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
