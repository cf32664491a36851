"""Typed settings, read once at the edge (CLI, server) and passed in.

Library code never reads ``os.environ``: :class:`Settings` is the one place that does, and only
when it is constructed. Every variable is ``NOTIFIER_`` + the field name in upper case.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything notifier can be told, with the defaults of design.md."""

    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore", frozen=True)

    database_url: str = "sqlite:///./notifier.db"
    rules: Path = Path("./rules.yaml")
    templates: Path = Path("./templates")
    outbox_dir: Path = Path("./outbox")

    webhook_keys: SecretStr = SecretStr("")
    allow_unauthenticated: bool = False
    api_token: SecretStr | None = None
    # A second token for the support console that can look but not resend or cancel.
    console_readonly_token: SecretStr | None = None

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_whatsapp_from: str | None = None
    twilio_api_base: str = "https://api.twilio.com"

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_implicit_tls: bool = False
    smtp_timeout: float = 30.0
    smtp_connections: int = 2
    email_from: str | None = None
    unsubscribe_url: str | None = None
    # Signs one-click unsubscribe links (with public_url); unset: no signed links.
    secret_key: SecretStr | None = None

    twilio_timeout: float = 15.0
    channel_concurrency: int = 16

    public_url: str | None = None
    quiet_hours: str | None = Field(default=None, description="HH:MM-HH:MM or 'off'")

    clickpost_username: str | None = None
    clickpost_key: SecretStr | None = None
    clickpost_api_base: str = "https://www.clickpost.in"
    poll_interval: int = 900
    poll_stale_after: int = 6 * 3600

    max_body_bytes: int = 1024 * 1024
    retention_days: int = 90
    shutdown_grace: float = 10.0

    dispatch_batch: int = 200
    send_lease_seconds: int = 120
    # Seconds before the first retry of a transiently failed send; doubles (with jitter, up to
    # an hour) on each further attempt. Tests and the soak shorten it.
    retry_backoff: float = 30.0

    @property
    def accepted_webhook_keys(self) -> tuple[str, ...]:
        """The comma-separated ``NOTIFIER_WEBHOOK_KEYS``, split; several allow key rotation."""
        raw = self.webhook_keys.get_secret_value()
        return tuple(k.strip() for k in raw.split(",") if k.strip())
