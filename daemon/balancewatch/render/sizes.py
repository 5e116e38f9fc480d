"""Sizes refused before they are made: a step in a template that would make a value larger
than the render budget's ``max_size`` (``"x" * 10**9``, a format width of a billion, a huge
``join`` or ``replace``) raises ValueTooLargeError before it runs. The sandbox's compiled code
and the bounded filters call these checks (``render.sandbox``, ``render.filters``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

from balancewatch.core.limits import format_size

MAX_INT_DIGITS = 4300  # the longest number Python turns into text (sys.int_info.default_max_str_digits)


# --------------------------------------------------------------------------- size: refused before it runs


class ValueTooLargeError(Exception):
    """A template asked for a value larger than an email may be; refused before it was made."""


def too_large(what: str, size: int, limit: int, *, exact: bool = True) -> ValueTooLargeError:
    """The error refusing ``what``, which would make ``size`` characters (or, not ``exact``,
    more than ``limit``: the count stopped there)."""
    amount = f"{size:,}" if exact else f"more than {limit:,}"
    return ValueTooLargeError(
        f"{what} would make {amount} characters; refused before it ran: a template value may be "
        f"at most {format_size(limit)} (render.max_size)"
    )


def weight(value: Any, limit: int) -> int:
    """About how many characters ``value`` takes as text, counted through nested lists, tuples,
    sets and dicts (a shared item once per reference); stops counting once past ``limit``."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            total += 1
    return total


def check_binop(operator: str, left: Any, right: Any, limit: int) -> None:
    """Raise ValueTooLargeError when ``left <operator> right`` would make a value past ``limit``
    characters, or a number of more than MAX_INT_DIGITS digits."""
    if operator == "*":
        _check_repeat(left, right, limit)
    elif operator == "**":
        _check_power(left, right)
    elif operator == "%":
        if isinstance(left, str | bytes):
            check_printf(left, right, limit)
    elif operator == "+" and _is_sequence(left) and _is_sequence(right):
        size = len(left) + len(right)
        if size > limit:
            raise too_large(f"adding a {type(right).__name__} to a {type(left).__name__}", size, limit)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_repeat(left: Any, right: Any, limit: int) -> None:
    if _is_int(left) and _is_int(right):
        bits = left.bit_length() + right.bit_length()
        if bits > _MAX_INT_BITS:
            raise _too_big_number(f"{_short(left)} * {_short(right)}", bits * math.log10(2))
        return
    seq, times = (left, right) if _is_int(right) else (right, left)
    if not (_is_sequence(seq) and _is_int(times)) or times <= 1:
        return
    size = weight(seq, limit) * times
    if size > limit:
        raise too_large(f"repeating a {type(seq).__name__} {times:,} times", size, limit)


_MAX_INT_BITS = int(MAX_INT_DIGITS * math.log2(10)) + 1


def _check_power(base: Any, exponent: Any) -> None:
    if not (_is_int(base) and _is_int(exponent)) or exponent <= 1 or abs(base) <= 1:
        return
    if exponent * math.log2(abs(base)) > _MAX_INT_BITS:
        raise _too_big_number(f"{_short(base)} ** {_short(exponent)}", exponent * math.log10(abs(base)))


def _too_big_number(what: str, digits: float) -> ValueTooLargeError:
    return ValueTooLargeError(
        f"{what} would be a number of about {int(digits) + 1:,} digits; refused before it ran: "
        f"numbers in a template may have at most {MAX_INT_DIGITS:,} digits"
    )


def _short(number: int) -> str:
    return str(number) if number.bit_length() < 64 else f"a {number.bit_length()}-bit number"


# %[(key)][flags][width][.precision][length]type; width and precision may be * (from the arguments)
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?[a-zA-Z%]")
_NUMBER = re.compile(r"\d+")


