"""``notifier replay``: shadow mode. What would new rules have sent, against what was sent?

The stored updates are planned again, oldest first, each at the moment it was received, with
the new rules and the same guards (duplicates, staleness, no going backwards, dedup keys), in
memory: nothing is written and nothing is sent. The comparison counts, per rule and channel,
the messages each side decided to send (sent, pending or failed; not skipped or cancelled).

Known approximation: a message the old rules planned and a later update cancelled (superseded)
is not counted on the old side, while the replay does not cancel anything.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from notifier.clickpost.models import parse_registration, parse_webhook
from notifier.errors import InputError
from notifier.events import NotificationStatus
from notifier.planning import ShipmentState, plan
from notifier.rules import RuleSet
from notifier.store.log import PlannedRow, StoredEvent

NOT_SENT = {NotificationStatus.SKIPPED, NotificationStatus.CANCELLED}
EXAMPLES = 3

Key = tuple[str, str]  # rule, channel


@dataclass(kw_only=True)
class ReplayReport:
    events: int = 0
    unreadable: int = 0
    before: Counter[Key] = field(default_factory=Counter)
    after: Counter[Key] = field(default_factory=Counter)
    only_before: dict[Key, list[str]] = field(default_factory=lambda: defaultdict(list))
    only_after: dict[Key, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def rows(self) -> list[tuple[str, str, int, int]]:
        keys = sorted(set(self.before) | set(self.after))
        return [(rule, channel, self.before[(rule, channel)], self.after[(rule, channel)])
                for rule, channel in keys]  # fmt: skip


def replay(
    events: Iterable[StoredEvent], planned: Iterable[PlannedRow], rules: RuleSet
) -> ReplayReport:
    report = ReplayReport()
    old: set[tuple[int, str, str]] = set()
    waybills: dict[int, str] = {}
    for row in planned:
        if row.status not in NOT_SENT:
            report.before[(row.rule, row.channel)] += 1
            old.add((row.shipment_id, row.rule, row.channel))
            waybills[row.shipment_id] = row.waybill
    new = _plan_again(events, rules, report, waybills)
    for shipment_id, rule, channel in sorted(old - new):
        _example(report.only_before, (rule, channel), waybills[shipment_id])
    for shipment_id, rule, channel in sorted(new - old):
        _example(report.only_after, (rule, channel), waybills[shipment_id])
    return report


def _plan_again(events: Iterable[StoredEvent], rules: RuleSet, report: ReplayReport,
                waybills: dict[int, str]) -> set[tuple[int, str, str]]:  # fmt: skip
    states: dict[int, ShipmentState] = {}
    seen_keys: set[str] = set()
    sent: set[tuple[int, str, str]] = set()
    for stored in events:
        report.events += 1
        try:
            update = parse_webhook(stored.raw)
            state = states.get(stored.shipment_id) or _state(stored)
        except InputError:  # a purged body (retention) or a registration without consumer
            report.unreadable += 1
            continue
        decision = plan(update, state, rules, now=stored.received_at)
        if decision.advance:
            states[stored.shipment_id] = replace(
                state, stage=decision.stage, status_code=decision.status_code,
                status_at=decision.status_at, state=decision.state,
            )  # fmt: skip
        else:
            states[stored.shipment_id] = state
        for p in decision.notifications:
            if p.status is NotificationStatus.SCHEDULED and p.dedup_key not in seen_keys:
                seen_keys.add(p.dedup_key)
                report.after[(p.rule, p.channel.value)] += 1
                sent.add((stored.shipment_id, p.rule, p.channel.value))
                waybills[stored.shipment_id] = stored.waybill
    return sent


def _state(stored: StoredEvent) -> ShipmentState:
    reg = parse_registration(stored.registration)
    return ShipmentState(
        id=stored.shipment_id, cp_id=reg.cp_id, waybill=reg.waybill,
        account_code=reg.account_code, order_type=reg.order_type,
        delivery_type=reg.delivery_type, consumer=reg.consumer,
    )  # fmt: skip


def _example(into: dict[Key, list[str]], key: Key, waybill: str) -> None:
    if len(into[key]) < EXAMPLES:
        into[key].append(waybill)
