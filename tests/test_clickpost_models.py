"""Clickpost bodies → notifier.events objects: the real samples, every tolerance, every error."""

from __future__ import annotations

import copy
import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from notifier.clickpost.codes import status
from notifier.clickpost.models import (
    TrackResult,
    Unregistration,
    parse_registration,
    parse_track_order,
    parse_unregistration,
    parse_webhook,
)
from notifier.errors import InputError
from notifier.events import Scan, ShipmentUpdate, Source

SAMPLES = Path(__file__).parent / "data" / "samples"


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return data


def ofd() -> dict[str, Any]:
    """A fresh copy of the 2017 out-for-delivery webhook, to be bent by each test."""
    return sample("webhook-out-for-delivery-2017.json")


def field_of(body: Any, parse: Any = parse_webhook, **kwargs: Any) -> str:
    with pytest.raises(InputError) as caught:
        parse(body, **kwargs)
    return caught.value.field


# --- the real samples -----------------------------------------------------------------------

SAMPLE_EXPECTATIONS = {
    "webhook-failed-delivery-ndr1.json": dict(
        cp_id=1,
        waybill="XYZABC",
        code=9,
        latest_code=9,
        at=datetime(2016, 7, 12, 17, 12, 36, tzinfo=UTC),
        event=None,
        ndr_code=1,
        ndr_description="Customer Unavailable",
        order_id=None,
        reference_number="WERA-9616974",
        edd=None,
        is_rvp=False,
    ),
    "webhook-out-for-delivery-2017.json": dict(
        cp_id=14,
        waybill="P0109276342",
        code=6,
        latest_code=6,
        at=datetime(2017, 8, 2, 13, 23, 2, tzinfo=UTC),
        event=None,
        ndr_code=None,
        ndr_description=None,
        order_id=None,
        reference_number=None,
        edd=None,
        is_rvp=None,
    ),
    "webhook-selected-delivered.json": dict(
        cp_id=4,
        waybill="12527345",
        code=8,
        latest_code=8,
        at=datetime(2019, 5, 6, 15, 1, tzinfo=UTC),
        event=5,
        ndr_code=None,
        ndr_description=None,
        order_id="ABC123",
        reference_number="WERA-NMS1908MSO2",
        edd=date(2020, 3, 25),
        is_rvp=False,
    ),
    "webhook-selected-failed-delivery.json": dict(
        cp_id=4,
        waybill="2614010163240",
        code=9,
        latest_code=9,
        at=datetime(2019, 5, 1, 0, 55, 6, tzinfo=UTC),
        event=4,
        ndr_code=1,
        ndr_description="Customer unavailable",
        order_id="ABC123",
        reference_number="WERA-NMS1908MSO2",
        edd=date(2020, 3, 25),
        is_rvp=False,
    ),
}


def test_every_sample_file_is_covered() -> None:
    assert {p.name for p in SAMPLES.glob("*.json")} == set(SAMPLE_EXPECTATIONS)


@pytest.mark.parametrize("name", sorted(SAMPLE_EXPECTATIONS))
def test_sample_webhook(name: str) -> None:
    want = SAMPLE_EXPECTATIONS[name]
    update = parse_webhook((SAMPLES / name).read_bytes())
    got = dict(
        cp_id=update.cp_id,
        waybill=update.waybill,
        code=update.scan.code,
        latest_code=update.latest.code,
        at=update.latest.timestamp,
        event=update.notification_event_id,
        ndr_code=update.ndr_code,
        ndr_description=update.ndr_description,
        order_id=update.order_id,
        reference_number=update.reference_number,
        edd=update.edd,
        is_rvp=update.is_rvp,
    )
    assert got == want
    assert update.source is Source.WEBHOOK
    assert update.raw == sample(name)


def test_sample_scan_fields() -> None:
    update = parse_webhook(sample("webhook-selected-delivered.json"))
    assert update.latest.description == "Delivered"
    assert update.latest.location == "Nayagarh_Durgprsd_D (Orissa)"
    assert update.latest.remark == "Delivered to consignee"
    assert update.latest.bucket == 6
    assert update.scan.bucket is None, "the outer scan has no bucket in this sample"


