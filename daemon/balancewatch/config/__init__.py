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

The package: ``values`` checks single values, ``sections`` holds one model per section,
``settings`` the whole ``Settings``, ``load`` finds, reads and validates. Import from
``balancewatch.config``; the names below are its public face.
"""

from balancewatch.config.load import (
    DEFAULT_PATHS,
    NOT_SETTINGS,
    find_config,
    load_settings,
    os_reason,
    unknown_variables,
)
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
    RetrySettings,
    Security,
    SmtpSettings,
    TopupHookSettings,
    TopupSettings,
    UsageSettings,
)
from balancewatch.config.settings import CREDENTIAL_NAME, ENV_PREFIX, Settings
from balancewatch.config.values import MASK, database_url, safe_url, shown_url

__all__ = [
    "CREDENTIAL_NAME",
    "DEFAULT_PATHS",
    "ENV_PREFIX",
    "MASK",
    "NOT_SETTINGS",
    "DatabaseSettings",
    "DefaultsSettings",
    "DeliverySettings",
    "EmailSettings",
    "FilesSettings",
    "LogSettings",
    "MetricsSettings",
    "ReloadSettings",
    "RenderSettings",
    "ReportSettings",
    "RetrySettings",
    "Security",
    "Settings",
    "SmtpSettings",
    "TopupHookSettings",
    "TopupSettings",
    "UsageSettings",
    "database_url",
    "find_config",
    "load_settings",
    "os_reason",
    "safe_url",
    "shown_url",
    "unknown_variables",
]
