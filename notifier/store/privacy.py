"""Erasure on request: ``notifier forget --phone P --email E``.

What goes, for every shipment whose consumer has that phone or email, and every notification
sent to it:

- the shipment's ``consumer`` (name, phone, email) and the personal parts of its stored
  registration and ``shipment_info`` (``consumer_details``, ``drop_address``);
- the raw bodies of its events (the codes and times stay, for the counts);
- each notification's recipient and rendered subject, text and HTML (the masked recipient,
  rule, channel and status stay); a notification still waiting is cancelled, so the customer
  gets nothing further;
- the provider's reply on each attempt (SMTP and Twilio replies echo addresses);
- ``consumer_details`` in bodies owed to Clickpost (awb-register), which then forwards none.

What stays: a suppression (channel, address, reason) the customer asked for. Erasing it would
let a later order message someone who said stop; keeping only what is needed to honour an
objection is the usual reading of the GDPR and India's DPDP Act. It holds no name or order.

Phones match on their last ten digits (an Indian mobile's national number), so ``98765 43210``,
``+91 98765 43210`` and ``098765-43210`` are one customer; emails match without case.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import String, cast, func, or_
from sqlalchemy import update as sql_update
from sqlmodel import Session, col, select

from notifier.events import PENDING_STATUSES, NotificationStatus
from notifier.store.database import Database
from notifier.store.models import (
    Attempt,
    ClickpostCall,
    Event,
    Notification,
    Shipment,
    Suppression,
)
from notifier.store.retention import info_without_personal, without_personal

ERASED = "erased on request"


@dataclass(frozen=True, kw_only=True)
class Forgotten:
    """What ``forget`` erased, as counts; ``suppressions_kept`` is what it kept on purpose."""

    shipments: int = 0
    events: int = 0
    notifications: int = 0
    cancelled: int = 0
    attempts: int = 0
    clickpost_calls: int = 0
    suppressions_kept: int = 0

    def lines(self) -> list[str]:
        return [f"{name.replace('_', ' ')}: {value}" for name, value in vars(self).items()]


@dataclass(frozen=True, kw_only=True)
class Customer:
    """Who to forget: a phone (any usual form), an email, or both."""

    phone: str | None = None
    email: str | None = None

    @property
    def phone_key(self) -> str:
        return phone_key(self.phone or "")

    @property
    def email_key(self) -> str:
        return (self.email or "").strip().lower()

    def owns(self, consumer: dict[str, Any]) -> bool:
        phone = phone_key(str(consumer.get("phone") or consumer.get("phone_number") or ""))
        email = str(consumer.get("email") or "").strip().lower()
        return bool(
            (self.phone_key and phone == self.phone_key)
            or (self.email_key and email == self.email_key)
        )

    def owns_address(self, address: str | None) -> bool:
        if not address:
            return False
        if "@" in address:
            return bool(self.email_key) and address.strip().lower() == self.email_key
        return bool(self.phone_key) and phone_key(address) == self.phone_key


def phone_key(raw: str) -> str:
    """The last ten digits (all of them when fewer): the part every written form shares."""
    return re.sub(r"\D", "", raw)[-10:]


def forget(db: Database, customer: Customer, *, now: datetime) -> Forgotten:
    """Erase ``customer``'s personal data everywhere, in one transaction; counts of what went."""
    if not (customer.phone_key or customer.email_key):
        raise ValueError("give a phone or an email to forget")
    with db.write() as session:
        shipments = _shipments(session, customer)
        notifications = _notifications(session, customer, [s.id for s in shipments if s.id])
        ids = [n.id for n in notifications if n.id is not None]
        cancelled = _cancel(session, ids, now)
        result = Forgotten(
            shipments=_erase_shipments(session, shipments, now),
            events=_erase_events(session, [s.id for s in shipments if s.id]),
            notifications=_erase_notifications(session, ids, now),
            cancelled=cancelled,
            attempts=_erase_attempts(session, ids),
            clickpost_calls=_erase_calls(session, [s.id for s in shipments if s.id]),
            suppressions_kept=_suppressions(session, customer),
        )
    return result


