"""Settings: where the file is found, environment overrides, secrets, and errors with file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from balancewatch.config import DEFAULT_PATHS, Settings, load_settings
from balancewatch.core import shipped, yamlfile
from balancewatch.core.problems import ProblemsError

SHIPPED_DIRS = {
    "BALANCEWATCH_RULES_DIR": str(shipped.rules_dir()),
    "BALANCEWATCH_TEMPLATES_DIR": str(shipped.templates_dir()),
}


def config_file(directory: Path, body: str, name: str = "config.yaml") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path


def problems(explicit: Path | None, environ: dict[str, str], search: tuple[Path, ...] = ()) -> list[str]:
    with pytest.raises(ProblemsError) as caught:
        load_settings(explicit, environ, search)
    return [str(p) for p in caught.value.problems]


# --- where the configuration comes from ----------------------------------------------------------


def test_the_search_order_ends_with_etc_balancewatch() -> None:
    assert list(DEFAULT_PATHS) == [Path("config.yaml"), Path("/etc/balancewatch/config.yaml")]


def test_the_config_option_wins_over_the_environment_and_the_search_path(tmp_path: Path) -> None:
    explicit = config_file(tmp_path / "explicit", "instance: explicit\n")
    named = config_file(tmp_path / "named", "instance: named\n")
    local = config_file(tmp_path / "local", "instance: local\n")
    settings = load_settings(explicit, {"BALANCEWATCH_CONFIG": str(named)}, (local,))
    assert (settings.instance, settings.source) == ("explicit", explicit)


def test_balancewatch_config_wins_over_the_search_path(tmp_path: Path) -> None:
    named = config_file(tmp_path / "named", "instance: named\n")
    local = config_file(tmp_path / "local", "instance: local\n")
    assert load_settings(None, {"BALANCEWATCH_CONFIG": str(named)}, (local,)).instance == "named"


def test_config_yaml_in_the_working_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file(tmp_path, "instance: here\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {})
    assert (settings.instance, settings.source) == ("here", Path("config.yaml"))


def test_the_first_file_of_the_search_path_that_exists_is_used(tmp_path: Path) -> None:
    etc = config_file(tmp_path / "etc", "instance: etc\n")
    settings = load_settings(None, {}, (tmp_path / "config.yaml", etc))
    assert (settings.instance, settings.source) == ("etc", etc)


def test_without_any_file_the_defaults_apply(tmp_path: Path) -> None:
    settings = load_settings(None, {"BALANCEWATCH_STATE_DIR": str(tmp_path)}, (tmp_path / "none.yaml",))
    assert settings.source is None
    assert settings.database_url == f"sqlite:///{tmp_path / 'balancewatch.db'}"
    assert settings.transport == "files"
    assert settings.rules_dir == shipped.rules_dir().resolve()


@pytest.mark.parametrize("named_by", ["--config", "BALANCEWATCH_CONFIG"])
def test_a_named_config_file_that_does_not_exist_is_an_error(tmp_path: Path, named_by: str) -> None:
    missing = tmp_path / "nope.yaml"
    explicit, environ = (missing, {}) if named_by == "--config" else (None, {named_by: str(missing)})
    assert problems(explicit, environ) == [f"{missing}: config file not found (named by {named_by})"]


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config_file(tmp_path / "etc", "state_dir: state\nrules_dir: rules\nfiles:\n  dir: ../mail\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(path, {})
    assert settings.state_dir == tmp_path / "etc" / "state"
    assert settings.rules_dir == tmp_path / "etc" / "rules"
    assert settings.mail_dir == tmp_path / "mail"


def test_systemd_state_directory_is_used_when_the_config_names_none(tmp_path: Path) -> None:
    settings = load_settings(None, {"STATE_DIRECTORY": f"{tmp_path}/a:{tmp_path}/b"}, ())
    assert settings.state_dir == tmp_path / "a"


def test_systemd_state_directory_wins_over_a_relative_state_dir_but_not_an_absolute_one(
    tmp_path: Path,
) -> None:
    # The shipped unit makes the config's directory read-only: a relative state_dir there would crash.
    relative = config_file(tmp_path / "etc", "state_dir: state\n")
    environ = {"STATE_DIRECTORY": str(tmp_path / "var")}
    assert load_settings(relative, environ).state_dir == tmp_path / "var"
    absolute = config_file(tmp_path / "etc2", f"state_dir: {tmp_path / 'elsewhere'}\n")
    assert load_settings(absolute, environ).state_dir == tmp_path / "elsewhere"
    named = {**environ, "BALANCEWATCH_STATE_DIR": str(tmp_path / "env")}
    assert load_settings(relative, named).state_dir == tmp_path / "env"


# --- the environment -------------------------------------------------------------------------------


def test_every_key_can_be_set_from_the_environment_with_double_underscores_for_sections(
    tmp_path: Path,
) -> None:
    path = config_file(tmp_path, "poll_interval: 10s\nsmtp:\n  host: mail.example.com\n  port: 25\n")
    settings = load_settings(
        path,
        {
            "BALANCEWATCH_POLL_INTERVAL": "1m",
            "BALANCEWATCH_SMTP__PORT": "2525",
            "BALANCEWATCH_DELIVERY__RETRY__INITIAL": "45s",
            "BALANCEWATCH_DEFAULTS__LOCALE": "en_IN",
            "balancewatch_log__level": "debug",
        },
    )
    assert settings.poll_interval.total_seconds() == 60
    assert (settings.smtp.host, settings.smtp.port) == ("mail.example.com", 2525)  # the file's host stays
    assert settings.delivery.retry.initial.total_seconds() == 45
    assert settings.defaults.locale == "en_IN"
    assert settings.log.level == "debug"


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    path = config_file(tmp_path, "smtp:\n  port: 25\n")
    assert problems(
        path, {"BALANCEWATCH_SMTP__PORT": "twenty-five", "BALANCEWATCH_POLL_INTERVAL": "often"}
    ) == [
        "environment BALANCEWATCH_POLL_INTERVAL: poll_interval: 'often' is not a duration; "
        "write e.g. 30s, 5m, 24h, 1d or 1h30m",
        "environment BALANCEWATCH_SMTP__PORT: smtp.port: 'twenty-five' is not a whole number; write e.g. 5",
    ]


# --- mistakes in the file --------------------------------------------------------------------------


def test_every_bad_value_is_reported_with_file_line_and_field(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        """\
poll_interval: 3 days
smtp:
  host: mail.example.com
  port: 99999
  security: ssl
