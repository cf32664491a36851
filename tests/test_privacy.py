"""Privacy: no phone or email in logs or metrics; retention purges bodies and texts while the
counts stay; ``notifier forget`` erases one customer everywhere and they get nothing more."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Clock, registration, webhook
from pydantic import SecretStr
from sqlalchemy import update
from sqlmodel import select

from notifier import Notifier, Settings
from notifier.channels import Channel, OutgoingMessage, SendReceipt
from notifier.cli import main
from notifier.errors import TransientChannelError
from notifier.events import ChannelKind
from notifier.logs import configure_logging
from notifier.metrics import exposition
from notifier.store.models import Attempt, ClickpostCall, Event, Notification, Shipment, Suppression

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
PHONE_FORMS = ("9876543210", "+919876543210", "98765 43210", "098765-43210")
EMAIL = "priya.sharma@example.com"
NAME = "Priya Sharma"


class EchoingChannel(Channel):
    """Fails once the way real providers do, echoing the address, then accepts."""

    def __init__(self, kind: ChannelKind) -> None:
        self.kind = kind
        self.calls = 0

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        self.calls += 1
        if self.calls == 1:
            raise TransientChannelError(f"server busy for <{message.to}>, try later")
        return SendReceipt(provider_id=f"P-{message.notification_id}")


@pytest.fixture
def clickpost(settings: Settings) -> Settings:
    """Clickpost forwarding on (a dead stand-in address), so calls owed to it are stored."""
    return settings.model_copy(
        update={"clickpost_username": "acme", "clickpost_key": SecretStr("cp-key-123456"),
                "clickpost_api_base": "http://127.0.0.1:9"}
    )  # fmt: skip


def no_personal_data(text: str) -> None:
    for needle in (*PHONE_FORMS, EMAIL, "priya.sharma"):
        assert needle not in text, f"{needle!r} leaked: {text[:2000]}"


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(json=True, level="DEBUG", stream=stream)
    yield stream
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "stream", None) is stream:
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


async def test_logs_and_metrics_carry_no_phone_or_email(
    settings: Settings, clock: Clock, captured_logs: io.StringIO
) -> None:
    channels = {kind: EchoingChannel(kind) for kind in ChannelKind}
    async with Notifier(settings, clock=clock, channels=channels) as n:
        clock.now = T0
        await n.register_shipment(registration(phone="098765 43210", email=EMAIL))
        await n.handle_webhook(webhook(code=6, at=T0))
        await n.dispatch_due()  # each channel fails once, echoing the address
        clock.advance(hours=1)
        await n.dispatch_due()
        logging.getLogger("notifier.test").warning("customer %s, %s", "+91 98765 43210", EMAIL)
        metrics = exposition(n).decode()
        log = await n.notifications()
    lines = captured_logs.getvalue()
    assert "retry at" in lines and "sent by" in lines  # the log did speak about them
    no_personal_data(lines)
    assert "notifier_notifications" in metrics and 'channel="sms"' in metrics
    no_personal_data(metrics)
    assert NAME not in metrics and "SF18399217NER" not in metrics
    assert {row["recipient"] for row in log} == {"+91******3210", "p***@example.com"}


# --- retention ---------------------------------------------------------------------------


async def _a_delivered_customer(n: Notifier, clock: Clock) -> None:
    clock.now = T0
    body = registration(email=EMAIL)
    body["shipment_info"]["drop_address"] = "Flat 302, Sai Krupa CHS, Andheri West"
    await n.register_shipment(body)
    await n.handle_webhook(webhook(code=6, at=T0))
    await n.dispatch_due()


def _rows(n: Notifier) -> dict[str, list[Any]]:
    with n.db.read() as session:
        return {
            "events": list(session.exec(select(Event)).all()),
            "notifications": list(session.exec(select(Notification)).all()),
            "shipments": list(session.exec(select(Shipment)).all()),
            "attempts": list(session.exec(select(Attempt)).all()),
            "calls": list(session.exec(select(ClickpostCall)).all()),
        }


async def test_retention_purges_bodies_texts_and_replies_but_counts_stay(
    clickpost: Settings, clock: Clock
) -> None:
    channels = {kind: EchoingChannel(kind) for kind in ChannelKind}
    async with Notifier(clickpost, clock=clock, channels=channels) as n:
        await _a_delivered_customer(n, clock)
        clock.advance(hours=1)
        await n.dispatch_due()
        with n.db.write() as session:  # Clickpost took the registration meanwhile
            session.execute(update(ClickpostCall).values(status="done"))
        before = _rows(n)
        stats_before = n.log.stats(now=clock.now).by_status
        assert before["attempts"] and any(a.error for a in before["attempts"])
        assert before["calls"] and before["calls"][0].body["consumer_details"]
        assert before["shipments"][0].shipment_info["drop_address"]

        fresh = await n.purge_expired_data(days=90)  # nothing is 90 days old yet
        assert (fresh.events, fresh.notifications, fresh.attempts) == (0, 0, 0)
        clock.advance(days=91)
        purged = await n.purge_expired_data(days=90)
        after = _rows(n)
        stats_after = n.log.stats(now=clock.now).by_status
    assert purged.events == 1 and purged.notifications == 2 and purged.shipments == 1
    assert purged.attempts >= 2 and purged.clickpost_calls == 1
    assert {k: len(v) for k, v in after.items()} == {k: len(v) for k, v in before.items()}
    assert stats_after == stats_before  # the counts stay
    text = json.dumps(
        {k: [row.model_dump(mode="json") for row in v] for k, v in after.items()}, default=str
    )
    no_personal_data(text)
    assert "Sai Krupa" not in text and NAME not in text
    assert all(n.body is None and n.subject is None for n in after["notifications"])
    assert all(n.recipient_masked for n in after["notifications"])


# --- forget ------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    values = {
        "NOTIFIER_DATABASE_URL": database_url,
        "NOTIFIER_RULES": str(ROOT / "rules.yaml"),
        "NOTIFIER_TEMPLATES": str(ROOT / "templates"),
        "NOTIFIER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "NOTIFIER_QUIET_HOURS": "off",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return Settings()


def test_forget_erases_one_customer_everywhere(
    env: Settings, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run through the CLI (its own event loop), so the test itself is synchronous."""
    clock.now = datetime.now(UTC)
    asyncio.run(_two_customers_and_a_waiting_message(env, clock))
    code = main(["forget", "--phone", "098765 43210", "--email", EMAIL.upper()])
    out, _ = capsys.readouterr()
    assert code == 0
    counts = dict(
        (k.strip(), int(v)) for k, v in (line.split(":") for line in out.splitlines()[1:] if
                                         line.strip() and not line.strip().startswith("("))
    )  # fmt: skip
    assert counts["shipments"] == 2 and counts["events"] == 2
    assert counts["notifications"] == 4 and counts["cancelled"] == 1  # 2 sent, 1 no email
    assert counts["suppressions kept"] == 1
    no_personal_data(out)
    asyncio.run(_nothing_of_her_is_left(env, clock))


