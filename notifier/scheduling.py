"""The daemon's timer: the only module that imports APScheduler.

APScheduler 3.11 only wakes things up; the database stays the source of truth (design.md), so
nothing is lost when the process dies. Jobs:

- dispatch, every second (and at once when :meth:`Scheduler.wake` is called after a webhook):
  claims due rows, including rows whose sender died (their lease ran out), and sends them;
- reload, every two seconds: rules.yaml or a template edited → checked and live, or reported;
- retention, every six hours: raw bodies and personal data older than the retention period go;
- on PostgreSQL, every ten minutes: this host's clock against the database server's, warned of
  when they disagree by more than a couple of seconds (``Notifier.check_clock``);
- with Clickpost settings: the calls owed to Clickpost (awb-register, awb-unregister) every
  five seconds, and polling every ``NOTIFIER_POLL_INTERVAL`` seconds (0: no polling).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from notifier.app import Notifier
from notifier.errors import NotifierError

log = logging.getLogger("notifier.scheduling")


class Scheduler:
    def __init__(
        self,
        notifier: Notifier,
        *,
        dispatch_every: float = 1.0,
        reload_every: float = 2.0,
        retention_days: int = 90,
    ) -> None:
        self.notifier = notifier
        self.retention_days = retention_days
        self._inflight: set[asyncio.Task[object]] = set()
        self._inflight_names: set[str] = set()
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._every("dispatch", self._dispatch, seconds=dispatch_every)
        self._every("reload", self._reload, seconds=reload_every)
        self._every("retention", self._retention, seconds=6 * 3600)
        self._every("ingest-summary", self._summarise, seconds=60, start=False)
        if not notifier.db.is_sqlite:  # one clock on SQLite: the host's
            self._every("clock", self._clock, seconds=600)
        if notifier.clickpost_sync is not None:
            self._every("clickpost-calls", self._clickpost_calls, seconds=5)
            if notifier.settings.poll_interval > 0:
                self._every("poll", self._poll, seconds=notifier.settings.poll_interval)
        self.last_dispatch: datetime | None = None
        self.stopping = False
        self._woken = False

    def _every(
        self, name: str, job: Callable[[], Awaitable[None]], *, seconds: float, start: bool = True
    ) -> None:
        """Run ``job`` every ``seconds``; at once as well unless ``start`` is False."""
        self._scheduler.add_job(
            self._tracked(name, job), "interval", seconds=seconds, id=name, name=name,
            max_instances=1, coalesce=True, misfire_grace_time=None,
            **({"next_run_time": datetime.now(UTC)} if start else {}),
        )  # fmt: skip

    def _tracked(
        self, name: str, job: Callable[[], Awaitable[None]]
    ) -> Callable[[], Awaitable[None]]:
        """Run ``job`` as a task the shutdown can wait for; log, never raise, its failures."""

        async def run() -> None:
            task = asyncio.current_task()
            if task is not None:
                self._inflight.add(task)
            self._inflight_names.add(name)
            try:
                await job()
            except NotifierError as err:  # the database locked or down: the next run retries
                log.warning("%s job: %s", name, err)
            except Exception:
                log.exception("%s job failed", name)
            finally:
                self._inflight_names.discard(name)
                if task is not None:
                    self._inflight.discard(task)

        return run

    async def _dispatch(self) -> None:
        self._woken = False
        report = await self.notifier.dispatch_due(stop=lambda: self.stopping)
        self.last_dispatch = datetime.now(UTC)
        if report.total:
            log.info("dispatched: %s", report.counts)

    async def _clock(self) -> None:
        await self.notifier.check_clock()

    async def _summarise(self) -> None:
        summary = self.notifier.summarise_ingest()
        if summary:
            log.info("ingest, last minute: %s", summary)

    async def _clickpost_calls(self) -> None:
        if self.notifier.clickpost_sync is not None:
            await self.notifier.clickpost_sync.make_owed_calls()

    async def _poll(self) -> None:
        if self.notifier.clickpost_sync is not None:
            await self.notifier.clickpost_sync.poll()
            self.wake()

    async def _reload(self) -> None:
        await asyncio.to_thread(self.notifier.reload_if_changed)

    async def _retention(self) -> None:
        purged = await self.notifier.purge_expired_data(self.retention_days)
        if any(vars(purged).values()):
            log.info("retention: %s", purged)

    def start(self) -> None:
        self._scheduler.start()

    def wake(self) -> None:
        """Run the dispatcher now (new work was just committed) instead of within a second.

        Not while it is running: the running pass claims the new work itself; and only once
        until it runs, however many webhooks ask meanwhile."""
        if self._inflight_names & {"dispatch"} or self.stopping or self._woken:
            return
        job = self._scheduler.get_job("dispatch")
        if job is not None:
            self._woken = True
            job.modify(next_run_time=datetime.now(UTC))

    @property
    def alive(self) -> bool:
        return bool(self._scheduler.running)

    async def shutdown(self, *, grace: float = 10.0) -> None:
        """Stop starting jobs; give running sends ``grace`` seconds to finish, then cancel them.

        A cancelled send stays claimed; its lease runs out and the next start sends it.
        """
        # APScheduler 3.11's asyncio executor cancels running jobs on shutdown whatever `wait`
        # says (executors/asyncio.py), so pause first, let the jobs finish, then shut down.
        self.stopping = True
        if self._scheduler.running:
            self._scheduler.pause()
        running = set(self._inflight)
        pending: set[asyncio.Task[object]] = set()
        if running:
            _, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
            await asyncio.sleep(0)  # AsyncIOScheduler stops on the loop's next turn
        if pending:
            log.warning(
                "shutdown: %d job(s) still running after %.0fs, cancelled", len(pending), grace
            )
