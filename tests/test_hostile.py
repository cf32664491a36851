"""Hostile input: whatever arrives, the answer is a typed result or an error naming the field.

Property-based tests (hypothesis) feed the Clickpost models any JSON, any bytes and valid bodies
with one part replaced by anything; schemathesis drives every route of the OpenAPI document
through the in-process app. Explicit tests cover the bodies that broke parsers before: deep
nesting, huge bodies, non-UTF-8, duplicate keys, NaN, NUL, lone surrogates, numbers and dates
out of range, and the wrong content type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from conftest import Clock, dumps, registration, webhook
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from notifier import Notifier, Settings
from notifier.clickpost.models import (
    _decode_plain,
    parse_json_object,
    parse_registration,
    parse_unregistration,
    parse_webhook,
)
from notifier.errors import InputError
from notifier.events import Registration, ShipmentUpdate
from notifier.server import create_app

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
KEY, TOKEN = "k-hostile", "t-hostile"
HEADERS = {"webhook_key": KEY, "Authorization": f"Bearer {TOKEN}"}
Parser = Callable[[Any], object]
PARSERS: dict[str, tuple[Parser, type]] = {
    "webhook": (parse_webhook, ShipmentUpdate),
    "registration": (parse_registration, Registration),
    "unregistration": (parse_unregistration, object),
}

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.sampled_from(["", " ", "2026-11-26T05:00:00Z", "9999-12-31T23:59:59+14:00", "6", "-1"])
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def typed_or_named(kind: str, body: object) -> None:
    """The property: a typed result, or an InputError naming the field; nothing else."""
    parse, result_type = PARSERS[kind]
    try:
        result = parse(body)
    except InputError as err:
        assert err.field, f"an InputError without a field: {err}"
        return
    assert isinstance(result, result_type)


@pytest.mark.parametrize("kind", sorted(PARSERS))
@settings(max_examples=150, deadline=None, database=None)
@given(value=json_values)
def test_any_json_gives_a_result_or_a_named_error(kind: str, value: object) -> None:
    typed_or_named(kind, json.dumps(value).encode())  # NaN/Infinity written as Python does
    if isinstance(value, dict):
        typed_or_named(kind, value)  # the embedded API passes dicts


@pytest.mark.parametrize("kind", sorted(PARSERS))
@settings(max_examples=150, deadline=None, database=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_give_a_result_or_a_named_error(kind: str, raw: bytes) -> None:
    typed_or_named(kind, raw)


def _paths(value: object, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path in a JSON object, for replacing one part of a valid body."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from _paths(item, (*path, key))


def _replaced(body: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(body))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


VALID = {
    "webhook": webhook(at=T0, ndr=1, order_id="ACME-1", courier_partner_edd="2026-11-28"),
    "registration": registration(ship_date="2026-11-21T10:00:00Z", order_id="ACME-1"),
    "unregistration": {"cp_id": 4, "waybill": "SF18399217NER"},
}


@pytest.mark.parametrize("kind", sorted(PARSERS))
@settings(max_examples=200, deadline=None, database=None)
@given(data=st.data())
def test_a_valid_body_with_any_part_replaced(kind: str, data: st.DataObject) -> None:
    body = VALID[kind]
    path = data.draw(st.sampled_from(list(_paths(body))))
    typed_or_named(kind, dumps(_replaced(body, path, data.draw(json_values))))


def test_the_valid_bodies_parse() -> None:
    """The property above starts from bodies that are accepted, or it proves little."""
    for kind, body in VALID.items():
        parse, result_type = PARSERS[kind]
        assert isinstance(parse(dumps(body)), result_type)


# --- explicit hostile bodies over HTTP -------------------------------------------------------


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"webhook_keys": SecretStr(KEY), "api_token": SecretStr(TOKEN),
                "max_body_bytes": 64 * 1024}
    )  # fmt: skip


@pytest.fixture
def api(keyed: Settings, clock: Clock) -> Iterator[TestClient]:
    clock.now = T0
    engine = Notifier(keyed, clock=clock)
    app = create_app(keyed, notifier=engine, run_scheduler=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def post(api: TestClient, body: bytes, path: str = "/webhooks/clickpost",
         **headers: str) -> tuple[int, dict[str, Any]]:  # fmt: skip
    response = api.post(path, content=body, headers={**HEADERS, **headers})
    return response.status_code, response.json()


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_100k_levels_of_nesting_is_a_400(settings: Settings, clock: Clock, opener: bytes) -> None:
    """Python's json raises RecursionError on this; it must be a 400 naming the body."""
    closer = b"]" if opener == b"[" else b"}"
    body = opener * 100_000 + b"1" + closer * 100_000
    roomy = settings.model_copy(update={"webhook_keys": SecretStr(KEY), "max_body_bytes": 10**6})
    app = create_app(roomy, notifier=Notifier(roomy, clock=clock), run_scheduler=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/webhooks/clickpost", content=body, headers=HEADERS)
    assert response.status_code == 400
    assert response.json()["field"] == "body" and "JSON" in response.json()["error"]


def test_moderate_nesting_is_refused_naming_where(api: TestClient) -> None:
    body = webhook(at=T0)
    body["additional"]["deep"] = json.loads('{"a":' * 40 + "1" + "}" * 40)
    status, answer = post(api, dumps(body))
    assert status == 422 and answer["field"].startswith("additional.deep.a.a")
    assert "nested deeper than" in answer["error"]


def test_huge_bodies_are_413_declared_or_streamed(api: TestClient) -> None:
    huge = b'{"waybill": "' + b"x" * 200_000 + b'"}'
    status, answer = post(api, huge)
    assert (status, answer["field"]) == (413, "body")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        for _ in range(100):
            yield b"x" * 4096

    response = api.post("/webhooks/clickpost", content=chunks(), headers=HEADERS)
    assert response.status_code == 413 and response.json()["field"] == "body"


@pytest.mark.parametrize("body", [b"\xff\xfe\x00{}", b'{"waybill": "\xe9"}', b"\xc3\x28"])
def test_non_utf8_bytes_are_a_400(api: TestClient, body: bytes) -> None:
    status, answer = post(api, body)
    assert (status, answer["field"]) == (400, "body")


def test_an_encoded_surrogate_is_named(api: TestClient) -> None:
    """json.loads decodes bytes with "surrogatepass": UTF-8-encoded surrogates (CESU-8) get
    through it as lone surrogates, which nothing after it could encode again."""
    status, answer = post(api, b'{"a": "\xed\xa0\x80"}')
    assert (status, answer["field"]) == (422, "a")


def test_duplicate_keys_are_refused_naming_the_key(api: TestClient) -> None:
    """Decision: refused, not "last wins": which cp_id was meant cannot be known, and two
    parsers of one body may choose differently."""
    status, answer = post(api, b'{"cp_id": 4, "cp_id": 5, "waybill": "A"}')
    assert (status, answer["field"]) == (422, "cp_id")
    body = dumps(webhook(at=T0)).replace(b'"remark": ""', b'"remark": "", "remark": "x"')
    body = body.replace(b'"latest_status": {', b'"latest_status": {"status": "a", ', 1)
    status, answer = post(api, body)
    assert status == 422 and answer["field"] in {"remark", "additional.latest_status.status"}
    assert "twice" in answer["error"]


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400"])
def test_nan_and_infinity_are_refused_naming_the_field(api: TestClient, constant: bytes) -> None:
    """1e400 is read as infinity; in a field no model checks, it would have been stored."""
    body = dumps(webhook(at=T0)).replace(b'"remark": ""', b'"remark": ' + constant, 1)
    status, answer = post(api, body)
    assert (status, answer["field"]) == (422, "remark")
    nested = dumps(webhook(at=T0))
    nested = nested.replace(b'"ndr_status_code": null', b'"x": [1, ' + constant + b"]")
    status, answer = post(api, nested)
    assert (status, answer["field"]) == (422, "additional.x.1")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"waybill": "A\x00B"}, "waybill"),
        ({"location": "\ud800"}, "location"),
        ({"cp_id": 10**30}, "cp_id"),
        ({"clickpost_status_code": -(2**40)}, "clickpost_status_code"),
        ({"timestamp": "9999-12-31T23:59:59+14:00"}, "timestamp"),
        ({"timestamp": "0001-01-01T00:00:00+14:00"}, "timestamp"),
        ({"timestamp": 1e300}, "timestamp"),
    ],
)
def test_values_the_database_cannot_hold_are_named(
    api: TestClient, change: dict[str, Any], field: str
) -> None:
    status, answer = post(api, dumps({**webhook(at=T0), **change}))
    assert (status, answer["field"]) == (422, field), answer


