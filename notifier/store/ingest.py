"""Storing a batch of tracking updates and planning their notifications, in one transaction.

Group commit (notifier/group_commit.py) hands this module every update that arrived while the
previous transaction was committing, so one commit, one fsync and a handful of statements serve
many webhooks. The result for each update is exactly what storing it alone would give:

- concurrent batches (several daemons on one PostgreSQL database) take their locks in the same
  order, shipments by courier and waybill and then events by identity (as registration does:
  the shipment, then its held events), so they wait for each other instead of deadlocking; a
  shipment's updates are planned in the order they arrived;
- a repeated update (the same identity twice in one batch, or already stored) is a duplicate;
- updates for the same shipment are planned in *waves*, one update per shipment per wave, each
  wave seeing what the one before wrote (its new stage, the notifications it planned), so a
  burst of shipped → delivered in one batch supersedes exactly as if the webhooks came apart.

Statements are SQLAlchemy Core, built once with bound parameters (notifier/store/ingest_sql.py);
the writes go to the driver as batches of plain tuples (notifier/store/batch.py). The ORM is not
needed on this path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, or_, select

from notifier.events import Consumer, NotificationStatus, ShipmentUpdate
from notifier.planning import Plan, PlannedNotification, ShipmentState
from notifier.store import adoption
from notifier.store import ingest_sql as sql
from notifier.store.ingest_sql import SHIPMENT
from notifier.store.models import Shipment

Decide = Callable[[ShipmentState, ShipmentUpdate], Plan]


# Not frozen: built for every update ingested, and a frozen dataclass's __init__ costs three
# times a plain one's (docs/performance.md).
@dataclass(kw_only=True)
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
    """What ingest did with one update, for the caller and the log."""

    event_id: int | None
    duplicate: bool
    shipment_id: int | None
    verdict: str
    notifications: tuple[PlannedSummary, ...] = ()
    cancelled: int = 0


DUPLICATE = IngestOutcome(
    event_id=None,
    duplicate=True,
    shipment_id=None,
    verdict="duplicate: this update was already received",
)
HELD = "held: shipment not registered yet; evaluated when it is"


@dataclass(kw_only=True)
class _Item:
    """One new update on its way through the batch."""

    update: ShipmentUpdate
    event_id: int
    stored_shipment_id: int | None = None  # the event row's, as inserted
    shipment: ShipmentState | None = None
    plan: Plan | None = None
    cancelled: int = 0
    summaries: list[PlannedSummary] = field(default_factory=list)


def record_updates(
    conn: Connection,
    updates: Sequence[ShipmentUpdate],
    decide: Decide,
    *,
    now: datetime,
    rules_version: str,
) -> list[IngestOutcome]:
    """Store every update and plan for it, inside the caller's transaction on ``conn``; one
    outcome per update, in the order given."""
    order = sorted(range(len(updates)), key=lambda i: (updates[i].cp_id, updates[i].waybill, i))
    first_of: dict[str, int] = {}
    for i in order:
        first_of.setdefault(updates[i].identity, i)
    fresh = [updates[i] for i in order if first_of[updates[i].identity] == i]
    adoption.lock(conn, (key for u in fresh for key in adoption.update_keys(u)))
    # The shipments named by waybill, locked before anything is written: each event goes in
    # with its shipment (set afterwards, it would move within the shipment index, a second
    # random write per event in a large database), and the first wave plans from them.
    located = _by_waybill(conn, [u for u in fresh if _names_waybill(u)])
    shipment_ids = {
        u.identity: located[u.cp_id, u.waybill].id for u in fresh if (u.cp_id, u.waybill) in located
    }
    event_ids = _insert_events(conn, fresh, shipment_ids, now)
    items = {
        i: _Item(
            update=updates[i],
            event_id=event_ids[updates[i].identity],
            stored_shipment_id=shipment_ids.get(updates[i].identity),
        )
        for i in order
        if first_of[updates[i].identity] == i and updates[i].identity in event_ids
    }
    for number, wave in enumerate(_waves([items[i] for i in order if i in items])):
        _find_shipments(conn, wave, located if number == 0 else None)
        plan_and_record(conn, [x for x in wave if x.shipment is not None], decide, now=now,
                        rules_version=rules_version, heard=True)  # fmt: skip
    outcomes = dict(zip(items, _finish_events(conn, list(items.values())), strict=True))
    return [outcomes.get(i, DUPLICATE) for i in range(len(updates))]


def evaluate(
    conn: Connection,
    shipment: ShipmentState,
    event_id: int,
    update: ShipmentUpdate,
    decide: Decide,
    *,
    now: datetime,
    rules_version: str,
) -> IngestOutcome:
    """Plan one stored update of a known shipment (a registration adopting earlier updates)."""
    item = _Item(update=update, event_id=event_id, shipment=shipment)
    plan_and_record(conn, [item], decide, now=now, rules_version=rules_version)
    return _finish_events(conn, [item])[0]


def plan_and_record(
    conn: Connection,
    wave: Sequence[_Item],
    decide: Decide,
    *,
    now: datetime,
    rules_version: str,
    heard: bool = False,
) -> None:
    """Plan each item (one per shipment), move the shipments on, cancel what the new stages
    supersede, and insert the planned notifications, skipping opted-out recipients. ``heard``:
    the updates just came from Clickpost, so each shipment records that it heard from it now
    (polling then leaves it alone a while), in the same statement when it moves on."""
    for item in wave:
        assert item.shipment is not None
        item.plan = decide(item.shipment, item.update)
    advancing = [x for x in wave if x.plan is not None and x.plan.advance]
    (sql.ADVANCE_HEARD if heard else sql.ADVANCE).run(
        conn, [_advance_values(x, now) for x in advancing]
    )
    if heard:
        _touch_shipments(conn, [x for x in wave if x.plan is not None and not x.plan.advance], now)
    _supersede(conn, advancing, now)
    planned = [(x, p) for x in wave if x.plan is not None for p in x.plan.notifications]
    opted_out = _opted_out(
        conn, {(p.channel.value, p.recipient) for _, p in planned if p.recipient}
    )
    rows = [_notification_values(x, _unless(opted_out, p), now, rules_version) for x, p in planned]
    new_ids = {key: nid for nid, key in sql.INSERT_NOTIFICATIONS.returning(conn, rows)}
    for (item, planned_one), row in zip(planned, rows, strict=True):
        item.summaries.append(_summary(planned_one, row, new_ids.get(row["dedup_key"])))


# -- the steps ----------------------------------------------------------------------------------


def _insert_events(
    conn: Connection,
    updates: Sequence[ShipmentUpdate],
    shipment_ids: dict[str, int],
    now: datetime,
) -> dict[str, int]:
    """The new events' ids by identity; an identity missing from the result was a duplicate.
    Rows go in identity order: two batches holding the same updates (one webhook posted to two
    daemons) then wait for each other in the same order instead of deadlocking."""
    rows = sorted(
        (_event_values(u, shipment_ids.get(u.identity), now) for u in updates),
        key=lambda r: r["idempotency_key"],
    )
    return {key: eid for eid, key in sql.INSERT_EVENTS.returning(conn, rows)}


def _waves(items: Sequence[_Item]) -> list[list[_Item]]:
    """Split the batch so no wave holds two updates for the same shipment; the order of a
    shipment's updates is kept. An update without a waybill may match any shipment by its
    references, so it goes alone."""
    waves: list[list[_Item]] = []
    depth: dict[tuple[int, str], int] = {}  # the wave after a shipment's latest update
    floor = 0  # no update goes before a lone one that came earlier
    for item in items:
        u = item.update
        if not _names_waybill(u):
            waves.append([item])
            floor = len(waves)
            continue
        key = (u.cp_id, u.waybill)
        level = max(depth.get(key, 0), floor)
        while len(waves) <= level:
            waves.append([])
        waves[level].append(item)
        depth[key] = level + 1
    return [w for w in waves if w]


def _find_shipments(
    conn: Connection,
    wave: Sequence[_Item],
    located: dict[tuple[int, str], ShipmentState] | None = None,
) -> None:
    """Each item's shipment, locked for the rest of the transaction (PostgreSQL), in order.
    ``located``: shipments already read and locked by courier and waybill that no earlier wave has
    moved on since."""
    by_awb = [x for x in wave if _names_waybill(x.update)]
    if located is None:
        located = _by_waybill(conn, [x.update for x in by_awb])
    for item in by_awb:
        item.shipment = located.get((item.update.cp_id, item.update.waybill))
    for item in wave:
        if not _names_waybill(item.update):
            item.shipment = _find_by_reference(conn, item.update)


def _names_waybill(update: ShipmentUpdate) -> bool:
    """Whether the update names its shipment by courier and waybill (else by its references,
    or by waybill with any courier: cp_id -1)."""
    return bool(update.waybill) and update.cp_id != -1


def _by_waybill(
    conn: Connection, updates: Sequence[ShipmentUpdate]
) -> dict[tuple[int, str], ShipmentState]:
    """The shipments of these updates by (courier, waybill), locked in that order (PostgreSQL)."""
    found: dict[tuple[int, str], ShipmentState] = {}
    for cp_id in sorted({u.cp_id for u in updates}):
        waybills = sorted({u.waybill for u in updates if u.cp_id == cp_id})
        rows = sql.SHIPMENTS_BY_WAYBILL.rows(conn, {"cp_id": cp_id, "waybills": waybills})
        found |= {(cp_id, s.waybill): s for s in map(shipment_state, rows)}
    return found


def _find_by_reference(conn: Connection, update: ShipmentUpdate) -> ShipmentState | None:
    """By waybill alone (cp_id -1: any courier) or, with no waybill, by order id / reference."""
    query = select(*sql.STATE)
    if update.cp_id != -1:
        query = query.where(SHIPMENT.c.cp_id == update.cp_id)
    if update.waybill:
        query = query.where(SHIPMENT.c.waybill == update.waybill)
    else:
        refs = list(update.references)
        query = query.where(
            or_(SHIPMENT.c.reference_number.in_(refs), SHIPMENT.c.order_id.in_(refs))
        )
    row = conn.execute(query.order_by(SHIPMENT.c.id).limit(1).with_for_update()).first()
    return shipment_state(row) if row is not None else None


def _touch_shipments(conn: Connection, items: Sequence[_Item], now: datetime) -> None:
    """Record that each shipment heard from Clickpost now (polling leaves it alone a while)."""
    sql.TOUCH.run(
        conn, [{"sid": x.shipment.id, "now": now} for x in items if x.shipment is not None]
    )


def _advance_values(item: _Item, now: datetime) -> dict[str, Any]:
    assert item.shipment is not None and item.plan is not None
    plan = item.plan
    return {
        "sid": item.shipment.id, "stage": plan.stage, "status_code": plan.status_code,
        "status_at": plan.status_at, "state": plan.state, "now": now,
    }  # fmt: skip


def _supersede(conn: Connection, items: Sequence[_Item], now: datetime) -> None:
    """Cancel the shipments' pending messages that their new stages make pointless. The
    pending rows are locked (PostgreSQL), so a dispatcher cannot claim one meanwhile."""
    superseding = {x.shipment.id: x for x in items if x.shipment and x.plan and x.plan.supersede}
    if not superseding:
        return
    pending = sql.PENDING_OF_SHIPMENTS.rows(conn, {"sids": sorted(superseding)})
    cancel = []
    for nid, shipment_id, channel, trigger_at, trigger_stage in pending:
        item = superseding[shipment_id]
        assert item.plan is not None and item.plan.supersede is not None
        if item.plan.supersede.covers(channel, trigger_at, trigger_stage):
            item.cancelled += 1
            cancel.append({"nid": nid, "status": NotificationStatus.CANCELLED.value,
                           "why": item.plan.supersede.reason, "now": now})  # fmt: skip
    sql.CANCEL.run(conn, cancel)


def _opted_out(conn: Connection, recipients: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The suppressions (SMS STOP, unsubscribe) among these (channel, address) pairs, looked
    up by the pair's unique index (by address alone, SQLite would read every suppression)."""
    if not recipients:
        return {}
    channels, addresses = {c for c, _ in recipients}, {a for _, a in recipients}
    found = sql.SUPPRESSED.rows(
        conn, {"channels": sorted(channels), "addresses": sorted(addresses)}
    )
    return {(channel, address): reason for channel, address, reason in found}


