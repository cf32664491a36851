"""Group commit: concurrent webhooks and finished sends share transactions, and a batch gives
every caller exactly what it would have got alone."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Clock, registration, webhook

from notifier import Notifier, Settings
from notifier.clickpost.models import parse_webhook
from notifier.errors import StoreUnavailableError
from notifier.group_commit import GroupCommit, collector_paused
from notifier.store import ingest
from notifier.store.ingest import IngestOutcome

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)  # 10:30 IST

# -- GroupCommit itself ---------------------------------------------------------------------------


async def test_concurrent_calls_share_transactions_and_get_their_own_results() -> None:
    batches: list[list[int]] = []

    def commit(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(commit)
    results = await asyncio.gather(*(group.submit(i) for i in range(100)))
    assert results == [i * 10 for i in range(100)]
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert len(batches) < 10, batches  # the first alone, then the rest that queued meanwhile
    assert group.batches == len(batches)


async def test_a_lone_call_is_committed_at_once() -> None:
    group: GroupCommit[str, str] = GroupCommit(lambda items: [i.upper() for i in items])
    assert await group.submit("a") == "A"
    assert await group.submit("b") == "B"
    assert group.batches == 2


async def test_callers_arriving_together_are_gathered_into_one_commit() -> None:
    """After a batch of several, the flusher waits ``gather`` for more: three callers 10 ms
    apart share one commit, where without the wait each would have had its own."""
    batches: list[list[str]] = []

    def commit(items: Sequence[str]) -> list[str]:
        batches.append(list(items))
        return list(items)

    group: GroupCommit[str, str] = GroupCommit(commit, gather=0.2)
    await asyncio.gather(*(group.submit(f"burst {i}") for i in range(5)))

    async def later(item: str, delay: float) -> str:
        await asyncio.sleep(delay)
        return await group.submit(item)

    await asyncio.gather(later("a", 0), later("b", 0.01), later("c", 0.02))
    assert batches[-1] == ["a", "b", "c"], batches


async def test_gathering_ends_once_as_many_callers_as_last_time_are_back() -> None:
    """Clients that each wait for their answer before sending again are all back once as many
    are queued as the last batch held: the flush commits them then, not after ``gather`` (30 s
    here), and still in one batch."""
    batches: list[list[str]] = []

    def commit(items: Sequence[str]) -> list[str]:
        batches.append(list(items))
        return list(items)

    group: GroupCommit[str, str] = GroupCommit(commit, gather=30)
    await asyncio.gather(*(group.submit(f"first {i}") for i in range(3)))

    async def later(item: str, delay: float) -> str:
        await asyncio.sleep(delay)
        return await group.submit(item)

    again = asyncio.gather(later("a", 0), later("b", 0.01), later("c", 0.02))
    assert await asyncio.wait_for(again, 5) == ["a", "b", "c"]
    assert batches[-1] == ["a", "b", "c"], batches


async def test_a_lone_caller_or_one_after_a_pause_is_not_kept_waiting() -> None:
    """Gathering is for callers arriving together: a caller after a lone one, or after a
    pause of a hundred gathers, is committed at once (here a wait would be 30 s)."""
    group: GroupCommit[int, int] = GroupCommit(lambda items: list(items), gather=30)
    assert await asyncio.wait_for(group.submit(1), 5) == 1
    assert await asyncio.wait_for(group.submit(2), 5) == 2
    burst: GroupCommit[int, int] = GroupCommit(lambda items: list(items), gather=0.005)
    await asyncio.gather(*(burst.submit(i) for i in range(5)))
    burst._queue.append((9, asyncio.get_running_loop().create_future()))  # one more comes
    assert burst._arriving_together(burst._last_at + 0.001)
    assert not burst._arriving_together(burst._last_at + 0.6)  # after a pause


async def test_a_batch_is_capped() -> None:
    sizes: list[int] = []

    def commit(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(commit, max_batch=7)
    await asyncio.gather(*(group.submit(i) for i in range(40)))
    assert max(sizes) <= 7 and sum(sizes) == 40


async def test_an_unavailable_database_fails_every_caller_of_the_batch() -> None:
    def commit(items: Sequence[int]) -> list[int]:
        raise StoreUnavailableError("database is locked")

    group: GroupCommit[int, int] = GroupCommit(commit)
    results = await asyncio.gather(*(group.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailableError) for r in results)


async def test_one_bad_item_does_not_take_its_batch_down() -> None:
    def commit(items: Sequence[int]) -> list[int]:
        if 3 in items:
            raise ValueError("item 3 is broken")
        return [i + 1 for i in items]

    group: GroupCommit[int, int] = GroupCommit(commit)
    results = await asyncio.gather(*(group.submit(i) for i in range(6)), return_exceptions=True)
    assert [r for i, r in enumerate(results) if i != 3] == [1, 2, 3, 5, 6]
    assert isinstance(results[3], ValueError)


async def test_the_garbage_collector_waits_while_a_batch_commits() -> None:
    """A collection in the middle of a batch frees none of its temporaries, only ages them
    towards full collections of the whole heap; the collector is back once the batch ends,
    failed or not."""
    seen: list[bool] = []

    def commit(items: Sequence[int]) -> list[int]:
        seen.append(gc.isenabled())
        if 99 in items:
            raise ValueError("a bad item")
        return list(items)

    assert gc.isenabled()
    group: GroupCommit[int, int] = GroupCommit(commit)
    assert await asyncio.gather(*(group.submit(i) for i in range(20))) == list(range(20))
    assert seen and not any(seen)
    assert gc.isenabled()
    with pytest.raises(ValueError):
        await group.submit(99)
    assert gc.isenabled()


async def test_a_collector_the_application_disabled_stays_disabled() -> None:
    group: GroupCommit[int, int] = GroupCommit(lambda items: list(items))
    gc.disable()
    try:
        assert await group.submit(1) == 1
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_pauses_resume_the_collector_when_the_last_ends() -> None:
    """Two engines (or a batch and a retry) committing at once in two threads: the collector
    resumes when both are done, not when the first is."""
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    during: list[bool] = []

    def first() -> None:
        with collector_paused():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with collector_paused():
            second_in.set()
            first_out.wait(5)
            during.append(gc.isenabled())  # the first has ended; this one still holds

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert during == [False]
    assert gc.isenabled()


# -- ingest in batches ----------------------------------------------------------------------------


def scenario() -> list[dict[str, Any]]:
    """Updates where order and batching matter: a burst for one shipment (superseding), the
    same scan twice, an update older than what the shipment reached, an unregistered waybill,
    a waybill-less update matched by order id, and updates for other shipments between."""
    a, b, c = "AWB-A", "AWB-B", "AWB-C"
    return [
        webhook(waybill=a, code=4, at=T0),
        webhook(waybill=b, code=4, at=T0),
        webhook(waybill=a, code=6, at=T0 + timedelta(hours=1)),
        webhook(waybill=a, code=6, at=T0 + timedelta(hours=1)),  # the same scan again
        webhook(waybill="NEVER-REGISTERED", code=6, at=T0),
        webhook(waybill=b, code=8, at=T0 + timedelta(hours=2)),
        webhook(waybill=b, code=6, at=T0 + timedelta(hours=1)),  # older than delivered
        webhook(waybill=a, code=8, at=T0 + timedelta(hours=3)),
        webhook(waybill="", code=6, at=T0 + timedelta(hours=1), order_id="ORDER-C"),
        webhook(waybill=c, code=9, at=T0 + timedelta(hours=2), ndr=1),
    ]


def registrations() -> list[dict[str, Any]]:
    c = registration(waybill="AWB-C", phone="9876500003", order_id="ORDER-C")
    return [
        registration(waybill="AWB-A", phone="9876500001"),
        registration(waybill="AWB-B", phone="9876500002", order_type="COD"),
        c,
    ]


async def ingest_all(tmp_path: Path, name: str, *, together: bool) -> Any:
    """Run the scenario through one engine, in one batch or one update at a time; the outcomes
    and the resulting delivery log, with database ids left out (they differ by run)."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / name}.db", rules=ROOT / "rules.yaml",
        templates=ROOT / "templates", outbox_dir=tmp_path / name,
    )  # fmt: skip
    clock = Clock(T0 + timedelta(hours=4))
    async with Notifier(settings, clock=clock) as engine:
        for body in registrations():
            await engine.register_shipment(body)
        updates = [parse_webhook(body) for body in scenario()]
        if together:
            outcomes = engine.store.record_updates(
                updates, engine._decide, now=clock(), rules_version=engine.rules.version
            )
        else:
            outcomes = [
                engine.store.record_updates(
                    [u], engine._decide, now=clock(), rules_version=engine.rules.version
                )[0]
                for u in updates
            ]
        rows = await engine.notifications(limit=1000)
        events = {}
        for waybill in ("AWB-A", "AWB-B", "AWB-C"):
            detail = await engine.shipment(4, waybill)
            assert detail is not None
            # sorted: one transaction's events take ids in identity order, the order in which
            # concurrent transactions lock them, not in the order they arrived
            events[waybill] = sorted(e["outcome"] for e in detail["events"])
    return [_comparable(o) for o in outcomes], sorted(_log_row(r) for r in rows), events


