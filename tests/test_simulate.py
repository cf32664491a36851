"""The journey simulator: its bodies read like Clickpost's, and played into a real notifier server
(uvicorn on a 127.0.0.1 port) they give the messages design.md promises."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ROOT
from pydantic import SecretStr

from notifier import recipients
from notifier.clickpost.models import parse_registration, parse_webhook
from notifier.clickpost.standin import BackgroundServer
from notifier.server import create_app
from notifier.settings import Settings
from notifier.simulate import (
    JOURNEYS,
    add_simulate_arguments,
    journey_bodies,
    run_from_args,
    simulate,
)

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
WEBHOOK_KEY = "wk-sim"
TOKEN = "api-token-sim"

# journey → (outer scan codes in sending order, their latest_status codes)
EXPECTED: dict[str, tuple[list[int], list[int]]] = {
    "happy": ([4, 5, 6, 8], [4, 5, 6, 8]),
    "cod": ([4, 5, 6, 8], [4, 5, 6, 8]),
    "ndr_then_delivered": ([6, 9, 6, 8], [6, 9, 6, 8]),
    "rto": ([9, 9, 11, 21, 14], [9, 9, 11, 21, 14]),
    "lost": ([4, 5, 16], [4, 5, 16]),
    "burst": ([4, 5, 6, 8], [8, 8, 8, 8]),
    "out_of_order": ([4, 5, 8, 6], [4, 5, 8, 6]),
    "duplicates": ([4, 4, 5, 5, 6, 6, 8, 8], [4, 4, 5, 5, 6, 6, 8, 8]),
}


def test_every_journey_is_covered() -> None:
    assert set(JOURNEYS) == set(EXPECTED)
    assert all(j.description for j in JOURNEYS.values())


# --- the bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTED))
def test_bodies_parse_and_follow_the_journey(name: str) -> None:
    bodies = journey_bodies(name, waybill="SIM00001", cp_id=4, now=NOW, seed=7)
    updates = [parse_webhook(body) for body in bodies.webhooks]
    scans, latest = EXPECTED[name]

    assert [u.scan.code for u in updates] == scans
    assert [u.latest.code for u in updates] == latest
    assert {(u.cp_id, u.waybill) for u in updates} == {(4, "SIM00001")}
    newest = max(u.latest.timestamp for u in updates)
    assert NOW - timedelta(minutes=15) < newest < NOW  # recent enough to send
    for update in updates:
        assert (update.ndr_code is not None) == (update.scan.code == 9)  # NDR only with code 9
        assert update.order_id and update.reference_number and update.is_rvp is False
        assert update.edd is not None and update.latest.bucket is not None
        assert update.raw["timestamp"].endswith("Z")
        assert update.raw["additional"]["latest_status"]["clickpost_status_bucket_description"]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_scans_happen_in_journey_order(name: str) -> None:
    """Whatever order the webhooks arrive in, the courier scanned in the journey's order."""
    updates = [parse_webhook(b) for b in journey_bodies(name, waybill="W", now=NOW).webhooks]
    unique = {(u.scan.code, u.scan.timestamp) for u in updates}
    in_time = [code for code, _ in sorted(unique, key=lambda scan: scan[1])]
    assert in_time == [step.code for step in JOURNEYS[name].steps]


def test_registration_is_a_usable_awb_register_body() -> None:
    bodies = journey_bodies("cod", waybill="SIM00001", cp_id=14, now=NOW, seed=1)
    shipment = parse_registration(bodies.registration)
    assert (shipment.cp_id, shipment.waybill, shipment.order_type) == (14, "SIM00001", "COD")
    assert shipment.cod_amount == shipment.invoice_value and shipment.cod_amount
    assert recipients.phone(shipment.consumer.phone, region="IN").usable
    assert recipients.email(shipment.consumer.email).usable
    happy = parse_registration(journey_bodies("happy", waybill="W", now=NOW).registration)
    assert happy.order_type == "PREPAID" and not happy.cod_amount


def test_ndr_journey_fails_for_an_unavailable_customer_and_retries_the_next_day() -> None:
    updates = [parse_webhook(b) for b in journey_bodies("ndr_then_delivered", waybill="W",
                                                        now=NOW, seed=5).webhooks]  # fmt: skip
    failed = updates[1]
    assert (failed.scan.code, failed.ndr_code) == (9, 1)  # customer_unavailable
    first, second = (u.scan.timestamp for u in updates if u.scan.code == 6)
    assert second.date() != first.date()  # out_for_delivery repeats once per day


def test_burst_is_one_wave_and_duplicates_are_identical_pairs() -> None:
    burst = journey_bodies("burst", waybill="W", now=NOW, seed=2)
    assert [len(wave) for wave in burst.waves] == [4]
    twice = journey_bodies("duplicates", waybill="W", now=NOW, seed=2).webhooks
    assert all(twice[i] == twice[i + 1] for i in range(0, len(twice), 2))


