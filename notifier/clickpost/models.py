"""Clickpost bodies in, normalized value objects out: the one door Clickpost data comes through.

Four bodies are understood: the tracking webhook (all-events and selected-events share one
shape; selected events add ``additional.notification_event_id``), awb-register, awb-unregister
and the track-order (polling) response. The pydantic models describe them as tolerantly as
clickpost-facts.md asks, because Clickpost retries a rejected webhook forever and adds keys over
time:

- unknown keys are kept (``extra="allow"``), never rejected;
- codes may be ints or numeric strings; ``ndr_status_code``, ``courier_partner_edd`` and
  ``is_rvp`` may be null; an unparseable EDD is dropped, not fatal;
- timestamps may end in ``Z``, carry microseconds or an offset, or be naive (polling), which is
  read as UTC; every datetime that leaves this module is aware UTC;
- ``waybill`` may be "" when ``additional.order_id`` or ``latest_status.reference_number``
  identifies the order; ``cp_id`` may be -1 (returns platform); ``latest_status`` may be absent;
- status codes outside the documented table are accepted (see :mod:`.codes`).

Only the ``parse_*`` functions are meant to be called from elsewhere. Every problem becomes an
:class:`~notifier.errors.InputError` whose ``field`` is the dotted path of the offending value;
pydantic's ``ValidationError`` is translated once, in :func:`_validate`.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    RootModel,
    StringConstraints,
    ValidationError,
)

from notifier.clickpost.codes import CARRIES_NDR
from notifier.errors import InputError
from notifier.events import Consumer, Registration, Scan, ShipmentUpdate, Source

__all__ = [
    "TrackResult",
    "Unregistration",
    "body_schemas",
    "parse_json_object",
    "parse_registration",
    "parse_track_order",
    "parse_unregistration",
    "parse_webhook",
]

Body = bytes | str | Mapping[str, Any]


# --- value coercions: each names the quirk it absorbs ---------------------------------------


_FIRST_YEAR, _LAST_YEAR = 1970, 2200


def _as_utc(value: datetime) -> datetime:
    """Aware UTC. Naive times (polling, clickpost-facts.md) are read as UTC, as events.Scan says.

    Years outside 1970-2200 are refused: no scan happens then, and near year 1 or 9999 the
    conversion to UTC, or adding a delay while planning, overflows.
    """
    try:
        utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as err:
        raise ValueError("date out of range") from err
    if not _FIRST_YEAR <= utc.year <= _LAST_YEAR:
        raise ValueError(f"year {utc.year} out of range ({_FIRST_YEAR}-{_LAST_YEAR})")
    return utc


def _none_as_empty(value: object) -> object:
    """Null text (location, remark) reads as "" so templates never print "None"."""
    return "" if value is None else value


def _blank_as_none(value: object) -> object:
    """An optional value sent as "" (or whitespace) means absent, not malformed."""
    return None if isinstance(value, str) and not value.strip() else value


def _empty_as_none(value: object) -> object:
    """An optional object sent as null, {} or [] means absent."""
    return value or None


def _null_as_dict(value: object) -> object:
    """A null ``additional``/``consumer_details`` reads as an empty object."""
    return {} if value is None else value


def _null_as_list(value: object) -> object:
    return [] if value is None else value


def _lenient_date(value: object) -> date | None:
    """``courier_partner_edd`` is YYYY-MM-DD or null (clickpost-facts.md). Anything else is
    dropped: an estimate is not worth rejecting the scan that carries it."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None


def _upper(value: str | None) -> str | None:
    """order_type / delivery_type arrive as "cod", "Prepaid", "rvp": compare upper-case."""
    return value.upper() if value else value


# Database integer columns are 32 bits on PostgreSQL; a bigger code or cp_id is nonsense anyway.
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
# Rupee amounts: far beyond any parcel, short of a number that takes a megabyte to print.
Amount = Annotated[Decimal, Field(allow_inf_nan=False, ge=-(10**12), le=10**12)]
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
OptUtcDatetime = Annotated[UtcDatetime | None, BeforeValidator(_blank_as_none)]
Text = Annotated[str, BeforeValidator(_none_as_empty)]
OptText = Annotated[str | None, BeforeValidator(_blank_as_none)]
UpperText = Annotated[str | None, BeforeValidator(_blank_as_none), AfterValidator(_upper)]
RequiredText = Annotated[str, StringConstraints(min_length=1)]
OptInt = Annotated[Int32 | None, BeforeValidator(_blank_as_none)]
OptBool = Annotated[bool | None, BeforeValidator(_blank_as_none)]
OptDecimal = Annotated[Amount | None, BeforeValidator(_blank_as_none)]
LenientDate = Annotated[date | None, PlainValidator(_lenient_date)]


