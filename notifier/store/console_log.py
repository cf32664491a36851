"""The delivery log as the console pages and exports it, and the dashboard's counts.

Shaped for millions of rows: the log pages with a keyset (``(created_at, id) < (…)``, never
``OFFSET``) over the created-at, status and rule indexes; the dashboard counts each day with a
range over the covering ``(created_at, channel, status)`` index. Addresses are masked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, tuple_
from sqlalchemy import select as sql_select
from sqlmodel import col, select

from notifier.events import PENDING_STATUSES, NotificationStatus
from notifier.store.database import Database
from notifier.store.models import Notification, Shipment

# -- the delivery log ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LogFilter:
    status: str | None = None
    channel: str | None = None
    rule: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class LogRow:
    id: int
    shipment_id: int
    cp_id: int
    waybill: str
    rule: str
    channel: str
    recipient: str  # masked
    status: str
    reason: str
    attempts: int
    provider_id: str | None
    rules_version: str
    created_at: datetime
    due_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class LogPage:
    rows: list[LogRow]
    older: int | None  # the id to continue after, when there is more
    newer: int | None  # the id to go back before, when this is not the first page


def log_page(
    db: Database,
    filters: LogFilter,
    *,
    after: int | None = None,
    before: int | None = None,
    size: int = 50,
) -> LogPage:
    """One page of the log, newest first: the ``size`` rows after ``after`` (older ones), or
    the ``size`` rows before ``before`` (newer ones), or the newest."""
    newest_first = before is None
    with db.read() as session:
        query = _log_query(filters)
        key = tuple_(col(Notification.created_at), col(Notification.id))
        if after is not None:
            query = query.where(key < _key_of(after))
        if before is not None:
            query = query.where(key > _key_of(before))
        order = _log_order(descending=newest_first)
        found = session.execute(query.order_by(*order).limit(size + 1)).all()
        rows = [LogRow(**row._asdict()) for row in found]
    more = len(rows) > size
    rows = rows[:size] if newest_first else list(reversed(rows[:size]))
    if not rows:
        return LogPage(rows=[], older=None, newer=None)
    older = rows[-1].id if (more or not newest_first) else None
    newer = rows[0].id if (after is not None or (not newest_first and more)) else None
    return LogPage(rows=rows, older=older, newer=newer)


def log_rows(db: Database, filters: LogFilter, *, batch: int = 5000) -> Iterator[LogRow]:
    """Every row matching ``filters``, newest first, read in batches (the CSV export)."""
    after: int | None = None
    while True:
        page = log_page(db, filters, after=after, size=batch)
        yield from page.rows
        if page.older is None:
            return
        after = page.older


# Columns, not ORM objects: an export reads tens of thousands of rows.
_LOG_COLUMNS: tuple[Any, ...] = (
    col(Notification.id), col(Shipment.id).label("shipment_id"), col(Shipment.cp_id),
    col(Shipment.waybill), col(Notification.rule), col(Notification.channel),
    col(Notification.recipient_masked).label("recipient"), col(Notification.status),
    col(Notification.reason), col(Notification.attempts), col(Notification.provider_id),
    col(Notification.rules_version), col(Notification.created_at), col(Notification.due_at),
    col(Notification.sent_at),
)  # fmt: skip


def _log_query(f: LogFilter) -> Any:
    joined = col(Notification.shipment_id) == col(Shipment.id)
    query = sql_select(*_LOG_COLUMNS).join(Shipment, joined)
    conditions: list[ColumnElement[bool]] = []
    if f.status:
        conditions.append(col(Notification.status) == f.status)
    if f.channel:
        conditions.append(col(Notification.channel) == f.channel)
    if f.rule:
        conditions.append(col(Notification.rule) == f.rule)
    if f.since:
        conditions.append(col(Notification.created_at) >= f.since)
    if f.until:
        conditions.append(col(Notification.created_at) < f.until)
    return query.where(*conditions)


def _key_of(notification_id: int) -> Any:
    """The (created_at, id) of a notification, as the keyset's boundary."""
    created = select(Notification.created_at).where(col(Notification.id) == notification_id)
    return tuple_(created.scalar_subquery(), notification_id)


def _log_order(*, descending: bool) -> list[Any]:
    created, ident = col(Notification.created_at), col(Notification.id)
    return [created.desc(), ident.desc()] if descending else [created.asc(), ident.asc()]


# -- the dashboard -------------------------------------------------------------------------------

OUTCOMES: dict[str, str] = {
    NotificationStatus.SENT: "sent",
    NotificationStatus.DELIVERED: "sent",
    NotificationStatus.UNDELIVERED: "sent",
    NotificationStatus.FAILED: "failed",
    NotificationStatus.EXPIRED: "failed",
    NotificationStatus.SKIPPED: "skipped",
    NotificationStatus.CANCELLED: "skipped",
}
"""How the dashboard groups statuses: a message the provider took is sent (whatever its
receipt said), one that never went out is failed (gave up, expired) or skipped (a decision:
no address, opted out, superseded, cancelled). Pending ones are not counted."""


@dataclass(frozen=True, kw_only=True)
class DayCounts:
    start: datetime
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, outcome) -> n


@dataclass(frozen=True, kw_only=True)
class OldestDue:
    id: int
    shipment_id: int
    waybill: str
    channel: str
    rule: str
    status: str
    due_at: datetime


def per_day(db: Database, starts: Sequence[datetime]) -> list[DayCounts]:
    """Counts by channel and outcome for each day beginning at ``starts[i]`` (the last one
    runs a day); each day is one range over the covering created-at index."""
    bounds = [*starts[1:], starts[-1] + timedelta(days=1)] if starts else []
    days = []
    with db.read() as session:
        for start, end in zip(starts, bounds, strict=True):
            created = col(Notification.created_at)
            grouped = session.execute(
                select(Notification.channel, Notification.status, func.count())
                .where(created >= start, created < end)
                .group_by(col(Notification.channel), col(Notification.status))
            ).all()
            counts: dict[tuple[str, str], int] = {}
            for channel, status, n in grouped:
                if status in OUTCOMES:
                    key = (channel, OUTCOMES[status])
                    counts[key] = counts.get(key, 0) + n
            days.append(DayCounts(start=start, counts=counts))
    return days


def oldest_due(db: Database, *, now: datetime) -> OldestDue | None:
    with db.read() as session:
        row = session.exec(
            select(Notification, Shipment)
            .join(Shipment, col(Notification.shipment_id) == col(Shipment.id))
            .where(col(Notification.status).in_(PENDING_STATUSES), col(Notification.due_at) <= now)
            .order_by(col(Notification.due_at))
            .limit(1)
        ).first()
    if row is None:
        return None
    n, s = row
    return OldestDue(id=n.id or 0, shipment_id=s.id or 0, waybill=s.waybill, channel=n.channel,
                     rule=n.rule, status=n.status, due_at=n.due_at)  # fmt: skip
