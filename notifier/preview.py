"""What an update would send, and why, without touching the database or any provider.

Used by ``notifier preview`` (and later the console): the same planning and rendering as the
real path, on a shipment built from a registration body (or a sample customer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from notifier.clickpost import codes
from notifier.errors import InputError, TemplateError
from notifier.events import (
    ChannelKind,
    Consumer,
    NotificationStatus,
    Registration,
    Scan,
    ShipmentUpdate,
)
from notifier.languages import language_of
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

    @property
    def language(self) -> str | None:
        """The language the message would go out in (None: the default templates)."""
        return self.rendered.language if self.rendered else None


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
        rendered = renderer.render(
            planned.channel, planned.template, context, language=language_of(reg)
        )
    except TemplateError as err:
        return PreviewItem(planned=planned, error=str(err))
    segments = ""
    if planned.channel is not ChannelKind.EMAIL:
        info = count_segments(rendered.text)
        segments = f"{info.characters} characters, {info.encoding}, {info.segments} segment(s)"
    return PreviewItem(planned=planned, rendered=rendered, segments=segments)


def synthetic_update(
    *,
    status: str,
    ndr: str | None = None,
    event: str | None = None,
    registration: Registration | None,
    now: datetime,
) -> ShipmentUpdate:
    """An update made up from codes (``--status 9 --ndr 1``), scanned just now."""
    code = _code("status", status, codes.status_code_by_name)
    scan = Scan(code=code, description=codes.status(code).name, status="preview",
                location="", timestamp=now)  # fmt: skip
    ndr_code = _code("ndr", ndr, codes.ndr_code_by_name) if ndr else None
    return ShipmentUpdate(
        cp_id=registration.cp_id if registration else 4,
        waybill=registration.waybill if registration else "PREVIEW0001",
        scan=scan, latest=scan, ndr_code=ndr_code,
        ndr_description=codes.ndr(ndr_code).label if ndr_code is not None else None,
        notification_event_id=_code("event", event, codes.event_id_by_name) if event else None,
        reference_number=registration.reference_number if registration else None,
    )  # fmt: skip


def _code(what: str, given: str, by_name: Callable[[str], int | None]) -> int:
    if given.strip().isdigit():
        return int(given)
    code = by_name(given)
    if code is None:
        raise InputError(f"unknown {what} {given!r}: use a number or a name", field=what)
    return code
