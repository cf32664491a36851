"""The Clickpost client against the local stand-in, served by uvicorn on a 127.0.0.1 port.

The stand-in answers in Clickpost's shapes and takes scripted faults (429, 500, slow answers),
so retries, error translation and key masking are tested over real HTTP; one test goes through
httpx's in-process ASGI transport instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from conftest import registration
from fastapi import FastAPI, Request
from pydantic import SecretStr

from notifier.clickpost.client import (
    ClickpostClient,
    ClickpostError,
    ClickpostRejected,
    ClickpostUnavailable,
    KeyMaskFilter,
)
from notifier.clickpost.standin import BackgroundServer, create_standin
from notifier.errors import ConfigurationError, NotifierError
from notifier.settings import Settings

KEY = "cp-live-4f1d9a7c2e"  # distinctive, so a leak into a log is found by a plain search
USERNAME = "acme"
WEBHOOK_KEY = "wk-standin-2026"


class Naps:
    """A stand-in for asyncio.sleep that records the backoff delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture(scope="module")
def standin() -> Iterator[BackgroundServer]:
    app = create_standin(key=KEY, username=USERNAME, webhook_key=WEBHOOK_KEY)
    with BackgroundServer(app) as server:
        yield server


@pytest.fixture
def control(standin: BackgroundServer) -> Iterator[httpx.Client]:
    """The stand-in's control API, reset before each test."""
    with httpx.Client(base_url=standin.url, timeout=10) as http:
        http.post("/_standin/reset").raise_for_status()
        yield http


@pytest.fixture(scope="module")
def closed_url() -> str:
    """A 127.0.0.1 URL nothing listens on: a server's, after it stopped."""
    with BackgroundServer(FastAPI()) as gone:
        return gone.url


@pytest.fixture
def naps() -> Naps:
    return Naps()


@pytest.fixture
async def client(
    standin: BackgroundServer, control: httpx.Client, naps: Naps
) -> AsyncIterator[ClickpostClient]:
    async with ClickpostClient(
        base_url=standin.url, username=USERNAME, key=KEY, timeout=5, max_retries=3, sleep=naps
    ) as c:
        yield c


def scan(control: httpx.Client, waybill: str, code: int, **extra: Any) -> None:
    body = {"cp_id": 4, "waybill": waybill, "clickpost_status_code": code, **extra}
    control.post("/_standin/scans", json=body).raise_for_status()


def fault(control: httpx.Client, **spec: Any) -> None:
    control.post("/_standin/faults", json=spec).raise_for_status()


def calls(control: httpx.Client) -> list[dict[str, Any]]:
    answer: list[dict[str, Any]] = control.get("/_standin/calls").json()
    return answer


# --- the calls ------------------------------------------------------------------------------


async def test_register_service_and_awb_forward_the_body_with_our_key(
    client: ClickpostClient, control: httpx.Client
) -> None:
    await client.register_service()
    body = registration(waybill="P0109276342", cp_id=14, order_type="COD")
    assert body["key"] == "ignored"  # the merchant's body carries a key; ours replaces it

    registered = await client.register_awb(body)

    assert (registered.waybill, registered.cp_id) == ("P0109276342", 14)
    assert isinstance(registered.tracking_id, int) and registered.security_key
    [stored] = control.get("/_standin/registrations").json()
    assert stored["tracking_id"] == registered.tracking_id
    assert stored["body"]["shipment_info"]["order_type"] == "COD"
    assert "key" not in stored["body"]
    again = await client.register_awb(body)
    assert again.tracking_id == registered.tracking_id  # one registration per waybill


async def test_unregister_expires_the_shipment(
    client: ClickpostClient, control: httpx.Client
) -> None:
    await client.register_awb(registration(waybill="A1", cp_id=4))
    await client.unregister_awb(4, "A1")

    result = (await client.track(4, ["A1"]))["A1"]

    assert result.valid and result.update is not None
    assert result.update.latest.code == 23  # Clickpost marks it Expired
    assert control.get("/_standin/registrations").json()[0]["active"] is False


async def test_unregistering_an_unknown_awb_is_rejected_with_clickposts_message(
    client: ClickpostClient,
) -> None:
    with pytest.raises(ClickpostRejected) as caught:
        await client.unregister_awb(4, "NEVER-SEEN")
    assert caught.value.status == 400  # meta.status inside an HTTP 200
    assert caught.value.message == "AWB NEVER-SEEN is not registered for tracking"


async def test_track_reads_scans_and_marks_unknown_waybills_invalid(
    client: ClickpostClient, control: httpx.Client
) -> None:
    scan(control, "A1", 4, timestamp="2026-11-24T06:00:00Z")
    scan(control, "A1", 6, timestamp="2026-11-26T03:30:00Z")
    scan(control, "A1", 9, timestamp="2026-11-26T09:10:00Z", ndr_status_code=1)

    results = await client.track(4, ["A1", "UNKNOWN"])

    assert list(results) == ["A1", "UNKNOWN"]
    known = results["A1"]
    assert known.valid and known.update is not None
    assert (known.update.latest.code, known.update.ndr_code) == (9, 1)
    assert [s.code for s in known.scans] == [9, 6, 4]  # newest first, as Clickpost lists them
    assert known.update.latest.timestamp.isoformat() == "2026-11-26T09:10:00+00:00"
    assert results["UNKNOWN"].valid is False and results["UNKNOWN"].update is None
    [call] = calls(control)
    assert call["waybills"] == ["A1", "UNKNOWN"]


