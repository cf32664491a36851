"""Claim due notifications, render them, send them, record every attempt.

Persist, then send: a row is claimed (status ``sending`` with a lease) before the provider is
called, and finished after. A crash in between leaves the row ``sending``; once its lease runs
out the next dispatcher claims it again and sends it again. That is the one window in which a
customer can get a message twice (design.md, "Delivery"): after a crash, at most the sends that
were in flight, up to ``NOTIFIER_CHANNEL_CONCURRENCY`` per channel (tests/test_crash.py
measures it: the repeats equal the claimed rows the provider had already accepted).

Each channel drains its own queue with its own bound on parallel sends, so a slow or failing
provider (SMTP down) does not hold up the others.

When the database cannot record an attempt's outcome (locked, full), the dispatcher keeps the
outcome in memory and tries again until it can, instead of leaving the row ``sending`` for its
lease to run out and the message to go out again (tests/test_faults.py, docs/operations.md).

A send starts only while a quarter of its claim's lease is left: a batch held up by a slow
provider would otherwise call it for rows whose lease ran out, which another daemon sharing the
database may have claimed and sent already. Such a row is given back to the queue unsent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from notifier import recipients
from notifier.channels.base import Channel, OutgoingMessage
from notifier.clickpost.models import parse_registration, parse_webhook
from notifier.errors import (
    ChannelError,
    OptedOutError,
    PermanentChannelError,
    StoreUnavailableError,
    TemplateError,
    TransientChannelError,
)
from notifier.events import ChannelKind, NotificationStatus
from notifier.group_commit import GroupCommit
from notifier.health import WriteHealth
from notifier.languages import language_of
from notifier.optout import UnsubscribeLinks
from notifier.rendering import Rendered, Renderer, build_context
from notifier.rules import Retry, RuleSet, Send
from notifier.segments import count_segments
from notifier.store.queue import Finish, Job, Queue

log = logging.getLogger("notifier.dispatch")

# Recording an attempt's outcome while the database is locked or full: first pause, longest.
FINISH_RETRY_FIRST = 0.5
FINISH_RETRY_CAP = 5.0
# The share of a claim's lease that must be left for its send to start: enough for the
# provider's own timeout (Twilio 15 s, SMTP 30 s by default, the lease 120 s) and the record.
LEASE_LEFT_TO_SEND = 0.25
GIVEN_BACK = "given back"  # a report's count of rows returned unsent: lease too short


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Exponential backoff with full jitter in [50%, 100%], honouring the provider's hint."""

    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=1)

    def delay(self, attempt: int, retry_after: float | None = None) -> timedelta:
        backoff = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        jittered: timedelta = backoff * random.uniform(0.5, 1.0)
        hinted = timedelta(seconds=retry_after or 0)
        return jittered if jittered > hinted else hinted


