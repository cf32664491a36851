"""``notifier serve`` end to end, over real HTTP: the daemon as a subprocess, a real SMTP server
(aiosmtpd) and the local Twilio-compatible server. One daemon serves the whole module; every
test uses its own waybill, phone number and email address, so the tests do not see each other's
messages. Sends are awaited by polling (the dispatcher runs every second), never by timing.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from conftest import SAMPLES, iso, registration, webhook
from daemon import API_TOKEN, Daemon, daemon_logs_on_failure, wait_for
from smtp_server import Received, SmtpServer
from twilio.request_validator import RequestValidator
from twilio_server import AUTH_TOKEN, TwilioServer

__all__ = ["daemon_logs_on_failure"]  # the fixture, imported to be found
pytestmark = pytest.mark.usefixtures("daemon_logs_on_failure")

BODY_LIMIT = 64 * 1024
SEND_TIMEOUT = 30.0  # generous: a loaded 2-core machine, a dispatcher that wakes every second
PENDING = {"scheduled", "sending", "retrying"}
_numbers = itertools.count(1)


@dataclass(frozen=True)
class Customer:
    """A shipment of this test alone: its own waybill, phone and email."""

    waybill: str
    phone: str
    email: str

    @property
    def order(self) -> str:
        return f"ORD-{self.waybill}"

    @property
    def e164(self) -> str:
        return "+91" + self.phone

    def registration(self, **extra: Any) -> dict[str, Any]:
        return registration(waybill=self.waybill, phone=self.phone, email=self.email,
                            reference_number=self.order, **extra)  # fmt: skip

    def webhook(self, code: int, ago: timedelta, **extra: Any) -> dict[str, Any]:
        return webhook(waybill=self.waybill, code=code, at=datetime.now(UTC) - ago, **extra)


def customer() -> Customer:
    n = next(_numbers)
    return Customer(waybill=f"E2E{n:05d}", phone=f"98765{n:05d}", email=f"buyer{n}@example.in")


@pytest.fixture(scope="module")
def twilio() -> Iterator[TwilioServer]:
    with TwilioServer() as server:
        yield server


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, twilio: TwilioServer, smtp: SmtpServer
) -> Iterator[Daemon]:
    workdir = tmp_path_factory.mktemp("e2e")
    with Daemon(workdir, twilio=twilio, smtp=smtp,
                NOTIFIER_MAX_BODY_BYTES=str(BODY_LIMIT)) as running:  # fmt: skip
        yield running


# -- what reached the providers, and what the log says -------------------------------------------


def sms_to(twilio: TwilioServer, who: Customer) -> list[str]:
    return [r.form.get("Body", "") for r in list(twilio.requests) if r.form.get("To") == who.e164]


def emails_to(smtp: SmtpServer, who: Customer) -> list[Received]:
    return [m for m in list(smtp.received) if who.email in m.rcpt_tos]


def wait_for_messages(
    twilio: TwilioServer, smtp: SmtpServer, who: Customer, *, sms: int, email: int
) -> None:
    wait_for(
        lambda: len(sms_to(twilio, who)) >= sms and len(emails_to(smtp, who)) >= email,
        timeout=SEND_TIMEOUT,
        what=f"{sms} SMS and {email} email(s) to {who.waybill}",
    )


def settled_log(daemon: Daemon, who: Customer) -> list[dict[str, Any]]:
    """The shipment's delivery log once nothing in it is pending, oldest first."""

    def settled() -> list[dict[str, Any]] | None:
        rows = daemon.notifications(waybill=who.waybill)
        return None if any(r["status"] in PENDING for r in rows) else rows[::-1]

    rows: list[dict[str, Any]] = wait_for(
        settled, timeout=SEND_TIMEOUT, what=f"{who.waybill}'s log to settle"
    )
    return rows


def sent(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(r["rule"], r["channel"]) for r in rows if r["status"] == "sent"]


def register(daemon: Daemon, who: Customer) -> dict[str, Any]:
    response = daemon.api.post("/shipments", json=who.registration())
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def accepted(daemon: Daemon, body: dict[str, Any] | bytes) -> dict[str, Any]:
    response = daemon.post_webhook(body)
    assert response.status_code == 200, response.text
    outcome: dict[str, Any] = response.json()
    return outcome


def planned(outcome: dict[str, Any]) -> list[tuple[str, str]]:
    return [(n["rule"], n["channel"]) for n in outcome["notifications"] if n["status"] != "skipped"]


