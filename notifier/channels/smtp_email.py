"""Email over SMTP with aiosmtplib, the only module that imports it.

Connections: a small pool of ``connections`` SMTP sessions (default 1), opened lazily on the
first send of a batch and reused for the rest of it; :meth:`SmtpChannel.close` says QUIT. The
dispatcher sends concurrently, so each send borrows a session from the pool and has it to
itself until the reply; with one session that serializes the sends on it. A session the server
has closed (idle timeout, restart) is replaced once, transparently, before a send fails.

Errors are translated here, once, into the two the dispatcher knows::

    4xx reply, refused connection, timeout, disconnect, TLS failure  → TransientChannelError
    5xx reply (550 no such user, 554 spam)                            → PermanentChannelError
    535 on AUTH                         → PermanentChannelError naming the settings to fix
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import format_datetime, formataddr, make_msgid, parseaddr

import aiosmtplib

from notifier.channels.base import Channel, OutgoingMessage, SendReceipt
from notifier.errors import (
    ChannelError,
    ConfigurationError,
    PermanentChannelError,
    TransientChannelError,
)
from notifier.events import ChannelKind
from notifier.recipients import mask
from notifier.settings import Settings

log = logging.getLogger("notifier.channels.smtp")

# The final reply to DATA often names the server's queue entry: Postfix and Sendmail say
# "2.0.0 Ok: queued as 4Q1x2Y3z4", Exim "OK id=1rAbCd-000123-AB". Anything else (Gmail's
# "2.0.0 OK 1700000000 x.123 - gsmtp", a plain "250 OK") is not clearly an id: keep the
# Message-ID then.
_QUEUE_ID = (
    re.compile(r"\bqueued as ([\w.\-]+)", re.IGNORECASE),
    re.compile(r"\bid=([\w.\-]+)"),
)
_ADDRESS = re.compile(r"[^\s<>@:;,\"']+@[\w.\-]+")
_HANG_UP = 421  # RFC 5321 4.2.3: "closing transmission channel" (idle timeout, shutdown)
_SETTINGS_HINT = {
    "auth": "check NOTIFIER_SMTP_USERNAME and NOTIFIER_SMTP_PASSWORD",
    "setup": "check NOTIFIER_SMTP_STARTTLS, NOTIFIER_SMTP_IMPLICIT_TLS and NOTIFIER_SMTP_USERNAME",
    "tls": "check NOTIFIER_SMTP_HOST, NOTIFIER_SMTP_PORT and NOTIFIER_SMTP_IMPLICIT_TLS",
}

_Refusals = Mapping[str, aiosmtplib.SMTPResponse]


@dataclass(eq=False)
class _Slot:
    """One place in the pool; holds a live session or, before the first send, none."""

    smtp: aiosmtplib.SMTP | None = None

    @property
    def connected(self) -> bool:
        return self.smtp is not None and self.smtp.is_connected


class SmtpChannel(Channel):
    """Send email through one SMTP relay (SES, SendGrid, Postfix…), reusing connections."""

    kind = ChannelKind.EMAIL

    def __init__(
        self,
        *,
        host: str,
        port: int = 587,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = True,
        implicit_tls: bool = False,
        timeout: float = 30.0,
        sender: str,
        tls_context: ssl.SSLContext | None = None,
        connections: int = 1,
    ) -> None:
        if connections < 1:
            raise ValueError(f"connections must be at least 1, not {connections}")
        self.host = host
        self.port = port
        self.username = username
        self._password = password
        # Implicit TLS (port 465) wins: STARTTLS inside a TLS session is an error, and
        # smtp_starttls defaults to true, so someone turning on implicit TLS rarely unsets it.
        self.starttls = starttls and not implicit_tls
        self.implicit_tls = implicit_tls
        self.timeout = timeout
        self.sender = sender
        self.tls_context = tls_context
        self.connections = connections
        self._domain = parseaddr(sender)[1].rpartition("@")[2] or "notifier.local"
        self._slots: list[_Slot] = []
        self._idle: asyncio.LifoQueue[_Slot] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpChannel:
        """The channel ``NOTIFIER_SMTP_*`` describes; a missing piece fails now, named."""
        if not settings.smtp_host:
            raise ConfigurationError("NOTIFIER_SMTP_HOST is not set: no SMTP server to send to")
        if not settings.email_from:
            raise ConfigurationError("NOTIFIER_EMAIL_FROM is required to send email over SMTP")
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        if settings.smtp_username and not password:
            raise ConfigurationError(
                "NOTIFIER_SMTP_USERNAME is set but NOTIFIER_SMTP_PASSWORD is empty"
            )
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password,
            starttls=settings.smtp_starttls,
            implicit_tls=settings.smtp_implicit_tls,
            timeout=settings.smtp_timeout,
            sender=settings.email_from,
            connections=settings.smtp_connections,
        )

    def __repr__(self) -> str:
        return f"SmtpChannel(host={self.host!r}, port={self.port}, sender={self.sender!r})"

    @property
    def _where(self) -> str:
        return f"SMTP server {self.host}:{self.port}"

    # -- batch ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Make the pool; connect on the first send, not here.

        The dispatcher calls ``open()`` before its try block: an error raised here would escape
        ``dispatch_due`` and strand the claimed rows until their lease ran out. Connecting in
        :meth:`send` turns a dead server into one ``retrying`` row per message instead.
        """
        self._pool()

    async def close(self) -> None:
        """QUIT every session of the batch; a server already gone is not an error here."""
        slots, self._slots, self._idle = self._slots, [], None
        await asyncio.gather(*(self._quit(slot) for slot in slots if slot.smtp is not None))

    async def _quit(self, slot: _Slot) -> None:
        smtp, slot.smtp = slot.smtp, None
        if smtp is None or not smtp.is_connected:
            return
        try:
            await smtp.quit(timeout=min(self.timeout, 5.0))
        except (aiosmtplib.SMTPException, OSError) as err:
            log.debug("QUIT to %s failed (%s); closing the socket", self._where, err)
        finally:
            smtp.close()

    def _pool(self) -> asyncio.LifoQueue[_Slot]:
        # LIFO: at low concurrency the most recently used (already connected) session comes
        # back first, so a pool of K opens only as many sessions as sends actually overlap.
        if self._idle is None:
            self._slots = [_Slot() for _ in range(self.connections)]
            self._idle = asyncio.LifoQueue()
            for slot in self._slots:
                self._idle.put_nowait(slot)
        return self._idle

    @contextlib.asynccontextmanager
    async def _borrow(self) -> AsyncIterator[_Slot]:
        pool = self._pool()
        slot = await pool.get()
        try:
            yield slot
        except ChannelError:
            raise  # a translated reply; aiosmtplib sent RSET, so the session is still in step
        except BaseException:
            # Cancelled mid-transaction (or a bug): the server may still be reading the message
            # body or about to answer a command we no longer wait for, and would take our next
            # MAIL FROM as part of it. The session cannot be trusted; drop it.
            _drop(slot)
            raise
        finally:
            pool.put_nowait(slot)

    # -- sending -------------------------------------------------------------------------------

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        mail = self._compose(message)
        async with self._borrow() as slot:
            try:
                refused, reply = await self._deliver(slot, mail)
            except (aiosmtplib.SMTPException, OSError, ValueError) as err:
                raise _translate(err, self._where) from err
        _raise_for_refusals(refused)
        provider_id = _queue_id(reply) or str(mail["Message-ID"])
        log.debug(
            "email %s to %s accepted by %s: %s",
            message.notification_id,
            mask(message.to),
            self._where,
            _scrub(reply),
        )
        return SendReceipt(provider_id=provider_id)

    def _compose(self, message: OutgoingMessage) -> Message:
        """multipart/alternative (text, then HTML) with a Message-ID stable per notification."""
        try:
            return self._build(message)
        except (ValueError, TypeError) as err:  # e.g. a CR/LF in a header value
            raise PermanentChannelError(f"cannot build the email: {err}") from err

    def _build(self, message: OutgoingMessage) -> Message:
        return compose(message, sender=self.sender, domain=self._domain)

    async def _deliver(self, slot: _Slot, mail: Message) -> tuple[_Refusals, str]:
        """Send on the slot's session; if a reused session turns out closed, reconnect once.

        Only a session that had already sent is retried: a fresh one failing means the server
        is down, and trying again at once would not help. The retry can duplicate a message
        only if the server took it and hung up before its reply reached us.
        """
        reused = slot.connected
        smtp = await self._connected(slot)
        try:
            return await smtp.send_message(mail)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException) as err:
            if not (reused and _is_hang_up(err)):
                raise
            log.info("%s closed the connection (%s); reconnecting once", self._where, err)
            _drop(slot)
            smtp = await self._connected(slot)
            return await smtp.send_message(mail)

    async def _connected(self, slot: _Slot) -> aiosmtplib.SMTP:
        if slot.smtp is not None and slot.smtp.is_connected:
            return slot.smtp
        slot.smtp = None
        smtp = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self.username,
            password=self._password,
            use_tls=self.implicit_tls,
            # False, not None: aiosmtplib's None means "upgrade if offered", which would let a
            # plain relay skip TLS silently when smtp_starttls is on, and try it when it is off.
            start_tls=self.starttls,
            timeout=self.timeout,
            tls_context=self.tls_context,
        )
        await smtp.connect()  # connects, STARTTLS, AUTH; closes itself when any step fails
        log.debug("connected to %s (auth: %s)", self._where, "yes" if self.username else "no")
        slot.smtp = smtp
        return smtp


