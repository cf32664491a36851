"""The embedding examples in examples/ work as written: FastAPI, Flask and Django.

Each example reads its settings from ``NOTIFIER_*`` variables, so each test points them at a
temporary SQLite file and outbox and at the repo's rules and templates.
"""

from __future__ import annotations

import atexit
import importlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT, dumps, registration, webhook
from fastapi.testclient import TestClient

from notifier import cli

EXAMPLES = ROOT / "examples"
KEY = "k-example"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment a merchant would set, on temp files; returns the outbox folder."""
    outbox = tmp_path / "outbox"
    variables = {
        "NOTIFIER_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}",
        "NOTIFIER_RULES": str(ROOT / "rules.yaml"),
        "NOTIFIER_TEMPLATES": str(ROOT / "templates"),
        "NOTIFIER_OUTBOX_DIR": str(outbox),
        "NOTIFIER_WEBHOOK_KEYS": KEY,
        "NOTIFIER_QUIET_HOURS": "off",  # real clock here: the test must not depend on the hour
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return outbox


def load_example(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import examples/<name>.py as a fresh module, removed from sys.modules afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)  # undone after the test
    return module


def delivered_now(**kwargs: Any) -> dict[str, Any]:
    """A 'delivered' webhook from a minute ago: fresh enough to be sent, not stale."""
    return webhook(code=8, at=datetime.now(UTC) - timedelta(minutes=1), **kwargs)


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def sms_lines(outbox: Path) -> list[dict[str, Any]]:
    path = outbox / "sms.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- FastAPI ------------------------------------------------------------------------------


def test_fastapi_mounted_app_registers_plans_and_its_dispatcher_sends(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example("fastapi_app", monkeypatch)
    with TestClient(example.build_app()) as client:
        created = client.post("/notifier/shipments", json=registration())
        assert created.status_code == 201 and created.json()["created"] is True
        response = client.post(
            "/notifier/webhooks/clickpost",
            content=dumps(delivered_now()),
            headers={"webhook_key": KEY},
        )
        assert response.status_code == 200 and response.json()["status"] == "accepted"
        planned = response.json()["notifications"]
        assert [(n["rule"], n["channel"], n["status"]) for n in planned] == [
            ("delivered", "sms", "scheduled"),
            ("delivered", "email", "scheduled"),
        ]
        # The mounted app's lifespan ran, so its dispatcher is alive and sends to the outbox.
        assert wait_for(lambda: len(sms_lines(env)) == 1)
        assert sms_lines(env)[0]["to"] == "+919876543210"

        def sms_rows() -> list[tuple[str, str]]:
            rows = client.get("/notifier/notifications", params={"channel": "sms"}).json()
            return [(r["status"], r["recipient"]) for r in rows]

        # the send is recorded a moment after the outbox line is written (group commit)
        assert wait_for(lambda: sms_rows() == [("sent", "+91******3210")])


def test_fastapi_merchant_route_uses_the_same_engine(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = load_example("fastapi_app", monkeypatch)
    with TestClient(example.build_app()) as client:
        client.post("/notifier/shipments", json=registration())
        body = dumps(delivered_now())
        wrong = client.post("/carrier/clickpost", content=body, headers={"webhook_key": "nope"})
        assert (wrong.status_code, wrong.json()["field"]) == (401, "webhook_key")
        bad = client.post("/carrier/clickpost", content=b"{}", headers={"Authorization": KEY})
        assert bad.status_code == 422 and bad.json()["field"]
        first = client.post("/carrier/clickpost", content=body, headers={"Authorization": KEY})
        assert first.status_code == 200 and first.json()["status"] == "accepted"
        assert {n["channel"] for n in first.json()["notifications"]} == {"sms", "email"}
        again = client.post("/carrier/clickpost", content=body, headers={"Authorization": KEY})
        assert again.json() == {"status": "duplicate", "notifications": []}
        # The mounted API sees what the merchant's route stored: one engine, one database.
        detail = client.get("/notifier/shipments/4/SF18399217NER").json()
        assert len(detail["events"]) == 1 and len(detail["notifications"]) == 2


def test_fastapi_bare_mount_without_the_lifespan_has_no_engine(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the example runs the mounted app's lifespan: without it nothing is set up."""
    from fastapi import FastAPI

    from notifier.server import create_app

    load_example("fastapi_app", monkeypatch)
    parent = FastAPI()
    parent.mount("/notifier", create_app())
    with TestClient(parent, raise_server_exceptions=False) as client:
        response = client.post("/notifier/shipments", json=registration())
        assert response.status_code == 500


