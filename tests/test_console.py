"""The support console, in process: the real app (FastAPI TestClient) over a real SQLite file,
the repo's rules and templates, the outbox channel; dispatching is done by the test, with a
settable clock. The browser test (test_console_browser.py) drives the same pages in Chromium.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Clock, registration, webhook
from fastapi.testclient import TestClient
from pydantic import SecretStr

from notifier import Notifier, Settings
from notifier.console.sessions import COOKIE, LOGIN_COOKIE
from notifier.server import create_app

ADMIN = "console-admin-token-123"
READONLY = "console-readonly-token-456"
PHONE, EMAIL = "9876543210", "priya.sharma@example.com"


class Console:
    """A browser stand-in: a TestClient that keeps cookies and reads CSRF tokens off pages."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def login(self, token: str) -> httpx.Response:
        page = self.client.get("/console/login")
        return self.client.post(
            "/console/login",
            data={"token": token, "csrf": csrf_of(page.text), "next": "/console"},
            follow_redirects=False,
        )

    def csrf(self) -> str:
        return csrf_of(self.client.get("/console/search").text)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, follow_redirects=False, **kwargs)

    def post(self, path: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
        return self.client.post(path, data=data, follow_redirects=False, **kwargs)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


@pytest.fixture
def console_settings(settings: Settings) -> Settings:
    tokens = {"api_token": SecretStr(ADMIN), "console_readonly_token": SecretStr(READONLY)}
    return settings.model_copy(update={**tokens, "allow_unauthenticated": True})


@pytest.fixture
def engine(console_settings: Settings, clock: Clock) -> Iterator[Notifier]:
    engine = Notifier(console_settings, clock=clock)
    yield engine
    asyncio.run(engine.close())


@pytest.fixture
def client(console_settings: Settings, engine: Notifier) -> Iterator[TestClient]:
    app = create_app(console_settings, notifier=engine, run_scheduler=False)
    with TestClient(app, base_url="http://testserver") as client:
        yield client


@pytest.fixture
def console(client: TestClient) -> Console:
    return Console(client)


@pytest.fixture
def admin(console: Console) -> Console:
    assert console.login(ADMIN).status_code == 303
    return console


def api(client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def ship(client: TestClient, clock: Clock, *, code: int = 6, **reg: Any) -> list[dict[str, Any]]:
    """Register a shipment and send it one update; the notifications planned."""
    body = registration(**reg)
    assert client.post("/shipments", json=body, headers=api(client)).status_code in (200, 201)
    hook = webhook(waybill=body["waybill"], code=code, at=clock.now - timedelta(minutes=5))
    response = client.post("/webhooks/clickpost", json=hook)
    assert response.status_code == 200, response.text
    planned: list[dict[str, Any]] = response.json()["notifications"]
    return planned


def dispatch(engine: Notifier) -> dict[str, int]:
    return asyncio.run(engine.dispatch_due()).counts


def sql(engine: Notifier, query: str, **params: Any) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    with engine.db.read() as session:
        return [tuple(r) for r in session.execute(text(query), params).all()]


def shipment_id(engine: Notifier, waybill: str) -> int:
    return int(sql(engine, "SELECT id FROM shipment WHERE waybill = :w", w=waybill)[0][0])


# -- login, sessions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/console", "/console/log", "/console/log.csv", "/console/shipments/1",
             "/console/preview", "/console/search?q=SF18"],
)  # fmt: skip
def test_every_page_needs_a_session(console: Console, path: str) -> None:
    response = console.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == f"/console/login?next={path.split('?')[0]}"


def test_login_sets_a_http_only_same_site_cookie_and_logout_ends_it(console: Console) -> None:
    assert console.login("wrong-token").status_code == 401
    assert COOKIE not in console.client.cookies
    response = console.login(ADMIN)
    assert response.status_code == 303 and response.headers["location"] == "/console"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here
    assert console.get("/console").status_code == 200
    out = console.post("/console/logout", {"csrf": console.csrf()})
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    assert console.get("/console").status_code == 303


