"""``notifier simulate``: play whole shipment journeys into a notifier server, as Clickpost would.

A journey is a list of courier scans (picked up, in transit, out for delivery, …) and a way of
delivering their webhooks: one after another, all at once (a courier uploading a batch), out of
order, or each twice. Clickpost does all of these (clickpost-facts.md: "order is not guaranteed;
duplicates happen"; "when a courier sends several scans at once, several webhooks arrive whose
latest_status is the same").

Bodies look like real ones (examples/clickpost/): the outer scan, ``additional.latest_status``
with bucket and description, NDR fields with code 9 (null otherwise), ``courier_partner_edd``,
``order_id``, ``is_rvp``, ``Z`` timestamps. Scans are spaced as couriers space them (a day in
transit, out for delivery in the morning) and the last one is a few minutes old, so the newest
news is never too old to send. Earlier scans of long journeys can be older than a rule's
``max_event_age`` (the first out-for-delivery of ``ndr_then_delivered`` is a day old when the
whole journey is played at once): the engine then logs them as stale, as it would a late replay.

``simulate()`` registers each shipment first (``POST {api_url}/shipments``) when ``api_url`` is
given, then posts its webhooks; ``count`` shipments run concurrently (bounded), paced at
``rate`` webhooks a second overall. :func:`journey_bodies` gives the bodies to tests directly.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx

from notifier.clickpost import codes

__all__ = [
    "JOURNEYS",
    "Journey",
    "JourneyBodies",
    "SimulationReport",
    "Step",
    "add_simulate_arguments",
    "journey_bodies",
    "run_from_args",
    "simulate",
]


@dataclass(frozen=True, kw_only=True)
class Step:
    """One courier scan: its code, how long before the journey's last scan, and where."""

    code: int
    before_end: timedelta
    where: str = "hub"  # origin | hub | destination
    status: str = ""  # the courier's own words; default: the code's label
    ndr: int | None = None  # with code 9: why delivery failed


@dataclass(frozen=True, kw_only=True)
class Journey:
    """Scans plus how their webhooks arrive.

    ``burst``: every webhook at once, each with ``latest_status`` = the last scan (a courier
    uploading a batch). ``send_order``: indexes of ``steps`` in arrival order. ``copies``: each
    webhook sent that many times in a row (Clickpost retrying one we answered slowly).
    """

    name: str
    description: str
    steps: tuple[Step, ...]
    cod: bool = False
    burst: bool = False
    send_order: tuple[int, ...] | None = None
    copies: int = 1


def _h(hours: float) -> timedelta:
    return timedelta(hours=hours)


_FORWARD = (
    Step(code=4, before_end=_h(30), where="origin", status="Shipment picked up"),
    Step(code=5, before_end=_h(20), status="Bag received at facility"),
    Step(code=6, before_end=_h(3), where="destination", status="Out for delivery"),
    Step(code=8, before_end=_h(0), where="destination", status="Delivered to consignee"),
)

# Two out-for-delivery scans 24 h apart fall on two dates, as a "next day" attempt does: the
# out_for_delivery rule repeats once per day (rules.yaml).
_NDR = (
    Step(code=6, before_end=_h(27.1), where="destination", status="Out for delivery"),
    Step(code=9, before_end=_h(21), where="destination", status="Consignee unavailable", ndr=1),
    Step(code=6, before_end=_h(3.1), where="destination", status="Out for delivery"),
    Step(code=8, before_end=_h(0), where="destination", status="Delivered to consignee"),
)

_RTO = (
    Step(code=9, before_end=_h(48), where="destination", status="Consignee unavailable", ndr=1),
    Step(code=9, before_end=_h(23), where="destination", status="Consignee refused", ndr=2),
    Step(code=11, before_end=_h(22), where="destination", status="RTO initiated"),
    Step(code=21, before_end=_h(10), status="RTO in transit"),
    Step(code=14, before_end=_h(0), where="origin", status="RTO delivered to shipper"),
)

_LOST = (
    Step(code=4, before_end=_h(60), where="origin", status="Shipment picked up"),
    Step(code=5, before_end=_h(40), status="Bag received at facility"),
    Step(code=16, before_end=_h(0), status="Shipment lost in transit"),
)

