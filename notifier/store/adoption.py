"""Registration and ingest agree on who stores a shipment's early updates (PostgreSQL).

An update for a shipment not registered yet is stored *held*; the registration adopts held
updates and plans the latest. With several daemons on PostgreSQL, both can run at once:

1. a batch of webhooks reads the shipments it names: this one is not there yet;
2. its registration commits, having looked for held updates: the batch's are not committed;
3. the batch commits its update as held, and nobody ever adopts it.

So each takes a transaction-scoped advisory lock per way a registration adopts by (courier and
waybill; a reference, for updates without a waybill) before it reads: whichever comes second
sees what the first committed. Keys are taken in one statement, sorted, so two transactions
never wait for each other in a circle. SQLite runs one write transaction at a time and needs
none of this. The dispatcher takes the same kind of lock on a sent message's id, for the same
reason between a send's record and its delivery receipt (store/queue.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, BIGINT

from notifier.events import ShipmentUpdate

_LOCK = text(
    "SELECT pg_advisory_xact_lock(k) FROM unnest(:keys) AS k"  # unnest keeps the array's order
).bindparams(bindparam("keys", type_=ARRAY(BIGINT)))


def by_waybill(cp_id: int, waybill: str) -> str:
    return f"awb {cp_id} {waybill}"


def by_reference(reference: str) -> str:
    return f"ref {reference}"


def update_keys(update: ShipmentUpdate) -> list[str]:
    """What a registration could adopt ``update`` by: its waybill with its courier, or, with
    no waybill, its references. (A waybill with any courier, cp_id -1, is never adopted.)"""
    if update.waybill:
        return [by_waybill(update.cp_id, update.waybill)] if update.cp_id != -1 else []
    return [by_reference(r) for r in update.references]


def lock(conn: Connection, keys: Iterable[str]) -> None:
    """Hold these keys until the transaction ends (PostgreSQL; nothing on SQLite)."""
    if conn.dialect.name != "postgresql":
        return
    numbers = sorted({_number(k) for k in keys})
    if numbers:
        conn.execute(_LOCK, {"keys": numbers})


def _number(key: str) -> int:
    """A stable signed 64-bit number for the key (advisory locks take a bigint). Two keys
    sharing one only wait for each other needlessly."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