@pytest.mark.parametrize(
    ("path", "change", "field"),
    [
        (("cp_id",), 2**31, "cp_id"),
        (("consumer_details", "name"), "\x00", "consumer_details.name"),
        (("shipment_info", "invoice_value"), "NaN", "shipment_info.invoice_value"),
        (("shipment_info", "invoice_value"), "1e999999", "shipment_info.invoice_value"),
        (("shipment_info", "cod_amount"), "-Infinity", "shipment_info.cod_amount"),
        (("additional", "order_date"), "9999-12-31T23:59:59-14:00", "additional.order_date"),
    ],
)
def test_bad_registrations_are_named(
    api: TestClient, path: tuple[str, ...], change: object, field: str
) -> None:
    status, answer = post(api, dumps(_replaced(registration(), path, change)), "/shipments")
    assert (status, answer["field"]) == (422, field), answer


def test_out_of_range_path_and_query_values_are_4xx(api: TestClient) -> None:
    for url, field in [
        ("/shipments/99999999999999999999/X", "cp_id"),
        ("/notifications?since=0001-01-01T00:00:00%2B14:00", "since"),
        ("/notifications?limit=0", "limit"),
    ]:
        response = api.get(url, headers=HEADERS)
        assert response.status_code == 422 and response.json()["field"] == field, url
    naive = api.get("/notifications?since=2026-11-01T00:00:00", headers=HEADERS)
    assert naive.status_code == 200  # naive means UTC, not a 500


