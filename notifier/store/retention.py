"""Retention: personal data and raw bodies go after a while; the log's rows and counts stay.

After ``NOTIFIER_RETENTION_DAYS`` an event keeps its codes and times but not its raw body; a
notification keeps its rule, channel, status and masked recipient but not the address or the
text, and its attempts keep their outcome but not the provider's reply (which often echoes the
address); a shipment no longer updated keeps its codes but not who it was for or where it
went; a call made to Clickpost keeps its status but not the body it sent. A delivery receipt
kept for a send never recorded with its id (another application's message, most likely) goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, cast
from sqlalchemy import delete as sql_delete
from sqlalchemy import update as sql_update
from sqlmodel import col, select

from notifier.events import PENDING_STATUSES, NotificationStatus
from notifier.store.database import Database
from notifier.store.models import (
    Attempt,
    ClickpostCall,
    EarlyReceipt,
    Event,
    Notification,
    Shipment,
)

PERSONAL_KEYS = ("consumer_details", "drop_address")


@dataclass(frozen=True, kw_only=True)
class Purged:
    events: int
    notifications: int
    shipments: int
    attempts: int = 0
    clickpost_calls: int = 0
    early_receipts: int = 0


def purge(db: Database, *, before: datetime) -> Purged:
    """Clear raw bodies and personal data older than ``before``; rows stay for the counts."""
    unfinished = (*PENDING_STATUSES, NotificationStatus.SENDING)
    with db.write() as session:
        events = session.execute(
            sql_update(Event)
            .where(col(Event.received_at) < before, _non_empty(Event.raw))
            .values(raw={})
            .returning(col(Event.id))
        ).all()
        notifications = session.execute(
            sql_update(Notification)
            .where(
                col(Notification.created_at) < before,
                col(Notification.status).not_in(unfinished),
                col(Notification.recipient).is_not(None),
            )
            .values(recipient=None, subject=None, body=None, html=None)
            .returning(col(Notification.id))
        ).all()
        stale = session.exec(
            select(Shipment).where(col(Shipment.updated_at) < before, _non_empty(Shipment.consumer))
        ).all()
        for shipment in stale:
            shipment.consumer = {}
            shipment.registration = without_personal(shipment.registration)
            shipment.shipment_info = info_without_personal(shipment.shipment_info)
            session.add(shipment)
        attempts = session.execute(
            sql_update(Attempt)
            .where(col(Attempt.finished_at) < before, col(Attempt.error) != "")
            .values(error="")
            .returning(col(Attempt.id))
        ).all()
        calls = session.execute(
            sql_update(ClickpostCall)
            .where(
                col(ClickpostCall.updated_at) < before,
                col(ClickpostCall.status) != "pending",
                _non_empty(ClickpostCall.body),
            )
            .values(body={})
            .returning(col(ClickpostCall.id))
        ).all()
        receipts = session.execute(
            sql_delete(EarlyReceipt)
            .where(col(EarlyReceipt.received_at) < before)
            .returning(col(EarlyReceipt.id))
        ).all()
    return Purged(
        events=len(events), notifications=len(notifications), shipments=len(stale),
        attempts=len(attempts), clickpost_calls=len(calls), early_receipts=len(receipts),
    )  # fmt: skip


def _non_empty(column: Any) -> ColumnElement[bool]:
    """A JSON column holding more than ``{}``; compared as text, which both backends allow."""
    return cast(column, String) != "{}"


def without_personal(body: dict[str, Any]) -> dict[str, Any]:
    """An awb-register body without ``consumer_details`` and the address in shipment_info."""
    kept = {k: v for k, v in body.items() if k != "consumer_details"}
    info = kept.get("shipment_info")
    if isinstance(info, dict):
        kept["shipment_info"] = info_without_personal(info)
    return kept


def info_without_personal(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if k not in PERSONAL_KEYS}
