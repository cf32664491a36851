"""Every performance figure of notifier, in one run: ``make bench``.

    .venv/bin/python benchmarks/run_all.py [--quick]

Runs, one after the other so they do not share the CPU:

1. benchmarks/http_ingest.py: webhooks/s over HTTP against bare FastAPI and plain ASGI
   endpoints, one daemon on SQLite, and 1, 2 and 3 daemons on one PostgreSQL database (wrk,
   32 connections);
2. benchmarks/embedded_ingest.py: ``handle_webhook`` in process, against raw sqlite3;
3. benchmarks/dispatch_throughput.py: SMS and email sent end to end by one process;
4. benchmarks/sms_throughput.py and benchmarks/email_throughput.py: the channels alone, the
   ceiling for 3;
5. benchmarks/growth.py: ingest at 10,000 and at 1,000,000 shipments, bytes per shipment,
   daemon RSS.

``--quick`` shortens every run (and grows to 100,000 shipments, not a million): a smoke test of
the benchmarks themselves, not figures to quote. Needs wrk (``apt-get install wrk``) and
PostgreSQL on 127.0.0.1:5432 for the multi-daemon figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    quick = args.quick
    runs = [
        ["http_ingest.py", "--duration", "4" if quick else "10"],
        ["embedded_ingest.py", "--events", "6000" if quick else "30000"],
        ["dispatch_throughput.py", "--sms", "1000" if quick else "5000",
         "--email", "300" if quick else "2000"],
        ["sms_throughput.py", "--count", "1000" if quick else "3000", "--concurrency", "16"],
        ["email_throughput.py", "--count", "300" if quick else "2000", "--connections", "1,2,4"],
        ["growth.py", "--large", "100000" if quick else "1000000",
         "--duration", "4" if quick else "10", "--rounds", "1" if quick else "3"],
    ]  # fmt: skip
    began = time.monotonic()
    for script, *options in runs:
        print(f"\n=== {script} {' '.join(options)}", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script), *options], cwd=HERE.parent)
        if result.returncode:
            raise SystemExit(f"{script} failed ({result.returncode})")
    print(f"\nall benchmarks done in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