JOURNEYS: dict[str, Journey] = {
    j.name: j
    for j in (
        Journey(name="happy", description="picked up, in transit, out for delivery, delivered",
                steps=_FORWARD),
        Journey(name="cod", description="the happy journey for a cash-on-delivery order",
                steps=_FORWARD, cod=True),
        Journey(name="ndr_then_delivered", steps=_NDR,
                description="out for delivery, failed (customer unavailable), again the next "
                "day, delivered"),
        Journey(name="rto", steps=_RTO,
                description="failed twice, RTO requested, RTO in transit, RTO delivered"),
        Journey(name="lost", description="picked up, in transit, lost", steps=_LOST),
        Journey(name="burst", steps=_FORWARD, burst=True,
                description="four webhooks at once, all with latest_status Delivered"),
        Journey(name="out_of_order", steps=_FORWARD, send_order=(0, 1, 3, 2),
                description="delivered arrives before out for delivery"),
        Journey(name="duplicates", steps=_FORWARD, copies=2,
                description="the happy journey with every webhook sent twice"),
    )
}  # fmt: skip


# --- bodies ---------------------------------------------------------------------------------

Body = dict[str, Any]

_COURIERS: dict[int, str] = {1: "Fedex Domestic", 4: "Delhivery Surface", 14: "Ecom Express"}
_PLACES = (  # (city, hub in the courier's spelling, pincode)
    ("Bengaluru", "Bengaluru_Koramangala_Dc (Karnataka)", "560034"),
    ("Mumbai", "Mumbai_Andheri_DC (Maharashtra)", "400053"),
    ("Delhi", "Delhi_Okhla_HB (Delhi)", "110020"),
    ("Lucknow", "Lucknow_Aliganj (Uttar Pradesh)", "226024"),
    ("Kolkata", "Kolkata_Dankuni_HB (West Bengal)", "712311"),
    ("Hyderabad", "Hyderabad_Shamshabad_HB (Telangana)", "501218"),
)
_MOBILE_PREFIXES = ("98", "97", "99", "94", "90", "70")  # valid Indian mobiles
_NAMES = ("Priya Sharma", "Rahul Verma", "Ananya Patnaik", "Mohd. Imran", "Kavya Nair")
_ITEMS = (("Cotton kurta", 1299), ("Steel water bottle", 649), ("Handloom saree", 3450))


@dataclass(frozen=True, kw_only=True)
class JourneyBodies:
    """A shipment's awb-register body and its webhooks, in waves: the bodies of one wave are
    posted at once, the waves one after another."""

    registration: Body
    waves: tuple[tuple[Body, ...], ...]

    @property
    def webhooks(self) -> list[Body]:
        """Every webhook in the order they are sent."""
        return [body for wave in self.waves for body in wave]


def journey_bodies(
    name: str, *, waybill: str, cp_id: int = 4, now: datetime | None = None, seed: int | None = None
) -> JourneyBodies:
    """The bodies of journey ``name`` for one shipment, the last scan a few minutes before
    ``now``. The same ``seed`` gives the same bodies."""
    journey = JOURNEYS[name]
    rng = random.Random(seed)
    end = (now or datetime.now(UTC)) - timedelta(minutes=rng.uniform(2, 8))
    shipment = _Shipment.make(rng, waybill=waybill, cp_id=cp_id, cod=journey.cod)
    scans = [_scan(step, shipment, end - step.before_end + _jitter(rng)) for step in journey.steps]
    return JourneyBodies(
        registration=shipment.registration(end), waves=_waves(journey, shipment, scans)
    )


def _jitter(rng: random.Random) -> timedelta:
    """Seconds, so scans do not all fall on round minutes; too small to reorder steps."""
    return timedelta(seconds=rng.randrange(0, 50))


