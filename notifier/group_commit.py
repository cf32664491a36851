"""Group commit: many concurrent callers, one transaction, each answered after its commit.

A webhook is answered 200 only once its event and planned notifications are committed. One
transaction per webhook pays a commit (an fsync on SQLite) and a round of statements each time,
and on SQLite every writer waits for the one before. Instead, callers queue their item and
wait; a single flusher takes everything queued, commits it as one batch in a worker thread, and
wakes each caller with its own result. While a batch commits, the next one gathers, so the batch
size follows the load: one item when traffic is light (no added latency), hundreds under a burst.

Under sustained load a committing batch finishes while the next webhooks are still being read
and parsed, so batches come out small and each pays the commit's fixed cost (begin, eight
statements, fsync: about 1.5 ms on SQLite here). So, like PostgreSQL's ``commit_delay`` with
``commit_siblings``, a flusher whose previous batch held several items waits up to ``gather``
seconds before taking the next: one commit then serves the callers that arrive meanwhile. The
wait ends early once as many callers are queued as the previous batch held: clients that each
wait for their answer before sending again (a sender with a fixed number of connections) are
all back by then, and waiting longer only leaves both the event loop and the committing thread
idle. A caller after a lone one (light traffic), or after a pause, is committed at once.

If the batch fails as a whole because the database is unavailable, every caller gets that error
(the webhook is answered 503 and Clickpost sends it again). If it fails for any other reason,
each item is retried in a batch of its own, so one bad item cannot take its neighbours down.

While a batch commits, Python's cyclic garbage collector is paused (``collector_paused``). A
batch builds tens of thousands of short-lived objects (rows, plans, outcomes) that hold no
cycles and are freed as it ends; a collection in the middle of it frees none of them but moves
them to an older generation, and once enough have moved, a full collection walks the whole heap
of the process (80 ms a time in embedded ingest's process). Collections resume, and catch up,
when the batch ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from notifier.errors import StoreUnavailableError

_I = TypeVar("_I")
_R = TypeVar("_R")


class GroupCommit(Generic[_I, _R]):
    """Batches calls to ``commit(items) -> results`` (blocking; run in a thread)."""

    def __init__(
        self,
        commit: Callable[[Sequence[_I]], list[_R]],
        *,
        max_batch: int = 500,
        gather: float = 0.0,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._gather = gather
        self._last = 0  # the size of the batch committed last
        self._last_at = 0.0  # and when it was taken (the event loop's clock)
        self._queue: list[tuple[_I, asyncio.Future[_R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._gathering: asyncio.Future[None] | None = None  # set while a flush gathers
        self.batches = 0  # for tests and metrics: how many transactions served the calls

    async def submit(self, item: _I) -> _R:
        """Queue ``item``; return its result once the batch holding it has committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_R] = loop.create_future()
        self._queue.append((item, future))
        if self._gathering is not None and len(self._queue) >= self._last:
            _settle(self._gathering)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await future

    async def drain(self) -> None:
        """Wait until everything queued so far has been committed (at shutdown)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if self._arriving_together(loop.time()):
                await self._gathered(loop)
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            self._last, self._last_at = len(batch), loop.time()
            await self._run(batch)

    def _arriving_together(self, now: float) -> bool:
        """Whether to wait for more callers: the last batch held several, a moment ago (a
        hundred gathers: a pause longer than that means the burst is over), and fewer than that
        are queued."""
        recent = now - self._last_at < 100 * self._gather
        return self._gather > 0 and self._last > 1 and recent and len(self._queue) < self._last

    async def _gathered(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait ``gather`` seconds, or until as many callers are queued as the last batch held."""
        self._gathering = loop.create_future()
        timer = loop.call_later(self._gather, _settle, self._gathering)
        try:
            await self._gathering
        finally:
            timer.cancel()
            self._gathering = None

    def _commit_paused(self, items: list[_I]) -> list[_R]:
        with collector_paused():
            return self._commit(items)

    async def _run(self, batch: list[tuple[_I, asyncio.Future[_R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await asyncio.to_thread(self._commit_paused, items)
        except StoreUnavailableError as err:
            for _, future in batch:
                _settle(future, error=err)
            return
        except Exception as err:
            if len(batch) == 1:
                _settle(batch[0][1], error=err)
                return
            for one in batch:  # find the bad item: the others still commit
                await self._run([one])
            return
        self.batches += 1
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)


_pause_lock = threading.Lock()
_pauses = 0  # batches committing now, in any thread
_resume = False  # whether the collector was enabled when the first of them began


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block; nested and concurrent uses share one
    pause. A collector that was already disabled (by the application) stays so."""
    global _pauses, _resume
    with _pause_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()


def _settle(
    future: asyncio.Future[_R], *, result: _R | None = None, error: BaseException | None = None
) -> None:
    if future.done():  # the caller went away (a client that hung up); its item still counts
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]
