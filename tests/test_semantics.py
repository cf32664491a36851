"""design.md's "Semantics users rely on", one test each, through the embedded API."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from conftest import Clock, dumps, registration, sample, webhook

from notifier import Notifier, Settings

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)  # 10:30 IST


async def log(n: Notifier, **filters: object) -> list[tuple[str, str, str, str]]:
    rows = await n.notifications(limit=1000, **filters)
    return sorted((r["rule"], r["channel"], r["status"], r["reason"]) for r in rows)


async def test_same_webhook_twice_is_one_event_and_no_second_send(notifier: Notifier) -> None:
    await notifier.register_shipment(registration())
    body = dumps(webhook(code=6, at=T0))
    first = await notifier.handle_webhook(body)
    second = await notifier.handle_webhook(body)
    assert not first.duplicate and second.duplicate
    assert [s.channel for s in first.notifications] == ["sms", "email"]
    assert (await notifier.dispatch_due()).counts == {"sent": 2}
    assert (await notifier.handle_webhook(body)).duplicate
    assert (await notifier.dispatch_due()).total == 0
    detail = await notifier.shipment(4, "SF18399217NER")
    assert detail is not None and len(detail["events"]) == 1
    assert await log(notifier) == [
        ("out_for_delivery", "email", "sent", ""),
        ("out_for_delivery", "sms", "sent", ""),
    ]


async def test_same_scan_with_other_timestamp_spelling_is_a_duplicate(notifier: Notifier) -> None:
    await notifier.register_shipment(registration())
    body = webhook(code=6, at=T0)
    await notifier.handle_webhook(body)
    body["timestamp"] = T0.strftime("%Y-%m-%dT%H:%M:%S.002000Z")
    assert (await notifier.handle_webhook(body)).duplicate


async def test_out_for_delivery_after_delivered_sends_nothing(notifier: Notifier) -> None:
    await notifier.register_shipment(registration())
    await notifier.handle_webhook(webhook(code=8, at=T0))
    late = await notifier.handle_webhook(webhook(code=6, at=T0 - timedelta(hours=3)))
    assert late.verdict.startswith("stale: older than Delivered")
    assert late.notifications == ()
    later = await notifier.handle_webhook(webhook(code=6, at=T0 + timedelta(hours=1)))
    assert "final status" in later.verdict and later.notifications == ()
    assert {r[0] for r in await log(notifier)} == {"delivered"}


async def test_an_earlier_stage_arriving_late_sends_nothing(notifier: Notifier) -> None:
    await notifier.register_shipment(registration())
    await notifier.handle_webhook(webhook(code=6, at=T0))
    # a courier re-sends "picked up" with a newer timestamp: still going backwards
    back = await notifier.handle_webhook(webhook(code=4, at=T0 + timedelta(minutes=5)))
    assert back.verdict.startswith("stale: PickedUp comes before OutForDelivery")


async def test_burst_with_latest_delivered_sends_only_delivered(notifier: Notifier) -> None:
    await notifier.register_shipment(registration())
    delivered = (8, T0 + timedelta(hours=4))
    for i, code in enumerate([4, 5, 6, 8]):
        outcome = await notifier.handle_webhook(
            webhook(code=code, at=T0 + timedelta(hours=i + 1), latest=delivered)
        )
        assert not outcome.duplicate
    assert await log(notifier) == [
        ("delivered", "email", "scheduled", ""),
        ("delivered", "sms", "scheduled", ""),
    ]
    detail = await notifier.shipment(4, "SF18399217NER")
    assert detail is not None and len(detail["events"]) == 4
    assert detail["events"][0]["outcome"].startswith("rule delivered matched Delivered (8)")
    assert "duplicate" in detail["events"][1]["outcome"]


async def test_failed_delivery_once_per_attempt(notifier: Notifier, clock: Clock) -> None:
    await notifier.register_shipment(registration())
    day1, day2 = T0, T0 + timedelta(days=1, hours=2)
    clock.now = day1 + timedelta(minutes=10)
    first = webhook(code=9, at=day1, ndr=1)
    assert len((await notifier.handle_webhook(first)).notifications) == 2
    # the same attempt again: the same body, and another scan carrying the same latest status
    assert (await notifier.handle_webhook(first)).duplicate
    other = await notifier.handle_webhook(
        webhook(code=5, at=day1 - timedelta(hours=1), latest=(9, day1), ndr=1)
    )
    assert [s.status for s in other.notifications] == ["duplicate", "duplicate"]
    clock.now = day2 + timedelta(minutes=10)
    second = await notifier.handle_webhook(webhook(code=9, at=day2, ndr=1))
    assert [s.status for s in second.notifications] == ["scheduled", "scheduled"]
    rows = await log(notifier)
    assert [r[0] for r in rows] == ["failed_delivery_unavailable"] * 4


async def test_out_for_delivery_once_per_day(notifier: Notifier, clock: Clock) -> None:
    await notifier.register_shipment(registration())
    clock.now = T0 + timedelta(minutes=1)
    await notifier.handle_webhook(webhook(code=6, at=T0))
    again = await notifier.handle_webhook(webhook(code=6, at=T0 + timedelta(hours=2)))
    assert [s.status for s in again.notifications] == ["duplicate", "duplicate"]
    clock.now = T0 + timedelta(days=1, minutes=1)
    next_day = await notifier.handle_webhook(webhook(code=6, at=T0 + timedelta(days=1)))
    assert [s.status for s in next_day.notifications] == ["scheduled", "scheduled"]


async def test_pending_message_is_superseded_by_a_later_stage(
    notifier: Notifier, clock: Clock
) -> None:
    await notifier.register_shipment(registration())
    night = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)  # 22:30 IST: quiet hours
    clock.now = night + timedelta(minutes=1)
    shipped = await notifier.handle_webhook(webhook(code=4, at=night))
    assert [s.status for s in shipped.notifications] == ["scheduled", "scheduled"]
    assert all("quiet hours" in s.reason for s in shipped.notifications)
    # out for delivery is same-day news: it goes now and cancels the pending "shipped"
    clock.now = night + timedelta(hours=10)
    ofd = await notifier.handle_webhook(webhook(code=6, at=night + timedelta(hours=10)))
    assert ofd.cancelled == 2
    rows = await log(notifier)
    assert ("shipped", "sms", "cancelled", "superseded by OutForDelivery (6)") in rows
    assert ("out_for_delivery", "sms", "scheduled", "") in rows


async def test_final_status_cancels_pending_messages_on_every_channel(
    notifier: Notifier, clock: Clock
) -> None:
    await notifier.register_shipment(registration())
    night = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
    clock.now = night
    await notifier.handle_webhook(webhook(code=4, at=night - timedelta(minutes=5)))
    lost = await notifier.handle_webhook(webhook(code=16, at=night))
    assert lost.cancelled == 2
    assert {r[2] for r in await log(notifier, status="cancelled")} == {"cancelled"}


async def test_unknown_waybill_is_held_and_evaluated_once_on_registration(
    notifier: Notifier,
) -> None:
    held = await notifier.handle_webhook(webhook(code=6, at=T0))
    assert held.shipment_id is None and held.verdict.startswith("held")
    assert await log(notifier) == []
    result = await notifier.register_shipment(registration())
    assert result.created and result.adopted_events == 1
    assert result.evaluation is not None
    assert [s.status for s in result.evaluation.notifications] == ["scheduled", "scheduled"]
    again = await notifier.register_shipment(registration(phone="9123456780"))
    assert not again.created and again.evaluation is None
    assert len(await log(notifier)) == 2


async def test_registration_evaluates_only_the_latest_held_update(notifier: Notifier) -> None:
    await notifier.handle_webhook(webhook(code=4, at=T0))
    await notifier.handle_webhook(webhook(code=8, at=T0 + timedelta(hours=5)))
    await notifier.handle_webhook(webhook(code=6, at=T0 + timedelta(hours=3)))
    result = await notifier.register_shipment(registration())
    assert result.adopted_events == 3
    assert {r[0] for r in await log(notifier)} == {"delivered"}


async def test_empty_waybill_matched_by_reference_number(notifier: Notifier) -> None:
    await notifier.register_shipment(
        registration(waybill="XYZABC", cp_id=1, reference_number="WERA-9616974")
    )
    body = json.loads(sample("webhook-failed-delivery-ndr1.json"))
    body["waybill"] = ""
    body["timestamp"] = body["additional"]["latest_status"]["timestamp"] = "2026-11-26T04:30:00Z"
    outcome = await notifier.handle_webhook(body)
    assert outcome.shipment_id is not None
    assert {s.rule for s in outcome.notifications} == {"failed_delivery_unavailable"}


async def test_empty_waybill_matched_by_order_id_before_registration(
    notifier: Notifier,
) -> None:
    body = json.loads(sample("webhook-selected-delivered.json"))
    body["waybill"] = ""
    body["timestamp"] = body["additional"]["latest_status"]["timestamp"] = "2026-11-26T04:30:00Z"
    held = await notifier.handle_webhook(body)
    assert held.shipment_id is None
    result = await notifier.register_shipment(
        registration(waybill="12527345", reference_number="ABC123")
    )
    assert result.adopted_events == 1
    assert result.evaluation is not None and result.evaluation.verdict.startswith("rule delivered")


async def test_unregistered_shipment_gets_nothing_more(notifier: Notifier, clock: Clock) -> None:
    await notifier.register_shipment(registration())
    night = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
    clock.now = night
    await notifier.handle_webhook(webhook(code=4, at=night))  # deferred by quiet hours
    assert await notifier.unregister_shipment({"cp_id": 4, "waybill": "SF18399217NER"})
    after = await notifier.handle_webhook(webhook(code=6, at=night + timedelta(hours=1)))
    assert after.verdict == "ignored: shipment was unregistered"
    assert {(r[2], r[3]) for r in await log(notifier)} == {("cancelled", "shipment unregistered")}
    assert not await notifier.unregister_shipment({"cp_id": 4, "waybill": "NOPE"})


async def test_concurrent_duplicate_calls_make_one_event(
    notifier: Notifier, settings: Settings, clock: Clock
) -> None:
    await notifier.register_shipment(registration())
    body = dumps(webhook(code=6, at=T0))
    async with Notifier(settings, clock=clock) as other:  # a second engine, own connections
        outcomes = await asyncio.gather(
            *[(notifier if i % 2 else other).handle_webhook(body) for i in range(24)]
        )
    assert sum(not o.duplicate for o in outcomes) == 1
    assert len(await log(notifier)) == 2


async def test_concurrent_burst_plans_each_message_once(notifier: Notifier) -> None:
    await notifier.register_shipment(registration())
    delivered = (8, T0 + timedelta(hours=4))
    bodies = [
        webhook(code=c, at=T0 + timedelta(minutes=c), latest=delivered)
        for c in (4, 5, 6, 8, 18, 19)
    ]
    outcomes = await asyncio.gather(*[notifier.handle_webhook(b) for b in bodies * 3])
    assert sum(not o.duplicate for o in outcomes) == 6
    assert await log(notifier) == [
        ("delivered", "email", "scheduled", ""),
        ("delivered", "sms", "scheduled", ""),
    ]


async def test_unusable_recipients_are_skipped_with_a_reason(notifier: Notifier) -> None:
    await notifier.register_shipment(registration(phone="080-2345-6789", email=""))
    outcome = await notifier.handle_webhook(webhook(code=6, at=T0))
    assert [(s.channel, s.status, s.reason) for s in outcome.notifications] == [
        ("sms", "skipped", "landline phone"),
        ("email", "skipped", "no email"),
    ]
    await notifier.register_shipment(registration(waybill="B2", phone="12345", email="not-mail"))
    bad = await notifier.handle_webhook(webhook(waybill="B2", code=6, at=T0))
    assert [s.reason for s in bad.notifications] == ["invalid phone", "invalid email"]
    assert (await notifier.dispatch_due()).total == 0


async def test_an_event_too_old_to_matter_is_skipped(notifier: Notifier) -> None:
    await notifier.register_shipment(registration())
    old = await notifier.handle_webhook(webhook(code=6, at=T0 - timedelta(days=3)))
    assert {s.status for s in old.notifications} == {"skipped"}
    assert old.notifications[0].reason == "stale: event is 3 days old"


async def test_quiet_hours_defer_to_the_morning(notifier: Notifier, clock: Clock) -> None:
    await notifier.register_shipment(registration())
    night = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)  # 22:30 IST
    clock.now = night
    outcome = await notifier.handle_webhook(webhook(code=8, at=night))
    nine_ist = datetime(2026, 11, 27, 3, 30, tzinfo=UTC)
    assert [s.due_at for s in outcome.notifications] == [nine_ist, nine_ist]
    assert (await notifier.dispatch_due()).total == 0
    clock.now = nine_ist
    assert (await notifier.dispatch_due()).counts == {"sent": 2}


async def test_quiet_hours_setting_overrides_the_rules_file(
    settings: Settings, clock: Clock
) -> None:
    night = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)
    clock.now = night
    off = settings.model_copy(update={"quiet_hours": "off"})
    async with Notifier(off, clock=clock) as n:
        await n.register_shipment(registration())
        outcome = await n.handle_webhook(webhook(code=8, at=night))
        assert [s.due_at for s in outcome.notifications] == [night, night]


async def test_engines_with_other_quiet_hours_defer_each_by_its_own(
    settings: Settings, clock: Clock
) -> None:
    """The deferral is worked out once per instant and window (planning caches it): two engines
    in one process, planning at the same instant, still get each its own window's end."""
    night = datetime(2026, 11, 26, 17, 0, tzinfo=UTC)  # 22:30 IST
    clock.now = night
    due = {}
    for window in ("21:00-09:00", "22:00-08:00", "23:00-07:00"):
        async with Notifier(settings.model_copy(update={"quiet_hours": window}), clock=clock) as n:
            await n.register_shipment(registration(waybill=window))
            outcome = await n.handle_webhook(webhook(waybill=window, code=8, at=night))
            due[window] = {s.due_at for s in outcome.notifications}
    assert due == {
        "21:00-09:00": {datetime(2026, 11, 27, 3, 30, tzinfo=UTC)},  # 09:00 IST
        "22:00-08:00": {datetime(2026, 11, 27, 2, 30, tzinfo=UTC)},  # 08:00 IST
        "23:00-07:00": {night},  # 22:30 is before this window: sent now
    }
