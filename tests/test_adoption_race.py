"""A registration that commits while a batch holding its shipment's update is being stored.

The batch looked for the shipment, found none, and will store the update as held; the
registration looks for held updates to adopt. Whichever commits second must see the other:
the update is adopted and planned, never left held for good. On PostgreSQL the two really run
at once (store/adoption.py); SQLite runs one write transaction at a time. Each test stops the
batch after it has looked for its shipments and before it commits, starts the registration,
gives it a second to get through, then lets the batch go on.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import dumps, registration, webhook
from sqlalchemy import select

from notifier import Notifier
from notifier.store import ingest
from notifier.store.ingest_sql import EVENT

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)


class Pause:
    """Holds the ingest transaction just before it finishes its events and commits."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()

    def __call__(self, original: Any) -> Any:
        def pausing(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            self.go.wait(30)
            return original(*args, **kwargs)

        return pausing


@pytest.fixture
def pause(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pause]:
    paused = Pause()
    monkeypatch.setattr(ingest, "_finish_events", paused(ingest._finish_events))
    yield paused
    paused.go.set()  # never leave a thread waiting


def by_waybill() -> tuple[dict[str, Any], dict[str, Any]]:
    return webhook(code=6, at=T0), registration()


def by_order_id() -> tuple[dict[str, Any], dict[str, Any]]:
    body = webhook(code=6, at=T0, waybill="")
    body["additional"]["order_id"] = "ACME-100231"
    return body, registration(waybill="XB777", reference_number="ACME-100231")


@pytest.mark.parametrize("case", [by_waybill, by_order_id])
async def test_an_update_stored_while_its_shipment_registers_is_planned(
    notifier: Notifier, pause: Pause, case: Any
) -> None:
    body, reg = case()
    update = asyncio.create_task(notifier.handle_webhook(dumps(body)))
    assert await asyncio.to_thread(pause.reached.wait, 10), "the batch never got there"
    registering = asyncio.create_task(notifier.register_shipment(dumps(reg)))
    await asyncio.wait({registering}, timeout=1.0)  # done at once without the locks
    pause.go.set()
    held = await update
    result = await registering
    assert held.shipment_id is None, "the batch was to find no shipment"
    assert result.adopted_events == 1
    assert result.evaluation is not None
    assert [s.status for s in result.evaluation.notifications] == ["scheduled", "scheduled"]
    with notifier.db.reader.connect() as conn:
        stored = conn.execute(select(EVENT.c.shipment_id)).scalars().all()
    assert stored == [result.shipment_id]