def test_repeated_wrong_tokens_are_throttled(console: Console) -> None:
    for _ in range(10):
        assert console.login("guess").status_code == 401
    assert console.login(ADMIN).status_code == 429  # even the right one, for a while
    assert COOKIE not in console.client.cookies


def test_the_cookie_is_secure_over_https(console_settings: Settings, engine: Notifier) -> None:
    app = create_app(console_settings, notifier=engine, run_scheduler=False)
    with TestClient(app, base_url="https://console.example") as client:
        response = Console(client).login(ADMIN)
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(COOKIE))
    assert "Secure" in cookie


def test_login_without_the_form_token_is_refused(console: Console) -> None:
    response = console.post("/console/login", {"token": ADMIN, "csrf": "guessed"})
    assert response.status_code == 403
    assert COOKIE not in console.client.cookies


def test_a_forged_or_edited_cookie_is_no_session(console: Console) -> None:
    console.login(READONLY)
    body, _, signature = console.client.cookies[COOKIE].partition(".")
    session = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert session["r"] == "readonly"
    promoted = base64.urlsafe_b64encode(json.dumps({**session, "r": "admin"}).encode()).decode()
    (issued,) = [c for c in console.client.cookies.jar if c.name == COOKIE]

    def replace(value: str) -> None:  # the same domain and path: the issued cookie is gone
        console.client.cookies.set(COOKIE, value, domain=issued.domain, path=issued.path)
        assert [c.value for c in console.client.cookies.jar if c.name == COOKIE] == [value]

    replace(f"{promoted.rstrip('=')}.{signature}")
    assert console.get("/console").status_code == 303
    replace(f"{body}.{signature[:-2]}xx")
    assert console.get("/console").status_code == 303
    replace(f"{body}.{signature}")  # the same jar, the cookie as issued: a session again
    assert console.get("/console").status_code == 200
    console.client.cookies.set(COOKIE, f"{body}.{signature}", path="/console")
    assert console.get("/console").status_code == 200


def test_without_any_token_the_console_is_off(settings: Settings, clock: Clock) -> None:
    engine = Notifier(settings, clock=clock)
    app = create_app(settings, notifier=engine, run_scheduler=False)
    with TestClient(app) as client:
        page = client.get("/console/login")
        assert "The console is off" in page.text
        nonce = client.cookies[LOGIN_COOKIE]
        response = client.post("/console/login", data={"token": "", "csrf": nonce})
        assert response.status_code == 401 and COOKIE not in client.cookies
    asyncio.run(engine.close())


def test_pages_forbid_framing_and_scripts(admin: Console) -> None:
    headers = admin.get("/console").headers
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"


# -- CSRF and the read-only role ------------------------------------------------------------------


def test_posts_without_the_session_csrf_token_are_refused(
    admin: Console, client: TestClient, clock: Clock, engine: Notifier
) -> None:
    planned = ship(client, clock)
    nid = planned[0]["id"]
    assert admin.post("/console/search", {"q": "SF18"}).status_code == 403
    assert admin.post(f"/console/notifications/{nid}/cancel", {"csrf": "x"}).status_code == 403
    foreign = {"Origin": "https://evil.example"}
    response = admin.post(f"/console/notifications/{nid}/cancel", {"csrf": admin.csrf()},
                          headers=foreign)  # fmt: skip
    assert response.status_code == 403
    assert admin.post("/console/logout", {}).status_code == 403
    assert sql(engine, "SELECT status FROM notification WHERE id = :i", i=nid) == [("scheduled",)]


def test_a_post_through_a_proxy_names_the_public_host(
    admin: Console, client: TestClient, clock: Clock, engine: Notifier
) -> None:
    nid = ship(client, clock)[0]["id"]
    proxied = {"Origin": "https://console.example", "X-Forwarded-Host": "console.example"}
    response = admin.post(f"/console/notifications/{nid}/cancel", {"csrf": admin.csrf()},
                          headers=proxied)  # fmt: skip
    assert response.status_code == 303
    assert sql(engine, "SELECT status FROM notification WHERE id = :i", i=nid) == [("cancelled",)]


