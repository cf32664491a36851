"""``Notifier``: the stages wired together, and the API a merchant embeds.

    async with Notifier(Settings()) as n:
        await n.register_shipment(awb_register_body)
        outcome = await n.handle_webhook(body, headers)   # stores + plans; no network I/O
        await n.dispatch_due()                             # renders, sends, records

The server and the CLI are thin layers over this class; :class:`SyncNotifier` serves WSGI
frameworks (Django, Flask) that cannot await.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any

from notifier.channels import Channel, build_channels, twilio
from notifier.clickpost.client import ClickpostClient
from notifier.clickpost.integration import ClickpostSync
from notifier.clickpost.models import parse_registration, parse_unregistration, parse_webhook
from notifier.dispatch import Backoff, Dispatcher, DispatchReport
from notifier.errors import (
    AuthenticationError,
    ConfigurationError,
    InputError,
    NotifierError,
    RulesError,
    StoreUnavailableError,
)
from notifier.events import ChannelKind, ShipmentUpdate
from notifier.group_commit import GroupCommit
from notifier.health import Refusal, WriteHealth
from notifier.metrics import Metrics
from notifier.optout import UnsubscribeLinks
from notifier.planning import Plan, ShipmentState, parse_quiet_hours, plan
from notifier.rendering import Renderer
from notifier.rules import QuietHours, RuleSet, load_rules
from notifier.settings import Settings
from notifier.store import migrations
from notifier.store.clickpost_calls import ClickpostCalls
from notifier.store.database import Database
from notifier.store.log import DeliveryLog
from notifier.store.privacy import Customer, Forgotten, forget
from notifier.store.queue import Queue
from notifier.store.repository import IngestOutcome, RegistrationOutcome, Store
from notifier.store.retention import Purged, purge

log = logging.getLogger("notifier")

Body = bytes | str | Mapping[str, Any]


# Clocks further apart than this (a daemon's and the database server's) are logged: a
# send is given back unless a quarter of its lease (2 minutes by default) is left, so a few
# seconds are harmless and minutes are not.
CLOCK_SKEW_WARNING = 2.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Notifier:
    """The embedded engine. Loads rules and templates at once: a bad file fails here, loudly."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        channels: Mapping[ChannelKind, Channel] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings or Settings()
        self.clock = clock
        self.renderer = Renderer(self.settings.templates)
        self.rules = load_ruleset(self.settings, self.renderer)
        self.rules_error: str | None = None
        self._fingerprint = _fingerprint(self.settings)
        # Split once, not for every webhook (the settings are frozen).
        self._webhook_keys = [k.encode() for k in self.settings.accepted_webhook_keys]
        self.quiet_hours = quiet_hours_override(self.settings)
        self.db = Database(self.settings.database_url)
        migrations.ensure_current(self.db)
        self.metrics = Metrics()
        self.store = Store(self.db)
        self._ingest = GroupCommit(self._record, max_batch=INGEST_BATCH, gather=INGEST_GATHER)
        self.ingested: Counter[str] = Counter()
        self.clock_skew: float | None = None  # seconds the database's clock is ahead of ours
        # Whether the database takes writes (/healthz, /readyz): every write reports here.
        self.health = WriteHealth(clock)
        self.queue = Queue(self.db)
        self.log = DeliveryLog(self.db)
        self.channels = dict(channels) if channels is not None else build_channels(self.settings)
        secret = self.settings.secret_key
        self.unsubscribe_links = UnsubscribeLinks.from_settings(
            secret.get_secret_value() if secret else None, self.settings.public_url
        )
        self.dispatcher = Dispatcher(
            self.queue,
            self.channels,
            current=lambda: (self.rules, self.renderer),
            clock=clock,
            batch=self.settings.dispatch_batch,
            lease=timedelta(seconds=self.settings.send_lease_seconds),
            backoff=Backoff(base=timedelta(seconds=self.settings.retry_backoff)),
            concurrency=self.settings.channel_concurrency,
            email_domain=_email_domain(self.settings.email_from),
            unsubscribe_url=self.settings.unsubscribe_url,
            unsubscribe_links=self.unsubscribe_links,
            observe=self._observe_send,
            health=self.health,
        )
        self.metrics.watch(self)
        self.clickpost = ClickpostClient.from_settings(self.settings)
        self.clickpost_calls = ClickpostCalls(self.db)
        self.clickpost_sync = (
            ClickpostSync(
                self.clickpost, self.clickpost_calls, ingest=self.ingest, clock=clock,
                stale_after=timedelta(seconds=self.settings.poll_stale_after),
                health=self.health,
            )
            if self.clickpost is not None
            else None
        )  # fmt: skip

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(Settings())

    async def __aenter__(self) -> Notifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._ingest.drain()
        if self.clickpost is not None:
            await self.clickpost.aclose()
        self.db.dispose()

    # -- ingest -------------------------------------------------------------------------------

    async def handle_webhook(
        self, body: Body, headers: Mapping[str, str] | None = None
    ) -> IngestOutcome:
        """Store one Clickpost webhook and plan its notifications in one transaction.

        With ``NOTIFIER_WEBHOOK_KEYS`` set, ``headers`` must carry one of them as
        ``webhook_key`` (or ``Authorization``); checked before the body is parsed.
        """
        try:
            self.authenticate(headers or {})
            update = parse_webhook(body)
        except InputError:
            self.metrics.webhooks.labels("rejected").inc()
            raise
        outcome = await self.ingest(update)
        held = outcome.shipment_id is None and not outcome.duplicate
        kind = "duplicate" if outcome.duplicate else "held" if held else "accepted"
        self.metrics.webhooks.labels(kind).inc()
        self.ingested[kind] += 1
        return outcome

    async def ingest(self, update: ShipmentUpdate) -> IngestOutcome:
        """Store an already parsed update (a webhook or a poll) and plan for it. Concurrent
        calls share transactions (group commit); each returns once its own is committed."""
        try:
            outcome = await self._ingest.submit(update)
        except StoreUnavailableError as err:
            self.metrics.webhooks.labels("unavailable").inc()
            self.health.refused("webhook", err)
            raise
        if not outcome.duplicate:  # a duplicate wrote nothing: it proves no space to write
            self.health.stored()
        log.debug(
            "update %s/%s code %s: %s",
            update.cp_id,
            update.waybill or "-",
            update.latest.code,
            outcome.verdict,
        )
        return outcome

    def refusal(self) -> Refusal | None:
        """Whether writes are being refused (/healthz, /readyz): notifier/health.py."""
        return self.health.refusal()

    async def check_clock(self) -> float | None:
        """How far the database server's clock is ahead of this host's (None on SQLite),
        warned of past ``CLOCK_SKEW_WARNING`` seconds: a send's lease is written and compared
        by each daemon's own clock, so daemons whose clocks disagree can both send it."""
        self.clock_skew = skew = await asyncio.to_thread(self.db.clock_skew)
        if skew is not None and abs(skew) > CLOCK_SKEW_WARNING:
            log.warning(
                "this host's clock is %.1f s %s the database server's: daemons on hosts whose "
                "clocks disagree can send a message twice (a send's lease is compared by each "
                "daemon's clock); keep the hosts' clocks in sync (NTP)",
                abs(skew), "behind" if skew > 0 else "ahead of",
            )  # fmt: skip
        return skew

    def summarise_ingest(self) -> str | None:
        """What was ingested since the last call, in words (None: nothing): the daemon logs
        it every minute. Each update's own verdict is on its event in the delivery log, and
        in the process log at DEBUG; one INFO line per webhook would cost a sale day more CPU
        than storing the webhook does."""
        counts, self.ingested = self.ingested, Counter()
        if not counts:
            return None
        return f"{counts.total()} webhooks: " + ", ".join(
            f"{n} {kind}" for kind, n in counts.most_common()
        )

    async def register_shipment(self, body: Body) -> RegistrationOutcome:
        """Store an awb-register body; updates that came before it are evaluated once now."""
        registration = parse_registration(body)
        return await self.health.writing(
            "registration",
            self.store.register,
            registration,
            self._decide,
            parse_webhook,
            now=self.clock(),
            rules_version=self.rules.version,
            forward=self.clickpost is not None,
            phone_region=self.rules.defaults.phone_region,
        )

    async def unregister_shipment(self, body: Body) -> bool:
        """awb-unregister: no more messages for the shipment (and, with Clickpost settings,
        Clickpost is told too). False when the shipment is unknown."""
        request = parse_unregistration(body)
        forward = self.clickpost is not None
        return await self.health.writing(
            "unregistration", self.store.unregister, request.cp_id, request.waybill,
            now=self.clock(), forward=forward,
        )  # fmt: skip

    def authenticate(self, headers: Mapping[str, str]) -> None:
        if not self._webhook_keys:
            return
        given = [g.encode() for g in _presented_keys(headers)]
        if not any(hmac.compare_digest(g, k) for g in given for k in self._webhook_keys):
            raise AuthenticationError("webhook key missing or wrong", field="webhook_key")

    def _record(self, updates: Sequence[ShipmentUpdate]) -> list[IngestOutcome]:
        now = self.clock()  # one instant for the whole transaction, its rows and its plans
        return self.store.record_updates(
            updates, partial(self._decide, now=now), now=now, rules_version=self.rules.version
        )

    def _decide(
        self, shipment: ShipmentState, update: ShipmentUpdate, *, now: datetime | None = None
    ) -> Plan:
        window: QuietHours | str | None = self.quiet_hours
        return plan(update, shipment, self.rules, now=now or self.clock(), quiet_hours=window)

    # -- dispatch and the log -----------------------------------------------------------------

    async def dispatch_due(self, stop: Callable[[], bool] = lambda: False) -> DispatchReport:
        """Send every notification that is due now; record each attempt."""
        return await self.dispatcher.dispatch_due(stop)

    async def notifications(self, **filters: Any) -> list[dict[str, Any]]:
        return await asyncio.to_thread(partial(self.log.notifications, **filters))

    async def shipment(self, cp_id: int, waybill: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.log.shipment_detail, cp_id, waybill)

    def reload_rules(self) -> RuleSet:
        """Load the rules and templates again; on error the previous rules stay and the error
        is raised."""
        self.renderer.reload()
        self.rules = load_ruleset(self.settings, self.renderer)
        self.rules_error = None
        self._fingerprint = _fingerprint(self.settings)
        return self.rules

    def reload_if_changed(self) -> bool:
        """Hot reload: when rules.yaml or a template changed, load and check them again.

        An invalid edit keeps the previous rules running; ``rules_error`` then says what is
        wrong (``file:line:col: message``) until a good edit replaces it. Templates are checked
        too, so a syntax error is reported now rather than at the next send.
        """
        fingerprint = _fingerprint(self.settings)
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        self.renderer.reload()  # templates are the files on disk, as check() reads them
        try:
            problems = [p for p in self.renderer.check() if p.severity == "error"]
            if problems:
                raise RulesError(problems)
            self.rules = load_ruleset(self.settings, self.renderer)
        except NotifierError as err:
            self.rules_error = str(err)
            self.metrics.reload_errors.inc()
            log.error("rules not reloaded, the previous ones stay: %s", err)
            return False
        self.rules_error = None
        log.info("rules reloaded: version %s, %d rules", self.rules.version, len(self.rules.rules))
        return True

    async def handle_twilio_status(self, params: Mapping[str, str], signature: str) -> int | None:
        """A Twilio delivery receipt (status callback): checked, then the log moves forward.

        The signature is checked over ``NOTIFIER_PUBLIC_URL`` + ``/callbacks/twilio/status``;
        a forged or unsigned callback raises AuthenticationError. Returns the notification id
        that moved, or None (an intermediate status, an unknown message, an older receipt).
        """
        token = self.settings.twilio_auth_token
        if token is None or not self.settings.public_url:
            raise AuthenticationError(
                "Twilio callbacks need NOTIFIER_TWILIO_AUTH_TOKEN and NOTIFIER_PUBLIC_URL",
                field="X-Twilio-Signature",
            )
        valid = twilio.validate_status_callback(
            auth_token=token.get_secret_value(), public_url=self.settings.public_url,
            params=params, signature=signature,
        )  # fmt: skip
        if not valid:
            raise AuthenticationError("signature does not match", field="X-Twilio-Signature")
        receipt = twilio.parse_status_callback(params)
        status = receipt.notification_status
        if status is None:
            return None
        reason = _receipt_reason(receipt.status, receipt.error_code)
        applied = await self.health.writing(
            "delivery receipt", self.queue.apply_receipt, receipt.message_sid, status.value,
            reason, now=self.clock(),
        )  # fmt: skip
        what = "applied" if applied.moved else "nothing to move"
        if applied.kept:
            what = "kept until the send is recorded"
        log.info("receipt %s for %s: %s", receipt.status, receipt.message_sid, what)
        return applied.moved

    def _observe_send(self, channel: str, outcome: str, seconds: float) -> None:
        self.metrics.sends.labels(channel, outcome).observe(seconds)

    async def purge_expired_data(self, days: int) -> Purged:
        """Retention: clear raw bodies and personal data older than ``days``; counts stay."""
        before = self.clock() - timedelta(days=days)
        return await self.health.writing("retention", purge, self.db, before=before)

    async def forget(self, *, phone: str | None = None, email: str | None = None) -> Forgotten:
        """Erase one customer's personal data everywhere (``notifier forget``); their waiting
        messages are cancelled. See :mod:`notifier.store.privacy` for what goes and stays."""
        customer = Customer(phone=phone, email=email)
        if not (customer.phone_key or customer.email_key):
            raise InputError("give a phone number or an email address", field="phone")
        forgotten = await self.health.writing(
            "erasure", forget, self.db, customer, now=self.clock()
        )
        log.info("forgot a customer on request: %s", forgotten)
        return forgotten


