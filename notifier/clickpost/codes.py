"""Clickpost's code tables as data: status codes, buckets, notification events and NDR codes.

Route on numbers, never on description strings (clickpost-facts.md): the docs table spells
descriptions in UPPER_SNAKE, real payloads in CamelCase. Names exist for people (logs,
rules.yaml), so every lookup by name ignores case and separators and either spelling works.

Codes outside the tables are valid-but-unknown (clickpost-facts.md: 0, 22, 24, 40-55 and
1001-1006 appear in real traffic without docs): :func:`status`, :func:`ndr` and
:func:`notification_event` return a placeholder entry for them and never raise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "CARRIES_NDR",
    "NDR_CODES",
    "NOTIFICATION_EVENTS",
    "STATUS_CODES",
    "TERMINAL_STAGE",
    "Bucket",
    "NdrCode",
    "NotificationEvent",
    "StatusCode",
    "event_id_by_name",
    "ndr",
    "ndr_code_by_name",
    "notification_event",
    "status",
    "status_code_by_name",
]


class Bucket(IntEnum):
    """Clickpost's status buckets.

    For a tracking page, not for routing: real payloads contradict the bucket table at times
    (clickpost-facts.md).
    """

    ORDER_PLACED = 1
    DISPATCHED = 2
    IN_TRANSIT = 3
    OUT_FOR_DELIVERY = 4
    FAILED_DELIVERY = 5
    DELIVERED = 6
    RETURNED = 7
    LOST = 8
    DAMAGED = 9

    @property
    def label(self) -> str:
        """Plain English for messages and logs."""
        return _BUCKET_LABELS[self]


_BUCKET_LABELS: Mapping[Bucket, str] = {
    Bucket.ORDER_PLACED: "Order placed",
    Bucket.DISPATCHED: "Dispatched",
    Bucket.IN_TRANSIT: "In transit",
    Bucket.OUT_FOR_DELIVERY: "Out for delivery",
    Bucket.FAILED_DELIVERY: "Failed delivery",
    Bucket.DELIVERED: "Delivered",
    Bucket.RETURNED: "Returned",
    Bucket.LOST: "Lost",
    Bucket.DAMAGED: "Damaged",
}


@dataclass(frozen=True, kw_only=True)
class StatusCode:
    """One ``clickpost_status_code``.

    ``name`` is the description Clickpost puts in payloads (CamelCase, or as the facts table
    spells it: "RTO-Delivered", "Awb Registered"). ``event`` is the notification event the code
    maps to. ``stage`` ranks codes along the journey so that a late, out-of-order webhook cannot
    move a shipment backwards (webhook order is not guaranteed, clickpost-facts.md); ``None``
    means the code says nothing about progress.
    """

    code: int
    name: str
    label: str
    bucket: Bucket | None
    event: int | None
    terminal: bool
    stage: int | None


TERMINAL_STAGE = 100

_B = Bucket
# code, payload name, label, bucket, notification event, stage (TERMINAL_STAGE = terminal)
_STATUS_ROWS: tuple[tuple[int, str, str, Bucket | None, int | None, int | None], ...] = (
    (1, "OrderPlaced", "Order placed", _B.ORDER_PLACED, None, 10),
    (2, "PickupPending", "Pickup pending", _B.ORDER_PLACED, None, 10),
    (3, "PickupFailed", "Pickup failed", _B.ORDER_PLACED, 16, 12),
    (4, "PickedUp", "Picked up", _B.DISPATCHED, 2, 20),
    (5, "InTransit", "In transit", _B.IN_TRANSIT, 2, 30),
    (6, "OutForDelivery", "Out for delivery", _B.OUT_FOR_DELIVERY, 3, 40),
    (7, "NotServiceable", "Not serviceable", _B.FAILED_DELIVERY, 4, 40),
    (8, "Delivered", "Delivered", _B.DELIVERED, 5, TERMINAL_STAGE),
    (9, "FailedDelivery", "Failed delivery", _B.FAILED_DELIVERY, 4, 40),
    (10, "Cancelled", "Cancelled", _B.ORDER_PLACED, 10, TERMINAL_STAGE),
    (11, "RTO-Requested", "Return to origin requested", _B.RETURNED, None, 60),
    (12, "RTO-Marked", "Marked for return to origin", _B.RETURNED, None, 60),
    (13, "RTO-OutForDelivery", "Out for delivery back to origin", _B.RETURNED, 6, 60),
    (14, "RTO-Delivered", "Returned to origin", _B.RETURNED, 12, TERMINAL_STAGE),
    (15, "RTO-Failed", "Return to origin failed", _B.RETURNED, 6, 60),
    (16, "Lost", "Lost", _B.LOST, 19, TERMINAL_STAGE),
    (17, "Damaged", "Damaged", _B.DAMAGED, 20, TERMINAL_STAGE),
    (18, "ShipmentDelayed", "Shipment delayed", _B.IN_TRANSIT, 2, 30),
    (19, "ContactCustomerCare", "Contact customer care", _B.IN_TRANSIT, 2, 30),
    (20, "ShipmentHeld", "Shipment held", _B.IN_TRANSIT, 2, 30),
    (21, "RTO-InTransit", "Return to origin in transit", _B.RETURNED, 6, 60),
    (23, "Expired", "Expired", None, 80, TERMINAL_STAGE),
    (25, "OutForPickup", "Out for pickup", _B.ORDER_PLACED, 1, 15),
    (26, "RTO-ContactCustomerCare", "Return: contact customer care", _B.RETURNED, 6, 60),
    (27, "RTO-ShipmentDelay", "Return to origin delayed", _B.RETURNED, 6, 60),
    (28, "Awb Registered", "AWB registered", _B.ORDER_PLACED, None, 10),
    (30, "Exchange-Pickup", "Exchange picked up", None, 14, 20),
    (31, "Exchange-In-Transit", "Exchange in transit", None, 14, 30),
    (32, "Exchange-Delivered", "Exchange delivered", None, 15, TERMINAL_STAGE),
    (101, "Return Order Placed", "Return order placed", None, None, None),
    (1004, "DestinationHubIn", "Arrived at destination hub", None, 13, 30),
)

STATUS_CODES: dict[int, StatusCode] = {
    code: StatusCode(
        code=code,
        name=name,
        label=label,
        bucket=bucket,
        event=event,
        terminal=stage == TERMINAL_STAGE,
        stage=stage,
    )
    for code, name, label, bucket, event, stage in _STATUS_ROWS
}

CARRIES_NDR: frozenset[int] = frozenset({9})
"""Status codes whose scans carry NDR fields (clickpost-facts.md: FailedDelivery)."""


@dataclass(frozen=True, kw_only=True)
class NotificationEvent:
    """One ``additional.notification_event_id`` of a selected-events webhook."""

    id: int
    name: str
    label: str


# 7 and 8 are defined nowhere; 17 and 18 are derived by Clickpost (clickpost-facts.md).
_EVENT_ROWS: tuple[tuple[int, str, str], ...] = (
    (1, "out_for_pickup", "Out for pickup"),
    (2, "shipped", "Shipped"),
    (3, "out_for_delivery", "Out for delivery"),
    (4, "failed_delivery", "Failed delivery"),
    (5, "delivered", "Delivered"),
    (6, "rto", "Return to origin"),
    (9, "awb_generated", "AWB generated"),
    (10, "order_cancelled", "Order cancelled"),
    (11, "return_request_placed", "Return request placed"),
    (12, "rto_delivered", "Returned to origin"),
    (13, "destination_hub_inscan", "Arrived at destination hub"),
    (14, "exchange_pickup", "Exchange pickup"),
    (15, "exchange_delivered", "Exchange delivered"),
    (16, "pickup_cancelled", "Pickup cancelled"),
    (17, "shipment_stuck", "Shipment stuck"),
    (18, "sla_breached", "Delivery promise missed"),
    (19, "lost", "Lost"),
    (20, "damaged", "Damaged"),
    (22, "return_request_approved", "Return request approved"),
    (23, "return_request_rejected", "Return request rejected"),
    (29, "exchange_request_approved", "Exchange request approved"),
    (30, "exchange_request_placed", "Exchange request placed"),
    (31, "exchange_request_rejected", "Exchange request rejected"),
    (80, "expired", "Expired"),
)

NOTIFICATION_EVENTS: dict[int, NotificationEvent] = {
    id_: NotificationEvent(id=id_, name=name, label=label) for id_, name, label in _EVENT_ROWS
}


@dataclass(frozen=True, kw_only=True)
class NdrCode:
    """One ``additional.ndr_status_code``: why a delivery attempt failed (code 9 only)."""

    code: int
    name: str
    label: str


_NDR_ROWS: tuple[tuple[int, str, str], ...] = (
    (0, "unknown_exception", "Unknown exception"),
    (1, "customer_unavailable", "Customer unavailable"),
    (2, "rejected_by_customer", "Rejected by customer"),
    (3, "delivery_rescheduled", "Delivery rescheduled"),
    (4, "no_attempt", "No attempt"),
    (5, "customer_unreachable", "Customer unreachable"),
    (6, "address_issue", "Address issue"),
    (7, "payment_issue", "Payment issue"),
    (8, "out_of_delivery_area", "Out of delivery area"),
    (9, "order_already_cancelled", "Order already cancelled"),
    (10, "self_collect", "Self collect"),
    (11, "shipment_seized_by_customer", "Shipment seized by customer"),
    (12, "customer_wants_open_delivery", "Customer wants open delivery"),
    (13, "shipment_misrouted", "Shipment misrouted by logistics partner"),
)

NDR_CODES: dict[int, NdrCode] = {
    code: NdrCode(code=code, name=name, label=label) for code, name, label in _NDR_ROWS
}


def status(code: int) -> StatusCode:
    """The status entry for ``code``; undocumented codes get a placeholder, never an error."""
    known = STATUS_CODES.get(code)
    if known is not None:
        return known
    return StatusCode(
        code=code,
        name=f"Unknown{code}",
        label=f"Status {code}",
        bucket=None,
        event=None,
        terminal=False,
        stage=None,
    )


def notification_event(id: int) -> NotificationEvent:
    """The notification event ``id``; unknown ids (7, 8, new ones) get a placeholder."""
    return NOTIFICATION_EVENTS.get(id) or NotificationEvent(
        id=id, name=f"unknown_{id}", label=f"Event {id}"
    )


def ndr(code: int) -> NdrCode:
    """The NDR entry for ``code``; unknown codes get a placeholder, never an error."""
    return NDR_CODES.get(code) or NdrCode(code=code, name=f"unknown_{code}", label=f"NDR {code}")


_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_UNKNOWN_NAME = re.compile(r"unknown(\d+)")


def _normalize(name: str) -> str:
    """Fold case and drop separators: "OutForDelivery" and "OUT_FOR_DELIVERY" compare equal."""
    return _NOT_ALNUM.sub("", name.casefold())


def _name_index(entries: Iterable[tuple[int, str, str]]) -> dict[str, int]:
    """Map normalized names and labels to codes; a clash is a bug in the tables, so it is loud."""
    index: dict[str, int] = {}
    for code, name, label in entries:
        for spelling in (name, label):
            key = _normalize(spelling)
            if index.setdefault(key, code) != code:
                raise ValueError(f"{spelling!r} names both code {index[key]} and code {code}")
    return index


def _lookup(index: Mapping[str, int], known: Mapping[int, object], name: str) -> int | None:
    """Resolve a name; "Unknown22"/"unknown_22" (what the placeholders print) resolve too."""
    key = _normalize(name)
    if key in index:
        return index[key]
    placeholder = _UNKNOWN_NAME.fullmatch(key)
    if placeholder is None or int(placeholder[1]) in known:
        return None
    return int(placeholder[1])


_STATUS_INDEX = _name_index((s.code, s.name, s.label) for s in STATUS_CODES.values())
_EVENT_INDEX = _name_index((e.id, e.name, e.label) for e in NOTIFICATION_EVENTS.values())
_NDR_INDEX = _name_index((n.code, n.name, n.label) for n in NDR_CODES.values())


def status_code_by_name(name: str) -> int | None:
    """The status code a name or label means, ignoring case and separators; None if unknown."""
    return _lookup(_STATUS_INDEX, STATUS_CODES, name)


def event_id_by_name(name: str) -> int | None:
    """The notification event id a name or label means; None if unknown."""
    return _lookup(_EVENT_INDEX, NOTIFICATION_EVENTS, name)


def ndr_code_by_name(name: str) -> int | None:
    """The NDR code a name or label means; None if unknown."""
    return _lookup(_NDR_INDEX, NDR_CODES, name)