# --- body models ----------------------------------------------------------------------------


class _Model(BaseModel):
    """Tolerant base: unknown keys kept, numbers accepted where text is expected (waybills and
    phones arrive as JSON numbers), surrounding whitespace dropped."""

    model_config = ConfigDict(
        extra="allow", frozen=True, coerce_numbers_to_str=True, str_strip_whitespace=True
    )


class ScanBody(_Model):
    """A scan as Clickpost sends it: a webhook's outer fields, its latest_status, a polled scan."""

    clickpost_status_code: Int32
    clickpost_status_description: Text = ""
    clickpost_status_bucket: OptInt = None
    status: Text = ""
    location: Text = ""
    remark: Text = ""
    timestamp: UtcDatetime
    reference_number: OptText = None  # seen in latest_status since 2020 (clickpost-facts.md)

    def to_scan(self) -> Scan:
        return Scan(
            code=self.clickpost_status_code,
            description=self.clickpost_status_description,
            status=self.status,
            location=self.location,
            remark=self.remark,
            timestamp=self.timestamp,
            bucket=self.clickpost_status_bucket,
        )


OptScanBody = Annotated[ScanBody | None, BeforeValidator(_empty_as_none)]


class WebhookAdditional(_Model):
    latest_status: OptScanBody = None
    notification_event_id: OptInt = None  # selected-events webhooks only
    ndr_status_code: OptInt = None  # seen as "1" (clickpost-facts.md)
    ndr_status_description: OptText = None
    order_id: OptText = None
    courier_partner_edd: LenientDate = None
    is_rvp: OptBool = None


class WebhookBody(ScanBody):
    """The tracking webhook: the outer scan plus who it is about and ``additional``."""

    waybill: Text = ""  # "" on returns and once on an NDR webhook (clickpost-facts.md)
    cp_id: Int32  # -1 on the returns platform
    account_code: OptText = None
    additional: Annotated[WebhookAdditional, BeforeValidator(_null_as_dict)] = Field(
        default_factory=WebhookAdditional
    )


class ConsumerBody(_Model):
    name: Text = ""
    phone: OptText = None  # the sample's key; the docs table says phone_number
    phone_number: OptText = None
    email: Text = ""


class ShipmentInfoBody(_Model):
    item: OptText = None
    order_type: UpperText = None
    invoice_value: OptDecimal = None
    reference_number: OptText = None
    drop_pincode: OptText = None
    delivery_type: UpperText = None
    cod_amount: OptDecimal = None
    drop_address: OptText = None
    additional: Annotated[dict[str, Any] | None, BeforeValidator(_empty_as_none)] = None


class RegistrationAdditional(_Model):
    order_date: OptUtcDatetime = None
    ship_date: OptUtcDatetime = None
    order_id: OptText = None


class RegistrationBody(_Model):
    """awb-register. ``key`` (the merchant's API key) is deliberately not modelled."""

    waybill: RequiredText
    cp_id: Int32
    account_code: OptText = None
    consumer_details: Annotated[ConsumerBody, BeforeValidator(_null_as_dict)] = Field(
        default_factory=ConsumerBody
    )
    shipment_info: Annotated[ShipmentInfoBody, BeforeValidator(_null_as_dict)] = Field(
        default_factory=ShipmentInfoBody
    )
    additional: Annotated[RegistrationAdditional, BeforeValidator(_null_as_dict)] = Field(
        default_factory=RegistrationAdditional
    )


class UnregistrationBody(_Model):
    cp_id: Int32
    waybill: RequiredText


class PolledNdr(_Model):
    """Polling names the NDR fields differently from webhooks (clickpost-facts.md)."""

    ndr_bucket_code: OptInt = None
    ndr_description: OptText = None


class PolledAdditional(_Model):
    ndr: Annotated[PolledNdr | None, BeforeValidator(_empty_as_none)] = None


class PolledShipment(_Model):
    """One waybill's entry in a track-order ``result``."""

    valid: OptBool = None
    latest_status: OptScanBody = None
    scans: Annotated[list[ScanBody], BeforeValidator(_null_as_list)] = Field(default_factory=list)
    additional: Annotated[PolledAdditional, BeforeValidator(_null_as_dict)] = Field(
        default_factory=PolledAdditional
    )


class LegacyScans(RootModel[list[ScanBody]]):
    """Old track-order shape: the waybill maps straight to a list of scans."""


class TrackMeta(_Model):
    message: Text = ""
    status: OptInt = None
    success: OptBool = None


