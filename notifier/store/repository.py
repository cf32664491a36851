"""Every read and write notifier makes, as domain operations over :class:`Database`.

Each public method is one transaction. Dedup is ``INSERT … ON CONFLICT DO NOTHING RETURNING
id``: a row id means "new", nothing means "already there"; never read-then-write.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy import update as sql_update
from sqlmodel import Session, col, select

from notifier import recipients
from notifier.errors import StoreUnavailableError
from notifier.events import (
    PENDING_STATUSES,
    NotificationStatus,
    Registration,
    ShipmentUpdate,
)
from notifier.store import adoption, ingest
from notifier.store.clickpost_calls import owe_call
from notifier.store.database import Database
from notifier.store.ingest import Decide, IngestOutcome, PlannedSummary
from notifier.store.ingest_sql import insert_ignoring
from notifier.store.models import Event, Notification, Shipment

__all__ = ["IngestOutcome", "PlannedSummary", "RegistrationOutcome", "Store", "insert_ignore"]

CONFLICT_RETRIES = 3


@dataclass(frozen=True, kw_only=True)
class RegistrationOutcome:
    shipment_id: int
    created: bool
    adopted_events: int
    evaluation: IngestOutcome | None


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- ingest -------------------------------------------------------------------------------

    def record_update(
        self, update: ShipmentUpdate, decide: Decide, *, now: datetime, rules_version: str
    ) -> IngestOutcome:
        """Store the event and plan its notifications, in one transaction."""
        return self.record_updates([update], decide, now=now, rules_version=rules_version)[0]

    def record_updates(
        self,
        updates: Sequence[ShipmentUpdate],
        decide: Decide,
        *,
        now: datetime,
        rules_version: str,
    ) -> list[IngestOutcome]:
        """Store many updates and plan for each, in one transaction (group commit): one
        outcome per update, each what storing it alone would have given. A transaction that
        loses a deadlock to another daemon's runs again."""
        for attempt in range(1, CONFLICT_RETRIES + 1):
            try:
                with self.db.write_core() as conn:
                    return ingest.record_updates(
                        conn, updates, decide, now=now, rules_version=rules_version
                    )
            except StoreUnavailableError as err:
                if not err.conflict or attempt == CONFLICT_RETRIES:
                    raise
        raise AssertionError("unreachable")

    def register(
        self,
        registration: Registration,
        decide: Decide,
        parse: Callable[[Mapping[str, Any]], ShipmentUpdate],
        *,
        now: datetime,
        rules_version: str,
        forward: bool = False,
        phone_region: str = "IN",
    ) -> RegistrationOutcome:
        """Upsert the shipment, adopt updates that arrived before it, evaluate the latest once.

        With ``forward``, the same body is owed to Clickpost's awb-register, in the same
        transaction: made afterwards, retried until it succeeds. ``phone_region``: the rules'
        region for numbers written without a country code.
        """
        with self.db.write() as session:
            adoption.lock(session.connection(), _adoption_keys(registration))
            values = shipment_row(registration, now, phone_region=phone_region)
            shipment_id = insert_ignore(session, Shipment, values, "cp_id", "waybill")
            created = shipment_id is not None
            if not created:
                keep = {k: v for k, v in values.items() if k not in {"created_at"}}
                session.execute(
                    sql_update(Shipment)
                    .where(
                        col(Shipment.cp_id) == registration.cp_id,
                        col(Shipment.waybill) == registration.waybill,
                    )
                    .values(**keep)
                )
            shipment = _shipment_by_awb(session, registration.cp_id, registration.waybill)
            assert shipment.id is not None
            if forward:
                owe_call(session, shipment.id, "register", registration.raw, now)
            adopted = _adopt_orphans(session, shipment, registration)
            evaluation = None
            if adopted:
                latest = max(adopted, key=lambda e: (e.trigger_at, e.id or 0))
                assert latest.id is not None
                evaluation = ingest.evaluate(
                    session.connection(), ingest.state_of(shipment), latest.id,
                    parse(latest.raw), decide, now=now, rules_version=rules_version,
                )  # fmt: skip
            return RegistrationOutcome(
                shipment_id=shipment.id,
                created=created,
                adopted_events=len(adopted),
                evaluation=evaluation,
            )

    def unregister(self, cp_id: int, waybill: str, *, now: datetime, forward: bool = False) -> bool:
        """Mark the shipment unregistered and cancel what was still pending for it; with
        ``forward``, owe Clickpost the awb-unregister call too."""
        with self.db.write() as session:
            found = session.execute(
                sql_update(Shipment)
                .where(col(Shipment.cp_id) == cp_id, col(Shipment.waybill) == waybill)
                .values(state="unregistered", updated_at=now)
                .returning(col(Shipment.id))
            ).scalar_one_or_none()
            if found is None:
                return False
            if forward:
                owe_call(session, found, "unregister", {"cp_id": cp_id, "waybill": waybill}, now)
            session.execute(
                sql_update(Notification)
                .where(
                    col(Notification.shipment_id) == found,
                    col(Notification.status).in_(PENDING_STATUSES),
                )
                .values(
                    status=NotificationStatus.CANCELLED,
                    reason="shipment unregistered",
                    updated_at=now,
                )
            )
            return True