def _drop(slot: _Slot) -> None:
    """Close the slot's session at once, without QUIT; the next send opens a new one."""
    if slot.smtp is not None:
        slot.smtp.close()
        slot.smtp = None


# -- translation ---------------------------------------------------------------------------------


def _translate(err: Exception, where: str) -> ChannelError:
    """One aiosmtplib, ssl or socket error as a transient or permanent channel error."""
    tls = _tls_cause(err)
    if tls is not None:
        # Transient, certificate failures included: they are a property of the server or the
        # network (a certificate renewed late, a proxy in the way), not of this message; retries
        # are bounded by max_attempts, so a lasting misconfiguration still ends ``failed``,
        # with this reason on every attempt.
        return TransientChannelError(f"TLS with {where} failed: {tls}; {_SETTINGS_HINT['tls']}")
    if isinstance(err, aiosmtplib.SMTPAuthenticationError):
        return _by_code(err.code, f"{where} refused the login: {err.code} {err.message}", "auth")
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused):  # every recipient refused
        return _decisive(
            {r.recipient: aiosmtplib.SMTPResponse(r.code, r.message) for r in err.recipients}
        )
    if isinstance(err, aiosmtplib.SMTPResponseException):
        return _by_code(err.code, f"{where} answered {err.code} {_scrub(err.message)}")
    if isinstance(err, aiosmtplib.SMTPConnectError):  # refused, unreachable: nothing sent
        return TransientChannelError(f"cannot talk to {where}: {err}", outage=True)
    if isinstance(err, OSError):  # reset, timed out, SMTPServerDisconnected
        return TransientChannelError(f"cannot talk to {where}: {err}")
    if isinstance(err, aiosmtplib.SMTPException):  # no STARTTLS or AUTH offered: set-up
        return PermanentChannelError(f"{where}: {err.message}; {_SETTINGS_HINT['setup']}")
    return PermanentChannelError(f"cannot send this email: {_scrub(str(err))}")  # ValueError


