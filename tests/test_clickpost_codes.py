"""The Clickpost code tables, checked against clickpost-facts.md restated independently here."""

from __future__ import annotations

import re

import pytest

from notifier.clickpost.codes import (
    NDR_CODES,
    NOTIFICATION_EVENTS,
    STATUS_CODES,
    TERMINAL_STAGE,
    Bucket,
    event_id_by_name,
    ndr,
    ndr_code_by_name,
    notification_event,
    status,
    status_code_by_name,
)

# code: (payload name, bucket, event, stage), from clickpost-facts.md and the brief's stage ranks
EXPECTED_STATUS = {
    1: ("OrderPlaced", 1, None, 10),
    2: ("PickupPending", 1, None, 10),
    3: ("PickupFailed", 1, 16, 12),
    4: ("PickedUp", 2, 2, 20),
    5: ("InTransit", 3, 2, 30),
    6: ("OutForDelivery", 4, 3, 40),
    7: ("NotServiceable", 5, 4, 40),
    8: ("Delivered", 6, 5, 100),
    9: ("FailedDelivery", 5, 4, 40),
    10: ("Cancelled", 1, 10, 100),
    11: ("RTO-Requested", 7, None, 60),
    12: ("RTO-Marked", 7, None, 60),
    13: ("RTO-OutForDelivery", 7, 6, 60),
    14: ("RTO-Delivered", 7, 12, 100),
    15: ("RTO-Failed", 7, 6, 60),
    16: ("Lost", 8, 19, 100),
    17: ("Damaged", 9, 20, 100),
    18: ("ShipmentDelayed", 3, 2, 30),
    19: ("ContactCustomerCare", 3, 2, 30),
    20: ("ShipmentHeld", 3, 2, 30),
    21: ("RTO-InTransit", 7, 6, 60),
    23: ("Expired", None, 80, 100),
    25: ("OutForPickup", 1, 1, 15),
    26: ("RTO-ContactCustomerCare", 7, 6, 60),
    27: ("RTO-ShipmentDelay", 7, 6, 60),
    28: ("Awb Registered", 1, None, 10),
    30: ("Exchange-Pickup", None, 14, 20),
    31: ("Exchange-In-Transit", None, 14, 30),
    32: ("Exchange-Delivered", None, 15, 100),
    101: ("Return Order Placed", None, None, None),
    1004: ("DestinationHubIn", None, 13, 30),
}

UNDOCUMENTED = [0, 22, 24, 40, 47, 55, 1001, 1006, 99999, -1]


def test_status_table_holds_exactly_the_documented_codes() -> None:
    assert set(STATUS_CODES) == set(EXPECTED_STATUS)


@pytest.mark.parametrize("code", sorted(EXPECTED_STATUS))
def test_status_entry_matches_facts(code: int) -> None:
    name, bucket, event, stage = EXPECTED_STATUS[code]
    entry = status(code)
    assert (entry.code, entry.name, entry.bucket, entry.event, entry.stage) == (
        code,
        name,
        bucket,
        event,
        stage,
    )
    assert entry.label


def test_terminal_codes_are_exactly_the_final_ones() -> None:
    terminal = {code for code, entry in STATUS_CODES.items() if entry.terminal}
    assert terminal == {8, 10, 14, 16, 17, 23, 32}
    assert all(STATUS_CODES[code].stage == TERMINAL_STAGE for code in terminal)


def test_stages_never_let_a_return_or_delivery_go_backwards() -> None:
    stage = {code: status(code).stage or 0 for code in STATUS_CODES}
    assert stage[1] < stage[3] < stage[25] < stage[4] < stage[5] < stage[6] < stage[11]
    assert stage[9] == stage[6], "a failed attempt and the next out-for-delivery are peers"
    assert stage[1004] == stage[5]


def test_buckets_are_typed_and_labelled() -> None:
    assert status(6).bucket is Bucket.OUT_FOR_DELIVERY
    assert [b.value for b in Bucket] == list(range(1, 10))
    assert Bucket.ORDER_PLACED.label == "Order placed"
    assert Bucket(9).label == "Damaged"
    assert all(b.label for b in Bucket)


def test_labels_are_plain_english() -> None:
    assert status(6).label == "Out for delivery"
    assert status(14).label == "Returned to origin"
    assert status(1004).label == "Arrived at destination hub"


