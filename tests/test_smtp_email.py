"""SmtpChannel against a real aiosmtpd server: content, connection reuse, faults, AUTH, TLS."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from conftest import Clock, registration, webhook
from pydantic import SecretStr
from smtp_server import Certificates, SmtpServer, TlsMode, refusing_port

from notifier import (
    ConfigurationError,
    Notifier,
    PermanentChannelError,
    Settings,
    TransientChannelError,
)
from notifier.channels import OutgoingMessage, build_channels
from notifier.channels.smtp_email import SmtpChannel
from notifier.events import ChannelKind

SENDER = "Acme Store <orders@acme.example>"
TO = "priya.sharma@example.com"

MakeChannel = Callable[..., SmtpChannel]


def outgoing(n: int = 1, **changes: Any) -> OutgoingMessage:
    fields: dict[str, Any] = {
        "notification_id": n,
        "channel": ChannelKind.EMAIL,
        "to": TO,
        "subject": f"Your Acme Store order ACME-{n} is out for delivery",
        "text": "Hi Priya,\nkeep ₹1,299 ready.\n",
        "html": "<p>Hi Priya,<br>keep <b>₹1,299</b> ready.</p>",
        "message_id": f"<notification.{n}@acme.example>",
    }
    return OutgoingMessage(**(fields | changes))


@pytest.fixture(scope="module")
def certificates() -> Certificates:
    return Certificates.make()


@pytest.fixture
def server() -> Iterator[SmtpServer]:
    with SmtpServer() as running:
        yield running


@pytest.fixture
async def make_channel() -> AsyncIterator[MakeChannel]:
    """Channels for a server; each is opened, and closed after the test."""
    made: list[SmtpChannel] = []

    def make(server: SmtpServer, **options: Any) -> SmtpChannel:
        settings: dict[str, Any] = {"starttls": False, "timeout": 10.0, "sender": SENDER}
        channel = SmtpChannel(host=server.host, port=server.port, **(settings | options))
        made.append(channel)
        return channel

    yield make
    for channel in made:
        await channel.close()


@pytest.fixture
async def channel(server: SmtpServer, make_channel: MakeChannel) -> SmtpChannel:
    made = make_channel(server)
    await made.open()
    return made


# -- the message -------------------------------------------------------------------------------


async def test_a_message_arrives_multipart_with_its_headers(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    message = outgoing(unsubscribe_url="https://acme.example/unsubscribe/abc123")
    receipt = await channel.send(message)
    [got] = server.received
    assert (got.mail_from, got.rcpt_tos) == ("orders@acme.example", (TO,))
    mail = got.message
    assert mail["From"] == SENDER and mail["To"] == TO
    assert mail["Subject"] == message.subject
    assert mail["Date"] is not None and mail["Date"].datetime.tzinfo is not None
    assert mail["Message-ID"] == "<notification.1@acme.example>" == receipt.provider_id
    assert mail["List-Unsubscribe"] == "<https://acme.example/unsubscribe/abc123>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.iter_parts()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content() == "Hi Priya,\nkeep ₹1,299 ready.\n"
    assert "<b>₹1,299</b>" in html.get_content()


async def test_a_text_only_message_has_one_part_and_no_unsubscribe_headers(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    await channel.send(outgoing(html=None))
    mail = server.received[0].message
    assert mail.get_content_type() == "text/plain"
    assert mail["List-Unsubscribe"] is None and mail["List-Unsubscribe-Post"] is None


async def test_a_resend_carries_the_same_message_id(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    await channel.send(outgoing(7))
    await channel.send(outgoing(7))
    ids = {r.message["Message-ID"] for r in server.received}
    assert ids == {"<notification.7@acme.example>"}


async def test_the_server_queue_id_becomes_the_provider_id(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    server.handler.accept = "250 2.0.0 Ok: queued as 4Q1XZ{n}"  # Postfix's wording
    assert (await channel.send(outgoing())).provider_id == "4Q1XZ1"


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    with pytest.raises(PermanentChannelError, match="cannot build the email"):
        await channel.send(outgoing(subject="Hello\r\nBcc: everyone@example.com"))
    assert server.received == [] and server.connections == 0


# -- connections -------------------------------------------------------------------------------


async def test_a_batch_of_twenty_concurrent_sends_uses_one_connection(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    receipts = await asyncio.gather(*(channel.send(outgoing(n)) for n in range(20)))
    await channel.close()
    assert len(server.received) == 20 and server.connections == 1
    assert {r.provider_id for r in receipts} == {
        f"<notification.{n}@acme.example>" for n in range(20)
    }


async def test_a_pool_opens_at_most_its_size(server: SmtpServer, make_channel: MakeChannel) -> None:
    pooled = make_channel(server, connections=3)
    await pooled.open()
    await asyncio.gather(*(pooled.send(outgoing(n)) for n in range(20)))
    assert len(server.received) == 20 and server.connections == 3


async def test_open_connects_lazily_and_close_twice_is_harmless(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    await channel.close()
    await channel.close()
    assert server.connections == 0


async def test_each_batch_gets_its_own_connection(server: SmtpServer, channel: SmtpChannel) -> None:
    await channel.send(outgoing(1))
    await channel.close()
    await channel.open()
    await channel.send(outgoing(2))
    assert server.connections == 2 and len(server.received) == 2


async def test_a_connection_the_server_closed_between_sends_is_replaced(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    await channel.send(outgoing(1))
    assert server.drop_connections() == 1
    await channel.send(outgoing(2))
    assert server.connections == 2 and len(server.received) == 2


@pytest.mark.parametrize("reply", [None, "421 4.4.2 smtp.test Error: timeout exceeded"])
async def test_a_hang_up_on_a_reused_connection_is_retried_once_on_a_new_one(
    server: SmtpServer, channel: SmtpChannel, reply: str | None
) -> None:
    await channel.send(outgoing(1))
    server.hang_ups, server.hang_up_reply = 1, reply  # as an idle timeout does, unnoticed
    await channel.send(outgoing(2))
    assert server.connections == 2
    assert [r.message["Message-ID"] for r in server.received] == [
        "<notification.1@acme.example>",
        "<notification.2@acme.example>",
    ]


async def test_a_second_hang_up_fails_the_send_as_transient(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    await channel.send(outgoing(1))
    server.hang_ups = 2
    with pytest.raises(TransientChannelError):
        await channel.send(outgoing(2))
    assert server.connections == 2  # the original and one reconnect, no more
    await channel.send(outgoing(3))
    assert len(server.received) == 2


async def test_a_new_connection_hanging_up_is_not_retried(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    server.hang_ups = 1
    with pytest.raises(TransientChannelError):
        await channel.send(outgoing())
    assert server.connections == 1 and server.received == []


async def test_a_send_cancelled_mid_message_does_not_poison_the_connection(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    server.handler.delay = 30.0  # the server sits on the first message's DATA
    first = asyncio.create_task(channel.send(outgoing(1)))
    await _until(lambda: server.handler.attempts == 1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    server.handler.delay = 0.0
    receipt = await channel.send(outgoing(2))
    assert receipt.provider_id == "<notification.2@acme.example>"
    assert server.connections == 2  # the cancelled session was dropped, not reused
    assert [r.message["Message-ID"] for r in server.received] == [receipt.provider_id]


async def _until(condition: Callable[[], bool], seconds: float = 30.0) -> None:
    """Wait for something another thread does; generous, so a loaded machine still passes."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


