"""The dispatch side of the store: claim due notifications, finish attempts, receipts, opt-outs.

Claims are leases: a claimed row is ``sending`` until ``lease_until``; a dispatcher that dies
holding it lets the lease run out and the next claim takes the row again. On PostgreSQL the
claim skips rows another dispatcher has locked (``FOR UPDATE SKIP LOCKED``); SQLite serializes
writers, so it needs nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import and_, or_
from sqlalchemy import delete as sql_delete
from sqlalchemy import update as sql_update
from sqlmodel import Session, col, select

from notifier.events import PENDING_STATUSES, NotificationStatus
from notifier.store.database import Database
from notifier.store.models import Attempt, Event, Notification, Shipment, Suppression

_T = TypeVar("_T")

# A receipt only moves a notification forward: Twilio's callbacks arrive out of order.
RECEIPT_MOVES: dict[str, tuple[str, ...]] = {
    NotificationStatus.DELIVERED: (NotificationStatus.SENT, NotificationStatus.UNDELIVERED),
    NotificationStatus.UNDELIVERED: (NotificationStatus.SENT,),
    NotificationStatus.FAILED: (NotificationStatus.SENT,),
}


@dataclass(frozen=True, kw_only=True)
class Job:
    """A claimed notification with everything needed to render and send it."""

    id: int
    channel: str
    template: str
    rule: str
    recipient: str
    attempts: int
    created_at: datetime
    claimed_at: datetime
    lease_until: datetime
    expires_at: datetime | None
    suppressed: bool
    registration: Mapping[str, Any]
    event_raw: Mapping[str, Any] | None
    suppressed_because: str = ""  # the suppression's reason, when ``suppressed``


class Queue:
    def __init__(self, db: Database) -> None:
        self.db = db

    def claim_due(
        self, *, now: datetime, limit: int, lease_until: datetime, channel: str | None = None
    ) -> list[Job]:
        """Claim due rows (and rows whose sender's lease ran out), optionally of one channel."""
        due = or_(
            and_(col(Notification.status).in_(PENDING_STATUSES), col(Notification.due_at) <= now),
            and_(
                col(Notification.status) == NotificationStatus.SENDING,
                col(Notification.lease_until) < now,
            ),
        )
        ids = select(Notification.id).where(due)
        if channel is not None:
            ids = ids.where(col(Notification.channel) == channel)
        ids = ids.order_by(col(Notification.due_at)).limit(limit).with_for_update(skip_locked=True)
        claim = (
            sql_update(Notification)
            .where(col(Notification.id).in_(ids.scalar_subquery()))
            .values(
                status=NotificationStatus.SENDING,
                lease_until=lease_until,
                attempts=col(Notification.attempts) + 1,
                updated_at=now,
            )
            .returning(col(Notification.id))
        )
        with self.db.write() as session:
            claimed = list(session.execute(claim).scalars().all())
            return _jobs(session, claimed, claimed_at=now)

    def finish(
        self,
        job: Job,
        *,
        now: datetime,
        status: NotificationStatus,
        reason: str = "",
        outcome: str,
        provider_id: str | None = None,
        due_at: datetime | None = None,
        rendered: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record the end of one attempt. False when the row was reclaimed meanwhile."""
        values: dict[str, Any] = {"status": status, "reason": reason, "lease_until": None}
        values |= {"updated_at": now, **(rendered or {})}
        if provider_id:
            values["provider_id"] = provider_id
        if status is NotificationStatus.SENT:
            values["sent_at"] = now
        if due_at is not None:
            values["due_at"] = due_at
        mine = (
            col(Notification.id) == job.id,
            col(Notification.status) == NotificationStatus.SENDING,
            col(Notification.lease_until) == job.lease_until,
        )
        with self.db.write() as session:
            changed = session.execute(
                sql_update(Notification)
                .where(*mine)
                .values(**values)
                .returning(col(Notification.id))
            ).scalar_one_or_none()
            if changed is not None and outcome not in {"expired", "suppressed"}:
                session.add(_attempt(job, now, outcome, reason, provider_id))
            return changed is not None

    def next_due(self) -> datetime | None:
        with self.db.read() as session:
            return session.exec(
                select(Notification.due_at)
                .where(col(Notification.status).in_(PENDING_STATUSES))
                .order_by(col(Notification.due_at))
                .limit(1)
            ).first()

    def attempts(self, notification_id: int) -> list[Attempt]:
        with self.db.read() as session:
            query = select(Attempt).where(col(Attempt.notification_id) == notification_id)
            return list(session.exec(query.order_by(col(Attempt.number))))

    # -- what happens after the provider took the message ----------------------------------------

    def apply_receipt(
        self, provider_id: str, status: str, reason: str, *, now: datetime
    ) -> int | None:
        """Move the notification sent as ``provider_id`` forward to ``status``; its id, or None
        when no notification can move (unknown id, or the receipt is older than what we know)."""
        allowed = RECEIPT_MOVES.get(status, ())
        with self.db.write() as session:
            moved: int | None = session.execute(
                sql_update(Notification)
                .where(
                    col(Notification.provider_id) == provider_id,
                    col(Notification.status).in_(allowed),
                )
                .values(status=status, reason=reason, updated_at=now)
                .returning(col(Notification.id))
            ).scalar_one_or_none()
            return moved

    def suppress(self, channel: str, address: str, reason: str, *, now: datetime) -> None:
        """Record that ``address`` wants nothing more on ``channel``; pending sends to it stop."""
        from notifier.store.repository import insert_ignore

        values = {"channel": channel, "address": address, "reason": reason, "created_at": now}
        with self.db.write() as session:
            insert_ignore(session, Suppression, values, "channel", "address")
            session.execute(
                sql_update(Notification)
                .where(
                    col(Notification.channel) == channel,
                    col(Notification.recipient) == address,
                    col(Notification.status).in_(PENDING_STATUSES),
                )
                .values(
                    status=NotificationStatus.SKIPPED, reason=f"opted out: {reason}", updated_at=now
                )
            )

    def unsuppress(self, channel: str, address: str) -> bool:
        """Lift a suppression (START, a preference set back); False when there was none."""
        with self.db.write() as session:
            gone = session.execute(
                sql_delete(Suppression)
                .where(col(Suppression.channel) == channel, col(Suppression.address) == address)
                .returning(col(Suppression.id))
            ).all()
            return bool(gone)

    def suppressions(self, addresses: Mapping[str, str]) -> dict[str, str]:
        """For each channel → address given, the reason it is suppressed (absent: allowed)."""
        wanted = [
            and_(col(Suppression.channel) == channel, col(Suppression.address) == address)
            for channel, address in addresses.items()
        ]
        if not wanted:
            return {}
        with self.db.read() as session:
            rows = session.exec(select(Suppression).where(or_(*wanted))).all()
            return {row.channel: row.reason for row in rows}

    def recipient(self, notification_id: int) -> tuple[str, str | None] | None:
        """A notification's channel and recipient (None once purged), or None if unknown."""
        with self.db.read() as session:
            row = session.get(Notification, notification_id)
            return (row.channel, row.recipient) if row is not None else None


def _attempt(job: Job, now: datetime, outcome: str, error: str, provider_id: str | None) -> Attempt:
    return Attempt(
        notification_id=job.id,
        number=job.attempts,
        started_at=job.claimed_at,
        finished_at=now,
        outcome=outcome,
        error=error,
        provider_id=provider_id,
    )


def _jobs(session: Session, ids: list[int], *, claimed_at: datetime) -> list[Job]:
    if not ids:
        return []
    suppressed = and_(
        col(Suppression.channel) == col(Notification.channel),
        col(Suppression.address) == col(Notification.recipient),
    )
    rows = session.exec(
        select(Notification, Shipment, Event, Suppression)
        .join(Shipment, col(Notification.shipment_id) == col(Shipment.id))
        .outerjoin(Event, col(Notification.event_id) == col(Event.id))
        .outerjoin(Suppression, suppressed)
        .where(col(Notification.id).in_(ids))
        .order_by(col(Notification.due_at))
    ).all()
    return [_job(n, s, e, claimed_at, blocked) for n, s, e, blocked in rows]


def _job(
    n: Notification, s: Shipment, e: Event | None, claimed_at: datetime, blocked: Suppression | None
) -> Job:
    return Job(
        id=_required(n.id),
        channel=n.channel,
        template=n.template,
        rule=n.rule,
        recipient=n.recipient or "",
        attempts=n.attempts,
        created_at=n.created_at,
        claimed_at=claimed_at,
        lease_until=_required(n.lease_until),
        expires_at=n.expires_at,
        suppressed=blocked is not None,
        registration=s.registration,
        event_raw=e.raw if e is not None else None,
        suppressed_because=blocked.reason if blocked is not None else "",
    )


def _required(value: _T | None) -> _T:
    assert value is not None
    return value
