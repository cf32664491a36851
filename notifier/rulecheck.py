"""Which updates reach which rule, found with made-up updates ("samples") for ``notifier check``.

A template can only be trusted once it has rendered for every kind of update its rule can
fire on, with the data real shipments sometimes lack. A :class:`Sample` is one such update of
one shipment: the facts rules test (status, NDR code, order type...) and the variant of the
data templates get (full, or one optional detail absent). Contexts are built with
:func:`notifier.rendering.build_context`, the code a real send uses, with the brand and
tracking URL of the rules file being checked.

The same samples tell which rules can never fire and which customer-facing statuses no rule
covers; a shadowed rule is also found from the conditions alone (:func:`superset`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

from notifier import yamlsource
from notifier.clickpost import codes
from notifier.errors import Problem
from notifier.events import Consumer, Registration, Scan, ShipmentUpdate
from notifier.matching import Facts, first_match
from notifier.rendering import build_context
from notifier.rules import Condition, Defaults, RuleSet

#: Statuses a customer expects a message about. Left out on purpose: 5 InTransit and 1004
#: DestinationHubIn (a scan at every hub: a message each would be spam), 1-2 and 28 (before
#: dispatch), 3 PickupFailed and 13/15 RTO-OutForDelivery/RTO-Failed (the courier and the
#: seller's warehouse, not the customer), 7 NotServiceable (followed by an RTO code, which is
#: listed), 19/20/26/27 (courier holds and delays, usually followed by one of these), 23 Expired,
#: 30-32 exchanges and 101 returns (separate flows). The RTO start is 11, 12 or 21, whichever
#: Clickpost sends first, so all three are listed.
CUSTOMER_FACING_CODES: tuple[int, ...] = (4, 6, 8, 9, 10, 11, 12, 14, 16, 17, 18, 21, 25)

ORDER_TYPES = ("COD", "PREPAID")

_NOW = datetime(2025, 8, 5, 4, 12, tzinfo=UTC)  # 09:42 IST
_CONSUMER = Consumer(name="Priya Sharma", phone="09876543210", email="priya.sharma@example.in")
_AMOUNT = Decimal("1299.00")
_REGISTRATION = Registration(
    cp_id=4,
    waybill="SF18399217NER",
    consumer=_CONSUMER,
    reference_number="ACME-240805-17",
    order_id="ACME-240805-17",
    item="Cotton Kurta Set (Blue, M)",
    invoice_value=_AMOUNT,
    drop_pincode="400053",
    drop_address="Flat 302, Sai Krupa CHS, Lokhandwala, Andheri West, Mumbai",
    order_date=datetime(2025, 8, 1, 14, 30, tzinfo=UTC),
    ship_date=datetime(2025, 8, 3, 6, 0, tzinfo=UTC),
)


@dataclass(frozen=True)
class _Variant:
    """Sample data with one optional detail absent: real shipments lack each at times."""

    description: str
    registration: Mapping[str, Any] = field(default_factory=dict)
    update: Mapping[str, Any] = field(default_factory=dict)
    cod_only: bool = False


VARIANTS: dict[str, _Variant] = {
    "full": _Variant(""),
    "no_edd": _Variant("no expected delivery date", update={"edd": None}),
    "no_reference": _Variant(
        "no order or reference number", {"reference_number": None, "order_id": None}
    ),
    "no_email": _Variant("no email address", {"consumer": replace(_CONSUMER, email="")}),
    "no_name": _Variant("no customer name", {"consumer": replace(_CONSUMER, name="")}),
    "no_cod_amount": _Variant("no COD amount", {"cod_amount": None}, cod_only=True),
}


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One made-up update of one shipment: the facts rules test and the data templates get."""

    status: int
    ndr: int | None
    order_type: str
    event: int | None = None
    cp_id: int = 4
    account_code: str = "Shadowfax Surface"
    delivery_type: str = "FORWARD"
    is_rvp: bool = False
    variant: str = "full"

    @property
    def facts(self) -> Facts:
        """As planning gathers them (``is_rvp`` from the update or the delivery type)."""
        return Facts(
            clickpost_status_code=self.status,
            ndr_status_code=self.ndr,
            notification_event_id=self.event,
            cp_id=self.cp_id,
            account_code=self.account_code,
            order_type=self.order_type,
            delivery_type=self.delivery_type,
            is_rvp=self.is_rvp or self.delivery_type == "RVP",
        )

    def describe(self) -> str:
        """``status Delivered (8), COD order, no NDR reason, no expected delivery date``."""
        ndr = f"NDR {codes.ndr(self.ndr).name} ({self.ndr})" if self.ndr is not None else ""
        event = codes.notification_event(self.event).name if self.event is not None else ""
        parts = (
            f"status {codes.status(self.status).name} ({self.status})",
            f"{self.order_type} order",
            ndr or "no NDR reason",
            f"notification event {event}" if event else "",
            VARIANTS[self.variant].description,
        )
        return ", ".join(part for part in parts if part)

    def context(self, defaults: Defaults) -> dict[str, Any]:
        """What templates see, built by the same code as a real send."""
        variant = VARIANTS[self.variant]
        shipment: dict[str, Any] = {
            "cp_id": self.cp_id,
            "account_code": self.account_code,
            "order_type": self.order_type,
            "delivery_type": self.delivery_type,
            "cod_amount": _AMOUNT if self.order_type == "COD" else None,
        }
        registration = replace(_REGISTRATION, **(shipment | dict(variant.registration)))
        scan = Scan(code=self.status, description=codes.status(self.status).name,
                    location="Mumbai_DC", timestamp=_NOW)  # fmt: skip
        optional: dict[str, Any] = {"edd": date(2025, 8, 7), **variant.update}
        update = ShipmentUpdate(
            cp_id=self.cp_id,
            waybill=registration.waybill,
            scan=scan,
            latest=scan,
            notification_event_id=self.event,
            ndr_code=self.ndr,
            ndr_description=codes.ndr(self.ndr).label if self.ndr is not None else None,
            is_rvp=self.is_rvp,
            **optional,
        )
        return build_context(
            registration=registration,
            update=update,
            brand=defaults.brand,
            tracking_url=defaults.tracking_url,
            consumer_phone="+919876543210",
            now=_NOW,
        )


