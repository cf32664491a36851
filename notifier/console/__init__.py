"""The support console: server-rendered pages at ``/console`` for support agents.

Find a customer's shipment by waybill, order number, phone or email; see its journey and
every message with its reason; browse and export the delivery log; preview what the loaded
rules would send; resend or cancel a message. ``docs/console.md`` is the guide.
"""

from __future__ import annotations

from notifier.console.routes import console_router
from notifier.console.sessions import Role

__all__ = ["Role", "console_router"]
