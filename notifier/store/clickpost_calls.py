"""The store's side of the Clickpost integration: calls owed to Clickpost, and polling.

Calls (awb-register, awb-unregister) are rows written in the registration's own transaction
and claimed with a lease like notifications, so a Clickpost outage delays them and loses
nothing. Polling picks active shipments that have heard nothing for a while.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy import update as sql_update
from sqlmodel import Session, col, select

from notifier.store.database import Database
from notifier.store.models import ClickpostCall, Shipment


@dataclass(frozen=True, kw_only=True)
class OwedCall:
    id: int
    shipment_id: int
    kind: str
    body: Mapping[str, Any]
    attempts: int
    lease_until: datetime


@dataclass(frozen=True, kw_only=True)
class PollTarget:
    shipment_id: int
    cp_id: int
    waybill: str


def owe_call(session: Session, shipment_id: int, kind: str, body: Mapping[str, Any],
             now: datetime) -> None:  # fmt: skip
    """Within the caller's transaction: a call to make; the same call twice is one row."""
    from notifier.store.repository import insert_ignore

    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    values = {"shipment_id": shipment_id, "kind": kind, "body": dict(body),
              "body_hash": digest[:32], "status": "pending", "attempts": 0, "last_error": "",
              "due_at": now, "created_at": now, "updated_at": now}  # fmt: skip
    insert_ignore(session, ClickpostCall, values, "shipment_id", "kind", "body_hash")


class ClickpostCalls:
    def __init__(self, db: Database) -> None:
        self.db = db

    def claim_due(self, *, now: datetime, limit: int, lease_until: datetime) -> list[OwedCall]:
        due = or_(
            and_(col(ClickpostCall.status) == "pending", col(ClickpostCall.due_at) <= now,
                 or_(col(ClickpostCall.lease_until).is_(None),
                     col(ClickpostCall.lease_until) < now)),
        )  # fmt: skip
        ids = (select(ClickpostCall.id).where(due).order_by(col(ClickpostCall.due_at))
               .limit(limit).with_for_update(skip_locked=True))  # fmt: skip
        with self.db.write() as session:
            claimed = session.execute(
                sql_update(ClickpostCall)
                .where(col(ClickpostCall.id).in_(ids.scalar_subquery()))
                .values(lease_until=lease_until, attempts=col(ClickpostCall.attempts) + 1,
                        updated_at=now)
                .returning(col(ClickpostCall.id))
            ).scalars().all()  # fmt: skip
            rows = session.exec(select(ClickpostCall).where(col(ClickpostCall.id).in_(claimed)))
            return [
                OwedCall(id=c.id or 0, shipment_id=c.shipment_id, kind=c.kind, body=c.body,
                         attempts=c.attempts, lease_until=lease_until)
                for c in rows
            ]  # fmt: skip

    def finish(self, call: OwedCall, *, now: datetime, status: str, error: str = "",
               due_at: datetime | None = None, tracking_id: str | None = None) -> None:  # fmt: skip
        """``done`` or ``failed`` for good, or ``pending`` again with a later ``due_at``."""
        values: dict[str, Any] = {"status": status, "last_error": error, "lease_until": None,
                                  "updated_at": now}  # fmt: skip
        if due_at is not None:
            values["due_at"] = due_at
        with self.db.write() as session:
            session.execute(sql_update(ClickpostCall).where(col(ClickpostCall.id) == call.id)
                            .values(**values))  # fmt: skip
            if tracking_id:
                session.execute(
                    sql_update(Shipment).where(col(Shipment.id) == call.shipment_id)
                    .values(tracking_id=tracking_id)
                )  # fmt: skip

    # -- polling ----------------------------------------------------------------------------------

    def poll_targets(self, *, now: datetime, quiet_since: datetime, limit: int) -> list[PollTarget]:
        """Active shipments with no update (and no poll) since ``quiet_since``, oldest first.

        Marks them polled at once, so two daemons sharing the database split the work and a
        failing poll is not retried before the next interval.
        """
        heard = or_(
            col(Shipment.last_event_at).is_(None), col(Shipment.last_event_at) < quiet_since
        )
        asked = or_(col(Shipment.polled_at).is_(None), col(Shipment.polled_at) < quiet_since)
        ids = (select(Shipment.id)
               .where(col(Shipment.state) == "active", col(Shipment.created_at) < quiet_since,
                      heard, asked)
               .order_by(col(Shipment.polled_at).nulls_first(), col(Shipment.id))
               .limit(limit).with_for_update(skip_locked=True))  # fmt: skip
        with self.db.write() as session:
            rows = session.execute(
                sql_update(Shipment).where(col(Shipment.id).in_(ids.scalar_subquery()))
                .values(polled_at=now)
                .returning(col(Shipment.id), col(Shipment.cp_id), col(Shipment.waybill))
            ).all()  # fmt: skip
        return [PollTarget(shipment_id=i, cp_id=c, waybill=w) for i, c, w in rows]