class TrackOrderBody(_Model):
    """The track-order response. Entries are validated one by one in :func:`_track_result`,
    because each may have one of two shapes and the error must name the waybill."""

    meta: Annotated[TrackMeta | None, BeforeValidator(_empty_as_none)] = None
    result: dict[str, Any] | None = None  # null for unknown waybills (clickpost-facts.md)


# --- results that are not in notifier.events ------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Unregistration:
    """An awb-unregister body: stop tracking this waybill (Clickpost marks it Expired, 23)."""

    cp_id: int
    waybill: str


@dataclass(frozen=True, kw_only=True)
class TrackResult:
    """One waybill of a track-order response.

    ``valid`` is False for a waybill Clickpost does not know. ``update`` is the latest status as
    a :class:`ShipmentUpdate` with ``source=POLL`` (None when there is no scan yet); ``scans``
    are every scan in the order Clickpost listed them.
    """

    valid: bool
    update: ShipmentUpdate | None = None
    scans: tuple[Scan, ...] = ()


# --- the boundary: raw input and error translation ------------------------------------------

_M = TypeVar("_M", bound=BaseModel)


#: Deepest nesting accepted. Clickpost bodies are four levels deep; Python's json gives up
#: (RecursionError) near 1,000, and storing or logging a body that deep fails the same way.
MAX_DEPTH = 32


class _NonFinite(float):
    """``NaN``/``Infinity``: Python's json reads them, RFC 8259 and PostgreSQL do not."""


class _Duplicates(dict[str, Any]):
    """An object that named a key twice; ``key`` is the first one repeated."""

    key: str = ""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) == len(pairs):
        return data
    flagged = _Duplicates(data)
    flagged.key = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
    return flagged


def _decode(body: bytes | str) -> object:
    """``json.loads``, with NaN/Infinity and duplicate keys marked for :func:`_check_tree`."""
    try:
        return json.loads(body, object_pairs_hook=_object, parse_constant=_NonFinite)
    except (TypeError, ValueError, RecursionError) as err:
        raise InputError(f"not valid JSON ({err})", field="body") from err