@pytest.mark.parametrize("target", ["//evil.example/console", "https://evil.example/", "/other"])
def test_after_login_only_console_paths_are_followed(console: Console, target: str) -> None:
    page = console.client.get("/console/login", params={"next": target})
    response = console.post("/console/login", {"token": ADMIN, "csrf": csrf_of(page.text),
                                               "next": target})  # fmt: skip
    assert response.status_code == 303 and response.headers["location"] == "/console"


def test_two_agents_resending_at_once_resend_once(
    client: TestClient, clock: Clock, engine: Notifier
) -> None:
    from notifier.store import console as store

    nid = ship(client, clock)[0]["id"]
    dispatch(engine)
    first = store.resend(engine.db, nid, role="admin", now=clock.now)
    second = store.resend(engine.db, nid, role="admin", now=clock.now)
    assert (first, second) == (True, False)
    assert sql(engine, "SELECT count(*) FROM consoleaction") == [(1,)]


def test_the_read_only_role_sees_everything_but_cannot_act(
    console: Console, client: TestClient, clock: Clock, engine: Notifier
) -> None:
    planned = ship(client, clock)
    nid = planned[0]["id"]
    console.login(READONLY)
    page = console.get(f"/console/shipments/{shipment_id(engine, 'SF18399217NER')}")
    assert page.status_code == 200 and f'id="n{nid}"' in page.text
    assert "/cancel" not in page.text and "/resend" not in page.text
    assert console.get(f"/console/notifications/{nid}/cancel").status_code == 403
    csrf = console.csrf()
    assert console.post(f"/console/notifications/{nid}/cancel", {"csrf": csrf}).status_code == 403
    dispatch(engine)
    assert console.post(f"/console/notifications/{nid}/resend", {"csrf": csrf}).status_code == 403
    assert sql(engine, "SELECT status, attempts FROM notification WHERE id = :i", i=nid) == [
        ("sent", 1)
    ]
    assert sql(engine, "SELECT count(*) FROM consoleaction") == [(0,)]


# -- escaping -------------------------------------------------------------------------------------


def test_hostile_names_waybills_and_rendered_text_are_escaped(
    admin: Console, client: TestClient, clock: Clock, engine: Notifier
) -> None:
    body = registration(waybill="<b>W1</b>", phone=PHONE, reference_number="<i>R1</i>")
    body["consumer_details"]["name"] = "<script>x</script> Priya"
    assert client.post("/shipments", json=body, headers=api(client)).status_code == 201
    hook = webhook(waybill="<b>W1</b>", code=6, at=clock.now - timedelta(minutes=1))
    hook["location"] = hook["additional"]["latest_status"]["location"] = "<img src=x onerror=1>"
    assert client.post("/webhooks/clickpost", json=hook).status_code == 200
    dispatch(engine)
    sms = sql(engine, "SELECT body FROM notification WHERE channel = 'sms'")[0][0]
    assert sms.startswith("Hi <script>x</script>, ") and "<i>R1</i>" in sms  # stored raw
    page = admin.get(f"/console/shipments/{shipment_id(engine, '<b>W1</b>')}").text
    for raw in ("<b>W1</b>", "<script", "<img src=x", "<i>R1"):
        assert raw not in page
    for escaped in ("&lt;b&gt;W1&lt;/b&gt;", "Hi &lt;script&gt;x&lt;/script&gt;, ",
                    "&lt;i&gt;R1&lt;/i&gt;", "at &lt;img src=x onerror=1&gt;"):  # fmt: skip
        assert escaped in page
    found = admin.post("/console/search", {"q": "<b>W1", "csrf": admin.csrf()}).text
    assert "<b>W1" not in found and "&lt;b&gt;W1&lt;/b&gt;" in found


