"""Twilio SMS and WhatsApp against a local Twilio-compatible server; status callbacks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import Clock, registration, webhook
from twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer

from notifier import ConfigurationError, InputError, Notifier, Settings
from notifier.channels import build_channels
from notifier.channels.base import OutgoingMessage, SendReceipt
from notifier.channels.twilio import (
    StatusReceipt,
    TwilioChannel,
    parse_status_callback,
    validate_status_callback,
)
from notifier.errors import OptedOutError, PermanentChannelError, TransientChannelError
from notifier.events import ChannelKind, NotificationStatus

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
SMS_FROM = "+15005550006"
WHATSAPP_FROM = "+14155238886"
CUSTOMER = "+919876543210"
PUBLIC_URL = "https://notify.example.in"
SID = re.compile(r"^SM[0-9a-f]{32}$")


@pytest.fixture
def server() -> Iterator[TwilioServer]:
    with TwilioServer() as running:
        yield running


def channel(
    server: TwilioServer, kind: ChannelKind = ChannelKind.SMS, **args: Any
) -> TwilioChannel:
    defaults: dict[str, Any] = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_": WHATSAPP_FROM if kind is ChannelKind.WHATSAPP else SMS_FROM,
        "api_base": server.url,
        "timeout": 10.0,
    }
    return TwilioChannel(kind, **(defaults | args))


@pytest.fixture
async def sms(server: TwilioServer) -> AsyncIterator[TwilioChannel]:
    opened = channel(server)
    await opened.open()
    yield opened
    await opened.close()


def text(to: str = CUSTOMER, kind: ChannelKind = ChannelKind.SMS, **more: Any) -> OutgoingMessage:
    return OutgoingMessage(
        notification_id=1, channel=kind, to=to, text="Your parcel is out for delivery", **more
    )


def twilio_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_from": SMS_FROM,
        "twilio_whatsapp_from": WHATSAPP_FROM,
    }
    return Settings(**(values | overrides))


# -- sending ------------------------------------------------------------------------------------


async def test_an_sms_is_posted_from_the_number_and_its_sid_kept(
    server: TwilioServer, sms: TwilioChannel
) -> None:
    receipt = await sms.send(text())
    assert SID.match(receipt.provider_id) and server.sids == [receipt.provider_id]
    [request] = server.requests
    assert request.authorized and request.account_sid == ACCOUNT_SID
    assert request.form == {
        "To": CUSTOMER,
        "From": SMS_FROM,
        "Body": "Your parcel is out for delivery",
    }


async def test_a_messaging_service_sends_instead_of_a_number(server: TwilioServer) -> None:
    service = "MG" + "1" * 32
    sms = channel(server, from_=None, messaging_service_sid=service)
    await sms.open()
    try:
        receipt = await sms.send(text())
    finally:
        await sms.close()
    assert SID.match(receipt.provider_id)
    [request] = server.requests
    assert request.form["MessagingServiceSid"] == service and "From" not in request.form


async def test_status_callback_is_the_public_url_only_when_one_is_set(
    server: TwilioServer,
) -> None:
    for public_url, expected in [
        (PUBLIC_URL + "/", PUBLIC_URL + "/callbacks/twilio/status"),
        (None, None),
    ]:
        settings = twilio_settings(twilio_api_base=server.url, public_url=public_url)
        sms = TwilioChannel.from_settings(ChannelKind.SMS, settings)
        await sms.open()
        await sms.send(text())
        await sms.close()
        assert server.requests[-1].form.get("StatusCallback") == expected


async def test_whatsapp_addresses_carry_the_whatsapp_prefix(server: TwilioServer) -> None:
    whatsapp = TwilioChannel.from_settings(
        ChannelKind.WHATSAPP, twilio_settings(twilio_api_base=server.url)
    )
    await whatsapp.open()
    try:
        receipt = await whatsapp.send(text(kind=ChannelKind.WHATSAPP))
    finally:
        await whatsapp.close()
    assert SID.match(receipt.provider_id)
    form = server.requests[0].form
    assert form["To"] == "whatsapp:" + CUSTOMER and form["From"] == "whatsapp:" + WHATSAPP_FROM
    assert form["Body"] == "Your parcel is out for delivery"


async def test_a_whatsapp_template_is_sent_as_content_sid_and_variables(
    server: TwilioServer,
) -> None:
    whatsapp = channel(server, ChannelKind.WHATSAPP, from_="whatsapp:" + WHATSAPP_FROM)
    template = "HX" + "a" * 32
    message = text(
        to="whatsapp:" + CUSTOMER,
        kind=ChannelKind.WHATSAPP,
        content_sid=template,
        content_variables={"1": "Priya", "2": "ACME-100231"},
    )
    await whatsapp.open()
    try:
        await whatsapp.send(message)
    finally:
        await whatsapp.close()
    form = server.requests[0].form
    assert form["ContentSid"] == template and "Body" not in form
    assert json.loads(form["ContentVariables"]) == {"1": "Priya", "2": "ACME-100231"}
    assert form["To"] == "whatsapp:" + CUSTOMER  # not whatsapp:whatsapp:
    assert form["From"] == "whatsapp:" + WHATSAPP_FROM


async def test_one_session_carries_a_batch(server: TwilioServer, sms: TwilioChannel) -> None:
    for _ in range(5):
        await sms.send(text())
    assert server.count == 5 and server.connections == 1
    await sms.close()
    await sms.open()  # the next batch gets a new session
    await sms.send(text())
    assert server.connections == 2


async def test_nested_batches_share_the_session_until_the_last_closes(
    server: TwilioServer, sms: TwilioChannel
) -> None:
    await sms.send(text())
    await sms.open()  # a second batch, overlapping the fixture's
    await sms.close()
    await sms.send(text())  # the fixture's batch still has its session and connection
    assert server.count == 2 and server.connections == 1


# -- errors -------------------------------------------------------------------------------------


async def test_a_500_is_transient_and_never_posted_twice(
    server: TwilioServer, sms: TwilioChannel
) -> None:
    server.fail_next(1)
    with pytest.raises(TransientChannelError) as raised:
        await sms.send(text())
    assert raised.value.code == "20500" and raised.value.retry_after is None
    assert raised.value.outage  # Twilio is failing, not this message: not counted against it
    assert server.count == 1  # the SDK's retries are off: no second POST
    assert SID.match((await sms.send(text())).provider_id)
    assert server.count == 2


async def test_a_429_is_transient_with_its_retry_after(
    server: TwilioServer, sms: TwilioChannel
) -> None:
    server.throttle_next(retry_after="7")
    with pytest.raises(TransientChannelError) as raised:
        await sms.send(text())
    assert raised.value.retry_after == 7 and raised.value.code == "20429"
    assert server.count == 1


@pytest.mark.parametrize(
    ("to", "code", "words"),
    [
        ("+919999900001", "21211", "invalid 'To'"),
        ("+919999900003", "21614", "not a mobile"),
        ("+919999900004", "21408", "enable it in the Twilio console"),
    ],
)
async def test_refused_recipients_are_permanent_with_twilio_code(
    sms: TwilioChannel, to: str, code: str, words: str
) -> None:
    with pytest.raises(PermanentChannelError) as raised:
        await sms.send(text(to=to))
    assert raised.type is PermanentChannelError
    assert raised.value.code == code and words in str(raised.value)
    assert isinstance(raised.value.__cause__, Exception)  # raised from the SDK's error


async def test_a_recipient_who_replied_stop_is_opted_out(sms: TwilioChannel) -> None:
    with pytest.raises(OptedOutError) as raised:
        await sms.send(text(to="+919999900002"))
    assert raised.value.code == "21610"


async def test_a_sender_twilio_refuses_is_permanent(server: TwilioServer) -> None:
    sms = channel(server, from_="+15005550007")
    await sms.open()
    try:
        with pytest.raises(PermanentChannelError) as raised:
            await sms.send(text())
    finally:
        await sms.close()
    assert raised.value.code == "21606" and "NOTIFIER_TWILIO_FROM" in str(raised.value)


async def test_other_refusals_are_permanent_and_mask_the_number(
    server: TwilioServer, sms: TwilioChannel
) -> None:
    server.to_errors["+919999900005"] = 21612  # not in notifier's table; text quotes the number
    with pytest.raises(PermanentChannelError) as raised:
        await sms.send(text(to="+919999900005"))
    assert raised.value.code == "21612"
    assert "+919999900005" not in str(raised.value) and "+91******0005" in str(raised.value)


async def test_wrong_credentials_are_retried_slowly_and_the_token_stays_secret(
    server: TwilioServer, sms: TwilioChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await sms.send(text())  # a success is logged too
    wrong = channel(server, auth_token="wrong-token-123")
    await wrong.open()
    try:
        with pytest.raises(TransientChannelError) as raised:
            await wrong.send(text())
    finally:
        await wrong.close()
    assert raised.value.code == "20003" and "NOTIFIER_TWILIO_AUTH_TOKEN" in str(raised.value)
    assert raised.value.retry_after == 300
    logged = caplog.text + repr(sms) + repr(wrong) + str(raised.value)
    assert "wrong-token-123" not in logged and AUTH_TOKEN not in logged
    assert CUSTOMER not in caplog.text and "+91******3210" in caplog.text


async def test_nothing_listening_is_transient() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sms = TwilioChannel(
        ChannelKind.SMS,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_=SMS_FROM,
        api_base=f"http://127.0.0.1:{port}",
    )
    await sms.open()
    try:
        with pytest.raises(TransientChannelError, match="cannot reach Twilio"):
            await sms.send(text())
    finally:
        await sms.close()


async def test_a_server_slower_than_the_timeout_is_transient(server: TwilioServer) -> None:
    server.delay = 30.0  # far past the timeout, however loaded the machine
    sms = channel(server, timeout=1.0)
    await sms.open()
    try:
        with pytest.raises(TransientChannelError, match="may have sent"):
            await sms.send(text())
    finally:
        await sms.close()
    assert server.count == 1


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "overrides", "named"),
    [
        (ChannelKind.SMS, {"twilio_from": None}, "NOTIFIER_TWILIO_MESSAGING_SERVICE_SID"),
        (ChannelKind.WHATSAPP, {"twilio_whatsapp_from": None}, "NOTIFIER_TWILIO_WHATSAPP_FROM"),
        (ChannelKind.SMS, {"twilio_auth_token": None}, "NOTIFIER_TWILIO_AUTH_TOKEN"),
        (ChannelKind.SMS, {"twilio_account_sid": None}, "NOTIFIER_TWILIO_ACCOUNT_SID"),
    ],
)
def test_missing_settings_are_named(
    kind: ChannelKind, overrides: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        TwilioChannel.from_settings(kind, twilio_settings(**overrides))


def test_a_messaging_service_alone_is_enough_for_sms() -> None:
    settings = twilio_settings(twilio_from=None, twilio_messaging_service_sid="MG" + "1" * 32)
    sms = TwilioChannel.from_settings(ChannelKind.SMS, settings)
    assert sms.from_ is None and sms.messaging_service_sid == "MG" + "1" * 32


# -- status callbacks ---------------------------------------------------------------------------


def signed(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    """Twilio's signature, written out independently of the SDK: HMAC-SHA1 over the URL and
    every field name+value in name order, base64 (twilio.com/docs/usage/security)."""
    data = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


CALLBACK = {
    "MessageSid": "SM" + "b" * 32,
    "MessageStatus": "delivered",
    "To": CUSTOMER,
    "From": SMS_FROM,
    "AccountSid": ACCOUNT_SID,
    "ApiVersion": "2010-04-01",
}


def is_valid(signature: str, params: dict[str, str] = CALLBACK) -> bool:
    return validate_status_callback(
        auth_token=AUTH_TOKEN, public_url=PUBLIC_URL, params=params, signature=signature
    )


def test_a_callback_signed_for_the_public_url_is_valid() -> None:
    assert is_valid(signed(PUBLIC_URL + "/callbacks/twilio/status", CALLBACK))


def test_a_callback_signed_for_the_internal_url_is_not() -> None:
    internal = "http://127.0.0.1:8000/callbacks/twilio/status"  # what the app sees behind TLS
    assert not is_valid(signed(internal, CALLBACK))


def test_forged_tampered_and_unsigned_callbacks_are_not_valid() -> None:
    url = PUBLIC_URL + "/callbacks/twilio/status"
    assert not is_valid(signed(url, CALLBACK, token="someone-elses-token"))
    assert not is_valid(signed(url, CALLBACK), CALLBACK | {"MessageStatus": "failed"})
    assert not is_valid("")
    assert not validate_status_callback(
        auth_token="", public_url=PUBLIC_URL, params=CALLBACK, signature=signed(url, CALLBACK, "")
    )


@pytest.mark.parametrize(
    ("twilio_status", "ours"),
    [
        ("delivered", NotificationStatus.DELIVERED),
        ("read", NotificationStatus.DELIVERED),
        ("undelivered", NotificationStatus.UNDELIVERED),
        ("failed", NotificationStatus.FAILED),
        ("queued", None),
        ("sending", None),
        ("sent", None),
        ("accepted", None),
    ],
)
def test_callback_statuses_map_to_the_log(
    twilio_status: str, ours: NotificationStatus | None
) -> None:
    receipt = parse_status_callback(CALLBACK | {"MessageStatus": twilio_status})
    assert receipt.status == twilio_status and receipt.notification_status == ours


def test_a_callback_is_parsed_with_its_error_and_a_masked_number() -> None:
    params = CALLBACK | {"MessageStatus": "undelivered", "ErrorCode": "30003"}
    receipt = parse_status_callback(params)
    assert receipt == StatusReceipt(
        message_sid="SM" + "b" * 32, status="undelivered", error_code="30003", to="+91******3210"
    )
    assert receipt.raw == params and CUSTOMER not in repr(receipt)
    assert parse_status_callback(CALLBACK).error_code is None


def test_a_callback_without_sid_or_status_is_refused() -> None:
    with pytest.raises(InputError, match="MessageSid"):
        parse_status_callback({"MessageStatus": "sent"})
    with pytest.raises(InputError, match="MessageStatus"):
        parse_status_callback({"MessageSid": "SM" + "b" * 32})


# -- through the engine -------------------------------------------------------------------------


def engine(settings: Settings, clock: Clock, server: TwilioServer) -> Notifier:
    sms = channel(server)
    return Notifier(
        settings, clock=clock, channels=build_channels(settings) | {ChannelKind.SMS: sms}
    )


async def delivered(n: Notifier, clock: Clock, phone: str = "9876543210") -> None:
    await n.register_shipment(registration(phone=phone))
    clock.now = T0
    await n.handle_webhook(webhook(code=8, at=T0))


async def test_the_engine_sends_the_sms_through_twilio(
    settings: Settings, clock: Clock, server: TwilioServer
) -> None:
    async with engine(settings, clock, server) as n:
        await delivered(n, clock)
        assert (await n.dispatch_due()).counts == {"sent": 2}  # the SMS, and email to the outbox
        [row] = await n.notifications(channel="sms")
    [request] = server.requests
    assert request.form["To"] == CUSTOMER and request.form["Body"]
    assert row["status"] == "sent" and row["provider_id"] == server.sids[0]


async def test_the_engine_retries_a_500_later(
    settings: Settings, clock: Clock, server: TwilioServer
) -> None:
    server.fail_next(1)
    async with engine(settings, clock, server) as n:
        await delivered(n, clock)
        await n.dispatch_due()
        [row] = await n.notifications(channel="sms")
        assert row["status"] == "retrying" and server.count == 1
        clock.advance(minutes=10)
        await n.dispatch_due()
        [row] = await n.notifications(channel="sms")
    assert row["status"] == "sent" and row["provider_id"] == server.sids[0]
    assert server.count == 2


async def test_the_engine_fails_an_invalid_number_with_its_code(
    settings: Settings, clock: Clock, server: TwilioServer
) -> None:
    async with engine(settings, clock, server) as n:
        await delivered(n, clock, phone="9999900001")
        await n.dispatch_due()
        [row] = await n.notifications(channel="sms")
        clock.advance(hours=2)
        assert (await n.dispatch_due()).total == 0
    assert row["status"] == "failed" and "21211" in row["reason"]
    assert server.count == 1


async def test_concurrent_sends_keep_their_own_answers(
    server: TwilioServer, sms: TwilioChannel
) -> None:
    server.throttle_next(1, retry_after="7")
    results = await asyncio.gather(*(sms.send(text()) for _ in range(10)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, TransientChannelError)]
    assert len(refused) == 1 and refused[0].retry_after == 7
    assert sorted(r.provider_id for r in results if isinstance(r, SendReceipt)) == sorted(
        server.sids
    )
    assert server.count == 10
