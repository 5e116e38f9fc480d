"""Finding, reading and validating the configuration: the file, ``BALANCEWATCH_*`` variables
and the secret files they name.

Every problem is collected and raised together as ProblemsError, each placed at its
file and line or named by the environment variable that carried it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, get_origin

from pydantic import BaseModel, ValidationError

from balancewatch.config.channels import ChatChannel, WebhookChannel, read_secret
from balancewatch.config.settings import (
    CREDENTIAL_NAME,
    ENV_PREFIX,
    Settings,
    reading_environ,
    value_origin,
)
from balancewatch.core import yamlfile
from balancewatch.core.problems import Problem, ProblemsError, explain

DEFAULT_PATHS = (Path("config.yaml"), Path("/etc/balancewatch/config.yaml"))
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
    with reading_environ(environ):
        try:
            settings = Settings(**data)
        except ValidationError as exc:
            # pydantic refuses some unknown variables too (those inside a section it builds): once is enough.
            named = {p.path.upper() for p in unknown}
            found = [p for p in _problems(exc, located, environ) if p.path.upper() not in named]
            raise ProblemsError([*unknown, *found]) from None
    if unknown:
        raise ProblemsError(unknown)
    settings.source = path
    settings.remember_origin(located, environ)
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
    _read_channel_secrets(settings, environ)
    return settings


def _read_channel_secrets(settings: Settings, environ: Mapping[str, str]) -> None:
    """Each channel's secret, read now: one that cannot be is a problem at its key, not a
    failure at the first send."""
    problems, secrets = [], {}
    for name, channel in settings.channels.items():
        if isinstance(channel, WebhookChannel | ChatChannel):
            key = "secret" if isinstance(channel, WebhookChannel) else "url"
            try:
                secrets[name] = read_secret(name, channel, environ)
            except ValueError as exc:
                loc: tuple[str, ...] = ("channels", name, key)
                if not settings.is_set(loc):
                    loc = ("channels", name)
                problems.append(settings.problem(loc, str(exc)))
    if problems:
        raise ProblemsError(problems)
    settings.keep_channel_secrets(secrets)


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


def _state_directory_wins(data: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    if not environ.get("STATE_DIRECTORY") or f"{ENV_PREFIX}STATE_DIR" in environ:
        return False
    written = data.get("state_dir")
    return not (isinstance(written, str | os.PathLike) and Path(written).is_absolute())


def _find_password(settings: Settings, located: yamlfile.Located, environ: Mapping[str, str]) -> None:
    """Check the password sources; a systemd credential becomes ``smtp.password_file``."""
    smtp = settings.smtp
    if smtp.password is not None and smtp.password_file is not None:
        path, line = value_origin(("smtp", "password_file"), located, environ)
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
            path, line = value_origin(("smtp", "password_file"), located, environ)
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
            where, line = value_origin(("topup", "hook", "header_files", name), located, environ)
            reason = os_reason(exc)
            problems.append(
                Problem(where, line, f"topup.hook.header_files.{name}", f"cannot read {path}: {reason}")
            )
    if problems:
        raise ProblemsError(problems)


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
    for channel in settings.channels.values():
        for attr in ("secret_file", "url_file", "ca_file"):
            path = getattr(channel, attr, None)
            if path is not None:
                setattr(channel, attr, (base / path).resolve())


def _problems(exc: ValidationError, located: yamlfile.Located, environ: Mapping[str, str]) -> list[Problem]:
    out = []
    for error in exc.errors():
        loc = [p for p in error["loc"] if p != "[key]"]  # a bad mapping key is reported at the key
        path, line = value_origin(loc, located, environ)
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