# -- faults ------------------------------------------------------------------------------------


async def test_451_is_transient_and_a_later_send_succeeds(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    server.handler.defer(1)
    with pytest.raises(TransientChannelError, match=r"451 4\.3\.0 try later") as caught:
        await channel.send(outgoing(1))
    assert caught.value.code == "451"
    await channel.send(outgoing(2))
    assert len(server.received) == 1 and server.connections == 1


async def test_550_is_permanent_with_its_code(server: SmtpServer, channel: SmtpChannel) -> None:
    server.handler.always = "550 5.1.1 no such user"
    with pytest.raises(PermanentChannelError, match=r"550 5\.1\.1 no such user") as caught:
        await channel.send(outgoing())
    assert caught.value.code == "550"
    assert server.received == []


@pytest.mark.parametrize(
    ("reply", "error", "code"),
    [
        ("450 4.2.1 mailbox busy", TransientChannelError, "450"),
        ("550 5.1.1 no such user", PermanentChannelError, "550"),
    ],
)
async def test_a_refused_recipient_is_translated_by_its_code(
    server: SmtpServer,
    channel: SmtpChannel,
    reply: str,
    error: type[Exception],
    code: str,
) -> None:
    server.handler.refuse[TO] = reply
    with pytest.raises(error) as caught:
        await channel.send(outgoing())
    assert getattr(caught.value, "code", None) == code
    assert "p***@example.com" in str(caught.value) and TO not in str(caught.value)
    assert server.received == []


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("450 4.2.1 mailbox busy", TransientChannelError),
        ("550 5.1.1 no such user", PermanentChannelError),
    ],
)
async def test_one_of_two_recipients_refused_is_not_taken_for_success(
    server: SmtpServer, channel: SmtpChannel, reply: str, error: type[Exception]
) -> None:
    # aiosmtplib returns, not raises, when some recipients are accepted
    server.handler.refuse["ravi@example.in"] = reply
    with pytest.raises(error, match=r"r\*\*\*@example.in"):
        await channel.send(outgoing(to=f"{TO}, ravi@example.in"))
    [got] = server.received
    assert got.rcpt_tos == (TO,)