@pytest.mark.parametrize("code", UNDOCUMENTED)
def test_unknown_status_codes_get_a_placeholder(code: int) -> None:
    entry = status(code)
    assert entry.code == code
    assert entry.name == f"Unknown{code}"
    assert entry.label == f"Status {code}"
    assert (entry.stage, entry.terminal, entry.bucket, entry.event) == (None, False, None, None)


def test_every_mapped_event_exists() -> None:
    events = {entry.event for entry in STATUS_CODES.values()} - {None}
    assert events <= set(NOTIFICATION_EVENTS)


def test_notification_events_are_the_documented_ids() -> None:
    documented = {1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
    assert set(NOTIFICATION_EVENTS) == documented | {22, 23, 29, 30, 31, 80}
    assert notification_event(3).name == "out_for_delivery"
    assert notification_event(3).label == "Out for delivery"
    assert notification_event(12).name == "rto_delivered"


@pytest.mark.parametrize("event_id", [7, 8, 99])
def test_undefined_events_get_a_placeholder(event_id: int) -> None:
    event = notification_event(event_id)
    assert (event.id, event.name, event.label) == (
        event_id,
        f"unknown_{event_id}",
        f"Event {event_id}",
    )


def test_ndr_codes_cover_0_to_13() -> None:
    assert sorted(NDR_CODES) == list(range(14))
    assert ndr(1).name == "customer_unavailable"
    assert ndr(1).label == "Customer unavailable"
    assert ndr(0).name == "unknown_exception"
    assert ndr(13).label == "Shipment misrouted by logistics partner"


def test_unknown_ndr_code_gets_a_placeholder() -> None:
    entry = ndr(14)
    assert (entry.code, entry.name, entry.label) == (14, "unknown_14", "NDR 14")


def test_event_and_ndr_names_are_snake_case() -> None:
    names = [e.name for e in NOTIFICATION_EVENTS.values()] + [n.name for n in NDR_CODES.values()]
    for name in names:
        assert re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)*", name), name


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("OutForDelivery", 6),
        ("out_for_delivery", 6),
        ("OUT_FOR_DELIVERY", 6),
        ("Out for delivery", 6),
        ("RTO-Delivered", 14),
        ("rto_delivered", 14),
        ("RTO_OUT_FOR_DELIVERY", 13),
        ("awb_registered", 28),
        ("Awb Registered", 28),
        ("exchange_in_transit", 31),
        ("destination_hub_in", 1004),
        ("Unknown22", 22),
        ("unknown_1001", 1001),
    ],
)
def test_status_code_by_name(name: str, code: int) -> None:
    assert status_code_by_name(name) == code


@pytest.mark.parametrize("name", ["", "deliveredd", "out for", "Unknown8", "unknown"])
def test_status_code_by_name_rejects_unknown_names(name: str) -> None:
    assert status_code_by_name(name) is None


def test_every_status_name_and_label_round_trips() -> None:
    for code, entry in STATUS_CODES.items():
        assert status_code_by_name(entry.name) == code
        assert status_code_by_name(entry.label) == code
    assert status_code_by_name(status(22).name) == 22


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("customer_unavailable", 1),
        ("Customer Unavailable", 1),
        ("CUSTOMER_UNAVAILABLE", 1),
        ("CustomerUnavailable", 1),
        ("no-attempt", 4),
        ("shipment_misrouted", 13),
        ("Shipment Misrouted by logistics partner", 13),
        ("unknown_exception", 0),
    ],
)
def test_ndr_code_by_name(name: str, code: int) -> None:
    assert ndr_code_by_name(name) == code


@pytest.mark.parametrize(
    ("name", "event_id"),
    [
        ("out_for_delivery", 3),
        ("OutForDelivery", 3),
        ("OUT_FOR_DELIVERY", 3),
        ("rto_delivered", 12),
        ("RTO-Delivered", 12),
        ("rto", 6),
        ("sla_breached", 18),
        ("expired", 80),
        ("unknown_7", 7),
    ],
)
def test_event_id_by_name(name: str, event_id: int) -> None:
    assert event_id_by_name(name) == event_id


def test_event_and_ndr_lookups_reject_unknown_names() -> None:
    assert event_id_by_name("teleported") is None
    assert event_id_by_name("unknown_5") is None
    assert ndr_code_by_name("dog_ate_parcel") is None