def test_bytes_text_and_mapping_give_the_same_update() -> None:
    path = SAMPLES / "webhook-selected-failed-delivery.json"
    as_bytes = parse_webhook(path.read_bytes())
    assert parse_webhook(path.read_text()) == as_bytes
    assert parse_webhook(json.loads(path.read_text())) == as_bytes


def test_source_is_passed_through() -> None:
    assert parse_webhook(ofd(), source=Source.POLL).source is Source.POLL


# --- tolerances (clickpost-facts.md "Tolerate") ---------------------------------------------


def test_unknown_keys_are_kept_not_rejected() -> None:
    body = ofd()
    body["clickpost_city"] = "Mumbai"
    body["rto_awb"] = "R123"
    body["additional"]["npr_status_code"] = 3
    body["additional"]["destination_hub_inscan_ts"] = "2017-08-02T10:00:00Z"
    body["additional"]["latest_status"]["clickpost_status_bucket_description"] = "OFD"
    update = parse_webhook(body)
    assert update.raw["clickpost_city"] == "Mumbai"
    assert update.raw["additional"]["npr_status_code"] == 3
    assert update.latest.code == 6


def test_codes_as_numeric_strings() -> None:
    body = sample("webhook-selected-failed-delivery.json")
    body["clickpost_status_code"] = "9"
    body["cp_id"] = "4"
    body["additional"]["ndr_status_code"] = "1"
    body["additional"]["notification_event_id"] = "4"
    body["additional"]["latest_status"]["clickpost_status_code"] = "9"
    body["additional"]["latest_status"]["clickpost_status_bucket"] = "5"
    update = parse_webhook(body)
    assert (update.scan.code, update.latest.code, update.cp_id) == (9, 9, 4)
    assert (update.ndr_code, update.notification_event_id, update.latest.bucket) == (1, 4, 5)
    assert update == parse_webhook(sample("webhook-selected-failed-delivery.json"))


@pytest.mark.parametrize("key", ["ndr_status_code", "courier_partner_edd", "is_rvp"])
def test_nulls_for_optional_fields(key: str) -> None:
    body = sample("webhook-selected-failed-delivery.json")
    body["additional"][key] = None
    update = parse_webhook(body)
    attribute = {"ndr_status_code": "ndr_code", "courier_partner_edd": "edd"}.get(key, key)
    assert getattr(update, attribute) is None


def test_null_ndr_description_and_text_fields() -> None:
    body = ofd()
    body["additional"]["ndr_status_description"] = None
    body["location"] = None
    update = parse_webhook(body)
    assert update.ndr_description is None
    assert update.scan.location == ""


@pytest.mark.parametrize("edd", ["", "soon", "2020-13-45", 20200325, ["2020-03-25"]])
def test_garbage_edd_is_dropped(edd: object) -> None:
    body = ofd()
    body["additional"]["courier_partner_edd"] = edd
    assert parse_webhook(body).edd is None


def test_edd_with_a_time_part_keeps_the_date() -> None:
    body = ofd()
    body["additional"]["courier_partner_edd"] = "2020-03-25T00:00:00"
    assert parse_webhook(body).edd == date(2020, 3, 25)


@pytest.mark.parametrize(
    ("stamp", "want"),
    [
        ("2018-07-07T19:34:46Z", datetime(2018, 7, 7, 19, 34, 46, tzinfo=UTC)),
        ("2018-07-07T19:34:46.002000Z", datetime(2018, 7, 7, 19, 34, 46, 2000, tzinfo=UTC)),
        ("2018-07-07 19:34:46", datetime(2018, 7, 7, 19, 34, 46, tzinfo=UTC)),
        ("2016-07-12T17:12:36.710", datetime(2016, 7, 12, 17, 12, 36, 710000, tzinfo=UTC)),
        ("2018-07-08T01:04:46+05:30", datetime(2018, 7, 7, 19, 34, 46, tzinfo=UTC)),
    ],
)
def test_timestamps_become_aware_utc(stamp: str, want: datetime) -> None:
    body = ofd()
    body["timestamp"] = stamp
    body["additional"]["latest_status"]["timestamp"] = stamp
    update = parse_webhook(body)
    for scan in (update.scan, update.latest):
        assert scan.timestamp == want
        assert scan.timestamp.utcoffset() == timedelta(0)
        assert scan.timestamp.tzinfo is UTC


