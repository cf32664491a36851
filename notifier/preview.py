"""What an update would send, and why, without touching the database or any provider.

Used by ``notifier preview`` (and later the console): the same planning and rendering as the
real path, on a shipment built from a registration body (or a sample customer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from notifier.errors import TemplateError
from notifier.events import ChannelKind, Consumer, NotificationStatus, Registration, ShipmentUpdate
from notifier.planning import PlannedNotification, ShipmentState, plan
from notifier.rendering import Rendered, Renderer, build_context
from notifier.rules import QuietHours, RuleSet
from notifier.segments import count_segments

SAMPLE_CONSUMER = Consumer(name="Sample Customer", phone="9876543210", email="customer@example.com")


@dataclass(frozen=True, kw_only=True)
class PreviewItem:
    planned: PlannedNotification
    rendered: Rendered | None = None
    error: str = ""
    segments: str = ""


@dataclass(frozen=True, kw_only=True)
class Preview:
    verdict: str
    items: tuple[PreviewItem, ...]
    sample_customer: bool


def sample_registration(update: ShipmentUpdate) -> Registration:
    return Registration(
        cp_id=update.cp_id,
        waybill=update.waybill,
        consumer=SAMPLE_CONSUMER,
        reference_number=update.reference_number,
        order_id=update.order_id,
    )


def preview(
    update: ShipmentUpdate,
    registration: Registration | None,
    *,
    rules: RuleSet,
    renderer: Renderer,
    now: datetime,
    quiet_hours: QuietHours | str | None = "rules",
) -> Preview:
    reg = registration or sample_registration(update)
    state = ShipmentState(
        id=0,
        cp_id=reg.cp_id,
        waybill=reg.waybill,
        account_code=reg.account_code,
        order_type=reg.order_type,
        delivery_type=reg.delivery_type,
        consumer=reg.consumer,
    )
    decision = plan(update, state, rules, now=now, quiet_hours=quiet_hours)
    items = tuple(_render(p, reg, update, rules, renderer, now) for p in decision.notifications)
    return Preview(verdict=decision.verdict, items=items, sample_customer=registration is None)


def _render(
    planned: PlannedNotification,
    reg: Registration,
    update: ShipmentUpdate,
    rules: RuleSet,
    renderer: Renderer,
    now: datetime,
) -> PreviewItem:
    if planned.status is NotificationStatus.SKIPPED:
        return PreviewItem(planned=planned)
    context = build_context(
        registration=reg,
        update=update,
        brand=rules.defaults.brand,
        tracking_url=rules.defaults.tracking_url,
        consumer_phone=planned.recipient or "",
        now=now,
    )
    try:
        rendered = renderer.render(planned.channel, planned.template, context)
    except TemplateError as err:
        return PreviewItem(planned=planned, error=str(err))
    segments = ""
    if planned.channel is not ChannelKind.EMAIL:
        info = count_segments(rendered.text)
        segments = f"{info.characters} characters, {info.encoding}, {info.segments} segment(s)"
    return PreviewItem(planned=planned, rendered=rendered, segments=segments)
