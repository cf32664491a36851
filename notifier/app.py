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
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any

from notifier.channels import Channel, build_channels
from notifier.clickpost.models import parse_registration, parse_unregistration, parse_webhook
from notifier.dispatch import Dispatcher, DispatchReport
from notifier.errors import AuthenticationError, ConfigurationError
from notifier.events import ChannelKind, ShipmentUpdate
from notifier.planning import Plan, ShipmentState, parse_quiet_hours, plan
from notifier.rendering import Renderer
from notifier.rules import QuietHours, RuleSet, load_rules
from notifier.settings import Settings
from notifier.store.database import Database
from notifier.store.log import DeliveryLog
from notifier.store.queue import Queue
from notifier.store.repository import IngestOutcome, RegistrationOutcome, Store

log = logging.getLogger("notifier")

Body = bytes | str | Mapping[str, Any]


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
        self.quiet_hours = quiet_hours_override(self.settings)
        self.db = Database(self.settings.database_url)
        self.db.create_all()
        self.store = Store(self.db)
        self.queue = Queue(self.db)
        self.log = DeliveryLog(self.db)
        self.channels = dict(channels) if channels is not None else build_channels(self.settings)
        self.dispatcher = Dispatcher(
            self.queue,
            self.channels,
            current=lambda: (self.rules, self.renderer),
            clock=clock,
            batch=self.settings.dispatch_batch,
            lease=timedelta(seconds=self.settings.send_lease_seconds),
            concurrency=self.settings.channel_concurrency,
            email_domain=_email_domain(self.settings.email_from),
            unsubscribe_url=self.settings.unsubscribe_url,
        )

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(Settings())

    async def __aenter__(self) -> Notifier:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.db.dispose()

    # -- ingest -------------------------------------------------------------------------------

    async def handle_webhook(
        self, body: Body, headers: Mapping[str, str] | None = None
    ) -> IngestOutcome:
        """Store one Clickpost webhook and plan its notifications in one transaction.

        With ``NOTIFIER_WEBHOOK_KEYS`` set, ``headers`` must carry one of them as
        ``webhook_key`` (or ``Authorization``); checked before the body is parsed.
        """
        self.authenticate(headers or {})
        update = parse_webhook(body)
        return await self.ingest(update)

    async def ingest(self, update: ShipmentUpdate) -> IngestOutcome:
        """Store an already parsed update (a webhook or a poll) and plan for it."""
        outcome = await asyncio.to_thread(
            self.store.record_update,
            update,
            self._decide,
            now=self.clock(),
            rules_version=self.rules.version,
        )
        log.info(
            "update %s/%s code %s: %s",
            update.cp_id,
            update.waybill or "-",
            update.latest.code,
            outcome.verdict,
        )
        return outcome

    async def register_shipment(self, body: Body) -> RegistrationOutcome:
        """Store an awb-register body; updates that came before it are evaluated once now."""
        registration = parse_registration(body)
        return await asyncio.to_thread(
            self.store.register,
            registration,
            self._decide,
            parse_webhook,
            now=self.clock(),
            rules_version=self.rules.version,
        )

    async def unregister_shipment(self, body: Body) -> bool:
        """awb-unregister: no more messages for the shipment. False when it is unknown."""
        request = parse_unregistration(body)
        return await asyncio.to_thread(
            self.store.unregister, request.cp_id, request.waybill, now=self.clock()
        )

    def authenticate(self, headers: Mapping[str, str]) -> None:
        keys = self.settings.accepted_webhook_keys
        if not keys:
            return
        given = _presented_keys(headers)
        if not any(hmac.compare_digest(g.encode(), k.encode()) for g in given for k in keys):
            raise AuthenticationError("webhook key missing or wrong", field="webhook_key")

    def _decide(self, shipment: ShipmentState, update: ShipmentUpdate) -> Plan:
        window: QuietHours | str | None = self.quiet_hours
        return plan(update, shipment, self.rules, now=self.clock(), quiet_hours=window)

    # -- dispatch and the log -----------------------------------------------------------------

    async def dispatch_due(self) -> DispatchReport:
        """Send every notification that is due now; record each attempt."""
        return await self.dispatcher.dispatch_due()

    async def notifications(self, **filters: Any) -> list[dict[str, Any]]:
        return await asyncio.to_thread(partial(self.log.notifications, **filters))

    async def shipment(self, cp_id: int, waybill: str) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.log.shipment_detail, cp_id, waybill)

    def reload_rules(self) -> RuleSet:
        """Load the rules again; on error the previous rules stay and the error is raised."""
        self.rules = load_ruleset(self.settings, self.renderer)
        return self.rules


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