def test_empty_waybill_accepted_with_order_id() -> None:
    body = sample("webhook-selected-failed-delivery.json")
    body["waybill"] = ""
    del body["additional"]["latest_status"]["reference_number"]
    update = parse_webhook(body)
    assert update.waybill == ""
    assert update.references == ("ABC123",)


def test_empty_waybill_accepted_with_reference_number() -> None:
    body = sample("webhook-failed-delivery-ndr1.json")
    body["waybill"] = ""
    assert parse_webhook(body).references == ("WERA-9616974",)


@pytest.mark.parametrize("waybill", ["", "   ", None])
def test_empty_waybill_without_any_reference_is_refused(waybill: str | None) -> None:
    body = ofd()
    body["waybill"] = waybill
    assert field_of(body) == "waybill"


def test_missing_waybill_without_reference_is_refused() -> None:
    body = ofd()
    del body["waybill"]
    assert field_of(body) == "waybill"


def test_numeric_waybill_becomes_text() -> None:
    body = ofd()
    body["waybill"] = 12527345
    assert parse_webhook(body).waybill == "12527345"


def test_returns_platform_cp_id_minus_one() -> None:
    body = ofd()
    body["cp_id"] = -1
    body["waybill"] = ""
    body["clickpost_status_code"] = 101
    body["additional"] = {"order_id": "RET-1"}
    update = parse_webhook(body)
    assert (update.cp_id, update.scan.code, update.order_id) == (-1, 101, "RET-1")


@pytest.mark.parametrize("latest", ["missing", None, {}])
def test_without_latest_status_latest_is_the_outer_scan(latest: object) -> None:
    body = ofd()
    if latest == "missing":
        del body["additional"]["latest_status"]
    else:
        body["additional"]["latest_status"] = latest
    update = parse_webhook(body)
    assert update.latest == update.scan
    assert update.latest.code == 6


@pytest.mark.parametrize("additional", ["missing", None])
def test_without_additional(additional: object) -> None:
    body = ofd()
    if additional == "missing":
        del body["additional"]
    else:
        body["additional"] = additional
    update = parse_webhook(body)
    assert update.latest == update.scan
    assert (update.ndr_code, update.notification_event_id) == (None, None)


def test_latest_differs_from_outer_scan() -> None:
    """Several scans at once: each webhook's latest_status is the newest (clickpost-facts.md)."""
    body = ofd()
    body["clickpost_status_code"] = 5
    body["additional"]["latest_status"]["clickpost_status_code"] = 8
    body["additional"]["latest_status"]["timestamp"] = "2017-08-02T15:00:00Z"
    update = parse_webhook(body)
    assert (update.scan.code, update.latest.code) == (5, 8)
    assert update.latest.timestamp > update.scan.timestamp


@pytest.mark.parametrize("code", [0, 22, 24, 40, 55, 1001, 1006])
def test_unknown_status_codes_are_accepted(code: int) -> None:
    body = ofd()
    body["clickpost_status_code"] = code
    body["additional"]["latest_status"]["clickpost_status_code"] = str(code)
    update = parse_webhook(body)
    assert (update.scan.code, update.latest.code) == (code, code)
    assert status(update.latest.code).stage is None


def test_account_code_is_read_from_the_top_level() -> None:
    body = ofd()
    body["account_code"] = "Delhivery Surface"
    assert parse_webhook(body).account_code == "Delhivery Surface"


def test_is_rvp_true() -> None:
    body = ofd()
    body["additional"]["is_rvp"] = True
    assert parse_webhook(body).is_rvp is True


# --- errors name the field ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"{not json", "", b"\xff\xfe\x00garbage", b'{"waybill": "X"'],
    ids=["broken", "empty", "bad-bytes", "truncated"],
)
def test_bad_json_is_a_body_error(body: bytes | str) -> None:
    assert field_of(body) == "body"


