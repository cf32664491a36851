"""Who a message goes to: phones normalised to E.164, emails checked, both masked for logs.

A bad recipient is a reason in the log (``skipped: invalid phone``), never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

# Types a mobile network can deliver an SMS to. India's numbering plan marks 6-9 numbers
# MOBILE; FIXED_LINE_OR_MOBILE appears for regions that cannot tell them apart.
_TEXTABLE = {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, kw_only=True)
class Recipient:
    """A usable address, or the reason there is none."""

    address: str | None
    masked: str
    reason: str = ""

    @property
    def usable(self) -> bool:
        return self.address is not None


def phone(raw: str | None, *, region: str = "IN") -> Recipient:
    """Normalise ``raw`` (``98…``, ``098…``, ``+91 98…``, ``0091…``) to E.164, mobiles only."""
    return _phone(raw or "", region)


def checked_phone(e164: str) -> Recipient:
    """A number ``phone`` already found textable and normalised (at registration)."""
    return Recipient(address=e164, masked=mask_phone(e164))


# A shipment's phone is looked at on every update it gets, and phonenumbers' parse and checks
# are the costliest step of planning one; the answer depends on nothing but these two strings.
@lru_cache(maxsize=65_536)
def _phone(raw: str, region: str) -> Recipient:
    text = raw.strip()
    if not text:
        return Recipient(address=None, masked="", reason="no phone")
    try:
        number = phonenumbers.parse(_strip_trunk(text), region)
    except NumberParseException:
        return Recipient(address=None, masked=mask_phone(text), reason="invalid phone")
    if not phonenumbers.is_valid_number(number):
        return Recipient(address=None, masked=mask_phone(text), reason="invalid phone")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if phonenumbers.number_type(number) not in _TEXTABLE:
        return Recipient(address=None, masked=mask_phone(e164), reason="landline phone")
    return Recipient(address=e164, masked=mask_phone(e164))


def _strip_trunk(text: str) -> str:
    """``0091…`` is India's international prefix written out; phonenumbers wants ``+91…``."""
    digits = re.sub(r"[\s\-().]", "", text)
    return "+" + digits[2:] if digits.startswith("00") else text


def email(raw: str | None) -> Recipient:
    """Checked, and lowercased: mail systems treat addresses without regard to case, so one
    customer written ``Priya@Example.com`` in one order and ``priya@example.com`` in the next
    is one recipient, and an unsubscribe or preference covers both."""
    text = (raw or "").strip()
    if not text:
        return Recipient(address=None, masked="", reason="no email")
    if not _EMAIL.match(text):
        return Recipient(address=None, masked=mask_email(text), reason="invalid email")
    return Recipient(address=text.lower(), masked=mask_email(text.lower()))


def mask_phone(value: str) -> str:
    """``+919876543210`` → ``+91******3210``: enough to recognise, not enough to call."""
    value = value.strip()
    if len(value) <= 4:
        return "*" * len(value)
    keep = 3 if value.startswith("+") else 0
    return value[:keep] + "*" * (len(value) - keep - 4) + value[-4:]


def mask_email(value: str) -> str:
    """``priya.sharma@example.com`` → ``p***@example.com``."""
    local, _, domain = value.strip().partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask(value: str | None) -> str:
    """Mask whichever kind of address ``value`` is."""
    if not value:
        return ""
    return mask_email(value) if "@" in value else mask_phone(value.removeprefix("whatsapp:"))
