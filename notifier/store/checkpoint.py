"""Checkpoints on a thread of their own, so the commit that answers webhooks does not copy pages.

In WAL mode a commit appends the pages it changed to the WAL; a *checkpoint* copies them back
into the database file. SQLite runs one itself in the committing connection once the WAL holds
1,000 pages, and everyone waiting on that commit waits for the copy too. In a large database
each update dirties about ten pages at random places, so that copy is a good part of a commit's
time (at a million shipments, about 100 µs of system time per webhook, most of the copying).

A :class:`Checkpointer` runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection shortly
after each write commits. A passive checkpoint never waits for or blocks the writer or the
readers, and sqlite3 releases the GIL while it runs, so the copying happens on another core
while the event loop and the next batch go on. The writer keeps its automatic checkpoint: when
it fires, it finds nearly every page copied already, copies the few left, and lets the next
transaction start the WAL from the beginning again. (Without it the WAL never restarts: a
background checkpoint rarely finishes at the very moment no write is in progress, and the file
grows without end; a test holds this. A larger threshold for it was tried: the WAL grew to
50 MB and nothing got faster.) A batch that alone writes more than 1,000 pages is still copied
by the writer, before the thread is woken.

No commits, no work: the thread waits for the next write, and ends after a while without one.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

log = logging.getLogger("notifier.store")

#: How long the thread lets commits gather before it copies their pages: one checkpoint then
#: serves several group commits.
PAUSE = 0.01
#: A thread with nothing to copy for this long ends (closing its connection); the next commit
#: starts another. An idle daemon, or a program that forgot to dispose of its database, keeps
#: no thread and no open file for it.
IDLE = 2.0


class Checkpointer:
    """Background PASSIVE checkpoints of one SQLite file. ``nudge()`` after each commit; a
    thread starts on the first one. ``close()`` stops it."""

    def __init__(self, path: str, *, pause: float = PAUSE, idle: float = IDLE) -> None:
        self.path = path
        self.pause = pause
        self.idle = idle
        self.checkpoints = 0  # runs so far
        self.last: tuple[int, int, int] | None = None  # (busy, WAL frames, frames copied)
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards _thread and _closed against lost wake-ups
        self._thread: threading.Thread | None = None
        self._closed = False
        self._failing = False

    def nudge(self) -> None:
        """A write committed: copy its pages soon."""
        with self._lock:
            self._wake.set()
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._run, name="notifier-checkpoint", daemon=True
                )
                self._thread.start()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
            self._wake.set()
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            self._failed("no background checkpoints for %s: %s (the writer's own go on)",
                         self.path, err)  # fmt: skip
            with self._lock:
                self._thread = None
            return
        try:
            while self._wanted():
                time.sleep(self.pause)
                self._wake.clear()  # a commit from now on asks for another round
                if self._closed:
                    return
                self._checkpoint(conn)
        finally:
            conn.close()

    def _wanted(self) -> bool:
        """Wait for a commit; False when closed, or idle long enough to end the thread."""
        while not self._wake.wait(self.idle):
            with self._lock:  # a nudge now either sees no thread and starts one, or is seen
                if not self._wake.is_set():
                    self._thread = None
                    return False
        return not self._closed

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as err:
            # The writer's own checkpoints go on, and a full or broken disk shows on its
            # commits (answered 503); say it once here, not every few milliseconds.
            self._failed("background checkpoint failed: %s (the writer's own go on)", err)
            return
        self._failing = False
        self.checkpoints += 1
        self.last = (busy, frames, copied)

    def _failed(self, message: str, *args: object) -> None:
        (log.debug if self._failing else log.warning)(message, *args)
        self._failing = True
