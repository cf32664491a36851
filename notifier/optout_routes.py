"""The opt-out routes: unsubscribe links, Twilio inbound STOP/START and channel preferences,
over :mod:`notifier.optout` (tokens, keywords, addresses) and the engine's suppression list.
Each opt-out or opt-in is a write like a webhook: refused, it is a 503 and /readyz says so."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from notifier import optout, recipients
from notifier.app import Notifier
from notifier.clickpost.models import parse_json_object
from notifier.errors import AuthenticationError
from notifier.events import ChannelKind
from notifier.http_input import Refused, api_allowed, engine_of, read_body, read_form, schema_body
from notifier.settings import Settings

log = logging.getLogger("notifier")


def optout_routes(app: FastAPI, settings: Settings) -> None:
    """Unsubscribe links, Twilio inbound STOP/START and channel preferences (notifier.optout)."""

    @app.get("/unsubscribe/{token}", response_class=HTMLResponse)
    async def unsubscribe_page(request: Request, token: str) -> HTMLResponse:
        _, address = await _unsubscribing(request, token)  # checks only: scanners prefetch
        return HTMLResponse(optout.confirm_page(recipients.mask(address)))

    @app.post("/unsubscribe/{token}", response_class=HTMLResponse)
    async def unsubscribe(request: Request, token: str) -> HTMLResponse:
        await read_body(request, settings)  # "List-Unsubscribe=One-Click" (RFC 8058) or the button
        channel, address = await _unsubscribing(request, token)
        engine = engine_of(request)
        await engine.health.writing("opt-out", engine.queue.suppress, channel, address,
                                    "unsubscribed by link", now=engine.clock(),
                                    changed=bool)  # fmt: skip
        log.info("unsubscribed %s from %s by link", recipients.mask(address), channel)
        return HTMLResponse(optout.done_page(recipients.mask(address)))

    @app.post("/callbacks/twilio/inbound")
    async def twilio_inbound(request: Request) -> Response:
        params = read_form(await read_body(request, settings))
        _twilio_signed(settings, optout.INBOUND_PATH, params, request)
        keyword = optout.inbound_keyword(params)
        if keyword is not None:
            await _apply_keyword(engine_of(request), keyword, params.get("Body", "").strip())
        return Response(EMPTY_TWIML, media_type="text/xml")

    @app.post("/preferences/lookup", openapi_extra=schema_body(optout.CONTACT_SCHEMA))
    async def preferences(request: Request) -> dict[str, Any]:
        engine, _, addresses = await _contact(request, settings)
        return await _preferences_view(engine, addresses)

    @app.put("/preferences", openapi_extra=schema_body(optout.PREFERENCES_SCHEMA))
    async def set_preferences(request: Request) -> dict[str, Any]:
        engine, body, addresses = await _contact(request, settings)
        for kind, allowed in optout.channel_choices(body).items():
            if kind not in addresses:
                field = "email" if kind is ChannelKind.EMAIL else "phone"
                raise Refused(422, f"{field}: needed to set {kind.value}", field)
            address, now = addresses[kind], engine.clock()
            if allowed:
                await engine.health.writing(
                    "opt-in", engine.queue.unsuppress, kind.value, address, changed=bool
                )
            else:
                reason = "preference set through the API"
                await engine.health.writing("opt-out", engine.queue.suppress, kind.value, address,
                                            reason, now=now, changed=bool)  # fmt: skip
        return await _preferences_view(engine, addresses)


EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def _contact(
    request: Request, settings: Settings
) -> tuple[Notifier, dict[str, Any], dict[ChannelKind, str]]:
    """A preferences request, behind the API token: the engine, the JSON body, and the phone
    and email it names, normalised as the delivery log stores them."""
    api_allowed(request, settings)
    engine = engine_of(request)
    body = parse_json_object(await read_body(request, settings))
    return engine, body, optout.contact_addresses(body, region=engine.rules.defaults.phone_region)


async def _unsubscribing(request: Request, token: str) -> tuple[str, str]:
    """The channel and address a valid unsubscribe token names; 404 for any other token
    (unknown, forged, or its notification's recipient already purged)."""
    engine = engine_of(request)
    links = engine.unsubscribe_links
    if links is None:
        raise Refused(404, "unsubscribe links are not enabled here", "token")
    notification_id = optout.token_notification_id(token)
    found = await asyncio.to_thread(engine.queue.recipient, notification_id)
    if found is None or not found[1] or not links.verify(token, found[0], found[1]):
        raise Refused(404, "unknown or expired unsubscribe link", "token")
    return found[0], found[1]


def _twilio_signed(settings: Settings, path: str, params: dict[str, str], request: Request) -> None:
    token = settings.twilio_auth_token
    if token is None or not settings.public_url:
        raise AuthenticationError(
            "Twilio callbacks need NOTIFIER_TWILIO_AUTH_TOKEN and NOTIFIER_PUBLIC_URL",
            field="X-Twilio-Signature",
        )
    url = settings.public_url.rstrip("/") + path
    signature = request.headers.get("x-twilio-signature", "")
    if not optout.twilio_signature_valid(auth_token=token.get_secret_value(), url=url,
                                         params=params, signature=signature):  # fmt: skip
        raise AuthenticationError("signature does not match", field="X-Twilio-Signature")


async def _apply_keyword(engine: Notifier, keyword: optout.Keyword, word: str) -> None:
    channel, address = keyword.channel.value, keyword.address
    if keyword.action == "stop":
        await engine.health.writing("opt-out", engine.queue.suppress, channel, address,
                                    f"replied {word.upper()}", now=engine.clock(),
                                    changed=bool)  # fmt: skip
    else:
        await engine.health.writing(
            "opt-in", engine.queue.unsuppress, channel, address, changed=bool
        )
    log.info("%s %s on %s: %s", recipients.mask(address), word.upper(), channel, keyword.action)


async def _preferences_view(engine: Notifier, addresses: dict[ChannelKind, str]) -> dict[str, Any]:
    wanted = {kind.value: address for kind, address in addresses.items()}
    blocked = await asyncio.to_thread(engine.queue.suppressions, wanted)
    return {
        kind: {"address": recipients.mask(address), "allowed": kind not in blocked,
               "reason": blocked.get(kind, "")}
        for kind, address in wanted.items()
    }  # fmt: skip
