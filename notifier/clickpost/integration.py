"""Closing both loops with Clickpost: the calls we owe it, and polling when webhooks go quiet.

- Owed calls (awb-register, awb-unregister) were stored with the registration; here they are
  made, and retried with backoff while Clickpost is unreachable. A call Clickpost rejects is
  marked failed with its message (visible on the shipment), never silently dropped.
- Polling asks track-order about active shipments that have heard nothing for
  ``NOTIFIER_POLL_STALE_AFTER`` seconds, five waybills of one courier a call, at a bounded
  rate, and feeds each latest status through the same ingest as a webhook. The scan identity
  ignores the zone suffix, so a polled scan (naive time) and the webhook of the same scan
  (``Z``) are one event: they never send twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from notifier.clickpost.client import ClickpostClient, ClickpostRejected, ClickpostUnavailable
from notifier.errors import StoreUnavailableError
from notifier.events import ShipmentUpdate
from notifier.health import WriteHealth
from notifier.store.clickpost_calls import ClickpostCalls, OwedCall, PollTarget
from notifier.store.repository import IngestOutcome

log = logging.getLogger("notifier.clickpost")

TRACK_BATCH = 5  # track-order takes at most five waybills of one cp_id (clickpost-facts.md)
MAX_CALL_ATTEMPTS = 30


@dataclass(kw_only=True)
class PollReport:
    shipments: int = 0
    calls: int = 0
    updates: int = 0
    new_events: int = 0
    unknown: int = 0
    errors: list[str] = field(default_factory=list)


class ClickpostSync:
    def __init__(
        self,
        client: ClickpostClient,
        calls: ClickpostCalls,
        *,
        ingest: Callable[[ShipmentUpdate], Awaitable[IngestOutcome]],
        clock: Callable[[], datetime],
        stale_after: timedelta,
        calls_per_second: float = 2.0,
        health: WriteHealth | None = None,
    ) -> None:
        self.client = client
        self.calls = calls
        self.ingest = ingest
        self.clock = clock
        self.stale_after = stale_after
        self.interval = 1.0 / calls_per_second if calls_per_second > 0 else 0.0
        self.health = health or WriteHealth(clock)  # its claims and records report here

    # -- calls owed to Clickpost ------------------------------------------------------------------

    async def make_owed_calls(self, limit: int = 50) -> int:
        """Make the calls that are due; returns how many succeeded."""
        now = self.clock()
        try:
            owed = await asyncio.to_thread(
                self.calls.claim_due, now=now, limit=limit, lease_until=now + timedelta(minutes=2)
            )
        except StoreUnavailableError as err:
            # Told, but not a claim that works: with nothing owed it writes nothing.
            self.health.refused("claim of Clickpost calls", err)
            raise
        done = 0
        for call in owed:
            done += await self._make(call)
        return done

    async def _make(self, call: OwedCall) -> int:
        try:
            tracking_id = await self._call(call)
        except ClickpostRejected as err:
            log.error("clickpost %s for shipment %s rejected: %s", call.kind, call.shipment_id, err)
            await self._finish(call, "failed", f"rejected: {err}")
            return 0
        except ClickpostUnavailable as err:
            await self._retry(call, str(err))
            return 0
        await self._finish(call, "done", tracking_id=tracking_id)
        return 1

    async def _call(self, call: OwedCall) -> str | None:
        if call.kind == "register":
            registered = await self.client.register_awb(call.body)
            return str(registered.tracking_id) if registered.tracking_id is not None else None
        await self.client.unregister_awb(int(call.body["cp_id"]), str(call.body["waybill"]))
        return None

    async def _retry(self, call: OwedCall, error: str) -> None:
        if call.attempts >= MAX_CALL_ATTEMPTS:
            await self._finish(call, "failed", f"gave up after {call.attempts} attempts: {error}")
            return
        delay = min(3600.0, 30.0 * 2 ** (call.attempts - 1)) * random.uniform(0.5, 1.0)
        due = self.clock() + timedelta(seconds=delay)
        log.warning("clickpost %s for shipment %s: %s; retry at %s", call.kind,
                    call.shipment_id, error, due.isoformat())  # fmt: skip
        await self._finish(call, "pending", error, due_at=due)

    async def _finish(
        self,
        call: OwedCall,
        status: str,
        error: str = "",
        *,
        due_at: datetime | None = None,
        tracking_id: str | None = None,
    ) -> None:
        await self.health.writing(
            "record of a Clickpost call", self.calls.finish, call, now=self.clock(),
            status=status, error=error, due_at=due_at, tracking_id=tracking_id,
        )  # fmt: skip

    # -- polling ----------------------------------------------------------------------------------

    async def poll(self, limit: int = 500) -> PollReport:
        """One polling run over quiet active shipments; what it found goes through ingest."""
        now = self.clock()
        targets = await asyncio.to_thread(
            self.calls.poll_targets, now=now, quiet_since=now - self.stale_after, limit=limit
        )
        report = PollReport(shipments=len(targets))
        for cp_id, waybills in _batches(targets):
            if report.calls and self.interval:
                await asyncio.sleep(self.interval)
            report.calls += 1
            await self._track(cp_id, waybills, report)
        if targets:
            log.info("polled %d shipments in %d calls: %d updates, %d new, %d unknown",
                     report.shipments, report.calls, report.updates, report.new_events,
                     report.unknown)  # fmt: skip
        return report

    async def _track(self, cp_id: int, waybills: Sequence[str], report: PollReport) -> None:
        try:
            results = await self.client.track(cp_id, waybills)
        except (ClickpostUnavailable, ClickpostRejected) as err:
            report.errors.append(f"cp_id {cp_id}: {err}")
            log.warning("polling cp_id %s failed: %s", cp_id, err)
            return
        for waybill in waybills:
            result = results.get(waybill)
            if result is None or not result.valid or result.update is None:
                report.unknown += 1
                continue
            report.updates += 1
            outcome = await self.ingest(result.update)
            report.new_events += 0 if outcome.duplicate else 1


def _batches(targets: Sequence[PollTarget]) -> Iterator[tuple[int, list[str]]]:
    by_courier: dict[int, list[str]] = defaultdict(list)
    for target in targets:
        by_courier[target.cp_id].append(target.waybill)
    for cp_id, waybills in by_courier.items():
        for start in range(0, len(waybills), TRACK_BATCH):
            yield cp_id, waybills[start : start + TRACK_BATCH]