def real_sample(name: str, who: Customer, at: datetime) -> bytes:
    """A real Clickpost body from examples/, readdressed to ``who`` and moved to ``at``: the
    rules drop updates older than their max_event_age, and the samples are from 2016-2019."""
    body = json.loads((SAMPLES / name).read_text())
    body["waybill"], body["cp_id"], body["timestamp"] = who.waybill, 4, iso(at)
    body["additional"]["latest_status"]["timestamp"] = iso(at)
    body["additional"].pop("order_id", None)  # the sample's order id would outlive the waybill
    body["additional"]["latest_status"].pop("reference_number", None)
    return json.dumps(body).encode()


# -- the tests -------------------------------------------------------------------------------------


def test_happy_path_sends_sms_and_email_and_logs_provider_ids(
    daemon: Daemon, twilio: TwilioServer, smtp: SmtpServer
) -> None:
    who = customer()
    assert register(daemon, who)["created"] is True
    now = datetime.now(UTC)
    ofd = accepted(
        daemon, real_sample("webhook-out-for-delivery-2017.json", who, now - timedelta(minutes=20))
    )
    assert ofd["status"] == "accepted"
    assert planned(ofd) == [("out_for_delivery", "sms"), ("out_for_delivery", "email")]
    wait_for_messages(twilio, smtp, who, sms=1, email=1)
    delivered = accepted(daemon, real_sample("webhook-selected-delivered.json", who, now))
    assert planned(delivered) == [("delivered", "sms"), ("delivered", "email")]
    wait_for_messages(twilio, smtp, who, sms=2, email=2)

    texts = sms_to(twilio, who)
    assert "is out for delivery" in texts[0] and who.order in texts[0]
    assert "has been delivered" in texts[1]
    mails = emails_to(smtp, who)
    assert [m.message["Subject"] for m in mails] == [
        f"Your Acme Store order {who.order} is out for delivery",
        f"Your Acme Store order {who.order} has been delivered",
    ]
    rows = settled_log(daemon, who)
    assert sent(rows) == [("out_for_delivery", "sms"), ("out_for_delivery", "email"),
                          ("delivered", "sms"), ("delivered", "email")]  # fmt: skip
    sms_ids = [r["provider_id"] for r in rows if r["channel"] == "sms"]
    assert all(sid in twilio.sids for sid in sms_ids) and len(set(sms_ids)) == 2
    email_ids = [r["provider_id"] for r in rows if r["channel"] == "email"]
    assert email_ids == [m.message["Message-ID"] for m in mails]
    assert all(r["sent_at"] and r["attempts"] == 1 for r in rows)
    assert who.phone not in json.dumps(rows) and who.email not in json.dumps(rows)


def test_twilio_delivery_receipt_moves_the_log(daemon: Daemon, twilio: TwilioServer) -> None:
    who = customer()
    register(daemon, who)
    accepted(daemon, who.webhook(8, timedelta(minutes=1)))
    wait_for(lambda: sms_to(twilio, who), timeout=SEND_TIMEOUT, what="the SMS")
    row = next(r for r in settled_log(daemon, who) if r["channel"] == "sms")
    request = next(r for r in twilio.requests if r.form.get("To") == who.e164)
    callback = request.form.get("StatusCallback", "")
    assert callback == f"{daemon.url}/callbacks/twilio/status"
    params = {"MessageSid": row["provider_id"], "MessageStatus": "delivered",
              "AccountSid": twilio.account_sid}  # fmt: skip
    forged = httpx.post(callback, data=params, headers={"X-Twilio-Signature": "forged"})
    assert forged.status_code == 401 and forged.json()["field"] == "X-Twilio-Signature"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(callback, params)
    receipt = httpx.post(callback, data=params, headers={"X-Twilio-Signature": signature})
    assert receipt.status_code == 204
    after = next(r for r in daemon.notifications(waybill=who.waybill) if r["id"] == row["id"])
    assert after["status"] == "delivered"