@pytest.mark.parametrize("body", ["[]", "[1, 2]", '"text"', "42", "null"])
def test_json_that_is_not_an_object_is_a_body_error(body: str) -> None:
    assert field_of(body) == "body"


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("clickpost_status_code",), "delivered", "clickpost_status_code"),
        (("clickpost_status_code",), None, "clickpost_status_code"),
        (("cp_id",), "fedex", "cp_id"),
        (("timestamp",), "yesterday", "timestamp"),
        (("additional",), "oops", "additional"),
        (("additional", "ndr_status_code"), "one", "additional.ndr_status_code"),
        (("additional", "notification_event_id"), "x", "additional.notification_event_id"),
        (("additional", "is_rvp"), "perhaps", "additional.is_rvp"),
        (
            ("additional", "latest_status", "clickpost_status_code"),
            "OFD",
            "additional.latest_status.clickpost_status_code",
        ),
        (
            ("additional", "latest_status", "timestamp"),
            "02/08/2017 13:23",
            "additional.latest_status.timestamp",
        ),
    ],
)
def test_bad_values_name_their_field(path: tuple[str, ...], value: object, field: str) -> None:
    body = ofd()
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    assert field_of(body) == field


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("clickpost_status_code",), "clickpost_status_code"),
        (("cp_id",), "cp_id"),
        (("timestamp",), "timestamp"),
        (("additional", "latest_status", "timestamp"), "additional.latest_status.timestamp"),
    ],
)
def test_missing_required_values_name_their_field(path: tuple[str, ...], field: str) -> None:
    body = ofd()
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    assert field_of(body) == field


def test_error_message_is_plain_and_chained() -> None:
    body = ofd()
    del body["clickpost_status_code"]
    with pytest.raises(InputError) as caught:
        parse_webhook(body)
    assert str(caught.value) == "clickpost_status_code: is required"
    assert isinstance(caught.value.__cause__, ValidationError)


def test_error_message_shows_the_bad_value() -> None:
    body = ofd()
    body["additional"]["latest_status"]["timestamp"] = "not a time"
    with pytest.raises(InputError, match="'not a time'") as caught:
        parse_webhook(body)
    assert caught.value.field == "additional.latest_status.timestamp"


# --- identity -------------------------------------------------------------------------------


def with_time(stamp: str, **changes: Any) -> ShipmentUpdate:
    body = ofd()
    body.update(changes)
    body["timestamp"] = stamp
    body["additional"]["latest_status"]["timestamp"] = stamp
    return parse_webhook(body)


def test_identity_is_the_same_for_one_scan_in_every_time_format() -> None:
    z = with_time("2018-07-07T19:34:46Z")
    micro = with_time("2018-07-07T19:34:46.002000Z")
    naive = with_time("2018-07-07 19:34:46")
    assert z.identity == micro.identity == naive.identity


@pytest.mark.parametrize(
    "stamp", ["2018-07-07T19:34:46Z", "2026-11-28T23:59:59.999999+05:30", "2026-01-02 03:04:05"]
)
def test_identity_is_what_stored_events_were_keyed_by(stamp: str) -> None:
    """Stored events are found again by their identity: its recipe must never change (the
    scan's second is now written by isoformat, which must give strftime's text)."""
    update = with_time(stamp)
    second = update.scan.timestamp.strftime("%Y-%m-%dT%H:%M:%S")
    recipe = f"{update.cp_id}|{update.waybill}|{update.scan.code}|{update.ndr_code}|{second}"
    assert update.identity == hashlib.sha256(recipe.encode()).hexdigest()[:32]
    assert update.scan.wall_clock == second