async def test_an_address_echoed_in_a_reply_is_masked(
    server: SmtpServer, channel: SmtpChannel
) -> None:
    server.handler.refuse[TO] = f"550 5.1.1 <{TO}>: Recipient address rejected"
    with pytest.raises(PermanentChannelError) as caught:
        await channel.send(outgoing())
    assert "<p***@example.com>: Recipient address rejected" in str(caught.value)
    assert TO not in str(caught.value)


async def test_nothing_listening_is_transient() -> None:
    with refusing_port() as port:
        channel = SmtpChannel(host="127.0.0.1", port=port, starttls=False, sender=SENDER)
        with pytest.raises(TransientChannelError, match=f"127.0.0.1:{port}") as caught:
            await channel.send(outgoing())
        await channel.close()
    assert caught.value.outage  # nothing was sent: the attempt does not count against it


# -- AUTH --------------------------------------------------------------------------------------


async def test_auth_logs_in(make_channel: MakeChannel) -> None:
    with SmtpServer(auth=("acme-mailer", "s3cret-pass")) as server:
        channel = make_channel(server, username="acme-mailer", password="s3cret-pass")
        await channel.send(outgoing())
        await channel.close()
        assert server.received[0].login == "acme-mailer"


async def test_a_refused_login_is_permanent_and_names_the_settings(
    make_channel: MakeChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with SmtpServer(auth=("acme-mailer", "s3cret-pass")) as server:
        channel = make_channel(server, username="acme-mailer", password="wrong-pass-123")
        with pytest.raises(PermanentChannelError) as caught:
            await channel.send(outgoing())
    text = str(caught.value)
    assert caught.value.code == "535"
    assert "NOTIFIER_SMTP_USERNAME" in text and "NOTIFIER_SMTP_PASSWORD" in text
    assert "wrong-pass-123" not in text and "wrong-pass-123" not in repr(channel)
    assert "wrong-pass-123" not in caplog.text


async def test_logs_carry_neither_the_password_nor_the_full_address(
    make_channel: MakeChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="notifier")
    with SmtpServer(auth=("acme-mailer", "s3cret-pass")) as server:
        channel = make_channel(server, username="acme-mailer", password="s3cret-pass")
        await channel.send(outgoing())
        server.hang_ups = 1
        await channel.send(outgoing(2))  # reconnects: logs at info
        await channel.close()
    assert "reconnecting once" in caplog.text and "p***@example.com" in caplog.text
    assert "s3cret-pass" not in caplog.text and TO not in caplog.text


# -- TLS ---------------------------------------------------------------------------------------


async def test_starttls_with_a_trusted_certificate(
    make_channel: MakeChannel, certificates: Certificates
) -> None:
    with SmtpServer(
        auth=("acme-mailer", "s3cret-pass"), tls=TlsMode.STARTTLS, certificates=certificates
    ) as server:
        channel = make_channel(
            server,
            starttls=True,
            tls_context=certificates.client,
            username="acme-mailer",
            password="s3cret-pass",
        )
        await channel.send(outgoing())
        await channel.close()
    [got] = server.received
    assert got.tls and got.login == "acme-mailer"


@pytest.mark.parametrize("mode", [TlsMode.STARTTLS, TlsMode.IMPLICIT])
async def test_an_untrusted_certificate_is_a_transient_tls_error(
    make_channel: MakeChannel, certificates: Certificates, mode: TlsMode
) -> None:
    untrusted = ssl.create_default_context()  # the system's CAs, not the test CA
    with SmtpServer(tls=mode, certificates=certificates) as server:
        channel = make_channel(
            server,
            starttls=mode is TlsMode.STARTTLS,
            implicit_tls=mode is TlsMode.IMPLICIT,
            tls_context=untrusted,
        )
        with pytest.raises(
            TransientChannelError, match=r"TLS with SMTP server .* failed"
        ) as caught:
            await channel.send(outgoing())
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert server.received == []


async def test_implicit_tls(make_channel: MakeChannel, certificates: Certificates) -> None:
    with SmtpServer(tls=TlsMode.IMPLICIT, certificates=certificates) as server:
        # smtp_starttls stays at its default (true): implicit TLS wins
        channel = make_channel(
            server, starttls=True, implicit_tls=True, tls_context=certificates.client
        )
        await channel.send(outgoing())
        await channel.close()
    assert server.received[0].tls


async def test_starttls_required_but_not_offered_is_permanent_and_names_the_setting(
    server: SmtpServer, make_channel: MakeChannel
) -> None:
    channel = make_channel(server, starttls=True)
    with pytest.raises(PermanentChannelError, match="NOTIFIER_SMTP_STARTTLS"):
        await channel.send(outgoing())
    assert server.received == []


# -- settings ----------------------------------------------------------------------------------


def test_from_settings() -> None:
    settings = Settings(
        smtp_host="email-smtp.ap-south-1.amazonaws.com",
        smtp_port=465,
        smtp_username="AKIAEXAMPLE",
        smtp_password=SecretStr("hunter2-secret"),
        smtp_implicit_tls=True,
        smtp_timeout=12.5,
        email_from=SENDER,
    )
    channel = SmtpChannel.from_settings(settings)
    assert (channel.host, channel.port, channel.username) == (
        settings.smtp_host,
        465,
        "AKIAEXAMPLE",
    )
    assert channel.implicit_tls and not channel.starttls
    assert (channel.timeout, channel.sender, channel.kind) == (12.5, SENDER, ChannelKind.EMAIL)
    assert "hunter2" not in repr(channel)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"smtp_host": None}, "NOTIFIER_SMTP_HOST"),
        ({"email_from": None}, "NOTIFIER_EMAIL_FROM"),
        ({"smtp_username": "mailer"}, "NOTIFIER_SMTP_PASSWORD"),
    ],
)
def test_from_settings_names_what_is_missing(changes: dict[str, Any], named: str) -> None:
    base = {"smtp_host": "smtp.example.in", "email_from": SENDER}
    with pytest.raises(ConfigurationError, match=named):
        SmtpChannel.from_settings(Settings(**(base | changes)))


