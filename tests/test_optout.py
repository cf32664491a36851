"""Opting out: signed one-click unsubscribe links (RFC 8058), SMS STOP/START from Twilio's
inbound webhook, channel preferences through the API; every suppressed send logged with why."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from conftest import Clock, registration, webhook
from fastapi.testclient import TestClient
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from notifier import Notifier, Settings
from notifier.channels import Channel, OutgoingMessage, SendReceipt
from notifier.channels.outbox import OutboxChannel
from notifier.channels.smtp_email import SmtpChannel
from notifier.errors import ConfigurationError, InputError, StoreUnavailableError
from notifier.events import ChannelKind
from notifier.optout import UnsubscribeLinks, inbound_keyword, token_notification_id
from notifier.server import create_app

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
SECRET = "s3cret-key-for-tests-0123456789"
PUBLIC = "https://notify.acme.example"
TWILIO_TOKEN = "twilio-auth-token-for-tests"
API = {"Authorization": "Bearer api-token-for-tests"}
EMAIL, PHONE = "priya.sharma@example.com", "+919876543210"


class Recording(Channel):
    def __init__(self, kind: ChannelKind) -> None:
        self.kind = kind
        self.sent: list[OutgoingMessage] = []

    async def send(self, message: OutgoingMessage) -> SendReceipt:
        self.sent.append(message)
        return SendReceipt(provider_id=f"SM{len(self.sent):032d}")


@pytest.fixture
def optin(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"secret_key": SecretStr(SECRET), "public_url": PUBLIC,
                "twilio_auth_token": SecretStr(TWILIO_TOKEN),
                "api_token": SecretStr("api-token-for-tests")}
    )  # fmt: skip


@pytest.fixture
def channels(optin: Settings) -> dict[ChannelKind, Recording]:
    return {kind: Recording(kind) for kind in ChannelKind}


@pytest.fixture
def engine(
    optin: Settings, clock: Clock, channels: dict[ChannelKind, Recording]
) -> Iterator[Notifier]:
    clock.now = T0
    n = Notifier(optin, clock=clock, channels=channels)
    yield n
    n.db.dispose()


@pytest.fixture
def api(optin: Settings, engine: Notifier) -> Iterator[TestClient]:
    with TestClient(create_app(optin, notifier=engine, run_scheduler=False)) as client:
        yield client


async def ship(n: Notifier, waybill: str = "SF18399217NER", code: int = 6) -> None:
    await n.register_shipment(registration(waybill=waybill, reference_number=waybill))
    await n.handle_webhook(webhook(waybill=waybill, code=code, at=T0))


async def statuses(n: Notifier, waybill: str) -> dict[str, tuple[str, str]]:
    rows = await n.notifications(waybill=waybill)
    return {r["channel"]: (r["status"], r["reason"]) for r in rows}


# --- the links ---------------------------------------------------------------------------


def test_a_token_is_bound_to_its_notification_and_address() -> None:
    links = UnsubscribeLinks(secret=SECRET.encode(), public_url=PUBLIC)
    token = links.token(42, "email", EMAIL)
    assert token.startswith("42.") and "priya" not in token and "@" not in token
    assert links.verify(token, "email", EMAIL)
    assert links.verify(token, "email", EMAIL.upper())  # addresses compare without case
    assert not links.verify(token, "email", "someone.else@example.com")
    assert not links.verify(token, "sms", EMAIL)
    assert not links.verify("43." + token.partition(".")[2], "email", EMAIL)
    other = UnsubscribeLinks(secret=b"another-secret-of-enough-length", public_url=PUBLIC)
    assert not other.verify(token, "email", EMAIL)
    assert links.url(42, "email", EMAIL) == f"{PUBLIC}/unsubscribe/{token}"
    assert SECRET not in repr(links)


def test_no_links_without_a_secret_and_a_short_secret_is_refused() -> None:
    assert UnsubscribeLinks.from_settings(None, PUBLIC) is None
    assert UnsubscribeLinks.from_settings(SECRET, None) is None
    with pytest.raises(ConfigurationError, match="NOTIFIER_SECRET_KEY"):
        UnsubscribeLinks.from_settings("short", PUBLIC)


@pytest.mark.parametrize("token", ["", "abc", "12", "12.", ".x", "1" * 20 + ".x", "-1.x", "².x"])
def test_malformed_tokens_are_input_errors(token: str) -> None:
    with pytest.raises(InputError) as caught:
        token_notification_id(token)
    assert caught.value.field == "token"


async def test_every_email_carries_one_click_headers(
    engine: Notifier, channels: dict[ChannelKind, Recording]
) -> None:
    await ship(engine)
    await engine.dispatch_due()
    [message] = channels[ChannelKind.EMAIL].sent
    assert message.unsubscribe_url is not None
    assert message.unsubscribe_url.startswith(f"{PUBLIC}/unsubscribe/{message.notification_id}.")
    assert channels[ChannelKind.SMS].sent[0].unsubscribe_url is None
    smtp = SmtpChannel(host="127.0.0.1", sender="Acme <orders@acme.example>")
    mail = message_from_bytes(bytes(smtp._build(message)), policy=policy.default)
    assert mail["List-Unsubscribe"].strip() == f"<{message.unsubscribe_url}>"  # may be folded
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_the_merchants_own_unsubscribe_url_still_wins(
    optin: Settings, clock: Clock, channels: dict[ChannelKind, Recording]
) -> None:
    legacy = optin.model_copy(
        update={"unsubscribe_url": "https://acme.example/u?n={notification_id}"}
    )
    async with Notifier(legacy, clock=clock, channels=channels) as n:
        await ship(n)
        await n.dispatch_due()
    [message] = channels[ChannelKind.EMAIL].sent
    assert message.unsubscribe_url == f"https://acme.example/u?n={message.notification_id}"


async def test_without_a_secret_key_emails_have_no_link(
    settings: Settings, clock: Clock, channels: dict[ChannelKind, Recording]
) -> None:
    async with Notifier(settings.model_copy(update={"public_url": PUBLIC}), clock=clock,
                        channels=channels) as n:  # fmt: skip
        await ship(n)
        await n.dispatch_due()
    assert channels[ChannelKind.EMAIL].sent[0].unsubscribe_url is None


async def test_get_shows_a_button_and_changes_nothing_post_unsubscribes_once(
    api: TestClient, engine: Notifier, channels: dict[ChannelKind, Recording]
) -> None:
    await ship(engine)
    await engine.dispatch_due()
    url = channels[ChannelKind.EMAIL].sent[0].unsubscribe_url
    assert url is not None
    path = url.removeprefix(PUBLIC)
    page = api.get(path)
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert "p***@example.com" in page.text and EMAIL not in page.text
    assert engine.queue.suppressions({"email": EMAIL}) == {}  # a scanner's GET did nothing
    for _ in range(2):  # one click (RFC 8058 body), then again: idempotent
        done = api.post(path, content=b"List-Unsubscribe=One-Click",
                        headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert done.status_code == 200 and "no more order update emails" in done.text
    assert engine.queue.suppressions({"email": EMAIL}) == {"email": "unsubscribed by link"}
    await ship(engine, waybill="SECOND", code=8)
    await engine.dispatch_due()
    later = await statuses(engine, "SECOND")
    assert later["email"] == ("skipped", "opted out: unsubscribed by link")
    assert later["sms"][0] == "sent"  # email only


async def test_forged_and_unknown_tokens_are_404_json(api: TestClient, engine: Notifier) -> None:
    await ship(engine)
    await engine.dispatch_due()
    [email_row] = await engine.notifications(channel="email")
    forged = f"{email_row['id']}.AAAAAAAAAAAAAAAAAAAAAA"
    for path in (f"/unsubscribe/{forged}", "/unsubscribe/999.AAAA", "/unsubscribe/nope"):
        for method in (api.get, api.post):
            answer = method(path)
            assert answer.status_code in {404, 422} and answer.json()["field"] == "token"
    assert engine.queue.suppressions({"email": EMAIL}) == {}


# --- SMS STOP ----------------------------------------------------------------------------


def signed(params: dict[str, str]) -> dict[str, str]:
    url = PUBLIC + "/callbacks/twilio/inbound"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    return {"X-Twilio-Signature": signature}


def inbound(api: TestClient, sender: str, body: str, *, sign: bool = True) -> int:
    params = {"From": sender, "To": "+15005550006", "Body": body, "MessageSid": "SM" + "1" * 32,
              "AccountSid": "AC" + "2" * 32}  # fmt: skip
    headers = signed(params) if sign else {"X-Twilio-Signature": "forged"}
    answer = api.post("/callbacks/twilio/inbound", data=params, headers=headers)
    if answer.status_code == 200:
        assert answer.headers["content-type"].startswith("text/xml") and "<Response" in answer.text
    return int(answer.status_code)


STOPS = ["STOP", "stop", " StopAll ", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"]


@pytest.mark.parametrize("word", STOPS)
async def test_stop_suppresses_sms_and_start_lifts_it(
    api: TestClient, engine: Notifier, word: str
) -> None:
    assert inbound(api, PHONE, word) == 200
    assert engine.queue.suppressions({"sms": PHONE, "whatsapp": PHONE}) == {
        "sms": f"replied {word.strip().upper()}"
    }
    await ship(engine)
    assert (await statuses(engine, "SF18399217NER"))["sms"][0] == "skipped"
    assert inbound(api, PHONE, "start") == 200
    assert engine.queue.suppressions({"sms": PHONE}) == {}


async def test_whatsapp_stop_suppresses_whatsapp_only(api: TestClient, engine: Notifier) -> None:
    assert inbound(api, f"whatsapp:{PHONE}", "STOP") == 200
    assert engine.queue.suppressions({"sms": PHONE, "whatsapp": PHONE}) == {
        "whatsapp": "replied STOP"
    }
    assert inbound(api, f"whatsapp:{PHONE}", "UNSTOP") == 200
    assert engine.queue.suppressions({"whatsapp": PHONE}) == {}


async def test_other_messages_and_unsigned_posts_change_nothing(
    api: TestClient, engine: Notifier
) -> None:
    assert inbound(api, PHONE, "Where is my parcel? STOP sending late") == 200
    assert inbound(api, PHONE, "STOP", sign=False) == 401
    assert engine.queue.suppressions({"sms": PHONE}) == {}


def test_inbound_keyword_parsing() -> None:
    assert inbound_keyword({"From": PHONE, "Body": "hello"}) is None
    keyword = inbound_keyword({"From": f"whatsapp:{PHONE}", "Body": "quit"})
    assert keyword is not None and (keyword.action, keyword.channel) == ("stop", "whatsapp")
    with pytest.raises(InputError) as caught:
        inbound_keyword({"From": "not-a-number", "Body": "STOP"})
    assert caught.value.field == "From"


# --- preferences -------------------------------------------------------------------------


async def test_preferences_through_the_api(api: TestClient, engine: Notifier) -> None:
    who = {"phone": "098765 43210", "email": EMAIL}  # any usual Indian form of the number
    before = api.post("/preferences/lookup", json=who, headers=API).json()
    assert {k: v["allowed"] for k, v in before.items()} == {"sms": True, "whatsapp": True,
                                                            "email": True}  # fmt: skip
    assert before["sms"]["address"] == "+91******3210"  # masked in answers too
    changed = api.put("/preferences", json={**who, "channels": {"sms": False, "email": False}},
                      headers=API).json()  # fmt: skip
    assert (changed["sms"]["allowed"], changed["email"]["allowed"]) == (False, False)
    assert changed["sms"]["reason"] == "preference set through the API"
    await ship(engine)
    now = await statuses(engine, "SF18399217NER")
    assert now["sms"] == ("skipped", "opted out: preference set through the API")
    assert now["email"][0] == "skipped"
    back = api.put("/preferences", json={"phone": PHONE, "channels": {"sms": True}}, headers=API)
    assert back.json()["sms"]["allowed"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "phone"),
        ({"phone": "12"}, "phone"),
        ({"email": "not-an-email"}, "email"),
        ({"phone": PHONE, "channels": {"fax": False}}, "channels.fax"),
        ({"phone": PHONE, "channels": {"sms": "no"}}, "channels.sms"),
        ({"phone": PHONE, "channels": []}, "channels"),
        ({"phone": PHONE, "channels": {"email": False}}, "email"),
    ],
)
def test_bad_preference_bodies_name_the_field(
    api: TestClient, body: dict[str, object], field: str
) -> None:
    answer = api.put("/preferences", json=body, headers=API)
    assert answer.status_code in {400, 422} and answer.json()["field"] == field, answer.json()


def test_an_opt_out_the_database_refuses_makes_the_daemon_not_ready(
    api: TestClient, engine: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An opt-out is a write like a webhook: refused (a full disk), it is answered 503 and
    /readyz says so, naming what was refused."""

    def full(*args: object, **kwargs: object) -> None:
        raise StoreUnavailableError("database unavailable: database or disk is full")

    monkeypatch.setattr(engine.queue, "suppress", full)
    body = {"phone": PHONE, "channels": {"sms": False}}
    assert api.put("/preferences", json=body, headers=API).status_code == 503
    ready = api.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["ingest"]["refused"] == "opt-out"
    assert ready.json()["ingest"]["reason"] == "database or disk is full"