def test_the_same_seed_gives_the_same_bodies() -> None:
    one = journey_bodies("rto", waybill="W", now=NOW, seed=11)
    assert one == journey_bodies("rto", waybill="W", now=NOW, seed=11)
    assert one != journey_bodies("rto", waybill="W", now=NOW, seed=12)


# --- against a real notifier server ---------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    tmp: Path = tmp_path_factory.mktemp("simulate")
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'notifier.db'}",
        rules=ROOT / "rules.yaml",
        templates=ROOT / "templates",
        outbox_dir=tmp / "outbox",
        webhook_keys=SecretStr(WEBHOOK_KEY),
        api_token=SecretStr(TOKEN),
        quiet_hours="off",
    )
    with BackgroundServer(create_app(settings, run_scheduler=False)) as running:
        yield running


async def play(server: BackgroundServer, journey: str, **options: Any) -> Any:
    return await simulate(
        url=f"{server.url}/webhooks/clickpost",
        webhook_key=WEBHOOK_KEY,
        journey=journey,
        api_url=server.url,
        api_token=TOKEN,
        **options,
    )


def delivery_log(server: BackgroundServer, waybill: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.url}/notifications",
        params={"waybill": waybill},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    response.raise_for_status()
    log: list[dict[str, Any]] = response.json()
    return log


async def test_happy_journey_sends_shipped_out_for_delivery_and_delivered(
    server: BackgroundServer,
) -> None:
    report = await play(server, "happy", seed=101)

    assert report.ok and report.statuses == Counter({200: 4})
    assert report.registrations == Counter({201: 1})
    assert report.outcomes == Counter({"accepted": 4})
    log = delivery_log(server, report.waybills[0])
    assert {n["rule"] for n in log} == {"shipped", "out_for_delivery", "delivered"}
    delivered = {n["channel"]: n["status"] for n in log if n["rule"] == "delivered"}
    assert delivered == {"sms": "scheduled", "email": "scheduled"}


async def test_burst_sends_only_delivered(server: BackgroundServer) -> None:
    report = await play(server, "burst", seed=102)

    assert report.ok and report.statuses == Counter({200: 4})
    log = delivery_log(server, report.waybills[0])
    assert {(n["rule"], n["status"]) for n in log} == {("delivered", "scheduled")}
    assert len(log) == 2  # one sms, one email


async def test_duplicates_are_answered_200_as_duplicate(server: BackgroundServer) -> None:
    report = await play(server, "duplicates", seed=103)

    assert report.ok and report.statuses == Counter({200: 8})
    assert report.outcomes == Counter({"accepted": 4, "duplicate": 4})
    log = delivery_log(server, report.waybills[0])
    assert Counter(n["rule"] for n in log) == Counter(
        {"shipped": 2, "out_for_delivery": 2, "delivered": 2}
    )


async def test_out_of_order_never_sends_out_for_delivery_after_delivered(
    server: BackgroundServer,
) -> None:
    report = await play(server, "out_of_order", seed=104)
    assert report.ok
    rules = {n["rule"] for n in delivery_log(server, report.waybills[0])}
    assert "out_for_delivery" not in rules and "delivered" in rules


async def test_a_wrong_webhook_key_is_counted_not_raised(server: BackgroundServer) -> None:
    report = await simulate(url=f"{server.url}/webhooks/clickpost", webhook_key="wrong",
                            journey="lost", seed=105)  # fmt: skip
    assert report.statuses == Counter({401: 3}) and not report.ok
    assert report.outcomes == Counter({"refused": 3}) and report.errors


async def test_load_is_paced_and_every_shipment_gets_its_own_waybill(
    server: BackgroundServer,
) -> None:
    report = await play(server, "happy", count=6, rate=60.0, concurrency=4, seed=106)

    assert report.ok and report.statuses == Counter({200: 24})
    assert report.shipments == 6 and len(set(report.waybills)) == 6
    assert report.elapsed >= 23 / 60 * 0.9  # 24 webhooks at 60/s: at least 23 intervals


async def test_run_from_args_prints_a_summary(
    server: BackgroundServer, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="notifier simulate")
    add_simulate_arguments(parser)
    args = parser.parse_args(["--url", f"{server.url}/webhooks/clickpost", "--webhook-key",
                              WEBHOOK_KEY, "--journey", "cod", "--api-url", server.url,
                              "--api-token", TOKEN, "--seed", "107"])  # fmt: skip

    assert await run_from_args(args) == 0
    out = capsys.readouterr().out
    assert "journey cod: 1 shipments, 4 webhooks" in out and "200: 4" in out


def test_help_lists_every_journey(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="notifier simulate")
    add_simulate_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    for name, journey in JOURNEYS.items():
        assert any(name in line and journey.description in line for line in out.splitlines())
