"""Every error notifier raises, as one tree.

    NotifierError
    ├── ConfigurationError          a setting, rules file or template is wrong; names what to fix
    │   ├── RulesError              rules.yaml problems, each with file:line:col
    │   └── TemplateError           a template that does not compile or render, with its line
    ├── StoreUnavailableError       the database is locked, full or unreachable: try again later
    ├── InputError                  a body from outside (webhook, registration) we cannot accept
    │   └── AuthenticationError     a webhook whose key does not match
    └── ChannelError                a provider refused or failed a send
        ├── TransientChannelError   worth retrying; carries retry_after (seconds) when known
        └── PermanentChannelError   retrying will not help (invalid number, 5xx SMTP reply)
            └── OptedOutError       the recipient asked for no more messages (SMS STOP)

Third-party errors are translated once, where they are caught, with ``raise ... from err``.
Nothing in notifier reports failure by returning False.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class NotifierError(Exception):
    """Root of every error notifier raises on purpose."""


class ConfigurationError(NotifierError):
    """A setting, file or template is wrong; the message names what to fix."""


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One problem found in a file, located for an editor: ``file:line:col: message``."""

    file: str
    line: int
    column: int
    message: str
    hint: str = ""
    severity: str = "error"

    def __str__(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class RulesError(ConfigurationError):
    """rules.yaml could not be loaded; ``problems`` lists every error with its location."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class TemplateError(ConfigurationError):
    """A template failed to compile or render; ``template`` and ``line`` say where."""

    def __init__(self, message: str, *, template: str, line: int | None = None) -> None:
        self.template = template
        self.line = line
        where = f"{template}:{line}" if line else template
        super().__init__(f"{where}: {message}")


class StoreUnavailableError(NotifierError):
    """The database cannot be written or read right now (locked, full, unreachable).
    ``conflict``: the transaction lost a deadlock or serialization race with another one and
    can simply run again."""

    def __init__(self, message: str, *, conflict: bool = False) -> None:
        self.conflict = conflict
        super().__init__(message)


class InputError(NotifierError):
    """A body from outside that cannot be accepted; ``field`` names the part that is wrong."""

    def __init__(self, message: str, *, field: str = "") -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class AuthenticationError(InputError):
    """The webhook key (or Authorization header) did not match any configured key."""


class ChannelError(NotifierError):
    """A provider refused or failed a send. ``code`` is the provider's own code, if any."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)


class TransientChannelError(ChannelError):
    """Worth retrying later; ``retry_after`` is the provider's hint in seconds, if it gave one.

    ``outage``: the provider could not take any message at all (unreachable, down, overloaded,
    refusing notifier's credentials), so the failure says nothing about this message. Such an
    attempt does not count against the rule's ``max_attempts``; ``max_age`` still bounds it,
    so an outage of minutes or hours loses nothing."""

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        outage: bool = False,
    ) -> None:
        self.retry_after = retry_after
        self.outage = outage
        super().__init__(message, code=code)


class PermanentChannelError(ChannelError):
    """Retrying will not help: the recipient or the message is refused for good."""


class OptedOutError(PermanentChannelError):
    """The recipient opted out (Twilio 21610: replied STOP); suppress until they opt back in."""