# At most this many updates share one ingest transaction (group commit).
INGEST_BATCH = 500
# Under load, a flush waits this long for more webhooks before committing (group_commit.py):
# at 32 connections it doubled the mean batch and took a fifth off the CPU per webhook.
INGEST_GATHER = 0.002
# Twilio error codes seen in status callbacks (implementation-notes.md), in words for the log.
RECEIPT_ERRORS = {
    "30003": "unreachable handset",
    "30004": "message blocked",
    "30005": "unknown or inactive number",
    "30006": "landline or unreachable carrier",
    "30007": "filtered as spam by the carrier",
    "30008": "unknown error",
}


def _receipt_reason(status: str, code: str | None) -> str:
    if not code:
        return ""
    words = RECEIPT_ERRORS.get(code, "see Twilio's error reference")
    return f"{status}: Twilio {code} ({words})"


def _fingerprint(settings: Settings) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of the rules file and every template."""
    files = [settings.rules, *sorted(settings.templates.rglob("*.j2"))]
    stats = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            continue
        stats.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(stats)


def load_ruleset(settings: Settings, renderer: Renderer) -> RuleSet:
    if not settings.rules.is_file():
        raise ConfigurationError(f"rules file not found: {settings.rules} (NOTIFIER_RULES)")
    if not settings.templates.is_dir():
        raise ConfigurationError(
            f"templates folder not found: {settings.templates} (NOTIFIER_TEMPLATES)"
        )
    return load_rules(settings.rules, missing_template=renderer.missing)


def quiet_hours_override(settings: Settings) -> QuietHours | str | None:
    if settings.quiet_hours is None:
        return "rules"
    try:
        return parse_quiet_hours(settings.quiet_hours)
    except ValueError as err:
        raise ConfigurationError(f"NOTIFIER_QUIET_HOURS: {err}") from err


def _presented_keys(headers: Mapping[str, str]) -> list[str]:
    """The key as Clickpost sends it: ``webhook_key``, or ``Authorization`` (maybe with a scheme).

    Proxies such as nginx drop headers with underscores unless told not to, so ``webhook-key``
    is accepted too.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    given = [lowered[h] for h in ("webhook_key", "webhook-key") if h in lowered]
    auth = lowered.get("authorization", "")
    if auth:
        given.append(auth)
        scheme, _, rest = auth.partition(" ")
        if rest and scheme.lower() in {"bearer", "token", "basic"}:
            given.append(rest.strip())
    return given