# -- search ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["SF18399", "sf18399217ner", "ACME-1002", "98765 43210", "+91-98765-43210", "43210",
     "+9198765", "priya.sh", "PRIYA.SHARMA@example.com"],
)  # fmt: skip
def test_search_finds_a_shipment_by_any_part_and_shows_it_masked(
    admin: Console, client: TestClient, clock: Clock, engine: Notifier, query: str
) -> None:
    ship(client, clock)
    ship(client, clock, waybill="ZZ0000001", phone="9123456789", email="someone@else.example",
         reference_number="OTHER-1")  # fmt: skip
    page = admin.post("/console/search", {"q": query, "csrf": admin.csrf()})
    assert page.status_code == 200
    hits = page.text[page.text.index('id="hits"') :]  # the query itself is echoed above
    links = re.findall(r'href="/console/shipments/(\d+)"', hits)
    assert links == [str(shipment_id(engine, "SF18399217NER"))]
    assert "+91******3210" in hits and "p***@example.com" in hits
    assert PHONE not in hits and EMAIL not in hits.lower()


def test_search_by_get_and_too_short_or_unknown_input(
    admin: Console, client: TestClient, clock: Clock
) -> None:
    ship(client, clock)
    assert "SF18399217NER" in admin.get("/console/search?q=SF1839").text
    assert "at least 3 characters" in admin.get("/console/search?q=SF").text
    assert 'id="no-hits"' in admin.get("/console/search?q=NOPE-404").text
    assert 'id="no-hits"' in admin.get("/console/search?q=100%25").text  # LIKE wildcards are text
    assert 'id="no-hits"' in admin.get("/console/search?q=00000").text  # not every +91 number


# -- the delivery log, CSV ------------------------------------------------------------------------


def test_the_log_pages_with_a_keyset_and_keeps_its_filters(
    admin: Console, client: TestClient, clock: Clock
) -> None:
    for n in range(30):  # 60 notifications: an SMS and an email each
        ship(client, clock, waybill=f"PAGE{n:04d}", phone=f"98765{n:05d}")
    first = admin.get("/console/log")
    ids1 = [int(i) for i in re.findall(r"<tr>\s*<td>(\d+)</td>", first.text)]
    assert ids1 == list(range(60, 10, -1))
    older = re.search(r'href="(/console/log\?after=\d+)" id="older"', first.text)
    assert older and 'id="newer"' not in first.text
    second = admin.get(older.group(1))
    ids2 = [int(i) for i in re.findall(r"<tr>\s*<td>(\d+)</td>", second.text)]
    assert ids2 == list(range(10, 0, -1)) and 'id="older"' not in second.text
    newer = re.search(r'href="(/console/log\?before=\d+)" id="newer"', second.text)
    assert newer
    again = admin.get(newer.group(1))
    assert [int(i) for i in re.findall(r"<tr>\s*<td>(\d+)</td>", again.text)] == ids1
    emails = admin.get("/console/log?channel=email&status=scheduled&rule=out_for_delivery")
    rows = re.findall(r"<tr>\s*<td>(\d+)</td>", emails.text)
    assert len(rows) == 30 and "sms</td>" not in emails.text
    csv_link = "/console/log.csv?status=scheduled&amp;channel=email&amp;rule=out_for_delivery"
    assert f'href="{csv_link}"' in emails.text


def test_the_log_filters_by_time_and_says_what_it_ignored(
    admin: Console, client: TestClient, clock: Clock
) -> None:
    ship(client, clock)
    today = clock.now.strftime("%Y-%m-%d")
    yesterday = (clock.now - timedelta(days=1)).strftime("%Y-%m-%d")
    assert len(re.findall(r"<tr>\s*<td>", admin.get(f"/console/log?since={today}").text)) == 2
    assert 'id="empty"' in admin.get(f"/console/log?until={yesterday}").text
    page = admin.get("/console/log?status=nonsense&since=27/11/2026")
    assert "unknown status" in page.text and "since: not a date" in page.text


