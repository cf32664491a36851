"""Dispatch: outbox files, retries, permanent failures, expiry, template failures, attempts."""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import logging
import shutil
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Clock, registration, webhook
from pydantic import SecretStr
from sqlalchemy import text
from twilio.request_validator import RequestValidator

from notifier import Notifier, PermanentChannelError, Settings, TransientChannelError
from notifier.channels import Channel, OutgoingMessage, SendReceipt, build_channels
from notifier.dispatch import Dispatcher
from notifier.errors import OptedOutError, StoreUnavailableError
from notifier.events import ChannelKind
from notifier.health import Refusal
from notifier.store import queue

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
        attempts = n.queue.attempts(row["id"])
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


async def test_gives_up_after_the_maximum_attempts(
    settings: Settings, clock: Clock, tmp_path: Path
) -> None:
    failures: list[Exception] = [TransientChannelError("timeout") for _ in range(10)]
    row, _ = await retried_sms(settings, clock, tmp_path, failures, rounds=4)
    assert row["status"] == "failed" and row["attempts"] == 3
    assert row["reason"] == "gave up after 3 attempts: timeout"


async def test_a_provider_outage_does_not_use_up_the_attempts(
    settings: Settings, clock: Clock, tmp_path: Path
) -> None:
    """SMTP down or Twilio answering 5xx for longer than max_attempts retries take: the
    message waits the outage out (within max_age) instead of ending failed."""
    down: list[Exception] = [
        TransientChannelError("cannot reach Twilio", outage=True) for _ in range(6)
    ]
    row, outcomes = await retried_sms(settings, clock, tmp_path, down, rounds=8)
    assert row["status"] == "sent" and row["attempts"] == 7
    assert outcomes == ["transient"] * 6 + ["sent"]


async def retried_sms(
    settings: Settings, clock: Clock, tmp_path: Path, failures: list[Exception], *, rounds: int
) -> tuple[dict[str, Any], list[str]]:
    """A delivered update's SMS through a channel that fails as told, with rules allowing 3
    attempts, dispatched ``rounds`` times two hours apart: its log row and attempt outcomes."""
    sms = ScriptedChannel(ChannelKind.SMS, failures)
    rules = tmp_path / "rules.yaml"
    text = (ROOT / "rules.yaml").read_text()
    rules.write_text(
        text.replace("  phone_region: IN\n", "  phone_region: IN\n  retry: {max_attempts: 3}\n")
    )
    limited = settings.model_copy(update={"rules": rules})
    async with Notifier(
        limited, clock=clock, channels=build_channels(settings) | {ChannelKind.SMS: sms}
    ) as n:
        await n.register_shipment(registration())
        clock.now = T0
        await n.handle_webhook(webhook(code=8, at=T0))
        for _ in range(rounds):
            await n.dispatch_due()
            clock.advance(hours=2)
        [row] = await n.notifications(channel="sms")
        return row, [a.outcome for a in n.queue.attempts(row["id"])]


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
    jobs = notifier.queue.claim_due(now=T0, limit=10, lease_until=T0 + timedelta(minutes=2))
    assert len(jobs) == 2
    assert (await notifier.dispatch_due()).total == 0  # still leased
    clock.advance(minutes=3)
    assert (await notifier.dispatch_due()).counts == {"sent": 2}
    rows = await notifier.notifications()
    assert {r["attempts"] for r in rows} == {2}


async def _shipped(n: Notifier, count: int, **fields: Any) -> None:
    """``count`` registered shipments (W0, W1 …), each just out for delivery at T0."""
    for i in range(count):
        await n.register_shipment(registration(waybill=f"W{i}", **fields))
        await n.handle_webhook(webhook(waybill=f"W{i}", code=8, at=T0))