def _check_tree(value: object, path: str = "", depth: int = 0) -> None:
    """Refuse what the database or the next reader cannot hold, naming where it is.

    Duplicate keys are refused rather than resolved "last wins": which of two ``cp_id`` values
    the sender meant cannot be known, and two parsers may pick differently.
    """
    where = path or "body"
    if depth > MAX_DEPTH:
        raise InputError(f"nested deeper than {MAX_DEPTH} levels", field=where)
    if isinstance(value, _NonFinite):
        raise InputError("NaN and Infinity are not JSON numbers", field=where)
    if isinstance(value, str):
        _check_text(value, where)
    elif isinstance(value, Mapping):
        if isinstance(value, _Duplicates):
            raise InputError("the same key appears twice", field=_join(path, value.key))
        for key, item in value.items():
            _check_text(str(key), where)
            _check_tree(item, _join(path, str(key)), depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_tree(item, _join(path, str(index)), depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise InputError("NaN and Infinity are not JSON numbers", field=where)
    elif not isinstance(value, bool | int | float | None):  # a dict from embedding code
        raise InputError(f"not a JSON value ({type(value).__name__})", field=where)


def _check_text(text: str, where: str) -> None:
    """NUL cannot be stored by PostgreSQL; a lone surrogate cannot be encoded as UTF-8."""
    if "\x00" in text:
        raise InputError("contains a NUL character (\\u0000)", field=where)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InputError("contains an unpaired surrogate (not valid Unicode)", field=where) from err


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


#: Every digit as "0" and every other byte as " ": 19 digits in a row become a run of zeros.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19


def _decode_plain(body: bytes | str) -> dict[str, Any] | None:
    """The usual body, decoded by orjson without walking it; None for anything else, which
    takes the careful path (it finds the problem and names its field).

    An ASCII JSON object, shallow enough, with no NaN, no number beyond a double (orjson
    refuses both), no ``\\u`` escape, no run of 19 digits and no repeated key holds nothing
    :func:`_check_tree` refuses. An escape could hide a NUL, a lone surrogate, a quote or a
    colon; 19 digits may be an integer past 64 bits, which orjson would read as a float. A
    repeated key, which orjson overwrites, is seen by counting colons: without escapes, each
    member of an object has one outside its strings and the strings keep theirs, so the body
    encoded again has as many colons as it came with unless a member was dropped.
    """
    if not body.isascii():
        return None
    raw = body.encode("ascii") if isinstance(body, str) else body
    if (
        raw.count(b"{") + raw.count(b"[") > MAX_DEPTH
        or b"\\u" in raw
        or _LONG_NUMBER in raw.translate(_DIGITS_AS_ZEROS)
    ):
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or orjson.dumps(data).count(b":") != raw.count(b":"):
        return None
    return data


def _load(body: Body, *, stored: bool = False) -> dict[str, Any]:
    """Decode a body into the dict every parser starts from; anything else is a "body" error.
    ``stored``: a body read back from the store, which passed these checks when it came in."""
    if stored and isinstance(body, dict):
        return body
    if not isinstance(body, Mapping) and (plain := _decode_plain(body)) is not None:
        return plain
    data: object = dict(body) if isinstance(body, Mapping) else _decode(body)
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object, got {type(data).__name__}", field="body")
    _check_tree(data)
    return dict(data)


def parse_json_object(body: Body) -> dict[str, Any]:
    """Any JSON object body, through the same checks as Clickpost's (depth, duplicate keys,
    NaN, NUL, lone surrogates): for the other JSON routes of the API."""
    return _load(body)


_PLAIN_MESSAGES: Mapping[str, str] = {
    "missing": "is required",
    "string_too_short": "must not be empty",
}


def _input_error(err: ValidationError, where: tuple[str, ...]) -> InputError:
    """The first problem pydantic found, as an InputError naming its dotted path."""
    first = err.errors(include_url=False)[0]
    path = ".".join(str(part) for part in (*where, *first["loc"]))
    message = _PLAIN_MESSAGES.get(first["type"], first["msg"])
    got = first.get("input")
    if isinstance(got, str | int | float) and first["type"] != "missing":
        message += f", got {str(got)[:40]!r}"
    if err.error_count() > 1:
        message += f" (+{err.error_count() - 1} more)"
    return InputError(message, field=path or "body")


def _validate(model: type[_M], data: object, *where: str) -> _M:
    """Validate ``data``; ``where`` prefixes the error path when ``data`` is nested."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise _input_error(err, where) from err


# --- webhooks -------------------------------------------------------------------------------


def parse_webhook(
    body: Body, *, source: Source = Source.WEBHOOK, stored: bool = False
) -> ShipmentUpdate:
    """A tracking webhook body (bytes, text or decoded) as a :class:`ShipmentUpdate`.

    ``latest`` is ``additional.latest_status`` when present, else the outer scan: Clickpost
    advises triggering messages from latest_status and keeping the outer scan for the record.
    ``stored``: the body is a dict read back from the store (checked when it came in).
    """
    raw = _load(body, stored=stored)
    hook = _validate(WebhookBody, raw)
    extra = hook.additional
    scan = hook.to_scan()
    update = ShipmentUpdate(
        cp_id=hook.cp_id,
        waybill=hook.waybill,
        account_code=hook.account_code,
        scan=scan,
        latest=extra.latest_status.to_scan() if extra.latest_status else scan,
        notification_event_id=extra.notification_event_id,
        ndr_code=extra.ndr_status_code,
        ndr_description=extra.ndr_status_description,
        order_id=extra.order_id,
        reference_number=_reference_number(hook),
        edd=extra.courier_partner_edd,
        is_rvp=extra.is_rvp,
        source=source,
        raw=raw,
    )
    _require_identity(update)
    return update


def _reference_number(hook: WebhookBody) -> str | None:
    """latest_status.reference_number (where Clickpost puts it), else one on the outer scan."""
    latest = hook.additional.latest_status
    return (latest.reference_number if latest else None) or hook.reference_number


def _require_identity(update: ShipmentUpdate) -> None:
    """An empty waybill is fine only if an order reference says which shipment this is."""
    if not update.waybill and not update.references:
        raise InputError(
            "is empty and neither additional.order_id nor "
            "additional.latest_status.reference_number identifies the order",
            field="waybill",
        )


# --- registration ---------------------------------------------------------------------------


def parse_registration(body: Body, *, stored: bool = False) -> Registration:
    """An awb-register body as a :class:`Registration`. The API ``key`` is dropped, so the
    merchant's secret never reaches storage through ``raw``. ``stored``: the body is a dict
    read back from the store (checked when it came in)."""
    raw = _load(body, stored=stored)
    reg = _validate(RegistrationBody, raw)
    info, consumer = reg.shipment_info, reg.consumer_details
    return Registration(
        cp_id=reg.cp_id,
        waybill=reg.waybill,
        account_code=reg.account_code,
        consumer=Consumer(
            name=consumer.name,
            phone=consumer.phone or consumer.phone_number or "",
            email=consumer.email,
        ),
        reference_number=info.reference_number,
        order_id=reg.additional.order_id,
        order_type=info.order_type,
        delivery_type=info.delivery_type,
        item=info.item,
        invoice_value=info.invoice_value,
        cod_amount=info.cod_amount,
        drop_pincode=info.drop_pincode,
        drop_address=info.drop_address,
        order_date=reg.additional.order_date,
        ship_date=reg.additional.ship_date,
        shipment_info=dict(raw.get("shipment_info") or {}),
        raw={k: v for k, v in raw.items() if k != "key"},
    )


def parse_unregistration(body: Body) -> Unregistration:
    """An awb-unregister body; the API ``key`` is ignored."""
    unreg = _validate(UnregistrationBody, _load(body))
    return Unregistration(cp_id=unreg.cp_id, waybill=unreg.waybill)


def body_schemas(ref_template: str = "#/components/schemas/{model}") -> dict[str, Any]:
    """JSON Schemas of the bodies notifier receives (``webhook``, ``registration``,
    ``unregistration``) plus ``$defs`` they refer to, for the HTTP API's OpenAPI document."""
    schemas: dict[str, Any] = {"$defs": {}}
    for name, model in (("webhook", WebhookBody), ("registration", RegistrationBody),
                        ("unregistration", UnregistrationBody)):  # fmt: skip
        schema = model.model_json_schema(ref_template=ref_template)
        schemas["$defs"].update(schema.pop("$defs", {}))
        schemas[name] = schema
    return schemas


# --- polling --------------------------------------------------------------------------------


def parse_track_order(body: Body, *, cp_id: int) -> dict[str, TrackResult]:
    """A track-order response, waybill → :class:`TrackResult`.

    ``cp_id`` is the one the request was made with: the response does not repeat it, and one
    call covers waybills of a single cp_id (clickpost-facts.md). ``result: null`` gives an empty
    dict, so a requested waybill that is missing from the answer is unknown to Clickpost.
    """
    response = _validate(TrackOrderBody, _load(body))
    entries = response.result or {}
    return {
        waybill.strip(): _track_result(waybill.strip(), value, cp_id)
        for waybill, value in entries.items()
    }


def _track_result(waybill: str, value: object, cp_id: int) -> TrackResult:
    """One entry, in any of the shapes seen: null, ``valid: false``, a dict, a list of scans."""
    if value is None:
        return TrackResult(valid=False)
    if isinstance(value, list):
        scans = _validate(LegacyScans, value, "result", waybill).root
        if not scans:
            return TrackResult(valid=False)
        return _polled(waybill, cp_id, scans, None, None, raw={"scans": value})
    entry = _validate(PolledShipment, value, "result", waybill)
    if not _is_valid(entry):
        return TrackResult(valid=False)
    raw = value if isinstance(value, dict) else {}
    return _polled(waybill, cp_id, entry.scans, entry.latest_status, entry.additional.ndr, raw)


def _is_valid(entry: PolledShipment) -> bool:
    """``valid`` when Clickpost says; when it does not, an entry with a scan is valid."""
    if entry.valid is not None:
        return entry.valid
    return entry.latest_status is not None or bool(entry.scans)


def _polled(
    waybill: str,
    cp_id: int,
    scans: list[ScanBody],
    latest: ScanBody | None,
    ndr: PolledNdr | None,
    raw: Mapping[str, Any],
) -> TrackResult:
    """Build a valid result; without latest_status the newest scan stands in for it."""
    latest = latest or max(scans, key=lambda s: s.timestamp, default=None)
    update = None if latest is None else _polled_update(waybill, cp_id, latest, ndr, raw)
    return TrackResult(valid=True, update=update, scans=tuple(s.to_scan() for s in scans))


def _polled_update(
    waybill: str, cp_id: int, latest: ScanBody, ndr: PolledNdr | None, raw: Mapping[str, Any]
) -> ShipmentUpdate:
    """The polled latest status as an update. Polling's ``additional.ndr`` describes the
    shipment, not the scan, so it is kept only on a FailedDelivery scan: otherwise a polled
    Delivered would carry a stale NDR code, and its identity would differ from the webhook's."""
    scan = latest.to_scan()
    carried = ndr if scan.code in CARRIES_NDR else None
    return ShipmentUpdate(
        cp_id=cp_id,
        waybill=waybill,
        scan=scan,
        latest=scan,
        ndr_code=carried.ndr_bucket_code if carried else None,
        ndr_description=carried.ndr_description if carried else None,
        reference_number=latest.reference_number,
        source=Source.POLL,
        raw=raw,
    )
