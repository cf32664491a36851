"""The delivery log, as the API, the CLI and the console read it: masked, never the full address."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func
from sqlmodel import col, select

from notifier import recipients
from notifier.events import PENDING_STATUSES
from notifier.store.database import Database
from notifier.store.models import ClickpostCall, Event, Notification, Shipment


class DeliveryLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def replay_source(self, since: datetime | None = None) -> ReplaySource:
        """Stored updates of registered shipments, oldest first, and what was planned."""
        return _replay_source(self.db, since)

    def stats(self, *, now: datetime) -> LogStats:
        """Counts for metrics and the dashboard: by channel, rule, status; the due queue."""
        return _stats(self.db, now)

    def notifications(
        self,
        *,
        waybill: str | None = None,
        status: str | None = None,
        channel: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        query = select(Notification, Shipment).join(
            Shipment, col(Notification.shipment_id) == col(Shipment.id)
        )
        filters: list[ColumnElement[bool]] = []
        if waybill:
            filters.append(col(Shipment.waybill) == waybill)
        if status:
            filters.append(col(Notification.status) == status)
        if channel:
            filters.append(col(Notification.channel) == channel)
        if since:
            filters.append(col(Notification.created_at) >= since)
        query = query.where(*filters).order_by(col(Notification.id).desc()).limit(limit)
        with self.db.read() as session:
            return [log_entry(n, s) for n, s in session.exec(query).all()]

    def shipment_detail(self, cp_id: int, waybill: str) -> dict[str, Any] | None:
        with self.db.read() as session:
            shipment = session.exec(
                select(Shipment).where(
                    col(Shipment.cp_id) == cp_id, col(Shipment.waybill) == waybill
                )
            ).first()
            if shipment is None:
                return None
            events = session.exec(
                select(Event).where(col(Event.shipment_id) == shipment.id).order_by(col(Event.id))
            ).all()
            sent = session.exec(
                select(Notification)
                .where(col(Notification.shipment_id) == shipment.id)
                .order_by(col(Notification.id))
            ).all()
            calls = session.exec(
                select(ClickpostCall)
                .where(col(ClickpostCall.shipment_id) == shipment.id)
                .order_by(col(ClickpostCall.id))
            ).all()
            return {
                "shipment": _shipment_view(shipment),
                "events": [_event_view(e) for e in events],
                "notifications": [log_entry(n, shipment) for n in sent],
                "clickpost_calls": [_call_view(c) for c in calls],
            }


def log_entry(n: Notification, s: Shipment) -> dict[str, Any]:
    """One notification as the API and the CLI show it: masked, never the full address."""
    return {
        "id": n.id,
        "cp_id": s.cp_id,
        "waybill": s.waybill,
        "rule": n.rule,
        "channel": n.channel,
        "language": n.language,
        "recipient": n.recipient_masked,
        "status": n.status,
        "reason": n.reason,
        "attempts": n.attempts,
        "template": n.template,
        "rules_version": n.rules_version,
        "created_at": n.created_at,
        "due_at": n.due_at,
        "sent_at": n.sent_at,
        "provider_id": n.provider_id,
        "segments": n.segments,
        "encoding": n.encoding,
    }


def _shipment_view(s: Shipment) -> dict[str, Any]:
    consumer = s.consumer or {}
    return {
        "id": s.id,
        "cp_id": s.cp_id,
        "waybill": s.waybill,
        "account_code": s.account_code,
        "reference_number": s.reference_number,
        "order_id": s.order_id,
        "order_type": s.order_type,
        "delivery_type": s.delivery_type,
        "state": s.state,
        "tracking_id": s.tracking_id,
        "last_event_at": s.last_event_at,
        "polled_at": s.polled_at,
        "status_code": s.status_code,
        "status_at": s.status_at,
        "consumer": {
            "name": consumer.get("name", ""),
            "phone": recipients.mask(consumer.get("phone")),
            "email": recipients.mask(consumer.get("email")),
        },
        "created_at": s.created_at,
        "updated_at": s.updated_at,
    }


def _call_view(c: ClickpostCall) -> dict[str, Any]:
    """A call owed to Clickpost (awb-register, awb-unregister) and how it went."""
    return {
        "kind": c.kind,
        "status": c.status,
        "attempts": c.attempts,
        "last_error": c.last_error,
        "due_at": c.due_at,
        "updated_at": c.updated_at,
    }


def _event_view(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "source": e.source,
        "scan_code": e.scan_code,
        "scan_at": e.scan_at,
        "trigger_code": e.trigger_code,
        "trigger_at": e.trigger_at,
        "ndr_code": e.ndr_code,
        "notification_event_id": e.notification_event_id,
        "outcome": e.outcome,
        "received_at": e.received_at,
    }


@dataclass(frozen=True, kw_only=True)
class LogStats:
    by_status: dict[tuple[str, str, str], int]
    due: int
    oldest_due_age: float


def _stats(db: Database, now: datetime) -> LogStats:
    with db.read() as session:
        grouped = session.execute(
            select(
                Notification.channel, Notification.rule, Notification.status, func.count()
            ).group_by(col(Notification.channel), col(Notification.rule), col(Notification.status))
        ).all()
        due, oldest = session.execute(
            select(func.count(), func.min(Notification.due_at)).where(
                col(Notification.status).in_(PENDING_STATUSES), col(Notification.due_at) <= now
            )
        ).one()
    age = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
    return LogStats(by_status={(c, r, s): n for c, r, s, n in grouped}, due=due, oldest_due_age=age)


@dataclass(frozen=True, kw_only=True)
class StoredEvent:
    """An update as received, with the shipment it belongs to: the input of a replay."""

    shipment_id: int
    waybill: str
    received_at: datetime
    raw: dict[str, Any]
    registration: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class PlannedRow:
    shipment_id: int
    waybill: str
    rule: str
    channel: str
    status: str


ReplaySource = tuple[list[StoredEvent], list[PlannedRow]]


def _replay_source(db: Database, since: datetime | None) -> ReplaySource:
    """Stored updates of registered shipments, oldest first, and what was planned for them."""
    events = select(Event, Shipment).join(Shipment, col(Event.shipment_id) == col(Shipment.id))
    planned = select(Notification, Shipment).join(
        Shipment, col(Notification.shipment_id) == col(Shipment.id)
    )
    if since is not None:
        events = events.where(col(Event.received_at) >= since)
        planned = planned.where(col(Notification.created_at) >= since)
    with db.read() as session:
        stored = [
            StoredEvent(shipment_id=s.id or 0, waybill=s.waybill, received_at=e.received_at,
                        raw=e.raw, registration=s.registration)
            for e, s in session.exec(events.order_by(col(Event.received_at), col(Event.id)))
        ]  # fmt: skip
        rows = [
            PlannedRow(shipment_id=n.shipment_id, waybill=s.waybill, rule=n.rule,
                       channel=n.channel, status=n.status)
            for n, s in session.exec(planned)
        ]  # fmt: skip
    return stored, rows