@dataclass(frozen=True, kw_only=True)
class _Shipment:
    waybill: str
    cp_id: int
    order_id: str
    reference: str
    name: str
    phone: str
    item: str
    value: int
    cod: bool
    places: dict[str, tuple[str, str, str]]

    @classmethod
    def make(cls, rng: random.Random, *, waybill: str, cp_id: int, cod: bool) -> _Shipment:
        origin, hub, destination = rng.sample(_PLACES, 3)
        item, value = rng.choice(_ITEMS)
        number = rng.randrange(100000, 999999)
        return cls(waybill=waybill, cp_id=cp_id, order_id=f"ORD{number}",
                   reference=f"ACME-{number}", name=rng.choice(_NAMES),
                   phone=rng.choice(_MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}", item=item,
                   value=value, cod=cod,
                   places={"origin": origin, "hub": hub, "destination": destination})  # fmt: skip

    def registration(self, end: datetime) -> Body:
        """awb-register, as the merchant's shop sends it (clickpost-tracking-api.md)."""
        city, _, pincode = self.places["destination"]
        order_date = (end - timedelta(days=3)).astimezone(_IST).replace(microsecond=0)
        local = self.name.split()[-1].lower().strip(".")
        return {
            "waybill": self.waybill, "cp_id": self.cp_id,
            "account_code": _COURIERS.get(self.cp_id, "Courier"),
            "consumer_details": {"name": self.name, "phone": self.phone,
                                 "email": f"{local}.{self.order_id.lower()}@example.com"},
            "shipment_info": {"item": self.item, "order_type": "COD" if self.cod else "PREPAID",
                              "invoice_value": self.value,
                              "cod_amount": self.value if self.cod else 0,
                              "reference_number": self.reference, "length": 10, "height": 10,
                              "breadth": 10, "weight": 500, "drop_pincode": pincode,
                              "pickup_pincode": self.places["origin"][2],
                              "delivery_type": "FORWARD",
                              "drop_address": f"12 MG Road, {city} {pincode}"},
            "additional": {"order_id": self.order_id, "order_date": order_date.isoformat(),
                           "ship_date": (order_date + timedelta(hours=20)).isoformat()},
        }  # fmt: skip


_IST = timezone(timedelta(hours=5, minutes=30), "IST")  # shops send order dates in IST


def _z(at: datetime) -> str:
    """Clickpost's webhook form: ``2019-05-06T15:01:00Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scan(step: Step, shipment: _Shipment, at: datetime) -> Body:
    """The scan fields shared by the outer body and ``latest_status``."""
    info = codes.status(step.code)
    city, hub, _ = shipment.places[step.where]
    bucket = info.bucket
    return {
        "clickpost_status_code": step.code, "clickpost_status_description": info.name,
        "clickpost_status_bucket": int(bucket) if bucket else None,
        "clickpost_status_bucket_description": bucket.label if bucket else None,
        "status": step.status or info.label, "location": hub, "remark": info.label,
        "timestamp": _z(at), "city": city, "ndr": step.ndr,
    }  # fmt: skip


def _webhook(scan: Body, latest: Body, shipment: _Shipment, edd: str) -> Body:
    """A webhook about ``scan`` sent when ``latest`` was the shipment's latest status."""
    outer = {k: scan[k] for k in _OUTER}
    ndr = scan["ndr"]
    return {
        "waybill": shipment.waybill, "cp_id": shipment.cp_id, **outer,
        "clickpost_city": scan["city"], "account_code": _COURIERS.get(shipment.cp_id, "Courier"),
        "additional": {
            "latest_status": {**{k: latest[k] for k in _LATEST},
                              "reference_number": shipment.reference},
            "ndr_status_code": ndr,
            "ndr_status_description": codes.ndr(ndr).label if ndr is not None else None,
            "courier_partner_edd": edd, "order_id": shipment.order_id, "is_rvp": False,
        },
    }  # fmt: skip


_OUTER = ("clickpost_status_code", "clickpost_status_description", "status", "location",
          "timestamp", "remark")  # fmt: skip
_LATEST = (*_OUTER, "clickpost_status_bucket", "clickpost_status_bucket_description")