def _by_code(code: int, text: str, hint: str = "") -> ChannelError:
    """4xx means later (RFC 5321 4.2.1); 5xx means never for this message."""
    if hint and code >= 500:
        text = f"{text}; {_SETTINGS_HINT[hint]}"
    if 500 <= code <= 599:
        return PermanentChannelError(text, code=str(code))
    return TransientChannelError(text, code=str(code))


def _raise_for_refusals(refused: _Refusals) -> None:
    """aiosmtplib returns, not raises, when only some recipients were refused: check them.

    The accepted recipients already have the message, so a retry resends it to them too.
    A notification has one address, so this needs a hand-written multi-address To.
    """
    if refused:
        raise _decisive(refused)


def _decisive(refused: _Refusals) -> ChannelError:
    """The refusal that decides: a permanent one (5xx) over a transient one (4xx)."""
    address, reply = max(refused.items(), key=lambda item: item[1].code)
    text = f"recipient {mask(address)} refused: {reply.code} {_scrub(reply.message)}"
    return _by_code(reply.code, text)


def _is_hang_up(err: Exception) -> bool:
    if isinstance(err, aiosmtplib.SMTPServerDisconnected):
        return True
    return isinstance(err, aiosmtplib.SMTPResponseException) and err.code == _HANG_UP


