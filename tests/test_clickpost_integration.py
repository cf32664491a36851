"""The Clickpost loops through the engine, against the local stand-in on 127.0.0.1:
registrations forwarded (and never lost), unregistration forwarded, polling as a safety net."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import Clock, registration, webhook
from pydantic import SecretStr

from notifier import Notifier, Settings
from notifier.clickpost.client import ClickpostClient
from notifier.clickpost.standin import BackgroundServer, create_standin
from notifier.errors import StoreUnavailableError

KEY, USERNAME = "cp-key-2026", "acme"
T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture(scope="module")
def standin() -> Iterator[BackgroundServer]:
    with BackgroundServer(create_standin(key=KEY, username=USERNAME)) as server:
        yield server


@pytest.fixture
def control(standin: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=standin.url, timeout=10) as http:
        http.post("/_standin/reset").raise_for_status()
        yield http


@pytest.fixture
async def engine(
    settings: Settings, clock: Clock, standin: BackgroundServer, control: httpx.Client
) -> AsyncIterator[Notifier]:
    linked = settings.model_copy(update={
        "clickpost_api_base": standin.url, "clickpost_username": USERNAME,
        "clickpost_key": SecretStr(KEY), "poll_stale_after": 3600,
    })  # fmt: skip
    clock.now = T0
    async with Notifier(linked, clock=clock) as n:
        assert n.clickpost_sync is not None
        # the same client, without real waits between its retries
        n.clickpost_sync.client = ClickpostClient(
            base_url=standin.url, username=USERNAME, key=KEY, max_retries=2, sleep=no_sleep
        )
        yield n
        await n.clickpost_sync.client.aclose()


async def calls_of(n: Notifier, waybill: str = "SF18399217NER") -> list[dict[str, Any]]:
    detail = await n.shipment(4, waybill)
    assert detail is not None
    calls: list[dict[str, Any]] = detail["clickpost_calls"]
    return calls


async def test_registration_is_forwarded_with_our_key(
    engine: Notifier, control: httpx.Client
) -> None:
    await engine.register_shipment(registration())
    assert [c["status"] for c in await calls_of(engine)] == ["pending"]
    assert engine.clickpost_sync is not None
    assert await engine.clickpost_sync.make_owed_calls() == 1
    [stored] = control.get("/_standin/registrations").json()
    assert stored["waybill"] == "SF18399217NER"
    assert stored["body"]["consumer_details"]["name"] == "Priya Sharma"
    detail = await engine.shipment(4, "SF18399217NER")
    assert detail is not None and detail["shipment"]["tracking_id"]
    assert [c["status"] for c in detail["clickpost_calls"]] == ["done"]
    assert await engine.clickpost_sync.make_owed_calls() == 0  # made once


async def test_clickpost_down_delays_the_forward_and_loses_nothing(
    engine: Notifier, control: httpx.Client, clock: Clock
) -> None:
    control.post("/_standin/faults", json={"count": 3, "status": 503}).raise_for_status()
    result = await engine.register_shipment(registration())
    assert result.created
    assert engine.clickpost_sync is not None
    assert await engine.clickpost_sync.make_owed_calls() == 0
    [call] = await calls_of(engine)
    assert call["status"] == "pending" and "503" in call["last_error"]
    assert await engine.clickpost_sync.make_owed_calls() == 0  # not due yet: backoff
    clock.advance(minutes=2)
    assert await engine.clickpost_sync.make_owed_calls() == 1
    [call] = await calls_of(engine)
    assert (call["status"], call["attempts"]) == ("done", 2)


async def test_a_rejected_forward_is_failed_with_clickposts_message(
    engine: Notifier, control: httpx.Client
) -> None:
    control.post("/_standin/faults", json={"count": 1, "status": 400}).raise_for_status()
    await engine.register_shipment(registration())
    assert engine.clickpost_sync is not None
    await engine.clickpost_sync.make_owed_calls()
    [call] = await calls_of(engine)
    assert call["status"] == "failed" and call["last_error"].startswith("rejected:")


async def test_unregister_is_forwarded(engine: Notifier, control: httpx.Client) -> None:
    await engine.register_shipment(registration())
    assert await engine.unregister_shipment({"cp_id": 4, "waybill": "SF18399217NER"})
    assert engine.clickpost_sync is not None
    assert await engine.clickpost_sync.make_owed_calls() == 2
    paths = [c["path"] for c in control.get("/_standin/calls").json()]
    assert any("awb-unregister" in p for p in paths)


async def test_polling_finds_what_the_webhook_missed_and_never_sends_twice(
    engine: Notifier, control: httpx.Client, clock: Clock
) -> None:
    assert engine.clickpost_sync is not None
    await engine.register_shipment(registration())
    await engine.register_shipment(registration(waybill="QUIET2"))
    await engine.clickpost_sync.make_owed_calls()
    scan_at = T0 + timedelta(hours=1, minutes=50)
    naive = scan_at.replace(tzinfo=None).isoformat(sep=" ")
    control.post("/_standin/scans", json={
        "cp_id": 4, "waybill": "SF18399217NER", "clickpost_status_code": 6,
        "timestamp": naive,
    }).raise_for_status()  # fmt: skip
    clock.now = T0 + timedelta(hours=2)
    report = await engine.clickpost_sync.poll()
    assert (report.shipments, report.calls, report.new_events) == (2, 1, 1)
    rows = await engine.notifications(waybill="SF18399217NER")
    assert {(r["rule"], r["status"]) for r in rows} == {("out_for_delivery", "scheduled")}
    # the webhook for the same scan arrives late, with a Z: the same event
    late = await engine.handle_webhook(webhook(code=6, at=scan_at))
    assert late.duplicate
    # polled just now: not asked again before the stale period passes
    assert (await engine.clickpost_sync.poll()).shipments == 0


async def test_final_and_unregistered_shipments_are_not_polled(
    engine: Notifier, clock: Clock
) -> None:
    assert engine.clickpost_sync is not None
    await engine.register_shipment(registration(waybill="DONE1"))
    await engine.register_shipment(registration(waybill="GONE1"))
    await engine.register_shipment(registration(waybill="ACTIVE1"))
    await engine.handle_webhook(webhook(waybill="DONE1", code=8, at=T0))
    await engine.unregister_shipment({"cp_id": 4, "waybill": "GONE1"})
    clock.now = T0 + timedelta(hours=3)
    report = await engine.clickpost_sync.poll()
    assert report.shipments == 1


async def test_a_refused_record_of_a_clickpost_call_makes_the_daemon_not_ready(
    engine: Notifier, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The call went through but its record was refused (a full disk): /readyz hears of it
    like a refused webhook, and is cleared once the call, made again, is recorded."""
    await engine.register_shipment(registration())
    assert engine.clickpost_sync is not None
    real = engine.clickpost_calls.finish

    def full(*args: object, **kwargs: object) -> None:
        raise StoreUnavailableError("database unavailable: database or disk is full")

    monkeypatch.setattr(engine.clickpost_calls, "finish", full)
    with pytest.raises(StoreUnavailableError):
        await engine.clickpost_sync.make_owed_calls()
    refusal = engine.refusal()
    assert refusal is not None and refusal.what == "record of a Clickpost call"
    assert refusal.reason == "database or disk is full"
    monkeypatch.setattr(engine.clickpost_calls, "finish", real)
    clock.advance(minutes=3)  # the claim's lease ran out: the call is owed again
    assert await engine.clickpost_sync.make_owed_calls() == 1
    assert engine.refusal() is None
    assert [c["status"] for c in await calls_of(engine)] == ["done"]


async def test_a_refused_claim_of_clickpost_calls_is_told(
    engine: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise StoreUnavailableError("database unavailable: database is locked")

    monkeypatch.setattr(engine.clickpost_calls, "claim_due", full)
    with pytest.raises(StoreUnavailableError):
        await engine.clickpost_sync.make_owed_calls()  # type: ignore[union-attr]
    refusal = engine.refusal()
    assert refusal is not None and refusal.what == "claim of Clickpost calls"
    assert refusal.reason == "database is locked by another writer"
