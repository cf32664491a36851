"""notifier: Clickpost tracking updates → the right SMS, WhatsApp and email, once each.

The embedded API::

    from notifier import Notifier, Settings
    async with Notifier(Settings()) as n:
        await n.register_shipment(awb_register_body)
        outcome = await n.handle_webhook(body, headers)
        await n.dispatch_due()
"""

from __future__ import annotations

from notifier.app import Notifier, SyncNotifier
from notifier.dispatch import DispatchReport
from notifier.errors import (
    AuthenticationError,
    ChannelError,
    ConfigurationError,
    InputError,
    NotifierError,
    PermanentChannelError,
    RulesError,
    TemplateError,
    TransientChannelError,
)
from notifier.settings import Settings
from notifier.store.repository import IngestOutcome, RegistrationOutcome

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ChannelError",
    "ConfigurationError",
    "DispatchReport",
    "IngestOutcome",
    "InputError",
    "Notifier",
    "NotifierError",
    "PermanentChannelError",
    "RegistrationOutcome",
    "RulesError",
    "Settings",
    "SyncNotifier",
    "TemplateError",
    "TransientChannelError",
]
