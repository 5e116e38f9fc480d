"""Email templates: a sandboxed Jinja environment over an in-memory copy of ``templates/``.

A template is a directory holding ``subject.txt``, ``body.txt`` and
optionally ``body.html``; files starting with ``_`` at the top (``_base.html``)
are shared layouts. Designers are less trusted than sysadmins, so templates run
in Jinja's immutable sandbox with HTML autoescaping and ``StrictUndefined``,
and read only the files loaded here: no filesystem, no network.

The files are read once when the set is loaded; the set in use is exactly the
set that was validated, whatever happens on disk afterwards.

Every email renders within the set's ``RenderBudget`` (``balancewatch.render.budget``):
stopped past ``render.timeout``, stopped once its parts together pass
``render.max_size``, and single steps that would make a value larger than that
(``"x" * 10**9``, a huge format width) refused before they run. Each is a
RenderError naming the template file and line.
"""

from __future__ import annotations

import os
import re
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, tzinfo
from functools import lru_cache, update_wrapper
from pathlib import Path
from types import BuiltinMethodType, FrameType, MethodType
from typing import Any

from babel.dates import format_date, format_datetime, format_skeleton, format_time
from babel.numbers import format_decimal
from jinja2 import (
    BaseLoader,
    BytecodeCache,
    Environment,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    Undefined,
    nodes,
    pass_context,
    pass_environment,
    pass_eval_context,
)
from jinja2 import filters as jinja_filters
from jinja2.bccache import Bucket
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
    SecurityError,
)
from jinja2.utils import generate_lorem_ipsum
from markupsafe import Markup, soft_str

from balancewatch.core.durations import every, format_duration
from balancewatch.core.limits import DEFAULT_BUDGET, RenderBudget, format_size
from balancewatch.core.money import Money, format_money
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.render.budget import (
    WATCHDOG,
    OverrunBreaker,
    RenderTimeoutError,
    ValueTooLargeError,
    check_binop,
    check_format_spec,
    check_method_call,
    check_printf,
    joined_size,
    replaced_size,
    too_large,
)

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


class OverBudgetError(RenderError):
    """A render was stopped: it took longer than ``render.timeout`` or produced more than
    ``render.max_size``."""


class TemplateSuspendedError(OverBudgetError):
    """Not rendered at all: the template overran its time budget several times in a row and is
    refused for a while (``budget.OverrunBreaker``). Says nothing about this message's data, so a
    caller that would otherwise fail the message for good should try it again later."""


class _OutputTooLargeError(Exception):
    """Raised while streaming, once the parts together pass the size limit; ``where`` is the
    template file and line the render had reached."""

    def __init__(self, where: tuple[str, int]) -> None:
        super().__init__(where)
        self.where = where


class _Output:
    """What one message's render has produced so far, against its size limit."""

    __slots__ = ("chunks", "file", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.file = ""  # the part being rendered: where a stop is reported when nothing better is known
        self.chunks: Iterator[str] | None = None  # its render, while it streams

    def position(self, files: Mapping[str, str]) -> tuple[str, int]:
        """Where the render had got to when it was stopped between two pieces of output."""
        suspended = _suspended_at(self.chunks, files) if self.chunks is not None else None
        return suspended or (self.file, 0)


def read_template_files(directory: Path) -> dict[str, str]:
    """Every template file under ``directory`` by its relative path; hidden entries skipped.

    Raises ProblemsError for files that cannot be read or that link outside ``directory``.
    """
    if not directory.is_dir():
        raise ProblemsError([Problem(str(directory), 0, "", "templates directory not found")])
    files: dict[str, str] = {}
    problems = _unreadable_directories(directory)
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
        except OSError as exc:
            problems.append(Problem(str(path), 0, "", f"cannot read: {(exc.strerror or str(exc)).lower()}"))
        except UnicodeDecodeError as exc:
            problems.append(Problem(str(path), 0, "", f"cannot read: {exc}"))
    if problems:
        raise ProblemsError(problems)
    return files


def _unreadable_directories(directory: Path) -> list[Problem]:
    """A problem for each directory under ``directory`` that cannot be listed: ``rglob`` skips
    those silently, and their templates would then read as "not found"."""
    problems: list[Problem] = []

    def refused(exc: OSError) -> None:
        where = exc.filename or directory
        reason = (exc.strerror or str(exc)).lower()
        problems.append(Problem(str(where), 0, "", f"cannot read the templates directory: {reason}"))

    for _root, subdirectories, _files in os.walk(directory, onerror=refused):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]  # hidden: skipped anyway
    return problems