def insert_ignore(
    session: Session, model: type[Any], values: Mapping[str, Any], *conflict: str
) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id: the new id, or None for a duplicate."""
    table = model.__table__
    dialect = session.get_bind().dialect.name
    stmt = insert_ignoring(table, dialect, *conflict).values(**values).returning(table.c.id)
    result: int | None = session.execute(stmt).scalar_one_or_none()
    return result


def shipment_row(reg: Registration, now: datetime, *, phone_region: str = "IN") -> dict[str, Any]:
    """The shipment table's row for a registration (new, or its new values when it is known).
    A textable phone is kept in E.164 too, so planning need not check it again."""
    consumer = {"name": reg.consumer.name, "phone": reg.consumer.phone, "email": reg.consumer.email}
    checked = recipients.phone(reg.consumer.phone, region=phone_region)
    if checked.address is not None:
        consumer |= {"phone_e164": checked.address, "phone_region": phone_region}
    return {
        "cp_id": reg.cp_id,
        "waybill": reg.waybill,
        "account_code": reg.account_code,
        "reference_number": reg.reference_number,
        "order_id": reg.order_id,
        "consumer": consumer,
        "shipment_info": dict(reg.shipment_info),
        "registration": dict(reg.raw),
        "order_type": reg.order_type,
        "delivery_type": reg.delivery_type,
        "order_date": reg.order_date,
        "ship_date": reg.ship_date,
        "created_at": now,
        "updated_at": now,
    }


def _shipment_by_awb(session: Session, cp_id: int, waybill: str) -> Shipment:
    return session.exec(
        select(Shipment)
        .where(col(Shipment.cp_id) == cp_id, col(Shipment.waybill) == waybill)
        .with_for_update()
    ).one()


def _references(reg: Registration) -> list[str]:
    return [r for r in (reg.reference_number, reg.order_id) if r]


def _adoption_keys(reg: Registration) -> list[str]:
    """The keys ingest locks for the updates this registration adopts (store/adoption.py)."""
    return [adoption.by_waybill(reg.cp_id, reg.waybill)] + [
        adoption.by_reference(r) for r in _references(reg)
    ]


def _adopt_orphans(session: Session, shipment: Shipment, reg: Registration) -> list[Event]:
    """Attach updates that arrived before the registration to the shipment."""
    refs = _references(reg)
    by_awb = and_(col(Event.cp_id) == reg.cp_id, col(Event.waybill) == reg.waybill)
    by_ref = and_(
        col(Event.waybill) == "",
        or_(col(Event.order_id).in_(refs), col(Event.reference_number).in_(refs)),
    )
    # One query per way of matching (disjoint: a registration has a waybill): joined by OR,
    # SQLite would read every held event.
    held = col(Event.shipment_id).is_(None)
    matches = [by_awb, by_ref] if refs else [by_awb]
    found = [e for m in matches for e in session.exec(select(Event).where(held, m)).all()]
    orphans = sorted(found, key=lambda e: e.id or 0)
    for event in orphans:
        event.shipment_id = shipment.id
        session.add(event)
    session.flush()
    return list(orphans)