def _comparable(outcome: IngestOutcome) -> tuple[Any, ...]:
    notes = tuple((s.rule, s.channel, s.status, s.reason) for s in outcome.notifications)
    return (outcome.duplicate, outcome.shipment_id, outcome.verdict, notes, outcome.cancelled)


def _log_row(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["waybill"], row["rule"], row["channel"], row["status"], row["reason"])


async def test_a_batch_gives_what_one_update_at_a_time_gives(tmp_path: Path) -> None:
    apart = await ingest_all(tmp_path, "apart", together=False)
    together = await ingest_all(tmp_path, "together", together=True)
    assert together == apart
    outcomes, log, _ = together
    assert outcomes[3][0] is True  # the repeated scan: a duplicate, in the same batch
    assert outcomes[4][1] is None  # held for a registration
    assert ("AWB-A", "delivered", "sms", "scheduled", "") in log
    assert ("AWB-A", "shipped", "sms", "cancelled", "superseded by OutForDelivery (6)") in log
    assert ("AWB-A", "out_for_delivery", "sms", "cancelled", "superseded by Delivered (8)") in log


async def test_concurrent_webhooks_share_transactions(notifier: Notifier) -> None:
    for i in range(40):
        await notifier.register_shipment(registration(waybill=f"AWB{i:03d}"))
    before = notifier._ingest.batches
    outcomes = await asyncio.gather(
        *(notifier.handle_webhook(webhook(waybill=f"AWB{i:03d}", code=4, at=T0))
          for i in range(40))
    )  # fmt: skip
    assert all(not o.duplicate and len(o.notifications) == 2 for o in outcomes)
    assert len({o.event_id for o in outcomes}) == 40
    assert notifier._ingest.batches - before < 10
    assert len(await notifier.notifications(limit=1000)) == 80


