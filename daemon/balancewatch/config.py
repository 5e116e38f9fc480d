"""Settings: ``config.yaml``, overridden by ``BALANCEWATCH_*`` variables, plus secret files.

Where the file is found: ``--config PATH``, else ``$BALANCEWATCH_CONFIG``, else
``./config.yaml``, else ``/etc/balancewatch/config.yaml``; with none of them the
defaults apply (SQLite in the state directory, mail written to files).

Every key can be set from the environment: ``BALANCEWATCH_POLL_INTERVAL=10s``,
``BALANCEWATCH_SMTP__HOST=mail.example.com`` (``__`` descends into a section).
A ``BALANCEWATCH_*`` variable that names no key is refused, not ignored (NOT_SETTINGS
lists the few that are not settings).
The SMTP password comes from ``smtp.password`` (best from the environment) or
``smtp.password_file`` (not both), else ``$CREDENTIALS_DIRECTORY/smtp-password``
(systemd ``LoadCredential=``), which then becomes ``smtp.password_file``; a
file that cannot be read is a problem at load, not at the first send. The
password is a ``SecretStr`` and a database URL's password is masked: neither
shows in a repr, a log line or ``config show``.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from datetime import timedelta
from decimal import Decimal
from email.utils import parseaddr
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from balancewatch.core import shipped, yamlfile
from balancewatch.core.durations import Duration, format_duration
from balancewatch.core.limits import RenderBudget, Size, check_timeout
from balancewatch.core.money import MoneyError, check_currency, check_locale
from balancewatch.core.problems import Problem, ProblemsError, explain

DEFAULT_PATHS = (Path("config.yaml"), Path("/etc/balancewatch/config.yaml"))
ENV_PREFIX = "BALANCEWATCH_"
CREDENTIAL_NAME = "smtp-password"
# BALANCEWATCH_* variables that are not settings: every other one must name a key, so a
# misspelt override (BALANCEWATCH_SMTP__HOTS) is refused instead of silently ignored.
NOT_SETTINGS = frozenset(
    {
        "BALANCEWATCH_CONFIG",  # which config file to read
        "BALANCEWATCH_TEST_PG",  # the test suite's PostgreSQL
        "BALANCEWATCH_IDEMPOTENCY_KEY",  # given to a top-up hook command, which may call us back
        "BALANCEWATCH_TOPUP_ID",  # likewise
    }
)


def _locale(value: str) -> str:
    try:
        return check_locale(value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
    return value


def _mailbox(value: str) -> str:
    """A From or Reply-To value: ``addr@domain`` or ``Name <addr@domain>``, on one line."""
    if not value:
        return value
    _name, addr = parseaddr(value)
    local, at, domain = addr.rpartition("@")
    if "\r" in value or "\n" in value or not (at and local and domain) or any(c.isspace() for c in addr):
        raise ValueError(f"{value!r} is not an email address; write e.g. Balance alerts <alerts@example.com>")
    return value


Locale = Annotated[str, AfterValidator(_locale)]
TimeZone = Annotated[str, AfterValidator(_timezone)]
Mailbox = Annotated[str, AfterValidator(_mailbox)]


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


class UsageSettings(_Section):
    """Average daily usage: the window emails and recommendations use, and how it is kept."""

    window_days: int = Field(default=30, ge=1, le=365)
    min_history: Duration = timedelta(days=3)
    refresh: Duration = timedelta(hours=1)
    recommend_days: Decimal = Field(default=Decimal(1), gt=0, le=365)


MAX_PRICE_DECIMALS = 12


def _price_currency(value: str) -> str:
    try:
        return check_currency(value.upper() if isinstance(value, str) else value)
    except MoneyError as exc:
        raise ValueError(str(exc)) from None


def _service(value: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not 0 < len(text) <= 32:
        raise ValueError(f"{value!r} is not a service name; write the ledger's service, e.g. sms or voice")
    return text


def _price(value: Any) -> Decimal:
    """A unit price in major units, exact as written; finer than the currency's minor unit is fine."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise ValueError(f"{value!r} is not a price; write it exactly, e.g. 0.0075")
    try:
        price = Decimal(str(value).strip().replace("_", ""))
    except ArithmeticError:
        raise ValueError(f"{value!r} is not a price; write it exactly, e.g. 0.0075") from None
    if not price.is_finite() or price <= 0:
        raise ValueError(f"{value} is not a price; a unit price is above zero, e.g. 0.0075")
    if price.adjusted() > 9 or -int(price.as_tuple().exponent) > MAX_PRICE_DECIMALS:
        raise ValueError(
            f"{price:f}: a unit price has at most {MAX_PRICE_DECIMALS} decimals and 10 digits before them"
        )
    return price


