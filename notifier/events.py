"""The normalized vocabulary every stage after ingest speaks.

A Clickpost body becomes one of these frozen value objects at the edge
(:mod:`notifier.clickpost.models`); nothing past ingest reads raw dicts. The raw body stays
on the object for the record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Any


class ChannelKind(StrEnum):
    """The kinds of message a rule can send."""

    SMS = "sms"
    WHATSAPP = "whatsapp"
    EMAIL = "email"


class Source(StrEnum):
    """Where an update came from."""

    WEBHOOK = "webhook"
    POLL = "poll"


# Not frozen: built for every update ingested, and a frozen dataclass's __init__ costs three
# times a plain one's (docs/performance.md).
@dataclass(kw_only=True)
class Scan:
    """One tracking scan: the outer scan of a webhook, its ``latest_status``, or a polled scan.

    ``timestamp`` is aware UTC. Clickpost's own times are unreliable about their zone (the docs
    say IST, samples end in ``Z``, polling gives naive times): a naive time is read as UTC so
    that the same scan polled and pushed gets the same instant.
    """

    code: int
    description: str = ""
    status: str = ""
    location: str = ""
    remark: str = ""
    timestamp: datetime
    bucket: int | None = None

    @property
    def wall_clock(self) -> str:
        """The scan time to the second, without zone: the part every source agrees on. It is
        part of every stored identity, so it must never change: ``isoformat`` writes what
        ``strftime("%Y-%m-%dT%H:%M:%S")`` did for four-digit years, in about half the time."""
        at = self.timestamp
        if at.year < 1000:  # strftime writes such a year unpadded
            return at.strftime("%Y-%m-%dT%H:%M:%S")
        return at.isoformat()[:19]


# Not frozen: built for every update ingested, and a frozen dataclass's __init__ costs three
# times a plain one's (docs/performance.md).
@dataclass(kw_only=True)
class ShipmentUpdate:
    """A tracking update for one shipment, from a webhook or a poll.

    ``scan`` is the scan the update reports (kept for the record); ``latest`` is the shipment's
    latest status when Clickpost sent it, which is what customer messages follow (Clickpost's
    advice). Without ``additional.latest_status`` the two are the same scan.
    """

    cp_id: int
    waybill: str
    account_code: str | None = None
    scan: Scan
    latest: Scan
    notification_event_id: int | None = None
    ndr_code: int | None = None
    ndr_description: str | None = None
    order_id: str | None = None
    reference_number: str | None = None
    edd: date | None = None
    is_rvp: bool | None = None
    source: Source = Source.WEBHOOK
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def references(self) -> tuple[str, ...]:
        """Order identifiers that can stand in for an empty waybill."""
        return tuple(r for r in (self.order_id, self.reference_number) if r)

    @cached_property
    def identity(self) -> str:
        """The scan's identity: equal for a duplicate webhook and for the same scan polled.

        Built from courier, waybill (or order reference when the waybill is empty), status
        code, NDR code and the scan's wall-clock second, so differences the sources disagree on
        (zone suffix, microseconds, location spelling) do not make two events of one scan.
        """
        who = self.waybill or "ref:" + ",".join(self.references)
        scan = self.scan
        parts = (str(self.cp_id), who, str(scan.code), str(self.ndr_code), scan.wall_clock)
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


# Not frozen: built for every update ingested, and a frozen dataclass's __init__ costs three
# times a plain one's (docs/performance.md).
@dataclass(kw_only=True)
class Consumer:
    """The end customer, as the merchant registered them. Phone is raw until planning, which
    takes ``phone_e164`` instead when registration found it textable in the same region: a
    large shop's customers are too many to remember each check in memory, and phonenumbers'
    check is the costliest step of planning a message."""

    name: str = ""
    phone: str = ""
    email: str = ""
    phone_e164: str = ""
    phone_region: str = ""

    @classmethod
    def stored(cls, consumer: Mapping[str, Any] | None) -> Consumer:
        """From the shipment's ``consumer`` column (empty once erased)."""
        c = consumer or {}
        return cls(
            name=c.get("name", ""), phone=c.get("phone", ""), email=c.get("email", ""),
            phone_e164=c.get("phone_e164", ""), phone_region=c.get("phone_region", ""),
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Registration:
    """An awb-register body, normalized: the shipment and who to tell about it."""

    cp_id: int
    waybill: str
    account_code: str | None = None
    consumer: Consumer
    reference_number: str | None = None
    order_id: str | None = None
    order_type: str | None = None  # "COD" | "PREPAID", upper-cased
    delivery_type: str | None = None  # "FORWARD" | "RVP", upper-cased
    item: str | None = None
    invoice_value: Decimal | None = None
    cod_amount: Decimal | None = None
    drop_pincode: str | None = None
    drop_address: str | None = None
    order_date: datetime | None = None
    ship_date: datetime | None = None
    shipment_info: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_rvp(self) -> bool:
        return self.delivery_type == "RVP"


@dataclass(frozen=True, kw_only=True)
class Brand:
    """Who the messages come from, as templates show it (from rules.yaml ``defaults``)."""

    name: str
    support_phone: str = ""
    support_email: str = ""
    website: str = ""


class NotificationStatus(StrEnum):
    """Where a notification stands in the delivery log (design.md's list)."""

    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    RETRYING = "retrying"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


PENDING_STATUSES = (NotificationStatus.SCHEDULED, NotificationStatus.RETRYING)
