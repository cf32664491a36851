"""The outbox channel: messages written to files instead of sent.

Used whenever no provider is configured, so a newcomer sees what would have gone out:
``outbox/email/<id>.eml`` (a real RFC 5322 message, openable in any mail client),
``outbox/sms.jsonl`` and ``outbox/whatsapp.jsonl`` (one JSON object a line).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from notifier.channels.base import Channel, OutgoingMessage, SendReceipt
from notifier.channels.smtp_email import compose
from notifier.errors import PermanentChannelError, TransientChannelError
from notifier.events import ChannelKind


class OutboxChannel(Channel):
    def __init__(self, kind: ChannelKind, directory: Path, *, sender: str = "") -> None:
        self.kind = kind
        self.directory = directory
        self.sender = sender or "notifier@localhost"
        self._lock = asyncio.Lock()

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        try:
            async with self._lock:
                return await asyncio.to_thread(self._write, message)
        except OSError as err:  # a full or read-only disk is worth retrying later
            raise TransientChannelError(f"outbox not writable: {err}", outage=True) from err
        except ValueError as err:  # e.g. a line break in a header: this message, for good
            raise PermanentChannelError(f"cannot build the email: {err}") from err

    def _write(self, message: OutgoingMessage) -> SendReceipt:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.kind is ChannelKind.EMAIL:
            return self._write_email(message)
        line = {
            "id": message.notification_id,
            "to": message.to,
            "text": message.text,
            "at": datetime.now(UTC).isoformat(),
        }
        path = self.directory / f"{self.kind.value}.jsonl"
        _append(path, (json.dumps(line, ensure_ascii=False) + "\n").encode())
        return SendReceipt(provider_id=f"outbox:{self.kind.value}:{message.notification_id}")

    def _write_email(self, message: OutgoingMessage) -> SendReceipt:
        """The .eml is the message SMTP would send, headers and all (smtp_email.compose)."""
        mail = compose(message, sender=self.sender)
        folder = self.directory / "email"
        folder.mkdir(exist_ok=True)
        path = folder / f"{message.notification_id}.eml"
        _replace(path, mail.as_bytes())
        return SendReceipt(provider_id=f"outbox:{path.name}")


def _append(path: Path, data: bytes) -> None:
    """Append one whole line or nothing: a disk that fills mid-write leaves part of the line,
    which would break every reader of the file, so it is cut off again before the error goes up
    (and the send is retried)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def _replace(path: Path, data: bytes) -> None:
    """Write a whole file or none: written aside, then renamed into place."""
    part = path.with_name(path.name + ".part")
    try:
        part.write_bytes(data)
        os.replace(part, path)
    except OSError:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