def test_the_wall_clock_of_a_year_before_1000_is_strftimes() -> None:
    scan = Scan(code=2, timestamp=datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert scan.wall_clock == scan.timestamp.strftime("%Y-%m-%dT%H:%M:%S")


def test_identity_ignores_location_spelling() -> None:
    assert (
        with_time("2018-07-07T19:34:46Z", location="VASAI").identity
        == with_time("2018-07-07T19:34:46Z", location="Vasai, Mumbai").identity
    )


@pytest.mark.parametrize(
    ("stamp", "changes"),
    [
        ("2018-07-07T19:34:47Z", {}),
        ("2018-07-07T19:34:46Z", {"clickpost_status_code": 8}),
        ("2018-07-07T19:34:46Z", {"waybill": "P0109276343"}),
        ("2018-07-07T19:34:46Z", {"cp_id": 15}),
    ],
    ids=["next-second", "other-code", "other-waybill", "other-courier"],
)
def test_identity_differs_for_a_different_scan(stamp: str, changes: dict[str, Any]) -> None:
    assert with_time(stamp, **changes).identity != with_time("2018-07-07T19:34:46Z").identity


def test_identity_differs_for_a_different_ndr_reason() -> None:
    first = sample("webhook-selected-failed-delivery.json")
    second = copy.deepcopy(first)
    second["additional"]["ndr_status_code"] = 4
    assert parse_webhook(first).identity != parse_webhook(second).identity


# --- awb-register ---------------------------------------------------------------------------

DROP_ADDRESS = "Roots hacker Home, R 28, Second Floor, New Delhi 110019"
REGISTRATION: dict[str, Any] = {
    "waybill": "ABCDRESDEFGHIJKL1257679",
    "cp_id": 1,
    "key": "42d42a34-ae09-4693-b20c-ae2624218a329",
    "account_code": "Fedex Domestic",
    "consumer_details": {
        "name": "Prashant Gupta",
        "phone": "8080808080",
        "email": "support@clickpost.in",
    },
    "shipment_info": {
        "item": "Shirt",
        "order_type": "COD",
        "invoice_value": 1000,
        "reference_number": "123XYZ",
        "length": 10,
        "height": 10,
        "weight": 10,
        "breadth": 10,
        "drop_pincode": "110019",
        "pickup_pincode": "110017",
        "delivery_type": "FORWARD",
        "cod_amount": 1000.10,
        "drop_address": DROP_ADDRESS,
        "additional": {"items": [{"sku": "XYZ1", "description": "item1", "quantity": 1}]},
    },
    "additional": {
        "order_date": "2017-02-14T18:00:00+05:30",
        "ship_date": "2017-02-14T23:00:00+05:30",
    },
}


def registration(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(REGISTRATION)
    body.update(changes)
    return body


def test_registration_sample() -> None:
    reg = parse_registration(json.dumps(REGISTRATION))
    assert (reg.cp_id, reg.waybill, reg.account_code) == (
        1,
        "ABCDRESDEFGHIJKL1257679",
        "Fedex Domestic",
    )
    assert (reg.consumer.name, reg.consumer.phone) == ("Prashant Gupta", "8080808080")
    assert reg.consumer.email == "support@clickpost.in"
    assert (reg.item, reg.reference_number, reg.order_id) == ("Shirt", "123XYZ", None)
    assert (reg.order_type, reg.delivery_type, reg.is_rvp) == ("COD", "FORWARD", False)
    assert reg.invoice_value == Decimal("1000")
    assert reg.cod_amount == Decimal("1000.10")
    assert (reg.drop_pincode, reg.drop_address) == ("110019", DROP_ADDRESS)


def test_registration_dates_are_aware_utc() -> None:
    reg = parse_registration(REGISTRATION)
    assert reg.order_date == datetime(2017, 2, 14, 12, 30, tzinfo=UTC)
    assert reg.ship_date == datetime(2017, 2, 14, 17, 30, tzinfo=UTC)
    assert reg.order_date is not None and reg.order_date.tzinfo is UTC


def test_registration_keeps_shipment_info_raw_and_drops_the_api_key() -> None:
    reg = parse_registration(REGISTRATION)
    assert reg.shipment_info["pickup_pincode"] == "110017"
    assert reg.shipment_info["additional"]["items"][0]["sku"] == "XYZ1"
    assert "key" not in reg.raw
    assert reg.raw["consumer_details"] == REGISTRATION["consumer_details"]


def test_registration_phone_number_key_and_int_phone() -> None:
    body = registration(consumer_details={"name": "A", "phone_number": 8080808080})
    assert parse_registration(body).consumer.phone == "8080808080"


def test_registration_prefers_phone_over_phone_number() -> None:
    body = registration(consumer_details={"phone": "09876543210", "phone_number": "1"})
    assert parse_registration(body).consumer.phone == "09876543210"


def test_registration_upper_cases_types_and_reads_rvp() -> None:
    body = registration()
    body["shipment_info"].update(order_type="prepaid", delivery_type="rvp")
    reg = parse_registration(body)
    assert (reg.order_type, reg.delivery_type, reg.is_rvp) == ("PREPAID", "RVP", True)


def test_registration_order_id_from_additional() -> None:
    body = registration()
    body["additional"]["order_id"] = "ORD-77"
    assert parse_registration(body).order_id == "ORD-77"


def test_registration_with_only_the_required_fields() -> None:
    reg = parse_registration({"waybill": "W1", "cp_id": "3", "key": "secret"})
    assert (reg.waybill, reg.cp_id, reg.consumer.phone, reg.order_date) == ("W1", 3, "", None)
    assert reg.shipment_info == {}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"waybill": ""}, "waybill"),
        ({"waybill": None}, "waybill"),
        ({"cp_id": None}, "cp_id"),
        ({"cp_id": "bluedart"}, "cp_id"),
        ({"shipment_info": {"cod_amount": "lots"}}, "shipment_info.cod_amount"),
        ({"shipment_info": {"invoice_value": [1]}}, "shipment_info.invoice_value"),
        ({"additional": {"order_date": "last tuesday"}}, "additional.order_date"),
        ({"consumer_details": "Prashant"}, "consumer_details"),
    ],
)
def test_registration_errors_name_their_field(changes: dict[str, Any], field: str) -> None:
    assert field_of(registration(**changes), parse_registration) == field


