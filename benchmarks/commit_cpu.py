"""CPU per update of ingest's commit side alone, at a chosen batch size: for profiling.

    .venv/bin/python benchmarks/commit_cpu.py [--batch 32] [--shipments 10000] [--rounds 3]
                                              [--profile FILE]

Calls what the group commit's worker thread calls (``Notifier._record``: one transaction
storing a batch of parsed updates and planning their notifications) on batches of ``--batch``
updates, one after another in this thread, and prints the thread's CPU time and the wall time
per update. No event loop, no HTTP, no other thread competing for the GIL: what is left is the
commit side's own Python and SQLite's work, the half of a webhook's cost that the lock-step of
docs/performance.md adds to the event loop's. Batches of 32 are what wrk's 32 connections
give the HTTP benchmark; embedded ingest's are about 250.

``--profile FILE`` writes a cProfile of the measured part (``python -m pstats FILE``).
Instruction counts, which this noisy machine does not move, come from running it under
``valgrind --tool=callgrind`` (about 40 times slower) for two versions of the code and
subtracting the totals: the setup is the same in both.

Not part of ``make bench``: it has no baseline to compare with, only earlier runs of itself.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import shutil
import tempfile
import time
from pathlib import Path

from common import bulk_register, settings, webhook

from notifier.app import Notifier
from notifier.clickpost.models import parse_webhook


async def measure(url: str, shipments: int, rounds: int, batch: int, profile: str | None) -> None:
    async with Notifier(settings(url, webhook_keys="bench-key")) as engine:
        updates = [parse_webhook(webhook(i, step)) for step in range(rounds)
                   for i in range(shipments)]  # fmt: skip
        engine._record(updates[:batch])  # warm-up: statements compiled, caches filled
        updates = updates[batch:]
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        cpu, wall = time.thread_time(), time.perf_counter()
        for first in range(0, len(updates), batch):
            engine._record(updates[first : first + batch])
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(profile)
        print(f"batches of {batch}: {cpu / len(updates) * 1e6:.1f} µs CPU per update, "
              f"{wall / len(updates) * 1e6:.1f} µs wall ({len(updates)} updates, "
              f"{shipments} shipments)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--shipments", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="updates per shipment")
    parser.add_argument("--profile", help="write a cProfile of the measured part here")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="notifier-commit-"))
    try:
        url = f"sqlite:///{workdir / 'notifier.db'}"
        bulk_register(url, args.shipments)
        asyncio.run(measure(url, args.shipments, args.rounds, args.batch, args.profile))
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
