"""The dispatch side of the store: claim due notifications, finish attempts, receipts, opt-outs.

Claims are leases: a claimed row is ``sending`` until ``lease_until``; a dispatcher that dies
holding it lets the lease run out and the next claim takes the row again. On PostgreSQL the
claim skips rows another dispatcher has locked (``FOR UPDATE SKIP LOCKED``); SQLite serializes
writers, so it needs nothing more.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Table, and_, bindparam, func, insert, or_
from sqlalchemy import delete as sql_delete
from sqlalchemy import select as sql_select
from sqlalchemy import update as sql_update
from sqlmodel import Session, col, select

from notifier.events import PENDING_STATUSES, ChannelKind, NotificationStatus
from notifier.store import adoption
from notifier.store.database import Database
from notifier.store.models import (
    Attempt,
    EarlyReceipt,
    Event,
    Notification,
    Shipment,
    Suppression,
)

_T = TypeVar("_T")
NOTIFICATION: Table = Notification.__table__  # type: ignore[attr-defined]
ATTEMPT: Table = Attempt.__table__  # type: ignore[attr-defined]
SHIPMENT: Table = Shipment.__table__  # type: ignore[attr-defined]
EVENT: Table = Event.__table__  # type: ignore[attr-defined]
SUPPRESSION: Table = Suppression.__table__  # type: ignore[attr-defined]
EARLY: Table = EarlyReceipt.__table__  # type: ignore[attr-defined]

# A receipt only moves a notification forward: Twilio's callbacks arrive out of order.
RECEIPT_MOVES: dict[str, tuple[str, ...]] = {
    NotificationStatus.DELIVERED: (NotificationStatus.SENT, NotificationStatus.UNDELIVERED),
    NotificationStatus.UNDELIVERED: (NotificationStatus.SENT,),
    NotificationStatus.FAILED: (NotificationStatus.SENT,),
}


@dataclass(frozen=True, kw_only=True)
class ReceiptOutcome:
    moved: int | None  # the notification the receipt moved forward
    kept: bool = False  # no send recorded with its id yet: kept until one is


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
        self,
        *,
        now: datetime,
        limit: int,
        lease_until: datetime,
        channel: str | None = None,
        exclude: Collection[int] = (),
    ) -> list[Job]:
        """Claim due rows (and rows whose sender's lease ran out), optionally of one channel;
        never those in ``exclude`` (the caller's own sends, still being recorded)."""
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
        if exclude:
            ids = ids.where(col(Notification.id).not_in(sorted(exclude)))
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

    def finish(self, finish: Finish) -> bool:
        """Record the end of one attempt. False when the row was reclaimed meanwhile."""
        return self.finish_many([finish])[0]

    def finish_many(self, finishes: Sequence[Finish]) -> list[bool]:
        """Record the end of many attempts in one transaction (the dispatcher's group commit):
        each notification's new status and, unless it never reached a provider, its attempt.
        A row whose lease another dispatcher took over meanwhile is left alone (False)."""
        n = NOTIFICATION.c
        with self.db.write() as session:
            conn = session.connection()
            adoption.lock(conn, (_receipt_key(f.provider_id) for f in finishes if f.provider_id))
            ids = sorted({f.job.id for f in finishes})
            leases: dict[int, datetime] = dict(
                conn.execute(
                    select(n.id, n.lease_until)
                    .where(n.id.in_(ids), n.status == NotificationStatus.SENDING.value)
                    .order_by(n.id)
                    .with_for_update()
                ).all()
            )
            mine = [f for f in finishes if leases.pop(f.job.id, None) == f.job.lease_until]
            if mine:
                conn.execute(_finish_statement(), [f.values() for f in mine])
                attempts = [f.attempt() for f in mine if f.outcome not in {"expired", "suppressed"}]
                if attempts:
                    conn.execute(insert(ATTEMPT), attempts)
                _apply_early_receipts(conn, {f.provider_id: f.now for f in mine if f.provider_id})
            done = {id(f) for f in mine}
            return [id(f) in done for f in finishes]

    def give_back(self, job: Job, *, now: datetime, reason: str) -> bool:
        """Return a claimed row, unsent, to the queue: due as before, its claim not counted
        as an attempt (the claim's lease ran short before the provider could be called).
        False when another dispatcher reclaimed the row meanwhile: it is theirs now."""
        n = NOTIFICATION.c
        with self.db.write() as session:
            conn = session.connection()
            lease = conn.execute(
                select(n.lease_until)
                .where(n.id == job.id, n.status == NotificationStatus.SENDING.value)
                .with_for_update()
            ).scalar()
            if lease != job.lease_until:
                return False
            conn.execute(
                sql_update(NOTIFICATION)
                .where(n.id == job.id)
                .values(status=NotificationStatus.SCHEDULED.value, reason=reason,
                        lease_until=None, attempts=n.attempts - 1, updated_at=now)
            )  # fmt: skip
            return True

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
    ) -> ReceiptOutcome:
        """Move the notification sent as ``provider_id`` forward to ``status``. A receipt that
        would move a message but names no send recorded yet (its callback beat the
        dispatcher's write) is kept, and applied when the send is recorded (``finish_many``);
        one older than what is known moves nothing."""
        with self.db.write() as session:
            conn = session.connection()
            adoption.lock(conn, [_receipt_key(provider_id)])
            moved = _move(conn, provider_id, status, reason, now)
            if moved is not None or status not in RECEIPT_MOVES:
                return ReceiptOutcome(moved=moved)
            known = sql_select(NOTIFICATION.c.id).where(NOTIFICATION.c.provider_id == provider_id)
            if conn.execute(known.limit(1)).first() is not None:
                return ReceiptOutcome(moved=None)
            conn.execute(insert(EARLY).values(provider_id=provider_id, status=status,
                                              reason=reason, received_at=now))  # fmt: skip
            return ReceiptOutcome(moved=None, kept=True)

    def suppress(self, channel: str, address: str, reason: str, *, now: datetime) -> bool:
        """Record that ``address`` wants nothing more on ``channel``; pending sends to it stop.
        False when that changed nothing (opted out already, nothing pending)."""
        from notifier.store.repository import insert_ignore

        address = _addressed(channel, address)
        values = {"channel": channel, "address": address, "reason": reason, "created_at": now}
        with self.db.write() as session:
            added = insert_ignore(session, Suppression, values, "channel", "address")
            stopped = session.execute(
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
            return added is not None or bool(stopped.rowcount)  # type: ignore[attr-defined]

    def unsuppress(self, channel: str, address: str) -> bool:
        """Lift a suppression (START, a preference set back); False when there was none."""
        address = _addressed(channel, address)
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


@dataclass(frozen=True, kw_only=True)
class Finish:
    """How one attempt ended: the notification's new status, and what the log keeps of it."""

    job: Job
    now: datetime
    status: NotificationStatus
    outcome: str  # the attempt's: sent | transient | permanent | expired | suppressed
    reason: str = ""
    provider_id: str | None = None
    due_at: datetime | None = None  # a retry's new due time
    rendered: Mapping[str, Any] | None = None  # subject, body, html, language, encoding, …

    def values(self) -> dict[str, Any]:
        """The row's new values; None leaves a column as it was."""
        rendered = dict.fromkeys(RENDERED_COLUMNS) | dict(self.rendered or {})
        return rendered | {
            "nid": self.job.id, "status": self.status.value, "reason": self.reason,
            "now": self.now, "provider_id": self.provider_id, "due_at": self.due_at,
            "sent_at": self.now if self.status is NotificationStatus.SENT else None,
        }  # fmt: skip

    def attempt(self) -> dict[str, Any]:
        return {
            "notification_id": self.job.id, "number": self.job.attempts,
            "started_at": self.job.claimed_at, "finished_at": self.now,
            "outcome": self.outcome, "error": self.reason, "provider_id": self.provider_id,
        }  # fmt: skip


RENDERED_COLUMNS = ("subject", "body", "html", "language", "encoding", "segments")


@cache
def _finish_statement() -> Any:
    """One UPDATE for every finish of a batch; a None parameter keeps the column's value."""
    n = NOTIFICATION.c
    kept: dict[str, Any] = {name: func.coalesce(bindparam(name), n[name])
            for name in (*RENDERED_COLUMNS, "provider_id", "due_at", "sent_at")}  # fmt: skip
    return (
        sql_update(NOTIFICATION)
        .where(n.id == bindparam("nid"))
        .values(
            status=bindparam("status"),
            reason=bindparam("reason"),
            lease_until=None,
            updated_at=bindparam("now"),
            **kept,
        )
    )


def _jobs(session: Session, ids: list[int], *, claimed_at: datetime) -> list[Job]:
    """The claimed rows with what rendering needs: only those columns (a claim of hundreds
    of rows loaded whole, with every shipment's JSON columns, was a tenth of a send's CPU)."""
    if not ids:
        return []
    n, s, e, blocked = NOTIFICATION.c, SHIPMENT.c, EVENT.c, SUPPRESSION.c
    suppressed = and_(blocked.channel == n.channel, blocked.address == n.recipient)
    columns = (n.id, n.channel, n.template, n.rule, n.recipient, n.attempts, n.created_at,
               n.lease_until, n.expires_at, s.registration, e.raw)  # fmt: skip
    rows = session.execute(
        sql_select(*columns, blocked.reason.label("blocked_because"))
        .join(SHIPMENT, n.shipment_id == s.id)
        .outerjoin(EVENT, n.event_id == e.id)
        .outerjoin(SUPPRESSION, suppressed)
        .where(n.id.in_(ids))
        .order_by(n.due_at)
    ).all()
    return [
        Job(
            id=row.id,
            channel=row.channel,
            template=row.template,
            rule=row.rule,
            recipient=row.recipient or "",
            attempts=row.attempts,
            created_at=row.created_at,
            claimed_at=claimed_at,
            lease_until=_required(row.lease_until),
            expires_at=row.expires_at,
            suppressed=row.blocked_because is not None,
            registration=row.registration,
            event_raw=row.raw,
            suppressed_because=row.blocked_because or "",
        )
        for row in rows
    ]


def _addressed(channel: str, address: str) -> str:
    """Email addresses are kept lowercased, as planning writes them (recipients.email)."""
    return address.lower() if channel == ChannelKind.EMAIL.value else address


def _required(value: _T | None) -> _T:
    assert value is not None
    return value


def _receipt_key(provider_id: str) -> str:
    """The advisory lock (PostgreSQL) a send's record and its receipts take, so that of two
    daemons, one recording a send and one given its receipt, the second sees what the first
    committed: a receipt kept while the record was being written would otherwise stay kept."""
    return f"receipt {provider_id}"


def _move(conn: Any, provider_id: str, status: str, reason: str, now: datetime) -> int | None:
    """Move the notification sent as ``provider_id`` forward to ``status``: its id, or None."""
    moved: int | None = conn.execute(
        sql_update(NOTIFICATION)
        .where(
            NOTIFICATION.c.provider_id == provider_id,
            NOTIFICATION.c.status.in_(RECEIPT_MOVES.get(status, ())),
        )
        .values(status=status, reason=reason, updated_at=now)
        .returning(NOTIFICATION.c.id)
    ).scalar_one_or_none()
    return moved


def _apply_early_receipts(conn: Any, recorded: Mapping[str, datetime]) -> None:
    """Receipts that came before these sends were recorded (provider id: when it was), applied
    now in the order they came, then dropped."""
    if not recorded:
        return
    early = conn.execute(
        sql_select(EARLY.c.id, EARLY.c.provider_id, EARLY.c.status, EARLY.c.reason)
        .where(EARLY.c.provider_id.in_(sorted(recorded)))
        .order_by(EARLY.c.id)
    ).all()
    for row in early:
        _move(conn, row.provider_id, row.status, row.reason, recorded[row.provider_id])
    if early:
        conn.execute(sql_delete(EARLY).where(EARLY.c.id.in_([row.id for row in early])))