@pytest.mark.parametrize("key", ["waybill", "cp_id"])
def test_registration_requires_waybill_and_cp_id(key: str) -> None:
    body = registration()
    del body[key]
    assert field_of(body, parse_registration) == key


# --- awb-unregister -------------------------------------------------------------------------


def test_unregistration_sample() -> None:
    body = b'{"cp_id": 1, "waybill": "786000454820", "key": "8341db95"}'
    assert parse_unregistration(body) == Unregistration(cp_id=1, waybill="786000454820")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cp_id": 1}, "waybill"),
        ({"cp_id": 1, "waybill": ""}, "waybill"),
        ({"waybill": "786000454820"}, "cp_id"),
        ("[1]", "body"),
    ],
)
def test_unregistration_errors(body: Any, field: str) -> None:
    assert field_of(body, parse_unregistration) == field


# --- track-order ----------------------------------------------------------------------------


def polled_scan(code: int, stamp: str, **extra: Any) -> dict[str, Any]:
    return {
        "clickpost_status_description": status(code).name,
        "clickpost_status_code": code,
        "clickpost_status_bucket": status(code).bucket,
        "status": "s",
        "location": "",
        "remark": "r",
        "timestamp": stamp,
        **extra,
    }


TRACK_ORDER = {
    "meta": {"message": "SUCCESS", "status": 200, "success": True},
    "result": {
        "SF18399217NER": {
            "latest_status": polled_scan(8, "2018-07-07 19:34:46"),
            "additional": {
                "is_stuck": False,
                "dest_hub_inscan": False,
                "order_detail": [],
                "edd": {"min_sla": 2, "max_sla": 5},
            },
            "scans": [
                polled_scan(8, "2018-07-07 19:34:46", tracking_id=12087859),
                polled_scan(6, "2018-07-07 08:53:01", tracking_id=12087859),
                polled_scan(5, "2018-07-07 08:52:51", tracking_id=12087859),
                polled_scan(1, "2018-07-06 05:41:13", tracking_id=12087859),
            ],
            "valid": True,
        }
    },
}


def test_track_order_sample() -> None:
    results = parse_track_order(json.dumps(TRACK_ORDER), cp_id=10)
    assert list(results) == ["SF18399217NER"]
    result = results["SF18399217NER"]
    assert result.valid
    assert [s.code for s in result.scans] == [8, 6, 5, 1]
    assert all(s.timestamp.tzinfo is UTC for s in result.scans)
    update = result.update
    assert update is not None
    assert (update.cp_id, update.waybill, update.source) == (10, "SF18399217NER", Source.POLL)
    assert update.scan == update.latest
    assert update.latest.code == 8
    assert update.latest.timestamp == datetime(2018, 7, 7, 19, 34, 46, tzinfo=UTC)
    assert update.raw["additional"]["edd"] == {"min_sla": 2, "max_sla": 5}
    assert update.edd is None, "polling's edd is an SLA range, not a date"


def test_polled_and_pushed_scan_have_one_identity() -> None:
    polled = parse_track_order(TRACK_ORDER, cp_id=4)["SF18399217NER"].update
    body = sample("webhook-selected-delivered.json")
    body["waybill"] = "SF18399217NER"
    body["timestamp"] = "2018-07-07T19:34:46Z"
    assert polled is not None
    assert polled.identity == parse_webhook(body).identity


