"""The tables. Dedup lives here, as unique constraints, never as read-then-write.

- ``shipment``: one row per registered AWB (unique cp_id + waybill), with who to tell and the
  latest status the shipment reached (the "no going backwards" guard reads it).
- ``event``: every tracking update received, raw body kept; unique ``idempotency_key`` (the
  scan's identity) makes ingest idempotent. ``shipment_id`` is null until the AWB is registered.
- ``notification``: the delivery log. Unique ``dedup_key`` (shipment, rule, channel, repeat
  scope) makes "once per shipment event" a database fact.
- ``attempt``: one row per try at sending a notification.
- ``consoleaction``: a resend or cancel done by a support agent in the console.

All times are aware UTC (sqlmodel rejects naive ones).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Dialect, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel
from sqlmodel.sql.sqltypes import UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(UTCDateTime):
    """sqlmodel's aware-UTC datetime, converted in one step on SQLite.

    Ingest binds about a dozen datetimes per webhook. sqlmodel's type converts each to UTC,
    then SQLAlchemy's SQLite type formats it through a dict of its fields: 2.3 µs a value, more
    than the row's insert costs SQLite. Here one call writes the same text (``2026-11-27
    07:05:48.210074``, what SQLAlchemy writes, so old rows compare and sort alike) and reads it
    back; other databases keep the two steps, their drivers taking datetimes as they are.
    """

    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        return _sqlite_text if dialect.name == "sqlite" else super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return _sqlite_datetime
        return super().result_processor(dialect, coltype)


def _sqlite_text(value: datetime | None) -> str | None:
    return None if value is None else _utc_text(value)


@functools.lru_cache(maxsize=4096)
def _utc_text(value: datetime) -> str:
    """Each instant formatted once: a batch writes its ``now`` on nearly every row. Equal aware
    times are the same instant, and so have the same text, whatever their zones."""
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value} stored: times must be aware (UTC)")
    return value.astimezone(UTC).isoformat(" ", "microseconds")[:26]  # without "+00:00"


def _sqlite_datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    if len(value) == 26:  # what _sqlite_text writes: read as UTC in one step
        return datetime.fromisoformat(value + "+00:00")
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class Shipment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("cp_id", "waybill", name="uq_shipment_awb"),)

    id: int | None = Field(default=None, primary_key=True)
    cp_id: int
    waybill: str = Field(index=True)  # the console's search by waybill prefix
    account_code: str | None = None
    reference_number: str | None = Field(default=None, index=True)
    order_id: str | None = Field(default=None, index=True)
    consumer: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    shipment_info: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    registration: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    order_type: str | None = None
    delivery_type: str | None = None
    order_date: datetime | None = Field(default=None, sa_type=UtcDateTime)
    ship_date: datetime | None = Field(default=None, sa_type=UtcDateTime)
    stage: int | None = None
    status_code: int | None = None
    status_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    state: str = Field(default="active", index=True)  # active | terminal | unregistered
    tracking_id: str | None = None
    last_event_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    polled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


# Only events held for a shipment not registered yet: registration looks them up by waybill.
# An event of a known shipment is stored with it and never enters this index, which spares
# ingest a write at a random place in a large index for every update.
_HELD = text("shipment_id IS NULL")


class Event(SQLModel, table=True):
    __table_args__ = (
        Index("ix_event_held", "waybill", sqlite_where=_HELD, postgresql_where=_HELD),
    )

    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(unique=True)
    shipment_id: int | None = Field(default=None, foreign_key="shipment.id", index=True)
    cp_id: int
    waybill: str
    reference_number: str | None = None
    order_id: str | None = None
    source: str = "webhook"
    scan_code: int
    scan_at: datetime = Field(sa_type=UtcDateTime)
    trigger_code: int
    trigger_at: datetime = Field(sa_type=UtcDateTime)
    ndr_code: int | None = None
    notification_event_id: int | None = None
    raw: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    outcome: str = ""
    received_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Notification(SQLModel, table=True):
    __table_args__ = (
        Index("ix_notification_due", "status", "due_at"),
        # A shipment's messages, and of those the pending ones that a new stage may supersede
        # (ingest reads only those, never the table rows of messages long sent).
        Index("ix_notification_shipment_status", "shipment_id", "status"),
        # The console's delivery log, newest first, by time range, channel (covering the
        # dashboard's counts per day), status or rule; and its search by recipient.
        Index("ix_notification_created", "created_at", "channel", "status"),
        Index("ix_notification_status_created", "status", "created_at"),
        Index("ix_notification_rule_created", "rule", "created_at"),
        Index("ix_notification_recipient", "recipient"),
    )

    id: int | None = Field(default=None, primary_key=True)
    shipment_id: int = Field(foreign_key="shipment.id")
    event_id: int | None = Field(default=None, foreign_key="event.id")
    rule: str
    channel: str
    dedup_key: str = Field(unique=True)
    recipient: str | None = None
    recipient_masked: str = ""
    template: str
    language: str | None = None
    rules_version: str
    subject: str | None = Field(default=None, sa_column=Column(Text))
    body: str | None = Field(default=None, sa_column=Column(Text))
    html: str | None = Field(default=None, sa_column=Column(Text))
    encoding: str | None = None
    segments: int | None = None
    status: str
    reason: str = ""
    trigger_code: int
    trigger_stage: int | None = None
    trigger_at: datetime = Field(sa_type=UtcDateTime)
    due_at: datetime = Field(sa_type=UtcDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    attempts: int = 0
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    provider_id: str | None = Field(default=None, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class Attempt(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    notification_id: int = Field(foreign_key="notification.id", index=True)
    number: int
    started_at: datetime = Field(sa_type=UtcDateTime)
    finished_at: datetime = Field(sa_type=UtcDateTime)
    outcome: str  # sent | transient | permanent | expired
    error: str = ""
    provider_id: str | None = None


class EarlyReceipt(SQLModel, table=True):
    """A delivery receipt that came before its send was recorded: a provider's callback can
    beat the dispatcher's write of the message id (a busy or locked database, a fast handset).
    Kept, and applied when a send's record names its id; retention clears those never used."""

    id: int | None = Field(default=None, primary_key=True)
    provider_id: str = Field(index=True)
    status: str  # delivered | undelivered | failed
    reason: str = ""
    received_at: datetime = Field(sa_type=UtcDateTime)


