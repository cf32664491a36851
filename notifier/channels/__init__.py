"""Channels: one module per provider, chosen from the settings.

Adding a provider is one module, one line in :func:`build_channels`, one test file.
"""

from __future__ import annotations

from notifier.channels.base import Channel, OutgoingMessage, SendReceipt
from notifier.channels.outbox import OutboxChannel
from notifier.events import ChannelKind
from notifier.settings import Settings

__all__ = ["Channel", "OutboxChannel", "OutgoingMessage", "SendReceipt", "build_channels"]


def build_channels(settings: Settings) -> dict[ChannelKind, Channel]:
    """A channel for every kind: the configured provider, else the outbox."""
    sender = settings.email_from or ""
    return {kind: OutboxChannel(kind, settings.outbox_dir, sender=sender) for kind in ChannelKind}
