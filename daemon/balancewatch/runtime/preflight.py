"""What ``check`` and ``run`` both verify before anything starts: one function, the same refusals.

``load_settings`` has already refused what a file or a variable gets wrong by itself.
``preflight`` checks what depends on the machine and on several settings together, in
two stages, each reported whole:

1. the settings: every directory balancewatch will write can be created and written
   (the SQLite database's, the ``.eml`` files'), and the SMTP login is a user with a
   password; a problem here raises SettingsProblemsError before any rule is read;
2. the rule and template set (``load_set``, the very load a reload runs) and the top-up
   hook its rules need; problems raise ProblemsError.

It opens no database and starts nothing, so ``run`` refuses before doing either.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from balancewatch.config import Settings, os_reason
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.deliver.registry import make_registry
from balancewatch.liveset import LiveSet
from balancewatch.runtime.loadset import load_set
from balancewatch.topup.hook import check_topup_hook


class SettingsProblemsError(ProblemsError):
    """Problems with the settings themselves (reported as the config's, like a bad value)."""


@dataclass(frozen=True)
class Ready:
    """What passed: the set to run, and what deserves a warning without stopping anything."""

    live: LiveSet
    warnings: tuple[str, ...] = ()


def preflight(settings: Settings) -> Ready:
    """Check ``settings`` and load the rule and template set they name.

    Raises SettingsProblemsError (stage 1) or ProblemsError (stage 2), listing every
    problem of that stage as one line each.
    """
    problems = [*directory_problems(settings), *login_problems(settings), *channel_problems(settings)]
    if problems:
        raise SettingsProblemsError(problems)
    live = load_set(
        settings.rules_dir,
        settings.templates_dir,
        budget=settings.render.budget(),
        channels=tuple(settings.channels),
    )
    check_topup_hook(settings, live.rules)
    warnings = () if live.rules else (f"{settings.rules_dir}: no rules: nothing will ever alert",)
    return Ready(live, warnings)


def channel_problems(settings: Settings) -> list[Problem]:
    """What stops a channel's transport from being made (a chat URL Apprise does not know)."""
    try:
        make_registry(settings)
    except ProblemsError as exc:
        return list(exc.problems)
    return []


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL, None for another database or one in memory."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


# What each directory is for, the setting that moves it, and how to say so.
_STATE_HINT = "or set state_dir (under systemd, StateDirectory= sets it) to a directory it may write"
_DATABASE_HINT = "or set database.url to a file in a directory it may write"
_FILES_HINT = "or set files.dir to a directory it may write"


def directory_problems(settings: Settings) -> list[Problem]:
    """A problem for each directory balancewatch will write that cannot be created or written.

    Each is created if missing, as ``run`` would; a temporary file proves it writable.
    """
    wanted: dict[Path, tuple[tuple[str, ...], str]] = {}
    database = sqlite_file(settings.database_url)
    if database is not None:
        by_url = bool(settings.database.url) and settings.is_set(("database", "url"))  # not `url: ""`
        wanted[database.parent] = (
            (("database", "url"), _DATABASE_HINT) if by_url else (("state_dir",), _STATE_HINT)
        )
    if settings.transport == "files":
        by_dir = settings.files.dir is not None
        wanted.setdefault(
            settings.mail_dir, (("files", "dir"), _FILES_HINT) if by_dir else (("state_dir",), _STATE_HINT)
        )
    problems: list[Problem] = []
    failed: list[Path] = []
    for directory, (loc, hint) in sorted(wanted.items()):
        if any(directory.is_relative_to(parent) for parent in failed):
            continue  # the directory above it is reported already
        reason = unwritable(directory)
        if reason:
            failed.append(directory)
            problems.append(
                settings.problem(
                    loc,
                    f"cannot write {directory}: {reason}; "
                    f"make it writable for the user balancewatch runs as, {hint}",
                )
            )
    return problems


def unwritable(directory: Path) -> str | None:
    """Why ``directory`` cannot be created or written (``permission denied``), or None.

    Leaves nothing behind: directories made to find out are removed again (``run`` makes
    them when it writes there), so a ``check`` as another user leaves no stray directory.
    """
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory, prefix=".balancewatch-check-"):
            pass
    except OSError as exc:
        return os_reason(exc)
    finally:
        for made in missing:  # deepest first
            with contextlib.suppress(OSError):
                made.rmdir()
    return None


def login_problems(settings: Settings) -> list[Problem]:
    """A user without a password, or a password without a user: either way no login works."""
    smtp = settings.smtp
    has_password = smtp.password is not None or smtp.password_file is not None
    if smtp.username and not has_password:
        return [
            settings.problem(
                ("smtp", "username"),
                f"{smtp.username!r} has no password; set smtp.password "
                "(best as BALANCEWATCH_SMTP__PASSWORD), smtp.password_file, "
                "or the systemd credential smtp-password",
            )
        ]
    if not smtp.username:
        # A password from the systemd credential is offered to whoever configures a user: not a mistake.
        # Keys written but left empty (as the example config has them) give no password.
        sources = {("smtp", "password"): smtp.password, ("smtp", "password_file"): smtp.password_file}
        given = [loc for loc, value in sources.items() if value is not None and settings.is_set(loc)]
        return [
            settings.problem(
                loc, "a password but no smtp.username; set smtp.username, or remove the password"
            )
            for loc in given
        ]
    return []