class TemplateSet:
    """The compiled templates of one directory snapshot, rendered within ``budget``."""

    def __init__(
        self, files: Mapping[str, str], directory: Path, budget: RenderBudget = DEFAULT_BUDGET
    ) -> None:
        self.directory = directory
        self.files = dict(files)
        self.budget = budget
        self.breaker = OverrunBreaker()
        self.env = _environment(self.files, budget.max_size)
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
        """Render template ``name`` within the budget; raises RenderError naming the file and line
        (OverBudgetError when the render was stopped for its time or size)."""
        if name not in self.names:
            raise RenderError(self._problem(f"{name}/{SUBJECT}", 0, "template not found"))
        refusal = self.breaker.refusal(name)
        if refusal is not None:
            raise TemplateSuspendedError(self._still_refused(*refusal))
        parts = self._compiled(name)  # outside the guarded region: no compiling on the clock
        output = _Output(self.budget.max_size)
        try:
            rendered = WATCHDOG.run(
                lambda: [self._stream(file, template, context, output) for file, template in parts],
                self.budget.timeout,
            )
        except RenderTimeoutError as exc:
            # Stopped inside the template, or in the loop reading its output (a loop writing
            # nothing but empty strings): the generator then knows where it was.
            where, line = _template_frame(exc.__cause__, self.files) or output.position(self.files)
            message = (
                f"rendering took longer than {self.budget.timeout_text()} (render.timeout); "
                "a loop may never end"
            )
            problem = self._problem(where, line, message)
            self.breaker.overran(name, problem)
            raise OverBudgetError(problem) from None
        except _OutputTooLargeError as exc:
            message = (
                f"the email (subject, text and HTML together) produced more than "
                f"{self.budget.size_text()} (render.max_size)"
            )
            raise OverBudgetError(self._problem(*exc.where, message)) from None
        except Exception as exc:  # a template can raise anything its expressions do
            raise RenderError(self._render_problem(exc, output.file)) from None
        self.breaker.finished(name)
        # Every template set has a subject and a text part; the HTML part is optional.
        subject, text = rendered[0] or "", rendered[1] or ""
        html = rendered[2] if len(rendered) > 2 else None
        return Rendered(subject=one_line(subject), text=text.strip() + "\n", html=html)

    def _still_refused(self, last: Problem, in_a_row: int) -> Problem:
        retry = f"{self.breaker.retry_after:g}s"
        return replace(
            last,
            message=f"{last.message}; it did so {in_a_row} times in a row, so it is not rendered "
            f"again for {retry} (fix it: a reload starts afresh)",
        )

    def _compiled(self, name: str) -> list[tuple[str, Template]]:
        """The subject, text and (when there is one) HTML templates of ``name``."""
        out: list[tuple[str, Template]] = []
        for part in (SUBJECT, TEXT, HTML):
            file = f"{name}/{part}"
            if part == HTML and file not in self.files:
                continue
            try:
                out.append((file, self.env.get_template(file)))
            except Exception as exc:
                raise RenderError(self._render_problem(exc, file)) from None
        return out

    def _stream(self, file: str, template: Template, context: Mapping[str, Any], output: _Output) -> str:
        """One part as text, streamed and counted against ``output``'s limit.

        Raises _OutputTooLargeError, naming where the template was, once past the limit."""
        output.file = file
        # The template's own generator, not Template.generate(), which wraps it in another one
        # that every piece of output would pass through.
        output.chunks = chunks = template.root_render_func(template.new_context(dict(context)))
        parts: list[str] = []
        size, limit = output.size, output.limit
        try:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise _OutputTooLargeError(output.position(self.files))
                parts.append(chunk)
        except _OutputTooLargeError:
            raise
        except Exception:
            self.env.handle_exception()  # raises it again with template lines, as generate() does
        output.size = size
        return "".join(parts)

    def _render_problem(self, exc: Exception, file: str) -> Problem:
        if isinstance(exc, TemplateSyntaxError):  # an included or extended file that does not compile
            return self._problem(exc.name or file, exc.lineno, exc.message or str(exc))
        where, line = _template_frame(exc, self.files) or (file, 0)
        return self._problem(where, line, _describe(exc, self.files))

    def _problem(self, name: str, line: int, message: str) -> Problem:
        return Problem(str(self.directory / name), line, "", message)