class ConsoleAction(SQLModel, table=True):
    """What a support agent did to a notification in the console (resend, cancel): the manual
    steps of the delivery log, kept beside the attempts they caused."""

    id: int | None = Field(default=None, primary_key=True)
    notification_id: int = Field(foreign_key="notification.id", index=True)
    action: str  # resend | cancel
    role: str  # admin
    previous_status: str
    previous_reason: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Suppression(SQLModel, table=True):
    """An address that must get no more messages on a channel (SMS STOP, unsubscribe)."""

    __table_args__ = (UniqueConstraint("channel", "address", name="uq_suppression"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str
    address: str
    reason: str
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class ClickpostCall(SQLModel, table=True):
    """A call owed to Clickpost's API (awb-register, awb-unregister): stored in the same
    transaction as the registration, made afterwards, retried until it succeeds, so a
    Clickpost outage never loses a registration."""

    __table_args__ = (UniqueConstraint("shipment_id", "kind", "body_hash", name="uq_call"),)

    id: int | None = Field(default=None, primary_key=True)
    shipment_id: int = Field(foreign_key="shipment.id", index=True)
    kind: str  # register | unregister
    body: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    body_hash: str
    status: str = Field(default="pending", index=True)  # pending | done | failed
    attempts: int = 0
    last_error: str = ""
    due_at: datetime = Field(sa_type=UtcDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
