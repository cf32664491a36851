"""The HTTP API in process (Starlette's TestClient): routes, auth, errors as JSON, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from conftest import Clock, dumps, registration, sample, webhook
from fastapi.testclient import TestClient
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from notifier import Notifier, Settings
from notifier.clickpost.models import parse_webhook
from notifier.errors import StoreUnavailableError
from notifier.events import ShipmentUpdate
from notifier.health import unavailable_reason
from notifier.server import create_app

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
KEY = {"webhook_key": "k-2026"}


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_keys": SecretStr("k-2026,k-2025")})


def client_for(settings: Settings, clock: Clock, **kwargs: object) -> TestClient:
    engine = Notifier(settings, clock=clock)
    return TestClient(create_app(settings, notifier=engine, run_scheduler=False), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def api(keyed: Settings, clock: Clock) -> Iterator[TestClient]:
    clock.now = T0
    with client_for(keyed, clock) as client:
        yield client


def test_webhooks_refused_without_keys_unless_allowed(settings: Settings, clock: Clock) -> None:
    body = sample("webhook-out-for-delivery-2017.json")
    with client_for(settings, clock) as client:
        refused = client.post("/webhooks/clickpost", content=body)
        assert refused.status_code == 401
        assert "NOTIFIER_WEBHOOK_KEYS" in refused.json()["error"]
    allowed = settings.model_copy(update={"allow_unauthenticated": True})
    with client_for(allowed, clock) as client:
        assert client.post("/webhooks/clickpost", content=body).json()["status"] == "accepted"


def test_webhook_key_checked_and_duplicates_answered_200(api: TestClient) -> None:
    body = dumps(webhook(code=6, at=T0))
    wrong = api.post("/webhooks/clickpost", content=body, headers={"webhook_key": "nope"})
    assert (wrong.status_code, wrong.json()["field"]) == (401, "webhook_key")
    first = api.post("/webhooks/clickpost", content=body, headers={"webhook_key": "k-2025"})
    assert first.status_code == 200 and first.json()["status"] == "accepted"
    again = api.post("/webhooks/clickpost", content=body, headers={"Authorization": "k-2026"})
    assert again.status_code == 200 and again.json()["status"] == "duplicate"


@pytest.mark.parametrize(
    ("content", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b"[1, 2]", 400, "body"),
        (b'{"waybill": "A", "cp_id": 4}', 422, "clickpost_status_code"),
        (b'{"waybill": "A", "cp_id": "four", "clickpost_status_code": 6,'
         b' "timestamp": "2026-11-26T05:00:00Z"}', 422, "cp_id"),
        (b"\xff\xfe\x00garbage", 400, "body"),
    ],
)  # fmt: skip
def test_bad_bodies_get_a_json_error_naming_the_field(
    api: TestClient, content: bytes, status: int, field: str
) -> None:
    response = api.post("/webhooks/clickpost", content=content, headers=KEY)
    assert response.status_code == status
    assert response.json()["field"] == field and response.json()["error"]


def test_body_size_limit(keyed: Settings, clock: Clock) -> None:
    small = keyed.model_copy(update={"max_body_bytes": 2048})
    with client_for(small, clock) as client:
        big = b'{"waybill": "' + b"x" * 4096 + b'"}'
        response = client.post("/webhooks/clickpost", content=big, headers=KEY)
        assert response.status_code == 413 and response.json()["field"] == "body"


def test_registration_shipment_log_and_unregister(api: TestClient) -> None:
    created = api.post("/shipments", json=registration())
    assert created.status_code == 201 and created.json()["created"] is True
    assert api.post("/shipments", json=registration()).status_code == 200
    accepted = api.post("/webhooks/clickpost", content=dumps(webhook(code=8, at=T0)), headers=KEY)
    assert [n["channel"] for n in accepted.json()["notifications"]] == ["sms", "email"]
    detail = api.get("/shipments/4/SF18399217NER").json()
    assert detail["shipment"]["consumer"]["phone"] == "******3210"
    assert len(detail["events"]) == 1 and len(detail["notifications"]) == 2
    rows = api.get("/notifications", params={"waybill": "SF18399217NER", "channel": "sms"}).json()
    assert [(r["rule"], r["status"], r["recipient"]) for r in rows] == [
        ("delivered", "scheduled", "+91******3210")
    ]
    assert "9876543210" not in api.get("/notifications").text
    gone = api.post("/shipments/unregister", json={"cp_id": 4, "waybill": "SF18399217NER"})
    assert gone.json() == {"unregistered": True}
    missing = api.post("/shipments/unregister", json={"cp_id": 4, "waybill": "NOPE"})
    assert missing.status_code == 404
    assert api.get("/shipments/4/NOPE").status_code == 404


def test_late_registration_evaluates_the_held_update(api: TestClient) -> None:
    held = api.post("/webhooks/clickpost", content=dumps(webhook(code=8, at=T0)), headers=KEY)
    assert held.json()["shipment_id"] is None
    registered = api.post("/shipments", json=registration()).json()
    assert registered["adopted_events"] == 1
    assert registered["evaluation"]["verdict"].startswith("rule delivered")


def test_bad_registration_and_query_are_4xx_json(api: TestClient) -> None:
    bad = api.post("/shipments", json={"cp_id": 4})
    assert bad.status_code == 422 and bad.json()["field"] == "waybill"
    limit = api.get("/notifications", params={"limit": 0})
    assert limit.status_code == 422 and limit.json()["field"] == "limit"
    since = api.get("/notifications", params={"since": "yesterday"})
    assert since.status_code == 422 and since.json()["field"] == "since"


def test_api_token_or_loopback_only(keyed: Settings, clock: Clock) -> None:
    with client_for(keyed, clock, client=("203.0.113.9", 4000)) as outsider:
        refused = outsider.get("/notifications")
        assert refused.status_code == 403 and "NOTIFIER_API_TOKEN" in refused.json()["error"]
        assert outsider.get("/healthz").status_code == 200
    tokened = keyed.model_copy(update={"api_token": SecretStr("s3cret")})
    with client_for(tokened, clock, client=("203.0.113.9", 4000)) as outsider:
        assert outsider.get("/notifications").status_code == 401
        bad = outsider.get("/notifications", headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401
        ok = outsider.get("/notifications", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_healthz_and_metrics(api: TestClient) -> None:
    api.post("/shipments", json=registration())
    api.post("/webhooks/clickpost", content=dumps(webhook(code=8, at=T0)), headers=KEY)
    api.post("/webhooks/clickpost", content=dumps(webhook(code=8, at=T0)), headers=KEY)
    api.post("/webhooks/clickpost", content=b"{", headers=KEY)
    health = api.get("/healthz").json()
    assert health["database"] is True and health["rules"]["error"] is None
    assert len(health["rules"]["version"]) == 12
    metrics = api.get("/metrics").text
    assert 'notifier_webhooks_total{outcome="accepted"} 1.0' in metrics
    assert 'notifier_webhooks_total{outcome="duplicate"} 1.0' in metrics
    assert 'notifier_webhooks_total{outcome="rejected"} 1.0' in metrics
    assert (
        'notifier_notifications{channel="sms",rule="delivered",status="scheduled"} 1.0' in metrics
    )
    assert "notifier_due_notifications 2.0" in metrics
    assert "9876543210" not in metrics and "priya" not in metrics.lower()


def test_readyz_and_healthz_say_when_webhooks_are_refused_and_since_when(
    api: TestClient, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads still answer on a full disk, so a ping alone said "ok" while every webhook got a
    503. Now, from the first refused update until one is stored again, /readyz is 503 and
    /healthz "degraded" (still 200: restarting the daemon would not free the disk), both
    saying why in words that name no server."""
    api.post("/shipments", json=registration())
    engine: Notifier = api.app.state.notifier  # type: ignore[attr-defined]
    stored = engine.store.record_updates

    def full(*args: object, **kwargs: object) -> object:
        raise StoreUnavailableError("database unavailable: database or disk is full")

    monkeypatch.setattr(engine.store, "record_updates", full)
    for minute in (0, 1):
        clock.now = T0.replace(minute=minute)
        body = dumps(webhook(code=6, at=T0.replace(minute=minute)))
        assert api.post("/webhooks/clickpost", content=body, headers=KEY).status_code == 503
    ready, health = api.get("/readyz"), api.get("/healthz")
    assert (ready.status_code, health.status_code) == (503, 200)
    assert ready.json() == health.json()
    assert health.json()["status"] == "degraded" and health.json()["database"] is True
    assert health.json()["ingest"] == {"refusing": True, "since": T0.isoformat(),
                                       "reason": "database or disk is full",
                                       "refused": "webhook"}  # fmt: skip
    assert 'notifier_webhooks_total{outcome="unavailable"} 2.0' in api.get("/metrics").text

    # A load balancer stops sending to a daemon that is not ready: with no refusal for 30 s it
    # is ready again, so the next webhook can show whether the disk has space.
    clock.now = T0.replace(minute=1, second=29)
    assert api.get("/readyz").status_code == 503
    clock.now = T0.replace(minute=1, second=30)
    assert api.get("/readyz").status_code == 200
    clock.now = T0.replace(minute=2)
    body = dumps(webhook(code=7, at=T0.replace(minute=2)))
    assert api.post("/webhooks/clickpost", content=body, headers=KEY).status_code == 503
    assert api.get("/readyz").json()["ingest"]["since"] == T0.isoformat()  # none stored since

    monkeypatch.setattr(engine.store, "record_updates", stored)
    body = dumps(webhook(code=8, at=T0))
    assert api.post("/webhooks/clickpost", content=body, headers=KEY).status_code == 200
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    assert ready.json()["ingest"] == {"refusing": False}


