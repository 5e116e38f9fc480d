"""The sections of the configuration file, one model each: ``smtp:``, ``delivery:``, ``topup:``...

Every section refuses keys it does not know (``extra="forbid"``), so a misspelt key is a
problem at load rather than a setting silently left at its default.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from balancewatch.config.values import (
    Command,
    HeaderName,
    HeaderValue,
    HookUrl,
    Listen,
    Locale,
    Mailbox,
    TimeZone,
    database_url,
    shown_url,
)
from balancewatch.core.durations import Duration, format_duration
from balancewatch.core.limits import RenderBudget, Size, check_timeout

_NOTIFY_CHANNEL = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # an unquoted PostgreSQL identifier


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Security(StrEnum):
    starttls = "starttls"
    tls = "tls"
    none = "none"


class SmtpSettings(_Section):
    """How to reach the mail server; leave ``host`` empty to write files instead."""

    host: str = ""
    port: int | None = Field(default=None, ge=1, le=65535)
    security: Security = Security.starttls
    username: str = ""
    password: SecretStr | None = None
    password_file: Path | None = None
    timeout: Duration = timedelta(seconds=30)
    ca_file: Path | None = None

    @property
    def effective_port(self) -> int:
        if self.port:
            return self.port
        return {Security.tls: 465, Security.starttls: 587, Security.none: 25}[self.security]


class FilesSettings(_Section):
    """Where the file transport writes one ``.eml`` per message."""

    dir: Path | None = None


class RetrySettings(_Section):
    initial: Duration = timedelta(seconds=30)
    max: Duration = timedelta(hours=1)
    give_up_after: Duration = timedelta(days=2)


class DeliverySettings(_Section):
    transport: Literal["auto", "smtp", "files"] = "auto"
    sender: Mailbox = Field(default="balancewatch <balancewatch@localhost>", alias="from")
    reply_to: Mailbox = ""
    message_id_domain: str = ""
    interval: Duration = timedelta(seconds=5)
    batch_size: int = Field(default=50, ge=1, le=10_000)
    lease: Duration = timedelta(minutes=5)
    retry: RetrySettings = RetrySettings()

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DefaultsSettings(_Section):
    timezone: TimeZone = "UTC"
    locale: Locale = "en_US"


class EmailSettings(_Section):
    """What recipients see about who sends the emails: the shipped templates sign with
    ``product_name`` and end with ``footer``; both empty by default, so an email names neither
    balancewatch nor a rule (docs/templates.md, "The footer")."""

    # The sender's name as recipients know it ("Acme Messaging"); one line.
    product_name: str = Field(default="", max_length=100)
    # Small print at the end of every email (support address, legal line); plain text, lines kept.
    footer: str = Field(default="", max_length=2000)

    @field_validator("product_name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(c in value for c in "\r\n\x0b\x0c\x85\u2028\u2029"):
            raise ValueError("write the product name on one line")
        return value.strip()

    @field_validator("footer")
    @classmethod
    def _text(cls, value: str) -> str:
        # A YAML block scalar (footer: |) ends with a line break; the templates add their own.
        return "\n".join(line.rstrip() for line in value.strip().splitlines())


class UsageSettings(_Section):
    """Average daily usage: the window emails and recommendations use, and how it is kept."""

    window_days: int = Field(default=30, ge=1, le=365)
    min_history: Duration = timedelta(days=3)
    refresh: Duration = timedelta(hours=1)
    # Each refresh reads only the ledger entries new since the one before; this often, one
    # reads the whole window instead (and puts right what reading new entries cannot see).
    full_refresh: Duration = timedelta(hours=24)
    recommend_days: Decimal = Field(default=Decimal(1), gt=0, le=365)


class DatabaseSettings(_Section):
    url: str = Field(default="", repr=False)  # may hold a password
    pool_size: int = Field(default=5, ge=1, le=100)
    # PostgreSQL only: how the daemon hears of changed balances at once (polling goes on as the
    # safety net). trigger: `db upgrade` installs a trigger on balance that NOTIFYs; platform:
    # the platform runs NOTIFY <notify_channel> after its commits; off: polling only.
    listen: Literal["trigger", "platform", "off"] = "trigger"
    notify_channel: str = "balancewatch_balances"

    @field_validator("notify_channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not _NOTIFY_CHANNEL.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a notification channel name: use lower-case letters, digits and "
                "'_', starting with a letter (at most 63 characters)"
            )
        return value

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        return database_url(value)


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # text: one readable line per event; json: one JSON object a line (for a log shipper).
    format: Literal["text", "json"] = "text"


class MetricsSettings(_Section):
    """Where Prometheus metrics and the health endpoints are served; off while ``listen`` is empty."""

    # host:port, e.g. 127.0.0.1:9464 (or [::1]:9464); empty: no HTTP server at all.
    listen: Listen = ""


class ReloadSettings(_Section):
    """How the running daemon follows edits to the rules and templates directories."""

    watch: bool = True
    debounce: Duration = timedelta(milliseconds=300)
    backstop: Duration = timedelta(seconds=30)


class RenderSettings(_Section):
    """Limits on rendering one email, so no template can wedge the daemon (docs/templates.md)."""

    timeout: Annotated[Duration, AfterValidator(check_timeout)] = timedelta(seconds=2)
    max_size: Size = 1_000_000  # bytes: subject, text and HTML together

    def budget(self) -> RenderBudget:
        """What ``load_set`` and every render take."""
        return RenderBudget(timeout=self.timeout.total_seconds(), max_size=self.max_size)


class ReportSettings(_Section):
    """Scheduled reports: how late a missed send still goes out, how the work is split and reserved."""

    misfire_grace: Duration = timedelta(hours=1)
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    lease: Duration = timedelta(minutes=10)


class TopupHookSettings(_Section):
    """Where a top-up request goes: an HTTP(S) endpoint or a command, at most one (docs/topup.md)."""

    url: HookUrl = Field(default="", repr=False)  # its query may hold a token
    command: Command = None
    timeout: Duration = timedelta(seconds=10)
    # Sent with every call; values are secrets: masked in `config show`, never logged.
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict)
    # A header's value read from a file at each call (a token a secret manager rotates).
    header_files: dict[HeaderName, Path] = Field(default_factory=dict)
    ca_file: Path | None = None

    @model_validator(mode="after")
    def _one_target(self) -> TopupHookSettings:
        if self.url and self.command:
            raise ValueError("set at most one of topup.hook.url and topup.hook.command")
        both = sorted({h.lower() for h in self.headers} & {h.lower() for h in self.header_files})
        if both:
            raise ValueError(f"header {both[0]!r} is in both headers and header_files; keep one")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.url or self.command)

    def describe(self) -> str:
        """The hook for logs and messages: ``POST https://host/path`` or the command's program."""
        if self.url:
            return f"POST {shown_url(self.url)}"
        if self.command:
            return f"command {self.command[0]}"
        return "no hook"


class TopupSettings(_Section):
    """Automatic top-up: the hook that asks the platform to charge, and how calls are retried."""

    hook: TopupHookSettings = TopupHookSettings()
    # How long a request being handed to the hook is reserved for this instance.
    lease: Duration = timedelta(minutes=2)
    retry: RetrySettings = RetrySettings(
        initial=timedelta(seconds=30), max=timedelta(minutes=30), give_up_after=timedelta(hours=6)
    )
    # How long an accepted request waits for its top-up in the ledger before it is failed
    # and the owner told: a platform that accepted and then lost a charge must not block
    # automatic top-up for that balance for ever.
    await_credit: Duration = timedelta(hours=24)

    @model_validator(mode="after")
    def _lease_outlasts_a_call(self) -> TopupSettings:
        if self.lease < 2 * self.hook.timeout:
            raise ValueError(
                f"topup.lease ({format_duration(self.lease)}) must be at least twice topup.hook.timeout "
                f"({format_duration(self.hook.timeout)}), so a call still running is never taken over"
            )
        return self
