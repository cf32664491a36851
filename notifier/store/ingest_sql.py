"""The statements ingest runs (notifier/store/ingest.py), built once.

Building a statement and its cache key anew took more CPU than running it (a third of a small
batch's), so every query a batch runs is a module constant with bound and expanding
parameters, every write a :class:`~notifier.store.batch.Batch` that sends plain tuples, and
every read a :class:`~notifier.store.batch.Query` that gets them back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import Insert

from notifier.events import PENDING_STATUSES
from notifier.store.batch import Batch, Query
from notifier.store.models import Event, Notification, Shipment, Suppression

EVENT: Table = Event.__table__  # type: ignore[attr-defined]
SHIPMENT: Table = Shipment.__table__  # type: ignore[attr-defined]
NOTIFICATION: Table = Notification.__table__  # type: ignore[attr-defined]
SUPPRESSION: Table = Suppression.__table__  # type: ignore[attr-defined]

STATE_COLUMNS = (
    "id", "cp_id", "waybill", "account_code", "order_type", "delivery_type", "consumer", "stage",
    "status_code", "status_at", "state",
)  # fmt: skip
STATE = [SHIPMENT.c[name] for name in STATE_COLUMNS]


def insert_ignoring(table: Table, dialect: str, *conflict: str) -> Insert:
    """INSERT … ON CONFLICT (conflict) DO NOTHING, for this dialect."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing(index_elements=list(conflict))


def _returning_ids(table: Table, key: str) -> Callable[[str], Any]:
    """INSERT … ON CONFLICT (key) DO NOTHING RETURNING id, key: the new rows' ids by key."""
    return lambda dialect: insert_ignoring(table, dialect, key).returning(table.c.id, table.c[key])


def _advance(heard: bool) -> Callable[[str], Any]:
    values: dict[str, Any] = {
        "stage": bindparam("stage"),
        "status_code": bindparam("status_code"),
        "status_at": bindparam("status_at"),
        "state": bindparam("state"),
        "updated_at": bindparam("now"),
    }
    if heard:
        values["last_event_at"] = bindparam("now")
    return lambda _: update(SHIPMENT).where(SHIPMENT.c.id == bindparam("sid")).values(values)


PENDING = [status.value for status in PENDING_STATUSES]
SHIPMENTS_BY_WAYBILL = Query(
    select(*STATE)
    .where(
        SHIPMENT.c.cp_id == bindparam("cp_id"),
        SHIPMENT.c.waybill.in_(bindparam("waybills", expanding=True)),
    )
    .order_by(SHIPMENT.c.waybill)
    .with_for_update()
)
# Answered from ix_notification_shipment_status: the rows of messages already sent or
# cancelled are never read, however many a shipment has.
PENDING_OF_SHIPMENTS = Query(
    select(
        NOTIFICATION.c.id, NOTIFICATION.c.shipment_id, NOTIFICATION.c.channel,
        NOTIFICATION.c.trigger_at, NOTIFICATION.c.trigger_stage,
    )
    .where(
        NOTIFICATION.c.shipment_id.in_(bindparam("sids", expanding=True)),
        NOTIFICATION.c.status.in_(PENDING),
    )
    .order_by(NOTIFICATION.c.id)
    .with_for_update()
)  # fmt: skip
SUPPRESSED = Query(
    select(SUPPRESSION.c.channel, SUPPRESSION.c.address, SUPPRESSION.c.reason).where(
        SUPPRESSION.c.channel.in_(bindparam("channels", expanding=True)),
        SUPPRESSION.c.address.in_(bindparam("addresses", expanding=True)),
    )
)
INSERT_EVENTS = Batch(_returning_ids(EVENT, "idempotency_key"))
INSERT_NOTIFICATIONS = Batch(_returning_ids(NOTIFICATION, "dedup_key"))
ADVANCE = Batch(_advance(heard=False))
ADVANCE_HEARD = Batch(_advance(heard=True))
TOUCH = Batch(
    lambda _: (
        update(SHIPMENT)
        .where(SHIPMENT.c.id == bindparam("sid"))
        .values(last_event_at=bindparam("now"))
    )
)
CANCEL = Batch(
    lambda _: (
        update(NOTIFICATION)
        .where(NOTIFICATION.c.id == bindparam("nid"))
        .values(status=bindparam("status"), reason=bindparam("why"), updated_at=bindparam("now"))
    )
)
FINISH_EVENTS = Batch(
    lambda _: (
        update(EVENT).where(EVENT.c.id == bindparam("eid")).values(outcome=bindparam("outcome"))
    )
)
ADOPT_EVENTS = Batch(
    lambda _: (
        update(EVENT)
        .where(EVENT.c.id == bindparam("eid"))
        .values(shipment_id=bindparam("shipment_id"), outcome=bindparam("outcome"))
    )
)
