"""Recipients: the forms Indian phone numbers arrive in, landlines refused, masking."""

from __future__ import annotations

import pytest

from notifier import recipients


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
