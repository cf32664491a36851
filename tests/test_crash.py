"""Crash safety: ``kill -9`` the daemon while its dispatcher is sending, start it again on the
same database, and count what the customers got.

The promise (design.md, "Delivery"): nothing answered 200 is lost, every planned message goes
out, and the only repeats are messages the provider had already taken when the process died
while their rows were still ``sending``: those rows are claimed again once their lease runs out
and sent a second time. The test measures that window instead of assuming it: after the kill it
reads the database (rows ``sending``) and the servers (which of those the provider had seen).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import registration, webhook
from daemon import API_TOKEN, WEBHOOK_KEY, Daemon, daemon_logs_on_failure, wait_for
from smtp_server import SmtpServer
from twilio_server import TwilioServer

__all__ = ["daemon_logs_on_failure"]  # the fixture, imported to be found
pytestmark = pytest.mark.usefixtures("daemon_logs_on_failure")

SHIPMENTS = 300
KILL_AFTER_SMS = SHIPMENTS // 4  # some but not all SMS have reached Twilio
TWILIO_DELAY = 0.05  # seconds per request: the kill lands while requests are open
LEASE = 3  # seconds: abandoned claims are retried soon after the restart
SETTINGS = {"NOTIFIER_SEND_LEASE_SECONDS": str(LEASE)}
PENDING = ("scheduled", "sending", "retrying")


def phone(n: int) -> str:
    return f"98{n:08d}"


def waybill(n: int) -> str:
    return f"CRASH{n:05d}"


@dataclass
class Burst:
    """What the test saw of the burst: the webhooks answered 200, and the moment of the kill."""

    answered: set[int] = field(default_factory=set)
    unanswered: set[int] = field(default_factory=set)
    sms_at_kill: int = 0
    open_at_twilio: int = 0  # SMS requests Twilio had received but not yet answered


@pytest.fixture
def servers() -> Iterator[tuple[TwilioServer, SmtpServer]]:
    with TwilioServer() as twilio, SmtpServer() as smtp:
        yield twilio, smtp


async def _register_all(client: httpx.AsyncClient) -> None:
    async def one(n: int) -> None:
        body = registration(waybill=waybill(n), phone=phone(n), email=f"c{n}@example.in",
                            reference_number=f"ORD-{n}")  # fmt: skip
        response = await client.post("/shipments", json=body)
        assert response.status_code == 201, response.text

    await asyncio.gather(*(one(n) for n in range(SHIPMENTS)))


def _delivered(n: int) -> dict[str, Any]:
    return webhook(waybill=waybill(n), code=8, at=datetime.now(UTC) - timedelta(minutes=1))


async def _post(client: httpx.AsyncClient, n: int, burst: Burst) -> None:
    try:
        response = await client.post("/webhooks/clickpost", json=_delivered(n),
                                     headers={"webhook_key": WEBHOOK_KEY})  # fmt: skip
    except httpx.TransportError:  # the daemon died with this request open
        burst.unanswered.add(n)
        return
    assert response.status_code == 200, response.text
    burst.answered.add(n)


async def _kill_mid_send(daemon: Daemon, twilio: TwilioServer, burst: Burst) -> None:
    """SIGKILL once enough SMS reached Twilio, at a moment when some are still open there."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        count, answered = twilio.count, len(twilio.sids)
        if count >= KILL_AFTER_SMS and count > answered:
            os.kill(daemon.pid, signal.SIGKILL)
            burst.sms_at_kill, burst.open_at_twilio = count, count - answered
            return
        assert answered < SHIPMENTS, "every SMS went out before the kill could land"
        await asyncio.sleep(0.002)
    raise AssertionError(f"only {twilio.count} SMS reached Twilio in 60s")


async def _burst_and_kill(daemon: Daemon, twilio: TwilioServer) -> Burst:
    burst = Burst()
    limits = httpx.Limits(max_connections=32)
    token = {"Authorization": f"Bearer {API_TOKEN}"}
    async with httpx.AsyncClient(
        base_url=daemon.url, limits=limits, timeout=60, headers=token
    ) as client:
        await _register_all(client)
        killer = asyncio.create_task(_kill_mid_send(daemon, twilio, burst))
        await asyncio.gather(*(_post(client, n, burst) for n in range(SHIPMENTS)), killer)
    return burst