async def _two_customers_and_a_waiting_message(env: Settings, clock: Clock) -> None:
    now = clock.now
    async with Notifier(env, clock=clock) as n:
        for waybill, phone, email in (("PRIYA-1", "9876543210", EMAIL),
                                      ("PRIYA-2", "+91 98765 43210", ""),
                                      ("OTHER-1", "9123456780", "ravi@example.com")):  # fmt: skip
            await n.register_shipment(registration(waybill=waybill, phone=phone, email=email,
                                                   reference_number=waybill))  # fmt: skip
        await n.handle_webhook(webhook(waybill="PRIYA-1", code=6, at=now))
        await n.handle_webhook(webhook(waybill="OTHER-1", code=6, at=now))
        await n.dispatch_due()
        n.queue.suppress("whatsapp", "+919876543210", "replied STOP", now=now)
        # a message still waiting when she asks to be forgotten
        await n.handle_webhook(webhook(waybill="PRIYA-2", code=6, at=now))


async def _nothing_of_her_is_left(env: Settings, clock: Clock) -> None:
    async with Notifier(env, clock=clock) as n:
        rows = _rows(n)
        mine = [s for s in rows["shipments"] if s.waybill.startswith("PRIYA")]
        other = next(s for s in rows["shipments"] if s.waybill == "OTHER-1")
        assert all(s.consumer == {} and "consumer_details" not in s.registration for s in mine)
        assert other.consumer["phone"] == "9123456780"  # nobody else is touched
        mine_ids = {s.id for s in mine}
        for row in rows["notifications"]:
            if row.shipment_id in mine_ids:
                assert row.recipient is None and row.body is None
            else:
                assert row.recipient is not None
        assert all(e.raw == {} for e in rows["events"] if e.shipment_id in mine_ids)
        waiting = [r for r in rows["notifications"] if r.reason == "erased on request"]
        assert len(waiting) == 1 and waiting[0].status == "cancelled"
        with n.db.read() as session:  # the opt-out stays, so she is not messaged again
            assert session.exec(select(Suppression)).first() is not None
        # nothing further: a later update for her shipment sends nothing
        clock.advance(minutes=5)
        later = await n.handle_webhook(webhook(waybill="PRIYA-1", code=8, at=clock.now))
        assert all(s.status == "skipped" for s in later.notifications)
        assert (await n.dispatch_due()).counts.get("sent", 0) == 0


def test_forget_needs_a_phone_or_an_email(
    env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["forget"]) == 1
    assert "--phone" in capsys.readouterr().err


async def test_forget_in_the_embedded_api_and_an_unknown_customer(notifier: Notifier) -> None:
    forgotten = await notifier.forget(email="nobody@example.com")
    assert forgotten.shipments == forgotten.notifications == 0


def test_debug_cli_output_masks_personal_data(
    env: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    body = tmp_path / "reg.json"
    body.write_text(json.dumps(registration(phone="9876543210", email=EMAIL)))
    assert main(["register", str(body), "--debug"]) == 0
    assert main(["forget", "--email", EMAIL, "--debug"]) == 0
    out, err = capsys.readouterr()
    no_personal_data(out + err)
    logging.getLogger().setLevel(logging.WARNING)


def test_privacy_doc_exists_and_says_what_is_kept() -> None:
    doc = (ROOT / "docs" / "privacy.md").read_text()
    for words in ("NOTIFIER_RETENTION_DAYS", "notifier forget", "unsubscribe", "suppression"):
        assert words in doc
