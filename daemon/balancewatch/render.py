"""Email templates: a sandboxed Jinja environment over an in-memory copy of ``templates/``.

A template is a directory holding ``subject.txt``, ``body.txt`` and
optionally ``body.html``; files starting with ``_`` at the top (``_base.html``)
are shared layouts. Designers are less trusted than sysadmins, so templates run
in Jinja's immutable sandbox with HTML autoescaping and ``StrictUndefined``,
and read only the files loaded here: no filesystem, no network.

The files are read once when the set is loaded; the set in use is exactly the
set that was validated, whatever happens on disk afterwards.
"""

from __future__ import annotations

import re
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from babel.dates import format_date, format_datetime, format_skeleton, format_time
from babel.numbers import format_decimal
from jinja2 import (
    BaseLoader,
    BytecodeCache,
    Environment,
    StrictUndefined,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    Undefined,
    pass_context,
)
from jinja2.bccache import Bucket
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from balancewatch.durations import every, format_duration
from balancewatch.money import Money, format_money
from balancewatch.problems import Problem, ProblemsError

SUBJECT, TEXT, HTML = "subject.txt", "body.txt", "body.html"
MAX_SUBJECT = 250
TEMPLATE_NAMES_HINT = "a template is a directory holding subject.txt, body.txt and optionally body.html"
_TEXT_SUFFIXES = (".txt", ".html", ".htm")


@dataclass(frozen=True, slots=True)
class Rendered:
    """One email's parts; ``subject`` is a single line, safe for a header."""

    subject: str
    text: str
    html: str | None


class RenderError(Exception):
    """A template failed to render; ``problem`` names the template file and line."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def read_template_files(directory: Path) -> dict[str, str]:
    """Every template file under ``directory`` by its relative path; hidden entries skipped.

    Raises ProblemsError for files that cannot be read or that link outside ``directory``.
    """
    if not directory.is_dir():
        raise ProblemsError([Problem(str(directory), 0, "", "templates directory not found")])
    files: dict[str, str] = {}
    problems: list[Problem] = []
    root = directory.resolve()
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or path.suffix not in _TEXT_SUFFIXES:
            continue
        if not path.resolve().is_relative_to(root):
            # A symlink to /etc/passwd would let a template include it.
            problems.append(
                Problem(
                    str(path), 0, "", "links outside the templates directory; templates read only files in it"
                )
            )
            continue
        try:
            files[rel.as_posix()] = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), 0, "", f"cannot read: {exc}"))
    if problems:
        raise ProblemsError(problems)
    return files


class TemplateSet:
    """The compiled templates of one directory snapshot."""

    def __init__(self, files: Mapping[str, str], directory: Path) -> None:
        self.directory = directory
        self.files = dict(files)
        self.env = _environment(self.files)
        self.names = frozenset(name.rsplit("/", 1)[0] for name in self.files if name.endswith("/" + SUBJECT))

    def compile_problems(self) -> list[Problem]:
        """Syntax errors in every file, and templates missing a required part."""
        problems = []
        for name in self.files:
            try:
                self.env.get_template(name)
            except TemplateSyntaxError as exc:
                problems.append(self._problem(name, exc.lineno, exc.message or str(exc)))
            except TemplateError as exc:
                problems.append(self._problem(name, 0, str(exc)))
        for name in sorted(self.names):
            if f"{name}/{TEXT}" not in self.files:
                problems.append(
                    self._problem(f"{name}/{TEXT}", 0, "missing: every template needs a plain-text body")
                )
        return problems

    def render(self, name: str, context: Mapping[str, Any]) -> Rendered:
        """Render template ``name``; raises RenderError naming the file and line."""
        if name not in self.names:
            raise RenderError(self._problem(f"{name}/{SUBJECT}", 0, "template not found"))
        subject = self._part(name, SUBJECT, context)
        text = self._part(name, TEXT, context)
        html = self._part(name, HTML, context) if f"{name}/{HTML}" in self.files else None
        return Rendered(subject=one_line(subject), text=text.strip() + "\n", html=html)

    def _part(self, name: str, part: str, context: Mapping[str, Any]) -> str:
        file = f"{name}/{part}"
        try:
            return self.env.get_template(file).render(context)
        except TemplateSyntaxError as exc:
            raise RenderError(self._problem(exc.name or file, exc.lineno, exc.message or str(exc))) from None
        except Exception as exc:  # a template can raise anything its expressions do
            where, line = _template_frame(exc, self.files) or (file, 0)
            raise RenderError(self._problem(where, line, _describe(exc, self.files))) from None

    def _problem(self, name: str, line: int, message: str) -> Problem:
        return Problem(str(self.directory / name), line, "", message)


def load_templates(directory: Path) -> TemplateSet:
    """Read and compile ``directory``; raises ProblemsError listing every syntax error."""
    templates = TemplateSet(read_template_files(directory), directory)
    problems = templates.compile_problems()
    if problems:
        raise ProblemsError(problems)
    return templates


def one_line(text: str) -> str:
    """Collapse ``text`` to one line of at most MAX_SUBJECT characters: no header can be injected."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= MAX_SUBJECT else flat[: MAX_SUBJECT - 1].rstrip() + "…"