def ndr_codes(wanted: frozenset[int] | None, status: int) -> list[int | None]:
    """Clickpost sends an NDR reason only with status 9, and sometimes none at all."""
    if status not in codes.CARRIES_NDR:
        return [None]
    if wanted:
        return list(sorted(wanted))
    return [None, *codes.NDR_CODES]


def matching(when: Condition) -> Iterator[Sample]:
    """Full-data samples that satisfy ``when``: each status, NDR code and order type it allows
    (all documented ones where it asks nothing), the other facts as it asks for them."""
    delivery = when.delivery_type or ("RVP" if when.is_rvp else "FORWARD")
    extras: dict[str, Any] = {
        "event": min(when.notification_event_id) if when.notification_event_id else None,
        "cp_id": min(when.cp_id) if when.cp_id else 4,
        "account_code": min(when.account_code) if when.account_code else "Shadowfax Surface",
        "delivery_type": delivery,
        "is_rvp": delivery == "RVP" if when.is_rvp is None else when.is_rvp,
    }
    order_types = (when.order_type,) if when.order_type else ORDER_TYPES
    for status in sorted(when.clickpost_status_code or codes.STATUS_CODES):
        for ndr in ndr_codes(when.ndr_status_code, status):
            for order_type in order_types:
                yield Sample(status=status, ndr=ndr, order_type=order_type, **extras)


def firing(rules: RuleSet, index: int) -> list[Sample]:
    """The samples rule ``index`` is the first match for, with each detail absent in turn:
    a general rule is not tried on the updates a specific rule above it takes."""
    rule = rules.rules[index]
    bases = (s for s in matching(rule.when) if first_match(rules.rules, s.facts) is rule)
    return [
        replace(base, variant=name)
        for base in bases
        for name, variant in VARIANTS.items()
        if base.order_type == "COD" or not variant.cod_only
    ]


# ---- rules that never fire, statuses no rule covers ----------------------------------------