@pytest.mark.parametrize(
    "waybills",
    [["W1", "W2", "W3", "W4", "W5", "W6"], [], "W1", ["W1", ""], ["W1,W2"]],
    ids=["six", "none", "a-string", "blank", "comma"],
)
async def test_track_takes_one_to_five_waybills(
    client: ClickpostClient, control: httpx.Client, waybills: Any
) -> None:
    with pytest.raises(ValueError):
        await client.track(4, waybills)
    assert calls(control) == []  # refused before any request


async def test_track_five_is_one_call(client: ClickpostClient, control: httpx.Client) -> None:
    waybills = [f"W{i}" for i in range(5)]
    results = await client.track(4, waybills)
    assert list(results) == waybills and not any(r.valid for r in results.values())
    assert [c["waybills"] for c in calls(control)] == [waybills]


async def test_track_understands_result_null_and_the_legacy_list_shape(
    client: ClickpostClient, control: httpx.Client
) -> None:
    scan(control, "A1", 5, timestamp="2026-11-25T10:00:00Z")
    scan(control, "A1", 6, timestamp="2026-11-26T03:00:00Z")

    control.post("/_standin/track-shape", json={"shape": "null"}).raise_for_status()
    nothing = await client.track(4, ["A1", "B2"])
    assert {w: r.valid for w, r in nothing.items()} == {"A1": False, "B2": False}

    control.post("/_standin/track-shape", json={"shape": "legacy"}).raise_for_status()
    legacy = await client.track(4, ["A1", "B2"])
    assert legacy["A1"].valid and legacy["A1"].update is not None
    assert legacy["A1"].update.latest.code == 6  # newest scan stands in for latest_status
    assert legacy["B2"].valid is False


async def test_in_process_through_the_asgi_transport() -> None:
    transport = httpx.ASGITransport(app=create_standin(key=KEY, username=USERNAME))
    async with ClickpostClient(base_url="http://standin", key=KEY, transport=transport) as c:
        registered = await c.register_awb({"waybill": "X1", "cp_id": 1})
        assert registered.tracking_id is not None


async def test_test_webhook_posts_test_data_with_the_webhook_key(
    client: ClickpostClient, control: httpx.Client
) -> None:
    received: list[tuple[str | None, dict[str, Any]]] = []
    receiver = FastAPI()

    @receiver.post("/hook")
    async def hook(request: Request) -> dict[str, str]:
        received.append((request.headers.get("webhook_key"), await request.json()))
        return {"status": "accepted"}

    data = {"waybill": "XYZABC", "cp_id": 1, "clickpost_status_code": 9}
    with BackgroundServer(receiver) as target:
        answer = await client.test_webhook(f"{target.url}/hook", data)

    assert received == [(WEBHOOK_KEY, data)]
    assert answer["result"]["status_code"] == 200
    assert control.get("/_standin/webhooks").json()[0]["status"] == 200


# --- retries and errors ---------------------------------------------------------------------


async def test_429_and_500_are_retried_with_backoff_then_succeed(
    client: ClickpostClient, control: httpx.Client, naps: Naps
) -> None:
    fault(control, status=500, count=2)
    fault(control, status=429, count=1, retry_after="2")

    results = await client.track(4, ["A1"])

    assert results["A1"].valid is False
    assert [c["status"] for c in calls(control)] == [500, 500, 429, 200]
    first, second, honoured = naps.delays
    assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1.0  # 0.5 s doubling, half jitter
    assert honoured == 2.0  # Retry-After, not the backoff


async def test_exhausted_retries_raise_unavailable(
    standin: BackgroundServer, control: httpx.Client, naps: Naps
) -> None:
    fault(control, status=503, count=10)
    async with ClickpostClient(base_url=standin.url, key=KEY, max_retries=2, sleep=naps) as c:
        with pytest.raises(ClickpostUnavailable) as caught:
            await c.register_service()
    assert caught.value.status == 503
    assert len(calls(control)) == 3 and len(naps.delays) == 2


async def test_a_retry_after_longer_than_max_backoff_gives_up_at_once(
    client: ClickpostClient, control: httpx.Client, naps: Naps
) -> None:
    fault(control, status=429, count=1, retry_after="120")
    with pytest.raises(ClickpostUnavailable) as caught:
        await client.track(4, ["A1"])
    assert (caught.value.status, caught.value.retry_after) == (429, 120.0)
    assert len(calls(control)) == 1 and naps.delays == []


