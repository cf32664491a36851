"""The daemon's timer: new work goes out within about a second, edits go live, shutdown waits."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime
from pathlib import Path

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