def _waves(
    journey: Journey, shipment: _Shipment, scans: Sequence[Body]
) -> tuple[tuple[Body, ...], ...]:
    """Each scan's webhook, grouped and ordered the way the journey delivers them."""
    last = scans[-1]
    edd = last["timestamp"][:10]
    if journey.burst:
        return (tuple(_webhook(s, last, shipment, edd) for s in scans),)
    order = journey.send_order or range(len(scans))
    bodies = [_webhook(scans[i], scans[i], shipment, edd) for i in order]
    return tuple((body,) for body in bodies for _ in range(journey.copies))


# --- sending --------------------------------------------------------------------------------


@dataclass(kw_only=True)
class SimulationReport:
    """What happened: webhook responses by HTTP status (0: no response) and by the
    ``status`` notifier answered (accepted, duplicate), registrations by HTTP status."""

    journey: str
    shipments: int = 0
    webhooks: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    registrations: Counter[int] = field(default_factory=Counter)
    waybills: list[str] = field(default_factory=list, repr=False)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """Every webhook answered 200 and every registration 2xx."""
        registered = all(200 <= status < 300 for status in self.registrations)
        return set(self.statuses) <= {200} and registered and not self.errors

    def summary(self) -> str:
        rate = self.webhooks / self.elapsed if self.elapsed else 0.0
        lines = [
            f"journey {self.journey}: {self.shipments} shipments, {self.webhooks} webhooks "
            f"in {self.elapsed:.2f}s ({rate:.1f}/s)",
            f"webhook responses: {_counts(self.statuses)}",
            f"notifier said: {_counts(self.outcomes)}",
        ]
        if self.registrations:
            lines.append(f"registrations: {_counts(self.registrations)}")
        if self.latencies:
            lines.append("latency: " + ", ".join(
                f"{name} {_percentile(self.latencies, q) * 1000:.1f} ms"
                for name, q in (("p50", 0.5), ("p95", 0.95), ("max", 1.0))))  # fmt: skip
        lines += [f"error: {e}" for e in self.errors]
        return "\n".join(lines)


