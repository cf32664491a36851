"""Claim due notifications, render them, send them, record every attempt.

Persist, then send: a row is claimed (status ``sending`` with a lease) before the provider is
called, and finished after. A crash in between leaves the row ``sending``; once its lease runs
out the next dispatcher claims it again and sends it again. That is the one window in which a
customer can get a message twice (design.md, "Delivery"), and it is as long as one provider call.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from notifier import recipients
from notifier.channels.base import Channel, OutgoingMessage
from notifier.clickpost.models import parse_registration, parse_webhook
from notifier.errors import PermanentChannelError, TemplateError, TransientChannelError
from notifier.events import ChannelKind, NotificationStatus
from notifier.rendering import Rendered, Renderer, build_context
from notifier.rules import RuleSet
from notifier.segments import count_segments
from notifier.store.repository import Job, Store

log = logging.getLogger("notifier.dispatch")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded in attempts."""

    max_attempts: int = 5
    base: timedelta = timedelta(seconds=30)
    cap: timedelta = timedelta(hours=1)

    def delay(self, attempt: int, retry_after: float | None = None) -> timedelta:
        backoff = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        jittered: timedelta = backoff * random.uniform(0.5, 1.0)
        hinted = timedelta(seconds=retry_after or 0)
        return jittered if jittered > hinted else hinted


@dataclass(kw_only=True)
class DispatchReport:
    """Counts of what one ``dispatch_due`` call did, by final status of each attempt."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Dispatcher:
    def __init__(
        self,
        store: Store,
        channels: Mapping[ChannelKind, Channel],
        *,
        current: Callable[[], tuple[RuleSet, Renderer]],
        clock: Callable[[], datetime],
        retry: RetryPolicy | None = None,
        batch: int = 200,
        lease: timedelta = timedelta(minutes=2),
        concurrency: int = 16,
        email_domain: str = "notifier.local",
    ) -> None:
        self.store = store
        self.channels = channels
        self.current = current
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self.batch = batch
        self.lease = lease
        self.email_domain = email_domain
        self._limit = asyncio.Semaphore(concurrency)

    async def dispatch_due(self) -> DispatchReport:
        """Send everything due now, batch by batch, until nothing due is left."""
        report = DispatchReport()
        while True:
            now = self.clock()
            jobs = await asyncio.to_thread(
                self.store.claim_due, now=now, limit=self.batch, lease_until=now + self.lease
            )
            if not jobs:
                return report
            await self._send_batch(jobs, report)
            if len(jobs) < self.batch:
                return report

    async def _send_batch(self, jobs: list[Job], report: DispatchReport) -> None:
        kinds = {ChannelKind(j.channel) for j in jobs}
        for kind in kinds:
            await self.channels[kind].open()
        try:
            results = await asyncio.gather(*(self._guarded(job) for job in jobs))
        finally:
            for kind in kinds:
                await self.channels[kind].close()
        for status in results:
            report.add(status)

    async def _guarded(self, job: Job) -> str:
        async with self._limit:
            return await self._send_one(job)

    async def _send_one(self, job: Job) -> str:
        now = self.clock()
        if job.expires_at is not None and now > job.expires_at:
            reason = f"expired: too old to matter after {job.expires_at:%Y-%m-%d %H:%M}Z"
            return await self._finish(job, NotificationStatus.EXPIRED, reason, outcome="expired")
        try:
            rendered = self._render(job)
        except TemplateError as err:
            return await self._finish(
                job, NotificationStatus.FAILED, f"template: {err}", outcome="permanent"
            )
        facts = _facts(job, rendered)
        message = OutgoingMessage(
            notification_id=job.id,
            channel=ChannelKind(job.channel),
            to=job.recipient,
            text=rendered.text,
            subject=rendered.subject,
            html=rendered.html,
            message_id=f"<notification.{job.id}@{self.email_domain}>",
        )
        try:
            receipt = await self.channels[message.channel].send(message)
        except TransientChannelError as err:
            return await self._retry_or_fail(job, err, facts)
        except PermanentChannelError as err:
            return await self._finish(
                job,
                NotificationStatus.FAILED,
                _error_text(err),
                outcome="permanent",
                rendered=facts,
            )
        except Exception as err:  # a bug or an untranslated provider error: retry, bounded
            log.exception("notification %s: unexpected error from %s", job.id, job.channel)
            return await self._retry_or_fail(job, TransientChannelError(repr(err)), facts)
        log.info(
            "notification %s sent by %s to %s", job.id, job.channel, recipients.mask(job.recipient)
        )
        return await self._finish(
            job,
            NotificationStatus.SENT,
            "",
            outcome="sent",
            provider_id=receipt.provider_id,
            rendered=facts,
        )

    def _render(self, job: Job) -> Rendered:
        rules, renderer = self.current()
        registration = parse_registration(job.registration)
        update = parse_webhook(job.event_raw) if job.event_raw else None
        context = build_context(
            registration=registration,
            update=update,
            brand=rules.defaults.brand,
            tracking_url=rules.defaults.tracking_url,
            consumer_phone=job.recipient if job.channel != ChannelKind.EMAIL else "",
            now=self.clock(),
        )
        return renderer.render(ChannelKind(job.channel), job.template, context)

    async def _retry_or_fail(
        self, job: Job, err: TransientChannelError, facts: Mapping[str, Any]
    ) -> str:
        text = _error_text(err)
        if job.attempts >= self.retry.max_attempts:
            return await self._finish(
                job,
                NotificationStatus.FAILED,
                f"gave up after {job.attempts} attempts: {text}",
                outcome="transient",
                rendered=facts,
            )
        due = self.clock() + self.retry.delay(job.attempts, err.retry_after)
        log.warning("notification %s: %s; retry at %s", job.id, text, due.isoformat())
        return await self._finish(
            job, NotificationStatus.RETRYING, text, outcome="transient", due_at=due, rendered=facts
        )

    async def _finish(
        self,
        job: Job,
        status: NotificationStatus,
        reason: str,
        *,
        outcome: str,
        provider_id: str | None = None,
        due_at: datetime | None = None,
        rendered: Mapping[str, Any] | None = None,
    ) -> str:
        await asyncio.to_thread(
            self.store.finish,
            job,
            now=self.clock(),
            status=status,
            reason=reason,
            outcome=outcome,
            provider_id=provider_id,
            due_at=due_at,
            rendered=rendered,
        )
        return status.value


def _facts(job: Job, rendered: Rendered) -> dict[str, Any]:
    """What the log keeps of the rendered message; SMS gets its encoding and segment count."""
    facts: dict[str, Any] = {
        "subject": rendered.subject,
        "body": rendered.text,
        "html": rendered.html,
    }
    if job.channel != ChannelKind.EMAIL:
        info = count_segments(rendered.text)
        facts |= {"encoding": info.encoding, "segments": info.segments}
    return facts


def _error_text(err: Exception) -> str:
    code = getattr(err, "code", None)
    return f"{err} (code {code})" if code else str(err)