def _tls_cause(err: BaseException) -> ssl.SSLError | None:
    """The ssl error behind ``err``: aiosmtplib lets STARTTLS failures through as plain ssl
    errors and wraps implicit-TLS ones in SMTPConnectError, so look along the chain."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _queue_id(reply: str) -> str | None:
    for pattern in _QUEUE_ID:
        if found := pattern.search(reply):
            return found.group(1)
    return None


def _scrub(text: str) -> str:
    """Server replies often echo the address ("<priya@…>: Recipient address rejected");
    mask it, since replies end up in logs and the delivery log."""
    return _ADDRESS.sub(lambda m: mask(m.group(0)), text)


def compose(message: OutgoingMessage, *, sender: str, domain: str | None = None) -> Message:
    """The email as sent (and as the outbox writes it): multipart/alternative, text then HTML,
    with the one-click unsubscribe headers when there is a link.

    Built with the email package's classic API (compat32): the modern EmailMessage
    re-parses every header it is given and took 2 ms of CPU a message, the largest cost of
    sending one; this takes a quarter of that and sends the same MIME structure."""
    headers = {
        "From": sender,
        "To": message.to,
        "Subject": message.subject or "",
        "Date": format_datetime(datetime.now(UTC)),
        "Message-ID": message.message_id or make_msgid(domain=domain),
    }
    if message.unsubscribe_url:
        # RFC 8058 one-click unsubscribe; Gmail and Yahoo require both headers for bulk
        # senders since February 2024.
        headers["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    for name, value in headers.items():
        if "\r" in value or "\n" in value:  # a header injection, whoever wrote it
            raise ValueError(f"the {name} header would hold a line break")
    encoded: dict[str, str | Header] = {
        **headers,
        "From": _address_header(sender),
        "Subject": _text_header(headers["Subject"]),
    }
    parts = [_part(message.text, "plain")]
    if message.html:
        parts.append(_part(message.html, "html"))
    mail: Message = parts[0]
    if len(parts) > 1:
        mail = MIMEMultipart("alternative", _subparts=parts)
    for name, header in encoded.items():
        mail[name] = header  # type: ignore[assignment]  # compat32 takes a Header as well
    if "MIME-Version" not in mail:
        mail["MIME-Version"] = "1.0"
    return mail


# Bodies in UTF-8, quoted-printable: readable in the raw message, safe on any relay.
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


def _part(body: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    part.set_payload(body, _UTF8_QP)
    return part


def _text_header(value: str) -> str | Header:
    """ASCII as it is; anything else RFC 2047-encoded (folded when the message is written)."""
    return value if value.isascii() else Header(value, "utf-8")


def _address_header(value: str) -> str:
    """``Name <address>`` with a non-ASCII name RFC 2047-encoded."""
    name, address = parseaddr(value)
    if not name or name.isascii():
        return value
    return formataddr((name, address), charset="utf-8")