# -- Flask --------------------------------------------------------------------------------


@pytest.fixture
def flask_example(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    example = load_example("flask_app", monkeypatch)
    app = example.create_app()
    yield app
    engine = app.extensions["notifier"]
    atexit.unregister(engine.close)  # closed here instead; a second close() would block
    engine.close()


def test_flask_registers_and_plans_and_a_dispatch_cron_sends(
    flask_example: Any, env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = flask_example.test_client()
    assert client.post("/shipments", json=registration()).status_code == 201
    assert client.post("/shipments", json=registration()).status_code == 200
    body = dumps(delivered_now())
    refused = client.post("/clickpost/webhook", data=body, headers={"webhook-key": "nope"})
    assert refused.status_code == 401 and refused.get_json()["field"] == "webhook_key"
    response = client.post("/clickpost/webhook", data=body, headers={"webhook_key": KEY})
    assert response.status_code == 200 and response.get_json()["status"] == "accepted"
    assert [n["status"] for n in response.get_json()["notifications"]] == ["scheduled"] * 2
    again = client.post("/clickpost/webhook", data=body, headers={"webhook_key": KEY})
    assert again.get_json()["status"] == "duplicate"
    assert sms_lines(env) == []  # the Flask app never sends ...
    assert cli.main(["dispatch"]) == 0  # ... `notifier dispatch` (cron) does, once
    assert "2 sent" in capsys.readouterr().out
    assert [line["to"] for line in sms_lines(env)] == ["+919876543210"]


def test_flask_bad_bodies_are_json_errors(flask_example: Any) -> None:
    client = flask_example.test_client()
    bad = client.post("/shipments", json={"cp_id": 4})
    assert bad.status_code == 422 and bad.get_json()["field"] == "waybill"
    broken = client.post("/clickpost/webhook", data=b"{not json", headers={"webhook_key": KEY})
    assert broken.status_code == 400 and broken.get_json()["field"] == "body"


# -- Django -------------------------------------------------------------------------------


@pytest.fixture
def django_example(env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The example configures Django (once per process: Django's settings are global) and
    the test environment adds the test client's host; both views get a fresh engine."""
    from django.test.utils import setup_test_environment, teardown_test_environment

    example = load_example("django_view", monkeypatch)
    example.notifier.cache_clear()
    setup_test_environment()
    try:
        yield example
    finally:
        teardown_test_environment()
        if example.notifier.cache_info().currsize:
            example.notifier().close()
        example.notifier.cache_clear()


def test_django_views_register_and_plan(django_example: ModuleType, env: Path) -> None:
    from django.test import Client
    from django.test.utils import override_settings

    with override_settings(ROOT_URLCONF=django_example.__name__):
        client = Client()
        created = client.post("/shipments", registration(), content_type="application/json")
        assert created.status_code == 201 and created.json()["shipment_id"] > 0
        body = dumps(delivered_now())
        headers = {"Authorization": f"Bearer {KEY}"}
        refused = client.post("/clickpost/webhook", body, content_type="application/json")
        assert refused.status_code == 401
        response = client.post(
            "/clickpost/webhook", body, content_type="application/json", headers=headers
        )
        assert response.status_code == 200 and response.json()["status"] == "accepted"
        assert [(n["channel"], n["status"]) for n in response.json()["notifications"]] == [
            ("sms", "scheduled"),
            ("email", "scheduled"),
        ]
        assert client.get("/clickpost/webhook").status_code == 405
        rows = django_example.notifier().notifications(waybill="SF18399217NER")
        assert {r["status"] for r in rows} == {"scheduled"} and len(rows) == 2
