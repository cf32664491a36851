"""What the support console reads about shipments, and the two things it may change (resend,
cancel); the delivery log and the dashboard's counts are in :mod:`notifier.store.console_log`.

Every query is shaped for a log of millions of rows: prefix searches are ranges on an index
(never ``LIKE 'x%'``, which SQLite only indexes under ``COLLATE NOCASE``); only a phone's last
digits, and a search that found nothing else, scan. ``benchmarks/console_speed.py`` times them
over 1,000,000 notifications.

Addresses leave this module masked, except the rendered text of a message, which the shipment
page shows to a logged-in agent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, cast, or_
from sqlalchemy import update as sql_update
from sqlmodel import col, select

from notifier import recipients
from notifier.events import PENDING_STATUSES, NotificationStatus
from notifier.store.database import Database
from notifier.store.models import Attempt, ConsoleAction, Event, Notification, Shipment

SEARCH_LIMIT = 50
MIN_SEARCH = 3
RESEND_REASON = "manual resend by console"
CANCEL_REASON = "cancelled by console"
# A resend puts a finished message back in the queue; one still queued or in flight is not
# finished, and a row without an address (skipped for "no email", or purged) has nothing to send.
RESENDABLE = tuple(
    s for s in NotificationStatus if s not in (*PENDING_STATUSES, NotificationStatus.SENDING)
)
_PHONE_INPUT = re.compile(r"^[\d\s+\-().]+$")


# -- search --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ShipmentHit:
    id: int
    cp_id: int
    waybill: str
    reference_number: str | None
    order_id: str | None
    name: str
    phone: str  # masked
    email: str  # masked
    state: str
    status_code: int | None
    last_event_at: datetime | None


def search(db: Database, text: str, *, limit: int = SEARCH_LIMIT) -> list[ShipmentHit]:
    """Shipments whose waybill, order id or reference number starts with ``text``, or that
    were messaged at a phone or email matching it (a full or partial number, the start of an
    address). Newest first within each kind of match; at most ``limit``."""
    term = text.strip()
    if len(term) < MIN_SEARCH:
        return []
    with db.read() as session:
        ids: dict[int, None] = {}
        for query in _search_queries(term, limit):
            ids.update(dict.fromkeys(i for i in session.execute(query).scalars() if i))
            if len(ids) >= limit:
                break
        if not ids:  # last resort: a substring of the registration's consumer details
            ids.update(dict.fromkeys(session.execute(_consumer_contains(term, limit)).scalars()))
        chosen = list(ids)[:limit]
        rows = session.exec(select(Shipment).where(col(Shipment.id).in_(chosen))).all()
    by_id = {s.id: s for s in rows}
    return [_hit(by_id[i]) for i in chosen if i in by_id]


def _search_queries(term: str, limit: int) -> Iterator[Any]:
    for column in (Shipment.waybill, Shipment.reference_number, Shipment.order_id):
        for variant in dict.fromkeys((term, term.upper())):
            yield (
                select(Shipment.id)
                .where(_prefix(col(column), variant))
                .order_by(col(column))
                .limit(limit)
            )
    for condition in _recipient_conditions(term):
        yield (
            select(Notification.shipment_id)
            .where(condition)
            .order_by(col(Notification.id).desc())
            .limit(limit * 4)
        )


def _recipient_conditions(term: str) -> Iterator[ColumnElement[bool]]:
    recipient = col(Notification.recipient)
    if _PHONE_INPUT.match(term) and sum(c.isdigit() for c in term) >= 4:
        digits = re.sub(r"\D", "", term)
        full = recipients.phone(term).address
        if full:
            yield recipient.in_((full, f"whatsapp:{full}"))
            return
        local = digits.lstrip("0")  # 098… is a trunk prefix: +9198…
        starts = {f"+{digits}"} | ({f"+91{local}"} if len(local) >= 4 else set())
        yield or_(*(_prefix(recipient, s) for s in sorted(starts)))
        yield recipient.endswith(digits, autoescape=True)  # "the number ending 3210"
        return
    for variant in dict.fromkeys((term, term.lower())):
        yield _prefix(recipient, variant)


def _consumer_contains(term: str, limit: int) -> Any:
    consumer = cast(col(Shipment.consumer), String)
    return (
        select(Shipment.id)
        .where(consumer.icontains(term, autoescape=True))
        .order_by(col(Shipment.id).desc())
        .limit(limit)
    )


def _prefix(column: Any, prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, as a range an index can serve on every backend."""
    following = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    result: ColumnElement[bool] = (column >= prefix) & (column < following)
    return result


def _hit(s: Shipment) -> ShipmentHit:
    consumer = s.consumer or {}
    return ShipmentHit(
        id=s.id or 0, cp_id=s.cp_id, waybill=s.waybill, reference_number=s.reference_number,
        order_id=s.order_id, name=str(consumer.get("name") or ""),
        phone=recipients.phone(consumer.get("phone")).masked,
        email=recipients.email(consumer.get("email")).masked,
        state=s.state, status_code=s.status_code, last_event_at=s.last_event_at,
    )  # fmt: skip


# -- one shipment --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HistoryLine:
    at: datetime
    what: str
    outcome: str
    provider_id: str = ""
    manual: bool = False


