"""Graceful shutdown: SIGTERM while the dispatcher is sending to a slow Twilio.

The daemon must stop taking requests at once, give the sends in flight up to
``NOTIFIER_SHUTDOWN_GRACE`` seconds, and exit 0. With enough grace nothing is left ``sending``
and nothing is sent twice; with too little, it still exits soon after the grace, and the next
start sends what it left (after the lease runs out).
"""

from __future__ import annotations

import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import registration, webhook
from daemon import Daemon, daemon_logs_on_failure, wait_for
from smtp_server import SmtpServer
from twilio_server import TwilioServer

__all__ = ["daemon_logs_on_failure"]  # the fixture, imported to be found
pytestmark = pytest.mark.usefixtures("daemon_logs_on_failure")


@pytest.fixture
def servers() -> Iterator[tuple[TwilioServer, SmtpServer]]:
    with TwilioServer() as twilio, SmtpServer() as smtp:
        yield twilio, smtp


def phone(n: int) -> str:
    return f"97{n:08d}"


def plan_deliveries(daemon: Daemon, count: int) -> None:
    """Register ``count`` shipments and post a delivered webhook for each: 2 messages each."""
    at = datetime.now(UTC) - timedelta(minutes=1)
    for n in range(count):
        body = registration(waybill=f"STOP{n:04d}", phone=phone(n), email=f"s{n}@example.in")
        assert daemon.api.post("/shipments", json=body).status_code == 201
    for n in range(count):
        response = daemon.post_webhook(webhook(waybill=f"STOP{n:04d}", code=8, at=at))
        assert response.status_code == 200, response.text


def wait_until_sending(twilio: TwilioServer, at_least: int = 1) -> None:
    """Until Twilio holds ``at_least`` requests open: that many sends are in flight."""
    wait_for(lambda: twilio.count - len(twilio.sids) >= at_least, timeout=30, every=0.005,
             what=f"{at_least} SMS in flight at Twilio")  # fmt: skip


def after_sigterm(daemon: Daemon) -> str:
    """Poll the port after SIGTERM: "refused" once new connections are refused while the
    process still runs (it is finishing its sends), "exited" if it was gone first."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and daemon.alive:
        try:
            socket.create_connection(("127.0.0.1", daemon.port), timeout=0.5).close()
        except OSError:
            return "refused" if daemon.alive else "exited"
        time.sleep(0.02)
    return "exited" if not daemon.alive else "still accepting connections 10s after SIGTERM"


def statuses(daemon: Daemon) -> dict[str, int]:
    return dict(daemon.sql("SELECT status, count(*) FROM notification GROUP BY 1"))


def sms_sent_rows(daemon: Daemon) -> list[str]:
    rows = daemon.sql(
        "SELECT recipient FROM notification WHERE channel = 'sms' AND status = 'sent'"
    )
    return [recipient for (recipient,) in rows]


def settle(twilio: TwilioServer) -> None:
    """Let the slow server finish requests whose sender is gone; it answers them anyway."""
    wait_for(lambda: twilio.count == len(twilio.sids), timeout=30, what="Twilio to go idle")


def test_sigterm_finishes_in_flight_sends_and_exits_0(
    tmp_path: Path, servers: tuple[TwilioServer, SmtpServer]
) -> None:
    twilio, smtp = servers
    grace = 15.0
    count = 48  # 16 sends at a time (NOTIFIER_CHANNEL_CONCURRENCY) of 0.5 s each: ~1.5 s
    twilio.delay = 0.5
    daemon = Daemon(tmp_path, twilio=twilio, smtp=smtp, NOTIFIER_SHUTDOWN_GRACE=str(grace))
    again = Daemon(tmp_path, twilio=twilio, smtp=smtp)
    try:
        daemon.start()
        plan_deliveries(daemon, count)
        wait_until_sending(twilio, at_least=8)
        before = statuses(daemon)
        assert daemon.process is not None
        stopping = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        assert after_sigterm(daemon) == "refused"
        code = daemon.process.wait(timeout=grace + 15)
        took = time.monotonic() - stopping
        after = statuses(daemon)
        settle(twilio)
        print(f"\nSIGTERM with {grace:.0f}s grace: rows before {before}, after {after}; "
              f"exit status {code} after {took:.1f}s")  # fmt: skip

        assert "sending" not in after, "a send was abandoned although the grace was long enough"
        sent_sms = sms_sent_rows(daemon)
        assert sent_sms, "nothing was finished"
        # Every SMS Twilio took is recorded as sent, once; none is in the database otherwise.
        assert Counter(r.form["To"] for r in twilio.requests) == Counter(sent_sms)
        assert took < grace + 10

        again.start()  # whatever was not claimed before the stop goes out now, once
        wait_for(lambda: statuses(again) == {"sent": 2 * count}, timeout=30,
                 what="the rest to be sent after the restart")  # fmt: skip
        sms = Counter(r.form["To"] for r in twilio.requests)
        assert sms == Counter({"+91" + phone(n): 1 for n in range(count)})
        assert sorted(m.rcpt_tos for m in smtp.received) == sorted(
            (f"s{n}@example.in",) for n in range(count)
        )
        assert code == 0, f"notifier serve exited with {code} on SIGTERM, expected 0"
    finally:
        daemon.stop()
        again.stop()


def test_short_grace_still_exits_and_the_next_start_sends_the_rest(
    tmp_path: Path, servers: tuple[TwilioServer, SmtpServer]
) -> None:
    twilio, smtp = servers
    grace, lease, count = 1.0, 3, 8
    twilio.delay = 4.0  # longer than the grace: the sends in flight cannot finish
    settings = {"NOTIFIER_SHUTDOWN_GRACE": str(grace), "NOTIFIER_SEND_LEASE_SECONDS": str(lease)}
    daemon = Daemon(tmp_path, twilio=twilio, smtp=smtp, **settings)
    again = Daemon(tmp_path, twilio=twilio, smtp=smtp, **settings)
    try:
        daemon.start()
        plan_deliveries(daemon, count)
        wait_until_sending(twilio)
        assert daemon.process is not None
        stopping = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        assert after_sigterm(daemon) == "refused"
        code = daemon.process.wait(timeout=grace + 20)
        took = time.monotonic() - stopping
        left = statuses(daemon)
        print(f"\nSIGTERM with {grace:.0f}s grace, Twilio taking {twilio.delay:.0f}s: rows after "
              f"{left}; exit status {code} after {took:.1f}s")  # fmt: skip
        assert took < grace + 5, f"took {took:.1f}s to stop with a {grace:.0f}s grace"
        # The send in flight could not finish (Twilio answers after 4 s), so the whole grace
        # must have passed before it was given up.
        assert took >= grace, f"gave up the sends in flight after {took:.1f}s, not {grace}s"
        assert left.get("sending", 0) >= 1, "the slow sends should have been cut off"
        abandoned = left["sending"]

        settle(twilio)
        twilio.delay = 0.0
        again.start()
        wait_for(lambda: statuses(again) == {"sent": 2 * count}, timeout=30 + lease,
                 what="the abandoned sends to be picked up by the next start")  # fmt: skip
        sms = Counter(r.form["To"] for r in twilio.requests)
        assert set(sms) == {"+91" + phone(n) for n in range(count)}
        # Cut off after Twilio took them: the documented repeat window, no wider.
        assert sum(c - 1 for c in sms.values()) <= abandoned
        assert len(smtp.received) >= count
        assert code == 0, f"notifier serve exited with {code} on SIGTERM, expected 0"
    finally:
        daemon.stop()
        again.stop()