def test_same_webhook_twice_is_one_event_and_one_sms(
    daemon: Daemon, twilio: TwilioServer, smtp: SmtpServer
) -> None:
    who = customer()
    register(daemon, who)
    body = json.dumps(who.webhook(8, timedelta(minutes=2))).encode()
    first, again = accepted(daemon, body), accepted(daemon, body)
    assert (first["status"], again["status"]) == ("accepted", "duplicate")
    assert again["notifications"] == [] and again["event_id"] is None
    rows = settled_log(daemon, who)
    assert sent(rows) == [("delivered", "sms"), ("delivered", "email")]
    assert (len(sms_to(twilio, who)), len(emails_to(smtp, who))) == (1, 1)
    detail = daemon.api.get(f"/shipments/4/{who.waybill}").json()
    assert len(detail["events"]) == 1


def test_older_update_after_delivered_sends_nothing(
    daemon: Daemon, twilio: TwilioServer, smtp: SmtpServer
) -> None:
    who = customer()
    register(daemon, who)
    accepted(daemon, who.webhook(8, timedelta(minutes=1)))
    wait_for_messages(twilio, smtp, who, sms=1, email=1)
    late = accepted(daemon, who.webhook(6, timedelta(minutes=30)))
    assert late["status"] == "accepted" and planned(late) == []
    rows = settled_log(daemon, who)
    assert [(r["rule"], r["channel"], r["status"]) for r in rows] == [
        ("delivered", "sms", "sent"), ("delivered", "email", "sent")]  # fmt: skip
    assert len(sms_to(twilio, who)) == 1 and len(emails_to(smtp, who)) == 1
    assert len(daemon.api.get(f"/shipments/4/{who.waybill}").json()["events"]) == 2


def test_burst_with_latest_status_delivered_sends_only_delivered(
    daemon: Daemon, twilio: TwilioServer, smtp: SmtpServer
) -> None:
    """A courier's scans arriving at once: four webhooks whose latest_status is Delivered."""
    who = customer()
    register(daemon, who)
    now = datetime.now(UTC)
    latest = (8, now - timedelta(minutes=1))
    for code, minutes in ((4, 50), (5, 40), (6, 30), (8, 1)):
        body = who.webhook(code, timedelta(minutes=minutes), latest=latest)
        assert accepted(daemon, body)["status"] == "accepted"
    rows = settled_log(daemon, who)
    assert sent(rows) == [("delivered", "sms"), ("delivered", "email")]
    assert {r["rule"] for r in rows} == {"delivered"}
    texts = sms_to(twilio, who)
    assert len(texts) == 1 and "has been delivered" in texts[0]
    assert len(emails_to(smtp, who)) == 1
    assert len(daemon.api.get(f"/shipments/4/{who.waybill}").json()["events"]) == 4


def test_update_before_registration_is_sent_once_after_it(
    daemon: Daemon, twilio: TwilioServer, smtp: SmtpServer
) -> None:
    who = customer()
    held = accepted(daemon, who.webhook(8, timedelta(minutes=3)))
    assert held["status"] == "accepted" and held["shipment_id"] is None
    assert daemon.notifications(waybill=who.waybill) == []
    registered = register(daemon, who)
    assert registered["adopted_events"] == 1
    wait_for_messages(twilio, smtp, who, sms=1, email=1)
    again = daemon.api.post("/shipments", json=who.registration())
    assert again.status_code == 200 and again.json()["created"] is False
    rows = settled_log(daemon, who)
    assert sent(rows) == [("delivered", "sms"), ("delivered", "email")]
    assert len(sms_to(twilio, who)) == 1 and len(emails_to(smtp, who)) == 1


def test_unregistered_shipment_gets_nothing_more(
    daemon: Daemon, twilio: TwilioServer, smtp: SmtpServer
) -> None:
    who = customer()
    register(daemon, who)
    accepted(daemon, who.webhook(6, timedelta(minutes=5)))
    wait_for_messages(twilio, smtp, who, sms=1, email=1)
    gone = daemon.api.post("/shipments/unregister", json={"cp_id": 4, "waybill": who.waybill})
    assert gone.status_code == 200 and gone.json() == {"unregistered": True}
    after = accepted(daemon, who.webhook(8, timedelta(minutes=1)))
    assert planned(after) == []
    rows = settled_log(daemon, who)
    assert sent(rows) == [("out_for_delivery", "sms"), ("out_for_delivery", "email")]
    assert not [r for r in rows if r["rule"] == "delivered" and r["status"] == "sent"]
    assert len(sms_to(twilio, who)) == 1 and len(emails_to(smtp, who)) == 1