PriceCurrency = Annotated[str, AfterValidator(_price_currency)]
Service = Annotated[str, AfterValidator(_service)]
Price = Annotated[Decimal, BeforeValidator(_price)]


class DatabaseSettings(_Section):
    url: str = Field(default="", repr=False)  # may hold a password
    pool_size: int = Field(default=5, ge=1, le=100)

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        return database_url(value)


SUPPORTED_DATABASES = "use sqlite:/// or postgresql://"


def database_url(value: str) -> str:
    """``value`` if it names a database balancewatch runs on, ``postgres://`` written as
    ``postgresql://``; empty stays empty (SQLite in the state directory).

    Raises ValueError naming the URL with its password masked.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not value:
        return value
    if value.startswith("postgres://"):
        value = "postgresql://" + value.removeprefix("postgres://")
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ValueError(f"unsupported database {safe_url(value)!r}; {SUPPORTED_DATABASES}") from None
    # make_engine runs every postgresql URL on psycopg 3, whatever driver it names.
    if url.get_backend_name() == "postgresql" or url.drivername in ("sqlite", "sqlite+pysqlite"):
        return value
    raise ValueError(f"unsupported database {safe_url(value)!r}; {SUPPORTED_DATABASES}")


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # text: one readable line per event; json: one JSON object a line (for a log shipper).
    format: Literal["text", "json"] = "text"


_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):(?P<port>[0-9]{1,5})")


def _listen(value: str) -> str:
    """``host:port``, ``[v6]:port`` or ``:port`` (every address), or empty."""
    found = _LISTEN.fullmatch(value) if value else None
    if value and not (found and 1 <= int(found["port"]) <= 65535):
        raise ValueError(f"{value!r} is not host:port; write e.g. 127.0.0.1:9464, [::1]:9464 or :9464")
    return value


class MetricsSettings(_Section):
    """Where Prometheus metrics and the health endpoints are served; off while ``listen`` is empty."""

    # host:port, e.g. 127.0.0.1:9464 (or [::1]:9464); empty: no HTTP server at all.
    listen: Annotated[str, AfterValidator(_listen)] = ""


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


# Headers balancewatch sets itself on a top-up call; a configured one would clash.
_RESERVED_HEADERS = {"content-type", "content-length", "host", "idempotency-key", "transfer-encoding"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def _header_name(value: str) -> str:
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ValueError(f"{value!r} is not an HTTP header name; write e.g. Authorization")
    if value.lower() in _RESERVED_HEADERS:
        raise ValueError(f"{value}: balancewatch sets this header itself; remove it")
    return value


def _header_value(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if any(c in text for c in "\r\n\0"):
        # The value is a secret: say where, never what.
        raise ValueError("a header value must be one line")
    return value


def _hook_url(value: str) -> str:
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{shown_url(value)!r} is not an http(s) URL; write e.g. https://billing.example/topups"
        )
    if parts.username or parts.password:
        raise ValueError(
            "a URL with a user or password; put credentials in topup.hook.headers (Authorization)"
        )
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK and not parts.hostname.startswith("127."):
        raise ValueError(
            f"{shown_url(value)}: http:// sends the request and its headers in clear; use https://, "
            "or http:// only to this machine (localhost, 127.0.0.1, ::1)"
        )
    return value


def shown_url(url: str) -> str:
    """``url`` without its query and fragment, which may hold a token: what logs and errors show."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _command(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split the command into words: {exc}") from None
    if isinstance(value, list) and not value:
        raise ValueError("the command is empty; write e.g. [/usr/local/bin/charge, --live]")
    return value


HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[SecretStr, AfterValidator(_header_value)]


class TopupHookSettings(_Section):
    """Where a top-up request goes: an HTTP(S) endpoint or a command, at most one (docs/topup.md)."""

    url: Annotated[str, AfterValidator(_hook_url)] = Field(
        default="", repr=False
    )  # its query may hold a token
    command: Annotated[list[str] | None, BeforeValidator(_command)] = None
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
    usage: UsageSettings = UsageSettings()
    # Unit prices per currency and service (major units), for "messages left"; see config.example.yaml.
    prices: dict[PriceCurrency, dict[Service, Price]] = Field(default_factory=dict)
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()
    reload: ReloadSettings = ReloadSettings()
    render: RenderSettings = RenderSettings()
    reports: ReportSettings = ReportSettings()
    topup: TopupSettings = TopupSettings()

    # Set by load_settings; not a key of the file.
    source: Path | None = Field(default=None, exclude=True)
    # Where each value came from, for problems found after loading (see ``where``).
    _located: yamlfile.Located = PrivateAttr(default_factory=lambda: yamlfile.Located("<defaults>", {}))
    _environ: Mapping[str, str] = PrivateAttr(default_factory=dict)

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

    def where(self, loc: Sequence[Any]) -> tuple[str, int]:
        """Where the value at ``loc`` (``("smtp", "host")``) was set: ``("environment VAR", 0)``, the
        config file and its line, or the file (or ``<defaults>``) and 0 when it was not set at all."""
        path, line = _where(loc, self._located, self._environ)
        if path == self._located.path and not _written(self._located.data, loc):
            return path, 0
        return path, line

    def is_set(self, loc: Sequence[Any]) -> bool:
        """Whether the config file or a variable set the value at ``loc`` (else it is a default)."""
        path, _line = _where(loc, self._located, self._environ)
        return path != self._located.path or _written(self._located.data, loc)

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
        return data


MASK = "********"