def test_preferences_that_change_nothing_do_not_make_a_refusing_daemon_ready(
    api: TestClient, engine: Notifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An opt-in for a number never opted out, or an opt-out already on file with nothing
    pending, writes nothing and can go through on a full disk: it clears no refusal. An
    opt-out that is written does."""
    suppress = engine.queue.suppress
    body = {"phone": PHONE, "channels": {"sms": False}}
    assert api.put("/preferences", json=body, headers=API).status_code == 200  # on file now

    def full(*args: object, **kwargs: object) -> None:
        raise StoreUnavailableError("database unavailable: database or disk is full")

    monkeypatch.setattr(engine.queue, "suppress", full)
    assert api.put("/preferences", json={"email": EMAIL, "channels": {"email": False}},
                   headers=API).status_code == 503  # fmt: skip
    monkeypatch.setattr(engine.queue, "suppress", suppress)
    for nothing_new in ({"email": EMAIL, "channels": {"email": True}}, body):
        assert api.put("/preferences", json=nothing_new, headers=API).status_code == 200
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ingest"]["refused"] == "opt-out"

    assert api.put("/preferences", json={"email": EMAIL, "channels": {"email": False}},
                   headers=API).status_code == 200  # fmt: skip
    assert api.get("/readyz").status_code == 200


def test_preferences_need_the_token(api: TestClient) -> None:
    body = {"phone": PHONE, "channels": {"sms": False}}
    assert api.put("/preferences", json=body).status_code == 401
    assert api.post("/preferences/lookup", json={"phone": PHONE}).status_code == 401


async def test_an_email_opt_out_covers_the_address_however_it_is_capitalised(
    notifier: Notifier,
) -> None:
    """One customer, written differently in two orders: the preference set for one spelling
    stops email to the other."""
    at = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
    await notifier.register_shipment(registration(email="Priya.Sharma@Example.COM"))
    notifier.queue.suppress("email", "priya.sharma@example.com", "preference", now=at)
    outcome = await notifier.handle_webhook(webhook(code=6, at=at))
    email = next(s for s in outcome.notifications if s.channel == "email")
    assert (email.status, email.reason) == ("skipped", "opted out: preference")


async def test_the_outbox_email_carries_the_same_unsubscribe_headers(tmp_path: Path) -> None:
    """The outbox writes the message SMTP would send, unsubscribe headers included."""
    outbox = OutboxChannel(ChannelKind.EMAIL, tmp_path)
    message = OutgoingMessage(
        notification_id=7, channel=ChannelKind.EMAIL, to="Priya@Example.com",
        subject="आपका ऑर्डर", text="Hi\n", html="<p>Hi</p>",
        message_id="<notification.7@acme.example>", unsubscribe_url="https://acme.example/u/t",
    )  # fmt: skip
    await outbox.send(message)
    mail = message_from_bytes((tmp_path / "email" / "7.eml").read_bytes(), policy=policy.default)
    assert mail["List-Unsubscribe"] == "<https://acme.example/u/t>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(mail["Subject"]) == "आपका ऑर्डर" and mail["Date"] is not None
    assert {p.get_content_type() for p in mail.walk()} >= {"text/plain", "text/html"}