defaults:
  timezone: Mars/Olympus
  locale: xx_YY
delivery:
  from: alerts at example.com
""",
    )
    assert problems(path, {}) == [
        f"{path}:1: poll_interval: '3 days' is not a duration; write e.g. 30s, 5m, 24h, 1d or 1h30m",
        f"{path}:4: smtp.port: 99999 is too large; write at most 65535",
        f"{path}:5: smtp.security: 'ssl' is not allowed; write 'starttls', 'tls' or 'none'",
        f"{path}:7: defaults.timezone: 'Mars/Olympus' is not an IANA time zone (e.g. UTC, Europe/Berlin)",
        f"{path}:8: defaults.locale: 'xx_YY' is not a locale Babel knows (e.g. en_US, en_IN, de_DE)",
        f"{path}:10: delivery.from: 'alerts at example.com' is not an email address; "
        "write e.g. Balance alerts <alerts@example.com>",
    ]


def test_an_unknown_key_lists_the_keys_valid_in_its_section(tmp_path: Path) -> None:
    path = config_file(tmp_path, "smtp:\n  hostname: mail.example.com\n")
    assert problems(path, {}) == [
        f"{path}:2: smtp.hostname: unknown key; valid keys here: host, port, security, username, password, "
        "password_file, timeout, ca_file (config.example.yaml documents each)"
    ]


def test_a_yaml_error_in_the_config_is_reported_on_its_line(tmp_path: Path) -> None:
    path = config_file(tmp_path, "smtp:\n  host: 'mail.example.com\n")
    assert problems(path, {}) == [
        f"{path}:2: not valid YAML: the file ends before the quoted text started on this line is closed"
    ]


def test_a_config_that_is_not_a_mapping_says_so(tmp_path: Path) -> None:
    path = config_file(tmp_path, "- smtp\n")
    assert problems(path, {}) == [f"{path}:1: the config file must be a mapping of keys"]


# --- secrets ---------------------------------------------------------------------------------------


def test_the_smtp_password_comes_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(None, {"BALANCEWATCH_SMTP__PASSWORD": "hunter2"}, ())
    assert settings.smtp_password({}) == "hunter2"


def test_the_smtp_password_comes_from_a_file_named_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    path = config_file(tmp_path, "smtp:\n  password_file: secret\n")
    assert load_settings(path, {}).smtp_password({}) == "s3cret"


def test_the_smtp_password_comes_from_a_systemd_credential(tmp_path: Path) -> None:
    (tmp_path / "smtp-password").write_text("from-systemd\n")
    settings = load_settings(None, {"CREDENTIALS_DIRECTORY": str(tmp_path)}, ())
    assert settings.smtp.password_file == tmp_path / "smtp-password"
    assert settings.smtp_password({}) == "from-systemd"


def test_a_password_set_in_the_environment_wins_over_the_systemd_credential(tmp_path: Path) -> None:
    (tmp_path / "smtp-password").write_text("from-systemd\n")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path), "BALANCEWATCH_SMTP__PASSWORD": "from-env"}
    assert load_settings(None, environ, ()).smtp_password({}) == "from-env"


def test_a_password_and_a_password_file_together_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    path = config_file(tmp_path, "smtp:\n  host: mail.example.com\n  password_file: secret\n")
    assert problems(path, {"BALANCEWATCH_SMTP__PASSWORD": "hunter2"}) == [
        f"{path}:3: smtp.password_file: set at most one of smtp.password and smtp.password_file"
    ]


def test_a_password_file_that_cannot_be_read_is_an_error_at_load(tmp_path: Path) -> None:
    path = config_file(tmp_path, "smtp:\n  host: mail.example.com\n  password_file: missing\n")
    assert problems(path, {}) == [
        f"{path}:3: smtp.password_file: cannot read {tmp_path / 'missing'}: no such file or directory"
    ]


def test_the_password_never_shows_in_the_repr_of_the_settings(tmp_path: Path) -> None:
    environ = {
        "BALANCEWATCH_SMTP__PASSWORD": "hunter2",
        "BALANCEWATCH_DATABASE__URL": "postgresql://bw:pgsecret@db.example/bw",
    }
    settings = load_settings(None, environ, ())
    for text in (repr(settings), str(settings), repr(settings.smtp), repr(settings.database)):
        assert "hunter2" not in text
        assert "pgsecret" not in text


def test_the_redacted_view_masks_every_secret_and_shows_durations_as_written(tmp_path: Path) -> None:
    environ = {
        "BALANCEWATCH_SMTP__PASSWORD": "hunter2",
        "BALANCEWATCH_DATABASE__URL": "postgresql://bw:pgsecret@db.example/bw",
        "BALANCEWATCH_POLL_INTERVAL": "90s",
    }
    data = load_settings(None, environ, ()).redacted()
    assert data["smtp"]["password"] == "********"
    assert data["database"]["url"] == "postgresql://bw:***@db.example/bw"
    assert data["poll_interval"] == "1m30s"
    assert data["delivery"]["retry"]["give_up_after"] == "2d"


# --- the example config ----------------------------------------------------------------------------


def test_the_example_config_loads_and_states_the_defaults(tmp_path: Path) -> None:
    environ = {**SHIPPED_DIRS, "BALANCEWATCH_STATE_DIR": str(tmp_path)}
    example = load_settings(shipped.example_config(), environ)
    defaults = load_settings(None, environ, ())
    assert example.source == shipped.example_config()
    assert example.redacted() == defaults.redacted()


def test_the_example_config_documents_every_key() -> None:
    text = shipped.example_config().read_text()
    written = yamlfile.load(text, "config.example.yaml").data
    # state_dir is documented commented out: any value written there would override systemd's
    # $STATE_DIRECTORY when absolute, or be pointless when relative.
    assert _missing_keys(Settings, written) == ["state_dir"]
    assert "\n#   state_dir: /var/lib/balancewatch\n" in text


def _missing_keys(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if name == "source":
            continue
        if key not in data:
            missing.append(prefix + key)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            missing.extend(_missing_keys(field.annotation, data[key] or {}, f"{prefix}{key}."))
    return missing


def test_an_absurdly_long_interval_is_refused_not_a_crash(tmp_path: Path) -> None:
    path = config_file(tmp_path, "poll_interval: 99999999999999999999d\n")
    assert problems(path, {}) == [
        f"{path}:1: poll_interval: '99999999999999999999d' is too long an interval; at most 3650d"
    ]


# --- refused at load: what no later step could put right --------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["BALANCEWATCH_CONFIG", "BALANCEWATCH_TEST_PG", "BALANCEWATCH_IDEMPOTENCY_KEY", "BALANCEWATCH_TOPUP_ID"],
)
def test_balancewatch_variables_that_are_not_settings_are_allowed(tmp_path: Path, name: str) -> None:
    config = config_file(tmp_path, "instance: here\n")
    assert load_settings(
        None, {name: str(config)} if name == "BALANCEWATCH_CONFIG" else {name: "x"}, (config,)
    )


def test_variables_below_a_mapping_of_the_users_own_keys_are_settings(tmp_path: Path) -> None:
    settings = load_settings(
        None,
        {
            "BALANCEWATCH_PRICES__EUR__SMS": "0.05",
            "BALANCEWATCH_TOPUP__HOOK__HEADERS__AUTHORIZATION": "Bearer t",
        },
        (),
    )
    assert str(settings.prices["EUR"]["sms"]) == "0.05"
    assert {k.lower(): v.get_secret_value() for k, v in settings.topup.hook.headers.items()} == {
        "authorization": "Bearer t"
    }


def test_every_misspelt_variable_is_reported_once_with_the_valid_keys(tmp_path: Path) -> None:
    assert problems(None, {"balancewatch_smtp__hots": "x", "BALANCEWATCH_LOG__LEVL": "debug"}) == [
        "environment BALANCEWATCH_LOG__LEVL: unknown key; valid keys here: level, format "
        "(config.example.yaml documents each)",
        "environment balancewatch_smtp__hots: unknown key; valid keys here: host, port, security, username, "
        "password, password_file, timeout, ca_file (config.example.yaml documents each)",
    ]


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("postgres://bw@db.example/bw", "postgresql://bw@db.example/bw"),
        ("postgresql://bw@db.example/bw", "postgresql://bw@db.example/bw"),
        ("postgresql+psycopg://bw@db.example/bw", "postgresql+psycopg://bw@db.example/bw"),
        ("sqlite:////var/lib/balancewatch/bw.db", "sqlite:////var/lib/balancewatch/bw.db"),
    ],
)
def test_supported_database_urls_are_kept_and_postgres_is_read_as_postgresql(written: str, kept: str) -> None:
    assert load_settings(None, {"BALANCEWATCH_DATABASE__URL": written}, ()).database.url == kept


@pytest.mark.parametrize("listen", ["127.0.0.1:9464", "[::1]:9464", ":9464", "metrics.internal:80", ""])
def test_metrics_listen_takes_host_and_port(listen: str) -> None:
    assert load_settings(None, {"BALANCEWATCH_METRICS__LISTEN": listen}, ()).metrics.listen == listen


@pytest.mark.parametrize("listen", ["9464", "127.0.0.1", "127.0.0.1:0", "[::1]", "host:port", "a b:1"])
def test_metrics_listen_that_is_not_host_and_port_is_refused(listen: str) -> None:
    assert problems(None, {"BALANCEWATCH_METRICS__LISTEN": listen}) == [
        f"environment BALANCEWATCH_METRICS__LISTEN: metrics.listen: {listen!r} is not host:port; "
        "write e.g. 127.0.0.1:9464, [::1]:9464 or :9464"
    ]