def test_a_duplicate_webhook_stored_while_writes_are_refused_does_not_make_it_ready(
    api: TestClient, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk a duplicate webhook can still be answered 200 (it writes nothing new), so
    it proves nothing: /readyz stays 503 until a webhook that writes something is stored."""
    api.post("/shipments", json=registration())
    engine: Notifier = api.app.state.notifier  # type: ignore[attr-defined]
    record = engine.store.record_updates
    known = dumps(webhook(code=6, at=T0))
    assert api.post("/webhooks/clickpost", content=known, headers=KEY).status_code == 200
    full = {"on": True}

    def only_old_ones(updates: list[ShipmentUpdate], *args: object, **kwargs: object) -> object:
        if full["on"] and any(u.identity != parse_webhook(known).identity for u in updates):
            raise StoreUnavailableError("database unavailable: database or disk is full")
        return record(updates, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine.store, "record_updates", only_old_ones)
    fresh = dumps(webhook(code=7, at=T0.replace(minute=1)))
    assert api.post("/webhooks/clickpost", content=fresh, headers=KEY).status_code == 503
    assert api.post("/webhooks/clickpost", content=known, headers=KEY).status_code == 200
    ready = api.get("/readyz")
    assert ready.status_code == 503 and ready.json()["ingest"]["refused"] == "webhook"

    full["on"] = False
    assert api.post("/webhooks/clickpost", content=fresh, headers=KEY).status_code == 200
    assert api.get("/readyz").status_code == 200


def test_a_refused_registration_makes_the_daemon_not_ready_too(
    api: TestClient, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quiet daemon hears of a full disk from whatever writes first: a registration here
    (before, only a refused webhook counted, so /readyz said 200 while every registration
    got a 503). The next write stored makes it ready again."""
    engine: Notifier = api.app.state.notifier  # type: ignore[attr-defined]
    register = engine.store.register

    def full(*args: object, **kwargs: object) -> object:
        raise StoreUnavailableError("database unavailable: database or disk is full")

    monkeypatch.setattr(engine.store, "register", full)
    clock.now = T0
    assert api.post("/shipments", json=registration()).status_code == 503
    ready = api.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "degraded"
    assert ready.json()["ingest"] == {"refusing": True, "since": T0.isoformat(),
                                      "reason": "database or disk is full",
                                      "refused": "registration"}  # fmt: skip

    monkeypatch.setattr(engine.store, "register", register)
    assert api.post("/shipments", json=registration()).status_code == 201
    assert api.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("message", "conflict", "reason"),
    [
        ("database unavailable: database is locked", False, "database is locked by another writer"),
        ("database unavailable: attempt to write a readonly database", False,
         "database is read-only"),
        ('connection to server at "db.internal" (10.0.0.5), port 5432 failed: FATAL: '
         'password authentication failed for user "shop"', False, "database unreachable"),
        ("deadlock detected", True, "transactions kept conflicting with another daemon's"),
    ],
)  # fmt: skip
def test_a_refusal_is_told_in_words_that_name_no_server(
    message: str, conflict: bool, reason: str
) -> None:
    assert unavailable_reason(StoreUnavailableError(message, conflict=conflict)) == reason