@pytest.mark.parametrize(
    "headers",
    [{"webhook_key": "wrong"}, {}, {"Authorization": "Bearer wrong"}],
    ids=["wrong-key", "no-key", "wrong-authorization"],
)
def test_wrong_webhook_key_is_401_json(daemon: Daemon, headers: dict[str, str]) -> None:
    who = customer()
    response = httpx.post(f"{daemon.url}/webhooks/clickpost",
                          content=json.dumps(who.webhook(8, timedelta(minutes=1))),
                          headers=headers)  # fmt: skip
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["field"] == "webhook_key" and response.json()["error"]
    assert daemon.api.get(f"/shipments/4/{who.waybill}").status_code == 404


def test_rotated_key_and_authorization_header_are_accepted(daemon: Daemon) -> None:
    who = customer()
    body = json.dumps(who.webhook(5, timedelta(minutes=1))).encode()
    assert daemon.post_webhook(body, key="an-older-key").status_code == 200
    again = httpx.post(f"{daemon.url}/webhooks/clickpost", content=body,
                       headers={"Authorization": "e2e-webhook-key"})  # fmt: skip
    assert again.status_code == 200 and again.json()["status"] == "duplicate"


def _fresh(**changes: Any) -> bytes:
    body = webhook(waybill="E2E-BAD", at=datetime.now(UTC) - timedelta(minutes=1))
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("content", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b"", 400, "body"),
        (b"[1, 2]", 400, "body"),
        (b"\xff\xfe\x00garbage", 400, "body"),
        (_fresh(clickpost_status_code=None), 422, "clickpost_status_code"),
        (_fresh(cp_id="four"), 422, "cp_id"),
        (_fresh(timestamp="yesterday"), 422, "timestamp"),
        (_fresh(additional="not an object"), 422, "additional"),
    ],
    ids=["not-json", "empty", "list", "binary", "no-status", "cp-id", "timestamp", "additional"],
)
def test_malformed_webhook_is_a_json_4xx_naming_the_field(
    daemon: Daemon, content: bytes, status: int, field: str
) -> None:
    response = daemon.post_webhook(content)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field and response.json()["error"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/shipments", {"cp_id": 4, "consumer_details": {"phone": "9876543210"}}, "waybill"),
        ("/shipments", {"waybill": "X", "cp_id": "four"}, "cp_id"),
        ("/shipments/unregister", {"waybill": "X"}, "cp_id"),
    ],
)
def test_malformed_api_bodies_are_422_naming_the_field(
    daemon: Daemon, path: str, body: dict[str, Any], field: str
) -> None:
    response = daemon.api.post(path, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_api_needs_the_token_healthz_does_not(daemon: Daemon) -> None:
    for path in ("/notifications", "/shipments/4/E2E00001"):
        response = httpx.get(f"{daemon.url}{path}")
        assert response.status_code == 401 and response.json()["field"] == "Authorization"
    wrong = httpx.get(f"{daemon.url}/notifications", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = httpx.get(f"{daemon.url}/notifications",
                   headers={"Authorization": f"Bearer {API_TOKEN}"})  # fmt: skip
    assert ok.status_code == 200
    health = httpx.get(f"{daemon.url}/healthz").json()
    assert health["status"] == "ok" and health["scheduler"] is True
    assert "notifier_notifications" in httpx.get(f"{daemon.url}/metrics").text


def test_body_over_the_limit_is_413(daemon: Daemon) -> None:
    big = _fresh(remark="x" * (BODY_LIMIT + 1))
    declared = daemon.post_webhook(big)
    assert declared.status_code == 413 and declared.json()["field"] == "body"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted while reading
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    streamed = daemon.api.post("/webhooks/clickpost", content=chunks(),
                               headers={"webhook_key": "e2e-webhook-key"})  # fmt: skip
    assert streamed.status_code == 413 and streamed.json()["field"] == "body"
    assert daemon.post_webhook(_fresh(remark="x" * 1000)).status_code == 200


def test_no_request_got_a_500(daemon: Daemon) -> None:
    """Runs last: the daemon's own access log shows no 5xx for anything the module sent."""
    log = daemon.log_text()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    statuses = [int(r["status"]) for r in records if "status" in r and "path" in r]
    assert 200 in statuses and 401 in statuses and 422 in statuses
    assert not [s for s in statuses if s >= 500], log[-4000:]
    assert "Traceback" not in log and not [r for r in records if "exc" in r]