def test_content_type_is_not_trusted_and_a_wrong_one_is_named(api: TestClient) -> None:
    """Clickpost's content type is not documented: a JSON body is read whatever it says; a
    body that is not JSON gets an error that mentions what it was sent as."""
    ok = api.post("/webhooks/clickpost", content=dumps(webhook(at=T0)),
                  headers={**HEADERS, "content-type": "text/plain"})  # fmt: skip
    assert ok.status_code == 200 and ok.json()["status"] == "accepted"
    status, answer = post(api, b"a=1&b=2", **{"content-type": "application/x-www-form-urlencoded"})
    assert (status, answer["field"]) == (400, "body")
    assert "application/x-www-form-urlencoded" in answer["error"]


def test_unknown_routes_and_methods_answer_json(api: TestClient) -> None:
    for response in (api.get("/nope"), api.delete("/webhooks/clickpost")):
        assert response.status_code in {404, 405} and response.json()["error"]


def test_twilio_callback_bodies_are_size_limited_and_never_500(
    keyed: Settings, clock: Clock
) -> None:
    twilio = keyed.model_copy(update={"twilio_auth_token": SecretStr("tw-secret"),
                                      "public_url": "https://n.example"})  # fmt: skip
    app = create_app(twilio, notifier=Notifier(twilio, clock=clock), run_scheduler=False)
    form = {"content-type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"}
    with TestClient(app, raise_server_exceptions=False) as client:
        big = client.post("/callbacks/twilio/status", content=b"a=" + b"x" * 100_000, headers=form)
        assert big.status_code == 413
        fields = b"&".join(b"f%d=1" % i for i in range(300))
        many = client.post("/callbacks/twilio/status", content=fields, headers=form)
        assert many.status_code == 400 and many.json()["field"] == "body"
        for body, kind in [(b"\xff\xfe=\x00", form["content-type"]), (b"--x\r\n", "multipart/"
                           "form-data; boundary=x"), (b"{}", "application/json")]:  # fmt: skip
            answer = client.post("/callbacks/twilio/status", content=body,
                                 headers={**form, "content-type": kind})  # fmt: skip
            assert answer.status_code == 401 and answer.json()["field"] == "X-Twilio-Signature"


# --- schemathesis over the OpenAPI document --------------------------------------------------


@pytest.fixture
def openapi_app(keyed: Settings, clock: Clock) -> FastAPI:
    clock.now = T0
    relaxed = keyed.model_copy(update={"max_body_bytes": 1024 * 1024})
    return create_app(relaxed, notifier=Notifier(relaxed, clock=clock), run_scheduler=False)


POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
WITH_PARAMETERS = [
    ("/webhooks/clickpost", "POST"),
    ("/shipments", "POST"),
    ("/shipments/unregister", "POST"),
    ("/shipments/{cp_id}/{waybill}", "GET"),
    ("/notifications", "GET"),
    ("/preferences/lookup", "POST"),
    ("/preferences", "PUT"),
]
# Nothing in the document to break for these (any string is a token): positive cases only.
WITHOUT = [("/callbacks/twilio/status", "POST"), ("/callbacks/twilio/inbound", "POST"),
           ("/unsubscribe/{token}", "GET"), ("/unsubscribe/{token}", "POST"),
           ("/healthz", "GET"), ("/readyz", "GET"), ("/metrics", "GET")]  # fmt: skip
