"""Dispatch: outbox files, retries, permanent failures, expiry, template failures, attempts."""

from __future__ import annotations

import email
import json
import shutil
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

from conftest import ROOT, Clock, registration, webhook

from notifier import Notifier, PermanentChannelError, Settings, TransientChannelError
from notifier.channels import Channel, OutgoingMessage, SendReceipt, build_channels
from notifier.events import ChannelKind

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)


class ScriptedChannel(Channel):
    """A channel that fails as told, then succeeds; remembers what it was asked to send."""

    def __init__(self, kind: ChannelKind, failures: list[Exception]) -> None:
        self.kind = kind
        self.failures = failures
        self.sent: list[OutgoingMessage] = []
        self.opened = 0

    async def open(self) -> None:
        self.opened += 1

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)
        return SendReceipt(provider_id=f"SM{len(self.sent):032d}")


async def test_outbox_gets_a_real_email_and_an_sms_line(
    notifier: Notifier, settings: Settings
) -> None:
    await notifier.register_shipment(registration(order_type="COD"))
    await notifier.handle_webhook(webhook(code=6, at=T0))
    assert (await notifier.dispatch_due()).counts == {"sent": 2}
    [line] = (settings.outbox_dir / "sms.jsonl").read_text().splitlines()
    sms = json.loads(line)
    assert sms["to"] == "+919876543210" and "1,299" in sms["text"]
    [eml] = (settings.outbox_dir / "email").glob("*.eml")
    mail = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert mail["To"] == "priya.sharma@example.com"
    assert mail["Message-ID"].startswith("<notification.")
    assert {p.get_content_type() for p in mail.walk()} >= {"text/plain", "text/html"}
    rows = await notifier.notifications(channel="sms")
    assert rows[0]["status"] == "sent" and rows[0]["encoding"] == "GSM-7"
    assert rows[0]["segments"] == 1 and rows[0]["recipient"] == "+91******3210"
    assert rows[0]["provider_id"].startswith("outbox:")


async def test_transient_failure_is_retried_later_and_every_attempt_logged(
    settings: Settings, clock: Clock
) -> None:
    sms = ScriptedChannel(ChannelKind.SMS, [TransientChannelError("503", retry_after=120)])
    channels = build_channels(settings) | {ChannelKind.SMS: sms}
    async with Notifier(settings, clock=clock, channels=channels) as n:
        await n.register_shipment(registration())
        clock.now = T0
        await n.handle_webhook(webhook(code=6, at=T0))
        assert (await n.dispatch_due()).counts == {"sent": 1, "retrying": 1}
        [row] = await n.notifications(channel="sms")
        assert row["status"] == "retrying" and row["due_at"] >= T0 + timedelta(seconds=120)
        assert (await n.dispatch_due()).total == 0  # not due yet
        clock.advance(minutes=3)
        assert (await n.dispatch_due()).counts == {"sent": 1}
        [row] = await n.notifications(channel="sms")
        assert row["status"] == "sent" and row["attempts"] == 2
        attempts = n.store.attempts(row["id"])
        assert [a.outcome for a in attempts] == ["transient", "sent"]
        assert len(sms.sent) == 1


async def test_permanent_failure_is_not_retried(settings: Settings, clock: Clock) -> None:
    sms = ScriptedChannel(ChannelKind.SMS, [PermanentChannelError("landline", code="21614")])
    async with Notifier(
        settings, clock=clock, channels=build_channels(settings) | {ChannelKind.SMS: sms}
    ) as n:
        await n.register_shipment(registration())
        clock.now = T0
        await n.handle_webhook(webhook(code=6, at=T0))
        await n.dispatch_due()
        [row] = await n.notifications(channel="sms")
        assert (row["status"], row["reason"]) == ("failed", "landline (code 21614)")
        clock.advance(hours=2)
        assert (await n.dispatch_due()).total == 0


async def test_gives_up_after_the_maximum_attempts(settings: Settings, clock: Clock) -> None:
    failures: list[Exception] = [TransientChannelError("timeout") for _ in range(10)]
    sms = ScriptedChannel(ChannelKind.SMS, failures)
    limited = settings.model_copy(update={"max_attempts": 3})
    async with Notifier(
        limited, clock=clock, channels=build_channels(settings) | {ChannelKind.SMS: sms}
    ) as n:
        await n.register_shipment(registration())
        clock.now = T0
        await n.handle_webhook(webhook(code=8, at=T0))
        for _ in range(4):
            await n.dispatch_due()
            clock.advance(hours=2)
        [row] = await n.notifications(channel="sms")
        assert row["status"] == "failed" and row["attempts"] == 3
        assert row["reason"] == "gave up after 3 attempts: timeout"


async def test_a_message_too_old_to_matter_expires(notifier: Notifier, clock: Clock) -> None:
    await notifier.register_shipment(registration())
    clock.now = T0
    await notifier.handle_webhook(webhook(code=6, at=T0))
    clock.advance(hours=13)  # out-for-delivery rules allow 12h
    assert (await notifier.dispatch_due()).counts == {"expired": 2}
    rows = await notifier.notifications()
    assert all(r["reason"].startswith("expired: too old") for r in rows)


async def test_a_template_failing_at_send_time_fails_only_its_message(
    tmp_path: Path, settings: Settings, clock: Clock
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", templates)
    broken = settings.model_copy(update={"templates": templates})
    async with Notifier(broken, clock=clock) as n:
        await n.register_shipment(registration())
        clock.now = T0
        await n.handle_webhook(webhook(code=6, at=T0))
        (templates / "sms" / "out_for_delivery.txt.j2").write_text(
            "Hi {{ consumer.first_name }},\n{{ shipment.no_such_field }}"
        )
        assert (await n.dispatch_due()).counts == {"failed": 1, "sent": 1}
        [row] = await n.notifications(channel="sms")
        assert row["reason"].startswith("template: sms/out_for_delivery.txt.j2:2")


async def test_a_crashed_send_is_claimed_again_after_its_lease(
    notifier: Notifier, clock: Clock
) -> None:
    await notifier.register_shipment(registration())
    clock.now = T0
    await notifier.handle_webhook(webhook(code=8, at=T0))
    # a dispatcher claims the rows and dies before sending
    jobs = notifier.store.claim_due(now=T0, limit=10, lease_until=T0 + timedelta(minutes=2))
    assert len(jobs) == 2
    assert (await notifier.dispatch_due()).total == 0  # still leased
    clock.advance(minutes=3)
    assert (await notifier.dispatch_due()).counts == {"sent": 2}
    rows = await notifier.notifications()
    assert {r["attempts"] for r in rows} == {2}


async def test_every_channel_batch_is_opened_once(settings: Settings, clock: Clock) -> None:
    sms = ScriptedChannel(ChannelKind.SMS, [])
    async with Notifier(
        settings, clock=clock, channels=build_channels(settings) | {ChannelKind.SMS: sms}
    ) as n:
        clock.now = T0
        for i in range(5):
            await n.register_shipment(registration(waybill=f"W{i}"))
            await n.handle_webhook(webhook(waybill=f"W{i}", code=8, at=T0))
        await n.dispatch_due()
        assert sms.opened == 1 and len(sms.sent) == 5
        assert len({m.notification_id for m in sms.sent}) == 5