def superset(wide: Condition, narrow: Condition) -> bool:
    """True when every update ``narrow`` matches is matched by ``wide``."""
    return all(_covers(getattr(wide, f.name), getattr(narrow, f.name)) for f in fields(Condition))


def _covers(wide: object, narrow: object) -> bool:
    if wide is None:
        return True
    if narrow is None:
        return False
    return _as_set(narrow) <= _as_set(wide)


def _as_set(value: object) -> frozenset[object]:
    return value if isinstance(value, frozenset) else frozenset({value})


def unreachable(
    rules: RuleSet, doc: RulesFile, fired: Mapping[int, list[Sample]]
) -> Iterator[Problem]:
    """Enabled rules that never send: shadowed by one earlier rule (named, so the fix is clear),
    else reached by none of the samples ``fired`` lists for them."""
    enabled = [(i, r) for i, r in enumerate(rules.rules) if r.enabled]
    for position, (index, rule) in enumerate(enabled):
        at = ("rules", index, "name")
        shadow = next((e for _, e in enabled[:position] if superset(e.when, rule.when)), None)
        if shadow is not None:
            message = f"rule {rule.name} is shadowed by rule {shadow.name} (line {shadow.line}):"
            message += " that rule catches every update this one would, so this one never sends"
            hint = f"move {rule.name} above {shadow.name}, or remove it"
            yield doc.warning(at, message, hint)
        elif not fired[index]:
            message = f"rule {rule.name} never fires: no sample update reaches it"
            message += " (every documented status, COD and PREPAID orders)"
            yield doc.warning(at, message, _never_fires_hint(rule.when))


def _never_fires_hint(when: Condition) -> str:
    statuses = when.clickpost_status_code
    if when.ndr_status_code and statuses is not None and not statuses & codes.CARRIES_NDR:
        return "Clickpost sends an NDR reason only with status 9 (FailedDelivery)"
    return "the rules above it take all its updates between them: move it higher or narrow them"


def coverage(rules: RuleSet, doc: RulesFile) -> Iterator[Problem]:
    """Customer-facing statuses for which some update (COD or PREPAID, any NDR reason, with or
    without a notification event) matches no rule: the customer would hear nothing."""
    for code in CUSTOMER_FACING_CODES:
        samples = [
            Sample(status=code, ndr=ndr, order_type=order_type, event=event)
            for ndr in ndr_codes(None, code)
            for order_type in ORDER_TYPES
            for event in dict.fromkeys((None, codes.status(code).event))
        ]
        missed = [s for s in samples if first_match(rules.rules, s.facts) is None]
        if missed:
            yield doc.warning(("rules",), *_uncovered(rules, code, missed, samples), key=True)


def _uncovered(
    rules: RuleSet, code: int, missed: list[Sample], samples: list[Sample]
) -> tuple[str, str]:
    """Message and hint: nothing at all, or only some updates (COD only, one courier...)."""
    name = f"status {code} ({codes.status(code).name})"
    asking = [
        r.name for r in rules.rules if r.enabled and code in (r.when.clickpost_status_code or ())
    ]
    general = "add a general rule for it below the specific ones"
    if len(missed) < len(samples):
        return f"no rule covers {name} for some updates, e.g. {missed[0].describe()}", general
    if asking:
        names = ", ".join(asking[:3]) + (f" and {len(asking) - 3} more" if len(asking) > 3 else "")
        return (
            f"no rule covers {name} for most updates: only {names}, with more conditions",
            general,
        )
    return f"no rule covers {name}", "fine if intended; otherwise add a rule"


class RulesFile:
    """Where things are in rules.yaml, parsed only once a rule-level warning needs a place:
    load_rules keeps no positions, and parsing 200 rules again takes a sixth of the check."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @cached_property
    def doc(self) -> yamlsource.Document:
        return yamlsource.load(self.path.read_text(encoding="utf-8"), str(self.path))

    def warning(self, at: yamlsource.Loc, message: str, hint: str, *, key: bool = False) -> Problem:
        return self.doc.at(at, message, hint, key=key, severity="warning")
