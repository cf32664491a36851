"""The console's read pages: dashboard, search, shipment, delivery log (and its CSV), preview.

Each handler gets the request and the checked session; :mod:`notifier.console.routes`
registers them behind the login.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from datetime import time as day_time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from notifier.clickpost import codes
from notifier.clickpost.models import parse_registration, parse_webhook
from notifier.console import chart
from notifier.console.sessions import Session
from notifier.console.web import SECURITY_HEADERS, query
from notifier.errors import InputError
from notifier.events import PENDING_STATUSES, ChannelKind, NotificationStatus, Registration
from notifier.http_input import engine_of
from notifier.preview import preview, synthetic_update
from notifier.store import console as store
from notifier.store import console_log

if TYPE_CHECKING:
    from notifier.console.routes import Console

Page = Callable[[Request, Session], Awaitable[Response]]
DAYS = 14
LOG_PAGE = 50
CSV_COLUMNS = (
    "id", "created_at", "cp_id", "waybill", "rule", "channel", "recipient", "status", "reason",
    "attempts", "provider_id", "rules_version", "due_at", "sent_at",
)  # fmt: skip


def register(router: APIRouter, console: Console, page: Callable[[Page], Any]) -> None:
    router.add_api_route("", page(_bind(dashboard, console)), methods=["GET"])
    router.add_api_route("/", page(_bind(dashboard, console)), methods=["GET"])
    router.add_api_route("/search", page(_bind(search, console)), methods=["GET", "POST"])
    router.add_api_route("/shipments/{shipment_id:int}", page(_bind(shipment, console)),
                         methods=["GET"])  # fmt: skip
    router.add_api_route("/log", page(_bind(delivery_log, console)), methods=["GET"])
    router.add_api_route("/log.csv", page(_bind(log_csv, console)), methods=["GET"])
    router.add_api_route("/preview", page(_bind(preview_page, console)), methods=["GET", "POST"])


def _bind(handler: Callable[[Console, Request, Session], Awaitable[Response]],
          console: Console) -> Page:  # fmt: skip
    async def bound(request: Request, session: Session) -> Response:
        return await handler(console, request, session)

    return bound


# -- dashboard -----------------------------------------------------------------------------------


async def dashboard(console: Console, request: Request, session: Session) -> Response:
    engine = engine_of(request)
    zone, now = engine.rules.defaults.timezone, engine.clock()
    days = await query(request, console_log.per_day, day_starts(now, zone, DAYS))
    oldest = await query(request, console_log.oldest_due, now=now)
    return console.page(
        "dashboard.html", request, session, chart=chart.build(days, zone), days=days,
        channels=chart.CHANNELS, outcomes=chart.OUTCOMES, oldest=oldest, now=now,
        rules_error=engine.rules_error,
    )  # fmt: skip


def day_starts(now: datetime, zone: ZoneInfo, count: int) -> list[datetime]:
    """The UTC instants local days begin, oldest first, the last one being today."""
    today = now.astimezone(zone).date()
    return [
        datetime.combine(today - timedelta(days=back), day_time(0), tzinfo=zone).astimezone(UTC)
        for back in range(count - 1, -1, -1)
    ]


# -- search and a shipment -----------------------------------------------------------------------


async def search(console: Console, request: Request, session: Session) -> Response:
    if request.method == "POST":
        form = await console.checked_form(request, session)
        if isinstance(form, Response):
            return form
        text = form.get("q", "")
    else:
        text = request.query_params.get("q", "")
    text = text.strip()[:200]
    hits = await query(request, store.search, text) if text else []
    short = bool(text) and len(text) < store.MIN_SEARCH
    return console.page("search.html", request, session, q=text, hits=hits, short=short,
                        searched=bool(text), limit=store.SEARCH_LIMIT)  # fmt: skip


async def shipment(console: Console, request: Request, session: Session) -> Response:
    shipment_id = int(request.path_params["shipment_id"])
    found = await query(request, store.shipment_page, shipment_id)
    if found is None:
        return console.refuse(request, session, 404, "No such shipment.")
    done = request.query_params.get("done")
    return console.page(
        "shipment.html", request, session, p=found, resendable=store.RESENDABLE,
        pending=PENDING_STATUSES, done=done if done in ("resend", "cancel") else None,
    )  # fmt: skip


# -- the delivery log ----------------------------------------------------------------------------


def log_filter(params: dict[str, str], zone: ZoneInfo) -> tuple[console_log.LogFilter, list[str]]:
    """The log's filters from the query string, and what was wrong with them (ignored)."""
    problems: list[str] = []
    status, channel = params.get("status") or None, params.get("channel") or None
    if status and status not in set(NotificationStatus):
        problems.append(f"unknown status {status!r}")
        status = None
    if channel and channel not in set(ChannelKind):
        problems.append(f"unknown channel {channel!r}")
        channel = None
    since, until = (_day(params.get(k, ""), zone, k, problems) for k in ("since", "until"))
    if until is not None:
        until += timedelta(days=1)  # "until 27 Nov" includes the 27th
    rule = (params.get("rule") or "").strip()[:200] or None
    return console_log.LogFilter(status=status, channel=channel, rule=rule, since=since,
                           until=until), problems  # fmt: skip