@dataclass(kw_only=True)
class DispatchReport:
    """Counts of what one ``dispatch_due`` call did, by the status each attempt ended in."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Dispatcher:
    def __init__(
        self,
        queue: Queue,
        channels: Mapping[ChannelKind, Channel],
        *,
        current: Callable[[], tuple[RuleSet, Renderer]],
        clock: Callable[[], datetime],
        backoff: Backoff | None = None,
        batch: int = 200,
        lease: timedelta = timedelta(minutes=2),
        concurrency: int = 16,
        email_domain: str = "notifier.local",
        unsubscribe_url: str | None = None,
        unsubscribe_links: UnsubscribeLinks | None = None,
        observe: Callable[[str, str, float], None] | None = None,
        health: WriteHealth | None = None,
    ) -> None:
        self.queue = queue
        self.channels = channels
        self.current = current
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.batch = batch
        self.lease = lease
        self.email_domain = email_domain
        self.unsubscribe_url = unsubscribe_url
        self.unsubscribe_links = unsubscribe_links
        self.observe = observe or (lambda channel, outcome, seconds: None)
        self.health = health or WriteHealth(clock)  # its claims and records report here
        self._limits = {kind: asyncio.Semaphore(concurrency) for kind in channels}
        # Attempts that end together are recorded in one transaction (group commit).
        self._finishes = GroupCommit(queue.finish_many)
        # Claimed and not yet recorded. A send whose record waits for a locked database can
        # outlive its lease; this process must not claim it again meanwhile (another run, woken
        # by a webhook, would send the message a second time).
        self._in_flight: set[int] = set()

    async def dispatch_due(self, stop: Callable[[], bool] = lambda: False) -> DispatchReport:
        """Send everything due now, every channel in parallel, until nothing due is left
        (or ``stop()`` says the process is shutting down: no new batch is claimed then)."""
        report = DispatchReport()
        drains = [self._drain(kind, report, stop) for kind in self.channels]
        # Every channel's drain ends before the run does, even when one fails (its claim met a
        # locked database): a drain left running on its own would overlap the next run.
        for result in await asyncio.gather(*drains, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
        return report

    async def _drain(self, kind: ChannelKind, report: DispatchReport,
                     stop: Callable[[], bool]) -> None:  # fmt: skip
        while not stop():
            now = self.clock()
            try:
                jobs = await asyncio.to_thread(
                    self.queue.claim_due, now=now, limit=self.batch, lease_until=now + self.lease,
                    channel=kind.value, exclude=frozenset(self._in_flight),
                )  # fmt: skip
            except StoreUnavailableError as err:
                # Told, but a claim that works is not: with nothing due it writes nothing, and
                # would clear a refusal every second while the disk is still full.
                self.health.refused("claim of due sends", err)
                raise
            if jobs:
                claimed = {job.id for job in jobs}
                self._in_flight |= claimed
                try:
                    for status in await self._send_batch(kind, jobs):
                        report.add(status)
                finally:
                    self._in_flight -= claimed
            if len(jobs) < self.batch:
                return

    async def _send_batch(self, kind: ChannelKind, jobs: list[Job]) -> list[str]:
        channel = self.channels[kind]
        try:
            await channel.open()
        except ChannelError as err:  # e.g. the SMTP server is down: every job gets an attempt
            return [await self._failed_send(job, err, {}) for job in jobs]
        try:
            return list(await asyncio.gather(*(self._send_one(job) for job in jobs)))
        finally:
            await channel.close()

    async def _send_one(self, job: Job) -> str:
        if job.suppressed:
            why = job.suppressed_because or "no more messages to this recipient on this channel"
            reason = f"opted out: {why}"
            return await self._finish(job, NotificationStatus.SKIPPED, reason, "suppressed")
        if job.expires_at is not None and self.clock() > job.expires_at:
            reason = f"expired: too old to matter after {job.expires_at:%Y-%m-%d %H:%M}Z"
            return await self._finish(job, NotificationStatus.EXPIRED, reason, "expired")
        try:
            message, rendered = self._prepare(job)
        except TemplateError as err:
            return await self._finish(job, NotificationStatus.FAILED, f"template: {err}",
                                      "permanent")  # fmt: skip
        except Exception as err:  # stored data or a bug: fail this one, the batch goes on
            log.exception("notification %s: cannot prepare the message", job.id)
            reason = f"cannot prepare the message: {err}"
            return await self._finish(job, NotificationStatus.FAILED, reason, "permanent")
        facts = _facts(job, rendered)
        try:
            # The slot bounds calls to the provider alone: rendering comes before it, and the
            # attempt is recorded after it, with the others that end meanwhile (group commit).
            async with self._limits[message.channel]:
                if job.lease_until - self.clock() < self.lease * LEASE_LEFT_TO_SEND:
                    return await self._give_back(job)
                started = time.perf_counter()
                receipt = await self.channels[message.channel].send(message)
        except ChannelError as err:
            self.observe(job.channel, type(err).__name__, time.perf_counter() - started)
            return await self._failed_send(job, err, facts)
        except Exception as err:  # a bug or an untranslated provider error: retry, bounded
            log.exception("notification %s: unexpected error from %s", job.id, job.channel)
            return await self._failed_send(job, TransientChannelError(repr(err)), facts)
        self.observe(job.channel, "sent", time.perf_counter() - started)
        log.debug("notification %s sent by %s to %s", job.id, job.channel,
                  recipients.mask(job.recipient))  # fmt: skip
        return await self._finish(job, NotificationStatus.SENT, "", "sent",
                                  provider_id=receipt.provider_id, rendered=facts)  # fmt: skip

    def _prepare(self, job: Job) -> tuple[OutgoingMessage, Rendered]:
        rules, renderer = self.current()
        kind = ChannelKind(job.channel)
        # Read back from the store: checked for hostile input when they came in.
        registration = parse_registration(job.registration, stored=True)
        update = parse_webhook(job.event_raw, stored=True) if job.event_raw else None
        phone = job.recipient if kind is not ChannelKind.EMAIL else ""
        context = build_context(
            registration=registration, update=update, brand=rules.defaults.brand,
            tracking_url=rules.defaults.tracking_url, consumer_phone=phone, now=self.clock(),
        )  # fmt: skip
        rendered = renderer.render(kind, job.template, context, language=language_of(registration))
        send = _send_of(rules, job)
        variables = None
        if send is not None and send.content_sid:
            variables = renderer.render_variables(send.content_variables, context,
                                                  where=f"rule {job.rule}")  # fmt: skip
        message = OutgoingMessage(
            notification_id=job.id, channel=kind, to=job.recipient, text=rendered.text,
            subject=rendered.subject, html=rendered.html,
            message_id=f"<notification.{job.id}@{self.email_domain}>",
            unsubscribe_url=self._unsubscribe(job),
            content_sid=send.content_sid if send else None, content_variables=variables,
        )  # fmt: skip
        return message, rendered

    def _unsubscribe(self, job: Job) -> str | None:
        """The List-Unsubscribe link: the merchant's own page (``NOTIFIER_UNSUBSCRIBE_URL``)
        when set, else a signed one-click link (``NOTIFIER_SECRET_KEY``), else none."""
        if job.channel != ChannelKind.EMAIL:
            return None
        if self.unsubscribe_url:
            return self.unsubscribe_url.format(notification_id=job.id)
        if self.unsubscribe_links is not None:
            return self.unsubscribe_links.url(job.id, job.channel, job.recipient)
        return None

    async def _give_back(self, job: Job) -> str:
        """Return a claimed row unsent (its lease ran short while it waited for a slot); the
        next claim, here or in another daemon, sends it. Refused: the lease runs out instead."""
        left = (job.lease_until - self.clock()).total_seconds()
        reason = (f"not sent yet: its claim had {max(left, 0):.0f}s of its lease left when a "
                  f"slot to the provider came free; back in the queue")  # fmt: skip
        log.warning("notification %s: %s", job.id, reason)
        with contextlib.suppress(StoreUnavailableError):  # told to health by writing()
            await self.health.writing(
                "give-back of a send", self.queue.give_back, job, now=self.clock(), reason=reason
            )
        return GIVEN_BACK

    async def _failed_send(self, job: Job, err: ChannelError, facts: Mapping[str, Any]) -> str:
        text = _error_text(err)
        if isinstance(err, OptedOutError):
            await self.health.writing(
                "opt-out",
                self.queue.suppress,
                job.channel,
                job.recipient,
                f"recipient refused messages ({text})",
                now=self.clock(),
                changed=bool,
            )
            return await self._finish(job, NotificationStatus.SKIPPED, f"opted out: {text}",
                                      "permanent", rendered=facts)  # fmt: skip
        if isinstance(err, PermanentChannelError):
            return await self._finish(job, NotificationStatus.FAILED, text, "permanent",
                                      rendered=facts)  # fmt: skip
        transient = err if isinstance(err, TransientChannelError) else None
        retry_after = transient.retry_after if transient else None
        outage = transient.outage if transient else False
        return await self._retry_or_fail(job, text, retry_after, facts, outage=outage)

    async def _retry_or_fail(self, job: Job, text: str, retry_after: float | None,
                             facts: Mapping[str, Any], *, outage: bool = False) -> str:  # fmt: skip
        """Retry later, or give up: after ``max_attempts`` (an outage of the provider does not
        count: it says nothing about this message), or once past ``max_age``."""
        bounds = self._retry_bounds(job)
        due = self.clock() + self.backoff.delay(job.attempts, retry_after)
        if job.attempts >= bounds.max_attempts and not outage:
            reason = f"gave up after {job.attempts} attempts: {text}"
        elif due > job.created_at + bounds.max_age:
            reason = f"gave up: still failing {_age(bounds.max_age)} after it was planned: {text}"
        else:
            log.warning("notification %s: %s; retry at %s", job.id, text, due.isoformat())
            return await self._finish(job, NotificationStatus.RETRYING, text, "transient",
                                      due_at=due, rendered=facts)  # fmt: skip
        return await self._finish(job, NotificationStatus.FAILED, reason, "transient",
                                  rendered=facts)  # fmt: skip

    def _retry_bounds(self, job: Job) -> Retry:
        rules, _ = self.current()
        return rules.retry_for(job.rule)

    async def _finish(self, job: Job, status: NotificationStatus, reason: str, outcome: str, *,
                      provider_id: str | None = None, due_at: datetime | None = None,
                      rendered: Mapping[str, Any] | None = None) -> str:  # fmt: skip
        finish = Finish(
            job=job, now=self.clock(), status=status, reason=reason, outcome=outcome,
            provider_id=provider_id, due_at=due_at, rendered=rendered,
        )  # fmt: skip
        pause = FINISH_RETRY_FIRST
        while True:
            try:
                await self._finishes.submit(finish)
                self.health.stored()
                return status.value
            except StoreUnavailableError as err:
                self.health.refused("record of a send", err)
                # The outcome (maybe "the provider took it") exists only in memory now: keep
                # it and try again, rather than leave the row ``sending`` for its lease to run
                # out and the message to go out a second time.
                log.warning("notification %s: %s, but cannot record it (%s); retrying in "
                            "%.1fs", job.id, status.value, err, pause)  # fmt: skip
                await asyncio.sleep(pause)
                pause = min(pause * 2, FINISH_RETRY_CAP)


def _send_of(rules: RuleSet, job: Job) -> Send | None:
    rule = rules.rule(job.rule)
    return next((s for s in rule.send if s.channel == job.channel), None) if rule else None


def _facts(job: Job, rendered: Rendered) -> dict[str, Any]:
    """What the log keeps of the rendered message; SMS gets its encoding and segment count.
    ``language`` is the variant actually sent (None: default), not the one the shopper asked for."""
    facts: dict[str, Any] = {"subject": rendered.subject, "body": rendered.text}
    facts["html"] = rendered.html
    facts["language"] = rendered.language
    if job.channel != ChannelKind.EMAIL:
        info = count_segments(rendered.text)
        facts |= {"encoding": info.encoding, "segments": info.segments}
    return facts


def _error_text(err: Exception) -> str:
    code = getattr(err, "code", None)
    return f"{err} (code {code})" if code else str(err)


def _age(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g}{unit}"
    return f"{seconds:.0f}s"
