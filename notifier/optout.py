"""Opting out: signed one-click unsubscribe links for email, SMS STOP, channel preferences.

Every refusal becomes a row of the ``suppression`` table (channel, address, reason), which the
dispatcher reads: a suppressed send is ``skipped`` with ``opted out: <reason>`` in the log.

Unsubscribe links (RFC 8058). With ``NOTIFIER_SECRET_KEY`` and ``NOTIFIER_PUBLIC_URL`` set,
every email carries ``List-Unsubscribe: <PUBLIC_URL/unsubscribe/TOKEN>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. The token is ``<notification id>.<mac>``:
an HMAC-SHA256 over the notification id, channel and recipient address. It names no person
(links end up in proxy and access logs), cannot be forged or moved to another address, and needs
no table of its own; it works as long as the notification keeps its recipient, that is until
the retention period (``NOTIFIER_RETENTION_DAYS``) or ``notifier forget`` clears it. Without a
secret key no link is made at all (nothing insecure is derived from other settings), unless the
older ``NOTIFIER_UNSUBSCRIBE_URL`` names a page of the merchant's own.

SMS STOP. Twilio's error 21610 suppresses the number (dispatch); an inbound message to
``/callbacks/twilio/inbound`` whose body is a STOP word suppresses the sender, and START/UNSTOP
lifts it. Twilio's webhook signature is checked as for status callbacks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
from collections.abc import Mapping
from dataclasses import dataclass, field

from notifier import recipients
from notifier.errors import ConfigurationError, InputError
from notifier.events import ChannelKind

UNSUBSCRIBE_PATH = "/unsubscribe/"
INBOUND_PATH = "/callbacks/twilio/inbound"
MIN_SECRET_CHARS = 16
#: Twilio's opt-out and opt-in keywords (the whole message, any case; Twilio's own list).
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "UNSTOP"})
_MAC_BYTES = 16


@dataclass(frozen=True, kw_only=True)
class UnsubscribeLinks:
    """Makes and checks the signed links; ``public_url`` is where the daemon is reached."""

    secret: bytes = field(repr=False)
    public_url: str

    @classmethod
    def from_settings(cls, secret: str | None, public_url: str | None) -> UnsubscribeLinks | None:
        """None unless both are set; a short secret is a configuration error, named."""
        if not secret or not public_url:
            return None
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigurationError(
                f"NOTIFIER_SECRET_KEY is too short: use at least {MIN_SECRET_CHARS} random "
                "characters (e.g. python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        return cls(secret=secret.encode(), public_url=public_url.rstrip("/"))

    def token(self, notification_id: int, channel: str, address: str) -> str:
        return f"{notification_id}.{self._mac(notification_id, channel, address)}"

    def url(self, notification_id: int, channel: str, address: str) -> str:
        return self.public_url + UNSUBSCRIBE_PATH + self.token(notification_id, channel, address)

    def verify(self, token: str, channel: str, address: str) -> bool:
        """True when ``token`` was made for this notification's channel and address."""
        notification_id, _, mac = token.partition(".")
        expected = self._mac(int(notification_id), channel, address)
        return hmac.compare_digest(mac.encode(), expected.encode())

    def _mac(self, notification_id: int, channel: str, address: str) -> str:
        message = f"notifier-unsubscribe:v1:{notification_id}:{channel}:{address.lower()}"
        digest = hmac.new(self.secret, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:_MAC_BYTES]).decode().rstrip("=")


def token_notification_id(token: str) -> int:
    """The notification a token names, or InputError: its shape is checked before any lookup."""
    notification_id, dot, mac = token.partition(".")
    digits = notification_id.isascii() and notification_id.isdigit()
    if not (dot and digits and len(notification_id) <= 12 and mac):
        raise InputError("not an unsubscribe link", field="token")
    return int(notification_id)


# --- SMS and WhatsApp: inbound keywords ---------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Keyword:
    """An inbound message that changes what the sender gets: ``stop`` or ``start``."""

    action: str  # stop | start
    channel: ChannelKind
    address: str  # E.164, as the delivery log stores recipients


