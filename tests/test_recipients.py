"""Recipients: the forms Indian phone numbers arrive in, landlines refused, masking."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import ROOT, Clock, registration, webhook

from notifier import Notifier, Settings, recipients


@pytest.mark.parametrize(
    "raw",
    [
        "9876543210",
        "09876543210",
        "919876543210",
        "+91 98765 43210",
        "0091-98765-43210",
        " +91-9876543210 ",
    ],
)
def test_usual_indian_forms_normalise_to_e164(raw: str) -> None:
    result = recipients.phone(raw)
    assert (result.address, result.reason) == ("+919876543210", "")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "no phone"),
        (None, "no phone"),
        ("12345", "invalid phone"),
        ("5876543210", "landline phone"),
        ("98765", "invalid phone"),
        ("not a number", "invalid phone"),
        ("080-2345-6789", "landline phone"),
        ("0522-2345678", "landline phone"),
    ],
)
def test_unusable_phones_give_a_reason_not_an_exception(raw: str | None, reason: str) -> None:
    result = recipients.phone(raw)
    assert result.address is None and result.reason == reason
    assert not result.usable


def test_other_regions_when_configured() -> None:
    assert recipients.phone("07400 123456", region="GB").address == "+447400123456"


@pytest.mark.parametrize(
    ("raw", "address", "reason"),
    [
        ("priya@example.com", "priya@example.com", ""),
        (" Priya.Sharma@Example.COM ", "priya.sharma@example.com", ""),
        ("", None, "no email"),
        ("priya@", None, "invalid email"),
        ("a b@example.com", None, "invalid email"),
    ],
)
def test_emails(raw: str, address: str | None, reason: str) -> None:
    result = recipients.email(raw)
    assert (result.address, result.reason) == (address, reason)


def test_masks_hide_all_but_enough_to_recognise() -> None:
    assert recipients.mask("+919876543210") == "+91******3210"
    assert recipients.mask("whatsapp:+919876543210") == "+91******3210"
    assert recipients.mask("priya.sharma@example.com") == "p***@example.com"
    assert recipients.phone("9876543210").masked == "+91******3210"
    assert "9876543210" not in recipients.phone("9876543210").masked


# -- checked once, at registration --------------------------------------------------------------

NOON = datetime(2026, 11, 26, 5, 30, tzinfo=UTC)  # 11:00 IST


def stored_consumer(n: Notifier) -> dict[str, str]:
    with n.db.reader.connect() as conn:
        (value,) = conn.exec_driver_sql("SELECT consumer FROM shipment").one()
    return dict(json.loads(value) if isinstance(value, str) else value)  # PostgreSQL: a dict


async def test_a_phone_checked_at_registration_is_not_checked_again(
    notifier: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    await notifier.register_shipment(registration(phone="098765 43210"))
    consumer = stored_consumer(notifier)
    assert (consumer["phone"], consumer["phone_e164"], consumer["phone_region"]) == (
        "098765 43210", "+919876543210", "IN"
    )  # fmt: skip

    def no_second_check(raw: str, region: str) -> recipients.Recipient:
        raise AssertionError(f"{raw!r} checked again")

    monkeypatch.setattr(recipients, "_phone", no_second_check)
    outcome = await notifier.handle_webhook(webhook(code=6, at=NOON))
    (sms,) = [s for s in outcome.notifications if s.channel == "sms"]
    assert (sms.status, sms.reason) == ("scheduled", "")
    (row,) = await notifier.notifications(channel="sms")
    assert row["recipient"] == "+91******3210"


async def test_a_number_not_textable_at_registration_is_checked_at_planning(
    notifier: Notifier,
) -> None:
    await notifier.register_shipment(registration(phone="080 4567 8900"))  # a landline
    assert "phone_e164" not in stored_consumer(notifier)
    outcome = await notifier.handle_webhook(webhook(code=6, at=NOON))
    (sms,) = [s for s in outcome.notifications if s.channel == "sms"]
    assert (sms.status, sms.reason) == ("skipped", "landline phone")


async def test_a_phone_checked_for_another_region_is_checked_again(
    settings: Settings, clock: Clock, tmp_path: Path
) -> None:
    async with Notifier(settings, clock=clock) as n:
        await n.register_shipment(registration(phone="9876543210"))
    british = tmp_path / "rules.yaml"
    text = (ROOT / "rules.yaml").read_text()
    british.write_text(text.replace("phone_region: IN", "phone_region: GB"))
    async with Notifier(settings.model_copy(update={"rules": british}), clock=clock) as n:
        outcome = await n.handle_webhook(webhook(code=6, at=NOON))
    (sms,) = [s for s in outcome.notifications if s.channel == "sms"]
    assert (sms.status, sms.reason) == ("skipped", "invalid phone")
