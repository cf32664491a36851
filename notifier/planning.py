"""Pure planning: an update, the shipment it is for and the rules → what to send, when, or why not.

No I/O and no clock (``now`` is passed in), so every semantic of design.md is a plain function
call in the tests. The store applies the resulting :class:`Plan` in the webhook's transaction.

The guards, in order:
1. an unregistered (expired) shipment gets nothing more;
2. no going backwards: an update older than the shipment's latest status, or of an earlier stage,
   or after a final status, is stale;
3. the first matching rule decides what to send; each send gets a dedup key (shipment, rule,
   channel, repeat scope) that the database keeps unique;
4. per send: a usable recipient, an event young enough to matter, quiet hours.
Pending messages of an earlier stage are superseded (cancelled) by a later one.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo

from notifier import recipients
from notifier.clickpost import codes
from notifier.events import ChannelKind, Consumer, NotificationStatus, Scan, ShipmentUpdate
from notifier.matching import Facts, first_match
from notifier.rules import QuietHours, QuietHoursPolicy, Repeat, Rule, RuleSet, Send


# Not frozen: built for every update ingested, and a frozen dataclass's __init__ costs three
# times a plain one's (docs/performance.md).
@dataclass(kw_only=True)
class ShipmentState:
    """What planning needs to know about a registered shipment."""

    id: int
    cp_id: int
    waybill: str
    account_code: str | None = None
    order_type: str | None = None
    delivery_type: str | None = None
    consumer: Consumer
    stage: int | None = None
    status_code: int | None = None
    status_at: datetime | None = None
    state: str = "active"  # active | terminal | unregistered


# Not frozen: built for every update ingested, and a frozen dataclass's __init__ costs three
# times a plain one's (docs/performance.md).
@dataclass(kw_only=True)
class PlannedNotification:
    rule: str
    channel: ChannelKind
    template: str
    dedup_key: str
    recipient: str | None
    recipient_masked: str
    status: NotificationStatus  # SCHEDULED, or SKIPPED with a reason
    reason: str
    due_at: datetime
    expires_at: datetime | None
    trigger: Scan
    trigger_stage: int | None


@dataclass(frozen=True, kw_only=True)
class Supersede:
    """Cancel pending messages triggered before ``before`` at a stage up to ``max_stage``."""

    before: datetime
    max_stage: int
    channels: frozenset[ChannelKind] | None  # None: every channel (a final status)
    reason: str

    def covers(self, channel: str, trigger_at: datetime, trigger_stage: int | None) -> bool:
        """Whether a pending message with these facts is superseded."""
        return (
            trigger_at < self.before
            and trigger_stage is not None
            and trigger_stage <= self.max_stage
            and (self.channels is None or ChannelKind(channel) in self.channels)
        )


# Not frozen: built for every update ingested, and a frozen dataclass's __init__ costs three
# times a plain one's (docs/performance.md).
@dataclass(kw_only=True)
class Plan:
    """The decision for one update: the verdict in words, the new state, what to send."""

    verdict: str
    advance: bool
    stage: int | None = None
    status_code: int | None = None
    status_at: datetime | None = None
    state: str = "active"
    rule: str | None = None
    notifications: tuple[PlannedNotification, ...] = ()
    supersede: Supersede | None = None


def plan(
    update: ShipmentUpdate,
    shipment: ShipmentState,
    rules: RuleSet,
    *,
    now: datetime,
    quiet_hours: QuietHours | str | None = "rules",
) -> Plan:
    """Decide what ``update`` means for ``shipment``. ``quiet_hours`` overrides the rules file's
    window when given (``None`` turns quiet hours off)."""
    trigger = update.latest
    info = codes.status(trigger.code)
    stale = _staleness(trigger, info, shipment)
    if stale:
        return Plan(verdict=stale, advance=False)
    rule = first_match(rules.for_status(trigger.code), _facts(update, shipment))
    planned: tuple[PlannedNotification, ...] = ()
    if rule is None:
        verdict = f"no rule for {info.name} ({trigger.code})"
    else:
        verdict = f"rule {rule.name} matched {info.name} ({trigger.code})"
        window = rules.defaults.quiet_hours if quiet_hours == "rules" else quiet_hours
        assert not isinstance(window, str)
        planned = tuple(
            _plan_send(send, rule, update, shipment, rules, now=now, window=window)
            for send in rule.send
        )
    return Plan(
        verdict=verdict,
        advance=True,
        stage=info.stage if info.stage is not None else shipment.stage,
        status_code=trigger.code,
        status_at=trigger.timestamp,
        state="terminal" if info.terminal else "active",
        rule=rule.name if rule else None,
        notifications=planned,
        supersede=_supersede(trigger, info, planned),
    )


def _staleness(trigger: Scan, info: codes.StatusCode, shipment: ShipmentState) -> str:
    """Why the update must not send anything, or "" when it may."""
    if shipment.state == "unregistered":
        return "ignored: shipment was unregistered"
    current = codes.status(shipment.status_code) if shipment.status_code is not None else None
    if current is None or shipment.status_at is None:
        return ""
    same = trigger.code == shipment.status_code and trigger.timestamp == shipment.status_at
    if same:
        return ""
    if trigger.timestamp < shipment.status_at:
        return f"stale: older than {current.name} at {shipment.status_at:%Y-%m-%d %H:%M}Z"
    if shipment.state == "terminal":
        return f"stale: shipment already reached {current.name}, a final status"
    if info.stage is not None and shipment.stage is not None and info.stage < shipment.stage:
        return f"stale: {info.name} comes before {current.name}, which the shipment reached"
    return ""


def _facts(update: ShipmentUpdate, shipment: ShipmentState) -> Facts:
    return Facts(
        clickpost_status_code=update.latest.code,
        ndr_status_code=update.ndr_code,
        notification_event_id=update.notification_event_id,
        cp_id=update.cp_id,
        account_code=update.account_code or shipment.account_code,
        order_type=shipment.order_type,
        delivery_type=shipment.delivery_type,
        is_rvp=bool(update.is_rvp) or shipment.delivery_type == "RVP",
    )


def dedup_key(shipment_id: int, rule: Rule, channel: ChannelKind, trigger: Scan) -> str:
    """Shipment, rule, channel and the rule's repeat scope: the identity of one message.

    A day is the scan's calendar date as Clickpost wrote it (its zone label is unreliable).
    """
    if rule.repeat is Repeat.ONCE:
        scope = "once"
    elif rule.repeat is Repeat.PER_ATTEMPT:
        scope = f"attempt {trigger.code}@{trigger.wall_clock}"
    else:
        scope = f"day {trigger.timestamp.date().isoformat()}"
    return f"{shipment_id}:{rule.name}:{channel.value}:{scope}"


def _plan_send(
    send: Send,
    rule: Rule,
    update: ShipmentUpdate,
    shipment: ShipmentState,
    rules: RuleSet,
    *,
    now: datetime,
    window: QuietHours | None,
) -> PlannedNotification:
    trigger = update.latest
    who = _recipient(send.channel, shipment.consumer, rules.defaults.phone_region)
    max_age = rule.max_event_age or rules.defaults.max_event_age
    expires_at = trigger.timestamp + max_age if max_age else None
    due, reason = _due(now + rule.delay, rule, rules, window)
    status = NotificationStatus.SCHEDULED
    if not who.usable:
        status, reason = NotificationStatus.SKIPPED, who.reason
    elif expires_at is not None and now > expires_at:
        age = _human(now - trigger.timestamp)
        status, reason = NotificationStatus.SKIPPED, f"stale: event is {age} old"
    return PlannedNotification(
        rule=rule.name,
        channel=send.channel,
        template=send.template,
        dedup_key=dedup_key(shipment.id, rule, send.channel, trigger),
        recipient=who.address,
        recipient_masked=who.masked,
        status=status,
        reason=reason,
        due_at=due,
        expires_at=expires_at,
        trigger=trigger,
        trigger_stage=codes.status(trigger.code).stage,
    )


def _recipient(channel: ChannelKind, consumer: Consumer, region: str) -> recipients.Recipient:
    if channel is ChannelKind.EMAIL:
        return recipients.email(consumer.email)
    if consumer.phone_e164 and consumer.phone_region == region:
        return recipients.checked_phone(consumer.phone_e164)
    return recipients.phone(consumer.phone, region=region)


def _due(
    at: datetime, rule: Rule, rules: RuleSet, window: QuietHours | None
) -> tuple[datetime, str]:
    """When to send: ``at``, or the end of the quiet window when the rule defers."""
    if window is None or rule.quiet_hours is QuietHoursPolicy.SEND:
        return at, ""
    return _deferred(at, at.tzinfo, window, rules.defaults.timezone)


@functools.lru_cache(maxsize=256)
def _deferred(
    at: datetime, zone: tzinfo | None, window: QuietHours, local_zone: tzinfo
) -> tuple[datetime, str]:
    """``at`` (in ``zone``), or the end of the quiet window it falls in, and why. Worked out
    once per instant: a batch plans all its messages at the same ``now`` (a third of the
    planning's time went here, every message computing the same answer)."""
    local = at.astimezone(local_zone)
    if not window.contains(local.time()):
        return at, ""
    end = window.next_end(local)
    return end.astimezone(zone), f"quiet hours: deferred to {end:%H:%M} local time"


def _supersede(
    trigger: Scan, info: codes.StatusCode, planned: Sequence[PlannedNotification]
) -> Supersede | None:
    if info.stage is None:
        return None
    channels = frozenset(p.channel for p in planned if p.status is NotificationStatus.SCHEDULED)
    if not info.terminal and not channels:
        return None
    return Supersede(
        before=trigger.timestamp,
        max_stage=info.stage,
        channels=None if info.terminal else channels,
        reason=f"superseded by {info.name} ({trigger.code})",
    )


def parse_quiet_hours(text: str) -> QuietHours | None:
    """``"21:00-09:00"`` → a window; ``"off"`` → None. For ``NOTIFIER_QUIET_HOURS``."""
    if text.strip().lower() == "off":
        return None
    try:
        start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError as err:
        raise ValueError(f"quiet hours must be HH:MM-HH:MM or off, not {text!r}") from err
    return QuietHours(start=start, end=end)


def _human(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.0f} days" if hours >= 48 else f"{hours:.0f}h"