def _describe(exc: Exception, files: Mapping[str, str]) -> str:
    if isinstance(exc, TemplateNotFound):
        shared = ", ".join(sorted(n for n in files if "/" not in n)) or "none"
        return (
            f"template {exc.name!r} not found: a template may include or extend only files of the "
            f"templates directory, named relative to it (shared files here: {shared})"
        )
    if isinstance(exc, SecurityError):
        what = (exc.message or "unsafe").rstrip(".")
        return f"{what}; templates run in a sandbox: no private attributes, no changing data"
    if isinstance(exc, TemplateError):
        return exc.message or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


def _template_frame(exc: BaseException, files: Mapping[str, str]) -> tuple[str, int] | None:
    # Jinja rewrites tracebacks so template lines appear as frames of the template file.
    # walk_tb, not extract_tb: no source lookup, so nothing on disk is read for a name.
    frames = list(traceback.walk_tb(exc.__traceback__))
    for frame, line in reversed(frames):
        if frame.f_code.co_filename in files:
            return frame.f_code.co_filename, line or 0
    return None


class _MemoryLoader(BaseLoader):
    """The loaded files only; each template's filename is its relative path, so an error
    raised while rendering carries the file and line it came from."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = dict(files)

    def get_source(self, environment: Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        if template not in self.files:
            raise TemplateNotFound(template)
        return self.files[template], template, lambda: True

    def list_templates(self) -> list[str]:
        return sorted(self.files)


class _CompiledCache(BytecodeCache):
    """Compiled template code kept in memory, keyed by file name and source checksum.

    Every reload and every ``check`` compiles the whole directory to find syntax
    errors; with this cache an unchanged file is compiled once per process. Safe
    to share because every environment here is built with the same settings.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._store: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get_bucket(self, environment: Environment, name: str, filename: str | None, source: str) -> Bucket:
        # The key carries the checksum too, so two versions of one file (an edit
        # and its revert) are both kept.
        checksum = self.get_source_checksum(source)
        bucket = Bucket(environment, self.get_cache_key(name, filename) + checksum, checksum)
        self.load_bytecode(bucket)
        return bucket

    def load_bytecode(self, bucket: Bucket) -> None:
        with self._lock:
            data = self._store.get(bucket.key)
        if data is not None:
            bucket.bytecode_from_string(data)  # resets itself if the checksum differs

    def dump_bytecode(self, bucket: Bucket) -> None:
        data = bucket.bytecode_to_string()
        with self._lock:
            self._store[bucket.key] = data
            self._store.move_to_end(bucket.key)
            while len(self._store) > self._limit:
                self._store.popitem(last=False)


_COMPILED = _CompiledCache()


def _environment(files: Mapping[str, str]) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        loader=_MemoryLoader(files),
        bytecode_cache=_COMPILED,
        autoescape=lambda name: bool(name and name.endswith((".html", ".htm"))),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters.update(FILTERS)
    return env


def _locale(ctx: Context) -> str:
    return str(ctx.get("locale") or "en_US")


def _tz(ctx: Context) -> str:
    return str(ctx.get("timezone") or "UTC")


@pass_context
def _money(ctx: Context, value: Money) -> str:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()  # "'typo' is undefined", not a type complaint
    if not isinstance(value, Money):
        raise TypeError(f"money filter needs an amount with its currency, not {type(value).__name__}")
    return format_money(value.minor, value.currency, _locale(ctx))


@pass_context
def _datetime(ctx: Context, value: datetime, fmt: str = "medium") -> str:
    return _format_datetime(value, fmt, _tz(ctx), _locale(ctx))


# A cycle formats the same instant for many accounts in few zones and locales;
# Babel's formatting is the costly part of rendering an email.
@lru_cache(maxsize=4096)
def _format_datetime(value: datetime, fmt: str, tz: str, locale: str) -> str:
    return format_datetime(value, fmt, tzinfo=tz, locale=locale)


@pass_context
def _date(ctx: Context, value: datetime, fmt: str = "medium") -> str:
    local = value.astimezone(_zone(_tz(ctx))) if isinstance(value, datetime) else value
    return format_date(local, fmt, locale=_locale(ctx))


@pass_context
def _skeleton(ctx: Context, value: datetime | date, skeleton: str) -> str:
    # A skeleton names the fields ("MMMd": month and day), the locale orders and spells
    # them: "Mar 2", "2 Mar", "2. März", "3月2日".
    if isinstance(value, datetime):
        return format_skeleton(skeleton, value, tzinfo=_tz(ctx), locale=_locale(ctx))
    noon = datetime(value.year, value.month, value.day, 12)  # a calendar day: no zone to convert
    return format_skeleton(skeleton, noon, locale=_locale(ctx))


@pass_context
def _time(ctx: Context, value: datetime, fmt: str = "short") -> str:
    return format_time(value, fmt, tzinfo=_tz(ctx), locale=_locale(ctx))


@pass_context
def _number(ctx: Context, value: Any) -> str:
    return format_decimal(value, locale=_locale(ctx))


def _duration(value: timedelta) -> str:
    return format_duration(value)


def _zone(name: str) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


FILTERS: dict[str, Callable[..., Any]] = {
    "money": _money,
    "datetime": _datetime,
    "date": _date,
    "time": _time,
    "number": _number,
    "duration": _duration,
    "every": every,
    "skeleton": _skeleton,
}
