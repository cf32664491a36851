"""Whether the database is taking writes, for ``/healthz`` and ``/readyz``.

Reads still answer on a full disk, so a ping alone says "ok" while every write fails. The
engine's writes report here (a webhook's update, a registration, an unregistration, a delivery
receipt, the dispatcher's claims and records of sends, opt-outs and opt-ins, the console's
resend and cancel, retention, erasure): from a refused write until one is stored, the daemon
is not ready, and says since when and why, in words that name no server (the driver's message
may carry hosts and users, and ``/healthz`` answers anyone). A write counts as stored only
when it changed something: a duplicate webhook, an opt-out already on file or an opt-in for an
address never opted out can go through on a disk that refuses everything new, so they prove
nothing and clear no refusal; nor do the dispatcher's claims, which run every second and
mostly find nothing due: they only report refusals.

A refusal is also forgotten ``REFUSAL_MEMORY`` after the last one: a load balancer that stops
sending to a daemon that is not ready would otherwise keep it from ever storing anything again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from notifier.errors import StoreUnavailableError

_R = TypeVar("_R")

# How long one refused write keeps the daemon "not ready" when no other comes after it.
REFUSAL_MEMORY = timedelta(seconds=30)


@dataclass(frozen=True)
class Refusal:
    """Writes are being refused: since when (the first refusal after the last write stored),
    the latest, why in a few words, and what the latest was (``webhook``, ``registration``…)."""

    since: datetime
    last: datetime
    reason: str
    what: str


class WriteHealth:
    """What the engine's writes have met lately. Used from the event loop."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._refusing: Refusal | None = None

    def refused(self, what: str, err: StoreUnavailableError) -> None:
        now = self.clock()
        since = self._refusing.since if self._refusing else now
        self._refusing = Refusal(since=since, last=now, reason=unavailable_reason(err), what=what)

    def stored(self) -> None:
        self._refusing = None

    def refusal(self) -> Refusal | None:
        """The current refusal, or None: writes are being stored, or none was refused lately."""
        refusing = self._refusing
        if refusing is None or self.clock() - refusing.last >= REFUSAL_MEMORY:
            return None
        return refusing

    async def writing(
        self,
        what: str,
        call: Callable[..., _R],
        *args: Any,
        changed: Callable[[_R], bool] = lambda _: True,
        **kwargs: Any,
    ) -> _R:
        """``call(*args, **kwargs)`` in a worker thread, its refusal noted, and its success
        when ``changed(result)`` says it wrote something."""
        try:
            result = await asyncio.to_thread(call, *args, **kwargs)
        except StoreUnavailableError as err:
            self.refused(what, err)
            raise
        if changed(result):
            self.stored()
        return result


def unavailable_reason(err: StoreUnavailableError) -> str:
    """What an operator acts on, from the driver's message."""
    text = str(err).lower()
    if "full" in text or "no space" in text:
        return "database or disk is full"
    if "locked" in text or "busy" in text:
        return "database is locked by another writer"
    if "read-only" in text or "readonly" in text:
        return "database is read-only"
    if err.conflict:
        return "transactions kept conflicting with another daemon's"
    return "database unreachable"