def signed(params: dict[str, str], url: str, token: str = "tw-token") -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


def test_twilio_receipts_signed_for_the_public_url(keyed: Settings, clock: Clock) -> None:
    public = keyed.model_copy(
        update={
            "public_url": "https://notify.acme.example",
            "twilio_auth_token": SecretStr("tw-token"),
        }
    )
    clock.now = T0
    with client_for(public, clock) as api:
        api.post("/shipments", json=registration())
        api.post("/webhooks/clickpost", content=dumps(webhook(code=8, at=T0)), headers=KEY)
        engine: Notifier = api.app.state.notifier  # type: ignore[attr-defined]
        api.portal.call(engine.dispatch_due)  # type: ignore[union-attr]
        [row] = api.get("/notifications", params={"channel": "sms"}).json()
        params = {
            "MessageSid": row["provider_id"],
            "MessageStatus": "undelivered",
            "ErrorCode": "30003",
            "To": "+919876543210",
        }
        internal = signed(params, "http://testserver/callbacks/twilio/status")
        assert (
            api.post("/callbacks/twilio/status", data=params, headers=internal).status_code == 401
        )
        assert api.post("/callbacks/twilio/status", data=params).status_code == 401
        good = signed(params, "https://notify.acme.example/callbacks/twilio/status")
        assert api.post("/callbacks/twilio/status", data=params, headers=good).status_code == 204
        [row] = api.get("/notifications", params={"channel": "sms"}).json()
        assert row["status"] == "undelivered"
        assert row["reason"] == "undelivered: Twilio 30003 (unreachable handset)"
        # receipts arrive out of order: a late "sent" never moves it back, "delivered" does
        late = {**params, "MessageStatus": "sent", "ErrorCode": ""}
        api.post(
            "/callbacks/twilio/status",
            data=late,
            headers=signed(late, "https://notify.acme.example/callbacks/twilio/status"),
        )
        done = {**params, "MessageStatus": "delivered", "ErrorCode": ""}
        api.post(
            "/callbacks/twilio/status",
            data=done,
            headers=signed(done, "https://notify.acme.example/callbacks/twilio/status"),
        )
        [row] = api.get("/notifications", params={"channel": "sms"}).json()
        assert row["status"] == "delivered"


def test_a_nul_character_in_a_filter_is_a_422_naming_it(api: TestClient) -> None:
    """PostgreSQL text cannot hold NUL: it must be refused before it reaches the database."""
    for params in ({"channel": "\x00"}, {"status": "sent\x00"}, {"waybill": "A\x00B"}):
        response = api.get("/notifications", params=params)
        assert response.status_code == 422, params
        assert response.json()["field"] == next(iter(params))
    response = api.get("/shipments/4/AB%00C")
    assert (response.status_code, response.json()["field"]) == (422, "waybill")