@dataclass(frozen=True, kw_only=True)
class NotificationDetail:
    row: Notification
    attempts: list[Attempt]
    actions: list[ConsoleAction]

    @property
    def recipient(self) -> str:
        return self.row.recipient_masked

    @property
    def history(self) -> list[HistoryLine]:
        """Attempts and the console's manual steps, in the order they happened."""
        lines = [
            HistoryLine(at=a.created_at, what=f"manual {a.action} by console ({a.role})",
                        outcome=f"was {a.previous_status}", manual=True)
            for a in self.actions
        ] + [
            HistoryLine(at=a.finished_at, what=f"attempt {a.number}",
                        outcome=f"{a.outcome}: {a.error}" if a.error else a.outcome,
                        provider_id=a.provider_id or "")
            for a in self.attempts
        ]  # fmt: skip
        return sorted(lines, key=lambda line: line.at)

    @property
    def receipt(self) -> str:
        """What the provider's delivery receipt said, when one came."""
        status = self.row.status
        if status in (NotificationStatus.DELIVERED, NotificationStatus.UNDELIVERED):
            return status
        return ""


@dataclass(frozen=True, kw_only=True)
class ShipmentPage:
    shipment: ShipmentHit
    registration_raw: dict[str, Any]
    events: list[Event]
    notifications: list[NotificationDetail]


def shipment_page(db: Database, shipment_id: int) -> ShipmentPage | None:
    with db.read() as session:
        shipment = session.get(Shipment, shipment_id)
        if shipment is None:
            return None
        events = session.exec(
            select(Event)
            .where(col(Event.shipment_id) == shipment_id)
            .order_by(col(Event.trigger_at), col(Event.id))
        ).all()
        rows = session.exec(
            select(Notification)
            .where(col(Notification.shipment_id) == shipment_id)
            .order_by(col(Notification.id))
        ).all()
        ids = [n.id for n in rows]
        attempts = session.exec(
            select(Attempt).where(col(Attempt.notification_id).in_(ids)).order_by(col(Attempt.id))
        ).all()
        actions = session.exec(
            select(ConsoleAction)
            .where(col(ConsoleAction.notification_id).in_(ids))
            .order_by(col(ConsoleAction.id))
        ).all()
    details = [
        NotificationDetail(
            row=n,
            attempts=[a for a in attempts if a.notification_id == n.id],
            actions=[a for a in actions if a.notification_id == n.id],
        )
        for n in rows
    ]
    return ShipmentPage(shipment=_hit(shipment), registration_raw=shipment.registration,
                        events=list(events), notifications=details)  # fmt: skip


def notification(db: Database, notification_id: int) -> tuple[Notification, Shipment] | None:
    with db.read() as session:
        row = session.exec(
            select(Notification, Shipment)
            .join(Shipment, col(Notification.shipment_id) == col(Shipment.id))
            .where(col(Notification.id) == notification_id)
        ).first()
    return (row[0], row[1]) if row else None


def registration_of(db: Database, shipment_id: int) -> dict[str, Any] | None:
    with db.read() as session:
        shipment = session.get(Shipment, shipment_id)
        return dict(shipment.registration) if shipment else None


def shipment_by_waybill(db: Database, waybill: str) -> int | None:
    with db.read() as session:
        found: int | None = session.exec(
            select(Shipment.id).where(col(Shipment.waybill) == waybill.strip()).limit(1)
        ).first()
        return found


# -- actions -------------------------------------------------------------------------------------


def resend(db: Database, notification_id: int, *, role: str, now: datetime) -> bool:
    """Put a finished notification back in the queue, due now, as a manual resend.

    The dispatcher then claims it like any other: a new attempt with its own number, provider
    id and outcome. Its expiry is lifted (the agent asked for it now); the retry bounds stay,
    so a transient failure of an old message is not retried for a day. False when the row
    cannot be resent (pending, in flight, no address, unknown): one conditional UPDATE, so two
    agents clicking at once resend it once.
    """
    values = {"status": NotificationStatus.SCHEDULED, "reason": RESEND_REASON, "due_at": now,
              "expires_at": None, "lease_until": None, "updated_at": now}  # fmt: skip
    return _act(db, notification_id, "resend", role, now, RESENDABLE, values,
                col(Notification.recipient).is_not(None))  # fmt: skip


def cancel(db: Database, notification_id: int, *, role: str, now: datetime) -> bool:
    """Cancel a notification still waiting to be sent. False when it is not waiting."""
    values = {"status": NotificationStatus.CANCELLED, "reason": CANCEL_REASON,
              "lease_until": None, "updated_at": now}  # fmt: skip
    return _act(db, notification_id, "cancel", role, now, PENDING_STATUSES, values)


def _act(
    db: Database,
    notification_id: int,
    action: str,
    role: str,
    now: datetime,
    allowed: Sequence[str],
    values: dict[str, Any],
    *extra: ColumnElement[bool],
) -> bool:
    with db.write() as session:
        before = session.execute(
            select(Notification.status, Notification.reason)
            .where(col(Notification.id) == notification_id)
            .with_for_update()
        ).first()
        changed = session.execute(
            sql_update(Notification)
            .where(
                col(Notification.id) == notification_id,
                col(Notification.status).in_(allowed),
                *extra,
            )
            .values(**values)
            .returning(col(Notification.id))
        ).scalar_one_or_none()
        if changed is None or before is None:
            return False
        session.add(ConsoleAction(notification_id=notification_id, action=action, role=role,
                                  previous_status=before[0], previous_reason=before[1],
                                  created_at=now))  # fmt: skip
        return True
