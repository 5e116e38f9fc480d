"""The filters templates use: Jinja's own that can make a large value in one step, bounded
by the render budget (checked before they run), and balancewatch's formatting filters (money,
dates and times in the account's zone and locale, numbers, durations).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from functools import lru_cache
from typing import Any

from babel.dates import format_date, format_datetime, format_skeleton, format_time
from babel.numbers import format_decimal
from jinja2 import (
    Environment,
    Undefined,
    pass_context,
    pass_environment,
    pass_eval_context,
)
from jinja2 import filters as jinja_filters
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.utils import generate_lorem_ipsum
from markupsafe import soft_str

from balancewatch.core.durations import every, format_duration
from balancewatch.core.limits import DEFAULT_BUDGET
from balancewatch.core.money import Money, format_money
from balancewatch.render.sizes import ValueTooLargeError, check_printf, joined_size, replaced_size, too_large

# CLDR puts a narrow no-break space (U+202F) before AM/PM (en_US "8:00:00 AM") and between digit
# groups (fr_FR "1 234,50 €"); many fonts mail clients use have no glyph for it and show
# "8:00:00AM" or a box. The no-break space (U+00A0) every font has keeps the parts together as well.
_NARROW_NO_BREAK = str.maketrans({"\u202f": "\u00a0"})


def plain_spaces(text: str) -> str:
    """``text`` with each narrow no-break space (U+202F) made a no-break space (U+00A0): what
    every date, time, number and amount formatted for an email goes through."""
    return text.translate(_NARROW_NO_BREAK)


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


def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
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
    return _money_text(value.minor, value.currency, _locale(ctx))


@lru_cache(maxsize=16_384)
def _money_text(minor: int, currency: str, locale: str) -> str:
    return plain_spaces(format_money(minor, currency, locale))


@pass_context
def _datetime(ctx: Context, value: datetime, fmt: str = "medium") -> str:
    return _format_datetime(value, fmt, _tz(ctx), _locale(ctx))


# A cycle formats the same instant for many accounts in few zones and locales;
# Babel's formatting is the costly part of rendering an email.
@lru_cache(maxsize=4096)
def _format_datetime(value: datetime, fmt: str, tz: str, locale: str) -> str:
    return plain_spaces(format_datetime(value, fmt, tzinfo=_zone(tz), locale=locale))


@pass_context
def _date(ctx: Context, value: datetime, fmt: str = "medium") -> str:
    if type(value) in (date, datetime) and type(fmt) is str:  # exact types: the cache keys on them
        return _format_date(type(value).__name__, value, fmt, _tz(ctx), _locale(ctx))
    return _format_date_now(value, fmt, _tz(ctx), _locale(ctx))


# A report's chart labels the same 31 days in every account's email.
@lru_cache(maxsize=4096)
def _format_date(_kind: str, value: datetime, fmt: str, tz: str, locale: str) -> str:
    return _format_date_now(value, fmt, tz, locale)


def _format_date_now(value: datetime, fmt: str, tz: str, locale: str) -> str:
    local = value.astimezone(_zone(tz)) if isinstance(value, datetime) else value
    return plain_spaces(format_date(local, fmt, locale=locale))


@pass_context
def _skeleton(ctx: Context, value: datetime | date, skeleton: str) -> str:
    # A skeleton names the fields ("MMMd": month and day), the locale orders and spells
    # them: "Mar 2", "2 Mar", "2. März", "3月2日".
    if isinstance(value, datetime):
        return plain_spaces(format_skeleton(skeleton, value, tzinfo=_zone(_tz(ctx)), locale=_locale(ctx)))
    noon = datetime(value.year, value.month, value.day, 12)  # a calendar day: no zone to convert
    return plain_spaces(format_skeleton(skeleton, noon, locale=_locale(ctx)))


@pass_context
def _time(ctx: Context, value: datetime, fmt: str = "short") -> str:
    return plain_spaces(format_time(value, fmt, tzinfo=_zone(_tz(ctx)), locale=_locale(ctx)))


@pass_context
def _number(ctx: Context, value: Any) -> str:
    if type(value) in (int, Decimal):
        # Keyed by the text: Decimal("1.0") equals Decimal("1.00") but need not format the same.
        return _format_number(type(value) is Decimal, str(value), _locale(ctx))
    return plain_spaces(format_decimal(value, locale=_locale(ctx)))


@lru_cache(maxsize=16_384)
def _format_number(is_decimal: bool, text: str, locale: str) -> str:
    return plain_spaces(format_decimal(Decimal(text) if is_decimal else int(text), locale=locale))


def _duration(value: timedelta) -> str:
    return format_duration(value)


def _zone(name: str) -> tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


# No-break spaces: one between an amount and its symbol ("0,20 €" in de_DE) keeps them together.
_NO_BREAK = frozenset("\u00a0\u202f\u2007")
_WHITESPACE = re.compile(r"\s+")  # Unicode whitespace: no-break spaces included


def _one_space(run: re.Match[str]) -> str:
    """A run of whitespace as one space: a no-break space when the run is only no-break spaces
    (the locale's, inside an amount or a time), else a plain space (line breaks, template
    indentation, a space beside a no-break space)."""
    return "\u00a0" if set(run.group()) <= _NO_BREAK else " "


def one_line_of(text: str) -> str:
    """``text`` on one line: every run of whitespace one space (a run of no-break spaces alone,
    one no-break space), trimmed. The ``one_line`` filter: ``{% filter one_line %}``."""
    return _WHITESPACE.sub(_one_space, str(text)).strip()


FILTERS: dict[str, Callable[..., Any]] = {
    "one_line": one_line_of,
    "money": _money,
    "datetime": _datetime,
    "date": _date,
    "time": _time,
    "number": _number,
    "duration": _duration,
    "every": every,
    "skeleton": _skeleton,
}
