"""The channel interface real providers plug into, one module each.

A channel turns one rendered :class:`OutgoingMessage` into a provider call and answers with a
:class:`SendReceipt`, or raises :class:`~notifier.errors.TransientChannelError` (retry later) or
:class:`~notifier.errors.PermanentChannelError` (give up). Provider errors are translated into
those two once, inside the provider's module; nothing else imports a provider SDK.

``open``/``close`` bracket a dispatch batch so a provider can reuse one connection for it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass

from notifier.events import ChannelKind


@dataclass(frozen=True, kw_only=True)
class OutgoingMessage:
    notification_id: int
    channel: ChannelKind
    to: str
    text: str
    subject: str | None = None
    html: str | None = None
    message_id: str = ""  # stable per notification: a resend after a crash carries the same one
    unsubscribe_url: str | None = None  # email: List-Unsubscribe (RFC 8058) when configured
    content_sid: str | None = None  # WhatsApp: an approved template (Twilio Content API)
    content_variables: Mapping[str, str] | None = None  # its numbered variables, rendered


@dataclass(frozen=True, kw_only=True)
class SendReceipt:
    provider_id: str


class Channel(abc.ABC):
    """One way of reaching a customer. Subclasses implement :meth:`send`."""

    kind: ChannelKind

    async def open(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Prepare for a batch of sends (connect, log in). Default: nothing to do."""

    async def close(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Release what :meth:`open` took. Default: nothing to do."""

    @abc.abstractmethod
    async def send(self, message: OutgoingMessage) -> SendReceipt:
        """Hand the message to the provider; raise a ChannelError subclass when it refuses."""