# -- through the engine ------------------------------------------------------------------------


async def _deliver_one(settings: Settings, clock: Clock, server: SmtpServer) -> dict[str, Any]:
    smtp = SmtpChannel(
        host=server.host, port=server.port, starttls=False, timeout=10.0, sender=SENDER
    )
    channels = build_channels(settings) | {ChannelKind.EMAIL: smtp}
    async with Notifier(settings, clock=clock, channels=channels) as n:
        await n.register_shipment(registration())
        await n.handle_webhook(webhook(code=8, at=clock.now))  # Delivered: an SMS and an email
        await n.dispatch_due()
        [row] = await n.notifications(channel="email")
    return row


async def test_a_delivered_update_reaches_the_smtp_server(
    settings: Settings, clock: Clock, server: SmtpServer
) -> None:
    row = await _deliver_one(settings, clock, server)
    [got] = server.received
    mail = got.message
    assert got.rcpt_tos == (TO,) and "delivered" in mail["Subject"]
    assert row["status"] == "sent" and row["provider_id"] == mail["Message-ID"]
    assert mail["Message-ID"].startswith("<notification.")
    assert {p.get_content_type() for p in mail.walk()} >= {"text/plain", "text/html"}
    assert server.connections == 1


async def test_a_451_from_the_server_leaves_the_row_retrying(
    settings: Settings, clock: Clock, server: SmtpServer
) -> None:
    server.handler.defer(1)
    row = await _deliver_one(settings, clock, server)
    assert row["status"] == "retrying" and "451" in row["reason"]
    assert server.received == []


async def test_a_550_from_the_server_fails_the_row_with_its_code(
    settings: Settings, clock: Clock, server: SmtpServer
) -> None:
    server.handler.always = "550 5.1.1 no such user"
    row = await _deliver_one(settings, clock, server)
    assert row["status"] == "failed" and "(code 550)" in row["reason"]
    assert "550 5.1.1 no such user" in row["reason"]


async def test_a_long_non_ascii_subject_is_encoded_and_arrives_whole(
    server: SmtpServer, make_channel: MakeChannel
) -> None:
    subject = "आपका ऑर्डर ACME-100231 आज डिलीवरी के लिए निकल चुका है, कृपया ₹1,299 तैयार रखें"
    channel = make_channel(server)
    await channel.send(outgoing(subject=subject))
    mail = server.received[0].message
    assert str(mail["Subject"]) == subject
    assert mail.get_content_type() == "multipart/alternative"


async def test_a_non_ascii_sender_name_is_encoded(
    server: SmtpServer, make_channel: MakeChannel
) -> None:
    channel = make_channel(server, sender="एक्मे स्टोर <orders@acme.example>")
    await channel.send(outgoing())
    assert str(server.received[0].message["From"]) == "एक्मे स्टोर <orders@acme.example>"