async def test_every_channel_batch_is_opened_once(settings: Settings, clock: Clock) -> None:
    sms = ScriptedChannel(ChannelKind.SMS, [])
    async with Notifier(
        settings, clock=clock, channels=build_channels(settings) | {ChannelKind.SMS: sms}
    ) as n:
        clock.now = T0
        await _shipped(n, 5)
        await n.dispatch_due()
        assert sms.opened == 1 and len(sms.sent) == 5
        assert len({m.notification_id for m in sms.sent}) == 5


async def test_gives_up_when_retrying_past_the_maximum_age(
    settings: Settings, clock: Clock, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    text = (ROOT / "rules.yaml").read_text()
    rules.write_text(
        text.replace("  phone_region: IN\n", "  phone_region: IN\n  retry: {max_age: 10m}\n")
    )
    sms = ScriptedChannel(ChannelKind.SMS, [TransientChannelError("busy") for _ in range(5)])
    async with Notifier(
        settings.model_copy(update={"rules": rules}),
        clock=clock,
        channels=build_channels(settings) | {ChannelKind.SMS: sms},
    ) as n:
        clock.now = T0
        await n.register_shipment(registration())
        await n.handle_webhook(webhook(code=8, at=T0))
        for _ in range(6):
            await n.dispatch_due()
            clock.advance(minutes=5)
        [row] = await n.notifications(channel="sms")
        assert row["status"] == "failed"
        assert row["reason"].startswith("gave up: still failing 10m after it was planned")


async def test_recipient_who_replied_stop_is_suppressed_from_then_on(
    settings: Settings, clock: Clock
) -> None:
    sms = ScriptedChannel(ChannelKind.SMS, [OptedOutError("replied STOP", code="21610")])
    async with Notifier(
        settings, clock=clock, channels=build_channels(settings) | {ChannelKind.SMS: sms}
    ) as n:
        clock.now = T0
        await n.register_shipment(registration())
        await n.register_shipment(registration(waybill="SECOND"))
        await n.handle_webhook(webhook(code=6, at=T0))
        await n.dispatch_due()
        [row] = await n.notifications(channel="sms")
        assert (row["status"], row["reason"]) == ("skipped", "opted out: replied STOP (code 21610)")
        # the same phone on another shipment: planned as skipped, never handed to the provider
        later = await n.handle_webhook(webhook(waybill="SECOND", code=8, at=T0))
        sms_plan = next(s for s in later.notifications if s.channel == "sms")
        assert sms_plan.status == "skipped" and sms_plan.reason.startswith("opted out")
        email_plan = next(s for s in later.notifications if s.channel == "email")
        assert email_plan.status == "scheduled"
        await n.dispatch_due()
        assert sms.sent == []


async def test_opt_out_stops_a_message_already_claimed(notifier: Notifier, clock: Clock) -> None:
    clock.now = T0
    await notifier.register_shipment(registration())
    await notifier.handle_webhook(webhook(code=8, at=T0))
    notifier.queue.suppress("sms", "+919876543210", "replied STOP", now=T0)
    assert (await notifier.dispatch_due()).counts == {"sent": 1}  # the email
    [row] = await notifier.notifications(channel="sms")
    assert (row["status"], row["reason"]) == ("skipped", "opted out: replied STOP")


async def test_the_provider_slot_is_free_while_the_attempt_is_recorded(
    settings: Settings, clock: Clock
) -> None:
    """With one slot, the next message goes to the provider while the previous one's attempt
    is still being written: recording does not hold up sending, and then batches."""
    sms = ScriptedChannel(ChannelKind.SMS, [])
    one_slot = settings.model_copy(update={"channel_concurrency": 1})
    async with Notifier(
        one_slot, clock=clock, channels=build_channels(one_slot) | {ChannelKind.SMS: sms}
    ) as n:
        clock.now = T0
        await _shipped(n, 3)
        record = n.dispatcher._finishes._commit
        sent_meanwhile: list[int] = []

        def slow_record(finishes: Any) -> Any:
            deadline = time.monotonic() + 5
            while len(sms.sent) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            sent_meanwhile.append(len(sms.sent))
            return record(finishes)

        n.dispatcher._finishes._commit = slow_record
        assert (await n.dispatch_due()).counts == {"sent": 6}  # 3 SMS, 3 emails
        assert sent_meanwhile[0] == 3


class SlowFirstChannel(ScriptedChannel):
    """A provider so slow on its first message that the batch's other claims run out of lease
    meanwhile; when it answers, ``during`` runs (another daemon's claim, say)."""

    def __init__(self, clock: Clock, took: timedelta) -> None:
        super().__init__(ChannelKind.SMS, [])
        self.clock, self.took = clock, took
        self.during: list[Any] = []

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        if not self.sent:
            self.clock.now += self.took
            for step in self.during:
                step()
        return await super().send(message)


@contextlib.asynccontextmanager
async def _three_sms_one_slot(
    settings: Settings, clock: Clock, took: timedelta
) -> AsyncIterator[tuple[Notifier, SlowFirstChannel]]:
    """Three SMS due at T0 (no emails), one provider slot, the first send taking ``took``."""
    sms = SlowFirstChannel(clock, took=took)
    one_slot = settings.model_copy(update={"channel_concurrency": 1})
    async with Notifier(
        one_slot, clock=clock, channels=build_channels(one_slot) | {ChannelKind.SMS: sms}
    ) as n:
        clock.now = T0
        await _shipped(n, 3, email="")
        yield n, sms


async def test_a_send_whose_lease_ran_out_while_it_waited_is_given_back_not_sent(
    settings: Settings, clock: Clock
) -> None:
    """One slot, three SMS claimed together, the first takes longer than the lease. Another
    daemon sharing the database claims all three meanwhile (their lease ran out). The first was
    with the provider already (the lease's one window); the two others must not go out from
    here too, nor be given back: they are the other daemon's now."""
    took = timedelta(seconds=settings.send_lease_seconds + 1)
    async with _three_sms_one_slot(settings, clock, took) as (n, sms):
        rival: list[queue.Job] = []
        sms.during.append(lambda: rival.extend(
            n.queue.claim_due(now=clock.now, limit=10, lease_until=clock.now + timedelta(
                minutes=2), channel="sms")))  # fmt: skip
        report = await n.dispatch_due()
        assert report.counts == {"sent": 1, "given back": 2}
        assert len(rival) == 3 and len(sms.sent) == 1
        rows = await n.notifications(channel="sms")
        assert {r["id"] for r in rows} == {job.id for job in rival}
        assert {(r["status"], r["attempts"]) for r in rows} == {("sending", 2)}  # the rival's


async def test_a_send_given_back_goes_out_on_the_next_claim_as_its_first_attempt(
    settings: Settings, clock: Clock
) -> None:
    took = timedelta(seconds=settings.send_lease_seconds * 0.8)
    async with _three_sms_one_slot(settings, clock, took) as (n, sms):
        assert (await n.dispatch_due()).counts == {"sent": 1, "given back": 2}
        back = await n.notifications(channel="sms", status="scheduled")
        assert len(back) == 2 and {r["attempts"] for r in back} == {0}
        assert all(r["reason"].startswith("not sent yet: its claim had 24s of its lease left")
                   for r in back)  # fmt: skip
        assert (await n.dispatch_due()).counts == {"sent": 2}
        rows = await n.notifications(channel="sms")
        assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 1)] * 3
        assert len({m.notification_id for m in sms.sent}) == 3 == len(sms.sent)