def _email_domain(sender: str | None) -> str:
    address = (sender or "").rsplit("<", 1)[-1].rstrip(">")
    return address.partition("@")[2] or "notifier.local"


class SyncNotifier:
    """A blocking facade for WSGI code: the async engine runs on a private event-loop thread."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = _start_loop_thread(self._loop)
        self._notifier = Notifier(settings, **kwargs)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def handle_webhook(self, body: Body, headers: Mapping[str, str] | None = None) -> IngestOutcome:
        result: IngestOutcome = self._run(self._notifier.handle_webhook(body, headers))
        return result

    def register_shipment(self, body: Body) -> RegistrationOutcome:
        result: RegistrationOutcome = self._run(self._notifier.register_shipment(body))
        return result

    def unregister_shipment(self, body: Body) -> bool:
        return bool(self._run(self._notifier.unregister_shipment(body)))

    def dispatch_due(self) -> DispatchReport:
        result: DispatchReport = self._run(self._notifier.dispatch_due())
        return result

    def notifications(self, **filters: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._run(self._notifier.notifications(**filters))
        return result

    def close(self) -> None:
        if not self._loop.is_running():  # closed already
            return
        self._run(self._notifier.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> SyncNotifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _start_loop_thread(loop: asyncio.AbstractEventLoop) -> Any:
    import threading

    thread = threading.Thread(target=loop.run_forever, name="notifier-loop", daemon=True)
    thread.start()
    return thread
