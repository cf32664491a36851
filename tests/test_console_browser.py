"""The support console in a real browser: Playwright driving Debian's Chromium (headless,
``/usr/bin/chromium``; ``make test`` installs it) against ``notifier serve`` on 127.0.0.1,
with the local Twilio-compatible server and a real SMTP server behind it.

An agent logs in, finds a shipment by its waybill, opens it, reads every notification with
its reason, previews a failed-delivery message, resends the SMS and logs out. Each page is
saved as a screenshot in the test's folder and copied to ``tests/artifacts/console/`` for
review. A missing browser fails the test: it is not skipped.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import registration, webhook
from daemon import API_TOKEN, Daemon, daemon_logs_on_failure, wait_for
from playwright.sync_api import Browser, Page, expect, sync_playwright
from smtp_server import SmtpServer
from twilio_server import TwilioServer

__all__ = ["daemon_logs_on_failure"]  # the fixture, imported to be found
pytestmark = pytest.mark.usefixtures("daemon_logs_on_failure")

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "console"
READONLY = "browser-readonly-token"
WAYBILL, PHONE = "BRW0000001", "9812345678"
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium (`make test` does: apt-get install "
        "-y chromium); this test drives a real browser and is not skipped without one"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


@dataclass(frozen=True)
class Running:
    daemon: Daemon
    twilio: TwilioServer

    def sms_to(self, phone: str) -> list[str]:
        return [r.form.get("Body", "") for r in list(self.twilio.requests)
                if r.form.get("To") == "+91" + phone]  # fmt: skip


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    with TwilioServer() as twilio, SmtpServer() as smtp:
        daemon = Daemon(tmp_path / "daemon", twilio=twilio, smtp=smtp,
                        NOTIFIER_CONSOLE_READONLY_TOKEN=READONLY)  # fmt: skip
        with daemon:
            yield Running(daemon=daemon, twilio=twilio)


class Shots:
    """Numbered screenshots in the test's folder, copied to tests/artifacts/console/."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0
        folder.mkdir(parents=True, exist_ok=True)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(self, page: Page, name: str) -> None:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shutil.copy2(path, ARTIFACTS / path.name)