OPERATIONS = [(*op, mode) for op in WITH_PARAMETERS for mode in (POSITIVE, NEGATIVE)]
OPERATIONS += [(*op, POSITIVE) for op in WITHOUT]


@pytest.mark.parametrize(("path", "method", "mode"), OPERATIONS)
def test_every_route_of_the_openapi_document(
    openapi_app: FastAPI, path: str, method: str, mode: schemathesis.GenerationMode
) -> None:
    """No 5xx for any input the document allows (positive) or breaks (negative); every 4xx is a
    JSON error saying what is wrong. Sent with the right key and token, so bodies reach the
    parsers. (``schemathesis.pytest.from_fixture`` fails on pytest 9, hence hypothesis here.)"""
    operation = schemathesis.openapi.from_asgi("/openapi.json", openapi_app)[path][method]

    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = case.call(headers=HEADERS)
        seen.add(response.status_code)
        assert response.status_code < 500, (case.body, case.query, response.text[:300])
        if 400 <= response.status_code < 500:
            assert response.json()["error"], response.text

    seen: set[int] = set()
    check()
    if not path.startswith(("/callbacks/twilio/", "/unsubscribe/")):  # refused: the point
        assert seen - {401, 403}, f"nothing got past the key or token: {seen}"


def test_the_document_describes_the_bodies(openapi_app: FastAPI) -> None:
    """Without body schemas the run above would only ever send empty bodies."""
    document = openapi_app.openapi()
    for path in ("/webhooks/clickpost", "/shipments", "/shipments/unregister"):
        body = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["properties"]["cp_id"]["maximum"] == 2**31 - 1
    assert "ScanBody" in document["components"]["schemas"]


@pytest.mark.parametrize(
    ("value", "kind"), [(T0, "datetime"), ({1, 2}, "set"), (object(), "object"), (b"x", "bytes")]
)
def test_embedded_dicts_must_hold_json_values(value: object, kind: str) -> None:
    """The embedded API takes dicts; a value JSON cannot store is named, not a crash later."""
    body = webhook(at=T0)
    body["additional"]["extra"] = value
    with pytest.raises(InputError) as caught:
        parse_webhook(body)
    assert caught.value.field == "additional.extra" and kind in str(caught.value)


# --- the fast path: orjson on the usual body ----------------------------------------------------

_separators = st.sampled_from([(", ", ": "), (",", ":"), (" , ", " : "), (",\n", " :")])


@settings(max_examples=400, deadline=None, database=None)
@given(
    value=st.dictionaries(st.text(max_size=12), json_values, min_size=1, max_size=6),
    separators=_separators,
    ascii_only=st.booleans(),
    repeat=st.none() | _separators,
)
def test_the_fast_decoder_reads_what_json_reads_or_leaves_it_to_the_careful_path(
    value: dict[str, Any],
    separators: tuple[str, str],
    ascii_only: bool,
    repeat: tuple[str, str] | None,
) -> None:
    """Any object, written any way, with or without a repeated key: the fast path gives
    exactly json's reading, or steps aside; it never takes a body with a repeated key."""
    text = json.dumps(value, separators=separators, ensure_ascii=ascii_only)
    if repeat is not None:  # the first key again, after a colon of its own spacing
        key = json.dumps(next(iter(value)), ensure_ascii=ascii_only)
        text = "{" + key + repeat[1] + '"again"' + repeat[0] + text[1:]
    decoded = _decode_plain(text.encode())
    if repeat is not None:
        assert decoded is None
    elif decoded is not None:
        assert json.dumps(decoded) == json.dumps(json.loads(text))  # 1 and 1.0 differ here


@pytest.mark.parametrize(
    "body",
    [
        b'{"a" :1, "a":2}',
        b'{"x": {"a": 1, "b": {"c": "d:e"}, "a": 1}}',
        b'{"s": "\\":", "s": "\\":"}',
        b'{"k": "\\u0022:", "k": 1}',
    ],
)
def test_a_repeated_key_never_takes_the_fast_path(body: bytes) -> None:
    assert _decode_plain(body) is None
    with pytest.raises(InputError, match="twice"):
        parse_json_object(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"remark": "call at 10:30: gate 2", "k:\\"q\\"": "x\\":y", "n": [1, 2.5, -0.0]}',
        b'{"big": 1234567890123456789, "bigger": -98765432109876543210}',
        b'{"rupee": "\\u20b9 500", "e": 1e300}',
    ],
)
def test_bodies_with_colons_long_numbers_and_escapes_read_exactly(body: bytes) -> None:
    assert json.dumps(parse_json_object(body)) == json.dumps(json.loads(body))