async def test_a_lost_deadlock_runs_the_batch_again(
    notifier: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two daemons' batches on PostgreSQL can deadlock; the loser's batch runs again."""
    await notifier.register_shipment(registration())
    real = ingest.record_updates
    calls = []

    def once_deadlocked(*args: Any, **kwargs: Any) -> list[IngestOutcome]:
        calls.append(1)
        if len(calls) == 1:
            raise StoreUnavailableError("deadlock detected", conflict=True)
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest, "record_updates", once_deadlocked)
    outcome = await notifier.handle_webhook(webhook(code=6, at=T0))
    assert len(calls) == 2 and len(outcome.notifications) == 2


async def test_an_unavailable_database_is_not_retried_as_a_conflict(
    notifier: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def locked(*args: Any, **kwargs: Any) -> list[IngestOutcome]:
        calls.append(1)
        raise StoreUnavailableError("database is locked")

    monkeypatch.setattr(ingest, "record_updates", locked)
    with pytest.raises(StoreUnavailableError):
        await notifier.handle_webhook(webhook(code=6, at=T0))
    assert len(calls) == 1


async def test_the_minute_summary_counts_what_came_in(notifier: Notifier) -> None:
    await notifier.register_shipment(registration())
    assert notifier.summarise_ingest() is None
    body = webhook(code=6, at=T0)
    await notifier.handle_webhook(body)
    await notifier.handle_webhook(body)
    await notifier.handle_webhook(webhook(waybill="UNKNOWN", code=6, at=T0))
    summary = notifier.summarise_ingest()
    assert summary is not None and summary.startswith("3 webhooks: ")
    assert {"1 accepted", "1 duplicate", "1 held"} == set(
        summary[len("3 webhooks: ") :].split(", ")
    )
    assert notifier.summarise_ingest() is None  # counted once


# -- dispatch records finished sends together ------------------------------------------------------


async def test_finished_sends_share_transactions(settings: Settings, clock: Clock) -> None:
    async with Notifier(settings, clock=clock) as engine:  # the outbox channels
        for i in range(30):
            await engine.register_shipment(registration(waybill=f"AWB{i:03d}"))
            await engine.handle_webhook(webhook(waybill=f"AWB{i:03d}", code=6, at=T0))
        finishes = engine.dispatcher._finishes
        report = await engine.dispatch_due()
        assert report.counts == {"sent": 60}
        assert 0 < finishes.batches < 60
        rows = await engine.notifications(limit=1000)
        assert {r["status"] for r in rows} == {"sent"} and all(r["attempts"] == 1 for r in rows)
        for row in rows[:3]:
            assert [a.outcome for a in engine.queue.attempts(row["id"])] == ["sent"]