def _shipments(session: Session, customer: Customer) -> list[Shipment]:
    """Shipments whose consumer is this customer: narrowed in SQL on the JSON text, then
    checked exactly here (the stored phone may be written in any form)."""
    text = func.lower(cast(col(Shipment.consumer), String))
    hints = [text.contains(customer.email_key)] if customer.email_key else []
    if customer.phone_key:
        hints.append(text.contains(customer.phone_key[-4:]))
    rows = session.exec(select(Shipment).where(or_(*hints))).all()
    return [s for s in rows if customer.owns(s.consumer or {})]


def _notifications(
    session: Session, customer: Customer, shipment_ids: list[int]
) -> list[Notification]:
    """This customer's notifications: those of their shipments, and any sent to their address
    (a shipment whose details were already purged still has them)."""
    by_shipment = col(Notification.shipment_id).in_(shipment_ids)
    keys = [k for k in (customer.email_key, customer.phone_key[-4:]) if k]
    by_address = or_(*(func.lower(col(Notification.recipient)).contains(k) for k in keys))
    rows = session.exec(select(Notification).where(or_(by_shipment, by_address))).all()
    return [n for n in rows if n.shipment_id in shipment_ids or customer.owns_address(n.recipient)]


def _cancel(session: Session, ids: list[int], now: datetime) -> int:
    waiting = (*PENDING_STATUSES, NotificationStatus.SENDING)
    return len(
        session.execute(
            sql_update(Notification)
            .where(col(Notification.id).in_(ids), col(Notification.status).in_(waiting))
            .values(
                status=NotificationStatus.CANCELLED, reason=ERASED, lease_until=None, updated_at=now
            )
            .returning(col(Notification.id))
        ).all()
    )


def _erase_shipments(session: Session, shipments: Iterable[Shipment], now: datetime) -> int:
    count = 0
    for shipment in shipments:
        shipment.consumer = {}
        shipment.registration = without_personal(shipment.registration)
        shipment.shipment_info = info_without_personal(shipment.shipment_info)
        shipment.updated_at = now
        session.add(shipment)
        count += 1
    return count


def _erase_events(session: Session, shipment_ids: list[int]) -> int:
    return len(
        session.execute(
            sql_update(Event)
            .where(col(Event.shipment_id).in_(shipment_ids))
            .values(raw={})
            .returning(col(Event.id))
        ).all()
    )


def _erase_notifications(session: Session, ids: list[int], now: datetime) -> int:
    return len(
        session.execute(
            sql_update(Notification)
            .where(col(Notification.id).in_(ids))
            .values(recipient=None, subject=None, body=None, html=None, updated_at=now)
            .returning(col(Notification.id))
        ).all()
    )


def _erase_attempts(session: Session, notification_ids: list[int]) -> int:
    return len(
        session.execute(
            sql_update(Attempt)
            .where(col(Attempt.notification_id).in_(notification_ids), col(Attempt.error) != "")
            .values(error=ERASED)
            .returning(col(Attempt.id))
        ).all()
    )


def _erase_calls(session: Session, shipment_ids: list[int]) -> int:
    calls = session.exec(
        select(ClickpostCall).where(col(ClickpostCall.shipment_id).in_(shipment_ids))
    ).all()
    for call in calls:
        call.body = without_personal(call.body)
        session.add(call)
    return len(calls)


def _suppressions(session: Session, customer: Customer) -> int:
    keys = [k for k in (customer.email_key, customer.phone_key[-4:]) if k]
    near = or_(*(func.lower(col(Suppression.address)).contains(k) for k in keys))
    rows = session.exec(select(Suppression).where(near)).all()
    return sum(1 for row in rows if customer.owns_address(row.address))