def inbound_keyword(params: Mapping[str, str]) -> Keyword | None:
    """The STOP/START keyword of an inbound Twilio message, or None for any other message.

    ``From`` is ``+E164`` for SMS and ``whatsapp:+E164`` for WhatsApp; the keyword is the whole
    body, trimmed, in any case (Twilio's own matching)."""
    word = params.get("Body", "").strip().upper()
    action = "stop" if word in STOP_WORDS else "start" if word in START_WORDS else None
    if action is None:
        return None
    sender = params.get("From", "").strip()
    channel = ChannelKind.WHATSAPP if sender.startswith("whatsapp:") else ChannelKind.SMS
    address = sender.removeprefix("whatsapp:")
    if not (address.startswith("+") and address[1:].isascii() and address[1:].isdigit()):
        raise InputError("not a phone number in E.164 form", field="From")
    return Keyword(action=action, channel=channel, address=address)


def twilio_signature_valid(
    *, auth_token: str, url: str, params: Mapping[str, str], signature: str
) -> bool:
    """Twilio's request signature: base64 HMAC-SHA1 of the URL followed by each posted field's
    name and value, sorted by name (Twilio's "Webhooks security" documentation; the same
    algorithm as the SDK's RequestValidator, which tests use to sign)."""
    if not (auth_token and signature):
        return False
    payload = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return hmac.compare_digest(base64.b64encode(digest).decode(), signature)


# --- preferences ----------------------------------------------------------------------------


#: The bodies of the preferences routes, for the OpenAPI document.
_CONTACT = {"phone": {"type": "string"}, "email": {"type": "string"}}
CONTACT_SCHEMA: dict[str, object] = {"type": "object", "properties": _CONTACT}
PREFERENCES_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        **_CONTACT,
        "channels": {
            "type": "object",
            "properties": {kind.value: {"type": "boolean"} for kind in ChannelKind},
            "additionalProperties": False,
        },
    },
    "required": ["channels"],
}


def contact_addresses(body: Mapping[str, object], *, region: str) -> dict[ChannelKind, str]:
    """The addresses a preferences body names (``phone`` and/or ``email``), normalised as the
    delivery log stores them, per channel. InputError names a bad or missing field."""
    found: dict[ChannelKind, str] = {}
    phone, email = body.get("phone"), body.get("email")
    if phone is not None:
        who = recipients.phone(str(phone), region=region)
        if who.address is None:
            raise InputError(f"{who.reason}", field="phone")
        found[ChannelKind.SMS] = found[ChannelKind.WHATSAPP] = who.address
    if email is not None:
        who = recipients.email(str(email))
        if who.address is None:
            raise InputError(f"{who.reason}", field="email")
        found[ChannelKind.EMAIL] = who.address
    if not found:
        raise InputError("give phone, email or both", field="phone")
    return found


def channel_choices(body: Mapping[str, object]) -> dict[ChannelKind, bool]:
    """``{"channels": {"sms": false, "email": true}}`` as a typed mapping; InputError names a
    bad channel or value."""
    raw = body.get("channels")
    if not isinstance(raw, Mapping) or not raw:
        raise InputError('expected an object such as {"sms": false}', field="channels")
    choices: dict[ChannelKind, bool] = {}
    for name, allowed in raw.items():
        try:
            kind = ChannelKind(str(name))
        except ValueError:
            message = "unknown channel (sms, whatsapp, email)"
            raise InputError(message, field=f"channels.{name}") from None
        if not isinstance(allowed, bool):
            raise InputError("must be true or false", field=f"channels.{name}")
        choices[kind] = allowed
    return choices


# --- the pages a customer sees --------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto; padding: 0 1em">
<h1>{title}</h1>{body}</body></html>
"""


def confirm_page(masked_address: str) -> str:
    """The page an unsubscribe link opens. It changes nothing: mail scanners open links to
    check them, so only the button's POST (or a mail client's one-click POST) unsubscribes."""
    body = (
        f"<p>Stop order update emails to <b>{html.escape(masked_address)}</b>?</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _PAGE.format(title="Unsubscribe", body=body)


def done_page(masked_address: str) -> str:
    body = (
        f"<p>Done: no more order update emails will be sent to "
        f"<b>{html.escape(masked_address)}</b>.</p>"
    )
    return _PAGE.format(title="Unsubscribed", body=body)
