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

The HTML part's ``<style>`` rules are then inlined into its elements
(``balancewatch.render.inline``), and the email is measured against ``render.max_size``
again: inlining makes it larger. CSS that cannot be inlined is a RenderError too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from jinja2 import (
    Template,
    TemplateError,
    TemplateSyntaxError,
)

from balancewatch.core.limits import DEFAULT_BUDGET, RenderBudget
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.render.budget import WATCHDOG, OverrunBreaker, RenderTimeoutError
from balancewatch.render.filters import one_line_of
from balancewatch.render.frames import describe, suspended_at, template_frame
from balancewatch.render.i18n import literal_problems, load_catalogs
from balancewatch.render.inline import CssError, inline_css
from balancewatch.render.sandbox import environment

SUBJECT, TEXT, HTML = "subject.txt", "body.txt", "body.html"
CHAT = "chat.txt"  # optional: the short message chat channels get (else the subject)
MAX_SUBJECT = 250
TEMPLATE_NAMES_HINT = "a template is a directory holding subject.txt, body.txt and optionally body.html"
_TEXT_SUFFIXES = (".txt", ".html", ".htm", ".po")  # .po: the message catalogs (render/i18n.py)


@dataclass(frozen=True, slots=True)
class Rendered:
    """One email's parts; ``subject`` is a single line, safe for a header."""

    subject: str
    text: str
    html: str | None
    chat: str | None = None  # rendered only when asked for, and only if the template has chat.txt


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
        suspended = suspended_at(self.chunks, files) if self.chunks is not None else None
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
        self.catalogs, self.catalog_problems = load_catalogs(self.files, str(directory))
        self.env = environment(self.files, budget.max_size, self.catalogs)
        self.names = frozenset(name.rsplit("/", 1)[0] for name in self.files if name.endswith("/" + SUBJECT))

    def compile_problems(self) -> list[Problem]:
        """Syntax errors in every file, and templates missing a required part."""
        problems = list(self.catalog_problems)
        for name in self.files:
            if name.endswith(".po"):
                continue  # a catalog, checked by load_catalogs
            problems += literal_problems(self.env, name, self.files[name], f"{self.directory}/{name}")
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

    def render(self, name: str, context: Mapping[str, Any], *, chat: bool = False) -> Rendered:
        """Render template ``name`` within the budget; raises RenderError naming the file and line
        (OverBudgetError when the render was stopped for its time or size). With ``chat``, its
        ``chat.txt`` too, when it has one (``Rendered.chat``), within the same budget."""
        if name not in self.names:
            raise RenderError(self._problem(f"{name}/{SUBJECT}", 0, "template not found"))
        refusal = self.breaker.refusal(name)
        if refusal is not None:
            raise TemplateSuspendedError(self._still_refused(*refusal))
        parts = self._compiled(name, chat)  # outside the guarded region: no compiling on the clock
        output = _Output(self.budget.max_size)
        try:
            rendered = WATCHDOG.run(
                lambda: [self._stream(file, template, context, output) for file, template in parts],
                self.budget.timeout,
            )
        except RenderTimeoutError as exc:
            # Stopped inside the template, or in the loop reading its output (a loop writing
            # nothing but empty strings): the generator then knows where it was.
            where, line = template_frame(exc.__cause__, self.files) or output.position(self.files)
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
        # Every template set has a subject and a text part; the HTML and chat parts are optional.
        by_part = {
            file.rsplit("/", 1)[1]: text for (file, _template), text in zip(parts, rendered, strict=True)
        }
        html = by_part.get(HTML)
        if html is not None:
            html = self._inlined(name, html, output.size - len(html))
        chat_text = by_part.get(CHAT)
        return Rendered(
            subject=one_line(by_part[SUBJECT] or ""),
            text=(by_part[TEXT] or "").strip() + "\n",
            html=html,
            chat=None if chat_text is None else chat_text.strip(),
        )

    def _inlined(self, name: str, html: str, others: int) -> str:
        """``html`` with its CSS inlined, within the size budget with the ``others`` characters
        of the subject and text. Raises RenderError naming the file (and the line when the
        offending CSS is found in the source), OverBudgetError when inlining made it too large."""
        file = f"{name}/{HTML}"
        try:
            inlined = inline_css(html)
            inlined += "\n" if html.endswith("\n") and not inlined.endswith("\n") else ""
        except CssError as exc:
            raise RenderError(self._problem(*self._source_of(exc.snippet, file), str(exc))) from None
        if others + len(inlined) > self.budget.max_size:
            message = (
                f"the email (subject, text and HTML together) came to {others + len(inlined):,} characters "
                f"once its CSS was inlined, more than {self.budget.size_text()} (render.max_size)"
            )
            raise OverBudgetError(self._problem(file, 0, message))
        return inlined

    def _source_of(self, snippet: str, file: str) -> tuple[str, int]:
        """The first line holding ``snippet`` in ``file`` or a shared HTML file (the layout's
        ``<style>`` block), else ``file`` without a line."""
        if snippet:
            shared = sorted(n for n in self.files if "/" not in n and n.endswith((".html", ".htm")))
            for candidate in (file, *shared):
                for number, line in enumerate(self.files.get(candidate, "").splitlines(), 1):
                    if snippet in line:
                        return candidate, number
        return file, 0

    def _still_refused(self, last: Problem, in_a_row: int) -> Problem:
        retry = f"{self.breaker.retry_after:g}s"
        return replace(
            last,
            message=f"{last.message}; it did so {in_a_row} times in a row, so it is not rendered "
            f"again for {retry} (fix it: a reload starts afresh)",
        )

    def _compiled(self, name: str, chat: bool = False) -> list[tuple[str, Template]]:
        """The subject, text and (when there is one) HTML templates of ``name``; with ``chat``,
        its chat template when there is one."""
        out: list[tuple[str, Template]] = []
        for part in (SUBJECT, TEXT, HTML, CHAT) if chat else (SUBJECT, TEXT, HTML):
            file = f"{name}/{part}"
            if part in (HTML, CHAT) and file not in self.files:
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
        where, line = template_frame(exc, self.files) or (file, 0)
        return self._problem(where, line, describe(exc, self.files))

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
    """Collapse ``text`` to one line of at most MAX_SUBJECT characters: no header can be injected.

    Every run of whitespace (line breaks, tabs, the spaces template tags leave, no-break spaces
    beside plain ones) becomes a single space, so a subject never shows a double space; a run
    of no-break spaces alone becomes one no-break space (U+00A0)."""
    flat = one_line_of(text)
    return flat if len(flat) <= MAX_SUBJECT else flat[: MAX_SUBJECT - 1].rstrip() + "…"
