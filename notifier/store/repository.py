"""Every read and write notifier makes, as domain operations over :class:`Database`.

Each public method is one transaction. Dedup is ``INSERT … ON CONFLICT DO NOTHING RETURNING
id``: a row id means "new", nothing means "already there"; never read-then-write.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, or_
from sqlalchemy import update as sql_update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from notifier.events import (
    PENDING_STATUSES,
    Consumer,
    NotificationStatus,
    Registration,
    ShipmentUpdate,
)
from notifier.planning import Plan, PlannedNotification, ShipmentState
from notifier.store.clickpost_calls import owe_call
from notifier.store.database import Database
from notifier.store.models import Event, Notification, Shipment, Suppression

Decide = Callable[[ShipmentState, ShipmentUpdate], Plan]
_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True)
class PlannedSummary:
    """One line of an ingest outcome: what happened to one planned send."""

    notification_id: int | None  # None: the dedup key was taken (a duplicate)
    rule: str
    channel: str
    status: str
    reason: str
    due_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class IngestOutcome:
    """What ``handle_webhook`` did with one update, for the caller and the log."""

    event_id: int | None
    duplicate: bool
    shipment_id: int | None
    verdict: str
    notifications: tuple[PlannedSummary, ...] = ()
    cancelled: int = 0


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
        with self.db.write() as session:
            event_id = insert_ignore(session, Event, _event_values(update, now), "idempotency_key")
            if event_id is None:
                return IngestOutcome(
                    event_id=None,
                    duplicate=True,
                    shipment_id=None,
                    verdict="duplicate: this update was already received",
                )
            shipment = _find_shipment(session, update)
            if shipment is None:
                verdict = "held: shipment not registered yet; evaluated when it is"
                _set_outcome(session, event_id, verdict)
                return IngestOutcome(
                    event_id=event_id, duplicate=False, shipment_id=None, verdict=verdict
                )
            assert shipment.id is not None
            session.execute(
                sql_update(Event).where(col(Event.id) == event_id).values(shipment_id=shipment.id)
            )
            shipment.last_event_at = now
            return _evaluate(session, shipment, event_id, update, decide, now, rules_version)

    def register(
        self,
        registration: Registration,
        decide: Decide,
        parse: Callable[[Mapping[str, Any]], ShipmentUpdate],
        *,
        now: datetime,
        rules_version: str,
        forward: bool = False,
    ) -> RegistrationOutcome:
        """Upsert the shipment, adopt updates that arrived before it, evaluate the latest once.

        With ``forward``, the same body is owed to Clickpost's awb-register, in the same
        transaction: made afterwards, retried until it succeeds.
        """
        with self.db.write() as session:
            values = _shipment_values(registration, now)
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
                evaluation = _evaluate(
                    session, shipment, latest.id, parse(latest.raw), decide, now, rules_version
                )
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
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = (
        insert(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(conflict))
        .returning(table.c.id)
    )
    result: int | None = session.execute(stmt).scalar_one_or_none()
    return result


def _event_values(update: ShipmentUpdate, now: datetime) -> dict[str, Any]:
    return {
        "idempotency_key": update.identity,
        "cp_id": update.cp_id,
        "waybill": update.waybill,
        "reference_number": update.reference_number,
        "order_id": update.order_id,
        "source": update.source.value,
        "scan_code": update.scan.code,
        "scan_at": update.scan.timestamp,
        "trigger_code": update.latest.code,
        "trigger_at": update.latest.timestamp,
        "ndr_code": update.ndr_code,
        "notification_event_id": update.notification_event_id,
        "raw": dict(update.raw),
        "outcome": "",
        "received_at": now,
    }


def _shipment_values(reg: Registration, now: datetime) -> dict[str, Any]:
    consumer = {"name": reg.consumer.name, "phone": reg.consumer.phone, "email": reg.consumer.email}
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


def _find_shipment(session: Session, update: ShipmentUpdate) -> Shipment | None:
    """By courier and waybill; an empty waybill by order id / reference number instead."""
    query = select(Shipment)
    if update.cp_id != -1:  # -1: returns platform, any courier (clickpost-facts.md)
        query = query.where(col(Shipment.cp_id) == update.cp_id)
    if update.waybill:
        query = query.where(col(Shipment.waybill) == update.waybill)
    else:
        refs = list(update.references)
        query = query.where(
            or_(col(Shipment.reference_number).in_(refs), col(Shipment.order_id).in_(refs))
        )
    return session.exec(query.with_for_update()).first()


def _shipment_by_awb(session: Session, cp_id: int, waybill: str) -> Shipment:
    return session.exec(
        select(Shipment)
        .where(col(Shipment.cp_id) == cp_id, col(Shipment.waybill) == waybill)
        .with_for_update()
    ).one()


def _adopt_orphans(session: Session, shipment: Shipment, reg: Registration) -> list[Event]:
    """Attach updates that arrived before the registration to the shipment."""
    refs = [r for r in (reg.reference_number, reg.order_id) if r]
    by_awb = and_(col(Event.cp_id) == reg.cp_id, col(Event.waybill) == reg.waybill)
    by_ref = and_(
        col(Event.waybill) == "",
        or_(col(Event.order_id).in_(refs), col(Event.reference_number).in_(refs)),
    )
    orphans = session.exec(
        select(Event).where(
            col(Event.shipment_id).is_(None), or_(by_awb, by_ref) if refs else by_awb
        )
    ).all()
    for event in orphans:
        event.shipment_id = shipment.id
        session.add(event)
    session.flush()
    return list(orphans)


def state_of(shipment: Shipment) -> ShipmentState:
    consumer = shipment.consumer or {}
    assert shipment.id is not None
    return ShipmentState(
        id=shipment.id,
        cp_id=shipment.cp_id,
        waybill=shipment.waybill,
        account_code=shipment.account_code,
        order_type=shipment.order_type,
        delivery_type=shipment.delivery_type,
        consumer=Consumer(
            name=consumer.get("name", ""),
            phone=consumer.get("phone", ""),
            email=consumer.get("email", ""),
        ),
        stage=shipment.stage,
        status_code=shipment.status_code,
        status_at=shipment.status_at,
        state=shipment.state,
    )


def _evaluate(
    session: Session,
    shipment: Shipment,
    event_id: int,
    update: ShipmentUpdate,
    decide: Decide,
    now: datetime,
    rules_version: str,
) -> IngestOutcome:
    plan = decide(state_of(shipment), update)
    cancelled = _apply_state(session, shipment, plan, now)
    opted_out = _opted_out(session, plan.notifications)
    summaries = tuple(
        _insert_planned(session, shipment, event_id, _unless(opted_out, p), now, rules_version)
        for p in plan.notifications
    )
    verdict = plan.verdict
    _set_outcome(session, event_id, _describe(verdict, summaries, cancelled))
    return IngestOutcome(
        event_id=event_id,
        duplicate=False,
        shipment_id=shipment.id,
        verdict=verdict,
        notifications=summaries,
        cancelled=cancelled,
    )


def _apply_state(session: Session, shipment: Shipment, plan: Plan, now: datetime) -> int:
    if not plan.advance:
        return 0
    shipment.stage, shipment.status_code = plan.stage, plan.status_code
    shipment.status_at, shipment.state, shipment.updated_at = plan.status_at, plan.state, now
    session.add(shipment)
    session.flush()
    if plan.supersede is None:
        return 0
    sup = plan.supersede
    where = [
        col(Notification.shipment_id) == shipment.id,
        col(Notification.status).in_(PENDING_STATUSES),
        col(Notification.trigger_at) < sup.before,
        col(Notification.trigger_stage) <= sup.max_stage,
    ]
    if sup.channels is not None:
        where.append(col(Notification.channel).in_([c.value for c in sup.channels]))
    result = session.execute(
        sql_update(Notification)
        .where(*where)
        .values(status=NotificationStatus.CANCELLED, reason=sup.reason, updated_at=now)
        .returning(col(Notification.id))
    )
    return len(result.scalars().all())


def _opted_out(
    session: Session, planned: Sequence[PlannedNotification]
) -> dict[tuple[str, str], str]:
    """The suppressions (SMS STOP, unsubscribe) that cover any of these recipients."""
    addresses = [p.recipient for p in planned if p.recipient]
    if not addresses:
        return {}
    rows = session.exec(select(Suppression).where(col(Suppression.address).in_(addresses))).all()
    return {(s.channel, s.address): s.reason for s in rows}


def _unless(
    opted_out: dict[tuple[str, str], str], planned: PlannedNotification
) -> PlannedNotification:
    reason = opted_out.get((planned.channel.value, planned.recipient or ""))
    if reason is None or planned.status is not NotificationStatus.SCHEDULED:
        return planned
    return replace(planned, status=NotificationStatus.SKIPPED, reason=f"opted out: {reason}")


def _insert_planned(
    session: Session,
    shipment: Shipment,
    event_id: int,
    planned: PlannedNotification,
    now: datetime,
    rules_version: str,
) -> PlannedSummary:
    values = {
        "shipment_id": shipment.id,
        "event_id": event_id,
        "rule": planned.rule,
        "channel": planned.channel.value,
        "dedup_key": planned.dedup_key,
        "recipient": planned.recipient,
        "recipient_masked": planned.recipient_masked,
        "template": planned.template,
        "rules_version": rules_version,
        "status": planned.status.value,
        "reason": planned.reason,
        "trigger_code": planned.trigger.code,
        "trigger_stage": planned.trigger_stage,
        "trigger_at": planned.trigger.timestamp,
        "due_at": planned.due_at,
        "expires_at": planned.expires_at,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
    new_id = insert_ignore(session, Notification, values, "dedup_key")
    if new_id is None:
        return PlannedSummary(
            notification_id=None,
            rule=planned.rule,
            channel=planned.channel.value,
            status="duplicate",
            reason="duplicate: already planned for this shipment event",
        )
    return PlannedSummary(
        notification_id=new_id,
        rule=planned.rule,
        channel=planned.channel.value,
        status=planned.status.value,
        reason=planned.reason,
        due_at=planned.due_at,
    )


def _describe(verdict: str, summaries: Sequence[PlannedSummary], cancelled: int) -> str:
    parts = [verdict]
    parts += [f"{s.channel} {s.status}" + (f" ({s.reason})" if s.reason else "") for s in summaries]
    if cancelled:
        parts.append(f"{cancelled} pending cancelled as superseded")
    return "; ".join(parts)


def _set_outcome(session: Session, event_id: int, outcome: str) -> None:
    session.execute(sql_update(Event).where(col(Event.id) == event_id).values(outcome=outcome))