def _unless(
    opted_out: dict[tuple[str, str], str], planned: PlannedNotification
) -> PlannedNotification:
    reason = opted_out.get((planned.channel.value, planned.recipient or ""))
    if reason is None or planned.status is not NotificationStatus.SCHEDULED:
        return planned
    return replace(planned, status=NotificationStatus.SKIPPED, reason=f"opted out: {reason}")


def _finish_events(conn: Connection, items: Sequence[_Item]) -> list[IngestOutcome]:
    """Each item's outcome, in order, written on its event in words as the log shows it, with
    its shipment where the row does not have it yet (a held update adopted at registration, a
    lookup by reference)."""
    outcomes = [_outcome(x) for x in items]
    same, adopted = [], []
    for x, outcome in zip(items, outcomes, strict=True):
        shipment_id = x.shipment.id if x.shipment else None
        row = {"eid": x.event_id, "outcome": _describe(outcome)}
        if shipment_id == x.stored_shipment_id:
            same.append(row)
        else:
            adopted.append(row | {"shipment_id": shipment_id})
    sql.FINISH_EVENTS.run(conn, same)
    sql.ADOPT_EVENTS.run(conn, adopted)
    return outcomes


# -- rows and results ---------------------------------------------------------------------------


def shipment_state(row: Sequence[Any]) -> ShipmentState:
    """A row of the ``sql.STATE`` columns, taken by position: a row's attribute lookup by name
    cost more than the rest of this. ``state_of`` takes a ``Shipment``."""
    (id_, cp_id, waybill, account_code, order_type, delivery_type, consumer, stage, status_code,
     status_at, state) = row  # fmt: skip
    return ShipmentState(
        id=id_,
        cp_id=cp_id,
        waybill=waybill,
        account_code=account_code,
        order_type=order_type,
        delivery_type=delivery_type,
        consumer=Consumer.stored(consumer),
        stage=stage,
        status_code=status_code,
        status_at=status_at,
        state=state,
    )