def test_an_agent_finds_a_shipment_previews_resends_and_logs_out(
    running: Running, browser: Browser, tmp_path: Path
) -> None:
    daemon = running.daemon
    body = registration(waybill=WAYBILL, phone=PHONE, email="")  # no email: a skipped message
    assert daemon.api.post("/shipments", json=body).status_code == 201
    now = datetime.now(UTC)
    for count, hook in enumerate((webhook(waybill=WAYBILL, code=4, at=now - timedelta(hours=5)),
                                  webhook(waybill=WAYBILL, code=9, ndr=1, at=now)), 1):  # fmt: skip
        assert daemon.post_webhook(hook).status_code == 200
        wait_for(lambda n=count: len(running.sms_to(PHONE)) >= n, timeout=TIMEOUT,
                 what=f"SMS number {count}")  # fmt: skip
    wait_for(lambda: not daemon.sql("SELECT 1 FROM notification WHERE status IN "
                                    "('scheduled', 'sending', 'retrying')"),
             timeout=TIMEOUT, what="the log to settle")  # fmt: skip
    ndr_sms = daemon.sql("SELECT id FROM notification WHERE rule LIKE 'failed_delivery%' "
                         "AND channel = 'sms'")[0][0]  # fmt: skip

    shots = Shots(tmp_path / "screenshots")
    context = browser.new_context(base_url=daemon.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT * 1000)

    # log in: the console sends a stranger to the login form first
    page.goto("/console")
    expect(page).to_have_url(f"{daemon.url}/console/login?next=/console")
    page.fill("#token", "not-the-token")
    page.click("#login")
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    page.fill("#token", API_TOKEN)
    shots.take(page, "login")
    page.click("#login")
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator("#day-counts")).to_be_visible()
    cookie = next(c for c in context.cookies() if c["name"] == "notifier_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/console"
    shots.take(page, "dashboard")

    # search a waybill (the form posts: nothing typed ends up in the address bar)
    page.click("text=Search")
    page.fill("#q", WAYBILL[:6])
    page.click("#search")
    expect(page).to_have_url(f"{daemon.url}/console/search")
    hit = page.locator("#hits a", has_text=WAYBILL)
    expect(hit).to_have_count(1)
    expect(page.locator("#hits")).to_contain_text("+91******5678")
    shots.take(page, "search")

    # the shipment: its journey and every notification with its reason
    hit.click()
    expect(page.locator("#waybill")).to_have_text(WAYBILL)
    assert "/console/shipments/" in page.url and PHONE not in page.url
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("Failed delivery (9 FailedDelivery)")
    expect(timeline).to_contain_text("Customer unavailable (NDR 1 customer_unavailable)")
    ndr_card = page.locator(f"#n{ndr_sms}")
    expect(ndr_card.locator(".status")).to_have_text("sent")
    expect(ndr_card).to_contain_text("attempt 1")
    expect(ndr_card.locator("pre.text")).to_contain_text("Priya")
    expect(page.locator(".notification .reason", has_text="no email").first).to_be_visible()
    shots.take(page, "shipment")

    # preview: what would a failed delivery (address issue) send this customer?
    page.click("text=What would the rules send this customer?")
    page.select_option("#p-status", "9")
    page.select_option("#p-ndr", "6")
    page.click("#run-preview")
    result = page.locator("#preview-result")
    expect(result).to_contain_text("would send")
    expect(result.locator("pre.text").first).to_contain_text("Priya")
    shots.take(page, "preview")

    # resend the NDR SMS, confirmed on a page of its own
    page.go_back()
    page.go_back()
    page.reload()
    page.click(f"#resend-{ndr_sms}")
    expect(page.locator("h1")).to_contain_text(f"Resend notification #{ndr_sms}?")
    shots.take(page, "resend-confirm")
    page.click("#confirm")
    expect(page.locator(".done")).to_contain_text("manual resend")
    wait_for(lambda: len(running.sms_to(PHONE)) >= 3, timeout=TIMEOUT, what="the resent SMS")
    wait_for(lambda: daemon.sql("SELECT 1 FROM attempt WHERE notification_id = ? AND number = 2",
                                ndr_sms), timeout=TIMEOUT, what="attempt 2")  # fmt: skip
    page.reload()
    expect(ndr_card).to_contain_text("manual resend by console (admin)")
    expect(ndr_card).to_contain_text("attempt 2")
    expect(ndr_card.locator(".status")).to_have_text("sent")
    sent = running.sms_to(PHONE)
    assert len(sent) == 3 and sent[2] == sent[1] and "Priya" in sent[2]
    shots.take(page, "resent")

    # the delivery log, filtered
    page.click("text=Delivery log")
    page.select_option("#f-channel", "sms")
    page.click("#filter")
    expect(page.locator("#log")).to_contain_text(WAYBILL)
    expect(page.locator("#log")).not_to_contain_text("email")
    shots.take(page, "log")

    # log out: the session is gone
    page.click("#logout")
    expect(page).to_have_url(f"{daemon.url}/console/login")
    page.goto("/console")
    expect(page).to_have_url(f"{daemon.url}/console/login?next=/console")
    shots.take(page, "logged-out")

    # a read-only agent sees the same shipment but no resend or cancel
    page.fill("#token", READONLY)
    page.click("#login")
    page.goto(f"/console/shipments/{daemon.sql('SELECT id FROM shipment')[0][0]}")
    expect(page.locator(f"#n{ndr_sms}")).to_be_visible()
    expect(page.locator(".actions a")).to_have_count(0)
    shots.take(page, "read-only")
    context.close()
    assert len(list((tmp_path / "screenshots").glob("*.png"))) == shots.count == 10
