"""Access: every route that reads or changes data needs the API token (compared in constant
time); the webhook takes only its keys; no secret is ever printed, even at DEBUG.

The route audit enumerates ``app.routes``: a route added later fails here until it is put in
one of the tables below, so nobody adds an open data route by accident.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import Clock, dumps, registration, webhook
from daemon import API_TOKEN, WEBHOOK_KEY, Daemon
from fastapi.testclient import TestClient
from pydantic import SecretStr
from smtp_server import SmtpServer
from twilio.request_validator import RequestValidator
from twilio_server import ACCOUNT_SID, AUTH_TOKEN, TwilioServer

from notifier import Notifier, Settings
from notifier.server import create_app

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
TOKEN, KEY = "api-token-0123456789abcdef", "webhook-key-0123456789"
OUTSIDE = ("203.0.113.9", 40000)  # a documentation address: not loopback

# Routes that read or change data: the API token, nothing else, opens them.
DATA_ROUTES = {
    ("POST", "/shipments"): {"json": registration()},
    ("POST", "/shipments/unregister"): {"json": {"cp_id": 4, "waybill": "X"}},
    ("GET", "/shipments/{cp_id}/{waybill}"): {},
    ("GET", "/notifications"): {},
    ("POST", "/preferences/lookup"): {"json": {"phone": "9876543210"}},
    ("PUT", "/preferences"): {"json": {"phone": "9876543210", "channels": {"sms": False}}},
}
# Routes with credentials of their own, each tested here or in its own file.
OWN_CREDENTIALS = {
    ("POST", "/webhooks/clickpost"): "webhook key (below)",
    ("POST", "/callbacks/twilio/status"): "Twilio signature (test_server.py)",
    ("POST", "/callbacks/twilio/inbound"): "Twilio signature (test_optout.py)",
    ("GET", "/unsubscribe/{token}"): "HMAC-signed token (test_optout.py)",
    ("POST", "/unsubscribe/{token}"): "HMAC-signed token (test_optout.py)",
}
# Open on purpose: no personal data, nothing changes.
PUBLIC = {
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json"),
    ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"),
}  # fmt: skip
CONSOLE_OPEN = {("GET", "/console/login"), ("POST", "/console/login"),
                ("POST", "/console/logout"), ("GET", "/console/static/console.css")}  # fmt: skip


def routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route, routers included by the app too (the console)."""
    found: set[tuple[str, str]] = set()

    def walk(items: list[Any], prefix: str) -> None:
        for route in items:
            if hasattr(route, "original_router"):  # FastAPI's lazily included router
                walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif hasattr(route, "methods") and route.methods:
                found.update((m, prefix + route.path) for m in route.methods if m != "HEAD")
            elif hasattr(route, "routes"):  # a Mount
                walk(route.routes, prefix + getattr(route, "path", ""))

    walk(list(app.routes), "")
    return found


@pytest.fixture
def secured(settings: Settings) -> Settings:
    keys = SecretStr(f"{KEY},older-key-0123")
    return settings.model_copy(update={"api_token": SecretStr(TOKEN), "webhook_keys": keys})


@pytest.fixture
def outside(secured: Settings, clock: Clock) -> Iterator[TestClient]:
    clock.now = T0
    app = create_app(secured, notifier=Notifier(secured, clock=clock), run_scheduler=False)
    with TestClient(app, client=OUTSIDE, follow_redirects=False) as client:
        yield client


def call(client: TestClient, method: str, path: str, **kwargs: Any) -> Any:
    url = path.replace("{cp_id}", "4").replace("{waybill}", "SF18399217NER")
    return client.request(method, url.replace("{token}", "1.x"), **kwargs)


def test_every_route_is_classified(outside: TestClient) -> None:
    known = set(DATA_ROUTES) | set(OWN_CREDENTIALS) | PUBLIC
    everything = routes(outside.app)
    console = {r for r in everything if r[1].startswith("/console")}
    unclassified = everything - known - console
    assert not unclassified, f"classify these routes in tests/test_access.py: {unclassified}"