class HangingChannel(ScriptedChannel):
    def __init__(self, kind: ChannelKind) -> None:
        super().__init__(kind, [])
        self.release = asyncio.Event()

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        await self.release.wait()
        return await super().send(message)


async def test_a_slow_provider_does_not_hold_up_other_channels(
    settings: Settings, clock: Clock
) -> None:
    sms = HangingChannel(ChannelKind.SMS)
    async with Notifier(
        settings, clock=clock, channels=build_channels(settings) | {ChannelKind.SMS: sms}
    ) as n:
        clock.now = T0
        await _shipped(n, 3)
        running = asyncio.create_task(n.dispatch_due())
        for _ in range(200):
            if len(await n.notifications(channel="email", status="sent")) == 3:
                break
            await asyncio.sleep(0.02)
        assert len(await n.notifications(channel="email", status="sent")) == 3
        assert {r["status"] for r in await n.notifications(channel="sms")} == {"sending"}
        sms.release.set()
        assert (await running).counts == {"sent": 6}


class DownChannel(ScriptedChannel):
    async def open(self) -> None:
        raise TransientChannelError("connection refused")


async def test_a_provider_that_cannot_be_reached_retries_every_message(
    settings: Settings, clock: Clock
) -> None:
    email = DownChannel(ChannelKind.EMAIL, [])
    async with Notifier(
        settings, clock=clock, channels=build_channels(settings) | {ChannelKind.EMAIL: email}
    ) as n:
        clock.now = T0
        await n.register_shipment(registration())
        await n.handle_webhook(webhook(code=8, at=T0))
        assert (await n.dispatch_due()).counts == {"sent": 1, "retrying": 1}
        [row] = await n.notifications(channel="email")
        assert (row["status"], row["reason"]) == ("retrying", "connection refused")
        assert [a.outcome for a in n.queue.attempts(row["id"])] == ["transient"]


