"""The embedded API around the pipeline: webhook keys, the sync facade, loud configuration."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Clock, dumps, registration, sample, webhook
from pydantic import SecretStr

from notifier import (
    AuthenticationError,
    ConfigurationError,
    InputError,
    Notifier,
    RulesError,
    Settings,
    SyncNotifier,
)

T0 = datetime(2026, 11, 26, 5, 0, tzinfo=UTC)


@pytest.fixture
def keyed(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"webhook_keys": settings.webhook_keys.__class__("old-key, new-key")}
    )


async def test_webhook_key_is_required_when_configured(keyed: Settings, clock: Clock) -> None:
    async with Notifier(keyed, clock=clock) as n:
        body = sample("webhook-out-for-delivery-2017.json")
        with pytest.raises(AuthenticationError):
            await n.handle_webhook(body, {})
        with pytest.raises(AuthenticationError):
            await n.handle_webhook(body, {"webhook_key": "new-key-but-longer"})
        assert not (await n.handle_webhook(body, {"webhook_key": "new-key"})).duplicate
        assert (await n.handle_webhook(body, {"Webhook-Key": "old-key"})).duplicate
        assert (await n.handle_webhook(body, {"Authorization": "Bearer old-key"})).duplicate
        assert (await n.handle_webhook(body, {"authorization": "new-key"})).duplicate


async def test_key_is_checked_before_the_body_is_parsed(keyed: Settings, clock: Clock) -> None:
    async with Notifier(keyed, clock=clock) as n:
        with pytest.raises(AuthenticationError):
            await n.handle_webhook(b"{not json", {"webhook_key": "wrong"})
        with pytest.raises(InputError) as err:
            await n.handle_webhook(b"{not json", {"webhook_key": "old-key"})
        assert err.value.field == "body"


async def test_bad_input_names_the_field_and_stores_nothing(notifier: Notifier) -> None:
    body = webhook(code=6, at=T0)
    body["clickpost_status_code"] = "six"
    with pytest.raises(InputError) as err:
        await notifier.handle_webhook(body)
    assert "clickpost_status_code" in str(err.value)
    assert await notifier.shipment(4, "SF18399217NER") is None


def test_sync_facade_for_wsgi_frameworks(settings: Settings, clock: Clock) -> None:
    clock.now = T0
    with SyncNotifier(settings, clock=clock) as n:
        assert n.register_shipment(registration()).created
        outcome = n.handle_webhook(dumps(webhook(code=8, at=T0)))
        assert [s.status for s in outcome.notifications] == ["scheduled", "scheduled"]
        assert n.dispatch_due().counts == {"sent": 2}
        assert {r["status"] for r in n.notifications()} == {"sent"}


def test_missing_rules_file_names_the_setting(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="NOTIFIER_RULES"):
        Notifier(settings.model_copy(update={"rules": tmp_path / "nope.yaml"}))


def test_a_rule_naming_a_missing_template_fails_at_load(settings: Settings, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - name: delivered\n    when:\n"
        "      clickpost_status_code: [8]\n    send:\n"
        "      - {channel: sms, template: no_such_template}\n"
    )
    with pytest.raises(RulesError) as err:
        Notifier(settings.model_copy(update={"rules": rules}))
    [problem] = err.value.problems
    assert (problem.line, problem.file) == (7, str(rules))
    assert "no_such_template" in problem.message


def test_bad_quiet_hours_setting_is_loud(settings: Settings) -> None:
    with pytest.raises(ConfigurationError, match="NOTIFIER_QUIET_HOURS"):
        Notifier(settings.model_copy(update={"quiet_hours": "21-9"}))


async def test_reload_keeps_previous_rules_on_error(
    notifier: Notifier, settings: Settings, tmp_path: Path
) -> None:
    version = notifier.rules.version
    bad = tmp_path / "rules.yaml"
    bad.write_text("version: 1\nrules: [\n")
    notifier.settings = settings.model_copy(update={"rules": bad})
    with pytest.raises(RulesError):
        notifier.reload_rules()
    assert notifier.rules.version == version


def test_providers_are_chosen_from_the_settings(settings: Settings) -> None:
    from notifier.channels import OutboxChannel, build_channels
    from notifier.channels.smtp_email import SmtpChannel
    from notifier.channels.twilio import TwilioChannel
    from notifier.events import ChannelKind

    assert all(isinstance(c, OutboxChannel) for c in build_channels(settings).values())
    configured = settings.model_copy(update={
        "twilio_account_sid": "AC" + "0" * 32, "twilio_auth_token": SecretStr("t"),
        "twilio_from": "+15005550006", "smtp_host": "127.0.0.1",
        "email_from": "Acme Store <orders@acme.example>",
    })  # fmt: skip
    channels = build_channels(configured)
    assert isinstance(channels[ChannelKind.SMS], TwilioChannel)
    assert isinstance(channels[ChannelKind.WHATSAPP], OutboxChannel)
    assert isinstance(channels[ChannelKind.EMAIL], SmtpChannel)
    no_sender = configured.model_copy(update={"twilio_from": None})
    with pytest.raises(ConfigurationError, match="NOTIFIER_TWILIO_FROM"):
        build_channels(no_sender)
