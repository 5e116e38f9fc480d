"""``Settings``: the whole configuration, and where each of its values came from."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from balancewatch.config.channels import Channel, ChannelName
from balancewatch.config.sections import (
    DatabaseSettings,
    DefaultsSettings,
    DeliverySettings,
    EmailSettings,
    FilesSettings,
    LogSettings,
    MetricsSettings,
    ReloadSettings,
    RenderSettings,
    ReportSettings,
    SmtpSettings,
    TopupSettings,
    UsageSettings,
)
from balancewatch.config.values import MASK, Price, PriceCurrency, Service, safe_url, shown_url
from balancewatch.core import shipped, yamlfile
from balancewatch.core.durations import Duration, format_duration
from balancewatch.core.problems import Problem

ENV_PREFIX = "BALANCEWATCH_"
CREDENTIAL_NAME = "smtp-password"


class Settings(BaseSettings):
    """The whole configuration, validated. Paths are absolute after loading."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", populate_by_name=True
    )

    state_dir: Path = Path("state")
    rules_dir: Path = Field(default_factory=shipped.rules_dir)
    templates_dir: Path = Field(default_factory=shipped.templates_dir)
    database: DatabaseSettings = DatabaseSettings()
    poll_interval: Duration = timedelta(seconds=30)
    poll_overlap: Duration = timedelta(minutes=2)
    sweep_interval: Duration = timedelta(minutes=15)
    instance: str = ""
    smtp: SmtpSettings = SmtpSettings()
    files: FilesSettings = FilesSettings()
    delivery: DeliverySettings = DeliverySettings()
    defaults: DefaultsSettings = DefaultsSettings()
    email: EmailSettings = EmailSettings()
    usage: UsageSettings = UsageSettings()
    # Unit prices per currency and service (major units), for "messages left"; see config.example.yaml.
    prices: dict[PriceCurrency, dict[Service, Price]] = Field(default_factory=dict)
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    reload: ReloadSettings = ReloadSettings()
    render: RenderSettings = RenderSettings()
    reports: ReportSettings = ReportSettings()
    topup: TopupSettings = TopupSettings()
    # Named channels a rule may send to as channel:NAME (config/channels.py).
    channels: dict[ChannelName, Channel] = Field(default_factory=dict)

    # Set by load_settings; not a key of the file.
    source: Path | None = Field(default=None, exclude=True)
    # Where each value came from, for problems found after loading (see ``where``).
    _located: yamlfile.Located = PrivateAttr(default_factory=lambda: yamlfile.Located("<defaults>", {}))
    _environ: Mapping[str, str] = PrivateAttr(default_factory=dict)
    # Each webhook's signing secret and each chat channel's URL, read when the config loads.
    _channel_secrets: dict[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON.get()
        env = _MappingEnvSource(settings_cls, environ) if environ is not None else env_settings
        # Environment first: it overrides the file, which arrives as init kwargs.
        return (env, init_settings)

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.state_dir / 'balancewatch.db'}"

    @property
    def transport(self) -> Literal["smtp", "files"]:
        if self.delivery.transport == "auto":
            return "smtp" if self.smtp.host else "files"
        return self.delivery.transport

    @property
    def mail_dir(self) -> Path:
        return self.files.dir or self.state_dir / "mail"

    def remember_origin(self, located: yamlfile.Located, environ: Mapping[str, str]) -> None:
        """Keep the file's lines and the environment the values came from, for ``where``."""
        self._located, self._environ = located, environ

    def where(self, loc: Sequence[Any]) -> tuple[str, int]:
        """Where the value at ``loc`` (``("smtp", "host")``) was set: ``("environment VAR", 0)``, the
        config file and its line, or the file (or ``<defaults>``) and 0 when it was not set at all."""
        path, line = value_origin(loc, self._located, self._environ)
        if path == self._located.path and not written_in(self._located.data, loc):
            return path, 0
        return path, line

    def is_set(self, loc: Sequence[Any]) -> bool:
        """Whether the config file or a variable set the value at ``loc`` (else it is a default)."""
        path, _line = value_origin(loc, self._located, self._environ)
        return path != self._located.path or written_in(self._located.data, loc)

    def problem(self, loc: Sequence[Any], message: str) -> Problem:
        """A problem with the value at ``loc``, placed where it was set."""
        path, line = self.where(loc)
        return Problem(path, line, ".".join(str(p) for p in loc), message)

    def smtp_password(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The SMTP password from the setting, its file, or the systemd credential."""
        environ = os.environ if environ is None else environ
        if self.smtp.password is not None:
            return self.smtp.password.get_secret_value()
        if self.smtp.password_file is not None:
            return self.smtp.password_file.read_text().rstrip("\r\n")
        creds = environ.get("CREDENTIALS_DIRECTORY")
        if creds and (Path(creds) / CREDENTIAL_NAME).is_file():
            return (Path(creds) / CREDENTIAL_NAME).read_text().rstrip("\r\n")
        return None

    def channel_secret(self, name: str) -> str:
        """The secret of channel ``name`` read at load (a webhook's signing secret, a chat URL);
        raises KeyError for a channel without one, or one that was not loaded by ``load_settings``."""
        return self._channel_secrets[name]

    def keep_channel_secrets(self, secrets: Mapping[str, str]) -> None:
        self._channel_secrets = dict(secrets)

    def redacted(self) -> dict[str, Any]:
        """The settings as data with every secret masked, for ``config show`` and logs.

        Durations read as they are written in the file (``30s``, ``1d``).
        """
        data = _plain(self.model_dump(mode="python", by_alias=True))
        if self.smtp.password is not None:
            data["smtp"]["password"] = MASK
        if self.database.url:
            data["database"]["url"] = safe_url(self.database.url)
        if urlsplit(self.topup.hook.url).query:
            data["topup"]["hook"]["url"] = f"{shown_url(self.topup.hook.url)}?{MASK}"
        for channel in data["channels"].values():
            if channel.get("type") == "webhook" and urlsplit(str(channel["url"])).query:
                channel["url"] = f"{shown_url(str(channel['url']))}?{MASK}"
        return data


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, Path | StrEnum):
        return str(value)
    return value


# pydantic-settings builds its sources itself; this is how an explicit
# environment (tests, the CLI) reaches the one source that reads it.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("balancewatch_environ", default=None)


@contextmanager
def reading_environ(environ: Mapping[str, str]) -> Iterator[None]:
    """Within the block, building Settings reads ``environ`` instead of ``os.environ``."""
    token = _ENVIRON.set(environ)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


class _MappingEnvSource(EnvSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._given = {k.lower(): v for k, v in environ.items()}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._given


def written_in(data: Any, loc: Sequence[Any]) -> bool:
    """Whether the config file's data holds a value at ``loc``."""
    for part in loc:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def value_origin(
    loc: Sequence[Any], located: yamlfile.Located, environ: Mapping[str, str]
) -> tuple[str, int]:
    """Where a value came from: its environment variable if one is set, else the file and line."""
    var = ENV_PREFIX + "__".join(str(p) for p in loc).upper()
    if var.lower() in {k.lower() for k in environ}:
        return f"environment {var}", 0
    return located.path, located.line_of(loc)
