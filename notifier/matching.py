"""Pure rule matching: the facts of one update for one shipment → the rule that fires.

No I/O, no clock. Rules are tried top to bottom; the first enabled rule whose conditions all
hold wins (rules.py documents this for the people who edit the file).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from notifier.rules import Condition, Rule


# Not frozen: built for every update ingested, and a frozen dataclass's __init__ costs three
# times a plain one's (docs/performance.md).
@dataclass(kw_only=True)
class Facts:
    """What conditions can test, gathered from the update and the registered shipment."""

    clickpost_status_code: int
    ndr_status_code: int | None
    notification_event_id: int | None
    cp_id: int
    account_code: str | None
    order_type: str | None
    delivery_type: str | None
    is_rvp: bool


def holds(condition: Condition, facts: Facts) -> bool:
    """True when every condition the rule states holds; an unstated one (None) always holds."""
    for name, wanted in condition.stated:
        actual = getattr(facts, name)
        matched = actual in wanted if isinstance(wanted, frozenset) else actual == wanted
        if not matched:
            return False
    return True


def first_match(rules: Iterable[Rule], facts: Facts) -> Rule | None:
    return next((r for r in rules if r.enabled and holds(r.when, facts)), None)