async def test_whatsapp_approved_template_variables_are_rendered(
    settings: Settings, clock: Clock, tmp_path: Path
) -> None:
    sid = "HX" + "ab" * 16
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\ndefaults: {brand: {name: Acme Store}}\nrules:\n  - name: delivered\n"
        "    when: {clickpost_status_code: [8]}\n    send:\n"
        f"      - channel: whatsapp\n        template: delivered\n        content_sid: {sid}\n"
        '        content_variables: {"1": "consumer.first_name", "2": "shipment.order_id"}\n'
    )
    whatsapp = ScriptedChannel(ChannelKind.WHATSAPP, [])
    async with Notifier(
        settings.model_copy(update={"rules": rules}),
        clock=clock,
        channels=build_channels(settings) | {ChannelKind.WHATSAPP: whatsapp},
    ) as n:
        clock.now = T0
        await n.register_shipment(registration())
        await n.handle_webhook(webhook(code=8, at=T0))
        await n.dispatch_due()
    [message] = whatsapp.sent
    assert message.content_sid == sid
    assert message.content_variables == {"1": "Priya", "2": "ACME-100231"}
    assert message.to == "+919876543210" and "delivered" in message.text


# -- receipts that beat the send's record ------------------------------------------------------


def _callback(n: Notifier, sid: str, status: str) -> tuple[dict[str, str], str]:
    """Twilio's status callback for ``sid``, signed as Twilio signs it."""
    params = {"MessageSid": sid, "MessageStatus": status, "To": "+919876543210"}
    url = f"{n.settings.public_url}/callbacks/twilio/status"
    return params, RequestValidator("tw-token").compute_signature(url, params)


def _with_twilio_callbacks(settings: Settings) -> Settings:
    """Settings under which Twilio's status callbacks are checked (and _callback signs)."""
    return settings.model_copy(
        update={"twilio_auth_token": SecretStr("tw-token"), "public_url": "https://n.example"}
    )


@contextlib.asynccontextmanager
async def _one_sms_due(settings: Settings, clock: Clock) -> AsyncIterator[Notifier]:
    """A notifier with one SMS due now (the customer has no email), sent by a ScriptedChannel."""
    channels = build_channels(settings) | {ChannelKind.SMS: ScriptedChannel(ChannelKind.SMS, [])}
    async with Notifier(settings, clock=clock, channels=channels) as n:
        await n.register_shipment(registration(email=""))
        clock.now = T0
        await n.handle_webhook(webhook(code=6, at=T0))
        yield n