def _settle(twilio: TwilioServer, smtp: SmtpServer) -> None:
    """Let requests the dead daemon left open at the servers finish (the slow Twilio answers
    them anyway), so the counts below are final."""
    wait_for(lambda: twilio.count == len(twilio.sids), timeout=10, what="Twilio to go idle")
    seen = (-1, -1)
    for _ in range(30):  # until nothing new arrives for 0.3 s
        if seen == (twilio.count, len(smtp.received)):
            return
        seen = (twilio.count, len(smtp.received))
        time.sleep(0.3)
    raise AssertionError("the servers kept receiving messages from a dead daemon")


def _email_id(message_id: str) -> int:
    """The notification id in the Message-ID the dispatcher gives each email."""
    return int(message_id.strip("<>").split("@")[0].removeprefix("notification."))


def test_kill_9_mid_send_loses_nothing_and_repeats_only_what_was_in_flight(
    tmp_path: Path, servers: tuple[TwilioServer, SmtpServer]
) -> None:
    twilio, smtp = servers
    twilio.delay = TWILIO_DELAY
    first = Daemon(tmp_path, twilio=twilio, smtp=smtp, **SETTINGS)
    second = Daemon(tmp_path, twilio=twilio, smtp=smtp, **SETTINGS)
    try:
        first.start()
        started = time.monotonic()
        burst = asyncio.run(_burst_and_kill(first, twilio))
        assert first.process is not None and first.process.wait(timeout=30) == -signal.SIGKILL
        _settle(twilio, smtp)

        # What the dead daemon left: every answered webhook is stored, and some rows are
        # claimed (``sending``) by a process that no longer exists.
        stored = {w for (w,) in first.sql("SELECT waybill FROM event")}
        assert {waybill(n) for n in burst.answered} <= stored
        sending = first.sql("SELECT id, channel, recipient FROM notification "
                            "WHERE status = 'sending'")  # fmt: skip
        sms_before = Counter(r.form["To"] for r in twilio.requests)
        email_before = Counter(_email_id(m.message["Message-ID"]) for m in smtp.received)
        provider_had = [
            (id_, channel)
            for id_, channel, to in sending
            if (sms_before[to] if channel == "sms" else email_before[id_])
        ]
        statuses_at_kill = dict(first.sql("SELECT status, count(*) FROM notification GROUP BY 1"))

        # Start again on the same database. Clickpost retries what got no 200.
        twilio.delay = 0.0
        second.start()
        with httpx.Client(base_url=second.url, timeout=30) as client:
            for n in sorted(burst.unanswered):
                response = client.post("/webhooks/clickpost", json=_delivered(n),
                                       headers={"webhook_key": WEBHOOK_KEY})  # fmt: skip
                assert response.status_code == 200, response.text

        def all_sent() -> bool:
            rows = dict(second.sql("SELECT status, count(*) FROM notification GROUP BY 1"))
            return rows == {"sent": 2 * SHIPMENTS}

        wait_for(all_sent, timeout=60 + LEASE, every=0.25, what="every notification to be sent")
        _settle(twilio, smtp)
        elapsed = time.monotonic() - started

        sms = Counter(r.form["To"] for r in twilio.requests)
        emails = Counter(_email_id(m.message["Message-ID"]) for m in smtp.received)
        assert set(sms) == {"+91" + phone(n) for n in range(SHIPMENTS)}
        assert len(emails) == SHIPMENTS
        assert {m.rcpt_tos for m in smtp.received} == {
            (f"c{n}@example.in",) for n in range(SHIPMENTS)
        }
        repeats = sum(c - 1 for c in sms.values()) + sum(c - 1 for c in emails.values())
        print(
            f"\ncrash test: {SHIPMENTS} shipments; {len(burst.answered)} delivered webhooks "
            f"answered 200 before the kill, {len(burst.unanswered)} cut off (re-posted after "
            f"the restart); kill -9 after {burst.sms_at_kill} SMS reached Twilio "
            f"({burst.open_at_twilio} still open there).\n"
            f"  rows at the kill: {statuses_at_kill}\n"
            f"  in flight (sending) at the kill: {len(sending)}, of which the provider had "
            f"already taken {len(provider_had)}\n"
            f"  delivered twice: {repeats} (SMS {sum(c - 1 for c in sms.values())}, email "
            f"{sum(c - 1 for c in emails.values())}); all {2 * SHIPMENTS} sent in {elapsed:.1f}s"
        )
        assert repeats <= len(sending)
        # Tighter: exactly the rows the provider had taken while they were still ``sending``.
        assert repeats == len(provider_had)
        assert max(sms.values()) <= 2 and max(emails.values()) <= 2
        attempts = second.sql("SELECT max(attempts) FROM notification")[0][0]
        assert attempts <= 2
    finally:
        first.kill()
        second.stop()