def test_csv_export_has_the_filtered_rows_masked(
    admin: Console, client: TestClient, clock: Clock, engine: Notifier
) -> None:
    ship(client, clock)
    ship(client, clock, waybill="=HYPERLINK(1)", phone="9123456789", email="x@y.example")
    dispatch(engine)
    response = admin.get("/console/log.csv?channel=sms")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["channel"] for r in rows] == ["sms", "sms"]
    assert {r["status"] for r in rows} == {"sent"}
    assert {r["recipient"] for r in rows} == {"'+91******6789", "'+91******3210"}
    assert {r["waybill"] for r in rows} == {"'=HYPERLINK(1)", "SF18399217NER"}
    assert PHONE not in response.text and EMAIL not in response.text


# -- the shipment page, resend and cancel ---------------------------------------------------------


def test_the_shipment_page_shows_the_journey_and_every_notification(
    admin: Console, client: TestClient, clock: Clock, engine: Notifier
) -> None:
    body = registration(email="")
    client.post("/shipments", json=body, headers=api(client))
    hook = webhook(code=9, ndr=1, at=clock.now - timedelta(minutes=3))
    assert client.post("/webhooks/clickpost", json=hook).status_code == 200
    dispatch(engine)
    page = admin.get(f"/console/shipments/{shipment_id(engine, 'SF18399217NER')}").text
    assert "Failed delivery (9 FailedDelivery)" in page
    assert "Customer unavailable (NDR 1 customer_unavailable)" in page
    assert "skipped" in page and "no email" in page  # the email's decision and its reason
    sent = sql(engine, "SELECT id, body, provider_id, rules_version FROM notification "
                       "WHERE status = 'sent'")  # fmt: skip
    assert len(sent) == 1
    nid, text, provider_id, version = sent[0]
    assert f'id="n{nid}"' in page
    assert provider_id and provider_id in page and version[:12] in page
    assert text.split(",")[0] in page  # the rendered text, "Hi Priya"
    assert "attempt 1" in page


def test_resend_puts_it_back_and_the_dispatcher_sends_it_again(
    admin: Console, client: TestClient, clock: Clock, engine: Notifier, tmp_path: Path
) -> None:
    nid = next(p["id"] for p in ship(client, clock) if p["channel"] == "sms")
    dispatch(engine)
    sid = shipment_id(engine, "SF18399217NER")
    confirm = admin.get(f"/console/notifications/{nid}/resend")
    assert confirm.status_code == 200 and "Yes, resend it" in confirm.text
    clock.advance(minutes=10)
    done = admin.post(f"/console/notifications/{nid}/resend", {"csrf": csrf_of(confirm.text)})
    assert done.status_code == 303
    assert done.headers["location"] == f"/console/shipments/{sid}?done=resend#n{nid}"
    row = sql(engine, "SELECT status, reason, due_at FROM notification WHERE id = :i", i=nid)
    assert row[0][:2] == ("scheduled", "manual resend by console")
    assert sql(engine, "SELECT action, role, previous_status FROM consoleaction") == [
        ("resend", "admin", "sent")
    ]
    assert dispatch(engine) == {"sent": 1}
    attempts = sql(engine, "SELECT number, outcome FROM attempt WHERE notification_id = :i "
                           "ORDER BY number", i=nid)  # fmt: skip
    assert attempts == [(1, "sent"), (2, "sent")]
    assert len((tmp_path / "outbox" / "sms.jsonl").read_text().splitlines()) == 2
    page = admin.get(f"/console/shipments/{sid}").text
    assert "manual resend by console (admin)" in page and "attempt 2" in page
    assert page.index("manual resend by console") < page.index("attempt 2")