@pytest.mark.parametrize(
    ("key", "username", "body", "status", "message"),
    [
        ("wrong", USERNAME, {"waybill": "A1", "cp_id": 4}, 401, "Invalid API key"),
        (KEY, USERNAME, {"cp_id": 4}, 400, "waybill and cp_id are required"),
    ],
    ids=["wrong-key-http-401", "bad-request-meta-400"],
)
async def test_refusals_are_rejected_with_clickposts_message(
    standin: BackgroundServer,
    control: httpx.Client,
    key: str,
    username: str,
    body: dict[str, Any],
    status: int,
    message: str,
) -> None:
    async with ClickpostClient(base_url=standin.url, key=key, username=username) as c:
        with pytest.raises(ClickpostRejected) as caught:
            await c.register_awb(body)
    assert (caught.value.status, caught.value.message) == (status, message)
    assert len(calls(control)) == 1  # a refusal is not retried


async def test_a_wrong_username_is_rejected_on_track(
    standin: BackgroundServer, control: httpx.Client
) -> None:
    async with ClickpostClient(base_url=standin.url, key=KEY, username="someone") as c:
        with pytest.raises(ClickpostRejected) as caught:
            await c.track(4, ["A1"])
    assert caught.value.status == 401


async def test_timeouts_and_refused_connections_are_unavailable(
    standin: BackgroundServer, control: httpx.Client, naps: Naps, closed_url: str
) -> None:
    fault(control, status=None, delay=1.0, count=1)
    async with ClickpostClient(base_url=standin.url, key=KEY, timeout=0.2, max_retries=0) as c:
        with pytest.raises(ClickpostUnavailable, match=r"no answer within 0\.2s"):
            await c.register_service()

    async with ClickpostClient(base_url=closed_url, key=KEY, max_retries=1, sleep=naps) as c:
        with pytest.raises(ClickpostUnavailable) as caught:
            await c.register_service()
    assert caught.value.status is None and len(naps.delays) == 1


def test_errors_hang_from_the_notifier_tree() -> None:
    assert issubclass(ClickpostUnavailable, ClickpostError)
    assert issubclass(ClickpostRejected, ClickpostError)
    assert issubclass(ClickpostError, NotifierError)


async def test_the_key_never_reaches_logs_or_errors(
    standin: BackgroundServer,
    control: httpx.Client,
    closed_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fault(control, status=429, count=1, retry_after="0")
    errors: list[str] = []
    async with ClickpostClient(base_url=standin.url, key=KEY, username=USERNAME) as c:
        await c.track(4, ["A1"])  # the key is in this URL's query string
        with pytest.raises(ClickpostRejected) as unreachable:
            await c.test_webhook(f"{closed_url}/hook", {"waybill": "A1"})
        with pytest.raises(ClickpostRejected) as rejected:
            await c.unregister_awb(4, "NONE")
        errors += [str(unreachable.value), str(rejected.value), repr(c)]
    closed = ClickpostClient(base_url=closed_url, key=KEY, username=USERNAME, max_retries=0)
    async with closed:
        with pytest.raises(ClickpostUnavailable) as unavailable:
            await closed.track(4, ["A1"])
        errors.append(str(unavailable.value))

    assert "key=***" in caplog.text  # httpx logged the track-order URL, masked
    assert KEY not in caplog.text
    assert not [e for e in errors if KEY in e]
    assert all(KEY not in c["query"] for c in calls(control))


def test_masking_keeps_log_records_formattable() -> None:
    """uvicorn's access formatter unpacks ``record.args``: masking must keep the tuple."""
    from uvicorn.logging import AccessFormatter

    path = f"/api/v2/track-order/?username={USERNAME}&key={KEY}&waybill=A1&cp_id=4"
    args = ("127.0.0.1:5000", "GET", path, "1.1", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d', args, None)  # fmt: skip
    assert KeyMaskFilter().filter(record)
    line = AccessFormatter("%(client_addr)s %(request_line)s %(status_code)s").format(record)
    assert "key=***&waybill=A1" in line and KEY not in line


# --- settings -------------------------------------------------------------------------------


def test_from_settings() -> None:
    assert ClickpostClient.from_settings(Settings()) is None

    keyed = Settings(clickpost_key=SecretStr(KEY), clickpost_api_base="http://127.0.0.1:1")
    with pytest.raises(ConfigurationError, match="NOTIFIER_CLICKPOST_USERNAME"):
        ClickpostClient.from_settings(keyed)

    no_polling = ClickpostClient.from_settings(keyed.model_copy(update={"poll_interval": 0}))
    assert no_polling is not None and no_polling.username is None

    full = ClickpostClient.from_settings(keyed.model_copy(update={"clickpost_username": "u"}))
    assert full is not None
    assert (full.base_url, full.username) == ("http://127.0.0.1:1", "u")
    assert KEY not in repr(full)


async def test_track_without_a_username_names_the_setting() -> None:
    async with ClickpostClient(key=KEY, base_url="http://127.0.0.1:1") as c:
        with pytest.raises(ConfigurationError, match="NOTIFIER_CLICKPOST_USERNAME"):
            await c.track(4, ["A1"])


def test_a_base_url_that_is_not_http_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="NOTIFIER_CLICKPOST_API_BASE"):
        ClickpostClient(key=KEY, base_url="www.clickpost.in")
