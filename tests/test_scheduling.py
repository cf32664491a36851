"""The daemon's timer: new work goes out within about a second, edits go live, shutdown waits."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import ROOT, registration, webhook

from notifier import Notifier, Settings
from notifier.scheduling import Scheduler


async def wait_for(condition, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await condition():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_new_work_is_sent_without_being_asked(settings: Settings) -> None:
    anytime = settings.model_copy(update={"quiet_hours": "off"})  # the test runs at any hour
    async with Notifier(anytime) as n:
        scheduler = Scheduler(n, dispatch_every=1.0)
        scheduler.start()
        try:
            now = datetime.now(UTC).replace(microsecond=0)
            await n.register_shipment(registration())
            await n.handle_webhook(webhook(code=8, at=now))
            scheduler.wake()

            async def sent() -> bool:
                return len(await n.notifications(status="sent")) == 2

            assert await wait_for(sent)
            assert scheduler.alive
        finally:
            await scheduler.shutdown(grace=5)
        assert not scheduler.alive


async def test_rules_and_templates_reload_and_a_bad_edit_keeps_the_old_rules(
    settings: Settings, tmp_path: Path
) -> None:
    rules, templates = tmp_path / "rules.yaml", tmp_path / "templates"
    shutil.copy(ROOT / "rules.yaml", rules)
    shutil.copytree(ROOT / "templates", templates)
    mine = settings.model_copy(update={"rules": rules, "templates": templates})
    async with Notifier(mine) as n:
        scheduler = Scheduler(n, reload_every=0.2)
        scheduler.start()
        try:
            first = n.rules.version
            rules.write_text(rules.read_text().replace("name: Acme Store", "name: Acme Stores"))

            async def reloaded() -> bool:
                return n.rules.version != first

            assert await wait_for(reloaded)
            assert n.rules.defaults.brand.name == "Acme Stores"
            good = n.rules.version
            rules.write_text(rules.read_text().replace("repeat: per_day", "repeat: daily", 1))

            async def reported() -> bool:
                return n.rules_error is not None

            assert await wait_for(reported)
            assert n.rules.version == good  # the previous rules keep running
            assert f"{rules}:" in (n.rules_error or "") and "daily" in (n.rules_error or "")
            (templates / "sms" / "delivered.txt.j2").write_text("Hi {{ consumer.name ")
            rules.write_text(rules.read_text().replace("repeat: daily", "repeat: per_day", 1))

            async def template_reported() -> bool:
                return "sms/delivered.txt.j2" in (n.rules_error or "")

            assert await wait_for(template_reported)
            (templates / "sms" / "delivered.txt.j2").write_text("Delivered: {{ shipment.waybill }}")

            async def healthy() -> bool:
                return n.rules_error is None

            assert await wait_for(healthy)
        finally:
            await scheduler.shutdown(grace=5)


POSTGRES = os.environ.get("NOTIFIER_TEST_DATABASE_URL")


@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL: set NOTIFIER_TEST_DATABASE_URL")
async def test_a_daemon_whose_clock_disagrees_with_the_database_says_so(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Leases are written and compared by each daemon's clock: two daemons on hosts whose
    clocks disagree can both send a message. Each compares its clock with the database
    server's, every ten minutes, and warns past 2 s (and exposes it as a metric)."""
    from notifier.metrics import exposition
    from notifier.store import database

    async with Notifier(settings) as n:
        skew = await n.check_clock()
        assert skew is not None and abs(skew) < 1.0  # one machine: one clock
        assert "this host's clock" not in caplog.text
        real = time.time
        monkeypatch.setattr(database.time, "time", lambda: real() + 30)  # this host runs fast
        skew = await n.check_clock()
        assert skew is not None and -31 < skew < -29
        assert "this host's clock is 30.0 s ahead of the database server's" in caplog.text
        metric = re.search(r"^notifier_clock_skew_seconds (\S+)$", exposition(n).decode(), re.M)
        assert metric is not None and -31 < float(metric.group(1)) < -29
        scheduler = Scheduler(n)
        assert scheduler._scheduler.get_job("clock") is not None


async def test_on_sqlite_there_is_one_clock_and_nothing_to_compare(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'one.db'}",
                        rules=ROOT / "rules.yaml", templates=ROOT / "templates")  # fmt: skip
    async with Notifier(settings) as n:
        assert await n.check_clock() is None
        assert Scheduler(n)._scheduler.get_job("clock") is None