def test_cancel_stops_a_pending_message_and_refuses_a_sent_one(
    admin: Console, client: TestClient, clock: Clock, engine: Notifier
) -> None:
    planned = ship(client, clock)
    sms, email = (next(p["id"] for p in planned if p["channel"] == c) for c in ("sms", "email"))
    csrf = admin.csrf()
    assert admin.post(f"/console/notifications/{sms}/cancel", {"csrf": csrf}).status_code == 303
    assert sql(engine, "SELECT status, reason FROM notification WHERE id = :i", i=sms) == [
        ("cancelled", "cancelled by console")
    ]
    assert dispatch(engine) == {"sent": 1}  # the email only
    refused = admin.post(f"/console/notifications/{email}/cancel", {"csrf": csrf})
    assert refused.status_code == 409 and "It is sent now" in refused.text
    again = admin.post(f"/console/notifications/{sms}/cancel", {"csrf": csrf})
    assert again.status_code == 409
    assert admin.post(f"/console/notifications/{sms}/explode", {"csrf": csrf}).status_code == 404
    assert admin.post("/console/notifications/999/resend", {"csrf": csrf}).status_code == 404


def test_a_message_without_an_address_cannot_be_resent(
    admin: Console, client: TestClient, clock: Clock, engine: Notifier
) -> None:
    planned = ship(client, clock, email="")
    email = next(p for p in planned if p["channel"] == "email")
    assert email["status"] == "skipped"
    response = admin.post(f"/console/notifications/{email['id']}/resend", {"csrf": admin.csrf()})
    assert response.status_code == 409
    assert sql(engine, "SELECT count(*) FROM consoleaction") == [(0,)]


# -- preview, dashboard ---------------------------------------------------------------------------


def test_preview_renders_what_each_rule_would_send_without_storing_anything(
    admin: Console, client: TestClient, clock: Clock, engine: Notifier
) -> None:
    ship(client, clock, code=3)
    before = sql(engine, "SELECT count(*) FROM notification")
    sid = shipment_id(engine, "SF18399217NER")
    form = admin.get(f"/console/preview?shipment={sid}").text
    result = admin.post("/console/preview", {"csrf": csrf_of(form), "shipment_id": str(sid),
                                             "status": "9", "ndr": "1"})  # fmt: skip
    assert result.status_code == 200
    assert "Decision:" in result.text and "would send" in result.text
    assert "Hi Priya" in result.text and "+91******3210" in result.text
    pasted = webhook(code=8, at=clock.now)
    sample = admin.post("/console/preview", {"csrf": csrf_of(form), "payload": _json(pasted)})
    assert "sample customer" in sample.text and "Sample" in sample.text
    bad = admin.post("/console/preview", {"csrf": csrf_of(form), "payload": "{not json"})
    assert bad.status_code == 200 and 'class="problem"' in bad.text
    unknown = admin.post("/console/preview", {"csrf": csrf_of(form), "waybill": "NOPE"})
    assert "no shipment with waybill" in unknown.text
    assert sql(engine, "SELECT count(*) FROM notification") == before


def test_the_dashboard_counts_per_day_and_channel_and_shows_the_oldest_due(
    admin: Console, client: TestClient, clock: Clock, engine: Notifier
) -> None:
    ship(client, clock, email="")  # an SMS sent, an email skipped (no email)
    dispatch(engine)
    clock.advance(minutes=30)
    pending = ship(client, clock, waybill="DUE00001", phone="9123456789", code=8)
    clock.advance(minutes=7)
    page = admin.get("/console").text
    today = re.search(r"<tr><td>Thu 26 Nov</td>(.*?)</tr>", page, re.S)
    assert today, "today's row"
    cells = [int(c) for c in re.findall(r'<td class="num">(\d+)</td>', today.group(1))]
    # sms sent/failed/skipped, whatsapp …, email …
    assert cells == [1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert f"#{pending[0]['id']}" in page and "DUE00001" in page and "(7 min ago)" in page
    assert page.count('class="bar bar-sent"') == 1 and page.count('class="bar bar-skipped"') == 1


def _json(body: dict[str, Any]) -> str:
    import json

    return json.dumps(body)
