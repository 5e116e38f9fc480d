"""Where in a template a render failed, and what to tell the designer about it."""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any

from jinja2 import TemplateError, TemplateNotFound
from jinja2.sandbox import SecurityError

from balancewatch.render.sizes import ValueTooLargeError


def describe(exc: Exception, files: Mapping[str, str]) -> str:
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


def template_frame(exc: BaseException | None, files: Mapping[str, str]) -> tuple[str, int] | None:
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


def suspended_at(generator: Iterator[str], files: Mapping[str, str]) -> tuple[str, int] | None:
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