def _day(text: str, zone: ZoneInfo, name: str, problems: list[str]) -> datetime | None:
    if not text:
        return None
    try:
        day = datetime.strptime(text[:10], "%Y-%m-%d").date()
    except ValueError:
        problems.append(f"{name}: not a date (YYYY-MM-DD)")
        return None
    return datetime.combine(day, day_time(0), tzinfo=zone).astimezone(UTC)


async def delivery_log(console: Console, request: Request, session: Session) -> Response:
    engine = engine_of(request)
    params = dict(request.query_params)
    filters, problems = log_filter(params, engine.rules.defaults.timezone)
    after, before = _int(params.get("after")), _int(params.get("before"))
    page = await query(request, console_log.log_page, filters, after=after, before=before,
                       size=LOG_PAGE)  # fmt: skip
    kept = {k: params[k] for k in ("status", "channel", "rule", "since", "until") if params.get(k)}
    return console.page(
        "log.html", request, session, page=page, problems=problems, f=kept,
        statuses=list(NotificationStatus), channels=list(ChannelKind),
        rules=[r.name for r in engine.rules.rules],
    )  # fmt: skip


async def log_csv(console: Console, request: Request, session: Session) -> Response:
    engine = engine_of(request)
    filters, _ = log_filter(dict(request.query_params), engine.rules.defaults.timezone)
    rows = console_log.log_rows(engine.db, filters)
    headers = {**SECURITY_HEADERS,
               "Content-Disposition": 'attachment; filename="notifications.csv"'}  # fmt: skip
    return StreamingResponse(_csv_lines(rows), media_type="text/csv", headers=headers)


def _csv_lines(rows: Iterator[console_log.LogRow]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for count, row in enumerate(rows, 1):
        writer.writerow([_cell(getattr(row, c)) for c in CSV_COLUMNS])
        if count % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _cell(value: Any) -> str:
    """A CSV cell; text a spreadsheet would run as a formula (a reason or waybill from a
    webhook starting ``=``) is quoted with an apostrophe (OWASP's CSV injection advice)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


# -- preview -------------------------------------------------------------------------------------


async def preview_page(console: Console, request: Request, session: Session) -> Response:
    context: dict[str, Any] = {
        "statuses": sorted(codes.STATUS_CODES.values(), key=lambda s: s.code),
        "ndrs": sorted(codes.NDR_CODES.values(), key=lambda n: n.code),
        "events": sorted(codes.NOTIFICATION_EVENTS.values(), key=lambda e: e.id),
        "result": None, "error": "", "form": {},
    }  # fmt: skip
    if request.method == "GET":
        shipment_id = _int(request.query_params.get("shipment"))
        context["form"] = {"shipment_id": str(shipment_id or ""), "status": "6"}
        return console.page("preview.html", request, session, **context)
    form = await console.checked_form(request, session)
    if isinstance(form, Response):
        return form
    context["form"] = form
    try:
        context["result"], context["shipment"] = await _run_preview(request, form)
    except InputError as err:
        context["error"] = str(err)
    return console.page("preview.html", request, session, **context)


async def _run_preview(request: Request, form: dict[str, str]) -> tuple[Any, str]:
    """What the rules loaded now would send: for a made-up update or a pasted webhook body,
    to a stored shipment's customer (or a sample one). Nothing is stored or sent."""
    engine = engine_of(request)
    registration = await _registration(request, form)
    now = engine.clock()
    if form.get("payload", "").strip():
        update = parse_webhook(form["payload"].encode())
    else:
        update = synthetic_update(
            status=form.get("status") or "6", ndr=form.get("ndr") or None,
            event=form.get("event") or None, registration=registration, now=now,
        )  # fmt: skip
    result = preview(update, registration, rules=engine.rules, renderer=engine.renderer,
                     now=now, quiet_hours=engine.quiet_hours)  # fmt: skip
    return result, registration.waybill if registration else ""


async def _registration(request: Request, form: dict[str, str]) -> Registration | None:
    shipment_id = _int(form.get("shipment_id"))
    waybill = form.get("waybill", "").strip()
    if shipment_id is None and waybill:
        shipment_id = await query(request, store.shipment_by_waybill, waybill)
        if shipment_id is None:
            raise InputError(f"no shipment with waybill {waybill!r}", field="waybill")
    if shipment_id is None:
        return None
    body = await query(request, store.registration_of, shipment_id)
    if body is None:
        raise InputError("no such shipment", field="shipment_id")
    return parse_registration(body)
