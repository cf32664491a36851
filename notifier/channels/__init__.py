"""Channels: one module per provider, chosen from the settings.

Adding a provider is one module, one line in :func:`build_channels`, one test file
(docs/channels.md).
"""

from __future__ import annotations

from notifier.channels.base import Channel, OutgoingMessage, SendReceipt
from notifier.channels.outbox import OutboxChannel
from notifier.events import ChannelKind
from notifier.settings import Settings

__all__ = ["Channel", "OutboxChannel", "OutgoingMessage", "SendReceipt", "build_channels"]


def build_channels(settings: Settings) -> dict[ChannelKind, Channel]:
    """A channel for every kind: the configured provider, else the outbox.

    Twilio sends SMS once an account SID is set, and WhatsApp once a WhatsApp sender is set
    too; SMTP sends email once a host is set. A partial configuration raises
    ConfigurationError naming the missing setting, rather than quietly using the outbox.
    """
    from notifier.channels.smtp_email import SmtpChannel
    from notifier.channels.twilio import TwilioChannel

    outbox = {k: OutboxChannel(k, settings.outbox_dir, sender=settings.email_from or "")
              for k in ChannelKind}  # fmt: skip
    channels: dict[ChannelKind, Channel] = dict(outbox)
    if settings.twilio_account_sid:
        channels[ChannelKind.SMS] = TwilioChannel.from_settings(ChannelKind.SMS, settings)
        if settings.twilio_whatsapp_from:
            channels[ChannelKind.WHATSAPP] = TwilioChannel.from_settings(
                ChannelKind.WHATSAPP, settings
            )
    if settings.smtp_host:
        channels[ChannelKind.EMAIL] = SmtpChannel.from_settings(settings)
    return channels