class CallbackFirstChannel(ScriptedChannel):
    """Twilio accepting a message, and its "delivered" callback reaching notifier before the
    dispatcher has written the message id (a busy or locked database makes that window long)."""

    def __init__(self, engine: list[Notifier]) -> None:
        super().__init__(ChannelKind.SMS, [])
        self.engine = engine
        self.while_sending: list[int | None] = []

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        receipt = await super().send(message)
        n = self.engine[0]
        callback = _callback(n, receipt.provider_id, "delivered")
        self.while_sending.append(await n.handle_twilio_status(*callback))
        return receipt


async def test_a_receipt_before_the_send_is_recorded_is_applied_once_it_is(
    settings: Settings, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    twilio = _with_twilio_callbacks(settings)
    engine: list[Notifier] = []
    sms = CallbackFirstChannel(engine)
    channels = build_channels(twilio) | {ChannelKind.SMS: sms}
    async with Notifier(twilio, clock=clock, channels=channels) as n:
        engine.append(n)
        await n.register_shipment(registration())
        clock.now = T0
        await n.handle_webhook(webhook(code=6, at=T0))
        with caplog.at_level(logging.INFO, logger="notifier"):
            assert (await n.dispatch_due()).counts == {"sent": 2}
        assert sms.while_sending == [None]  # nothing to move yet: the id was not written
        assert "receipt delivered for SM" in caplog.text
        assert "kept until the send is recorded" in caplog.text
        [row] = await n.notifications(channel="sms")
        assert row["status"] == "delivered" and row["provider_id"] == f"SM{1:032d}"
        with n.db.read() as session:  # applied, so no longer kept
            assert session.execute(text("SELECT count(*) FROM earlyreceipt")).scalar() == 0
        # A receipt older than what is known is not kept for later: it is simply old.
        assert await n.handle_twilio_status(*_callback(n, row["provider_id"], "failed")) is None
        # One for a message notifier never sent (another application on the account) is kept
        # until retention clears it.
        assert await n.handle_twilio_status(*_callback(n, "SM" + "f" * 32, "delivered")) is None
        with n.db.read() as session:
            kept = session.execute(text("SELECT provider_id, status FROM earlyreceipt")).all()
        assert [tuple(r) for r in kept] == [("SM" + "f" * 32, "delivered")]
        clock.now = T0 + timedelta(days=91)
        assert (await n.purge_expired_data(days=90)).early_receipts == 1


async def test_a_receipt_while_its_send_is_being_recorded_is_not_left_behind(
    settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receipt comes while another transaction is writing its send's id (on PostgreSQL,
    another daemon's): it must be applied, not kept for a record already being written. The
    send's record is stopped just before it looks for kept receipts; the receipt gets a
    second to get through, then the record goes on. On PostgreSQL both take an advisory lock
    on the id (without it the receipt saw no send, was kept, and stayed kept); SQLite runs
    one write transaction at a time."""
    twilio = _with_twilio_callbacks(settings)
    reached, go = threading.Event(), threading.Event()
    original = queue._apply_early_receipts

    def pausing(*args: Any) -> None:
        reached.set()
        go.wait(30)
        original(*args)

    monkeypatch.setattr(queue, "_apply_early_receipts", pausing)
    async with _one_sms_due(twilio, clock) as n:
        dispatching = asyncio.create_task(n.dispatch_due())
        try:
            assert await asyncio.to_thread(reached.wait, 10)
            receipt = asyncio.create_task(
                n.handle_twilio_status(*_callback(n, f"SM{1:032d}", "delivered"))
            )
            await asyncio.sleep(1)
        finally:
            go.set()
        assert (await dispatching).counts == {"sent": 1}
        assert await receipt is not None  # applied to the recorded send
        [row] = await n.notifications(channel="sms")
        assert row["status"] == "delivered"
        with n.db.read() as session:
            assert session.execute(text("SELECT count(*) FROM earlyreceipt")).scalar() == 0


async def test_a_send_still_being_recorded_is_not_claimed_again_by_its_own_daemon(
    settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider took the message; recording it waits for a locked database past the lease;
    meanwhile a webhook wakes another dispatch run. That run must not claim the row whose
    lease ran out and send the message again: its outcome is in this process's hands."""
    real = queue.Queue.finish_many
    calls: list[int] = []

    def locked_twice(self: queue.Queue, finishes: Any) -> list[bool]:
        calls.append(len(finishes))
        if len(calls) <= 2:
            raise StoreUnavailableError("database unavailable: database is locked")
        return real(self, finishes)

    monkeypatch.setattr(queue.Queue, "finish_many", locked_twice)
    async with _one_sms_due(settings, clock) as n:
        sms = n.channels[ChannelKind.SMS]
        assert isinstance(sms, ScriptedChannel)
        first = asyncio.create_task(n.dispatch_due())
        while not calls:  # sent, and its record refused once: held, retried in 0.5 s
            await asyncio.sleep(0.01)
        clock.now = T0 + timedelta(seconds=n.settings.send_lease_seconds + 1)  # lease ran out
        assert (await n.dispatch_due()).counts == {}
        assert (await first).counts == {"sent": 1}
        assert len(sms.sent) == 1
        [row] = await n.notifications(channel="sms")
        assert row["status"] == "sent" and row["attempts"] == 1


async def test_a_send_whose_record_is_refused_makes_the_daemon_not_ready_until_stored(
    settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher's records are writes like any other: while they are refused (a full
    disk), /readyz must not say 200 just because no webhook came to be refused."""
    real = queue.Queue.finish_many
    engine: list[Notifier] = []
    seen: list[object] = []

    def full_once(self: queue.Queue, finishes: Any) -> list[bool]:
        if not seen:
            seen.append(None)
            raise StoreUnavailableError("database unavailable: database or disk is full")
        seen.append(engine[0].refusal())  # the retry, before it is stored
        return real(self, finishes)

    monkeypatch.setattr(queue.Queue, "finish_many", full_once)
    async with _one_sms_due(settings, clock) as n:
        engine.append(n)
        assert (await n.dispatch_due()).counts == {"sent": 1}
        [_, refusal] = seen
        assert isinstance(refusal, Refusal) and refusal.what == "record of a send"
        assert refusal.reason == "database or disk is full"
        assert n.refusal() is None  # stored since


async def test_a_refused_claim_is_told_but_a_claim_that_works_clears_nothing(
    notifier: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claims run every second and mostly find nothing due, writing nothing: they must not
    clear a refusal (a full disk would look fixed each second), only report their own."""
    notifier.health.refused("webhook", StoreUnavailableError("database or disk is full"))
    assert (await notifier.dispatch_due()).counts == {}  # nothing due: the claim works
    assert notifier.refusal() is not None and notifier.refusal().what == "webhook"

    def locked(*args: object, **kwargs: object) -> None:
        raise StoreUnavailableError("database unavailable: database is locked")

    monkeypatch.setattr(notifier.queue, "claim_due", locked)
    with pytest.raises(StoreUnavailableError):
        await notifier.dispatch_due()
    refusal = notifier.refusal()
    assert refusal is not None and refusal.what == "claim of due sends"
    assert refusal.reason == "database is locked by another writer"


async def test_a_run_ends_only_when_every_channel_has_ended(
    notifier: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One channel's claim meets a locked database while another still has sends out: the run
    fails, but only once the other has finished, so the next run cannot overlap it."""
    finished: list[ChannelKind] = []

    async def drain(self: Dispatcher, kind: ChannelKind, *_: Any) -> None:
        if kind is ChannelKind.EMAIL:
            raise StoreUnavailableError("database unavailable: database is locked")
        await asyncio.sleep(0.3)
        finished.append(kind)

    monkeypatch.setattr(Dispatcher, "_drain", drain)
    with pytest.raises(StoreUnavailableError, match="locked"):
        await notifier.dispatch_due()
    assert ChannelKind.SMS in finished