def load_templates(directory: Path, budget: RenderBudget = DEFAULT_BUDGET) -> TemplateSet:
    """Read and compile ``directory``; raises ProblemsError listing every syntax error."""
    templates = TemplateSet(read_template_files(directory), directory, budget)
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
    if isinstance(exc, ValueTooLargeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _template_frame(exc: BaseException | None, files: Mapping[str, str]) -> tuple[str, int] | None:
    # Jinja rewrites the tracebacks of exceptions it handles so template lines appear as
    # frames of the template file; the watchdog's interrupt passes Jinja by, so its frames
    # are the compiled code's, mapped back to template lines here.
    # walk_tb, not extract_tb: no source lookup, so nothing on disk is read for a name.
    if exc is None:
        return None
    frames = list(traceback.walk_tb(exc.__traceback__))
    for frame, line in reversed(frames):
        if frame.f_code.co_filename in files:
            return frame.f_code.co_filename, _template_line(frame, line)
    return None


def _suspended_at(generator: Iterator[str], files: Mapping[str, str]) -> tuple[str, int] | None:
    """The template file and line a suspended render generator stopped at (the innermost one,
    through ``yield from`` of blocks and includes)."""
    found = None
    current: Any = generator
    while current is not None:
        frame = getattr(current, "gi_frame", None)
        if frame is not None and frame.f_code.co_filename in files:
            found = frame.f_code.co_filename, _template_line(frame, frame.f_lineno)
        current = getattr(current, "gi_yieldfrom", None)
    return found


def _template_line(frame: FrameType, line: int | None) -> int:
    template = frame.f_globals.get("__jinja_template__")
    if template is not None and line:
        return int(template.get_corresponding_lineno(line))
    return line or 0


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


# Every environment here is a _BoundedSandbox: compiled code calls its checks, so it is
# the same for all of them and can be shared.
_COMPILED = _CompiledCache()


class _CheckedConcat(CodeGenerator):
    """Compiles ``a ~ b`` to a concatenation whose result is checked against the size limit:
    doubling a string in a loop must stop at the limit, not at the memory's end."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802  (Jinja's name)
        self.write("environment.checked_concat(")
        super().visit_Concat(node, frame)
        self.write(")")


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, refusing field widths past the size limit."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_format_spec(format_spec, self._env.max_size)  # type: ignore[attr-defined]
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(_BoundedFormatter, SandboxedEscapeFormatter):
    """``Markup.format``: escaping, and the same width check."""


_METHOD_TYPES = frozenset({BuiltinMethodType, MethodType})  # "x".ljust, and Markup's methods


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every step that could make a huge value in one C call
    (which the watchdog cannot interrupt) checked against ``max_size`` before it runs:
    ``*``, ``**``, ``%`` and ``+``, ``~``, str/bytes/list method calls and ``str.format``."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CheckedConcat

    def __init__(self, *args: Any, max_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_size = max_size

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right, self.max_size)
        return self.binop_table[operator](left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        # Most calls are of macros, which need no check: the type test keeps them cheap.
        if (args or kwargs) and type(obj) in _METHOD_TYPES:
            args = check_method_call(obj, args, kwargs, self.max_size)
        if not self.is_safe_callable(obj):
            raise SecurityError(f"{obj!r} is not safely callable")  # as Jinja's own call() does
        return context.call(obj, *args, **kwargs)

    def checked_concat(self, value: str) -> str:
        if len(value) > self.max_size:
            raise ValueTooLargeError(
                f"joining text with ~ made {len(value):,} characters; stopped: a template value may be "
                f"at most {format_size(self.max_size)} (render.max_size)"
            )
        return value

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Jinja's own, with the formatters above: its formatter classes cannot be swapped in.
        # Called for every attribute a template reads: the type test first keeps that cheap.
        if type(value) not in _METHOD_TYPES or value.__name__ not in ("format", "format_map"):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        formatter: _BoundedFormatter
        if isinstance(owner, Markup):
            formatter = _BoundedEscapeFormatter(self, escape=owner.escape)
        else:
            formatter = _BoundedFormatter(self)
        is_map, str_type = value.__name__ == "format_map", type(owner)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument and no keywords")
                return str_type(formatter.vformat(owner, (), args[0]))
            return str_type(formatter.vformat(owner, args, kwargs))

        return update_wrapper(wrapper, value)


def _environment(files: Mapping[str, str], max_size: int) -> _BoundedSandbox:
    env = _BoundedSandbox(
        loader=_MemoryLoader(files),
        bytecode_cache=_COMPILED,
        autoescape=lambda name: bool(name and name.endswith((".html", ".htm"))),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
        max_size=max_size,
    )
    env.filters.update(FILTERS)
    env.filters.update(BOUNDED_FILTERS)
    env.globals["lipsum"] = _lipsum
    return env


# --- Jinja's filters that can make a large value in one step, checked first ---------------------------


def _limit(env: Environment) -> int:
    return int(getattr(env, "max_size", DEFAULT_BUDGET.max_size))


@pass_environment
def _center(env: Environment, value: Any, width: int = 80) -> str:
    if isinstance(width, int) and width > _limit(env):
        raise too_large(f"center({width:,})", width, _limit(env))
    return jinja_filters.do_center(value, width)


@pass_environment
def _indent(env: Environment, s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = soft_str(s)
    prefix = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    size = len(text) + (text.count("\n") + 1) * max(prefix, 0)
    if size > _limit(env):
        raise too_large(f"indent({width if isinstance(width, int) else '...'})", size, _limit(env))
    return jinja_filters.do_indent(s, width, first, blank)


@pass_environment
def _format(env: Environment, value: Any, *args: Any, **kwargs: Any) -> str:
    check_printf(soft_str(value), kwargs or args, _limit(env))
    return jinja_filters.do_format(value, *args, **kwargs)


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    limit = _limit(eval_ctx.environment)
    size = replaced_size(soft_str(s), soft_str(old), soft_str(new), -1 if count is None else count)
    if size > limit:
        raise too_large("replace(...)", size, limit)
    return jinja_filters.do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Any, d: str = "", attribute: str | int | None = None) -> str:
    limit = _limit(eval_ctx.environment)
    items: Any = value
    if attribute is not None:
        items = map(jinja_filters.make_attrgetter(eval_ctx.environment, attribute), items)
    items = list(items)
    size = joined_size(soft_str(d), items, limit)
    if size > limit:
        raise too_large(f"joining {len(items):,} items", size, limit, exact=False)
    return jinja_filters.sync_do_join(eval_ctx, items, d)


@pass_environment
def _wordwrap(
    env: Environment,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    # Wrapped with a newline first (its lines are then known), joined with wrapstring after.
    wrapped = jinja_filters.do_wordwrap(env, s, width, break_long_words, "\n", break_on_hyphens)
    joint = env.newline_sequence if wrapstring is None else soft_str(wrapstring)
    size = replaced_size(wrapped, "\n", joint)
    if size > _limit(env):
        raise too_large("wordwrap(...)", size, _limit(env))
    return wrapped if joint == "\n" else wrapped.replace("\n", joint)


@pass_environment
def _batch(env: Environment, value: Any, linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    if isinstance(linecount, int) and linecount > _limit(env):
        raise too_large(f"batch({linecount:,})", linecount, _limit(env))
    return jinja_filters.do_batch(value, linecount, fill_with)


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    if n > 100 or max > 1000:
        raise ValueTooLargeError("lipsum: at most 100 paragraphs of at most 1000 words")
    return str(generate_lorem_ipsum(n, html, min, max))


BOUNDED_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _center,
    "indent": _indent,
    "format": _format,
    "replace": _replace,
    "join": _join,
    "wordwrap": _wordwrap,
    "batch": _batch,
}


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
    return format_datetime(value, fmt, tzinfo=_zone(tz), locale=locale)


@pass_context
def _date(ctx: Context, value: datetime, fmt: str = "medium") -> str:
    local = value.astimezone(_zone(_tz(ctx))) if isinstance(value, datetime) else value
    return format_date(local, fmt, locale=_locale(ctx))


@pass_context
def _skeleton(ctx: Context, value: datetime | date, skeleton: str) -> str:
    # A skeleton names the fields ("MMMd": month and day), the locale orders and spells
    # them: "Mar 2", "2 Mar", "2. März", "3月2日".
    if isinstance(value, datetime):
        return format_skeleton(skeleton, value, tzinfo=_zone(_tz(ctx)), locale=_locale(ctx))
    noon = datetime(value.year, value.month, value.day, 12)  # a calendar day: no zone to convert
    return format_skeleton(skeleton, noon, locale=_locale(ctx))


@pass_context
def _time(ctx: Context, value: datetime, fmt: str = "short") -> str:
    return format_time(value, fmt, tzinfo=_zone(_tz(ctx)), locale=_locale(ctx))


@pass_context
def _number(ctx: Context, value: Any) -> str:
    return format_decimal(value, locale=_locale(ctx))


def _duration(value: timedelta) -> str:
    return format_duration(value)


def _zone(name: str) -> tzinfo:
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