def check_printf(fmt: str | bytes, args: Any, limit: int) -> None:
    """Refuse ``fmt % args`` when a width or precision in ``fmt`` (or an argument ``*`` takes)
    is larger than ``limit``: ``"%0999999999d" % 1`` allocates a gigabyte in one step."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    if "%" not in text:
        return
    # A template formats with the same few literal formats, email after email (a report's
    # aligned table lines): short ones are read once.
    stars = _takes_stars(text, limit) if len(text) <= _CACHED_FORMAT else _read_printf(text, limit)
    if stars:
        values = args if isinstance(args, tuple) else (args,)
        for value in values:
            if _is_int(value) and abs(value) > limit:
                raise too_large("a format width taken from the arguments", abs(value), limit)


_CACHED_FORMAT = 256


@lru_cache(maxsize=256)
def _takes_stars(text: str, limit: int) -> bool:
    return _read_printf(text, limit)


def _read_printf(text: str, limit: int) -> bool:
    """Whether ``text`` takes a width or precision from the arguments (``*``); raises
    ValueTooLargeError for a literal one larger than ``limit``."""
    stars = False
    for match in _PRINTF.finditer(text):
        for number in (match[1], match[2]):
            if number == "*":
                stars = True
            elif number and _above(number, limit):
                raise too_large(f"the format {_quote(match[0])}", _as_int(number), limit)
    return stars


def check_format_spec(spec: str, limit: int) -> None:
    """Refuse a ``str.format`` field whose width or precision is larger than ``limit``
    (``"{:>999999999}".format(1)``)."""
    for number in _NUMBER.findall(spec):
        if _above(number, limit):
            raise too_large(f"the format {_quote('{:' + spec + '}')}", _as_int(number), limit)


def _above(digits: str, limit: int) -> bool:
    digits = digits.lstrip("0") or "0"
    return len(digits) > len(str(limit)) or int(digits) > limit


def _as_int(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def _quote(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


# Methods whose result size is worked out from their arguments before they run.
def _padded(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    width = args[0] if args else kwargs.get("width", 0)
    return max(len(obj), width) if _is_int(width) else len(obj)


def _expanded(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    tabsize = args[0] if args else kwargs.get("tabsize", 8)
    tab = "\t" if isinstance(obj, str) else b"\t"
    return len(obj) + obj.count(tab) * max(tabsize, 0) if _is_int(tabsize) else len(obj)


def _replaced(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    if len(args) < 2 or not all(isinstance(a, str | bytes) for a in args[:2]):
        return len(obj)
    old, new = args[0], args[1]
    count = args[2] if len(args) > 2 else kwargs.get("count", -1)
    return replaced_size(obj, old, new, count)


def replaced_size(text: str | bytes, old: str | bytes, new: str | bytes, count: Any = -1) -> int:
    """The length of ``text.replace(old, new, count)``, without making it."""
    if len(new) <= len(old):
        return len(text)
    found = len(text) + 1 if not old else text.count(old)  # type: ignore[arg-type]
    if _is_int(count) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


_SIZED_METHODS: dict[str, Callable[[Any, tuple[Any, ...], Mapping[str, Any]], int]] = {
    "ljust": _padded,
    "rjust": _padded,
    "center": _padded,
    "zfill": _padded,
    "expandtabs": _expanded,
    "replace": _replaced,
}


def check_method_call(
    method: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], limit: int
) -> tuple[Any, ...]:
    """Refuse a call of a str, bytes, list or tuple method that would make a value past ``limit``:
    a padding or ``replace`` whose result would be too long, a ``join`` of too much, or any
    whole-number argument larger than ``limit``. Returns the arguments to call it with (a
    ``join``'s iterable, read into a tuple to be measured)."""
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str | bytes | list | tuple):
        return args
    name = getattr(method, "__name__", "")
    for value in (*args, *kwargs.values()):
        if _is_int(value) and value > limit:
            raise too_large(f"{type(owner).__name__}.{name}({value:,})", value, limit)
    if name == "join" and len(args) == 1 and isinstance(owner, str | bytes):
        items = tuple(args[0])
        size = joined_size(owner, items, limit)
        if size > limit:
            raise too_large(f"joining {len(items):,} items", size, limit, exact=False)
        return (items,)
    estimate = _SIZED_METHODS.get(name)
    if estimate is not None and isinstance(owner, str | bytes):
        size = estimate(owner, args, kwargs)
        if size > limit:
            raise too_large(f"{type(owner).__name__}.{name}(...)", size, limit)
    return args


def joined_size(separator: str | bytes, items: Iterable[Any], limit: int) -> int:
    """About the length of ``separator.join(items)`` (items as text), counted up to past ``limit``."""
    total = -len(separator)
    for item in items:
        # Text and numbers are most of what is joined: counted here, not by weight().
        if isinstance(item, str | bytes):
            total += len(separator) + len(item)
        elif _is_int(item):
            total += len(separator) + 1 + item.bit_length() * 3 // 10
        else:
            total += len(separator) + weight(item, limit)
        if total > limit:
            break
    return max(total, 0)