def safe_url(url: str) -> str:
    """A database URL with its password masked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        return _masked_userinfo(url)


def _masked_userinfo(url: str) -> str:
    """``url``, which SQLAlchemy cannot read, with whatever follows the user name masked."""
    scheme, slashes, rest = url.partition("//")
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return url
    return f"{scheme}{slashes}{userinfo.split(':')[0]}:***@{host}"


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


class _MappingEnvSource(EnvSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._given = {k.lower(): v for k, v in environ.items()}
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._given


def find_config(
    explicit: str | os.PathLike[str] | None,
    environ: Mapping[str, str],
    search: Sequence[Path] = DEFAULT_PATHS,
) -> Path | None:
    """The config file to read, or None when there is none (defaults apply).

    ``explicit`` (``--config``) wins, then ``$BALANCEWATCH_CONFIG``, then the
    first of ``search`` that exists. An explicit path or ``$BALANCEWATCH_CONFIG``
    that does not exist is an error.
    """
    if explicit:
        return _must_exist(Path(explicit), "--config")
    if environ.get("BALANCEWATCH_CONFIG"):
        return _must_exist(Path(environ["BALANCEWATCH_CONFIG"]), "BALANCEWATCH_CONFIG")
    return next((p for p in search if p.is_file()), None)


def _must_exist(path: Path, named_by: str) -> Path:
    if not path.is_file():
        raise ProblemsError([Problem(str(path), 0, "", f"config file not found (named by {named_by})")])
    return path


def load_settings(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    search: Sequence[Path] = DEFAULT_PATHS,
) -> Settings:
    """Find, read and validate the configuration.

    Raises ProblemsError listing every problem as ``path:line: field: message``
    (or naming the environment variable that carried the bad value).
    """
    environ = dict(os.environ if environ is None else environ)
    path = find_config(explicit, environ, search)
    located = _read(path)
    data = located.data if isinstance(located.data, dict) else {}
    unknown = unknown_variables(environ)
    token = _ENVIRON.set(environ)
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        # pydantic refuses some unknown variables too (those inside a section it builds): once is enough.
        named = {p.path.upper() for p in unknown}
        found = [p for p in _problems(exc, located, environ) if p.path.upper() not in named]
        raise ProblemsError([*unknown, *found]) from None
    finally:
        _ENVIRON.reset(token)
    if unknown:
        raise ProblemsError(unknown)
    settings.source = path
    settings._located, settings._environ = located, environ
    base = path.parent if path else Path.cwd()
    if _state_directory_wins(data, environ):
        # systemd's StateDirectory= names the place unless the config names an absolute one:
        # a relative state_dir would resolve next to the config file, which the unit makes
        # read-only (ProtectSystem=strict).
        settings.state_dir = Path(environ["STATE_DIRECTORY"].split(":")[0])
    _absolutise(settings, base)
    _find_password(settings, located, environ)
    _check_header_files(settings, located, environ)
    _check_smtp(settings)
    return settings


def _check_smtp(settings: Settings) -> None:
    """What the SMTP transport and the top-up hook need, known wrong before any send."""
    problems = []
    if settings.delivery.transport == "smtp" and not settings.smtp.host:
        problems.append(
            settings.problem(
                ("delivery", "transport"),
                "smtp, but smtp.host is not set; set smtp.host, or transport: files to write .eml files",
            )
        )
    for loc, ca_file in (
        (("smtp", "ca_file"), settings.smtp.ca_file),
        (("topup", "hook", "ca_file"), settings.topup.hook.ca_file),
    ):
        if ca_file is None:
            continue
        try:
            ca_file.read_bytes()
        except OSError as exc:
            problems.append(settings.problem(loc, f"cannot read {ca_file}: {os_reason(exc)}"))
    if problems:
        raise ProblemsError(problems)


def os_reason(exc: OSError) -> str:
    """Why a file operation failed, in lower case words: ``permission denied``."""
    return (exc.strerror or str(exc)).lower()


def unknown_variables(environ: Mapping[str, str]) -> list[Problem]:
    """A problem for each ``BALANCEWATCH_*`` variable that names no setting (and is not one of
    NOT_SETTINGS): pydantic-settings would ignore it, and the sysadmin believe it applied."""
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in NOT_SETTINGS:
            message = _unknown_key(upper.removeprefix(ENV_PREFIX).lower().split("__"))
            if message:
                problems.append(Problem(f"environment {name}", 0, "", message))
    return problems


def _unknown_key(parts: Sequence[str]) -> str | None:
    """Why the key path ``parts`` names no setting, or None when it does."""
    section: type[BaseModel] = Settings
    for i, part in enumerate(parts):
        fields = {n: f for n, f in section.model_fields.items() if n != "source"}
        field = next((f for n, f in fields.items() if part in (n, f.alias)), None)
        if field is None:
            keys = ", ".join(f.alias or n for n, f in fields.items())
            return f"unknown key; valid keys here: {keys} (config.example.yaml documents each)"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            section = annotation
        elif get_origin(annotation) is dict:
            return None  # its keys are the user's own (currencies, header names)
        elif i < len(parts) - 1:
            return f"unknown key; {'.'.join(parts[: i + 1])} takes a value, not keys"
    return None


def _written(data: Any, loc: Sequence[Any]) -> bool:
    """Whether the config file's data holds a value at ``loc``."""
    for part in loc:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _state_directory_wins(data: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    if not environ.get("STATE_DIRECTORY") or f"{ENV_PREFIX}STATE_DIR" in environ:
        return False
    written = data.get("state_dir")
    return not (isinstance(written, str | os.PathLike) and Path(written).is_absolute())


def _find_password(settings: Settings, located: yamlfile.Located, environ: Mapping[str, str]) -> None:
    """Check the password sources; a systemd credential becomes ``smtp.password_file``."""
    smtp = settings.smtp
    if smtp.password is not None and smtp.password_file is not None:
        path, line = _where(("smtp", "password_file"), located, environ)
        raise ProblemsError(
            [
                Problem(
                    path,
                    line,
                    "smtp.password_file",
                    "set at most one of smtp.password and smtp.password_file",
                )
            ]
        )
    if smtp.password is None and smtp.password_file is None and environ.get("CREDENTIALS_DIRECTORY"):
        credential = Path(environ["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME
        if credential.is_file():
            smtp.password_file = credential
    if smtp.password_file is not None:
        try:
            smtp.password_file.read_bytes()
        except OSError as exc:
            path, line = _where(("smtp", "password_file"), located, environ)
            reason = os_reason(exc)
            raise ProblemsError(
                [Problem(path, line, "smtp.password_file", f"cannot read {smtp.password_file}: {reason}")]
            ) from None


def _check_header_files(settings: Settings, located: yamlfile.Located, environ: Mapping[str, str]) -> None:
    """A top-up header file that cannot be read is a problem at load, not at the first charge."""
    problems = []
    for name, path in settings.topup.hook.header_files.items():
        try:
            path.read_bytes()
        except OSError as exc:
            where, line = _where(("topup", "hook", "header_files", name), located, environ)
            reason = os_reason(exc)
            problems.append(
                Problem(where, line, f"topup.hook.header_files.{name}", f"cannot read {path}: {reason}")
            )
    if problems:
        raise ProblemsError(problems)


def _where(loc: Sequence[Any], located: yamlfile.Located, environ: Mapping[str, str]) -> tuple[str, int]:
    """Where a value came from: its environment variable if one is set, else the file and line."""
    var = ENV_PREFIX + "__".join(str(p) for p in loc).upper()
    if var.lower() in {k.lower() for k in environ}:
        return f"environment {var}", 0
    return located.path, located.line_of(loc)


def _read(path: Path | None) -> yamlfile.Located:
    if path is None:
        return yamlfile.Located("<defaults>", {})
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProblemsError(
            [Problem(str(path), 0, "", f"cannot read the config file: {os_reason(exc)}")]
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = f"byte 0x{data[exc.start]:02x} is not UTF-8 text"
        raise ProblemsError(
            [Problem(str(path), line, "", f"not UTF-8: {bad}; save the file as UTF-8")]
        ) from None
    located = yamlfile.load(text, str(path))
    if located.data is not None and not isinstance(located.data, dict):
        raise ProblemsError([Problem(str(path), 1, "", "the config file must be a mapping of keys")])
    return located


def _absolutise(settings: Settings, base: Path) -> None:
    settings.state_dir = (base / settings.state_dir).resolve()
    settings.rules_dir = (base / settings.rules_dir).resolve()
    settings.templates_dir = (base / settings.templates_dir).resolve()
    if settings.files.dir is not None:
        settings.files.dir = (base / settings.files.dir).resolve()
    if settings.smtp.password_file is not None:
        settings.smtp.password_file = (base / settings.smtp.password_file).resolve()
    if settings.smtp.ca_file is not None:
        settings.smtp.ca_file = (base / settings.smtp.ca_file).resolve()
    hook = settings.topup.hook
    hook.header_files = {name: (base / path).resolve() for name, path in hook.header_files.items()}
    if hook.ca_file is not None:
        hook.ca_file = (base / hook.ca_file).resolve()


def _problems(exc: ValidationError, located: yamlfile.Located, environ: Mapping[str, str]) -> list[Problem]:
    out = []
    for error in exc.errors():
        loc = [p for p in error["loc"] if p != "[key]"]  # a bad mapping key is reported at the key
        path, line = _where(loc, located, environ)
        out.append(Problem(path, line, ".".join(str(p) for p in loc), _message(error, loc)))
    return out


def _message(error: Any, loc: Sequence[Any]) -> str:
    if error["type"] == "extra_forbidden":
        section: Any = Settings
        for part in loc[:-1]:
            field = section.model_fields.get(part) or next(
                (f for f in section.model_fields.values() if f.alias == part), None
            )
            section = field.annotation if field else None
            if not (isinstance(section, type) and issubclass(section, BaseModel)):
                return "unknown key; see config.example.yaml for every key"
        keys = [f.alias or n for n, f in section.model_fields.items() if n != "source"]
        return f"unknown key; valid keys here: {', '.join(keys)} (config.example.yaml documents each)"
    return explain(error)