@pytest.mark.parametrize(("method", "path"), sorted(DATA_ROUTES))
@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer ", "Bearer wrong", f"Bearer {TOKEN}x", TOKEN[:-1],
                      f"Basic {TOKEN}", f"Bearer {KEY}"]
)  # fmt: skip
def test_data_routes_refuse_a_missing_or_wrong_token(
    outside: TestClient, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    answer = call(outside, method, path, headers=headers, **DATA_ROUTES[(method, path)])
    assert answer.status_code == 401, (method, path, answer.text)
    assert answer.json()["field"] == "Authorization"


@pytest.mark.parametrize(("method", "path"), sorted(DATA_ROUTES))
def test_data_routes_open_with_the_token(outside: TestClient, method: str, path: str) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answer = call(outside, method, path, headers=headers, **DATA_ROUTES[(method, path)])
    assert answer.status_code not in {401, 403}, (method, path, answer.text)


def test_without_a_token_set_data_routes_are_loopback_only(
    settings: Settings, clock: Clock
) -> None:
    app = create_app(settings, notifier=Notifier(settings, clock=clock), run_scheduler=False)
    with TestClient(app, client=OUTSIDE) as far, TestClient(app, client=("127.0.0.1", 1)) as near:
        for method, path in sorted(DATA_ROUTES):
            kwargs = DATA_ROUTES[(method, path)]
            assert call(far, method, path, **kwargs).status_code == 403, path
            assert call(near, method, path, **kwargs).status_code not in {401, 403}, path


def test_console_pages_need_a_login(outside: TestClient) -> None:
    console = {r for r in routes(outside.app) if r[1].startswith("/console")} - CONSOLE_OPEN
    for method, path in sorted(console):
        url = re.sub(r"\{[^}]+\}", "1", path)
        answer = outside.request(method, url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code in {303, 401, 403}, (method, path, answer.status_code)
        if answer.status_code == 303:
            assert answer.headers["location"].startswith("/console/login")


def test_the_token_is_compared_in_constant_time(
    outside: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return original(a, b)

    import notifier.app
    import notifier.http_input

    monkeypatch.setattr(notifier.http_input.hmac, "compare_digest", spy)
    call(outside, "GET", "/notifications", headers={"Authorization": "Bearer guess"})
    assert (b"guess", TOKEN.encode()) in seen
    seen.clear()
    monkeypatch.setattr(notifier.app.hmac, "compare_digest", spy)
    outside.post("/webhooks/clickpost", content=b"{}", headers={"webhook_key": "guess"})
    assert any(a == b"guess" for a, _ in seen)


@pytest.mark.parametrize(
    "headers",
    [{}, {"webhook_key": ""}, {"webhook_key": "wrong"}, {"webhook_key": KEY + "x"},
     {"webhook_key": KEY[:-1]}, {"webhook_key": f" {KEY}x "}, {"Authorization": "Bearer nope"},
     {"Authorization": f"Bearer {TOKEN}"}, {"webhook_key": TOKEN},
     {"webhook_key": f"{KEY},older-key-0123"}],
)  # fmt: skip
def test_the_webhook_takes_only_its_keys(outside: TestClient, headers: dict[str, str]) -> None:
    answer = outside.post("/webhooks/clickpost", content=dumps(webhook(at=T0)), headers=headers)
    assert answer.status_code == 401 and answer.json()["field"] == "webhook_key"


@pytest.mark.parametrize(
    "headers", [{"webhook_key": KEY}, {"webhook-key": "older-key-0123"},
                {"Authorization": KEY}, {"Authorization": f"Bearer {KEY}"}]
)  # fmt: skip
def test_the_webhook_opens_with_any_current_key(
    outside: TestClient, headers: dict[str, str]
) -> None:
    answer = outside.post("/webhooks/clickpost", content=dumps(webhook(at=T0)), headers=headers)
    assert answer.status_code == 200


# --- secrets never printed, even at DEBUG ----------------------------------------------------

SMTP_USER, SMTP_PASSWORD = "mailer", "smtp-password-0123456789"
CLICKPOST_KEY = "clickpost-key-0123456789"
SECRET_KEY = "secret-key-for-unsubscribe-links-0123"
READONLY = "console-readonly-token-0123456789"


def forms_of(secrets: list[str]) -> dict[str, str]:
    """Each secret as it could leak: plain, and inside the Basic and SMTP AUTH encodings."""
    forms = {s: s for s in secrets}
    basic = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
    plain = base64.b64encode(f"\0{SMTP_USER}\0{SMTP_PASSWORD}".encode()).decode()
    login = base64.b64encode(SMTP_PASSWORD.encode()).decode()
    return forms | {basic: "Twilio Basic auth", plain: "SMTP AUTH PLAIN", login: "SMTP AUTH LOGIN"}


class DebugDaemon(Daemon):
    """``notifier serve --debug``: the helper's daemon at the most talkative level."""

    def _spawn(self, port: int) -> None:
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "notifier.cli", "serve", "--host", "127.0.0.1",
                   "--port", str(port), "--debug", "--log-format", "text"]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env={"NOTIFIER_PUBLIC_URL": self.url, **self.env},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip


def test_no_secret_is_printed_by_the_daemon_or_the_cli_at_debug(tmp_path: Path) -> None:
    extra = {
        "NOTIFIER_SMTP_USERNAME": SMTP_USER,
        "NOTIFIER_SMTP_PASSWORD": SMTP_PASSWORD,
        "NOTIFIER_CLICKPOST_USERNAME": "acme",
        "NOTIFIER_CLICKPOST_KEY": CLICKPOST_KEY,
        "NOTIFIER_CLICKPOST_API_BASE": "http://127.0.0.1:9",  # nobody there: errors get logged
        "NOTIFIER_SECRET_KEY": SECRET_KEY,
        "NOTIFIER_CONSOLE_READONLY_TOKEN": READONLY,
    }
    with TwilioServer() as twilio, SmtpServer(auth=(SMTP_USER, SMTP_PASSWORD)) as smtp:
        daemon = DebugDaemon(tmp_path / "d", twilio=twilio, smtp=smtp, **extra)
        with daemon:
            _exercise(daemon)
        env = {**daemon.env, "NOTIFIER_PUBLIC_URL": "https://n.example"}
        cli = subprocess.run(
            [sys.executable, "-m", "notifier.cli", "dispatch", "--debug"], cwd=daemon.workdir,
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert smtp.received and smtp.received[0].login == SMTP_USER  # AUTH really happened
    assert cli.returncode == 0, cli.stderr
    log = daemon.log_text()
    assert " DEBUG " in log and "/webhooks/clickpost" in log  # it did talk
    assert "signed one-click unsubscribe links" in log  # and said how emails unsubscribe
    output = log + cli.stdout + cli.stderr
    secrets = [API_TOKEN, WEBHOOK_KEY, "an-older-key", AUTH_TOKEN, SMTP_PASSWORD, CLICKPOST_KEY,
               SECRET_KEY, READONLY]  # fmt: skip
    leaked = {what for form, what in forms_of(secrets).items() if form in output}
    assert not leaked, f"secrets in the output: {leaked}"


def _exercise(daemon: Daemon) -> None:
    """Everything that touches a secret: the API, webhooks (a wrong key too), Twilio and SMTP
    sends, a signed receipt, an inbound STOP, the Clickpost proxy failing, an unsubscribe."""
    api = daemon.api
    assert api.post("/shipments", json=registration()).status_code == 201
    daemon.post_webhook(webhook(code=6, at=datetime.now(UTC)))
    bad = api.post("/webhooks/clickpost", content=b"{}", headers={"webhook_key": "wrong"})
    assert bad.status_code == 401
    rows = _wait_sent(daemon)
    sms = next(r for r in rows if r["channel"] == "sms")
    params = {"MessageSid": sms["provider_id"], "MessageStatus": "delivered"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(
        f"{daemon.url}/callbacks/twilio/status", params
    )
    answer = api.post("/callbacks/twilio/status", data=params,
                      headers={"X-Twilio-Signature": signature})  # fmt: skip
    assert answer.status_code == 204
    stop = {"From": "+919876543210", "Body": "STOP"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(
        f"{daemon.url}/callbacks/twilio/inbound", stop
    )
    assert api.post("/callbacks/twilio/inbound", data=stop,
                    headers={"X-Twilio-Signature": signature}).status_code == 200  # fmt: skip
    assert api.get("/metrics").status_code == 200
    # the registration owed to Clickpost fails (nobody listens): its URL carries the key
    _wait_for_log(daemon, "clickpost register")


def _wait_for_log(daemon: Daemon, text: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while text not in daemon.log_text():
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{daemon.log_tail()}"
        time.sleep(0.2)


def _wait_sent(daemon: Daemon) -> list[dict[str, Any]]:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows: list[dict[str, Any]] = daemon.api.get("/notifications").json()
        if len(rows) >= 2 and all(r["status"] == "sent" for r in rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"not sent: {json.dumps(rows)[:500]} {os.linesep}{daemon.log_tail()}")