def _counts(counter: Counter[Any]) -> str:
    return ", ".join(f"{k}: {n}" for k, n in sorted(counter.items(), key=str)) or "none"


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Pacer:
    """Spaces request starts ``1/rate`` seconds apart across all workers (None: no pacing)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next = time.monotonic()

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(self.next, now)
        self.next = slot + self.interval
        await asyncio.sleep(slot - now)


_MAX_ERRORS = 10


@dataclass(kw_only=True)
class _Run:
    http: httpx.AsyncClient
    report: SimulationReport
    url: str
    webhook_key: str
    api_url: str | None
    api_token: str | None
    pacer: _Pacer
    gate: asyncio.Semaphore

    async def shipment(self, bodies: JourneyBodies) -> None:
        self.report.waybills.append(bodies.registration["waybill"])
        if self.api_url:
            await self.register(bodies.registration)
        for wave in bodies.waves:
            await asyncio.gather(*(self.post(body) for body in wave))
        self.report.shipments += 1

    async def register(self, body: Body) -> None:
        token = {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}
        async with self.gate:
            status, _ = await self.send(f"{self.api_url}/shipments", body, token)
        self.report.registrations[status] += 1

    async def post(self, body: Body) -> None:
        await self.pacer.wait()
        async with self.gate:
            started = time.monotonic()
            status, answer = await self.send(self.url, body, {"webhook_key": self.webhook_key})
            self.report.latencies.append(time.monotonic() - started)
        self.report.webhooks += 1
        self.report.statuses[status] += 1
        self.report.outcomes[str(answer.get("status", "?")) if status == 200 else "refused"] += 1

    async def send(self, url: str, body: Body, headers: dict[str, str]) -> tuple[int, Body]:
        """(HTTP status, JSON answer); (0, {}) when no answer came."""
        try:
            response = await self.http.post(url, json=body, headers=headers)
        except httpx.HTTPError as err:
            self.error(f"{url}: {type(err).__name__}: {err}")
            return 0, {}
        if response.status_code >= 400:
            self.error(f"{url}: {response.status_code} {response.text[:200]}")
        try:
            answer = response.json()
        except ValueError:
            return response.status_code, {}
        return response.status_code, answer if isinstance(answer, dict) else {}

    def error(self, text: str) -> None:
        if len(self.report.errors) < _MAX_ERRORS and text not in self.report.errors:
            self.report.errors.append(text)


async def simulate(
    *,
    url: str,
    webhook_key: str,
    journey: str,
    count: int = 1,
    rate: float | None = None,
    api_url: str | None = None,
    api_token: str | None = None,
    seed: int | None = None,
    cp_id: int = 4,
    concurrency: int = 16,
    timeout: float = 30.0,
) -> SimulationReport:
    """Play ``journey`` for ``count`` shipments into the webhook ``url``.

    Each shipment's webhooks go in journey order; shipments run side by side, at most
    ``concurrency`` requests in flight, at most ``rate`` webhooks a second overall. A refused
    registration or webhook is counted, not raised (notifier keeps updates for shipments it
    does not know yet, so the webhooks still go); only an unknown ``journey`` raises.
    """
    if journey not in JOURNEYS:
        raise ValueError(f"unknown journey {journey!r}; known: {', '.join(JOURNEYS)}")
    base = seed if seed is not None else random.randrange(2**31)
    prefix = "SIM" + "".join(random.Random(base).choices("ABCDEFGHJKLMNPQRSTUVWXYZ", k=6))
    now = datetime.now(UTC)
    report = SimulationReport(journey=journey)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
        run = _Run(http=http, report=report, url=url, webhook_key=webhook_key,
                   api_url=api_url.rstrip("/") if api_url else None, api_token=api_token,
                   pacer=_Pacer(rate), gate=asyncio.Semaphore(concurrency))  # fmt: skip
        numbers = iter(range(count))

        async def worker() -> None:
            for i in numbers:  # shared: each shipment is taken by one worker
                bodies = journey_bodies(journey, waybill=f"{prefix}{i:05d}", cp_id=cp_id,
                                        now=now, seed=base * 1_000_003 + i)  # fmt: skip
                await run.shipment(bodies)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))
        report.elapsed = time.monotonic() - started
    return report


# --- the command line -----------------------------------------------------------------------


def journeys_help() -> str:
    """One line per journey, for ``--help``."""
    width = max(len(name) for name in JOURNEYS)
    return "journeys:\n" + "\n".join(
        f"  {name:<{width}}  {j.description}" for name, j in JOURNEYS.items()
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``notifier simulate``; ``--help`` lists the journeys."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = journeys_help()
    add = parser.add_argument
    add(
        "--url",
        required=True,
        help="the webhook URL, e.g. http://127.0.0.1:8000/webhooks/clickpost",
    )
    add("--webhook-key", required=True, metavar="KEY", help="sent as the webhook_key header")
    add(
        "--journey",
        default="happy",
        choices=list(JOURNEYS),
        metavar="NAME",
        help="one of the journeys below (default happy)",
    )
    add("--api-url", metavar="URL", help="register each shipment first: POST URL/shipments")
    add("--api-token", metavar="TOKEN", help="bearer token for --api-url (NOTIFIER_API_TOKEN)")
    add("--count", type=_positive_int, default=1, metavar="N", help="shipments (default 1)")
    add("--rate", type=_positive_float, metavar="R", help="webhooks per second, overall")
    add(
        "--concurrency",
        type=_positive_int,
        default=16,
        metavar="N",
        help="requests in flight at most (default 16)",
    )
    add("--seed", type=int, help="the same seed gives the same waybills and bodies")
    add("--cp-id", type=int, default=4, metavar="ID", help="courier id (default 4)")  # fmt: skip


async def run_from_args(args: argparse.Namespace) -> int:
    """Run what the flags ask, print the summary; 0 when every webhook was answered 200."""
    report = await simulate(
        url=args.url,
        webhook_key=args.webhook_key,
        journey=args.journey,
        count=args.count,
        rate=args.rate,
        api_url=args.api_url,
        api_token=args.api_token,
        seed=args.seed,
        cp_id=args.cp_id,
        concurrency=args.concurrency,
    )
    print(report.summary())
    return 0 if report.ok else 1