def state_of(shipment: Shipment) -> ShipmentState:
    """A ``Shipment``'s state columns, as :func:`shipment_state` reads them from a row."""
    return shipment_state([getattr(shipment, name) for name in sql.STATE_COLUMNS])


def _event_values(update: ShipmentUpdate, shipment_id: int | None, now: datetime) -> dict[str, Any]:
    return {
        "idempotency_key": update.identity,
        "shipment_id": shipment_id,
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


def _notification_values(
    item: _Item, planned: PlannedNotification, now: datetime, rules_version: str
) -> dict[str, Any]:
    assert item.shipment is not None
    return {
        "shipment_id": item.shipment.id,
        "event_id": item.event_id,
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


def _summary(
    planned: PlannedNotification, row: dict[str, Any], new_id: int | None
) -> PlannedSummary:
    if new_id is None:
        return PlannedSummary(
            notification_id=None,
            rule=planned.rule,
            channel=row["channel"],
            status="duplicate",
            reason="duplicate: already planned for this shipment event",
        )
    return PlannedSummary(
        notification_id=new_id,
        rule=planned.rule,
        channel=row["channel"],
        status=row["status"],
        reason=row["reason"],
        due_at=planned.due_at,
    )


def _outcome(item: _Item) -> IngestOutcome:
    if item.shipment is None:
        return IngestOutcome(
            event_id=item.event_id, duplicate=False, shipment_id=None, verdict=HELD
        )
    assert item.plan is not None
    return IngestOutcome(
        event_id=item.event_id,
        duplicate=False,
        shipment_id=item.shipment.id,
        verdict=item.plan.verdict,
        notifications=tuple(item.summaries),
        cancelled=item.cancelled,
    )


def _describe(outcome: IngestOutcome) -> str:
    parts = [outcome.verdict]
    parts += [
        f"{s.channel} {s.status}" + (f" ({s.reason})" if s.reason else "")
        for s in outcome.notifications
    ]
    if outcome.cancelled:
        parts.append(f"{outcome.cancelled} pending cancelled as superseded")
    return "; ".join(parts)