@pytest.mark.parametrize(
    "entry",
    [
        {"valid": False},
        {"valid": False, "latest_status": {}, "scans": [], "additional": {}},
        {"valid": "false", "latest_status": None, "scans": None},
        None,
        [],
        {},
    ],
    ids=["valid-false", "valid-false-empty", "valid-false-string", "null", "empty-list", "empty"],
)
def test_unknown_waybill_is_not_valid(entry: object) -> None:
    body = {"meta": {"success": True}, "result": {"NOPE": entry}}
    assert parse_track_order(body, cp_id=1) == {"NOPE": TrackResult(valid=False)}


@pytest.mark.parametrize("body", [{"meta": {"success": True}, "result": None}, {"meta": None}])
def test_null_result_gives_no_waybills(body: dict[str, Any]) -> None:
    assert parse_track_order(body, cp_id=1) == {}


def test_legacy_list_of_scans() -> None:
    scans = [
        polled_scan(5, "2018-07-07 08:52:51"),
        polled_scan(6, "2018-07-07 08:53:01"),
        polled_scan(1, "2018-07-06 05:41:13"),
    ]
    result = parse_track_order({"result": {"W1": scans}}, cp_id=3)["W1"]
    assert result.valid
    assert [s.code for s in result.scans] == [5, 6, 1]
    assert result.update is not None and result.update.latest.code == 6, "the newest scan"


def test_entry_without_latest_status_uses_the_newest_scan() -> None:
    entry = {"scans": [polled_scan(4, "2018-07-06T10:00:00Z"), polled_scan(5, "2018-07-07")]}
    result = parse_track_order({"result": {"W1": entry}}, cp_id=3)["W1"]
    assert result.valid and result.update is not None
    assert result.update.latest.code == 5


def test_valid_entry_with_no_scans_has_no_update() -> None:
    result = parse_track_order({"result": {"W1": {"valid": True}}}, cp_id=3)["W1"]
    assert result == TrackResult(valid=True, update=None, scans=())


def ndr_entry(latest_code: int) -> dict[str, Any]:
    return {
        "valid": True,
        "latest_status": polled_scan(latest_code, "2019-05-01T00:55:06Z"),
        "additional": {"ndr": {"ndr_bucket_code": "1", "ndr_description": "Customer unavailable"}},
    }


def test_polled_ndr_is_read_on_a_failed_delivery() -> None:
    update = parse_track_order({"result": {"W1": ndr_entry(9)}}, cp_id=4)["W1"].update
    assert update is not None
    assert (update.ndr_code, update.ndr_description) == (1, "Customer unavailable")


def test_polled_ndr_is_ignored_once_delivered() -> None:
    update = parse_track_order({"result": {"W1": ndr_entry(8)}}, cp_id=4)["W1"].update
    assert update is not None
    assert (update.ndr_code, update.ndr_description) == (None, None)


def test_polled_failed_delivery_matches_the_webhook_identity() -> None:
    pushed = parse_webhook(sample("webhook-selected-failed-delivery.json"))
    body = {"result": {"2614010163240": ndr_entry(9)}}
    polled = parse_track_order(body, cp_id=4)["2614010163240"].update
    assert polled is not None
    assert polled.identity == pushed.identity


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ([polled_scan(5, "garbage")], "result.W1.0.timestamp"),
        ({"scans": [{"timestamp": "2018-07-07"}]}, "result.W1.scans.0.clickpost_status_code"),
        ({"latest_status": polled_scan(8, "?")}, "result.W1.latest_status.timestamp"),
        (
            {"additional": {"ndr": {"ndr_bucket_code": "x"}}},
            "result.W1.additional.ndr.ndr_bucket_code",
        ),
        ("text", "result.W1"),
    ],
)
def test_track_order_errors_name_the_waybill_and_field(entry: object, field: str) -> None:
    assert field_of({"result": {"W1": entry}}, parse_track_order, cp_id=1) == field


def test_track_order_result_must_be_an_object() -> None:
    assert field_of({"result": [1, 2]}, parse_track_order, cp_id=1) == "result"


def test_aware_offsets_in_polling_are_converted() -> None:
    entry = {"latest_status": polled_scan(6, "2018-07-08T01:04:46+05:30")}
    update = parse_track_order({"result": {"W1": entry}}, cp_id=1)["W1"].update
    assert update is not None
    assert update.latest.timestamp == datetime(2018, 7, 7, 19, 34, 46, tzinfo=UTC)
